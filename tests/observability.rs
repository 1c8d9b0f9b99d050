//! Observability over real TLS: the audit and error log streams are held open by the event
//! loop and receive events for requests made on other connections, and the Prometheus
//! counters move with the requests.
mod support;

use std::time::{Duration, Instant};

use support::{pki, Client, Env, Server};

/// Opens a log stream on its own connection and checks the response head.
fn subscribe(server: &Server, path: &str) -> Client {
    let mut c = server.admin();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", c.host);
    c.send_raw(req.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(c.pending()).contains("\r\n\r\n") {
        assert!(
            Instant::now() < deadline,
            "the stream's head must arrive at once"
        );
        assert!(
            !c.peer_closed_within(Duration::from_millis(100)).unwrap(),
            "stream closed"
        );
    }
    let head = String::from_utf8_lossy(c.pending()).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: application/x-ndjson"),
        "{head}"
    );
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    c
}

/// Waits until the stream delivered something containing `needle`.
fn wait_for(stream: &mut Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(stream.pending()).to_string();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no event with {needle:?} in {text:?}"
        );
        assert!(
            !stream
                .peer_closed_within(Duration::from_millis(100))
                .unwrap(),
            "stream closed"
        );
    }
}

#[test]
fn audit_stream_gets_events_from_other_connections() {
    let env = Env::new("obs-audit");
    let server = env.start();
    let mut audit = subscribe(&server, "/v1/log/audit");

    let mut admin = server.admin();
    admin.put("/v1/key/create/obs-1").assert_empty_ok();
    admin
        .get("/v1/key/describe/obs-missing")
        .assert_error(404, "key does not exist");

    let text = wait_for(&mut audit, "/v1/key/describe/obs-missing");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?} is JSON: {e}")))
        .collect();
    let create = events
        .iter()
        .find(|e| e["request"]["path"] == "/v1/key/create/obs-1")
        .expect("an event for the create");
    assert_eq!(create["response"]["code"], 200);
    assert_eq!(create["request"]["identity"], pki().admin.identity.as_str());
    assert_eq!(create["request"]["ip"], "127.0.0.1");
    assert!(create["response"]["time"].as_u64().unwrap() > 0, "{create}");
    assert!(create["time"].as_str().unwrap().ends_with('Z'), "{create}");
    let missing = events
        .iter()
        .find(|e| e["request"]["path"] == "/v1/key/describe/obs-missing")
        .unwrap();
    assert_eq!(missing["response"]["code"], 404);
}

#[test]
fn a_non_admin_cannot_subscribe_and_streams_do_not_block_others() {
    let env = Env::new("obs-denied");
    let server = env.start();
    let mut other = server.client(&pki().other);
    other
        .get("/v1/log/audit")
        .assert_error(403, "not authorized: insufficient permissions");
    // Many open streams, and the server still answers everyone else at once.
    let _streams: Vec<Client> = (0..8)
        .map(|_| subscribe(&server, "/v1/log/error"))
        .collect();
    let mut admin = server.admin();
    let started = Instant::now();
    for i in 0..20 {
        admin
            .put(&format!("/v1/key/create/obs-{i}"))
            .assert_empty_ok();
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The value of one sample line `name{labels} value` (or `name value`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[test]
fn metrics_count_requests_and_log_events() {
    let env = Env::new("obs-metrics");
    let server = env.start();
    let mut admin = server.admin();
    let resp = admin.get("/v1/metrics");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = resp.text();
    for family in [
        "kes_http_request_success",
        "kes_http_request_error",
        "kes_http_request_active",
        "kes_http_response_time",
        "kes_log_audit_events",
        "kes_log_error_events",
        "kes_system_up_time",
        "kes_system_num_cpu",
        "kes_system_mem_heap_used",
    ] {
        assert!(
            before.contains(&format!("# TYPE {family} ")),
            "{family} in {before}"
        );
    }

    let mut audit = subscribe(&server, "/v1/log/audit");
    for i in 0..3 {
        admin
            .put(&format!("/v1/key/create/m-{i}"))
            .assert_empty_ok();
    }
    admin
        .get("/v1/key/describe/m-none")
        .assert_error(404, "key does not exist");
    let after = admin.get("/v1/metrics").text();

    let ok = r#"kes_http_request_success{code="200"}"#;
    let not_found = r#"kes_http_request_error{code="404"}"#;
    assert!(sample(&after, ok) >= sample(&before, ok) + 3.0, "{after}");
    assert_eq!(
        sample(&after, not_found),
        sample(&before, not_found) + 1.0,
        "{after}"
    );
    let count = "kes_http_response_time_count";
    assert!(
        sample(&after, count) >= sample(&before, count) + 4.0,
        "{after}"
    );
    // Events are written to subscribers after the request that caused them is answered, so
    // the counter may trail the requests by a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = admin.get("/v1/metrics").text();
        if sample(&now, "kes_log_audit_events") >= 4.0 {
            break;
        }
        assert!(Instant::now() < deadline, "audit events are counted: {now}");
        let _ = audit.peer_closed_within(Duration::from_millis(50));
    }
    wait_for(&mut audit, "/v1/key/describe/m-none");
}
