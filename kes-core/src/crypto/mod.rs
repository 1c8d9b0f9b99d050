//! Secret keys and the KES ciphertext format (spec §8.1–8.3).
//!
//! Encryption derives a per-message subkey from the key and a random 16-byte IV
//! (HMAC-SHA256 for AES-256-GCM, HChaCha20 for ChaCha20-Poly1305) and writes
//! `ciphertext || tag(16) || iv(16) || nonce(12)`. Decryption also accepts the legacy JSON
//! and msgpack framings and falls back to the raw format when they do not parse.

mod cipher;
mod ciphertext;
mod hmac_key;
mod secret_key;

pub use cipher::{Cipher, DecryptError};
pub(crate) use ciphertext::GO_STD_BASE64;
pub use ciphertext::{IV_LEN, NONCE_LEN, TAG_LEN};
pub(crate) use hmac_key::hmac_sha256;
pub use hmac_key::HmacKey;
pub use secret_key::{hchacha20, SecretKey, OVERHEAD, RANDOM_LEN};

/// Length of a data encryption key produced by `/v1/key/generate`.
pub const DEK_LEN: usize = 32;
/// Length of a DEK ciphertext: 32 bytes of plaintext plus [`OVERHEAD`].
pub const DEK_CIPHERTEXT_LEN: usize = DEK_LEN + OVERHEAD;
