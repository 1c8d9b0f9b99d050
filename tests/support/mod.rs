//! Shared harness for the workspace-level integration tests: real certificates (rcgen), the
//! real `kes-node` binary as a child process, real TLS sockets (rustls) and a small blocking
//! HTTP/1.1 client (httparse) that keeps its connection for keep-alive and pipelining tests.
#![allow(dead_code)]

pub mod cluster;
pub mod hsm;
pub mod moto;
pub mod swtpm;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sha2::{Digest, Sha256};

/// The `kes-node` binary built by cargo for this test target.
pub const KES_NODE: &str = env!("CARGO_BIN_EXE_kes-node");

/// The SoftHSM key every test server uses unless it says otherwise (spec `kes-vectors.md` §F).
pub const HSM_KEY: &str = "kes:v1:aes256:H2BFEgK48Mr4KfuBkxUFJJJNn8f+J0ugpn43ZYJfw30=";
/// A different, well-formed SoftHSM key.
pub const OTHER_HSM_KEY: &str = "kes:v1:aes256:OBwNvb9qloQi235KindURBuSqArJzWN6JaYKUZHIyPY=";

/// How long we wait for the server to print its listening line or to exit.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read/write timeout of the test client: a hung server fails a test instead of
/// hanging the suite.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// A client credential: the chain sent in the handshake and the leaf's private key.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    /// Lowercase hex SHA-256 of the first certificate's SubjectPublicKeyInfo DER.
    pub identity: String,
}

impl ClientCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Every certificate the tests need, generated once per test process.
pub struct Pki {
    pub ca_cert_der: CertificateDer<'static>,
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// Signed by the CA; its identity is the admin identity of every test server.
    pub admin: ClientCert,
    /// Signed by the CA, not the admin.
    pub other: ClientCert,
    /// Signed by the CA, not the admin.
    pub other2: ClientCert,
    /// Self-signed by an unrelated CA: unknown to the server.
    pub foreign: ClientCert,
    /// A self-signed certificate with `CA:TRUE` as the only certificate.
    pub ca_only: ClientCert,
    /// Two leaf certificates (both signed by the CA) in one chain; the key is the first's.
    pub two_leaves: ClientCert,
}

/// Lowercase hex SHA-256 over the DER SubjectPublicKeyInfo of `cert` (spec §2.1).
pub fn identity_of(cert: &[u8]) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).expect("parse certificate");
    hex(&Sha256::digest(parsed.tbs_certificate.subject_pki.raw))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh self-signed client certificate (the server does not verify client chains without
/// `tls.auth: on`, so its identity is all that counts): a new identity for each call.
pub fn self_signed_client(cn: &str) -> ClientCert {
    let key = KeyPair::generate().expect("key pair");
    let params = leaf_params(cn, ExtendedKeyUsagePurpose::ClientAuth, Vec::new());
    let cert = params.self_signed(&key).expect("self-signed cert");
    let der = cert.der().clone();
    ClientCert {
        identity: identity_of(&der),
        chain: vec![der],
        key_der: key.serialize_der(),
    }
}

fn leaf_params(cn: &str, eku: ExtendedKeyUsagePurpose, sans: Vec<String>) -> CertificateParams {
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Pki {
    fn generate() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params("kes-rs test CA").self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server = leaf_params(
            "kes-rs test server",
            ExtendedKeyUsagePurpose::ServerAuth,
            vec!["127.0.0.1".into(), "localhost".into()],
        )
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();

        let client = |cn: &str| -> (rcgen::Certificate, KeyPair) {
            let key = KeyPair::generate().unwrap();
            let cert = leaf_params(cn, ExtendedKeyUsagePurpose::ClientAuth, vec![])
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert, key)
        };
        let single = |cert: rcgen::Certificate, key: KeyPair| -> ClientCert {
            let der = cert.der().clone();
            ClientCert {
                identity: identity_of(&der),
                chain: vec![der],
                key_der: key.serialize_der(),
            }
        };

        let (c, k) = client("admin");
        let admin = single(c, k);
        let (c, k) = client("other");
        let other = single(c, k);
        let (c, k) = client("other2");
        let other2 = single(c, k);

        let foreign_ca_key = KeyPair::generate().unwrap();
        let foreign_ca = ca_params("foreign CA")
            .self_signed(&foreign_ca_key)
            .unwrap();
        let foreign_key = KeyPair::generate().unwrap();
        let foreign_cert = leaf_params("foreign", ExtendedKeyUsagePurpose::ClientAuth, vec![])
            .signed_by(&foreign_key, &foreign_ca, &foreign_ca_key)
            .unwrap();
        let foreign = single(foreign_cert, foreign_key);

        let ca_only_key = KeyPair::generate().unwrap();
        let ca_only_cert = ca_params("a CA as client")
            .self_signed(&ca_only_key)
            .unwrap();
        let ca_only = single(ca_only_cert, ca_only_key);

        let (c1, k1) = client("leaf one");
        let (c2, _k2) = client("leaf two");
        let two_leaves = ClientCert {
            identity: identity_of(c1.der()),
            chain: vec![c1.der().clone(), c2.der().clone()],
            key_der: k1.serialize_der(),
        };

        Pki {
            ca_cert_der: ca.der().clone(),
            ca_cert_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            admin,
            other,
            other2,
            foreign,
            ca_only,
            two_leaves,
        }
    }
}

