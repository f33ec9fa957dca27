//! `esmbench merge`: shard outputs back into one predictions file and report, as if the run was unsharded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{ensure_writable_dir, Shard};
use crate::error::Failure;
use crate::metrics;
use crate::output_files::{CHECKPOINT as CHECKPOINT_FILE, SKIPPED as SKIPPED_FILE};
use crate::report::predictions::{
    differs_from_written, CsvLog, PREDICTIONS_HEADER, SKIPPED_HEADER,
};
use crate::report::{self, Report};
use crate::run::checkpoint::{self, Checkpoint};

struct ShardOutput {
    dir: PathBuf,
    report: Report,
    shard: Shard,
    /// The run's last checkpoint: what it was run with (head, columns, residue limit) and the SHA-256 of its
    /// finished files. Absent from folders copied without it.
    checkpoint: Option<Checkpoint>,
}

fn load(dir: &Path) -> Result<ShardOutput> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::usage(format!(
            "{}: {e}\n  fix: pass the --out directories of `esmbench test --shard K/N` runs",
            path.display()
        ))
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        Failure::usage(format!(
            "{}: not an esmbench report of this version ({e})\n  fix: pass the --out directories of `esmbench test --shard K/N` runs made with this version",
            path.display()
        ))
    })?;
    if report.status != "complete" {
        return Err(Failure::usage(format!(
            "{}: the shard's status is `{}`, not complete\n  fix: finish it first (run its command again with --resume)",
            dir.display(),
            report.status
        ))
        .into());
    }
    let label = report.execution.shard.clone().ok_or_else(|| {
        Failure::usage(format!("{}: this run was not sharded\n  fix: merge the outputs of `esmbench test --shard K/N` runs", dir.display()))
    })?;
    let shard = Shard::parse(&label)?;
    let checkpoint = if checkpoint::path_in(dir).exists() {
        let checkpoint = Checkpoint::read(dir)?;
        check_outputs_unchanged(dir, &checkpoint)?;
        Some(checkpoint)
    } else {
        crate::errln!(
            "esmbench merge: WARNING: {} has no {CHECKPOINT_FILE}, so its predictions.csv cannot be checked against \
the run that wrote it (only its row count is)\n  advice: merge the shard folders as the runs left them",
            dir.display()
        );
        None
    };
    Ok(ShardOutput {
        dir: dir.to_path_buf(),
        report,
        shard,
        checkpoint,
    })
}

/// A shard's predictions.csv and skipped.csv must be the bytes its run finished with: an edited or cut file
/// would otherwise merge into a report that says `complete`.
fn check_outputs_unchanged(dir: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let files = [
        (
            "predictions.csv",
            checkpoint.predictions_bytes,
            &checkpoint.predictions_sha256,
        ),
        (
            SKIPPED_FILE,
            checkpoint.skipped_bytes,
            &checkpoint.skipped_sha256,
        ),
    ];
    for (name, bytes, sha256) in files {
        let path = dir.join(name);
        if !path.exists() {
            if name == SKIPPED_FILE {
                // A run that skipped no row removes its header-only skipped.csv; the row counts check the rest.
                continue;
            }
            return Err(Failure::input(format!(
                "{}: missing, though the shard's run wrote it\n  fix: restore the file, or score that shard again (its command without --resume)",
                path.display()
            ))
            .into());
        }
        if let Some(actual_bytes) = differs_from_written(&path, bytes, sha256.as_deref())? {
            return Err(Failure::input(format!(
                "{}: not the file its run finished with ({actual_bytes} bytes, the run wrote {bytes}{})\n  \
fix: score that shard again (its command without --resume), or restore the file",
                path.display(),
                if actual_bytes == bytes { " with other content" } else { "" }
            ))
            .into());
        }
    }
    Ok(())
}

