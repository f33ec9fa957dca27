//! Starting threads under a limit on them (a container's pids.max, ulimit -u): a helper thread the limit refuses
//! has its work done on the calling thread instead, and a thread the run cannot do without is a runtime error
//! with the fix. std's `thread::spawn` panics when the system refuses a thread; nothing here does.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, Scope, ScopedJoinHandle};

use crate::error::Failure;

/// A limit on the threads (tasks) this process may start: a pids cgroup it runs in or the user's process
/// limit, and how many more it allows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Threads this process may still start before the limit refuses one.
    pub headroom: usize,
    /// Where the limit comes from, for messages: "pids.max 8 with 3 in use (/sys/fs/cgroup/...)".
    pub source: String,
    /// What a user raises to lift it, for the fix: "the container's pids limit" or "ulimit -u".
    pub raise: &'static str,
}

/// The tightest limit on threads over this process, or None where none is set or none can be read: a pids
/// cgroup (cgroup v1's pids hierarchy or v2; the whole cgroup's tasks count against it) or the user's
/// process limit (`ulimit -u`; every thread of the user's processes counts against it).
pub fn limit() -> Option<Limit> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|membership| limit_under(Path::new("/"), &membership));
    [cgroup, user_limit(Path::new("/proc"))]
        .into_iter()
        .flatten()
        .min_by_key(|limit| limit.headroom)
}

/// More threads than any run starts: `--threads` is at most 1024, plus the reader, the monitor and a thread
/// per batch in flight.
const MOST_THREADS_A_RUN_STARTS: usize = 1100;

/// RLIMIT_NPROC (`ulimit -u`) for the /proc mounted at `proc`: the kernel refuses a new thread once the real
/// user's threads, in all its processes, reach the soft limit. Root, and a process with CAP_SYS_ADMIN or
/// CAP_SYS_RESOURCE, is not held to it.
fn user_limit(proc: &Path) -> Option<Limit> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_RESOURCE: u32 = 24;
    let own = std::fs::read_to_string(proc.join("self/status")).ok()?;
    let uid = real_uid(&own)?;
    let capabilities = u64::from_str_radix(status_field(&own, "CapEff")?, 16).ok()?;
    let exempt = (1u64 << CAP_SYS_ADMIN) | (1u64 << CAP_SYS_RESOURCE);
    if uid == 0 || capabilities & exempt != 0 {
        return None;
    }
    let limits = std::fs::read_to_string(proc.join("self/limits")).ok()?;
    let soft: usize = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max processes"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?; // "unlimited": no limit

    // The common case, a limit far above every thread on the machine, needs no walk over every process at
    // start-up: /proc/loadavg's "running/total" counts all threads, the user's among them.
    let all_threads = std::fs::read_to_string(proc.join("loadavg"))
        .ok()
        .and_then(|text| {
            let total = text.split_whitespace().nth(3)?.split_once('/')?.1;
            total.parse::<usize>().ok()
        });
    if all_threads.is_some_and(|total| soft.saturating_sub(total) > MOST_THREADS_A_RUN_STARTS) {
        return None;
    }
    let running: usize = std::fs::read_dir(proc)
        .ok()?
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter(|status| real_uid(status) == Some(uid))
        .filter_map(|status| status_field(&status, "Threads")?.parse::<usize>().ok())
        .sum();
    Some(Limit {
        headroom: soft.saturating_sub(running),
        source: format!("ulimit -u {soft} with {running} threads of user {uid} running"),
        raise: "ulimit -u",
    })
}

/// A field of a /proc/<pid>/status text: "Threads:\t4" gives "4".
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The real user id, the first of the four on a status text's Uid line.
fn real_uid(status: &str) -> Option<u32> {
    status_field(status, "Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// [`limit`] for a /proc/self/cgroup text, with the cgroup file systems mounted under `root`.
fn limit_under(root: &Path, membership: &str) -> Option<Limit> {
    membership
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let base = if controllers.split(',').any(|c| c == "pids") {
                root.join("sys/fs/cgroup/pids")
            } else if id == "0" && controllers.is_empty() {
                root.join("sys/fs/cgroup")
            } else {
                return None;
            };
            // The cgroup and each one above it, up to the hierarchy's root: any of them may set the limit.
            let leaf = base.join(path.trim_start_matches('/'));
            leaf.ancestors()
                .take_while(|dir| dir.starts_with(&base))
                .filter_map(read_limit)
                .min_by_key(|limit| limit.headroom)
        })
        .min_by_key(|limit| limit.headroom)
}

