//! A blocking client for the KES HTTP API, the Rust counterpart of MinIO's Go SDK
//! (`github.com/minio/kms-go/kes`): keys, policies, identities, secrets, enclaves, logs, status
//! and the cluster. The `kes-node` client commands (`kes-node key ...`) are built on it, and it
//! talks to this server and to upstream's alike.
//!
//! # Quick start
//!
//! ```no_run
//! use kes_node::client::{Client, ClientError, Credentials, ServerTrust};
//! use std::path::Path;
//!
//! // Who we are: an API key (`kes-node identity new`), or a certificate and key
//! // (`Credentials::from_pem_files`). Whom we trust: the CA of the server's certificate.
//! let credentials = Credentials::from_api_key("kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc")?;
//! let trust = ServerTrust::from_ca_path(Path::new("ca.pem"))?;
//! let client = Client::new("https://127.0.0.1:7373", credentials, trust)?;
//!
//! match client.create_key("my-key") {
//!     Ok(()) | Err(ClientError::Exists(_)) => {}
//!     Err(err) => return Err(err),
//! }
//! // A data key: encrypt with the plaintext, store the ciphertext, forget the plaintext.
//! let dek = client.generate_key("my-key", b"bucket/object")?;
//! let plaintext = client.decrypt("my-key", &dek.ciphertext, b"bucket/object")?;
//! assert_eq!(*plaintext, dek.plaintext);
//! for name in client.keys("my-") {
//!     println!("{}", name?);
//! }
//! # Ok::<(), ClientError>(())
//! ```
//!
//! `examples/client.rs` is a complete program that reads the same environment as the CLI
//! (`KES_SERVER`, `KES_API_KEY` or `KES_CLIENT_CERT` and `KES_CLIENT_KEY`, `KES_CA`).
//!
//! # The model
//!
//! A [`Client`] talks to one server, or to several of one cluster
//! ([`Client::with_endpoints`], going on to the next while one cannot be reached), over one
//! kept-alive TLS connection per server, one request at a time (share it between threads, or
//! make one per thread for parallel requests; the log streams and backups open connections of
//! their own). It authenticates with an API key or a
//! certificate and key ([`Credentials`]); the server knows it by the identity of that key. It
//! verifies the server against CA certificates, or, for development servers only, not at all
//! ([`ServerTrust`]). [`Client::with_enclave`] works inside one enclave of a stateful server.
//!
//! Every call returns the decoded answer or a [`ClientError`] that says which case it is:
//! [`NotFound`](ClientError::NotFound), [`Exists`](ClientError::Exists),
//! [`Forbidden`](ClientError::Forbidden), [`Unavailable`](ClientError::Unavailable) and the
//! rest, each API error carrying the server's status and KES message as an [`ApiError`], which
//! compares equal to upstream's well-known values ([`ApiError::KEY_NOT_FOUND`], ...). Answers
//! with a body come as a [`Reply`], which dereferences to the decoded value and keeps the
//! server's bytes for callers that pass them on untouched. Those bytes are wiped when the
//! reply is dropped, and so is a [`DataKey`]'s plaintext; a decrypted plaintext or a secret
//! value taken out of a reply is the caller's to wipe (the `zeroize` crate).
//!
//! # The Go SDK's calls here
//!
//! | Go (`kes.Client`) | here | route |
//! |---|---|---|
//! | `Version`, `IsReady`, `Status`, `APIs`, `Metrics` | [`version`](Client::version), [`ready`](Client::ready), [`status`](Client::status), [`api`](Client::api), [`metrics`](Client::metrics) | `/version`, `/v1/ready`, `/v1/status`, `/v1/api`, `/v1/metrics` |
//! | `CreateKey`, `ImportKey`, `DescribeKey`, `DeleteKey` | [`create_key`](Client::create_key), [`import_key`](Client::import_key), [`describe_key`](Client::describe_key), [`delete_key`](Client::delete_key) | `/v1/key/{create,import,describe,delete}/<name>` |
//! | `ListKeys`, `ListIter` | [`list_keys`](Client::list_keys) (a page), [`keys`](Client::keys) (all) | `/v1/key/list/<prefix>` |
//! | `GenerateKey`, `Encrypt`, `Decrypt`, `HMAC` | [`generate_key`](Client::generate_key), [`encrypt`](Client::encrypt), [`decrypt`](Client::decrypt), [`hmac`](Client::hmac) | `/v1/key/{generate,encrypt,decrypt,hmac}/<name>` |
//! | `DescribePolicy`, `GetPolicy`, `ListPolicies` | [`describe_policy`](Client::describe_policy), [`read_policy`](Client::read_policy), [`list_policies`](Client::list_policies) / [`policies`](Client::policies); also [`create_policy`](Client::create_policy), [`delete_policy`](Client::delete_policy), [`assign_policy`](Client::assign_policy) | `/v1/policy/...` |
//! | `DescribeIdentity`, `DescribeSelf`, `ListIdentities` | [`describe_identity`](Client::describe_identity), [`describe_self`](Client::describe_self), [`list_identities`](Client::list_identities) / [`identities`](Client::identities); also [`create_identity`](Client::create_identity), [`delete_identity`](Client::delete_identity) | `/v1/identity/...` |
//! | `AuditLog`, `ErrorLog` | [`audit_log`](Client::audit_log), [`error_log`](Client::error_log): iterators of events | `/v1/log/{audit,error}` |
//! | (enclave and secret calls of the stateful server) | [`create_secret`](Client::create_secret), [`read_secret`](Client::read_secret), ..., [`secrets`](Client::secrets); [`create_enclave`](Client::create_enclave), ..., [`enclaves`](Client::enclaves) | `/v1/secret/...`, `/v1/enclave/...` |
//! | (cluster) | [`describe_cluster`](Client::describe_cluster), [`expand_cluster`](Client::expand_cluster), [`shrink_cluster`](Client::shrink_cluster), [`backup_cluster`](Client::backup_cluster) | `/v1/cluster/...` |
//! | `kes.ErrKeyNotFound`, ... | [`ApiError::KEY_NOT_FOUND`], ...; [`ClientError::is`] for `errors.Is` | |
//! | `kes.GenerateAPIKey` | [`generate_api_key`] | |
//!
//! Like the Go SDK's `Endpoints`, [`Client::with_endpoints`] fails over from a server that
//! cannot be reached or answers `503`; unlike it, a client does not wait and retry the same
//! server. [`ClientError::is_temporary`] says when trying again later makes sense.
#![warn(missing_docs)]

