//! Incremental request parsing: the head with httparse, then a body framed by
//! `Content-Length` or chunked encoding (chunk sizes also via httparse).
//!
//! The body is cut at the route's limit, like Go's `http.MaxBytesReader`: a JSON value that
//! ends within the limit still decodes, anything longer fails to decode, and the connection
//! closes after the response because the rest of the body was never read.
use super::request::Request;
use super::response::Response;

/// Longest request head accepted.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Bodies of routes that take none are read and dropped up to this size; longer ones close
/// the connection after the response (as Go's server does).
const MAX_DRAIN: u64 = 256 * 1024;
const MAX_HEADERS: usize = 64;

/// What [`RequestParser::poll`] found in the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// A complete request (its bytes are removed from the buffer).
    Request(Request),
    /// Unparseable input: send this response and close the connection.
    Error(Response),
}

#[derive(Debug, Default)]
enum Body {
    #[default]
    Head,
    Length {
        remaining: u64,
    },
    Drain {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    ChunkDataEnd,
    Trailer,
}

/// Parses requests off the front of a connection's plaintext buffer, one at a time.
#[derive(Debug, Default)]
pub struct RequestParser {
    state: Body,
    request: Option<Request>,
    limit: usize,
}

impl RequestParser {
    /// True while a request has started but is not complete (used for timeouts).
    pub fn in_progress(&self, buf: &[u8]) -> bool {
        self.request.is_some() || !buf.is_empty()
    }

