//! The client library (`kes_node::client`) against real servers: the typed errors a caller
//! must handle (not found, exists, forbidden, unavailable) come from real answers of a
//! stateful server and of an edge server whose key store went away, over real TLS with the
//! server verified against the test CA.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kes_node::client::{
    generate_api_key, ApiError, Client, ClientError, Credentials, Policy, ServerTrust,
};
use support::*;

/// A client for `server` with the API key `key`, verifying the server with the test CA.
fn client(env: &Env, server: &Server, key: &str) -> Client {
    let credentials = Credentials::from_api_key(key).expect("API key");
    let trust = ServerTrust::from_ca_path(&env.tmp.path().join("ca.pem")).expect("test CA");
    Client::new(&server.addr.to_string(), credentials, trust).expect("client")
}

/// An environment whose admin is a fresh API key; returns the key.
fn env_with_api_key_admin(tag: &str) -> (Env, String) {
    let mut env = Env::new(tag);
    let key = generate_api_key().to_string();
    let identity = Credentials::from_api_key(&key)
        .unwrap()
        .identity()
        .to_owned();
    env.set_admin(&identity);
    (env, key)
}

/// Asserts that `result` failed with exactly `want` (the variant and the KES error).
#[track_caller]
fn assert_err<T: std::fmt::Debug>(result: Result<T, ClientError>, want: ClientError) {
    match result {
        Err(err) => assert_eq!(err, want),
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
    }
}

#[track_caller]
fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Not found and exists for every kind of item, decrypt and name errors, as the server answers
/// them, each sorted into its variant and equal to the Go SDK's error value.
#[test]
fn not_found_and_exists() {
    let (env, key) = env_with_api_key_admin("client-errors");
    let server = env.start();
    let admin = client(&env, &server, &key);

    assert_err(
        admin.describe_key("nope"),
        ClientError::NotFound(ApiError::KEY_NOT_FOUND),
    );
    admin.create_key("k").unwrap();
    assert_err(
        admin.create_key("k"),
        ClientError::Exists(ApiError::KEY_EXISTS),
    );
    assert_err(
        admin.import_key("k", &[7; 32], "AES256"),
        ClientError::Exists(ApiError::KEY_EXISTS),
    );
    let dek = admin.generate_key("k", b"ctx").unwrap();
    assert_err(
        admin.decrypt("k", &dek.ciphertext, b"other ctx"),
        ClientError::BadRequest(ApiError::DECRYPT),
    );
    let err = admin.create_key("a.b").unwrap_err();
    assert!(
        matches!(&err, ClientError::BadRequest(e) if e.status() == 400),
        "{err:?}"
    );

    assert_err(
        admin.read_secret("nope"),
        ClientError::NotFound(ApiError::SECRET_NOT_FOUND),
    );
    admin.create_secret("s", b"value").unwrap();
    // Upstream's odd 404 for an existing secret is still "exists".
    assert_err(
        admin.create_secret("s", b"again"),
        ClientError::Exists(ApiError::SECRET_EXISTS),
    );

    assert_err(
        admin.describe_policy("nope"),
        ClientError::NotFound(ApiError::POLICY_NOT_FOUND),
    );
    assert_err(
        admin.describe_identity(&"ab".repeat(32)),
        ClientError::NotFound(ApiError::IDENTITY_NOT_FOUND),
    );
    assert_err(
        admin.describe_enclave("nope"),
        ClientError::NotFound(ApiError::ENCLAVE_NOT_FOUND),
    );
    admin.create_enclave("e").unwrap();
    assert_err(
        admin.create_enclave("e"),
        ClientError::Exists(ApiError::ENCLAVE_EXISTS),
    );
    // The error's Display is the KES message, as the CLI prints it.
    assert_eq!(
        admin.delete_key("nope").unwrap_err().to_string(),
        "key does not exist"
    );
}

