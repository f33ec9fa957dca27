//! The model's node list as esmbench reads it: minimal ONNX views over the serialized graph, the
//! attention layers found in it, and the advice for the slow per-layer mask that transformers' exporter
//! writes.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::protobuf::{fields, Field};

/// Files larger than this are not read for advice or rewriting: the whole file is held in memory while
/// ONNX Runtime loads it too, and in big models the mask is a small share of the time anyway.
pub const MAX_READ_BYTES: u64 = 64 << 20;

/// onnx.proto field numbers that esmbench reads or edits.
pub mod tag {
    pub const MODEL_IR_VERSION: u32 = 1;
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_OPSET_IMPORT: u32 = 8;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_NAME: u32 = 2;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_INPUT: u32 = 11;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const GRAPH_VALUE_INFO: u32 = 13;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTRIBUTE_NAME: u32 = 1;
    pub const ATTRIBUTE_INT: u32 = 3;
    pub const ATTRIBUTE_TYPE: u32 = 20;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_RAW_DATA: u32 = 9;
    pub const VALUE_INFO_NAME: u32 = 1;
}

/// The fields of a NodeProto that the analysis needs; prost skips the rest.
#[derive(Clone, PartialEq, Message)]
pub struct NodeView {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeView>,
}

/// AttributeProto's type only (5 = GRAPH, 10 = GRAPHS mark a node with subgraphs).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeView {
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// A node: its serialized bytes (the NodeProto, without the graph's key and length) and its view.
pub struct Node<'a> {
    pub bytes: &'a [u8],
    pub view: NodeView,
}

/// A serialized ModelProto split into fields, with its graph's fields and decoded nodes.
pub struct ModelFields<'a> {
    pub model: Vec<Field<'a>>,
    pub graph: Vec<Field<'a>>,
    pub nodes: Vec<Node<'a>>,
}

