//! The edge server's sections of the config file (spec §6.1): `cache`, `keys` and `keystore`.
//!
//! ```yaml
//! cache:
//!   expiry:
//!     any: 5m          # drop a cached key this long after it was fetched (0 = never)
//!     unused: 30s      # drop a cached key unused this long (0 = never)
//!     offline: 0s      # while the key store is unreachable, keep cached keys this long
//!   max_keys: 100000   # our addition: at most this many cached keys
//! keys:                # created at start if missing
//!   - name: my-key
//! keystore:            # exactly one of:
//!   fs:
//!     path: ./keys
//!   kes:               # a kes-node (cluster) keeping the keys as secrets of one enclave
//!     endpoint: https://10.0.0.1:7373   # or a list: [https://10.0.0.1:7373, https://10.0.0.2:7373]
//!     enclave: edge
//!     credentials: { api_key: kes:v1:... }   # or { cert: FILE, key: FILE }
//!     tls: { ca: ./ca.pem }                 # optional: trust these CAs (default: system roots)
//!     timeout: 10s     # our addition: a call's whole answer must be in by then (else: unreachable)
//!   aws:
//!     secretsmanager:
//!       endpoint: secretsmanager.us-east-1.amazonaws.com
//!       region: us-east-1
//!       kmskey: ""     # optional: the KMS key that encrypts the secrets
//!       credentials: { accesskey: ..., secretkey: ..., token: "" }
//! ```
//! Every key store section also takes `status: { ping: 10s }`: how often the edge server
//! checks that the key store answers (our addition, after upstream's Vault section).
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::{parse_go_duration, Fields};

/// `cache:` settings (see the edge server's cache for what each does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// `cache.expiry.any`: a cached key is dropped this long after it was fetched (zero:
    /// never).
    pub any: Duration,
    /// `cache.expiry.unused`: a cached key unused this long is dropped (zero: never).
    pub unused: Duration,
    /// `cache.expiry.offline`: while the key store is unreachable, cached keys serve this
    /// long (zero: not at all).
    pub offline: Duration,
    /// `cache.max_keys`: at most this many keys are cached.
    pub max_keys: usize,
}

impl Default for CacheConfig {
    /// Upstream's defaults (5m, 30s, offline caching off) and room for 100,000 keys.
    fn default() -> CacheConfig {
        CacheConfig {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
            max_keys: 100_000,
        }
    }
}

/// The parsed edge sections.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// `cache:`: how long keys stay in memory.
    pub cache: CacheConfig,
    /// `keys[].name`: keys to create at start if missing.
    pub keys: Vec<String>,
    /// `keystore:`: where the keys live.
    pub keystore: KeyStoreConfig,
    /// `keystore.<kind>.status.ping`
    pub ping: Duration,
}

/// `keystore:`
#[derive(Debug, Clone)]
pub enum KeyStoreConfig {
    /// `keystore.fs`: a directory with one file per key.
    Fs {
        /// `path`: the directory (created if missing).
        path: PathBuf,
    },
    /// `keystore.kes`: a kes-node cluster keeping the keys as secrets of one enclave.
    Kes {
        /// The nodes of the cluster, tried in turn when one cannot be reached.
        endpoints: Vec<String>,
        /// `enclave`: the enclave holding the keys.
        enclave: String,
        /// `credentials.api_key`: the edge server's API key (else `cert` and `key`).
        api_key: Option<String>,
        /// `credentials.cert`: its client certificate (PEM).
        cert: Option<PathBuf>,
        /// `credentials.key`: that certificate's private key (PEM).
        key: Option<PathBuf>,
        /// `tls.ca`: the CAs the nodes' certificates must chain to (default: the public roots).
        ca: Option<PathBuf>,
        /// `timeout`: the longest one call may take, connecting to the last byte of the answer,
        /// all nodes it tries together (default 10 s, the default `status.ping`). A node that
        /// answers a byte at a time then counts as unreachable instead of holding a worker.
        timeout: Duration,
    },
    /// `keystore.aws.secretsmanager`: AWS Secrets Manager.
    Aws {
        /// `endpoint`: the Secrets Manager endpoint (host or URL).
        endpoint: String,
        /// `region`: the AWS region.
        region: String,
        /// `kmskey`: the KMS key that encrypts the secrets (default: AWS's).
        kms_key: Option<String>,
        /// `credentials.accesskey`.
        access_key: String,
        /// `credentials.secretkey`.
        secret_key: String,
        /// `credentials.token`: a session token, for temporary credentials.
        token: Option<String>,
    },
}

/// Reads the edge sections of a config file (the rest is [`super::load`]'s).
pub fn load_edge(path: &Path) -> Result<EdgeConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("config: cannot read {}: {err}", path.display()))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse_edge(&text, &base).map_err(|err| format!("{err} (in {})", path.display()))
}

