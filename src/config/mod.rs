//! Flags plus an optional YAML file resolved into one validated run configuration, before any model loads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{AssayArg, DeviceArg, OnInvalid, ScoringArgs};
use crate::embedded;
use crate::error::Failure;
use crate::metrics::bootstrap;
use crate::metrics::threshold::{self, Threshold};
use crate::model::provider::{Device, DeviceRequest};
use crate::model::{LoadSettings, ModelSource};

pub mod suite;
pub mod threads;

use threads::{cpu_parallelism, fit_thread_limit, oversubscription_warning};
pub use threads::{default_parallel_batches, default_threads, threads_started};

/// ESM's positional limit: 1024 tokens including <cls> and <eos>.
pub const DEFAULT_MAX_RESIDUES: usize = 1022;
/// Where the CSV comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    File(PathBuf),
    Embedded,
}

impl DataSource {
    pub fn display_name(&self) -> String {
        match self {
            DataSource::File(p) => p.display().to_string(),
            DataSource::Embedded => embedded::DEMO_DATA_NAME.to_string(),
        }
    }
    pub fn stem(&self) -> String {
        match self {
            DataSource::File(p) => file_stem(p),
            DataSource::Embedded => embedded::DEMO_DATA_NAME.to_string(),
        }
    }
}

/// The model's name in a default output folder.
fn model_stem(model: &ModelSource) -> String {
    match model {
        ModelSource::File(p) => file_stem(p),
        ModelSource::Embedded => embedded::DEMO_MODEL_NAME.to_string(),
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into())
}

/// Column names in the CSV header.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnNames {
    pub sequence: String,
    pub label: String,
    pub id: String,
    /// Which of sequence, label and id the user named (a flag or a config key): a name given picks the column
    /// spelt exactly so where two differ only in case; the default name matching both is refused.
    pub named: [bool; 3],
}

/// The config's `columns:` keys, each optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnKeys {
    pub sequence: Option<String>,
    pub label: Option<String>,
    pub id: Option<String>,
}

/// The device a flag or config key names, as the provider choice knows it.
impl From<DeviceArg> for Device {
    fn from(device: DeviceArg) -> Device {
        match device {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
            DeviceArg::Coreml => Device::CoreMl,
            DeviceArg::Auto => Device::Auto,
        }
    }
}

/// The preset a flag or config key names, as the threshold rules know it.
impl From<AssayArg> for threshold::Assay {
    fn from(assay: AssayArg) -> threshold::Assay {
        match assay {
            AssayArg::Elisa => threshold::Assay::Elisa,
            AssayArg::Psr => threshold::Assay::Psr,
        }
    }
}

impl Default for ColumnNames {
    fn default() -> Self {
        ColumnNames {
            sequence: "sequence".into(),
            label: "label".into(),
            id: "id".into(),
            named: [false; 3],
        }
    }
}

/// Everything a scoring run needs, validated.
#[derive(Debug, Clone)]
pub struct ScoringConfig {
    pub model: ModelSource,
    pub data: DataSource,
    pub head: Option<PathBuf>,
    pub device: DeviceRequest,
    /// Token budget per batch as asked; None takes the provider's default once the model is loaded
    /// ([`crate::model::provider::Provider::default_max_tokens`]).
    pub max_tokens: Option<usize>,
    pub threads: usize,
    /// Batches run at once on CPU (`--parallel-batches`), as asked; None takes [`default_parallel_batches`].
    /// Other providers run one batch at a time.
    pub parallel_batches: Option<usize>,
    pub max_residues: usize,
    pub truncate: bool,
    pub columns: ColumnNames,
    /// `--on-invalid skip`: invalid rows are left out and listed instead of stopping the run.
    pub skip_invalid: bool,
    pub intra_op_spinning: bool,
    /// On CUDA, bind inputs and output through page-locked host memory (ignored by other providers).
    pub io_binding: bool,
    /// Rewrite a per-layer expanded attention mask into one broadcast key mask at load (model::rewrite).
    pub graph_rewrite: bool,
    pub shard: Shard,
    pub mock_backend: bool,
}

/// Shard K of N (1-based K): the rows whose index modulo N is K - 1. Deterministic and independent of
/// row content, so N machines split any file the same way and `esmbench merge` can put it back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };
    /// Far above any job array, and low enough that row arithmetic on shards cannot overflow.
    pub const MAX_COUNT: u64 = 1_000_000;

    pub fn parse(text: &str) -> Result<Shard> {
        let parsed = text.split_once('/').and_then(|(k, n)| {
            Some((k.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?))
        });
        match parsed {
            Some((_, count)) if count > Shard::MAX_COUNT => Err(Failure::usage(format!(
                "--shard {text}: at most {} shards\n  fix: split the data into fewer shards (one per machine or GPU)",
                Shard::MAX_COUNT
            ))
            .into()),
            Some((index, count)) if count >= 1 && (1..=count).contains(&index) => Ok(Shard { index, count }),
            _ => Err(Failure::usage(format!("--shard {text} is not K/N with 1 <= K <= N\n  fix: e.g. --shard 2/8 for the second of eight shards")).into()),
        }
    }

    pub fn contains(self, row: u64) -> bool {
        row % self.count == self.index - 1
    }

    /// How many of rows 0..`row` are this shard's.
    pub fn rows_below(self, row: u64) -> u64 {
        row / self.count + u64::from(row % self.count > self.index - 1)
    }

    /// The first row of this shard at or after `row`.
    pub fn first_at_or_after(self, row: u64) -> u64 {
        let offset = (self.index - 1 + self.count - row % self.count) % self.count;
        row + offset
    }

    pub fn label(self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

/// Memory limits for the watchdog, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssLimits {
    pub soft: u64,
    pub hard: u64,
}

