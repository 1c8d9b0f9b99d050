//! Hostile clients against a real `kes-node` (issue 12): each test runs one attack from real
//! sockets against a server started under an address-space limit (`RLIMIT_AS`), and asserts
//! that the server survives, that its resident memory (`VmRSS`) stays under a stated bound and
//! that the admin, connecting anew, is answered within a stated time while the attack runs.
//!
//! Every test prints one `hostile:` line with what it measured (`bench/hostile.sh` collects
//! them). `KES_HOSTILE_BIN=/path/to/kes-node` runs the same attacks against another build (for
//! before/after figures); the `limits:` section is then left out of the config, since older
//! builds do not know it.
//!
//! The attacks run one at a time (a lock), so that they do not measure each other.
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

/// The server's address-space limit: what the issue's runs used (400 MB), with room for the
/// debug build's larger mappings.
const ADDRESS_SPACE: u64 = 512 << 20;
/// The admin must be answered within this while an attack runs (a fresh TLS connection and
/// one request, on a loaded 2-core machine).
const ADMIN_WITHIN: Duration = Duration::from_secs(5);
/// The small limits the tests configure (see README "Limits").
const LIMITS: &str = "limits:\n  connections: 600\n  connections_per_ip: 500\n  handshake_timeout: 2s\n  memory: 64MiB\n  log_queue: 256KiB\n";

/// One attack at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The build under test: this one, or `KES_HOSTILE_BIN`.
fn other_binary() -> Option<std::path::PathBuf> {
    std::env::var_os("KES_HOSTILE_BIN").map(Into::into)
}

fn hostile_env(tag: &str) -> Env {
    let mut env = Env::new(tag);
    env.limit_address_space(ADDRESS_SPACE);
    match other_binary() {
        Some(bin) => env.set_binary(bin),
        None => env.append_config(LIMITS),
    }
    env
}