/// The process-wide certificates.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::generate)
}

// ---------------------------------------------------------------------------------------
// Temporary directories and server processes
// ---------------------------------------------------------------------------------------

/// A unique directory under the system temp dir, removed on drop (kept when the env var
/// `KES_TEST_KEEP` is set, for debugging).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("kes-rs-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KES_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Where the HSM key comes from when a server starts.
#[derive(Clone, Debug)]
pub enum HsmKey {
    /// `KES_HSM_KEY=<key>` in the environment (and no `hsm:` in the config).
    Env(String),
    /// `hsm.key` in the config file (and no `KES_HSM_KEY`).
    Config(String),
    /// Neither.
    Missing,
    /// This `hsm:` section, verbatim (e.g. a PKCS#11 token), and no `KES_HSM_KEY`.
    Yaml(String),
}

/// A test environment: temp dir with certificates and a config file, plus a data dir.
pub struct Env {
    pub tmp: TempDir,
    pub config: PathBuf,
    /// The `DIR` argument: holds `kes.db`.
    pub data: PathBuf,
    pub hsm: HsmKey,
    /// Extra YAML appended to the `tls:` section (e.g. `  ca: /path`).
    tls_extra: String,
    /// Extra top-level YAML appended to the config.
    extra: String,
    /// `admin.identity` (default: the identity of `pki().admin`).
    admin: String,
    /// Where the last server of this environment listened. A node's address is recorded in
    /// `DIR/.cluster.json`, so a restart listens there again (the first start binds an
    /// ephemeral port).
    last_addr: Mutex<Option<SocketAddr>>,
    /// Start `kes-node edge` (stateless, keys in the config's `keystore:`) instead of `server`.
    edge: bool,
    /// Extra environment variables of the server process (`set_env`).
    envs: Vec<(String, String)>,
    /// What runs in place of `kes-node` (`set_launcher`): e.g. `setpriv ... -- kes-node`.
    launcher: Vec<std::ffi::OsString>,
    /// The server binary (default [`KES_NODE`]; `set_binary`).
    binary: PathBuf,
    /// `setrlimit(RLIMIT_AS)` of the server process, in bytes (`limit_address_space`).
    address_space: Option<u64>,
    /// `setrlimit(RLIMIT_NOFILE)` of the server process (`limit_open_files`).
    open_files: Option<u64>,
    /// `--workers` (`set_workers`; default: `KES_TEST_WORKERS`, see [`workers_args`]).
    workers: Option<usize>,
}

impl Env {
    /// A fresh environment with the default HSM key in `KES_HSM_KEY`.
    pub fn new(tag: &str) -> Env {
        Env::with_hsm(tag, HsmKey::Env(HSM_KEY.to_string()))
    }

