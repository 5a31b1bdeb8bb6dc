//! The shapes every face shares: what goes into an assessment and what comes out.
//!
//! These types are the contract of `DESIGN.md` ("The contract every face shares"). Fields may be
//! added; none is renamed or changes meaning without a new version. Maps are ordered and floats are
//! computed with `libm`, so the JSON that [`AssessmentOutput::to_json`] produces is byte-identical
//! natively, under wasmtime and in JavaScript.

use serde::{Deserialize, Serialize};

use crate::behaviour::Profile;

/// What the guard assesses: the prompt as segments, and who sends it when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessmentInput {
    /// The prompt in pieces, each with its trust.
    pub segments: Vec<Segment>,
    /// Tenant, user, time and the user's behaviour profile.
    pub context: Context,
}

impl AssessmentInput {
    /// Plain text is one untrusted segment.
    pub fn from_text(text: impl Into<String>, now: impl Into<String>) -> Self {
        AssessmentInput {
            segments: vec![Segment::untrusted(text)],
            context: Context {
                now: now.into(),
                ..Context::default()
            },
        }
    }
}

/// One piece of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// The text, exactly as it will reach the model.
    pub text: String,
    /// Whether the text was approved (a verified template) or comes from outside.
    pub trust: Trust,
    /// The chat role the text is sent under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A label for where the text came from, such as a variable or tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Segment {
    /// An untrusted segment with no role or source.
    pub fn untrusted(text: impl Into<String>) -> Self {
        Segment {
            text: text.into(),
            trust: Trust::Untrusted,
            role: None,
            source: None,
        }
    }

    /// A trusted segment (the verified template's own text).
    pub fn trusted(text: impl Into<String>) -> Self {
        Segment {
            text: text.into(),
            trust: Trust::Trusted,
            role: None,
            source: None,
        }
    }
}

/// Whether a segment's text was approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Approved text, such as a verified template. Not scanned for attacks.
    Trusted,
    /// Anything else: user input, variable values, documents, tool output.
    Untrusted,
}

/// The chat role a segment is sent under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The system prompt.
    System,
    /// The end user.
    User,
    /// The model's own earlier turns.
    Assistant,
    /// Output of a tool or function call.
    Tool,
    /// An external document handed to the model.
    Document,
}

/// Who sends the prompt, and when.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The tenant whose policy overrides apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The user, as the caller identifies them (a pseudonym is fine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The current time, RFC 3339 in UTC. The guard has no clock of its own.
    pub now: String,
    /// The user's behaviour profile as last returned by the guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// What the guard answers: the assessment and the user's updated profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessmentOutput {
    /// The decision and its reasons.
    pub assessment: Assessment,
    /// The user's profile after this assessment; the caller stores it.
    pub profile: Profile,
}

impl AssessmentOutput {
    /// The one serialization every face returns.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and every float finite.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// The decision about one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Risk in [0, 1].
    pub score: f64,
    /// The level the score falls in.
    pub level: Level,
    /// What the policy does at that level.
    pub action: Action,
    /// What was found, in segment and position order.
    pub findings: Vec<Finding>,
    /// Behaviour signals about the user.
    pub signals: Vec<Signal>,
    /// Which threshold decided the level.
    pub explanation: Explanation,
    /// Problems with the input that the guard tolerated.
    pub errors: Vec<ToleratedError>,
}

impl Assessment {
    /// The assessment alone, as guard-core serializes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// Risk levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing of note.
    VeryLow,
    /// Weak signals only.
    Low,
    /// Worth a warning.
    Medium,
    /// Likely an attack: held for review.
    High,
    /// An attack: blocked.
    Critical,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 5] = [
        Level::VeryLow,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];

    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::VeryLow => "very_low",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// What happens to a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward to the model.
    Allow,
    /// Forward, and tell the caller.
    Warn,
    /// Hold for a reviewer; never forwarded to a model.
    Quarantine,
    /// Refuse (and keep in quarantine for review).
    Block,
}

impl Action {
    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Warn => "warn",
            Action::Quarantine => "quarantine",
            Action::Block => "block",
        }
    }

    /// Whether the prompt is kept from the model.
    pub fn stops(self) -> bool {
        matches!(self, Action::Quarantine | Action::Block)
    }
}

/// One thing the guard found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule (or model, or behaviour signal) id.
    pub id: String,
    /// The family of attack.
    pub category: Category,
    /// Which analysis produced it.
    pub source: FindingSource,
    /// How much it adds to the risk, in [0, 1].
    pub weight: f64,
    /// Where it is in the original text.
    pub span: Span,
    /// The original text of the span, shortened if long.
    pub excerpt: String,
    /// Obfuscations undone before the text matched.
    pub obfuscations: Vec<Obfuscation>,
    /// Encodings decoded, outermost first, before the text matched.
    pub encodings: Vec<Encoding>,
}

