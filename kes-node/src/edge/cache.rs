//! The edge server's key cache, with upstream's expiry settings (`cache.expiry`, spec §6.1):
//!
//! - `any`: an entry is dropped this long after it was fetched, used or not;
//! - `unused`: an entry is dropped once it went unused this long;
//! - `offline`: while the key store is down (a health check failed, or a call found it
//!   unreachable) and `offline` is not zero, the two rules above are suspended and entries are
//!   kept until the store has been down this long.
//!
//! Zero disables a rule. The cache holds at most `max_keys` entries (the least recently used
//! goes first). Entries hold keys in zeroize-on-drop types, so eviction wipes them.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::CacheConfig;
use crate::records::KeyRecord;

struct Entry {
    rec: KeyRecord,
    fetched: Instant,
    used: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Since when the key store is unreachable, if it is.
    offline_since: Option<Instant>,
}

/// The cache. Shared by the event loop (lookups) and the edge runtime (fills, evictions).
pub(crate) struct Cache {
    config: CacheConfig,
    inner: Mutex<Inner>,
}

impl Cache {
    pub(crate) fn new(config: CacheConfig) -> Cache {
        Cache {
            config,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached key, if there is a live entry; marks it used.
    pub(crate) fn get(&self, name: &str, now: Instant) -> Option<KeyRecord> {
        let mut inner = self.lock();
        let offline_since = inner.offline_since;
        let entry = inner.entries.get_mut(name)?;
        if !self.live(entry, offline_since, now) {
            inner.entries.remove(name);
            return None;
        }
        entry.used = now;
        Some(entry.rec.clone())
    }

    /// Caches a key fetched from the store, making room if the cache is full.
    pub(crate) fn insert(&self, name: &str, rec: KeyRecord, now: Instant) {
        if self.config.max_keys == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.len() >= self.config.max_keys && !inner.entries.contains_key(name) {
            let offline_since = inner.offline_since;
            inner
                .entries
                .retain(|_, e| self.live(e, offline_since, now));
            if inner.entries.len() >= self.config.max_keys {
                let oldest = inner
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(n, _)| n.clone());
                if let Some(oldest) = oldest {
                    inner.entries.remove(&oldest);
                }
            }
        }
        inner.entries.insert(
            name.to_owned(),
            Entry {
                rec,
                fetched: now,
                used: now,
            },
        );
    }

    /// Drops a key (it was deleted).
    pub(crate) fn remove(&self, name: &str) {
        self.lock().entries.remove(name);
    }

    /// Drops every expired entry.
    pub(crate) fn sweep(&self, now: Instant) {
        let mut inner = self.lock();
        let offline_since = inner.offline_since;
        inner
            .entries
            .retain(|_, e| self.live(e, offline_since, now));
    }

    /// The key store went offline (`true`) or is back (`false`).
    pub(crate) fn set_offline(&self, offline: bool, now: Instant) {
        let mut inner = self.lock();
        match (offline, inner.offline_since) {
            (true, None) => inner.offline_since = Some(now),
            (false, Some(_)) => {
                inner.offline_since = None;
                // Entries kept only by the offline rule are due now: the store answers again.
                let entries = std::mem::take(&mut inner.entries);
                inner.entries = entries
                    .into_iter()
                    .filter(|(_, e)| self.live(e, None, now))
                    .collect();
            }
            _ => {}
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn live(&self, e: &Entry, offline_since: Option<Instant>, now: Instant) -> bool {
        let c = &self.config;
        if let Some(since) = offline_since {
            if !c.offline.is_zero() {
                return now.saturating_duration_since(since) < c.offline;
            }
        }
        let fresh = c.any.is_zero() || now.saturating_duration_since(e.fetched) < c.any;
        let used = c.unused.is_zero() || now.saturating_duration_since(e.used) < c.unused;
        fresh && used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_core::crypto::{Cipher, SecretKey};
    use std::time::Duration;

    fn rec() -> KeyRecord {
        KeyRecord {
            key: SecretKey::new(Cipher::Aes256, [1; 32]),
            hmac: None,
            created_at: crate::timefmt::now(),
            created_by: String::new(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn expiry_rules() {
        let t0 = Instant::now();
        let c = Cache::new(CacheConfig {
            any: secs(10),
            unused: secs(4),
            offline: Duration::ZERO,
            max_keys: 10,
        });
        c.insert("k", rec(), t0);
        assert!(c.get("k", t0 + secs(3)).is_some());
        assert!(c.get("k", t0 + secs(6)).is_some()); // used at 3 s
        assert!(c.get("k", t0 + secs(11)).is_none()); // unused since 6 s
        c.insert("k", rec(), t0);
        for s in [3, 6, 9] {
            assert!(c.get("k", t0 + secs(s)).is_some());
        }
        assert!(c.get("k", t0 + secs(10)).is_none()); // `any` is over, however used
    }

    #[test]
    fn offline_keeps_entries_for_offline_only() {
        let t0 = Instant::now();
        let config = CacheConfig {
            any: secs(2),
            unused: secs(2),
            offline: secs(60),
            max_keys: 10,
        };
        let c = Cache::new(config);
        c.insert("k", rec(), t0);
        c.set_offline(true, t0 + secs(1));
        assert!(c.get("k", t0 + secs(30)).is_some());
        assert!(c.get("k", t0 + secs(62)).is_none());
        // Without offline caching the usual rules go on while offline.
        let c = Cache::new(CacheConfig {
            offline: Duration::ZERO,
            ..config
        });
        c.insert("k", rec(), t0);
        c.set_offline(true, t0 + secs(1));
        assert!(c.get("k", t0 + secs(1)).is_some());
        assert!(c.get("k", t0 + secs(3)).is_none());
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let c = Cache::new(CacheConfig {
            max_keys: 2,
            ..CacheConfig::default()
        });
        c.insert("a", rec(), t0);
        c.insert("b", rec(), t0 + secs(1));
        assert!(c.get("a", t0 + secs(2)).is_some()); // a is now the most recently used
        c.insert("c", rec(), t0 + secs(3));
        assert_eq!(c.len(), 2);
        assert!(c.get("b", t0 + secs(3)).is_none());
        assert!(c.get("a", t0 + secs(3)).is_some());
        c.remove("a");
        assert!(c.get("a", t0 + secs(3)).is_none());
    }
}
