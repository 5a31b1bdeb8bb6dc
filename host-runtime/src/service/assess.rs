//! `POST /v1/scan`, `POST /v1/scan/batch` and `POST /v1/guard`: the calls the guard decides.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use guard_core::time::Timestamp;
use guard_core::{Assessment, AssessmentInput, Context, Profile, Segment};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::body::{json_error, parse_object, read_text};
use super::outcome::{Call, Endpoint, Outcome};
use super::templates::CachedTemplate;
use super::{json_response, AppError, AppState};
use crate::registry::Session;
use crate::store::{assess_with_store, call_with_store, AssessError, ProfileKey};

/// The short form: one untrusted text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextRequest {
    text: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

/// The contract's form, with `context` and `context.now` optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractRequest {
    segments: Vec<Segment>,
    #[serde(default)]
    context: Option<ContextRequest>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ContextRequest {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    now: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

/// Which form a body is in; duplicate keys are refused here already.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Either accepted form as the contract's input. Errors point into the body as sent.
fn contract_request(body: &str, now: &str) -> Result<AssessmentInput, AppError> {
    let shape: Shape<'_> = parse_object(body)?;
    Ok(if shape.text.is_some() {
        let r: TextRequest = serde_json::from_str(body).map_err(|e| json_error(&e))?;
        AssessmentInput {
            segments: vec![Segment::untrusted(r.text)],
            context: Context {
                tenant: r.tenant,
                user: r.user,
                now: now.to_string(),
                profile: None,
            },
        }
    } else {
        let r: ContractRequest = serde_json::from_str(body).map_err(|e| json_error(&e))?;
        let c = r.context.unwrap_or_default();
        AssessmentInput {
            segments: r.segments,
            context: Context {
                tenant: c.tenant,
                user: c.user,
                now: c.now.unwrap_or_else(|| now.to_string()),
                profile: c.profile,
            },
        }
    })
}

fn check_prompt_len(state: &AppState, bytes: usize) -> Result<(), AppError> {
    let limit = state.limits.max_prompt_bytes;
    if bytes > limit {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt_too_long",
            format!("the prompt is {bytes} bytes, over the {limit}-byte limit"),
        ));
    }
    Ok(())
}

fn host_now(now: &str) -> Result<Timestamp, AppError> {
    Timestamp::parse(now).map_err(|e| AppError::internal(&e.to_string()))
}

/// Assesses one input, with the stored profile when the service keeps profiles.
fn assess_one(state: &AppState, input: &AssessmentInput, now: &str) -> Result<String, AppError> {
    let answer = match &state.behaviour {
        Some(behaviour) => assess_with_store(&state.engine, behaviour, input, host_now(now)?),
        None => {
            let plain = serde_json::to_string(input)
                .map_err(|_| AppError::internal("the request could not be encoded"))?;
            state
                .engine
                .assess_json(&plain)
                .map_err(AssessError::Engine)
        }
    };
    noted(state, answer)
}

/// The result, with a guard call cut short by its limits counted.
fn noted<T>(state: &AppState, result: Result<T, AssessError>) -> Result<T, AppError> {
    if let Err(AssessError::Engine(e)) = &result {
        state.note_engine_error(e);
    }
    result.map_err(AppError::from)
}

/// The parts of an answer the host acts on.
#[derive(Deserialize)]
struct Answered {
    assessment: Assessment,
}

fn read_assessment(answer: &str) -> Result<Assessment, AppError> {
    serde_json::from_str::<Answered>(answer)
        .map(|a| a.assessment)
        .map_err(|_| AppError::internal("the guard's answer could not be read"))
}

/// Runs `f` on a blocking thread while holding one guard permit.
async fn with_guard<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let _permit = state
        .guard_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| AppError::stopping())?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| AppError::internal("guard call failed"))?
}

/// One scanned text and what the guard made of it.
struct Scanned<'a> {
    input: &'a AssessmentInput,
    answer: &'a str,
    assessment: &'a Assessment,
    assess_time: std::time::Duration,
}

