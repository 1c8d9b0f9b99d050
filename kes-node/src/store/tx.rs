//! Write transactions and the sealing of values: every value is encrypted under its
//! enclave's key with `<table>/<enclave>/<name>` as associated data, enclave records under the
//! root key; the table digests change with every write.
use kes_core::crypto::{SecretKey, RANDOM_LEN};
use redb::ReadableTable;
use zeroize::Zeroizing;

use super::{
    codec, db, digest, io_err, CodecError, Corruption, Defect, IoFailure, Store, StoreError, Table,
    ENCLAVES, KEYS, TABLES,
};
use crate::records::EnclaveRecord;

/// A write transaction: reads see its own writes; nothing is visible until `commit`.
pub(crate) struct Tx<'s> {
    pub(super) store: &'s Store,
    pub(super) txn: redb::WriteTransaction,
    /// Set when the transaction removes keys: the key cache is emptied when it commits.
    pub(super) removes_keys: bool,
    /// How the tables' digests change when it commits (see `digest.rs`).
    pub(crate) digest: digest::Delta,
}

impl Tx<'_> {
    pub(super) fn commit(self) -> Result<(), StoreError> {
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
    pub(super) fn enclave_key(&self, enclave: &str) -> Result<SecretKey, StoreError> {
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

pub(super) fn enclave_aad(name: &str) -> String {
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
pub(super) fn item_key(enclave: &str, name: &str) -> Result<String, StoreError> {
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
pub(super) fn aad(table: Table, item_key: &str) -> String {
    format!("{}/{item_key}", table.name)
}

pub(super) fn corrupted(table: Table, enclave: &str, name: &str, defect: Defect) -> StoreError {
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