/// A validated `esmbench test` run.
#[derive(Debug, Clone)]
pub struct TestConfig {
    pub scoring: ScoringConfig,
    pub out_dir: PathBuf,
    /// The threshold asked for (flag or config, a value or an assay preset); None defers to the head.
    pub threshold: Option<Threshold>,
    /// Bootstrap resamples for the metric intervals; 0 turns them off.
    pub bootstrap: usize,
    pub long_run: LongRun,
    /// The run's report will be gated on (or recorded as) metrics, so data with no label is refused before
    /// the model loads rather than after every row is scored. Set by the command from its gate flags.
    pub needs_labels: bool,
}

/// The memory watchdog, checkpoints and resume of a `test` or `embed` run.
#[derive(Debug, Clone)]
pub struct LongRun {
    pub rss_limits: Option<RssLimits>,
    pub resume: bool,
    pub checkpoint_every: std::time::Duration,
}

pub const DEFAULT_CHECKPOINT_SECONDS: u64 = 30;
/// The largest token budget per batch `--max-tokens` takes (2^20).
pub const MAX_TOKENS_LIMIT: usize = 1 << 20;

/// The YAML file: every key optional, unknown keys rejected so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub model: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub head: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub device: Option<DeviceArg>,
    pub allow_cpu_fallback: Option<bool>,
    pub max_tokens: Option<usize>,
    pub threads: Option<usize>,
    pub parallel_batches: Option<usize>,
    pub max_residues: Option<usize>,
    pub truncate: Option<bool>,
    pub threshold: Option<f64>,
    pub assay: Option<AssayArg>,
    pub bootstrap: Option<usize>,
    pub columns: Option<ColumnKeys>,
    pub on_invalid: Option<OnInvalid>,
    pub intra_op_spinning: Option<bool>,
    pub io_binding: Option<bool>,
    pub graph_rewrite: Option<bool>,
    pub max_rss: Option<String>,
    pub soft_rss: Option<String>,
    pub checkpoint_seconds: Option<u64>,
    /// A models x datasets suite (see `suite`): every model is scored on every dataset.
    pub models: Option<Vec<suite::ModelEntry>>,
    pub datasets: Option<Vec<suite::DatasetEntry>>,
    /// Folder of per-run baselines (`<model>.<data>.json`) that gate a suite.
    pub baselines: Option<PathBuf>,
    /// The file these keys were read from (not a key): messages about its values name it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl FileConfig {
    /// The file's path as messages name it ("the config" for settings made without one, in tests).
    pub fn source_name(&self) -> String {
        self.source
            .as_ref()
            .map_or("the config".to_string(), |path| path.display().to_string())
    }

    /// A setting as the user gave it, for messages: `--max-tokens 2` from the command line, `max_tokens: 2`
    /// (in run.yaml) from this file, or `--threads 2 (the default)` from neither.
    pub fn given(
        &self,
        from_flag: bool,
        flag: &str,
        key: &'static str,
        value: impl std::fmt::Display,
    ) -> String {
        match (&self.source, from_flag, self.sets(key)) {
            (_, true, _) => format!("{flag} {value}"),
            (Some(file), false, true) => format!("`{key}: {value}` (in {})", file.display()),
            _ => format!("{flag} {value} (the default)"),
        }
    }

    /// An option as the user gave it: `--data`, or `data:` (in run.yaml) where the file set it.
    pub fn named(&self, from_flag: bool, flag: &str, key: &'static str) -> String {
        match (&self.source, from_flag, self.sets(key)) {
            (Some(file), false, true) => format!("`{key}:` (in {})", file.display()),
            _ => flag.to_string(),
        }
    }

    fn sets(&self, key: &'static str) -> bool {
        !self.keys_set(&[key]).is_empty()
    }

    /// Which of `keys` this file sets: a command warns of the ones it does not read.
    pub fn keys_set(&self, keys: &[&'static str]) -> Vec<&'static str> {
        keys.iter()
            .copied()
            .filter(|&key| match key {
                "model" => self.model.is_some(),
                "data" => self.data.is_some(),
                "device" => self.device.is_some(),
                "max_tokens" => self.max_tokens.is_some(),
                "threads" => self.threads.is_some(),
                "parallel_batches" => self.parallel_batches.is_some(),
                "max_residues" => self.max_residues.is_some(),
                "head" => self.head.is_some(),
                "out" => self.out.is_some(),
                "threshold" => self.threshold.is_some(),
                "assay" => self.assay.is_some(),
                "bootstrap" => self.bootstrap.is_some(),
                "max_rss" => self.max_rss.is_some(),
                "soft_rss" => self.soft_rss.is_some(),
                "checkpoint_seconds" => self.checkpoint_seconds.is_some(),
                "models" => self.models.is_some(),
                "datasets" => self.datasets.is_some(),
                "baselines" => self.baselines.is_some(),
                _ => false,
            })
            .collect()
    }

    /// A suite config (models x datasets) names no single model and data; a command that runs one model on one
    /// dataset would quietly fall back to the embedded demo without --model and --data, so it is refused.
    pub fn refuse_suite_without_model_and_data(
        &self,
        config_name: &str,
        model_flag: bool,
        data_flag: bool,
        command: &str,
    ) -> Result<()> {
        let suite = self.models.is_some() || self.datasets.is_some();
        let model_named = model_flag || self.model.is_some();
        let data_named = data_flag || self.data.is_some();
        if suite && !(model_named && data_named) {
            return Err(Failure::usage(format!(
                "{config_name}: `models` and `datasets` describe an `esmbench test` suite, and {command} one \
model on one dataset\n  fix: pass --model M.onnx and --data D.csv, or use a config with `model` and `data`"
            ))
            .into());
        }
        Ok(())
    }

    /// Reads a YAML config; relative paths in it are taken relative to the file's own folder.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!(
                "cannot read config {}: {e}\n  fix: check the path given to --config",
                path.display()
            ))
        })?;
        // Windows editors start a UTF-8 file with a byte-order mark, which the YAML parser reads as content
        // (refusing the file as "more than one document", or reading the first key under another name).
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut config: FileConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let message = e.to_string();
            let (place, message) = match duplicate_key_line(&message, text) {
                // The parser's own location (the start of the mapping) would contradict the line found.
                Some(line) => (
                    format!(":{line}:1"),
                    message.rsplit_once(" at line ").map_or(message.clone(), |(m, _)| m.to_string()),
                ),
                None => (
                    e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default(),
                    message,
                ),
            };
            Failure::usage(format!(
                "config {}{place}: {message}\n  fix: keys are model, data, head, out, device, allow_cpu_fallback, max_tokens, threads, parallel_batches, max_residues, truncate, threshold, \
assay, bootstrap, columns {{sequence, label, id}}, on_invalid, intra_op_spinning, io_binding, graph_rewrite, max_rss, soft_rss, checkpoint_seconds, \
models [{{model, head, name}}], datasets [{{data, name, threshold, assay}}], baselines",
                path.display()
            ))
        })?;
        config.source = Some(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new(""));
        for slot in [
            &mut config.model,
            &mut config.data,
            &mut config.head,
            &mut config.out,
            &mut config.baselines,
        ] {
            if let Some(p) = slot.as_mut() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        for entry in config.models.iter_mut().flatten() {
            entry.rebase(base);
        }
        for entry in config.datasets.iter_mut().flatten() {
            entry.rebase(base);
        }
        Ok(config)
    }
}

