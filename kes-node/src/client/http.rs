//! Blocking HTTP/1.1 over rustls: one request at a time on a kept-alive connection.
//!
//! A response is read in two steps: the head (status line and headers, parsed by httparse),
//! then the body, framed by `Content-Length`, by `Transfer-Encoding: chunked`, or by the end
//! of the connection. A connection is kept for the next request unless the server said
//! `Connection: close`, the body ran to the end of the connection, or anything went wrong.
//! A streamed response (the log routes) keeps its connection: [`Stream`] reads its chunks as
//! they arrive.
//!
//! Every exchange has a [`Deadline`] (`deadline.rs`), which no read or write of the socket
//! under TLS goes past.
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::deadline::{Deadline, Timed};
use super::ClientError;

/// The largest response body we accept (the server's own request limit is 1 MB).
const MAX_BODY: usize = 16 << 20;
/// The largest response head we accept.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 64;

/// A server address: `host:port` plus the TLS name to verify.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`, IPv6 hosts in brackets.
    pub authority: String,
    /// The host name or IP address (IPv6 in brackets), also the TLS name verified.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `https://host:port`, `host:port` or `host` (port 7373). `http://` is accepted and
    /// replaced by `https://`, as upstream's CLI does: KES speaks only TLS.
    pub fn parse(s: &str) -> Result<Endpoint, ClientError> {
        let invalid = |why: &str| ClientError::Config(format!("invalid server '{s}': {why}"));
        let trimmed = s.trim();
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .unwrap_or(trimmed);
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(invalid("no host"));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(invalid("expected HOST[:PORT]"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| invalid("bad port"))?),
            };
            (format!("[{addr}]"), port)
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address without port.
            (format!("[{rest}]"), None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| invalid("bad port"))?,
            None => 7373,
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("no host"));
        }
        Ok(Endpoint {
            authority: format!("{host}:{port}"),
            host,
            port,
        })
    }

    /// `https://host:port`
    pub fn url(&self) -> String {
        format!("https://{}", self.authority)
    }

    fn socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok((host, self.port).to_socket_addrs()?.collect())
    }
}

/// One response, body read completely.
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    /// Wiped on drop: bodies carry data keys, plaintexts and secret values.
    pub(super) body: zeroize::Zeroizing<Vec<u8>>,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A status line and headers.
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    /// HTTP/1.0, or `Connection: close`.
    closes: bool,
}

impl Head {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn chunked(&self) -> bool {
        self.header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// One TLS connection to a server.
pub(super) struct Conn {
    stream: StreamOwned<ClientConnection, Timed>,
    /// Bytes read from TLS but not consumed yet.
    buf: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Unread bytes may be part of a reply carrying key material.
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

impl Conn {
    /// Connects (TCP, then the TLS handshake, so that certificate errors show up here). Each
    /// step waits at most `step`, all of them together at most until `deadline`.
    pub(super) fn open(
        endpoint: &Endpoint,
        name: ServerName<'static>,
        tls: Arc<ClientConfig>,
        step: Duration,
        deadline: Deadline,
    ) -> Result<Conn, ClientError> {
        let net = |e: io::Error| ClientError::Transport(format!("{}: {e}", endpoint.url()));
        let addrs = endpoint.socket_addrs().map_err(net)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
        let mut tcp = None;
        for addr in addrs {
            let timeout = step.min(deadline.left().map_err(net)?);
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| net(last))?;
        tcp.set_nodelay(true).map_err(net)?;
        let conn = ClientConnection::new(tls, name)
            .map_err(|e| ClientError::Tls(format!("{}: TLS: {e}", endpoint.url())))?;
        let timed = Timed::new(tcp, Some(step), Some(deadline));
        let mut conn = Conn {
            stream: StreamOwned::new(conn, timed),
            buf: Vec::new(),
        };
        while conn.stream.conn.is_handshaking() {
            conn.stream
                .conn
                .complete_io(&mut conn.stream.sock)
                .map_err(|e| handshake_error(endpoint, e))?;
        }
        Ok(conn)
    }

    /// The limits of the next exchange: each read or write waits at most `step`, none past
    /// `deadline` (`None`: no limit).
    pub(super) fn set_limits(&mut self, step: Option<Duration>, deadline: Option<Deadline>) {
        self.stream.sock.set_limits(step, deadline);
    }

