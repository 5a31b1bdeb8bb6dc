//! `sigil eval`: precision, recall, F1 and false-positive rate on labeled JSON Lines.
//!
//! A prompt counts as detected when the guard stops it (quarantine or block), the decision that
//! keeps it from the model. A second operating point, warned or stopped, is reported beside it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use guard_core::{Action, AssessmentOutput};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::{parallel_map, GuardOptions};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Labeled JSON Lines: `text`, `label` (attack or benign), optional `kind`, `source`, `lang`.
    file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    guard: GuardOptions,
}

#[derive(Debug, Deserialize)]
struct Row {
    text: String,
    label: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// A confusion matrix.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Counts {
    fn add(&mut self, attack: bool, detected: bool) {
        match (attack, detected) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }
    fn n(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }
    fn ratio(num: u64, den: u64) -> Option<f64> {
        (den > 0).then(|| num as f64 / den as f64)
    }
    pub fn precision(&self) -> Option<f64> {
        Self::ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> Option<f64> {
        Self::ratio(self.tp, self.tp + self.fn_)
    }
    pub fn fpr(&self) -> Option<f64> {
        Self::ratio(self.fp, self.fp + self.tn)
    }
    pub fn f1(&self) -> Option<f64> {
        match (self.precision(), self.recall()) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    file: String,
    rows: u64,
    /// Detected = quarantined or blocked.
    stopped: Counts,
    /// Detected = warned, quarantined or blocked.
    warned_or_stopped: Counts,
    by_kind: BTreeMap<String, Counts>,
    by_source: BTreeMap<String, Counts>,
    by_lang: BTreeMap<String, Counts>,
    /// Each kind split by language, so that false positives on `benign` and `hard_benign` and
    /// recall per kind can be read per language.
    by_kind_and_lang: BTreeMap<String, Counts>,
    by_level: BTreeMap<String, (u64, u64)>,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let engine = args.guard.engine()?;
    let now = args.guard.now()?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open `{}`", args.file.display()))?;
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("line {}: cannot read", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not a labeled row", index + 1))?;
        let attack = match row.label.as_str() {
            "attack" => true,
            "benign" => false,
            other => bail!(
                "line {}: label `{other}` is neither attack nor benign",
                index + 1
            ),
        };
        rows.push((row, attack));
    }
    let progress = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(rows.len() as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let decisions = parallel_map(&rows, |(row, _)| {
        let decision = engine
            .assess_text(&row.text, &now)
            .map_err(anyhow::Error::from)
            .and_then(|json| Ok(serde_json::from_str::<AssessmentOutput>(&json)?));
        progress.inc(1);
        decision
    });

    let mut report = Report {
        file: args.file.display().to_string(),
        ..Report::default()
    };
    for ((row, attack), decision) in rows.iter().zip(decisions) {
        let attack = *attack;
        let output = decision?;
        let action = output.assessment.action;
        let stopped = action.stops();
        let warned = action >= Action::Warn;
        report.rows += 1;
        report.stopped.add(attack, stopped);
        report.warned_or_stopped.add(attack, warned);
        let unknown = || "unknown".to_string();
        for (map, key) in [
            (
                &mut report.by_kind,
                row.kind.clone().unwrap_or_else(unknown),
            ),
            (
                &mut report.by_source,
                row.source.clone().unwrap_or_else(unknown),
            ),
            (
                &mut report.by_lang,
                row.lang.clone().unwrap_or_else(unknown),
            ),
            (
                &mut report.by_kind_and_lang,
                format!(
                    "{} / {}",
                    row.kind.clone().unwrap_or_else(unknown),
                    row.lang.clone().unwrap_or_else(unknown)
                ),
            ),
        ] {
            map.entry(key).or_default().add(attack, stopped);
        }
        let level = report
            .by_level
            .entry(output.assessment.level.as_str().to_string())
            .or_default();
        if attack {
            level.0 += 1;
        } else {
            level.1 += 1;
        }
    }
    progress.finish_and_clear();
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_report(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn row(out: &mut impl Write, name: &str, c: &Counts) -> io::Result<()> {
    // Labels come from the data; a `|` in one must not split the table.
    let name = name.replace('|', "\\|");
    writeln!(
        out,
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.n(),
        c.tp,
        c.fn_,
        c.fp,
        c.tn,
        pct(c.precision()),
        pct(c.recall()),
        pct(c.f1()),
        pct(c.fpr())
    )
}

const HEADER: &str = "| | n | TP | FN | FP | TN | precision | recall | F1 | FPR |\n|---|---|---|---|---|---|---|---|---|---|";

fn print_report(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "{} rows from {}\n", r.rows, r.file)?;
    writeln!(
        out,
        "Overall (detected = quarantine or block; second row: warn or above)\n"
    )?;
    writeln!(out, "{HEADER}")?;
    row(out, "stopped", &r.stopped)?;
    row(out, "warned or stopped", &r.warned_or_stopped)?;
    for (title, map) in [
        ("kind", &r.by_kind),
        ("source", &r.by_source),
        ("language", &r.by_lang),
        ("kind and language", &r.by_kind_and_lang),
    ] {
        writeln!(out, "\nBy {title} (detected = stopped)\n")?;
        writeln!(out, "{HEADER}")?;
        for (name, c) in map {
            row(out, name, c)?;
        }
    }
    writeln!(
        out,
        "\nLevels\n\n| level | attack | benign |\n|---|---|---|"
    )?;
    for level in guard_core::Level::ALL {
        let (a, b) = r.by_level.get(level.as_str()).copied().unwrap_or((0, 0));
        writeln!(out, "| {} | {a} | {b} |", level.as_str())?;
    }
    Ok(())
}
