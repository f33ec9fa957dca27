//! `esmbench merge`: shard outputs back into one predictions file and report, as if the run was unsharded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{ensure_writable_dir, Shard};
use crate::error::Failure;
use crate::metrics;
use crate::report::predictions::{CsvLog, PREDICTIONS_HEADER, SKIPPED_HEADER};
use crate::report::{self, Report};

struct ShardOutput {
    dir: PathBuf,
    report: Report,
    shard: Shard,
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
            "{}: not an esmbench report of this version ({e})",
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
    Ok(ShardOutput {
        dir: dir.to_path_buf(),
        report,
        shard,
    })
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
        let row = record[0]
            .parse::<u64>()
            .with_context(|| format!("{}: row `{}`", path.display(), &record[0]))?;
        out.push((row, record));
    }
    Ok(out)
}

/// Checks that the shards belong to one run and cover it exactly once.
fn check_set(shards: &[ShardOutput]) -> Result<()> {
    let first = &shards[0];
    let count = first.shard.count;
    let mut seen = vec![false; count as usize];
    for s in shards {
        let same = s.report.model.sha256 == first.report.model.sha256
            && s.report.data.sha256 == first.report.data.sha256
            && s.report.model.threshold == first.report.model.threshold
            && s.shard.count == count;
        if !same {
            return Err(Failure::usage(format!(
                "{} and {} are not shards of one run (model, data, threshold or shard count differ)\n  fix: merge shards made with the same command",
                first.dir.display(),
                s.dir.display()
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

pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Report> {
    let shards = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>>>()?;
    check_set(&shards)?;
    ensure_writable_dir(out)?;
    let mut predictions = Vec::new();
    let mut skipped = Vec::new();
    for s in &shards {
        predictions.extend(records(&s.dir.join("predictions.csv"))?);
        skipped.extend(records(&s.dir.join("skipped.csv"))?);
    }
    // Metrics sum in row order, as the unsharded run does, so even the last bits agree.
    predictions.sort_by_key(|(row, _)| *row);
    let threshold = shards[0].report.model.threshold;
    let (mut labels, mut scores, mut unlabeled) = (Vec::new(), Vec::new(), 0u64);
    for (_, record) in &predictions {
        let p: f64 = record[3].parse().context("probability")?;
        match &record[2] {
            "" => unlabeled += 1,
            y => {
                labels.push(y.parse::<u8>().context("label")?);
                scores.push(p);
            }
        }
    }
    let mut merged = shards[0].report.clone();
    merged.data.rows_scored = predictions.len() as u64;
    merged.data.rows_skipped = skipped.len() as u64;
    merged.data.rows_unlabeled = unlabeled;
    merged.execution.shard = None;
    merged.execution.model_loads = shards.iter().map(|s| s.report.execution.model_loads).sum();
    merged.started_at = shards
        .iter()
        .map(|s| s.report.started_at.clone())
        .min()
        .unwrap_or_default();
    // The shards ran with one bootstrap setting; the merged intervals reuse it so they equal an unsharded run's.
    let resamples = shards[0]
        .report
        .metrics
        .as_ref()
        .and_then(|m| m.intervals.as_ref())
        .map_or(0, |i| i.resamples as usize);
    merged.metrics =
        (!labels.is_empty()).then(|| metrics::evaluate(&labels, &scores, threshold, resamples));
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
    // Shards run side by side: the merged rate is all rows over the slowest shard's wall time.
    perf.sequences_per_second = if perf.wall_seconds > 0.0 {
        predictions.len() as f64 / perf.wall_seconds
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
        predictions,
    )?;
    if !skipped.is_empty() {
        write_merged(&out.join("skipped.csv"), &SKIPPED_HEADER, skipped)?;
    }
    report::write_reports(out, &merged)?;
    Ok(merged)
}
