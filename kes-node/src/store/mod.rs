//! The one owner of `kes.db` (redb). Every value is encrypted with the root key, with
//! `<table>/<enclave>/<name>` as associated data, so a value cannot be moved to another name
//! or table undetected. The root key itself is stored sealed by each configured HSM.
use std::path::Path;

use kes_core::crypto::{HmacKey, SecretKey};

use crate::hsm::Hsm;

/// The enclave that always exists; requests without `Kes-Enclave` use it.
pub const DEFAULT_ENCLAVE: &str = "default";

/// A key as stored: the secret key, its HMAC key (absent for keys imported from legacy
/// formats) and who created it when.
#[derive(Clone)]
pub struct KeyRecord {
    pub key: SecretKey,
    pub hmac: Option<HmacKey>,
    pub created_at: time::OffsetDateTime,
    pub created_by: String,
}

/// Why the database could not be opened. `Display` is one line that says what to do.
#[derive(Debug)]
pub enum OpenError {
    /// The HSM key does not unseal the root key in `kes.db`.
    WrongHsmKey { hsm: String },
    /// `kes.db` has no root key sealed by this HSM.
    NoRootKeyForHsm { hsm: String },
    /// The file cannot be opened or is not a redb database.
    Database(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

/// Why a store operation failed.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    Exists,
    /// The stored value does not decrypt or decode: the file was modified outside kes-node.
    Corrupted(String),
    /// redb or the disk failed.
    Io(String),
}

/// The open database and its unsealed root key.
pub struct Store {
    _db: redb::Database,
    _root: SecretKey,
}

impl Store {
    /// Opens `<dir>/kes.db`, creating it (with a fresh root key sealed by `hsm`) if missing.
    /// Creation is atomic: a failure never leaves a database without a root key behind.
    pub fn open(dir: &Path, hsm: &dyn Hsm) -> Result<Store, OpenError> {
        todo!("{dir:?}{}", hsm.name())
    }
    /// Stores a new key; `Exists` if the name is taken. Durable (fsync) when it returns.
    pub fn create_key(&self, enclave: &str, name: &str, rec: &KeyRecord) -> Result<(), StoreError> {
        todo!("{enclave}{name}{:?}", rec.created_by)
    }
    /// Reads a key.
    pub fn key(&self, enclave: &str, name: &str) -> Result<KeyRecord, StoreError> {
        todo!("{enclave}{name}")
    }
    /// Deletes a key; `NotFound` if absent.
    pub fn delete_key(&self, enclave: &str, name: &str) -> Result<(), StoreError> {
        todo!("{enclave}{name}")
    }
    /// Names of the keys starting with `prefix`, sorted.
    pub fn list_keys(&self, enclave: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        todo!("{enclave}{prefix}")
    }
}
