//! The server's YAML configuration file (upstream's field names, spec §6.1/§6.3).
//!
//! ```yaml
//! version: v1
//! address: 0.0.0.0:7373
//! admin:
//!   identity: <hex identity | disabled>
//! tls:
//!   key: ./server.key
//!   cert: ./server.cert
//!   ca: ./ca.pem            # the CAs client certificates must chain to with `auth: on`
//!   auth: off               # off (default): any client certificate, the identity decides
//! hsm:                      # which HSM seals kes.db: see `config/hsm.rs`
//!   key: kes:v1:aes256:...  # optional; KES_HSM_KEY wins when set (our extension)
//! api:
//!   /v1/status:
//!     skip_auth: true
//!     timeout: 15s          # Go duration; 0 = the route's default
//! policy:
//!   my-app:
//!     allow: [/v1/key/create/my-app*, /v1/key/generate/my-app*]
//!     deny: []
//!     identities: [<hex identity>, ...]
//! ```
//!
//! Any scalar may be `${ENV_VAR}` (the whole value, surrounding whitespace ignored); a missing
//! variable is an error that names it. Relative paths are resolved against the directory of
//! the config file. The edge server's sections (`cache`, `keys`, `keystore`) are parsed by
//! [`load_edge`] (`config/edge.rs`) and ignored here; `tls.proxy` is accepted and ignored;
//! any other unknown field is an error, so a typo never silently disables a setting.
//! `limits:` (ours, not upstream's) bounds what clients may hold (see [`Limits`]).
//!
//! The file is walked as a YAML value tree rather than derived with serde so that every error
//! can name the field it is about (`config: policy.my-app.identities[1]: ...`).
//!
//! The loader stands on its own: [`load`] reads and validates a file into a [`Config`],
//! [`parse`] does the same for text (relative paths resolved against a directory you give),
//! and [`load_edge`] / [`parse_edge`] read an edge server's sections from the same file. A
//! program embedding a server hands the results to [`crate::server::Builder`]; one that only
//! checks a file needs nothing else. Errors are one line naming the field, and nothing is
//! read from the environment but the `${VAR}` references the file makes.
//!
//! ```no_run
//! let config = kes_node::config::load("kes.yml".as_ref())?;
//! println!("admin: {}, workers: {:?}", config.admin_identity, config.limits.workers);
//! # Ok::<(), String>(())
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod edge;
mod hsm;
mod limits;
mod store;
pub use edge::{load_edge, parse_edge, CacheConfig, EdgeConfig, KeyStoreConfig};
pub(crate) use hsm::load_hsm;
pub use hsm::{
    AwsCredentials, AwsKmsConfig, HsmConfig, PinSource, Pkcs11Config, SealMechanism, TokenSelector,
    TpmConfig,
};
// What the HSMs of optional features read.
#[cfg_attr(not(all(feature = "aws", feature = "pkcs11")), allow(unused_imports))]
pub(crate) use hsm::{AWS_SECRET_KEY_VAR, AWS_TOKEN_VAR, DEFAULT_HEALTH_CHECK, KMS_NODE_CONTEXT};
pub use limits::Limits;

use serde_norway::{Mapping, Value};
use zeroize::Zeroizing;

/// A parsed and validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `address`, if given (the `--addr` flag wins).
    pub address: Option<String>,
    /// `admin.identity` (required; any non-hex value such as `disabled` disables admin access).
    pub admin_identity: String,
    /// `tls:`: the server's certificate and key, and how client certificates are checked.
    pub tls: TlsFiles,
    /// `hsm:`: what seals the root key (the SoftHSM's key is wiped when the config is dropped).
    pub hsm: HsmConfig,
    /// `api.<path>`: per-route overrides.
    pub api: BTreeMap<String, RouteConfig>,
    /// `policy.<name>`: static policies and the identities assigned to them.
    pub policies: BTreeMap<String, PolicyConfig>,
    /// `log.audit: on`: audit events to standard output.
    pub log_audit: bool,
    /// `log.error: on` (the default): error events to standard error.
    pub log_error: bool,
    /// `cluster.read_lease`: serve reads only while holding a lease of this length (see
    /// `shared/spec/cluster.md`); off by default.
    pub read_lease: Option<Duration>,
    /// `cluster.clock_drift`: the bound on clock error over one lease (default 10% of it).
    pub clock_drift: Option<Duration>,
    /// `limits:`: connection and memory limits (ours; defaults without it).
    pub limits: Limits,
    /// `store.min_free`: client writes are refused below this much free disk space (default
    /// 64 MiB; `config/store.rs`).
    pub min_free: Option<u64>,
}

