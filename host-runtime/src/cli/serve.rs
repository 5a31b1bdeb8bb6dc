//! `sigil serve`: the HTTP API.
//!
//! Configuration comes from a TOML file (`--config`, or `SIGIL_CONFIG`), then `SIGIL_*`
//! variables, then the flags here; with none of them the defaults run (`docs/service.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::registry::{create_secret, fill_secret, Access as LocalAccess};
use super::GuardOptions;
use crate::config::{ServiceConfig, SinkConfig, SinkKind, StoreSetting, VaultConfig};
use crate::incidents::{
    self, DeliveryObserver, DeliveryWorker, EscalationConfig, IncidentStore, RetryPolicy, Secret,
    Sink,
};
use crate::registry::Registry;
use crate::service::{self, app, Access, AppState, IncidentDesk, RequestLimits};
use crate::signer::SignerSpec;
use crate::store::{self, Behaviour, ProfileStore, Retention, StoreSpec};
use crate::telemetry::emf::EmfWriter;
use crate::telemetry::{logging, Metrics, StoreGauges, VaultCounts};
use crate::vault::{self, Vault};

/// How often automatic incident changes are recorded in the audit log, and the store's gauges
/// read.
const PUMP_EVERY: Duration = Duration::from_secs(2);

/// How long a stopping service keeps delivering what is due.
const FLUSH_WITHIN: Duration = Duration::from_secs(10);

