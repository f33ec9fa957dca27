//! A models x datasets suite: every dataset validated first, each model loaded once for all its datasets, one
//! summary across the runs, and each run gated against its own baseline when the suite is gated.

use anyhow::Result;

use crate::config::suite::{baseline_file, SuiteConfig, SuiteRun, SUMMARY_FILES};
use crate::fingerprint;
use crate::model;
use crate::report::baseline::{self, Baseline};
use crate::report::summary::{self, Summary, SummaryRun, SUMMARY_SCHEMA_VERSION};
use crate::report::{self, Report};
use crate::run::{checkpoint, run_test_on, validate_data, Loaded};

/// What a finished (or stopped) suite leaves for the caller to print and turn into an exit code.
pub struct SuiteOutcome {
    pub summary: Summary,
    /// Each gated run's comparison, rendered for the log.
    pub gate_log: String,
    /// What the exit code follows: a run that failed or stopped (the suite ends there); else the first
    /// baseline that could not be applied (exit 2, whatever the order of the runs); else the first regression
    /// (exit 3).
    pub error: Option<anyhow::Error>,
}

pub fn run_suite(suite: &SuiteConfig, quiet: bool) -> Result<SuiteOutcome> {
    let mut summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        status: "running".into(),
        models: suite.models.len() as u64,
        model_loads: 0,
        runs: Vec::new(),
    };
    // Replaces an earlier run's summary at once, so a suite that stops early never leaves one saying
    // `complete` beside the run folders it rewrote.
    write_summary(suite, &summary)?;
    // Every dataset is checked before the first model loads, so a bad file costs seconds, not a model's run.
    if let Some(first) = suite.models.first() {
        for run in &first.runs {
            if let Err(e) = validate_data(
                &run.config.scoring,
                super::PREDICTIONS_FILE,
                super::SKIPPED_FILE,
            ) {
                summary.status = "failed".into();
                write_summary(suite, &summary)?;
                return Err(e);
            }
        }
    }
    let mut gate_log = String::new();
    let mut error = None;
    let (mut not_applied, mut regression) = (None, None);
    let loads_at_start = model::model_loads();
    'models: for suite_model in &suite.models {
        let loads_before = model::model_loads();
        let scoring = &suite_model.runs[0].config.scoring;
        let mut model_hash = fingerprint::ModelHash::start(&scoring.model);
        // A model that cannot load ends the suite as a failed run would: its line in the summary, and the
        // gate results of the runs before it still printed.
        let loading = model::load_backend(&scoring.load_settings())
            .and_then(|backend| model_hash.get().map(|_| backend));
        let backend = match loading {
            Ok(backend) => backend,
            Err(e) => {
                let run = &suite_model.runs[0];
                let mut line = failed_line(run, run.config.out_dir.display().to_string());
                line.error = Some(format!("{e:#}"));
                summary.status = line.status.clone();
                summary.runs.push(line);
                error = Some(e);
                break 'models;
            }
        };
        for (i, run) in suite_model.runs.iter().enumerate() {
            crate::errln!("esmbench: {} on {}", run.model, run.data);
            let loaded = Loaded {
                backend: backend.as_ref(),
                loads_before,
                first_use: i == 0,
                model_hash: model_hash.finished()?,
            };
            let out_dir = run.config.out_dir.display().to_string();
            let started_afresh;
            let config = if run.config.long_run.resume
                && !checkpoint::path_in(&run.config.out_dir).exists()
            {
                crate::errln!(
                    "esmbench: {out_dir} has no checkpoint: this run had not started, so it starts from the first row"
                );
                let mut fresh = run.config.clone();
                fresh.long_run.resume = false;
                started_afresh = fresh;
                &started_afresh
            } else {
                &run.config
            };
            match run_test_on(config, quiet, Some(loaded)) {
                Ok(report) => {
                    let mut line = SummaryRun::from_report(&run.model, &run.data, out_dir, &report);
                    match record_and_gate(suite, run, &report, &mut line, &mut gate_log) {
                        Ok(()) => {}
                        Err(GateError::Regression(e)) => {
                            regression.get_or_insert(e);
                        }
                        // The run scored; its gate could not be applied. Every such run is marked and
                        // logged, not only the first.
                        Err(GateError::NotApplied(e)) => {
                            line.gate = Some("error".into());
                            line.error = Some(format!("{e:#}"));
                            gate_log.push_str(&format!(
                                "gate not applied to {} on {}: {e:#}\n",
                                run.model, run.data
                            ));
                            not_applied.get_or_insert(e);
                        }
                    }
                    summary.runs.push(line);
                }
                Err(e) => {
                    let stopped = read_report(&run.config.out_dir);
                    let mut line = match &stopped {
                        Some(report) => {
                            SummaryRun::from_report(&run.model, &run.data, out_dir, report)
                        }
                        None => failed_line(run, out_dir),
                    };
                    line.error = Some(format!("{e:#}"));
                    summary.status = line.status.clone();
                    summary.runs.push(line);
                    error = Some(e);
                    break 'models;
                }
            }
        }
    }
    summary.model_loads = (model::model_loads() - loads_at_start) as u64;
    if summary.status == "running" {
        summary.status = "complete".into();
    }
    write_summary(suite, &summary)?;
    Ok(SuiteOutcome {
        summary,
        gate_log,
        error: error.or(not_applied).or(regression),
    })
}

