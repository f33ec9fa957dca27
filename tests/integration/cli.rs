//! The CLI end to end on the mock backend: input validation, exit codes, outputs, config and progress.

use crate::harness::*;

fn mock_test(dir: &std::path::Path, data: &std::path::Path) -> assert_cmd::assert::Assert {
    mock_test_with(dir, data, &[])
}

/// `esmbench test` on the mock backend with the micro fixture, `extra` flags, and --out `dir`/out.
fn mock_test_with(
    dir: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    esmbench()
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .assert()
}

#[test]
fn each_kind_of_invalid_row_is_named_with_line_column_and_fix() {
    let dir = tempdir();
    for (name, text, expected) in [
        (
            "letter.csv",
            "id,sequence,label\na,EVQL,0\nb,EVQJL,1\n",
            "line 3, column sequence (field 2, character 4): 'J' is not in the ESM alphabet",
        ),
        (
            "airr_nucleotides.csv",
            "sequence_id,sequence,sequence_aa\na,GAGGTGCAGCTGGTGGAGTCTGGGGGAGGCTTGGTACAGCC,EVQLVESGGGLVQ\n",
            "line 2, column sequence (field 2): a nucleotide sequence (41 letters, all A, C, G, T/U or N), not a protein; fix: ESM reads amino acids: pass the protein sequence (in AIRR files the `sequence_aa` column: --sequence-column sequence_aa)",
        ),
        (
            "stop.csv",
            "id,sequence,label\na,EVQL*,0\n",
            "(field 2, character 5): '*' is not in the ESM alphabet; fix: '*' is a stop codon",
        ),
        (
            "empty_seq.csv",
            "id,sequence,label\na,,0\n",
            "line 2, column sequence (field 2): empty sequence",
        ),
        (
            "label.csv",
            "id,sequence,label\na,EVQL,yes\n",
            "label `yes` is not 0 or 1",
        ),
        (
            "ragged.csv",
            "id,sequence,label\na,EVQL,0,extra\n",
            "the row has 4 fields but the header has 3",
        ),
        (
            "blank_line.csv",
            "id,sequence,label\na,EVQL,0\n  \t\nb,QVQL,1\n",
            "line 3, column id (field 1): the line holds nothing but whitespace; fix: delete the line",
        ),
        (
            "column.csv",
            "id,seq,label\na,EVQL,0\n",
            "no `sequence` column (columns: id, seq, label)",
        ),
        ("empty.csv", "", "the file is empty"),
        ("header_only.csv", "sequence,label\n", "no data rows"),
    ] {
        let data = write(dir.path(), name, text);
        let assert = mock_test(dir.path(), &data).code(2);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in:\n{stderr}"
        );
        assert!(
            stderr.contains(name),
            "{name}: the file is not named:\n{stderr}"
        );
        assert!(stderr.contains("fix"), "{name}: no fix given:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            !dir.path().join("out/report.json").exists(),
            "{name}: a report was written for data that never ran"
        );
    }
}

#[test]
fn invalid_rows_among_valid_ones_are_refused_with_on_invalid_skip_offered() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "some_bad.csv",
        "id,sequence,label\na,EVQL,0\nb,EVQJL,1\nc,QVQL,1\n",
    );
    let stderr = stderr_of(&mock_test(dir.path(), &data).code(2));
    assert!(
        stderr.contains(
            "fix: correct the rows above, or pass --on-invalid skip to go on with the other 2 rows"
        ),
        "{stderr}"
    );
    let none_valid = write(dir.path(), "all_bad.csv", "id,sequence\na,EVQJL\n");
    let stderr =
        stderr_of(&mock_test_with(dir.path(), &none_valid, &["--on-invalid", "skip"]).code(2));
    assert!(stderr.contains("fix: correct the rows above"), "{stderr}");
    assert!(!stderr.contains("--on-invalid skip"), "{stderr}");
}

