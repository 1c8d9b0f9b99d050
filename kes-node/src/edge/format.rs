//! How a key is stored in a central key store (spec §8.4): upstream's current encoding,
//! `base64(protobuf KeyVersion)`, and on read also the legacy JSON of older servers.
//!
//! ```text
//! message SecretKey  { bytes Key = 1; uint32 Type = 2; }   // 1 = AES256, 2 = ChaCha20
//! message HMACKey    { bytes Key = 1; uint32 Hash = 2; }   // 1 = SHA256
//! message KeyVersion { SecretKey Key = 1; HMACKey HMACKey = 2;
//!                      google.protobuf.Timestamp CreatedAt = 3; string CreatedBy = 4; }
//! legacy: {"bytes":"<base64 32 bytes>","algorithm":"AES256-GCM_SHA256"|"XCHACHA20-POLY1305"|
//!          "AES256"|"ChaCha20"|"","created_at":"<RFC 3339>","created_by":"<identity>"}
//! ```
//!
//! The few protobuf fields are encoded and decoded here directly rather than with a protobuf
//! library, so that key bytes go straight from the input into zeroize-on-drop key types and
//! never sit in a plain heap buffer.
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kes_core::crypto::{Cipher, HmacKey, SecretKey};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::records::KeyRecord;

/// `SecretKey.Type` values.
const TYPE_AES256: u64 = 1;
const TYPE_CHACHA20: u64 = 2;
/// `HMACKey.Hash`: SHA-256.
const HASH_SHA256: u64 = 1;

