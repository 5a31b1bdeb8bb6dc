//! Unwrapped keys in memory, for a bounded time and number of uses. A key is held only as an
//! aws-lc AEAD context, which aws-lc overwrites when it is freed (`OPENSSL_free` cleanses every
//! allocation), so a key leaves nothing behind when it expires, is evicted or the cache drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_lc_rs::aead::LessSafeKey;

use super::{aead_key, CacheLimits, DataKeyBytes, VaultError};

/// An unwrapped tenant or subject key.
pub(super) struct CachedKey {
    /// The key's id in the key store.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its user (`""` for a tenant key).
    pub subject: String,
    /// The key, ready to seal and open.
    pub aead: LessSafeKey,
}

impl CachedKey {
    pub fn new(
        id: String,
        tenant: String,
        subject: String,
        bytes: &DataKeyBytes,
    ) -> Result<Self, VaultError> {
        Ok(CachedKey {
            id,
            tenant,
            subject,
            aead: aead_key(bytes)?,
        })
    }
}

struct Entry {
    key: Arc<CachedKey>,
    loaded: Instant,
    uses: u64,
}

/// Keys by name, each dropped after `max_age` or `max_uses` uses; at most `capacity` of them
/// (the oldest go first).
pub(super) struct KeyCache {
    limits: CacheLimits,
    entries: Mutex<HashMap<String, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KeyCache {
    pub fn new(limits: CacheLimits) -> Self {
        KeyCache {
            limits,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key named `name`, counting one use, unless it is spent.
    pub fn get(&self, name: &str) -> Option<Arc<CachedKey>> {
        let mut entries = self.entries();
        let fresh = match entries.get_mut(name) {
            Some(entry)
                if entry.loaded.elapsed() < self.limits.max_age
                    && entry.uses < self.limits.max_uses =>
            {
                entry.uses += 1;
                Some(entry.key.clone())
            }
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        };
        match &fresh {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        fresh
    }

    pub fn insert(&self, name: String, key: Arc<CachedKey>) {
        if self.limits.capacity == 0 || self.limits.max_uses == 0 {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= self.limits.capacity && !entries.contains_key(&name) {
            let max_age = self.limits.max_age;
            entries.retain(|_, e| e.loaded.elapsed() < max_age);
            if entries.len() >= self.limits.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.loaded)
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            name,
            Entry {
                key,
                loaded: Instant::now(),
                uses: 1,
            },
        );
    }

    pub fn remove(&self, name: &str) {
        self.entries().remove(name);
    }

    /// Removes the entries whose name matches, and every entry holding the same key.
    pub fn remove_where(&self, mut matches: impl FnMut(&str) -> bool) {
        let mut entries = self.entries();
        let ids: Vec<String> = entries
            .iter()
            .filter(|(name, _)| matches(name))
            .map(|(_, e)| e.key.id.clone())
            .collect();
        entries.retain(|name, e| !matches(name) && !ids.contains(&e.key.id));
    }

    pub fn clear(&self) {
        self.entries().clear();
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}
