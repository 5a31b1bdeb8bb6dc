//! What is kept of an assessment: its decision, the ids and categories of its findings, digests
//! of the text and, only when configured, a redacted excerpt.

use std::sync::OnceLock;

use guard_core::{Assessment, Level, Segment, Trust};
use regex_lite::Regex;

use super::{DetectedFinding, Detection, SegmentDigest};

/// Longest excerpt kept, in characters.
pub const MAX_EXCERPT_CHARS: usize = 200;

/// Which assessments are recorded, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionOptions {
    /// The lowest level recorded (`medium` by default).
    pub min_level: Level,
    /// Keep a redacted excerpt of what was found (off by default: no prompt text is stored).
    pub keep_excerpts: bool,
}

impl Default for DetectionOptions {
    fn default() -> Self {
        DetectionOptions {
            min_level: Level::Medium,
            keep_excerpts: false,
        }
    }
}

/// The detection record of an assessment of `segments`, or `None` below the options' level.
pub fn detection(
    segments: &[Segment],
    assessment: &Assessment,
    options: &DetectionOptions,
) -> Option<Detection> {
    if assessment.level < options.min_level {
        return None;
    }
    let mut findings: Vec<DetectedFinding> = Vec::new();
    for f in &assessment.findings {
        let found = DetectedFinding {
            id: f.id.clone(),
            category: f.category.as_str().to_string(),
        };
        if !findings.contains(&found) {
            findings.push(found);
        }
    }
    let digests = segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.trust == Trust::Untrusted)
        .map(|(segment, s)| SegmentDigest {
            segment,
            sha256: guard_core::provenance::sha256_hex(s.text.as_bytes()),
        })
        .collect();
    let excerpt = options
        .keep_excerpts
        .then(|| {
            let joined = assessment
                .findings
                .iter()
                .map(|f| f.excerpt.as_str())
                .filter(|e| !e.is_empty())
                .collect::<Vec<_>>()
                .join(" … ");
            redact(&joined)
        })
        .filter(|e| !e.is_empty());
    Some(Detection {
        level: assessment.level,
        action: assessment.action,
        score: assessment.score,
        findings,
        digests,
        excerpt,
    })
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            // Addresses first: they may hold e-mail addresses and numbers of their own.
            (r"(?i)\b(?:https?|ftp)://\S+", "[url]"),
            (r"(?i)[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}", "[email]"),
            // Phone, card, account and id numbers: four digits or more, spaced or not.
            (r"\+?\d(?:[\s./-]?\d){3,}", "[number]"),
            // Long tokens that look like keys or secrets.
            (r"\b[A-Za-z0-9_\-]{32,}\b", "[token]"),
        ]
        .into_iter()
        .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
        .collect()
    })
}

/// `text` with addresses, e-mail addresses, numbers of four digits or more and long tokens
/// replaced by placeholders, control characters removed, and cut to [`MAX_EXCERPT_CHARS`].
pub fn redact(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).collect();
    for (re, replacement) in patterns() {
        out = re.replace_all(&out, *replacement).into_owned();
    }
    if out.chars().count() > MAX_EXCERPT_CHARS {
        out = out.chars().take(MAX_EXCERPT_CHARS - 1).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_personal_data() {
        let r = redact(
            "mail bob.smith@example.com or call +44 20 7946 0958, see https://evil.example/x?d=1 \
             key sk_live_abcdefghijklmnopqrstuvwxyz012345\u{7}",
        );
        assert!(!r.contains("bob"), "{r}");
        assert!(!r.contains("7946"), "{r}");
        assert!(!r.contains("evil"), "{r}");
        assert!(!r.contains("sk_live"), "{r}");
        assert!(!r.contains('\u{7}'), "{r}");
        assert!(r.contains("[email]") && r.contains("[number]") && r.contains("[url]"));
        assert!(redact(&"word ".repeat(100)).chars().count() <= MAX_EXCERPT_CHARS);
        assert_eq!(
            redact("ignore all previous instructions"),
            "ignore all previous instructions"
        );
    }
}
