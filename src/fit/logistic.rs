//! L2-regularised logistic regression with scikit-learn's LogisticRegression objective, minimised with
//! argmin's L-BFGS (More-Thuente line search) to a tight gradient tolerance.
//!
//! Objective (sklearn's, C > 0): C · Σ_i logloss(y_i, w·x_i + b) + ½‖w‖², the intercept b not penalised,
//! features not scaled. The solver minimises the same function divided by C·n (the minimiser is unchanged),
//! so tolerances mean the same thing for 50 rows or 50 000, and reports the gradient on that scale: it is the
//! quantity scikit-learn's `tol` bounds (its lbfgs stops at max |g| <= 1e-4 by default).

use std::cell::RefCell;

use anyhow::Result;
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use crate::error::Failure;
use crate::model::head::sigmoid;

/// Feature rows (row-major f32, as the pooled embeddings come) with their 0/1 labels.
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    features: &'a [f32],
    dim: usize,
    labels: &'a [u8],
}

impl<'a> Samples<'a> {
    pub fn new(features: &'a [f32], dim: usize, labels: &'a [u8]) -> Result<Samples<'a>> {
        if dim == 0 || features.len() != dim * labels.len() {
            return Err(anyhow::anyhow!(
                "internal error: {} feature values for {} labels of dimension {dim}",
                features.len(),
                labels.len()
            ));
        }
        Ok(Samples {
            features,
            dim,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Inverse regularisation strength, as scikit-learn's C.
    pub c: f64,
    /// L-BFGS stops when the L2 norm of its gradient (objective ÷ C·n, centred coordinates) is below this,
    pub gradient_tolerance: f64,
    /// or when an iteration changes the objective ÷ C·n by less than this.
    pub cost_tolerance: f64,
    /// A result whose max |gradient| (objective ÷ C·n, as sklearn's `tol`) is above this is not a head.
    pub accept_tolerance: f64,
    /// Iterations in all, restarts included.
    pub max_iterations: u64,
    /// L-BFGS memory (scikit-learn's maxcor is 10 too).
    pub memory: usize,
    /// Fresh starts (memory cleared) from the last point when a run stops above `accept_tolerance`.
    pub restarts: usize,
}

impl Settings {
    /// Far tighter than scikit-learn's default (max |g| <= 1e-4), whose early stop leaves probabilities up to
    /// 0.03 from the optimum on ESM-2 8M / Boughter. There a gradient of 1e-8 puts them within about 1e-7 of
    /// Newton's optimum. Much below that, a step lowers the objective by less than its f64 rounding and the
    /// line search thrashes; the cost tolerance (one unit in the last place of an O(1) objective) ends the run
    /// there instead of spending thousands of evaluations on noise.
    pub fn with_c(c: f64) -> Settings {
        Settings {
            c,
            gradient_tolerance: 1e-8,
            cost_tolerance: f64::EPSILON,
            accept_tolerance: 1e-6,
            max_iterations: 10_000,
            memory: 10,
            restarts: 3,
        }
    }
}

/// A fitted head and how the optimisation went.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub iterations: u64,
    /// max |∂/∂(w, b)| of the objective divided by C·n, at the result (scikit-learn's `tol` measures this).
    pub gradient_max_abs: f64,
    /// scikit-learn's objective C·Σ logloss + ½‖w‖² at the result.
    pub objective: f64,
    /// Why the solver stopped, in argmin's words.
    pub stopped: String,
}

impl Fitted {
    pub fn decision(&self, x: &[f32]) -> f64 {
        self.coef
            .iter()
            .zip(x)
            .map(|(c, &v)| c * f64::from(v))
            .sum::<f64>()
            + self.intercept
    }

