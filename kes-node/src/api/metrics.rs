//! Prometheus metrics with upstream's family names (spec §4.6), rendered in text format 0.0.4.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];

/// Request counters by status code and a latency histogram.
#[derive(Default)]
pub struct Metrics {
    codes: Mutex<BTreeMap<u16, u64>>,
    latency: Mutex<Histogram>,
    pub audit_events: AtomicU64,
    pub error_events: AtomicU64,
    /// How often a request was routed, and authorized (not exported: they show that a
    /// request that waited goes on without either again, see `api/parked.rs`).
    pub routed: AtomicU64,
    pub authorized: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts a response; `latency` is the handler's time when it ran.
    pub fn record(&self, status: u16, latency: Option<Duration>) {
        *self
            .codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
        if let Some(d) = latency {
            let secs = d.as_secs_f64();
            let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// The exposition text.
    pub fn render(&self, uptime: Duration) -> String {
        let mut out = String::new();
        let codes = self.codes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (family, help, range) in [
            (
                "kes_http_request_success",
                "Number of successful requests.",
                200..300,
            ),
            (
                "kes_http_request_error",
                "Number of failed requests (4xx).",
                400..500,
            ),
            (
                "kes_http_request_failure",
                "Number of failed requests (5xx).",
                500..600,
            ),
        ] {
            let series: Vec<_> = codes.iter().filter(|(c, _)| range.contains(*c)).collect();
            // Upstream omits a counter vector with no children; clients reject empty families.
            if series.is_empty() && family == "kes_http_request_failure" {
                continue;
            }
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for (code, n) in series {
                let _ = writeln!(out, "{family}{{code=\"{code}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP kes_http_request_active Number of active requests.\n# TYPE kes_http_request_active gauge\nkes_http_request_active 0");
        {
            let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "# HELP kes_http_response_time Response time in seconds.\n# TYPE kes_http_response_time histogram");
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kes_http_response_time_bucket{{le=\"{le}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "kes_http_response_time_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "kes_http_response_time_sum {}\nkes_http_response_time_count {}",
                h.sum, h.count
            );
        }
        let mem = crate::sysinfo::memory();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let gauges: [(&str, &str, &str, f64); 8] = [
            (
                "kes_log_audit_events",
                "counter",
                "Number of audit log events.",
                self.audit_events.load(Ordering::Relaxed) as f64,
            ),
            (
                "kes_log_error_events",
                "counter",
                "Number of error log events.",
                self.error_events.load(Ordering::Relaxed) as f64,
            ),
            (
                "kes_system_mem_heap_objects",
                "gauge",
                "Number of heap objects (not tracked: 0).",
                0.0,
            ),
            (
                "kes_system_mem_heap_used",
                "gauge",
                "Resident memory in bytes.",
                mem.resident as f64,
            ),
            (
                "kes_system_mem_stack_used",
                "gauge",
                "Stack memory in bytes.",
                mem.stack as f64,
            ),
            (
                "kes_system_num_cpu",
                "gauge",
                "Number of CPUs.",
                cpus as f64,
            ),
            (
                "kes_system_num_cpu_used",
                "gauge",
                "Number of CPUs used.",
                cpus as f64,
            ),
            (
                "kes_system_num_threads",
                "gauge",
                "Number of threads.",
                mem.threads as f64,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let up = (uptime.as_millis() / 10) as f64 / 100.0;
        let _ = writeln!(out, "# HELP kes_system_up_time Uptime in seconds.\n# TYPE kes_system_up_time gauge\nkes_system_up_time {up}");
        out
    }
}
