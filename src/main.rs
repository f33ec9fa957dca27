//! The esmbench binary: parse the command line, run it, print the error chain, return the exit code.

use std::process::ExitCode;

use clap::Parser;
use esmbench::cli::Cli;
use esmbench::errln;
use esmbench::error::exit_code_for;
use esmbench::model::runtime_log::take_unreported;

fn main() -> ExitCode {
    esmbench::model::runtime::keep_telemetry_off();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(help_or_usage) => return ExitCode::from(esmbench::console::clap_exit(&help_or_usage)),
    };
    // A panic is a bug; it still exits with a documented code (1), not Rust's 101, after the panic message.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        esmbench::commands::execute(cli)
    }));
    let Ok(outcome) = outcome else {
        errln!("error: esmbench stopped on an internal error (the panic above), a bug: please report it with the command line");
        return ExitCode::from(1);
    };
    match outcome {
        Ok(()) => {
            for message in take_unreported("") {
                errln!("warning: ONNX Runtime logged an error and went on: {message}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("error: {error}");
            for cause in error.chain().skip(1) {
                errln!("  caused by: {cause}");
            }
            for message in take_unreported(&format!("{error:#}")) {
                errln!("  ONNX Runtime also logged: {message}");
            }
            ExitCode::from(exit_code_for(&error))
        }
    }
}
