//! A streaming writer of float32 [rows, cols] .npy files (format 1.0), so embeddings never sit in memory whole.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    rows: u64,
    cols: Option<usize>,
    written: u64,
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

impl NpyWriter {
    /// Rows must be known up front (the validation pass counts them); columns are fixed by the first row.
    pub fn create(path: &Path, rows: u64) -> Result<NpyWriter> {
        let tmp = path.with_extension("npy.partial");
        Ok(NpyWriter {
            path: path.to_path_buf(),
            tmp,
            out: None,
            rows,
            cols: None,
            written: 0,
        })
    }

    pub fn push_row(&mut self, row: &[f32]) -> Result<()> {
        if self.out.is_none() {
            let file = File::create(&self.tmp)
                .with_context(|| format!("creating {}", self.tmp.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            out.write_all(&header(self.rows, row.len()))?;
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
            out.write_all(&v.to_le_bytes())?;
        }
        self.written += 1;
        Ok(())
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
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("moving {} into place", self.path.display()))?;
        Ok(())
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
    }
}