/// The line of a top-level key's second appearance, for serde's "duplicate field `KEY`", which the parser
/// locates at the start of the file. None for a key that is not written twice at the top level (a nested
/// duplicate keeps the parser's location).
fn duplicate_key_line(message: &str, text: &str) -> Option<usize> {
    let key = message
        .split("duplicate field `")
        .nth(1)?
        .split('`')
        .next()?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .nth(1)
        .map(|(i, _)| i + 1)
}

impl ScoringConfig {
    /// Batches in flight and ONNX Runtime intra-op threads per batch, for a session on CPU.
    pub fn cpu_parallelism(&self) -> (usize, usize) {
        cpu_parallelism(self.threads, self.parallel_batches)
    }

    /// What the model side needs to load this run's model.
    pub fn load_settings(&self) -> LoadSettings {
        LoadSettings {
            source: self.model.clone(),
            device: self.device,
            threads: self.threads,
            cpu_parallelism: self.cpu_parallelism(),
            parallel_batches_asked: self.parallel_batches,
            max_tokens: self.max_tokens,
            max_residues: self.max_residues,
            intra_op_spinning: self.intra_op_spinning,
            io_binding: self.io_binding,
            graph_rewrite: self.graph_rewrite,
            mock_backend: self.mock_backend,
        }
    }

