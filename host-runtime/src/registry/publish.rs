//! Publishing and approving: the path by which a version becomes active.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use guard_core::provenance::{
    pae, sha256_hex, EnvelopeSignature, HighWater, KeyRecord, TemplatePolicy,
};
use guard_core::time::Timestamp;
use guard_core::transparency::EntryKind;
use guard_core::Envelope;
use rusqlite::TransactionBehavior;

use super::store::{self, SignatureRow, VersionRow};
use super::{
    active_version, authorize, check_signing_key, check_template_id, key_infos, stored_version,
    template_policy, Publication, PublishRequest, Recorded, Registry, RegistryError, Role, Session,
    VersionState,
};
use crate::audit::{self, AuditError, NewEntry};
use crate::engine::GuardEngine;
use crate::signer::Signer;
use crate::template::{canonical_json, sign_template, SignRequest};
use crate::validate::{validate, Candidate};

impl Registry {
    /// Publishes the next version of a template (publisher): validates it, signs it with the
    /// publisher's own key (which must be in the keyring under their name), and stores it as
    /// approved if it verifies under the template's policy, or as pending if it still needs
    /// approvals. A refused validation is recorded in the log as a `refusal` with its report.
    pub fn publish(
        &mut self,
        session: &Session,
        request: &PublishRequest<'_>,
        signer: &dyn Signer,
        log_signer: &dyn Signer,
        engine: &GuardEngine,
    ) -> Result<Publication, RegistryError> {
        let now = request.validation.now;
        let template_id = request.template_id;
        check_template_id(template_id)?;
        let conn = self.log_conn();
        authorize(conn, session, Role::Publisher, "publish templates")?;
        let key_fp = check_signing_key(conn, session, signer, now)?;
        let history = store::versions(conn, template_id)?;
        if let Some(pending) = history.iter().find(|v| v.state == VersionState::Pending) {
            return Err(RegistryError::Conflict(format!(
                "`{template_id}` v{} is waiting for approvals; approve or withdraw it first",
                pending.version
            )));
        }
        let previous = history.last();
        let version = previous.map_or(1, |p| p.version.saturating_add(1));
        let schema: serde_json::Value = serde_json::from_slice(request.variables_schema)
            .map_err(|e| RegistryError::Invalid(format!("the variable schema is not JSON: {e}")))?;
        let candidate = Candidate {
            template_id,
            template: request.template,
            schema: request.variables_schema,
            previous: previous.map(|p| p.template.as_slice()),
        };
        let report = validate(&candidate, &request.validation, engine)?;
        let report_json = report.to_json();
        let report_digest = report.digest();
        let actor = self.actor(session)?;
        if !report.passed {
            let origin = self.log.origin().to_string();
            let tx = self
                .log
                .connection()
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            authorize(&tx, session, Role::Publisher, "publish templates")?;
            super::check_clock(&tx, now)?;
            store::insert_report(&tx, &report_digest, &report_json)?;
            let entry = NewEntry {
                time: now.to_string(),
                kind: EntryKind::Refusal,
                actor,
                subject: Some(format!("{template_id}@{version} validation")),
                digests: BTreeMap::from([("validation".to_string(), report_digest.clone())]),
            };
            audit::record_in(&tx, &origin, vec![entry], log_signer)?;
            tx.commit()?;
            return Err(RegistryError::Validation(Box::new(report)));
        }
        let sign_request = SignRequest {
            template_id,
            version,
            template: request.template,
            variables_schema: &schema,
            prev_digest: previous.map(|p| p.digest.clone()),
            signer: session.name(),
            signed_at: now,
            not_after: now.saturating_add_seconds(i64::from(request.valid_days.max(1)) * 86_400),
            validation_digest: Some(report_digest.clone()),
        };
        let envelope = sign_template(&sign_request, signer)?;
        let policy = template_policy(conn, template_id)?;
        let verdict = evaluate(
            conn,
            engine,
            &envelope,
            request.template,
            template_id,
            &policy,
            &history,
            now,
        )?;
        let digest = sha256_hex(request.template);
        let origin = self.log.origin().to_string();
        let tx = self
            .log
            .connection()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        authorize(&tx, session, Role::Publisher, "publish templates")?;
        super::check_clock(&tx, now)?;
        // Someone may have published meanwhile: the version chosen must still be the next.
        let latest = store::versions(&tx, template_id)?.last().map(|v| v.version);
        if latest != previous.map(|p| p.version) {
            return Err(RegistryError::Conflict(format!(
                "`{template_id}` changed while this was signed (now at v{}); publish again",
                latest.unwrap_or(0)
            )));
        }
        let envelope_json =
            serde_json::to_string(&envelope).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let next_seq = audit::next_seq_in(&tx)?;
        let mut row = VersionRow {
            template_id: template_id.to_string(),
            version,
            state: VersionState::Pending,
            template: request.template.to_vec(),
            variables_schema: canonical_json(&schema),
            digest: digest.clone(),
            envelope: envelope_json,
            report_digest: Some(report_digest.clone()),
            publisher: session.id,
            submitted_at: now.to_string(),
            approved_at: None,
            withdrawn_at: None,
            published_seq: None,
        };
        let subject = format!("{template_id}@{version}");
        let mut digests = BTreeMap::from([
            (
                "envelope".to_string(),
                guard_core::transparency::envelope_digest(&envelope).map_err(AuditError::from)?,
            ),
            ("template".to_string(), digest),
            ("validation".to_string(), report_digest.clone()),
            ("key".to_string(), key_fp.clone()),
        ]);
        let (kind, waiting_for) = match &verdict {
            Verdict::Verified => {
                row.state = VersionState::Approved;
                row.approved_at = Some(now.to_string());
                row.published_seq = Some(next_seq);
                (EntryKind::TemplatePublished, None)
            }
            Verdict::NeedsApprovals(message) => {
                (EntryKind::TemplateSubmitted, Some(message.clone()))
            }
        };
        if kind == EntryKind::TemplatePublished {
            digests.remove("key");
        }
        store::insert_report(&tx, &report_digest, &report_json)?;
        store::insert_version(&tx, &row)?;
        store::insert_signature(
            &tx,
            template_id,
            version,
            &SignatureRow {
                principal: session.id,
                fingerprint: key_fp,
                signed_at: now.to_string(),
                audit_seq: next_seq,
            },
        )?;
        let entry = NewEntry {
            time: now.to_string(),
            kind,
            actor,
            subject: Some(subject),
            digests,
        };
        let (entries, checkpoint) = audit::record_in(&tx, &origin, vec![entry], log_signer)?;
        tx.commit()?;
        Ok(Publication {
            template_id: template_id.to_string(),
            version,
            state: row.state,
            envelope,
            waiting_for,
            report: Some(report),
            recorded: Recorded {
                entries,
                checkpoint,
            },
        })
    }