    /// Sends one request.
    pub(super) fn send(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head);
        out.extend_from_slice(body);
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    /// Reads more bytes into the buffer; 0 at the end of the connection.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        let n = match self.stream.read(&mut tmp) {
            Ok(n) => n,
            // A peer that closes without close_notify ends the stream all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// True if nothing at all has arrived for the current response yet.
    pub(super) fn nothing_received(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads a response head (skipping `100 Continue` and friends).
    pub(super) fn read_head(&mut self) -> io::Result<Head> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let http10 = parsed.version == Some(0);
                    let headers: Vec<(String, String)> = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).trim().to_owned(),
                            )
                        })
                        .collect();
                    self.buf.drain(..len);
                    if (100..200).contains(&status) {
                        continue;
                    }
                    let closes = http10
                        || header(&headers, "Connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    return Ok(Head {
                        status,
                        headers,
                        closes,
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(invalid_data("response head too large"));
                    }
                    if self.fill()? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before a response arrived",
                        ));
                    }
                }
                Err(e) => return Err(invalid_data(&format!("malformed response: {e}"))),
            }
        }
    }

    /// Reads the body that belongs to `head`. Returns the body and whether the connection
    /// can carry another request.
    pub(super) fn read_body(
        &mut self,
        head: &Head,
        head_only: bool,
    ) -> io::Result<(Vec<u8>, bool)> {
        if head_only || head.status == 204 || head.status == 304 {
            return Ok((Vec::new(), !head.closes));
        }
        if head.chunked() {
            let mut body = Vec::new();
            while let Some(chunk) = self.read_chunk()? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(invalid_data("response body too large"));
                }
                body.extend_from_slice(&chunk);
            }
            return Ok((body, !head.closes));
        }
        if let Some(len) = head.header("Content-Length") {
            let len: usize = len
                .parse()
                .map_err(|_| invalid_data("invalid Content-Length"))?;
            if len > MAX_BODY {
                return Err(invalid_data("response body too large"));
            }
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a response",
                    ));
                }
            }
            let body = self.buf.drain(..len).collect();
            return Ok((body, !head.closes));
        }
        // Neither length nor chunks: the body runs until the server closes.
        while self.fill()? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(invalid_data("response body too large"));
            }
        }
        Ok((std::mem::take(&mut self.buf), false))
    }

    /// The next chunk of a chunked body; `None` after the last one (and its trailers).
    pub(super) fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line = self.read_line()?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| invalid_data("malformed chunk size"))?;
        if size == 0 {
            // Trailers, up to an empty line.
            while !self.read_line()?.is_empty() {}
            return Ok(None);
        }
        if size > MAX_BODY {
            return Err(invalid_data("chunk too large"));
        }
        while self.buf.len() < size + 2 {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a chunk",
                ));
            }
        }
        if &self.buf[size..size + 2] != b"\r\n" {
            return Err(invalid_data("malformed chunk"));
        }
        let chunk = self.buf[..size].to_vec();
        self.buf.drain(..size + 2);
        Ok(Some(chunk))
    }

    /// A CRLF-terminated line without its CRLF.
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid_data("line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a response",
                ));
            }
        }
    }
}

/// A streamed response body: ndjson lines as they arrive.
pub(super) struct Stream {
    conn: Conn,
    chunked: bool,
    /// Decoded body bytes not yet returned.
    pending: Vec<u8>,
    done: bool,
}

impl Stream {
    /// The body of `head` on `conn`, read without a time limit (a log stream waits for events).
    pub(super) fn new(mut conn: Conn, head: &Head) -> Stream {
        conn.set_limits(None, None);
        Stream {
            conn,
            chunked: head.chunked(),
            pending: Vec::new(),
            done: false,
        }
    }

    /// The next body bytes as they arrive; `None` when the body ended properly (a chunked body
    /// cut short is an error).
    pub(super) fn next_bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        if self.done {
            return Ok(None);
        }
        if self.chunked {
            let chunk = self.conn.read_chunk()?;
            self.done = chunk.is_none();
            return Ok(chunk);
        }
        if !self.conn.buf.is_empty() {
            return Ok(Some(std::mem::take(&mut self.conn.buf)));
        }
        if self.conn.fill()? == 0 {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.conn.buf)))
    }

    /// The next line (without its newline); `None` when the server ends the stream.
    pub(super) fn next_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                let text = String::from_utf8_lossy(&line[..at]);
                return Ok(Some(text.trim_end_matches('\r').to_owned()));
            }
            if self.done {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.pending);
                return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
            }
            if self.chunked {
                match self.conn.read_chunk()? {
                    Some(chunk) => self.pending.extend_from_slice(&chunk),
                    None => self.done = true,
                }
            } else {
                // Whatever arrives is body; the end of the connection ends the stream.
                if !self.conn.buf.is_empty() {
                    self.pending.append(&mut self.conn.buf);
                } else if self.conn.fill()? == 0 {
                    self.done = true;
                }
            }
            if self.pending.len() > MAX_BODY {
                return Err(invalid_data("log line too long"));
            }
        }
    }
}

fn invalid_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// The error of a failed read or write: [`ClientError::Tls`] if TLS failed (a certificate the
/// server refused shows up as an alert on the first read after a TLS 1.3 handshake),
/// [`ClientError::Transport`] otherwise.
pub(super) fn io_error(endpoint: &Endpoint, err: io::Error) -> ClientError {
    let url = endpoint.url();
    let tls = err
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if tls {
        ClientError::Tls(format!("{url}: {err}"))
    } else {
        ClientError::Transport(format!("{url}: {err}"))
    }
}

/// Explains handshake failures, above all an unverifiable server certificate.
fn handshake_error(endpoint: &Endpoint, err: io::Error) -> ClientError {
    let url = endpoint.url();
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(_)) => ClientError::Tls(format!(
            "{url}: cannot verify the server's certificate ({err}); pass its CA with --ca FILE \
             or KES_CA, or use -k/--insecure for a development server"
        )),
        Some(_) => ClientError::Tls(format!("{url}: TLS handshake failed: {err}")),
        // The connection broke or timed out during the handshake.
        None => ClientError::Transport(format!("{url}: TLS handshake failed: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |s: &str| Endpoint::parse(s).unwrap().authority;
        assert_eq!(ok("https://127.0.0.1:7373"), "127.0.0.1:7373");
        assert_eq!(ok("127.0.0.1:7000"), "127.0.0.1:7000");
        assert_eq!(ok("http://kes.example.com:7000/"), "kes.example.com:7000");
        assert_eq!(ok("localhost"), "localhost:7373");
        assert_eq!(ok("[::1]:7001"), "[::1]:7001");
        assert_eq!(ok("[::1]"), "[::1]:7373");
        assert_eq!(ok("::1"), "[::1]:7373");
        assert_eq!(Endpoint::parse("[::1]:7001").unwrap().host, "[::1]");
        for bad in [
            "",
            "https://",
            "host:port",
            "host:99999",
            "a/b",
            "[::1",
            "host:",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