/// Families of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// "Ignore previous instructions" and its kin.
    InstructionOverride,
    /// Attempts to make the model reveal its system prompt or hidden configuration.
    SystemPromptExtraction,
    /// Personas and modes that claim to lift the model's rules (DAN, developer mode).
    Jailbreak,
    /// Fake chat-template or role delimiters.
    RoleDelimiter,
    /// Getting data out: markdown images or links with interpolated data, "send to" orders.
    Exfiltration,
    /// Forged tool or function calls, or orders to call a tool the user did not ask for.
    ToolInjection,
    /// Orders to join pieces of text (variables, fragments) and act on the result.
    PayloadSplitting,
    /// Instructions planted for the model in a document, email, web page or code comment.
    IndirectInjection,
    /// Text hidden or disguised from a human reader.
    Obfuscation,
    /// Input that could not be analysed within the policy's limits.
    ResourceLimit,
    /// The text classifier's judgement of a window of text.
    Classifier,
}

impl Category {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::InstructionOverride => "instruction_override",
            Category::SystemPromptExtraction => "system_prompt_extraction",
            Category::Jailbreak => "jailbreak",
            Category::RoleDelimiter => "role_delimiter",
            Category::Exfiltration => "exfiltration",
            Category::ToolInjection => "tool_injection",
            Category::PayloadSplitting => "payload_splitting",
            Category::IndirectInjection => "indirect_injection",
            Category::Obfuscation => "obfuscation",
            Category::ResourceLimit => "resource_limit",
            Category::Classifier => "classifier",
        }
    }
}

/// Which analysis produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingSource {
    /// A static rule.
    Rule,
    /// The ML model.
    Model,
    /// The user's behaviour over time.
    Behaviour,
}

/// A range of a segment's ORIGINAL text, in UTF-8 bytes and in UTF-16 code units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Index of the segment in the input.
    pub segment: usize,
    /// First byte.
    pub byte_start: usize,
    /// One past the last byte.
    pub byte_end: usize,
    /// First UTF-16 code unit (for JavaScript).
    pub utf16_start: usize,
    /// One past the last UTF-16 code unit.
    pub utf16_end: usize,
}

/// Obfuscations the normalizer undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Obfuscation {
    /// Zero-width, bidi, tag or variation-selector characters removed.
    InvisibleCharacters,
    /// Control characters removed.
    ControlCharacters,
    /// Compatibility forms folded by NFKC (fullwidth, mathematical letters, ligatures).
    CompatibilityForms,
    /// Cyrillic or Greek look-alikes inside a Latin word folded to Latin.
    Homoglyphs,
    /// Letters spaced apart ("i g n o r e") joined again.
    SpacedLetters,
    /// Combining marks stacked on Latin letters removed.
    Diacritics,
    /// Digits and signs standing for letters ("1gn0r3") read as letters.
    Leetspeak,
    /// Words written together ("ignoreallprevious") read apart.
    GluedWords,
}

/// Encodings the decoder undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Standard or URL-safe base64.
    Base64,
    /// A payload split into quoted pieces, joined again.
    Concatenation,
    /// Printable ASCII hidden in invisible Unicode tag characters (U+E0020 to U+E007E).
    UnicodeTags,
    /// Hex digits, bare or as `\\x49`, `0x49`, `49 67`.
    Hex,
    /// URL percent-encoding.
    Percent,
    /// ROT13.
    Rot13,
    /// Text written backwards.
    Reversed,
    /// Bytes hidden in variation selectors.
    VariationSelectors,
    /// Character escapes: JSON and JavaScript `\\u0049`, HTML `&#73;` and `&#x49;`.
    Escapes,
}

/// A behaviour signal about the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// What the signal is.
    pub id: String,
    /// How much it adds to the risk, in [0, 1].
    pub weight: f64,
    /// A short human-readable reason.
    pub detail: String,
}

/// Why the assessment has the level it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The level decided.
    pub level: Level,
    /// The lower threshold of that level that the score reached (none for `very_low`).
    pub threshold: Option<f64>,
    /// The threshold of the next level up that the score stayed below (none for `critical`).
    pub next_threshold: Option<f64>,
    /// The findings that made up the score, strongest first, one per id.
    pub contributions: Vec<Contribution>,
    /// The score of each source of evidence, and how they were fused.
    #[serde(default)]
    pub components: Components,
    /// One sentence for people.
    pub summary: String,
}

/// Each source of evidence on its own, and its part in the fused score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Components {
    /// The rules' findings combined as independent evidence, `1 - Π(1 - w)`.
    pub rules: f64,
    /// The model's calibrated probability for its strongest window; absent when no model runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<f64>,
    /// The behaviour signals combined like the rules.
    pub behaviour: f64,
}

/// One id's part in the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Rule, model or signal id.
    pub id: String,
    /// The weight it contributed (the strongest of its findings).
    pub weight: f64,
}

/// A problem with the input that the guard tolerated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToleratedError {
    /// Stable code, snake case.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// The segment concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<usize>,
}
