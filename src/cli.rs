//! Command-line definitions (clap only): what the user can type, nothing about what it means.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(name = "esmbench", version, about = "Score antibody sequences with an ONNX ESM model and a classifier head; write predictions and a metrics report.", after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score a CSV of sequences: predictions.csv, report.json and report.md.
    /// With neither --model nor --data (nor a config naming them) it runs the embedded demo model on the embedded demo set.
    Test(TestArgs),
    /// Write pooled embeddings [rows, hidden] as a float32 .npy, in input order.
    /// With neither --model nor --data (nor a config) it embeds the embedded demo set.
    Embed(EmbedArgs),
    /// Print a model's inputs, outputs, metadata and what esmbench will do with them.
    Inspect(InspectArgs),
    /// Rescore a predictions file (ours, or another tool's, e.g. y_true,y_pred,y_proba) into the same report.
    Metrics(MetricsArgs),
    /// Compare a report.json with a baseline: exit 3 on a regression, 0 otherwise.
    Check(CheckArgs),
    /// Combine the output directories of `esmbench test --shard K/N` runs into one, as if run unsharded.
    Merge(MergeArgs),
    /// Train the logistic-regression head on a labelled CSV's pooled embeddings (scikit-learn's objective, L-BFGS):
    /// writes the head JSON for `esmbench test --head`, and a k-fold cross-validation report next to it.
    /// With neither --model nor --data (nor a config) it trains on the embedded demo set.
    Fit(FitArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Shard output directories (each with report.json and predictions.csv), in any order.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Output directory for the merged predictions and report.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Stop before scoring, listing the first problems (exit 2).
    Fail,
    /// Go on with the valid rows; list the others (skipped.csv for test, E.skipped.csv for embed, the head's
    /// report for fit).
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Coreml,
    Auto,
}

/// Threshold presets for the assay the labels come from (see `metrics::threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssayArg {
    /// ELISA polyreactivity labels: 0.5.
    Elisa,
    /// PSR labels (Shehata, Harvey): 0.5495, the published calibration.
    Psr,
}

/// Flags shared by every command that runs the model over a CSV.
#[derive(Debug, Clone, Default, Args)]
pub struct ScoringArgs {
    /// ONNX model (see `esmbench inspect` for the contract).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// CSV with a sequence column (and optionally label and id columns); a gzipped .csv.gz is read as it is.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Logistic-regression head JSON (coef, intercept, threshold) for `test`; overrides a head in the model's
    /// metadata. `embed` applies no head and refuses it.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// YAML run configuration; flags given on the command line win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// What to do with invalid rows: fail (default) or skip them (listed in skipped.csv, E.skipped.csv for embed).
    #[arg(long, value_enum)]
    pub on_invalid: Option<OnInvalid>,
    /// Score only shard K of N (rows whose 0-based index modulo N is K-1). Combine `test` shards with
    /// `esmbench merge`; join `embed` shards on the `row` column of their E.rows.csv.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Name of the sequence column (default: sequence).
    #[arg(long)]
    pub sequence_column: Option<String>,
    /// Name of the 0/1 label column (default: label; absent column means no metrics).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Name of the id column (default: id; optional).
    #[arg(long)]
    pub id_column: Option<String>,
}

