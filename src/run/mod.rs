//! The runs: validate, fingerprint, load the model once, drive the batches, write outputs and reports.

pub mod bus_error;
pub mod checkpoint;
pub mod drive;
pub mod embed;
pub mod lock;
pub mod monitor;
pub mod progress;
pub mod signals;
pub mod suite;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::{ScoringConfig, TestConfig};
use crate::data::reader::RowRules;
use crate::data::validate::{self, DataSummary};
use crate::error::{Failure, FailureKind};
use crate::fingerprint;
use crate::metrics;
use crate::metrics::threshold::{self, Threshold};
use crate::model::head::Head;
use crate::model::{self, Backend, ModelInfo};
use crate::report::predictions::{
    check_unchanged, read_scored, CsvLog, PREDICTIONS_HEADER, SKIPPED_HEADER,
};
use crate::report::{self, DataSection, Execution, ModelSection, Performance, Report, Tool};
use crate::threads;
use checkpoint::{Checkpoint, Fingerprint};
use drive::{drive, DriveOptions, LoopTotals, RowSink, Slot, Stop};
use monitor::Monitor;
use progress::Progress;

use crate::output_files::{PREDICTIONS as PREDICTIONS_FILE, SKIPPED as SKIPPED_FILE};

/// The fast pass over the data before the model loads, for every command that scores or embeds: invalid rows
/// stop the run here unless `--on-invalid skip` leaves valid ones to go on with.
pub fn scan_data(scoring: &ScoringConfig) -> Result<DataSummary> {
    let rules = RowRules {
        max_residues: scoring.max_residues,
        truncate: scoring.truncate,
    };
    let summary = validate::scan(&scoring.data, &scoring.columns, rules, scoring.shard)?;
    if !scoring.skip_invalid || summary.rows_valid == 0 {
        validate::require_all_valid(&summary, &scoring.data.display_name())?;
    }
    Ok(summary)
}

/// [`scan_data`], saying how many rows will be skipped and giving the data's warnings. `row_list` and
/// `skipped_list` name the files that will list the scored and the skipped rows.
pub fn validate_data(
    scoring: &ScoringConfig,
    row_list: &str,
    skipped_list: &str,
) -> Result<DataSummary> {
    let summary = scan_data(scoring)?;
    let name = scoring.data.display_name();
    if summary.rows_invalid > 0 {
        crate::errln!(
            "esmbench: {} of {} rows are invalid and will be skipped (listed in {skipped_list})",
            summary.rows_invalid,
            summary.rows_total
        );
    }
    for warning in validate::warnings(&summary, &name, Some(row_list)) {
        crate::errln!("{warning}");
    }
    Ok(summary)
}

