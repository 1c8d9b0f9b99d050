//! Why a call failed, sorted into the cases a caller handles differently.
//!
//! A KES server answers an error with an HTTP status and a message (`404 key does not exist`).
//! Upstream's Go SDK keeps both in `kes.Error` and compares errors by the pair
//! (`errors.Is(err, kes.ErrKeyNotFound)`); [`ApiError`] is that pair, with the same well-known
//! values as constants. [`ClientError`] sorts every failure into the cases a caller handles
//! differently.
use std::borrow::Cow;

/// A KES API error as the server sent it: the HTTP status and the KES message.
///
/// Two `ApiError`s are equal when status and message are, as upstream's `kes.Error` values
/// are, so the constants work like the Go SDK's `kes.ErrKeyNotFound` and friends:
///
/// ```
/// use kes_node::client::{ApiError, ClientError};
///
/// let err = ClientError::from(ApiError::new(404, "key does not exist"));
/// assert!(matches!(err, ClientError::NotFound(_)));
/// assert!(err.is(&ApiError::KEY_NOT_FOUND));
/// assert!(!err.is(&ApiError::SECRET_NOT_FOUND));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiError {
    status: u16,
    message: Cow<'static, str>,
}

impl ApiError {
    /// `403 not authorized: insufficient permissions`: the policy does not allow the call.
    pub const NOT_ALLOWED: ApiError = ApiError::of(403, "not authorized: insufficient permissions");
    /// `503 change committed but not replicated` (upstream's cluster).
    pub const PARTIAL_WRITE: ApiError = ApiError::of(503, "change committed but not replicated");
    /// `404 key does not exist`
    pub const KEY_NOT_FOUND: ApiError = ApiError::of(404, "key does not exist");
    /// `400 key already exists`
    pub const KEY_EXISTS: ApiError = ApiError::of(400, "key already exists");
    /// `404 secret does not exist`
    pub const SECRET_NOT_FOUND: ApiError = ApiError::of(404, "secret does not exist");
    /// `404 secret already exists`: upstream answers this one with 404, and so does kes-rs.
    pub const SECRET_EXISTS: ApiError = ApiError::of(404, "secret already exists");
    /// `400 policy already exists`
    pub const POLICY_EXISTS: ApiError = ApiError::of(400, "policy already exists");
    /// `404 policy does not exist`
    pub const POLICY_NOT_FOUND: ApiError = ApiError::of(404, "policy does not exist");
    /// `400 identity already exists`
    pub const IDENTITY_EXISTS: ApiError = ApiError::of(400, "identity already exists");
    /// `404 identity does not exist`
    pub const IDENTITY_NOT_FOUND: ApiError = ApiError::of(404, "identity does not exist");
    /// `400 decryption failed: ciphertext is not authentic`: wrong key, wrong context or a
    /// modified ciphertext.
    pub const DECRYPT: ApiError =
        ApiError::of(400, "decryption failed: ciphertext is not authentic");
    /// `400 enclave already exists`
    pub const ENCLAVE_EXISTS: ApiError = ApiError::of(400, "enclave already exists");
    /// `404 enclave does not exist`
    pub const ENCLAVE_NOT_FOUND: ApiError = ApiError::of(404, "enclave does not exist");

    const fn of(status: u16, message: &'static str) -> ApiError {
        ApiError {
            status,
            message: Cow::Borrowed(message),
        }
    }

