//! Binary-classification metrics with scikit-learn's definitions, as pure functions of labels and scores.

pub mod bootstrap;
pub mod curves;
pub mod rng;
pub mod threshold;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use bootstrap::{Interval, Intervals};
pub use curves::{Curves, Histogram};

/// Counts at a threshold; a row is positive when its probability is above the threshold
/// (scikit-learn's `predict` at 0.5 for logistic regression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tn: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tp: u64,
}

pub fn predict(probability: f64, threshold: f64) -> u8 {
    u8::from(probability > threshold)
}

pub fn confusion(labels: &[u8], probabilities: &[f64], threshold: f64) -> Confusion {
    let mut c = Confusion::default();
    for (&y, &p) in labels.iter().zip(probabilities) {
        match (y, predict(p, threshold)) {
            (0, 0) => c.tn += 1,
            (0, _) => c.fp += 1,
            (_, 0) => c.fn_ += 1,
            _ => c.tp += 1,
        }
    }
    c
}

/// The metrics block of the report; a metric that is undefined for the data is null, with its reason in `undefined`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub n: u64,
    pub positives: u64,
    pub negatives: u64,
    pub threshold: f64,
    pub accuracy: Option<f64>,
    pub balanced_accuracy: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub specificity: Option<f64>,
    pub f1: Option<f64>,
    pub mcc: Option<f64>,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub brier: Option<f64>,
    pub log_loss: Option<f64>,
    /// [[tn, fp], [fn, tp]], as scikit-learn's confusion_matrix.
    pub confusion_matrix: [[u64; 2]; 2],
    /// Percentile-bootstrap 95% intervals; null when the bootstrap is off (`undefined.intervals` says so).
    pub intervals: Option<Intervals>,
    /// ROC and precision-recall points and per-class score histograms, thinned for plotting (the metrics above
    /// are computed from every row, never from these).
    pub curves: Curves,
    pub undefined: BTreeMap<String, String>,
}

/// The scalar metrics by name, in report order: what tables print and what the regression gate compares.
pub const SCALAR_METRICS: [&str; 11] = [
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "mcc",
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
];

/// Brier score and log loss are losses: lower is better.
pub fn lower_is_better(name: &str) -> bool {
    matches!(name, "brier" | "log_loss")
}

impl Metrics {
    /// A scalar metric by its report name; None for an unknown name or an undefined value.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "accuracy" => self.accuracy,
            "balanced_accuracy" => self.balanced_accuracy,
            "precision" => self.precision,
            "recall" => self.recall,
            "specificity" => self.specificity,
            "f1" => self.f1,
            "mcc" => self.mcc,
            "roc_auc" => self.roc_auc,
            "pr_auc" => self.pr_auc,
            "brier" => self.brier,
            "log_loss" => self.log_loss,
            _ => None,
        }
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Descending-score sweep: cumulative (false positives, true positives) at each distinct score.
pub(crate) fn sweep(labels: &[u8], scores: &[f64]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = Vec::new();
    let (mut fps, mut tps) = (0f64, 0f64);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 1 {
            tps += 1.0;
        } else {
            fps += 1.0;
        }
        let last_of_tie = k + 1 == order.len() || scores[order[k + 1]] != scores[i];
        if last_of_tie {
            points.push((fps, tps));
        }
    }
    points
}

/// Trapezoidal area under (fps/n, tps/p) from the sweep's points; tied scores form one step (a diagonal).
fn roc_area(points: impl IntoIterator<Item = (f64, f64)>, p: f64, n: f64) -> f64 {
    let (mut area, mut prev_fpr, mut prev_tpr) = (0.0, 0.0, 0.0);
    for (fps, tps) in points {
        let (fpr, tpr) = (fps / n, tps / p);
        area += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
        prev_fpr = fpr;
        prev_tpr = tpr;
    }
    area
}

/// Sum over the sweep's points of (R_k - R_{k-1}) * P_k.
fn ap_area(points: impl IntoIterator<Item = (f64, f64)>, p: f64) -> f64 {
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    for (fps, tps) in points {
        let recall = tps / p;
        ap += (recall - prev_recall) * (tps / (tps + fps));
        prev_recall = recall;
    }
    ap
}

