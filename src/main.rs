//! The esmbench binary: parse the command line, run it, print the error chain, return the exit code.

use std::process::ExitCode;

use clap::Parser;
use esmbench::cli::Cli;
use esmbench::errln;
use esmbench::error::exit_code_for;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match esmbench::commands::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            errln!("error: {error}");
            for cause in error.chain().skip(1) {
                errln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code_for(&error))
        }
    }
}
