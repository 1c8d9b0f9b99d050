//! What the server answers, decoded leniently: every field the server may leave out is
//! optional or defaults, unknown fields are ignored, and byte fields are standard base64.
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};

/// `GET /version`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Version {
    pub version: String,
    pub commit: String,
}

/// `GET /v1/status`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: String,
    pub os: String,
    pub arch: String,
    /// Seconds (older servers sent nanoseconds; see spec §4.4).
    pub uptime: f64,
    pub num_cpu: u64,
    pub num_cpu_used: u64,
    pub mem_heap_used: u64,
    pub mem_stack_used: u64,
    /// Milliseconds.
    pub keystore_latency: Option<u64>,
    pub keystore_unavailable: bool,
    pub keystore_unreachable: bool,
}

/// One entry of `GET /v1/api`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub max_body: u64,
    /// Seconds; 0 = none.
    pub timeout: u64,
}

/// `GET /v1/key/describe/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeyInfo {
    pub name: String,
    pub algorithm: Option<String>,
    pub version: Option<serde_json::Value>,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
}

/// `PUT /v1/key/generate/<name>`: a data encryption key, in plain and sealed.
#[derive(Clone, Deserialize)]
pub struct DataKey {
    #[serde(deserialize_with = "base64_bytes")]
    pub plaintext: Vec<u8>,
    #[serde(deserialize_with = "base64_bytes")]
    pub ciphertext: Vec<u8>,
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
    #[serde(alias = "identities", deserialize_with = "null_as_empty")]
    pub names: Vec<String>,
    pub continue_at: String,
}

/// `GET /v1/policy/describe/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PolicyInfo {
    pub name: Option<String>,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
}

/// Allow and deny rules: patterns mapped to (empty) rule objects. Legacy servers sent lists.
pub type Rules = BTreeMap<String, serde_json::Value>;

/// `GET /v1/policy/read/<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub name: Option<String>,
    #[serde(deserialize_with = "rules")]
    pub allow: Rules,
    #[serde(deserialize_with = "rules")]
    pub deny: Rules,
    pub created_at: Option<String>,
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
    pub identity: Option<String>,
    pub policy: Option<String>,
    pub admin: bool,
    /// A Go duration (`1h0m0s`).
    pub ttl: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub children: Vec<String>,
}

/// `GET /v1/identity/self/describe`: the caller, its policy's name and rules (the flat shape
/// the Go client reads, spec §4.9; a nested `policy` object is understood as well).
#[derive(Debug, Clone, Default)]
pub struct SelfInfo {
    pub identity: IdentityInfo,
    pub allow: Rules,
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
    pub name: Option<String>,
    pub version: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
}

/// `GET /v1/secret/read/<name>`: the value is `secret` (or `bytes`, as older servers named it).
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Secret {
    #[serde(alias = "bytes", deserialize_with = "base64_bytes")]
    pub secret: Vec<u8>,
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
    pub name: Option<String>,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
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
