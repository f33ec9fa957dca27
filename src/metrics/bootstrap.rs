//! Seeded percentile-bootstrap intervals for accuracy, ROC-AUC, PR-AUC and F1.
//!
//! On an 86-antibody test set one accuracy number hides a spread of about ten points; the interval shows it.
//! A resample draws n row indices with replacement from SplitMix64 (`draw % n`); each metric is computed on every
//! resample where it is defined (ROC-AUC needs both classes, ...) and the interval is numpy's default
//! (linear) percentile at 2.5 and 97.5 of those values. scripts/sklearn_metrics_reference.py repeats exactly this
//! with scikit-learn, and the tests require equality to 1e-9.
//!
//! A resample is held as a count per original row, so the rows are sorted by score once and every resample is
//! one linear pass: 1000 resamples of 141k rows take about a second, not a thousand sorts.

use serde::{Deserialize, Serialize};

use super::rng::SplitMix64;
use super::{ap_area, predict, roc_area};

pub const DEFAULT_RESAMPLES: usize = 1000;
/// Fixed, so the same predictions always give the same interval; recorded in the report.
pub const DEFAULT_SEED: u64 = 0;
pub const CONFIDENCE: f64 = 0.95;
/// Enough for any test set; beyond it the bootstrap would take minutes and say nothing new.
pub const MAX_RESAMPLES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervals {
    /// Always "percentile bootstrap".
    pub method: String,
    pub confidence: f64,
    pub resamples: u64,
    pub seed: u64,
    pub accuracy: Interval,
    pub roc_auc: Interval,
    pub pr_auc: Interval,
    pub f1: Interval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// Resamples in which the metric was defined (ROC-AUC is not when a resample holds one class).
    pub defined: u64,
}

impl Intervals {
    /// The interval of a metric by its report name, if it has one.
    pub fn get(&self, name: &str) -> Option<&Interval> {
        match name {
            "accuracy" => Some(&self.accuracy),
            "roc_auc" => Some(&self.roc_auc),
            "pr_auc" => Some(&self.pr_auc),
            "f1" => Some(&self.f1),
            _ => None,
        }
    }
}

/// numpy.percentile's default ("linear"): interpolate between the order statistics around (m - 1) * q.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    let t = h - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * t)
}

fn interval(mut values: Vec<f64>) -> Interval {
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Interval {
        low: percentile(&values, tail),
        high: percentile(&values, 1.0 - tail),
        defined: values.len() as u64,
    }
}

