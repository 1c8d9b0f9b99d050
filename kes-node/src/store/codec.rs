//! The plaintext encodings of stored values (postcard), before encryption with the root key.
//!
//! Each record type has a private serde struct so the on-disk layout is spelled out here and
//! does not silently follow changes to the public types. Buffers that hold key material are
//! zeroized when dropped.
use kes_core::crypto::{Cipher, HmacKey, SecretKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CodecError;
use crate::records::{EnclaveRecord, IdentityRecord, KeyRecord, PolicyRecord, SecretRecord};

/// `KeyRecord` on disk.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredKey {
    /// 0 = AES256, 1 = ChaCha20.
    cipher: u8,
    key: [u8; 32],
    hmac: Option<[u8; 32]>,
    /// Creation time as Unix seconds and nanoseconds (UTC).
    created_secs: i64,
    created_nanos: u32,
    created_by: String,
}

const CIPHER_AES256: u8 = 0;
const CIPHER_CHACHA20: u8 = 1;

/// Serializes `value` into an exactly sized, zeroize-on-drop buffer: sizing first means the
/// buffer never reallocates, so no copy of the plaintext is left behind in freed memory.
fn encode<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let len = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|err| CodecError::Encode(err.to_string()))?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    postcard::to_slice(value, &mut buf).map_err(|err| CodecError::Encode(err.to_string()))?;
    Ok(buf)
}

/// Deserializes `bytes`, which must be consumed completely.
fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|err| CodecError::Decode(err.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

pub(super) fn encode_key(rec: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let created = rec.created_at.to_offset(time::UtcOffset::UTC);
    let stored = StoredKey {
        cipher: match rec.key.cipher() {
            Cipher::Aes256 => CIPHER_AES256,
            Cipher::ChaCha20 => CIPHER_CHACHA20,
        },
        key: *rec.key.as_bytes(),
        hmac: rec.hmac.as_ref().map(|h| *h.as_bytes()),
        created_secs: created.unix_timestamp(),
        created_nanos: created.nanosecond(),
        created_by: rec.created_by.clone(),
    };
    encode(&stored)
}

/// Errors describe the problem without any key material.
pub(super) fn decode_key(bytes: &[u8]) -> Result<KeyRecord, CodecError> {
    let stored: StoredKey = decode(bytes)?;
    let cipher = match stored.cipher {
        CIPHER_AES256 => Cipher::Aes256,
        CIPHER_CHACHA20 => Cipher::ChaCha20,
        other => return Err(CodecError::UnknownCipher(other)),
    };
    if stored.created_nanos >= 1_000_000_000 {
        return Err(CodecError::InvalidCreationTime);
    }
    let nanos = i128::from(stored.created_secs) * 1_000_000_000 + i128::from(stored.created_nanos);
    let created_at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| CodecError::InvalidCreationTime)?;
    Ok(KeyRecord {
        key: SecretKey::new(cipher, stored.key),
        hmac: stored.hmac.map(HmacKey::new),
        created_at,
        created_by: stored.created_by.clone(),
    })
}

/// Unix seconds and nanoseconds of a time (UTC).
fn to_parts(t: time::OffsetDateTime) -> (i64, u32) {
    let t = t.to_offset(time::UtcOffset::UTC);
    (t.unix_timestamp(), t.nanosecond())
}

fn from_parts(secs: i64, nanos: u32) -> Result<time::OffsetDateTime, CodecError> {
    if nanos >= 1_000_000_000 {
        return Err(CodecError::InvalidTime);
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(secs) * 1_000_000_000 + i128::from(nanos),
    )
    .map_err(|_| CodecError::InvalidTime)
}

/// `PolicyRecord` on disk.
#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    allow: Vec<String>,
    deny: Vec<String>,
    created_secs: i64,
    created_nanos: u32,
    created_by: String,
}

pub(super) fn encode_policy(p: &PolicyRecord) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let (created_secs, created_nanos) = to_parts(p.created_at);
    encode(&StoredPolicy {
        allow: p.allow.clone(),
        deny: p.deny.clone(),
        created_secs,
        created_nanos,
        created_by: p.created_by.clone(),
    })
}

pub(super) fn decode_policy(bytes: &[u8]) -> Result<PolicyRecord, CodecError> {
    let s: StoredPolicy = decode(bytes)?;
    Ok(PolicyRecord {
        created_at: from_parts(s.created_secs, s.created_nanos)?,
        allow: s.allow,
        deny: s.deny,
        created_by: s.created_by,
    })
}

/// `IdentityRecord` on disk.
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    policy: String,
    admin: bool,
    ttl_nanos: u64,
    /// Unix seconds/nanos, or `None` for identities that do not expire.
    expires: Option<(i64, u32)>,
    created_secs: i64,
    created_nanos: u32,
    created_by: String,
    children: Vec<String>,
}

