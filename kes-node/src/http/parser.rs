//! Incremental request parsing: the head with httparse, then a body framed by
//! `Content-Length` or chunked encoding (chunk sizes also via httparse).
//!
//! The body is cut at the route's limit, like Go's `http.MaxBytesReader`: a JSON value that
//! ends within the limit still decodes, anything longer fails to decode, and the connection
//! closes after the response because the rest of the body was never read.
//!
//! Framing is strict (RFC 9112 §6): a `Content-Length` must be digits only and agree with any
//! other `Content-Length`; `Transfer-Encoding` next to `Content-Length` is refused (both are
//! request-smuggling primitives behind a proxy). A body is only read once the caller admitted
//! the request's head (see [`RequestParser::poll`]); `Expect: 100-continue` is answered then.
//! Error bodies never echo the input.
use super::request::Request;
use super::response::Response;

/// Longest request head accepted (request line and headers): longer heads get 431.
pub(crate) const MAX_HEAD_LEN: usize = 64 * 1024;
/// Longest request line accepted: longer ones get 414.
pub(super) const MAX_REQUEST_LINE: usize = 16 * 1024;
/// Bodies of routes that take none are read and dropped up to this size; longer ones close
/// the connection after the response (as Go's server does).
const MAX_DRAIN: u64 = 256 * 1024;
const MAX_HEADERS: usize = 64;

/// What [`RequestParser::poll`] found in the buffer.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// A complete request (its bytes are removed from the buffer).
    Request(Request),
    /// Unparseable input, or a head its caller refused: send this response and close the
    /// connection (the body, if any, is never read).
    Error(Response),
    /// A head its caller refused whose short body is discarded as it arrives (never held):
    /// send this response now; the connection stays usable, as with Go's server.
    Refused(Response),
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
pub(crate) struct RequestParser {
    state: Body,
    request: Option<Request>,
    limit: usize,
    /// The admitted request asked for `100 Continue` and has not got it yet.
    continue_due: bool,
    /// The body being drained belongs to a refused request (no request to hand out after it).
    discard: bool,
    /// The admitted body's announced size (see `body_charge`).
    reserve: usize,
}

