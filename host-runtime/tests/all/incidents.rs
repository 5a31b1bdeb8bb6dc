//! Incidents, quarantine and escalation: grouping, atomic batches, concurrent recorders, the
//! reviewer state machine, the audit queue, and delivery to real receivers on 127.0.0.1 that
//! fail, time out, send endless answers and never answer, across a worker crash and restart.
//! The SIEM export is read back line by line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use guard_core::time::Timestamp;
use guard_core::{Action, Level};
use host_runtime::audit::AuditLog;
use host_runtime::incidents::{
    self, DeliveryWorker, EscalationConfig, IncidentError, IncidentFilter, IncidentStatus,
    IncidentStore, Occurrence, OccurrenceKind, QuarantineFilter, QuarantineStatus, RetryPolicy,
    Reviewer, Secret, Sink,
};
use host_runtime::store::{
    DetectedFinding, Detection, ProfileKey, ProfileStore, SegmentDigest, SqliteStore, Update,
};
use host_runtime::vault::VaultError;
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);
const REVIEWER: Reviewer<'static> = Reviewer {
    name: "rita",
    actor: "psn:0123456789abcdef0123456789abcdef",
};

fn at(seconds: i64) -> Timestamp {
    Timestamp::parse(crate::NOW)
        .unwrap()
        .saturating_add_seconds(seconds)
}

fn occurrence(subject: &str, rule: &str, level: Level, seconds: i64) -> Occurrence {
    Occurrence {
        kind: OccurrenceKind::Assessment {
            action: if level == Level::Critical {
                Action::Block
            } else {
                Action::Quarantine
            },
        },
        tenant: None,
        subject: Some(subject.to_string()),
        rule: rule.to_string(),
        level,
        at: at(seconds),
        request_id: format!("req-{subject}-{rule}-{seconds}"),
        summary: json!({"score": 0.9, "findings": [rule]}),
        quarantine: None,
        sealed: None,
    }
}

/// A vault of its own in `dir`: a local master key and a key store beside the database.
pub(crate) fn test_vault(dir: &std::path::Path) -> std::sync::Arc<host_runtime::vault::Vault> {
    use host_runtime::vault::{CacheLimits, LocalMasterKey, Vault};
    let master = LocalMasterKey::open_or_create(&dir.join("master.key")).unwrap();
    std::sync::Arc::new(
        Vault::open(
            std::sync::Arc::new(master),
            &dir.join("keys.db"),
            CacheLimits::default(),
        )
        .unwrap(),
    )
}

/// The incident store in `dir`, sealing what it quarantines.
fn vaulted(dir: &tempfile::TempDir) -> IncidentStore {
    IncidentStore::open(&db(dir))
        .unwrap()
        .with_vault(test_vault(dir.path()))
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sigil.db")
}

fn record_ok(store: &IncidentStore, batch: &[Occurrence]) -> Vec<incidents::Recorded> {
    store
        .record(batch, HOUR)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn all_incidents(store: &IncidentStore) -> Vec<incidents::Incident> {
    store
        .with_conn(|c| {
            incidents::list_incidents(
                c,
                &IncidentFilter {
                    limit: Some(500),
                    ..IncidentFilter::default()
                },
            )
        })
        .unwrap()
        .items
}

#[test]
fn repeats_of_one_user_and_rule_within_the_window_group_into_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let store = IncidentStore::open(&db(&dir)).unwrap();
    let first = record_ok(&store, &[occurrence("alice", "inj.ignore", Level::High, 0)]);
    assert!(first[0].opened);
    // Four more within the hour of the last one (a sliding window), one of them critical.
    let more = record_ok(
        &store,
        &[
            occurrence("alice", "inj.ignore", Level::High, 600),
            occurrence("alice", "inj.ignore", Level::Critical, 1200),
            occurrence("alice", "inj.ignore", Level::High, 3000),
            occurrence("alice", "inj.ignore", Level::High, 6000),
        ],
    );
    assert!(more.iter().all(|r| r.incident_id == first[0].incident_id));
    assert!(more.iter().all(|r| !r.opened));
    assert_eq!(
        more.iter().map(|r| r.count).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(
        more.iter().map(|r| r.level_raised).collect::<Vec<_>>(),
        vec![false, true, false, false]
    );
    // Another rule, another user, and the same pair past the window: three new incidents.
    let others = record_ok(
        &store,
        &[
            occurrence("alice", "exfil.url", Level::High, 6001),
            occurrence("bob", "inj.ignore", Level::High, 6002),
            occurrence("alice", "inj.ignore", Level::High, 6000 + 3601),
        ],
    );
    assert!(others.iter().all(|r| r.opened));
    let ids: BTreeSet<_> = others.iter().map(|r| r.incident_id.clone()).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&first[0].incident_id));

    let grouped = store
        .with_conn(|c| incidents::get_incident(c, &first[0].incident_id))
        .unwrap()
        .incident;
    assert_eq!(grouped.count, 5);
    assert_eq!(
        grouped.level,
        Level::Critical,
        "the level is the highest seen"
    );
    assert_eq!(grouped.first_seen, at(0).to_string());
    assert_eq!(grouped.last_seen, at(6000).to_string());
    assert_eq!(grouped.first_request_id, "req-alice-inj.ignore-0");
    assert_eq!(grouped.last_request_id, "req-alice-inj.ignore-6000");
    assert_eq!(all_incidents(&store).len(), 4);

    // A resolved incident takes no more repeats: the next one opens a new incident.
    store
        .with_conn(|c| incidents::resolve(c, &grouped.id, Some("handled"), REVIEWER, at(7000)))
        .unwrap();
    let after = record_ok(
        &store,
        &[occurrence("alice", "inj.ignore", Level::High, 5000)],
    );
    assert!(after[0].opened);
    assert_ne!(after[0].incident_id, grouped.id);
}

#[test]
fn an_occurrence_older_than_the_incident_widens_it_without_replacing_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let store = IncidentStore::open(&db(&dir)).unwrap();
    let r = record_ok(
        &store,
        &[
            occurrence("u", "r", Level::High, 1000),
            occurrence("u", "r", Level::High, 400),
        ],
    );
    assert_eq!(r[0].incident_id, r[1].incident_id);
    let i = store
        .with_conn(|c| incidents::get_incident(c, &r[0].incident_id))
        .unwrap()
        .incident;
    assert_eq!(i.first_seen, at(400).to_string());
    assert_eq!(i.last_seen, at(1000).to_string());
    assert_eq!(i.last_request_id, "req-u-r-1000");
}

#[test]
fn a_batch_commits_whole_or_not_at_all_and_invalid_items_are_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = IncidentStore::open(&path).unwrap();
    // A storage failure on the third new incident of a batch: nothing of the batch is kept.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER third_fails BEFORE INSERT ON incidents
         WHEN (SELECT COUNT(*) FROM incidents) >= 2
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let batch = [
        occurrence("a", "r1", Level::High, 0),
        occurrence("b", "r2", Level::High, 0),
        occurrence("c", "r3", Level::High, 0),
    ];
    assert!(matches!(
        store.record(&batch, HOUR),
        Err(IncidentError::Storage(_))
    ));
    assert!(all_incidents(&store).is_empty());
    let counts = store.with_conn(|c| incidents::counts(c, at(0))).unwrap();
    assert_eq!(counts.audit_pending, 0);
    conn.execute_batch("DROP TRIGGER third_fails").unwrap();

    // Invalid occurrences get their own error; the rest of the batch is recorded.
    let mut bad_rule = occurrence("a", "r1", Level::High, 0);
    bad_rule.rule = "bad\u{0}rule".into();
    let mut huge_summary = occurrence("a", "r1", Level::High, 0);
    huge_summary.summary = json!({"x": "y".repeat(incidents::MAX_SUMMARY_BYTES)});
    let mut bad_subject = occurrence("a", "r1", Level::High, 0);
    bad_subject.subject = Some("x".repeat(300));
    let mut empty_request = occurrence("a", "r1", Level::High, 0);
    empty_request.request_id = String::new();
    let results = store
        .record(
            &[
                bad_rule,
                occurrence("a", "r1", Level::High, 0),
                huge_summary,
                bad_subject,
                empty_request,
                occurrence("a", "r1", Level::High, 1),
            ],
            HOUR,
        )
        .unwrap();
    let invalid: Vec<bool> = results
        .iter()
        .map(|r| matches!(r, Err(IncidentError::Invalid(_))))
        .collect();
    assert_eq!(invalid, vec![true, false, true, true, true, false]);
    assert_eq!(all_incidents(&store).len(), 1);
    assert_eq!(all_incidents(&store)[0].count, 2);

    let too_many = vec![occurrence("a", "r1", Level::High, 0); incidents::MAX_BATCH + 1];
    assert!(matches!(
        store.record(&too_many, HOUR),
        Err(IncidentError::Invalid(_))
    ));
}

