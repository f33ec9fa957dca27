//! `esmbench fit`'s flags and YAML resolved into one validated training configuration, before any model loads.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::FitArgs;
use crate::config::{ensure_output_file, load_file_config, ScoringConfig};
use crate::error::Failure;

/// A validated `esmbench fit` run.
#[derive(Debug, Clone)]
pub struct FitConfig {
    pub scoring: ScoringConfig,
    /// The head JSON to write.
    pub out: PathBuf,
    pub report_json: PathBuf,
    pub report_md: PathBuf,
    pub c: f64,
    /// None: no cross-validation (--folds 0 or 1).
    pub folds: Option<usize>,
    pub seed: u64,
}

/// The threshold written into the head: scikit-learn's predict, and what every committed head uses.
pub const HEAD_THRESHOLD: f64 = 0.5;

/// head.json -> head.report.json / head.report.md, in the same folder, so a report never outlives its head
/// unnoticed and two heads in one folder keep their own reports.
pub fn report_paths(out: &Path) -> (PathBuf, PathBuf) {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "head".into());
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    (
        out.with_file_name(format!("{stem}.report.json")),
        out.with_file_name(format!("{stem}.report.md")),
    )
}

impl FitConfig {
    pub fn resolve(args: &FitArgs) -> Result<FitConfig> {
        let mut file = load_file_config(args.config.as_deref())?;
        let config_name = args
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        file.refuse_suite_without_model_and_data(
            &config_name,
            args.model.is_some(),
            args.data.is_some(),
            "fit trains one head on",
        )?;
        // A config shared with `esmbench test` may carry keys that mean nothing to training; say which are
        // ignored rather than fail on a file that `test` accepts, or use them silently.
        let test_only = file.keys_set(&[
            "head",
            "out",
            "threshold",
            "assay",
            "bootstrap",
            "max_rss",
            "soft_rss",
            "checkpoint_seconds",
            "models",
            "datasets",
            "baselines",
        ]);
        if !test_only.is_empty() {
            crate::errln!(
                "esmbench fit: {config_name}: ignoring keys that only `esmbench test` uses: {} (the head goes to --out)",
                test_only.join(", ")
            );
        }
        file.head = None;
        let scoring = ScoringConfig::resolve(&args.scoring(), &file)?;
        crate::config::note_demo("fit", "training a head on", &scoring);
        // Outside this range the data term (C x the log losses) or the penalty underflows against the other in
        // float64, and the fit stops on a gradient it cannot reduce.
        if !(args.c.is_finite() && (1e-12..=1e12).contains(&args.c)) {
            return Err(Failure::usage(format!(
                "--c {} is not a number from 1e-12 to 1e12\n  fix: use e.g. --c 1.0 (scikit-learn's default; smaller regularises more)",
                crate::report::compact_number(args.c)
            ))
            .into());
        }
        ensure_output_file(&args.out, "head", "head.json")?;
        let (report_json, report_md) = report_paths(&args.out);
        crate::config::refuse_inputs_among_outputs(
            &scoring,
            &[args.out.clone(), report_json.clone(), report_md.clone()],
            "--out",
        )?;
        Ok(FitConfig {
            scoring,
            out: args.out.clone(),
            report_json,
            report_md,
            c: args.c,
            folds: (args.folds >= 2).then_some(args.folds),
            seed: args.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_sit_next_to_the_head() {
        let (json, md) = report_paths(Path::new("heads/boughter.json"));
        assert_eq!(json, PathBuf::from("heads/boughter.report.json"));
        assert_eq!(md, PathBuf::from("heads/boughter.report.md"));
        let (json, _) = report_paths(Path::new("head"));
        assert_eq!(json, PathBuf::from("head.report.json"));
    }
}
