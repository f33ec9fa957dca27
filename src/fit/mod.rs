//! `esmbench fit`: embed a labelled CSV through the scoring pipeline (the model loaded once), train the logistic
//! head on the pooled embeddings, cross-validate it, and write the head and its report.

pub mod config;
pub mod cv;
pub mod folds;
pub mod logistic;
pub mod output;

use std::time::Instant;

use anyhow::Result;

use crate::data::validate::{self, DataSummary};
use crate::error::{Failure, FailureKind};
use crate::fingerprint;
use crate::model;
use crate::report::Tool;
use crate::run::drive::{drive, DriveOptions, RowSink, Slot, Stop};
use crate::run::monitor::Monitor;
use crate::run::progress::Progress;
use crate::run::{self, bus_error, signals};
use config::{FitConfig, HEAD_THRESHOLD};
use cv::CrossValidation;
use logistic::{Fitted, Samples, Settings};
use output::{
    DataPart, FitReport, HeadCv, HeadJson, ModelPart, SettingsPart, SolverSection, TimingPart,
};

/// The labeled rows' embeddings, gathered in input order as the pipeline delivers them.
#[derive(Default)]
struct TrainingSink {
    features: Vec<f32>,
    labels: Vec<u8>,
    dim: Option<usize>,
    unlabeled: u64,
    skipped: u64,
}

impl RowSink for TrainingSink {
    fn deliver(&mut self, slot: Slot) -> Result<()> {
        let scored = match slot {
            Slot::Scored(scored) => scored,
            Slot::Skipped(_) => {
                self.skipped += 1;
                return Ok(());
            }
        };
        let Some(label) = scored.row.label else {
            self.unlabeled += 1;
            return Ok(());
        };
        let embedding = scored
            .embedding
            .ok_or_else(|| anyhow::anyhow!("internal error: the pipeline returned no embedding"))?;
        if *self.dim.get_or_insert(embedding.len()) != embedding.len() {
            return Err(Failure::runtime(format!(
                "the model returned embeddings of {} and {} dimensions",
                self.dim.unwrap_or_default(),
                embedding.len()
            ))
            .into());
        }
        self.features.extend_from_slice(&embedding);
        self.labels.push(label);
        Ok(())
    }
}

/// The pass over the CSV before the model loads. As `esmbench test`'s, except that rows skipped with
/// `--on-invalid skip` are counted (with the first few problems) in the report rather than in a skipped.csv.
fn validate_data(config: &FitConfig) -> Result<DataSummary> {
    let scoring = &config.scoring;
    let summary = crate::run::scan_data(scoring)?;
    let name = scoring.data.display_name();
    if summary.rows_invalid > 0 {
        crate::errln!(
            "esmbench fit: {} of {} rows of {name} are invalid and are left out of training (the first are listed in {})",
            summary.rows_invalid,
            summary.rows_total,
            config.report_json.display()
        );
    }
    let cross_validation = config
        .folds
        .and_then(|_| validate::repeated_sequence_warning(&summary, &name));
    for warning in validate::warnings(&summary, &name, None)
        .into_iter()
        .chain(cross_validation)
    {
        crate::errln!("{warning}");
    }
    Ok(summary)
}

/// Checks before the model loads that there is something to train on, with both classes, and enough of each
/// for the folds; says how many unlabeled rows will be left out.
fn check_labels(config: &FitConfig, summary: &DataSummary) -> Result<()> {
    let name = config.scoring.data.display_name();
    let column = &config.scoring.columns.label;
    if !summary.has_label_column {
        return Err(Failure::input(format!(
            "{name}: no `{column}` column, and training needs labels\n  fix: add a `{column}` column of 0/1 labels, or name yours with --label-column NAME"
        ))
        .into());
    }
    if summary.rows_labeled == 0 {
        return Err(Failure::input(format!(
            "{name}: every `{column}` field is empty, and training needs labels\n  fix: write 0 or 1 in the `{column}` column of the training rows"
        ))
        .into());
    }
    let positives = summary.rows_positive;
    let negatives = summary.rows_labeled - positives;
    if positives == 0 || negatives == 0 {
        let (present, missing) = if positives == 0 { (0, 1) } else { (1, 0) };
        return Err(Failure::input(format!(
            "{name}: all {} labeled rows are class {present}; a classifier needs both classes\n  fix: add rows labeled {missing}",
            summary.rows_labeled
        ))
        .into());
    }
    if let Some(folds) = config.folds {
        let (smaller, class) = if positives < negatives {
            (positives, 1)
        } else {
            (negatives, 0)
        };
        if (smaller as usize) < folds {
            return Err(Failure::usage(format!(
                "--folds {folds}: {name} has {smaller} labeled rows of class {class}, so some fold would have none\n  \
fix: use --folds {smaller} or fewer, or --folds 0 to skip cross-validation"
            ))
            .into());
        }
    }
    let unlabeled = summary.rows_valid - summary.rows_labeled;
    if unlabeled > 0 {
        crate::errln!(
            "esmbench fit: {unlabeled} of {} rows of {name} have an empty label; they are embedded but left out of training",
            summary.rows_valid
        );
    }
    Ok(())
}

/// What `esmbench fit` did, for the summary it prints.
pub struct FitOutcome {
    pub report: FitReport,
    pub fitted: Fitted,
}

fn file_name(display: &str) -> String {
    std::path::Path::new(display)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| display.to_string())
}

