//! The delivery worker: one task per sink, each claiming its own due rows under a lease and
//! sending them over HTTP(S), so a receiver that is down or slow holds up only its own sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusqlite::Connection;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::outbox::{self, Claimed, Outcome, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::{
    connect, new_id, now_ms, EscalationConfig, IncidentError, IncidentStore, RetryPolicy, Sink,
};

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Most bytes of a receiver's answer read (then the connection is dropped).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Rows delivered since the worker started.
    pub delivered: u64,
    /// Rows given up on since the worker started.
    pub dead: u64,
    /// Attempts that failed and will be retried, since the worker started.
    pub retried: u64,
    /// Rows still pending in the outbox when the worker stopped (they are sent by the next
    /// worker that starts; none is lost).
    pub pending: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    /// Send what is due before the deadline (ms), finish what is in flight, then stop.
    Flush {
        deadline_ms: i64,
    },
}

struct Shared {
    conn: Mutex<Connection>,
    owner: String,
    policy: RetryPolicy,
    client: HttpClient,
    delivered: AtomicU64,
    dead: AtomicU64,
    retried: AtomicU64,
    observer: Option<DeliveryObserver>,
}

/// Told of every settled attempt: the sink's name and how it ended (for metrics).
pub type DeliveryObserver = Arc<dyn Fn(&str, crate::telemetry::DeliveryOutcome) + Send + Sync>;

/// Sends the outbox of an [`IncidentStore`]'s database to the configured sinks until flushed.
/// Started inside a tokio runtime; dropping it stops it at once (as a crash would: its leases
/// run out and the rows become due for the next worker).
///
/// ```no_run
/// use std::time::Duration;
/// use host_runtime::incidents::{DeliveryWorker, EscalationConfig, IncidentError, IncidentStore};
/// # async fn demo() -> Result<(), IncidentError> {
/// let config: EscalationConfig = serde_json::from_str(
///     r#"{"sinks": [{"type": "slack", "url": "https://hooks.slack.com/services/…"}]}"#,
/// )
/// .map_err(|e| IncidentError::Config(e.to_string()))?;
/// let db = std::path::Path::new(".sigil/sigil.db");
/// let store = IncidentStore::open_with_sinks(db, &config.sinks)?;
/// let worker = DeliveryWorker::start(&store, &config)?;
/// // … serve; on shutdown:
/// let report = worker.flush(Duration::from_secs(10)).await?;
/// eprintln!("{} events left for the next start", report.pending);
/// # Ok(()) }
/// ```
pub struct DeliveryWorker {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    mode: watch::Sender<Mode>,
}

impl std::fmt::Debug for DeliveryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorker")
            .field("owner", &self.shared.owner)
            .finish_non_exhaustive()
    }
}

impl DeliveryWorker {
    /// Starts delivering the outbox of `store`'s database with its own connection, one task
    /// per sink of `config`, on the current tokio runtime. Pending rows of sinks no longer
    /// configured are marked dead. Events recorded through `store` wake the worker at once.
    pub fn start(store: &IncidentStore, config: &EscalationConfig) -> Result<Self, IncidentError> {
        Self::start_observed(store, config, None)
    }

