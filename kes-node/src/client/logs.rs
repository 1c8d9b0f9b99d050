//! The server's audit and error logs as iterators over events as they happen: each event is
//! one line of an ndjson stream that stays open until the server or the caller ends it.
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::{http, Client, ClientError};

impl Client {
    /// The audit log from now on (`GET /v1/log/audit`; Go: `AuditLog`): one event per
    /// request the server answers (that the caller may see). Items are the raw JSON lines;
    /// `.events::<AuditEvent>()` decodes them.
    ///
    /// The stream runs on a connection of its own, so the client stays usable meanwhile.
    pub fn audit_log(&self) -> Result<LogStream, ClientError> {
        self.log_stream("/v1/log/audit")
    }

    /// The error log from now on (`GET /v1/log/error`; Go: `ErrorLog`); decode with
    /// `.events::<ErrorEvent>()`.
    pub fn error_log(&self) -> Result<LogStream, ClientError> {
        self.log_stream("/v1/log/error")
    }

    fn log_stream(&self, path: &str) -> Result<LogStream, ClientError> {
        Ok(LogStream {
            inner: self.open_stream(path)?.0,
        })
    }
}

/// Log events as they arrive: each item is one line of the server's ndjson stream. The
/// iterator blocks until the next event; it ends when the server ends the stream.
pub struct LogStream {
    inner: http::Stream,
}

impl LogStream {
    /// The events decoded as `T`: [`AuditEvent`](super::AuditEvent) for the audit log,
    /// [`ErrorEvent`](super::ErrorEvent) for the error log.
    pub fn events<T: DeserializeOwned>(self) -> Events<T> {
        Events {
            lines: self,
            kind: PhantomData,
        }
    }
}

impl Iterator for LogStream {
    type Item = Result<String, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            return match self.inner.next_line() {
                Ok(Some(line)) if line.trim().is_empty() => continue,
                Ok(Some(line)) => Some(Ok(line)),
                Ok(None) => None,
                Err(e) => Some(Err(ClientError::Transport(e.to_string()))),
            };
        }
    }
}

/// A [`LogStream`] decoded: see [`LogStream::events`]. A line that does not decode is a
/// [`ClientError::Response`].
pub struct Events<T> {
    lines: LogStream,
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Events<T> {
    type Item = Result<T, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = self.lines.next()?;
        Some(line.and_then(|line| {
            serde_json::from_str(&line)
                .map_err(|e| ClientError::Response(format!("invalid log event: {e}")))
        }))
    }
}