pub fn run_fit(config: &FitConfig, quiet: bool) -> Result<FitOutcome> {
    let wall = Instant::now();
    let started_at = run::now_rfc3339();
    let scoring = &config.scoring;
    let mut model_hash = fingerprint::ModelHash::start(&scoring.model);
    let summary = validate_data(config)?;
    check_labels(config, &summary)?;
    let (data_sha256, data_bytes) = fingerprint::data_sha256(&scoring.data)?;
    signals::install()?;
    bus_error::install(&scoring.model);

    let mut monitor = Monitor::start(None)?;
    let backend = model::load_backend(&scoring.load_settings())?;
    let model_sha256 = model_hash.get()?;
    let info = backend.info().clone();
    if !info.kind.yields_embeddings() {
        return Err(Failure::usage(format!(
            "{} outputs {}, not embeddings, so there is nothing to train a head on\n  fix: use the encoder without its classifier (last_hidden_state or a pooled embedding)",
            scoring.model.display_name(),
            info.kind.label()
        ))
        .into());
    }
    let mut sink = TrainingSink::default();
    let mut progress = Progress::new(summary.rows_total, 0, quiet);
    let options = DriveOptions {
        scoring,
        head: None,
        want_embeddings: true,
        start_row: 0,
        data_fingerprint: (data_sha256.clone(), data_bytes),
    };
    let (totals, stop) = drive(
        options,
        backend.as_ref(),
        &monitor,
        &mut progress,
        &mut sink,
    )?;
    progress.finish(totals.rows_done, monitor.rss_bytes());
    drop(backend);
    if let Stop::Signal { code, name } = stop {
        return Err(Failure {
            kind: FailureKind::Interrupted(code),
            message: format!(
                "interrupted by {name} while embedding; {} was not written",
                config.out.display()
            ),
        }
        .into());
    }
    // Embeddings from weights changed mid-run would train the head on two models.
    model_hash.check_unchanged()?;
    let embed_seconds = wall.elapsed().as_secs_f64();
    let dim = sink.dim.unwrap_or(0);
    let samples = Samples::new(&sink.features, dim, &sink.labels)?;

    let settings = Settings::with_c(config.c);
    let all: Vec<usize> = (0..samples.len()).collect();
    let fit_started = Instant::now();
    let fitted = logistic::fit(&samples, &all, &settings)?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    let cv_started = Instant::now();
    let cv: Option<CrossValidation> = config
        .folds
        .map(|folds| cv::cross_validate(&samples, folds, config.seed, &settings, HEAD_THRESHOLD))
        .transpose()?;
    let cv_seconds = cv_started.elapsed().as_secs_f64();
    let (peak_rss, ..) = monitor.finish();

    let positives = sink.labels.iter().filter(|&&y| y == 1).count() as u64;
    let negatives = sink.labels.len() as u64 - positives;
    let tool = Tool {
        name: "esmbench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let solver = SolverSection {
        name: format!(
            "L-BFGS (argmin, More-Thuente line search, memory {})",
            settings.memory
        ),
        iterations: fitted.iterations,
        gradient_max_abs: fitted.gradient_max_abs,
        objective: fitted.objective,
        stopped: fitted.stopped.clone(),
    };
    let head = HeadJson {
        kind: "logistic_regression",
        pooling: "mean_residues",
        threshold: HEAD_THRESHOLD,
        coef: fitted.coef.clone(),
        intercept: fitted.intercept,
        trained_on: format!(
            "{} (esmbench fit: L2 logistic regression, scikit-learn's objective, C={})",
            file_name(&scoring.data.display_name()),
            config.c
        ),
        c: config.c,
        n: sink.labels.len() as u64,
        positives,
        negatives,
        model: file_name(&scoring.model.display_name()),
        model_sha256: model_sha256.clone(),
        data_sha256: data_sha256.clone(),
        solver: solver.clone(),
        cv: cv.as_ref().map(|cv| HeadCv {
            folds: cv.folds,
            seed: cv.seed,
            summary: cv.summary.clone(),
        }),
        tool: tool.clone(),
    };
    output::write_head(&config.out, &head)?;
    let report = FitReport {
        schema_version: output::FIT_REPORT_SCHEMA_VERSION,
        tool,
        started_at,
        head: config.out.display().to_string(),
        model: ModelPart {
            path: scoring.model.display_name(),
            sha256: model_sha256,
            output: info.output.clone(),
            device_requested: info.device_requested.clone(),
            execution_provider: info.execution_provider.clone(),
            threads: info.threads as u64,
            parallel_batches: info.parallel_batches as u64,
        },
        data: DataPart {
            path: scoring.data.display_name(),
            sha256: data_sha256,
            rows_total: summary.rows_total,
            rows_skipped: sink.skipped,
            skipped_first: summary.problems.iter().map(|p| p.to_string()).collect(),
            rows_unlabeled: sink.unlabeled,
            rows_truncated: summary.rows_truncated,
            rows_with_gaps: summary.rows_with_gaps,
            rows_repeating_id: summary.rows_with_repeated_id,
            rows_repeating_sequence: summary.rows_with_repeated_sequence,
            sequences_with_both_labels: summary.sequences_with_both_labels,
            rows_trained: sink.labels.len() as u64,
            positives,
            negatives,
        },
        settings: SettingsPart {
            c: config.c,
            folds: config.folds,
            seed: config.seed,
            threshold: HEAD_THRESHOLD,
            max_tokens: info.max_tokens as u64,
            max_residues: scoring.max_residues as u64,
        },
        solver,
        cv,
        performance: TimingPart {
            wall_seconds: wall.elapsed().as_secs_f64(),
            model_load_seconds: info.load_seconds,
            embed_seconds,
            fit_seconds,
            cv_seconds,
            model_loads: model::model_loads() as u64,
            peak_rss_bytes: peak_rss,
        },
    };
    output::write_report(&config.report_json, &config.report_md, &report)?;
    Ok(FitOutcome { report, fitted })
}
