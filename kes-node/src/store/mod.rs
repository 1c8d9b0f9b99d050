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
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kes_core::crypto::{Cipher, SecretKey, RANDOM_LEN};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use zeroize::{Zeroize, Zeroizing};

use crate::hsm::{Hsm, HsmError};

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
mod raft;
mod readonly;
mod roots;
mod snapshot;
pub(crate) mod space;

pub(crate) use backup::BackupStream;
pub(crate) use check::check;
pub(crate) use error::{
    CodecError, ConsensusDefect, Corruption, Defect, IoFailure, NoSpace, Refusal, StoreError,
    Unavailable,
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
        match self {
            OpenError::WrongHsmKey { hsm } if hsm == kes_core::hsm::SOFT_HSM_NAME => f.write_str(
                "kes.db is sealed with a different HSM key: use the key this database was \
                 created with (KES_HSM_KEY, or hsm.key in the config)",
            ),
            OpenError::WrongHsmKey { hsm } => write!(
                f,
                "kes.db is sealed with a different key of HSM '{hsm}': use the HSM key this \
                 database was created with"
            ),
            OpenError::NoRootKeyForHsm { hsm } => write!(
                f,
                "kes.db has no root key sealed by HSM '{hsm}': start kes-node with the HSM this \
                 database was created with"
            ),
            OpenError::Database(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for OpenError {}

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

/// A write transaction: reads see its own writes; nothing is visible until `commit`.
pub(crate) struct Tx<'s> {
    store: &'s Store,
    txn: redb::WriteTransaction,
    /// Set when the transaction removes keys: the key cache is emptied when it commits.
    removes_keys: bool,
    /// How the tables' digests change when it commits (see `digest.rs`).
    pub(crate) digest: digest::Delta,
}

impl Tx<'_> {
    fn commit(self) -> Result<(), StoreError> {
        self.digest.apply(&self.store.digest_key, &self.txn)?;
        if let Err(err) = self.txn.commit() {
            self.store.db.commit_failed();
            return Err(db::commit_error(err));
        }
        self.store
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.removes_keys {
            self.store.keys.invalidate();
        }
        Ok(())
    }

    /// The data key of an enclave as this transaction sees it.
    fn enclave_key(&self, enclave: &str) -> Result<SecretKey, StoreError> {
        let t = self.txn.open_table(ENCLAVES.def()).map_err(io_err)?;
        match read_enclave(&t, &self.store.root, enclave) {
            Ok(rec) => Ok(rec.key),
            Err(StoreError::NotFound) => Err(StoreError::NoEnclave),
            Err(err) => Err(err),
        }
    }

    pub(crate) fn get(
        &self,
        table: Table,
        enclave: &str,
        name: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let key = item_key(enclave, name)?;
        let enclave_key = self.enclave_key(enclave)?;
        let t = self.txn.open_table(table.def()).map_err(io_err)?;
        let value = t
            .get(key.as_str())
            .map_err(io_err)?
            .ok_or(StoreError::NotFound)?;
        decrypt(&enclave_key, table, enclave, name, &key, value.value())
    }

    /// Encrypts and stores `plaintext`; with `must_be_new`, `Exists` if the name is taken.
    pub(crate) fn put(
        &mut self,
        table: Table,
        enclave: &str,
        name: &str,
        plaintext: &[u8],
        must_be_new: bool,
    ) -> Result<(), StoreError> {
        let key = item_key(enclave, name)?;
        let enclave_key = self.enclave_key(enclave)?;
        let random: [u8; RANDOM_LEN] = crate::random::bytes();
        let value = enclave_key.encrypt(&random, plaintext, aad(table, &key).as_bytes());
        let mut t = self.txn.open_table(table.def()).map_err(io_err)?;
        if must_be_new && t.get(key.as_str()).map_err(io_err)?.is_some() {
            return Err(StoreError::Exists);
        }
        let dk = &self.store.digest_key;
        if let Some(old) = t.insert(key.as_str(), value.as_slice()).map_err(io_err)? {
            self.digest.remove(dk, table, &key, old.value());
        }
        self.digest.insert(dk, table, &key, &value);
        Ok(())
    }

    /// Removes a value; `NotFound` if absent.
    pub(crate) fn delete(
        &mut self,
        table: Table,
        enclave: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let key = item_key(enclave, name)?;
        if table.name == KEYS.name {
            self.removes_keys = true;
        }
        let mut t = self.txn.open_table(table.def()).map_err(io_err)?;
        let old = t.remove(key.as_str()).map_err(io_err)?;
        if let Some(old) = old {
            self.digest
                .remove(&self.store.digest_key, table, &key, old.value());
            return Ok(());
        }
        drop(old);
        drop(t);
        // As reads do: a missing enclave is named as such (found by tests/authz_model.rs).
        let enclaves = self.txn.open_table(ENCLAVES.def()).map_err(io_err)?;
        if enclaves.get(enclave).map_err(io_err)?.is_none() {
            return Err(StoreError::NoEnclave);
        }
        Err(StoreError::NotFound)
    }

    /// Stores a new enclave record (encrypted with the root key).
    pub(crate) fn create_enclave(
        &mut self,
        name: &str,
        rec: &EnclaveRecord,
    ) -> Result<(), StoreError> {
        if name.contains('/') {
            return Err(StoreError::NotFound);
        }
        let plaintext = codec::encode_enclave(rec).map_err(encode_failed)?;
        let random: [u8; RANDOM_LEN] = crate::random::bytes();
        let value = self
            .store
            .root
            .encrypt(&random, &plaintext, enclave_aad(name).as_bytes());
        let mut t = self.txn.open_table(ENCLAVES.def()).map_err(io_err)?;
        if t.get(name).map_err(io_err)?.is_some() {
            return Err(StoreError::Exists);
        }
        t.insert(name, value.as_slice()).map_err(io_err)?;
        self.digest
            .insert(&self.store.digest_key, ENCLAVES, name, &value);
        Ok(())
    }

    /// Removes an enclave record and every item of the enclave in every table.
    pub(crate) fn delete_enclave(&mut self, name: &str) -> Result<(), StoreError> {
        self.removes_keys = true;
        let dk = &self.store.digest_key;
        {
            let mut t = self.txn.open_table(ENCLAVES.def()).map_err(io_err)?;
            let old = t.remove(name).map_err(io_err)?;
            match old {
                Some(old) => self.digest.remove(dk, ENCLAVES, name, old.value()),
                None => return Err(StoreError::NotFound),
            }
        }
        let prefix = item_key(name, "")?;
        for table in TABLES {
            let mut t = self.txn.open_table(table.def()).map_err(io_err)?;
            let doomed: Vec<String> = t
                .range(prefix.as_str()..)
                .map_err(io_err)?
                .map_while(|e| e.ok().map(|(k, _)| k.value().to_string()))
                .take_while(|k| k.starts_with(prefix.as_str()))
                .collect();
            for k in doomed {
                if let Some(old) = t.remove(k.as_str()).map_err(io_err)? {
                    self.digest.remove(dk, table, &k, old.value());
                }
            }
        }
        Ok(())
    }
}

/// Decrypts a stored value or reports which item is corrupted.
pub(crate) fn decrypt(
    key: &SecretKey,
    table: Table,
    enclave: &str,
    name: &str,
    item_key: &str,
    value: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    match key.decrypt(value, aad(table, item_key).as_bytes()) {
        Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
        Err(_) => Err(corrupted(
            table,
            enclave,
            name,
            Defect::Undecryptable("its enclave's key"),
        )),
    }
}

fn enclave_aad(name: &str) -> String {
    format!("{}/{name}", ENCLAVES.name)
}

/// Reads an enclave record from an open `enclave` table.
pub(crate) fn read_enclave(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    root: &SecretKey,
    name: &str,
) -> Result<EnclaveRecord, StoreError> {
    let value = t.get(name).map_err(io_err)?.ok_or(StoreError::NotFound)?;
    let plaintext = root
        .decrypt(value.value(), enclave_aad(name).as_bytes())
        .map_err(|_| corrupted(ENCLAVES, name, name, Defect::Undecryptable("the root key")))?;
    let plaintext = Zeroizing::new(plaintext);
    codec::decode_enclave(&plaintext)
        .map_err(|why| corrupted(ENCLAVES, name, name, Defect::Undecodable(why)))
}

/// `<enclave>/<name>`. An enclave name containing `/` would make keys ambiguous
/// (`a/b` + `c` vs `a` + `b/c`); no such enclave can exist, so it is `NotFound`.
fn item_key(enclave: &str, name: &str) -> Result<String, StoreError> {
    if enclave.contains('/') {
        return Err(StoreError::NotFound);
    }
    // Built by hand: this runs for every key operation (the key cache's lookup).
    let mut key = String::with_capacity(enclave.len() + 1 + name.len());
    key.push_str(enclave);
    key.push('/');
    key.push_str(name);
    Ok(key)
}

/// The associated data of a value: `<table>/<enclave>/<name>`.
fn aad(table: Table, item_key: &str) -> String {
    format!("{}/{item_key}", table.name)
}

fn corrupted(table: Table, enclave: &str, name: &str, defect: Defect) -> StoreError {
    StoreError::Corrupted(Corruption::Item {
        what: table.what,
        enclave: enclave.into(),
        name: name.into(),
        defect,
    })
}

/// A record that does not encode (postcard failed).
pub(crate) fn encode_failed(why: CodecError) -> StoreError {
    StoreError::Io(IoFailure::Encode(why))
}

fn root_entry(hsm: &dyn Hsm) -> String {
    format!("{META_ROOT_PREFIX}{}", hsm.name())
}

fn open_failed(path: &Path, err: redb::DatabaseError) -> OpenError {
    OpenError::Database(match err {
        redb::DatabaseError::DatabaseAlreadyOpen => format!(
            "{} is in use by another process: stop the other kes-node using this directory",
            path.display()
        ),
        err => format!(
            "cannot open {}: {err}: restore the file from a backup or use another directory",
            path.display()
        ),
    })
}

fn db_failed(path: &Path, err: impl std::fmt::Display) -> OpenError {
    OpenError::Database(format!(
        "cannot read {}: {err}: restore the file from a backup or use another directory",
        path.display()
    ))
}

/// Checks the format version and unseals the root key of an open database.
fn unseal_root(db: &Database, path: &Path, hsm: &dyn Hsm) -> Result<SecretKey, OpenError> {
    let txn = db.begin_read().map_err(|err| db_failed(path, err))?;
    let meta = txn.open_table(META).map_err(|err| db_failed(path, err))?;
    let version = meta.get(META_VERSION).map_err(|err| db_failed(path, err))?;
    let version = version
        .as_ref()
        .map(|v| v.value())
        .and_then(|v| <[u8; 4]>::try_from(v).ok());
    match version.map(u32::from_le_bytes) {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(OpenError::Database(format!(
                "{} has format version {v} but this kes-node reads version {FORMAT_VERSION}: \
                 use a kes-node release that matches the database",
                path.display()
            )))
        }
        None => return Err(db_failed(path, "no valid format version")),
    }
    let sealed = meta
        .get(root_entry(hsm).as_str())
        .map_err(|err| db_failed(path, err))?;
    let Some(sealed) = sealed else {
        return Err(OpenError::NoRootKeyForHsm {
            hsm: hsm.name().to_string(),
        });
    };
    let bytes = match hsm.unseal(sealed.value()) {
        Ok(bytes) => bytes,
        Err(HsmError::WrongKey) => {
            return Err(OpenError::WrongHsmKey {
                hsm: hsm.name().to_string(),
            })
        }
        Err(HsmError::Refused(msg)) => {
            return Err(OpenError::Database(format!(
                "HSM '{}' refuses to unseal the root key: {msg}",
                hsm.name()
            )))
        }
        Err(HsmError::Device(msg)) => {
            return Err(OpenError::Database(format!(
                "HSM '{}' cannot unseal the root key: {msg}: check the HSM",
                hsm.name()
            )))
        }
    };
    let mut root = <[u8; 32]>::try_from(&bytes[..])
        .map_err(|_| db_failed(path, "the unsealed root key is not 32 bytes"))?;
    let key = SecretKey::new(Cipher::Aes256, root);
    root.zeroize();
    Ok(key)
}

