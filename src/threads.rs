//! Starting threads under a limit on them (a container's pids.max, ulimit -u): a helper thread the limit refuses
//! has its work done on the calling thread instead, and a thread the run cannot do without is a runtime error
//! with the fix. std's `thread::spawn` panics when the system refuses a thread; nothing here does.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, Scope, ScopedJoinHandle};

use crate::error::Failure;

/// The fix for a refused thread, shared by the error and the note.
const FIX: &str =
    "raise the limit on threads (a container's pids.max, or ulimit -u), or lower --threads \
                   (and --parallel-batches), which sets how many threads ONNX Runtime starts";

/// The error for a thread the run cannot do without.
pub fn refused(what: &str, error: &io::Error) -> Failure {
    Failure::runtime(format!(
        "cannot start the {what} thread: {error}: this process may start no more threads\n  fix: {FIX}"
    ))
}

/// What happens to a refused helper thread's work.
pub const RUNS_INLINE: &str = "its work runs on the calling thread instead, which is slower";

/// Says, once per process, that a thread was refused and the run goes on without it (`consequence`).
pub fn note_refused(what: &str, error: &io::Error, consequence: &str) {
    static NOTED: AtomicBool = AtomicBool::new(false);
    if !NOTED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "note: cannot start {what} ({error}); {consequence} (later refusals are not noted). \
             To run as designed: {FIX}"
        );
    }
}

/// Work started on its own thread, or already done on the calling thread when the thread was refused.
pub enum Background<T> {
    Running(JoinHandle<T>),
    Done(T),
}

impl<T> Background<T> {
    /// As [`JoinHandle::join`]: Err holds the panic of the thread.
    pub fn join(self) -> thread::Result<T> {
        match self {
            Background::Running(handle) => handle.join(),
            Background::Done(value) => Ok(value),
        }
    }
}

/// Runs `work` on a new thread named `name`, or right here when no thread can be started.
pub fn in_background<T, F>(name: &str, work: F) -> Background<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Some(work)));
    let theirs = Arc::clone(&slot);
    match thread::Builder::new()
        .name(name.into())
        .spawn(move || take(&theirs)())
    {
        Ok(handle) => Background::Running(handle),
        Err(error) => {
            note_refused(&format!("thread {name}"), &error, RUNS_INLINE);
            Background::Done(take(&slot)())
        }
    }
}

/// Scoped work on its own thread, or already done here when the thread was refused.
pub enum ScopedBackground<'scope, T> {
    Running(ScopedJoinHandle<'scope, T>),
    Done(T),
}

impl<T> ScopedBackground<'_, T> {
    pub fn join(self) -> thread::Result<T> {
        match self {
            ScopedBackground::Running(handle) => handle.join(),
            ScopedBackground::Done(value) => Ok(value),
        }
    }
}

/// [`in_background`] for a thread of `scope`, whose work may borrow from the caller.
pub fn in_scope<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    work: F,
) -> ScopedBackground<'scope, T>
where
    T: Send + 'scope,
    F: FnOnce() -> T + Send + 'scope,
{
    let slot = Arc::new(Mutex::new(Some(work)));
    let theirs = Arc::clone(&slot);
    match thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, move || take(&theirs)())
    {
        Ok(handle) => ScopedBackground::Running(handle),
        Err(error) => {
            note_refused(&format!("thread {name}"), &error, RUNS_INLINE);
            ScopedBackground::Done(take(&slot)())
        }
    }
}

/// The work runs exactly once: on the new thread, or on the caller when the system refused that thread
/// (a refused spawn never runs its closure).
fn take<F>(slot: &Mutex<Option<F>>) -> F {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .expect("the work is taken once")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_returns_its_value_through_join() {
        let value = in_background("esmbench-test", || 6 * 7);
        assert_eq!(value.join().unwrap(), 42);
        let data = [1, 2, 3];
        let sum = thread::scope(|scope| {
            in_scope(scope, "esmbench-test", || data.iter().sum::<i32>())
                .join()
                .unwrap()
        });
        assert_eq!(sum, 6);
    }

    #[test]
    fn the_refusal_error_names_the_thread_and_the_fix() {
        let error = io::Error::from_raw_os_error(11);
        let failure = refused("data reader", &error);
        let message = failure.to_string();
        assert!(
            message.contains("cannot start the data reader thread"),
            "{message}"
        );
        assert!(
            message.contains("fix: raise the limit on threads"),
            "{message}"
        );
        assert_eq!(failure.kind.exit_code(), crate::error::EXIT_RUNTIME);
    }
}