/// Area under the ROC curve; tied scores form one step (a diagonal), as in scikit-learn's roc_auc_score.
pub fn roc_auc(labels: &[u8], scores: &[f64]) -> Option<f64> {
    let p = labels.iter().filter(|&&y| y == 1).count() as f64;
    let n = labels.len() as f64 - p;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    Some(roc_area(sweep(labels, scores), p, n))
}

/// Average precision: sum over distinct thresholds of (R_k - R_{k-1}) * P_k, scikit-learn's average_precision_score.
pub fn average_precision(labels: &[u8], scores: &[f64]) -> Option<f64> {
    let p = labels.iter().filter(|&&y| y == 1).count() as f64;
    if p == 0.0 {
        return None;
    }
    Some(ap_area(sweep(labels, scores), p))
}

/// Metrics plus bootstrap intervals (`resamples` = 0 turns the bootstrap off): what a report carries.
pub fn evaluate(labels: &[u8], probabilities: &[f64], threshold: f64, resamples: usize) -> Metrics {
    let mut metrics = compute(labels, probabilities, threshold);
    match bootstrap::intervals(
        labels,
        probabilities,
        threshold,
        resamples,
        bootstrap::DEFAULT_SEED,
    ) {
        Ok(intervals) => metrics.intervals = Some(intervals),
        Err(reason) => {
            metrics.undefined.insert("intervals".into(), reason);
        }
    }
    metrics
}