/// Checks an existing database through a copy-on-write backend, so that every refusal leaves
/// the file exactly as it was: that redb can open it, that the HSM unseals its root key,
/// redb's own integrity check (page checksums and structure), and the table digests (no
/// record missing or altered). A panic of redb on a damaged file is an error here too.
fn precheck(path: &Path, hsm: &dyn Hsm) -> Result<(), OpenError> {
    let file = File::open(path).map_err(|err| {
        OpenError::Database(format!(
            "cannot open {}: {err}: check the file's permissions",
            path.display()
        ))
    })?;
    match guard::catch(|| check_file(file, path, hsm)) {
        Ok(result) => result,
        Err(panic) => Err(damaged(path, format!("redb failed reading it ({panic})"))),
    }
}

/// The checks of [`precheck`] on an open file.
fn check_file(file: File, path: &Path, hsm: &dyn Hsm) -> Result<(), OpenError> {
    open_checked(file, path, hsm).map(drop)
}

/// A database that passed the checks of [`precheck`] (read-only), its root key, and whether it
/// has table digests.
pub(crate) struct Checked {
    pub db: Database,
    pub root: SecretKey,
    pub digests: bool,
}

/// Opens `file` read-only and runs the checks of [`precheck`].
pub(crate) fn open_checked(file: File, path: &Path, hsm: &dyn Hsm) -> Result<Checked, OpenError> {
    let len = file.metadata().map_err(|err| db_failed(path, err))?.len();
    if len < MIN_DB_LEN {
        return Err(damaged(
            path,
            format!("it is {len} bytes long, shorter than any redb database"),
        ));
    }
    header::check(&file, len).map_err(|why| damaged(path, why))?;
    let backend = readonly::ReadOnlyFile::new(file).map_err(|err| db_failed(path, err))?;
    let mut db = Database::builder()
        .create_with_backend(backend)
        .map_err(|err| damaged(path, err))?;
    let root = unseal_root(&db, path, hsm)?;
    if let Err(err) = db.check_integrity() {
        return Err(damaged(path, err));
    }
    let txn = db.begin_read().map_err(|err| damaged(path, err))?;
    let digests = digest::verify(&digest::DigestKey::derive(&root), &txn)
        .map_err(|err| damaged(path, err))?;
    drop(txn);
    Ok(Checked { db, root, digests })
}

