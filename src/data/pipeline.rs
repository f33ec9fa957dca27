//! The producer thread: reads, checks, tokenizes and batches rows ahead of inference, through a bounded channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use crossbeam_channel::{bounded, Receiver};

use crate::config::{ColumnNames, DataSource};
use crate::data::batcher::{Batcher, TokenBatch};
use crate::data::reader::{RecordReader, RowOutcome, RowProblem, RowRules};
use crate::error::Failure;

/// Batches in flight between the reader and the model: enough that the model never waits, few enough to bound memory.
const CHANNEL_BATCHES: usize = 4;

pub enum Feed {
    Batch(TokenBatch),
    /// A row that could not be scored (only sent when invalid rows are skipped).
    Skipped(RowProblem),
}

pub struct FeedOptions {
    pub source: DataSource,
    pub columns: ColumnNames,
    pub rules: RowRules,
    /// Shared so the memory watchdog can lower it while the run goes on.
    pub max_tokens: Arc<AtomicUsize>,
    pub skip_invalid: bool,
    /// Rows below this data-row index were already scored (resume): read past them.
    pub skip_rows_before: u64,
    pub shard: crate::config::Shard,
}

/// Starts the producer; the receiver yields batches until the file ends, or one error.
pub fn spawn_feed(options: FeedOptions) -> Result<(Receiver<Result<Feed>>, JoinHandle<()>)> {
    let mut reader = RecordReader::open(&options.source, &options.columns, options.rules)?;
    let (sender, receiver) = bounded(CHANNEL_BATCHES);
    let handle = std::thread::Builder::new().name("esmbench-reader".into()).spawn(move || {
        let mut batcher = Batcher::new(options.max_tokens.load(Ordering::Relaxed));
        let name = reader.name().to_string();
        loop {
            let outcome = match reader.next_row() {
                Ok(Some(outcome)) => outcome,
                Ok(None) => break,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            };
            let batches = match outcome {
                RowOutcome::Valid(record) if record.row < options.skip_rows_before || !options.shard.contains(record.row) => continue,
                RowOutcome::Valid(record) => {
                    batcher.set_max_tokens(options.max_tokens.load(Ordering::Relaxed));
                    batcher.push(record)
                }
                RowOutcome::Invalid(problem) if problem.row < options.skip_rows_before || !options.shard.contains(problem.row) => continue,
                RowOutcome::Invalid(problem) if options.skip_invalid => {
                    if sender.send(Ok(Feed::Skipped(problem))).is_err() {
                        return;
                    }
                    continue;
                }
                RowOutcome::Invalid(problem) => {
                    let _ = sender.send(Err(Failure::input(format!(
                        "{name}: {problem}\n  (the file changed after validation, or the row was not checked)\n  fix: leave the data file unchanged while a run reads it, and run again"
                    ))
                    .into()));
                    return;
                }
            };
            for batch in batches {
                if sender.send(Ok(Feed::Batch(batch))).is_err() {
                    return;
                }
            }
        }
        for batch in batcher.flush() {
            if sender.send(Ok(Feed::Batch(batch))).is_err() {
                return;
            }
        }
    });
    let handle = handle.map_err(|e| crate::threads::refused("data reader", &e))?;
    Ok((receiver, handle))
}