    pub fn probability(&self, x: &[f32]) -> f64 {
        sigmoid(self.decision(x))
    }
}

/// log(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// scikit-learn's objective C·Σ logloss + ½‖w‖² over `rows`, and its gradient in (w, b), divided by C·n.
/// Written plainly, apart from the solver's reparametrisation, so it can check what the solver returns.
pub fn objective(
    samples: &Samples,
    rows: &[usize],
    c: f64,
    coef: &[f64],
    intercept: f64,
) -> (f64, Vec<f64>) {
    let n = rows.len() as f64;
    let mut loss = 0.0;
    let mut gradient = vec![0.0; samples.dim() + 1];
    for &i in rows {
        let x = samples.row(i);
        let y = f64::from(samples.label(i));
        let z = intercept
            + coef
                .iter()
                .zip(x)
                .map(|(w, &v)| w * f64::from(v))
                .sum::<f64>();
        loss += softplus(z) - y * z;
        let residual = sigmoid(z) - y;
        for (g, &v) in gradient.iter_mut().zip(x) {
            *g += residual * f64::from(v);
        }
        gradient[samples.dim()] += residual;
    }
    let penalty = 0.5 * coef.iter().map(|w| w * w).sum::<f64>();
    for (g, w) in gradient.iter_mut().zip(coef) {
        *g += w / c;
    }
    for g in &mut gradient {
        *g /= n;
    }
    (c * loss + penalty, gradient)
}

/// A point and the (value, gradient) there.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// The function the solver sees: the objective over C·n, in centred coordinates.
///
/// Why centre: the intercept is not penalised, and pooled embeddings share a large common component, so in
/// (w, b) the problem is badly conditioned (on ESM-2 8M / Boughter the Hessian of C·Σ logloss + ½‖w‖² has
/// eigenvalues from 0.013 to 53 000) and L-BFGS crawls along the intercept direction; sklearn's lbfgs stops
/// there, far from the optimum. With b' = b + w·μ (μ the mean training row) the objective is the same
/// function of (w, b'), the penalty on w untouched, and the eigenvalues span 1 to 1 000 (the penalty is the
/// floor): the optimum is reached in under 200 iterations. This is exact: no feature is rescaled.
struct Centred<'a> {
    samples: Samples<'a>,
    rows: &'a [usize],
    mean: &'a [f64],
    c: f64,
    /// The last point evaluated and its (value, gradient): the line search asks for the cost and the gradient
    /// of the same point separately, and one pass computes both.
    last: RefCell<Option<Evaluation>>,
}

impl Centred<'_> {
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        if let Some((at, value, gradient)) = self.last.borrow().as_ref() {
            if at.as_slice() == theta {
                return (*value, gradient.clone());
            }
        }
        let dim = self.samples.dim();
        let (w, b) = (&theta[..dim], theta[dim]);
        let n = self.rows.len() as f64;
        // Compensated (Neumaier) summation: near the optimum a step changes the mean loss by ~1e-16, and a plain
        // running sum over many rows is noisier than that, which is what ends the run.
        let (mut loss, mut carry) = (0.0f64, 0.0f64);
        let mut gradient = vec![0.0; dim + 1];
        let mut centred = vec![0.0; dim];
        for &i in self.rows {
            for ((slot, &v), m) in centred.iter_mut().zip(self.samples.row(i)).zip(self.mean) {
                *slot = f64::from(v) - m;
            }
            let y = f64::from(self.samples.label(i));
            let z = b + w.iter().zip(&centred).map(|(w, x)| w * x).sum::<f64>();
            let term = softplus(z) - y * z;
            let sum = loss + term;
            carry += if loss.abs() >= term.abs() {
                (loss - sum) + term
            } else {
                (term - sum) + loss
            };
            loss = sum;
            let residual = sigmoid(z) - y;
            for (g, x) in gradient.iter_mut().zip(&centred) {
                *g += residual * x;
            }
            gradient[dim] += residual;
        }
        let scale = 1.0 / (self.c * n);
        let value = (loss + carry) / n + 0.5 * scale * w.iter().map(|w| w * w).sum::<f64>();
        for (g, w) in gradient.iter_mut().zip(w) {
            *g = *g / n + w * scale;
        }
        gradient[dim] /= n;
        *self.last.borrow_mut() = Some((theta.to_vec(), value, gradient.clone()));
        (value, gradient)
    }
}

impl CostFunction for Centred<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, theta: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.evaluate(theta).0)
    }
}

impl Gradient for Centred<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(theta).1)
    }
}

