//! A small blocking client for the KES HTTP API: what the `kes-node` key, policy, identity,
//! secret, enclave, log and status commands use, and what any Rust program can use to talk to
//! a KES server (this one or upstream's).
//!
//! One [`Client`] holds one kept-alive TLS connection and sends one request at a time. It
//! authenticates with an API key or a certificate and key ([`Credentials`]) and verifies the
//! server against given CA certificates, or, for development servers only, not at all
//! ([`ServerTrust`]). Every call returns the decoded answer or a [`ClientError`] carrying the
//! HTTP status and KES's message (`404 key does not exist`).
//!
//! ```no_run
//! use kes_node::client::{Client, Credentials, ServerTrust};
//!
//! let credentials = Credentials::from_api_key("kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc")?;
//! let client = Client::new("127.0.0.1:7373", credentials, ServerTrust::Insecure)?;
//! client.create_key("my-key")?;
//! let dek = client.generate_key("my-key", b"")?;
//! let plaintext = client.decrypt("my-key", &dek.ciphertext, b"")?;
//! assert_eq!(*plaintext, dek.plaintext);
//! # Ok::<(), kes_node::client::ClientError>(())
//! ```
//!
//! Answers that have a body come as a [`Reply`], which dereferences to the decoded value and
//! keeps the server's JSON bytes for callers that want to pass them on untouched.
mod error;
mod http;
mod tls;
mod types;
#[cfg(test)]
mod wire_tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use error::{ApiError, ClientError};
pub use http::Endpoint;
pub use tls::{generate_api_key, Credentials, ServerTrust};
pub use types::{
    DataKey, EnclaveInfo, IdentityInfo, KeyInfo, List, Policy, PolicyInfo, Route, Rules, Secret,
    SecretInfo, SelfInfo, Status, Version,
};

/// The endpoint used when `KES_SERVER` is not set.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7373";
/// Connect, read and write timeout of ordinary requests.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A decoded answer together with the server's JSON bytes.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    value: T,
    /// May hold key material or secrets (data keys, decrypted plaintexts, secret values):
    /// wiped on drop.
    body: zeroize::Zeroizing<Vec<u8>>,
}

impl<T> Reply<T> {
    /// The body exactly as the server sent it (usually JSON and a newline).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for Reply<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A blocking KES client. Cheap to share between threads; requests are serialized on one
/// connection.
pub struct Client {
    endpoint: Endpoint,
    server_name: rustls::pki_types::ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    enclave: Option<String>,
    identity: String,
    conn: Mutex<Option<http::Conn>>,
}

/// A request before it is sent.
struct Call {
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
}

impl Client {
    /// A client for `server` (`https://host:port`, `host:port` or `host`). Nothing is sent
    /// until the first call.
    pub fn new(
        server: &str,
        credentials: Credentials,
        trust: ServerTrust,
    ) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(server)?;
        let server_name = tls::server_name(&endpoint.host)?;
        let identity = credentials.identity().to_owned();
        let tls = tls::client_config(credentials, &trust)?;
        Ok(Client {
            endpoint,
            server_name,
            tls,
            enclave: None,
            identity,
            conn: Mutex::new(None),
        })
    }

    /// Sends `Kes-Enclave: <name>` with every request (stateful servers with enclaves).
    pub fn with_enclave(mut self, enclave: Option<String>) -> Client {
        self.enclave = enclave.filter(|e| !e.is_empty());
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The identity the server sees for this client.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    // ---- server ----------------------------------------------------------------------

    /// `GET /version` (needs no authorization).
    pub fn version(&self) -> Result<Reply<Version>, ClientError> {
        self.json(self.get("/version"))
    }

    /// `GET /v1/status`
    pub fn status(&self) -> Result<Reply<Status>, ClientError> {
        self.json(self.get("/v1/status"))
    }

    /// `GET /v1/ready`: `Ok` if the server is ready.
    pub fn ready(&self) -> Result<(), ClientError> {
        self.empty(self.get("/v1/ready"))
    }

    /// `GET /v1/api`: the routes the server serves.
    pub fn api(&self) -> Result<Reply<Vec<Route>>, ClientError> {
        self.json(self.get("/v1/api"))
    }

    /// `GET /v1/metrics`: Prometheus text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.call(self.get("/v1/metrics"))?;
        Ok(String::from_utf8_lossy(&resp.body).into_owned())
    }