/// [`validate_data`], with the data's SHA-256 and length hashed on a thread of its own meanwhile: what
/// the report records and what the feed checks the bytes it scores against.
fn validate_and_fingerprint_data(
    scoring: &ScoringConfig,
    row_list: &str,
    skipped_list: &str,
) -> Result<(DataSummary, (String, u64))> {
    let hashing = {
        let source = scoring.data.clone();
        threads::in_background("esmbench-data-hash", move || {
            fingerprint::data_sha256(&source)
        })
    };
    let summary = validate_data(scoring, row_list, skipped_list)?;
    let fingerprint = hashing
        .join()
        .map_err(|_| anyhow::anyhow!("the data hashing thread panicked"))??;
    Ok((summary, fingerprint))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// The threshold that applies and where it came from: --threshold/--assay or config, then the head, then 0.5.
pub fn resolve_threshold(config: &TestConfig, head: Option<&Head>) -> Threshold {
    threshold::resolve(config.threshold.clone(), head.and_then(|h| h.threshold))
}

/// A head fitted on another model file's embeddings (its recorded `model_sha256` is not this model's), said
/// once: legitimate for an `--optimize` or `--quantize` export of that model, a silent error otherwise.
fn other_model_note(head: &Head, origin: &str, model_sha256: &str) -> Option<String> {
    let fitted_on = head.model_sha256.as_deref()?;
    (!fitted_on.eq_ignore_ascii_case(model_sha256)).then(|| {
        format!(
            "note: head {origin} was fitted on another model file (SHA-256 {}..., this one {}...): right for an \
--optimize or --quantize export of that model or a rewritten copy of it, wrong for any other\n  advice: pass the head fitted on this model \
(esmbench fit --model ...), or score the model it was fitted on",
            &fitted_on[..fitted_on.len().min(12)],
            &model_sha256[..model_sha256.len().min(12)]
        )
    })
}

/// A run's rows as its messages count them: "20000 rows", or "this shard's 6667 rows" with --shard K/N.
fn rows_of(shard: crate::config::Shard, rows_total: u64) -> String {
    if shard == crate::config::Shard::WHOLE {
        format!("{rows_total} rows")
    } else {
        format!(
            "shard {}'s {} rows",
            shard.label(),
            shard.rows_below(rows_total)
        )
    }
}

/// "resume with: COMMAND", the last line of a stopped run's message.
fn resume_line(max_rss: Option<&str>) -> String {
    match max_rss {
        None => format!("resume with: {}", resume_command(None)),
        Some(_) => format!("resume with a higher limit: {}", resume_command(max_rss)),
    }
}

/// The command line that continues this run, with `--max-rss` set to `max_rss` when given.
fn resume_command(max_rss: Option<&str>) -> String {
    let args: Vec<String> = std::env::args().collect();
    resume_args(&args, max_rss).join(" ")
}

/// [`resume_command`]'s words: `args` quoted for a shell, `--resume` added, `--max-rss` replaced.
fn resume_args(args: &[String], max_rss: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if max_rss.is_some() && word == "--max-rss" {
            words.next();
            continue;
        }
        if max_rss.is_some() && word.starts_with("--max-rss=") {
            continue;
        }
        out.push(if word.contains(char::is_whitespace) || word.is_empty() {
            format!("'{word}'")
        } else {
            word.clone()
        });
    }
    if !out.iter().any(|a| a == "--resume") {
        out.push("--resume".into());
    }
    if let Some(limit) = max_rss {
        out.extend(["--max-rss".to_string(), limit.to_string()]);
    }
    out
}

/// predictions.csv, skipped.csv, the labels and scores for the metrics, and the checkpoints of a test run.
struct TestSink<'a> {
    out_dir: &'a Path,
    threshold: f64,
    predictions: CsvLog,
    skipped: CsvLog,
    labels: Vec<u8>,
    scores: Vec<f64>,
    rows_scored: u64,
    rows_skipped: u64,
    rows_unlabeled: u64,
    fingerprint: Fingerprint,
    every: Duration,
    last_checkpoint: Instant,
    report: Report,
}

impl TestSink<'_> {
    fn take_scored(&mut self, label: Option<u8>, probability: f64) {
        self.rows_scored += 1;
        match label {
            Some(y) => {
                self.labels.push(y);
                self.scores.push(probability);
            }
            None => self.rows_unlabeled += 1,
        }
    }

    fn update_counts(&self, report: &mut Report) {
        report.data.rows_scored = self.rows_scored;
        report.data.rows_skipped = self.rows_skipped;
        report.data.rows_unlabeled = self.rows_unlabeled;
    }
}

