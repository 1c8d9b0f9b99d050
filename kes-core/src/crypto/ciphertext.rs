//! Parsing of the ciphertext framings accepted on decrypt (spec §8.3).
//!
//! Three framings exist, told apart by the first byte:
//!
//! - `{` (0x7b): legacy JSON, written by servers up to v0.19:
//!   `{"aead":"AES-256-GCM-HMAC-SHA-256"|"ChaCha20Poly1305","id":"..","iv":"<b64>","nonce":"<b64>","bytes":"<b64>"}`.
//! - 0x95 (a msgpack fixarray of five elements): legacy msgpack, written by v0.20 to early 2024:
//!   `[algorithm: str, id: str, iv: bin(16), nonce: bin(12), bytes: bin]`.
//! - anything else: the current raw format `ciphertext || tag(16) || iv(16) || nonce(12)`.
//!
//! A raw ciphertext starts with `{` or 0x95 by chance about twice in 256 times, so a legacy
//! framing that does not parse is **not** an error: the bytes are then read as raw. Only a
//! framing that parses completely is used, and then its AEAD result is final. The algorithm
//! named inside a legacy framing is checked for validity but otherwise ignored: the key's own
//! cipher decides, as upstream does. The `id` field is ignored too.
//!
//! Every framing is normalised to the same [`Parsed`] form: the sealed bytes (`ct || tag`) are
//! copied into the caller's buffer, iv and nonce are returned by value. The sealed part is
//! never longer than the framed input, so a buffer of `ciphertext.len()` bytes always suffices.
//!
//! Deviations from Go's `encoding/json`, all about inputs that no KES server ever wrote:
//! object keys match case-sensitively, escape sequences inside the string values are not
//! decoded, and duplicate keys are rejected. Such inputs fall back to raw and fail to decrypt.
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Deserialize;

use super::cipher::{Cipher, DecryptError};

/// Length of the per-message IV that the subkey is derived from.
pub const IV_LEN: usize = 16;
/// Length of the AEAD nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits tolerated.
pub(crate) const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// A ciphertext split into its parts; the sealed bytes live in the caller's buffer.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// Length of `ct || tag` at the start of the buffer.
    pub sealed_len: usize,
    pub iv: [u8; IV_LEN],
    pub nonce: [u8; NONCE_LEN],
}

/// Splits `ciphertext` in any accepted framing, copying `ct || tag` to the start of `buf`.
///
/// `buf` must hold at least `ciphertext.len()` bytes. Fails with [`DecryptError::Malformed`]
/// only if the bytes are not a legacy framing and too short to be a raw ciphertext.
pub(crate) fn parse(ciphertext: &[u8], buf: &mut [u8]) -> Result<Parsed, DecryptError> {
    if buf.len() < ciphertext.len() {
        return Err(DecryptError::BufferTooSmall);
    }
    let legacy = match ciphertext.first() {
        Some(b'{') => parse_json(ciphertext, buf),
        Some(0x95) => parse_msgpack(ciphertext, buf),
        _ => None,
    };
    match legacy {
        Some(parsed) => Ok(parsed),
        None => parse_raw(ciphertext, buf),
    }
}

/// The current format: `ct || tag || iv || nonce`.
fn parse_raw(ciphertext: &[u8], buf: &mut [u8]) -> Result<Parsed, DecryptError> {
    // Upstream requires more than iv+nonce; the AEAD then needs at least a whole tag.
    if ciphertext.len() < IV_LEN + NONCE_LEN + TAG_LEN {
        return Err(DecryptError::Malformed);
    }
    let (sealed, rest) = ciphertext.split_at(ciphertext.len() - IV_LEN - NONCE_LEN);
    let (iv, nonce) = rest.split_at(IV_LEN);
    buf[..sealed.len()].copy_from_slice(sealed);
    Ok(Parsed {
        sealed_len: sealed.len(),
        iv: iv.try_into().expect("split at IV_LEN"),
        nonce: nonce.try_into().expect("remaining NONCE_LEN bytes"),
    })
}

/// The JSON object as KES wrote it; unknown fields are ignored, like Go does.
#[derive(Deserialize)]
struct LegacyJson<'a> {
    aead: &'a str,
    // Never checked by current upstream; parsed only so that a non-string `id` is rejected
    // as Go's decoder rejects it.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<&'a str>,
    iv: &'a str,
    nonce: &'a str,
    bytes: &'a str,
}