    /// An error with this status and message. Messages of servers older than KES v0.18 are
    /// translated as the Go SDK does: `400 key does already exist` becomes
    /// [`KEY_EXISTS`](Self::KEY_EXISTS), `403 prohibited by policy`
    /// [`NOT_ALLOWED`](Self::NOT_ALLOWED).
    pub fn new(status: u16, message: impl Into<Cow<'static, str>>) -> ApiError {
        let message = message.into();
        match (status, message.as_ref()) {
            (400, "key does already exist") => ApiError::KEY_EXISTS,
            (403, "prohibited by policy") => ApiError::NOT_ALLOWED,
            _ => ApiError { status, message },
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The KES error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Why a call failed, sorted into the cases a caller handles differently:
///
/// | variant | when | what a caller usually does |
/// |---|---|---|
/// | [`NotFound`](ClientError::NotFound) | `404` (key, secret, policy, identity, enclave); `409` a node that is not a member | create it, or report it |
/// | [`Exists`](ClientError::Exists) | `400 … already exists` (and upstream's `404 secret already exists`); `409` a node already a member | use the existing one |
/// | [`Forbidden`](ClientError::Forbidden) | `401`, `403`: the identity's policy does not allow the call | fix the policy |
/// | [`Unavailable`](ClientError::Unavailable) | `502`, `503`, `504`: no quorum, not a member yet, key store down | retry later |
/// | [`BadRequest`](ClientError::BadRequest) | any other `4xx`: invalid name or body, ciphertext not authentic | fix the call |
/// | [`Server`](ClientError::Server) | any other `5xx` | report it |
/// | [`Tls`](ClientError::Tls) | the TLS handshake failed: the server's certificate is not trusted, or the server refused ours | fix the credentials or the CA |
/// | [`Transport`](ClientError::Transport) | no connection, a timeout, a connection cut in the middle | retry |
/// | [`Response`](ClientError::Response) | the server's answer is not what the API promises | report it |
/// | [`Config`](ClientError::Config) | bad local input (API key, certificate files, endpoint), or a local write that failed | fix the input |
///
/// `Display` shows what a person needs: the KES message for API errors (`key does not exist`),
/// an explanation for the others.
///
/// ```no_run
/// use kes_node::client::{Client, ClientError};
///
/// fn ensure_key(client: &Client, name: &str) -> Result<(), ClientError> {
///     match client.create_key(name) {
///         Ok(()) | Err(ClientError::Exists(_)) => Ok(()),
///         Err(err) => Err(err),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The key, secret, policy, identity or enclave does not exist (`404`), or the node named
    /// in a cluster shrink is not a member (`409`).
    NotFound(ApiError),
    /// It exists already: `400 … already exists`, upstream's `404 secret already exists`, or
    /// `409` a node that is already a member.
    Exists(ApiError),
    /// The identity may not do this (`403`, or `401` from a proxy in front of the server).
    Forbidden(ApiError),
    /// The server cannot serve the call now but may later (`502`, `503`, `504`): a cluster
    /// without quorum, a node that is not a member (yet), a key store that is down.
    Unavailable(ApiError),
    /// Any other `4xx`: an invalid name, pattern or body, a ciphertext that is not authentic
    /// ([`ApiError::DECRYPT`]), a wrong method.
    BadRequest(ApiError),
    /// Any other status (`500`, `507`, …): the server failed.
    Server(ApiError),
    /// The TLS handshake failed: the server's certificate could not be verified, or the
    /// server refused ours.
    Tls(String),
    /// The server could not be reached, or the connection broke or timed out.
    Transport(String),
    /// The server's answer was not what the API promises.
    Response(String),
    /// Bad local input (credentials, CA files, endpoint, arguments), or a local write that
    /// failed (a backup's destination).
    Config(String),
}

impl ClientError {
    /// The KES error the server answered with, if it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::NotFound(e)
            | ClientError::Exists(e)
            | ClientError::Forbidden(e)
            | ClientError::Unavailable(e)
            | ClientError::BadRequest(e)
            | ClientError::Server(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        self.api().map(ApiError::status)
    }

    /// True if the server answered exactly `err` (status and message), as Go's
    /// `errors.Is(err, kes.ErrKeyNotFound)`.
    pub fn is(&self, err: &ApiError) -> bool {
        self.api() == Some(err)
    }

    /// True if trying again later may succeed: the server is unavailable or the connection
    /// failed (what upstream's Go SDK retries).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_) | ClientError::Transport(_)
        )
    }
}

