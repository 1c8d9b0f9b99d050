//! Cluster integration tests: several real `kes-node server` processes on 127.0.0.1 with real
//! TLS, real redb files, real `kill -9`, and a fault-injecting TCP proxy on the peer links.
//!
//! Contract: `shared/spec/cluster.md` (guarantees 1–5) and `kes-api.md` §10.2 / §10.7: writes
//! commit only when every node stored them (else `503` naming the unreachable nodes), reads
//! are served by every node and are linearizable, no acknowledged write is lost, progress
//! returns by itself, and one node is the smallest cluster.
//!
//! The consensus logic itself (batching, forwarding, backlog, hand-over, snapshots, the read
//! gate, membership, crash and restart) is checked over hundreds of seeded schedules by the
//! simulator (`tests/sim.rs`); the tests here prove what only real processes can: the
//! sockets, TLS, files, signals, restarts and the CLI, each scenario once.
//!
//! The `harness_*` tests check the harness itself (ports, proxy, history checker) and need no
//! server. Nothing waits for a fixed time: every wait polls observable state (a node's
//! `/v1/cluster/describe`, an answer, a file, the client load's progress) with a deadline and
//! says what it saw last. Each test prints a one-line summary.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::*;
use support::{b64, unb64, wait_until, Response};

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const HEAL_TIMEOUT: Duration = Duration::from_secs(30);

// -------------------------------------------------------------------------------------------
// Small helpers
// -------------------------------------------------------------------------------------------

fn create_path(name: &str) -> String {
    format!("/v1/key/create/{name}")
}

fn describe_path(name: &str) -> String {
    format!("/v1/key/describe/{name}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[track_caller]
fn ok_response(what: &str, res: Result<Response, ReqError>) -> Response {
    match res {
        Ok(resp) => resp,
        Err(err) => panic!("{what}: no response: {err}"),
    }
}

/// Create `name` on `conn`, asserting 200.
#[track_caller]
fn create_ok(conn: &mut Conn, name: &str) -> Duration {
    let start = Instant::now();
    let resp = ok_response(
        &format!("create {name} on {}", conn.addr),
        conn.request("PUT", &create_path(name), None),
    );
    assert_eq!(
        resp.status,
        200,
        "create {name} on {}: {}",
        conn.addr,
        resp.text()
    );
    start.elapsed()
}

/// Describe `name` on `conn`, asserting 200 and the name.
#[track_caller]
fn describe_ok(conn: &mut Conn, name: &str, context: &str) {
    let resp = ok_response(
        &format!("{context}: describe {name} on {}", conn.addr),
        conn.read("GET", &describe_path(name), None),
    );
    assert_eq!(
        resp.status,
        200,
        "{context}: describe {name} on {}: {}",
        conn.addr,
        resp.text()
    );
    let json = resp.json();
    assert_eq!(json["name"], name, "{context}: {json}");
}

/// `(plaintext, ciphertext)` of `generate` with a context.
#[track_caller]
fn generate(conn: &mut Conn, name: &str, context: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let resp = ok_response(
        &format!("generate {name} on {}", conn.addr),
        conn.read(
            "PUT",
            &format!("/v1/key/generate/{name}"),
            Some(&json!({"context": b64(context)})),
        ),
    );
    assert_eq!(
        resp.status,
        200,
        "generate {name} on {}: {}",
        conn.addr,
        resp.text()
    );
    let json = resp.json();
    (
        unb64(json["plaintext"].as_str().unwrap()),
        unb64(json["ciphertext"].as_str().unwrap()),
    )
}

#[track_caller]
fn decrypt_ok(
    conn: &mut Conn,
    name: &str,
    ciphertext: &[u8],
    context: &[u8],
    want: &[u8],
    why: &str,
) {
    let resp = ok_response(
        &format!("{why}: decrypt {name} on {}", conn.addr),
        conn.read(
            "PUT",
            &format!("/v1/key/decrypt/{name}"),
            Some(&json!({"ciphertext": b64(ciphertext), "context": b64(context)})),
        ),
    );
    assert_eq!(
        resp.status,
        200,
        "{why}: decrypt {name} on {}: {}",
        conn.addr,
        resp.text()
    );
    assert_eq!(
        unb64(resp.json()["plaintext"].as_str().unwrap()),
        want,
        "{why}: decrypt {name} on {} gave another plaintext",
        conn.addr
    );
}

/// The status of a key read on `conn`, waiting out `503`s (a pending entry on the name) up
/// to `timeout`. `None`: no final answer in time.
fn settled_status(conn: &mut Conn, name: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut last = None;
    let got = poll(timeout, Duration::from_millis(100), || {
        match conn.read("GET", &describe_path(name), None) {
            Ok(resp) if resp.status == 200 || resp.status == 404 => {
                Some((resp.status, resp.text()))
            }
            Ok(resp) => {
                last = Some((resp.status, resp.text()));
                None
            }
            Err(_) => None,
        }
    });
    got.or_else(|| last.map(|(s, t)| (s, format!("(unsettled) {t}"))))
        .filter(|(s, _)| *s == 200 || *s == 404)
}

/// Creates fresh keys on rotating nodes until one succeeds; returns the name and the time it
/// took. Panics (with the last answer) after `timeout`.
#[track_caller]
fn write_until_ok(
    cluster: &Cluster,
    nodes: &[usize],
    prefix: &str,
    timeout: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    let mut conns: Vec<Conn> = nodes.iter().map(|&n| cluster.conn(n)).collect();
    let mut attempt = 0usize;
    let written = wait_until(timeout, Duration::from_millis(200), || {
        let i = attempt % conns.len();
        let name = format!("{prefix}-{attempt}");
        attempt += 1;
        match conns[i].request("PUT", &create_path(&name), None) {
            Ok(resp) if resp.status == 200 => Ok(name),
            Ok(resp) => Err(format!(
                "node {}: {} {}",
                nodes[i],
                resp.status,
                resp.text()
            )),
            Err(err) => Err(format!("node {}: {err}", nodes[i])),
        }
    });
    match written {
        Ok(name) => (name, start.elapsed()),
        Err(e) => panic!("{}: no write succeeded: {e}", cluster.name),
    }
}

/// A load thread's pause after a failed request, so that it does not spin against a node
/// that is down (a back-off, not a wait for anything).
fn back_off() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Sets a flag when dropped (also while unwinding): stops load threads when a test panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// -------------------------------------------------------------------------------------------
// 1. Writes are visible on every node as soon as they are acknowledged
// -------------------------------------------------------------------------------------------

#[test]
fn acknowledged_writes_and_identities_are_visible_on_every_node() {
    const ROUNDS: usize = 30;
    let cluster = Cluster::start("visible", ClusterOpts::nodes(3));
    let mut conns: Vec<Conn> = (0..3).map(|i| cluster.conn(i)).collect();
    let mut latencies = Vec::new();
    let (mut reads, mut deletes) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let writer = round % 3;
        let name = format!("vis-{round}");
        latencies.push(create_ok(&mut conns[writer], &name));
        // Right after the acknowledgement, with no waiting: every node has it.
        for (n, conn) in conns.iter_mut().enumerate() {
            describe_ok(
                conn,
                &name,
                &format!("round {round}, written on {writer}, read on {n}"),
            );
            reads += 1;
        }
        // Key material is the same everywhere: a data key generated on one node opens on all.
        let gen = (writer + 1 + round / 3) % 3;
        let context = format!("round {round}").into_bytes();
        let (plaintext, ciphertext) = generate(&mut conns[gen], &name, &context);
        for conn in conns.iter_mut() {
            decrypt_ok(
                conn,
                &name,
                &ciphertext,
                &context,
                &plaintext,
                &format!("round {round}, generated on {gen}"),
            );
            reads += 1;
        }
        // Every fifth round a delete (on yet another node) is gone everywhere at once.
        if round % 5 == 4 {
            let victim = format!("vis-{}", round - 1);
            let deleter = (writer + 2) % 3;
            let start = Instant::now();
            let resp = ok_response(
                "delete",
                conns[deleter].request("DELETE", &format!("/v1/key/delete/{victim}"), None),
            );
            assert_eq!(
                resp.status,
                200,
                "delete {victim} on {deleter}: {}",
                resp.text()
            );
            latencies.push(start.elapsed());
            deletes += 1;
            for (n, conn) in conns.iter_mut().enumerate() {
                let resp = ok_response("describe", conn.read("GET", &describe_path(&victim), None));
                assert_eq!(
                    resp.status,
                    404,
                    "{victim} deleted on {deleter} is still readable on {n}: {}",
                    resp.text()
                );
                reads += 1;
            }
        }
    }
    // Every node lists the same keys: the created ones minus the deleted ones.
    let mut want: Vec<String> = (0..ROUNDS)
        .filter(|r| !(r % 5 == 3 && r + 1 < ROUNDS))
        .map(|r| format!("vis-{r}"))
        .collect();
    want.sort();
    for (n, conn) in conns.iter_mut().enumerate() {
        let resp = ok_response("list", conn.read("GET", "/v1/key/list/vis", None));
        assert_eq!(resp.status, 200, "list on {n}: {}", resp.text());
        let mut got = support::names_of(&resp.json());
        got.sort();
        assert_eq!(got, want, "node {n} lists other keys");
    }
    identities_take_effect_on_every_node_once_acknowledged(&cluster);
    println!(
        "visibility: rounds={ROUNDS} creates={ROUNDS} deletes={deletes} reads={reads} p50 write={:.1} ms p99 write={:.1} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );
}

/// Authorization is linearizable on every node too: right after the leader acknowledges an
/// identity's creation, that identity is allowed on every follower (never a stale 403), and
/// right after its deletion is acknowledged it is refused everywhere (never a stale 200).
fn identities_take_effect_on_every_node_once_acknowledged(cluster: &Cluster) {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).unwrap();
    let mut admin = cluster.conn(leader);
    let policy = json!({"allow": ["/v1/key/describe/*"]});
    let resp = ok_response(
        "policy create",
        admin.request("PUT", "/v1/policy/create/reader", Some(&policy)),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let other = &support::pki().other;
    let mut clients: Vec<support::Client> = (0..3)
        .map(|s| {
            support::Client::connect(cluster.addr(s), Some(other), support::Tls::default()).unwrap()
        })
        .collect();
    let path = format!("/v1/identity/create/{}", other.identity);
    for round in 0..15 {
        let resp = ok_response(
            "identity create",
            admin.request("PUT", &path, Some(&json!({"policy": "reader"}))),
        );
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
        for (s, c) in clients.iter_mut().enumerate() {
            let r = c
                .request("GET", "/v1/key/describe/none", &[], None)
                .unwrap();
            assert_eq!(
                r.status,
                404,
                "round {round}: node {s} after the identity was created: {} {}",
                r.status,
                r.text()
            );
        }
        let resp = ok_response(
            "identity delete",
            admin.request(
                "DELETE",
                &format!("/v1/identity/delete/{}", other.identity),
                None,
            ),
        );
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
        for (s, c) in clients.iter_mut().enumerate() {
            let r = c
                .request("GET", "/v1/key/describe/none", &[], None)
                .unwrap();
            assert_eq!(
                r.status,
                403,
                "round {round}: node {s} after the identity was deleted: {} {}",
                r.status,
                r.text()
            );
        }
    }
}

// -------------------------------------------------------------------------------------------
// 2. Faults under load: no acknowledged write lost, nothing half-done, linearizable
// -------------------------------------------------------------------------------------------

/// What the load threads saw.
#[derive(Default)]
struct LoadOutcome {
    acked: Vec<String>,
    /// Creates answered with an error or no answer: `(name, status or error)`.
    failed: Vec<(String, String)>,
    /// Creates that never reached a node (connect or TLS handshake failed).
    unsent: usize,
    /// Creates of fresh names answered 409.
    conflicts: Vec<String>,
    /// Answers the contract does not allow (a create failing with anything but 503, a read
    /// answering anything but 200, 404 or 503).
    bad: Vec<String>,
    write_latency: Vec<Duration>,
    reads: usize,
    /// Reads that got no answer (node down) or 503: not part of the history.
    read_errors: BTreeMap<String, usize>,
    ops: usize,
}

impl LoadOutcome {
    fn merge(&mut self, other: LoadOutcome) {
        self.acked.extend(other.acked);
        self.failed.extend(other.failed);
        self.unsent += other.unsent;
        self.conflicts.extend(other.conflicts);
        self.bad.extend(other.bad);
        self.write_latency.extend(other.write_latency);
        self.reads += other.reads;
        for (k, v) in other.read_errors {
            *self.read_errors.entry(k).or_default() += v;
        }
        self.ops += other.ops;
    }
}

/// Client threads creating unique keys and describing recent (maybe in-flight) or future
/// names on random nodes, recording every operation in a [`History`].
struct Load {
    seed: u64,
    history: Arc<History>,
    invoked: Arc<Mutex<Vec<String>>>,
    /// Requests sent so far (or tried), by all threads.
    progress: Arc<AtomicUsize>,
    stop: StopOnDrop,
    workers: Vec<JoinHandle<LoadOutcome>>,
}

impl Load {
    const MAX_OPS_PER_THREAD: usize = 4_000;
    const CAP: Duration = Duration::from_secs(120);

    fn start(addrs: &[SocketAddr], threads: usize, seed: u64, prefix: &str) -> Load {
        let history = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let invoked: Arc<Mutex<Vec<String>>> = Arc::default();
        let progress: Arc<AtomicUsize> = Arc::default();
        let next_seq: Arc<Vec<AtomicU64>> =
            Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
        let workers = (0..threads)
            .map(|t| {
                let (addrs, history, stop, invoked, next_seq, progress) = (
                    addrs.to_vec(),
                    history.clone(),
                    stop.clone(),
                    invoked.clone(),
                    next_seq.clone(),
                    progress.clone(),
                );
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let shared = Shared {
                        history: &history,
                        stop: &stop,
                        invoked: &invoked,
                        next_seq: &next_seq,
                        progress: &progress,
                    };
                    load_thread(t, &prefix, seed, &addrs, shared)
                })
            })
            .collect();
        Load {
            seed,
            history,
            invoked,
            progress,
            stop: StopOnDrop(stop),
            workers,
        }
    }

    /// Waits until the threads have sent `n` more requests (each thread sends its next one
    /// once the last is answered or failed): the time between two faults, or how long one
    /// lasts beyond the moment the nodes show it.
    #[track_caller]
    fn wait_progress(&self, n: usize, why: &str) {
        let from = self.progress.load(Ordering::SeqCst);
        let done = wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
            let sent = self.progress.load(Ordering::SeqCst) - from;
            if sent >= n {
                Ok(())
            } else {
                Err(format!("{sent} of {n} requests sent"))
            }
        });
        if let Err(e) = done {
            panic!("seed {}: the load stalled {why}: {e}", self.seed);
        }
    }

    /// Stops the threads and sums what they saw.
    fn finish(&mut self) -> LoadOutcome {
        self.stop.0.store(true, Ordering::SeqCst);
        let mut total = LoadOutcome::default();
        for w in self.workers.drain(..) {
            total.merge(w.join().expect("load thread panicked"));
        }
        total
    }
}

