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
    let merging = esmbench()
        .arg("merge")
        .args(shard_dirs.iter().rev())
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    // The merged rate assumes the shards ran side by side; their summed time is printed beside it, which is
    // what shards run one after another cost.
    let walls: f64 = shard_dirs
        .iter()
        .rev()
        .map(|d| {
            read_json(&d.join("report.json"))["performance"]["wall_seconds"]
                .as_f64()
                .unwrap()
        })
        .sum();
    let stdout = stdout_of(&merging);
    assert!(
        stdout.contains(&format!(
            "timing: the time above is the slowest shard's and the rate the rows timed over it, as if the 3 shards ran side by side; their wall times add up to {walls:.2} s"
        )),
        "{stdout}"
    );
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
    assert!(stderr_of(&assert).contains("missing shard(s) 3/3"));

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
    let stderr = stderr_of(&assert);
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
    assert!(stderr_of(&assert).contains("--shard 4/3 is not K/N"));
}

/// Two shards of a 40-row file scored with the real runtime on the micro model, with the head each names.
fn two_shards(dir: &std::path::Path, heads: [&std::path::Path; 2]) -> Vec<std::path::PathBuf> {
    let data = dir.join("nb.csv");
    if !data.exists() {
        synthetic_nanobodies(&data, 40, 5);
    }
    (1..=2)
        .map(|k| {
            let out = dir.join(format!("shard{k}"));
            esmbench()
                .args(["test", "--threads", "1", "--bootstrap", "0", "--model"])
                .arg(fixture("esm2_micro.onnx"))
                .arg("--head")
                .arg(heads[k - 1])
                .arg("--data")
                .arg(&data)
                .args(["--shard", &format!("{k}/2"), "--out"])
                .arg(&out)
                .assert()
                .success();
            out
        })
        .collect()
}

fn merge_fails(shards: &[std::path::PathBuf], out: &std::path::Path) -> String {
    let out_existed = out.exists();
    let assert = esmbench()
        .arg("merge")
        .args(shards)
        .arg("--out")
        .arg(out)
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out_existed || !out.join("report.json").exists(),
        "a refused merge wrote a report"
    );
    stderr
}

/// Regression: a shard whose predictions.csv had lost its last row merged into a report saying `complete`
/// with 39 of 40 rows scored and none skipped; a shard file of fewer columns panicked (exit 101).
#[test]
fn regression_merge_refuses_shard_files_other_than_their_runs_wrote() {
    if !runtime_available("regression_merge_refuses_shard_files_other_than_their_runs_wrote") {
        return;
    }
    let dir = tempdir();
    let head = fixture("esm2_micro.head.json");
    let shards = two_shards(dir.path(), [&head, &head]);
    let predictions = shards[1].join("predictions.csv");
    let whole = std::fs::read_to_string(&predictions).unwrap();
    let without_last_row = &whole[..whole[..whole.len() - 1].rfind('\n').unwrap() + 1];
    std::fs::write(&predictions, without_last_row).unwrap();
    let stderr = merge_fails(&shards, &dir.path().join("m1"));
    assert!(
        stderr.contains("predictions.csv: not the file its run finished with"),
        "{stderr}"
    );

    // Without the checkpoint that records the file's SHA-256, the report's row count still catches it.
    std::fs::remove_file(shards[1].join("checkpoint.json")).unwrap();
    let stderr = merge_fails(&shards, &dir.path().join("m2"));
    assert!(stderr.contains("has no checkpoint.json"), "{stderr}");
    assert!(
        stderr.contains("19 rows scored and 0 skipped, but its report.json counts 20 and 0"),
        "{stderr}"
    );

    // Same row count, one column: an error naming the file and line, not a panic.
    let one_column: String = whole
        .lines()
        .map(|l| format!("{}\n", l.split(',').next().unwrap()))
        .collect();
    std::fs::write(&predictions, one_column).unwrap();
    let stderr = merge_fails(&shards, &dir.path().join("m3"));
    assert!(
        stderr.contains("shard2/predictions.csv, line 2: no `probability` field (column 4)"),
        "{stderr}"
    );

    std::fs::write(&predictions, &whole).unwrap();
    esmbench()
        .arg("merge")
        .args(&shards)
        .arg("--out")
        .arg(dir.path().join("m4"))
        .assert()
        .success();
}

/// Regression: shards scored with different heads merged silently (the report compared only model, data,
/// threshold and shard count), and `--out` naming a shard's folder overwrote that shard.
#[test]
fn regression_merge_refuses_shards_of_other_heads_and_a_shard_folder_as_out() {
    if !runtime_available(
        "regression_merge_refuses_shards_of_other_heads_and_a_shard_folder_as_out",
    ) {
        return;
    }
    let dir = tempdir();
    let head = fixture("esm2_micro.head.json");
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&head).unwrap()).unwrap();
    other["intercept"] = serde_json::json!(other["intercept"].as_f64().unwrap() + 0.5);
    let other = write(dir.path(), "other_head.json", &other.to_string());
    let shards = two_shards(dir.path(), [&head, &other]);
    let stderr = merge_fails(&shards, &dir.path().join("m1"));
    assert!(
        stderr
            .contains("are not shards of one run: from the first to the second, the head changed"),
        "{stderr}"
    );

    let shards = two_shards(dir.path(), [&head, &head]);
    let before = std::fs::read(shards[0].join("predictions.csv")).unwrap();
    let stderr = merge_fails(&shards, &shards[0]);
    assert!(stderr.contains("is shard 1/2's own folder"), "{stderr}");
    assert_eq!(
        std::fs::read(shards[0].join("predictions.csv")).unwrap(),
        before
    );
}

