//! Stratified k-fold cross-validation of the head: one fit per fold on the other folds, the metrics module's
//! numbers on the held-out fold, and their mean and spread.

use anyhow::Result;
use serde::Serialize;

use crate::fit::folds::stratified_folds;
use crate::fit::logistic::{self, Samples, Settings};
use crate::metrics::{self, Metrics};

/// The metrics a fold reports, in the order they are shown.
pub const METRICS: [&str; 5] = ["accuracy", "roc_auc", "pr_auc", "f1", "mcc"];

/// The five numbers of one evaluation; null where the metric is undefined for that fold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub accuracy: Option<f64>,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub f1: Option<f64>,
    pub mcc: Option<f64>,
}

impl Scores {
    pub fn of(m: &Metrics) -> Scores {
        Scores {
            accuracy: m.accuracy,
            roc_auc: m.roc_auc,
            pr_auc: m.pr_auc,
            f1: m.f1,
            mcc: m.mcc,
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "accuracy" => self.accuracy,
            "roc_auc" => self.roc_auc,
            "pr_auc" => self.pr_auc,
            "f1" => self.f1,
            "mcc" => self.mcc,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldResult {
    /// 1-based, as people count folds.
    pub fold: usize,
    pub n_train: usize,
    pub n_test: usize,
    pub test_positives: u64,
    pub iterations: u64,
    pub scores: Scores,
}

/// Mean and standard deviation of one metric over the folds where it is defined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub mean: Option<f64>,
    /// Population standard deviation (numpy's std, ddof = 0), the usual `scores.std()` of cross_val_score.
    pub sd: Option<f64>,
    /// Folds where the metric is defined (MCC is undefined when a fold's predictions are all one class).
    pub folds_defined: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub accuracy: Spread,
    pub roc_auc: Spread,
    pub pr_auc: Spread,
    pub f1: Spread,
    pub mcc: Spread,
}

impl Summary {
    pub fn get(&self, name: &str) -> Option<&Spread> {
        match name {
            "accuracy" => Some(&self.accuracy),
            "roc_auc" => Some(&self.roc_auc),
            "pr_auc" => Some(&self.pr_auc),
            "f1" => Some(&self.f1),
            "mcc" => Some(&self.mcc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossValidation {
    pub folds: usize,
    pub seed: u64,
    pub threshold: f64,
    pub per_fold: Vec<FoldResult>,
    pub summary: Summary,
    /// The metrics of all held-out predictions pooled (each row predicted by the fit that did not see it).
    pub out_of_fold: Metrics,
}

fn spread(values: &[f64]) -> Spread {
    if values.is_empty() {
        return Spread {
            mean: None,
            sd: None,
            folds_defined: 0,
        };
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Spread {
        mean: Some(mean),
        sd: Some(variance.sqrt()),
        folds_defined: values.len(),
    }
}

/// Cross-validates on all `samples`. `folds` >= 2; each class needs at least `folds` members.
pub fn cross_validate(
    samples: &Samples,
    folds: usize,
    seed: u64,
    settings: &Settings,
    threshold: f64,
) -> Result<CrossValidation> {
    let labels: Vec<u8> = (0..samples.len()).map(|i| samples.label(i)).collect();
    let assignment = stratified_folds(&labels, folds, seed).map_err(|e| {
        anyhow::anyhow!("internal error: folds were not checked before cross-validation ({e:?})")
    })?;
    let mut out_of_fold = vec![f64::NAN; samples.len()];
    let mut per_fold = Vec::with_capacity(folds);
    for fold in 0..folds {
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..samples.len()).partition(|&i| assignment[i] == fold);
        let fitted = logistic::fit(samples, &train, settings)?;
        let test_labels: Vec<u8> = test.iter().map(|&i| labels[i]).collect();
        let probabilities: Vec<f64> = test
            .iter()
            .map(|&i| fitted.probability(samples.row(i)))
            .collect();
        for (&i, &p) in test.iter().zip(&probabilities) {
            out_of_fold[i] = p;
        }
        let m = metrics::compute(&test_labels, &probabilities, threshold);
        per_fold.push(FoldResult {
            fold: fold + 1,
            n_train: train.len(),
            n_test: test.len(),
            test_positives: m.positives,
            iterations: fitted.iterations,
            scores: Scores::of(&m),
        });
    }
    let metric = |name: &str| {
        let values: Vec<f64> = per_fold.iter().filter_map(|f| f.scores.get(name)).collect();
        spread(&values)
    };
    let summary = Summary {
        accuracy: metric("accuracy"),
        roc_auc: metric("roc_auc"),
        pr_auc: metric("pr_auc"),
        f1: metric("f1"),
        mcc: metric("mcc"),
    };
    Ok(CrossValidation {
        folds,
        seed,
        threshold,
        per_fold,
        summary,
        out_of_fold: metrics::compute(&labels, &out_of_fold, threshold),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_numpys_mean_and_population_sd() {
        let s = spread(&[0.5, 0.7, 0.9]);
        assert!((s.mean.unwrap() - 0.7).abs() < 1e-15);
        // numpy.std([0.5, 0.7, 0.9]) = sqrt(0.08 / 3)
        assert!((s.sd.unwrap() - (0.08f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(s.folds_defined, 3);
        assert_eq!(spread(&[]).mean, None);
    }

    #[test]
    fn every_row_is_held_out_exactly_once_and_scored_by_a_fit_that_never_saw_it() {
        // Two noisy clusters in 2-D: 30 rows, 12 positives.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..30u8 {
            let positive = i % 5 < 2;
            let jitter = f32::from(i % 7) * 0.3 - 0.9;
            let centre = if positive { 1.0 } else { -1.0 };
            x.extend([centre + jitter, 0.5 * jitter - centre * 0.2]);
            y.push(u8::from(positive));
        }
        let samples = Samples::new(&x, 2, &y).unwrap();
        let cv = cross_validate(&samples, 3, 1, &Settings::with_c(1.0), 0.5).unwrap();
        assert_eq!(cv.per_fold.len(), 3);
        assert_eq!(cv.per_fold.iter().map(|f| f.n_test).sum::<usize>(), 30);
        assert!(cv
            .per_fold
            .iter()
            .all(|f| f.n_train + f.n_test == 30 && f.test_positives == 4));
        assert_eq!(cv.out_of_fold.n, 30);
        assert!(cv.summary.accuracy.mean.unwrap() > 0.5);
        assert_eq!(
            Scores::of(&cv.out_of_fold).get("accuracy"),
            cv.out_of_fold.accuracy
        );
    }
}
