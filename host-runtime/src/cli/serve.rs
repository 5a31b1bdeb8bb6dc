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
use crate::config::{ServiceConfig, StoreSetting};
use crate::registry::Registry;
use crate::service::{app, Access, AppState, RequestLimits};
use crate::signer::SignerSpec;
use crate::store::{self, Behaviour, ProfileStore, Retention, StoreSpec};
use crate::telemetry::emf::EmfWriter;
use crate::telemetry::{logging, Metrics};

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
    let instances = engine.warm().context("cannot start the guard's instances")?;
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
    let store = match &spec {
        Some(spec) => {
            let store =
                store::open(spec).with_context(|| format!("cannot open the store `{spec}`"))?;
            let in_registry = matches!(spec, StoreSpec::Sqlite(path) if super::users::same_file(path, &db));
            eprintln!("sigil keeps behaviour profiles in {spec}");
            state = state.with_behaviour(
                Behaviour {
                    store: store.clone(),
                    detections: config.detections.options(),
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
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if let Some(store) = store {
        runtime.spawn(purge_periodically(
            store,
            config.retention.store_retention(),
            config.retention.purge_every.duration(),
            fixed_now,
        ));
    }
    let listen = config.listen.as_str().to_string();
    let metrics_listen = config.metrics_listen.as_ref().map(|l| l.as_str().to_string());
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        let router = app(state);
        if let Some(metrics_listen) = metrics_listen {
            let metrics_listener = tokio::net::TcpListener::bind(metrics_listen.as_str())
                .await
                .with_context(|| format!("cannot listen on {metrics_listen}"))?;
            let addr = metrics_listener.local_addr()?;
            eprintln!("sigil serves /metrics on http://{addr}/metrics");
            let metrics_router = router.clone();
            tokio::spawn(async move {
                let served = axum::serve(metrics_listener, metrics_router)
                    .with_graceful_shutdown(shutdown_signal())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
        }
        eprintln!("sigil listening on http://{local}");
        tracing::info!(addr = %local, "listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("server failed")
    })?;
    // In-flight requests had their chance; do not wait forever on stuck connections.
    runtime.shutdown_timeout(Duration::from_secs(10));
    if let Some(emf) = emf {
        if let Err(e) = emf.stop() {
            tracing::error!(error = %e, "the last EMF flush failed");
        }
    }
    Ok(ExitCode::SUCCESS)
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
