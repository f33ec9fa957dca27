//! The report's charts as SVG, drawn from report.json alone: confusion matrix, ROC, precision-recall, score
//! histograms per class, and the run over time (sequences/s and RSS).
//!
//! SVG because it needs no fonts or image libraries at render time (the viewer lays out the text), opens in any
//! browser, and embeds in report.html as it is.

use std::error::Error;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::Metrics;
use crate::report::{Report, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotKind {
    ConfusionMatrix,
    Roc,
    PrecisionRecall,
    ScoreHistogram,
    Timeline,
}

/// What `render_all` returns: each kind with its SVG, None when it does not apply, or why drawing failed.
pub type Rendered = Vec<(PlotKind, Result<Option<String>, String>)>;

type Drawn = Result<(), Box<dyn Error>>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

const NEGATIVE: RGBColor = RGBColor(31, 119, 180);
const POSITIVE: RGBColor = RGBColor(214, 39, 40);
const CURVE: RGBColor = RGBColor(31, 119, 180);
const GUIDE: RGBColor = RGBColor(170, 170, 170);
const FONT: &str = "sans-serif";

impl PlotKind {
    pub const ALL: [PlotKind; 5] = [
        PlotKind::ConfusionMatrix,
        PlotKind::Roc,
        PlotKind::PrecisionRecall,
        PlotKind::ScoreHistogram,
        PlotKind::Timeline,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            PlotKind::ConfusionMatrix => "confusion_matrix.svg",
            PlotKind::Roc => "roc.svg",
            PlotKind::PrecisionRecall => "pr.svg",
            PlotKind::ScoreHistogram => "score_histogram.svg",
            PlotKind::Timeline => "timeline.svg",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            PlotKind::ConfusionMatrix => "Confusion matrix",
            PlotKind::Roc => "ROC curve",
            PlotKind::PrecisionRecall => "Precision-recall curve",
            PlotKind::ScoreHistogram => "Scores by true class",
            PlotKind::Timeline => "The run over time",
        }
    }

    /// Whether the report holds what this chart needs.
    pub fn applies(self, report: &Report) -> bool {
        let metrics = report.metrics.as_ref().filter(|m| m.n > 0);
        match self {
            PlotKind::ConfusionMatrix | PlotKind::ScoreHistogram => metrics.is_some(),
            PlotKind::Roc => metrics.is_some_and(|m| m.curves.roc.is_some()),
            PlotKind::PrecisionRecall => metrics.is_some_and(|m| m.curves.pr.is_some()),
            PlotKind::Timeline => report.performance.timeline.len() >= 2,
        }
    }
}

pub fn render_all(report: &Report) -> Rendered {
    PlotKind::ALL
        .iter()
        .map(|&kind| (kind, render(kind, report)))
        .collect()
}

pub fn render(kind: PlotKind, report: &Report) -> Result<Option<String>, String> {
    if !kind.applies(report) {
        return Ok(None);
    }
    let (w, h) = match kind {
        PlotKind::ConfusionMatrix => (480, 420),
        PlotKind::Timeline if has_cpu_times(&report.performance.timeline) => (720, 820),
        PlotKind::Timeline => (720, 560),
        _ => (560, 460),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        let drawn = root.fill(&WHITE).map_err(Into::into).and_then(|_| {
            let m = report.metrics.as_ref();
            match (kind, m) {
                (PlotKind::ConfusionMatrix, Some(m)) => confusion_matrix(&root, m),
                (PlotKind::Roc, Some(m)) => roc(&root, m),
                (PlotKind::PrecisionRecall, Some(m)) => precision_recall(&root, m),
                (PlotKind::ScoreHistogram, Some(m)) => histogram(&root, m),
                (PlotKind::Timeline, _) => timeline(&root, report),
                _ => Ok(()),
            }
        });
        drawn
            .and_then(|_| root.present().map_err(Into::into))
            .map_err(|e| e.to_string())?;
    }
    Ok(Some(svg))
}

fn caption() -> TextStyle<'static> {
    (FONT, 20).into_font().color(&BLACK)
}

