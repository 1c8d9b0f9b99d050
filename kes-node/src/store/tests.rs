//! Store tests: each runs in its own directory under the system temp dir.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kes_core::crypto::{Cipher, HmacKey, SecretKey};
use kes_core::hsm::SoftHsm;
use redb::Database;

use super::*;
use crate::hsm::{HsmError, SoftHsmDevice};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "kes-node-store-{}-{test}-{n}-{}",
            std::process::id(),
            hex_nonce()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn db(&self) -> PathBuf {
        self.0.join(DB_FILE)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex_nonce() -> String {
    crate::random::bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hsm(byte: u8) -> SoftHsmDevice {
    SoftHsmDevice(SoftHsm::from_key(SecretKey::new(
        Cipher::Aes256,
        [byte; 32],
    )))
}

fn record(byte: u8, by: &str) -> KeyRecord {
    KeyRecord {
        key: SecretKey::new(
            if byte & 1 == 0 {
                Cipher::Aes256
            } else {
                Cipher::ChaCha20
            },
            [byte; 32],
        ),
        hmac: match byte % 3 {
            0 => None,
            _ => Some(HmacKey::new([byte ^ 0xff; 32])),
        },
        created_at: time::OffsetDateTime::from_unix_timestamp_nanos(
            1_705_055_960_886_816_123 + i128::from(byte),
        )
        .unwrap(),
        created_by: by.to_string(),
    }
}

fn assert_same(a: &KeyRecord, b: &KeyRecord) {
    assert_eq!(a.key.as_bytes(), b.key.as_bytes());
    assert_eq!(a.key.cipher(), b.key.cipher());
    assert_eq!(
        a.hmac.as_ref().map(|h| *h.as_bytes()),
        b.hmac.as_ref().map(|h| *h.as_bytes())
    );
    assert_eq!(a.created_at, b.created_at);
    assert_eq!(a.created_by, b.created_by);
}

fn corrupted_item(err: StoreError) -> String {
    match err {
        StoreError::Corrupted(what) => what.to_string(),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn create_get_delete_list() {
    let dir = TempDir::new("crud");
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    assert_eq!(
        store.list_keys(DEFAULT_ENCLAVE, "").unwrap(),
        Vec::<String>::new()
    );

    for (i, name) in ["b", "ab", "a", "a-1", "c"].iter().enumerate() {
        store
            .create_key(DEFAULT_ENCLAVE, name, &record(i as u8, "admin"))
            .unwrap();
    }
    assert_eq!(
        store.create_key("other", "a", &record(9, "someone")),
        Err(StoreError::NoEnclave),
        "an enclave must exist before it holds keys"
    );
    store
        .apply(&Command::CreateEnclave {
            name: "other".into(),
            record: EnclaveRecord {
                key: SecretKey::new(Cipher::ChaCha20, [7; 32]),
                created_at: crate::timefmt::now(),
                created_by: String::new(),
            },
        })
        .unwrap();
    store
        .create_key("other", "a", &record(9, "someone"))
        .unwrap();

    assert_same(
        &store.key(DEFAULT_ENCLAVE, "b").unwrap(),
        &record(0, "admin"),
    );
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "a").unwrap(),
        &record(2, "admin"),
    );
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "a-1").unwrap(),
        &record(3, "admin"),
    );
    assert_same(&store.key("other", "a").unwrap(), &record(9, "someone"));

    assert_eq!(
        store.list_keys(DEFAULT_ENCLAVE, "").unwrap(),
        ["a", "a-1", "ab", "b", "c"]
    );
    assert_eq!(
        store.list_keys(DEFAULT_ENCLAVE, "a").unwrap(),
        ["a", "a-1", "ab"]
    );
    assert_eq!(store.list_keys(DEFAULT_ENCLAVE, "ab").unwrap(), ["ab"]);
    assert_eq!(
        store.list_keys(DEFAULT_ENCLAVE, "x").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.list_keys("other", "").unwrap(), ["a"]);
    assert_eq!(store.list_keys("missing", ""), Err(StoreError::NoEnclave));
    assert_eq!(
        store.list_keys("bad/enclave", ""),
        Err(StoreError::NoEnclave)
    );

    // `Exists` leaves the first key untouched.
    assert_eq!(
        store.create_key(DEFAULT_ENCLAVE, "a", &record(7, "x")),
        Err(StoreError::Exists)
    );
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "a").unwrap(),
        &record(2, "admin"),
    );

    store.delete_key(DEFAULT_ENCLAVE, "a").unwrap();
    assert!(matches!(
        store.key(DEFAULT_ENCLAVE, "a"),
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.delete_key(DEFAULT_ENCLAVE, "a"),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.list_keys(DEFAULT_ENCLAVE, "a").unwrap(),
        ["a-1", "ab"]
    );
    // The other enclave's `a` is a different key.
    assert_same(&store.key("other", "a").unwrap(), &record(9, "someone"));
    assert!(matches!(store.key("nope", "a"), Err(StoreError::NoEnclave)));
    assert!(matches!(
        store.key("other/a", ""),
        Err(StoreError::NotFound)
    ));

    // A deleted name can be created again.
    store
        .create_key(DEFAULT_ENCLAVE, "a", &record(8, "again"))
        .unwrap();
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "a").unwrap(),
        &record(8, "again"),
    );
}

