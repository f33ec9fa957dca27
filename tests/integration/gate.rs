//! The regression gate (`--baseline`, `--write-baseline`, `esmbench check`) and models x datasets suites.

use std::path::{Path, PathBuf};

use crate::harness::*;

fn demo() -> PathBuf {
    root().join("test_datasets/demo_antibodies.csv")
}

/// A baseline whose accuracy is `delta` above what it recorded.
fn raise_accuracy(baseline: &Path, delta: f64, out: &Path) {
    let mut json = read_json(baseline);
    let accuracy = json["metrics"]["accuracy"].as_f64().unwrap();
    json["metrics"]["accuracy"] = serde_json::json!(accuracy + delta);
    std::fs::write(out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

#[test]
fn gate_exits_3_against_a_better_baseline_and_0_against_the_runs_own() {
    let dir = tempdir();
    let own = dir.path().join("own.json");
    let run = dir.path().join("run");
    esmbench()
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro_with_head.onnx"))
        .arg("--data")
        .arg(demo())
        .arg("--out")
        .arg(&run)
        .arg("--write-baseline")
        .arg(&own)
        .assert()
        .success();
    let better = dir.path().join("better.json");
    raise_accuracy(&own, 0.2, &better);

    let passed = esmbench()
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro_with_head.onnx"))
        .arg("--data")
        .arg(demo())
        .arg("--out")
        .arg(&run)
        .arg("--baseline")
        .arg(&own)
        .assert()
        .code(0);
    let stdout = stdout_of(&passed);
    assert!(stdout.contains("gate passed"), "{stdout}");

    let failed = esmbench()
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro_with_head.onnx"))
        .arg("--data")
        .arg(demo())
        .arg("--out")
        .arg(&run)
        .arg("--baseline")
        .arg(&better)
        .assert()
        .code(3);
    let output = failed.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("accuracy") && stdout.contains("REGRESSION"),
        "the diff names the metric: {stdout}"
    );
    assert!(stderr.contains("regression gate failed"), "{stderr}");

    // `check` gates an existing report the same way, without running anything.
    let report = run.join("report.json");
    esmbench()
        .arg("check")
        .arg(&report)
        .arg("--baseline")
        .arg(&own)
        .assert()
        .code(0);
    esmbench()
        .arg("check")
        .arg(&report)
        .arg("--baseline")
        .arg(&better)
        .assert()
        .code(3);
    // Regression: a tolerance beside --baseline was accepted and ignored (the gate kept the recorded ±0.005),
    // so a user loosening the gate believed it loosened.
    for flag in ["--tolerance", "--throughput-tolerance"] {
        let refused = esmbench()
            .arg("check")
            .arg(&report)
            .arg("--baseline")
            .arg(&better)
            .args([flag, "0.5"])
            .assert()
            .code(2);
        let stderr = stderr_of(&refused);
        assert!(
            stderr.contains(&format!("{flag} sets what --write-baseline records")),
            "{stderr}"
        );
    }
}

#[test]
fn check_without_a_baseline_or_with_a_broken_one_is_a_usage_error() {
    let dir = tempdir();
    let report = write(dir.path(), "report.json", "{}");
    esmbench().arg("check").arg(&report).assert().code(2);
    let broken = write(dir.path(), "b.json", "{\"metrics\": 3}");
    esmbench()
        .arg("check")
        .arg(&report)
        .arg("--baseline")
        .arg(&broken)
        .assert()
        .code(2);
}

fn suite_config(dir: &Path, extra: &str) -> PathBuf {
    let nanobodies = dir.join("nanobodies.csv");
    synthetic_nanobodies(&nanobodies, 150, 11);
    std::fs::copy(fixture("esm2_micro_with_head.onnx"), dir.join("m2.onnx")).unwrap();
    write(
        dir,
        "suite.yaml",
        &format!(
            "models:\n  - name: first\n    model: {}\n  - model: m2.onnx\ndatasets:\n  - name: demo\n    data: {}\n  - data: nanobodies.csv\n    assay: psr\nout: results\nthreads: 1\nbootstrap: 200\n{extra}",
            fixture("esm2_micro_with_head.onnx").display(),
            demo().display()
        ),
    )
}

/// `config` with `from` replaced by `to`, written beside it as `name`.
fn edited_config(config: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(
        text.contains(from),
        "{from:?} is not in {}",
        config.display()
    );
    write(config.parent().unwrap(), name, &text.replace(from, to))
}

#[test]
fn a_suite_loads_each_model_once_for_all_its_datasets_and_writes_one_summary() {
    if !runtime_available(
        "a_suite_loads_each_model_once_for_all_its_datasets_and_writes_one_summary",
    ) {
        return;
    }
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .assert()
        .success();
    let summary = read_json(&dir.path().join("results/summary.json"));
    assert_eq!(summary["status"], "complete");
    assert_eq!(summary["models"], 2);
    assert_eq!(summary["model_loads"], 2, "one load per model");
    let runs = summary["runs"].as_array().unwrap();
    let pairs: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["data"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("first", "demo"),
            ("first", "nanobodies"),
            ("m2", "demo"),
            ("m2", "nanobodies")
        ]
        .map(|(m, d)| (m.to_string(), d.to_string()))
    );
    for r in runs {
        let folder = dir
            .path()
            .join("results")
            .join(r["model"].as_str().unwrap())
            .join(r["data"].as_str().unwrap());
        let report = read_json(&folder.join("report.json"));
        assert_eq!(report["status"], "complete");
        assert_eq!(report["execution"]["model_loads"], 1);
        assert!(folder.join("predictions.csv").is_file());
        if r["data"] == "nanobodies" {
            assert_eq!(report["model"]["threshold"], 0.5495);
            assert_eq!(report["model"]["assay"], "psr");
            assert_eq!(report["model"]["threshold_source"], "config");
        } else {
            assert_eq!(report["model"]["threshold_source"], "head");
        }
        assert_eq!(report["metrics"]["accuracy"], r["accuracy"]);
    }
    // Same model file, same data: the two models' predictions agree, so the suite did not mix runs up.
    let a = read_csv(&dir.path().join("results/first/nanobodies/predictions.csv"));
    let b = read_csv(&dir.path().join("results/m2/nanobodies/predictions.csv"));
    assert_eq!(column_f64(&a, "probability"), column_f64(&b, "probability"));
    let md = std::fs::read_to_string(dir.path().join("results/summary.md")).unwrap();
    assert!(md.contains("| first | nanobodies | complete |"), "{md}");
}

