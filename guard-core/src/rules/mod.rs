//! Rule packs as data, compiled once into a matcher: a keyword prefilter, then confirmation.
//!
//! Every rule names keywords, one of which occurs in any text it matches. One Aho-Corasick pass
//! over the folded text finds the keywords; the rule's regular expression then runs only on a
//! window around each keyword hit. The `regex` crate's engines (lazy DFA, PikeVM) never
//! backtrack, so the work is linear in the text for a fixed pack, whatever the input.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};
use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;
use regex_automata::Input;
use serde::{Deserialize, Serialize};

use crate::contract::Category;
use crate::text::{ceil_char_boundary, floor_char_boundary};

/// The packs built into every guard: techniques and notation (`core`), and the core categories in
/// other languages (`intl`).
pub const BUILTIN_PACKS: [&str; 2] = [
    include_str!("../../rules/core.json"),
    include_str!("../../rules/intl.json"),
];

/// Every rule of the built-in packs, in pack order.
pub fn builtin_rules() -> Result<Vec<RuleSpec>, RuleError> {
    let mut rules = Vec::new();
    for json in BUILTIN_PACKS {
        rules.extend(RulePack::from_json(json)?.rules);
    }
    Ok(rules)
}

/// Bytes before a keyword hit that a match may start at.
pub const WINDOW_BEFORE: usize = 160;
/// Bytes after a keyword hit that a match may end at.
pub const WINDOW_AFTER: usize = 400;
/// Matches kept per rule and text; more add nothing to the score.
const MAX_MATCHES_PER_RULE: usize = 8;

/// A rule pack as written in a data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePack {
    /// Pack name, such as `core`.
    pub pack: String,
    /// Pack version; bump on any change to a rule.
    pub version: u32,
    /// The rules.
    pub rules: Vec<RuleSpec>,
}

/// One rule as written in a data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id, `family.name`.
    pub id: String,
    /// The family of attack.
    pub category: Category,
    /// Contribution to the risk when it matches, in (0, 1].
    pub weight: f64,
    /// What technique the rule describes.
    pub description: String,
    /// ISO 639-1 code of the language the rule reads, such as `de`; absent for rules about
    /// notation (delimiters, markup, encodings) that read the same in any language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Lower-case literals of the folded text; every match contains at least one. Spaces count
    /// (`" dan"` does not hit `abundant`).
    pub keywords: Vec<String>,
    /// A `regex` pattern over the folded text. `\\b` is an ASCII word boundary. Latin
    /// letters are folded to their base letter (`é` is `e`), so patterns are written without accents.
    pub pattern: String,
    /// Folded text just before a match that cancels it ("do not ", "never ").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless_preceded_by: Vec<String>,
    /// Texts the rule must and must not match; the tests run them.
    pub examples: Examples,
}

/// Examples that pin a rule's meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    /// Texts the rule matches.
    #[serde(rename = "match")]
    pub matching: Vec<String>,
    /// Texts the rule does not match.
    pub no_match: Vec<String>,
}

