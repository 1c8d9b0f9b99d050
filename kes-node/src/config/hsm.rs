//! The `hsm:` section of the config file: which HSM seals the root key of `kes.db` (see
//! `crate::hsm`). Exactly one of:
//!
//! ```yaml
//! hsm:
//!   key: kes:v1:aes256:...      # the software HSM (KES_HSM_KEY wins when set); or nothing
//!   pkcs11:                     # a PKCS#11 token (cargo feature pkcs11)
//!     module: /usr/lib/softhsm/libsofthsm2.so
//!     token: kes                # the token's label (or `slot: <id>`)
//!     pin_env: KES_PKCS11_PIN   # or `pin_file: ./pin`; never the PIN itself
//!     key_label: kes-root       # the AES-256 key on the token (created with a new kes.db)
//!     mechanism: auto           # auto | aes-gcm | aes-key-wrap
//!     health_check: 5s          # how often a running server probes the token
//!   tpm:                        # the platform's TPM 2.0 (cargo feature tpm)
//!     tcti: device:/dev/tpmrm0  # the default; or swtpm:host=127.0.0.1,port=2321, tabrmd:
//!     pcrs: [0, 7]              # bind the root key to these sha256 PCRs (default: none)
//!     health_check: 5s
//!   aws-kms:                    # an AWS KMS key (cargo feature aws)
//!     key_id: alias/kes-root    # key id, ARN or alias
//!     region: us-east-1         # default: AWS_REGION / AWS_DEFAULT_REGION
//!     endpoint: https://kms.us-east-1.amazonaws.com   # the default for the region
//!     credentials: {accesskey: ..., secretkey: ..., token: ...}   # default: environment, then the instance role
//!     context: {team: storage}  # more encryption context (kes:node is always there)
//!     health_check: 5s
//! ```
//!
//! ```
//! # use kes_node::config::{parse, HsmConfig};
//! let head = "admin: {identity: disabled}\ntls: {key: k, cert: c}\n";
//! let config = parse(&format!("{head}hsm: {{tpm: {{pcrs: [0, 7]}}}}\n"), ".".as_ref()).unwrap();
//! let HsmConfig::Tpm(tpm) = config.hsm else { panic!() };
//! assert_eq!((tpm.tcti.as_str(), &tpm.pcrs[..]), ("device:/dev/tpmrm0", &[0u8, 7][..]));
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;
use zeroize::Zeroizing;

use super::{one_line, parse_go_duration, scalar, Fields};

/// The `hsm:` section: the one HSM that seals (and unseals) the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsmConfig {
    /// The software HSM: `hsm.key` if given (wiped when dropped); `KES_HSM_KEY` wins.
    Soft(Option<Zeroizing<String>>),
    /// `hsm.pkcs11`: a PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// `hsm.tpm`: the platform's TPM 2.0.
    Tpm(TpmConfig),
    /// `hsm.aws-kms`: an AWS KMS key.
    AwsKms(AwsKmsConfig),
}

impl Default for HsmConfig {
    fn default() -> HsmConfig {
        HsmConfig::Soft(None)
    }
}

impl HsmConfig {
    /// How often a running server probes the HSM (`health_check`; the SoftHSM has nothing to
    /// probe, the interval only keeps its status entry fresh).
    pub(crate) fn health_check(&self) -> Duration {
        match self {
            HsmConfig::Soft(_) => DEFAULT_HEALTH_CHECK,
            HsmConfig::Pkcs11(p) => p.health_check,
            HsmConfig::Tpm(t) => t.health_check,
            HsmConfig::AwsKms(a) => a.health_check,
        }
    }

    /// The environment variables besides `KES_HSM_KEY` that hold this HSM's secrets, which a
    /// hardened server takes out of its environment (`crate::harden`): the PKCS#11 PIN's, and
    /// AWS's when the credentials come from there.
    pub(crate) fn secret_vars(&self) -> Vec<&str> {
        match self {
            HsmConfig::Pkcs11(Pkcs11Config {
                pin: PinSource::Env(var),
                ..
            }) => vec![var.as_str()],
            HsmConfig::AwsKms(AwsKmsConfig {
                credentials: None, ..
            }) => vec![AWS_SECRET_KEY_VAR, AWS_TOKEN_VAR],
            _ => Vec::new(),
        }
    }
}

