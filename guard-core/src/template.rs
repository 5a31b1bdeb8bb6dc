//! Templates and their variables: placeholders, the variable schema, and rendering a verified
//! template into the segments the guard assesses.
//!
//! A template names its variables as `{{name}}`. Its schema declares each one (type, maximum
//! length, allowed pattern or values) and is bound to the signature: the statement's
//! `variables_digest` is the SHA-256 of the schema's canonical JSON, checked before anything is
//! rendered. Each value is checked against the schema before it is assessed; the template's own
//! text becomes trusted segments and each value an untrusted one named after its variable.

use std::collections::BTreeMap;
use std::ops::Range;

use regex_automata::meta::Regex;
use serde::{Deserialize, Serialize};

use crate::contract::{Segment, Trust};
use crate::json::UniqueMap;
use crate::provenance::{sha256_hex, VerifiedTemplate};

/// Most variables a schema may declare.
pub const MAX_VARIABLES: usize = 256;
/// Longest variable name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest value any variable may take, in characters, whatever its schema says.
pub const MAX_VALUE_CHARS: usize = 1 << 20;
/// Longest pattern a variable may declare.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Most allowed values a variable may list.
pub const MAX_VALUES: usize = 1024;

/// What a variable holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    /// Text.
    String,
    /// A whole number, written in decimal.
    Integer,
    /// `true` or `false`.
    Boolean,
}

/// One variable's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    /// What it holds.
    #[serde(rename = "type")]
    pub kind: VariableType,
    /// Longest value, in characters (strings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// A pattern the whole value must match (strings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The only values allowed (strings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Smallest value (integers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest value (integers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// Why a schema, a template's placeholders or a variable's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The schema is not JSON of the schema's shape.
    #[error("variable schema is malformed: {0}")]
    MalformedSchema(String),
    /// One declaration is unusable.
    #[error("variable `{name}` is declared wrongly: {reason}")]
    InvalidDeclaration {
        /// The variable.
        name: String,
        /// Why.
        reason: String,
    },
    /// The schema given is not the one that was signed.
    #[error("variable schema digest `{actual}` does not match the signed `{signed}`")]
    SchemaMismatch {
        /// `variables_digest` of the statement.
        signed: String,
        /// Digest of the schema given.
        actual: String,
    },
    /// A placeholder is not `{{name}}`.
    #[error("placeholder at byte {at} is malformed: {reason}")]
    MalformedPlaceholder {
        /// Where it starts in the template.
        at: usize,
        /// Why.
        reason: String,
    },
    /// The template uses a variable the schema does not declare.
    #[error("placeholder `{0}` is not declared in the variable schema")]
    Undeclared(String),
    /// The schema declares a variable the template never uses.
    #[error("variable `{0}` is declared but the template has no placeholder for it")]
    Unused(String),
    /// A declared variable has no value.
    #[error("variable `{0}` has no value")]
    Missing(String),
    /// A value was given for a variable the schema does not declare.
    #[error("variable `{0}` is not declared in the template's schema")]
    Unknown(String),
    /// A value does not satisfy its declaration.
    #[error("variable `{name}` is refused: {reason}")]
    InvalidValue {
        /// The variable.
        name: String,
        /// Why.
        reason: String,
    },
}

impl TemplateError {
    /// A stable snake-case code for each kind of refusal.
    pub fn code(&self) -> &'static str {
        match self {
            TemplateError::MalformedSchema(_) => "malformed_schema",
            TemplateError::InvalidDeclaration { .. } => "invalid_declaration",
            TemplateError::SchemaMismatch { .. } => "schema_mismatch",
            TemplateError::MalformedPlaceholder { .. } => "malformed_placeholder",
            TemplateError::Undeclared(_) => "undeclared_variable",
            TemplateError::Unused(_) => "unused_variable",
            TemplateError::Missing(_) => "missing_variable",
            TemplateError::Unknown(_) => "unknown_variable",
            TemplateError::InvalidValue { .. } => "invalid_value",
        }
    }
}

/// One `{{name}}` in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// The variable.
    pub name: String,
    /// Where the whole `{{name}}` is in the template.
    pub range: Range<usize>,
}