/// `tls:`. Relative paths are resolved against the config file's directory.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// `tls.key`: the server's private key (PEM).
    pub key: PathBuf,
    /// `tls.cert`: the server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// `tls.ca`: the CA certificates (a PEM file, or a directory of them) that client chains
    /// must verify against with `auth`, and that peers' certificates are checked against.
    pub ca: Option<PathBuf>,
    /// `tls.auth: on`: client chains must verify against `ca` (upstream's meaning); off (the
    /// default): any client certificate is accepted in the handshake.
    pub auth: bool,
}

/// `api.<path>:`
#[derive(Debug, Clone, Default)]
pub struct RouteConfig {
    /// `skip_auth: true`: the route answers anyone, without an identity check.
    pub skip_auth: bool,
    /// `timeout`: how long the route may take (`None` or zero: its default).
    pub timeout: Option<Duration>,
}

/// `policy.<name>:`
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// `allow`: the API paths (with `*` patterns) the policy grants.
    pub allow: Vec<String>,
    /// `deny`: the paths it refuses even when allowed.
    pub deny: Vec<String>,
    /// `identities`: the identities (hex) assigned to it at start.
    pub identities: Vec<String>,
}

/// Reads and validates a config file. Errors are one line that names the problem.
pub fn load(path: &Path) -> Result<Config, String> {
    // The text may hold hsm.key: wiped when dropped.
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|err| format!("config: cannot read {}: {err}", path.display()))?,
    );
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse(&text, &base).map_err(|err| format!("{err} (in {})", path.display()))
}

