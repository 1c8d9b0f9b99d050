//! Key handlers: create, import, describe, list, delete, generate, encrypt, decrypt, hmac.
//!
//! The same handlers serve the stateful server (keys in `kes.db`) and the edge server (keys in
//! a central key store behind a cache): reads go through [`load`] and [`list`]'s lookup, which
//! on an edge server answer from the cache or ask the event loop to fetch from the key store
//! first ([`Reply::Fetch`]); writes are commands either way.
use kes_core::crypto::{Cipher, HmacKey, SecretKey, DEK_LEN, RANDOM_LEN};
use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;

use super::body::{b64, Fields};
use super::reply::{Fetch, Fetched, Reply};
use super::{App, Ctx, Keys};
use crate::command::Command;
use crate::http::Response;
use crate::random;
use crate::records::KeyRecord;
use crate::store::StoreError;
use crate::timefmt;

const INVALID_BODY: &str = "invalid request body";

fn invalid_name(name: &str) -> Response {
    Response::error(
        400,
        &format!("key name '{name}' is empty, too long or contains invalid characters"),
    )
}

/// Maps a failed key lookup to upstream's answers; corruption is ours to report clearly.
fn read_error(err: StoreError) -> Response {
    super::errors::store_error(super::errors::Kind::Key, err, "failed to read key")
}

/// Why [`load`] has no key: the answer for the client, or a fetch to wait for.
enum Miss {
    Answer(Response),
    Fetch(Fetch),
}

impl From<Response> for Miss {
    fn from(r: Response) -> Miss {
        Miss::Answer(r)
    }
}

/// The reply of a key read: its answer, or the fetch it waits for.
fn reply(result: Result<Response, Miss>) -> Reply {
    match result {
        Ok(resp) | Err(Miss::Answer(resp)) => Reply::Now(resp),
        Err(Miss::Fetch(fetch)) => Reply::Fetch(fetch),
    }
}

/// Validates the name and loads the key: from the store, or on an edge server from its cache,
/// from the key store's answer this request waited for, or else by fetching it first.
fn load(app: &App, ctx: &Ctx) -> Result<KeyRecord, Miss> {
    let name = &ctx.resource;
    if !valid_name(name) {
        return Err(invalid_name(name).into());
    }
    match &app.keys {
        Keys::Store => app
            .store
            .key(&ctx.enclave, name)
            .map_err(|e| read_error(e).into()),
        Keys::Edge(edge) => match &ctx.fetched {
            Some(Fetched::Key(result)) => result.clone().map_err(|e| read_error(e).into()),
            _ => edge
                .cached(name)
                .ok_or_else(|| Miss::Fetch(Fetch::Key(name.clone()))),
        },
    }
}

/// The cipher for new keys: AES-256-GCM where the CPU accelerates it, else ChaCha20-Poly1305
/// (upstream's rule, spec §8.1).
pub(crate) fn default_cipher() -> Cipher {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return Cipher::Aes256;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
        {
            return Cipher::Aes256;
        }
    }
    Cipher::ChaCha20
}

fn store_new(ctx: &Ctx, key: SecretKey) -> Reply {
    let name = &ctx.resource;
    let rec = KeyRecord {
        key,
        hmac: Some(HmacKey::new(random::bytes())),
        created_at: timefmt::now(),
        created_by: ctx.identity().to_owned(),
    };
    let cmd = Command::CreateKey {
        enclave: ctx.enclave.clone(),
        name: name.clone(),
        key: rec,
    };
    Reply::write(cmd, super::errors::Kind::Key, "failed to create key")
}

pub(super) fn create(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource).into();
    }
    store_new(ctx, SecretKey::new(default_cipher(), random::bytes()))
}

pub(super) fn import(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource).into();
    }
    const BAD: &str = "invalid import key request body";
    let Ok(fields) = Fields::decode(&ctx.req.body) else {
        return Response::error(400, BAD).into();
    };
    let (Ok(key), Ok(cipher_name)) = (fields.bytes("key"), fields.string("cipher")) else {
        return Response::error(400, BAD).into();
    };
    let key = zeroize::Zeroizing::new(key);
    let Some(cipher) = Cipher::parse(&cipher_name) else {
        return Response::error(406, &format!("algorithm '{cipher_name}' is not supported")).into();
    };
    let Ok(bytes) = <[u8; 32]>::try_from(key.as_slice()) else {
        return Response::error(406, &format!("invalid key size for '{cipher_name}'")).into();
    };
    store_new(ctx, SecretKey::new(cipher, bytes))
}

#[derive(Serialize)]
struct DescribeKey<'a> {
    name: &'a str,
    algorithm: &'static str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub(super) fn describe(app: &App, ctx: &Ctx) -> Reply {
    reply(load(app, ctx).map(|rec| {
        Response::json(&DescribeKey {
            name: &ctx.resource,
            algorithm: rec.key.cipher().as_str(),
            created_at: timefmt::rfc3339(rec.created_at),
            created_by: &rec.created_by,
        })
    }))
}

#[derive(Serialize)]
struct KeyList {
    names: Vec<String>,
}

pub(super) fn list(app: &App, ctx: &Ctx) -> Reply {
    let pattern = ctx.resource.as_str();
    if !valid_pattern(pattern) {
        return Response::error(
            400,
            &format!("listing pattern '{pattern}' is empty, too long or is invalid"),
        )
        .into();
    }
    // Upstream passes the pattern as a literal prefix; only `*` alone means "all" (spec §4.7).
    let prefix = if pattern == "*" { "" } else { pattern };
    let listed = match (&app.keys, &ctx.fetched) {
        (Keys::Store, _) => app.store.list_keys(&ctx.enclave, prefix),
        (Keys::Edge(_), Some(Fetched::List(result))) => result.clone(),
        (Keys::Edge(_), _) => return Reply::Fetch(Fetch::List(prefix.to_owned())),
    };
    match listed {
        Ok(names) => Response::json(&KeyList { names }),
        Err(err) => {
            super::errors::store_error(super::errors::Kind::Key, err, "failed to list keys")
        }
    }
    .into()
}

