//! The one integration-test binary: the CLI end to end, parity with PyTorch references, training the head,
//! and the report schema.

mod harness;

mod cli;
mod contract;
mod fit;
mod gate;
mod html;
mod long_runs;
mod parity;
mod schema;
mod shards;
mod sklearn_metrics;
