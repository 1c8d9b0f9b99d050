//! Opening `kes.db`: the atomic creation of a new database, the read-only checks of an
//! existing one (through a copy-on-write backend, so a refusal never writes), unsealing the
//! root key, and the one-line errors that say what to do.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kes_core::crypto::{Cipher, SecretKey};
use redb::{Database, Durability};
use zeroize::Zeroize;

use super::{
    digest, guard, header, readonly, DB_FILE, DB_TMP_FILE, ENCLAVES, FORMAT_VERSION, META,
    META_ROOT_PREFIX, META_VERSION, TABLES,
};
use crate::hsm::{Hsm, HsmError};

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

pub(super) fn root_entry(hsm: &dyn Hsm) -> String {
    format!("{META_ROOT_PREFIX}{}", hsm.name())
}

pub(super) fn open_failed(path: &Path, err: redb::DatabaseError) -> OpenError {
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

pub(super) fn db_failed(path: &Path, err: impl std::fmt::Display) -> OpenError {
    OpenError::Database(format!(
        "cannot read {}: {err}: restore the file from a backup or use another directory",
        path.display()
    ))
}

/// Checks the format version and unseals the root key of an open database.
pub(super) fn unseal_root(
    db: &Database,
    path: &Path,
    hsm: &dyn Hsm,
) -> Result<SecretKey, OpenError> {
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
pub(super) fn precheck(path: &Path, hsm: &dyn Hsm) -> Result<(), OpenError> {
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
pub(super) fn check_file(file: File, path: &Path, hsm: &dyn Hsm) -> Result<(), OpenError> {
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
pub(super) const MIN_DB_LEN: u64 = 4096;

pub(super) fn damaged(path: &Path, why: impl std::fmt::Display) -> OpenError {
    OpenError::Database(format!(
        "{} is damaged: {why}: restore it from a backup, or rebuild this node from a healthy \
         one (see the README's \"Damaged kes.db\"); kes-node check {} tells more",
        path.display(),
        path.parent()
            .map_or_else(|| ".".into(), |d| d.display().to_string())
    ))
}

/// Writes the format version, the sealed root key and every table in one durable commit.
pub(super) fn init_tables(
    db: &Database,
    hsm: &dyn Hsm,
    sealed: &[u8],
) -> Result<(), Box<redb::Error>> {
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
pub(super) fn create(dir: &Path, hsm: &dyn Hsm) -> Result<(), OpenError> {
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
pub(super) fn backend_builder() -> redb::Builder {
    #[allow(unused_mut)]
    let mut builder = Database::builder();
    #[cfg(fuzzing)]
    builder.set_region_size(1 << 20);
    builder
}