    /// As [`DeliveryWorker::start`], telling `observer` how each attempt ended.
    pub fn start_observed(
        store: &IncidentStore,
        config: &EscalationConfig,
        observer: Option<DeliveryObserver>,
    ) -> Result<Self, IncidentError> {
        config.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            IncidentError::Worker("the delivery worker needs a tokio runtime".into())
        })?;
        let policy = config.retry;
        let client = http_client(&config.sinks, &policy)?;
        let mut conn = connect(store.path())?;
        let names: Vec<String> = config.sinks.iter().map(|s| s.name().to_string()).collect();
        let buried = outbox::bury_unknown_sinks(&mut conn, &names)?;
        if buried > 0 {
            tracing::warn!(
                events = buried,
                "escalation: undelivered events of sinks no longer configured were marked dead"
            );
        }
        outbox::purge_delivered(&mut conn, policy.keep_delivered_secs.saturating_mul(1000))?;
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            owner: new_id("worker")?,
            policy,
            client,
            delivered: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            observer,
        });
        let (wake_tx, wake_rx) = watch::channel(0u64);
        store.set_waker(wake_tx);
        let (mode, mode_rx) = watch::channel(Mode::Run);
        let mut tasks = JoinSet::new();
        tasks.spawn_on(
            purge_periodically(shared.clone(), mode_rx.clone()),
            &runtime,
        );
        for sink in &config.sinks {
            tasks.spawn_on(
                run_sink(
                    shared.clone(),
                    Arc::new(sink.clone()),
                    mode_rx.clone(),
                    wake_rx.clone(),
                ),
                &runtime,
            );
        }
        Ok(DeliveryWorker {
            shared,
            tasks,
            mode,
        })
    }

    /// Rows delivered, given up on and retried so far.
    pub fn stats(&self) -> FlushReport {
        FlushReport {
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            dead: self.shared.dead.load(Ordering::Relaxed),
            retried: self.shared.retried.load(Ordering::Relaxed),
            pending: 0,
        }
    }

    /// For graceful shutdown: sends every row due before `within` has passed (retries included),
    /// lets attempts in flight finish until then, stops, and gives back the leases of rows
    /// still pending so the next worker sends them at once.
    pub async fn flush(mut self, within: Duration) -> Result<FlushReport, IncidentError> {
        let deadline_ms =
            now_ms().saturating_add(i64::try_from(within.as_millis()).unwrap_or(i64::MAX));
        self.mode.send_replace(Mode::Flush { deadline_ms });
        let tasks = &mut self.tasks;
        // Each task stops by the deadline; the extra second is for one that is slow to notice.
        let _ = tokio::time::timeout(within + Duration::from_secs(1), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let owner = self.shared.owner.clone();
        let pending = blocking(&self.shared, move |conn| {
            outbox::release_leases(conn, &owner)?;
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM incident_outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await?;
        Ok(FlushReport {
            pending,
            ..self.stats()
        })
    }

    /// Stops at once, leaving leases to run out (what a crash leaves behind).
    pub fn abort(mut self) {
        self.tasks.abort_all();
    }
}

/// Runs `f` on the worker's connection on a blocking thread.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Connection) -> Result<T, IncidentError> + Send + 'static,
) -> Result<T, IncidentError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = shared
            .conn
            .lock()
            .map_err(|_| IncidentError::Worker("the connection's lock is poisoned".into()))?;
        f(&mut conn)
    })
    .await
    .map_err(|e| IncidentError::Worker(format!("a blocking task failed: {e}")))?
}

async fn run_sink(
    shared: Arc<Shared>,
    sink: Arc<Sink>,
    mut mode: watch::Receiver<Mode>,
    mut wake: watch::Receiver<u64>,
) {
    let policy = shared.policy;
    let permits = Arc::new(Semaphore::new(policy.concurrency as usize));
    let mut inflight: JoinSet<()> = JoinSet::new();
    let name = sink.name().to_string();
    let poll = Duration::from_millis(policy.poll_ms);
    // The store that wakes us may be dropped (or hand its waker to a newer worker): then we
    // poll, rather than spin on a closed channel.
    let mut wake_open = true;
    loop {
        while inflight.try_join_next().is_some() {}
        let current = *mode.borrow_and_update();
        let deadline = match current {
            Mode::Flush { deadline_ms } => Some(deadline_ms),
            Mode::Run => None,
        };
        if deadline.is_some_and(|d| now_ms() >= d) {
            break;
        }
        let available = permits.available_permits();
        if available == 0 {
            tokio::select! {
                _ = inflight.join_next() => {}
                _ = mode.changed() => {}
            }
            continue;
        }
        let (sink_name, owner) = (name.clone(), shared.owner.clone());
        let lease = policy.effective_lease_ms();
        let limit = u32::try_from(available).unwrap_or(1);
        match blocking(&shared, move |conn| {
            outbox::claim(conn, &sink_name, &owner, limit, lease)
        })
        .await
        {
            Ok(rows) if !rows.is_empty() => {
                for row in rows {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        break;
                    };
                    let (shared, sink) = (shared.clone(), sink.clone());
                    inflight.spawn(async move {
                        let outcome = attempt(&shared, &sink, &row).await;
                        settle(&shared, &sink, row, outcome).await;
                        drop(permit);
                    });
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "escalation: cannot read the outbox");
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = mode.changed() => {}
                }
                continue;
            }
        }
        let sink_name = name.clone();
        let next = blocking(&shared, move |conn| outbox::next_due(conn, &sink_name))
            .await
            .unwrap_or(None);
        if let Some(deadline) = deadline {
            if inflight.is_empty() && next.is_none_or(|n| n > deadline) {
                break;
            }
        }
        let poll_ms = i64::try_from(policy.poll_ms).unwrap_or(1_000);
        let wait = next.map_or(poll_ms, |n| n.saturating_sub(now_ms()).clamp(1, poll_ms));
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            woken = wake.changed(), if wake_open => wake_open = woken.is_ok(),
            _ = mode.changed() => {}
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    }
    // Attempts in flight finish (until the flush deadline; a dropped worker aborts them).
    let deadline = match *mode.borrow() {
        Mode::Flush { deadline_ms } => deadline_ms,
        Mode::Run => now_ms(),
    };
    let left = u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0);
    let _ = tokio::time::timeout(Duration::from_millis(left), async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    inflight.abort_all();
}

