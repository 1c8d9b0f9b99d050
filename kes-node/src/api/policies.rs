//! Policy routes: create, describe, read, list, delete, and the legacy assign.
use std::collections::BTreeMap;

use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;
use serde_json::Value;

use super::errors::{invalid_name, invalid_pattern, store_error, Kind};
use super::listing::{pattern_set, prefix_of, NameList, PatternSet};
use super::reply::Reply;
use super::{identities, App, Ctx};
use crate::auth::{Caller, NOT_ALLOWED};
use crate::command::Command;
use crate::http::Response;
use crate::identity::names::normalize_identity;
use crate::records::{IdentityRecord, PolicyRecord};
use crate::timefmt;

/// Reads `allow`/`deny` in either wire form: `{"pattern":{}}` (current) or `["pattern"]`
/// (legacy and the YAML config). Field names match case-insensitively, as Go's decoder does.
fn parse_policy_body(body: &[u8]) -> Result<(Vec<String>, Vec<String>), Response> {
    let bad = || Response::error(400, "invalid policy request body");
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let Some(Ok(Value::Object(map))) = values.next() else {
        return Err(bad());
    };
    let field = |name: &str| -> Result<Vec<String>, Response> {
        let v = map.get(name).or_else(|| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        });
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => Ok(m.keys().cloned().collect()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| p.as_str().map(str::to_owned).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    };
    let (mut allow, mut deny) = (field("allow")?, field("deny")?);
    allow.sort();
    allow.dedup();
    deny.sort();
    deny.dedup();
    Ok((allow, deny))
}

pub(super) fn create(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Policy, &ctx.resource).into();
    }
    let (allow, deny) = match parse_policy_body(&ctx.req.body) {
        Ok(p) => p,
        Err(resp) => return resp.into(),
    };
    let policy = PolicyRecord {
        allow,
        deny,
        created_at: timefmt::now(),
        created_by: ctx.identity().to_owned(),
    };
    let cmd = Command::CreatePolicy {
        enclave: ctx.enclave.clone(),
        name: ctx.resource.clone(),
        policy,
        replace: false,
    };
    Reply::write(cmd, Kind::Policy, "failed to create policy")
}

fn load(app: &App, ctx: &Ctx) -> Result<PolicyRecord, Response> {
    if !valid_name(&ctx.resource) {
        return Err(invalid_name(Kind::Policy, &ctx.resource));
    }
    app.store
        .policy(&ctx.enclave, &ctx.resource)
        .map_err(|err| store_error(Kind::Policy, err, "failed to read policy"))
}

#[derive(Serialize)]
struct DescribePolicy<'a> {
    name: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub(super) fn describe(app: &App, ctx: &Ctx) -> Response {
    match load(app, ctx) {
        Ok(p) => Response::json(&DescribePolicy {
            name: &ctx.resource,
            created_at: timefmt::rfc3339(p.created_at),
            created_by: &p.created_by,
        }),
        Err(resp) => resp,
    }
}