#[test]
fn ids_used_by_two_rows_are_scored_with_a_warning_to_join_on_row() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "ids.csv",
        "id,sequence,label\nx,EVQL,0\ny,QVQL,1\nx,LAGV,1\n,EVQL,0\n,QVQ,1\n",
    );
    let stderr = stderr_of(&mock_test(dir.path(), &data).success());
    assert!(
        stderr.contains(
            "ids.csv: 1 row reuses an id that an earlier row has, the first `x` at line 4; predictions.csv has one line per row with its 0-based `row` number, so join it to the data by `row`"
        ),
        "{stderr}"
    );
    // Row 3 repeats row 0's sequence with the same label: not a conflict, and `test` does not cross-validate.
    assert!(!stderr.contains("labeled 0 on one row"), "{stderr}");
    assert!(!stderr.contains("repeat the sequence"), "{stderr}");
    let rows = read_csv(&dir.path().join("out/predictions.csv"));
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["x", "y", "x", "", ""]);
    let data = &read_json(&dir.path().join("out/report.json"))["data"];
    assert_eq!(
        (
            &data["rows_repeating_id"],
            &data["rows_repeating_sequence"],
            &data["sequences_with_both_labels"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(0)
        )
    );
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(
        md.contains("| repeats | 1 row reuses an earlier row's id (join results on the row column); 1 row repeats an earlier row's sequence |"),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(
        html.contains("<th>repeats</th><td>1 row reuses an earlier row"),
        "report.html"
    );
}

#[test]
fn bytes_that_are_not_utf8_are_invalid_input() {
    let dir = tempdir();
    let data = dir.path().join("latin1.csv");
    std::fs::write(&data, b"id,sequence\nab\xe9,EVQL\n").unwrap();
    let stderr = stderr_of(&mock_test(dir.path(), &data).code(2));
    assert!(
        stderr.contains("line 2, column id (field 1, character 3): bytes that are not UTF-8"),
        "{stderr}"
    );
}

#[test]
fn bom_crlf_quotes_lowercase_spaces_and_reordered_columns_are_scored() {
    let dir = tempdir();
    let data = dir.path().join("messy.csv");
    std::fs::write(
        &data,
        b"\xef\xbb\xbfnote,Label,Sequence,id\r\n\"x, y\",1.0, evqlv ,a\r\nz,0.0,LAGV,b\r\n",
    )
    .unwrap();
    mock_test(dir.path(), &data).success();
    let rows = read_csv(&dir.path().join("out/predictions.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["id"].as_str(), rows[0]["label"].as_str()),
        ("a", "1")
    );
    assert_eq!(
        (rows[1]["id"].as_str(), rows[1]["label"].as_str()),
        ("b", "0")
    );
}

#[test]
fn predictions_come_back_in_input_order_whatever_the_batching() {
    let dir = tempdir();
    let mut text = String::from("id,sequence,label\n");
    let residues = b"LAGVSERTIDPKQNFYMHWC";
    for i in 0..500usize {
        let len = 1 + (i * 37) % 150;
        let seq: String = (0..len)
            .map(|k| residues[(i * 7 + k * 3) % 20] as char)
            .collect();
        text.push_str(&format!("r{i},{seq},{}\n", i % 2));
    }
    let data = write(dir.path(), "order.csv", &text);
    esmbench()
        .args(["test", "--mock-backend", "--max-tokens", "300", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("out"))
        .assert()
        .success();
    let rows = read_csv(&dir.path().join("out/predictions.csv"));
    assert_eq!(rows.len(), 500);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["row"], i.to_string());
        assert_eq!(row["id"], format!("r{i}"));
        assert_eq!(row["label"], (i % 2).to_string());
    }
    let report = read_json(&dir.path().join("out/report.json"));
    assert_eq!(report["execution"]["model_loads"], 1);
    assert!(report["performance"]["batches"].as_u64().unwrap() > 10);
    assert!(
        report["performance"]["padding_efficiency"]
            .as_f64()
            .unwrap()
            > 0.8
    );
}

#[test]
fn data_without_labels_is_scored_without_metrics_and_empty_labels_are_counted() {
    let dir = tempdir();
    let data = write(dir.path(), "unlabeled.csv", "sequence\nEVQL\nLAGV\n");
    mock_test(dir.path(), &data).success();
    let report = read_json(&dir.path().join("out/report.json"));
    assert!(report["metrics"].is_null());
    assert!(report["metrics_note"]
        .as_str()
        .unwrap()
        .contains("no label column"));
    assert_eq!(
        read_csv(&dir.path().join("out/predictions.csv"))[0]["label"],
        ""
    );

    let dir = tempdir();
    let data = write(
        dir.path(),
        "partial.csv",
        "sequence,label\nEVQL,1\nLAGV,\nKKKK,0\n",
    );
    mock_test(dir.path(), &data).success();
    let report = read_json(&dir.path().join("out/report.json"));
    assert_eq!(report["data"]["rows_scored"], 3);
    assert_eq!(report["data"]["rows_unlabeled"], 1);
    assert_eq!(report["metrics"]["n"], 2);
}

#[test]
fn long_sequences_are_truncated_and_counted_or_refused() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "long.csv",
        &format!("sequence\n{}\nEVQL\n", "A".repeat(1100)),
    );
    mock_test(dir.path(), &data).success();
    assert_eq!(
        read_json(&dir.path().join("out/report.json"))["data"]["rows_truncated"],
        1
    );
    let assert = esmbench()
        .args(["test", "--mock-backend", "--no-truncate", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o2"))
        .assert()
        .code(2);
    let refusal = stderr_of(&assert);
    assert!(refusal.contains("1100 residues, longer than --max-residues 1022"));
    assert!(refusal.contains("pass --truncate"), "{refusal}");
    // A config's `truncate: false` is undone by --truncate, as every on/off key is by its flag.
    let config = write(dir.path(), "strict.yaml", "truncate: false\n");
    let with_config = |flags: &[&str], out: &str| {
        esmbench()
            .args(["test", "--mock-backend", "--config"])
            .arg(&config)
            .args(flags)
            .arg("--model")
            .arg(fixture("esm2_micro.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join(out))
            .assert()
    };
    with_config(&[], "o3").code(2);
    with_config(&["--truncate"], "o4").success();
    assert_eq!(
        read_json(&dir.path().join("o4/report.json"))["data"]["rows_truncated"],
        1
    );
}

#[test]
fn bad_flags_and_paths_are_usage_errors_before_anything_runs() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQL\n");
    let model = fixture("esm2_micro.onnx");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["--threads".into(), "0".into()],
            "--threads 0 is out of range",
        ),
        (vec!["--max-tokens".into(), "2".into()], "--max-tokens 2"),
        // Regression: no upper bound; 16 batches of it overflowed the reader's window in usize.
        (
            vec!["--max-tokens".into(), "18446744073709551615".into()],
            "--max-tokens 18446744073709551615 is above 1048576",
        ),
        (
            vec![
                "--threads".into(),
                "2".into(),
                "--parallel-batches".into(),
                "3".into(),
            ],
            "--parallel-batches 3 does not fit --threads 2",
        ),
        (
            vec!["--parallel-batches".into(), "0".into()],
            "--parallel-batches 0 does not fit",
        ),
        (
            vec![
                "--device".into(),
                "cuda".into(),
                "--parallel-batches".into(),
                "2".into(),
                "--threads".into(),
                "2".into(),
            ],
            "--parallel-batches applies to CPU runs; --device cuda runs one batch at a time",
        ),
        (
            vec!["--threshold".into(), "1.5".into()],
            "not a probability",
        ),
        // A negative value reaches the range check instead of clap's "unexpected argument '-0'".
        (
            vec!["--threshold".into(), "-0.1".into()],
            "--threshold -0.1 is not a probability",
        ),
        (
            vec!["--checkpoint-seconds".into(), "0".into()],
            "--checkpoint-seconds 0 would checkpoint after every batch",
        ),
        (
            vec!["--data".into(), "-".into()],
            "--data - (standard input) is not supported",
        ),
        (
            vec!["--data".into(), dir.path().join("missing.csv").into()],
            "not found",
        ),
    ];
    for (extra, expected) in cases {
        let mut cmd = esmbench();
        cmd.args(["test", "--mock-backend", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("o"));
        if !extra.iter().any(|a| a == "--data") {
            cmd.arg("--data").arg(&data);
        }
        cmd.args(&extra);
        let assert = cmd.assert().code(2);
        assert!(
            stderr_of(&assert).contains(expected),
            "{extra:?}: {}",
            stderr_of(&assert)
        );
    }
    let assert = esmbench()
        .args(["test", "--model"])
        .arg(&model)
        .assert()
        .code(2);
    assert!(stderr_of(&assert).contains("--model was given without a data file"));
}

#[test]
fn the_yaml_config_is_read_and_flags_override_it() {
    let dir = tempdir();
    write(dir.path(), "d.csv", "sequence,label\nEVQL,1\nLAGV,0\n");
    let config = write(
        dir.path(),
        "run.yaml",
        "# a run\ndata: d.csv\nmax_tokens: 123\nthreads: 1\nthreshold: 0.7\n",
    );
    esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(fixture("esm2_micro.onnx"))
        .args(["--max-tokens", "456", "--out"])
        .arg(dir.path().join("out"))
        .assert()
        .success();
    let report = read_json(&dir.path().join("out/report.json"));
    assert_eq!(report["execution"]["max_tokens"], 456);
    assert_eq!(report["execution"]["threads"], 1);
    assert_eq!(report["model"]["threshold"], 0.7);
    assert_eq!(report["model"]["threshold_source"], "config");

    let bad = write(dir.path(), "bad.yaml", "max_tokens: 10\ndevcie: cuda\n");
    let assert = esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&bad)
        .assert()
        .code(2);
    assert!(
        stderr_of(&assert).contains("bad.yaml:2"),
        "{}",
        stderr_of(&assert)
    );
}