/// Why a rule pack was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The pack is not valid JSON of the right shape.
    #[error("rule pack is malformed: {0}")]
    Malformed(String),
    /// A rule's pattern does not compile.
    #[error("rule `{id}` has an invalid pattern: {reason}")]
    Pattern {
        /// The rule.
        id: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A rule is not usable as written.
    #[error("rule `{id}` is invalid: {reason}")]
    Invalid {
        /// The rule.
        id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two rules share an id.
    #[error("rule id `{0}` appears twice")]
    DuplicateId(String),
}

impl RulePack {
    /// Parses a pack from its JSON text.
    pub fn from_json(json: &str) -> Result<Self, RuleError> {
        serde_json::from_str(json).map_err(|e| RuleError::Malformed(e.to_string()))
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id.
    pub id: String,
    /// The family of attack.
    pub category: Category,
    /// Contribution to the risk.
    pub weight: f64,
    /// The pattern as the regex engine gets it.
    pattern: String,
    /// Compiled on the first window that needs it: most rules never see a keyword in a given
    /// text, and compiling all of them up front would dominate the cost of a new guard.
    regex: OnceLock<Option<Regex>>,
    unless_preceded_by: Vec<String>,
}

/// All enabled rules, compiled.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    prefilter: Option<AhoCorasick>,
    /// For each prefilter pattern, what a hit on it means.
    keyword_uses: Vec<KeywordUse>,
    /// Words of attacks in ROT13 (patterns `0..n`) and spelled backwards (`n..`).
    encoding_hints: AhoCorasick,
}

/// What a hit on one prefilter pattern means.
#[derive(Debug, Clone, Default)]
struct KeywordUse {
    /// Rules that listed the pattern as a keyword.
    rules: Vec<usize>,
}

/// Words whose ROT13 or reversed spelling says a text is worth reading again in that encoding:
/// the vocabulary of attacks, and the commonest English words (ROT13 turns "the" into "gur").
/// A hint costs one more reading of the text, never a finding by itself, and a small fixed set
/// is found by a SIMD search far faster than by widening the keyword pass.
const ENCODING_HINT_WORDS: [&str; 22] = [
    "ignore",
    "instruction",
    "previous",
    "system",
    "prompt",
    "rules",
    "disregard",
    "forget",
    "jailbreak",
    "developer",
    "reveal",
    "bypass",
    "override",
    "pretend",
    "restriction",
    "filter",
    "anything",
    "without",
    " the ",
    " and ",
    "you ",
    "your ",
];

fn encoding_hints() -> Result<AhoCorasick, RuleError> {
    let rot13 = ENCODING_HINT_WORDS.iter().map(|w| crate::text::rot13(w));
    let reversed = ENCODING_HINT_WORDS
        .iter()
        .map(|w| w.chars().rev().collect::<String>());
    let patterns: Vec<String> = rot13.chain(reversed).collect();
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build(&patterns)
        .map_err(|e| RuleError::Malformed(e.to_string()))
}

/// The matches in a text, and the encodings it seems to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Rule matches, ordered by rule then position.
    pub matches: Vec<RuleMatch>,
    /// A keyword occurs in ROT13.
    pub rot13_hint: bool,
    /// A keyword occurs spelled backwards.
    pub reversed_hint: bool,
}

/// A rule match in folded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// Index of the rule in the set.
    pub rule: usize,
    /// Where it matched in the folded text.
    pub range: Range<usize>,
}

