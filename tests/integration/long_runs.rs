//! Long unattended runs: kill -9 and resume, the memory watchdog, signals, skipping invalid rows, thread counts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Rows in the Harvey set (Harvey et al. 2022), the size that broke the tools esmbench replaces.
const HARVEY_ROWS: usize = 141_021;

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("esmbench")
}

fn test_args(data: &Path, out: &Path) -> Vec<String> {
    let model = fixture("esm2_micro_with_head.onnx");
    vec![
        "test".into(),
        "--model".into(),
        model.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--checkpoint-seconds".into(),
        "1".into(),
    ]
}

fn predictions(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("predictions.csv"))
        .expect("predictions.csv")
        .lines()
        .map(str::to_string)
        .collect()
}

/// A number in [lo, hi) from a seed, so the kill points differ between kills but not between runs of the test.
fn pick(seed: &mut u64, lo: u64, hi: u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    lo + (*seed >> 33) % (hi - lo)
}

#[test]
fn sigkill_three_times_then_resume_matches_an_uninterrupted_harvey_size_run_row_for_row() {
    if !runtime_available(
        "sigkill_three_times_then_resume_matches_an_uninterrupted_harvey_size_run_row_for_row",
    ) {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("harvey_synthetic.csv");
    synthetic_nanobodies(&data, HARVEY_ROWS, 7);

    let reference = dir.path().join("uninterrupted");
    let status = Command::new(binary())
        .args(test_args(&data, &reference))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let expected = predictions(&reference);
    assert_eq!(expected.len(), HARVEY_ROWS + 1);

    let out = dir.path().join("killed");
    let total_bytes = std::fs::metadata(reference.join("predictions.csv"))
        .unwrap()
        .len();
    let mut seed = 20261122u64;
    let mut resume = false;
    // Kill points are chosen by progress (bytes of predictions written), at random within three bands, so the
    // test kills early, midway and late whatever the machine's speed.
    for (kill, (lo, hi)) in [(5u64, 30u64), (35, 60), (65, 90)].into_iter().enumerate() {
        let target = total_bytes * pick(&mut seed, lo, hi) / 100;
        let mut args = test_args(&data, &out);
        if resume {
            args.push("--resume".into());
        }
        let mut child = Command::new(binary())
            .args(&args)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let predictions_file = out.join("predictions.csv");
        while std::fs::metadata(&predictions_file)
            .map(|m| m.len())
            .unwrap_or(0)
            < target
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "kill {kill}: the run ended before reaching its kill point"
            );
            std::thread::sleep(Duration::from_millis(5 + pick(&mut seed, 0, 20)));
        }
        child.kill().expect("SIGKILL");
        assert!(
            !child.wait().unwrap().success(),
            "kill {kill} came after the run finished"
        );
        resume = out.join("checkpoint.json").exists();
        eprintln!("kill {kill} at {target} of {total_bytes} bytes of predictions; checkpoint present: {resume}");
    }
    let mut args = test_args(&data, &out);
    if resume {
        args.push("--resume".into());
    }
    let output = Command::new(binary()).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    let resumed = predictions(&out);
    assert_eq!(resumed.len(), expected.len(), "one prediction per row");
    for (i, (a, b)) in resumed.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "line {} differs after kill -9 and resume", i + 1);
    }
    let (a, b) = (
        read_json(&out.join("report.json")),
        read_json(&reference.join("report.json")),
    );
    assert_eq!(a["metrics"], b["metrics"], "metrics after resume differ");
    assert_eq!(a["status"], "complete");
    assert_eq!(read_json(&out.join("checkpoint.json"))["complete"], true);
}

#[test]
fn the_watchdog_stops_with_exit_4_and_the_run_resumes_to_completion() {
    if !runtime_available("the_watchdog_stops_with_exit_4_and_the_run_resumes_to_completion") {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 3000, 3);
    let reference = dir.path().join("reference");
    Command::new(binary())
        .args(test_args(&data, &reference))
        .output()
        .unwrap()
        .status
        .success()
        .then_some(())
        .expect("reference run");

    let out = dir.path().join("limited");
    let mut args = test_args(&data, &out);
    args.extend(["--max-rss".into(), "1MiB".into()]);
    let output = Command::new(binary()).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("memory watchdog") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked at"), "{stderr}");
    // Regression: a limit below what the loaded model holds printed a resume command under the same limit,
    // which stopped again at its first batches, every time.
    let resume = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("resume with a higher limit: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let raised = resume.rsplit_once(" --resume --max-rss ").unwrap().1;
    let mib: u64 = raised.strip_suffix("MiB").unwrap().parse().unwrap();
    assert!(mib >= 64 && mib.is_multiple_of(64), "{resume}");
    assert!(!resume.contains("1MiB"), "{resume}");
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "watchdog");
    assert!(report["data"]["rows_scored"].as_u64().unwrap() < 3000);

    let mut args = test_args(&data, &out);
    args.push("--resume".into());
    let output = Command::new(binary()).args(&args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(predictions(&out), predictions(&reference));
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
}

#[test]
fn over_the_soft_limit_the_token_budget_is_halved_and_the_run_goes_on() {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 400, 5);
    let output = Command::new(binary())
        .args([
            "test",
            "--mock-backend",
            "--max-tokens",
            "4096",
            "--max-rss",
            "64GiB",
            "--soft-rss",
            "1MiB",
            "--model",
        ])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o"))
        .env("ESMBENCH_MOCK_DELAY_MS", "30")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("token budget halved from 4096 to 2048"),
        "{stderr}"
    );
    assert_eq!(read_csv(&dir.path().join("o/predictions.csv")).len(), 400);
    // Regression: the report said max_tokens 4096 after the run had spent most of its batches far below it.
    let lowest = stderr
        .lines()
        .filter_map(|l| l.split("token budget halved from ").nth(1))
        .filter_map(|rest| rest.split(" to ").nth(1)?.parse::<u64>().ok())
        .min()
        .unwrap();
    let report = read_json(&dir.path().join("o/report.json"));
    assert_eq!(report["execution"]["max_tokens"], 4096);
    assert_eq!(report["execution"]["max_tokens_lowered_to"], lowest);
    let md = std::fs::read_to_string(dir.path().join("o/report.md")).unwrap();
    assert!(
        md.contains(&format!(
            "max_tokens 4096 (lowered to {lowest} by the soft memory limit)"
        )),
        "{md}"
    );
}

fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A mock run slowed to `delay_ms` per batch, started by `launcher` (such as `nohup`) when given.
fn slow_mock_command(launcher: Option<&str>, data: &Path, out: &Path, delay_ms: &str) -> Command {
    let mut command = match launcher {
        Some(launcher) => {
            let mut command = Command::new(launcher);
            command.arg(binary());
            command
        }
        None => {
            let mut command = Command::new(binary());
            // The test may itself run under nohup (a CI job started with it): the run must start as it
            // would from a terminal, with SIGHUP's default action.
            // SAFETY: signal() is async-signal-safe, as pre_exec requires.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    libc::signal(libc::SIGHUP, libc::SIG_DFL);
                    Ok(())
                });
            }
            command
        }
    };
    command
        .args([
            "test",
            "--mock-backend",
            "--max-tokens",
            "300",
            "--checkpoint-seconds",
            "1",
            "--model",
        ])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("ESMBENCH_MOCK_DELAY_MS", delay_ms)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    command
}

fn slow_mock_run(data: &Path, out: &Path, delay_ms: &str) -> std::process::Child {
    slow_mock_command(None, data, out, delay_ms)
        .spawn()
        .unwrap()
}

