//! Progress: an indicatif bar on a terminal; plain lines every few seconds otherwise (tmux logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub enum Progress {
    Bar(ProgressBar),
    Plain {
        total: u64,
        /// Rows done before this process started (a resumed run): they say nothing of its speed.
        resumed_at: u64,
        started: Instant,
        last: Instant,
    },
    Quiet,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Progress {
    /// `resumed_at`: the rows an interrupted run had done, where this one starts.
    pub fn new(total: u64, resumed_at: u64, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = resumed_bar(ProgressBar::new(total), resumed_at);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Plain {
                total,
                resumed_at,
                started: now,
                last: now,
            }
        }
    }

    pub fn update(&mut self, done: u64, rss_bytes: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(format!("RSS {}", mib(rss_bytes)));
            }
            Progress::Plain {
                total,
                resumed_at,
                started,
                last,
            } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    let line = plain_line(done, *total, *resumed_at, started.elapsed(), rss_bytes);
                    crate::errln!("{line}");
                }
            }
            Progress::Quiet => {}
        }
    }

    /// A message that must not be torn by the bar.
    pub fn println(&self, message: &str) {
        match self {
            Progress::Bar(bar) => bar.println(message),
            _ => crate::errln!("{message}"),
        }
    }

    pub fn finish(&mut self, done: u64, rss_bytes: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(done);
                bar.finish_and_clear();
            }
            Progress::Plain {
                total,
                resumed_at,
                started,
                ..
            } => {
                let line = plain_line(done, *total, *resumed_at, started.elapsed(), rss_bytes);
                crate::errln!("{line}")
            }
            Progress::Quiet => {}
        }
    }
}

/// The bar at `resumed_at`, its rate and ETA counting only the rows done from here: a run resumed at 70,000 of
/// 141,021 rows otherwise showed thousands of rows a second and an ETA of seconds for its first minutes.
fn resumed_bar(bar: ProgressBar, resumed_at: u64) -> ProgressBar {
    if resumed_at > 0 {
        bar.set_position(resumed_at);
        bar.tick();
        bar.reset_eta();
    }
    bar
}

/// `resumed_at` rows were done before this process: the rate is over the rest.
pub fn plain_line(
    done: u64,
    total: u64,
    resumed_at: u64,
    elapsed: Duration,
    rss_bytes: u64,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done.saturating_sub(resumed_at) as f64 / secs;
    let eta = if rate > 0.0 {
        format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
    } else {
        "?".into()
    };
    let pct = if total > 0 {
        100.0 * done as f64 / total as f64
    } else {
        100.0
    };
    format!(
        "esmbench: {done}/{total} rows ({pct:.1}%), {rate:.1} rows/s, ETA {eta}, RSS {}",
        mib(rss_bytes)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_line_has_rate_eta_and_rss() {
        let line = super::plain_line(
            50,
            100,
            0,
            std::time::Duration::from_secs(10),
            200 * 1024 * 1024,
        );
        assert_eq!(
            line,
            "esmbench: 50/100 rows (50.0%), 5.0 rows/s, ETA 10s, RSS 200 MiB"
        );
    }

    #[test]
    fn a_resumed_run_counts_its_rate_and_eta_from_where_it_resumed() {
        // Resumed at 600 of 1000: 50 rows in 10 s is 5 rows/s, so 350 left take 70 s.
        let line = super::plain_line(650, 1000, 600, std::time::Duration::from_secs(10), 0);
        assert_eq!(
            line,
            "esmbench: 650/1000 rows (65.0%), 5.0 rows/s, ETA 70s, RSS 0 MiB"
        );
    }

    #[test]
    fn a_resumed_bar_does_not_count_the_earlier_rows_as_speed() {
        let bar = super::resumed_bar(
            indicatif::ProgressBar::with_draw_target(
                Some(1000),
                indicatif::ProgressDrawTarget::hidden(),
            ),
            600,
        );
        assert_eq!(bar.position(), 600);
        std::thread::sleep(std::time::Duration::from_millis(50));
        bar.set_position(605);
        bar.tick();
        // 5 rows in at least 50 ms is at most 100 rows/s; counting the 600 would give 12,000 and more.
        assert!(bar.per_sec() <= 100.0, "{}", bar.per_sec());
        assert!(bar.per_sec() > 0.0);
    }
}
