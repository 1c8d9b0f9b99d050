//! End-to-end tests of the issue-2 server: the real `kes-node` binary, real TLS sockets and a
//! real redb file. Each test has its own temp dir and server process.
//!
//! Contract: spec `kes-api.md` §0.1, §1, §2.1, §4, §5, §8 and the fixtures of
//! `../shared/fixtures/kes-wire.json`.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const NOT_AUTHORIZED: &str = "not authorized: insufficient permissions";
const NOT_AUTHENTIC: &str = "decryption failed: ciphertext is not authentic";
const INVALID_BODY: &str = "invalid request body";
const INVALID_IMPORT_BODY: &str = "invalid import key request body";
const KEY_EXISTS: &str = "key already exists";
const KEY_NOT_FOUND: &str = "key does not exist";

fn bad_name(name: &str) -> String {
    format!("key name '{name}' is empty, too long or contains invalid characters")
}

fn bad_pattern(pattern: &str) -> String {
    format!("listing pattern '{pattern}' is empty, too long or is invalid")
}

fn method_error(got: &str, want: &str) -> String {
    format!("received method '{got}' expected '{want}'")
}

#[track_caller]
fn assert_405(resp: &Response, got: &str, want: &str) {
    resp.assert_error(405, &method_error(got, want));
    assert_eq!(resp.header("accept"), Some(want), "{:?}", resp.headers);
}

