//! Training the text classifier: hashed n-gram TF-IDF features of folded text, L2-regularised
//! logistic regression fitted with L-BFGS, weights quantized to one byte, and fusion weights
//! fitted on held-out folds.
//!
//! Everything is deterministic given the data and the seed: one thread, a fixed order of
//! floating-point operations, `libm` for logarithms and exponentials, and a seeded fold
//! assignment. The same command on the same file writes the same bytes.

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use guard_core::contract::Components;
use guard_core::model::{
    evidence_scale, features::FeatureSpec, logit, sigmoid, sublinear_tf, FeatureCounts,
    FusionWeights, Model, ModelHeader, TrainingRecord, MAX_LOGIT,
};
use guard_core::policy::ModelConfig;
use guard_core::{AssessmentInput, Guard, Policy};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One labeled row of a training file.
#[derive(Debug, Clone, Deserialize)]
pub struct LabeledRow {
    /// The prompt.
    pub text: String,
    /// `attack` or `benign`.
    pub label: String,
}

/// A labeled text.
#[derive(Debug, Clone)]
pub struct Example {
    /// The prompt as written.
    pub text: String,
    /// Whether it is an attack.
    pub attack: bool,
}

/// Reads labeled JSON Lines. Blank lines are skipped, as is a byte-order mark; anything else
/// that is not an object with `text` and `label` (`attack` or `benign`) is an error naming its
/// line.
pub fn read_examples(bytes: &[u8]) -> Result<Vec<Example>> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "training data is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", index + 1))?;
        if !value.is_object() {
            bail!("line {}: not a labeled row (a JSON object)", index + 1);
        }
        let row: LabeledRow = serde_json::from_value(value)
            .with_context(|| format!("line {}: not a labeled row", index + 1))?;
        let attack = match row.label.as_str() {
            "attack" => true,
            "benign" => false,
            other => bail!(
                "line {}: label `{other}` is neither attack nor benign",
                index + 1
            ),
        };
        out.push(Example {
            text: row.text,
            attack,
        });
    }
    Ok(out)
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Name written into the model.
    pub name: String,
    /// Features.
    pub features: FeatureSpec,
    /// L2 penalty per example (the objective is the mean log loss plus `l2 / 2 * |w|^2`).
    pub l2: f64,
    /// L-BFGS iterations at most.
    pub max_iterations: u32,
    /// Folds for the held-out scores the fusion is fitted on (at least 2).
    pub folds: u32,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Bytes per scoring window and overlap.
    pub window: u32,
    /// Bytes each window shares with the one before.
    pub overlap: u32,
    /// Feature occurrences at which a window's evidence counts half (see `ModelHeader`).
    pub evidence_features: u32,
    /// Share of attacks in the traffic the fused score is calibrated for.
    pub prior: f64,
    /// A bucket must occur in at least this many training texts to be a feature.
    pub min_df: u32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            name: "custom".into(),
            features: FeatureSpec::default(),
            l2: 1e-5,
            max_iterations: 300,
            folds: 5,
            seed: 1,
            window: 1024,
            overlap: 384,
            evidence_features: 300,
            prior: 0.05,
            min_df: 2,
        }
    }
}

/// What training produced, with what it saw on the way.
#[derive(Debug)]
pub struct Trained {
    /// The model, ready to write.
    pub model: Model,
    /// The held-out logit of each training example (its fold's model), in input order.
    pub held_out_logits: Vec<f64>,
    /// L-BFGS iterations of the final fit.
    pub iterations: u32,
}

/// Sparse rows: one TF-IDF vector of unit length per example.
struct Rows {
    starts: Vec<usize>,
    buckets: Vec<u32>,
    values: Vec<f64>,
}

impl Rows {
    fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let start = self.starts.get(i).copied().unwrap_or(0);
        let end = self.starts.get(i + 1).copied().unwrap_or(start);
        let buckets = self.buckets.get(start..end).unwrap_or_default();
        let values = self.values.get(start..end).unwrap_or_default();
        buckets.iter().zip(values).map(|(&b, &v)| (b as usize, v))
    }
}