    // ---- keys ------------------------------------------------------------------------

    /// `PUT /v1/key/create/<name>`
    pub fn create_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.put("/v1/key/create/", name, None))
    }

    /// `PUT /v1/key/import/<name>`: a 32-byte key for `cipher` (`AES256` or `ChaCha20`).
    pub fn import_key(&self, name: &str, key: &[u8], cipher: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "key": b64(key), "cipher": cipher });
        self.empty(self.put("/v1/key/import/", name, Some(body)))
    }

    /// `GET /v1/key/describe/<name>`
    pub fn describe_key(&self, name: &str) -> Result<Reply<KeyInfo>, ClientError> {
        self.json(self.get_named("/v1/key/describe/", name))
    }

    /// `GET /v1/key/list/<pattern>` (`*` or empty: all keys).
    pub fn list_keys(&self, pattern: &str) -> Result<Reply<List>, ClientError> {
        self.json(self.get_named("/v1/key/list/", pattern))
    }

    /// `DELETE /v1/key/delete/<name>`
    pub fn delete_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/key/delete/", name))
    }

    /// `PUT /v1/key/generate/<name>`: a new data encryption key, plain and sealed with `name`
    /// (`context` is the associated data, empty for none).
    pub fn generate_key(&self, name: &str, context: &[u8]) -> Result<Reply<DataKey>, ClientError> {
        self.json(self.put("/v1/key/generate/", name, Some(with_context(context))))
    }

    /// `PUT /v1/key/encrypt/<name>`: the ciphertext.
    pub fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Reply<Vec<u8>>, ClientError> {
        let mut body = with_context(context);
        body["plaintext"] = b64(plaintext).into();
        let reply: Reply<types::Ciphertext> =
            self.json(self.put("/v1/key/encrypt/", name, Some(body)))?;
        Ok(Reply {
            value: reply.value.ciphertext,
            body: reply.body,
        })
    }

    /// `PUT /v1/key/decrypt/<name>`: the plaintext.
    pub fn decrypt(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Reply<Vec<u8>>, ClientError> {
        let mut body = with_context(context);
        body["ciphertext"] = b64(ciphertext).into();
        let reply: Reply<types::Plaintext> =
            self.json(self.put("/v1/key/decrypt/", name, Some(body)))?;
        Ok(Reply {
            value: reply.value.plaintext,
            body: reply.body,
        })
    }

    /// `PUT /v1/key/hmac/<name>`: HMAC-SHA256 of `message` under the key's HMAC key.
    pub fn hmac(&self, name: &str, message: &[u8]) -> Result<Reply<Vec<u8>>, ClientError> {
        let body = serde_json::json!({ "message": b64(message) });
        let reply: Reply<types::Mac> = self.json(self.put("/v1/key/hmac/", name, Some(body)))?;
        Ok(Reply {
            value: reply.value.hmac,
            body: reply.body,
        })
    }

    // ---- policies --------------------------------------------------------------------

    /// `PUT /v1/policy/create/<name>`
    pub fn create_policy(&self, name: &str, policy: &Policy) -> Result<(), ClientError> {
        self.empty(self.put("/v1/policy/create/", name, Some(policy.to_wire())))
    }

    /// `GET /v1/policy/describe/<name>`
    pub fn describe_policy(&self, name: &str) -> Result<Reply<PolicyInfo>, ClientError> {
        self.json(self.get_named("/v1/policy/describe/", name))
    }

    /// `GET /v1/policy/read/<name>`: the rules.
    pub fn read_policy(&self, name: &str) -> Result<Reply<Policy>, ClientError> {
        self.json(self.get_named("/v1/policy/read/", name))
    }

    /// `GET /v1/policy/list/<pattern>`
    pub fn list_policies(&self, pattern: &str) -> Result<Reply<List>, ClientError> {
        self.json(self.get_named("/v1/policy/list/", pattern))
    }

    /// `DELETE /v1/policy/delete/<name>`
    pub fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/policy/delete/", name))
    }

    /// `POST /v1/policy/assign/<policy>` with `{"identity": ...}` (the route of KES v0.19 to
    /// v0.22; it creates the identity with that policy).
    pub fn assign_policy(&self, policy: &str, identity: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "identity": identity });
        let mut call = self.put("/v1/policy/assign/", policy, Some(body));
        call.method = "POST";
        self.empty(call)
    }

    // ---- identities ------------------------------------------------------------------

    /// `PUT /v1/identity/create/<identity>`: an identity with a policy, or an admin; `ttl` is
    /// a Go duration (`720h`), empty for none.
    pub fn create_identity(
        &self,
        identity: &str,
        policy: &str,
        admin: bool,
        ttl: &str,
    ) -> Result<(), ClientError> {
        let mut body = serde_json::json!({ "policy": policy, "admin": admin });
        if !ttl.is_empty() {
            body["ttl"] = ttl.into();
        }
        self.empty(self.put("/v1/identity/create/", identity, Some(body)))
    }

    /// `GET /v1/identity/describe/<identity>`
    pub fn describe_identity(&self, identity: &str) -> Result<Reply<IdentityInfo>, ClientError> {
        self.json(self.get_named("/v1/identity/describe/", identity))
    }

    /// `GET /v1/identity/self/describe`: who the server thinks we are.
    pub fn describe_self(&self) -> Result<Reply<SelfInfo>, ClientError> {
        self.json(self.get("/v1/identity/self/describe"))
    }

    /// `GET /v1/identity/list/<pattern>`
    pub fn list_identities(&self, pattern: &str) -> Result<Reply<List>, ClientError> {
        self.json(self.get_named("/v1/identity/list/", pattern))
    }

    /// `DELETE /v1/identity/delete/<identity>`
    pub fn delete_identity(&self, identity: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/identity/delete/", identity))
    }

    // ---- secrets ---------------------------------------------------------------------

    /// `PUT /v1/secret/create/<name>`
    pub fn create_secret(&self, name: &str, secret: &[u8]) -> Result<(), ClientError> {
        let body = serde_json::json!({ "secret": b64(secret) });
        self.empty(self.put("/v1/secret/create/", name, Some(body)))
    }

    /// `GET /v1/secret/describe/<name>`
    pub fn describe_secret(&self, name: &str) -> Result<Reply<SecretInfo>, ClientError> {
        self.json(self.get_named("/v1/secret/describe/", name))
    }

    /// `GET /v1/secret/read/<name>`: the value and its description.
    pub fn read_secret(&self, name: &str) -> Result<Reply<Secret>, ClientError> {
        self.json(self.get_named("/v1/secret/read/", name))
    }

    /// `GET /v1/secret/list/<prefix>`
    pub fn list_secrets(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.json(self.get_named("/v1/secret/list/", prefix))
    }

    /// `DELETE /v1/secret/delete/<name>`
    pub fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/secret/delete/", name))
    }

    // ---- enclaves --------------------------------------------------------------------

    /// `PUT /v1/enclave/create/<name>`
    pub fn create_enclave(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.put("/v1/enclave/create/", name, None))
    }

    /// `GET /v1/enclave/describe/<name>`
    pub fn describe_enclave(&self, name: &str) -> Result<Reply<EnclaveInfo>, ClientError> {
        self.json(self.get_named("/v1/enclave/describe/", name))
    }

    /// `GET /v1/enclave/list/<prefix>`
    pub fn list_enclaves(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.json(self.get_named("/v1/enclave/list/", prefix))
    }

    /// `DELETE /v1/enclave/delete/<name>`
    pub fn delete_enclave(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/enclave/delete/", name))
    }

    // ---- cluster ---------------------------------------------------------------------

    /// `GET /v1/cluster/describe`: the members, the leader and the answering node's view.
    pub fn describe_cluster(&self) -> Result<Reply<serde_json::Value>, ClientError> {
        self.json(self.get("/v1/cluster/describe"))
    }

    /// `GET /v1/cluster/backup`: the backup bytes.
    pub fn backup_cluster(&self) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.backup_cluster_to(&mut out)?;
        Ok(out)
    }

    /// `GET /v1/cluster/backup`, written to `out` as it arrives; returns the byte count.
    pub fn backup_cluster_to(&self, out: &mut dyn std::io::Write) -> Result<u64, ClientError> {
        let mut stream = self.open_stream("/v1/cluster/backup")?;
        let mut total = 0u64;
        while let Some(bytes) = stream.next_bytes().map_err(|e| self.network(e))? {
            out.write_all(&bytes)
                .map_err(|e| ClientError::Config(format!("cannot write the backup: {e}")))?;
            total += bytes.len() as u64;
        }
        Ok(total)
    }

    /// `PUT /v1/cluster/expand {"endpoint"}`: adds a node started with `--join`.
    pub fn expand_cluster(&self, endpoint: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "endpoint": endpoint });
        self.empty(Call {
            method: "PUT",
            path: "/v1/cluster/expand".into(),
            body: Some(body.to_string().into_bytes()),
        })
    }

    /// `DELETE /v1/cluster/shrink {"endpoint","force"}`: removes a node.
    pub fn shrink_cluster(&self, endpoint: &str, force: bool) -> Result<(), ClientError> {
        let body = serde_json::json!({ "endpoint": endpoint, "force": force });
        self.empty(Call {
            method: "DELETE",
            path: "/v1/cluster/shrink".into(),
            body: Some(body.to_string().into_bytes()),
        })
    }

    // ---- logs ------------------------------------------------------------------------

    /// `GET /v1/log/audit`: audit events (ndjson lines) from now on, until the server or the
    /// caller ends the stream.
    pub fn audit_log(&self) -> Result<LogStream, ClientError> {
        self.stream("/v1/log/audit")
    }

    /// `GET /v1/log/error`: error log records (`{"message": ...}` lines) from now on.
    pub fn error_log(&self) -> Result<LogStream, ClientError> {
        self.stream("/v1/log/error")
    }

    // ---- plumbing --------------------------------------------------------------------

    fn get(&self, path: &str) -> Call {
        Call {
            method: "GET",
            path: path.to_owned(),
            body: None,
        }
    }

    fn get_named(&self, route: &str, name: &str) -> Call {
        Call {
            method: "GET",
            path: format!("{route}{}", escape(name)),
            body: None,
        }
    }

    fn delete(&self, route: &str, name: &str) -> Call {
        Call {
            method: "DELETE",
            path: format!("{route}{}", escape(name)),
            body: None,
        }
    }

    fn put(&self, route: &str, name: &str, body: Option<serde_json::Value>) -> Call {
        Call {
            method: "PUT",
            path: format!("{route}{}", escape(name)),
            body: body.map(|b| b.to_string().into_bytes()),
        }
    }

    /// A call whose success has no body of interest.
    fn empty(&self, call: Call) -> Result<(), ClientError> {
        self.call(call).map(|_| ())
    }

    /// A call whose success is a JSON body.
    fn json<T: DeserializeOwned>(&self, call: Call) -> Result<Reply<T>, ClientError> {
        let resp = self.call(call)?;
        let value = serde_json::from_slice(&resp.body)
            .map_err(|e| ClientError::Response(format!("invalid JSON: {e}")))?;
        Ok(Reply {
            value,
            body: resp.body,
        })
    }

    /// Sends a call and reads the answer; non-2xx answers become [`ClientError::Api`].
    fn call(&self, call: Call) -> Result<http::Response, ClientError> {
        let resp = self.round_trip(&call)?;
        if (200..300).contains(&resp.status) {
            Ok(resp)
        } else if (300..400).contains(&resp.status) {
            // We send clean paths with their slashes, so a redirect means a different API.
            Err(ClientError::Response(format!(
                "{} {} was redirected ({}) to '{}'",
                call.method,
                call.path,
                resp.status,
                resp.header("Location").unwrap_or_default()
            )))
        } else {
            Err(api_error(
                resp.status,
                resp.header("Content-Type"),
                &resp.body,
            ))
        }
    }

    fn request_head(&self, call: &Call) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kes-node/{}\r\nAccept: application/json\r\n",
            call.method,
            call.path,
            self.endpoint.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(enclave) = &self.enclave {
            head.push_str(&format!("Kes-Enclave: {enclave}\r\n"));
        }
        match &call.body {
            Some(body) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )),
            None if call.method == "PUT" => head.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn connect(&self) -> Result<http::Conn, ClientError> {
        http::Conn::open(
            &self.endpoint,
            self.server_name.clone(),
            self.tls.clone(),
            TIMEOUT,
        )
    }

    /// One request and response on the kept connection. A kept connection the server has
    /// closed in the meantime fails before any answer arrives: then the request is sent once
    /// more on a new connection.
    fn round_trip(&self, call: &Call) -> Result<http::Response, ClientError> {
        let head = self.request_head(call);
        let body = call.body.as_deref().unwrap_or_default();
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (mut conn, reused) = match slot.take() {
                Some(c) => (c, true),
                None => (self.connect()?, false),
            };
            let attempt = conn.send(&head, body).and_then(|()| conn.read_head());
            let head_in = match attempt {
                Ok(h) => h,
                Err(_) if reused && conn.nothing_received() => continue,
                Err(e) => return Err(self.network(e)),
            };
            let (body, keep) = conn
                .read_body(&head_in, false)
                .map_err(|e| self.network(e))?;
            if keep {
                *slot = Some(conn);
            }
            return Ok(http::Response {
                status: head_in.status,
                headers: head_in.headers,
                body: body.into(),
            });
        }
    }

    fn stream(&self, path: &str) -> Result<LogStream, ClientError> {
        Ok(LogStream {
            inner: self.open_stream(path)?,
        })
    }

    /// A response body read as it arrives, on a connection of its own.
    fn open_stream(&self, path: &str) -> Result<http::Stream, ClientError> {
        let call = self.get(path);
        let head = self.request_head(&call);
        // A stream needs a connection of its own: it never becomes free again.
        let mut conn = self.connect()?;
        conn.send(&head, &[]).map_err(|e| self.network(e))?;
        let head_in = conn.read_head().map_err(|e| self.network(e))?;
        if !(200..300).contains(&head_in.status) {
            let (body, _) = conn
                .read_body(&head_in, false)
                .map_err(|e| self.network(e))?;
            return Err(api_error(
                head_in.status,
                head_in.header("Content-Type"),
                &body,
            ));
        }
        http::Stream::new(conn, &head_in).map_err(|e| self.network(e))
    }

    fn network(&self, err: std::io::Error) -> ClientError {
        http::io_error(&self.endpoint, err)
    }
}

