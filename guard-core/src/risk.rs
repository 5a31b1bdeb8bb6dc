//! Risk fusion: findings into one score, the score into a level, the level into an action.

use std::collections::BTreeMap;

use crate::contract::{
    Action, Components, Contribution, Explanation, Finding, FindingSource, Level, Signal,
};
use crate::policy::{Actions, Thresholds};

/// The decision reached from findings and signals.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Risk in [0, 1].
    pub score: f64,
    /// Level of the score.
    pub level: Level,
    /// Action of the level.
    pub action: Action,
    /// Why.
    pub explanation: Explanation,
}

/// Scores are reported to four decimals, so equal decisions print equally everywhere.
pub(crate) fn round4(x: f64) -> f64 {
    libm::round(x * 10_000.0) / 10_000.0
}

/// Combines weights as independent evidence: `1 - Π(1 - w)`.
fn noisy_or(weights: impl Iterator<Item = f64>) -> f64 {
    let keep = weights.fold(1.0, |acc, w| acc * (1.0 - w));
    (1.0 - keep).clamp(0.0, 1.0)
}

/// A weight within [0, 1]; NaN counts as nothing.
fn unit(weight: f64) -> f64 {
    if weight.is_nan() {
        0.0
    } else {
        weight.clamp(0.0, 1.0)
    }
}

