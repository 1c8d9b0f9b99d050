//! What clients may hold (the config's `limits:` section, ours): connection admission and the
//! memory budget for buffered input and output.
//!
//! Every connection counts, HTTP and peer links alike. When the server is full, or a source
//! address holds its share, a newcomer takes the slot of the oldest *unauthenticated*
//! connection (TLS not finished, or an identity that is neither the admin nor known to the
//! store) rather than being refused; connections of known identities are never evicted. So an
//! attacker holding thousands of connections only ever evicts itself, and the admin (or any
//! known client) still gets in, even from the attacker's own address.
pub(crate) use crate::config::Limits;

impl Limits {
    /// The number of event loops: `workers`, else the cores this process may use.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// One event loop's share when `n` loops serve: connection counts and the memory budget
    /// are split evenly (rounded up), so the server as a whole keeps the configured limits
    /// without the loops sharing a counter on every read and write.
    pub fn share(&self, n: usize) -> Limits {
        let part = |v: usize| v.div_ceil(n.max(1)).max(1);
        Limits {
            connections: part(self.connections),
            connections_per_ip: part(self.connections_per_ip),
            memory: part(self.memory),
            ..self.clone()
        }
    }

    /// `connections`, kept below the open-file limit of this process (with room for the
    /// store, the listener and the peers' dials), so that accept never fails for lack of one.
    pub fn effective_connections(&self) -> usize {
        let files = open_file_limit().unwrap_or(1024);
        self.connections.min(files.saturating_sub(64).max(16))
    }
}

/// The soft `Max open files` of this process (from `/proc/self/limits`; no unsafe code).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    match soft {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_file_limit_is_read() {
        assert!(super::open_file_limit().is_some_and(|n| n > 0));
    }
}