pub(super) fn encode_identity(r: &IdentityRecord) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let (created_secs, created_nanos) = to_parts(r.created_at);
    encode(&StoredIdentity {
        policy: r.policy.clone(),
        admin: r.admin,
        ttl_nanos: r.ttl.as_nanos().min(u64::MAX as u128) as u64,
        expires: r.expires_at.map(to_parts),
        created_secs,
        created_nanos,
        created_by: r.created_by.clone(),
        children: r.children.clone(),
    })
}

pub(super) fn decode_identity(bytes: &[u8]) -> Result<IdentityRecord, CodecError> {
    let s: StoredIdentity = decode(bytes)?;
    Ok(IdentityRecord {
        policy: s.policy,
        admin: s.admin,
        ttl: std::time::Duration::from_nanos(s.ttl_nanos),
        expires_at: s.expires.map(|(a, b)| from_parts(a, b)).transpose()?,
        created_at: from_parts(s.created_secs, s.created_nanos)?,
        created_by: s.created_by,
        children: s.children,
    })
}

/// `SecretRecord` on disk.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredSecret {
    value: Vec<u8>,
    created_secs: i64,
    created_nanos: u32,
    created_by: String,
}

pub(super) fn encode_secret(r: &SecretRecord) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let (created_secs, created_nanos) = to_parts(r.created_at);
    encode(&StoredSecret {
        value: r.value.to_vec(),
        created_secs,
        created_nanos,
        created_by: r.created_by.clone(),
    })
}

pub(super) fn decode_secret(bytes: &[u8]) -> Result<SecretRecord, CodecError> {
    let s: StoredSecret = decode(bytes)?;
    Ok(SecretRecord {
        value: Zeroizing::new(s.value.clone()),
        created_at: from_parts(s.created_secs, s.created_nanos)?,
        created_by: s.created_by.clone(),
    })
}

/// `EnclaveRecord` on disk: the enclave's data key and who made it.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredEnclave {
    cipher: u8,
    key: [u8; 32],
    created_secs: i64,
    created_nanos: u32,
    created_by: String,
}

pub(super) fn encode_enclave(r: &EnclaveRecord) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let (created_secs, created_nanos) = to_parts(r.created_at);
    encode(&StoredEnclave {
        cipher: match r.key.cipher() {
            Cipher::Aes256 => CIPHER_AES256,
            Cipher::ChaCha20 => CIPHER_CHACHA20,
        },
        key: *r.key.as_bytes(),
        created_secs,
        created_nanos,
        created_by: r.created_by.clone(),
    })
}

pub(super) fn decode_enclave(bytes: &[u8]) -> Result<EnclaveRecord, CodecError> {
    let s: StoredEnclave = decode(bytes)?;
    let cipher = match s.cipher {
        CIPHER_AES256 => Cipher::Aes256,
        CIPHER_CHACHA20 => Cipher::ChaCha20,
        other => return Err(CodecError::UnknownCipher(other)),
    };
    Ok(EnclaveRecord {
        key: SecretKey::new(cipher, s.key),
        created_at: from_parts(s.created_secs, s.created_nanos)?,
        created_by: s.created_by.clone(),
    })
}

/// A [`Command`](crate::command::Command) on the wire and in the replicated log: each record in
/// its stored encoding (above), so there is one encoding per record type.
#[derive(Serialize, Deserialize)]
enum WireCommand<'a> {
    CreateKey {
        enclave: &'a str,
        name: &'a str,
        key: &'a [u8],
    },
    DeleteKey {
        enclave: &'a str,
        name: &'a str,
    },
    CreatePolicy {
        enclave: &'a str,
        name: &'a str,
        policy: &'a [u8],
        replace: bool,
    },
    DeletePolicy {
        enclave: &'a str,
        name: &'a str,
    },
    CreateIdentity {
        enclave: &'a str,
        identity: &'a str,
        record: &'a [u8],
        replace: bool,
    },
    DeleteIdentity {
        enclave: &'a str,
        identity: &'a str,
    },
    CreateSecret {
        enclave: &'a str,
        name: &'a str,
        secret: &'a [u8],
    },
    DeleteSecret {
        enclave: &'a str,
        name: &'a str,
    },
    CreateEnclave {
        name: &'a str,
        record: &'a [u8],
    },
    DeleteEnclave {
        name: &'a str,
    },
    Expand {
        endpoint: &'a str,
    },
    Shrink {
        endpoint: &'a str,
        force: bool,
    },
    // New variants go last: postcard numbers variants in order, and logs hold old ones.
    ChildIdentity {
        enclave: &'a str,
        identity: &'a str,
        record: &'a [u8],
        assign: bool,
    },
}