mod access;
mod cluster;
mod deadline;
mod error;
mod http;
mod keys;
mod listing;
mod logs;
mod secrets;
mod send;
#[cfg(test)]
pub(crate) use send::OUTCOME_UNKNOWN;
mod system;
mod tls;
mod types;
#[cfg(test)]
mod wire_tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use error::{ApiError, ClientError};
pub use http::Endpoint;
pub use listing::Names;
pub use logs::{Events, LogStream};
pub use tls::{generate_api_key, Credentials, ServerTrust};
pub use types::{
    AuditEvent, AuditRequest, AuditResponse, ClusterInfo, DataKey, EnclaveInfo, ErrorEvent,
    IdentityInfo, KeyInfo, LinkInfo, List, Metrics, Policy, PolicyInfo, Route, Rules, Secret,
    SecretInfo, SelfInfo, Status, Version,
};

/// The endpoint the CLI uses when `KES_SERVER` is not set.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7373";
/// The longest an ordinary request may take (see [`Client::with_timeout`]), and the connect,
/// read and write timeout of each of its steps.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A decoded answer together with the server's bytes.
#[derive(Clone)]
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

    /// The decoded value, without the body.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The same body with `f` applied to the value.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        Reply {
            value: f(self.value),
            body: self.body,
        }
    }
}

impl<T: DeserializeOwned> Reply<T> {
    /// A JSON answer decoded.
    fn decode(resp: http::Response) -> Result<Reply<T>, ClientError> {
        let value = serde_json::from_slice(&resp.body)
            .map_err(|e| ClientError::Response(format!("invalid JSON: {e}")))?;
        Ok(Reply {
            value,
            body: resp.body,
        })
    }
}

/// The value's `Debug` (a [`DataKey`] redacts its plaintext), and only the body's length: the
/// body may hold key material.
impl<T: std::fmt::Debug> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("value", &self.value)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<String> = self.endpoints().map(Endpoint::url).collect();
        f.debug_struct("Client")
            .field("endpoints", &endpoints)
            .field("identity", &self.identity)
            .field("enclave", &self.enclave)
            .finish_non_exhaustive()
    }
}

impl<T> std::ops::Deref for Reply<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A blocking KES client: see the [module documentation](self). `Send` and `Sync`; requests
/// from several threads take turns on its one connection per server.
pub struct Client {
    /// At least one.
    nodes: Vec<send::Node>,
    /// The node that answered last: where the next request goes first.
    preferred: AtomicUsize,
    tls: Arc<rustls::ClientConfig>,
    enclave: Option<String>,
    identity: String,
    /// The longest a call may take, all servers it tries together.
    timeout: Duration,
}