/// Sorts an API error into its case by status, and by message where the status is shared.
impl From<ApiError> for ClientError {
    fn from(err: ApiError) -> ClientError {
        let msg = err.message();
        match err.status {
            // Upstream's odd 404 for an existing secret.
            404 if msg.ends_with("already exists") => ClientError::Exists(err),
            404 => ClientError::NotFound(err),
            // A cluster change about a node: 409 with "already part" or "not part".
            409 if msg.contains("already part of") => ClientError::Exists(err),
            409 if msg.contains("not part of") => ClientError::NotFound(err),
            400..=499 if msg.ends_with("already exists") => ClientError::Exists(err),
            401 | 403 => ClientError::Forbidden(err),
            400..=499 => ClientError::BadRequest(err),
            502..=504 => ClientError::Unavailable(err),
            _ => ClientError::Server(err),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(err) = self.api() {
            return f.write_str(err.message());
        }
        match self {
            ClientError::Tls(msg) | ClientError::Transport(msg) => {
                write!(f, "cannot reach the server: {msg}")
            }
            ClientError::Response(msg) => write!(f, "unexpected server response: {msg}"),
            ClientError::Config(msg) => f.write_str(msg),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.api().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, message: &str) -> &'static str {
        match ClientError::from(ApiError::new(status, message.to_owned())) {
            ClientError::NotFound(_) => "not found",
            ClientError::Exists(_) => "exists",
            ClientError::Forbidden(_) => "forbidden",
            ClientError::Unavailable(_) => "unavailable",
            ClientError::BadRequest(_) => "bad request",
            ClientError::Server(_) => "server",
            _ => "other",
        }
    }

    /// Every status and message the server (src/api/errors.rs and the handlers) answers with
    /// lands in the case a caller expects.
    #[test]
    fn statuses_and_messages_sort_into_cases() {
        let cases = [
            (404, "key does not exist", "not found"),
            (404, "enclave does not exist", "not found"),
            (404, "secret already exists", "exists"),
            (400, "key already exists", "exists"),
            (400, "identity already exists", "exists"),
            (400, "key does already exist", "exists"),
            (409, "node is already part of the cluster", "exists"),
            (409, "node is not part of the cluster", "not found"),
            (409, "key does not support HMAC", "bad request"),
            (403, "not authorized: insufficient permissions", "forbidden"),
            (403, "prohibited by policy", "forbidden"),
            (401, "", "forbidden"),
            (
                400,
                "decryption failed: ciphertext is not authentic",
                "bad request",
            ),
            (
                400,
                "key name 'a/b' is empty, too long or contains invalid characters",
                "bad request",
            ),
            (405, "received method 'GET' expected 'PUT'", "bad request"),
            (503, "no quorum", "unavailable"),
            (502, "failed to create key", "unavailable"),
            (504, "key store is not reachable", "unavailable"),
            (500, "failed to generate encryption key", "server"),
            (507, "no space left", "server"),
        ];
        for (status, message, want) in cases {
            assert_eq!(kind(status, message), want, "{status} {message}");
        }
    }

    #[test]
    fn errors_compare_like_upstreams() {
        let err = ClientError::from(ApiError::new(400, "key does already exist"));
        assert!(err.is(&ApiError::KEY_EXISTS));
        assert_eq!(err.to_string(), "key already exists");
        let err = ClientError::from(ApiError::new(403, "prohibited by policy"));
        assert!(err.is(&ApiError::NOT_ALLOWED));
        assert_eq!(err.status(), Some(403));
        assert!(!err.is_temporary());
        let err = ClientError::from(ApiError::new(404, "key does not exist"));
        assert!(err.is(&ApiError::KEY_NOT_FOUND) && !err.is(&ApiError::POLICY_NOT_FOUND));
        assert!(ClientError::from(ApiError::PARTIAL_WRITE).is_temporary());
        let net = ClientError::Transport("https://h:1: connection refused".into());
        assert_eq!(net.status(), None);
        assert!(net.is_temporary());
        assert_eq!(
            net.to_string(),
            "cannot reach the server: https://h:1: connection refused"
        );
    }
}
