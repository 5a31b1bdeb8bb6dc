//! `sigil eval`: how well the guard tells attacks from benign prompts, on labeled JSON Lines.
//!
//! Each prompt goes through the guard once; its answer gives up to three scorers and a peer file
//! may add a fourth:
//!
//! - `rules`: the static rules alone (`assessment.explanation.components.rules`; where the guard
//!   reports no components, the fused score stands in and the report says so);
//! - `model`: the model's probability alone (`components.model`), reported only when the guard
//!   gives it;
//! - `fused`: the guard's score (`assessment.score`);
//! - `peer`: another detector's scores from `--peer`, matched to the rows by `id`.
//!
//! For each scorer: ROC AUC, average precision, recall at a false-positive rate of at most 1%
//! and the threshold that gives it, and precision, recall, F1 and false-positive rate at an
//! operating point. The operating point of `fused` is the guard's own decision: a prompt counts
//! as detected when it is stopped (quarantine or block), the decision that keeps it from the
//! model (a second row, warned or stopped, is reported beside it). The other scorers flag a
//! prompt when its score reaches the policy's `high` threshold. Then the same per kind, source
//! and language, calibration for `fused` and `model`, and the time each guard call took.
//!
//! The guard's answer is read as plain JSON, not as guard-core's types, so that fields a newer
//! guard adds (the components) are read when they are there and missed cleanly when not.

mod markdown;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use guard_core::{Action, Level};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parallel_map, worker_threads, GuardOptions};
use crate::metrics::{quantile, Calibration, Confusion, PrPoint, RocPoint, Scores};
use crate::plot::{roc_pr_svg, Series};

/// The false-positive rate the headline recall is measured at.
const MAX_FPR: f64 = 0.01;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Labeled JSON Lines: `text`, `label` (attack or benign), optional `id`, `kind`, `source`,
    /// `lang`.
    file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Another detector's scores on the same rows, measured beside the guard: JSON Lines
    /// `{"id", "score", "latency_us"}`, one per row of FILE, matched by `id`.
    #[arg(long, value_name = "FILE")]
    peer: Option<PathBuf>,
    /// Also write the report as Markdown to this file.
    #[arg(long, value_name = "FILE.md")]
    report: Option<PathBuf>,
    /// Write the ROC and precision-recall curves of every scorer as one SVG to this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    guard: GuardOptions,
}

#[derive(Debug, Deserialize)]
struct Row {
    text: String,
    label: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// One labeled row as read.
#[derive(Debug)]
struct Labeled {
    /// Line number in the file, from 1.
    line: usize,
    id: Option<String>,
    text: String,
    attack: bool,
    kind: String,
    source: String,
    lang: String,
}

/// What eval reads from one answer of the guard.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Answer {
    score: f64,
    action: Action,
    level: Level,
    rules: Option<f64>,
    model: Option<f64>,
}

/// A confusion matrix with its rates, for the JSON report.
#[derive(Debug, Clone, Copy, Serialize)]
struct Measured {
    #[serde(flatten)]
    counts: Confusion,
    n: u64,
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
    fpr: Option<f64>,
}

impl From<Confusion> for Measured {
    fn from(c: Confusion) -> Self {
        Measured {
            counts: c,
            n: c.n(),
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            fpr: c.fpr(),
        }
    }
}

/// The operating point that keeps the false-positive rate within [`MAX_FPR`].
#[derive(Debug, Clone, Copy, Serialize)]
struct AtFpr {
    max_fpr: f64,
    /// Rows with `score >= threshold` are flagged; `None`: no observed score keeps the rate
    /// within the bound, and nothing is flagged.
    threshold: Option<f64>,
    #[serde(flatten)]
    measured: Measured,
}

#[derive(Debug, Clone, Serialize)]
struct OperatingPoint {
    /// How a row is flagged, in words.
    rule: String,
    /// The score threshold, for scorers flagged by threshold.
    threshold: Option<f64>,
    #[serde(flatten)]
    measured: Measured,
}

/// One group of rows (a kind, source or language) for one scorer.
#[derive(Debug, Clone, Copy, Serialize)]
struct Group {
    /// At the scorer's operating point.
    operating: Measured,
    /// At the scorer's threshold for a 1% false-positive rate over all rows.
    at_max_fpr: Option<Measured>,
}