impl RuleSet {
    /// Compiles the given rules. Ids must be unique and every rule must have keywords.
    pub fn compile<'a>(specs: impl IntoIterator<Item = &'a RuleSpec>) -> Result<Self, RuleError> {
        let set = RuleSet::compile_lazily(specs)?;
        set.prepare(0)?;
        Ok(set)
    }

    /// Like [`RuleSet::compile`], but patterns are compiled when first needed, and only their
    /// shape is checked now. For rules known to compile (the built-in packs, which the tests
    /// compile): call [`RuleSet::prepare`] for any others.
    pub fn compile_lazily<'a>(
        specs: impl IntoIterator<Item = &'a RuleSpec>,
    ) -> Result<Self, RuleError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_uses: Vec<KeywordUse> = Vec::new();
        let mut keyword_index: BTreeMap<String, usize> = BTreeMap::new();
        for spec in specs {
            let invalid = |reason| RuleError::Invalid {
                id: spec.id.clone(),
                reason,
            };
            if rules.iter().any(|r| r.id == spec.id) {
                return Err(RuleError::DuplicateId(spec.id.clone()));
            }
            if spec.id.is_empty() || spec.id.len() > 96 {
                return Err(invalid("id must be 1 to 96 characters"));
            }
            if !(spec.weight > 0.0 && spec.weight <= 1.0) {
                return Err(invalid("weight must be in (0, 1]"));
            }
            if spec.keywords.is_empty() {
                return Err(invalid("a rule needs at least one keyword"));
            }
            if spec
                .keywords
                .iter()
                .any(|k| k.trim().is_empty() || k.to_lowercase() != *k)
            {
                return Err(invalid("keywords must be lower case and not blank"));
            }
            let pattern = engine_pattern(&spec.pattern);
            let index = rules.len();
            for keyword in &spec.keywords {
                add_use(
                    &mut keywords,
                    &mut keyword_uses,
                    &mut keyword_index,
                    keyword,
                    |k| k.rules.push(index),
                );
            }
            rules.push(Rule {
                id: spec.id.clone(),
                category: spec.category,
                weight: spec.weight,
                pattern,
                regex: OnceLock::new(),
                unless_preceded_by: spec.unless_preceded_by.clone(),
            });
        }
        let prefilter = if keywords.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&keywords)
                    .map_err(|e| RuleError::Malformed(e.to_string()))?,
            )
        };
        Ok(RuleSet {
            rules,
            prefilter,
            keyword_uses,
            encoding_hints: encoding_hints()?,
        })
    }

    /// Compiles now the patterns of the rules from index `from` on, and reports the first that
    /// does not compile: rules given in a policy are refused when it loads, not skipped later.
    pub fn prepare(&self, from: usize) -> Result<(), RuleError> {
        for rule in self.rules.iter().skip(from) {
            portable_pattern(&rule.pattern).map_err(|reason| RuleError::Pattern {
                id: rule.id.clone(),
                reason,
            })?;
            if let Err(e) = compile_pattern(&rule.pattern) {
                return Err(RuleError::Pattern {
                    id: rule.id.clone(),
                    reason: e.to_string(),
                });
            }
            // Keep the compiled program, since it was built anyway.
            let _ = rule.regex();
        }
        Ok(())
    }

    /// The compiled rules, in pack order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule match in a folded text, and whether it seems to hold ROT13 or reversed text.
    pub fn scan(&self, text: &str) -> Scan {
        let mut scan = Scan {
            matches: self.find(text),
            ..Scan::default()
        };
        for hit in self.encoding_hints.find_iter(text) {
            if hit.pattern().as_usize() < ENCODING_HINT_WORDS.len() {
                scan.rot13_hint = true;
            } else {
                scan.reversed_hint = true;
            }
            if scan.rot13_hint && scan.reversed_hint {
                break;
            }
        }
        scan
    }

    /// Every rule match in a folded text, ordered by rule then position.
    pub fn find(&self, text: &str) -> Vec<RuleMatch> {
        let mut matches = Vec::new();
        let Some(prefilter) = &self.prefilter else {
            return matches;
        };
        // Windows around keyword hits, merged per rule as hits arrive in order.
        let mut windows: Vec<Vec<Range<usize>>> = vec![Vec::new(); self.rules.len()];
        for hit in prefilter.find_overlapping_iter(text) {
            let Some(keyword) = self.keyword_uses.get(hit.pattern().as_usize()) else {
                continue;
            };
            let window = hit.start().saturating_sub(WINDOW_BEFORE)
                ..(hit.end() + WINDOW_AFTER).min(text.len());
            for &rule in &keyword.rules {
                let Some(list) = windows.get_mut(rule) else {
                    continue;
                };
                match list.last_mut() {
                    Some(last) if window.start <= last.end => {
                        last.start = last.start.min(window.start);
                        last.end = last.end.max(window.end);
                    }
                    _ => list.push(window.clone()),
                }
            }
        }
        for (index, (rule, rule_windows)) in self.rules.iter().zip(&windows).enumerate() {
            let mut kept = 0;
            'windows: for window in rule_windows {
                let start = floor_char_boundary(text, window.start);
                let end = ceil_char_boundary(text, window.end);
                let Some(regex) = rule.regex() else {
                    continue 'windows;
                };
                // The search is bounded to the window, but `^` and `\b` see the text around
                // it: a window that starts inside a word is not the start of one.
                let input = Input::new(text).range(start..end);
                for m in regex.find_iter(input) {
                    let range = m.start()..m.end();
                    if rule.cancelled_by_prefix(text, range.start) {
                        continue;
                    }
                    matches.push(RuleMatch { rule: index, range });
                    kept += 1;
                    if kept >= MAX_MATCHES_PER_RULE {
                        break 'windows;
                    }
                }
            }
        }
        matches
    }
}

