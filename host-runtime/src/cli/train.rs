//! `sigil train`: fits the text classifier on labeled JSON Lines and writes a model file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::model::features::FeatureSpec;
use guard_core::Policy;

use super::{read_bytes, read_text};
use crate::metrics::Scores;
use crate::train::{self, TrainOptions};

/// ROC AUC and recall at 1% FPR, for a quick look (`sigil eval` reports the rest).
fn summary(scores: &[f64], labels: &[bool]) -> Result<(f64, f64)> {
    let scored = Scores::new(labels.iter().copied().zip(scores.iter().copied()))?;
    let auc = scored.roc_auc().unwrap_or(f64::NAN);
    let recall = scored
        .at_max_fpr(0.01)
        .and_then(|p| p.confusion.recall())
        .unwrap_or(f64::NAN);
    Ok((auc, recall))
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labeled JSON Lines: `text` and `label` (attack or benign); other fields are ignored.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// Where to write the model.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A name for the model, kept in the file.
    #[arg(long, default_value = "custom")]
    name: String,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The feature table has 2^bits buckets (10 to 22); each bucket costs two bytes.
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u8).range(10..=22))]
    bits: u8,
    /// L2 penalty per example.
    #[arg(long, default_value_t = 1e-5)]
    l2: f64,
    /// Optimizer iterations at most.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Folds for the held-out scores the fusion is fitted on.
    #[arg(long, default_value_t = 5)]
    folds: u32,
    /// Policy that the `--dev` reports run the guard with (default: the default policy). Training
    /// itself reads only the text and labels.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Share of attacks in the traffic the fused score is calibrated for.
    #[arg(long, default_value_t = 0.05)]
    prior: f64,
    /// A feature must occur in at least this many training texts.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    min_df: u32,
    /// Bytes of text per scoring window; longer text is scored window by window.
    #[arg(long, default_value_t = 1024)]
    window: u32,
    /// Bytes each window shares with the one before.
    #[arg(long, default_value_t = 384)]
    overlap: u32,
    /// Distinct features at which a window's evidence counts half.
    #[arg(long, default_value_t = 300)]
    evidence_features: u32,
    /// Labeled JSON Lines to report on (nothing is fitted on them); may be given more than once.
    #[arg(long, value_name = "FILE")]
    dev: Vec<PathBuf>,
    /// Write each dev row's scores (`fused`, `model`, `rules`) as JSON Lines here, in order;
    /// one file per `--dev`, in the same order.
    #[arg(long, value_name = "FILE", requires = "dev")]
    dev_scores: Vec<PathBuf>,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let bytes = read_bytes(&args.data, "training data")?;
    let examples =
        train::read_examples(&bytes).with_context(|| format!("in `{}`", args.data.display()))?;
    let policy = match &args.policy {
        Some(path) => Policy::from_json(&read_text(path, "policy")?)?,
        None => Policy::default(),
    };
    let options = TrainOptions {
        name: args.name.clone(),
        features: FeatureSpec {
            bits: args.bits,
            ..FeatureSpec::default()
        },
        l2: args.l2,
        max_iterations: args.iterations,
        folds: args.folds,
        seed: args.seed,
        evidence_features: args.evidence_features,
        prior: args.prior,
        window: args.window,
        overlap: args.overlap,
        min_df: args.min_df,
    };
    // What could fail after a minute of training fails now instead.
    let dev_sets = args
        .dev
        .iter()
        .map(|dev| {
            train::read_examples(&read_bytes(dev, "dev data")?)
                .with_context(|| format!("in `{}`", dev.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let out_dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        anyhow::bail!(
            "cannot write `{}`: `{}` is not a folder",
            args.out.display(),
            out_dir.display()
        );
    }
    let started = std::time::Instant::now();
    let trained = train::train(&examples, &train::sha256_hex(&bytes), &options)?;
    let labels: Vec<bool> = examples.iter().map(|e| e.attack).collect();
    let file = trained.model.to_bytes()?;
    let per_class = labels
        .iter()
        .filter(|a| **a)
        .count()
        .min(labels.len() - labels.iter().filter(|a| **a).count());
    if per_class < 100 {
        eprintln!(
            "warning: {per_class} rows of the smaller class; a model from so little data is \
             unreliable on text unlike it. Check it with --dev on prompts it did not see."
        );
    }
    std::fs::write(&args.out, &file)
        .with_context(|| format!("cannot write `{}`", args.out.display()))?;
    let header = trained.model.header();
    outln!(
        "trained on {} rows ({} attacks) in {:.1} s, {} iterations",
        examples.len(),
        labels.iter().filter(|a| **a).count(),
        started.elapsed().as_secs_f64(),
        trained.iterations
    );
    let (held_out_auc, held_out_recall) = summary(&trained.held_out_logits, &labels)?;
    outln!(
        "held out ({} folds), model alone: ROC AUC {held_out_auc:.4}, recall at 1% FPR {held_out_recall:.4}",
        options.folds
    );
    outln!(
        "calibration: p = sigmoid({:.4} + {:.4} * logit), for a {} share of attacks",
        header.fusion.bias,
        header.fusion.model,
        options.prior
    );
    for (dev_index, (dev, dev_examples)) in args.dev.iter().zip(&dev_sets).enumerate() {
        let dev_labels: Vec<bool> = dev_examples.iter().map(|e| e.attack).collect();
        let answers = train::guard_scores(dev_examples, &policy, &trained.model)?;
        let fused: Vec<f64> = answers.iter().map(|(score, _)| *score).collect();
        let model: Vec<f64> = answers
            .iter()
            .map(|(_, c)| c.model.unwrap_or(0.0))
            .collect();
        let rules: Vec<f64> = answers.iter().map(|(_, c)| c.rules).collect();
        if let Some(path) = args.dev_scores.get(dev_index) {
            let mut out = String::new();
            for (score, c) in &answers {
                out.push_str(
                    &serde_json::json!({"fused": score, "model": c.model, "rules": c.rules})
                        .to_string(),
                );
                out.push('\n');
            }
            std::fs::write(path, out)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        for (name, s) in [("model", &model), ("rules", &rules), ("fused", &fused)] {
            let (auc, recall) = summary(s, &dev_labels)?;
            outln!(
                "{}: {name}: ROC AUC {auc:.4}, recall at 1% FPR {recall:.4}",
                dev.display()
            );
        }
        // At the default `high` threshold.
        let stop = policy.thresholds.high;
        let missed = fused
            .iter()
            .zip(&dev_labels)
            .filter(|(f, a)| **a && **f < stop)
            .count();
        let false_alarms = fused
            .iter()
            .zip(&dev_labels)
            .filter(|(f, a)| !**a && **f >= stop)
            .count();
        outln!(
            "{}: fused at {stop}: {missed} attacks missed, {false_alarms} benign stopped",
            dev.display()
        );
    }
    outln!(
        "wrote {} ({} bytes, checksum {})",
        args.out.display(),
        file.len(),
        trained.model.digest_hex()
    );
    Ok(ExitCode::SUCCESS)
}
