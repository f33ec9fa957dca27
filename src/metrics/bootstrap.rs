//! Seeded percentile-bootstrap intervals for accuracy, ROC-AUC, PR-AUC and F1.
//!
//! On an 86-antibody test set one accuracy number hides a spread of about ten points; the interval shows it.
//! The rows are sorted by descending score once (a stable sort: tied rows keep their file order). A resample draws
//! n positions in that order with replacement from SplitMix64, position = (draw * n) >> 64, and takes the rows
//! there; each metric is computed on every resample where it is defined (ROC-AUC needs both classes, ...) and the
//! interval is numpy's default (linear) percentile at 2.5 and 97.5 of those values.
//! scripts/sklearn_metrics_reference.py repeats exactly this with scikit-learn, and the tests require equality
//! to 1e-9.
//!
//! A resample is held as a count per position, so every resample is one linear pass instead of a sort; that pass
//! sums the ROC area in integers and folds average precision in as it goes, with no list of curve points.
//! Drawing positions rather than row indices is the same uniform resampling, and it saves a random lookup from
//! row to position on every draw, the larger part of the draw loop's time. Resamples are split across threads; each starts its stretch of the one SplitMix64 stream
//! by skipping ahead, so the intervals are the same on any number of threads.

use serde::{Deserialize, Serialize};

use super::predict;
use super::rng::SplitMix64;

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

/// Below this many draws (resamples x rows) one thread is faster than starting more.
const PARALLEL_WORK: usize = 1 << 22;
/// The bootstrap runs after scoring; a few threads are plenty and stay within a container's share.
const MAX_THREADS: usize = 8;

struct SortedRow {
    positive: bool,
    last_of_tie: bool,
}

/// What every resample shares: the rows in score order.
struct Resampling {
    rows: Vec<SortedRow>,
    /// Rows predicted positive (score > threshold). In descending score order they are the first ones, so a
    /// resample's true and false positives are its running totals at this position.
    predicted_rows: usize,
    seed: u64,
    /// 1 / m for m in 0..=n (0 for m = 0). A sweep reads it in order as its drawn total grows, so average
    /// precision multiplies where it divided once per row; the division was the sweep's costliest step.
    reciprocal: Vec<f64>,
}

/// Each metric's value on the resamples where it is defined, in resample order.
#[derive(Default)]
struct Values {
    accuracy: Vec<f64>,
    roc_auc: Vec<f64>,
    pr_auc: Vec<f64>,
    f1: Vec<f64>,
}

impl Resampling {
    fn new(labels: &[u8], scores: &[f64], threshold: f64, seed: u64) -> Resampling {
        let n = labels.len();
        // Rows laid out in descending score order once, so every resample is one sequential pass over them.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let rows = order
            .iter()
            .enumerate()
            .map(|(k, &i)| SortedRow {
                positive: labels[i] == 1,
                // The ROC and PR sweeps take a point where a run of equal scores ends.
                last_of_tie: k + 1 == n || scores[order[k + 1]] != scores[i],
            })
            .collect();
        let predicted_rows = order
            .iter()
            .take_while(|&&i| predict(scores[i], threshold) == 1)
            .count();
        let reciprocal = (0..=n)
            .map(|m| if m == 0 { 0.0 } else { 1.0 / m as f64 })
            .collect();
        Resampling {
            rows,
            predicted_rows,
            seed,
            reciprocal,
        }
    }

