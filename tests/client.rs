//! The client library (`kes_node::client`) against real servers: the typed errors a caller
//! must handle (not found, exists, forbidden, unavailable) come from real answers of a
//! stateful server, of an edge server whose key store went away and of a cluster that lost
//! its quorum, over real TLS with the server verified against the test CA. Also the listing
//! iterators, typed log events, metrics, the cluster calls, and `examples/client.rs`.

mod support;

#[path = "../kes-node/examples/client.rs"]
mod example;

use std::path::Path;
use std::time::{Duration, Instant};

use kes_node::client::{
    generate_api_key, ApiError, AuditEvent, Client, ClientError, Credentials, Policy, ServerTrust,
};
use support::cluster::{Cluster, ClusterOpts};
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
    pem("CERTIFICATE", der)
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Listing iterators over every kind of item, typed audit events, metrics and HMAC.
#[test]
fn listings_logs_and_metrics() {
    let (env, key) = env_with_api_key_admin("client-listings");
    let server = env.start();
    let c = client(&env, &server, &key);
    for name in ["app-b", "app-a", "other", "app-c"] {
        c.create_key(name).unwrap();
    }
    let app: Vec<String> = c.keys("app").collect::<Result<_, _>>().unwrap();
    assert_eq!(app, ["app-a", "app-b", "app-c"]);
    let all: Vec<String> = c.keys("*").collect::<Result<_, _>>().unwrap();
    assert_eq!(all, ["app-a", "app-b", "app-c", "other"]);
    assert_eq!(c.list_keys("app").unwrap().names, app);

    c.create_secret("s-1", b"one").unwrap();
    c.create_secret("s-2", b"two").unwrap();
    let secrets: Vec<String> = c.secrets("s").collect::<Result<_, _>>().unwrap();
    assert_eq!(secrets, ["s-1", "s-2"]);
    assert_eq!(c.read_secret("s-2").unwrap().secret, b"two");
    c.create_policy("p-1", &Policy::default()).unwrap();
    assert_err(
        c.create_policy("p-1", &Policy::default()),
        ClientError::Exists(ApiError::POLICY_EXISTS),
    );
    let policies: Vec<String> = c.policies("p*").collect::<Result<_, _>>().unwrap();
    assert_eq!(policies, ["p-1"]);
    let identities: Vec<String> = c.identities("*").collect::<Result<_, _>>().unwrap();
    assert!(
        identities.contains(&c.identity().to_owned()),
        "{identities:?}"
    );
    c.create_enclave("e-1").unwrap();
    let enclaves: Vec<String> = c.enclaves("e").collect::<Result<_, _>>().unwrap();
    assert_eq!(enclaves, ["e-1"]);
    // An error ends the iteration after it is returned.
    let mut bad = c.keys("a.b");
    assert!(matches!(bad.next(), Some(Err(ClientError::BadRequest(_)))));
    assert!(bad.next().is_none());

    let mac = c.hmac("other", b"message").unwrap();
    assert_eq!(mac.len(), 32);
    assert_eq!(*c.hmac("other", b"message").unwrap(), *mac);
    assert_ne!(*c.hmac("app-a", b"message").unwrap(), *mac);

    // The audit log on its own connection, read on another thread so that a missing event
    // fails the test instead of blocking it.
    let events = c.audit_log().unwrap().events::<AuditEvent>();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in events {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    // The subscription may take effect a moment after the stream's head arrived: ask again
    // until the event shows up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = 'found: loop {
        assert!(Instant::now() < deadline, "no audit event within 10 s");
        let _ = c.describe_key("audited");
        while let Ok(event) = rx.recv_timeout(Duration::from_millis(250)) {
            let event = event.unwrap();
            if event.request.path == "/v1/key/describe/audited" {
                break 'found event;
            }
        }
    };
    assert_eq!(event.response.code, 404);
    assert_eq!(event.request.identity.as_deref(), Some(c.identity()));

    let metrics = c.metrics().unwrap();
    let errors = metrics.value("kes_http_request_error").unwrap();
    assert!(errors >= 1.0, "{}", metrics.text());
    assert!(metrics.value("kes_http_request_success").unwrap() >= 4.0);
    let status = c.status().unwrap();
    assert!(!status.version.is_empty());
    assert!(c.api().unwrap().iter().any(|r| r.path == "/v1/key/hmac/"));
}

/// `examples/client.rs` against a real server: its `run` (everything but reading the
/// environment) twice, the second time finding the key there.
#[test]
fn the_example_runs() {
    let (env, key) = env_with_api_key_admin("client-example");
    let server = env.start();
    let settings = example::Settings {
        server: format!("https://{}", server.addr),
        api_key: Some(key.clone()),
        cert_and_key: None,
        ca: Some(env.tmp.path().join("ca.pem")),
        insecure: false,
        enclave: None,
        key: "example-key".into(),
    };
    assert_eq!(example::run(&settings).unwrap(), ["example-key"]);
    assert_eq!(example::run(&settings).unwrap(), ["example-key"]);
    let no_ca = example::Settings {
        ca: None,
        ..settings
    };
    assert!(matches!(example::run(&no_ca), Err(ClientError::Config(_))));
}

/// A client for cluster node `slot` with the test admin's certificate.
fn cluster_client(cluster: &Cluster, slot: usize) -> Client {
    let dir = cluster.root();
    let (cert, key) = (dir.join("admin.cert"), dir.join("admin.key"));
    if !cert.exists() {
        let admin = &pki().admin;
        std::fs::write(&cert, pem_of(&admin.chain[0])).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", &admin.key_der)).unwrap();
    }
    let credentials = Credentials::from_pem_files(&cert, &key).unwrap();
    assert_eq!(credentials.identity(), pki().admin.identity);
    let trust = ServerTrust::from_ca_path(&dir.join("ca.pem")).unwrap();
    Client::new(&cluster.addr(slot).to_string(), credentials, trust).unwrap()
}

