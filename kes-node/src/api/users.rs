//! Identity and policy routes. Until policies and identities become stored state (next issue),
//! the only identity is the admin and there are no policies.
use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;

use super::{App, Ctx};
use crate::auth::is_admin;
use crate::http::Response;
use crate::timefmt;

fn invalid_pattern(p: &str) -> Response {
    Response::error(
        400,
        &format!("listing pattern '{p}' is empty, too long or is invalid"),
    )
}

/// Policy and identity listings treat a trailing `*` as "prefix" (spec §4.8).
fn prefix_of(pattern: &str) -> &str {
    pattern.strip_suffix('*').unwrap_or(pattern)
}

pub fn describe_policy(_: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return Response::error(
            400,
            &format!(
                "policy name '{}' is empty, too long or contains invalid characters",
                ctx.resource
            ),
        );
    }
    Response::error(404, "policy does not exist")
}

pub fn read_policy(app: &App, ctx: &Ctx) -> Response {
    describe_policy(app, ctx)
}

#[derive(Serialize)]
struct NameList {
    names: Vec<String>,
    continue_at: &'static str,
}

pub fn list_policies(_: &App, ctx: &Ctx) -> Response {
    if !valid_pattern(&ctx.resource) {
        return invalid_pattern(&ctx.resource);
    }
    Response::json(&NameList {
        names: Vec::new(),
        continue_at: "",
    })
}

#[derive(Serialize)]
struct AdminIdentity {
    admin: bool,
    created_at: String,
}

pub fn describe_identity(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return Response::error(
            400,
            &format!(
                "identity '{}' is empty, too long or contains invalid characters",
                ctx.resource
            ),
        );
    }
    if is_admin(&app.admin, &ctx.resource) {
        return Response::json(&AdminIdentity {
            admin: true,
            created_at: timefmt::rfc3339(app.started_at),
        });
    }
    Response::error(404, "identity does not exist")
}

#[derive(Serialize)]
struct IdentityList {
    identities: Vec<String>,
    continue_at: &'static str,
}

pub fn list_identities(app: &App, ctx: &Ctx) -> Response {
    if !valid_pattern(&ctx.resource) {
        return invalid_pattern(&ctx.resource);
    }
    let mut identities = Vec::new();
    if valid_name(&app.admin) && app.admin.starts_with(prefix_of(&ctx.resource)) {
        identities.push(app.admin.clone());
    }
    Response::json(&IdentityList {
        identities,
        continue_at: "",
    })
}

#[derive(Serialize)]
struct SelfDescription<'a> {
    identity: &'a str,
    admin: bool,
    created_at: String,
}

pub fn describe_self(app: &App, ctx: &Ctx) -> Response {
    match ctx.identity {
        Some(id) if is_admin(&app.admin, id) => Response::json(&SelfDescription {
            identity: id,
            admin: true,
            created_at: timefmt::rfc3339(app.started_at),
        }),
        _ => Response::error(404, "identity does not exist"),
    }
}
