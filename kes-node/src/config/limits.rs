//! `limits:` (ours, not upstream's): what clients may hold. The event loop enforces them
//! (`net/limits.rs` and `net/admission.rs` say how).
use std::time::Duration;

use super::{parse_go_duration, Fields};

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

/// `limits:`: every field optional, defaults from [`Limits::default`].
pub(super) fn parse_limits(section: &Fields) -> Result<Limits, String> {
    section.check_known(
        &[
            "connections",
            "connections_per_ip",
            "handshake_timeout",
            "memory",
            "log_queue",
            "workers",
        ],
        &[],
    )?;
    let workers = match section.string("workers")? {
        None => None,
        Some(v) if v == "auto" => None,
        Some(v) => Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("config: limits.workers: expected auto or a positive number, found '{v}'")
        })?),
    };
    let mut limits = Limits {
        workers,
        ..Default::default()
    };
    let count = |field: &str, into: &mut usize| -> Result<(), String> {
        if let Some(v) = section.string(field)? {
            *into = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("config: limits.{field}: expected a positive number, found '{v}'")
            })?;
        }
        Ok(())
    };
    count("connections", &mut limits.connections)?;
    count("connections_per_ip", &mut limits.connections_per_ip)?;
    let size = |field: &str, into: &mut usize| -> Result<(), String> {
        if let Some(v) = section.string(field)? {
            *into = parse_size(&v).filter(|n| *n > 0).ok_or_else(|| {
                format!("config: limits.{field}: expected a size such as 64MiB, found '{v}'")
            })?;
        }
        Ok(())
    };
    size("memory", &mut limits.memory)?;
    size("log_queue", &mut limits.log_queue)?;
    if let Some(v) = section.string("handshake_timeout")? {
        limits.handshake_timeout = parse_go_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "config: limits.handshake_timeout: expected a duration such as 5s, found '{v}'"
                )
            })?;
    }
    Ok(limits)
}

/// A byte size: a number with an optional unit (`KB`/`MB`/`GB` are powers of 1000,
/// `KiB`/`MiB`/`GiB` of 1024).
pub(super) fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..digits].parse().ok()?;
    let unit: usize = match s[digits..].trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}
