//! The esmbench binary: parse the command line, run it, print the error chain, return the exit code.

use std::process::ExitCode;

use clap::Parser;
use esmbench::cli::Cli;
use esmbench::errln;
use esmbench::error::exit_code_for;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(help_or_usage) => return ExitCode::from(esmbench::console::clap_exit(&help_or_usage)),
    };
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