/// Legacy JSON framing; `None` if it does not parse or has wrong field sizes.
fn parse_json(ciphertext: &[u8], buf: &mut [u8]) -> Option<Parsed> {
    const AES256_GCM: &str = "AES-256-GCM-HMAC-SHA-256";
    const CHACHA20_POLY1305: &str = "ChaCha20Poly1305";

    let (json, _) = serde_json_core::from_slice::<LegacyJson>(ciphertext).ok()?;
    if json.aead != AES256_GCM && json.aead != CHACHA20_POLY1305 {
        return None;
    }
    let iv = decode_exact::<IV_LEN>(json.iv)?;
    let nonce = decode_exact::<NONCE_LEN>(json.nonce)?;
    // The base64 text is longer than what it decodes to, so `buf` (>= ciphertext.len()) fits.
    let sealed_len = GO_STD_BASE64.decode_slice(json.bytes, buf).ok()?;
    Some(Parsed {
        sealed_len,
        iv,
        nonce,
    })
}

/// Decodes standard base64 that must yield exactly `N` bytes.
fn decode_exact<const N: usize>(b64: &str) -> Option<[u8; N]> {
    // Room for more than N bytes, so a slightly too long value is rejected by the length
    // check; one that does not fit at all fails to decode, with the same result.
    let mut tmp = [0u8; 32];
    let n = GO_STD_BASE64.decode_slice(b64, &mut tmp).ok()?;
    if n != N {
        return None;
    }
    tmp[..N].try_into().ok()
}

/// Legacy msgpack framing; `None` if it does not parse, has wrong field sizes or trailing bytes.
fn parse_msgpack(ciphertext: &[u8], buf: &mut [u8]) -> Option<Parsed> {
    let mut r = MsgpackReader(ciphertext);
    if r.byte()? != 0x95 {
        return None;
    }
    let algorithm = r.str()?;
    Cipher::parse(core::str::from_utf8(algorithm).ok()?)?;
    let _id = r.str()?;
    let iv = r.bin()?.try_into().ok()?;
    let nonce = r.bin()?.try_into().ok()?;
    let sealed = r.bin()?;
    if !r.0.is_empty() {
        return None;
    }
    buf[..sealed.len()].copy_from_slice(sealed);
    Some(Parsed {
        sealed_len: sealed.len(),
        iv,
        nonce,
    })
}

/// Just enough of a msgpack reader for the legacy ciphertext: strings and binary blobs.
///
/// Like the Go reader upstream used (`tinylib/msgp`), strings must use a str format and byte
/// fields a bin format; lengths are big-endian.
struct MsgpackReader<'a>(&'a [u8]);

impl<'a> MsgpackReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A big-endian length of `width` bytes (1, 2 or 4).
    fn len(&mut self, width: usize) -> Option<usize> {
        let bytes = self.take(width)?;
        let n = bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        usize::try_from(n).ok()
    }

    /// fixstr (0xa0..=0xbf), str8 (0xd9), str16 (0xda), str32 (0xdb).
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            tag @ 0xa0..=0xbf => usize::from(tag & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return None,
        };
        self.take(n)
    }

    /// bin8 (0xc4), bin16 (0xc5), bin32 (0xc6).
    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.len(1)?,
            0xc5 => self.len(2)?,
            0xc6 => self.len(4)?,
            _ => return None,
        };
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_reader_widths() {
        let mut r = MsgpackReader(&[0xa2, b'h', b'i', 0xda, 0, 1, b'x', 0xc6, 0, 0, 0, 2, 7, 8]);
        assert_eq!(r.str(), Some(&b"hi"[..]));
        assert_eq!(r.str(), Some(&b"x"[..]));
        assert_eq!(r.bin(), Some(&[7u8, 8][..]));
        assert!(r.0.is_empty());
        assert_eq!(MsgpackReader(&[0xc4, 5, 1]).bin(), None);
        assert_eq!(MsgpackReader(&[0xc4, 0]).str(), None);
    }

    #[test]
    fn short_raw_is_malformed() {
        let mut buf = [0u8; 64];
        assert_eq!(
            parse(&[0u8; 43], &mut buf).unwrap_err(),
            DecryptError::Malformed
        );
        assert_eq!(parse(&[0u8; 44], &mut buf).unwrap().sealed_len, 16);
        assert_eq!(
            parse(&[0u8; 44], &mut buf[..43]).unwrap_err(),
            DecryptError::BufferTooSmall
        );
    }
}
