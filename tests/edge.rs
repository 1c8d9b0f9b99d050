//! The edge server (`kes-node edge`) against real key stores: a directory (`fs`), a real
//! stateful kes-node (`kes`) and an AWS Secrets Manager emulator (`aws`, moto in server mode).
//! Round trips, key files in upstream's formats, cache hits and expiry observed through
//! `/v1/metrics`, store outages with offline caching on and off, recovery, and bad store
//! contents.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kes_core::crypto::{Cipher, HmacKey, SecretKey};
use support::moto::Moto;
use support::*;

// ---- helpers -----------------------------------------------------------------------------

/// An edge environment whose `keystore:` is the directory `keys` beside the config.
fn fs_edge(tag: &str, extra: &str) -> (Env, PathBuf) {
    let mut env = Env::edge(tag);
    let keys = env.tmp.path().join("keys");
    env.append_config(&format!(
        "keystore:\n  fs:\n    path: {}\n    status:\n      ping: 200ms\n{extra}",
        keys.display()
    ));
    (env, keys)
}

/// The value of an unlabelled metric.
fn metric(c: &mut Client, name: &str) -> u64 {
    let text = c.get("/v1/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Polls `f` until it is true or `limit` passes.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cache settings of the outage tests. With offline caching, keys expire after 3 s: long
/// enough for the edge server to notice the outage before they do, on a loaded machine too.
/// Without, after 1 s.
fn outage_cache(offline: bool) -> &'static str {
    if offline {
        "cache:\n  expiry:\n    any: 3s\n    unused: 3s\n    offline: 1h\n"
    } else {
        "cache:\n  expiry:\n    any: 1s\n    unused: 1s\n    offline: 0s\n"
    }
}

/// Sleeps until keys last used before `last_use` are past `any` and `unused` of both.
fn past_expiry(last_use: Instant) {
    std::thread::sleep(Duration::from_millis(3300).saturating_sub(last_use.elapsed()));
}

// A protobuf `KeyVersion` built from the format facts (spec §8.4), independently of the
// server's encoder.
fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn pb_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    pb_varint(out, field << 3 | 2);
    pb_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn pb_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    pb_varint(out, field << 3);
    pb_varint(out, v);
}

/// `base64(KeyVersion{Key{key, type}, HMACKey{hmac, SHA256}, CreatedAt{secs}, CreatedBy})`.
fn upstream_key_file(key: &[u8; 32], kind: u64, hmac: &[u8; 32], secs: u64, by: &str) -> String {
    let mut secret = Vec::new();
    pb_bytes(&mut secret, 1, key);
    pb_uint(&mut secret, 2, kind);
    let mut mac = Vec::new();
    pb_bytes(&mut mac, 1, hmac);
    pb_uint(&mut mac, 2, 1);
    let mut ts = Vec::new();
    pb_uint(&mut ts, 1, secs);
    let mut kv = Vec::new();
    pb_bytes(&mut kv, 1, &secret);
    pb_bytes(&mut kv, 2, &mac);
    pb_bytes(&mut kv, 3, &ts);
    pb_bytes(&mut kv, 4, by.as_bytes());
    b64(&kv)
}

/// A ciphertext of `plaintext` under `key` in upstream's format, made here.
fn seal(key: &[u8; 32], cipher: Cipher, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
    let random: [u8; 28] = std::array::from_fn(|i| (i * 7 + 3) as u8);
    SecretKey::new(cipher, *key).encrypt(&random, plaintext, context)
}

// ---- fs ----------------------------------------------------------------------------------