/// Reads a row-keyed CSV written by esmbench, as raw records.
fn records(path: &Path) -> Result<Vec<(u64, csv::StringRecord)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let row = field(path, &record, 0, "row")?;
        let row = row
            .parse::<u64>()
            .map_err(|_| not_ours(path, &record, format!("row `{row}` is not a row number")))?;
        out.push((row, record));
    }
    Ok(out)
}

/// Field `index` (named `name` in the header) of a record from an esmbench-written CSV.
fn field<'r>(
    path: &Path,
    record: &'r csv::StringRecord,
    index: usize,
    name: &str,
) -> Result<&'r str> {
    record.get(index).ok_or_else(|| {
        not_ours(
            path,
            record,
            format!("no `{name}` field (column {})", index + 1),
        )
    })
}

/// The label (None when the row has none) and probability of a predictions.csv record.
fn label_and_probability(path: &Path, record: &csv::StringRecord) -> Result<(Option<u8>, f64)> {
    let probability = field(path, record, 3, "probability")?;
    let p: f64 = probability
        .parse()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| {
            not_ours(
                path,
                record,
                format!("`{probability}` is not a probability"),
            )
        })?;
    let label = match field(path, record, 2, "label")? {
        "" => None,
        y => Some(
            y.parse::<u8>()
                .ok()
                .filter(|y| *y <= 1)
                .ok_or_else(|| not_ours(path, record, format!("label `{y}` is not 0 or 1")))?,
        ),
    };
    Ok((label, p))
}

fn not_ours(path: &Path, record: &csv::StringRecord, problem: String) -> anyhow::Error {
    let line = record.position().map_or(0, |p| p.line());
    Failure::input(format!(
        "{}, line {line}: {problem}\n  fix: merge the folders `esmbench test --shard K/N` wrote, unedited",
        path.display()
    ))
    .into()
}

