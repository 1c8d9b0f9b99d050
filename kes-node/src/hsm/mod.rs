//! The `Hsm` trait: what seals and unseals the root key of `kes.db`, with two devices: the
//! software HSM of kes-core (spec §8.5, `KES_HSM_KEY=kes:v1:aes256:...`) and, with the
//! `pkcs11` cargo feature (on by default), a PKCS#11 token (`pkcs11.rs`).
//!
//! # Names
//!
//! `kes.db` keeps one sealed copy of the root key per HSM name (`meta` table, `root/<name>`),
//! so a database can be opened by any HSM that has a copy, and `kes-node hsm add|rm|ls` adds
//! and removes copies. The names:
//!
//! | HSM | name |
//! |---|---|
//! | SoftHSM (`KES_HSM_KEY` / `hsm.key`) | `kes:v1:hsm:soft` (one per database: the key is not part of the name) |
//! | PKCS#11 (`hsm.pkcs11`) | `pkcs11:<token label>/<key label>` |
//!
//! # Which HSM a command uses
//!
//! `hsm.pkcs11` in the config selects the token (and `KES_HSM_KEY` is then not consulted);
//! otherwise `KES_HSM_KEY`, else `hsm.key`, is the SoftHSM key.
use std::path::Path;

use kes_core::crypto::{DecryptError, OVERHEAD, RANDOM_LEN};
use kes_core::hsm::{SoftHsm, SOFT_HSM_NAME};
use zeroize::Zeroizing;

use crate::config::{Config, Pkcs11Config};

pub mod health;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;

/// Why unsealing failed.
#[derive(Debug)]
pub enum HsmError {
    /// The sealed blob does not open with this HSM's key (wrong key, or tampered data).
    WrongKey,
    /// The HSM itself failed.
    Device(String),
}

impl std::fmt::Display for HsmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HsmError::WrongKey => f.write_str("the sealed data does not open with this HSM key"),
            HsmError::Device(msg) => write!(f, "HSM failure: {msg}"),
        }
    }
}

impl std::error::Error for HsmError {}

/// A hardware or software security module that protects the root key.
pub trait Hsm: Send + Sync {
    /// The name under which this HSM's sealed copy of the root key is stored.
    fn name(&self) -> &str;
    /// Seals (encrypts) `plaintext`.
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// Unseals what `seal` produced.
    fn unseal(&self, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, HsmError>;
    /// A cheap check that the device is usable (no cryptography), run off the hot path by the
    /// health thread. The message says what is wrong.
    fn probe(&self) -> Result<(), String> {
        Ok(())
    }
    /// A 32-byte secret derived from the HSM's key under `context`: the seed of the cluster's
    /// inter-node key, equal on every node whose HSM holds the same key.
    fn derive_seed(&self, _context: &[u8]) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        Err(HsmError::Device("this HSM cannot derive keys".into()))
    }
}

/// The software HSM of kes-core behind the [`Hsm`] trait.
pub struct SoftHsmDevice(pub SoftHsm);

impl Hsm for SoftHsmDevice {
    fn name(&self) -> &str {
        SOFT_HSM_NAME
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let random: [u8; RANDOM_LEN] = crate::random::bytes();
        let mut out = vec![0u8; plaintext.len() + OVERHEAD];
        let n = self
            .0
            .seal(&random, plaintext, &mut out)
            .map_err(|err| HsmError::Device(format!("sealing failed: {err:?}")))?;
        out.truncate(n);
        Ok(out)
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        // The scratch buffer receives the plaintext (the root key): zeroize it on every path.
        let mut buf = Zeroizing::new(vec![0u8; sealed.len()]);
        match self.0.unseal(sealed, &mut buf) {
            Ok(plaintext) => Ok(Zeroizing::new(plaintext.to_vec())),
            Err(DecryptError::Malformed | DecryptError::NotAuthentic) => Err(HsmError::WrongKey),
            Err(DecryptError::BufferTooSmall) => Err(HsmError::Device(
                "unsealing failed: buffer too small".into(),
            )),
        }
    }

    fn derive_seed(&self, context: &[u8]) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        Ok(Zeroizing::new(self.0.api_key_seed(context)))
    }
}

/// Whether opening a PKCS#11 HSM may create its key on the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewKey {
    /// When `kes.db` does not exist yet (the server's first start).
    IfNewDb,
    /// Yes (`hsm add`: the HSM is new to this database).
    Allowed,
    /// No (`restore`: the backup was sealed by an existing key).
    Never,
}

/// The configured HSM (see the module docs). `dir` is the node's directory: whether a
/// PKCS#11 key may be created depends on `new_key` and on it, and a missing key is explained
/// against the copies `kes.db` holds.
pub fn open(config: &Config, dir: &Path, new_key: NewKey) -> Result<Box<dyn Hsm>, String> {
    match &config.pkcs11 {
        Some(p11) => open_pkcs11(p11, dir, new_key),
        None => Ok(Box::new(SoftHsmDevice(soft_hsm(
            config.hsm_key.as_ref().map(|k| k.as_str()),
        )?))),
    }
}

