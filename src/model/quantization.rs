//! Whether a model's 8-bit MatMuls would saturate on this CPU, checked before the session is built.
//!
//! `export_onnx.py --quantize int8-vnni` (and onnxruntime's `quantize_dynamic` with signed weights) makes
//! MatMuls that multiply unsigned 8-bit activations by signed 8-bit weights. On x86 CPUs without VNNI,
//! ONNX Runtime's kernel for that pair (vpmaddubsw) adds each two products in a saturating 16-bit
//! integer, so large products are clipped and the probabilities drift: on ESM-2 8M, on an AVX2-only
//! CPU, mean |Δp| 0.14 against float32 and a quarter of the labels flipped, with no error from the runtime.
//! VNNI (AVX-512 VNNI, AVX-VNNI) accumulates in 32 bits; ARM's kernels do too; unsigned weights with
//! reduce_range (`--quantize int8`) stay clear of the limit everywhere.
//!
//! The model file is walked field by field: nodes and initializer names are read, weights are seeked past,
//! so a 650M-parameter export costs a few thousand small reads.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

use prost::Message;

use super::graph::{tag, NodeView};
use super::provider::Provider;

/// TensorProto.DataType INT8.
const INT8: u64 = 3;
/// The quantized MatMul ops and which input holds the weight.
const WEIGHT_INPUT: [(&str, usize); 3] = [
    ("MatMulInteger", 1),
    ("DynamicQuantizeMatMul", 1),
    ("QLinearMatMul", 3),
];
/// Node fields larger than this (Constant nodes carrying tensors) are skipped rather than decoded.
const MAX_NODE_BYTES: u64 = 1 << 20;

/// Whether this CPU's ONNX Runtime kernels multiply u8 by s8 without a saturating 16-bit step.
pub fn cpu_sums_u8s8_exactly() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Whether the run would be exposed: signed-weight 8-bit MatMuls run by the CPU provider on a CPU
/// without VNNI. Other providers have their own kernels.
pub fn saturates(provider: Provider, cpu_exact: bool, signed_matmuls: usize) -> bool {
    provider == Provider::Cpu && !cpu_exact && signed_matmuls > 0
}

/// The refusal (or, when allowed, the warning) for a model that [`saturates`]: what happens and why.
pub fn saturation_message(origin: &str, signed_matmuls: usize) -> String {
    format!(
        "{origin}: {signed_matmuls} 8-bit MatMul{} signed weights (`export_onnx.py --quantize int8-vnni`), and this CPU has no VNNI \
         (AVX-512 VNNI or AVX-VNNI): ONNX Runtime's kernel adds pairs of u8 x s8 products in saturating 16-bit integers here, so \
         probabilities drift without an error (ESM-2 8M on an AVX2 CPU: mean |Δp| 0.14 against float32, 25% of labels flipped)",
        if signed_matmuls == 1 { " has" } else { "s have" }
    )
}

pub const SATURATION_FIX: &str = "re-export with `export_onnx.py --quantize int8` (unsigned reduce_range weights: exact on this CPU and as fast), \
run where the CPU has VNNI, or pass --allow-int8-saturation (config: allow_int8_saturation: true) to score anyway";