#[test]
fn a_gated_suite_exits_3_when_one_run_regresses_and_names_it() {
    if !runtime_available("a_gated_suite_exits_3_when_one_run_regresses_and_names_it") {
        return;
    }
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    let baselines = dir.path().join("baselines");
    esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--write-baseline")
        .arg(&baselines)
        .assert()
        .success();
    assert!(baselines.join("m2.nanobodies.json").is_file());
    esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--baseline")
        .arg(&baselines)
        .assert()
        .success();

    let tampered = baselines.join("first.demo.json");
    raise_accuracy(&tampered.clone(), 0.3, &tampered);
    let gated = config.with_file_name("gated.yaml");
    std::fs::write(
        &gated,
        std::fs::read_to_string(&config).unwrap() + "baselines: baselines\n",
    )
    .unwrap();
    let failed = esmbench()
        .args(["test", "--config"])
        .arg(&gated)
        .assert()
        .code(3);
    let stdout = stdout_of(&failed);
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    let summary = read_json(&dir.path().join("results/summary.json"));
    let verdicts: Vec<&str> = summary["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gate"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["regression", "pass", "pass", "pass"]);

    // Regression: with `baselines:` in its config, a suite could not record a baseline missing from that
    // folder (a dataset just added, or the first recording); --write-baseline required them all to exist
    // and its fix was the command that had failed.
    std::fs::remove_file(baselines.join("m2.nanobodies.json")).unwrap();
    esmbench()
        .args(["test", "--config"])
        .arg(&gated)
        .arg("--write-baseline")
        .arg(&baselines)
        .assert()
        .success();
    assert!(baselines.join("m2.nanobodies.json").is_file());
    esmbench()
        .args(["test", "--config"])
        .arg(&gated)
        .assert()
        .success();
}

#[test]
fn suite_mistakes_are_usage_errors_before_any_model_loads() {
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    // A missing baseline is named with the command that records it.
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let out = esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--baseline")
        .arg(dir.path().join("empty"))
        .assert()
        .code(2);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("first.demo.json is missing") && stderr.contains("--write-baseline"),
        "{stderr}"
    );
    assert!(!dir.path().join("results/summary.json").exists());
    // --model next to a suite config is ambiguous.
    esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(demo())
        .assert()
        .code(2);
    // Two datasets with one name would write into one folder.
    let clash = write(
        dir.path(),
        "clash.yaml",
        &format!(
            "models:\n  - model: m2.onnx\ndatasets:\n  - data: {}\n  - data: {}\n",
            demo().display(),
            demo().display()
        ),
    );
    let out = esmbench()
        .args(["test", "--config"])
        .arg(&clash)
        .assert()
        .code(2);
    assert!(stderr_of(&out).contains("both named"));
}

