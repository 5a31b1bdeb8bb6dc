//! The evaluation report as Markdown: what `sigil eval` prints and `--report` writes.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::{Group, Report, ScorerReport, MAX_FPR};
use crate::metrics::Confusion;

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn three(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_string(), |v| format!("{v:.3}"))
}

fn micros(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_string(), |v| format!("{v:.0}"))
}

fn threshold(x: Option<f64>) -> String {
    x.map_or_else(
        || "none (nothing flagged)".to_string(),
        |v| format!("{v:.4}"),
    )
}

/// Labels come from the data; a `|` in one must not split the table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn row(out: &mut impl Write, name: &str, c: &Confusion) -> io::Result<()> {
    writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        cell(name),
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

/// The whole report. `plot` is the link to the curves' SVG, when one was written.
pub(super) fn write(out: &mut impl Write, r: &Report, plot: Option<&str>) -> io::Result<()> {
    // `Display` of f64 drops a zero fraction: 1%, 0.5%.
    let fpr_label = format!("{}%", MAX_FPR * 100.0);
    writeln!(out, "# Evaluation of `{}`\n", r.file)?;
    writeln!(
        out,
        "{} rows ({} attacks, {} benign), {}. Operating point of every scorer but `fused`: \
         score >= {} (the policy's `high` threshold).\n",
        r.rows,
        r.attacks,
        r.benign,
        r.policy
            .as_deref()
            .map_or_else(|| "default policy".to_string(), |p| format!("policy `{p}`")),
        r.high_threshold
    )?;

    writeln!(out, "## Scorers\n")?;
    for s in &r.scorers {
        writeln!(out, "- **{}**: {}.", s.name, s.about)?;
        if s.name == "rules" && !r.model_reported {
            writeln!(
                out,
                "- **model**: absent; this guard reports no model score, so none is measured."
            )?;
        }
    }

    writeln!(out, "\n## Summary\n")?;
    writeln!(
        out,
        "Recall at a false-positive rate of at most {fpr_label}: at the smallest observed score \
         whose threshold (score >= threshold) flags at most {fpr_label} of the benign rows. PR AUC \
         is average precision (step-wise, no interpolation).\n"
    )?;
    writeln!(
        out,
        "| scorer | ROC AUC | PR AUC | recall at ≤{fpr_label} FPR | threshold | FPR there | precision there |\n|---|---|---|---|---|---|---|"
    )?;
    for s in &r.scorers {
        let (recall, thr, fpr, precision) = match &s.at_max_fpr {
            Some(a) => (
                pct(a.measured.recall),
                threshold(a.threshold),
                pct(a.measured.fpr),
                pct(a.measured.precision),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        writeln!(
            out,
            "| {} | {} | {} | {recall} | {thr} | {fpr} | {precision} |",
            s.name,
            three(s.roc_auc),
            three(s.pr_auc)
        )?;
    }

    writeln!(out, "\n## At the operating point\n")?;
    writeln!(
        out,
        "| scorer | flagged when | n | TP | FN | FP | TN | precision | recall | F1 | FPR |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for s in &r.scorers {
        let m = &s.operating_point.measured;
        let c = &m.counts;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            cell(&s.operating_point.rule),
            m.n,
            c.tp,
            c.fn_,
            c.fp,
            c.tn,
            pct(m.precision),
            pct(m.recall),
            pct(m.f1),
            pct(m.fpr)
        )?;
    }

    write_at_fpr_by_kind(out, r, &fpr_label)?;
    for (title, pick) in [
        (
            "kind",
            (|s: &ScorerReport| &s.by_kind) as fn(&ScorerReport) -> &BTreeMap<String, Group>,
        ),
        ("source", |s: &ScorerReport| &s.by_source),
        ("language", |s: &ScorerReport| &s.by_lang),
    ] {
        write_groups(out, r, title, pick)?;
    }

    writeln!(out, "\n## The guard's decisions (fused)\n")?;
    writeln!(
        out,
        "Detected = quarantine or block; the second overall row counts warnings too.\n"
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
        writeln!(out, "\n### By {title} (detected = stopped)\n")?;
        writeln!(out, "{HEADER}")?;
        for (name, c) in map {
            row(out, name, c)?;
        }
    }
    writeln!(
        out,
        "\n### Levels\n\n| level | attack | benign |\n|---|---|---|"
    )?;
    for level in guard_core::Level::ALL {
        let (a, b) = r.by_level.get(level.as_str()).copied().unwrap_or((0, 0));
        writeln!(out, "| {} | {a} | {b} |", level.as_str())?;
    }

    write_calibration(out, r)?;
    write_latency(out, r)?;
    if let Some(plot) = plot {
        writeln!(out, "\n## Curves\n")?;
        writeln!(
            out,
            "ROC with the false-positive rate on a log scale (a rate of 0 at the left edge), and \
             precision against recall as steps.\n"
        )?;
        writeln!(out, "![ROC and precision-recall curves]({plot})")?;
    }
    Ok(())
}

fn write_at_fpr_by_kind(out: &mut impl Write, r: &Report, fpr_label: &str) -> io::Result<()> {
    writeln!(out, "\n## Per kind at the {fpr_label}-FPR threshold\n")?;
    writeln!(
        out,
        "Each scorer's threshold from the summary, applied to each kind: recall for attack \
         kinds, false-positive rate (marked FPR) for benign kinds.\n"
    )?;
    write!(out, "| kind | n |")?;
    for s in &r.scorers {
        write!(out, " {} |", s.name)?;
    }
    write!(out, "\n|---|---|")?;
    for _ in &r.scorers {
        write!(out, "---|")?;
    }
    writeln!(out)?;
    for (kind, counts) in &r.by_kind {
        write!(out, "| {} | {} |", cell(kind), counts.n())?;
        for s in &r.scorers {
            let m = s.by_kind.get(kind).and_then(|g| g.at_max_fpr);
            let text = match m {
                Some(m) if m.counts.attacks() > 0 => pct(m.recall),
                Some(m) => format!("FPR {}", pct(m.fpr)),
                None => "—".to_string(),
            };
            write!(out, " {text} |")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_groups(
    out: &mut impl Write,
    r: &Report,
    title: &str,
    pick: fn(&ScorerReport) -> &BTreeMap<String, Group>,
) -> io::Result<()> {
    writeln!(out, "\n## By {title} at the operating point\n")?;
    writeln!(
        out,
        "Recall over the attacks and false-positive rate over the benign rows of each {title}, \
         every scorer at its operating point.\n"
    )?;
    write!(out, "| {title} | n | attacks | benign |")?;
    for s in &r.scorers {
        write!(out, " {0} recall | {0} FPR |", s.name)?;
    }
    write!(out, "\n|---|---|---|---|")?;
    for _ in &r.scorers {
        write!(out, "---|---|")?;
    }
    writeln!(out)?;
    let Some(first) = r.scorers.first() else {
        return Ok(());
    };
    for (name, group) in pick(first) {
        let c = &group.operating.counts;
        write!(
            out,
            "| {} | {} | {} | {} |",
            cell(name),
            c.n(),
            c.attacks(),
            c.benign()
        )?;
        for s in &r.scorers {
            let m = pick(s).get(name).map(|g| g.operating);
            write!(
                out,
                " {} | {} |",
                pct(m.and_then(|m| m.recall)),
                pct(m.and_then(|m| m.fpr))
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_calibration(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let calibrated: Vec<_> = r
        .scorers
        .iter()
        .filter_map(|s| s.calibration.as_ref().map(|c| (s.name, c)))
        .collect();
    if calibrated.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n## Calibration\n")?;
    writeln!(
        out,
        "Scores read as probabilities of attack: ten equal-width bins over [0, 1] (each bin \
         holds scores from its lower edge up to, not including, its upper edge; the last also \
         holds 1), with the rows in each, their mean score and the share that are attacks. \
         Brier score: the mean of (score − outcome)², 0 is perfect.\n"
    )?;
    writeln!(out, "| scorer | Brier score |\n|---|---|")?;
    for (name, c) in &calibrated {
        writeln!(out, "| {name} | {} |", three(c.brier))?;
    }
    write!(out, "\n| bin |")?;
    for (name, _) in &calibrated {
        write!(out, " {name} n | {name} mean score | {name} attack share |")?;
    }
    write!(out, "\n|---|")?;
    for _ in &calibrated {
        write!(out, "---|---|---|")?;
    }
    writeln!(out)?;
    let bins = calibrated.first().map_or(0, |(_, c)| c.bins.len());
    for i in 0..bins {
        let edges = calibrated
            .first()
            .and_then(|(_, c)| c.bins.get(i))
            .map_or_else(String::new, |b| format!("{:.1}–{:.1}", b.lower, b.upper));
        write!(out, "| {edges} |")?;
        for (_, c) in &calibrated {
            match c.bins.get(i) {
                Some(b) => write!(
                    out,
                    " {} | {} | {} |",
                    b.count,
                    three(b.mean_predicted),
                    pct(b.observed_rate)
                )?,
                None => write!(out, " | | |")?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_latency(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let Some(latency) = &r.latency else {
        return Ok(());
    };
    writeln!(out, "\n## Latency per prompt\n")?;
    writeln!(
        out,
        "| | rows | median µs | p95 µs | measured as |\n|---|---|---|---|---|"
    )?;
    let g = &latency.guard;
    writeln!(
        out,
        "| sigil guard | {} | {} | {} | wall clock around each guard call (wasmtime, one guard instance per thread, {} threads) |",
        g.rows,
        micros(g.median_us),
        micros(g.p95_us),
        latency.guard_threads
    )?;
    if let Some(p) = &latency.peer {
        writeln!(
            out,
            "| peer | {} | {} | {} | `latency_us` from the peer file |",
            p.rows,
            micros(p.median_us),
            micros(p.p95_us)
        )?;
    }
    Ok(())
}