#[test]
fn concurrent_recorders_on_separate_connections_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let sinks = vec![webhook_sink("hook", "http://127.0.0.1:9/unused", None)];
    IncidentStore::open_with_sinks(&path, &sinks).unwrap();
    const THREADS: usize = 4;
    const EACH: usize = 60;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (path, sinks) = (path.clone(), sinks.clone());
            scope.spawn(move || {
                let store = IncidentStore::open_with_sinks(&path, &sinks).unwrap();
                for i in 0..EACH {
                    // Everyone hits one shared incident, and each thread one of its own.
                    let batch = [
                        occurrence("shared", "r", Level::High, i as i64),
                        occurrence(&format!("t{t}"), &format!("r{}", i % 3), Level::High, 0),
                    ];
                    record_ok(&store, &batch);
                }
            });
        }
    });
    let store = IncidentStore::open(&path).unwrap();
    let all = all_incidents(&store);
    let shared: Vec<_> = all
        .iter()
        .filter(|i| i.subject.as_deref() == Some("shared"))
        .collect();
    assert_eq!(shared.len(), 1, "one incident for one user and rule");
    assert_eq!(shared[0].count, (THREADS * EACH) as u64);
    assert_eq!(all.len(), 1 + THREADS * 3);
    let own: u64 = all
        .iter()
        .filter(|i| i.subject.as_deref() != Some("shared"))
        .map(|i| i.count)
        .sum();
    assert_eq!(own, (THREADS * EACH) as u64);
    // One opening event per incident, plus milestones: the shared one's at 10 and 100, and
    // each thread's own (20 occurrences each) at 10.
    let counts = store.with_conn(|c| incidents::counts(c, at(0))).unwrap();
    assert_eq!(counts.outbox_pending, (all.len() + 2 + THREADS * 3) as u64);
}

#[test]
fn reviewers_move_incidents_through_their_states_and_impossible_moves_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = IncidentStore::open(&db(&dir)).unwrap();
    let id = record_ok(&store, &[occurrence("alice", "r", Level::High, 0)])[0]
        .incident_id
        .clone();
    store
        .with_conn(|c| {
            let (i, entries) = incidents::assign(c, &id, Some("sam"), REVIEWER, at(10))?;
            assert_eq!(i.assignee.as_deref(), Some("sam"));
            assert_eq!(entries.len(), 1);
            assert!(!entries[0].subject.as_deref().unwrap().contains("sam"));

            let (i, entries) = incidents::acknowledge(c, &id, REVIEWER, at(20))?;
            assert_eq!(i.status, IncidentStatus::Acknowledged);
            assert_eq!(i.acknowledged_by.as_deref(), Some("rita"));
            assert_eq!(i.acknowledged_at, Some(at(20).to_string()));
            assert_eq!(entries[0].actor, REVIEWER.actor);
            assert_eq!(
                entries[0].subject.as_deref(),
                Some(format!("incident {id} acknowledged").as_str())
            );
            assert!(matches!(
                incidents::acknowledge(c, &id, REVIEWER, at(21)),
                Err(IncidentError::Conflict(_))
            ));

            let (_, entries) =
                incidents::comment(c, &id, "looks real\nsecond line", REVIEWER, at(30))?;
            assert!(entries[0].digests.contains_key("comment"));
            assert!(matches!(
                incidents::comment(c, &id, "  ", REVIEWER, at(30)),
                Err(IncidentError::Invalid(_))
            ));

            let (i, _) = incidents::resolve(c, &id, Some("blocked the key"), REVIEWER, at(40))?;
            assert_eq!(i.status, IncidentStatus::Resolved);
            assert_eq!(i.resolution.as_deref(), Some("blocked the key"));
            for refused in [
                incidents::resolve(c, &id, None, REVIEWER, at(41)).map(|_| ()),
                incidents::acknowledge(c, &id, REVIEWER, at(41)).map(|_| ()),
                incidents::assign(c, &id, None, REVIEWER, at(41)).map(|_| ()),
            ] {
                assert!(
                    matches!(refused, Err(IncidentError::Conflict(_))),
                    "{refused:?}"
                );
            }
            // Comments stay possible on a closed incident.
            incidents::comment(c, &id, "post-mortem done", REVIEWER, at(50))?;
            let detail = incidents::get_incident(c, &id)?;
            assert_eq!(detail.comments.len(), 2);
            assert_eq!(detail.comments[0].body, "looks real\nsecond line");

            // open -> resolved directly is allowed.
            Ok(())
        })
        .unwrap();
    let other = record_ok(&store, &[occurrence("bob", "r", Level::High, 0)])[0]
        .incident_id
        .clone();
    store
        .with_conn(|c| incidents::resolve(c, &other, None, REVIEWER, at(5)))
        .unwrap();

    // Unknown and malformed ids, bad reviewers and bad notes.
    store
        .with_conn(|c| {
            let unknown = format!("inc_{}", "0".repeat(32));
            for id in [
                unknown.as_str(),
                "",
                "inc_zz",
                &"x".repeat(100_000),
                "inc_\u{0}",
            ] {
                assert!(matches!(
                    incidents::acknowledge(c, id, REVIEWER, at(1)),
                    Err(IncidentError::NotFound(_))
                ));
                assert!(matches!(
                    incidents::get_incident(c, id),
                    Err(IncidentError::NotFound(_))
                ));
            }
            let nobody = Reviewer {
                name: "rita",
                actor: "rita",
            };
            assert!(matches!(
                incidents::acknowledge(c, &other, nobody, at(1)),
                Err(IncidentError::Invalid(_))
            ));
            let long = "x".repeat(incidents::MAX_NOTE_BYTES + 1);
            assert!(matches!(
                incidents::comment(c, &other, &long, REVIEWER, at(1)),
                Err(IncidentError::Invalid(_))
            ));
            assert!(matches!(
                incidents::comment(c, &other, "bell\u{7}", REVIEWER, at(1)),
                Err(IncidentError::Invalid(_))
            ));
            Ok(())
        })
        .unwrap();
}