    pub fn resolve(args: &ScoringArgs, file: &FileConfig) -> Result<ScoringConfig> {
        let model_path = args.model.clone().or_else(|| file.model.clone());
        let data_path = args.data.clone().or_else(|| file.data.clone());
        let (model, data) = match (model_path, data_path) {
            (None, None) => {
                if let Some(config) = &args.config {
                    // A config meant to name the data (an empty file, keys under a typo'd parent) would
                    // otherwise score the demo (or train a head on it) and exit 0 with numbers that look
                    // like results.
                    return Err(Failure::usage(format!(
                        "{} names no model or data, and neither --model nor --data was given\n  \
fix: add `model:` and `data:` to it, or pass --model and --data (the embedded demo runs with neither a config \
nor --model and --data)",
                        config.display()
                    ))
                    .into());
                }
                (ModelSource::Embedded, DataSource::Embedded)
            }
            (Some(m), Some(d)) => (ModelSource::File(m), DataSource::File(d)),
            (Some(_), None) => {
                return Err(Failure::usage(format!(
                    "{} was given without a data file\n  fix: add {}, or drop both to run the embedded demo",
                    file.named(args.model.is_some(), "--model", "model"),
                    if args.model.is_some() {
                        "--data FILE.csv"
                    } else {
                        "`data: FILE.csv`"
                    },
                ))
                .into())
            }
            (None, Some(_)) => {
                return Err(Failure::usage(format!(
                    "{} was given without a model\n  fix: add {}, or drop both to run the embedded demo",
                    file.named(args.data.is_some(), "--data", "data"),
                    if args.data.is_some() {
                        "--model FILE.onnx"
                    } else {
                        "`model: FILE.onnx`"
                    },
                ))
                .into())
            }
        };
        if let ModelSource::File(p) = &model {
            check_model_file(p, &file.named(args.model.is_some(), "--model", "model"))?;
        }
        if let DataSource::File(p) = &data {
            check_readable(
                p,
                "data",
                &file.named(args.data.is_some(), "--data", "data"),
            )?;
        }
        let head = args.head.clone().or_else(|| file.head.clone());
        if let Some(p) = &head {
            check_head(p, &file.named(args.head.is_some(), "--head", "head"))?;
        }
        let max_tokens = args.engine.max_tokens.or(file.max_tokens);
        let max_tokens_given = |m: usize| {
            file.given(
                args.engine.max_tokens.is_some(),
                "--max-tokens",
                "max_tokens",
                m,
            )
        };
        if let Some(max_tokens) = max_tokens.filter(|&m| m < 3) {
            return Err(Failure::usage(format!(
                "{} cannot hold one residue with <cls> and <eos>\n  fix: use at least 3 (typical: 512 on CPU, 2048 and up on a GPU)",
                max_tokens_given(max_tokens)
            ))
            .into());
        }
        if let Some(max_tokens) = max_tokens.filter(|&m| m > MAX_TOKENS_LIMIT) {
            // The reader holds 16 batches' worth of rows to sort by length: a budget this size would hold a
            // Harvey-sized file in memory whole, and one batch's activations would not fit any GPU.
            return Err(Failure::usage(format!(
                "{} is above {MAX_TOKENS_LIMIT}\n  fix: use at most {MAX_TOKENS_LIMIT} (typical: 512 on CPU, 2048 to 65536 on a GPU)",
                max_tokens_given(max_tokens)
            ))
            .into());
        }
        let given_threads = args.engine.threads.or(file.threads);
        let threads = given_threads.unwrap_or_else(default_threads);
        let threads_given = file.given(
            args.engine.threads.is_some(),
            "--threads",
            "threads",
            threads,
        );
        if threads == 0 || threads > 1024 {
            return Err(Failure::usage(format!(
                "{threads_given} is out of range\n  fix: use 1..=1024 (default: physical cores)"
            ))
            .into());
        }
        let parallel_batches = args.engine.parallel_batches.or(file.parallel_batches);
        let parallel_batches_named = file.named(
            args.engine.parallel_batches.is_some(),
            "--parallel-batches",
            "parallel_batches",
        );
        if let Some(k) = parallel_batches {
            if k == 0 || k > threads {
                return Err(Failure::usage(format!(
                    "{} does not fit {threads_given}: every batch in flight needs at least one thread\n  fix: use 1..={threads}",
                    file.given(args.engine.parallel_batches.is_some(), "--parallel-batches", "parallel_batches", k)
                ))
                .into());
            }
        }
        let max_residues = args
            .engine
            .max_residues
            .or(file.max_residues)
            .unwrap_or(DEFAULT_MAX_RESIDUES);
        if max_residues == 0 {
            return Err(Failure::usage(format!(
                "{} would score nothing\n  fix: use a positive length (ESM's limit is 1022)",
                file.given(
                    args.engine.max_residues.is_some(),
                    "--max-residues",
                    "max_residues",
                    0
                )
            ))
            .into());
        }
        let engine = &args.engine;
        let truncate = switch(engine.truncate, engine.no_truncate, file.truncate, true);
        let keys = file.columns.clone().unwrap_or_default();
        let mut columns = ColumnNames::default();
        // A flag over its key; header names are read trimmed, and so is the name asked for.
        for (name, named, flag, key) in [
            (
                &mut columns.sequence,
                0,
                &args.sequence_column,
                &keys.sequence,
            ),
            (&mut columns.label, 1, &args.label_column, &keys.label),
            (&mut columns.id, 2, &args.id_column, &keys.id),
        ] {
            if let Some(given) = flag.as_ref().or(key.as_ref()) {
                *name = given.trim().to_string();
                columns.named[named] = true;
            }
        }
        let device = DeviceRequest {
            device: args
                .engine
                .device
                .or(file.device)
                .map_or(Device::Cpu, Device::from),
            allow_cpu_fallback: switch(
                engine.allow_cpu_fallback,
                engine.no_allow_cpu_fallback,
                file.allow_cpu_fallback,
                false,
            ),
        };
        let accelerator = matches!(device.device, Device::Cuda | Device::CoreMl);
        // `auto` may land on CUDA or CoreML, so it is counted as the larger of the two shapes.
        let may_use_accelerator = device.device != Device::Cpu;
        let threads = fit_thread_limit(
            threads,
            given_threads.is_some(),
            parallel_batches,
            may_use_accelerator,
            crate::threads::limit().as_ref(),
        )?;
        let allowed = std::thread::available_parallelism().map_or(threads, |n| n.get());
        if let Some(warning) = given_threads.and_then(|t| oversubscription_warning(t, allowed)) {
            // Once per process: a suite resolves one run per model and dataset.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| crate::errln!("{warning}"));
        }
        if accelerator && !device.allow_cpu_fallback && parallel_batches.is_some_and(|k| k > 1) {
            return Err(Failure::usage(format!(
                "{parallel_batches_named} applies to CPU runs; {} runs one batch at a time\n  fix: drop {parallel_batches_named}, or raise the token budget (--max-tokens) to give the device larger batches",
                file.given(args.engine.device.is_some(), "--device", "device", device.device.name())
            ))
            .into());
        }
        Ok(ScoringConfig {
            model,
            data,
            head,
            device,
            max_tokens,
            threads,
            parallel_batches,
            max_residues,
            truncate,
            columns,
            skip_invalid: args.on_invalid.or(file.on_invalid) == Some(OnInvalid::Skip),
            intra_op_spinning: switch(
                engine.spinning,
                engine.no_spinning,
                file.intra_op_spinning,
                true,
            ),
            io_binding: switch(
                engine.io_binding,
                engine.no_io_binding,
                file.io_binding,
                true,
            ),
            graph_rewrite: switch(
                engine.graph_rewrite,
                engine.no_graph_rewrite,
                file.graph_rewrite,
                true,
            ),
            shard: args
                .shard
                .as_deref()
                .map(Shard::parse)
                .transpose()?
                .unwrap_or(Shard::WHOLE),
            mock_backend: args.engine.mock_backend,
        })
    }
}

/// `embed` and `fit` on the embedded demo say so: their outputs (an .npy, a head) carry no report that would.
pub fn note_demo(command: &str, doing: &str, scoring: &ScoringConfig) {
    if matches!(scoring.model, ModelSource::Embedded) {
        crate::errln!(
            "esmbench {command}: no --model or --data: {doing} the embedded demo (a few-KB model, 96 synthetic rows)"
        );
    }
}

