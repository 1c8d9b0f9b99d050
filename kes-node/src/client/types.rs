//! What the server answers, decoded leniently: every field the server may leave out is
//! optional or defaults, unknown fields are ignored, and byte fields are standard base64.
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};

/// `GET /version`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Version {
    /// The version (upstream: the commit time, `2024-01-11T13-15-23Z`).
    pub version: String,
    /// The commit the server was built from.
    pub commit: String,
}

/// `GET /v1/status`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The server's version.
    pub version: String,
    /// The operating system (`linux`).
    pub os: String,
    /// The CPU architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Seconds (older servers sent nanoseconds; see spec §4.4).
    pub uptime: f64,
    /// CPUs of the machine.
    pub num_cpu: u64,
    /// CPUs the server uses.
    pub num_cpu_used: u64,
    /// Heap memory in use, bytes.
    pub mem_heap_used: u64,
    /// Stack memory in use, bytes.
    pub mem_stack_used: u64,
    /// How long the key store took to answer its last health check, milliseconds (edge
    /// servers).
    pub keystore_latency: Option<u64>,
    /// The key store failed its last health check.
    pub keystore_unavailable: bool,
    /// The key store could not be reached at its last health check.
    pub keystore_unreachable: bool,
}

/// One entry of `GET /v1/api`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Route {
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: String,
    /// The path; one ending in `/` takes a name after it.
    pub path: String,
    /// The largest request body accepted, bytes.
    pub max_body: u64,
    /// Seconds; 0 = none.
    pub timeout: u64,
}

/// `GET /v1/key/describe/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// `AES256` or `ChaCha20`.
    pub algorithm: Option<String>,
    /// The key's version, where a server keeps versions.
    pub version: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The identity that created the key.
    pub created_by: Option<String>,
}

/// `PUT /v1/key/generate/<name>`: a data encryption key, in plain and sealed.
#[derive(Clone, Deserialize)]
pub struct DataKey {
    /// The key itself (32 bytes): use it, never store it.
    #[serde(deserialize_with = "base64_bytes")]
    pub plaintext: Vec<u8>,
    /// The key sealed by the server's key: store it beside what the key encrypts.
    #[serde(deserialize_with = "base64_bytes")]
    pub ciphertext: Vec<u8>,
}

impl Drop for DataKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.plaintext);
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("ciphertext", &self.ciphertext)
            .finish()
    }
}

#[derive(Deserialize)]
pub(super) struct Ciphertext {
    #[serde(deserialize_with = "base64_bytes")]
    pub ciphertext: Vec<u8>,
}

#[derive(Deserialize)]
pub(super) struct Plaintext {
    #[serde(deserialize_with = "base64_bytes")]
    pub plaintext: Vec<u8>,
}

#[derive(Deserialize)]
pub(super) struct Mac {
    #[serde(deserialize_with = "base64_bytes")]
    pub hmac: Vec<u8>,
}

/// A page of names (`names`, or `identities` for identity listings).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct List {
    /// The names of this page, sorted.
    #[serde(alias = "identities", deserialize_with = "null_as_empty")]
    pub names: Vec<String>,
    /// Where the next page starts; empty after the last page.
    pub continue_at: String,
}

/// `GET /v1/policy/describe/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PolicyInfo {
    /// The policy's name.
    pub name: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The identity that created the policy.
    pub created_by: Option<String>,
}

/// Allow and deny rules: patterns mapped to (empty) rule objects. Legacy servers sent lists.
pub type Rules = BTreeMap<String, serde_json::Value>;

/// `GET /v1/policy/read/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// The policy's name (in answers).
    pub name: Option<String>,
    /// Paths the policy allows (`/v1/key/generate/app-*`): a prefix with a trailing `*`, else
    /// exact.
    #[serde(deserialize_with = "rules")]
    pub allow: Rules,
    /// Paths the policy denies; a deny wins over an allow.
    #[serde(deserialize_with = "rules")]
    pub deny: Rules,
    /// RFC 3339 (in answers).
    pub created_at: Option<String>,
    /// The identity that created the policy (in answers).
    pub created_by: Option<String>,
}

impl Policy {
    /// A policy from a file: `{"allow": ..., "deny": ...}` where each side is an object keyed
    /// by pattern (the wire form) or a list of patterns (the YAML form).
    pub fn from_json(json: &[u8]) -> Result<Policy, String> {
        serde_json::from_slice(json).map_err(|e| format!("invalid policy: {e}"))
    }

    /// The request body of `PUT /v1/policy/create/<name>`.
    pub fn to_wire(&self) -> serde_json::Value {
        let side = |rules: &Rules| {
            serde_json::Value::Object(
                rules
                    .keys()
                    .map(|k| (k.clone(), serde_json::json!({})))
                    .collect(),
            )
        };
        serde_json::json!({ "allow": side(&self.allow), "deny": side(&self.deny) })
    }
}

