//! Every endpoint with the roles that may call it: the one table the access check, the OpenAPI
//! document and the role tests read.

use axum::http::Method;

use super::access::ANY_ROLE;
use crate::registry::Role;

/// An HTTP method the service routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The method's name in lower case, as OpenAPI writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }

    fn matches(self, method: &Method) -> bool {
        match self {
            Verb::Get => method == Method::GET || method == Method::HEAD,
            Verb::Post => method == Method::POST,
            Verb::Delete => method == Method::DELETE,
        }
    }
}

/// One endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Its method.
    pub verb: Verb,
    /// Its path as the router writes it (`{name}` for a parameter).
    pub path: &'static str,
    /// The roles that may call it; `None` for the public health endpoints.
    pub roles: Option<&'static [Role]>,
    /// What it does.
    pub summary: &'static str,
}

const fn route(
    verb: Verb,
    path: &'static str,
    roles: Option<&'static [Role]>,
    summary: &'static str,
) -> Route {
    Route {
        verb,
        path,
        roles,
        summary,
    }
}

const SCANNER: &[Role] = &[Role::Scanner];
const PUBLISHER: &[Role] = &[Role::Publisher];
const REVIEWER: &[Role] = &[Role::Reviewer];
const ADMIN: &[Role] = &[Role::Admin];
const AUDITOR: &[Role] = &[Role::Auditor];
const REVIEW_OR_AUDIT: &[Role] = &[Role::Reviewer, Role::Auditor];
const METRICS: &[Role] = &[Role::Auditor, Role::Admin];
const PROFILE_READERS: &[Role] = &[Role::Admin, Role::Reviewer];

use Verb::{Delete, Get, Post};

/// Every endpoint of the service.
pub const ROUTES: &[Route] = &[
    route(Get, "/healthz", None, "Liveness: the process answers."),
    route(Get, "/readyz", None, "Readiness: the guard module and the stores answer."),
    route(Get, "/metrics", Some(METRICS), "Prometheus metrics."),
    route(Get, "/openapi.json", Some(ANY_ROLE), "This document."),
    route(Post, "/v1/scan", Some(SCANNER), "Assess text alone."),
    route(Post, "/v1/scan/batch", Some(SCANNER), "Assess many texts in one request."),
    route(Post, "/v1/guard", Some(SCANNER), "One guarded call: verify the template, render it, assess it with the user's input and profile."),
    route(Get, "/v1/templates", Some(ANY_ROLE), "Every template with its latest, active and pending versions."),
    route(Get, "/v1/templates/{id}", Some(ANY_ROLE), "One template: its summary and the history of its versions."),
    route(Get, "/v1/templates/{id}/versions/{version}", Some(ANY_ROLE), "One version: text, schema, envelope and signatures."),
    route(Get, "/v1/templates/{id}/versions/{version}/bundle", Some(ANY_ROLE), "The offline bundle of a version: envelope, log entry, inclusion proof and checkpoint."),
    route(Post, "/v1/templates/{id}/drafts", Some(PUBLISHER), "Validate a new version and return the statement its publisher signs."),
    route(Post, "/v1/templates/{id}/versions", Some(PUBLISHER), "Publish a version with its publisher's signature over the draft's statement."),
    route(Post, "/v1/templates/{id}/versions/{version}/approvals", Some(REVIEWER), "Approve a pending version with the reviewer's signature over its envelope."),
    route(Post, "/v1/templates/{id}/verify", Some(ANY_ROLE), "Verify a template and envelope against the registry's keyring and the template's policy."),
    route(Get, "/v1/keys", Some(ANY_ROLE), "The keyring: every key with its owner and validity."),
    route(Post, "/v1/keys", Some(ADMIN), "Add a key for an identity."),
    route(Post, "/v1/keys/{fingerprint}/rotate", Some(ADMIN), "Add a new key beside an old one in every policy that counts the old one."),
    route(Post, "/v1/keys/{fingerprint}/revoke", Some(ADMIN), "Revoke a key from a time on."),
    route(Get, "/v1/audit/checkpoint", Some(AUDITOR), "The latest signed checkpoint of the audit log."),
    route(Get, "/v1/audit/entries/{seq}", Some(AUDITOR), "One audit entry with its inclusion proof."),
    route(Get, "/v1/audit/proofs/consistency", Some(AUDITOR), "A consistency proof between two sizes of the log."),
    route(Post, "/v1/audit/verify", Some(AUDITOR), "Verify the whole log, and the registry against it."),
    route(Get, "/v1/incidents", Some(REVIEW_OR_AUDIT), "Incidents, filtered."),
    route(Get, "/v1/incidents/{id}", Some(REVIEW_OR_AUDIT), "One incident with its comments."),
    route(Post, "/v1/incidents/{id}/acknowledge", Some(REVIEWER), "Acknowledge an incident."),
    route(Post, "/v1/incidents/{id}/assign", Some(REVIEWER), "Assign an incident."),
    route(Post, "/v1/incidents/{id}/resolve", Some(REVIEWER), "Resolve an incident."),
    route(Post, "/v1/incidents/{id}/comments", Some(REVIEWER), "Comment on an incident."),
    route(Get, "/v1/quarantine", Some(REVIEWER), "Items held for review."),
    route(Post, "/v1/quarantine/{id}/view", Some(REVIEWER), "Read a held item's content, with a reason (recorded in the audit log)."),
    route(Post, "/v1/quarantine/{id}/release", Some(REVIEWER), "Release a held item; the answer is its original decision context."),
    route(Post, "/v1/quarantine/{id}/reject", Some(REVIEWER), "Reject a held item."),
    route(Get, "/v1/users/{id}", Some(PROFILE_READERS), "A user's behaviour profiles."),
    route(Get, "/v1/users/{id}/export", Some(ADMIN), "Everything held about a user (recorded in the audit log)."),
    route(Delete, "/v1/users/{id}", Some(ADMIN), "Erase a user's profiles and detections (recorded in the audit log)."),
];

