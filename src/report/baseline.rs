//! The CI regression gate: a baseline file of metrics (absolute tolerances) and, optionally, throughput
//! (a relative tolerance, because CI machines vary), compared with a report into a readable diff.
//!
//! A metric regresses when it is worse than the baseline by more than its tolerance: lower for scores, higher
//! for the losses (Brier, log loss). Throughput is compared only when the baseline records it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Failure, FailureKind};
use crate::metrics::{lower_is_better, SCALAR_METRICS};
use crate::report::Report;

pub const BASELINE_SCHEMA_VERSION: u32 = 1;
/// Absolute tolerance written by --write-baseline unless --tolerance says otherwise.
pub const DEFAULT_TOLERANCE: f64 = 0.005;
/// Float noise allowed on top of a tolerance, so a value exactly at the edge never flips.
const SLACK: f64 = 1e-12;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub schema_version: u32,
    /// Where it was recorded from (for people; not compared).
    #[serde(default)]
    pub recorded_from: Option<RecordedFrom>,
    /// Labeled rows behind the metrics; a report with another count was made on other data.
    #[serde(default)]
    pub n: Option<u64>,
    /// The threshold behind the threshold-dependent metrics; a report at another one is not comparable.
    #[serde(default)]
    pub threshold: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
    /// Absolute tolerance per metric; every metric needs one.
    pub tolerances: BTreeMap<String, f64>,
    #[serde(default)]
    pub throughput: Option<Throughput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedFrom {
    /// The data file's name (no folders: baselines are committed and shared).
    pub data: String,
    pub model_sha256: String,
    pub esmbench: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    pub sequences_per_second: f64,
    /// A run slower than sequences_per_second * (1 - relative_tolerance) regresses.
    pub relative_tolerance: f64,
}

fn bad(path: &Path, what: String) -> Failure {
    Failure::usage(format!("baseline {}: {what}", path.display()))
}