/// What the load threads share.
struct Shared<'a> {
    history: &'a History,
    stop: &'a AtomicBool,
    invoked: &'a Mutex<Vec<String>>,
    next_seq: &'a [AtomicU64],
    progress: &'a AtomicUsize,
}

fn load_thread(
    t: usize,
    prefix: &str,
    seed: u64,
    addrs: &[SocketAddr],
    shared: Shared,
) -> LoadOutcome {
    let Shared {
        history,
        stop,
        invoked,
        next_seq,
        progress,
    } = shared;
    let mut rng = Rng::new(seed.wrapping_add(t as u64 + 1));
    let mut conns: Vec<Conn> = addrs
        .iter()
        .map(|a| Conn::new(*a, Duration::from_secs(20)))
        .collect();
    let mut out = LoadOutcome::default();
    let cap = Instant::now() + Load::CAP;
    for _ in 0..Load::MAX_OPS_PER_THREAD {
        if stop.load(Ordering::SeqCst) || Instant::now() > cap {
            break;
        }
        out.ops += 1;
        progress.fetch_add(1, Ordering::SeqCst);
        let node = rng.index(addrs.len());
        if rng.chance(50) {
            let seq = next_seq[t].fetch_add(1, Ordering::SeqCst);
            let name = format!("{prefix}-{t}-{seq}");
            invoked.lock().unwrap().push(name.clone());
            let call = history.now();
            let started = Instant::now();
            let res = conns[node].request("PUT", &create_path(&name), None);
            let ret = history.now();
            let (ret, detail) = match res {
                Ok(resp) if resp.status == 200 => {
                    out.write_latency.push(started.elapsed());
                    out.acked.push(name.clone());
                    (Some(ret), "200".to_string())
                }
                Ok(resp) if resp.status == 409 => {
                    // A fresh name cannot exist: a retried write answered for itself.
                    out.conflicts
                        .push(format!("{name} on {node}: {}", resp.text()));
                    (Some(ret), format!("409 {}", error_message(&resp)))
                }
                Ok(resp) => {
                    let detail = format!("{} {}", resp.status, error_message(&resp));
                    if resp.status != 503 {
                        out.bad
                            .push(format!("create {name} on node {node}: {detail}"));
                    }
                    out.failed.push((name.clone(), detail.clone()));
                    back_off();
                    (None, detail)
                }
                Err(ReqError::Connect(_)) => {
                    // Never sent: not an operation (the key must never appear).
                    out.unsent += 1;
                    back_off();
                    continue;
                }
                Err(err) => {
                    let detail = err.to_string();
                    out.failed.push((name.clone(), detail.clone()));
                    back_off();
                    (None, detail)
                }
            };
            history.push(Record {
                key: name,
                node,
                event: Event::Create,
                call,
                ret,
                detail,
            });
        } else {
            // Mostly names whose create is recent (maybe still in flight), else the next
            // name some writer will create.
            let recent = {
                let invoked = invoked.lock().unwrap();
                (!invoked.is_empty() && rng.chance(70)).then(|| {
                    let window = invoked.len().min(30);
                    invoked[invoked.len() - 1 - rng.index(window)].clone()
                })
            };
            let name = recent.unwrap_or_else(|| {
                let u = rng.index(next_seq.len());
                format!("{prefix}-{u}-{}", next_seq[u].load(Ordering::SeqCst))
            });
            let call = history.now();
            let res = conns[node].read("GET", &describe_path(&name), None);
            let ret = history.now();
            match res {
                Ok(resp) if resp.status == 200 || resp.status == 404 => {
                    out.reads += 1;
                    history.push(Record {
                        key: name,
                        node,
                        event: Event::Read(resp.status == 200),
                        call,
                        ret: Some(ret),
                        detail: resp.status.to_string(),
                    });
                }
                other => {
                    let kind = match &other {
                        Ok(resp) if resp.status == 503 => "503".to_string(),
                        Ok(resp) => {
                            out.bad.push(format!(
                                "describe {name} on node {node}: {} {}",
                                resp.status,
                                resp.text()
                            ));
                            resp.status.to_string()
                        }
                        Err(ReqError::Connect(_)) => "connect".to_string(),
                        Err(ReqError::Io(_)) => "i/o".to_string(),
                    };
                    *out.read_errors.entry(kind).or_default() += 1;
                    back_off();
                }
            }
        }
    }
    out
}

