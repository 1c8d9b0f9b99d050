//! The sealed copies of a node's root key, one per HSM, as a program manages them: which HSMs
//! have one, and a copy for another HSM (a recovery copy beside a hardware one, or a new
//! device before the old one is retired). What `kes-node hsm ls` and `hsm add` do, for a
//! node directory whose server is stopped (`kes.db` is opened by one process at a time).
use std::path::Path;

use super::Hsm;
use crate::store::{Store, StoreError, DB_FILE};

/// The names of the HSMs holding a sealed copy of the root key of `dir/kes.db`, read without
/// any HSM. An error if there is no `kes.db` in `dir` or it cannot be read.
pub fn sealed_copies(dir: &Path) -> Result<Vec<String>, String> {
    crate::store::sealed_names(dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} does not exist", dir.join(DB_FILE).display()))
}

/// Seals the root key of `dir/kes.db`, unsealed by `unsealing` (an HSM that has a copy), with
/// `new` as well, after checking that `new` unseals it again. Refused if `new` has a copy
/// already. Afterwards either HSM opens the node.
pub fn add_copy(dir: &Path, unsealing: &dyn Hsm, new: &dyn Hsm) -> Result<(), String> {
    if !dir.join(DB_FILE).exists() {
        return Err(format!("{} does not exist", dir.join(DB_FILE).display()));
    }
    let store = Store::open(dir, unsealing).map_err(|e| e.to_string())?;
    match store.add_sealed_root(new) {
        Ok(()) => Ok(()),
        Err(StoreError::Exists) => Err(format!(
            "kes.db already holds a root key sealed by HSM '{}'",
            new.name()
        )),
        Err(e) => Err(e.to_string()),
    }
}
