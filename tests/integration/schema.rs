//! report.json's schema is locked: it decodes into structs that reject unknown fields, and its keys are listed here.

use std::collections::BTreeSet;

use esmbench::report::Report;

use crate::harness::*;

fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn report_json_decodes_strictly_and_its_fields_are_exactly_the_documented_ones() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence,label\na,EVQL,1\nb,LAGV,0\nc,KKKKW,1\n",
    );
    esmbench()
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path())
        .assert()
        .success();
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    let report: Report =
        serde_json::from_str(&text).expect("report.json decodes into the strict structs");
    assert_eq!(report.schema_version, esmbench::report::SCHEMA_VERSION);
    assert_eq!(report.status, "complete");

    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys(&json),
        set(&[
            "schema_version",
            "command",
            "status",
            "tool",
            "started_at",
            "model",
            "data",
            "execution",
            "metrics",
            "metrics_note",
            "performance",
            "error"
        ])
    );
    assert_eq!(
        keys(&json["model"]),
        set(&[
            "path",
            "sha256",
            "kind",
            "output",
            "head_source",
            "threshold",
            "threshold_source",
            "assay"
        ])
    );
    assert_eq!(
        keys(&json["data"]),
        set(&[
            "path",
            "rows_total",
            "rows_scored",
            "rows_skipped",
            "rows_truncated",
            "rows_with_gaps",
            "rows_repeating_id",
            "rows_repeating_sequence",
            "sequences_with_both_labels",
            "rows_unlabeled",
            "sha256",
            "label_column"
        ])
    );
    assert_eq!(
        keys(&json["execution"]),
        set(&[
            "device_requested",
            "execution_provider",
            "fallback",
            "model_loads",
            "io_binding",
            "graph_rewrite",
            "threads",
            "parallel_batches",
            "max_tokens",
            "max_tokens_lowered_to",
            "max_residues",
            "shard",
            "resumed"
        ])
    );
    assert_eq!(
        keys(&json["metrics"]),
        set(&[
            "n",
            "positives",
            "negatives",
            "threshold",
            "accuracy",
            "balanced_accuracy",
            "precision",
            "recall",
            "specificity",
            "f1",
            "mcc",
            "roc_auc",
            "pr_auc",
            "brier",
            "log_loss",
            "confusion_matrix",
            "curves",
            "intervals",
            "undefined"
        ])
    );
    assert_eq!(
        keys(&json["metrics"]["intervals"]),
        set(&[
            "method",
            "confidence",
            "resamples",
            "seed",
            "accuracy",
            "roc_auc",
            "pr_auc",
            "f1"
        ])
    );
    assert_eq!(
        keys(&json["performance"]),
        set(&[
            "wall_seconds",
            "model_load_seconds",
            "inference_seconds",
            "sequences_per_second",
            "tokens_per_second",
            "padding_efficiency",
            "batches",
            "peak_rss_bytes",
            "rss_start_bytes",
            "rss_end_bytes",
            "peak_threads",
            "timeline"
        ])
    );
    let timeline = json["performance"]["timeline"]
        .as_array()
        .expect("timeline is a list");
    assert!(
        !timeline.is_empty(),
        "the monitor samples at the start of every run"
    );
    for sample in timeline {
        assert_eq!(
            keys(sample),
            set(&[
                "seconds",
                "rows_done",
                "rss_bytes",
                "threads",
                "cpu_seconds"
            ])
        );
    }

    // Every object in the report rejects a key it does not know, however deep; `metrics.undefined` is the one
    // open map (metric name -> why it is undefined). `execution.resumed` is null on a fresh run, so it is
    // filled in to be checked too.
    let mut full = json.clone();
    full["execution"]["resumed"] = serde_json::json!({"at_row": 2, "rows_scored_before": 2});
    serde_json::from_value::<Report>(full.clone()).expect("a resumed run's report decodes");
    let mut objects = Vec::new();
    object_pointers(&full, String::new(), &mut objects);
    assert!(objects.len() > 15, "{objects:?}");
    for pointer in objects.iter().filter(|p| *p != "/metrics/undefined") {
        let mut extended = full.clone();
        extended
            .pointer_mut(pointer)
            .and_then(serde_json::Value::as_object_mut)
            .expect("an object")
            .insert("mystery".into(), serde_json::json!(1));
        assert!(
            serde_json::from_value::<Report>(extended).is_err(),
            "the object at `{pointer}` accepted an unknown key"
        );
    }
}

/// The JSON pointers of every object in `value`, itself included.
fn object_pointers(value: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            out.push(at.clone());
            for (key, child) in map {
                object_pointers(child, format!("{at}/{key}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                object_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}
