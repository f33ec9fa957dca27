//! `esmbench embed`: pooled embeddings streamed to E.npy, with E.rows.csv naming each row's CSV row; checkpointed and resumable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::checkpoint::{self, EmbedCheckpoint, Fingerprint};
use super::drive::{drive, DriveOptions, RowSink, Slot};
use super::monitor::Monitor;
use super::progress::Progress;
use super::{
    advise_on_full_disk, bus_error, limit_below_working_set, resume_command, signals, stop_reason,
    validate_and_fingerprint_data,
};
use crate::config::EmbedConfig;
use crate::error::Failure;
use crate::fingerprint;
use crate::model;
use crate::report::embed_companions;
use crate::report::npy::NpyWriter;
use crate::report::predictions::{
    check_unchanged, differs_from_written, partial_name, CsvLog, Durable, EMBEDDED_ROWS_HEADER,
    SKIPPED_HEADER,
};

/// Streams embeddings to the .npy writer, and beside it which CSV row each one is (and which rows were skipped),
/// so that E.npy still lines up with the data when rows are skipped or the run is one shard. All three are
/// written under `.partial` names, made durable at checkpoints, and moved into place when the run completes.
struct EmbedSink<'a> {
    out: &'a Path,
    writer: NpyWriter,
    rows: CsvLog,
    /// Created at the first skipped row.
    skipped: Option<CsvLog>,
    skipped_partial: PathBuf,
    fingerprint: Fingerprint,
    every: Duration,
    last_checkpoint: Instant,
}

impl RowSink for EmbedSink<'_> {
    fn deliver(&mut self, slot: Slot) -> Result<()> {
        match slot {
            Slot::Scored(s) => {
                self.writer
                    .push_row(s.embedding.as_deref().expect("embeddings were requested"))?;
                let label = s.row.label.map(|l| l.to_string()).unwrap_or_default();
                self.rows.write(&[
                    &s.row.row.to_string(),
                    s.row.id.as_deref().unwrap_or(""),
                    &label,
                ])
            }
            Slot::Skipped(problem) => {
                let skipped = match &mut self.skipped {
                    Some(skipped) => skipped,
                    None => self
                        .skipped
                        .insert(CsvLog::create(&self.skipped_partial, &SKIPPED_HEADER)?),
                };
                let reason = format!("{}; fix: {}", problem.reason, problem.fix);
                skipped.write(&[
                    &problem.row.to_string(),
                    &problem.line.to_string(),
                    problem.id.as_deref().unwrap_or(""),
                    &problem.column,
                    &reason,
                ])
            }
        }
    }

    fn checkpoint(&mut self, rows_done: u64, force: bool) -> Result<()> {
        if !force && self.last_checkpoint.elapsed() < self.every {
            return Ok(());
        }
        let embeddings = self.writer.sync()?;
        let rows = self.rows.sync()?;
        let skipped = self.skipped.as_mut().map(CsvLog::sync).transpose()?;
        EmbedCheckpoint::new(
            self.fingerprint.clone(),
            rows_done,
            self.writer.width(),
            embeddings,
            rows,
            skipped,
        )
        .save(self.out)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// What an embed run leaves: the rows in the .npy, and whether an earlier run had already written it all
/// (`--resume` of a finished run).
pub struct EmbedOutcome {
    pub rows: u64,
    pub already_complete: bool,
}

/// `esmbench embed`: pooled embeddings as float32 .npy [rows, hidden], in input order.
pub fn run_embed(config: &EmbedConfig, quiet: bool) -> Result<EmbedOutcome> {
    write_embeddings(config, quiet).map_err(|error| {
        let then = format!("continue with: {}", resume_command(None));
        advise_on_full_disk(error, &config.out, &then)
    })
}

/// The finished files of an embed run beside their partial names, with what the checkpoint recorded of each.
fn outputs<'a>(
    out: &Path,
    checkpoint: &'a EmbedCheckpoint,
) -> Vec<(PathBuf, PathBuf, &'a Durable)> {
    let (rows_path, skipped_path) = embed_companions(out);
    let mut files = vec![
        (out.to_path_buf(), &checkpoint.embeddings),
        (rows_path, &checkpoint.rows),
    ];
    if let Some(skipped) = &checkpoint.skipped {
        files.push((skipped_path, skipped));
    }
    files
        .into_iter()
        .map(|(done, durable)| (partial_name(&done), done, durable))
        .collect()
}

