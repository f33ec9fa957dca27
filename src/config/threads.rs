//! How many threads a run gets: the default count, its split into batches in flight, and fitting it under a
//! limit on threads (a container's pids.max, ulimit -u) before the model loads.

use crate::error::Failure;

/// Threads to give ONNX Runtime by default: physical cores, but never more than this process may use
/// (a container's CPU quota), so thread pools do not multiply past the container's limits.
pub fn default_threads() -> usize {
    let allowed = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let physical = sysinfo::System::physical_core_count().unwrap_or(allowed);
    physical.min(allowed).max(1)
}

/// Batches in flight on CPU when `--parallel-batches` is not given: one per thread, so each batch runs its
/// operators on one thread. Small attention, softmax and element-wise operators do not split well across threads;
/// whole batches do. Capped at 8 so memory (one batch's activations each) stays bounded on many-core machines.
pub fn default_parallel_batches(threads: usize) -> usize {
    threads.clamp(1, 8)
}

/// Batches in flight and ONNX Runtime intra-op threads per batch, for `threads` on CPU.
pub(super) fn cpu_parallelism(threads: usize, parallel_batches: Option<usize>) -> (usize, usize) {
    let batches = parallel_batches
        .unwrap_or_else(|| default_parallel_batches(threads))
        .clamp(1, threads);
    (batches, (threads / batches).max(1))
}

/// Threads a run starts besides the main one: the reader, the memory monitor, one per batch in flight, and
/// ONNX Runtime's intra-op pool (one fewer than a batch's share: the calling thread works too). Helper
/// threads (hashing, the rewrite's probe, the bootstrap) are left out: refused, their work runs inline.
/// A run that may go to CUDA or CoreML counts one batch on all threads, the larger of the two.
pub fn threads_started(
    threads: usize,
    parallel_batches: Option<usize>,
    accelerator: bool,
) -> usize {
    let (batches, intra) = cpu_parallelism(threads, parallel_batches);
    let on_cpu = 2 + batches + (intra - 1);
    if accelerator {
        on_cpu.max(2 + threads)
    } else {
        on_cpu
    }
}

/// `--threads` above the CPUs this process may use (its affinity and a container's CPU quota): the threads take
/// turns on the CPUs there are, each batch in flight holds its own activations, and the run is slower and larger
/// than on the default. Allowed, since the user may know better, but said.
pub(super) fn oversubscription_warning(threads: usize, allowed: usize) -> Option<String> {
    (threads > allowed).then(|| {
        format!(
            "warning: --threads {threads} is more than the {allowed} CPUs this process may use: the threads will take \
turns on them, which makes the run slower and larger, not faster\n  fix: drop --threads (the default is the physical \
cores this process may use), or give the run more CPUs"
        )
    })
}

/// `--threads` checked against a limit on threads (a container's pids.max, ulimit -u) before the model loads: where
/// ONNX Runtime's pool was refused a thread it failed with a misleading load error, or hung. Without
/// `--threads` the default is lowered to fit, with a note; a count given that cannot fit is refused.
pub(super) fn fit_thread_limit(
    threads: usize,
    given: bool,
    parallel_batches: Option<usize>,
    accelerator: bool,
    limit: Option<&crate::threads::Limit>,
) -> std::result::Result<usize, Failure> {
    let Some(limit) = limit else {
        return Ok(threads);
    };
    let started = |n: usize| threads_started(n, parallel_batches, accelerator);
    let fits = |n: usize| started(n) <= limit.headroom;
    if fits(threads) {
        return Ok(threads);
    }
    let smallest = parallel_batches.unwrap_or(1);
    let fitting = (smallest..threads).rev().find(|&n| fits(n));
    if let (false, Some(n)) = (given, fitting) {
        crate::errln!(
            "note: --threads defaults to {n} here, not {threads}: this process may start {} more threads ({}), \
             and {threads} would need {}. --threads sets it",
            limit.headroom,
            limit.source,
            started(threads)
        );
        return Ok(n);
    }
    let fix = match fitting {
        Some(n) => format!("use --threads {n} or fewer, or raise {}", limit.raise),
        None => format!(
            "raise {}: a run needs at least {} threads besides the main one",
            limit.raise,
            started(smallest)
        ),
    };
    Err(Failure::usage(format!(
        "--threads {threads} starts up to {} threads besides the main one (the reader, the memory monitor, the \
         batches in flight and ONNX Runtime's pool), but this process may start {} more: {}\n  fix: {fix}",
        started(threads),
        limit.headroom,
        limit.source
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_threads_than_cpus_is_warned_of_and_a_fitting_count_is_not() {
        let warning = oversubscription_warning(16, 2).expect("a warning");
        assert!(
            warning
                .starts_with("warning: --threads 16 is more than the 2 CPUs this process may use")
                && warning.contains("fix: drop --threads"),
            "{warning}"
        );
        assert_eq!(oversubscription_warning(2, 2), None);
        assert_eq!(oversubscription_warning(1, 8), None);
    }
    #[test]
    fn a_run_starts_the_reader_the_monitor_a_thread_per_batch_and_the_pool() {
        assert_eq!(threads_started(1, None, false), 3);
        assert_eq!(threads_started(2, None, false), 4);
        assert_eq!(threads_started(4, Some(1), false), 6);
        assert_eq!(threads_started(8, Some(2), false), 7);
        assert_eq!(threads_started(16, None, false), 11);
        // On CUDA or CoreML one batch runs on all 16 threads: a pool of 15.
        assert_eq!(threads_started(16, None, true), 18);
    }

    #[test]
    fn a_thread_limit_lowers_the_default_and_refuses_a_count_given_that_cannot_fit() {
        let limit = |headroom| crate::threads::Limit {
            headroom,
            source: "pids.max 9 with 2 in use (/sys/fs/cgroup/pids/job)".into(),
            raise: "the container's pids limit",
        };
        let fit = |threads, given, k, accelerator, headroom| {
            fit_thread_limit(threads, given, k, accelerator, Some(&limit(headroom)))
        };
        assert_eq!(fit_thread_limit(4, false, None, false, None).unwrap(), 4);
        assert_eq!(fit(4, true, None, false, 6).unwrap(), 4);
        assert_eq!(fit(8, true, Some(2), false, 7).unwrap(), 8);
        // The same on CUDA is one batch on 8 threads: a pool of 7.
        assert!(fit(8, true, Some(2), true, 7).is_err());
        // The default: two batches need 4 threads besides main, so 3 left means one batch.
        assert_eq!(fit(2, false, None, false, 3).unwrap(), 1);
        // Given: 4 threads on one batch need 6 (3 of them ONNX Runtime's pool); 2 threads need 4.
        let error = fit(4, true, Some(1), false, 4).unwrap_err();
        assert_eq!(error.kind, crate::error::FailureKind::Usage);
        for expected in [
            "--threads 4 starts up to 6 threads",
            "may start 4 more: pids.max 9",
            "fix: use --threads 2 or fewer, or raise the container's pids limit",
        ] {
            assert!(error.message.contains(expected), "{}", error.message);
        }
        // Nothing fits: the fix is the limit, default or not.
        for given in [true, false] {
            let error = fit_thread_limit(1, given, None, false, Some(&limit(2))).unwrap_err();
            assert!(
                error.message.contains(
                    "fix: raise the container's pids limit: a run needs at least 3 threads"
                ),
                "{}",
                error.message
            );
        }
    }
}