/// Checks that the shards belong to one run and cover it exactly once.
fn check_set(shards: &[ShardOutput]) -> Result<()> {
    let first = &shards[0];
    let count = first.shard.count;
    let mut seen = vec![false; count as usize];
    // A shard with no labels computed no intervals, so the first shard that did sets the bootstrap.
    let bootstrap = shards.iter().find_map(resamples);
    for s in shards {
        let mut differences = Vec::new();
        if let (Some(a), Some(b)) = (&first.checkpoint, &s.checkpoint) {
            // Everything a run's rows depend on, as a resume compares it (head, columns, residue limit,
            // --on-invalid), but the shard itself.
            let mut b = b.fingerprint.clone();
            b.shard = a.fingerprint.shard;
            differences = a.fingerprint.differences(&b);
        }
        // The reports say again some of what the checkpoints compare: each difference is named once.
        let mut differ = |what: String| {
            let named = what.split(" (").next().unwrap_or(&what).to_string();
            if !differences.iter().any(|d| d.starts_with(&named)) {
                differences.push(what);
            }
        };
        if s.report.model.sha256 != first.report.model.sha256 {
            differ("the model file changed".into());
        }
        if s.report.data.sha256 != first.report.data.sha256 {
            differ("the data file changed".into());
        }
        if s.report.model.threshold != first.report.model.threshold {
            differ(format!(
                "the threshold changed ({} -> {})",
                first.report.model.threshold, s.report.model.threshold
            ));
        }
        if let (Some(a), Some(b)) = (bootstrap, resamples(s)) {
            if a != b {
                differ(format!("--bootstrap changed ({a} -> {b})"));
            }
        }
        if s.shard.count != count {
            differ(format!(
                "the shard count changed ({count} -> {})",
                s.shard.count
            ));
        }
        if !differences.is_empty() {
            return Err(Failure::usage(format!(
                "{} and {} are not shards of one run: from the first to the second, {}\n  fix: merge shards made with the same command",
                first.dir.display(),
                s.dir.display(),
                differences.join(", ")
            ))
            .into());
        }
        let slot = &mut seen[(s.shard.index - 1) as usize];
        if *slot {
            return Err(Failure::usage(format!(
                "shard {} is given twice ({})\n  fix: pass each shard's directory once",
                s.shard.label(),
                s.dir.display()
            ))
            .into());
        }
        *slot = true;
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| !**s)
        .map(|(k, _)| format!("{}/{count}", k + 1))
        .collect();
    if !missing.is_empty() {
        return Err(Failure::usage(format!(
            "missing shard(s) {}\n  fix: run them and pass every shard directory",
            missing.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// The bootstrap resamples behind a shard's intervals (0 when turned off); None where it had no metrics to
/// resample.
fn resamples(shard: &ShardOutput) -> Option<u64> {
    let metrics = shard.report.metrics.as_ref()?;
    match &metrics.intervals {
        Some(intervals) => Some(intervals.resamples),
        None => (metrics.undefined.get("intervals").map(String::as_str)
            == Some(metrics::bootstrap::OFF))
        .then_some(0),
    }
}

/// Both paths name one existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

fn write_merged(
    path: &Path,
    header: &[&str],
    mut rows: Vec<(u64, csv::StringRecord)>,
) -> Result<()> {
    rows.sort_by_key(|(row, _)| *row);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Failure::usage(format!(
            "row {} appears in two shards\n  fix: merge the shards of one --shard K/N split, each once",
            w[0].0
        )).into());
    }
    let mut log = CsvLog::create(path, header)?;
    for (_, record) in &rows {
        log.write(&record.iter().collect::<Vec<_>>())?;
    }
    log.sync()?;
    Ok(())
}

/// The rows a report's wall time covers: all it scored, less those scored before a resume.
pub fn timed_rows(report: &Report) -> u64 {
    report.data.rows_scored
        - report
            .execution
            .resumed
            .map_or(0, |r| r.rows_scored_before.min(report.data.rows_scored))
}

/// The merged report, and each shard's own wall time (the report's is the slowest shard's).
pub struct Merged {
    pub report: Report,
    pub shard_wall_seconds: Vec<f64>,
}

pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged> {
    let shards = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>>>()?;
    check_set(&shards)?;
    if let Some(s) = shards.iter().find(|s| same_dir(&s.dir, out)) {
        return Err(Failure::usage(format!(
            "--out {} is shard {}'s own folder, whose predictions the merge would overwrite\n  fix: pass a new folder, e.g. --out {}",
            out.display(),
            s.shard.label(),
            out.with_file_name("merged").display()
        ))
        .into());
    }
    ensure_writable_dir(out, "--out")?;
    // A run still writing there (a shard's --out given by a glob or a typo) would be overwritten mid-run.
    let _output_lock = crate::run::lock::OutputLock::acquire(out)?;
    checkpoint::refuse_interrupted_run(
        out,
        "which the merge would overwrite",
        &format!(
            "pass a new folder, e.g. --out {}",
            out.with_file_name("merged").display()
        ),
    )?;
    // An earlier merge's or run's files (a skipped.csv this merge has no rows for) would describe other data.
    report::remove_earlier_run(out)?;
    let mut predictions = Vec::new();
    let mut skipped = Vec::new();
    for s in &shards {
        let path = s.dir.join("predictions.csv");
        let scored = records(&path)?;
        let listed = records(&s.dir.join(SKIPPED_FILE))?;
        let counts = (scored.len() as u64, listed.len() as u64);
        let reported = (s.report.data.rows_scored, s.report.data.rows_skipped);
        if counts != reported {
            return Err(Failure::input(format!(
                "{}: {} rows scored and {} skipped, but its report.json counts {} and {}\n  \
fix: score that shard again (its command without --resume), or restore its files",
                s.dir.display(),
                counts.0,
                counts.1,
                reported.0,
                reported.1
            ))
            .into());
        }
        for (row, record) in scored {
            let scores = label_and_probability(&path, &record)?;
            predictions.push((row, record, scores));
        }
        skipped.extend(listed);
    }
    // Metrics sum in row order, as the unsharded run does, so even the last bits agree.
    predictions.sort_by_key(|(row, _, _)| *row);
    let threshold = shards[0].report.model.threshold;
    let (mut labels, mut scores, mut unlabeled) = (Vec::new(), Vec::new(), 0u64);
    for (_, _, scored) in &predictions {
        match *scored {
            (None, _) => unlabeled += 1,
            (Some(y), p) => {
                labels.push(y);
                scores.push(p);
            }
        }
    }
    let mut merged = shards[0].report.clone();
    merged.data.rows_scored = predictions.len() as u64;
    merged.data.rows_skipped = skipped.len() as u64;
    merged.data.rows_unlabeled = unlabeled;
    merged.execution.shard = None;
    // Its rates are the shards' together (see below), whatever resumes each had.
    merged.execution.resumed = None;
    merged.execution.model_loads = shards.iter().map(|s| s.report.execution.model_loads).sum();
    merged.execution.max_tokens_lowered_to = shards
        .iter()
        .filter_map(|s| s.report.execution.max_tokens_lowered_to)
        .min();
    merged.started_at = shards
        .iter()
        .map(|s| s.report.started_at.clone())
        .min()
        .unwrap_or_default();
    // The shards ran with one bootstrap setting; the merged intervals reuse it so they equal an unsharded run's.
    let resamples = shards.iter().find_map(resamples).unwrap_or(0) as usize;
    merged.metrics =
        (!labels.is_empty()).then(|| metrics::evaluate(&labels, &scores, threshold, resamples));
    // A resumed shard's report times only its last process, so only the rows that process scored count.
    let resumed: Vec<report::Resumed> = shards
        .iter()
        .filter_map(|s| s.report.execution.resumed)
        .collect();
    merged.execution.resumed =
        resumed
            .iter()
            .map(|r| r.at_row)
            .min()
            .map(|at_row| report::Resumed {
                at_row,
                rows_scored_before: resumed.iter().map(|r| r.rows_scored_before).sum(),
            });
    let rows_timed = timed_rows(&merged);
    let perf = &mut merged.performance;
    perf.wall_seconds = shards
        .iter()
        .map(|s| s.report.performance.wall_seconds)
        .fold(0.0, f64::max);
    perf.inference_seconds = shards
        .iter()
        .map(|s| s.report.performance.inference_seconds)
        .sum();
    perf.batches = shards.iter().map(|s| s.report.performance.batches).sum();
    perf.peak_rss_bytes = shards
        .iter()
        .map(|s| s.report.performance.peak_rss_bytes)
        .max()
        .unwrap_or(0);
    perf.peak_threads = shards
        .iter()
        .map(|s| s.report.performance.peak_threads)
        .max()
        .unwrap_or(0);
    // As if the shards ran side by side (one per machine or GPU): the rows over the slowest shard's wall time.
    // The console says so beside the shards' summed time, for shards run one after another.
    perf.sequences_per_second = if perf.wall_seconds > 0.0 {
        rows_timed as f64 / perf.wall_seconds
    } else {
        0.0
    };
    let tokens: f64 = shards
        .iter()
        .map(|s| s.report.performance.tokens_per_second * s.report.performance.wall_seconds)
        .sum();
    perf.tokens_per_second = if perf.wall_seconds > 0.0 {
        tokens / perf.wall_seconds
    } else {
        0.0
    };
    perf.timeline = Vec::new();
    write_merged(
        &out.join("predictions.csv"),
        &PREDICTIONS_HEADER,
        predictions
            .into_iter()
            .map(|(row, record, _)| (row, record))
            .collect(),
    )?;
    if !skipped.is_empty() {
        write_merged(&out.join(SKIPPED_FILE), &SKIPPED_HEADER, skipped)?;
    }
    report::write_reports(out, &merged)?;
    Ok(Merged {
        report: merged,
        shard_wall_seconds: shards
            .iter()
            .map(|s| s.report.performance.wall_seconds)
            .collect(),
    })
}