/// How the model is run and the sequences are batched: one struct flattened into `test`, `embed` and `fit`,
/// so a new engine flag reaches every command that loads the model.
#[derive(Debug, Clone, Default, Args)]
pub struct EngineArgs {
    /// Execution provider: cpu (default), cuda, coreml, or auto (CUDA, then CoreML, then CPU).
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Run on CPU (loudly) when the requested provider cannot be registered, instead of failing.
    #[arg(long, overrides_with = "no_allow_cpu_fallback")]
    pub allow_cpu_fallback: bool,
    /// Fail when the requested provider cannot be registered (the default; undoes a config's
    /// `allow_cpu_fallback: true`).
    #[arg(long, overrides_with = "allow_cpu_fallback", hide_short_help = true)]
    pub no_allow_cpu_fallback: bool,
    /// Token budget per batch: rows x longest row (with <cls> and <eos>), as fair-esm's toks_per_batch
    /// (default: CPU 131072 / hidden size within 256..2048, CUDA 16384, CoreML 2048).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// CPU threads for the model in all (default: physical cores available to this process, lowered to fit
    /// a container's pids limit or ulimit -u).
    #[arg(long)]
    pub threads: Option<usize>,
    /// On CPU, batches run at once on one session, each on threads/K threads (default: threads, at most 8).
    #[arg(long, value_name = "K")]
    pub parallel_batches: Option<usize>,
    /// Longest sequence in residues; longer ones are truncated (and counted) unless --no-truncate.
    #[arg(long)]
    pub max_residues: Option<usize>,
    /// Fail on sequences longer than --max-residues instead of truncating them.
    #[arg(long, overrides_with = "truncate")]
    pub no_truncate: bool,
    /// Truncate sequences longer than --max-residues (the default; undoes a config's `truncate: false`).
    #[arg(long, overrides_with = "no_truncate", hide_short_help = true)]
    pub truncate: bool,
    /// Keep ONNX Runtime's idle threads from spinning (saves CPU in shared containers; slightly slower).
    #[arg(long, overrides_with = "spinning")]
    pub no_spinning: bool,
    /// Let ONNX Runtime's idle threads spin (the default; undoes a config's `intra_op_spinning: false`).
    #[arg(long, overrides_with = "no_spinning", hide_short_help = true)]
    pub spinning: bool,
    /// On CUDA, run batches through plain session inputs instead of an IO binding over page-locked host memory.
    #[arg(long, overrides_with = "io_binding")]
    pub no_io_binding: bool,
    /// On CUDA, bind batches to page-locked host memory (the default; undoes a config's `io_binding: false`).
    #[arg(long, overrides_with = "no_io_binding", hide_short_help = true)]
    pub io_binding: bool,
    /// Run the model file's graph as it is: no in-memory rewrite of a per-layer attention mask into one broadcast key mask.
    #[arg(long, overrides_with = "graph_rewrite")]
    pub no_graph_rewrite: bool,
    /// Rewrite the attention mask at load (the default; undoes a config's `graph_rewrite: false`).
    #[arg(long, overrides_with = "no_graph_rewrite", hide_short_help = true)]
    pub graph_rewrite: bool,
    /// Use the deterministic mock backend instead of ONNX Runtime (tests only).
    #[arg(long, hide = true)]
    pub mock_backend: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Output directory (default: results/<model stem>/<data stem>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Probability threshold for the positive class (default: the head's, else 0.5).
    #[arg(long, conflicts_with = "assay", allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    #[command(flatten)]
    pub long_run: LongRunArgs,
    /// Threshold preset for the assay behind the labels: elisa (0.5) or psr (0.5495, Shehata and Harvey).
    #[arg(long, value_enum)]
    pub assay: Option<AssayArg>,
    /// Bootstrap resamples for the 95% intervals (default 1000; 0 turns them off).
    #[arg(long)]
    pub bootstrap: Option<usize>,
    #[command(flatten)]
    pub gate: GateArgs,
}

/// The memory watchdog, checkpoints and resume, shared by `test` and `embed`.
#[derive(Debug, Clone, Default, Args)]
pub struct LongRunArgs {
    /// Hard memory limit, e.g. 8GiB: over it the run checkpoints (test also writes a partial report) and exits 4, resumable.
    #[arg(long)]
    pub max_rss: Option<String>,
    /// Soft memory limit (default 80% of --max-rss): over it the token budget is halved and the run goes on.
    #[arg(long)]
    pub soft_rss: Option<String>,
    /// Continue an interrupted run in --out from its last checkpoint (refused if data, model or settings changed).
    #[arg(long)]
    pub resume: bool,
    /// Seconds between checkpoints (outputs made durable, report rewritten); default 30.
    #[arg(long)]
    pub checkpoint_seconds: Option<u64>,
}

/// The regression gate, shared by `test`, `metrics` and `check`.
#[derive(Debug, Clone, Default, Args)]
pub struct GateArgs {
    /// Baseline JSON to compare with: exit 3 when a metric (or recorded throughput) is worse than it allows.
    /// For a suite config, a folder of <model>.<data>.json baselines.
    #[arg(long, conflicts_with = "write_baseline")]
    pub baseline: Option<PathBuf>,
    /// Record this run's metrics as a baseline JSON (for a suite config, into a folder: one
    /// <model>.<data>.json per run).
    #[arg(long)]
    pub write_baseline: Option<PathBuf>,
    /// Absolute tolerance per metric written by --write-baseline (default 0.005).
    #[arg(long, requires = "write_baseline", allow_negative_numbers = true)]
    pub tolerance: Option<f64>,
    /// Also record throughput in the baseline, gated with this relative tolerance (0.5 = fail when >50% slower).
    #[arg(long, requires = "write_baseline", allow_negative_numbers = true)]
    pub throughput_tolerance: Option<f64>,
}

/// The gate's help as `metrics` and `check` read it: they take no config, so no suite folders.
const ONE_BASELINE: &str =
    "Baseline JSON to compare with: exit 3 when a metric (or recorded throughput) is worse than it allows";
const ONE_BASELINE_WRITTEN: &str = "Record this report's metrics as a baseline JSON";

#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("baseline", |a| a.help(ONE_BASELINE)),
    mut_arg("write_baseline", |a| a.help(ONE_BASELINE_WRITTEN))
)]
pub struct MetricsArgs {
    /// Predictions CSV: a 0/1 label column and a probability column (see --label-column, --score-column).
    #[arg(long)]
    pub predictions: PathBuf,
    /// Output directory for report.json, report.md, report.html and the plots.
    #[arg(long)]
    pub out: PathBuf,
    /// Label column (default: the first of label, y_true, true_label, target).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Probability column (default: the first of probability, y_proba, score, proba, y_score).
    #[arg(long)]
    pub score_column: Option<String>,
    /// Positive when probability > T (default 0.5).
    #[arg(long, conflicts_with = "assay", allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Threshold preset: elisa (0.5) or psr (0.5495).
    #[arg(long, value_enum)]
    pub assay: Option<AssayArg>,
    /// Bootstrap resamples for the 95% intervals (default 1000; 0 turns them off).
    #[arg(long)]
    pub bootstrap: Option<usize>,
    #[command(flatten)]
    pub gate: GateArgs,
}

