//! The external data files an ONNX model names (weights kept beside a .onnx over protobuf's 2 GiB, as
//! ESM-1v and ESM-2 650M in float32 are exported), found by walking the file's protobuf headers without
//! reading its weights.
//!
//! Such a .onnx holds only the graph: its SHA-256 is the same for any weights written beside it, so the
//! model's identity (report.json, the resume fingerprint) must include the data files, and a model copied
//! without them must be refused with the file's name rather than ONNX Runtime's load error.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use super::protobuf::fields;

const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const TENSOR_DATA_LOCATION: u64 = 14;
const DATA_LOCATION_EXTERNAL: u64 = 1;
/// An external_data entry is a short key and value; anything longer is not an ONNX file.
const MAX_ENTRY_BYTES: u64 = 1 << 16;

/// The files `model` keeps its weights in besides itself, resolved next to it, in the order its
/// initializers first name them. Empty for a self-contained model, and for a file this walk cannot read
/// (ONNX Runtime then reports what is wrong with it).
pub fn files(model: &Path) -> Vec<PathBuf> {
    let Ok(file) = File::open(model) else {
        return Vec::new();
    };
    let Ok(length) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let dir = model.parent().unwrap_or(Path::new(""));
    let mut walker = Walker {
        inner: BufReader::new(file),
        position: 0,
    };
    match walker.locations(length) {
        Ok(locations) => locations.iter().map(|l| dir.join(l)).collect(),
        Err(_) => Vec::new(),
    }
}

struct Walker<R> {
    inner: R,
    position: u64,
}

type Walk<T> = Result<T, String>;

impl<R: Read + Seek> Walker<R> {
    fn byte(&mut self) -> Walk<u8> {
        let mut one = [0u8];
        self.inner.read_exact(&mut one).map_err(|e| e.to_string())?;
        self.position += 1;
        Ok(one[0])
    }

    fn varint(&mut self) -> Walk<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn skip(&mut self, bytes: u64) -> Walk<()> {
        let step = i64::try_from(bytes).map_err(|_| "a length past any file".to_string())?;
        self.inner.seek_relative(step).map_err(|e| e.to_string())?;
        self.position += bytes;
        Ok(())
    }

