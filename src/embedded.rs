//! The embedded default run: a few-KB ESM-2-architecture model with its head, and a small demo dataset.

/// Micro ESM-2 graph (1 layer, hidden 8, random weights) with a logistic head in its metadata.
pub const DEMO_MODEL: &[u8] = include_bytes!("../tests/fixtures/esm2_micro_with_head.onnx");
pub const DEMO_MODEL_NAME: &str = "embedded-esm2-micro";
/// 96 synthetic VH-like sequences with labels, made by scripts/make_test_datasets.py.
pub const DEMO_DATA: &[u8] = include_bytes!("../test_datasets/demo_antibodies.csv");
pub const DEMO_DATA_NAME: &str = "embedded-demo_antibodies";
