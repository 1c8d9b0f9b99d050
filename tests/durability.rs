//! Durability of a node's `kes.db` under a real full disk: a `kes-node server` whose data
//! directory is a small tmpfs (mounted by the test; it runs as root, as CI does), filled with a
//! filler file. Writes answer 507 and are never acknowledged without being stored, reads go on,
//! writes resume by themselves once space is freed, a node starts on a full disk and serves
//! reads, and everything acknowledged is there after a restart.
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::cluster::{poll, Cluster, ClusterOpts, ClusterView};
use support::{wait_until, Env, Server};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (these tests need root, as CI has): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: at.to_path_buf(),
        }
    }

    /// Writes a filler file until the disk is full (or `leave` bytes remain, roughly).
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5au8; 64 * 1024];
        loop {
            let free = free_bytes(&self.path);
            if free <= leave {
                break;
            }
            let n = block.len().min((free - leave) as usize).max(4096);
            if f.write_all(&block[..n]).is_err() {
                break; // Full.
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// An environment whose data directory is on a fresh 8 MiB tmpfs.
fn env_on_tmpfs(tag: &str, min_free: &str) -> (Env, Tmpfs) {
    let mut env = Env::new(tag);
    let fs = Tmpfs::mount(&env.tmp.path().join("mnt"), "8m");
    env.data = fs.path.join("data");
    std::fs::create_dir_all(&env.data).unwrap();
    env.append_config(&format!("store:\n  min_free: {min_free}\n"));
    (env, fs)
}

/// Creates `secret-<i>` (a 100 KB secret) until a write fails; returns the acknowledged names
/// and the failing response's status and message.
fn write_until_refused(server: &Server, from: usize) -> (Vec<String>, u16, String) {
    let mut c = server.admin();
    let value = base64_of(&vec![7u8; 100_000]);
    let mut acked = Vec::new();
    for i in from..from + 500 {
        let name = format!("secret-{i}");
        let resp = c.put_json(
            &format!("/v1/secret/create/{name}"),
            &serde_json::json!({ "secret": value }),
        );
        if resp.status != 200 {
            let message = resp.json()["message"].as_str().unwrap_or("").to_string();
            return (acked, resp.status, message);
        }
        acked.push(name);
    }
    panic!("500 secrets of 100 KB fit on an 8 MiB disk");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every name in `names` reads back, and the listing holds all of them.
#[track_caller]
fn assert_all_readable(server: &Server, names: &[String]) {
    let mut c = server.admin();
    for name in names {
        let resp = c.get(&format!("/v1/secret/describe/{name}"));
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
    let listed = c.get("/v1/secret/list/*").text();
    for name in names {
        assert!(listed.contains(&format!("\"{name}\"")), "{name} not listed");
    }
}

/// Polls until a secret can be created again (writes resume without a restart).
fn wait_writable(server: &Server, name: &str) {
    let mut c = server.admin();
    let resumed = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let resp = c.put_json(
            &format!("/v1/secret/create/{name}"),
            &serde_json::json!({ "secret": base64_of(b"after") }),
        );
        match resp.status {
            200 => Ok(()),
            s => Err(format!("{s} {}", resp.text())),
        }
    });
    if let Err(e) = resumed {
        panic!("writes did not resume: {e}\n{}", server.stderr());
    }
}

#[test]
fn below_min_free_writes_are_refused_with_507_and_reads_go_on() {
    let (env, fs) = env_on_tmpfs("minfree", "2MiB");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k1");
    let filler = fs.fill("filler", 1 << 20);

    // Refused before the disk is full, with the KES error body and the reason.
    let resp = c.put("/v1/key/create/k2");
    assert_eq!(resp.status, 507, "{}", resp.text());
    let message = resp.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("store.min_free"), "{message}");
    // Reads and key operations that store nothing go on.
    assert_eq!(c.get("/v1/key/describe/k1").status, 200);
    let (plaintext, ciphertext) = c.generate("k1", None);
    assert_eq!(c.decrypt("k1", &ciphertext, None), plaintext);
    assert!(c.get("/v1/key/list/*").text().contains("\"k1\""));
    // Deletions pass: they are how an operator makes room.
    assert_eq!(c.delete("/v1/key/delete/k1").status, 200);

    std::fs::remove_file(filler).unwrap();
    c.create_key("k3");
}

#[test]
fn a_full_disk_fails_writes_keeps_reads_and_loses_nothing() {
    // No floor: the writes themselves meet the full disk.
    let (env, fs) = env_on_tmpfs("diskfull", "0");
    let mut server = env.start();
    server.admin().create_key("k1");
    let mut acked = Vec::new();
    let filler = fs.fill("filler", 0);
    let (more, status, message) = write_until_refused(&server, 0);
    acked.extend(more);
    assert_eq!(status, 507, "{message}\n{}", server.stderr());
    assert!(message.contains("disk is full"), "{message}");

    // The server is alive and serves reads of everything acknowledged.
    assert_all_readable(&server, &acked);
    let mut c = server.admin();
    let (plaintext, ciphertext) = c.generate("k1", None);
    assert_eq!(c.decrypt("k1", &ciphertext, None), plaintext);
    // Still full: a small write fits only if kes.db has room left inside (then it is stored
    // like any other); otherwise it is refused the same way, and the server lives on.
    let resp = c.put("/v1/key/create/k2");
    assert!(
        [200, 503, 507].contains(&resp.status),
        "{} {}",
        resp.status,
        resp.text()
    );

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    wait_writable(&server, "after-full");
    acked.push("after-full".into());
    assert!(
        server.stderr().contains("cannot persist the cluster state"),
        "{}",
        server.stderr()
    );

    // Nothing acknowledged is lost across a restart.
    server.stop();
    let server = env.start();
    assert_all_readable(&server, &acked);
    server.admin().create_key("k4");
}

#[test]
fn a_node_starts_on_a_full_disk_and_serves_reads() {
    let (env, fs) = env_on_tmpfs("startfull", "1MiB");
    let mut server = env.start();
    let mut acked = Vec::new();
    {
        let mut c = server.admin();
        for i in 0..10 {
            let name = format!("secret-{i}");
            let body = serde_json::json!({ "secret": base64_of(&[1u8; 100_000]) });
            c.put_json(&format!("/v1/secret/create/{name}"), &body)
                .assert_empty_ok();
            acked.push(name);
        }
    }
    server.stop();
    let filler = fs.fill("filler", 0);

    let server = env
        .try_start()
        .unwrap_or_else(|e| panic!("no start on a full disk: {:?}\n{}", e.status, e.stderr));
    assert_all_readable(&server, &acked);
    let mut c = server.admin();
    let resp = c.put("/v1/key/create/k1");
    assert_eq!(resp.status, 507, "{}", resp.text());

    std::fs::remove_file(&filler).unwrap();
    wait_writable(&server, "after-start");
    assert_all_readable(&server, &acked);
}

// ---------------------------------------------------------------------------------------
// A damaged kes.db: copies of a stopped node's 200-key file, truncated, with header bytes
// flipped, with random bits flipped. Each copy is started as a real server and checked with
// `kes-node check`: never a panic or a backtrace, and never a listing that silently lacks keys
// or a key answered as missing: either the start is refused with an error naming the file, or
// every key is served (a key whose record is damaged answers 500 naming the problem).
// ---------------------------------------------------------------------------------------

const KEYS: usize = 200;

/// A deterministic generator for the damage positions (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A server's directory holding a stopped node's kes.db with `KEYS` keys; its bytes.
fn stopped_node_with_keys() -> (Env, Vec<u8>) {
    let env = Env::new("damage");
    let mut server = env.start();
    let mut c = server.admin();
    for i in 0..KEYS {
        c.create_key(&format!("k{i:03}"));
    }
    drop(c);
    server.stop();
    let bytes = std::fs::read(env.db_path()).unwrap();
    if let Some(to) = std::env::var_os("KES_TEST_DAMAGE_SAVE") {
        std::fs::write(to, &bytes).unwrap();
    }
    (env, bytes)
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The start was refused; the check said what is wrong.
    Refused,
    /// The server started and served every key (`damaged` of them answered 500).
    Served { damaged: usize },
}

/// Starts a server on `bytes` as its kes.db and checks what it answers.
fn try_damaged(env: &Env, bytes: &[u8], case: &str) -> Outcome {
    std::fs::write(env.db_path(), bytes).unwrap();
    let check = Command::new(support::KES_NODE)
        .arg("check")
        .arg(&env.data)
        .env("KES_HSM_KEY", support::HSM_KEY)
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert_quiet(case, "kes-node check", &check_err);
    // `hsm ls` reads the sealed root keys without an HSM: an error at most, never a panic.
    let ls = Command::new(support::KES_NODE)
        .args(["hsm", "ls", "--data"])
        .arg(&env.data)
        .output()
        .unwrap();
    assert_quiet(
        case,
        "kes-node hsm ls",
        &String::from_utf8_lossy(&ls.stderr),
    );
    assert!(matches!(ls.status.code(), Some(0 | 1)), "{case}: {ls:?}");
    // The check reads through a copy-on-write view: the copy is as it was.
    assert_eq!(
        std::fs::read(env.db_path()).unwrap(),
        bytes,
        "{case}: check wrote"
    );
    let outcome = match env.try_start() {
        Err(exit) => {
            assert!(exit.status.is_some(), "{case}: the start hung");
            // The start again, waiting for all of its output (the harness's pipe reader may not
            // have caught up when the process exited): refused the same way.
            let again = Command::new(support::KES_NODE)
                .args(["server", "--config"])
                .arg(&env.config)
                .args(["--addr", &env.next_addr()])
                .arg(&env.data)
                .env("KES_HSM_KEY", support::HSM_KEY)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
            eprintln!("{case}: refused: {}", stderr.trim());
            assert_eq!(again.status.code(), Some(1), "{case}: {stderr}");
            assert_quiet(case, "the refused start", &exit.stderr);
            assert_quiet(case, "the refused start", &stderr);
            assert!(
                stderr.contains("kes.db"),
                "{case}: the start error names no file: {stderr}"
            );
            assert!(
                !check.status.success(),
                "{case}: the start was refused ({stderr}) but check found nothing"
            );
            Outcome::Refused
        }
        Ok(server) => {
            let outcome = served(&server, case);
            eprintln!("{case}: {outcome:?}");
            assert_quiet(case, "the server", &server.stderr());
            outcome
        }
    };
    if check.status.success() {
        assert_eq!(
            outcome,
            Outcome::Served { damaged: 0 },
            "{case}: check passed a file the server does not serve whole"
        );
    } else {
        assert_eq!(check.status.code(), Some(1), "{case}: {check_err}");
        assert!(check_err.contains("kes.db"), "{case}: {check_err}");
    }
    outcome
}

/// Lists and describes every key of a server that started on a damaged copy.
fn served(server: &Server, case: &str) -> Outcome {
    let mut c = server.admin();
    let list = c.get("/v1/key/list/*");
    match list.status {
        200 => {
            let text = list.text();
            for i in 0..KEYS {
                assert!(
                    text.contains(&format!("\"k{i:03}\"")),
                    "{case}: a listing without k{i:03}: {text}"
                );
            }
        }
        500 => assert!(list.text().contains("kes.db"), "{case}: {}", list.text()),
        s => panic!("{case}: listing answered {s} {}", list.text()),
    }
    let mut damaged = 0;
    for i in 0..KEYS {
        let resp = c.get(&format!("/v1/key/describe/k{i:03}"));
        match resp.status {
            200 => {}
            500 => damaged += 1,
            s => panic!("{case}: k{i:03} answered {s} {}", resp.text()),
        }
    }
    Outcome::Served { damaged }
}

#[track_caller]
fn assert_quiet(case: &str, who: &str, stderr: &str) {
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(
            !stderr.contains(bad),
            "{case}: {who} printed a panic:\n{stderr}"
        );
    }
}