/// After the faults: a leader, a write that goes through, every invoked create settled on
/// every node (acknowledged → present everywhere; failed → present everywhere or nowhere),
/// and the whole history linearizable. Returns a summary.
fn verify_after_faults(
    cluster: &Cluster,
    load: &Load,
    total: &LoadOutcome,
    faults: &[String],
) -> String {
    // Every failure names the seed and the fault schedule (times match the history's).
    let seed = format!("{}, faults [{}]", load.seed, faults.join(", "));
    let leader = cluster
        .wait_for_leader(LEADER_TIMEOUT)
        .unwrap_or_else(|e| panic!("seed {seed}: no leader after the faults: {e}"));
    let (_, recovery) = write_until_ok(cluster, &[0, 1, 2], "after-faults", HEAL_TIMEOUT);

    let acked: std::collections::BTreeSet<&String> = total.acked.iter().collect();
    let names = load.invoked.lock().unwrap().clone();
    let history = &load.history;
    let mut conns: Vec<Conn> = (0..3).map(|i| cluster.conn(i)).collect();
    let (mut failed_present, mut failed_absent) = (0usize, 0usize);
    for name in &names {
        let mut statuses = Vec::new();
        for (n, conn) in conns.iter_mut().enumerate() {
            let call = history.now();
            let Some((status, body)) = settled_status(conn, name, Duration::from_secs(15)) else {
                panic!("seed {seed}: {name} never settled on node {n} (reads kept failing or 503)");
            };
            history.push(Record {
                key: name.clone(),
                node: n,
                event: Event::Read(status == 200),
                call,
                ret: Some(history.now()),
                detail: format!("final {status}"),
            });
            statuses.push((n, status, body));
        }
        if acked.contains(name) {
            for (n, status, body) in &statuses {
                assert_eq!(
                    *status, 200,
                    "seed {seed}: acknowledged create of {name} is lost on node {n}: {body}"
                );
            }
        } else {
            let first = statuses[0].1;
            assert!(
                statuses.iter().all(|(_, s, _)| *s == first),
                "seed {seed}: {name} (create failed) is half-done: {statuses:?}"
            );
            if first == 200 {
                failed_present += 1;
            } else {
                failed_absent += 1;
            }
        }
    }
    let keys = history
        .check()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert!(
        !total.acked.is_empty(),
        "seed {seed}: no write succeeded during the whole load"
    );
    assert!(
        total.conflicts.is_empty(),
        "seed {seed}: creates of fresh names answered 409: {:?}",
        total.conflicts
    );
    assert!(
        total.bad.is_empty(),
        "seed {seed}: answers outside the contract: {:?}",
        &total.bad[..total.bad.len().min(20)]
    );
    format!(
        "seed={} ops={} creates ok={} failed={} (later present {failed_present}, absent {failed_absent}) unsent={} reads={} read errors={:?} leader after={leader} recovery write={:.0} ms history keys={keys} records={} p50 write={:.1} ms p99 write={:.1} ms",
        load.seed,
        total.ops,
        total.acked.len(),
        total.failed.len(),
        total.unsent,
        total.reads,
        total.read_errors,
        ms(recovery),
        history.len(),
        ms(percentile(&total.write_latency, 50.0)),
        ms(percentile(&total.write_latency, 99.0)),
    )
}

/// A fault of the real cluster, each applied once per run.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    KillFollower,
    /// SIGSTOP: a gray failure, the sockets stay open and nothing answers.
    PauseLeader,
    /// One direction of one peer link.
    CutOne,
    /// Both directions between two nodes.
    CutPair,
    IsolateFollower,
    IsolateLeader,
}

/// Every fault the real processes and sockets must survive, once each, in an order drawn
/// from the seed (cuts refuse or black-hole, drawn too), under load from three client
/// threads: kill -9 of the leader and of a follower, SIGSTOP of the leader, cut peer links
/// and isolated nodes. A fault lasts until the nodes show it (a link no longer connected, a
/// new leader) and a few requests (0–3, drawn) met it; writes still waiting for it are
/// pending when it heals. Then the cluster must elect a leader. Afterwards no acknowledged
/// write is lost, nothing is half-done and the history is linearizable. (Random schedules of
/// these faults over many seeds are the simulator's job: `tests/sim.rs`.)
#[test]
fn faults_under_load_lose_nothing_and_stay_linearizable() {
    let seed = Rng::seed_from_env();
    let mut rng = Rng::new(seed);
    let mut faults = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseLeader,
        Fault::CutOne,
        Fault::CutPair,
        Fault::IsolateFollower,
        Fault::IsolateLeader,
    ];
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.index(i + 1));
    }
    let mut cluster = Cluster::start("faults", ClusterOpts::nodes(3).with_proxy());
    let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    let mut load = Load::start(&addrs, 3, seed, "load");
    let mut log = Vec::new();
    let mut recoveries = Vec::new();
    for fault in faults {
        load.wait_progress(30 + rng.index(120), "before a fault");
        let leader = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .unwrap_or_else(|e| panic!("seed {seed}: no leader before {fault:?}: {e}"));
        let follower = (leader + 1 + rng.index(2)) % 3;
        let mode = if rng.chance(50) {
            CutMode::Refuse
        } else {
            CutMode::BlackHole
        };
        let (a, b) = if rng.chance(50) {
            (leader, follower)
        } else {
            (follower, leader)
        };
        let around = |k: usize| -> Vec<(usize, usize)> {
            (0..3)
                .filter(|&o| o != k)
                .flat_map(|o| [(o, k), (k, o)])
                .collect()
        };
        let at = load.history.now();
        let started = Instant::now();
        // What happened, the links (from, to) whose `from` must show it, who was killed.
        let (what, down, killed) = match fault {
            Fault::KillLeader | Fault::KillFollower => {
                let v = if matches!(fault, Fault::KillLeader) {
                    leader
                } else {
                    follower
                };
                cluster.kill(v);
                let seen: Vec<_> = (0..3).filter(|&o| o != v).map(|o| (o, v)).collect();
                (format!("kill -9 {v}"), seen, Some(v))
            }
            Fault::PauseLeader => {
                cluster.pause(leader);
                (format!("SIGSTOP leader {leader}"), Vec::new(), None)
            }
            Fault::CutOne => {
                cluster.proxy().cut(a, b, mode);
                (format!("cut {a}->{b} {mode:?}"), vec![(a, b)], None)
            }
            Fault::CutPair => {
                cluster.proxy().cut_between(a, b, mode);
                (
                    format!("cut {a}<->{b} {mode:?}"),
                    vec![(a, b), (b, a)],
                    None,
                )
            }
            Fault::IsolateFollower => {
                cluster.proxy().partition(follower, mode);
                (
                    format!("isolate {follower} {mode:?}"),
                    around(follower),
                    None,
                )
            }
            Fault::IsolateLeader => {
                cluster.proxy().partition(leader, mode);
                (
                    format!("isolate leader {leader} {mode:?}"),
                    around(leader),
                    None,
                )
            }
        };
        // The fault holds until the nodes show it.
        for &(from, to) in &down {
            if let Err(e) = cluster.wait_link(from, to, |s| s != "connected", LEADER_TIMEOUT) {
                panic!("seed {seed}: `{what}` never showed: {e}");
            }
        }
        if let Fault::PauseLeader = fault {
            // The others cannot tell a frozen leader from a dead one: they elect another.
            let others: Vec<usize> = (0..3).filter(|&o| o != leader).collect();
            cluster
                .wait_for_leader_among(&others, LEADER_TIMEOUT)
                .unwrap_or_else(|e| panic!("seed {seed}: `{what}`: no new leader: {e}"));
            cluster.resume(leader);
        } else {
            // Up to a few more requests meet the fault (a write that waits for a node the
            // fault hides takes its 5 s timeout; clients of a frozen node would all block).
            load.wait_progress(rng.index(4), &format!("during `{what}`"));
        }
        let held = started.elapsed();
        cluster.proxy().heal_all();
        if let Some(v) = killed {
            cluster.start_node(v);
        }
        let healed = Instant::now();
        if let Err(err) = cluster.wait_for_leader(LEADER_TIMEOUT) {
            panic!("seed {seed}: no leader after healing `{what}`: {err}");
        }
        recoveries.push(healed.elapsed());
        log.push(format!(
            "@{}ms {what} for {}ms",
            at / 1_000_000,
            held.as_millis()
        ));
    }
    load.wait_progress(30 + rng.index(120), "after the last fault");
    let total = load.finish();
    let summary = verify_after_faults(&cluster, &load, &total, &log);
    println!(
        "faults under load: {summary} faults [{}] kills={} leader after heal p50={:.0} ms max={:.0} ms",
        log.join(", "),
        cluster.kills,
        ms(percentile(&recoveries, 50.0)),
        ms(percentile(&recoveries, 100.0)),
    );
}

// -------------------------------------------------------------------------------------------
// 3. A partitioned node: writes fail with 503 naming it, reads go on everywhere, heal
// -------------------------------------------------------------------------------------------