    /// Approves a pending version (reviewer): the reviewer's signature over the same envelope,
    /// with their own key. One approval per person; the publisher's own signature is already
    /// theirs. When the envelope then verifies under the template's policy, the version is
    /// approved and its final envelope recorded as published.
    #[allow(clippy::too_many_arguments)]
    pub fn approve(
        &mut self,
        session: &Session,
        template_id: &str,
        version: u64,
        signer: &dyn Signer,
        log_signer: &dyn Signer,
        engine: &GuardEngine,
        now: Timestamp,
    ) -> Result<Publication, RegistryError> {
        let conn = self.log_conn();
        authorize(conn, session, Role::Reviewer, "approve templates")?;
        let key_fp = check_signing_key(conn, session, signer, now)?;
        let row = stored_version(conn, template_id, version)?;
        if row.state != VersionState::Pending {
            return Err(RegistryError::Conflict(format!(
                "`{template_id}` v{version} is {}, not waiting for approvals",
                row.state.as_str()
            )));
        }
        // An approval that could not count would only use up this person's one approval.
        let policy = template_policy(conn, template_id)?;
        if let Some(approvals) = &policy.approvals {
            if !approvals.of.contains(&key_fp) {
                return Err(RegistryError::Invalid(format!(
                    "key {key_fp} is not one whose approvals `{template_id}`'s policy counts"
                )));
            }
        }
        let signatures = store::signatures(conn, template_id, version)?;
        if signatures.iter().any(|s| s.principal == session.id) {
            return Err(RegistryError::Conflict(format!(
                "`{}` has signed `{template_id}` v{version} already; approvals come from other people",
                session.name()
            )));
        }
        if signatures.iter().any(|s| s.fingerprint == key_fp) {
            return Err(RegistryError::Conflict(format!(
                "key {key_fp} has signed `{template_id}` v{version} already"
            )));
        }
        let mut envelope: Envelope = serde_json::from_str(&row.envelope)
            .map_err(|e| RegistryError::Corrupt(format!("stored envelope: {e}")))?;
        let payload = STANDARD
            .decode(envelope.payload.as_bytes())
            .map_err(|e| RegistryError::Corrupt(format!("stored envelope payload: {e}")))?;
        let signature = signer.sign(&pae(&envelope.payload_type, &payload))?;
        envelope.signatures.push(EnvelopeSignature {
            keyid: signer.key_id(),
            sig: STANDARD.encode(signature),
        });
        let history = store::versions(conn, template_id)?;
        let verdict = evaluate(
            conn,
            engine,
            &envelope,
            &row.template,
            template_id,
            &policy,
            &history,
            now,
        )?;
        let actor = self.actor(session)?;
        let origin = self.log.origin().to_string();
        let tx = self
            .log
            .connection()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        authorize(&tx, session, Role::Reviewer, "approve templates")?;
        super::check_clock(&tx, now)?;
        // The envelope signed must still be the stored one (another approval may have landed).
        let mut current = stored_version(&tx, template_id, version)?;
        if current.envelope != row.envelope || current.state != VersionState::Pending {
            return Err(RegistryError::Conflict(format!(
                "`{template_id}` v{version} changed while this was signed; approve again"
            )));
        }
        let seq = audit::next_seq_in(&tx)?;
        let envelope_digest =
            guard_core::transparency::envelope_digest(&envelope).map_err(AuditError::from)?;
        let subject = format!("{template_id}@{version}");
        let mut entries = vec![NewEntry {
            time: now.to_string(),
            kind: EntryKind::Approval,
            actor: actor.clone(),
            subject: Some(subject.clone()),
            digests: BTreeMap::from([
                ("envelope".to_string(), envelope_digest.clone()),
                ("template".to_string(), row.digest.clone()),
                ("key".to_string(), key_fp.clone()),
            ]),
        }];
        current.envelope =
            serde_json::to_string(&envelope).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let waiting_for = match verdict {
            Verdict::Verified => {
                current.state = VersionState::Approved;
                current.approved_at = Some(now.to_string());
                current.published_seq = Some(seq.saturating_add(1));
                entries.push(super::published_entry(now, actor, &row, envelope_digest));
                None
            }
            Verdict::NeedsApprovals(message) => Some(message),
        };
        store::update_version(&tx, &current)?;
        store::insert_signature(
            &tx,
            template_id,
            version,
            &SignatureRow {
                principal: session.id,
                fingerprint: key_fp,
                signed_at: now.to_string(),
                audit_seq: seq,
            },
        )?;
        let (appended, checkpoint) = audit::record_in(&tx, &origin, entries, log_signer)?;
        tx.commit()?;
        Ok(Publication {
            template_id: template_id.to_string(),
            version,
            state: current.state,
            envelope,
            waiting_for,
            report: None,
            recorded: Recorded {
                entries: appended,
                checkpoint,
            },
        })
    }
}