#[test]
fn a_truncated_kes_db_is_refused_at_start_without_a_panic() {
    let (env, bytes) = stopped_node_with_keys();
    let len = bytes.len();
    for cut in [512, 4096, len / 2, len - 1] {
        let case = format!("truncated to {cut} of {len} bytes");
        assert_eq!(
            try_damaged(&env, &bytes[..cut], &case),
            Outcome::Refused,
            "{case}"
        );
    }
}

#[test]
fn flipped_header_bytes_never_panic_or_lose_keys() {
    let (env, bytes) = stopped_node_with_keys();
    let mut rng = Rng(0x6b65_732d_6865_6164);
    let mut refused = 0;
    // The first 32 bytes (magic, flags, page size, layout) one by one, then a seeded sample
    // of the rest of the header page (the commit slots).
    let positions: Vec<usize> = (0..32)
        .chain((0..12).map(|_| 32 + rng.below(4096 - 32) as usize))
        .collect();
    let n = positions.len();
    for at in positions {
        let mut copy = bytes.clone();
        copy[at] ^= 1 << rng.below(8);
        let case = format!("header byte {at} flipped");
        if try_damaged(&env, &copy, &case) == Outcome::Refused {
            refused += 1;
        }
    }
    eprintln!("header flips: {refused} of {n} refused at start, the rest served whole");
}