/// An identity whose policy denies a route gets `Forbidden` with upstream's `NOT_ALLOWED`
/// there, and answers (or `NotFound`) where its policy allows; an identity the server does not
/// know at all is forbidden everywhere.
#[test]
fn forbidden_by_policy() {
    let (env, key) = env_with_api_key_admin("client-forbidden");
    let server = env.start();
    let admin = client(&env, &server, &key);
    admin.create_key("app-key").unwrap();
    let policy = Policy::from_json(
        br#"{"allow": ["/v1/key/*"], "deny": ["/v1/key/create/*", "/v1/key/delete/*"]}"#,
    )
    .unwrap();
    admin.create_policy("app", &policy).unwrap();

    let app_key = generate_api_key().to_string();
    let app_identity = Credentials::from_api_key(&app_key)
        .unwrap()
        .identity()
        .to_owned();
    admin
        .create_identity(&app_identity, "app", false, "")
        .unwrap();
    assert_err(
        admin.create_identity(&app_identity, "app", false, ""),
        ClientError::Exists(ApiError::IDENTITY_EXISTS),
    );
    let app = client(&env, &server, &app_key);
    let forbidden = ClientError::Forbidden(ApiError::NOT_ALLOWED);

    assert_err(app.create_key("mine"), forbidden.clone());
    assert_err(app.delete_key("app-key"), forbidden.clone());
    assert_err(app.create_secret("s", b"v"), forbidden.clone());
    assert_err(app.status(), forbidden.clone());
    // What the policy allows works, and a missing key is "not found", not "forbidden".
    let dek = app.generate_key("app-key", b"").unwrap();
    assert_eq!(
        *app.decrypt("app-key", &dek.ciphertext, b"").unwrap(),
        dek.plaintext
    );
    assert_err(
        app.describe_key("missing"),
        ClientError::NotFound(ApiError::KEY_NOT_FOUND),
    );
    assert_eq!(
        app.describe_self().unwrap().identity.policy.as_deref(),
        Some("app")
    );

    let stranger = client(&env, &server, &generate_api_key());
    assert_err(stranger.describe_key("app-key"), forbidden);
    // The admin key still exists: nothing the denied calls tried happened.
    admin.describe_key("app-key").unwrap();
}

/// The edge server's key store (a directory) goes away: creates and reads that need the store
/// fail as `Unavailable` (temporary), and work again once it is back.
#[test]
fn unavailable_while_the_key_store_is_offline() {
    let mut env = Env::edge("client-edge-offline");
    let key = generate_api_key().to_string();
    let identity = Credentials::from_api_key(&key)
        .unwrap()
        .identity()
        .to_owned();
    env.set_admin(&identity);
    let keys = env.tmp.path().join("keys");
    env.append_config(&format!(
        "keystore:\n  fs:\n    path: {}\n    status:\n      ping: 200ms\n",
        keys.display()
    ));
    let server = env.start();
    let c = client(&env, &server, &key);
    c.create_key("before").unwrap();
    c.ready().unwrap();

    let moved = keys.with_extension("gone");
    std::fs::rename(&keys, &moved).unwrap();
    eventually(Duration::from_secs(10), "ready reports the outage", || {
        c.ready().is_err()
    });
    let err = c.ready().unwrap_err();
    assert_eq!(
        err,
        ClientError::Unavailable(ApiError::new(504, "key store is not reachable"))
    );
    assert!(err.is_temporary());
    let err = c.create_key("during").unwrap_err();
    assert!(
        matches!(&err, ClientError::Unavailable(e) if e.status() == 502),
        "{err:?}"
    );
    assert!(err.is_temporary());

    std::fs::rename(&moved, &keys).unwrap();
    eventually(Duration::from_secs(10), "ready again", || c.ready().is_ok());
    c.create_key("after").unwrap();
    let names = c.list_keys("*").unwrap().names.clone();
    assert_eq!(names, ["after", "before"]);
}

/// Failures before any KES answer: a server whose certificate the CA did not sign (`Tls`),
/// nothing listening (`Transport`), bad local input (`Config`).
#[test]
fn tls_transport_and_config_errors() {
    let (env, key) = env_with_api_key_admin("client-tls");
    let server = env.start();
    // Trust a CA that did not sign the server's certificate.
    let other_ca = env.tmp.path().join("other-ca.pem");
    std::fs::write(&other_ca, pem_of(&pki().foreign.chain[0])).unwrap();
    let credentials = Credentials::from_api_key(&key).unwrap();
    let trust = ServerTrust::from_ca_path(&other_ca).unwrap();
    let wrong = Client::new(&server.addr.to_string(), credentials, trust).unwrap();
    let err = wrong.version().unwrap_err();
    assert!(
        matches!(&err, ClientError::Tls(m) if m.contains("cannot verify")),
        "{err:?}"
    );
    assert!(!err.is_temporary());

    let port = free_port();
    let nowhere = Client::new(
        &format!("127.0.0.1:{port}"),
        Credentials::from_api_key(&key).unwrap(),
        ServerTrust::Insecure,
    )
    .unwrap();
    let err = nowhere.version().unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(err.is_temporary());

    assert!(matches!(
        Credentials::from_api_key("kes:v1:nope"),
        Err(ClientError::Config(_))
    ));
    assert!(matches!(
        ServerTrust::from_ca_path(Path::new("/nonexistent/ca.pem")),
        Err(ClientError::Config(_))
    ));
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
