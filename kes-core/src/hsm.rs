//! The software HSM (spec §8.5): a 256-bit key given as `kes:v1:aes256:<b64>` or
//! `kes:v1:chacha20:<b64>` that seals the root key and derives the cluster's inter-node key.
//!
//! The HSM key itself never encrypts anything. Every use derives its own key with
//! [`derive_key`] under a fixed label, so the sealing key and the API-key seed are unrelated:
//!
//! ```text
//! seal key     = SecretKey(cipher, DeriveKey(SHA256, hsm_key, 32, "kes:v1:root_key", ""))
//! sealed       = seal key.encrypt(root_key, aad = "")              (format of spec §8.2)
//! API-key seed = DeriveKey(SHA256, hsm_key, 32, "kes:v1:api_key", context)
//! ```
//!
//! Every node started with the same HSM key therefore derives the same inter-node API key.
use base64::Engine;
use zeroize::Zeroizing;

use crate::crypto::{hmac_sha256, Cipher, DecryptError, SecretKey, GO_STD_BASE64, RANDOM_LEN};

/// Name under which a SoftHSM-sealed root key is stored.
pub const SOFT_HSM_NAME: &str = "kes:v1:hsm:soft";

/// Label of the key that seals the root key.
const ROOT_KEY_LABEL: &[u8] = b"kes:v1:root_key";
/// Label of the seed of the inter-node API key.
const API_KEY_LABEL: &[u8] = b"kes:v1:api_key";

/// Why a SoftHSM key string did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsmKeyError {
    /// Not of the form `kes:v1:<aes256|chacha20>:<base64>`, or the key is not valid base64.
    Format,
    /// The base64 part does not decode to exactly 32 bytes.
    Length,
}

impl core::fmt::Display for HsmKeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HsmKeyError::Format => {
                "invalid soft HSM key: expected kes:v1:aes256:<base64> or kes:v1:chacha20:<base64>"
            }
            HsmKeyError::Length => "invalid soft HSM key: the key must be 32 bytes",
        })
    }
}

/// `DeriveKey(SHA256, key, out.len(), label, context)`: NIST SP 800-108 counter mode with
/// little-endian counter and byte length, as upstream does it.
///
/// Block `i` (from 1) is `HMAC-SHA256(key, LE32(i) || label || 0x00 || context || LE32(len))`;
/// `out` receives the first `out.len()` bytes of the concatenated blocks.
///
/// # Panics
/// If `out` is longer than `u32::MAX` bytes.
pub fn derive_key(key: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) {
    let len = u32::try_from(out.len())
        .expect("derived key length fits in 32 bits")
        .to_le_bytes();
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        // chunks of 32 bytes over at most u32::MAX bytes: the counter cannot overflow.
        let counter = (i as u32 + 1).to_le_bytes();
        let block = Zeroizing::new(hmac_sha256(key, &[&counter, label, &[0], context, &len]));
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// A software HSM.
pub struct SoftHsm {
    key: SecretKey,
}

impl core::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftHsm")
            .field("cipher", &self.key.cipher())
            .finish_non_exhaustive()
    }
}

