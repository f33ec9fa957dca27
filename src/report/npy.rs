//! A streaming writer of float32 [rows, cols] .npy files (format 1.0), so embeddings never sit in memory whole.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::Digest;

use crate::error::Failure;
use crate::report::predictions::{partial_name, Durable, HashingFile};

/// Writes `<out>.partial` under an OS lock and renames it into place once every row is in. Two `esmbench
/// embed` runs on one --out would otherwise truncate and append to the same partial file; the second is
/// refused instead. A run that stops before its first checkpoint removes its partial file; after one, the file
/// stays for `--resume`, which reopens it at the checkpoint's length.
pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// The locked partial file, until the first row gives the width for the header.
    file: Option<File>,
    out: Option<BufWriter<HashingFile>>,
    rows: u64,
    cols: Option<usize>,
    written: u64,
    finished: bool,
    /// A checkpoint names the partial file from its first sync on.
    kept_for_resume: bool,
    /// The partial file was there before this writer (an interrupted run's): it is emptied only when this
    /// writer's first row comes, and left as it was if none does, so a run refused at load keeps it.
    earlier_partial: bool,
}

/// The .npy header for a little-endian float32 C-order array, padded so the data starts on a 64-byte boundary.
pub fn header(rows: u64, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + padding + 1;
    let mut bytes = Vec::with_capacity(10 + header_len);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header_len as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes.extend(std::iter::repeat_n(b' ', padding));
    bytes.push(b'\n');
    bytes
}

/// Locks the embeddings file of an earlier run on `path` (its partial or its finished name, whichever exists:
/// a run that renamed it keeps holding the lock) before anything of that run is moved; None when neither
/// exists. Fails with exit 2 while another run holds it. Dropping the file releases the lock.
pub fn lock_earlier_run(path: &Path) -> Result<Option<File>> {
    let tmp = partial_name(path);
    let Some(existing) = [&tmp, path].into_iter().find(|p| p.is_file()) else {
        return Ok(None);
    };
    let file = OpenOptions::new()
        .read(true)
        .open(existing)
        .with_context(|| format!("opening {}", existing.display()))?;
    locked(file, path, existing).map(Some)
}

/// The partial file, opened without truncating it and locked. Fails with exit 2 while another run holds it.
fn open_locked(path: &Path, tmp: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    locked(file, path, tmp)
}

/// `file` (which is `lock_path`, of the output `path`) once locked; exit 2 while another run holds it.
fn locked(file: File, path: &Path, lock_path: &Path) -> Result<File> {
    match file.try_lock() {
        // Where the file system cannot lock (some network mounts) the run goes on unlocked.
        Ok(()) | Err(TryLockError::Error(_)) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Failure::usage(format!(
            "{} is being written by another esmbench run ({} is locked)\n  fix: wait for that run to finish, or pass another --out",
            path.display(),
            lock_path.display()
        ))
        .into()),
    }
}

