//! The HTTP/1.1 listener: hyper with the time limits `axum::serve` leaves unset.
//!
//! A client that opens a connection and sends half a request head would otherwise hold its
//! connection, and the memory of what it sent, for ever, and keep a graceful shutdown waiting
//! for it. Here a request head must arrive within [`ServerLimits::header_read_timeout`], at most
//! [`ServerLimits::max_connections`] connections are served at once (further ones wait in the
//! kernel's backlog), and a shutdown waits at most [`ServerLimits::shutdown_grace`] for
//! connections still busy before it closes them.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// The largest request head (request line and headers) read; a larger one is answered 431.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// How long a connection may take and how many are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request head (request line and headers) must arrive within this time, counted from
    /// its first byte or, on a kept-alive connection, from the end of the previous answer.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a shutdown waits for calls in flight before it closes their connections.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(15),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets calls in flight finish
/// within the grace period. Answers how many connections were still open when the grace ran
/// out (they were closed).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's default read buffer is about 400 KB; a request head needs far less, and
        // every slow client holds its buffer until the header timeout.
        .max_buf_size(MAX_HEAD_BYTES)
        // The buffer may take in more than its size in one read; this bound is exact.
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, new connections wait in the backlog, not in memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            async move {
                let answer: Result<Response, Infallible> =
                    router.oneshot(request.map(axum::body::Body::new)).await;
                answer
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that went away or sent garbage is its own business, not the log's.
            let _ = watched.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(limits.shutdown_grace) => {
            let open = limits.max_connections.max(1) - slots.available_permits();
            tracing::warn!(open, "connections still open after the shutdown grace period are closed");
            open
        }
    }
}
