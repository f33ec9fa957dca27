//! Progress: an indicatif bar on a terminal; plain lines every few seconds otherwise (tmux logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub enum Progress {
    Bar(ProgressBar),
    Plain {
        total: u64,
        started: Instant,
        last: Instant,
    },
    Quiet,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
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
                started,
                last,
            } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    crate::errln!("{}", plain_line(done, *total, started.elapsed(), rss_bytes));
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
            Progress::Plain { total, started, .. } => {
                crate::errln!("{}", plain_line(done, *total, started.elapsed(), rss_bytes))
            }
            Progress::Quiet => {}
        }
    }
}

pub fn plain_line(done: u64, total: u64, elapsed: Duration, rss_bytes: u64) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / secs;
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
            std::time::Duration::from_secs(10),
            200 * 1024 * 1024,
        );
        assert_eq!(
            line,
            "esmbench: 50/100 rows (50.0%), 5.0 rows/s, ETA 10s, RSS 200 MiB"
        );
    }
}
