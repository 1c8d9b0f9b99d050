//! The `Hsm` trait: what seals and unseals the root key of `kes.db`.
use kes_core::hsm::SoftHsm;

/// Why unsealing failed.
#[derive(Debug)]
pub enum HsmError {
    /// The sealed blob does not open with this HSM's key (wrong key, or tampered data).
    WrongKey,
    /// The HSM itself failed.
    Device(String),
}

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
        todo!()
    }
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        todo!("{plaintext:?}")
    }
    fn unseal(&self, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, HsmError> {
        todo!("{sealed:?}")
    }
}
