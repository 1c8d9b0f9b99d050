//! The client commands (`kes-node key|policy|identity|secret|enclave|log|status`) run as
//! processes against a real `kes-node server`: a dev server (`server --dev DIR`, admin API key
//! and self-signed server certificate from DIR) or the harness's configured server (a test CA,
//! client certificates from PEM files).
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use support::{pki, Env, TempDir, KES_NODE};

/// Every variable the client commands read: tests set exactly what they mean.
const CLIENT_ENV: [&str; 8] = [
    "KES_SERVER",
    "KES_API_KEY",
    "KES_CLIENT_CERT",
    "KES_CLIENT_KEY",
    "KES_ENCLAVE",
    "KES_CA",
    "MINIO_KES_SERVER",
    "KES_HSM_KEY",
];

/// `kes-node server --dev DIR --addr 127.0.0.1:0`, killed on drop.
struct DevServer {
    child: Child,
    dir: TempDir,
    addr: String,
}

impl DevServer {
    fn start() -> DevServer {
        DevServer::start_in(TempDir::new("cli-dev"))
    }

    /// A dev server on an existing directory (its `hsm.key` is used if present).
    fn start_in(dir: TempDir) -> DevServer {
        let mut cmd = Command::new(KES_NODE);
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(["server", "--dev"])
            .arg(dir.path())
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kes-node server --dev");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("kes-node: listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(support::START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("the dev server did not print its address");
            }
        };
        DevServer { child, dir, addr }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn api_key(&self) -> String {
        std::fs::read_to_string(self.file("admin.apikey"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A command with the admin's API key that verifies the server with its certificate.
    fn cli(&self) -> Cli {
        Cli::new()
            .env("KES_SERVER", &format!("https://{}", self.addr))
            .env("KES_API_KEY", &self.api_key())
            .env("KES_CA", self.file("server.cert").to_str().unwrap())
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kes-node` invocation with a chosen environment.
#[derive(Clone)]
struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    fn new() -> Cli {
        Cli { env: Vec::new() }
    }

    fn env(mut self, name: &str, value: &str) -> Cli {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Cli {
        self.env.retain(|(n, _)| n != name);
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KES_NODE);
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("run kes-node {args:?}: {e}"));
        Run {
            args: args.join(" "),
            out,
        }
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args).success()
    }

    /// Runs and asserts exit code 1 with `kes-node: <message>` on stderr.
    fn fails(&self, args: &[&str], message: &str) {
        self.run(args).failure(message);
    }
}

struct Run {
    args: String,
    out: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn success(&self) -> String {
        assert!(
            self.out.status.success(),
            "kes-node {} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    fn failure(&self, message: &str) {
        assert_eq!(
            self.out.status.code(),
            Some(1),
            "kes-node {}: expected exit code 1\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout(),
            self.stderr()
        );
        let stderr = self.stderr();
        assert!(
            stderr.starts_with("kes-node: ") && stderr.contains(message),
            "kes-node {}: expected 'kes-node: ...{message}...' on stderr, got:\n{stderr}",
            self.args
        );
    }
}

/// Each line of `out` as JSON.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn json(out: &str) -> serde_json::Value {
    let lines = json_lines(out);
    assert_eq!(lines.len(), 1, "expected one JSON line, got:\n{out}");
    lines.into_iter().next().unwrap()
}

/// `label value` from a human field table.
fn field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(label)?;
            rest.starts_with(' ').then(|| rest.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no field '{label}' in:\n{out}"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

#[test]
fn key_round_trips() {
    let server = DevServer::start();
    let cli = server.cli();

    assert_eq!(
        cli.ok(&["key", "create", "k1", "k2"]),
        "created key k1\ncreated key k2\n"
    );
    let info = cli.ok(&["key", "info", "k1"]);
    assert_eq!(field(&info, "Name"), "k1");
    assert!(["AES256", "ChaCha20"].contains(&field(&info, "Algorithm").as_str()));
    assert_eq!(
        field(&info, "Owner"),
        cli.ok(&["identity", "of", &server.api_key()]).trim()
    );
    assert_eq!(cli.ok(&["key", "ls"]), "k1\nk2\n");
    assert_eq!(cli.ok(&["key", "ls", "k2"]), "k2\n");

    // A data key: its ciphertext decrypts to its plaintext, with the same context only.
    let ctx = B64.encode(b"bucket/object");
    let dek = json(&cli.ok(&["key", "dek", "k1", &ctx, "--json"]));
    let plaintext = dek["plaintext"].as_str().unwrap().to_owned();
    let ciphertext = dek["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!(B64.decode(&plaintext).unwrap().len(), 32);
    let back = json(&cli.ok(&["key", "decrypt", "k1", &ciphertext, &ctx, "--json"]));
    assert_eq!(back["plaintext"], plaintext.as_str());
    cli.fails(
        &["key", "decrypt", "k1", &ciphertext],
        "decryption failed: ciphertext is not authentic",
    );
    let human = cli.ok(&["key", "dek", "k1"]);
    assert_eq!(B64.decode(field(&human, "plaintext:")).unwrap().len(), 32);
    assert_eq!(B64.decode(field(&human, "ciphertext:")).unwrap().len(), 76);

    // Text in, text out.
    let sealed = cli.ok(&["key", "encrypt", "k2", "hello, world"]);
    assert_eq!(
        cli.ok(&["key", "decrypt", "k2", sealed.trim()]),
        "hello, world\n"
    );
    cli.fails(
        &["key", "decrypt", "k1", sealed.trim()],
        "decryption failed: ciphertext is not authentic",
    );

    // HMAC: deterministic per key, 32 bytes.
    let mac = cli.ok(&["key", "hmac", "k1", "message"]);
    assert_eq!(mac.trim().len(), 64);
    assert_eq!(cli.ok(&["key", "hmac", "k1", "message"]), mac);
    assert_ne!(cli.ok(&["key", "hmac", "k2", "message"]), mac);

    assert_eq!(cli.ok(&["key", "rm", "k1"]), "deleted key k1\n");
    cli.fails(&["key", "info", "k1"], "key does not exist");
    cli.fails(&["key", "rm", "k1"], "key does not exist");
    assert_eq!(cli.ok(&["key", "ls"]), "k2\n");
}

#[test]
fn key_import_and_errors() {
    let server = DevServer::start();
    let cli = server.cli();
    let key = B64.encode([7u8; 32]);
    cli.ok(&["key", "import", "imported", &key]);
    let info = json(&cli.ok(&["key", "info", "imported", "--json"]));
    assert_eq!(info["name"], "imported");
    assert_eq!(info["algorithm"], "AES256");
    cli.ok(&["key", "import", "cha", &key, "--cipher", "ChaCha20"]);
    assert_eq!(
        field(&cli.ok(&["key", "info", "cha"]), "Algorithm"),
        "ChaCha20"
    );
    cli.fails(
        &["key", "import", "short", &B64.encode([1u8; 16])],
        "invalid key size for 'AES256'",
    );
    cli.fails(&["key", "import", "bad", "not base64!"], "not valid base64");

    cli.fails(&["key", "create", "imported"], "key already exists");
    cli.fails(
        &["key", "create", "bad/name"],
        "key name 'bad/name' is empty, too long or contains invalid characters",
    );
    cli.fails(&["key", "dek", "missing"], "key does not exist");
    cli.fails(&["key", "create"], "no key name given");
}

#[test]
fn json_output_is_the_servers() {
    let server = DevServer::start();
    let cli = server.cli();
    assert_eq!(cli.ok(&["key", "create", "j1", "--json"]), "");
    cli.ok(&["key", "create", "j2"]);
    let names: Vec<_> = json_lines(&cli.ok(&["key", "ls", "--json"]))
        .into_iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["j1", "j2"]);
    let info = json(&cli.ok(&["key", "info", "j1", "--json"]));
    assert_eq!(info["name"], "j1");
    assert!(info["created_at"].is_string());
    let ct = json(&cli.ok(&["key", "encrypt", "j1", "abc", "--json"]));
    let ct = ct["ciphertext"].as_str().unwrap();
    assert_eq!(B64.decode(ct).unwrap().len(), 3 + 44);
    let mac = json(&cli.ok(&["key", "hmac", "j1", "m", "--json"]));
    assert_eq!(B64.decode(mac["hmac"].as_str().unwrap()).unwrap().len(), 32);

    let status = json(&cli.ok(&["status", "--json"]));
    assert!(status["version"].is_string());
    assert!(status["uptime"].is_number());
    let routes = json_lines(&cli.ok(&["status", "--api", "--json"]));
    assert!(routes
        .iter()
        .any(|r| r["path"] == "/v1/key/create/" && r["method"] == "PUT"));
    let me = json(&cli.ok(&["identity", "info", "--json"]));
    assert_eq!(me["admin"], true);
}

// ---------------------------------------------------------------------------------------
// Connection settings and failures
// ---------------------------------------------------------------------------------------

#[test]
fn server_verification_and_credentials() {
    let server = DevServer::start();
    let cli = server.cli();
    let host_port = server.addr.clone();

    // `host:port` without a scheme, and `-k` instead of a CA.
    cli.clone()
        .env("KES_SERVER", &host_port)
        .without("KES_CA")
        .ok(&["key", "create", "via-k", "-k"]);
    // `--ca FILE` instead of KES_CA.
    let ca = server.file("server.cert");
    cli.clone()
        .without("KES_CA")
        .ok(&["key", "info", "via-k", "--ca", ca.to_str().unwrap()]);

    cli.clone()
        .without("KES_CA")
        .fails(&["key", "ls"], "use -k/--insecure for a development server");
    // A CA that did not sign the server's certificate.
    let other = TempDir::new("cli-other-ca");
    let wrong = write(other.path(), "ca.pem", &pki().ca_cert_pem);
    cli.clone()
        .env("KES_CA", &wrong)
        .fails(&["key", "ls"], "cannot verify the server's certificate");

    cli.clone()
        .without("KES_API_KEY")
        .fails(&["key", "ls"], "no credentials");
    cli.clone()
        .env("KES_API_KEY", "kes:v1:AAAA")
        .fails(&["key", "ls"], "invalid API key");
    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    cli.clone()
        .env("KES_SERVER", &format!("127.0.0.1:{port}"))
        .fails(&["status"], "cannot reach the server");

    // Someone else's API key: authenticated, but not allowed.
    let stranger = cli.ok(&["identity", "new"]);
    let stranger_key = field(&stranger, "API key:");
    cli.clone().env("KES_API_KEY", &stranger_key).fails(
        &["key", "create", "nope"],
        "not authorized: insufficient permissions",
    );
}

#[test]
fn certificate_files_and_a_real_ca() {
    // The harness's server: a CA-signed server certificate, the admin is a CA-signed ECDSA
    // client certificate we pass as files.
    let env = Env::new("cli-certs");
    let server = env.start();
    let dir = env.tmp.path();
    let admin = &pki().admin;
    let cert = write(dir, "admin.crt", &pem("CERTIFICATE", &admin.chain[0]));
    let key = write(dir, "admin.key", &pem("PRIVATE KEY", &admin.key_der));
    let cli = Cli::new()
        .env("KES_SERVER", &server.addr.to_string())
        .env("KES_CLIENT_CERT", &cert)
        .env("KES_CLIENT_KEY", &key)
        .env("KES_CA", dir.join("ca.pem").to_str().unwrap());

    let me = cli.ok(&["identity", "info"]);
    assert_eq!(field(&me, "Identity"), admin.identity);
    assert_eq!(field(&me, "Admin"), "yes");
    cli.ok(&["key", "create", "from-files"]);
    assert_eq!(cli.ok(&["key", "ls"]), "from-files\n");
    assert_eq!(
        cli.ok(&["identity", "of", &cert]).trim(),
        admin.identity.as_str()
    );
    cli.clone()
        .without("KES_CLIENT_KEY")
        .fails(&["key", "ls"], "KES_CLIENT_KEY is not");

    // The API key wins over certificate files when both are set.
    let other = cli.ok(&["identity", "new"]);
    cli.clone()
        .env("KES_API_KEY", &field(&other, "API key:"))
        .fails(&["key", "ls"], "not authorized");
}

#[test]
fn status_lines() {
    let server = DevServer::start();
    let cli = server.cli();
    let out = cli.ok(&["status"]);
    assert_eq!(field(&out, "Endpoint"), format!("https://{}", server.addr));
    assert_eq!(field(&out, "Version"), env!("CARGO_PKG_VERSION"));
    assert!(field(&out, "Uptime").ends_with('s'));
    assert!(field(&out, "Keystore").starts_with("ok"));
    let api = cli.ok(&["status", "--api"]);
    let header = api.lines().next().unwrap();
    assert!(header.starts_with("METHOD") && header.contains("PATH"));
    assert!(api.lines().any(
        |l| l.split_whitespace().collect::<Vec<_>>() == ["PUT", "/v1/key/create/", "0", "15s"]
    ));
}

// ---------------------------------------------------------------------------------------
// Offline identity tools (vectors: kes-vectors.md §C, §D1)
// ---------------------------------------------------------------------------------------

const ROOT_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBKDCB26ADAgECAhB6vebGMUfKnmBKyqoApRSOMAUGAytlcDAbMRkwFwYDVQQD
DBByb290QHBsYXkubWluLmlvMB4XDTIwMDQzMDE1MjIyNVoXDTI1MDQyOTE1MjIy
NVowGzEZMBcGA1UEAwwQcm9vdEBwbGF5Lm1pbi5pbzAqMAUGAytlcAMhALzn735W
fmSH/ghKs+4iPWziZMmWdiWr/sqvqeW+WwSxozUwMzAOBgNVHQ8BAf8EBAMCB4Aw
EwYDVR0lBAwwCgYIKwYBBQUHAwIwDAYDVR0TAQH/BAIwADAFBgMrZXADQQDZOrGK
b2ATkDlu2pTcP3LyhSBDpYh7V4TvjRkBTRgjkacCzwFLm+mh+7US8V4dBpIDsJ4u
uWoF0y6vbLVGIlkG
-----END CERTIFICATE-----
";
const ROOT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEID9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc
-----END PRIVATE KEY-----
";
const ROOT_IDENTITY: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
const ROOT_API_KEY: &str = "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc";

#[test]
fn identity_of_vectors() {
    let cli = Cli::new();
    let vectors = [
        (
            "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs",
            "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
        ),
        (
            "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw",
            "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb",
        ),
        (
            "kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ",
            "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
        ),
        (ROOT_API_KEY, ROOT_IDENTITY),
        (
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
            "dd4f4ea7208c5bbd56ce43f9b0717100b079d835fd09db329c9d15f8e36ad544",
        ),
    ];
    for (key, identity) in vectors {
        assert_eq!(cli.ok(&["identity", "of", key]), format!("{identity}\n"));
    }
    cli.fails(
        &[
            "identity",
            "of",
            "kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW",
        ],
        "kes: invalid API key: unsupported type",
    );

    let dir = TempDir::new("cli-of");
    let cert = write(dir.path(), "root.cert", ROOT_CERT);
    let key = write(dir.path(), "root.key", ROOT_KEY);
    assert_eq!(
        cli.ok(&["identity", "of", &cert]),
        format!("{ROOT_IDENTITY}\n")
    );
    assert_eq!(
        cli.ok(&["identity", "of", &key]),
        format!("{ROOT_API_KEY}\n")
    );
    let junk = write(dir.path(), "junk.txt", "hello\n");
    cli.fails(&["identity", "of", &junk], "neither a kes:v1: API key");
    cli.fails(
        &[
            "identity",
            "of",
            dir.path().join("missing").to_str().unwrap(),
        ],
        "cannot read",
    );
}

#[test]
fn identity_new_writes_a_usable_key_pair() {
    let cli = Cli::new();
    let out = cli.ok(&["identity", "new"]);
    let api_key = field(&out, "API key:");
    let identity = field(&out, "Identity:");
    assert!(
        api_key.starts_with("kes:v1:") && api_key.len() == 51,
        "{api_key}"
    );
    assert_eq!(cli.ok(&["identity", "of", &api_key]).trim(), identity);

    let dir = TempDir::new("cli-new");
    let key = dir.path().join("client.key");
    let cert = dir.path().join("client.cert");
    let (key_s, cert_s) = (key.to_str().unwrap(), cert.to_str().unwrap());
    let out = cli.ok(&[
        "identity",
        "new",
        "--key",
        key_s,
        "--cert",
        cert_s,
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
        "--expiry",
        "48h",
        "my-app",
    ]);
    let api_key = field(&out, "API key:");
    let identity = field(&out, "Identity:");
    assert_eq!(cli.ok(&["identity", "of", cert_s]).trim(), identity);
    assert_eq!(cli.ok(&["identity", "of", key_s]).trim(), api_key);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is readable by others");
    }
    let der = {
        let (_, block) =
            x509_parser::pem::parse_x509_pem(std::fs::read(&cert).unwrap().as_slice()).unwrap();
        block.contents
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(parsed.subject().to_string(), "CN=my-app");
    let validity = parsed.validity();
    let hours = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 3600;
    assert_eq!(hours, 48);
    let san = parsed.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names.len(), 2);

    // Existing files are kept unless -f.
    cli.fails(
        &["identity", "new", "--key", key_s, "--cert", cert_s],
        "already exists",
    );
    let again = cli.ok(&["identity", "new", "-f", "--key", key_s, "--cert", cert_s]);
    assert_eq!(
        cli.ok(&["identity", "of", key_s]).trim(),
        field(&again, "API key:")
    );
    cli.fails(
        &["identity", "new", "--key", key_s],
        "--key and --cert go together",
    );

    // The written files authenticate against a server.
    let server = DevServer::start();
    let by_files = Cli::new()
        .env("KES_SERVER", &server.addr)
        .env("KES_CLIENT_CERT", cert_s)
        .env("KES_CLIENT_KEY", key_s)
        .env("KES_CA", server.file("server.cert").to_str().unwrap());
    // Authenticated as the new identity, which the server knows no policy for.
    by_files.fails(&["key", "ls"], "not authorized: insufficient permissions");
}

// ---------------------------------------------------------------------------------------
// Policies, identities, secrets, enclaves
// ---------------------------------------------------------------------------------------

#[test]
fn policies_and_identities() {
    let server = DevServer::start();
    let admin = server.cli();
    let dir = TempDir::new("cli-policy");
    let file = write(
        dir.path(),
        "app.json",
        r#"{"allow": ["/v1/key/create/app-*", "/v1/key/generate/app-*", "/v1/key/describe/*"],
            "deny": ["/v1/key/describe/app-secret"]}"#,
    );
    assert_eq!(
        admin.ok(&["policy", "create", "app", &file]),
        "created policy app\n"
    );
    admin.fails(&["policy", "create", "app", &file], "policy already exists");
    assert_eq!(admin.ok(&["policy", "ls"]), "app\n");
    assert_eq!(field(&admin.ok(&["policy", "info", "app"]), "Name"), "app");
    let shown = json(&admin.ok(&["policy", "show", "app", "--json"]));
    assert_eq!(
        shown["allow"],
        serde_json::json!({"/v1/key/create/app-*": {}, "/v1/key/generate/app-*": {}, "/v1/key/describe/*": {}})
    );
    assert_eq!(
        shown["deny"],
        serde_json::json!({"/v1/key/describe/app-secret": {}})
    );
    let human = admin.ok(&["policy", "show", "app"]);
    assert!(
        human.starts_with("Allow  /v1/key/create/app-*\n"),
        "{human}"
    );

    // A new identity gets the policy; it may do what the policy allows and nothing else.
    let new = admin.ok(&["identity", "new"]);
    let (app_key, app_id) = (field(&new, "API key:"), field(&new, "Identity:"));
    admin.ok(&["policy", "assign", "app", &app_id]);
    let app = admin.clone().env("KES_API_KEY", &app_key);
    app.ok(&["key", "create", "app-1"]);
    app.ok(&["key", "dek", "app-1"]);
    app.fails(&["key", "create", "other"], "not authorized");
    app.fails(&["key", "rm", "app-1"], "not authorized");
    let me = app.ok(&["identity", "info"]);
    assert_eq!(field(&me, "Identity"), app_id);
    assert_eq!(field(&me, "Policy"), "app");
    assert!(me.contains("/v1/key/create/app-*"));

    let described = admin.ok(&["identity", "info", &app_id]);
    assert_eq!(field(&described, "Policy"), "app");
    assert!(admin.ok(&["identity", "ls"]).lines().any(|l| l == app_id));
    let listed = json_lines(&admin.ok(&["identity", "ls", "--json"]));
    assert!(listed.iter().any(|v| v["identity"] == app_id.as_str()));

    // `identity create` with a TTL.
    let other = field(&admin.ok(&["identity", "new"]), "Identity:");
    admin.ok(&[
        "identity", "create", "--policy", "app", "--ttl", "1h", &other,
    ]);
    let info = json(&admin.ok(&["identity", "info", &other, "--json"]));
    assert_eq!(info["policy"], "app");
    assert_eq!(info["ttl"], "1h0m0s");
    admin.fails(
        &["identity", "create", &other],
        "an identity needs --policy NAME (or --admin)",
    );
    admin.fails(
        &[
            "identity", "create", "--policy", "app", "--ttl", "soon", &other,
        ],
        "invalid duration 'soon'",
    );

    assert_eq!(
        admin.ok(&["identity", "rm", &other]),
        format!("deleted identity {other}\n")
    );
    admin.fails(&["identity", "info", &other], "identity does not exist");
    admin.ok(&["policy", "rm", "app"]);
    admin.fails(&["policy", "info", "app"], "policy does not exist");
    assert_eq!(admin.ok(&["policy", "ls"]), "");
}

#[test]
fn secrets() {
    let server = DevServer::start();
    let cli = server.cli();
    assert_eq!(
        cli.ok(&["secret", "create", "db-password", "hunter2"]),
        "created secret db-password\n"
    );
    cli.fails(
        &["secret", "create", "db-password", "again"],
        "secret already exists",
    );
    assert_eq!(cli.ok(&["secret", "show", "db-password"]), "hunter2\n");
    let read = json(&cli.ok(&["secret", "show", "db-password", "--json"]));
    assert_eq!(read["secret"], B64.encode("hunter2"));
    assert_eq!(
        field(&cli.ok(&["secret", "info", "db-password"]), "Name"),
        "db-password"
    );
    assert_eq!(cli.ok(&["secret", "ls"]), "db-password\n");
    assert_eq!(
        json_lines(&cli.ok(&["secret", "ls", "--json"])),
        [serde_json::json!({"name": "db-password"})]
    );

    // From stdin.
    let mut child = cli
        .command(&["secret", "create", "from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"line one\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(cli.ok(&["secret", "show", "from-stdin"]), "line one\n");

    cli.ok(&["secret", "rm", "db-password", "from-stdin"]);
    cli.fails(&["secret", "show", "db-password"], "secret does not exist");
    assert_eq!(cli.ok(&["secret", "ls"]), "");
}

#[test]
fn enclaves() {
    let server = DevServer::start();
    let cli = server.cli();
    assert_eq!(
        cli.ok(&["enclave", "create", "tenant-1"]),
        "created enclave tenant-1\n"
    );
    cli.fails(&["enclave", "create", "tenant-1"], "enclave already exists");
    assert_eq!(
        field(&cli.ok(&["enclave", "info", "tenant-1"]), "Name"),
        "tenant-1"
    );
    assert!(cli.ok(&["enclave", "ls"]).lines().any(|l| l == "tenant-1"));

    // Keys live in their enclave: -e or KES_ENCLAVE.
    cli.ok(&["key", "create", "shared-name"]);
    cli.ok(&["key", "create", "tenant-key", "-e", "tenant-1"]);
    assert_eq!(cli.ok(&["key", "ls", "-e", "tenant-1"]), "tenant-key\n");
    assert_eq!(
        cli.clone()
            .env("KES_ENCLAVE", "tenant-1")
            .ok(&["key", "ls"]),
        "tenant-key\n"
    );
    assert_eq!(cli.ok(&["key", "ls"]), "shared-name\n");
    cli.fails(&["key", "info", "tenant-key"], "key does not exist");

    cli.ok(&["enclave", "rm", "tenant-1"]);
    cli.fails(&["enclave", "info", "tenant-1"], "enclave does not exist");
}

// ---------------------------------------------------------------------------------------
// Log streams
// ---------------------------------------------------------------------------------------

/// Starts `kes-node log ARGS` and returns it with a channel of its stdout lines.
fn follow(cli: &Cli, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = cli
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `needle`, creating keys (to make events) meanwhile.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, poke: impl Fn()) -> String {
    for _ in 0..100 {
        poke();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!("no log line containing {needle:?}");
}

#[test]
fn log_streams_audit_events() {
    let server = DevServer::start();
    let cli = server.cli();
    let (mut json_log, json_rx) = follow(&cli, &["log", "--audit", "--json"]);
    let (mut human_log, human_rx) = follow(&cli, &["log"]);
    let n = std::sync::atomic::AtomicUsize::new(0);
    let poke = || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cli.ok(&["key", "create", &format!("logged-{i}")]);
    };
    let event: serde_json::Value =
        serde_json::from_str(&wait_for(&json_rx, "/v1/key/create/logged-", poke)).unwrap();
    assert_eq!(event["response"]["code"], 200);
    assert!(event["request"]["path"]
        .as_str()
        .unwrap()
        .starts_with("/v1/key/create/logged-"));
    let row = wait_for(&human_rx, "/v1/key/create/logged-", poke);
    assert!(row.contains(" 200 "), "{row}");
    let _ = json_log.kill();
    let _ = human_log.kill();
    let _ = json_log.wait();
    let _ = human_log.wait();

    cli.fails(&["log", "--audit", "--error"], "exclude each other");
}

#[test]
fn bench_counts_requests_and_cleans_up() {
    let server = DevServer::start();
    let cli = server.cli();
    // A request budget: exactly that many answered, none failed.
    for op in ["version", "generate", "encrypt", "decrypt", "hmac"] {
        let r = json(&cli.ok(&["bench", "--op", op, "-c", "3", "-n", "40", "--json"]));
        assert_eq!(r["requests"], 40, "{op}: {r}");
        assert_eq!(r["errors"], 0, "{op}: {r}");
        assert!(r["p50_ms"].as_f64().unwrap() <= r["p99_ms"].as_f64().unwrap());
        assert!(r["p99_ms"].as_f64().unwrap() <= r["max_ms"].as_f64().unwrap());
    }
    // create-delete: two requests per operation, and no key left behind.
    let r = json(&cli.ok(&[
        "bench",
        "--op",
        "create-delete",
        "-c",
        "2",
        "-n",
        "15",
        "--json",
    ]));
    assert_eq!(
        (r["requests"].clone(), r["errors"].clone()),
        (30.into(), 0.into())
    );
    assert_eq!(cli.ok(&["key", "ls"]), "bench-key\n");
    // A fixed time, and the text output.
    let out = cli.ok(&["bench", "--op", "version", "-c", "1", "--seconds", "1"]);
    assert!(
        out.starts_with("version x1: ") && out.contains(" 0 errors"),
        "{out}"
    );
    cli.fails(&["bench", "--op", "nope"], "unknown operation 'nope'");
}

/// `openssl s_client` against `server` with the admin's certificate, sending `request`;
/// `session` is read (-sess_in) if it exists, else written (-sess_out).
fn s_client(server: &DevServer, session: &Path, request: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &server.addr, "-tls1_3", "-ign_eof"])
        .arg("-cert")
        .arg(server.file("admin.cert"))
        .arg("-key")
        .arg(server.file("admin.key"))
        .arg(if session.exists() {
            "-sess_in"
        } else {
            "-sess_out"
        })
        .arg(session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .expect("openssl s_client (apt-get install openssl)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tls_sessions_resume_with_the_same_identity() {
    let server = DevServer::start();
    let admin = server.cli().ok(&["identity", "of", &server.api_key()]);
    let session = server.file("tls-session.pem");
    let describe =
        "GET /v1/identity/self/describe HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n";
    // A full handshake; the server's session ticket arrives with the answer.
    let first = s_client(&server, &session, describe);
    assert!(first.contains("New, TLSv1.3"), "{first}");
    assert!(first.contains(admin.trim()), "{first}");
    assert!(session.exists(), "no session was saved:\n{first}");
    // Resumed: no certificate is sent again, yet the server knows the same identity (admin).
    let second = s_client(&server, &session, describe);
    assert!(second.contains("Reused, TLSv1.3"), "{second}");
    assert!(second.contains(admin.trim()), "{second}");
    assert!(second.contains(r#""admin":true"#), "{second}");
}

// ---------------------------------------------------------------------------------------
// Backups
// ---------------------------------------------------------------------------------------

/// A backup larger than any response body the client buffers (16 MiB) streams through
/// `kes-node cluster backup` into a file, restores into a new directory, and a server there
/// serves every secret byte for byte.
#[test]
fn a_large_backup_streams_to_a_file_and_restores() {
    use std::io::Write as _;
    let server = DevServer::start();
    let cli = server.cli();
    let value = |i: usize| -> String {
        (0..600_000)
            .map(|j| char::from(b'a' + ((i * 7 + j / 1000) % 26) as u8))
            .collect()
    };
    const SECRETS: usize = 32;
    for i in 0..SECRETS {
        let mut child = cli
            .command(&["secret", "create", &format!("big-{i}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value(i).as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "secret create big-{i}");
    }
    cli.ok(&["key", "create", "k1"]);
    let file = server.file("backup.bin");
    let out = cli.ok(&["cluster", "backup", file.to_str().unwrap()]);
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 16 << 20, "backup of {size} bytes: {out}");
    assert!(out.contains(&size.to_string()), "{out}");
    assert!(
        !server.file("backup.partial").exists(),
        "the partial download was renamed"
    );

    let restored = TempDir::new("cli-restored");
    let hsm_key = std::fs::read_to_string(server.file("hsm.key")).unwrap();
    std::fs::write(restored.path().join("hsm.key"), &hsm_key).unwrap();
    let data = restored.path().to_str().unwrap().to_owned();
    let out = Cli::new().env("KES_HSM_KEY", hsm_key.trim()).ok(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        &data,
    ]);
    assert!(out.contains("1 keys"), "{out}");
    // A truncated copy is refused.
    let cut = server.file("cut.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let other = TempDir::new("cli-restored-cut");
    Cli::new().env("KES_HSM_KEY", hsm_key.trim()).fails(
        &[
            "restore",
            "--from",
            cut.to_str().unwrap(),
            other.path().to_str().unwrap(),
        ],
        "not a kes-rs backup",
    );
    drop(server);

    let again = DevServer::start_in(restored);
    let cli = again.cli();
    for i in [0, SECRETS / 2, SECRETS - 1] {
        let shown = cli.ok(&["secret", "show", &format!("big-{i}")]);
        assert!(
            shown.trim_end() == value(i),
            "secret big-{i} differs after restore"
        );
    }
}
