//! `SecretKey`: 32 bytes plus the cipher that uses them, and the KES encryption scheme (§8.2).
//!
//! Every encryption draws 28 random bytes from the caller: a 16-byte IV and a 12-byte nonce.
//! The IV derives a fresh subkey for this one message, so a key can encrypt far more messages
//! than the 96-bit nonce alone would allow:
//!
//! ```text
//! AES256:   subkey = HMAC-SHA256(key, iv)   -> AES-256-GCM(subkey, nonce, plaintext, aad)
//! ChaCha20: subkey = HChaCha20(key, iv)     -> ChaCha20-Poly1305(subkey, nonce, plaintext, aad)
//! output   = ciphertext || tag(16) || iv(16) || nonce(12)
//! ```
//!
//! The key's own cipher always decides the algorithm; see [`super::ciphertext`] for the
//! framings accepted on decrypt.
//!
//! Wiping: keys and subkeys live in zeroizing buffers, and the AEAD instances wipe their key
//! schedules on drop (the `zeroize` features of `aes`, `aes-gcm` and `chacha20`). The inner
//! states of HMAC-SHA256 and HChaCha20 are not wiped: `hmac`/`sha2` 0.10 and the `hchacha`
//! function offer no way to, so this is best effort, as in most Rust and Go crypto code.
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use chacha20::cipher::consts::U10;
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::cipher::{Cipher, DecryptError};
use super::ciphertext::{self, IV_LEN, NONCE_LEN, TAG_LEN};
use super::hmac_key::hmac_sha256;

/// Bytes added to a plaintext by [`SecretKey::encrypt_into`]: tag(16) + iv(16) + nonce(12).
pub const OVERHEAD: usize = 44;
/// Random bytes a caller supplies per encryption: iv(16) || nonce(12).
pub const RANDOM_LEN: usize = 28;

// The framing constants must add up to the public lengths.
const _: () = assert!(RANDOM_LEN == IV_LEN + NONCE_LEN && OVERHEAD == TAG_LEN + RANDOM_LEN);

/// A 256-bit key for AES-256-GCM or ChaCha20-Poly1305. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey {
    bytes: [u8; 32],
    #[zeroize(skip)]
    cipher: Cipher,
}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.debug_struct("SecretKey")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// The key with these bytes, used with `cipher`.
    pub fn new(cipher: Cipher, bytes: [u8; 32]) -> Self {
        SecretKey { bytes, cipher }
    }
    /// The AEAD this key is used with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Encrypts `plaintext` with `aad` into `out`, which must hold at least
    /// `plaintext.len() + OVERHEAD` bytes. `random` is iv(16) || nonce(12). Returns the length written.
    ///
    /// Fails with [`DecryptError::BufferTooSmall`] if `out` is too short, and with
    /// [`DecryptError::Malformed`] if the plaintext exceeds the AEAD's limit (64 GiB for GCM).
    pub fn encrypt_into(
        &self,
        random: &[u8; RANDOM_LEN],
        plaintext: &[u8],
        aad: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecryptError> {
        let total = plaintext
            .len()
            .checked_add(OVERHEAD)
            .ok_or(DecryptError::BufferTooSmall)?;
        let out = out.get_mut(..total).ok_or(DecryptError::BufferTooSmall)?;
        let (iv, nonce) = random.split_at(IV_LEN);
        let iv: &[u8; IV_LEN] = iv.try_into().expect("RANDOM_LEN = IV_LEN + NONCE_LEN");

        let (body, trailer) = out.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let subkey = self.subkey(iv);
        let tag = match self.cipher {
            Cipher::Aes256 => Aes256Gcm::new(subkey.as_ref().into()).encrypt_in_place_detached(
                nonce.into(),
                aad,
                body,
            ),
            Cipher::ChaCha20 => ChaCha20Poly1305::new(subkey.as_ref().into())
                .encrypt_in_place_detached(nonce.into(), aad, body),
        };
        let Ok(tag) = tag else {
            body.zeroize();
            return Err(DecryptError::Malformed);
        };
        trailer[..TAG_LEN].copy_from_slice(&tag);
        trailer[TAG_LEN..].copy_from_slice(random);
        Ok(total)
    }

    /// Decrypts a ciphertext in any accepted format (raw, legacy JSON, legacy msgpack) using
    /// `buf` (at least `ciphertext.len()` bytes) as scratch; returns the plaintext inside `buf`.
    pub fn decrypt_into<'b>(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], DecryptError> {
        let parsed = ciphertext::parse(ciphertext, buf)?;
        let Some(plaintext_len) = parsed.sealed_len.checked_sub(TAG_LEN) else {
            return Err(DecryptError::Malformed);
        };
        let (body, tag) = buf[..parsed.sealed_len].split_at_mut(plaintext_len);
        let tag = GenericArray::from_slice(tag);

        let subkey = self.subkey(&parsed.iv);
        let nonce = &parsed.nonce;
        // Both AEADs compare the tag in constant time and only decrypt once it verified.
        let result = match self.cipher {
            Cipher::Aes256 => Aes256Gcm::new(subkey.as_ref().into()).decrypt_in_place_detached(
                nonce.into(),
                aad,
                body,
                tag,
            ),
            Cipher::ChaCha20 => ChaCha20Poly1305::new(subkey.as_ref().into())
                .decrypt_in_place_detached(nonce.into(), aad, body, tag),
        };
        match result {
            Ok(()) => Ok(body),
            Err(_) => Err(DecryptError::NotAuthentic),
        }
    }

    /// `encrypt_into` into a new vector.
    ///
    /// # Panics
    /// If the plaintext exceeds the AEAD's limit (64 GiB for AES-GCM).
    #[cfg(feature = "alloc")]
    pub fn encrypt(
        &self,
        random: &[u8; RANDOM_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0u8; plaintext.len() + OVERHEAD];
        let n = self
            .encrypt_into(random, plaintext, aad, &mut out)
            .expect("plaintext within the AEAD limit");
        out.truncate(n);
        out
    }

    /// `decrypt_into` into a new vector.
    #[cfg(feature = "alloc")]
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<alloc::vec::Vec<u8>, DecryptError> {
        let mut buf = alloc::vec![0u8; ciphertext.len()];
        let n = self.decrypt_into(ciphertext, aad, &mut buf)?.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// The per-message subkey: HMAC-SHA256(key, iv) for AES256, HChaCha20(key, iv) for ChaCha20.
    ///
    /// Public so that the intermediate values of the test vectors can be checked; the holder of
    /// the key can compute it anyway.
    pub fn subkey(&self, iv: &[u8; IV_LEN]) -> Zeroizing<[u8; 32]> {
        match self.cipher {
            Cipher::Aes256 => Zeroizing::new(hmac_sha256(&self.bytes, &[iv])),
            Cipher::ChaCha20 => hchacha20(&self.bytes, iv),
        }
    }
}

/// HChaCha20 (the XChaCha20 subkey function): 32-byte key and 16-byte input to 32 bytes.
pub fn hchacha20(key: &[u8; 32], input: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut block = chacha20::hchacha::<U10>(key.into(), input.into());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&block);
    block.as_mut_slice().zeroize();
    out
}