/// Regression: a value refused from the config file was named as a flag the user never typed (`--max-tokens 2
/// cannot hold one residue`, `--data was given without --model` with the fix "add --model"), without the file.
#[test]
fn regression_a_bad_value_from_the_config_is_named_as_its_key_in_that_file() {
    let dir = tempdir();
    write(dir.path(), "d.csv", "sequence,label\nEVQL,1\nLAGV,0\n");
    let model = fixture("esm2_micro.onnx");
    for (name, text, expected) in [
        (
            "tokens.yaml",
            format!("model: {}\ndata: d.csv\nmax_tokens: 2\n", model.display()),
            "`max_tokens: 2` (in {dir}/tokens.yaml) cannot hold one residue",
        ),
        (
            "only_data.yaml",
            "data: d.csv\n".to_string(),
            "`data:` (in {dir}/only_data.yaml) was given without a model\n  fix: add `model: FILE.onnx`",
        ),
        (
            "rss.yaml",
            format!("model: {}\ndata: d.csv\nmax_rss: lots\n", model.display()),
            "`max_rss: lots` (in {dir}/rss.yaml) is not a size",
        ),
        (
            "checkpoints.yaml",
            format!("model: {}\ndata: d.csv\ncheckpoint_seconds: 0\n", model.display()),
            "`checkpoint_seconds: 0` (in {dir}/checkpoints.yaml) would checkpoint after every batch",
        ),
        (
            "missing.yaml",
            format!("model: {}\ndata: nowhere.csv\n", model.display()),
            "fix: check the path given to `data:` (in {dir}/missing.yaml) (relative paths in a config file are relative to that file)",
        ),
    ] {
        let config = write(dir.path(), name, &text);
        let assert = esmbench()
            .args(["test", "--mock-backend", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(dir.path().join("out"))
            .assert()
            .code(2);
        let expected = expected.replace("{dir}", &dir.path().display().to_string());
        assert!(stderr_of(&assert).contains(&expected), "{name}: {}", stderr_of(&assert));
    }
    // The same value given as a flag is named as the flag.
    let config = write(
        dir.path(),
        "fine.yaml",
        &format!("model: {}\ndata: d.csv\n", model.display()),
    );
    let assert = esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&config)
        .args(["--max-tokens", "2"])
        .assert()
        .code(2);
    assert!(
        stderr_of(&assert).contains("error: --max-tokens 2 cannot hold"),
        "{}",
        stderr_of(&assert)
    );
    // A value neither the flags nor the file set is the default, named as such (the file has no `threads:`).
    let batches = write(
        dir.path(),
        "batches.yaml",
        &format!(
            "model: {}\ndata: d.csv\nparallel_batches: 5000\n",
            model.display()
        ),
    );
    let assert = esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&batches)
        .arg("--out")
        .arg(dir.path().join("out"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(stderr.contains("`parallel_batches: 5000` (in "), "{stderr}");
    assert!(
        stderr.contains("(the default)") && !stderr.contains("`threads:"),
        "{stderr}"
    );
}

/// Regression: a config saved with a UTF-8 byte-order mark (as Windows editors save) was refused as "more than
/// one document"; a key written twice was located at line 1, column 1.
#[test]
fn regression_a_config_with_a_byte_order_mark_is_read_and_a_repeated_key_is_located() {
    let dir = tempdir();
    write(dir.path(), "d.csv", "sequence,label\nEVQL,1\nLAGV,0\n");
    let config = dir.path().join("bom.yaml");
    std::fs::write(
        &config,
        format!(
            "\u{feff}model: {}\ndata: d.csv\nthreads: 1\n",
            fixture("esm2_micro.onnx").display()
        ),
    )
    .unwrap();
    esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("out"))
        .assert()
        .success();
    assert_eq!(
        read_json(&dir.path().join("out/report.json"))["execution"]["threads"],
        1
    );
    let twice = write(
        dir.path(),
        "twice.yaml",
        "# comment\nthreads: 1\ndata: d.csv\nthreads: 2\n",
    );
    let assert = esmbench()
        .args(["test", "--mock-backend", "--config"])
        .arg(&twice)
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("twice.yaml:4:1: duplicate field `threads`\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("at line"), "a second location: {stderr}");
}

#[test]
fn every_shipped_config_parses() {
    for entry in std::fs::read_dir(root().join("configs")).expect("configs/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            esmbench::config::FileConfig::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        }
    }
}

#[test]
fn progress_is_plain_lines_when_not_on_a_terminal() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQL\nLAGV\n");
    let stderr = stderr_of(&mock_test(dir.path(), &data).success());
    assert!(stderr.contains("esmbench: 2/2 rows (100.0%)"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a non-terminal log: {stderr:?}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let stdout = String::from_utf8_lossy(
        &esmbench()
            .arg("--help")
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .to_string();
    for code in [
        "0    success",
        "2    usage error",
        "3    regression",
        "4    stopped by the memory watchdog",
        "129",
        "130",
        "143",
    ] {
        assert!(stdout.contains(code), "missing `{code}` in --help");
    }
}

/// Regression: a header naming the sequence (or label, or id) column twice was read by its first match, so
/// the run scored one of two columns without a word; it is refused now, for `test` and for `metrics`.
#[test]
fn regression_a_column_named_twice_is_refused_not_read_by_its_first_match() {
    let dir = tempdir();
    for (name, text, expected) in [
        (
            "two_sequences.csv",
            "sequence,label,Sequence\nEVQL,1,QVQL\n",
            "2 columns are named `sequence` (fields 1, 3)",
        ),
        (
            "two_labels.csv",
            "sequence,label,label\nEVQL,1,0\n",
            "2 columns are named `label` (fields 2, 3)",
        ),
    ] {
        let data = write(dir.path(), name, text);
        let assert = mock_test(&dir.path().join(format!("run-{name}")), &data).code(2);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(expected) && stderr.contains("fix: rename all but one"),
            "{name}: {stderr}"
        );
    }
    let predictions = write(
        dir.path(),
        "p.csv",
        "y_true,y_proba,y_true\n1,0.9,0\n0,0.2,1\n",
    );
    let assert = esmbench()
        .args(["metrics", "--predictions"])
        .arg(&predictions)
        .arg("--out")
        .arg(dir.path().join("m"))
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("2 columns are named `y_true` (fields 1, 3)")
            && stderr.contains("--label-column"),
        "{stderr}"
    );
    assert!(!dir.path().join("m/report.json").exists());
}

#[test]
fn a_tab_or_semicolon_separated_file_is_named_as_such() {
    let dir = tempdir();
    for (name, text, separator) in [
        ("t.csv", "sequence\tlabel\nEVQL\t1\n", "tab"),
        ("s.csv", "sequence;label\nEVQL;1\n", "semicolon"),
    ] {
        let data = write(dir.path(), name, text);
        let assert = mock_test(&dir.path().join(format!("run-{name}")), &data).code(2);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(&format!("fix: the header looks {separator}-separated")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn fasta_utf16_or_binary_data_is_named_as_such_with_its_fix() {
    let dir = tempdir();
    let fasta = write(
        dir.path(),
        "s.fasta",
        ">nb1 VHH\nEVQLVESGG\nGLVQ\n>nb2\nQVQLQESGP\n",
    );
    let utf16 = dir.path().join("u16.csv");
    let mut bytes = vec![0xff, 0xfe];
    bytes.extend(
        "id\tsequence\na\tEVQL\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    std::fs::write(&utf16, bytes).unwrap();
    for (data, expected) in [
        (fasta, "fix: this looks like FASTA"),
        (
            utf16,
            "line 1: the file is UTF-16 text (as Excel's \"Unicode Text\" saves), not UTF-8",
        ),
        (
            fixture("esm2_micro.onnx"),
            "line 1: the file is binary, not a CSV\n  fix: pass the CSV of sequences as --data",
        ),
    ] {
        let name = data.file_name().unwrap().to_string_lossy().to_string();
        let assert = mock_test(&dir.path().join(format!("run-{name}")), &data).code(2);
        let stderr = stderr_of(&assert);
        assert!(stderr.contains(&name), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    // The FASTA fix's command turns the file into a CSV that scores (where awk is installed).
    let fix = stderr_of(&mock_test(&dir.path().join("fasta"), &dir.path().join("s.fasta")).code(2));
    let start = fix.find("`awk ").expect("the awk command in backquotes") + 1;
    let command = &fix[start..start + fix[start..].find('`').unwrap()];
    if std::process::Command::new("awk")
        .arg("BEGIN{}")
        .status()
        .is_err()
    {
        eprintln!("SKIPPED the FASTA conversion check: awk is not installed");
        return;
    }
    let converted = std::process::Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(
            command
                .replace("in.fasta", "s.fasta")
                .replace("in.csv", "s.csv"),
        )
        .output()
        .unwrap();
    assert!(converted.status.success(), "{command}: {converted:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("s.csv")).unwrap(),
        "id,sequence\nnb1,EVQLVESGGGLVQ\nnb2,QVQLQESGP\n"
    );
    mock_test(&dir.path().join("converted"), &dir.path().join("s.csv")).success();
}

#[test]
fn regression_a_csv_or_json_given_as_the_model_is_named_as_text_before_anything_runs() {
    // Was: the data validated, then ONNX Runtime's "Protobuf parsing failed" with no hint of the swap.
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "id,sequence,label\na,EVQL,1\n");
    let head = write(dir.path(), "h.json", "{\"coef\": [1.0]}\n");
    for (model, begins) in [(&data, "id,sequence,label"), (&head, "{\"coef\": [1.0]}")] {
        let assert = esmbench()
            .args(["test", "--mock-backend", "--model"])
            .arg(model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join("out"))
            .assert()
            .code(2);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(&format!(
                "is a text file (it begins `{begins}`), not an ONNX model\n  fix: pass the .onnx file to --model"
            )),
            "{stderr}"
        );
        assert!(!dir.path().join("out").exists(), "{stderr}");
    }
    let assert = esmbench()
        .args(["inspect", "--model"])
        .arg(&data)
        .assert()
        .code(2);
    assert!(
        stderr_of(&assert).contains("is a text file (it begins `id,sequence,label`)"),
        "{}",
        stderr_of(&assert)
    );
}

#[test]
fn rows_with_alignment_gaps_are_scored_with_a_warning_and_counted() {
    let dir = tempdir();
    let gapped = write(
        dir.path(),
        "aligned.csv",
        "id,sequence,label\na,EVQLVESGG,1\nb,QVQL--QESGP,0\nc,DIQ.MTQSPS,1\n",
    );
    let assert = mock_test(&dir.path().join("gapped"), &gapped).success();
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("aligned.csv: 2 of 3 rows hold alignment gaps ('-' or '.'), the first at line 3, column sequence (field 2, character 5)")
            && stderr.contains("fix: score the sequences without gaps"),
        "{stderr}"
    );
    let out = dir.path().join("gapped/out");
    assert_eq!(
        read_json(&out.join("report.json"))["data"]["rows_with_gaps"],
        2
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("| alignment gaps | 2 rows hold"),
        "{markdown}"
    );

    let plain = write(
        dir.path(),
        "plain.csv",
        "id,sequence,label\na,EVQLVESGG,1\nb,QVQLQESGP,0\n",
    );
    let assert = mock_test(&dir.path().join("plain"), &plain).success();
    assert!(
        !stderr_of(&assert).contains("gaps"),
        "{}",
        stderr_of(&assert)
    );
    let out = dir.path().join("plain/out");
    assert_eq!(
        read_json(&out.join("report.json"))["data"]["rows_with_gaps"],
        0
    );
    assert!(!std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("alignment gaps"));
}

#[test]
fn gzipped_data_is_scored_as_the_plain_file_and_a_cut_stream_is_invalid_input() {
    use std::io::Write;
    let dir = tempdir();
    let text = "id,sequence,label\na,EVQLVESGG,1\nb,QVQLQESGP,0\nc,DIQMTQSPS,1\n";
    let plain = write(dir.path(), "d.csv", text);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    let gz = encoder.finish().unwrap();
    let zipped = dir.path().join("d.csv.gz");
    std::fs::write(&zipped, &gz).unwrap();
    mock_test(&dir.path().join("plain"), &plain).success();
    mock_test(&dir.path().join("zipped"), &zipped).success();
    let predictions = |run: &str| {
        std::fs::read_to_string(dir.path().join(run).join("out/predictions.csv")).unwrap()
    };
    assert_eq!(predictions("plain"), predictions("zipped"));
    // Gzip is found by its first bytes: the name need not say so, and a file packed twice is named as such.
    let unnamed = dir.path().join("d_gz.csv");
    std::fs::write(&unnamed, &gz).unwrap();
    mock_test(&dir.path().join("unnamed"), &unnamed).success();
    assert_eq!(predictions("plain"), predictions("unnamed"));
    let mut twice = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    twice.write_all(&gz).unwrap();
    let twice_path = dir.path().join("d.csv.gz.gz");
    std::fs::write(&twice_path, twice.finish().unwrap()).unwrap();
    let assert = mock_test(&dir.path().join("twice"), &twice_path).code(2);
    assert!(
        stderr_of(&assert).contains("gzip-compressed twice"),
        "{}",
        stderr_of(&assert)
    );

    let cut = dir.path().join("cut.csv.gz");
    std::fs::write(&cut, &gz[..gz.len() - 12]).unwrap();
    let assert = mock_test(&dir.path().join("cut"), &cut).code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("the gzip data is cut short or damaged") && stderr.contains("gzip -t"),
        "{stderr}"
    );
    assert!(!dir.path().join("cut/out/predictions.csv").exists());
}

fn mock_embed(
    data: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    esmbench()
        .args(["embed", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

/// Regression: `embed --on-invalid skip` wrote fewer .npy rows than the CSV has, with nothing saying which
/// rows they were (and said the skipped ones were "listed in skipped.csv", which embed never wrote), so
/// embeddings joined back to the data by position paired rows with the wrong labels.
#[test]
fn regression_embed_says_which_csv_row_each_embedding_is_when_rows_are_skipped() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence,label\na,EVQLVESGG,1\nb,EVQJL,0\nc,QVQLQESGP,\nd,DIQMTQSPS,0\n",
    );
    let valid = write(
        dir.path(),
        "valid.csv",
        "id,sequence,label\na,EVQLVESGG,1\nc,QVQLQESGP,\nd,DIQMTQSPS,0\n",
    );
    let out = dir.path().join("e.npy");
    let assert = mock_embed(&data, &out, &["--on-invalid", "skip"]).success();
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("1 of 4 rows are invalid and will be skipped (listed in ")
            && stderr.contains("e.skipped.csv)"),
        "{stderr}"
    );
    let embeddings: ndarray::Array2<f32> = ndarray_npy::read_npy(&out).unwrap();
    assert_eq!(embeddings.nrows(), 3);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e.rows.csv")).unwrap(),
        "row,id,label\n0,a,1\n2,c,\n3,d,0\n"
    );
    let skipped = std::fs::read_to_string(dir.path().join("e.skipped.csv")).unwrap();
    assert!(
        skipped.starts_with(
            "row,line,id,column,reason\n1,3,b,sequence,\"'J' is not in the ESM alphabet"
        ),
        "{skipped}"
    );
    // Each .npy row is the embedding of the CSV row named beside it.
    let valid_out = dir.path().join("valid.npy");
    mock_embed(&valid, &valid_out, &[]).success();
    let expected: ndarray::Array2<f32> = ndarray_npy::read_npy(&valid_out).unwrap();
    assert_eq!(embeddings, expected);

    // A later run with nothing skipped leaves no stale list behind.
    mock_embed(&valid, &out, &[]).success();
    assert!(!dir.path().join("e.skipped.csv").exists());
    assert!(!dir.path().join("e.rows.csv.partial").exists());
}

/// Regression: `embed --shard K/N` embedded its shard's rows, then failed with exit 1 ("wrote 2 embedding
/// rows, expected 5"): the .npy was sized for every valid row of the file.
#[test]
fn regression_embed_of_one_shard_writes_that_shards_rows_and_names_them() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence\na,EVQLVESGG\nb,QVQLQESGP\nc,DIQMTQSPS\nd,EIVLTQSPAT\ne,AVKLLQW\n",
    );
    let whole_out = dir.path().join("whole.npy");
    mock_embed(&data, &whole_out, &[]).success();
    let whole: ndarray::Array2<f32> = ndarray_npy::read_npy(&whole_out).unwrap();
    for (shard, rows) in [("1/2", "0,a,\n2,c,\n4,e,\n"), ("2/2", "1,b,\n3,d,\n")] {
        let out = dir.path().join(format!("s{}.npy", &shard[..1]));
        mock_embed(&data, &out, &["--shard", shard]).success();
        let listed = std::fs::read_to_string(out.with_extension("rows.csv")).unwrap();
        assert_eq!(listed, format!("row,id,label\n{rows}"));
        let part: ndarray::Array2<f32> = ndarray_npy::read_npy(&out).unwrap();
        assert_eq!(part.nrows(), rows.lines().count(), "{shard}");
        for (i, line) in rows.lines().enumerate() {
            let row: usize = line.split(',').next().unwrap().parse().unwrap();
            assert_eq!(part.row(i), whole.row(row), "{shard}, row {row}");
        }
    }
}

/// `--head` given to embed is a mistake to point out; a `head:` in a config shared with `test` is not (the
/// README's configs name their head), so embed reports it ignored, as `fit` does.
#[test]
fn embed_refuses_a_head_flag_and_ignores_a_shared_configs_head() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQL\n");
    let head = write(dir.path(), "h.json", "{}");
    let out = dir.path().join("e.npy");
    let assert = mock_embed(&data, &out, &["--head", head.to_str().unwrap()]).code(2);
    assert!(
        stderr_of(&assert).contains("applies no head, so --head would be ignored"),
        "{}",
        stderr_of(&assert)
    );
    assert!(!out.exists());
    let config = write(
        dir.path(),
        "c.yaml",
        &format!("head: {}\nthreshold: 0.4\n", head.display()),
    );
    let assert = mock_embed(&data, &out, &["--config", config.to_str().unwrap()]).success();
    assert!(
        stderr_of(&assert)
            .contains("c.yaml: ignoring keys that only `esmbench test` uses: head, threshold"),
        "{}",
        stderr_of(&assert)
    );
    let embeddings: ndarray::Array2<f32> = ndarray_npy::read_npy(&out).unwrap();
    assert_eq!(embeddings.nrows(), 1);
}

