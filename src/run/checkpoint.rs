//! Checkpoints: how far a run got, with the fingerprint of everything that decides its results.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::report::predictions::Durable;
use crate::report::write_atomically;

use crate::output_files::CHECKPOINT as CHECKPOINT_FILE;

const CHECKPOINT_VERSION: u32 = 1;

/// Everything that changes a row's prediction. The token budget and threads are left out on purpose:
/// results do not depend on them, and the watchdog lowers the budget mid-run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub data_sha256: String,
    pub data_bytes: u64,
    pub model_sha256: String,
    pub head_sha256: Option<String>,
    pub columns: [String; 3],
    pub max_residues: u64,
    pub truncate: bool,
    /// None for `embed`, which applies no threshold.
    pub threshold: Option<f64>,
    pub skip_invalid: bool,
    pub shard: crate::config::Shard,
}

impl Fingerprint {
    /// The fingerprint of a run of `scoring` over data and model of these hashes.
    pub fn of(
        scoring: &crate::config::ScoringConfig,
        (data_sha256, data_bytes): (String, u64),
        model_sha256: String,
        head_sha256: Option<String>,
        threshold: Option<f64>,
    ) -> Fingerprint {
        Fingerprint {
            data_sha256,
            data_bytes,
            model_sha256,
            head_sha256,
            columns: [
                scoring.columns.sequence.clone(),
                scoring.columns.label.clone(),
                scoring.columns.id.clone(),
            ],
            max_residues: scoring.max_residues as u64,
            truncate: scoring.truncate,
            threshold,
            skip_invalid: scoring.skip_invalid,
            shard: scoring.shard,
        }
    }

    /// Human-readable list of what differs from `other`.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if (self.data_sha256.as_str(), self.data_bytes)
            != (other.data_sha256.as_str(), other.data_bytes)
        {
            out.push("the data file changed".to_string());
        }
        if self.model_sha256 != other.model_sha256 {
            out.push("the model file changed".to_string());
        }
        if self.head_sha256 != other.head_sha256 {
            out.push("the head changed".to_string());
        }
        if self.columns != other.columns {
            out.push(format!(
                "the columns changed ({:?} -> {:?})",
                self.columns, other.columns
            ));
        }
        if (self.max_residues, self.truncate) != (other.max_residues, other.truncate) {
            out.push("--max-residues or --no-truncate changed".to_string());
        }
        if self.threshold != other.threshold {
            let shown = |t: Option<f64>| t.map_or("none".to_string(), |t| t.to_string());
            out.push(format!(
                "the threshold changed ({} -> {})",
                shown(self.threshold),
                shown(other.threshold)
            ));
        }
        if self.skip_invalid != other.skip_invalid {
            out.push("--on-invalid changed".to_string());
        }
        if self.shard != other.shard {
            out.push(format!(
                "--shard changed ({} -> {})",
                self.shard.label(),
                other.shard.label()
            ));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    pub fingerprint: Fingerprint,
    /// Data rows 0..rows_done are in predictions.csv or skipped.csv.
    pub rows_done: u64,
    /// Durable lengths of the output files at this checkpoint; anything after them is discarded on resume.
    pub predictions_bytes: u64,
    pub skipped_bytes: u64,
    /// SHA-256 of those bytes: a resume refuses files changed since. Absent in checkpoints of earlier versions.
    #[serde(default)]
    pub predictions_sha256: Option<String>,
    #[serde(default)]
    pub skipped_sha256: Option<String>,
    /// The run finished: predictions.csv is whole at `predictions_bytes`, and report.json is its final report.
    /// A `--resume` then keeps them (a suite resumed after an interruption goes on past its finished runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Refuses `out` as a command's --out while it holds an interrupted run: `consequence` says what the command
/// would do to it, `fix` the way out.
pub fn refuse_interrupted_run(out: &Path, consequence: &str, fix: &str) -> Result<()> {
    if !interrupted_run_in(out) {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "--out {} holds an interrupted run (its checkpoint.json is not complete), {consequence}\n  fix: {fix}",
        out.display()
    ))
    .into())
}

/// Whether `dir` holds a run `--resume` could go on with: a checkpoint not marked complete (or one this version
/// cannot read, kept rather than guessed at).
pub fn interrupted_run_in(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path_in(dir)) else {
        return false;
    };
    serde_json::from_str::<Checkpoint>(&text).map_or(true, |checkpoint| !checkpoint.complete)
}

