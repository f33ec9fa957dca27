//! report.md: the same report, for people.

use std::fmt::Write;

use crate::report::Report;

fn num(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "n/a".into())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn to_markdown(r: &Report) -> Vec<u8> {
    let mut s = String::new();
    let _ = writeln!(s, "# esmbench report: {}\n", r.status);
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| model | `{}` ({}; sha256 `{}`) |",
        r.model.path,
        r.model.kind,
        &r.model.sha256[..r.model.sha256.len().min(12)]
    );
    if let Some(head) = &r.model.head_source {
        let _ = writeln!(s, "| head | `{head}` |");
    }
    let _ = writeln!(
        s,
        "| threshold | {} ({}) |",
        r.model.threshold, r.model.threshold_source
    );
    let _ = writeln!(s, "| data | `{}` |", r.data.path);
    let _ = writeln!(
        s,
        "| rows | {} total, {} scored, {} skipped, {} truncated, {} unlabeled |",
        r.data.rows_total,
        r.data.rows_scored,
        r.data.rows_skipped,
        r.data.rows_truncated,
        r.data.rows_unlabeled
    );
    let _ = writeln!(
        s,
        "| execution | requested `{}`, ran on `{}`, {} thread(s), max_tokens {}, model loads {} |",
        r.execution.device_requested,
        r.execution.execution_provider,
        r.execution.threads,
        r.execution.max_tokens,
        r.execution.model_loads
    );
    if let Some(f) = &r.execution.fallback {
        let _ = writeln!(s, "| **fallback** | {f} |");
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
            let _ = writeln!(s, "| metric | value |\n|---|---|");
            for (name, value) in [
                ("accuracy", m.accuracy),
                ("balanced accuracy", m.balanced_accuracy),
                ("precision", m.precision),
                ("recall (sensitivity)", m.recall),
                ("specificity", m.specificity),
                ("F1", m.f1),
                ("MCC", m.mcc),
                ("ROC-AUC", m.roc_auc),
                ("PR-AUC (average precision)", m.pr_auc),
                ("Brier score", m.brier),
                ("log loss", m.log_loss),
            ] {
                let _ = writeln!(s, "| {name} | {} |", num(value));
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
    let p = &r.performance;
    let _ = writeln!(s, "\n## Performance\n\n| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| wall time | {:.2} s (model load {:.2} s, inference {:.2} s) |",
        p.wall_seconds, p.model_load_seconds, p.inference_seconds
    );
    let _ = writeln!(
        s,
        "| throughput | {:.1} sequences/s, {:.0} tokens/s |",
        p.sequences_per_second, p.tokens_per_second
    );
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
    s.into_bytes()
}