/// Log events as they arrive: each item is one line of the server's ndjson stream.
pub struct LogStream {
    inner: http::Stream,
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

fn with_context(context: &[u8]) -> serde_json::Value {
    if context.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "context": b64(context) })
    }
}

/// The KES error of a failed call: `{"message": ...}` (or `{"error": ...}`, which wins) from a
/// JSON body, else the body text, else the status.
fn api_error(status: u16, content_type: Option<&str>, body: &[u8]) -> ClientError {
    let mut message = None;
    if content_type.is_some_and(|t| t.starts_with("application/json")) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let field = |name: &str| {
                v.get(name)
                    .and_then(|m| m.as_str())
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
            };
            message = field("error").or_else(|| field("message"));
        }
    }
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body[..body.len().min(1 << 20)]);
        let text = text.trim();
        if text.is_empty() {
            format!("server answered {status}")
        } else {
            text.to_owned()
        }
    });
    ClientError::from(ApiError::new(status, message))
}

/// Standard base64 with padding, as Go encodes `[]byte`.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Percent-encodes a path segment: everything but letters, digits, `-`, `_`, `~` and `*`.
/// Dots are encoded as well, so that `.` and `..` reach the server as names (and are refused
/// as such) instead of being cleaned out of the path.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        let e = api_error(
            404,
            Some("application/json"),
            b"{\"message\":\"key does not exist\"\n}",
        );
        assert_eq!(e, ClientError::NotFound(ApiError::KEY_NOT_FOUND));
        assert_eq!(e.to_string(), "key does not exist");
        let e = api_error(
            400,
            Some("application/json; charset=utf-8"),
            br#"{"message":"m","error":"e"}"#,
        );
        assert_eq!(e.to_string(), "e");
        let e = api_error(404, Some("text/plain"), b"404 page not found\n");
        assert_eq!(e.to_string(), "404 page not found");
        assert_eq!(api_error(502, None, b"").to_string(), "server answered 502");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("my-key_1"), "my-key_1");
        assert_eq!(escape("app*"), "app*");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
        assert_eq!(escape(".."), "%2E%2E");
    }
}