#[derive(Serialize)]
struct ReadPolicy<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    allow: PatternSet,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    deny: PatternSet,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub(super) fn read(app: &App, ctx: &Ctx) -> Response {
    match load(app, ctx) {
        Ok(p) => Response::json(&ReadPolicy {
            name: &ctx.resource,
            allow: pattern_set(&p.allow),
            deny: pattern_set(&p.deny),
            created_at: timefmt::rfc3339(p.created_at),
            created_by: &p.created_by,
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
        .list_policies(&ctx.enclave, prefix_of(&ctx.resource))
    {
        Ok(names) => Response::json(&NameList {
            names,
            continue_at: "",
        }),
        Err(err) => store_error(Kind::Policy, err, "failed to list policies"),
    }
}

pub(super) fn delete(_: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Policy, &ctx.resource).into();
    }
    let cmd = Command::DeletePolicy {
        enclave: ctx.enclave.clone(),
        name: ctx.resource.clone(),
    };
    Reply::write(cmd, Kind::Policy, "failed to delete policy")
}

/// `POST /v1/policy/assign/<policy>` `{"identity":"<hex>"}` (v0.19–v0.22 clients): makes the
/// identity use the policy. The system admin and enclave admins may assign to any identity
/// but the system admin (creating it if needed; it becomes theirs). Any other caller may only
/// change the policy of an existing identity it created (directly or through its
/// descendants), never of an enclave admin, and only to a policy within its own: the identity
/// keeps its parent, expiry and children.
pub(super) fn assign(app: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Policy, &ctx.resource).into();
    }
    let Ok(fields) = super::body::Fields::decode(&ctx.req.body) else {
        return Response::error(400, "invalid request body").into();
    };
    let Ok(identity) = fields.string("identity") else {
        return Response::error(400, "invalid request body").into();
    };
    if !valid_name(&identity) {
        return invalid_name(Kind::Identity, &identity).into();
    }
    let identity = match normalize_identity(&identity) {
        Ok(id) => id,
        Err(err) => return Response::error(400, &err.to_string()).into(),
    };
    if crate::auth::is_admin(&app.admin, &identity) {
        return Response::error(400, "cannot assign policy to system admin").into();
    }
    // Upstream refuses self-assignment.
    if ctx.caller.id() == Some(identity.as_str()) {
        return Response::error(403, "identity cannot assign policy to itself").into();
    }
    if let Err(resp) = load(app, ctx) {
        return resp.into();
    }
    let now = timefmt::now();
    let mut expires_at = None;
    match ctx.caller {
        Caller::Identity {
            id,
            enclave_admin: false,
        } => return assign_as_identity(app, ctx, id, identity, now),
        // As for the identities it creates, an enclave admin's assignee expires no later
        // than the enclave admin.
        Caller::Identity {
            id,
            enclave_admin: true,
        } => {
            let Ok(me) = app.store.identity(&ctx.enclave, id) else {
                return Response::error(403, NOT_ALLOWED).into();
            };
            expires_at = me.expires_at;
        }
        _ => {}
    }
    let record = IdentityRecord {
        policy: ctx.resource.clone(),
        admin: false,
        ttl: expires_at.map_or(std::time::Duration::ZERO, |e| (e - now).unsigned_abs()),
        expires_at,
        created_at: now,
        created_by: ctx.identity().to_owned(),
        children: Vec::new(),
    };
    let cmd = Command::CreateIdentity {
        enclave: ctx.enclave.clone(),
        identity,
        record,
        replace: true,
    };
    Reply::write(cmd, Kind::Identity, "failed to assign policy")
}

/// Assignment by a non-admin identity `me`: only the policy of one of its descendants changes.
fn assign_as_identity(
    app: &App,
    ctx: &Ctx,
    me: &str,
    identity: String,
    now: time::OffsetDateTime,
) -> Reply {
    let Ok(caller) = app.store.identity(&ctx.enclave, me) else {
        return Response::error(403, NOT_ALLOWED).into();
    };
    let target = match app.store.identity(&ctx.enclave, &identity) {
        Ok(t) => t,
        Err(err) => return store_error(Kind::Identity, err, "failed to read identity").into(),
    };
    if target.admin {
        return Response::error(403, "cannot assign policy to an enclave admin").into();
    }
    if !identities::descends_from(app, &ctx.enclave, &identity, me) {
        let why = format!("cannot assign policy to '{identity}': it was not created by the caller");
        return Response::error(403, &why).into();
    }
    // Not more than it has: else it could widen its own rights via a child.
    if !identities::policy_within(app, &ctx.enclave, &ctx.resource, &caller.policy) {
        return Response::error(403, identities::NOT_SUBSET).into();
    }
    // The store applies only the policy; the caller and the time let it check, where the
    // change applies, that the caller still exists and the identity still descends from it.
    let record = IdentityRecord {
        policy: ctx.resource.clone(),
        created_at: now,
        created_by: me.to_owned(),
        ..target
    };
    let cmd = Command::ChildIdentity {
        enclave: ctx.enclave.clone(),
        identity,
        record,
        assign: true,
    };
    Reply::write(cmd, Kind::Identity, "failed to assign policy")
}