impl SoftHsm {
    /// Parses `kes:v1:aes256:<b64>` / `kes:v1:chacha20:<b64>` (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<SoftHsm, HsmKeyError> {
        let rest = s
            .trim()
            .strip_prefix("kes:v1:")
            .ok_or(HsmKeyError::Format)?;
        let (cipher, b64) = if let Some(b64) = rest.strip_prefix("aes256:") {
            (Cipher::Aes256, b64)
        } else if let Some(b64) = rest.strip_prefix("chacha20:") {
            (Cipher::ChaCha20, b64)
        } else {
            return Err(HsmKeyError::Format);
        };
        // Room for more than 32 bytes so a wrong length is told apart from bad base64.
        let mut buf = Zeroizing::new([0u8; 48]);
        let n = match GO_STD_BASE64.decode_slice(b64, &mut buf[..]) {
            Ok(n) => n,
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => return Err(HsmKeyError::Length),
            Err(base64::DecodeSliceError::DecodeError(_)) => return Err(HsmKeyError::Format),
        };
        if n != 32 {
            return Err(HsmKeyError::Length);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&buf[..32]);
        Ok(SoftHsm::from_key(SecretKey::new(cipher, key)))
    }
    /// Builds a SoftHSM from 32 random bytes.
    pub fn from_key(key: SecretKey) -> SoftHsm {
        SoftHsm { key }
    }
    /// The cipher of the HSM key, which is also the cipher of the sealing key.
    pub fn cipher(&self) -> Cipher {
        self.key.cipher()
    }
    /// Writes the textual form `kes:v1:<cipher>:<b64>` into `out`.
    pub fn encode(&self) -> heapless::String<64> {
        let mut b64 = Zeroizing::new([0u8; 44]);
        let n = GO_STD_BASE64
            .encode_slice(self.key.as_bytes(), &mut b64[..])
            .expect("32 bytes encode to 44 base64 characters");
        let name = match self.key.cipher() {
            Cipher::Aes256 => "aes256",
            Cipher::ChaCha20 => "chacha20",
        };
        let mut out = heapless::String::new();
        // At most 7 + 9 + 44 = 60 bytes, within the capacity of 64.
        for part in [
            "kes:v1:",
            name,
            ":",
            core::str::from_utf8(&b64[..n]).expect("base64 is ASCII"),
        ] {
            out.push_str(part).expect("fits in 64 bytes");
        }
        out
    }
    /// The key that seals the root key: `DeriveKey(hsm_key, "kes:v1:root_key", "")` used with
    /// the HSM key's cipher. Exposed for the test vectors; [`SoftHsm::seal`] is the normal use.
    pub fn seal_key(&self) -> SecretKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        derive_key(self.key.as_bytes(), ROOT_KEY_LABEL, &[], &mut bytes[..]);
        SecretKey::new(self.key.cipher(), *bytes)
    }
    /// Seals `plaintext` (the root key) into `out` (`plaintext.len() + OVERHEAD` bytes).
    pub fn seal(
        &self,
        random: &[u8; RANDOM_LEN],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecryptError> {
        self.seal_key().encrypt_into(random, plaintext, &[], out)
    }
    /// Unseals what [`SoftHsm::seal`] produced; `buf` is scratch of at least `sealed.len()` bytes.
    pub fn unseal<'b>(&self, sealed: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], DecryptError> {
        self.seal_key().decrypt_into(sealed, &[], buf)
    }
    /// The Ed25519 seed of the cluster's inter-node API key: `DeriveKey(k, "kes:v1:api_key", ctx)`.
    ///
    /// The returned seed is secret; wrap it in `zeroize::Zeroizing` or wipe it after use.
    pub fn api_key_seed(&self, context: &[u8]) -> [u8; 32] {
        let mut seed = [0u8; 32];
        derive_key(self.key.as_bytes(), API_KEY_LABEL, context, &mut seed);
        seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors() {
        let ok = "kes:v1:aes256:H2BFEgK48Mr4KfuBkxUFJJJNn8f+J0ugpn43ZYJfw30=";
        assert!(SoftHsm::parse(ok).is_ok());
        assert_eq!(
            SoftHsm::parse("kes:v2:aes256:AAAA").unwrap_err(),
            HsmKeyError::Format
        );
        assert_eq!(
            SoftHsm::parse("kes:v1:aes128:AAAA").unwrap_err(),
            HsmKeyError::Format
        );
        assert_eq!(
            SoftHsm::parse("kes:v1:aes256:!!!!").unwrap_err(),
            HsmKeyError::Format
        );
        assert_eq!(
            SoftHsm::parse("kes:v1:aes256:AAAA").unwrap_err(),
            HsmKeyError::Length
        );
        let long =
            "kes:v1:chacha20:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(SoftHsm::parse(long).unwrap_err(), HsmKeyError::Length);
    }

    #[test]
    fn derive_key_multi_block() {
        // A 40-byte output is block 1 followed by the first 8 bytes of block 2, and the
        // length field (40) differs from a 32-byte derivation's, so block 1 differs too.
        let mut long = [0u8; 40];
        derive_key(b"k", b"label", b"ctx", &mut long);
        let b1 = hmac_sha256(
            b"k",
            &[
                &1u32.to_le_bytes(),
                b"label",
                &[0],
                b"ctx",
                &40u32.to_le_bytes(),
            ],
        );
        let b2 = hmac_sha256(
            b"k",
            &[
                &2u32.to_le_bytes(),
                b"label",
                &[0],
                b"ctx",
                &40u32.to_le_bytes(),
            ],
        );
        assert_eq!(long[..32], b1);
        assert_eq!(long[32..], b2[..8]);
    }
}