impl Checkpoint {
    pub fn new(
        fingerprint: Fingerprint,
        rows_done: u64,
        predictions: Durable,
        skipped: Durable,
    ) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            fingerprint,
            rows_done,
            predictions_bytes: predictions.bytes,
            skipped_bytes: skipped.bytes,
            predictions_sha256: Some(predictions.sha256),
            skipped_sha256: Some(skipped.sha256),
            complete: false,
        }
    }

    /// Marks the checkpoint in `dir` (the run's last, written when its loop ended) as that of a finished run.
    pub fn mark_complete(dir: &Path) -> Result<()> {
        let mut checkpoint = Checkpoint::read(dir)?;
        checkpoint.complete = true;
        checkpoint.save(dir)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomically(&path_in(dir), &bytes)
    }

    /// The checkpoint in `dir`, whatever it was made with: read before the model loads, so a --resume
    /// with nothing to resume fails at once.
    pub fn read(dir: &Path) -> Result<Checkpoint> {
        let checkpoint: Checkpoint = read_json(&path_in(dir), &dir.display().to_string())?;
        check_version(checkpoint.version, &path_in(dir))?;
        Ok(checkpoint)
    }

    /// This checkpoint, refused when it was made with other data, model or settings than `current`.
    pub fn matching(self, current: &Fingerprint) -> Result<Checkpoint> {
        refuse_changes(&self.fingerprint, current, self.complete)?;
        Ok(self)
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(path_in(dir));
    }
}

fn refuse_changes(then: &Fingerprint, now: &Fingerprint, complete: bool) -> Result<()> {
    let changed = then.differences(now);
    if changed.is_empty() {
        return Ok(());
    }
    let run = if complete { "finished" } else { "interrupted" };
    Err(Failure::usage(format!(
        "--resume refused: {} since the {run} run\n  fix: resume with the same data, model, head and settings, or drop --resume (or use another --out) to start afresh",
        changed.join("; ")
    ))
    .into())
}

/// Refuses a checkpoint whose row count is not what its files hold: a resume starts reading at `rows_done`,
/// so an edited count (or files from another run) would score rows twice or never, and still end `complete`.
/// `recorded` counts the rows in the files named by `files`; `shard` is the run's.
pub fn check_rows_recorded(
    checkpoint: &Path,
    rows_done: u64,
    shard: crate::config::Shard,
    recorded: u64,
    files: &str,
) -> Result<()> {
    let expected = shard.rows_below(rows_done);
    if recorded == expected {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "--resume: {} says rows 0..{rows_done} are done ({expected} of them this run's), but {files} hold {recorded}\n  \
fix: put back the files the run wrote, or drop --resume (or use another --out) to start afresh",
        checkpoint.display()
    ))
    .into())
}

/// A checkpoint file; `place` names where the run wrote (its --out) in the errors.
fn read_json<T: DeserializeOwned>(path: &Path, place: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|_| {
        Failure::usage(format!(
            "--resume: {place} has no checkpoint (no run wrote one there)\n  fix: drop --resume to start afresh, or check --out"
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::usage(format!(
            "--resume: {} is not a checkpoint esmbench can read ({e})\n  fix: drop --resume to start afresh",
            path.display()
        ))
        .into()
    })
}

fn check_version(version: u32, path: &Path) -> Result<()> {
    if version == CHECKPOINT_VERSION {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "--resume: {} has version {version}, expected {CHECKPOINT_VERSION}\n  fix: drop --resume",
        path.display()
    ))
    .into())
}

/// How far an `esmbench embed` run got: its E.checkpoint.json beside E.npy. The partial files keep their
/// `.partial` names until the run completes, so nothing downstream reads a half-written E.npy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedCheckpoint {
    pub version: u32,
    pub fingerprint: Fingerprint,
    /// Data rows 0..rows_done are in E.rows.csv or E.skipped.csv (and their embeddings in E.npy).
    pub rows_done: u64,
    /// The embedding width, once the first row fixed it.
    pub width: Option<usize>,
    pub embeddings: Durable,
    pub rows: Durable,
    /// None while no row was skipped (the list is created at the first).
    pub skipped: Option<Durable>,
    /// Every file is in place under its final name; kept so `--resume` can show the outputs are this run's.
    #[serde(default)]
    pub complete: bool,
}

impl EmbedCheckpoint {
    pub fn new(
        fingerprint: Fingerprint,
        rows_done: u64,
        width: Option<usize>,
        embeddings: Durable,
        rows: Durable,
        skipped: Option<Durable>,
    ) -> EmbedCheckpoint {
        EmbedCheckpoint {
            version: CHECKPOINT_VERSION,
            fingerprint,
            rows_done,
            width,
            embeddings,
            rows,
            skipped,
            complete: false,
        }
    }

    pub fn mark_complete(out: &Path) -> Result<()> {
        let path = Self::path_for(out);
        let mut checkpoint: EmbedCheckpoint = read_json(&path, &out.display().to_string())?;
        checkpoint.complete = true;
        checkpoint.save(out)
    }