    /// Skips the value of a field of this wire type.
    fn skip_value(&mut self, wire_type: u64) -> Walk<()> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.skip(8),
            2 => {
                let length = self.varint()?;
                self.skip(length)
            }
            5 => self.skip(4),
            other => Err(format!("wire type {other}")),
        }
    }

    /// The fields of the message that ends at `end`, each handed to `visit` with its number and wire type;
    /// `visit` reads the value, or returns false to have it skipped.
    fn fields(
        &mut self,
        end: u64,
        mut visit: impl FnMut(&mut Self, u64, u64) -> Walk<bool>,
    ) -> Walk<()> {
        while self.position < end {
            let key = self.varint()?;
            let (number, wire_type) = (key >> 3, key & 7);
            if !visit(self, number, wire_type)? {
                self.skip_value(wire_type)?;
            }
        }
        if self.position == end {
            Ok(())
        } else {
            Err("a field runs past its message".into())
        }
    }

    fn locations(&mut self, length: u64) -> Walk<Vec<String>> {
        let mut found: Vec<String> = Vec::new();
        self.fields(length, |walker, number, wire_type| {
            if (number, wire_type) != (MODEL_GRAPH, 2) {
                return Ok(false);
            }
            let end = walker.varint()? + walker.position;
            walker.fields(end, |walker, number, wire_type| {
                if (number, wire_type) != (GRAPH_INITIALIZER, 2) {
                    return Ok(false);
                }
                let end = walker.varint()? + walker.position;
                if let Some(location) = walker.tensor_location(end)? {
                    if !found.contains(&location) {
                        found.push(location);
                    }
                }
                Ok(true)
            })?;
            Ok(true)
        })?;
        Ok(found)
    }

    /// The `location` of a tensor whose data is external, reading its entries and skipping its data.
    fn tensor_location(&mut self, end: u64) -> Walk<Option<String>> {
        let (mut external, mut location) = (false, None);
        self.fields(end, |walker, number, wire_type| match (number, wire_type) {
            (TENSOR_DATA_LOCATION, 0) => {
                external = walker.varint()? == DATA_LOCATION_EXTERNAL;
                Ok(true)
            }
            (TENSOR_EXTERNAL_DATA, 2) => {
                let length = walker.varint()?;
                if length > MAX_ENTRY_BYTES {
                    return Err("an external_data entry too long to be one".into());
                }
                let mut entry = vec![0u8; length as usize];
                walker
                    .inner
                    .read_exact(&mut entry)
                    .map_err(|e| e.to_string())?;
                walker.position += length;
                let entry = fields(&entry)?;
                let text = |n: u32| {
                    entry
                        .iter()
                        .find(|f| f.number == n)
                        .map(|f| String::from_utf8_lossy(f.value).into_owned())
                };
                if text(1).as_deref() == Some("location") {
                    location = text(2);
                }
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok(location.filter(|_| external))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::protobuf::{put_bytes, put_varint};

    fn tensor(name: &str, external_in: Option<&str>) -> Vec<u8> {
        let mut t = Vec::new();
        put_varint(&mut t, 1, 4); // dims
        put_varint(&mut t, 2, 1); // data_type FLOAT
        put_bytes(&mut t, 8, name.as_bytes());
        match external_in {
            Some(location) => {
                for (key, value) in [("location", location), ("offset", "0"), ("length", "16")] {
                    let mut entry = Vec::new();
                    put_bytes(&mut entry, 1, key.as_bytes());
                    put_bytes(&mut entry, 2, value.as_bytes());
                    put_bytes(&mut t, TENSOR_EXTERNAL_DATA as u32, &entry);
                }
                put_varint(&mut t, TENSOR_DATA_LOCATION as u32, DATA_LOCATION_EXTERNAL);
            }
            None => put_bytes(&mut t, 9, &[0u8; 16]), // raw_data
        }
        t
    }

    fn model_file(dir: &Path, tensors: &[Vec<u8>]) -> PathBuf {
        let mut graph = Vec::new();
        for t in tensors {
            put_bytes(&mut graph, GRAPH_INITIALIZER as u32, t);
        }
        put_bytes(&mut graph, 2, b"main"); // name
        let mut model = Vec::new();
        put_varint(&mut model, 1, 10); // ir_version
        put_bytes(&mut model, MODEL_GRAPH as u32, &graph);
        let path = dir.join("m.onnx");
        std::fs::write(&path, model).unwrap();
        path
    }

    #[test]
    fn external_locations_are_found_once_each_in_order_next_to_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = model_file(
            dir.path(),
            &[
                tensor("a", Some("m.onnx.data")),
                tensor("b", None),
                tensor("c", Some("extra.bin")),
                tensor("d", Some("m.onnx.data")),
            ],
        );
        assert_eq!(
            files(&path),
            vec![dir.path().join("m.onnx.data"), dir.path().join("extra.bin")]
        );
    }

    #[test]
    fn a_self_contained_or_unreadable_model_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = model_file(dir.path(), &[tensor("a", None)]);
        assert!(files(&path).is_empty());
        std::fs::write(&path, b"\x08\x0a\x3a\xff\xff\x01not an ONNX file").unwrap();
        assert!(files(&path).is_empty());
        assert!(files(&dir.path().join("missing.onnx")).is_empty());
    }

    #[test]
    fn the_committed_fixtures_name_their_data_files_or_none() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        assert!(files(&fixtures.join("esm2_micro.onnx")).is_empty());
        assert_eq!(
            files(&fixtures.join("contract/external_data.onnx")),
            vec![fixtures.join("contract/external_data.onnx.data")]
        );
    }
}