/// Decides from findings, behaviour signals and the model's calibrated probability (see
/// [`crate::model::FusionWeights`]).
///
/// Evidence combines as independent: `1 - Π(1 - w)` over the strongest weight of each rule id
/// and signal id, and the model's probability. One id counts once
/// however often it matched, so repeating a phrase does not raise the score; different
/// techniques together do. The model adds evidence to the rules; it never talks a rule's
/// finding (or input left unread) down.
pub fn decide<'a>(
    findings: &'a [Finding],
    signals: &'a [Signal],
    model: Option<f64>,
    thresholds: &Thresholds,
    actions: &Actions,
) -> Decision {
    // The strongest weight of each id: of every finding and signal, of rule findings alone, of
    // signals alone.
    let mut strongest: BTreeMap<&str, f64> = BTreeMap::new();
    let mut rule_weights: BTreeMap<&str, f64> = BTreeMap::new();
    let mut signal_weights: BTreeMap<&str, f64> = BTreeMap::new();
    let keep_strongest = |map: &mut BTreeMap<&'a str, f64>, id: &'a str, w: f64| {
        let entry = map.entry(id).or_insert(0.0);
        *entry = entry.max(w);
    };
    for f in findings {
        let w = unit(f.weight);
        keep_strongest(&mut strongest, &f.id, w);
        if f.source != FindingSource::Model {
            keep_strongest(&mut rule_weights, &f.id, w);
        }
    }
    for s in signals {
        let w = unit(s.weight);
        keep_strongest(&mut strongest, &s.id, w);
        keep_strongest(&mut signal_weights, &s.id, w);
    }
    let rules = noisy_or(rule_weights.values().copied());
    let behaviour = noisy_or(signal_weights.values().copied());
    let (score, model) = match model {
        None => (noisy_or(strongest.values().copied()), None),
        Some(p) => {
            let p = unit(p);
            (noisy_or([rules, p, behaviour].into_iter()), Some(p))
        }
    };
    let components = Components {
        rules: round4(rules),
        model: model.map(round4),
        behaviour: round4(behaviour),
    };
    let score = round4(score.clamp(0.0, 1.0));
    let level = thresholds.level_of(score);
    let action = actions.for_level(level);

    let mut contributions: Vec<Contribution> = strongest
        .into_iter()
        .map(|(id, weight)| Contribution {
            id: id.to_string(),
            weight: round4(weight),
        })
        .collect();
    // Strongest first; ties by id, so the order is the same on every face.
    contributions.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));

    let threshold = thresholds.lower_bound(level);
    let next_threshold = Level::ALL
        .iter()
        .find(|l| **l > level)
        .and_then(|l| thresholds.lower_bound(*l));
    // Which sources made the score, when there is more than one.
    let parts = match components.model {
        Some(model) if components.behaviour > 0.0 => format!(
            " (rules {:.4}, model {model:.4}, behaviour {:.4})",
            components.rules, components.behaviour
        ),
        Some(model) => format!(" (rules {:.4}, model {model:.4})", components.rules),
        None if components.behaviour > 0.0 => format!(
            " (rules {:.4}, behaviour {:.4})",
            components.rules, components.behaviour
        ),
        None => String::new(),
    };
    let summary = match (threshold, next_threshold) {
        (Some(t), Some(n)) => format!(
            "score {score:.4}{parts} is at or above the {} threshold {t} and below the next {n}",
            level.as_str()
        ),
        (Some(t), None) => format!(
            "score {score:.4}{parts} is at or above the {} threshold {t}",
            level.as_str()
        ),
        (None, Some(n)) => format!("score {score:.4}{parts} is below the low threshold {n}"),
        (None, None) => format!("score {score:.4}{parts}"),
    };
    Decision {
        score,
        level,
        action,
        explanation: Explanation {
            level,
            threshold,
            next_threshold,
            contributions,
            components,
            summary,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Category, FindingSource, Span};

    fn finding(id: &str, weight: f64) -> Finding {
        Finding {
            id: id.into(),
            category: Category::InstructionOverride,
            source: FindingSource::Rule,
            weight,
            span: Span {
                segment: 0,
                byte_start: 0,
                byte_end: 0,
                utf16_start: 0,
                utf16_end: 0,
            },
            excerpt: String::new(),
            obfuscations: vec![],
            encodings: vec![],
        }
    }

    #[test]
    fn nothing_found_is_very_low_and_allowed() {
        let d = decide(&[], &[], None, &Thresholds::default(), &Actions::default());
        assert_eq!(
            (d.score, d.level, d.action),
            (0.0, Level::VeryLow, Action::Allow)
        );
        assert_eq!(d.explanation.next_threshold, Some(0.2));
    }

    #[test]
    fn independent_evidence_combines_and_repeats_do_not() {
        let t = Thresholds::default();
        let a = Actions::default();
        let one = decide(&[finding("a", 0.5)], &[], None, &t, &a);
        let repeated = decide(&[finding("a", 0.5), finding("a", 0.5)], &[], None, &t, &a);
        let two = decide(&[finding("a", 0.5), finding("b", 0.5)], &[], None, &t, &a);
        assert_eq!(one.score, 0.5);
        assert_eq!(repeated.score, 0.5);
        assert_eq!(two.score, 0.75);
        assert_eq!(two.level, Level::High);
        assert_eq!(two.action, Action::Quarantine);
        assert_eq!(two.explanation.threshold, Some(0.6));
    }

    #[test]
    fn the_model_joins_as_independent_evidence_and_is_explained() {
        let t = Thresholds::default();
        let a = Actions::default();
        let rules_only = decide(&[finding("a", 0.5)], &[], None, &t, &a);
        let with_model = decide(&[finding("a", 0.5)], &[], Some(0.5), &t, &a);
        assert_eq!(rules_only.explanation.components.model, None);
        assert_eq!(with_model.score, 0.75);
        assert_eq!(with_model.explanation.components.model, Some(0.5));
        assert_eq!(with_model.explanation.components.rules, 0.5);
        assert!(
            with_model
                .explanation
                .summary
                .starts_with("score 0.7500 (rules 0.5000, model 0.5000) is at or above the high"),
            "{}",
            with_model.explanation.summary
        );
        // The model never lowers what the rules found.
        let doubtful = decide(&[finding("a", 0.9)], &[], Some(0.0), &t, &a);
        assert_eq!(doubtful.score, 0.9);
        // Nonsense from a model is nothing, not a crash.
        let nan = decide(&[], &[], Some(f64::NAN), &t, &a);
        assert_eq!(nan.score, 0.0);
    }
}
