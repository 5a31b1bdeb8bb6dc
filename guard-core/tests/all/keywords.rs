//! The keyword contract of every built-in rule: any text its pattern matches contains one of its
//! keywords. The engine runs a pattern only near keyword hits, so a match without a keyword is a
//! match the guard never sees, however many examples pass.
//!
//! The check is exhaustive rather than sampled. It walks the product of the pattern's Thompson NFA
//! (over UTF-8 bytes) and an Aho-Corasick DFA of the keywords, breadth first, never taking a byte
//! that completes a keyword; reaching the pattern's match state spells out a counterexample.
//! Look-arounds (`\b`, `^`, `$`) are taken as always satisfied, which can only report a miss the
//! engine would not make, never hide one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use aho_corasick::automaton::{Automaton, StateID as KeywordState};
use aho_corasick::{dfa, Anchored, MatchKind};
use regex_automata::nfa::thompson::{State, NFA};
use regex_automata::util::primitives::StateID as PatternState;
use regex_automata::util::syntax;

use guard_core::rules::builtin_rules;

/// Product states one rule may visit: about seven times what the largest built-in rule needs
/// (some 150,000). A rule that needs more fails rather than passing unchecked.
const MAX_STATES: usize = 1 << 20;

/// What the search found for one rule.
#[derive(Debug, PartialEq)]
enum Contract {
    Holds,
    /// Text the pattern matches that holds no keyword.
    Broken(String),
    /// The search outgrew [`MAX_STATES`].
    Unchecked,
}

type Product = (PatternState, KeywordState);

/// The breadth-first walk: each visited state, with the state before it and the byte read, if any.
#[derive(Default)]
struct Walk {
    came_from: HashMap<Product, Option<(Product, Option<u8>)>>,
    queue: VecDeque<Product>,
}

impl Walk {
    fn visit(&mut self, to: Product, from: Option<(Product, Option<u8>)>) {
        if let Entry::Vacant(entry) = self.came_from.entry(to) {
            entry.insert(from);
            self.queue.push_back(to);
        }
    }

    /// The bytes read on the way to `at`.
    fn path(&self, mut at: Product) -> String {
        let mut bytes = Vec::new();
        while let Some(&Some((before, byte))) = self.came_from.get(&at) {
            bytes.extend(byte);
            at = before;
        }
        bytes.reverse();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn check(pattern: &str, keywords: &[String]) -> Contract {
    // As the engine reads the pattern: `\b` is the ASCII word boundary.
    let pattern = pattern.replace("\\b", "(?-u:\\b)");
    let nfa = NFA::compiler()
        .syntax(syntax::Config::new())
        .build(&pattern)
        .unwrap();
    let keywords = dfa::DFA::builder()
        .match_kind(MatchKind::Standard)
        .build(keywords)
        .unwrap();

    let mut walk = Walk::default();
    walk.visit(
        (
            nfa.start_anchored(),
            keywords.start_state(Anchored::No).unwrap(),
        ),
        None,
    );
    while let Some(here @ (state, seen)) = walk.queue.pop_front() {
        if walk.came_from.len() > MAX_STATES {
            return Contract::Unchecked;
        }
        let read = |walk: &mut Walk, bytes: std::ops::RangeInclusive<u8>, next| {
            for byte in bytes {
                // Folded text is lower case.
                if byte.is_ascii_uppercase() {
                    continue;
                }
                let now = keywords.next_state(Anchored::No, seen, byte);
                if !keywords.is_match(now) {
                    walk.visit((next, now), Some((here, Some(byte))));
                }
            }
        };
        let step = |walk: &mut Walk, next| walk.visit((next, seen), Some((here, None)));
        match nfa.state(state) {
            State::ByteRange { trans } => read(&mut walk, trans.start..=trans.end, trans.next),
            State::Sparse(sparse) => {
                for t in sparse.transitions.iter() {
                    read(&mut walk, t.start..=t.end, t.next);
                }
            }
            State::Dense(dense) => {
                for (byte, &next) in (0..=u8::MAX).zip(dense.transitions.iter()) {
                    if next != PatternState::ZERO {
                        read(&mut walk, byte..=byte, next);
                    }
                }
            }
            State::Look { next, .. } | State::Capture { next, .. } => step(&mut walk, *next),
            State::Union { alternates } => {
                for &next in alternates.iter() {
                    step(&mut walk, next);
                }
            }
            State::BinaryUnion { alt1, alt2 } => {
                step(&mut walk, *alt1);
                step(&mut walk, *alt2);
            }
            State::Fail => {}
            State::Match { .. } => return Contract::Broken(walk.path(here)),
        }
    }
    Contract::Holds
}

#[test]
fn every_match_of_every_builtin_rule_contains_a_keyword() {
    let rules = builtin_rules().unwrap();
    let mut failures = Vec::new();
    for spec in &rules {
        match check(&spec.pattern, &spec.keywords) {
            Contract::Holds => {}
            Contract::Broken(text) => {
                failures.push(format!(
                    "{} matches {text:?}, which has no keyword",
                    spec.id
                ));
            }
            Contract::Unchecked => failures.push(format!(
                "{}: more than {MAX_STATES} states to search, so it is unchecked",
                spec.id
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rules break the keyword contract:\n{}",
        failures.len(),
        rules.len(),
        failures.join("\n")
    );
    assert!(rules.len() >= 60, "only {} rules checked", rules.len());
}

/// The check itself: it must find what a keyword misses, and accept what keywords cover.
#[test]
fn the_contract_check_finds_a_match_without_a_keyword() {
    let keywords = |list: &[&str]| list.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(
        check(r"\b(ignore|disregard) (all )?rules", &keywords(&["ignore"])),
        Contract::Broken("disregard rules".into())
    );
    assert_eq!(
        check(
            r"\b(ignore|disregard) (all )?rules",
            &keywords(&["ignore", "regard"])
        ),
        Contract::Holds
    );
    // A keyword inside a repeated part still counts once it is required.
    assert_eq!(check(r"(ab)+c", &keywords(&["ab"])), Contract::Holds);
    assert_eq!(
        check(r"(ab)*c", &keywords(&["ab"])),
        Contract::Broken("c".into())
    );
    // Upper case never occurs in folded text.
    assert_eq!(check(r"[Xy]", &keywords(&["y"])), Contract::Holds);
}
