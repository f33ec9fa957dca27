//! The one serializable run report, and the exporters that turn it into bytes.

pub mod baseline;
pub mod html;
pub mod markdown;
pub mod npy;
pub mod plots;
pub mod predictions;
pub mod summary;

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// Bumped whenever a field is added, removed or changes meaning.
pub const SCHEMA_VERSION: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema_version: u32,
    /// The command that wrote it: `test` (scored with a model) or `metrics` (rescored a predictions file, so
    /// `execution` and `performance` hold zeros and `model` describes the score column).
    #[serde(default = "command_test")]
    pub command: String,
    /// running, complete, failed, interrupted or watchdog.
    pub status: String,
    pub tool: Tool,
    pub started_at: String,
    pub model: ModelSection,
    pub data: DataSection,
    pub execution: Execution,
    /// Null when the data has no labels; `metrics_note` says why.
    pub metrics: Option<Metrics>,
    pub metrics_note: Option<String>,
    pub performance: Performance,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: String,
    pub sha256: String,
    /// What the model outputs: last_hidden_state, pooled_embedding, logits or probability.
    pub kind: String,
    pub output: String,
    pub head_source: Option<String>,
    pub threshold: f64,
    /// flag, config, head or default.
    pub threshold_source: String,
    /// The preset (`elisa`, `psr`) that set the threshold, if one did.
    #[serde(default)]
    pub assay: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub path: String,
    pub sha256: String,
    pub rows_total: u64,
    pub rows_scored: u64,
    pub rows_skipped: u64,
    pub rows_truncated: u64,
    /// Valid rows with an alignment gap ('-' or '.') among the residues scored. Added in schema 5; absent (0) before.
    #[serde(default)]
    pub rows_with_gaps: u64,
    /// Scored rows without a label: in predictions, not in metrics.
    pub rows_unlabeled: u64,
    /// The column the labels came from; null when the data has none.
    #[serde(default)]
    pub label_column: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Execution {
    pub device_requested: String,
    pub execution_provider: String,
    pub fallback: Option<String>,
    pub model_loads: u64,
    /// Inputs and output bound through page-locked host memory (CUDA only). Added in schema 2; absent in 1.
    #[serde(default)]
    pub io_binding: bool,
    /// What the in-memory attention-mask rewrite changed; null when the model file ran as it is.
    /// Added in schema 4; absent (null) before.
    #[serde(default)]
    pub graph_rewrite: Option<String>,
    pub threads: u64,
    /// Batches in flight at once, each on threads / parallel_batches threads. Added in schema 3; absent (1) before.
    #[serde(default = "one")]
    pub parallel_batches: u64,
    pub max_tokens: u64,
    pub max_residues: u64,
    /// "K/N" when this run scored one shard of the data.
    pub shard: Option<String>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    pub wall_seconds: f64,
    pub model_load_seconds: f64,
    /// Time spent inside the model (batches run), out of wall_seconds.
    pub inference_seconds: f64,
    pub sequences_per_second: f64,
    pub tokens_per_second: f64,
    /// Real tokens / padded tokens fed to the model.
    pub padding_efficiency: f64,
    pub batches: u64,
    pub peak_rss_bytes: u64,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    pub peak_threads: u64,
    /// Samples over the run: a leak shows as a rising rss_bytes.
    pub timeline: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub seconds: f64,
    pub rows_done: u64,
    pub rss_bytes: u64,
    pub threads: u64,
}

fn command_test() -> String {
    "test".into()
}

pub fn to_json(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(report).expect("a report always serializes");
    bytes.push(b'\n');
    bytes
}

/// Writes through a temporary file and a rename, so a reader never sees half a report.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        // A full disk leaves a truncated temporary file; the last complete version stays at `path`.
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// E.rows.csv and E.skipped.csv for embeddings written to E.npy.
pub fn embed_companions(out: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        out.with_extension("rows.csv"),
        out.with_extension("skipped.csv"),
    )
}