/// Key files written here in upstream's formats are served unchanged; keys the edge server
/// creates are files in that format (mode 0600); deletes remove the file.
#[test]
fn fs_serves_upstream_key_files() {
    let (env, keys) = fs_edge("edge-fs", "");
    std::fs::create_dir_all(&keys).unwrap();
    let (k1, h1) = ([0x11u8; 32], [0x22u8; 32]);
    std::fs::write(
        keys.join("upstream-pb"),
        upstream_key_file(&k1, 1, &h1, 1_700_000_000, "creator-id"),
    )
    .unwrap();
    let k2 = [0x33u8; 32];
    std::fs::write(
        keys.join("legacy-json"),
        format!(
            r#"{{"bytes":"{}","algorithm":"XCHACHA20-POLY1305","created_at":"2020-01-02T03:04:05Z","created_by":"old-admin"}}"#,
            b64(&k2)
        ),
    )
    .unwrap();
    let k3 = [0x44u8; 32];
    std::fs::write(
        keys.join("oldest"),
        format!(r#"{{"bytes":"{}"}}"#, b64(&k3)),
    )
    .unwrap();
    let server = env.start();
    let mut c = server.admin();
    c.get("/v1/ready").assert_empty_ok();

    assert_eq!(c.list("*"), ["legacy-json", "oldest", "upstream-pb"]);
    assert_eq!(c.list("up"), ["upstream-pb"]);
    let d = c.get("/v1/key/describe/upstream-pb").assert_json_ok();
    assert_eq!(d["algorithm"], "AES256");
    assert_eq!(d["created_at"], "2023-11-14T22:13:20Z");
    assert_eq!(d["created_by"], "creator-id");
    let d = c.get("/v1/key/describe/legacy-json").assert_json_ok();
    assert_eq!(d["algorithm"], "ChaCha20");
    assert_eq!(d["created_at"], "2020-01-02T03:04:05Z");
    let d = c.get("/v1/key/describe/oldest").assert_json_ok();
    assert_eq!(
        (d["algorithm"].as_str(), d["created_at"].as_str()),
        (Some("AES256"), Some("0001-01-01T00:00:00Z"))
    );

    // The files' key bytes are the keys: ciphertexts made here decrypt there.
    for (name, key, cipher) in [
        ("upstream-pb", k1, Cipher::Aes256),
        ("legacy-json", k2, Cipher::ChaCha20),
        ("oldest", k3, Cipher::Aes256),
    ] {
        let ct = seal(&key, cipher, b"from the file", b"ctx");
        assert_eq!(
            c.decrypt(name, &ct, Some(b"ctx")),
            b"from the file",
            "{name}"
        );
    }
    assert_eq!(c.hmac("upstream-pb", b"msg"), HmacKey::new(h1).sign(b"msg"));
    c.put_json(
        "/v1/key/hmac/legacy-json",
        &serde_json::json!({"message": b64(b"m")}),
    )
    .assert_error(409, "key does not support HMAC");

    // A key created by the edge server: a file in upstream's format, mode 0600.
    c.create_key("made-here");
    c.put("/v1/key/create/made-here")
        .assert_error(400, "key already exists");
    let file = keys.join("made-here");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stored = unb64(std::fs::read_to_string(&file).unwrap().trim());
    // KeyVersion.Key = SecretKey{Key: 32 bytes, Type}; then HMACKey.
    assert_eq!(&stored[..4], &[0x0a, 36, 0x0a, 32]);
    assert!(
        stored[36] == 0x10 && matches!(stored[37], 1 | 2),
        "SecretKey.Type: {stored:?}"
    );
    assert_eq!(&stored[38..42], &[0x12, 36, 0x0a, 32]);
    let key: [u8; 32] = stored[4..36].try_into().unwrap();
    let cipher = if stored[37] == 1 {
        Cipher::Aes256
    } else {
        Cipher::ChaCha20
    };
    let (pt, ct) = c.generate("made-here", Some(b"dek"));
    assert_eq!(
        SecretKey::new(cipher, key).decrypt(&ct, b"dek").unwrap(),
        pt
    );
    c.import_key("imported", &[0x55; 32], "AES256");
    let ct = seal(&[0x55; 32], Cipher::Aes256, b"imported", b"");
    assert_eq!(c.decrypt("imported", &ct, None), b"imported");

    // Names never reach the file system unchecked.
    c.get("/v1/key/describe/..%2Fconfig.yml").assert_error(
        400,
        "key name '../config.yml' is empty, too long or contains invalid characters",
    );
    c.delete("/v1/key/delete/made-here").assert_empty_ok();
    assert!(!file.exists());
    c.delete("/v1/key/delete/made-here")
        .assert_error(404, "key does not exist");
    c.get("/v1/key/describe/made-here")
        .assert_error(404, "key does not exist");
    assert_eq!(
        c.list("*"),
        ["imported", "legacy-json", "oldest", "upstream-pb"]
    );
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 4);
}

