//! A parsed HTTP request.

/// One complete request: head plus (possibly truncated) body.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub method: String,
    /// The path part of the request target, still percent-encoded.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// True if the body was framed (`Content-Length > 0` or chunked); false for no body.
    pub has_body: bool,
    /// The body, cut at the route's limit.
    pub body: Vec<u8>,
    /// The client sent more body than the route accepts; the connection closes after the reply.
    pub body_truncated: bool,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Decodes `%XX` escapes. `None` if an escape is malformed. Invalid UTF-8 is replaced, which can
/// only make a name invalid, never valid.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("wire%2Dk1").unwrap(), "wire-k1");
        assert_eq!(percent_decode("wire-%C3%A4").unwrap(), "wire-ä");
        assert_eq!(percent_decode("a%2Fb").unwrap(), "a/b");
        assert!(percent_decode("a%2").is_none());
        assert!(percent_decode("a%zz").is_none());
    }
}