    pub fn with_hsm(tag: &str, hsm: HsmKey) -> Env {
        let tmp = TempDir::new(tag);
        let pki = pki();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("server.cert"), &pki.server_cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &pki.server_key_pem).unwrap();
        std::fs::write(dir.join("ca.pem"), &pki.ca_cert_pem).unwrap();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let env = Env {
            config: dir.join("config.yml"),
            data,
            tmp,
            hsm,
            tls_extra: String::new(),
            extra: String::new(),
            admin: pki.admin.identity.clone(),
            last_addr: Mutex::new(None),
            edge: false,
            envs: Vec::new(),
            launcher: Vec::new(),
            binary: PathBuf::from(KES_NODE),
            address_space: None,
            open_files: None,
            workers: None,
        };
        env.write_config();
        env
    }

    /// An environment for `kes-node edge`: add a `keystore:` section with `append_config`.
    pub fn edge(tag: &str) -> Env {
        let mut env = Env::with_hsm(tag, HsmKey::Missing);
        env.edge = true;
        env
    }

    /// `--workers n` for the servers started from now on, whatever `KES_TEST_WORKERS` says.
    pub fn set_workers(&mut self, n: usize) {
        self.workers = Some(n);
    }

    /// Sets an environment variable of the servers started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// Starts servers as `launcher[0] launcher[1..] <kes-node arguments>` (the launcher must
    /// `exec` the binary it names last, so that the PID is the server's).
    pub fn set_launcher<S: Into<std::ffi::OsString>>(
        &mut self,
        launcher: impl IntoIterator<Item = S>,
    ) {
        self.launcher = launcher.into_iter().map(Into::into).collect();
    }

    /// Sets `tls.ca` to the test CA and `tls.auth: on`: client certificates are then verified.
    pub fn verify_client_certs(&mut self) {
        self.tls_extra = format!(
            "  ca: {}\n  auth: on\n",
            self.tmp.path().join("ca.pem").display()
        );
        self.write_config();
    }

    /// Sets `tls.ca` to the test CA only (`tls.auth` stays off: nothing is verified).
    pub fn set_tls_ca(&mut self) {
        self.tls_extra = format!("  ca: {}\n", self.tmp.path().join("ca.pem").display());
        self.write_config();
    }

    /// Runs servers from `binary` instead of this build's `kes-node`.
    pub fn set_binary(&mut self, binary: PathBuf) {
        self.binary = binary;
    }

    /// Starts servers with an address-space limit (`RLIMIT_AS`) of `bytes`: allocations beyond
    /// it fail, as they would on a machine out of memory.
    pub fn limit_address_space(&mut self, bytes: u64) {
        self.address_space = Some(bytes);
    }

    /// Starts servers with at most `n` open files (`RLIMIT_NOFILE`), as many systems'
    /// defaults have it.
    pub fn limit_open_files(&mut self, n: u64) {
        self.open_files = Some(n);
    }

    /// Sets `admin.identity`.
    pub fn set_admin(&mut self, identity: &str) {
        self.admin = identity.to_string();
        self.write_config();
    }

    /// Appends top-level YAML (e.g. an `api:` section) to the config file.
    pub fn append_config(&mut self, yaml: &str) {
        self.extra.push_str(yaml);
        self.write_config();
    }

    pub fn set_hsm(&mut self, hsm: HsmKey) {
        self.hsm = hsm;
        self.write_config();
    }

    fn write_config(&self) {
        let dir = self.tmp.path();
        let mut yaml = format!(
            "version: v1\naddress: 127.0.0.1:0\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\n{}",
            self.admin,
            dir.join("server.key").display(),
            dir.join("server.cert").display(),
            self.tls_extra,
        );
        match &self.hsm {
            HsmKey::Config(key) => yaml.push_str(&format!("hsm:\n  key: \"{key}\"\n")),
            HsmKey::Yaml(section) => yaml.push_str(section),
            HsmKey::Env(_) | HsmKey::Missing => {}
        }
        yaml.push_str(&self.extra);
        std::fs::write(&self.config, yaml).unwrap();
    }

    pub fn db_path(&self) -> PathBuf {
        self.data.join("kes.db")
    }

    /// The `--addr` of the next start: the last server's address, else an ephemeral port.
    pub fn next_addr(&self) -> String {
        match *self.last_addr.lock().unwrap() {
            Some(addr) => addr.to_string(),
            None => "127.0.0.1:0".to_string(),
        }
    }

    fn command(&self, addr: &str) -> Command {
        let mut cmd = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            None => Command::new(&self.binary),
        };
        let limits: Vec<(libc::__rlimit_resource_t, u64)> = [
            (libc::RLIMIT_AS, self.address_space),
            (libc::RLIMIT_NOFILE, self.open_files),
        ]
        .into_iter()
        .filter_map(|(r, v)| Some((r, v?)))
        .collect();
        if !limits.is_empty() {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit(2) is async-signal-safe; it only reads the limits, which live
            // in the closure.
            unsafe {
                cmd.pre_exec(move || {
                    for &(resource, value) in &limits {
                        let limit = libc::rlimit {
                            rlim_cur: value as libc::rlim_t,
                            rlim_max: value as libc::rlim_t,
                        };
                        if libc::setrlimit(resource, &limit) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        if self.edge {
            cmd.arg("edge")
                .arg("--config")
                .arg(&self.config)
                .arg("--addr")
                .arg(addr);
            cmd.args(workers_args(self.workers));
        } else {
            cmd.arg("server")
                .arg("--config")
                .arg(&self.config)
                .arg("--addr")
                .arg(addr)
                .args(workers_args(self.workers))
                .arg(&self.data);
        }
        cmd.env_remove("KES_HSM_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let HsmKey::Env(key) = &self.hsm {
            cmd.env("KES_HSM_KEY", key);
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the server and waits for its listening line; panics (with the server's stderr)
    /// if it exits or does not print the line in time.
    pub fn start(&self) -> Server {
        match self.try_start() {
            Ok(server) => server,
            Err(exit) => panic!(
                "kes-node did not start: {:?}\nstdout:\n{}\nstderr:\n{}",
                exit.status, exit.stdout, exit.stderr
            ),
        }
    }

    /// Starts the server; `Err` with its output if it exits before listening.
    pub fn try_start(&self) -> Result<Server, Exited> {
        self.try_start_on(&self.next_addr())
    }

    /// Starts the server with `--addr addr`.
    pub fn try_start_on(&self, addr: &str) -> Result<Server, Exited> {
        let mut child = self.command(addr).spawn().expect("spawn kes-node");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stderr.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
                let _ = done_tx.send(());
            });
            done_rx
        };
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let stdout_done = {
            let pipe = child.stdout.take().unwrap();
            let stdout = stdout.clone();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            stdout.lock().unwrap().push_str(&line);
                            if let Some(rest) = line.trim().strip_prefix("kes-node: listening on ")
                            {
                                if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                                    let _ = tx.send(addr);
                                }
                            }
                        }
                    }
                }
                let _ = done_tx.send(());
            });
            done_rx
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(20)) {
                *self.last_addr.lock().unwrap() = Some(addr);
                return Ok(Server {
                    child: Some(child),
                    addr,
                    stderr,
                    stdout,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Both pipe readers reach EOF: all of the output is in.
                let _ = stdout_done.recv_timeout(Duration::from_secs(2));
                let _ = stderr_done.recv_timeout(Duration::from_secs(2));
                let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
                let stdout = stdout.lock().unwrap().clone();
                return Err(Exited {
                    status: Some(status),
                    stdout,
                    stderr,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
                let stdout = stdout.lock().unwrap().clone();
                return Err(Exited {
                    status: None,
                    stdout,
                    stderr,
                });
            }
        }
    }
}

/// A server that exited before it listened (`status: None` = we killed it after a timeout).
#[derive(Debug)]
pub struct Exited {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// A running `kes-node server`; killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<String>>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// A connected client (handshake done) with the given certificate.
    pub fn client(&self, cert: &ClientCert) -> Client {
        Client::connect(self.addr, Some(cert), Tls::default())
            .unwrap_or_else(|err| panic!("connect to kes-node: {err}\n{}", self.stderr()))
    }

    /// A connected admin client.
    pub fn admin(&self) -> Client {
        self.client(&pki().admin)
    }

    /// Sends `signal` and waits for the exit status (panics after a timeout).
    pub fn signal(&mut self, signal: i32) -> ExitStatus {
        let child = self.child.as_mut().expect("server already stopped");
        // SAFETY: kill(2) on the pid of our own child process.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", child.id());
        let exited = wait_until(Duration::from_secs(15), Duration::from_millis(10), || {
            child.try_wait().unwrap().ok_or_else(|| "running".into())
        });
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
        exited.unwrap_or_else(|_| {
            panic!(
                "kes-node did not exit within 15 s of signal {signal}\nstderr:\n{}",
                self.stderr()
            )
        })
    }

    /// SIGTERM and wait; asserts a graceful exit (status 0).
    pub fn stop(&mut self) {
        let status = self.signal(libc::SIGTERM);
        assert!(
            status.success(),
            "kes-node exited with {status:?} on SIGTERM (expected 0)\nstderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// TLS + HTTP/1.1 client
// ---------------------------------------------------------------------------------------

/// TLS options of a client connection.
#[derive(Clone)]
pub struct Tls {
    /// Only TLS 1.2 (default: 1.2 and 1.3, 1.3 preferred).
    pub tls12_only: bool,
    pub alpn: Vec<Vec<u8>>,
}

impl Default for Tls {
    fn default() -> Tls {
        Tls {
            tls12_only: false,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }
}

pub fn client_config(cert: Option<&ClientCert>, tls: &Tls) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki().ca_cert_der.clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain.clone(), cert.key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls.alpn.clone();
    Arc::new(config)
}

/// One HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body arrived with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "response body is not JSON ({err}): {} {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// A base64 field of a JSON body, decoded.
    pub fn b64_field(&self, field: &str) -> Vec<u8> {
        let json = self.json();
        let s = json[field]
            .as_str()
            .unwrap_or_else(|| panic!("field {field:?} missing in {json}"));
        B64.decode(s)
            .unwrap_or_else(|err| panic!("field {field:?} is not base64 ({err}): {s:?}"))
    }

    /// The connection will be closed after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .map(|v| v.eq_ignore_ascii_case("close"))
            .unwrap_or(false)
            || self.version == 0
    }

    /// Asserts a KES error: status, `Content-Type: application/json`, and the exact body
    /// `{"message":"<msg>"\n}` (spec §1.4).
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        let want = kes_error_body(message);
        assert_eq!(
            (self.status, self.text()),
            (status, want),
            "unexpected response (headers {:?})",
            self.headers
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error content type (headers {:?})",
            self.headers
        );
    }

    /// Asserts 200 with an empty body (create/import/delete/ready).
    #[track_caller]
    pub fn assert_empty_ok(&self) {
        assert_eq!(
            (self.status, self.text()),
            (200, String::new()),
            "expected 200 with empty body (headers {:?})",
            self.headers
        );
        assert_eq!(
            self.header("content-length"),
            Some("0"),
            "{:?}",
            self.headers
        );
    }

    /// Asserts 200 with a JSON body and returns it.
    #[track_caller]
    pub fn assert_json_ok(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "expected 200, got body {:?}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{:?}",
            self.headers
        );
        assert!(
            self.body.ends_with(b"\n"),
            "JSON bodies end with a newline: {:?}",
            self.text()
        );
        self.json()
    }
}

