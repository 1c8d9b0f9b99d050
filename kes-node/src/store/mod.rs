//! The one owner of `kes.db` (redb). Every value is encrypted with the root key, with
//! `<table>/<enclave>/<name>` as associated data, so a value cannot be moved to another name
//! or table undetected. The root key itself is stored sealed by each configured HSM.
//!
//! # Layout
//!
//! | table  | redb key            | value                                                  |
//! |--------|---------------------|--------------------------------------------------------|
//! | `meta` | `version`           | format version, `u32` little endian (currently 1)      |
//! | `meta` | `root/<hsm name>`   | the 32-byte AES256 root key, sealed by that HSM (`roots.rs`) |
//! | `key`  | `<enclave>/<name>`  | root-key ciphertext of a postcard `KeyRecord` (`codec.rs`) |
//!
//! Further tables (`policy`, `identity`, `secret`, `enclave`) follow the `key` pattern: one
//! `Table` constant (listed in `TABLES`, so new databases create it), a record struct in
//! `codec.rs`, and typed wrappers around the private put-new/get/delete/list layer.
//!
//! # Atomic creation
//!
//! A new database is written to `kes.db.tmp`, its sealed root key committed in one durable
//! transaction, and only then renamed to `kes.db` (and the directory synced). So `kes.db`,
//! once it exists, always holds a root key. Opening an existing file checks the HSM key through
//! a copy-on-write backend (`readonly.rs`) first, so a refused open never writes to the file.
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kes_core::crypto::{Cipher, SecretKey};
use redb::{Database, Durability, TableDefinition};
use zeroize::{Zeroize, Zeroizing};

use crate::hsm::Hsm;

mod apply;
mod backup;
mod check;
pub(crate) mod codec;
mod db;
mod digest;
mod error;
mod guard;
mod header;
mod key_cache;
mod open;
mod raft;
mod readonly;
mod roots;
mod snapshot;
pub(crate) mod space;
mod tx;

pub(crate) use open::OpenError;
use open::{
    backend_builder, create, damaged, db_failed, init_tables, open_failed, precheck, root_entry,
    unseal_root,
};
pub(crate) use open::{open_checked, Checked};
use tx::{corrupted, item_key};
pub(crate) use tx::{decrypt, encode_failed, read_enclave, Tx};

pub(crate) use backup::BackupStream;
pub(crate) use check::check;
pub(crate) use error::{
    CodecError, ConsensusDefect, Corruption, Defect, IoFailure, LostAnswer, NoSpace, Refusal,
    StoreError, Unavailable,
};
pub(crate) use raft::{
    decode_addresses, encode_addresses, Addresses, Outcomes, RaftState, ReadyRef,
};
pub(crate) use snapshot::{SnapshotReader, CHUNK_BYTES};

use crate::command::Command;
use crate::records::{EnclaveRecord, IdentityRecord, KeyRecord, PolicyRecord, SecretRecord};
pub(crate) use roots::sealed_names;
#[cfg(test)]
mod tests;

/// The enclave that always exists; requests without `Kes-Enclave` use it.
pub(crate) const DEFAULT_ENCLAVE: &str = "default";

/// The file name of the database inside the node's directory.
pub(crate) const DB_FILE: &str = "kes.db";
/// Where a new database is prepared before it is renamed to [`DB_FILE`].
const DB_TMP_FILE: &str = "kes.db.tmp";
/// The on-disk format this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_VERSION: &str = "version";
pub(crate) const META_ROOT_PREFIX: &str = "root/";

/// A table of values encrypted with the root key and keyed by `<enclave>/<name>`.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    /// The redb table name and the first element of the associated data.
    name: &'static str,
    /// What an item is called in error messages.
    what: &'static str,
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

pub(crate) const KEYS: Table = Table {
    name: "key",
    what: "key",
};
pub(crate) const POLICIES: Table = Table {
    name: "policy",
    what: "policy",
};
pub(crate) const IDENTITIES: Table = Table {
    name: "identity",
    what: "identity",
};
pub(crate) const SECRETS: Table = Table {
    name: "secret",
    what: "secret",
};
/// Enclave records, keyed by the enclave name alone and encrypted with the root key.
pub(crate) const ENCLAVES: Table = Table {
    name: "enclave",
    what: "enclave",
};
/// Every table keyed by `<enclave>/<name>`; all are created with the database.
pub(crate) const TABLES: [Table; 4] = [KEYS, POLICIES, IDENTITIES, SECRETS];

