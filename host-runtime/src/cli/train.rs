//! `sigil train`: fits the text classifier on labeled JSON Lines and writes a model file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::model::features::FeatureSpec;
use guard_core::Policy;

use super::{read_bytes, read_text};
use crate::train::{self, TrainOptions};

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
    #[arg(long, default_value_t = 18)]
    bits: u8,
    /// L2 penalty per example.
    #[arg(long, default_value_t = 1e-5)]
    l2: f64,
    /// Optimizer iterations at most.
    #[arg(long, default_value_t = 300)]
    iterations: u32,
    /// Folds for the held-out scores the fusion is fitted on.
    #[arg(long, default_value_t = 5)]
    folds: u32,
    /// Policy whose rules the fusion weighs against the model (default: the default policy).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Share of attacks in the traffic the fused score is calibrated for.
    #[arg(long, default_value_t = 0.05)]
    prior: f64,
    /// Feature occurrences at which a window's evidence counts half.
    #[arg(long, default_value_t = 100)]
    evidence_features: u32,
    /// Labeled JSON Lines to report on (nothing is fitted on them); may be given more than once.
    #[arg(long, value_name = "FILE")]
    dev: Vec<PathBuf>,
    /// Write each dev row's logits (`model`, `rules`, `fused`) as JSON Lines here, in order;
    /// one file per `--dev`, in the same order.
    #[arg(long, value_name = "FILE", requires = "dev")]
    dev_scores: Vec<PathBuf>,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let bytes = read_bytes(&args.data, "training data")?;
    let examples = train::read_examples(&bytes)
        .with_context(|| format!("in `{}`", args.data.display()))?;
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
        policy,
        evidence_features: args.evidence_features,
        prior: args.prior,
        ..TrainOptions::default()
    };
    let started = std::time::Instant::now();
    let trained = train::train(&examples, &train::sha256_hex(&bytes), &options)?;
    let labels: Vec<bool> = examples.iter().map(|e| e.attack).collect();
    let file = trained.model.to_bytes()?;
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
    outln!(
        "held-out ROC AUC {:.4} (model alone, {} folds)",
        train::auc(&trained.held_out_logits, &labels),
        options.folds
    );
    outln!(
        "fusion: bias {:.4}, rules {:.4}, model {:.4}, behaviour {:.4}",
        header.fusion.bias,
        header.fusion.rules,
        header.fusion.model,
        header.fusion.behaviour
    );
    for (dev_index, dev) in args.dev.iter().enumerate() {
        let dev_examples = train::read_examples(&read_bytes(dev, "dev data")?)
            .with_context(|| format!("in `{}`", dev.display()))?;
        let mut counts = guard_core::model::FeatureCounts::default();
        let scores: Vec<f64> = dev_examples
            .iter()
            .map(|e| {
                let folded = guard_core::text::normalize(&e.text);
                trained.model.score(folded.text(), &mut counts).logit
            })
            .collect();
        let dev_labels: Vec<bool> = dev_examples.iter().map(|e| e.attack).collect();
        let rules = train::rule_scores(&dev_examples, &options.policy)?;
        let f = header.fusion;
        let fused: Vec<f64> = scores
            .iter()
            .zip(&rules)
            .map(|(m, r)| f.bias + f.rules * guard_core::model::FusionWeights::evidence(*r) + f.model * m)
            .collect();
        if let Some(path) = args.dev_scores.get(dev_index) {
            let mut out = String::new();
            for ((m, r), f) in scores.iter().zip(&rules).zip(&fused) {
                out.push_str(&serde_json::json!({"model": m, "rules": r, "fused": f}).to_string());
                out.push('\n');
            }
            std::fs::write(path, out)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        for (name, s) in [("model", &scores), ("rules", &rules), ("fused", &fused)] {
            outln!(
                "{}: {name}: ROC AUC {:.4}, recall at 1% FPR {:.4}",
                dev.display(),
                train::auc(s, &dev_labels),
                train::recall_at_fpr(s, &dev_labels, 0.01)
            );
        }
        // At the default `high` threshold, 0.6, as a logit.
        let stop = guard_core::model::logit(0.6);
        let missed = fused.iter().zip(&dev_labels).filter(|(f, a)| **a && **f < stop).count();
        let false_alarms = fused.iter().zip(&dev_labels).filter(|(f, a)| !**a && **f >= stop).count();
        outln!(
            "{}: fused at 0.6: {missed} attacks missed, {false_alarms} benign stopped",
            dev.display()
        );
    }
    outln!(
        "wrote {} ({} bytes, sha256 {})",
        args.out.display(),
        file.len(),
        trained.model.digest_hex()
    );
    Ok(ExitCode::SUCCESS)
}