/// The escalation settings of the configuration, as the delivery worker takes them.
fn escalation(config: &crate::config::Escalation) -> Result<EscalationConfig> {
    let secret = |s: &Option<Secret>| s.clone();
    let sinks = config
        .sinks
        .iter()
        .map(|sink: &SinkConfig| {
            let name = sink.name.clone();
            let url = secret(&sink.url);
            Ok(match sink.kind {
                SinkKind::Webhook => Sink::Webhook {
                    name,
                    url: url.ok_or_else(|| anyhow::anyhow!("a webhook sink needs a `url`"))?,
                    secret: secret(&sink.secret),
                },
                SinkKind::Slack => Sink::Slack {
                    name,
                    url: url.ok_or_else(|| anyhow::anyhow!("a slack sink needs a `url`"))?,
                },
                SinkKind::Pagerduty => Sink::PagerDuty {
                    name,
                    url,
                    routing_key: secret(&sink.routing_key)
                        .ok_or_else(|| anyhow::anyhow!("a pagerduty sink needs a `routing_key`"))?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let retry = RetryPolicy {
        base_ms: ms(config.retry_base.duration()),
        cap_ms: ms(config.retry_cap.duration()),
        max_age_secs: config.retry_max_age.duration().as_secs(),
        attempt_timeout_ms: ms(config.attempt_timeout.duration()),
        lease_ms: ms(config.lease.duration()),
        ..RetryPolicy::default()
    };
    let escalation = EscalationConfig { sinks, retry };
    escalation.check()?;
    Ok(escalation)
}

/// The file the first admin key is written to.
pub const FIRST_ADMIN_KEY_FILE: &str = "admin.token";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (TOML). Without it, the file `SIGIL_CONFIG` names, or defaults;
    /// `SIGIL_*` variables override the file, and these flags override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, `host:port` (a name such as `localhost` is resolved).
    #[arg(long)]
    listen: Option<String>,
    /// The data folder: the registry and audit log (`sigil.db`), keys in `keys/`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep users' behaviour profiles here: `sqlite:PATH` or
    /// `postgres://USER@HOST:PORT/DATABASE`. Without it, the data folder's database.
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,
    /// Keep no behaviour profiles (callers keep them).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// The key that signs the audit log's checkpoints. Without it,
    /// `local:<data-dir>/keys/signing-key.pem` (made when missing).
    #[arg(long, value_name = "SPEC")]
    log_signer: Option<SignerSpec>,
    #[command(flatten)]
    guard: GuardOptions,
}

/// The registry of the data folder, made when missing; on a registry with no identity at all,
/// the first admin key is made and written to a file only its owner can read.
fn open_registry(local: &LocalAccess, data_dir: &std::path::Path) -> Result<Registry> {
    let mut registry = local.open_or_create()?;
    if !Registry::is_registry(registry.audit_log())? {
        let path = data_dir.join(FIRST_ADMIN_KEY_FILE);
        let mut file = create_secret(&path)?;
        let made = registry.bootstrap("admin", local.now()?, local.log_signer()?.as_ref());
        let token = match made {
            Ok(token) => token,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
        };
        fill_secret(&mut file, &path, &token)?;
        tracing::info!(path = %path.display(), "no API keys yet: made the first admin key");
        eprintln!(
            "sigil made the first admin key and wrote it to {} (readable by its owner only)",
            path.display()
        );
    }
    Ok(registry)
}

fn load_config(args: &ServeArgs) -> Result<ServiceConfig> {
    let mut config = ServiceConfig::load(args.config.as_deref())?;
    if let Some(listen) = &args.listen {
        config.listen = crate::config::ListenAddr::parse(listen)
            .map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(spec) = &args.store {
        config.store = StoreSetting::At(spec.clone());
    }
    if args.no_store {
        config.store = StoreSetting::Off;
    }
    Ok(config)
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = load_config(&args)?;
    if let Err(e) = logging::init(&config.telemetry.log_options()) {
        eprintln!("sigil: logs stay unstructured: {e}");
    }
    let data_dir = config.data_dir.clone();
    let local = LocalAccess::local(data_dir.clone(), args.log_signer.clone());
    let registry = open_registry(&local, &data_dir)?;
    let access = Access::new(registry, local.log_signer()?);
    let (engine, _) = args.guard.engine_with(config.limits.engine_limits())?;
    let engine = Arc::new(engine);
    // Every instance is made before the first call, so no call waits for one.
    let instances = engine
        .warm()
        .context("cannot start the guard's instances")?;
    tracing::info!(instances, "guard instances ready");
    let limits = RequestLimits {
        max_body: config.limits.max_body_bytes.as_usize(),
        max_prompt_bytes: config.limits.max_prompt_bytes.as_usize(),
        max_batch: to_usize(u64::from(config.limits.max_batch)),
    };
    let metrics = Arc::new(Metrics::new(config.telemetry.label_limits()));
    metrics.set_guard_instances(instances as u64);
    let mut state = AppState::new(engine, access, limits).with_metrics(metrics.clone());
    let fixed_now = match &args.guard.now {
        Some(_) => Some(args.guard.now()?),
        None => None,
    };
    if let Some(now) = &fixed_now {
        state = state.with_fixed_now(now.clone());
    }
    let db = local.db();
    let spec = match &config.store {
        StoreSetting::Off => None,
        StoreSetting::At(spec) => Some(spec.clone()),
        StoreSetting::DataFolder => Some(StoreSpec::Sqlite(db.clone())),
    };
    // What users sent (quarantined input, excerpts) is sealed at rest under the user's key,
    // in a key store apart from the data.
    let vault = open_vault(&config.vault, &data_dir)?;
    let store = match &spec {
        Some(spec) => {
            let store =
                store::open(spec).with_context(|| format!("cannot open the store `{spec}`"))?;
            let in_registry =
                matches!(spec, StoreSpec::Sqlite(path) if super::users::same_file(path, &db));
            eprintln!("sigil keeps behaviour profiles in {spec}");
            state = state.with_behaviour(
                Behaviour {
                    store: store.clone(),
                    detections: config.detections.options(),
                    vault: Some(vault.clone()),
                },
                in_registry,
            );
            Some(store)
        }
        None => None,
    };
    let emf = if config.telemetry.emf.enabled {
        let writer = EmfWriter::new(
            metrics.clone(),
            &config.telemetry.emf.namespace,
            &config.telemetry.emf.target(),
        )?;
        Some(writer.start(config.telemetry.emf.interval.duration())?)
    } else {
        None
    };
    let escalation = escalation(&config.escalation)?;
    let incident_store = Arc::new(
        IncidentStore::open_with_sinks(&db, &escalation.sinks)
            .with_context(|| format!("cannot open the incident store in `{}`", db.display()))?,
    );
    let incident_store = match Arc::try_unwrap(incident_store) {
        Ok(store) => Arc::new(store.with_vault(vault.clone())),
        Err(_) => anyhow::bail!("the incident store is shared before it is set up"),
    };
    let desk = Arc::new(IncidentDesk::new(
        incident_store.clone(),
        config.incidents.group_window.duration(),
        config.vault.on_unavailable,
    )?);
    state = state.with_incidents(desk.clone());
    let pump_state = state.clone();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let observed = metrics.clone();
    let observer: DeliveryObserver =
        Arc::new(move |sink, outcome| observed.delivery(sink, outcome));
    let worker = {
        let _entered = runtime.enter();
        DeliveryWorker::start_observed(&incident_store, &escalation, Some(observer))?
    };
    let pump = runtime.spawn(pump_periodically(
        pump_state,
        incident_store.clone(),
        vault.clone(),
        metrics.clone(),
        fixed_now.clone(),
    ));
    if let Some(store) = store {
        runtime.spawn(purge_periodically(
            store,
            config.retention.store_retention(),
            config.retention.purge_every.duration(),
            fixed_now.clone(),
        ));
    }
    let listen = config.listen.as_str().to_string();
    let metrics_listen = config
        .metrics_listen
        .as_ref()
        .map(|l| l.as_str().to_string());
    let server_limits = config.limits.server_limits();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        if let Some(metrics_listen) = metrics_listen {
            let metrics_listener = tokio::net::TcpListener::bind(metrics_listen.as_str())
                .await
                .with_context(|| format!("cannot listen on {metrics_listen}"))?;
            let addr = metrics_listener.local_addr()?;
            eprintln!("sigil serves /metrics on http://{addr}/metrics");
            let metrics_router = service::metrics_app(state.clone());
            tokio::spawn(service::serve(
                metrics_listener,
                metrics_router,
                server_limits,
                shutdown_signal(),
            ));
        }
        let router = app(state);
        eprintln!("sigil listening on http://{local}");
        tracing::info!(addr = %local, "listening");
        service::serve(listener, router, server_limits, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    // Calls are answered; what they queued is stored, then delivered while there is time.
    desk.close();
    pump.abort();
    let flushed = runtime.block_on(worker.flush(FLUSH_WITHIN));
    match flushed {
        Ok(report) if report.pending > 0 => eprintln!(
            "sigil stopped with {} escalation events still to deliver (the next start sends them)",
            report.pending
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "the last deliveries failed"),
    }
    let now = fixed_now.clone().unwrap_or_else(super::now_utc);
    if let Err(e) = record_audit(&runtime_state_access(&local)?, &now) {
        tracing::error!(error = %e, "the last incident changes could not be recorded in the audit log");
    }
    // In-flight requests had their chance; do not wait forever on stuck connections.
    runtime.shutdown_timeout(Duration::from_secs(10));
    if let Some(emf) = emf {
        if let Err(e) = emf.stop() {
            tracing::error!(error = %e, "the last EMF flush failed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The registry again, for the last audit pump after the service stopped.
fn runtime_state_access(local: &LocalAccess) -> Result<Access> {
    let db = local.db();
    let registry =
        Registry::open(&db).with_context(|| format!("cannot open `{}`", db.display()))?;
    Ok(Access::new(registry, local.log_signer()?))
}

/// Records the automatic incident changes not yet in the audit log.
fn record_audit(access: &Access, now: &str) -> Result<usize> {
    let now = guard_core::time::Timestamp::parse(now)?;
    access
        .with_registry(|registry, signer| {
            incidents::record_pending_audit(registry, now, signer, 10_000).map_err(Into::into)
        })
        .map_err(|e| anyhow::anyhow!("{}", e.message()))
}

/// Every [`PUMP_EVERY`]: records automatic incident changes in the audit log, and reads the
/// incident and outbox gauges.
/// The vault `config` describes, its defaults in `data_dir`.
pub(crate) fn open_vault(config: &VaultConfig, data_dir: &std::path::Path) -> Result<Arc<Vault>> {
    let spec = config.master_key_spec(data_dir);
    let key_store = config.key_store_path(data_dir);
    let master = vault::open_master_for(&spec, &key_store, &data_dir.join("sigil.db"))
        .with_context(|| format!("cannot open the master key `{spec}`"))?;
    let vault = Vault::open(master, &key_store, config.cache_limits())
        .with_context(|| format!("cannot open the key store `{}`", key_store.display()))?;
    Ok(Arc::new(vault))
}

async fn pump_periodically(
    state: AppState,
    store: Arc<IncidentStore>,
    vault: Arc<Vault>,
    metrics: Arc<Metrics>,
    fixed_now: Option<String>,
) {
    let mut interval = tokio::time::interval(PUMP_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = fixed_now.clone().unwrap_or_else(super::now_utc);
        let stats = vault.stats();
        metrics.set_vault_counts(&VaultCounts {
            sealed: stats.sealed,
            opened: stats.opened,
            backend_calls: stats.backend_calls,
            failovers: stats.failovers,
        });
        let (state, store, metrics) = (state.clone(), store.clone(), metrics.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<()> {
            state
                .access()
                .with_registry(|registry, signer| {
                    let now = guard_core::time::Timestamp::parse(&now).map_err(|e| {
                        crate::service::AppError::from(crate::registry::RegistryError::Invalid(
                            e.to_string(),
                        ))
                    })?;
                    incidents::record_pending_audit(registry, now, signer, 10_000)?;
                    Ok(())
                })
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            let now = guard_core::time::Timestamp::parse(&now)?;
            let counts = store.with_conn(|conn| incidents::counts(conn, now))?;
            let mut open = [0u64; 5];
            for (slot, level) in open.iter_mut().zip(guard_core::Level::ALL) {
                *slot = counts
                    .open_by_level
                    .get(level.as_str())
                    .copied()
                    .unwrap_or(0);
            }
            metrics.set_store_gauges(&StoreGauges {
                incidents_open: open,
                incidents_unacknowledged: counts.unacknowledged,
                oldest_unacknowledged: Duration::from_secs(
                    counts.oldest_unacknowledged_seconds.unwrap_or(0),
                ),
                outbox_depth: counts.outbox_pending,
            });
            Ok(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "incident bookkeeping failed"),
            Err(e) => tracing::error!(error = %e, "incident bookkeeping failed"),
        }
    }
}

/// Runs the retention purge now and every `every`; failures are logged and retried at the next
/// round.
async fn purge_periodically(
    store: Arc<dyn ProfileStore>,
    retention: Retention,
    every: Duration,
    fixed_now: Option<String>,
) {
    let mut interval = tokio::time::interval(every.max(Duration::from_secs(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = fixed_now.clone().unwrap_or_else(super::now_utc);
        let store = store.clone();
        let purged = tokio::task::spawn_blocking(move || {
            let now = guard_core::time::Timestamp::parse(&now).map_err(|e| e.to_string())?;
            store.purge(now, retention).map_err(|e| e.to_string())
        })
        .await;
        match purged {
            Ok(Ok(p)) if p.detections + p.profiles > 0 => eprintln!(
                "purged {} detections and {} profiles past their retention",
                p.detections, p.profiles
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "behaviour purge failed"),
            Err(e) => tracing::error!(error = %e, "behaviour purge failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("stopping");
}
