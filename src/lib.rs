//! esmbench: score antibody sequences with an ONNX ESM model and a classifier head, at any dataset size.

pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod data;
pub mod embedded;
pub mod error;
pub mod fingerprint;
pub mod fit;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod output_files;
pub mod report;
pub mod rescore;
pub mod run;
pub mod threads;
