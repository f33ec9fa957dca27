//! One function per subcommand: resolve its configuration, run it, print what a person needs to see.

use std::path::Path;

use anyhow::Result;

use crate::cli::{Cli, Command, GateArgs};
use crate::config::suite::{resolve_plan, TestPlan};
use crate::config::{check_bootstrap, EmbedConfig};
use crate::console;
use crate::error::Failure;
use crate::metrics::threshold;
use crate::model;
use crate::report::baseline::{self, Baseline};
use crate::report::{self as reports, Report};
use crate::rescore::{self, RescoreConfig};

/// Runs the command; a failure to write its standard output is its error once its own work is done.
pub fn execute(cli: Cli) -> Result<()> {
    dispatch(cli).and_then(|()| console::stdout_result())
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Test(args) => match resolve_plan(&args)? {
            TestPlan::Single(mut config) => {
                check_gate_flags(
                    &args.gate,
                    config.threshold.as_ref().map(|t| t.value),
                    Produces::Test,
                )?;
                config.needs_labels = gate_compares_metrics(&args.gate)?;
                let report = crate::run::run_test(&config, false)?;
                print_summary(&report, &config.out_dir);
                gate(&args.gate, &report, &config.out_dir.join("report.json"))
            }
            TestPlan::Suite(suite) => {
                check_tolerances(&args.gate)?;
                let outcome = crate::run::suite::run_suite(&suite, false)?;
                console::out(format_args!("{}", outcome.gate_log));
                console::out(format_args!(
                    "{}",
                    String::from_utf8_lossy(&crate::report::summary::to_markdown(&outcome.summary))
                ));
                crate::outln!("summary: {}", suite.out_dir.join("summary.md").display());
                outcome.error.map_or(Ok(()), Err)
            }
        },
        Command::Metrics(args) => {
            let chosen = threshold::requested(
                args.threshold,
                args.assay.map(Into::into),
                None,
                None,
                "no config",
            )?;
            let threshold = threshold::resolve(chosen, None);
            check_gate_flags(&args.gate, Some(threshold.value), Produces::Metrics)?;
            let config = RescoreConfig {
                predictions: args.predictions.clone(),
                out_dir: args.out.clone(),
                label_column: args.label_column.clone(),
                score_column: args.score_column.clone(),
                threshold,
                bootstrap: check_bootstrap(args.bootstrap, &|n| format!("--bootstrap {n}"))?,
            };
            let report = rescore::run_metrics(&config)?;
            print_summary(&report, &config.out_dir);
            gate(&args.gate, &report, &config.out_dir.join("report.json"))
        }
        Command::Check(args) => {
            if args.gate.baseline.is_none() && args.gate.write_baseline.is_none() {
                return Err(Failure::usage("check needs --baseline B.json (compare) or --write-baseline B.json (record)\n  fix: esmbench check REPORT.json --baseline B.json").into());
            }
            check_gate_flags(&args.gate, None, Produces::Nothing)?;
            let report = read_report(&args.report)?;
            gate(&args.gate, &report, &args.report)
        }
        Command::Embed(args) => {
            let config = EmbedConfig::resolve(&args)?;
            let outcome = crate::run::embed::run_embed(&config, false)?;
            let (rows_path, _) = crate::report::embed_companions(&config.out);
            crate::outln!(
                "{} {} embeddings in {} (the CSV row of each in {})",
                if outcome.already_complete {
                    "kept"
                } else {
                    "wrote"
                },
                outcome.rows,
                config.out.display(),
                rows_path.display()
            );
            Ok(())
        }
        Command::Inspect(args) => inspect(&args.model, args.head.as_deref()),
        Command::Merge(args) => {
            let merged = crate::merge::merge(&args.shards, &args.out)?;
            print_summary(&merged.report, &args.out);
            let summed: f64 = merged.shard_wall_seconds.iter().sum();
            crate::outln!(
                "timing: the time above is the slowest shard's and the rate the rows timed over it, as if the {} shards ran side by side; \
their wall times add up to {summed:.2} s ({:.1} seq/s), what they cost run one after another",
                merged.shard_wall_seconds.len(),
                if summed > 0.0 { crate::merge::timed_rows(&merged.report) as f64 / summed } else { 0.0 }
            );
            Ok(())
        }
        Command::Fit(args) => {
            let config = crate::fit::config::FitConfig::resolve(&args)?;
            let outcome = crate::fit::run_fit(&config, false)?;
            print_fit_summary(&outcome, &config);
            Ok(())
        }
    }
}