#[test]
fn sigint_sigterm_and_sighup_stop_after_the_batch_with_a_partial_report_and_resume() {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 300, 11);
    for (signal, code, status) in [
        ("INT", 130, "interrupted"),
        ("TERM", 143, "interrupted"),
        // The terminal or ssh session closed: before, the run died at once, its report saying `running`.
        ("HUP", 129, "interrupted"),
    ] {
        let out = dir.path().join(signal);
        let child = slow_mock_run(&data, &out, "40");
        std::thread::sleep(Duration::from_millis(600));
        send(signal, child.id());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted by SIG{signal}")) && stderr.contains("--resume"),
            "{stderr}"
        );
        let report = read_json(&out.join("report.json"));
        assert_eq!(report["status"], status);
        let done = report["data"]["rows_scored"].as_u64().unwrap();
        assert!(done > 0 && done < 300, "{signal}: {done} rows scored");
        assert_eq!(
            predictions(&out).len() as u64,
            done + 1,
            "the partial predictions match the report"
        );

        let resumed = Command::new(binary())
            .args([
                "test",
                "--mock-backend",
                "--max-tokens",
                "300",
                "--checkpoint-seconds",
                "1",
                "--resume",
                "--model",
            ])
            .arg(fixture("esm2_micro.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert_eq!(predictions(&out).len(), 301);
    }
}

/// Regression: a data file rewritten or appended to while a run read it was scored as it then was: the
/// predictions mixed two versions of the file, an appended row was scored beyond the rows validated
/// ("301/300 rows") and the report recorded the SHA-256 of a file that had not been scored. Now the bytes
/// read are hashed as they pass and must be the fingerprinted ones.
#[test]
fn regression_a_data_file_changed_during_the_run_fails_it_instead_of_mixing_two_versions() {
    let dir = tempdir();
    // Larger than the reader's 1 MiB buffer, so the end of the file is read after the change.
    const ROWS: usize = 12_000;
    for change in ["same-length edit of the last row", "a row appended"] {
        let data = dir.path().join("nb.csv");
        synthetic_nanobodies(&data, ROWS, 19);
        let out = dir.path().join(change.replace(' ', "-"));
        let child = Command::new(binary())
            .args(["test", "--mock-backend", "--max-tokens", "60000", "--model"])
            .arg(fixture("esm2_micro.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .env("ESMBENCH_MOCK_DELAY_MS", "200")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // predictions.csv is created after the data was validated and fingerprinted, before the feed reads it.
        let started = Instant::now();
        while !out.join("predictions.csv").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{change}: never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data)
            .unwrap();
        use std::io::{Read, Seek, SeekFrom, Write};
        if change.starts_with("same-length") {
            // A valid residue for a valid residue: only the bytes themselves tell the versions apart.
            let at = file.metadata().unwrap().len() - 6;
            file.seek(SeekFrom::Start(at)).unwrap();
            let mut residue = [0u8];
            file.read_exact(&mut residue).unwrap();
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(if residue == *b"A" { b"G" } else { b"A" })
                .unwrap();
        } else {
            file.seek(SeekFrom::End(0)).unwrap();
            file.write_all(b"nb-extra,EVQLVESGGGLVQ,1\n").unwrap();
        }
        drop(file);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{change}: {stderr}");
        assert!(
            stderr.contains("nb.csv changed while the run read it")
                && stderr.contains("fix: leave the data file unchanged while a run reads it"),
            "{change}: {stderr}"
        );
        assert_eq!(read_json(&out.join("report.json"))["status"], "failed");
        assert!(
            predictions(&out).len() <= ROWS,
            "{change}: no row beyond the validated ones is scored"
        );
    }
}

/// `nohup esmbench ...` asks for the run to outlive its terminal: the hangup must stay ignored.
#[test]
fn under_nohup_a_hangup_is_ignored_and_the_run_completes() {
    let test = "under_nohup_a_hangup_is_ignored_and_the_run_completes";
    if Command::new("nohup").arg("true").status().is_err() {
        eprintln!("SKIPPED {test}: no nohup on this machine");
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 100, 17);
    let out = dir.path().join("o");
    let child = slow_mock_command(Some("nohup"), &data, &out, "40")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    send("HUP", child.id());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
    assert_eq!(predictions(&out).len(), 101);
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 300, 13);
    let child = slow_mock_run(&data, &dir.path().join("o"), "20000");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    send("INT", child.id());
    std::thread::sleep(Duration::from_millis(200));
    send("INT", child.id());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second Ctrl-C did not exit at once"
    );
}

/// A 300-row slow mock run in `dir` stopped by Ctrl-C after `millis`: its data and --out.
fn interrupted_mock_run(dir: &Path, millis: u64) -> (PathBuf, PathBuf) {
    let data = dir.join("nb.csv");
    synthetic_nanobodies(&data, 300, 17);
    let out = dir.join("o");
    let child = slow_mock_run(&data, &out, "40");
    std::thread::sleep(Duration::from_millis(millis));
    send("INT", child.id());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    (data, out)
}