/// Trains a model on `examples`. `data_sha256` names the data in the training record.
pub fn train(examples: &[Example], data_sha256: &str, options: &TrainOptions) -> Result<Trained> {
    let spec = options.features;
    if !spec.is_valid() {
        bail!("feature spec out of range: {spec:?}");
    }
    if options.folds < 2 {
        bail!("at least 2 folds are needed to fit the fusion on held-out scores");
    }
    if !(options.prior > 0.0 && options.prior < 1.0) {
        bail!("the prior must be within (0, 1)");
    }
    if options.max_iterations == 0 || options.min_df == 0 {
        bail!("iterations and min-df must be at least 1");
    }
    if !(options.l2.is_finite() && options.l2 > 0.0) {
        bail!("the L2 penalty must be a positive number");
    }
    let attacks = examples.iter().filter(|e| e.attack).count();
    if attacks < options.folds as usize || examples.len() - attacks < options.folds as usize {
        bail!(
            "need at least {} attacks and {} benign rows (one per fold); got {attacks} and {}",
            options.folds,
            options.folds,
            examples.len() - attacks
        );
    }

    // Every text folded as the guard folds it, and counted.
    let mut counts = FeatureCounts::default();
    let mut shrink = Vec::with_capacity(examples.len());
    // Folded once: the features and the held-out scores read the same text.
    let folded: Vec<String> = examples
        .iter()
        .map(|e| guard_core::text::normalize(&e.text).text().to_string())
        .collect();
    let counted: Vec<Vec<(u32, u32)>> = folded
        .iter()
        .map(|text| {
            counts.count(text, &spec);
            shrink.push(evidence_scale(counts.len(), options.evidence_features));
            counts.iter().collect()
        })
        .collect();

    let buckets = spec.buckets();
    let (idf, idf_min, idf_step) = idf_table(&counted, buckets, options.min_df);
    // 0 for a bucket that is not a feature.
    let idf_of = |b: u32| match idf.get(b as usize).copied().unwrap_or(0) {
        0 => 0.0,
        q => idf_min + f64::from(q - 1) * idf_step,
    };
    let rows = tf_idf_rows(&counted, &shrink, &idf_of);
    let labels: Vec<bool> = examples.iter().map(|e| e.attack).collect();

    let header_for = |bias: f64, scale: f64, fusion: FusionWeights, iterations: u32| ModelHeader {
        name: options.name.clone(),
        features: spec,
        window: options.window,
        overlap: options.overlap,
        evidence_features: options.evidence_features,
        bias,
        weight_scale: scale,
        idf_min,
        idf_step,
        fusion,
        training: TrainingRecord {
            data_sha256: data_sha256.to_string(),
            rows: examples.len() as u64,
            attacks: attacks as u64,
            seed: options.seed,
            l2: options.l2,
            min_df: options.min_df,
            iterations,
            folds: options.folds,
            prior: options.prior,
        },
    };
    let neutral = FusionWeights {
        bias: 0.0,
        model: 1.0,
    };
    let build = |fit: &Fit, fusion: FusionWeights| -> Result<Model> {
        let (weights, scale) = quantize(&fit.weights, &idf_of);
        let bias = fit.bias.clamp(-MAX_LOGIT, MAX_LOGIT);
        Ok(Model::from_parts(
            header_for(bias, scale, fusion, fit.iterations),
            weights,
            idf.clone(),
        )?)
    };

    // Held-out logits: each fold scored by a model that never saw it, through the same
    // quantized, windowed scoring the guard uses.
    let fold_of = assign_folds(&labels, options.folds, options.seed);
    let mut held_out_logits = vec![0.0; examples.len()];
    for fold in 0..options.folds {
        let train_rows: Vec<usize> = (0..examples.len())
            .filter(|&i| fold_of.get(i) != Some(&fold))
            .collect();
        let fit = fit_logistic(&rows, &labels, &train_rows, buckets, options)?;
        let model = build(&fit, neutral)?;
        for (i, text) in folded.iter().enumerate() {
            if fold_of.get(i) == Some(&fold) {
                if let Some(slot) = held_out_logits.get_mut(i) {
                    *slot = model.score(text, &mut counts).logit;
                }
            }
        }
    }

    let mut fusion = fit_fusion(&held_out_logits, &labels);
    let features_used = idf.iter().filter(|q| **q > 0).count();
    if features_used == 0 {
        bail!(
            "no feature occurs in {} training texts: lower --min-df or add data",
            options.min_df
        );
    }
    // Bayes' rule: moving from the training share of attacks to the prior moves the log odds.
    let share = attacks as f64 / examples.len() as f64;
    fusion.bias = (fusion.bias + logit(options.prior) - logit(share)).clamp(-100.0, 100.0);

    let all: Vec<usize> = (0..examples.len()).collect();
    let fit = fit_logistic(&rows, &labels, &all, buckets, options)?;
    let model = build(&fit, fusion)?;
    Ok(Trained {
        model,
        held_out_logits,
        iterations: fit.iterations,
    })
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// IDF per bucket, `ln((1 + n) / (1 + df)) + 1` as scikit-learn smooths it, quantized to a byte
/// from 1; a bucket in fewer than `min_df` texts is no feature at all (0), so the model cannot
/// lean on what one training text happened to say. Returns the table, the value of 1 and the
/// step.
fn idf_table(counted: &[Vec<(u32, u32)>], buckets: usize, min_df: u32) -> (Vec<u8>, f64, f64) {
    let mut df = vec![0u32; buckets];
    for row in counted {
        for &(b, _) in row {
            if let Some(d) = df.get_mut(b as usize) {
                *d += 1;
            }
        }
    }
    let n = counted.len() as f64;
    let idf_min = 1.0;
    let idf_max = libm::log(1.0 + n) + 1.0;
    let step = (idf_max - idf_min) / 254.0;
    let table = df
        .iter()
        .map(|&d| {
            if d < min_df.max(1) {
                return 0;
            }
            let idf = libm::log((1.0 + n) / (1.0 + f64::from(d))) + 1.0;
            let q = 1.0 + libm::round((idf - idf_min) / step);
            q.clamp(1.0, 255.0) as u8
        })
        .collect();
    (table, idf_min, step)
}

/// TF-IDF rows, `(1 + ln c) * idf`, of unit length times the row's evidence scale, the way the
/// model scores a window.
fn tf_idf_rows(counted: &[Vec<(u32, u32)>], shrink: &[f64], idf_of: &impl Fn(u32) -> f64) -> Rows {
    let mut rows = Rows {
        starts: vec![0],
        buckets: Vec::new(),
        values: Vec::new(),
    };
    for (row, &scale_of_row) in counted.iter().zip(shrink) {
        let start = rows.values.len();
        let mut norm = 0.0;
        for &(b, c) in row {
            let v = sublinear_tf(c) * idf_of(b);
            if v == 0.0 {
                continue;
            }
            rows.buckets.push(b);
            rows.values.push(v);
            norm += v * v;
        }
        if norm > 0.0 {
            let scale = scale_of_row / libm::sqrt(norm);
            // This row's values: those pushed since `start`.
            for v in rows.values.get_mut(start..).unwrap_or_default() {
                *v *= scale;
            }
        }
        rows.starts.push(rows.values.len());
    }
    rows
}

/// Folds stratified by label: each label's rows shuffled by the seed and dealt round-robin.
fn assign_folds(labels: &[bool], folds: u32, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    let mut fold_of = vec![0; labels.len()];
    for class in [true, false] {
        let mut members: Vec<usize> = (0..labels.len())
            .filter(|&i| labels.get(i) == Some(&class))
            .collect();
        // Fisher–Yates.
        for i in (1..members.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            members.swap(i, j);
        }
        for (k, &i) in members.iter().enumerate() {
            if let Some(f) = fold_of.get_mut(i) {
                *f = (k as u64 % u64::from(folds)) as u32;
            }
        }
    }
    fold_of
}

/// A small, well-known generator; all the trainer needs is a reproducible shuffle.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A fitted logistic regression.
struct Fit {
    weights: Vec<f64>,
    bias: f64,
    iterations: u32,
}

/// Mean log loss with L2 and its gradient, over the rows in `subset`. The last entry of `params`
/// is the bias, which is not penalised.
fn loss_and_gradient(
    rows: &Rows,
    labels: &[bool],
    subset: &[usize],
    params: &[f64],
    l2: f64,
    gradient: &mut [f64],
) -> f64 {
    let dims = params.len() - 1;
    let bias = params.get(dims).copied().unwrap_or(0.0);
    gradient.iter_mut().for_each(|g| *g = 0.0);
    let n = subset.len().max(1) as f64;
    let mut loss = 0.0;
    let mut bias_gradient = 0.0;
    for &i in subset {
        let z: f64 = bias
            + rows
                .row(i)
                .map(|(b, v)| params.get(b).copied().unwrap_or(0.0) * v)
                .sum::<f64>();
        let y = if labels.get(i) == Some(&true) {
            1.0
        } else {
            0.0
        };
        // log(1 + e^z) - y z, computed without overflow.
        loss += if z > 0.0 {
            z + libm::log1p(libm::exp(-z))
        } else {
            libm::log1p(libm::exp(z))
        } - y * z;
        let residual = (sigmoid(z) - y) / n;
        bias_gradient += residual;
        for (b, v) in rows.row(i) {
            if let Some(g) = gradient.get_mut(b) {
                *g += residual * v;
            }
        }
    }
    let mut penalty = 0.0;
    for (g, w) in gradient.iter_mut().zip(params).take(dims) {
        *g += l2 * w;
        penalty += w * w;
    }
    if let Some(g) = gradient.get_mut(dims) {
        *g = bias_gradient;
    }
    loss / n + 0.5 * l2 * penalty
}

/// L-BFGS (10 pairs) with a backtracking line search: deterministic, and quick to converge on a
/// smooth convex objective like this one.
fn fit_logistic(
    rows: &Rows,
    labels: &[bool],
    subset: &[usize],
    buckets: usize,
    options: &TrainOptions,
) -> Result<Fit> {
    const PAIRS: usize = 10;
    const TOLERANCE: f64 = 1e-7;
    let dims = buckets + 1;
    let mut x = vec![0.0; dims];
    let mut g = vec![0.0; dims];
    let mut f = loss_and_gradient(rows, labels, subset, &x, options.l2, &mut g);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::with_capacity(PAIRS);
    let mut iterations = 0;
    let mut x_next = vec![0.0; dims];
    let mut g_next = vec![0.0; dims];
    while iterations < options.max_iterations {
        let g_norm = libm::sqrt(dot(&g, &g));
        if g_norm < TOLERANCE {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let alpha = rho * dot(s, &q);
            axpy(-alpha, y, &mut q);
            alphas.push(alpha);
        }
        let gamma = history
            .last()
            .map_or(1.0 / g_norm.max(1e-12), |(s, y, _)| dot(s, y) / dot(y, y));
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), alpha) in history.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &q);
            axpy(alpha - beta, s, &mut q);
        }
        let direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&g, &direction);
        if slope >= 0.0 {
            // Not a descent direction: start the memory over.
            history.clear();
            continue;
        }
        let mut step = 1.0;
        let mut f_next;
        loop {
            for ((xn, xv), d) in x_next.iter_mut().zip(&x).zip(&direction) {
                *xn = xv + step * d;
            }
            f_next = loss_and_gradient(rows, labels, subset, &x_next, options.l2, &mut g_next);
            if f_next <= f + 1e-4 * step * slope || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        iterations += 1;
        let s: Vec<f64> = x_next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let improvement = f - f_next;
        std::mem::swap(&mut x, &mut x_next);
        std::mem::swap(&mut g, &mut g_next);
        f = f_next;
        if sy > 1e-12 {
            if history.len() == PAIRS {
                history.remove(0);
            }
            history.push((s, y, 1.0 / sy));
        }
        if improvement.abs() < 1e-12 * f.abs().max(1.0) {
            break;
        }
    }
    if !f.is_finite() {
        bail!("training diverged");
    }
    let bias = x.pop().unwrap_or(0.0);
    Ok(Fit {
        weights: x,
        bias,
        iterations,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += alpha * xv;
    }
}