impl RowSink for TestSink<'_> {
    fn deliver(&mut self, slot: Slot) -> Result<()> {
        match slot {
            Slot::Scored(s) => {
                let p = s.probability.expect("test runs compute probabilities");
                let label = s.row.label.map(|l| l.to_string()).unwrap_or_default();
                let prediction = metrics::predict(p, self.threshold).to_string();
                self.predictions.write(&[
                    &s.row.row.to_string(),
                    s.row.id.as_deref().unwrap_or(""),
                    &label,
                    &p.to_string(),
                    &prediction,
                ])?;
                self.take_scored(s.row.label, p);
            }
            Slot::Skipped(problem) => {
                self.rows_skipped += 1;
                let reason = format!("{}; fix: {}", problem.reason, problem.fix);
                self.skipped.write(&[
                    &problem.row.to_string(),
                    &problem.line.to_string(),
                    problem.id.as_deref().unwrap_or(""),
                    &problem.column,
                    &reason,
                ])?;
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, rows_done: u64, force: bool) -> Result<()> {
        if !force && self.last_checkpoint.elapsed() < self.every {
            return Ok(());
        }
        let predictions = self.predictions.sync()?;
        let skipped = self.skipped.sync()?;
        Checkpoint::new(self.fingerprint.clone(), rows_done, predictions, skipped)
            .save(self.out_dir)?;
        let mut report = self.report.clone();
        self.update_counts(&mut report);
        report::write_reports(self.out_dir, &report)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

fn count_records(path: &Path) -> Result<u64> {
    let mut reader = csv::Reader::from_path(path)?;
    let mut count = 0;
    for record in reader.records() {
        record?;
        count += 1;
    }
    Ok(count)
}

fn head_sha256(config: &ScoringConfig) -> Result<Option<String>> {
    config
        .head
        .as_deref()
        .map(|p| Ok(fingerprint::sha256_file(p)?.0))
        .transpose()
}

fn initial_report(
    config: &TestConfig,
    data_sha256: &str,
    info: &ModelInfo,
    model_sha256: &str,
    head: Option<&(Head, String)>,
    summary: &DataSummary,
    threshold: &Threshold,
) -> Report {
    let scoring = &config.scoring;
    Report {
        schema_version: report::SCHEMA_VERSION,
        command: "test".into(),
        status: "running".into(),
        tool: Tool {
            name: "esmbench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        started_at: now_rfc3339(),
        model: ModelSection {
            path: scoring.model.display_name(),
            sha256: model_sha256.to_string(),
            kind: info.kind.label().into(),
            output: info.output.clone(),
            head_source: head.map(|(_, origin)| origin.clone()),
            threshold: threshold.value,
            threshold_source: threshold.source.clone(),
            assay: threshold.assay.map(|a| a.name().to_string()),
        },
        data: DataSection {
            path: scoring.data.display_name(),
            sha256: data_sha256.to_string(),
            rows_total: summary.rows_total,
            rows_scored: 0,
            rows_skipped: 0,
            rows_truncated: summary.rows_truncated,
            rows_with_gaps: summary.rows_with_gaps,
            rows_repeating_id: summary.rows_with_repeated_id,
            rows_repeating_sequence: summary.rows_with_repeated_sequence,
            sequences_with_both_labels: summary.sequences_with_both_labels,
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
            io_binding: info.io_binding,
            graph_rewrite: info.graph_rewrite.clone(),
            threads: info.threads as u64,
            parallel_batches: info.parallel_batches as u64,
            max_tokens: info.max_tokens as u64,
            max_tokens_lowered_to: None,
            max_residues: scoring.max_residues as u64,
            shard: (scoring.shard != crate::config::Shard::WHOLE).then(|| scoring.shard.label()),
            resumed: None,
        },
        metrics: None,
        metrics_note: None,
        performance: Performance {
            model_load_seconds: info.load_seconds,
            ..Default::default()
        },
        error: None,
    }
}

/// A model already loaded by the caller, reused across datasets (`esmbench test` over a models x datasets config).
pub struct Loaded<'a> {
    pub backend: &'a dyn Backend,
    /// The process's model-load count before this model was loaded, so a report counts this model's loads only.
    pub loads_before: usize,
    /// Whether this run pays for the load in its timings (the model's first dataset) or found it loaded.
    pub first_use: bool,
    /// The hash of the files as they were loaded. Hashing them again for each dataset would cost seconds on
    /// a large model, and would describe a new file, not the loaded model, if one replaced it meanwhile.
    pub model_hash: fingerprint::ModelHash,
}

/// `esmbench test`: predictions.csv, report.json and report.md in the output directory; resumable.
pub fn run_test(config: &TestConfig, quiet: bool) -> Result<Report> {
    run_test_on(config, quiet, None)
}

/// `run_test` with the model loaded here (None) or reused from the caller.
pub fn run_test_on(config: &TestConfig, quiet: bool, loaded: Option<Loaded<'_>>) -> Result<Report> {
    score_and_report(config, quiet, loaded).map_err(|error| {
        let then = format!("continue with: {}", resume_command(None));
        advise_on_full_disk(error, &config.out_dir, &then)
    })
}

/// A full disk or quota gets the fix and what to do next (for a test run, the command that continues: the
/// checkpoint and the predictions up to it are intact, since each checkpoint is written whole before it
/// replaces the last).
fn advise_on_full_disk(error: anyhow::Error, out: &Path, then: &str) -> anyhow::Error {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    let full = error.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            match cause.downcast_ref::<csv::Error>().map(csv::Error::kind) {
                Some(csv::ErrorKind::Io(e)) => Some(e),
                _ => None,
            }
        });
        io.is_some_and(|e| matches!(e.kind(), StorageFull | QuotaExceeded))
    });
    if !full {
        return error;
    }
    Failure::runtime(format!(
        "{error:#}\n  fix: free space on the disk that holds {} (or raise the quota), then {then}",
        out.display()
    ))
    .into()
}

