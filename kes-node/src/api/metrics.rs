//! Prometheus metrics with upstream's family names (spec §4.6), rendered in text format 0.0.4.
//! Counted with relaxed atomics (no lock on the request path: every event loop counts here),
//! summed only when rendered.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];

/// Status codes counted: 100 to 599.
const CODES: std::ops::Range<u16> = 100..600;

/// Request counters by status code and a latency histogram.
pub(crate) struct Metrics {
    /// By status code, from 100.
    codes: Box<[AtomicU64]>,
    latency: Histogram,
    pub audit_events: AtomicU64,
    pub error_events: AtomicU64,
    /// How often a request was routed, and authorized (not exported: they show that a
    /// request that waited goes on without either again, see `api/parked.rs`).
    pub routed: AtomicU64,
    pub authorized: AtomicU64,
    /// Connections accepted by each event loop (set once the loops start).
    accepted: OnceLock<Box<[AtomicU64]>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            codes: CODES.map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
            audit_events: AtomicU64::new(0),
            error_events: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            authorized: AtomicU64::new(0),
            accepted: OnceLock::new(),
        }
    }
}

#[derive(Default)]
struct Histogram {
    /// Responses by the first bucket they fall under (not cumulative: see `record`).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Nanoseconds.
    sum: AtomicU64,
}

impl Metrics {
    /// Counts a response; `latency` is the handler's time when it ran.
    pub(crate) fn record(&self, status: u16, latency: Option<Duration>) {
        if let Some(n) = self.codes.get(status.wrapping_sub(CODES.start) as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = latency {
            let secs = d.as_secs_f64();
            let h = &self.latency;
            // One increment (its own bucket; rendering sums them up), not one per bucket it
            // falls under: every event loop counts here, so each is a shared cache line.
            if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
                h.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            h.count.fetch_add(1, Ordering::Relaxed);
            let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
            h.sum.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// The event loops start: `n` of them.
    pub(crate) fn set_workers(&self, n: usize) {
        let _ = self
            .accepted
            .set((0..n).map(|_| AtomicU64::new(0)).collect());
    }

    /// Event loop `id` accepted `n` connections.
    pub(crate) fn accepted(&self, id: usize, n: u64) {
        if let Some(c) = self.accepted.get().and_then(|a| a.get(id)) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The exposition text.
    pub(crate) fn render(&self, uptime: Duration) -> String {
        let mut out = String::new();
        let codes: Vec<(u16, u64)> = CODES
            .zip(self.codes.iter())
            .map(|(c, n)| (c, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
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
            let series: Vec<_> = codes.iter().filter(|(c, _)| range.contains(c)).collect();
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
        if let Some(accepted) = self.accepted.get() {
            let _ = writeln!(out, "# HELP kes_http_worker_connections Connections accepted by each event loop (ours).\n# TYPE kes_http_worker_connections counter");
            for (i, n) in accepted.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                let _ = writeln!(out, "kes_http_worker_connections{{worker=\"{i}\"}} {n}");
            }
        }
        {
            let h = &self.latency;
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "# HELP kes_http_response_time Response time in seconds.\n# TYPE kes_http_response_time histogram");
            let mut below = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                below += h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "kes_http_response_time_bucket{{le=\"{le}\"}} {below}");
            }
            // Counted apart from the buckets: never let a render that raced a request show
            // fewer in +Inf than below it.
            let count = count.max(below);
            let _ = writeln!(out, "kes_http_response_time_bucket{{le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "kes_http_response_time_sum {sum}\nkes_http_response_time_count {count}"
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are counted one per response and rendered cumulative, as Prometheus reads them.
    #[test]
    fn histogram_renders_cumulative_buckets() {
        let m = Metrics::default();
        for ms in [5, 200, 20_000] {
            m.record(200, Some(Duration::from_millis(ms)));
        }
        let text = m.render(Duration::from_secs(1));
        let bucket = |le: &str| {
            let line = format!("kes_http_response_time_bucket{{le=\"{le}\"}} ");
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("no {line} in {text}"));
            text[at + line.len()..].lines().next().unwrap().to_owned()
        };
        assert_eq!(bucket("0.01"), "1");
        assert_eq!(bucket("0.1"), "1");
        assert_eq!(bucket("0.25"), "2");
        assert_eq!(bucket("10"), "2");
        assert_eq!(bucket("+Inf"), "3");
    }
}
