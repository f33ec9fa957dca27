//! Parity with independent references: PyTorch embeddings and scikit-learn probabilities in ../shared,
//! and the PyTorch reference committed with the micro fixture.

use std::collections::HashMap;
use std::path::Path;

use crate::harness::*;

const MODEL_8M: &str = "esm2_t6_8M_seed0";

/// Runs `esmbench test` and returns predictions.csv rows.
fn score(
    model: &Path,
    head: Option<&Path>,
    data: &Path,
    out: &Path,
    extra: &[&str],
) -> Vec<HashMap<String, String>> {
    let mut cmd = test_command(model, data, out);
    cmd.args(extra);
    if let Some(h) = head {
        cmd.arg("--head").arg(h);
    }
    cmd.assert().success();
    read_csv(&out.join("predictions.csv"))
}

fn check_8m_probabilities(dataset: &str) {
    let test = format!("test_8m_matches_sklearn_probabilities_on_{dataset}");
    let Some(shared) = shared(&test) else { return };
    if !runtime_available(&test) {
        return;
    }
    let dir = tempdir();
    let models = shared.join("models");
    let ours = score(
        &models.join(format!("{MODEL_8M}.onnx")),
        Some(&models.join(format!("{MODEL_8M}.head.json"))),
        &shared.join(format!("datasets/{dataset}.csv")),
        dir.path(),
        &[],
    );
    let reference = read_csv(&models.join(format!("reference/{MODEL_8M}.{dataset}.proba.csv")));
    assert_eq!(ours.len(), reference.len());
    let p_ours = column_f64(&ours, "probability");
    let p_ref = column_f64(&reference, "probability");
    let diff = max_abs_diff(&p_ours, &p_ref);
    eprintln!("{dataset}: max |p - p_sklearn| = {diff:.3e}");
    assert!(diff < 1e-4, "{dataset}: max |p - p_ref| = {diff}");
    for (i, (ours, p)) in ours.iter().zip(&p_ref).enumerate() {
        assert_eq!(ours["row"], i.to_string());
        assert_eq!(
            ours["prediction"],
            u8::from(*p > 0.5).to_string(),
            "row {i}: label at the threshold differs"
        );
        assert_eq!(
            ours["label"].parse::<f64>().ok(),
            reference[i]["label"].parse::<f64>().ok(),
            "row {i}: true label"
        );
    }
}

#[test]
fn test_8m_matches_sklearn_probabilities_on_jain_86() {
    check_8m_probabilities("jain_86");
}

#[test]
fn test_8m_matches_sklearn_probabilities_on_shehata_398() {
    check_8m_probabilities("shehata_398");
}

#[test]
fn test_8m_matches_sklearn_probabilities_on_boughter_914() {
    check_8m_probabilities("boughter_914");
}

fn check_embeddings(model: &str, dataset: &str) {
    let test = format!("embed_{model}_{dataset}");
    let Some(shared) = shared(&test) else { return };
    if !runtime_available(&test) {
        return;
    }
    let dir = tempdir();
    let ours = embed(
        &shared.join(format!("models/{model}.onnx")),
        &shared.join(format!("datasets/{dataset}.csv")),
        &dir.path().join("e.npy"),
    );
    let reference: ndarray::Array2<f32> = ndarray_npy::read_npy(
        shared.join(format!("models/reference/{model}.{dataset}.embeddings.npy")),
    )
    .expect("reference npy");
    assert_eq!(ours.dim(), reference.dim());
    let diff = (&ours - &reference)
        .iter()
        .fold(0f32, |m, d| m.max(d.abs()));
    eprintln!("{model} {dataset}: max |embedding - PyTorch| = {diff:.3e}");
    assert!(diff < 1e-4, "{model} {dataset}: max |e - e_ref| = {diff}");
}

#[test]
fn embed_8m_matches_pytorch_embeddings_on_jain_86() {
    check_embeddings(MODEL_8M, "jain_86");
}

#[test]
fn embed_8m_matches_pytorch_embeddings_on_shehata_398() {
    check_embeddings(MODEL_8M, "shehata_398");
}

#[test]
fn embed_tiny_matches_pytorch_embeddings_on_every_dataset() {
    for dataset in [
        "jain_86",
        "shehata_398",
        "boughter_914",
        "harvey_lowthroughput_48",
    ] {
        check_embeddings("esm2_tiny_seed0", dataset);
    }
}