fn resume_mock_run(data: &Path, out: &Path) -> std::process::Output {
    Command::new(binary())
        .args(["test", "--mock-backend", "--resume", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn resume_is_refused_when_the_data_changed() {
    let dir = tempdir();
    let (data, out) = interrupted_mock_run(dir.path(), 600);
    synthetic_nanobodies(&data, 300, 18);
    let output = resume_mock_run(&data, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--resume refused: the data file changed"),
        "{stderr}"
    );
}

/// Regression: a command refused for bad input (a wrong --data retyped in tmux) removed an interrupted run's
/// checkpoint and predictions from --out along with any earlier report, so `--resume` had nothing left.
#[test]
fn regression_a_refused_run_removed_an_interrupted_runs_checkpoint() {
    let dir = tempdir();
    let (data, out) = interrupted_mock_run(dir.path(), 600);
    let bad = write(dir.path(), "bad.csv", "sequence\nEVJL\n");
    let refused = Command::new(binary())
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&bad)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(out.join("checkpoint.json").exists() && out.join("predictions.csv").exists());
    let output = resume_mock_run(&data, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
    assert_eq!(predictions(&out).len(), 301);
}

/// Regression: a `--shard 2/3` run counted file positions as its rows: the progress line ran to "19999/20000
/// rows" at 3x its real rate, the timeline's rows_done passed the shard's row count, and an interrupted shard
/// said "after 19094 of 20000 rows" having scored 6,365.
#[test]
fn regression_a_shard_counted_file_positions_as_its_rows() {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 1800, 23);
    let out = dir.path().join("o");
    let child = slow_mock_command(None, &data, &out, "40")
        .args(["--shard", "2/3"])
        .spawn()
        .unwrap();
    // Past the timeline's first 2-second sample.
    std::thread::sleep(Duration::from_millis(2600));
    send("INT", child.id());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = read_json(&out.join("report.json"));
    let scored = report["data"]["rows_scored"].as_u64().unwrap();
    assert!(scored > 0 && scored < 600, "{report}");
    assert!(
        stderr.contains(&format!("after {scored} of shard 2/3's 600 rows")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("esmbench: {scored}/600 rows")),
        "{stderr}"
    );
    let timeline = report["performance"]["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 2, "{timeline:?}");
    for sample in timeline {
        assert!(sample["rows_done"].as_u64().unwrap() <= scored, "{sample}");
    }
}

/// Regression: a refused `embed` (a model that loads but gives no embeddings, a wrong --device) removed an
/// interrupted embed's checkpoint and partial .npy before its model loaded, so `--resume` had nothing left.
#[test]
fn regression_a_refused_embed_removed_an_interrupted_embeds_checkpoint() {
    if !runtime_available("regression_a_refused_embed_removed_an_interrupted_embeds_checkpoint") {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 300, 29);
    let out = dir.path().join("E.npy");
    let embed = |model: &Path, mock: bool, resume: bool| {
        let mut command = Command::new(binary());
        command.args([
            "embed",
            "--max-tokens",
            "300",
            "--checkpoint-seconds",
            "1",
            "--model",
        ]);
        command
            .arg(model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out);
        if mock {
            command
                .arg("--mock-backend")
                .env("ESMBENCH_MOCK_DELAY_MS", "40");
        }
        if resume {
            command.arg("--resume");
        }
        command
    };
    let child = embed(&fixture("esm2_micro.onnx"), true, false)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    send("INT", child.id());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    let checkpoint = out.with_extension("checkpoint.json");
    let partial = dir.path().join("E.npy.partial");
    let kept = (
        std::fs::read(&checkpoint).unwrap(),
        std::fs::read(&partial).unwrap(),
    );
    let refused = embed(&fixture("contract/logits_output.onnx"), false, false)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not embeddings"), "{stderr}");
    assert_eq!(
        (
            std::fs::read(&checkpoint).unwrap(),
            std::fs::read(&partial).unwrap()
        ),
        kept,
        "the interrupted embed's checkpoint and partial .npy are as it left them"
    );
    let resumed = embed(&fixture("esm2_micro.onnx"), true, true)
        .env("ESMBENCH_MOCK_DELAY_MS", "0")
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let embeddings: ndarray::Array2<f32> = ndarray_npy::read_npy(&out).unwrap();
    assert_eq!(embeddings.nrows(), 300);
}

/// Regression: `metrics` on an interrupted run's predictions (into its folder, then into any other) wrote a
/// report saying `complete` over the rows that run had scored so far, for a CI gate to read.
#[test]
fn regression_metrics_wrote_a_complete_report_into_an_interrupted_runs_folder() {
    let dir = tempdir();
    let (_, out) = interrupted_mock_run(dir.path(), 600);
    let copy = dir.path().join("copy.csv");
    std::fs::copy(out.join("predictions.csv"), &copy).unwrap();
    let metrics = |predictions: &Path, into: &Path| {
        Command::new(binary())
            .args(["metrics", "--predictions"])
            .arg(predictions)
            .arg("--out")
            .arg(into)
            .output()
            .unwrap()
    };
    // The interrupted run's own predictions, into its folder or any other: refused.
    for into in [out.clone(), dir.path().join("elsewhere")] {
        let output = metrics(&out.join("predictions.csv"), &into);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is an interrupted run's"), "{stderr}");
        assert!(!into.join("report.json").exists() || into == out);
    }
    // Other predictions into the interrupted run's folder: refused, its report left as it was.
    let output = metrics(&copy, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds an interrupted run"), "{stderr}");
    assert_eq!(read_json(&out.join("report.json"))["status"], "interrupted");
    // A copy rescored elsewhere, on purpose, is a partial run's metrics.
    assert!(metrics(&copy, &dir.path().join("partial")).status.success());
}

/// Regression: a resume with changed settings was refused only after the model loaded (minutes for a large
/// model). The real runtime's load prints its graph note; a refused resume must stop before it.
#[test]
fn regression_a_resume_with_changed_settings_was_refused_only_after_the_model_loaded() {
    if !runtime_available(
        "regression_a_resume_with_changed_settings_was_refused_only_after_the_model_loaded",
    ) {
        return;
    }
    let dir = tempdir();
    let (data, out) = interrupted_mock_run(dir.path(), 600);
    let output = Command::new(binary())
        .args(["test", "--resume", "--max-residues", "500", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--resume refused: --max-residues or --no-truncate changed since the interrupted run"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("note:"),
        "the model loaded first:\n{stderr}"
    );
}

/// Regression: predictions.csv changed between the interruption and `--resume` (a row edited by hand, or the
/// file opened and saved by a spreadsheet) was resumed from as if the run had written it: the edited row went
/// into the final predictions and the metrics, exit 0.
#[test]
fn regression_resume_refuses_predictions_changed_since_the_run_stopped() {
    let dir = tempdir();
    let (data, out) = interrupted_mock_run(dir.path(), 1500);
    let checkpoint = read_json(&out.join("checkpoint.json"));
    assert!(
        checkpoint["rows_done"].as_u64().unwrap() > 0,
        "{checkpoint}"
    );
    let predictions = out.join("predictions.csv");
    let written = std::fs::read_to_string(&predictions).unwrap();
    // The first prediction's last digit changed (same length), then the file as a spreadsheet saves it.
    let first = written.lines().nth(1).unwrap();
    let mut edited_line = first.to_string();
    let last = edited_line.pop().unwrap();
    edited_line.push(if last == '0' { '1' } else { '0' });
    for changed in [
        written.replacen(first, &edited_line, 1),
        written.replace('\n', "\r\n"),
    ] {
        std::fs::write(&predictions, &changed).unwrap();
        let output = resume_mock_run(&data, &out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("predictions.csv was changed after the run stopped")
                && stderr.contains("fix: put back the file the run wrote"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&predictions).unwrap(),
            changed,
            "left as it was"
        );
    }
    // Put back, it resumes to the end.
    std::fs::write(&predictions, &written).unwrap();
    let output = resume_mock_run(&data, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
}

/// Regression: `--resume` started reading at the checkpoint's `rows_done` without checking it against the
/// rows its files hold: a count edited down scored rows twice, one edited up left rows never scored, and both
/// runs ended `complete` with exit 0.
#[test]
fn regression_resume_trusted_an_edited_row_count_and_scored_rows_twice_or_never() {
    let dir = tempdir();
    let (data, out) = interrupted_mock_run(dir.path(), 1500);
    let path = out.join("checkpoint.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut checkpoint: serde_json::Value = serde_json::from_str(&original).unwrap();
    let done = checkpoint["rows_done"].as_u64().unwrap();
    assert!(done > 1 && done < 300, "{checkpoint}");
    for edited in [0, done - 1, done + 1, 100_000] {
        checkpoint["rows_done"] = edited.into();
        std::fs::write(&path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();
        let output = resume_mock_run(&data, &out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("says rows 0..{edited} are done"))
                && stderr.contains(&format!("predictions.csv and skipped.csv hold {done}")),
            "{stderr}"
        );
    }
    std::fs::write(&path, &original).unwrap();
    let output = resume_mock_run(&data, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<String> = predictions(&out)
        .iter()
        .skip(1)
        .map(|line| line.split(',').next().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..300).map(|row| row.to_string()).collect();
    assert_eq!(rows, expected, "every row once, in order");
    // The report says where it resumed, and its rate is over the rows this process scored: 300 - done.
    let report = read_json(&out.join("report.json"));
    assert_eq!(
        report["execution"]["resumed"],
        serde_json::json!({"at_row": done, "rows_scored_before": done})
    );
    let performance = &report["performance"];
    let rate = (300 - done) as f64 / performance["wall_seconds"].as_f64().unwrap();
    let reported = performance["sequences_per_second"].as_f64().unwrap();
    assert!(
        (reported - rate).abs() <= 1e-9 * rate,
        "{reported} vs {rate}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "scored 300 of 300 rows ({} timed here; {done} were scored before a resume)",
            300 - done
        )),
        "{stdout}"
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains(&format!(
            "over the {} rows timed here ({done} were scored before a resume",
            300 - done
        )),
        "{markdown}"
    );
}

/// Regression: a run killed between removing its empty skipped.csv and marking its checkpoint complete (the
/// order of those two steps until they were swapped) left a checkpoint that `--resume` could not continue
/// (exit 1, "No such file or directory"); such a folder now resumes. Killed between them in the order they
/// run now, a run leaves its empty skipped.csv beside a complete checkpoint, which a resume keeps. A
/// predictions.csv deleted after a stop gave exit 1 too, where a changed one is refused with exit 2 and a fix.
#[test]
fn regression_resume_after_a_kill_in_the_last_step_finishes_and_a_deleted_log_is_refused() {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 300, 21);
    let out = dir.path().join("o");
    test_command(&fixture("esm2_micro.onnx"), &data, &out)
        .arg("--mock-backend")
        .assert()
        .success();
    let written = std::fs::read(out.join("predictions.csv")).unwrap();
    // The state such a kill leaves: every row written, the checkpoint not yet complete, skipped.csv gone.
    let unfinished = || {
        let path = out.join("checkpoint.json");
        let mut checkpoint = read_json(&path);
        checkpoint["complete"] = serde_json::json!(false);
        std::fs::write(&path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();
    };
    unfinished();
    assert!(!out.join("skipped.csv").exists());
    let output = resume_mock_run(&data, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(out.join("predictions.csv")).unwrap(), written);
    assert_eq!(read_json(&out.join("checkpoint.json"))["complete"], true);

    // The state the current order can leave: complete, with the empty list not yet removed.
    std::fs::write(out.join("skipped.csv"), "row,line,id,column,reason\n").unwrap();
    let output = resume_mock_run(&data, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("is already complete"), "{stderr}");
    assert_eq!(std::fs::read(out.join("predictions.csv")).unwrap(), written);

    unfinished();
    std::fs::remove_file(out.join("predictions.csv")).unwrap();
    let output = resume_mock_run(&data, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("predictions.csv is missing; the run had written")
            && stderr.contains("fix: put back the file the run wrote, or drop --resume"),
        "{stderr}"
    );
}

#[test]
fn skipped_rows_are_listed_counted_and_left_out_of_predictions() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "mixed.csv",
        "id,sequence,label\na,EVQL,1\nb,EVQJL,0\nc,LAGV,0\nd,,1\ne,KKW,2\n",
    );
    esmbench()
        .args(["test", "--mock-backend", "--on-invalid", "skip", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .success();
    let scored = read_csv(&dir.path().join("o/predictions.csv"));
    assert_eq!(
        scored.iter().map(|r| r["id"].as_str()).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
    let skipped = read_csv(&dir.path().join("o/skipped.csv"));
    assert_eq!(
        skipped
            .iter()
            .map(|r| r["line"].as_str())
            .collect::<Vec<_>>(),
        vec!["3", "5", "6"]
    );
    // Regression: the id column of skipped.csv was always empty, so a bad antibody could not be found by name.
    assert_eq!(
        skipped.iter().map(|r| r["id"].as_str()).collect::<Vec<_>>(),
        vec!["b", "d", "e"]
    );
    assert!(skipped[0]["reason"].contains("'J' is not in the ESM alphabet"));
    let report = read_json(&dir.path().join("o/report.json"));
    assert_eq!(report["data"]["rows_skipped"], 3);
    assert_eq!(report["data"]["rows_scored"], 2);
    assert_eq!(report["metrics"]["n"], 2);
}

/// `esmbench test` on `rows` synthetic nanobodies with --threads 2: the folder that holds it all, and the --out.
fn run_synthetic_on_two_threads(rows: usize, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, rows, seed);
    let out = dir.path().join("o");
    let mut args = test_args(&data, &out);
    args.extend(["--threads".into(), "2".into()]);
    assert!(Command::new(binary())
        .args(&args)
        .output()
        .unwrap()
        .status
        .success());
    (dir, out)
}

#[test]
fn the_thread_count_stays_flat_over_a_run() {
    if !runtime_available("the_thread_count_stays_flat_over_a_run") {
        return;
    }
    let (_dir, out) = run_synthetic_on_two_threads(20000, 19);
    let report = read_json(&out.join("report.json"));
    let timeline = report["performance"]["timeline"].as_array().unwrap();
    let counts: Vec<u64> = timeline
        .iter()
        .skip(1)
        .map(|s| s["threads"].as_u64().unwrap())
        .collect();
    let peak = report["performance"]["peak_threads"].as_u64().unwrap();
    // main + reader + monitor + ONNX Runtime's intra-op pool (threads - 1).
    assert!(peak <= 5, "peak threads {peak}");
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "thread count moved during the run: {counts:?}"
    );
}

#[test]
fn the_cpu_time_is_sampled_and_the_report_gives_the_cpus_busy_beside_the_threads() {
    if !runtime_available(
        "the_cpu_time_is_sampled_and_the_report_gives_the_cpus_busy_beside_the_threads",
    ) {
        return;
    }
    let (_dir, out) = run_synthetic_on_two_threads(150_000, 23);
    let report = read_json(&out.join("report.json"));
    let timeline = report["performance"]["timeline"].as_array().unwrap();
    assert!(
        timeline.len() >= 2,
        "a run this size lasts over one 2 s interval: {timeline:?}"
    );
    let cpu: Vec<f64> = timeline
        .iter()
        .map(|s| s["cpu_seconds"].as_f64().unwrap())
        .collect();
    assert!(
        cpu.windows(2).all(|w| w[0] <= w[1]),
        "CPU time went back: {cpu:?}"
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    let row = markdown
        .lines()
        .find(|l| l.starts_with("| CPU | "))
        .unwrap_or_else(|| panic!("no CPU row in report.md:\n{markdown}"));
    let busy: f64 = row["| CPU | ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Seconds, not milliseconds or ticks: scoring keeps some CPU busy and at most the model's threads
    // plus the reader and the writer.
    assert!((0.1..=4.0).contains(&busy), "{row}");
    assert!(row.ends_with("(2 threads for the model) |"), "{row}");
}

/// Regression: two runs on the same --out (a job started twice in tmux, or a --resume while the first still
/// ran) both wrote into one predictions.csv, and both exited 0 over a file that held neither run's rows.
#[test]
fn regression_a_second_run_on_a_busy_out_directory_exits_2_and_leaves_the_first_intact() {
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 300, 17);
    let out = dir.path().join("o");
    let first = slow_mock_run(&data, &out, "20");
    let started = Instant::now();
    while !out.join("predictions.csv").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first run never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for resume in [false, true] {
        let mut second = Command::new(binary());
        second
            .args(["test", "--mock-backend", "--model"])
            .arg(fixture("esm2_micro.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out);
        if resume {
            second.arg("--resume");
        }
        let second = second.output().unwrap();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(2), "resume={resume}: {stderr}");
        assert!(
            stderr.contains(&format!("in use by esmbench process {}", first.id()))
                && stderr.contains("fix:"),
            "resume={resume}: {stderr}"
        );
    }
    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = predictions(&out);
    assert_eq!(
        rows.len(),
        301,
        "the first run's predictions, header and 300 rows"
    );
    let mut expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let mut seen: Vec<String> = rows[1..]
        .iter()
        .map(|line| line.split(',').next().unwrap().to_string())
        .collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every row once");
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");

    let after = slow_mock_run(&data, &out, "0").wait_with_output().unwrap();
    assert!(
        after.status.success(),
        "the lock is released when the run ends: {}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// A limit on threads a test can set and run esmbench under.
trait ThreadLimit {
    /// Allows `tasks` threads from the next run on; false where that cannot be set.
    fn set(&self, tasks: u32) -> bool;
    /// `program args` started under the limit.
    fn command(&self, program: &Path, args: &[String]) -> Command;
    /// The limit as a user would write it, for messages: "pids.max", "ulimit -u".
    fn name(&self) -> &'static str;
}

/// A pids cgroup of this test's own (cgroup v1's pids hierarchy, or v2 with the pids controller), removed on
/// drop; None where this process may not make one (not root, no pids controller).
struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    fn create() -> Option<PidsCgroup> {
        let name = format!("esmbench-test-{}", std::process::id());
        ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .find_map(|base| {
                let dir = Path::new(base).join(&name);
                std::fs::create_dir(&dir).ok()?;
                let limit = PidsCgroup { dir };
                limit.set(64).then_some(limit)
            })
    }
}

impl ThreadLimit for PidsCgroup {
    fn set(&self, tasks: u32) -> bool {
        std::fs::write(self.dir.join("pids.max"), tasks.to_string()).is_ok()
    }

    /// The shell moves itself into the cgroup, then execs the program.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let procs = self.dir.join("cgroup.procs");
        exec_after(
            "sh",
            &format!("echo $$ > '{}'", procs.display()),
            program,
            args,
        )
    }

    fn name(&self) -> &'static str {
        "pids.max"
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `ulimit -u` (RLIMIT_NPROC) for runs as a user id of the test's own, which root is not held to; None where
/// this process is not root, has no bash, or that user cannot reach the binary, the runtime or `readable`.
struct UserProcessLimit {
    uid: u32,
    tasks: std::cell::Cell<u32>,
}

impl UserProcessLimit {
    fn create(readable: &Path) -> Option<UserProcessLimit> {
        use std::os::unix::fs::PermissionsExt;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let root = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))?
            .split_whitespace()
            .all(|id| id == "0");
        if !root {
            return None;
        }
        std::fs::set_permissions(readable, std::fs::Permissions::from_mode(0o777)).ok()?;
        // An id no one else runs as, so that only this test's threads count against the limit.
        let limit = UserProcessLimit {
            uid: 61_000 + std::process::id() % 1000,
            tasks: std::cell::Cell::new(64),
        };
        let runtime = esmbench::model::runtime::locate_library().ok()?;
        let reachable = limit
            .command(Path::new("test"), &[])
            .args(["-r", &runtime.display().to_string(), "-a", "-x"])
            .arg(binary())
            .args(["-a", "-w"])
            .arg(readable)
            .status()
            .ok()?
            .success();
        reachable.then_some(limit)
    }
}

impl ThreadLimit for UserProcessLimit {
    fn set(&self, tasks: u32) -> bool {
        self.tasks.set(tasks);
        true
    }

    fn command(&self, program: &Path, args: &[String]) -> Command {
        use std::os::unix::process::CommandExt;
        let setup = format!("ulimit -u {}", self.tasks.get());
        let mut command = exec_after("bash", &setup, program, args);
        command.uid(self.uid).gid(self.uid);
        command
    }

    fn name(&self) -> &'static str {
        "ulimit -u"
    }
}

/// `shell -c "setup && exec program args"`: the limit is set in the process that then becomes the program.
fn exec_after(shell: &str, setup: &str, program: &Path, args: &[String]) -> Command {
    let mut command = Command::new(shell);
    command
        .arg("-c")
        .arg(format!("{setup} && exec \"$0\" \"$@\""))
        .arg(program)
        .args(args);
    command
}

/// One run of `args` under `tasks` threads: (exit code, stderr). A run that outlives a generous deadline is
/// killed and fails the test: ONNX Runtime once hung when its pool was refused a thread.
fn run_under_thread_limit(
    limit: &dyn ThreadLimit,
    tasks: u32,
    args: &[String],
    stderr_path: &Path,
) -> (Option<i32>, String) {
    assert!(limit.set(tasks), "cannot set {}", limit.name());
    let mut child = limit
        .command(&binary(), args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} {tasks}: still running after 60 s (hung), args {args:?}",
                limit.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(stderr_path).unwrap_or_default(),
    )
}

/// Esmbench's defaults, then 4 threads on one batch (where ONNX Runtime starts a pool of 3), under 1 to 9
/// threads: every run completes, or stops with exit 1 or 2 and the fix; none panics, hangs or blames the
/// model file, both sides of the limit are reached, and the default is lowered to fit at least once.
fn sweep_thread_limits(limit: &dyn ThreadLimit, dir: &Path) {
    let data = dir.join("nb.csv");
    synthetic_nanobodies(&data, 300, 23);
    for (name, extra) in [
        ("default", vec![]),
        ("pool", vec!["--threads", "4", "--parallel-batches", "1"]),
    ] {
        let (mut refused, mut completed, mut lowered) = (0, 0, 0);
        for tasks in 1..=9 {
            let out = dir.join(format!("{name}{tasks}"));
            let mut args = test_args(&data, &out);
            args.extend(extra.iter().map(|a| a.to_string()));
            let stderr_path = dir.join(format!("{name}{tasks}.stderr"));
            let (code, stderr) = run_under_thread_limit(limit, tasks, &args, &stderr_path);
            let context = format!("{name}, {} {tasks}: exit {code:?}\n{stderr}", limit.name());
            assert!(!stderr.contains("panicked"), "{context}");
            assert!(
                !stderr.contains("check that it is an ONNX file"),
                "{context}"
            );
            lowered += usize::from(stderr.contains("note: --threads defaults to"));
            match code {
                Some(0) => {
                    completed += 1;
                    assert_eq!(predictions(&out).len(), 301, "{context}");
                    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
                }
                Some(1 | 2) => {
                    refused += 1;
                    assert!(
                        stderr.contains("fix: use --threads") || stderr.contains("fix: raise"),
                        "{context}"
                    );
                    if let Ok(text) = std::fs::read_to_string(out.join("report.json")) {
                        assert!(!text.contains("\"complete\""), "{context}");
                    }
                }
                _ => panic!("{context}"),
            }
        }
        assert!(
            refused > 0 && completed > 0,
            "{name} under {}: refused {refused}, completed {completed}",
            limit.name()
        );
        if name == "default" {
            assert!(
                lowered > 0,
                "the default --threads was never lowered to fit {}",
                limit.name()
            );
        }
    }
}

/// Regression: in a container that allows few threads (pids.max), a thread the system refused panicked
/// ("failed to spawn thread", exit 101), and where ONNX Runtime's pool was refused one the load failed as
/// "check that it is an ONNX file" (exit 2) or hung. Under every limit a run now completes, or stops with
/// a documented exit code naming the threads and the fix: before the model loads when the limit is
/// visible, at the refused thread otherwise. Without --threads the default is lowered to fit.
#[test]
fn regression_a_thread_limit_gives_a_complete_run_or_an_error_with_the_fix_never_a_panic() {
    let test =
        "regression_a_thread_limit_gives_a_complete_run_or_an_error_with_the_fix_never_a_panic";
    if !runtime_available(test) {
        return;
    }
    let Some(limit) = PidsCgroup::create() else {
        eprintln!(
            "SKIPPED {test}: cannot make a pids cgroup here (needs root and the pids controller)"
        );
        return;
    };
    sweep_thread_limits(&limit, tempdir().path());
}

/// Regression: under `ulimit -u` (a cluster's per-user process limit) with `--threads 4`, ONNX Runtime's pool
/// was refused a thread and the run hung for good; the limit is now read, like a pids cgroup's, before the
/// model loads.
#[test]
fn regression_ulimit_u_gives_a_complete_run_or_an_error_with_the_fix_never_a_hang() {
    let test = "regression_ulimit_u_gives_a_complete_run_or_an_error_with_the_fix_never_a_hang";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let Some(limit) = UserProcessLimit::create(dir.path()) else {
        eprintln!(
            "SKIPPED {test}: cannot run as another user here (needs root, bash, and the binary and \
             runtime readable by all)"
        );
        return;
    };
    sweep_thread_limits(&limit, dir.path());
}

/// A small tmpfs of this test's own, unmounted on drop; None where this process may not mount one.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempdir();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "remounting the tmpfs at {size}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A 300 KB tmpfs and 20,000 synthetic rows beside it (more output than fits), or None with the skip message.
fn full_disk_and_data(test: &str, seed: u64) -> Option<(SmallDisk, tempfile::TempDir, PathBuf)> {
    if !runtime_available(test) {
        return None;
    }
    let Some(disk) = SmallDisk::mount("300k") else {
        eprintln!("SKIPPED {test}: cannot mount a tmpfs here (needs root)");
        return None;
    };
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 20_000, seed);
    Some((disk, dir, data))
}

/// The run stopped with exit 1 and every `expected` text on stderr, without a panic.
fn assert_stopped_by_full_disk(output: &std::process::Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in expected {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Regression: when the disk under --out filled up, the run stopped with the report's own write error (the
/// failed-run report could not be written either), no fix, and a truncated report.json.tmp left behind. Now
/// the scoring error comes first, with the fix and the command that continues, no temporary file is left,
/// and that command completes the run once there is space.
#[test]
fn regression_a_full_disk_exits_1_with_the_fix_and_the_run_resumes() {
    let test = "regression_a_full_disk_exits_1_with_the_fix_and_the_run_resumes";
    // 20,000 rows of predictions take about 800 KB.
    let Some((disk, _dir, data)) = full_disk_and_data(test, 29) else {
        return;
    };
    let out = disk.dir.path().join("run");
    let args = test_args(&data, &out);
    let full = Command::new(binary()).args(&args).output().unwrap();
    assert_stopped_by_full_disk(
        &full,
        &[
            "error: writing",
            "No space left on device",
            "fix: free space on the disk that holds",
            "--resume",
        ],
    );
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?} left");
    }
    if let Ok(text) = std::fs::read_to_string(out.join("report.json")) {
        assert!(!text.contains("\"complete\""), "{text}");
    }

    disk.resize("20m");
    let resumed = Command::new(binary())
        .args(&args)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(predictions(&out).len(), 20_001);
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
}

/// Regression: `esmbench embed` onto a full disk said only "No space left on device", naming no file. Now it
/// names the file and the fix, leaves no E.npy that claims to be complete, and `--resume` finishes the run
/// once there is space.
#[test]
fn regression_a_full_disk_under_embed_names_the_file_and_the_fix() {
    let test = "regression_a_full_disk_under_embed_names_the_file_and_the_fix";
    // 20,000 rows x 8 float32 columns take 640 KB.
    let Some((disk, _dir, data)) = full_disk_and_data(test, 31) else {
        return;
    };
    let out = disk.dir.path().join("embeddings.npy");
    let embed = || command_on("embed", &fixture("esm2_micro_with_head.onnx"), &data, &out);
    let full = embed().output().unwrap();
    assert_stopped_by_full_disk(
        &full,
        &[
            "error: writing",
            // The .npy or its row list beside it, whichever fills the disk first.
            ".partial: No space left on device",
            "fix: free space on the disk that holds",
            "embeddings.npy (or raise the quota), then continue with: ",
            "--resume",
        ],
    );
    assert!(!out.exists(), "no embeddings file may claim to be complete");
    assert!(!disk.dir.path().join("embeddings.rows.csv").exists());

    disk.resize("20m");
    let resumed = embed().arg("--resume").output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let embeddings: ndarray::Array2<f32> = ndarray_npy::read_npy(&out).unwrap();
    assert_eq!(embeddings.nrows(), 20_000);
    assert_eq!(
        read_csv(&disk.dir.path().join("embeddings.rows.csv")).len(),
        20_000
    );
}

/// Where a run's standard output or standard error goes: a pipe whose reader is gone (`| head` that
/// exited, a closed tmux pipe-pane), a full disk (`/dev/full`), or nowhere.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn dev_full() -> Option<Stdio> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .ok()?;
    Some(Stdio::from(file))
}

/// Regression: progress lines, notes and the closing summary went through `eprintln!`/`println!`, which panic
/// (exit 101) when the stream fails, as it does under `esmbench test ... 2>&1 | head -1` once head exits or
/// when the log's disk fills. The run died after its last batch with report.json still saying `running`.
/// Now a closed reader is ignored, a failed stderr is dropped, and a failed stdout, where a command's own
/// product goes, is exit 1 with the reason once the run's files are whole.
#[test]
fn regression_a_closed_or_full_stdout_or_stderr_never_panics_a_run() {
    let test = "regression_a_closed_or_full_stdout_or_stderr_never_panics_a_run";
    let (Some(full_err), Some(full_out)) = (dev_full(), dev_full()) else {
        eprintln!("SKIPPED {test}: no /dev/full on this machine");
        return;
    };
    let dir = tempdir();
    let data = dir.path().join("nanobodies.csv");
    synthetic_nanobodies(&data, 300, 41);
    let run = |name: &str, stdout: Stdio, stderr: Stdio| {
        let out = dir.path().join(name);
        let output = Command::new(binary())
            .args(["test", "--mock-backend", "--max-tokens", "600", "--model"])
            .arg(fixture("esm2_micro.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .stdout(stdout)
            .stderr(stderr)
            .output()
            .unwrap();
        assert_eq!(predictions(&out).len(), 301, "{name}: every row scored");
        assert_eq!(
            read_json(&out.join("report.json"))["status"],
            "complete",
            "{name}"
        );
        output
    };
    for (name, stdout, stderr) in [
        ("both-pipes-closed", closed_pipe(), closed_pipe()),
        ("stderr-on-a-full-disk", Stdio::null(), full_err),
    ] {
        let status = run(name, stdout, stderr).status;
        assert_eq!(status.code(), Some(0), "{name}: {status}");
    }
    let summary_lost = run("stdout-on-a-full-disk", full_out, Stdio::piped());
    let stderr = String::from_utf8_lossy(&summary_lost.stderr);
    assert_eq!(summary_lost.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: could not write to standard output\n  caused by: No space left on device"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // clap writes --help itself and drops its own write error: the help was lost with exit 0.
    let help_lost = Command::new(binary())
        .arg("--help")
        .stdout(dev_full().unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&help_lost.stderr);
    assert_eq!(help_lost.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not write to standard output"),
        "{stderr}"
    );
}

fn embed_args(data: &Path, out: &Path, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "embed".into(),
        "--model".into(),
        fixture("esm2_micro.onnx").display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--on-invalid".into(),
        "skip".into(),
        "--checkpoint-seconds".into(),
        "1".into(),
    ];
    if resume {
        args.push("--resume".into());
    }
    args
}

/// Starts `command` (stdout dropped, stderr kept) and returns it once `file` holds `bytes` bytes, the run
/// still going.
fn spawn_until_written(command: &mut Command, file: &Path, bytes: u64) -> std::process::Child {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while std::fs::metadata(file).map_or(0, |m| m.len()) < bytes {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {} held {bytes} bytes",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Starts embed and stops it with `signal` once its row list holds `target` bytes.
fn embed_stopped_at(
    args: &[String],
    rows_partial: &Path,
    target: u64,
    signal: &str,
) -> std::process::Output {
    let child = spawn_until_written(Command::new(binary()).args(args), rows_partial, target);
    send(signal, child.id());
    child.wait_with_output().unwrap()
}

/// Regression: `esmbench embed` had no checkpoint and no --resume. A run over Harvey-size data killed by the
/// OOM killer or stopped with Ctrl-C lost everything and started again from row 0. Now embed checkpoints like
/// test; after kill -9 and after Ctrl-C, `--resume` goes on from the checkpoint, and the finished E.npy, its row
/// list and its skipped list are byte for byte those of a run never stopped.
#[test]
fn regression_embed_resumes_after_kill_9_and_ctrl_c_to_the_bytes_of_an_uninterrupted_run() {
    let test =
        "regression_embed_resumes_after_kill_9_and_ctrl_c_to_the_bytes_of_an_uninterrupted_run";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 40_000, 41);
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("bad,EVQJL,1\n");
    std::fs::write(&data, text).unwrap();

    let reference = dir.path().join("reference.npy");
    let done = Command::new(binary())
        .args(embed_args(&data, &reference, false))
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let rows_bytes = std::fs::metadata(dir.path().join("reference.rows.csv"))
        .unwrap()
        .len();

    let out = dir.path().join("e.npy");
    let rows_partial = dir.path().join("e.rows.csv.partial");
    let killed = embed_stopped_at(
        &embed_args(&data, &out, false),
        &rows_partial,
        rows_bytes * 3 / 10,
        "KILL",
    );
    assert!(!killed.status.success());
    assert!(dir.path().join("e.checkpoint.json").exists() && !out.exists());

    let interrupted = embed_stopped_at(
        &embed_args(&data, &out, true),
        &rows_partial,
        rows_bytes * 7 / 10,
        "INT",
    );
    let stderr = String::from_utf8_lossy(&interrupted.stderr);
    assert_eq!(interrupted.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("esmbench: resuming at row"), "{stderr}");
    assert!(
        stderr.contains("e.npy was not written, the embeddings so far are in")
            && stderr.contains("resume with: ")
            && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!out.exists());

    let resume_embed = || {
        Command::new(binary())
            .args(embed_args(&data, &out, true))
            .output()
            .unwrap()
    };
    let finished = resume_embed();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&finished.stdout).contains("wrote 40000 embeddings"),
        "the count covers the rows of the earlier runs too"
    );
    for (name, expected) in [
        ("e.npy", "reference.npy"),
        ("e.rows.csv", "reference.rows.csv"),
        ("e.skipped.csv", "reference.skipped.csv"),
    ] {
        let got = std::fs::read(dir.path().join(name)).unwrap();
        let want = std::fs::read(dir.path().join(expected)).unwrap();
        assert!(
            got == want,
            "{name} differs from the uninterrupted run's {expected}"
        );
    }
    for left in [
        "e.npy.partial",
        "e.rows.csv.partial",
        "e.skipped.csv.partial",
    ] {
        assert!(!dir.path().join(left).exists(), "{left} was left behind");
    }
    let checkpoint_path = dir.path().join("e.checkpoint.json");
    assert_eq!(read_json(&checkpoint_path)["complete"], true);

    // Regression: `--resume` of a finished embed exited 2 ("no checkpoint"), where test keeps a finished
    // run's outputs; a retry wrapper that always adds --resume failed on it.
    let again = resume_embed();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept 40000 embeddings"));

    // Regression: killed after e.rows.csv was renamed into place and before e.npy was, the run could not be
    // resumed (exit 1, "reopening e.rows.csv.partial"). The state such a kill leaves, made by hand:
    std::fs::rename(&out, dir.path().join("e.npy.partial")).unwrap();
    let mut checkpoint = read_json(&checkpoint_path);
    checkpoint["complete"] = serde_json::json!(false);
    std::fs::write(&checkpoint_path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();
    let finished = resume_embed();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap());
    assert_eq!(read_json(&checkpoint_path)["complete"], true);

    // Killed after every rename and before the checkpoint was marked complete: the files are moved back and
    // finished again (this run has a skipped list too).
    let mut checkpoint = read_json(&checkpoint_path);
    checkpoint["complete"] = serde_json::json!(false);
    std::fs::write(&checkpoint_path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();
    // A run still finishing holds the lock on the embeddings file: a resume then moves nothing and exits 2.
    let held = std::fs::File::open(&out).unwrap();
    held.lock().unwrap();
    let refused = resume_embed();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is being written by another esmbench run"),
        "{stderr}"
    );
    for name in ["e.npy", "e.rows.csv", "e.skipped.csv"] {
        assert!(
            dir.path().join(name).is_file(),
            "{name} was moved under a running run"
        );
    }
    drop(held);
    let finished = resume_embed();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    for (name, expected) in [
        ("e.npy", "reference.npy"),
        ("e.rows.csv", "reference.rows.csv"),
        ("e.skipped.csv", "reference.skipped.csv"),
    ] {
        assert!(
            std::fs::read(dir.path().join(name)).unwrap()
                == std::fs::read(dir.path().join(expected)).unwrap(),
            "{name} differs after finishing again"
        );
    }
    assert_eq!(read_json(&checkpoint_path)["complete"], true);
}

/// Regression: a suite hashed its model's files again for every dataset after loading it once. A model file
/// replaced during the first dataset (a new export to the same path) was then recorded in the second
/// dataset's report.json, and in its resume fingerprint, though the suite went on scoring with the model it
/// had loaded. Now a suite hashes each model once, beside its load, and every dataset's report names the
/// loaded model. It also saves seconds per dataset on a multi-GB model.
#[test]
fn regression_a_suite_reports_the_model_it_loaded_when_the_file_is_replaced_midway() {
    use sha2::{Digest, Sha256};
    let test = "regression_a_suite_reports_the_model_it_loaded_when_the_file_is_replaced_midway";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let model = dir.path().join("m.onnx");
    std::fs::copy(fixture("esm2_micro_with_head.onnx"), &model).unwrap();
    let loaded_sha256 = format!("{:x}", Sha256::digest(std::fs::read(&model).unwrap()));
    let (big, small) = (dir.path().join("big.csv"), dir.path().join("small.csv"));
    synthetic_nanobodies(&big, 40_000, 37);
    synthetic_nanobodies(&small, 150, 38);
    let out = dir.path().join("out");
    let suite = write(
        dir.path(),
        "suite.yaml",
        &format!(
            "models:\n  - model: {}\ndatasets:\n  - data: {}\n  - data: {}\nout: {}\nbootstrap: 0\n",
            model.display(),
            big.display(),
            small.display(),
            out.display()
        ),
    );
    let child = spawn_until_written(
        Command::new(binary())
            .args(["test", "--config"])
            .arg(&suite),
        &out.join("m/big/predictions.csv"),
        4_000,
    );
    std::fs::copy(fixture("esm2_micro.onnx"), &model).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for data in ["big", "small"] {
        let report = read_json(&out.join(format!("m/{data}/report.json")));
        assert_eq!(report["status"], "complete");
        assert_eq!(
            report["model"]["sha256"], loaded_sha256,
            "{data}: the report names another model than the one loaded"
        );
    }
    let suite_small = read_csv(&out.join("m/small/predictions.csv"));
    let alone = score_probabilities(
        &fixture("esm2_micro_with_head.onnx"),
        &small,
        &dir.path().join("alone"),
    );
    assert_eq!(column_f64(&suite_small, "probability"), alone);
}

/// Regression: a models x datasets suite stopped in its second run could not be resumed: `--resume` failed on
/// the first run ("has no checkpoint (the run finished...)"), and without it every run started again. Now a
/// resumed suite keeps the runs that had finished (their outputs untouched), resumes the one that was stopped,
/// and starts the ones that had not begun. `test --resume` on a finished run keeps its outputs, unless
/// predictions.csv was changed since.
#[test]
fn regression_a_suite_stopped_midway_resumes_past_its_finished_runs() {
    let dir = tempdir();
    let mut datasets = String::new();
    for k in 1..=3 {
        let data = dir.path().join(format!("d{k}.csv"));
        synthetic_nanobodies(&data, 200, 50 + k);
        datasets.push_str(&format!("  - data: {}\n", data.display()));
    }
    let out = dir.path().join("out");
    let suite = write(
        dir.path(),
        "suite.yaml",
        &format!(
            "models:\n  - model: {}\ndatasets:\n{datasets}out: {}\ncheckpoint_seconds: 1\nmax_tokens: 300\n",
            fixture("esm2_micro.onnx").display(),
            out.display()
        ),
    );
    let suite_command = |resume: bool| {
        let mut command = Command::new(binary());
        command
            .args(["test", "--mock-backend", "--config"])
            .arg(&suite);
        if resume {
            command.arg("--resume");
        }
        command
    };
    let run_dir = |k: u32| out.join("esm2_micro").join(format!("d{k}"));
    let child = suite_command(false)
        .env("ESMBENCH_MOCK_DELAY_MS", "40")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = run_dir(2).join("predictions.csv");
    while std::fs::read_to_string(&second).map_or(0, |t| t.lines().count()) < 60 {
        std::thread::sleep(Duration::from_millis(10));
    }
    send("INT", child.id());
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let first_predictions = std::fs::read(run_dir(1).join("predictions.csv")).unwrap();
    let first_report = std::fs::read(run_dir(1).join("report.json")).unwrap();
    assert!(
        !run_dir(3).join("predictions.csv").exists(),
        "the third run had not started"
    );

    let resumed = suite_command(true).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("d1 is already complete with the same data, model and settings"),
        "{stderr}"
    );
    assert!(stderr.contains("esmbench: resuming at row"), "{stderr}");
    assert!(
        stderr.contains("d3 has no checkpoint: this run had not started"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(run_dir(1).join("predictions.csv")).unwrap(),
        first_predictions
    );
    assert_eq!(
        std::fs::read(run_dir(1).join("report.json")).unwrap(),
        first_report
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["status"], "complete");
    for k in 1..=3 {
        assert_eq!(
            predictions(&run_dir(k)).len(),
            201,
            "d{k}: one prediction per row"
        );
        assert_eq!(
            read_json(&run_dir(k).join("report.json"))["status"],
            "complete"
        );
    }

    // One finished run, resumed: its outputs stand; edited since, it is refused.
    let single = |extra: &[&str]| {
        Command::new(binary())
            .args(["test", "--mock-backend", "--model"])
            .arg(fixture("esm2_micro.onnx"))
            .arg("--data")
            .arg(dir.path().join("d3.csv"))
            .arg("--out")
            .arg(run_dir(3))
            .args(extra)
            .output()
            .unwrap()
    };
    let again = single(&["--resume"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let text = std::fs::read_to_string(run_dir(3).join("predictions.csv")).unwrap();
    std::fs::write(
        run_dir(3).join("predictions.csv"),
        text.replacen(",1\n", ",0\n", 1),
    )
    .unwrap();
    let edited = single(&["--resume"]);
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert_eq!(edited.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("was changed after the run completed"),
        "{stderr}"
    );
}

/// The model's SHA-256 is taken on its own thread while the data is read and the model loads (a 2.6 GB ESM-1v
/// export takes seconds to hash); `test` waits for it after the load, `embed --resume` before it. A model whose
/// weights were replaced at the same path between the stop and `--resume` (a re-export: same graph, another
/// external data file) is refused by both, and what the first run wrote is left as it was.
#[test]
fn resume_is_refused_when_the_models_external_weights_changed() {
    let dir = tempdir();
    let (model, weights) = copy_external_data_model(dir.path());
    let data = dir.path().join("nb.csv");
    synthetic_nanobodies(&data, 300, 23);
    let common = |command: &str, out: &Path| {
        // Two rows a batch, so that a run with the mock's delay lasts seconds.
        let mut args: Vec<String> = vec![
            command.into(),
            "--mock-backend".into(),
            "--max-tokens".into(),
            "300".into(),
        ];
        for (flag, value) in [
            ("--model", &model),
            ("--data", &data),
            ("--out", &out.to_path_buf()),
        ] {
            args.push(flag.into());
            args.push(value.display().to_string());
        }
        args
    };

    let test_out = dir.path().join("scored");
    let test_args = common("test", &test_out);
    let scored = Command::new(binary()).args(&test_args).output().unwrap();
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );

    let embed_out = dir.path().join("e.npy");
    let mut embed_args = common("embed", &embed_out);
    embed_args.extend(["--checkpoint-seconds".into(), "1".into()]);
    let rows_partial = dir.path().join("e.rows.csv.partial");
    let stopped = {
        let child = spawn_until_written(
            Command::new(binary())
                .args(&embed_args)
                .env("ESMBENCH_MOCK_DELAY_MS", "40"),
            &rows_partial,
            200,
        );
        send("INT", child.id());
        child.wait_with_output().unwrap()
    };
    assert_eq!(
        stopped.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );

    let outputs = [
        test_out.join("predictions.csv"),
        test_out.join("report.json"),
        test_out.join("checkpoint.json"),
        dir.path().join("e.npy.partial"),
        rows_partial.clone(),
        dir.path().join("e.checkpoint.json"),
    ];
    let before: Vec<Vec<u8>> = outputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut changed = std::fs::read(&weights).unwrap();
    changed[0] ^= 1;
    std::fs::write(&weights, changed).unwrap();

    for mut args in [test_args, embed_args] {
        args.push("--resume".into());
        let output = Command::new(binary()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{} --resume: {stderr}",
            args[0]
        );
        assert!(
            stderr.contains("--resume refused") && stderr.contains("the model file changed"),
            "{} --resume: {stderr}",
            args[0]
        );
    }
    for (path, bytes) in outputs.iter().zip(&before) {
        assert!(
            &std::fs::read(path).unwrap() == bytes,
            "{} was changed",
            path.display()
        );
    }
}

/// Regression: ONNX Runtime maps a model's external weights (`M.onnx.data`) into memory, so a new export
/// written over them in place while a run read them killed the run with a bare "Bus error" (exit 135 from
/// the shell), its report still saying `running`. The run now names the model's files and the fix and exits
/// 1; with the file put back, `--resume` goes on from the checkpoint to one prediction per row.
#[test]
fn regression_weights_overwritten_under_a_run_exit_1_naming_them_and_the_run_resumes() {
    let test = "regression_weights_overwritten_under_a_run_exit_1_naming_them_and_the_run_resumes";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let run = ExternalDataRun::new(dir.path(), 29);
    let args = run.args(&["--checkpoint-seconds", "1"]);
    let (weights, out, predictions) = (run.weights, run.out, run.predictions);
    let child = spawn_until_written(Command::new(binary()).args(&args), &predictions, 4_000);
    let saved = std::fs::read(&weights).unwrap();
    // In place, as `open(path, "wb")` does: the same file, cut to nothing.
    std::fs::write(&weights, b"").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: bus error (SIGBUS)")
            && stderr.contains(&format!("{} was overwritten in place", weights.display()))
            && stderr.contains("fix: put the model's files back")
            && stderr.contains("--resume"),
        "{stderr}"
    );

    std::fs::write(&weights, saved).unwrap();
    let resumed = Command::new(binary())
        .args(&args)
        .arg("--resume")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("esmbench: resuming at row"), "{stderr}");
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "complete");
    let rows = read_csv(&predictions);
    assert_eq!(rows.len(), 40_000);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 40_000, "a row was scored twice or lost");
}