fn score_and_report(
    config: &TestConfig,
    quiet: bool,
    loaded: Option<Loaded<'_>>,
) -> Result<Report> {
    let wall = Instant::now();
    let scoring = &config.scoring;
    let _output_lock = lock::OutputLock::acquire(&config.out_dir)?;
    let previous = if config.long_run.resume {
        Some(Checkpoint::read(&config.out_dir)?)
    } else {
        // A finished run's outputs go at once, so a run refused for bad input leaves no report saying
        // `complete`; an interrupted run's stay for its --resume until this run starts writing, so a command
        // retyped wrongly in tmux does not cost hours of resumable work.
        if !checkpoint::interrupted_run_in(&config.out_dir) {
            report::remove_earlier_run(&config.out_dir)?;
        }
        None
    };
    let (mut model_hash, loaded) = match loaded {
        Some(l) => (l.model_hash, Some((l.backend, l.loads_before, l.first_use))),
        None => (fingerprint::ModelHash::start(&scoring.model), None),
    };
    let runtime_starting = loaded
        .is_none()
        .then(|| model::start_runtime(&scoring.load_settings()));
    let (summary, (data_sha256, data_bytes)) =
        validate_and_fingerprint_data(scoring, PREDICTIONS_FILE, SKIPPED_FILE)?;
    if config.needs_labels && summary.rows_labeled == 0 {
        return Err(Failure::input(format!(
            "{}: no row has a label, and the regression gate (--baseline or --write-baseline) compares metrics\n  \
fix: gate a labeled dataset (a `{}` column of 0/1), or drop the gate flags to score predictions only",
            scoring.data.display_name(),
            scoring.columns.label
        ))
        .into());
    }
    let threshold_for_fingerprint = config.threshold.as_ref().map(|t| t.value);
    // A resume of changed data, model or settings is refused before the model loads, which for a large model
    // takes minutes. Only a threshold set by a head in the model's metadata needs the loaded model; that, with
    // everything else, is compared again after the load.
    if let Some(previous) = &previous {
        let head_file_threshold = match scoring.head.as_deref() {
            Some(path) => Some(Head::read(path)?.threshold.unwrap_or(threshold::DEFAULT)),
            None => None,
        };
        let threshold = threshold_for_fingerprint
            .or(head_file_threshold)
            .or(previous.fingerprint.threshold);
        let early = Fingerprint::of(
            scoring,
            (data_sha256.clone(), data_bytes),
            model_hash.get()?,
            head_sha256(scoring)?,
            threshold,
        );
        previous.clone().matching(&early)?;
    }
    signals::install()?;
    bus_error::install(&scoring.model);

    let mut monitor = Monitor::start(config.long_run.rss_limits)?;
    let owned;
    let (backend, loads_before, load_seconds): (&dyn Backend, usize, f64) = match loaded {
        Some((backend, loads_before, first_use)) => {
            let seconds = if first_use {
                backend.info().load_seconds
            } else {
                0.0
            };
            (backend, loads_before, seconds)
        }
        None => {
            if let Some(starting) = runtime_starting {
                starting.wait();
            }
            owned = model::load_backend(&scoring.load_settings())?;
            let seconds = owned.info().load_seconds;
            (owned.as_ref(), 0, seconds)
        }
    };
    let model_sha256 = model_hash.get()?;
    let mut info = backend.info().clone();
    info.load_seconds = load_seconds;
    let head = model::resolve_head(scoring.head.as_deref(), &scoring.model, &info)?;
    // A head in the model's own metadata was fitted before it was embedded there, which changed the file.
    let head_file = head.as_ref().filter(|_| scoring.head.is_some());
    if let Some(note) =
        head_file.and_then(|(head, origin)| other_model_note(head, origin, &model_sha256))
    {
        crate::errln!("{note}");
    }
    model::require_head_for_scoring(
        &info,
        head.as_ref().map(|(h, _)| h),
        &scoring.model.display_name(),
    )?;
    let threshold = resolve_threshold(config, head.as_ref().map(|(h, _)| h));
    let data_fingerprint = (data_sha256, data_bytes);
    let fingerprint = Fingerprint::of(
        scoring,
        data_fingerprint.clone(),
        model_sha256.clone(),
        head_sha256(scoring)?,
        Some(threshold_for_fingerprint.unwrap_or(threshold.value)),
    );

    let predictions_path = config.out_dir.join("predictions.csv");
    let skipped_path = config.out_dir.join(SKIPPED_FILE);
    let (resumed, predictions, skipped) = if let Some(previous) = previous {
        let checkpoint = previous.matching(&fingerprint)?;
        if checkpoint.complete {
            return already_complete(config, &checkpoint, &predictions_path);
        }
        let predictions = CsvLog::resume(
            &predictions_path,
            checkpoint.predictions_bytes,
            checkpoint.predictions_sha256.as_deref(),
            &PREDICTIONS_HEADER,
        )?;
        let skipped = CsvLog::resume(
            &skipped_path,
            checkpoint.skipped_bytes,
            checkpoint.skipped_sha256.as_deref(),
            &SKIPPED_HEADER,
        )?;
        crate::errln!(
            "esmbench: resuming at row {} of {}",
            checkpoint.rows_done,
            summary.rows_total
        );
        (Some(checkpoint), predictions, skipped)
    } else {
        (
            None,
            CsvLog::create(&predictions_path, &PREDICTIONS_HEADER)?,
            CsvLog::create(&skipped_path, &SKIPPED_HEADER)?,
        )
    };
    let mut report = initial_report(
        config,
        &fingerprint.data_sha256,
        &info,
        &model_sha256,
        head.as_ref(),
        &summary,
        &threshold,
    );
    report.execution.model_loads = (model::model_loads() - loads_before) as u64;
    report.performance.rss_start_bytes = monitor.rss_start_bytes;
    let labeled_rows = summary.rows_labeled.min(summary.rows_valid_in_shard) as usize;
    let mut sink = TestSink {
        out_dir: &config.out_dir,
        threshold: threshold.value,
        predictions,
        skipped,
        // Sized once from the validation pass's counts: grown by doubling instead, every outgrown buffer of a
        // million-row run stayed resident on the heap (about 10 MB more RSS through the run).
        labels: Vec::with_capacity(labeled_rows),
        scores: Vec::with_capacity(labeled_rows),
        rows_scored: 0,
        rows_skipped: 0,
        rows_unlabeled: 0,
        fingerprint,
        every: config.long_run.checkpoint_every,
        last_checkpoint: Instant::now(),
        report: report.clone(),
    };
    let start_row = match &resumed {
        Some(checkpoint) => {
            sink.predictions.sync()?;
            for (label, probability) in read_scored(&predictions_path)? {
                sink.take_scored(label, probability);
            }
            sink.skipped.sync()?;
            sink.rows_skipped = count_records(&skipped_path)?;
            checkpoint::check_rows_recorded(
                &checkpoint::path_in(&config.out_dir),
                checkpoint.rows_done,
                scoring.shard,
                sink.rows_scored + sink.rows_skipped,
                "predictions.csv and skipped.csv",
            )?;
            let resumed = Some(report::Resumed {
                at_row: checkpoint.rows_done,
                rows_scored_before: sink.rows_scored,
            });
            report.execution.resumed = resumed;
            sink.report.execution.resumed = resumed;
            checkpoint.rows_done
        }
        None => 0,
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
        head: head.as_ref().map(|(h, _)| h),
        want_embeddings: false,
        start_row,
        data_fingerprint,
    };
    let outcome = drive(options, backend, &monitor, &mut progress, &mut sink);
    // After a failure, the rows delivered before it: the progress line must not say 0 of a file half done.
    // This run's rows delivered (its shard's, with --shard K/N); after a failure, those delivered before it,
    // so the progress line does not say 0 of a file half done.
    let rows_done = outcome
        .as_ref()
        .map(|(t, _)| shard.rows_below(t.rows_done))
        .unwrap_or_else(|_| monitor.rows_done().max(shard.rows_below(start_row)));
    progress.finish(rows_done, monitor.rss_bytes());
    let (peak_rss, rss_end, peak_threads, timeline) = monitor.finish();
    sink.update_counts(&mut report);
    report.execution.model_loads = (model::model_loads() - loads_before) as u64;
    // A failed loop's report still gives the run's time and memory, with no rows counted as scored.
    let (totals, stopped) = match outcome {
        Ok((totals, stop)) => (totals, Ok(stop)),
        Err(error) => (LoopTotals::default(), Err(error)),
    };
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
    let stop = match stopped {
        Ok(stop) => stop,
        Err(error) => {
            report.status = "failed".into();
            report.error = Some(format!("{error:#}"));
            // The run's own error comes first: on a full disk this report cannot be written either.
            if let Err(report_error) = report::write_reports(&config.out_dir, &report) {
                crate::errln!("warning: the failed run's report was not written: {report_error:#}");
            }
            return Err(error);
        }
    };
    report.execution.max_tokens_lowered_to =
        (totals.max_tokens_end < info.max_tokens).then_some(totals.max_tokens_end as u64);
    report.metrics = (!sink.labels.is_empty()).then(|| {
        metrics::evaluate(
            &sink.labels,
            &sink.scores,
            threshold.value,
            config.bootstrap,
        )
    });
    if report.metrics.is_none() {
        report.metrics_note = Some(
            if scoring.shard.rows_below(summary.rows_total) == 0 {
                "this shard holds none of the data's rows: nothing to score"
            } else if sink.rows_scored == 0 {
                "no row was scored"
            } else if summary.has_label_column {
                "every label is empty: predictions only"
            } else {
                "the data has no label column: predictions only"
            }
            .into(),
        );
    }
    let stopped = stop_reason(
        &stop,
        &config.long_run,
        limit_below_working_set(&totals, info.parallel_batches, &config.long_run),
    );
    if let Some((status, kind, what, resume)) = stopped {
        let message = format!(
            "{what} after {rows_done} of {}; predictions so far are in {} (checkpointed)\n  {resume}",
            rows_of(shard, summary.rows_total),
            predictions_path.display(),
        );
        report.status = status.into();
        report.error = Some(message.clone());
        report::write_reports(&config.out_dir, &report)?;
        return Err(Failure { kind, message }.into());
    }
    if !summary.problems.is_empty() || sink.rows_skipped > 0 {
        report.data.rows_skipped = sink.rows_skipped;
    }
    if let Err(error) = model_hash.check_unchanged() {
        report.status = "failed".into();
        report.error = Some(format!("{error:#}"));
        report::write_reports(&config.out_dir, &report)?;
        return Err(error);
    }
    report.status = "complete".into();
    report::write_reports(&config.out_dir, &report)?;
    Checkpoint::mark_complete(&config.out_dir)?;
    // Only now: a process killed between the two steps the other way round left a checkpoint still to resume
    // that names a skipped.csv no longer there. Killed here, it leaves an empty list beside a finished run.
    if sink.rows_skipped == 0 {
        let _ = std::fs::remove_file(&skipped_path);
    }
    Ok(report)
}

