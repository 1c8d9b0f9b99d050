//! An authenticated digest of each table's contents, so that records that went missing from
//! `kes.db` (a damaged file that redb still opens, a page lost to a bad disk, an edited file)
//! are noticed at start instead of being answered as "does not exist".
//!
//! The digest of a table is the sum, in (Z/2^64)^4, of a keyed hash (HMAC-SHA256 under a key
//! derived from the root key) of every record (table name, redb key, stored value): a
//! multiset hash. A write adds the hash of what it inserts and subtracts the hash of what it
//! replaces or removes, in the same transaction, so the digest changes exactly when the
//! contents do. It is stored in the `meta` table next to the sealed root keys, as
//! `digest/<table>`. Without the root key nobody can compute a matching digest for other
//! contents; checking it means reading every record once (at start and in `kes-node check`).
//!
//! A database made before digests existed has none; opening it writes them (if it can).
use std::collections::BTreeMap;

use kes_core::crypto::{HmacKey, SecretKey};
use redb::ReadableTable;
use zeroize::Zeroizing;

use super::{io_err, Table, ENCLAVES, META, TABLES};
use super::{Corruption, Store, StoreError};

const DIGEST_PREFIX: &str = "digest/";

/// Every table with a digest.
pub(crate) fn tables() -> impl Iterator<Item = Table> {
    TABLES.into_iter().chain([ENCLAVES])
}

/// A digest: four 64-bit lanes, added and subtracted lane by lane.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Sum([u64; 4]);

impl Sum {
    fn add(&mut self, h: &[u8; 32]) {
        for (lane, chunk) in self.0.iter_mut().zip(h.chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
    }

    fn sub(&mut self, h: &[u8; 32]) {
        for (lane, chunk) in self.0.iter_mut().zip(h.chunks_exact(8)) {
            *lane = lane.wrapping_sub(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
    }

    fn plus(mut self, other: Sum) -> Sum {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_add(b);
        }
        self
    }

    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, lane) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Sum> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        let mut sum = Sum::default();
        sum.add(bytes);
        Some(sum)
    }
}

/// The key of the record hashes, derived from the root key.
pub(crate) struct DigestKey(HmacKey);

impl DigestKey {
    pub(crate) fn derive(root: &SecretKey) -> DigestKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        let n = root.as_bytes().len().min(32);
        bytes[..n].copy_from_slice(&root.as_bytes()[..n]);
        let outer = HmacKey::new(*bytes);
        DigestKey(HmacKey::new(outer.sign(b"kes:v1:table-digest")))
    }

    fn hash(&self, table: &str, key: &str, value: &[u8]) -> [u8; 32] {
        let mut msg = Vec::with_capacity(table.len() + key.len() + value.len() + 9);
        msg.extend_from_slice(table.as_bytes());
        msg.push(0);
        msg.extend_from_slice(&(key.len() as u64).to_le_bytes());
        msg.extend_from_slice(key.as_bytes());
        msg.extend_from_slice(value);
        self.0.sign(&msg)
    }
}

/// What a write transaction changed in each table's digest.
#[derive(Default)]
pub(crate) struct Delta {
    added: BTreeMap<&'static str, Sum>,
    subtracted: BTreeMap<&'static str, Sum>,
    /// The tables were replaced wholesale (a snapshot or a restore): recompute at commit.
    pub rehash: bool,
}

impl Delta {
    pub(crate) fn insert(&mut self, k: &DigestKey, table: Table, key: &str, value: &[u8]) {
        self.added
            .entry(table.name)
            .or_default()
            .add(&k.hash(table.name, key, value));
    }

    pub(crate) fn remove(&mut self, k: &DigestKey, table: Table, key: &str, value: &[u8]) {
        self.subtracted
            .entry(table.name)
            .or_default()
            .add(&k.hash(table.name, key, value));
    }

    /// Writes the new digests into `meta` (inside the transaction that made the changes).
    /// A table without a stored digest (a database from before digests) keeps none.
    pub(crate) fn apply(
        &self,
        k: &DigestKey,
        txn: &redb::WriteTransaction,
    ) -> Result<(), StoreError> {
        if !self.rehash && self.added.is_empty() && self.subtracted.is_empty() {
            return Ok(());
        }
        let fresh = if self.rehash {
            Some(compute_all(k, txn)?)
        } else {
            None
        };
        let mut meta = txn.open_table(META).map_err(io_err)?;
        for table in tables() {
            let entry = format!("{DIGEST_PREFIX}{}", table.name);
            let new = match &fresh {
                Some(all) => all[table.name],
                None => {
                    let Some(old) = meta
                        .get(entry.as_str())
                        .map_err(io_err)?
                        .and_then(|v| Sum::from_bytes(v.value()))
                    else {
                        continue;
                    };
                    let added = self.added.get(table.name).copied().unwrap_or_default();
                    let mut new = old.plus(added);
                    if let Some(gone) = self.subtracted.get(table.name) {
                        new.sub(&gone.to_bytes());
                    }
                    new
                }
            };
            meta.insert(entry.as_str(), new.to_bytes().as_slice())
                .map_err(io_err)?;
        }
        Ok(())
    }
}

/// The digest of one open table.
fn compute(
    k: &DigestKey,
    table: Table,
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Sum, StoreError> {
    let mut sum = Sum::default();
    for row in t.range::<&str>(..).map_err(io_err)? {
        let (key, value) = row.map_err(io_err)?;
        sum.add(&k.hash(table.name, key.value(), value.value()));
    }
    Ok(sum)
}

/// Every table's digest as a write transaction sees it.
fn compute_all(
    k: &DigestKey,
    txn: &redb::WriteTransaction,
) -> Result<BTreeMap<&'static str, Sum>, StoreError> {
    let mut all = BTreeMap::new();
    for table in tables() {
        let t = txn.open_table(table.def()).map_err(io_err)?;
        all.insert(table.name, compute(k, table, &t)?);
    }
    Ok(all)
}

/// Checks every table of a read view against its stored digest. `Ok(false)` if the database
/// has no digests yet (made before them); an error names the first table that differs.
pub(crate) fn verify(k: &DigestKey, txn: &redb::ReadTransaction) -> Result<bool, StoreError> {
    let meta = txn.open_table(META).map_err(io_err)?;
    let mut any = false;
    for table in tables() {
        let entry = format!("{DIGEST_PREFIX}{}", table.name);
        let Some(stored) = meta.get(entry.as_str()).map_err(io_err)? else {
            continue;
        };
        any = true;
        let stored = Sum::from_bytes(stored.value());
        let actual = match txn.open_table(table.def()) {
            Ok(t) => compute(k, table, &t)?,
            Err(redb::TableError::TableDoesNotExist(_)) => Sum::default(),
            Err(err) => return Err(io_err(err)),
        };
        if stored != Some(actual) {
            return Err(StoreError::Corrupted(Corruption::Digest {
                table: table.name,
            }));
        }
    }
    Ok(any)
}

/// Writes the digests of every table (a new database, or one from before digests).
pub(crate) fn init(k: &DigestKey, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let delta = Delta {
        rehash: true,
        ..Delta::default()
    };
    delta.apply(k, txn)
}

impl Store {
    /// Adds digests to a database made before them (best effort: a full disk only delays it).
    pub(crate) fn ensure_digests(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        let present = meta
            .get(format!("{DIGEST_PREFIX}{}", super::KEYS.name).as_str())
            .map_err(io_err)?
            .is_some();
        drop(meta);
        drop(txn);
        if present {
            return Ok(());
        }
        let tx = self.begin()?;
        init(&self.digest_key, &tx.txn)?;
        tx.commit()
    }
}
