//! Policy as data: thresholds, actions per level, rules and limits, with per-tenant overrides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::{Action, Level};
use crate::rules::{RuleError, RuleSpec};

/// Everything that decides how the guard answers, as the caller configures it.
///
/// Every field has a default, so `{}` is the default policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Score thresholds for each level above `very_low`.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The action for each level.
    #[serde(default)]
    pub actions: Actions,
    /// Which rules run.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Bounds on the work one assessment may do.
    #[serde(default)]
    pub limits: Limits,
    /// How content the user did not write (documents, tool output) is judged.
    #[serde(default)]
    pub embedded: EmbeddedPolicy,
    /// The text classifier.
    #[serde(default)]
    pub model: ModelConfig,
    /// How each user's behaviour over time weighs in.
    #[serde(default)]
    pub behaviour: crate::behaviour::BehaviourPolicy,
    /// Overrides by tenant id.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::json::unique_map"
    )]
    pub tenants: BTreeMap<String, TenantOverride>,
}

/// The lowest score of each level. Each must be above the one before, within (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// From here the level is `low`.
    pub low: f64,
    /// From here the level is `medium`.
    pub medium: f64,
    /// From here the level is `high`.
    pub high: f64,
    /// From here the level is `critical`.
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            low: 0.2,
            medium: 0.4,
            high: 0.6,
            critical: 0.85,
        }
    }
}

impl Thresholds {
    /// The lower bound of a level (none for `very_low`).
    pub fn lower_bound(&self, level: Level) -> Option<f64> {
        match level {
            Level::VeryLow => None,
            Level::Low => Some(self.low),
            Level::Medium => Some(self.medium),
            Level::High => Some(self.high),
            Level::Critical => Some(self.critical),
        }
    }

    /// The level a score falls in.
    pub fn level_of(&self, score: f64) -> Level {
        Level::ALL
            .iter()
            .rev()
            .copied()
            .find(|&level| self.lower_bound(level).is_none_or(|t| score >= t))
            .unwrap_or(Level::VeryLow)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let values = [self.low, self.medium, self.high, self.critical];
        let in_range = values
            .iter()
            .all(|t| t.is_finite() && *t > 0.0 && *t <= 1.0);
        let increasing = values.windows(2).all(|w| matches!(w, [a, b] if a < b));
        if in_range && increasing {
            Ok(())
        } else {
            Err(PolicyError::Thresholds(format!(
                "low {}, medium {}, high {}, critical {}",
                self.low, self.medium, self.high, self.critical
            )))
        }
    }
}

/// The action for each level. The default is `DESIGN.md`'s table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// Action at `very_low`.
    pub very_low: Action,
    /// Action at `low`.
    pub low: Action,
    /// Action at `medium`.
    pub medium: Action,
    /// Action at `high`.
    pub high: Action,
    /// Action at `critical`.
    pub critical: Action,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            very_low: Action::Allow,
            low: Action::Allow,
            medium: Action::Warn,
            high: Action::Quarantine,
            critical: Action::Block,
        }
    }
}

impl Actions {
    /// The action for a level.
    pub fn for_level(&self, level: Level) -> Action {
        match level {
            Level::VeryLow => self.very_low,
            Level::Low => self.low,
            Level::Medium => self.medium,
            Level::High => self.high,
            Level::Critical => self.critical,
        }
    }

    fn validate(&self) -> Result<(), PolicyError> {
        // A higher level may never be treated more leniently than a lower one.
        let ordered = Level::ALL
            .windows(2)
            .all(|w| matches!(w, [a, b] if self.for_level(*a) <= self.for_level(*b)));
        if ordered {
            Ok(())
        } else {
            Err(PolicyError::Actions)
        }
    }
}

/// Which rules run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Whether the built-in pack runs.
    #[serde(default = "yes")]
    pub builtin: bool,
    /// Ids of built-in rules to switch off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<String>,
    /// The caller's own rules, in the pack format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<RuleSpec>,
}