/// Regression: a `--write-baseline` path in a folder that cannot be written was found only after the whole
/// run had scored every row, and the run then failed; it is refused before anything runs now.
#[test]
fn regression_a_write_baseline_path_that_cannot_be_written_is_refused_before_the_run() {
    let dir = tempdir();
    let blocker = write(
        dir.path(),
        "not-a-folder",
        "a file where a folder should be",
    );
    let run = dir.path().join("run");
    for (target, expected) in [
        (blocker.join("b.json"), "cannot write in"),
        (dir.path().to_path_buf(), "is a directory"),
    ] {
        let assert = esmbench()
            .args(["test", "--mock-backend", "--model"])
            .arg(fixture("esm2_micro_with_head.onnx"))
            .arg("--data")
            .arg(demo())
            .arg("--out")
            .arg(&run)
            .arg("--write-baseline")
            .arg(&target)
            .assert()
            .code(2);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(expected) && stderr.contains("fix:"),
            "{stderr}"
        );
        assert!(
            !run.join("predictions.csv").exists(),
            "the run started: {stderr}"
        );
    }
}

/// Regression: a suite read each model's head only when that model's turn came, so a misspelt key in the
/// second model's head stopped the run after the first model had scored every dataset. Now every head is
/// read while the config is checked, before any model loads.
#[test]
fn regression_a_bad_head_in_a_suite_stops_it_before_the_first_model_scores() {
    let dir = tempdir();
    write(
        dir.path(),
        "bad_head.json",
        r#"{"type": "logistic_regression", "coef": [0.1, 0.2], "intercept": 0.0, "treshold": 0.4}"#,
    );
    let config = suite_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "  - model: m2.onnx\n",
            "  - model: m2.onnx\n    head: bad_head.json\n",
        ),
    )
    .unwrap();
    let assert = esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&config)
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("bad_head.json: key `treshold` is not read; `threshold` is"),
        "{stderr}"
    );
    // Config checks create the output folders (to prove them writable) but nothing is scored into them.
    for pair in ["first/demo", "first/nanobodies", "m2/demo", "m2/nanobodies"] {
        let run = dir.path().join("results").join(pair);
        assert!(!run.join("predictions.csv").exists(), "{pair} was scored");
        assert!(!run.join("report.json").exists(), "{pair} was scored");
    }
}

/// Records the suite's baselines (exit 0) into `dir`/baselines and returns that folder.
fn record_suite_baselines(dir: &Path, config: &Path) -> PathBuf {
    let baselines = dir.join("baselines");
    esmbench()
        .args(["test", "--config"])
        .arg(config)
        .arg("--write-baseline")
        .arg(&baselines)
        .assert()
        .success();
    baselines
}

/// Regression: a model that could not load after an earlier model had scored ended the suite with no
/// summary and no gate results (the earlier model's regression unreported), and an older summary.json
/// still said `complete`.
#[test]
fn regression_a_model_that_fails_to_load_mid_suite_leaves_the_summary_and_the_gate_results() {
    let test =
        "regression_a_model_that_fails_to_load_mid_suite_leaves_the_summary_and_the_gate_results";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    let baselines = record_suite_baselines(dir.path(), &config);
    let tampered = baselines.join("first.nanobodies.json");
    raise_accuracy(&tampered.clone(), 0.3, &tampered);
    // Binary from its first byte, so it passes the text check and fails in ONNX Runtime's parser.
    std::fs::write(
        dir.path().join("m2.onnx"),
        [0x08, 0xff, 0xff, 0x00, 0x13, 0x37],
    )
    .unwrap();
    let assert = esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--baseline")
        .arg(&baselines)
        .assert()
        .code(2);
    let stdout = stdout_of(&assert);
    assert!(
        stdout.contains("regression gate: first on nanobodies") && stdout.contains("REGRESSION"),
        "{stdout}"
    );
    let summary = read_json(&dir.path().join("results/summary.json"));
    assert_eq!(summary["status"], "failed", "{summary}");
    let lines: Vec<(&str, &str, &str)> = summary["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["gate"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("first", "complete", "pass"),
            ("first", "complete", "regression"),
            ("m2", "failed", "-")
        ]
    );
    let error = summary["runs"][2]["error"].as_str().unwrap();
    assert!(
        error.contains("m2.onnx") && error.contains("fix:"),
        "{error}"
    );
}

/// Regression: a baseline that could not be compared (recorded on other data) left the run's gate `null`,
/// as if ungated, and only the first such run was reported; and the exit code followed whichever came first,
/// a regression (3) or such a baseline (2). The regression comes first here, and the exit is 2.
#[test]
fn regression_every_baseline_that_cannot_be_compared_marks_its_run_gate_error() {
    let test = "regression_every_baseline_that_cannot_be_compared_marks_its_run_gate_error";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    let baselines = record_suite_baselines(dir.path(), &config);
    let regressed = baselines.join("first.demo.json");
    raise_accuracy(&regressed.clone(), 0.3, &regressed);
    for pair in ["first.nanobodies", "m2.nanobodies"] {
        let path = baselines.join(format!("{pair}.json"));
        let mut json = read_json(&path);
        json["n"] = serde_json::json!(json["n"].as_u64().unwrap() - 1);
        std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    }
    let assert = esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--baseline")
        .arg(&baselines)
        .assert()
        .code(2);
    let stdout = stdout_of(&assert);
    for pair in ["first on nanobodies", "m2 on nanobodies"] {
        assert!(
            stdout.contains(&format!("gate not applied to {pair}: ")),
            "{pair}: {stdout}"
        );
    }
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    let summary = read_json(&dir.path().join("results/summary.json"));
    let gates: Vec<&str> = summary["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gate"].as_str().unwrap())
        .collect();
    assert_eq!(gates, ["regression", "error", "pass", "error"]);
    assert!(summary["runs"][1]["error"]
        .as_str()
        .unwrap()
        .contains("it describes other data"));
}