pub(super) fn delete(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource).into();
    }
    let cmd = Command::DeleteKey {
        enclave: ctx.enclave.clone(),
        name: ctx.resource.clone(),
    };
    Reply::write(cmd, super::errors::Kind::Key, "failed to delete key")
}

/// Decodes the JSON body of a crypto request; an absent body counts as `{}` only where
/// upstream reads the body conditionally (generate).
fn fields(ctx: &Ctx, optional: bool) -> Result<Fields, Response> {
    if optional && !ctx.req.has_body {
        return Ok(Fields::empty());
    }
    Fields::decode(&ctx.req.body).map_err(|_| Response::error(400, INVALID_BODY))
}

#[derive(Serialize)]
struct DataKey<'a> {
    /// Borrowed from a buffer that is wiped after use.
    plaintext: &'a str,
    ciphertext: String,
}

pub(super) fn generate(app: &App, ctx: &Ctx) -> Reply {
    reply(generate_key(app, ctx))
}

fn generate_key(app: &App, ctx: &Ctx) -> Result<Response, Miss> {
    if !valid_name(&ctx.resource) {
        return Ok(invalid_name(&ctx.resource));
    }
    let context = match fields(ctx, true).and_then(|f| {
        f.bytes("context")
            .map_err(|_| Response::error(400, INVALID_BODY))
    }) {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    let rec = load(app, ctx)?;
    // The data key and the ciphertext's randomness in one draw, from the per-thread generator
    // (no syscall: see random.rs).
    let random = zeroize::Zeroizing::new(random::fast_bytes::<{ DEK_LEN + RANDOM_LEN }>());
    let (dek, iv_nonce) = random.split_at(DEK_LEN);
    let iv_nonce: &[u8; RANDOM_LEN] = iv_nonce.try_into().expect("RANDOM_LEN bytes");
    let ciphertext = rec.key.encrypt(iv_nonce, dek, &context);
    let plaintext = zeroize::Zeroizing::new(b64(dek));
    Ok(Response::json(&DataKey {
        plaintext: &plaintext,
        ciphertext: b64(&ciphertext),
    }))
}

#[derive(Serialize)]
struct Ciphertext {
    ciphertext: String,
}

pub(super) fn encrypt(app: &App, ctx: &Ctx) -> Reply {
    reply(encrypt_key(app, ctx))
}

fn encrypt_key(app: &App, ctx: &Ctx) -> Result<Response, Miss> {
    if !valid_name(&ctx.resource) {
        return Ok(invalid_name(&ctx.resource));
    }
    let parsed = fields(ctx, false).and_then(|f| {
        let pt = f
            .bytes("plaintext")
            .map_err(|_| Response::error(400, INVALID_BODY))?;
        let ctxt = f
            .bytes("context")
            .map_err(|_| Response::error(400, INVALID_BODY))?;
        Ok((zeroize::Zeroizing::new(pt), ctxt))
    });
    let (plaintext, context) = match parsed {
        Ok(v) => v,
        Err(resp) => return Ok(resp),
    };
    let rec = load(app, ctx)?;
    let ciphertext = rec
        .key
        .encrypt(&random::fast_bytes::<RANDOM_LEN>(), &plaintext, &context);
    Ok(Response::json(&Ciphertext {
        ciphertext: b64(&ciphertext),
    }))
}

#[derive(Serialize)]
struct Plaintext {
    plaintext: String,
}

pub(super) fn decrypt(app: &App, ctx: &Ctx) -> Reply {
    reply(decrypt_key(app, ctx))
}

fn decrypt_key(app: &App, ctx: &Ctx) -> Result<Response, Miss> {
    if !valid_name(&ctx.resource) {
        return Ok(invalid_name(&ctx.resource));
    }
    let parsed = fields(ctx, false).and_then(|f| {
        let ct = f
            .bytes("ciphertext")
            .map_err(|_| Response::error(400, INVALID_BODY))?;
        let ctxt = f
            .bytes("context")
            .map_err(|_| Response::error(400, INVALID_BODY))?;
        Ok((ct, ctxt))
    });
    let (ciphertext, context) = match parsed {
        Ok(v) => v,
        Err(resp) => return Ok(resp),
    };
    let rec = load(app, ctx)?;
    Ok(match rec.key.decrypt(&ciphertext, &context) {
        Ok(pt) => {
            let pt = zeroize::Zeroizing::new(pt);
            Response::json(&Plaintext {
                plaintext: b64(&pt),
            })
        }
        Err(_) => Response::error(400, "decryption failed: ciphertext is not authentic"),
    })
}

#[derive(Serialize)]
struct Mac {
    hmac: String,
}

pub(super) fn hmac(app: &App, ctx: &Ctx) -> Reply {
    reply(hmac_key(app, ctx))
}

fn hmac_key(app: &App, ctx: &Ctx) -> Result<Response, Miss> {
    if !valid_name(&ctx.resource) {
        return Ok(invalid_name(&ctx.resource));
    }
    let message = match fields(ctx, false).and_then(|f| {
        f.bytes("message")
            .map_err(|_| Response::error(400, INVALID_BODY))
    }) {
        Ok(m) => m,
        Err(resp) => return Ok(resp),
    };
    let rec = load(app, ctx)?;
    Ok(match &rec.hmac {
        Some(key) => Response::json(&Mac {
            hmac: b64(&key.sign(&message)),
        }),
        None => Response::error(409, "key does not support HMAC"),
    })
}