/// Why a stored value is not a key. `Display` says what is wrong, never a key byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormatError {
    NotBase64,
    CreatedByNotUtf8,
    /// A field of this message has the wrong wire type.
    WrongFieldType(&'static str),
    /// This message has no key.
    NoKey(&'static str),
    /// An unknown `SecretKey.Type`.
    KeyType(u64),
    /// An unknown `HMACKey.Hash`.
    HashType(u64),
    /// The key of this message is not 32 bytes long.
    KeyLength {
        what: &'static str,
        len: usize,
    },
    TimeOutOfRange,
    Truncated,
    /// A protobuf wire type that no field of a key uses.
    WireType(u64),
    /// The legacy JSON does not parse (serde_json's words).
    Json(String),
    JsonNoBytes,
    JsonNotBase64,
    JsonKeyLength(usize),
    JsonAlgorithm(String),
    JsonTime(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use FormatError::*;
        match self {
            NotBase64 => f.write_str("neither base64 (of a protobuf KeyVersion) nor legacy JSON"),
            CreatedByNotUtf8 => f.write_str("KeyVersion.CreatedBy is not UTF-8"),
            WrongFieldType(what) => write!(f, "{what} has a field of the wrong type"),
            NoKey(what) => write!(f, "{what} has no Key"),
            KeyType(t) => write!(f, "SecretKey.Type {t} is not AES256 (1) or ChaCha20 (2)"),
            HashType(h) => write!(f, "HMACKey.Hash {h} is not SHA256 (1)"),
            KeyLength { what, len } => write!(f, "{what}.Key has {len} bytes, not 32"),
            TimeOutOfRange => f.write_str("CreatedAt is out of range"),
            Truncated => f.write_str("truncated protobuf"),
            WireType(w) => write!(f, "protobuf wire type {w} is not supported"),
            Json(e) => write!(f, "legacy JSON key does not parse: {e}"),
            JsonNoBytes => f.write_str("legacy JSON key has no \"bytes\""),
            JsonNotBase64 => f.write_str("legacy JSON key: \"bytes\" is not base64"),
            JsonKeyLength(n) => write!(f, "legacy JSON key has {n} bytes, not 32"),
            JsonAlgorithm(name) => write!(f, "legacy JSON key: unknown algorithm '{name}'"),
            JsonTime(t) => write!(f, "legacy JSON key: created_at '{t}' is not RFC 3339"),
        }
    }
}

impl std::error::Error for FormatError {}

/// The stored form of a key: `base64(protobuf KeyVersion)`.
pub(crate) fn encode(rec: &KeyRecord) -> Zeroizing<Vec<u8>> {
    let mut pb = Zeroizing::new(Vec::with_capacity(128));
    let mut secret = Zeroizing::new(Vec::with_capacity(40));
    bytes_field(&mut secret, 1, rec.key.as_bytes());
    let kind = match rec.key.cipher() {
        Cipher::Aes256 => TYPE_AES256,
        Cipher::ChaCha20 => TYPE_CHACHA20,
    };
    varint_field(&mut secret, 2, kind);
    bytes_field(&mut pb, 1, &secret);
    if let Some(hmac) = &rec.hmac {
        let mut h = Zeroizing::new(Vec::with_capacity(40));
        bytes_field(&mut h, 1, hmac.as_bytes());
        varint_field(&mut h, 2, HASH_SHA256);
        bytes_field(&mut pb, 2, &h);
    }
    let mut ts = Vec::new();
    let seconds = rec.created_at.unix_timestamp();
    let nanos = rec.created_at.nanosecond();
    if seconds != 0 {
        // int64: negative values are their 64-bit two's complement as a varint.
        varint_field(&mut ts, 1, seconds as u64);
    }
    if nanos != 0 {
        varint_field(&mut ts, 2, u64::from(nanos));
    }
    bytes_field(&mut pb, 3, &ts);
    if !rec.created_by.is_empty() {
        bytes_field(&mut pb, 4, rec.created_by.as_bytes());
    }
    Zeroizing::new(STANDARD.encode(&*pb).into_bytes())
}

/// Parses a stored key in either format. The error says what is wrong, never a key byte.
pub(crate) fn decode(value: &[u8]) -> Result<KeyRecord, FormatError> {
    let text = value.trim_ascii();
    if text.first() == Some(&b'{') {
        return decode_json(text);
    }
    let pb = STANDARD
        .decode(text)
        .map(Zeroizing::new)
        .map_err(|_| FormatError::NotBase64)?;
    decode_protobuf(&pb)
}

/// Go's zero `time.Time`, which keys without a creation time report.
pub(crate) fn zero_time() -> OffsetDateTime {
    time::Date::from_calendar_date(1, time::Month::January, 1)
        .expect("a valid date")
        .midnight()
        .assume_utc()
}

fn decode_protobuf(pb: &[u8]) -> Result<KeyRecord, FormatError> {
    let mut key = None;
    let mut hmac = None;
    let mut created_at = zero_time();
    let mut created_by = String::new();
    for field in Fields(pb) {
        match field? {
            (1, Value::Bytes(b)) => key = Some(decode_secret(b)?),
            (2, Value::Bytes(b)) => hmac = Some(decode_hmac(b)?),
            (3, Value::Bytes(b)) => created_at = decode_timestamp(b)?,
            (4, Value::Bytes(b)) => {
                created_by =
                    String::from_utf8(b.to_vec()).map_err(|_| FormatError::CreatedByNotUtf8)?
            }
            (1..=4, _) => return Err(FormatError::WrongFieldType("KeyVersion")),
            _ => {} // Unknown fields are skipped, as protobuf readers do.
        }
    }
    Ok(KeyRecord {
        key: key.ok_or(FormatError::NoKey("KeyVersion"))?,
        hmac,
        created_at,
        created_by,
    })
}

fn decode_secret(pb: &[u8]) -> Result<SecretKey, FormatError> {
    let (bytes, kind) = key_and_kind(pb, "SecretKey")?;
    let cipher = match kind {
        TYPE_AES256 => Cipher::Aes256,
        TYPE_CHACHA20 => Cipher::ChaCha20,
        other => return Err(FormatError::KeyType(other)),
    };
    Ok(SecretKey::new(cipher, *bytes))
}

fn decode_hmac(pb: &[u8]) -> Result<HmacKey, FormatError> {
    let (bytes, hash) = key_and_kind(pb, "HMACKey")?;
    if hash != HASH_SHA256 {
        return Err(FormatError::HashType(hash));
    }
    Ok(HmacKey::new(*bytes))
}

/// Field 1 (32 key bytes) and field 2 (a varint) of `SecretKey` / `HMACKey`.
fn key_and_kind(pb: &[u8], what: &'static str) -> Result<(Zeroizing<[u8; 32]>, u64), FormatError> {
    let mut key: Option<Zeroizing<[u8; 32]>> = None;
    let mut kind = 0;
    for field in Fields(pb) {
        match field? {
            (1, Value::Bytes(b)) => {
                let mut k = Zeroizing::new([0u8; 32]);
                if b.len() != 32 {
                    return Err(FormatError::KeyLength { what, len: b.len() });
                }
                k.copy_from_slice(b);
                key = Some(k);
            }
            (2, Value::Varint(v)) => kind = v,
            (1 | 2, _) => return Err(FormatError::WrongFieldType(what)),
            _ => {}
        }
    }
    Ok((key.ok_or(FormatError::NoKey(what))?, kind))
}

fn decode_timestamp(pb: &[u8]) -> Result<OffsetDateTime, FormatError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for field in Fields(pb) {
        match field? {
            (1, Value::Varint(v)) => seconds = v as i64,
            (2, Value::Varint(v)) => nanos = v as i64,
            (1 | 2, _) => return Err(FormatError::WrongFieldType("CreatedAt")),
            _ => {}
        }
    }
    let t = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    OffsetDateTime::from_unix_timestamp_nanos(t).map_err(|_| FormatError::TimeOutOfRange)
}