/// An on/off setting: its flag pair (`--x`/`--no-x`; clap keeps only the last given), else its config key,
/// else the default. The pair lets a flag undo a config file's key in either direction.
fn switch(on_flag: bool, off_flag: bool, key: Option<bool>, default: bool) -> bool {
    if on_flag {
        true
    } else if off_flag {
        false
    } else {
        key.unwrap_or(default)
    }
}

/// A head is read in full here, so a misspelt key or a bad threshold stops the run before a model loads (in
/// a suite, before the first model scores its datasets). Its size against the model's hidden size can only
/// be checked once the model has loaded.
fn check_head(path: &Path, named: &str) -> Result<()> {
    check_readable(path, "head", named)?;
    crate::model::head::Head::read(path).map(drop)
}

fn check_readable(path: &Path, what: &str, flag: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        // The data is read twice (validated before the model loads, then scored) and hashed for --resume,
        // which a pipe cannot give.
        return Err(Failure::usage(format!(
            "{flag} - (standard input) is not supported: esmbench reads its {what} file more than once\n  fix: save the stream to a file and pass its path"
        ))
        .into());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| Failure::usage(format!("{what} file {} cannot be opened: {e}\n  fix: check its permissions", path.display())).into()),
        Ok(meta) if meta.is_dir() => Err(Failure::usage(format!("{what} path {} is a directory\n  fix: pass a file to {flag} (the file inside it)", path.display())).into()),
        Ok(meta) if is_stream(&meta) => Err(Failure::usage(format!(
            "{what} path {} is a pipe or a device (process substitution `<(...)`, a FIFO, /dev/stdin, /dev/null), not a \
file: esmbench reads its {what} file more than once\n  fix: pass a file to {flag}{}",
            path.display(),
            if flag == "--data" {
                " (save a stream to a file first; gzipped data is read as it is: --data file.csv.gz)"
            } else {
                ""
            }
        ))
        .into()),
        Ok(_) => Err(Failure::usage(format!("{what} path {} is not a file\n  fix: pass a file to {flag}", path.display())).into()),
        Err(e) => Err(Failure::usage(format!("{what} file {} not found ({e})\n  fix: check the path given to {flag} (relative paths in a config file are relative to that file)", path.display())).into()),
    }
}