/// The roles that may call `path` with `method`: `Some(None)` for a public endpoint, `None` for
/// one not in [`ROUTES`].
pub fn route_roles(method: &Method, path: &str) -> Option<Option<&'static [Role]>> {
    ROUTES
        .iter()
        .find(|r| r.path == path && r.verb.matches(method))
        .map(|r| r.roles)
}

/// The path's `{name}` parameters.
fn parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
        .collect()
}

fn schema_ref(name: &str) -> serde_json::Value {
    serde_json::json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The request body schema of a route, by name in `components.schemas`.
fn request_schema(verb: Verb, path: &str) -> Option<&'static str> {
    Some(match (verb, path) {
        (Verb::Post, "/v1/scan") => "ScanRequest",
        (Verb::Post, "/v1/scan/batch") => "ScanBatchRequest",
        (Verb::Post, "/v1/guard") => "GuardRequest",
        (Verb::Post, "/v1/templates/{id}/drafts") => "DraftRequest",
        (Verb::Post, "/v1/templates/{id}/versions") => "PublishRequest",
        (Verb::Post, "/v1/templates/{id}/versions/{version}/approvals") => "ApproveRequest",
        (Verb::Post, "/v1/templates/{id}/verify") => "VerifyRequest",
        (Verb::Post, "/v1/keys") => "AddKeyRequest",
        (Verb::Post, "/v1/keys/{fingerprint}/rotate") => "RotateKeyRequest",
        (Verb::Post, "/v1/keys/{fingerprint}/revoke") => "RevokeKeyRequest",
        (Verb::Post, "/v1/incidents/{id}/acknowledge") => "IncidentAction",
        (Verb::Post, "/v1/incidents/{id}/resolve") => "IncidentAction",
        (Verb::Post, "/v1/incidents/{id}/assign") => "AssignRequest",
        (Verb::Post, "/v1/incidents/{id}/comments") => "CommentRequest",
        (Verb::Post, "/v1/quarantine/{id}/release") => "ReviewRequest",
        (Verb::Post, "/v1/quarantine/{id}/view") => "ReviewRequest",
        (Verb::Post, "/v1/quarantine/{id}/reject") => "ReviewRequest",
        _ => return None,
    })
}