impl<'a> Scanned<'a> {
    /// The call's outcome; a reviewer releasing it gets the request and the answer.
    fn outcome(&self, now: String, request_id: String, started: Instant) -> Outcome<'a> {
        let answer: serde_json::Value = serde_json::from_str(self.answer).unwrap_or_default();
        Outcome {
            endpoint: Endpoint::Scan,
            tenant: self.input.context.tenant.clone(),
            subject: self.input.context.user.clone(),
            now,
            request_id,
            call: Call::Assessed {
                assessment: self.assessment,
                template: None,
                context: json!({"request": self.input, "answer": answer}),
            },
            verify_time: None,
            assess_time: Some(self.assess_time),
            started,
        }
    }
}

/// `POST /v1/scan`: the contract's `{segments, context}`, or `{text, user?, tenant?}` for one
/// untrusted segment; guard-core's `{assessment, profile}` back.
pub(super) async fn scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let started = Instant::now();
    let text = read_text(&state, &headers, body).await?;
    let now = (state.clock)();
    let input = contract_request(&text, &now)?;
    check_prompt_len(&state, input.segments.iter().map(|s| s.text.len()).sum())?;
    let worker = state.clone();
    let (answer, assessed) = with_guard(&state, move || {
        let assess_started = Instant::now();
        let answer = assess_one(&worker, &input, &now)?;
        let assessment = read_assessment(&answer)?;
        Ok((answer, (input, assessment, assess_started.elapsed(), now)))
    })
    .await?;
    let (input, assessment, assess_time, now) = assessed;
    let scanned = Scanned {
        input: &input,
        answer: &answer,
        assessment: &assessment,
        assess_time,
    };
    let recorded = state
        .record(scanned.outcome(now, super::request_id(&headers), started))
        .await?;
    Ok(json_response(StatusCode::OK, recorded.decorate(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// `POST /v1/scan/batch`: `{items: [<scan request>…]}`; `{results: […]}` in the same order, each
/// an answer or its own `{error}`.
pub(super) async fn scan_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let started = Instant::now();
    let text = read_text(&state, &headers, body).await?;
    let batch: BatchRequest<'_> = parse_object(&text)?;
    let max = state.limits.max_batch;
    if batch.items.len() > max {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_too_large",
            format!(
                "{} items is over the limit of {max} per batch",
                batch.items.len()
            ),
        ));
    }
    let now = (state.clock)();
    let inputs: Vec<Result<AssessmentInput, AppError>> = batch
        .items
        .iter()
        .map(|item| {
            let input = contract_request(item.get(), &now)?;
            check_prompt_len(&state, input.segments.iter().map(|s| s.text.len()).sum())?;
            Ok(input)
        })
        .collect();
    let worker = state.clone();
    let worker_now = now.clone();
    let answers = with_guard(&state, move || {
        Ok(inputs
            .into_iter()
            .map(|input| {
                let input = input?;
                let assess_started = Instant::now();
                let answer = assess_one(&worker, &input, &worker_now)?;
                let assessment = read_assessment(&answer)?;
                Ok((input, answer, assessment, assess_started.elapsed()))
            })
            .collect::<Vec<Result<_, AppError>>>())
    })
    .await?;
    let request_id = super::request_id(&headers);
    let mut results = Vec::with_capacity(answers.len());
    for (index, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok((input, answer, assessment, assess_time)) => {
                let scanned = Scanned {
                    input: &input,
                    answer: &answer,
                    assessment: &assessment,
                    assess_time,
                };
                let request_id = format!("{request_id}.{index}");
                // An item whose record cannot be stored gets that error in its place; the
                // items stored before it keep their answers (their incidents are committed).
                match state
                    .record(scanned.outcome(now.clone(), request_id, started))
                    .await
                {
                    Ok(recorded) => results.push(recorded.decorate(answer)),
                    Err(e) => results.push(e.body_json()),
                }
            }
            Err(e) => results.push(e.body_json()),
        }
    }
    let mut body = String::from("{\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push_str("]}");
    Ok(json_response(StatusCode::OK, body))
}

/// `POST /v1/guard`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardRequest<'a> {
    template_id: String,
    #[serde(default)]
    version: Option<u64>,
    #[serde(borrow, default)]
    variables: Option<&'a RawValue>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

