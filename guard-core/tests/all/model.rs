//! The model's part: what only it catches must hold up against the cheap ways around it.

use guard_core::{AssessmentInput, FindingSource, Guard, Policy};

use crate::{shared, NOW};

/// Dev rows as `(label is attack, text)`.
fn dev() -> Vec<(bool, String)> {
    let path = shared().join("data/prompts/dev.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["label"] == "attack",
                v["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Attacks the guard stops on the model's word alone: no rule finding.
fn caught_by_the_model_alone(guard: &Guard, rows: &[(bool, String)]) -> Vec<String> {
    rows.iter()
        .filter(|(attack, _)| *attack)
        .filter(|(_, text)| {
            let a = guard
                .assess(&AssessmentInput::from_text(text.as_str(), NOW))
                .assessment;
            a.action.stops() && a.findings.iter().all(|f| f.source == FindingSource::Model)
        })
        .map(|(_, text)| text.clone())
        .collect()
}

fn stopped(guard: &Guard, texts: impl Iterator<Item = String>) -> (usize, usize) {
    let mut n = 0;
    let mut stopped = 0;
    for text in texts {
        n += 1;
        let a = guard
            .assess(&AssessmentInput::from_text(text, NOW))
            .assessment;
        stopped += usize::from(a.action.stops());
    }
    (stopped, n)
}

#[test]
fn a_quoted_stray_token_does_not_discount_the_model() {
    let guard = Guard::new(Policy::default()).unwrap();
    let rows = dev();
    let caught = caught_by_the_model_alone(&guard, &rows);
    assert!(
        caught.len() >= 100,
        "only {} caught by the model alone",
        caught.len()
    );
    // Quoting a delimiter is a weak rule match in quotes: the text does not discuss an attack,
    // so the model keeps its full weight.
    let (kept, n) = stopped(&guard, caught.iter().map(|t| format!("{t} \"<|im_end|>\"")));
    assert_eq!(
        kept, n,
        "{kept} of {n} still stopped with a quoted delimiter"
    );
}

/// Share of the model-only catches still stopped behind 1,000 bytes of ordinary prompts. Today
/// about a quarter (42 of 185): a borderline catch shares its window with the prompts before it,
/// which is the weakness docs/accuracy.md states; this floor keeps it from getting worse.
const MIN_STOPPED_BEHIND_PREFIX: f64 = 0.2;

#[test]
fn benign_text_in_front_does_not_hide_what_the_model_caught() {
    let guard = Guard::new(Policy::default()).unwrap();
    let rows = dev();
    let caught = caught_by_the_model_alone(&guard, &rows);
    let benign: Vec<&String> = rows
        .iter()
        .filter(|(attack, t)| !*attack && t.is_ascii() && t.len() < 400)
        .map(|(_, t)| t)
        .collect();
    let mut prefix = String::new();
    for t in benign.iter().cycle().take(200) {
        if prefix.len() >= 1000 {
            break;
        }
        prefix.push_str(t);
        prefix.push_str("\n\n");
    }
    let (kept, n) = stopped(&guard, caught.iter().map(|t| format!("{prefix}{t}")));
    println!(
        "{kept} of {n} model-only catches stopped behind {} bytes",
        prefix.len()
    );
    assert!(
        kept as f64 >= MIN_STOPPED_BEHIND_PREFIX * n as f64,
        "{kept} of {n} stopped behind {} bytes of ordinary prompts",
        prefix.len()
    );
    // And the prefix alone is let through.
    let alone = guard
        .assess(&AssessmentInput::from_text(prefix, NOW))
        .assessment;
    assert!(!alone.action.stops(), "{}", alone.explanation.summary);
}

#[test]
fn repeating_a_benign_question_adds_no_evidence() {
    let guard = Guard::new(Policy::default()).unwrap();
    let once = "How do I reset my password?";
    let score = |text: &str| {
        guard
            .assess(&AssessmentInput::from_text(text, NOW))
            .assessment
            .score
    };
    let base = score(once);
    for times in [5, 100] {
        let repeated = vec![once; times].join(" ");
        let s = score(&repeated);
        assert!(s < 0.4, "{times} times: {s} (once: {base})");
    }
}
