//! The measured run: validate, load the model once, stream batches through it, write outputs in input order.

pub mod monitor;
pub mod progress;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{ScoringConfig, TestConfig};
use crate::data::batcher::BatchRow;
use crate::data::pipeline::{spawn_feed, Feed, FeedOptions};
use crate::data::reader::{RowProblem, RowRules};
use crate::data::validate::{self, DataSummary};
use crate::error::Failure;
use crate::metrics;
use crate::metrics::threshold::{self, Threshold};
use crate::model::head::Head;
use crate::model::{self, Backend, ModelOutput};
use crate::report::npy::NpyWriter;
use crate::report::predictions::PredictionsWriter;
use crate::report::{self, DataSection, Execution, ModelSection, Performance, Report, Tool};
use monitor::Monitor;
use progress::Progress;

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

/// Counters of the measured loop.
#[derive(Debug, Default)]
pub struct LoopTotals {
    pub rows_scored: u64,
    pub rows_skipped: u64,
    pub batches: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    pub inference: Duration,
}

fn rules(scoring: &ScoringConfig) -> RowRules {
    RowRules {
        max_residues: scoring.max_residues,
        truncate: scoring.truncate,
    }
}

/// The fast pass before the model loads; invalid rows stop the run here.
pub fn validate_data(scoring: &ScoringConfig) -> Result<DataSummary> {
    let summary = validate::scan(&scoring.data, &scoring.columns, rules(scoring))?;
    validate::require_all_valid(&summary, &scoring.data.display_name())?;
    Ok(summary)
}