    /// Consumes bytes from the front of `buf`. `body_limit` is asked once per request, after
    /// its head, how many body bytes the request's route accepts.
    pub fn poll(&mut self, buf: &mut Vec<u8>, body_limit: impl Fn(&Request) -> usize) -> Parsed {
        loop {
            match self.state {
                Body::Head => match parse_head(buf) {
                    Err(resp) => return Parsed::Error(resp),
                    Ok(None) => return Parsed::Incomplete,
                    Ok(Some((req, framing))) => {
                        self.limit = body_limit(&req);
                        self.state = match framing {
                            Framing::None => return Parsed::Request(req),
                            Framing::Length(n) if self.limit == 0 && n <= MAX_DRAIN => {
                                Body::Drain { remaining: n }
                            }
                            Framing::Length(n) => Body::Length { remaining: n },
                            Framing::Chunked => Body::ChunkSize,
                        };
                        self.request = Some(req);
                    }
                },
                Body::Drain { remaining } => {
                    let n = remaining.min(buf.len() as u64) as usize;
                    buf.drain(..n);
                    if remaining - n as u64 == 0 {
                        return self.finish(false);
                    }
                    self.state = Body::Drain {
                        remaining: remaining - n as u64,
                    };
                    return Parsed::Incomplete;
                }
                Body::Length { remaining } => {
                    let req = self.request.as_mut().expect("request in body state");
                    let room = (self.limit - req.body.len()) as u64;
                    if remaining > 0 && room == 0 {
                        return self.finish(true);
                    }
                    let n = remaining.min(room).min(buf.len() as u64) as usize;
                    req.body.extend_from_slice(&buf[..n]);
                    buf.drain(..n);
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        return self.finish(false);
                    }
                    self.state = Body::Length { remaining };
                    if buf.is_empty() {
                        return Parsed::Incomplete;
                    }
                }
                Body::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.drain(..used);
                        self.state = Body::Trailer;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.drain(..used);
                        self.state = Body::ChunkData { remaining: size };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < 1024 => return Parsed::Incomplete,
                    _ => return Parsed::Error(bad_request("400 Bad Request")),
                },
                Body::ChunkData { remaining } => {
                    let req = self.request.as_mut().expect("request in body state");
                    let room = (self.limit - req.body.len()) as u64;
                    if room == 0 {
                        return self.finish(true);
                    }
                    let n = remaining.min(room).min(buf.len() as u64) as usize;
                    if n == 0 {
                        return Parsed::Incomplete;
                    }
                    req.body.extend_from_slice(&buf[..n]);
                    buf.drain(..n);
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        Body::ChunkDataEnd
                    } else {
                        Body::ChunkData { remaining }
                    };
                }
                Body::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Parsed::Incomplete;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Parsed::Error(bad_request("400 Bad Request"));
                    }
                    buf.drain(..2);
                    self.state = Body::ChunkSize;
                }
                Body::Trailer => {
                    // Trailer fields are ignored; the body ends at the first empty line.
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_HEAD_LEN {
                            return Parsed::Error(bad_request("400 Bad Request"));
                        }
                        return Parsed::Incomplete;
                    };
                    buf.drain(..end + 2);
                    if end == 0 {
                        return self.finish(false);
                    }
                }
            }
        }
    }

    fn finish(&mut self, truncated: bool) -> Parsed {
        self.state = Body::Head;
        let mut req = self.request.take().expect("request to finish");
        req.has_body = true;
        if truncated {
            req.body_truncated = true;
            req.keep_alive = false;
        }
        Parsed::Request(req)
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn bad_request(text: &str) -> Response {
    let mut r = Response::text(400, text);
    r.headers.retain(|(n, _)| *n != "X-Content-Type-Options");
    r.close = true;
    r
}

/// Parses a request head off `buf`. `Ok(None)`: incomplete.
fn parse_head(buf: &mut Vec<u8>) -> Result<Option<(Request, Framing)>, Response> {
    // Tolerate empty lines between pipelined requests, as RFC 9112 §2.2 suggests.
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_LEN => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            let mut r = Response::text(431, "431 Request Header Fields Too Large");
            r.close = true;
            return Err(r);
        }
        Err(_) => return Err(bad_request("400 Bad Request")),
    };
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    let minor_version = parsed.version.unwrap_or(1);
    let mut req = Request {
        method,
        minor_version,
        ..Default::default()
    };

    // Origin form `/p?q`, or absolute form `https://host/p?q` (which proxies send).
    let origin = match target.find("://") {
        Some(i) if !target.starts_with('/') => {
            let rest = &target[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        _ => target,
    };
    if !origin.starts_with('/') {
        return Err(bad_request("400 Bad Request"));
    }
    match origin.split_once('?') {
        Some((p, q)) => {
            req.path = p.to_owned();
            req.query = Some(q.to_owned());
        }
        None => req.path = origin.to_owned(),
    }

    let mut framing = Framing::None;
    let mut host = false;
    let mut connection_close = minor_version == 0;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            host = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad_request("400 Bad Request: bad Content-Length"))?;
            if matches!(framing, Framing::Chunked) {
                return Err(bad_request("400 Bad Request"));
            }
            if n > 0 {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !h.value.eq_ignore_ascii_case(b"chunked") || matches!(framing, Framing::Length(_)) {
                return Err(bad_request("400 Bad Request"));
            }
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                connection_close = true;
            } else if v.contains("keep-alive") {
                connection_close = false;
            }
        }
        req.headers.push((h.name.to_owned(), h.value.to_vec()));
    }
    if minor_version == 1 && !host {
        return Err(bad_request("400 Bad Request: missing required Host header"));
    }
    req.keep_alive = !connection_close;
    buf.drain(..used);
    Ok(Some((req, framing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limit: usize) -> Vec<Parsed> {
        let mut buf = input.to_vec();
        let mut p = RequestParser::default();
        let mut out = Vec::new();
        loop {
            match p.poll(&mut buf, |_| limit) {
                Parsed::Incomplete => return out,
                x => {
                    let stop = matches!(x, Parsed::Error(_));
                    out.push(x);
                    if stop {
                        return out;
                    }
                }
            }
        }
    }

    fn req(p: &Parsed) -> &Request {
        match p {
            Parsed::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_with_bodies() {
        let input = b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let out = parse_all(input, 100);
        assert_eq!(out.len(), 2);
        assert_eq!(req(&out[0]).body, b"abc");
        assert_eq!(req(&out[1]).path, "/b");
        assert_eq!(req(&out[1]).query.as_deref(), Some("q=1"));
    }

    #[test]
    fn chunked_body() {
        let input = b"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let out = parse_all(input, 100);
        assert_eq!(req(&out[0]).body, b"abcde");
        assert!(req(&out[0]).keep_alive);
    }

    #[test]
    fn body_cut_at_limit_closes() {
        let input = b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
        let out = parse_all(input, 4);
        let r = req(&out[0]);
        assert_eq!(r.body, b"0123");
        assert!(r.body_truncated && !r.keep_alive);
    }

    #[test]
    fn body_of_bodyless_route_is_drained() {
        let input = b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let out = parse_all(input, 0);
        assert_eq!(out.len(), 2);
        assert!(req(&out[0]).body.is_empty() && req(&out[0]).keep_alive);
    }

    #[test]
    fn missing_host_and_garbage() {
        let out = parse_all(b"GET /version HTTP/1.1\r\n\r\n", 0);
        assert!(
            matches!(&out[0], Parsed::Error(r) if r.body == b"400 Bad Request: missing required Host header")
        );
        let out = parse_all(b"GARBAGE\r\n\r\n", 0);
        assert!(matches!(&out[0], Parsed::Error(r) if r.status == 400 && r.close));
    }

    #[test]
    fn absolute_form_and_http10() {
        let out = parse_all(b"GET https://127.0.0.1/version HTTP/1.0\r\n\r\n", 0);
        let r = req(&out[0]);
        assert_eq!(r.path, "/version");
        assert!(!r.keep_alive);
    }

    #[test]
    fn incomplete_head_waits() {
        let out = parse_all(b"GET /version HTTP/1.1\r\nHo", 0);
        assert!(out.is_empty());
    }
}