#[test]
fn concurrent_creates_of_one_name_exactly_one_wins() {
    let dir = TempDir::new("race");
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let store = &store;
                s.spawn(move || store.create_key(DEFAULT_ENCLAVE, "k", &record(i, "t")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(StoreError::Exists)));
}

#[test]
fn survives_restart() {
    let dir = TempDir::new("restart");
    {
        let store = Store::open(dir.path(), &hsm(1)).unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "k1", &record(1, "admin"))
            .unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "k2", &record(2, "admin"))
            .unwrap();
        store.delete_key(DEFAULT_ENCLAVE, "k2").unwrap();
    }
    assert!(!dir.path().join(DB_TMP_FILE).exists());
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "k1").unwrap(),
        &record(1, "admin"),
    );
    assert_eq!(store.list_keys(DEFAULT_ENCLAVE, "").unwrap(), ["k1"]);
}

#[test]
fn creates_missing_directory_and_replaces_stale_tmp() {
    let dir = TempDir::new("mkdir");
    let nested = dir.path().join("a/b");
    Store::open(&nested, &hsm(1)).unwrap();
    assert!(nested.join(DB_FILE).exists());

    // A crash before the rename leaves `kes.db.tmp`; the next start starts over.
    let dir = TempDir::new("stale");
    std::fs::write(dir.path().join(DB_TMP_FILE), b"half-written garbage").unwrap();
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    store
        .create_key(DEFAULT_ENCLAVE, "k", &record(1, "a"))
        .unwrap();
    assert!(!dir.path().join(DB_TMP_FILE).exists());
}

/// An HSM that cannot seal: creation must fail without leaving a database behind.
struct BrokenHsm;

impl Hsm for BrokenHsm {
    fn name(&self) -> &str {
        "broken"
    }
    fn seal(&self, _: &[u8]) -> Result<Vec<u8>, HsmError> {
        Err(HsmError::Device("unplugged".into()))
    }
    fn unseal(&self, _: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        Err(HsmError::Device("unplugged".into()))
    }
}

#[test]
fn failed_creation_leaves_no_database() {
    let dir = TempDir::new("broken");
    let err = Store::open(dir.path(), &BrokenHsm).err().unwrap();
    assert!(matches!(err, OpenError::Database(_)), "{err}");
    assert!(!dir.db().exists());
    // The next start with a working HSM creates the database.
    Store::open(dir.path(), &hsm(1)).unwrap();
}

