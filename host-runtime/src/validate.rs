//! The validation pipeline a template passes before it is signed: named stages, each with a
//! typed result. Any failed stage refuses the template; the report is kept, and its digest goes
//! into the signed statement (`validation_digest`).
//!
//! The guard's own analysis runs inside the wasm guard like every other decision; the other
//! stages read the text and the schema directly.

use std::sync::OnceLock;

use guard_core::template::VariableSchema;
use guard_core::{Action, AssessmentOutput, Category};
use regex_lite::Regex;
use serde::{Deserialize, Serialize};

use crate::engine::{Context, EngineError, GuardEngine, Role, Segment, Trust};

/// Largest template the pipeline accepts by default, in bytes.
pub const DEFAULT_MAX_TEMPLATE_BYTES: usize = 64 << 10;
/// Largest variable schema accepted, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Most issues one stage lists; the count of the rest is reported.
const MAX_ISSUES_PER_STAGE: usize = 50;

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Valid UTF-8 and within the size limits.
    Encoding,
    /// `{{name}}` placeholders well-formed, exactly the schema's variables, a valid schema.
    Placeholders,
    /// No zero-width or bidi characters, tag characters, controls, encoded payloads or
    /// exfiltration-shaped links.
    HiddenText,
    /// The guard's analysis of the template text under the template policy.
    Analysis,
    /// No API keys, private keys or tokens.
    Secrets,
    /// No e-mail addresses or phone numbers, unless allowed.
    PersonalData,
    /// What changed since the previous version.
    Diff,
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing found.
    Passed,
    /// Found something allowed by the options; reported, not refused.
    Warned,
    /// Refuses the template.
    Failed,
    /// Not run, because an earlier stage failed in a way that makes it meaningless.
    Skipped,
}

/// One thing a stage found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// A stable snake-case code.
    pub code: String,
    /// For people: what and where, and what to do.
    pub message: String,
    /// Byte range in the template, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<[usize; 2]>,
}

/// The result of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageResult {
    /// Which stage.
    pub stage: Stage,
    /// How it ended.
    pub status: Status,
    /// What it found, at most 50.
    pub issues: Vec<Issue>,
    /// Issues found beyond those listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The whole report. It holds no time, so the same candidate gives the same digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The template's id.
    pub template_id: String,
    /// Hex SHA-256 of the template bytes.
    pub digest: String,
    /// Hex SHA-256 of the schema's canonical JSON, when the schema is valid.
    pub variables_digest: Option<String>,
    /// Every stage, in order.
    pub stages: Vec<StageResult>,
    /// Whether no stage failed.
    pub passed: bool,
}

impl ValidationReport {
    /// Hex SHA-256 of the report's JSON: what the statement's `validation_digest` holds.
    pub fn digest(&self) -> String {
        guard_core::provenance::sha256_hex(self.to_json().as_bytes())
    }

    /// The report as compact JSON, as digested.
    pub fn to_json(&self) -> String {
        // Every field is a string, number, bool or list of them: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The stages that failed.
    pub fn failures(&self) -> impl Iterator<Item = &StageResult> {
        self.stages.iter().filter(|s| s.status == Status::Failed)
    }
}

/// What to validate.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The template's id.
    pub template_id: &'a str,
    /// The exact bytes to be signed.
    pub template: &'a [u8],
    /// The variable schema, JSON.
    pub schema: &'a [u8],
    /// The previous version's text, for the diff.
    pub previous: Option<&'a [u8]>,
}

/// What the pipeline allows.
#[derive(Debug, Clone, Copy)]
pub struct ValidationOptions {
    /// Largest template accepted, in bytes.
    pub max_template_bytes: usize,
    /// Report personal data as a warning instead of refusing it.
    pub allow_personal_data: bool,
    /// The time the guard is told (the analysis has no clock of its own).
    pub now: guard_core::time::Timestamp,
}

