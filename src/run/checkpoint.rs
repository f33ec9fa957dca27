//! Checkpoints: how far a run got, with the fingerprint of everything that decides its results.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::report::predictions::Durable;
use crate::report::write_atomically;

pub const CHECKPOINT_FILE: &str = "checkpoint.json";
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
    pub threshold: f64,
    pub skip_invalid: bool,
    pub shard: crate::config::Shard,
}

impl Fingerprint {
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
            out.push(format!(
                "the threshold changed ({} -> {})",
                self.threshold, other.threshold
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
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
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
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomically(&path_in(dir), &bytes)
    }

    /// The checkpoint in `dir`, whatever it was made with: read before the model loads, so a --resume
    /// with nothing to resume fails at once.
    pub fn read(dir: &Path) -> Result<Checkpoint> {
        let path = path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Failure::usage(format!(
                "--resume: {} has no checkpoint (the run finished, or never wrote one)\n  fix: drop --resume to start afresh",
                dir.display()
            ))
        })?;
        let checkpoint: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            Failure::usage(format!(
                "--resume: {} is not a checkpoint esmbench can read ({e})\n  fix: drop --resume to start afresh",
                path.display()
            ))
        })?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(Failure::usage(format!(
                "--resume: {} has version {}, expected {CHECKPOINT_VERSION}\n  fix: drop --resume",
                path.display(),
                checkpoint.version
            ))
            .into());
        }
        Ok(checkpoint)
    }

    /// This checkpoint, refused when it was made with other data, model or settings than `current`.
    pub fn matching(self, current: &Fingerprint) -> Result<Checkpoint> {
        let changed = self.fingerprint.differences(current);
        if !changed.is_empty() {
            return Err(Failure::usage(format!(
                "--resume refused: {} since the interrupted run\n  fix: resume with the same data, model, head and settings, or drop --resume (or use another --out) to start afresh",
                changed.join("; ")
            ))
            .into());
        }
        Ok(self)
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(path_in(dir));
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
            threshold: 0.5,
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
        other.threshold = 0.6;
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
}