fn yes() -> bool {
    true
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            builtin: true,
            disabled: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// Bounds on one assessment. Input beyond them is not silently dropped: it raises a
/// `resource_limit` finding, so what could not be read is not let through as if it were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Total bytes of untrusted text scanned; the rest is reported unscanned.
    pub max_scan_bytes: u64,
    /// Segments in one input.
    pub max_segments: u64,
    /// Findings reported; the rest are counted in a tolerated error.
    pub max_findings: u64,
}

impl Limits {
    /// A limit as a size on this target (limits are `u64` in JSON so that a policy means the
    /// same on 32- and 64-bit targets).
    pub fn usize(limit: u64) -> usize {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_scan_bytes: 32 << 20,
            max_segments: 256,
            max_findings: 100,
        }
    }
}

/// How untrusted segments with the `document` or `tool` role, or an `assistant` turn, are
/// judged. Such text is data the model reads, so an order to the model inside it is an attack on
/// the user as much as on the operator: it weighs more than the same words in the user's request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedPolicy {
    /// Weights of instructions found in embedded content are multiplied by this, up to 0.99.
    /// From 1 (no difference) to 4.
    pub instruction_factor: f64,
    /// Thresholds applied to the findings in embedded content on their own; the stricter of the
    /// two decisions wins. Absent: embedded findings count only toward the overall score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
}

impl Default for EmbeddedPolicy {
    fn default() -> Self {
        EmbeddedPolicy {
            instruction_factor: 1.25,
            thresholds: None,
        }
    }
}

impl EmbeddedPolicy {
    /// The highest weight a boosted finding reaches: boosting never makes certainty.
    pub const MAX_WEIGHT: f64 = 0.99;

    fn validate(&self) -> Result<(), PolicyError> {
        if !(self.instruction_factor.is_finite() && (1.0..=4.0).contains(&self.instruction_factor))
        {
            return Err(PolicyError::Embedded(format!(
                "instruction_factor {} is not within [1, 4]",
                self.instruction_factor
            )));
        }
        if let Some(t) = &self.thresholds {
            t.validate()
                .map_err(|e| PolicyError::Embedded(e.to_string()))?;
        }
        Ok(())
    }
}

/// Which text classifier runs beside the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Whether a model scores at all. Off: the risk is the rules' evidence alone.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A model file from `sigil train`, base64, used in place of the built-in model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            enabled: true,
            data: None,
        }
    }
}

/// What a tenant may change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverride {
    /// Thresholds for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// Actions for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Actions>,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy is not valid JSON of the right shape.
    #[error("policy is malformed: {0}")]
    Malformed(String),
    /// Thresholds are out of range or not increasing.
    #[error("thresholds must increase within (0, 1]: {0}")]
    Thresholds(String),
    /// A higher level has a more lenient action than a lower one.
    #[error("actions must not get more lenient as the level rises")]
    Actions,
    /// A tenant's override is invalid.
    #[error("tenant `{tenant}`: {source}")]
    Tenant {
        /// The tenant.
        tenant: String,
        /// What is wrong.
        source: Box<PolicyError>,
    },
    /// A disabled rule id is not in the built-in pack.
    #[error("cannot disable unknown rule `{0}`")]
    UnknownRule(String),
    /// The embedded-content settings are out of range.
    #[error("embedded: {0}")]
    Embedded(String),
    /// The behaviour settings are out of range.
    #[error("behaviour: {0}")]
    Behaviour(String),
    /// A limit is zero.
    #[error("limit `{0}` must be at least 1")]
    Limit(&'static str),
    /// A rule is invalid.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The model given is not a valid model file.
    #[error("model: {0}")]
    Model(String),
}