/// The HSM an `hsm:` section names, exactly (`KES_HSM_KEY` is not consulted): for `hsm add`.
pub fn open_exact(
    key: Option<&str>,
    pkcs11: Option<&Pkcs11Config>,
    dir: &Path,
    new_key: NewKey,
) -> Result<Box<dyn Hsm>, String> {
    match (pkcs11, key) {
        (Some(p11), _) => open_pkcs11(p11, dir, new_key),
        (None, Some(key)) => Ok(Box::new(SoftHsmDevice(SoftHsm::parse(key).map_err(
            |_| "hsm.key is not a valid SoftHSM key: expected kes:v1:aes256:<base64 of 32 bytes>",
        )?))),
        (None, None) => Err("no HSM given: the hsm: section needs key or pkcs11".into()),
    }
}

#[cfg(feature = "pkcs11")]
fn open_pkcs11(cfg: &Pkcs11Config, dir: &Path, new_key: NewKey) -> Result<Box<dyn Hsm>, String> {
    let create = match new_key {
        NewKey::IfNewDb => !dir.join(crate::store::DB_FILE).exists(),
        NewKey::Allowed => true,
        NewKey::Never => false,
    };
    match pkcs11::Pkcs11Hsm::open(cfg, create) {
        Ok(hsm) => Ok(Box::new(hsm)),
        Err(err) => {
            let pkcs11::OpenError::MissingKey { name } = &err else {
                return Err(err.to_string());
            };
            match crate::store::sealed_names(dir).ok().flatten() {
                None => Err(format!(
                    "{err}: configure the token and key label that sealed the data"
                )),
                Some(copies) if copies.contains(name) => Err(format!(
                    "{err}, but kes.db holds the root key sealed by it: the key was deleted or \
                     this is not the token kes.db was sealed with (check hsm.pkcs11.token and \
                     key_label)"
                )),
                Some(copies) => Err(format!(
                    "{err}, and kes.db has no root key sealed by it (it has: {}): configure one \
                     of those HSMs",
                    copies.join(", ")
                )),
            }
        }
    }
}

#[cfg(not(feature = "pkcs11"))]
fn open_pkcs11(_: &Pkcs11Config, _: &Path, _: NewKey) -> Result<Box<dyn Hsm>, String> {
    Err("hsm.pkcs11: this kes-node was built without PKCS#11 support (cargo feature pkcs11)".into())
}

/// The SoftHSM from `KES_HSM_KEY` (preferred) or `hsm.key` in the config.
pub fn soft_hsm(config_key: Option<&str>) -> Result<SoftHsm, String> {
    // A hardened server had the variable handed over at start-up (see `crate::harden`).
    let (key, source) = match crate::harden::hsm_key() {
        Some(k) if !k.trim().is_empty() => (k, "KES_HSM_KEY"),
        _ => match config_key {
            Some(k) => (Zeroizing::new(k.to_owned()), "hsm.key in the config"),
            None => {
                return Err(
                    "no HSM key: set KES_HSM_KEY (or hsm.key in the config) to the key \
                            that seals kes.db; `kes-node hsm new` prints a new one \
                            (or configure hsm.pkcs11)"
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

/// The seed of the cluster's inter-node key under `context`. An HSM that cannot derive one
/// (a PKCS#11 key without CKA_SIGN, say) gets a random seed: the node serves on its own but
/// cannot authenticate to peers, which the warning says.
pub fn cluster_seed(hsm: &dyn Hsm, context: &[u8]) -> [u8; 32] {
    match hsm.derive_seed(context) {
        Ok(seed) => *seed,
        Err(err) => {
            eprintln!(
                "kes-node: warning: HSM '{}' cannot derive the inter-node key ({err}): this \
                 node cannot join a cluster of several nodes",
                hsm.name()
            );
            crate::random::bytes()
        }
    }
}

/// Collapses a multi-line message (a library's) into one line.
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_core::crypto::{Cipher, SecretKey};

    fn device(byte: u8) -> SoftHsmDevice {
        SoftHsmDevice(SoftHsm::from_key(SecretKey::new(
            Cipher::Aes256,
            [byte; 32],
        )))
    }

    #[test]
    fn seal_unseal_round_trip() {
        let hsm = device(1);
        assert_eq!(hsm.name(), SOFT_HSM_NAME);
        let sealed = hsm.seal(b"root key material").unwrap();
        assert_eq!(sealed.len(), 17 + OVERHEAD);
        assert_eq!(&hsm.unseal(&sealed).unwrap()[..], b"root key material");
        // Sealing is randomized.
        assert_ne!(hsm.seal(b"root key material").unwrap(), sealed);
    }

    #[test]
    fn wrong_key_or_tampering_is_refused() {
        let sealed = device(1).seal(&[7u8; 32]).unwrap();
        assert!(matches!(device(2).unseal(&sealed), Err(HsmError::WrongKey)));
        let mut tampered = sealed.clone();
        tampered[3] ^= 1;
        assert!(matches!(
            device(1).unseal(&tampered),
            Err(HsmError::WrongKey)
        ));
        assert!(matches!(
            device(1).unseal(&sealed[..10]),
            Err(HsmError::WrongKey)
        ));
    }
}