/// The --model path (`named` as the user gave it) is a readable file that is not plain text.
pub fn check_model_file(path: &Path, named: &str) -> Result<()> {
    check_readable(path, "model", named)?;
    refuse_text_as_model(path)?;
    for data in crate::model::external_data::files(path) {
        if !data.is_file() {
            return Err(Failure::usage(format!(
                "model {} keeps its weights in {}, which is missing\n  fix: keep the external data file the export wrote next to the .onnx (copy both; the .onnx alone holds only the graph)",
                path.display(),
                data.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// An ONNX file is binary protobuf from its first byte (field 1's tag, 0x08). A model path whose start reads
/// as text is the CSV, the head's JSON or a config given to --model (often --model and --data swapped), which
/// ONNX Runtime would only call a protobuf parsing failure.
fn refuse_text_as_model(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut start = Vec::with_capacity(512);
    let read = std::fs::File::open(path).and_then(|f| f.take(512).read_to_end(&mut start));
    if read.is_err() || start.is_empty() || !looks_like_text(&start) {
        return Ok(());
    }
    let first_line = String::from_utf8_lossy(&start);
    let first_line = first_line.lines().next().unwrap_or("").trim();
    let shown: String = first_line.chars().take(60).collect();
    let cut = if shown.len() < first_line.len() {
        "..."
    } else {
        ""
    };
    Err(Failure::usage(format!(
        "model file {} is a text file (it begins `{shown}{cut}`), not an ONNX model\n  fix: pass the .onnx file to --model (and the CSV of sequences to --data)",
        path.display()
    ))
    .into())
}

/// Printable text (UTF-8 letters included) with no control bytes but tab and line ends.
fn looks_like_text(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || matches!(b, b'\t' | b'\n' | b'\r'))
}

/// The model, data or head file is one the run is about to write (`--data results/x/predictions.csv --out
/// results/x`): refused before the run truncates the input it is reading.
pub fn refuse_inputs_among_outputs(
    scoring: &ScoringConfig,
    outputs: &[PathBuf],
    out_flag: &str,
) -> Result<()> {
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    if let ModelSource::File(p) = &scoring.model {
        inputs.push(("--model", p));
    }
    if let DataSource::File(p) = &scoring.data {
        inputs.push(("--data", p));
    }
    if let Some(p) = &scoring.head {
        inputs.push(("--head", p));
    }
    for (flag, input) in inputs {
        if let Some(output) = outputs.iter().find(|output| same_file(input, output)) {
            return Err(Failure::usage(format!(
                "{flag} {} is {}, a file this run writes (given {out_flag}): the run would overwrite what it reads\n  \
fix: pass another {out_flag}, or keep the input elsewhere",
                input.display(),
                output.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Both paths name one existing file (hard links and symlinks included).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => {
            matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

/// A FIFO or a character device such as /dev/stdin or /dev/fd/N: readable once, from the start only.
fn is_stream(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_fifo() || meta.file_type().is_char_device()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Makes sure `dir` exists and a file can be created in it, so a run never computes for an hour and then fails to write.
/// `flag` is the option that named it, for the fix.
pub fn ensure_writable_dir(dir: &Path, flag: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::usage(format!(
            "output directory {} cannot be created: {e}\n  fix: pass a writable {flag}",
            dir.display()
        ))
    })?;
    write_probe(dir).map_err(|e| {
        Failure::usage(format!(
            "output directory {} is not writable: {e}\n  fix: pass a writable {flag}",
            dir.display()
        ))
    })?;
    Ok(())
}

/// `--out` names a file (the `what` file, such as `example`), not a directory, in a folder that can be written.
pub fn ensure_output_file(out: &Path, what: &str, example: &str) -> Result<()> {
    if out.is_dir() {
        return Err(Failure::usage(format!(
            "--out {} is a directory\n  fix: name the {what} file, e.g. --out {}",
            out.display(),
            out.join(example).display()
        ))
        .into());
    }
    match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => ensure_writable_dir(parent, "--out"),
        None => Ok(()),
    }
}

/// Creates and removes a small file in `dir`: whether a file can be written there, asked before the run.
pub fn write_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".esmbench-write-check");
    std::fs::write(&probe, b"")?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl LongRun {
    pub fn resolve(args: &crate::cli::LongRunArgs, file: &FileConfig) -> Result<LongRun> {
        let max_rss = args.max_rss.clone().or_else(|| file.max_rss.clone());
        let soft_rss = args.soft_rss.clone().or_else(|| file.soft_rss.clone());
        let max_rss_named = file.named(args.max_rss.is_some(), "--max-rss", "max_rss");
        let soft_rss_named = file.named(args.soft_rss.is_some(), "--soft-rss", "soft_rss");
        let rss_limits = match (max_rss, soft_rss) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Failure::usage(format!(
                    "{soft_rss_named} needs a hard limit\n  fix: add --max-rss SIZE (or `max_rss:`; e.g. 8GiB)"
                ))
                .into())
            }
            (Some(hard), soft) => {
                let hard = parse_bytes(
                    &hard,
                    &file.given(args.max_rss.is_some(), "--max-rss", "max_rss", &hard),
                )?;
                let soft = match soft {
                    Some(s) => parse_bytes(
                        &s,
                        &file.given(args.soft_rss.is_some(), "--soft-rss", "soft_rss", &s),
                    )?,
                    None => hard / 10 * 8,
                };
                if soft > hard {
                    return Err(Failure::usage(format!(
                        "{soft_rss_named} is above {max_rss_named}\n  fix: the soft limit must be the lower one"
                    ))
                    .into());
                }
                Some(RssLimits { soft, hard })
            }
        };
        let checkpoint_seconds = args
            .checkpoint_seconds
            .or(file.checkpoint_seconds)
            .unwrap_or(DEFAULT_CHECKPOINT_SECONDS);
        if checkpoint_seconds == 0 {
            return Err(Failure::usage(format!(
                "{} would checkpoint after every batch\n  fix: use 1 or more (default {DEFAULT_CHECKPOINT_SECONDS})",
                file.given(args.checkpoint_seconds.is_some(), "--checkpoint-seconds", "checkpoint_seconds", 0)
            ))
            .into());
        }
        Ok(LongRun {
            rss_limits,
            resume: args.resume,
            checkpoint_every: std::time::Duration::from_secs(checkpoint_seconds),
        })
    }
}

/// A validated `esmbench embed` run.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    pub scoring: ScoringConfig,
    /// E.npy; E.rows.csv, E.skipped.csv and E.checkpoint.json (marked complete when the run ends) go beside it.
    pub out: PathBuf,
    pub long_run: LongRun,
}

/// Keys of a config shared with `esmbench test` that embed does not read.
const KEYS_EMBED_IGNORES: [&str; 8] = [
    "head",
    "out",
    "threshold",
    "assay",
    "bootstrap",
    "models",
    "datasets",
    "baselines",
];

impl EmbedConfig {
    pub fn resolve(args: &crate::cli::EmbedArgs) -> Result<EmbedConfig> {
        let config = args.scoring.config.as_deref();
        let mut file = load_file_config(config)?;
        let config_name = config.map(|p| p.display().to_string()).unwrap_or_default();
        if args.scoring.head.is_some() {
            return Err(Failure::usage(
                "embed writes the encoder's pooled embeddings and applies no head, so --head would be ignored\n  fix: drop it; `esmbench test` is the command that applies a head",
            )
            .into());
        }
        file.refuse_suite_without_model_and_data(
            &config_name,
            args.scoring.model.is_some(),
            args.scoring.data.is_some(),
            "embed writes the embeddings of",
        )?;
        let ignored = file.keys_set(&KEYS_EMBED_IGNORES);
        if !ignored.is_empty() {
            crate::errln!(
                "esmbench embed: {config_name}: ignoring keys that only `esmbench test` uses: {} (the embeddings go to --out)",
                ignored.join(", ")
            );
        }
        // A config shared with `test` names its head; the embeddings do not depend on it.
        file.head = None;
        let scoring = ScoringConfig::resolve(&args.scoring, &file)?;
        note_demo("embed", "embedding", &scoring);
        let long_run = LongRun::resolve(&args.long_run, &file)?;
        let out = args.out.clone();
        ensure_output_file(&out, "embeddings", "embeddings.npy")?;
        // numpy reads a file by its bytes, but `np.load("x.npz")` expects an archive and other tools go by the name.
        if !out
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            return Err(Failure::usage(format!(
                "--out {}: embed writes one NumPy array, a .npy file\n  fix: name it .npy, e.g. --out {}",
                out.display(),
                out.with_extension("npy").display()
            ))
            .into());
        }
        let (rows, skipped) = crate::report::embed_companions(&out);
        refuse_inputs_among_outputs(&scoring, &[out.clone(), rows, skipped], "--out")?;
        Ok(EmbedConfig {
            scoring,
            out,
            long_run,
        })
    }
}

impl TestConfig {
    pub fn resolve(args: &crate::cli::TestArgs) -> Result<TestConfig> {
        let file = load_file_config(args.scoring.config.as_deref())?;
        TestConfig::resolve_with(args, &file)
    }

    /// Flags over an already loaded YAML file.
    pub fn resolve_with(args: &crate::cli::TestArgs, file: &FileConfig) -> Result<TestConfig> {
        let scoring = ScoringConfig::resolve(&args.scoring, file)?;
        let out_dir = args
            .out
            .clone()
            .or_else(|| file.out.clone())
            .unwrap_or_else(|| {
                PathBuf::from("results")
                    .join(model_stem(&scoring.model))
                    .join(scoring.data.stem())
            });
        let threshold = threshold::requested(
            args.threshold,
            args.assay.map(Into::into),
            file.threshold,
            file.assay.map(Into::into),
            &file.source_name(),
        )?;
        let bootstrap = check_bootstrap(args.bootstrap.or(file.bootstrap), &|n| {
            file.given(args.bootstrap.is_some(), "--bootstrap", "bootstrap", n)
        })?;
        let long_run = LongRun::resolve(&args.long_run, file)?;
        ensure_writable_dir(&out_dir, &file.named(args.out.is_some(), "--out", "out"))?;
        refuse_inputs_among_outputs(
            &scoring,
            &crate::report::test_output_files(&out_dir),
            "--out",
        )?;
        Ok(TestConfig {
            scoring,
            out_dir,
            threshold,
            long_run,
            bootstrap,
            needs_labels: false,
        })
    }
}

/// Sizes such as 8GiB, 512MiB, 2GB or a plain byte count; `given` names the setting as the user gave it.
pub fn parse_bytes(text: &str, given: &str) -> Result<u64> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            Failure::usage(format!(
                "{given} is not a size\n  fix: write it like 8GiB, 512MiB or 2GB"
            ))
            .into()
        })
}

/// Bootstrap resamples: the default when unset, refused past what could finish in reasonable time. `given`
/// names a value as the user gave it.
pub fn check_bootstrap(requested: Option<usize>, given: &dyn Fn(usize) -> String) -> Result<usize> {
    let n = requested.unwrap_or(bootstrap::DEFAULT_RESAMPLES);
    if n > bootstrap::MAX_RESAMPLES {
        return Err(Failure::usage(format!(
            "{} is more resamples than an interval needs\n  fix: use at most {} (default {}; 0 turns the intervals off)",
            given(n),
            bootstrap::MAX_RESAMPLES,
            bootstrap::DEFAULT_RESAMPLES
        ))
        .into());
    }
    Ok(n)
}

pub fn load_file_config(path: Option<&Path>) -> Result<FileConfig> {
    match path {
        Some(p) => FileConfig::load(p).with_context(|| format!("loading config {}", p.display())),
        None => Ok(FileConfig::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::EngineArgs;

    #[test]
    fn cpu_threads_are_split_across_the_batches_in_flight() {
        let with = |threads, parallel_batches| {
            let file = FileConfig {
                threads: Some(threads),
                parallel_batches,
                ..Default::default()
            };
            ScoringConfig::resolve(&ScoringArgs::default(), &file)
                .unwrap()
                .cpu_parallelism()
        };
        assert_eq!(with(1, None), (1, 1));
        assert_eq!(with(2, None), (2, 1));
        assert_eq!(with(16, None), (8, 2));
        assert_eq!(with(6, Some(4)), (4, 1));
        assert_eq!(with(8, Some(1)), (1, 8));
        for (threads, k) in [(2, 3), (4, 0)] {
            let file = FileConfig {
                threads: Some(threads),
                parallel_batches: Some(k),
                ..Default::default()
            };
            let err = ScoringConfig::resolve(&ScoringArgs::default(), &file).unwrap_err();
            assert!(err.to_string().contains("fix: use 1..="), "{err}");
        }
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let file = FileConfig {
            max_tokens: Some(100),
            threads: Some(3),
            device: Some(DeviceArg::Cuda),
            ..Default::default()
        };
        let args = ScoringArgs {
            engine: EngineArgs {
                max_tokens: Some(200),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = ScoringConfig::resolve(&args, &file).unwrap();
        assert_eq!(config.max_tokens, Some(200));
        assert_eq!(config.threads, 3);
        assert_eq!(config.device.device, Device::Cuda);
        assert!(!config.device.allow_cpu_fallback);
        assert_eq!(config.model, ModelSource::Embedded);
    }

    #[test]
    fn graph_rewrite_is_on_by_default_and_off_from_the_file_or_the_flag() {
        let data = ScoringArgs::default();
        assert!(
            ScoringConfig::resolve(&data, &FileConfig::default())
                .unwrap()
                .graph_rewrite
        );
        let file_off = FileConfig {
            graph_rewrite: Some(false),
            ..Default::default()
        };
        assert!(
            !ScoringConfig::resolve(&data, &file_off)
                .unwrap()
                .graph_rewrite
        );
        let flag_off = ScoringArgs {
            engine: EngineArgs {
                no_graph_rewrite: true,
                ..Default::default()
            },
            ..data
        };
        assert!(
            !ScoringConfig::resolve(&flag_off, &FileConfig::default())
                .unwrap()
                .graph_rewrite
        );
    }

    #[test]
    fn each_on_off_flag_undoes_its_config_key_either_way_and_the_last_flag_given_wins() {
        use clap::Parser;
        let resolve = |flags: &[&str], file: &FileConfig| {
            let argv = ["esmbench", "test"].iter().chain(flags);
            let crate::cli::Command::Test(args) = crate::cli::Cli::try_parse_from(argv)
                .expect("flags parse")
                .command
            else {
                unreachable!("parsed as test")
            };
            ScoringConfig::resolve(&args.scoring, file).expect("resolves")
        };
        type Read = fn(&ScoringConfig) -> bool;
        type Set = fn(bool) -> FileConfig;
        let settings: [(&str, Read, Set, bool); 5] = [
            (
                "truncate",
                |c| c.truncate,
                |v| FileConfig {
                    truncate: Some(v),
                    ..Default::default()
                },
                true,
            ),
            (
                "spinning",
                |c| c.intra_op_spinning,
                |v| FileConfig {
                    intra_op_spinning: Some(v),
                    ..Default::default()
                },
                true,
            ),
            (
                "io-binding",
                |c| c.io_binding,
                |v| FileConfig {
                    io_binding: Some(v),
                    ..Default::default()
                },
                true,
            ),
            (
                "graph-rewrite",
                |c| c.graph_rewrite,
                |v| FileConfig {
                    graph_rewrite: Some(v),
                    ..Default::default()
                },
                true,
            ),
            (
                "allow-cpu-fallback",
                |c| c.device.allow_cpu_fallback,
                |v| FileConfig {
                    allow_cpu_fallback: Some(v),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (name, read, key, default) in settings {
            let (on, off) = (format!("--{name}"), format!("--no-{name}"));
            let none = FileConfig::default();
            assert_eq!(read(&resolve(&[], &none)), default, "{name} default");
            assert_eq!(read(&resolve(&[], &key(!default))), !default, "{name}: key");
            let undo = if default { &on } else { &off };
            assert_eq!(
                read(&resolve(&[undo], &key(!default))),
                default,
                "{name}: {undo} over the key"
            );
            let set = if default { &off } else { &on };
            assert_eq!(
                read(&resolve(&[set], &key(default))),
                !default,
                "{name}: {set} over the key"
            );
            assert!(
                read(&resolve(&[&off, &on], &none)),
                "{name}: {on} given last"
            );
            assert!(
                !read(&resolve(&[&on, &off], &none)),
                "{name}: {off} given last"
            );
        }
    }

    #[test]
    fn io_binding_is_on_by_default_and_off_from_the_file_or_the_flag() {
        let data = ScoringArgs::default();
        let on = ScoringConfig::resolve(&data, &FileConfig::default()).unwrap();
        assert!(on.io_binding);
        let file_off = FileConfig {
            io_binding: Some(false),
            ..Default::default()
        };
        assert!(!ScoringConfig::resolve(&data, &file_off).unwrap().io_binding);
        let flag_off = ScoringArgs {
            engine: EngineArgs {
                no_io_binding: true,
                ..Default::default()
            },
            ..data.clone()
        };
        let config = ScoringConfig::resolve(&flag_off, &FileConfig::default()).unwrap();
        assert!(!config.io_binding);
    }

    #[test]
    fn model_without_data_is_a_usage_error() {
        let args = ScoringArgs {
            model: Some("m.onnx".into()),
            ..Default::default()
        };
        let err = ScoringConfig::resolve(&args, &FileConfig::default()).unwrap_err();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        assert!(err.to_string().contains("--data"));
    }

    #[test]
    fn standard_input_as_data_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"").unwrap();
        let args = ScoringArgs {
            model: Some(model),
            data: Some("-".into()),
            ..Default::default()
        };
        let err = ScoringConfig::resolve(&args, &FileConfig::default()).unwrap_err();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        let text = err.to_string();
        assert!(
            text.contains("--data - (standard input) is not supported")
                && text.contains("fix: save the stream"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_config_file_is_a_usage_error_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileConfig::load(&dir.path().join("absent.yaml")).unwrap_err();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        let text = format!("{err:#}");
        assert!(
            text.contains("absent.yaml") && text.contains("fix: check the path given to --config"),
            "{text}"
        );
    }

    #[test]
    fn unknown_yaml_keys_are_rejected_with_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "max_tokens: 10\nmax_tokns: 5\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("c.yaml:2"), "{text}");
        assert!(text.contains("max_tokns"), "{text}");
    }

    #[test]
    fn shards_split_rows_round_robin_and_find_their_next_row() {
        let second_of_three = Shard::parse("2/3").unwrap();
        let rows: Vec<u64> = (0..9).filter(|&r| second_of_three.contains(r)).collect();
        assert_eq!(rows, vec![1, 4, 7]);
        assert_eq!(second_of_three.first_at_or_after(0), 1);
        assert_eq!(second_of_three.first_at_or_after(2), 4);
        assert_eq!(second_of_three.first_at_or_after(4), 4);
        assert_eq!(Shard::WHOLE.first_at_or_after(5), 5);
        // Rows 1, 4, 7 are the shard's: below 0, 1, 2, 5, 7, 8 and 9 it holds 0, 0, 1, 2, 2, 3 and 3.
        let below: Vec<u64> = [0, 1, 2, 5, 7, 8, 9]
            .into_iter()
            .map(|r| second_of_three.rows_below(r))
            .collect();
        assert_eq!(below, [0, 0, 1, 2, 2, 3, 3]);
        assert_eq!(Shard::WHOLE.rows_below(141_021), 141_021);
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        // Regression: 2/18446744073709551615 overflowed in first_at_or_after ("rows never delivered").
        let huge = Shard::parse("2/18446744073709551615").unwrap_err();
        assert!(
            huge.to_string().contains("at most 1000000 shards"),
            "{huge}"
        );
        let largest = Shard::parse("1000000/1000000").unwrap();
        let near_the_end = u64::MAX - 2_000_000;
        let next = largest.first_at_or_after(near_the_end);
        assert!(largest.contains(next) && (near_the_end..near_the_end + 1_000_000).contains(&next));
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_bytes("8GiB", "--max-rss").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("512MiB", "--max-rss").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GB", "--max-rss").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots", "--max-rss lots").is_err());
    }

    #[test]
    fn relative_paths_in_a_config_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "data: sub/d.csv\nmodel: /abs/m.onnx\n").unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.data.unwrap(), dir.path().join("sub/d.csv"));
        assert_eq!(config.model.unwrap(), PathBuf::from("/abs/m.onnx"));
    }
}