#[test]
fn the_load_time_mask_rewrite_gives_the_files_own_embeddings_bit_for_bit() {
    let test = "the_load_time_mask_rewrite_gives_the_files_own_embeddings_bit_for_bit";
    let Some(shared) = shared(test) else { return };
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let data = shared.join("datasets/boughter_914.csv");
    // Both shared files come from transformers' exporter: per-layer masks with -inf for padding, and
    // Where(IsNaN) guards after every softmax.
    for (model, layers) in [("esm2_tiny_seed0", 2), (MODEL_8M, 6)] {
        let path = shared.join(format!("models/{model}.onnx"));
        let (rewritten, as_is) = (
            dir.path().join(format!("{model}.rewritten.npy")),
            dir.path().join(format!("{model}.as-is.npy")),
        );
        let assert = command_on("embed", &path, &data, &rewritten)
            .assert()
            .success();
        let stderr = stderr_of(&assert);
        let summary =
            format!("{layers} per-layer attention masks -> one broadcast key mask, {layers} NaN guards removed");
        assert!(stderr.contains(&summary), "{model}: {stderr}");
        command_on("embed", &path, &data, &as_is)
            .arg("--no-graph-rewrite")
            .assert()
            .success();
        let read = |p: &Path| -> ndarray::Array2<f32> { ndarray_npy::read_npy(p).expect("npy") };
        let (a, b) = (read(&rewritten), read(&as_is));
        assert_eq!(a.dim(), (914, b.ncols()));
        let differing = a
            .iter()
            .zip(b.iter())
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(differing, 0, "{model}: {differing} embedding values differ");
    }
}

#[test]
fn shehata_probabilities_do_not_depend_on_the_token_budget() {
    let test = "shehata_probabilities_do_not_depend_on_the_token_budget";
    let Some(shared) = shared(test) else { return };
    if !runtime_available(test) {
        return;
    }
    let models = shared.join("models");
    let (small, large) = (tempdir(), tempdir());
    let run = |out: &Path, budget: &str| {
        score(
            &models.join(format!("{MODEL_8M}.onnx")),
            Some(&models.join(format!("{MODEL_8M}.head.json"))),
            &shared.join("datasets/shehata_398.csv"),
            out,
            &["--max-tokens", budget],
        )
    };
    let a = column_f64(&run(small.path(), "200"), "probability");
    let b = column_f64(&run(large.path(), "20000"), "probability");
    let diff = max_abs_diff(&a, &b);
    eprintln!("shehata: max |p(200) - p(20000)| = {diff:.3e}");
    assert!(diff < 1e-5, "max-tokens 200 vs 20000: {diff}");
    let report = read_json(&small.path().join("report.json"));
    assert_eq!(report["execution"]["max_tokens"], 200);
}

#[test]
fn parallel_batches_give_the_serial_probabilities_in_input_order_from_one_model_load() {
    let test = "parallel_batches_give_the_serial_probabilities_in_input_order_from_one_model_load";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("nanobodies.csv");
    synthetic_nanobodies(&data, 300, 7);
    let model = fixture("esm2_micro_with_head.onnx");
    let serial_out = dir.path().join("serial");
    let serial = score(
        &model,
        None,
        &data,
        &serial_out,
        &[
            "--threads",
            "1",
            "--parallel-batches",
            "1",
            "--max-tokens",
            "4096",
        ],
    );
    // Small batches, four at once: batches finish out of order and must still come out in input order.
    let parallel_out = dir.path().join("parallel");
    let parallel = score(
        &model,
        None,
        &data,
        &parallel_out,
        &[
            "--threads",
            "4",
            "--parallel-batches",
            "4",
            "--max-tokens",
            "300",
        ],
    );
    assert_eq!(serial.len(), 300);
    assert_eq!(parallel.len(), 300);
    for (i, (a, b)) in serial.iter().zip(&parallel).enumerate() {
        assert_eq!(b["row"], i.to_string());
        assert_eq!(a["id"], b["id"], "row {i}");
    }
    let diff = max_abs_diff(
        &column_f64(&serial, "probability"),
        &column_f64(&parallel, "probability"),
    );
    eprintln!("micro: max |p(4 batches at once) - p(serial)| = {diff:.3e}");
    assert!(diff < 1e-6, "parallel vs serial: {diff}");
    let report = read_json(&parallel_out.join("report.json"));
    assert_eq!(report["execution"]["parallel_batches"], 4);
    assert_eq!(report["execution"]["threads"], 4);
    assert_eq!(report["execution"]["model_loads"], 1);
    let perf = &report["performance"];
    let (inside, wall) = (
        perf["inference_seconds"].as_f64().unwrap(),
        perf["wall_seconds"].as_f64().unwrap(),
    );
    assert!(
        inside > 0.0 && inside <= wall,
        "time inside the model {inside} s must be counted once, within the wall time {wall} s"
    );
    let serial_report = read_json(&serial_out.join("report.json"));
    assert_eq!(serial_report["execution"]["parallel_batches"], 1);
}

/// The committed micro fixture's PyTorch reference (each sequence run alone, unbatched).
struct MicroReference {
    sequences: Vec<String>,
    input_ids: Vec<Vec<i64>>,
    embeddings: Vec<Vec<f64>>,
    probabilities: Vec<f64>,
}

