//! The names of the files a `test` run keeps in its --out: written by the run, listed by the report (so an
//! input among them is refused) and read back by `merge`. A leaf, so none of those reaches into another.

/// The scored rows.
pub const PREDICTIONS: &str = "predictions.csv";
/// The rows left out by `--on-invalid skip`, with line, column and reason.
pub const SKIPPED: &str = "skipped.csv";
/// Where the run got to and the SHA-256 of its files (see `run::checkpoint`).
pub const CHECKPOINT: &str = "checkpoint.json";