/// The report a gated command makes before it gates.
#[derive(Clone, Copy, PartialEq)]
enum Produces {
    /// `test`: scores, so its report has a throughput.
    Test,
    /// `metrics`: rescores predictions, with no throughput.
    Metrics,
    /// `check`: reads a report made earlier.
    Nothing,
}

/// Whether the gate flags compare or record metrics, which need labeled rows: a baseline with metrics, or
/// --write-baseline without --throughput-tolerance (a throughput-only baseline needs no labels).
fn gate_compares_metrics(gate: &GateArgs) -> Result<bool> {
    let compares = match &gate.baseline {
        Some(path) => !Baseline::load(path)?.metrics.is_empty(),
        None => false,
    };
    Ok(compares || (gate.write_baseline.is_some() && gate.throughput_tolerance.is_none()))
}

/// Flag values clap cannot check, refused before a run spends any time. `threshold` is the run's, where it
/// is known before the run (given, or `metrics`' default).
fn check_gate_flags(gate: &GateArgs, threshold: Option<f64>, produces: Produces) -> Result<()> {
    check_tolerances(gate)?;
    if let (Some(r), Produces::Metrics) = (gate.throughput_tolerance, produces) {
        return Err(Failure::usage(format!(
            "--throughput-tolerance {r} records a throughput floor, and `esmbench metrics` measures no speed\n  \
fix: drop --throughput-tolerance (record throughput from an `esmbench test` report)"
        ))
        .into());
    }
    if let Some(path) = &gate.baseline {
        let recorded = Baseline::load(path)?;
        if let Some(threshold) = threshold {
            baseline::check_threshold(&recorded, threshold, &path.display().to_string())?;
        }
    }
    // Checked before the run, so an hour of scoring does not end on a path the baseline cannot go to.
    if let Some(path) = &gate.write_baseline {
        if path.is_dir() {
            return Err(Failure::usage(format!(
                "--write-baseline {} is a directory\n  fix: name the file, e.g. {}",
                path.display(),
                path.join("baseline.json").display()
            ))
            .into());
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .and_then(|()| crate::config::write_probe(parent))
            .map_err(|e| {
                Failure::usage(format!(
                    "--write-baseline {}: cannot write in {} ({e})\n  fix: pass a path in a writable folder",
                    path.display(),
                    parent.display()
                ))
            })?;
    }
    Ok(())
}

fn check_tolerances(gate: &GateArgs) -> Result<()> {
    // clap's `requires` lets these through beside --baseline (the flag --write-baseline conflicts with),
    // where they would be read and ignored: a baseline gates with the tolerances recorded in it.
    if gate.write_baseline.is_none() {
        let given = [
            ("--tolerance", gate.tolerance.is_some()),
            (
                "--throughput-tolerance",
                gate.throughput_tolerance.is_some(),
            ),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            return Err(Failure::usage(format!(
                "{flag} sets what --write-baseline records, and a --baseline gates with the tolerances recorded in it\n  \
fix: drop {flag}, or re-record the baseline with --write-baseline and {flag}"
            ))
            .into());
        }
    }
    if let Some(t) = gate.tolerance.filter(|t| !(t.is_finite() && *t >= 0.0)) {
        return Err(Failure::usage(format!(
            "--tolerance {t} is not a non-negative number\n  fix: e.g. --tolerance {}",
            baseline::DEFAULT_TOLERANCE
        ))
        .into());
    }
    if let Some(r) = gate
        .throughput_tolerance
        .filter(|r| !(0.0..1.0).contains(r))
    {
        return Err(Failure::usage(format!("--throughput-tolerance {r} is not in [0, 1)\n  fix: e.g. 0.5 (fail when more than 50% slower)")).into());
    }
    Ok(())
}

fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "report {} cannot be read ({e})\n  fix: pass the report.json written by esmbench test or esmbench metrics",
            path.display()
        ))
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        Failure::input(format!(
            "report {}: line {}, column {}: {e}\n  fix: pass an unmodified report.json (schema version {})",
            path.display(),
            e.line(),
            e.column(),
            reports::SCHEMA_VERSION
        ))
    })?;
    Ok(report)
}