/// Parses config text; `base` resolves relative paths.
pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
    let root: Value = serde_norway::from_str(text)
        .map_err(|err| format!("config: invalid YAML: {}", one_line(&err.to_string())))?;
    let root = match root {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        _ => return Err("config: the file must be a YAML mapping of fields".into()),
    };
    let top = Fields::new("", &root)?;
    top.check_known(
        &[
            "version", "address", "admin", "tls", "hsm", "api", "policy", "log", "cluster",
            "limits", "store",
        ],
        &["cache", "keys", "keystore"],
    )?;

    if let Some(version) = top.string("version")? {
        if version != "v1" {
            return Err(format!(
                "config: version: unsupported version '{version}': use v1"
            ));
        }
    }

    let mut config = Config {
        address: top.string("address")?,
        ..Config::default()
    };

    let admin = top.section("admin")?;
    admin.check_known(&["identity"], &[])?;
    config.admin_identity = admin
        .string("identity")?
        .ok_or("config: admin.identity is required (an identity, or `disabled`)")?;
    // Identities: what a certificate can match, or refused at start (issue 13).
    if config.admin_identity != "disabled" {
        config.admin_identity = crate::identity::names::normalize_identity(&config.admin_identity)
            .map_err(|e| format!("config: admin.identity: {e}, or `disabled`"))?;
    }

    let tls = top.section("tls")?;
    tls.check_known(&["key", "cert", "ca", "password", "auth"], &["proxy"])?;
    if tls.string("password")?.is_some() {
        return Err(
            "config: tls.password: encrypted private keys are not supported: \
                    decrypt the key file and remove tls.password"
                .into(),
        );
    }
    let path = |field: &str| -> Result<Option<PathBuf>, String> {
        Ok(tls.string(field)?.map(|p| base.join(p)))
    };
    config.tls = TlsFiles {
        key: path("key")?.ok_or("config: tls.key is required (the server's private key file)")?,
        cert: path("cert")?
            .ok_or("config: tls.cert is required (the server's certificate file)")?,
        ca: path("ca")?,
        auth: match tls
            .string("auth")?
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("off" | "false") => false,
            Some("on" | "true") => true,
            Some(other) => {
                return Err(format!(
                    "config: tls.auth: expected on or off, found '{other}'"
                ))
            }
        },
    };

    // `limits:` (not upstream's): what clients may hold before and after authentication.
    config.limits = parse_limits(&top.section("limits")?)?;

    // `log.audit` / `log.error`: `on` writes those events to standard output (upstream also
    // accepts level names; any of them counts as on).
    {
        let log = top.section("log")?;
        log.check_known(&["audit", "error"], &[])?;
        let on = |field: &str, default: bool| -> Result<bool, String> {
            Ok(
                match log
                    .string(field)?
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None | Some("") => default,
                    Some("off") => false,
                    Some(_) => true,
                },
            )
        };
        config.log_audit = on("audit", false)?;
        config.log_error = on("error", true)?;
    }

    let cluster = top.section("cluster")?;
    cluster.check_known(&["read_lease", "clock_drift"], &[])?;
    let duration = |field: &str| -> Result<Option<Duration>, String> {
        match cluster.string(field)? {
            None => Ok(None),
            Some(v) => parse_go_duration(&v)
                .map(Some)
                .map_err(|e| format!("config: cluster.{field}: {e}")),
        }
    };
    config.read_lease = duration("read_lease")?.filter(|d| !d.is_zero());
    config.clock_drift = duration("clock_drift")?;
    config.min_free = store::parse_store(&top)?;

    config.hsm = hsm::parse_hsm(&top.section("hsm")?, base)?;

    let api = top.section("api")?;
    for (route, value) in api.entries()? {
        let field = format!("api.{route}");
        if !route.starts_with('/') {
            return Err(format!("config: {field}: an API path starts with '/'"));
        }
        let route_fields = Fields::from_value(&field, value)?;
        route_fields.check_known(&["skip_auth", "timeout"], &[])?;
        let timeout = match route_fields.string("timeout")? {
            None => None,
            Some(s) => {
                let d = parse_go_duration(&s)
                    .map_err(|why| format!("config: {field}.timeout: {why}"))?;
                (!d.is_zero()).then_some(d)
            }
        };
        let skip_auth = route_fields.bool("skip_auth")?.unwrap_or(false);
        config.api.insert(route, RouteConfig { skip_auth, timeout });
    }

    let policies = top.section("policy")?;
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in policies.entries()? {
        let field = format!("policy.{name}");
        if !kes_core::name::valid_name(&name) {
            return Err(format!(
                "config: {field}: invalid policy name: use 1 to 80 of [0-9A-Za-z_-]"
            ));
        }
        let p = Fields::from_value(&field, value)?;
        p.check_known(&["allow", "deny", "identities"], &[])?;
        let mut policy = PolicyConfig {
            allow: p.strings("allow")?,
            deny: p.strings("deny")?,
            identities: p.strings("identities")?,
        };
        for (i, identity) in policy.identities.iter_mut().enumerate() {
            let at = format!("config: {field}.identities[{i}]");
            *identity = crate::identity::names::normalize_identity(identity)
                .map_err(|e| format!("{at}: {e}"))?;
            if *identity == config.admin_identity {
                return Err(format!(
                    "{at}: '{identity}' is the admin identity, which needs no policy"
                ));
            }
            if let Some(other) = owner.insert(identity.clone(), name.clone()) {
                return Err(format!(
                    "{at}: cannot assign policy '{name}' to '{identity}': identity already has \
                     policy '{other}'"
                ));
            }
        }
        config.policies.insert(name, policy);
    }
    Ok(config)
}

/// A config with nothing but the `hsm:` section of `path` (or the defaults, which take the
/// key from `KES_HSM_KEY`, without a file): what offline commands need to unseal a kes.db.
/// Only the hsm: section is read, so a full config of any node of the cluster works too.
pub(crate) fn hsm_only(path: Option<&Path>) -> Result<Config, String> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    Ok(Config {
        hsm: load_hsm(path)?,
        ..Config::default()
    })
}

/// The fields of one YAML mapping, with the dotted path used in error messages.
struct Fields<'a> {
    path: String,
    map: Option<&'a Mapping>,
}