fn decode_json(text: &[u8]) -> Result<KeyRecord, FormatError> {
    #[derive(serde::Deserialize)]
    struct Legacy {
        bytes: Option<String>,
        #[serde(default)]
        algorithm: String,
        created_at: Option<String>,
        #[serde(default)]
        created_by: String,
    }
    let legacy: Legacy =
        serde_json::from_slice(text).map_err(|e| FormatError::Json(e.to_string()))?;
    let encoded = Zeroizing::new(legacy.bytes.ok_or(FormatError::JsonNoBytes)?);
    let bytes = STANDARD
        .decode(encoded.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| FormatError::JsonNotBase64)?;
    let bytes = <[u8; 32]>::try_from(bytes.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| FormatError::JsonKeyLength(bytes.len()))?;
    let cipher = match legacy.algorithm.as_str() {
        // Keys of the oldest servers name no algorithm: they are AES keys.
        "" => Cipher::Aes256,
        name => Cipher::parse(name).ok_or_else(|| FormatError::JsonAlgorithm(name.into()))?,
    };
    let created_at = match legacy.created_at.as_deref() {
        None | Some("") => zero_time(),
        Some(t) => OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| FormatError::JsonTime(t.into()))?,
    };
    Ok(KeyRecord {
        key: SecretKey::new(cipher, *bytes),
        // Legacy keys have no HMAC key: /v1/key/hmac answers 409 for them, as upstream.
        hmac: None,
        created_at,
        created_by: legacy.created_by,
    })
}

