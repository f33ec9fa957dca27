//! The output directory's lock: one `esmbench test` writes into a directory at a time.
//!
//! Two runs on the same --out (a job started twice in tmux, a --resume while the first run still goes) each
//! truncated and appended to the same predictions.csv, and both exited 0 with a report over rows the file no
//! longer held. The lock is an OS advisory lock (flock) on `.esmbench.lock` in the directory: the OS drops it
//! when the process ends in any way, so a killed run never leaves a stale lock. The file itself stays; removing
//! it would let a third run lock a fresh file while the second still holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::Result;

use crate::error::Failure;

/// The lock file's name inside the output directory.
pub const LOCK_FILE: &str = ".esmbench.lock";

/// Held for as long as the run writes into the directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
}

impl OutputLock {
    /// Locks `dir` (which must exist) or fails with exit 2, naming the process that holds it. Where the file
    /// system cannot lock (some network mounts), the run goes on unlocked after a warning.
    pub fn acquire(dir: &Path) -> Result<Option<OutputLock>> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Failure::usage(format!(
                    "cannot create the lock file {}: {e}\n  fix: pass a writable --out",
                    path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {
                // The pid is only for the message another run prints; a failure to write it costs nothing.
                let _ = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{}", std::process::id()));
                Ok(Some(OutputLock { _file: file }))
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another esmbench process".to_string(),
                    pid => format!("esmbench process {pid}"),
                };
                Err(Failure::usage(format!(
                    "output directory {} is in use by {holder}, which is still writing its predictions\n  fix: wait for \
that run to finish (resume it with --resume if it is interrupted later), or pass another --out",
                    dir.display()
                ))
                .into())
            }
            Err(TryLockError::Error(e)) => {
                crate::errln!(
                    "WARNING: cannot lock output directory {} ({e}); the run goes on, but a second run on the same --out \
would overwrite this one's predictions. Run one esmbench per --out.",
                    dir.display()
                );
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputLock::acquire(dir.path()).unwrap();
        assert!(first.is_some());
        let err = OutputLock::acquire(dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("esmbench process {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("fix:"), "{text}");
        drop(first);
        assert!(OutputLock::acquire(dir.path()).unwrap().is_some());
    }
}
