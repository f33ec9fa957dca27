//! Model side: one backend per process (ONNX Runtime or the mock), the contract, pooling and the head.

pub mod contract;
pub mod external_data;
pub mod graph;
pub mod head;
pub mod mock;
pub mod onnx;
pub mod pooling;
pub mod protobuf;
pub mod provider;
pub mod rewrite;
pub mod runtime;
pub mod runtime_log;

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use ndarray::Array2;

use std::path::{Path, PathBuf};

use crate::data::batcher::{BatchRow, TokenBatch};
use crate::error::Failure;
use contract::OutputKind;
use head::{sigmoid, Head};

/// Where the model bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    File(PathBuf),
    Embedded,
}

impl ModelSource {
    pub fn display_name(&self) -> String {
        match self {
            ModelSource::File(p) => p.display().to_string(),
            ModelSource::Embedded => crate::embedded::DEMO_MODEL_NAME.to_string(),
        }
    }
}

/// What loading a model takes from the run's configuration (`config` builds it), so the model side does not
/// depend on how a run is configured.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub source: ModelSource,
    pub device: provider::DeviceRequest,
    pub threads: usize,
    /// On CPU: the batches run at once and the intra-op threads of each.
    pub cpu_parallelism: (usize, usize),
    /// `--parallel-batches` as asked (for the warning when the provider is not CPU).
    pub parallel_batches_asked: Option<usize>,
    /// Token budget per batch as asked; None takes the provider's default.
    pub max_tokens: Option<usize>,
    pub max_residues: usize,
    pub intra_op_spinning: bool,
    /// On CUDA, bind inputs and output through page-locked host memory.
    pub io_binding: bool,
    /// Rewrite a per-layer expanded attention mask into one broadcast key mask at load ([`rewrite`]).
    pub graph_rewrite: bool,
    pub mock_backend: bool,
}

/// Counts model loads in this process; a report shows it, and it must stay 1.
static MODEL_LOADS: AtomicUsize = AtomicUsize::new(0);

pub fn model_loads() -> usize {
    MODEL_LOADS.load(Ordering::Relaxed)
}

pub(crate) fn count_model_load() {
    MODEL_LOADS.fetch_add(1, Ordering::Relaxed);
}

/// What the loaded model is and how it runs.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub kind: OutputKind,
    pub output: String,
    pub hidden: Option<usize>,
    pub device_requested: String,
    pub execution_provider: String,
    /// Why the requested provider was not used, when CPU stood in for it.
    pub fallback: Option<String>,
    pub load_seconds: f64,
    /// The head JSON stored in the model's metadata (`esmbench.head`), if any.
    pub metadata_head: Option<String>,
    pub threads: usize,
    /// Batches the runner may have in flight at once on this backend (1 unless it runs on CPU).
    pub parallel_batches: usize,
    /// Token budget per batch: --max-tokens, or the default for this provider and hidden size.
    pub max_tokens: usize,
    /// Whether batches go through a CUDA IO binding (page-locked host memory both ways).
    pub io_binding: bool,
    /// What the in-memory graph rewrite changed ([`rewrite::Rewrite::summary`]); None when the file ran as it is.
    pub graph_rewrite: Option<String>,
}

/// What one batch gave back, per row in batch order.
#[derive(Debug, Clone)]
pub enum ModelOutput {
    /// Pooled embeddings [rows, hidden].
    Embeddings(Array2<f32>),
    /// Probabilities of the positive class.
    Probabilities(Vec<f64>),
}

/// Anything that turns token batches into model outputs. `run` takes `&self`: the runner calls it from
/// `info().parallel_batches` threads at once.
pub trait Backend: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn run(&self, batch: &TokenBatch) -> Result<ModelOutput>;
}

/// The metadata key that carries a head JSON inside an ONNX model.
pub const HEAD_METADATA_KEY: &str = "esmbench.head";
/// The metadata key where scripts/export_onnx.py records the architecture (a JSON object).
pub const ARCHITECTURE_METADATA_KEY: &str = "esmbench.architecture";

/// The most residues a model with learned absolute positions (ESM-1b, ESM-1v) can read, from its recorded
/// architecture; `None` for rotary positions (ESM-2) or an architecture that does not say. Transformers
/// numbers positions from padding_idx + 1 = 2, so <cls>, the residues and <eos> must end below
/// max_position_embeddings: 1026 gives the 1022 residues ESM-1v was trained on.
pub fn learned_position_limit(architecture_json: &str) -> Option<usize> {
    let architecture: serde_json::Value = serde_json::from_str(architecture_json).ok()?;
    if architecture.get("position_embedding_type")?.as_str()? != "absolute" {
        return None;
    }
    let positions = architecture.get("max_position_embeddings")?.as_u64()?;
    Some(positions.saturating_sub(4) as usize)
}