fn micro_reference() -> MicroReference {
    let json = read_json(&fixture("esm2_micro.reference.json"));
    let rows = json["sequences"].as_array().expect("sequences");
    let floats = |v: &serde_json::Value| {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect::<Vec<f64>>()
    };
    MicroReference {
        sequences: rows
            .iter()
            .map(|r| r["sequence"].as_str().expect("sequence").to_string())
            .collect(),
        input_ids: rows
            .iter()
            .map(|r| {
                r["input_ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_i64().expect("id"))
                    .collect()
            })
            .collect(),
        embeddings: rows.iter().map(|r| floats(&r["embedding"])).collect(),
        probabilities: rows
            .iter()
            .map(|r| r["probability"].as_f64().expect("probability"))
            .collect(),
    }
}

/// The reference sequences as a CSV, in the given order, with their index as id.
pub fn micro_csv(dir: &Path, order: &[usize]) -> std::path::PathBuf {
    let reference = micro_reference();
    let mut text = String::from("id,sequence\n");
    for &i in order {
        text.push_str(&format!("s{i},{}\n", reference.sequences[i]));
    }
    write(dir, "micro.csv", &text)
}

pub fn micro_probabilities() -> Vec<f64> {
    micro_reference().probabilities
}

#[test]
fn tokenizer_matches_hugging_face_esm_tokenizer_ids() {
    let reference = micro_reference();
    for (sequence, ids) in reference.sequences.iter().zip(&reference.input_ids) {
        assert_eq!(
            &esmbench::data::tokenizer::tokenize(sequence.as_bytes()),
            ids,
            "{sequence}"
        );
    }
}

#[test]
fn micro_fixture_pooling_matches_its_pytorch_reference() {
    if !runtime_available("micro_fixture_pooling_matches_its_pytorch_reference") {
        return;
    }
    let reference = micro_reference();
    let dir = tempdir();
    let order: Vec<usize> = (0..reference.sequences.len()).collect();
    let data = micro_csv(dir.path(), &order);
    let ours = embed(
        &fixture("esm2_micro.onnx"),
        &data,
        &dir.path().join("e.npy"),
    );
    let mut worst = 0f64;
    for (i, expected) in reference.embeddings.iter().enumerate() {
        for (k, e) in expected.iter().enumerate() {
            worst = worst.max((f64::from(ours[[i, k]]) - e).abs());
        }
    }
    eprintln!("micro fixture: max |embedding - PyTorch| = {worst:.3e}");
    assert!(worst < 1e-5, "pooling differs from PyTorch by {worst}");

    let predictions = score(
        &fixture("esm2_micro.onnx"),
        Some(&fixture("esm2_micro.head.json")),
        &data,
        &dir.path().join("t"),
        &[],
    );
    let diff = max_abs_diff(
        &column_f64(&predictions, "probability"),
        &reference.probabilities,
    );
    assert!(diff < 1e-5, "probabilities differ from PyTorch by {diff}");
}

#[test]
fn a_sequence_scores_the_same_alone_in_any_batch_and_any_order() {
    if !runtime_available("a_sequence_scores_the_same_alone_in_any_batch_and_any_order") {
        return;
    }
    let n = micro_reference().sequences.len();
    let run = |order: Vec<usize>, budget: &str| -> HashMap<String, f64> {
        let dir = tempdir();
        let data = micro_csv(dir.path(), &order);
        let rows = score(
            &fixture("esm2_micro_with_head.onnx"),
            None,
            &data,
            &dir.path().join("o"),
            &["--max-tokens", budget],
        );
        rows.iter()
            .map(|r| (r["id"].clone(), r["probability"].parse().expect("p")))
            .collect()
    };
    let alone = run((0..n).collect(), "3");
    let together = run((0..n).collect(), "100000");
    let reversed = run((0..n).rev().collect(), "300");
    for (id, p) in &alone {
        assert!(
            (p - together[id]).abs() < 1e-6,
            "{id}: alone {p} vs one batch {}",
            together[id]
        );
        assert!(
            (p - reversed[id]).abs() < 1e-6,
            "{id}: alone {p} vs reversed {}",
            reversed[id]
        );
    }
}

#[test]
fn the_embedded_default_runs_with_no_arguments_but_an_output_dir() {
    if !runtime_available("the_embedded_default_runs_with_no_arguments_but_an_output_dir") {
        return;
    }
    let dir = tempdir();
    esmbench()
        .args(["test", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let report = read_json(&dir.path().join("report.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["data"]["rows_scored"], 96);
    assert_eq!(report["execution"]["model_loads"], 1);
    assert_eq!(
        report["execution"]["execution_provider"],
        "CPUExecutionProvider"
    );
    assert!(report["metrics"]["roc_auc"].is_number());
    assert_eq!(read_csv(&dir.path().join("predictions.csv")).len(), 96);
}
