//! The two AEADs a key can be used with and their wire names, and why a ciphertext did not
//! decrypt: the vocabulary shared by the ciphertext framings and the keys.

/// The AEAD a secret key is used with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM.
    Aes256,
    /// ChaCha20-Poly1305.
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

impl core::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DecryptError::Malformed => "ciphertext is malformed",
            DecryptError::NotAuthentic => "ciphertext is not authentic",
            DecryptError::BufferTooSmall => "output buffer is too small",
        })
    }
}