#[test]
fn partition_fails_writes_keeps_reads_and_heals() {
    let cluster = Cluster::start("partition", ClusterOpts::nodes(3).with_proxy());
    let mut conns: Vec<Conn> = (0..3).map(|i| cluster.conn(i)).collect();
    let addr_str: Vec<String> = (0..3).map(|i| cluster.addr(i).to_string()).collect();

    // Keys and ciphertexts from before any partition.
    let mut before = Vec::new();
    for i in 0..6 {
        let name = format!("pre-{i}");
        create_ok(&mut conns[i % 3], &name);
        let context = format!("ctx {i}").into_bytes();
        let (pt, ct) = generate(&mut conns[(i + 1) % 3], &name, &context);
        before.push((name, context, pt, ct));
    }

    let mut failed_writes = 0usize;
    let mut fail_latency = Vec::new();
    let mut reads = 0usize;
    let mut max_read = Duration::ZERO;
    let mut heal_times = Vec::new();
    let mut half_done = Vec::new();
    let mut majority_elections = Vec::new();
    let mut isolated_messages = std::collections::BTreeSet::new();
    for (phase, mode) in [(0usize, CutMode::Refuse), (1, CutMode::BlackHole)] {
        let leader = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .unwrap_or_else(|e| panic!("phase {phase}: {e}"));
        // Phase 0 cuts off a follower, phase 1 the leader.
        let k = if phase == 0 { (leader + 1) % 3 } else { leader };
        cluster.proxy().partition(k, mode);
        let what = format!("phase {phase} ({mode:?}, node {k} partitioned, leader was {leader})");
        // The majority side has (or elects) a leader of its own.
        let others: Vec<usize> = (0..3).filter(|&o| o != k).collect();
        let started = Instant::now();
        let new_leader = cluster
            .wait_for_leader_among(&others, LEADER_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: no leader on the majority side: {e}"));
        majority_elections.push(started.elapsed());

        // Writes fail on every node with 503 (one per node, concurrently); the
        // others name k. Meanwhile reads of earlier keys keep working on every node, the
        // partitioned one included, without waiting for the pending writes.
        let writes_done = AtomicUsize::new(0);
        let (answers, read_rounds) = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..3)
                .map(|n| {
                    let addr = cluster.addr(n);
                    let writes_done = &writes_done;
                    scope.spawn(move || {
                        let mut conn = Conn::new(addr, Duration::from_secs(20));
                        let name = format!("part-{phase}-{n}");
                        let start = Instant::now();
                        let res = conn.request("PUT", &create_path(&name), None);
                        writes_done.fetch_add(1, Ordering::SeqCst);
                        vec![(n, name, res, start.elapsed())]
                    })
                })
                .collect();
            let mut rounds = 0usize;
            while writes_done.load(Ordering::SeqCst) < 3 && rounds < 50 {
                for (n, conn) in conns.iter_mut().enumerate() {
                    for (name, context, pt, ct) in &before {
                        let start = Instant::now();
                        describe_ok(conn, name, &format!("{what}: read on {n}"));
                        decrypt_ok(conn, name, ct, context, pt, &format!("{what}: read on {n}"));
                        max_read = max_read.max(start.elapsed());
                        reads += 2;
                    }
                    let resp = ok_response(
                        "describe",
                        conn.read("GET", &describe_path("never-created"), None),
                    );
                    assert_eq!(resp.status, 404, "{what}: node {n}: {}", resp.text());
                }
                // Back to back while the writes are pending (bounded: they end by timeout).
                rounds += 1;
            }
            let answers: Vec<_> = writers
                .into_iter()
                .flat_map(|w| w.join().expect("writer panicked"))
                .collect();
            (answers, rounds)
        });
        assert!(
            read_rounds > 0,
            "{what}: no read round ran while the writes were pending"
        );
        let mut attempted = Vec::new();
        for (n, name, res, took) in answers {
            attempted.push(name.clone());
            let resp = match res {
                Ok(resp) => resp,
                Err(err) => panic!("{what}: write {name} on node {n} got no answer: {err}"),
            };
            fail_latency.push(took);
            assert_eq!(
                resp.status,
                503,
                "{what}: write {name} on node {n} answered {} {:?}",
                resp.status,
                resp.text()
            );
            let msg = error_message(&resp);
            if n == k {
                // The cut-off node cannot tell a dead cluster from its own isolation; the
                // contract asks it for a 503, its wording is reported only.
                let named = others
                    .iter()
                    .any(|&o| names_node(&msg, o as u64, &addr_str[o]));
                isolated_messages.insert(format!(
                    "{}{msg}",
                    if named { "" } else { "(names nobody) " }
                ));
            } else {
                assert!(
                    names_node(&msg, k as u64, &addr_str[k]),
                    "{what} (new leader {new_leader}): 503 of node {n} does not name node {k} ({}): {msg:?}",
                    addr_str[k]
                );
            }
            failed_writes += 1;
        }

        // Heal: writes succeed again without operator action.
        cluster.proxy().heal_all();
        let (fresh, took) =
            write_until_ok(&cluster, &[0, 1, 2], &format!("heal-{phase}"), HEAL_TIMEOUT);
        heal_times.push(took);
        for (n, conn) in conns.iter_mut().enumerate() {
            describe_ok(conn, &fresh, &format!("{what}: after heal, read on {n}"));
        }
        // The writes that failed during the partition are on every node or on none.
        for name in &attempted {
            let statuses: Vec<u16> = conns
                .iter_mut()
                .map(|c| {
                    settled_status(c, name, Duration::from_secs(15))
                        .map(|(s, _)| s)
                        .unwrap_or(0)
                })
                .collect();
            assert!(
                statuses.iter().all(|s| *s == statuses[0]) && statuses[0] != 0,
                "{what}: {name} is half-done or unsettled after healing: {statuses:?}"
            );
            if statuses[0] == 200 {
                half_done.push(name.clone());
            }
        }
    }
    println!(
        "partition: phases=2 failed writes={failed_writes} p50 503 latency={:.0} ms max 503 latency={:.0} ms reads during partition={reads} max read={:.0} ms majority leader after={:?} ms heal->write ok={:?} ms failed-but-applied={} isolated node said {:?}",
        ms(percentile(&fail_latency, 50.0)),
        ms(percentile(&fail_latency, 100.0)),
        ms(max_read),
        majority_elections.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        heal_times.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        half_done.len(),
        isolated_messages,
    );
}

// -------------------------------------------------------------------------------------------
// 4. Restart every node at once
// -------------------------------------------------------------------------------------------

#[test]
fn restart_all_nodes_keeps_state_and_elects_a_leader() {
    let mut cluster = Cluster::start("restart-all", ClusterOpts::nodes(3));
    let mut keys = Vec::new();
    {
        let mut conns: Vec<Conn> = (0..3).map(|i| cluster.conn(i)).collect();
        for i in 0..9 {
            let name = format!("keep-{i}");
            create_ok(&mut conns[i % 3], &name);
            let context = format!("ctx {i}").into_bytes();
            let (pt, ct) = generate(&mut conns[(i + 2) % 3], &name, &context);
            keys.push((name, context, pt, ct));
        }
    }
    let mut clean_exits = 0usize;
    let mut elections = Vec::new();
    let mut first_writes = Vec::new();
    for (round, how) in [(0usize, "SIGTERM"), (1, "SIGKILL")] {
        for i in 0..3 {
            if round == 0 {
                clean_exits += usize::from(cluster.stop(i));
            } else {
                cluster.kill(i);
            }
        }
        cluster.start_nodes(&[0, 1, 2]);
        let started = Instant::now();
        // Reads need no leader: every node answers from its own state right away.
        let mut conns: Vec<Conn> = (0..3).map(|i| cluster.conn(i)).collect();
        for (n, conn) in conns.iter_mut().enumerate() {
            for (name, context, pt, ct) in &keys {
                let why = format!("after {how} of all, node {n}");
                describe_ok(conn, name, &why);
                decrypt_ok(conn, name, ct, context, pt, &why);
            }
        }
        let leader = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .unwrap_or_else(|e| panic!("after {how} of all: {e}"));
        elections.push(started.elapsed());
        let (name, took) = write_until_ok(
            &cluster,
            &[leader, (leader + 1) % 3],
            &format!("after-{round}"),
            HEAL_TIMEOUT,
        );
        first_writes.push(took);
        for (n, conn) in conns.iter_mut().enumerate() {
            describe_ok(conn, &name, &format!("after {how} of all, new key on {n}"));
        }
        let context = b"new".to_vec();
        let (pt, ct) = generate(&mut conns[2], &name, &context);
        keys.push((name, context, pt, ct));
    }
    println!(
        "restart all: rounds=2 (SIGTERM, SIGKILL) kills={} clean SIGTERM exits={clean_exits}/3 keys={} leader after={:?} ms first write after={:?} ms",
        cluster.kills,
        keys.len(),
        elections.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        first_writes.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
    );
}

// -------------------------------------------------------------------------------------------
// One node is the smallest cluster
// -------------------------------------------------------------------------------------------

#[test]
fn single_node_without_cluster_json_bootstraps_itself() {
    let mut cluster = Cluster::new(
        "single",
        ClusterOpts {
            slots: 1,
            members: 1,
            bootstrap_json: false,
            proxy: false,
        },
    );
    let file = cluster.dir(0).join(".cluster.json");
    assert!(!file.exists());
    cluster.start_node(0);
    let addr = cluster.addr(0).to_string();
    let text = std::fs::read_to_string(&file).expect(".cluster.json written at start");
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!(".cluster.json is not JSON ({e}): {text:?}"));
    assert_eq!(parsed, json!({"0": addr}), "{text:?}");
    // Upstream's format (kes-api.md §10.2): Go's json.Encoder, one line.
    assert_eq!(text.trim_end(), format!("{{\"0\":\"{addr}\"}}"), "{text:?}");

    let leader = cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    assert_eq!(leader, 0);
    let view = cluster.describe(0).unwrap();
    assert_eq!(
        view.nodes,
        BTreeMap::from([(0u64, addr.clone())]),
        "{}",
        view.raw
    );
    assert_eq!(view.leader_id, Some(0), "{}", view.raw);

    let mut conn = cluster.conn(0);
    let mut latencies = Vec::new();
    for i in 0..20 {
        latencies.push(create_ok(&mut conn, &format!("solo-{i}")));
    }
    let (pt, ct) = generate(&mut conn, "solo-0", b"c");
    cluster.restart(0);
    let mut conn = cluster.conn(0);
    for i in 0..20 {
        describe_ok(&mut conn, &format!("solo-{i}"), "after kill -9");
    }
    decrypt_ok(&mut conn, "solo-0", &ct, b"c", &pt, "after kill -9");
    cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    create_ok(&mut conn, "solo-after");
    let again = std::fs::read_to_string(&file).unwrap();
    assert_eq!(again, text, ".cluster.json changed across a restart");
    // The only node cannot remove itself.
    let resp = ok_response(
        "shrink of the only node",
        shrink(&mut conn, cluster.addr(0), false),
    );
    assert!(resp.status >= 400, "{} {}", resp.status, resp.text());
    describe_ok(
        &mut conn,
        "solo-after",
        "after a refused shrink of the only node",
    );
    println!(
        "single node: creates=21 kills={} p50 write={:.1} ms",
        cluster.kills,
        ms(percentile(&latencies, 50.0))
    );
}

// -------------------------------------------------------------------------------------------
// 5. Membership: expand under load, shrink, id reuse, forced shrink, a removed node returns
// -------------------------------------------------------------------------------------------

/// `PUT /v1/cluster/expand` until it answers something else than 503 (bounded).
fn expand(conn: &mut Conn, endpoint: SocketAddr) -> Response {
    let body = json!({"endpoint": endpoint.to_string()});
    let mut last = None;
    let mut failed = false;
    let answer = wait_until(HEAL_TIMEOUT, Duration::from_millis(500), || {
        match conn.request("PUT", "/v1/cluster/expand", Some(&body)) {
            Ok(resp) if resp.status == 503 => {
                let seen = format!("503 {}", error_message(&resp));
                last = Some(resp);
                failed = true;
                Err(seen)
            }
            // An earlier attempt whose answer was lost (a timeout, or a 503 for a change
            // that committed later) went through.
            Ok(mut resp) if resp.status == 409 && failed => {
                resp.status = 200;
                Ok(resp)
            }
            Ok(resp) => Ok(resp),
            Err(err) => {
                failed = true;
                Err(err.to_string())
            }
        }
    });
    answer
        .ok()
        .or(last)
        .expect("expand never answered (only i/o errors)")
}

fn shrink(conn: &mut Conn, endpoint: SocketAddr, force: bool) -> Result<Response, ReqError> {
    conn.request(
        "DELETE",
        "/v1/cluster/shrink",
        Some(&json!({"endpoint": endpoint.to_string(), "force": force})),
    )
}