/// Records a use of a prefilter pattern, adding the pattern if it is new.
fn add_use(
    patterns: &mut Vec<String>,
    uses: &mut Vec<KeywordUse>,
    index: &mut BTreeMap<String, usize>,
    pattern: &str,
    record: impl FnOnce(&mut KeywordUse),
) {
    match index.get(pattern) {
        Some(&at) => {
            if let Some(keyword) = uses.get_mut(at) {
                record(keyword);
            }
        }
        None => {
            let mut keyword = KeywordUse::default();
            record(&mut keyword);
            index.insert(pattern.to_string(), patterns.len());
            patterns.push(pattern.to_string());
            uses.push(keyword);
        }
    }
}

/// A rule pattern as the engine reads it. `\b` means an ASCII word boundary, as rules were
/// written for; the Unicode one would need tables and slower engines.
fn engine_pattern(pattern: &str) -> String {
    pattern.replace("\\b", "(?-u:\\b)")
}

/// Size limits of a compiled rule: its program, and the lazy DFA's cache.
const REGEX_SIZE_LIMIT: usize = 4 << 20;
const DFA_SIZE_LIMIT: usize = 1 << 20;

/// The error is boxed: `meta::BuildError` is large, and only its message is kept.
/// Refuses what would compile only where Unicode tables happen to be linked in: `\w`, `\d`,
/// `\s`, `\p{..}` and `(?i)`. Whether a build has the tables depends on what else it links
/// (a test build may, the wasm faces do not), so a pattern must not lean on them at all; text is
/// lower-cased before rules see it, so `(?i)` is never needed.
pub(crate) fn portable_pattern(pattern: &str) -> Result<(), String> {
    use regex_syntax::ast::{self, Ast, ClassSetItem, Flag, FlagsItemKind, GroupKind, Visitor};

    const NO_CLASSES: &str =
        "Unicode classes (\\w, \\d, \\s, \\p) are not available; list the characters";
    const NO_CASE: &str = "(?i) is not available; text is lower-cased before rules see it";

    struct Portable;
    fn case_insensitive(flags: &ast::Flags) -> bool {
        flags
            .items
            .iter()
            .any(|item| item.kind == FlagsItemKind::Flag(Flag::CaseInsensitive))
    }
    impl Visitor for Portable {
        type Output = ();
        type Err = String;
        fn finish(self) -> Result<(), String> {
            Ok(())
        }
        fn visit_pre(&mut self, node: &Ast) -> Result<(), String> {
            let refused = match node {
                Ast::ClassPerl(_) | Ast::ClassUnicode(_) => Some(NO_CLASSES),
                Ast::Flags(set) if case_insensitive(&set.flags) => Some(NO_CASE),
                Ast::Group(group) => match &group.kind {
                    GroupKind::NonCapturing(flags) if case_insensitive(flags) => Some(NO_CASE),
                    _ => None,
                },
                _ => None,
            };
            refused.map_or(Ok(()), |reason| Err(reason.to_string()))
        }
        fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), String> {
            match item {
                ClassSetItem::Perl(_) | ClassSetItem::Unicode(_) => Err(NO_CLASSES.to_string()),
                _ => Ok(()),
            }
        }
    }
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    ast::visit(&parsed, Portable)
}

pub(crate) fn compile_pattern(pattern: &str) -> Result<Regex, Box<meta::BuildError>> {
    Regex::builder()
        .configure(
            Regex::config()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .hybrid_cache_capacity(DFA_SIZE_LIMIT),
        )
        .syntax(syntax::Config::new())
        .build(pattern)
        .map_err(Box::new)
}