/// `GET /v1/identity/describe/<identity>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IdentityInfo {
    /// The identity (hex SHA-256 of its public key).
    pub identity: Option<String>,
    /// The name of its policy.
    pub policy: Option<String>,
    /// An admin may do everything (in its enclave).
    pub admin: bool,
    /// A Go duration (`1h0m0s`).
    pub ttl: Option<String>,
    /// RFC 3339, if it expires.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The identity that created it (its parent).
    pub created_by: Option<String>,
    /// The identities it created.
    #[serde(deserialize_with = "null_as_empty")]
    pub children: Vec<String>,
}

/// `GET /v1/identity/self/describe`: the caller, its policy's name and rules (the flat shape
/// the Go client reads, spec §4.9; a nested `policy` object is understood as well).
#[derive(Debug, Clone, Default)]
pub struct SelfInfo {
    /// The caller.
    pub identity: IdentityInfo,
    /// Its policy's allow rules.
    pub allow: Rules,
    /// Its policy's deny rules.
    pub deny: Rules,
}

impl<'de> Deserialize<'de> for SelfInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut v = serde_json::Value::deserialize(d)?;
        let mut allow = v.get("allow").cloned();
        let mut deny = v.get("deny").cloned();
        if let Some(obj) = v.as_object_mut() {
            if let Some(serde_json::Value::Object(nested)) = obj.get("policy").cloned() {
                allow = nested.get("allow").cloned().or(allow);
                deny = nested.get("deny").cloned().or(deny);
                let name = nested.get("name").cloned().unwrap_or_default();
                obj.insert("policy".into(), name);
            }
        }
        let identity = IdentityInfo::deserialize(v).map_err(D::Error::custom)?;
        let rules_of = |v: Option<serde_json::Value>| match v {
            Some(v) => rules(v).map_err(D::Error::custom),
            None => Ok(Rules::new()),
        };
        Ok(SelfInfo {
            identity,
            allow: rules_of(allow)?,
            deny: rules_of(deny)?,
        })
    }
}

/// `GET /v1/secret/describe/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SecretInfo {
    /// The secret's name.
    pub name: Option<String>,
    /// The secret's version, where a server keeps versions.
    pub version: Option<serde_json::Value>,
    /// The secret's type (upstream: `generic`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The identity that created the secret.
    pub created_by: Option<String>,
}

/// `GET /v1/secret/read/<name>`: the value is `secret` (or `bytes`, as older servers named it).
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Secret {
    /// The value.
    #[serde(alias = "bytes", deserialize_with = "base64_bytes")]
    pub secret: Vec<u8>,
    /// Its metadata.
    #[serde(flatten)]
    pub info: SecretInfo,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("secret", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// `GET /v1/enclave/describe/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EnclaveInfo {
    /// The enclave's name.
    pub name: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The identity that created the enclave.
    pub created_by: Option<String>,
}

/// `GET /v1/cluster/describe`: the members and the answering node's view of the cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterInfo {
    /// The members: node id (as a string) to `host:port`.
    pub nodes: BTreeMap<String, String>,
    /// The leader's node id; `u64::MAX` while there is none (see [`leader`](Self::leader)).
    pub leader_id: Option<u64>,
    /// The id of the node that answered.
    pub node_id: Option<u64>,
    /// Its current term.
    pub term: Option<u64>,
    /// Its commit index.
    pub commit_index: Option<u64>,
    /// Its role: `leader`, `follower`, `candidate`, ...
    pub role: Option<String>,
    /// Its links to the other members, by node id.
    pub links: BTreeMap<String, LinkInfo>,
    /// A membership change not committed yet.
    pub pending_change: Option<String>,
}

impl ClusterInfo {
    /// The leader's node id and endpoint, if there is a leader.
    pub fn leader(&self) -> Option<(u64, &str)> {
        let id = self.leader_id.filter(|id| *id != u64::MAX)?;
        let addr = self.nodes.get(&id.to_string())?;
        Some((id, addr))
    }
}

/// One peer link in [`ClusterInfo`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LinkInfo {
    /// `connected`, `dialing`, `unreachable` or `refused`.
    pub state: String,
    /// The error of the last failed attempt.
    pub error: Option<String>,
}

/// One event of the audit log ([`Client::audit_log`](super::Client::audit_log)).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditEvent {
    /// When the server answered, RFC 3339.
    pub time: String,
    /// What was asked.
    pub request: AuditRequest,
    /// What was answered.
    pub response: AuditResponse,
}

/// The request of an [`AuditEvent`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditRequest {
    /// The client's IP address.
    pub ip: Option<String>,
    /// The URL path.
    pub path: String,
    /// The client's identity.
    pub identity: Option<String>,
    /// The enclave, unless it is the default one.
    pub enclave: Option<String>,
}