#[track_caller]
fn assert_404_page(resp: &Response) {
    assert_eq!(
        (resp.status, resp.text()),
        (404, "404 page not found\n".to_string())
    );
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[track_caller]
fn assert_rfc3339(s: &str) {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("not an RFC 3339 time ({err}): {s:?}"));
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// -------------------------------------------------------------------------------------------
// Informational routes
// -------------------------------------------------------------------------------------------

#[test]
fn version_needs_no_authorization() {
    let env = Env::new("version");
    let server = env.start();
    let pki = pki();
    for cert in [
        &pki.admin,
        &pki.other,
        &pki.foreign,
        &pki.ca_only,
        &pki.two_leaves,
    ] {
        let mut c = server.client(cert);
        let resp = c.get("/version");
        let v = resp.assert_json_ok();
        assert_eq!(keys_of(&v), set(&["version", "commit"]), "{v}");
        assert!(v["version"].is_string() && v["commit"].is_string(), "{v}");
        // The query is ignored.
        let resp = c.get("/version?x=1");
        assert_eq!(resp.status, 200);
        assert_405(&c.must("POST", "/version", &[], None), "POST", "GET");
    }
}

/// The 22 routes of spec §4 as `/v1/api` reports them (fixture `api`).
fn expected_routes() -> BTreeSet<(String, String, u64, u64)> {
    let r = |m: &str, p: &str, b: u64, t: u64| (m.to_string(), p.to_string(), b, t);
    [
        r("GET", "/version", 0, 10),
        r("GET", "/v1/ready", 0, 15),
        r("GET", "/v1/status", 0, 15),
        r("GET", "/v1/metrics", 0, 15),
        r("GET", "/v1/api", 0, 10),
        r("PUT", "/v1/key/create/", 0, 15),
        r("PUT", "/v1/key/import/", 1_000_000, 15),
        r("GET", "/v1/key/describe/", 0, 15),
        r("GET", "/v1/key/list/", 0, 15),
        r("DELETE", "/v1/key/delete/", 0, 15),
        r("PUT", "/v1/key/generate/", 1_000_000, 15),
        r("PUT", "/v1/key/encrypt/", 1_000_000, 15),
        r("PUT", "/v1/key/decrypt/", 1_000_000, 15),
        r("PUT", "/v1/key/hmac/", 1_000_000, 15),
        r("GET", "/v1/policy/describe/", 0, 15),
        r("GET", "/v1/policy/read/", 0, 15),
        r("GET", "/v1/policy/list/", 0, 15),
        r("GET", "/v1/identity/describe/", 0, 15),
        r("GET", "/v1/identity/list/", 0, 15),
        r("GET", "/v1/identity/self/describe", 0, 15),
        r("GET", "/v1/log/error", 0, 0),
        r("GET", "/v1/log/audit", 0, 0),
    ]
    .into_iter()
    .collect()
}

#[test]
fn ready_status_and_api() {
    let env = Env::new("status");
    let server = env.start();
    let mut c = server.admin();

    let ready = c.get("/v1/ready");
    ready.assert_empty_ok();

    let status = c.get("/v1/status");
    let v = status.assert_json_ok();
    for field in ["version", "os", "arch"] {
        assert!(v[field].is_string(), "status.{field} must be a string: {v}");
    }
    for field in [
        "uptime",
        "num_cpu",
        "num_cpu_used",
        "mem_heap_used",
        "mem_stack_used",
        "keystore_latency",
    ] {
        assert!(
            v[field].is_u64(),
            "status.{field} must be a non-negative integer: {v}"
        );
    }
    assert_eq!(v["os"], std::env::consts::OS, "{v}");
    assert_eq!(v["arch"], go_arch(), "{v}");
    assert!(v["num_cpu"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["uptime"].as_u64().unwrap() < 3600,
        "uptime is in seconds: {v}"
    );
    let obj = v.as_object().unwrap();
    assert!(
        !obj.contains_key("keystore_unavailable") && !obj.contains_key("keystore_unreachable"),
        "a healthy server sends neither keystore_unavailable nor keystore_unreachable: {v}"
    );

    let api = c.get("/v1/api");
    let v = api.assert_json_ok();
    let routes = v
        .as_array()
        .unwrap_or_else(|| panic!("/v1/api is an array: {v}"));
    // Upstream's 22 stateless routes, plus the stateful server's own (policies, identities,
    // secrets, enclaves).
    assert!(routes.len() >= 22, "{v}");
    let got: BTreeSet<_> = routes
        .iter()
        .map(|r| {
            assert_eq!(
                keys_of(r),
                set(&["method", "path", "max_body", "timeout"]),
                "{r}"
            );
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["max_body"].as_u64().unwrap(),
                r["timeout"].as_u64().unwrap(),
            )
        })
        .collect();
    let missing: Vec<_> = expected_routes().difference(&got).cloned().collect();
    assert!(
        missing.is_empty(),
        "upstream routes missing from /v1/api: {missing:?}"
    );

    assert_405(&c.put("/v1/api"), "PUT", "GET");
    assert_405(&c.must("POST", "/v1/status", &[], None), "POST", "GET");
    assert_404_page(&c.get("/v1/unknown"));
    assert_404_page(&c.get("/"));
    assert_404_page(&c.get("/v1/"));
    assert_404_page(&c.get("/v1/key/bulk/decrypt/x"));
}

// -------------------------------------------------------------------------------------------
// Keys
// -------------------------------------------------------------------------------------------

#[test]
fn key_create_describe_list_delete() {
    let env = Env::new("keys");
    let server = env.start();
    let mut c = server.admin();
    let admin = &pki().admin.identity;

    let before = time::OffsetDateTime::now_utc() - Duration::from_secs(5);
    c.create_key("k1");
    // POST is accepted for PUT routes.
    c.must("POST", "/v1/key/create/k2", &[], None)
        .assert_empty_ok();
    // A body on create is ignored.
    c.put_body("/v1/key/create/k3", br#"{"cipher":"ChaCha20"}"#)
        .assert_empty_ok();
    c.put("/v1/key/create/k1").assert_error(400, KEY_EXISTS);
    c.must("POST", "/v1/key/create/k1", &[], None)
        .assert_error(400, KEY_EXISTS);

    let v = c.get("/v1/key/describe/k1").assert_json_ok();
    assert_eq!(
        keys_of(&v),
        set(&["name", "algorithm", "created_at", "created_by"]),
        "{v}"
    );
    assert_eq!(v["name"], "k1");
    assert!(
        v["algorithm"] == "AES256" || v["algorithm"] == "ChaCha20",
        "{v}"
    );
    if cfg!(target_arch = "x86_64") {
        // Test machines have AES-NI: upstream picks AES256 there (spec §8.1).
        assert_eq!(v["algorithm"], "AES256", "{v}");
    }
    assert_eq!(v["created_by"].as_str(), Some(admin.as_str()), "{v}");
    let created_at = v["created_at"].as_str().unwrap();
    assert_rfc3339(created_at);
    let t = time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(
        t >= before && t <= time::OffsetDateTime::now_utc() + Duration::from_secs(5),
        "created_at {created_at} is not now"
    );
    // Percent-encoded names are decoded; the query is ignored.
    assert_eq!(
        c.get("/v1/key/describe/k%31").assert_json_ok()["name"],
        "k1"
    );
    assert_eq!(
        c.get("/v1/key/describe/k1?name=k2").assert_json_ok()["name"],
        "k1"
    );
    c.get("/v1/key/describe/nope")
        .assert_error(404, KEY_NOT_FOUND);

    // Listing.
    assert_eq!(c.list("*"), ["k1", "k2", "k3"]);
    assert_eq!(c.list(""), ["k1", "k2", "k3"]);
    assert_eq!(c.list("k"), ["k1", "k2", "k3"]);
    assert_eq!(c.list("k2"), ["k2"]);
    assert_eq!(c.list("zzz"), Vec::<String>::new());
    // A trailing `*` is taken literally for keys (§0.1).
    assert_eq!(c.list("k*"), Vec::<String>::new());
    let resp = c.get("/v1/key/list/zzz");
    assert_eq!(resp.text(), "{\"names\":[]}\n");
    for pattern in ["_", "a*b", "**", "-w", "app-"] {
        c.get(&format!("/v1/key/list/{pattern}"))
            .assert_error(400, &bad_pattern(pattern));
    }
    let long = "x".repeat(81);
    c.get(&format!("/v1/key/list/{long}"))
        .assert_error(400, &bad_pattern(&long));
    let redirect = c.get("/v1/key/list");
    assert_eq!(redirect.status, 301, "{:?}", redirect.text());
    assert_eq!(redirect.header("location"), Some("/v1/key/list/"));
    assert_eq!(
        redirect.text(),
        "<a href=\"/v1/key/list/\">Moved Permanently</a>.\n\n"
    );
    let redirect = c.get("/v1/key/list?x=1");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/v1/key/list/?x=1"));
    let redirect = c.put("/v1/key/create");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/v1/key/create/"));
    let redirect = c.get("/v1/key/describe//k1");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/v1/key/describe/k1"));
    let redirect = c.get("/v1/key/x/../describe/k1");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/v1/key/describe/k1"));
    assert_404_page(&c.get("/v1/Key/describe/k1"));

    // Delete.
    c.delete("/v1/key/delete/k1").assert_empty_ok();
    c.delete("/v1/key/delete/k1")
        .assert_error(404, KEY_NOT_FOUND);
    c.get("/v1/key/describe/k1")
        .assert_error(404, KEY_NOT_FOUND);
    assert_eq!(c.list("*"), ["k2", "k3"]);
    // The name can be used again.
    c.create_key("k1");
    assert_eq!(c.list("*"), ["k1", "k2", "k3"]);
    // Names are case-sensitive.
    c.create_key("K1");
    assert_eq!(c.list("*"), ["K1", "k1", "k2", "k3"]);
    c.delete("/v1/key/delete/K1").assert_empty_ok();
    c.get("/v1/key/describe/k1").assert_json_ok();
    // A deleted key's ciphertexts do not open with a new key of the same name.
    let (_, ct) = c.generate("k2", None);
    c.delete("/v1/key/delete/k2").assert_empty_ok();
    c.decrypt_resp("k2", &ct, None)
        .assert_error(404, KEY_NOT_FOUND);
    c.create_key("k2");
    c.decrypt_resp("k2", &ct, None)
        .assert_error(400, NOT_AUTHENTIC);

    // Method checks.
    assert_405(&c.get("/v1/key/create/k9"), "GET", "PUT");
    assert_405(&c.delete("/v1/key/create/k9"), "DELETE", "PUT");
    assert_405(
        &c.must("PATCH", "/v1/key/create/k9", &[], None),
        "PATCH",
        "PUT",
    );
    assert_405(&c.put("/v1/key/describe/k1"), "PUT", "GET");
    assert_405(
        &c.must("POST", "/v1/key/describe/k1", &[], None),
        "POST",
        "GET",
    );
    assert_405(&c.put("/v1/key/list/*"), "PUT", "GET");
    assert_405(&c.put("/v1/key/delete/k2"), "PUT", "DELETE");
    assert_405(
        &c.must("POST", "/v1/key/delete/k2", &[], None),
        "POST",
        "DELETE",
    );
    assert_405(&c.get("/v1/key/generate/k2"), "GET", "PUT");
    assert_405(&c.delete("/v1/key/decrypt/k2"), "DELETE", "PUT");
    assert_405(&c.get("/v1/key/hmac/k2"), "GET", "PUT");
    assert_405(&c.get("/v1/key/import/k2"), "GET", "PUT");
    // 405 comes before name validation.
    assert_405(&c.get("/v1/key/create/_"), "GET", "PUT");
    // Nothing above created k9.
    c.get("/v1/key/describe/k9")
        .assert_error(404, KEY_NOT_FOUND);
}

#[test]
fn invalid_key_names_are_rejected_on_every_route() {
    let env = Env::new("names");
    let server = env.start();
    let mut c = server.admin();

    // (path segment as sent, name as decoded in the message)
    let long = "x".repeat(81);
    let bad: Vec<(String, String)> = vec![
        ("_".into(), "_".into()),
        ("-wire".into(), "-wire".into()),
        ("wire-".into(), "wire-".into()),
        ("wire.k".into(), "wire.k".into()),
        ("wire*".into(), "wire*".into()),
        ("wire%20k".into(), "wire k".into()),
        ("wire%2Fk".into(), "wire/k".into()),
        ("wire/k".into(), "wire/k".into()),
        ("wire-%C3%A4".into(), "wire-ä".into()),
        ("wire%22k".into(), "wire\"k".into()),
        ("wire-k9/".into(), "wire-k9/".into()),
        (long.clone(), long.clone()),
    ];
    let import = json!({"key": b64(&[0u8; 32]), "cipher": "AES256"});
    for (seg, name) in &bad {
        let msg = bad_name(name);
        c.put(&format!("/v1/key/create/{seg}"))
            .assert_error(400, &msg);
        c.put_json(&format!("/v1/key/import/{seg}"), &import)
            .assert_error(400, &msg);
        c.get(&format!("/v1/key/describe/{seg}"))
            .assert_error(400, &msg);
        c.delete(&format!("/v1/key/delete/{seg}"))
            .assert_error(400, &msg);
        c.put_json(&format!("/v1/key/generate/{seg}"), &json!({}))
            .assert_error(400, &msg);
        c.put_json(
            &format!("/v1/key/encrypt/{seg}"),
            &json!({"plaintext": "AA=="}),
        )
        .assert_error(400, &msg);
        c.put_json(
            &format!("/v1/key/decrypt/{seg}"),
            &json!({"ciphertext": b64(&[1u8; 64])}),
        )
        .assert_error(400, &msg);
        c.put_json(&format!("/v1/key/hmac/{seg}"), &json!({"message": "AA=="}))
            .assert_error(400, &msg);
    }
    c.put("/v1/key/create/").assert_error(400, &bad_name(""));
    c.get("/v1/key/describe/").assert_error(400, &bad_name(""));
    assert_eq!(
        c.list("*"),
        Vec::<String>::new(),
        "no invalid name was stored"
    );

    // Valid edge cases.
    let eighty = "x".repeat(80);
    for name in [
        "__",
        "W1RE-Upper",
        "wire_under",
        "a",
        "0-9",
        eighty.as_str(),
    ] {
        c.create_key(name);
        assert_eq!(
            c.get(&format!("/v1/key/describe/{name}")).assert_json_ok()["name"],
            name
        );
    }
}

#[test]
fn import_keys() {
    let env = Env::new("import");
    let server = env.start();
    let mut c = server.admin();
    let key: Vec<u8> = (0u8..32).collect();
    let key_b64 = b64(&key);

    for (name, cipher, algorithm) in [
        ("imp-aes", "AES256", "AES256"),
        ("imp-chacha", "ChaCha20", "ChaCha20"),
        ("imp-aes-legacy", "AES256-GCM_SHA256", "AES256"),
        ("imp-chacha-legacy", "XCHACHA20-POLY1305", "ChaCha20"),
    ] {
        c.must(
            "POST",
            &format!("/v1/key/import/{name}"),
            &[],
            Some(format!(r#"{{"key":"{key_b64}","cipher":"{cipher}"}}"#).as_bytes()),
        )
        .assert_empty_ok();
        let v = c.get(&format!("/v1/key/describe/{name}")).assert_json_ok();
        assert_eq!(v["algorithm"], algorithm, "{name}: {v}");
        assert_eq!(
            v["created_by"].as_str(),
            Some(pki().admin.identity.as_str())
        );
    }
    // Field names match case-insensitively.
    c.put_body(
        "/v1/key/import/imp-case",
        format!(r#"{{"KEY":"{key_b64}","Cipher":"AES256"}}"#).as_bytes(),
    )
    .assert_empty_ok();

    c.put_json(
        "/v1/key/import/imp-aes",
        &json!({"key": key_b64, "cipher": "AES256"}),
    )
    .assert_error(400, KEY_EXISTS);
    // A created key also blocks an import.
    c.create_key("created");
    c.put_json(
        "/v1/key/import/created",
        &json!({"key": key_b64, "cipher": "AES256"}),
    )
    .assert_error(400, KEY_EXISTS);

    let cases: Vec<(&[u8], u16, String)> = vec![
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODw==","cipher":"AES256"}"#,
            406,
            "invalid key size for 'AES256'".into(),
        ),
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A","cipher":"ChaCha20"}"#,
            406,
            "invalid key size for 'ChaCha20'".into(),
        ),
        (
            br#"{"key":"","cipher":"AES256"}"#,
            406,
            "invalid key size for 'AES256'".into(),
        ),
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","cipher":"AES128"}"#,
            406,
            "algorithm 'AES128' is not supported".into(),
        ),
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","cipher":"aes256"}"#,
            406,
            "algorithm 'aes256' is not supported".into(),
        ),
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#,
            406,
            "algorithm '' is not supported".into(),
        ),
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODw==","cipher":"AES128"}"#,
            406,
            "algorithm 'AES128' is not supported".into(),
        ),
        (
            br#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","algorithm":"AES256-GCM_SHA256"}"#,
            406,
            "algorithm '' is not supported".into(),
        ),
        (br#"{"key": "#, 400, INVALID_IMPORT_BODY.into()),
        (b"", 400, INVALID_IMPORT_BODY.into()),
        (
            br#"{"key":"not base64!","cipher":"AES256"}"#,
            400,
            INVALID_IMPORT_BODY.into(),
        ),
        (
            br#"{"key":"-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s=","cipher":"AES256"}"#,
            400,
            INVALID_IMPORT_BODY.into(),
        ),
        (
            br#"{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","cipher":"AES256"}"#,
            400,
            INVALID_IMPORT_BODY.into(),
        ),
    ];
    for (body, status, message) in cases {
        let resp = c.put_body("/v1/key/import/imp-bad", body);
        assert_eq!(
            (resp.status, resp.text()),
            (status, kes_error_body(&message)),
            "import body {:?}",
            String::from_utf8_lossy(body)
        );
    }
    c.get("/v1/key/describe/imp-bad")
        .assert_error(404, KEY_NOT_FOUND);

    // Imported material is really used: AES and ChaCha keys with the same bytes give
    // ciphertexts that only their own key opens.
    let ct_aes = c.encrypt("imp-aes", b"Hello World", Some(b"ctx"));
    let ct_chacha = c.encrypt("imp-chacha", b"Hello World", Some(b"ctx"));
    assert_eq!(ct_aes.len(), 11 + 44);
    assert_eq!(
        c.decrypt("imp-aes-legacy", &ct_aes, Some(b"ctx")),
        b"Hello World"
    );
    assert_eq!(c.decrypt("imp-case", &ct_aes, Some(b"ctx")), b"Hello World");
    assert_eq!(
        c.decrypt("imp-chacha-legacy", &ct_chacha, Some(b"ctx")),
        b"Hello World"
    );
    c.decrypt_resp("imp-chacha", &ct_aes, Some(b"ctx"))
        .assert_error(400, NOT_AUTHENTIC);
    c.decrypt_resp("imp-aes", &ct_chacha, Some(b"ctx"))
        .assert_error(400, NOT_AUTHENTIC);
}