#[test]
fn wrong_hsm_key_is_refused_and_changes_nothing() {
    let dir = TempDir::new("wrongkey");
    {
        let store = Store::open(dir.path(), &hsm(1)).unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "k", &record(1, "admin"))
            .unwrap();
    }
    let before = std::fs::read(dir.db()).unwrap();

    let err = Store::open(dir.path(), &hsm(2)).err().unwrap();
    assert!(matches!(&err, OpenError::WrongHsmKey { hsm } if hsm == kes_core::hsm::SOFT_HSM_NAME));
    let msg = err.to_string();
    assert!(msg.contains("KES_HSM_KEY") && !msg.contains('\n'), "{msg}");
    assert_eq!(std::fs::read(dir.db()).unwrap(), before, "kes.db changed");

    // An HSM without a sealed copy of the root key.
    let err = Store::open(dir.path(), &BrokenHsm).err().unwrap();
    assert!(
        matches!(&err, OpenError::NoRootKeyForHsm { hsm } if hsm == "broken"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.db()).unwrap(), before, "kes.db changed");

    // The right key still opens it, with the data intact.
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "k").unwrap(),
        &record(1, "admin"),
    );
}

#[test]
fn clean_database_opens_read_only() {
    // The HSM key check relies on this: a cleanly closed kes.db opens through the read-only
    // backend (no repair needed), and reading it writes nothing.
    let dir = TempDir::new("readonly");
    {
        let store = Store::open(dir.path(), &hsm(1)).unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "k", &record(1, "admin"))
            .unwrap();
    }
    let before = std::fs::read(dir.db()).unwrap();
    let file = std::fs::File::open(dir.db()).unwrap();
    let db = Database::builder()
        .create_with_backend(readonly::ReadOnlyFile::new(file).unwrap())
        .unwrap();
    unseal_root(&db, &dir.db(), &hsm(1)).unwrap();
    drop(db);
    assert_eq!(std::fs::read(dir.db()).unwrap(), before);
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = TempDir::new("version");
    drop(Store::open(dir.path(), &hsm(1)).unwrap());
    {
        let db = Database::open(dir.db()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_VERSION, 2u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(dir.db()).unwrap();
    let err = Store::open(dir.path(), &hsm(1)).err().unwrap();
    assert!(err.to_string().contains("format version 2"), "{err}");
    assert_eq!(std::fs::read(dir.db()).unwrap(), before);
}

#[test]
fn not_a_database_is_refused() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.db(), vec![0x42; 8192]).unwrap();
    let err = Store::open(dir.path(), &hsm(1)).err().unwrap();
    assert!(matches!(err, OpenError::Database(_)), "{err}");
    assert_eq!(std::fs::read(dir.db()).unwrap(), vec![0x42; 8192]);
}

/// The raw (encrypted) value stored under `<enclave>/<name>` in the `key` table.
fn raw_value(db: &Path, enclave: &str, name: &str) -> Vec<u8> {
    let db = Database::open(db).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(KEYS.def()).unwrap();
    let v = t
        .get(format!("{enclave}/{name}").as_str())
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    v
}

#[test]
fn flipped_byte_in_a_value_is_refused_at_open() {
    let dir = TempDir::new("flip");
    {
        let store = Store::open(dir.path(), &hsm(1)).unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "victim", &record(1, "admin"))
            .unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "other", &record(2, "admin"))
            .unwrap();
    }
    let value = raw_value(&dir.db(), DEFAULT_ENCLAVE, "victim");
    assert!(value.len() > 32 + 44, "value is encrypted key material");

    // Flip one byte of every copy of the value in the file (copy-on-write may have left an
    // older page holding it too).
    let mut file = std::fs::read(dir.db()).unwrap();
    let mut copies = 0;
    let mut at = 0;
    while let Some(pos) = file[at..]
        .windows(value.len())
        .position(|w| w == value.as_slice())
    {
        let start = at + pos;
        file[start + value.len() / 2] ^= 0x01;
        copies += 1;
        at = start + value.len();
    }
    assert!(copies >= 1, "the encrypted value is in the file");
    std::fs::write(dir.db(), &file).unwrap();

    // redb's page checksums (or else the table's digest) no longer match: the start refuses
    // the file, naming it, and leaves it as it was.
    let err = Store::open(dir.path(), &hsm(1)).err().unwrap().to_string();
    assert!(err.contains("kes.db is damaged"), "{err}");
    assert_eq!(std::fs::read(dir.db()).unwrap(), file);
}