/// The environment variables of AWS's secret key and session token.
pub(crate) const AWS_SECRET_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";
pub(crate) const AWS_TOKEN_VAR: &str = "AWS_SESSION_TOKEN";
/// The encryption context pair that names the sealed data (`hsm/aws_kms.rs`).
pub(crate) const KMS_NODE_CONTEXT: &str = "kes:node";

/// `hsm.pkcs11:`: which token and key seal the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// `module`: the PKCS#11 library (resolved against the config file's directory).
    pub module: PathBuf,
    /// `token` or `slot`.
    pub token: TokenSelector,
    /// `pin_env` or `pin_file`: where the user PIN is read from when the token is opened.
    pub pin: PinSource,
    /// `key_label`: the label of the AES-256 key on the token.
    pub key_label: String,
    /// `mechanism`: how the key seals.
    pub mechanism: SealMechanism,
    /// `health_check`: the interval of the running server's token probe.
    pub health_check: Duration,
}

/// The default `health_check` of every HSM.
pub(crate) const DEFAULT_HEALTH_CHECK: Duration = Duration::from_secs(5);

/// `hsm.pkcs11.token` / `hsm.pkcs11.slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// `hsm.pkcs11.token`: the token with this label.
    Label(String),
    /// `hsm.pkcs11.slot`: the token in this slot.
    Slot(u64),
}

/// `hsm.pkcs11.pin_env` / `hsm.pkcs11.pin_file`. The PIN itself never sits in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin_env`: the PIN is in this environment variable.
    Env(String),
    /// `pin_file`: the PIN is in this file (its first line).
    File(PathBuf),
}

/// `hsm.pkcs11.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealMechanism {
    /// CKM_AES_GCM if the token offers it, else CKM_AES_KEY_WRAP.
    Auto,
    /// `aes-gcm`: CKM_AES_GCM.
    AesGcm,
    /// `aes-key-wrap`: CKM_AES_KEY_WRAP (RFC 3394).
    AesKeyWrap,
}

/// `hsm.tpm:`: the TPM 2.0 and the PCRs the root key is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmConfig {
    /// `tcti`: how to reach the TPM, in tpm2-tss's TCTI syntax (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`, `tabrmd:`).
    pub tcti: String,
    /// `pcrs`: PCR indices (0 to 23) of the sha256 bank, sorted and without repeats; empty: the
    /// root key is not bound to any.
    pub pcrs: Vec<u8>,
    /// `health_check`: the interval of the running server's TPM probe.
    pub health_check: Duration,
}

/// The default `hsm.tpm.tcti`: the kernel's resource manager.
pub(crate) const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// `hsm.aws-kms:`: the KMS key that wraps the root key, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// `key_id`: a key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub key_id: String,
    /// `region`; `None`: `AWS_REGION`, else `AWS_DEFAULT_REGION`, when the HSM is opened.
    pub region: Option<String>,
    /// `endpoint`; `None`: `https://kms.<region>.amazonaws.com`. `http://` for an emulator.
    pub endpoint: Option<String>,
    /// `credentials`; `None`: the environment, else the instance role (IMDSv2).
    pub credentials: Option<AwsCredentials>,
    /// `context`: encryption context pairs beyond `kes:node` (which names the data).
    pub context: BTreeMap<String, String>,
    /// `health_check`: the interval of the running server's KMS probe.
    pub health_check: Duration,
}

/// `hsm.aws-kms.credentials`: static credentials (the secret key is wiped when dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `accesskey`: the access key id.
    pub access_key: String,
    /// `secretkey`: the secret access key.
    pub secret_key: Zeroizing<String>,
    /// `token`: a session token, for temporary credentials.
    pub token: Option<String>,
}

