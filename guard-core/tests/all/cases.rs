//! Field cases: one regression test per case in `../shared/cases/prompts.jsonl`, named after it.

use guard_core::{AssessmentInput, Guard, Policy};
use serde::Deserialize;

use crate::{shared, NOW};

#[derive(Deserialize)]
struct Case {
    id: String,
    text: String,
    acceptable_actions: Vec<String>,
}

fn cases() -> Vec<Case> {
    let path = shared().join("cases/prompts.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(id: &str) {
    let case = cases()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id}"));
    let guard = Guard::new(Policy::default()).unwrap();
    let out = guard.assess(&AssessmentInput::from_text(case.text.clone(), NOW));
    let action = out.assessment.action.as_str();
    assert!(
        case.acceptable_actions.iter().any(|a| a == action),
        "case {id}: action {action} (level {}, score {}) not in {:?}; findings {:?}",
        out.assessment.level.as_str(),
        out.assessment.score,
        case.acceptable_actions,
        out.assessment
            .findings
            .iter()
            .map(|f| &f.id)
            .collect::<Vec<_>>()
    );
}

macro_rules! regression {
    ($($name:ident => $id:literal,)*) => {
        $( #[test] fn $name() { check($id); } )*

        #[test]
        fn every_field_case_has_a_regression_test() {
            let named = [$($id),*];
            for case in cases() {
                assert!(named.contains(&case.id.as_str()), "case {} has no regression test", case.id);
            }
        }
    };
}

regression! {
    f001_benign_german_question => "f001",
    f002_chinese_greeting => "f002",
    f004_injection_in_resume => "f004",
    f005_injection_in_code_comment => "f005",
    f006_spaced_letters => "f006",
    f008_normal_whitespace => "f008",
    f009_greeting => "f009",
    f010_persona_system_prompt => "f010",
    f012_base64_payload => "f012",
    f014_french_override => "f014",
    f019_payload_splitting => "f019",
    f022_zero_width_splitting => "f022",
    f023_cyrillic_homoglyphs => "f023",
    f025_markdown_image_exfiltration => "f025",
    f026_security_talk => "f026",
    f028_fake_chat_delimiters => "f028",
    f029_dan_persona => "f029",
    f033_huge_input => "f033",
}
