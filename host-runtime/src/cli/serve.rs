//! `sigil serve`: the HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::registry::{create_secret, fill_secret, Access as LocalAccess};
use super::users::{BehaviourArgs, RetentionArgs};
use super::GuardOptions;
use crate::registry::Registry;
use crate::service::{
    app, Access, AppState, RequestLimits, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_MAX_PROMPT,
};
use crate::signer::SignerSpec;
use crate::store::{ProfileStore, Retention, StoreSpec};

/// How often `sigil serve` runs the retention purge.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The file the first admin key is written to.
pub const FIRST_ADMIN_KEY_FILE: &str = "admin.token";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, `host:port` (a name such as `localhost` is resolved).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The data folder: the registry and audit log (`sigil.db`), keys in `keys/`.
    #[arg(long, default_value = ".sigil")]
    data_dir: PathBuf,
    /// The key that signs the audit log's checkpoints. Without it,
    /// `local:<data-dir>/keys/signing-key.pem` (made when missing).
    #[arg(long, value_name = "SPEC")]
    log_signer: Option<SignerSpec>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_body: u64,
    /// Largest prompt of one call (its untrusted text), in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_PROMPT as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_prompt: u64,
    /// Most texts in one `/v1/scan/batch` request.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_batch: u64,
    /// Keep no behaviour profiles (by default they are kept in the data folder's database, or
    /// in `--store`).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    #[command(flatten)]
    guard: GuardOptions,
    #[command(flatten)]
    behaviour: BehaviourArgs,
    /// Retention, enforced by a purge at start and every hour.
    #[command(flatten)]
    retention: RetentionArgs,
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
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

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let local = LocalAccess::local(args.data_dir.clone(), args.log_signer.clone());
    let registry = open_registry(&local, &args.data_dir)?;
    let access = Access::new(registry, local.log_signer()?);
    let engine = Arc::new(args.guard.engine()?);
    // Every instance is made before the first call, so no call waits for one.
    let instances = engine.warm().context("cannot start the guard's instances")?;
    tracing::info!(instances, "guard instances ready");
    let limits = RequestLimits {
        max_body: to_usize(args.max_body),
        max_prompt_bytes: to_usize(args.max_prompt),
        max_batch: to_usize(args.max_batch),
    };
    let mut state = AppState::new(engine, access, limits);
    let fixed_now = match &args.guard.now {
        Some(_) => Some(args.guard.now()?),
        None => None,
    };
    if let Some(now) = &fixed_now {
        state = state.with_fixed_now(now.clone());
    }
    let db = local.db();
    let spec = match (&args.behaviour.store, args.no_store) {
        (_, true) => None,
        (Some(spec), false) => Some(spec.clone()),
        (None, false) => Some(StoreSpec::Sqlite(db.clone())),
    };
    let store = match &spec {
        Some(spec) => {
            let behaviour = args.behaviour.open_spec(spec)?;
            let store = behaviour.store.clone();
            let in_registry =
                matches!(spec, StoreSpec::Sqlite(path) if super::users::same_file(path, &db));
            eprintln!("sigil keeps behaviour profiles in {spec}");
            state = state.with_behaviour(behaviour, in_registry);
            Some(store)
        }
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if let Some(store) = store {
        let retention = args.retention.retention();
        runtime.spawn(purge_periodically(store, retention, fixed_now));
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen.as_str())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        eprintln!("sigil listening on http://{local}");
        axum::serve(listener, app(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("server failed")
    })?;
    // In-flight requests had their chance; do not wait forever on stuck connections.
    runtime.shutdown_timeout(Duration::from_secs(10));
    Ok(ExitCode::SUCCESS)
}

/// Runs the retention purge now and every [`PURGE_EVERY`]; failures are logged and retried at
/// the next round.
async fn purge_periodically(
    store: Arc<dyn ProfileStore>,
    retention: Retention,
    fixed_now: Option<String>,
) {
    let mut interval = tokio::time::interval(PURGE_EVERY);
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
            Ok(Err(e)) => eprintln!("behaviour purge failed: {e}"),
            Err(e) => eprintln!("behaviour purge failed: {e}"),
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
    eprintln!("sigil stopping");
}
