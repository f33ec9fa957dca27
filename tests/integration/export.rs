//! Export round trip: scripts/export_onnx.py --random-init (real PyTorch, no network) -> esmbench -> PyTorch.
//!
//! Each test exports a random-init model with a head made here, has the script write PyTorch's
//! probabilities for a CSV, scores the exported file with `esmbench test` and compares. Python comes
//! from ESMBENCH_PYTHON, else the project's .venv; without one that imports torch the tests skip with a
//! message, unless ESMBENCH_REQUIRE_EXPORT=1 (scripts/test.sh sets it), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// Largest |p_esmbench - p_pytorch| accepted: float32 ONNX Runtime vs float32 PyTorch.
const TOLERANCE: f64 = 1e-4;

fn candidate_pythons() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("ESMBENCH_PYTHON").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let venv = root().join(".venv");
    vec![venv.join("bin/python"), venv.join("Scripts/python.exe")]
}

/// A Python that can run the export script, or None (with a skip message) where none is set up.
fn python(test: &str) -> Option<PathBuf> {
    let probe = "import torch, transformers, onnx, onnxruntime, sklearn";
    let mut tried = Vec::new();
    for candidate in candidate_pythons() {
        let ok = Command::new(&candidate)
            .args(["-c", probe])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    let why = format!(
        "no Python with torch, transformers, onnx, onnxruntime and scikit-learn (tried {}); \
         run `export ESMBENCH_PYTHON=\"$(scripts/setup_export_env.sh)\"`",
        tried.join(", ")
    );
    if std::env::var("ESMBENCH_REQUIRE_EXPORT").as_deref() == Ok("1") {
        panic!("the export round trip is required here (ESMBENCH_REQUIRE_EXPORT=1): {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

fn ready(test: &str) -> Option<PathBuf> {
    let python = python(test)?;
    runtime_available(test).then_some(python)
}

/// Runs `python scripts/export_onnx.py ARGS`; returns (success, stdout + stderr).
fn export(python: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(python)
        .arg(root().join("scripts/export_onnx.py"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn run_python(python: &Path, code: &str, args: &[&Path]) {
    let output = Command::new(python)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python helper failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A logistic head for hidden size 32 with coefficients large enough to spread the probabilities.
fn head_json(dir: &Path) -> PathBuf {
    let coef: Vec<String> = (0..32)
        .map(|i| format!("{:.3}", ((i * 7919 % 13) as f64 - 6.0) * 0.4))
        .collect();
    write(
        dir,
        "head.json",
        &format!(
            r#"{{"type": "logistic_regression", "pooling": "mean_residues", "threshold": 0.5, "coef": [{}], "intercept": 0.25}}"#,
            coef.join(", ")
        ),
    )
}

/// The demo set plus rows at and past ESM's 1022-residue limit (esmbench and the reference both
/// keep the first 1022 residues), so learned absolute positions are used up to the last one.
fn data_with_long_rows(dir: &Path) -> PathBuf {
    let demo = std::fs::read_to_string(root().join("test_datasets/demo_antibodies.csv"))
        .expect("demo csv");
    let header = demo.lines().next().expect("header");
    assert_eq!(header, "id,sequence,label", "demo csv columns changed");
    let residues = "ACDEFGHIKLMNPQRSTVWY";
    let long = |n: usize| -> String { residues.chars().cycle().skip(n % 7).take(n).collect() };
    let mut text = demo.trim_end().to_string();
    for (i, n) in [1022, 1100, 700].iter().enumerate() {
        text.push_str(&format!("\nlong-{i},{},{}", long(*n), i % 2));
    }
    text.push('\n');
    write(dir, "data.csv", &text)
}

/// `export_onnx.py` arguments: random-init tiny (seed 0) with `head`, and PyTorch's probabilities for `data`.
fn tiny_export_args(head: &Path, model: &Path, data: &Path, reference: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--random-init", "tiny", "--seed", "0"]
        .map(String::from)
        .to_vec();
    for (flag, path) in [
        ("--head", head),
        ("--out", model),
        ("--reference-data", data),
        ("--reference-out", reference),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args
}

/// Runs scripts/simplify_attention_mask.py IN OUT.
fn simplify_attention_mask(python: &Path, model: &Path, out: &Path) -> std::process::Output {
    Command::new(python)
        .arg(root().join("scripts/simplify_attention_mask.py"))
        .arg(model)
        .arg(out)
        .output()
        .expect("python runs")
}

/// [`simplify_attention_mask`], which must succeed; returns what it printed.
fn simplified_log(python: &Path, model: &Path, out: &Path) -> String {
    let output = simplify_attention_mask(python, model, out);
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    log
}

/// Scores `model` with esmbench and returns (esmbench, PyTorch) probabilities in row order.
fn score_and_compare(model: &Path, reference: &Path, data: &Path, out: &Path) -> Vec<f64> {
    let ours = score(model, data, out);
    let theirs = read_csv(reference);
    assert_eq!(ours.len(), theirs.len(), "row counts differ");
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a["row"], b["row"]);
        assert_eq!(a["id"], b["id"]);
    }
    let p_ours = column_f64(&ours, "probability");
    let p_torch = column_f64(&theirs, "probability");
    let diff = max_abs_diff(&p_ours, &p_torch);
    eprintln!(
        "{}: max |p_esmbench - p_pytorch| = {diff:.3e} over {} rows",
        model.display(),
        p_ours.len()
    );
    assert!(diff < TOLERANCE, "max |p_esmbench - p_pytorch| = {diff:e}");
    // A head that gives every row the same probability would make the comparison vacuous.
    let spread = p_torch.iter().cloned().fold(f64::MIN, f64::max)
        - p_torch.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread > 0.05,
        "reference probabilities barely vary ({spread})"
    );
    let report = read_json(&out.join("report.json"));
    assert!(
        report["model"]["head_source"]
            .as_str()
            .unwrap_or_default()
            .contains("esmbench.head"),
        "the head should come from the model's metadata: {}",
        report["model"]["head_source"]
    );
    p_ours
}

#[test]
fn export_tiny_with_json_head_matches_pytorch() {
    let test = "export_tiny_with_json_head_matches_pytorch";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let head = head_json(dir.path());
    let model = dir.path().join("tmp/M.onnx");
    let reference = dir.path().join("torch.csv");
    let data = root().join("test_datasets/demo_antibodies.csv");
    let args = tiny_export_args(&head, &model, &data, &reference);
    let (ok, log) = export(
        &python,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(ok, "export failed:\n{log}");
    assert!(log.contains("largest |ONNX - PyTorch|"), "{log}");
    score_and_compare(&model, &reference, &data, &dir.path().join("run"));

    let text = inspect_text(&model);
    for expected in [
        "esmbench.checkpoint = random-init:tiny:seed=0",
        "esmbench.revision = random-init",
        "esmbench.precision = fp32",
        "esmbench.torch = ",
        "esmbench.onnxruntime = ",
    ] {
        assert!(
            text.contains(expected),
            "inspect lacks `{expected}`:\n{text}"
        );
    }
}

#[test]
fn export_esm1v_tiny_with_sklearn_pickle_matches_predict_proba() {
    let test = "export_esm1v_tiny_with_sklearn_pickle_matches_predict_proba";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let data = data_with_long_rows(dir.path());
    let pickle = dir.path().join("head.pkl");
    // The real workflow: a StandardScaler + LogisticRegression pipeline trained on this model's
    // PyTorch embeddings of the data's labels, pickled with the standard library. The script folds
    // the scaler into the head; the reference uses predict_proba itself.
    run_python(
        &python,
        "import pickle, sys\n\
         sys.path.insert(0, sys.argv[1])\n\
         import export_onnx as ex\n\
         from sklearn.linear_model import LogisticRegression\n\
         from sklearn.pipeline import make_pipeline\n\
         from sklearn.preprocessing import StandardScaler\n\
         sequences, labels, _ = ex.read_sequences(sys.argv[2])\n\
         x = ex.torch_embeddings(ex.random_init_model('esm1v_tiny', 0), sequences)\n\
         clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(x, [int(float(y)) for y in labels])\n\
         pickle.dump(clf, open(sys.argv[3], 'wb'))\n",
        &[&root().join("scripts"), &data, &pickle],
    );
    let model = dir.path().join("esm1v.onnx");
    let reference = dir.path().join("torch.csv");
    let (ok, log) = export(
        &python,
        &[
            "--random-init",
            "esm1v_tiny",
            "--seed",
            "0",
            "--sklearn",
            pickle.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
            "--reference-data",
            data.to_str().unwrap(),
            "--reference-out",
            reference.to_str().unwrap(),
        ],
    );
    assert!(ok, "export failed:\n{log}");
    assert!(log.contains("batch 2 x 1024 tokens"), "{log}");
    let out = dir.path().join("run");
    score_and_compare(&model, &reference, &data, &out);
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["data"]["rows_truncated"], 1, "the 1100-residue row");

    // Regression: --max-residues above the learned positions failed the run at the first long batch,
    // with ONNX Runtime's "indices element out of data bounds" in the position-embedding Gather.
    let assert = test_command(&model, &data, &dir.path().join("too-long"))
        .args(["--max-residues", "1100"])
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("--max-residues 1100 is more than this model can read: its learned position embeddings (ESM-1b/ESM-1v style) end at 1022 residues")
            && stderr.contains("fix: use --max-residues 1022 or less"),
        "{stderr}"
    );
    assert!(!stderr.contains("out of data bounds"), "{stderr}");
    assert!(
        inspect_text(&model).contains("longest row: 1022 residues (learned position embeddings)"),
        "{}",
        inspect_text(&model)
    );
}

#[test]
fn export_refuses_over_tolerance_and_leaves_no_file() {
    let test = "export_refuses_over_tolerance_and_leaves_no_file";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let npz = dir.path().join("head.npz");
    run_python(
        &python,
        "import sys, numpy as np\n\
         np.savez(sys.argv[1], coef=np.linspace(-1, 1, 32), intercept=np.array([0.1]))\n",
        &[&npz],
    );
    let model = dir.path().join("refused.onnx");
    // float32 ONNX Runtime and PyTorch never agree to 1e-12, so the export must be refused.
    let (ok, log) = export(
        &python,
        &[
            "--random-init",
            "tiny",
            "--npz",
            npz.to_str().unwrap(),
            "--tolerance",
            "1e-12",
            "--out",
            model.to_str().unwrap(),
        ],
    );
    assert!(!ok, "an export over tolerance must fail:\n{log}");
    assert!(log.contains("refusing export"), "{log}");
    assert!(log.contains("head: npz (head.npz)"), "{log}");
    assert!(!model.exists(), "a refused export must not leave its file");
}

#[test]
fn reduced_precision_exports_stay_near_pytorch_and_record_their_precision() {
    let test = "reduced_precision_exports_stay_near_pytorch_and_record_their_precision";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let head = head_json(dir.path());
    let data = root().join("test_datasets/demo_antibodies.csv");
    for (name, flags, precision) in [
        ("fp16", &["--fp16"][..], "fp16"),
        ("int8", &["--optimize", "--quantize", "int8"][..], "int8"),
        ("int8-vnni", &["--quantize", "int8-vnni"][..], "int8-vnni"),
    ] {
        let model = dir.path().join(format!("{name}.onnx"));
        let reference = dir.path().join(format!("{name}.torch.csv"));
        let mut args = tiny_export_args(&head, &model, &data, &reference);
        args.extend(flags.iter().map(|f| f.to_string()));
        let (ok, log) = export(
            &python,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(ok, "{name} export failed:\n{log}");
        assert!(log.contains(&format!("{precision} check: ")), "{log}");

        let p_ours = score_probabilities(&model, &data, &dir.path().join(name));
        let p_torch = column_f64(&read_csv(&reference), "probability");
        let mean = mean_abs_diff(&p_ours, &p_torch);
        eprintln!("{name}: mean |p_esmbench - p_pytorch fp32| = {mean:.3e}");
        // The export's own check refuses above 0.05 mean |dp| on its sample; the same bound here.
        assert!(mean < 0.05, "{name}: mean |dp| = {mean}");

        let text = inspect_text(&model);
        assert!(
            text.contains(&format!("esmbench.precision = {precision}\n")),
            "{name}: inspect lacks the precision:\n{text}"
        );
    }
}

#[test]
fn simplify_attention_mask_rewrites_an_existing_export_without_changing_a_prediction() {
    let test = "simplify_attention_mask_rewrites_an_existing_export_without_changing_a_prediction";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let original = fixture("esm2_micro_with_head.onnx");
    let rewritten = dir.path().join("simplified.onnx");
    let log = simplified_log(&python, &original, &rewritten);
    assert!(
        log.contains("1 attention masks now one broadcast key mask"),
        "{log}"
    );

    let data = root().join("test_datasets/demo_antibodies.csv");
    let mut probabilities = Vec::new();
    for (name, model) in [("original", &original), ("simplified", &rewritten)] {
        probabilities.push(score_probabilities(model, &data, &dir.path().join(name)));
    }
    let diff = max_abs_diff(&probabilities[0], &probabilities[1]);
    eprintln!("simplified micro fixture: max |dp| = {diff:.3e}");
    assert!(diff <= 1e-6, "max |dp| = {diff}");
    // esmbench's advice to run the script goes away once it has run.
    assert!(inspect_text(&original).contains("advice: 1 attention layer adds"));
    let text = inspect_text(&rewritten);
    assert!(
        text.contains("esmbench will read")
            && !text.contains("advice:")
            && !text.contains("graph rewrite at load:"),
        "{text}"
    );

    // A graph without ESM's attention is refused and nothing is written.
    let refused = dir.path().join("refused.onnx");
    let output = simplify_attention_mask(
        &python,
        &fixture("contract/wrong_input_name.onnx"),
        &refused,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing written"));
    assert!(!refused.exists());
}

/// Length of the mean (over rows) of `ours - reference`: the drift every row shares.
fn shared_drift(ours: &ndarray::Array2<f32>, reference: &ndarray::Array2<f32>) -> f64 {
    assert_eq!(ours.dim(), reference.dim());
    let diff = (ours - reference).mapv(f64::from);
    let mean = diff.mean_axis(ndarray::Axis(0)).expect("rows");
    mean.dot(&mean).sqrt()
}

#[test]
fn int8_bias_correction_takes_the_shared_drift_off_the_embeddings() {
    let test = "int8_bias_correction_takes_the_shared_drift_off_the_embeddings";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    // Calibrate on half the demo antibodies, measure on the other half against float32 PyTorch.
    let demo = std::fs::read_to_string(root().join("test_datasets/demo_antibodies.csv"))
        .expect("demo csv");
    let lines: Vec<&str> = demo.lines().collect();
    let half = 1 + (lines.len() - 1) / 2;
    let calibration = write(
        dir.path(),
        "calibration.csv",
        &(lines[..half].join("\n") + "\n"),
    );
    let held_out = write(
        dir.path(),
        "held_out.csv",
        &format!("{}\n{}\n", lines[0], lines[half..].join("\n")),
    );
    let torch = dir.path().join("torch.npy");
    let mut drift = Vec::new();
    for corrected in [false, true] {
        let model = dir.path().join(format!("int8-{corrected}.onnx"));
        let mut args: Vec<String> = ["--random-init", "tiny", "--quantize", "int8", "--out"]
            .map(String::from)
            .to_vec();
        args.push(model.display().to_string());
        if corrected {
            args.extend(["--calibration".into(), calibration.display().to_string()]);
        } else {
            args.extend([
                "--reference-data".into(),
                held_out.display().to_string(),
                "--reference-embeddings".into(),
                torch.display().to_string(),
            ]);
        }
        let (ok, log) = export(
            &python,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(ok, "export failed:\n{log}");
        let recorded = if corrected {
            assert!(
                log.contains(&format!(
                    "bias correction: 12 MatMul biases corrected from {} sequences",
                    half - 1
                )),
                "{log}"
            );
            format!(
                "esmbench.bias_correction = {} sequences from calibration.csv\n",
                half - 1
            )
        } else {
            "esmbench.bias_correction = none\n".to_string()
        };
        let text = inspect_text(&model);
        assert!(
            text.contains(&recorded),
            "inspect lacks `{recorded}`:\n{text}"
        );
        let ours = embed(
            &model,
            &held_out,
            &dir.path().join(format!("{corrected}.npy")),
        );
        let reference: ndarray::Array2<f32> = ndarray_npy::read_npy(&torch).expect("torch npy");
        drift.push(shared_drift(&ours, &reference));
    }
    eprintln!(
        "int8 shared embedding drift vs PyTorch on held-out rows: plain {:.3e}, bias-corrected {:.3e}",
        drift[0], drift[1]
    );
    assert!(
        drift[1] < 0.5 * drift[0],
        "bias correction should take off most of the shared drift: {drift:?}"
    );

    let (ok, log) = export(
        &python,
        &[
            "--random-init",
            "tiny",
            "--calibration",
            &calibration.display().to_string(),
            "--out",
            &dir.path().join("fp32.onnx").display().to_string(),
        ],
    );
    assert!(
        !ok && log.contains("--calibration corrects int8 weights; it needs --quantize"),
        "{log}"
    );
}

#[test]
fn int8_keep_fp32_leaves_the_named_matmuls_in_float32() {
    let test = "int8_keep_fp32_leaves_the_named_matmuls_in_float32";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let head = head_json(dir.path());
    let data = root().join("test_datasets/demo_antibodies.csv");
    let model = dir.path().join("mixed.onnx");
    let reference = dir.path().join("torch.csv");
    let mut args = tiny_export_args(&head, &model, &data, &reference);
    // --optimize first: the groups are found by node name, and the names must survive the fusions.
    args.extend(
        [
            "--optimize",
            "--quantize",
            "int8-vnni",
            "--keep-fp32",
            "attention-output",
            "--keep-fp32",
            "ffn-out",
        ]
        .map(String::from),
    );
    let (ok, log) = export(
        &python,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(ok, "export failed:\n{log}");
    // The tiny architecture has 2 layers: per layer, the attention output and FFN output stay float32,
    // query, key, value and FFN input become MatMulInteger.
    assert!(
        log.contains("kept in float32: 4 MatMuls (attention-output, ffn-out)"),
        "{log}"
    );
    run_python(
        &python,
        r#"
import re, sys, onnx
graph = onnx.load(sys.argv[1]).graph
constants = {t.name for t in graph.initializer}
kept = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]
integer = [n.name for n in graph.node if n.op_type == "MatMulInteger"]
assert len(kept) == 4 and all(re.search(r"/(attention/output|layer\.\d+/output)/dense/MatMul$", n) for n in kept), kept
assert len(integer) == 8 and not any("/output/dense/" in n for n in integer), integer
"#,
        &[&model],
    );
    let text = inspect_text(&model);
    assert!(
        text.contains("esmbench.fp32_matmuls = attention-output,ffn-out (4 MatMuls)\n"),
        "inspect lacks the kept MatMuls:\n{text}"
    );
    let p_ours = score_probabilities(&model, &data, &dir.path().join("scored"));
    let p_torch = column_f64(&read_csv(&reference), "probability");
    let mean = mean_abs_diff(&p_ours, &p_torch);
    assert!(mean < 0.05, "mean |dp| vs PyTorch = {mean}");

    let (ok, log) = export(
        &python,
        &[
            "--random-init",
            "tiny",
            "--keep-fp32",
            "ffn-in",
            "--out",
            &dir.path().join("fp32.onnx").display().to_string(),
        ],
    );
    assert!(
        !ok && log.contains("--keep-fp32 picks MatMuls to leave out of int8; it needs --quantize"),
        "{log}"
    );
}

/// Regression: simplify_attention_mask.py loaded a model's external data into memory and serialized the
/// model whole, which protobuf refuses over 2 GB: on a float32 ESM-1v export from transformers' exporter it
/// failed after 40 s with "EncodeError: Failed to serialize proto". It now rewrites the graph alone: the
/// output .onnx names the same data file, linked (or copied) beside it in another folder, and scores as the
/// original does.
#[test]
fn regression_simplify_attention_mask_keeps_external_weights_in_their_files() {
    let test = "regression_simplify_attention_mask_keeps_external_weights_in_their_files";
    let Some(python) = ready(test) else { return };
    let dir = tempdir();
    let source = dir.path().join("export");
    std::fs::create_dir(&source).unwrap();
    let (original, weights) = copy_external_data_model(&source);
    let rewritten = dir.path().join("simplified").join("external_data.onnx");
    let log = simplified_log(&python, &original, &rewritten);
    assert!(
        log.contains("1 attention masks now one broadcast key mask")
            && log.contains("(its weights in external_data.onnx.data)"),
        "{log}"
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&rewritten) <= size(&original),
        "the weights were written into the .onnx: {} bytes against {}",
        size(&rewritten),
        size(&original)
    );
    assert_eq!(
        std::fs::read(rewritten.with_extension("onnx.data")).unwrap(),
        std::fs::read(&weights).unwrap()
    );

    let data = root().join("test_datasets/demo_antibodies.csv");
    let mut probabilities = Vec::new();
    for (name, model) in [("original", &original), ("simplified", &rewritten)] {
        let out = dir.path().join(name);
        external_data_test_command(model, &data, &out)
            .arg("--no-graph-rewrite")
            .assert()
            .success();
        probabilities.push(column_f64(
            &read_csv(&out.join("predictions.csv")),
            "probability",
        ));
    }
    let diff = max_abs_diff(&probabilities[0], &probabilities[1]);
    assert!(diff <= 1e-6, "max |dp| = {diff}");
    assert!(!inspect_text(&rewritten).contains("advice:"));
}

/// Regression: the export embedded heads that `esmbench test` then refused (a `treshold` key, a threshold of
/// 1.5 or NaN, coefficients written as strings), after an export that takes minutes on a large model, and a
/// --sklearn file that is not a pickle ended in a Python traceback.
#[test]
fn export_refuses_a_head_esmbench_would_refuse_before_exporting() {
    let test = "export_refuses_a_head_esmbench_would_refuse_before_exporting";
    let Some(python) = python(test) else { return };
    let dir = tempdir();
    let coef = || (0..32).map(|_| "0.1").collect::<Vec<_>>().join(", ");
    let cases = [
        (
            format!(
                r#"{{"coef": [{}], "intercept": 0.0, "treshold": 0.4}}"#,
                coef()
            ),
            "key `treshold` is not read; `threshold` is",
        ),
        (
            format!(
                r#"{{"coef": [{}], "intercept": 0.0, "threshold": 1.5}}"#,
                coef()
            ),
            "threshold 1.5 is not a probability",
        ),
        (
            r#"{"coef": ["0.1"], "intercept": 0.0, "threshold": 0.5}"#.to_string(),
            "coef must be a list of numbers",
        ),
        (
            format!(r#"{{"coef": [{}], "intercept": NaN}}"#, coef()),
            "not a head JSON (NaN is not a number a head may hold)",
        ),
    ];
    let model = dir.path().join("m.onnx");
    for (i, (text, expected)) in cases.iter().enumerate() {
        let head = write(dir.path(), &format!("h{i}.json"), text);
        let (ok, log) = export(
            &python,
            &[
                "--random-init",
                "tiny",
                "--head",
                head.to_str().unwrap(),
                "--out",
                model.to_str().unwrap(),
            ],
        );
        assert!(!ok && log.contains(expected), "{text}:\n{log}");
        assert!(!log.contains("Traceback"), "{log}");
        assert!(
            !model.exists(),
            "{text}: a refused head must leave no model"
        );
    }
    let good = head_json(dir.path());
    let (ok, log) = export(
        &python,
        &[
            "--random-init",
            "tiny",
            "--head",
            good.to_str().unwrap(),
            "--threshold",
            "nan",
            "--out",
            model.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && log.contains("--threshold nan is not a probability in [0, 1]"),
        "{log}"
    );
    let (ok, log) = export(
        &python,
        &[
            "--random-init",
            "tiny",
            "--sklearn",
            good.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
        ],
    );
    assert!(!ok && log.contains("not a pickle or joblib file"), "{log}");
    assert!(!log.contains("Traceback"), "{log}");
    assert!(!model.exists());
    // --npz given a single .npy array, or an archive whose threshold holds two values: each was a traceback.
    let (array, two_thresholds) = (dir.path().join("coef.npy"), dir.path().join("two.npz"));
    run_python(
        &python,
        "import sys, numpy as np\n\
         np.save(sys.argv[1], np.zeros(32))\n\
         np.savez(sys.argv[2], coef=np.zeros(32), intercept=np.array([0.1]), threshold=np.array([0.4, 0.6]))\n",
        &[&array, &two_thresholds],
    );
    for (npz, expected) in [
        (
            &array,
            "a single .npy array, not an .npz archive of named arrays; write one with np.savez(",
        ),
        (
            &two_thresholds,
            "two.npz: threshold has 2 values; a head has one",
        ),
    ] {
        let (ok, log) = export(
            &python,
            &[
                "--random-init",
                "tiny",
                "--npz",
                npz.to_str().unwrap(),
                "--out",
                model.to_str().unwrap(),
            ],
        );
        assert!(!ok && log.contains(expected), "{log}");
        assert!(!log.contains("Traceback"), "{log}");
        assert!(!model.exists());
    }
    // Flags of the other source were accepted and did nothing.
    for (args, expected) in [
        (
            ["--random-init", "tiny", "--revision", "main"],
            "--revision picks a Hub revision of --checkpoint",
        ),
        (
            ["--checkpoint", "./no_such_folder", "--seed", "3"],
            "--seed seeds --random-init's weights",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--out", model.to_str().unwrap()]);
        let (ok, log) = export(&python, &all);
        assert!(!ok && log.contains(expected), "{log}");
    }
    let (ok, log) = export(
        &python,
        &[
            "--checkpoint",
            "./no_such_folder",
            "--out",
            model.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && log.contains("--checkpoint ./no_such_folder: no such folder"),
        "{log}"
    );
}

/// Regression: a Pipeline of StandardScaler(with_mean=False) and LogisticRegression was folded as if the
/// scaler subtracted its mean (scikit-learn learns `mean_` either way), and refused as disagreeing with
/// predict_proba by 0.5.
#[test]
fn a_scaler_without_centering_folds_into_the_head_as_predict_proba_computes() {
    let test = "a_scaler_without_centering_folds_into_the_head_as_predict_proba_computes";
    let Some(python) = python(test) else { return };
    run_python(
        &python,
        "import sys\n\
         sys.path.insert(0, sys.argv[1])\n\
         import numpy as np, export_onnx as ex\n\
         from sklearn.linear_model import LogisticRegression\n\
         from sklearn.pipeline import make_pipeline\n\
         from sklearn.preprocessing import StandardScaler\n\
         rng = np.random.default_rng(1)\n\
         x = rng.normal(loc=3.0, size=(200, 8)); y = (x[:, 0] + rng.normal(size=200) > 3).astype(int)\n\
         for scaler in (StandardScaler(with_mean=False), StandardScaler(with_std=False), StandardScaler()):\n\
         \tpipe = make_pipeline(scaler, LogisticRegression()).fit(x, y)\n\
         \tcoef, intercept, _ = ex._fold_sklearn(pipe, 'p.pkl')\n\
         \thead = {'coef': list(coef), 'intercept': intercept}\n\
         \tmine = np.array([ex.head_probability(head, row) for row in x])\n\
         \tdiff = np.max(np.abs(mine - pipe.predict_proba(x)[:, 1]))\n\
         \tassert diff < 1e-12, (scaler, diff)\n",
        &[&root().join("scripts")],
    );
}
