//! A toy HSM of your own sealing `kes.db`: what a third party writes to plug a device kes-node
//! does not know into it (`cargo run --example toy_hsm`).
//!
//! The "device" is a 32-byte key held in memory, which seals with AES-256-GCM; a real one
//! would talk to hardware or a service. It implements [`Hsm`] as its contract says: a stable
//! name with a scheme of its own, authenticated blobs, [`HsmError::WrongKey`] for blobs of
//! another key, [`HsmError::Device`] while the device is unreachable, a cheap `probe`. Then
//! the program runs it through the real store (a real `kes.db` in a temporary directory):
//! creates a database sealed by it, stores a key, reopens (unseals) and reads the key back,
//! is refused by a toy of another key and by the toy while offline, and adds a SoftHSM
//! recovery copy beside it. It exits 0 only if every step behaves.
use std::sync::atomic::{AtomicBool, Ordering};

use kes_core::crypto::{Cipher, SecretKey, RANDOM_LEN};
use kes_core::hsm::SoftHsm;
use kes_node::hsm::{Hsm, HsmError, SoftHsmDevice};
use kes_node::records::KeyRecord;
use kes_node::store::{OpenError, Store, DEFAULT_ENCLAVE};
use zeroize::Zeroizing;

/// What the toy's blobs are bound to (AES-GCM associated data), so that a blob of another
/// purpose does not open as a root key.
const AAD: &[u8] = b"toy-hsm:v1:root-key";

/// The toy device: a key, and whether it is reachable.
struct ToyHsm {
    key: SecretKey,
    online: AtomicBool,
}

impl ToyHsm {
    fn new(key: [u8; 32]) -> ToyHsm {
        ToyHsm {
            key: SecretKey::new(Cipher::Aes256, key),
            online: AtomicBool::new(true),
        }
    }

    fn reachable(&self) -> Result<(), HsmError> {
        if self.online.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(HsmError::Device(
                "toy HSM: the device does not answer".into(),
            ))
        }
    }
}

impl Hsm for ToyHsm {
    fn name(&self) -> &str {
        // Stable, and with a scheme no other kind of HSM uses.
        "toy:demo"
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.reachable()?;
        let mut random = [0u8; RANDOM_LEN];
        getrandom::getrandom(&mut random)
            .map_err(|e| HsmError::Device(format!("toy HSM: no randomness: {e}")))?;
        Ok(self.key.encrypt(&random, plaintext, AAD))
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.reachable()?;
        // Any blob that does not authenticate under this key is another key's (or altered).
        self.key
            .decrypt(sealed, AAD)
            .map(Zeroizing::new)
            .map_err(|_| HsmError::WrongKey)
    }

    fn probe(&self) -> Result<(), String> {
        self.reachable().map_err(|e| e.to_string())
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("kes-toy-hsm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(why) = result {
        eprintln!("toy_hsm: FAILED: {why}");
        std::process::exit(1);
    }
    println!("toy_hsm: ok");
}

fn run(dir: &std::path::Path) -> Result<(), String> {
    let toy = ToyHsm::new([7; 32]);
    let data_key = SecretKey::new(Cipher::Aes256, [42; 32]);

    // 1. A new kes.db: the store makes a root key and has the toy seal it.
    {
        let store = Store::open(dir, &toy).map_err(|e| format!("create: {e}"))?;
        let record = KeyRecord {
            key: data_key.clone(),
            hmac: None,
            created_at: time::OffsetDateTime::now_utc(),
            created_by: "toy_hsm example".into(),
        };
        store
            .create_key(DEFAULT_ENCLAVE, "my-key", &record)
            .map_err(|e| format!("create_key: {e}"))?;
        println!("sealed a new kes.db with HSM '{}'", toy.name());
    }

    // 2. Reopened by the same device (a new instance with the same key): unsealed, and the key
    //    stored under the root key reads back.
    {
        let store = Store::open(dir, &ToyHsm::new([7; 32])).map_err(|e| format!("reopen: {e}"))?;
        let back = store
            .key(DEFAULT_ENCLAVE, "my-key")
            .map_err(|e| format!("read back: {e}"))?;
        if back.key.as_bytes() != data_key.as_bytes() {
            return Err("the key read back differs".into());
        }
        println!("unsealed it again: my-key reads back");
    }

    // 3. A toy with another key is refused, and the message says so.
    match Store::open(dir, &ToyHsm::new([8; 32])) {
        Err(err @ OpenError::WrongHsmKey { .. }) => println!("another key is refused: {err}"),
        Err(err) => return Err(format!("another key: unexpected error: {err}")),
        Ok(_) => return Err("a toy with another key opened kes.db".into()),
    }

    // 4. The device offline: the probe says so, and the store refuses to open.
    let offline = ToyHsm::new([7; 32]);
    offline.online.store(false, Ordering::Relaxed);
    let probe = offline.probe();
    match (probe, Store::open(dir, &offline)) {
        (Err(why), Err(err)) => println!("offline: probe: {why}; open: {err}"),
        _ => return Err("an offline toy was not refused".into()),
    }

    // 5. A SoftHSM recovery copy beside the toy's: either opens the database now.
    let soft = SoftHsmDevice(SoftHsm::from_key(SecretKey::new(Cipher::Aes256, [9; 32])));
    {
        let store = Store::open(dir, &toy).map_err(|e| format!("open: {e}"))?;
        store
            .add_sealed_root(&soft)
            .map_err(|e| format!("add the SoftHSM copy: {e}"))?;
        let names = store.sealed_names().map_err(|e| e.to_string())?;
        println!("sealed copies: {}", names.join(", "));
        if names.len() != 2 {
            return Err(format!("expected two sealed copies, found {names:?}"));
        }
    }
    let store = Store::open(dir, &soft).map_err(|e| format!("open with the SoftHSM: {e}"))?;
    store
        .key(DEFAULT_ENCLAVE, "my-key")
        .map_err(|e| format!("read back with the SoftHSM: {e}"))?;
    println!("the SoftHSM recovery copy opens it too");
    Ok(())
}
