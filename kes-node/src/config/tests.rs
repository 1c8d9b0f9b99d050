//! The config loader's tests: every field, every error naming its field.
use super::*;

const ADMIN: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
const ID1: &str = "df7281ca3fed4ef7d06297eb7cb9d590a4edc863b4425f4762bb2afaebfd3258";
const ID2: &str = "c0ecd5962eaf937422268b80a93dde4786dc9783fb2480ddea0f3e5fe471a731";

fn base() -> &'static Path {
    Path::new("/etc/kes")
}

fn minimal(extra: &str) -> String {
    format!("admin:\n  identity: {ADMIN}\ntls:\n  key: server.key\n  cert: server.cert\n{extra}")
}

fn err(text: &str) -> String {
    let e = parse(text, base()).expect_err("expected an error");
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn full_config() {
    let text = format!(
        r#"
version: v1
address: 0.0.0.0:7373
admin:
  identity: {ADMIN}
tls:
  key: ./server.key
  cert: /abs/server.cert
  ca: certs/ca.pem
  auth: on
  proxy:
    identities: []
hsm:
  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
api:
  /v1/status:
    skip_auth: true
    timeout: 1m30s
  /v1/ready:
    skip_auth: false
    timeout: 0s
  /v1/metrics: {{}}
policy:
  my-app:
    allow:
    - /v1/key/create/my-app*
    - /v1/key/generate/my-app*
    deny:
    - /v1/key/generate/my-app-internal*
    identities:
    - {ID1}
    - {ID2}
  empty: {{}}
cache:
  expiry:
    any: 5m0s
log:
  error: on
keys:
  - name: some-key
keystore:
  fs:
    path: ./keys
"#
    );
    let c = parse(&text, base()).unwrap();
    assert_eq!(c.address.as_deref(), Some("0.0.0.0:7373"));
    assert_eq!(c.admin_identity, ADMIN);
    assert_eq!(c.tls.key, Path::new("/etc/kes/./server.key"));
    assert_eq!(c.tls.cert, Path::new("/abs/server.cert"));
    assert_eq!(
        c.tls.ca.as_deref(),
        Some(Path::new("/etc/kes/certs/ca.pem"))
    );
    let HsmConfig::Soft(Some(key)) = &c.hsm else {
        panic!("{:?}", c.hsm)
    };
    assert!(key.starts_with("kes:v1:aes256:"));
    let status = &c.api["/v1/status"];
    assert!(status.skip_auth);
    assert_eq!(status.timeout, Some(Duration::from_secs(90)));
    assert!(!c.api["/v1/ready"].skip_auth);
    assert_eq!(c.api["/v1/ready"].timeout, None);
    assert_eq!(c.api["/v1/metrics"].timeout, None);
    let p = &c.policies["my-app"];
    assert_eq!(
        p.allow,
        ["/v1/key/create/my-app*", "/v1/key/generate/my-app*"]
    );
    assert_eq!(p.deny, ["/v1/key/generate/my-app-internal*"]);
    assert_eq!(p.identities, [ID1, ID2]);
    assert!(c.policies["empty"].allow.is_empty());
}

#[test]
fn tls_auth_and_limits() {
    let c = parse(&minimal(""), base()).unwrap();
    assert!(!c.tls.auth);
    assert_eq!(c.limits, Limits::default());
    let tls = |auth: &str| {
        format!("admin:\n  identity: {ADMIN}\ntls:\n  key: k\n  cert: c\n  auth: {auth}\n")
    };
    assert!(parse(&tls("on"), base()).unwrap().tls.auth);
    assert!(!parse(&tls("off"), base()).unwrap().tls.auth);
    assert!(parse(&tls("maybe"), base())
        .unwrap_err()
        .starts_with("config: tls.auth: expected on or off"));
    let c = parse(
            &minimal("limits:\n  connections: 100\n  connections_per_ip: 10\n  handshake_timeout: 1500ms\n  memory: 64MiB\n  log_queue: 100KB\n"),
            base(),
        )
        .unwrap();
    assert_eq!(
        c.limits,
        Limits {
            connections: 100,
            connections_per_ip: 10,
            handshake_timeout: Duration::from_millis(1500),
            memory: 64 << 20,
            log_queue: 100_000,
            workers: None,
        }
    );
    assert!(err(&minimal("limits:\n  memory: lots\n")).starts_with("config: limits.memory:"));
    let workers = |v: &str| parse(&minimal(&format!("limits:\n  workers: {v}\n")), base());
    assert_eq!(workers("4").unwrap().limits.workers, Some(4));
    assert_eq!(workers("auto").unwrap().limits.workers, None);
    assert!(workers("0")
        .unwrap_err()
        .starts_with("config: limits.workers: expected auto or a positive number"));
    assert!(err(&minimal("limits:\n  connections: 0\n")).starts_with("config: limits.connections:"));
    assert!(err(&minimal("limits:\n  sockets: 3\n")).contains("unknown field 'limits.sockets'"));
}

#[test]
fn minimal_config_and_defaults() {
    let c = parse(&minimal(""), base()).unwrap();
    assert_eq!(c.address, None);
    assert_eq!(c.tls.ca, None);
    assert_eq!(c.hsm, HsmConfig::Soft(None));
    assert!(c.api.is_empty() && c.policies.is_empty());
    // Empty optional values count as absent.
    let c = parse(&minimal("address: \"\"\nhsm:\n"), base()).unwrap();
    assert_eq!(c.address, None);
}

#[test]
fn env_vars() {
    std::env::set_var("KES_NODE_CONFIG_TEST_ADMIN", format!("  {ADMIN}\n"));
    std::env::set_var("KES_NODE_CONFIG_TEST_SKIP", "true");
    std::env::set_var("KES_NODE_CONFIG_TEST_ID", ID1);
    let text = r#"
admin:
  identity: ${KES_NODE_CONFIG_TEST_ADMIN}
tls:
  key: " ${ KES_NODE_CONFIG_TEST_NOT_SET_EITHER } "
  cert: server.cert
"#;
    let e = err(text);
    assert_eq!(
        e,
        "config: tls.key: environment variable 'KES_NODE_CONFIG_TEST_NOT_SET_EITHER' is not set"
    );
    let text = r#"
admin:
  identity: ${KES_NODE_CONFIG_TEST_ADMIN}
tls:
  key: server.key
  cert: server.cert
api:
  /v1/ready:
    skip_auth: ${KES_NODE_CONFIG_TEST_SKIP}
policy:
  p:
    identities: [ "${KES_NODE_CONFIG_TEST_ID}" ]
"#;
    let c = parse(text, base()).unwrap();
    assert_eq!(c.admin_identity, ADMIN);
    assert!(c.api["/v1/ready"].skip_auth);
    assert_eq!(c.policies["p"].identities, [ID1]);
}

/// Identities that no certificate can match are refused at start, naming the field;
/// upper-case hex is the same identity and is normalized (issue 13).
#[test]
fn identities_are_checked_and_normalized() {
    let e = err("admin:\n  identity: x\n");
    assert!(
        e.starts_with("config: admin.identity: 'x' is not an identity: an identity is 64 hex"),
        "{e}"
    );
    assert!(e.ends_with(", or `disabled`"), "{e}");
    let e = err(&format!("admin:\n  identity: {}\n", &ADMIN[1..]));
    assert!(e.starts_with("config: admin.identity: '"), "{e}");
    let e = err(&minimal(
        "policy:\n  p:\n    identities: [not-a-hex-identity]\n",
    ));
    assert!(
        e.starts_with("config: policy.p.identities[0]: 'not-a-hex-identity' is not an identity"),
        "{e}"
    );
    let upper = ADMIN.to_ascii_uppercase();
    let text = format!(
        "admin:\n  identity: {upper}\ntls:\n  key: k\n  cert: c\npolicy:\n  p:\n    \
             identities: [{}]\n",
        ID1.to_ascii_uppercase()
    );
    let c = parse(&text, base()).unwrap();
    assert_eq!(c.admin_identity, ADMIN);
    assert_eq!(c.policies["p"].identities, [ID1]);
    let c = parse(&minimal("").replace(ADMIN, "disabled"), base()).unwrap();
    assert_eq!(c.admin_identity, "disabled");
}

#[test]
fn errors_name_the_field() {
    assert_eq!(
        err("admin:\n  identity: disabled\n"),
        "config: tls.key is required (the server's private key file)"
    );
    assert!(err("tls:\n  key: a\n  cert: b\n").starts_with("config: admin.identity is required"));
    assert!(err(&minimal("version: v2\n")).starts_with("config: version: unsupported version 'v2'"));
    assert!(err(&minimal("adress: 1.2.3.4:7373\n")).starts_with("config: unknown field 'adress'"));
    assert!(err(&minimal("api:\n  /v1/ready:\n    skip-auth: true\n"))
        .starts_with("config: unknown field 'api./v1/ready.skip-auth'"));
    assert!(err(&minimal("api:\n  /v1/ready:\n    timeout: 15\n"))
        .starts_with("config: api./v1/ready.timeout: invalid duration '15': missing unit"));
    assert!(
        err(&minimal("api:\n  /v1/ready:\n    timeout: -1s\n")).contains("must not be negative")
    );
    assert!(err(&minimal("api:\n  /v1/ready:\n    skip_auth: maybe\n"))
        .starts_with("config: api./v1/ready.skip_auth: expected true or false"));
    assert!(err(&minimal("api:\n  v1/ready: {}\n")).starts_with("config: api.v1/ready:"));
    assert!(err(&minimal("policy:\n  p:\n    allow: /v1/key\n"))
        .starts_with("config: policy.p.allow: expected a list"));
    assert!(err(&minimal("policy:\n  p:\n    allows: []\n"))
        .starts_with("config: unknown field 'policy.p.allows'"));
    assert!(err(&minimal("policy:\n  bad/name: {}\n")).starts_with("config: policy.bad/name:"));
    assert!(err(&minimal(&format!(
        "policy:\n  p:\n    identities: [{ADMIN}]\n"
    )))
    .contains("admin identity"));
    let twice = format!("policy:\n  a:\n    identities: [{ID1}]\n  b:\n    identities: [{ID1}]\n");
    assert_eq!(
        err(&minimal(&twice)),
        format!(
            "config: policy.b.identities[0]: cannot assign policy 'b' to '{ID1}': identity \
                 already has policy 'a'"
        )
    );
    let e = err(&minimal("hsm:\n  key: kes:v1:aes256:c2VjcmV0\n"));
    assert!(
        e.starts_with("config: hsm.key:") && !e.contains("c2VjcmV0"),
        "{e}"
    );
    // A section given twice.
    assert!(err(&minimal("tls:\n  ca: x\n")).starts_with("config: invalid YAML"));
    assert!(err("admin: [\n").starts_with("config: invalid YAML"));
    assert!(err("- a\n- b\n").starts_with("config: the file must be a YAML mapping"));
    assert!(err("admin: x\n").starts_with("config: admin: expected a mapping"));
}

#[test]
fn encrypted_key_password_is_refused() {
    let text =
        format!("admin:\n  identity: {ADMIN}\ntls:\n  key: k\n  cert: c\n  password: secret\n");
    let e = err(&text);
    assert!(
        e.starts_with("config: tls.password:") && !e.contains("secret"),
        "{e}"
    );
}

#[test]
fn go_durations() {
    let ok = |s: &str| parse_go_duration(s).unwrap();
    assert_eq!(ok("0"), Duration::ZERO);
    assert_eq!(ok("15s"), Duration::from_secs(15));
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    assert_eq!(ok("5m0s"), Duration::from_secs(300));
    assert_eq!(ok("1.5h"), Duration::from_secs(5400));
    assert_eq!(ok("300ms"), Duration::from_millis(300));
    assert_eq!(ok("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
    assert_eq!(ok(".5s"), Duration::from_millis(500));
    assert_eq!(ok("2µs"), Duration::from_micros(2));
    for bad in ["", "s", "15", "1x", "1.s.", "-", "1h-1m", "99999999999h"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn load_resolves_against_the_file() {
    let dir = std::env::temp_dir().join(format!(
        "kes-node-config-{}-{}",
        std::process::id(),
        line!()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yml");
    std::fs::write(&file, minimal("")).unwrap();
    let c = load(&file).unwrap();
    assert_eq!(c.tls.key, dir.join("server.key"));
    let e = load(&dir.join("missing.yml")).err().unwrap();
    assert!(e.starts_with("config: cannot read"), "{e}");
    std::fs::write(&file, "nonsense: 1\n").unwrap();
    let e = load(&file).err().unwrap();
    assert!(
        e.contains("unknown field 'nonsense'") && e.contains("config.yml"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const P11: &str = "hsm:\n  pkcs11:\n    module: /usr/lib/softhsm/libsofthsm2.so\n    token: kes\n    pin_env: KES_PIN\n    key_label: root\n";

#[test]
fn pkcs11_section() {
    let c = parse(&minimal(P11), base()).unwrap();
    assert_eq!(
        c.hsm,
        HsmConfig::Pkcs11(Pkcs11Config {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token: TokenSelector::Label("kes".into()),
            pin: PinSource::Env("KES_PIN".into()),
            key_label: "root".into(),
            mechanism: SealMechanism::Auto,
            health_check: DEFAULT_HEALTH_CHECK,
        })
    );
    let pkcs11 = |text: &str| match parse(&minimal(text), base()).unwrap().hsm {
        HsmConfig::Pkcs11(p) => p,
        other => panic!("{other:?}"),
    };
    let text = "hsm:\n  pkcs11:\n    module: lib/p11.so\n    slot: 7\n    pin_file: pin.txt\n    key_label: k\n    mechanism: aes-key-wrap\n    health_check: 250ms\n";
    let p = pkcs11(text);
    assert_eq!(p.module, base().join("lib/p11.so"));
    assert_eq!(p.token, TokenSelector::Slot(7));
    assert_eq!(p.pin, PinSource::File(base().join("pin.txt")));
    assert_eq!(p.mechanism, SealMechanism::AesKeyWrap);
    assert_eq!(p.health_check, Duration::from_millis(250));
    let gcm = P11.replace(
        "key_label: root\n",
        "key_label: root\n    mechanism: aes-gcm\n",
    );
    let p = pkcs11(&gcm);
    assert_eq!(p.mechanism, SealMechanism::AesGcm);
    // The SoftHSM form keeps working.
    let soft = "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
    let c = parse(&minimal(soft), base()).unwrap();
    assert!(matches!(c.hsm, HsmConfig::Soft(Some(_))));
}

#[test]
fn pkcs11_section_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "token: kes\n",
            "slot: 1\n    token: kes\n",
            "either token (a label) or slot",
        ),
        ("token: kes\n", "", "hsm.pkcs11.token is required"),
        (
            "token: kes\n",
            "slot: one\n",
            "hsm.pkcs11.slot: 'one' is not a slot id",
        ),
        (
            "pin_env: KES_PIN\n",
            "",
            "pin_env (an environment variable's name) or pin_file is required",
        ),
        (
            "pin_env: KES_PIN\n",
            "pin_env: A\n    pin_file: b\n",
            "either pin_env or pin_file",
        ),
        (
            "pin_env: KES_PIN\n",
            "pin: \"1234\"\n",
            "hsm.pkcs11.pin: not supported",
        ),
        ("key_label: root\n", "", "hsm.pkcs11.key_label is required"),
        (
            "key_label: root\n",
            "key_label: root\n    mechanism: des\n",
            "unknown mechanism 'des'",
        ),
        (
            "key_label: root\n",
            "key_label: root\n    health_check: 0s\n",
            "health_check: must be more than 0",
        ),
        (
            "key_label: root\n",
            "key_label: root\n    color: blue\n",
            "unknown field 'hsm.pkcs11.color'",
        ),
        (
            "module: /usr/lib/softhsm/libsofthsm2.so\n",
            "",
            "hsm.pkcs11.module is required",
        ),
    ];
    for (from, to, expect) in cases {
        let text = P11.replace(
            &format!("    {from}"),
            &if to.is_empty() {
                String::new()
            } else {
                format!("    {to}")
            },
        );
        let e = err(&minimal(&text));
        assert!(e.contains(expect), "{text}: {e}");
        assert!(!e.contains("1234"), "the PIN is never echoed: {e}");
    }
    let both = P11.replace(
        "hsm:\n",
        "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    );
    assert!(err(&minimal(&both)).contains("not key and pkcs11"));
}

#[test]
fn hsm_only_files() {
    // `hsm add --to FILE` reads only the hsm: section; other sections are not checked.
    let p11 = hsm::parse_hsm_only(&format!("anything: [1]\n{P11}"), base()).unwrap();
    assert!(matches!(p11, HsmConfig::Pkcs11(p) if p.key_label == "root"));
    let soft = "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
    assert!(matches!(
        hsm::parse_hsm_only(soft, base()).unwrap(),
        HsmConfig::Soft(Some(_))
    ));
    let e = hsm::parse_hsm_only("tls: {}\n", base()).err().unwrap();
    assert!(e.contains("no HSM given"), "{e}");
}
