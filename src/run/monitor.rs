//! Samples the process's RSS, thread count and CPU time on its own thread: peaks, start and end, and a timeline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::config::RssLimits;
use crate::report::Sample;

const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const TIMELINE_EVERY: Duration = Duration::from_secs(2);
/// The timeline is thinned to half whenever it reaches this many samples, so hours-long runs stay small.
const TIMELINE_CAP: usize = 2000;

/// What the sampler shares with the run.
#[derive(Default)]
pub struct Shared {
    pub rows_done: AtomicU64,
    pub rss_bytes: AtomicU64,
    pub peak_rss_bytes: AtomicU64,
    pub peak_threads: AtomicU64,
    /// Set by the sampler when RSS passes the watchdog's limits.
    pub over_soft_limit: AtomicBool,
    pub over_hard_limit: AtomicBool,
    timeline: Mutex<Vec<Sample>>,
}

pub struct Monitor {
    pub shared: Arc<Shared>,
    pub rss_start_bytes: u64,
    handle: Option<JoinHandle<()>>,
    /// Dropping it wakes the sampler at once, so finishing a run never waits out a sampling interval.
    stop: Option<Sender<()>>,
}

struct Reader {
    system: System,
    pid: Pid,
}

#[derive(Default)]
struct Reading {
    rss: u64,
    threads: u64,
    cpu_seconds: f64,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            system: System::new(),
            pid: sysinfo::get_current_pid().unwrap_or(Pid::from_u32(std::process::id())),
        }
    }

    /// This process's RSS bytes, thread count and CPU seconds used so far.
    fn read(&mut self) -> Reading {
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_tasks()
                .with_cpu(),
        );
        match self.system.process(self.pid) {
            Some(p) => Reading {
                rss: p.memory(),
                threads: p.tasks().map(|t| t.len() as u64).unwrap_or(0),
                cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
            },
            None => Reading::default(),
        }
    }
}

/// This process's RSS now, read on the caller's thread (the sampler's figure can be 200 ms old).
pub fn rss_now() -> u64 {
    Reader::new().read().rss
}

impl Monitor {
    /// Starts sampling; with `limits`, the sampler is also the RSS watchdog. Err when no thread can be
    /// started for it: the run's RSS figures, and its watchdog, depend on it.
    pub fn start(limits: Option<RssLimits>) -> Result<Monitor, crate::error::Failure> {
        let shared = Arc::new(Shared::default());
        let mut reader = Reader::new();
        let Reading {
            rss: rss_start,
            threads,
            ..
        } = reader.read();
        shared.rss_bytes.store(rss_start, Ordering::Relaxed);
        shared.peak_rss_bytes.store(rss_start, Ordering::Relaxed);
        shared.peak_threads.store(threads, Ordering::Relaxed);
        // The first reading counts against the limits too: a run already over them must not depend on the
        // monitor thread being scheduled before its first batch ends.
        if let Some(limits) = limits {
            shared
                .over_soft_limit
                .store(rss_start > limits.soft, Ordering::Relaxed);
            shared
                .over_hard_limit
                .store(rss_start > limits.hard, Ordering::Relaxed);
        }
        let thread_shared = Arc::clone(&shared);
        let (stop, stopped) = bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name("esmbench-monitor".into())
            .spawn(move || {
                let started = Instant::now();
                let mut next_sample = Duration::ZERO;
                let mut every = TIMELINE_EVERY;
                loop {
                    let Reading {
                        rss,
                        threads,
                        cpu_seconds,
                    } = reader.read();
                    thread_shared.rss_bytes.store(rss, Ordering::Relaxed);
                    thread_shared
                        .peak_rss_bytes
                        .fetch_max(rss, Ordering::Relaxed);
                    thread_shared
                        .peak_threads
                        .fetch_max(threads, Ordering::Relaxed);
                    if let Some(limits) = limits {
                        thread_shared
                            .over_soft_limit
                            .store(rss > limits.soft, Ordering::Relaxed);
                        if rss > limits.hard {
                            thread_shared.over_hard_limit.store(true, Ordering::Relaxed);
                        }
                    }
                    let elapsed = started.elapsed();
                    if elapsed >= next_sample {
                        let mut timeline = thread_shared.timeline.lock().expect("monitor lock");
                        timeline.push(Sample {
                            seconds: elapsed.as_secs_f64(),
                            rows_done: thread_shared.rows_done.load(Ordering::Relaxed),
                            rss_bytes: rss,
                            threads,
                            cpu_seconds,
                        });
                        if timeline.len() >= TIMELINE_CAP {
                            let kept: Vec<Sample> = timeline.iter().step_by(2).cloned().collect();
                            *timeline = kept;
                            every *= 2;
                        }
                        next_sample = elapsed + every;
                    }
                    if !matches!(
                        stopped.recv_timeout(SAMPLE_EVERY),
                        Err(RecvTimeoutError::Timeout)
                    ) {
                        break;
                    }
                }
            })
            .map_err(|e| crate::threads::refused("memory monitor", &e))?;
        Ok(Monitor {
            shared,
            rss_start_bytes: rss_start,
            handle: Some(handle),
            stop: Some(stop),
        })
    }

    pub fn rss_bytes(&self) -> u64 {
        self.shared.rss_bytes.load(Ordering::Relaxed)
    }

    pub fn set_rows_done(&self, rows: u64) {
        self.shared.rows_done.store(rows, Ordering::Relaxed);
    }

    pub fn rows_done(&self) -> u64 {
        self.shared.rows_done.load(Ordering::Relaxed)
    }

    /// Stops sampling and returns (peak RSS, RSS now, peak threads, timeline).
    pub fn finish(&mut self) -> (u64, u64, u64, Vec<Sample>) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let Reading {
            rss: rss_end,
            threads,
            ..
        } = Reader::new().read();
        let s = &self.shared;
        s.peak_rss_bytes.fetch_max(rss_end, Ordering::Relaxed);
        s.peak_threads.fetch_max(threads, Ordering::Relaxed);
        let timeline = std::mem::take(&mut *s.timeline.lock().expect("monitor lock"));
        (
            s.peak_rss_bytes.load(Ordering::Relaxed),
            rss_end,
            s.peak_threads.load(Ordering::Relaxed),
            timeline,
        )
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.take();
    }
}
