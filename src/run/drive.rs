//! The measured loop: batches from the reader thread through the backend (on `parallel_batches` worker threads),
//! rows out in input order, with the stop checks (signals, memory watchdog) between batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::config::ScoringConfig;
use crate::data::batcher::{BatchRow, TokenBatch};
use crate::data::pipeline::{spawn_feed, Feed, FeedOptions};
use crate::data::reader::{RowProblem, RowRules};
use crate::error::Failure;
use crate::model::head::Head;
use crate::model::{self, Backend, ModelOutput};
use crate::run::monitor::Monitor;
use crate::run::progress::Progress;
use crate::run::signals;
use crate::threads;

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
    /// The token budget when the loop ended: below the starting one when the soft memory limit lowered it.
    pub max_tokens_end: usize,
    /// RSS once the first round of batches (one per batch in flight) came back: about the least this model
    /// holds while it scores at the starting token budget, which is where a resumed run starts again.
    pub rss_after_first_round: Option<u64>,
}

pub struct DriveOptions<'a> {
    pub scoring: &'a ScoringConfig,
    pub head: Option<&'a Head>,
    pub want_embeddings: bool,
    /// Rows before this one were done by an earlier, interrupted run.
    pub start_row: u64,
    /// The data's SHA-256 and length before the run: the feed stops if the file changes under it.
    pub data_fingerprint: (String, u64),
}

/// A model whose learned position table is shorter than a batch's rows fails in its position-embedding Gather.
/// Models exported by scripts/export_onnx.py are refused at load instead; this names the fix for the others.
fn advise_on_position_overflow(error: anyhow::Error, seq_len: usize) -> anyhow::Error {
    let text = format!("{error:#}");
    if !(text.contains("position_embeddings") && text.contains("out of data bounds")) {
        return error;
    }
    Failure::runtime(format!(
        "{text}\n  fix: the model's learned position embeddings are shorter than these rows ({seq_len} tokens with <cls> and <eos>): \
lower --max-residues (1022 for ESM-1b and ESM-1v) and run again"
    ))
    .into()
}

/// Halving the budget more often than this would react to the previous halving's RSS, not this one's.
const SOFT_LIMIT_COOLDOWN: Duration = Duration::from_secs(5);

/// What a worker hands back to the delivering thread.
enum Event {
    Scored(TokenBatch, Result<ModelOutput>),
    Skipped(RowProblem),
    Failed(anyhow::Error),
}

/// Wall time with at least one batch inside the model: with several batches in flight, summing each batch's
/// time would count the same second more than once.
#[derive(Default)]
struct BusyClock {
    state: Mutex<(usize, Option<Instant>, Duration)>,
}

impl BusyClock {
    fn enter(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 == 0 {
            s.1 = Some(Instant::now());
        }
        s.0 += 1;
    }

    fn leave(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 -= 1;
        if s.0 == 0 {
            if let Some(since) = s.1.take() {
                s.2 += since.elapsed();
            }
        }
    }

    fn total(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).2
    }
}