impl Policy {
    /// Parses a policy from JSON.
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        serde_json::from_str(json).map_err(|e| PolicyError::Malformed(e.to_string()))
    }

    /// Checks everything that does not need the rules compiled.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.thresholds.validate()?;
        self.actions.validate()?;
        self.embedded.validate()?;
        self.behaviour.validate().map_err(PolicyError::Behaviour)?;
        for (name, value) in [
            ("max_scan_bytes", self.limits.max_scan_bytes),
            ("max_segments", self.limits.max_segments),
            ("max_findings", self.limits.max_findings),
        ] {
            if value == 0 {
                return Err(PolicyError::Limit(name));
            }
        }
        for (tenant, o) in &self.tenants {
            let wrap = |e| PolicyError::Tenant {
                tenant: tenant.clone(),
                source: Box::new(e),
            };
            if let Some(t) = &o.thresholds {
                t.validate().map_err(wrap)?;
            }
            if let Some(a) = &o.actions {
                a.validate().map_err(wrap)?;
            }
        }
        Ok(())
    }

    /// Thresholds and actions in force for a tenant.
    pub fn for_tenant(&self, tenant: Option<&str>) -> (Thresholds, Actions) {
        let o = tenant.and_then(|t| self.tenants.get(t));
        (
            o.and_then(|o| o.thresholds).unwrap_or(self.thresholds),
            o.and_then(|o| o.actions).unwrap_or(self.actions),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_is_the_default_policy() {
        let p = Policy::from_json("{}").unwrap();
        assert_eq!(p, Policy::default());
        p.validate().unwrap();
        assert_eq!(p.actions.for_level(Level::Critical), Action::Block);
        assert_eq!(p.actions.for_level(Level::High), Action::Quarantine);
        assert_eq!(p.actions.for_level(Level::Medium), Action::Warn);
        assert_eq!(p.actions.for_level(Level::Low), Action::Allow);
        assert_eq!(p.actions.for_level(Level::VeryLow), Action::Allow);
    }

    #[test]
    fn levels_from_scores() {
        let t = Thresholds::default();
        assert_eq!(t.level_of(0.0), Level::VeryLow);
        assert_eq!(t.level_of(0.2), Level::Low);
        assert_eq!(t.level_of(0.59), Level::Medium);
        assert_eq!(t.level_of(0.6), Level::High);
        assert_eq!(t.level_of(1.0), Level::Critical);
    }

    #[test]
    fn refuses_bad_policies() {
        for bad in [
            r#"{"thresholds":{"low":0.5,"medium":0.4,"high":0.6,"critical":0.9}}"#,
            r#"{"thresholds":{"low":0,"medium":0.4,"high":0.6,"critical":0.9}}"#,
            r#"{"actions":{"very_low":"block","low":"allow","medium":"warn","high":"quarantine","critical":"block"}}"#,
            r#"{"limits":{"max_scan_bytes":0,"max_segments":1,"max_findings":1}}"#,
            r#"{"tenants":{"acme":{"thresholds":{"low":0.9,"medium":0.4,"high":0.6,"critical":0.95}}}}"#,
        ] {
            let p = Policy::from_json(bad).unwrap();
            assert!(p.validate().is_err(), "accepted {bad}");
        }
        assert!(Policy::from_json(r#"{"thresholds":"high"}"#).is_err());
        assert!(Policy::from_json(r#"{"surprise":1}"#).is_err());
        // A tenant given twice is refused rather than settled by whichever comes last.
        assert!(Policy::from_json(r#"{"tenants":{"acme":{},"acme":{"actions":null}}}"#).is_err());
    }

    #[test]
    fn tenant_overrides_apply_only_to_that_tenant() {
        let p = Policy::from_json(
            r#"{"tenants":{"strict":{"actions":{"very_low":"allow","low":"warn","medium":"quarantine","high":"block","critical":"block"}}}}"#,
        )
        .unwrap();
        p.validate().unwrap();
        assert_eq!(p.for_tenant(Some("strict")).1.medium, Action::Quarantine);
        assert_eq!(p.for_tenant(Some("other")).1.medium, Action::Warn);
        assert_eq!(p.for_tenant(None).1.medium, Action::Warn);
    }
}
