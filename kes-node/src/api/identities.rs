//! Identity routes: create, describe, list, delete (with every identity it created), and the
//! caller's own description in the flat shape the Go client decodes (spec §4.9).
use kes_core::name::{valid_name, valid_pattern};
use serde::Serialize;

use super::body::Fields;
use super::errors::{invalid_name, invalid_pattern, store_error, Kind};
use super::listing::{pattern_set, prefix_of, PatternSet};
use super::reply::Reply;
use super::{App, Ctx};
use crate::auth::{is_admin, Caller, NOT_ALLOWED};
use crate::command::Command;
use crate::http::Response;
use crate::identity::names::{lookup_form, normalize_identity};
use crate::records::IdentityRecord;
use crate::store::StoreError;
use crate::timefmt;

pub(super) fn create(app: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Identity, &ctx.resource).into();
    }
    let id = &match normalize_identity(&ctx.resource) {
        Ok(id) => id,
        Err(err) => return Response::error(400, &err.to_string()).into(),
    };
    let parsed = Fields::decode(&ctx.req.body).and_then(|f| {
        let admin = f.boolean("admin")?;
        Ok((f.string("policy")?, admin, f.string("ttl")?))
    });
    let Ok((policy, admin, ttl)) = parsed else {
        return Response::error(400, "invalid request body").into();
    };
    if is_admin(&app.admin, id) {
        return Response::error(400, "identity already exists").into();
    }
    let ttl = if ttl.is_empty() {
        std::time::Duration::ZERO
    } else {
        match crate::timefmt::parse_go_duration(&ttl) {
            Ok(d) => d,
            Err(_) => return Response::error(400, &format!("invalid ttl '{ttl}'")).into(),
        }
    };
    let now = timefmt::now();
    let mut expires_at = (!ttl.is_zero()).then(|| now + ttl);

    // The child's rights may not exceed the parent's (spec §10.5).
    if let Caller::Identity {
        id: parent_id,
        enclave_admin,
    } = ctx.caller
    {
        let parent = match app.store.identity(&ctx.enclave, parent_id) {
            Ok(p) => p,
            Err(_) => return Response::error(403, NOT_ALLOWED).into(),
        };
        if admin && !enclave_admin {
            return Response::error(403, "insufficient permissions to create admin identity")
                .into();
        }
        if !admin && !enclave_admin && !policy_within(app, &ctx.enclave, &policy, &parent.policy) {
            return Response::error(403, NOT_SUBSET).into();
        }
        if let Some(limit) = parent.expires_at {
            expires_at = Some(expires_at.map_or(limit, |e| e.min(limit)));
        }
    }
    if !admin {
        if !valid_name(&policy) {
            return invalid_name(Kind::Policy, &policy).into();
        }
        if let Err(err) = app.store.policy(&ctx.enclave, &policy) {
            return store_error(Kind::Policy, err, "failed to read policy").into();
        }
    }
    let record = IdentityRecord {
        policy: if admin { String::new() } else { policy },
        admin,
        ttl: expires_at.map_or(std::time::Duration::ZERO, |e| (e - now).unsigned_abs()),
        expires_at,
        created_at: now,
        created_by: ctx.identity().to_owned(),
        children: Vec::new(),
    };
    let cmd = match ctx.caller {
        // Checked again where it applies: the parent must still exist then.
        Caller::Identity { .. } => Command::ChildIdentity {
            enclave: ctx.enclave.clone(),
            identity: id.clone(),
            record,
            assign: false,
        },
        _ => Command::CreateIdentity {
            enclave: ctx.enclave.clone(),
            identity: id.clone(),
            record,
            replace: false,
        },
    };
    Reply::write(cmd, Kind::Identity, "failed to create identity")
}

/// True if `ancestor` created `id`, or created an identity that (recursively) created it.
pub(super) fn descends_from(app: &App, enclave: &str, id: &str, ancestor: &str) -> bool {
    let mut seen = std::collections::HashSet::from([id.to_owned()]);
    let mut creator = match app.store.identity(enclave, id) {
        Ok(rec) => rec.created_by,
        Err(_) => return false,
    };
    while seen.insert(creator.clone()) {
        if creator == ancestor {
            return true;
        }
        creator = match app.store.identity(enclave, &creator) {
            Ok(rec) => rec.created_by,
            Err(_) => return false,
        };
    }
    false
}

/// `403` when a caller hands out a policy that is not within its own.
pub(super) const NOT_SUBSET: &str = "policy is not a subset of parent policy";