#[test]
fn random_bit_flips_never_panic_or_lose_keys() {
    let (env, bytes) = stopped_node_with_keys();
    let mut refused = 0;
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut copy = bytes.clone();
        for _ in 0..20 {
            let at = 4096 + rng.below(copy.len() as u64 - 4096) as usize;
            copy[at] ^= 1 << rng.below(8);
        }
        let case = format!("20 random bit flips, seed {seed}");
        if try_damaged(&env, &copy, &case) == Outcome::Refused {
            refused += 1;
        }
    }
    eprintln!("random flips: {refused} of 8 copies refused at start");
}

// ---------------------------------------------------------------------------------------
// SIGHUP reloads the TLS certificate and key (and logs, policies) from the config file; a
// config that does not load changes nothing. Both servers: `server` and `edge`.
// ---------------------------------------------------------------------------------------

/// Whether a TLS handshake with the server succeeds when the client trusts only `root`.
fn handshake_trusting(addr: std::net::SocketAddr, root: &[u8]) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .map_err(|e| e.to_string())?;
    let admin = &support::pki().admin;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(admin.chain.clone(), admin.key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Complete lines of `server`'s standard error containing `needle`.
fn log_lines(server: &Server, needle: &str) -> usize {
    let log = server.stderr();
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().filter(|l| l.contains(needle)).count()
}

/// Sends SIGHUP and waits for the `n`th log line containing `line`.
fn sighup(server: &Server, line: &str, n: usize) {
    // SAFETY: kill(2) on the pid of our own child process.
    let rc = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
    let logged = wait_until(
        Duration::from_secs(15),
        Duration::from_millis(20),
        || match log_lines(server, line) {
            seen if seen >= n => Ok(()),
            seen => Err(format!("{seen} of {n} lines")),
        },
    );
    if let Err(e) = logged {
        panic!("no '{line}' after SIGHUP ({e}):\n{}", server.stderr());
    }
}

/// New connections get a new certificate after a SIGHUP; a broken one keeps the old.
fn reload_certificates(env: &Env, server: &Server) {
    let pki = support::pki();
    let ca = pki.ca_cert_der.to_vec();
    let fresh = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let fresh_der = fresh.cert.der().to_vec();
    assert!(handshake_trusting(server.addr, &ca).is_ok());
    assert!(handshake_trusting(server.addr, &fresh_der).is_err());
    let mut before = server.admin(); // opened before the reload: keeps its session
    assert_eq!(before.get("/v1/status").status, 200);

    let cert = env.tmp.path().join("server.cert");
    let key = env.tmp.path().join("server.key");
    std::fs::write(&cert, fresh.cert.pem()).unwrap();
    std::fs::write(&key, fresh.key_pair.serialize_pem()).unwrap();
    sighup(server, "SIGHUP: reloaded", 1);
    assert!(
        server.stderr().contains("server.cert"),
        "{}",
        server.stderr()
    );
    handshake_trusting(server.addr, &fresh_der).expect("the new certificate is served");
    assert!(handshake_trusting(server.addr, &ca).is_err());
    assert_eq!(before.get("/v1/status").status, 200);

    // A certificate that does not parse: nothing changes, and the log says why.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    sighup(server, "SIGHUP: cannot reload", 1);
    handshake_trusting(server.addr, &fresh_der).expect("the previous certificate is kept");
    let log = server.stderr();
    let why = log
        .lines()
        .find(|l| l.contains("SIGHUP: cannot reload"))
        .unwrap();
    assert!(why.contains("server.cert"), "{why}");

    // Back to the original: the test clients connect again.
    std::fs::write(&cert, &pki.server_cert_pem).unwrap();
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    sighup(server, "SIGHUP: reloaded", 2);
    assert_eq!(server.admin().get("/v1/status").status, 200);
}

#[test]
fn sighup_reloads_the_certificate_of_a_server_and_keeps_it_on_error() {
    let mut env = Env::new("sighup");
    env.append_config("policy:\n  app:\n    allow: [/v1/key/describe/one]\n");
    let server = env.start();
    reload_certificates(&env, &server);
    // Still the same process, still serving writes.
    server.admin().create_key("after-reloads");

    // Static policies and log settings come from the reloaded file too.
    let yaml = std::fs::read_to_string(&env.config).unwrap();
    let yaml = yaml.replace("/v1/key/describe/one", "/v1/key/describe/two");
    std::fs::write(&env.config, format!("{yaml}log:\n  audit: on\n")).unwrap();
    sighup(&server, "SIGHUP: reloaded", 3);
    let policy = server.admin().get("/v1/policy/describe/app");
    let policy = server.admin().get("/v1/policy/read/app").text() + &policy.text();
    assert!(policy.contains("/v1/key/describe/two"), "{policy}");
    // The audit line of a request may follow its answer.
    let audited = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        if server.stdout().contains("/v1/policy/read/app") {
            return Ok(());
        }
        server.admin().get("/v1/policy/read/app");
        Err("no audit line yet".into())
    });
    audited.expect("an audit line on stdout after log.audit: on");
    for line in server.stderr().lines().filter(|l| l.contains("SIGHUP")) {
        eprintln!("{line}");
    }
}