fn io_err(err: impl std::fmt::Display) -> StoreError {
    let msg = err.to_string();
    // redb found a page that does not check out: the file is damaged, which is no I/O hiccup
    // to retry (`500` naming it, not `502`).
    if msg.contains("DB corrupted") {
        return StoreError::Corrupted(Corruption::Damaged(msg));
    }
    // A full disk met inside a transaction (redb writing out its cache), not at its commit.
    if msg.contains("No space left on device") || msg.contains("Disk quota exceeded") {
        return StoreError::NoSpace(NoSpace::DiskFull(msg));
    }
    StoreError::Io(IoFailure::Db(msg))
}

/// The open database and its unsealed root key.
pub struct Store {
    db: db::Db,
    /// The free-space floor for client writes (see `space.rs`).
    floor: space::Floor,
    root: SecretKey,
    /// Unsealed enclave data keys; an entry is dropped when its enclave is deleted.
    enclave_keys: Mutex<HashMap<String, Arc<SecretKey>>>,
    /// Decoded keys (see `key_cache.rs`).
    keys: key_cache::KeyCache,
    /// Counts committed write transactions: caches of what the state decides (the
    /// authorization cache in `auth/`) compare it to know they are current.
    commits: std::sync::atomic::AtomicU64,
    /// The key of the table digests (see `digest.rs`).
    digest_key: digest::DigestKey,
}