// ---- protobuf wire format: varints and length-delimited fields ----

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of a protobuf message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), FormatError> {
        let tag = self.varint().ok_or(FormatError::Truncated)?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint().ok_or(FormatError::Truncated)?),
            2 => {
                let len = self.varint().ok_or(FormatError::Truncated)? as usize;
                if len > self.0.len() {
                    return Err(FormatError::Truncated);
                }
                let (b, rest) = self.0.split_at(len);
                self.0 = rest;
                Value::Bytes(b)
            }
            w @ (1 | 5) => {
                let n = if w == 1 { 8 } else { 4 };
                if n > self.0.len() {
                    return Err(FormatError::Truncated);
                }
                self.0 = &self.0[n..];
                Value::Fixed
            }
            w => return Err(FormatError::WireType(w)),
        };
        Ok((tag >> 3, value))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Some(v);
            }
        }
        None
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> KeyRecord {
        KeyRecord {
            key: SecretKey::new(Cipher::ChaCha20, [7; 32]),
            hmac: Some(HmacKey::new([9; 32])),
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_705_055_960_886_816_000)
                .unwrap(),
            created_by: "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22".into(),
        }
    }

    #[test]
    fn protobuf_round_trip() {
        let rec = record();
        let stored = encode(&rec);
        let back = decode(&stored).unwrap();
        assert_eq!(back.key.as_bytes(), rec.key.as_bytes());
        assert_eq!(back.key.cipher(), Cipher::ChaCha20);
        assert_eq!(back.hmac.unwrap().as_bytes(), &[9; 32]);
        assert_eq!(back.created_at, rec.created_at);
        assert_eq!(back.created_by, rec.created_by);
    }

    #[test]
    fn protobuf_bytes_are_upstreams() {
        // Built field by field from the .proto: Key{Key=[1;32],Type=1}, HMACKey{Key=[2;32],
        // Hash=1}, CreatedAt{seconds=1700000000}, CreatedBy="me".
        let mut pb = vec![0x0a, 36, 0x0a, 32];
        pb.extend([1u8; 32]);
        pb.extend([0x10, 1]);
        pb.extend([0x12, 36, 0x0a, 32]);
        pb.extend([2u8; 32]);
        pb.extend([0x10, 1]);
        pb.extend([0x1a, 6, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06]);
        pb.extend([0x22, 2, b'm', b'e']);
        let rec = KeyRecord {
            key: SecretKey::new(Cipher::Aes256, [1; 32]),
            hmac: Some(HmacKey::new([2; 32])),
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            created_by: "me".into(),
        };
        assert_eq!(&*encode(&rec), STANDARD.encode(&pb).as_bytes());
        let back = decode(STANDARD.encode(&pb).as_bytes()).unwrap();
        assert_eq!(back.created_at.unix_timestamp(), 1_700_000_000);
    }

    #[test]
    fn legacy_json() {
        let key = STANDARD.encode([5u8; 32]);
        for (alg, cipher) in [
            ("AES256-GCM_SHA256", Cipher::Aes256),
            ("XCHACHA20-POLY1305", Cipher::ChaCha20),
            ("ChaCha20", Cipher::ChaCha20),
            ("", Cipher::Aes256),
        ] {
            let json = format!(
                r#"{{"bytes":"{key}","algorithm":"{alg}","created_at":"2020-01-02T03:04:05Z","created_by":"x"}}"#
            );
            let rec = decode(json.as_bytes()).unwrap();
            assert_eq!(rec.key.cipher(), cipher);
            assert_eq!(rec.key.as_bytes(), &[5; 32]);
            assert!(rec.hmac.is_none());
            assert_eq!(rec.created_by, "x");
        }
        let rec = decode(format!(r#"{{"bytes":"{key}"}}"#).as_bytes()).unwrap();
        assert_eq!(
            crate::timefmt::rfc3339(rec.created_at),
            "0001-01-01T00:00:00Z"
        );
    }

    /// Key store contents are not trusted: every truncation and every single-byte change of a
    /// valid encoding decodes or is refused, never panics.
    #[test]
    fn mutations_never_panic() {
        let pb = STANDARD.decode(&*encode(&record())).unwrap();
        for cut in 0..pb.len() {
            let _ = decode(STANDARD.encode(&pb[..cut]).as_bytes());
        }
        for at in 0..pb.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff, pb[at] ^ 0x08] {
                let mut m = pb.clone();
                m[at] = byte;
                let _ = decode(STANDARD.encode(&m).as_bytes());
            }
        }
        let json = br#"{"bytes":"BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=","algorithm":"AES256","created_at":"2020-01-02T03:04:05Z"}"#;
        for cut in 0..json.len() {
            let _ = decode(&json[..cut]);
        }
        // Varints longer than ten bytes, huge lengths, unknown wire types.
        for raw in [
            &[0xff; 12][..],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x0f, 0x00],
            &[0x0d],
        ] {
            assert!(decode(STANDARD.encode(raw).as_bytes()).is_err());
        }
    }

    #[test]
    fn bad_values_say_why() {
        let e = |v: &[u8]| decode(v).err().unwrap().to_string();
        assert!(e(b"not a key!").contains("neither base64"));
        assert!(e(b"{\"bytes\":\"AAAA\"}").contains("3 bytes, not 32"));
        assert!(e(b"{\"bytes\":").contains("does not parse"));
        assert!(e(STANDARD.encode([0x0a, 5, 1]).as_bytes()).contains("truncated"));
        assert!(e(STANDARD.encode([0x22, 1, b'x']).as_bytes()).contains("no Key"));
        let mut pb = vec![0x0a, 36, 0x0a, 32];
        pb.extend([1u8; 32]);
        pb.extend([0x10, 7]);
        assert!(e(STANDARD.encode(&pb).as_bytes()).contains("Type 7"));
    }
}