#[test]
fn sighup_reloads_the_certificate_of_an_edge_server_and_keeps_it_on_error() {
    let mut env = Env::edge("sighup-edge");
    let keys = env.tmp.path().join("keys");
    env.append_config(&format!("keystore:\n  fs:\n    path: {}\n", keys.display()));
    let server = env.start();
    reload_certificates(&env, &server);
    server.admin().create_key("after-reloads");
}

// ---------------------------------------------------------------------------------------
// A damaged node of a cluster is rebuilt from a healthy one with the README's commands.
// ---------------------------------------------------------------------------------------

#[test]
fn a_damaged_cluster_node_is_rebuilt_from_a_healthy_one() {
    let mut cluster = Cluster::start("rebuild", ClusterOpts::nodes(3));
    let names: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    {
        let mut c = cluster.client(0);
        for name in &names {
            c.create_key(name);
        }
    }

    // Node 2's kes.db is damaged while it is stopped: it refuses to start, check says why.
    assert!(cluster.stop(2));
    let db = cluster.dir(2).join("kes.db");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let exit = cluster
        .try_start_node(2, &[])
        .expect_err("a damaged node does not start");
    assert_eq!(
        exit.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        exit.stderr
    );
    let check = Command::new(support::KES_NODE)
        .arg("check")
        .arg(cluster.dir(2))
        .env("KES_HSM_KEY", support::HSM_KEY)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("is damaged"));

    // The README's rebuild: the directory aside, the old copy dropped from the cluster, the
    // node started empty and waiting, then added (the other order: the next test).
    let aside = cluster.dir(2).with_extension("damaged");
    std::fs::rename(cluster.dir(2), &aside).unwrap();
    std::fs::create_dir_all(cluster.dir(2)).unwrap();
    let addr = cluster.addr(2).to_string();
    membership_step(&cluster, &["cluster", "rm", "--force", &addr], |v| {
        v.id_of(&addr).is_none()
    });
    cluster.start_node_with(2, &["--join"]);
    membership_step(&cluster, &["cluster", "add", &addr], |v| {
        v.id_of(&addr).is_some()
    });

    // The rebuilt node serves every key, and the cluster takes writes on both nodes again.
    wait_served(&cluster, 2, "/v1/key/describe", &names);
    cluster.client(2).create_key("after-rebuild");
    assert_eq!(
        cluster
            .client(0)
            .get("/v1/key/describe/after-rebuild")
            .status,
        200
    );
}

