//! From the config's `hsm:` section to the HSM itself. A device whose cargo feature this
//! kes-node was built without is an error that names the feature.
use kes_core::hsm::SoftHsm;
use zeroize::Zeroizing;

use super::{Hsm, SoftHsmDevice};
use crate::config::HsmConfig;

/// Whether opening the HSM may create its key on the device (PKCS#11: the AES key on the
/// token; the TPM re-derives its primary key every time and AWS KMS keys are made in AWS, so
/// for them this changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NewKey {
    /// Yes: a new `kes.db`, or `hsm add` (the HSM is new to the database).
    Allowed,
    /// No: the data was sealed by an existing key (an existing `kes.db`, `restore`).
    Never,
}

/// Why the HSM could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The device has no key for HSM `name` (and making one was not allowed): `why` says so;
    /// the caller can tell more from the copies `kes.db` holds. (Only a PKCS#11 token makes
    /// keys, so only it reports a missing one.)
    #[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
    MissingKey { name: String, why: String },
    /// Anything else; the message names the problem and the config field to check.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::MissingKey { why, .. } => f.write_str(why),
            OpenError::Failed(msg) => f.write_str(msg),
        }
    }
}

impl From<String> for OpenError {
    fn from(msg: String) -> OpenError {
        OpenError::Failed(msg)
    }
}

/// The configured HSM: the `hsm:` section's device; for the SoftHSM, `KES_HSM_KEY` (which
/// wins) or `hsm.key`.
pub(crate) fn open(config: &HsmConfig, new_key: NewKey) -> Result<Box<dyn Hsm>, OpenError> {
    match config {
        HsmConfig::Soft(key) => Ok(Box::new(SoftHsmDevice(soft_hsm(
            key.as_ref().map(|k| k.as_str()),
        )?))),
        HsmConfig::Pkcs11(p11) => open_pkcs11(p11, new_key),
        HsmConfig::Tpm(tpm) => open_tpm(tpm),
        HsmConfig::AwsKms(kms) => open_aws_kms(kms),
    }
}

/// The HSM an `hsm:` section names, exactly (`KES_HSM_KEY` is not consulted): for `hsm add`.
pub(crate) fn open_exact(config: &HsmConfig, new_key: NewKey) -> Result<Box<dyn Hsm>, OpenError> {
    match config {
        HsmConfig::Soft(Some(key)) => Ok(Box::new(SoftHsmDevice(SoftHsm::parse(key).map_err(
            |_| {
                OpenError::Failed(
                    "hsm.key is not a valid SoftHSM key: expected kes:v1:aes256:<base64 of 32 \
                     bytes>"
                        .into(),
                )
            },
        )?))),
        HsmConfig::Soft(None) => Err(OpenError::Failed(
            "no HSM given: the hsm: section needs key, pkcs11, tpm or aws-kms".into(),
        )),
        other => open(other, new_key),
    }
}

#[cfg(feature = "pkcs11")]
fn open_pkcs11(
    cfg: &crate::config::Pkcs11Config,
    new_key: NewKey,
) -> Result<Box<dyn Hsm>, OpenError> {
    use super::pkcs11::{OpenError as P11Error, Pkcs11Hsm};
    match Pkcs11Hsm::open(cfg, new_key == NewKey::Allowed) {
        Ok(hsm) => Ok(Box::new(hsm)),
        Err(err @ P11Error::MissingKey { .. }) => {
            let why = err.to_string();
            let P11Error::MissingKey { name } = err else {
                unreachable!("matched above")
            };
            Err(OpenError::MissingKey { name, why })
        }
        Err(err) => Err(OpenError::Failed(err.to_string())),
    }
}

#[cfg(not(feature = "pkcs11"))]
fn open_pkcs11(_: &crate::config::Pkcs11Config, _: NewKey) -> Result<Box<dyn Hsm>, OpenError> {
    Err(without("hsm.pkcs11", "PKCS#11", "pkcs11"))
}

#[cfg(feature = "tpm")]
fn open_tpm(cfg: &crate::config::TpmConfig) -> Result<Box<dyn Hsm>, OpenError> {
    Ok(Box::new(super::tpm::TpmHsm::open(cfg)?))
}

#[cfg(not(feature = "tpm"))]
fn open_tpm(_: &crate::config::TpmConfig) -> Result<Box<dyn Hsm>, OpenError> {
    Err(without("hsm.tpm", "TPM 2.0", "tpm"))
}

#[cfg(feature = "aws")]
fn open_aws_kms(cfg: &crate::config::AwsKmsConfig) -> Result<Box<dyn Hsm>, OpenError> {
    Ok(Box::new(super::aws_kms::KmsHsm::open(cfg)?))
}

#[cfg(not(feature = "aws"))]
fn open_aws_kms(_: &crate::config::AwsKmsConfig) -> Result<Box<dyn Hsm>, OpenError> {
    Err(without("hsm.aws-kms", "AWS KMS", "aws"))
}

#[cfg(not(all(feature = "pkcs11", feature = "tpm", feature = "aws")))]
fn without(field: &str, what: &str, feature: &str) -> OpenError {
    OpenError::Failed(format!(
        "{field}: this kes-node was built without {what} support (cargo feature {feature})"
    ))
}

/// The SoftHSM from `KES_HSM_KEY` (preferred) or `hsm.key` in the config.
pub(crate) fn soft_hsm(config_key: Option<&str>) -> Result<SoftHsm, String> {
    // A hardened server had the variable handed over at start-up (see `crate::harden`).
    let (key, source) = match crate::harden::hsm_key() {
        Some(k) if !k.trim().is_empty() => (k, "KES_HSM_KEY"),
        _ => match config_key {
            Some(k) => (Zeroizing::new(k.to_owned()), "hsm.key in the config"),
            None => {
                return Err(
                    "no HSM key: set KES_HSM_KEY (or hsm.key in the config) to the key \
                            that seals kes.db; `kes-node hsm new` prints a new one \
                            (or configure hsm.pkcs11, hsm.tpm or hsm.aws-kms)"
                        .into(),
                )
            }
        },
    };
    SoftHsm::parse(&key).map_err(|_| {
        format!(
            "{source} is not a valid SoftHSM key: expected kes:v1:aes256:<base64 of 32 bytes> \
             (or kes:v1:chacha20:...)"
        )
    })
}