/// The exact bytes of a KES error body (spec §1.4).
pub fn kes_error_body(message: &str) -> String {
    format!(
        "{{\"message\":{}\n}}",
        serde_json::to_string(message).unwrap()
    )
}

/// A blocking TLS client that keeps its connection.
pub struct Client {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    eof: bool,
    pub host: String,
}

impl Client {
    /// Connects and completes the TLS handshake.
    pub fn connect(addr: SocketAddr, cert: Option<&ClientCert>, tls: Tls) -> io::Result<Client> {
        let config = client_config(cert, &tls);
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        sock.set_nodelay(true)?;
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Client {
            stream,
            buf: Vec::new(),
            eof: false,
            host: addr.to_string(),
        })
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(|p| p.to_vec())
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }

    /// Writes raw bytes (a request or a part of one) and flushes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads more bytes into the buffer; false on EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                self.eof = true;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Waits up to `timeout` for the peer to close or send something; Ok(true) = closed
    /// (EOF), Ok(false) = bytes arrived or nothing happened. Never consumes a response.
    pub fn peer_closed_within(&mut self, timeout: Duration) -> io::Result<bool> {
        self.stream.sock.set_read_timeout(Some(timeout))?;
        let res = match self.fill() {
            Ok(more) => Ok(!more),
            Err(err)
                if err.kind() == io::ErrorKind::WouldBlock
                    || err.kind() == io::ErrorKind::TimedOut =>
            {
                Ok(false)
            }
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(err) => Err(err),
        };
        self.stream.sock.set_read_timeout(Some(IO_TIMEOUT))?;
        res
    }

    /// Bytes received but not yet consumed as part of a response.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Reads one response. `head` = the request was HEAD (no body follows).
    pub fn read_response_for(&mut self, head: bool) -> io::Result<Response> {
        let (mut resp, consumed) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let resp = Response {
                        version: parsed.version.unwrap_or(1),
                        status: parsed.code.unwrap_or(0),
                        reason: parsed.reason.unwrap_or("").to_string(),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: Vec::new(),
                        chunked: false,
                    };
                    break (resp, n);
                }
                Ok(httparse::Status::Partial) => {
                    if !self.fill()? {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "connection closed before a complete response header ({} bytes: {:?})",
                                self.buf.len(),
                                String::from_utf8_lossy(&self.buf)
                            ),
                        ));
                    }
                }
                Err(err) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "malformed response header ({err}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ))
                }
            }
        };
        self.buf.drain(..consumed);

        let no_body = head || resp.status / 100 == 1 || resp.status == 204 || resp.status == 304;
        let chunked = resp
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if no_body {
        } else if chunked {
            resp.chunked = true;
            resp.body = self.read_chunked()?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad Content-Length {len:?}"),
                )
            })?;
            while self.buf.len() < len {
                if !self.fill()? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("body cut short: {} of {len} bytes", self.buf.len()),
                    ));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            // No length: the body runs to the end of the connection.
            while self.fill()? {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_for(false)
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a chunked body",
                ));
            }
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if size == 0 {
                // Trailers until an empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if !self.fill()? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunk",
                    ));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Serializes a request with `Host` and (for a body or PUT/POST) `Content-Length`.
    pub fn build_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        build_request(&self.host, method, path, headers, body)
    }

    /// Sends a request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let req = self.build_request(method, path, headers, body);
        self.send_raw(&req)?;
        self.read_response_for(method == "HEAD")
    }

    /// Like `request` but panics on I/O errors.
    #[track_caller]
    pub fn must(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        match self.request(method, path, headers, body) {
            Ok(resp) => resp,
            Err(err) => panic!("{method} {path}: {err}"),
        }
    }

    #[track_caller]
    pub fn get(&mut self, path: &str) -> Response {
        self.must("GET", path, &[], None)
    }

    #[track_caller]
    pub fn delete(&mut self, path: &str) -> Response {
        self.must("DELETE", path, &[], None)
    }

    /// PUT without a body.
    #[track_caller]
    pub fn put(&mut self, path: &str) -> Response {
        self.must("PUT", path, &[], None)
    }

    /// PUT with raw body bytes.
    #[track_caller]
    pub fn put_body(&mut self, path: &str, body: &[u8]) -> Response {
        self.must("PUT", path, &[], Some(body))
    }

    #[track_caller]
    pub fn put_json(&mut self, path: &str, body: &serde_json::Value) -> Response {
        let bytes = serde_json::to_vec(body).unwrap();
        self.must(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            Some(&bytes),
        )
    }

    #[track_caller]
    pub fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Response {
        let bytes = serde_json::to_vec(body).unwrap();
        self.must(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(&bytes),
        )
    }

    // -- KES helpers (admin flows) -------------------------------------------------------

    #[track_caller]
    pub fn create_key(&mut self, name: &str) {
        self.put(&format!("/v1/key/create/{name}"))
            .assert_empty_ok();
    }

    #[track_caller]
    pub fn import_key(&mut self, name: &str, key: &[u8], cipher: &str) {
        self.put_json(
            &format!("/v1/key/import/{name}"),
            &serde_json::json!({"key": B64.encode(key), "cipher": cipher}),
        )
        .assert_empty_ok();
    }

    /// `(plaintext, ciphertext)` of a generated data key.
    #[track_caller]
    pub fn generate(&mut self, name: &str, context: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
        let body = match context {
            Some(ctx) => serde_json::json!({"context": B64.encode(ctx)}),
            None => serde_json::json!({}),
        };
        let resp = self.put_json(&format!("/v1/key/generate/{name}"), &body);
        resp.assert_json_ok();
        (resp.b64_field("plaintext"), resp.b64_field("ciphertext"))
    }

    #[track_caller]
    pub fn encrypt(&mut self, name: &str, plaintext: &[u8], context: Option<&[u8]>) -> Vec<u8> {
        let mut body = serde_json::json!({"plaintext": B64.encode(plaintext)});
        if let Some(ctx) = context {
            body["context"] = B64.encode(ctx).into();
        }
        let resp = self.put_json(&format!("/v1/key/encrypt/{name}"), &body);
        resp.assert_json_ok();
        resp.b64_field("ciphertext")
    }

    /// The raw decrypt response.
    #[track_caller]
    pub fn decrypt_resp(
        &mut self,
        name: &str,
        ciphertext: &[u8],
        context: Option<&[u8]>,
    ) -> Response {
        let mut body = serde_json::json!({"ciphertext": B64.encode(ciphertext)});
        if let Some(ctx) = context {
            body["context"] = B64.encode(ctx).into();
        }
        self.put_json(&format!("/v1/key/decrypt/{name}"), &body)
    }

    #[track_caller]
    pub fn decrypt(&mut self, name: &str, ciphertext: &[u8], context: Option<&[u8]>) -> Vec<u8> {
        let resp = self.decrypt_resp(name, ciphertext, context);
        resp.assert_json_ok();
        resp.b64_field("plaintext")
    }

    #[track_caller]
    pub fn hmac(&mut self, name: &str, message: &[u8]) -> Vec<u8> {
        let resp = self.put_json(
            &format!("/v1/key/hmac/{name}"),
            &serde_json::json!({"message": B64.encode(message)}),
        );
        resp.assert_json_ok();
        resp.b64_field("hmac")
    }

    #[track_caller]
    pub fn list(&mut self, pattern: &str) -> Vec<String> {
        let resp = self.get(&format!("/v1/key/list/{pattern}"));
        let json = resp.assert_json_ok();
        names_of(&json)
    }
}