#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("baseline", |a| a.help(ONE_BASELINE)),
    mut_arg("write_baseline", |a| a.help(ONE_BASELINE_WRITTEN))
)]
pub struct CheckArgs {
    /// A report.json written by `esmbench test` or `esmbench metrics`.
    pub report: PathBuf,
    #[command(flatten)]
    pub gate: GateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Output .npy file (float32, [rows, hidden]).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub long_run: LongRunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// ONNX model to describe.
    #[arg(long)]
    pub model: PathBuf,
    /// Head JSON to check against the model's hidden size.
    #[arg(long)]
    pub head: Option<PathBuf>,
}

/// `esmbench fit`: the scoring flags that shape the embeddings, plus the training settings. No --head (fit writes
/// one) and no --shard (a head is trained on all rows).
#[derive(Debug, Clone, Args)]
pub struct FitArgs {
    /// ONNX encoder whose pooled embeddings the head is trained on.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training CSV: a sequence column and a 0/1 label column (rows with an empty label are left out).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to write the head JSON; the cross-validation report goes next to it (NAME.report.json, NAME.report.md).
    #[arg(long)]
    pub out: PathBuf,
    /// Inverse L2 regularisation strength, as scikit-learn's LogisticRegression C.
    #[arg(
        long = "c",
        value_name = "C",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub c: f64,
    /// Stratified cross-validation folds; 0 or 1 skips cross-validation.
    #[arg(long, default_value_t = 10)]
    pub folds: usize,
    /// Seed of the fold assignment (the same seed gives the same folds).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// YAML run configuration (model, data, device, threads, max_tokens, columns, ...); flags win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// What to do with invalid rows: fail (default) or leave them out of training.
    #[arg(long, value_enum)]
    pub on_invalid: Option<OnInvalid>,
    /// Name of the sequence column (default: sequence).
    #[arg(long)]
    pub sequence_column: Option<String>,
    /// Name of the 0/1 label column (default: label).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Name of the id column (default: id; optional).
    #[arg(long)]
    pub id_column: Option<String>,
}

impl FitArgs {
    /// The shared scoring flags, for [`crate::config::ScoringConfig::resolve`].
    pub fn scoring(&self) -> ScoringArgs {
        ScoringArgs {
            model: self.model.clone(),
            data: self.data.clone(),
            head: None,
            config: self.config.clone(),
            engine: self.engine.clone(),
            on_invalid: self.on_invalid,
            shard: None,
            sequence_column: self.sequence_column.clone(),
            label_column: self.label_column.clone(),
            id_column: self.id_column.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Regression: `check --help` and `metrics --help` offered a suite's folder of baselines, which only
    /// `test` with a suite config reads.
    #[test]
    fn regression_the_gate_help_of_metrics_and_check_offered_suite_folders() {
        let command = Cli::command();
        for (name, suites) in [("test", true), ("metrics", false), ("check", false)] {
            let sub = command.find_subcommand(name).expect("subcommand");
            for flag in ["baseline", "write_baseline"] {
                let help = sub
                    .get_arguments()
                    .find(|a| a.get_id() == flag)
                    .and_then(|a| a.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert_eq!(help.contains("suite"), suites, "{name} --{flag}: {help}");
            }
        }
    }
}
