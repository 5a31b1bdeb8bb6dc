//! One assessment: scan each untrusted segment, fuse, decide, update the profile.

use std::ops::Range;

use crate::behaviour::{self, Profile, Sketcher, PROFILE_VERSION};
use crate::contract::{
    Assessment, AssessmentInput, AssessmentOutput, Category, Encoding, Finding, FindingSource,
    Obfuscation, Role, Segment, Span, ToleratedError, Trust,
};
use crate::model::{FeatureCounts, Model};
use crate::policy::{EmbeddedPolicy, Limits};
use crate::risk;
use crate::text::{self, decode, floor_char_boundary, normalize};
use crate::time::Timestamp;
use crate::Guard;

/// Id of the finding for input beyond the policy's limits.
pub const UNSCANNED_ID: &str = "limit.unscanned-input";
/// Weight of that finding: enough to hold the input for review, since nobody read it.
const UNSCANNED_WEIGHT: f64 = 0.65;
/// Id of the finding for encoded payloads left undecoded (too many, too large, too deep).
pub const UNDECODED_ID: &str = "limit.undecoded-payload";
/// Id of the finding for text hidden in Unicode tag characters.
pub const HIDDEN_TAG_TEXT_ID: &str = "obfuscation.hidden-tag-text";
/// Weight of text hidden in tag characters or variation selectors: a warning on its own; with
/// what the text says, more.
const HIDDEN_TEXT_WEIGHT: f64 = 0.45;
/// Id of the model's finding.
pub const MODEL_ID: &str = "model.classifier";
/// The model's strongest window is reported as a finding from this probability up; below it, the
/// model's part is still in the explanation's components.
const MODEL_REPORT_FROM: f64 = 0.5;
/// A quoted match must be of at least this weight for the text to count as discussing an attack
/// (and the model to be discounted): quoting a stray delimiter token is no discussion.
const QUOTED_DISCUSSION_WEIGHT: f64 = 0.6;
/// A match that is only quoted ("phrases like 'ignore previous instructions'") counts this much.
const QUOTED_FACTOR: f64 = 0.5;

fn tolerated(code: &str, message: String, segment: Option<usize>) -> ToleratedError {
    ToleratedError {
        code: code.to_string(),
        message,
        segment,
    }
}

thread_local! {
    /// The model's counting table, kept between assessments on a thread: it grows once to the
    /// size texts need instead of on every call. It holds nothing between calls that matters;
    /// each window clears it.
    static COUNTS: std::cell::RefCell<FeatureCounts> =
        std::cell::RefCell::new(FeatureCounts::default());
}

pub(crate) fn assess(guard: &Guard, input: &AssessmentInput) -> AssessmentOutput {
    COUNTS.with(|counts| match counts.try_borrow_mut() {
        Ok(mut counts) => assess_with(guard, input, &mut counts),
        // Only re-entry could find it taken; a table of its own serves then.
        Err(_) => assess_with(guard, input, &mut FeatureCounts::default()),
    })
}