/// The `names` of a key listing (`null` = empty).
pub fn names_of(json: &serde_json::Value) -> Vec<String> {
    match &json["names"] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().expect("name is a string").to_string())
            .collect(),
        other => panic!("names is not an array: {other}"),
    }
}

/// Serializes an HTTP/1.1 request.
pub fn build_request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    let mut have_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            have_len = true;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let needs_len = body.is_some() || matches!(method, "PUT" | "POST" | "PATCH");
    if needs_len && !have_len {
        req.push_str(&format!(
            "Content-Length: {}\r\n",
            body.map(|b| b.len()).unwrap_or(0)
        ));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// Encodes `body` as one chunk plus the terminating chunk.
pub fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if !body.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s)
        .unwrap_or_else(|err| panic!("not base64 ({err}): {s:?}"))
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Go's name for this machine's architecture (`GOARCH`).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    }
}

/// A `{"<field>":"AAAA…"}` body of exactly `len` bytes: `lead` spaces, the JSON value with
/// as many `A`s as fit in multiples of 4, then trailing spaces.
pub fn padded_json_body(field: &str, len: usize, lead: usize) -> Vec<u8> {
    let head = format!("{}{{\"{field}\":\"", " ".repeat(lead));
    let tail = "\"}";
    let n = (len - head.len() - tail.len()) / 4 * 4;
    let mut body = head.into_bytes();
    body.resize(body.len() + n, b'A');
    body.extend_from_slice(tail.as_bytes());
    body.resize(len, b' ');
    body
}

