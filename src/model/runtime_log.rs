//! ONNX Runtime's own log messages: held back when they repeat the failure esmbench reports, shown plainly otherwise.
//!
//! ONNX Runtime logs every failed kernel at error level, in ANSI colour with a timestamp, and then returns the
//! same text as the failing call's status, which esmbench prints in its error chain with the fix. The user
//! saw the message twice, first without the advice. Here error-level messages are held; when a command fails,
//! only the ones its error chain does not already contain are printed after it, and when a command succeeds,
//! the held ones (errors ONNX Runtime went on from) are printed as warnings. `ORT_LOG` (ort's variable:
//! `fatal`, `error`, `warning`, `info`, `verbose`) lowers the level; messages below error level are then
//! printed as they come, in plain text.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use ort::logging::{LogLevel, LoggerFunction};

use crate::errln;

/// A run that fails every batch would otherwise grow this without end; the last few say it all.
const HELD_LIMIT: usize = 8;

/// The held messages and the level below which messages are dropped.
struct LogBook {
    held: Mutex<VecDeque<String>>,
    /// The least severe level passed on, as `level_rank`; ONNX Runtime starts a custom logger at verbose.
    threshold: AtomicU8,
}

static BOOK: LogBook = LogBook::new();

fn level_rank(level: LogLevel) -> u8 {
    match level {
        LogLevel::Verbose => 0,
        LogLevel::Info => 1,
        LogLevel::Warning => 2,
        LogLevel::Error => 3,
        LogLevel::Fatal => 4,
    }
}

/// The level `ORT_LOG` asks for, as ort reads it; error when it is unset or not one of ort's names.
pub fn requested_level(ort_log: Option<&str>) -> LogLevel {
    let asked = ort_log.map(|level| level.trim().to_ascii_lowercase());
    match asked.as_deref() {
        Some("fatal") => LogLevel::Fatal,
        Some("warning") => LogLevel::Warning,
        Some("info") => LogLevel::Info,
        Some("verbose") => LogLevel::Verbose,
        Some("error" | "") | None => LogLevel::Error,
        Some(_) => {
            let other = ort_log.unwrap_or_default();
            errln!(
                "warning: ORT_LOG={other} is not a level; ONNX Runtime's log stays at error\n  \
fix: set ORT_LOG to fatal, error, warning, info or verbose"
            );
            LogLevel::Error
        }
    }
}

/// The logger for the process's ONNX Runtime environment, passing on messages at `level` or above.
pub fn logger(level: LogLevel) -> LoggerFunction {
    BOOK.set_threshold(level);
    Arc::new(
        |level: LogLevel, _category: &str, _id: &str, location: &str, message: &str| {
            if let Some(line) = BOOK.record(level, location, message) {
                errln!("{line}");
            }
        },
    )
}

/// Takes the held error messages that `already_said` (the error chain printed) does not contain.
pub fn take_unreported(already_said: &str) -> Vec<String> {
    BOOK.take_unreported(already_said)
}

impl LogBook {
    const fn new() -> LogBook {
        LogBook {
            held: Mutex::new(VecDeque::new()),
            threshold: AtomicU8::new(3),
        }
    }

    fn set_threshold(&self, level: LogLevel) {
        self.threshold.store(level_rank(level), Ordering::Relaxed);
    }

    /// Holds an error-level message; returns a less severe one as the line to print now.
    fn record(&self, level: LogLevel, location: &str, message: &str) -> Option<String> {
        if level_rank(level) < self.threshold.load(Ordering::Relaxed) {
            return None;
        }
        let name = match level {
            LogLevel::Error | LogLevel::Fatal => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                if held.len() == HELD_LIMIT {
                    held.pop_front();
                }
                held.push_back(message.to_string());
                return None;
            }
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Verbose => "verbose",
        };
        Some(format!("onnxruntime {name}: {message} ({location})"))
    }

    fn take_unreported(&self, already_said: &str) -> Vec<String> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.drain(..)
            .filter(|message| !already_said.contains(message.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ort_log_names_map_to_levels_and_anything_else_to_error() {
        assert_eq!(requested_level(Some("warning")), LogLevel::Warning);
        assert_eq!(requested_level(Some("verbose")), LogLevel::Verbose);
        assert_eq!(requested_level(Some("fatal")), LogLevel::Fatal);
        assert_eq!(requested_level(Some("loud")), LogLevel::Error);
        assert_eq!(requested_level(Some("WARNING")), LogLevel::Warning);
        assert_eq!(requested_level(Some("")), LogLevel::Error);
        assert_eq!(requested_level(None), LogLevel::Error);
    }

    #[test]
    fn held_errors_are_dropped_when_the_chain_says_them_and_kept_otherwise() {
        let book = LogBook::new();
        book.set_threshold(LogLevel::Error);
        assert_eq!(
            book.record(LogLevel::Error, "a.cc:1", "kernel failed: idx=9"),
            None
        );
        assert_eq!(
            book.record(LogLevel::Error, "b.cc:2", "an allocator gave up"),
            None
        );
        assert_eq!(
            book.record(LogLevel::Warning, "c.cc:3", "below the level"),
            None
        );
        let chain = "running a batch\n  caused by: ONNX Runtime: kernel failed: idx=9";
        assert_eq!(book.take_unreported(chain), vec!["an allocator gave up"]);
        assert!(book.take_unreported("").is_empty(), "taken once");
        for k in 0..(HELD_LIMIT + 3) {
            book.record(LogLevel::Fatal, "d.cc:4", &format!("failure {k}"));
        }
        let kept = book.take_unreported("");
        assert_eq!(kept.len(), HELD_LIMIT);
        assert_eq!(kept[0], "failure 3");
        assert_eq!(kept.last().unwrap(), &format!("failure {}", HELD_LIMIT + 2));
    }

    #[test]
    fn below_error_level_messages_are_printed_plainly_when_ort_log_asks() {
        let book = LogBook::new();
        book.set_threshold(LogLevel::Warning);
        assert_eq!(
            book.record(LogLevel::Warning, "graph.cc:7", "Removing initializer 'x'"),
            Some("onnxruntime warning: Removing initializer 'x' (graph.cc:7)".to_string())
        );
        assert_eq!(book.record(LogLevel::Info, "s.cc:1", "too chatty"), None);
        assert!(book.take_unreported("").is_empty());
    }
}