/// Polls until a key read on `slot` answers 503 (the node refuses to serve). Every other
/// answer is remembered; `stale` = the node answered 404 for `key` (stale if it exists).
#[track_caller]
fn assert_refuses(cluster: &Cluster, slot: usize, key: &str, why: &str) {
    let mut conn = cluster.conn(slot);
    let mut last = String::new();
    let mut stale = 0usize;
    let refused = poll(HEAL_TIMEOUT, Duration::from_millis(200), || {
        match conn.read("GET", &describe_path(key), None) {
            Ok(resp) if resp.status == 503 => Some(()),
            Ok(resp) => {
                stale += usize::from(resp.status == 404);
                last = format!("{} {}", resp.status, resp.text());
                None
            }
            Err(err) => {
                last = err.to_string();
                None
            }
        }
    });
    assert!(
        refused.is_some(),
        "{why}: node {slot} still serves after {HEAL_TIMEOUT:?} ({stale} answers 404 for {key}); last answer: {last}"
    );
}

/// Starts `slot` empty with `--join` and expands the cluster with it via `via`; waits until
/// `members` (the new configuration) all list it and agree on a leader.
#[track_caller]
fn join(cluster: &mut Cluster, slot: usize, via: usize, members: &[usize]) -> Duration {
    cluster.start_node_with(slot, &["--join"]);
    let start = Instant::now();
    let resp = expand(&mut cluster.conn(via), cluster.addr(slot));
    assert_eq!(
        resp.status,
        200,
        "expand with node {slot} via {via}: {}",
        resp.text()
    );
    let took = start.elapsed();
    let addr = cluster.addr(slot).to_string();
    let mut last = String::new();
    let grown = poll(LEADER_TIMEOUT, Duration::from_millis(200), || {
        let views: Vec<_> = members.iter().map(|&s| (s, cluster.describe(s))).collect();
        let ok = views.iter().all(|(_, v)| {
            matches!(v, Ok(v) if v.nodes.len() == members.len() && v.id_of(&addr).is_some())
        });
        last = views
            .iter()
            .map(|(s, v)| match v {
                Ok(v) => format!("node {s} lists {:?} (leader {:?})", v.nodes, v.leader_id),
                Err(e) => e.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        ok.then_some(())
    });
    assert!(
        grown.is_some(),
        "node {slot} ({addr}) joined via {via} (expand 200), but the members {members:?} do not all list it: {last}"
    );
    cluster
        .wait_for_leader_among(members, LEADER_TIMEOUT)
        .unwrap_or_else(|e| panic!("after node {slot} joined: {e}"));
    took
}

/// Shrinks `gone` out via `via`, asserting 200, and waits until `rest` all stop listing it.
#[track_caller]
fn remove(cluster: &Cluster, gone: usize, via: usize, rest: &[usize], force: bool) {
    let resp = ok_response(
        "shrink",
        shrink(&mut cluster.conn(via), cluster.addr(gone), force),
    );
    assert_eq!(
        resp.status,
        200,
        "shrink (force {force}) of node {gone} via {via}: {}",
        resp.text()
    );
    let addr = cluster.addr(gone).to_string();
    let shrunk = poll(LEADER_TIMEOUT, Duration::from_millis(200), || {
        rest.iter()
            .all(|&s| {
                matches!(cluster.describe(s), Ok(v) if v.nodes.len() == rest.len()
                    && v.id_of(&addr).is_none())
            })
            .then_some(())
    });
    assert!(
        shrunk.is_some(),
        "node {gone} is still listed after the shrink"
    );
}

/// A cluster of one (node 0, leading) with room for two more nodes to join.
fn one_of_three(tag: &str) -> Cluster {
    one_of_three_with(tag, |_| {})
}

/// [`one_of_three`], with `setup` run on the laid-out cluster before node 0 starts.
fn one_of_three_with(tag: &str, setup: impl FnOnce(&mut Cluster)) -> Cluster {
    let mut cluster = Cluster::new(
        tag,
        ClusterOpts {
            slots: 3,
            members: 1,
            bootstrap_json: false,
            proxy: false,
        },
    );
    setup(&mut cluster);
    cluster.start_node(0);
    cluster.wait_for_leader(LEADER_TIMEOUT).unwrap();
    cluster
}

/// The normal production setup, `tls.ca` set (client certificates are verified against the
/// CA; peers authenticate with the HSM-derived key regardless): a node joins a cluster whose
/// state spans several snapshot chunks (about 1.6 MB of secrets, chunks of 256 KiB, and a
/// hundred keys): the snapshot streams in chunks and arrives whole; then a second join, forwarded by a follower,
/// happens while the first new node serves; every node holds every item and takes writes.
#[test]
fn expand_streams_a_snapshot_of_many_chunks() {
    let mut cluster = one_of_three_with("big-snapshot", Cluster::set_tls_ca);
    let mut conn = cluster.conn(0);
    const SECRETS: usize = 8;
    const KEYS: usize = 100;
    let secrets: Vec<Vec<u8>> = (0..SECRETS)
        .map(|i| (0..200_000).map(|j| ((i * 31 + j) % 251) as u8).collect())
        .collect();
    for (i, secret) in secrets.iter().enumerate() {
        let resp = ok_response(
            "secret create",
            conn.request(
                "PUT",
                &format!("/v1/secret/create/big-{i}"),
                Some(&json!({"secret": b64(secret), "type": "generic"})),
            ),
        );
        assert_eq!(resp.status, 200, "secret {i}: {}", resp.text());
    }
    for i in 0..KEYS {
        create_ok(&mut conn, &format!("small-{i}"));
    }
    let took = join(&mut cluster, 1, 0, &[0, 1]);
    join(&mut cluster, 2, 1, &[0, 1, 2]);
    for slot in [1, 2] {
        let mut conn = cluster.conn(slot);
        for (i, secret) in secrets.iter().enumerate() {
            let resp = ok_response(
                "secret read",
                conn.read("GET", &format!("/v1/secret/read/big-{i}"), None),
            );
            assert_eq!(resp.status, 200, "node {slot}, secret {i}: {}", resp.text());
            let value: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            let got = unb64(value["secret"].as_str().unwrap_or_default());
            assert!(
                got == *secret,
                "node {slot}: secret {i} differs after the snapshot"
            );
        }
        for i in (0..KEYS).step_by(7) {
            describe_ok(&mut conn, &format!("small-{i}"), "after a chunked snapshot");
        }
    }
    let names: Vec<String> = (0..3)
        .map(|s| write_until_ok(&cluster, &[s], &format!("after-join-{s}"), HEAL_TIMEOUT).0)
        .collect();
    for s in 0..3 {
        for name in &names {
            describe_ok(&mut cluster.conn(s), name, "a write after the joins");
        }
    }
    let links = cluster.describe(0).unwrap().raw["links"].clone();
    println!(
        "joined a node with ~1.6 MB of state in {:.0} ms (tls.ca set); node 0's links: {links}",
        ms(took)
    );
}

fn recover(cluster: &Cluster, slot: usize, keep: &[usize], force: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(support::KES_NODE);
    cmd.args(["cluster", "recover"]);
    if force {
        cmd.arg("--force");
    }
    for &k in keep {
        cmd.arg("--keep").arg(cluster.addr(k).to_string());
    }
    cmd.arg(cluster.dir(slot))
        .env("KES_HSM_KEY", support::HSM_KEY)
        .output()
        .expect("run kes-node cluster recover")
}

/// Offline recovery: a 3-node cluster loses two nodes for good, so the survivor can neither
/// write nor win an election. `cluster recover --force --keep <survivor>` (refused without
/// --force, and while the node runs) makes it a cluster of one: it keeps all its data,
/// writes again, and `.cluster.json` lists only it.
#[test]
fn recover_force_makes_a_lone_survivor_a_cluster_again() {
    let mut cluster = Cluster::start(
        "recover",
        ClusterOpts {
            slots: 3,
            members: 3,
            bootstrap_json: true,
            proxy: false,
        },
    );
    let (before, _) = write_until_ok(&cluster, &[0, 1, 2], "before-loss", HEAL_TIMEOUT);
    cluster.kill(1);
    cluster.kill(2);
    let survivor = 0;

    // Running: the database is locked; nothing changes and the node keeps serving reads.
    let out = recover(&cluster, survivor, &[survivor], true);
    assert!(!out.status.success(), "recover succeeded on a running node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another process"),
        "recover on a running node: {err}"
    );
    describe_ok(
        &mut cluster.conn(survivor),
        &before,
        "after a refused recover",
    );

    cluster.stop(survivor);
    let out = recover(&cluster, survivor, &[survivor], false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force"), "no hint at --force: {err}");
    let out = recover(&cluster, survivor, &[survivor], true);
    assert!(
        out.status.success(),
        "recover --force failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read_to_string(cluster.dir(survivor).join(".cluster.json")).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(
        listed.as_object().map(|o| o.len()),
        Some(1),
        ".cluster.json after recover: {file}"
    );
    assert!(file.contains(&cluster.addr(survivor).to_string()), "{file}");

    cluster.start_node(survivor);
    cluster
        .wait_for_leader_among(&[survivor], LEADER_TIMEOUT)
        .unwrap_or_else(|e| panic!("after recover: {e}"));
    describe_ok(
        &mut cluster.conn(survivor),
        &before,
        "a key written before the loss",
    );
    let (after, _) = write_until_ok(&cluster, &[survivor], "after-recover", HEAL_TIMEOUT);
    describe_ok(
        &mut cluster.conn(survivor),
        &after,
        "a key written after recover",
    );
    let view = cluster.describe(survivor).unwrap();
    assert_eq!(view.nodes.len(), 1, "{:?}", view.nodes);
}

/// A follower dies. A plain shrink of it cannot commit (its acknowledgement is needed), a
/// forced shrink afterwards must, and writes go on without it. When it comes back it must
/// refuse to serve (it must not answer from its old state).
#[test]
fn force_removed_node_refuses_to_serve_when_it_returns() {
    let mut cluster = Cluster::start("force-return", ClusterOpts::nodes(3));
    let mut conn = cluster.conn(0);
    create_ok(&mut conn, "before-removal");
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).unwrap();
    let dead = (leader + 1) % 3;
    let rest: Vec<usize> = (0..3).filter(|&s| s != dead).collect();
    cluster.kill(dead);
    let start = Instant::now();
    let plain = match shrink(&mut cluster.conn(leader), cluster.addr(dead), false) {
        Ok(resp) => {
            assert_ne!(
                resp.status,
                200,
                "a plain shrink of a dead node cannot commit: {}",
                resp.text()
            );
            format!("{} {}", resp.status, error_message(&resp))
        }
        Err(err) => err.to_string(),
    };
    let plain_took = start.elapsed();
    // The forced shrink, through a node that is not the leader, until the pending plain one
    // is out of its way.
    let via = *rest.iter().find(|&&s| s != leader).unwrap();
    let forced = wait_until(HEAL_TIMEOUT, Duration::from_millis(500), || {
        match shrink(&mut cluster.conn(via), cluster.addr(dead), true) {
            Ok(resp) if resp.status == 200 => Ok(()),
            Ok(resp) => Err(format!("{} {}", resp.status, error_message(&resp))),
            Err(err) => Err(err.to_string()),
        }
    });
    if let Err(e) = forced {
        panic!(
            "forced shrink of the dead node {dead} after a plain shrink answered {plain:?}: {e}"
        );
    }
    let shrunk = wait_until(LEADER_TIMEOUT, Duration::from_millis(100), || {
        let views: Vec<_> = rest.iter().map(|&s| cluster.describe(s)).collect();
        if views
            .iter()
            .all(|v| matches!(v, Ok(v) if v.nodes.len() == rest.len()))
        {
            Ok(())
        } else {
            Err(format!("{views:?}"))
        }
    });
    shrunk.unwrap_or_else(|e| panic!("node {dead} is still listed after the forced shrink: {e}"));
    let (name, took) = write_until_ok(&cluster, &rest, "after-forced", HEAL_TIMEOUT);
    for &s in &rest {
        describe_ok(&mut cluster.conn(s), &name, "after forced shrink");
    }
    // It comes back: it refuses to serve (or to start at all), and never answers from its
    // old state (a 404 for the key created after its removal would be a stale read).
    let outcome = match cluster.try_start_node(dead, &[]) {
        Ok(()) => {
            assert_refuses(&cluster, dead, &name, "the force-removed node back");
            assert_refuses(
                &cluster,
                dead,
                "before-removal",
                "the force-removed node back",
            );
            "refuses (503)".to_string()
        }
        Err(exit) => {
            assert!(
                exit.status.is_some_and(|s| !s.success()),
                "removed node {dead} neither served nor exited: {exit:?}"
            );
            format!("exits: {:?}", exit.stderr.lines().last())
        }
    };
    println!(
        "force-removed node returns: dead={dead} plain shrink answered {plain:?} after {:.0} ms, write ok {:.0} ms after the forced shrink, comeback {outcome}",
        ms(plain_took),
        ms(took)
    );
}

/// Downloads a backup from `slot` and restores it into a new directory with `kes-node
/// restore`; returns the backup's size.
#[track_caller]
fn backup_restores(cluster: &Cluster, slot: usize, tag: &str) -> usize {
    let resp = ok_response(
        "backup",
        cluster
            .conn(slot)
            .request("GET", "/v1/cluster/backup", None),
    );
    assert_eq!(resp.status, 200, "backup from node {slot}: {}", resp.text());
    let file = cluster.root().join(format!("{tag}.backup"));
    std::fs::write(&file, &resp.body).unwrap();
    let dir = cluster.root().join(format!("{tag}-restored"));
    let out = std::process::Command::new(support::KES_NODE)
        .arg("restore")
        .arg("--from")
        .arg(&file)
        .arg(&dir)
        .env("KES_HSM_KEY", support::HSM_KEY)
        .output()
        .expect("run kes-node restore");
    assert!(
        out.status.success(),
        "restore of node {slot}'s backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    resp.body.len()
}

/// Joins chained through nodes that joined by snapshot, on a fresh cluster (every table but
/// `enclave` empty): A → B; A leaves, so B (which joined by snapshot) leads and ships C's
/// snapshot; B leaves, so C leads and ships D's. Writes and reads on every node after each
/// step, and a backup from a node that joined by snapshot restores.
#[test]
fn joins_chain_through_nodes_that_joined_by_snapshot() {
    let mut cluster = Cluster::new(
        "join-chain",
        ClusterOpts {
            slots: 4,
            members: 1,
            bootstrap_json: false,
            proxy: false,
        },
    );
    cluster.start_node(0);
    cluster.wait_for_leader(LEADER_TIMEOUT).unwrap();
    // Nothing written yet: the snapshot B gets has empty tables.
    join(&mut cluster, 1, 0, &[0, 1]);
    let mut written = Vec::new();
    for (leaving, next, members) in [(0usize, 2usize, vec![1usize, 2]), (1, 3, vec![2, 3])] {
        // The leader leaves: it hands its leadership to the node that joined by snapshot.
        let rest: Vec<usize> = vec![leaving + 1];
        remove(&cluster, leaving, leaving, &rest, false);
        let leader = cluster
            .wait_for_leader_among(&rest, LEADER_TIMEOUT)
            .unwrap_or_else(|e| panic!("after node {leaving} left: {e}"));
        assert_eq!(leader, leaving + 1);
        // The removed node's `.cluster.json` says so: it no longer lists the node itself.
        let file = cluster.dir(leaving).join(".cluster.json");
        let own = cluster.addr(leaving).to_string();
        let rewritten = poll(LEADER_TIMEOUT, Duration::from_millis(100), || {
            let text = std::fs::read_to_string(&file).ok()?;
            (!text.contains(&own)).then_some(text)
        });
        assert!(
            rewritten.is_some(),
            "node {leaving} was removed but its .cluster.json still lists it: {:?}",
            std::fs::read_to_string(&file)
        );
        // The removed node still runs, and refuses to serve.
        assert_refuses(
            &cluster,
            leaving,
            "never-written",
            "a removed former leader",
        );
        join(&mut cluster, next, leader, &members);
        // It does not take the configuration that adds the next node either.
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            !text.contains(&cluster.addr(next).to_string()),
            "the removed node {leaving} took the new configuration: {text}"
        );
        for &s in &members {
            let (name, _) = write_until_ok(&cluster, &[s], &format!("chain-{s}"), HEAL_TIMEOUT);
            written.push(name);
        }
        for &s in &members {
            for name in &written {
                describe_ok(&mut cluster.conn(s), name, "after a chained join");
            }
        }
    }
    // The last node, which joined by snapshot, restarts on what it installed.
    cluster.restart(3);
    let mut conn = cluster.conn(3);
    for name in &written {
        let status = settled_status(&mut conn, name, HEAL_TIMEOUT);
        assert_eq!(
            status.map(|s| s.0),
            Some(200),
            "{name} on node 3 after a restart"
        );
    }
    let size = backup_restores(&cluster, 3, "chain");
    println!(
        "join chain: 0 -> 1 -> 2 -> 3, each snapshot shipped by a node that joined by snapshot; {} keys on every node; backup from node 3: {size} bytes, restored",
        written.len()
    );
}

/// `PUT /v1/cluster/expand` once; the status and the KES error message.
fn expand_once(cluster: &Cluster, via: usize, endpoint: &str) -> (u16, String) {
    let resp = ok_response(
        "expand",
        cluster.conn(via).request(
            "PUT",
            "/v1/cluster/expand",
            Some(&json!({"endpoint": endpoint})),
        ),
    );
    (resp.status, error_message(&resp))
}

/// Asserts that an expand via `via` was refused and changed nothing: the cluster is still
/// `members`, nothing is pending, and a write commits at once.
#[track_caller]
fn still_writable(cluster: &Cluster, via: usize, members: usize, case: &str) {
    let view = cluster.describe(via).unwrap();
    assert_eq!(
        view.nodes.len(),
        members,
        "{case}: membership changed: {:?}",
        view.nodes
    );
    assert!(
        view.raw.get("pending_change").is_none(),
        "{case}: a change is pending: {}",
        view.raw
    );
    create_ok(
        &mut cluster.conn(via),
        &format!("after-{}", case.replace(' ', "-")),
    );
}

/// An expand that cannot succeed is refused with a clear error and changes nothing: nothing
/// listens at the endpoint (a typo'd port), a standalone node that does not wait to join,
/// and a joining node with another HSM key (it refuses the peer). The cluster stays writable
/// after each; then a real joining node is added, and `cluster info` shows the links.
#[test]
fn expand_that_cannot_succeed_is_refused_and_changes_nothing() {
    let mut cluster = one_of_three("expand-refused");
    let mut answers = Vec::new();

    let unused = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (status, message) = expand_once(&cluster, 0, &unused);
    assert_eq!(status, 400, "nothing listens: {message}");
    assert!(message.contains("cannot reach"), "{message}");
    still_writable(&cluster, 0, 1, "unused port");
    answers.push(format!("unused port: {status} {message}"));

    // A standalone node (no --join, no .cluster.json): a cluster of its own.
    cluster.start_node(1);
    let (status, message) = expand_once(&cluster, 0, &cluster.addr(1).to_string());
    assert_eq!(status, 400, "standalone node: {message}");
    assert!(message.contains("not waiting to join"), "{message}");
    still_writable(&cluster, 0, 1, "standalone node");
    answers.push(format!("standalone node: {status} {message}"));

    // A joining node that holds another HSM key: the Hello does not verify.
    cluster.set_env(2, Some(("KES_HSM_KEY", support::OTHER_HSM_KEY)));
    cluster.start_node_with(2, &["--join"]);
    let (status, message) = expand_once(&cluster, 0, &cluster.addr(2).to_string());
    assert_eq!(status, 400, "another HSM key: {message}");
    assert!(message.contains("refused the peer connection"), "{message}");
    still_writable(&cluster, 0, 1, "other hsm key");
    answers.push(format!("another HSM key: {status} {message}"));

    // The standalone node, restarted empty with --join, is added; the links show up.
    cluster.kill(1);
    std::fs::remove_dir_all(cluster.dir(1)).unwrap();
    std::fs::create_dir_all(cluster.dir(1)).unwrap();
    join(&mut cluster, 1, 0, &[0, 1]);
    let links = poll(LEADER_TIMEOUT, Duration::from_millis(100), || {
        let raw = cluster.describe(0).ok()?.raw;
        (raw["links"]["1"]["state"] == "connected").then_some(raw)
    });
    assert!(
        links.is_some(),
        "node 0 never shows its link to node 1 as connected"
    );
    cluster.kill(1);
    let down = poll(LEADER_TIMEOUT, Duration::from_millis(100), || {
        let raw = cluster.describe(0).ok()?.raw;
        let link = &raw["links"]["1"];
        (link["state"] == "unreachable").then(|| link.to_string())
    })
    .expect("node 0 never shows node 1 as unreachable");
    let out = cluster.cli(0, &["cluster", "info"]);
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{info}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        info.lines()
            .any(|l| l.contains(&cluster.addr(1).to_string()) && l.contains("unreachable")),
        "cluster info: {info}"
    );
    answers.push(format!("link to a killed member: {down}"));
    println!(
        "expand refusals:\n  {}\ncluster info:\n{info}",
        answers.join("\n  ")
    );
}

