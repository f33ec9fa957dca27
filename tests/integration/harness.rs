//! Small helpers shared by the integration tests: the binary, fixtures, ../shared, temp dirs, CSV and npy reading.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// Copies the micro encoder whose weights are in external data (`contract/external_data.onnx` and its
/// `.data`) into `dir`, where a test may change them; returns (the .onnx, its data file).
pub fn copy_external_data_model(dir: &Path) -> (PathBuf, PathBuf) {
    let copy = |name: &str| {
        let to = dir.join(name);
        std::fs::copy(fixture(&format!("contract/{name}")), &to).expect("copy the fixture");
        to
    };
    (copy("external_data.onnx"), copy("external_data.onnx.data"))
}

pub fn esmbench() -> Command {
    let mut cmd = Command::cargo_bin("esmbench").expect("the esmbench binary is built");
    cmd.current_dir(root());
    cmd
}

/// ../shared (real datasets, models and PyTorch references), or None with a message saying the test is skipped.
/// Where the caller knows it is there (ESMBENCH_REQUIRE_SHARED=1, as .ci/run sets when it sees it), its absence
/// is a failure, so the parity tests cannot pass by skipping.
pub fn shared(test: &str) -> Option<PathBuf> {
    let dir = root().join("../shared");
    if dir.join("models").is_dir() && dir.join("datasets").is_dir() {
        Some(dir.canonicalize().expect("shared dir"))
    } else if std::env::var("ESMBENCH_REQUIRE_SHARED").as_deref() == Ok("1") {
        panic!("{test}: ../shared (datasets, models, references) is required here but not found");
    } else {
        eprintln!("SKIPPED {test}: ../shared (datasets, models, references) is not present on this machine");
        None
    }
}

/// Whether the ONNX Runtime library can be found. Where the test command installed it (ESMBENCH_REQUIRE_ORT=1)
/// its absence is a failure, not a skip, so CI cannot pass without running the real runtime.
pub fn runtime_available(test: &str) -> bool {
    match esmbench::model::runtime::locate_library() {
        Ok(_) => true,
        Err(e) if std::env::var("ESMBENCH_REQUIRE_ORT").as_deref() == Ok("1") => {
            panic!("ONNX Runtime is required here: {}", e.message)
        }
        Err(_) => {
            eprintln!("SKIPPED {test}: no ONNX Runtime library (run scripts/setup_runtime.sh)");
            false
        }
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Rows of a CSV as header-keyed maps.
pub fn read_csv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

pub fn column_f64(rows: &[std::collections::HashMap<String, String>], name: &str) -> Vec<f64> {
    rows.iter()
        .map(|r| {
            r[name]
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{name}={}: {e}", r[name]))
        })
        .collect()
}

/// What a finished command wrote to standard error, and to standard output.
pub fn stderr_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

pub fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn mean_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

/// suite.yaml in `dir`: one model on one dataset, as `esmbench test` runs a suite.
pub fn write_suite_config(dir: &Path, model: &Path, data: &Path) -> PathBuf {
    write(
        dir,
        "suite.yaml",
        &format!(
            "models:\n  - model: {}\ndatasets:\n  - data: {}\n",
            model.display(),
            data.display()
        ),
    )
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A deterministic nanobody-like CSV (id,sequence,label) of `rows` rows, 110-130 residues each:
/// framework segments around random CDRs, as in scripts/make_synthetic_harvey.py, without needing Python.
pub fn synthetic_nanobodies(path: &Path, rows: usize, seed: u64) {
    use std::io::Write;
    const FRAMEWORKS: [&str; 4] = [
        "QVQLQESGGGLVQAGGSLRLSCAAS",
        "MGWFRQAPGKEREFVA",
        "YADSVKGRFTISRDNAKNTVYLQMNSLKPEDTAVYYCAA",
        "WGQGTQVTVSS",
    ];
    const RESIDUES: &[u8] = b"ACDEFGHIKLMNPQRSTVWY";
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).expect("create synthetic csv"));
    writeln!(out, "id,sequence,label").unwrap();
    for i in 0..rows {
        let mut seq = String::with_capacity(130);
        let framework_len: usize = FRAMEWORKS.iter().map(|f| f.len()).sum();
        let target = 110 + next() % 21;
        let cdr_total = target - framework_len;
        let cdr1 = cdr_total / 4;
        let cdr2 = cdr_total / 4;
        let cdr3 = cdr_total - cdr1 - cdr2;
        for (k, framework) in FRAMEWORKS.iter().enumerate() {
            seq.push_str(framework);
            let cdr = [cdr1, cdr2, cdr3, 0][k];
            for _ in 0..cdr {
                seq.push(RESIDUES[next() % RESIDUES.len()] as char);
            }
        }
        let label = next() % 2;
        writeln!(out, "nb-{i:06},{seq},{label}").unwrap();
    }
}

/// `esmbench SUBCOMMAND --model M --data D --out O`, for more flags or environment before it runs.
pub fn command_on(subcommand: &str, model: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = esmbench();
    cmd.args([subcommand, "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    cmd
}

/// `esmbench test --model M --data D --out O`.
pub fn test_command(model: &Path, data: &Path, out: &Path) -> Command {
    command_on("test", model, data, out)
}

/// [`test_command`] with the micro encoder's head, for [`copy_external_data_model`]'s model, which has none.
pub fn external_data_test_command(model: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = test_command(model, data, out);
    cmd.arg("--head").arg(fixture("esm2_micro.head.json"));
    cmd
}

/// `esmbench test --model M --data D --out O` must succeed; returns predictions.csv's rows.
pub fn score(
    model: &Path,
    data: &Path,
    out: &Path,
) -> Vec<std::collections::HashMap<String, String>> {
    test_command(model, data, out).assert().success();
    read_csv(&out.join("predictions.csv"))
}

/// `esmbench embed --model M --data D --out O` must succeed; returns the pooled embeddings [rows, hidden].
pub fn embed(model: &Path, data: &Path, out: &Path) -> ndarray::Array2<f32> {
    command_on("embed", model, data, out).assert().success();
    ndarray_npy::read_npy(out).expect("embeddings npy")
}

/// [`score`]'s probabilities in row order.
pub fn score_probabilities(model: &Path, data: &Path, out: &Path) -> Vec<f64> {
    column_f64(&score(model, data, out), "probability")
}

/// `esmbench inspect --model M` must succeed; returns what it printed.
pub fn inspect_text(model: &Path) -> String {
    let assert = esmbench()
        .args(["inspect", "--model"])
        .arg(model)
        .assert()
        .success();
    stdout_of(&assert)
}