/// Encodes a command for replication. The buffer holds key material: it is zeroized on drop.
pub(crate) fn encode_command(
    cmd: &crate::command::Command,
) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    use crate::command::Command as C;
    let record: Zeroizing<Vec<u8>> = match cmd {
        C::CreateKey { key, .. } => encode_key(key)?,
        C::CreatePolicy { policy, .. } => encode_policy(policy)?,
        C::CreateIdentity { record, .. } | C::ChildIdentity { record, .. } => {
            encode_identity(record)?
        }
        C::CreateSecret { secret, .. } => encode_secret(secret)?,
        C::CreateEnclave { record, .. } => encode_enclave(record)?,
        _ => Zeroizing::new(Vec::new()),
    };
    let r = record.as_slice();
    let wire = match cmd {
        C::CreateKey { enclave, name, .. } => WireCommand::CreateKey {
            enclave,
            name,
            key: r,
        },
        C::DeleteKey { enclave, name } => WireCommand::DeleteKey { enclave, name },
        C::CreatePolicy {
            enclave,
            name,
            replace,
            ..
        } => WireCommand::CreatePolicy {
            enclave,
            name,
            policy: r,
            replace: *replace,
        },
        C::DeletePolicy { enclave, name } => WireCommand::DeletePolicy { enclave, name },
        C::CreateIdentity {
            enclave,
            identity,
            replace,
            ..
        } => WireCommand::CreateIdentity {
            enclave,
            identity,
            record: r,
            replace: *replace,
        },
        C::ChildIdentity {
            enclave,
            identity,
            assign,
            ..
        } => WireCommand::ChildIdentity {
            enclave,
            identity,
            record: r,
            assign: *assign,
        },
        C::DeleteIdentity { enclave, identity } => {
            WireCommand::DeleteIdentity { enclave, identity }
        }
        C::CreateSecret { enclave, name, .. } => WireCommand::CreateSecret {
            enclave,
            name,
            secret: r,
        },
        C::DeleteSecret { enclave, name } => WireCommand::DeleteSecret { enclave, name },
        C::CreateEnclave { name, .. } => WireCommand::CreateEnclave { name, record: r },
        C::DeleteEnclave { name } => WireCommand::DeleteEnclave { name },
        C::Expand { endpoint } => WireCommand::Expand { endpoint },
        C::Shrink { endpoint, force } => WireCommand::Shrink {
            endpoint,
            force: *force,
        },
    };
    encode(&wire)
}

/// Decodes what [`encode_command`] produced.
pub(crate) fn decode_command(bytes: &[u8]) -> Result<crate::command::Command, CodecError> {
    use crate::command::Command as C;
    let (wire, rest): (WireCommand<'_>, _) =
        postcard::take_from_bytes(bytes).map_err(|err| CodecError::Command(err.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::CommandTrailingBytes);
    }
    let s = |x: &str| x.to_owned();
    Ok(match wire {
        WireCommand::CreateKey { enclave, name, key } => C::CreateKey {
            enclave: s(enclave),
            name: s(name),
            key: decode_key(key)?,
        },
        WireCommand::DeleteKey { enclave, name } => C::DeleteKey {
            enclave: s(enclave),
            name: s(name),
        },
        WireCommand::CreatePolicy {
            enclave,
            name,
            policy,
            replace,
        } => C::CreatePolicy {
            enclave: s(enclave),
            name: s(name),
            policy: decode_policy(policy)?,
            replace,
        },
        WireCommand::DeletePolicy { enclave, name } => C::DeletePolicy {
            enclave: s(enclave),
            name: s(name),
        },
        WireCommand::CreateIdentity {
            enclave,
            identity,
            record,
            replace,
        } => C::CreateIdentity {
            enclave: s(enclave),
            identity: s(identity),
            record: decode_identity(record)?,
            replace,
        },
        WireCommand::ChildIdentity {
            enclave,
            identity,
            record,
            assign,
        } => C::ChildIdentity {
            enclave: s(enclave),
            identity: s(identity),
            record: decode_identity(record)?,
            assign,
        },
        WireCommand::DeleteIdentity { enclave, identity } => C::DeleteIdentity {
            enclave: s(enclave),
            identity: s(identity),
        },
        WireCommand::CreateSecret {
            enclave,
            name,
            secret,
        } => C::CreateSecret {
            enclave: s(enclave),
            name: s(name),
            secret: decode_secret(secret)?,
        },
        WireCommand::DeleteSecret { enclave, name } => C::DeleteSecret {
            enclave: s(enclave),
            name: s(name),
        },
        WireCommand::CreateEnclave { name, record } => C::CreateEnclave {
            name: s(name),
            record: decode_enclave(record)?,
        },
        WireCommand::DeleteEnclave { name } => C::DeleteEnclave { name: s(name) },
        WireCommand::Expand { endpoint } => C::Expand {
            endpoint: s(endpoint),
        },
        WireCommand::Shrink { endpoint, force } => C::Shrink {
            endpoint: s(endpoint),
            force,
        },
    })
}