/// Deletes delivered rows past their keeping time every hour (and once at start), until a
/// flush.
async fn purge_periodically(shared: Arc<Shared>, mut mode: watch::Receiver<Mode>) {
    let keep_ms = shared.policy.keep_delivered_secs.saturating_mul(1000);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            changed = mode.changed() => if changed.is_err() || *mode.borrow() != Mode::Run {
                return;
            },
        }
        if let Err(e) = blocking(&shared, move |conn| outbox::purge_delivered(conn, keep_ms)).await
        {
            tracing::error!(error = %e, "escalation: cannot delete delivered events");
        }
    }
}

fn observe(shared: &Shared, sink: &Sink, outcome: crate::telemetry::DeliveryOutcome) {
    if let Some(observer) = &shared.observer {
        observer(sink.name(), outcome);
    }
}

async fn settle(shared: &Arc<Shared>, sink: &Sink, row: Claimed, outcome: Outcome) {
    let policy = shared.policy;
    let event_id = row.event_id.clone();
    let attempts = row.attempts;
    let reported = outcome.clone();
    let owner = shared.owner.clone();
    match blocking(shared, move |conn| {
        outbox::finish(conn, &row, &owner, &outcome, &policy)
    })
    .await
    {
        Ok("delivered") => {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            observe(shared, sink, crate::telemetry::DeliveryOutcome::Delivered);
        }
        Ok("dead") => {
            shared.dead.fetch_add(1, Ordering::Relaxed);
            observe(shared, sink, crate::telemetry::DeliveryOutcome::Dead);
            tracing::error!(
                sink = sink.name(),
                event_id = %event_id,
                attempts,
                outcome = %describe(&reported),
                "escalation: delivery given up"
            );
        }
        Ok(_) => {
            shared.retried.fetch_add(1, Ordering::Relaxed);
            observe(shared, sink, crate::telemetry::DeliveryOutcome::Retry);
            tracing::warn!(
                sink = sink.name(),
                event_id = %event_id,
                attempts,
                outcome = %describe(&reported),
                "escalation: attempt failed; will retry"
            );
        }
        // The lease runs out and the row is attempted again: at least once, never lost.
        Err(e) => tracing::error!(
            sink = sink.name(),
            event_id = %event_id,
            error = %e,
            "escalation: cannot record the attempt; it is made again when its lease runs out"
        ),
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered { status } => format!("status {status}"),
        Outcome::Retry { status, error, .. } | Outcome::Permanent { status, error } => match status
        {
            Some(s) => format!("status {s}: {error}"),
            None => error.clone(),
        },
    }
}

