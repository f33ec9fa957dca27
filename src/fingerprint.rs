//! SHA-256 fingerprints of the model, data and head files: recorded in reports and checked on resume.

use std::io::Read;
use std::path::Path;

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

pub fn model_sha256(source: &ModelSource) -> Result<String> {
    Ok(match source {
        ModelSource::File(path) => sha256_file(path)?.0,
        ModelSource::Embedded => sha256_reader(embedded::DEMO_MODEL)?.0,
    })
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
    fn sha256_of_abc_is_the_standard_value() {
        let (hex, n) = super::sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
    }
}
