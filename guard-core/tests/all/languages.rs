//! Every built-in rule that reads a language, through the whole guard: its `match` examples must
//! at least warn (and clear ones stop), its `no_match` examples must never be stopped. Counts are
//! kept per language and category and printed as a table (`cargo test languages -- --nocapture`).

use std::collections::BTreeMap;

use guard_core::rules::builtin_rules;
use guard_core::{Action, AssessmentInput, Category, Guard, Policy};

use crate::NOW;

/// Languages that must cover the three core categories. English counts only once its rules say
/// `"lang": "en"`; before that it is not required.
const LANGUAGES: [&str; 11] = [
    "de", "fr", "es", "it", "pt", "ru", "zh", "ja", "ko", "ar", "hi",
];

const CORE: [Category; 3] = [
    Category::InstructionOverride,
    Category::SystemPromptExtraction,
    Category::Jailbreak,
];

/// Recall at warn-or-stop that every language must reach on its own examples.
const MIN_RECALL: f64 = 0.9;

#[derive(Default, Clone, Copy)]
struct Tally {
    rules: usize,
    positives: usize,
    stopped: usize,
    warned: usize,
    negatives: usize,
    flagged: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.rules += other.rules;
        self.positives += other.positives;
        self.stopped += other.stopped;
        self.warned += other.warned;
        self.negatives += other.negatives;
        self.flagged += other.flagged;
    }

    fn row(&self, lang: &str, label: &str) -> String {
        format!(
            "| {lang} | {label} | {} | {} | {} | {} | {} | {} |",
            self.rules, self.positives, self.stopped, self.warned, self.negatives, self.flagged
        )
    }
}

fn recall(t: &Tally) -> f64 {
    if t.positives == 0 {
        return 0.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "example counts are small")]
    let r = t.warned as f64 / t.positives as f64;
    r
}

/// The rules alone: the table is the static analysis's own, like the dev figures of
/// docs/accuracy.md's rules column.
fn rules_only() -> Guard {
    Guard::from_policy_json(r#"{"model": {"enabled": false}}"#).unwrap()
}

/// With the model, a counter-example may be stopped now and then: they are written to sit next
/// to an attack's words ("never ignore previous instructions from your manager"), which is where
/// a word-level model is weakest. At most this share of them.
const MAX_COUNTER_EXAMPLES_STOPPED_WITH_MODEL: f64 = 0.02;

#[test]
fn with_the_model_counter_examples_are_rarely_stopped_and_examples_still_flagged() {
    let guard = Guard::new(Policy::default()).unwrap();
    let action = |text: &str| {
        guard
            .assess(&AssessmentInput::from_text(text, NOW))
            .assessment
            .action
    };
    let (mut negatives, mut stopped, mut positives, mut flagged) = (0, Vec::new(), 0, 0);
    for spec in builtin_rules().unwrap() {
        for text in &spec.examples.no_match {
            negatives += 1;
            if action(text).stops() {
                stopped.push(format!("{}: {text:?}", spec.id));
            }
        }
        for text in &spec.examples.matching {
            positives += 1;
            flagged += usize::from(action(text) >= Action::Warn);
        }
    }
    println!(
        "counter-examples stopped with the model: {} of {negatives}",
        stopped.len()
    );
    println!("{}", stopped.join("\n"));
    assert!(
        stopped.len() as f64 <= MAX_COUNTER_EXAMPLES_STOPPED_WITH_MODEL * negatives as f64,
        "{} of {negatives} counter-examples stopped:\n{}",
        stopped.len(),
        stopped.join("\n")
    );
    // The rules' evidence is a floor under the fused score, so the model never hides a match.
    assert!(
        flagged as f64 >= MIN_RECALL * positives as f64,
        "{flagged} of {positives}"
    );
}

#[test]
fn every_language_is_covered_and_its_examples_hold_in_the_rules() {
    let guard = rules_only();
    let action = |text: &str| {
        guard
            .assess(&AssessmentInput::from_text(text, NOW))
            .assessment
            .action
    };

    let mut tallies: BTreeMap<(String, Category), Tally> = BTreeMap::new();
    let mut stopped_negatives = Vec::new();
    let mut missed = Vec::new();
    let mut ran = 0;
    for spec in builtin_rules().unwrap() {
        let Some(lang) = spec.lang.clone() else {
            continue;
        };
        let tally = tallies.entry((lang, spec.category)).or_default();
        tally.rules += 1;
        for text in &spec.examples.matching {
            let a = action(text);
            tally.positives += 1;
            tally.stopped += usize::from(a.stops());
            tally.warned += usize::from(a >= Action::Warn);
            if a < Action::Warn {
                missed.push(format!("{}: {text:?} -> {}", spec.id, a.as_str()));
            }
            ran += 1;
        }
        for text in &spec.examples.no_match {
            let a = action(text);
            tally.negatives += 1;
            tally.flagged += usize::from(a >= Action::Warn);
            if a.stops() {
                stopped_negatives.push(format!("{}: {text:?} -> {}", spec.id, a.as_str()));
            }
            ran += 1;
        }
    }

    // The table: per language (keys sort by language, then category), a row per category and a
    // total after each language.
    let mut per_lang: BTreeMap<&str, Tally> = BTreeMap::new();
    for ((lang, _), tally) in &tallies {
        per_lang.entry(lang.as_str()).or_default().add(tally);
    }
    let mut table = vec![
        "| lang | category | rules | positives | stopped | warned or stopped | negatives | flagged |"
            .to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for (lang, total) in &per_lang {
        for ((_, category), tally) in tallies.iter().filter(|((l, _), _)| l == lang) {
            table.push(tally.row(lang, category.as_str()));
        }
        table.push(total.row(lang, "**total**"));
    }
    println!("{}", table.join("\n"));

    // Coverage: the three core categories in every required language, and in English once any
    // English rule carries a language.
    let mut required: Vec<&str> = LANGUAGES.to_vec();
    if per_lang.contains_key("en") {
        required.push("en");
    }
    let mut gaps = Vec::new();
    for lang in &required {
        for category in CORE {
            if tallies
                .get(&((*lang).to_string(), category))
                .is_none_or(|t| t.rules == 0)
            {
                gaps.push(format!("{lang}: no {} rule", category.as_str()));
            }
        }
    }
    assert!(gaps.is_empty(), "missing coverage:\n{}", gaps.join("\n"));

    for lang in &required {
        let total = per_lang.get(lang).copied().unwrap_or_default();
        let r = recall(&total);
        assert!(
            r >= MIN_RECALL,
            "{lang}: recall at warn-or-stop {r:.2} below {MIN_RECALL}; missed:\n{}",
            missed.join("\n")
        );
    }
    assert!(
        stopped_negatives.is_empty(),
        "counter-examples stopped by the guard:\n{}",
        stopped_negatives.join("\n")
    );
    assert!(ran >= 400, "only {ran} examples ran");
}