/// The rebuild in the other order: the empty node is started before the `rm --force` of its
/// old copy. The healthy nodes still have the old copy configured at that address, so they
/// redial it and find the empty node. They used to send it the old member's messages, and a
/// node waiting to join takes its id from the first message addressed to it: it became the old
/// member, empty, and the `add` then found it "not waiting to join". Now a link whose Hello
/// names another node than the member dialed carries nothing and shows `refused` (saying the
/// node waits to join), and the node stays waiting until it is added under a new id.
#[test]
fn a_node_started_empty_before_its_old_copy_is_removed_joins_under_a_new_id() {
    const JOINING: u64 = u16::MAX as u64;
    let mut cluster = Cluster::start("rebuild-early", ClusterOpts::nodes(3));
    let names: Vec<String> = (0..10).map(|i| format!("e{i:02}")).collect();
    {
        let mut c = cluster.client(0);
        for name in &names {
            c.create_key(name);
        }
    }
    let addr = cluster.addr(2).to_string();
    let old = cluster
        .describe(0)
        .unwrap()
        .id_of(&addr)
        .expect("node 2's id");
    assert!(cluster.stop(2));
    let aside = cluster.dir(2).with_extension("lost");
    std::fs::rename(cluster.dir(2), &aside).unwrap();
    std::fs::create_dir_all(cluster.dir(2)).unwrap();
    cluster.start_node_with(2, &["--join"]);

    // The healthy nodes redial the address (backing off to 2 s) and see who answers.
    let shown = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let joiner = cluster.describe(2)?;
        if joiner.raw["role"] == "" {
            return Err("the empty node has not published its view yet".into());
        }
        assert_eq!(
            joiner.raw["node_id"],
            JOINING,
            "the empty node took an id before it was added: {}\n{}",
            joiner.raw,
            cluster.dump_logs(30)
        );
        let mut errors = Vec::new();
        for slot in [0, 1] {
            let link = &cluster.describe(slot)?.raw["links"][old.to_string()];
            if link["state"] != "refused" {
                return Err(format!(
                    "node {slot} shows the link to node {old} as {link}"
                ));
            }
            errors.push(link["error"].as_str().unwrap_or_default().to_string());
        }
        Ok(errors)
    });
    let errors = shown.unwrap_or_else(|e| panic!("{e}\n{}", cluster.dump_logs(30)));
    for error in errors {
        assert!(error.contains("waiting to join"), "{error}");
        assert!(error.contains(&format!("not node {old}")), "{error}");
    }

    membership_step(&cluster, &["cluster", "rm", "--force", &addr], |v| {
        v.id_of(&addr).is_none()
    });
    membership_step(&cluster, &["cluster", "add", &addr], |v| {
        v.id_of(&addr).is_some()
    });
    let new = cluster.describe(0).unwrap().id_of(&addr).unwrap();
    assert!(new > old, "ids are never reused: {old} -> {new}");
    assert_eq!(cluster.describe(2).unwrap().raw["node_id"], new);
    wait_served(&cluster, 2, "/v1/key/describe", &names);
    cluster.client(2).create_key("after-rebuild");
    assert_eq!(
        cluster
            .client(0)
            .get("/v1/key/describe/after-rebuild")
            .status,
        200
    );
}