/// A threshold given on the command line is compared with every baseline before anything is scored.
#[test]
fn a_threshold_that_differs_from_a_suites_baselines_is_refused_before_scoring() {
    let test = "a_threshold_that_differs_from_a_suites_baselines_is_refused_before_scoring";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    let baselines = record_suite_baselines(dir.path(), &config);
    for pair in ["first/demo", "first/nanobodies", "m2/demo", "m2/nanobodies"] {
        std::fs::remove_dir_all(dir.path().join("results").join(pair)).unwrap();
    }
    let assert = esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--baseline")
        .arg(&baselines)
        .args(["--threshold", "0.4"])
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr
            .contains("first.demo.json was recorded at threshold 0.5, this run's threshold is 0.4"),
        "{stderr}"
    );
    assert!(!dir
        .path()
        .join("results/first/demo/predictions.csv")
        .exists());
}

#[test]
fn suite_baseline_paths_and_summary_names_that_cannot_work_are_refused_with_their_fix() {
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    let baseline_file = write(dir.path(), "one.json", "{}");
    for (flag, path, expected) in [
        (
            "--baseline",
            baseline_file.clone(),
            "is a file: in a suite, --baseline (or `baselines:`) names a folder of <model>.<data>.json files",
        ),
        (
            "--write-baseline",
            dir.path().join("new.json"),
            "names a file, and a suite records one baseline per run in a folder",
        ),
        (
            "--write-baseline",
            baseline_file.clone(),
            "names a file, and a suite records one baseline per run in a folder",
        ),
    ] {
        let assert = esmbench()
            .args(["test", "--config"])
            .arg(&config)
            .arg(flag)
            .arg(&path)
            .assert()
            .code(2);
        let stderr = stderr_of(&assert);
        assert!(stderr.contains(expected) && stderr.contains("fix:"), "{stderr}");
    }
    assert!(!dir.path().join("new.json").exists(), "a folder was made");
    let named = edited_config(
        &config,
        "named.yaml",
        "  - name: first\n",
        "  - name: summary.json\n",
    );
    let assert = esmbench()
        .args(["test", "--config"])
        .arg(&named)
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("model name `summary.json` is the name of the suite's own summary file"),
        "{stderr}"
    );
}

/// Regression: a suite entry's missing file was named as a flag the user never typed ("check the path given
/// to --data").
#[test]
fn regression_a_suite_entrys_missing_file_is_named_as_that_entry() {
    let dir = tempdir();
    let config = suite_config(dir.path(), "");
    let missing = edited_config(
        &config,
        "missing.yaml",
        "  - data: nanobodies.csv\n",
        "  - data: nowhere.csv\n",
    );
    let assert = esmbench()
        .args(["test", "--config"])
        .arg(&missing)
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("data file ") && stderr.contains("nowhere.csv not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("check the path given to `data:` of datasets[1] (in ")
            && !stderr.contains("--data"),
        "{stderr}"
    );
}

/// Regression: `--baseline` (or `--write-baseline`) on data with no labels scored every row before refusing,
/// an hour on a large set; a throughput-only baseline, which needs no labels, still runs.
#[test]
fn regression_a_gate_on_unlabeled_data_was_refused_only_after_scoring() {
    let dir = tempdir();
    let data = write(dir.path(), "unlabeled.csv", "sequence\nEVQL\nLAGV\n");
    let baseline = dir.path().join("b.json");
    let micro = fixture("esm2_micro.onnx");
    let stderr = stderr_of(
        &test_command(&micro, &data, &dir.path().join("o"))
            .arg("--mock-backend")
            .arg("--write-baseline")
            .arg(&baseline)
            .assert()
            .code(2),
    );
    assert!(
        stderr.contains("no row has a label, and the regression gate"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("o/predictions.csv").exists(),
        "scored before refusing"
    );
    test_command(&micro, &data, &dir.path().join("t"))
        .arg("--mock-backend")
        .arg("--write-baseline")
        .arg(&baseline)
        .args(["--throughput-tolerance", "0.5"])
        .assert()
        .success();
}
