//! A models x datasets suite from one YAML config: every run resolved and checked before any model loads.
//!
//! The config names `models: [{model, head, name}]` and `datasets: [{data, name, threshold | assay}]`; each pair
//! becomes one ordinary `TestConfig` writing to `<out>/<model name>/<data name>/`, so a suite run is exactly the runs
//! a user would otherwise start by hand, with each model loaded once for all its datasets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use super::{FileConfig, TestConfig};
use crate::cli::{AssayArg, TestArgs};
use crate::error::Failure;
use crate::metrics::threshold;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub model: PathBuf,
    pub head: Option<PathBuf>,
    /// Folder and summary name (default: the file stem).
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    pub data: PathBuf,
    pub name: Option<String>,
    /// This dataset's threshold (or assay preset), e.g. `assay: psr` for Shehata and Harvey.
    pub threshold: Option<f64>,
    pub assay: Option<AssayArg>,
}

impl ModelEntry {
    pub(super) fn rebase(&mut self, base: &Path) {
        rebase(&mut self.model, base);
        if let Some(head) = self.head.as_mut() {
            rebase(head, base);
        }
    }
}

impl DatasetEntry {
    pub(super) fn rebase(&mut self, base: &Path) {
        rebase(&mut self.data, base);
    }
}

fn rebase(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// One model with the runs (one per dataset) that share its single load.
#[derive(Debug)]
pub struct SuiteModel {
    pub name: String,
    pub runs: Vec<SuiteRun>,
}

#[derive(Debug)]
pub struct SuiteRun {
    pub model: String,
    pub data: String,
    pub config: TestConfig,
    /// The baseline that gates this run, when the suite is gated.
    pub baseline: Option<PathBuf>,
}

#[derive(Debug)]
pub struct SuiteConfig {
    pub models: Vec<SuiteModel>,
    /// summary.json and summary.md go here; each run in `<out>/<model>/<data>/`.
    pub out_dir: PathBuf,
    /// Where `--write-baseline DIR` records one baseline per run.
    pub write_baselines: Option<PathBuf>,
    /// Tolerances recorded in those baselines (--tolerance, --throughput-tolerance).
    pub tolerance: f64,
    pub throughput_tolerance: Option<f64>,
}

impl SuiteConfig {
    pub fn runs(&self) -> impl Iterator<Item = &SuiteRun> {
        self.models.iter().flat_map(|m| m.runs.iter())
    }
}

/// What `esmbench test` will do: one run, or a suite.
#[derive(Debug)]
pub enum TestPlan {
    Single(Box<TestConfig>),
    Suite(SuiteConfig),
}

/// The suite's own files in its `out` folder.
pub const SUMMARY_FILES: [&str; 2] = ["summary.json", "summary.md"];

/// The file name of a run's baseline inside a baselines folder.
pub fn baseline_file(dir: &Path, model: &str, data: &str) -> PathBuf {
    dir.join(format!("{model}.{data}.json"))
}

pub fn resolve_plan(args: &TestArgs) -> Result<TestPlan> {
    let file = super::load_file_config(args.scoring.config.as_deref())?;
    if file.models.is_none() && file.datasets.is_none() {
        if file.baselines.is_some() {
            return Err(Failure::usage(
                "`baselines:` in the config only gates a suite (models: and datasets:)\n  fix: for one run use --baseline B.json",
            )
            .into());
        }
        return Ok(TestPlan::Single(Box::new(TestConfig::resolve_with(
            args, &file,
        )?)));
    }
    resolve_suite(args, &file).map(TestPlan::Suite)
}

fn resolve_suite(args: &TestArgs, file: &FileConfig) -> Result<SuiteConfig> {
    let (Some(models), Some(datasets)) = (&file.models, &file.datasets) else {
        return Err(Failure::usage(
            "a suite config needs both `models:` and `datasets:`\n  fix: list at least one of each",
        )
        .into());
    };
    if models.is_empty() || datasets.is_empty() {
        return Err(Failure::usage(
            "`models:` or `datasets:` is empty\n  fix: list at least one of each",
        )
        .into());
    }
    let single_keys = [
        (args.scoring.model.is_some(), "--model"),
        (args.scoring.data.is_some(), "--data"),
        (args.scoring.head.is_some(), "--head"),
        (file.model.is_some(), "`model:`"),
        (file.data.is_some(), "`data:`"),
        (file.head.is_some(), "`head:`"),
    ];
    if let Some((_, key)) = single_keys.iter().find(|(set, _)| *set) {
        return Err(Failure::usage(format!(
            "{key} cannot be combined with a suite config (models: and datasets:)\n  fix: put every model under `models:` (with its head) and every CSV under `datasets:`"
        ))
        .into());
    }
    let model_names = unique_names(
        models.iter().map(|m| (m.name.clone(), &m.model)).collect(),
        "model",
    )?;
    // Model folders sit beside the suite's own summary files in `out`.
    if let Some(name) = model_names
        .iter()
        .find(|n| SUMMARY_FILES.contains(&n.as_str()))
    {
        return Err(Failure::usage(format!(
            "model name `{name}` is the name of the suite's own summary file, which its folder would take\n  \
fix: give the model another `name:`"
        ))
        .into());
    }
    let data_names = unique_names(
        datasets.iter().map(|d| (d.name.clone(), &d.data)).collect(),
        "dataset",
    )?;
    let out_dir = args
        .out
        .clone()
        .or_else(|| file.out.clone())
        .unwrap_or_else(|| PathBuf::from("results"));
    // Recording baselines reads none: a suite whose config names its baselines folder must be able to
    // record the first ones, or one for a model or dataset just added.
    let baselines_dir = match &args.gate.write_baseline {
        Some(_) => None,
        None => args
            .gate
            .baseline
            .clone()
            .or_else(|| file.baselines.clone()),
    };
    if baselines_dir.is_some() || args.gate.write_baseline.is_some() {
        refuse_shared_baseline_files(&model_names, &data_names)?;
    }
    if let Some(dir) = &baselines_dir {
        if dir.is_file() {
            return Err(Failure::usage(format!(
                "baselines folder {} is a file: in a suite, --baseline (or `baselines:`) names a folder of <model>.<data>.json files\n  \
fix: pass the folder that holds it, e.g. --baseline {}",
                dir.display(),
                dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).display()
            ))
            .into());
        }
        if !dir.is_dir() {
            return Err(Failure::usage(format!(
                "baselines folder {} does not exist\n  fix: in a suite, --baseline (or `baselines:`) names a folder of <model>.<data>.json files; record them with --write-baseline DIR",
                dir.display()
            ))
            .into());
        }
    }

    let config_name = args
        .scoring
        .config
        .as_ref()
        .map_or_else(|| "the config".to_string(), |p| p.display().to_string());
    // Checked here, named as the entries that hold them: each run's own checks would name them as flags.
    for (i, model) in models.iter().enumerate() {
        let place = |key: &str| format!("`{key}:` of models[{i}] (in {config_name})");
        super::check_model_file(&model.model, &place("model"))?;
        if let Some(head) = &model.head {
            super::check_head(head, &place("head"))?;
        }
    }
    for (i, dataset) in datasets.iter().enumerate() {
        super::check_readable(
            &dataset.data,
            "data",
            &format!("`data:` of datasets[{i}] (in {config_name})"),
        )?;
    }
    let mut suite_models = Vec::new();
    for (model, model_name) in models.iter().zip(&model_names) {
        let mut runs = Vec::new();
        for (i, (dataset, data_name)) in datasets.iter().zip(&data_names).enumerate() {
            let mut run_args = args.clone();
            run_args.scoring.model = Some(model.model.clone());
            run_args.scoring.data = Some(dataset.data.clone());
            run_args.scoring.head = model.head.clone();
            run_args.out = Some(out_dir.join(model_name).join(data_name));
            let mut config = TestConfig::resolve_with(&run_args, file)?;
            // A dataset's own threshold wins over the config's top level; the command line wins over both.
            if args.threshold.is_none()
                && args.assay.is_none()
                && (dataset.threshold.is_some() || dataset.assay.is_some())
            {
                config.threshold = threshold::requested(
                    None,
                    None,
                    dataset.threshold,
                    dataset.assay.map(Into::into),
                    &config_name,
                )
                .map_err(|e| {
                    Failure::usage(format!(
                        "{config_name}: datasets[{i}] (`{data_name}`): {e:#}"
                    ))
                })?;
            }
            let baseline = match &baselines_dir {
                Some(dir) => {
                    let path = baseline_file(dir, model_name, data_name);
                    if !path.is_file() {
                        return Err(Failure::usage(format!(
                            "no baseline for {model_name} on {data_name}: {} is missing\n  fix: record the suite's baselines with --write-baseline {}",
                            path.display(),
                            dir.display()
                        ))
                        .into());
                    }
                    let recorded = crate::report::baseline::Baseline::load(&path)?;
                    // A threshold given in the config or on the command line is known now: a mismatch
                    // would otherwise be found only after every dataset has been scored.
                    if let Some(chosen) = &config.threshold {
                        crate::report::baseline::check_threshold(
                            &recorded,
                            chosen.value,
                            &path.display().to_string(),
                        )?;
                    }
                    Some(path)
                }
                None => None,
            };
            runs.push(SuiteRun {
                model: model_name.clone(),
                data: data_name.clone(),
                config,
                baseline,
            });
        }
        suite_models.push(SuiteModel {
            name: model_name.clone(),
            runs,
        });
    }
    if let Some(dir) = &args.gate.write_baseline {
        if dir.extension().is_some_and(|e| e == "json") || dir.is_file() {
            return Err(Failure::usage(format!(
                "--write-baseline {} names a file, and a suite records one baseline per run in a folder\n  \
fix: name a folder, e.g. --write-baseline baselines (it gets one <model>.<data>.json per run)",
                dir.display()
            ))
            .into());
        }
        super::ensure_writable_dir(dir, "--write-baseline")?;
    }
    super::ensure_writable_dir(&out_dir, &file.named(args.out.is_some(), "--out", "out"))?;
    Ok(SuiteConfig {
        models: suite_models,
        out_dir,
        write_baselines: args.gate.write_baseline.clone(),
        tolerance: args
            .gate
            .tolerance
            .unwrap_or(crate::report::baseline::DEFAULT_TOLERANCE),
        throughput_tolerance: args.gate.throughput_tolerance,
    })
}

