//! `kes-node bench`: a KES load generator. Each of N connections runs in its own thread with a
//! kept-alive mTLS connection (the blocking client), issuing one operation in a loop for a fixed
//! time or until a total number of requests; it prints requests per second and latency
//! percentiles (or one JSON object with `--json`). It works against any KES-compatible server,
//! and against a static server answering every path with one JSON body that has the fields the
//! operations read (the baseline of `bench/run.sh`).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client_command;
use crate::client::{Client, ClientError};

client_command! {
    /// Load-test a KES server: N connections, one operation, a fixed time or request count.
    #[argh(subcommand, name = "bench")]
    pub(crate) struct BenchArgs {
        /// operation: version, generate, encrypt, decrypt, hmac, create, create-delete
        /// (default generate)
        #[argh(option, default = "String::from(\"generate\")")]
        op: String,
        /// number of concurrent connections (default 16)
        #[argh(option, short = 'c', default = "16")]
        connections: usize,
        /// seconds to run (default 10; ignored with --requests)
        #[argh(option, default = "10")]
        seconds: u64,
        /// stop after this many operations in total instead of after --seconds (a create-delete
        /// is two requests)
        #[argh(option, short = 'n')]
        requests: Option<u64>,
        /// the key the crypto operations use (created if missing; default bench-key)
        #[argh(option, default = "String::from(\"bench-key\")")]
        key: String,
    }
}

const OPS: [&str; 7] = [
    "version",
    "generate",
    "encrypt",
    "decrypt",
    "hmac",
    "create",
    "create-delete",
];

/// One worker's measurements.
#[derive(Default)]
struct Samples {
    /// Microseconds per successful request.
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// When the workers stop: a deadline or a shared budget of requests.
struct Limit {
    stop: AtomicBool,
    budget: Option<u64>,
    issued: AtomicU64,
}

impl Limit {
    /// Takes one request from the budget; false once the run is over.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.budget {
            Some(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
            None => true,
        }
    }
}

pub(crate) fn run(a: BenchArgs) -> Result<(), String> {
    if !OPS.contains(&a.op.as_str()) {
        return Err(format!(
            "unknown operation '{}' (one of {})",
            a.op,
            OPS.join(", ")
        ));
    }
    let setup = a.connect()?;
    if !matches!(a.op.as_str(), "version" | "create" | "create-delete") {
        match setup.create_key(&a.key) {
            Ok(()) => {}
            Err(ClientError::Exists(_)) => {}
            Err(e) => return Err(format!("cannot create the benchmark key: {e}")),
        }
    }
    let ciphertext = match a.op.as_str() {
        "decrypt" => setup
            .generate_key(&a.key, b"")
            .map_err(|e| e.to_string())?
            .ciphertext
            .clone(),
        _ => Vec::new(),
    };
    let limit = Arc::new(Limit {
        stop: AtomicBool::new(false),
        budget: a.requests,
        issued: AtomicU64::new(0),
    });
    let run_id: u64 = u64::from_le_bytes(crate::random::bytes());
    let op: Arc<str> = a.op.as_str().into();
    let key: Arc<str> = a.key.as_str().into();
    let ciphertext: Arc<[u8]> = ciphertext.into();
    // Connect every worker before the clock starts; the first request opens the connection.
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        let client = a.connect()?;
        client
            .version()
            .map_err(|e| format!("cannot reach the server: {e}"))?;
        clients.push(client);
    }
    let started = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| {
            let (op, key, ct, limit) = (op.clone(), key.clone(), ciphertext.clone(), limit.clone());
            std::thread::spawn(move || work(&client, &op, &key, &ct, &limit, run_id, w))
        })
        .collect();
    if a.requests.is_none() {
        std::thread::sleep(Duration::from_secs(a.seconds));
        limit.stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for w in workers {
        let s = w
            .join()
            .map_err(|_| "a worker thread panicked".to_string())?;
        all.extend(s.latencies);
        errors += s.errors;
        first_error = first_error.or(s.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[i]) / 1000.0
    };
    let rate = all.len() as f64 / elapsed;
    if a.json {
        let v = serde_json::json!({
            "op": a.op, "connections": a.connections, "seconds": elapsed,
            "requests": all.len(), "errors": errors, "rps": rate,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        });
        println!("{v}");
    } else {
        println!(
            "{} x{}: {} requests in {elapsed:.1}s = {rate:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {errors} errors",
            a.op,
            a.connections,
            all.len(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0)
        );
    }
    if let Some(e) = first_error {
        eprintln!("kes-node bench: first error: {e}");
    }
    Ok(())
}

/// One connection's loop: the operation again and again until the limit says stop.
fn work(
    client: &Client,
    op: &str,
    key: &str,
    ciphertext: &[u8],
    limit: &Limit,
    run_id: u64,
    worker: usize,
) -> Samples {
    let mut s = Samples::default();
    let mut record = |started: Instant, result: Result<(), String>| match result {
        Ok(()) => s
            .latencies
            .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)),
        Err(e) => {
            s.errors += 1;
            s.first_error.get_or_insert(e);
        }
    };
    let mut i = 0u64;
    while limit.next() {
        let started = Instant::now();
        let name = || format!("bench-{run_id:x}-{worker}-{i}");
        let result = match op {
            "version" => client.version().map(|_| ()),
            "generate" => client.generate_key(key, b"").map(|_| ()),
            "encrypt" => client
                .encrypt(key, b"a 32 byte long benchmark message", b"")
                .map(|_| ()),
            "decrypt" => client.decrypt(key, ciphertext, b"").map(|_| ()),
            "hmac" => client.hmac(key, b"benchmark").map(|_| ()),
            "create" => client.create_key(&name()),
            _ => {
                // create-delete: two requests, each counted and timed on its own.
                let created = client.create_key(&name());
                let failed = created.is_err();
                record(started, created.map_err(|e| e.to_string()));
                if failed {
                    i += 1;
                    continue;
                }
                let started = Instant::now();
                let deleted = client.delete_key(&name());
                record(started, deleted.map_err(|e| e.to_string()));
                i += 1;
                continue;
            }
        };
        record(started, result.map_err(|e| e.to_string()));
        i += 1;
    }
    s
}