/// Parses the edge sections; `base` resolves relative paths.
pub fn parse_edge(text: &str, base: &Path) -> Result<EdgeConfig, String> {
    let root: Value = serde_norway::from_str(text).map_err(|err| {
        format!(
            "config: invalid YAML: {}",
            super::one_line(&err.to_string())
        )
    })?;
    let root = match root {
        Value::Mapping(m) => m,
        _ => Mapping::new(),
    };
    let top = Fields::new("", &root)?;

    let cache = top.section("cache")?;
    cache.check_known(&["expiry", "max_keys"], &[])?;
    let expiry = cache.section("expiry")?;
    expiry.check_known(&["any", "unused", "offline"], &[])?;
    let defaults = CacheConfig::default();
    let duration = |f: &Fields, field: &str, default: Duration| -> Result<Duration, String> {
        match f.string(field)? {
            None => Ok(default),
            Some(v) => {
                parse_go_duration(&v).map_err(|e| format!("config: {}: {e}", f.child(field)))
            }
        }
    };
    let max_keys = match cache.string("max_keys")? {
        None => defaults.max_keys,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("config: cache.max_keys: '{v}' is not a number of keys"))?,
    };
    let cache = CacheConfig {
        any: duration(&expiry, "any", defaults.any)?,
        unused: duration(&expiry, "unused", defaults.unused)?,
        offline: duration(&expiry, "offline", defaults.offline)?,
        max_keys,
    };

    let mut keys = Vec::new();
    if let Some(list) = top.get("keys") {
        let Value::Sequence(items) = list else {
            return Err("config: keys: expected a list of {name: ...}".into());
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("keys[{i}]");
            let k = Fields::from_value(&field, item)?;
            k.check_known(&["name"], &[])?;
            let name = k
                .string("name")?
                .ok_or_else(|| format!("config: {field}.name is required"))?;
            if !kes_core::name::valid_name(&name) {
                return Err(format!(
                    "config: {field}.name: '{name}' is not a valid key name"
                ));
            }
            if keys.contains(&name) {
                return Err(format!(
                    "config: {field}.name: key '{name}' is listed twice"
                ));
            }
            keys.push(name);
        }
    }

    let ks = top.section("keystore")?;
    ks.check_known(
        &["fs", "kes", "aws"],
        &["vault", "fortanix", "gemalto", "gcp", "azure", "entrust"],
    )?;
    let given: Vec<&str> = [
        "fs", "kes", "aws", "vault", "fortanix", "gemalto", "gcp", "azure", "entrust",
    ]
    .into_iter()
    .filter(|k| ks.get(k).is_some())
    .collect();
    let kind = match given.as_slice() {
        [] => {
            return Err(
                "config: no keystore specified: add keystore.fs, keystore.kes or keystore.aws"
                    .into(),
            )
        }
        [one] => *one,
        many => {
            return Err(format!(
                "config: keystore: more than one key store given ({}): choose one",
                many.join(", ")
            ))
        }
    };
    let section = ks.section(kind)?;
    let path = |f: &Fields, field: &str| -> Result<Option<PathBuf>, String> {
        Ok(f.string(field)?.map(|p| base.join(p)))
    };
    let (keystore, status) = match kind {
        "fs" => {
            section.check_known(&["path", "status"], &[])?;
            let p = path(&section, "path")?
                .ok_or("config: keystore.fs.path is required (the key directory)")?;
            (KeyStoreConfig::Fs { path: p }, section.section("status")?)
        }
        "kes" => {
            section.check_known(
                &["endpoint", "enclave", "credentials", "tls", "status", "timeout"],
                &[],
            )?;
            let creds = section.section("credentials")?;
            creds.check_known(&["api_key", "cert", "key"], &[])?;
            let tls = section.section("tls")?;
            tls.check_known(&["ca"], &[])?;
            let api_key = creds.string("api_key")?;
            let (cert, key) = (path(&creds, "cert")?, path(&creds, "key")?);
            match (&api_key, &cert, &key) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                _ => {
                    return Err("config: keystore.kes.credentials: give either api_key, or cert and key".into())
                }
            }
            // One endpoint, or a list (the nodes of a cluster).
            let endpoints = match section.get("endpoint") {
                Some(Value::Sequence(_)) => section.strings("endpoint")?,
                _ => section.string("endpoint")?.into_iter().collect(),
            };
            if endpoints.is_empty() {
                return Err("config: keystore.kes.endpoint is required (https://host:port, or a list)".into());
            }
            let timeout = duration(&section, "timeout", Duration::from_secs(10))?;
            if timeout.is_zero() {
                return Err("config: keystore.kes.timeout: must be more than 0".into());
            }
            let config = KeyStoreConfig::Kes {
                endpoints,
                enclave: section
                    .string("enclave")?
                    .ok_or("config: keystore.kes.enclave is required (the enclave holding the keys)")?,
                api_key,
                cert,
                key,
                ca: path(&tls, "ca")?,
                timeout,
            };
            (config, section.section("status")?)
        }
        "aws" => {
            section.check_known(&["secretsmanager"], &[])?;
            let sm = section.section("secretsmanager")?;
            sm.check_known(&["endpoint", "region", "kmskey", "credentials", "status"], &[])?;
            let creds = sm.section("credentials")?;
            creds.check_known(&["accesskey", "secretkey", "token"], &[])?;
            let region = sm
                .string("region")?
                .ok_or("config: keystore.aws.secretsmanager.region is required")?;
            let config = KeyStoreConfig::Aws {
                endpoint: sm
                    .string("endpoint")?
                    .unwrap_or_else(|| format!("secretsmanager.{region}.amazonaws.com")),
                region,
                kms_key: sm.string("kmskey")?,
                access_key: creds.string("accesskey")?.ok_or(
                    "config: keystore.aws.secretsmanager.credentials.accesskey is required",
                )?,
                secret_key: creds.string("secretkey")?.ok_or(
                    "config: keystore.aws.secretsmanager.credentials.secretkey is required",
                )?,
                token: creds.string("token")?,
            };
            (config, sm.section("status")?)
        }
        other => {
            return Err(format!(
                "config: keystore.{other}: this key store is not supported by kes-node: use fs, kes or aws"
            ))
        }
    };
    status.check_known(&["ping"], &[])?;
    let ping = duration(&status, "ping", Duration::from_secs(10))?;
    if ping.is_zero() {
        return Err(format!(
            "config: {}: must be more than 0",
            status.child("ping")
        ));
    }
    Ok(EdgeConfig {
        cache,
        keys,
        keystore,
        ping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EdgeConfig, String> {
        parse_edge(text, Path::new("/etc/kes"))
    }

    #[test]
    fn fs_with_cache_and_keys() {
        let c = parse(
            "cache:\n  expiry:\n    any: 2s\n    unused: 1s\n    offline: 1h\n  max_keys: 7\nkeys:\n  - name: a\n  - name: b\nkeystore:\n  fs:\n    path: keys\n    status: {ping: 500ms}\n",
        )
        .unwrap();
        assert_eq!(c.cache.any, Duration::from_secs(2));
        assert_eq!(c.cache.unused, Duration::from_secs(1));
        assert_eq!(c.cache.offline, Duration::from_secs(3600));
        assert_eq!(c.cache.max_keys, 7);
        assert_eq!(c.keys, ["a", "b"]);
        assert_eq!(c.ping, Duration::from_millis(500));
        assert!(
            matches!(c.keystore, KeyStoreConfig::Fs { ref path } if path == Path::new("/etc/kes/keys"))
        );
        let c = parse("keystore:\n  fs:\n    path: /k\n").unwrap();
        assert_eq!(c.cache, CacheConfig::default());
    }

    #[test]
    fn errors() {
        let e = |t: &str| parse(t).err().unwrap();
        assert!(e("admin: {}\n").contains("no keystore specified"));
        assert!(e("keystore:\n  fs: {path: a}\n  kes: {endpoint: x}\n").contains("more than one"));
        assert!(e("keystore:\n  vault: {endpoint: x}\n").contains("not supported"));
        assert!(e("keystore:\n  fs: {}\n").contains("keystore.fs.path is required"));
        assert!(
            e("keystore:\n  fs: {path: a}\ncache:\n  expiry:\n    any: 5\n")
                .contains("cache.expiry.any")
        );
        assert!(e("keystore:\n  fs: {path: a}\nkeys:\n  - name: a/b\n").contains("keys[0].name"));
        assert!(e("keystore:\n  kes: {endpoint: x, enclave: e}\n").contains("credentials"));
        let kes = "keystore:\n  kes:\n    endpoint: [a:1, b:2]\n    enclave: e\n    credentials: {api_key: k}\n";
        let c = parse(kes).unwrap();
        assert!(
            matches!(c.keystore, KeyStoreConfig::Kes { ref endpoints, timeout, .. } if endpoints == &["a:1", "b:2"] && timeout == Duration::from_secs(10))
        );
        let c = parse(&format!("{kes}    timeout: 1500ms\n")).unwrap();
        assert!(
            matches!(c.keystore, KeyStoreConfig::Kes { timeout, .. } if timeout == Duration::from_millis(1500))
        );
        assert!(e(&format!("{kes}    timeout: 0s\n")).contains("keystore.kes.timeout"));
        assert!(e(&format!("{kes}    timeout: soon\n")).contains("keystore.kes.timeout"));
        assert!(e(
            "keystore:\n  aws:\n    secretsmanager: {region: r, credentials: {accesskey: a}}\n"
        )
        .contains("secretkey is required"));
    }
}
