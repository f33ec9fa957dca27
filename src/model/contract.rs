//! The model contract: which inputs a model must take and which outputs esmbench knows how to use.

use std::fmt;

use crate::error::Failure;

/// A tensor's element type, as far as the contract cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    Int64,
    Float32,
    Other(String),
}

impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Elem::Int64 => f.write_str("int64"),
            Elem::Float32 => f.write_str("float32"),
            Elem::Other(name) => f.write_str(name),
        }
    }
}

/// One input or output as the model declares it; -1 marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub elem: Elem,
    pub shape: Vec<i64>,
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
            .collect();
        write!(f, "{} {} [{}]", self.name, self.elem, dims.join(", "))
    }
}

/// What the chosen output holds, and so what esmbench does after the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// [batch, seq, hidden]: pool over residues, then apply the head.
    HiddenStates,
    /// [batch, hidden]: apply the head.
    Pooled,
    /// [batch] or [batch, 1]: sigmoid; [batch, 2]: softmax, positive class.
    Logits { two_class: bool },
    /// [batch] or [batch, 1]: as is; [batch, 2]: the positive column.
    Probability { two_class: bool },
}

impl OutputKind {
    pub fn needs_head(self) -> bool {
        matches!(self, OutputKind::HiddenStates | OutputKind::Pooled)
    }
    /// Whether the output holds two columns per row, of which esmbench reads the positive class.
    pub fn is_two_class(self) -> bool {
        matches!(
            self,
            OutputKind::Logits { two_class: true } | OutputKind::Probability { two_class: true }
        )
    }
    pub fn yields_embeddings(self) -> bool {
        self.needs_head()
    }
    pub fn label(self) -> &'static str {
        match self {
            OutputKind::HiddenStates => "last_hidden_state",
            OutputKind::Pooled => "pooled_embedding",
            OutputKind::Logits { .. } => "logits",
            OutputKind::Probability { .. } => "probability",
        }
    }
    pub fn plan(self) -> &'static str {
        match self {
            OutputKind::HiddenStates => {
                "mean-pool residue positions (no <cls>/<eos>/padding), then apply the logistic head"
            }
            OutputKind::Pooled => "apply the logistic head to the pooled embedding",
            OutputKind::Logits { two_class: false } => "probability = sigmoid(logit)",
            OutputKind::Logits { two_class: true } => "probability = softmax(logits)[1]",
            OutputKind::Probability { two_class: false } => "use the probability as given",
            OutputKind::Probability { two_class: true } => "use column 1 of the probabilities",
        }
    }
}

/// The output esmbench will read, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub output: String,
    pub kind: OutputKind,
    /// Hidden size when the model declares it (embedding outputs only).
    pub hidden: Option<usize>,
}

/// Names accepted for a pooled embedding output.
const POOLED_NAMES: [&str; 6] = [
    "pooler_output",
    "pooled_output",
    "embedding",
    "embeddings",
    "pooled",
    "pooled_embedding",
];

pub const CONTRACT_HELP: &str = "inputs `input_ids` and `attention_mask` (int64, [batch, seq]); one output among \
`probability` ([batch] or [batch, 2]), `logits` ([batch] or [batch, 2]), `last_hidden_state` (float32 [batch, seq, hidden]) \
or a pooled embedding (float32 [batch, hidden], named pooler_output, embedding or pooled)";