/// Whether `name` may name a variable: a letter or `_`, then letters, digits or `_`.
pub fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=MAX_NAME_LEN).contains(&name.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The placeholders of a template, in order. `{{` opens one and `}}` closes it; spaces inside
/// are allowed (`{{ name }}`). A lone `{` or `}` is text.
pub fn placeholders(template: &str) -> Result<Vec<Placeholder>, TemplateError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(offset) = template.get(from..).and_then(|rest| rest.find("{{")) {
        let at = from + offset;
        let inner_start = at + 2;
        let rest = template.get(inner_start..).unwrap_or_default();
        let Some(close) = rest.find("}}") else {
            return Err(TemplateError::MalformedPlaceholder {
                at,
                reason: "`{{` is never closed by `}}`".into(),
            });
        };
        let inner = rest.get(..close).unwrap_or_default();
        if inner.contains("{{") || inner.contains('\n') {
            return Err(TemplateError::MalformedPlaceholder {
                at,
                reason: "`{{` is not closed on its line".into(),
            });
        }
        let name = inner.trim_matches(' ');
        if !is_variable_name(name) {
            return Err(TemplateError::MalformedPlaceholder {
                at,
                reason: format!(
                    "`{}` is not a variable name (a letter or `_`, then letters, digits or `_`, at most {MAX_NAME_LEN})",
                    inner.chars().take(80).collect::<String>()
                ),
            });
        }
        let end = inner_start + close + 2;
        out.push(Placeholder {
            name: name.to_string(),
            range: at..end,
        });
        from = end;
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct CompiledSpec {
    spec: VariableSpec,
    pattern: Option<Regex>,
}

/// A checked variable schema: `{name: {type, max_length?, pattern?, values?, min?, max?}}`.
#[derive(Debug, Clone)]
pub struct VariableSchema {
    variables: BTreeMap<String, CompiledSpec>,
    digest: String,
}

impl VariableSchema {
    /// Parses and checks a schema. No unknown or duplicate fields; patterns must compile on every
    /// face.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TemplateError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| TemplateError::MalformedSchema(e.to_string()))?;
        // Typed parsing refuses duplicate keys, which a `Value` would silently merge; the
        // canonical form comes from the `Value`.
        let UniqueMap(specs) = serde_json::from_slice::<UniqueMap<VariableSpec>>(bytes)
            .map_err(|e| TemplateError::MalformedSchema(e.to_string()))?;
        if specs.len() > MAX_VARIABLES {
            return Err(TemplateError::MalformedSchema(format!(
                "declares {} variables; at most {MAX_VARIABLES}",
                specs.len()
            )));
        }
        let mut variables = BTreeMap::new();
        for (name, spec) in specs {
            let compiled = compile(&name, spec)?;
            variables.insert(name, compiled);
        }
        Ok(VariableSchema {
            variables,
            digest: sha256_hex(value.to_string().as_bytes()),
        })
    }

    /// Hex SHA-256 of the schema's canonical JSON (keys sorted, no whitespace): what a statement's
    /// `variables_digest` holds.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The declared variables' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// Checks that `template` uses exactly the declared variables.
    pub fn check_template(&self, template: &str) -> Result<Vec<Placeholder>, TemplateError> {
        let found = placeholders(template)?;
        if let Some(p) = found.iter().find(|p| !self.variables.contains_key(&p.name)) {
            return Err(TemplateError::Undeclared(p.name.clone()));
        }
        if let Some(name) = self.names().find(|n| !found.iter().any(|p| p.name == *n)) {
            return Err(TemplateError::Unused(name.to_string()));
        }
        Ok(found)
    }

    /// Checks one value against its declaration and returns it as text.
    pub fn check_value(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let Some(compiled) = self.variables.get(name) else {
            return Err(TemplateError::Unknown(name.chars().take(80).collect()));
        };
        let refuse = |reason: String| TemplateError::InvalidValue {
            name: name.to_string(),
            reason,
        };
        let spec = &compiled.spec;
        match (spec.kind, value) {
            (VariableType::String, serde_json::Value::String(s)) => {
                let chars = s.chars().count();
                let limit = spec
                    .max_length
                    .unwrap_or(MAX_VALUE_CHARS)
                    .min(MAX_VALUE_CHARS);
                if chars > limit {
                    return Err(refuse(format!("{chars} characters; at most {limit}")));
                }
                if let Some(values) = &spec.values {
                    if !values.contains(s) {
                        return Err(refuse("is not one of the allowed values".into()));
                    }
                }
                if let Some(pattern) = &compiled.pattern {
                    if !pattern.is_match(s.as_str()) {
                        return Err(refuse(format!(
                            "does not match the pattern `{}`",
                            spec.pattern.as_deref().unwrap_or_default()
                        )));
                    }
                }
                Ok(s.clone())
            }
            (VariableType::Integer, serde_json::Value::Number(n)) => {
                let Some(i) = n.as_i64() else {
                    return Err(refuse(format!("`{n}` is not a whole number in range")));
                };
                if spec.min.is_some_and(|min| i < min) || spec.max.is_some_and(|max| i > max) {
                    return Err(refuse(format!("{i} is out of range")));
                }
                Ok(i.to_string())
            }
            (VariableType::Boolean, serde_json::Value::Bool(b)) => Ok(b.to_string()),
            (kind, other) => Err(refuse(format!(
                "expected a {}, got {}",
                match kind {
                    VariableType::String => "string",
                    VariableType::Integer => "integer",
                    VariableType::Boolean => "boolean",
                },
                json_kind(other)
            ))),
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn compile(name: &str, spec: VariableSpec) -> Result<CompiledSpec, TemplateError> {
    let invalid = |reason: String| TemplateError::InvalidDeclaration {
        name: name.chars().take(80).collect(),
        reason,
    };
    if !is_variable_name(name) {
        return Err(invalid(
            "a name is a letter or `_`, then letters, digits or `_`".into(),
        ));
    }
    let text_only = spec.max_length.is_some() || spec.pattern.is_some() || spec.values.is_some();
    let numbers_only = spec.min.is_some() || spec.max.is_some();
    match spec.kind {
        VariableType::String if numbers_only => {
            return Err(invalid("`min` and `max` are for integers".into()))
        }
        VariableType::Integer | VariableType::Boolean if text_only => {
            return Err(invalid(
                "`max_length`, `pattern` and `values` are for strings".into(),
            ))
        }
        VariableType::Boolean if numbers_only => {
            return Err(invalid("`min` and `max` are for integers".into()))
        }
        _ => {}
    }
    if spec
        .max_length
        .is_some_and(|l| l == 0 || l > MAX_VALUE_CHARS)
    {
        return Err(invalid(format!(
            "`max_length` must be 1 to {MAX_VALUE_CHARS}"
        )));
    }
    if let (Some(min), Some(max)) = (spec.min, spec.max) {
        if min > max {
            return Err(invalid("`min` is above `max`".into()));
        }
    }
    if let Some(values) = &spec.values {
        if values.is_empty() || values.len() > MAX_VALUES {
            return Err(invalid(format!(
                "`values` must list 1 to {MAX_VALUES} values"
            )));
        }
    }
    let pattern = match &spec.pattern {
        Some(p) if p.len() > MAX_PATTERN_LEN => {
            return Err(invalid(format!(
                "`pattern` is longer than {MAX_PATTERN_LEN} bytes"
            )))
        }
        Some(p) => {
            crate::rules::portable_pattern(p).map_err(|e| invalid(format!("`pattern`: {e}")))?;
            // The whole value must match, not a part of it.
            let anchored = format!(r"\A(?:{p})\z");
            Some(
                crate::rules::compile_pattern(&anchored)
                    .map_err(|e| invalid(format!("`pattern`: {e}")))?,
            )
        }
        None => None,
    };
    Ok(CompiledSpec { spec, pattern })
}

/// A verified template with its variables filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedTemplate {
    /// The prompt as it reaches the model.
    pub text: String,
    /// The same text in pieces: the template's own text trusted, each value untrusted and named
    /// after its variable.
    pub segments: Vec<Segment>,
}

/// Renders a verified template: the schema must be the signed one, the template must use exactly
/// its variables, and every value must satisfy its declaration.
pub fn render(
    template: &VerifiedTemplate,
    schema: &VariableSchema,
    values: &BTreeMap<String, serde_json::Value>,
) -> Result<RenderedTemplate, TemplateError> {
    let signed = &template.statement().variables_digest;
    if signed != schema.digest() {
        return Err(TemplateError::SchemaMismatch {
            signed: signed.clone(),
            actual: schema.digest().to_string(),
        });
    }
    if let Some(unknown) = values.keys().find(|k| !schema.variables.contains_key(*k)) {
        return Err(TemplateError::Unknown(unknown.chars().take(80).collect()));
    }
    let mut checked = BTreeMap::new();
    for name in schema.names() {
        let value = values
            .get(name)
            .ok_or_else(|| TemplateError::Missing(name.to_string()))?;
        checked.insert(name, schema.check_value(name, value)?);
    }
    let text = template.text();
    let placeholders = schema.check_template(text)?;
    let mut segments = Vec::with_capacity(placeholders.len() * 2 + 1);
    let mut rendered = String::with_capacity(text.len());
    let mut at = 0;
    let mut push = |piece: &str, trust: Trust, source: Option<&str>| {
        rendered.push_str(piece);
        // Empty pieces carry nothing to assess; adjacent placeholders leave no text between them.
        if !piece.is_empty() {
            segments.push(Segment {
                text: piece.to_string(),
                trust,
                role: None,
                source: source.map(str::to_string),
            });
        }
    };
    for p in &placeholders {
        push(
            text.get(at..p.range.start).unwrap_or_default(),
            Trust::Trusted,
            None,
        );
        let value = checked.get(p.name.as_str()).map_or("", String::as_str);
        push(value, Trust::Untrusted, Some(&p.name));
        at = p.range.end;
    }
    push(text.get(at..).unwrap_or_default(), Trust::Trusted, None);
    Ok(RenderedTemplate {
        text: rendered,
        segments,
    })
}

/// One guarded call as JSON: `{template: <verification request, whose `now` defaults to the
/// context's>, variables_schema, variables: {name: value}, input?, context}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardRequest {
    template: Box<serde_json::value::RawValue>,
    variables_schema: Box<serde_json::value::RawValue>,
    #[serde(default)]
    variables: UniqueMap<serde_json::Value>,
    /// The user's own message, sent to the model after the rendered template.
    #[serde(default)]
    input: Option<String>,
    context: crate::contract::Context,
}

/// What a guarded call answers: the verification report, the rendered prompt when the action
/// lets it reach a model, and the assessment with the user's updated profile.
#[derive(Debug, Serialize)]
struct GuardAnswer<'a> {
    template: crate::provenance::VerificationReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    rendered: Option<&'a str>,
    #[serde(flatten)]
    output: &'a crate::contract::AssessmentOutput,
}

/// Why a guarded call was refused before anything was assessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardCallError {
    /// The request is not of the request's shape.
    #[error("guard request is malformed: {0}")]
    InvalidRequest(String),
    /// The template was refused.
    #[error(transparent)]
    Verify(#[from] crate::provenance::VerifyError),
    /// The schema or a variable was refused.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl GuardCallError {
    /// A stable snake-case code for each kind of refusal.
    pub fn code(&self) -> &'static str {
        match self {
            GuardCallError::InvalidRequest(_) => "invalid_request",
            GuardCallError::Verify(e) => e.code(),
            GuardCallError::Template(e) => e.code(),
        }
    }
}