    fn run(&self, range: std::ops::Range<usize>) -> Values {
        let n = self.rows.len();
        let mut rng = SplitMix64::new(self.seed);
        rng.skip((range.start as u64).wrapping_mul(n as u64));
        let mut counts = Tally::new(n);
        let mut values = Values::default();
        for _ in range {
            counts.clear();
            for _ in 0..n {
                counts.add(rng.scaled_below(n as u64) as usize);
            }
            let sweep = match counts.view() {
                CountsView::Narrow(counts) => self.sweep(counts),
                CountsView::Wide(counts) => self.sweep(counts),
            };
            let (tp, fp) = (sweep.true_positives, sweep.false_positives);
            let (p, neg) = (sweep.positives, sweep.negatives);
            let (fn_, tn) = (p - tp, neg - fp);
            values.accuracy.push((tp + tn) as f64 / n as f64);
            if 2 * tp + fp + fn_ > 0 {
                values.f1.push(2.0 * tp as f64 / (2 * tp + fp + fn_) as f64);
            }
            if p == 0 {
                continue;
            }
            values
                .pr_auc
                .push(sweep.precision_weighted_recall / p as f64);
            if neg > 0 {
                // Twice the trapezoid area in units of one negative by one positive: exact in integers.
                values
                    .roc_auc
                    .push(sweep.twice_roc_area as f64 / (2 * p * neg) as f64);
            }
        }
        values
    }

    /// One pass over the rows in score order, each weighted by its count in the resample.
    ///
    /// The ROC and PR points sit where a run of tied scores ends. A run none of whose rows was drawn moves neither
    /// count, so it adds nothing to either area, and every run end can be visited without a branch on its weight.
    fn sweep<Count: Copy + Into<i64>>(&self, counts: &[Count]) -> Sweep {
        let mut running = Running::default();
        let predicted = self.predicted_rows;
        running.add(
            &self.rows[..predicted],
            &counts[..predicted],
            &self.reciprocal,
        );
        let (true_positives, false_positives) = (running.positives, running.negatives);
        running.add(
            &self.rows[predicted..],
            &counts[predicted..],
            &self.reciprocal,
        );
        // Every total is a sum of non-negative counts, at most n * n for the area.
        Sweep {
            positives: running.positives as u64,
            negatives: running.negatives as u64,
            true_positives: true_positives as u64,
            false_positives: false_positives as u64,
            twice_roc_area: running.twice_roc_area as u64,
            precision_weighted_recall: running.precision_weighted_recall + running.other_sum,
        }
    }
}

/// One resample's count per position.
///
/// A byte per position keeps the counts of 141,021 rows (138 KiB) inside a core's 512 KiB L2 cache, where four
/// bytes (551 KiB) do not, and every random increment would wait on L3: the bootstrap ran about a fifth faster
/// on a Zen 3 core. A position drawn more than 255 times in one resample (about never) keeps its further
/// draws in `spilled`, and that resample is swept over four-byte counts.
struct Tally {
    narrow: Vec<u8>,
    spilled: Vec<usize>,
    wide: Vec<u32>,
}

enum CountsView<'a> {
    Narrow(&'a [u8]),
    Wide(&'a [u32]),
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            narrow: vec![0; n],
            spilled: Vec::new(),
            wide: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.narrow.fill(0);
        self.spilled.clear();
    }

    #[inline(always)]
    fn add(&mut self, position: usize) {
        let count = &mut self.narrow[position];
        match count.checked_add(1) {
            Some(more) => *count = more,
            None => self.spilled.push(position),
        }
    }

    fn view(&mut self) -> CountsView<'_> {
        if self.spilled.is_empty() {
            return CountsView::Narrow(&self.narrow);
        }
        self.wide.clear();
        self.wide.extend(self.narrow.iter().map(|&c| u32::from(c)));
        for &position in &self.spilled {
            self.wide[position] += 1;
        }
        CountsView::Wide(&self.wide)
    }
}

/// The sweep's running totals. Signed: converting an i64 to f64 is one instruction, a u64 several, and the
/// loop runs n times per resample.
#[derive(Default, Clone, Copy)]
struct Running {
    positives: i64,
    negatives: i64,
    prev_positives: i64,
    prev_negatives: i64,
    twice_roc_area: i64,
    precision_weighted_recall: f64,
    /// Average precision sums into two accumulators taken in turn: one f64 sum's add latency, not the rest of
    /// the row's work, would otherwise set the pace of the whole loop.
    other_sum: f64,
}