/// Runs every stage. The engine is the guard compiled with the template policy.
pub fn validate(
    candidate: &Candidate<'_>,
    options: &ValidationOptions,
    engine: &GuardEngine,
) -> Result<ValidationReport, EngineError> {
    let digest = guard_core::provenance::sha256_hex(candidate.template);
    let mut stages = Vec::new();
    let encoding = encoding_stage(candidate, options);
    let text = match (encoding.status, std::str::from_utf8(candidate.template)) {
        (Status::Passed, Ok(text)) => Some(text),
        _ => None,
    };
    stages.push(encoding);
    let Some(text) = text else {
        for stage in [
            Stage::Placeholders,
            Stage::HiddenText,
            Stage::Analysis,
            Stage::Secrets,
            Stage::PersonalData,
            Stage::Diff,
        ] {
            stages.push(result(stage, Status::Skipped, Vec::new()));
        }
        return Ok(report(candidate, digest, None, stages));
    };
    let (placeholders, variables_digest) = placeholder_stage(text, candidate.schema);
    stages.push(placeholders);
    let analysis = engine.assess(
        &[Segment {
            text: text.to_string(),
            // Assessed as if it came from outside: a template's own text is trusted later, so
            // it must earn that here.
            trust: Trust::Untrusted,
            role: Some(Role::System),
            source: Some("template".into()),
        }],
        &Context {
            tenant: None,
            user: None,
            now: options.now.to_string(),
            profile: None,
        },
    )?;
    let analysis: AssessmentOutput = serde_json::from_str(&analysis)
        .map_err(|e| EngineError::Input(format!("the guard's answer is not an assessment: {e}")))?;
    stages.push(hidden_text_stage(text, &analysis));
    stages.push(analysis_stage(&analysis));
    stages.push(pattern_stage(
        Stage::Secrets,
        text,
        secret_patterns(),
        false,
    ));
    stages.push(pattern_stage(
        Stage::PersonalData,
        text,
        personal_data_patterns(),
        options.allow_personal_data,
    ));
    stages.push(diff_stage(text, candidate.previous));
    Ok(report(candidate, digest, variables_digest, stages))
}

fn report(
    candidate: &Candidate<'_>,
    digest: String,
    variables_digest: Option<String>,
    stages: Vec<StageResult>,
) -> ValidationReport {
    let passed = !stages.iter().any(|s| s.status == Status::Failed);
    ValidationReport {
        template_id: candidate.template_id.to_string(),
        digest,
        variables_digest,
        stages,
        passed,
    }
}

fn result(stage: Stage, status: Status, mut issues: Vec<Issue>) -> StageResult {
    let more = issues.len().saturating_sub(MAX_ISSUES_PER_STAGE);
    issues.truncate(MAX_ISSUES_PER_STAGE);
    StageResult {
        stage,
        status,
        issues,
        more,
    }
}

fn issue(code: &str, message: String, span: Option<[usize; 2]>) -> Issue {
    Issue {
        code: code.to_string(),
        message,
        span,
    }
}

fn failed_if_any(stage: Stage, issues: Vec<Issue>) -> StageResult {
    let status = if issues.is_empty() {
        Status::Passed
    } else {
        Status::Failed
    };
    result(stage, status, issues)
}

fn encoding_stage(candidate: &Candidate<'_>, options: &ValidationOptions) -> StageResult {
    let mut issues = Vec::new();
    if candidate.template.is_empty() {
        issues.push(issue("empty", "the template is empty".into(), None));
    }
    if candidate.template.len() > options.max_template_bytes {
        issues.push(issue(
            "too_large",
            format!(
                "the template is {} bytes; the limit is {}",
                candidate.template.len(),
                options.max_template_bytes
            ),
            None,
        ));
    }
    if candidate.schema.len() > MAX_SCHEMA_BYTES {
        issues.push(issue(
            "schema_too_large",
            format!(
                "the variable schema is {} bytes; the limit is {MAX_SCHEMA_BYTES}",
                candidate.schema.len()
            ),
            None,
        ));
    }
    if let Err(e) = std::str::from_utf8(candidate.template) {
        let at = e.valid_up_to();
        issues.push(issue(
            "not_utf8",
            format!("the template is not valid UTF-8 (invalid byte at offset {at})"),
            Some([at, at + 1]),
        ));
    }
    failed_if_any(Stage::Encoding, issues)
}

