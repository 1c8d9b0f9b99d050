//! The audit and error logs: events go to the subscribers of `/v1/log/audit` and
//! `/v1/log/error` (long-lived ndjson streams held by the event loop) and, if configured, to
//! standard output / standard error.
//!
//! Handlers only queue events here; the event loop takes them after each round of I/O and
//! writes them to the streaming connections, so producing an event never blocks on a client.
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Which stream an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Audit,
    Error,
}

impl Topic {
    /// The topic of a log stream path.
    pub fn of_path(path: &str) -> Option<Topic> {
        match path {
            "/v1/log/audit" => Some(Topic::Audit),
            "/v1/log/error" => Some(Topic::Error),
            _ => None,
        }
    }
}

/// Queued events and who wants them.
#[derive(Default)]
pub struct LogHub {
    pending: Mutex<Vec<(Topic, Vec<u8>)>>,
    audit_subscribers: AtomicUsize,
    error_subscribers: AtomicUsize,
    /// Audit events to standard output (`log.audit: on`).
    pub audit_to_stdout: bool,
    /// Error events to standard error (`log.error: on`).
    pub error_to_stderr: bool,
}

#[derive(Serialize)]
struct AuditEvent<'a> {
    time: String,
    request: AuditRequest<'a>,
    response: AuditResponse,
}

#[derive(Serialize)]
struct AuditRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    path: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    identity: &'a str,
}

#[derive(Serialize)]
struct AuditResponse {
    code: u16,
    /// Nanoseconds, as the Go client decodes a `time.Duration`.
    time: u64,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    message: &'a str,
}

impl LogHub {
    fn subscribers(&self, topic: Topic) -> &AtomicUsize {
        match topic {
            Topic::Audit => &self.audit_subscribers,
            Topic::Error => &self.error_subscribers,
        }
    }

    /// A stream of `topic` opened (`+1`) or closed (`-1`).
    pub fn subscribe(&self, topic: Topic, delta: isize) {
        let n = self.subscribers(topic);
        if delta >= 0 {
            n.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(delta.unsigned_abs()))
            });
        }
    }

    /// Records that a request was answered.
    pub fn audit(&self, ip: Option<IpAddr>, path: &str, identity: &str, code: u16, took: Duration) {
        let streaming = self.audit_subscribers.load(Ordering::Relaxed) > 0;
        if !streaming && !self.audit_to_stdout {
            return;
        }
        let event = AuditEvent {
            time: crate::timefmt::rfc3339(crate::timefmt::now()),
            request: AuditRequest {
                ip: ip.map(|i| i.to_string()),
                path,
                identity,
            },
            response: AuditResponse {
                code,
                time: took.as_nanos().min(u64::MAX as u128) as u64,
            },
        };
        let line = crate::http::go_json(&event);
        if self.audit_to_stdout {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&line);
        }
        if streaming {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Topic::Audit, line));
        }
    }

    /// Records an error (never with secrets in `message`).
    pub fn error(&self, message: &str) {
        let text = format!(
            "time={} level=ERROR msg={message:?}",
            crate::timefmt::rfc3339(crate::timefmt::now())
        );
        if self.error_to_stderr {
            eprintln!("{text}");
        }
        if self.error_subscribers.load(Ordering::Relaxed) > 0 {
            let line = crate::http::go_json(&ErrorEvent { message: &text });
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Topic::Error, line));
        }
    }

    /// Takes the queued events.
    pub fn take(&self) -> Vec<(Topic, Vec<u8>)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
