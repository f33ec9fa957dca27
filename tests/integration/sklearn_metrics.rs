//! Metrics and bootstrap intervals equal scikit-learn's own values (tests/fixtures/sklearn_metrics.json, made by
//! scripts/sklearn_metrics_reference.py) to within 1e-9, from hand-made cases up to 141,021-row prediction sets.

use std::fmt::Write as _;

use esmbench::metrics::{self, bootstrap, rng::SplitMix64, Metrics};
use serde_json::Value;

use crate::harness::*;

const TOLERANCE: f64 = 1e-9;

fn reference() -> Value {
    read_json(&fixture("sklearn_metrics.json"))
}

/// The prediction set a fixture case describes, rebuilt exactly as the Python script builds it.
fn inputs(case: &Value) -> (Vec<u8>, Vec<f64>) {
    let inputs = &case["inputs"];
    match inputs["kind"].as_str().unwrap() {
        "explicit" => (
            inputs["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect(),
            inputs["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        ),
        "generated" => {
            let n = inputs["n"].as_u64().unwrap() as usize;
            let prevalence = inputs["prevalence_permille"].as_u64().unwrap();
            let q = inputs["quantize"].as_u64().unwrap();
            let mut rng = SplitMix64::new(inputs["seed"].as_u64().unwrap());
            let (mut labels, mut scores) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let positive = rng.next_u64() % 1000 < prevalence;
                let (a, b) = if q > 0 {
                    let a = (rng.next_u64() % (q + 1)) as f64 / q as f64;
                    let b = (rng.next_u64() % (q + 1)) as f64 / q as f64;
                    (a, b)
                } else {
                    (rng.unit(), rng.unit())
                };
                labels.push(u8::from(positive));
                scores.push(if positive { a.max(b) } else { a.min(b) });
            }
            (labels, scores)
        }
        other => panic!("unknown input kind {other}"),
    }
}

/// The generator is checked against the values Python saw before any metric is compared.
fn check_inputs_match_python(case: &Value, labels: &[u8], scores: &[f64]) {
    let name = case["name"].as_str().unwrap();
    let check = &case["check"];
    assert_eq!(
        labels.len() as u64,
        check["n"].as_u64().unwrap(),
        "{name}: n"
    );
    let positives = labels.iter().filter(|&&y| y == 1).count() as u64;
    assert_eq!(positives, check["positives"].as_u64().unwrap(), "{name}");
    let head: Vec<f64> = check["head_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(&scores[..head.len()], &head[..], "{name}: first scores");
    if let Some(tail) = check["tail_score"].as_f64() {
        assert_eq!(*scores.last().unwrap(), tail, "{name}: last score");
    }
}

fn compare(name: &str, threshold: f64, ours: &Metrics, expected: &Value, problems: &mut String) {
    for metric in metrics::SCALAR_METRICS {
        let want = expected[metric]["value"].as_f64();
        let got = ours.get(metric);
        match (got, want) {
            (Some(g), Some(w)) if (g - w).abs() <= TOLERANCE => {}
            (None, None) => assert!(
                ours.undefined.contains_key(metric),
                "{name} @ {threshold}: {metric} is null without a reason"
            ),
            _ => writeln!(
                problems,
                "{name} @ {threshold}: {metric} = {got:?}, scikit-learn {want:?} ({})",
                expected[metric]["sklearn"]
            )
            .unwrap(),
        }
    }
    let matrix: [[u64; 2]; 2] =
        serde_json::from_value(expected["confusion_matrix"].clone()).unwrap();
    if ours.confusion_matrix != matrix {
        writeln!(
            problems,
            "{name} @ {threshold}: confusion matrix {:?}, scikit-learn {matrix:?}",
            ours.confusion_matrix
        )
        .unwrap();
    }
}

#[test]
fn metrics_equal_scikit_learn_within_1e_9_on_every_stored_case_including_141k_rows() {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    assert!(
        cases
            .iter()
            .any(|c| c["inputs"]["n"].as_u64() == Some(141_021)),
        "the fixture must hold a Harvey-size case"
    );
    let mut problems = String::new();
    let mut compared = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (labels, scores) = inputs(case);
        check_inputs_match_python(case, &labels, &scores);
        for at in case["thresholds"].as_array().unwrap() {
            let threshold = at["threshold"].as_f64().unwrap();
            let ours = metrics::compute(&labels, &scores, threshold);
            compare(name, threshold, &ours, &at["metrics"], &mut problems);
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} comparisons");
    assert!(
        problems.is_empty(),
        "differences from scikit-learn:\n{problems}"
    );
}

#[test]
fn bootstrap_intervals_equal_numpy_percentiles_of_scikit_learn_on_the_same_resamples() {
    let reference = reference();
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let Some(expected) = case.get("bootstrap") else {
            continue;
        };
        let name = case["name"].as_str().unwrap();
        let (labels, scores) = inputs(case);
        let ours = bootstrap::intervals(
            &labels,
            &scores,
            expected["threshold"].as_f64().unwrap(),
            expected["resamples"].as_u64().unwrap() as usize,
            expected["seed"].as_u64().unwrap(),
        )
        .unwrap();
        for metric in ["accuracy", "roc_auc", "pr_auc", "f1"] {
            let want = &expected["intervals"][metric];
            let got = ours.get(metric).unwrap();
            assert_eq!(
                got.defined,
                want["defined"].as_u64().unwrap(),
                "{name}: {metric} defined"
            );
            for (bound, value) in [("low", got.low), ("high", got.high)] {
                let w = want[bound].as_f64().unwrap();
                let g = value.unwrap();
                assert!(
                    (g - w).abs() <= TOLERANCE,
                    "{name}: {metric} {bound} {g} vs numpy {w}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} bootstrap cases");
}

/// The same equality through the CLI: a 141,021-row predictions file in another tool's column names.
#[test]
fn esmbench_metrics_on_a_141k_row_predictions_file_equals_scikit_learn() {
    let reference = reference();
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "n141021_continuous_rare_positives")
        .expect("the 141k continuous case");
    let (labels, scores) = inputs(case);
    let dir = tempdir();
    let mut csv = String::from("y_true,y_pred,y_proba\n");
    for (y, p) in labels.iter().zip(&scores) {
        // `{}` prints the shortest text that parses back to the same f64.
        writeln!(csv, "{y},{},{p}", u8::from(*p > 0.5)).unwrap();
    }
    let predictions = write(dir.path(), "other_tool.csv", &csv);
    let out = dir.path().join("rescored");
    esmbench()
        .args([
            "metrics",
            "--bootstrap",
            "0",
            "--assay",
            "psr",
            "--predictions",
        ])
        .arg(&predictions)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let report: esmbench::report::Report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.model.threshold, 0.5495);
    assert_eq!(report.model.assay.as_deref(), Some("psr"));
    let expected = case["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["threshold"].as_f64() == Some(0.5495))
        .unwrap();
    let ours = report.metrics.expect("metrics");
    assert_eq!(ours.n, 141_021);
    let mut problems = String::new();
    compare(
        "cli 141k",
        0.5495,
        &ours,
        &expected["metrics"],
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems}");
    for file in ["report.md", "report.html", "roc.svg", "pr.svg"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
}