/// One attempt: the sink's body for the stored event, the event id in the headers, signed
/// when the sink has a secret, within the attempt timeout.
async fn attempt(shared: &Shared, sink: &Sink, row: &Claimed) -> Outcome {
    let event: serde_json::Value = match serde_json::from_str(&row.body) {
        Ok(v) => v,
        Err(_) => {
            return Outcome::Permanent {
                status: None,
                error: "the stored event is not JSON".into(),
            }
        }
    };
    let body = sink.body(&event);
    let request = match build_request(sink, &row.event_id, body) {
        Ok(r) => r,
        Err(error) => {
            return Outcome::Permanent {
                status: None,
                error,
            }
        }
    };
    let timeout = Duration::from_millis(shared.policy.attempt_timeout_ms);
    let started = Instant::now();
    let response = match tokio::time::timeout(timeout, shared.client.request(request)).await {
        Err(_) => {
            return Outcome::Retry {
                status: None,
                error: format!("no answer within {} ms", timeout.as_millis()),
                after_ms: None,
            }
        }
        Ok(Err(e)) => {
            return Outcome::Retry {
                status: None,
                error: client_error(&e),
                after_ms: None,
            }
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let after_ms = retry_after(response.headers());
    // A little of the answer is read so the connection can be reused; an endless or stalled
    // body is cut off by size and by what is left of the attempt's time.
    let left = timeout.saturating_sub(started.elapsed());
    let _ = tokio::time::timeout(
        left.min(Duration::from_secs(1)),
        Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect(),
    )
    .await;
    classify(status, after_ms)
}

/// 2xx delivered; 408, 429 and 5xx retried; anything else (other 4xx, redirects) permanent.
fn classify(status: u16, after_ms: Option<u64>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered { status },
        408 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: "the receiver asked for a retry".into(),
            after_ms,
        },
        _ => Outcome::Permanent {
            status: Some(status),
            error: "the receiver refused the event".into(),
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the receivers this talks to, and
/// falls back to the backoff).
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// What went wrong, without the URL (it may be a credential).
fn client_error(e: &hyper_util::client::legacy::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{what} ({:?})", io.kind());
        }
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message())
        {
            return format!("{what} (the connection closed before an answer)");
        }
        source = cause.source();
    }
    what.to_string()
}

fn build_request(
    sink: &Sink,
    event_id: &str,
    body: String,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let id = HeaderValue::from_str(event_id).map_err(|_| "the event id is not a header value")?;
    let mut builder = hyper::Request::post(sink.url())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("sigil/", env!("CARGO_PKG_VERSION")))
        .header(EVENT_ID_HEADER, id.clone())
        .header("idempotency-key", id);
    if let Sink::Webhook {
        secret: Some(secret),
        ..
    } = sink
    {
        let timestamp = (now_ms() / 1000).to_string();
        builder = builder.header(TIMESTAMP_HEADER, timestamp.as_str()).header(
            SIGNATURE_HEADER,
            signature(secret.expose(), &timestamp, &body),
        );
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "the sink's url cannot be requested".to_string())
}

/// `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub(super) fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body.as_bytes());
    format!(
        "v1={}",
        guard_core::provenance::hex(context.sign().as_ref())
    )
}

fn http_client(sinks: &[Sink], policy: &RetryPolicy) -> Result<HttpClient, IncidentError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(policy.attempt_timeout_ms)));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder,
        Err(e) => {
            if sinks.iter().any(|s| s.url().starts_with("https:")) {
                return Err(IncidentError::Config(format!(
                    "no trusted root certificates for https sinks ({e}); install the system's CA certificates"
                )));
            }
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| IncidentError::Config(format!("tls: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let https = tls.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, None), Outcome::Delivered { status: 200 });
        assert_eq!(classify(202, None), Outcome::Delivered { status: 202 });
        for s in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(s, None), Outcome::Retry { .. }), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(classify(s, None), Outcome::Permanent { .. }),
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_is_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(7000));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("99999999999999999999"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_and_body() {
        // Python's hmac.new(b"Jefe", b"1700000000.what do ya want for nothing?", sha256).
        let sig = signature("Jefe", "1700000000", "what do ya want for nothing?");
        assert_eq!(
            sig,
            "v1=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
    }
}