/// An expand stuck on a member that died right after the new node was prepared (the leader
/// had heard from it a moment before, so the expand went ahead): `cluster info` shows the
/// pending change and the dead member unreachable, and no other change passes. `kes-node cluster rm
/// --force` of the dead member gets the change out of the way: the old leader and the new
/// node form the cluster, take writes and serve every key.
#[test]
fn stuck_expand_is_got_out_of_the_way_with_a_forced_shrink() {
    let mut cluster = Cluster::start(
        "stuck-expand",
        ClusterOpts {
            slots: 3,
            members: 2,
            bootstrap_json: true,
            proxy: false,
        },
    );
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).unwrap();
    let dead = 1 - leader;
    create_ok(&mut cluster.conn(leader), "before-stuck");
    cluster.start_node_with(2, &["--join"]);
    let new = cluster.addr(2).to_string();
    // The expand runs in the background while the test looks at the stuck cluster; it is
    // answered once the change commits (after the forced shrink below) or times out.
    let mut attempt = None;
    for _ in 0..3 {
        cluster.kill(dead);
        let (addr, body) = (cluster.addr(leader), json!({"endpoint": new}));
        let expand = std::thread::spawn(move || {
            let resp = Conn::new(addr, Duration::from_secs(30))
                .request("PUT", "/v1/cluster/expand", Some(&body))
                .expect("expand: no response");
            (resp.status, error_message(&resp))
        });
        let pending = poll(HEAL_TIMEOUT, Duration::from_millis(50), || {
            if expand.is_finished() {
                return Some(None);
            }
            let raw = cluster.describe(leader).ok()?.raw;
            let change = raw["pending_change"].as_str()?;
            change
                .contains("adding node 2")
                .then(|| Some(change.to_string()))
        });
        match pending.flatten() {
            Some(change) => {
                attempt = Some((expand, change));
                break;
            }
            None => {
                let answer = expand.join().unwrap();
                // The leader noticed the death first (a slow machine): bring it back, retry.
                assert!(
                    answer.1.contains("an expand needs every member"),
                    "{answer:?}"
                );
                cluster.start_node(dead);
                cluster.wait_for_leader(LEADER_TIMEOUT).unwrap();
            }
        }
    }
    let (expand, pending) = attempt.expect("the expand never went ahead of the member's death");
    // Another change cannot pass the pending one, and says why.
    let other = ok_response(
        "plain shrink while a change is pending",
        shrink(&mut cluster.conn(leader), cluster.addr(2), false),
    );
    let other = format!("{} {}", other.status, error_message(&other));
    assert!(
        other.starts_with("503") && other.contains("a membership change is pending"),
        "{other}"
    );
    let out = cluster.cli(leader, &["cluster", "info"]);
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(info.contains("pending change"), "{info}");

    let out = cluster.cli(
        leader,
        &["cluster", "rm", "--force", &cluster.addr(dead).to_string()],
    );
    assert!(
        out.status.success(),
        "cluster rm --force of the dead member: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let members = [leader, 2];
    let settled = poll(LEADER_TIMEOUT, Duration::from_millis(100), || {
        members
            .iter()
            .all(|&s| {
                matches!(cluster.describe(s), Ok(v) if v.nodes.len() == 2
                    && v.id_of(&new).is_some()
                    && v.raw.get("pending_change").is_none())
            })
            .then_some(())
    });
    assert!(
        settled.is_some(),
        "the forced shrink did not settle: {:?}",
        cluster.describe(leader)
    );
    // The stuck expand committed with the forced shrink (or timed out first, naming the node).
    let (status, message) = expand.join().unwrap();
    assert!(
        status == 200
            || (status == 503
                && names_node(&message, dead as u64, &cluster.addr(dead).to_string())),
        "{status} {message}"
    );
    let (name, took) = write_until_ok(&cluster, &members, "after-stuck", HEAL_TIMEOUT);
    for &s in &members {
        describe_ok(&mut cluster.conn(s), &name, "after the forced shrink");
        describe_ok(
            &mut cluster.conn(s),
            "before-stuck",
            "after the forced shrink",
        );
    }
    println!(
        "stuck expand: pending: {pending}; a plain shrink meanwhile: {other}; after cluster rm --force of node {dead}, the expand answered {status} {message} and a write took {:.0} ms\ncluster info while stuck:\n{info}",
        ms(took)
    );
}