/// Regression: `--data results/x/predictions.csv --out results/x` truncated the data file to a predictions
/// header before reading it; the user's sequences were gone and the run failed on "no `sequence` column".
#[test]
fn regression_an_input_that_is_also_an_output_is_refused_not_overwritten() {
    let dir = tempdir();
    let text = "id,sequence,label\na,EVQLVESGG,1\nb,QVQLQESGP,0\n";
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let check = |assert: assert_cmd::assert::Assert, input: &std::path::Path| {
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(
                "a file this run writes (given --out): the run would overwrite what it reads"
            ) && stderr.contains("fix: pass another --out"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(input).unwrap(),
            text,
            "the input was changed"
        );
    };
    let data = write(&out, "predictions.csv", text);
    check(mock_test(dir.path(), &data).code(2), &data);
    let data = write(&out, "e.rows.csv", text);
    check(mock_embed(&data, &out.join("e.npy"), &[]).code(2), &data);
    let data = write(dir.path(), "train.csv", text);
    let assert = esmbench()
        .args(["fit", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&data)
        .assert()
        .code(2);
    check(assert, &data);
}

#[test]
fn a_pipe_or_a_directory_given_as_data_is_named_as_such() {
    let dir = tempdir();
    let fifo = dir.path().join("stream.csv");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let stderr = stderr_of(&mock_test(dir.path(), &fifo).code(2));
    assert!(
        stderr.contains("stream.csv is a pipe or a device (process substitution `<(...)`, a FIFO")
            && stderr.contains("(save a stream to a file first"),
        "{stderr}"
    );
    // /dev/null as the model is named for what it is, with no word of --data.
    let stderr = stderr_of(
        &esmbench()
            .args(["test", "--mock-backend", "--model", "/dev/null", "--data"])
            .arg(&fifo)
            .arg("--out")
            .arg(dir.path().join("o"))
            .assert()
            .code(2),
    );
    assert!(
        stderr.contains("/dev/null is a pipe or a device")
            && !stderr.contains("--data file.csv.gz"),
        "{stderr}"
    );
    let stderr = stderr_of(&mock_test(dir.path(), dir.path()).code(2));
    assert!(
        stderr.contains("is a directory\n  fix: pass a file to --data"),
        "{stderr}"
    );
}

#[test]
fn more_threads_than_cpus_run_with_a_warning_that_gives_the_fix() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQLVESGG\nQVQLQESGP\n");
    let cpus = std::thread::available_parallelism().unwrap().get();
    let threads = (cpus + 1).to_string();
    let run = |threads: &str| {
        mock_test_with(&dir.path().join(threads), &data, &["--threads", threads]).success()
    };
    let stderr = stderr_of(&run(&threads));
    let expected =
        format!("warning: --threads {threads} is more than the {cpus} CPUs this process may use");
    assert_eq!(stderr.matches(&expected).count(), 1, "{stderr}");
    assert!(stderr.contains("fix: drop --threads"), "{stderr}");
    assert!(!stderr_of(&run("1")).contains("warning"));
}

