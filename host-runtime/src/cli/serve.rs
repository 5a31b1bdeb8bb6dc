//! `sigil serve`: the HTTP API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::GuardOptions;
use crate::service::{app, AppState, DEFAULT_MAX_BODY};

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
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let engine = Arc::new(args.guard.engine()?);
    let mut state = AppState::new(engine, usize::try_from(args.max_body).unwrap_or(usize::MAX));
    if args.guard.now.is_some() {
        state = state.with_fixed_now(args.guard.now()?);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
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