// -------------------------------------------------------------------------------------------
// The harness itself (no server needed)
// -------------------------------------------------------------------------------------------

/// A TCP echo server for the proxy tests; counts the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                // Blocking accepts; drop wakes the last one with a connection of its own.
                for sock in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match sock {
                        Ok(mut sock) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = sock.read(&mut buf) {
                                    if n == 0 || sock.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(err) => panic!("echo accept: {err}"),
                    }
                }
            })
        };
        Echo {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dial(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock
}

/// Sends `msg` and reads it back; `Err` if the connection fails or closes instead.
fn echo_roundtrip(sock: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    sock.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    let mut off = 0;
    while off < got.len() {
        match sock.read(&mut got[off..]) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => off += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if got == msg {
        Ok(())
    } else {
        Err(format!("echoed {got:?}"))
    }
}

/// Whether the connection is closed (EOF or reset) within `within`, with no data.
fn closed_within(sock: &mut TcpStream, within: Duration) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 16];
    let _ = sock.write_all(b"ping");
    match sock.read(&mut buf) {
        Ok(0) => true,
        Err(e) => matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted),
        Ok(_) => false,
    }
}

/// Whether the connection stays silent and open for `within`.
fn silent_for(sock: &mut TcpStream, within: Duration) -> bool {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 16];
    let _ = sock.write_all(b"ping");
    matches!(sock.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

#[test]
fn harness_free_ports_are_distinct_and_bindable() {
    let ports = free_ports(16);
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), 16, "{ports:?}");
    for p in &ports {
        TcpListener::bind(("127.0.0.1", *p)).unwrap_or_else(|e| panic!("port {p}: {e}"));
    }
    let more = free_ports(4);
    assert!(
        more.iter().all(|p| !distinct.contains(p)),
        "{more:?} reuses {ports:?}"
    );
}

#[test]
fn harness_proxy_forwards_cuts_and_heals() {
    let echo = Echo::start();
    let link = Link::start(echo.addr).unwrap();
    let mut a = dial(link.addr());
    echo_roundtrip(&mut a, b"hello").unwrap();
    echo_roundtrip(&mut a, &[7u8; 100_000]).unwrap();
    // The pump counts a chunk after writing it: the count may trail the echo a moment.
    let counted = poll(Duration::from_secs(3), Duration::from_millis(10), || {
        (link.stats().bytes >= 200_010).then_some(())
    });
    assert!(counted.is_some(), "{:?}", link.stats());
    assert_eq!(link.stats().forwarded, 1);

    // Cut (refuse): the open connection dies, new ones die at once, the target sees none.
    link.cut(CutMode::Refuse);
    assert!(link.is_cut());
    assert!(
        closed_within(&mut a, Duration::from_secs(2)),
        "open connection survived a cut"
    );
    let before = echo.accepted.load(Ordering::SeqCst);
    let mut b = dial(link.addr());
    assert!(
        closed_within(&mut b, Duration::from_secs(2)),
        "new connection not refused"
    );
    assert!(echo_roundtrip(&mut dial(link.addr()), b"x").is_err());
    assert_eq!(
        echo.accepted.load(Ordering::SeqCst),
        before,
        "a cut link reached the target"
    );

    // Heal: new connections forward again.
    link.heal();
    assert!(!link.is_cut());
    let mut c = dial(link.addr());
    echo_roundtrip(&mut c, b"again").unwrap();

    // Half-close is passed on: the target's answer still arrives after our EOF.
    let mut d = dial(link.addr());
    d.write_all(b"bye").unwrap();
    d.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");

    // A target that is down looks like a refused connection.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    link.set_target(gone);
    let mut e = dial(link.addr());
    assert!(closed_within(&mut e, Duration::from_secs(3)));

    // Drop stops everything promptly, even with connections open.
    link.set_target(echo.addr);
    let _open = dial(link.addr());
    let start = Instant::now();
    drop(link);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        closed_within(&mut c, Duration::from_secs(2)),
        "connection outlived the proxy"
    );
}

#[test]
fn harness_proxy_black_hole_holds_connections_until_heal() {
    let echo = Echo::start();
    let link = Link::start(echo.addr).unwrap();
    let mut a = dial(link.addr());
    echo_roundtrip(&mut a, b"one").unwrap();
    link.cut(CutMode::BlackHole);
    assert!(
        closed_within(&mut a, Duration::from_secs(2)),
        "open connection survived a cut"
    );
    let before = echo.accepted.load(Ordering::SeqCst);
    let mut held = dial(link.addr());
    assert!(
        silent_for(&mut held, Duration::from_millis(300)),
        "black hole answered"
    );
    // The accept thread may still be filing the connection away.
    let held_one = wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
        let stats = link.stats();
        if stats.held == 1 {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    });
    held_one.unwrap();
    assert_eq!(echo.accepted.load(Ordering::SeqCst), before);
    link.heal();
    assert!(
        closed_within(&mut held, Duration::from_secs(2)),
        "held connection not closed on heal"
    );
    echo_roundtrip(&mut dial(link.addr()), b"two").unwrap();
}