#[test]
fn generate_encrypt_decrypt() {
    let env = Env::new("crypto");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k1");
    c.create_key("k2");
    c.import_key("chacha", &[7u8; 32], "ChaCha20");

    // Generate → decrypt, without and with context.
    let (pt, ct) = c.generate("k1", None);
    assert_eq!((pt.len(), ct.len()), (32, 76));
    assert_eq!(c.decrypt("k1", &ct, None), pt);
    // An empty context equals no context.
    assert_eq!(c.decrypt("k1", &ct, Some(b"")), pt);
    let (pt2, ct2) = c.generate("k1", Some(b"wire-context"));
    assert_ne!(pt, pt2, "data keys are random");
    assert_eq!(c.decrypt("k1", &ct2, Some(b"wire-context")), pt2);
    c.decrypt_resp("k1", &ct2, None)
        .assert_error(400, NOT_AUTHENTIC);
    c.decrypt_resp("k1", &ct2, Some(b"other"))
        .assert_error(400, NOT_AUTHENTIC);
    c.decrypt_resp("k2", &ct2, Some(b"wire-context"))
        .assert_error(400, NOT_AUTHENTIC);
    c.decrypt_resp("nope", &ct2, Some(b"wire-context"))
        .assert_error(404, KEY_NOT_FOUND);
    for i in [0, 10, 31, 47, 48, 63, 64, 75] {
        let mut bad = ct2.clone();
        bad[i] ^= 0x01;
        c.decrypt_resp("k1", &bad, Some(b"wire-context"))
            .assert_error(400, NOT_AUTHENTIC);
    }
    for len in [0usize, 1, 28, 29, 64] {
        let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        c.decrypt_resp("k1", &garbage, None)
            .assert_error(400, NOT_AUTHENTIC);
    }
    // ChaCha20 keys.
    let (pt3, ct3) = c.generate("chacha", Some(b"x"));
    assert_eq!(c.decrypt("chacha", &ct3, Some(b"x")), pt3);

    // Generate body variants (fixture key.generate.*).
    for body in [
        &b""[..],
        b"{}",
        br#"{"context":null}"#,
        br#"{"context":"d2lyZS1jb250ZXh0","version":"v9"}"#,
        br#"{"foo":1}"#,
        b"{} garbage",
    ] {
        let resp = c.put_body("/v1/key/generate/k1", body);
        resp.assert_json_ok();
        assert_eq!(resp.b64_field("plaintext").len(), 32);
        assert_eq!(resp.b64_field("ciphertext").len(), 76);
    }
    // No body at all: no Content-Length header.
    let req = format!(
        "PUT /v1/key/generate/k1 HTTP/1.1\r\nHost: {}\r\n\r\n",
        c.host
    );
    c.send_raw(req.as_bytes()).unwrap();
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = c.must("POST", "/v1/key/generate/k1", &[], Some(b"{}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    for body in [
        &b"[]"[..],
        br#"{"context":"#,
        br#"{"context":"%%%"}"#,
        br#"{"context":5}"#,
    ] {
        c.put_body("/v1/key/generate/k1", body)
            .assert_error(400, INVALID_BODY);
    }
    c.put_body("/v1/key/generate/nope", b"{}")
        .assert_error(404, KEY_NOT_FOUND);

    // Encrypt → decrypt.
    let ct = c.encrypt("k1", b"Hello World", Some(b"wire-context"));
    assert_eq!(ct.len(), 55);
    let resp = c.decrypt_resp("k1", &ct, Some(b"wire-context"));
    assert_eq!(resp.text(), "{\"plaintext\":\"SGVsbG8gV29ybGQ=\"}\n");
    let ct_empty = c.encrypt("k1", b"", None);
    assert_eq!(ct_empty.len(), 44);
    let resp = c.decrypt_resp("k1", &ct_empty, None);
    assert_eq!(resp.text(), "{\"plaintext\":\"\"}\n");
    let resp = c.put_body("/v1/key/encrypt/k1", b"{}");
    assert_eq!(
        resp.assert_json_ok()["ciphertext"]
            .as_str()
            .map(|s| unb64(s).len()),
        Some(44)
    );
    let ct_chacha = c.encrypt("chacha", b"Hello World", None);
    assert_eq!(c.decrypt("chacha", &ct_chacha, None), b"Hello World");
    c.put_json("/v1/key/encrypt/nope", &json!({"plaintext": "AA=="}))
        .assert_error(404, KEY_NOT_FOUND);
    c.put_body("/v1/key/encrypt/k1", b"{")
        .assert_error(400, INVALID_BODY);
    // A large plaintext well inside the body limit works.
    let big = vec![0x5au8; 600_000];
    let ct_big = c.encrypt("k1", &big, None);
    assert_eq!(ct_big.len(), big.len() + 44);
    assert_eq!(c.decrypt("k1", &ct_big, None), big);

    // Decrypt body errors.
    c.put("/v1/key/decrypt/k1").assert_error(400, INVALID_BODY);
    c.put_body("/v1/key/decrypt/k1", b"nope")
        .assert_error(400, INVALID_BODY);
    c.put_body("/v1/key/decrypt/k1", br#"{"ciphertext":"!!!"}"#)
        .assert_error(400, INVALID_BODY);
    c.put_body("/v1/key/decrypt/k1", b"{}")
        .assert_error(400, NOT_AUTHENTIC);
}

#[test]
fn hmac() {
    let env = Env::new("hmac");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k1");
    let h1 = c.hmac("k1", b"Hello World");
    assert_eq!(h1.len(), 32);
    let resp = c.post_json("/v1/key/hmac/k1", &json!({"message": b64(b"Hello World")}));
    assert_eq!(resp.b64_field("hmac"), h1, "HMAC is deterministic");
    assert_ne!(c.hmac("k1", b"Hello World!"), h1);
    assert_eq!(c.hmac("k1", b"").len(), 32);
    c.put("/v1/key/hmac/k1").assert_error(400, INVALID_BODY);
    c.put_body("/v1/key/hmac/k1", b"{{")
        .assert_error(400, INVALID_BODY);
    c.put_json("/v1/key/hmac/nope", &json!({"message": "AA=="}))
        .assert_error(404, KEY_NOT_FOUND);
    // Each key has its own random HMAC key, even for the same imported bytes (§0.1).
    c.create_key("k2");
    assert_ne!(c.hmac("k2", b"Hello World"), h1);
    c.import_key("i1", &[9u8; 32], "AES256");
    c.import_key("i2", &[9u8; 32], "AES256");
    assert_ne!(c.hmac("i1", b"m"), c.hmac("i2", b"m"));
}

// -------------------------------------------------------------------------------------------
// Vectors (kes-vectors.md §A, §F)
// -------------------------------------------------------------------------------------------

const Z32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const K2: &str = "dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU=";
const A3_KEY_HEX: &str = "8612a2d23764284e0da438de559a3d8162983ab574ec69f95c1aeed6a4e1077d";
const P16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const P28: &str = "CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==";
const AD16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

/// (case, key, ciphertext bytes, context, expected plaintext or None = not authentic)
type VectorCase = (
    &'static str,
    &'static str,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

fn vector_cases() -> Vec<VectorCase> {
    let json = |s: &str| s.as_bytes().to_vec();
    let p16 = Some(unb64(P16));
    let p28 = Some(unb64(P28));
    let ad16 = Some(unb64(AD16));
    let hello = Some(b"Hello World".to_vec());
    vec![
        ("A1#0", "vec-z32-aes", json(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None, p16.clone()),
        ("A1#1", "vec-z32-chacha", json(r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#), None, p16.clone()),
        ("A1#2", "vec-z32-chacha", json(r#"{"aead":"ChaCha20Poly1305","id":"66687aadf862bd776c8fc18b8e9f8e20","iv":"EC0eZp7Pqt+LnkOae5xaAg==","nonce":"X1ejXKmH/ugFZPkk","bytes":"wIGBTDs6aOvsqJfekZ0PYRT/OHyFX2TXqeNwl1SLXOI="}"#), None, p16.clone()),
        ("A1#3", "vec-z32-aes", unb64("lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ="), None, p16.clone()),
        ("A1#4", "vec-z32-chacha", unb64("lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu"), None, p16.clone()),
        ("A1#5", "vec-z32-aes", unb64("zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc"), None, p16.clone()),
        ("A1#6", "vec-k2-aes", unb64("s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac"), ad16.clone(), p28.clone()),
        ("A1#7", "vec-k2-chacha", unb64("gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK"), ad16.clone(), p28.clone()),
        ("A1#8", "vec-z32-aes", json(r#"{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None, None),
        ("A1#9", "vec-z32-aes", json(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EjOY4JKqjIrPmQ5z1KSR8zlhggY=","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None, None),
        ("A1#10", "vec-z32-chacha", json(r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"SXAbms731/c=","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#), None, None),
        ("A1#11", "vec-z32-aes", json(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"efY+4kYF9n8=","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None, None),
        ("A1#12", "vec-z32-aes", json(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"QTza1g5oX3f9cGJMbY1xJwWPj1F7R2VnNl6XpFKYQy0="}"#), None, None),
        ("A1#13", "vec-z32-chacha", json(r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"TTi8pkO+Jh1JWAHvPxZeUk/iVoBPUCE4ZSVGBy3fW2s="}"#), None, None),
        ("A1#14", "vec-z32-aes", json(r#"{"aead":"AES-256-GCM-HMAC-SHA-256" "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None, None),
        ("A3", "vec-a3-aes", unhex("6a3912cfee99ca51c12004f8fb3ea912b45966f3e5e33cd886993084f9d2c1433028a59231e26f9ec0c1cd2426a97d4cc9988ba968b9b0"), None, hello.clone()),
        ("F-aes", "vec-z32-aes", unb64("BsskesMi5bXUK/My89HGspx00CgoSVMbq/LEAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="), Some(b"my-context".to_vec()), hello.clone()),
        ("F-chacha", "vec-z32-chacha", unb64("iTp47vdOXsGQP6fOi1G1u1X9E7GVwY9/fiicAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="), Some(b"my-context".to_vec()), hello.clone()),
        // The key's cipher decides, not the ciphertext (§8.2).
        ("F-aes-on-chacha-key", "vec-z32-chacha", unb64("BsskesMi5bXUK/My89HGspx00CgoSVMbq/LEAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="), Some(b"my-context".to_vec()), None),
        ("F-aes-without-context", "vec-z32-aes", unb64("BsskesMi5bXUK/My89HGspx00CgoSVMbq/LEAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="), None, None),
        ("A1#0-on-chacha-key", "vec-z32-chacha", json(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None, None),
        ("A1#6-without-context", "vec-k2-aes", unb64("s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac"), None, None),
    ]
}

#[test]
fn vector_ciphertexts_decrypt_over_the_api() {
    let env = Env::new("vectors");
    let server = env.start();
    let mut c = server.admin();
    c.import_key("vec-z32-aes", &unb64(Z32), "AES256");
    c.import_key("vec-z32-chacha", &unb64(Z32), "ChaCha20");
    c.import_key("vec-k2-aes", &unb64(K2), "AES256");
    c.import_key("vec-k2-chacha", &unb64(K2), "ChaCha20");
    c.import_key("vec-a3-aes", &unhex(A3_KEY_HEX), "AES256");

    let mut failures = Vec::new();
    for (case, key, ct, ctx, want) in vector_cases() {
        let resp = c.decrypt_resp(key, &ct, ctx.as_deref());
        let ok = match &want {
            Some(pt) => {
                resp.status == 200
                    && resp.header("content-type") == Some("application/json")
                    && resp.json()["plaintext"].as_str().map(unb64).as_ref() == Some(pt)
            }
            None => {
                resp.status == 400
                    && resp.text() == kes_error_body(NOT_AUTHENTIC)
                    && resp.header("content-type") == Some("application/json")
            }
        };
        if !ok {
            failures.push(format!(
                "{case} on {key}: want {}, got {} {:?}",
                match &want {
                    Some(pt) => format!("200 plaintext {}", b64(pt)),
                    None => format!("400 {NOT_AUTHENTIC:?}"),
                },
                resp.status,
                resp.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "vector failures:\n{}",
        failures.join("\n")
    );
}

// -------------------------------------------------------------------------------------------
// Authentication
// -------------------------------------------------------------------------------------------

/// Every authenticated route with a well-formed request.
fn authenticated_requests() -> Vec<(&'static str, String, Option<Vec<u8>>)> {
    let j = |v: Value| Some(serde_json::to_vec(&v).unwrap());
    vec![
        ("GET", "/v1/ready".into(), None),
        ("GET", "/v1/status".into(), None),
        ("GET", "/v1/metrics".into(), None),
        ("GET", "/v1/api".into(), None),
        ("PUT", "/v1/key/create/new-key".into(), None),
        ("POST", "/v1/key/create/new-key".into(), None),
        (
            "PUT",
            "/v1/key/import/new-key".into(),
            j(json!({"key": b64(&[1; 32]), "cipher": "AES256"})),
        ),
        ("GET", "/v1/key/describe/k".into(), None),
        ("GET", "/v1/key/list/*".into(), None),
        ("GET", "/v1/key/list/".into(), None),
        ("DELETE", "/v1/key/delete/k".into(), None),
        ("PUT", "/v1/key/generate/k".into(), j(json!({}))),
        (
            "PUT",
            "/v1/key/encrypt/k".into(),
            j(json!({"plaintext": "AA=="})),
        ),
        (
            "PUT",
            "/v1/key/decrypt/k".into(),
            j(json!({"ciphertext": b64(&[0; 76])})),
        ),
        (
            "PUT",
            "/v1/key/hmac/k".into(),
            j(json!({"message": "AA=="})),
        ),
        // Name validation comes after authorization.
        ("PUT", "/v1/key/create/_".into(), None),
        ("GET", "/v1/key/describe/-x".into(), None),
        ("GET", "/v1/key/list/a*b".into(), None),
        ("GET", "/v1/policy/describe/p".into(), None),
        ("GET", "/v1/policy/read/p".into(), None),
        ("GET", "/v1/policy/list/*".into(), None),
        ("GET", "/v1/identity/describe/abc".into(), None),
        ("GET", "/v1/identity/list/*".into(), None),
        ("GET", "/v1/log/error".into(), None),
        ("GET", "/v1/log/audit".into(), None),
    ]
}

#[test]
fn non_admin_identities_are_forbidden() {
    let env = Env::new("forbidden");
    let server = env.start();
    let mut admin = server.admin();
    admin.create_key("k");
    let (_, ct) = admin.generate("k", None);
    let described = admin.get("/v1/key/describe/k").assert_json_ok();

    let pki = pki();
    let mut failures = Vec::new();
    for cert in [&pki.other, &pki.foreign] {
        let mut c = server.client(cert);
        for (method, path, body) in authenticated_requests() {
            let resp = c.must(method, &path, &[], body.as_deref());
            if resp.status != 403
                || resp.text() != kes_error_body(NOT_AUTHORIZED)
                || resp.header("content-type") != Some("application/json")
            {
                failures.push(format!(
                    "{method} {path}: want 403 {NOT_AUTHORIZED:?}, got {} {:?}",
                    resp.status,
                    resp.text()
                ));
            }
        }
        // Method checks come first, and /version needs no authorization.
        assert_405(&c.get("/v1/key/create/k"), "GET", "PUT");
        assert_eq!(c.get("/version").status, 200);
    }
    assert!(
        failures.is_empty(),
        "not forbidden:\n{}",
        failures.join("\n")
    );

    // Nothing changed.
    assert_eq!(admin.list("*"), ["k"]);
    assert_eq!(admin.get("/v1/key/describe/k").assert_json_ok(), described);
    assert_eq!(admin.decrypt("k", &ct, None).len(), 32);
}

#[test]
fn no_client_certificate_is_refused() {
    let env = Env::new("nocert");
    let server = env.start();

    // TLS 1.3: the handshake may complete on the client side; the first read fails.
    for tls in [
        Tls::default(),
        Tls {
            tls12_only: true,
            ..Tls::default()
        },
    ] {
        let label = if tls.tls12_only { "TLS 1.2" } else { "TLS 1.3" };
        match Client::connect(server.addr, None, tls) {
            Err(_) => {} // handshake refused
            Ok(mut c) => {
                let res = c.request("GET", "/version", &[], None);
                assert!(
                    res.is_err(),
                    "{label}: a client without a certificate got a response: {:?}",
                    res.map(|r| (r.status, r.text()))
                );
            }
        }
    }
    // The server is still fine.
    assert_eq!(server.admin().get("/version").status, 200);
}

#[test]
fn ca_only_and_two_leaf_certificates() {
    let env = Env::new("certs");
    let server = env.start();
    let pki = pki();
    let mut ca = server.client(&pki.ca_only);
    assert_eq!(ca.get("/version").status, 200);
    for path in ["/v1/key/list/*", "/v1/status"] {
        ca.get(path)
            .assert_error(400, "tls: client certificate is required");
    }
    ca.put("/v1/key/create/x")
        .assert_error(400, "tls: client certificate is required");
    let mut two = server.client(&pki.two_leaves);
    assert_eq!(two.get("/version").status, 200);
    for path in ["/v1/key/list/*", "/v1/status"] {
        two.get(path)
            .assert_error(400, "tls: received more than one client certificate");
    }
    assert_eq!(server.admin().list("*"), Vec::<String>::new());
}

#[test]
fn client_certificates_are_verified_when_tls_ca_is_set() {
    let mut env = Env::new("tlsca");
    env.verify_client_certs();
    let server = env.start();
    let pki = pki();
    let mut admin = server.admin();
    assert_eq!(admin.get("/version").status, 200);
    admin.create_key("k");
    // A CA-signed non-admin is still only forbidden.
    server
        .client(&pki.other)
        .get("/v1/key/list/*")
        .assert_error(403, NOT_AUTHORIZED);
    // The two-leaf chain verifies (first leaf signed by the CA) → 400 at HTTP level.
    let mut two = server.client(&pki.two_leaves);
    assert_eq!(two.get("/version").status, 200);
    // A certificate from an unknown CA is refused in the TLS exchange.
    for cert in [&pki.foreign, &pki.ca_only] {
        let res = Client::connect(server.addr, Some(cert), Tls::default())
            .and_then(|mut c| c.request("GET", "/version", &[], None));
        assert!(
            res.is_err(),
            "an unverifiable client certificate got a response: {:?}",
            res.map(|r| r.status)
        );
    }
}

// -------------------------------------------------------------------------------------------
// HTTP
// -------------------------------------------------------------------------------------------

/// Sends `body` and returns the response; afterwards the connection must either still work
/// or be cleanly closed.
fn send_big(c: &mut Client, path: &str, body: &[u8]) -> Response {
    let req = c.build_request("PUT", path, &[], Some(body));
    // The server may answer and close before it has read everything: ignore write errors
    // and read the answer.
    let _ = c.send_raw(&req);
    c.read_response()
        .unwrap_or_else(|err| panic!("no response to a {} byte body: {err}", body.len()))
}

#[track_caller]
fn assert_usable_or_closed(server: &Server, mut c: Client, resp: &Response) {
    match c.request("GET", "/version", &[], None) {
        Ok(next) => {
            assert!(
                !resp.closes(),
                "the server announced Connection: close but answered another request"
            );
            assert_eq!(next.status, 200, "{}", next.text());
        }
        Err(err) => {
            // Cleanly closed: fine, as long as a new connection works.
            let _ = err;
        }
    }
    assert_eq!(server.admin().get("/version").status, 200);
}

#[test]
fn request_body_limits() {
    let env = Env::new("limits");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k1");

    // 1.4 MB → 400, connection usable or cleanly closed.
    let body = padded_json_body("context", 1_400_014, 0);
    let mut big = server.admin();
    let resp = send_big(&mut big, "/v1/key/generate/k1", &body);
    resp.assert_error(400, INVALID_BODY);
    assert_usable_or_closed(&server, big, &resp);

    // Exactly 1,000,000 bytes with a valid JSON value → 200.
    let mut c2 = server.admin();
    let resp = send_big(
        &mut c2,
        "/v1/key/generate/k1",
        &padded_json_body("context", 1_000_000, 1),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.b64_field("ciphertext").len(), 76);
    assert_usable_or_closed(&server, c2, &resp);

    // 1,000,001 bytes, but the JSON value ends inside the limit → 200 (§0.1).
    let mut c3 = server.admin();
    let resp = send_big(
        &mut c3,
        "/v1/key/generate/k1",
        &padded_json_body("context", 1_000_001, 1),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_usable_or_closed(&server, c3, &resp);

    // The value crosses the limit → 400.
    let mut c4 = server.admin();
    let resp = send_big(
        &mut c4,
        "/v1/key/generate/k1",
        &padded_json_body("context", 1_000_002, 0),
    );
    resp.assert_error(400, INVALID_BODY);
    assert_usable_or_closed(&server, c4, &resp);

    let mut c5 = server.admin();
    let resp = send_big(
        &mut c5,
        "/v1/key/encrypt/k1",
        &padded_json_body("plaintext", 1_000_016, 0),
    );
    resp.assert_error(400, INVALID_BODY);
    assert_usable_or_closed(&server, c5, &resp);

    let mut c6 = server.admin();
    let resp = send_big(
        &mut c6,
        "/v1/key/import/big",
        &padded_json_body("key", 1_400_000, 0),
    );
    resp.assert_error(400, INVALID_IMPORT_BODY);
    assert_usable_or_closed(&server, c6, &resp);

    // Chunked request bodies are read.
    let body = br#"{"context":"d2lyZS1jb250ZXh0"}"#;
    let mut req = format!(
        "PUT /v1/key/generate/k1 HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        c.host
    )
    .into_bytes();
    req.extend(chunked(body));
    c.send_raw(&req).unwrap();
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let pt = resp.b64_field("plaintext");
    let ct = resp.b64_field("ciphertext");
    assert_eq!(c.decrypt("k1", &ct, Some(b"wire-context")), pt);
    // The connection is still in sync after the chunked body.
    assert_eq!(c.get("/version").status, 200);

    // A chunked body larger than the limit → 400.
    let mut c7 = server.admin();
    let body = padded_json_body("context", 1_400_014, 0);
    let mut req = format!(
        "PUT /v1/key/generate/k1 HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        c7.host
    )
    .into_bytes();
    for part in body.chunks(100_000) {
        req.extend(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend(part);
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    let _ = c7.send_raw(&req);
    let resp = c7.read_response().expect("response to a big chunked body");
    resp.assert_error(400, INVALID_BODY);
    assert_usable_or_closed(&server, c7, &resp);
}

#[test]
fn malformed_http() {
    let env = Env::new("malformed");
    let server = env.start();

    let mut c = server.admin();
    c.send_raw(b"GARBAGE\r\n\r\n").unwrap();
    let resp = c
        .read_response()
        .expect("a response to a malformed request line");
    assert_eq!(resp.status, 400, "{:?}", resp.text());

    let mut c = server.admin();
    c.send_raw(b"GET /version HTTP/1.1\r\n\r\n").unwrap();
    let resp = c
        .read_response()
        .expect("a response to a request without Host");
    assert_eq!(resp.status, 400, "{:?}", resp.text());

    let mut c = server.admin();
    c.send_raw(b"GET /version HTTP/1.0\r\n\r\n").unwrap();
    let resp = c.read_response().expect("a response to HTTP/1.0");
    assert_eq!(resp.status, 200, "{:?}", resp.text());

    let mut c = server.admin();
    let req = format!(
        "GET https://127.0.0.1/version HTTP/1.1\r\nHost: {}\r\n\r\n",
        c.host
    );
    c.send_raw(req.as_bytes()).unwrap();
    let resp = c.read_response().expect("a response to an absolute URI");
    assert_eq!(resp.status, 200, "{:?}", resp.text());

    // HEAD is not supported: 405 without a body, and the connection stays in sync.
    let mut c = server.admin();
    let resp = c.must("HEAD", "/version", &[], None);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("accept"), Some("GET"));
    let next = c.get("/version");
    assert_eq!(next.status, 200, "a HEAD response must not carry a body");

    // Header section flood: the server answers with an error or closes, and keeps serving.
    let mut c = server.admin();
    let mut req = format!("GET /version HTTP/1.1\r\nHost: {}\r\n", c.host);
    for i in 0..2000 {
        req.push_str(&format!("X-Filler-{i}: {}\r\n", "y".repeat(100)));
    }
    req.push_str("\r\n");
    let _ = c.send_raw(req.as_bytes());
    if let Ok(resp) = c.read_response() {
        assert!(
            resp.status >= 400,
            "a 200 KB header section was accepted: {}",
            resp.status
        );
    }
    assert_eq!(server.admin().get("/version").status, 200);
}

#[test]
fn keep_alive_many_requests_on_one_connection() {
    let env = Env::new("keepalive");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k");
    let start = Instant::now();
    for i in 0..150 {
        match i % 6 {
            0 => assert_eq!(c.get("/version").status, 200),
            1 => c
                .get("/v1/key/describe/missing")
                .assert_error(404, KEY_NOT_FOUND),
            2 => {
                let (pt, ct) = c.generate("k", Some(format!("ctx-{i}").as_bytes()));
                assert_eq!(c.decrypt("k", &ct, Some(format!("ctx-{i}").as_bytes())), pt);
            }
            3 => c
                .put_body("/v1/key/generate/k", b"{")
                .assert_error(400, INVALID_BODY),
            4 => assert_404_page(&c.get("/nothing")),
            _ => assert_eq!(c.list("*"), ["k"]),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let env = Env::new("pipeline");
    let server = env.start();
    let mut c = server.admin();

    // Creates, describes and errors, written in one go.
    let mut batch = Vec::new();
    type Check = Box<dyn Fn(&Response)>;
    let mut expect: Vec<Check> = Vec::new();
    for i in 0..8 {
        let name = format!("p{i}");
        batch.extend(c.build_request("PUT", &format!("/v1/key/create/{name}"), &[], None));
        expect.push(Box::new(|r: &Response| r.assert_empty_ok()));
        batch.extend(c.build_request("GET", &format!("/v1/key/describe/{name}"), &[], None));
        expect.push(Box::new(move |r: &Response| {
            assert_eq!(r.assert_json_ok()["name"], name.as_str())
        }));
        batch.extend(c.build_request("GET", "/v1/key/describe/nope", &[], None));
        expect.push(Box::new(|r: &Response| r.assert_error(404, KEY_NOT_FOUND)));
        let plaintext = format!("message number {i}");
        batch.extend(c.build_request(
            "PUT",
            "/v1/key/encrypt/p0",
            &[],
            Some(&serde_json::to_vec(&json!({"plaintext": b64(plaintext.as_bytes())})).unwrap()),
        ));
        expect.push(Box::new(move |r: &Response| {
            assert_eq!(r.b64_field("ciphertext").len(), plaintext.len() + 44)
        }));
    }
    c.send_raw(&batch).unwrap();
    for (i, check) in expect.iter().enumerate() {
        let resp = c
            .read_response()
            .unwrap_or_else(|err| panic!("pipelined response {i}: {err}"));
        check(&resp);
    }

    // Encrypt several plaintexts, then decrypt them pipelined: plaintexts come back in order.
    let cts: Vec<Vec<u8>> = (0..10)
        .map(|i| c.encrypt("p1", format!("plaintext {i}").as_bytes(), None))
        .collect();
    let mut batch = Vec::new();
    for ct in &cts {
        batch.extend(c.build_request(
            "PUT",
            "/v1/key/decrypt/p1",
            &[],
            Some(&serde_json::to_vec(&json!({"ciphertext": b64(ct)})).unwrap()),
        ));
    }
    // Dribble the batch in small writes that cut requests at arbitrary places.
    for piece in batch.chunks(37) {
        c.send_raw(piece).unwrap();
    }
    for i in 0..10 {
        let resp = c.read_response().unwrap();
        assert_eq!(
            resp.b64_field("plaintext"),
            format!("plaintext {i}").as_bytes()
        );
    }
    assert!(c.pending().is_empty(), "no extra bytes after the responses");
}

#[test]
fn a_stalled_client_does_not_block_others() {
    let env = Env::new("slow");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k");

    // A TCP connection that never starts TLS.
    let _raw = TcpStream::connect(server.addr).unwrap();
    // A TCP connection with half a TLS ClientHello.
    let mut half_hello = TcpStream::connect(server.addr).unwrap();
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // Half a request header.
    let mut slow_head = server.admin();
    let req = format!(
        "PUT /v1/key/create/slow HTTP/1.1\r\nHost: {}\r\nContent-Le",
        slow_head.host
    );
    slow_head.send_raw(req.as_bytes()).unwrap();
    // A complete header and half a body.
    let mut slow_body = server.admin();
    let body = br#"{"plaintext":"SGVsbG8gV29ybGQ="}"#;
    let req = format!(
        "PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        slow_body.host,
        body.len()
    );
    slow_body.send_raw(req.as_bytes()).unwrap();
    slow_body.send_raw(&body[..10]).unwrap();

    // Others are served promptly, on new and existing connections.
    let start = Instant::now();
    for _ in 0..20 {
        let mut other = server.admin();
        assert_eq!(other.get("/v1/key/describe/k").status, 200);
        let (pt, ct) = c.generate("k", None);
        assert_eq!(c.decrypt("k", &ct, None), pt);
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "40 requests took {elapsed:?} while other clients stalled"
    );

    // The stalled requests complete when their bytes arrive.
    slow_head.send_raw(b"ngth: 0\r\n\r\n").unwrap();
    slow_head.read_response().unwrap().assert_empty_ok();
    slow_body.send_raw(&body[10..]).unwrap();
    let resp = slow_body.read_response().unwrap();
    assert_eq!(resp.b64_field("ciphertext").len(), 11 + 44);
    assert_eq!(c.list("*"), ["k", "slow"]);
}

// -------------------------------------------------------------------------------------------
// Persistence, HSM key, shutdown
// -------------------------------------------------------------------------------------------

#[test]
fn keys_survive_a_restart() {
    let env = Env::new("restart");
    let mut server = env.start();
    let mut c = server.admin();
    c.create_key("persist-a");
    c.import_key("persist-c", &[3u8; 32], "ChaCha20");
    c.import_key("vec-z32-aes", &unb64(Z32), "AES256");
    c.create_key("deleted");
    c.delete("/v1/key/delete/deleted").assert_empty_ok();
    let (pt, ct) = c.generate("persist-a", Some(b"restart"));
    let ct_c = c.encrypt("persist-c", b"chacha data", None);
    let hmac_a = c.hmac("persist-a", b"message");
    let hmac_c = c.hmac("persist-c", b"message");
    let desc_a = c.get("/v1/key/describe/persist-a").assert_json_ok();
    let desc_c = c.get("/v1/key/describe/persist-c").assert_json_ok();
    drop(c);
    server.stop();
    assert!(env.db_path().exists(), "kes.db is in DIR");

    let mut server = env.start();
    let mut c = server.admin();
    assert_eq!(c.list("*"), ["persist-a", "persist-c", "vec-z32-aes"]);
    assert_eq!(c.get("/v1/key/describe/persist-a").assert_json_ok(), desc_a);
    assert_eq!(c.get("/v1/key/describe/persist-c").assert_json_ok(), desc_c);
    assert_eq!(c.decrypt("persist-a", &ct, Some(b"restart")), pt);
    assert_eq!(c.decrypt("persist-c", &ct_c, None), b"chacha data");
    assert_eq!(c.hmac("persist-a", b"message"), hmac_a, "HMAC keys persist");
    assert_eq!(c.hmac("persist-c", b"message"), hmac_c);
    let f = unb64("BsskesMi5bXUK/My89HGspx00CgoSVMbq/LEAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==");
    assert_eq!(
        c.decrypt("vec-z32-aes", &f, Some(b"my-context")),
        b"Hello World"
    );
    c.get("/v1/key/describe/deleted")
        .assert_error(404, KEY_NOT_FOUND);
    c.create_key("after-restart");
    drop(c);

    // SIGINT is graceful too.
    let status = server.signal(libc::SIGINT);
    assert!(
        status.success(),
        "SIGINT exit status {status:?}: {}",
        server.stderr()
    );

    let server = env.start();
    let mut c = server.admin();
    assert_eq!(
        c.list("*"),
        ["after-restart", "persist-a", "persist-c", "vec-z32-aes"]
    );
}

#[test]
fn sigterm_with_open_connections_exits_zero() {
    let env = Env::new("sigterm");
    let mut server = env.start();
    let mut idle = server.admin();
    idle.create_key("k");
    let mut half = server.admin();
    half.send_raw(b"GET /version HTTP/1.1\r\nHo").unwrap();
    let _raw = TcpStream::connect(server.addr).unwrap();
    server.stop();
    // The data written before the signal is there.
    let server = env.start();
    assert_eq!(server.admin().list("*"), ["k"]);
}

fn dir_listing(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn assert_clean_failure(exit: &Exited, what: &str) {
    let status = exit
        .status
        .unwrap_or_else(|| panic!("{what}: kes-node kept running (stderr {:?})", exit.stderr));
    assert!(
        !status.success() && status.code().is_some(),
        "{what}: want a non-zero exit code, got {status:?}"
    );
    let stderr = exit.stderr.trim_end();
    eprintln!("{what}: {status:?}: {stderr}");
    assert!(!stderr.is_empty(), "{what}: stderr is empty");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: stderr must be one line, got {stderr:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: kes-node panicked: {stderr:?}"
    );
}

#[test]
fn wrong_hsm_key_on_restart_fails_cleanly() {
    let mut env = Env::new("wronghsm");
    let mut server = env.start();
    let mut c = server.admin();
    c.create_key("k");
    let (pt, ct) = c.generate("k", None);
    drop(c);
    server.stop();
    let before = std::fs::read(env.db_path()).expect("kes.db exists");
    let files = dir_listing(&env.data);

    for (what, key) in [
        ("a different HSM key", HsmKey::Env(OTHER_HSM_KEY.into())),
        (
            "a ChaCha20 HSM key",
            HsmKey::Env("kes:v1:chacha20:OYmWIhY6iZAMOqNt610dqit5j/NuZNZc71+XreVdwug=".into()),
        ),
        (
            "a malformed HSM key",
            HsmKey::Env("kes:v1:aes256:not-base64!".into()),
        ),
        (
            "a short HSM key",
            HsmKey::Env("kes:v1:aes256:AAECAwQFBgcICQoLDA0ODw==".into()),
        ),
        ("no HSM key", HsmKey::Missing),
        (
            "a different HSM key in the config",
            HsmKey::Config(OTHER_HSM_KEY.into()),
        ),
    ] {
        env.set_hsm(key);
        match env.try_start() {
            Ok(server) => panic!(
                "kes-node started with {what} (listening on {})",
                server.addr
            ),
            Err(exit) => assert_clean_failure(&exit, what),
        }
        let after = std::fs::read(env.db_path()).expect("kes.db still exists");
        assert!(
            before == after,
            "{what}: kes.db changed ({} → {} bytes)",
            before.len(),
            after.len()
        );
        assert_eq!(
            dir_listing(&env.data),
            files,
            "{what}: files in DIR changed"
        );
    }

    // The right key still works.
    env.set_hsm(HsmKey::Env(HSM_KEY.into()));
    let server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), pt);
}

#[test]
fn missing_or_malformed_hsm_key_on_first_start_creates_nothing() {
    for (what, key) in [
        ("no HSM key", HsmKey::Missing),
        (
            "a malformed HSM key",
            HsmKey::Env("kes:v1:aes256:%%%".into()),
        ),
        (
            "an unknown HSM key type",
            HsmKey::Env(format!("kes:v1:aes128:{}", b64(&[1u8; 32]))),
        ),
        ("an empty HSM key", HsmKey::Env(String::new())),
        (
            "a malformed HSM key in the config",
            HsmKey::Config("nonsense".into()),
        ),
    ] {
        let env = Env::with_hsm("nohsm", key);
        match env.try_start() {
            Ok(server) => panic!("kes-node started with {what} on {}", server.addr),
            Err(exit) => assert_clean_failure(&exit, what),
        }
        assert!(
            !env.db_path().exists(),
            "{what}: kes.db was created although the server could not start"
        );
        assert_eq!(
            dir_listing(&env.data),
            BTreeSet::new(),
            "{what}: DIR must stay empty"
        );
    }
}

#[test]
fn hsm_key_from_the_config_file() {
    let mut env = Env::with_hsm("cfghsm", HsmKey::Config(HSM_KEY.into()));
    let mut server = env.start();
    let mut c = server.admin();
    c.create_key("k");
    let (pt, ct) = c.generate("k", None);
    drop(c);
    server.stop();
    // The same key from the environment opens the same database.
    env.set_hsm(HsmKey::Env(HSM_KEY.into()));
    let server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), pt);
}

// -------------------------------------------------------------------------------------------
// Tampering
// -------------------------------------------------------------------------------------------

/// Finds the value of the redb leaf entry whose key contains `name` in every leaf page of
/// `db` (current and stale copies) and returns the byte ranges of those values.
///
/// redb 2 leaf page: `[0]=1 (LEAF)`, `[2..4]=num_pairs (u16 LE)`, then for variable-width
/// keys `key_end[u32 LE; n]`, for variable-width values `value_end[u32 LE; n]`, then the keys,
/// then the values; offsets are from the page start.
fn redb_value_ranges(db: &[u8], name: &[u8]) -> Vec<std::ops::Range<usize>> {
    const PAGE: usize = 4096;
    let mut found = Vec::new();
    let mut pages = BTreeSet::new();
    for pos in db
        .windows(name.len())
        .enumerate()
        .filter(|(_, w)| *w == name)
        .map(|(i, _)| i)
    {
        pages.insert(pos / PAGE * PAGE);
    }
    for page in pages {
        let p = &db[page..db.len().min(page + 16 * PAGE)];
        if p.len() < 8 || p[0] != 1 {
            continue;
        }
        let n = u16::from_le_bytes([p[2], p[3]]) as usize;
        if n == 0 || 4 + 8 * n > p.len() {
            continue;
        }
        let u32_at = |off: usize| u32::from_le_bytes(p[off..off + 4].try_into().unwrap()) as usize;
        let key_end: Vec<usize> = (0..n).map(|i| u32_at(4 + 4 * i)).collect();
        let value_end: Vec<usize> = (0..n).map(|i| u32_at(4 + 4 * n + 4 * i)).collect();
        let keys_start = 4 + 8 * n;
        let mut prev = keys_start;
        let mut sane = true;
        for &end in key_end.iter().chain(value_end.iter()) {
            if end < prev || end > p.len() {
                sane = false;
                break;
            }
            prev = end;
        }
        if !sane {
            continue;
        }
        for i in 0..n {
            let key_start = if i == 0 { keys_start } else { key_end[i - 1] };
            let key = &p[key_start..key_end[i]];
            if key.windows(name.len()).any(|w| w == name) {
                let v_start = if i == 0 {
                    key_end[n - 1]
                } else {
                    value_end[i - 1]
                };
                if value_end[i] > v_start {
                    found.push(page + v_start..page + value_end[i]);
                }
            }
        }
    }
    found
}

#[test]
fn a_tampered_key_in_kes_db_is_detected() {
    let env = Env::new("tamper");
    let mut server = env.start();
    let mut c = server.admin();
    c.create_key("keep-a");
    c.import_key("keep-b", &[5u8; 32], "AES256");
    c.create_key("victim-key-0123456789");
    c.create_key("zz-keep-c");
    let (_, ct_victim) = c.generate("victim-key-0123456789", None);
    let (pt_a, ct_a) = c.generate("keep-a", None);
    let (pt_b, ct_b) = c.generate("keep-b", None);
    let (pt_c, ct_c) = c.generate("zz-keep-c", None);
    drop(c);
    server.stop();

    let path = env.db_path();
    let mut db = std::fs::read(&path).unwrap();
    let ranges = redb_value_ranges(&db, b"victim-key-0123456789");
    assert!(
        !ranges.is_empty(),
        "could not find the stored value of the victim key in kes.db (is the key name stored \
         as a redb key?)"
    );
    eprintln!(
        "tamper: victim value copies at {ranges:?} in a {} byte kes.db",
        db.len()
    );
    for r in &ranges {
        // Flip a few bytes in the middle of the value: inside the sealed ciphertext.
        let mid = r.start + r.len() / 2;
        for b in &mut db[mid.saturating_sub(2)..(mid + 2).min(r.end)] {
            *b ^= 0x5a;
        }
    }
    let original = std::fs::read(&path).unwrap();
    std::fs::write(&path, &db).unwrap();

    // redb's page checksums and the table digest no longer match: the start is refused with
    // one line naming the file, and `kes-node check` says the same (exit code 1).
    let exit = env
        .try_start()
        .err()
        .expect("a tampered kes.db is refused at start");
    assert_eq!(
        exit.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        exit.stderr
    );
    let check = std::process::Command::new(support::KES_NODE)
        .arg("check")
        .arg(&env.data)
        .env("KES_HSM_KEY", support::HSM_KEY)
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{why}");
    assert!(why.contains("kes.db is damaged"), "{why}");
    assert!(!why.contains("panicked"), "{why}");

    // A value altered through redb itself (sound pages) in a database without table digests
    // (made before them) opens; the tampered record answers 500 naming the problem.
    std::fs::write(&path, &original).unwrap();
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def = redb::TableDefinition::<&str, &[u8]>::new("key");
            let mut t = txn.open_table(def).unwrap();
            let item = "default/victim-key-0123456789";
            let mut value = redb::ReadableTable::get(&t, item)
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let mid = value.len() / 2;
            value[mid] ^= 0x5a;
            t.insert(item, value.as_slice()).unwrap();
            let meta = redb::TableDefinition::<&str, &[u8]>::new("meta");
            let mut meta = txn.open_table(meta).unwrap();
            for table in ["key", "policy", "identity", "secret", "enclave"] {
                meta.remove(format!("digest/{table}").as_str()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    let server = env.start();
    let mut c = server.admin();
    let check = |resp: &Response, what: &str| {
        eprintln!("tamper: {what} → {} {:?}", resp.status, resp.text());
        assert!(
            resp.status >= 500,
            "{what} of the tampered key: want a status >= 500, got {} {:?}",
            resp.status,
            resp.text()
        );
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{what}: a KES error body"
        );
        let v = resp.json();
        assert_eq!(keys_of(&v), set(&["message"]), "{what}: {v}");
        assert!(
            !v["message"].as_str().unwrap_or("").is_empty(),
            "{what}: empty message"
        );
        assert!(resp.body.ends_with(b"\n}"), "{what}: KES error framing");
    };
    check(&c.get("/v1/key/describe/victim-key-0123456789"), "describe");
    check(
        &c.decrypt_resp("victim-key-0123456789", &ct_victim, None),
        "decrypt",
    );
    check(
        &c.put_json("/v1/key/generate/victim-key-0123456789", &json!({})),
        "generate",
    );
    check(
        &c.put_json(
            "/v1/key/encrypt/victim-key-0123456789",
            &json!({"plaintext": "AA=="}),
        ),
        "encrypt",
    );
    check(
        &c.put_json(
            "/v1/key/hmac/victim-key-0123456789",
            &json!({"message": "AA=="}),
        ),
        "hmac",
    );
    // Creating over it must not pretend it is free.
    let resp = c.put("/v1/key/create/victim-key-0123456789");
    assert_ne!(
        resp.status,
        200,
        "create over a tampered key: {}",
        resp.text()
    );

    // The other keys are intact.
    assert_eq!(c.decrypt("keep-a", &ct_a, None), pt_a);
    assert_eq!(c.decrypt("keep-b", &ct_b, None), pt_b);
    assert_eq!(c.decrypt("zz-keep-c", &ct_c, None), pt_c);
    assert_eq!(c.hmac("keep-a", b"x").len(), 32);
    c.create_key("new-after-tamper");
    let (pt, ct) = c.generate("new-after-tamper", None);
    assert_eq!(c.decrypt("new-after-tamper", &ct, None), pt);
}

// -------------------------------------------------------------------------------------------
// Concurrency
// -------------------------------------------------------------------------------------------

#[test]
fn concurrent_clients_get_their_own_answers() {
    let env = Env::new("concurrent");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("shared");
    let addr = server.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, Some(&pki().admin), Tls::default()).unwrap();
                let own = format!("thread-{t}");
                c.create_key(&own);
                for i in 0..25 {
                    let ctx = format!("{t}-{i}");
                    let key = if i % 2 == 0 { "shared" } else { own.as_str() };
                    let (pt, ct) = c.generate(key, Some(ctx.as_bytes()));
                    assert_eq!(c.decrypt(key, &ct, Some(ctx.as_bytes())), pt);
                    let msg = format!("message {t} {i}");
                    let ct = c.encrypt(key, msg.as_bytes(), None);
                    assert_eq!(c.decrypt(key, &ct, None), msg.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let names = c.list("thread");
    assert_eq!(names.len(), 8, "{names:?}");
}

#[test]
fn a_second_server_on_the_same_dir_fails_cleanly() {
    let env = Env::new("twice");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k");
    // On another port, so that the failure is about the directory, not the address.
    match env.try_start_on("127.0.0.1:0") {
        Ok(second) => {
            // Two processes serving one redb file would corrupt it.
            panic!(
                "a second kes-node started on the same DIR (listening on {})",
                second.addr
            );
        }
        Err(exit) => assert_clean_failure(&exit, "a second server on the same DIR"),
    }
    // The first one is unaffected.
    let (pt, ct) = c.generate("k", None);
    assert_eq!(c.decrypt("k", &ct, None), pt);
    assert_eq!(c.list("*"), ["k"]);
}

#[test]
fn a_client_that_does_not_read_does_not_block_others() {
    let env = Env::new("noread");
    let server = env.start();
    let mut c = server.admin();
    // 200 keys with long names make a key listing of ~17 KB.
    let mut batch = Vec::new();
    for i in 0..200 {
        let name = format!("{i:03}{}", "n".repeat(77));
        batch.extend(c.build_request("PUT", &format!("/v1/key/create/{name}"), &[], None));
    }
    c.send_raw(&batch).unwrap();
    for _ in 0..200 {
        c.read_response().unwrap().assert_empty_ok();
    }
    let listing = c.get("/v1/key/list/*");
    assert!(listing.body.len() > 16_000);
    let names = names_of(&listing.assert_json_ok());
    let want: Vec<String> = (0..200)
        .map(|i| format!("{i:03}{}", "n".repeat(77)))
        .collect();
    assert_eq!(names, want, "all names, sorted");

    // ~8 MB of responses queued on a connection that does not read them; the requests are
    // small enough to sit in the socket buffers.
    let mut lazy = server.admin();
    let count = 500;
    let mut batch = Vec::new();
    for _ in 0..count {
        batch.extend(lazy.build_request("GET", "/v1/key/list/*", &[], None));
    }
    lazy.send_raw(&batch).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let first = format!("000{}", "n".repeat(77));
    let start = Instant::now();
    for _ in 0..10 {
        let mut other = server.admin();
        let (pt, ct) = other.generate(first.as_str(), None);
        assert_eq!(other.decrypt(first.as_str(), &ct, None), pt);
        assert_eq!(c.get("/version").status, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "requests took {:?} while another client did not read",
        start.elapsed()
    );

    // Reading now drains everything, in order and intact.
    for i in 0..count {
        let resp = lazy
            .read_response()
            .unwrap_or_else(|err| panic!("queued response {i}: {err}"));
        assert_eq!(resp.body, listing.body, "queued response {i}");
    }
}

#[test]
fn abrupt_disconnects_do_not_hurt_the_server() {
    let env = Env::new("abrupt");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k");
    for round in 0..5 {
        // Closed in the middle of a request body.
        let mut a = server.admin();
        let req = format!(
            "PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n{{\"plaintext\":\"",
            a.host
        );
        a.send_raw(req.as_bytes()).unwrap();
        drop(a);
        // Closed before reading a large response.
        let mut b = server.admin();
        let big = serde_json::to_vec(&json!({"plaintext": b64(&vec![1u8; 500_000])})).unwrap();
        let req = b.build_request("PUT", "/v1/key/encrypt/k", &[], Some(&big));
        b.send_raw(&req).unwrap();
        b.stream.sock.shutdown(std::net::Shutdown::Both).unwrap();
        drop(b);
        // Garbage instead of a TLS ClientHello, and a TCP connection closed at once.
        let mut raw = TcpStream::connect(server.addr).unwrap();
        let _ = raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        drop(raw);
        drop(TcpStream::connect(server.addr).unwrap());
        // The server still serves, on the old and on new connections.
        let (pt, ct) = c.generate("k", Some(format!("{round}").as_bytes()));
        assert_eq!(
            server
                .admin()
                .decrypt("k", &ct, Some(format!("{round}").as_bytes())),
            pt
        );
    }
}

#[test]
fn many_open_connections() {
    let env = Env::new("many");
    let server = env.start();
    let mut clients: Vec<Client> = (0..150).map(|_| server.admin()).collect();
    clients[0].create_key("k");
    for (i, c) in clients.iter_mut().enumerate() {
        let ctx = format!("conn-{i}");
        let (pt, ct) = c.generate("k", Some(ctx.as_bytes()));
        assert_eq!(c.decrypt("k", &ct, Some(ctx.as_bytes())), pt);
    }
    // In reverse order too: every connection is still served.
    for c in clients.iter_mut().rev() {
        assert_eq!(c.get("/version").status, 200);
    }
}

// -------------------------------------------------------------------------------------------
// Identities (spec §2.1, §2.4, kes-vectors.md §C)
// -------------------------------------------------------------------------------------------

#[test]
fn the_identity_is_the_hash_of_the_public_key() {
    // API key `kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs` (kms-go ExampleAPIKey_Identity).
    let seed = unhex("6695e955c76ac174167681eb459d08e79367c7932038a42f8ce5375e9cf0d02c");
    let identity = "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6";
    let api_key_cert = ed25519_client_cert(&seed, identity);
    assert_eq!(api_key_cert.identity, identity, "harness: SPKI hash");
    // Another certificate for the same key: a different subject and serial, same identity.
    let reissued = ed25519_client_cert(&seed, "reissued");
    assert_ne!(reissued.chain[0], api_key_cert.chain[0]);

    let mut env = Env::new("identity");
    env.set_admin(identity);
    let server = env.start();
    let mut c = server.client(&api_key_cert);
    c.create_key("k");
    let v = c.get("/v1/key/describe/k").assert_json_ok();
    assert_eq!(v["created_by"], identity, "{v}");
    assert_eq!(server.client(&reissued).list("*"), ["k"]);
    // The CA-signed certificate that is admin elsewhere is nobody here.
    server
        .admin()
        .get("/v1/key/list/*")
        .assert_error(403, NOT_AUTHORIZED);
}

#[test]
fn admin_access_can_be_disabled() {
    let mut env = Env::new("noadmin");
    env.set_admin("disabled");
    let server = env.start();
    let mut c = server.admin();
    assert_eq!(c.get("/version").status, 200);
    c.put("/v1/key/create/k").assert_error(403, NOT_AUTHORIZED);
    c.get("/v1/key/list/*").assert_error(403, NOT_AUTHORIZED);
}

#[test]
fn a_fresh_server_accepts_writes_as_soon_as_it_listens() {
    // The listening line is the readiness signal (and /v1/ready agrees): the very first
    // write must succeed, on a new database and after a restart.
    for round in 0..3 {
        let env = Env::new("firstwrite");
        let mut server = env.start();
        let mut c = server.admin();
        let resp = c.put("/v1/key/create/first");
        assert_eq!(
            (resp.status, resp.text()),
            (200, String::new()),
            "round {round}: the first create on a new server"
        );
        drop(c);
        server.stop();
        let server = env.start();
        let mut c = server.admin();
        c.get("/v1/ready").assert_empty_ok();
        let resp = c.put("/v1/key/create/second");
        assert_eq!(
            (resp.status, resp.text()),
            (200, String::new()),
            "round {round}: the first create after a restart (/v1/ready said 200)"
        );
    }
}
