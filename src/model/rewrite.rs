//! The attention-mask rewrite done at load, in memory: transformers' exporter builds a
//! [batch, 1, queries, keys] mask inside every layer (Expand/And/Where) and guards each softmax with
//! Where(IsNaN(p), 0, p); on ONNX Runtime's CPU provider those elementwise nodes cost about a quarter of
//! a small ESM graph's time. Every Softmax(Add(scores, mask)) is given one key mask computed once,
//! (1 - attention_mask[:, None, None, :]) * float32 min, the NaN guards are dropped (esmbench never sends
//! a row without an attended key: <cls> and <eos> are always there), and nodes nothing uses are removed.
//!
//! The edit works on protobuf fields, so the weights and every field it does not touch are copied byte
//! for byte. Before the rewritten graph is used, a probe model (the original mask nodes and the new
//! ones, no weights on the scores' path) is run on padded batches and every layer's original mask must
//! match the new one: exactly 0 at attended keys, float32 min or -inf at padded ones
//! ([`check_probe_output`]); otherwise the file runs as it is.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::graph::{self, tag, AttentionLayer, ModelFields, Node};
use super::protobuf::{fields, put_bytes, put_header, put_varint, Field};

/// The new key mask's tensor name; the helper tensors are named under it.
pub const KEY_MASK: &str = "esmbench_additive_key_mask";

/// Initializers the probe model may carry (the mask path of an ESM export reads only the embedding
/// table's shape, a few KB to MB); a graph needing more is left as it is.
const MAX_PROBE_INITIALIZER_BYTES: usize = 32 << 20;

/// ONNX's TensorProto data types used here.
const FLOAT: u64 = 1;
const INT64: u64 = 7;

/// The rewritten model, and the probe that must pass before it is used.
pub struct Rewrite {
    /// The serialized ModelProto with one broadcast key mask.
    pub model: Vec<u8>,
    /// A serialized ModelProto: inputs as the model's, outputs [`Rewrite::probe_outputs`].
    pub probe: Vec<u8>,
    /// The original masks, one per distinct tensor, in layer order.
    pub masks: Vec<String>,
    pub layers: usize,
    pub guards: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// The model file's folder, where ONNX Runtime finds any external data files its initializers name
    /// (the `session.model_external_initializers_file_folder_path` of the model's and the probe's
    /// sessions); None for the embedded model, whose weights are all in its bytes.
    pub weights_folder: Option<String>,
}

impl std::fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rewrite({})", self.summary())
    }
}

impl Rewrite {
    /// What the probe outputs: the original masks, then the new key mask.
    pub fn probe_outputs(&self) -> impl Iterator<Item = &str> {
        self.masks
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(KEY_MASK))
    }

    /// One line for the run's log and report.
    pub fn summary(&self) -> String {
        format!(
            "{} per-layer attention {} one broadcast key mask, {} NaN guard{} removed, nodes {} -> {}",
            self.layers,
            if self.layers == 1 { "mask ->" } else { "masks ->" },
            self.guards,
            if self.guards == 1 { "" } else { "s" },
            self.nodes_before,
            self.nodes_after
        )
    }
}

