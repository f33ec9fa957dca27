//! Error kinds that decide the process exit code, and the documented exit-code table.

use std::fmt;

/// Exit codes, documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_REGRESSION: u8 = 3;
pub const EXIT_WATCHDOG: u8 = 4;
pub const EXIT_SIGHUP: u8 = 129;
pub const EXIT_SIGINT: u8 = 130;
pub const EXIT_SIGTERM: u8 = 143;

/// A value from the user's file as a message quotes it: whole when short, else its start and its length, so a
/// 10 MB field does not become a 10 MB message in a CI log.
pub fn quoted(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// A header's column names as a message lists them: each quoted, at most 30.
pub fn listed_columns(headers: &[String]) -> String {
    const SHOWN: usize = 30;
    let mut names: Vec<String> = headers.iter().take(SHOWN).map(|h| quoted(h)).collect();
    if headers.len() > SHOWN {
        names.push(format!("and {} more", headers.len() - SHOWN));
    }
    names.join(", ")
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    runtime failure (the runtime library, a model failing as it runs, disk, an internal error)
  2    usage error or invalid input: data, model or head file (the message names file, line and fix)
  3    regression gate failed
  4    stopped by the memory watchdog (resumable with --resume)
  129  hung up by SIGHUP: the terminal closed (resumable with --resume; under nohup it runs on)
  130  interrupted by SIGINT (resumable with --resume)
  143  terminated by SIGTERM (resumable with --resume)";

/// What went wrong, in the terms a caller (or a script reading the exit code) cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Bad flags, config or paths: fix the command line.
    Usage,
    /// The input data is invalid: fix the file.
    InputData,
    /// Something failed while running (runtime library, model, disk).
    Runtime,
    /// The regression gate found a metric worse than the baseline.
    Regression,
    /// The RSS watchdog stopped the run.
    Watchdog,
    /// A signal stopped the run; holds the exit code (129, 130 or 143).
    Interrupted(u8),
}

impl FailureKind {
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Usage | FailureKind::InputData => EXIT_USAGE,
            FailureKind::Runtime => EXIT_RUNTIME,
            FailureKind::Regression => EXIT_REGRESSION,
            FailureKind::Watchdog => EXIT_WATCHDOG,
            FailureKind::Interrupted(code) => code,
        }
    }
}

/// An error whose kind callers match on; the message is complete and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Usage,
            message: message.into(),
        }
    }
    pub fn input(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::InputData,
            message: message.into(),
        }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Runtime,
            message: message.into(),
        }
    }
}

/// The exit code for an error chain: the first [`Failure`] in it decides, anything else is a runtime failure.
pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map(|failure| failure.kind.exit_code())
        .unwrap_or(EXIT_RUNTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_quoted_by_their_start_and_length() {
        assert_eq!(quoted("EVQL"), "EVQL");
        let long = "é".repeat(50);
        assert_eq!(quoted(&long), format!("{}... (100 bytes)", "é".repeat(40)));
        let headers: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
        let listed = listed_columns(&headers);
        assert!(
            listed.starts_with("c0, c1, ") && listed.ends_with("c29, and 2 more"),
            "{listed}"
        );
    }
    use anyhow::Context;

    #[test]
    fn the_first_failure_in_the_chain_decides_the_exit_code() {
        let err = Err::<(), _>(Failure::input("bad row"))
            .context("while validating")
            .unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_USAGE);
        let plain = anyhow::anyhow!("disk full");
        assert_eq!(exit_code_for(&plain), EXIT_RUNTIME);
        assert_eq!(FailureKind::Interrupted(143).exit_code(), 143);
    }
}