/// `VmRSS` of `pid` in KiB; `None` once the process is gone (or a zombie).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        return None;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the server's RSS and open descriptors every 10 ms; remembers the peaks and whether
/// it died.
struct Watch {
    peak: Arc<AtomicU64>,
    peak_fds: Arc<AtomicUsize>,
    died: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    fn new(pid: u32) -> Watch {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let peak_fds = Arc::new(AtomicUsize::new(0));
        let died = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, peak_fds) = (peak.clone(), peak_fds.clone());
            let (died, stop) = (died.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match rss_kib(pid) {
                        Some(kib) => {
                            peak.fetch_max(kib, Ordering::Relaxed);
                            if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                                peak_fds.fetch_max(fds.count(), Ordering::Relaxed);
                            }
                        }
                        None => {
                            died.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Watch {
            peak,
            peak_fds,
            died,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }

    fn peak_fds(&self) -> usize {
        self.peak_fds.load(Ordering::Relaxed)
    }

    fn died(&self) -> bool {
        self.died.load(Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects anew as the admin and asks `/v1/status`; the time it took, or why it failed
/// (given up after 10 s).
fn admin_probe(addr: SocketAddr) -> Result<Duration, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let res = Client::connect(addr, Some(&pki().admin), Tls::default())
            .and_then(|mut c| {
                if std::env::var_os("KES_HOSTILE_DEBUG").is_some() {
                    eprintln!("probe: connected after {:?}", started.elapsed());
                }
                c.request("GET", "/v1/status", &[], None)
            })
            .map_err(|e| e.to_string())
            .and_then(|r| match r.status {
                200 => Ok(started.elapsed()),
                s => Err(format!("status {s}")),
            });
        let _ = tx.send(res);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

/// Probes the admin `n` times, `every` apart; the slowest answer, or the first failure.
fn admin_probes(addr: SocketAddr, n: usize, every: Duration) -> Result<Duration, String> {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        std::thread::sleep(every);
        worst = worst.max(admin_probe(addr)?);
    }
    Ok(worst)
}

/// Attack threads that run `f` until stopped.
struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Attack {
    fn start(n: usize, f: impl Fn(usize, &AtomicBool) + Send + Sync + 'static) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let f = Arc::new(f);
        let threads = (0..n)
            .map(|i| {
                let (stop, f) = (stop.clone(), f.clone());
                std::thread::spawn(move || f(i, &stop))
            })
            .collect();
        Attack { stop, threads }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Prints the measurement line and asserts the three promises.
#[track_caller]
fn verdict(name: &str, watch: &Watch, admin: &Result<Duration, String>, bound_mib: f64) {
    let died = watch.died();
    println!(
        "hostile: {name}: survived={} peak_rss_mib={:.1} admin={}",
        !died,
        watch.peak_mib(),
        match admin {
            Ok(d) => format!("{:.0}ms", d.as_secs_f64() * 1000.0),
            Err(e) => format!("failed ({e})"),
        }
    );
    assert!(!died, "{name}: the server died");
    assert!(
        watch.peak_mib() < bound_mib,
        "{name}: peak RSS {:.1} MiB, bound {bound_mib} MiB",
        watch.peak_mib()
    );
    match admin {
        Ok(d) => assert!(
            *d < ADMIN_WITHIN,
            "{name}: the admin waited {d:?} (bound {ADMIN_WITHIN:?})"
        ),
        Err(e) => panic!("{name}: the admin was not answered: {e}"),
    }
}

/// Connects with TLS (the handshake done) and the given ALPN, as `cert`.
fn tls_connect(addr: SocketAddr, cert: &ClientCert, alpn: &[u8]) -> std::io::Result<Client> {
    let tls = Tls {
        alpn: vec![alpn.to_vec()],
        ..Tls::default()
    };
    Client::connect(addr, Some(cert), tls)
}

/// Peer ALPN before authentication: clients with nothing but a self-signed certificate pick
/// `kes-peer/1` and announce a 64 MiB frame in place of the Hello, then stream it. Before the
/// fix each such connection was buffered up to 64 MiB for 10 s (16 of them: 1 GB).
#[test]
fn peer_alpn_before_hello() {
    let _one = serial();
    let env = hostile_env("hostile-peer");
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let attack = Attack::start(16, move |_, stop| {
        let junk = vec![0x5au8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut c) = tls_connect(addr, &pki().foreign, b"kes-peer/1") else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            // A frame of 64 MiB - 1 (the largest a peer may send), never completed.
            let mut ok = c.send_raw(&(64u32 * 1024 * 1024 - 1).to_le_bytes()).is_ok();
            while ok && !stop.load(Ordering::Relaxed) {
                ok = c.send_raw(&junk).is_ok();
            }
        }
    });
    let admin = admin_probes(addr, 2, Duration::from_millis(700));
    drop(attack);
    verdict("peer-alpn", &watch, &admin, 64.0);
    if other_binary().is_none() {
        // Logged once (the reason did not change), not once per attempt.
        let stderr = server.stderr();
        let refusals = stderr.matches("peer link from 127.0.0.1 refused").count();
        assert!(
            (1..=3).contains(&refusals),
            "refused peer links logged {refusals} times:\n{stderr}"
        );
    }
}

/// Bodies before 403: an identity unknown to the server sends 1.4 MB secrets on 160
/// connections. Before the fix every body was buffered (about 2.8 MB per connection) before
/// the 403.
#[test]
fn bodies_of_refused_requests() {
    let _one = serial();
    let env = hostile_env("hostile-bodies");
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let refused = Arc::new(AtomicUsize::new(0));
    let attack = {
        let refused = refused.clone();
        Attack::start(16, move |_, stop| {
            let chunk = vec![b'A'; 64 * 1024];
            let head = "PUT /v1/secret/create/s HTTP/1.1\r\nHost: kes\r\nContent-Length: 1400000\r\n\r\n{\"secret\":\"";
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Ten connections per thread, each sending 1.3 MB of its body, then held open.
                let Ok(mut c) = tls_connect(addr, &pki().foreign, b"http/1.1") else {
                    continue;
                };
                let mut sent = c.send_raw(head.as_bytes()).is_ok();
                for _ in 0..20 {
                    sent = sent && c.send_raw(&chunk).is_ok();
                }
                if !sent {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                held.push(c);
                if held.len() > 10 {
                    held.remove(0);
                }
            }
        })
    };
    let admin = admin_probes(addr, 2, Duration::from_millis(800));
    drop(attack);
    println!(
        "bodies: {} attack connections cut off",
        refused.load(Ordering::Relaxed)
    );
    verdict("refused-bodies", &watch, &admin, 96.0);
}

/// The memory budget: an identity allowed to create secrets sends 1.4 MB secrets on about 190
/// connections and never finishes them. Before, every body was buffered (about 2.8 MB per
/// connection); now bodies are admitted while buffered input stays within `limits.memory`
/// (64 MiB here), and the other connections wait unread.
#[test]
fn allowed_bodies_within_the_budget() {
    let _one = serial();
    let mut env = hostile_env("hostile-budget");
    env.append_config(&format!(
        "policy:\n  writer:\n    allow: [/v1/secret/create/*]\n    identities: [{}]\n",
        pki().other.identity
    ));
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let attack = Attack::start(16, move |i, stop| {
        let chunk = vec![b'A'; 64 * 1024];
        let mut held = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && held.len() < 12 {
            let Ok(mut c) = tls_connect(addr, &pki().other, b"http/1.1") else {
                continue;
            };
            n += 1;
            let head = format!(
                "PUT /v1/secret/create/s-{i}-{n} HTTP/1.1\r\nHost: kes\r\nContent-Length: 1400000\r\n\r\n{{\"secret\":\""
            );
            // Writes may block once the server stops reading this connection: one thread
            // per connection would be needed to push on; a short timeout moves on instead.
            let _ = c
                .stream
                .sock
                .set_write_timeout(Some(Duration::from_millis(200)));
            let mut sent = c.send_raw(head.as_bytes()).is_ok();
            for _ in 0..20 {
                sent = sent && c.send_raw(&chunk).is_ok();
            }
            held.push(c);
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let admin = admin_probes(addr, 2, Duration::from_millis(1000));
    drop(attack);
    verdict("allowed-bodies", &watch, &admin, 128.0);
}

/// Connection slots: one unknown client opens connection after connection (raw TCP that never
/// starts TLS, and TLS connections that never send a request) and holds them, against a server
/// allowed 2,048 open files (a common default is 1,024). Before the fix the attacker took every
/// slot the file limit left and the admin was refused.
#[test]
fn connection_slots() {
    let _one = serial();
    let mut env = hostile_env("hostile-slots");
    env.limit_open_files(2048);
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let opened = Arc::new(AtomicUsize::new(0));
    let attack = {
        let opened = opened.clone();
        Attack::start(9, move |i, stop| {
            let mut held: Vec<Box<dyn Send>> = Vec::new();
            // Thread 0: TLS connections that never send a request; the others: raw TCP that
            // never starts TLS. 3,300 in all.
            let quota = if i == 0 { 100 } else { 400 };
            while !stop.load(Ordering::Relaxed) && held.len() < quota {
                let conn: std::io::Result<Box<dyn Send>> = if i == 0 {
                    tls_connect(addr, &pki().foreign, b"http/1.1").map(|c| Box::new(c) as _)
                } else {
                    TcpStream::connect(addr).map(|s| Box::new(s) as _)
                };
                match conn {
                    Ok(c) => {
                        held.push(c);
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) < 3_300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let admin = admin_probes(addr, 3, Duration::from_millis(300));
    drop(attack);
    println!(
        "slots: {} attack connections opened",
        opened.load(Ordering::Relaxed)
    );
    verdict("connection-slots", &watch, &admin, 96.0);
}

/// A slow log subscriber: the admin subscribes to the audit log and then reads one byte at a
/// time, slowly, while other clients make requests with long (8 KB) paths. Before the fix the
/// server queued every event for it without bound; now its stream ends once it falls behind.
#[test]
fn slow_log_subscriber() {
    let _one = serial();
    let env = hostile_env("hostile-log");
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let mut sub = server.admin();
    sub.send_raw(b"GET /v1/log/audit HTTP/1.1\r\nHost: kes\r\n\r\n")
        .unwrap();
    // The subscription is on once the stream's head arrived.
    assert_eq!(sub.read_response_for(true).unwrap().status, 200);
    let stop_slow = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop_slow = stop_slow.clone();
        let mut sock = sub.stream.sock.try_clone().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            // A byte every 100 ms while the attack runs: enough to defeat a write timeout,
            // far too slow to keep up.
            let mut byte = [0u8; 1];
            while !stop_slow.load(Ordering::Relaxed) {
                match sock.read(&mut byte) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return true,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Then fast: a dropped stream ends once the bytes in flight (socket buffers) are
            // read; a live one goes on, or falls silent.
            sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match sock.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                    Err(_) => return false,
                }
            }
            false
        })
    };
    let path = format!("/{}", "x".repeat(8000));
    let attack = Attack::start(2, move |_, stop| {
        let Ok(mut c) = tls_connect(addr, &pki().other, b"http/1.1") else {
            return;
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: kes\r\n\r\n");
        let batch = req.repeat(32);
        let mut sink = vec![0u8; 256 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if c.stream.write_all(batch.as_bytes()).is_err() {
                return;
            }
            // Read what came back (32 small 404s), without parsing.
            if c.stream.read(&mut sink).is_err() {
                return;
            }
        }
    });
    let admin = admin_probes(addr, 3, Duration::from_millis(1000));
    drop(attack);
    stop_slow.store(true, Ordering::Relaxed);
    let ended_in_time = reader.join().unwrap();
    println!("log: the slow subscriber's stream ended: {ended_in_time}");
    verdict("slow-log-subscriber", &watch, &admin, 96.0);
    assert!(ended_in_time, "the slow subscriber was never dropped");
}

/// `Kes-Enclave` names of refused requests: an identity unknown to the server sends requests
/// whose `Kes-Enclave` header is a different 60 KB string each time (no enclave can have such
/// a name). Before the fix, the authorization cache kept every one of them (as "no such
/// identity there"), up to 10,000 entries: 600 MB for one unknown client.
#[test]
fn enclave_names_of_refused_requests() {
    let _one = serial();
    let env = hostile_env("hostile-enclaves");
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let refused = Arc::new(AtomicUsize::new(0));
    let attack = {
        let refused = refused.clone();
        Attack::start(4, move |i, stop| {
            let Ok(mut c) = tls_connect(addr, &pki().foreign, b"http/1.1") else {
                return;
            };
            let filler = "e".repeat(60_000);
            // 700 requests per thread, 4 at a time: 2,800 names in all (168 MB of them).
            for n in 0..175 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let batch: String = (0..4)
                    .map(|k| {
                        format!(
                            "GET /v1/key/list/* HTTP/1.1\r\nHost: kes\r\nKes-Enclave: {i}-{n}-{k}-{filler}\r\n\r\n"
                        )
                    })
                    .collect();
                if c.send_raw(batch.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..4 {
                    match c.read_response() {
                        Ok(r) if r.status == 403 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            }
        })
    };
    // The attack runs to its end (or the server's), then the admin asks.
    while attack.threads.iter().any(|t| !t.is_finished()) && !watch.died() {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(attack);
    let admin = admin_probe(addr);
    let refused = refused.load(Ordering::Relaxed);
    println!("enclaves: {refused} requests refused");
    verdict("enclave-names", &watch, &admin, 96.0);
    assert_eq!(refused, 2_800, "every request is refused (403)");
}

/// HTTP strictness (RFC 9112): smuggling primitives are refused, over-long request lines and
/// heads get 414/431 without an echo, and `Expect: 100-continue` is answered.
#[test]
fn http_strictness() {
    let _one = serial();
    let env = hostile_env("hostile-http");
    let server = env.start();
    let watch = Watch::new(server.pid());
    let pki = pki();
    let mut failures = Vec::new();
    let mut check = |what: &str, c: &mut Client, raw: &[u8], want: u16, no_echo: &str| {
        let _ = c.send_raw(raw);
        match c.read_response() {
            Ok(r) if r.status == want && (no_echo.is_empty() || !r.text().contains(no_echo)) => {
                if want >= 400 && !r.text().starts_with("{\"message\":") {
                    failures.push(format!("{what}: not a KES error body: {:?}", r.text()));
                }
            }
            Ok(r) => failures.push(format!(
                "{what}: {} {:?}",
                r.status,
                r.text().chars().take(80).collect::<String>()
            )),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    };
    for (what, framing) in [
        ("Content-Length: +2", "Content-Length: +2\r\n"),
        (
            "two Content-Lengths",
            "Content-Length: 2\r\nContent-Length: 3\r\n",
        ),
        ("a Content-Length list", "Content-Length: 2, 2\r\n"),
        (
            "Transfer-Encoding with Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
        ),
    ] {
        let mut c = server.admin();
        let raw = format!("PUT /v1/key/create/k HTTP/1.1\r\nHost: kes\r\n{framing}\r\n{{}}");
        check(what, &mut c, raw.as_bytes(), 400, "");
    }
    let long = "a".repeat(1 << 20);
    let mut c = server.admin();
    let raw = format!("GET /v1/key/describe/{long} HTTP/1.1\r\nHost: kes\r\n\r\n");
    check("1 MB request line", &mut c, raw.as_bytes(), 414, "aaaa");
    let mut c = server.admin();
    let raw = format!("GET /version HTTP/1.1\r\nHost: kes\r\nX-Big: {long}\r\n\r\n");
    check("1 MB header", &mut c, raw.as_bytes(), 431, "aaaa");

    // Expect: 100-continue, admitted: the interim answer first, then the body is read.
    let mut c = server.admin();
    c.send_raw(b"PUT /v1/key/create/expect HTTP/1.1\r\nHost: kes\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    match c.read_response() {
        Ok(r) if r.status == 100 => {
            c.send_raw(b"{}").unwrap();
            match c.read_response() {
                Ok(r) if r.status == 200 => {}
                other => {
                    failures.push(format!("100-continue: final {:?}", other.map(|r| r.status)))
                }
            }
        }
        other => failures.push(format!("100-continue: {:?}", other.map(|r| r.status))),
    }
    // Refused: the final status without 100, the body never asked for.
    let mut c = server.client(&pki.foreign);
    c.send_raw(b"PUT /v1/key/create/expect2 HTTP/1.1\r\nHost: kes\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    match c.read_response() {
        Ok(r) if r.status == 403 => {}
        other => failures.push(format!(
            "refused 100-continue: {:?}",
            other.map(|r| r.status)
        )),
    }
    let admin = admin_probe(server.addr);
    verdict("http-strictness", &watch, &admin, 96.0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `tls.ca` alone verifies nothing (upstream's `tls.auth` is off by default): a client with a
/// certificate of no known CA connects, and its identity decides (here: refused).
#[test]
fn tls_ca_without_auth_verifies_nothing() {
    let mut env = Env::new("hostile-tlsca");
    env.set_tls_ca();
    let server = env.start();
    let mut stranger = server.client(&pki().foreign);
    assert_eq!(stranger.alpn().as_deref(), Some(&b"http/1.1"[..]));
    stranger
        .get("/v1/key/list/*")
        .assert_error(403, "not authorized: insufficient permissions");
    assert_eq!(stranger.get("/version").status, 200);
    server.admin().create_key("k");
}

/// Peers of a cluster whose config has `tls.ca` and `tls.auth: on` (client certificates
/// verified) still reach each other: their links get the peer configuration, and the Hello
/// authenticates them. Before, such a cluster could not replicate.
#[test]
fn peers_replicate_with_tls_ca_and_auth() {
    use support::cluster::{Cluster, ClusterOpts};
    let mut cluster = Cluster::new("hostile-peers-ca", ClusterOpts::nodes(2));
    let config = std::fs::read_to_string(cluster.config_path()).unwrap();
    let ca = cluster.root().join("ca.pem");
    let config = config.replacen(
        "tls:\n",
        &format!("tls:\n  ca: {}\n  auth: on\n", ca.display()),
        1,
    );
    std::fs::write(cluster.config_path(), config).unwrap();
    cluster.start_nodes(&[0, 1]);
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("a leader");
    cluster.client(0).create_key("replicated");
    cluster
        .client(1)
        .get("/v1/key/describe/replicated")
        .assert_json_ok();
    // A client without a certificate of the CA is refused in the handshake.
    let res = Client::connect(cluster.addr(0), Some(&pki().foreign), Tls::default())
        .and_then(|mut c| c.request("GET", "/version", &[], None));
    assert!(res.is_err(), "tls.auth: on let an unverified client in");
}

/// A peer whose Hello does not verify is logged by the dialer with the reason, once however
/// often the dialer retries (the acceptor's side: `peer_alpn_before_hello`).
#[test]
fn failed_peer_links_are_logged_once_per_reason() {
    // A fake node 1: TLS with the peer protocol, then a Hello with a MAC made up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = listener.local_addr().unwrap();
    let config = fake_server_tls(&[b"kes-peer/1"]);
    let dialed = Arc::new(AtomicUsize::new(0));
    {
        let dialed = dialed.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                dialed.fetch_add(1, Ordering::Relaxed);
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                // Frame::Hello { node: 1, mac: [0xaa; 32] }, postcard, length-prefixed.
                let mut hello = vec![34, 0, 0, 0, 0, 1];
                hello.extend_from_slice(&[0xaa; 32]);
                let _ = tls.write_all(&hello).and_then(|_| tls.flush());
                let _ = tls.read(&mut [0u8; 64]);
            }
        });
    }
    let env = Env::new("hostile-peer-log");
    let port = support::cluster::free_ports(1)[0];
    std::fs::write(
        env.data.join(".cluster.json"),
        format!("{{\"0\":\"127.0.0.1:{port}\",\"1\":\"{fake}\"}}"),
    )
    .unwrap();
    let server = env
        .try_start_on(&format!("127.0.0.1:{port}"))
        .unwrap_or_else(|e| panic!("start: {e:?}"));
    // Redials back off from 250 ms: three attempts within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while dialed.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dialed.load(Ordering::Relaxed) >= 3,
        "the node did not redial"
    );
    let stderr = server.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&format!("peer link to {fake} failed")))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("Hello does not verify"), "{}", lines[0]);
}

/// Silent peer links: clients with nothing but a self-signed certificate pick `kes-peer/1`,
/// finish the TLS handshake and then send nothing, over and over, holding every connection.
/// A link that chose the peer protocol leaves the HTTP connection slots for the cluster's
/// links, so each must still count against the connection limits until its Hello verified:
/// the server's open descriptors stay near `connections` (600) and the admin gets in.
#[test]
fn silent_peer_links() {
    let _one = serial();
    let mut env = hostile_env("hostile-silent-peers");
    env.limit_open_files(2048);
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let opened = Arc::new(AtomicUsize::new(0));
    let attack = {
        let opened = opened.clone();
        Attack::start(16, move |_, stop| {
            let mut held = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                match tls_connect(addr, &pki().foreign, b"kes-peer/1") {
                    Ok(c) => {
                        held.push_back(c);
                        opened.fetch_add(1, Ordering::Relaxed);
                        if held.len() > 250 {
                            held.pop_front();
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let admin = admin_probes(addr, 3, Duration::from_millis(300));
    drop(attack);
    let peak_fds = watch.peak_fds();
    println!(
        "hostile: silent-peers: {} links opened, peak open descriptors {peak_fds}",
        opened.load(Ordering::Relaxed)
    );
    verdict("silent-peers", &watch, &admin, 96.0);
    assert!(
        peak_fds < 800,
        "the server held {peak_fds} descriptors (connections: 600)"
    );
    if other_binary().is_none() {
        // Logged when the reason changes, not once per link.
        let stderr = server.stderr();
        let refusals = stderr.matches("peer link from 127.0.0.1 refused").count();
        assert!(
            (1..=4).contains(&refusals),
            "refused peer links logged {refusals} times:\n{stderr}"
        );
    }
}

/// Quadratic policy checks: a tenant allowed to manage policies and identities creates a
/// policy of 40,000 rules (under 1 MB) and then, over and over, identities with it. Handing a
/// policy out checks it against the tenant's own, and the rule read literally compares every
/// allow rule with every deny rule: 400 million comparisons per request, seconds of an event
/// loop each (3.6 s for 15,000 rules in a debug build), so the admin waited behind them. The
/// check is now indexed, about linear in the rules.
#[test]
fn quadratic_policy_checks() {
    let _one = serial();
    let env = hostile_env("hostile-policy-checks");
    let server = env.start();
    let watch = Watch::new(server.pid());
    let addr = server.addr;
    let tenant = self_signed_client("tenant");
    let mut admin = server.admin();
    admin
        .put_json(
            "/v1/policy/create/tenant",
            &serde_json::json!({"allow": ["/v1/*"], "deny": ["/v1/key/delete/*"]}),
        )
        .assert_empty_ok();
    admin
        .put_json(
            &format!("/v1/identity/create/{}", tenant.identity),
            &serde_json::json!({"policy": "tenant"}),
        )
        .assert_empty_ok();
    // Every allow rule overlaps the tenant's deny rule; the one deny rule that covers them
    // sorts after 20,000 that cover nothing.
    const RULES: usize = 20_000;
    let allow: Vec<String> = (0..RULES)
        .map(|i| format!("/v1/key/delete/a{i}*"))
        .collect();
    let mut deny: Vec<String> = (0..RULES).map(|i| format!("/v1/a{i}")).collect();
    deny.push("/v1/key/delete/*".into());
    let policy = serde_json::json!({"allow": allow, "deny": deny});
    assert!(serde_json::to_vec(&policy).unwrap().len() < 1 << 20);
    server
        .client(&tenant)
        .put_json("/v1/policy/create/big", &policy)
        .assert_empty_ok();
    let created = Arc::new(AtomicUsize::new(0));
    let attack = {
        let (tenant, created) = (Arc::new(tenant), created.clone());
        Attack::start(4, move |_, stop| {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut c) = Client::connect(addr, Some(&tenant), Tls::default()) else {
                    continue;
                };
                let child = self_signed_client("child");
                let body = br#"{"policy":"big"}"#;
                let path = format!("/v1/identity/create/{}", child.identity);
                if let Ok(r) = c.request("PUT", &path, &[], Some(body)) {
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    created.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let admin = admin_probes(addr, 3, Duration::from_millis(500));
    drop(attack);
    println!(
        "hostile: policy-checks: {} identities created with a {}-rule policy",
        created.load(Ordering::Relaxed),
        2 * RULES + 1
    );
    verdict("policy-checks", &watch, &admin, 160.0);
}