/// Regression: weights rewritten in place, at the same size, while a run read them (a re-export of the same
/// architecture over `M.onnx.data`) raised no fault: ONNX Runtime reads the mapped file as it goes, so rows
/// after the write could be scored with other weights, and the run reported `complete`, exit 0. The run now
/// checks the model's SHA-256 again at the end and fails (exit 1, status `failed`) naming the files and the fix.
#[test]
fn regression_weights_rewritten_under_a_run_fail_it_instead_of_mixing_two_models() {
    let test = "regression_weights_rewritten_under_a_run_fail_it_instead_of_mixing_two_models";
    if !runtime_available(test) {
        return;
    }
    let dir = tempdir();
    let run = ExternalDataRun::new(dir.path(), 31);
    run.settle();
    let weights = run.weights.clone();
    let child = spawn_until_written(
        Command::new(binary()).args(run.args(&[])),
        &run.predictions,
        4_000,
    );
    run.rewrite_weights_in_place();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the model's weights changed while the run read them")
            && stderr.contains(&weights.display().to_string())
            && stderr.contains("fix: put back the files the run started with"),
        "{stderr}"
    );
    let report = read_json(&run.out.join("report.json"));
    assert_eq!(report["status"], "failed");
}

/// The end-of-run check of [`regression_weights_rewritten_under_a_run_fail_it_instead_of_mixing_two_models`]
/// in `embed` and `fit`: embeddings from two models would be written to one .npy, or train one head. Each
/// fails (exit 1) naming the weights, and writes neither the .npy nor the head.
#[cfg(target_os = "linux")]
#[test]
fn weights_rewritten_under_embed_or_fit_fail_it_and_write_no_output() {
    let test = "weights_rewritten_under_embed_or_fit_fail_it_and_write_no_output";
    if !runtime_available(test) {
        return;
    }
    for (subcommand, output) in [("embed", "e.npy"), ("fit", "head.json")] {
        let dir = tempdir();
        let run = ExternalDataRun::new(dir.path(), 41);
        run.settle();
        let out = dir.path().join(output);
        let mut child = Command::new(binary())
            .args([subcommand, "--model"])
            .arg(&run.model)
            .arg("--data")
            .arg(&run.data)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // ONNX Runtime maps the weights as it loads them; from then on the run reads them as it goes.
        let maps = format!("/proc/{}/maps", child.id());
        let weights = run.weights.display().to_string();
        while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(&weights)) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{subcommand} ended before it mapped {weights}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        run.rewrite_weights_in_place();
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{subcommand}: {stderr}");
        assert!(
            stderr.contains("the model's weights changed while the run read them")
                && stderr.contains(&weights)
                && stderr.contains("fix: put back the files the run started with"),
            "{subcommand}: {stderr}"
        );
        assert!(!out.exists(), "{subcommand} wrote {}", out.display());
    }
}