/// How many quantized MatMuls in the model file take a signed 8-bit weight initializer.
pub fn signed_int8_matmuls(path: &Path) -> Result<usize, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut stream = Stream {
        reader: BufReader::new(file),
        position: 0,
    };
    let mut found = Found::default();
    stream
        .fields(len, |stream, number, value| {
            if let (tag::MODEL_GRAPH, Value::Bytes(len)) = (number, value) {
                graph(stream, len, &mut found)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(found.count())
}

#[derive(Default)]
struct Found {
    /// The weight input of every quantized MatMul.
    weights: Vec<String>,
    int8_initializers: HashSet<String>,
}

impl Found {
    fn count(&self) -> usize {
        self.weights
            .iter()
            .filter(|w| self.int8_initializers.contains(*w))
            .count()
    }
}

fn graph<R: Read + Seek>(stream: &mut Stream<R>, len: u64, found: &mut Found) -> io::Result<()> {
    stream.fields(len, |stream, number, value| {
        let Value::Bytes(len) = value else {
            return Ok(());
        };
        if number == tag::GRAPH_NODE && len <= MAX_NODE_BYTES {
            let node = NodeView::decode(stream.read(len)?.as_slice()).map_err(invalid)?;
            let weight = WEIGHT_INPUT
                .iter()
                .find(|(op, _)| *op == node.op_type)
                .and_then(|&(_, k)| node.input.get(k));
            found.weights.extend(weight.cloned());
        } else if number == tag::GRAPH_INITIALIZER {
            let (mut data_type, mut name) = (None, None);
            stream.fields(len, |stream, number, value| {
                match (number, value) {
                    (tag::TENSOR_DATA_TYPE, Value::Varint(v)) => data_type = Some(v),
                    (tag::TENSOR_NAME, Value::Bytes(len)) => {
                        name = Some(String::from_utf8(stream.read(len)?).map_err(invalid)?)
                    }
                    _ => {}
                }
                Ok(())
            })?;
            if let (Some(INT8), Some(name)) = (data_type, name) {
                found.int8_initializers.insert(name);
            }
        }
        Ok(())
    })
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A field's value as [`Stream::fields`] hands it over: a varint read, or the length of bytes not yet read.
#[derive(Clone, Copy)]
enum Value {
    Varint(u64),
    Bytes(u64),
}

/// A protobuf message read from a file in order, one field at a time.
struct Stream<R> {
    reader: BufReader<R>,
    position: u64,
}

impl<R: Read + Seek> Stream<R> {
    /// Calls `visit` for every field of the message of `len` bytes that starts here. A length-delimited
    /// field's bytes are left to `visit` to read or not: whatever it leaves is skipped by seeking.
    fn fields(
        &mut self,
        len: u64,
        mut visit: impl FnMut(&mut Self, u32, Value) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = self.position + len;
        while self.position < end {
            let key = self.varint()?;
            let number = u32::try_from(key >> 3).map_err(invalid)?;
            let field_end = match key & 7 {
                0 => {
                    let v = self.varint()?;
                    visit(self, number, Value::Varint(v))?;
                    self.position
                }
                1 => self.position + 8,
                5 => self.position + 4,
                2 => {
                    let len = self.varint()?;
                    let field_end = self.position.checked_add(len).filter(|&e| e <= end);
                    let field_end = field_end.ok_or_else(|| {
                        invalid(format!("field {number} says {len} bytes, past its message"))
                    })?;
                    visit(self, number, Value::Bytes(len))?;
                    field_end
                }
                other => return Err(invalid(format!("field {number} has wire type {other}"))),
            };
            if self.position > field_end || field_end > end {
                return Err(invalid(format!("field {number} runs past its message")));
            }
            self.skip_to(field_end)?;
        }
        Ok(())
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.reader.read_exact(&mut b)?;
        self.position += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("a varint runs past 10 bytes"))
    }

    fn read(&mut self, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).map_err(invalid)?];
        self.reader.read_exact(&mut buf)?;
        self.position += len;
        Ok(buf)
    }

    fn skip_to(&mut self, end: u64) -> io::Result<()> {
        let by = i64::try_from(end - self.position).map_err(invalid)?;
        self.reader.seek_relative(by)?;
        self.position = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::tests::{model_bytes, node};
    use crate::model::protobuf::{put_bytes, put_varint};

    fn initializer(name: &str, data_type: u64, raw: &[u8]) -> Vec<u8> {
        let mut tensor = Vec::new();
        put_varint(&mut tensor, tag::TENSOR_DIMS, raw.len() as u64);
        put_varint(&mut tensor, tag::TENSOR_DATA_TYPE, data_type);
        put_bytes(&mut tensor, tag::TENSOR_NAME, name.as_bytes());
        put_bytes(&mut tensor, tag::TENSOR_RAW_DATA, raw);
        let mut field = Vec::new();
        put_bytes(&mut field, tag::GRAPH_INITIALIZER, &tensor);
        field
    }

    fn count(nodes: &[Vec<u8>], initializers: &[Vec<u8>]) -> Result<usize, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model_bytes(nodes, &initializers.concat())).unwrap();
        signed_int8_matmuls(&path)
    }

    #[test]
    fn counts_quantized_matmuls_whose_weight_initializer_is_signed_int8() {
        let nodes = [
            node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xz"]),
            node("MatMulInteger", &["xq", "w_signed", "xz", "wz"], &["y1"]),
            node("MatMulInteger", &["xq", "w_unsigned", "xz", "wz2"], &["y2"]),
            node("DynamicQuantizeMatMul", &["x", "w_signed2", "s"], &["y3"]),
            node(
                "QLinearMatMul",
                &["xq", "xs", "xz", "w_signed3", "ws", "wz", "ys", "yz"],
                &["y4"],
            ),
            // A float MatMul on a signed tensor is not the u8 x s8 kernel.
            node("MatMul", &["x", "w_signed"], &["y5"]),
        ];
        let weights = 4096;
        let initializers = [
            initializer("w_signed", INT8, &vec![1u8; weights]),
            initializer("w_unsigned", 2, &vec![1u8; weights]),
            initializer("w_signed2", INT8, &[1, 2, 3]),
            initializer("w_signed3", INT8, &[1]),
        ];
        assert_eq!(count(&nodes, &initializers), Ok(3));
    }

    #[test]
    fn float_and_unsigned_models_have_none() {
        let nodes = [
            node("MatMul", &["x", "w"], &["y"]),
            node("MatMulInteger", &["xq", "wq", "xz", "wz"], &["y2"]),
        ];
        let initializers = [initializer("w", 1, &[0; 16]), initializer("wq", 2, &[0; 4])];
        assert_eq!(count(&nodes, &initializers), Ok(0));
    }

    #[test]
    fn a_cut_file_is_an_error_not_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.onnx");
        let mut bytes = model_bytes(
            &[node("MatMulInteger", &["a", "w", "az", "wz"], &["y"])],
            &initializer("w", INT8, &[7; 64]),
        );
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, bytes).unwrap();
        assert!(signed_int8_matmuls(&path).is_err());
    }

    #[test]
    fn only_the_cpu_provider_on_a_cpu_without_vnni_saturates() {
        assert!(saturates(Provider::Cpu, false, 1));
        assert!(!saturates(Provider::Cpu, true, 24));
        assert!(!saturates(Provider::Cpu, false, 0));
        assert!(!saturates(Provider::Cuda, false, 24));
        assert!(!saturates(Provider::CoreMl, false, 24));
    }
}
