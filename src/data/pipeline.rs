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
use crate::fingerprint::Seen;

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
    /// The data file's SHA-256 and length when the run started (what its report records): the feed fails
    /// rather than score bytes that differ from them.
    pub fingerprint: (String, u64),
}

/// Err when the bytes read so far cannot be the fingerprinted file: more of them, or, at the end, other ones.
fn check_unchanged(
    name: &str,
    fingerprint: &(String, u64),
    seen: &Seen,
    at_end: bool,
) -> Result<()> {
    let (sha256, bytes) = fingerprint;
    let read = seen.bytes();
    let grew = read > *bytes;
    let differs = at_end && (read != *bytes || seen.sha256() != *sha256);
    if !grew && !differs {
        return Ok(());
    }
    let now = if at_end {
        format!("{read} bytes, SHA-256 {}", &seen.sha256()[..16])
    } else {
        format!("at least {read} bytes")
    };
    Err(Failure::input(format!(
        "{name} changed while the run read it: {bytes} bytes, SHA-256 {} when the run started, {now} now; the predictions would mix two versions of the file\n  fix: leave the data file unchanged while a run reads it (write a new version under another name), then run again",
        &sha256[..16]
    ))
    .into())
}

/// Starts the producer; the receiver yields batches until the file ends, or one error.
pub fn spawn_feed(options: FeedOptions) -> Result<(Receiver<Result<Feed>>, JoinHandle<()>)> {
    // The embedded demo data is part of the binary: nothing can change it under the run.
    let seen = matches!(options.source, DataSource::File(_)).then(|| Arc::new(Seen::default()));
    let mut reader = RecordReader::open(
        &options.source,
        &options.columns,
        options.rules,
        seen.clone(),
    )?;
    let unchanged = move |name: &str, at_end: bool| match &seen {
        Some(seen) => check_unchanged(name, &options.fingerprint, seen, at_end),
        None => Ok(()),
    };
    let (sender, receiver) = bounded(CHANNEL_BATCHES);
    let handle = std::thread::Builder::new().name("esmbench-reader".into()).spawn(move || {
        let mut batcher = Batcher::new(options.max_tokens.load(Ordering::Relaxed));
        let name = reader.name().to_string();
        loop {
            let outcome = match reader.next_row() {
                Ok(Some(outcome)) => unchanged(&name, false).map(|()| outcome),
                Ok(None) => match unchanged(&name, true) {
                    Ok(()) => break,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
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
