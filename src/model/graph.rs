//! Advice from the model's node list: graph patterns known to be slow on ONNX Runtime, with the fix.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

/// Files larger than this are not read for advice: decoding needs the whole file in memory while ONNX
/// Runtime loads it too (ESM-2 8M's 30 MB file raised peak RSS by 4 MB), and in big models the mask is
/// a small share of the time anyway.
const MAX_SCANNED_BYTES: u64 = 64 << 20;

// Only the ONNX fields the scan needs (onnx.proto: ModelProto.graph = 7, GraphProto.node = 1,
// NodeProto.input = 1, output = 2, op_type = 4); prost skips every other field, weights included.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
}

/// Whether any node upstream of `name` (itself included) is one of `ops`.
fn has_ancestor(name: &str, producers: &HashMap<&str, &NodeProto>, ops: &[&str]) -> bool {
    let mut seen = HashSet::new();
    let mut stack = vec![name];
    while let Some(current) = stack.pop() {
        if !seen.insert(current) {
            continue;
        }
        if let Some(node) = producers.get(current) {
            if ops.contains(&node.op_type.as_str()) {
                return true;
            }
            stack.extend(node.input.iter().map(String::as_str));
        }
    }
    false
}

/// Softmax(Add(scores, mask)) whose mask (the side without a MatMul upstream) goes through an Expand:
/// transformers' exporter path materialises a [batch, 1, queries, keys] mask for every layer so, and
/// often guards the softmax with Where(IsNaN) too.
fn expanded_masks(graph: &GraphProto) -> usize {
    let producers: HashMap<&str, &NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Softmax")
        .filter_map(|softmax| producers.get(softmax.input.first()?.as_str()))
        .filter(|add| add.op_type == "Add")
        .filter(|add| {
            let masks: Vec<&String> = add
                .input
                .iter()
                .filter(|i| !has_ancestor(i, &producers, &["MatMul", "Gemm"]))
                .collect();
            masks.len() == 1 && has_ancestor(masks[0], &producers, &["Expand"])
        })
        .count()
}

/// How many attention layers of the serialized ModelProto in `bytes` add an expanded mask; None if it
/// does not decode.
fn expanded_masks_in(bytes: &[u8]) -> Option<usize> {
    Some(expanded_masks(&ModelProto::decode(bytes).ok()?.graph?))
}

/// Advice for the model file at `path`; None when it has no known slow pattern, cannot be read, or is
/// too large to scan (ONNX Runtime reports unreadable files itself).
pub fn advice(path: &Path) -> Option<String> {
    if std::fs::metadata(path).ok()?.len() > MAX_SCANNED_BYTES {
        return None;
    }
    let layers = expanded_masks_in(&std::fs::read(path).ok()?)?;
    (layers > 0).then(|| {
        format!(
            "{layers} attention {} a [batch, 1, queries, keys] mask expanded for each layer (transformers' exporter). \
             `python scripts/simplify_attention_mask.py {} {}` rewrites the graph to add one broadcast key mask, and writes the file \
             only if the outputs stay the same; that made ESM-2 8M 1.09x and the tiny model 1.45x faster on CPU",
            if layers == 1 { "layer adds" } else { "layers add" },
            path.display(),
            path.with_extension("simplified.onnx").display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op_type: &str, input: &[&str], output: &[&str]) -> NodeProto {
        NodeProto {
            input: input.iter().map(|s| s.to_string()).collect(),
            output: output.iter().map(|s| s.to_string()).collect(),
            op_type: op_type.into(),
        }
    }

    fn model_file(dir: &Path, nodes: Vec<NodeProto>) -> std::path::PathBuf {
        let path = dir.join("model.onnx");
        let bytes = ModelProto {
            graph: Some(GraphProto { node: nodes }),
        }
        .encode_to_vec();
        std::fs::write(&path, bytes).expect("write model");
        path
    }

    /// One attention layer: scores from a MatMul, plus a mask built from `attention_mask` through `mask_ops`.
    fn layer(nodes: &mut Vec<NodeProto>, k: usize, mask_ops: &[&str]) {
        let mut previous = "attention_mask".to_string();
        for (i, op) in mask_ops.iter().enumerate() {
            let out = format!("m{k}_{i}");
            nodes.push(node(op, &[&previous], &[&out]));
            previous = out;
        }
        let (scores, sum, p) = (format!("s{k}"), format!("a{k}"), format!("p{k}"));
        nodes.push(node("MatMul", &["q", "k"], &[&scores]));
        nodes.push(node("Add", &[&scores, &previous], &[&sum]));
        nodes.push(node("Softmax", &[&sum], &[&p]));
    }

    #[test]
    fn an_expanded_mask_per_layer_is_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for k in 0..3 {
            layer(&mut nodes, k, &["Cast", "Expand", "Where"]);
        }
        let path = model_file(dir.path(), nodes);
        let advice = advice(&path).expect("advice");
        assert!(advice.starts_with("3 attention layers"), "{advice}");
        let command = format!(
            "python scripts/simplify_attention_mask.py {} {}",
            path.display(),
            dir.path().join("model.simplified.onnx").display()
        );
        assert!(advice.contains(&command), "{advice}");
    }

    #[test]
    fn a_broadcast_key_mask_gives_no_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for k in 0..3 {
            layer(&mut nodes, k, &["Cast", "Unsqueeze", "Sub", "Mul"]);
        }
        // An Expand on the scores' side is not the mask.
        nodes.push(node("Expand", &["x"], &["q"]));
        assert_eq!(advice(&model_file(dir.path(), nodes)), None);
    }

    #[test]
    fn files_that_are_not_a_model_or_not_there_give_no_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.onnx");
        std::fs::write(&path, b"not an onnx file").expect("write");
        assert_eq!(advice(&path), None);
        assert_eq!(advice(&dir.path().join("missing.onnx")), None);
    }
}