/// `--resume` of a run whose checkpoint says it completed: its files must be the bytes it wrote.
fn check_complete_outputs(out: &Path, checkpoint: &EmbedCheckpoint) -> Result<()> {
    for (_, done, durable) in outputs(out, checkpoint) {
        check_unchanged(&done, durable.bytes, Some(&durable.sha256))?;
    }
    Ok(())
}

/// A run killed while it renamed its files into place (every row written, the checkpoint not yet marked
/// complete) has some under their final names: they go back to their partial names, where the resume
/// expects them, provided each is every byte the checkpoint recorded and the embeddings are all there.
fn undo_unfinished_renames(
    out: &Path,
    checkpoint: &EmbedCheckpoint,
    rows_total: u64,
) -> Result<()> {
    let every_row = checkpoint.width.is_some_and(|width| {
        checkpoint.embeddings.bytes
            == crate::report::npy::header(rows_total, width).len() as u64
                + rows_total * width as u64 * 4
    });
    if !every_row {
        return Ok(());
    }
    // A run still finishing holds this lock: its files must not move under it. Released before the resume
    // takes its own lock on the partial file (two locks of one process on one file would conflict).
    let _earlier = crate::report::npy::lock_earlier_run(out)?;
    for (partial, done, durable) in outputs(out, checkpoint) {
        let written = || {
            matches!(
                differs_from_written(&done, durable.bytes, Some(&durable.sha256)),
                Ok(None)
            )
        };
        if !partial.exists() && done.is_file() && written() {
            std::fs::rename(&done, &partial).with_context(|| {
                format!(
                    "moving {} back to {} to resume",
                    done.display(),
                    partial.display()
                )
            })?;
        }
    }
    Ok(())
}

