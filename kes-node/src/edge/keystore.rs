//! The `KeyStore` trait: where an edge server's keys live. A key store holds opaque values by
//! key name (the encoded keys of `format.rs`); every call blocks, so the edge server calls it
//! only from its worker threads, never from the event loop.
use std::time::Duration;

use zeroize::Zeroizing;

/// Why a key store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyStoreError {
    NotFound,
    Exists,
    /// The key store cannot be reached (network, process or disk gone): the edge server goes
    /// offline and, if configured, serves from its cache.
    Unreachable(String),
    /// It answered, but not with what was asked (refused, misconfigured, broken).
    Failed(String),
}

impl std::fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyStoreError::NotFound => f.write_str("key does not exist"),
            KeyStoreError::Exists => f.write_str("key already exists"),
            KeyStoreError::Unreachable(why) => write!(f, "key store is not reachable: {why}"),
            KeyStoreError::Failed(why) => write!(f, "key store failed: {why}"),
        }
    }
}

/// A central store of keys. Implementations are shared by several worker threads.
pub(crate) trait KeyStore: Send + Sync {
    /// What and where it is, for logs (`fs: /var/lib/kes/keys`).
    fn describe(&self) -> String;
    /// Checks that the store answers; returns how long that took.
    fn status(&self) -> Result<Duration, KeyStoreError>;
    /// Stores a new value; `Exists` if the name is taken.
    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError>;
    /// Reads a value.
    fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError>;
    /// Deletes a value; `NotFound` if absent.
    fn delete(&self, name: &str) -> Result<(), KeyStoreError>;
    /// The names starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError>;
}