/// Whether a freshly signed envelope verifies, or only lacks approvals.
pub(super) enum Verdict {
    /// It verifies.
    Verified,
    /// It verifies but for approvals; the guard's message says how many.
    NeedsApprovals(String),
}

/// Asks the guard whether `envelope` verifies as the template's next active version against
/// the registry's keyring and the template's policy, above the current active version.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate(
    conn: &rusqlite::Connection,
    engine: &GuardEngine,
    envelope: &Envelope,
    template: &[u8],
    template_id: &str,
    policy: &TemplatePolicy,
    history: &[VersionRow],
    now: Timestamp,
) -> Result<Verdict, RegistryError> {
    let keys: Vec<KeyRecord> = key_infos(conn)?.into_iter().map(|k| k.record).collect();
    let high_water = active_version(history, policy).map(|v| HighWater {
        version: v.version,
        digest: v.digest.clone(),
    });
    let text = std::str::from_utf8(template)
        .map_err(|_| RegistryError::Invalid("the template is not UTF-8".into()))?;
    let request = serde_json::json!({
        "envelope": envelope,
        "template": text,
        "keyring": {"keys": keys},
        "template_policy": policy,
        "template_id": template_id,
        "high_water": high_water,
        "now": now.to_string(),
    });
    match engine.verify_json(&request.to_string())? {
        Ok(_) => Ok(Verdict::Verified),
        Err(refusal) if refusal.code == "not_enough_approvals" => {
            Ok(Verdict::NeedsApprovals(refusal.message))
        }
        Err(refusal) => Err(RegistryError::Refused {
            code: refusal.code,
            message: refusal.message,
        }),
    }
}