impl<'a> Fields<'a> {
    fn new(path: &str, map: &'a Mapping) -> Result<Fields<'a>, String> {
        let fields = Fields {
            path: path.to_string(),
            map: Some(map),
        };
        // Keys must be strings, so that every later lookup and error message can name them.
        for key in map.keys() {
            if key.as_str().is_none() {
                return Err(format!(
                    "config: {}: field names must be strings, found {}",
                    fields.label(),
                    describe(key)
                ));
            }
        }
        Ok(fields)
    }

    /// A section that may be absent or empty (`tls:` with nothing under it).
    fn from_value(path: &str, value: &'a Value) -> Result<Fields<'a>, String> {
        match value {
            Value::Null => Ok(Fields {
                path: path.to_string(),
                map: None,
            }),
            Value::Mapping(m) => Fields::new(path, m),
            other => Err(format!(
                "config: {path}: expected a mapping, found {}",
                describe(other)
            )),
        }
    }

    fn label(&self) -> &str {
        if self.path.is_empty() {
            "top level"
        } else {
            &self.path
        }
    }

    fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map?.get(name).filter(|v| !v.is_null())
    }

    /// Rejects fields that are neither `known` nor `ignored`.
    fn check_known(&self, known: &[&str], ignored: &[&str]) -> Result<(), String> {
        let Some(map) = self.map else { return Ok(()) };
        for key in map.keys().filter_map(Value::as_str) {
            if !known.contains(&key) && !ignored.contains(&key) {
                return Err(format!(
                    "config: unknown field '{}': expected one of {}",
                    self.child(key),
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn section(&self, name: &str) -> Result<Fields<'a>, String> {
        match self.map.and_then(|m| m.get(name)) {
            None => Ok(Fields {
                path: self.child(name),
                map: None,
            }),
            Some(value) => Fields::from_value(&self.child(name), value),
        }
    }

    /// The entries of a mapping whose keys are user-chosen names (`api`, `policy`).
    fn entries(&self) -> Result<Vec<(String, &'a Value)>, String> {
        let Some(map) = self.map else {
            return Ok(Vec::new());
        };
        Ok(map
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect())
    }

    /// A scalar as a string, `${VAR}` expanded; empty means absent.
    fn string(&self, name: &str) -> Result<Option<String>, String> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let s = scalar(&self.child(name), value)?;
        Ok((!s.is_empty()).then_some(s))
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(value) => {
                let field = self.child(name);
                let s = scalar(&field, value)?;
                match s.as_str() {
                    "" => Ok(None),
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
                    _ => Err(format!(
                        "config: {field}: expected true or false, found '{s}'"
                    )),
                }
            }
        }
    }

    /// A list of scalars; each element may be `${VAR}`.
    fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        let field = self.child(name);
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| scalar(&format!("{field}[{i}]"), item))
                .collect(),
            Some(other) => Err(format!(
                "config: {field}: expected a list, found {}",
                describe(other)
            )),
        }
    }
}

/// A scalar's text with `${VAR}` expanded and surrounding whitespace trimmed.
fn scalar(field: &str, value: &Value) -> Result<String, String> {
    let s = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => {
            return Err(format!(
                "config: {field}: expected a value, found {}",
                describe(other)
            ))
        }
    };
    let trimmed = s.trim();
    match trimmed
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
    {
        Some(var) => {
            let var = var.trim();
            // Through `harden`: a running server no longer has KES_HSM_KEY in its environment.
            match crate::harden::var(var) {
                Ok(v) => Ok(v.trim().to_string()),
                Err(std::env::VarError::NotPresent) => Err(format!(
                    "config: {field}: environment variable '{var}' is not set"
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                    "config: {field}: environment variable '{var}' is not valid UTF-8"
                )),
            }
        }
        None => Ok(trimmed.to_string()),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `limits:`: every field optional, defaults from [`Limits::default`].
fn parse_limits(section: &Fields) -> Result<Limits, String> {
    section.check_known(
        &[
            "connections",
            "connections_per_ip",
            "handshake_timeout",
            "memory",
            "log_queue",
            "workers",
        ],
        &[],
    )?;
    let workers = match section.string("workers")? {
        None => None,
        Some(v) if v == "auto" => None,
        Some(v) => Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("config: limits.workers: expected auto or a positive number, found '{v}'")
        })?),
    };
    let mut limits = Limits {
        workers,
        ..Default::default()
    };
    let count = |field: &str, into: &mut usize| -> Result<(), String> {
        if let Some(v) = section.string(field)? {
            *into = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("config: limits.{field}: expected a positive number, found '{v}'")
            })?;
        }
        Ok(())
    };
    count("connections", &mut limits.connections)?;
    count("connections_per_ip", &mut limits.connections_per_ip)?;
    let size = |field: &str, into: &mut usize| -> Result<(), String> {
        if let Some(v) = section.string(field)? {
            *into = parse_size(&v).filter(|n| *n > 0).ok_or_else(|| {
                format!("config: limits.{field}: expected a size such as 64MiB, found '{v}'")
            })?;
        }
        Ok(())
    };
    size("memory", &mut limits.memory)?;
    size("log_queue", &mut limits.log_queue)?;
    if let Some(v) = section.string("handshake_timeout")? {
        limits.handshake_timeout = parse_go_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "config: limits.handshake_timeout: expected a duration such as 5s, found '{v}'"
                )
            })?;
    }
    Ok(limits)
}