impl RequestParser {
    /// True once an admitted request with `Expect: 100-continue` waits for its interim
    /// response (cleared by this call): the caller sends `100 Continue` before more input.
    pub(crate) fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.continue_due)
    }

    /// The memory the body being read may take: what its head announced (within the route's
    /// limit) from the moment it was admitted, or what it holds if that is more.
    pub(crate) fn body_charge(&self) -> usize {
        self.request
            .as_ref()
            .map_or(0, |r| self.reserve.max(r.body.capacity()))
    }

    /// True while a body is being read or discarded.
    pub(crate) fn in_body(&self) -> bool {
        !matches!(self.state, Body::Head)
    }

    /// Consumes bytes from the front of `buf`. `admit` is asked once per request with a body,
    /// right after its head: `Ok(limit)` reads at most `limit` body bytes (0: the route takes
    /// none), `Err(response)` refuses the request without reading its body.
    pub(crate) fn poll(
        &mut self,
        buf: &mut Vec<u8>,
        mut admit: impl FnMut(&Request) -> Result<usize, Response>,
    ) -> Parsed {
        loop {
            match self.state {
                Body::Head => match parse_head(buf) {
                    Err(resp) => return Parsed::Error(resp),
                    Ok(None) => return Parsed::Incomplete,
                    Ok(Some((_, Framing::None, Expect::Other))) => {
                        return Parsed::Error(closing(Response::error(
                            417,
                            "unsupported Expect header",
                        )))
                    }
                    Ok(Some((req, Framing::None, _))) => return Parsed::Request(req),
                    Ok(Some((req, framing, expect))) => {
                        self.limit = match (admit(&req), expect, framing) {
                            // Discarding a short body costs nothing; a client that waits
                            // for `100 Continue` will not send it, so that one closes.
                            (Err(resp), Expect::None, Framing::Length(n)) if n <= MAX_DRAIN => {
                                self.state = Body::Drain { remaining: n };
                                self.discard = true;
                                return Parsed::Refused(resp);
                            }
                            (Err(mut resp), _, _) => {
                                resp.close = true;
                                return Parsed::Error(resp);
                            }
                            (Ok(_), Expect::Other, _) => {
                                return Parsed::Error(closing(Response::error(
                                    417,
                                    "unsupported Expect header",
                                )))
                            }
                            (Ok(limit), Expect::Continue, _) => {
                                self.continue_due = req.minor_version >= 1;
                                limit
                            }
                            (Ok(limit), Expect::None, _) => limit,
                        };
                        self.reserve = match framing {
                            Framing::Length(n) => (n.min(self.limit as u64)) as usize,
                            _ => self.limit,
                        };
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
                    if remaining - n as u64 == 0 && std::mem::take(&mut self.discard) {
                        // The body of a refused request: it was answered already.
                        self.state = Body::Head;
                        continue;
                    }
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

#[derive(Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The request's `Expect` header.
enum Expect {
    None,
    /// `100-continue`.
    Continue,
    /// Anything else: 417.
    Other,
}

fn bad_request(text: &str) -> Response {
    let mut r = Response::text(400, text);
    r.headers.retain(|(n, _)| *n != "X-Content-Type-Options");
    r.close = true;
    r
}

fn closing(mut r: Response) -> Response {
    r.close = true;
    r
}

/// A malformed framing header: a KES error that never echoes the value.
fn bad_framing(message: &str) -> Response {
    closing(Response::error(400, message))
}

/// `Content-Length` per RFC 9112 §8.6: one or more digits (surrounding whitespace aside); a
/// sign, a list or anything else is refused.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a request head off `buf`. `Ok(None)`: incomplete.
fn parse_head(buf: &mut Vec<u8>) -> Result<Option<(Request, Framing, Expect)>, Response> {
    // Tolerate empty lines between pipelined requests, as RFC 9112 §2.2 suggests.
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let line_end = buf
        .iter()
        .take(MAX_REQUEST_LINE + 1)
        .position(|b| *b == b'\n');
    if line_end.is_none() && buf.len() > MAX_REQUEST_LINE {
        return Err(closing(Response::error(414, "request URI too long")));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) if used <= MAX_HEAD_LEN => used,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_LEN => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Err(closing(Response::error(
                431,
                "request header fields too large",
            )));
        }
        Err(_) => return Err(bad_request("400 Bad Request")),
    };
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    let minor_version = parsed.version.unwrap_or(1);
    let mut req = Request {
        method,
        minor_version,
        headers: Vec::with_capacity(parsed.headers.len()),
        ..Default::default()
    };

    // Origin form `/p?q`, or absolute form `https://host/p?q` (which proxies send).
    let origin = if target.starts_with('/') {
        target
    } else if let Some(i) = target.find("://") {
        let rest = &target[i + 3..];
        rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
    } else {
        target
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

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect = Expect::None;
    let mut host = false;
    let mut connection_close = minor_version == 0;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            host = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)
                .ok_or_else(|| bad_framing("invalid Content-Length header"))?;
            if length.is_some_and(|m| m != n) {
                return Err(bad_framing("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(bad_framing("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect = if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                Expect::Continue
            } else {
                Expect::Other
            };
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
    let framing = match (length, chunked) {
        (Some(_), true) => {
            return Err(bad_framing(
                "Transfer-Encoding and Content-Length in one request",
            ))
        }
        (_, true) => Framing::Chunked,
        (Some(n), false) if n > 0 => Framing::Length(n),
        _ => Framing::None,
    };
    req.keep_alive = !connection_close;
    buf.drain(..used);
    Ok(Some((req, framing, expect)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limit: usize) -> Vec<Parsed> {
        let mut buf = input.to_vec();
        let mut p = RequestParser::default();
        let mut out = Vec::new();
        loop {
            match p.poll(&mut buf, |_| Ok(limit)) {
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

    fn error_of(input: &[u8]) -> Response {
        match parse_all(input, 100).pop() {
            Some(Parsed::Error(r)) => r,
            _ => panic!("expected an error"),
        }
    }

    #[test]
    fn malformed_or_conflicting_content_length_is_refused() {
        for head in [
            "Content-Length: +2",
            "Content-Length: -2",
            "Content-Length: 2, 2",
            "Content-Length: 0x2",
            "Content-Length: 2 2",
            "Content-Length:",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 2\r\nContent-Length: 3",
            "Content-Length: 3\r\nContent-Length: 0",
            "Content-Length: 2\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 0",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        ] {
            let input = format!("PUT /a HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n{{}}");
            let r = error_of(input.as_bytes());
            assert_eq!(r.status, 400, "{head}");
            assert!(r.close, "{head}");
            assert!(r.body.starts_with(b"{\"message\":"), "{head}");
            assert!(!String::from_utf8_lossy(&r.body).contains("0x2"), "{head}");
        }
        // The same length twice is one length.
        let input =
            b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(req(&parse_all(input, 100)[0]).body, b"{}");
    }

    #[test]
    fn long_request_line_and_large_heads() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
        let r = error_of(long.as_bytes());
        assert_eq!(r.status, 414);
        assert_eq!(r.body, b"{\"message\":\"request URI too long\"\n}");
        // Already refused before the line ends.
        assert_eq!(
            error_of(&long.as_bytes()[..MAX_REQUEST_LINE + 2]).status,
            414
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
            "b".repeat(100_000)
        );
        let r = error_of(big.as_bytes());
        assert_eq!(r.status, 431);
        assert!(!String::from_utf8_lossy(&r.body).contains("bbb"));
        let many: String = (0..100).map(|i| format!("X-{i}: 1\r\n")).collect();
        let r = error_of(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
        assert_eq!(r.status, 431);
    }

    #[test]
    fn refused_heads_leave_the_body_unread() {
        let input = b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let mut buf = input.to_vec();
        let mut p = RequestParser::default();
        let refused = p.poll(&mut buf, |_| Err(Response::error(403, "no")));
        assert!(matches!(refused, Parsed::Refused(r) if r.status == 403 && !r.close));
        // A short body is discarded as it comes, and the next request follows.
        buf.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(req(&p.poll(&mut buf, |_| Ok(0))).path, "/b");
        // A long one is never read: the connection closes.
        let input = b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\nhello";
        let mut buf = input.to_vec();
        let refused = p.poll(&mut buf, |_| Err(Response::error(403, "no")));
        assert!(matches!(refused, Parsed::Error(r) if r.status == 403 && r.close));
        assert_eq!(buf, b"hello", "the body stays unread");
        // Requests without a body are not asked about.
        let mut buf = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert!(matches!(
            p.poll(&mut buf, |_| Err(Response::error(403, "no"))),
            Parsed::Request(_)
        ));
    }

    #[test]
    fn expect_continue_is_answered_after_admission() {
        let head =
            b"PUT /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut p = RequestParser::default();
        let mut buf = head.to_vec();
        assert!(matches!(p.poll(&mut buf, |_| Ok(10)), Parsed::Incomplete));
        assert!(p.take_continue() && !p.take_continue());
        buf.extend_from_slice(b"{}");
        assert_eq!(req(&p.poll(&mut buf, |_| Ok(10))).body, b"{}");
        // Refused: no 100, the final answer.
        let mut p = RequestParser::default();
        let mut buf = head.to_vec();
        assert!(matches!(
            p.poll(&mut buf, |_| Err(Response::error(403, "no"))),
            Parsed::Error(r) if r.status == 403
        ));
        assert!(!p.take_continue());
        let other = b"PUT /a HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(error_of(other).status, 417);
    }

    #[test]
    fn incomplete_head_waits() {
        let out = parse_all(b"GET /version HTTP/1.1\r\nHo", 0);
        assert!(out.is_empty());
    }
}