#[derive(Clone, PartialEq, Message)]
struct OpsetView {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct TensorView {
    #[prost(string, tag = "8")]
    name: String,
    /// 1 = EXTERNAL: the weights live in another file, next to the model.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
struct NamedView {
    #[prost(string, tag = "1")]
    name: String,
}

/// A node of the graph being written: its bytes and the names it reads and writes.
struct Written {
    bytes: Vec<u8>,
    input: Vec<String>,
    output: Vec<String>,
}

fn encode_node(op_type: &str, input: &[&str], output: &str, cast_to: Option<u64>) -> Written {
    let mut bytes = Vec::new();
    for i in input {
        put_bytes(&mut bytes, tag::NODE_INPUT, i.as_bytes());
    }
    put_bytes(&mut bytes, tag::NODE_OUTPUT, output.as_bytes());
    put_bytes(&mut bytes, tag::NODE_NAME, output.as_bytes());
    put_bytes(&mut bytes, tag::NODE_OP_TYPE, op_type.as_bytes());
    if let Some(to) = cast_to {
        let mut attribute = Vec::new();
        put_bytes(&mut attribute, tag::ATTRIBUTE_NAME, b"to");
        put_varint(&mut attribute, tag::ATTRIBUTE_INT, to);
        put_varint(&mut attribute, tag::ATTRIBUTE_TYPE, 2); // INT
        put_bytes(&mut bytes, tag::NODE_ATTRIBUTE, &attribute);
    }
    Written {
        bytes,
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
    }
}

fn encode_tensor(name: &str, data_type: u64, dims: &[u64], raw: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for &d in dims {
        put_varint(&mut bytes, tag::TENSOR_DIMS, d);
    }
    put_varint(&mut bytes, tag::TENSOR_DATA_TYPE, data_type);
    put_bytes(&mut bytes, tag::TENSOR_NAME, name.as_bytes());
    put_bytes(&mut bytes, tag::TENSOR_RAW_DATA, raw);
    bytes
}

fn helper(name: &str) -> String {
    format!("{KEY_MASK}/{name}")
}

/// The nodes and initializers that compute the key mask from `attention_mask`.
fn key_mask_nodes() -> (Vec<Written>, Vec<(String, Vec<u8>)>) {
    let [float, axes, keys, one, padding, min] =
        ["float", "axes", "keys", "one", "padding", "min"].map(helper);
    let nodes = vec![
        encode_node("Cast", &["attention_mask"], &float, Some(FLOAT)),
        encode_node("Unsqueeze", &[&float, &axes], &keys, None),
        encode_node("Sub", &[&one, &keys], &padding, None),
        encode_node("Mul", &[&padding, &min], KEY_MASK, None),
    ];
    let axes_bytes: Vec<u8> = [1i64, 2].iter().flat_map(|a| a.to_le_bytes()).collect();
    let initializers = vec![
        (axes.clone(), encode_tensor(&axes, INT64, &[2], &axes_bytes)),
        (
            one.clone(),
            encode_tensor(&one, FLOAT, &[], &1f32.to_le_bytes()),
        ),
        (
            min.clone(),
            encode_tensor(&min, FLOAT, &[], &f32::MIN.to_le_bytes()),
        ),
    ];
    (nodes, initializers)
}

/// The node's bytes with the inputs at the given positions renamed; every other field copied as it was.
fn rename_inputs(node: &Node<'_>, rename: &dyn Fn(usize, &str) -> Option<String>) -> Written {
    let mut input = node.view.input.clone();
    for (k, name) in input.iter_mut().enumerate() {
        if let Some(new) = rename(k, name) {
            *name = new;
        }
    }
    if input == node.view.input {
        return Written {
            bytes: node.bytes.to_vec(),
            input,
            output: node.view.output.clone(),
        };
    }
    let mut bytes = Vec::with_capacity(node.bytes.len() + 64);
    let mut position = 0;
    // A node that decoded has well-formed fields.
    for field in fields(node.bytes).unwrap_or_default() {
        if field.number == tag::NODE_INPUT {
            put_bytes(&mut bytes, tag::NODE_INPUT, input[position].as_bytes());
            position += 1;
        } else {
            bytes.extend_from_slice(field.raw);
        }
    }
    Written {
        bytes,
        input,
        output: node.view.output.clone(),
    }
}

fn names_of<'a>(graph: &'a [Field<'a>], number: u32) -> Result<Vec<String>, String> {
    graph
        .iter()
        .filter(|f| f.number == number)
        .map(|f| {
            NamedView::decode(f.value)
                .map(|v| v.name)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Plans the rewrite of a serialized ModelProto: None when no layer adds an expanded mask (nothing to
/// gain), an error saying why when the file does not decode, or the graph has the slow mask but not a shape
/// this rewrite can prove.
pub fn plan(bytes: &[u8]) -> Result<Option<Rewrite>, String> {
    plan_read(&graph::read(bytes)?)
}

/// [`plan`] for a model already split by [`graph::read`].
pub fn plan_read(model: &ModelFields<'_>) -> Result<Option<Rewrite>, String> {
    let layers: Vec<Result<AttentionLayer, String>> = graph::attention_layers(&model.nodes);
    if !layers.iter().any(|l| l.as_ref().is_ok_and(|l| l.expanded)) {
        return Ok(None);
    }
    let layers: Vec<AttentionLayer> = layers.into_iter().collect::<Result<_, _>>()?;

    let ir_version = model
        .model
        .iter()
        .find(|f| f.number == tag::MODEL_IR_VERSION)
        .and_then(|f| prost::encoding::decode_varint(&mut &f.value[..]).ok())
        .unwrap_or(0);
    if ir_version < 4 {
        return Err(format!(
            "IR version {ir_version} needs initializers listed as inputs (4 or later is rewritten)"
        ));
    }
    let opset = model
        .model
        .iter()
        .filter(|f| f.number == tag::MODEL_OPSET_IMPORT)
        .filter_map(|f| OpsetView::decode(f.value).ok())
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < 13 {
        return Err(format!(
            "opset {opset} (the rewrite writes Unsqueeze with axes as an input: opset 13 or later)"
        ));
    }
    if let Some(n) = model.nodes.iter().find(|n| {
        ["If", "Loop", "Scan"].contains(&n.view.op_type.as_str())
            || n.view
                .attribute
                .iter()
                .any(|a| a.r#type == 5 || a.r#type == 10)
    }) {
        return Err(format!(
            "node {:?} ({}) has a subgraph, which may read tensors the rewrite would remove",
            n.view.name, n.view.op_type
        ));
    }
    let initializers: Vec<(Field<'_>, TensorView)> = model
        .graph
        .iter()
        .filter(|f| f.number == tag::GRAPH_INITIALIZER)
        .map(|f| {
            TensorView::decode(f.value)
                .map(|t| (*f, t))
                .map_err(|e| format!("an initializer does not decode: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let inputs = names_of(&model.graph, tag::GRAPH_INPUT)?;
    let outputs = names_of(&model.graph, tag::GRAPH_OUTPUT)?;
    for needed in ["input_ids", "attention_mask"] {
        if !inputs.iter().any(|i| i == needed) {
            return Err(format!("the graph has no {needed} input"));
        }
    }
    let taken: HashSet<&str> = model
        .nodes
        .iter()
        .flat_map(|n| n.view.input.iter().chain(&n.view.output))
        .map(String::as_str)
        .chain(initializers.iter().map(|(_, t)| t.name.as_str()))
        .collect();
    if taken.iter().any(|name| name.starts_with(KEY_MASK)) {
        return Err(format!("the graph already has a tensor named {KEY_MASK}*"));
    }

    // Where(IsNaN(p), 0, p) -> p, for p a softmax output only: a softmax row with an attended key has
    // no NaN, so there the guard passes p through unchanged.
    let producers = graph::producers(&model.nodes);
    let op_of = |name: &str| producers.get(name).map(|&i| &model.nodes[i].view);
    let mut guards: HashMap<String, String> = HashMap::new();
    for n in &model.nodes {
        let v = &n.view;
        if v.op_type != "Where" || v.input.len() != 3 || v.output.len() != 1 {
            continue;
        }
        let guarded = &v.input[2];
        let is_nan_of_guarded = op_of(&v.input[0])
            .is_some_and(|c| c.op_type == "IsNaN" && c.input.first() == Some(guarded));
        if is_nan_of_guarded && op_of(guarded).is_some_and(|p| p.op_type == "Softmax") {
            guards.insert(v.output[0].clone(), guarded.clone());
        }
    }
    if let Some(out) = outputs.iter().find(|o| guards.contains_key(*o)) {
        return Err(format!("a NaN guard writes the graph output {out:?}"));
    }

    let mask_of_add: HashMap<usize, usize> = layers.iter().map(|l| (l.add, l.mask_input)).collect();
    let (new_nodes, new_initializers) = key_mask_nodes();
    let mut written: Vec<Written> = new_nodes;
    for (index, node) in model.nodes.iter().enumerate() {
        let mask_input = mask_of_add.get(&index).copied();
        written.push(rename_inputs(node, &|k, name| {
            if Some(k) == mask_input {
                Some(KEY_MASK.to_string())
            } else {
                guards.get(name).cloned()
            }
        }));
    }
    // Keep only what feeds an output: walk back from the outputs through the producers.
    let producer_of: HashMap<&str, usize> = written
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut alive = vec![false; written.len()];
    let mut pending: Vec<&str> = outputs.iter().map(String::as_str).collect();
    while let Some(name) = pending.pop() {
        if let Some(&i) = producer_of.get(name) {
            if !alive[i] {
                alive[i] = true;
                pending.extend(written[i].input.iter().map(String::as_str));
            }
        }
    }
    let mut keep = alive.into_iter();
    written.retain(|_| keep.next().unwrap_or(false));
    // An initializer that is also a graph input stays even if unread: dropping it would make the input
    // one the caller must feed.
    let kept_initializers: HashSet<&str> = written
        .iter()
        .flat_map(|w| w.input.iter().map(String::as_str))
        .chain(outputs.iter().map(String::as_str))
        .chain(inputs.iter().map(String::as_str))
        .collect();
    let produced: HashSet<&str> = written
        .iter()
        .flat_map(|w| w.output.iter().map(String::as_str))
        .collect();

    // Everything but the original weights goes into a small buffer; the weights are copied once, straight
    // into the model's bytes.
    let mut graph_bytes = Vec::new();
    for field in &model.graph {
        match field.number {
            tag::GRAPH_NODE | tag::GRAPH_INITIALIZER => {}
            tag::GRAPH_VALUE_INFO => {
                let name = NamedView::decode(field.value)
                    .map(|v| v.name)
                    .unwrap_or_default();
                if produced.contains(name.as_str()) {
                    graph_bytes.extend_from_slice(field.raw);
                }
            }
            _ => graph_bytes.extend_from_slice(field.raw),
        }
    }
    for w in &written {
        put_bytes(&mut graph_bytes, tag::GRAPH_NODE, &w.bytes);
    }
    for (_, tensor) in &new_initializers {
        put_bytes(&mut graph_bytes, tag::GRAPH_INITIALIZER, tensor);
    }
    let weights: Vec<&[u8]> = initializers
        .iter()
        .filter(|(_, tensor)| kept_initializers.contains(tensor.name.as_str()))
        .map(|(field, _)| field.raw)
        .collect();
    let graph_len = graph_bytes.len() + weights.iter().map(|w| w.len()).sum::<usize>();
    let original_len: usize = model.model.iter().map(|f| f.raw.len()).sum();
    let mut model_bytes = Vec::with_capacity(original_len + graph_bytes.len());
    for field in &model.model {
        if field.number == tag::MODEL_GRAPH {
            put_header(&mut model_bytes, tag::MODEL_GRAPH, graph_len);
            model_bytes.extend_from_slice(&graph_bytes);
            for w in &weights {
                model_bytes.extend_from_slice(w);
            }
        } else {
            model_bytes.extend_from_slice(field.raw);
        }
    }

    let masks: Vec<String> = layers.iter().fold(Vec::new(), |mut masks, l| {
        if !masks.contains(&l.mask) {
            masks.push(l.mask.clone());
        }
        masks
    });
    let probe = probe_model(model, &masks, &initializers, &inputs)?;
    Ok(Some(Rewrite {
        model: model_bytes,
        probe,
        masks,
        layers: layers.len(),
        guards: guards.len(),
        nodes_before: model.nodes.len(),
        nodes_after: written.len(),
        weights_folder: None,
    }))
}

/// A model of the original mask nodes plus the new key mask, with the original model's inputs and the
/// masks as outputs: what [`check_probe_output`] compares.
fn probe_model(
    model: &graph::ModelFields<'_>,
    masks: &[String],
    initializers: &[(Field<'_>, TensorView)],
    inputs: &[String],
) -> Result<Vec<u8>, String> {
    let producers = graph::producers(&model.nodes);
    let mask_names: Vec<&str> = masks.iter().map(String::as_str).collect();
    let upstream = graph::ancestors(&mask_names, &model.nodes, &producers);
    let read: HashSet<&str> = upstream
        .iter()
        .flat_map(|&i| model.nodes[i].view.input.iter().map(String::as_str))
        .collect();
    if let Some(other) = inputs
        .iter()
        .find(|i| read.contains(i.as_str()) && *i != "input_ids" && *i != "attention_mask")
    {
        return Err(format!("the mask reads the graph input {other:?}"));
    }
    let mut graph_bytes = Vec::new();
    put_bytes(&mut graph_bytes, tag::GRAPH_NAME, b"esmbench_mask_probe");
    let (new_nodes, new_initializers) = key_mask_nodes();
    for &i in &upstream {
        put_bytes(&mut graph_bytes, tag::GRAPH_NODE, model.nodes[i].bytes);
    }
    for w in &new_nodes {
        put_bytes(&mut graph_bytes, tag::GRAPH_NODE, &w.bytes);
    }
    let mut carried = 0;
    for (field, tensor) in initializers {
        if read.contains(tensor.name.as_str()) {
            carried += field.value.len();
            graph_bytes.extend_from_slice(field.raw);
        }
    }
    if carried > MAX_PROBE_INITIALIZER_BYTES {
        return Err(format!("the mask path reads {carried} bytes of weights"));
    }
    for (_, tensor) in &new_initializers {
        put_bytes(&mut graph_bytes, tag::GRAPH_INITIALIZER, tensor);
    }
    for field in model.graph.iter().filter(|f| f.number == tag::GRAPH_INPUT) {
        let name = NamedView::decode(field.value)
            .map(|v| v.name)
            .unwrap_or_default();
        if name == "input_ids" || name == "attention_mask" {
            graph_bytes.extend_from_slice(field.raw);
        }
    }
    // Outputs by name alone: ONNX Runtime infers their types, and the check reads them as float32.
    for name in masks.iter().map(String::as_str).chain([KEY_MASK]) {
        let mut value_info = Vec::new();
        put_bytes(&mut value_info, tag::VALUE_INFO_NAME, name.as_bytes());
        put_bytes(&mut graph_bytes, tag::GRAPH_OUTPUT, &value_info);
    }
    let mut probe = Vec::new();
    for field in &model.model {
        match field.number {
            tag::MODEL_GRAPH => put_bytes(&mut probe, tag::MODEL_GRAPH, &graph_bytes),
            tag::MODEL_IR_VERSION | tag::MODEL_OPSET_IMPORT => probe.extend_from_slice(field.raw),
            _ => {}
        }
    }
    Ok(probe)
}

/// A padded batch the probe runs: ids and attention mask, [rows, width] row-major.
pub struct ProbeBatch {
    pub rows: usize,
    pub width: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

/// Batches of several widths and paddings, tokenized as esmbench does (<cls>=0, residues, <eos>=2,
/// padding id 1), with one row unpadded in each.
pub fn probe_batches() -> Vec<ProbeBatch> {
    [&[1usize][..], &[10, 3], &[40, 122, 97, 5]]
        .iter()
        .map(|lengths| {
            let width = lengths.iter().max().copied().unwrap_or(0) + 2;
            let mut input_ids = vec![1i64; lengths.len() * width];
            let mut attention_mask = vec![0i64; lengths.len() * width];
            for (row, &n) in lengths.iter().enumerate() {
                let start = row * width;
                input_ids[start] = 0;
                for (j, id) in input_ids[start + 1..=start + n].iter_mut().enumerate() {
                    *id = 4 + ((row * 7 + j * 5) % 20) as i64;
                }
                input_ids[start + n + 1] = 2;
                attention_mask[start..start + n + 2].fill(1);
            }
            ProbeBatch {
                rows: lengths.len(),
                width,
                input_ids,
                attention_mask,
            }
        })
        .collect()
}

/// Checks one probe output against the key mask the rewrite adds: it must broadcast as [rows, heads,
/// queries or 1, keys] and hold exactly 0 where the key is attended and float32 min (or -inf) where it
/// is padding, for every head and query.
pub fn check_probe_output(
    name: &str,
    shape: &[i64],
    values: &[f32],
    batch: &ProbeBatch,
) -> Result<(), String> {
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let fits = dims.len() == 4
        && dims[0] == batch.rows
        && dims[3] == batch.width
        && (dims[2] == 1 || dims[2] == batch.width)
        && dims.iter().product::<usize>() == values.len();
    if !fits {
        return Err(format!(
            "mask {name:?} has shape {shape:?}, not [{}, heads, {} or 1, {}]",
            batch.rows, batch.width, batch.width
        ));
    }
    let per_row = dims[1] * dims[2] * dims[3];
    for (i, &value) in values.iter().enumerate() {
        let (row, key) = (i / per_row, i % dims[3]);
        let attended = batch.attention_mask[row * batch.width + key] == 1;
        // -inf and float32 min give a padded key the same weight after the softmax's max is subtracted:
        // exactly zero in float32, or the same clamped value in ONNX Runtime's exp.
        let same = if attended {
            value == 0.0
        } else {
            value == f32::MIN || value == f32::NEG_INFINITY
        };
        if !same {
            return Err(format!(
                "mask {name:?} is {value:e} at row {row}, key {key} of a {}x{} batch, where the key mask is {}",
                batch.rows,
                batch.width,
                if attended { "0" } else { "float32 min (or -inf)" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::tests::{layer, model_bytes, node};
    use crate::model::graph::NodeView;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .expect("fixture")
    }

    /// Graph fields for a hand-built model: opset 17, IR 10, the two inputs and one output.
    fn hand_model(nodes: &[Vec<u8>], output: &str) -> Vec<u8> {
        hand_model_with(nodes, output, &[])
    }

    /// As [`hand_model`], with more graph fields (already serialized).
    fn hand_model_with(nodes: &[Vec<u8>], output: &str, graph_fields: &[u8]) -> Vec<u8> {
        let mut extra = graph_fields.to_vec();
        for input in ["input_ids", "attention_mask"] {
            let mut value_info = Vec::new();
            put_bytes(&mut value_info, tag::VALUE_INFO_NAME, input.as_bytes());
            put_bytes(&mut extra, tag::GRAPH_INPUT, &value_info);
        }
        let mut value_info = Vec::new();
        put_bytes(&mut value_info, tag::VALUE_INFO_NAME, output.as_bytes());
        put_bytes(&mut extra, tag::GRAPH_OUTPUT, &value_info);
        let mut model = Vec::new();
        put_varint(&mut model, tag::MODEL_IR_VERSION, 10);
        let mut opset = Vec::new();
        put_varint(&mut opset, 2, 17);
        put_bytes(&mut model, tag::MODEL_OPSET_IMPORT, &opset);
        model.extend(model_bytes(nodes, &extra));
        model
    }

    fn views(model: &[u8]) -> Vec<NodeView> {
        graph::read(model)
            .expect("read")
            .nodes
            .into_iter()
            .map(|n| n.view)
            .collect()
    }

    #[test]
    fn the_micro_fixture_gets_one_key_mask_and_keeps_every_other_field() {
        let original = fixture("esm2_micro_with_head.onnx");
        let rewrite = plan(&original)
            .expect("plan")
            .expect("the fixture has an expanded mask");
        assert_eq!((rewrite.layers, rewrite.guards), (1, 0));
        assert!(
            rewrite.nodes_after < rewrite.nodes_before,
            "{}",
            rewrite.summary()
        );
        let nodes = views(&rewrite.model);
        assert!(
            !nodes.iter().any(|n| n.op_type == "Expand"),
            "an Expand is left"
        );
        let produced: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        let layers = graph::attention_layers(&graph::read(&rewrite.model).unwrap().nodes);
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].as_ref().unwrap().mask, KEY_MASK);
        assert!(produced.contains(KEY_MASK));
        // Model fields other than the graph (metadata with the head, opsets, IR version) are the same bytes.
        let before: Vec<Vec<u8>> = fields(&original)
            .unwrap()
            .iter()
            .filter(|f| f.number != tag::MODEL_GRAPH)
            .map(|f| f.raw.to_vec())
            .collect();
        let after: Vec<Vec<u8>> = fields(&rewrite.model)
            .unwrap()
            .iter()
            .filter(|f| f.number != tag::MODEL_GRAPH)
            .map(|f| f.raw.to_vec())
            .collect();
        assert_eq!(before, after);
        assert!(!before.is_empty());
        // Initializers kept are byte-identical to the original's.
        let weights = |m: &[u8]| -> Vec<Vec<u8>> {
            fields_of_graph(m)
                .iter()
                .filter(|f| f.number == tag::GRAPH_INITIALIZER)
                .map(|f| f.raw.to_vec())
                .collect()
        };
        let (w0, w1) = (weights(&original), weights(&rewrite.model));
        assert_eq!(
            w1.len(),
            w0.len() + 3,
            "three helper initializers added, none lost"
        );
        assert!(w0.iter().all(|w| w1.contains(w)));
        // The same plan twice gives the same bytes; a rewritten model has nothing left to rewrite.
        assert_eq!(plan(&original).unwrap().unwrap().model, rewrite.model);
        assert!(plan(&rewrite.model).expect("plan").is_none());
    }

    #[test]
    fn a_truncated_or_corrupted_model_is_an_error_or_left_alone_never_a_panic() {
        let original = fixture("esm2_micro_with_head.onnx");
        let mut outcomes = [0usize; 3];
        for cut in (0..original.len()).step_by(97) {
            match plan(&original[..cut]) {
                Ok(Some(_)) => outcomes[0] += 1,
                Ok(None) => outcomes[1] += 1,
                Err(_) => outcomes[2] += 1,
            }
        }
        let mut flipped = original.clone();
        for at in (0..flipped.len()).step_by(131) {
            flipped[at] ^= 0x5a;
            let _ = plan(&flipped);
        }
        // Most prefixes end inside a field, and the reader says so.
        assert!(outcomes[2] > outcomes[0] + outcomes[1], "{outcomes:?}");
    }

    #[test]
    fn nan_guards_are_bypassed_and_removed() {
        let mut nodes = Vec::new();
        for k in 0..2 {
            layer(&mut nodes, k, &["Cast", "Expand", "Where"]);
            let p = format!("p{k}");
            nodes.push(node("IsNaN", &[&p], &[&format!("nan{k}")]));
            nodes.push(node(
                "Where",
                &[&format!("nan{k}"), "zero", &p],
                &[&format!("g{k}")],
            ));
        }
        nodes.push(node("Add", &["g0", "g1"], &["last_hidden_state"]));
        let rewrite = plan(&hand_model(&nodes, "last_hidden_state"))
            .expect("plan")
            .expect("rewrite");
        assert_eq!((rewrite.layers, rewrite.guards), (2, 2));
        let after = views(&rewrite.model);
        let ops: Vec<&str> = after.iter().map(|n| n.op_type.as_str()).collect();
        assert!(
            !ops.contains(&"IsNaN") && !ops.contains(&"Expand"),
            "{ops:?}"
        );
        let last = after
            .iter()
            .find(|n| n.output == ["last_hidden_state"])
            .unwrap();
        assert_eq!(last.input, ["p0", "p1"]);
        assert_eq!(rewrite.masks, ["m0_2", "m1_2"]);

        // The same guard on a tensor that is not a softmax output stays.
        let mut other = nodes.clone();
        other.pop();
        other.push(node("IsNaN", &["s0"], &["nan_s"]));
        other.push(node("Where", &["nan_s", "zero", "s0"], &["g_s"]));
        other.push(node("Sum", &["g0", "g1", "g_s"], &["last_hidden_state"]));
        let rewrite = plan(&hand_model(&other, "last_hidden_state"))
            .expect("plan")
            .expect("rewrite");
        assert_eq!(rewrite.guards, 2);
        let after = views(&rewrite.model);
        let last = after
            .iter()
            .find(|n| n.output == ["last_hidden_state"])
            .unwrap();
        assert_eq!(last.input, ["p0", "p1", "g_s"]);
    }

    #[test]
    fn initializers_only_the_old_mask_read_go_and_those_listed_as_inputs_stay() {
        let mut nodes = vec![node("Mul", &["attention_mask", "mask_scale"], &["scaled"])];
        layer(&mut nodes, 0, &["Cast", "Expand", "Where"]);
        // The first mask op reads `scaled` instead of the raw input.
        nodes[1] = node("Cast", &["scaled"], &["m0_0"]);
        nodes.push(node("Identity", &["p0"], &["last_hidden_state"]));
        let mut fields = Vec::new();
        for name in ["mask_scale", "listed"] {
            let mut tensor = Vec::new();
            put_bytes(&mut tensor, tag::TENSOR_NAME, name.as_bytes());
            put_bytes(&mut fields, tag::GRAPH_INITIALIZER, &tensor);
        }
        let mut listed = Vec::new();
        put_bytes(&mut listed, tag::VALUE_INFO_NAME, b"listed");
        put_bytes(&mut fields, tag::GRAPH_INPUT, &listed);
        let rewrite = plan(&hand_model_with(&nodes, "last_hidden_state", &fields))
            .expect("plan")
            .expect("rewrite");
        let graph = fields_of_graph(&rewrite.model);
        let names: Vec<String> = graph
            .iter()
            .filter(|f| f.number == tag::GRAPH_INITIALIZER)
            .map(|f| TensorView::decode(f.value).unwrap().name)
            .filter(|n| !n.starts_with(KEY_MASK))
            .collect();
        assert_eq!(names, ["listed"]);
    }

    fn fields_of_graph(model: &[u8]) -> Vec<Field<'_>> {
        let graph = fields(model)
            .unwrap()
            .into_iter()
            .find(|f| f.number == tag::MODEL_GRAPH)
            .unwrap();
        fields(graph.value).unwrap()
    }

    #[test]
    fn graphs_it_cannot_prove_are_refused_with_the_reason() {
        let mut nodes = Vec::new();
        layer(&mut nodes, 0, &["Cast", "Expand", "Where"]);
        nodes.push(node("Identity", &["p0"], &["last_hidden_state"]));
        let mut old = hand_model(&nodes, "last_hidden_state");
        // The opset field is the second: rewrite version 17 as 11.
        let at = old.windows(2).position(|w| w == [0x10, 17]).unwrap();
        old[at + 1] = 11;
        assert!(plan(&old).expect_err("opset 11").contains("opset 11"));

        let mut guarded = nodes.clone();
        guarded.pop();
        guarded.push(node("IsNaN", &["p0"], &["nan"]));
        guarded.push(node(
            "Where",
            &["nan", "zero", "p0"],
            &["last_hidden_state"],
        ));
        let err = plan(&hand_model(&guarded, "last_hidden_state")).expect_err("guard output");
        assert!(err.contains("NaN guard writes the graph output"), "{err}");

        let mut tensor = Vec::new();
        put_bytes(&mut tensor, 8, b"w");
        put_varint(&mut tensor, 14, 1);
        let mut initializer = Vec::new();
        put_bytes(&mut initializer, tag::GRAPH_INITIALIZER, &tensor);
        // Two graph fields: protobuf would merge them; this reader refuses instead.
        let mut two_graphs = hand_model(&nodes, "last_hidden_state");
        put_bytes(&mut two_graphs, tag::MODEL_GRAPH, &initializer);
        assert!(plan(&two_graphs)
            .expect_err("two graphs")
            .contains("exactly one graph"));

        let mut loops = nodes.clone();
        loops.push(node("Loop", &["x"], &["y"]));
        assert!(plan(&hand_model(&loops, "last_hidden_state"))
            .expect_err("loop")
            .contains("subgraph"));
    }

    #[test]
    fn a_model_without_an_expanded_mask_is_left_alone() {
        let mut nodes = Vec::new();
        layer(&mut nodes, 0, &["Cast", "Unsqueeze", "Sub", "Mul"]);
        assert!(plan(&hand_model(&nodes, "p0")).expect("plan").is_none());
        assert!(plan(b"not a model").is_err());
    }

    fn padded_batch() -> ProbeBatch {
        ProbeBatch {
            rows: 2,
            width: 3,
            input_ids: vec![0, 5, 2, 0, 2, 1],
            attention_mask: vec![1, 1, 1, 1, 1, 0],
        }
    }

    #[test]
    fn the_probe_check_accepts_the_key_mask_per_query_or_broadcast() {
        let batch = padded_batch();
        let key_row = |row: usize| -> Vec<f32> {
            (0..3)
                .map(|k| {
                    if batch.attention_mask[row * 3 + k] == 1 {
                        0.0
                    } else {
                        f32::MIN
                    }
                })
                .collect()
        };
        let broadcast: Vec<f32> = (0..2).flat_map(key_row).collect();
        assert_eq!(
            check_probe_output("k", &[2, 1, 1, 3], &broadcast, &batch),
            Ok(())
        );
        let per_query: Vec<f32> = (0..2).flat_map(|r| key_row(r).repeat(3)).collect();
        assert_eq!(
            check_probe_output("m", &[2, 1, 3, 3], &per_query, &batch),
            Ok(())
        );
        let negative_zero: Vec<f32> = broadcast
            .iter()
            .map(|&v| if v == 0.0 { -0.0 } else { v })
            .collect();
        assert_eq!(
            check_probe_output("k", &[2, 1, 1, 3], &negative_zero, &batch),
            Ok(())
        );
        // transformers' newer mask writes -inf for padding.
        let infinite: Vec<f32> = broadcast
            .iter()
            .map(|&v| if v == 0.0 { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        assert_eq!(
            check_probe_output("m", &[2, 1, 1, 3], &infinite, &batch),
            Ok(())
        );
    }

    #[test]
    fn the_probe_check_rejects_other_masks() {
        let batch = padded_batch();
        // -10000 for padding (older exporters): softmax differs slightly, so it is not the same graph.
        let soft: Vec<f32> = vec![0.0, 0.0, 0.0, 0.0, 0.0, -1e4];
        let err = check_probe_output("m", &[2, 1, 1, 3], &soft, &batch).expect_err("-1e4");
        assert!(err.contains("is -1e4 at row 1, key 2"), "{err}");
        // A causal mask: query 0 may not see key 1 although it is attended.
        let mut causal = Vec::new();
        for row in 0..2 {
            for q in 0..3 {
                for k in 0..3 {
                    let padded = batch.attention_mask[row * 3 + k] == 0;
                    causal.push(if k > q || padded { f32::MIN } else { 0.0 });
                }
            }
        }
        assert!(check_probe_output("m", &[2, 1, 3, 3], &causal, &batch).is_err());
        let err = check_probe_output("m", &[2, 3, 3], &[0.0; 18], &batch).expect_err("rank 3");
        assert!(err.contains("has shape [2, 3, 3]"), "{err}");
    }

    #[test]
    fn probe_batches_are_tokenized_like_esmbench_batches() {
        for b in probe_batches() {
            for row in 0..b.rows {
                let ids = &b.input_ids[row * b.width..(row + 1) * b.width];
                let mask = &b.attention_mask[row * b.width..(row + 1) * b.width];
                let len = mask.iter().filter(|&&m| m == 1).count();
                assert_eq!(ids[0], 0);
                assert_eq!(ids[len - 1], 2);
                assert!(ids[1..len - 1].iter().all(|&id| (4..24).contains(&id)));
                assert!(ids[len..].iter().all(|&id| id == 1));
                assert!(mask[..len].iter().all(|&m| m == 1));
            }
            assert!(
                (0..b.rows).any(|row| b.attention_mask[(row + 1) * b.width - 1] == 1),
                "a full row"
            );
        }
    }
}
