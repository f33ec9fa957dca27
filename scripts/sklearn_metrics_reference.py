"""Regenerate tests/fixtures/sklearn_metrics.json: metric values computed by scikit-learn itself.

This file owns that fixture. The Rust tests (tests/integration/sklearn_metrics.rs) rebuild every prediction set
from the parameters stored in it, with no Python, and require esmbench's metrics and bootstrap intervals to equal
the values scikit-learn (and numpy's percentile) computed here, to within 1e-9.

Prediction sets are made with SplitMix64 (Vigna's splitmix64.c), whose k-th output is
mix(seed + k * 0x9E3779B97F4A7C15) mod 2^64: integer arithmetic only, so numpy here and Rust there produce the
identical arrays. For a generated set of n rows, row i takes draws 3i+1, 3i+2, 3i+3:
    label = (d1 % 1000) < prevalence_permille
    quantize q > 0:  a = d2 % (q+1), b = d3 % (q+1), score = (max(a,b) if label else min(a,b)) / q
    quantize 0:      a = (d2 >> 11) * 2^-53, b likewise, score = max(a,b) if label else min(a,b)
Quantized scores tie heavily (q=1000 over 141,021 rows puts ~141 rows on each value), hit the threshold exactly
(k/q == 0.5) and reach 0 and 1 (log-loss clipping).

Bootstrap: the rows are put in descending score order once, ties in row order (numpy's stable argsort of -score).
Resample r (from 0) of an n-row set takes draws r*n+1 .. r*n+n of a SplitMix64 stream with the given seed, and
each draw picks the row at position (draw * n) >> 64 of that order. Each metric is computed by scikit-learn on every resample where it is defined, and the
interval is numpy.percentile(values, [2.5, 97.5]) (linear interpolation).

Where scikit-learn cannot define a metric it raises, returns nan or warns (UndefinedMetricWarning, "y_pred
contains classes not in y_true") and substitutes a number; esmbench reports null with a reason instead, so those
entries are stored as {"value": null, "sklearn": "<what it said>"}. One deliberate convention differs too:
matthews_corrcoef returns 0.0 without a warning when a row or column of the confusion matrix is empty (0/0);
esmbench reports null there, and the entry says so.

Usage (needs numpy and scikit-learn; deterministic, ~1 minute):
    python scripts/sklearn_metrics_reference.py [--out tests/fixtures/sklearn_metrics.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn import metrics as skm

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)

THRESHOLDS = [0.5, 0.5495]
METRICS = [
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
]
INTERVAL_METRICS = ["accuracy", "roc_auc", "pr_auc", "f1"]


def splitmix(seed: int, first: int, count: int) -> np.ndarray:
    """Outputs first+1 .. first+count of a SplitMix64 stream (uint64; numpy wraps on overflow)."""
    k = np.arange(first + 1, first + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def scaled_below(draws: np.ndarray, n: int) -> np.ndarray:
    """(draw * n) >> 64 for each uint64 draw, from its 32-bit halves; n < 2^31 keeps every step inside uint64."""
    assert 0 < n < 2**31
    n64 = np.uint64(n)
    high, low = draws >> np.uint64(32), draws & np.uint64(0xFFFFFFFF)
    return ((high * n64 + ((low * n64) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def generate(n: int, seed: int, prevalence_permille: int, quantize: int) -> tuple[np.ndarray, np.ndarray]:
    d = splitmix(seed, 0, 3 * n).reshape(n, 3)
    labels = (d[:, 0] % np.uint64(1000)) < np.uint64(prevalence_permille)
    if quantize > 0:
        q = np.uint64(quantize + 1)
        a, b = d[:, 1] % q, d[:, 2] % q
        k = np.where(labels, np.maximum(a, b), np.minimum(a, b))
        scores = k.astype(np.float64) / float(quantize)
    else:
        a = (d[:, 1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
        b = (d[:, 2] >> np.uint64(11)).astype(np.float64) * 2.0**-53
        scores = np.where(labels, np.maximum(a, b), np.minimum(a, b))
    return labels.astype(np.int64), scores


def sk(fn, *args, **kwargs):
    """(value, status): status is "ok", or what scikit-learn said when it could not define the metric."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = float(fn(*args, **kwargs))
        except ValueError as e:
            return None, f"error: {str(e).splitlines()[0]}"
    said = [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, UserWarning)]
    if said:
        return None, f"warning: {said[0]}"
    if not math.isfinite(value):
        return None, "not finite"
    return value, "ok"