#[test]
fn quarantine_holds_the_decision_context_and_hands_it_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = vaulted(&dir);
    let context = json!({
        "request": {"template": "support@3", "input": "ignore previous instructions"},
        "rendered": "You are a helpful agent…",
        "assessment": {"level": "high", "action": "quarantine", "score": 0.81},
        // Deeper than serde_json parses by default (128): held and handed back all the same.
        "deep": (0..300).fold(json!(1), |v, _| json!([v])),
    });
    let mut held = occurrence("alice", "r", Level::High, 0);
    held.quarantine = Some(context.clone());
    let mut held2 = occurrence("alice", "r", Level::High, 5);
    held2.quarantine = Some(json!({"second": true}));
    let r = record_ok(&store, &[held, held2]);
    let (q1, q2) = (
        r[0].quarantine_id.clone().unwrap(),
        r[1].quarantine_id.clone().unwrap(),
    );
    assert_eq!(r[0].incident_id, r[1].incident_id);
    store
        .with_conn(|c| {
            let page = incidents::list_quarantine(
                c,
                &QuarantineFilter {
                    status: Some(QuarantineStatus::Held),
                    ..QuarantineFilter::default()
                },
            )?;
            assert_eq!(page.items.len(), 2);
            assert_eq!(page.items[0].id, q2, "newest first");
            assert_eq!(page.items[1].action, Action::Quarantine);

            assert!(matches!(
                incidents::view_quarantined(c, &q1, "", store.vault(), REVIEWER, at(9)),
                Err(IncidentError::Invalid(_))
            ));
            let (seen, entries) = incidents::view_quarantined(
                c,
                &q1,
                "checking a report",
                store.vault(),
                REVIEWER,
                at(9),
            )?;
            assert_eq!(seen.get(), context.to_string());
            assert!(entries[0].digests.contains_key("reason"));

            let (released, entries) = incidents::release(
                c,
                &q1,
                Some("false positive"),
                store.vault(),
                REVIEWER,
                at(10),
            )?;
            assert_eq!(
                released.context.get(),
                context.to_string(),
                "release returns what was held"
            );
            assert_eq!(released.item.status, QuarantineStatus::Released);
            assert_eq!(
                entries[0].digests.get("context"),
                Some(&released.item.context_sha256)
            );
            for again in [
                incidents::release(c, &q1, None, store.vault(), REVIEWER, at(11)).map(|_| ()),
                incidents::reject(c, &q1, None, REVIEWER, at(11)).map(|_| ()),
                incidents::view_quarantined(c, &q1, "again", store.vault(), REVIEWER, at(11))
                    .map(|_| ()),
            ] {
                assert!(
                    matches!(again, Err(IncidentError::Conflict(_))),
                    "{again:?}"
                );
            }
            let (rejected, _) = incidents::reject(c, &q2, Some("attack"), REVIEWER, at(12))?;
            assert_eq!(rejected.status, QuarantineStatus::Rejected);
            assert!(matches!(
                incidents::release(c, &q2, None, store.vault(), REVIEWER, at(13)),
                Err(IncidentError::Conflict(_))
            ));
            assert!(matches!(
                incidents::release(
                    c,
                    &format!("qtn_{}", "a".repeat(32)),
                    None,
                    None,
                    REVIEWER,
                    at(13)
                ),
                Err(IncidentError::NotFound(_))
            ));
            let detail = incidents::get_incident(c, &r[0].incident_id)?;
            assert_eq!(detail.quarantine.len(), 2);
            // Decided items keep no content.
            let left: i64 = c.query_row(
                "SELECT COUNT(*) FROM incident_quarantine WHERE context IS NOT NULL",
                [],
                |row| row.get(0),
            )?;
            assert_eq!(left, 0);
            Ok(())
        })
        .unwrap();
}

#[test]
fn automatic_changes_become_valid_audit_entries_once_and_name_no_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = vaulted(&dir);
    let mut held = occurrence("alice@example.com", "r", Level::Critical, 0);
    held.quarantine = Some(json!({"x": 1}));
    let refusal = Occurrence {
        kind: OccurrenceKind::TemplateRefusal {
            code: "signature_invalid".into(),
        },
        rule: "signature_invalid".into(),
        ..occurrence("alice@example.com", "ignored", Level::High, 0)
    };
    record_ok(
        &store,
        &[
            held,
            occurrence("alice@example.com", "r", Level::Critical, 1),
            occurrence("alice@example.com", "r", Level::Critical, 2),
            refusal,
        ],
    );
    let mut log = AuditLog::open(&path).unwrap();
    let entries = store
        .with_conn(|c| {
            let tx = c.transaction()?;
            let entries = incidents::pending_audit(&tx, at(100), 1000)?;
            tx.commit()?;
            Ok(entries)
        })
        .unwrap();
    // Opened, updated (two updates coalesced), held, refused, incident opened by the refusal.
    let subjects: Vec<String> = entries.iter().map(|e| e.subject.clone().unwrap()).collect();
    assert_eq!(entries.len(), 5, "{subjects:?}");
    assert!(subjects
        .iter()
        .any(|s| s.ends_with("updated: count 3, level critical")));
    assert!(subjects.iter().any(|s| s.starts_with("quarantine qtn_")));
    assert!(subjects.iter().any(|s| s.starts_with("template refused")));
    for e in &entries {
        assert_eq!(e.actor, "role:system");
        assert_eq!(e.time, at(100).to_string());
        let s = e.subject.as_deref().unwrap();
        assert!(!s.contains("alice"), "{s}");
    }
    // Entries the log accepts.
    log.append_batch(entries).unwrap();
    let again = store
        .with_conn(|c| incidents::pending_audit(c, at(101), 1000))
        .unwrap();
    assert!(again.is_empty(), "taken entries are not given twice");
}

#[test]
fn listings_filter_page_and_refuse_hostile_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = IncidentStore::open(&db(&dir)).unwrap();
    let mut batch = Vec::new();
    for i in 0..25 {
        let mut o = occurrence(&format!("u{i}"), &format!("rule{}", i % 2), Level::High, i);
        if i % 5 == 0 {
            o.level = Level::Critical;
        }
        o.tenant = Some(if i < 10 { "acme" } else { "globex" }.into());
        batch.push(o);
    }
    record_ok(&store, &batch);
    store
        .with_conn(|c| {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = incidents::list_incidents(
                    c,
                    &IncidentFilter {
                        limit: Some(7),
                        cursor: cursor.clone(),
                        ..IncidentFilter::default()
                    },
                )?;
                seen.extend(page.items.into_iter().map(|i| i.id));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 25);
            assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 25);

            let filter =
                |f: IncidentFilter| incidents::list_incidents(c, &f).map(|p| p.items.len());
            assert_eq!(
                filter(IncidentFilter {
                    level: Some(Level::Critical),
                    ..Default::default()
                })?,
                5
            );
            assert_eq!(
                filter(IncidentFilter {
                    min_level: Some(Level::High),
                    ..Default::default()
                })?,
                25
            );
            assert_eq!(
                filter(IncidentFilter {
                    tenant: Some("acme".into()),
                    ..Default::default()
                })?,
                10
            );
            assert_eq!(
                filter(IncidentFilter {
                    rule: Some("rule1".into()),
                    ..Default::default()
                })?,
                12
            );
            assert_eq!(
                filter(IncidentFilter {
                    subject: Some("u3".into()),
                    ..Default::default()
                })?,
                1
            );
            assert_eq!(
                filter(IncidentFilter {
                    since: Some(at(20).to_string()),
                    ..Default::default()
                })?,
                5
            );
            assert_eq!(
                filter(IncidentFilter {
                    status: Some(IncidentStatus::Resolved),
                    ..Default::default()
                })?,
                0
            );
            for hostile in [
                IncidentFilter {
                    limit: Some(0),
                    ..Default::default()
                },
                IncidentFilter {
                    limit: Some(u32::MAX),
                    ..Default::default()
                },
                IncidentFilter {
                    cursor: Some("-1".into()),
                    ..Default::default()
                },
                IncidentFilter {
                    cursor: Some("9".repeat(40)),
                    ..Default::default()
                },
                IncidentFilter {
                    cursor: Some("1 OR 1=1".into()),
                    ..Default::default()
                },
                IncidentFilter {
                    since: Some("yesterday".into()),
                    ..Default::default()
                },
                IncidentFilter {
                    tenant: Some("x".repeat(1 << 20)),
                    ..Default::default()
                },
                IncidentFilter {
                    subject: Some("a\nb".into()),
                    ..Default::default()
                },
                IncidentFilter {
                    rule: Some(String::new()),
                    ..Default::default()
                },
            ] {
                assert!(
                    matches!(
                        incidents::list_incidents(c, &hostile),
                        Err(IncidentError::Invalid(_))
                    ),
                    "{hostile:?}"
                );
            }
            assert!(matches!(
                incidents::list_quarantine(
                    c,
                    &QuarantineFilter {
                        incident_id: Some("nope".into()),
                        ..Default::default()
                    }
                ),
                Err(IncidentError::Invalid(_))
            ));
            Ok(())
        })
        .unwrap();
    // Filters arrive as query strings or JSON: unknown fields and wrong types are refused.
    assert!(
        serde_json::from_value::<IncidentFilter>(json!({"status": "open", "limit": 3})).is_ok()
    );
    assert!(serde_json::from_value::<IncidentFilter>(json!({"status": "closed"})).is_err());
    assert!(serde_json::from_value::<IncidentFilter>(json!({"level": 3})).is_err());
    assert!(serde_json::from_value::<IncidentFilter>(json!({"drop": "table"})).is_err());
}

