//! HSMs: what seals and unseals the root key of `kes.db`. The [`Hsm`] trait is the one
//! interface; the devices behind it:
//!
//! | HSM | config | cargo feature | name of its sealed copy |
//! |---|---|---|---|
//! | software HSM of kes-core (spec §8.5) | `KES_HSM_KEY` / `hsm.key` | always | `kes:v1:hsm:soft` (the key is not part of the name) |
//! | PKCS#11 token (`pkcs11.rs`) | `hsm.pkcs11` | `pkcs11` (default) | `pkcs11:<token label>/<key label>` |
//! | TPM 2.0 (`tpm.rs`) | `hsm.tpm` | `tpm` (off: needs libtss2) | `tpm2:sha256:<pcrs>`, or `tpm2` unbound |
//! | AWS KMS key (`aws_kms.rs`) | `hsm.aws-kms` | `aws` (default) | `aws-kms:<key id>` |
//! | your own | a program of yours: `examples/toy_hsm.rs` | | what [`Hsm::name`] says |
//!
//! `kes.db` keeps one sealed copy of the root key per HSM name (`meta` table, `root/<name>`),
//! so a database can be opened by any HSM that has a copy, and `kes-node hsm add|rm|ls` adds
//! and removes copies.
//!
//! `open` makes the configured HSM from the config's `hsm:` section
//! ([`HsmConfig`](crate::config::HsmConfig)): exactly one HSM; with none given, `KES_HSM_KEY`
//! (else `hsm.key`) is the SoftHSM key. The HSM knows nothing of `kes.db`: what it needs to
//! know about the database (whether a new key may be made, which copies exist when its own is
//! missing) its caller reads and hands in.
use kes_core::crypto::{DecryptError, OVERHEAD, RANDOM_LEN};
use kes_core::hsm::{SoftHsm, SOFT_HSM_NAME};
use zeroize::Zeroizing;

#[cfg(feature = "aws")]
pub(crate) mod aws_kms;
mod copies;
pub(crate) mod health;
mod open;
#[cfg(feature = "pkcs11")]
pub(crate) mod pkcs11;
#[cfg(feature = "tpm")]
pub(crate) mod tpm;

pub use copies::{add_copy, sealed_copies};
pub(crate) use open::{open, open_exact, NewKey, OpenError};

/// Why sealing or unsealing failed. Messages name the device and what to check; they never
/// hold key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum HsmError {
    /// The sealed blob does not open with this HSM's key: another key sealed it, or it was
    /// altered. Permanent: trying again changes nothing.
    WrongKey,
    /// The device works and holds the key, but refuses to use it in its current state: a
    /// policy (the TPM's PCRs are not those the blob was sealed to), a permission (KMS access
    /// denied). Permanent until that state changes; the message says which state.
    Refused(String),
    /// The device failed or cannot be reached (unplugged token, network, throttling): may
    /// pass when tried again.
    Device(String),
}

impl std::fmt::Display for HsmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HsmError::WrongKey => f.write_str("the sealed data does not open with this HSM key"),
            HsmError::Refused(msg) => write!(f, "the HSM refuses: {msg}"),
            HsmError::Device(msg) => write!(f, "HSM failure: {msg}"),
        }
    }
}

impl std::error::Error for HsmError {}

/// A hardware or software security module that protects the root key of `kes.db`.
///
/// Implement it in your own crate to seal `kes.db` with a device kes-node does not know (see
/// `examples/toy_hsm.rs`), and run a server on it with
/// [`Builder::hsm`](crate::server::Builder::hsm). The store calls it rarely: [`Hsm::seal`]
/// once when it creates a database (and for [`add_copy`]), [`Hsm::unseal`] once per open;
/// the root key then stays in memory, so a slow device never slows requests down.
///
/// # Contract
///
/// - [`Hsm::name`] is stable: the same device and key give the same name in every process.
///   It is where the sealed copy is stored (`root/<name>`), so two different kinds of HSM
///   must not share a name: start it with a scheme of your own (`toy:`, `acme-hsm:`). One
///   line, printable.
/// - [`Hsm::seal`] returns a blob that [`Hsm::unseal`] of the same device and key turns back
///   into exactly the plaintext (the 32-byte root key), in this process or any later one. The
///   blob is stored in `kes.db` and in backups, where anyone may read it: it must neither show
///   the plaintext nor open without the device, and it must authenticate (an altered blob is
///   [`HsmError::WrongKey`], never a different plaintext). Sealing may be randomized.
/// - [`Hsm::unseal`] returns the plaintext in a [`Zeroizing`] buffer, or the error that says
///   why not: [`HsmError::WrongKey`] (not this key's blob: the store tells the operator that
///   the database is sealed with another key), [`HsmError::Refused`] (the device's policy
///   forbids it now), [`HsmError::Device`] (unreachable or failing). Every error stops the
///   server before it writes anything; the message is shown to the operator as it is.
/// - Neither key material nor plaintext ever goes into an error message or a log line;
///   buffers that held them are zeroized.
/// - [`Hsm::probe`] is a cheap check that the device answers, without cryptography. A running
///   server calls it from a thread of its own every `health_check`; its result is what
///   `/v1/status` reports (`"ok"` or `"unavailable: <message>"`). It should return within a
///   few seconds (a hung probe only delays the status, never a request).
/// - [`Hsm::derive_seed`] is optional: a secret that every node whose HSM holds the same key
///   derives alike (the seed of the cluster's inter-node key). Without it a node serves on
///   its own but cannot join a cluster of several nodes.
/// - `Send + Sync`: one instance is shared by the start-up, the health thread and the
///   cluster; calls may come from several threads at once.
pub trait Hsm: Send + Sync {
    /// The name under which this HSM's sealed copy of the root key is stored.
    fn name(&self) -> &str;
    /// Seals (encrypts and authenticates) `plaintext`.
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// Unseals what [`Hsm::seal`] produced.
    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError>;
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

/// The seed of the cluster's inter-node key under `context`. An HSM that cannot derive one
/// (a PKCS#11 key without CKA_SIGN, say) gets a random seed: the node serves on its own but
/// cannot authenticate to peers, which the warning says.
pub(crate) fn cluster_seed(hsm: &dyn Hsm, context: &[u8]) -> [u8; 32] {
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
#[cfg_attr(not(any(feature = "pkcs11", feature = "tpm")), allow(dead_code))]
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