#[test]
fn a_tsv_file_such_as_an_airr_rearrangement_file_is_read_tab_separated() {
    use std::io::Write;
    let dir = tempdir();
    let csv = write(
        dir.path(),
        "r.csv",
        "sequence_id,sequence,sequence_aa\na,GAGGTGCAG,EVQLVESGG\nb,CAGGTGCAG,QVQLQESGP\n",
    );
    let tsv_text =
        "sequence_id\tsequence\tsequence_aa\na\tGAGGTGCAG\tEVQLVESGG\nb\tCAGGTGCAG\tQVQLQESGP\n";
    let tsv = write(dir.path(), "r.tsv", tsv_text);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(tsv_text.as_bytes()).unwrap();
    let tsv_gz = dir.path().join("r.tsv.gz");
    std::fs::write(&tsv_gz, encoder.finish().unwrap()).unwrap();
    let predictions = |data: &std::path::Path, run: &str| {
        let columns = [
            "--sequence-column",
            "sequence_aa",
            "--id-column",
            "sequence_id",
        ];
        mock_test_with(&dir.path().join(run), data, &columns).success();
        std::fs::read_to_string(dir.path().join(run).join("out/predictions.csv")).unwrap()
    };
    let from_csv = predictions(&csv, "csv");
    assert!(from_csv.contains("\n0,a,,"), "{from_csv}");
    assert_eq!(predictions(&tsv, "tsv"), from_csv);
    assert_eq!(predictions(&tsv_gz, "tsv_gz"), from_csv);
    // The same tab-separated text under a .csv name is named for what it is, with the rename as a fix.
    let misnamed = write(dir.path(), "r_tabs.csv", tsv_text);
    let stderr = stderr_of(&mock_test(&dir.path().join("misnamed"), &misnamed).code(2));
    assert!(
        stderr.contains("the header looks tab-separated") && stderr.contains("rename it to .tsv"),
        "{stderr}"
    );
}

