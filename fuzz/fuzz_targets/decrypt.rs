//! Fuzzing of ciphertext parsing and the encryption scheme (spec §8.2–8.3).
//!
//! Input layout: `selector(1) || rest`. The selector picks how much of `rest` is associated
//! data; the remainder is the message. Properties checked for both ciphers:
//!
//! 1. Arbitrary bytes as a ciphertext never panic, and the buffer and `Vec` APIs agree.
//!    A plaintext is always at least `TAG_LEN` bytes shorter than its ciphertext.
//! 2. Encrypting the message and decrypting it gives it back, in the raw framing and
//!    re-framed as legacy JSON and legacy msgpack; the wrong associated data, the other
//!    cipher or a flipped bit make decryption fail.
#![no_main]
use kes_core::crypto::{
    Cipher, DecryptError, SecretKey, IV_LEN, NONCE_LEN, OVERHEAD, RANDOM_LEN, TAG_LEN,
};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];

/// Standard base64 with padding; small enough to keep the fuzz crate free of extra dependencies.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Re-frames a raw ciphertext as legacy JSON.
fn to_json(raw: &[u8], cipher: Cipher) -> Vec<u8> {
    let (sealed, rest) = raw.split_at(raw.len() - IV_LEN - NONCE_LEN);
    let (iv, nonce) = rest.split_at(IV_LEN);
    let aead = match cipher {
        Cipher::Aes256 => "AES-256-GCM-HMAC-SHA-256",
        Cipher::ChaCha20 => "ChaCha20Poly1305",
    };
    format!(
        r#"{{"aead":"{aead}","iv":"{}","nonce":"{}","bytes":"{}"}}"#,
        base64(iv),
        base64(nonce),
        base64(sealed)
    )
    .into_bytes()
}

/// Re-frames a raw ciphertext as legacy msgpack `[str, str, bin, bin, bin]`.
fn to_msgpack(raw: &[u8], cipher: Cipher) -> Vec<u8> {
    let (sealed, rest) = raw.split_at(raw.len() - IV_LEN - NONCE_LEN);
    let (iv, nonce) = rest.split_at(IV_LEN);
    let mut out = vec![0x95];
    for s in [
        cipher.as_str().as_bytes(),
        b"0123456789abcdef0123456789abcdef",
    ] {
        out.push(0xd9);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
    for b in [iv, nonce, sealed] {
        out.push(0xc6);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

fn other(cipher: Cipher) -> Cipher {
    match cipher {
        Cipher::Aes256 => Cipher::ChaCha20,
        Cipher::ChaCha20 => Cipher::Aes256,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (aad, message) = rest.split_at(usize::from(selector % 16).min(rest.len()));

    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = SecretKey::new(cipher, KEY);

        // 1. Arbitrary bytes as a ciphertext.
        let mut buf = vec![0u8; message.len()];
        let decrypted = key.decrypt_into(message, aad, &mut buf).map(<[u8]>::to_vec);
        if let Ok(pt) = &decrypted {
            assert!(pt.len() + TAG_LEN <= message.len());
        }
        assert_eq!(key.decrypt(message, aad), decrypted);
        if let Some(short) = message.len().checked_sub(1) {
            let mut small = vec![0u8; short];
            assert_eq!(
                key.decrypt_into(message, aad, &mut small),
                Err(DecryptError::BufferTooSmall)
            );
        }

        // 2. Round trips.
        let mut random = [0u8; RANDOM_LEN];
        for (i, r) in random.iter_mut().enumerate() {
            *r = message.get(i).copied().unwrap_or(i as u8) ^ selector;
        }
        let sealed = key.encrypt(&random, message, aad);
        assert_eq!(sealed.len(), message.len() + OVERHEAD);
        assert_eq!(&sealed[sealed.len() - RANDOM_LEN..], &random[..]);
        let mut out = vec![0u8; sealed.len()];
        let n = key.encrypt_into(&random, message, aad, &mut out).unwrap();
        assert_eq!(&out[..n], &sealed[..]);

        assert_eq!(key.decrypt(&sealed, aad).as_deref(), Ok(message));
        assert_eq!(
            key.decrypt(&to_json(&sealed, cipher), aad).as_deref(),
            Ok(message)
        );
        assert_eq!(
            key.decrypt(&to_msgpack(&sealed, cipher), aad).as_deref(),
            Ok(message)
        );

        let mut wrong_aad = aad.to_vec();
        wrong_aad.push(selector);
        assert!(key.decrypt(&sealed, &wrong_aad).is_err());
        assert!(SecretKey::new(other(cipher), KEY)
            .decrypt(&sealed, aad)
            .is_err());
        let mut flipped = sealed.clone();
        let pos = usize::from(selector) * 7 % flipped.len();
        flipped[pos] ^= 1 << (selector % 8);
        assert!(key.decrypt(&flipped, aad).is_err());
    }
});