/// The model with its first round of batches in flight (one per batch in flight, at the starting token
/// budget) already held more than --max-rss: a resumed process starts from there again, so a resume under the
/// same limit would stop again after a few batches, every time.
fn limit_below_working_set(
    totals: &LoopTotals,
    parallel_batches: usize,
    long_run: &crate::config::LongRun,
) -> bool {
    let hard = long_run.rss_limits.map_or(u64::MAX, |l| l.hard);
    totals.batches <= parallel_batches as u64
        || totals.rss_after_first_round.is_some_and(|rss| rss > hard)
}

/// For a run stopped early: its report status, exit kind, what stopped it and the command that goes on.
/// `limit_below_working_set`: see [`limit_below_working_set`].
fn stop_reason(
    stop: &Stop,
    long_run: &crate::config::LongRun,
    limit_below_working_set: bool,
) -> Option<(&'static str, FailureKind, String, String)> {
    match *stop {
        Stop::Finished => None,
        Stop::Signal { code, name } => Some((
            "interrupted",
            FailureKind::Interrupted(code),
            format!("interrupted by {name}"),
            resume_line(None),
        )),
        Stop::Watchdog { rss_bytes } => {
            let limit_mib = long_run.rss_limits.map_or(0, |l| l.hard >> 20);
            let reached_mib = rss_bytes >> 20;
            let what = format!(
                "stopped by the memory watchdog: RSS {reached_mib} MiB passed --max-rss {limit_mib} MiB"
            );
            if !limit_below_working_set {
                return Some(("watchdog", FailureKind::Watchdog, what, resume_line(None)));
            }
            // The command printed raises the limit.
            let raised = format!("{}MiB", (reached_mib * 3 / 2).div_ceil(64) * 64);
            let why = format!(
                "the loaded model with its first batches in flight already holds more than {limit_mib} MiB, so a \
resume under that limit would stop there again\n  "
            );
            Some((
                "watchdog",
                FailureKind::Watchdog,
                what,
                why + &resume_line(Some(&raised)),
            ))
        }
    }
}

