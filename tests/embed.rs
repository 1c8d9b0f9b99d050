//! A KES server embedded in this test process through `kes_node::server::Builder`, on a
//! listener the test bound itself, talked to with the client library (`kes_node::client`) and
//! with raw TLS: a stateful node (its own SoftHSM device, a real `kes.db`) and an edge server
//! (a real directory key store). Graceful shutdown: a request in flight when the server is
//! told to stop is answered, the listening socket is closed at once, and once `shutdown`
//! returns, `kes.db` opens again (a new server on the same port and directory serves what the
//! in-flight request wrote).

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kes_core::crypto::{Cipher, SecretKey};
use kes_core::hsm::SoftHsm;
use kes_node::client::{generate_api_key, Client, ClientError, Credentials, ServerTrust};
use kes_node::hsm::{Hsm, SoftHsmDevice};
use kes_node::server::Builder;
use support::{pki, TempDir, Tls};

/// The test's server files (certificate, key, CA) in `dir`, and a config naming them: the
/// admin is the API key `admin`; `pki().other` may create keys through a static policy.
fn config_text(dir: &Path, admin: &str) -> String {
    std::fs::write(dir.join("server.cert"), &pki().server_cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &pki().server_key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki().ca_cert_pem).unwrap();
    format!(
        "admin:\n  identity: {admin}\n\
         tls:\n  cert: server.cert\n  key: server.key\n\
         policy:\n  creator:\n    allow: [/v1/key/create/*]\n    identities: [{other}]\n\
         limits:\n  workers: 2\n",
        admin = Credentials::from_api_key(admin).unwrap().identity(),
        other = pki().other.identity,
    )
}

fn client(addr: SocketAddr, dir: &Path, admin: &str) -> Client {
    let credentials = Credentials::from_api_key(admin).unwrap();
    let trust = ServerTrust::from_ca_path(&dir.join("ca.pem")).unwrap();
    Client::new(&addr.to_string(), credentials, trust).unwrap()
}

fn soft_hsm(byte: u8) -> Arc<dyn Hsm> {
    Arc::new(SoftHsmDevice(SoftHsm::from_key(SecretKey::new(
        Cipher::Aes256,
        [byte; 32],
    ))))
}

/// Whether connecting to `addr` is refused within two seconds (the listener closed).
fn refused_soon(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_node_embedded_serves_the_client_library_and_stops_gracefully() {
    let tmp = TempDir::new("embed-node");
    let (dir, data) = (tmp.path(), tmp.path().join("data"));
    let admin = generate_api_key();
    let config = kes_node::config::parse(&config_text(dir, &admin), dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Builder::node(config.clone(), &data)
        .hsm(soft_hsm(7))
        .listener(listener)
        .start()
        .unwrap();
    assert_eq!(server.local_addr(), addr);
    assert_eq!(server.workers(), 2);

    // The client library against it: keys, data keys, typed errors.
    let kes = client(addr, dir, &admin);
    kes.create_key("embedded").unwrap();
    let dek = kes.generate_key("embedded", b"ctx").unwrap();
    assert_eq!(
        *kes.decrypt("embedded", &dek.ciphertext, b"ctx").unwrap(),
        dek.plaintext
    );
    let exists = kes.create_key("embedded").unwrap_err();
    assert!(matches!(exists, ClientError::Exists(_)), "{exists:?}");
    let missing = kes.describe_key("missing").unwrap_err();
    assert!(matches!(missing, ClientError::NotFound(_)), "{missing:?}");

    // A request in flight at shutdown: its head and half its body are in when the server is
    // told to stop; the rest comes after the listener is gone, and it is still answered.
    let mut raw = support::Client::connect(addr, Some(&pki().other), Tls::default()).unwrap();
    raw.send_raw(
        format!(
            "PUT /v1/key/create/in-flight HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .unwrap();
    // The server has read the partial request before it is told to stop.
    std::thread::sleep(Duration::from_millis(200));
    let stop = server.shutdown_handle();
    stop.shutdown();
    assert!(refused_soon(addr), "the listener is still accepting");
    raw.send_raw(b"}").unwrap();
    let resp = raw.read_response_for(false).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    // The connection is closed right after that answer (not when the 5 s grace ends).
    assert!(raw.peer_closed_within(Duration::from_secs(2)).unwrap());
    server.shutdown().unwrap();
    // Stopping twice is harmless.
    stop.shutdown();
    drop(kes);

    // kes.db is closed: a new server on the same port and directory opens it, and has the key
    // the in-flight request created.
    let listener = TcpListener::bind(addr).unwrap();
    let again = Builder::node(config, &data)
        .hsm(soft_hsm(7))
        .listener(listener)
        .start()
        .unwrap();
    let kes = client(addr, dir, &admin);
    kes.describe_key("in-flight").unwrap();
    kes.describe_key("embedded").unwrap();
    drop(kes);
    // Dropping the server stops it too, and waits.
    drop(again);
    assert!(TcpStream::connect(addr).is_err());

    // Another HSM key does not open it: the builder's error says why, and nothing serves.
    let err = Builder::node(
        kes_node::config::parse(&config_text(dir, &admin), dir).unwrap(),
        &data,
    )
    .hsm(soft_hsm(8))
    .address("127.0.0.1:0")
    .start()
    .unwrap_err();
    assert!(err.to_string().contains("HSM"), "{err}");
}

#[test]
fn an_edge_server_embedded_serves_from_its_key_store() {
    let tmp = TempDir::new("embed-edge");
    let dir = tmp.path();
    let admin = generate_api_key();
    let text =
        config_text(dir, &admin) + "keystore:\n  fs:\n    path: keys\nkeys:\n  - name: preset\n";
    let config = kes_node::config::parse(&text, dir).unwrap();
    let edge = kes_node::config::parse_edge(&text, dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Builder::edge(config, edge)
        .listener(listener)
        .start()
        .unwrap();

    let kes = client(addr, dir, &admin);
    kes.describe_key("preset").unwrap();
    kes.create_key("edge-key").unwrap();
    let dek = kes.generate_key("edge-key", b"").unwrap();
    assert_eq!(
        *kes.decrypt("edge-key", &dek.ciphertext, b"").unwrap(),
        dek.plaintext
    );
    // The key lives in the key store, not in the server.
    assert!(dir.join("keys").join("edge-key").exists());

    server.shutdown().unwrap();
    assert!(TcpStream::connect(addr).is_err());
    let gone = kes.describe_key("edge-key").unwrap_err();
    assert!(matches!(gone, ClientError::Transport(_)), "{gone:?}");
}

#[test]
fn a_bad_config_is_an_error_before_anything_is_served() {
    let tmp = TempDir::new("embed-bad");
    let dir = tmp.path();
    let admin = generate_api_key();
    let mut config = kes_node::config::parse(&config_text(dir, &admin), dir).unwrap();
    config.tls.cert = dir.join("missing.cert");
    let err = Builder::node(config, dir.join("data"))
        .hsm(soft_hsm(1))
        .address("127.0.0.1:0")
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("missing.cert"), "{err}");
    // Checked before kes.db is touched.
    assert!(!dir.join("data").join("kes.db").exists());

    let config = kes_node::config::parse(&config_text(dir, &admin), dir).unwrap();
    let err = Builder::node(config, dir.join("data"))
        .hsm(soft_hsm(1))
        .address("localhost")
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("invalid listen address"), "{err}");
}