/// Regression: `merge` wrote into an --out that a run was still writing (a shard folder given by a glob),
/// mixing the two; a shard folder without predictions.csv gave exit 1 and no fix; shards bootstrapped with
/// other resample counts merged with the first one's; and a difference both the checkpoint and the report
/// record was named twice ("the threshold changed (0.5 -> 0.3), the threshold changed").
#[test]
fn regression_merge_wrote_into_a_live_runs_folder_and_named_differences_twice() {
    let test = "regression_merge_wrote_into_a_live_runs_folder_and_named_differences_twice";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let head = fixture("esm2_micro.head.json");
    let shards = two_shards(dir.path(), [&head, &head]);

    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    let sentinel = write(
        &busy,
        "predictions.csv",
        "row,id,label,probability,prediction\n",
    );
    let lock = std::fs::File::create(busy.join(".esmbench.lock")).unwrap();
    lock.lock().unwrap();
    let stderr = merge_fails(&shards, &busy);
    assert!(stderr.contains("is in use by"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&sentinel).unwrap(),
        "row,id,label,probability,prediction\n"
    );
    drop(lock);

    let predictions = shards[1].join("predictions.csv");
    let whole = std::fs::read(&predictions).unwrap();
    std::fs::remove_file(&predictions).unwrap();
    let stderr = merge_fails(&shards, &dir.path().join("m1"));
    assert!(
        stderr.contains("shard2/predictions.csv: missing, though the shard's run wrote it")
            && stderr.contains("fix: restore the file"),
        "{stderr}"
    );
    std::fs::write(&predictions, whole).unwrap();

    let rescore = |flags: &[&str]| {
        esmbench()
            .args(["test", "--threads", "1", "--model"])
            .arg(fixture("esm2_micro.onnx"))
            .arg("--head")
            .arg(&head)
            .arg("--data")
            .arg(dir.path().join("nb.csv"))
            .args(["--shard", "2/2", "--out"])
            .arg(&shards[1])
            .args(flags)
            .assert()
            .success();
    };
    rescore(&["--bootstrap", "0", "--threshold", "0.3"]);
    let stderr = merge_fails(&shards, &dir.path().join("m2"));
    assert_eq!(
        stderr.matches("the threshold changed").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("the threshold changed (0.5 -> 0.3)"),
        "{stderr}"
    );
    rescore(&["--bootstrap", "50"]);
    let stderr = merge_fails(&shards, &dir.path().join("m3"));
    assert!(stderr.contains("--bootstrap changed (0 -> 50)"), "{stderr}");
}

/// Regression: a shard resumed after an interruption times only its last process, yet merge put all its rows
/// over that time (59,650 seq/s for a 4,210 seq/s run) and its report said nothing of the resume; a merge into
/// a folder kept an earlier merge's skipped.csv, and one into an interrupted run's folder overwrote it.
#[test]
fn regression_merge_timed_a_resumed_shards_rows_over_its_last_process_only() {
    let test = "regression_merge_timed_a_resumed_shards_rows_over_its_last_process_only";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let head = fixture("esm2_micro.head.json");
    let shards = two_shards(dir.path(), [&head, &head]);
    // As a resume records it: shard 2 went on from row 11, 5 of its rows scored before.
    let report_path = shards[1].join("report.json");
    let mut report = read_json(&report_path);
    report["execution"]["resumed"] = serde_json::json!({"at_row": 11, "rows_scored_before": 5});
    std::fs::write(&report_path, report.to_string()).unwrap();

    let out = dir.path().join("merged");
    std::fs::create_dir(&out).unwrap();
    write(
        &out,
        "skipped.csv",
        "row,line,id,column,reason\n7,9,,sequence,stale\n",
    );
    let assert = esmbench()
        .arg("merge")
        .args(&shards)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert!(
        !out.join("skipped.csv").exists(),
        "an earlier merge's skipped.csv was kept"
    );
    let merged = read_json(&out.join("report.json"));
    assert_eq!(
        merged["execution"]["resumed"],
        serde_json::json!({"at_row": 11, "rows_scored_before": 5})
    );
    let performance = &merged["performance"];
    let rate = 35.0 / performance["wall_seconds"].as_f64().unwrap();
    let reported = performance["sequences_per_second"].as_f64().unwrap();
    assert!(
        (reported - rate).abs() <= 1e-9 * rate,
        "{reported} vs {rate}"
    );
    assert!(
        stdout_of(&assert)
            .contains("scored 40 of 40 rows (35 timed here; 5 were scored before a resume)"),
        "{}",
        stdout_of(&assert)
    );

    let interrupted = dir.path().join("interrupted");
    std::fs::create_dir(&interrupted).unwrap();
    let mut checkpoint = read_json(&shards[0].join("checkpoint.json"));
    checkpoint["complete"] = serde_json::json!(false);
    write(&interrupted, "checkpoint.json", &checkpoint.to_string());
    let stderr = merge_fails(&shards, &interrupted);
    assert!(stderr.contains("holds an interrupted run"), "{stderr}");
    assert!(interrupted.join("checkpoint.json").exists());
}