/// Streams the data through the backend and hands every row to `sink` in input order.
pub fn drive(
    scoring: &ScoringConfig,
    backend: &mut dyn Backend,
    head: Option<&Head>,
    want_embeddings: bool,
    monitor: &Monitor,
    progress: &mut Progress,
    mut sink: impl FnMut(Slot) -> Result<()>,
) -> Result<LoopTotals> {
    let (feed, producer) = spawn_feed(FeedOptions {
        source: scoring.data.clone(),
        columns: scoring.columns.clone(),
        rules: rules(scoring),
        max_tokens: Arc::new(AtomicUsize::new(scoring.max_tokens)),
        skip_invalid: false,
        skip_rows_before: 0,
    })?;
    let mut totals = LoopTotals::default();
    // Rows come back grouped by length; they wait here until every earlier row has been delivered.
    let mut waiting: BTreeMap<u64, Slot> = BTreeMap::new();
    let mut next_row = 0u64;
    let wants_probabilities = head.is_some() || !backend.info().kind.needs_head();
    for message in feed {
        let batch = match message? {
            Feed::Batch(batch) => batch,
            Feed::Skipped(problem) => {
                totals.rows_skipped += 1;
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
            Some(model::probabilities(&output, head)?)
        } else {
            None
        };
        let embeddings = match (&output, want_embeddings) {
            (ModelOutput::Embeddings(e), true) => Some(e),
            (_, true) => return Err(Failure::usage("this model outputs probabilities, not embeddings\n  fix: export the encoder without its classifier").into()),
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
        while let Some(slot) = waiting.remove(&next_row) {
            sink(slot)?;
            next_row += 1;
        }
        monitor.set_rows_done(totals.rows_scored + totals.rows_skipped);
        progress.update(
            totals.rows_scored + totals.rows_skipped,
            monitor.rss_bytes(),
        );
    }
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    if !waiting.is_empty() {
        return Err(anyhow::anyhow!(
            "internal error: {} rows were scored out of order and never delivered",
            waiting.len()
        ));
    }
    Ok(totals)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// The threshold that applies and where it came from: --threshold/--assay or config, then the head, then 0.5.
pub fn resolve_threshold(config: &TestConfig, head: Option<&Head>) -> Threshold {
    threshold::resolve(config.threshold.clone(), head.map(|h| h.threshold))
}

/// `esmbench test`: predictions.csv, report.json and report.md in the output directory.
pub fn run_test(config: &TestConfig, quiet: bool) -> Result<Report> {
    let wall = Instant::now();
    let started_at = now_rfc3339();
    let scoring = &config.scoring;
    let summary = validate_data(scoring)?;
    let mut monitor = Monitor::start();
    let mut backend = model::load_backend(scoring)?;
    let info = backend.info().clone();
    let head = model::resolve_head(scoring, &info)?;
    model::require_head_for_scoring(
        &info,
        head.as_ref().map(|(h, _)| h),
        &scoring.model.display_name(),
    )?;
    let chosen = resolve_threshold(config, head.as_ref().map(|(h, _)| h));
    let threshold = chosen.value;

    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        command: "test".into(),
        status: "running".into(),
        tool: Tool {
            name: "esmbench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        started_at,
        model: ModelSection {
            path: scoring.model.display_name(),
            sha256: info.sha256.clone(),
            kind: info.kind.label().into(),
            output: info.output.clone(),
            head_source: head.as_ref().map(|(_, origin)| origin.clone()),
            threshold,
            threshold_source: chosen.source,
            assay: chosen.assay.map(|a| a.name().to_string()),
        },
        data: DataSection {
            path: scoring.data.display_name(),
            rows_total: summary.rows_total,
            rows_scored: 0,
            rows_skipped: 0,
            rows_truncated: summary.rows_truncated,
            rows_unlabeled: 0,
            label_column: summary
                .has_label_column
                .then(|| scoring.columns.label.clone()),
        },
        execution: Execution {
            device_requested: info.device_requested.clone(),
            execution_provider: info.execution_provider.clone(),
            fallback: info.fallback.clone(),
            model_loads: model::model_loads() as u64,
            threads: info.threads as u64,
            max_tokens: scoring.max_tokens as u64,
            max_residues: scoring.max_residues as u64,
        },
        metrics: None,
        metrics_note: None,
        performance: Performance {
            model_load_seconds: info.load_seconds,
            rss_start_bytes: monitor.rss_start_bytes,
            ..Default::default()
        },
        error: None,
    };
    report::write_reports(&config.out_dir, &report)?;

    let mut predictions = PredictionsWriter::create(&config.out_dir.join("predictions.csv"))?;
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    let mut unlabeled = 0u64;
    let mut progress = Progress::new(summary.rows_valid, quiet);
    let outcome = drive(
        scoring,
        backend.as_mut(),
        head.as_ref().map(|(h, _)| h),
        false,
        &monitor,
        &mut progress,
        |slot| {
            if let Slot::Scored(s) = slot {
                let p = s
                    .probability
                    .expect("probabilities are computed for test runs");
                predictions.write(
                    s.row.row,
                    s.row.id.as_deref(),
                    s.row.label,
                    p,
                    metrics::predict(p, threshold),
                )?;
                match s.row.label {
                    Some(y) => {
                        labels.push(y);
                        scores.push(p);
                    }
                    None => unlabeled += 1,
                }
            }
            Ok(())
        },
    );
    progress.finish(labels.len() as u64 + unlabeled, monitor.rss_bytes());
    let flushed = predictions.finish();
    let (peak_rss, rss_end, peak_threads, timeline) = monitor.finish();
    let totals = match outcome.and_then(|t| flushed.map(|_| t)) {
        Ok(totals) => totals,
        Err(error) => {
            report.status = "failed".into();
            report.error = Some(format!("{error:#}"));
            report.performance.wall_seconds = wall.elapsed().as_secs_f64();
            report.performance.peak_rss_bytes = peak_rss;
            report::write_reports(&config.out_dir, &report)?;
            return Err(error);
        }
    };
    report.data.rows_scored = totals.rows_scored;
    report.data.rows_skipped = totals.rows_skipped;
    report.data.rows_unlabeled = unlabeled;
    if summary.has_label_column && !labels.is_empty() {
        report.metrics = Some(metrics::evaluate(
            &labels,
            &scores,
            threshold,
            config.bootstrap,
        ));
    } else {
        report.metrics_note = Some(if summary.has_label_column {
            "every label is empty: predictions only".into()
        } else {
            "the data has no label column: predictions only".into()
        });
    }
    report.execution.model_loads = model::model_loads() as u64;
    report.performance = performance(
        &totals,
        wall.elapsed(),
        info.load_seconds,
        monitor.rss_start_bytes,
        peak_rss,
        rss_end,
        peak_threads,
        timeline,
    );
    report.status = "complete".into();
    report::write_reports(&config.out_dir, &report)?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn performance(
    totals: &LoopTotals,
    wall: Duration,
    load_seconds: f64,
    rss_start: u64,
    peak_rss: u64,
    rss_end: u64,
    peak_threads: u64,
    timeline: Vec<report::Sample>,
) -> Performance {
    let wall_seconds = wall.as_secs_f64();
    let per_second = |n: u64| {
        if wall_seconds > 0.0 {
            n as f64 / wall_seconds
        } else {
            0.0
        }
    };
    Performance {
        wall_seconds,
        model_load_seconds: load_seconds,
        inference_seconds: totals.inference.as_secs_f64(),
        sequences_per_second: per_second(totals.rows_scored),
        tokens_per_second: per_second(totals.real_tokens),
        padding_efficiency: if totals.padded_tokens > 0 {
            totals.real_tokens as f64 / totals.padded_tokens as f64
        } else {
            1.0
        },
        batches: totals.batches,
        peak_rss_bytes: peak_rss,
        rss_start_bytes: rss_start,
        rss_end_bytes: rss_end,
        peak_threads,
        timeline,
    }
}

/// `esmbench embed`: pooled embeddings as float32 .npy [rows, hidden], in input order.
pub fn run_embed(scoring: &ScoringConfig, out: &Path, quiet: bool) -> Result<u64> {
    let summary = validate_data(scoring)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::config::ensure_writable_dir(parent)?;
    }
    let mut monitor = Monitor::start();
    let mut backend = model::load_backend(scoring)?;
    if !backend.info().kind.yields_embeddings() {
        return Err(Failure::usage(format!(
            "{} outputs {}, not embeddings\n  fix: use an encoder that outputs last_hidden_state or a pooled embedding",
            scoring.model.display_name(),
            backend.info().kind.label()
        ))
        .into());
    }
    let mut writer = NpyWriter::create(out, summary.rows_valid)?;
    let mut progress = Progress::new(summary.rows_valid, quiet);
    let totals = drive(
        scoring,
        backend.as_mut(),
        None,
        true,
        &monitor,
        &mut progress,
        |slot| match slot {
            Slot::Scored(s) => {
                writer.push_row(s.embedding.as_deref().expect("embeddings were requested"))
            }
            Slot::Skipped(_) => Ok(()),
        },
    )?;
    progress.finish(totals.rows_scored, monitor.rss_bytes());
    monitor.finish();
    writer.finish()?;
    Ok(totals.rows_scored)
}
