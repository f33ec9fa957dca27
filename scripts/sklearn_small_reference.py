"""Print the scikit-learn reference for the optimizer unit test in src/fit/logistic.rs.

The 12 x 3 problem below is the test's X and Y. For each C it fits scikit-learn's LogisticRegression
(lbfgs, L2, intercept not penalised) to a tolerance far below its default, so the numbers are the
optimum of the objective rather than an early-stopped iterate, and prints them as the Rust constant.

    python scripts/sklearn_small_reference.py
"""

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

X = np.array(
    [
        [0.5, 1.0, -0.25],
        [1.5, -0.25, 0.75],
        [-0.75, 0.25, 1.125],
        [2.0, 1.25, -1.0],
        [0.125, -1.5, 0.375],
        [-1.25, 0.875, 0.0],
        [0.875, 0.375, 1.625],
        [-0.375, -0.875, -0.75],
        [1.125, 2.125, 0.25],
        [-1.75, -0.25, 0.875],
        [0.25, 0.625, -1.375],
        [1.375, -1.125, 0.25],
    ],
    dtype=np.float64,
)
Y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0])

print(f"// scikit-learn {sklearn.__version__}, numpy {np.__version__}")
print("const SKLEARN_VALUES: [(f64, [f64; 3], f64); 3] = [")
for c in (1.0, 0.1, 100.0):
    model = LogisticRegression(C=c, tol=1e-12, max_iter=100000).fit(X, Y)
    coef = ", ".join(repr(float(v)) for v in model.coef_[0])
    print(f"    ({c!r}, [{coef}], {float(model.intercept_[0])!r}),")
print("];")
