//! report.md: the same report, for people.

use std::fmt::Write;

use crate::metrics::{threshold, Metrics, SCALAR_METRICS};
use crate::report::plots::PlotKind;
use crate::report::Report;

pub(crate) fn num(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "n/a".into())
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What people call each metric.
pub(crate) fn label(name: &str) -> &'static str {
    match name {
        "accuracy" => "accuracy",
        "balanced_accuracy" => "balanced accuracy",
        "precision" => "precision",
        "recall" => "recall (sensitivity)",
        "specificity" => "specificity",
        "f1" => "F1",
        "mcc" => "MCC",
        "roc_auc" => "ROC-AUC",
        "pr_auc" => "PR-AUC (average precision)",
        "brier" => "Brier score",
        "log_loss" => "log loss",
        _ => "?",
    }
}

/// (report name, label, value) for every scalar metric, in report order.
pub(crate) fn metric_rows(m: &Metrics) -> Vec<(&'static str, &'static str, Option<f64>)> {
    SCALAR_METRICS
        .iter()
        .map(|&name| (name, label(name), m.get(name)))
        .collect()
}

/// "[low, high]" for a metric with a bootstrap interval, "n/a" when it had none, "" when it is not bootstrapped.
pub(crate) fn interval(m: &Metrics, name: &str) -> String {
    match m.intervals.as_ref().and_then(|i| i.get(name)) {
        Some(i) => match (i.low, i.high) {
            (Some(lo), Some(hi)) => format!("[{lo:.4}, {hi:.4}]"),
            _ => "n/a".into(),
        },
        None => String::new(),
    }
}