/// Names may hold dots, so two pairs can name one `<model>.<data>.json` (model `a.b` on `c`, model `a` on
/// `b.c`): one run's baseline would overwrite, or be checked against, the other's.
fn refuse_shared_baseline_files(models: &[String], datasets: &[String]) -> Result<()> {
    let mut seen = std::collections::BTreeMap::new();
    for model in models {
        for data in datasets {
            let file = format!("{model}.{data}.json");
            if let Some((m, d)) = seen.insert(file.clone(), (model, data)) {
                return Err(Failure::usage(format!(
                    "model `{m}` on dataset `{d}` and model `{model}` on dataset `{data}` would share the baseline file {file}\n  \
fix: rename one of the four (`name:`) so that the two file names differ"
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// Names for folders and the summary: given ones, else file stems; refused when two runs would share a folder.
fn unique_names(entries: Vec<(Option<String>, &PathBuf)>, what: &str) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for (name, path) in entries {
        let name = name.unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| what.to_string())
        });
        // `.` and `..` pass the character rule but name the output folder itself or its parent.
        let safe = !name.is_empty()
            && !name.chars().all(|c| c == '.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !safe {
            return Err(Failure::usage(format!(
                "{what} name `{name}` cannot be a folder name\n  fix: give it `name:` with letters, digits, - _ or ."
            ))
            .into());
        }
        if !seen.insert(name.clone()) {
            return Err(Failure::usage(format!(
                "two {what}s are both named `{name}`\n  fix: give one of them a different `name:`"
            ))
            .into());
        }
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pairs_may_not_share_a_baseline_file() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let shared = refuse_shared_baseline_files(&names(&["a.b", "a"]), &names(&["c", "b.c"]))
            .unwrap_err()
            .to_string();
        assert!(
            shared.starts_with("model `a.b` on dataset `c` and model `a` on dataset `b.c` would share the baseline file a.b.c.json"),
            "{shared}"
        );
        assert!(refuse_shared_baseline_files(&names(&["a.b", "a"]), &names(&["c", "d"])).is_ok());
    }

    #[test]
    fn names_default_to_stems_and_must_be_unique_and_folder_safe() {
        let a = PathBuf::from("x/jain_86.csv");
        let b = PathBuf::from("y/jain_86.csv");
        assert_eq!(
            unique_names(vec![(None, &a)], "dataset").unwrap(),
            ["jain_86"]
        );
        let e = unique_names(vec![(None, &a), (None, &b)], "dataset").unwrap_err();
        assert!(format!("{e}").contains("both named `jain_86`"), "{e}");
        assert!(unique_names(vec![(None, &a), (Some("jain_b".into()), &b)], "dataset").is_ok());
        assert!(unique_names(vec![(Some("../up".into()), &a)], "dataset").is_err());
        // Regression: `.` and `..` passed and named the output folder itself or its parent.
        for dots in [".", "..", "..."] {
            assert!(
                unique_names(vec![(Some(dots.into()), &a)], "dataset").is_err(),
                "{dots}"
            );
        }
        assert!(unique_names(vec![(Some("v1.2".into()), &a)], "dataset").is_ok());
    }
}