/// Bootstrap intervals, or why there are none.
pub fn intervals(
    labels: &[u8],
    scores: &[f64],
    threshold: f64,
    resamples: usize,
    seed: u64,
) -> Result<Intervals, String> {
    if resamples == 0 {
        return Err("the bootstrap is off (--bootstrap 0)".into());
    }
    let n = labels.len();
    if n == 0 {
        return Err("no labeled rows".into());
    }
    let positive: Vec<bool> = labels.iter().map(|&y| y == 1).collect();
    let predicted: Vec<bool> = scores.iter().map(|&p| predict(p, threshold) == 1).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // last_of_tie[k]: order[k] ends a run of equal scores, where the ROC and PR sweeps take a point.
    let last_of_tie: Vec<bool> = (0..n)
        .map(|k| k + 1 == n || scores[order[k + 1]] != scores[order[k]])
        .collect();

    let mut rng = SplitMix64::new(seed);
    let mut counts = vec![0u32; n];
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(n);
    let (mut acc, mut roc, mut ap, mut f1) = (
        Vec::with_capacity(resamples),
        Vec::with_capacity(resamples),
        Vec::with_capacity(resamples),
        Vec::with_capacity(resamples),
    );
    for _ in 0..resamples {
        counts.fill(0);
        for _ in 0..n {
            counts[rng.below(n as u64) as usize] += 1;
        }
        let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..n {
            let w = u64::from(counts[i]);
            match (positive[i], predicted[i]) {
                (true, true) => tp += w,
                (true, false) => fn_ += w,
                (false, true) => fp += w,
                (false, false) => tn += w,
            }
        }
        acc.push((tp + tn) as f64 / n as f64);
        if 2 * tp + fp + fn_ > 0 {
            f1.push(2.0 * tp as f64 / (2 * tp + fp + fn_) as f64);
        }
        let (p, neg) = (tp + fn_, tn + fp);
        if p == 0 {
            continue;
        }
        // Weighted sweep: a run of tied scores none of whose rows was drawn is not in the resample at all.
        points.clear();
        let (mut tps, mut fps, mut run_weight) = (0u64, 0u64, 0u32);
        for (k, &i) in order.iter().enumerate() {
            let w = counts[i];
            if positive[i] {
                tps += u64::from(w);
            } else {
                fps += u64::from(w);
            }
            run_weight += w;
            if last_of_tie[k] {
                if run_weight > 0 {
                    points.push((fps as f64, tps as f64));
                }
                run_weight = 0;
            }
        }
        ap.push(ap_area(points.iter().copied(), p as f64));
        if neg > 0 {
            roc.push(roc_area(points.iter().copied(), p as f64, neg as f64));
        }
    }
    Ok(Intervals {
        method: "percentile bootstrap".into(),
        confidence: CONFIDENCE,
        resamples: resamples as u64,
        seed,
        accuracy: interval(acc),
        roc_auc: interval(roc),
        pr_auc: interval(ap),
        f1: interval(f1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{average_precision, compute, roc_auc};

    fn data(n: usize, seed: u64) -> (Vec<u8>, Vec<f64>) {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let y = u8::from(rng.unit() < 0.4);
                let (a, b) = (rng.below(21) as f64 / 20.0, rng.below(21) as f64 / 20.0);
                (y, if y == 1 { a.max(b) } else { a.min(b) })
            })
            .unzip()
    }

    #[test]
    fn numpy_linear_percentile() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) == [1.075, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&v, 0.025).unwrap() - 1.075).abs() < 1e-12);
        assert!((percentile(&v, 0.975).unwrap() - 3.925).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_weighted_pass_equals_scoring_each_resample_from_scratch() {
        // Materialize a few resamples with the same draws and score them with the plain (sorting) functions.
        let (y, p) = data(120, 3);
        let resamples = 5;
        let fast = intervals(&y, &p, 0.5, resamples, 11).unwrap();
        let mut rng = SplitMix64::new(11);
        let (mut acc, mut roc, mut ap) = (vec![], vec![], vec![]);
        for _ in 0..resamples {
            let idx: Vec<usize> = (0..y.len())
                .map(|_| rng.below(y.len() as u64) as usize)
                .collect();
            let yb: Vec<u8> = idx.iter().map(|&i| y[i]).collect();
            let pb: Vec<f64> = idx.iter().map(|&i| p[i]).collect();
            acc.push(compute(&yb, &pb, 0.5).accuracy.unwrap());
            roc.push(roc_auc(&yb, &pb).unwrap());
            ap.push(average_precision(&yb, &pb).unwrap());
        }
        for (values, got) in [
            (acc, &fast.accuracy),
            (roc, &fast.roc_auc),
            (ap, &fast.pr_auc),
        ] {
            let want = interval(values);
            assert!((want.low.unwrap() - got.low.unwrap()).abs() < 1e-12);
            assert!((want.high.unwrap() - got.high.unwrap()).abs() < 1e-12);
        }
    }

    #[test]
    fn the_accuracy_interval_has_the_binomial_width_and_repeats_with_its_seed() {
        // For n rows and accuracy a, the normal approximation gives a 95% width of 2 * 1.96 * sqrt(a(1-a)/n).
        let (y, p) = data(400, 5);
        let a = compute(&y, &p, 0.5).accuracy.unwrap();
        let first = intervals(&y, &p, 0.5, 2000, 1).unwrap();
        let (lo, hi) = (first.accuracy.low.unwrap(), first.accuracy.high.unwrap());
        let expected = 2.0 * 1.96 * (a * (1.0 - a) / 400.0).sqrt();
        assert!(lo < a && a < hi);
        assert!(
            ((hi - lo) / expected - 1.0).abs() < 0.15,
            "width {} vs {expected}",
            hi - lo
        );
        assert_eq!(first, intervals(&y, &p, 0.5, 2000, 1).unwrap());
        assert_ne!(first, intervals(&y, &p, 0.5, 2000, 2).unwrap());
    }

    #[test]
    fn degenerate_inputs_give_reasons_or_empty_intervals_not_nan() {
        assert!(intervals(&[], &[], 0.5, 100, 0)
            .unwrap_err()
            .contains("no labeled rows"));
        assert!(intervals(&[1, 0], &[0.3, 0.6], 0.5, 0, 0)
            .unwrap_err()
            .contains("off"));
        let one_class = intervals(&[1, 1, 1], &[0.2, 0.5, 0.9], 0.5, 50, 0).unwrap();
        assert_eq!(one_class.roc_auc.defined, 0);
        assert_eq!(one_class.roc_auc.low, None);
        assert_eq!(one_class.accuracy.defined, 50);
        let json = serde_json::to_string(&one_class).unwrap();
        assert!(!json.contains("NaN") && !json.contains("nan"), "{json}");
    }
}