/// Waits until node `slot` answers 200 to `GET <path>/<name>` for every name.
#[track_caller]
fn wait_served(cluster: &Cluster, slot: usize, path: &str, names: &[String]) {
    let mut conn = cluster.conn(slot);
    let served = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        for n in names {
            match conn.read("GET", &format!("{path}/{n}"), None) {
                Ok(resp) if resp.status == 200 => {}
                Ok(resp) => return Err(format!("{n}: {} {}", resp.status, resp.text())),
                Err(err) => return Err(format!("{n}: {err}")),
            }
        }
        Ok(())
    });
    if let Err(e) = served {
        panic!("node {slot}: {e}\n{}", cluster.dump_logs(30));
    }
}

/// Runs the membership command `args` (the CLI) until both healthy nodes (0 and 1) show
/// `done` with no change pending. The command is sent again only while the cluster shows
/// neither its effect nor a change in flight: an answer lost to a leadership move or a
/// timeout may still commit, so what counts is what the nodes show, not what it answered.
#[track_caller]
fn membership_step(cluster: &Cluster, args: &[&str], done: impl Fn(&ClusterView) -> bool) {
    let mut answers: Vec<String> = Vec::new();
    let settled = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        let views: Vec<Result<ClusterView, String>> = [0, 1].map(|s| cluster.describe(s)).into();
        let shown = |v: &Result<ClusterView, String>| -> (bool, bool) {
            match v {
                Ok(v) => (done(v), v.raw.get("pending_change").is_some()),
                Err(_) => (false, false),
            }
        };
        let states: Vec<(bool, bool)> = views.iter().map(shown).collect();
        if states.iter().all(|&(done, pending)| done && !pending) {
            return Ok(());
        }
        let idle = views.iter().all(|v| v.is_ok()) && states.iter().all(|&(_, p)| !p);
        if idle && !states.iter().any(|&(done, _)| done) {
            // The node that leads, as the healthy nodes see it (followers forward anyway).
            let via = views
                .iter()
                .flatten()
                .find_map(|v| v.leader_id.and_then(|id| v.nodes.get(&id)))
                .and_then(|a| cluster.slot_of(a))
                .filter(|&s| s < 2)
                .unwrap_or(0);
            let out = cluster.cli(via, args);
            answers.push(format!(
                "via {via}: {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(format!("nodes 0 and 1 show {views:?}; answers {answers:?}"))
    });
    if let Err(e) = settled {
        panic!("{args:?}: {e}\n{}", cluster.dump_logs(30));
    }
}

// ---------------------------------------------------------------------------------------
// A full disk on one node of a 3-node cluster: writes fail with a 5xx (all-node commit: the
// full node cannot store them, and never acknowledges what it did not store), every node stays
// up and serves reads, writes resume when space returns, and nothing acknowledged is lost.
// ---------------------------------------------------------------------------------------

#[test]
fn a_full_disk_on_one_cluster_node_fails_writes_and_loses_nothing() {
    let mut cluster = Cluster::new("fullnode", ClusterOpts::nodes(3));
    let config = std::fs::read_to_string(cluster.config_path()).unwrap();
    std::fs::write(
        cluster.config_path(),
        format!("{config}store:\n  min_free: 0\n"),
    )
    .unwrap();
    let json = std::fs::read(cluster.dir(0).join(".cluster.json")).unwrap();
    let fs = Tmpfs::mount(cluster.dir(2), "8m");
    std::fs::write(cluster.dir(2).join(".cluster.json"), json).unwrap();
    cluster.start_nodes(&[0, 1, 2]);
    cluster
        .wait_ready(Duration::from_secs(30))
        .expect("a leader, every peer link open");

    let value = base64_of(&[3u8; 100_000]);
    let mut acked = Vec::new();
    {
        let mut c = cluster.client(0);
        for i in 0..5 {
            let name = format!("before-{i}");
            // Right after the election the peer links may still be opening.
            let created = poll(Duration::from_secs(20), Duration::from_millis(100), || {
                let resp = c.put_json(
                    &format!("/v1/secret/create/{name}"),
                    &serde_json::json!({ "secret": value }),
                );
                // 404 "already exists": an earlier attempt committed after all.
                matches!(resp.status, 200 | 404).then_some(())
            });
            assert!(created.is_some(), "{}", cluster.dump_logs(30));
            acked.push(name);
        }
    }
    let filler = fs.fill("filler", 0);
    let mut refused = None;
    {
        let mut c = cluster.client(0);
        for i in 0..200 {
            let name = format!("s{i:03}");
            let resp = c.put_json(
                &format!("/v1/secret/create/{name}"),
                &serde_json::json!({ "secret": value }),
            );
            if resp.status != 200 {
                refused = Some((resp.status, resp.text()));
                break;
            }
            acked.push(name);
        }
    }
    let (status, text) = refused.expect("writes fail once node 2's disk is full");
    assert!(status == 503 || status == 507, "{status} {text}");
    eprintln!(
        "full node 2: {} writes acknowledged, then {status} {text}",
        acked.len()
    );
    // Every node is up and answers reads of what was acknowledged.
    for slot in 0..3 {
        cluster
            .describe(slot)
            .unwrap_or_else(|e| panic!("node {slot} down: {e}\n{}", cluster.dump_logs(30)));
    }
    for name in &acked {
        let resp = cluster
            .client(1)
            .get(&format!("/v1/secret/describe/{name}"));
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }

    // Space returns: writes commit again, on every node, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let resumed = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        let resp = cluster.client(0).put_json(
            "/v1/secret/create/after-full",
            &serde_json::json!({ "secret": base64_of(b"x") }),
        );
        // 400: an earlier attempt that timed out committed meanwhile.
        matches!(resp.status, 200 | 400).then_some(())
    });
    assert!(resumed.is_some(), "{}", cluster.dump_logs(40));
    acked.push("after-full".into());
    wait_served(&cluster, 2, "/v1/secret/describe", &acked);

    // After a restart of the node that was full, everything acknowledged is there.
    cluster.restart(2);
    wait_served(&cluster, 2, "/v1/secret/describe", &acked);
    drop(cluster);
    drop(fs);
}