fn query_parameters(verb: Verb, path: &str) -> Vec<(&'static str, &'static str, bool)> {
    match (verb, path) {
        (Verb::Get, "/v1/audit/entries/{seq}") => vec![("size", "integer", false)],
        (Verb::Get, "/v1/audit/proofs/consistency") => {
            vec![("from", "integer", true), ("to", "integer", false)]
        }
        (Verb::Get, "/v1/users/{id}")
        | (Verb::Get, "/v1/users/{id}/export")
        | (Verb::Delete, "/v1/users/{id}") => {
            vec![("tenant", "string", false)]
        }
        (Verb::Get, "/v1/incidents") => vec![
            ("status", "string", false),
            ("level", "string", false),
            ("min_level", "string", false),
            ("tenant", "string", false),
            ("subject", "string", false),
            ("rule", "string", false),
            ("assignee", "string", false),
            ("since", "string", false),
            ("limit", "integer", false),
            ("cursor", "string", false),
        ],
        (Verb::Get, "/v1/quarantine") => vec![
            ("status", "string", false),
            ("tenant", "string", false),
            ("subject", "string", false),
            ("incident_id", "string", false),
            ("limit", "integer", false),
            ("cursor", "string", false),
        ],
        _ => Vec::new(),
    }
}

fn error_response(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": schema_ref("Error")}},
    })
}

fn components() -> serde_json::Value {
    use serde_json::json;
    let string = json!({"type": "string"});
    json!({
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "A key from `sigil apikey create`: `sigil_…`."}
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": string, "message": string},
                }},
            },
            "Segment": {
                "type": "object",
                "required": ["text", "trust"],
                "properties": {
                    "text": string,
                    "trust": {"enum": ["trusted", "untrusted"]},
                    "role": {"enum": ["system", "user", "assistant", "tool", "document"]},
                    "source": string,
                },
            },
            "ScanRequest": {
                "oneOf": [
                    {"type": "object", "required": ["text"], "additionalProperties": false,
                     "properties": {"text": string, "user": string, "tenant": string}},
                    {"type": "object", "required": ["segments"], "additionalProperties": false,
                     "properties": {
                        "segments": {"type": "array", "items": schema_ref("Segment")},
                        "context": {"type": "object", "properties": {
                            "tenant": string, "user": string, "now": string, "profile": {"type": "object"}}},
                     }},
                ],
            },
            "ScanBatchRequest": {
                "type": "object", "required": ["items"], "additionalProperties": false,
                "properties": {"items": {"type": "array", "items": schema_ref("ScanRequest")}},
            },
            "GuardRequest": {
                "type": "object", "required": ["template_id"], "additionalProperties": false,
                "properties": {
                    "template_id": string,
                    "version": {"type": "integer", "minimum": 1},
                    "variables": {"type": "object"},
                    "input": string,
                    "user": string,
                    "tenant": string,
                },
            },
            "DraftRequest": {
                "type": "object", "required": ["template", "keyid"], "additionalProperties": false,
                "properties": {
                    "template": string,
                    "variables_schema": {"type": "object"},
                    "keyid": string,
                    "valid_days": {"type": "integer", "minimum": 1},
                    "allow_personal_data": {"type": "boolean"},
                },
            },
            "PublishRequest": {
                "type": "object", "required": ["template", "keyid", "signed_at", "signature"],
                "additionalProperties": false,
                "properties": {
                    "template": string,
                    "variables_schema": {"type": "object"},
                    "keyid": string,
                    "valid_days": {"type": "integer", "minimum": 1},
                    "allow_personal_data": {"type": "boolean"},
                    "signed_at": string,
                    "signature": {"type": "string", "description": "base64 signature over the draft's `pae`"},
                },
            },
            "ApproveRequest": {
                "type": "object", "required": ["keyid", "signature"], "additionalProperties": false,
                "properties": {"keyid": string, "signature": string},
            },
            "VerifyRequest": {
                "type": "object", "required": ["template", "envelope"], "additionalProperties": false,
                "properties": {"template": string, "envelope": {"type": "object"}, "version": {"type": "integer"}},
            },
            "AddKeyRequest": {
                "type": "object", "required": ["owner", "spki", "scheme"], "additionalProperties": false,
                "properties": {"owner": string, "spki": string,
                    "scheme": {"enum": ["rsassa-pkcs1v15-sha256", "rsassa-pss-sha256"]},
                    "valid_from": string, "valid_until": string},
            },
            "RotateKeyRequest": {
                "type": "object", "required": ["spki", "scheme"], "additionalProperties": false,
                "properties": {"spki": string,
                    "scheme": {"enum": ["rsassa-pkcs1v15-sha256", "rsassa-pss-sha256"]},
                    "retire_old_at": string},
            },
            "RevokeKeyRequest": {
                "type": "object", "additionalProperties": false, "properties": {"at": string},
            },
            "IncidentAction": {
                "type": "object", "additionalProperties": false, "properties": {"note": string},
            },
            "AssignRequest": {
                "type": "object", "required": ["assignee"], "additionalProperties": false,
                "properties": {"assignee": {"type": ["string", "null"]}},
            },
            "CommentRequest": {
                "type": "object", "required": ["text"], "additionalProperties": false,
                "properties": {"text": string},
            },
            "ReviewRequest": {
                "type": "object", "required": ["reason"], "additionalProperties": false,
                "properties": {"reason": string},
            },
        },
    })
}

