//! The one serializable run report, and the exporters that turn it into bytes.

pub mod markdown;
pub mod npy;
pub mod predictions;

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// Bumped whenever a field is added, removed or changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema_version: u32,
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
    /// Scored rows without a label: in predictions, not in metrics.
    pub rows_unlabeled: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Execution {
    pub device_requested: String,
    pub execution_provider: String,
    pub fallback: Option<String>,
    pub model_loads: u64,
    pub threads: u64,
    pub max_tokens: u64,
    pub max_residues: u64,
    /// "K/N" when this run scored one shard of the data.
    pub shard: Option<String>,
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
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Writes report.json and report.md into `dir`.
pub fn write_reports(dir: &Path, report: &Report) -> Result<()> {
    write_atomically(&dir.join("report.json"), &to_json(report))?;
    write_atomically(&dir.join("report.md"), &markdown::to_markdown(report))?;
    Ok(())
}