/// Regression: a head JSON with `treshold` (or `Threshold`) was read with the default threshold 0.5, and the
/// run's accuracy, F1 and predictions used it without a word.
#[test]
fn regression_a_misspelled_threshold_in_a_head_is_refused_not_read_as_0_5() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "sequence,label\nEVQLVESGG,1\nQVQLQESGP,0\n",
    );
    let head = std::fs::read_to_string(fixture("esm2_micro.head.json")).unwrap();
    let misspelled = head.replace("\"threshold\"", "\"treshold\"");
    assert_ne!(head, misspelled, "the fixture has a threshold to misspell");
    let head_path = write(dir.path(), "h.json", &misspelled);
    let assert =
        mock_test_with(dir.path(), &data, &["--head", head_path.to_str().unwrap()]).code(2);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("h.json: key `treshold` is not read; `threshold` is, and is missing")
            && stderr.contains("fix: rename `treshold` to `threshold`"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/report.json").exists());
}

/// Regression: `--label-column polyreactive` on a file without that column ran with exit 0, "the data has
/// no label column: predictions only", and no metrics; `--id-column name` gave empty ids. Only the default
/// names may be absent.
#[test]
fn regression_a_label_or_id_column_named_but_missing_is_refused_not_ignored() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence,label\na,EVQLVESGG,1\nb,QVQLQESGP,0\n",
    );
    for (flag, name) in [("--label-column", "polyreactive"), ("--id-column", "name")] {
        let assert = mock_test_with(dir.path(), &data, &[flag, name]).code(2);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.contains(&format!("d.csv: line 1: no `{name}` column, which {flag}"))
                && stderr.contains("(columns: id, sequence, label)")
                && stderr.contains(&format!("leave {flag} out")),
            "{stderr}"
        );
        assert!(!dir.path().join("out/report.json").exists());
    }
    // The default names may be absent: a file without labels or ids is scored.
    let bare = write(dir.path(), "bare.csv", "sequence\nEVQLVESGG\n");
    mock_test(&dir.path().join("bare"), &bare).success();
}