/// What the guard answers to a guarded call.
#[derive(Deserialize)]
struct GuardAnswer<'a> {
    #[serde(borrow)]
    template: &'a RawValue,
    #[serde(default)]
    rendered: Option<String>,
    assessment: Assessment,
    #[serde(borrow)]
    profile: &'a RawValue,
}

/// The guard's request for one call, with or without the user's profile.
fn guard_request(
    template: &CachedTemplate,
    variables: &str,
    input: Option<&str>,
    context: &Context,
    profile: Option<&serde_json::Value>,
) -> Result<String, AssessError> {
    let encode = |e: serde_json::Error| AssessError::Answer(e.to_string());
    let mut context = serde_json::to_value(context).map_err(encode)?;
    if let (Some(profile), Some(object)) = (profile, context.as_object_mut()) {
        object.insert("profile".into(), profile.clone());
    }
    let mut out = String::with_capacity(template.request.len() + variables.len() + 256);
    out.push_str("{\"template\":");
    let now = context.get("now").cloned().unwrap_or_default();
    out.push_str(&template.request_at(&now));
    out.push_str(",\"variables_schema\":");
    out.push_str(&template.variables_schema);
    out.push_str(",\"variables\":");
    out.push_str(variables);
    if let Some(input) = input {
        out.push_str(",\"input\":");
        out.push_str(&serde_json::to_string(input).map_err(encode)?);
    }
    out.push_str(",\"context\":");
    out.push_str(&context.to_string());
    out.push('}');
    Ok(out)
}

/// The prompt `template` renders with `values` at `now`, verified again natively; `None` if
/// it does not verify or render (the guard already refused it then).
fn render_held(
    template: &super::templates::CachedTemplate,
    now: &str,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let request = template.request_at(&serde_json::Value::String(now.to_string()));
    let verified = guard_core::provenance::verify_request(request.as_bytes()).ok()?;
    let schema =
        guard_core::template::VariableSchema::from_json(template.variables_schema.as_bytes())
            .ok()?;
    let values: std::collections::BTreeMap<String, serde_json::Value> =
        values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    guard_core::template::render(&verified, &schema, &values)
        .ok()
        .map(|r| r.text)
}

