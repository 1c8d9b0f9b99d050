//! `limits:` (ours, not upstream's): what clients may hold. The event loop enforces them
//! (`net/limits.rs` and `net/admission.rs` say how).
use std::time::Duration;

/// Connection and memory limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in total (HTTP and peer links); also kept below the process's file
    /// descriptor limit.
    pub connections: usize,
    /// Open connections from one source address.
    pub connections_per_ip: usize,
    /// Time from accept to the end of the TLS handshake and the first request's head.
    pub handshake_timeout: Duration,
    /// Bytes of buffered input and output across all connections: beyond it, connections stop
    /// reading (backpressure) until answers drain; the admin's connections are exempt.
    pub memory: usize,
    /// Bytes queued for one log subscriber (`/v1/log/...`); one that falls further behind is
    /// dropped: its stream ends.
    pub log_queue: usize,
    /// Event loops (`limits.workers`, `--workers`): `None` is `auto`, one per core this
    /// process may use (see `net/workers.rs`).
    pub workers: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 16 * 1024,
            connections_per_ip: 4 * 1024,
            handshake_timeout: Duration::from_secs(5),
            memory: 256 << 20,
            log_queue: 1 << 20,
            workers: None,
        }
    }
}