/// A byte size: a number with an optional unit (`KB`/`MB`/`GB` are powers of 1000,
/// `KiB`/`MiB`/`GiB` of 1024).
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..digits].parse().ok()?;
    let unit: usize = match s[digits..].trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Go durations (`15s`, `1m30s`) are parsed where they are formatted.
pub(crate) use crate::timefmt::parse_go_duration;

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    const ID1: &str = "df7281ca3fed4ef7d06297eb7cb9d590a4edc863b4425f4762bb2afaebfd3258";
    const ID2: &str = "c0ecd5962eaf937422268b80a93dde4786dc9783fb2480ddea0f3e5fe471a731";

    fn base() -> &'static Path {
        Path::new("/etc/kes")
    }

    fn minimal(extra: &str) -> String {
        format!(
            "admin:\n  identity: {ADMIN}\ntls:\n  key: server.key\n  cert: server.cert\n{extra}"
        )
    }

    fn err(text: &str) -> String {
        let e = parse(text, base()).expect_err("expected an error");
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn full_config() {
        let text = format!(
            r#"
version: v1
address: 0.0.0.0:7373
admin:
  identity: {ADMIN}
tls:
  key: ./server.key
  cert: /abs/server.cert
  ca: certs/ca.pem
  auth: on
  proxy:
    identities: []
hsm:
  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
api:
  /v1/status:
    skip_auth: true
    timeout: 1m30s
  /v1/ready:
    skip_auth: false
    timeout: 0s
  /v1/metrics: {{}}
policy:
  my-app:
    allow:
    - /v1/key/create/my-app*
    - /v1/key/generate/my-app*
    deny:
    - /v1/key/generate/my-app-internal*
    identities:
    - {ID1}
    - {ID2}
  empty: {{}}
cache:
  expiry:
    any: 5m0s
log:
  error: on
keys:
  - name: some-key
keystore:
  fs:
    path: ./keys
"#
        );
        let c = parse(&text, base()).unwrap();
        assert_eq!(c.address.as_deref(), Some("0.0.0.0:7373"));
        assert_eq!(c.admin_identity, ADMIN);
        assert_eq!(c.tls.key, Path::new("/etc/kes/./server.key"));
        assert_eq!(c.tls.cert, Path::new("/abs/server.cert"));
        assert_eq!(
            c.tls.ca.as_deref(),
            Some(Path::new("/etc/kes/certs/ca.pem"))
        );
        let HsmConfig::Soft(Some(key)) = &c.hsm else {
            panic!("{:?}", c.hsm)
        };
        assert!(key.starts_with("kes:v1:aes256:"));
        let status = &c.api["/v1/status"];
        assert!(status.skip_auth);
        assert_eq!(status.timeout, Some(Duration::from_secs(90)));
        assert!(!c.api["/v1/ready"].skip_auth);
        assert_eq!(c.api["/v1/ready"].timeout, None);
        assert_eq!(c.api["/v1/metrics"].timeout, None);
        let p = &c.policies["my-app"];
        assert_eq!(
            p.allow,
            ["/v1/key/create/my-app*", "/v1/key/generate/my-app*"]
        );
        assert_eq!(p.deny, ["/v1/key/generate/my-app-internal*"]);
        assert_eq!(p.identities, [ID1, ID2]);
        assert!(c.policies["empty"].allow.is_empty());
    }

    #[test]
    fn tls_auth_and_limits() {
        let c = parse(&minimal(""), base()).unwrap();
        assert!(!c.tls.auth);
        assert_eq!(c.limits, Limits::default());
        let tls = |auth: &str| {
            format!("admin:\n  identity: {ADMIN}\ntls:\n  key: k\n  cert: c\n  auth: {auth}\n")
        };
        assert!(parse(&tls("on"), base()).unwrap().tls.auth);
        assert!(!parse(&tls("off"), base()).unwrap().tls.auth);
        assert!(parse(&tls("maybe"), base())
            .unwrap_err()
            .starts_with("config: tls.auth: expected on or off"));
        let c = parse(
            &minimal("limits:\n  connections: 100\n  connections_per_ip: 10\n  handshake_timeout: 1500ms\n  memory: 64MiB\n  log_queue: 100KB\n"),
            base(),
        )
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                connections: 100,
                connections_per_ip: 10,
                handshake_timeout: Duration::from_millis(1500),
                memory: 64 << 20,
                log_queue: 100_000,
                workers: None,
            }
        );
        assert!(err(&minimal("limits:\n  memory: lots\n")).starts_with("config: limits.memory:"));
        let workers = |v: &str| parse(&minimal(&format!("limits:\n  workers: {v}\n")), base());
        assert_eq!(workers("4").unwrap().limits.workers, Some(4));
        assert_eq!(workers("auto").unwrap().limits.workers, None);
        assert!(workers("0")
            .unwrap_err()
            .starts_with("config: limits.workers: expected auto or a positive number"));
        assert!(
            err(&minimal("limits:\n  connections: 0\n")).starts_with("config: limits.connections:")
        );
        assert!(err(&minimal("limits:\n  sockets: 3\n")).contains("unknown field 'limits.sockets'"));
    }

    #[test]
    fn minimal_config_and_defaults() {
        let c = parse(&minimal(""), base()).unwrap();
        assert_eq!(c.address, None);
        assert_eq!(c.tls.ca, None);
        assert_eq!(c.hsm, HsmConfig::Soft(None));
        assert!(c.api.is_empty() && c.policies.is_empty());
        // Empty optional values count as absent.
        let c = parse(&minimal("address: \"\"\nhsm:\n"), base()).unwrap();
        assert_eq!(c.address, None);
    }

    #[test]
    fn env_vars() {
        std::env::set_var("KES_NODE_CONFIG_TEST_ADMIN", format!("  {ADMIN}\n"));
        std::env::set_var("KES_NODE_CONFIG_TEST_SKIP", "true");
        std::env::set_var("KES_NODE_CONFIG_TEST_ID", ID1);
        let text = r#"
admin:
  identity: ${KES_NODE_CONFIG_TEST_ADMIN}
tls:
  key: " ${ KES_NODE_CONFIG_TEST_NOT_SET_EITHER } "
  cert: server.cert
"#;
        let e = err(text);
        assert_eq!(
            e,
            "config: tls.key: environment variable 'KES_NODE_CONFIG_TEST_NOT_SET_EITHER' is not set"
        );
        let text = r#"
admin:
  identity: ${KES_NODE_CONFIG_TEST_ADMIN}
tls:
  key: server.key
  cert: server.cert
api:
  /v1/ready:
    skip_auth: ${KES_NODE_CONFIG_TEST_SKIP}
policy:
  p:
    identities: [ "${KES_NODE_CONFIG_TEST_ID}" ]
"#;
        let c = parse(text, base()).unwrap();
        assert_eq!(c.admin_identity, ADMIN);
        assert!(c.api["/v1/ready"].skip_auth);
        assert_eq!(c.policies["p"].identities, [ID1]);
    }

    /// Identities that no certificate can match are refused at start, naming the field;
    /// upper-case hex is the same identity and is normalized (issue 13).
    #[test]
    fn identities_are_checked_and_normalized() {
        let e = err("admin:\n  identity: x\n");
        assert!(
            e.starts_with("config: admin.identity: 'x' is not an identity: an identity is 64 hex"),
            "{e}"
        );
        assert!(e.ends_with(", or `disabled`"), "{e}");
        let e = err(&format!("admin:\n  identity: {}\n", &ADMIN[1..]));
        assert!(e.starts_with("config: admin.identity: '"), "{e}");
        let e = err(&minimal(
            "policy:\n  p:\n    identities: [not-a-hex-identity]\n",
        ));
        assert!(
            e.starts_with(
                "config: policy.p.identities[0]: 'not-a-hex-identity' is not an identity"
            ),
            "{e}"
        );
        let upper = ADMIN.to_ascii_uppercase();
        let text = format!(
            "admin:\n  identity: {upper}\ntls:\n  key: k\n  cert: c\npolicy:\n  p:\n    \
             identities: [{}]\n",
            ID1.to_ascii_uppercase()
        );
        let c = parse(&text, base()).unwrap();
        assert_eq!(c.admin_identity, ADMIN);
        assert_eq!(c.policies["p"].identities, [ID1]);
        let c = parse(&minimal("").replace(ADMIN, "disabled"), base()).unwrap();
        assert_eq!(c.admin_identity, "disabled");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err("admin:\n  identity: disabled\n"),
            "config: tls.key is required (the server's private key file)"
        );
        assert!(
            err("tls:\n  key: a\n  cert: b\n").starts_with("config: admin.identity is required")
        );
        assert!(
            err(&minimal("version: v2\n")).starts_with("config: version: unsupported version 'v2'")
        );
        assert!(
            err(&minimal("adress: 1.2.3.4:7373\n")).starts_with("config: unknown field 'adress'")
        );
        assert!(err(&minimal("api:\n  /v1/ready:\n    skip-auth: true\n"))
            .starts_with("config: unknown field 'api./v1/ready.skip-auth'"));
        assert!(err(&minimal("api:\n  /v1/ready:\n    timeout: 15\n"))
            .starts_with("config: api./v1/ready.timeout: invalid duration '15': missing unit"));
        assert!(err(&minimal("api:\n  /v1/ready:\n    timeout: -1s\n"))
            .contains("must not be negative"));
        assert!(err(&minimal("api:\n  /v1/ready:\n    skip_auth: maybe\n"))
            .starts_with("config: api./v1/ready.skip_auth: expected true or false"));
        assert!(err(&minimal("api:\n  v1/ready: {}\n")).starts_with("config: api.v1/ready:"));
        assert!(err(&minimal("policy:\n  p:\n    allow: /v1/key\n"))
            .starts_with("config: policy.p.allow: expected a list"));
        assert!(err(&minimal("policy:\n  p:\n    allows: []\n"))
            .starts_with("config: unknown field 'policy.p.allows'"));
        assert!(err(&minimal("policy:\n  bad/name: {}\n")).starts_with("config: policy.bad/name:"));
        assert!(err(&minimal(&format!(
            "policy:\n  p:\n    identities: [{ADMIN}]\n"
        )))
        .contains("admin identity"));
        let twice =
            format!("policy:\n  a:\n    identities: [{ID1}]\n  b:\n    identities: [{ID1}]\n");
        assert_eq!(
            err(&minimal(&twice)),
            format!(
                "config: policy.b.identities[0]: cannot assign policy 'b' to '{ID1}': identity \
                 already has policy 'a'"
            )
        );
        let e = err(&minimal("hsm:\n  key: kes:v1:aes256:c2VjcmV0\n"));
        assert!(
            e.starts_with("config: hsm.key:") && !e.contains("c2VjcmV0"),
            "{e}"
        );
        // A section given twice.
        assert!(err(&minimal("tls:\n  ca: x\n")).starts_with("config: invalid YAML"));
        assert!(err("admin: [\n").starts_with("config: invalid YAML"));
        assert!(err("- a\n- b\n").starts_with("config: the file must be a YAML mapping"));
        assert!(err("admin: x\n").starts_with("config: admin: expected a mapping"));
    }

    #[test]
    fn encrypted_key_password_is_refused() {
        let text =
            format!("admin:\n  identity: {ADMIN}\ntls:\n  key: k\n  cert: c\n  password: secret\n");
        let e = err(&text);
        assert!(
            e.starts_with("config: tls.password:") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("15s"), Duration::from_secs(15));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("5m0s"), Duration::from_secs(300));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("2µs"), Duration::from_micros(2));
        for bad in ["", "s", "15", "1x", "1.s.", "-", "1h-1m", "99999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn load_resolves_against_the_file() {
        let dir = std::env::temp_dir().join(format!(
            "kes-node-config-{}-{}",
            std::process::id(),
            line!()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.yml");
        std::fs::write(&file, minimal("")).unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.tls.key, dir.join("server.key"));
        let e = load(&dir.join("missing.yml")).err().unwrap();
        assert!(e.starts_with("config: cannot read"), "{e}");
        std::fs::write(&file, "nonsense: 1\n").unwrap();
        let e = load(&file).err().unwrap();
        assert!(
            e.contains("unknown field 'nonsense'") && e.contains("config.yml"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const P11: &str = "hsm:\n  pkcs11:\n    module: /usr/lib/softhsm/libsofthsm2.so\n    token: kes\n    pin_env: KES_PIN\n    key_label: root\n";

    #[test]
    fn pkcs11_section() {
        let c = parse(&minimal(P11), base()).unwrap();
        assert_eq!(
            c.hsm,
            HsmConfig::Pkcs11(Pkcs11Config {
                module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
                token: TokenSelector::Label("kes".into()),
                pin: PinSource::Env("KES_PIN".into()),
                key_label: "root".into(),
                mechanism: SealMechanism::Auto,
                health_check: DEFAULT_HEALTH_CHECK,
            })
        );
        let pkcs11 = |text: &str| match parse(&minimal(text), base()).unwrap().hsm {
            HsmConfig::Pkcs11(p) => p,
            other => panic!("{other:?}"),
        };
        let text = "hsm:\n  pkcs11:\n    module: lib/p11.so\n    slot: 7\n    pin_file: pin.txt\n    key_label: k\n    mechanism: aes-key-wrap\n    health_check: 250ms\n";
        let p = pkcs11(text);
        assert_eq!(p.module, base().join("lib/p11.so"));
        assert_eq!(p.token, TokenSelector::Slot(7));
        assert_eq!(p.pin, PinSource::File(base().join("pin.txt")));
        assert_eq!(p.mechanism, SealMechanism::AesKeyWrap);
        assert_eq!(p.health_check, Duration::from_millis(250));
        let gcm = P11.replace(
            "key_label: root\n",
            "key_label: root\n    mechanism: aes-gcm\n",
        );
        let p = pkcs11(&gcm);
        assert_eq!(p.mechanism, SealMechanism::AesGcm);
        // The SoftHSM form keeps working.
        let soft = "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
        let c = parse(&minimal(soft), base()).unwrap();
        assert!(matches!(c.hsm, HsmConfig::Soft(Some(_))));
    }

    #[test]
    fn pkcs11_section_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "token: kes\n",
                "slot: 1\n    token: kes\n",
                "either token (a label) or slot",
            ),
            ("token: kes\n", "", "hsm.pkcs11.token is required"),
            (
                "token: kes\n",
                "slot: one\n",
                "hsm.pkcs11.slot: 'one' is not a slot id",
            ),
            (
                "pin_env: KES_PIN\n",
                "",
                "pin_env (an environment variable's name) or pin_file is required",
            ),
            (
                "pin_env: KES_PIN\n",
                "pin_env: A\n    pin_file: b\n",
                "either pin_env or pin_file",
            ),
            (
                "pin_env: KES_PIN\n",
                "pin: \"1234\"\n",
                "hsm.pkcs11.pin: not supported",
            ),
            ("key_label: root\n", "", "hsm.pkcs11.key_label is required"),
            (
                "key_label: root\n",
                "key_label: root\n    mechanism: des\n",
                "unknown mechanism 'des'",
            ),
            (
                "key_label: root\n",
                "key_label: root\n    health_check: 0s\n",
                "health_check: must be more than 0",
            ),
            (
                "key_label: root\n",
                "key_label: root\n    color: blue\n",
                "unknown field 'hsm.pkcs11.color'",
            ),
            (
                "module: /usr/lib/softhsm/libsofthsm2.so\n",
                "",
                "hsm.pkcs11.module is required",
            ),
        ];
        for (from, to, expect) in cases {
            let text = P11.replace(
                &format!("    {from}"),
                &if to.is_empty() {
                    String::new()
                } else {
                    format!("    {to}")
                },
            );
            let e = err(&minimal(&text));
            assert!(e.contains(expect), "{text}: {e}");
            assert!(!e.contains("1234"), "the PIN is never echoed: {e}");
        }
        let both = P11.replace(
            "hsm:\n",
            "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        );
        assert!(err(&minimal(&both)).contains("not key and pkcs11"));
    }

    #[test]
    fn hsm_only_files() {
        // `hsm add --to FILE` reads only the hsm: section; other sections are not checked.
        let p11 = hsm::parse_hsm_only(&format!("anything: [1]\n{P11}"), base()).unwrap();
        assert!(matches!(p11, HsmConfig::Pkcs11(p) if p.key_label == "root"));
        let soft = "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
        assert!(matches!(
            hsm::parse_hsm_only(soft, base()).unwrap(),
            HsmConfig::Soft(Some(_))
        ));
        let e = hsm::parse_hsm_only("tls: {}\n", base()).err().unwrap();
        assert!(e.contains("no HSM given"), "{e}");
    }
}