impl NpyWriter {
    /// Rows must be known up front (the validation pass counts them); columns are fixed by the first row.
    /// Fails with exit 2 while another run holds the same output.
    pub fn create(path: &Path, rows: u64) -> Result<NpyWriter> {
        let tmp = partial_name(path);
        let earlier_partial = tmp.exists();
        let file = open_locked(path, &tmp)?;
        Ok(NpyWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            out: None,
            rows,
            cols: None,
            written: 0,
            finished: false,
            kept_for_resume: false,
            earlier_partial,
        })
    }

    /// Reopens the partial file of an interrupted run at its checkpoint: `durable` bytes (which must hash as
    /// recorded) holding the header for `rows` x `width` and whole rows after it.
    pub fn resume(
        path: &Path,
        rows: u64,
        width: Option<usize>,
        durable: &Durable,
    ) -> Result<NpyWriter> {
        let Some(cols) = width.filter(|_| durable.bytes > 0) else {
            return NpyWriter::create(path, rows);
        };
        let tmp = partial_name(path);
        let file = open_locked(path, &tmp)?;
        let hashing = HashingFile::resume(file, &tmp, durable.bytes, Some(&durable.sha256))?;
        let header_bytes = header(rows, cols).len() as u64;
        // A width of 0 (or one too large to hold) is no checkpoint a run wrote.
        let row_bytes = (cols as u64).checked_mul(4).filter(|&b| b > 0);
        let body = row_bytes.and_then(|row_bytes| {
            durable
                .bytes
                .checked_sub(header_bytes)
                .filter(|b| b % row_bytes == 0)
                .map(|body| (body, row_bytes))
        });
        let Some((body, row_bytes)) = body else {
            return Err(Failure::usage(format!(
                "--resume: {}: {} bytes is not a header and whole rows of {cols} floats, as its checkpoint says\n  \
fix: put back the files the run wrote, or drop --resume to embed afresh",
                tmp.display(),
                durable.bytes
            ))
            .into());
        };
        Ok(NpyWriter {
            path: path.to_path_buf(),
            tmp,
            file: None,
            out: Some(BufWriter::with_capacity(1 << 20, hashing)),
            rows,
            cols: Some(cols),
            written: body / row_bytes,
            finished: false,
            kept_for_resume: true,
            earlier_partial: true,
        })
    }

    /// Rows written so far, those of a resumed run's earlier part included.
    pub fn rows_written(&self) -> u64 {
        self.written
    }

    /// The embedding width, once the first row has fixed it.
    pub fn width(&self) -> Option<usize> {
        self.cols
    }

    pub fn push_row(&mut self, row: &[f32]) -> Result<()> {
        if self.out.is_none() {
            let file = self.file.take().context("the partial file is open")?;
            file.set_len(0)
                .with_context(|| format!("emptying {}", self.tmp.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, HashingFile::new(file));
            out.write_all(&header(self.rows, row.len()))
                .with_context(|| format!("writing {}", self.tmp.display()))?;
            self.out = Some(out);
            self.cols = Some(row.len());
        }
        if Some(row.len()) != self.cols {
            bail!(
                "embedding width changed from {:?} to {}",
                self.cols,
                row.len()
            );
        }
        let out = self.out.as_mut().expect("opened above");
        for v in row {
            out.write_all(&v.to_le_bytes())
                .with_context(|| format!("writing {}", self.tmp.display()))?;
        }
        self.written += 1;
        Ok(())
    }

    /// Flushes and syncs the rows so far, for a checkpoint; from here on the partial file outlives the writer.
    pub fn sync(&mut self) -> Result<Durable> {
        self.kept_for_resume = true;
        match self.out.as_mut() {
            Some(out) => {
                out.flush()
                    .with_context(|| format!("writing {}", self.tmp.display()))?;
                out.get_ref().sync()
            }
            None => Ok(Durable {
                bytes: 0,
                sha256: format!("{:x}", sha2::Sha256::digest(b"")),
            }),
        }
    }

    /// Checks the row count and moves the finished file into place.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.rows {
            bail!(
                "wrote {} embedding rows, expected {}",
                self.written,
                self.rows
            );
        }
        let out = self.out.take().context("no rows were written")?;
        let writing = || format!("writing {}", self.tmp.display());
        let hashing = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(writing)?;
        hashing.sync().with_context(writing)?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("moving {} into place", self.path.display()))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        // Still locked here (the file closes after this), so no other run's partial file is removed.
        let untouched_earlier = self.earlier_partial && self.out.is_none();
        if !self.finished && !self.kept_for_resume && !untouched_earlier {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_64_byte_aligned_and_names_the_shape() {
        let h = header(141021, 320);
        assert_eq!(h.len() % 64, 0);
        assert!(String::from_utf8_lossy(&h).contains("'shape': (141021, 320)"));
        assert_eq!(*h.last().unwrap(), b'\n');
    }

    #[test]
    fn a_written_file_reads_back_with_ndarray_npy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let mut w = NpyWriter::create(&path, 2).unwrap();
        w.push_row(&[1.0, 2.5]).unwrap();
        w.push_row(&[-3.0, 0.125]).unwrap();
        w.finish().unwrap();
        let a: ndarray::Array2<f32> = ndarray_npy::read_npy(&path).unwrap();
        assert_eq!(a, ndarray::arr2(&[[1.0, 2.5], [-3.0, 0.125]]));
        assert!(!path.with_extension("npy.partial").exists());
    }

    #[test]
    fn a_second_writer_on_the_same_output_is_refused_and_an_unfinished_one_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let partial = path.with_extension("npy.partial");
        let mut first = NpyWriter::create(&path, 2).unwrap();
        first.push_row(&[1.0]).unwrap();
        let err = NpyWriter::create(&path, 2).err().expect("refused");
        assert_eq!(crate::error::exit_code_for(&err), 2);
        assert!(err.to_string().contains("another esmbench run"), "{err}");
        assert!(
            partial.exists(),
            "the refused writer left the first one's file alone"
        );
        drop(first);
        assert!(!partial.exists());
        assert!(!path.exists());
        let mut again = NpyWriter::create(&path, 1).unwrap();
        again.push_row(&[2.0]).unwrap();
        again.finish().unwrap();
        let a: ndarray::Array2<f32> = ndarray_npy::read_npy(&path).unwrap();
        assert_eq!(a, ndarray::arr2(&[[2.0]]));
    }

    #[test]
    fn a_partial_file_kept_at_a_checkpoint_resumes_there_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let partial = path.with_extension("npy.partial");
        let mut first = NpyWriter::create(&path, 3).unwrap();
        first.push_row(&[1.0, 2.0]).unwrap();
        let durable = first.sync().unwrap();
        first.push_row(&[9.0, 9.0]).unwrap(); // after the checkpoint: dropped on resume
        drop(first);
        assert!(partial.exists(), "kept for --resume after a checkpoint");

        let mut resumed = NpyWriter::resume(&path, 3, Some(2), &durable).unwrap();
        resumed.push_row(&[3.0, 4.0]).unwrap();
        resumed.push_row(&[5.0, 6.0]).unwrap();
        resumed.finish().unwrap();
        let a: ndarray::Array2<f32> = ndarray_npy::read_npy(&path).unwrap();
        assert_eq!(a, ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]));

        let mut again = NpyWriter::create(&path, 2).unwrap();
        again.push_row(&[1.0]).unwrap();
        let durable = again.sync().unwrap();
        drop(again);
        let mut bytes = std::fs::read(&partial).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&partial, bytes).unwrap();
        let error = NpyWriter::resume(&path, 2, Some(1), &durable)
            .err()
            .expect("refused");
        assert!(
            format!("{error:#}").contains("are not the ones its checkpoint recorded"),
            "{error:#}"
        );
        assert_eq!(crate::error::exit_code_for(&error), 2);
    }

    /// Regression: a checkpoint giving the width as 0 divided by zero (exit 101, a panic) on --resume.
    #[test]
    fn regression_a_checkpoint_width_of_0_panicked_and_one_that_disagrees_with_the_bytes_is_refused(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let mut first = NpyWriter::create(&path, 3).unwrap();
        first.push_row(&[1.0, 2.0]).unwrap();
        let durable = first.sync().unwrap();
        drop(first);
        for width in [0, 3, usize::MAX] {
            let error = NpyWriter::resume(&path, 3, Some(width), &durable)
                .err()
                .expect("refused");
            assert_eq!(crate::error::exit_code_for(&error), 2, "{error:#}");
            assert!(
                error
                    .to_string()
                    .contains("fix: put back the files the run wrote"),
                "{error:#}"
            );
        }
        let resumed = NpyWriter::resume(&path, 3, Some(2), &durable).unwrap();
        assert_eq!(resumed.rows_written(), 1);
    }
}