#[derive(Debug, Default)]
struct GroupCounts {
    operating: Confusion,
    at_max_fpr: Confusion,
}

#[derive(Debug, Clone, Serialize)]
struct ScorerReport {
    name: &'static str,
    /// Where the scores come from.
    about: String,
    roc_auc: Option<f64>,
    /// Average precision.
    pr_auc: Option<f64>,
    at_max_fpr: Option<AtFpr>,
    operating_point: OperatingPoint,
    by_kind: BTreeMap<String, Group>,
    by_source: BTreeMap<String, Group>,
    by_lang: BTreeMap<String, Group>,
    /// For `fused` and `model`, whose scores are meant as probabilities.
    calibration: Option<Calibration>,
    roc: Vec<RocPoint>,
    pr: Vec<PrPoint>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct LatencyStats {
    rows: usize,
    median_us: Option<f64>,
    p95_us: Option<f64>,
}

impl LatencyStats {
    fn of(values: &[f64]) -> Self {
        LatencyStats {
            rows: values.len(),
            median_us: quantile(values, 0.5),
            p95_us: quantile(values, 0.95),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Latency {
    /// Wall clock around each guard call (`GuardEngine::assess_text`), per prompt.
    guard: LatencyStats,
    /// The threads the guard calls ran on, each with its own guard instance.
    guard_threads: usize,
    /// From the peer file's `latency_us`.
    peer: Option<LatencyStats>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    file: String,
    /// The policy file, or none for the default policy.
    policy: Option<String>,
    /// The policy's `high` threshold: the operating point of every scorer but `fused`.
    high_threshold: f64,
    rows: u64,
    attacks: u64,
    benign: u64,
    /// The guard's decisions. Detected = quarantined or blocked.
    stopped: Confusion,
    /// Detected = warned, quarantined or blocked.
    warned_or_stopped: Confusion,
    by_kind: BTreeMap<String, Confusion>,
    by_source: BTreeMap<String, Confusion>,
    by_lang: BTreeMap<String, Confusion>,
    /// Each kind split by language, so that false positives on `benign` and `hard_benign` and
    /// recall per kind can be read per language.
    by_kind_and_lang: BTreeMap<String, Confusion>,
    by_level: BTreeMap<String, (u64, u64)>,
    /// Every scorer, in the order rules, model, fused, peer.
    scorers: Vec<ScorerReport>,
    /// Whether the guard reported the rules' own score; without it the fused score stands in.
    rules_reported: bool,
    /// Whether the guard reported a model score.
    model_reported: bool,
    peer_file: Option<String>,
    latency: Option<Latency>,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let (engine, policy) = args.guard.engine_and_policy()?;
    let now = args.guard.now()?;
    let rows = read_rows(&args.file)?;
    let peer = match &args.peer {
        Some(path) => Some(read_peer(path, &rows)?),
        None => None,
    };

    let progress = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(rows.len() as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let answers = parallel_map(&rows, |row| {
        let start = Instant::now();
        let answer = engine.assess_text(&row.text, &now);
        let latency_us = start.elapsed().as_secs_f64() * 1e6;
        progress.inc(1);
        answer
            .map_err(anyhow::Error::from)
            .and_then(|json| read_answer(&json))
            .map(|answer| (answer, latency_us))
            .with_context(|| format!("line {}: the guard's answer", row.line))
    });
    progress.finish_and_clear();
    let (answers, latencies): (Vec<Answer>, Vec<f64>) = answers
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();

    let mut report = Report {
        file: args.file.display().to_string(),
        policy: args.guard.policy.as_ref().map(|p| p.display().to_string()),
        high_threshold: policy.thresholds.high,
        peer_file: args.peer.as_ref().map(|p| p.display().to_string()),
        ..Report::default()
    };
    decisions(&mut report, &rows, &answers);
    report.scorers = scorers(&mut report, &rows, &answers, peer.as_deref())?;
    report.latency = Some(Latency {
        guard: LatencyStats::of(&latencies),
        guard_threads: worker_threads(rows.len()),
        peer: peer.as_ref().map(|p| {
            let values: Vec<f64> = p.iter().map(|&(_, latency)| latency).collect();
            LatencyStats::of(&values)
        }),
    });

    if let Some(path) = &args.plot {
        let series: Vec<Series<'_>> = report
            .scorers
            .iter()
            .map(|s| Series {
                name: s.name,
                roc: &s.roc,
                pr: &s.pr,
                roc_auc: s.roc_auc,
                average_precision: s.pr_auc,
                style: match s.name {
                    "rules" => 0,
                    "model" => 1,
                    "fused" => 2,
                    _ => 3,
                },
            })
            .collect();
        let svg = roc_pr_svg(&series, report.attacks, report.benign);
        std::fs::write(path, svg).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let plot_link = args
        .plot
        .as_deref()
        .map(|plot| link_from(args.report.as_deref(), plot));
    if let Some(path) = &args.report {
        let mut text = Vec::new();
        markdown::write(&mut text, &report, plot_link.as_deref())?;
        std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        markdown::write(&mut out, &report, plot_link.as_deref())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How the report names the plot: by file name when both sit in one folder, else as given.
fn link_from(report: Option<&Path>, plot: &Path) -> String {
    match (report.map(Path::parent), plot.parent(), plot.file_name()) {
        (Some(a), b, Some(name)) if a == b => name.to_string_lossy().into_owned(),
        _ => plot.display().to_string(),
    }
}

fn read_rows(path: &Path) -> Result<Vec<Labeled>> {
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("line {number}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line)
            .with_context(|| format!("line {number}: not a labeled row"))?;
        let attack = match row.label.as_str() {
            "attack" => true,
            "benign" => false,
            other => bail!("line {number}: label `{other}` is neither attack nor benign"),
        };
        let id = row
            .id
            .as_ref()
            .map(|id| id_key(id).with_context(|| format!("line {number}")))
            .transpose()?;
        let unknown = || "unknown".to_string();
        rows.push(Labeled {
            line: number,
            id,
            text: row.text,
            attack,
            kind: row.kind.unwrap_or_else(unknown),
            source: row.source.unwrap_or_else(unknown),
            lang: row.lang.unwrap_or_else(unknown),
        });
    }
    Ok(rows)
}

/// An `id` as a key: a string as it is, a number as JSON writes it.
fn id_key(id: &Value) -> Result<String> {
    match id {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => bail!("`id` must be a string or a number, not `{other}`"),
    }
}

#[derive(Debug, Deserialize)]
struct PeerLine {
    id: Value,
    score: f64,
    latency_us: f64,
}

/// The peer's `(score, latency_us)` for each row, in row order. Every row needs an id, every id
/// one line of the peer file, and every line of the peer file a row.
fn read_peer(path: &Path, rows: &[Labeled]) -> Result<Vec<(f64, f64)>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let id = row.id.as_deref().ok_or_else(|| {
            anyhow!(
                "line {}: no `id`, which `--peer` needs to match scores to rows",
                row.line
            )
        })?;
        if let Some(first) = index.insert(id, i) {
            let first = rows.get(first).map_or(0, |r| r.line);
            bail!(
                "line {}: id `{id}` appears twice (first on line {first})",
                row.line
            );
        }
    }
    let what = format!("peer file `{}`", path.display());
    let file = File::open(path).with_context(|| format!("cannot open {what}"))?;
    let mut found: Vec<Option<(f64, f64)>> = vec![None; rows.len()];
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("{what} line {number}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let peer: PeerLine = serde_json::from_str(&line).with_context(|| {
            format!("{what} line {number}: not an `{{\"id\", \"score\", \"latency_us\"}}` object")
        })?;
        let id = id_key(&peer.id).with_context(|| format!("{what} line {number}"))?;
        let Some(&row) = index.get(id.as_str()) else {
            bail!("{what} line {number}: id `{id}` is not in the eval file");
        };
        if !peer.score.is_finite() {
            bail!("{what} line {number}: score of `{id}` is not a finite number");
        }
        if !(peer.latency_us.is_finite() && peer.latency_us >= 0.0) {
            bail!("{what} line {number}: latency of `{id}` is not a duration");
        }
        match found.get_mut(row) {
            Some(Some(_)) => bail!("{what} line {number}: id `{id}` appears twice"),
            Some(slot) => *slot = Some((peer.score, peer.latency_us)),
            None => bail!("{what} line {number}: id `{id}` has no row"),
        }
    }
    rows.iter()
        .zip(found)
        .map(|(row, score)| {
            score.ok_or_else(|| {
                anyhow!(
                    "id `{}` (line {}) has no score in the {what}",
                    row.id.as_deref().unwrap_or_default(),
                    row.line
                )
            })
        })
        .collect()
}

/// Reads score, action, level and the components from the guard's JSON answer.
fn read_answer(json: &str) -> Result<Answer> {
    let value: Value = serde_json::from_str(json)?;
    let assessment = value.get("assessment").context("no `assessment`")?;
    let field = |name: &str| {
        assessment
            .get(name)
            .with_context(|| format!("no `assessment.{name}`"))
    };
    let score = field("score")?
        .as_f64()
        .context("`assessment.score` is not a number")?;
    let action = Action::deserialize(field("action")?).context("`assessment.action`")?;
    let level = Level::deserialize(field("level")?).context("`assessment.level`")?;
    let components = assessment
        .get("explanation")
        .and_then(|e| e.get("components"));
    let component = |name: &str| -> Result<Option<f64>> {
        match components.and_then(|c| c.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .with_context(|| format!("`components.{name}` is not a number")),
        }
    };
    Ok(Answer {
        score,
        action,
        level,
        rules: component("rules")?,
        model: component("model")?,
    })
}

/// Today's tables: the guard's own decisions, overall and per group, and the levels.
fn decisions(report: &mut Report, rows: &[Labeled], answers: &[Answer]) {
    for (row, answer) in rows.iter().zip(answers) {
        let attack = row.attack;
        let stopped = answer.action.stops();
        report.rows += 1;
        if attack {
            report.attacks += 1;
        } else {
            report.benign += 1;
        }
        report.stopped.add(attack, stopped);
        report
            .warned_or_stopped
            .add(attack, answer.action >= Action::Warn);
        for (map, key) in [
            (&mut report.by_kind, row.kind.clone()),
            (&mut report.by_source, row.source.clone()),
            (&mut report.by_lang, row.lang.clone()),
            (
                &mut report.by_kind_and_lang,
                format!("{} / {}", row.kind, row.lang),
            ),
        ] {
            map.entry(key).or_default().add(attack, stopped);
        }
        let level = report
            .by_level
            .entry(answer.level.as_str().to_string())
            .or_default();
        if attack {
            level.0 += 1;
        } else {
            level.1 += 1;
        }
    }
}

/// One column of scores, or `None` when no row has it. Some rows with it and some without is an
/// error naming the first row without.
fn column(
    rows: &[Labeled],
    answers: &[Answer],
    name: &str,
    pick: impl Fn(&Answer) -> Option<f64>,
) -> Result<Option<Vec<f64>>> {
    let values: Vec<Option<f64>> = answers.iter().map(pick).collect();
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    rows.iter()
        .zip(values)
        .map(|(row, v)| {
            v.ok_or_else(|| {
                anyhow!(
                    "line {}: the guard gave a `{name}` component for other rows but not this one",
                    row.line
                )
            })
        })
        .collect::<Result<Vec<f64>>>()
        .map(Some)
}

fn scorers(
    report: &mut Report,
    rows: &[Labeled],
    answers: &[Answer],
    peer: Option<&[(f64, f64)]>,
) -> Result<Vec<ScorerReport>> {
    let high = report.high_threshold;
    let by_threshold =
        |scores: &[f64]| -> Vec<bool> { scores.iter().map(|&s| s >= high).collect() };
    let threshold_rule = format!("score >= {high} (the policy's `high` threshold)");
    let fused: Vec<f64> = answers.iter().map(|a| a.score).collect();
    let mut out = Vec::new();

    let rules = column(rows, answers, "rules", |a| a.rules)?;
    report.rules_reported = rules.is_some();
    let (rules, about) = match rules {
        Some(rules) => (
            rules,
            "the static rules alone (`assessment.explanation.components.rules`)".to_string(),
        ),
        None => (
            fused.clone(),
            "the static rules alone; this guard reports no components, so the fused score \
             (`assessment.score`) stands in"
                .to_string(),
        ),
    };
    let flags = by_threshold(&rules);
    out.push(scorer(
        "rules",
        about,
        rows,
        &rules,
        &flags,
        (threshold_rule.clone(), Some(high)),
        false,
    )?);

    if let Some(model) = column(rows, answers, "model", |a| a.model)? {
        report.model_reported = true;
        let flags = by_threshold(&model);
        out.push(scorer(
            "model",
            "the model's probability alone (`assessment.explanation.components.model`)".to_string(),
            rows,
            &model,
            &flags,
            (threshold_rule.clone(), Some(high)),
            true,
        )?);
    }

    let stopped: Vec<bool> = answers.iter().map(|a| a.action.stops()).collect();
    out.push(scorer(
        "fused",
        "the guard's score (`assessment.score`); its operating point is the guard's own \
         decision"
            .to_string(),
        rows,
        &fused,
        &stopped,
        ("stopped (quarantine or block)".to_string(), None),
        true,
    )?);

    if let Some(peer) = peer {
        let scores: Vec<f64> = peer.iter().map(|&(score, _)| score).collect();
        let flags = by_threshold(&scores);
        out.push(scorer(
            "peer",
            format!(
                "scores from `{}`",
                report.peer_file.as_deref().unwrap_or_default()
            ),
            rows,
            &scores,
            &flags,
            (threshold_rule, Some(high)),
            false,
        )?);
    }
    Ok(out)
}

fn scorer(
    name: &'static str,
    about: String,
    rows: &[Labeled],
    scores: &[f64],
    flags: &[bool],
    (rule, threshold): (String, Option<f64>),
    calibrate: bool,
) -> Result<ScorerReport> {
    let all = Scores::new(rows.iter().zip(scores).map(|(r, &s)| (r.attack, s)))
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("scorer `{name}`"))?;
    let at = all.at_max_fpr(MAX_FPR);
    let operating = Confusion::from_flags(rows.iter().zip(flags).map(|(r, &f)| (r.attack, f)));

    let mut by_kind: BTreeMap<String, GroupCounts> = BTreeMap::new();
    let mut by_source: BTreeMap<String, GroupCounts> = BTreeMap::new();
    let mut by_lang: BTreeMap<String, GroupCounts> = BTreeMap::new();
    for ((row, &score), &flagged) in rows.iter().zip(scores).zip(flags) {
        let at_fpr = at.as_ref().is_some_and(|a| a.flags(score));
        for (map, key) in [
            (&mut by_kind, &row.kind),
            (&mut by_source, &row.source),
            (&mut by_lang, &row.lang),
        ] {
            let group = map.entry(key.clone()).or_default();
            group.operating.add(row.attack, flagged);
            group.at_max_fpr.add(row.attack, at_fpr);
        }
    }
    let groups = |map: BTreeMap<String, GroupCounts>| -> BTreeMap<String, Group> {
        map.into_iter()
            .map(|(key, c)| {
                let group = Group {
                    operating: c.operating.into(),
                    at_max_fpr: at.is_some().then(|| c.at_max_fpr.into()),
                };
                (key, group)
            })
            .collect()
    };
    let calibration = if calibrate {
        Some(
            all.calibration()
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("calibration of scorer `{name}`"))?,
        )
    } else {
        None
    };
    Ok(ScorerReport {
        name,
        about,
        roc_auc: all.roc_auc(),
        pr_auc: all.average_precision(),
        at_max_fpr: at.map(|a| AtFpr {
            max_fpr: a.max_fpr,
            threshold: a.threshold,
            measured: a.confusion.into(),
        }),
        operating_point: OperatingPoint {
            rule,
            threshold,
            measured: operating.into(),
        },
        by_kind: groups(by_kind),
        by_source: groups(by_source),
        by_lang: groups(by_lang),
        calibration,
        roc: all.roc_curve(),
        pr: all.pr_curve(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_components_have_no_rules_or_model_score() {
        let json = r#"{"assessment":{"score":0.7,"level":"high","action":"quarantine",
            "explanation":{"level":"high"}},"profile":{}}"#;
        let a = read_answer(json).unwrap();
        assert_eq!(a.score, 0.7);
        assert_eq!(a.action, Action::Quarantine);
        assert_eq!(a.level, Level::High);
        assert_eq!((a.rules, a.model), (None, None));
    }

    #[test]
    fn answers_with_components_give_both() {
        let json = r#"{"assessment":{"score":0.7,"level":"high","action":"quarantine",
            "explanation":{"components":{"rules":0.2,"model":0.9,"behaviour":0,"terms":[]}}}}"#;
        let a = read_answer(json).unwrap();
        assert_eq!((a.rules, a.model), (Some(0.2), Some(0.9)));
        let bad = json.replace("0.9", "\"high\"");
        assert!(format!("{:#}", read_answer(&bad).unwrap_err()).contains("components.model"));
    }

