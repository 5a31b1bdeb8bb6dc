//! A small connection pool: connections are neither `Sync` nor cheap to open, and each thread
//! of the service needs its own so that writers really run side by side.

use std::sync::{Mutex, PoisonError};

use super::StoreError;

/// Connections kept idle at most; more are opened when needed and closed when given back.
const MAX_IDLE: usize = 16;

/// A connection a pool can hand out.
pub(super) trait Connection: Send + Sized {
    /// Whether it may be handed out again (a PostgreSQL client whose socket closed may not).
    fn reusable(&mut self) -> bool {
        true
    }
}

pub(super) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    open: Box<dyn Fn() -> Result<C, StoreError> + Send + Sync>,
}

impl<C: Connection> Pool<C> {
    /// A pool that opens connections with `open`, starting with `first`.
    pub(super) fn new(
        first: C,
        open: impl Fn() -> Result<C, StoreError> + Send + Sync + 'static,
    ) -> Self {
        Pool {
            idle: Mutex::new(vec![first]),
            open: Box::new(open),
        }
    }

    /// Runs `f` on a connection of its own, then gives the connection back.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut C) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => (self.open)()?,
        };
        let result = f(&mut conn);
        if conn.reusable() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}
