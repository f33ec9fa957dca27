//! Sharding: N processes each score 1/N of the rows; `esmbench merge` gives back the unsharded run.

use std::process::Command;

use crate::harness::*;

#[test]
fn three_shards_merged_equal_one_unsharded_run_row_for_row() {
    if !runtime_available("three_shards_merged_equal_one_unsharded_run_row_for_row") {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 3000, 23);
    let model = fixture("esm2_micro_with_head.onnx");
    let run = |out: &std::path::Path, shard: Option<&str>| {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("esmbench"));
        cmd.args(["test", "--threads", "1", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(out);
        if let Some(s) = shard {
            cmd.args(["--shard", s]);
        }
        cmd
    };
    let whole = dir.path().join("whole");
    assert!(run(&whole, None).output().unwrap().status.success());

    // The shards run as three processes side by side, as they would on three machines.
    let shard_dirs: Vec<_> = (1..=3)
        .map(|k| dir.path().join(format!("shard{k}")))
        .collect();
    let children: Vec<_> = shard_dirs
        .iter()
        .enumerate()
        .map(|(i, d)| run(d, Some(&format!("{}/3", i + 1))).spawn().unwrap())
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let sizes: Vec<usize> = shard_dirs
        .iter()
        .map(|d| read_csv(&d.join("predictions.csv")).len())
        .collect();
    assert_eq!(sizes, vec![1000, 1000, 1000]);
    let second = read_csv(&shard_dirs[1].join("predictions.csv"));
    assert_eq!(
        (second[0]["row"].as_str(), second[1]["row"].as_str()),
        ("1", "4")
    );

    let merged = dir.path().join("merged");
    esmbench()
        .arg("merge")
        .args(shard_dirs.iter().rev())
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    let a = std::fs::read_to_string(merged.join("predictions.csv")).unwrap();
    let b = std::fs::read_to_string(whole.join("predictions.csv")).unwrap();
    assert!(a == b, "merged predictions differ from the unsharded run");
    let (ra, rb) = (
        read_json(&merged.join("report.json")),
        read_json(&whole.join("report.json")),
    );
    assert_eq!(ra["metrics"], rb["metrics"]);
    assert_eq!(ra["data"]["rows_scored"], 3000);
    assert!(ra["execution"]["shard"].is_null());
    assert_eq!(ra["execution"]["model_loads"], 3);

    let assert = esmbench()
        .arg("merge")
        .args(&shard_dirs[..2])
        .arg("--out")
        .arg(dir.path().join("m2"))
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&assert.get_output().stderr).contains("missing shard(s) 3/3"));

    let assert = esmbench()
        .arg("merge")
        .args([
            &shard_dirs[0],
            &shard_dirs[0],
            &shard_dirs[1],
            &shard_dirs[2],
        ])
        .arg("--out")
        .arg(dir.path().join("m3"))
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        stderr.contains("shard 1/3 is given twice") && stderr.contains("fix:"),
        "{stderr}"
    );
}

#[test]
fn a_bad_shard_spec_is_a_usage_error() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQL\n");
    let assert = esmbench()
        .args(["test", "--mock-backend", "--shard", "4/3", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&assert.get_output().stderr).contains("--shard 4/3 is not K/N"));
}