/// Below this, a file cannot be a redb database (its header alone is larger).
const MIN_DB_LEN: u64 = 4096;

fn damaged(path: &Path, why: impl std::fmt::Display) -> OpenError {
    OpenError::Database(format!(
        "{} is damaged: {why}: restore it from a backup, or rebuild this node from a healthy \
         one (see the README's \"Damaged kes.db\"); kes-node check {} tells more",
        path.display(),
        path.parent()
            .map_or_else(|| ".".into(), |d| d.display().to_string())
    ))
}

/// Writes the format version, the sealed root key and every table in one durable commit.
fn init_tables(db: &Database, hsm: &dyn Hsm, sealed: &[u8]) -> Result<(), Box<redb::Error>> {
    // Boxed: `redb::Error` is large.
    fn boxed(err: impl Into<redb::Error>) -> Box<redb::Error> {
        Box::new(err.into())
    }
    let mut txn = db.begin_write().map_err(boxed)?;
    txn.set_durability(Durability::Immediate);
    {
        let mut meta = txn.open_table(META).map_err(boxed)?;
        meta.insert(META_VERSION, FORMAT_VERSION.to_le_bytes().as_slice())
            .map_err(boxed)?;
        meta.insert(root_entry(hsm).as_str(), sealed)
            .map_err(boxed)?;
        for table in TABLES.iter().chain([&ENCLAVES]) {
            txn.open_table(table.def()).map_err(boxed)?;
        }
    }
    txn.commit().map_err(boxed)
}