/// The OpenAPI 3.1 document of every route, served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    use serde_json::json;
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut params: Vec<serde_json::Value> = parameters(route.path)
            .into_iter()
            .map(|name| {
                let kind = if name == "seq" { "integer" } else { "string" };
                json!({"name": name, "in": "path", "required": true, "schema": {"type": kind}})
            })
            .collect();
        params.extend(
            query_parameters(route.verb, route.path)
                .into_iter()
                .map(|(name, kind, required)| {
                    json!({"name": name, "in": "query", "required": required, "schema": {"type": kind}})
                }),
        );
        let operation_id = format!(
            "{}{}",
            route.verb.as_str(),
            route
                .path
                .split(['/', '{', '}', '.', '_'])
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let mut c = p.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect::<String>())
                        .unwrap_or_default()
                })
                .collect::<String>()
        );
        let mut responses = serde_json::Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}),
        );
        responses.insert("400".into(), error_response("The request is malformed."));
        let mut operation = serde_json::Map::new();
        operation.insert("operationId".into(), json!(operation_id));
        operation.insert("summary".into(), json!(route.summary));
        operation.insert("parameters".into(), json!(params));
        match route.roles {
            Some(roles) => {
                responses.insert(
                    "401".into(),
                    error_response("No key, or an unknown or disabled one."),
                );
                responses.insert(
                    "403".into(),
                    error_response("The key's identity lacks every role the endpoint takes."),
                );
                operation.insert("security".into(), json!([{"apiKey": []}]));
                operation.insert(
                    "x-sigil-roles".into(),
                    json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
                );
            }
            None => {
                operation.insert("security".into(), json!([]));
                responses.insert("503".into(), json!({"description": "Not ready."}));
            }
        }
        if let Some(schema) = request_schema(route.verb, route.path) {
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": schema_ref(schema)}},
                }),
            );
            responses.insert("413".into(), error_response("The body is over the limit."));
            responses.insert("415".into(), error_response("The body is not JSON."));
            responses.insert("422".into(), error_response("Understood but refused: a prompt over its limit, a refused template, a batch too large."));
        }
        operation.insert("responses".into(), serde_json::Value::Object(responses));
        if let serde_json::Value::Object(methods) = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}))
        {
            methods.insert(
                route.verb.as_str().into(),
                serde_json::Value::Object(operation),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sigil",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The guard in front of LLM calls: guarded calls, scanning, the template registry, incidents, quarantine and audit.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": components(),
    })
}
