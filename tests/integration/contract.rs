//! Model contract and device rules against real ONNX fixtures and the real runtime.

use crate::harness::*;
use crate::parity::{micro_csv, micro_probabilities};

fn micro_data(dir: &std::path::Path) -> std::path::PathBuf {
    micro_csv(dir, &(0..micro_probabilities().len()).collect::<Vec<_>>())
}

#[test]
fn models_breaking_the_contract_fail_before_any_work_with_exit_2() {
    if !runtime_available("models_breaking_the_contract_fail_before_any_work_with_exit_2") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    for (model, expected) in [
        (
            "contract/wrong_input_name.onnx",
            "no input named `input_ids`",
        ),
        ("contract/int32_ids.onnx", "must be int64"),
        ("contract/no_known_output.onnx", "no usable output"),
    ] {
        let out = dir.path().join(model.replace('/', "_"));
        let assert = esmbench()
            .args(["test", "--model"])
            .arg(fixture(model))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2);
        let stderr = stderr_of(&assert);
        assert!(stderr.contains(expected), "{model}: {stderr}");
        assert!(stderr.contains("fix:"), "{model}: {stderr}");
        assert!(
            !out.join("predictions.csv").exists(),
            "{model}: predictions written before the contract check"
        );
    }
}

#[test]
fn a_model_that_needs_a_head_and_has_none_is_refused() {
    if !runtime_available("a_model_that_needs_a_head_and_has_none_is_refused") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let assert = esmbench()
        .args(["test", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("needs a classifier head") && stderr.contains("--head"),
        "{stderr}"
    );

    let head = write(
        dir.path(),
        "h.json",
        r#"{"coef":[1.0,2.0,3.0],"intercept":0.0}"#,
    );
    let assert = esmbench()
        .args(["test", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--head")
        .arg(&head)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o2"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("3 coefficients") && stderr.contains("hidden size is 8"),
        "{stderr}"
    );
}

#[test]
fn pooled_logits_and_probability_outputs_give_the_reference_probabilities() {
    if !runtime_available("pooled_logits_and_probability_outputs_give_the_reference_probabilities")
    {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let expected = micro_probabilities();
    for (model, head, kind) in [
        (
            "contract/pooled_output.onnx",
            Some("esm2_micro.head.json"),
            "pooled_embedding",
        ),
        ("contract/logits_output.onnx", None, "logits"),
        ("contract/probability_output.onnx", None, "probability"),
    ] {
        let out = dir.path().join(kind);
        let mut cmd = esmbench();
        cmd.args(["test", "--model"])
            .arg(fixture(model))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out);
        if let Some(h) = head {
            cmd.arg("--head").arg(fixture(h));
        }
        cmd.assert().success();
        let got = column_f64(&read_csv(&out.join("predictions.csv")), "probability");
        let diff = max_abs_diff(&got, &expected);
        assert!(diff < 1e-5, "{model}: probabilities differ by {diff}");
        assert_eq!(read_json(&out.join("report.json"))["model"]["kind"], kind);
    }
}

#[test]
fn cuda_on_a_cpu_only_runtime_is_an_error_unless_fallback_is_allowed() {
    if !runtime_available("cuda_on_a_cpu_only_runtime_is_an_error_unless_fallback_is_allowed") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let model = fixture("esm2_micro_with_head.onnx");
    let assert = esmbench()
        .args(["test", "--device", "cuda", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("a"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("--device cuda was requested but cannot be used")
            && stderr.contains("CUDAExecutionProvider"),
        "{stderr}"
    );
    // A run refused for its device stops before the graph is read, so no note claims a rewrite.
    assert!(!stderr.contains("rewrote the graph"), "{stderr}");
    assert!(!dir.path().join("a/predictions.csv").exists());

    let config = write(
        dir.path(),
        "fallback.yaml",
        "device: cuda\nallow_cpu_fallback: true\n",
    );
    let out = dir.path().join("b");
    let assert = esmbench()
        .args(["test", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("WARNING: --device cuda is not usable"),
        "{stderr}"
    );
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["execution"]["device_requested"], "cuda");
    assert_eq!(
        report["execution"]["execution_provider"],
        "CPUExecutionProvider"
    );
    assert!(report["execution"]["fallback"]
        .as_str()
        .is_some_and(|f| f.contains("CUDA")));
}

#[test]
fn auto_picks_what_the_runtime_has_and_reports_it() {
    if !runtime_available("auto_picks_what_the_runtime_has_and_reports_it") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    esmbench()
        .args(["test", "--device", "auto", "--model"])
        .arg(fixture("esm2_micro_with_head.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path())
        .assert()
        .success();
    let report = read_json(&dir.path().join("report.json"));
    assert_eq!(report["execution"]["device_requested"], "auto");
    assert!(report["execution"]["execution_provider"]
        .as_str()
        .is_some_and(|p| p.ends_with("ExecutionProvider")));
}

#[test]
fn a_mask_expanded_in_every_layer_is_rewritten_at_load_without_changing_a_probability() {
    if !runtime_available(
        "a_mask_expanded_in_every_layer_is_rewritten_at_load_without_changing_a_probability",
    ) {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    // The micro fixture comes from transformers' exporter path, whose attention adds an expanded mask.
    let model = fixture("esm2_micro_with_head.onnx");
    let (rewritten, as_is) = (dir.path().join("rewritten"), dir.path().join("as-is"));
    let stderr_of = |assert: assert_cmd::assert::Assert| stderr_of(&assert);
    let stderr = stderr_of(test_command(&model, &data, &rewritten).assert().success());
    assert!(
        stderr.contains(&format!(
            "note: {}: rewrote the graph in memory (1 per-layer attention mask -> one broadcast key mask, 0 NaN guards removed, nodes 267 -> ",
            model.display()
        )),
        "no rewrite note in:\n{stderr}"
    );
    let report = read_json(&rewritten.join("report.json"));
    assert!(
        report["execution"]["graph_rewrite"]
            .as_str()
            .is_some_and(|r| r.starts_with("1 per-layer attention mask")),
        "{}",
        report["execution"]
    );

    let markdown = std::fs::read_to_string(rewritten.join("report.md")).expect("report.md");
    assert!(
        markdown.contains("| graph | rewritten in memory at load: 1 per-layer attention mask"),
        "{markdown}"
    );

    let command = format!(
        "python scripts/simplify_attention_mask.py {} OUT.onnx",
        model.display()
    );
    let stderr = stderr_of(
        test_command(&model, &data, &as_is)
            .arg("--no-graph-rewrite")
            .assert()
            .success(),
    );
    assert!(
        stderr.contains(&format!(
            "note: {}: 1 attention layer adds a [batch, 1, queries, keys] mask",
            model.display()
        )) && stderr.contains(&command)
            && stderr.contains("this run reads it as it is (--no-graph-rewrite")
            && !stderr.contains("rewrote"),
        "no advice in:\n{stderr}"
    );
    assert!(read_json(&as_is.join("report.json"))["execution"]["graph_rewrite"].is_null());
    // The same probabilities to the last digit written, row by row.
    let probabilities = |out: &std::path::Path| -> Vec<String> {
        read_csv(&out.join("predictions.csv"))
            .into_iter()
            .map(|row| row["probability"].clone())
            .collect()
    };
    assert_eq!(probabilities(&rewritten), probabilities(&as_is));
    assert_eq!(probabilities(&as_is).len(), 12);

    let stdout = inspect_text(&model);
    assert!(
        stdout.contains("advice: 1 attention layer adds") && stdout.contains(&command),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "graph rewrite at load: 1 per-layer attention mask -> one broadcast key mask"
        ),
        "{stdout}"
    );
}

#[test]
fn a_mask_the_probe_does_not_match_leaves_the_graph_as_it_is() {
    if !runtime_available("a_mask_the_probe_does_not_match_leaves_the_graph_as_it_is") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    // The fixture's padding value, float32 min, appears once in the file: make it -10000, a mask whose
    // padded keys the rewrite's key mask would not reproduce exactly.
    let mut bytes = std::fs::read(fixture("esm2_micro_with_head.onnx")).expect("fixture");
    let min = f32::MIN.to_le_bytes();
    let at: Vec<usize> = (0..bytes.len() - 3)
        .filter(|&i| bytes[i..i + 4] == min)
        .collect();
    assert_eq!(at.len(), 1, "float32 min at {at:?}");
    bytes[at[0]..at[0] + 4].copy_from_slice(&(-1e4f32).to_le_bytes());
    let model = dir.path().join("soft_mask.onnx");
    std::fs::write(&model, bytes).expect("write model");
    let out = dir.path().join("out");
    let assert = test_command(&model, &data, &out).assert().success();
    let stderr = stderr_of(&assert);
    assert!(
        stderr
            .contains("esmbench runs the graph as it is because the rewrite's probe failed: mask")
            && stderr.contains("is -1e4 at row"),
        "{stderr}"
    );
    let report = read_json(&out.join("report.json"));
    assert!(report["execution"]["graph_rewrite"].is_null());
    assert_eq!(report["data"]["rows_scored"], 12);
    let stdout = inspect_text(&model);
    assert!(
        stdout.contains("graph rewrite at load: none, the file runs as it is because the rewrite's probe failed: mask"),
        "{stdout}"
    );
}

#[test]
fn inspect_describes_inputs_outputs_metadata_and_the_plan() {
    if !runtime_available("inspect_describes_inputs_outputs_metadata_and_the_plan") {
        return;
    }
    let stdout = inspect_text(&fixture("esm2_micro_with_head.onnx"));
    for expected in [
        "input_ids int64 [?, ?]",
        "last_hidden_state float32 [?, ?, 8]",
        "esmbench.head",
        "mean-pool residue positions",
        "8 coefficients",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
}

/// Regression: `inspect --head` printed MISMATCH for a head of the wrong size and exited 0, so a script using
/// it as a pre-flight check went on to a run that `test` refuses.
#[test]
fn regression_inspect_exits_2_for_a_head_that_test_would_refuse() {
    if !runtime_available("regression_inspect_exits_2_for_a_head_that_test_would_refuse") {
        return;
    }
    let dir = tempdir();
    let wrong_size = write(
        dir.path(),
        "h.json",
        r#"{"type":"logistic_regression","coef":[0.1,0.2,0.3],"intercept":0.0}"#,
    );
    let inspect = |model: &str, head: &std::path::Path| {
        let assert = esmbench()
            .args(["inspect", "--model"])
            .arg(fixture(model))
            .arg("--head")
            .arg(head)
            .assert();
        let output = assert.get_output();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = inspect("esm2_micro.onnx", &wrong_size);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains("3 coefficients, the model's hidden size is 8: MISMATCH"),
        "{stdout}"
    );
    assert!(
        stderr.contains("fix: use the head trained on this model's embeddings"),
        "{stderr}"
    );
    let (code, _, stderr) = inspect(
        "contract/probability_output.onnx",
        &fixture("esm2_micro.head.json"),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--head would not be used"), "{stderr}");
    let (code, stdout, _) = inspect("esm2_micro.onnx", &fixture("esm2_micro.head.json"));
    assert_eq!(code, Some(0));
    assert!(stdout.contains("8 coefficients, threshold 0.5"), "{stdout}");
}

#[test]
fn a_missing_runtime_library_says_what_to_run() {
    let dir = tempdir();
    let assert = esmbench()
        .env("ORT_DYLIB_PATH", dir.path().join("libonnxruntime.so"))
        .args(["test", "--out"])
        .arg(dir.path())
        .assert()
        .code(1);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("ORT_DYLIB_PATH") && stderr.contains("setup_runtime.sh"),
        "{stderr}"
    );
}

/// ONNX Runtime 1.31's Linux builds start a telemetry client that `DisableTelemetryEvents` does not stop: it
/// writes a device id and an event store under $HOME/.cache/Microsoft and later looks up Microsoft's collector.
#[test]
fn onnx_runtime_telemetry_leaves_no_trace_in_home() {
    if !runtime_available("onnx_runtime_telemetry_leaves_no_trace_in_home") {
        return;
    }
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let data = micro_data(dir.path());
    test_command(
        &fixture("esm2_micro_with_head.onnx"),
        &data,
        &dir.path().join("o"),
    )
    .env("HOME", &home)
    .env_remove("XDG_CACHE_HOME")
    .env_remove("ORT_DISABLE_TELEMETRY")
    .assert()
    .success();
    let left: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the run wrote into $HOME: {left:?}");
}

/// Regression: the runtime library loads on its own thread while the data is validated, and a process that
/// exited on a validation error before that load finished printed ONNX Runtime "Schema error" lines and, about
/// one run in ten, died of a segmentation fault (exit 139). Fifty runs make a missed crash unlikely (0.9^50).
#[test]
fn regression_invalid_data_while_the_runtime_loads_exits_2_without_a_crash() {
    if !runtime_available("regression_invalid_data_while_the_runtime_loads_exits_2_without_a_crash")
    {
        return;
    }
    let dir = tempdir();
    let empty = write(dir.path(), "empty.csv", "");
    for attempt in 0..50 {
        let assert = test_command(
            &fixture("esm2_micro_with_head.onnx"),
            &empty,
            &dir.path().join("out"),
        )
        .assert();
        let output = assert.get_output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "run {attempt}: {:?}\n{stderr}",
            output.status
        );
        assert!(
            stderr.contains("the file is empty"),
            "run {attempt}: {stderr}"
        );
        assert!(!stderr.contains("Schema error"), "run {attempt}: {stderr}");
    }
}

/// Binary bytes that start as a model would (ir_version, then a graph) but cut short: ONNX Runtime refuses them.
/// (A text file is refused earlier, as the wrong kind of file.)
fn broken_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("broken.onnx");
    let mut bytes = vec![0x08, 0x0a, 0x3a, 0xff, 0xff, 0x01];
    bytes.extend_from_slice(b"not an ONNX file");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `--resume` with no checkpoint in --out is refused before the model loads: a file ONNX Runtime would
/// refuse is never opened, so the error is about the checkpoint, not the model.
#[test]
fn resume_with_nothing_to_resume_fails_before_the_model_loads() {
    if !runtime_available("resume_with_nothing_to_resume_fails_before_the_model_loads") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let not_a_model = broken_model(dir.path());
    let assert = test_command(&not_a_model, &data, &dir.path().join("out"))
        .arg("--resume")
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("has no checkpoint") && stderr.contains("fix: drop --resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot load the model"), "{stderr}");
}

/// Regression: a file that is not a model drew a note that "its attention layers add a mask expanded for each
/// layer" before ONNX Runtime's load error; the graph reader had failed, so nothing was known of its layers.
#[test]
fn regression_a_file_that_is_not_a_model_gets_the_load_error_and_no_note_about_attention() {
    if !runtime_available(
        "regression_a_file_that_is_not_a_model_gets_the_load_error_and_no_note_about_attention",
    ) {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let not_a_model = broken_model(dir.path());
    let assert = test_command(&not_a_model, &data, &dir.path().join("out"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("cannot load the model") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert!(!stderr.contains("attention"), "{stderr}");
}

/// An `--quantize int8-vnni` export (signed 8-bit weights) scored on an AVX2 CPU without VNNI ran through ONNX
/// Runtime's saturating u8 x s8 kernel: on this fixture max |Δp| against PyTorch float32 was 0.196 (0.003 with
/// the weights made unsigned at load); on ESM-2 8M a quarter of the labels flipped. On a CPU with VNNI, or off
/// x86, the kernel is exact anyway and this passes either way.
#[test]
fn regression_signed_int8_weights_score_near_pytorch_on_a_cpu_without_vnni() {
    let test = "regression_signed_int8_weights_score_near_pytorch_on_a_cpu_without_vnni";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let out = dir.path().join("int8");
    test_command(&fixture("contract/int8_signed_weights.onnx"), &data, &out)
        .arg("--head")
        .arg(fixture("esm2_micro.head.json"))
        .assert()
        .success();
    let ours = column_f64(&read_csv(&out.join("predictions.csv")), "probability");
    let torch = micro_probabilities();
    let worst = max_abs_diff(&ours, &torch);
    eprintln!("{test}: max |p_esmbench int8 - p_pytorch fp32| = {worst:.3e}");
    assert!(
        worst < 0.02,
        "max |dp| = {worst}: the u8 x s8 kernel saturated"
    );
}

/// Regression: a kernel failing at run time printed ONNX Runtime's own log line (ANSI red, a timestamp,
/// `[E:onnxruntime:...]`) before esmbench's error, so the same message came twice, the first time without the
/// fix. Now it comes once, in esmbench's error chain; `ORT_LOG` still lowers the level for a user who wants more.
#[test]
fn a_kernel_failure_is_reported_once_without_onnx_runtimes_own_log_line() {
    if !runtime_available("a_kernel_failure_is_reported_once_without_onnx_runtimes_own_log_line") {
        return;
    }
    let dir = tempdir();
    // Token ids above 7 (S is 8) are outside the fixture's 8-row table.
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence\nr1,LAGVLAGV\nr2,LAGVSLAG\n",
    );
    let assert = esmbench()
        .args(["embed", "--model"])
        .arg(fixture("contract/eight_token_vocabulary.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("e.npy"))
        .env_remove("ORT_LOG")
        .assert()
        .code(1);
    let stderr = stderr_of(&assert);
    assert_eq!(
        stderr.matches("indices element out of data bounds").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("\nerror: running a batch"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains("[E:onnxruntime"),
        "{stderr}"
    );
    assert!(!dir.path().join("e.npy").exists());

    let good = write(dir.path(), "g.csv", "id,sequence\nr1,LAGVLAGV\n");
    let assert = esmbench()
        .args(["embed", "--model"])
        .arg(fixture("contract/eight_token_vocabulary.onnx"))
        .arg("--data")
        .arg(&good)
        .arg("--out")
        .arg(dir.path().join("g.npy"))
        .env("ORT_LOG", "info")
        .assert()
        .success();
    let stderr = stderr_of(&assert);
    assert!(stderr.contains("onnxruntime info: "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

/// Regression: a float32 export over 2 GiB (ESM-1v, ESM-2 650M) keeps its weights in a `.onnx.data` file
/// beside the graph. Its report.json `model.sha256` and the resume fingerprint hashed the .onnx alone, the
/// same for any weights beside it, so a re-export with other weights (another ESM-1v seed) resumed a run
/// as the same model and reports could not tell the two apart; a .onnx copied without its data got ONNX
/// Runtime's load error. Now the data files are part of the model's SHA-256 (`cat m.onnx m.onnx.data |
/// sha256sum`), and a missing one is refused by name before anything runs.
#[test]
fn regression_an_external_data_model_scores_as_its_twin_and_its_weights_are_in_its_sha256() {
    use sha2::{Digest, Sha256};
    let test =
        "regression_an_external_data_model_scores_as_its_twin_and_its_weights_are_in_its_sha256";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let (model, weights) = copy_external_data_model(dir.path());
    let score = |out: &str| {
        let out = dir.path().join(out);
        let assert = external_data_test_command(&model, &data, &out).assert();
        (assert, out)
    };
    let (assert, out) = score("first");
    assert.success();
    let got = column_f64(&read_csv(&out.join("predictions.csv")), "probability");
    let diff = max_abs_diff(&got, &micro_probabilities());
    assert!(diff < 1e-5, "probabilities differ from PyTorch's by {diff}");
    let whole = [
        std::fs::read(&model).unwrap(),
        std::fs::read(&weights).unwrap(),
    ]
    .concat();
    let expected = format!("{:x}", Sha256::digest(&whole));
    let recorded = read_json(&out.join("report.json"))["model"]["sha256"].clone();
    assert_eq!(recorded, expected.as_str());

    let described = inspect_text(&model);
    let size = std::fs::metadata(&weights).unwrap().len();
    assert!(
        described.contains("weights in external data: ")
            && described.contains(&format!("external_data.onnx.data ({size} bytes")),
        "{described}"
    );

    // Other weights beside the same graph: another model, another SHA-256.
    let mut other = std::fs::read(&weights).unwrap();
    other[100] ^= 0x40;
    std::fs::write(&weights, &other).unwrap();
    let (assert, out) = score("other_weights");
    assert.success();
    assert_ne!(
        read_json(&out.join("report.json"))["model"]["sha256"],
        recorded
    );

    std::fs::remove_file(&weights).unwrap();
    let (assert, out) = score("missing");
    let stderr = String::from_utf8_lossy(&assert.code(2).get_output().stderr).to_string();
    assert!(
        stderr.contains("keeps its weights in")
            && stderr.contains("external_data.onnx.data, which is missing")
            && stderr.contains("fix: keep the external data file"),
        "{stderr}"
    );
    assert!(!out.join("predictions.csv").exists());
}

/// Regression: a model whose weights are in external data (an ESM-1v or ESM-2 650M export by transformers'
/// exporter) kept the per-layer attention mask: the rewrite at load gave up on it ("its weights are in
/// external data files, which an in-memory model cannot find"). ONNX Runtime is now told the model's folder,
/// where the rewritten graph finds the same data files, so such a model is rewritten like a self-contained
/// one and scores the same probabilities as without the rewrite.
#[test]
fn regression_a_model_with_external_weights_gets_the_load_time_rewrite() {
    let test = "regression_a_model_with_external_weights_gets_the_load_time_rewrite";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let (model, _) = copy_external_data_model(dir.path());
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let assert = external_data_test_command(&model, &data, &out)
            .args(extra)
            .assert()
            .success();
        let stderr = stderr_of(&assert);
        let probabilities = column_f64(&read_csv(&out.join("predictions.csv")), "probability");
        (stderr, read_json(&out.join("report.json")), probabilities)
    };
    let (stderr, report, rewritten) = run("rewritten", &[]);
    assert!(
        stderr.contains(&format!(
            "note: {}: rewrote the graph in memory (1 per-layer attention mask -> one broadcast key mask",
            model.display()
        )),
        "{stderr}"
    );
    assert!(
        report["execution"]["graph_rewrite"]
            .as_str()
            .is_some_and(|r| r.starts_with("1 per-layer attention mask")),
        "{}",
        report["execution"]
    );
    let (_, report, as_is) = run("as-is", &["--no-graph-rewrite"]);
    assert!(report["execution"]["graph_rewrite"].is_null());
    let diff = max_abs_diff(&rewritten, &as_is);
    assert!(diff <= 1e-6, "rewritten vs as is: max |dp| = {diff}");
    let diff = max_abs_diff(&rewritten, &micro_probabilities());
    assert!(diff < 1e-5, "rewritten vs PyTorch: max |dp| = {diff}");
    let described = inspect_text(&model);
    assert!(
        described.contains("graph rewrite at load: 1 per-layer attention mask"),
        "{described}"
    );
}

/// Runs `test` on a contract fixture whose output esmbench must refuse, and returns stderr after checking
/// the exit code (1, a model failure, not a panic's 101) and that no report claims the run complete.
fn refused_output(model: &str, head: Option<&str>) -> Option<String> {
    if !runtime_available(model) {
        return None;
    }
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence,label\nr1,LAGV,0\nr2,ACDEFGHIK,1\n",
    );
    let out = dir.path().join("out");
    let mut command = test_command(&fixture(model), &data, &out);
    if let Some(head) = head {
        command
            .arg("--head")
            .arg(write(dir.path(), "head.json", head));
    }
    let assert = command.assert().code(1);
    let stderr = stderr_of(&assert);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if let Ok(text) = std::fs::read_to_string(out.join("report.json")) {
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["status"], "failed", "{text}");
    }
    if let Ok(predictions) = std::fs::read_to_string(out.join("predictions.csv")) {
        assert!(!predictions.to_lowercase().contains("nan"), "{predictions}");
    }
    Some(stderr)
}

/// Regression: a NaN from the model (a float16 export that overflowed) was written to predictions.csv as
/// label 0, sorted first in the ROC curve and turned the Brier score and log loss into nulls in a report that
/// said `complete`. Now the run stops at the first such row and names it.
#[test]
fn regression_a_nan_probability_stops_the_run_naming_the_row() {
    let Some(stderr) = refused_output("contract/nan_probability.onnx", None) else {
        return;
    };
    assert!(
        stderr
            .contains("the model gave row 0 (id `r1`) the probability NaN, which is not in [0, 1]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: the model's outputs overflowed")
            && stderr.contains("score with the float32 export"),
        "{stderr}"
    );
}

#[test]
fn a_probability_output_outside_0_to_1_is_refused_with_the_logits_advice() {
    let Some(stderr) = refused_output("contract/unbounded_probability.onnx", None) else {
        return;
    };
    // r1 is LAGV: <cls>, 4 residues and <eos> are 6 tokens.
    assert!(
        stderr.contains("the model gave row 0 (id `r1`) the probability 6, which is not in [0, 1]"),
        "{stderr}"
    );
    assert!(stderr.contains("name the output `logits`"), "{stderr}");
}

/// Regression: a hidden-state output shorter than the batch's sequence axis panicked in the residue pooling
/// (exit 101) instead of saying what is wrong with the model.
#[test]
fn regression_an_output_that_does_not_follow_the_input_axes_is_an_error_not_a_panic() {
    let head = r#"{"type":"logistic_regression","pooling":"mean_residues","threshold":0.5,"coef":[0.1,0.2,0.3,0.4],"intercept":0.0}"#;
    let Some(stderr) = refused_output("contract/short_sequence_output.onnx", Some(head)) else {
        return;
    };
    let found = stderr
        .lines()
        .find(|l| l.contains("has shape ["))
        .unwrap_or_else(|| panic!("{stderr}"));
    // The fixture cuts the sequence axis to 2 whatever the batch's length is.
    assert!(
        found.contains(", 2, 4] for this batch, expected ["),
        "{found}"
    );
    assert!(found.ends_with(", 4]"), "{found}");
    assert!(
        stderr.contains("fix: export the model with dynamic batch and sequence axes"),
        "{stderr}"
    );
}

/// Regression: `--head` on a model that outputs its own probabilities was read, its coefficients ignored, its
/// threshold applied and its name written to the report as the head used.
#[test]
fn regression_a_head_for_a_model_that_outputs_probabilities_is_refused() {
    if !runtime_available("regression_a_head_for_a_model_that_outputs_probabilities_is_refused") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let out = dir.path().join("out");
    let assert = test_command(&fixture("contract/probability_output.onnx"), &data, &out)
        .arg("--head")
        .arg(fixture("esm2_micro.head.json"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(stderr.contains("would not be used"), "{stderr}");
    assert!(stderr.contains("outputs probability itself"), "{stderr}");
    assert!(!out.join("predictions.csv").exists());
}

/// Regression: an `ORT_LOG` that is no level (`ORT_LOG=debug`) left the runtime's log at error without a word.
#[test]
fn regression_an_ort_log_that_is_no_level_was_ignored_silently() {
    if !runtime_available("regression_an_ort_log_that_is_no_level_was_ignored_silently") {
        return;
    }
    let dir = tempdir();
    let data = micro_data(dir.path());
    let stderr = stderr_of(
        &test_command(
            &fixture("esm2_micro_with_head.onnx"),
            &data,
            &dir.path().join("o"),
        )
        .env("ORT_LOG", "debug")
        .assert()
        .success(),
    );
    assert!(
        stderr.contains("warning: ORT_LOG=debug is not a level")
            && stderr.contains("fix: set ORT_LOG to fatal, error, warning, info or verbose"),
        "{stderr}"
    );
}

/// Regression: `inspect` on a model that outputs probabilities or logits said "head: not needed (inputs
/// `input_ids` and `attention_mask` (int64, [batch, seq]))", a fragment of the contract's help.
#[test]
fn regression_inspect_said_head_not_needed_with_a_fragment_of_the_contract() {
    if !runtime_available("regression_inspect_said_head_not_needed_with_a_fragment_of_the_contract")
    {
        return;
    }
    for (model, kind) in [
        ("contract/logits_output.onnx", "logits"),
        ("contract/probability_output.onnx", "probability"),
    ] {
        let described = inspect_text(&fixture(model));
        assert!(
            described.contains(&format!("head: not needed (the model outputs {kind}")),
            "{described}"
        );
        assert!(
            !described.contains("head: not needed (inputs"),
            "{described}"
        );
    }
}
