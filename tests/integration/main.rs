//! The one integration-test binary: the CLI end to end, parity with PyTorch references, the export round trip and the report schema.

mod harness;

mod cli;
mod contract;
mod export;
mod long_runs;
mod parity;
mod schema;
mod shards;