/// Records and/or applies the regression gate; a regression is exit 3 after the diff is printed.
fn gate(args: &GateArgs, report: &Report, report_path: &Path) -> Result<()> {
    if let Some(path) = &args.write_baseline {
        let b = Baseline::from_report(
            report,
            args.tolerance.unwrap_or(baseline::DEFAULT_TOLERANCE),
            args.throughput_tolerance,
        )?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::config::ensure_writable_dir(parent, "--write-baseline")?;
        }
        reports::write_atomically(path, &b.to_json())?;
        crate::outln!(
            "wrote baseline {} ({} metrics{})",
            path.display(),
            b.metrics.len(),
            if b.throughput.is_some() {
                " and throughput"
            } else {
                ""
            }
        );
    }
    if let Some(path) = &args.baseline {
        let b = Baseline::load(path)?;
        let name = path.display().to_string();
        let comparison = baseline::compare(report, &b, &name)?;
        console::out(format_args!(
            "{}",
            comparison.render(&report_path.display().to_string(), &name)
        ));
        if let Some(failure) = comparison.failure(&name) {
            return Err(failure.into());
        }
    }
    Ok(())
}

fn print_fit_summary(outcome: &crate::fit::FitOutcome, config: &crate::fit::config::FitConfig) {
    let r = &outcome.report;
    crate::outln!(
        "trained on {} labeled rows ({} positive, {} negative; {} unlabeled left out) with C={}: \
L-BFGS {} iterations, max |gradient| {:.1e}; {:.2} s in all (embedding {:.2} s, fit {:.3} s, cross-validation {:.3} s)",
        r.data.rows_trained,
        r.data.positives,
        r.data.negatives,
        r.data.rows_unlabeled,
        crate::report::compact_number(r.settings.c),
        outcome.fitted.iterations,
        outcome.fitted.gradient_max_abs,
        r.performance.wall_seconds,
        r.performance.embed_seconds,
        r.performance.fit_seconds,
        r.performance.cv_seconds,
    );
    match &r.cv {
        Some(cv) => crate::outln!(
            "{}-fold stratified CV (seed {}): {}",
            cv.folds,
            cv.seed,
            crate::fit::output::summary_line(&cv.summary)
        ),
        None => crate::outln!("cross-validation skipped (--folds 0 or 1)"),
    }
    crate::outln!(
        "wrote {}, {} and {}",
        config.out.display(),
        config.report_json.display(),
        config.report_md.display()
    );
}

