//! Real AWS KMS sealing against the AWS emulator (moto in server mode, as tests/edge.rs
//! starts it): real `kes-node` servers whose root key a KMS key wraps, restarts, a changed
//! encryption context or another key refused with a clear one-line error (and nothing
//! written), the health probe seeing a disabled key, `kes-node hsm add|rm|ls` with a KMS copy
//! beside a SoftHSM one, and credentials from the config, the environment and the instance
//! role (IMDSv2). moto must be installed (`.ci/test` does): without it these tests fail.
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::hsm::{kes, ls, ok, status_hsm};
use support::moto::Moto;
use support::{Env, HsmKey, OTHER_HSM_KEY};

/// A new KMS key in `moto`: its id.
fn kms_key(moto: &Moto) -> String {
    let created = moto.json("TrentService.CreateKey", &json!({}));
    created["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An `hsm:` section for KMS key `key` at `moto`; `extra` are more lines of the section.
fn aws_kms(moto: &Moto, key: &str, extra: &str) -> String {
    format!(
        "hsm:\n  aws-kms:\n    key_id: {key}\n    region: us-east-1\n    endpoint: {}\n    \
         health_check: 200ms\n{extra}",
        moto.url()
    )
}

const STATIC_CREDS: &str =
    "    credentials: {accesskey: AKIDKESTEST, secretkey: kes-test-secret}\n";

/// [`support::hsm::refused`], and the error shows no secret key.
#[track_caller]
fn refused_without_secrets(env: &Env, what: &[&str]) {
    let err = support::hsm::refused(env, what);
    assert!(!err.contains("kes-test-secret"), "{err}");
}

#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_kms_key_seals_restarts_and_refuses_another_key_or_context() {
    let moto = Moto::start(None, None);
    let key = kms_key(&moto);
    let other = kms_key(&moto);
    let context = "    context: {team: storage}\n";
    let mut env = Env::with_hsm(
        "kms-restart",
        HsmKey::Yaml(aws_kms(&moto, &key, &format!("{STATIC_CREDS}{context}"))),
    );
    let name = format!("aws-kms:{key}");

    let mut server = env.start();
    let mut admin = server.admin();
    admin.create_key("k");
    let (plain, ct) = admin.generate("k", None);
    assert_eq!(status_hsm(&server), json!([{"name": name, "state": "ok"}]));
    server.stop();
    assert_eq!(ls(&env.data), [name.as_str()]);

    // Restarted, KMS unseals the same root key: old ciphertexts decrypt.
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);

    // The probe (DescribeKey) sees the key disabled, and enabled again; the server serves on.
    moto.json("TrentService.DisableKey", &json!({"KeyId": key}));
    eventually("the status shows the key disabled", || {
        status_hsm(&server)[0]["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable: ") && s.contains("is Disabled"))
    });
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    moto.json("TrentService.EnableKey", &json!({"KeyId": key}));
    eventually("the status shows the key ok", || {
        status_hsm(&server) == json!([{"name": name, "state": "ok"}])
    });
    server.stop();
    let before = std::fs::read(env.db_path()).unwrap();

    // Another encryption context: KMS refuses to decrypt.
    env.set_hsm(HsmKey::Yaml(aws_kms(
        &moto,
        &key,
        &format!("{STATIC_CREDS}    context: {{team: other}}\n"),
    )));
    refused_without_secrets(
        &env,
        &[
            &format!("HSM '{name}' refuses to unseal the root key"),
            "InvalidCiphertextException",
            "hsm.aws-kms.context",
        ],
    );
    // Another key: kes.db has no copy sealed by it.
    env.set_hsm(HsmKey::Yaml(aws_kms(
        &moto,
        &other,
        &format!("{STATIC_CREDS}{context}"),
    )));
    refused_without_secrets(
        &env,
        &[&format!(
            "kes.db has no root key sealed by HSM 'aws-kms:{other}'"
        )],
    );
    assert_eq!(
        std::fs::read(env.db_path()).unwrap(),
        before,
        "refusals change nothing"
    );

    // Sealed through an alias that later points at another key: the copy's name is the
    // alias's, and KMS refuses to decrypt the first key's ciphertext through it.
    moto.json(
        "TrentService.CreateAlias",
        &json!({"AliasName": "alias/kes", "TargetKeyId": key}),
    );
    let aliased = Env::with_hsm(
        "kms-alias",
        HsmKey::Yaml(aws_kms(&moto, "alias/kes", STATIC_CREDS)),
    );
    let mut server = aliased.start();
    server.admin().create_key("k");
    server.stop();
    moto.json(
        "TrentService.UpdateAlias",
        &json!({"AliasName": "alias/kes", "TargetKeyId": other}),
    );
    refused_without_secrets(
        &aliased,
        &[
            "HSM 'aws-kms:alias/kes'",
            "the root key",
            "AWS KMS key 'alias/kes'",
        ],
    );
}

