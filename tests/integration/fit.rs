//! `esmbench fit` end to end: the head it trains on ESM-2 8M / Boughter against the exact optimum and
//! scikit-learn's reference, the round trip of a micro-fixture head through `esmbench test`, and usage errors.

use std::path::Path;

use ndarray::Array2;

use crate::harness::*;

const MODEL_8M: &str = "esm2_t6_8M_seed0";

fn head_of(path: &Path) -> (Vec<f64>, f64) {
    let json = read_json(path);
    let coef = json["coef"]
        .as_array()
        .expect("coef")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    (coef, json["intercept"].as_f64().expect("intercept"))
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn probabilities(x: &Array2<f32>, coef: &[f64], intercept: f64) -> Vec<f64> {
    x.rows()
        .into_iter()
        .map(|row| {
            let z: f64 = row.iter().zip(coef).map(|(&v, c)| f64::from(v) * c).sum();
            sigmoid(z + intercept)
        })
        .collect()
}

/// scikit-learn's objective C·Σ logloss + ½‖w‖².
fn sklearn_objective(x: &Array2<f32>, y: &[f64], c: f64, coef: &[f64], intercept: f64) -> f64 {
    let loss: f64 = probabilities(x, coef, intercept)
        .iter()
        .zip(y)
        .map(|(p, y)| -(y * p.ln() + (1.0 - y) * (1.0 - p).ln()))
        .sum();
    c * loss + 0.5 * coef.iter().map(|w| w * w).sum::<f64>()
}

/// Newton's method on scikit-learn's objective with a dense Cholesky solve: a second, independent solver
/// (no line search, no L-BFGS, no centring) that converges to machine precision on a few hundred dimensions.
fn newton_optimum(x: &Array2<f32>, y: &[f64], c: f64) -> (Vec<f64>, f64) {
    let d = x.ncols();
    let k = d + 1;
    let feature = |i: usize, j: usize| if j < d { f64::from(x[[i, j]]) } else { 1.0 };
    let mut theta = vec![0.0; k];
    for _ in 0..50 {
        let mut gradient = vec![0.0; k];
        let mut hessian = vec![0.0; k * k];
        for (i, &label) in y.iter().enumerate() {
            let z: f64 = (0..k).map(|j| theta[j] * feature(i, j)).sum();
            let p = sigmoid(z);
            let weight = c * p * (1.0 - p);
            for a in 0..k {
                let fa = feature(i, a);
                gradient[a] += c * (p - label) * fa;
                for b in 0..=a {
                    hessian[a * k + b] += weight * fa * feature(i, b);
                }
            }
        }
        for j in 0..d {
            gradient[j] += theta[j];
            hessian[j * k + j] += 1.0;
        }
        // Cholesky H = L Lᵀ (lower triangle), then L Lᵀ δ = g.
        let mut l = vec![0.0; k * k];
        for a in 0..k {
            for b in 0..=a {
                let s: f64 =
                    hessian[a * k + b] - (0..b).map(|m| l[a * k + m] * l[b * k + m]).sum::<f64>();
                l[a * k + b] = if a == b { s.sqrt() } else { s / l[b * k + b] };
            }
        }
        let mut step = gradient.clone();
        for a in 0..k {
            step[a] =
                (step[a] - (0..a).map(|m| l[a * k + m] * step[m]).sum::<f64>()) / l[a * k + a];
        }
        for a in (0..k).rev() {
            step[a] =
                (step[a] - (a + 1..k).map(|m| l[m * k + a] * step[m]).sum::<f64>()) / l[a * k + a];
        }
        for (t, s) in theta.iter_mut().zip(&step) {
            *t -= s;
        }
        if gradient.iter().all(|g| g.abs() < 1e-9) {
            break;
        }
    }
    let intercept = theta[d];
    theta.truncate(d);
    (theta, intercept)
}

fn fit_cmd(model: &Path, data: &Path, out: &Path) -> assert_cmd::Command {
    command_on("fit", model, data, out)
}

/// The head fitted on ESM-2 8M / Boughter matches scikit-learn run to convergence (tests/fixtures/
/// sklearn_fit_boughter_8m.json: float64 features, tol=1e-8) and an independent Newton solve, both on the
/// PyTorch embeddings in ../shared.
///
/// The scikit-learn reference (LogisticRegression(C=1.0, max_iter=2000), default tol=1e-4) is not that optimum:
/// its lbfgs stops after 212 iterations with max |gradient| 9e-5 (on the ÷n scale), intercept 0.22 where the
/// optimum's is 6.75, and its probabilities differ from the optimum's by up to 0.028. That early-stopped point
/// also moves by 0.004 to 0.01 when the embeddings move by 1e-7 or the rows are permuted (scikit-learn 1.9.1),
/// so agreement with it to 1e-3 is not reproducible by any solver, scikit-learn included. What is checked
/// against it: our objective is lower, and the probabilities are within 0.05 (measured: 0.0278).
#[test]
fn fit_8m_on_boughter_reaches_the_optimum_that_sklearn_stops_short_of() {
    let test = "fit_8m_on_boughter_reaches_the_optimum_that_sklearn_stops_short_of";
    let Some(shared) = shared(test) else { return };
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let models = shared.join("models");
    let model = models.join(format!("{MODEL_8M}.onnx"));
    let data = shared.join("datasets/boughter_914.csv");
    let head = dir.path().join("boughter.json");
    let started = std::time::Instant::now();
    fit_cmd(&model, &data, &head).assert().success();
    eprintln!(
        "fit (embedding, fit, 10-fold CV): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let report = read_json(&dir.path().join("boughter.report.json"));
    assert_eq!(report["performance"]["model_loads"], 1);
    assert_eq!(report["data"]["rows_trained"], 914);
    assert_eq!(report["cv"]["per_fold"].as_array().map(Vec::len), Some(10));
    eprintln!(
        "fit seconds {}, cv seconds {}, solver {}",
        report["performance"]["fit_seconds"], report["performance"]["cv_seconds"], report["solver"]
    );

    // Our head through our own scoring path.
    let out = dir.path().join("scored");
    esmbench()
        .args(["test", "--model"])
        .arg(&model)
        .arg("--head")
        .arg(&head)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let ours = column_f64(&read_csv(&out.join("predictions.csv")), "probability");

    let reference = read_csv(&models.join(format!("reference/{MODEL_8M}.boughter_914.proba.csv")));
    let labels = column_f64(&reference, "label");
    let p_sklearn = column_f64(&reference, "probability");
    let embeddings: Array2<f32> = ndarray_npy::read_npy(
        models.join(format!("reference/{MODEL_8M}.boughter_914.embeddings.npy")),
    )
    .expect("reference embeddings");
    let (w_opt, b_opt) = newton_optimum(&embeddings, &labels, 1.0);
    let p_opt = probabilities(&embeddings, &w_opt, b_opt);

    // scikit-learn itself, run to convergence (scripts/sklearn_fit_reference.py): the reference that decides.
    let converged = read_json(&fixture("sklearn_fit_boughter_8m.json"));
    let p_converged: Vec<f64> = converged["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let fixture_labels: Vec<f64> = converged["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(
        fixture_labels, labels,
        "the fixture was made from this dataset"
    );
    let to_converged = max_abs_diff(&ours, &p_converged);
    eprintln!("boughter 8M: max |p - p_sklearn(tol=1e-8)| = {to_converged:.3e}");
    assert!(
        to_converged < 1e-4,
        "the fitted head is {to_converged} from scikit-learn's converged fit"
    );

    let to_optimum = max_abs_diff(&ours, &p_opt);
    let to_sklearn = max_abs_diff(&ours, &p_sklearn);
    eprintln!("boughter 8M: max |p - p_optimum| = {to_optimum:.3e}, max |p - p_sklearn| = {to_sklearn:.4}");
    assert!(
        to_optimum < 1e-5,
        "the fitted head is {to_optimum} from the optimum"
    );
    assert!(
        to_sklearn < 0.05,
        "the fitted head is {to_sklearn} from scikit-learn's reference"
    );

    let (coef, intercept) = head_of(&head);
    let (sk_coef, sk_intercept) = head_of(&models.join(format!("{MODEL_8M}.head.json")));
    let ours_objective = sklearn_objective(&embeddings, &labels, 1.0, &coef, intercept);
    let sklearn_objective_value =
        sklearn_objective(&embeddings, &labels, 1.0, &sk_coef, sk_intercept);
    let optimum = sklearn_objective(&embeddings, &labels, 1.0, &w_opt, b_opt);
    eprintln!("objective: ours {ours_objective:.6}, scikit-learn {sklearn_objective_value:.6}, Newton {optimum:.6}");
    assert!(ours_objective < sklearn_objective_value);
    assert!(ours_objective - optimum < 1e-6 * optimum);
}

/// On a fresh machine: the committed micro model and demo set. The head round-trips through `esmbench test
/// --head`, its probabilities are sigmoid(w·x + b) of `esmbench embed`'s output, and a seed fixes the CV.
#[test]
fn a_fitted_micro_head_scores_through_test_as_sigmoid_of_its_embeddings() {
    let test = "a_fitted_micro_head_scores_through_test_as_sigmoid_of_its_embeddings";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let model = fixture("esm2_micro.onnx");
    let data = root().join("test_datasets/demo_antibodies.csv");
    let head = dir.path().join("heads/demo.json");
    let assert = fit_cmd(&model, &data, &head)
        .args(["--folds", "5", "--seed", "3"])
        .assert()
        .success();
    let stdout = stdout_of(&assert);
    assert!(
        stdout.contains("trained on 96 labeled rows (38 positive, 58 negative"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5-fold stratified CV (seed 3): accuracy"),
        "{stdout}"
    );

    let json = read_json(&head);
    assert_eq!(json["type"], "logistic_regression");
    assert_eq!(json["pooling"], "mean_residues");
    assert_eq!(json["threshold"], 0.5);
    assert_eq!(json["C"], 1.0);
    assert_eq!(json["n"], 96);
    assert_eq!(json["cv"]["folds"], 5);
    assert!(
        json["solver"]["gradient_max_abs"]
            .as_f64()
            .expect("gradient")
            < 1e-6
    );
    let report = read_json(&dir.path().join("heads/demo.report.json"));
    assert_eq!(report["performance"]["model_loads"], 1);
    let folds = report["cv"]["per_fold"].as_array().expect("folds");
    assert_eq!(folds.len(), 5);
    for fold in folds {
        // 38 positives and 58 negatives over 5 folds: 7 or 8 positives and 19 or 20 rows per test fold.
        let positives = fold["test_positives"].as_u64().expect("positives");
        assert!((7..=8).contains(&positives), "{fold}");
        assert!(
            (19..=20).contains(&fold["n_test"].as_u64().expect("n_test")),
            "{fold}"
        );
    }
    let markdown =
        std::fs::read_to_string(dir.path().join("heads/demo.report.md")).expect("report.md");
    assert!(markdown.contains("mean ± sd"), "{markdown}");

    let embeddings = embed(&model, &data, &dir.path().join("e.npy"));
    let (coef, intercept) = head_of(&head);
    let expected = probabilities(&embeddings, &coef, intercept);
    let out = dir.path().join("scored");
    esmbench()
        .args(["test", "--model"])
        .arg(&model)
        .arg("--head")
        .arg(&head)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let scored = column_f64(&read_csv(&out.join("predictions.csv")), "probability");
    let diff = max_abs_diff(&scored, &expected);
    assert!(
        diff < 1e-12,
        "test --head vs sigmoid(w·x + b) of embed: {diff}"
    );

    // The same seed gives the same folds and so the same numbers; the head does not depend on the seed.
    let again = dir.path().join("again.json");
    fit_cmd(&model, &data, &again)
        .args(["--folds", "5", "--seed", "3"])
        .assert()
        .success();
    let again_report = read_json(&dir.path().join("again.report.json"));
    assert_eq!(again_report["cv"], report["cv"]);
    assert_eq!(read_json(&again)["coef"], json["coef"]);
}

fn mock_fit(dir: &Path, data: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    fit_cmd(&fixture("esm2_micro.onnx"), data, &dir.join("head.json"))
        .arg("--mock-backend")
        .args(extra)
        .assert()
}

/// Twelve rows of the mock model's features: enough of each class for 3 folds.
fn labelled_rows(labels: &[&str]) -> String {
    let sequences = [
        "EVQLVESGG",
        "QVQLQESGPG",
        "DIQMTQSPSS",
        "EIVLTQSPAT",
        "AVKLLQW",
        "GGSLRLSCAAS",
    ];
    let mut text = String::from("id,sequence,label\n");
    for (i, label) in labels.iter().enumerate() {
        let sequence = sequences[i % sequences.len()].repeat(1 + i % 3);
        text.push_str(&format!("r{i},{sequence},{label}\n"));
    }
    text
}

#[test]
fn training_data_without_usable_labels_is_a_usage_error_naming_the_file_and_the_fix() {
    let dir = tempdir();
    for (name, text, expected) in [
        (
            "nolabel.csv",
            "id,sequence\na,EVQL\nb,QVQL\n".to_string(),
            "no `label` column",
        ),
        (
            "empty_labels.csv",
            labelled_rows(&[""; 8]),
            "every `label` field is empty",
        ),
        (
            "one_class.csv",
            labelled_rows(&["1"; 8]),
            "all 8 labeled rows are class 1",
        ),
        (
            "bad_label.csv",
            labelled_rows(&["0", "1", "2", "0"]),
            "label `2` is not 0 or 1",
        ),
    ] {
        let data = write(dir.path(), name, &text);
        let stderr = stderr_of(&mock_fit(dir.path(), &data, &[]).code(2));
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in:\n{stderr}"
        );
        assert!(
            stderr.contains(name),
            "{name}: the file is not named:\n{stderr}"
        );
        assert!(stderr.contains("fix"), "{name}: no fix given:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            !dir.path().join("head.json").exists(),
            "{name}: a head was written"
        );
    }
}

#[test]
fn bad_fit_settings_are_usage_errors() {
    let dir = tempdir();
    let labels = ["0", "1", "0", "1", "0", "0", "1", "0"];
    let data = write(dir.path(), "d.csv", &labelled_rows(&labels));
    for (extra, expected) in [
        (vec!["--folds", "4"], "--folds 4: "),
        (vec!["--c", "0"], "--c 0 is not a number from 1e-12 to 1e12"),
        (
            vec!["--c", "-1"],
            "--c -1 is not a number from 1e-12 to 1e12",
        ),
        // Regression: 1e-300 ran and failed as "did not converge ... (Solver converged)"; 1e300 printed 301 digits.
        (
            vec!["--c", "1e-300"],
            "--c 1e-300 is not a number from 1e-12 to 1e12",
        ),
        (
            vec!["--c", "1e300"],
            "--c 1e300 is not a number from 1e-12 to 1e12",
        ),
        (vec!["--head", "h.json"], "--head"),
        (vec!["--shard", "1/2"], "--shard"),
    ] {
        let stderr = stderr_of(&mock_fit(dir.path(), &data, &extra).code(2));
        assert!(
            stderr.contains(expected),
            "{extra:?}: expected `{expected}` in:\n{stderr}"
        );
    }
    let stderr = stderr_of(&mock_fit(dir.path(), &data, &["--folds", "4"]).code(2));
    assert!(
        stderr.contains("has 3 labeled rows of class 1") && stderr.contains("--folds 0"),
        "{stderr}"
    );
    let as_dir = dir.path().join("a_dir");
    std::fs::create_dir(&as_dir).unwrap();
    let assert = fit_cmd(&fixture("esm2_micro.onnx"), &data, &as_dir)
        .arg("--mock-backend")
        .assert()
        .code(2);
    assert!(stderr_of(&assert).contains("is a directory"));
}

#[test]
fn unlabeled_rows_are_left_out_of_training_and_counted() {
    let dir = tempdir();
    let labels = ["0", "1", "", "0", "1", "0", "", "1", "0", "1", "0", "0"];
    let data = write(dir.path(), "partly.csv", &labelled_rows(&labels));
    let assert = mock_fit(dir.path(), &data, &["--folds", "3"]).success();
    assert!(
        stderr_of(&assert).contains("2 of 12 rows of")
            && stderr_of(&assert).contains("left out of training"),
        "{}",
        stderr_of(&assert)
    );
    let report = read_json(&dir.path().join("head.report.json"));
    assert_eq!(report["data"]["rows_unlabeled"], 2);
    assert_eq!(report["data"]["rows_with_gaps"], 0);
    assert_eq!(report["data"]["rows_trained"], 10);
    assert_eq!(report["data"]["positives"], 4);
    assert_eq!(read_json(&dir.path().join("head.json"))["n"], 10);
    // --folds 0 (or 1) skips cross-validation.
    let assert = mock_fit(dir.path(), &data, &["--folds", "0"]).success();
    assert!(stdout_of(&assert).contains("cross-validation skipped"));
    assert!(read_json(&dir.path().join("head.report.json"))["cv"].is_null());
    // With --on-invalid skip an invalid row is left out too, and named in the report.
    let mut text = labelled_rows(&labels);
    text.push_str("bad,EVQJL,1\n");
    let data = write(dir.path(), "with_invalid.csv", &text);
    mock_fit(dir.path(), &data, &["--folds", "3"]).code(2);
    let assert = mock_fit(dir.path(), &data, &["--folds", "3", "--on-invalid", "skip"]).success();
    assert!(
        stderr_of(&assert).contains("1 of 13 rows of"),
        "{}",
        stderr_of(&assert)
    );
    let report = read_json(&dir.path().join("head.report.json"));
    assert_eq!(report["data"]["rows_skipped"], 1);
    assert_eq!(report["data"]["rows_trained"], 10);
    let first = report["data"]["skipped_first"][0]
        .as_str()
        .expect("a listed row");
    assert!(
        first.contains("line 14") && first.contains("'J'"),
        "{first}"
    );
}

#[test]
fn a_suite_config_is_refused_and_keys_only_test_uses_are_named() {
    let dir = tempdir();
    let labels = ["0", "1", "0", "1", "0", "0", "1", "0", "1", "1"];
    let data = write(dir.path(), "d.csv", &labelled_rows(&labels));
    let model = fixture("esm2_micro.onnx");
    let suite = write_suite_config(dir.path(), &model, &data);
    let assert = esmbench()
        .args(["fit", "--mock-backend", "--config"])
        .arg(&suite)
        .arg("--out")
        .arg(dir.path().join("head.json"))
        .assert()
        .code(2);
    assert!(
        stderr_of(&assert).contains("describe an `esmbench test` suite"),
        "{}",
        stderr_of(&assert)
    );
    assert!(!dir.path().join("head.json").exists());

    let shared_config = write(
        dir.path(),
        "run.yaml",
        &format!(
            "model: {}\ndata: {}\nthreshold: 0.7\nbootstrap: 100\nthreads: 1\n",
            model.display(),
            data.display()
        ),
    );
    let assert = esmbench()
        .args(["fit", "--mock-backend", "--folds", "3", "--config"])
        .arg(&shared_config)
        .arg("--out")
        .arg(dir.path().join("head.json"))
        .assert()
        .success();
    assert!(
        stderr_of(&assert)
            .contains("ignoring keys that only `esmbench test` uses: threshold, bootstrap"),
        "{}",
        stderr_of(&assert)
    );
    let report = read_json(&dir.path().join("head.report.json"));
    assert_eq!(report["model"]["threads"], 1);
    assert_eq!(read_json(&dir.path().join("head.json"))["threshold"], 0.5);
}

#[test]
fn training_rows_with_alignment_gaps_are_warned_of_and_counted() {
    let dir = tempdir();
    let labels = ["0", "1", "0", "1", "0", "1", "0", "1", "0", "1", "0", "1"];
    let text = labelled_rows(&labels).replacen("r1,QVQLQ", "r1,QV-LQ", 1);
    let data = write(dir.path(), "aligned.csv", &text);
    let assert = mock_fit(dir.path(), &data, &["--folds", "3"]).success();
    assert!(
        stderr_of(&assert).contains(
            "aligned.csv: 1 of 12 rows hold alignment gaps ('-' or '.'), the first at line 3, column sequence (field 2, character 3)"
        ),
        "{}",
        stderr_of(&assert)
    );
    assert_eq!(
        read_json(&dir.path().join("head.report.json"))["data"]["rows_with_gaps"],
        1
    );
}

#[test]
fn repeated_sequences_are_named_when_cross_validation_could_put_copies_on_both_sides_of_a_fold() {
    let dir = tempdir();
    // Rows 6 to 11 repeat the sequences of rows 0 to 5, each with the other label; no id repeats.
    let data = write(
        dir.path(),
        "repeats.csv",
        &labelled_rows(&["0", "1", "0", "1", "0", "1", "1", "0", "1", "0", "1", "0"]),
    );
    let cross_validated = stderr_of(&mock_fit(dir.path(), &data, &["--folds", "3"]).success());
    assert!(
        cross_validated.contains(
            "repeats.csv: 6 rows repeat the sequence of an earlier row, the first at line 8; cross-validation can put copies"
        ),
        "{cross_validated}"
    );
    assert!(
        cross_validated.contains("repeats.csv: 6 sequences are labeled 0 on one row and 1 on another, the first at line 8"),
        "{cross_validated}"
    );
    assert!(
        !cross_validated.contains("reuse an id"),
        "{cross_validated}"
    );
    let report = read_json(&dir.path().join("head.report.json"));
    assert_eq!(report["data"]["rows_repeating_sequence"], 6);
    assert_eq!(report["data"]["sequences_with_both_labels"], 6);
    let md = std::fs::read_to_string(dir.path().join("head.report.md")).unwrap();
    assert!(
        md.contains("| repeats | 6 rows repeat an earlier row's sequence"),
        "{md}"
    );
    assert!(
        md.contains("in cross-validation, copies of a sequence can fall on both sides of a fold"),
        "{md}"
    );
    assert_eq!(report["data"]["rows_repeating_id"], 0);
    let single_fit = stderr_of(&mock_fit(dir.path(), &data, &["--folds", "0"]).success());
    let md = std::fs::read_to_string(dir.path().join("head.report.md")).unwrap();
    assert!(md.contains("| repeats | 6 rows repeat an earlier row's sequence; 6 sequences are labelled both 0 and 1"), "{md}");
    assert!(
        !md.contains("in cross-validation"),
        "no folds were run: {md}"
    );
    assert!(!single_fit.contains("cross-validation can"), "{single_fit}");
    assert!(
        single_fit.contains("6 sequences are labeled 0 on one row and 1 on another"),
        "{single_fit}"
    );
}
