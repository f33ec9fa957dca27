//! A deterministic stand-in for the ONNX backend (hidden `--mock-backend`), so the whole CLI can be tested fast.

use anyhow::Result;
use ndarray::Array2;

use crate::data::batcher::TokenBatch;
use crate::model::contract::OutputKind;
use crate::model::{count_model_load, provider, Backend, LoadSettings, ModelInfo, ModelOutput};

/// Hidden size of the mock embeddings.
pub const MOCK_HIDDEN: usize = 4;

/// The head the mock model carries in its "metadata".
pub const MOCK_HEAD: &str = r#"{"type":"logistic_regression","pooling":"mean_residues","threshold":0.5,"coef":[3.0,-2.0,1.5,0.5],"intercept":-0.2}"#;

pub struct MockBackend {
    info: ModelInfo,
    delay: std::time::Duration,
}

impl MockBackend {
    pub fn new(settings: &LoadSettings) -> MockBackend {
        count_model_load();
        // Lets signal and watchdog tests catch a run in the middle.
        let delay_ms = std::env::var("ESMBENCH_MOCK_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        MockBackend {
            info: ModelInfo {
                kind: OutputKind::HiddenStates,
                output: "last_hidden_state".into(),
                hidden: Some(MOCK_HIDDEN),
                device_requested: settings.device.device.name().into(),
                execution_provider: "MockExecutionProvider".into(),
                fallback: None,
                load_seconds: 0.0,
                metadata_head: Some(MOCK_HEAD.into()),
                threads: settings.threads,
                parallel_batches: settings.cpu_parallelism.0,
                max_tokens: settings.max_tokens.unwrap_or_else(|| {
                    provider::Provider::Cpu.default_max_tokens(Some(MOCK_HIDDEN))
                }),
                io_binding: false,
                graph_rewrite: None,
            },
            delay: std::time::Duration::from_millis(delay_ms),
        }
    }
}

/// A per-token feature vector: a fixed function of the token id and position.
fn token_features(token: i64, position: usize) -> [f32; MOCK_HIDDEN] {
    let t = token as f32;
    let p = position as f32;
    [
        (t * 0.37).sin(),
        (t * 0.11 + p * 0.01).cos(),
        ((t - 12.0) / 10.0).tanh(),
        (p * 0.05).sin() * 0.1,
    ]
}

impl Backend for MockBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&self, batch: &TokenBatch) -> Result<ModelOutput> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let mut out = Array2::<f32>::zeros((batch.len(), MOCK_HIDDEN));
        for (i, row) in batch.rows.iter().enumerate() {
            let residues = row.tokens - 2;
            let ids = &batch.input_ids[i * batch.seq_len..];
            let mut sum = [0f64; MOCK_HIDDEN];
            for (position, &token) in ids.iter().enumerate().take(residues + 1).skip(1) {
                for (acc, f) in sum.iter_mut().zip(token_features(token, position)) {
                    *acc += f64::from(f);
                }
            }
            for (k, acc) in sum.iter().enumerate() {
                out[[i, k]] = (acc / residues as f64) as f32;
            }
        }
        Ok(ModelOutput::Embeddings(out))
    }
}
