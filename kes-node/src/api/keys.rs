//! Key handlers: create, import, describe, list, delete, generate, encrypt, decrypt, hmac.
use kes_core::crypto::{Cipher, HmacKey, SecretKey, DEK_LEN, RANDOM_LEN};
use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;

use super::body::{b64, Fields};
use super::reply::Reply;
use super::{App, Ctx};
use crate::command::Command;
use crate::http::Response;
use crate::random;
use crate::store::{KeyRecord, StoreError};
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

/// Validates the name and loads the key.
fn load(app: &App, enclave: &str, name: &str) -> Result<KeyRecord, Response> {
    if !valid_name(name) {
        return Err(invalid_name(name));
    }
    app.store.key(enclave, name).map_err(read_error)
}

/// The cipher for new keys: AES-256-GCM where the CPU accelerates it, else ChaCha20-Poly1305
/// (upstream's rule, spec §8.1).
fn default_cipher() -> Cipher {
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

pub fn create(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource).into();
    }
    store_new(ctx, SecretKey::new(default_cipher(), random::bytes()))
}

pub fn import(_: &App, ctx: &Ctx) -> Reply {
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

pub fn describe(app: &App, ctx: &Ctx) -> Response {
    let rec = match load(app, &ctx.enclave, &ctx.resource) {
        Ok(rec) => rec,
        Err(resp) => return resp,
    };
    Response::json(&DescribeKey {
        name: &ctx.resource,
        algorithm: rec.key.cipher().as_str(),
        created_at: timefmt::rfc3339(rec.created_at),
        created_by: &rec.created_by,
    })
}

#[derive(Serialize)]
struct KeyList {
    names: Vec<String>,
}

pub fn list(app: &App, ctx: &Ctx) -> Response {
    let pattern = ctx.resource.as_str();
    if !valid_pattern(pattern) {
        return Response::error(
            400,
            &format!("listing pattern '{pattern}' is empty, too long or is invalid"),
        );
    }
    // Upstream passes the pattern as a literal prefix; only `*` alone means "all" (spec §4.7).
    let prefix = if pattern == "*" { "" } else { pattern };
    match app.store.list_keys(&ctx.enclave, prefix) {
        Ok(names) => Response::json(&KeyList { names }),
        Err(err) => {
            super::errors::store_error(super::errors::Kind::Key, err, "failed to list keys")
        }
    }
}

pub fn delete(_: &App, ctx: &Ctx) -> Reply {
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
struct DataKey {
    plaintext: String,
    ciphertext: String,
}

pub fn generate(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource);
    }
    let context = match fields(ctx, true).and_then(|f| {
        f.bytes("context")
            .map_err(|_| Response::error(400, INVALID_BODY))
    }) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let rec = match load(app, &ctx.enclave, &ctx.resource) {
        Ok(rec) => rec,
        Err(resp) => return resp,
    };
    let dek = zeroize::Zeroizing::new(random::bytes::<DEK_LEN>());
    let ciphertext = rec
        .key
        .encrypt(&random::bytes::<RANDOM_LEN>(), dek.as_slice(), &context);
    let plaintext = zeroize::Zeroizing::new(b64(dek.as_slice()));
    Response::json(&DataKey {
        plaintext: plaintext.to_string(),
        ciphertext: b64(&ciphertext),
    })
}

#[derive(Serialize)]
struct Ciphertext {
    ciphertext: String,
}

pub fn encrypt(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource);
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
        Err(resp) => return resp,
    };
    let rec = match load(app, &ctx.enclave, &ctx.resource) {
        Ok(rec) => rec,
        Err(resp) => return resp,
    };
    let ciphertext = rec
        .key
        .encrypt(&random::bytes::<RANDOM_LEN>(), &plaintext, &context);
    Response::json(&Ciphertext {
        ciphertext: b64(&ciphertext),
    })
}

#[derive(Serialize)]
struct Plaintext {
    plaintext: String,
}

pub fn decrypt(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource);
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
        Err(resp) => return resp,
    };
    let rec = match load(app, &ctx.enclave, &ctx.resource) {
        Ok(rec) => rec,
        Err(resp) => return resp,
    };
    match rec.key.decrypt(&ciphertext, &context) {
        Ok(pt) => {
            let pt = zeroize::Zeroizing::new(pt);
            Response::json(&Plaintext {
                plaintext: b64(&pt),
            })
        }
        Err(_) => Response::error(400, "decryption failed: ciphertext is not authentic"),
    }
}

#[derive(Serialize)]
struct Mac {
    hmac: String,
}

pub fn hmac(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return invalid_name(&ctx.resource);
    }
    let message = match fields(ctx, false).and_then(|f| {
        f.bytes("message")
            .map_err(|_| Response::error(400, INVALID_BODY))
    }) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let rec = match load(app, &ctx.enclave, &ctx.resource) {
        Ok(rec) => rec,
        Err(resp) => return resp,
    };
    match &rec.hmac {
        Some(key) => Response::json(&Mac {
            hmac: b64(&key.sign(&message)),
        }),
        None => Response::error(409, "key does not support HMAC"),
    }
}
