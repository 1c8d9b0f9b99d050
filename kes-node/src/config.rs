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
//!   ca: ./ca.pem            # optional: verify client certificates against these CAs
//! hsm:
//!   key: kes:v1:aes256:...  # optional; KES_HSM_KEY wins when set (our extension)
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parsed and validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `address`, if given (the `--addr` flag wins).
    pub address: Option<String>,
    /// `admin.identity` (required; any non-hex value such as `disabled` disables admin access).
    pub admin_identity: String,
    pub tls: TlsFiles,
    /// `hsm.key`: a SoftHSM key string, if given.
    pub hsm_key: Option<String>,
    /// `api.<path>`: per-route overrides.
    pub api: BTreeMap<String, RouteConfig>,
    /// `policy.<name>`: static policies and the identities assigned to them.
    pub policies: BTreeMap<String, PolicyConfig>,
}

/// `tls:`. Relative paths are resolved against the config file's directory.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: Option<PathBuf>,
}

/// `api.<path>:`
#[derive(Debug, Clone, Default)]
pub struct RouteConfig {
    pub skip_auth: bool,
    pub timeout: Option<Duration>,
}

/// `policy.<name>:`
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub identities: Vec<String>,
}

/// Reads and validates a config file. Errors are one line that names the problem.
pub fn load(path: &Path) -> Result<Config, String> {
    todo!("{path:?}")
}

/// Parses config text; `base` resolves relative paths.
pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
    todo!("{text}{base:?}")
}
