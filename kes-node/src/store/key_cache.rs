//! Decoded keys, kept in memory so that the hot operations (generate, encrypt, decrypt, hmac)
//! skip the database read and the record's decryption.
//!
//! Keys never change once created; a cached key only goes stale when it is deleted (or its
//! enclave is, or a snapshot or backup replaces the state). Such a transaction empties the
//! cache when it commits and bumps a generation counter. A reader notes the generation before
//! it reads the database and inserts what it read only if no such commit happened meanwhile,
//! so a reader racing a deletion can never put the deleted key back.
//!
//! Bounded: when full, the cache starts over (keys are cheap to reload, and the working set
//! of an object store is usually far smaller than the bound).
use std::collections::HashMap;
use std::sync::Mutex;

use crate::records::KeyRecord;

/// The most keys kept (each is well under a kilobyte).
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub(crate) struct KeyCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    /// By `<enclave>/<name>`. Key material is wiped when an entry is dropped (`SecretKey`,
    /// `HmacKey`).
    keys: HashMap<String, KeyRecord>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached key, or the generation to pass to [`KeyCache::insert`] after reading it.
    pub(super) fn get(&self, item_key: &str) -> Result<KeyRecord, u64> {
        let inner = self.lock();
        inner.keys.get(item_key).cloned().ok_or(inner.generation)
    }

    /// Caches a key read from the database, unless a deletion committed since `generation`.
    pub(super) fn insert(&self, generation: u64, item_key: String, record: &KeyRecord) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.keys.len() >= MAX_KEYS {
            inner.keys.clear();
        }
        inner.keys.insert(item_key, record.clone());
    }

    /// A transaction that removed keys committed.
    pub(super) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_core::crypto::{Cipher, SecretKey};

    fn record() -> KeyRecord {
        KeyRecord {
            key: SecretKey::new(Cipher::Aes256, [1; 32]),
            hmac: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            created_by: String::new(),
        }
    }

    #[test]
    fn a_read_that_raced_a_deletion_is_not_cached() {
        let cache = KeyCache::default();
        let Err(generation) = cache.get("default/k") else {
            panic!("empty cache")
        };
        cache.invalidate(); // a deletion commits while the reader reads
        cache.insert(generation, "default/k".into(), &record());
        let Err(fresh) = cache.get("default/k") else {
            panic!("not cached")
        };
        assert_ne!(fresh, generation);
        cache.insert(fresh, "default/k".into(), &record());
        assert!(cache.get("default/k").is_ok());
        cache.invalidate();
        assert!(cache.get("default/k").is_err());
    }

    #[test]
    fn stays_bounded() {
        let cache = KeyCache::default();
        for i in 0..MAX_KEYS + 5 {
            cache.insert(0, format!("default/k{i}"), &record());
        }
        assert!(cache.lock().keys.len() <= MAX_KEYS);
    }
}
