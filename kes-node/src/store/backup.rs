//! Backups: a consistent copy of the applied state that only the holder of the HSM key can
//! read, written and read as a stream so that no side holds the whole database in memory.
//!
//! A backup is a sequence of length-prefixed (u32 little endian) postcard [`Frame`]s:
//! a `Header` with the database's root key sealed by each of its HSMs (exactly as `kes.db`
//! stores it), then the snapshot chunks of `snapshot.rs`, each encrypted with that root key
//! (associated data: the chunk's sequence number), then an `End` whose ciphertext covers the
//! chunk count, so a truncated or reordered backup is refused. It is as safe at rest as
//! `kes.db` itself. Restoring unseals the root key with the HSM, decrypts chunk by chunk, and
//! installs the state into a new database (with a root key of its own).
use std::io::{Read, Write};

use kes_core::consensus::SnapshotMeta;
use kes_core::crypto::{Cipher, SecretKey, RANDOM_LEN};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::snapshot::{Installer, SnapshotReader, CHUNK_BYTES};
use super::{io_err, Refusal, Store, StoreError, META, META_ROOT_PREFIX};
use crate::hsm::Hsm;

const MAGIC: &str = "kes-rs backup v2";
/// Frames are at most a chunk plus its ciphertext overhead; anything larger is not ours.
const MAX_FRAME: usize = 4 * CHUNK_BYTES;

#[derive(Serialize, Deserialize)]
enum Frame {
    Header {
        magic: String,
        /// (HSM name, sealed root key)
        sealed_roots: Vec<(String, Vec<u8>)>,
    },
    /// Snapshot chunk `n` (counting from 0), encrypted with the root key.
    Chunk(Vec<u8>),
    /// The chunk count, authenticated: encrypts nothing under `end_aad(count)`.
    End(Vec<u8>),
}

fn chunk_aad(seq: u32) -> String {
    format!("kes:v1:backup/chunk/{seq}")
}

fn end_aad(count: u32) -> String {
    format!("kes:v1:backup/end/{count}")
}

fn write_frame(out: &mut impl Write, frame: &Frame) -> Result<(), StoreError> {
    let body = postcard::to_allocvec(frame).map_err(io_err)?;
    out.write_all(&(body.len() as u32).to_le_bytes())
        .and_then(|_| out.write_all(&body))
        .map_err(io_err)
}

/// The next frame, or `None` at a clean end of input.
fn read_frame(input: &mut impl Read) -> Result<Option<Frame>, StoreError> {
    let bad = |why| StoreError::Refused(Refusal::NotABackup(why));
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(bad("a frame is too large"));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    input
        .read_exact(&mut body)
        .map_err(|_| bad("it is truncated"))?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|_| bad("a frame does not decode"))
}

/// A backup produced piece by piece (each piece is one or more whole frames), from one
/// consistent view of the database: what `GET /v1/cluster/backup` streams.
pub struct BackupStream {
    reader: SnapshotReader,
    root: SecretKey,
    header: Option<Frame>,
    seq: u32,
    done: bool,
}

impl BackupStream {
    /// The next piece of the backup, `None` after the end frame.
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        if let Some(header) = self.header.take() {
            write_frame(&mut out, &header)?;
        }
        match self.reader.next_chunk(CHUNK_BYTES)? {
            Some(chunk) => {
                let random: [u8; RANDOM_LEN] = crate::random::bytes();
                let sealed = self
                    .root
                    .encrypt(&random, &chunk, chunk_aad(self.seq).as_bytes());
                write_frame(&mut out, &Frame::Chunk(sealed))?;
                self.seq += 1;
            }
            None => {
                let random: [u8; RANDOM_LEN] = crate::random::bytes();
                let end = self
                    .root
                    .encrypt(&random, &[], end_aad(self.seq).as_bytes());
                write_frame(&mut out, &Frame::End(end))?;
                self.done = true;
            }
        }
        Ok(Some(out))
    }
}

impl Store {
    /// Starts a backup of the applied state as it is now (see the module docs).
    pub fn backup_stream(&self) -> Result<BackupStream, StoreError> {
        let reader = self.snapshot_reader()?;
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
        Ok(BackupStream {
            reader,
            root: self.root.clone(),
            header: Some(Frame::Header {
                magic: MAGIC.into(),
                sealed_roots,
            }),
            seq: 0,
            done: false,
        })
    }

    /// A whole backup in memory (for tests; the server streams it).
    #[cfg(test)]
    pub fn backup(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut stream = self.backup_stream()?;
        while let Some(piece) = stream.next_piece()? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    /// Installs a backup read from `input` into this store, which must be new (no keys,
    /// policies, identities, secrets or enclaves but the default one). `hsm` must be one of
    /// the backup's HSMs. Nothing is committed unless the whole backup verifies.
    pub fn restore_from(&self, input: &mut impl Read, hsm: &dyn Hsm) -> Result<(), StoreError> {
        let bad = |why| StoreError::Refused(Refusal::NotABackup(why));
        let Some(Frame::Header {
            magic,
            sealed_roots,
        }) = read_frame(input)?
        else {
            return Err(bad("it does not start with a backup header"));
        };
        if magic != MAGIC {
            return Err(bad("wrong format"));
        }
        let sealed = sealed_roots
            .iter()
            .find(|(name, _)| name == hsm.name())
            .ok_or_else(|| {
                StoreError::Refused(Refusal::BackupNotSealedFor {
                    hsm: hsm.name().into(),
                })
            })?;
        let root = hsm
            .unseal(&sealed.1)
            .map_err(|_| StoreError::Refused(Refusal::BackupWrongKey))?;
        let root: [u8; 32] = root
            .as_slice()
            .try_into()
            .map_err(|_| bad("its root key is not 32 bytes"))?;
        let root = SecretKey::new(Cipher::Aes256, root);
        let fresh = self.list_keys(super::DEFAULT_ENCLAVE, "")?.is_empty()
            && self.list_policies(super::DEFAULT_ENCLAVE, "")?.is_empty()
            && self.list_enclaves("")?.len() <= 1;
        if !fresh {
            return Err(StoreError::Refused(Refusal::RestoreNotEmpty));
        }
        let mut tx = self.begin()?;
        let mut install = Installer::start(&mut tx)?;
        let mut seq = 0u32;
        loop {
            match read_frame(input)? {
                Some(Frame::Chunk(sealed)) => {
                    let chunk = Zeroizing::new(
                        root.decrypt(&sealed, chunk_aad(seq).as_bytes())
                            .map_err(|_| bad("a chunk does not decrypt"))?,
                    );
                    install.chunk(&chunk)?;
                    seq += 1;
                }
                Some(Frame::End(end)) => {
                    root.decrypt(&end, end_aad(seq).as_bytes())
                        .map_err(|_| bad("it is incomplete"))?;
                    break;
                }
                Some(Frame::Header { .. }) => return Err(bad("it has a second header")),
                None => return Err(bad("it is truncated")),
            }
        }
        install.finish(&SnapshotMeta::default())?;
        tx.digest.rehash = true;
        // A restored node starts a new cluster of its own: no consensus state.
        tx.txn.delete_table(super::raft::RAFT).map_err(io_err)?;
        tx.commit()
    }

    /// [`Store::restore_from`] for a backup in memory (for tests).
    #[cfg(test)]
    pub fn restore(&self, bytes: &[u8], hsm: &dyn Hsm) -> Result<(), StoreError> {
        self.restore_from(&mut &bytes[..], hsm)
    }
}