fn confusion_matrix(root: &DrawingArea<SVGBackend, Shift>, m: &Metrics) -> Drawn {
    let [[tn, fp], [fn_, tp]] = m.confusion_matrix;
    let cells = [[tn, fp], [fn_, tp]];
    let max = cells.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let title = format!("Confusion matrix at threshold {}", m.threshold);
    root.draw(&Text::new(
        title.as_str(),
        (240, 24),
        caption().pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    let (left, top, cell) = (130i32, 96i32, 140i32);
    let label = |s: &str, x: i32, y: i32| {
        Text::new(
            s.to_string(),
            (x, y),
            (FONT, 16)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        )
    };
    root.draw(&label("predicted", left + cell, top - 42))?;
    for k in 0..2 {
        root.draw(&label(&k.to_string(), left + cell / 2 + k * cell, top - 16))?;
        root.draw(&label(
            &format!("label {k}"),
            left - 50,
            top + cell / 2 + k * cell,
        ))?;
    }
    for (r, row) in cells.iter().enumerate() {
        let row_total: u64 = row.iter().sum();
        for (c, &count) in row.iter().enumerate() {
            let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
            let shade = count as f64 / max;
            let fill = RGBColor(
                (247.0 - shade * 216.0) as u8,
                (251.0 - shade * 132.0) as u8,
                (255.0 - shade * 75.0) as u8,
            );
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                fill.filled(),
            ))?;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                BLACK.stroke_width(1),
            ))?;
            let ink = if shade > 0.55 { WHITE } else { BLACK };
            let share = if row_total > 0 {
                format!(
                    "{:.1}% of label {r}",
                    100.0 * count as f64 / row_total as f64
                )
            } else {
                "-".into()
            };
            root.draw(&Text::new(
                count.to_string(),
                (x + cell / 2, y + cell / 2 - 12),
                (FONT, 26)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
            root.draw(&Text::new(
                share,
                (x + cell / 2, y + cell / 2 + 20),
                (FONT, 13)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
        }
    }
    Ok(())
}

fn unit_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    y_max: f64,
) -> Result<Chart<'a, 'b>, Box<dyn Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .light_line_style(RGBColor(235, 235, 235))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    Ok(chart)
}

fn line_style(color: RGBColor, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: width,
    }
}

fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], line_style(color, 3))
}

fn legend_box(color: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.6).filled())
}

fn show_number(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
}

fn roc(root: &DrawingArea<SVGBackend, Shift>, m: &Metrics) -> Drawn {
    let points = m.curves.roc.as_deref().unwrap_or_default();
    let title = format!("ROC curve, AUC {}", show_number(m.roc_auc));
    let mut chart = unit_chart(
        root,
        &title,
        "false positive rate",
        "true positive rate",
        1.0,
    )?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            line_style(GUIDE, 1),
        ))?
        .label("chance")
        .legend(legend_line(GUIDE));
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p[0], p[1])),
            line_style(CURVE, 2),
        ))?
        .label("this model")
        .legend(legend_line(CURVE));
    if let (Some(recall), Some(specificity)) = (m.recall, m.specificity) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (1.0 - specificity, recall),
                5,
                POSITIVE.filled(),
            )))?
            .label(format!("threshold {}", m.threshold))
            .legend(|(x, y)| Circle::new((x + 8, y), 4, POSITIVE.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn precision_recall(root: &DrawingArea<SVGBackend, Shift>, m: &Metrics) -> Drawn {
    let points = m.curves.pr.as_deref().unwrap_or_default();
    let title = format!(
        "Precision-recall, average precision {}",
        show_number(m.pr_auc)
    );
    let mut chart = unit_chart(root, &title, "recall", "precision", 1.05)?;
    let prevalence = m.positives as f64 / m.n.max(1) as f64;
    chart
        .draw_series(LineSeries::new(
            [(0.0, prevalence), (1.0, prevalence)],
            line_style(GUIDE, 1),
        ))?
        .label(format!("chance (prevalence {prevalence:.3})"))
        .legend(legend_line(GUIDE));
    // Average precision is the area under this step function: precision P_k held over (R_{k-1}, R_k].
    let mut path = Vec::with_capacity(points.len() * 2);
    let mut prev_recall = 0.0;
    for p in points {
        path.push((prev_recall, p[1]));
        path.push((p[0], p[1]));
        prev_recall = p[0];
    }
    chart
        .draw_series(LineSeries::new(path, line_style(CURVE, 2)))?
        .label("this model")
        .legend(legend_line(CURVE));
    if let (Some(recall), Some(precision)) = (m.recall, m.precision) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (recall, precision),
                5,
                POSITIVE.filled(),
            )))?
            .label(format!("threshold {}", m.threshold))
            .legend(|(x, y)| Circle::new((x + 8, y), 4, POSITIVE.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Drawn {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(GUIDE)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

fn histogram(root: &DrawingArea<SVGBackend, Shift>, m: &Metrics) -> Drawn {
    let h = &m.curves.histogram;
    let share = |counts: &[u64]| {
        let total = counts.iter().sum::<u64>().max(1) as f64;
        counts.iter().map(|&c| c as f64 / total).collect::<Vec<_>>()
    };
    let (neg, pos) = (share(&h.negatives), share(&h.positives));
    let top = neg
        .iter()
        .chain(&pos)
        .copied()
        .fold(0.0, f64::max)
        .max(0.05)
        * 1.12;
    let mut chart = unit_chart(
        root,
        "Scores by true class",
        "predicted probability",
        "share of the class",
        top,
    )?;
    for (shares, color, name, count) in [
        (&neg, NEGATIVE, "label 0", m.negatives),
        (&pos, POSITIVE, "label 1", m.positives),
    ] {
        chart
            .draw_series(shares.iter().enumerate().map(|(k, &s)| {
                Rectangle::new(
                    [(h.edges[k], 0.0), (h.edges[k + 1], s)],
                    color.mix(0.45).filled(),
                )
            }))?
            .label(format!("{name} (n={count})"))
            .legend(legend_box(color));
    }
    chart
        .draw_series(LineSeries::new(
            [(m.threshold, 0.0), (m.threshold, top)],
            line_style(BLACK, 1),
        ))?
        .label(format!("threshold {}", m.threshold))
        .legend(legend_line(BLACK));
    legend(&mut chart, SeriesLabelPosition::UpperMiddle)
}

/// Reports before schema 6 hold no CPU times.
fn has_cpu_times(samples: &[Sample]) -> bool {
    samples.iter().any(|s| s.cpu_seconds > 0.0)
}

/// The per-second rate of a running total between consecutive samples, placed at the later one.
fn per_second(samples: &[Sample], total: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].seconds > w[0].seconds)
        .map(|w| {
            let grown = (total(&w[1]) - total(&w[0])).max(0.0);
            (w[1].seconds, grown / (w[1].seconds - w[0].seconds))
        })
        .collect()
}

/// One panel of the timeline: time since the model loaded across, `y_desc` from 0 to `y_max` up.
fn timeline_panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    y_desc: &str,
    end: f64,
    y_max: f64,
) -> Result<Chart<'a, 'b>, Box<dyn Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..end, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the model loaded")
        .y_desc(y_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    Ok(chart)
}

