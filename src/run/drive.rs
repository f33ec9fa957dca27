//! The measured loop: batches from the reader thread through the backend, rows out in input order,
//! with the stop checks (signals, memory watchdog) between batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::ScoringConfig;
use crate::data::batcher::BatchRow;
use crate::data::pipeline::{spawn_feed, Feed, FeedOptions};
use crate::data::reader::{RowProblem, RowRules};
use crate::error::Failure;
use crate::model::head::Head;
use crate::model::{self, Backend, ModelOutput};
use crate::run::monitor::Monitor;
use crate::run::progress::Progress;
use crate::run::signals;

/// One row's result, delivered in input order.
pub struct Scored {
    pub row: BatchRow,
    pub probability: Option<f64>,
    pub embedding: Option<Vec<f32>>,
}

pub enum Slot {
    Scored(Scored),
    Skipped(RowProblem),
}

/// Where delivered rows go. `checkpoint` is called after every batch with the count of rows delivered so far
/// (the sink decides whether it is time to make them durable) and once more when the loop stops.
pub trait RowSink {
    fn deliver(&mut self, slot: Slot) -> Result<()>;
    fn checkpoint(&mut self, _rows_done: u64, _force: bool) -> Result<()> {
        Ok(())
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    Finished,
    Signal { code: u8, name: &'static str },
    Watchdog { rss_bytes: u64 },
}

#[derive(Debug, Default)]
pub struct LoopTotals {
    pub rows_scored: u64,
    pub batches: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    pub inference: Duration,
    /// Rows delivered in order, counting rows done before a resume.
    pub rows_done: u64,
}

pub struct DriveOptions<'a> {
    pub scoring: &'a ScoringConfig,
    pub head: Option<&'a Head>,
    pub want_embeddings: bool,
    /// Rows before this one were done by an earlier, interrupted run.
    pub start_row: u64,
}

/// Halving the budget more often than this would react to the previous halving's RSS, not this one's.
const SOFT_LIMIT_COOLDOWN: Duration = Duration::from_secs(5);

pub fn drive(
    options: DriveOptions<'_>,
    backend: &mut dyn Backend,
    monitor: &Monitor,
    progress: &mut Progress,
    sink: &mut dyn RowSink,
) -> Result<(LoopTotals, Stop)> {
    let scoring = options.scoring;
    let max_tokens = Arc::new(AtomicUsize::new(scoring.max_tokens));
    let (feed, producer) = spawn_feed(FeedOptions {
        source: scoring.data.clone(),
        columns: scoring.columns.clone(),
        rules: RowRules {
            max_residues: scoring.max_residues,
            truncate: scoring.truncate,
        },
        max_tokens: Arc::clone(&max_tokens),
        skip_invalid: scoring.on_invalid == crate::cli::OnInvalid::Skip,
        skip_rows_before: options.start_row,
        shard: scoring.shard,
    })?;
    let mut totals = LoopTotals {
        rows_done: options.start_row,
        ..Default::default()
    };
    // Rows come back grouped by length; they wait here until every earlier row has been delivered.
    let mut waiting: BTreeMap<u64, Slot> = BTreeMap::new();
    let wants_probabilities = options.head.is_some() || !backend.info().kind.needs_head();
    let mut last_halving: Option<Instant> = None;
    let mut stop = Stop::Finished;
    for message in &feed {
        let batch = match message? {
            Feed::Batch(batch) => batch,
            Feed::Skipped(problem) => {
                waiting.insert(problem.row, Slot::Skipped(problem));
                continue;
            }
        };
        let started = Instant::now();
        let output = backend.run(&batch).with_context(|| {
            format!(
                "running a batch of {} x {} tokens",
                batch.len(),
                batch.seq_len
            )
        })?;
        totals.inference += started.elapsed();
        let probabilities = if wants_probabilities {
            Some(model::probabilities(&output, options.head)?)
        } else {
            None
        };
        let embeddings = match (&output, options.want_embeddings) {
            (ModelOutput::Embeddings(e), true) => Some(e),
            (_, true) => {
                return Err(Failure::usage(
                    "this model outputs probabilities, not embeddings\n  fix: export the encoder without its classifier",
                )
                .into())
            }
            _ => None,
        };
        totals.batches += 1;
        totals.real_tokens += batch.real_tokens() as u64;
        totals.padded_tokens += batch.padded_tokens() as u64;
        totals.rows_scored += batch.len() as u64;
        for (i, row) in batch.rows.into_iter().enumerate() {
            let scored = Scored {
                probability: probabilities.as_ref().map(|p| p[i]),
                embedding: embeddings.map(|e| e.row(i).to_vec()),
                row,
            };
            waiting.insert(scored.row.row, Slot::Scored(scored));
        }
        // Rows of other shards count as done: rows_done is where a resume would start reading.
        while let Some(slot) = waiting.remove(&scoring.shard.first_at_or_after(totals.rows_done)) {
            let row = match &slot {
                Slot::Scored(s) => s.row.row,
                Slot::Skipped(p) => p.row,
            };
            sink.deliver(slot)?;
            totals.rows_done = row + 1;
        }
        sink.checkpoint(totals.rows_done, false)?;
        monitor.set_rows_done(totals.rows_done);
        progress.update(totals.rows_done, monitor.rss_bytes());

        if let Some((code, name)) = signals::requested() {
            stop = Stop::Signal { code, name };
            break;
        }
        if monitor.shared.over_hard_limit.load(Ordering::Relaxed) {
            stop = Stop::Watchdog {
                rss_bytes: monitor.shared.peak_rss_bytes.load(Ordering::Relaxed),
            };
            break;
        }
        if monitor.shared.over_soft_limit.load(Ordering::Relaxed)
            && last_halving.is_none_or(|t| t.elapsed() >= SOFT_LIMIT_COOLDOWN)
        {
            let budget = max_tokens.load(Ordering::Relaxed);
            let halved = (budget / 2).max(3);
            if halved < budget {
                max_tokens.store(halved, Ordering::Relaxed);
                progress.println(&format!(
                    "watchdog: RSS {} MiB is over the soft limit; token budget halved from {budget} to {halved}",
                    monitor.rss_bytes() >> 20
                ));
            }
            last_halving = Some(Instant::now());
        }
    }
    // Dropping the receiver unblocks a reader waiting to send, so it can finish.
    drop(feed);
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    if stop == Stop::Finished && !waiting.is_empty() {
        return Err(anyhow::anyhow!(
            "internal error: {} rows were scored out of order and never delivered",
            waiting.len()
        ));
    }
    sink.checkpoint(totals.rows_done, true)?;
    Ok((totals, stop))
}
