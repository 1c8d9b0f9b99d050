//! The edge server (`kes-node edge`): upstream's stateless KES in front of a central key store.
//!
//! It holds no state of its own. Keys live in a [`KeyStore`] (a directory, a kes-node cluster,
//! AWS Secrets Manager) and are cached in memory ([`cache`]); policies and identities come
//! from the config file. Requests travel the stateful server's pipeline (`net`, `http`,
//! `auth`, `api`); only where keys come from differs: the key handlers ask [`Edge::cached`],
//! and on a miss the event loop hands the fetch to the [`Runtime`]'s worker threads, which
//! also run creates and deletes. Key store I/O never runs on the event loop's thread.
//!
//! A health check asks the key store every `keystore.<kind>.status.ping` (every second while
//! it is down); a call that finds it unreachable marks it offline at once. While offline,
//! `/v1/ready` and `/v1/status` say so, and with `cache.expiry.offline` set, cached keys go on
//! serving.
#[cfg(feature = "aws")]
pub(crate) mod aws;
pub(crate) mod cache;
pub(crate) mod format;
pub(crate) mod fs;
pub(crate) mod kes;
pub(crate) mod keystore;
mod runtime;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use keystore::{KeyStore, KeyStoreError};
pub(crate) use runtime::Runtime;

use crate::api::{EdgeKeys, KeyStoreDown};
use crate::config::CacheConfig;
use crate::records::KeyRecord;
use cache::Cache;

/// The public CAs (Mozilla's list, built in) that key stores reached over the internet are
/// checked against unless the config names CAs.
pub(crate) fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// What the handlers and the runtime share: the key store, the cache and the store's health.
pub(crate) struct Edge {
    pub store: Arc<dyn KeyStore>,
    pub cache: Cache,
    /// The last health: the store's latency, or why it is down.
    health: Mutex<Result<Duration, KeyStoreError>>,
    /// `keystore.<kind>.status.ping`
    pub ping: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    /// Set when the server stops: the health check ends.
    stopped: AtomicBool,
}

impl Edge {
    pub(crate) fn new(store: Arc<dyn KeyStore>, cache: CacheConfig, ping: Duration) -> Edge {
        Edge {
            store,
            cache: Cache::new(cache),
            health: Mutex::new(Ok(Duration::ZERO)),
            ping,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// The cached key, counting a hit or a miss.
    pub(crate) fn cached(&self, name: &str) -> Option<KeyRecord> {
        let found = self.cache.get(name, Instant::now());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The key store's health as last checked: its latency, or why it is down.
    pub(crate) fn health(&self) -> Result<Duration, KeyStoreError> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a health check's result. Like upstream, any failed check puts the cache in
    /// offline mode (a store that answers only errors serves no keys either).
    pub(crate) fn report(&self, result: Result<Duration, KeyStoreError>) {
        let offline = result.is_err();
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = result;
        self.cache.set_offline(offline, Instant::now());
    }

    /// A store call found the store unreachable (`false`) or answering (`true`).
    pub(crate) fn observed(&self, reachable: bool, why: Option<&str>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match (reachable, &*health) {
            (false, _) => {
                *health = Err(KeyStoreError::Unreachable(
                    why.unwrap_or("unreachable").to_owned(),
                ));
                drop(health);
                self.cache.set_offline(true, Instant::now());
            }
            (true, Err(KeyStoreError::Unreachable(_))) => {
                // It answers again; the next check measures the latency.
                *health = Ok(Duration::from_millis(1));
                drop(health);
                self.cache.set_offline(false, Instant::now());
            }
            (true, _) => {}
        }
    }

    /// Prometheus families of the cache and the key store (beside upstream's).
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let up = u8::from(self.health().is_ok());
        for (name, kind, help, value) in [
            (
                "kes_edge_cache_hits_total",
                "counter",
                "Key lookups answered from the cache.",
                self.hits.load(Ordering::Relaxed),
            ),
            (
                "kes_edge_cache_misses_total",
                "counter",
                "Key lookups the cache could not answer.",
                self.misses.load(Ordering::Relaxed),
            ),
            (
                "kes_edge_keystore_fetches_total",
                "counter",
                "Keys read from the key store.",
                self.fetches.load(Ordering::Relaxed),
            ),
            (
                "kes_edge_cache_keys",
                "gauge",
                "Keys in the cache.",
                self.cache.len() as u64,
            ),
            (
                "kes_edge_keystore_up",
                "gauge",
                "1 while the key store answers, else 0.",
                u64::from(up),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// What the handlers see of it (the API names no edge type).
impl EdgeKeys for Edge {
    fn cached(&self, name: &str) -> Option<KeyRecord> {
        Edge::cached(self, name)
    }

    fn health(&self) -> Result<Duration, KeyStoreDown> {
        Edge::health(self).map_err(|e| match e {
            KeyStoreError::Unreachable(_) => KeyStoreDown::Unreachable,
            _ => KeyStoreDown::Unavailable,
        })
    }

    fn render_metrics(&self, out: &mut String) {
        Edge::render_metrics(self, out)
    }
}