/// All metrics for labeled rows. `labels` are 0/1.
pub fn compute(labels: &[u8], probabilities: &[f64], threshold: f64) -> Metrics {
    let c = confusion(labels, probabilities, threshold);
    let n = labels.len() as u64;
    let positives = c.tp + c.fn_;
    let negatives = c.tn + c.fp;
    let mut undefined = BTreeMap::new();
    let mut note = |name: &str, value: Option<f64>, reason: &str| {
        if value.is_none() {
            undefined.insert(name.to_string(), reason.to_string());
        }
        value
    };
    let accuracy = note("accuracy", ratio(c.tp + c.tn, n), "no labeled rows");
    let precision = note(
        "precision",
        ratio(c.tp, c.tp + c.fp),
        "no row was predicted positive",
    );
    let recall = note("recall", ratio(c.tp, positives), "no positive labels");
    let specificity = note("specificity", ratio(c.tn, negatives), "no negative labels");
    let balanced_accuracy = note(
        "balanced_accuracy",
        recall.zip(specificity).map(|(r, s)| (r + s) / 2.0),
        "needs both classes among the labels",
    );
    let f1 = note(
        "f1",
        (2 * c.tp + c.fp + c.fn_ > 0).then(|| 2.0 * c.tp as f64 / (2 * c.tp + c.fp + c.fn_) as f64),
        "no positive labels and no positive predictions",
    );
    let mcc_den = ((c.tp + c.fp) as f64)
        * ((c.tp + c.fn_) as f64)
        * ((c.tn + c.fp) as f64)
        * ((c.tn + c.fn_) as f64);
    let mcc = note(
        "mcc",
        (mcc_den > 0.0)
            .then(|| ((c.tp as f64 * c.tn as f64) - (c.fp as f64 * c.fn_ as f64)) / mcc_den.sqrt()),
        "a row or column of the confusion matrix is empty (one class, or one predicted class)",
    );
    let roc = note(
        "roc_auc",
        roc_auc(labels, probabilities),
        "needs both classes among the labels",
    );
    let pr = note(
        "pr_auc",
        average_precision(labels, probabilities),
        "no positive labels",
    );
    let brier = note(
        "brier",
        (n > 0).then(|| {
            labels
                .iter()
                .zip(probabilities)
                .map(|(&y, &p)| (p - f64::from(y)).powi(2))
                .sum::<f64>()
                / n as f64
        }),
        "no labeled rows",
    );
    let log_loss = note(
        "log_loss",
        (positives > 0 && negatives > 0).then(|| {
            // scikit-learn clips to [eps, 1 - eps] with the float64 machine epsilon.
            let eps = f64::EPSILON;
            let total: f64 = labels
                .iter()
                .zip(probabilities)
                .map(|(&y, &p)| {
                    let p = p.clamp(eps, 1.0 - eps);
                    if y == 1 {
                        -p.ln()
                    } else {
                        -(1.0 - p).ln()
                    }
                })
                .sum();
            total / n as f64
        }),
        "needs both classes among the labels",
    );
    Metrics {
        n,
        positives,
        negatives,
        threshold,
        accuracy,
        balanced_accuracy,
        precision,
        recall,
        specificity,
        f1,
        mcc,
        roc_auc: roc,
        pr_auc: pr,
        brier,
        log_loss,
        confusion_matrix: [[c.tn, c.fp], [c.fn_, c.tp]],
        intervals: None,
        curves: curves::curves(labels, probabilities),
        undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn a_hand_computed_case() {
        // y:  1    0    1    1    0    0    1    0
        // p: .9   .8   .7   .6   .4   .3   .2   .1  -> at 0.5: tp=3 fp=1 fn=1 tn=3
        let y = [1, 0, 1, 1, 0, 0, 1, 0];
        let p = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1];
        let m = compute(&y, &p, 0.5);
        assert_eq!(m.confusion_matrix, [[3, 1], [1, 3]]);
        assert!(close(m.accuracy, 0.75));
        assert!(close(m.precision, 0.75));
        assert!(close(m.recall, 0.75));
        assert!(close(m.specificity, 0.75));
        assert!(close(m.f1, 0.75));
        assert!(close(m.mcc, 0.5)); // (9 - 1) / sqrt(4^4) = 8/16
                                    // Pairs (pos, neg) ranked correctly: 0.9>all 4; 0.7>3; 0.6>3; 0.2>1 -> 11 of 16.
        assert!(close(m.roc_auc, 11.0 / 16.0));
        // AP = 1/4*(1/1) + 1/4*(2/3) + 1/4*(3/4) + 1/4*(4/7)
        assert!(close(m.pr_auc, 0.25 * (1.0 + 2.0 / 3.0 + 0.75 + 4.0 / 7.0)));
        let brier = [0.01, 0.64, 0.09, 0.16, 0.16, 0.09, 0.64, 0.01]
            .iter()
            .sum::<f64>()
            / 8.0;
        assert!(close(m.brier, brier));
        assert!(m.undefined.is_empty());
    }

    #[test]
    fn tied_scores_count_half_in_roc_auc() {
        // One positive and one negative with equal scores: AUC 0.5; AP = precision at the tie = 0.5.
        assert!(close(roc_auc(&[1, 0], &[0.3, 0.3]), 0.5));
        assert!(close(average_precision(&[1, 0], &[0.3, 0.3]), 0.5));
        // y=[0,0,1,1], s=[.1,.4,.35,.8] is scikit-learn's documented example: 0.75 and AP 0.8333...
        assert!(close(roc_auc(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]), 0.75));
        assert!(close(
            average_precision(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]),
            0.5 + 0.5 * 2.0 / 3.0
        ));
    }

    #[test]
    fn one_class_gives_nulls_with_reasons_not_nan() {
        let m = compute(&[1, 1, 1], &[0.9, 0.2, 0.7], 0.5);
        assert!(close(m.accuracy, 2.0 / 3.0));
        assert_eq!(m.roc_auc, None);
        assert_eq!(m.specificity, None);
        assert_eq!(m.mcc, None);
        assert!(m.undefined["roc_auc"].contains("both classes"));
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("NaN"));
        let empty = compute(&[], &[], 0.5);
        assert_eq!(empty.accuracy, None);
    }

    #[test]
    fn all_negative_labels_and_predictions_leave_f1_precision_and_recall_undefined() {
        // tn = 3, tp = fp = fn = 0: 2tp / (2tp + fp + fn) is 0/0, as are tp/(tp+fp) and tp/(tp+fn); scikit-learn
        // warns and returns 0.0 for each. Accuracy and specificity are 3/3.
        let m = compute(&[0, 0, 0], &[0.1, 0.2, 0.4], 0.5);
        assert_eq!((m.f1, m.precision, m.recall), (None, None, None));
        assert!(m.undefined["f1"].contains("no positive labels and no positive predictions"));
        assert!(close(m.accuracy, 1.0) && close(m.specificity, 1.0));
        // One false positive makes F1 defined and 0: 2*0 / (0 + 1 + 0).
        let m = compute(&[0, 0, 0], &[0.1, 0.2, 0.9], 0.5);
        assert_eq!(m.f1, Some(0.0));
        assert_eq!(m.precision, Some(0.0));
    }

    #[test]
    fn the_threshold_is_strict() {
        assert_eq!(predict(0.5, 0.5), 0);
        assert_eq!(predict(0.5000001, 0.5), 1);
    }
}
