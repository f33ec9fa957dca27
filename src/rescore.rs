//! `esmbench metrics`: rescore any predictions file (ours, or another tool's `y_true,y_pred,y_proba`) into the
//! same report, plots and HTML as `esmbench test`.
//!
//! The label and score columns are found by name (flags first, then the usual names), every row is checked
//! before anything is computed, and predictions are recomputed at the threshold in force: a `y_pred` column made
//! at some other threshold is not used, and a warning says how many rows it disagrees on.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::config::DataSource;
use crate::data::lines::{first_line, line_breaks_refusal, quoted_span, LfLineEnds, OpenQuote};
use crate::data::reader::{self, column_named_twice, delimiter_for, open_source};
use crate::error::Failure;
use crate::metrics::{self, threshold::Threshold};
use crate::report::{self, DataSection, Execution, ModelSection, Performance, Report, Tool};

/// Tried in order when --label-column is not given.
pub const LABEL_COLUMNS: [&str; 4] = ["label", "y_true", "true_label", "target"];
/// Tried in order when --score-column is not given.
pub const SCORE_COLUMNS: [&str; 5] = ["probability", "y_proba", "score", "proba", "y_score"];
/// Problems listed before the rest are only counted.
const SHOWN_PROBLEMS: usize = 20;

#[derive(Debug, Clone)]
pub struct RescoreConfig {
    pub predictions: PathBuf,
    pub out_dir: PathBuf,
    pub label_column: Option<String>,
    pub score_column: Option<String>,
    pub threshold: Threshold,
    pub bootstrap: usize,
}

/// A checked predictions file: the labeled rows' labels and scores, and what was read.
#[derive(Debug, Clone)]
pub struct Predictions {
    pub labels: Vec<u8>,
    pub scores: Vec<f64>,
    pub rows_total: u64,
    pub rows_unlabeled: u64,
    pub label_column: String,
    pub score_column: String,
    pub sha256: String,
    /// The file's own 0/1 predictions, when it has a prediction column.
    pub given: Option<GivenPredictions>,
}

/// A prediction column's name and, per row with a 0/1 value there, (line, score, prediction).
pub type GivenPredictions = (String, Vec<(u64, f64, u8)>);

/// Names of a column of 0/1 predictions another tool (or an earlier run) made at its own threshold.
pub const PREDICTION_COLUMNS: [&str; 3] = ["prediction", "y_pred", "pred"];

/// A warning when the file's own predictions disagree with `score > threshold`: the metrics recomputed here
/// would then differ from the ones the tool that wrote the file reported, with nothing saying why.
pub fn given_predictions_warning(p: &Predictions, threshold: f64, file: &str) -> Option<String> {
    let (column, rows) = p.given.as_ref()?;
    let mut differing = rows
        .iter()
        .filter(|(_, score, given)| metrics::predict(*score, threshold) != *given);
    let first = differing.next()?.0;
    let count = 1 + differing.count();
    Some(format!(
        "warning: {file}: its `{column}` column disagrees with {} > {threshold} on {count} of {} rows, the first at \
line {first}; the predictions are recomputed at {threshold}, so accuracy, F1 and the confusion matrix differ \
from the ones made with that column\n  fix: pass the threshold the file's predictions were made at (--threshold T)",
        p.score_column,
        rows.len()
    ))
}

fn normalize(header: &str) -> String {
    header.trim_start_matches('\u{feff}').trim().to_lowercase()
}