/// Reads only the `hsm:` section of a YAML file (for `kes-node hsm add --to FILE`): the other
/// sections, if any, are not looked at.
pub(crate) fn load_hsm(path: &Path) -> Result<HsmConfig, String> {
    // The text may hold hsm.key: wiped when dropped.
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|err| format!("config: cannot read {}: {err}", path.display()))?,
    );
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse_hsm_only(&text, &base).map_err(|err| format!("{err} (in {})", path.display()))
}

/// [`load_hsm`] on text.
pub(crate) fn parse_hsm_only(text: &str, base: &Path) -> Result<HsmConfig, String> {
    let root: Value = serde_norway::from_str(text)
        .map_err(|err| format!("config: invalid YAML: {}", one_line(&err.to_string())))?;
    let Value::Mapping(root) = root else {
        return Err("config: the file must be a YAML mapping with an hsm: section".into());
    };
    let top = Fields::new("", &root)?;
    let hsm = parse_hsm(&top.section("hsm")?, base)?;
    if hsm == HsmConfig::Soft(None) {
        return Err("config: hsm: no HSM given: key, pkcs11, tpm or aws-kms".into());
    }
    Ok(hsm)
}

/// `hsm:`: at most one of `key`, `pkcs11`, `tpm`, `aws-kms`.
pub(super) fn parse_hsm(hsm: &Fields, base: &Path) -> Result<HsmConfig, String> {
    const KINDS: [&str; 4] = ["key", "pkcs11", "tpm", "aws-kms"];
    hsm.check_known(&KINDS, &[])?;
    // `tpm: {}` (or `tpm:` alone) selects the TPM with its defaults.
    let given: Vec<&str> = KINDS
        .into_iter()
        .filter(|k| hsm.contains(k))
        .filter(|k| *k != "key" || hsm.get(k).is_some())
        .collect();
    if given.len() > 1 {
        return Err(format!(
            "config: hsm: give one of key (SoftHSM), pkcs11, tpm or aws-kms, not {}",
            given.join(" and ")
        ));
    }
    match given.first().copied() {
        None => Ok(HsmConfig::Soft(None)),
        Some("key") => parse_soft(hsm),
        Some("pkcs11") => parse_pkcs11(&hsm.section("pkcs11")?, base).map(HsmConfig::Pkcs11),
        Some("tpm") => parse_tpm(&hsm.section("tpm")?).map(HsmConfig::Tpm),
        Some(_) => parse_aws_kms(&hsm.section("aws-kms")?).map(HsmConfig::AwsKms),
    }
}

fn parse_soft(hsm: &Fields) -> Result<HsmConfig, String> {
    let key = hsm.string("key")?.map(Zeroizing::new);
    if let Some(key) = &key {
        // Never echo the value: it is the key that protects every other key.
        if kes_core::hsm::SoftHsm::parse(key).is_err() {
            return Err(
                "config: hsm.key: not a SoftHSM key: expected kes:v1:aes256:<base64 of \
                        32 bytes> (or kes:v1:chacha20:...)"
                    .into(),
            );
        }
    }
    Ok(HsmConfig::Soft(key))
}

/// `health_check` of an HSM section: a Go duration above 0, [`DEFAULT_HEALTH_CHECK`] if absent.
fn health_check(section: &Fields) -> Result<Duration, String> {
    let field = section.child("health_check");
    let every = match section.string("health_check")? {
        None => DEFAULT_HEALTH_CHECK,
        Some(v) => parse_go_duration(&v).map_err(|e| format!("config: {field}: {e}"))?,
    };
    if every.is_zero() {
        return Err(format!("config: {field}: must be more than 0"));
    }
    Ok(every)
}

