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
pub const SCHEMA_VERSION: u32 = 9;

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
    /// Valid rows whose id an earlier row has. Added in schema 8; absent (0) before.
    #[serde(default)]
    pub rows_repeating_id: u64,
    /// Valid rows whose sequence an earlier row has. Added in schema 8; absent (0) before.
    #[serde(default)]
    pub rows_repeating_sequence: u64,
    /// Sequences labelled 0 on one row and 1 on another. Added in schema 8; absent (0) before.
    #[serde(default)]
    pub sequences_with_both_labels: u64,
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
    /// The token budget the run started with.
    pub max_tokens: u64,
    /// The lowest budget the soft memory limit halved it to (the budget it ended with); null when it was never
    /// lowered. Added in schema 7; absent (null) before.
    #[serde(default)]
    pub max_tokens_lowered_to: Option<u64>,
    pub max_residues: u64,
    /// "K/N" when this run scored one shard of the data.
    pub shard: Option<String>,
    /// Where a `--resume` took the run up; null when it ran from the first row. The performance figures are
    /// this process's: its wall time over the rows it scored. Added in schema 9; absent (null) before.
    #[serde(default)]
    pub resumed: Option<Resumed>,
}

/// How far an interrupted run had got when `--resume` went on with it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Resumed {
    /// The data row (0-based) the resumed run started reading at.
    pub at_row: u64,
    /// Rows the earlier run(s) had scored, which `data.rows_scored` includes.
    pub rows_scored_before: u64,
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
    /// CPU time (user + system, all threads) the process has used so far. Added in schema 6; absent (0) before.
    #[serde(default)]
    pub cpu_seconds: f64,
}