    /// E.checkpoint.json for embeddings written to E.npy.
    pub fn path_for(out: &Path) -> PathBuf {
        out.with_extension("checkpoint.json")
    }

    pub fn save(&self, out: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomically(&Self::path_for(out), &bytes)
    }

    /// The checkpoint of an interrupted run to `out`, refused when it was made with other data, model or settings.
    pub fn read_matching(out: &Path, current: &Fingerprint) -> Result<EmbedCheckpoint> {
        let path = Self::path_for(out);
        let checkpoint: EmbedCheckpoint = read_json(&path, &out.display().to_string())?;
        check_version(checkpoint.version, &path)?;
        refuse_changes(&checkpoint.fingerprint, current, checkpoint.complete)?;
        Ok(checkpoint)
    }

    pub fn remove(out: &Path) {
        let _ = std::fs::remove_file(Self::path_for(out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint() -> Fingerprint {
        Fingerprint {
            data_sha256: "d".into(),
            data_bytes: 10,
            model_sha256: "m".into(),
            head_sha256: None,
            columns: ["sequence".into(), "label".into(), "id".into()],
            max_residues: 1022,
            truncate: true,
            threshold: Some(0.5),
            skip_invalid: false,
            shard: crate::config::Shard::WHOLE,
        }
    }

    fn durable(bytes: u64) -> Durable {
        Durable {
            bytes,
            sha256: format!("{bytes:064x}"),
        }
    }

    #[test]
    fn a_checkpoint_of_an_earlier_version_without_the_hashes_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut json =
            serde_json::to_value(Checkpoint::new(fingerprint(), 7, durable(9), durable(3)))
                .unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("predictions_sha256");
        object.remove("skipped_sha256");
        std::fs::write(path_in(dir.path()), json.to_string()).unwrap();
        let read = Checkpoint::read(dir.path()).unwrap();
        assert_eq!(
            (
                read.rows_done,
                read.predictions_bytes,
                read.predictions_sha256
            ),
            (7, 9, None)
        );
    }

    #[test]
    fn a_checkpoint_round_trips_and_resumes_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::new(fingerprint(), 42, durable(1000), durable(0));
        c.save(dir.path()).unwrap();
        assert_eq!(
            Checkpoint::read(dir.path())
                .unwrap()
                .matching(&fingerprint())
                .unwrap(),
            c
        );
    }

    #[test]
    fn resume_is_refused_when_the_data_model_or_threshold_changed() {
        let dir = tempfile::tempdir().unwrap();
        Checkpoint::new(fingerprint(), 1, durable(1), durable(0))
            .save(dir.path())
            .unwrap();
        let mut other = fingerprint();
        other.model_sha256 = "m2".into();
        other.threshold = Some(0.6);
        let err = Checkpoint::read(dir.path())
            .unwrap()
            .matching(&other)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the model file changed") && text.contains("the threshold changed"),
            "{text}"
        );
        assert_eq!(crate::error::exit_code_for(&err), 2);
    }

    #[test]
    fn resume_without_a_checkpoint_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Checkpoint::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("has no checkpoint"));
    }

    #[test]
    fn an_embed_checkpoint_sits_beside_its_npy_and_is_refused_for_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("e.npy");
        let mut embedding = fingerprint();
        embedding.threshold = None;
        let c = EmbedCheckpoint::new(
            embedding.clone(),
            5,
            Some(320),
            durable(6528),
            durable(90),
            None,
        );
        c.save(&out).unwrap();
        assert!(dir.path().join("e.checkpoint.json").exists());
        assert_eq!(EmbedCheckpoint::read_matching(&out, &embedding).unwrap(), c);
        let mut other = embedding;
        other.model_sha256 = "m2".into();
        let text = EmbedCheckpoint::read_matching(&out, &other)
            .unwrap_err()
            .to_string();
        assert!(text.contains("the model file changed"), "{text}");
        EmbedCheckpoint::remove(&out);
        let text = EmbedCheckpoint::read_matching(&out, &other)
            .unwrap_err()
            .to_string();
        assert!(text.contains("has no checkpoint"), "{text}");
    }

    #[test]
    fn marking_a_checkpoint_complete_keeps_its_lengths_and_a_running_one_omits_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let running = Checkpoint::new(fingerprint(), 9, durable(500), durable(40));
        running.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(path_in(dir.path())).unwrap();
        assert!(!text.contains("complete"), "{text}");
        Checkpoint::mark_complete(dir.path()).unwrap();
        let read = Checkpoint::read(dir.path()).unwrap();
        assert!(read.complete);
        assert_eq!((read.rows_done, read.predictions_bytes), (9, 500));
    }
}