fn parse_pkcs11(p: &Fields, base: &Path) -> Result<Pkcs11Config, String> {
    if p.get("pin").is_some() {
        // A PIN in the config file would be one more copy of a secret on disk.
        return Err(
            "config: hsm.pkcs11.pin: not supported: name an environment variable \
                    with pin_env, or a file with pin_file"
                .into(),
        );
    }
    p.check_known(
        &[
            "module",
            "token",
            "slot",
            "pin_env",
            "pin_file",
            "key_label",
            "mechanism",
            "health_check",
        ],
        &[],
    )?;
    let module = p
        .string("module")?
        .ok_or("config: hsm.pkcs11.module is required (the path of the PKCS#11 library)")?;
    let token = match (p.string("token")?, p.string("slot")?) {
        (Some(label), None) => TokenSelector::Label(label),
        (None, Some(slot)) => TokenSelector::Slot(slot.parse().map_err(|_| {
            format!("config: hsm.pkcs11.slot: '{slot}' is not a slot id (a whole number)")
        })?),
        (Some(_), Some(_)) => {
            return Err("config: hsm.pkcs11: give either token (a label) or slot, not both".into())
        }
        (None, None) => {
            return Err(
                "config: hsm.pkcs11.token is required (the token's label; or slot: <id>)".into(),
            )
        }
    };
    let pin = match (p.string("pin_env")?, p.string("pin_file")?) {
        (Some(var), None) => PinSource::Env(var),
        (None, Some(file)) => PinSource::File(base.join(file)),
        (Some(_), Some(_)) => {
            return Err("config: hsm.pkcs11: give either pin_env or pin_file, not both".into())
        }
        (None, None) => {
            return Err(
                "config: hsm.pkcs11.pin_env (an environment variable's name) or \
                        pin_file is required: the token's user PIN"
                    .into(),
            )
        }
    };
    let key_label = p.string("key_label")?.ok_or(
        "config: hsm.pkcs11.key_label is required (the label of the AES key on the token)",
    )?;
    let mechanism = match p.string("mechanism")?.as_deref() {
        None | Some("auto") => SealMechanism::Auto,
        Some("aes-gcm") => SealMechanism::AesGcm,
        Some("aes-key-wrap") => SealMechanism::AesKeyWrap,
        Some(other) => {
            return Err(format!(
                "config: hsm.pkcs11.mechanism: unknown mechanism '{other}': use auto, aes-gcm \
                 or aes-key-wrap"
            ))
        }
    };
    Ok(Pkcs11Config {
        module: base.join(module),
        token,
        pin,
        key_label,
        mechanism,
        health_check: health_check(p)?,
    })
}

fn parse_tpm(t: &Fields) -> Result<TpmConfig, String> {
    t.check_known(&["tcti", "pcrs", "health_check"], &[])?;
    let mut pcrs = Vec::new();
    for (i, pcr) in t.strings("pcrs")?.iter().enumerate() {
        match pcr.parse::<u8>() {
            Ok(n) if n <= 23 => pcrs.push(n),
            _ => {
                return Err(format!(
                    "config: hsm.tpm.pcrs[{i}]: '{pcr}' is not a PCR index (0 to 23)"
                ))
            }
        }
    }
    pcrs.sort_unstable();
    pcrs.dedup();
    Ok(TpmConfig {
        tcti: t.string("tcti")?.unwrap_or_else(|| DEFAULT_TCTI.into()),
        pcrs,
        health_check: health_check(t)?,
    })
}

