//! Training the text classifier: hashed n-gram TF-IDF features of folded text, L2-regularised
//! logistic regression fitted with L-BFGS, weights quantized to one byte, and fusion weights
//! fitted on held-out folds.
//!
//! Everything is deterministic given the data and the seed: one thread, a fixed order of
//! floating-point operations, `libm` for logarithms and exponentials, and a seeded fold
//! assignment. The same command on the same file writes the same bytes.

use anyhow::{bail, Context as _, Result};
use guard_core::model::{
    evidence_scale, features::FeatureSpec, logit, sigmoid, sublinear_tf, FeatureCounts, FusionWeights, Model,
    ModelHeader, TrainingRecord, MAX_LOGIT,
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

/// Reads labeled JSON Lines. Blank lines are skipped; anything else that is not a row with
/// `text` and `label` (`attack` or `benign`) is an error naming its line.
pub fn read_examples(bytes: &[u8]) -> Result<Vec<Example>> {
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
        let row: LabeledRow = serde_json::from_str(line)
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
    /// The policy whose rules give the rules' evidence the fusion weighs.
    pub policy: Policy,
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
            window: 4096,
            overlap: 1024,
            evidence_features: 100,
            prior: 0.05,
            policy: Policy::default(),
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
    /// The rules' evidence for each training example.
    pub rule_scores: Vec<f64>,
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
        buckets
            .iter()
            .zip(values)
            .map(|(&b, &v)| (b as usize, v))
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
    let counted: Vec<Vec<(u32, u32)>> = examples
        .iter()
        .map(|e| {
            let folded = guard_core::text::normalize(&e.text);
            counts.count(folded.text(), &spec);
            shrink.push(evidence_scale(counts.total(), options.evidence_features));
            counts.iter().collect()
        })
        .collect();

    let buckets = spec.buckets();
    let (idf, idf_min, idf_step) = idf_table(&counted, buckets);
    let idf_of = |b: u32| idf_min + f64::from(idf.get(b as usize).copied().unwrap_or(0)) * idf_step;
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
            iterations,
            folds: options.folds,
            prior: options.prior,
        },
    };
    let neutral = FusionWeights {
        bias: 0.0,
        rules: 1.0,
        model: 1.0,
        behaviour: 1.0,
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
        for (i, example) in examples.iter().enumerate() {
            if fold_of.get(i) == Some(&fold) {
                let folded = guard_core::text::normalize(&example.text);
                if let Some(slot) = held_out_logits.get_mut(i) {
                    *slot = model.score(folded.text(), &mut counts).logit;
                }
            }
        }
    }

    let rule_scores = rule_scores(examples, &options.policy)?;
    let mut fusion = fit_fusion(&held_out_logits, &rule_scores, &labels);
    // Bayes' rule: moving from the training share of attacks to the prior moves the log odds.
    let share = attacks as f64 / examples.len() as f64;
    fusion.bias = (fusion.bias + logit(options.prior) - logit(share)).clamp(-100.0, 100.0);

    let all: Vec<usize> = (0..examples.len()).collect();
    let fit = fit_logistic(&rows, &labels, &all, buckets, options)?;
    let model = build(&fit, fusion)?;
    Ok(Trained {
        model,
        held_out_logits,
        rule_scores,
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

/// IDF per bucket, `ln((1 + n) / (1 + df)) + 1` as scikit-learn smooths it, quantized to a byte.
/// Returns the table, the value of 0 and the step.
fn idf_table(counted: &[Vec<(u32, u32)>], buckets: usize) -> (Vec<u8>, f64, f64) {
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
    let step = (idf_max - idf_min) / 255.0;
    let table = df
        .iter()
        .map(|&d| {
            let idf = libm::log((1.0 + n) / (1.0 + f64::from(d))) + 1.0;
            let q = libm::round((idf - idf_min) / step);
            q.clamp(0.0, 255.0) as u8
        })
        .collect();
    (table, idf_min, step)
}

/// TF-IDF rows, `(1 + ln c) * idf`, of unit length times the row's evidence scale, the way the
/// model scores a window.
fn tf_idf_rows(
    counted: &[Vec<(u32, u32)>],
    shrink: &[f64],
    idf_of: &impl Fn(u32) -> f64,
) -> Rows {
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
            rows.buckets.push(b);
            rows.values.push(v);
            norm += v * v;
        }
        if norm > 0.0 {
            let scale = scale_of_row / libm::sqrt(norm);
            for v in rows.values.iter_mut().skip(start) {
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
        let y = if labels.get(i) == Some(&true) { 1.0 } else { 0.0 };
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
    let mut magnitudes: Vec<f64> = products.iter().map(|v| v.abs()).filter(|v| *v > 0.0).collect();
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

/// The rules' evidence for each example under `policy` with its model switched off.
pub fn rule_scores(examples: &[Example], policy: &Policy) -> Result<Vec<f64>> {
    let mut rules_only = policy.clone();
    rules_only.model = ModelConfig {
        enabled: false,
        data: None,
    };
    let guard = Guard::new(rules_only).context("the policy does not compile")?;
    Ok(examples
        .iter()
        .map(|e| {
            let input = AssessmentInput::from_text(&e.text, "2026-01-01T00:00:00Z");
            guard.assess(&input).assessment.explanation.components.rules
        })
        .collect())
}

/// Fits `bias`, `rules` and `model` of the fusion by logistic regression (Newton's method) on
/// held-out logits and the rules' evidence. `behaviour` stays 1: there is no labeled behaviour to
/// fit it on, so signals enter on the scale they were given.
fn fit_fusion(held_out_logits: &[f64], rule_scores: &[f64], labels: &[bool]) -> FusionWeights {
    // A little ridge keeps the solve well posed when one input separates the data.
    const RIDGE: f64 = 1e-3;
    let inputs: Vec<[f64; 3]> = held_out_logits
        .iter()
        .zip(rule_scores)
        .map(|(&m, &r)| [1.0, FusionWeights::evidence(r), m])
        .collect();
    let mut beta = [0.0, 1.0, 1.0];
    for _ in 0..50 {
        let mut gradient = [0.0; 3];
        let mut hessian = [[0.0; 3]; 3];
        for (x, &attack) in inputs.iter().zip(labels) {
            let z: f64 = beta.iter().zip(x).map(|(b, v)| b * v).sum();
            let p = sigmoid(z);
            let y = if attack { 1.0 } else { 0.0 };
            for ((g, row), xa) in gradient.iter_mut().zip(hessian.iter_mut()).zip(x) {
                *g += (p - y) * xa;
                for (h, xb) in row.iter_mut().zip(x) {
                    *h += p * (1.0 - p) * xa * xb;
                }
            }
        }
        // The bias is not shrunk.
        for (k, (g, row)) in gradient.iter_mut().zip(hessian.iter_mut()).enumerate().skip(1) {
            *g += RIDGE * beta.get(k).copied().unwrap_or(0.0);
            if let Some(h) = row.get_mut(k) {
                *h += RIDGE;
            }
        }
        let Some(step) = solve3(hessian, gradient) else {
            break;
        };
        let mut change: f64 = 0.0;
        for (b, s) in beta.iter_mut().zip(step) {
            *b -= s;
            change = change.max(s.abs());
        }
        if change < 1e-10 {
            break;
        }
    }
    let [bias, rules, model] = beta;
    FusionWeights {
        bias: bias.clamp(-100.0, 100.0),
        rules: rules.clamp(0.0, 100.0),
        model: model.clamp(0.0, 100.0),
        behaviour: 1.0,
    }
}

/// Solves a 3×3 system by Cramer's rule; `None` when it is singular.
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |[[a, b, c], [d, e, f], [g, h, i]]: [[f64; 3]; 3]| {
        a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    };
    let d = det(m);
    if !d.is_finite() || d.abs() < 1e-300 {
        return None;
    }
    let mut out = [0.0; 3];
    for (col, slot) in out.iter_mut().enumerate() {
        let mut replaced = m;
        for (row, value) in replaced.iter_mut().zip(v) {
            if let Some(cell) = row.get_mut(col) {
                *cell = value;
            }
        }
        *slot = det(replaced) / d;
    }
    Some(out)
}

/// ROC AUC of scores against labels, ties counted as half: a quick look at what training
/// achieved (`sigil eval` reports the rest).
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let mut below = 0.0;
    let mut wins = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let score = pairs.get(i).map_or(0.0, |p| p.0);
        let tied = pairs.iter().skip(i).take_while(|p| p.0 == score).count();
        let group = pairs.get(i..i + tied).unwrap_or_default();
        let tied_negatives = group.iter().filter(|p| !p.1).count() as f64;
        let tied_positives = tied as f64 - tied_negatives;
        wins += tied_positives * (below + 0.5 * tied_negatives);
        below += tied_negatives;
        i += tied;
    }
    wins / (positives * negatives).max(1.0)
}

/// Recall when at most `fpr` of benign rows score at or above the threshold.
pub fn recall_at_fpr(scores: &[f64], labels: &[bool], fpr: f64) -> f64 {
    let mut benign: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|(_, a)| !**a)
        .map(|(s, _)| *s)
        .collect();
    benign.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * benign.len() as f64) as usize;
    // Flag strictly above the (allowed+1)-th highest benign score.
    let threshold = benign.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
    let attacks = labels.iter().filter(|a| **a).count().max(1) as f64;
    scores
        .iter()
        .zip(labels)
        .filter(|(s, a)| **a && **s > threshold)
        .count() as f64
        / attacks
}
