"""Regenerate tests/fixtures/sklearn_fit_boughter_8m.json: scikit-learn's converged logistic regression on Boughter.

This file owns that fixture, the scikit-learn reference for `esmbench fit` (tests/integration/fit.rs). It fits
scikit-learn's default LogisticRegression objective (L2, C=1.0, intercept not penalised) on the PyTorch ESM-2 8M
embeddings of boughter_914 from the shared data folder, run to convergence: float64 features and tol=1e-8.

Why not the shared reference head: it was fitted on float32 embeddings with the default tol=1e-4, where lbfgs
stops after about 210 iterations with intercept 0.22, far along an ill-conditioned direction from the optimum
(intercept 6.75); its probabilities differ from the optimum's by up to 0.028. Converged, scikit-learn and
`esmbench fit` agree to about 2e-6.

Usage (needs numpy and scikit-learn, and ../shared beside the repository):
    python scripts/sklearn_fit_reference.py [--shared ../shared] [--out tests/fixtures/sklearn_fit_boughter_8m.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

MODEL = "esm2_t6_8M_seed0"
DATASET = "boughter_914"


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=root.parent / "shared")
    parser.add_argument("--out", type=Path, default=root / "tests/fixtures/sklearn_fit_boughter_8m.json")
    args = parser.parse_args()
    reference = args.shared / "models/reference"
    x = np.load(reference / f"{MODEL}.{DATASET}.embeddings.npy").astype(np.float64)
    with open(reference / f"{MODEL}.{DATASET}.proba.csv", newline="") as f:
        y = np.array([int(float(r["label"])) for r in csv.DictReader(f)])
    model = LogisticRegression(C=1.0, tol=1e-8, max_iter=100_000).fit(x, y)
    probabilities = model.predict_proba(x)[:, 1]
    fixture = {
        "generated_by": "scripts/sklearn_fit_reference.py",
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "model": MODEL,
        "data": f"{DATASET}.csv",
        "estimator": "LogisticRegression(C=1.0, tol=1e-8, max_iter=100000) on float64 PyTorch embeddings",
        "n_iter": int(model.n_iter_[0]),
        "intercept": float(model.intercept_[0]),
        "coef": [float(v) for v in model.coef_.ravel()],
        "labels": [int(v) for v in y],
        "probabilities": [float(v) for v in probabilities],
    }
    args.out.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {args.out}: {len(y)} rows, {fixture['n_iter']} iterations, intercept {fixture['intercept']:.6f}")


if __name__ == "__main__":
    main()