impl Rule {
    /// The compiled pattern; `None` if it does not compile, which [`RuleSet::prepare`] reports
    /// for rules that come from a policy and the tests rule out for the built-in packs.
    fn regex(&self) -> Option<&Regex> {
        self.regex
            .get_or_init(|| compile_pattern(&self.pattern).ok())
            .as_ref()
    }

    fn cancelled_by_prefix(&self, text: &str, start: usize) -> bool {
        let before = text.get(..start).unwrap_or_default();
        self.unless_preceded_by
            .iter()
            .any(|p| before.ends_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::normalize;

    fn builtin() -> RulePack {
        RulePack {
            pack: "builtin".into(),
            version: 1,
            rules: builtin_rules().unwrap(),
        }
    }

    #[test]
    fn builtin_pack_compiles() {
        let pack = builtin();
        let set = RuleSet::compile(&pack.rules).unwrap();
        assert!(set.len() >= 20, "only {} rules", set.len());
        // Every built-in pattern fits the engine's limits, so none is ever skipped.
        set.prepare(0).unwrap();
    }

    /// Every rule's own examples, through the same normalization the guard uses.
    #[test]
    fn every_rule_matches_its_examples_and_only_those() {
        let pack = builtin();
        let mut ran = 0;
        let mut failures = Vec::new();
        for spec in &pack.rules {
            let set = RuleSet::compile([spec]).unwrap();
            if spec.examples.matching.is_empty() || spec.examples.no_match.is_empty() {
                failures.push(format!("{}: needs examples both ways", spec.id));
            }
            for text in &spec.examples.matching {
                let folded = normalize(text);
                if set.find(folded.text()).is_empty() {
                    failures.push(format!("{} misses {:?}", spec.id, folded.text()));
                }
                ran += 1;
            }
            for text in &spec.examples.no_match {
                let folded = normalize(text);
                if !set.find(folded.text()).is_empty() {
                    failures.push(format!(
                        "{} matches counter-example {:?}",
                        spec.id,
                        folded.text()
                    ));
                }
                ran += 1;
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(ran >= 80, "only {ran} examples ran");
    }

    #[test]
    fn refuses_bad_rules() {
        let mut spec = builtin().rules[0].clone();
        spec.keywords.clear();
        assert!(matches!(
            RuleSet::compile([&spec]),
            Err(RuleError::Invalid { .. })
        ));
        let mut spec = builtin().rules[0].clone();
        spec.pattern = "(".into();
        assert!(matches!(
            RuleSet::compile([&spec]),
            Err(RuleError::Pattern { .. })
        ));
        let spec = builtin().rules[0].clone();
        assert!(matches!(
            RuleSet::compile([&spec, &spec]),
            Err(RuleError::DuplicateId(_))
        ));
    }

    /// A window may start inside a word; anchors and word boundaries must still see the text
    /// before it.
    #[test]
    fn window_edges_are_not_text_edges() {
        let mut spec = builtin().rules[0].clone();
        spec.keywords = vec!["k".into()];
        for pattern in ["^abc", "\\babc"] {
            spec.pattern = pattern.into();
            let set = RuleSet::compile([&spec]).unwrap();
            // The window of the hit on `k` starts exactly at `abc`, which follows an `x`.
            let text = format!("xabc{}k", " ".repeat(WINDOW_BEFORE - 3));
            assert_eq!(text.find('k').unwrap() - WINDOW_BEFORE, 1);
            assert!(set.find(&text).is_empty(), "{pattern} matched mid-text");
            let text = format!("abc{}k", " ".repeat(WINDOW_BEFORE - 3));
            assert_eq!(set.find(&text).len(), 1, "{pattern} missed at the start");
        }
    }

    #[test]
    fn keyword_dense_input_stays_bounded() {
        let set = RuleSet::compile(&builtin().rules).unwrap();
        let text = "ignore ".repeat(200_000);
        // Many hits, but matches per rule are capped.
        let found = set.find(&text);
        assert!(found.len() <= set.len() * MAX_MATCHES_PER_RULE);
    }
}