/// A request before it is sent.
struct Call {
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
}

/// Calls that are `PUT`s on the wire but change nothing on the server: the cryptographic
/// operations of a key.
const READ_ONLY_PUTS: [&str; 4] = [
    "/v1/key/generate/",
    "/v1/key/encrypt/",
    "/v1/key/decrypt/",
    "/v1/key/hmac/",
];

impl Call {
    /// Whether the call changes something on the server (creates, deletes, assigns...): such a
    /// call is not sent again once a server may have received it (see `send.rs`).
    fn changes_state(&self) -> bool {
        self.method != "GET" && !READ_ONLY_PUTS.iter().any(|p| self.path.starts_with(p))
    }
}

impl Client {
    /// A client for `server` (`https://host:port`, `host:port` or `host`, port 7373 by
    /// default). Nothing is sent until the first call; bad credentials, CA certificates or a
    /// bad endpoint fail here with [`ClientError::Config`].
    pub fn new(
        server: &str,
        credentials: Credentials,
        trust: ServerTrust,
    ) -> Result<Client, ClientError> {
        Client::with_endpoints(&[server], credentials, trust)
    }

    /// A client for several servers of one cluster (the Go SDK's `Endpoints`): requests go to
    /// the server that answered last, and on to the next while a server cannot be reached
    /// ([`ClientError::Transport`], [`ClientError::Tls`]) or answers `503` (not a member yet,
    /// no quorum on its side). As with the Go SDK, a write whose answer was lost on the way may
    /// then have happened twice: a create answers [`ClientError::Exists`] the second time.
    pub fn with_endpoints<S: AsRef<str>>(
        servers: &[S],
        credentials: Credentials,
        trust: ServerTrust,
    ) -> Result<Client, ClientError> {
        let nodes = servers
            .iter()
            .map(|s| send::Node::new(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(ClientError::Config("no server given".into()));
        }
        let identity = credentials.identity().to_owned();
        let tls = tls::client_config(credentials, &trust)?;
        Ok(Client {
            nodes,
            preferred: AtomicUsize::new(0),
            tls,
            enclave: None,
            identity,
            timeout: TIMEOUT,
        })
    }

    /// Works inside the enclave `enclave` (`None` or empty: the default enclave): sends
    /// `Kes-Enclave: <name>` with every request.
    pub fn with_enclave(mut self, enclave: Option<String>) -> Client {
        self.enclave = enclave.filter(|e| !e.is_empty());
        self
    }

    /// Gives each call at most `timeout` (30 s by default), from the first connection attempt
    /// to the last byte of the answer, however many servers it tries: a server that answers a
    /// byte at a time cannot hold a call longer (each read would be within any read timeout).
    /// A call out of time fails with [`ClientError::Transport`], and the next call starts at
    /// the next server. Log streams and backups are bounded only until their answer's head
    /// arrived.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The server the next request goes to first (the one that answered last).
    pub fn endpoint(&self) -> &Endpoint {
        &self.nodes[self.preferred.load(Ordering::Relaxed) % self.nodes.len()].endpoint
    }

    /// Every server of this client, in the order given.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.nodes.iter().map(|n| &n.endpoint)
    }

    /// The identity the server sees for this client.
    pub fn identity(&self) -> &str {
        &self.identity
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
        Reply::decode(self.call(call)?)
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
    fn debug_output_holds_no_key_material() {
        let json = br#"{"plaintext":"c2VjcmV0IGtleSBieXRlcw==","ciphertext":"AAEC"}"#;
        let dek: Reply<DataKey> = Reply {
            value: serde_json::from_slice(json).unwrap(),
            body: json.to_vec().into(),
        };
        let debug = format!("{dek:?}");
        assert!(
            debug.contains("<redacted>") && debug.contains("body_len"),
            "{debug}"
        );
        assert!(
            // Neither the body (`{"` is 123, 34) nor the decoded key ("sec" is 115, 101, 99).
            !debug.contains("123, 34") && !debug.contains("115, 101, 99"),
            "{debug}"
        );
    }

    #[test]
    fn a_client_is_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Client>();
        send_sync::<ClientError>();
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("my-key_1"), "my-key_1");
        assert_eq!(escape("app*"), "app*");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
        assert_eq!(escape(".."), "%2E%2E");
    }
}
