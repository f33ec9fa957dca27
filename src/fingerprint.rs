//! SHA-256 fingerprints of the model, data and head files: recorded in reports and checked on resume.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::{DataSource, ModelSource};
use crate::embedded;

/// Hex SHA-256 and byte count of a stream.
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((format!("{:x}", hasher.finalize()), total))
}

pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    sha256_reader(file).with_context(|| format!("reading {}", path.display()))
}

/// The model's SHA-256: of the .onnx file, followed by the external data files it keeps its weights in, if
/// any, in the order it names them (`cat m.onnx m.onnx.data | sha256sum`). A .onnx with external data holds
/// only the graph, the same for any weights beside it.
pub fn model_sha256(source: &ModelSource) -> Result<String> {
    Ok(match source {
        ModelSource::File(path) => {
            let mut reader: Box<dyn Read> = Box::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            );
            for data in crate::model::external_data::files(path) {
                let file = std::fs::File::open(&data)
                    .with_context(|| format!("opening {}", data.display()))?;
                reader = Box::new(reader.chain(file));
            }
            sha256_reader(reader)
                .with_context(|| format!("reading {}", path.display()))?
                .0
        }
        ModelSource::Embedded => sha256_reader(embedded::DEMO_MODEL)?.0,
    })
}

/// [`model_sha256`] computed on its own thread from the start of a run, so that it overlaps reading the data and
/// loading the model: a 2.6 GB ESM-1v export takes seconds to hash, about as long again as its load.
pub struct ModelHash {
    pending: Option<crate::threads::Background<Result<String>>>,
    sha256: Option<String>,
}

impl ModelHash {
    pub fn start(source: &ModelSource) -> ModelHash {
        let source = source.clone();
        ModelHash {
            pending: Some(crate::threads::in_background(
                "esmbench-model-hash",
                move || model_sha256(&source),
            )),
            sha256: None,
        }
    }

    /// A hash the caller already has: the suite hashes a model once, beside its load, for all its datasets.
    pub fn known(sha256: String) -> ModelHash {
        ModelHash {
            pending: None,
            sha256: Some(sha256),
        }
    }

    /// The hex SHA-256, waiting for the hashing to finish the first time.
    pub fn get(&mut self) -> Result<String> {
        if let Some(pending) = self.pending.take() {
            let sha256 = pending
                .join()
                .map_err(|_| anyhow::anyhow!("the model hashing thread panicked"))??;
            self.sha256 = Some(sha256);
        }
        self.sha256
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the model hash failed earlier"))
    }
}

/// Err when a model whose weights are in external data files no longer has the SHA-256 its run started
/// with. ONNX Runtime maps those files rather than copying them, so weights rewritten in place while the
/// run went may have scored some rows and not others; a self-contained .onnx is copied at load, and a
/// change to it after the load does not reach the run, so it is not read again.
pub fn check_model_unchanged(source: &ModelSource, sha256_at_start: &str) -> Result<()> {
    let ModelSource::File(path) = source else {
        return Ok(());
    };
    let data_files = crate::model::external_data::files(path);
    if data_files.is_empty() {
        return Ok(());
    }
    let now = model_sha256(source)?;
    if now == sha256_at_start {
        return Ok(());
    }
    let names: Vec<String> = data_files.iter().map(|p| p.display().to_string()).collect();
    Err(crate::error::Failure::runtime(format!(
        "the model's weights changed while the run read them: {} and {} had SHA-256 {} when the run started, {} now; \
         ONNX Runtime reads them from the files as it goes, so the predictions may mix two models\n  \
         fix: put back the files the run started with (write a new export to another path), then score again without --resume",
        path.display(),
        names.join(", "),
        &sha256_at_start[..16],
        &now[..16]
    ))
    .into())
}

/// The SHA-256 and length of the bytes a [`Digesting`] reader has passed on so far.
#[derive(Default)]
pub struct Seen {
    hasher: Mutex<Sha256>,
    bytes: AtomicU64,
}

impl Seen {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Hex SHA-256 of everything seen so far.
    pub fn sha256(&self) -> String {
        let hasher = self.hasher.lock().unwrap_or_else(|p| p.into_inner());
        format!("{:x}", hasher.clone().finalize())
    }
}

/// Hashes the bytes that pass through it, so a run can check that the file it scored is the one it fingerprinted.
pub struct Digesting<R> {
    inner: R,
    seen: Arc<Seen>,
}

impl<R> Digesting<R> {
    pub fn new(inner: R, seen: Arc<Seen>) -> Digesting<R> {
        Digesting { inner, seen }
    }
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen
            .hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&buf[..n]);
        self.seen.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub fn data_sha256(source: &DataSource) -> Result<(String, u64)> {
    match source {
        DataSource::File(path) => sha256_file(path),
        DataSource::Embedded => Ok(sha256_reader(embedded::DEMO_DATA)?),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_digesting_reader_sees_what_it_passes_on_in_any_read_sizes() {
        use std::io::Read;
        let text: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let seen = std::sync::Arc::new(super::Seen::default());
        let mut reader = super::Digesting::new(&text[..], std::sync::Arc::clone(&seen));
        let mut small = [0u8; 7];
        let mut passed = Vec::new();
        loop {
            let n = reader.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            passed.extend_from_slice(&small[..n]);
        }
        assert_eq!(passed, text);
        assert_eq!(
            (seen.sha256(), seen.bytes()),
            super::sha256_reader(&text[..]).unwrap()
        );
    }

    #[test]
    fn sha256_of_abc_is_the_standard_value() {
        let (hex, n) = super::sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
    }
}
