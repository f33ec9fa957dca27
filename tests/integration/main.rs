//! The one integration-test binary: the CLI end to end, parity with PyTorch references, the export round
//! trip, training the head, the CI gate and the report schema.

mod harness;

mod cli;
mod contract;
mod export;
mod fit;
mod gate;
mod html;
mod long_runs;
mod parity;
mod schema;
mod shards;
mod sklearn_metrics;