fn timeline(root: &DrawingArea<SVGBackend, Shift>, report: &Report) -> Drawn {
    let samples = &report.performance.timeline;
    let end = samples.last().map(|s| s.seconds).unwrap_or(0.0).max(1e-3);
    let rates = per_second(samples, |s| s.rows_done as f64);
    let mib: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.seconds, s.rss_bytes as f64 / (1024.0 * 1024.0)))
        .collect();
    let (upper, lower) = root.split_vertically(280);
    let lower = if has_cpu_times(samples) {
        let (middle, lower) = lower.split_vertically(260);
        let busy = per_second(samples, |s| s.cpu_seconds);
        cpu_panel(&middle, &busy, report.execution.threads, end)?;
        lower
    } else {
        lower
    };
    let rate_max = rates.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut chart = timeline_panel(
        &upper,
        "Throughput (sequences/s)",
        "sequences/s",
        end,
        rate_max,
    )?;
    chart.draw_series(LineSeries::new(rates, line_style(CURVE, 2)))?;
    let rss_max = mib.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut chart = timeline_panel(
        &lower,
        "Resident memory (a leak shows as a rising line)",
        "RSS (MiB)",
        end,
        rss_max,
    )?;
    chart.draw_series(LineSeries::new(mib, line_style(POSITIVE, 2)))?;
    Ok(())
}

/// CPUs the process kept busy over the run, with the model's thread count as a guide: a dip in
/// throughput with the line still at the guide is the machine's; with the line under it, something
/// else had the CPUs.
fn cpu_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    busy: &[(f64, f64)],
    threads: u64,
    end: f64,
) -> Drawn {
    let top = busy
        .iter()
        .map(|b| b.1)
        .fold(threads as f64, f64::max)
        .max(1.0)
        * 1.15;
    let title = format!("CPUs busy ({threads} threads for the model)");
    let mut chart = timeline_panel(area, &title, "CPUs", end, top)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, threads as f64), (end, threads as f64)],
            line_style(GUIDE, 2),
        ))?
        .label("the model's threads")
        .legend(legend_line(GUIDE));
    chart
        .draw_series(LineSeries::new(busy.iter().copied(), line_style(BLACK, 2)))?
        .label("CPUs busy")
        .legend(legend_line(BLACK));
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}