/// Regression: `esmbench embed --config` read only the scoring keys of a config shared with `test`, so `max_rss`
/// and `checkpoint_seconds` were dropped without a word (embed had no watchdog and no checkpoints), as were
/// `threshold`, `bootstrap` and `out`; a suite config (`models`, `datasets`) without --model and --data
/// embedded the built-in demo set. Now embed reads the long-run keys, names the ones it does not use, and
/// refuses the suite.
#[test]
fn regression_embed_reads_a_shared_configs_long_run_keys_names_the_rest_and_refuses_a_suite() {
    let dir = tempdir();
    let data = write(
        dir.path(),
        "d.csv",
        "id,sequence\nr1,EVQLVESGGGLVQPGG\nr2,QVQLQESGPGLVKPSE\n",
    );
    let config = write(
        dir.path(),
        "run.yaml",
        "threshold: 0.7\nbootstrap: 0\nout: results/elsewhere\nmax_rss: 1KiB\ncheckpoint_seconds: 1\n",
    );
    let out = dir.path().join("e.npy");
    let assert = esmbench()
        .args(["embed", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(4);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("ignoring keys that only `esmbench test` uses: out, threshold, bootstrap"),
        "{stderr}"
    );
    // max_rss: 1KiB is below any process: the watchdog stops the run at its first check, resumable.
    assert!(
        stderr.contains("stopped by the memory watchdog") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!out.exists());

    let suite = write_suite_config(dir.path(), &fixture("esm2_micro.onnx"), &data);
    let assert = esmbench()
        .args(["embed", "--mock-backend", "--config"])
        .arg(&suite)
        .arg("--out")
        .arg(dir.path().join("s.npy"))
        .assert()
        .code(2);
    assert!(
        stderr_of(&assert).contains("describe an `esmbench test` suite"),
        "{}",
        stderr_of(&assert)
    );
    assert!(!dir.path().join("s.npy").exists());
}

/// Regression: an empty --config (or one whose keys sat under a typo'd parent) scored the embedded demo and
/// exited 0 without a word, with numbers that read like the user's results; `fit` trained a head on the demo
/// the same way. Such a config is refused; the demo runs with no config, and embed and fit say so.
#[test]
fn regression_a_config_naming_no_data_ran_the_embedded_demo() {
    let dir = tempdir();
    let config = write(dir.path(), "c.yaml", "threads: 1\n");
    for command in ["test", "fit", "embed"] {
        let out = dir.path().join(format!("{command}.out"));
        let assert = esmbench()
            .args([command, "--mock-backend", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2);
        assert!(
            stderr_of(&assert).contains(
                "c.yaml names no model or data, and neither --model nor --data was given"
            ),
            "{command}: {}",
            stderr_of(&assert)
        );
        assert!(!out.exists(), "{command} wrote {}", out.display());
    }
    let assert = esmbench()
        .args(["test", "--mock-backend", "--out"])
        .arg(dir.path().join("p"))
        .assert()
        .success();
    assert!(!stderr_of(&assert).contains("no model or data"));
    assert_eq!(
        read_json(&dir.path().join("p/report.json"))["data"]["rows_total"],
        96
    );
    let assert = esmbench()
        .args(["fit", "--mock-backend", "--folds", "0", "--out"])
        .arg(dir.path().join("h.json"))
        .assert()
        .success();
    assert!(
        stderr_of(&assert)
            .contains("esmbench fit: no --model or --data: training a head on the embedded demo"),
        "{}",
        stderr_of(&assert)
    );
}

/// Regression: one stray quote in an unused column (`"5 mg/ml`) took every line after it into one field;
/// the run scored the rows before it, said nothing of the rest, and exited 0 with a complete report.
#[test]
fn regression_a_stray_quote_took_the_rest_of_the_file_into_one_field_and_the_run_passed() {
    let dir = tempdir();
    let mut text = String::from("id,sequence,label,notes\n");
    for row in 0..40 {
        let notes = if row == 9 { "\"5 mg/ml" } else { "ok" };
        text.push_str(&format!("r{row},EVQLVESGG,{},{notes}\n", row % 2));
    }
    let data = write(dir.path(), "notes.csv", &text);
    let refusal = stderr_of(&mock_test(dir.path(), &data).code(2));
    assert!(
        refusal
            .contains("notes.csv: line 11, field 4 (`notes`): a quoted field holds a line break")
            && refusal.contains("never closed"),
        "{refusal}"
    );
    assert!(!dir.path().join("out/report.json").exists());
    // `metrics` reads another tool's predictions the same way.
    let predictions = write(
        dir.path(),
        "p.csv",
        "y_true,y_proba,id\n1,0.9,a\n0,0.2,\"b\n1,0.7,c\n0,0.1,d\n",
    );
    let refusal = stderr_of(
        &esmbench()
            .args(["metrics", "--predictions"])
            .arg(&predictions)
            .arg("--out")
            .arg(dir.path().join("m"))
            .assert()
            .code(2),
    );
    assert!(
        refusal.contains("p.csv: line 3, field 3 (`id`)"),
        "{refusal}"
    );
}

/// Regression: a row after empty lines was placed on the first empty line, and in a file with CR line ends
/// ("CSV (Macintosh)") every row was on line 1.
#[test]
fn regression_rows_after_empty_lines_and_in_cr_files_were_given_the_wrong_line() {
    let dir = tempdir();
    for (name, text) in [
        ("blank.csv", "sequence\nEVQL\n\n\n\nEVJL\n"),
        ("mac.csv", "sequence\rEVQL\r\r\r\rEVJL\r"),
    ] {
        let data = write(dir.path(), name, text);
        let refusal = stderr_of(&mock_test(dir.path(), &data).code(2));
        assert!(
            refusal.contains(&format!("{name}: line 6, column sequence")),
            "{refusal}"
        );
    }
}

/// Regression: a run refused for bad data left the earlier run's outputs in --out, its report.json saying
/// `complete`, for a CI step that archives the folder or runs `check` on it; `metrics` the same.
#[test]
fn regression_a_refused_run_left_the_earlier_runs_complete_report_in_its_folder() {
    let dir = tempdir();
    let good = write(dir.path(), "good.csv", "sequence,label\nEVQL,1\nLAGV,0\n");
    let bad = write(dir.path(), "bad.csv", "sequence,label\nEVQL,1\nEVJL,0\n");
    let out = dir.path().join("out");
    mock_test(dir.path(), &good).success();
    assert_eq!(read_json(&out.join("report.json"))["status"], "complete");
    mock_test(dir.path(), &bad).code(2);
    for name in [
        "report.json",
        "report.md",
        "report.html",
        "predictions.csv",
        "checkpoint.json",
    ] {
        assert!(
            !out.join(name).exists(),
            "{name} of the earlier run is still there"
        );
    }

    let metrics = |predictions: &std::path::Path| {
        esmbench()
            .args(["metrics", "--predictions"])
            .arg(predictions)
            .arg("--out")
            .arg(dir.path().join("m"))
            .assert()
    };
    let scored = write(dir.path(), "p.csv", "y_true,y_proba\n1,0.9\n0,0.2\n");
    metrics(&scored).success();
    assert_eq!(
        read_json(&dir.path().join("m/report.json"))["status"],
        "complete"
    );
    let broken = write(dir.path(), "q.csv", "y_true,y_proba\n1,0.9\n0,high\n");
    metrics(&broken).code(2);
    assert!(!dir.path().join("m/report.json").exists());
}

/// Regression: a head whose file gives no threshold was reported as the threshold's source ("0.5, from the
/// classifier head", `threshold_source: head`).
#[test]
fn regression_a_head_without_a_threshold_was_credited_with_one() {
    let dir = tempdir();
    // The mock backend's embeddings are 4 wide.
    let head = write(
        dir.path(),
        "h.json",
        r#"{"type": "logistic_regression", "coef": [0.1, 0.2, -0.1, 0.3], "intercept": 0.0}"#,
    );
    let data = write(dir.path(), "d.csv", "sequence,label\nEVQL,1\nLAGV,0\n");
    let assert = mock_test_with(dir.path(), &data, &["--head", head.to_str().unwrap()]).success();
    let report = read_json(&dir.path().join("out/report.json"));
    assert_eq!(report["model"]["threshold_source"], "default");
    assert_eq!(report["model"]["threshold"], 0.5);
    assert!(
        stdout_of(&assert).contains(
            "threshold 0.5, the default (neither a flag, the config nor the head gives one)"
        ),
        "{}",
        stdout_of(&assert)
    );
}

/// Regression: messages quoted the user's field in full: a 10 MB single-line file gave 10 MB of stderr (its
/// one "column" listed), a 5 MB label or repeated id about 5 MB, flooding a CI log.
#[test]
fn regression_a_huge_field_was_quoted_whole_in_the_message() {
    let dir = tempdir();
    let huge = "A".repeat(2_000_000);
    for (name, text) in [
        ("line.csv", huge.clone()),
        ("label.csv", format!("sequence,label\nEVQL,{huge}\n")),
        ("id.csv", format!("id,sequence\n{huge},EVQL\n{huge},LAGV\n")),
    ] {
        let data = write(dir.path(), name, &text);
        let assert = mock_test(dir.path(), &data);
        let stderr = stderr_of(&assert);
        assert!(
            stderr.len() < 5_000,
            "{name}: {} bytes of stderr",
            stderr.len()
        );
        assert!(stderr.contains("... (2000000 bytes)"), "{name}: {stderr}");
    }
}

/// Regression: `embed --out E.npz` wrote .npy bytes under a name `np.load` reads as an archive.
#[test]
fn regression_embed_wrote_npy_bytes_under_another_extension() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQL\n");
    let out = dir.path().join("E.npz");
    let stderr = stderr_of(
        &command_on("embed", &fixture("esm2_micro.onnx"), &data, &out)
            .arg("--mock-backend")
            .assert()
            .code(2),
    );
    assert!(
        stderr.contains("embed writes one NumPy array, a .npy file") && stderr.contains("E.npy"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Regression: a shard past the last row (`--shard 50/50` on 48 rows) was reported as "every label is empty".
#[test]
fn regression_an_empty_shard_was_said_to_have_empty_labels() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence,label\nEVQL,1\nLAGV,0\n");
    mock_test_with(dir.path(), &data, &["--shard", "3/3"]).success();
    let report = read_json(&dir.path().join("out/report.json"));
    assert_eq!(
        report["metrics_note"],
        "this shard holds none of the data's rows: nothing to score"
    );
}

/// Regression: with `sequence` and `Sequence` side by side, the refusal's fix (pass --sequence-column with the
/// exact name) worked for `Sequence` but not for `sequence`, the default's spelling; as a config key too.
#[test]
fn regression_the_exact_column_name_given_picks_it_even_when_it_is_the_defaults() {
    let dir = tempdir();
    let data = write(dir.path(), "case.csv", "sequence,Sequence\nEVQL,LAGVLAGV\n");
    mock_test(dir.path(), &data).code(2);
    let probability = |data: &std::path::Path, extra: &[&str]| {
        mock_test_with(dir.path(), data, extra).success();
        read_csv(&dir.path().join("out/predictions.csv"))[0]["probability"].clone()
    };
    let lower = probability(&write(dir.path(), "l.csv", "sequence\nEVQL\n"), &[]);
    let upper = probability(&write(dir.path(), "u.csv", "sequence\nLAGVLAGV\n"), &[]);
    assert_ne!(lower, upper);
    assert_eq!(
        probability(&data, &["--sequence-column", "sequence"]),
        lower
    );
    assert_eq!(
        probability(&data, &["--sequence-column", "Sequence"]),
        upper
    );
    let config = write(dir.path(), "c.yaml", "columns:\n  sequence: Sequence\n");
    assert_eq!(
        probability(&data, &["--config", config.to_str().unwrap()]),
        upper
    );
}

/// Regression: a head fitted on one model file was applied to another of the same width (a CI trap: the head
/// of seed 0 on the encoder of seed 1) without a word, though the head records the model's SHA-256.
#[test]
fn regression_a_head_fitted_on_another_model_file_was_applied_silently() {
    let dir = tempdir();
    let mut text = String::from("sequence,label\n");
    for (i, residues) in [
        "EVQL", "QVQLV", "LAGVK", "KKWWE", "DIQMT", "EIVLT", "SYELT", "QSALT",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!("{residues},{}\n", i % 2));
    }
    let data = write(dir.path(), "train.csv", &text);
    let head = dir.path().join("head.json");
    command_on("fit", &fixture("esm2_micro.onnx"), &data, &head)
        .args(["--mock-backend", "--folds", "0"])
        .assert()
        .success();
    let head_flag = ["--head", head.to_str().unwrap()];
    let same = mock_test_with(dir.path(), &data, &head_flag).success();
    assert!(
        !stderr_of(&same).contains("fitted on another model file"),
        "{}",
        stderr_of(&same)
    );
    let other = test_command(
        &fixture("esm2_micro_with_head.onnx"),
        &data,
        &dir.path().join("other"),
    )
    .arg("--mock-backend")
    .args(head_flag)
    .assert()
    .success();
    assert!(
        stderr_of(&other).contains("was fitted on another model file")
            && stderr_of(&other).contains("advice: pass the head fitted on this model"),
        "{}",
        stderr_of(&other)
    );
}

/// Regression: `--label-column label` (the default's spelling, named) on data without that column went on
/// with predictions only, where any other name given was refused.
#[test]
fn regression_a_label_column_named_as_the_default_was_not_required() {
    let dir = tempdir();
    let data = write(dir.path(), "d.csv", "sequence\nEVQL\n");
    let refusal =
        stderr_of(&mock_test_with(dir.path(), &data, &["--label-column", "label"]).code(2));
    assert!(
        refusal.contains("no `label` column, which --label-column"),
        "{refusal}"
    );
    mock_test(dir.path(), &data).success();
}
