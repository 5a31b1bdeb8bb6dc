//! One assessment: scan each untrusted segment, fuse, decide, update the profile.

use std::ops::Range;

use crate::behaviour::{Profile, PROFILE_VERSION};
use crate::contract::{
    Assessment, AssessmentInput, AssessmentOutput, Category, Encoding, Finding, FindingSource,
    Obfuscation, Span, ToleratedError, Trust,
};
use crate::policy::Limits;
use crate::risk;
use crate::text::{self, decode, floor_char_boundary, normalize};
use crate::time::Timestamp;
use crate::Guard;

/// Id of the finding for input beyond the policy's limits.
pub const UNSCANNED_ID: &str = "limit.unscanned-input";
/// Weight of that finding: enough to hold the input for review, since nobody read it.
const UNSCANNED_WEIGHT: f64 = 0.65;
/// Id of the finding for text hidden in Unicode tag characters.
pub const HIDDEN_TAG_TEXT_ID: &str = "obfuscation.hidden-tag-text";
/// Weight of that finding: a warning on its own; with what the text says, more.
const HIDDEN_TAG_TEXT_WEIGHT: f64 = 0.45;
/// A match that is only quoted ("phrases like 'ignore previous instructions'") counts this much.
const QUOTED_FACTOR: f64 = 0.5;

fn tolerated(code: &str, message: String, segment: Option<usize>) -> ToleratedError {
    ToleratedError {
        code: code.to_string(),
        message,
        segment,
    }
}

pub(crate) fn assess(guard: &Guard, input: &AssessmentInput) -> AssessmentOutput {
    let mut errors = Vec::new();
    let now = match Timestamp::parse(&input.context.now) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(tolerated("invalid_now", e.to_string(), None));
            None
        }
    };
    let profile_in = match &input.context.profile {
        Some(p) if p.version == PROFILE_VERSION => p.clone(),
        Some(p) => {
            errors.push(tolerated(
                "profile_version",
                format!(
                    "profile version {} is not {PROFILE_VERSION}; started a new profile",
                    p.version
                ),
                None,
            ));
            Profile::default()
        }
        None => Profile::default(),
    };

    let limits = guard.policy.limits;
    let max_segments = Limits::usize(limits.max_segments);
    let max_findings = Limits::usize(limits.max_findings);
    let mut budget = Limits::usize(limits.max_scan_bytes);
    let mut findings: Vec<Finding> = Vec::new();
    if input.segments.is_empty() {
        errors.push(tolerated(
            "no_segments",
            "the input has no segments".into(),
            None,
        ));
    }
    for (index, segment) in input.segments.iter().enumerate() {
        if segment.trust == Trust::Trusted {
            continue;
        }
        let text = segment.text.as_str();
        let scan_len = if index >= max_segments {
            0
        } else {
            floor_char_boundary(text, budget.min(text.len()))
        };
        budget -= scan_len;
        let scanned = text.get(..scan_len).unwrap_or_default();
        let mut pending = scan_segment(guard, index, scanned);
        if scan_len < text.len() {
            errors.push(tolerated(
                "unscanned_input",
                format!(
                    "{} of {} bytes were not scanned: over the policy's limits ({} segments, {} bytes)",
                    text.len() - scan_len,
                    text.len(),
                    limits.max_segments,
                    limits.max_scan_bytes
                ),
                Some(index),
            ));
            pending.push(Finding {
                id: UNSCANNED_ID.to_string(),
                category: Category::ResourceLimit,
                source: FindingSource::Rule,
                weight: UNSCANNED_WEIGHT,
                span: span(index, scan_len..text.len()),
                excerpt: text::excerpt(text, scan_len, text.len().min(scan_len + 64)),
                obfuscations: Vec::new(),
                encodings: Vec::new(),
            });
        }
        fill_utf16(text, &mut pending);
        findings.extend(pending);
    }

    findings.sort_by(|a, b| {
        (a.span.segment, a.span.byte_start, a.span.byte_end)
            .cmp(&(b.span.segment, b.span.byte_start, b.span.byte_end))
            .then_with(|| a.id.cmp(&b.id))
    });

    let (thresholds, actions) = guard.policy.for_tenant(input.context.tenant.as_deref());
    // The score uses every finding; only the list reported is capped.
    let decision = risk::decide(&findings, &[], &thresholds, &actions);
    if findings.len() > max_findings {
        errors.push(tolerated(
            "findings_truncated",
            format!(
                "{} findings; the first {} are listed",
                findings.len(),
                max_findings
            ),
            None,
        ));
        findings.truncate(max_findings);
    }
    let profile = profile_in.updated(decision.level, decision.action, now);
    AssessmentOutput {
        assessment: Assessment {
            score: decision.score,
            level: decision.level,
            action: decision.action,
            findings,
            signals: Vec::new(),
            explanation: decision.explanation,
            errors,
        },
        profile,
    }
}