/// `--resume` of a run that had finished with the same data, model and settings: its outputs stand, once
/// predictions.csv is shown to be what the run wrote.
fn already_complete(
    config: &TestConfig,
    checkpoint: &Checkpoint,
    predictions_path: &Path,
) -> Result<Report> {
    check_unchanged(
        predictions_path,
        checkpoint.predictions_bytes,
        checkpoint.predictions_sha256.as_deref(),
    )?;
    let report_path = config.out_dir.join("report.json");
    let report: Option<Report> = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let Some(report) = report.filter(|r| r.status == "complete") else {
        return Err(Failure::usage(format!(
            "--resume: {} is not the complete report of the finished run\n  fix: drop --resume to score the data again",
            report_path.display()
        ))
        .into());
    };
    crate::errln!(
        "esmbench: {} is already complete with the same data, model and settings; its outputs stand (drop --resume to score again)",
        config.out_dir.display()
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(String::from).collect()
    }

    /// Regression: the raised limit was advised only for a stop within the first round of batches, but the
    /// sampler reads RSS every 200 ms, by when a small model has run hundreds of batches: a limit below what
    /// the model holds while scoring was advised again on every resume, each stopping after a few hundred rows.
    #[test]
    fn a_limit_below_what_the_first_round_held_is_raised_however_late_the_stop() {
        let mib = |n: u64| n << 20;
        let long_run = crate::config::LongRun {
            rss_limits: Some(crate::config::RssLimits {
                soft: mib(32),
                hard: mib(40),
            }),
            resume: false,
            checkpoint_every: Duration::from_secs(30),
        };
        let totals = |batches, rss_after_first_round| LoopTotals {
            batches,
            rss_after_first_round,
            ..Default::default()
        };
        assert!(limit_below_working_set(
            &totals(300, Some(mib(45))),
            2,
            &long_run
        ));
        assert!(limit_below_working_set(&totals(2, None), 2, &long_run));
        assert!(!limit_below_working_set(
            &totals(300, Some(mib(35))),
            2,
            &long_run
        ));
        let stop = Stop::Watchdog { rss_bytes: mib(60) };
        let (_, _, _, advice) = stop_reason(&stop, &long_run, true).unwrap();
        assert!(advice.contains("--max-rss 128MiB"), "{advice}");
        let (_, _, _, advice) = stop_reason(&stop, &long_run, false).unwrap();
        assert!(!advice.contains("higher limit"), "{advice}");
    }

    #[test]
    fn the_resume_command_adds_resume_once_and_replaces_the_memory_limit() {
        let plain = words("esmbench test --data d.csv --max-rss 1GiB");
        assert_eq!(
            resume_args(&plain, None).join(" "),
            "esmbench test --data d.csv --max-rss 1GiB --resume"
        );
        assert_eq!(
            resume_args(&plain, Some("192MiB")).join(" "),
            "esmbench test --data d.csv --resume --max-rss 192MiB"
        );
        let mut resumed = words("esmbench test --resume --max-rss=1GiB --out");
        resumed.push("my results".into());
        assert_eq!(
            resume_args(&resumed, Some("128MiB")).join(" "),
            "esmbench test --resume --out 'my results' --max-rss 128MiB"
        );
    }
}
