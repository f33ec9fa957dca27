//! Row-by-row CSV outputs (predictions.csv, skipped.csv): appended as batches finish, durable at checkpoints,
//! and reopened at their last durable length on resume.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const PREDICTIONS_HEADER: [&str; 5] = ["row", "id", "label", "probability", "prediction"];
pub const SKIPPED_HEADER: [&str; 5] = ["row", "line", "id", "column", "reason"];
/// `esmbench embed`'s E.rows.csv: the CSV row behind each row of E.npy, in the same order.
pub const EMBEDDED_ROWS_HEADER: [&str; 3] = ["row", "id", "label"];

pub struct CsvLog {
    path: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
}

impl CsvLog {
    pub fn create(path: &Path, header: &[&str]) -> Result<CsvLog> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer.write_record(header)?;
        Ok(CsvLog {
            path: path.to_path_buf(),
            writer,
        })
    }

    /// Reopens a log, dropping whatever was written after its last durable length.
    pub fn resume(path: &Path, durable_bytes: u64, header: &[&str]) -> Result<CsvLog> {
        if durable_bytes == 0 {
            return CsvLog::create(path, header);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("reopening {} to resume", path.display()))?;
        let length = file.metadata()?.len();
        anyhow::ensure!(
            length >= durable_bytes,
            "{} is shorter ({length} bytes) than its checkpoint says ({durable_bytes}); it was changed after the run stopped",
            path.display()
        );
        file.set_len(durable_bytes)?;
        file.seek(SeekFrom::End(0))?;
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::new(file));
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

    /// Flushes and syncs; returns the durable length in bytes.
    pub fn sync(&mut self) -> Result<u64> {
        self.writer.flush()?;
        let file = self.writer.get_ref().get_ref();
        file.sync_data()?;
        Ok(file.metadata()?.len())
    }
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
        let mut log = CsvLog::resume(&path, durable, &PREDICTIONS_HEADER).unwrap();
        log.write(&["1", "b", "", "0.5", "0"]).unwrap();
        log.sync().unwrap();
        assert_eq!(
            read_scored(&path).unwrap(),
            vec![(Some(1), 0.25), (None, 0.5)]
        );
    }
}
