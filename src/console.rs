//! Lines for people on standard output and standard error, written so that a stream nobody can read never panics or stops a run.
//!
//! `println!` and `eprintln!` panic when the write fails: a pipe whose reader exited (`2>&1 | head`), a log
//! on a full disk, a terminal that went away. A run that had scored every row then died with exit 101 and
//! report.json still saying `running`. Here:
//! - standard error (progress, notes, warnings, the error chain) is best effort: a failure is dropped,
//!   since there is nowhere left to say it;
//! - standard output (what inspect describes, a run's summary) is a command's product: the first failure,
//!   other than the reader having gone away, is kept and [`stdout_result`] turns it into the command's
//!   error (exit 1) once the command's own work is done. A reader that went away wanted no more, as with
//!   any Unix filter under `| head`.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use anyhow::Context;

static STDOUT_FAILURE: Mutex<Option<io::Error>> = Mutex::new(None);

/// `println!` for a command's product: see the module notes.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::console::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` for progress, notes and warnings: see the module notes.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard output and flushes, so a failure is seen now rather than lost at exit.
pub fn out(text: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    let written = stdout.write_fmt(text).and_then(|()| stdout.flush());
    if let Err(error) = written {
        if error.kind() != io::ErrorKind::BrokenPipe {
            let mut first = STDOUT_FAILURE.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(error);
        }
    }
}

/// Writes to standard error; a failure is dropped.
pub fn err(text: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(text);
}

/// The first failure to write standard output, as the command's error; Ok when there was none.
pub fn stdout_result() -> anyhow::Result<()> {
    let failure = STDOUT_FAILURE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match failure {
        Some(error) => Err(error).context("could not write to standard output"),
        None => Ok(()),
    }
}

/// Prints what clap made of the command line (help, version or a usage error) as clap would, and returns
/// the exit code: clap's own, or 1 when help or version could not be written (clap drops that error).
pub fn clap_exit(error: &clap::Error) -> u8 {
    let printed = error.print();
    let code = u8::try_from(error.exit_code()).unwrap_or(crate::error::EXIT_USAGE);
    match printed {
        Err(failure) if !error.use_stderr() && failure.kind() != io::ErrorKind::BrokenPipe => {
            crate::errln!("error: could not write to standard output\n  caused by: {failure}");
            crate::error::EXIT_RUNTIME
        }
        _ => code,
    }
}