/// Splits a serialized ModelProto; an error if it does not decode or has not exactly one graph.
pub fn read(bytes: &[u8]) -> Result<ModelFields<'_>, String> {
    let model = fields(bytes)?;
    let mut graphs = model.iter().filter(|f| f.number == tag::MODEL_GRAPH);
    let (Some(graph), None) = (graphs.next(), graphs.next()) else {
        return Err("the model does not have exactly one graph".into());
    };
    let graph = fields(graph.value)?;
    let nodes = graph
        .iter()
        .filter(|f| f.number == tag::GRAPH_NODE)
        .map(|f| {
            NodeView::decode(f.value)
                .map(|view| Node {
                    bytes: f.value,
                    view,
                })
                .map_err(|e| format!("a node does not decode: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ModelFields {
        model,
        graph,
        nodes,
    })
}

/// Which node produces each tensor name.
pub fn producers<'n>(nodes: &'n [Node<'_>]) -> HashMap<&'n str, usize> {
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.view.output.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// The indices of the nodes upstream of the tensors `names` (their producers included).
pub fn ancestors(
    names: &[&str],
    nodes: &[Node<'_>],
    producers: &HashMap<&str, usize>,
) -> Vec<usize> {
    let mut seen_names = HashSet::new();
    let mut found = HashSet::new();
    let mut stack: Vec<&str> = names.to_vec();
    while let Some(current) = stack.pop() {
        if !seen_names.insert(current) {
            continue;
        }
        if let Some(&index) = producers.get(current) {
            if found.insert(index) {
                stack.extend(nodes[index].view.input.iter().map(String::as_str));
            }
        }
    }
    let mut found: Vec<usize> = found.into_iter().collect();
    found.sort_unstable();
    found
}

/// One Softmax(Add(scores, mask)): the Add node, which of its inputs is the mask, and whether the mask
/// passes through an Expand (transformers' exporter materialises a [batch, 1, queries, keys] mask for
/// every layer so).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionLayer {
    pub add: usize,
    pub mask_input: usize,
    pub mask: String,
    pub expanded: bool,
}

/// Every Softmax in the graph as an attention layer, or why it is not one (the scores are the Add's
/// side with a MatMul upstream, the mask the side without).
pub fn attention_layers(nodes: &[Node<'_>]) -> Vec<Result<AttentionLayer, String>> {
    let producers = producers(nodes);
    let upstream_has = |name: &str, ops: &[&str]| {
        ancestors(&[name], nodes, &producers)
            .iter()
            .any(|&i| ops.contains(&nodes[i].view.op_type.as_str()))
    };
    nodes
        .iter()
        .filter(|n| n.view.op_type == "Softmax")
        .map(|softmax| {
            let describe = || format!("softmax {:?}", softmax.view.name);
            let add = softmax
                .view
                .input
                .first()
                .and_then(|i| producers.get(i.as_str()))
                .copied()
                .filter(|&a| nodes[a].view.op_type == "Add" && nodes[a].view.input.len() == 2)
                .ok_or_else(|| format!("{} does not take Add(scores, mask)", describe()))?;
            let masks: Vec<usize> = (0..2)
                .filter(|&k| !upstream_has(&nodes[add].view.input[k], &["MatMul", "Gemm"]))
                .collect();
            let [mask_input] = masks[..] else {
                return Err(format!(
                    "{}: cannot tell its scores from its mask",
                    describe()
                ));
            };
            let mask = nodes[add].view.input[mask_input].clone();
            Ok(AttentionLayer {
                add,
                mask_input,
                expanded: upstream_has(&mask, &["Expand"]),
                mask,
            })
        })
        .collect()
}

/// How many attention layers of the serialized model add an expanded mask; None if it does not decode.
pub fn expanded_masks(bytes: &[u8]) -> Option<usize> {
    let model = read(bytes).ok()?;
    Some(
        attention_layers(&model.nodes)
            .iter()
            .filter(|layer| layer.as_ref().is_ok_and(|l| l.expanded))
            .count(),
    )
}

/// The model file's bytes, when it can be read and is at most [`MAX_READ_BYTES`]; None otherwise (ONNX
/// Runtime reports unreadable files itself).
pub fn read_small(path: &Path) -> Option<Vec<u8>> {
    if std::fs::metadata(path).ok()?.len() > MAX_READ_BYTES {
        return None;
    }
    std::fs::read(path).ok()
}

/// Advice for the model file at `path`, for a run told not to rewrite it at load (`--no-graph-rewrite`); None
/// when it has no known slow pattern, cannot be read, or is too large to scan.
pub fn advice(path: &Path) -> Option<String> {
    advice_for(path, &read_small(path)?, true)
}

/// [`advice`] for the model at `path` whose bytes are already read; `in_a_run` when the run printing it reads
/// the file as it is, else (`esmbench inspect`) what the runs would do.
pub fn advice_for(path: &Path, bytes: &[u8], in_a_run: bool) -> Option<String> {
    let layers = expanded_masks(bytes)?;
    let runs = if in_a_run {
        "this run reads it as it is (--no-graph-rewrite, or `graph_rewrite: false`); without that, esmbench \
rewrites it in memory to add one broadcast key mask when a probe shows the rewrite exact"
    } else {
        "`esmbench test`, `embed` and `fit` rewrite it in memory to add one broadcast key mask when a probe shows \
the rewrite exact (their note says which; --no-graph-rewrite turns it off)"
    };
    (layers > 0).then(|| {
        format!(
            "{layers} attention {} a [batch, 1, queries, keys] mask expanded for each layer (transformers' exporter). \
             {runs}; `python scripts/simplify_attention_mask.py {} OUT.onnx` writes the rewritten file for other tools, \
             and only if the outputs stay the same. The rewrite made ESM-2 8M 1.05x to 1.18x and the tiny model 1.38x \
             to 1.45x faster on CPU",
            if layers == 1 { "layer adds" } else { "layers add" },
            path.display(),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::protobuf::put_bytes;

    /// A NodeProto with the given op, inputs and outputs, serialized.
    pub fn node(op_type: &str, input: &[&str], output: &[&str]) -> Vec<u8> {
        NodeView {
            input: input.iter().map(|s| s.to_string()).collect(),
            output: output.iter().map(|s| s.to_string()).collect(),
            name: format!("{op_type}_{}", output.first().copied().unwrap_or("")),
            op_type: op_type.into(),
            attribute: Vec::new(),
        }
        .encode_to_vec()
    }

    /// A ModelProto whose graph holds `nodes` and the `extra` graph fields (already serialized).
    pub fn model_bytes(nodes: &[Vec<u8>], extra: &[u8]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            put_bytes(&mut graph, tag::GRAPH_NODE, n);
        }
        graph.extend_from_slice(extra);
        let mut model = Vec::new();
        put_bytes(&mut model, tag::MODEL_GRAPH, &graph);
        model
    }

    /// One attention layer: scores from a MatMul, plus a mask built from `attention_mask` through `mask_ops`.
    pub fn layer(nodes: &mut Vec<Vec<u8>>, k: usize, mask_ops: &[&str]) {
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

    fn model_file(dir: &Path, nodes: &[Vec<u8>]) -> std::path::PathBuf {
        let path = dir.join("model.onnx");
        std::fs::write(&path, model_bytes(nodes, &[])).expect("write model");
        path
    }

    #[test]
    fn an_expanded_mask_per_layer_is_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for k in 0..3 {
            layer(&mut nodes, k, &["Cast", "Expand", "Where"]);
        }
        let path = model_file(dir.path(), &nodes);
        let advice = advice(&path).expect("advice");
        assert!(advice.starts_with("3 attention layers"), "{advice}");
        // Printed by a run told not to rewrite: it says so, rather than that runs rewrite it.
        assert!(
            advice.contains("this run reads it as it is (--no-graph-rewrite"),
            "{advice}"
        );
        let bytes = std::fs::read(&path).unwrap();
        let inspected = advice_for(&path, &bytes, false).expect("advice");
        assert!(
            inspected.contains("--no-graph-rewrite turns it off"),
            "{inspected}"
        );
        // Into a file the user names: the model's own folder may be read-only.
        let command = format!(
            "python scripts/simplify_attention_mask.py {} OUT.onnx",
            path.display()
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
        assert_eq!(advice(&model_file(dir.path(), &nodes)), None);
    }

    #[test]
    fn files_that_are_not_a_model_or_not_there_give_no_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.onnx");
        std::fs::write(&path, b"not an onnx file").expect("write");
        assert_eq!(advice(&path), None);
        assert_eq!(advice(&dir.path().join("missing.onnx")), None);
    }

    #[test]
    fn a_softmax_without_an_add_is_reported_not_skipped() {
        let mut nodes = Vec::new();
        layer(&mut nodes, 0, &["Cast", "Expand", "Where"]);
        nodes.push(node("Softmax", &["s0"], &["lonely"]));
        let bytes = model_bytes(&nodes, &[]);
        let model = read(&bytes).expect("read");
        let layers = attention_layers(&model.nodes);
        assert_eq!(layers.len(), 2);
        let first = layers[0].as_ref().expect("first layer");
        assert_eq!(
            (first.mask.as_str(), first.mask_input, first.expanded),
            ("m0_2", 1, true)
        );
        let err = layers[1].as_ref().expect_err("no Add");
        assert!(
            err.contains("\"Softmax_lonely\" does not take Add(scores, mask)"),
            "{err}"
        );
    }
}
