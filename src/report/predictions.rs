//! Row-by-row outputs (predictions.csv, skipped.csv, embed's E.rows.csv): appended as batches finish, durable at
//! checkpoints, and reopened at their last durable length on resume.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::error::Failure;

pub const PREDICTIONS_HEADER: [&str; 5] = ["row", "id", "label", "probability", "prediction"];
pub const SKIPPED_HEADER: [&str; 5] = ["row", "line", "id", "column", "reason"];
/// `esmbench embed`'s E.rows.csv: the CSV row behind each row of E.npy, in the same order.
pub const EMBEDDED_ROWS_HEADER: [&str; 3] = ["row", "id", "label"];

pub struct CsvLog {
    path: PathBuf,
    writer: csv::Writer<BufWriter<HashingFile>>,
}

/// A log's durable length and the SHA-256 of those bytes, recorded at a checkpoint: a resume goes on from a
/// file only while its first `bytes` are still the ones the run wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durable {
    pub bytes: u64,
    pub sha256: String,
}

/// `<path>.partial`: where an output is written until the run completes.
pub fn partial_name(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".partial");
    PathBuf::from(name)
}

/// An output file, hashing every byte written to it, from its first.
pub struct HashingFile {
    file: File,
    hasher: Sha256,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl HashingFile {
    /// `file` from its start; it should be empty.
    pub fn new(file: File) -> HashingFile {
        HashingFile {
            file,
            hasher: Sha256::new(),
        }
    }

    /// `file` (at `path`) cut back to its first `durable_bytes`, appended to after them. Refused when those bytes
    /// are not the ones a checkpoint recorded (`expected_sha256`; None for checkpoints that predate it): a file
    /// opened and saved by a spreadsheet or edited by hand would otherwise be resumed as if the run had written it.
    pub fn resume(
        mut file: File,
        path: &Path,
        durable_bytes: u64,
        expected_sha256: Option<&str>,
    ) -> Result<HashingFile> {
        let length = file.metadata()?.len();
        let changed = |how: String| {
            Failure::usage(format!(
                "--resume: {} was changed after the run stopped ({how})\n  fix: put back the file the run wrote, or drop --resume (or use another --out) to start afresh",
                path.display()
            ))
        };
        if length < durable_bytes {
            return Err(changed(format!(
                "{length} bytes, shorter than the {durable_bytes} its checkpoint recorded"
            ))
            .into());
        }
        file.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut (&mut file).take(durable_bytes), &mut hasher)
            .with_context(|| format!("reading {} to resume", path.display()))?;
        if let Some(expected) = expected_sha256 {
            if format!("{:x}", hasher.clone().finalize()) != expected {
                return Err(changed(format!(
                    "its first {durable_bytes} bytes are not the ones its checkpoint recorded: edited, or saved by another program"
                ))
                .into());
            }
        }
        file.set_len(durable_bytes)?;
        file.seek(SeekFrom::End(0))?;
        Ok(HashingFile { file, hasher })
    }

    /// Syncs what was written (flush any buffer in front first); returns its length and SHA-256.
    pub fn sync(&self) -> Result<Durable> {
        self.file.sync_data()?;
        Ok(Durable {
            bytes: self.file.metadata()?.len(),
            sha256: format!("{:x}", self.hasher.clone().finalize()),
        })
    }
}

/// The durable length (and SHA-256, where recorded) are those of `header` alone.
fn only_header(durable_bytes: u64, expected_sha256: Option<&str>, header: &[&str]) -> bool {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if writer.write_record(header).is_err() {
        return false;
    }
    let Ok(bytes) = writer.into_inner() else {
        return false;
    };
    bytes.len() as u64 == durable_bytes
        && expected_sha256.is_none_or(|sha| sha == format!("{:x}", Sha256::digest(&bytes)))
}

impl CsvLog {
    pub fn create(path: &Path, header: &[&str]) -> Result<CsvLog> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(HashingFile::new(file)));
        writer.write_record(header)?;
        Ok(CsvLog {
            path: path.to_path_buf(),
            writer,
        })
    }

    /// Reopens a log, dropping whatever was written after its last durable length; see [`HashingFile::resume`].
    pub fn resume(
        path: &Path,
        durable_bytes: u64,
        expected_sha256: Option<&str>,
        header: &[&str],
    ) -> Result<CsvLog> {
        if durable_bytes == 0 {
            return CsvLog::create(path, header);
        }
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            // A log that held nothing but its header is written again (a run killed while it removed its
            // empty skipped.csv left such a checkpoint).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && only_header(durable_bytes, expected_sha256, header) => {
                return CsvLog::create(path, header);
            }
            // Deleted after the run stopped: the rows it held are gone, as when the file is cut short.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure::usage(format!(
                    "--resume: {} is missing; the run had written {durable_bytes} bytes to it before it stopped\n  \
fix: put back the file the run wrote, or drop --resume to start afresh",
                    path.display()
                ))
                .into())
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reopening {} to resume", path.display())))
            }
        };
        let hashing = HashingFile::resume(file, path, durable_bytes, expected_sha256)?;
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::new(hashing));
        Ok(CsvLog {
            path: path.to_path_buf(),
            writer,
        })
    }

    pub fn write(&mut self, fields: &[&str]) -> Result<()> {
        self.writer
            .write_record(fields)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    /// Flushes and syncs; returns the durable length and its SHA-256.
    pub fn sync(&mut self) -> Result<Durable> {
        self.writer
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.writer.get_ref().get_ref().sync()
    }

    /// Syncs the log and moves it to `path`: a partial file becoming the finished output.
    pub fn finish_into(mut self, path: &Path) -> Result<()> {
        self.sync()?;
        std::fs::rename(&self.path, path)
            .with_context(|| format!("moving {} into place", path.display()))
    }
}