impl Running {
    #[inline(always)]
    fn add<Count: Copy + Into<i64>>(
        &mut self,
        rows: &[SortedRow],
        counts: &[Count],
        reciprocal: &[f64],
    ) {
        let Running {
            mut positives,
            mut negatives,
            mut prev_positives,
            mut prev_negatives,
            mut twice_roc_area,
            mut precision_weighted_recall,
            mut other_sum,
        } = *self;
        for (row, &count) in rows.iter().zip(counts) {
            let w: i64 = count.into();
            let drawn_positive = w * i64::from(row.positive);
            positives += drawn_positive;
            negatives += w - drawn_positive;
            if row.last_of_tie {
                twice_roc_area += (negatives - prev_negatives) * (positives + prev_positives);
                // Average precision: recall's step times the precision at this threshold. A step of zero adds
                // zero; before the first drawn row the total is 0, whose table entry is 0, not 1/0.
                precision_weighted_recall += (positives - prev_positives) as f64
                    * (positives as f64 * reciprocal[(positives + negatives) as usize]);
                std::mem::swap(&mut precision_weighted_recall, &mut other_sum);
                prev_positives = positives;
                prev_negatives = negatives;
            }
        }
        *self = Running {
            positives,
            negatives,
            prev_positives,
            prev_negatives,
            twice_roc_area,
            precision_weighted_recall,
            other_sum,
        };
    }
}

/// One resample's totals from [`Resampling::sweep`]; the areas are left undivided by the class totals.
struct Sweep {
    positives: u64,
    negatives: u64,
    true_positives: u64,
    false_positives: u64,
    /// Sum over points of (negatives_k - negatives_{k-1}) * (positives_k + positives_{k-1}).
    twice_roc_area: u64,
    /// Sum over points of (positives_k - positives_{k-1}) * precision_k.
    precision_weighted_recall: f64,
}

/// Why a report has no intervals when the bootstrap was turned off (its `undefined.intervals`).
pub const OFF: &str = "the bootstrap is off (--bootstrap 0)";