/// The repeats the validation pass found, as the reports (and fit's) show them; None when there are none.
pub fn repeats_shown(
    rows_repeating_id: u64,
    rows_repeating_sequence: u64,
    sequences_with_both_labels: u64,
) -> Option<String> {
    let parts: Vec<String> = [
        (
            rows_repeating_id,
            ["row reuses", "rows reuse"],
            " an earlier row's id (join results on the row column)",
        ),
        (
            rows_repeating_sequence,
            ["row repeats", "rows repeat"],
            " an earlier row's sequence",
        ),
        (
            sequences_with_both_labels,
            ["sequence is", "sequences are"],
            " labelled both 0 and 1 (every copy is scored alike, so one label counts as an error)",
        ),
    ]
    .into_iter()
    .filter(|(count, _, _)| *count > 0)
    .map(|(count, [one, many], what)| {
        format!("{count} {}{what}", if count == 1 { one } else { many })
    })
    .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The throughput as the reports show it: a resumed run's covers the rows this process scored, not all of
/// `data.rows_scored`.
pub fn throughput_shown(r: &Report) -> String {
    let p = &r.performance;
    let rate = format!(
        "{:.1} sequences/s, {:.0} tokens/s",
        p.sequences_per_second, p.tokens_per_second
    );
    match r.execution.resumed {
        Some(resumed) => format!(
            "{rate}, over the {} rows timed here ({} were scored before a resume, in time not counted here)",
            r.data.rows_scored.saturating_sub(resumed.rows_scored_before),
            resumed.rows_scored_before
        ),
        None => rate,
    }
}

/// The token budget as the reports show it: the starting one, and the lowest the soft memory limit cut it to.
pub fn max_tokens_shown(execution: &crate::report::Execution) -> String {
    match execution.max_tokens_lowered_to {
        Some(lowest) => format!(
            "{} (lowered to {lowest} by the soft memory limit)",
            execution.max_tokens
        ),
        None => execution.max_tokens.to_string(),
    }
}

pub fn to_markdown(r: &Report) -> Vec<u8> {
    let mut s = String::new();
    let _ = writeln!(s, "# esmbench report: {}\n", r.status);
    let _ = writeln!(s, "| | |\n|---|---|");
    let rescored = r.command == "metrics";
    let sha = &r.model.sha256[..r.model.sha256.len().min(12)];
    if rescored {
        let _ = writeln!(
            s,
            "| scores | column `{}` of `{}` (sha256 `{sha}`), rescored by `esmbench metrics` |",
            r.model.output, r.model.path
        );
    } else {
        let _ = writeln!(
            s,
            "| model | `{}` ({}; sha256 `{sha}`) |",
            r.model.path, r.model.kind
        );
    }
    if let Some(head) = &r.model.head_source {
        let _ = writeln!(s, "| head | `{head}` |");
    }
    let _ = writeln!(
        s,
        "| threshold | {} |",
        threshold::describe(
            r.model.threshold,
            &r.model.threshold_source,
            r.model.assay.as_deref()
        )
    );
    let _ = writeln!(s, "| data | `{}` |", r.data.path);
    if let Some(c) = &r.data.label_column {
        let _ = writeln!(s, "| labels | column `{c}` |");
    }
    let _ = writeln!(
        s,
        "| rows | {} total, {} scored, {} skipped, {} truncated, {} unlabeled |",
        r.data.rows_total,
        r.data.rows_scored,
        r.data.rows_skipped,
        r.data.rows_truncated,
        r.data.rows_unlabeled
    );
    if r.data.rows_with_gaps > 0 {
        let _ = writeln!(
            s,
            "| alignment gaps | {} rows hold '-' or '.', which the model read as tokens (scores of the gapped, not the plain, sequences) |",
            r.data.rows_with_gaps
        );
    }
    if let Some(repeats) = repeats_shown(
        r.data.rows_repeating_id,
        r.data.rows_repeating_sequence,
        r.data.sequences_with_both_labels,
    ) {
        let _ = writeln!(s, "| repeats | {repeats} |");
    }
    if !rescored {
        let _ = writeln!(
            s,
            "| execution | requested `{}`, ran on `{}`{}, {} thread(s), {} batch(es) at once, max_tokens {}, model loads {} |",
            r.execution.device_requested,
            r.execution.execution_provider,
            if r.execution.io_binding {
                " (IO binding, page-locked host memory)"
            } else {
                ""
            },
            r.execution.threads,
            r.execution.parallel_batches,
            max_tokens_shown(&r.execution),
            r.execution.model_loads
        );
    }
    if let Some(f) = &r.execution.fallback {
        let _ = writeln!(s, "| **fallback** | {f} |");
    }
    if let Some(g) = &r.execution.graph_rewrite {
        let _ = writeln!(
            s,
            "| graph | rewritten in memory at load: {g} (probe-checked; `--no-graph-rewrite` runs the file as it is) |"
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(s, "| **error** | {} |", e.replace('\n', " "));
    }
    let _ = writeln!(s, "\n## Metrics\n");
    match &r.metrics {
        Some(m) => {
            let _ = writeln!(
                s,
                "n = {} ({} positive, {} negative), threshold {}\n",
                m.n, m.positives, m.negatives, m.threshold
            );
            let _ = writeln!(s, "| metric | value | 95% interval |\n|---|---|---|");
            for (key, name, value) in metric_rows(m) {
                let _ = writeln!(s, "| {name} | {} | {} |", num(value), interval(m, key));
            }
            if let Some(i) = &m.intervals {
                let _ = writeln!(
                    s,
                    "\nIntervals: {}, {} resamples, seed {}.",
                    i.method, i.resamples, i.seed
                );
            }
            let [[tn, fp], [fn_, tp]] = m.confusion_matrix;
            let _ = writeln!(s, "\n| | predicted 0 | predicted 1 |\n|---|---|---|\n| label 0 | {tn} | {fp} |\n| label 1 | {fn_} | {tp} |");
            for (name, reason) in &m.undefined {
                let _ = writeln!(s, "\n- {name} is undefined: {reason}");
            }
        }
        None => {
            let _ = writeln!(s, "{}", r.metrics_note.as_deref().unwrap_or("no metrics"));
        }
    }
    let plots: Vec<PlotKind> = PlotKind::ALL.into_iter().filter(|k| k.applies(r)).collect();
    if !plots.is_empty() {
        let _ = writeln!(
            s,
            "\n## Plots\n\nAll of them, with this report, on one page: `report.html` (open it in any browser).\n"
        );
        for k in plots {
            let _ = writeln!(s, "![{}]({})", k.title(), k.file_name());
        }
    }
    if rescored {
        return s.into_bytes();
    }
    let p = &r.performance;
    let _ = writeln!(s, "\n## Performance\n\n| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| wall time | {:.2} s (model load {:.2} s, inference {:.2} s) |",
        p.wall_seconds, p.model_load_seconds, p.inference_seconds
    );
    let _ = writeln!(s, "| throughput | {} |", throughput_shown(r));
    let _ = writeln!(
        s,
        "| padding efficiency | {:.1}% over {} batches |",
        p.padding_efficiency * 100.0,
        p.batches
    );
    let _ = writeln!(
        s,
        "| memory | peak RSS {}, start {}, end {}; peak threads {} |",
        mib(p.peak_rss_bytes),
        mib(p.rss_start_bytes),
        mib(p.rss_end_bytes),
        p.peak_threads
    );
    if let Some(cpu) = cpu_use(r) {
        let _ = writeln!(s, "| CPU | {cpu} |");
    }
    s.into_bytes()
}

/// The performance table's CPU row: how many CPUs the run kept busy while scoring, beside its threads.
pub fn cpu_use(r: &Report) -> Option<String> {
    crate::report::cpus_busy_while_scoring(&r.performance.timeline).map(|busy| {
        let threads = r.execution.threads;
        let plural = if threads == 1 { "" } else { "s" };
        format!(
            "{busy:.2} CPUs busy on average while scoring ({threads} thread{plural} for the model)"
        )
    })
}