fn write_embeddings(config: &EmbedConfig, quiet: bool) -> Result<EmbedOutcome> {
    let scoring = &config.scoring;
    let out = config.out.as_path();
    let (rows_path, skipped_path) = embed_companions(out);
    let (rows_partial, skipped_partial) = (partial_name(&rows_path), partial_name(&skipped_path));
    let mut model_hash = fingerprint::ModelHash::start(&scoring.model);
    let runtime_starting = model::start_runtime(&scoring.load_settings());
    let (summary, data_fingerprint) = validate_and_fingerprint_data(
        scoring,
        &rows_path.display().to_string(),
        &skipped_path.display().to_string(),
    )?;
    let fingerprint_with =
        |model_sha256| Fingerprint::of(scoring, data_fingerprint.clone(), model_sha256, None, None);
    // Before the model loads, so a --resume that cannot resume, or a second run on the same --out, fails at once.
    // Only a resume waits for the model's hash here; a fresh run's hashing overlaps the load.
    let rows_total = summary.rows_valid_in_shard;
    let resumed = if config.long_run.resume {
        let fingerprint = fingerprint_with(model_hash.get()?);
        let checkpoint = EmbedCheckpoint::read_matching(out, &fingerprint)?;
        if checkpoint.complete {
            check_complete_outputs(out, &checkpoint)?;
            crate::errln!(
                "esmbench: {} is already complete with the same data, model and settings; it stands (drop --resume to embed again)",
                out.display()
            );
            return Ok(EmbedOutcome {
                rows: rows_total,
                already_complete: true,
            });
        }
        undo_unfinished_renames(out, &checkpoint, rows_total)?;
        Some(checkpoint)
    } else {
        None
    };
    // The .npy writer takes the output's lock; the logs beside it are opened under it.
    let (writer, resumed_logs) = match &resumed {
        Some(checkpoint) => {
            let writer =
                NpyWriter::resume(out, rows_total, checkpoint.width, &checkpoint.embeddings)?;
            let rows = CsvLog::resume(
                &rows_partial,
                checkpoint.rows.bytes,
                Some(&checkpoint.rows.sha256),
                &EMBEDDED_ROWS_HEADER,
            )?;
            let skipped = checkpoint
                .skipped
                .as_ref()
                .map(|durable| {
                    CsvLog::resume(
                        &skipped_partial,
                        durable.bytes,
                        Some(&durable.sha256),
                        &SKIPPED_HEADER,
                    )
                })
                .transpose()?;
            let embedded = super::count_records(&rows_partial)?;
            let skipped_rows = match &skipped {
                Some(_) => super::count_records(&skipped_partial)?,
                None => 0,
            };
            checkpoint::check_rows_recorded(
                &EmbedCheckpoint::path_for(out),
                checkpoint.rows_done,
                scoring.shard,
                embedded + skipped_rows,
                "its row lists",
            )?;
            checkpoint::check_rows_recorded(
                &EmbedCheckpoint::path_for(out),
                checkpoint.rows_done,
                scoring.shard,
                writer.rows_written() + skipped_rows,
                "its embeddings and skipped rows",
            )?;
            crate::errln!(
                "esmbench: resuming at row {} of {}",
                checkpoint.rows_done,
                summary.rows_total
            );
            (writer, Some((rows, skipped)))
        }
        None => (NpyWriter::create(out, rows_total)?, None),
    };
    signals::install()?;
    bus_error::install(&scoring.model);
    let mut monitor = Monitor::start(config.long_run.rss_limits)?;
    runtime_starting.wait();
    let backend = model::load_backend(&scoring.load_settings())?;
    let fingerprint = fingerprint_with(model_hash.get()?);
    if !backend.info().kind.yields_embeddings() {
        return Err(Failure::usage(format!(
            "{} outputs {}, not embeddings\n  fix: use an encoder that outputs last_hidden_state or a pooled embedding",
            scoring.model.display_name(),
            backend.info().kind.label()
        ))
        .into());
    }
    // A fresh run replaces an interrupted earlier run's state only now, with its model loaded: a command
    // refused at load (a wrong --device or --model retyped) keeps that run's --resume. It creates its row list
    // now too, so a model that fails to load leaves no partial files.
    if resumed_logs.is_none() {
        EmbedCheckpoint::remove(out);
        let _ = std::fs::remove_file(&skipped_partial);
    }
    let (rows, skipped) = match resumed_logs {
        Some(logs) => logs,
        None => (CsvLog::create(&rows_partial, &EMBEDDED_ROWS_HEADER)?, None),
    };
    let start_row = resumed.as_ref().map_or(0, |c| c.rows_done);
    let mut sink = EmbedSink {
        out,
        writer,
        rows,
        skipped,
        skipped_partial,
        fingerprint,
        every: config.long_run.checkpoint_every,
        last_checkpoint: Instant::now(),
    };
    sink.checkpoint(start_row, true)?;
    let shard = scoring.shard;
    let mut progress = Progress::new(
        shard.rows_below(summary.rows_total),
        shard.rows_below(start_row),
        quiet,
    );
    let options = DriveOptions {
        scoring,
        head: None,
        want_embeddings: true,
        start_row,
        data_fingerprint,
    };
    let outcome = drive(
        options,
        backend.as_ref(),
        &monitor,
        &mut progress,
        &mut sink,
    );
    let rows_done = outcome
        .as_ref()
        .map(|(t, _)| shard.rows_below(t.rows_done))
        .unwrap_or_else(|_| monitor.rows_done().max(shard.rows_below(start_row)));
    progress.finish(rows_done, monitor.rss_bytes());
    monitor.finish();
    let (totals, stop) = outcome?;
    let below = limit_below_working_set(&totals, backend.info().parallel_batches, &config.long_run);
    if let Some((_, kind, what, resume)) = stop_reason(&stop, &config.long_run, below) {
        let message = format!(
            "{what} after {rows_done} of {}; {} was not written, the embeddings so far are in {} (checkpointed)\n  {resume}",
            super::rows_of(shard, summary.rows_total),
            out.display(),
            partial_name(out).display(),
        );
        return Err(Failure { kind, message }.into());
    }
    model_hash.check_unchanged()?;
    sink.rows.finish_into(&rows_path)?;
    match sink.skipped {
        Some(skipped) => skipped.finish_into(&skipped_path)?,
        // An earlier run's list would describe other rows.
        None => match std::fs::remove_file(&skipped_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("removing the stale {}", skipped_path.display()))
            }
            _ => {}
        },
    }
    sink.writer.finish()?;
    EmbedCheckpoint::mark_complete(out)?;
    // A resumed run's file holds the rows of every run before it too.
    Ok(EmbedOutcome {
        rows: rows_total,
        already_complete: false,
    })
}
