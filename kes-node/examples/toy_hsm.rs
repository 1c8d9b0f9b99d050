//! A toy HSM of your own sealing a KES server's `kes.db`: what a third party writes to plug a
//! device kes-node does not know into it (`cargo run --example toy_hsm`).
//!
//! The "device" is a 32-byte key held in memory, which seals with AES-256-GCM; a real one
//! would talk to hardware or a service. It implements [`Hsm`] as its contract says: a stable
//! name with a scheme of its own, authenticated blobs, [`HsmError::WrongKey`] for blobs of
//! another key, [`HsmError::Device`] while the device is unreachable, a cheap `probe`. Then
//! the program runs a real server on it ([`Builder::hsm`], a real `kes.db` in a temporary
//! directory) and talks to it with the client library: creates a key and a data key, restarts
//! on a new instance of the same device (unsealing) and decrypts the data key, is refused by
//! a toy of another key and by the toy while offline, and adds a SoftHSM recovery copy beside
//! it ([`kes_node::hsm::add_copy`]) that opens the node too. It exits 0 only if every step
//! behaves.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kes_core::crypto::{Cipher, SecretKey, RANDOM_LEN};
use kes_core::hsm::SoftHsm;
use kes_node::client::{generate_api_key, Client, Credentials, DataKey, ServerTrust};
use kes_node::config::{Config, TlsFiles};
use kes_node::hsm::{Hsm, HsmError, SoftHsmDevice};
use kes_node::server::{Builder, Server};
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

/// What every start of the server shares: its TLS files and admin, the node directory, and
/// its address (a node is known by it: it restarts on the port it first got).
struct Node {
    config: Config,
    addr: std::cell::Cell<Option<std::net::SocketAddr>>,
    data: std::path::PathBuf,
    ca: std::path::PathBuf,
    admin: Zeroizing<String>,
}

impl Node {
    /// A server on `hsm`, on a port the system picks the first time.
    fn start(&self, hsm: Arc<dyn Hsm>) -> Result<Server, String> {
        let addr = self
            .addr
            .get()
            .map_or("127.0.0.1:0".into(), |a| a.to_string());
        let server = Builder::node(self.config.clone(), &self.data)
            .hsm(hsm)
            .address(addr)
            .start()
            .map_err(|e| e.to_string())?;
        self.addr.set(Some(server.local_addr()));
        Ok(server)
    }

    fn client(&self, server: &Server) -> Result<Client, String> {
        let credentials = Credentials::from_api_key(&self.admin).map_err(|e| e.to_string())?;
        let trust = ServerTrust::from_ca_path(&self.ca).map_err(|e| e.to_string())?;
        Client::new(&server.local_addr().to_string(), credentials, trust).map_err(|e| e.to_string())
    }

    /// Starts on `hsm` and decrypts `dek` with my-key: the key only reads back if the root
    /// key was unsealed.
    fn decrypts(&self, hsm: Arc<dyn Hsm>, dek: &DataKey) -> Result<(), String> {
        let server = self.start(hsm)?;
        let plaintext = self
            .client(&server)?
            .decrypt("my-key", &dek.ciphertext, b"")
            .map_err(|e| format!("decrypt: {e}"))?;
        if *plaintext != dek.plaintext {
            return Err("the data key decrypted to something else".into());
        }
        server.shutdown().map_err(|e| e.to_string())
    }
}

fn run(dir: &Path) -> Result<(), String> {
    let node = setup(dir)?;
    let toy = Arc::new(ToyHsm::new([7; 32]));

    // 1. A new kes.db: the server makes a root key and has the toy seal it.
    let server = node.start(toy.clone())?;
    let client = node.client(&server)?;
    client
        .create_key("my-key")
        .map_err(|e| format!("create: {e}"))?;
    let dek = client
        .generate_key("my-key", b"")
        .map_err(|e| format!("generate: {e}"))?
        .into_inner();
    drop(client);
    server.shutdown().map_err(|e| e.to_string())?;
    println!("sealed a new kes.db with HSM '{}'", toy.name());

    // 2. Restarted on a new instance of the same device: unsealed, my-key decrypts.
    node.decrypts(Arc::new(ToyHsm::new([7; 32])), &dek)?;
    println!("unsealed it again: my-key decrypts the data key");

    // 3. A toy with another key is refused, and the message says so.
    match node.start(Arc::new(ToyHsm::new([8; 32]))) {
        Err(err) if err.contains("different key") => println!("another key is refused: {err}"),
        Err(err) => return Err(format!("another key: unexpected error: {err}")),
        Ok(_) => return Err("a toy with another key opened kes.db".into()),
    }

    // 4. The device offline: the probe says so, and the server does not start.
    let offline = Arc::new(ToyHsm::new([7; 32]));
    offline.online.store(false, Ordering::Relaxed);
    match (offline.probe(), node.start(offline)) {
        (Err(why), Err(err)) => println!("offline: probe: {why}; start: {err}"),
        _ => return Err("an offline toy was not refused".into()),
    }

    // 5. A SoftHSM recovery copy beside the toy's: either opens the node now.
    let soft = Arc::new(SoftHsmDevice(SoftHsm::from_key(SecretKey::new(
        Cipher::Aes256,
        [9; 32],
    ))));
    kes_node::hsm::add_copy(&node.data, &*toy, &*soft)
        .map_err(|e| format!("add the SoftHSM copy: {e}"))?;
    let names = kes_node::hsm::sealed_copies(&node.data)?;
    println!("sealed copies: {}", names.join(", "));
    if names.len() != 2 {
        return Err(format!("expected two sealed copies, found {names:?}"));
    }
    node.decrypts(soft, &dek)?;
    println!("the SoftHSM recovery copy opens it too");
    Ok(())
}

/// A self-signed server certificate for 127.0.0.1 (which the client trusts as it is) and an
/// admin API key.
fn setup(dir: &Path) -> Result<Node, String> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .map_err(|e| e.to_string())?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("server.cert", cert.cert.pem())?;
    write("server.key", cert.key_pair.serialize_pem())?;
    let admin = generate_api_key();
    let identity = Credentials::from_api_key(&admin).map_err(|e| e.to_string())?;
    let config = Config {
        admin_identity: identity.identity().to_owned(),
        tls: TlsFiles {
            cert: dir.join("server.cert"),
            key: dir.join("server.key"),
            ..TlsFiles::default()
        },
        ..Config::default()
    };
    Ok(Node {
        config,
        addr: std::cell::Cell::new(None),
        data: dir.join("data"),
        ca: dir.join("server.cert"),
        admin,
    })
}