impl Baseline {
    /// Reads and checks a baseline; every problem is a usage error naming the file, the place and the fix.
    pub fn load(path: &Path) -> Result<Baseline, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(path, format!("cannot be read ({e})\n  fix: check the path given to --baseline, or record one with --write-baseline"))
        })?;
        let baseline: Baseline = serde_json::from_str(&text).map_err(|e| {
            bad(path, format!("line {}, column {}: {e}\n  fix: keys are schema_version, recorded_from, n, threshold, metrics, tolerances, throughput {{sequences_per_second, relative_tolerance}}; re-record with --write-baseline", e.line(), e.column()))
        })?;
        baseline.check(path)?;
        Ok(baseline)
    }

    fn check(&self, path: &Path) -> Result<(), Failure> {
        if self.schema_version != BASELINE_SCHEMA_VERSION {
            return Err(bad(path, format!("schema_version {} is not {BASELINE_SCHEMA_VERSION}\n  fix: re-record it with this esmbench's --write-baseline", self.schema_version)));
        }
        if self.metrics.is_empty() && self.throughput.is_none() {
            return Err(bad(path, "compares nothing (no metrics, no throughput)\n  fix: record one with --write-baseline".into()));
        }
        for (name, value) in &self.metrics {
            if !SCALAR_METRICS.contains(&name.as_str()) {
                return Err(bad(
                    path,
                    format!(
                        "`{name}` is not a metric\n  fix: use {}",
                        SCALAR_METRICS.join(", ")
                    ),
                ));
            }
            if !value.is_finite() {
                return Err(bad(
                    path,
                    format!("metrics.{name} is {value}\n  fix: use a finite number"),
                ));
            }
            match self.tolerances.get(name) {
                Some(t) if t.is_finite() && *t >= 0.0 => {}
                Some(t) => return Err(bad(path, format!("tolerances.{name} is {t}\n  fix: use a non-negative absolute tolerance such as {DEFAULT_TOLERANCE}"))),
                None => return Err(bad(path, format!("metrics.{name} has no tolerance\n  fix: add \"{name}\": {DEFAULT_TOLERANCE} under tolerances"))),
            }
        }
        if let Some(extra) = self
            .tolerances
            .keys()
            .find(|k| !self.metrics.contains_key(*k))
        {
            return Err(bad(path, format!("tolerances.{extra} has no metric value\n  fix: add metrics.{extra} or remove the tolerance")));
        }
        if let Some(t) = &self.throughput {
            let valid = t.sequences_per_second.is_finite()
                && t.sequences_per_second > 0.0
                && (0.0..1.0).contains(&t.relative_tolerance);
            if !valid {
                return Err(bad(path, "throughput needs sequences_per_second > 0 and relative_tolerance in [0, 1)\n  fix: e.g. {\"sequences_per_second\": 120.0, \"relative_tolerance\": 0.5}".into()));
            }
        }
        Ok(())
    }

    /// A baseline from a complete report: every defined metric with `tolerance`, and throughput when
    /// `throughput_tolerance` is given.
    pub fn from_report(
        report: &Report,
        tolerance: f64,
        throughput_tolerance: Option<f64>,
    ) -> Result<Baseline, Failure> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(Failure::usage(format!("--tolerance {tolerance} is not a non-negative number\n  fix: e.g. --tolerance {DEFAULT_TOLERANCE}")));
        }
        if let Some(r) = throughput_tolerance.filter(|r| !(0.0..1.0).contains(r)) {
            return Err(Failure::usage(format!(
                "--throughput-tolerance {r} is not in [0, 1)\n  fix: e.g. 0.5 (fail when more than 50% slower)"
            )));
        }
        usable(report)?;
        let m = report.metrics.as_ref();
        let metrics: BTreeMap<String, f64> = SCALAR_METRICS
            .iter()
            .filter_map(|&name| Some((name.to_string(), m?.get(name)?)))
            .collect();
        let throughput = match throughput_tolerance {
            Some(relative_tolerance) => {
                has_throughput(
                    report,
                    "drop --throughput-tolerance (a `metrics` report records no speed)",
                )?;
                Some(Throughput {
                    sequences_per_second: report.performance.sequences_per_second,
                    relative_tolerance,
                })
            }
            None => None,
        };
        if metrics.is_empty() && throughput.is_none() {
            return Err(Failure::usage(
                "the report has no metrics to record (no labels)\n  fix: score labeled data, or record throughput with --throughput-tolerance R",
            ));
        }
        Ok(Baseline {
            schema_version: BASELINE_SCHEMA_VERSION,
            recorded_from: Some(RecordedFrom {
                data: file_name(&report.data.path),
                model_sha256: report.model.sha256.clone(),
                esmbench: report.tool.version.clone(),
            }),
            n: m.map(|m| m.n),
            threshold: m.map(|m| m.threshold),
            tolerances: metrics.keys().map(|k| (k.clone(), tolerance)).collect(),
            metrics,
            throughput,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a baseline always serializes");
        bytes.push(b'\n');
        bytes
    }
}

fn file_name(path: &str) -> String {
    path.rsplit(['/', '\\']).next().unwrap_or(path).to_string()
}

fn usable(report: &Report) -> Result<(), Failure> {
    if report.status != "complete" {
        return Err(Failure::input(format!(
            "the report's status is `{}`, not `complete`: there is nothing to gate\n  fix: gate a finished run",
            report.status
        )));
    }
    Ok(())
}

fn has_throughput(report: &Report, fix: &str) -> Result<(), Failure> {
    if report.command == "metrics" {
        return Err(Failure::usage(format!(
            "this report was made by `esmbench metrics` and has no throughput\n  fix: {fix}"
        )));
    }
    Ok(())
}