/// Verifies, renders and assesses one call (steps 2 and 3 of a guarded call in `DESIGN.md`).
pub fn guard_json(guard: &crate::Guard, request: &str) -> Result<String, GuardCallError> {
    if request.len() > crate::provenance::MAX_TEMPLATE_BYTES * 4 {
        return Err(GuardCallError::InvalidRequest(format!(
            "{} bytes is over the limit",
            request.len()
        )));
    }
    let request: GuardRequest =
        serde_json::from_str(request).map_err(|e| GuardCallError::InvalidRequest(e.to_string()))?;
    let verified = crate::provenance::request::verify_request_with(
        request.template.get().as_bytes(),
        None,
        Some(&request.context.now),
    )?;
    let schema = VariableSchema::from_json(request.variables_schema.get().as_bytes())?;
    let rendered = render(&verified, &schema, &request.variables.0)?;
    let mut segments = rendered.segments;
    if let Some(text) = request.input.filter(|text| !text.is_empty()) {
        segments.push(Segment {
            text,
            trust: Trust::Untrusted,
            role: Some(crate::contract::Role::User),
            source: Some("input".to_string()),
        });
    }
    let input = crate::contract::AssessmentInput {
        segments,
        context: request.context,
    };
    let output = guard.assess(&input);
    let allowed = matches!(
        output.assessment.action,
        crate::contract::Action::Allow | crate::contract::Action::Warn
    );
    let answer = GuardAnswer {
        template: verified.report(),
        rendered: allowed.then_some(rendered.text.as_str()),
        output: &output,
    };
    serde_json::to_string(&answer).map_err(|e| GuardCallError::InvalidRequest(e.to_string()))
}
