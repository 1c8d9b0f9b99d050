//! HMAC-SHA256 keys used by `/v1/key/hmac`.
//!
//! Each key version carries an HMAC key that is independent of its secret key (spec §8.1), so
//! the MAC of a message reveals nothing about the encryption key.
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit HMAC-SHA256 key. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey([u8; 32]);

impl core::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    /// The key with these bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        HmacKey(bytes)
    }
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// HMAC-SHA256(key, message).
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, &[message])
    }
}

/// HMAC-SHA256 over the concatenation of `parts`, keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