/// One inference worker: takes batches from the reader until it ends or the loop says stop.
fn work(
    backend: &dyn Backend,
    feed: Receiver<Result<Feed>>,
    events: Sender<Event>,
    stop: &AtomicBool,
    clock: &BusyClock,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(message) = feed.recv() else { return };
        let event = match message {
            Ok(Feed::Batch(batch)) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                clock.enter();
                let output = backend.run(&batch);
                clock.leave();
                Event::Scored(batch, output)
            }
            Ok(Feed::Skipped(problem)) => Event::Skipped(problem),
            Err(e) => Event::Failed(e),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

pub fn drive(
    options: DriveOptions<'_>,
    backend: &dyn Backend,
    monitor: &Monitor,
    progress: &mut Progress,
    sink: &mut dyn RowSink,
) -> Result<(LoopTotals, Stop)> {
    let scoring = options.scoring;
    let max_tokens = Arc::new(AtomicUsize::new(backend.info().max_tokens));
    let (feed, producer) = spawn_feed(FeedOptions {
        source: scoring.data.clone(),
        columns: scoring.columns.clone(),
        rules: RowRules {
            max_residues: scoring.max_residues,
            truncate: scoring.truncate,
        },
        max_tokens: Arc::clone(&max_tokens),
        skip_invalid: scoring.skip_invalid,
        skip_rows_before: options.start_row,
        shard: scoring.shard,
        fingerprint: options.data_fingerprint.clone(),
    })?;
    let workers = backend.info().parallel_batches.max(1);
    let stop_workers = AtomicBool::new(false);
    let clock = BusyClock::default();
    let (event_sender, events) = unbounded();
    let outcome = std::thread::scope(|scope| {
        for i in 0..workers {
            let (feed, events, stop, clock) =
                (feed.clone(), event_sender.clone(), &stop_workers, &clock);
            let spawned = std::thread::Builder::new()
                .name(format!("esmbench-batch-{i}"))
                .spawn_scoped(scope, move || work(backend, feed, events, stop, clock));
            if let Err(e) = spawned {
                if i == 0 {
                    return Err(threads::refused("inference", &e).into());
                }
                // The workers that started take every batch between them: fewer batches at once, same results.
                threads::note_refused(
                    &format!("inference thread {} of {workers}", i + 1),
                    &e,
                    "the inference threads that started take every batch: fewer at once, the same results",
                );
                break;
            }
        }
        drop(event_sender);
        let outcome = deliver(
            &options,
            backend,
            &events,
            &max_tokens,
            monitor,
            progress,
            sink,
        );
        // Workers finish the batch they hold and take no other; the reader stops when its receivers are gone.
        stop_workers.store(true, Ordering::Relaxed);
        outcome
    });
    drop(feed);
    drop(events);
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    let (mut totals, stop) = outcome?;
    totals.inference = clock.total();
    totals.max_tokens_end = max_tokens.load(Ordering::Relaxed);
    sink.checkpoint(totals.rows_done, true)?;
    Ok((totals, stop))
}

/// Puts scored rows back in input order and hands them to the sink, with the stop checks between batches.
fn deliver(
    options: &DriveOptions<'_>,
    backend: &dyn Backend,
    events: &Receiver<Event>,
    max_tokens: &AtomicUsize,
    monitor: &Monitor,
    progress: &mut Progress,
    sink: &mut dyn RowSink,
) -> Result<(LoopTotals, Stop)> {
    let scoring = options.scoring;
    let mut totals = LoopTotals {
        rows_done: options.start_row,
        ..Default::default()
    };
    // Rows come back grouped by length; they wait here until every earlier row has been delivered.
    let mut waiting: BTreeMap<u64, Slot> = BTreeMap::new();
    let wants_probabilities = options.head.is_some() || !backend.info().kind.needs_head();
    let mut last_halving: Option<Instant> = None;
    let mut stop = Stop::Finished;
    for event in events {
        let (batch, output) = match event {
            Event::Scored(batch, output) => (batch, output),
            Event::Skipped(problem) => {
                waiting.insert(problem.row, Slot::Skipped(problem));
                continue;
            }
            Event::Failed(e) => return Err(e),
        };
        let output = output
            .map_err(|e| advise_on_position_overflow(e, batch.seq_len))
            .with_context(|| {
                format!(
                    "running a batch of {} x {} tokens",
                    batch.len(),
                    batch.seq_len
                )
            })?;
        let probabilities = if wants_probabilities {
            let p = model::probabilities(&output, options.head)?;
            model::check_probabilities(&p, &batch.rows, backend.info().kind)?;
            Some(p)
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
        if totals.batches == backend.info().parallel_batches.max(1) as u64 {
            totals.rss_after_first_round = Some(super::monitor::rss_now());
        }
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
        // The timeline and the progress line count this run's rows: with --shard K/N, its shard's.
        let rows_delivered = scoring.shard.rows_below(totals.rows_done);
        monitor.set_rows_done(rows_delivered);
        progress.update(rows_delivered, monitor.rss_bytes());

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
    if stop == Stop::Finished && !waiting.is_empty() {
        return Err(anyhow::anyhow!(
            "internal error: {} rows were scored out of order and never delivered",
            waiting.len()
        ));
    }
    Ok((totals, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_table_overflow_gets_the_max_residues_fix_and_other_errors_pass_unchanged() {
        let gather = anyhow::anyhow!("Non-zero status code returned while running Gather node. Name:'/model/embeddings/position_embeddings/Gather' Status Message: indices element out of data bounds, idx=1026");
        let advised = format!("{:#}", advise_on_position_overflow(gather, 1402));
        assert!(advised.contains("idx=1026"), "{advised}");
        assert!(
            advised.contains("fix: the model's learned position embeddings are shorter than these rows (1402 tokens")
                && advised.contains("lower --max-residues (1022 for ESM-1b and ESM-1v)"),
            "{advised}"
        );
        let other =
            anyhow::anyhow!("indices element out of data bounds in /word_embeddings/Gather");
        assert_eq!(
            format!("{:#}", advise_on_position_overflow(other, 10)),
            "indices element out of data bounds in /word_embeddings/Gather"
        );
    }
}
