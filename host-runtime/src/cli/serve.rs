//! `sigil serve`: the HTTP API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::users::{BehaviourArgs, RetentionArgs};
use super::GuardOptions;
use crate::service::{app, AppState, DEFAULT_MAX_BODY};
use crate::store::{ProfileStore, Retention};

/// How often `sigil serve` runs the retention purge when it keeps a store.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, `host:port` (a name such as `localhost` is resolved).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_body: u64,
    #[command(flatten)]
    guard: GuardOptions,
    #[command(flatten)]
    behaviour: BehaviourArgs,
    /// Retention, enforced by a purge at start and every hour when `--store` is given.
    #[command(flatten)]
    retention: RetentionArgs,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let engine = Arc::new(args.guard.engine()?);
    let mut state = AppState::new(engine, usize::try_from(args.max_body).unwrap_or(usize::MAX));
    let fixed_now = match &args.guard.now {
        Some(_) => Some(args.guard.now()?),
        None => None,
    };
    if let Some(now) = &fixed_now {
        state = state.with_fixed_now(now.clone());
    }
    let behaviour = args.behaviour.open()?;
    let store = behaviour.as_ref().map(|b| b.store.clone());
    if let Some(behaviour) = behaviour {
        eprintln!(
            "sigil keeps behaviour profiles in {}",
            args.behaviour
                .store
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        state = state.with_behaviour(behaviour);
    }
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
        eprintln!("sigil listening on http://{local} (POST /v1/scan, GET /healthz)");
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