/// A baseline's threshold-dependent metrics compare only at the threshold they were recorded at; checked
/// before a run when its threshold is known then, and again on the report.
pub fn check_threshold(
    baseline: &Baseline,
    threshold: f64,
    baseline_name: &str,
) -> Result<(), Failure> {
    match baseline
        .threshold
        .filter(|&t| !baseline.metrics.is_empty() && (t - threshold).abs() > SLACK)
    {
        Some(t) => Err(Failure::usage(format!(
            "{baseline_name} was recorded at threshold {t}, this run's threshold is {threshold}: threshold-dependent metrics are not comparable\n  \
fix: run at threshold {t} (--threshold or --assay), or re-record the baseline"
        ))),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Within,
    Better,
    Regression,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub baseline: f64,
    pub current: Option<f64>,
    /// Absolute for metrics; for throughput, the slowest allowed value.
    pub allowed: String,
    pub verdict: Verdict,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub lines: Vec<Line>,
}

impl Comparison {
    pub fn regressions(&self) -> Vec<&Line> {
        self.lines
            .iter()
            .filter(|l| l.verdict == Verdict::Regression)
            .collect()
    }

    /// The table a person reads in a CI log.
    pub fn render(&self, report: &str, baseline: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "regression gate: {report} against {baseline}");
        let _ = writeln!(
            s,
            "  {:<20} {:>12} {:>12} {:>10} {:>14}  verdict",
            "metric", "baseline", "this run", "change", "allowed"
        );
        for l in &self.lines {
            let current = l
                .current
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "n/a".into());
            let change = l
                .current
                .map(|v| format!("{:+.4}", v - l.baseline))
                .unwrap_or_else(|| "-".into());
            let verdict = match l.verdict {
                Verdict::Within => "ok",
                Verdict::Better => "better",
                Verdict::Regression => "REGRESSION",
            };
            let _ = writeln!(
                s,
                "  {:<20} {:>12.4} {:>12} {:>10} {:>14}  {verdict}{}",
                l.name,
                l.baseline,
                current,
                change,
                l.allowed,
                if l.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", l.note)
                }
            );
        }
        let regressions = self.regressions();
        if regressions.is_empty() {
            let _ = writeln!(s, "gate passed: nothing is worse than the baseline allows");
        } else {
            let _ = writeln!(
                s,
                "gate FAILED: {} regression(s): {}",
                regressions.len(),
                regressions
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        s
    }

    /// The exit-3 error when something regressed.
    pub fn failure(&self, baseline: &str) -> Option<Failure> {
        let regressions = self.regressions();
        (!regressions.is_empty()).then(|| Failure {
            kind: FailureKind::Regression,
            message: format!(
                "regression gate failed against {baseline}: {}\n  fix: find what made it worse; if the change is intended, re-record the baseline with --write-baseline",
                regressions
                    .iter()
                    .map(|l| match l.current {
                        Some(v) => format!("{} {:.4} vs baseline {:.4} (allowed {})", l.name, v, l.baseline, l.allowed),
                        None => format!("{} is undefined ({})", l.name, l.note),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })
    }
}

/// Compares a complete report with a baseline; mismatched data or threshold is a usage error, not a verdict.
pub fn compare(
    report: &Report,
    baseline: &Baseline,
    baseline_name: &str,
) -> Result<Comparison, Failure> {
    usable(report)?;
    let mut lines = Vec::new();
    if !baseline.metrics.is_empty() {
        let Some(m) = report.metrics.as_ref() else {
            return Err(Failure::input(format!("the report has no metrics ({}), but {baseline_name} compares metrics\n  fix: score labeled data", report.metrics_note.as_deref().unwrap_or("no labels"))));
        };
        if let Some(n) = baseline.n.filter(|&n| n != m.n) {
            return Err(Failure::usage(format!("{baseline_name} was recorded on {n} labeled rows, this report has {}: it describes other data\n  fix: pass the baseline recorded for this data set, or re-record it with --write-baseline", m.n)));
        }
        check_threshold(baseline, m.threshold, baseline_name)?;
        for name in SCALAR_METRICS {
            let Some(&base) = baseline.metrics.get(name) else {
                continue;
            };
            let tol = baseline.tolerances[name];
            let current = m.get(name);
            let (verdict, note) = match current {
                None => (
                    Verdict::Regression,
                    m.undefined
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| "undefined".into()),
                ),
                Some(v) => {
                    // Positive when this run is better.
                    let gain = if lower_is_better(name) {
                        base - v
                    } else {
                        v - base
                    };
                    let verdict = if gain < -(tol + SLACK) {
                        Verdict::Regression
                    } else if gain > tol + SLACK {
                        Verdict::Better
                    } else {
                        Verdict::Within
                    };
                    let note = match (verdict, lower_is_better(name)) {
                        (Verdict::Regression, true) => "higher is worse",
                        (Verdict::Better, _) => "consider re-recording the baseline",
                        _ => "",
                    };
                    (verdict, note.to_string())
                }
            };
            lines.push(Line {
                name: name.to_string(),
                baseline: base,
                current,
                allowed: format!("{}{tol}", if lower_is_better(name) { "+" } else { "-" }),
                verdict,
                note,
            });
        }
    }
    if let Some(t) = &baseline.throughput {
        has_throughput(
            report,
            "gate throughput on an `esmbench test` report, or drop the throughput block from the baseline",
        )?;
        let v = report.performance.sequences_per_second;
        let floor = t.sequences_per_second * (1.0 - t.relative_tolerance);
        let verdict = if v < floor - SLACK {
            Verdict::Regression
        } else if v > t.sequences_per_second * (1.0 + t.relative_tolerance) {
            Verdict::Better
        } else {
            Verdict::Within
        };
        lines.push(Line {
            name: "sequences_per_second".into(),
            baseline: t.sequences_per_second,
            current: Some(v),
            allowed: format!(">= {floor:.1}"),
            verdict,
            note: format!("relative tolerance {}", t.relative_tolerance),
        });
    }
    Ok(Comparison { lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(accuracy: f64, log_loss: f64, sps: f64) -> Report {
        let mut m = crate::metrics::compute(&[1, 0, 1, 0], &[0.9, 0.1, 0.8, 0.3], 0.5);
        m.accuracy = Some(accuracy);
        m.log_loss = Some(log_loss);
        let mut r = crate::report::tests::sample_report();
        r.metrics = Some(m);
        r.performance.sequences_per_second = sps;
        r
    }

    #[test]
    fn worse_beyond_tolerance_regresses_and_losses_count_upwards() {
        let base = Baseline::from_report(&report(0.80, 0.40, 100.0), 0.01, Some(0.5)).unwrap();
        let same = compare(&report(0.80, 0.40, 100.0), &base, "b").unwrap();
        assert!(same.regressions().is_empty());
        let edge = compare(&report(0.79, 0.41, 50.0), &base, "b").unwrap();
        assert!(edge.regressions().is_empty(), "{edge:?}");
        let worse = compare(&report(0.78, 0.42, 40.0), &base, "b").unwrap();
        let names: Vec<&str> = worse
            .regressions()
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["accuracy", "log_loss", "sequences_per_second"]);
        assert_eq!(
            worse.failure("b").unwrap().kind.exit_code(),
            crate::error::EXIT_REGRESSION
        );
        let better = compare(&report(0.9, 0.1, 400.0), &base, "b").unwrap();
        assert!(better.regressions().is_empty());
        assert!(better.lines.iter().any(|l| l.verdict == Verdict::Better));
        assert!(worse.render("r", "b").contains("REGRESSION"));
    }

    #[test]
    fn an_undefined_metric_regresses_and_other_data_is_a_usage_error() {
        let base = Baseline::from_report(&report(0.8, 0.4, 1.0), 0.01, None).unwrap();
        let mut r = report(0.8, 0.4, 1.0);
        r.metrics.as_mut().unwrap().mcc = None;
        let c = compare(&r, &base, "b").unwrap();
        assert_eq!(c.regressions()[0].name, "mcc");
        r.metrics.as_mut().unwrap().n = 5;
        let e = compare(&r, &base, "b").unwrap_err();
        assert_eq!(e.kind, FailureKind::Usage);
        assert!(e.message.contains("other data"), "{}", e.message);
    }

    #[test]
    fn bad_baselines_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        for (text, expected) in [
            ("{\"schema_version\": 1, \"metrics\": {\"acc\": 0.8}, \"tolerances\": {\"acc\": 0.1}}", "`acc` is not a metric"),
            ("{\"schema_version\": 1, \"metrics\": {\"f1\": 0.8}, \"tolerances\": {}}", "metrics.f1 has no tolerance"),
            ("{\"schema_version\": 1, \"metrics\": {\"f1\": 0.8}, \"tolerances\": {\"f1\": -1}}", "tolerances.f1 is -1"),
            ("{\"schema_version\": 1,\n \"metrics\": {}, \"tolerance\": {}}", "line 2"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Baseline::load(&path).unwrap_err();
            assert!(e.message.contains(expected), "{text}: {}", e.message);
            assert!(e.message.contains("fix:"), "{}", e.message);
        }
    }
}