fn span(segment: usize, bytes: Range<usize>) -> Span {
    Span {
        segment,
        byte_start: bytes.start,
        byte_end: bytes.end,
        utf16_start: 0,
        utf16_end: 0,
    }
}

/// Findings in one segment, with UTF-16 offsets still to fill.
fn scan_segment(guard: &Guard, index: usize, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let folded = normalize(text);
    for m in guard.rules.find(folded.text()) {
        let Some(rule) = guard.rules.rules().get(m.rule) else {
            continue;
        };
        let original = folded.original_range(m.range.clone());
        let weight = if is_quoted(folded.text(), &m.range) {
            rule.weight * QUOTED_FACTOR
        } else {
            rule.weight
        };
        out.push(Finding {
            id: rule.id.clone(),
            category: rule.category,
            source: FindingSource::Rule,
            weight,
            excerpt: text::excerpt(text, original.start, original.end),
            span: span(index, original),
            obfuscations: folded.obfuscations_in(m.range),
            encodings: Vec::new(),
        });
    }
    let tags = decode::tag_payloads(text);
    // Hidden text has no business in a prompt, whatever it says.
    for hidden in &tags {
        out.push(Finding {
            id: HIDDEN_TAG_TEXT_ID.to_string(),
            category: Category::Obfuscation,
            source: FindingSource::Rule,
            weight: HIDDEN_TAG_TEXT_WEIGHT,
            excerpt: text::excerpt(&hidden.text, 0, hidden.text.len()),
            span: span(index, hidden.range.clone()),
            obfuscations: vec![Obfuscation::InvisibleCharacters],
            encodings: vec![Encoding::UnicodeTags],
        });
    }
    let (base64, _limited) = decode::base64_payloads(text);
    let derived = base64
        .into_iter()
        .map(|d| (d, Encoding::Base64))
        .chain(
            decode::split_payloads(text)
                .into_iter()
                .map(|d| (d, Encoding::Concatenation)),
        )
        .chain(tags.into_iter().map(|d| (d, Encoding::UnicodeTags)));
    for (payload, encoding) in derived {
        let folded = normalize(&payload.text);
        for m in guard.rules.find(folded.text()) {
            let Some(rule) = guard.rules.rules().get(m.rule) else {
                continue;
            };
            // The same rule on the same span from another reading adds nothing.
            if out
                .iter()
                .any(|f| f.id == rule.id && f.span.byte_start == payload.range.start)
            {
                continue;
            }
            out.push(Finding {
                id: rule.id.clone(),
                category: rule.category,
                source: FindingSource::Rule,
                weight: rule.weight,
                excerpt: text::excerpt(text, payload.range.start, payload.range.end),
                span: span(index, payload.range.clone()),
                obfuscations: folded.obfuscations_in(m.range),
                encodings: vec![encoding],
            });
        }
    }
    out
}

/// Whether a match is set off in quotes, as when a phrase is discussed rather than said.
fn is_quoted(folded: &str, range: &Range<usize>) -> bool {
    const QUOTES: [char; 5] = ['"', '\'', '`', '«', '»'];
    let before = folded
        .get(..range.start)
        .unwrap_or_default()
        .trim_end_matches(' ')
        .chars()
        .next_back();
    let after = folded
        .get(range.end..)
        .unwrap_or_default()
        .trim_start_matches(' ')
        .chars()
        .next();
    matches!((before, after), (Some(b), Some(a)) if QUOTES.contains(&b) && QUOTES.contains(&a))
}

fn fill_utf16(text: &str, findings: &mut [Finding]) {
    let offsets: Vec<usize> = findings
        .iter()
        .flat_map(|f| [f.span.byte_start, f.span.byte_end])
        .collect();
    let utf16 = text::utf16_offsets(text, &offsets);
    for (f, pair) in findings.iter_mut().zip(utf16.chunks(2)) {
        if let [start, end] = pair {
            f.span.utf16_start = *start;
            f.span.utf16_end = *end;
        }
    }
}