/// Fits the head on `rows` of `samples`. Both classes must be among them.
pub fn fit(samples: &Samples, rows: &[usize], settings: &Settings) -> Result<Fitted> {
    if !(settings.c.is_finite() && settings.c > 0.0) {
        return Err(Failure::usage(format!(
            "--c {} is not a positive number\n  fix: use e.g. --c 1.0 (scikit-learn's default)",
            settings.c
        ))
        .into());
    }
    let positives = rows.iter().filter(|&&i| samples.label(i) == 1).count();
    if positives == 0 || positives == rows.len() {
        return Err(Failure::input(format!(
            "logistic regression needs both classes, and all {} training rows are class {}\n  fix: check --label-column and that the training CSV has rows labelled 0 and 1",
            rows.len(),
            u8::from(positives > 0)
        ))
        .into());
    }
    let dim = samples.dim();
    let mut mean = vec![0.0; dim];
    for &i in rows {
        for (m, &v) in mean.iter_mut().zip(samples.row(i)) {
            *m += f64::from(v);
        }
    }
    for m in &mut mean {
        *m /= rows.len() as f64;
    }
    // Start at w = 0 with the intercept that is optimal there (the log-odds of the labels): the intercept's
    // gradient is then zero from the first step.
    let rate = positives as f64 / rows.len() as f64;
    let mut start = vec![0.0; dim + 1];
    start[dim] = (rate / (1.0 - rate)).ln();

    let uncentre = |theta: &[f64]| {
        let coef = theta[..dim].to_vec();
        let intercept = theta[dim] - coef.iter().zip(&mean).map(|(w, m)| w * m).sum::<f64>();
        (coef, intercept)
    };
    let mut theta = start;
    let mut iterations = 0;
    let mut stopped = String::new();
    let mut gradient_max_abs = f64::INFINITY;
    for _ in 0..=settings.restarts {
        let problem = Centred {
            samples: *samples,
            rows,
            mean: &mean,
            c: settings.c,
            last: RefCell::new(None),
        };
        let solver: LBFGS<_, Vec<f64>, Vec<f64>, f64> =
            LBFGS::new(MoreThuenteLineSearch::new(), settings.memory)
                .with_tolerance_grad(settings.gradient_tolerance)?
                .with_tolerance_cost(settings.cost_tolerance)?;
        let budget = settings.max_iterations - iterations;
        let result = Executor::new(problem, solver)
            .configure(|state| state.param(theta.clone()).max_iters(budget))
            .run()?;
        let state = result.state();
        theta = state
            .get_best_param()
            .or_else(|| state.get_param())
            .ok_or_else(|| anyhow::anyhow!("internal error: L-BFGS returned no parameters"))?
            .clone();
        iterations += state.get_iter();
        stopped = state
            .get_termination_reason()
            .map(|r| r.text().to_string())
            .unwrap_or_else(|| "not stopped".into());
        // Judge the result in sklearn's own terms, with the plain objective rather than the solver's.
        let (coef, intercept) = uncentre(&theta);
        let (value, gradient) = objective(samples, rows, settings.c, &coef, intercept);
        gradient_max_abs = gradient.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        if gradient_max_abs <= settings.accept_tolerance && value.is_finite() {
            return Ok(Fitted {
                coef,
                intercept,
                iterations,
                gradient_max_abs,
                objective: value,
                stopped,
            });
        }
        if iterations >= settings.max_iterations {
            break;
        }
    }
    Err(Failure::runtime(format!(
        "logistic regression did not converge: after {iterations} L-BFGS iterations ({stopped}) the largest gradient \
component is {gradient_max_abs:.3e}, above {:.0e}\n  fix: check the embeddings for NaN or huge values; a smaller --c regularises more",
        settings.accept_tolerance
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 12 samples x 3 features, hand-made in eighths (exact in f32, also after adding 100), with overlapping
    /// classes. scripts/sklearn_small_reference.py holds the same numbers.
    const X: [[f32; 3]; 12] = [
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
    ];
    const Y: [u8; 12] = [1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0];

    fn small() -> (Vec<f32>, Vec<u8>) {
        (X.iter().flatten().copied().collect(), Y.to_vec())
    }

    /// (C, coef_[0], intercept_[0]) of LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(X, Y), X as
    /// float64, with scikit-learn 1.9.1 and numpy 2.4.6: the output of scripts/sklearn_small_reference.py.
    /// A Newton iteration in numpy agrees with them to 1e-8.
    const SKLEARN: [(f64, [f64; 3], f64); 3] = [
        (
            1.0,
            [1.1230162545150897, 1.1167164620293937, -0.13277205917887508],
            -0.48094433136511994,
        ),
        (
            0.1,
            [
                0.3136566516413487,
                0.28277858354093083,
                -0.05536235155827047,
            ],
            -0.14254651155840015,
        ),
        (
            100.0,
            [5.080807267718218, 6.309406810410234, -0.3982274607969316],
            -2.5078386016054965,
        ),
    ];

    #[test]
    fn matches_scikit_learn_on_a_small_problem() {
        let (x, y) = small();
        let samples = Samples::new(&x, 3, &y).unwrap();
        let rows: Vec<usize> = (0..y.len()).collect();
        for (c, coef, intercept) in SKLEARN {
            let fitted = fit(&samples, &rows, &Settings::with_c(c)).unwrap();
            for (ours, theirs) in fitted.coef.iter().zip(coef) {
                assert!(
                    (ours - theirs).abs() < 1e-6,
                    "C={c}: coef {:?} vs sklearn {coef:?}",
                    fitted.coef
                );
            }
            assert!(
                (fitted.intercept - intercept).abs() < 1e-6,
                "C={c}: intercept {} vs {intercept}",
                fitted.intercept
            );
            assert!(fitted.gradient_max_abs < 1e-8, "C={c}: {fitted:?}");
        }
    }

    #[test]
    fn a_common_offset_in_the_features_changes_only_the_intercept() {
        // Adding 100 to every feature shifts the optimal intercept by -100·Σw and leaves w and every probability
        // alone; uncentred, this is the ill-conditioned case that stalls a plain L-BFGS.
        let (x, y) = small();
        let shifted: Vec<f32> = x.iter().map(|v| v + 100.0).collect();
        let rows: Vec<usize> = (0..y.len()).collect();
        let settings = Settings::with_c(1.0);
        let plain = fit(&Samples::new(&x, 3, &y).unwrap(), &rows, &settings).unwrap();
        let offset = fit(&Samples::new(&shifted, 3, &y).unwrap(), &rows, &settings).unwrap();
        for (a, b) in plain.coef.iter().zip(&offset.coef) {
            assert!((a - b).abs() < 1e-6, "{plain:?} vs {offset:?}");
        }
        for i in 0..y.len() {
            let p = plain.probability(&x[3 * i..3 * i + 3]);
            let q = offset.probability(&shifted[3 * i..3 * i + 3]);
            assert!((p - q).abs() < 1e-6, "row {i}: {p} vs {q}");
        }
    }

    #[test]
    fn the_gradient_is_zero_at_the_result_and_the_objective_is_lowest_there() {
        let (x, y) = small();
        let samples = Samples::new(&x, 3, &y).unwrap();
        let rows: Vec<usize> = (0..y.len()).collect();
        let fitted = fit(&samples, &rows, &Settings::with_c(1.0)).unwrap();
        let (value, gradient) = objective(&samples, &rows, 1.0, &fitted.coef, fitted.intercept);
        assert_eq!(value, fitted.objective);
        assert!(gradient.iter().all(|g| g.abs() < 1e-9), "{gradient:?}");
        for k in 0..4 {
            let mut coef = fitted.coef.clone();
            let mut intercept = fitted.intercept;
            if k < 3 {
                coef[k] += 1e-3;
            } else {
                intercept += 1e-3;
            }
            assert!(objective(&samples, &rows, 1.0, &coef, intercept).0 > value);
        }
    }

    #[test]
    fn one_class_or_a_bad_c_is_an_error_not_a_panic() {
        let (x, _) = small();
        let ones = [1u8; 12];
        let samples = Samples::new(&x, 3, &ones).unwrap();
        let rows: Vec<usize> = (0..12).collect();
        let err = fit(&samples, &rows, &Settings::with_c(1.0)).unwrap_err();
        assert!(err.to_string().contains("both classes"), "{err}");
        assert!(err.to_string().contains("\n  fix: "), "{err}");
        let (x, y) = small();
        let samples = Samples::new(&x, 3, &y).unwrap();
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(fit(&samples, &rows, &Settings::with_c(c)).is_err(), "C={c}");
        }
        assert!(Samples::new(&x, 5, &y).is_err());
    }
}