/// True if policy `child` exists and is a subset of policy `parent` (spec §3.1 `IsSubset`).
pub(super) fn policy_within(app: &App, enclave: &str, child: &str, parent: &str) -> bool {
    let (Ok(child), Ok(own)) = (
        app.store.policy(enclave, child),
        app.store.policy(enclave, parent),
    ) else {
        return false;
    };
    kes_core::policy::is_subset(
        child.allow.iter().map(String::as_str),
        child.deny.iter().map(String::as_str),
        own.allow.iter().map(String::as_str),
        own.deny.iter().map(String::as_str),
    )
}

#[derive(Serialize)]
struct AdminIdentity {
    admin: bool,
    created_at: String,
}

#[derive(Serialize)]
struct DescribeIdentity<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    policy: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    children: &'a [String],
}

fn describe_record(rec: &IdentityRecord) -> DescribeIdentity<'_> {
    DescribeIdentity {
        policy: &rec.policy,
        admin: rec.admin,
        ttl: (!rec.ttl.is_zero()).then(|| timefmt::go_duration(rec.ttl)),
        expires_at: rec.expires_at.map(timefmt::rfc3339),
        created_at: timefmt::rfc3339(rec.created_at),
        created_by: &rec.created_by,
        children: &rec.children,
    }
}

pub(super) fn describe(app: &App, ctx: &Ctx) -> Response {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Identity, &ctx.resource);
    }
    // Anything else that is no identity simply does not exist (as upstream answers).
    let id = &*lookup_form(&ctx.resource);
    if is_admin(&app.admin, id) {
        return Response::json(&AdminIdentity {
            admin: true,
            created_at: timefmt::rfc3339(app.started_at),
        });
    }
    match app.store.identity(&ctx.enclave, id) {
        Ok(rec) => Response::json(&describe_record(&rec)),
        Err(err) => store_error(Kind::Identity, err, "failed to read identity"),
    }
}

#[derive(Serialize)]
struct IdentityList {
    identities: Vec<String>,
    continue_at: &'static str,
}

pub(super) fn list(app: &App, ctx: &Ctx) -> Response {
    if !valid_pattern(&ctx.resource) {
        return invalid_pattern(&ctx.resource);
    }
    let prefix = prefix_of(&ctx.resource);
    let mut identities = match app.store.list_identities(&ctx.enclave, prefix) {
        Ok(ids) => ids,
        Err(err) => return store_error(Kind::Identity, err, "failed to list identities"),
    };
    // The admin identity is part of every listing that matches it (as upstream).
    if valid_name(&app.admin) && app.admin.starts_with(prefix) && !identities.contains(&app.admin) {
        identities.push(app.admin.clone());
        identities.sort();
    }
    Response::json(&IdentityList {
        identities,
        continue_at: "",
    })
}

pub(super) fn delete(app: &App, ctx: &Ctx) -> Reply {
    if !valid_name(&ctx.resource) {
        return invalid_name(Kind::Identity, &ctx.resource).into();
    }
    // Not refused when it is no identity: a database from before identities were checked
    // may hold such a name, and it can still be deleted.
    let id = &lookup_form(&ctx.resource).into_owned();
    if is_admin(&app.admin, id) {
        return Response::error(400, "the admin identity cannot be deleted").into();
    }
    let cmd = Command::DeleteIdentity {
        enclave: ctx.enclave.clone(),
        identity: id.clone(),
    };
    Reply::write(cmd, Kind::Identity, "failed to delete identity")
}

#[derive(Serialize)]
struct SelfAdmin<'a> {
    identity: &'a str,
    admin: bool,
    created_at: String,
}

#[derive(Serialize)]
struct SelfDescription<'a> {
    identity: &'a str,
    #[serde(flatten)]
    record: DescribeIdentity<'a>,
    #[serde(skip_serializing_if = "PatternSet::is_empty")]
    allow: PatternSet,
    #[serde(skip_serializing_if = "PatternSet::is_empty")]
    deny: PatternSet,
}

pub(super) fn describe_self(app: &App, ctx: &Ctx) -> Response {
    let not_found = || Response::error(404, "identity does not exist");
    match ctx.caller {
        Caller::Admin(id) => Response::json(&SelfAdmin {
            identity: id,
            admin: true,
            created_at: timefmt::rfc3339(app.started_at),
        }),
        Caller::Identity { id, .. } => {
            let rec = match app.store.identity(&ctx.enclave, id) {
                Ok(rec) => rec,
                Err(_) => return not_found(),
            };
            let (allow, deny) = match app.store.policy(&ctx.enclave, &rec.policy) {
                Ok(p) => (pattern_set(&p.allow), pattern_set(&p.deny)),
                Err(StoreError::NotFound) => Default::default(),
                Err(err) => return store_error(Kind::Policy, err, "failed to read policy"),
            };
            Response::json(&SelfDescription {
                identity: id,
                record: describe_record(&rec),
                allow,
                deny,
            })
        }
        Caller::Anonymous => not_found(),
    }
}