/// Unsupported routes are unknown paths, as on upstream's stateless server; static policies
/// from the config decide what other identities may do.
#[test]
fn fs_routes_and_policies() {
    let other = &pki().other;
    let (env, _) = fs_edge(
        "edge-routes",
        &format!(
            "policy:\n  app:\n    allow: [/v1/key/encrypt/app-*, /v1/key/decrypt/app-*]\n    identities: [{}]\n",
            other.identity
        ),
    );
    let server = env.start();
    let mut admin = server.admin();
    admin.create_key("app-1");
    for (method, path) in [
        ("GET", "/v1/secret/list/*"),
        ("PUT", "/v1/policy/create/p"),
        ("PUT", "/v1/enclave/create/e"),
        ("DELETE", "/v1/identity/delete/x"),
        ("GET", "/v1/cluster/describe"),
    ] {
        let r = admin.must(method, path, &[], None);
        assert_eq!(
            (r.status, r.text()),
            (404, "404 page not found\n".into()),
            "{method} {path}"
        );
    }
    assert_eq!(
        admin
            .get("/v1/api")
            .assert_json_ok()
            .as_array()
            .unwrap()
            .len(),
        22
    );
    let mut app = server.client(other);
    let ct = app.encrypt("app-1", b"x", None);
    assert_eq!(app.decrypt("app-1", &ct, None), b"x");
    app.put("/v1/key/create/app-2")
        .assert_error(403, "not authorized: insufficient permissions");
    // Kes-Enclave means nothing to an edge server.
    let r = app.must(
        "PUT",
        "/v1/key/encrypt/app-1",
        &[("Kes-Enclave", "other")],
        Some(br#"{"plaintext":"eA=="}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The first use of a key fetches it, the next ones hit the cache (metrics); `any` expires
/// entries however often used, `unused` those not used; a changed key file shows after expiry.
#[test]
fn fs_cache_hits_and_expiry() {
    let (env, keys) = fs_edge(
        "edge-cache",
        "cache:\n  expiry:\n    any: 2s\n    unused: 1h\n",
    );
    std::fs::create_dir_all(&keys).unwrap();
    let (old, new) = ([1u8; 32], [2u8; 32]);
    std::fs::write(keys.join("k"), upstream_key_file(&old, 1, &[0; 32], 1, "")).unwrap();
    let server = env.start();
    let mut c = server.admin();
    let fetches = metric(&mut c, "kes_edge_keystore_fetches_total");
    let ct_old = seal(&old, Cipher::Aes256, b"old", b"");
    let ct_new = seal(&new, Cipher::Aes256, b"new", b"");
    let before = Instant::now();
    assert_eq!(c.decrypt("k", &ct_old, None), b"old");
    let after = Instant::now();
    let hits = metric(&mut c, "kes_edge_cache_hits_total");
    for _ in 0..5 {
        assert_eq!(c.decrypt("k", &ct_old, None), b"old");
    }
    assert_eq!(metric(&mut c, "kes_edge_cache_hits_total"), hits + 5);
    assert_eq!(
        metric(&mut c, "kes_edge_keystore_fetches_total"),
        fetches + 1
    );
    assert_eq!(metric(&mut c, "kes_edge_cache_keys"), 1);

    // The key file changes: the cached key serves until `any` is over.
    std::fs::write(keys.join("k"), upstream_key_file(&new, 1, &[0; 32], 1, "")).unwrap();
    // (The key was fetched between `before` and `after`.)
    if before.elapsed() < Duration::from_millis(1800) {
        assert_eq!(c.decrypt("k", &ct_old, None), b"old");
    }
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(after.elapsed()));
    assert_eq!(c.decrypt("k", &ct_new, None), b"new");
    c.decrypt_resp("k", &ct_old, None)
        .assert_error(400, "decryption failed: ciphertext is not authentic");
    assert_eq!(
        metric(&mut c, "kes_edge_keystore_fetches_total"),
        fetches + 2
    );
}

#[test]
fn fs_cache_unused_expiry() {
    let (env, _) = fs_edge(
        "edge-unused",
        "cache:\n  expiry:\n    any: 1h\n    unused: 2s\n",
    );
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k");
    let f0 = metric(&mut c, "kes_edge_keystore_fetches_total");
    c.encrypt("k", b"x", None);
    // Used every 400 ms: it stays.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        c.encrypt("k", b"x", None);
    }
    assert_eq!(metric(&mut c, "kes_edge_keystore_fetches_total"), f0 + 1);
    // Unused for more than two seconds: fetched again.
    std::thread::sleep(Duration::from_millis(2500));
    c.encrypt("k", b"x", None);
    assert_eq!(metric(&mut c, "kes_edge_keystore_fetches_total"), f0 + 2);
}

/// The key directory goes away: with offline caching, cached keys keep serving past their
/// expiry while creates and deletes fail cleanly and ready/status report the outage; without
/// it, cached keys expire as usual. When the directory is back, everything works again.
#[test]
fn fs_outage_with_offline_caching_on_and_off() {
    let (on_env, keys) = fs_edge("edge-offline-on", outage_cache(true));
    let mut off_env = Env::edge("edge-offline-off");
    off_env.append_config(&format!(
        "keystore:\n  fs:\n    path: {}\n    status:\n      ping: 200ms\n{}",
        keys.display(),
        outage_cache(false)
    ));
    let on = on_env.start();
    let off = off_env.start();
    let (mut a, mut b) = (on.admin(), off.admin());
    a.create_key("k");
    a.create_key("uncached");
    let ct = a.encrypt("k", b"secret", None);
    assert_eq!(b.decrypt("k", &ct, None), b"secret");
    let last_use = Instant::now();
    assert_eq!(metric(&mut a, "kes_edge_keystore_up"), 1);

    let moved = keys.with_extension("gone");
    std::fs::rename(&keys, &moved).unwrap();
    for c in [&mut a, &mut b] {
        eventually(Duration::from_secs(10), "ready reports the outage", || {
            c.get("/v1/ready").status == 504
        });
        c.get("/v1/ready")
            .assert_error(504, "key store is not reachable");
        let s = c.get("/v1/status").assert_json_ok();
        assert_eq!(
            (
                s["keystore_unreachable"].as_bool(),
                s["keystore_unavailable"].as_bool()
            ),
            (Some(true), Some(true)),
            "{s}"
        );
        assert_eq!(metric(c, "kes_edge_keystore_up"), 0);
    }
    past_expiry(last_use);
    // Offline caching on: the cached key still serves everything that needs no store.
    assert_eq!(a.decrypt("k", &ct, None), b"secret");
    let (pt, dek) = a.generate("k", None);
    assert_eq!(a.decrypt("k", &dek, None), pt);
    a.put("/v1/key/create/new")
        .assert_error(502, "failed to create key");
    a.delete("/v1/key/delete/k")
        .assert_error(502, "failed to delete key");
    a.get("/v1/key/describe/uncached")
        .assert_error(502, "failed to read key");
    a.get("/v1/key/list/*")
        .assert_error(502, "failed to list keys");
    // Offline caching off: the key expired as usual and cannot be fetched.
    b.decrypt_resp("k", &ct, None)
        .assert_error(502, "failed to read key");

    std::fs::rename(&moved, &keys).unwrap();
    for c in [&mut a, &mut b] {
        eventually(Duration::from_secs(10), "ready after the recovery", || {
            c.get("/v1/ready").status == 200
        });
        assert_eq!(c.decrypt("k", &ct, None), b"secret");
    }
    a.create_key("new");
    assert_eq!(b.list("*"), ["k", "new", "uncached"]);
    // The outage and the recovery are logged once each.
    let log = on.stderr();
    let down = log
        .lines()
        .filter(|l| {
            l.contains("is not reachable") && l.contains("cached keys serve for up to 1h0m0s")
        })
        .count();
    assert_eq!(down, 1, "the outage is logged once:\n{log}");
    eventually(Duration::from_secs(5), "the recovery is logged", || {
        on.stderr().contains("answers again")
    });
}

/// Store contents that are not keys give errors that say so; the server stays ready.
#[test]
fn fs_bad_contents() {
    let (env, keys) = fs_edge("edge-bad", "");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("garbage"), "this is not a key").unwrap();
    std::fs::write(keys.join("short"), r#"{"bytes":"AAAA"}"#).unwrap();
    let mut pb = Vec::new();
    pb_bytes(&mut pb, 4, b"only a creator");
    std::fs::write(keys.join("nokey"), b64(&pb)).unwrap();
    let server = env.start();
    let mut c = server.admin();
    for (name, why) in [
        (
            "garbage",
            "neither base64 (of a protobuf KeyVersion) nor legacy JSON",
        ),
        ("short", "legacy JSON key has 3 bytes, not 32"),
        ("nokey", "KeyVersion has no Key"),
    ] {
        c.get(&format!("/v1/key/describe/{name}")).assert_error(
            500,
            &format!("key '{name}' in the key store is not a valid key: {why}"),
        );
    }
    c.get("/v1/ready").assert_empty_ok();
    // The server logs before it answers, but our reader of its stderr may not have the line yet.
    eventually(Duration::from_secs(5), "the error log names it", || {
        server.stderr().contains("not a valid key")
    });
}

/// `keys:` are created at start unless they exist (a restart keeps them as they are).
#[test]
fn fs_keys_from_the_config() {
    let (env, keys) = fs_edge("edge-keys", "keys:\n  - name: boot-1\n  - name: boot-2\n");
    let mut server = env.start();
    let mut c = server.admin();
    assert_eq!(c.list("*"), ["boot-1", "boot-2"]);
    let d = c.get("/v1/key/describe/boot-1").assert_json_ok();
    assert_eq!(d["created_by"], pki().admin.identity.as_str());
    let ct = c.encrypt("boot-1", b"kept", None);
    let before = std::fs::read(keys.join("boot-1")).unwrap();
    server.stop();
    let server = env.start();
    assert_eq!(std::fs::read(keys.join("boot-1")).unwrap(), before);
    assert_eq!(server.admin().decrypt("boot-1", &ct, None), b"kept");
}

/// Config mistakes stop the edge server with one line that names the field.
#[test]
fn edge_config_errors() {
    let env = Env::edge("edge-config");
    let exit = env
        .try_start()
        .err()
        .expect("must not start without a key store");
    assert!(
        exit.stderr.contains("no keystore specified"),
        "{}",
        exit.stderr
    );
    let (mut env, _) = fs_edge("edge-config2", "");
    env.append_config("cache:\n  expiry:\n    any: soon\n");
    let exit = env.try_start().err().expect("must not start");
    assert!(exit.stderr.contains("cache.expiry.any"), "{}", exit.stderr);
}

// ---- kes ---------------------------------------------------------------------------------

/// The `kes:v1:` API key of a 32-byte seed (spec §2.4).
fn api_key(seed: &[u8; 32]) -> String {
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(seed);
    format!("kes:v1:{}", b64(&bytes))
}

/// A request in `enclave` as the admin.
fn in_enclave(
    c: &mut Client,
    method: &str,
    path: &str,
    enclave: &str,
    body: Option<&serde_json::Value>,
) -> Response {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    c.must(method, path, &[("Kes-Enclave", enclave)], bytes.as_deref())
}

/// A stateful kes-node with enclave `edge`, where the identity of `seed`'s API key may use
/// secrets (and only secrets).
fn kes_store(seed: &[u8; 32]) -> (Env, Server) {
    let env = Env::new("edge-kes-store");
    let server = env.start();
    allow_edge(&mut server.admin(), seed);
    (env, server)
}

/// Creates enclave `edge` where the identity of `seed`'s API key may use secrets.
fn allow_edge(admin: &mut Client, seed: &[u8; 32]) {
    admin.put("/v1/enclave/create/edge").assert_empty_ok();
    let policy = serde_json::json!({"allow": {"/v1/secret/*": {}}, "deny": {}});
    in_enclave(
        admin,
        "PUT",
        "/v1/policy/create/edge-keys",
        "edge",
        Some(&policy),
    )
    .assert_empty_ok();
    let id = ed25519_client_cert(seed, "edge").identity;
    in_enclave(
        admin,
        "PUT",
        &format!("/v1/identity/create/{id}"),
        "edge",
        Some(&serde_json::json!({"policy": "edge-keys"})),
    )
    .assert_empty_ok();
}

/// An edge environment in front of the kes-node at `addr`.
fn kes_edge(
    tag: &str,
    store: &Env,
    addr: std::net::SocketAddr,
    seed: &[u8; 32],
    extra: &str,
) -> Env {
    kes_edge_nodes(tag, &store.tmp.path().join("ca.pem"), &[addr], seed, extra)
}

/// An edge environment in front of the kes-nodes at `addrs` (the nodes of one cluster).
/// `extra` follows the `keystore.kes` section: lines indented by four spaces are more of its
/// fields (`    timeout: 1s\n`), unindented ones sections of their own.
fn kes_edge_nodes(
    tag: &str,
    ca: &std::path::Path,
    addrs: &[std::net::SocketAddr],
    seed: &[u8; 32],
    extra: &str,
) -> Env {
    let mut env = Env::edge(tag);
    let endpoints: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
    env.append_config(&format!(
        "keystore:\n  kes:\n    endpoint: [{}]\n    enclave: edge\n    credentials:\n      api_key: {}\n    tls:\n      ca: {}\n    status:\n      ping: 200ms\n{extra}",
        endpoints.join(", "),
        api_key(seed),
        ca.display()
    ));
    env
}

/// Keys as secrets of a real kes-node: round trips, an edge fleet sharing them, cache hits,
/// the kes-node stopped (offline caching on and off) and started again.
#[test]
fn kes_round_trip_fleet_and_outage() {
    let seed = [7u8; 32];
    let (store_env, mut store) = kes_store(&seed);
    let addr = store.addr;
    let on_env = kes_edge("edge-kes-on", &store_env, addr, &seed, outage_cache(true));
    let off_env = kes_edge("edge-kes-off", &store_env, addr, &seed, outage_cache(false));
    let (on, off) = (on_env.start(), off_env.start());
    let (mut a, mut b) = (on.admin(), off.admin());
    a.get("/v1/ready").assert_empty_ok();

    a.create_key("k");
    a.put("/v1/key/create/k")
        .assert_error(400, "key already exists");
    // The key is a secret of the enclave, holding upstream's encoding of the key.
    let mut admin = store.admin();
    let secret = in_enclave(&mut admin, "GET", "/v1/secret/read/k", "edge", None).assert_json_ok();
    let value = unb64(secret["secret"].as_str().unwrap());
    let pb = unb64(std::str::from_utf8(&value).unwrap());
    assert_eq!(&pb[..4], &[0x0a, 36, 0x0a, 32], "a protobuf KeyVersion");
    // Another edge server of the fleet sees it.
    let ct = a.encrypt("k", b"fleet", Some(b"c"));
    assert_eq!(b.decrypt("k", &ct, Some(b"c")), b"fleet");
    let hits = metric(&mut b, "kes_edge_cache_hits_total");
    assert_eq!(b.decrypt("k", &ct, Some(b"c")), b"fleet");
    assert_eq!(metric(&mut b, "kes_edge_cache_hits_total"), hits + 1);
    a.import_key("imported", &[9; 32], "ChaCha20");
    assert_eq!(b.list("*"), ["imported", "k"]);
    assert_eq!(
        b.get("/v1/key/describe/imported").assert_json_ok()["algorithm"],
        "ChaCha20"
    );
    a.create_key("gone");
    b.delete("/v1/key/delete/gone").assert_empty_ok();
    a.get("/v1/key/describe/gone")
        .assert_error(404, "key does not exist");
    in_enclave(&mut admin, "GET", "/v1/secret/describe/gone", "edge", None)
        .assert_error(404, "secret does not exist");

    // The kes-node stops.
    assert_eq!(a.decrypt("k", &ct, Some(b"c")), b"fleet");
    assert_eq!(b.decrypt("k", &ct, Some(b"c")), b"fleet");
    let last_use = Instant::now();
    store.stop();
    for c in [&mut a, &mut b] {
        eventually(Duration::from_secs(10), "ready reports the outage", || {
            c.get("/v1/ready").status == 504
        });
    }
    past_expiry(last_use);
    assert_eq!(a.decrypt("k", &ct, Some(b"c")), b"fleet");
    a.put("/v1/key/create/new")
        .assert_error(502, "failed to create key");
    b.decrypt_resp("k", &ct, Some(b"c"))
        .assert_error(502, "failed to read key");

    // And comes back.
    let store = store_env.start();
    assert_eq!(store.addr, addr);
    for c in [&mut a, &mut b] {
        eventually(
            Duration::from_secs(10),
            "ready after the kes-node is back",
            || c.get("/v1/ready").status == 200,
        );
        assert_eq!(c.decrypt("k", &ct, Some(b"c")), b"fleet");
    }
    b.create_key("new");
    assert_eq!(a.list("*"), ["imported", "k", "new"]);
}

/// An edge identity the kes-node does not let use secrets: not ready, and errors that say why.
#[test]
fn kes_refused_identity() {
    let seed = [7u8; 32];
    let (store_env, store) = kes_store(&seed);
    let env = kes_edge("edge-kes-refused", &store_env, store.addr, &[8u8; 32], "");
    let edge = env.start();
    let mut c = edge.admin();
    c.get("/v1/ready")
        .assert_error(502, "key store is unavailable");
    let s = c.get("/v1/status").assert_json_ok();
    assert_eq!(
        (
            s["keystore_unavailable"].as_bool(),
            s.get("keystore_unreachable")
        ),
        (Some(true), None),
        "{s}"
    );
    c.put("/v1/key/create/k")
        .assert_error(502, "failed to create key");
    eventually(
        Duration::from_secs(5),
        "the reason in the error log",
        || {
            edge.stderr()
                .contains("needs a policy allowing /v1/secret/*")
        },
    );
}

// ---- aws ---------------------------------------------------------------------------------

/// Creates key `name` through `edge`; a failure shows why (the edge server's error log and
/// moto's request log), which the client's generic 502 does not.
#[track_caller]
fn create_through(edge: &Server, c: &mut Client, moto: &Moto, name: &str) {
    let r = c.put(&format!("/v1/key/create/{name}"));
    assert!(
        r.status == 200,
        "create {name}: {} {}\nedge stderr:\n{}\nmoto log:\n{}",
        r.status,
        r.text(),
        edge.stderr(),
        moto.log.lock().unwrap().join("\n")
    );
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {text}"))
        + open.len();
    let end = text[start..].find(close).unwrap() + start;
    &text[start..end]
}

/// An edge environment in front of `moto`; `kms`: the KMS key that encrypts the secrets.
fn aws_edge(tag: &str, moto: &Moto, creds: (&str, &str), kms: Option<&str>, extra: &str) -> Env {
    let mut env = Env::edge(tag);
    let kms = kms
        .map(|k| format!("      kmskey: {k}\n"))
        .unwrap_or_default();
    env.append_config(&format!(
        "keystore:\n  aws:\n    secretsmanager:\n      endpoint: {}\n      region: us-east-1\n{kms}      credentials:\n        accesskey: {}\n        secretkey: {}\n      status:\n        ping: 200ms\n{extra}",
        moto.url(), creds.0, creds.1
    ));
    env
}

/// Against moto checking signatures and IAM permissions: SigV4-signed calls succeed (and a
/// wrong secret key is refused), keys are secrets in upstream's layout encrypted with the
/// configured KMS key, a secret written in the legacy format is served.
#[test]
fn aws_signed_round_trip_with_kms() {
    // Six set-up calls go unchecked: user, access key, its policy, a KMS key, two secrets.
    let moto = Moto::start(None, Some(6));
    moto.iam("Action=CreateUser&UserName=edge");
    let created = moto.iam("Action=CreateAccessKey&UserName=edge");
    let access = between(&created, "<AccessKeyId>", "</AccessKeyId>").to_string();
    let secret = between(&created, "<SecretAccessKey>", "</SecretAccessKey>").to_string();
    let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
    moto.iam(&format!(
        "Action=PutUserPolicy&UserName=edge&PolicyName=all&PolicyDocument={policy}"
    ));
    let kms = moto.json("TrentService.CreateKey", &serde_json::json!({}));
    let kms_key = kms["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let legacy_key = [0x66u8; 32];
    let legacy = format!(
        r#"{{"bytes":"{}","algorithm":"AES256-GCM_SHA256"}}"#,
        b64(&legacy_key)
    );
    moto.json(
        "secretsmanager.CreateSecret",
        &serde_json::json!({"Name": "preexisting", "SecretString": legacy}),
    );
    // A secret stored as SecretBinary (upstream reads either).
    let binary_key = [0x77u8; 32];
    let stored = upstream_key_file(&binary_key, 2, &[0x78; 32], 1_600_000_000, "");
    moto.json(
        "secretsmanager.CreateSecret",
        &serde_json::json!({"Name": "binary", "SecretBinary": b64(stored.as_bytes())}),
    );

    let env = aws_edge("edge-aws", &moto, (&access, &secret), Some(&kms_key), "");
    let edge = env.start();
    let mut c = edge.admin();
    // The health check (a signed ListSecrets) passes.
    c.get("/v1/ready").assert_empty_ok();
    assert_eq!(c.list("*"), ["binary", "preexisting"]);
    let ct = seal(&binary_key, Cipher::ChaCha20, b"binary", b"");
    assert_eq!(c.decrypt("binary", &ct, None), b"binary");
    let ct = seal(&legacy_key, Cipher::Aes256, b"legacy", b"");
    assert_eq!(c.decrypt("preexisting", &ct, None), b"legacy");

    create_through(&edge, &mut c, &moto, "k");
    c.put("/v1/key/create/k")
        .assert_error(400, "key already exists");
    let stored = moto.secrets();
    let k = stored.iter().find(|s| s["name"] == "k").expect("secret k");
    assert_eq!(k["kms_key_id"], kms_key.as_str());
    let pb = unb64(k["secret_string"].as_str().unwrap());
    assert_eq!(&pb[..4], &[0x0a, 36, 0x0a, 32], "a protobuf KeyVersion");
    let f0 = metric(&mut c, "kes_edge_keystore_fetches_total");
    let (pt, dek) = c.generate("k", Some(b"ctx"));
    assert_eq!(c.decrypt("k", &dek, Some(b"ctx")), pt);
    assert_eq!(c.hmac("k", b"m"), c.hmac("k", b"m"));
    assert_eq!(metric(&mut c, "kes_edge_keystore_fetches_total"), f0 + 1);
    c.import_key("imported", &[3; 32], "AES256");
    assert_eq!(c.list("*"), ["binary", "imported", "k", "preexisting"]);
    c.delete("/v1/key/delete/k").assert_empty_ok();
    c.get("/v1/key/describe/k")
        .assert_error(404, "key does not exist");
    // (moto's data dump lists deleted secrets too; its API no longer has it.)
    assert_eq!(c.list("*"), ["binary", "imported", "preexisting"]);

    // A wrong secret key: moto refuses the signature.
    let bad = aws_edge("edge-aws-bad", &moto, (&access, "not-the-secret"), None, "").start();
    let mut b = bad.admin();
    b.get("/v1/ready")
        .assert_error(502, "key store is unavailable");
    b.put("/v1/key/create/x")
        .assert_error(502, "failed to create key");
    eventually(
        Duration::from_secs(5),
        "the refusal in the error log",
        || bad.stderr().contains("CreateSecret: 403"),
    );
}

/// moto killed: offline caching on keeps cached keys serving, off lets them expire; creates
/// fail cleanly; ready and status report it. moto started again (empty, it keeps no state):
/// ready again, and new keys work.
#[test]
fn aws_outage_and_recovery() {
    let mut moto = Moto::start(None, None);
    let on = aws_edge("edge-aws-on", &moto, ("a", "b"), None, outage_cache(true)).start();
    let off = aws_edge("edge-aws-off", &moto, ("a", "b"), None, outage_cache(false)).start();
    let (mut a, mut b) = (on.admin(), off.admin());
    create_through(&on, &mut a, &moto, "k");
    let ct = a.encrypt("k", b"x", None);
    assert_eq!(b.decrypt("k", &ct, None), b"x");
    let last_use = Instant::now();

    let port = moto.port;
    moto.stop();
    for c in [&mut a, &mut b] {
        eventually(Duration::from_secs(10), "ready reports the outage", || {
            c.get("/v1/ready").status == 504
        });
        let s = c.get("/v1/status").assert_json_ok();
        assert_eq!(s["keystore_unreachable"], true, "{s}");
    }
    past_expiry(last_use);
    assert_eq!(a.decrypt("k", &ct, None), b"x");
    a.put("/v1/key/create/new")
        .assert_error(502, "failed to create key");
    b.decrypt_resp("k", &ct, None)
        .assert_error(502, "failed to read key");

    let moto = Moto::start(Some(port), None);
    for c in [&mut a, &mut b] {
        eventually(Duration::from_secs(10), "ready after moto is back", || {
            c.get("/v1/ready").status == 200
        });
    }
    create_through(&on, &mut a, &moto, "new");
    let ct = a.encrypt("new", b"y", None);
    assert_eq!(b.decrypt("new", &ct, None), b"y");
}

/// While the key store hangs (the kes-node is stopped with SIGSTOP), the event loop goes on
/// serving: cached keys and `/version` answer at once; requests for a missing key wait, share
/// one fetch, and are answered when the store resumes.
#[test]
fn kes_hanging_store_blocks_no_one() {
    let seed = [7u8; 32];
    let (store_env, store) = kes_store(&seed);
    let env = kes_edge("edge-kes-hang", &store_env, store.addr, &seed, "");
    let edge = env.start();
    let mut c = edge.admin();
    c.create_key("hot");
    c.create_key("cold");
    let ct = c.encrypt("hot", b"hot", None);
    let misses = metric(&mut c, "kes_edge_cache_misses_total");
    let fetches = metric(&mut c, "kes_edge_keystore_fetches_total");

    // SAFETY: kill(2) on the pid of a child process this test started.
    assert_eq!(
        unsafe { libc::kill(store.pid() as libc::pid_t, libc::SIGSTOP) },
        0
    );
    let waiting: Vec<_> = (0..5)
        .map(|i| {
            let mut w = edge.admin();
            std::thread::spawn(move || {
                let msg = format!("cold {i}");
                let sealed = w.encrypt("cold", msg.as_bytes(), None);
                (msg, sealed)
            })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "all five wait for the store",
        || metric(&mut c, "kes_edge_cache_misses_total") == misses + 5,
    );
    // The loop is not blocked: a cached key and the version answer while the store hangs.
    let start = Instant::now();
    assert_eq!(c.decrypt("hot", &ct, None), b"hot");
    assert_eq!(c.get("/version").status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(!waiting.iter().any(|t| t.is_finished()));

    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::kill(store.pid() as libc::pid_t, libc::SIGCONT) },
        0
    );
    for t in waiting {
        let (msg, sealed) = t.join().unwrap();
        assert_eq!(c.decrypt("cold", &sealed, None), msg.as_bytes());
    }
    // One fetch served all five.
    assert_eq!(
        metric(&mut c, "kes_edge_keystore_fetches_total"),
        fetches + 1
    );
}

/// A fake kes-node that answers every request with a head announcing a 4 KB body and then
/// sends it a byte every 200 ms: each read comes back well within any read timeout, and the
/// answer never completes. Returns its address.
fn dripping_upstream() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = fake_server_tls(&[]);
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{";
                if tls.write_all(reply).and_then(|_| tls.flush()).is_err() {
                    return;
                }
                for _ in 0..4000 {
                    std::thread::sleep(Duration::from_millis(200));
                    if tls.write_all(b" ").and_then(|_| tls.flush()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A key store that answers slowly forever (a byte every 200 ms, never a whole answer) holds
/// neither the start nor a request nor a key store worker: each call gives up when
/// `keystore.kes.timeout` (1 s here) is up, and the store counts as unreachable, as one that is
/// down does. The start waits for one health check (1 s), requests get the KES error of an
/// unreachable store (`502`), `/v1/ready` says it is not reachable, and a start that must
/// create `keys:` fails saying why. Before, every call read on for as long as bytes kept coming
/// (the per-read timeout never ran out): the edge server never got to listening.
#[test]
fn kes_dripping_store_times_out() {
    let ca = TempDir::new("edge-drip-ca");
    std::fs::write(ca.path().join("ca.pem"), &pki().ca_cert_pem).unwrap();
    let upstream = dripping_upstream();
    let drip_edge = |tag: &str, extra: &str| {
        let extra = format!("    timeout: 1s\n{extra}");
        kes_edge_nodes(
            tag,
            &ca.path().join("ca.pem"),
            &[upstream],
            &[7u8; 32],
            &extra,
        )
    };
    let env = drip_edge("edge-kes-drip", "");
    let start = Instant::now();
    let edge = env.start();
    println!("edge: listening after {:?}", start.elapsed());
    for key in ["k1", "k2"] {
        let mut c = edge.admin();
        c.stream
            .sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let start = Instant::now();
        let body = serde_json::json!({"plaintext": b64(b"x")});
        let resp = c
            .request(
                "PUT",
                &format!("/v1/key/encrypt/{key}"),
                &[],
                Some(&serde_json::to_vec(&body).unwrap()),
            )
            .unwrap_or_else(|e| panic!("{key}: no answer after {:?}: {e}", start.elapsed()));
        let took = start.elapsed();
        println!("edge: {key} answered {} after {took:?}", resp.status);
        resp.assert_error(502, "failed to read key");
        assert!(
            took < Duration::from_secs(4),
            "{key}: answered after {took:?}"
        );
    }
    let mut c = edge.admin();
    eventually(
        Duration::from_secs(5),
        "ready reports the store down",
        || c.get("/v1/ready").status == 504,
    );
    assert!(
        edge.stderr().contains("no complete answer within 1s"),
        "{}",
        edge.stderr()
    );

    let keys = drip_edge("edge-kes-drip-keys", "keys:\n  - name: k\n");
    let start = Instant::now();
    let exit = keys.try_start().err().expect("must not start");
    println!("edge with keys: exited after {:?}", start.elapsed());
    assert!(
        exit.status.is_some(),
        "still starting after {:?}",
        start.elapsed()
    );
    assert!(
        exit.stderr.contains("cannot create key 'k'")
            && exit.stderr.contains("no complete answer within 1s"),
        "{}",
        exit.stderr
    );
}

/// In front of a three-node kes-node cluster, listed after a node waiting to join (which
/// answers `503`): the edge server goes on to the members, as the client library does. With
/// the node it asked first down, keys are still fetched (from another node) and the store
/// counts as up; creates fail while the cluster cannot commit, and work again once the node
/// is back.
#[test]
fn kes_cluster_node_down() {
    use support::cluster::{Cluster, ClusterOpts};
    let seed = [7u8; 32];
    let opts = ClusterOpts {
        slots: 4,
        ..ClusterOpts::nodes(3)
    };
    let mut cluster = Cluster::start("edge-kes-cluster", opts);
    cluster.start_node_with(3, &["--join"]);
    allow_edge(&mut cluster.client(0), &seed);
    let addrs: Vec<_> = [3, 0, 1, 2].map(|i| cluster.addr(i)).into();
    let env = kes_edge_nodes(
        "edge-kes-cluster",
        &cluster.root().join("ca.pem"),
        &addrs,
        &seed,
        "",
    );
    let edge = env.start();
    let mut c = edge.admin();
    c.create_key("used");
    c.create_key("unused");
    let ct = c.encrypt("used", b"x", None);

    cluster.kill(0);
    let ct2 = c.encrypt("unused", b"y", None);
    assert_eq!(c.decrypt("unused", &ct2, None), b"y");
    assert_eq!(c.decrypt("used", &ct, None), b"x");
    assert_eq!(c.list("*"), ["unused", "used"]);
    std::thread::sleep(Duration::from_millis(500)); // a few health checks
    c.get("/v1/ready").assert_empty_ok();
    c.put("/v1/key/create/new")
        .assert_error(502, "failed to create key");

    cluster.start_node(0);
    cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    eventually(
        Duration::from_secs(30),
        "creates work with every node back",
        || c.put("/v1/key/create/after").status == 200,
    );
    // The cluster held the create it could not commit and committed it once node 0 was back
    // (its outcome was unknown to the edge server, which answered 502).
    let names = c.list("*");
    assert!(
        names == ["after", "unused", "used"] || names == ["after", "new", "unused", "used"],
        "{names:?}"
    );
}

/// `cache.max_keys` bounds the cache: the least recently used key makes room.
#[test]
fn fs_cache_is_bounded() {
    let (env, _) = fs_edge("edge-bounded", "cache:\n  max_keys: 2\n");
    let server = env.start();
    let mut c = server.admin();
    for k in ["a", "b", "c"] {
        c.create_key(k);
    }
    let f0 = metric(&mut c, "kes_edge_keystore_fetches_total");
    for k in ["a", "b", "a", "c"] {
        c.encrypt(k, b"x", None);
    }
    assert_eq!(metric(&mut c, "kes_edge_cache_keys"), 2);
    assert_eq!(metric(&mut c, "kes_edge_keystore_fetches_total"), f0 + 3);
    // `a` was used more recently than `b`: `b` made room for `c`.
    c.encrypt("a", b"x", None);
    assert_eq!(metric(&mut c, "kes_edge_keystore_fetches_total"), f0 + 3);
    c.encrypt("b", b"x", None);
    assert_eq!(metric(&mut c, "kes_edge_keystore_fetches_total"), f0 + 4);
}