/// The response of an [`AuditEvent`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditResponse {
    /// The HTTP status.
    pub code: u16,
    /// How long the answer took, nanoseconds (as the Go SDK reads it).
    pub time: u64,
}

/// One event of the error log ([`Client::error_log`](super::Client::error_log)).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorEvent {
    /// The log record.
    pub message: String,
}

/// `GET /v1/metrics`: the Prometheus text and its samples.
///
/// ```
/// use kes_node::client::Metrics;
///
/// let m = Metrics::parse("# TYPE kes_http_request_success counter\n\
///     kes_http_request_success{code=\"200\"} 7\nkes_http_request_success{code=\"204\"} 1\n\
///     kes_system_up_time 12.5\n");
/// assert_eq!(m.value("kes_http_request_success"), Some(8.0));
/// assert_eq!(m.value("kes_system_up_time"), Some(12.5));
/// assert_eq!(m.value("kes_nothing"), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    text: String,
    samples: Vec<(String, f64)>,
}

impl Metrics {
    /// Reads Prometheus text: one sample per line that is not a comment, `name{labels} value`.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = match line.rfind('}') {
                    Some(end) => (&line[..=end], line[end + 1..].trim()),
                    None => line.split_once(char::is_whitespace)?,
                };
                // A timestamp may follow the value.
                let value = value.split_whitespace().next()?.parse().ok()?;
                Some((series.trim().to_owned(), value))
            })
            .collect();
        Metrics {
            text: text.to_owned(),
            samples,
        }
    }

    /// The text as the server sent it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every sample: the series (`name{labels}`) and its value.
    pub fn samples(&self) -> &[(String, f64)] {
        &self.samples
    }

    /// The sum of the samples of the metric `name` over all its labels (the Go SDK sums the
    /// request counters' `code` series the same way); `None` if there are none.
    pub fn value(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for (series, value) in &self.samples {
            let metric = series.split('{').next().unwrap_or_default();
            if metric == name {
                *found.get_or_insert(0.0) += value;
            }
        }
        found
    }
}

/// Standard base64 (padding optional, as Go's `[]byte` and `null` = empty).
fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use serde::de::Error as _;
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(Vec::new());
    };
    let cleaned: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(cleaned)
        .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Rules as an object keyed by pattern, a list of patterns, or `null`.
fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<Rules, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Rules::new()),
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok((s, serde_json::json!({}))),
                other => Err(D::Error::custom(format!(
                    "a policy rule must be a string, not {other}"
                ))),
            })
            .collect(),
        other => Err(D::Error::custom(format!(
            "policy rules must be an object or a list, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_from_maps_and_lists() {
        let p = Policy::from_json(br#"{"allow":["/v1/key/*"],"deny":{"/v1/key/delete/*":{}}}"#)
            .unwrap();
        assert_eq!(
            p.to_wire(),
            serde_json::json!({"allow":{"/v1/key/*":{}},"deny":{"/v1/key/delete/*":{}}})
        );
        assert!(Policy::from_json(br#"{"allow":[1]}"#).is_err());
        let empty = Policy::from_json(b"{}").unwrap();
        assert!(empty.allow.is_empty() && empty.deny.is_empty());
    }

    #[test]
    fn self_description_shapes() {
        let flat: SelfInfo = serde_json::from_str(
            r#"{"identity":"ab","policy":"p","allow":{"/v1/key/*":{}},"created_at":"t"}"#,
        )
        .unwrap();
        assert_eq!(flat.identity.policy.as_deref(), Some("p"));
        assert!(flat.allow.contains_key("/v1/key/*"));
        let nested: SelfInfo =
            serde_json::from_str(r#"{"identity":"ab","policy":{"name":"q","deny":{"/v1/x":{}}}}"#)
                .unwrap();
        assert_eq!(nested.identity.policy.as_deref(), Some("q"));
        assert!(nested.deny.contains_key("/v1/x"));
        let admin: SelfInfo =
            serde_json::from_str(r#"{"identity":"ab","admin":true,"created_at":"t"}"#).unwrap();
        assert!(admin.identity.admin);
    }

    #[test]
    fn lists_and_bytes() {
        let l: List = serde_json::from_str(r#"{"names":null}"#).unwrap();
        assert!(l.names.is_empty());
        let l: List = serde_json::from_str(r#"{"identities":["a","b"],"continue_at":""}"#).unwrap();
        assert_eq!(l.names, ["a", "b"]);
        let s: Secret = serde_json::from_str(r#"{"bytes":"aGk=","version":1}"#).unwrap();
        assert_eq!(s.secret, b"hi");
        let d: DataKey = serde_json::from_str(r#"{"plaintext":"aGk","ciphertext":null}"#).unwrap();
        assert_eq!(d.plaintext, b"hi");
        assert!(d.ciphertext.is_empty());
    }
}