/// The head to apply and where it came from: `--head` wins over the model's metadata.
pub fn resolve_head(
    head_file: Option<&Path>,
    model: &ModelSource,
    info: &ModelInfo,
) -> Result<Option<(Head, String)>> {
    if let (Some(path), false) = (head_file, info.kind.needs_head()) {
        // Its coefficients would go unused while its threshold and its name in the report would not.
        return Err(Failure::usage(format!(
            "--head {} would not be used: {} outputs {} itself\n  fix: drop --head (set the threshold with \
--threshold), or score the encoder without its classifier",
            path.display(),
            model.display_name(),
            info.kind.label()
        ))
        .into());
    }
    let head = if let Some(path) = head_file {
        Some((Head::read(path)?, path.display().to_string()))
    } else if let Some(text) = &info.metadata_head {
        let origin = format!("{} metadata `{HEAD_METADATA_KEY}`", model.display_name());
        Some((Head::from_json(text, &origin)?, origin))
    } else {
        None
    };
    if let (Some((head, origin)), Some(hidden)) = (&head, info.hidden) {
        if head.hidden_size() != hidden {
            return Err(Failure::usage(format!(
                "head {origin} has {} coefficients but the model's hidden size is {hidden}\n  fix: use the head trained on this model's embeddings",
                head.hidden_size()
            ))
            .into());
        }
    }
    Ok(head)
}

/// A model that needs a head and has none cannot score: say so before any work.
pub fn require_head_for_scoring(
    info: &ModelInfo,
    head: Option<&Head>,
    model_name: &str,
) -> Result<()> {
    if info.kind.needs_head() && head.is_none() {
        return Err(Failure::usage(format!(
            "{model_name} outputs {} and needs a classifier head, but none was given and its metadata has no `{HEAD_METADATA_KEY}`\n  \
fix: pass --head HEAD.json, or embed one with scripts/export_onnx.py --head",
            info.kind.label()
        ))
        .into());
    }
    Ok(())
}

/// Probabilities for a batch: the head for embeddings, as given for probability outputs.
pub fn probabilities(output: &ModelOutput, head: Option<&Head>) -> Result<Vec<f64>> {
    match output {
        ModelOutput::Probabilities(p) => Ok(p.clone()),
        ModelOutput::Embeddings(e) => {
            let head = head.ok_or_else(|| {
                Failure::usage("the model outputs embeddings and no head was given")
            })?;
            if e.ncols() != head.hidden_size() {
                return Err(Failure::usage(format!(
                    "the model's embeddings have {} dimensions but the head has {} coefficients\n  fix: use the head trained on this model",
                    e.ncols(),
                    head.hidden_size()
                ))
                .into());
            }
            Ok(e.rows()
                .into_iter()
                .map(|row| head.probability(row.as_slice().unwrap_or(&row.to_vec())))
                .collect())
        }
    }
}

/// Every row must come back with a probability in [0, 1]: a NaN (a float16 export that overflowed, a broken
/// graph) would otherwise be written to predictions.csv, sort first in the ROC curve and turn the Brier
/// score and log loss into nulls. `rows` is the batch's rows, in the probabilities' order.
pub fn check_probabilities(
    probabilities: &[f64],
    rows: &[BatchRow],
    kind: OutputKind,
) -> Result<()> {
    if probabilities.len() != rows.len() {
        return Err(Failure::runtime(format!(
            "the model returned {} scores for a batch of {} rows\n  fix: export the model so that it gives one score per input row (see `esmbench inspect`)",
            probabilities.len(),
            rows.len()
        ))
        .into());
    }
    let Some((row, p)) = rows
        .iter()
        .zip(probabilities)
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    else {
        return Ok(());
    };
    let which = match &row.id {
        Some(id) => format!("row {} (id `{id}`)", row.row),
        None => format!("row {}", row.row),
    };
    let fix = if !p.is_finite() {
        "the model's outputs overflowed or the graph is broken (a float16 export can overflow where float32 does not): score with the float32 export, and compare it with PyTorch through scripts/export_onnx.py's check"
    } else if matches!(kind, OutputKind::Probability { .. }) {
        "the model's output is named as a probability but holds other values: if they are logits, name the output `logits` (see `esmbench inspect`)"
    } else {
        "the model's outputs are not valid scores: check the model with `esmbench inspect`"
    };
    Err(Failure::runtime(format!(
        "the model gave {which} the probability {p}, which is not in [0, 1]\n  fix: {fix}"
    ))
    .into())
}

/// Probabilities from a probability or logits output ([batch] or [batch, 2]).
pub fn probabilities_from_scores(kind: OutputKind, values: &[f32], rows: usize) -> Vec<f64> {
    let two_class = kind.is_two_class();
    (0..rows)
        .map(|i| match (kind, two_class) {
            (OutputKind::Logits { .. }, true) => {
                sigmoid(f64::from(values[2 * i + 1]) - f64::from(values[2 * i]))
            }
            (OutputKind::Logits { .. }, false) => sigmoid(f64::from(values[i])),
            (_, true) => f64::from(values[2 * i + 1]),
            _ => f64::from(values[i]),
        })
        .collect()
}

