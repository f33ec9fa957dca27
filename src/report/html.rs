//! report.html: the whole report on one self-contained page (styles and SVG charts inline, nothing fetched).

use std::fmt::Write;

use crate::metrics::threshold;
use crate::report::markdown::{cpu_use, interval, metric_rows, mib, num};
use crate::report::plots::{PlotKind, Rendered};
use crate::report::Report;

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #222; margin: 2rem auto; max-width: 1180px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2rem; border-radius: 3px; word-break: break-all; }
.status { display: inline-block; padding: 0.1rem 0.6rem; border-radius: 0.8rem; color: #fff; background: #2e7d32; }
.status.bad { background: #c62828; }
.status.running { background: #ef6c00; }
.plots { display: flex; flex-wrap: wrap; gap: 1.2rem; }
figure { margin: 0; border: 1px solid #e3e3e3; padding: 0.5rem; background: #fff; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #666; font-size: 0.85rem; margin-top: 0.3rem; }
.note { color: #555; }
";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn row(s: &mut String, key: &str, value_html: &str) {
    let _ = writeln!(s, "<tr><th>{}</th><td>{value_html}</td></tr>", escape(key));
}

fn code(text: &str) -> String {
    format!("<code>{}</code>", escape(text))
}

pub fn to_html(r: &Report, plots: &Rendered) -> Vec<u8> {
    let mut s = String::new();
    let title = format!(
        "esmbench report: {}",
        r.data
            .path
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(&r.data.path)
    );
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        escape(&title)
    );
    let status_class = match r.status.as_str() {
        "complete" => "status",
        "running" => "status running",
        _ => "status bad",
    };
    let _ = writeln!(
        s,
        "<h1>{}</h1>\n<p><span class=\"{status_class}\">{}</span> written by <code>esmbench {}</code> {} (started {})</p>",
        escape(&title),
        escape(&r.status),
        escape(&r.command),
        escape(&r.tool.version),
        escape(&r.started_at)
    );

    s.push_str("<h2>Run</h2>\n<table>\n");
    let rescored = r.command == "metrics";
    if rescored {
        row(
            &mut s,
            "scores",
            &format!(
                "column {} of {} (sha256 {})",
                code(&r.model.output),
                code(&r.model.path),
                code(&r.model.sha256[..r.model.sha256.len().min(12)])
            ),
        );
    } else {
        row(
            &mut s,
            "model",
            &format!(
                "{} ({}; sha256 {})",
                code(&r.model.path),
                escape(&r.model.kind),
                code(&r.model.sha256[..r.model.sha256.len().min(12)])
            ),
        );
        if let Some(head) = &r.model.head_source {
            row(&mut s, "head", &code(head));
        }
    }
    row(
        &mut s,
        "threshold",
        &escape(&threshold::describe(
            r.model.threshold,
            &r.model.threshold_source,
            r.model.assay.as_deref(),
        )),
    );
    row(&mut s, "data", &code(&r.data.path));
    if let Some(c) = &r.data.label_column {
        row(&mut s, "labels", &format!("column {}", code(c)));
    }
    row(
        &mut s,
        "rows",
        &format!(
            "{} total, {} scored, {} skipped, {} truncated, {} unlabeled",
            r.data.rows_total,
            r.data.rows_scored,
            r.data.rows_skipped,
            r.data.rows_truncated,
            r.data.rows_unlabeled
        ),
    );
    if r.data.rows_with_gaps > 0 {
        row(
            &mut s,
            "alignment gaps",
            &format!(
                "{} rows hold '-' or '.', which the model read as tokens (scores of the gapped, not the plain, sequences)",
                r.data.rows_with_gaps
            ),
        );
    }
    if let Some(repeats) = super::markdown::repeats_shown(
        r.data.rows_repeating_id,
        r.data.rows_repeating_sequence,
        r.data.sequences_with_both_labels,
    ) {
        row(&mut s, "repeats", &escape(&repeats));
    }
    if !rescored {
        row(
            &mut s,
            "execution",
            &format!(
                "requested {}, ran on {}, {} thread(s), {} batch(es) at once, max_tokens {}, model loads {}",
                code(&r.execution.device_requested),
                code(&r.execution.execution_provider),
                r.execution.threads,
                r.execution.parallel_batches,
                super::markdown::max_tokens_shown(&r.execution),
                r.execution.model_loads
            ),
        );
    }
    if let Some(f) = &r.execution.fallback {
        row(
            &mut s,
            "fallback",
            &format!("<strong>{}</strong>", escape(f)),
        );
    }
    if let Some(e) = &r.error {
        row(&mut s, "error", &format!("<strong>{}</strong>", escape(e)));
    }
    s.push_str("</table>\n");

    s.push_str("<h2>Metrics</h2>\n");
    match &r.metrics {
        Some(m) => {
            let _ = writeln!(
                s,
                "<p>n = {} ({} positive, {} negative), threshold {}. Definitions as scikit-learn's; positive when probability &gt; threshold.</p>",
                m.n, m.positives, m.negatives, m.threshold
            );
            s.push_str("<table>\n<tr><th>metric</th><th>value</th><th>95% interval</th></tr>\n");
            for (key, label, value) in metric_rows(m) {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    escape(label),
                    num(value),
                    escape(&interval(m, key))
                );
            }
            s.push_str("</table>\n");
            if let Some(i) = &m.intervals {
                let _ = writeln!(
                    s,
                    "<p class=\"note\">Intervals: {}, {} resamples, seed {}.</p>",
                    escape(&i.method),
                    i.resamples,
                    i.seed
                );
            }
            let [[tn, fp], [fn_, tp]] = m.confusion_matrix;
            let _ = writeln!(
                s,
                "<table>\n<tr><th></th><th>predicted 0</th><th>predicted 1</th></tr>\n<tr><th>label 0</th><td class=\"num\">{tn}</td><td class=\"num\">{fp}</td></tr>\n<tr><th>label 1</th><td class=\"num\">{fn_}</td><td class=\"num\">{tp}</td></tr>\n</table>"
            );
            if !m.undefined.is_empty() {
                s.push_str("<ul>\n");
                for (name, reason) in &m.undefined {
                    let _ = writeln!(
                        s,
                        "<li>{} is undefined: {}</li>",
                        code(name),
                        escape(reason)
                    );
                }
                s.push_str("</ul>\n");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "<p>{}</p>",
                escape(r.metrics_note.as_deref().unwrap_or("no metrics"))
            );
        }
    }

    s.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
    for (kind, svg) in plots {
        match svg {
            Ok(Some(svg)) => {
                let _ = writeln!(
                    s,
                    "<figure>\n{svg}\n<figcaption>{} ({})</figcaption>\n</figure>",
                    escape(kind.title()),
                    escape(kind.file_name())
                );
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "<p class=\"note\">{} could not be drawn: {}</p>",
                    escape(kind.title()),
                    escape(e)
                );
            }
            Ok(None) => {}
        }
    }
    s.push_str("</div>\n");
    if !rescored && !PlotKind::Timeline.applies(r) {
        s.push_str("<p class=\"note\">No timeline: the run took less than two samples (one every 2 s).</p>\n");
    }

    if !rescored {
        let p = &r.performance;
        s.push_str("<h2>Performance</h2>\n<table>\n");
        row(
            &mut s,
            "wall time",
            &format!(
                "{:.2} s (model load {:.2} s, inference {:.2} s)",
                p.wall_seconds, p.model_load_seconds, p.inference_seconds
            ),
        );
        row(&mut s, "throughput", &super::markdown::throughput_shown(r));
        row(
            &mut s,
            "padding efficiency",
            &format!(
                "{:.1}% over {} batches",
                p.padding_efficiency * 100.0,
                p.batches
            ),
        );
        row(
            &mut s,
            "memory",
            &format!(
                "peak RSS {}, start {}, end {}; peak threads {}",
                mib(p.peak_rss_bytes),
                mib(p.rss_start_bytes),
                mib(p.rss_end_bytes),
                p.peak_threads
            ),
        );
        if let Some(cpu) = cpu_use(r) {
            row(&mut s, "CPU", &cpu);
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body>\n</html>\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
