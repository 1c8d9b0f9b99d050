//! The `Hsm` trait: what seals and unseals the root key of `kes.db`.
//!
//! The store keeps one sealed copy of the root key per HSM name, so a database can be moved
//! from one HSM to another by adding a second sealed copy. Only the software HSM of kes-core
//! (spec §8.5, `KES_HSM_KEY=kes:v1:aes256:...`) exists today.
use kes_core::crypto::{DecryptError, OVERHEAD, RANDOM_LEN};
use kes_core::hsm::{SoftHsm, SOFT_HSM_NAME};
use zeroize::Zeroizing;

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
