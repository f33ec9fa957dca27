//! What `esmbench fit` writes: the head JSON (the format `esmbench test --head` reads, plus provenance) and the
//! training report as JSON and Markdown.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::fit::cv::{CrossValidation, Scores, Summary, METRICS};
use crate::report::{write_atomically, Tool};

/// How the optimum was found, recorded in the head and the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SolverSection {
    pub name: String,
    pub iterations: u64,
    /// max |gradient| of the objective divided by C·n (scikit-learn's lbfgs stops at `tol` = 1e-4 on it).
    pub gradient_max_abs: f64,
    /// C·Σ logloss + ½‖w‖² at the head.
    pub objective: f64,
    pub stopped: String,
}

/// The cross-validation numbers a head carries: the summary, not every fold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadCv {
    pub folds: usize,
    pub seed: u64,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The head file. The first five fields are the ones `esmbench test` reads; the rest say where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pooling: &'static str,
    pub threshold: f64,
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub trained_on: String,
    #[serde(rename = "C")]
    pub c: f64,
    pub n: u64,
    pub positives: u64,
    pub negatives: u64,
    pub model: String,
    pub model_sha256: String,
    pub data_sha256: String,
    pub solver: SolverSection,
    /// Null when cross-validation was skipped (--folds 0 or 1).
    pub cv: Option<HeadCv>,
    pub tool: Tool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPart {
    pub path: String,
    pub sha256: String,
    pub output: String,
    pub device_requested: String,
    pub execution_provider: String,
    pub threads: u64,
    pub parallel_batches: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataPart {
    pub path: String,
    pub sha256: String,
    pub rows_total: u64,
    /// Invalid rows left out (--on-invalid skip).
    pub rows_skipped: u64,
    /// The first of them: line, column, reason and fix.
    pub skipped_first: Vec<String>,
    /// Valid rows with an empty label, embedded but left out of training.
    pub rows_unlabeled: u64,
    pub rows_truncated: u64,
    /// Valid rows with an alignment gap ('-' or '.') among the residues embedded. Added in schema 2.
    pub rows_with_gaps: u64,
    /// Valid rows whose id an earlier row has. Added in schema 3.
    pub rows_repeating_id: u64,
    /// Valid rows whose sequence an earlier row has (copies can fall on both sides of a fold). Added in schema 3.
    pub rows_repeating_sequence: u64,
    /// Sequences labelled 0 on one row and 1 on another. Added in schema 3.
    pub sequences_with_both_labels: u64,
    pub rows_trained: u64,
    pub positives: u64,
    pub negatives: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsPart {
    #[serde(rename = "C")]
    pub c: f64,
    pub folds: Option<usize>,
    pub seed: u64,
    pub threshold: f64,
    pub max_tokens: u64,
    pub max_residues: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingPart {
    pub wall_seconds: f64,
    pub model_load_seconds: f64,
    /// Validation, model load and embedding every row.
    pub embed_seconds: f64,
    /// The final fit on all labeled rows.
    pub fit_seconds: f64,
    pub cv_seconds: f64,
    pub model_loads: u64,
    pub peak_rss_bytes: u64,
}

/// NAME.report.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    pub schema_version: u32,
    pub tool: Tool,
    pub started_at: String,
    pub head: String,
    pub model: ModelPart,
    pub data: DataPart,
    pub settings: SettingsPart,
    pub solver: SolverSection,
    pub cv: Option<CrossValidation>,
    pub performance: TimingPart,
}

pub const FIT_REPORT_SCHEMA_VERSION: u32 = 3;

fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub fn write_head(path: &Path, head: &HeadJson) -> Result<()> {
    write_atomically(path, &json_bytes(head)?)
}

pub fn write_report(json: &Path, md: &Path, report: &FitReport) -> Result<()> {
    write_atomically(json, &json_bytes(report)?)?;
    write_atomically(md, to_markdown(report).as_bytes())
}

fn show(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into())
}

/// `0.7123 ± 0.0411`, the line a person reads first.
pub fn summary_line(summary: &Summary) -> String {
    METRICS
        .iter()
        .filter_map(|name| summary.get(name).map(|s| (name, s)))
        .map(|(name, s)| format!("{name} {} ± {}", show(s.mean), show(s.sd)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn score_cells(scores: &Scores) -> String {
    METRICS
        .iter()
        .map(|name| show(scores.get(name)))
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn to_markdown(r: &FitReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# esmbench fit: {}\n", r.head);
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| model | `{}` ({}) |",
        r.model.path, r.model.execution_provider
    );
    let _ = writeln!(md, "| data | `{}` |", r.data.path);
    let _ = writeln!(
        md,
        "| trained on | {} rows ({} positive, {} negative); {} unlabeled and {} invalid rows left out |",
        r.data.rows_trained, r.data.positives, r.data.negatives, r.data.rows_unlabeled, r.data.rows_skipped
    );
    if let Some(repeats) = crate::report::markdown::repeats_shown(
        r.data.rows_repeating_id,
        r.data.rows_repeating_sequence,
        r.data.sequences_with_both_labels,
    ) {
        let folds = if r.cv.is_some() && r.data.rows_repeating_sequence > 0 {
            "; in cross-validation, copies of a sequence can fall on both sides of a fold, flattering its metrics"
        } else {
            ""
        };
        let _ = writeln!(md, "| repeats | {repeats}{folds} |");
    }
    let _ = writeln!(
        md,
        "| objective | C·Σ logloss + ½‖w‖², C = {}, intercept not penalised |",
        crate::report::compact_number(r.settings.c)
    );
    let _ = writeln!(
        md,
        "| solver | {}: {} iterations, max abs gradient (÷ C·n) {:.2e}, objective {:.6} |",
        r.solver.name, r.solver.iterations, r.solver.gradient_max_abs, r.solver.objective
    );
    let p = &r.performance;
    let _ = writeln!(
        md,
        "| time | {:.2} s (embedding {:.2} s, fit {:.3} s, cross-validation {:.3} s); model loaded {} time(s) |",
        p.wall_seconds, p.embed_seconds, p.fit_seconds, p.cv_seconds, p.model_loads
    );
    match &r.cv {
        None => {
            let _ = writeln!(md, "\nCross-validation skipped (--folds 0 or 1).");
        }
        Some(cv) => {
            let _ = writeln!(
                md,
                "\n## {}-fold stratified cross-validation (seed {}, threshold {})\n",
                cv.folds, cv.seed, cv.threshold
            );
            let _ = writeln!(md, "| fold | train | test | test positives | iterations | accuracy | ROC-AUC | PR-AUC | F1 | MCC |");
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
            for f in &cv.per_fold {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    f.fold,
                    f.n_train,
                    f.n_test,
                    f.test_positives,
                    f.iterations,
                    score_cells(&f.scores)
                );
            }
            let spread = |name: &str| {
                cv.summary
                    .get(name)
                    .map(|s| format!("{} ± {}", show(s.mean), show(s.sd)))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                md,
                "| **mean ± sd** | | | | | {} |",
                METRICS.map(spread).join(" | ")
            );
            let _ = writeln!(
                md,
                "| out of fold, pooled | | {} | {} | | {} |",
                cv.out_of_fold.n,
                cv.out_of_fold.positives,
                score_cells(&Scores::of(&cv.out_of_fold))
            );
            let _ = writeln!(
                md,
                "\nsd is the population standard deviation over folds (numpy's `std`); a metric undefined in a fold \
(MCC when a fold's predictions are one class) is left out of its mean."
            );
        }
    }
    md
}