/// `POST /v1/guard`: `{template_id, version?, variables, input?, user?, tenant?}`.
pub(super) async fn guard(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let started = Instant::now();
    let text = read_text(&state, &headers, body).await?;
    let request: GuardRequest<'_> = parse_object(&text)?;
    let variables = request.variables.map_or("{}", RawValue::get).to_string();
    let values: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&variables)
        .map_err(|_| {
            AppError::bad_request("invalid_input", "`variables` is an object of values")
        })?;
    let prompt_bytes = values
        .values()
        .map(|v| v.as_str().map_or(0, str::len))
        .sum::<usize>()
        + request.input.as_deref().map_or(0, str::len);
    check_prompt_len(&state, prompt_bytes)?;
    let now = (state.clock)();
    let verify_started = Instant::now();
    let template = state
        .templates
        .get(&state, &session, &request.template_id, request.version)
        .await?;
    let lookup_time = verify_started.elapsed();
    let context = Context {
        tenant: request.tenant.clone(),
        user: request.user.clone(),
        now: now.clone(),
        profile: None,
    };
    // What a detection record digests: the untrusted pieces, in order.
    let mut untrusted: Vec<Segment> = values
        .values()
        .filter_map(|v| v.as_str().map(|s| Segment::untrusted(s.to_string())))
        .collect();
    if let Some(input) = &request.input {
        untrusted.push(Segment::untrusted(input.clone()));
    }
    let input = request.input.clone();
    let worker = state.clone();
    let worker_template = template.clone();
    let worker_context = context.clone();
    let result = with_guard(&state, move || {
        let engine = &worker.engine;
        let assess_started = Instant::now();
        let mut call = |profile: Option<&serde_json::Value>| -> Result<String, AssessError> {
            let request = guard_request(
                &worker_template,
                &variables,
                input.as_deref(),
                &worker_context,
                profile,
            )?;
            match engine.guard_json(&request) {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(refusal)) => Err(AssessError::Refused(refusal)),
                Err(e) => Err(AssessError::Engine(e)),
            }
        };
        let answer = match (&worker.behaviour, &worker_context.user) {
            (Some(behaviour), Some(user)) => {
                let key = ProfileKey::new(worker_context.tenant.as_deref(), user)
                    .map_err(AssessError::from)?;
                call_with_store(
                    behaviour,
                    &key,
                    host_now(&worker_context.now)?,
                    &untrusted,
                    &mut call,
                )
            }
            _ => call(None),
        };
        Ok((answer, assess_started.elapsed()))
    })
    .await?;
    let (answer, assess_time) = result;
    let request_id = super::request_id(&headers);
    if let Err(AssessError::Engine(e)) = &answer {
        state.note_engine_error(e);
    }
    let answer = match answer {
        Ok(answer) => answer,
        Err(AssessError::Refused(refusal)) => {
            let outcome = Outcome {
                endpoint: Endpoint::Guard,
                tenant: context.tenant.clone(),
                subject: context.user.clone(),
                now: now.clone(),
                request_id: request_id.clone(),
                call: Call::Refused {
                    code: &refusal.code,
                    template_id: &request.template_id,
                    version: request.version,
                },
                verify_time: Some(lookup_time + assess_time),
                assess_time: None,
                started,
            };
            let recorded = state.record(outcome).await?;
            let mut error = AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "template_refused",
                refusal.message.clone(),
            )
            .with("refusal", refusal.code.clone())
            .with("decision", "block")
            .with("request_id", request_id);
            if let Some(id) = recorded.incident_id {
                error = error.with("incident_id", id);
            }
            return Err(error);
        }
        Err(e) => return Err(e.into()),
    };
    let parsed: GuardAnswer<'_> = serde_json::from_str(&answer)
        .map_err(|_| AppError::internal("the guard's answer could not be read"))?;
    let assessment = &parsed.assessment;
    let reasons: Vec<serde_json::Value> = assessment
        .findings
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "category": f.category,
                "source": f.source,
                "weight": f.weight,
                "segment": f.span.segment,
            })
        })
        .collect();
    let template_report: serde_json::Value =
        serde_json::from_str(parsed.template.get()).unwrap_or_default();
    let mut out = json!({
        "request_id": request_id,
        "decision": assessment.action,
        "level": assessment.level,
        "score": assessment.score,
        "reasons": reasons,
        "template": template_report,
        "assessment": assessment,
    });
    if let Some(object) = out.as_object_mut() {
        if let Some(rendered) = &parsed.rendered {
            object.insert("rendered".into(), rendered.clone().into());
            if let Some(input) = &request.input {
                object.insert("input".into(), input.clone().into());
            }
        }
        if state.behaviour.is_none() || context.user.is_none() {
            // Nobody else keeps this profile: the caller sends it back next time.
            let profile: serde_json::Value =
                serde_json::from_str(parsed.profile.get()).unwrap_or_default();
            object.insert("profile".into(), profile);
        }
    }
    // A held call's answer leaves the prompt out; the reviewer who releases it gets the
    // prompt as this very version renders it, so the caller need not render again.
    let held_prompt = match parsed.rendered {
        Some(_) => None,
        None => render_held(&template, &now, &values),
    };
    let decision_context = json!({
        "request": {
            "template_id": request.template_id,
            "version": template.version.or(request.version),
            "variables": values,
            "input": request.input,
            "user": request.user,
            "tenant": request.tenant,
        },
        "rendered_template": template_report,
        "rendered": held_prompt,
        "answer": out,
    });
    let outcome = Outcome {
        endpoint: Endpoint::Guard,
        tenant: context.tenant.clone(),
        subject: context.user.clone(),
        now,
        request_id: request_id.clone(),
        call: Call::Assessed {
            assessment,
            template: Some((&request.template_id, template.version)),
            context: decision_context,
        },
        verify_time: Some(lookup_time),
        assess_time: Some(assess_time),
        started,
    };
    let recorded = state.record(outcome).await?;
    Ok(json_response(
        StatusCode::OK,
        recorded.decorate(out.to_string()),
    ))
}
