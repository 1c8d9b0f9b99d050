//! The software HSM (spec §8.5): a 256-bit key given as `kes:v1:aes256:<b64>` or
//! `kes:v1:chacha20:<b64>` that seals the root key and derives the cluster's inter-node key.
use crate::crypto::{DecryptError, SecretKey, OVERHEAD, RANDOM_LEN};

/// Name under which a SoftHSM-sealed root key is stored.
pub const SOFT_HSM_NAME: &str = "kes:v1:hsm:soft";

/// Why a SoftHSM key string did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsmKeyError {
    /// Not of the form `kes:v1:<aes256|chacha20>:<base64>`.
    Format,
    /// The base64 part does not decode to exactly 32 bytes.
    Length,
}

/// `DeriveKey(SHA256, key, out.len(), label, context)`: NIST SP 800-108 counter mode with
/// little-endian counter and byte length, as upstream does it.
pub fn derive_key(key: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) {
    todo!("{key:?}{label:?}{context:?}{out:?}")
}

/// A software HSM.
pub struct SoftHsm {
    key: SecretKey,
}

impl SoftHsm {
    /// Parses `kes:v1:aes256:<b64>` / `kes:v1:chacha20:<b64>` (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<SoftHsm, HsmKeyError> {
        todo!("{s}")
    }
    /// Builds a SoftHSM from 32 random bytes.
    pub fn from_key(key: SecretKey) -> SoftHsm {
        SoftHsm { key }
    }
    /// Writes the textual form `kes:v1:<cipher>:<b64>` into `out`.
    pub fn encode(&self) -> heapless::String<64> {
        todo!()
    }
    /// Seals `plaintext` (the root key) into `out` (`plaintext.len() + OVERHEAD` bytes).
    pub fn seal(
        &self,
        random: &[u8; RANDOM_LEN],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecryptError> {
        todo!("{random:?}{plaintext:?}{out:?}{}", OVERHEAD)
    }
    /// Unseals what [`SoftHsm::seal`] produced; `buf` is scratch of at least `sealed.len()` bytes.
    pub fn unseal<'b>(&self, sealed: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], DecryptError> {
        todo!("{sealed:?}{buf:?}")
    }
    /// The Ed25519 seed of the cluster's inter-node API key: `DeriveKey(k, "kes:v1:api_key", ctx)`.
    pub fn api_key_seed(&self, context: &[u8]) -> [u8; 32] {
        todo!("{context:?}")
    }
}