#[test]
fn harness_proxy_partition_isolates_one_node() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let proxy = Proxy::new(&echoes.iter().map(|e| e.addr).collect::<Vec<_>>());
    let env = proxy.dial_env(0);
    assert_eq!(
        env,
        format!(
            "1={},2={}",
            proxy.link(0, 1).addr(),
            proxy.link(0, 2).addr()
        )
    );
    for i in 0..3 {
        for (j, echo) in echoes.iter().enumerate() {
            if i != j {
                assert_eq!(proxy.link(i, j).target(), echo.addr);
            }
        }
    }
    let mut open: BTreeMap<(usize, usize), TcpStream> = BTreeMap::new();
    for ((i, j), _) in proxy.stats() {
        let mut s = dial(proxy.link(i, j).addr());
        echo_roundtrip(&mut s, b"up").unwrap();
        open.insert((i, j), s);
    }
    proxy.partition(1, CutMode::Refuse);
    assert_eq!(proxy.cut_links(), vec![(0, 1), (1, 0), (1, 2), (2, 1)]);
    for ((i, j), s) in open.iter_mut() {
        if *i == 1 || *j == 1 {
            assert!(
                closed_within(s, Duration::from_secs(2)),
                "{i}->{j} survived"
            );
            assert!(echo_roundtrip(&mut dial(proxy.link(*i, *j).addr()), b"x").is_err());
        } else {
            echo_roundtrip(s, b"still").unwrap();
        }
    }
    proxy.heal_node(1);
    assert!(proxy.cut_links().is_empty());
    echo_roundtrip(&mut dial(proxy.link(1, 2).addr()), b"back").unwrap();
    proxy.cut_between(0, 2, CutMode::BlackHole);
    assert_eq!(proxy.cut_links(), vec![(0, 2), (2, 0)]);
    proxy.heal_all();
    assert!(proxy.cut_links().is_empty());
}

#[test]
fn harness_cluster_layout_and_bootstrap_files() {
    let cluster = Cluster::new("layout", ClusterOpts::nodes(3).with_proxy());
    let want = format!(
        "{{\"0\":\"{}\",\"1\":\"{}\",\"2\":\"{}\"}}\n",
        cluster.addr(0),
        cluster.addr(1),
        cluster.addr(2)
    );
    for i in 0..3 {
        let got = std::fs::read_to_string(cluster.dir(i).join(".cluster.json")).unwrap();
        assert_eq!(got, want);
        assert!(!cluster.is_up(i));
        assert!(cluster.addr(i).ip().is_loopback());
    }
    let config = std::fs::read_to_string(cluster.config_path()).unwrap();
    assert!(config.contains(&support::pki().admin.identity), "{config}");
    let env = cluster.proxy().dial_env(2);
    assert!(
        env.starts_with("0=127.0.0.1:") && env.contains(",1=127.0.0.1:"),
        "{env}"
    );

    let spare = Cluster::new(
        "layout-spare",
        ClusterOpts {
            slots: 3,
            members: 1,
            bootstrap_json: false,
            proxy: false,
        },
    );
    for i in 0..3 {
        assert!(!spare.dir(i).join(".cluster.json").exists());
    }
}

#[test]
fn harness_describe_parsing_and_error_naming() {
    let v = ClusterView::parse(
        &json!({"nodes": {"0": "127.0.0.1:1", "10": "127.0.0.1:2"}, "leader_id": 10}),
    )
    .unwrap();
    assert_eq!(v.leader_id, Some(10));
    assert_eq!(v.id_of("127.0.0.1:2"), Some(10));
    for none in [json!(18446744073709551615u64), json!(null), json!(-1)] {
        let v = ClusterView::parse(&json!({"nodes": {"0": "a:1"}, "leader_id": none})).unwrap();
        assert_eq!(v.leader_id, None);
    }
    assert_eq!(
        ClusterView::parse(&json!({"nodes": {"0": "a:1"}}))
            .unwrap()
            .leader_id,
        None
    );
    assert!(ClusterView::parse(&json!({"leader_id": 0})).is_err());

    assert!(names_node(
        "cluster: node '127.0.0.1:7003' is unreachable",
        2,
        "127.0.0.1:7003"
    ));
    assert!(names_node("unreachable nodes: [2]", 2, "127.0.0.1:7003"));
    assert!(names_node("Node 2 is down", 2, "x"));
    assert!(!names_node("unreachable nodes: [1]", 2, "127.0.0.1:7003"));
    assert!(!names_node("service unavailable", 2, "127.0.0.1:7003"));
}

#[test]
fn harness_history_checker() {
    let h = History::new();
    let rec = |key: &str, event, call, ret| Record {
        key: key.into(),
        node: 0,
        event,
        call,
        ret,
        detail: String::new(),
    };
    // A create seen by a later read, an unknown create never seen, a concurrent read.
    h.push(rec("a", Event::Read(false), 0, Some(5)));
    h.push(rec("a", Event::Create, 10, Some(20)));
    h.push(rec("a", Event::Read(true), 15, Some(18)));
    h.push(rec("a", Event::Read(true), 25, Some(30)));
    h.push(rec("b", Event::Create, 10, None));
    h.push(rec("b", Event::Read(false), 40, Some(50)));
    assert_eq!(h.check(), Ok(2));
    // A stale read after an acknowledged create is caught.
    h.push(rec("a", Event::Read(false), 31, Some(32)));
    let err = h.check().unwrap_err();
    assert!(err.contains("key a"), "{err}");
    // A key that appears without any create is caught too.
    let h = History::new();
    h.push(rec("c", Event::Read(true), 0, Some(1)));
    assert!(h.check().is_err());

    assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(percentile(&samples, 50.0), Duration::from_millis(51));
    assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
}

/// With `cluster.read_lease`, a node cut off from the leader stops answering reads once its
/// lease runs out (instead of serving possibly stale data), while the connected nodes keep
/// reading; after the heal it serves again. Without the lease (the partition test above) the
/// cut-off node keeps answering reads.
#[test]
fn read_lease_stops_reads_on_a_cut_off_node() {
    let mut cluster = Cluster::new("lease", ClusterOpts::nodes(3).with_proxy());
    let config = cluster.root().join("config.yml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("cluster:\n  read_lease: 1s\n  clock_drift: 100ms\n");
    std::fs::write(&config, text).unwrap();
    cluster.start_nodes(&[0, 1, 2]);
    let leader = cluster.wait_ready(LEADER_TIMEOUT).expect("a leader");
    let mut conns: Vec<Conn> = (0..3).map(|i| cluster.conn(i)).collect();
    create_ok(&mut conns[leader], "leased");
    for conn in conns.iter_mut() {
        describe_ok(conn, "leased", "before the partition");
    }

    let k = (leader + 1) % 3;
    cluster.proxy().partition(k, CutMode::Refuse);
    // The lease (1 s) runs out; poll until the cut-off node refuses (bounded).
    let refused = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match conns[k].read("GET", "/v1/key/describe/leased", None) {
            Ok(resp) if resp.status == 503 => Ok(error_message(&resp)),
            Ok(resp) => {
                assert_eq!(
                    resp.status,
                    200,
                    "node {k} while its lease lasts: {}",
                    resp.text()
                );
                Err("200".into())
            }
            Err(err) => Err(err.to_string()),
        },
    )
    .unwrap_or_else(|e| panic!("node {k} kept serving reads without a lease: {e}"));
    assert!(refused.contains("lease"), "the refusal says why: {refused}");
    // The connected nodes keep reading.
    for i in (0..3).filter(|&i| i != k) {
        describe_ok(&mut conns[i], "leased", "during the partition");
    }

    cluster.proxy().heal_all();
    let served = wait_until(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || match conns[k].read("GET", "/v1/key/describe/leased", None) {
            Ok(resp) if resp.status == 200 => Ok(()),
            Ok(resp) => Err(format!("{} {}", resp.status, error_message(&resp))),
            Err(err) => Err(err.to_string()),
        },
    );
    served.unwrap_or_else(|e| panic!("node {k} does not serve reads after the heal: {e}"));
    println!("read lease: node {k} refused reads during the partition ({refused}) and served after the heal");
}

/// A write a follower forwarded to the leader, whose answer is lost (the link between the two
/// breaks, or the leader freezes with its links open), is answered `503` within about two
/// election timeouts, saying that it may or may not have been made: never a failure (the
/// leader may have committed it), and not after the forward timeout (6 s; 120 s for a
/// membership change). The third node is cut off first, so the write is still pending at the
/// leader (every node must store it) when its answer is lost.
#[test]
fn a_forwarded_write_whose_answer_is_lost_gets_503_outcome_unknown_within_seconds() {
    let mut cluster = Cluster::start("lost-answer", ClusterOpts::nodes(3).with_proxy());
    let mut summary = Vec::new();
    for phase in ["the link to the leader breaks", "the leader freezes"] {
        let leader = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .unwrap_or_else(|e| panic!("{phase}: {e}"));
        let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
        // Everything commits before the fault: the pending write is the only one.
        write_until_ok(&cluster, &[follower], "lost-answer-pre", HEAL_TIMEOUT);
        cluster.proxy().partition(other, CutMode::BlackHole);
        let name = format!("lost-answer-{}", summary.len());
        let addr = cluster.addr(follower);
        let (took, resp) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut conn = Conn::new(addr, Duration::from_secs(20));
                let res = conn.request("PUT", &create_path(&name), None);
                (Instant::now(), res)
            });
            // The write reaches the leader and waits there for the third node.
            std::thread::sleep(Duration::from_millis(300));
            let fault = Instant::now();
            match summary.len() {
                0 => cluster
                    .proxy()
                    .cut_between(follower, leader, CutMode::Refuse),
                _ => cluster.pause(leader),
            }
            let (answered, res) = writer.join().expect("writer panicked");
            (answered - fault, ok_response(&name, res))
        });
        let msg = error_message(&resp);
        assert_eq!(resp.status, 503, "{phase}: {} {msg}", resp.status);
        assert!(
            msg.contains("may or may not have been made"),
            "{phase}: the answer ({:.0} ms after the fault) says the outcome is unknown: {msg}",
            ms(took)
        );
        assert!(
            took < Duration::from_secs(5),
            "{phase}: answered {:.0} ms after the fault: {msg}",
            ms(took)
        );
        if summary.len() == 1 {
            cluster.resume(leader);
        }
        cluster.proxy().heal_all();
        summary.push(format!("{phase}: 503 after {:.0} ms ({msg})", ms(took)));
    }
    // The cluster recovers and takes writes again.
    write_until_ok(&cluster, &[0, 1, 2], "lost-answer-post", HEAL_TIMEOUT);
    println!("lost answers: {}", summary.join("; "));
}