fn placeholder_stage(text: &str, schema: &[u8]) -> (StageResult, Option<String>) {
    let schema = match VariableSchema::from_json(schema) {
        Ok(schema) => schema,
        Err(e) => {
            return (
                failed_if_any(
                    Stage::Placeholders,
                    vec![issue(e.code(), e.to_string(), None)],
                ),
                None,
            )
        }
    };
    let digest = Some(schema.digest().to_string());
    let issues = match schema.check_template(text) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let span = match &e {
                guard_core::template::TemplateError::MalformedPlaceholder { at, .. } => {
                    Some([*at, *at + 2])
                }
                _ => None,
            };
            vec![issue(e.code(), e.to_string(), span)]
        }
    };
    (failed_if_any(Stage::Placeholders, issues), digest)
}

/// Characters emoji are built from: pictographs, symbols and skin-tone modifiers.
fn is_emoji(c: char) -> bool {
    matches!(u32::from(c), 0x2190..=0x21FF | 0x2300..=0x23FF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x1F000..=0x1FAFF)
}

/// Letters of the scripts whose spelling needs the zero-width (non-)joiner: Arabic, Persian,
/// Urdu, and the Indic scripts.
fn joins_letters(c: char) -> bool {
    matches!(u32::from(c), 0x0600..=0x06FF | 0x0750..=0x077F | 0x08A0..=0x08FF | 0x0900..=0x0DFF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF)
}

/// How emoji and some scripts are written, not hidden text: a presentation selector right after
/// an emoji or a keycap base; a joiner between two emoji (after at most one selector); a
/// (non-)joiner between two letters of a script that needs it. `run` is the invisible characters
/// since `visible`, the last visible one, and `selector_only` whether they were one selector.
/// Anything longer is a run that carries nothing a reader sees.
fn is_written_with(
    c: char,
    visible: Option<char>,
    run: usize,
    selector_only: bool,
    next: Option<char>,
) -> bool {
    match c {
        '\u{FE0E}' | '\u{FE0F}' => {
            run == 0 && visible.is_some_and(|p| is_emoji(p) || matches!(p, '0'..='9' | '#' | '*'))
        }
        '\u{200D}' => {
            (visible.is_some_and(is_emoji)
                && (run == 0 || (run == 1 && selector_only))
                && next.is_some_and(is_emoji))
                || (run == 0
                    && visible.is_some_and(joins_letters)
                    && next.is_some_and(joins_letters))
        }
        '\u{200C}' => {
            run == 0 && visible.is_some_and(joins_letters) && next.is_some_and(joins_letters)
        }
        _ => false,
    }
}

fn hidden_text_stage(text: &str, analysis: &AssessmentOutput) -> StageResult {
    let mut issues = Vec::new();
    let mut visible = None;
    let mut run = 0;
    let mut selector_only = false;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let span = Some([at, at + c.len_utf8()]);
        let code = u32::from(c);
        let found = if (0xE0000..=0xE007F).contains(&code) {
            Some((
                "tag_character",
                "a Unicode tag character (invisible; can carry hidden text)",
            ))
        } else if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
        {
            Some((
                "bidi_control",
                "a bidirectional control (can make text read differently on screen)",
            ))
        } else if (guard_core::text::normalize::is_invisible(c) || c == '\u{2800}')
            && !is_written_with(c, visible, run, selector_only, next)
        {
            Some(("invisible_character", "an invisible character"))
        } else if c.is_control() && !matches!(c, '\n' | '\t' | '\r') {
            Some(("control_character", "a control character"))
        } else {
            None
        };
        if let Some((code_name, what)) = found {
            issues.push(issue(
                code_name,
                format!("U+{code:04X} at byte {at} is {what}; remove it"),
                span,
            ));
        }
        if guard_core::text::normalize::is_invisible(c) {
            selector_only = run == 0 && matches!(c, '\u{FE0E}' | '\u{FE0F}');
            run += 1;
        } else {
            visible = Some(c);
            run = 0;
            selector_only = false;
        }
    }
    // What the guard decoded, and links that would carry data out.
    for finding in &analysis.assessment.findings {
        let span = Some([finding.span.byte_start, finding.span.byte_end]);
        if !finding.encodings.is_empty() {
            let encodings = serde_json::to_string(&finding.encodings).unwrap_or_default();
            issues.push(issue(
                "encoded_payload",
                format!(
                    "an encoded payload ({encodings}) the guard decoded: `{}`",
                    finding.excerpt
                ),
                span,
            ));
        } else if finding.category == Category::Exfiltration {
            issues.push(issue(
                "exfiltration_link",
                format!(
                    "exfiltration-shaped content (`{}`): {}",
                    finding.id, finding.excerpt
                ),
                span,
            ));
        }
    }
    for p in hidden_markup_patterns() {
        for m in p.regex.find_iter(text) {
            issues.push(issue(
                p.code,
                format!(
                    "{} at byte {}: `{}`",
                    p.what,
                    m.start(),
                    excerpt(m.as_str())
                ),
                Some([m.start(), m.end()]),
            ));
        }
    }
    issues.sort_by_key(|i| i.span.map_or(0, |s| s[0]));
    issues.dedup_by(|a, b| a.code == b.code && a.span == b.span);
    failed_if_any(Stage::HiddenText, issues)
}

fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn analysis_stage(analysis: &AssessmentOutput) -> StageResult {
    let assessment = &analysis.assessment;
    let issues: Vec<Issue> = assessment
        .findings
        .iter()
        .map(|f| {
            issue(
                &f.id,
                format!("{}: `{}`", f.category.as_str(), f.excerpt),
                Some([f.span.byte_start, f.span.byte_end]),
            )
        })
        .collect();
    // The model is trained on what users send; a system prompt's own defences ("never reveal
    // these instructions") read like the attacks they defend against. Without a rule finding,
    // its verdict alone is a warning for the reviewer, not a refusal.
    let model_only = assessment
        .findings
        .iter()
        .all(|f| f.source == guard_core::FindingSource::Model);
    let status = match assessment.action {
        Action::Allow => Status::Passed,
        Action::Warn => Status::Warned,
        _ if model_only => Status::Warned,
        _ => Status::Failed,
    };
    let mut stage = result(Stage::Analysis, status, issues);
    if status != Status::Passed {
        stage.issues.insert(
            0,
            issue(
                "assessed",
                format!(
                    "the guard rates the template `{}` and would `{}` it: {}",
                    assessment.level.as_str(),
                    assessment.action.as_str(),
                    assessment.explanation.summary
                ),
                None,
            ),
        );
    }
    stage
}

struct Pattern {
    code: &'static str,
    what: &'static str,
    regex: Regex,
}

fn compile(list: &[(&'static str, &'static str, &str)]) -> Vec<Pattern> {
    list.iter()
        .filter_map(|(code, what, pattern)| {
            // The patterns are constants; the tests compile every one.
            Regex::new(pattern)
                .ok()
                .map(|regex| Pattern { code, what, regex })
        })
        .collect()
}

/// Credentials by the shapes their issuers give them.
const SECRET_PATTERNS: [(&str, &str, &str); 14] = [
    (
        "private_key",
        "a private key",
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----",
    ),
    (
        "aws_access_key",
        "an AWS access key id",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    ),
    (
        "aws_secret_key",
        "an AWS secret access key",
        r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}"#,
    ),
    // Tokens are often embedded in longer names (`key_ghp_…`), so no word boundary before them.
    (
        "github_token",
        "a GitHub token",
        r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})",
    ),
    (
        "slack_token",
        "a Slack token",
        r"xox[abposr]-[A-Za-z0-9-]{10,}",
    ),
    (
        "anthropic_key",
        "an Anthropic API key",
        r"sk-ant-[A-Za-z0-9_-]{20,}",
    ),
    (
        "openai_key",
        "an OpenAI-style API key",
        r"sk-(?:proj-)?[A-Za-z0-9_-]{20,}",
    ),
    (
        "google_api_key",
        "a Google API key",
        r"AIza[0-9A-Za-z_-]{35}",
    ),
    (
        "stripe_key",
        "a Stripe secret key",
        r"[sr]k_live_[0-9A-Za-z]{20,}",
    ),
    (
        "azure_key",
        "an Azure storage account key",
        r"(?i)AccountKey=[A-Za-z0-9+/=]{20,}",
    ),
    (
        "bearer_token",
        "a bearer token",
        r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*",
    ),
    (
        "jwt",
        "a JSON Web Token",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ),
    (
        "url_credentials",
        "a password inside an address",
        r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s@/]+@",
    ),
    (
        "password_assignment",
        "a password written into the text",
        r#"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|token)["']?\s*[:=]\s*["']?[^\s{}"']{6,}"#,
    ),
];

