//! HTTP responses and their encoding, in the shapes Go's net/http and encoding/json produce
//! (clients compare error messages byte for byte).
use std::borrow::Cow;

/// A response to encode. `head_only` suppresses the body (HEAD requests) but keeps its length.
#[derive(Debug, Default)]
pub(crate) struct Response {
    pub status: u16,
    /// Name and value; most values are constants (no allocation per response).
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
    /// Stream: send the head with `Transfer-Encoding: chunked` and keep the connection open.
    pub stream: bool,
    /// A body produced piece by piece as the client reads it (sent chunked), instead of
    /// `body`: large downloads never sit in memory whole.
    pub producer: Option<Producer>,
}

/// Produces a response body piece by piece.
pub(crate) trait BodyProducer: Send {
    /// The next piece, `None` at the end. An error aborts the response: the connection
    /// closes without the last chunk, so the client sees a truncated body, not a short one.
    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, String>;
}

/// A [`BodyProducer`] in a response.
pub(crate) struct Producer(pub Box<dyn BodyProducer>);

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

impl Response {
    /// `200` with no body.
    pub(crate) fn ok() -> Response {
        Response {
            status: 200,
            ..Default::default()
        }
    }

    /// `200` with a JSON body (Go's encoder: compact, HTML-escaped, trailing newline).
    pub(crate) fn json<T: serde::Serialize>(value: &T) -> Response {
        Response {
            status: 200,
            headers: vec![("Content-Type", "application/json".into())],
            body: go_json(value),
            ..Default::default()
        }
    }

    /// A KES error: `{"message":"..."\n}` (the newline sits inside the object, as upstream sends it).
    pub(crate) fn error(status: u16, message: &str) -> Response {
        let mut body = b"{\"message\":".to_vec();
        let mut encoded = go_json(&message);
        encoded.pop(); // go_json ends with '\n'; upstream puts it before the closing brace.
        body.extend_from_slice(&encoded);
        body.extend_from_slice(b"\n}");
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
            ..Default::default()
        }
    }

    /// A plain-text error, as Go's mux and server write them (`404 page not found\n`).
    pub(crate) fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![
                ("Content-Type", "text/plain; charset=utf-8".into()),
                ("X-Content-Type-Options", "nosniff".into()),
            ],
            body: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// `301 Moved Permanently` to `location`; GET gets Go's little HTML body.
    pub(crate) fn moved(location: &str, method: &str) -> Response {
        let mut r = Response {
            status: 301,
            ..Default::default()
        };
        r.headers.push(("Location", location.to_owned().into()));
        if method == "GET" || method == "HEAD" {
            r.headers
                .push(("Content-Type", "text/html; charset=utf-8".into()));
            r.body = format!(
                "<a href=\"{}\">Moved Permanently</a>.\n\n",
                html_escape(location)
            )
            .into_bytes();
        }
        r
    }

    /// Encodes status line, headers and (unless `head_only`) body for HTTP/1.`minor`.
    /// Pieces appended as they are, no formatting machinery: this runs for every response.
    pub(crate) fn encode(&self, minor: u8, head_only: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(if minor == 0 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        decimal(self.status.into(), out);
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.stream {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            return;
        }
        if self.producer.is_some() {
            if self.close {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            return;
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        decimal(self.body.len() as u64, out);
        out.extend_from_slice(b"\r\n\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Serializes like Go's `json.Encoder.Encode`: compact, `<`, `>`, `&`, U+2028 and U+2029
/// escaped, followed by a newline.
pub(crate) fn go_json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut raw = Vec::with_capacity(128);
    if serde_json::to_writer(&mut raw, value).is_err() {
        raw = b"null".to_vec();
    }
    // Mostly nothing to escape (keys, base64, identities): then the bytes are final as they are.
    if !raw.iter().any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2)) {
        raw.push(b'\n');
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + 1);
    // The escaped characters never occur in JSON outside of strings, so a byte-wise pass is exact.
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if raw.get(i + 1) == Some(&0x80)
                && matches!(raw.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                out.extend_from_slice(if raw[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out.push(b'\n');
    out
}

/// Appends `n` in decimal.
fn decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_matches_upstream_bytes() {
        let r = Response::error(400, "key already exists");
        assert_eq!(r.body, b"{\"message\":\"key already exists\"\n}");
    }

    #[test]
    fn json_escapes_like_go() {
        assert_eq!(go_json(&"<unknown>"), b"\"\\u003cunknown\\u003e\"\n");
        assert_eq!(go_json(&"a\u{2028}b"), b"\"a\\u2028b\"\n");
        assert_eq!(go_json(&"plain"), b"\"plain\"\n");
    }

    #[test]
    fn encodes_head_and_body() {
        let mut r = Response::json(&"x");
        r.close = true;
        let mut out = Vec::new();
        r.encode(1, false, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\
              Content-Length: 4\r\n\r\n\"x\"\n"
        );
        out.clear();
        Response::text(404, "").encode(0, true, &mut out);
        assert!(out.starts_with(b"HTTP/1.0 404 Not Found\r\n"));
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            out.clear();
            decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