/// Removes the table digests, as in a database made before them.
fn strip_digests(path: &Path) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        for table in ["key", "policy", "identity", "secret", "enclave"] {
            meta.remove(format!("digest/{table}").as_str()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn value_copied_under_another_name_does_not_decrypt() {
    let dir = TempDir::new("aad");
    {
        let store = Store::open(dir.path(), &hsm(1)).unwrap();
        store
            .create_key(DEFAULT_ENCLAVE, "a", &record(1, "admin"))
            .unwrap();
        store
            .apply(&Command::CreateEnclave {
                name: "other".into(),
                record: EnclaveRecord {
                    key: SecretKey::new(Cipher::Aes256, [9; 32]),
                    created_at: crate::timefmt::now(),
                    created_by: String::new(),
                },
            })
            .unwrap();
    }
    let value = raw_value(&dir.db(), DEFAULT_ENCLAVE, "a");
    {
        let db = Database::open(dir.db()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(KEYS.def()).unwrap();
            t.insert("default/b", value.as_slice()).unwrap();
            t.insert("other/a", value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Store::open(dir.path(), &hsm(1)).err().unwrap().to_string();
    assert!(
        err.contains("the records of table 'key' do not match their digest"),
        "{err}"
    );
    strip_digests(&dir.db());
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    assert_same(
        &store.key(DEFAULT_ENCLAVE, "a").unwrap(),
        &record(1, "admin"),
    );
    let msg = corrupted_item(store.key(DEFAULT_ENCLAVE, "b").err().unwrap());
    assert!(msg.starts_with("key 'b'"), "{msg}");
    let msg = corrupted_item(store.key("other", "a").err().unwrap());
    assert!(msg.starts_with("key 'a' in enclave 'other'"), "{msg}");
}

#[test]
fn undecodable_plaintext_is_corrupted() {
    let dir = TempDir::new("decode");
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    // Correctly encrypted, but not a key record.
    let mut tx = store.begin().unwrap();
    tx.put(KEYS, DEFAULT_ENCLAVE, "junk", b"\x07not a key", true)
        .unwrap();
    tx.commit().unwrap();
    let msg = corrupted_item(store.key(DEFAULT_ENCLAVE, "junk").err().unwrap());
    assert!(msg.starts_with("key 'junk'"), "{msg}");
}

/// A store with state spread over enclaves and tables, large enough for many small chunks.
fn populated(dir: &TempDir, byte: u8) -> Store {
    let store = Store::open(dir.path(), &hsm(byte)).unwrap();
    let mut addresses = Addresses::new();
    addresses.insert(0, "127.0.0.1:7373".to_string());
    store
        .init_raft(kes_core::consensus::Config::default(), &addresses)
        .unwrap();
    for i in 0..300u32 {
        store
            .create_key(DEFAULT_ENCLAVE, &format!("k-{i}"), &record(i as u8, "me"))
            .unwrap();
    }
    for i in 0..12u8 {
        store
            .apply(&Command::CreateSecret {
                enclave: DEFAULT_ENCLAVE.into(),
                name: format!("s-{i}"),
                secret: SecretRecord {
                    value: Zeroizing::new(vec![i; 40_000]),
                    created_at: crate::timefmt::now(),
                    created_by: "me".into(),
                },
            })
            .unwrap();
    }
    store
        .apply(&Command::CreateEnclave {
            name: "tenant".into(),
            record: EnclaveRecord {
                key: SecretKey::new(Cipher::Aes256, [9; 32]),
                created_at: crate::timefmt::now(),
                created_by: String::new(),
            },
        })
        .unwrap();
    store
        .create_key("tenant", "in-tenant", &record(200, "t"))
        .unwrap();
    store
}

#[test]
fn snapshot_streams_in_bounded_chunks_and_installs_whole() {
    let (a_dir, b_dir) = (TempDir::new("snap-a"), TempDir::new("snap-b"));
    let a = populated(&a_dir, 1);
    let b = Store::open(b_dir.path(), &hsm(2)).unwrap();
    b.init_raft(kes_core::consensus::Config::default(), &Addresses::new())
        .unwrap();

    const MAX: usize = 32 * 1024;
    let mut reader = a.snapshot_reader().unwrap();
    // Writes after the reader started are not in the snapshot: it is one consistent view.
    a.create_key(DEFAULT_ENCLAVE, "later", &record(3, "me"))
        .unwrap();
    let mut seq = 0;
    while let Some(chunk) = reader.next_chunk(MAX).unwrap() {
        // A chunk stops at the first record that reaches the bound.
        assert!(
            chunk.len() < MAX + 41_000,
            "chunk {seq}: {} bytes",
            chunk.len()
        );
        b.stage_snapshot_chunk(seq, &chunk).unwrap();
        seq += 1;
    }
    assert_eq!(seq, reader.chunks);
    assert!(seq > 10, "expected many chunks, got {seq}");

    let meta = kes_core::consensus::SnapshotMeta {
        index: 7,
        term: 2,
        config: kes_core::consensus::Config::default(),
    };
    let ready = kes_core::consensus::StepOutput::<Vec<u8>> {
        restore: Some(meta.clone()),
        ..Default::default()
    };
    b.persist(&ready, Some(seq)).unwrap();

    for i in (0..300u32).step_by(13) {
        let name = format!("k-{i}");
        assert_same(
            &a.key(DEFAULT_ENCLAVE, &name).unwrap(),
            &b.key(DEFAULT_ENCLAVE, &name).unwrap(),
        );
    }
    assert_eq!(b.list_keys(DEFAULT_ENCLAVE, "").unwrap().len(), 300);
    assert!(matches!(
        b.key(DEFAULT_ENCLAVE, "later"),
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        &*b.secret(DEFAULT_ENCLAVE, "s-11").unwrap().value,
        &[11u8; 40_000][..]
    );
    assert_same(
        &a.key("tenant", "in-tenant").unwrap(),
        &b.key("tenant", "in-tenant").unwrap(),
    );
    let state = b.raft_state().unwrap().unwrap();
    assert_eq!(state.applied.index, 7);
    assert_eq!(
        state.addresses.get(&0).map(String::as_str),
        Some("127.0.0.1:7373")
    );
    // A restart reads the installed state (sealed under b's own root key; the tables'
    // digests were computed anew by the install, and the start checks them).
    drop(b);
    let b = Store::open(b_dir.path(), &hsm(2)).unwrap();
    assert_eq!(b.list_keys("tenant", "").unwrap(), vec!["in-tenant"]);
}

#[test]
fn install_with_a_missing_chunk_fails_and_changes_nothing() {
    let (a_dir, b_dir) = (TempDir::new("snap-gap-a"), TempDir::new("snap-gap-b"));
    let a = populated(&a_dir, 1);
    let b = Store::open(b_dir.path(), &hsm(2)).unwrap();
    b.create_key(DEFAULT_ENCLAVE, "mine", &record(5, "b"))
        .unwrap();
    let mut reader = a.snapshot_reader().unwrap();
    let mut seq = 0;
    while let Some(chunk) = reader.next_chunk(32 * 1024).unwrap() {
        if seq != 3 {
            b.stage_snapshot_chunk(seq, &chunk).unwrap();
        }
        seq += 1;
    }
    let ready = kes_core::consensus::StepOutput::<Vec<u8>> {
        restore: Some(Default::default()),
        ..Default::default()
    };
    let err = b.persist(&ready, Some(seq)).unwrap_err();
    assert!(err.to_string().contains("chunk 3 is missing"), "{err}");
    assert_eq!(b.list_keys(DEFAULT_ENCLAVE, "").unwrap(), vec!["mine"]);
}

#[test]
fn backup_restores_and_refuses_truncation_or_another_hsm() {
    let (a_dir, b_dir, c_dir) = (
        TempDir::new("backup-a"),
        TempDir::new("backup-b"),
        TempDir::new("backup-c"),
    );
    let a = populated(&a_dir, 1);
    let backup = a.backup().unwrap();
    assert!(backup.len() > 12 * 40_000, "{} bytes", backup.len());

    let b = Store::open(b_dir.path(), &hsm(1)).unwrap();
    for cut in [backup.len() - 1, backup.len() / 2, 10] {
        let err = b.restore(&backup[..cut], &hsm(1)).unwrap_err();
        assert!(err.to_string().contains("not a kes-rs backup"), "{err}");
        assert!(b.list_keys(DEFAULT_ENCLAVE, "").unwrap().is_empty());
    }
    // A backup without its end frame (cut exactly between frames) is incomplete too.
    let end_len = {
        let mut pos = 0;
        let mut last = 0;
        while pos < backup.len() {
            let len = u32::from_le_bytes(backup[pos..pos + 4].try_into().unwrap()) as usize;
            last = pos;
            pos += 4 + len;
        }
        backup.len() - last
    };
    let err = b
        .restore(&backup[..backup.len() - end_len], &hsm(1))
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let err = b.restore(&backup, &hsm(3)).unwrap_err();
    assert!(err.to_string().contains("does not unseal"), "{err}");

    b.restore(&backup, &hsm(1)).unwrap();
    assert_eq!(b.list_keys(DEFAULT_ENCLAVE, "").unwrap().len(), 300);
    assert_same(
        &a.key("tenant", "in-tenant").unwrap(),
        &b.key("tenant", "in-tenant").unwrap(),
    );
    // A non-empty store refuses a restore.
    let c = Store::open(c_dir.path(), &hsm(1)).unwrap();
    c.create_key(DEFAULT_ENCLAVE, "x", &record(1, "c")).unwrap();
    assert!(c.restore(&backup, &hsm(1)).is_err());
}

#[test]
fn force_configuration_keeps_pending_commands_and_neutralizes_pending_configs() {
    use kes_core::consensus::{Body, Config, Entry, Members, StepOutput};
    let dir = TempDir::new("force-config");
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    let addresses: Addresses = (0..3u16)
        .map(|i| (i, format!("127.0.0.1:{}", 7000 + i)))
        .collect();
    let members: Members = [0u16, 1, 2].into_iter().collect();
    store
        .init_raft(
            Config {
                index: 0,
                members: members.clone(),
                forced: false,
            },
            &addresses,
        )
        .unwrap();
    // Pending: a shrink of node 2 and a key creation after it.
    let mut shrunk = addresses.clone();
    shrunk.get_mut(&2).unwrap().clear();
    let cmd = Command::CreateKey {
        enclave: DEFAULT_ENCLAVE.into(),
        name: "pending".into(),
        key: record(4, "me"),
    };
    let mut ready = StepOutput::<Vec<u8>>::default();
    ready.append.push(Entry {
        term: 1,
        index: 1,
        body: Body::Config {
            members: [0u16, 1].into_iter().collect(),
            forced: false,
            command: encode_addresses(&shrunk),
        },
    });
    ready.append.push(Entry {
        term: 1,
        index: 2,
        body: Body::Command {
            names: Default::default(),
            command: codec::encode_command(&cmd).unwrap().to_vec(),
        },
    });
    store.persist(&ready, None).unwrap();

    assert!(
        store.force_configuration(&[2]).is_err(),
        "node 2 is no member any more"
    );
    let new = store.force_configuration(&[0]).unwrap();
    assert_eq!(new.get(&0).map(String::as_str), Some("127.0.0.1:7000"));
    assert_eq!(new.get(&1).map(String::as_str), Some(""));
    assert_eq!(new.get(&2).map(String::as_str), Some(""));
    let state = store.raft_state().unwrap().unwrap();
    assert_eq!(state.applied.config.members.as_slice(), &[0]);
    assert_eq!(state.addresses, new);
    assert_eq!(state.entries.len(), 2);
    assert!(matches!(state.entries[0].body, Body::Noop));
    assert_eq!((state.entries[0].index, state.entries[0].term), (1, 1));
    assert!(matches!(state.entries[1].body, Body::Command { .. }));
}

#[test]
fn cached_keys_go_with_their_deletion() {
    let dir = TempDir::new("key-cache");
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    store
        .create_key(DEFAULT_ENCLAVE, "k", &record(2, "a"))
        .unwrap();
    assert_same(&store.key(DEFAULT_ENCLAVE, "k").unwrap(), &record(2, "a"));
    store.delete_key(DEFAULT_ENCLAVE, "k").unwrap();
    assert!(matches!(
        store.key(DEFAULT_ENCLAVE, "k"),
        Err(StoreError::NotFound)
    ));
    // Re-created with other material: the new key, not the cached old one.
    store
        .create_key(DEFAULT_ENCLAVE, "k", &record(4, "b"))
        .unwrap();
    assert_same(&store.key(DEFAULT_ENCLAVE, "k").unwrap(), &record(4, "b"));

    // An enclave deletion takes its cached keys along.
    store
        .apply(&Command::CreateEnclave {
            name: "t".into(),
            record: EnclaveRecord {
                key: SecretKey::new(Cipher::Aes256, [3; 32]),
                created_at: crate::timefmt::now(),
                created_by: String::new(),
            },
        })
        .unwrap();
    store.create_key("t", "k", &record(6, "c")).unwrap();
    assert_same(&store.key("t", "k").unwrap(), &record(6, "c"));
    store
        .apply(&Command::DeleteEnclave { name: "t".into() })
        .unwrap();
    assert!(store.key("t", "k").is_err());
}

#[test]
fn digests_follow_every_write_and_catch_a_record_removed_outside() {
    let dir = TempDir::new("digest");
    {
        let store = populated(&dir, 1);
        store.delete_key(DEFAULT_ENCLAVE, "k-7").unwrap();
        store
            .apply(&Command::DeleteSecret {
                enclave: DEFAULT_ENCLAVE.into(),
                name: "s-3".into(),
            })
            .unwrap();
        for replace in [false, true] {
            store
                .apply(&Command::CreatePolicy {
                    enclave: DEFAULT_ENCLAVE.into(),
                    name: "p".into(),
                    policy: PolicyRecord {
                        allow: vec![format!("/v1/key/{replace}")],
                        deny: Vec::new(),
                        created_at: crate::timefmt::now(),
                        created_by: "me".into(),
                    },
                    replace,
                })
                .unwrap();
        }
        store
            .apply(&Command::DeleteEnclave {
                name: "tenant".into(),
            })
            .unwrap();
    }
    // Every write kept the digests: the start checks them and opens.
    let store = Store::open(dir.path(), &hsm(1)).unwrap();
    assert_eq!(store.list_keys(DEFAULT_ENCLAVE, "").unwrap().len(), 299);
    drop(store);

    // A record that disappears outside kes-node (the file still a sound redb database) is
    // noticed: the start refuses, naming the table, instead of answering 404 for it later.
    {
        let db = Database::open(dir.db()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(KEYS.def())
            .unwrap()
            .remove("default/k-42")
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(dir.path(), &hsm(1)).err().unwrap().to_string();
    assert!(
        err.contains("the records of table 'key' do not match their digest"),
        "{err}"
    );
    assert!(err.contains(&dir.db().display().to_string()), "{err}");
}
