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
mod fields;
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
use fields::{one_line, scalar, Fields};
#[cfg_attr(not(all(feature = "aws", feature = "pkcs11")), allow(unused_imports))]
pub(crate) use hsm::{AWS_SECRET_KEY_VAR, AWS_TOKEN_VAR, DEFAULT_HEALTH_CHECK, KMS_NODE_CONTEXT};
pub use limits::Limits;
use limits::{parse_limits, parse_size};

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

/// Go durations (`15s`, `1m30s`) are parsed where they are formatted.
pub(crate) use crate::timefmt::parse_go_duration;

#[cfg(test)]
mod tests;