fn webhook_sink(name: &str, url: &str, secret: Option<&str>) -> Sink {
    Sink::Webhook {
        name: Some(name.into()),
        url: Secret::new(url),
        secret: secret.map(Secret::new),
    }
}

#[test]
fn sinks_are_configuration_that_never_shows_its_secrets() {
    let config: EscalationConfig = serde_json::from_value(json!({
        "sinks": [
            {"type": "webhook", "url": "https://hooks.example/sigil", "secret": "s3cret-s3cret-s3cret"},
            {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/XYZSECRET"},
            {"type": "pagerduty", "name": "oncall", "routing_key": "R0UT1NGKEY"},
        ],
        "retry": {"base_ms": 500, "max_age_secs": 600}
    }))
    .unwrap();
    config.check().unwrap();
    assert_eq!(config.retry.base_ms, 500);
    assert_eq!(config.retry.cap_ms, RetryPolicy::default().cap_ms);
    let shown = format!("{config:?}");
    for secret in ["s3cret", "XYZSECRET", "R0UT1NGKEY", "hooks.example"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let names: Vec<&str> = config.sinks.iter().map(Sink::name).collect();
    assert_eq!(names, vec!["webhook", "slack", "oncall"]);

    for bad in [
        json!({"sinks": [{"type": "email", "url": "x"}]}),
        json!({"sinks": [{"type": "webhook", "url": "https://a", "extra": 1}]}),
        json!({"retry": {"base_ms": "fast"}}),
        json!({"unknown": true}),
    ] {
        assert!(
            serde_json::from_value::<EscalationConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    for bad in [
        vec![
            webhook_sink("a", "https://x", None),
            webhook_sink("a", "https://y", None),
        ],
        vec![webhook_sink("a", "ftp://x", None)],
        vec![webhook_sink("a", "not a url", None)],
        vec![webhook_sink("Bad Name", "https://x", None)],
        vec![webhook_sink("a", "https://x", Some("short"))],
        vec![Sink::PagerDuty {
            name: None,
            url: None,
            routing_key: Secret::new(""),
        }],
    ] {
        assert!(
            matches!(
                EscalationConfig {
                    sinks: bad.clone(),
                    ..Default::default()
                }
                .check(),
                Err(IncidentError::Config(_))
            ),
            "{bad:?}"
        );
    }
    let zero = RetryPolicy {
        base_ms: 0,
        ..RetryPolicy::default()
    };
    assert!(EscalationConfig {
        sinks: vec![],
        retry: zero
    }
    .check()
    .is_err());
    // Backoff stays within its ceiling and cap.
    let policy = RetryPolicy {
        base_ms: 100,
        cap_ms: 1000,
        ..RetryPolicy::default()
    };
    for attempt in 1..100 {
        let wait = policy.backoff_ms(attempt);
        assert!(
            wait <= (100u64 << (attempt - 1).min(20)).min(1000),
            "{attempt}: {wait}"
        );
    }
}

/// One request a receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    event_id: String,
    idempotency_key: String,
    timestamp: Option<String>,
    signature: Option<String>,
    raw: Vec<u8>,
    body: Value,
    arrived: std::time::Instant,
}

/// A real HTTP receiver on 127.0.0.1: it records every request as it arrives, fails the first
/// `fail_first` with 500, holds the next `hang_next` past the client's timeout, and answers 200
/// after that; with `hang_all` it holds every request.
#[derive(Default)]
struct Behaviour {
    fail_first: AtomicU64,
    hang_next: AtomicU64,
    hang_all: AtomicBool,
    /// Requests answered 429 with `Retry-After: 1` before anything else.
    throttle_first: AtomicU64,
    served: AtomicU64,
    status: AtomicU64,
}

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// (path, event id) of requests answered 2xx in time.
    accepted: Arc<Mutex<BTreeSet<(String, String)>>>,
    behaviour: Arc<Behaviour>,
}

struct Receiver {
    addr: SocketAddr,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        event_id: header("x-sigil-event-id").unwrap_or_default(),
        idempotency_key: header("idempotency-key").unwrap_or_default(),
        timestamp: header("x-sigil-timestamp"),
        signature: header("x-sigil-signature"),
        raw: body.to_vec(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        arrived: std::time::Instant::now(),
    });
    let b = &state.behaviour;
    if b.hang_all.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let n = b.served.fetch_add(1, Ordering::SeqCst);
    let throttle = b.throttle_first.load(Ordering::SeqCst);
    if n < throttle {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    let n = n - throttle;
    let fail = b.fail_first.load(Ordering::SeqCst);
    if n < fail {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if n < fail + b.hang_next.load(Ordering::SeqCst) {
        // Past the client's timeout: whatever comes after is not heard.
        tokio::time::sleep(Duration::from_secs(5)).await;
        return StatusCode::OK.into_response();
    }
    let status =
        StatusCode::from_u16(b.status.load(Ordering::SeqCst) as u16).unwrap_or(StatusCode::OK);
    if status.is_success() {
        state.accepted.lock().unwrap().insert((
            uri.path().to_string(),
            header("x-sigil-event-id").unwrap_or_default(),
        ));
    }
    status.into_response()
}

async fn receiver(fail_first: u64, hang_next: u64) -> Receiver {
    let state = ReceiverState {
        seen: Arc::default(),
        accepted: Arc::default(),
        behaviour: Arc::new(Behaviour {
            fail_first: AtomicU64::new(fail_first),
            hang_next: AtomicU64::new(hang_next),
            status: AtomicU64::new(200),
            ..Behaviour::default()
        }),
    };
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { addr, state, task }
}

impl Receiver {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The ids a sink's path answered 2xx for.
    fn accepted(&self, path: &str) -> BTreeSet<String> {
        self.state
            .accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base_ms: 20,
        cap_ms: 200,
        max_age_secs: 3600,
        attempt_timeout_ms: 300,
        lease_ms: 0,
        concurrency: 4,
        poll_ms: 50,
        keep_delivered_secs: 3600,
    }
}

/// Waits (without a time limit a loaded machine could miss; the bound only stops a hang) until
/// `done` holds.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

fn outbox_counts(path: &Path) -> incidents::Counts {
    IncidentStore::open(path)
        .unwrap()
        .with_conn(|c| incidents::counts(c, at(0)))
        .unwrap()
}

fn distinct_ids(seen: &[Seen], path: &str) -> BTreeSet<String> {
    seen.iter()
        .filter(|s| s.path == path)
        .map(|s| s.event_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_receiver_that_fails_times_out_and_recovers() {
    // Six 500s, then three answers held past the 300 ms attempt timeout, then 200s.
    let rx = receiver(6, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let secret = "a-signing-secret-of-some-length";
    let config = EscalationConfig {
        sinks: vec![
            webhook_sink("hook", &rx.url("/hook"), Some(secret)),
            Sink::Slack {
                name: None,
                url: Secret::new(rx.url("/slack")),
            },
            Sink::PagerDuty {
                name: None,
                url: Some(Secret::new(rx.url("/pd"))),
                routing_key: Secret::new("routing-key-1"),
            },
        ],
        retry: fast_retry(),
    };
    let store = Arc::new(IncidentStore::open_with_sinks(&path, &config.sinks).unwrap());
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    let mut events = BTreeSet::new();
    for i in 0..8 {
        let mut o = occurrence("alice", &format!("rule.{i}"), Level::High, i);
        o.tenant = Some("acme".into());
        let store = store.clone();
        let r = tokio::task::spawn_blocking(move || record_ok(&store, &[o]))
            .await
            .unwrap();
        events.extend(r[0].events.iter().cloned());
    }
    // One more that raises an incident to critical: a second event for it.
    let store2 = store.clone();
    let raised = tokio::task::spawn_blocking(move || {
        let mut o = occurrence("alice", "rule.0", Level::Critical, 100);
        o.tenant = Some("acme".into());
        record_ok(&store2, &[o])
    })
    .await
    .unwrap();
    assert!(raised[0].level_raised);
    events.extend(raised[0].events.iter().cloned());
    assert_eq!(events.len(), 9);

    wait_for("every row delivered", || {
        let c = outbox_counts(&path);
        c.outbox_pending == 0 && c.outbox_delivered == 27
    })
    .await;
    let report = worker.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.delivered, 27);
    assert_eq!(report.dead, 0);
    assert_eq!(report.pending, 0);
    assert!(report.retried >= 9, "{report:?}");

    let seen = rx.seen();
    for sink_path in ["/hook", "/slack", "/pd"] {
        assert_eq!(distinct_ids(&seen, sink_path), events, "{sink_path}");
        assert_eq!(
            rx.accepted(sink_path),
            events,
            "{sink_path}: each event accepted"
        );
    }
    // Retries carry the same id: some ids came more than once, always with matching headers.
    assert!(seen.len() > 27, "{} requests", seen.len());
    let mut per_id: BTreeMap<(String, String), Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        assert_eq!(s.event_id, s.idempotency_key);
        per_id
            .entry((s.path.clone(), s.event_id.clone()))
            .or_default()
            .push(s);
    }
    for ((path, id), attempts) in &per_id {
        let first = &attempts[0].body;
        for a in attempts {
            assert_eq!(
                &a.body, first,
                "{path} {id}: every attempt sends the same event"
            );
        }
    }
    // Generic webhook: the event, signed over timestamp and body.
    for s in seen.iter().filter(|s| s.path == "/hook") {
        assert_eq!(s.body["event_id"], json!(s.event_id));
        assert_eq!(s.body["product"], json!("sigil"));
        let ts = s.timestamp.as_deref().unwrap();
        let mac = {
            use aws_lc_rs::hmac;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let mut signed = format!("{ts}.").into_bytes();
            signed.extend_from_slice(&s.raw);
            hex(hmac::sign(&key, &signed).as_ref())
        };
        assert_eq!(s.signature.as_deref(), Some(format!("v1={mac}").as_str()));
        assert!(
            s.body["incident"].get("subject").is_none(),
            "no user in events"
        );
    }
    // Slack, field by field.
    let slack = seen
        .iter()
        .find(|s| s.path == "/slack" && s.body["text"].as_str().unwrap().contains("escalated"))
        .unwrap();
    let text = slack.body["text"].as_str().unwrap();
    assert!(
        text.contains(&raised[0].incident_id) && text.contains("critical"),
        "{text}"
    );
    assert!(
        text.contains("rule.0") && text.contains("2 occurrences"),
        "{text}"
    );
    let blocks = slack.body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], json!("header"));
    assert_eq!(blocks[0]["text"]["type"], json!("plain_text"));
    assert_eq!(blocks[1]["type"], json!("section"));
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["type"], json!("mrkdwn"));
            f["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(fields[0], format!("*Incident*\n{}", raised[0].incident_id));
    assert_eq!(fields[1], "*Level*\ncritical");
    assert_eq!(fields[2], "*Rule*\nrule.0");
    assert_eq!(fields[3], "*Occurrences*\n2");
    assert_eq!(fields[4], "*Tenant*\nacme");
    assert_eq!(blocks[2]["type"], json!("context"));
    assert!(blocks[2]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains(&slack.event_id));
    assert!(slack.body["text"].as_str().unwrap().len() < 3000);
    assert!(!serde_json::to_string(&slack.body)
        .unwrap()
        .contains("alice"));
    // PagerDuty Events v2, field by field.
    let pd = seen
        .iter()
        .find(|s| s.path == "/pd" && s.body["payload"]["severity"] == json!("critical"))
        .unwrap();
    let keys: BTreeSet<&str> = pd
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["routing_key", "event_action", "dedup_key", "payload"])
    );
    assert_eq!(pd.body["routing_key"], json!("routing-key-1"));
    assert_eq!(pd.body["event_action"], json!("trigger"));
    assert_eq!(pd.body["dedup_key"], json!(raised[0].incident_id));
    let payload = &pd.body["payload"];
    assert!(payload["summary"]
        .as_str()
        .unwrap()
        .contains("escalated to critical"));
    assert!(payload["summary"].as_str().unwrap().len() <= 1024);
    assert_eq!(payload["source"], json!("sigil"));
    assert_eq!(payload["timestamp"], json!(at(100).to_string()));
    assert_eq!(payload["class"], json!("rule.0"));
    assert_eq!(payload["custom_details"]["event_id"], json!(pd.event_id));
    assert_eq!(payload["custom_details"]["incident"]["count"], json!(2));
    let high = seen
        .iter()
        .find(|s| s.path == "/pd" && s.body["payload"]["severity"] != json!("critical"))
        .unwrap();
    assert_eq!(
        high.body["payload"]["severity"],
        json!("error"),
        "high maps to error"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_leaves_nothing_undelivered_and_ids_do_not_change() {
    let rx = receiver(0, 0).await;
    rx.state.behaviour.hang_all.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Attempts outlast the moment the worker is killed, so it dies holding their leases.
    let config = EscalationConfig {
        sinks: vec![webhook_sink("hook", &rx.url("/hook"), None)],
        retry: RetryPolicy {
            attempt_timeout_ms: 1000,
            ..fast_retry()
        },
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let batch: Vec<_> = (0..6)
        .map(|i| occurrence("u", &format!("r{i}"), Level::Critical, i))
        .collect();
    let events: BTreeSet<String> = record_ok(&store, &batch)
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    assert_eq!(events.len(), 6);

    // The first worker sends into a receiver that never answers, and dies holding leases.
    let first = DeliveryWorker::start(&store, &config).unwrap();
    wait_for("the first attempts", || rx.seen().len() >= 4).await;
    first.abort();
    drop(store);
    let leased: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM incident_outbox WHERE lease_owner IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(leased >= 1, "the crash left leases behind");

    // The receiver recovers; a new process (store and worker) delivers everything.
    rx.state.behaviour.hang_all.store(false, Ordering::SeqCst);
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let second = DeliveryWorker::start(&store, &config).unwrap();
    wait_for("every row delivered after the restart", || {
        outbox_counts(&path).outbox_delivered == 6
    })
    .await;
    let report = second.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.pending, 0);
    let seen = rx.seen();
    assert_eq!(distinct_ids(&seen, "/hook"), events);
    assert_eq!(rx.accepted("/hook"), events);
    let repeated = events
        .iter()
        .filter(|id| seen.iter().filter(|s| &&s.event_id == id).count() >= 2)
        .count();
    assert!(
        repeated >= 1,
        "ids the dead worker sent came again, unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_what_is_due_and_leaves_the_rest_for_the_next_worker() {
    let rx = receiver(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let config = EscalationConfig {
        sinks: vec![webhook_sink("hook", &rx.url("/hook"), None)],
        retry: fast_retry(),
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    record_ok(
        &store,
        &(0..5)
            .map(|i| occurrence("u", &format!("r{i}"), Level::High, i))
            .collect::<Vec<_>>(),
    );
    let report = worker.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(distinct_ids(&rx.seen(), "/hook").len(), 5);

    // With the receiver holding every request, a short flush gives up, keeps every row and
    // gives back its leases, so the next worker sends them at once.
    rx.state.behaviour.hang_all.store(true, Ordering::SeqCst);
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    record_ok(
        &store,
        &(0..3)
            .map(|i| occurrence("v", &format!("r{i}"), Level::High, i))
            .collect::<Vec<_>>(),
    );
    let report = worker.flush(Duration::from_millis(200)).await.unwrap();
    assert_eq!(report.pending, 3, "{report:?}");
    let leased: i64 = store
        .with_conn(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM incident_outbox WHERE lease_owner IS NOT NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(leased, 0);
    rx.state.behaviour.hang_all.store(false, Ordering::SeqCst);
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    let report = worker.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
}

/// A receiver speaking raw HTTP: `endless` answers 200 with a body that never ends; otherwise
/// it reads the request and never answers nor closes.
async fn raw_receiver(endless: bool) -> (SocketAddr, tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let _ = socket.read(&mut buf).await;
                if endless {
                    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                } else {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    (addr, task, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_are_bounded_and_isolated_from_the_others() {
    let (endless, endless_task, _) = raw_receiver(true).await;
    let (silent, silent_task, silent_accepts) = raw_receiver(false).await;
    let refusing = receiver(0, 0).await;
    refusing.state.behaviour.status.store(400, Ordering::SeqCst);
    let good = receiver(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut retry = fast_retry();
    // The silent receiver's rows die after a few seconds of trying.
    retry.max_age_secs = 2;
    let config = EscalationConfig {
        sinks: vec![
            webhook_sink("endless", &format!("http://{endless}/"), None),
            webhook_sink("silent", &format!("http://{silent}/"), None),
            webhook_sink("refusing", &refusing.url("/"), None),
            webhook_sink("good", &good.url("/"), None),
        ],
        retry,
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    record_ok(
        &store,
        &(0..4)
            .map(|i| occurrence("u", &format!("r{i}"), Level::High, i))
            .collect::<Vec<_>>(),
    );
    // The good sink is not held up by the silent one.
    wait_for("the good sink's rows", || {
        distinct_ids(&good.seen(), "/").len() == 4
    })
    .await;
    wait_for("every row settled", || {
        let c = outbox_counts(&path);
        c.outbox_pending == 0
    })
    .await;
    let c = outbox_counts(&path);
    assert_eq!(
        c.outbox_delivered, 8,
        "the good and the endless sink: {c:?}"
    );
    assert_eq!(c.outbox_dead_by_sink.get("refusing"), Some(&4));
    assert_eq!(c.outbox_dead_by_sink.get("silent"), Some(&4));
    assert_eq!(c.outbox_dead, 8);
    // A 400 is permanent: one attempt per event.
    assert_eq!(refusing.seen().len(), 4);
    assert!(silent_accepts.load(Ordering::SeqCst) >= 1);
    let report = worker.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.pending, 0);
    // Dead rows stay visible with their reason.
    let reasons: Vec<String> = store
        .with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT last_error FROM incident_outbox WHERE state = 'dead' AND sink = 'silent'",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap();
    assert!(
        reasons.iter().all(|r| r.contains("no answer within")),
        "{reasons:?}"
    );
    endless_task.abort();
    silent_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_sink_no_longer_configured_are_marked_dead_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let old = vec![webhook_sink("old", "http://127.0.0.1:9/", None)];
    let store = IncidentStore::open_with_sinks(&path, &old).unwrap();
    record_ok(&store, &[occurrence("u", "r", Level::High, 0)]);
    let rx = receiver(0, 0).await;
    let config = EscalationConfig {
        sinks: vec![webhook_sink("new", &rx.url("/"), None)],
        retry: fast_retry(),
    };
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    let c = outbox_counts(&path);
    assert_eq!(c.outbox_dead_by_sink.get("old"), Some(&1));
    assert_eq!(c.outbox_pending, 0);
    worker.flush(Duration::from_secs(1)).await.unwrap();
    // Starting outside a runtime is an error, not a panic.
    let outside = std::thread::spawn(move || DeliveryWorker::start(&store, &config).map(|_| ()))
        .join()
        .unwrap();
    assert!(matches!(outside, Err(IncidentError::Worker(_))));
}

#[test]
fn the_siem_export_writes_ocsf_style_lines_for_incidents_and_detections() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = IncidentStore::open(&path).unwrap();
    let r = record_ok(
        &store,
        &[
            occurrence("alice", "inj.ignore", Level::Critical, 0),
            occurrence("alice", "inj.ignore", Level::Critical, 10),
            occurrence("bob", "exfil.url", Level::High, 20),
        ],
    );
    store
        .with_conn(|c| incidents::resolve(c, &r[2].incident_id, None, REVIEWER, at(30)))
        .unwrap();
    let behaviour = SqliteStore::open(&path).unwrap();
    let key = ProfileKey::new(Some("acme"), "carol").unwrap();
    behaviour
        .update(&key, at(40), &mut |_| {
            Ok(Update {
                profile: "{}".into(),
                detection: Some(Detection {
                    level: Level::Medium,
                    action: Action::Warn,
                    score: 0.55,
                    findings: vec![DetectedFinding {
                        id: "jb.roleplay".into(),
                        category: "jailbreak".into(),
                    }],
                    digests: vec![SegmentDigest {
                        segment: 0,
                        sha256: "0".repeat(64),
                    }],
                    excerpt: None,
                }),
            })
        })
        .unwrap();

    let mut out = Vec::new();
    let counts = store
        .with_conn(|c| incidents::export_jsonl(c, Some(&behaviour), None, &mut out))
        .unwrap();
    assert_eq!((counts.incidents, counts.detections), (2, 1));
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["class_uid"], json!(2004));
        assert_eq!(line["class_name"], json!("Detection Finding"));
        assert_eq!(line["category_uid"], json!(2));
        assert_eq!(line["metadata"]["product"]["name"], json!("Sigil"));
        assert_eq!(line["metadata"]["version"], json!(incidents::OCSF_VERSION));
        assert!(
            line["time"].as_i64().unwrap() > 1_700_000_000_000,
            "time is in ms"
        );
        assert_eq!(
            line["type_uid"].as_i64().unwrap(),
            200_400 + line["activity_id"].as_i64().unwrap()
        );
    }
    let alice = &lines[0];
    assert_eq!(alice["finding_info"]["uid"], json!(r[0].incident_id));
    assert_eq!(alice["severity_id"], json!(5));
    assert_eq!(alice["severity"], json!("Critical"));
    assert_eq!(alice["count"], json!(2));
    assert_eq!(alice["actor"]["user"]["uid"], json!("alice"));
    assert_eq!(alice["status"], json!("New"));
    assert_eq!(
        alice["finding_info"]["first_seen_time"],
        json!(at(0).unix_seconds() * 1000)
    );
    assert_eq!(
        alice["finding_info"]["types"],
        json!(["assessment", "inj.ignore"])
    );
    let bob = &lines[1];
    assert_eq!(bob["severity_id"], json!(4));
    assert_eq!(bob["activity_name"], json!("Close"));
    assert_eq!(bob["status_id"], json!(4));
    let carol = &lines[2];
    assert_eq!(carol["severity_id"], json!(3));
    assert_eq!(carol["actor"]["user"]["uid"], json!("carol"));
    assert_eq!(carol["actor"]["user"]["org"]["uid"], json!("acme"));
    assert_eq!(carol["finding_info"]["types"], json!(["jailbreak"]));
    assert_eq!(
        carol["finding_info"]["analytic"]["uid"],
        json!("jb.roleplay")
    );
    assert_eq!(carol["time"], json!(at(40).unix_seconds() * 1000));

    // `since` keeps only what changed from then on.
    let mut out = Vec::new();
    let counts = store
        .with_conn(|c| incidents::export_jsonl(c, Some(&behaviour), Some(at(25)), &mut out))
        .unwrap();
    assert_eq!((counts.incidents, counts.detections), (1, 1));
    // A closed reader is an error, not a panic.
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    assert!(matches!(
        store.with_conn(|c| incidents::export_jsonl(c, None, None, &mut Closed)),
        Err(IncidentError::Write(_))
    ));
}

#[test]
fn a_database_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    IncidentStore::open(&path).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE incident_meta SET value = '99' WHERE name = 'schema'",
            [],
        )
        .unwrap();
    assert!(matches!(
        IncidentStore::open(&path),
        Err(IncidentError::Schema(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sinks_speak_tls_and_send_nothing_to_a_server_that_does_not() {
    // The system's root certificates load (the worker starts with an https sink), and an
    // https URL to a plain-HTTP server fails the handshake: retried, never sent in clear.
    let plain = receiver(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let config = EscalationConfig {
        sinks: vec![webhook_sink(
            "tls",
            &format!("https://{}/hook", plain.addr),
            None,
        )],
        retry: RetryPolicy {
            max_age_secs: 1,
            ..fast_retry()
        },
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    record_ok(&store, &[occurrence("u", "r", Level::High, 0)]);
    wait_for("the row to be given up", || {
        outbox_counts(&path).outbox_pending == 0
    })
    .await;
    let c = outbox_counts(&path);
    assert_eq!((c.outbox_delivered, c.outbox_dead), (0, 1));
    assert!(
        plain.seen().is_empty(),
        "no request reached the plain server"
    );
    let error: String = store
        .with_conn(|conn| {
            Ok(conn.query_row("SELECT last_error FROM incident_outbox", [], |r| r.get(0))?)
        })
        .unwrap();
    assert!(error.starts_with("cannot connect"), "{error}");
    worker.flush(Duration::from_secs(1)).await.unwrap();
}

#[test]
fn erasing_a_user_leaves_incidents_that_no_longer_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = vaulted(&dir);
    let mut held = occurrence("alice", "r", Level::High, 0);
    held.quarantine = Some(json!({"input": "alice's words"}));
    let mut released = occurrence("alice", "r2", Level::High, 0);
    released.quarantine = Some(json!({"input": "more"}));
    let r = record_ok(
        &store,
        &[held, released, occurrence("bob", "r", Level::High, 0)],
    );
    store
        .with_conn(|c| {
            incidents::release(
                c,
                r[1].quarantine_id.as_deref().unwrap(),
                None,
                store.vault(),
                REVIEWER,
                at(1),
            )?;
            let erased = incidents::erase_subject_in(c, "alice", None, at(2))?;
            assert_eq!((erased.incidents, erased.quarantined), (2, 2));
            let left: i64 = c.query_row(
                "SELECT (SELECT COUNT(*) FROM incidents WHERE subject = 'alice')
                      + (SELECT COUNT(*) FROM incident_quarantine
                         WHERE subject = 'alice' OR context IS NOT NULL)",
                [],
                |row| row.get(0),
            )?;
            assert_eq!(left, 0);
            let item = incidents::list_quarantine(c, &QuarantineFilter::default())?
                .items
                .into_iter()
                .find(|i| Some(&i.id) == r[0].quarantine_id.as_ref())
                .unwrap();
            assert_eq!(item.status, QuarantineStatus::Rejected);
            assert!(item.subject.is_none());
            Ok(())
        })
        .unwrap();
    assert_eq!(all_incidents(&store).len(), 3, "incidents are kept");
}

#[test]
fn the_cli_lists_and_exports_incidents_for_the_roles_allowed() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data_s = data.to_str().unwrap().to_string();
    let sigil = |token: Option<&Path>, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sigil"));
        c.args(args)
            .args(["--data-dir", &data_s])
            .env_remove("SIGIL_TOKEN");
        if let Some(t) = token {
            c.arg("--token-file").arg(t);
        }
        c.output().unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let init = sigil(None, &["init"]);
    assert!(init.status.success(), "{}", text(&init));
    let admin = data.join("admin.token");
    let add = sigil(
        Some(&admin),
        &["identity", "add", "sam", "--role", "scanner"],
    );
    assert!(add.status.success(), "{}", text(&add));

    let store = IncidentStore::open(&data.join("sigil.db")).unwrap();
    record_ok(
        &store,
        &[
            occurrence("alice", "inj.ignore", Level::Critical, 0),
            occurrence("bob", "exfil.url", Level::High, 5),
        ],
    );

    let list = sigil(
        Some(&admin),
        &["incidents", "list", "--min-level", "critical"],
    );
    assert!(list.status.success(), "{}", text(&list));
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(
        out.contains("inj.ignore") && !out.contains("exfil.url"),
        "{out}"
    );
    let json_list = sigil(
        Some(&admin),
        &["incidents", "list", "--json", "--limit", "1"],
    );
    let page: Value = serde_json::from_slice(&json_list.stdout).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());

    let file = dir.path().join("siem.jsonl");
    let export = sigil(
        Some(&admin),
        &["incidents", "export", "--out", file.to_str().unwrap()],
    );
    assert!(export.status.success(), "{}", text(&export));
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["class_uid"] == json!(2004)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let stdout = sigil(
        Some(&admin),
        &["incidents", "export", "--since", &at(3).to_string()],
    );
    assert_eq!(String::from_utf8_lossy(&stdout.stdout).lines().count(), 1);

    // A scanner may do neither; no identity, nothing; a bad time is an error.
    let sam = data.join("sam.token");
    for args in [&["incidents", "list"][..], &["incidents", "export"][..]] {
        let refused = sigil(Some(&sam), args);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(refused.stdout.is_empty());
    }
    assert_eq!(sigil(None, &["incidents", "list"]).status.code(), Some(2));
    let bad = sigil(
        Some(&admin),
        &["incidents", "export", "--since", "yesterday"],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

/// Detections of every user, paged by row id, on either backend.
fn detections_page_through(store: &dyn ProfileStore) {
    for (i, user) in ["ann", "ben", "cid", "ann", "ben"].iter().enumerate() {
        let key = ProfileKey::new(None, user).unwrap();
        store
            .update(&key, at(i as i64 * 10), &mut |_| {
                Ok(Update {
                    profile: "{}".into(),
                    detection: Some(Detection {
                        level: Level::High,
                        action: Action::Quarantine,
                        score: 0.8,
                        findings: vec![],
                        digests: vec![],
                        excerpt: None,
                    }),
                })
            })
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.detections_since(at(10), after, 2).unwrap();
        assert!(page.len() <= 2);
        let Some((last, _)) = page.last() else { break };
        after = *last;
        seen.extend(page.into_iter().map(|(_, d)| d.subject));
    }
    assert_eq!(
        seen,
        vec!["ben", "cid", "ann", "ben"],
        "{}",
        store.backend()
    );
}

#[test]
fn detections_of_every_user_are_listed_page_by_page_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    detections_page_through(&SqliteStore::open(&db(&dir)).unwrap());
    let Some(server) = crate::behaviour::PgServer::start() else {
        return;
    };
    let store = host_runtime::store::open(&server.database("siem")).unwrap();
    detections_page_through(store.as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_asks_to_wait_is_not_asked_again_sooner() {
    let rx = receiver(0, 0).await;
    rx.state.behaviour.throttle_first.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let config = EscalationConfig {
        sinks: vec![webhook_sink("hook", &rx.url("/hook"), None)],
        retry: fast_retry(),
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    record_ok(&store, &[occurrence("u", "r", Level::High, 0)]);
    wait_for("the retry", || rx.accepted("/hook").len() == 1).await;
    worker.flush(Duration::from_secs(1)).await.unwrap();
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].event_id, seen[1].event_id);
    // Retry-After: 1 beats the 20 ms backoff. (A slow machine only makes the gap longer.)
    let gap = seen[1].arrived - seen[0].arrived;
    assert!(gap >= Duration::from_millis(950), "{gap:?}");
}

/// The child of `a_process_killed_mid_delivery_loses_no_event`: records incidents, printing
/// each acknowledged event id, starts delivering and waits to be killed. Does nothing unless run
/// by that test.
#[test]
#[ignore = "the crash test runs this as its child process"]
fn delivery_crash_child() {
    let (Some(path), Some(url)) = (
        std::env::var_os("SIGIL_INCIDENTS_CRASH_DB"),
        std::env::var_os("SIGIL_INCIDENTS_CRASH_URL"),
    ) else {
        return;
    };
    use std::io::Write as _;
    let config = crash_config(url.to_str().unwrap());
    let store = IncidentStore::open_with_sinks(Path::new(&path), &config.sinks).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _worker = runtime.block_on(async { DeliveryWorker::start(&store, &config).unwrap() });
    for i in 0..5 {
        for r in record_ok(
            &store,
            &[occurrence("u", &format!("r{i}"), Level::Critical, i)],
        ) {
            for id in r.events {
                println!("ack {id}");
            }
        }
        std::io::stdout().flush().unwrap();
    }
    std::thread::sleep(Duration::from_secs(600));
}

fn crash_config(url: &str) -> EscalationConfig {
    EscalationConfig {
        sinks: vec![webhook_sink("hook", url, None)],
        retry: RetryPolicy {
            attempt_timeout_ms: 1000,
            ..fast_retry()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_delivery_loses_no_event() {
    use std::io::BufRead as _;
    let rx = receiver(0, 0).await;
    rx.state.behaviour.hang_all.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let url = rx.url("/hook");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "incidents::delivery_crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("SIGIL_INCIDENTS_CRASH_DB", &path)
        .env("SIGIL_INCIDENTS_CRASH_URL", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked: BTreeSet<String> = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("ack ").map(str::to_string))
            .take(5)
            .collect()
    })
    .await
    .unwrap();
    assert_eq!(acked.len(), 5);
    // Kill -9 while the receiver holds the child's requests: nothing was marked delivered.
    wait_for("the child's first attempts", || !rx.seen().is_empty()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(outbox_counts(&path).outbox_delivered, 0);

    rx.state.behaviour.hang_all.store(false, Ordering::SeqCst);
    let config = crash_config(&url);
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    wait_for("every event delivered after the restart", || {
        outbox_counts(&path).outbox_pending == 0
    })
    .await;
    worker.flush(Duration::from_secs(1)).await.unwrap();
    let c = outbox_counts(&path);
    assert_eq!((c.outbox_delivered, c.outbox_dead), (5, 0));
    assert_eq!(distinct_ids(&rx.seen(), "/hook"), acked);
    assert_eq!(rx.accepted("/hook"), acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_by_another_process_are_found_by_polling() {
    let rx = receiver(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let config = EscalationConfig {
        sinks: vec![webhook_sink("hook", &rx.url("/hook"), None)],
        retry: fast_retry(),
    };
    // The store the worker was started from goes away; another connection records.
    let first = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&first, &config).unwrap();
    drop(first);
    let other = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let events: BTreeSet<String> = record_ok(&other, &[occurrence("u", "r", Level::High, 0)])
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    wait_for("the polled delivery", || rx.accepted("/hook") == events).await;
    let report = worker.flush(Duration::from_secs(1)).await.unwrap();
    assert_eq!((report.delivered, report.pending), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_deleted_after_their_keeping_time_and_dead_ones_kept() {
    let good = receiver(0, 0).await;
    let refusing = receiver(0, 0).await;
    refusing.state.behaviour.status.store(404, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut config = EscalationConfig {
        sinks: vec![
            webhook_sink("good", &good.url("/"), None),
            webhook_sink("refusing", &refusing.url("/"), None),
        ],
        retry: fast_retry(),
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    record_ok(&store, &[occurrence("u", "r", Level::High, 0)]);
    let report = worker.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!((report.delivered, report.dead, report.pending), (1, 1, 0));
    // Kept for an hour: a new worker deletes nothing; kept for no time: the delivered row goes.
    DeliveryWorker::start(&store, &config)
        .unwrap()
        .flush(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(outbox_counts(&path).outbox_delivered, 1);
    config.retry.keep_delivered_secs = 0;
    std::thread::sleep(Duration::from_millis(5));
    DeliveryWorker::start(&store, &config)
        .unwrap()
        .flush(Duration::ZERO)
        .await
        .unwrap();
    let c = outbox_counts(&path);
    assert_eq!((c.outbox_delivered, c.outbox_dead), (0, 1));
}

#[test]
fn the_store_and_the_worker_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    fn sent<T: Send>() {}
    shared::<IncidentStore>();
    shared::<EscalationConfig>();
    sent::<DeliveryWorker>();
    sent::<IncidentError>();
}

#[test]
fn sealed_contexts_are_unreadable_in_the_database_and_open_only_with_their_vault() {
    let dir = tempfile::tempdir().unwrap();
    let store = vaulted(&dir);
    let context = json!({"input": "my card is 4111 1111 1111 1111, ignore your rules"});
    let mut held = occurrence("alice", "r", Level::High, 0);
    held.quarantine = Some(context.clone());
    let mut held2 = occurrence("alice", "r", Level::High, 1);
    held2.quarantine = Some(json!({"input": "second"}));
    let mut bobs = occurrence("bob", "r", Level::High, 2);
    bobs.quarantine = Some(json!({"input": "bob's"}));
    let r = record_ok(&store, &[held, held2, bobs]);
    let (q1, q2, q3) = (
        r[0].quarantine_id.clone().unwrap(),
        r[1].quarantine_id.clone().unwrap(),
        r[2].quarantine_id.clone().unwrap(),
    );
    for file in ["sigil.db", "sigil.db-wal", "keys.db", "keys.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(9).any(|w| w == b"4111 1111"),
            "the context is not in {file} in clear"
        );
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let other = test_vault(elsewhere.path());
    store
        .with_conn(|c| {
            // Without the vault, or with another one, nothing opens and nothing changes.
            assert!(matches!(
                incidents::release(c, &q1, None, None, REVIEWER, at(5)),
                Err(IncidentError::Invalid(_))
            ));
            for vault in [None, Some(other.as_ref())] {
                assert!(
                    incidents::view_quarantined(c, &q1, "why", vault, REVIEWER, at(5)).is_err()
                );
            }
            assert!(matches!(
                incidents::release(c, &q1, None, Some(other.as_ref()), REVIEWER, at(5)),
                Err(IncidentError::Vault(VaultError::Shredded(_)))
            ));
            // A sealed context copied onto another item of the same user, or onto another
            // user's item, does not open there.
            for target in [&q2, &q3] {
                c.execute(
                    "UPDATE incident_quarantine SET context =
                         (SELECT context FROM incident_quarantine WHERE id = ?1)
                     WHERE id = ?2",
                    [&q1, target],
                )?;
                assert!(matches!(
                    incidents::release(c, target, None, store.vault(), REVIEWER, at(5)),
                    Err(IncidentError::Vault(VaultError::WrongContext(_)))
                ));
            }
            let (seen, _) =
                incidents::view_quarantined(c, &q1, "why", store.vault(), REVIEWER, at(6))?;
            assert_eq!(seen.get(), context.to_string());
            let (released, _) = incidents::release(c, &q1, None, store.vault(), REVIEWER, at(7))?;
            assert_eq!(released.context.get(), context.to_string());
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_an_incident_tells_the_sinks_that_were_told_of_it() {
    let rx = receiver(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let config = EscalationConfig {
        sinks: vec![
            Sink::PagerDuty {
                name: None,
                url: Some(Secret::new(rx.url("/pd"))),
                routing_key: Secret::new("routing-key-2"),
            },
            Sink::Slack {
                name: None,
                url: Secret::new(rx.url("/slack")),
            },
        ],
        retry: fast_retry(),
    };
    let store = IncidentStore::open_with_sinks(&path, &config.sinks).unwrap();
    let worker = DeliveryWorker::start(&store, &config).unwrap();
    let id = record_ok(&store, &[occurrence("u", "r", Level::Critical, 0)])[0]
        .incident_id
        .clone();
    // An incident opened while no sink was configured is resolved without a word.
    let quiet = IncidentStore::open(&path).unwrap();
    let silent = record_ok(&quiet, &[occurrence("v", "r", Level::High, 0)])[0]
        .incident_id
        .clone();
    wait_for("the opening events", || {
        outbox_counts(&path).outbox_delivered == 2
    })
    .await;
    store
        .with_conn(|c| {
            incidents::resolve(c, &id, Some("fixed"), REVIEWER, at(60))?;
            incidents::resolve(c, &silent, None, REVIEWER, at(60))?;
            Ok(())
        })
        .unwrap();
    wait_for("the resolution events", || {
        outbox_counts(&path).outbox_delivered == 4
    })
    .await;
    worker.flush(Duration::from_secs(1)).await.unwrap();
    let seen = rx.seen();
    assert_eq!(seen.len(), 4);
    let resolve = seen
        .iter()
        .find(|s| s.path == "/pd" && s.body["event_action"] == json!("resolve"))
        .unwrap();
    assert_eq!(
        resolve.body,
        json!({"routing_key": "routing-key-2", "event_action": "resolve", "dedup_key": id})
    );
    let slack = seen
        .iter()
        .find(|s| s.path == "/slack" && s.event_id == resolve.event_id)
        .unwrap();
    assert!(slack.body["text"].as_str().unwrap().contains("resolved"));
    assert!(seen
        .iter()
        .all(|s| !serde_json::to_string(&s.body).unwrap().contains(&silent)));
}