/// Starts the ONNX Runtime library on its own thread, so the caller can read the data meanwhile and
/// [`load_backend`] then finds the runtime ready (about 15 ms of start-up). Only the library: the model
/// itself still loads after the data is validated. A failure here is not reported; the load meets it again
/// and reports it in its place.
pub fn start_runtime(settings: &LoadSettings) -> RuntimeStart {
    RuntimeStart((!settings.mock_backend).then(|| {
        crate::threads::in_background("esmbench-runtime", || drop(runtime::environment()))
    }))
}

/// The runtime library loading on its own thread (see [`start_runtime`]). Dropping it waits for the load
/// to finish: a process that exits (say, on a validation error) while the library's static initializers
/// still run on the other thread printed ONNX Runtime "Schema error" lines and sometimes died of a
/// segmentation fault (exit 139) instead of exiting 2.
pub struct RuntimeStart(Option<crate::threads::Background<()>>);

impl RuntimeStart {
    /// Waits until the library has loaded (or failed to).
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(loading) = self.0.take() {
            let _ = loading.join();
        }
    }
}

impl Drop for RuntimeStart {
    fn drop(&mut self) {
        self.join();
    }
}

/// Loads the backend the configuration asks for; this is the only place a model is loaded.
pub fn load_backend(settings: &LoadSettings) -> Result<Box<dyn Backend>> {
    if settings.mock_backend {
        Ok(Box::new(mock::MockBackend::new(settings)))
    } else {
        Ok(Box::new(onnx::OnnxBackend::load(settings)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_rows(ids: &[Option<&str>]) -> Vec<BatchRow> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| BatchRow {
                row: 10 + i as u64,
                id: id.map(String::from),
                label: None,
                tokens: 5,
            })
            .collect()
    }

    #[test]
    fn probabilities_must_be_in_0_to_1_one_per_row() {
        let rows = batch_rows(&[Some("a"), None, Some("c")]);
        let logits = OutputKind::Logits { two_class: false };
        assert!(check_probabilities(&[0.0, 0.5, 1.0], &rows, logits).is_ok());
        let message = |p: &[f64], kind| {
            check_probabilities(p, &rows, kind)
                .unwrap_err()
                .downcast::<Failure>()
                .unwrap()
        };
        let nan = message(&[0.2, f64::NAN, 0.3], logits);
        assert_eq!(nan.kind, crate::error::FailureKind::Runtime);
        assert!(
            nan.message
                .starts_with("the model gave row 11 the probability NaN, which is not in [0, 1]"),
            "{}",
            nan.message
        );
        assert!(nan.message.contains("float32 export"), "{}", nan.message);
        let above = message(
            &[0.2, 0.3, 1.5],
            OutputKind::Probability { two_class: false },
        );
        assert!(
            above
                .message
                .starts_with("the model gave row 12 (id `c`) the probability 1.5"),
            "{}",
            above.message
        );
        assert!(above.message.contains("`logits`"), "{}", above.message);
        let below = message(&[-0.25, 0.3, 0.4], logits);
        assert!(below
            .message
            .contains("row 10 (id `a`) the probability -0.25"));
        let short = message(&[0.2, 0.3], logits);
        assert!(
            short
                .message
                .starts_with("the model returned 2 scores for a batch of 3 rows"),
            "{}",
            short.message
        );
    }

    #[test]
    fn learned_positions_limit_the_residues_and_rotary_ones_do_not() {
        // ESM-1v as transformers configures it: 1026 positions from padding_idx + 1, so 1022 residues.
        let esm1v = r#"{"layers": 33, "hidden": 1280, "position_embedding_type": "absolute", "max_position_embeddings": 1026}"#;
        assert_eq!(learned_position_limit(esm1v), Some(1022));
        let esm2 = r#"{"position_embedding_type": "rotary", "max_position_embeddings": 1026}"#;
        assert_eq!(learned_position_limit(esm2), None);
        assert_eq!(
            learned_position_limit(r#"{"position_embedding_type": "absolute"}"#),
            None
        );
        assert_eq!(learned_position_limit("not json"), None);
    }

    #[test]
    fn two_class_logits_become_softmax_of_the_positive_class() {
        let p = probabilities_from_scores(
            OutputKind::Logits { two_class: true },
            &[0.0, 2.0, 1.0, 1.0],
            2,
        );
        let softmax = 2f64.exp() / (1.0 + 2f64.exp());
        assert!((p[0] - softmax).abs() < 1e-12);
        assert!((p[1] - 0.5).abs() < 1e-12);
        let p =
            probabilities_from_scores(OutputKind::Probability { two_class: true }, &[0.3, 0.7], 1);
        assert!((p[0] - 0.7).abs() < 1e-6);
        let p = probabilities_from_scores(OutputKind::Logits { two_class: false }, &[0.0], 1);
        assert_eq!(p, vec![0.5]);
    }
}