/// Bootstrap intervals, or why there are none.
pub fn intervals(
    labels: &[u8],
    scores: &[f64],
    threshold: f64,
    resamples: usize,
    seed: u64,
) -> Result<Intervals, String> {
    if resamples == 0 {
        return Err(OFF.into());
    }
    let n = labels.len();
    if n == 0 {
        return Err("no labeled rows".into());
    }
    let problem = Resampling::new(labels, scores, threshold, seed);
    // Resample r takes draws r*n+1 ..= (r+1)*n of one SplitMix64 stream whatever thread computes it, so the
    // values, and the intervals, do not depend on the thread count.
    let threads = if resamples.saturating_mul(n) < PARALLEL_WORK {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .clamp(1, MAX_THREADS)
            .min(resamples)
    };
    let chunk = resamples.div_ceil(threads);
    let parts: Vec<Values> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk).min(resamples)..((t + 1) * chunk).min(resamples);
                let problem = &problem;
                crate::threads::in_scope(scope, "esmbench-bootstrap", move || problem.run(range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let (mut acc, mut roc, mut ap, mut f1) = (vec![], vec![], vec![], vec![]);
    for part in parts {
        acc.extend(part.accuracy);
        roc.extend(part.roc_auc);
        ap.extend(part.pr_auc);
        f1.extend(part.f1);
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
        // Score order as numpy's argsort(-p, kind="stable") gives it: descending, ties in row order.
        let mut order: Vec<usize> = (0..y.len()).collect();
        order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap());
        let mut rng = SplitMix64::new(11);
        let (mut acc, mut roc, mut ap, mut f1) = (vec![], vec![], vec![], vec![]);
        for _ in 0..resamples {
            let idx: Vec<usize> = (0..y.len())
                .map(|_| order[rng.scaled_below(y.len() as u64) as usize])
                .collect();
            let yb: Vec<u8> = idx.iter().map(|&i| y[i]).collect();
            let pb: Vec<f64> = idx.iter().map(|&i| p[i]).collect();
            let plain = compute(&yb, &pb, 0.5);
            acc.push(plain.accuracy.unwrap());
            f1.push(plain.f1.unwrap());
            roc.push(roc_auc(&yb, &pb).unwrap());
            ap.push(average_precision(&yb, &pb).unwrap());
        }
        for (values, got) in [
            (acc, &fast.accuracy),
            (roc, &fast.roc_auc),
            (ap, &fast.pr_auc),
            (f1, &fast.f1),
        ] {
            let want = interval(values);
            assert!((want.low.unwrap() - got.low.unwrap()).abs() < 1e-12);
            assert!((want.high.unwrap() - got.high.unwrap()).abs() < 1e-12);
        }
    }

    #[test]
    fn resamples_split_across_threads_give_the_values_of_one_pass() {
        let (y, p) = data(300, 9);
        let problem = Resampling::new(&y, &p, 0.5, 4);
        let whole = problem.run(0..10);
        let (first, second) = (problem.run(0..3), problem.run(3..10));
        let joined = |a: &[f64], b: &[f64]| [a, b].concat();
        assert_eq!(whole.accuracy, joined(&first.accuracy, &second.accuracy));
        assert_eq!(whole.roc_auc, joined(&first.roc_auc, &second.roc_auc));
        assert_eq!(whole.pr_auc, joined(&first.pr_auc, &second.pr_auc));
        assert_eq!(whole.f1, joined(&first.f1, &second.f1));
        assert_eq!(whole.accuracy.len(), 10);
    }

    #[test]
    fn a_position_drawn_more_than_255_times_counts_every_draw() {
        // In score order: a positive (0.9), a negative (0.7), a positive (0.4), then 297 negatives below 0.3.
        let n = 300;
        let labels: Vec<u8> = (0..n).map(|i| u8::from(i == 0 || i == 2)).collect();
        let scores: Vec<f64> = (0..n)
            .map(|i| match i {
                0 => 0.9,
                1 => 0.7,
                2 => 0.4,
                _ => 0.3 - i as f64 * 1e-4,
            })
            .collect();
        let problem = Resampling::new(&labels, &scores, 0.5, 0);
        // A resample always holds n draws: here one of row 0, 294 of row 1 and 5 of row 2.
        let mut tally = Tally::new(n);
        tally.add(0);
        (0..294).for_each(|_| tally.add(1));
        (0..5).for_each(|_| tally.add(2));
        let CountsView::Wide(counts) = tally.view() else {
            panic!("294 draws of one position must leave the one-byte counts");
        };
        assert_eq!(counts[..4], [1, 294, 5, 0]);
        assert_eq!(counts.iter().sum::<u32>(), n as u32);
        let sweep = problem.sweep(counts);
        assert_eq!((sweep.positives, sweep.negatives), (6, 294));
        assert_eq!((sweep.true_positives, sweep.false_positives), (1, 294));
        // ROC: the one 0.9 positive outranks all 294 drawn negatives, the five 0.4 positives none: 294 of
        // 6 x 294 pairs, so twice the area in pair units is 588.
        assert_eq!(sweep.twice_roc_area, 588);
        // Average precision before dividing by the 6 positives: 1 at precision 1/1, then 5 at 6/300.
        assert!((sweep.precision_weighted_recall - (1.0 + 5.0 * 6.0 / 300.0)).abs() < 1e-12);
        tally.clear();
        tally.add(3);
        let CountsView::Narrow(counts) = tally.view() else {
            panic!("after clear() one draw fits in a byte");
        };
        assert_eq!(
            (counts[3], counts.iter().map(|&c| u32::from(c)).sum::<u32>()),
            (1, 1)
        );
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