/// Creates `<dir>/kes.db` with a fresh root key sealed by `hsm`, atomically.
fn create(dir: &Path, hsm: &dyn Hsm) -> Result<(), OpenError> {
    let fail = |what: &str, path: &Path, err: &dyn std::fmt::Display| {
        OpenError::Database(format!(
            "cannot {what} {}: {err}: check that the directory is writable",
            path.display()
        ))
    };
    let mut root: [u8; 32] = crate::random::bytes();
    let sealed = hsm.seal(&root);
    root.zeroize();
    let sealed = sealed.map_err(|err| {
        OpenError::Database(format!(
            "HSM '{}' cannot seal a new root key: {err}: check the HSM",
            hsm.name()
        ))
    })?;

    std::fs::create_dir_all(dir).map_err(|err| fail("create", dir, &err))?;
    let tmp: PathBuf = dir.join(DB_TMP_FILE);
    // A leftover from a creation that crashed before the rename: it holds nothing of value.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(fail("remove", &tmp, &err)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|err| fail("create", &tmp, &err))?;
    let backend = redb::backends::FileBackend::new(file).map_err(|err| fail("lock", &tmp, &err))?;
    let db = Database::builder()
        .create_with_backend(backend)
        .map_err(|err| fail("create", &tmp, &err))?;
    let written = init_tables(&db, hsm, &sealed);
    drop(db);
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("write", &tmp, &err));
    }

    let path = dir.join(DB_FILE);
    std::fs::rename(&tmp, &path).map_err(|err| fail("rename", &tmp, &err))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| fail("sync", dir, &err))?;
    Ok(())
}

/// redb's builder for `Store::open_backend`. Under cargo-fuzz (cfg `fuzzing`, which redb
/// needs for this setting) the regions are 1 MiB: redb's default 4 GiB regions make every open
/// and close of a tiny database serialize allocator state sized for gigabytes, which was most
/// of a `replica` fuzz run's time.
#[allow(unexpected_cfgs)]
fn backend_builder() -> redb::Builder {
    #[allow(unused_mut)]
    let mut builder = Database::builder();
    #[cfg(fuzzing)]
    builder.set_region_size(1 << 20);
    builder
}
