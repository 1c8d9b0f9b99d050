//! What the handlers need of an edge server's keys: a cache in front of a central key store.
//! The edge server implements [`EdgeKeys`]; the API names no edge type, so it stays below the
//! servers that use it.
use std::time::Duration;

use crate::records::KeyRecord;

/// Keys in a central key store behind a cache, as the handlers see them. Every method answers
/// at once (the key store is called by the edge server's workers, never from a handler).
pub(crate) trait EdgeKeys: Send + Sync {
    /// The key, if the cache holds it.
    fn cached(&self, name: &str) -> Option<KeyRecord>;
    /// The key store's latency as last checked, or why it is down.
    fn health(&self) -> Result<Duration, KeyStoreDown>;
    /// Appends the Prometheus families of the cache and the key store to `out`.
    fn render_metrics(&self, out: &mut String);
}

/// Why the key store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyStoreDown {
    /// It cannot be reached (network, process gone, or the edge server is serving offline).
    Unreachable,
    /// It answers, but wrongly.
    Unavailable,
}
