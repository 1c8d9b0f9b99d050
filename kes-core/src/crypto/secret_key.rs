//! `SecretKey`: 32 bytes plus the cipher that uses them.
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes added to a plaintext by [`SecretKey::encrypt_into`]: tag(16) + iv(16) + nonce(12).
pub const OVERHEAD: usize = 44;
/// Random bytes a caller supplies per encryption: iv(16) || nonce(12).
pub const RANDOM_LEN: usize = 28;

/// The AEAD a secret key is used with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    Aes256,
    ChaCha20,
}

impl Cipher {
    /// Wire name used by the current API (`AES256`, `ChaCha20`).
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes256 => "AES256",
            Cipher::ChaCha20 => "ChaCha20",
        }
    }

    /// Parses a wire name; accepts the legacy names `AES256-GCM_SHA256` and `XCHACHA20-POLY1305`.
    pub fn parse(s: &str) -> Option<Cipher> {
        match s {
            "AES256" | "AES256-GCM_SHA256" => Some(Cipher::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Some(Cipher::ChaCha20),
            _ => None,
        }
    }
}

/// Why a ciphertext did not decrypt. Every variant maps to upstream's
/// `400 decryption failed: ciphertext is not authentic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecryptError {
    /// Too short, or a legacy framing with wrong field sizes.
    Malformed,
    /// The AEAD tag did not verify (wrong key, wrong context, tampering).
    NotAuthentic,
    /// The output buffer is too small.
    BufferTooSmall,
}

/// A 256-bit key for AES-256-GCM or ChaCha20-Poly1305. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey {
    bytes: [u8; 32],
    #[zeroize(skip)]
    cipher: Cipher,
}

impl SecretKey {
    pub fn new(cipher: Cipher, bytes: [u8; 32]) -> Self {
        SecretKey { bytes, cipher }
    }
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Encrypts `plaintext` with `aad` into `out`, which must hold at least
    /// `plaintext.len() + OVERHEAD` bytes. `random` is iv(16) || nonce(12). Returns the length written.
    pub fn encrypt_into(
        &self,
        random: &[u8; RANDOM_LEN],
        plaintext: &[u8],
        aad: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecryptError> {
        todo!("{random:?}{plaintext:?}{aad:?}{out:?}")
    }

    /// Decrypts a ciphertext in any accepted format (raw, legacy JSON, legacy msgpack) using
    /// `buf` (at least `ciphertext.len()` bytes) as scratch; returns the plaintext inside `buf`.
    pub fn decrypt_into<'b>(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], DecryptError> {
        todo!("{ciphertext:?}{aad:?}{buf:?}")
    }

    /// `encrypt_into` into a new vector.
    #[cfg(feature = "alloc")]
    pub fn encrypt(
        &self,
        random: &[u8; RANDOM_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> alloc::vec::Vec<u8> {
        todo!("{random:?}{plaintext:?}{aad:?}")
    }

    /// `decrypt_into` into a new vector.
    #[cfg(feature = "alloc")]
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<alloc::vec::Vec<u8>, DecryptError> {
        todo!("{ciphertext:?}{aad:?}")
    }
}