fn read_limit(dir: &Path) -> Option<Limit> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let max: usize = read("pids.max")?.trim().parse().ok()?; // "max": no limit here
    let current: usize = read("pids.current")?.trim().parse().ok()?;
    Some(Limit {
        headroom: max.saturating_sub(current),
        source: format!("pids.max {max} with {current} in use ({})", dir.display()),
        raise: "the container's pids limit",
    })
}

/// The fix for a refused thread, shared by the errors and the note.
pub const FIX: &str =
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
        crate::errln!(
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
    fn the_tightest_pids_limit_on_the_way_up_is_the_one_that_counts() {
        let root = tempfile::tempdir().unwrap();
        let write = |dir: &str, max: &str, current: &str| {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("pids.max"), max).unwrap();
            std::fs::write(dir.join("pids.current"), current).unwrap();
        };
        // v1: the job's cgroup allows 100 with 10 in use, its parent 20 with 15 in use: 5 left.
        write("sys/fs/cgroup/pids/batch", "20\n", "15\n");
        write("sys/fs/cgroup/pids/batch/job", "100\n", "10\n");
        let v1 = "9:name=systemd:/\n8:pids:/batch/job\n4:memory:/batch/job\n0::/\n";
        let limit = limit_under(root.path(), v1).unwrap();
        assert_eq!(limit.headroom, 5);
        assert!(
            limit.source.starts_with("pids.max 20 with 15 in use"),
            "{}",
            limit.source
        );
        // v2: "max" sets no limit; an exhausted cgroup leaves none.
        write("sys/fs/cgroup/pod", "max\n", "3\n");
        assert_eq!(limit_under(root.path(), "0::/pod\n"), None);
        write("sys/fs/cgroup/pod/app", "8\n", "9\n");
        assert_eq!(
            limit_under(root.path(), "0::/pod/app\n").unwrap().headroom,
            0
        );
        // No pids controller, or no files: no limit known.
        assert_eq!(limit_under(root.path(), "4:memory:/batch/job\n"), None);
        assert_eq!(limit_under(root.path(), "8:pids:/elsewhere\n"), None);
    }

    #[test]
    fn ulimit_u_counts_every_thread_of_the_user_and_spares_root() {
        let proc = tempfile::tempdir().unwrap();
        let status = |dir: &str, uid: u32, threads: usize, capabilities: &str| {
            let dir = proc.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("status"),
                format!(
                    "Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nThreads:\t{threads}\nCapEff:\t{capabilities}\n"
                ),
            )
            .unwrap();
        };
        let limits = |soft: &str| {
            std::fs::write(
                proc.path().join("self/limits"),
                format!(
                    "Limit                     Soft Limit           Hard Limit           Units     \n\
                     Max cpu time              unlimited            unlimited            seconds   \n\
                     Max processes             {soft:<20} {soft:<20} processes \n"
                ),
            )
            .unwrap();
        };
        // User 1000 runs this process (listed under its pid and as self) with 1 thread and another with 6;
        // user 1001's 50 threads do not count.
        status("self", 1000, 1, "0000000000000000");
        status("4242", 1000, 1, "0000000000000000");
        status("4300", 1000, 6, "0000000000000000");
        status("4400", 1001, 50, "0000000000000000");
        std::fs::create_dir_all(proc.path().join("sys")).unwrap();
        limits("10");
        let limit = user_limit(proc.path()).unwrap();
        assert_eq!(limit.headroom, 3);
        assert_eq!(limit.raise, "ulimit -u");
        assert!(limit
            .source
            .starts_with("ulimit -u 10 with 7 threads of user 1000"));
        limits("5");
        assert_eq!(user_limit(proc.path()).unwrap().headroom, 0);
        limits("unlimited");
        assert_eq!(user_limit(proc.path()), None);
        // Root, or CAP_SYS_RESOURCE (bit 24), is not held to the limit.
        limits("10");
        status("self", 0, 1, "0000000000000000");
        assert_eq!(user_limit(proc.path()), None);
        status("self", 1000, 1, "0000000001000000");
        assert_eq!(user_limit(proc.path()), None);
        // With 57 threads on the whole machine, a limit of 10 is still counted; one of 5,000 cannot bind.
        status("self", 1000, 1, "0000000000000000");
        std::fs::write(proc.path().join("loadavg"), "0.50 0.40 0.30 2/57 4242\n").unwrap();
        assert_eq!(user_limit(proc.path()).unwrap().headroom, 3);
        limits("5000");
        assert_eq!(user_limit(proc.path()), None);
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