fn assess_with(
    guard: &Guard,
    input: &AssessmentInput,
    counts: &mut FeatureCounts,
) -> AssessmentOutput {
    let mut errors = Vec::new();
    let now = match Timestamp::parse(&input.context.now) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(tolerated("invalid_now", e.to_string(), None));
            None
        }
    };
    let profile_in = match &input.context.profile {
        // Version 1 held the counts alone; its new fields start at their defaults.
        Some(p) if p.version == PROFILE_VERSION || p.version == 1 => p.clone(),
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
    let mut sketcher = Sketcher::default();
    // The model's strongest probability over all untrusted segments, and over embedded ones.
    let mut model_probability: Option<f64> = None;
    let mut embedded_probability: Option<f64> = None;
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
        // Behaviour follows what the user wrote: documents, tool output and the assistant's
        // own turns are neither sketched nor counted against them.
        let mut no_sketch = Sketcher::default();
        let sketch_into = if is_embedded(segment) {
            &mut no_sketch
        } else {
            &mut sketcher
        };
        let (mut pending, decode_limited, model_hit) =
            scan_segment(guard, index, scanned, counts, sketch_into);
        // The model's finding is reported with the probability that was scored, so it joins the
        // list after embedded content's rule weights were raised.
        let mut model_finding = None;
        if let (Some(hit), Some(model)) = (model_hit, guard.model.as_deref()) {
            let mut probability = model.header().fusion.probability(hit.logit);
            if hit.only_quoted {
                // The rules found instructions only as quotations: the text discusses an attack
                // rather than making one. The model reads the same words, and is discounted the
                // same way.
                probability *= QUOTED_FACTOR;
            }
            let best = model_probability.get_or_insert(probability);
            *best = best.max(probability);
            if is_embedded(segment) {
                let best = embedded_probability.get_or_insert(probability);
                *best = best.max(probability);
            }
            if probability >= MODEL_REPORT_FROM {
                model_finding = Some(Finding {
                    id: MODEL_ID.to_string(),
                    category: Category::Classifier,
                    source: FindingSource::Model,
                    weight: risk::round4(probability),
                    excerpt: text::excerpt(text, hit.range.start, hit.range.end),
                    span: span(index, hit.range),
                    obfuscations: Vec::new(),
                    encodings: hit.encodings,
                });
            }
        }
        if decode_limited {
            errors.push(tolerated(
                "decode_limit",
                format!(
                    "some encoded payloads were not decoded: over {} payloads, {} decoded bytes \
                     or {} encodings deep",
                    decode::MAX_PAYLOADS,
                    decode::MAX_DECODED_BYTES,
                    decode::MAX_DEPTH
                ),
                Some(index),
            ));
        }
        if is_embedded(segment) {
            weigh_embedded(&mut pending, guard.policy.embedded.instruction_factor);
        }
        pending.extend(model_finding);
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
            pending.push(notice(
                UNSCANNED_ID,
                Category::ResourceLimit,
                UNSCANNED_WEIGHT,
                span(index, scan_len..text.len()),
                text::excerpt(text, scan_len, text.len().min(scan_len + 64)),
                Vec::new(),
                Vec::new(),
            ));
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
    // A model that read nothing reads as it would an empty text: its bias.
    let evidence = |probability: Option<f64>| {
        guard.model.as_deref().map(|model| {
            probability.unwrap_or_else(|| model.header().fusion.probability(model.header().bias))
        })
    };
    let embedded: Vec<Finding> = match &guard.policy.embedded.thresholds {
        Some(_) => findings
            .iter()
            .filter(|f| input.segments.get(f.span.segment).is_some_and(is_embedded))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    // The score uses every finding; only the list reported is capped. Embedded content is also
    // judged on its own under its stricter thresholds, and the stricter decision wins.
    let decide = |signals: &[crate::contract::Signal]| {
        let mut decision = risk::decide(
            &findings,
            signals,
            evidence(model_probability),
            &thresholds,
            &actions,
        );
        if let (Some(embedded_thresholds), false) =
            (&guard.policy.embedded.thresholds, embedded.is_empty())
        {
            let mut strict = risk::decide(
                &embedded,
                signals,
                evidence(embedded_probability),
                embedded_thresholds,
                &actions,
            );
            if strict.level > decision.level {
                strict.explanation.summary =
                    format!("embedded content: {}", strict.explanation.summary);
                decision = strict;
            }
        }
        decision
    };
    // Behaviour is judged on what the content alone reached, so it never feeds on its own
    // verdicts; its signals then join the evidence.
    let content = decide(&[]);
    // A request counts against the user when what they wrote carries the risk: with embedded
    // content around it, only if a finding lies in a segment of their own.
    let users_own = findings.iter().any(|f| {
        input
            .segments
            .get(f.span.segment)
            .is_some_and(|segment| !is_embedded(segment))
    });
    let has_embedded = input.segments.iter().any(is_embedded);
    let content_level = if has_embedded && !users_own {
        content.level.min(crate::contract::Level::Low)
    } else {
        content.level
    };
    let observation = behaviour::observe(
        &profile_in,
        &behaviour::Event {
            now,
            sketch: sketcher.finish(),
            content_level,
        },
        &guard.policy.behaviour,
    );
    let signals = observation.signals;
    let decision = if signals.is_empty() {
        content
    } else {
        decide(&signals)
    };
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
    let mut profile = observation.profile;
    profile.note_decision(decision.level, decision.action);
    AssessmentOutput {
        assessment: Assessment {
            score: decision.score,
            level: decision.level,
            action: decision.action,
            findings,
            signals,
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

/// Id of the finding for bytes hidden in variation selectors.
pub const HIDDEN_SELECTOR_TEXT_ID: &str = "obfuscation.hidden-selector-text";
/// Id of the finding for invisible characters inside words, or bidi overrides.
pub const INVISIBLE_CHARACTERS_ID: &str = "obfuscation.invisible-characters";
/// Weight of that finding: a hint on its own, more beside what the text says.
const INVISIBLE_CHARACTERS_WEIGHT: f64 = 0.3;
/// Invisible characters inside words before they count: one can be a copy-and-paste accident.
const MIN_INVISIBLE_IN_WORDS: usize = 2;

/// Roles whose text is content the model reads, not the user's request.
fn is_embedded(segment: &Segment) -> bool {
    matches!(
        segment.role,
        Some(Role::Document | Role::Tool | Role::Assistant)
    )
}

/// Raises the weight of instructions found in embedded content.
fn weigh_embedded(findings: &mut [Finding], factor: f64) {
    for f in findings {
        if !matches!(f.category, Category::Obfuscation | Category::ResourceLimit) {
            f.weight = risk::round4((f.weight * factor).min(EmbeddedPolicy::MAX_WEIGHT));
        }
    }
}

/// The scan of one segment: every reading of it (as written, ROT13, reversed, decoded payloads
/// and payloads inside those) goes through the same rules.
struct SegmentScan<'a> {
    guard: &'a Guard,
    model: Option<&'a Model>,
    counts: &'a mut FeatureCounts,
    /// The sketch of what the user wrote, for behaviour (the outermost reading only).
    sketcher: &'a mut Sketcher,
    /// The model's strongest window so far.
    model_hit: Option<ModelHit>,
    /// Rule matches recorded, and whether every one was quoted.
    rule_matches: usize,
    quoted_only: bool,
    /// Whether a quoted match is an attack phrase of weight, not a stray token.
    quotes_an_attack: bool,
    index: usize,
    budget: decode::Budget,
    out: Vec<Finding>,
    /// The outermost range of a payload that held another past the depth limit.
    too_deep: Option<Range<usize>>,
}

/// The model's strongest window in a segment.
struct ModelHit {
    logit: f64,
    /// Whether the rules matched in the segment, and only inside quotations.
    only_quoted: bool,
    /// Where in the segment's original text (the outer payload, for a decoded reading).
    range: Range<usize>,
    encodings: Vec<Encoding>,
}

/// Findings in one segment, with UTF-16 offsets still to fill, whether some payload was left
/// undecoded (the budget ran out, or the nesting went past the depth limit), and the model's
/// strongest window over every reading.
fn scan_segment(
    guard: &Guard,
    index: usize,
    text: &str,
    counts: &mut FeatureCounts,
    sketcher: &mut Sketcher,
) -> (Vec<Finding>, bool, Option<ModelHit>) {
    let mut scan = SegmentScan {
        guard,
        model: guard.model.as_deref(),
        counts,
        sketcher,
        model_hit: None,
        rule_matches: 0,
        quoted_only: true,
        quotes_an_attack: false,
        index,
        budget: decode::Budget::default(),
        out: Vec::new(),
        too_deep: None,
    };
    scan.read(text, text, None, &[], 0);
    scan.invisible_characters(text);
    // What was not decoded was not read: like input past the scan limit, it is held for review
    // rather than let through, or hiding an attack would only take one more layer or more junk.
    let undecoded = match (scan.budget.exhausted(), scan.too_deep.take()) {
        (true, _) => Some(0..text.len()),
        (false, Some(range)) => Some(range),
        (false, None) => None,
    };
    if let Some(range) = &undecoded {
        scan.out.push(notice(
            UNDECODED_ID,
            Category::ResourceLimit,
            UNSCANNED_WEIGHT,
            span(index, range.clone()),
            text::excerpt(text, range.start, range.end.min(range.start + 64)),
            Vec::new(),
            Vec::new(),
        ));
    }
    let mut model_hit = scan.model_hit;
    if let Some(hit) = &mut model_hit {
        hit.only_quoted = scan.rule_matches > 0 && scan.quoted_only && scan.quotes_an_attack;
    }
    (scan.out, undecoded.is_some(), model_hit)
}

impl SegmentScan<'_> {
    /// Scans `reading`, which is the segment `original` itself (`payload` is `None`) or text
    /// decoded from the range `payload` of it through `encodings`.
    fn read(
        &mut self,
        original: &str,
        reading: &str,
        payload: Option<&Range<usize>>,
        encodings: &[Encoding],
        depth: usize,
    ) {
        let folded = normalize(reading);
        if depth == 0 && payload.is_none() {
            self.sketcher.add(folded.text());
        }
        let locate = |range: Range<usize>| match payload {
            Some(p) => p.clone(),
            None => folded.original_range(range),
        };
        self.model_read(folded.text(), locate, encodings);
        let scan = self.guard.rules.scan(folded.text());
        for m in &scan.matches {
            let quoted = is_quoted(folded.text(), &m.range);
            let obfuscations = folded.obfuscations_in(m.range.clone());
            self.add(
                original,
                m.rule,
                locate(m.range.clone()),
                quoted,
                obfuscations,
                encodings,
            );
        }
        if scan.rot13_hint {
            // ROT13 keeps every byte where it was, so ranges carry over as they are.
            let rotated = text::rot13(folded.text());
            let chain = with(encodings, Encoding::Rot13);
            self.model_read(&rotated, locate, &chain);
            for m in self.guard.rules.find(&rotated) {
                let quoted = is_quoted(&rotated, &m.range);
                let obfuscations = folded.obfuscations_in(m.range.clone());
                self.add(
                    original,
                    m.rule,
                    locate(m.range),
                    quoted,
                    obfuscations,
                    &chain,
                );
            }
        }
        if scan.reversed_hint {
            // Reversing characters maps the byte range a..b of the reversed text to n-b..n-a.
            let reversed: String = folded.text().chars().rev().collect();
            let n = reversed.len();
            let chain = with(encodings, Encoding::Reversed);
            self.model_read(&reversed, |w| locate(n - w.end..n - w.start), &chain);
            for m in self.guard.rules.find(&reversed) {
                let range = n - m.range.end..n - m.range.start;
                let quoted = is_quoted(&reversed, &m.range);
                let obfuscations = folded.obfuscations_in(range.clone());
                self.add(
                    original,
                    m.rule,
                    locate(range),
                    quoted,
                    obfuscations,
                    &chain,
                );
            }
        }
        if depth >= decode::MAX_DEPTH {
            // Only whether there is more to decode matters now, not what it says.
            let mut probe = decode::Budget::default();
            let deeper = DECODERS
                .iter()
                .any(|(decoder, _)| !decoder(reading, &mut probe).is_empty());
            if deeper && self.too_deep.is_none() {
                self.too_deep = payload.cloned();
            }
            return;
        }
        for (decoder, encoding) in DECODERS {
            for decoded in decoder(reading, &mut self.budget) {
                let hidden_id = match encoding {
                    Encoding::UnicodeTags => Some(HIDDEN_TAG_TEXT_ID),
                    Encoding::VariationSelectors => Some(HIDDEN_SELECTOR_TEXT_ID),
                    _ => None,
                };
                if let (Some(id), None) = (hidden_id, payload) {
                    // Text a reader cannot see has no business in a prompt, whatever it says.
                    self.out.push(notice(
                        id,
                        Category::Obfuscation,
                        HIDDEN_TEXT_WEIGHT,
                        span(self.index, decoded.range.clone()),
                        text::excerpt(&decoded.text, 0, decoded.text.len()),
                        vec![Obfuscation::InvisibleCharacters],
                        vec![encoding],
                    ));
                }
                let range = payload.cloned().unwrap_or_else(|| decoded.range.clone());
                let chain = with(encodings, encoding);
                self.read(original, &decoded.text, Some(&range), &chain, depth + 1);
            }
        }
    }

    /// Scores one reading with the model and keeps it if it is the strongest so far. `locate`
    /// maps a range of the reading to the segment's original text.
    fn model_read(
        &mut self,
        reading: &str,
        locate: impl Fn(Range<usize>) -> Range<usize>,
        encodings: &[Encoding],
    ) {
        let Some(model) = self.model else {
            return;
        };
        let score = model.score(reading, self.counts);
        if self
            .model_hit
            .as_ref()
            .is_none_or(|h| score.logit > h.logit)
        {
            self.model_hit = Some(ModelHit {
                logit: score.logit,
                only_quoted: false,
                range: locate(score.window),
                encodings: encodings.to_vec(),
            });
        }
    }

    /// Records a rule match at `range` of the segment, unless the same rule already matched
    /// there through another reading.
    fn add(
        &mut self,
        original: &str,
        rule: usize,
        range: Range<usize>,
        quoted: bool,
        obfuscations: Vec<Obfuscation>,
        encodings: &[Encoding],
    ) {
        let Some(rule) = self.guard.rules.rules().get(rule) else {
            return;
        };
        if self.out.iter().any(|f| {
            f.id == rule.id && f.span.byte_start == range.start && f.span.byte_end == range.end
        }) {
            return;
        }
        self.rule_matches += 1;
        if quoted && rule.weight >= QUOTED_DISCUSSION_WEIGHT {
            self.quotes_an_attack = true;
        }
        let weight = if quoted {
            rule.weight * QUOTED_FACTOR
        } else {
            self.quoted_only = false;
            rule.weight
        };
        self.out.push(Finding {
            id: rule.id.clone(),
            category: rule.category,
            source: FindingSource::Rule,
            weight,
            excerpt: text::excerpt(original, range.start, range.end),
            span: span(self.index, range),
            obfuscations,
            encodings: encodings.to_vec(),
        });
    }

    /// Invisible characters where words are, whatever they hide.
    fn invisible_characters(&mut self, original: &str) {
        if let Some(range) = invisible_in_words(original) {
            self.out.push(notice(
                INVISIBLE_CHARACTERS_ID,
                Category::Obfuscation,
                INVISIBLE_CHARACTERS_WEIGHT,
                span(self.index, range.clone()),
                text::excerpt(original, range.start, range.end),
                vec![Obfuscation::InvisibleCharacters],
                Vec::new(),
            ));
        }
    }
}

/// A decoder of one encoding; those without a budget of their own decode little by nature.
type Decoder = fn(&str, &mut decode::Budget) -> Vec<decode::Decoded>;

/// Every decoder, in the order payloads are read.
const DECODERS: [(Decoder, Encoding); 7] = [
    (decode::base64_payloads, Encoding::Base64),
    (decode::hex_payloads, Encoding::Hex),
    (decode::percent_payloads, Encoding::Percent),
    (decode::selector_payloads, Encoding::VariationSelectors),
    (decode::escape_payloads, Encoding::Escapes),
    (|text, _| decode::tag_payloads(text), Encoding::UnicodeTags),
    (
        |text, _| decode::split_payloads(text),
        Encoding::Concatenation,
    ),
];

/// A finding the guard raises itself rather than a rule (hidden text, limits).
fn notice(
    id: &str,
    category: Category,
    weight: f64,
    span: Span,
    excerpt: String,
    obfuscations: Vec<Obfuscation>,
    encodings: Vec<Encoding>,
) -> Finding {
    Finding {
        id: id.to_string(),
        category,
        source: FindingSource::Rule,
        weight,
        span,
        excerpt,
        obfuscations,
        encodings,
    }
}

fn with(encodings: &[Encoding], next: Encoding) -> Vec<Encoding> {
    let mut chain = encodings.to_vec();
    chain.push(next);
    chain
}

/// The range from the first to the last invisible character set inside a Latin word, when there
/// are enough of them, or of a bidi override (which can make text read backwards on screen).
/// Joiners in emoji and in scripts that need them, and soft hyphens, are ordinary.
fn invisible_in_words(text: &str) -> Option<Range<usize>> {
    if text.is_ascii() {
        return None;
    }
    let mut first: Option<usize> = None;
    let mut last = 0;
    let mut count = 0usize;
    let mut overrides = false;
    // The last visible character and where it starts: the evidence includes the letters an
    // invisible character sits between.
    let mut previous: Option<(usize, char)> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if matches!(c, '\u{202D}' | '\u{202E}') {
            overrides = true;
            first.get_or_insert(at);
            last = last.max(at + c.len_utf8());
            continue;
        }
        if normalize::is_invisible(c) {
            // The whole run counts, and only when a letter stands on both sides of it, so the
            // evidence alone reads the same as it does in place.
            let mut hidden = usize::from(counts_as_hidden(c));
            while let Some(&(_, n)) = chars.peek() {
                if !normalize::is_invisible(n) || matches!(n, '\u{202D}' | '\u{202E}') {
                    break;
                }
                hidden += usize::from(counts_as_hidden(n));
                chars.next();
            }
            let after = chars.peek().copied();
            if let (Some((before, p)), Some((n_at, n))) = (previous, after) {
                if hidden > 0 && p.is_ascii_alphabetic() && n.is_ascii_alphabetic() {
                    count += hidden;
                    first.get_or_insert(before);
                    last = last.max(n_at + n.len_utf8());
                }
            }
            continue;
        }
        previous = Some((at, c));
    }
    let start = first?;
    (overrides || count >= MIN_INVISIBLE_IN_WORDS).then_some(start..last)
}

/// Soft hyphens are ordinary and tag characters are read as a payload of their own.
fn counts_as_hidden(c: char) -> bool {
    c != '\u{00AD}' && !(0xE0000..=0xE007F).contains(&u32::from(c))
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
