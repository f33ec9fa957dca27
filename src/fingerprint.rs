//! SHA-256 fingerprints of the model, data and head files: recorded in reports and checked on resume.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::DataSource;
use crate::embedded;
use crate::model::ModelSource;

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

/// The files a model is read from: the .onnx, then the external data files it keeps its weights in, in the
/// order it names them. Empty for the embedded model.
pub fn model_files(source: &ModelSource) -> Vec<PathBuf> {
    match source {
        ModelSource::File(path) => std::iter::once(path.clone())
            .chain(crate::model::external_data::files(path))
            .collect(),
        ModelSource::Embedded => Vec::new(),
    }
}

/// The model's SHA-256: of the .onnx file, followed by the external data files it keeps its weights in, if
/// any, in the order it names them (`cat m.onnx m.onnx.data | sha256sum`). A .onnx with external data holds
/// only the graph, the same for any weights beside it.
pub fn model_sha256(source: &ModelSource) -> Result<String> {
    sha256_of(source, &model_files(source))
}

/// [`model_sha256`] with the model's files already listed ([`model_files`]).
fn sha256_of(source: &ModelSource, files: &[PathBuf]) -> Result<String> {
    match source {
        ModelSource::File(_) => sha256_files(files),
        ModelSource::Embedded => Ok(sha256_reader(embedded::DEMO_MODEL)?.0),
    }
}

/// The SHA-256 of `files` read one after another; a read error names the first, the model's .onnx.
fn sha256_files(files: &[PathBuf]) -> Result<String> {
    let mut reader: Box<dyn Read> = Box::new(std::io::empty());
    for file in files {
        let opened =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        reader = Box::new(reader.chain(opened));
    }
    let first = files.first().map(|f| f.display().to_string());
    Ok(sha256_reader(reader)
        .with_context(|| format!("reading {}", first.unwrap_or_default()))?
        .0)
}

/// [`model_sha256`] computed on its own thread from the start of a run, so that it overlaps reading the data and
/// loading the model: a 2.6 GB ESM-1v export takes seconds to hash, about as long again as its load.
pub struct ModelHash {
    pending: Option<crate::threads::Background<Result<String>>>,
    sha256: Option<String>,
    /// What was hashed ([`model_files`]): the .onnx, then its external data files.
    files: Vec<PathBuf>,
    /// An external-data model's files as the file system described them before the hashing read them.
    stamps: Option<FileStamps>,
}

