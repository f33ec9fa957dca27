//! A CSV that accompanies another output: written under `<name>.partial` and moved into place only once complete.

use std::ffi::OsString;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct PartialCsv {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<csv::Writer<BufWriter<File>>>,
}

impl PartialCsv {
    pub fn create(path: &Path, header: &[&str]) -> Result<PartialCsv> {
        let mut tmp = OsString::from(path.as_os_str());
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut partial = PartialCsv {
            path: path.to_path_buf(),
            tmp,
            writer: Some(csv::Writer::from_writer(BufWriter::new(file))),
        };
        partial.write(header)?;
        Ok(partial)
    }

    pub fn write(&mut self, fields: &[&str]) -> Result<()> {
        let writer = self.writer.as_mut().context("the file was finished")?;
        writer
            .write_record(fields)
            .with_context(|| format!("writing {}", self.tmp.display()))
    }

    /// Flushes, syncs and renames the file to its final name.
    pub fn finish(mut self) -> Result<()> {
        let writer = self.writer.take().context("the file was finished")?;
        let writing = || format!("writing {}", self.tmp.display());
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(writing)?
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(writing)?;
        file.sync_all().with_context(writing)?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("moving {} into place", self.path.display()))
    }
}

impl Drop for PartialCsv {
    fn drop(&mut self) {
        // Unfinished: nothing half-written may remain under either name.
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_under_its_name_only_when_finished_and_an_unfinished_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.rows.csv");
        let partial = dir.path().join("e.rows.csv.partial");
        let mut csv = PartialCsv::create(&path, &["row", "id"]).unwrap();
        csv.write(&["0", "a,b"]).unwrap();
        assert!(partial.exists() && !path.exists());
        csv.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "row,id\n0,\"a,b\"\n"
        );
        assert!(!partial.exists());

        let other = dir.path().join("f.csv");
        let mut dropped = PartialCsv::create(&other, &["row"]).unwrap();
        dropped.write(&["1"]).unwrap();
        drop(dropped);
        assert!(!other.exists() && !dir.path().join("f.csv.partial").exists());
    }
}