/// Checks the declared inputs and outputs; `origin` names the model in errors.
pub fn check(
    origin: &str,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> Result<Contract, Failure> {
    let fail = |what: String| {
        Failure::usage(format!("{origin}: {what}\n  the contract: {CONTRACT_HELP}\n  fix: re-export with scripts/export_onnx.py"))
    };
    for required in ["input_ids", "attention_mask"] {
        let input = inputs.iter().find(|i| i.name == required).ok_or_else(|| {
            let names: Vec<String> = inputs.iter().map(ToString::to_string).collect();
            fail(format!(
                "no input named `{required}` (inputs: {})",
                names.join("; ")
            ))
        })?;
        if input.elem != Elem::Int64 || input.shape.len() != 2 {
            return Err(fail(format!("input {input} must be int64 [batch, seq]")));
        }
    }
    if let Some(extra) = inputs
        .iter()
        .find(|i| i.name != "input_ids" && i.name != "attention_mask")
    {
        return Err(fail(format!("unexpected input {extra}")));
    }
    let float_output = |name: &str| outputs.iter().find(|o| o.name == name);
    let pairwise = |o: &TensorSpec| -> Result<bool, Failure> {
        match (o.elem == Elem::Float32, o.shape.as_slice()) {
            (true, [_]) | (true, [_, 1]) => Ok(false),
            (true, [_, 2]) => Ok(true),
            _ => Err(fail(format!(
                "output {o} must be float32 [batch] or [batch, 2]"
            ))),
        }
    };
    if let Some(o) = float_output("probability") {
        return Ok(Contract {
            output: o.name.clone(),
            kind: OutputKind::Probability {
                two_class: pairwise(o)?,
            },
            hidden: None,
        });
    }
    if let Some(o) = float_output("logits") {
        return Ok(Contract {
            output: o.name.clone(),
            kind: OutputKind::Logits {
                two_class: pairwise(o)?,
            },
            hidden: None,
        });
    }
    let hidden_of = |d: i64| usize::try_from(d).ok();
    if let Some(o) = float_output("last_hidden_state") {
        if o.elem != Elem::Float32 || o.shape.len() != 3 {
            return Err(fail(format!(
                "output {o} must be float32 [batch, seq, hidden]"
            )));
        }
        return Ok(Contract {
            output: o.name.clone(),
            kind: OutputKind::HiddenStates,
            hidden: hidden_of(o.shape[2]),
        });
    }
    if let Some(o) = outputs
        .iter()
        .find(|o| POOLED_NAMES.contains(&o.name.as_str()))
    {
        if o.elem != Elem::Float32 || o.shape.len() != 2 {
            return Err(fail(format!("output {o} must be float32 [batch, hidden]")));
        }
        return Ok(Contract {
            output: o.name.clone(),
            kind: OutputKind::Pooled,
            hidden: hidden_of(o.shape[1]),
        });
    }
    let names: Vec<String> = outputs.iter().map(ToString::to_string).collect();
    Err(fail(format!(
        "no usable output (outputs: {})",
        names.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, elem: Elem, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            elem,
            shape: shape.to_vec(),
        }
    }

    fn inputs() -> Vec<TensorSpec> {
        vec![
            spec("input_ids", Elem::Int64, &[-1, -1]),
            spec("attention_mask", Elem::Int64, &[-1, -1]),
        ]
    }

    #[test]
    fn each_accepted_output_maps_to_its_kind() {
        let c = check(
            "m",
            &inputs(),
            &[spec("last_hidden_state", Elem::Float32, &[-1, -1, 320])],
        )
        .unwrap();
        assert_eq!((c.kind, c.hidden), (OutputKind::HiddenStates, Some(320)));
        let c = check(
            "m",
            &inputs(),
            &[spec("embedding", Elem::Float32, &[-1, 8])],
        )
        .unwrap();
        assert_eq!(c.kind, OutputKind::Pooled);
        let c = check("m", &inputs(), &[spec("logits", Elem::Float32, &[-1, 2])]).unwrap();
        assert_eq!(c.kind, OutputKind::Logits { two_class: true });
        let c = check("m", &inputs(), &[spec("probability", Elem::Float32, &[-1])]).unwrap();
        assert_eq!(c.kind, OutputKind::Probability { two_class: false });
        assert!(!c.kind.needs_head());
    }

    #[test]
    fn wrong_input_names_and_dtypes_are_named_in_the_error() {
        let bad = vec![
            spec("ids", Elem::Int64, &[-1, -1]),
            spec("attention_mask", Elem::Int64, &[-1, -1]),
        ];
        let err = check("m.onnx", &bad, &[spec("logits", Elem::Float32, &[-1])]).unwrap_err();
        assert!(
            err.message.contains("no input named `input_ids`") && err.message.contains("ids int64"),
            "{}",
            err.message
        );
        let bad = vec![
            spec("input_ids", Elem::Other("int32".into()), &[-1, -1]),
            spec("attention_mask", Elem::Int64, &[-1, -1]),
        ];
        let err = check("m.onnx", &bad, &[spec("logits", Elem::Float32, &[-1])]).unwrap_err();
        assert!(err.message.contains("input_ids int32"), "{}", err.message);
    }

    #[test]
    fn an_unknown_output_is_an_error_listing_the_outputs() {
        let err = check("m.onnx", &inputs(), &[spec("foo", Elem::Float32, &[-1, 3])]).unwrap_err();
        assert!(
            err.message.contains("no usable output") && err.message.contains("foo"),
            "{}",
            err.message
        );
    }
}