fn find_column(
    headers: &[String],
    flag: Option<&str>,
    candidates: &[&str],
    what: &str,
    flag_name: &str,
    file: &str,
) -> Result<usize, Failure> {
    let listed = crate::error::listed_columns(headers);
    let fields_named =
        |name: &str| -> Vec<usize> { (0..headers.len()).filter(|&i| headers[i] == name).collect() };
    let fields = match flag {
        Some(name) => {
            let fields = fields_named(&normalize(name));
            if fields.is_empty() {
                return Err(Failure::usage(format!(
                    "{file}: no `{name}` column (columns: {listed})\n  fix: pass {flag_name} with one of them"
                )));
            }
            fields
        }
        None => candidates
            .iter()
            .map(|c| fields_named(c))
            .find(|fields| !fields.is_empty())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "{file}: no {what} column (looked for {}; columns: {listed})\n  fix: name it with {flag_name} C",
                    candidates.join(", ")
                ))
            })?,
    };
    if let [first, _, ..] = fields[..] {
        return Err(column_named_twice(
            file,
            &headers[first],
            &fields,
            flag_name,
        ));
    }
    Ok(fields[0])
}

fn parse_label(text: &str) -> Result<Option<u8>, String> {
    reader::parse_label(text.as_bytes()).map_err(|other| {
        format!(
            "label `{}` is not 0 or 1; fix: use 0/1 (also 0.0/1.0, true/false), or leave it empty for an unlabeled row",
            crate::error::quoted(&other)
        )
    })
}

fn parse_score(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty score; fix: every row needs a probability".into());
    }
    match t.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "score `{}` is not a probability in [0, 1]{}; fix: pass the positive-class probability (predict_proba[:, 1]), not a decision value",
            crate::error::quoted(t),
            if v.is_nan() { " (NaN)" } else { "" }
        )),
        Err(_) => Err(format!(
            "score `{}` is not a number; fix: write the probability as a decimal number",
            crate::error::quoted(t)
        )),
    }
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Reads and checks every row; any bad row stops it with exit 2 and a list naming line, column and fix.
/// A field holding line breaks stops the file, as `test` stops on one: a stray quote would otherwise take
/// the rows after it into one field and the metrics would be computed on the rest.
fn refuse_line_breaks<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &csv::ByteRecord,
    file: &str,
    headers: &[String],
    open_quote: &OpenQuote,
) -> Result<()> {
    let Some(span) = quoted_span(reader, record, open_quote) else {
        return Ok(());
    };
    let column = headers.get(span.field).map(String::as_str);
    Err(Failure::input(line_breaks_refusal(file, span, column)).into())
}