impl ModelHash {
    pub fn start(source: &ModelSource) -> ModelHash {
        let files = model_files(source);
        let stamps = FileStamps::of(&files);
        let (source, hashed) = (source.clone(), files.clone());
        ModelHash {
            pending: Some(crate::threads::in_background(
                "esmbench-model-hash",
                move || sha256_of(&source, &hashed),
            )),
            sha256: None,
            files,
            stamps,
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

    /// The finished hash, for a run that reuses a model loaded (and hashed) once for a whole suite.
    pub fn finished(&mut self) -> Result<ModelHash> {
        Ok(ModelHash {
            pending: None,
            sha256: Some(self.get()?),
            files: self.files.clone(),
            stamps: self.stamps.clone(),
        })
    }

    /// Err when a model whose weights are in external data files no longer has the SHA-256 it had when this
    /// hash started. ONNX Runtime maps those files rather than copying them, so weights rewritten in place while
    /// the run went may have scored some rows and not others; a self-contained .onnx is copied at load, and a
    /// change to it after the load does not reach the run, so it is not read again. Files the file system
    /// shows untouched since the start (same inode, size and change time) are not read again either: hashing
    /// a 2.6 GB model costs seconds at the end of every run.
    pub fn check_unchanged(&mut self) -> Result<()> {
        if self.files.len() < 2 {
            return Ok(());
        }
        let at_start = self.get()?;
        let [model, data_files @ ..] = self.files.as_slice() else {
            return Ok(());
        };
        if self
            .stamps
            .as_ref()
            .is_some_and(FileStamps::untouched_since)
        {
            return Ok(());
        }
        let now = sha256_files(&self.files)?;
        if now == at_start {
            return Ok(());
        }
        let names: Vec<String> = data_files.iter().map(|p| p.display().to_string()).collect();
        Err(crate::error::Failure::runtime(format!(
            "the model's weights changed while the run read them: {} and {} had SHA-256 {} when the run started, {} now; \
             ONNX Runtime reads them from the files as it goes, so the predictions may mix two models\n  \
             fix: put back the files the run started with (write a new export to another path), then score again without --resume",
            model.display(),
            names.join(", "),
            &at_start[..16],
            &now[..16]
        ))
        .into())
    }
}

/// What the file system says of each of a model's files (the .onnx and its external data), taken before they
/// are hashed: any write since changes a file's change time, which no user call can set back, and a new file
/// put in its place has another inode.
#[derive(Clone, Debug, PartialEq)]
struct FileStamps {
    files: Vec<(PathBuf, Option<FileStamp>)>,
    taken_at: std::time::SystemTime,
}

#[derive(Clone, Debug, PartialEq)]
struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

/// Some file systems keep times to the second (or two); a file changed this close before the start could be
/// changed again within the same tick without its stamp moving.
const COARSEST_TIMESTAMP: std::time::Duration = std::time::Duration::from_secs(2);

impl FileStamps {
    /// None where the platform gives no change time, or the model has no external data (never checked).
    fn of(files: &[PathBuf]) -> Option<FileStamps> {
        if files.len() < 2 || !cfg!(unix) {
            return None;
        }
        let taken_at = std::time::SystemTime::now();
        let files = files
            .iter()
            .map(|p| (p.clone(), FileStamp::of(p)))
            .collect();
        Some(FileStamps { files, taken_at })
    }

    /// Whether every file still has the stamp it had, and was last changed well before the stamps were taken.
    fn untouched_since(&self) -> bool {
        self.files.iter().all(|(path, stamp)| {
            let Some(stamp) = stamp else {
                return false;
            };
            let changed = std::time::UNIX_EPOCH
                + std::time::Duration::new(stamp.changed.0.max(0) as u64, stamp.changed.1 as u32);
            let settled = changed + COARSEST_TIMESTAMP <= self.taken_at;
            settled && FileStamp::of(path).as_ref() == Some(stamp)
        })
    }
}

impl FileStamp {
    #[cfg(unix)]
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    #[cfg(not(unix))]
    fn of(_path: &Path) -> Option<FileStamp> {
        None
    }
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

#[cfg(test)]
mod stamp_tests {
    use super::*;
    use std::time::Duration;

    /// A copy of the external-data fixture, with its stamps taken as if the run had started `settled` later.
    fn copied_model(settled: Duration) -> (tempfile::TempDir, PathBuf, FileStamps) {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contract");
        for name in ["external_data.onnx", "external_data.onnx.data"] {
            std::fs::copy(fixtures.join(name), dir.path().join(name)).unwrap();
        }
        let model = dir.path().join("external_data.onnx");
        let mut stamps = FileStamps::of(&model_files(&ModelSource::File(model.clone())))
            .expect("stamps on unix");
        stamps.taken_at += settled;
        (dir, model, stamps)
    }

    #[cfg(unix)]
    #[test]
    fn stamps_vouch_only_for_files_unchanged_since_well_before_the_start() {
        let (_dir, _model, stamps) = copied_model(Duration::ZERO);
        assert_eq!(stamps.files.len(), 2, "the .onnx and its data file");
        assert!(
            !stamps.untouched_since(),
            "a file written just before the start could change again within one timestamp tick"
        );
        let (_dir, _model, stamps) = copied_model(COARSEST_TIMESTAMP + Duration::from_secs(1));
        assert!(stamps.untouched_since());
    }

    #[cfg(unix)]
    #[test]
    fn a_same_size_rewrite_or_a_replaced_file_voids_the_stamps() {
        use std::io::Write;
        let settled = COARSEST_TIMESTAMP + Duration::from_secs(1);
        let (dir, _model, stamps) = copied_model(settled);
        let data = dir.path().join("external_data.onnx.data");
        let mut bytes = std::fs::read(&data).unwrap();
        bytes[0] ^= 1;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        assert!(!stamps.untouched_since(), "rewritten in place");

        let (dir, model, stamps) = copied_model(settled);
        let new = dir.path().join("new.onnx");
        std::fs::copy(&model, &new).unwrap();
        std::fs::rename(&new, &model).unwrap();
        assert!(!stamps.untouched_since(), "replaced by another file");
    }
}
