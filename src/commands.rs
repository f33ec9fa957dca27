//! One function per subcommand: resolve its configuration, run it, print what a person needs to see.

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::{load_file_config, ScoringConfig, TestConfig};
use crate::model::{self, contract};
use crate::report::Report;

pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Test(args) => {
            let config = TestConfig::resolve(&args)?;
            let report = crate::run::run_test(&config, false)?;
            print_summary(&report, &config.out_dir);
            Ok(())
        }
        Command::Embed(args) => {
            let file = load_file_config(args.scoring.config.as_deref())?;
            let scoring = ScoringConfig::resolve(&args.scoring, &file)?;
            let rows = crate::run::run_embed(&scoring, &args.out, false)?;
            println!("wrote {rows} embeddings to {}", args.out.display());
            Ok(())
        }
        Command::Inspect(args) => inspect(&args.model, args.head.as_deref()),
        Command::Merge(args) => {
            let report = crate::merge::merge(&args.shards, &args.out)?;
            print_summary(&report, &args.out);
            Ok(())
        }
    }
}

fn print_summary(report: &Report, out_dir: &std::path::Path) {
    let p = &report.performance;
    println!(
        "scored {} of {} rows on {} in {:.2} s ({:.1} seq/s, peak RSS {:.0} MiB)",
        report.data.rows_scored,
        report.data.rows_total,
        report.execution.execution_provider,
        p.wall_seconds,
        p.sequences_per_second,
        p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    if let Some(m) = &report.metrics {
        let show = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        println!(
            "n={} accuracy={} f1={} mcc={} roc_auc={} pr_auc={} (threshold {} from {})",
            m.n,
            show(m.accuracy),
            show(m.f1),
            show(m.mcc),
            show(m.roc_auc),
            show(m.pr_auc),
            report.model.threshold,
            report.model.threshold_source
        );
    } else if let Some(note) = &report.metrics_note {
        println!("{note}");
    }
    println!("outputs: {}", out_dir.display());
}

fn inspect(path: &std::path::Path, head_path: Option<&std::path::Path>) -> Result<()> {
    let model::onnx::Description {
        inputs,
        outputs,
        metadata,
        contract,
    } = model::onnx::inspect(path)?;
    println!("model: {}", path.display());
    println!("inputs:");
    for i in &inputs {
        println!("  {i}");
    }
    println!("outputs:");
    for o in &outputs {
        println!("  {o}");
    }
    println!("metadata:");
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
        println!("  {k} = {shown}");
    }
    let contract = contract?;
    println!(
        "esmbench will read `{}` ({}): {}",
        contract.output,
        contract.kind.label(),
        contract.kind.plan()
    );
    if let Some(h) = contract.hidden {
        println!("hidden size: {h}");
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
                println!("head: {origin} has {} coefficients, the model's hidden size is {hidden}: MISMATCH", h.hidden_size());
            } else {
                println!(
                    "head: {origin} ({} coefficients, threshold {})",
                    h.hidden_size(),
                    h.threshold
                );
            }
        }
        (None, true) => {
            println!("head: none; `esmbench test` needs --head HEAD.json (`embed` works without)")
        }
        (_, false) => println!(
            "head: not needed ({})",
            contract::CONTRACT_HELP
                .split(';')
                .next()
                .unwrap_or_default()
        ),
    }
    Ok(())
}
