//! `kes-node check DIR`: verifies a stopped node's `kes.db` without changing it.
//!
//! Everything the server checks at start (redb can open it, the HSM unseals the root key,
//! redb's integrity check, the table digests), then every record: each enclave record
//! decrypts with the root key, each item with its enclave's key under its own name, and the
//! consensus state decodes. The file is read through the copy-on-write backend, so a check
//! never writes to it; a panic of redb on a damaged page is a finding, not a crash.
use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::{decrypt, guard, io_err, open_checked, read_enclave, Checked, Corruption, OpenError};
use super::{DB_FILE, ENCLAVES, TABLES};
use crate::hsm::Hsm;

/// What `kes-node check` found wrong. `Display` is one line that names the file.
#[derive(Debug)]
pub(crate) enum CheckError {
    /// The file cannot be opened.
    Open { path: PathBuf, err: std::io::Error },
    /// A check of opening failed (damaged, or the HSM does not unseal it).
    Refused(OpenError),
    /// redb panicked reading the file (`what`: `it`, `its records`).
    Panicked {
        path: PathBuf,
        what: &'static str,
        panic: String,
    },
    /// A record does not read back.
    Record { path: PathBuf, err: StoreError },
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Open { path, err } => write!(f, "cannot open {}: {err}", path.display()),
            CheckError::Refused(err) => err.fmt(f),
            CheckError::Panicked { path, what, panic } => write!(
                f,
                "{} is damaged: redb failed reading {what} ({panic})",
                path.display()
            ),
            CheckError::Record { path, err } => write!(f, "{}: {err}", path.display()),
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks `<dir>/kes.db`; `Ok` with one line per finding that is fine, `Err` with what is
/// wrong.
pub(crate) fn check(dir: &Path, hsm: &dyn Hsm) -> Result<Vec<String>, CheckError> {
    let path = dir.join(DB_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) => return Err(CheckError::Open { path, err }),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let checked = match guard::catch(|| open_checked(file, &path, hsm)) {
        Ok(result) => result.map_err(CheckError::Refused)?,
        Err(panic) => {
            return Err(CheckError::Panicked {
                path,
                what: "it",
                panic,
            })
        }
    };
    let mut report = vec![
        format!(
            "{}: {len} bytes, redb integrity check passed",
            path.display()
        ),
        if checked.digests {
            "table digests match: no record is missing or altered".to_string()
        } else {
            "no table digests (a database from before them): the next start adds them".to_string()
        },
    ];
    let counts = match guard::catch(|| records(&checked)) {
        Ok(Ok(counts)) => counts,
        Ok(Err(err)) => return Err(CheckError::Record { path, err }),
        Err(panic) => {
            return Err(CheckError::Panicked {
                path,
                what: "its records",
                panic,
            })
        }
    };
    report.push(format!("every record decrypts: {counts}"));
    Ok(report)
}

/// Decrypts every record; a summary of the counts per table.
fn records(checked: &Checked) -> Result<String, StoreError> {
    let txn = checked.db.begin_read().map_err(io_err)?;
    let enclaves = txn.open_table(ENCLAVES.def()).map_err(io_err)?;
    let mut keys = std::collections::BTreeMap::new();
    for row in enclaves.range::<&str>(..).map_err(io_err)? {
        let (name, _) = row.map_err(io_err)?;
        let rec = read_enclave(&enclaves, &checked.root, name.value())?;
        keys.insert(name.value().to_string(), rec.key);
    }
    let mut summary = vec![format!("{} enclaves", keys.len())];
    for table in TABLES {
        let t = match txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                summary.push(format!("0 {}", table.name));
                continue;
            }
            Err(err) => return Err(io_err(err)),
        };
        let mut n = 0usize;
        for row in t.range::<&str>(..).map_err(io_err)? {
            let (key, value) = row.map_err(io_err)?;
            let key = key.value();
            let (enclave, name) = key.split_once('/').unwrap_or((key, ""));
            let Some(enclave_key) = keys.get(enclave) else {
                return Err(StoreError::Corrupted(Corruption::Orphan {
                    what: table.what,
                    enclave: enclave.into(),
                    name: name.into(),
                }));
            };
            decrypt(enclave_key, table, enclave, name, key, value.value())?;
            n += 1;
        }
        summary.push(format!("{n} {}", table.name));
    }
    drop(enclaves);
    match txn.open_table(super::raft::RAFT) {
        Ok(raft) => {
            if let Some(applied) = raft.get(super::raft::APPLIED).map_err(io_err)? {
                let applied = super::raft::Applied::decode(applied.value())?;
                summary.push(format!(
                    "cluster state applied up to log index {}",
                    applied.meta.index
                ));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(err) => return Err(io_err(err)),
    }
    Ok(summary.join(", "))
}