/// Whether a `password: …`-shaped match holds something secret-like, not prose
/// (`password: explain the reset procedure`): a digit or a symbol in the value.
fn looks_secret(assignment: &str) -> bool {
    let value = assignment
        .split_once([':', '='])
        .map_or("", |(_, v)| v)
        .trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    value
        .chars()
        .any(|c| c.is_ascii_digit() || "!#$%&*+/<>?@^_|~-".contains(c))
}

/// Personal data: e-mail addresses and phone numbers.
const PERSONAL_DATA_PATTERNS: [(&str, &str, &str); 3] = [
    (
        "email_address",
        "an e-mail address",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
    ),
    (
        "phone_number",
        "a phone number",
        r"\+[1-9][0-9]{0,2}[ .-]?(?:\(?[0-9]{1,4}\)?[ .-]?){2,4}[0-9]{2,4}\b",
    ),
    (
        "phone_number",
        "a phone number",
        r"\(?\b[0-9]{3}\)?[ .-][0-9]{3}[ .-][0-9]{4}\b",
    ),
];

fn secret_patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| compile(&SECRET_PATTERNS))
}

fn hidden_markup_patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| compile(&HIDDEN_MARKUP))
}

fn personal_data_patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| compile(&PERSONAL_DATA_PATTERNS))
}

/// Markup a model reads and a reader of the rendered text does not see, addresses that would
/// carry data out, and images fetched when shown, as (code, what, pattern).
const HIDDEN_MARKUP: [(&str, &str, &str); 8] = [
    // An address (markdown link or image target, or a bare URL) with a `{{placeholder}}` in it.
    (
        "exfiltration_link",
        "a link or image whose address is built from a variable",
        r"(?:\]\(|\b(?:https?|ftp)://)[^\s)]*\{\{[^}]*\}\}[^\s)]*",
    ),
    (
        "remote_image",
        "a markdown image from a remote address, fetched when shown",
        r"!\[[^\]]*\]\(\s*(?:https?:)?//[^)]*\)",
    ),
    ("hidden_markup", "an HTML comment", r"(?s)<!--.*?-->"),
    (
        "hidden_markup",
        "a markdown comment",
        r"(?m)^[ \t]*\[(?://|comment)\]:\s*(?:#|<>)",
    ),
    (
        "hidden_markup",
        "styling that hides text",
        r"(?i)(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em)?\b|opacity\s*:\s*0(?:\.0+)?\b|<[a-z]+[^>]*\bhidden\b)",
    ),
    (
        "remote_image",
        "an HTML image from a remote address, fetched when shown",
        r#"(?i)<img\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//"#,
    ),
    (
        "remote_image",
        "a reference-style markdown image (its address is defined elsewhere)",
        r"!\[[^\]]*\]\[[^\]]*\]",
    ),
    (
        "padding",
        "a long run of blank space that pushes text out of view",
        r"[ \t]{64,}|(?:[ \t]*\n){16,}",
    ),
];

fn pattern_stage(stage: Stage, text: &str, patterns: &[Pattern], allowed: bool) -> StageResult {
    let mut issues = Vec::new();
    for p in patterns {
        for m in p.regex.find_iter(text) {
            // Placeholders are not data, and prose about passwords is not a password.
            if m.as_str().contains("{{")
                || (p.code == "password_assignment" && !looks_secret(m.as_str()))
            {
                continue;
            }
            issues.push(issue(
                p.code,
                format!(
                    "{} at byte {}: `{}`; {}",
                    p.what,
                    m.start(),
                    redact(m.as_str()),
                    if allowed {
                        "allowed by the options"
                    } else {
                        "move it into a variable or out of the template"
                    }
                ),
                Some([m.start(), m.end()]),
            ));
        }
    }
    // One finding per stretch of text: a match inside another (a local number inside an
    // international one) says nothing new.
    issues.sort_by_key(|i| i.span.map_or((0, 0), |s| (s[0], usize::MAX - s[1])));
    let mut covered = 0;
    issues.retain(|i| {
        let [start, end] = i.span.unwrap_or_default();
        let new = end > covered && start >= covered;
        covered = covered.max(end);
        new
    });
    let status = match (issues.is_empty(), allowed) {
        (true, _) => Status::Passed,
        (false, true) => Status::Warned,
        (false, false) => Status::Failed,
    };
    result(stage, status, issues)
}