pub fn read_predictions(
    path: &Path,
    label_column: Option<&str>,
    score_column: Option<&str>,
) -> Result<Predictions> {
    let file = path.display().to_string();
    // Read as `test --data` reads: gzip found by its first bytes, tab-separated when named .tsv.
    let handle = open_source(&DataSource::File(path.to_path_buf()), None).map_err(|e| {
        Failure::usage(format!(
            "{file}: cannot be opened ({})\n  fix: check the path given to --predictions",
            e.root_cause()
        ))
    })?;
    let delimiter = delimiter_for(&file);
    let (stream, open_quote) = LfLineEnds::new(handle, delimiter);
    // Flexible: the field count is checked below, where the row's line is known.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(stream);
    let header_record = reader
        .headers()
        .map_err(|e| Failure::input(format!("{file}: the header cannot be read ({e})\n  fix: the first line must name the columns, in UTF-8")))?
        .clone();
    refuse_line_breaks(
        &mut reader,
        header_record.as_byte_record(),
        &file,
        &[],
        &open_quote,
    )?;
    let headers: Vec<String> = header_record.iter().map(normalize).collect();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(Failure::input(format!(
            "{file}: the file is empty\n  fix: write a header line, e.g. y_true,y_proba"
        ))
        .into());
    }
    let label_at = find_column(
        &headers,
        label_column,
        &LABEL_COLUMNS,
        "label",
        "--label-column",
        &file,
    )?;
    let score_at = find_column(
        &headers,
        score_column,
        &SCORE_COLUMNS,
        "score",
        "--score-column",
        &file,
    )?;
    let mut out = Predictions {
        labels: Vec::new(),
        scores: Vec::new(),
        rows_total: 0,
        rows_unlabeled: 0,
        label_column: headers[label_at].clone(),
        score_column: headers[score_at].clone(),
        sha256: sha256_of(path)?,
        given: None,
    };
    let prediction_at = headers
        .iter()
        .position(|h| PREDICTION_COLUMNS.contains(&h.as_str()));
    let mut given = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut bad_rows = 0u64;
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map(|p| p.line()).unwrap_or(line);
                out.rows_total += 1;
                bad_rows += 1;
                if problems.len() < SHOWN_PROBLEMS {
                    problems.push(format!(
                        "  {file}: line {at}: {e}; fix: check the CSV quoting"
                    ));
                }
                continue;
            }
        }
        out.rows_total += 1;
        refuse_line_breaks(&mut reader, &record, &file, &headers, &open_quote)?;
        // Counted here, not by the csv crate, whose errors carry the line before any empty lines it skipped.
        let line = first_line(reader.position().line(), &record, false);
        // Only the columns read must be UTF-8: a Latin-1 byte in a notes column is no reason to refuse a row.
        let text = |i: usize| std::str::from_utf8(&record[i]);
        let used = [Some(label_at), Some(score_at), prediction_at];
        let problem = if record.len() != headers.len() {
            Some(format!(
                "the row has {} fields but the header has {}; fix: quote fields that contain commas",
                record.len(),
                headers.len()
            ))
        } else {
            used.into_iter().flatten().find_map(|i| {
                text(i).err().map(|_| {
                    format!(
                        "column {}: bytes that are not UTF-8; fix: save the file as UTF-8",
                        headers[i]
                    )
                })
            })
        };
        if let Some(what) = problem {
            bad_rows += 1;
            if problems.len() < SHOWN_PROBLEMS {
                problems.push(format!("  {file}: line {line}: {what}"));
            }
            continue;
        }
        // The columns read are UTF-8 from here on (checked above).
        let label = parse_label(text(label_at).unwrap_or_default());
        let score = parse_score(text(score_at).unwrap_or_default());
        let mut row_ok = true;
        for (column, result) in [
            (&out.label_column, label.as_ref().err()),
            (&out.score_column, score.as_ref().err()),
        ] {
            if let Some(problem) = result {
                row_ok = false;
                if problems.len() < SHOWN_PROBLEMS {
                    problems.push(format!("  {file}: line {line}, column {column}: {problem}"));
                }
            }
        }
        if !row_ok {
            bad_rows += 1;
            continue;
        }
        if let (Some(at), Ok(p)) = (prediction_at, &score) {
            // Only to compare: a value that is not 0/1 here is no error, since the column is not used.
            if let Ok(Some(predicted)) = parse_label(text(at).unwrap_or_default()) {
                given.push((line, *p, predicted));
            }
        }
        match (label, score) {
            (Ok(Some(y)), Ok(p)) => {
                out.labels.push(y);
                out.scores.push(p);
            }
            (Ok(None), Ok(_)) => out.rows_unlabeled += 1,
            _ => {}
        }
    }
    if bad_rows > 0 {
        let more = bad_rows.saturating_sub(problems.len() as u64);
        return Err(Failure::input(format!(
            "{file}: {bad_rows} of {} rows are invalid; nothing was computed.\n{}{}",
            out.rows_total,
            problems.join("\n"),
            if more > 0 {
                format!("\n  ... and {more} more")
            } else {
                String::new()
            }
        ))
        .into());
    }
    if out.rows_total == 0 {
        return Err(Failure::input(format!(
            "{file}: no data rows\n  fix: the file has a header only"
        ))
        .into());
    }
    if out.labels.is_empty() {
        return Err(Failure::input(format!(
            "{file}: every label in column `{}` is empty: there is nothing to score against\n  fix: fill in the labels, or point --label-column at the right column",
            out.label_column
        ))
        .into());
    }
    if let Some(at) = prediction_at {
        out.given = Some((headers[at].clone(), given));
    }
    Ok(out)
}