/// Every file an `esmbench test` run writes in its --out (besides temporary ones).
pub fn test_output_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut names = vec![
        "predictions.csv",
        crate::run::SKIPPED_FILE,
        crate::run::checkpoint::CHECKPOINT_FILE,
        "report.json",
        "report.md",
        "report.html",
    ];
    names.extend(plots::PlotKind::ALL.iter().map(|kind| kind.file_name()));
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// Writes report.json, report.md, report.html and the plots (`<name>.svg`) into `dir`. A plot that does not apply
/// (no labels, a run too short for a timeline) is not written, and an older file of that name is removed, so
/// nothing in `dir` describes another run.
pub fn write_reports(dir: &Path, report: &Report) -> Result<()> {
    write_atomically(&dir.join("report.json"), &to_json(report))?;
    write_atomically(&dir.join("report.md"), &markdown::to_markdown(report))?;
    let rendered = plots::render_all(report);
    for (kind, svg) in &rendered {
        let path = dir.join(kind.file_name());
        match svg {
            Ok(Some(svg)) => write_atomically(&path, svg.as_bytes())?,
            Ok(None) => remove_stale(&path)?,
            Err(e) => {
                // A chart is worth a warning, never a finished run.
                crate::errln!("warning: could not draw {}: {e}", kind.file_name());
                remove_stale(&path)?;
            }
        }
    }
    write_atomically(&dir.join("report.html"), &html::to_html(report, &rendered))?;
    Ok(())
}

fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the stale {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete report with made-up numbers, for the exporters' tests.
    pub(crate) fn sample_report() -> Report {
        let labels = [1, 0, 1, 1, 0, 0, 1, 0];
        let scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1];
        Report {
            schema_version: SCHEMA_VERSION,
            command: "test".into(),
            status: "complete".into(),
            tool: Tool {
                name: "esmbench".into(),
                version: "0.0.0".into(),
            },
            started_at: "2026-01-01T00:00:00Z".into(),
            model: ModelSection {
                path: "m.onnx".into(),
                sha256: "ab".repeat(32),
                kind: "last_hidden_state".into(),
                output: "last_hidden_state".into(),
                head_source: Some("h.json".into()),
                threshold: 0.5495,
                threshold_source: "flag".into(),
                assay: Some("psr".into()),
            },
            data: DataSection {
                path: "data/<set> & co.csv".into(),
                sha256: "0".repeat(64),
                rows_total: 8,
                rows_scored: 8,
                rows_skipped: 0,
                rows_truncated: 0,
                rows_with_gaps: 0,
                rows_unlabeled: 0,
                label_column: Some("label".into()),
            },
            execution: Execution {
                device_requested: "cpu".into(),
                execution_provider: "CPUExecutionProvider".into(),
                fallback: None,
                model_loads: 1,
                io_binding: false,
                graph_rewrite: None,
                threads: 2,
                parallel_batches: 2,
                max_tokens: 4096,
                max_residues: 1022,
                shard: None,
            },
            metrics: Some(crate::metrics::evaluate(&labels, &scores, 0.5495, 200)),
            metrics_note: None,
            performance: Performance {
                wall_seconds: 10.0,
                sequences_per_second: 100.0,
                timeline: (0..6)
                    .map(|k| Sample {
                        seconds: 2.0 * k as f64,
                        rows_done: 150 * k,
                        rss_bytes: (100 + 10 * k) << 20,
                        threads: 4,
                    })
                    .collect(),
                ..Default::default()
            },
            error: None,
        }
    }

    #[test]
    fn every_exporter_handles_the_sample_and_the_plots_land_beside_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        write_reports(dir.path(), &report).unwrap();
        for name in [
            "report.json",
            "report.md",
            "report.html",
            "confusion_matrix.svg",
            "roc.svg",
            "pr.svg",
            "score_histogram.svg",
            "timeline.svg",
        ] {
            assert!(dir.path().join(name).is_file(), "{name} is missing");
        }
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("data/&lt;set&gt; &amp; co.csv"));
        // Self-contained: nothing is loaded from anywhere (the SVG namespace URI is a name, not a fetch).
        for external in ["src=", "href=", "<link", "url(", "@import"] {
            assert!(
                !html.contains(external),
                "report.html refers to something outside: {external}"
            );
        }
        let back: Report =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(back, report);

        // The same directory reused for unlabeled data: the label plots go, nothing stale stays.
        let mut unlabeled = report.clone();
        unlabeled.metrics = None;
        unlabeled.metrics_note = Some("no labels".into());
        write_reports(dir.path(), &unlabeled).unwrap();
        assert!(!dir.path().join("roc.svg").exists());
        assert!(dir.path().join("timeline.svg").exists());
    }
}