/// Each bucket's weight times its IDF, as `i8` steps of one scale. The scale is set by the
/// 99.99th percentile of magnitudes so that one outlier does not coarsen every other weight;
/// the few beyond it are clipped.
fn quantize(weights: &[f64], idf_of: &impl Fn(u32) -> f64) -> (Vec<i8>, f64) {
    let products: Vec<f64> = weights
        .iter()
        .enumerate()
        .map(|(b, w)| w * idf_of(u32::try_from(b).unwrap_or(u32::MAX)))
        .collect();
    let mut magnitudes: Vec<f64> = products
        .iter()
        .map(|v| v.abs())
        .filter(|v| *v > 0.0)
        .collect();
    magnitudes.sort_by(f64::total_cmp);
    let at = ((magnitudes.len() as f64) * 0.9999) as usize;
    let top = magnitudes
        .get(at.min(magnitudes.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    let scale = if top > 0.0 { top / 127.0 } else { 1.0 };
    let quantized = products
        .iter()
        .map(|v| libm::round(v / scale).clamp(-127.0, 127.0) as i8)
        .collect();
    (quantized, scale)
}

/// The guard's score and components for each example under `policy` with `model` in place of
/// its model: what the guard itself would answer, natively.
pub fn guard_scores(
    examples: &[Example],
    policy: &Policy,
    model: &Model,
) -> Result<Vec<(f64, Components)>> {
    let mut with_model = policy.clone();
    with_model.model = ModelConfig {
        enabled: true,
        data: Some(base64::engine::general_purpose::STANDARD.encode(model.to_bytes()?)),
    };
    let guard = Guard::new(with_model).context("the policy does not compile")?;
    Ok(assess_all(&guard, examples))
}

fn assess_all(guard: &Guard, examples: &[Example]) -> Vec<(f64, Components)> {
    examples
        .iter()
        .map(|e| {
            let input = AssessmentInput::from_text(&e.text, "2026-01-01T00:00:00Z");
            let assessment = guard.assess(&input).assessment;
            (assessment.score, assessment.explanation.components)
        })
        .collect()
}

/// Fits the model's calibration (`bias` and `model`, Platt scaling) by logistic regression with
/// Newton's method on held-out logits.
///
/// The targets are Platt's smoothed ones, `(N+ + 1) / (N+ + 2)` for attacks and `1 / (N- + 2)`
/// for benign rows; the scale is drawn toward 1 and the bias toward 0 by a prior worth a few
/// rows, and Newton steps are damped. When the held-out logits separate the data perfectly
/// (small or easy data), the fit stays near the model's own scale instead of running off to
/// where any unfamiliar text counts as an attack.
fn fit_fusion(held_out_logits: &[f64], labels: &[bool]) -> FusionWeights {
    const RIDGE: f64 = 4.0;
    const MAX_STEP: f64 = 1.0;
    let attacks = labels.iter().filter(|a| **a).count() as f64;
    let benign = labels.len() as f64 - attacks;
    let target_attack = (attacks + 1.0) / (attacks + 2.0);
    let target_benign = 1.0 / (benign + 2.0);
    let (mut bias, mut scale) = (0.0, 1.0);
    for _ in 0..200 {
        let (mut g0, mut g1, mut h00, mut h01, mut h11) =
            (RIDGE * bias, RIDGE * (scale - 1.0), RIDGE, 0.0, RIDGE);
        for (&m, &attack) in held_out_logits.iter().zip(labels) {
            let p = sigmoid(bias + scale * m);
            let y = if attack { target_attack } else { target_benign };
            let w = p * (1.0 - p);
            g0 += p - y;
            g1 += (p - y) * m;
            h00 += w;
            h01 += w * m;
            h11 += w * m * m;
        }
        let det = h00 * h11 - h01 * h01;
        if !det.is_finite() || det.abs() < 1e-300 {
            break;
        }
        let step0 = ((h11 * g0 - h01 * g1) / det).clamp(-MAX_STEP, MAX_STEP);
        let step1 = ((h00 * g1 - h01 * g0) / det).clamp(-MAX_STEP, MAX_STEP);
        bias -= step0;
        scale -= step1;
        if step0.abs().max(step1.abs()) < 1e-12 {
            break;
        }
    }
    FusionWeights {
        bias: bias.clamp(-100.0, 100.0),
        model: scale.clamp(0.0, 100.0),
    }
}