/// A self-signed Ed25519 client certificate for the key with this 32-byte seed, the way
/// `kes identity new` / kms-go `GenerateCertificate` make one for an API key (spec §2.4).
pub fn ed25519_client_cert(seed: &[u8], cn: &str) -> ClientCert {
    let mut pkcs8 = unhex("302e020100300506032b657004220420");
    pkcs8.extend_from_slice(seed);
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .expect("Ed25519 key from seed");
    let cert = leaf_params(cn, ExtendedKeyUsagePurpose::ClientAuth, vec![])
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    ClientCert {
        identity: identity_of(&der),
        chain: vec![der],
        key_der: pkcs8,
    }
}

/// Asks `check` every `every` until it answers `Ok` or `timeout` passes, then `Err` with the
/// last thing it saw (for the failure message). The one place where the harness sleeps
/// between looks at a server's state.
pub fn wait_until<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(format!("not within {timeout:?}; last seen: {last}"));
        }
        std::thread::sleep(every);
    }
}

/// `--workers N`: `forced` (a test that needs its count), else `KES_TEST_WORKERS=N` if set,
/// so that the suites run with 1 and with N event loops (neither: the server's default, one
/// per core).
pub fn workers_args(forced: Option<usize>) -> Vec<String> {
    match (forced, std::env::var("KES_TEST_WORKERS")) {
        (Some(n), _) => vec!["--workers".into(), n.to_string()],
        (None, Ok(n)) if !n.is_empty() => vec!["--workers".into(), n],
        _ => Vec::new(),
    }
}

/// A TLS server configuration with the test PKI's server certificate, no client
/// authentication and the given ALPN protocols: for fake servers (an upstream KES, a peer).
pub fn fake_server_tls(alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki().server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki().server_key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