/// The cluster calls, and `Unavailable` from a node that is not a member yet and from a
/// cluster that lost its quorum.
#[test]
fn cluster_calls_and_lost_quorum() {
    let mut cluster = Cluster::start(
        "client-cluster",
        ClusterOpts {
            slots: 3,
            members: 2,
            bootstrap_json: true,
            proxy: false,
        },
    );
    let c0 = cluster_client(&cluster, 0);
    let info = c0.describe_cluster().unwrap();
    assert_eq!(info.nodes.len(), 2, "{info:?}");
    assert!(info.leader().is_some(), "{info:?}");
    c0.create_key("k").unwrap();
    assert!(!c0.backup_cluster().unwrap().is_empty());

    // A node started to join serves nothing but /version and the cluster view until added.
    cluster.start_node_with(2, &["--join"]);
    let c2 = cluster_client(&cluster, 2);
    let err = c2.describe_key("k").unwrap_err();
    assert!(
        matches!(&err, ClientError::Unavailable(e) if e.status() == 503),
        "{err:?}"
    );
    c2.describe_cluster().unwrap();

    // With both servers, the joining node's 503 sends the request on to node 0.
    let both = Client::with_endpoints(
        &[cluster.addr(2).to_string(), cluster.addr(0).to_string()],
        Credentials::from_pem_files(
            &cluster.root().join("admin.cert"),
            &cluster.root().join("admin.key"),
        )
        .unwrap(),
        ServerTrust::from_ca_path(&cluster.root().join("ca.pem")).unwrap(),
    )
    .unwrap();
    both.describe_key("k").unwrap();
    assert_eq!(both.endpoint().port, cluster.addr(0).port());
    // When no server can answer, the joining node's 503 says more than one that cannot be
    // reached, whichever comes last.
    let neither = Client::with_endpoints(
        &[
            cluster.addr(2).to_string(),
            format!("127.0.0.1:{}", free_port()),
        ],
        Credentials::from_pem_files(
            &cluster.root().join("admin.cert"),
            &cluster.root().join("admin.key"),
        )
        .unwrap(),
        ServerTrust::from_ca_path(&cluster.root().join("ca.pem")).unwrap(),
    )
    .unwrap();
    let err = neither.describe_key("k").unwrap_err();
    assert!(
        matches!(&err, ClientError::Unavailable(e) if e.status() == 503),
        "{err:?}"
    );

    let addr2 = cluster.addr(2).to_string();
    c0.expand_cluster(&addr2).unwrap();
    let err = c0.expand_cluster(&addr2).unwrap_err();
    assert!(matches!(err, ClientError::Exists(_)), "{err:?}");
    let err = c0.shrink_cluster("127.0.0.1:1", false).unwrap_err();
    assert!(matches!(err, ClientError::NotFound(_)), "{err:?}");
    eventually(Duration::from_secs(30), "the new node serves", || {
        c2.describe_key("k").is_ok()
    });

    // The CLI's `cluster info` reads the same typed answer.
    let out = cluster.cli(0, &["cluster", "info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for slot in 0..3 {
        assert!(text.contains(&cluster.addr(slot).to_string()), "{text}");
    }
    assert_eq!(text.matches("leader").count(), 1, "{text}");
    assert!(
        text.contains("this node") && text.contains("connected"),
        "{text}"
    );
    assert!(
        text.contains("answered by") && text.contains("commit index"),
        "{text}"
    );

    // Two of three down: no quorum for writes.
    cluster.kill(1);
    cluster.kill(2);
    let err = c0.create_key("no-quorum").unwrap_err();
    assert!(
        matches!(&err, ClientError::Unavailable(e) if e.status() == 503),
        "{err:?}"
    );
    assert!(err.is_temporary());
}

/// Several servers: one that cannot be reached is passed over, by the library and by the CLI
/// (`KES_SERVER` with a comma-separated list).
#[test]
fn several_endpoints() {
    let (env, key) = env_with_api_key_admin("client-endpoints");
    let server = env.start();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let c = Client::with_endpoints(
        &[nowhere.as_str(), &server.addr.to_string()],
        Credentials::from_api_key(&key).unwrap(),
        ServerTrust::from_ca_path(&env.tmp.path().join("ca.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(c.endpoints().count(), 2);
    c.create_key("k").unwrap();
    assert_eq!(c.endpoint().port, server.addr.port());
    // Only unreachable servers: the error names each.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let none = Client::with_endpoints(
        &[nowhere.as_str(), elsewhere.as_str()],
        Credentials::from_api_key(&key).unwrap(),
        ServerTrust::Insecure,
    )
    .unwrap();
    match none.version() {
        Err(ClientError::Transport(why)) => {
            assert!(why.contains(&nowhere) && why.contains(&elsewhere), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Client::with_endpoints::<&str>(
            &[],
            Credentials::from_api_key(&key).unwrap(),
            ServerTrust::Insecure
        ),
        Err(ClientError::Config(_))
    ));

    let out = std::process::Command::new(KES_NODE)
        .args(["key", "ls"])
        .env_remove("KES_CLIENT_CERT")
        .env_remove("KES_CLIENT_KEY")
        .env_remove("KES_ENCLAVE")
        .env(
            "KES_SERVER",
            format!("https://{nowhere}, https://{}", server.addr),
        )
        .env("KES_API_KEY", &key)
        .env("KES_CA", env.tmp.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k\n");
}