/// A number as a person writes it: plain, or in e-notation when plain would run to many digits (C = 1e12).
pub fn compact_number(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// CPUs the process kept busy on average while rows were being scored: its CPU time over the wall time
/// of the timeline intervals in which rows_done grew. None without such an interval or CPU times (a
/// report older than schema 6). Next to the thread count it tells a model starved of CPU (other
/// processes, a container's quota) from a machine that is merely slow.
pub fn cpus_busy_while_scoring(timeline: &[Sample]) -> Option<f64> {
    let (cpu, wall) = timeline
        .windows(2)
        .filter(|w| w[1].rows_done > w[0].rows_done && w[1].seconds > w[0].seconds)
        .fold((0.0, 0.0), |(cpu, wall), w| {
            (
                cpu + (w[1].cpu_seconds - w[0].cpu_seconds).max(0.0),
                wall + (w[1].seconds - w[0].seconds),
            )
        });
    (wall > 0.0 && cpu > 0.0).then(|| cpu / wall)
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
        crate::output_files::PREDICTIONS,
        crate::output_files::SKIPPED,
        crate::output_files::CHECKPOINT,
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

/// Removes what an earlier run left in `dir` (its predictions, checkpoint, reports and plots) as a new `test`
/// run starts there: one refused before it writes anything (bad data, a model that will not load) would
/// otherwise leave the earlier run's report saying `complete` for a CI step to gate or archive.
pub fn remove_earlier_run(dir: &Path) -> Result<()> {
    test_output_files(dir)
        .iter()
        .try_for_each(|path| remove_stale(path))
}

/// Removes the reports and plots an earlier run left in `dir`, as `esmbench metrics` starts there; the
/// predictions beside them may be its input, and stay.
pub fn remove_earlier_reports(dir: &Path) -> Result<()> {
    ["report.json", "report.md", "report.html"]
        .into_iter()
        .chain(plots::PlotKind::ALL.iter().map(|kind| kind.file_name()))
        .try_for_each(|name| remove_stale(&dir.join(name)))
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
                rows_repeating_id: 0,
                rows_repeating_sequence: 0,
                sequences_with_both_labels: 0,
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
                max_tokens_lowered_to: None,
                max_residues: 1022,
                shard: None,
                resumed: None,
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
                        cpu_seconds: 0.5 + 3.9 * k as f64,
                    })
                    .collect(),
                ..Default::default()
            },
            error: None,
        }
    }

    /// The report as a schema-5 run wrote it: no CPU times in its timeline.
    fn without_cpu_times(mut report: Report) -> Report {
        for sample in &mut report.performance.timeline {
            sample.cpu_seconds = 0.0;
        }
        report
    }

    fn sample_at(seconds: f64, rows_done: u64, cpu_seconds: f64) -> Sample {
        Sample {
            seconds,
            rows_done,
            rss_bytes: 0,
            threads: 4,
            cpu_seconds,
        }
    }

    #[test]
    fn numbers_too_long_to_read_plainly_are_written_in_e_notation() {
        assert_eq!(compact_number(1.0), "1");
        assert_eq!(compact_number(0.05), "0.05");
        assert_eq!(compact_number(0.0), "0");
        assert_eq!(compact_number(1e12), "1e12");
        assert_eq!(compact_number(-1e-300), "-1e-300");
        assert_eq!(compact_number(123456.0), "123456");
    }

    #[test]
    fn cpus_busy_counts_only_the_intervals_in_which_rows_were_scored() {
        // Loading (0-2 s, 1.0 CPU-s) and the closing metrics (8-10 s, 1.5 CPU-s) score no rows; the three
        // scoring intervals take 6 s of wall time and 3.0 + 4.0 + 4.0 = 11.0 CPU-s.
        let timeline = [
            sample_at(0.0, 0, 0.0),
            sample_at(2.0, 0, 1.0),
            sample_at(4.0, 100, 4.0),
            sample_at(6.0, 250, 8.0),
            sample_at(8.0, 400, 12.0),
            sample_at(10.0, 400, 13.5),
        ];
        let busy = cpus_busy_while_scoring(&timeline).unwrap();
        assert!((busy - 11.0 / 6.0).abs() < 1e-12, "{busy}");
    }

    #[test]
    fn cpus_busy_is_absent_without_scoring_intervals_or_cpu_times() {
        assert_eq!(cpus_busy_while_scoring(&[]), None);
        assert_eq!(cpus_busy_while_scoring(&[sample_at(0.0, 0, 0.0)]), None);
        // A schema-5 report: rows grew but no CPU time was recorded.
        let older = [sample_at(0.0, 0, 0.0), sample_at(2.0, 50, 0.0)];
        assert_eq!(cpus_busy_while_scoring(&older), None);
    }

    #[test]
    fn both_performance_tables_give_the_cpus_busy_beside_the_threads() {
        // The sample's timeline: 3.9 CPU-s every 2 s while rows grow, on 2 model threads.
        let row = "1.95 CPUs busy on average while scoring (2 threads for the model)";
        let report = sample_report();
        let markdown = String::from_utf8(markdown::to_markdown(&report)).unwrap();
        assert!(markdown.contains(&format!("| CPU | {row} |")), "{markdown}");
        let dir = tempfile::tempdir().unwrap();
        write_reports(dir.path(), &report).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains(row), "{html}");
        let older = without_cpu_times(report);
        let markdown = String::from_utf8(markdown::to_markdown(&older)).unwrap();
        assert!(!markdown.contains("| CPU |"), "{markdown}");
    }

    #[test]
    fn the_timeline_chart_has_a_cpu_panel_only_when_the_report_has_cpu_times() {
        let report = sample_report();
        let with_cpu = plots::render(plots::PlotKind::Timeline, &report)
            .unwrap()
            .unwrap();
        assert!(with_cpu.contains("CPUs busy (2 threads for the model)"));
        assert!(with_cpu.contains(r#"height="820""#), "three panels");
        let older = without_cpu_times(report);
        let without = plots::render(plots::PlotKind::Timeline, &older)
            .unwrap()
            .unwrap();
        assert!(!without.contains("CPUs busy"));
        assert!(without.contains(r#"height="560""#), "two panels");
        assert!(without.contains("Resident memory"));
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