/// Enough of a secret to find it, not enough to use it: the report is kept and shown.
fn redact(s: &str) -> String {
    let shown: String = s.chars().take(6).collect();
    format!("{shown}… ({} characters)", s.chars().count())
}

fn diff_stage(text: &str, previous: Option<&[u8]>) -> StageResult {
    let Some(previous) = previous else {
        return result(Stage::Diff, Status::Passed, Vec::new());
    };
    let previous = String::from_utf8_lossy(previous);
    let old: Vec<&str> = previous.lines().collect();
    let new: Vec<&str> = text.lines().collect();
    let changes = line_diff(&old, &new);
    if changes.is_empty() {
        return result(
            Stage::Diff,
            Status::Warned,
            vec![issue(
                "unchanged",
                "the text is the same as the previous version's".into(),
                None,
            )],
        );
    }
    result(Stage::Diff, Status::Passed, changes)
}

/// Lines removed and added, by a longest common subsequence over lines. Templates are small
/// (64 KiB by default); past 4,000 lines on either side the diff lists every line as changed
/// rather than spend quadratic time.
fn line_diff(old: &[&str], new: &[&str]) -> Vec<Issue> {
    const MAX_LINES: usize = 4000;
    let changed = |code: &str, line: &str, number: usize| {
        issue(
            code,
            format!("line {}: {}", number + 1, excerpt(line)),
            None,
        )
    };
    if old.len() > MAX_LINES || new.len() > MAX_LINES {
        return old
            .iter()
            .enumerate()
            .map(|(i, l)| changed("line_removed", l, i))
            .chain(
                new.iter()
                    .enumerate()
                    .map(|(i, l)| changed("line_added", l, i)),
            )
            .collect();
    }
    let (n, m) = (old.len(), new.len());
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let value = if old.get(i) == new.get(j) {
                lcs.get(at(i + 1, j + 1)).copied().unwrap_or(0) + 1
            } else {
                let down = lcs.get(at(i + 1, j)).copied().unwrap_or(0);
                let right = lcs.get(at(i, j + 1)).copied().unwrap_or(0);
                down.max(right)
            };
            if let Some(cell) = lcs.get_mut(at(i, j)) {
                *cell = value;
            }
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        let get = |a: usize, b: usize| lcs.get(at(a, b)).copied().unwrap_or(0);
        if i < n && j < m && old.get(i) == new.get(j) {
            i += 1;
            j += 1;
        } else if j < m && (i == n || get(i, j + 1) >= get(i + 1, j)) {
            out.push(changed(
                "line_added",
                new.get(j).copied().unwrap_or_default(),
                j,
            ));
            j += 1;
        } else {
            out.push(changed(
                "line_removed",
                old.get(i).copied().unwrap_or_default(),
                i,
            ));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_pattern_compiles() {
        assert_eq!(secret_patterns().len(), SECRET_PATTERNS.len());
        assert_eq!(personal_data_patterns().len(), PERSONAL_DATA_PATTERNS.len());
        assert_eq!(hidden_markup_patterns().len(), HIDDEN_MARKUP.len());
    }

    #[test]
    fn line_diff_lists_what_changed() {
        let codes = |old: &[&str], new: &[&str]| -> Vec<String> {
            line_diff(old, new)
                .into_iter()
                .map(|i| format!("{} {}", i.code, i.message))
                .collect()
        };
        assert_eq!(
            codes(&["a", "b", "c"], &["a", "x", "c", "d"]),
            [
                "line_added line 2: x",
                "line_removed line 2: b",
                "line_added line 4: d"
            ]
        );
        assert!(codes(&["a"], &["a"]).is_empty());
    }
}