/// `esmbench metrics`: report.json, report.md, report.html and the plots for a predictions file.
pub fn run_metrics(config: &RescoreConfig) -> Result<Report> {
    let wall = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into());
    // The predictions of a run still interrupted: its report would say `complete` over the rows scored so far.
    let run_dir = config.predictions.parent().unwrap_or(Path::new("."));
    if config.predictions.file_name()
        == Some(std::ffi::OsStr::new(crate::output_files::PREDICTIONS))
        && crate::run::checkpoint::interrupted_run_in(run_dir)
    {
        return Err(Failure::usage(format!(
            "--predictions {} is an interrupted run's (its checkpoint.json is not complete): the metrics would \
cover only the rows scored so far\n  fix: finish that run first (its command with --resume), or copy the file \
elsewhere to rescore a partial run on purpose",
            config.predictions.display()
        ))
        .into());
    }
    if config.out_dir.is_dir() {
        // Its report would say `complete` over the rows the interrupted run had scored so far.
        crate::run::checkpoint::refuse_interrupted_run(
            &config.out_dir,
            "whose report this would replace",
            "pass another --out, or finish that run first (its command with --resume)",
        )?;
        report::remove_earlier_reports(&config.out_dir)?;
    }
    let p = read_predictions(
        &config.predictions,
        config.label_column.as_deref(),
        config.score_column.as_deref(),
    )?;
    crate::config::ensure_writable_dir(&config.out_dir, "--out")?;
    let path = config.predictions.display().to_string();
    if let Some(warning) = given_predictions_warning(&p, config.threshold.value, &path) {
        crate::errln!("{warning}");
    }
    let metrics = metrics::evaluate(
        &p.labels,
        &p.scores,
        config.threshold.value,
        config.bootstrap,
    );
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        command: "metrics".into(),
        status: "complete".into(),
        tool: Tool {
            name: "esmbench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        started_at,
        model: ModelSection {
            path: path.clone(),
            sha256: p.sha256.clone(),
            kind: "predictions".into(),
            output: p.score_column,
            head_source: None,
            threshold: config.threshold.value,
            threshold_source: config.threshold.source.clone(),
            assay: config.threshold.assay.map(|a| a.name().to_string()),
        },
        data: DataSection {
            path,
            sha256: p.sha256,
            rows_total: p.rows_total,
            rows_scored: p.rows_total,
            rows_skipped: 0,
            rows_truncated: 0,
            rows_with_gaps: 0,
            rows_repeating_id: 0,
            rows_repeating_sequence: 0,
            sequences_with_both_labels: 0,
            rows_unlabeled: p.rows_unlabeled,
            label_column: Some(p.label_column),
        },
        execution: Execution {
            device_requested: "none".into(),
            execution_provider: "none".into(),
            fallback: None,
            model_loads: 0,
            io_binding: false,
            graph_rewrite: None,
            threads: 0,
            parallel_batches: 0,
            max_tokens: 0,
            max_tokens_lowered_to: None,
            max_residues: 0,
            shard: None,
            resumed: None,
        },
        metrics: Some(metrics),
        metrics_note: None,
        performance: Performance {
            wall_seconds: wall.elapsed().as_secs_f64(),
            ..Default::default()
        },
        error: None,
    };
    report::write_reports(&config.out_dir, &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a row with an extra field or a non-UTF-8 byte after empty lines was placed on the first empty
    /// line (the csv crate's error position), and a Latin-1 byte in an unused column refused the row.
    #[test]
    fn regression_bad_rows_after_empty_lines_are_placed_on_their_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        std::fs::write(
            &path,
            b"y_true,y_proba,notes\n1,0.3,ok\n\n1,0.5,x,7\n\n\n0,0.\xff1,ok\n0,0.2,caf\xe9\n",
        )
        .unwrap();
        let error = format!("{:#}", read_predictions(&path, None, None).unwrap_err());
        assert!(
            error.contains("p.csv: line 4: the row has 4 fields but the header has 3")
                && error.contains("p.csv: line 7: column y_proba: bytes that are not UTF-8")
                && error.contains("2 of 4 rows are invalid"),
            "{error}"
        );
    }

    #[test]
    fn other_tools_columns_are_found_and_bad_rows_are_listed_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        std::fs::write(
            &path,
            "\u{feff}Y_True,y_pred,y_proba\n1,1,0.9\n0,0,0.2\n,1,0.7\n",
        )
        .unwrap();
        let p = read_predictions(&path, None, None).unwrap();
        assert_eq!(
            (p.label_column.as_str(), p.score_column.as_str()),
            ("y_true", "y_proba")
        );
        assert_eq!(p.labels, [1, 0]);
        assert_eq!(p.scores, [0.9, 0.2]);
        assert_eq!((p.rows_total, p.rows_unlabeled), (3, 1));

        std::fs::write(&path, "y_true,y_proba\n1,0.9\n2,0.5\n0,1.7\n0,nan\n1,x\n").unwrap();
        let e = format!("{:#}", read_predictions(&path, None, None).unwrap_err());
        for expected in [
            "4 of 5 rows are invalid",
            "line 3, column y_true: label `2` is not 0 or 1",
            "line 4, column y_proba: score `1.7` is not a probability",
            "line 5, column y_proba: score `nan` is not a probability in [0, 1] (NaN)",
            "line 6, column y_proba: score `x` is not a number",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
        }

        std::fs::write(&path, "truth,p\n1,0.9\n").unwrap();
        let e = read_predictions(&path, None, None).unwrap_err();
        assert!(
            format!("{e}").contains("no label column (looked for label, y_true"),
            "{e}"
        );
        let p = read_predictions(&path, Some("truth"), Some("P")).unwrap();
        assert_eq!(p.labels, [1]);
    }

    /// Regression: a y_pred column made at another threshold was ignored without a word, so the rescored
    /// accuracy and confusion matrix differed from the other tool's with nothing saying why.
    #[test]
    fn a_prediction_column_that_disagrees_with_the_threshold_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        // Made at 0.3: line 3's 0.35 was called 1, and line 5 (unlabelled, 0.4) too.
        std::fs::write(
            &path,
            "y_true,y_pred,y_proba\n1,1,0.9\n0,1,0.35\n0,0,0.2\n,1,0.4\n",
        )
        .unwrap();
        let p = read_predictions(&path, None, None).unwrap();
        let warning = given_predictions_warning(&p, 0.5, "p.csv").unwrap();
        assert!(
            warning.starts_with("warning: p.csv: its `y_pred` column disagrees with y_proba > 0.5 on 2 of 4 rows, the first at line 3;"),
            "{warning}"
        );
        assert_eq!(given_predictions_warning(&p, 0.3, "p.csv"), None);
        std::fs::write(&path, "y_true,y_proba\n1,0.9\n").unwrap();
        let p = read_predictions(&path, None, None).unwrap();
        assert_eq!(given_predictions_warning(&p, 0.5, "p.csv"), None);
    }

    #[test]
    fn gzipped_and_tab_separated_predictions_are_read_as_test_reads_data() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text = "y_true,y_proba\n1,0.9\n0,0.2\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = dir.path().join("p.csv.gz");
        std::fs::write(&zipped, gz.finish().unwrap()).unwrap();
        let tsv = dir.path().join("p.tsv");
        std::fs::write(&tsv, text.replace(',', "\t")).unwrap();
        for path in [zipped, tsv] {
            let p = read_predictions(&path, None, None).unwrap();
            assert_eq!(
                (p.labels.as_slice(), p.scores.as_slice()),
                (&[1, 0][..], &[0.9, 0.2][..])
            );
        }
    }
}