#[test]
fn a_kms_copy_beside_a_softhsm_one() {
    let moto = Moto::start(None, None);
    let key = kms_key(&moto);
    let name = format!("aws-kms:{key}");
    let mut env = Env::with_hsm("kms-soft", HsmKey::Config(OTHER_HSM_KEY.into()));
    let mut server = env.start();
    server.admin().create_key("k");
    let (plain, ct) = server.admin().generate("k", None);
    server.stop();

    let to = env.tmp.path().join("kms.yml");
    std::fs::write(&to, aws_kms(&moto, &key, STATIC_CREDS)).unwrap();
    let out = ok(&kes(&[
        &"hsm",
        &"add",
        &"--config",
        &env.config,
        &"--to",
        &to,
        &"--data",
        &env.data,
    ]));
    assert!(out.contains(&format!("added HSM '{name}'")), "{out}");
    assert_eq!(ls(&env.data), [name.as_str(), "kes:v1:hsm:soft"]);

    // KMS alone opens the database now.
    env.set_hsm(HsmKey::Yaml(aws_kms(&moto, &key, STATIC_CREDS)));
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();

    // The SoftHSM copy removed with KMS configured: KMS is the only one left.
    let out = ok(&kes(&[
        &"hsm",
        &"rm",
        &"kes:v1:hsm:soft",
        &"--config",
        &to,
        &"--data",
        &env.data,
    ]));
    assert!(out.contains("removed HSM 'kes:v1:hsm:soft'"), "{out}");
    assert_eq!(ls(&env.data), [name.as_str()]);
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();
    env.set_hsm(HsmKey::Config(OTHER_HSM_KEY.into()));
    refused_without_secrets(
        &env,
        &["kes.db has no root key sealed by HSM 'kes:v1:hsm:soft'"],
    );
}

/// An instance metadata service (IMDSv2) on loopback: the one stand-in of these tests, since
/// the real one exists only on EC2. It hands out `creds` as the role `kes-role`'s to callers
/// that first got a session token, and records the requests it saw.
struct Imds {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Imds {
    fn start(access: &str, secret: &str) -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let creds = json!({
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": access,
            "SecretAccessKey": secret,
            "Token": "",
            "Expiration": "2999-01-01T00:00:00Z",
        })
        .to_string();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                let Some(request) = head.first().cloned() else {
                    continue;
                };
                let token = head
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case("x-aws-ec2-metadata-token: imds-token"));
                let (status, body) = match request.split(' ').take(2).collect::<Vec<_>>()[..] {
                    ["PUT", "/latest/api/token"] => ("200 OK", "imds-token".to_string()),
                    [_, _] if !token => ("401 Unauthorized", String::new()),
                    ["GET", "/latest/meta-data/iam/security-credentials/"] => {
                        ("200 OK", "kes-role\n".to_string())
                    }
                    ["GET", "/latest/meta-data/iam/security-credentials/kes-role"] => {
                        ("200 OK", creds.clone())
                    }
                    _ => ("404 Not Found", String::new()),
                };
                log.lock().unwrap().push(format!("{request} -> {status}"));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Imds { port, seen }
    }
}

#[test]
fn credentials_from_the_environment_and_the_instance_role() {
    // moto checks signatures and IAM permissions after the four set-up calls.
    let moto = Moto::start(None, Some(4));
    moto.iam("Action=CreateUser&UserName=kes");
    let created = moto.iam("Action=CreateAccessKey&UserName=kes");
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let start = created.find(&open).unwrap() + open.len();
        created[start..start + created[start..].find('<').unwrap()].to_string()
    };
    let (access, secret) = (field("AccessKeyId"), field("SecretAccessKey"));
    let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
    moto.iam(&format!(
        "Action=PutUserPolicy&UserName=kes&PolicyName=all&PolicyDocument={policy}"
    ));
    let key = kms_key(&moto);

    // The environment's credentials (no credentials: in the config).
    let mut env = Env::with_hsm("kms-env", HsmKey::Yaml(aws_kms(&moto, &key, "")));
    env.set_env("AWS_ACCESS_KEY_ID", &access);
    env.set_env("AWS_SECRET_ACCESS_KEY", &secret);
    env.set_env("AWS_EC2_METADATA_DISABLED", "true");
    let mut server = env.start();
    server.admin().create_key("k");
    let (plain, ct) = server.admin().generate("k", None);
    server.stop();
    // The secret key left the server's environment (handed over at start-up).
    assert!(!server.stderr().contains(&secret));

    // A wrong secret key: KMS refuses the signature, and the error says where the
    // credentials came from.
    env.set_env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    refused_without_secrets(
        &env,
        &[
            "refuses to unseal the root key",
            "credentials from the environment",
        ],
    );

    // No credentials in the config or the environment: the instance role's, via IMDSv2.
    let imds = Imds::start(&access, &secret);
    env.set_env("AWS_ACCESS_KEY_ID", "");
    env.set_env("AWS_SECRET_ACCESS_KEY", "");
    env.set_env("AWS_EC2_METADATA_DISABLED", "");
    env.set_env(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &format!("http://127.0.0.1:{}", imds.port),
    );
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();
    let seen = imds.seen.lock().unwrap().clone();
    assert_eq!(
        seen[..3],
        [
            "PUT /latest/api/token HTTP/1.1 -> 200 OK",
            "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1 -> 200 OK",
            "GET /latest/meta-data/iam/security-credentials/kes-role HTTP/1.1 -> 200 OK",
        ],
        "{seen:?}"
    );

    // No credentials anywhere: a clear error.
    env.set_env("AWS_EC2_METADATA_DISABLED", "true");
    refused_without_secrets(&env, &["no AWS credentials", "AWS_ACCESS_KEY_ID"]);
}