fn write_summary(suite: &SuiteConfig, summary: &Summary) -> Result<()> {
    let [json, markdown] = SUMMARY_FILES;
    report::write_atomically(&suite.out_dir.join(json), &summary::to_json(summary))?;
    report::write_atomically(
        &suite.out_dir.join(markdown),
        &summary::to_markdown(summary),
    )
}

/// Why a run's gate did not pass.
enum GateError {
    /// Worse than its baseline allows (exit 3).
    Regression(anyhow::Error),
    /// The baseline could not be recorded or compared (other data, another threshold, a write error).
    NotApplied(anyhow::Error),
}

/// Writes this run's baseline when asked, and compares it with its baseline when the suite is gated.
fn record_and_gate(
    suite: &SuiteConfig,
    run: &SuiteRun,
    report: &Report,
    line: &mut SummaryRun,
    log: &mut String,
) -> Result<(), GateError> {
    if let Some(dir) = &suite.write_baselines {
        let path = baseline_file(dir, &run.model, &run.data);
        let recorded = Baseline::from_report(report, suite.tolerance, suite.throughput_tolerance)
            .map_err(|e| GateError::NotApplied(e.into()))?;
        report::write_atomically(&path, &recorded.to_json()).map_err(GateError::NotApplied)?;
        log.push_str(&format!("wrote baseline {}\n", path.display()));
    }
    let Some(path) = &run.baseline else {
        return Ok(());
    };
    let name = path.display().to_string();
    let comparison = Baseline::load(path)
        .and_then(|recorded| baseline::compare(report, &recorded, &name))
        .map_err(|e| GateError::NotApplied(e.into()))?;
    log.push_str(&comparison.render(&format!("{} on {}", run.model, run.data), &name));
    match comparison.failure(&name) {
        Some(failure) => {
            line.gate = Some("regression".into());
            Err(GateError::Regression(failure.into()))
        }
        None => {
            line.gate = Some("pass".into());
            Ok(())
        }
    }
}

fn read_report(dir: &std::path::Path) -> Option<Report> {
    let text = std::fs::read_to_string(dir.join("report.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A run that stopped before it wrote a report (a bad model, say).
fn failed_line(run: &SuiteRun, out_dir: String) -> SummaryRun {
    SummaryRun {
        model: run.model.clone(),
        data: run.data.clone(),
        status: "failed".into(),
        out_dir,
        rows_scored: 0,
        threshold: run.config.threshold.as_ref().map(|t| t.value),
        threshold_source: run.config.threshold.as_ref().map(|t| t.source.clone()),
        n: None,
        accuracy: None,
        accuracy_interval: None,
        roc_auc: None,
        pr_auc: None,
        f1: None,
        mcc: None,
        sequences_per_second: 0.0,
        wall_seconds: 0.0,
        model_loads: 0,
        gate: None,
        error: None,
    }
}