def metrics_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    if len(y) == 0:
        out = {name: {"value": None, "sklearn": "error: empty input"} for name in METRICS}
        out["confusion_matrix"] = [[0, 0], [0, 0]]
        return out
    pred = (p > threshold).astype(np.int64)
    out = {
        "accuracy": sk(skm.accuracy_score, y, pred),
        "balanced_accuracy": sk(skm.balanced_accuracy_score, y, pred),
        "precision": sk(skm.precision_score, y, pred),
        "recall": sk(skm.recall_score, y, pred),
        "specificity": sk(skm.recall_score, y, pred, pos_label=0),
        "f1": sk(skm.f1_score, y, pred),
        "mcc": sk(skm.matthews_corrcoef, y, pred),
        "roc_auc": sk(skm.roc_auc_score, y, p),
        "pr_auc": sk(skm.average_precision_score, y, p),
        "brier": sk(skm.brier_score_loss, y, p),
        "log_loss": sk(skm.log_loss, y, p),
    }
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    if (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) == 0 and out["mcc"][1] == "ok":
        out["mcc"] = (None, f"convention: matthews_corrcoef returns {out['mcc'][0]} for 0/0; esmbench reports null")
    result = {name: {"value": v, "sklearn": status} for name, (v, status) in out.items()}
    result["confusion_matrix"] = cm.tolist()
    return result


def bootstrap(y: np.ndarray, p: np.ndarray, threshold: float, resamples: int, seed: int) -> dict:
    n = len(y)
    values: dict[str, list[float]] = {m: [] for m in INTERVAL_METRICS}
    order = np.argsort(-p, kind="stable")
    for r in range(resamples):
        idx = order[scaled_below(splitmix(seed, r * n, n), n)]
        yb, pb = y[idx], p[idx]
        pred = (pb > threshold).astype(np.int64)
        for name, (v, _) in {
            "accuracy": sk(skm.accuracy_score, yb, pred),
            "roc_auc": sk(skm.roc_auc_score, yb, pb),
            "pr_auc": sk(skm.average_precision_score, yb, pb),
            "f1": sk(skm.f1_score, yb, pred),
        }.items():
            if v is not None:
                values[name].append(v)
    out = {}
    for name, vs in values.items():
        if vs:
            low, high = np.percentile(np.array(vs), [2.5, 97.5])
            out[name] = {"low": float(low), "high": float(high), "defined": len(vs)}
        else:
            out[name] = {"low": None, "high": None, "defined": 0}
    return {"resamples": resamples, "seed": seed, "threshold": threshold, "confidence": 0.95, "intervals": out}


def case(name, inputs, y, p, boot=None) -> dict:
    entry = {
        "name": name,
        "inputs": inputs,
        # Lets the Rust side prove it rebuilt the same arrays before comparing anything.
        "check": {
            "n": int(len(y)),
            "positives": int(y.sum()),
            "head_scores": [float(s) for s in p[:5]],
            "tail_score": float(p[-1]) if len(p) else None,
            "score_fsum": math.fsum(float(s) for s in p),
        },
        "thresholds": [{"threshold": t, "metrics": metrics_at(y, p, t)} for t in THRESHOLDS],
    }
    if boot is not None:
        entry["bootstrap"] = bootstrap(y, p, THRESHOLDS[0], *boot)
    print(f"{name}: n={len(y)}", file=sys.stderr)
    return entry


def explicit(name, labels, scores, boot=None) -> dict:
    y = np.array(labels, dtype=np.int64)
    p = np.array(scores, dtype=np.float64)
    return case(name, {"kind": "explicit", "labels": labels, "scores": scores}, y, p, boot)


def generated(name, n, seed, prevalence_permille, quantize, boot=None) -> dict:
    y, p = generate(n, seed, prevalence_permille, quantize)
    inputs = {"kind": "generated", "n": n, "seed": seed, "prevalence_permille": prevalence_permille, "quantize": quantize}
    return case(name, inputs, y, p, boot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests/fixtures/sklearn_metrics.json")
    args = parser.parse_args()
    cases = [
        explicit("sklearn_docs_example", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
        explicit("hand_8", [1, 0, 1, 1, 0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]),
        explicit("ties_at_the_threshold", [1, 0, 1, 0, 1, 0, 0, 1], [0.5, 0.5, 0.5495, 0.5495, 1.0, 0.0, 0.3, 0.3]),
        explicit("one_class_positive", [1, 1, 1], [0.9, 0.2, 0.7]),
        explicit("one_class_negative", [0, 0, 0], [0.9, 0.2, 0.7]),
        explicit("all_scores_equal_below", [0, 1, 0, 1, 1], [0.5, 0.5, 0.5, 0.5, 0.5]),
        explicit("all_scores_equal_above", [0, 1, 0, 1, 1], [0.8, 0.8, 0.8, 0.8, 0.8]),
        explicit("no_rows", [], []),
        generated("n86_continuous", 86, 86, 400, 0, boot=(1000, 0)),
        generated("n398_q100", 398, 398, 500, 100, boot=(1000, 1)),
        generated("n1000_q20_heavy_ties", 1000, 1000, 300, 20, boot=(1000, 2)),
        generated("n141021_q1000", 141021, 141021, 500, 1000, boot=(200, 3)),
        generated("n141021_continuous_rare_positives", 141021, 7, 50, 0),
    ]
    fixture = {
        "generated_by": "scripts/sklearn_metrics_reference.py",
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "prediction": "positive when score > threshold (strict), as LogisticRegression.predict at 0.5",
        "cases": cases,
    }
    args.out.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