impl Store {
    /// Opens `<dir>/kes.db`, creating it (with a fresh root key sealed by `hsm`) if missing.
    /// Creation is atomic: a failure never leaves a database without a root key behind.
    pub fn open(dir: &Path, hsm: &dyn Hsm) -> Result<Store, OpenError> {
        let path = dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => create(dir, hsm)?,
            Err(err) => {
                return Err(OpenError::Database(format!(
                    "cannot access {}: {err}: check the directory's permissions",
                    path.display()
                )))
            }
        }
        precheck(&path, hsm)?;
        let db = Database::builder()
            .open(&path)
            .map_err(|err| open_failed(&path, err))?;
        let root = unseal_root(&db, &path, hsm)?;
        let store = Store {
            db: db::Db::new(db, Some(path.clone())),
            floor: space::Floor::new(Some(dir)),
            digest_key: digest::DigestKey::derive(&root),
            root,
            enclave_keys: Mutex::new(HashMap::new()),
            keys: Default::default(),
            commits: Default::default(),
        };
        store
            .ensure_default_enclave()
            .map_err(|err| db_failed(&path, err))?;
        if let Err(err) = store.ensure_digests() {
            // A database from before table digests, on a full disk: checked once there is room.
            eprintln!(
                "kes-node: cannot add table digests to {}: {err}",
                path.display()
            );
        }
        Ok(store)
    }

    /// Reopens `kes.db` if a write failed since it was opened (see `db.rs`); a no-op otherwise.
    pub fn heal(&self) -> Result<(), StoreError> {
        self.db.heal().map_err(StoreError::Io)
    }

    /// A store that lives in memory only, under a fresh random root key. The edge server keeps
    /// the config's policies and identities in one (its keys live in a central key store).
    pub fn in_memory() -> Result<Store, OpenError> {
        let hsm = crate::hsm::SoftHsmDevice(kes_core::hsm::SoftHsm::from_key(SecretKey::new(
            Cipher::Aes256,
            crate::random::bytes(),
        )));
        Store::open_backend(redb::backends::InMemoryBackend::new(), &hsm)
    }

    /// Opens the database on any redb storage backend, creating it (with a fresh root key
    /// sealed by `hsm`) if the backend is empty. The simulator (feature `sim`) keeps each
    /// node's `kes.db` in memory this way, on a backend that loses unsynced writes on a crash.
    pub fn open_backend(
        backend: impl redb::StorageBackend,
        hsm: &dyn Hsm,
    ) -> Result<Store, OpenError> {
        let failed = |e: &dyn std::fmt::Display| OpenError::Database(e.to_string());
        let db = backend_builder()
            .create_with_backend(backend)
            .map_err(|e| failed(&e))?;
        let fresh = db
            .begin_read()
            .map_err(|e| failed(&e))?
            .open_table(META)
            .is_err();
        if fresh {
            let mut root: [u8; 32] = crate::random::bytes();
            let sealed = hsm.seal(&root);
            root.zeroize();
            let sealed = sealed.map_err(|e| failed(&e))?;
            init_tables(&db, hsm, &sealed).map_err(|e| failed(&e))?;
        }
        let root = unseal_root(&db, Path::new("memory"), hsm)?;
        let store = Store {
            db: db::Db::new(db, None),
            floor: space::Floor::new(None),
            digest_key: digest::DigestKey::derive(&root),
            root,
            enclave_keys: Mutex::new(HashMap::new()),
            keys: Default::default(),
            commits: Default::default(),
        };
        store.ensure_default_enclave().map_err(|e| failed(&e))?;
        Ok(store)
    }

    /// Applies one state change in one durable transaction. Every write goes through here,
    /// so that a replicated log can later apply the same commands in the same order.
    pub fn apply(&self, cmd: &Command) -> Result<(), StoreError> {
        guard::guarded(|| "writing".into(), || self.apply_unguarded(cmd))
    }

    fn apply_unguarded(&self, cmd: &Command) -> Result<(), StoreError> {
        let mut tx = self.begin()?;
        apply::apply(&mut tx, cmd)?;
        tx.commit()?;
        if let Command::DeleteEnclave { name } = cmd {
            self.enclave_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
        }
        Ok(())
    }

    /// How many write transactions committed so far (any change of state bumps it, after the
    /// change is visible to readers).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stores a new key; `Exists` if the name is taken. Durable (fsync) when it returns.
    pub fn create_key(&self, enclave: &str, name: &str, rec: &KeyRecord) -> Result<(), StoreError> {
        self.apply(&Command::CreateKey {
            enclave: enclave.into(),
            name: name.into(),
            key: rec.clone(),
        })
    }

    /// Reads a key.
    pub fn key(&self, enclave: &str, name: &str) -> Result<KeyRecord, StoreError> {
        let item = item_key(enclave, name)?;
        let generation = match self.keys.get(&item) {
            Ok(record) => return Ok(record),
            Err(generation) => generation,
        };
        let plaintext = self.get(KEYS, enclave, name)?;
        let record = codec::decode_key(&plaintext)
            .map_err(|why| corrupted(KEYS, enclave, name, Defect::Undecodable(why)))?;
        self.keys.insert(generation, item, &record);
        Ok(record)
    }

    /// Deletes a key; `NotFound` if absent.
    pub fn delete_key(&self, enclave: &str, name: &str) -> Result<(), StoreError> {
        self.apply(&Command::DeleteKey {
            enclave: enclave.into(),
            name: name.into(),
        })
    }

    /// Names of the keys starting with `prefix`, sorted.
    pub fn list_keys(&self, enclave: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list(KEYS, enclave, prefix)
    }

    /// Reads a policy.
    pub fn policy(&self, enclave: &str, name: &str) -> Result<PolicyRecord, StoreError> {
        let plaintext = self.get(POLICIES, enclave, name)?;
        codec::decode_policy(&plaintext)
            .map_err(|why| corrupted(POLICIES, enclave, name, Defect::Undecodable(why)))
    }

    /// Names of the policies starting with `prefix`, sorted.
    pub fn list_policies(&self, enclave: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list(POLICIES, enclave, prefix)
    }

    /// Reads an identity.
    pub fn identity(&self, enclave: &str, id: &str) -> Result<IdentityRecord, StoreError> {
        let plaintext = self.get(IDENTITIES, enclave, id)?;
        codec::decode_identity(&plaintext)
            .map_err(|why| corrupted(IDENTITIES, enclave, id, Defect::Undecodable(why)))
    }

    /// Identities starting with `prefix`, sorted.
    pub fn list_identities(&self, enclave: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list(IDENTITIES, enclave, prefix)
    }

    /// Reads a secret.
    pub fn secret(&self, enclave: &str, name: &str) -> Result<SecretRecord, StoreError> {
        let plaintext = self.get(SECRETS, enclave, name)?;
        codec::decode_secret(&plaintext)
            .map_err(|why| corrupted(SECRETS, enclave, name, Defect::Undecodable(why)))
    }

    /// Names of the secrets starting with `prefix`, sorted.
    pub fn list_secrets(&self, enclave: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list(SECRETS, enclave, prefix)
    }

    /// Reads an enclave's record; `NotFound` if it does not exist.
    pub fn enclave(&self, name: &str) -> Result<EnclaveRecord, StoreError> {
        guard::guarded(
            || format!("reading enclave '{name}'"),
            || {
                let txn = self.db.begin_read().map_err(io_err)?;
                read_enclave(
                    &txn.open_table(ENCLAVES.def()).map_err(io_err)?,
                    &self.root,
                    name,
                )
            },
        )
    }

    /// Names of the enclaves starting with `prefix`, sorted.
    pub fn list_enclaves(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        guard::guarded(
            || "listing enclaves".into(),
            || self.list_enclaves_unguarded(prefix),
        )
    }

    fn list_enclaves_unguarded(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(ENCLAVES.def()).map_err(io_err)?;
        let mut names = Vec::new();
        for entry in t.range(prefix..).map_err(io_err)? {
            let (key, _) = entry.map_err(io_err)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            names.push(key.value().to_string());
        }
        Ok(names)
    }

    // The generic layer: every table stores ciphertexts under `<enclave>/<name>`, encrypted
    // with the enclave's data key, which is itself stored encrypted with the root key.

    fn begin(&self) -> Result<Tx<'_>, StoreError> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate);
        Ok(Tx {
            store: self,
            txn,
            removes_keys: false,
            digest: Default::default(),
        })
    }

    /// The data key of `enclave`, cached after the first read.
    fn enclave_key(&self, enclave: &str) -> Result<Arc<SecretKey>, StoreError> {
        if let Some(k) = self
            .enclave_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(enclave)
        {
            return Ok(k.clone());
        }
        let rec = match self.enclave(enclave) {
            Ok(rec) => rec,
            Err(StoreError::NotFound) => return Err(StoreError::NoEnclave),
            Err(err) => return Err(err),
        };
        let key = Arc::new(rec.key.clone());
        self.enclave_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(enclave.to_string(), key.clone());
        Ok(key)
    }

    /// Reads and decrypts a value.
    fn get(
        &self,
        table: Table,
        enclave: &str,
        name: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let what = || format!("reading {} '{name}' in enclave '{enclave}'", table.what);
        guard::guarded(what, || self.get_unguarded(table, enclave, name))
    }

    fn get_unguarded(
        &self,
        table: Table,
        enclave: &str,
        name: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let key = item_key(enclave, name)?;
        let enclave_key = self.enclave_key(enclave)?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = match txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Err(StoreError::NotFound),
            Err(err) => return Err(io_err(err)),
        };
        let value = t
            .get(key.as_str())
            .map_err(io_err)?
            .ok_or(StoreError::NotFound)?;
        decrypt(&enclave_key, table, enclave, name, &key, value.value())
    }

    /// Sorted names in `enclave` that start with `prefix` (all names if it is empty).
    fn list(&self, table: Table, enclave: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let what = || format!("listing {} in enclave '{enclave}'", table.name);
        guard::guarded(what, || self.list_unguarded(table, enclave, prefix))
    }

    fn list_unguarded(
        &self,
        table: Table,
        enclave: &str,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        // A listing in an enclave that does not exist is an error, not an empty list.
        self.enclave_key(enclave)?;
        let start = match item_key(enclave, prefix) {
            Ok(start) => start,
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = match txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(io_err(err)),
        };
        let skip = enclave.len() + 1;
        let mut names = Vec::new();
        // redb orders `&str` keys bytewise, like `str`'s `Ord`, so the matches are contiguous.
        for entry in t.range(start.as_str()..).map_err(io_err)? {
            let (key, _) = entry.map_err(io_err)?;
            let key = key.value();
            if !key.starts_with(start.as_str()) {
                break;
            }
            names.push(key[skip..].to_string());
        }
        Ok(names)
    }

    /// Creates the `default` enclave if the database has none (a new database).
    fn ensure_default_enclave(&self) -> Result<(), StoreError> {
        match self.enclave(DEFAULT_ENCLAVE) {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound) => self.apply(&Command::CreateEnclave {
                name: DEFAULT_ENCLAVE.into(),
                record: EnclaveRecord {
                    key: SecretKey::new(Cipher::Aes256, crate::random::bytes()),
                    created_at: crate::timefmt::now(),
                    created_by: String::new(),
                },
            }),
            Err(err) => Err(err),
        }
    }
}