/// `esmbench test` on a copy of the external-data micro model over 40,000 synthetic rows, long enough on the
/// real runtime for a test to change the weights while it runs.
struct ExternalDataRun {
    copied_at: Instant,
    model: PathBuf,
    weights: PathBuf,
    data: PathBuf,
    out: PathBuf,
    predictions: PathBuf,
}

impl ExternalDataRun {
    fn new(dir: &Path, seed: u64) -> ExternalDataRun {
        let (model, weights) = copy_external_data_model(dir);
        let copied_at = Instant::now();
        let data = dir.join("nb.csv");
        synthetic_nanobodies(&data, 40_000, seed);
        let out = dir.join("out");
        ExternalDataRun {
            copied_at,
            model,
            weights,
            data,
            predictions: out.join("predictions.csv"),
            out,
        }
    }

    /// Waits until the copied model is older than the coarsest file timestamps, as an export made before the run
    /// is: the run then trusts the files' stamps instead of hashing them again at its end, and the test checks
    /// that a rewrite still shows through them.
    fn settle(&self) {
        let settled = self.copied_at + Duration::from_millis(2_500);
        std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    }

    /// Other float32 weights of the same size, written over the file without truncating it, as a re-export of
    /// the same architecture does: the lowest mantissa bit of every value flipped.
    fn rewrite_weights_in_place(&self) {
        use std::io::Write;
        let mut other = std::fs::read(&self.weights).unwrap();
        for value in other.chunks_mut(4) {
            value[0] ^= 1;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.weights)
            .unwrap();
        file.write_all(&other).unwrap();
    }

    /// The command's arguments, then `extra`.
    fn args(&self, extra: &[&str]) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["test".into(), "--model".into()];
        args.push(self.model.clone().into());
        args.extend(["--head".into(), fixture("esm2_micro.head.json").into()]);
        args.extend(["--data".into(), self.data.clone().into()]);
        args.extend(["--out".into(), self.out.clone().into()]);
        args.extend(extra.iter().map(|&a| a.into()));
        args
    }
}
