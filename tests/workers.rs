//! N event loops over real TLS and real processes: a server with `--workers 4` serves key,
//! policy and identity routes to 32 concurrent connections (writes proxied to the loop that
//! owns the backend), a log stream on one loop receives the events of requests served on the
//! others, connections really spread across the loops, a request made once a stream's head
//! arrived is in that stream whichever loop serves it, and a 3-node cluster with two loops per
//! node takes writes on every node, and SIGTERM sent the moment the server says it listens
//! stops every loop (exit 0).
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{Cluster, ClusterOpts};
use support::{Client, Env, Server};

const CLIENTS: usize = 32;

/// The per-loop accepted-connection counters of `/v1/metrics`.
fn accepted_per_worker(server: &Server) -> Vec<u64> {
    let text = server.admin().get("/v1/metrics").text();
    text.lines()
        .filter(|l| l.starts_with("kes_http_worker_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Opens the audit stream on its own connection.
fn audit_stream(server: &Server) -> Client {
    let mut c = server.admin();
    let req = format!("GET /v1/log/audit HTTP/1.1\r\nHost: {}\r\n\r\n", c.host);
    c.send_raw(req.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(c.pending()).contains("\r\n\r\n") {
        assert!(Instant::now() < deadline, "no stream head");
        assert!(!c.peer_closed_within(Duration::from_millis(50)).unwrap());
    }
    c
}

/// Reads the stream until every needle arrived.
fn wait_for_all(stream: &mut Client, needles: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(stream.pending()).to_string();
        let missing: Vec<&String> = needles.iter().filter(|n| !text.contains(*n)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "no events for {missing:?}");
        assert!(
            !stream
                .peer_closed_within(Duration::from_millis(100))
                .unwrap(),
            "stream closed"
        );
    }
}

#[test]
fn four_workers_serve_every_route_to_many_connections() {
    let mut env = Env::new("workers-4");
    env.set_workers(4);
    let server = env.start();
    assert!(
        server.stdout().contains("4 event loops"),
        "{}",
        server.stdout()
    );
    // Subscribed before the load: every request's audit event must reach this one loop.
    let mut audit = audit_stream(&server);
    let addr = server.addr;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || {
                let cert = &support::pki().admin;
                let mut c = Client::connect(addr, Some(cert), Default::default()).unwrap();
                let key = format!("w-key-{i}");
                c.put(&format!("/v1/key/create/{key}")).assert_empty_ok();
                for _ in 0..3 {
                    let g = c.put_json(&format!("/v1/key/generate/{key}"), &json!({}));
                    let g = g.assert_json_ok();
                    let d = c.put_json(
                        &format!("/v1/key/decrypt/{key}"),
                        &json!({"ciphertext": g["ciphertext"]}),
                    );
                    assert_eq!(d.assert_json_ok()["plaintext"], g["plaintext"]);
                }
                let listed = c.get(&format!("/v1/key/list/{key}")).text();
                assert!(listed.contains(&key), "{listed}");
                let policy = format!("w-policy-{i}");
                c.put_json(
                    &format!("/v1/policy/create/{policy}"),
                    &json!({"allow": ["/v1/key/generate/*"]}),
                )
                .assert_empty_ok();
                let p = c.get(&format!("/v1/policy/describe/{policy}"));
                assert_eq!(p.status, 200, "{}", p.text());
                c.delete(&format!("/v1/key/delete/{key}")).assert_empty_ok();
                assert_eq!(
                    c.put_json(&format!("/v1/key/generate/{key}"), &json!({}))
                        .status,
                    404
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every write above was decided by worker 0, whichever loop held the connection.
    let needles: Vec<String> = (0..CLIENTS)
        .map(|i| format!("/v1/key/delete/w-key-{i}"))
        .collect();
    wait_for_all(&mut audit, &needles);
    let head = String::from_utf8_lossy(audit.pending()).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let accepted = accepted_per_worker(&server);
    assert_eq!(accepted.len(), 4, "{accepted:?}");
    assert!(accepted.iter().sum::<u64>() > CLIENTS as u64);
    let busy = accepted.iter().filter(|n| **n > 0).count();
    assert!(busy >= 2, "connections did not spread: {accepted:?}");
}

/// Rounds of [`a_request_made_once_the_stream_head_arrived_is_in_the_stream`].
const SUBSCRIBE_ROUNDS: usize = 200;

/// True once `stream` delivered every needle; false if one did not come within `wait`.
fn all_arrive(stream: &mut Client, needles: &[String], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let text = String::from_utf8_lossy(stream.pending()).to_string();
        if needles.iter().all(|n| text.contains(n)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        assert!(
            !stream
                .peer_closed_within(Duration::from_millis(50))
                .unwrap(),
            "stream closed"
        );
    }
}

/// The 200 head of a log stream means "subscribed": every request made after it arrived is
/// in the stream, also one served at once by another loop (the subscription used to be
/// counted only after the head was sent, and a loop that audited a request meanwhile saw no
/// subscriber and dropped its event). Each round opens a stream and, the moment its head
/// arrives, sends a request on each of four connections held open (spread across the loops).
#[test]
fn a_request_made_once_the_stream_head_arrived_is_in_the_stream() {
    let mut env = Env::new("workers-subscribe");
    env.set_workers(4);
    let server = env.start();
    let mut others: Vec<Client> = (0..4).map(|_| server.admin()).collect();
    let mut missed = Vec::new();
    for round in 0..SUBSCRIBE_ROUNDS {
        let mut audit = audit_stream(&server);
        let needles: Vec<String> = (0..others.len())
            .map(|j| format!("/v1/key/describe/sub-{round}-{j}"))
            .collect();
        // All four sent before any answer is read: they race the stream's loop together.
        for (c, path) in others.iter_mut().zip(&needles) {
            let req = c.build_request("GET", path, &[], None);
            c.send_raw(&req).unwrap();
        }
        for c in &mut others {
            assert_eq!(c.read_response().unwrap().status, 404);
        }
        if !all_arrive(&mut audit, &needles, Duration::from_secs(2)) {
            missed.push(round);
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {SUBSCRIBE_ROUNDS} rounds missed a request made after the head: {missed:?}",
        missed.len()
    );
}

#[test]
fn one_worker_is_one_loop() {
    let mut env = Env::new("workers-1");
    env.set_workers(1);
    let server = env.start();
    assert!(!server.stdout().contains("event loops"));
    let mut c = server.admin();
    c.put("/v1/key/create/k").assert_empty_ok();
    assert_eq!(accepted_per_worker(&server).len(), 1);
}

#[test]
fn cluster_with_two_workers_per_node_writes_on_every_node() {
    let mut cluster = Cluster::new("workers-cluster", ClusterOpts::nodes(3));
    cluster.workers = Some(2);
    cluster.start_nodes(&[0, 1, 2]);
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader");
    let threads: Vec<_> = (0..3)
        .flat_map(|node| (0..4).map(move |j| (node, j)))
        .map(|(node, j)| {
            let mut c = cluster.client(node);
            std::thread::spawn(move || {
                let key = format!("c-{node}-{j}");
                c.put(&format!("/v1/key/create/{key}")).assert_empty_ok();
                key
            })
        })
        .collect();
    let keys: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Every write is on every node (each answered on whichever loop holds the connection).
    for node in 0..3 {
        let mut c = cluster.client(node);
        for key in &keys {
            let g = c.put_json(&format!("/v1/key/generate/{key}"), &json!({}));
            assert_eq!(g.status, 200, "node {node}, {key}: {}", g.text());
        }
    }
}

/// SIGTERM the moment the listening line is out: every event loop must stop and the process
/// exit 0. Before the signal handler was installed ahead of that line and one loop stopped the
/// others, the signal could arrive before a worker thread had registered for it (that worker
/// then served on and the process never exited), or before any loop had (the process died of
/// the signal).
#[test]
fn sigterm_right_after_listening_stops_every_worker() {
    const ROUNDS: usize = 30;
    for workers in [1, 4] {
        let mut env = Env::new(&format!("workers-sigterm-{workers}"));
        env.set_workers(workers);
        for _ in 0..ROUNDS {
            env.start().stop();
        }
    }
}
