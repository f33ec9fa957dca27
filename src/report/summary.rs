//! summary.json and summary.md: one line per (model, dataset) run of a suite, with the headline metrics.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::markdown::num;
use crate::report::Report;

pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub schema_version: u32,
    /// complete, or the status of the run that stopped the suite.
    pub status: String,
    pub models: u64,
    /// Model loads in the whole suite: one per model.
    pub model_loads: u64,
    pub runs: Vec<SummaryRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SummaryRun {
    pub model: String,
    pub data: String,
    pub status: String,
    /// The run's folder, holding its report.json, predictions.csv and plots.
    pub out_dir: String,
    pub rows_scored: u64,
    /// Null only for a run that failed before its threshold was known.
    pub threshold: Option<f64>,
    pub threshold_source: Option<String>,
    pub n: Option<u64>,
    pub accuracy: Option<f64>,
    /// The 95% bootstrap interval of the accuracy, when computed.
    pub accuracy_interval: Option<[f64; 2]>,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub f1: Option<f64>,
    pub mcc: Option<f64>,
    pub sequences_per_second: f64,
    pub wall_seconds: f64,
    /// Loads of this run's model so far: 1, since a suite never reloads a model for its next dataset.
    pub model_loads: u64,
    /// pass, regression, error (the baseline could not be compared: other data, another threshold), or null
    /// when no baseline gates the run.
    pub gate: Option<String>,
    pub error: Option<String>,
}

impl SummaryRun {
    pub fn from_report(model: &str, data: &str, out_dir: String, report: &Report) -> SummaryRun {
        let m = report.metrics.as_ref();
        SummaryRun {
            model: model.into(),
            data: data.into(),
            status: report.status.clone(),
            out_dir,
            rows_scored: report.data.rows_scored,
            threshold: Some(report.model.threshold),
            threshold_source: Some(report.model.threshold_source.clone()),
            n: m.map(|m| m.n),
            accuracy: m.and_then(|m| m.accuracy),
            accuracy_interval: m
                .and_then(|m| m.intervals.as_ref())
                .and_then(|i| Some([i.accuracy.low?, i.accuracy.high?])),
            roc_auc: m.and_then(|m| m.roc_auc),
            pr_auc: m.and_then(|m| m.pr_auc),
            f1: m.and_then(|m| m.f1),
            mcc: m.and_then(|m| m.mcc),
            sequences_per_second: report.performance.sequences_per_second,
            wall_seconds: report.performance.wall_seconds,
            model_loads: report.execution.model_loads,
            gate: None,
            error: report.error.clone(),
        }
    }
}

pub fn to_json(summary: &Summary) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(summary).expect("the summary serializes");
    bytes.push(b'\n');
    bytes
}

pub fn to_markdown(summary: &Summary) -> Vec<u8> {
    let mut s = String::new();
    let _ = writeln!(s, "# esmbench suite: {} runs\n", summary.runs.len());
    let _ = writeln!(
        s,
        "Status **{}**; {} model(s), loaded {} time(s) in all. Each run's full report is in its folder.\n",
        summary.status, summary.models, summary.model_loads
    );
    let _ = writeln!(
        s,
        "| model | data | status | n | threshold | accuracy (95% CI) | ROC-AUC | PR-AUC | F1 | MCC | seq/s | gate |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|");
    for r in &summary.runs {
        let accuracy = match (r.accuracy, r.accuracy_interval) {
            (Some(a), Some([lo, hi])) => format!("{a:.4} ({lo:.3}-{hi:.3})"),
            (a, _) => num(a),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            r.model,
            r.data,
            r.status,
            r.n.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            match (r.threshold, &r.threshold_source) {
                (Some(t), Some(source)) => format!("{t} ({source})"),
                _ => "-".into(),
            },
            accuracy,
            num(r.roc_auc),
            num(r.pr_auc),
            num(r.f1),
            num(r.mcc),
            r.sequences_per_second,
            r.gate.as_deref().unwrap_or("-")
        );
    }
    for r in summary.runs.iter().filter(|r| r.error.is_some()) {
        let _ = writeln!(
            s,
            "\n{} on {}: {}",
            r.model,
            r.data,
            r.error.as_deref().unwrap_or_default()
        );
    }
    s.into_bytes()
}
