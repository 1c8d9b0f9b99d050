//! A KES server inside your own program (`cargo run --example embedded_server`): a stateful
//! node started through [`Builder`] on a listener the program bound itself (127.0.0.1, a port
//! the system picks), its `kes.db` in a temporary directory sealed by a SoftHSM key, then used
//! through the client library (a key, a data key, its decryption) and shut down gracefully.
//! It exits 0 only if every step behaves.
//!
//! The server needs a TLS certificate: the program makes a CA and a server certificate for
//! 127.0.0.1 with rcgen, and the client trusts that CA. The admin is an API key made here; the
//! client authenticates with it.
use std::net::TcpListener;
use std::path::Path;

use kes_core::crypto::{Cipher, SecretKey};
use kes_core::hsm::SoftHsm;
use kes_node::client::{generate_api_key, Client, Credentials, ServerTrust};
use kes_node::config::{Config, HsmConfig, TlsFiles};
use kes_node::server::Builder;
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kes-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &Path) -> Result<()> {
    write_certificates(dir)?;
    let admin_key = generate_api_key();
    let admin = Credentials::from_api_key(&admin_key)?;
    // A config filled in here; `kes_node::config::load("kes.yml")` reads the same from YAML.
    let hsm_key = SoftHsm::from_key(SecretKey::new(Cipher::Aes256, random()?));
    let config = Config {
        admin_identity: admin.identity().to_owned(),
        tls: TlsFiles {
            cert: dir.join("server.cert"),
            key: dir.join("server.key"),
            ..TlsFiles::default()
        },
        hsm: HsmConfig::Soft(Some(Zeroizing::new(hsm_key.encode().as_str().to_owned()))),
        ..Config::default()
    };

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let server = Builder::node(config, dir.join("data"))
        .listener(listener)
        .start()?;
    let addr = server.local_addr();
    println!("embedded KES server on https://{addr}");

    let client = Client::new(
        &addr.to_string(),
        admin,
        ServerTrust::from_ca_path(&dir.join("ca.pem"))?,
    )?;
    client.create_key("my-app")?;
    let dek = client.generate_key("my-app", b"bucket=photos")?;
    let plaintext = client.decrypt("my-app", &dek.ciphertext, b"bucket=photos")?;
    if *plaintext != dek.plaintext {
        return Err("the data key did not decrypt to itself".into());
    }
    println!(
        "generated and decrypted a {}-byte data key of key my-app",
        dek.plaintext.len()
    );
    drop(client);

    // Graceful: requests in flight are answered, then every thread ends and kes.db is closed.
    server.shutdown()?;
    if std::net::TcpStream::connect(addr).is_ok() {
        return Err("the server still listens after shutdown".into());
    }
    println!("stopped; {} is closed", dir.join("data/kes.db").display());
    Ok(())
}

/// A CA (`ca.pem`, what the client trusts) and a server certificate for 127.0.0.1 signed by
/// it (`server.cert`, `server.key`).
fn write_certificates(dir: &Path) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(
        &server_key,
        &ca,
        &ca_key,
    )?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.cert"), server.pem())?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
    Ok(())
}

fn random() -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(bytes)
}