fn parse_aws_kms(a: &Fields) -> Result<AwsKmsConfig, String> {
    a.check_known(
        &[
            "key_id",
            "region",
            "endpoint",
            "credentials",
            "context",
            "health_check",
        ],
        &[],
    )?;
    let key_id = a
        .string("key_id")?
        .ok_or("config: hsm.aws-kms.key_id is required (the KMS key's id, ARN or alias/<name>)")?;
    let creds = a.section("credentials")?;
    creds.check_known(&["accesskey", "secretkey", "token"], &[])?;
    let credentials = match (creds.string("accesskey")?, creds.string("secretkey")?) {
        (Some(access_key), Some(secret_key)) => Some(AwsCredentials {
            access_key,
            secret_key: Zeroizing::new(secret_key),
            token: creds.string("token")?,
        }),
        (None, None) if creds.string("token")?.is_none() => None,
        _ => {
            return Err(
                "config: hsm.aws-kms.credentials: give accesskey and secretkey (and token for \
                 temporary credentials), or leave credentials out to use the environment or \
                 the instance role"
                    .into(),
            )
        }
    };
    let context_fields = a.section("context")?;
    let mut context = BTreeMap::new();
    for (name, value) in context_fields.entries()? {
        let field = context_fields.child(&name);
        if name == KMS_NODE_CONTEXT {
            return Err(format!(
                "config: {field}: kes-node sets this pair itself (it names the sealed data)"
            ));
        }
        context.insert(name, scalar(&field, value)?);
    }
    Ok(AwsKmsConfig {
        key_id,
        region: a.string("region")?,
        endpoint: a.string("endpoint")?,
        credentials,
        context,
        health_check: health_check(a)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hsm(text: &str) -> Result<HsmConfig, String> {
        parse_hsm_only(text, Path::new("/etc/kes"))
    }

    #[test]
    fn tpm_section() {
        let t = hsm("hsm:\n  tpm:\n").unwrap();
        assert_eq!(
            t,
            HsmConfig::Tpm(TpmConfig {
                tcti: DEFAULT_TCTI.into(),
                pcrs: vec![],
                health_check: DEFAULT_HEALTH_CHECK,
            })
        );
        let t = hsm("hsm:\n  tpm:\n    tcti: swtpm:host=127.0.0.1,port=2321\n    pcrs: [7, 0, 7]\n    health_check: 1s\n").unwrap();
        let HsmConfig::Tpm(t) = t else { panic!() };
        assert_eq!(t.tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(t.pcrs, [0, 7]);
        assert_eq!(t.health_check, Duration::from_secs(1));
        for (text, want) in [
            ("pcrs: [24]", "hsm.tpm.pcrs[0]: '24' is not a PCR index"),
            ("pcrs: [1, x]", "hsm.tpm.pcrs[1]: 'x' is not a PCR index"),
            ("pcrs: 7", "hsm.tpm.pcrs: expected a list"),
            ("bank: sha1", "unknown field 'hsm.tpm.bank'"),
            (
                "health_check: 0s",
                "hsm.tpm.health_check: must be more than 0",
            ),
        ] {
            let e = hsm(&format!("hsm:\n  tpm:\n    {text}\n")).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn aws_kms_section() {
        let a = hsm("hsm:\n  aws-kms:\n    key_id: alias/kes\n").unwrap();
        assert_eq!(
            a,
            HsmConfig::AwsKms(AwsKmsConfig {
                key_id: "alias/kes".into(),
                region: None,
                endpoint: None,
                credentials: None,
                context: BTreeMap::new(),
                health_check: DEFAULT_HEALTH_CHECK,
            })
        );
        let text = "hsm:\n  aws-kms:\n    key_id: k\n    region: eu-west-1\n    endpoint: http://127.0.0.1:5000\n    credentials: {accesskey: AK, secretkey: SECRET}\n    context: {team: storage}\n";
        let HsmConfig::AwsKms(a) = hsm(text).unwrap() else {
            panic!()
        };
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        assert_eq!(a.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        let creds = a.credentials.unwrap();
        assert_eq!(
            (creds.access_key.as_str(), creds.secret_key.as_str()),
            ("AK", "SECRET")
        );
        assert_eq!(a.context["team"], "storage");
        for (text, want) in [
            ("region: r", "hsm.aws-kms.key_id is required"),
            (
                "key_id: k\n    credentials: {accesskey: a}",
                "give accesskey and secretkey",
            ),
            (
                "key_id: k\n    context: {kes:node: x}",
                "kes-node sets this pair itself",
            ),
            (
                "key_id: k\n    kmskey: x",
                "unknown field 'hsm.aws-kms.kmskey'",
            ),
        ] {
            let e = hsm(&format!("hsm:\n  aws-kms:\n    {text}\n")).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn one_hsm_only() {
        let e = hsm("hsm:\n  tpm: {}\n  aws-kms: {key_id: k}\n").unwrap_err();
        assert!(e.contains("not tpm and aws-kms"), "{e}");
        let e = hsm(
            "hsm:\n  key: kes:v1:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n  tpm:\n",
        )
        .unwrap_err();
        assert!(e.contains("not key and tpm"), "{e}");
        let e = hsm("tls: {}\n").unwrap_err();
        assert!(e.contains("no HSM given"), "{e}");
    }
}