fn print_summary(report: &Report, out_dir: &Path) {
    let p = &report.performance;
    if report.command == "metrics" {
        crate::outln!(
            "rescored {} rows of {} (labels `{}`, scores `{}`)",
            report.data.rows_total,
            report.data.path,
            report.data.label_column.as_deref().unwrap_or("?"),
            report.model.output
        );
    } else {
        let resumed = report.execution.resumed.map_or(String::new(), |r| {
            format!(
                " ({} timed here; {} were scored before a resume)",
                report.data.rows_scored.saturating_sub(r.rows_scored_before),
                r.rows_scored_before
            )
        });
        crate::outln!(
            "scored {} of {} rows{resumed} on {} in {:.2} s ({:.1} seq/s, peak RSS {:.0} MiB)",
            report.data.rows_scored,
            report.data.rows_total,
            report.execution.execution_provider,
            p.wall_seconds,
            p.sequences_per_second,
            p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(m) = &report.metrics {
        let show = |name: &str| {
            let value = m
                .get(name)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "n/a".into());
            match m.intervals.as_ref().and_then(|i| i.get(name)) {
                Some(&crate::metrics::Interval {
                    low: Some(lo),
                    high: Some(hi),
                    ..
                }) => format!("{value} [{lo:.3}, {hi:.3}]"),
                _ => value,
            }
        };
        crate::outln!(
            "n={} accuracy={} f1={} mcc={} roc_auc={} pr_auc={}",
            m.n,
            show("accuracy"),
            show("f1"),
            show("mcc"),
            show("roc_auc"),
            show("pr_auc"),
        );
        crate::outln!(
            "threshold {}",
            threshold::describe(
                report.model.threshold,
                &report.model.threshold_source,
                report.model.assay.as_deref()
            )
        );
    } else if let Some(note) = &report.metrics_note {
        crate::outln!("{note}");
    }
    crate::outln!(
        "outputs: {} (report.md; open report.html in a browser)",
        out_dir.display()
    );
}

fn inspect(path: &std::path::Path, head_path: Option<&std::path::Path>) -> Result<()> {
    crate::config::check_model_file(path, "--model")?;
    let model::onnx::Description {
        inputs,
        outputs,
        metadata,
        contract,
        advice,
        graph_rewrite,
    } = model::onnx::inspect(path)?;
    crate::outln!("model: {}", path.display());
    for data in model::external_data::files(path) {
        let bytes = std::fs::metadata(&data).map_or(0, |m| m.len());
        crate::outln!(
            "weights in external data: {} ({bytes} bytes; part of the model's SHA-256)",
            data.display()
        );
    }
    crate::outln!("inputs:");
    for i in &inputs {
        crate::outln!("  {i}");
    }
    crate::outln!("outputs:");
    for o in &outputs {
        crate::outln!("  {o}");
    }
    crate::outln!("metadata:");
    for (k, v) in &metadata {
        let flat = v.split_whitespace().collect::<Vec<_>>().join(" ");
        let shown = if flat.len() > 120 {
            format!(
                "{}... ({} bytes)",
                &flat[..flat.floor_char_boundary(120)],
                v.len()
            )
        } else {
            flat
        };
        crate::outln!("  {k} = {shown}");
    }
    let contract = contract?;
    if let Some(advice) = &advice {
        crate::outln!("advice: {advice}");
    }
    if let Some(rewrite) = &graph_rewrite {
        crate::outln!("graph rewrite at load: {rewrite}");
    }
    crate::outln!(
        "esmbench will read `{}` ({}): {}",
        contract.output,
        contract.kind.label(),
        contract.kind.plan()
    );
    if let Some(h) = contract.hidden {
        crate::outln!("hidden size: {h}");
    }
    let position_limit = metadata
        .iter()
        .find(|(k, _)| k == model::ARCHITECTURE_METADATA_KEY)
        .and_then(|(_, v)| model::learned_position_limit(v));
    if let Some(limit) = position_limit {
        crate::outln!(
            "longest row: {limit} residues (learned position embeddings); --max-residues above it is refused"
        );
    }
    let metadata_head = metadata
        .iter()
        .find(|(k, _)| k == model::HEAD_METADATA_KEY)
        .map(|(_, v)| v.clone());
    let head = match head_path {
        Some(p) => Some((
            model::head::Head::from_json(&std::fs::read_to_string(p)?, &p.display().to_string())?,
            p.display().to_string(),
        )),
        None => match &metadata_head {
            Some(text) => Some((
                model::head::Head::from_json(text, "metadata")?,
                format!("metadata `{}`", model::HEAD_METADATA_KEY),
            )),
            None => None,
        },
    };
    match (&head, contract.kind.needs_head()) {
        (Some((h, origin)), true) => {
            if let Some(hidden) = contract.hidden.filter(|&d| d != h.hidden_size()) {
                crate::outln!("head: {origin} has {} coefficients, the model's hidden size is {hidden}: MISMATCH", h.hidden_size());
                // A pre-flight check in a script must see what `esmbench test` would refuse.
                return Err(Failure::usage(format!(
                    "head {origin} has {} coefficients but the model's hidden size is {hidden}\n  fix: use the head trained on this model's embeddings",
                    h.hidden_size()
                ))
                .into());
            } else {
                let threshold = h
                    .threshold
                    .map_or("none (the run's default 0.5 applies)".to_string(), |t| {
                        t.to_string()
                    });
                crate::outln!(
                    "head: {origin} ({} coefficients, threshold {threshold})",
                    h.hidden_size()
                );
            }
        }
        (None, true) => {
            crate::outln!(
                "head: none; `esmbench test` needs --head HEAD.json (`embed` works without)"
            )
        }
        (Some(_), false) if head_path.is_some() => {
            return Err(Failure::usage(format!(
                "--head would not be used: the model outputs {} itself, and `esmbench test` refuses a head for it\n  fix: drop --head",
                contract.kind.label()
            ))
            .into())
        }
        (_, false) => crate::outln!(
            "head: not needed (the model outputs {} itself)",
            contract.kind.label()
        ),
    }
    Ok(())
}
