//! Secret routes: create, describe, read, list, delete (spec §10.7). Values up to 1 MB.
use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;
use zeroize::Zeroizing;

use super::body::{b64, Fields};
use super::errors::{invalid_name, invalid_pattern, store_error, Kind};
use super::listing::{prefix_of, NameList};
use super::reply::Reply;
use super::{App, Ctx};
use crate::command::Command;
use crate::http::Response;
use crate::records::SecretRecord;
use crate::timefmt;

/// Largest secret value, in bytes (upstream's `MaxSecretSize = 1 MB`).
pub(super) const MAX_SECRET: usize = 1_000_000;

pub(super) fn create(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Secret, &ctx.resource).into();
    }
    // `secret` is the current field; v0.22 clients sent `bytes`.
    let value = Fields::decode(&ctx.req.body).and_then(|f| {
        let v = f.bytes("secret")?;
        if v.is_empty() {
            f.bytes("bytes")
        } else {
            Ok(v)
        }
    });
    let Ok(value) = value else {
        return Response::error(400, "invalid request body").into();
    };
    let value = Zeroizing::new(value);
    if value.len() > MAX_SECRET {
        return Response::error(400, "secret is too large: at most 1000000 bytes").into();
    }
    let secret = SecretRecord {
        value,
        created_at: timefmt::now(),
        created_by: ctx.identity().to_owned(),
    };
    let cmd = Command::CreateSecret {
        enclave: ctx.enclave.clone(),
        name: ctx.resource.clone(),
        secret,
    };
    Reply::write(cmd, Kind::Secret, "failed to create secret")
}

fn load(app: &App, ctx: &Ctx) -> Result<SecretRecord, Response> {
    if !valid_name(&ctx.resource) {
        return Err(invalid_name(Kind::Secret, &ctx.resource));
    }
    app.store
        .secret(&ctx.enclave, &ctx.resource)
        .map_err(|err| store_error(Kind::Secret, err, "failed to read secret"))
}

#[derive(Serialize)]
struct DescribeSecret<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub(super) fn describe(app: &App, ctx: &Ctx) -> Response {
    match load(app, ctx) {
        Ok(s) => Response::json(&DescribeSecret {
            name: &ctx.resource,
            kind: "generic",
            created_at: timefmt::rfc3339(s.created_at),
            created_by: &s.created_by,
        }),
        Err(resp) => resp,
    }
}

#[derive(Serialize)]
struct ReadSecret<'a> {
    name: &'a str,
    secret: String,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub(super) fn read(app: &App, ctx: &Ctx) -> Response {
    match load(app, ctx) {
        Ok(s) => Response::json(&ReadSecret {
            name: &ctx.resource,
            secret: b64(&s.value),
            kind: "generic",
            created_at: timefmt::rfc3339(s.created_at),
            created_by: &s.created_by,
        }),
        Err(resp) => resp,
    }
}

pub(super) fn list(app: &App, ctx: &Ctx) -> Response {
    if !valid_pattern(&ctx.resource) {
        return invalid_pattern(&ctx.resource);
    }
    match app
        .store
        .list_secrets(&ctx.enclave, prefix_of(&ctx.resource))
    {
        Ok(names) => Response::json(&NameList {
            names,
            continue_at: "",
        }),
        Err(err) => store_error(Kind::Secret, err, "failed to list secrets"),
    }
}

pub(super) fn delete(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Secret, &ctx.resource).into();
    }
    let cmd = Command::DeleteSecret {
        enclave: ctx.enclave.clone(),
        name: ctx.resource.clone(),
    };
    Reply::write(cmd, Kind::Secret, "failed to delete secret")
}