/// Refuses a finished log that is no longer the bytes its checkpoint recorded (`expected_sha256`; None for
/// checkpoints that predate it, checked on the length).
pub fn check_unchanged(path: &Path, bytes: u64, expected_sha256: Option<&str>) -> Result<()> {
    let changed = |how: &str| -> anyhow::Error {
        Failure::usage(format!(
            "--resume: {} was changed after the run completed ({how})\n  fix: put back the file the run wrote, or drop --resume to score the data again",
            path.display()
        ))
        .into()
    };
    match differs_from_written(path, bytes, expected_sha256)
        .map_err(|_| changed("it cannot be read"))?
    {
        None => Ok(()),
        Some(length) if length != bytes => Err(changed(&format!(
            "{length} bytes, where the run wrote {bytes}"
        ))),
        Some(_) => Err(changed("its bytes are not the ones the run wrote")),
    }
}

/// None when `path` holds the `bytes` bytes (of SHA-256 `expected_sha256`, where recorded) a run wrote;
/// otherwise its length now. Errors when it cannot be read.
pub fn differs_from_written(
    path: &Path,
    bytes: u64,
    expected_sha256: Option<&str>,
) -> Result<Option<u64>> {
    let (sha256, length) = crate::fingerprint::sha256_file(path)?;
    let same = length == bytes && expected_sha256.is_none_or(|expected| expected == sha256);
    Ok((!same).then_some(length))
}

/// (label, probability) of every line in a predictions file: what a resumed run's metrics need from before.
pub fn read_scored(path: &Path) -> Result<Vec<(Option<u8>, f64)>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        let label = match &record[2] {
            "" => None,
            text => Some(
                text.parse::<u8>()
                    .with_context(|| format!("{}: label `{text}`", path.display()))?,
            ),
        };
        let probability = record[3]
            .parse::<f64>()
            .with_context(|| format!("{}: probability `{}`", path.display(), &record[3]))?;
        out.push((label, probability));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_log_drops_lines_after_the_durable_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let mut log = CsvLog::create(&path, &PREDICTIONS_HEADER).unwrap();
        log.write(&["0", "a", "1", "0.25", "0"]).unwrap();
        let durable = log.sync().unwrap();
        log.write(&["1", "b", "0", "0.75", "1"]).unwrap();
        log.sync().unwrap();
        drop(log);
        let mut log = CsvLog::resume(
            &path,
            durable.bytes,
            Some(&durable.sha256),
            &PREDICTIONS_HEADER,
        )
        .unwrap();
        log.write(&["1", "b", "", "0.5", "0"]).unwrap();
        let resumed = log.sync().unwrap();
        assert_eq!(
            read_scored(&path).unwrap(),
            vec![(Some(1), 0.25), (None, 0.5)]
        );
        // The hash carries over the resume: it is the whole file's.
        let whole = crate::fingerprint::sha256_file(&path).unwrap();
        assert_eq!((resumed.sha256, resumed.bytes), whole);
    }

    #[test]
    fn a_log_changed_before_its_durable_length_is_refused_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let mut log = CsvLog::create(&path, &PREDICTIONS_HEADER).unwrap();
        log.write(&["0", "a", "1", "0.25", "0"]).unwrap();
        let durable = log.sync().unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("0.25", "0.75")).unwrap();
        let resume = || {
            CsvLog::resume(
                &path,
                durable.bytes,
                Some(&durable.sha256),
                &PREDICTIONS_HEADER,
            )
        };
        let error = format!("{:#}", resume().err().expect("refused"));
        assert!(
            error.contains("are not the ones its checkpoint recorded"),
            "{error}"
        );
        std::fs::write(&path, "row\n").unwrap();
        let error = format!("{:#}", resume().err().expect("refused"));
        assert!(error.contains("shorter than the"), "{error}");
        // A checkpoint from before the hash was recorded resumes on the length alone.
        std::fs::write(&path, text.replace("0.25", "0.75")).unwrap();
        assert!(CsvLog::resume(&path, durable.bytes, None, &PREDICTIONS_HEADER).is_ok());
    }
}
