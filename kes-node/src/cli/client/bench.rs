//! `kes-node bench`: a KES load generator. Each of N connections runs in its own thread with a
//! kept-alive TLS connection (the blocking client), issuing one operation in a loop for a fixed
//! time; it prints requests per second and latency percentiles. It works against any
//! KES-compatible server.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client_command;

client_command! {
    /// Load-test a KES server: N connections, one operation, a fixed time.
    #[argh(subcommand, name = "bench")]
    pub struct BenchArgs {
        /// operation: version, generate, encrypt, decrypt, hmac, create (default generate)
        #[argh(option, default = "String::from(\"generate\")")]
        op: String,
        /// number of concurrent connections (default 16)
        #[argh(option, default = "16")]
        connections: usize,
        /// seconds to run (default 10)
        #[argh(option, default = "10")]
        seconds: u64,
        /// the key the crypto operations use (created if missing; default bench-key)
        #[argh(option, default = "String::from(\"bench-key\")")]
        key: String,
    }
}

/// One worker's measurements.
struct Samples {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

pub fn run(a: BenchArgs) -> Result<(), String> {
    if ![
        "version", "generate", "encrypt", "decrypt", "hmac", "create",
    ]
    .contains(&a.op.as_str())
    {
        return Err(format!("unknown operation '{}'", a.op));
    }
    let setup = a.connect()?;
    if a.op != "version" && a.op != "create" {
        match setup.create_key(&a.key) {
            Ok(()) => {}
            Err(e) if e.to_string().contains("already exists") => {}
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
    let stop = Arc::new(AtomicBool::new(false));
    let run_id: u64 = u64::from_le_bytes(crate::random::bytes());
    let mut workers = Vec::new();
    for w in 0..a.connections.max(1) {
        let client = a.connect()?;
        let (op, key, ct, stop) = (
            a.op.clone(),
            a.key.clone(),
            ciphertext.clone(),
            stop.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let mut s = Samples {
                latencies: Vec::new(),
                errors: 0,
                first_error: None,
            };
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = match op.as_str() {
                    "version" => client.version().map(|_| ()),
                    "generate" => client.generate_key(&key, b"").map(|_| ()),
                    "encrypt" => client
                        .encrypt(&key, b"a 32 byte long benchmark message", b"")
                        .map(|_| ()),
                    "decrypt" => client.decrypt(&key, &ct, b"").map(|_| ()),
                    "hmac" => client.hmac(&key, b"benchmark").map(|_| ()),
                    _ => client.create_key(&format!("bench-{run_id:x}-{w}-{i}")),
                };
                i += 1;
                match result {
                    Ok(()) => s.latencies.push(started.elapsed()),
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            s
        }));
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
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
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i].as_secs_f64() * 1000.0
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
