//! HMAC-SHA256 keys used by `/v1/key/hmac`.
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit HMAC-SHA256 key. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey([u8; 32]);

impl HmacKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        HmacKey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// HMAC-SHA256(key, message).
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        todo!("{message:?}")
    }
}
