//! ROC and precision-recall points and per-class score histograms, thinned to what a plot needs.
//!
//! They live in report.json so that every plot (and report.html) is a function of the report alone; a
//! 141k-row set would otherwise put 141k points in it. Thinning keeps a point once it is 1/500 of the axis away
//! from the last kept one (plus both ends), which no plot at a readable size can tell from the full curve.

use serde::{Deserialize, Serialize};

use super::sweep;

/// Bins of the score histograms over [0, 1].
pub const HISTOGRAM_BINS: usize = 20;
const MIN_STEP: f64 = 1.0 / 500.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curves {
    /// [false positive rate, true positive rate] from [0, 0] to [1, 1]; null unless both classes are present.
    pub roc: Option<Vec<[f64; 2]>>,
    /// [recall, precision] at each kept threshold, highest score first; null without positive labels.
    pub pr: Option<Vec<[f64; 2]>>,
    pub histogram: Histogram,
}

/// Row counts per score bin and class; scores outside [0, 1] fall into the end bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    /// HISTOGRAM_BINS + 1 bin edges.
    pub edges: Vec<f64>,
    pub negatives: Vec<u64>,
    pub positives: Vec<u64>,
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn thin(points: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    let mut kept: Vec<[f64; 2]> = Vec::new();
    let last = points.len().saturating_sub(1);
    for (k, p) in points.into_iter().enumerate() {
        let far = kept
            .last()
            .is_none_or(|q| (p[0] - q[0]).abs() >= MIN_STEP || (p[1] - q[1]).abs() >= MIN_STEP);
        if far || k == last {
            kept.push([round6(p[0]), round6(p[1])]);
        }
    }
    kept
}

pub fn curves(labels: &[u8], scores: &[f64]) -> Curves {
    let p = labels.iter().filter(|&&y| y == 1).count() as f64;
    let n = labels.len() as f64 - p;
    let points = if p > 0.0 {
        sweep(labels, scores)
    } else {
        Vec::new()
    };
    let roc = (p > 0.0 && n > 0.0).then(|| {
        let mut roc = vec![[0.0, 0.0]];
        roc.extend(points.iter().map(|&(fps, tps)| [fps / n, tps / p]));
        thin(roc)
    });
    let pr = (p > 0.0).then(|| {
        thin(
            points
                .iter()
                .map(|&(fps, tps)| [tps / p, tps / (tps + fps)])
                .collect(),
        )
    });
    let mut histogram = Histogram {
        edges: (0..=HISTOGRAM_BINS)
            .map(|k| k as f64 / HISTOGRAM_BINS as f64)
            .collect(),
        negatives: vec![0; HISTOGRAM_BINS],
        positives: vec![0; HISTOGRAM_BINS],
    };
    for (&y, &s) in labels.iter().zip(scores) {
        let bin = ((s * HISTOGRAM_BINS as f64).floor().max(0.0) as usize).min(HISTOGRAM_BINS - 1);
        if y == 1 {
            histogram.positives[bin] += 1;
        } else {
            histogram.negatives[bin] += 1;
        }
    }
    Curves { roc, pr, histogram }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_curves_keep_every_point_and_end_at_the_corners() {
        let c = curves(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]);
        // scikit-learn's roc_curve(drop_intermediate=False) on its documented example.
        assert_eq!(
            c.roc.unwrap(),
            vec![[0.0, 0.0], [0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0]]
        );
        let pr = c.pr.unwrap();
        assert_eq!(pr[0], [0.5, 1.0]);
        assert_eq!(*pr.last().unwrap(), [1.0, 0.5]);
        assert_eq!(c.histogram.negatives.iter().sum::<u64>(), 2);
        assert_eq!(c.histogram.positives[16], 1); // 0.8 is in [0.80, 0.85)
        assert_eq!(c.histogram.edges.len(), HISTOGRAM_BINS + 1);
    }

    #[test]
    fn large_curves_are_thinned_and_one_class_has_no_roc() {
        let n = 100_000;
        let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 3 == 0)).collect();
        let scores: Vec<f64> = (0..n).map(|i| (i as f64 * 0.618).fract()).collect();
        let c = curves(&labels, &scores);
        let roc = c.roc.unwrap();
        assert!(roc.len() < 1100, "{} points", roc.len());
        assert_eq!(*roc.last().unwrap(), [1.0, 1.0]);
        let one = curves(&[1, 1], &[0.2, 1.0]);
        assert!(one.roc.is_none());
        assert_eq!(one.histogram.positives[HISTOGRAM_BINS - 1], 1); // 1.0 lands in the last bin
        assert!(curves(&[0, 0], &[0.2, 0.3]).pr.is_none());
    }
}
