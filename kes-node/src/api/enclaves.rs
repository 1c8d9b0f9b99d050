//! Enclave routes: tenants with their own keys, policies, identities, secrets and data key.
//! Only the admin identity creates and deletes enclaves.
use kes_core::crypto::{Cipher, SecretKey};
use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;

use super::errors::{invalid_name, invalid_pattern, store_error, Kind};
use super::listing::{prefix_of, NameList};
use super::reply::Reply;
use super::{App, Ctx};
use crate::command::Command;
use crate::http::Response;
use crate::records::EnclaveRecord;
use crate::{random, timefmt};

pub(super) fn create(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Enclave, &ctx.resource).into();
    }
    let record = EnclaveRecord {
        key: SecretKey::new(Cipher::Aes256, random::bytes()),
        created_at: timefmt::now(),
        created_by: ctx.identity().to_owned(),
    };
    Reply::write(
        Command::CreateEnclave {
            name: ctx.resource.clone(),
            record,
        },
        Kind::Enclave,
        "failed to create enclave",
    )
}

#[derive(Serialize)]
struct DescribeEnclave<'a> {
    name: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub(super) fn describe(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Enclave, &ctx.resource);
    }
    match app.store.enclave(&ctx.resource) {
        Ok(e) => Response::json(&DescribeEnclave {
            name: &ctx.resource,
            created_at: timefmt::rfc3339(e.created_at),
            created_by: &e.created_by,
        }),
        Err(err) => store_error(Kind::Enclave, err, "failed to read enclave"),
    }
}

pub(super) fn list(app: &App, ctx: &Ctx) -> Response {
    if !valid_pattern(&ctx.resource) {
        return invalid_pattern(&ctx.resource);
    }
    match app.store.list_enclaves(prefix_of(&ctx.resource)) {
        Ok(names) => Response::json(&NameList {
            names,
            continue_at: "",
        }),
        Err(err) => store_error(Kind::Enclave, err, "failed to list enclaves"),
    }
}

pub(super) fn delete(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Enclave, &ctx.resource).into();
    }
    Reply::write(
        Command::DeleteEnclave {
            name: ctx.resource.clone(),
        },
        Kind::Enclave,
        "failed to delete enclave",
    )
}