    fn labeled(line: usize, attack: bool) -> Labeled {
        Labeled {
            line,
            id: Some(line.to_string()),
            text: String::new(),
            attack,
            kind: if attack { "injection" } else { "benign" }.to_string(),
            source: "s".to_string(),
            lang: "en".to_string(),
        }
    }

    fn answer(score: f64, rules: Option<f64>, model: Option<f64>) -> Answer {
        Answer {
            score,
            action: if score >= 0.6 {
                Action::Quarantine
            } else {
                Action::Allow
            },
            level: Level::VeryLow,
            rules,
            model,
        }
    }

    #[test]
    fn components_make_rules_and_model_scorers_of_their_own() {
        let rows = [labeled(1, true), labeled(2, false), labeled(3, true)];
        let answers = [
            answer(0.9, Some(0.0), Some(0.95)),
            answer(0.1, Some(0.0), Some(0.2)),
            answer(0.7, Some(0.7), Some(0.1)),
        ];
        let mut report = Report {
            high_threshold: 0.6,
            ..Report::default()
        };
        let scorers = scorers(&mut report, &rows, &answers, None).unwrap();
        let names: Vec<&str> = scorers.iter().map(|s| s.name).collect();
        assert_eq!(names, ["rules", "model", "fused"]);
        assert!(report.rules_reported && report.model_reported);
        // rules: attacks 0.0 and 0.7, benign 0.0: one pair won, one tied.
        assert_eq!(scorers[0].roc_auc, Some(0.75));
        assert_eq!(scorers[0].operating_point.measured.counts.tp, 1);
        assert!(scorers[0].calibration.is_none());
        // model: attacks 0.95 and 0.1, benign 0.2.
        assert_eq!(scorers[1].roc_auc, Some(0.5));
        assert_eq!(
            scorers[1].calibration.as_ref().map(|c| c.bins.len()),
            Some(10)
        );
        // fused flags what the guard stopped.
        assert_eq!(scorers[2].operating_point.measured.counts.tp, 2);
        assert_eq!(scorers[2].roc_auc, Some(1.0));

        // Without components the fused score stands in for the rules and there is no model.
        let bare = [
            answer(0.9, None, None),
            answer(0.1, None, None),
            answer(0.7, None, None),
        ];
        let mut report = Report::default();
        let scorers = super::scorers(&mut report, &rows, &bare, Some(&[(0.5, 1.0); 3])).unwrap();
        let names: Vec<&str> = scorers.iter().map(|s| s.name).collect();
        assert_eq!(names, ["rules", "fused", "peer"]);
        assert!(!report.rules_reported && !report.model_reported);
        assert_eq!(scorers[0].roc_auc, scorers[1].roc_auc);

        // A component on some rows but not others is an error naming the first row without.
        let mixed = [
            answer(0.9, None, Some(0.9)),
            answer(0.1, None, None),
            answer(0.7, None, Some(0.1)),
        ];
        let err = super::scorers(&mut Report::default(), &rows, &mixed, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2: the guard gave a `model` component"),
            "{err}"
        );
    }

    #[test]
    fn the_plot_is_linked_by_name_beside_the_report() {
        assert_eq!(
            link_from(
                Some(Path::new("docs/eval/dev.md")),
                Path::new("docs/eval/dev.svg")
            ),
            "dev.svg"
        );
        assert_eq!(
            link_from(Some(Path::new("dev.md")), Path::new("/tmp/dev.svg")),
            "/tmp/dev.svg"
        );
        assert_eq!(link_from(None, Path::new("a/dev.svg")), "a/dev.svg");
    }
}
