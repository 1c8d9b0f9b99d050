//! The sealed copies of the root key (`meta` table, `root/<hsm name>`): listing them without
//! unsealing anything, and adding or removing one (`kes-node hsm add|rm|ls`, with the server
//! stopped). The unsealed root key only ever passes from one HSM to the other in memory.
use std::fs::File;
use std::path::Path;

use redb::{Database, Durability, ReadableTable};

use super::META_ROOT_PREFIX;
use super::{db_failed, io_err, readonly, OpenError, Refusal, Store, StoreError, DB_FILE, META};
use crate::hsm::Hsm;

/// The names of the HSMs that hold a sealed copy of the root key of `<dir>/kes.db`, read
/// without changing the file (nor needing any HSM); `None` if there is no `kes.db`.
pub(crate) fn sealed_names(dir: &Path) -> Result<Option<Vec<String>>, OpenError> {
    let path = dir.join(DB_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(OpenError::Database(format!(
                "cannot open {}: {err}: check the file's permissions",
                path.display()
            )))
        }
    };
    let len = file.metadata().map_err(|err| db_failed(&path, err))?.len();
    super::header::check(&file, len).map_err(|why| super::damaged(&path, why))?;
    let read = || -> Result<Vec<String>, OpenError> {
        let backend = readonly::ReadOnlyFile::new(file).map_err(|err| db_failed(&path, err))?;
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|err| db_failed(&path, err))?;
        let txn = db.begin_read().map_err(|err| db_failed(&path, err))?;
        let meta = txn.open_table(META).map_err(|err| db_failed(&path, err))?;
        names(&meta).map_err(|err| db_failed(&path, err))
    };
    // A damaged file can make redb panic: that is an answer about the file, not a crash.
    match super::guard::catch(read) {
        Ok(names) => names.map(Some),
        Err(panic) => Err(super::damaged(
            &path,
            format!("redb failed reading it ({panic})"),
        )),
    }
}

fn names(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in meta.range(META_ROOT_PREFIX..).map_err(io_err)? {
        let (k, _) = row.map_err(io_err)?;
        let Some(name) = k.value().strip_prefix(META_ROOT_PREFIX) else {
            break;
        };
        out.push(name.to_string());
    }
    Ok(out)
}

impl Store {
    /// The HSMs holding a sealed copy of this database's root key.
    pub fn sealed_names(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        names(&meta)
    }

    /// Seals the root key with `hsm` and stores that copy, after checking that `hsm` unseals
    /// it again. Refused if `hsm` already has a copy.
    pub fn add_sealed_root(&self, hsm: &dyn Hsm) -> Result<(), StoreError> {
        if self.sealed_names()?.iter().any(|n| n == hsm.name()) {
            return Err(StoreError::Exists);
        }
        let sealed = hsm.seal(self.root.as_bytes()).map_err(|e| {
            StoreError::Refused(Refusal::HsmCannotSeal {
                hsm: hsm.name().into(),
                why: e.to_string(),
            })
        })?;
        let back = hsm.unseal(&sealed).map_err(|e| {
            StoreError::Refused(Refusal::HsmCannotUnseal {
                hsm: hsm.name().into(),
                why: e.to_string(),
            })
        })?;
        if back.as_slice() != self.root.as_bytes() {
            return Err(StoreError::Refused(Refusal::HsmUnsealsWrong {
                hsm: hsm.name().into(),
            }));
        }
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            meta.insert(super::root_entry(hsm).as_str(), sealed.as_slice())
                .map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    /// Removes the copy sealed by HSM `name`; refused for the last copy (the database would be
    /// lost) and for `keep`, the HSM that opened the store.
    pub fn remove_sealed_root(&self, name: &str, keep: &dyn Hsm) -> Result<(), StoreError> {
        let names = self.sealed_names()?;
        if !names.iter().any(|n| n == name) {
            return Err(StoreError::NotFound);
        }
        if names.len() == 1 {
            return Err(StoreError::Refused(Refusal::OnlySealedCopy {
                hsm: name.into(),
            }));
        }
        if name == keep.name() {
            return Err(StoreError::Refused(Refusal::ConfiguredHsm {
                hsm: name.into(),
                others: names.iter().filter(|n| *n != name).cloned().collect(),
            }));
        }
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            meta.remove(format!("{META_ROOT_PREFIX}{name}").as_str())
                .map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}
