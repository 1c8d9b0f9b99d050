//! Backups: a consistent copy of the applied state that only the holder of the HSM key can
//! read. A backup carries the database's root key sealed by each of its HSMs (exactly as
//! `kes.db` stores it) and the snapshot data (see `raft.rs`) encrypted with that root key, so
//! it is as safe at rest as `kes.db` itself. Restoring unseals the root key with the HSM,
//! decrypts, and installs the state into a new database (with a root key of its own).
use kes_core::consensus::SnapshotMeta;
use kes_core::crypto::{Cipher, SecretKey, RANDOM_LEN};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{io_err, Store, StoreError, META, META_ROOT_PREFIX};
use crate::hsm::Hsm;

const MAGIC: &str = "kes-rs backup v1";
const AAD: &[u8] = b"kes:v1:backup";

#[derive(Serialize, Deserialize)]
struct Backup {
    magic: String,
    /// (HSM name, sealed root key)
    sealed_roots: Vec<(String, Vec<u8>)>,
    /// The snapshot data, encrypted with the root key.
    state: Vec<u8>,
}

impl Store {
    /// A backup of the applied state (see the module docs).
    pub fn backup(&self) -> Result<Vec<u8>, StoreError> {
        let snapshot = self.snapshot()?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        let mut sealed_roots = Vec::new();
        for row in meta.range(META_ROOT_PREFIX..).map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            let Some(name) = k.value().strip_prefix(META_ROOT_PREFIX) else {
                break;
            };
            sealed_roots.push((name.to_string(), v.value().to_vec()));
        }
        let random: [u8; RANDOM_LEN] = crate::random::bytes();
        let state = self.root.encrypt(&random, &snapshot, AAD);
        postcard::to_allocvec(&Backup {
            magic: MAGIC.into(),
            sealed_roots,
            state,
        })
        .map_err(io_err)
    }

    /// Installs a backup into this store, which must be new (no keys, policies, identities,
    /// secrets or enclaves but the default one). `hsm` must be one of the backup's HSMs.
    pub fn restore(&self, bytes: &[u8], hsm: &dyn Hsm) -> Result<(), StoreError> {
        let bad = |why: &str| StoreError::Refused(format!("not a kes-rs backup: {why}"));
        let backup: Backup = postcard::from_bytes(bytes).map_err(|_| bad("it does not decode"))?;
        if backup.magic != MAGIC {
            return Err(bad("wrong format"));
        }
        let sealed = backup
            .sealed_roots
            .iter()
            .find(|(name, _)| name == hsm.name())
            .ok_or_else(|| {
                StoreError::Refused(format!(
                    "the backup has no root key sealed by HSM '{}'",
                    hsm.name()
                ))
            })?;
        let root = hsm.unseal(&sealed.1).map_err(|_| {
            StoreError::Refused(
                "the HSM key does not unseal the backup: use the key of the backed-up cluster"
                    .into(),
            )
        })?;
        let root: [u8; 32] = root
            .as_slice()
            .try_into()
            .map_err(|_| bad("its root key is not 32 bytes"))?;
        let root = SecretKey::new(Cipher::Aes256, root);
        let snapshot = Zeroizing::new(
            root.decrypt(&backup.state, AAD)
                .map_err(|_| bad("its state does not decrypt"))?,
        );
        let fresh = self.list_keys(super::DEFAULT_ENCLAVE, "")?.is_empty()
            && self.list_policies(super::DEFAULT_ENCLAVE, "")?.is_empty()
            && self.list_enclaves("")?.len() <= 1;
        if !fresh {
            return Err(StoreError::Refused(
                "restore needs a new, empty directory".into(),
            ));
        }
        let mut tx = self.begin()?;
        self.install(&mut tx, &snapshot, &SnapshotMeta::default())?;
        // A restored node starts a new cluster of its own: no consensus state.
        tx.txn.delete_table(super::raft::RAFT).map_err(io_err)?;
        tx.commit()
    }
}
