//! Access control end to end: policies, identities (with parents, children, expiry and
//! enclave admins), secrets and enclaves, over real TLS with several client certificates,
//! against the real `kes-node` binary and its redb file. Each test has its own server.
//!
//! Contract: spec `kes-api.md` §2, §3, §5, §10.5 and §10.7; `kes-vectors.md` §H.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const NOT_AUTHORIZED: &str = "not authorized: insufficient permissions";
const NOT_SUBSET: &str = "policy is not a subset of parent policy";
const NO_ADMIN_CHILD: &str = "insufficient permissions to create admin identity";
const POLICY_EXISTS: &str = "policy already exists";
const POLICY_NOT_FOUND: &str = "policy does not exist";
const IDENTITY_EXISTS: &str = "identity already exists";
const IDENTITY_NOT_FOUND: &str = "identity does not exist";
const SECRET_EXISTS: &str = "secret already exists";
const SECRET_NOT_FOUND: &str = "secret does not exist";
const KEY_NOT_FOUND: &str = "key does not exist";
const ENCLAVE_EXISTS: &str = "enclave already exists";
const ENCLAVE_NOT_FOUND: &str = "enclave does not exist";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One request, optionally in an enclave (`Kes-Enclave`) and with a JSON body.
#[track_caller]
fn call(
    c: &mut Client,
    method: &str,
    path: &str,
    enclave: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(e) = enclave {
        headers.push(("Kes-Enclave", e));
    }
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    if bytes.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    c.must(method, path, &headers, bytes.as_deref())
}

#[track_caller]
fn get_in(c: &mut Client, path: &str, enclave: &str) -> Response {
    call(c, "GET", path, Some(enclave), None)
}

#[track_caller]
fn put_in(c: &mut Client, path: &str, enclave: &str) -> Response {
    call(c, "PUT", path, Some(enclave), None)
}

#[track_caller]
fn put_json_in(c: &mut Client, path: &str, enclave: &str, body: &Value) -> Response {
    call(c, "PUT", path, Some(enclave), Some(body))
}

#[track_caller]
fn delete_in(c: &mut Client, path: &str, enclave: &str) -> Response {
    call(c, "DELETE", path, Some(enclave), None)
}

#[track_caller]
fn assert_forbidden(resp: &Response) {
    resp.assert_error(403, NOT_AUTHORIZED);
}

/// The sorted field names of a JSON object.
fn fields(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .keys()
        .cloned()
        .collect();
    out.sort();
    out
}

fn refs(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Parses an RFC 3339 timestamp field.
#[track_caller]
fn time_field(v: &Value, field: &str) -> OffsetDateTime {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|err| panic!("{field} {s:?}: {err}"))
}

/// Asserts `created_at` is a timestamp within a minute of now.
#[track_caller]
fn assert_recent(v: &Value, field: &str) {
    let t = time_field(v, field);
    let age = (OffsetDateTime::now_utc() - t).abs();
    assert!(
        age < time::Duration::minutes(1),
        "{field} {t} is not recent"
    );
}

/// `{"p":{},…}`, the wire form of a pattern set.
fn pattern_set(patterns: &[&str]) -> Value {
    Value::Object(
        patterns
            .iter()
            .map(|p| (p.to_string(), json!({})))
            .collect(),
    )
}

/// Creates a policy as `c` (200 expected) in `enclave`.
#[track_caller]
fn create_policy(c: &mut Client, enclave: &str, name: &str, allow: &[&str], deny: &[&str]) {
    let body = json!({"allow": pattern_set(allow), "deny": pattern_set(deny)});
    put_json_in(c, &format!("/v1/policy/create/{name}"), enclave, &body).assert_empty_ok();
}

#[track_caller]
fn create_identity(c: &mut Client, enclave: &str, id: &str, body: &Value) -> Response {
    put_json_in(c, &format!("/v1/identity/create/{id}"), enclave, body)
}

/// The `identities` of an identity listing.
fn identities_of(v: &Value) -> Vec<String> {
    match &v["identities"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
        other => panic!("identities is not an array: {other}"),
    }
}

/// `403` for a non-admin assigning to an identity it did not create.
fn not_created_by_caller(id: &str) -> String {
    format!("cannot assign policy to '{id}': it was not created by the caller")
}

fn policy_name_error(name: &str) -> String {
    format!("policy name '{name}' is empty, too long or contains invalid characters")
}

const D: &str = "default";

// ---------------------------------------------------------------------------------------
// 1. Policies
// ---------------------------------------------------------------------------------------

#[test]
fn policy_create_read_list_delete() {
    let env = Env::new("acc-policy");
    let server = env.start();
    let mut admin = server.admin();
    let admin_id = pki().admin.identity.clone();

    // The current wire form: pattern sets.
    admin
        .put_json(
            "/v1/policy/create/app",
            &json!({
                "allow": {"/v1/key/create/app-*": {}, "/v1/key/describe/app-*": {}},
                "deny": {"/v1/key/create/app-internal*": {}},
            }),
        )
        .assert_empty_ok();
    // The legacy (and YAML) form: lists.
    admin
        .put_json(
            "/v1/policy/create/app-legacy",
            &json!({"allow": ["/v1/status", "/v1/key/list/*"], "deny": ["/v1/key/list/x*"]}),
        )
        .assert_empty_ok();
    // Field names match case-insensitively (Go's decoder); an empty policy is allowed.
    admin
        .put_json("/v1/policy/create/other", &json!({"Allow": ["/v1/api"]}))
        .assert_empty_ok();
    admin
        .put_json("/v1/policy/create/empty", &json!({}))
        .assert_empty_ok();

    // read: name, allow, deny, created_at, created_by.
    let read = admin.get("/v1/policy/read/app").assert_json_ok();
    assert_eq!(
        fields(&read),
        strs(&["allow", "created_at", "created_by", "deny", "name"]),
        "{read}"
    );
    assert_eq!(read["name"], "app");
    assert_eq!(
        read["allow"],
        pattern_set(&["/v1/key/create/app-*", "/v1/key/describe/app-*"])
    );
    assert_eq!(read["deny"], pattern_set(&["/v1/key/create/app-internal*"]));
    assert_eq!(read["created_by"], admin_id.as_str());
    assert_recent(&read, "created_at");

    let read = admin.get("/v1/policy/read/app-legacy").assert_json_ok();
    assert_eq!(
        read["allow"],
        pattern_set(&["/v1/key/list/*", "/v1/status"])
    );
    assert_eq!(read["deny"], pattern_set(&["/v1/key/list/x*"]));
    let read = admin.get("/v1/policy/read/other").assert_json_ok();
    assert_eq!(read["allow"], pattern_set(&["/v1/api"]));

    // describe: name, created_at, created_by — no patterns.
    let desc = admin.get("/v1/policy/describe/app").assert_json_ok();
    assert_eq!(
        fields(&desc),
        strs(&["created_at", "created_by", "name"]),
        "{desc}"
    );
    assert_eq!(desc["name"], "app");
    assert_eq!(desc["created_by"], admin_id.as_str());
    assert_eq!(desc["created_at"], read_created_at(&mut admin, "app"));

    // list: everything, a prefix, a prefix with a trailing `*`, nothing.
    let all = strs(&["app", "app-legacy", "empty", "other"]);
    for pattern in ["", "*"] {
        let list = admin
            .get(&format!("/v1/policy/list/{pattern}"))
            .assert_json_ok();
        assert_eq!(names_of(&list), all, "pattern {pattern:?}");
        assert_eq!(list["continue_at"], "", "{list}");
    }
    for pattern in ["app", "app*", "ap*"] {
        let list = admin
            .get(&format!("/v1/policy/list/{pattern}"))
            .assert_json_ok();
        assert_eq!(
            names_of(&list),
            strs(&["app", "app-legacy"]),
            "pattern {pattern:?}"
        );
    }
    let list = admin.get("/v1/policy/list/app-l*").assert_json_ok();
    assert_eq!(names_of(&list), strs(&["app-legacy"]));
    let list = admin.get("/v1/policy/list/zzz").assert_json_ok();
    assert!(names_of(&list).is_empty(), "{list}");
    admin.get("/v1/policy/list/app-").assert_error(
        400,
        "listing pattern 'app-' is empty, too long or is invalid",
    );

    // Duplicates are refused and leave the first policy unchanged.
    admin
        .put_json("/v1/policy/create/app", &json!({"allow": ["/v1/api"]}))
        .assert_error(400, POLICY_EXISTS);
    let read = admin.get("/v1/policy/read/app").assert_json_ok();
    assert_eq!(
        read["allow"],
        pattern_set(&["/v1/key/create/app-*", "/v1/key/describe/app-*"])
    );

    // Delete, then every lookup is a 404.
    admin
        .delete("/v1/policy/delete/app-legacy")
        .assert_empty_ok();
    admin
        .get("/v1/policy/read/app-legacy")
        .assert_error(404, POLICY_NOT_FOUND);
    admin
        .get("/v1/policy/describe/app-legacy")
        .assert_error(404, POLICY_NOT_FOUND);
    admin
        .delete("/v1/policy/delete/app-legacy")
        .assert_error(404, POLICY_NOT_FOUND);
    let list = admin.get("/v1/policy/list/").assert_json_ok();
    assert_eq!(names_of(&list), strs(&["app", "empty", "other"]));
    // The name is free again.
    admin
        .put_json(
            "/v1/policy/create/app-legacy",
            &json!({"allow": ["/v1/api"]}),
        )
        .assert_empty_ok();

    // Invalid names (the spec's validName): too long, bad characters, leading/trailing '-'.
    let long = "p".repeat(81);
    for (raw, decoded) in [
        (long.as_str(), long.as_str()),
        ("a.b", "a.b"),
        ("-app", "-app"),
        ("app-", "app-"),
        ("a%20b", "a b"),
        ("_", "_"),
    ] {
        admin
            .put_json(&format!("/v1/policy/create/{raw}"), &json!({}))
            .assert_error(400, &policy_name_error(decoded));
        admin
            .get(&format!("/v1/policy/read/{raw}"))
            .assert_error(400, &policy_name_error(decoded));
        admin
            .get(&format!("/v1/policy/describe/{raw}"))
            .assert_error(400, &policy_name_error(decoded));
        admin
            .delete(&format!("/v1/policy/delete/{raw}"))
            .assert_error(400, &policy_name_error(decoded));
    }
    admin
        .put_json("/v1/policy/create/", &json!({}))
        .assert_error(400, &policy_name_error(""));
    // 80 characters are fine.
    let max = "p".repeat(80);
    admin
        .put_json(&format!("/v1/policy/create/{max}"), &json!({}))
        .assert_empty_ok();

    // A body that is not a policy.
    admin
        .put_body("/v1/policy/create/bad", b"[1,2]")
        .assert_error(400, "invalid policy request body");
    admin
        .put_json("/v1/policy/create/bad", &json!({"allow": "/v1/status"}))
        .assert_error(400, "invalid policy request body");
    admin
        .get("/v1/policy/read/bad")
        .assert_error(404, POLICY_NOT_FOUND);
}

fn read_created_at(admin: &mut Client, name: &str) -> Value {
    admin
        .get(&format!("/v1/policy/read/{name}"))
        .assert_json_ok()["created_at"]
        .clone()
}

// ---------------------------------------------------------------------------------------
// 2. Identities and policy enforcement
// ---------------------------------------------------------------------------------------

#[test]
fn identity_policies_are_enforced() {
    let env = Env::new("acc-ident");
    let server = env.start();
    let mut admin = server.admin();
    let admin_id = pki().admin.identity.clone();
    let alice = self_signed_client("alice");
    let bob = self_signed_client("bob");
    let carol = self_signed_client("carol");
    let dave = self_signed_client("dave");

    create_policy(
        &mut admin,
        D,
        "app",
        &[
            "/v1/key/create/app-*",
            "/v1/key/describe/app-*",
            "/v1/key/generate/app-*",
            "/v1/key/delete/app-2",
            "/v1/status",
        ],
        &["/v1/key/create/app-internal*", "/v1/key/describe/app-x"],
    );
    create_policy(&mut admin, D, "empty", &[], &[]);

    create_identity(&mut admin, D, &alice.identity, &json!({"policy": "app"})).assert_empty_ok();
    let mut a = server.client(&alice);

    // Allowed: prefix patterns (crossing '/' is allowed by the matcher, but names have none).
    a.put("/v1/key/create/app-1").assert_empty_ok();
    a.put("/v1/key/create/app-2").assert_empty_ok();
    let d = a.get("/v1/key/describe/app-1").assert_json_ok();
    assert_eq!(d["name"], "app-1");
    assert_eq!(d["created_by"], alice.identity.as_str());
    let (_, ct) = a.generate("app-1", None);
    assert!(!ct.is_empty());
    // Exact pattern.
    a.get("/v1/status").assert_json_ok();
    // Deny wins over allow (prefix deny and exact deny).
    assert_forbidden(&a.put("/v1/key/create/app-internal"));
    assert_forbidden(&a.put("/v1/key/create/app-internal-2"));
    a.get("/v1/key/describe/app-2").assert_json_ok();
    assert_forbidden(&a.get("/v1/key/describe/app-x"));
    // Outside every allow pattern.
    assert_forbidden(&a.put("/v1/key/create/other"));
    assert_forbidden(&a.delete("/v1/key/delete/app-1"));
    assert_forbidden(&a.get("/v1/key/list/"));
    assert_forbidden(&a.get("/v1/api"));
    assert_forbidden(&a.put_json("/v1/policy/create/mine", &json!({})));
    assert_forbidden(&a.get("/v1/identity/list/"));
    assert_forbidden(&a.put("/v1/enclave/create/mine"));
    // The policy is checked before the name (upstream's order): an invalid name outside the
    // policy is a 403, inside it a 400.
    assert_forbidden(&a.put("/v1/key/create/-bad"));
    a.put("/v1/key/create/app-").assert_error(
        400,
        "key name 'app-' is empty, too long or contains invalid characters",
    );
    // An exact pattern allows that path only, not longer ones.
    assert_forbidden(&a.delete("/v1/key/delete/app-20"));
    assert_forbidden(&a.delete("/v1/key/delete/app-"));
    a.put("/v1/key/create/app-20").assert_empty_ok();
    a.delete("/v1/key/delete/app-2").assert_empty_ok();
    a.delete("/v1/key/delete/app-2")
        .assert_error(404, "key does not exist");
    assert_forbidden(&a.delete("/v1/key/delete/app-20"));
    // The admin still sees alice's keys.
    admin.get("/v1/key/describe/app-1").assert_json_ok();

    // Self-description: the flat shape with the policy's patterns.
    let me = a.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(
        fields(&me),
        strs(&[
            "allow",
            "created_at",
            "created_by",
            "deny",
            "identity",
            "policy"
        ]),
        "{me}"
    );
    assert_eq!(me["identity"], alice.identity.as_str());
    assert_eq!(me["policy"], "app");
    assert_eq!(
        me["allow"],
        pattern_set(&[
            "/v1/key/create/app-*",
            "/v1/key/describe/app-*",
            "/v1/key/delete/app-2",
            "/v1/key/generate/app-*",
            "/v1/status",
        ])
    );
    assert_eq!(
        me["deny"],
        pattern_set(&["/v1/key/create/app-internal*", "/v1/key/describe/app-x"])
    );
    assert_eq!(me["created_by"], admin_id.as_str());
    assert_recent(&me, "created_at");

    // The admin's self-description.
    let me = admin.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(
        fields(&me),
        strs(&["admin", "created_at", "identity"]),
        "{me}"
    );
    assert_eq!(me["identity"], admin_id.as_str());
    assert_eq!(me["admin"], true);
    time_field(&me, "created_at");

    // Unknown clients: refused everywhere, and unknown to self-describe.
    let mut unknown = server.client(&dave);
    assert_forbidden(&unknown.get("/v1/status"));
    assert_forbidden(&unknown.put("/v1/key/create/app-3"));
    unknown
        .get("/v1/identity/self/describe")
        .assert_error(404, IDENTITY_NOT_FOUND);

    // An empty policy refuses everything (self-describe needs no policy).
    create_identity(&mut admin, D, &bob.identity, &json!({"policy": "empty"})).assert_empty_ok();
    let mut b = server.client(&bob);
    assert_forbidden(&b.get("/v1/status"));
    assert_forbidden(&b.put("/v1/key/create/app-3"));
    assert_forbidden(&b.get("/v1/key/describe/app-1"));
    let me = b.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(
        fields(&me),
        strs(&["created_at", "created_by", "identity", "policy"]),
        "{me}"
    );
    assert_eq!(me["policy"], "empty");

    // Legacy assign: creates carol with the policy, and re-assigns bob.
    admin
        .post_json(
            "/v1/policy/assign/app",
            &json!({"identity": carol.identity}),
        )
        .assert_empty_ok();
    let mut c = server.client(&carol);
    c.put("/v1/key/create/app-carol").assert_empty_ok();
    assert_forbidden(&c.put("/v1/key/create/carol"));
    admin
        .post_json("/v1/policy/assign/app", &json!({"identity": bob.identity}))
        .assert_empty_ok();
    b.get("/v1/status").assert_json_ok();
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", bob.identity))
        .assert_json_ok();
    assert_eq!(desc["policy"], "app");
    // Assigning a missing policy, or to the admin.
    admin
        .post_json(
            "/v1/policy/assign/nope",
            &json!({"identity": dave.identity}),
        )
        .assert_error(404, POLICY_NOT_FOUND);
    admin
        .post_json("/v1/policy/assign/app", &json!({"identity": admin_id}))
        .assert_error(400, "cannot assign policy to system admin");
    admin
        .post_json("/v1/policy/assign/app", &json!({"identity": "not hex!"}))
        .assert_error(
            400,
            "identity 'not hex!' is empty, too long or contains invalid characters",
        );
    // Only POST is the assign method.
    let resp = admin.put_json("/v1/policy/assign/app", &json!({"identity": dave.identity}));
    resp.assert_error(405, "received method 'PUT' expected 'POST'");
    assert_forbidden(&unknown.get("/v1/status"));

    // Describe identities.
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", alice.identity))
        .assert_json_ok();
    assert_eq!(
        fields(&desc),
        strs(&["created_at", "created_by", "policy"]),
        "{desc}"
    );
    assert_eq!(desc["policy"], "app");
    assert_eq!(desc["created_by"], admin_id.as_str());
    assert_recent(&desc, "created_at");
    let desc = admin
        .get(&format!("/v1/identity/describe/{admin_id}"))
        .assert_json_ok();
    assert_eq!(fields(&desc), strs(&["admin", "created_at"]), "{desc}");
    assert_eq!(desc["admin"], true);
    admin
        .get(&format!("/v1/identity/describe/{}", dave.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);

    // Create errors: duplicates, the admin, a missing policy, a bad body, a bad name.
    create_identity(&mut admin, D, &alice.identity, &json!({"policy": "empty"}))
        .assert_error(400, IDENTITY_EXISTS);
    create_identity(&mut admin, D, &admin_id, &json!({"policy": "empty"}))
        .assert_error(400, IDENTITY_EXISTS);
    create_identity(&mut admin, D, &dave.identity, &json!({"policy": "nope"}))
        .assert_error(404, POLICY_NOT_FOUND);
    create_identity(&mut admin, D, &dave.identity, &json!({"policy": 5}))
        .assert_error(400, "invalid request body");
    create_identity(&mut admin, D, "a.b", &json!({"policy": "app"})).assert_error(
        400,
        "identity 'a.b' is empty, too long or contains invalid characters",
    );
    assert_forbidden(&unknown.get("/v1/status"));

    // List identities: all (the admin included), by prefix, with a trailing '*'.
    let mut want: Vec<String> = vec![
        admin_id.clone(),
        alice.identity.clone(),
        bob.identity.clone(),
        carol.identity.clone(),
    ];
    want.sort();
    for pattern in ["", "*"] {
        let list = admin
            .get(&format!("/v1/identity/list/{pattern}"))
            .assert_json_ok();
        assert_eq!(fields(&list), strs(&["continue_at", "identities"]));
        assert_eq!(identities_of(&list), want, "pattern {pattern:?}");
    }
    let prefix = &alice.identity[..6];
    let list = admin
        .get(&format!("/v1/identity/list/{prefix}*"))
        .assert_json_ok();
    let got = identities_of(&list);
    assert!(got.contains(&alice.identity), "{list}");
    assert!(got.iter().all(|id| id.starts_with(prefix)), "{list}");
    let list = admin
        .get(&format!("/v1/identity/list/{}", alice.identity))
        .assert_json_ok();
    assert_eq!(identities_of(&list), vec![alice.identity.clone()]);

    // Deleting an identity: its requests are refused, describe is a 404.
    admin
        .delete(&format!("/v1/identity/delete/{}", alice.identity))
        .assert_empty_ok();
    assert_forbidden(&a.get("/v1/status"));
    a.get("/v1/identity/self/describe")
        .assert_error(404, IDENTITY_NOT_FOUND);
    admin
        .get(&format!("/v1/identity/describe/{}", alice.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    admin
        .delete(&format!("/v1/identity/delete/{}", alice.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    admin
        .delete(&format!("/v1/identity/delete/{admin_id}"))
        .assert_error(400, "the admin identity cannot be deleted");

    // Deleting the policy disables its identities; recreating it brings them back.
    admin.delete("/v1/policy/delete/app").assert_empty_ok();
    assert_forbidden(&c.get("/v1/status"));
    let me = c.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(me["policy"], "app");
    create_policy(&mut admin, D, "app", &["/v1/status"], &[]);
    c.get("/v1/status").assert_json_ok();
}

// ---------------------------------------------------------------------------------------
// 3. Parents, children, the subset rule and enclave admins
// ---------------------------------------------------------------------------------------

#[test]
fn child_identities_follow_the_subset_rule() {
    let env = Env::new("acc-child");
    let server = env.start();
    let mut admin = server.admin();
    let parent = self_signed_client("parent");
    let child = self_signed_client("child");
    let child2 = self_signed_client("child2");
    let grandchild = self_signed_client("grandchild");

    create_policy(
        &mut admin,
        D,
        "parent",
        &[
            "/v1/identity/create/*",
            "/v1/identity/describe/*",
            "/v1/policy/*",
            "/v1/key/create/p-*",
            "/v1/key/describe/p-*",
        ],
        &["/v1/key/create/p-secret*"],
    );
    create_identity(
        &mut admin,
        D,
        &parent.identity,
        &json!({"policy": "parent"}),
    )
    .assert_empty_ok();
    let mut p = server.client(&parent);

    // The parent may create policies (its policy allows /v1/policy/*).
    create_policy(&mut p, D, "sub", &["/v1/key/create/p-1*"], &[]);
    // A subset that repeats the parent's deny rule (and may narrow further).
    create_policy(
        &mut p,
        D,
        "sub-deny",
        &["/v1/key/create/p-*", "/v1/identity/create/*"],
        &["/v1/key/create/p-secret*"],
    );
    create_policy(&mut p, D, "wider", &["/v1/key/delete/*"], &[]);
    create_policy(&mut p, D, "no-deny", &["/v1/key/create/p-*"], &[]);
    let read = p.get("/v1/policy/read/sub").assert_json_ok();
    assert_eq!(read["created_by"], parent.identity.as_str());

    // Subset: fine. The child may do what its own policy allows.
    create_identity(&mut p, D, &child.identity, &json!({"policy": "sub"})).assert_empty_ok();
    let mut c = server.client(&child);
    c.put("/v1/key/create/p-1").assert_empty_ok();
    c.put("/v1/key/create/p-1x").assert_empty_ok();
    assert_forbidden(&c.put("/v1/key/create/p-2"));
    assert_forbidden(&c.get("/v1/key/describe/p-1"));
    let desc = p
        .get(&format!("/v1/identity/describe/{}", child.identity))
        .assert_json_ok();
    assert_eq!(desc["policy"], "sub");
    assert_eq!(desc["created_by"], parent.identity.as_str());
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", parent.identity))
        .assert_json_ok();
    assert_eq!(desc["children"], json!([child.identity]), "{desc}");
    let me = p.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(me["children"], json!([child.identity]), "{me}");
    assert_eq!(me["policy"], "parent");

    // Not a subset: an allow rule the parent lacks, or a dropped parent deny rule.
    create_identity(&mut p, D, &child2.identity, &json!({"policy": "wider"}))
        .assert_error(403, NOT_SUBSET);
    create_identity(&mut p, D, &child2.identity, &json!({"policy": "no-deny"}))
        .assert_error(403, NOT_SUBSET);
    // A child policy that does not exist is no subset either.
    create_identity(&mut p, D, &child2.identity, &json!({"policy": "nope"}))
        .assert_error(403, NOT_SUBSET);
    // Admin children need an admin parent.
    create_identity(&mut p, D, &child2.identity, &json!({"admin": true}))
        .assert_error(403, NO_ADMIN_CHILD);
    create_identity(
        &mut p,
        D,
        &child2.identity,
        &json!({"policy": "sub", "admin": true}),
    )
    .assert_error(403, NO_ADMIN_CHILD);
    admin
        .get(&format!("/v1/identity/describe/{}", child2.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    assert_forbidden(&server.client(&child2).put("/v1/key/create/p-1y"));

    // A child with the parent's deny rule is a subset; it can create a grandchild.
    create_identity(&mut p, D, &child2.identity, &json!({"policy": "sub-deny"})).assert_empty_ok();
    let mut c2 = server.client(&child2);
    c2.put("/v1/key/create/p-c2").assert_empty_ok();
    assert_forbidden(&c2.put("/v1/key/create/p-secret"));
    create_identity(&mut c2, D, &grandchild.identity, &json!({"policy": "sub"})).assert_empty_ok();
    let mut g = server.client(&grandchild);
    g.put("/v1/key/create/p-1g").assert_empty_ok();

    // The child may not use the parent's rights (e.g. describe).
    assert_forbidden(&c.get(&format!("/v1/identity/describe/{}", parent.identity)));

    let desc = admin
        .get(&format!("/v1/identity/describe/{}", parent.identity))
        .assert_json_ok();
    let kids: BTreeSet<String> = desc["children"]
        .as_array()
        .unwrap_or_else(|| panic!("{desc}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kids,
        BTreeSet::from([child.identity.clone(), child2.identity.clone()])
    );

    // Deleting the parent deletes the whole tree.
    admin
        .delete(&format!("/v1/identity/delete/{}", parent.identity))
        .assert_empty_ok();
    for (client, id) in [
        (&mut p, &parent.identity),
        (&mut c, &child.identity),
        (&mut c2, &child2.identity),
        (&mut g, &grandchild.identity),
    ] {
        assert_forbidden(&client.put("/v1/key/create/p-1z"));
        admin
            .get(&format!("/v1/identity/describe/{id}"))
            .assert_error(404, IDENTITY_NOT_FOUND);
    }
    let list = admin.get("/v1/identity/list/").assert_json_ok();
    assert_eq!(
        identities_of(&list),
        vec![pki().admin.identity.clone()],
        "{list}"
    );
    // Deleting a child alone removes it from its parent's children.
    create_identity(
        &mut admin,
        D,
        &parent.identity,
        &json!({"policy": "parent"}),
    )
    .assert_empty_ok();
    create_identity(&mut p, D, &child.identity, &json!({"policy": "sub"})).assert_empty_ok();
    admin
        .delete(&format!("/v1/identity/delete/{}", child.identity))
        .assert_empty_ok();
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", parent.identity))
        .assert_json_ok();
    assert!(desc.get("children").is_none(), "{desc}");
    p.put("/v1/key/create/p-after").assert_empty_ok();
}

/// `kes-vectors.md` §H1 over the wire: prefix and exact patterns, deny before allow.
#[test]
fn vectors_h1_policy_verify() {
    let env = Env::new("acc-h1");
    let server = env.start();
    let mut admin = server.admin();
    /// (allow, deny, [(path, allowed)])
    type Row<'a> = (&'a [&'a str], &'a [&'a str], &'a [(&'a str, bool)]);
    let rows: &[Row] = &[
        (
            &[],
            &[],
            &[
                ("/v1/status", false),
                ("/v1/key/create/my-key", false),
                ("/v1/identity/list/a", false),
            ],
        ),
        (
            &["/v1/status"],
            &[],
            &[
                ("/v1/status", true),
                ("/v1/key/create/my-key", false),
                ("/v1/identity/list/a", false),
            ],
        ),
        (
            &["/v1/key/create/my*", "/v1/key/create/your*"],
            &[],
            &[
                ("/v1/key/create/my-key", true),
                ("/v1/key/create/your-key", true),
                ("/v1/identity/list/somekey", false),
            ],
        ),
        (
            &["/v1/key/create/my*", "/v1/key/create/your*"],
            &["/v1/key/create/my-key*"],
            &[
                ("/v1/key/create/my-key", false),
                ("/v1/key/create/my-key1", false),
                ("/v1/key/create/my-minio-key", true),
                ("/v1/key/create/your-minio-key", true),
            ],
        ),
    ];
    for (i, (allow, deny, cases)) in rows.iter().enumerate() {
        let cert = self_signed_client(&format!("h1-{i}"));
        create_policy(&mut admin, D, &format!("h1-{i}"), allow, deny);
        create_identity(
            &mut admin,
            D,
            &cert.identity,
            &json!({"policy": format!("h1-{i}")}),
        )
        .assert_empty_ok();
        let mut c = server.client(&cert);
        for (path, allowed) in cases.iter() {
            // The route's own method: the method is checked before the policy (spec §0.1).
            let resp = if path.starts_with("/v1/key/create/") {
                c.put(path)
            } else {
                c.get(path)
            };
            if *allowed {
                assert_ne!(resp.status, 403, "row {i}: PUT {path}: {}", resp.text());
            } else {
                assert_forbidden(&resp);
            }
        }
    }
}

/// `kes-vectors.md` §H2 over the wire: a parent whose policy is B creates a child whose
/// policy is A; 200 iff A ⊆ B. (B also allows `/v1/identity/create/*` so the parent may
/// create identities at all; adding an allow rule changes none of the table's answers.)
#[test]
fn vectors_h2_subset_rule_for_children() {
    let env = Env::new("acc-h2");
    let server = env.start();
    let mut admin = server.admin();
    let ops = ["create", "describe", "generate", "decrypt", "encrypt"];
    let ops_all: Vec<String> = ops.iter().map(|o| format!("/v1/key/{o}/*")).collect();
    let ops_internal_star: Vec<String> = ops
        .iter()
        .map(|o| format!("/v1/key/{o}/internal*"))
        .collect();
    let ops_internal_dir: Vec<String> = ops
        .iter()
        .map(|o| format!("/v1/key/{o}/internal/*"))
        .collect();
    let r = |v: &[String]| -> Vec<String> { v.to_vec() };
    let o = |v: &[&str]| -> Vec<String> { strs(v) };
    let row7_a_allow = o(&[
        "/v1/policy/describe/minio",
        "/v1/policy/show/minio",
        "/v1/policy/list/minio",
        "/v1/identity/delete/*",
    ]);
    let row7_b_allow = o(&[
        "/v1/identity/create/*",
        "/v1/identity/describe/*",
        "/v1/identity/list/*",
        "/v1/identity/delete/*",
        "/v1/policy/describe/minio",
        "/v1/policy/show/minio",
        "/v1/policy/list/minio",
    ]);
    let row7_b_deny = o(&[
        "/v1/identity/delete/88acf8c3220a69497f2fa1fc7f52f56b9ff2996402d9379a49fbaffe2b56fdfd",
    ]);
    // (A allow, A deny, B allow, B deny, A ⊆ B)
    #[allow(clippy::type_complexity)]
    let rows: Vec<(Vec<String>, Vec<String>, Vec<String>, Vec<String>, bool)> = vec![
        (o(&[]), o(&[]), o(&[]), o(&[]), true),
        (
            o(&["/v1/key/create/*"]),
            o(&[]),
            o(&["/v1/key/create/*"]),
            o(&[]),
            true,
        ),
        (
            o(&["/v1/key/create/*"]),
            o(&["/v1/policy/create/*"]),
            o(&["/v1/key/create/*"]),
            o(&["/v1/policy/create/*"]),
            true,
        ),
        (o(&[]), o(&[]), o(&["/v1/status"]), o(&[]), true),
        (o(&[]), o(&["/v1/status"]), o(&[]), o(&[]), true),
        (
            o(&["/v1/key/create/my-key", "/v1/key/create/foo*"]),
            o(&[]),
            o(&["/v1/key/create/*"]),
            o(&[]),
            true,
        ),
        (
            r(&ops_all),
            r(&ops_internal_star),
            r(&ops_all),
            r(&ops_internal_dir),
            true,
        ),
        (
            row7_a_allow.clone(),
            o(&["/v1/identity/delete/88*"]),
            row7_b_allow.clone(),
            row7_b_deny.clone(),
            true,
        ),
        (o(&["/v1/status"]), o(&[]), o(&[]), o(&[]), false),
        (
            o(&["/v1/key/create/*"]),
            o(&[]),
            o(&["/v1/key/create/*"]),
            o(&["/v1/key/create/my-key"]),
            false,
        ),
        (
            o(&["/v1/key/create/*"]),
            o(&["/v1/key/create/internal*"]),
            o(&["/v1/key/create/*"]),
            o(&["/v1/key/create/my-key"]),
            false,
        ),
        (
            row7_a_allow,
            o(&["/v1/identity/delete/89*"]),
            row7_b_allow,
            row7_b_deny,
            false,
        ),
        // kes@pr394 internal/auth/example_test.go.
        (
            o(&["/v1/key/describe/*", "/v1/key/generate/*"]),
            o(&[]),
            o(&[
                "/v1/key/create/*",
                "/v1/key/describe/*",
                "/v1/key/generate/*",
                "/v1/key/decrypt/*",
                "/v1/policy/describe/minio",
                "/v1/policy/show/minio",
            ]),
            o(&[]),
            true,
        ),
        // A parent deny rule broader than the child's allow rule (upstream's rule misses it).
        (
            o(&["/v1/key/create/ab*"]),
            o(&[]),
            o(&["/v1/key/create/*"]),
            o(&["/v1/key/create/a*"]),
            false,
        ),
        // A prefix deny over an exact allow.
        (
            o(&["/v1/key/create/abc"]),
            o(&[]),
            o(&["/v1/key/create/*"]),
            o(&["/v1/key/create/a*"]),
            false,
        ),
    ];
    for (i, (a_allow, a_deny, b_allow, b_deny, subset)) in rows.into_iter().enumerate() {
        let mut b_allow = b_allow;
        if !b_allow.iter().any(|p| p == "/v1/identity/create/*") {
            b_allow.push("/v1/identity/create/*".into());
        }
        create_policy(
            &mut admin,
            D,
            &format!("a{i}"),
            &refs(&a_allow),
            &refs(&a_deny),
        );
        create_policy(
            &mut admin,
            D,
            &format!("b{i}"),
            &refs(&b_allow),
            &refs(&b_deny),
        );
        let parent = self_signed_client(&format!("h2-{i}"));
        create_identity(
            &mut admin,
            D,
            &parent.identity,
            &json!({"policy": format!("b{i}")}),
        )
        .assert_empty_ok();
        let child = format!("{:064x}", i + 1);
        let resp = create_identity(
            &mut server.client(&parent),
            D,
            &child,
            &json!({"policy": format!("a{i}")}),
        );
        if subset {
            assert_eq!((resp.status, resp.text()), (200, String::new()), "row {i}");
        } else {
            assert_eq!(
                (resp.status, resp.text()),
                (403, kes_error_body(NOT_SUBSET)),
                "row {i}"
            );
        }
    }
}

/// A long chain of identities, each created by the one before: deleting the first deletes
/// them all (no depth limit makes the head undeletable).
#[test]
fn deleting_the_head_of_a_long_chain_deletes_the_chain() {
    let env = Env::new("acc-chain");
    let server = env.start();
    let mut admin = server.admin();
    create_policy(
        &mut admin,
        D,
        "maker",
        &["/v1/identity/create/*", "/v1/status"],
        &[],
    );
    let chain: Vec<ClientCert> = (0..70)
        .map(|i| self_signed_client(&format!("link-{i}")))
        .collect();
    create_identity(
        &mut admin,
        D,
        &chain[0].identity,
        &json!({"policy": "maker"}),
    )
    .assert_empty_ok();
    for pair in chain.windows(2) {
        let mut c = server.client(&pair[0]);
        create_identity(&mut c, D, &pair[1].identity, &json!({"policy": "maker"}))
            .assert_empty_ok();
    }
    let mut last = server.client(&chain[69]);
    last.get("/v1/status").assert_json_ok();
    admin
        .delete(&format!("/v1/identity/delete/{}", chain[0].identity))
        .assert_empty_ok();
    assert_forbidden(&last.get("/v1/status"));
    let list = admin.get("/v1/identity/list/").assert_json_ok();
    assert_eq!(identities_of(&list), vec![pki().admin.identity.clone()]);
}

/// The legacy assign route (v0.19–v0.22 clients) may not hand out more than the caller has:
/// no self-assignment (upstream's 403), only to identities the caller created (issue 13), and,
/// as for created children, only subsets of the caller's own policy. The admin may re-assign
/// anyone: the identity then moves to the admin.
#[test]
fn legacy_assign_follows_the_parent_rules() {
    let env = Env::new("acc-assign");
    let server = env.start();
    let mut admin = server.admin();
    let admin_id = pki().admin.identity.clone();
    let x = self_signed_client("x");
    let y = self_signed_client("y");
    let z = self_signed_client("z");

    create_policy(
        &mut admin,
        D,
        "assigner",
        &[
            "/v1/policy/assign/*",
            "/v1/identity/create/*",
            "/v1/key/create/a-*",
        ],
        &[],
    );
    create_policy(&mut admin, D, "keys", &["/v1/key/create/a-*"], &[]);
    create_policy(&mut admin, D, "all", &["/v1/*"], &[]);
    create_identity(&mut admin, D, &x.identity, &json!({"policy": "assigner"})).assert_empty_ok();
    let mut cx = server.client(&x);

    // Not to itself (upstream v0.22: 403 "identity cannot assign policy to itself").
    cx.post_json("/v1/policy/assign/all", &json!({"identity": x.identity}))
        .assert_error(403, "identity cannot assign policy to itself");
    cx.post_json("/v1/policy/assign/keys", &json!({"identity": x.identity}))
        .assert_error(403, "identity cannot assign policy to itself");
    // Never creates an identity (issue 13): an unknown one is 404 and stays unknown.
    cx.post_json("/v1/policy/assign/keys", &json!({"identity": y.identity}))
        .assert_error(404, IDENTITY_NOT_FOUND);
    admin
        .get(&format!("/v1/identity/describe/{}", y.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    assert_forbidden(&server.client(&y).delete("/v1/key/delete/a-1"));
    // Not to the admin.
    cx.post_json("/v1/policy/assign/keys", &json!({"identity": admin_id}))
        .assert_error(400, "cannot assign policy to system admin");

    // To its own child: only the policy changes, and not to more than x has.
    create_policy(&mut admin, D, "keys-b", &["/v1/key/create/a-b*"], &[]);
    create_identity(&mut cx, D, &y.identity, &json!({"policy": "keys-b"})).assert_empty_ok();
    let mut cy = server.client(&y);
    assert_forbidden(&cy.put("/v1/key/create/a-y"));
    cx.post_json("/v1/policy/assign/all", &json!({"identity": y.identity}))
        .assert_error(403, NOT_SUBSET);
    cx.post_json("/v1/policy/assign/keys", &json!({"identity": y.identity}))
        .assert_empty_ok();
    cy.put("/v1/key/create/a-y").assert_empty_ok();
    assert_forbidden(&cy.put("/v1/key/create/b-y"));
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", y.identity))
        .assert_json_ok();
    assert_eq!(desc["created_by"], x.identity.as_str(), "{desc}");
    assert_eq!(desc["policy"], "keys");

    // The escalation the rules prevent: x's child may not hand x (or anyone) more rights.
    create_policy(
        &mut admin,
        D,
        "assign-keys",
        &["/v1/policy/assign/*", "/v1/key/create/a-*"],
        &[],
    );
    create_identity(&mut cx, D, &z.identity, &json!({"policy": "assign-keys"})).assert_empty_ok();
    let mut cz = server.client(&z);
    cz.post_json("/v1/policy/assign/all", &json!({"identity": x.identity}))
        .assert_error(403, &not_created_by_caller(&x.identity));
    cz.post_json("/v1/policy/assign/keys", &json!({"identity": y.identity}))
        .assert_error(403, &not_created_by_caller(&y.identity));
    assert_forbidden(&cx.delete("/v1/key/delete/a-y"));

    // The admin re-assigns y: y leaves x's children, so deleting x no longer deletes y.
    admin
        .post_json("/v1/policy/assign/all", &json!({"identity": y.identity}))
        .assert_empty_ok();
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", x.identity))
        .assert_json_ok();
    assert_eq!(desc["children"], json!([z.identity]), "{desc}");
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", y.identity))
        .assert_json_ok();
    assert_eq!(desc["created_by"], admin_id.as_str(), "{desc}");
    cy.delete("/v1/key/delete/a-y").assert_empty_ok();
    admin
        .delete(&format!("/v1/identity/delete/{}", x.identity))
        .assert_empty_ok();
    admin
        .get(&format!("/v1/identity/describe/{}", z.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    cy.put("/v1/key/create/a-y2").assert_empty_ok();
    admin
        .get(&format!("/v1/identity/describe/{}", y.identity))
        .assert_json_ok();
}

#[test]
fn enclave_admins_rule_their_enclave_only() {
    let env = Env::new("acc-eadmin");
    let server = env.start();
    let mut admin = server.admin();
    let boss = self_signed_client("boss");
    let worker = self_signed_client("worker");
    let deputy = self_signed_client("deputy");
    const T: &str = "tenant-a";

    admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
    admin.put("/v1/enclave/create/tenant-b").assert_empty_ok();
    create_identity(&mut admin, T, &boss.identity, &json!({"admin": true})).assert_empty_ok();
    let desc = get_in(
        &mut admin,
        &format!("/v1/identity/describe/{}", boss.identity),
        T,
    )
    .assert_json_ok();
    assert_eq!(desc["admin"], true, "{desc}");
    assert!(desc.get("policy").is_none(), "{desc}");

    let mut b = server.client(&boss);
    // Anything inside the enclave.
    put_in(&mut b, "/v1/key/create/k1", T).assert_empty_ok();
    get_in(&mut b, "/v1/key/describe/k1", T).assert_json_ok();
    let list = get_in(&mut b, "/v1/key/list/", T).assert_json_ok();
    assert_eq!(names_of(&list), strs(&["k1"]));
    delete_in(&mut b, "/v1/key/delete/k1", T).assert_empty_ok();
    create_policy(&mut b, T, "wide", &["/v1/key/*"], &[]);
    put_json_in(
        &mut b,
        "/v1/secret/create/s1",
        T,
        &json!({"secret": b64(b"x")}),
    )
    .assert_empty_ok();
    get_in(&mut b, "/v1/status", T).assert_json_ok();
    get_in(&mut b, "/v1/enclave/describe/tenant-a", T).assert_json_ok();
    // No subset rule for an enclave admin: any policy, and admin children.
    create_identity(&mut b, T, &worker.identity, &json!({"policy": "wide"})).assert_empty_ok();
    create_identity(&mut b, T, &deputy.identity, &json!({"admin": true})).assert_empty_ok();
    let mut w = server.client(&worker);
    put_in(&mut w, "/v1/key/create/w1", T).assert_empty_ok();
    assert_forbidden(&get_in(&mut w, "/v1/status", T));
    let mut dep = server.client(&deputy);
    put_in(&mut dep, "/v1/key/create/d1", T).assert_empty_ok();

    // But not enclaves themselves: creating or deleting one is for the cluster admin.
    for client in [&mut b, &mut dep] {
        assert_forbidden(&put_in(client, "/v1/enclave/create/tenant-c", T));
        assert_forbidden(&client.put("/v1/enclave/create/tenant-c"));
        assert_forbidden(&delete_in(client, "/v1/enclave/delete/tenant-a", T));
        assert_forbidden(&delete_in(client, "/v1/enclave/delete/tenant-b", T));
    }
    admin
        .get("/v1/enclave/describe/tenant-c")
        .assert_error(404, ENCLAVE_NOT_FOUND);

    // Nor any other enclave.
    assert_forbidden(&b.put("/v1/key/create/k2"));
    assert_forbidden(&b.get("/v1/status"));
    assert_forbidden(&put_in(&mut b, "/v1/key/create/k2", "tenant-b"));
    assert_forbidden(&put_in(&mut b, "/v1/key/create/k2", "tenant-none"));
    b.get("/v1/identity/self/describe")
        .assert_error(404, IDENTITY_NOT_FOUND);
    let me = get_in(&mut b, "/v1/identity/self/describe", T).assert_json_ok();
    assert_eq!(me["identity"], boss.identity.as_str());
    assert_eq!(me["admin"], true);

    // Deleting the enclave admin deletes what it created.
    delete_in(
        &mut admin,
        &format!("/v1/identity/delete/{}", boss.identity),
        T,
    )
    .assert_empty_ok();
    assert_forbidden(&put_in(&mut w, "/v1/key/create/w2", T));
    assert_forbidden(&put_in(&mut dep, "/v1/key/create/d2", T));
    let list = get_in(&mut admin, "/v1/identity/list/", T).assert_json_ok();
    assert_eq!(identities_of(&list), vec![pki().admin.identity.clone()]);
}

// ---------------------------------------------------------------------------------------
// 4. Expiry
// ---------------------------------------------------------------------------------------

#[test]
fn identities_expire_after_their_ttl() {
    let env = Env::new("acc-ttl");
    let server = env.start();
    let mut admin = server.admin();
    let temp = self_signed_client("temp");
    let kid = self_signed_client("kid");

    create_policy(
        &mut admin,
        D,
        "status",
        &["/v1/status", "/v1/identity/create/*", "/v1/policy/assign/*"],
        &[],
    );
    create_policy(&mut admin, D, "only-status", &["/v1/status"], &[]);
    create_identity(
        &mut admin,
        D,
        &temp.identity,
        &json!({"policy": "status", "ttl": "3s"}),
    )
    .assert_empty_ok();
    let mut t = server.client(&temp);
    t.get("/v1/status").assert_json_ok();

    let desc = admin
        .get(&format!("/v1/identity/describe/{}", temp.identity))
        .assert_json_ok();
    assert_eq!(
        fields(&desc),
        strs(&["created_at", "created_by", "expires_at", "policy", "ttl"]),
        "{desc}"
    );
    assert_eq!(desc["ttl"], "3s");
    let expires = time_field(&desc, "expires_at");
    let created_at = time_field(&desc, "created_at");
    assert_eq!(expires - created_at, time::Duration::seconds(3), "{desc}");
    let me = t.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(me["ttl"], "3s");
    assert_eq!(me["expires_at"], desc["expires_at"]);

    // A child asking for more time than its parent has left is capped at the parent's expiry.
    create_identity(
        &mut t,
        D,
        &kid.identity,
        &json!({"policy": "only-status", "ttl": "1h"}),
    )
    .assert_empty_ok();
    let kdesc = admin
        .get(&format!("/v1/identity/describe/{}", kid.identity))
        .assert_json_ok();
    assert_eq!(kdesc["expires_at"], desc["expires_at"], "{kdesc} vs {desc}");
    let ttl = kdesc["ttl"].as_str().unwrap_or_default();
    let secs: f64 = ttl
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("capped ttl {ttl:?} is not a few seconds"));
    assert!(secs > 0.0 && secs <= 3.0, "capped ttl {ttl:?}");
    let mut k = server.client(&kid);
    k.get("/v1/status").assert_json_ok();
    // The legacy assign route creates no identity for a non-admin (issue 13), so it cannot
    // make one that outlives the caller either.
    let kid2 = self_signed_client("kid2");
    t.post_json(
        "/v1/policy/assign/only-status",
        &json!({"identity": kid2.identity}),
    )
    .assert_error(404, IDENTITY_NOT_FOUND);

    // Invalid TTLs.
    create_identity(
        &mut admin,
        D,
        &self_signed_client("x").identity,
        &json!({"policy": "status", "ttl": "soon"}),
    )
    .assert_error(400, "invalid ttl 'soon'");
    for bad in ["-1s", "1x", "2562047h48m"] {
        create_identity(
            &mut admin,
            D,
            &self_signed_client("x").identity,
            &json!({"policy": "status", "ttl": bad}),
        )
        .assert_error(400, &format!("invalid ttl '{bad}'"));
    }
    // TTLs are shown as Go prints a time.Duration; zero means "never expires".
    for (ttl, shown) in [
        ("1h", Some("1h0m0s")),
        ("90m", Some("1h30m0s")),
        ("1.5s", Some("1.5s")),
        ("2562047h47m16.854775807s", Some("2562047h47m16.854775807s")),
        ("0s", None),
        ("", None),
    ] {
        let id = self_signed_client("ttl").identity;
        create_identity(&mut admin, D, &id, &json!({"policy": "status", "ttl": ttl}))
            .assert_empty_ok();
        let d = admin
            .get(&format!("/v1/identity/describe/{id}"))
            .assert_json_ok();
        match shown {
            Some(shown) => {
                assert_eq!(d["ttl"], shown, "{d}");
                time_field(&d, "expires_at");
            }
            None => {
                assert!(
                    d.get("ttl").is_none() && d.get("expires_at").is_none(),
                    "{d}"
                );
            }
        }
    }

    // After expiry: refused, and unknown to self-describe; still listed and describable.
    // Until just past the server's expires_at (same machine, same clock).
    let left = expires - OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    std::thread::sleep(Duration::try_from(left).unwrap_or_default());
    assert_forbidden(&t.get("/v1/status"));
    assert_forbidden(&k.get("/v1/status"));
    t.get("/v1/identity/self/describe")
        .assert_error(404, IDENTITY_NOT_FOUND);
    admin
        .get(&format!("/v1/identity/describe/{}", temp.identity))
        .assert_json_ok();
    // A fresh connection does not help.
    assert_forbidden(&server.client(&temp).get("/v1/status"));
}

// ---------------------------------------------------------------------------------------
// 5. Secrets
// ---------------------------------------------------------------------------------------

#[test]
fn secrets_round_trip() {
    let env = Env::new("acc-secret");
    let server = env.start();
    let mut admin = server.admin();
    let admin_id = pki().admin.identity.clone();
    let reader = self_signed_client("reader");

    admin
        .put_json(
            "/v1/secret/create/s1",
            &json!({"secret": b64(b"hello secret")}),
        )
        .assert_empty_ok();
    admin
        .put_json(
            "/v1/secret/create/s2",
            &json!({"secret": b64(&[0u8, 1, 2, 255])}),
        )
        .assert_empty_ok();
    admin
        .put_json("/v1/secret/create/t1", &json!({"secret": b64(b"t")}))
        .assert_empty_ok();

    let desc = admin.get("/v1/secret/describe/s1").assert_json_ok();
    assert_eq!(desc["created_by"], admin_id.as_str(), "{desc}");
    assert_recent(&desc, "created_at");
    assert!(
        desc.get("secret").is_none(),
        "describe leaks the value: {desc}"
    );
    let read = admin.get("/v1/secret/read/s1").assert_json_ok();
    assert_eq!(unb64(read["secret"].as_str().unwrap()), b"hello secret");
    assert_eq!(read["created_by"], admin_id.as_str());
    assert_eq!(read["created_at"], desc["created_at"]);
    let read = admin.get("/v1/secret/read/s2").assert_json_ok();
    assert_eq!(
        unb64(read["secret"].as_str().unwrap()),
        vec![0u8, 1, 2, 255]
    );

    // Listings, with and without the trailing slash.
    for path in ["/v1/secret/list", "/v1/secret/list/", "/v1/secret/list/*"] {
        let list = admin.get(path).assert_json_ok();
        assert_eq!(names_of(&list), strs(&["s1", "s2", "t1"]), "{path}");
    }
    for path in ["/v1/secret/list/s", "/v1/secret/list/s*"] {
        let list = admin.get(path).assert_json_ok();
        assert_eq!(names_of(&list), strs(&["s1", "s2"]), "{path}");
    }

    // Duplicates: upstream's 404.
    admin
        .put_json("/v1/secret/create/s1", &json!({"secret": b64(b"again")}))
        .assert_error(404, SECRET_EXISTS);
    let read = admin.get("/v1/secret/read/s1").assert_json_ok();
    assert_eq!(unb64(read["secret"].as_str().unwrap()), b"hello secret");

    // Size limit: exactly 1,000,000 bytes is fine, one more is not.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    admin
        .put_json("/v1/secret/create/big", &json!({"secret": b64(&big)}))
        .assert_empty_ok();
    let read = admin.get("/v1/secret/read/big").assert_json_ok();
    assert!(
        unb64(read["secret"].as_str().unwrap()) == big,
        "big secret differs"
    );
    let mut too_big = big.clone();
    too_big.push(7);
    admin
        .put_json(
            "/v1/secret/create/too-big",
            &json!({"secret": b64(&too_big)}),
        )
        .assert_error(400, "secret is too large: at most 1000000 bytes");
    admin
        .get("/v1/secret/read/too-big")
        .assert_error(404, SECRET_NOT_FOUND);

    // Bad bodies and names.
    admin
        .put_json("/v1/secret/create/bad", &json!({"secret": "not base64!"}))
        .assert_error(400, "invalid request body");
    admin
        .put_json("/v1/secret/create/a.b", &json!({"secret": b64(b"x")}))
        .assert_error(
            400,
            "secret name 'a.b' is empty, too long or contains invalid characters",
        );

    // A client whose policy only allows reading.
    create_policy(&mut admin, D, "read-s", &["/v1/secret/read/s*"], &[]);
    create_identity(
        &mut admin,
        D,
        &reader.identity,
        &json!({"policy": "read-s"}),
    )
    .assert_empty_ok();
    let mut r = server.client(&reader);
    let read = r.get("/v1/secret/read/s2").assert_json_ok();
    assert_eq!(
        unb64(read["secret"].as_str().unwrap()),
        vec![0u8, 1, 2, 255]
    );
    assert_forbidden(&r.get("/v1/secret/read/t1"));
    assert_forbidden(&r.get("/v1/secret/describe/s1"));
    assert_forbidden(&r.get("/v1/secret/list"));
    assert_forbidden(&r.put_json("/v1/secret/create/s3", &json!({"secret": b64(b"x")})));
    assert_forbidden(&r.delete("/v1/secret/delete/s1"));

    // Delete.
    admin.delete("/v1/secret/delete/s1").assert_empty_ok();
    admin
        .get("/v1/secret/read/s1")
        .assert_error(404, SECRET_NOT_FOUND);
    admin
        .get("/v1/secret/describe/s1")
        .assert_error(404, SECRET_NOT_FOUND);
    admin
        .delete("/v1/secret/delete/s1")
        .assert_error(404, SECRET_NOT_FOUND);
    let list = admin.get("/v1/secret/list").assert_json_ok();
    assert_eq!(names_of(&list), strs(&["big", "s2", "t1"]));
    // Recreate after delete.
    admin
        .put_json("/v1/secret/create/s1", &json!({"secret": b64(b"new")}))
        .assert_empty_ok();
    let read = admin.get("/v1/secret/read/s1").assert_json_ok();
    assert_eq!(unb64(read["secret"].as_str().unwrap()), b"new");
}

// ---------------------------------------------------------------------------------------
// 6. Enclaves
// ---------------------------------------------------------------------------------------

#[test]
fn enclaves_isolate_tenants() {
    let env = Env::new("acc-enclave");
    let server = env.start();
    let mut admin = server.admin();
    let admin_id = pki().admin.identity.clone();
    let tenant = self_signed_client("tenant");
    const A: &str = "tenant-a";
    const B: &str = "tenant-b";

    admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
    admin.put("/v1/enclave/create/tenant-b").assert_empty_ok();
    admin
        .put("/v1/enclave/create/tenant-a")
        .assert_error(400, ENCLAVE_EXISTS);
    admin.put("/v1/enclave/create/a.b").assert_error(
        400,
        "enclave name 'a.b' is empty, too long or contains invalid characters",
    );
    let desc = admin.get("/v1/enclave/describe/tenant-a").assert_json_ok();
    assert_eq!(
        fields(&desc),
        strs(&["created_at", "created_by", "name"]),
        "{desc}"
    );
    assert_eq!(desc["name"], A);
    assert_eq!(desc["created_by"], admin_id.as_str());
    assert_recent(&desc, "created_at");
    let list = admin.get("/v1/enclave/list/tenant*").assert_json_ok();
    assert_eq!(names_of(&list), strs(&[A, B]));
    let list = admin.get("/v1/enclave/list/").assert_json_ok();
    assert!(names_of(&list).contains(&D.to_string()), "{list}");

    // A key in tenant-a is invisible elsewhere.
    put_in(&mut admin, "/v1/key/create/k1", A).assert_empty_ok();
    get_in(&mut admin, "/v1/key/describe/k1", A).assert_json_ok();
    // Header names are case-insensitive.
    admin
        .must("GET", "/v1/key/describe/k1", &[("kes-enclave", A)], None)
        .assert_json_ok();
    admin
        .must("GET", "/v1/key/describe/k1", &[("KES-ENCLAVE", A)], None)
        .assert_json_ok();
    admin
        .get("/v1/key/describe/k1")
        .assert_error(404, KEY_NOT_FOUND);
    get_in(&mut admin, "/v1/key/describe/k1", D).assert_error(404, KEY_NOT_FOUND);
    get_in(&mut admin, "/v1/key/describe/k1", B).assert_error(404, KEY_NOT_FOUND);
    assert!(names_of(&admin.get("/v1/key/list/").assert_json_ok()).is_empty());
    let list = get_in(&mut admin, "/v1/key/list/", A).assert_json_ok();
    assert_eq!(names_of(&list), strs(&["k1"]));
    // The same name in another enclave is another key.
    put_in(&mut admin, "/v1/key/create/k1", B).assert_empty_ok();
    let ct = {
        let body = json!({"plaintext": b64(b"tenant data")});
        let resp = put_json_in(&mut admin, "/v1/key/encrypt/k1", A, &body);
        resp.assert_json_ok();
        resp.b64_field("ciphertext")
    };
    let body = json!({"ciphertext": b64(&ct)});
    let resp = put_json_in(&mut admin, "/v1/key/decrypt/k1", A, &body);
    assert_eq!(resp.b64_field("plaintext"), b"tenant data");
    put_json_in(&mut admin, "/v1/key/decrypt/k1", B, &body)
        .assert_error(400, "decryption failed: ciphertext is not authentic");

    // Policies and secrets are per enclave too.
    create_policy(
        &mut admin,
        A,
        "tenant",
        &["/v1/key/*", "/v1/secret/*", "/v1/status"],
        &[],
    );
    admin
        .get("/v1/policy/read/tenant")
        .assert_error(404, POLICY_NOT_FOUND);
    put_json_in(
        &mut admin,
        "/v1/secret/create/s",
        A,
        &json!({"secret": b64(b"a")}),
    )
    .assert_empty_ok();
    admin
        .get("/v1/secret/read/s")
        .assert_error(404, SECRET_NOT_FOUND);
    // An identity's policy must exist in the identity's enclave.
    create_identity(
        &mut admin,
        D,
        &tenant.identity,
        &json!({"policy": "tenant"}),
    )
    .assert_error(404, POLICY_NOT_FOUND);

    // Identities are per enclave.
    create_identity(
        &mut admin,
        A,
        &tenant.identity,
        &json!({"policy": "tenant"}),
    )
    .assert_empty_ok();
    let mut t = server.client(&tenant);
    get_in(&mut t, "/v1/key/describe/k1", A).assert_json_ok();
    put_in(&mut t, "/v1/key/create/k2", A).assert_empty_ok();
    get_in(&mut t, "/v1/secret/read/s", A).assert_json_ok();
    get_in(&mut t, "/v1/status", A).assert_json_ok();
    assert_forbidden(&t.get("/v1/status"));
    assert_forbidden(&t.put("/v1/key/create/k2"));
    assert_forbidden(&get_in(&mut t, "/v1/key/describe/k1", D));
    assert_forbidden(&get_in(&mut t, "/v1/key/describe/k1", B));
    assert_forbidden(&get_in(&mut t, "/v1/key/describe/k1", "tenant-none"));
    admin
        .get(&format!("/v1/identity/describe/{}", tenant.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    // A non-admin cannot create or delete enclaves, whatever its policy says.
    create_policy(&mut admin, A, "enclaves", &["/v1/enclave/*"], &[]);
    let other = self_signed_client("other");
    create_identity(
        &mut admin,
        A,
        &other.identity,
        &json!({"policy": "enclaves"}),
    )
    .assert_empty_ok();
    let mut o = server.client(&other);
    get_in(&mut o, "/v1/enclave/describe/tenant-a", A).assert_json_ok();
    assert_forbidden(&put_in(&mut o, "/v1/enclave/create/tenant-c", A));
    assert_forbidden(&delete_in(&mut o, "/v1/enclave/delete/tenant-b", A));
    assert_forbidden(&put_in(&mut t, "/v1/enclave/create/tenant-c", A));
    assert_forbidden(&delete_in(&mut t, "/v1/enclave/delete/tenant-a", A));
    get_in(&mut admin, "/v1/enclave/describe/tenant-b", D).assert_json_ok();

    // A missing enclave: the admin gets a 404 everywhere.
    put_in(&mut admin, "/v1/key/create/x", "tenant-none").assert_error(404, ENCLAVE_NOT_FOUND);
    get_in(&mut admin, "/v1/key/describe/x", "tenant-none").assert_error(404, ENCLAVE_NOT_FOUND);
    // (Listings: see `listings_in_a_missing_enclave_are_404`.)
    put_json_in(&mut admin, "/v1/policy/create/p", "tenant-none", &json!({}))
        .assert_error(404, ENCLAVE_NOT_FOUND);
    put_json_in(
        &mut admin,
        "/v1/secret/create/s",
        "tenant-none",
        &json!({"secret": b64(b"a")}),
    )
    .assert_error(404, ENCLAVE_NOT_FOUND);
    admin
        .get("/v1/enclave/describe/tenant-none")
        .assert_error(404, ENCLAVE_NOT_FOUND);
    admin
        .delete("/v1/enclave/delete/tenant-none")
        .assert_error(404, ENCLAVE_NOT_FOUND);

    // The default enclave stays.
    admin
        .delete("/v1/enclave/delete/default")
        .assert_error(400, "the default enclave cannot be deleted");
    admin.get("/v1/enclave/describe/default").assert_json_ok();
}

#[test]
fn deleting_an_enclave_deletes_its_contents() {
    let env = Env::new("acc-enclave-del");
    let mut server = env.start();
    let mut admin = server.admin();
    let tenant = self_signed_client("tenant");
    const A: &str = "tenant-a";
    const B: &str = "tenant-b";

    admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
    admin.put("/v1/enclave/create/tenant-b").assert_empty_ok();
    put_in(&mut admin, "/v1/key/create/k1", A).assert_empty_ok();
    put_in(&mut admin, "/v1/key/create/k1", B).assert_empty_ok();
    let ct = {
        let body = json!({"plaintext": b64(b"tenant data")});
        let resp = put_json_in(&mut admin, "/v1/key/encrypt/k1", A, &body);
        resp.assert_json_ok();
        resp.b64_field("ciphertext")
    };
    let body = json!({"ciphertext": b64(&ct)});
    create_policy(&mut admin, A, "tenant", &["/v1/key/*"], &[]);
    put_json_in(
        &mut admin,
        "/v1/secret/create/s",
        A,
        &json!({"secret": b64(b"a")}),
    )
    .assert_empty_ok();
    create_identity(
        &mut admin,
        A,
        &tenant.identity,
        &json!({"policy": "tenant"}),
    )
    .assert_empty_ok();
    let mut t = server.client(&tenant);
    get_in(&mut t, "/v1/key/describe/k1", A).assert_json_ok();

    // Deleting an enclave deletes everything in it; a new enclave of that name is empty.
    admin
        .delete("/v1/enclave/delete/tenant-a")
        .assert_empty_ok();
    get_in(&mut admin, "/v1/key/describe/k1", A).assert_error(404, ENCLAVE_NOT_FOUND);
    assert_forbidden(&get_in(&mut t, "/v1/key/describe/k1", A));
    admin
        .get("/v1/enclave/describe/tenant-a")
        .assert_error(404, ENCLAVE_NOT_FOUND);
    admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
    get_in(&mut admin, "/v1/key/describe/k1", A).assert_error(404, KEY_NOT_FOUND);
    assert!(names_of(&get_in(&mut admin, "/v1/key/list/", A).assert_json_ok()).is_empty());
    get_in(&mut admin, "/v1/secret/read/s", A).assert_error(404, SECRET_NOT_FOUND);
    get_in(&mut admin, "/v1/policy/read/tenant", A).assert_error(404, POLICY_NOT_FOUND);
    get_in(
        &mut admin,
        &format!("/v1/identity/describe/{}", tenant.identity),
        A,
    )
    .assert_error(404, IDENTITY_NOT_FOUND);
    assert_forbidden(&get_in(&mut t, "/v1/key/describe/k1", A));
    // The old ciphertext is not decryptable with a new key of the old name.
    put_in(&mut admin, "/v1/key/create/k1", A).assert_empty_ok();
    put_json_in(&mut admin, "/v1/key/decrypt/k1", A, &body)
        .assert_error(400, "decryption failed: ciphertext is not authentic");
    // tenant-b is untouched.
    get_in(&mut admin, "/v1/key/describe/k1", B).assert_json_ok();

    // What the recreated enclave holds is sealed with its own new data key: it is still
    // readable after a restart (no stale key of the deleted enclave was used).
    let ct2 = {
        let body = json!({"plaintext": b64(b"second life")});
        let resp = put_json_in(&mut admin, "/v1/key/encrypt/k1", A, &body);
        resp.assert_json_ok();
        resp.b64_field("ciphertext")
    };
    put_json_in(
        &mut admin,
        "/v1/secret/create/s2",
        A,
        &json!({"secret": b64(b"new tenant")}),
    )
    .assert_empty_ok();
    drop((admin, t));
    server.stop();
    let server = env.start();
    let mut admin = server.admin();
    let body = json!({"ciphertext": b64(&ct2)});
    let resp = put_json_in(&mut admin, "/v1/key/decrypt/k1", A, &body);
    resp.assert_json_ok();
    assert_eq!(resp.b64_field("plaintext"), b"second life");
    let read = get_in(&mut admin, "/v1/secret/read/s2", A).assert_json_ok();
    assert_eq!(unb64(read["secret"].as_str().unwrap()), b"new tenant");
    get_in(&mut admin, "/v1/key/describe/k1", B).assert_json_ok();
}

#[test]
fn listings_in_a_missing_enclave_are_404() {
    let env = Env::new("acc-nolist");
    let server = env.start();
    let mut admin = server.admin();
    for path in [
        "/v1/key/list/",
        "/v1/policy/list/",
        "/v1/identity/list/",
        "/v1/secret/list",
        "/v1/secret/list/",
    ] {
        let resp = get_in(&mut admin, path, "tenant-none");
        assert_eq!(
            (resp.status, resp.text()),
            (404, kes_error_body(ENCLAVE_NOT_FOUND)),
            "{path}"
        );
    }
    // A deleted enclave is missing too.
    admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
    put_in(&mut admin, "/v1/key/create/k1", "tenant-a").assert_empty_ok();
    admin
        .delete("/v1/enclave/delete/tenant-a")
        .assert_empty_ok();
    get_in(&mut admin, "/v1/key/list/", "tenant-a").assert_error(404, ENCLAVE_NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// 7. Restart persistence
// ---------------------------------------------------------------------------------------

#[test]
fn access_state_survives_a_restart() {
    let env = Env::new("acc-restart");
    let app = self_signed_client("app");
    let tenant = self_signed_client("tenant");
    let child = self_signed_client("child");
    const A: &str = "tenant-a";

    let hourly = self_signed_client("hourly");
    let (policy_before, identity_before, enclave_before, secret_before, ttl_before);
    {
        let mut server = env.start();
        let mut admin = server.admin();
        create_policy(
            &mut admin,
            D,
            "app",
            &[
                "/v1/key/create/app-*",
                "/v1/identity/create/*",
                "/v1/status",
            ],
            &["/v1/key/create/app-no*"],
        );
        create_policy(&mut admin, D, "status", &["/v1/status"], &[]);
        create_identity(&mut admin, D, &app.identity, &json!({"policy": "app"})).assert_empty_ok();
        let mut a = server.client(&app);
        create_identity(&mut a, D, &child.identity, &json!({"policy": "status"})).assert_empty_ok();
        admin
            .put_json(
                "/v1/secret/create/s1",
                &json!({"secret": b64(b"persist me")}),
            )
            .assert_empty_ok();
        admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
        create_policy(&mut admin, A, "tenant", &["/v1/key/*"], &[]);
        create_identity(
            &mut admin,
            A,
            &tenant.identity,
            &json!({"policy": "tenant"}),
        )
        .assert_empty_ok();
        put_in(&mut admin, "/v1/key/create/tk", A).assert_empty_ok();
        put_json_in(
            &mut admin,
            "/v1/secret/create/ts",
            A,
            &json!({"secret": b64(b"tenant secret")}),
        )
        .assert_empty_ok();
        create_identity(
            &mut admin,
            D,
            &hourly.identity,
            &json!({"policy": "app", "ttl": "1h"}),
        )
        .assert_empty_ok();
        ttl_before = admin
            .get(&format!("/v1/identity/describe/{}", hourly.identity))
            .assert_json_ok();
        admin.put("/v1/enclave/create/gone").assert_empty_ok();
        admin.delete("/v1/enclave/delete/gone").assert_empty_ok();
        admin.delete("/v1/policy/delete/status").assert_empty_ok();

        policy_before = admin.get("/v1/policy/read/app").assert_json_ok();
        identity_before = admin
            .get(&format!("/v1/identity/describe/{}", app.identity))
            .assert_json_ok();
        enclave_before = admin.get("/v1/enclave/describe/tenant-a").assert_json_ok();
        secret_before = admin.get("/v1/secret/read/s1").assert_json_ok();
        drop((admin, a));
        server.stop();
    }

    let server = env.start();
    let mut admin = server.admin();
    assert_eq!(
        admin.get("/v1/policy/read/app").assert_json_ok(),
        policy_before
    );
    admin
        .get("/v1/policy/read/status")
        .assert_error(404, POLICY_NOT_FOUND);
    assert_eq!(
        admin
            .get(&format!("/v1/identity/describe/{}", app.identity))
            .assert_json_ok(),
        identity_before
    );
    assert_eq!(identity_before["children"], json!([child.identity]));
    assert_eq!(
        admin.get("/v1/enclave/describe/tenant-a").assert_json_ok(),
        enclave_before
    );
    admin
        .get("/v1/enclave/describe/gone")
        .assert_error(404, ENCLAVE_NOT_FOUND);
    assert_eq!(
        admin.get("/v1/secret/read/s1").assert_json_ok(),
        secret_before
    );
    assert_eq!(
        admin
            .get(&format!("/v1/identity/describe/{}", hourly.identity))
            .assert_json_ok(),
        ttl_before
    );
    assert_eq!(ttl_before["ttl"], "1h0m0s");
    server
        .client(&hourly)
        .put("/v1/key/create/app-hourly")
        .assert_empty_ok();
    let read = get_in(&mut admin, "/v1/secret/read/ts", A).assert_json_ok();
    assert_eq!(unb64(read["secret"].as_str().unwrap()), b"tenant secret");

    // The identities still work with their policies.
    let mut a = server.client(&app);
    a.put("/v1/key/create/app-after").assert_empty_ok();
    assert_forbidden(&a.put("/v1/key/create/app-no"));
    assert_forbidden(&a.put("/v1/key/create/other"));
    // The child's policy was deleted before the restart.
    assert_forbidden(&server.client(&child).get("/v1/status"));
    let mut t = server.client(&tenant);
    get_in(&mut t, "/v1/key/describe/tk", A).assert_json_ok();
    assert_forbidden(&t.get("/v1/key/describe/tk"));

    // Recursive delete still knows the children after a restart.
    admin
        .delete(&format!("/v1/identity/delete/{}", app.identity))
        .assert_empty_ok();
    admin
        .get(&format!("/v1/identity/describe/{}", child.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// 8. Static policies from the config file
// ---------------------------------------------------------------------------------------

#[test]
fn config_policies_are_seeded() {
    let mut env = Env::new("acc-config");
    let one = self_signed_client("one");
    let two = self_signed_client("two");
    env.append_config(&format!(
        "policy:\n  cfg:\n    allow:\n    - /v1/status\n    - /v1/key/create/cfg-*\n    deny:\n    - /v1/key/create/cfg-no*\n    identities:\n    - {}\n  empty:\n    identities: [{}]\n",
        one.identity, two.identity
    ));
    let server = env.start();
    let mut admin = server.admin();

    let read = admin.get("/v1/policy/read/cfg").assert_json_ok();
    assert_eq!(
        read["allow"],
        pattern_set(&["/v1/key/create/cfg-*", "/v1/status"])
    );
    assert_eq!(read["deny"], pattern_set(&["/v1/key/create/cfg-no*"]));
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", one.identity))
        .assert_json_ok();
    assert_eq!(desc["policy"], "cfg", "{desc}");

    let mut o = server.client(&one);
    o.get("/v1/status").assert_json_ok();
    o.put("/v1/key/create/cfg-1").assert_empty_ok();
    assert_forbidden(&o.put("/v1/key/create/cfg-no"));
    assert_forbidden(&o.put("/v1/key/create/other"));
    let me = o.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(me["policy"], "cfg");
    assert_eq!(me["identity"], one.identity.as_str());

    let mut t = server.client(&two);
    assert_forbidden(&t.get("/v1/status"));
    let me = t.get("/v1/identity/self/describe").assert_json_ok();
    assert_eq!(me["policy"], "empty");
    // Config policies live in the default enclave only.
    admin.put("/v1/enclave/create/tenant-a").assert_empty_ok();
    get_in(&mut admin, "/v1/policy/read/cfg", "tenant-a").assert_error(404, POLICY_NOT_FOUND);
    assert_forbidden(&get_in(&mut o, "/v1/status", "tenant-a"));
}

// ---------------------------------------------------------------------------------------
// 9. Issue 13: no escalation past the creator chain, assign limited to descendants,
//    identities that can match a certificate
// ---------------------------------------------------------------------------------------

/// Issue 13, observed: `esc` (no right to create keys) created policy `small`, a child on it,
/// then deleted `small` and created it again as `/v1/*`: the child created keys and secrets.
/// A child's rights are its policy intersected with every non-admin creator's, on every
/// request: replacing a policy never gives it more than its creators have, and shrinking a
/// creator's policy shrinks its descendants at once.
#[test]
fn replacing_a_policy_never_widens_a_child() {
    let env = Env::new("acc-esc");
    let server = env.start();
    let mut admin = server.admin();
    let esc = self_signed_client("esc");
    let kid = self_signed_client("kid");
    let grandkid = self_signed_client("grandkid");
    create_policy(
        &mut admin,
        D,
        "esc",
        &["/v1/identity/*", "/v1/policy/*", "/v1/key/generate/app-*"],
        &[],
    );
    create_policy(&mut admin, D, "tiny", &["/v1/status"], &[]);
    create_identity(&mut admin, D, &esc.identity, &json!({"policy": "esc"})).assert_empty_ok();
    admin.create_key("app-k");
    let mut ce = server.client(&esc);
    create_policy(&mut ce, D, "small", &["/v1/key/generate/app-*"], &[]);
    create_identity(&mut ce, D, &kid.identity, &json!({"policy": "small"})).assert_empty_ok();
    let mut ck = server.client(&kid);
    ck.put_json("/v1/key/generate/app-k", &json!({}))
        .assert_json_ok();

    // The replacement: `small` in use, deleted and created again as everything.
    ce.delete("/v1/policy/delete/small").assert_empty_ok();
    create_policy(&mut ce, D, "small", &["/v1/*"], &[]);
    assert_forbidden(&ck.put("/v1/key/create/app-new"));
    assert_forbidden(&ck.put("/v1/key/create/other"));
    assert_forbidden(&ck.put_json("/v1/secret/create/s", &json!({"secret": b64(b"x")})));
    assert_forbidden(&ck.delete("/v1/key/delete/app-k"));
    // What both allow still works.
    ck.put_json("/v1/key/generate/app-k", &json!({}))
        .assert_json_ok();
    admin
        .get("/v1/key/describe/app-new")
        .assert_error(404, KEY_NOT_FOUND);

    // A deeper chain is bounded by every link: esc -> kid -> grandkid.
    create_policy(
        &mut admin,
        D,
        "kid-creates",
        &["/v1/identity/create/*", "/v1/key/*"],
        &[],
    );
    admin
        .post_json(
            "/v1/policy/assign/kid-creates",
            &json!({"identity": esc.identity}),
        )
        .assert_empty_ok();
    // esc is now the admin's, with policy kid-creates: kid (still esc's child, on `small`)
    // may do what both allow, which now includes creating keys, and nothing else.
    ce.put("/v1/key/create/app-esc").assert_empty_ok();
    ck.put("/v1/key/create/app-new").assert_empty_ok();
    assert_forbidden(&ck.put_json("/v1/secret/create/s", &json!({"secret": b64(b"x")})));
    // ... kid may create identities now (both policies allow it), on a policy within its own.
    create_identity(
        &mut ck,
        D,
        &grandkid.identity,
        &json!({"policy": "kid-creates"}),
    )
    .assert_empty_ok();
    let mut cg = server.client(&grandkid);
    cg.put("/v1/key/create/app-g").assert_empty_ok();
    // Shrinking the top of the chain shrinks everyone below at once.
    admin
        .post_json("/v1/policy/assign/tiny", &json!({"identity": esc.identity}))
        .assert_empty_ok();
    for c in [&mut ce, &mut ck, &mut cg] {
        assert_forbidden(&c.put("/v1/key/create/app-x"));
        assert_forbidden(&c.put_json("/v1/key/generate/app-k", &json!({})));
    }
    ce.get("/v1/status").assert_json_ok();
    // kid's chain (small = /v1/*, tiny) allows /v1/status; grandkid's policy does not.
    ck.get("/v1/status").assert_json_ok();
    assert_forbidden(&cg.get("/v1/status"));
}

/// Issue 13, observed: an identity allowed only `/v1/key/generate/app-*` and
/// `/v1/policy/assign/*` assigned a tiny policy to an enclave admin it did not create (clearing
/// the admin flag and becoming its parent, so that deleting the attacker deleted the admin),
/// and created identities by assigning to unknown ones.
#[test]
fn assign_by_a_non_admin_never_adopts_demotes_or_creates() {
    let env = Env::new("acc-adopt");
    let server = env.start();
    let mut admin = server.admin();
    let admin_id = pki().admin.identity.clone();
    let attacker = self_signed_client("attacker");
    let boss = self_signed_client("enclave-admin");
    let victim = self_signed_client("victim");
    let stranger = self_signed_client("stranger");
    create_policy(
        &mut admin,
        D,
        "attack",
        &["/v1/key/generate/app-*", "/v1/policy/assign/*"],
        &[],
    );
    create_policy(&mut admin, D, "tiny", &["/v1/key/generate/app-x"], &[]);
    create_identity(
        &mut admin,
        D,
        &attacker.identity,
        &json!({"policy": "attack"}),
    )
    .assert_empty_ok();
    create_identity(&mut admin, D, &boss.identity, &json!({"admin": true})).assert_empty_ok();
    create_identity(&mut admin, D, &victim.identity, &json!({"policy": "tiny"})).assert_empty_ok();
    let mut a = server.client(&attacker);

    a.post_json(
        "/v1/policy/assign/tiny",
        &json!({"identity": boss.identity}),
    )
    .assert_error(403, "cannot assign policy to an enclave admin");
    a.post_json(
        "/v1/policy/assign/tiny",
        &json!({"identity": victim.identity}),
    )
    .assert_error(403, &not_created_by_caller(&victim.identity));
    a.post_json(
        "/v1/policy/assign/tiny",
        &json!({"identity": stranger.identity}),
    )
    .assert_error(404, IDENTITY_NOT_FOUND);

    let desc = admin
        .get(&format!("/v1/identity/describe/{}", boss.identity))
        .assert_json_ok();
    assert_eq!(desc["admin"], true, "{desc}");
    assert_eq!(desc["created_by"], admin_id.as_str(), "{desc}");
    let desc = admin
        .get(&format!("/v1/identity/describe/{}", victim.identity))
        .assert_json_ok();
    assert_eq!(desc["created_by"], admin_id.as_str(), "{desc}");
    admin
        .get(&format!("/v1/identity/describe/{}", stranger.identity))
        .assert_error(404, IDENTITY_NOT_FOUND);
    server
        .client(&stranger)
        .get("/v1/identity/self/describe")
        .assert_error(404, IDENTITY_NOT_FOUND);
    let attacker_desc = admin
        .get(&format!("/v1/identity/describe/{}", attacker.identity))
        .assert_json_ok();
    assert!(attacker_desc.get("children").is_none(), "{attacker_desc}");

    // Deleting the attacker takes nobody along; the enclave admin still rules.
    admin
        .delete(&format!("/v1/identity/delete/{}", attacker.identity))
        .assert_empty_ok();
    let mut b = server.client(&boss);
    b.put("/v1/key/create/boss-key").assert_empty_ok();
    admin
        .get(&format!("/v1/identity/describe/{}", victim.identity))
        .assert_json_ok();
}

/// Issue 13: identities are 64 hex characters (the SHA-256 of a certificate's public key).
/// The API refuses anything else where it would store one (create, assign) with a 400 and the
/// KES error body, and normalizes upper-case hex to the lower-case identity a certificate
/// has; lookups of other names simply find nothing (as upstream answers).
#[test]
fn identities_that_can_never_match_are_refused() {
    let env = Env::new("acc-names");
    let server = env.start();
    let mut admin = server.admin();
    create_policy(&mut admin, D, "status", &["/v1/status"], &[]);
    let not_an_identity = |s: &str| {
        format!(
            "'{s}' is not an identity: an identity is 64 hex characters (the SHA-256 of a \
             certificate's public key, as `kes-node identity of` prints it)"
        )
    };
    let user = self_signed_client("user");
    for bad in [
        "my-app",
        &user.identity[..63],
        &format!("{}0", user.identity),
        &user.identity.replace(|c: char| c.is_ascii_digit(), "g"),
    ] {
        create_identity(&mut admin, D, bad, &json!({"policy": "status"}))
            .assert_error(400, &not_an_identity(bad));
        admin
            .post_json("/v1/policy/assign/status", &json!({"identity": bad}))
            .assert_error(400, &not_an_identity(bad));
        admin
            .get(&format!("/v1/identity/describe/{bad}"))
            .assert_error(404, IDENTITY_NOT_FOUND);
    }
    assert!(
        identities_of(&admin.get("/v1/identity/list/*").assert_json_ok())
            .iter()
            .all(|id| id.len() == 64)
    );

    // Upper case names the same identity: stored, listed and matched in lower case.
    let upper = user.identity.to_ascii_uppercase();
    create_identity(&mut admin, D, &upper, &json!({"policy": "status"})).assert_empty_ok();
    server.client(&user).get("/v1/status").assert_json_ok();
    let desc = admin
        .get(&format!("/v1/identity/describe/{upper}"))
        .assert_json_ok();
    assert_eq!(desc["policy"], "status", "{desc}");
    assert!(
        identities_of(&admin.get("/v1/identity/list/*").assert_json_ok()).contains(&user.identity)
    );
    create_identity(&mut admin, D, &user.identity, &json!({"policy": "status"}))
        .assert_error(400, IDENTITY_EXISTS);
    admin
        .delete(&format!("/v1/identity/delete/{upper}"))
        .assert_empty_ok();
    assert_forbidden(&server.client(&user).get("/v1/status"));
}

/// Issue 13: identities in the config that no certificate can match stop the server at start
/// with a one-line error naming the field; upper-case hex is normalized.
#[test]
fn config_identities_that_can_never_match_stop_the_start() {
    let mut env = Env::new("acc-cfg-names");
    env.append_config("policy:\n  app:\n    allow: [/v1/status]\n    identities: [my-app]\n");
    let Err(exited) = env.try_start() else {
        panic!("started with identity 'my-app'")
    };
    assert!(
        exited
            .stderr
            .contains("config: policy.app.identities[0]: 'my-app' is not an identity"),
        "{}",
        exited.stderr
    );

    let mut env = Env::new("acc-cfg-admin");
    env.set_admin("root");
    let Err(exited) = env.try_start() else {
        panic!("started with admin 'root'")
    };
    assert!(
        exited
            .stderr
            .contains("config: admin.identity: 'root' is not an identity"),
        "{}",
        exited.stderr
    );

    let mut env = Env::new("acc-cfg-upper");
    let user = self_signed_client("user");
    env.set_admin(&pki().admin.identity.to_ascii_uppercase());
    env.append_config(&format!(
        "policy:\n  app:\n    allow: [/v1/status]\n    identities: [{}]\n",
        user.identity.to_ascii_uppercase()
    ));
    let server = env.start();
    server.client(&user).get("/v1/status").assert_json_ok();
    server.admin().put("/v1/key/create/k").assert_empty_ok();
}

// ---------------------------------------------------------------------------------------
// 10. Issue 13: log streams are authorized for their whole life and stay in their tenant
// ---------------------------------------------------------------------------------------

/// Opens a log stream as `cert` in `enclave` on its own connection; returns it once its head
/// (200) arrived.
fn subscribe_as(server: &Server, cert: &ClientCert, path: &str, enclave: &str) -> Client {
    let mut c = server.client(cert);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nKes-Enclave: {enclave}\r\n\r\n",
        c.host
    );
    c.send_raw(req.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(c.pending()).contains("\r\n\r\n") {
        assert!(std::time::Instant::now() < deadline, "no stream head");
        assert!(
            !c.peer_closed_within(Duration::from_millis(50)).unwrap(),
            "stream closed: {}",
            String::from_utf8_lossy(c.pending())
        );
    }
    let head = String::from_utf8_lossy(c.pending()).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    c
}

/// Waits until `stream` delivered something containing `needle`; returns all it delivered.
fn stream_until(stream: &mut Client, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(stream.pending()).to_string();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event with {needle:?} in {text:?}"
        );
        assert!(
            !stream
                .peer_closed_within(Duration::from_millis(50))
                .unwrap(),
            "stream closed"
        );
    }
}

/// How long `stream` took to end (the server closed it), polled from now; None if it is still
/// open after `limit`.
fn ends_within(stream: &mut Client, limit: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if stream
            .peer_closed_within(Duration::from_millis(20))
            .unwrap()
        {
            return Some(started.elapsed());
        }
    }
    None
}

/// Issue 13, observed: an open `/v1/log/audit` stream kept flowing after its identity was
/// deleted or expired. Now a stream ends within a second of its identity being deleted,
/// expiring or losing the right to read the log; streams that may go on, go on.
#[test]
fn log_streams_end_when_their_identity_is_revoked() {
    let env = Env::new("acc-logrevoke");
    let server = env.start();
    let mut admin = server.admin();
    create_policy(&mut admin, D, "logs", &["/v1/log/*"], &[]);
    create_policy(&mut admin, D, "keys", &["/v1/key/*"], &[]);
    let deleted = self_signed_client("deleted");
    let expiring = self_signed_client("expiring");
    let demoted = self_signed_client("demoted");
    let staying = self_signed_client("staying");
    for who in [&deleted, &demoted, &staying] {
        create_identity(&mut admin, D, &who.identity, &json!({"policy": "logs"})).assert_empty_ok();
    }
    create_identity(
        &mut admin,
        D,
        &expiring.identity,
        &json!({"policy": "logs", "ttl": "3s"}),
    )
    .assert_empty_ok();
    let expires = time_field(
        &admin
            .get(&format!("/v1/identity/describe/{}", expiring.identity))
            .assert_json_ok(),
        "expires_at",
    );
    let mut audit_deleted = subscribe_as(&server, &deleted, "/v1/log/audit", D);
    let mut error_deleted = subscribe_as(&server, &deleted, "/v1/log/error", D);
    let mut audit_expiring = subscribe_as(&server, &expiring, "/v1/log/audit", D);
    let mut audit_demoted = subscribe_as(&server, &demoted, "/v1/log/audit", D);
    let mut audit_staying = subscribe_as(&server, &staying, "/v1/log/audit", D);
    let mut audit_admin = subscribe_as(&server, &pki().admin, "/v1/log/audit", D);
    admin.put("/v1/key/create/before").assert_empty_ok();
    for s in [&mut audit_deleted, &mut audit_demoted, &mut audit_staying] {
        stream_until(s, "/v1/key/create/before");
    }

    admin
        .delete(&format!("/v1/identity/delete/{}", deleted.identity))
        .assert_empty_ok();
    for s in [&mut audit_deleted, &mut error_deleted] {
        let took = ends_within(s, Duration::from_secs(1));
        assert!(took.is_some(), "a deleted identity's stream goes on");
    }
    admin
        .post_json(
            "/v1/policy/assign/keys",
            &json!({"identity": demoted.identity}),
        )
        .assert_empty_ok();
    assert!(
        ends_within(&mut audit_demoted, Duration::from_secs(1)).is_some(),
        "a stream goes on after its identity lost the right to read it"
    );
    // Until just past the server's expires_at (same machine, same clock), then a second.
    let left = expires - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default());
    assert!(
        ends_within(&mut audit_expiring, Duration::from_secs(1)).is_some(),
        "an expired identity's stream goes on"
    );

    admin.put("/v1/key/create/after").assert_empty_ok();
    stream_until(&mut audit_staying, "/v1/key/create/after");
    stream_until(&mut audit_admin, "/v1/key/create/after");
}

/// Issue 13, observed: the audit stream was global, so an identity administering enclave
/// `t2` saw the default enclave's key names, identities and client addresses. A subscriber
/// sees the events of the enclaves whose log it may read (the system admin: all of them),
/// each marked with its enclave.
#[test]
fn audit_streams_stay_within_their_tenant() {
    let env = Env::new("acc-logtenant");
    let server = env.start();
    let mut admin = server.admin();
    for e in ["t1", "t2"] {
        admin
            .put(&format!("/v1/enclave/create/{e}"))
            .assert_empty_ok();
    }
    let boss2 = self_signed_client("t2-admin");
    let reader = self_signed_client("default-reader");
    let both = self_signed_client("reader-of-default-and-t1");
    create_identity(&mut admin, "t2", &boss2.identity, &json!({"admin": true})).assert_empty_ok();
    create_policy(&mut admin, D, "logs", &["/v1/log/audit"], &[]);
    create_policy(&mut admin, "t1", "logs", &["/v1/log/audit"], &[]);
    create_identity(&mut admin, D, &reader.identity, &json!({"policy": "logs"})).assert_empty_ok();
    create_identity(&mut admin, D, &both.identity, &json!({"policy": "logs"})).assert_empty_ok();
    create_identity(&mut admin, "t1", &both.identity, &json!({"policy": "logs"})).assert_empty_ok();

    let mut s_boss2 = subscribe_as(&server, &boss2, "/v1/log/audit", "t2");
    let mut s_reader = subscribe_as(&server, &reader, "/v1/log/audit", D);
    let mut s_both = subscribe_as(&server, &both, "/v1/log/audit", D);
    let mut s_admin = subscribe_as(&server, &pki().admin, "/v1/log/audit", D);

    admin
        .put("/v1/key/create/default-secret-name")
        .assert_empty_ok();
    put_in(&mut admin, "/v1/key/create/t1-secret-name", "t1").assert_empty_ok();
    let mut b = server.client(&boss2);
    put_in(&mut b, "/v1/key/create/t2-own-key", "t2").assert_empty_ok();
    // The last event of each enclave, so each stream has seen all it will see of them.
    for e in [D, "t1", "t2"] {
        get_in(&mut admin, &format!("/v1/key/describe/{e}-marker"), e)
            .assert_error(404, KEY_NOT_FOUND);
    }

    let everything = stream_until(&mut s_admin, "/v1/key/describe/t2-marker");
    for name in ["default-secret-name", "t1-secret-name", "t2-own-key"] {
        assert!(everything.contains(name), "the system admin sees {name}");
    }
    let t2 = stream_until(&mut s_boss2, "/v1/key/describe/t2-marker");
    assert!(t2.contains("t2-own-key"), "{t2}");
    assert!(t2.contains("\"enclave\":\"t2\""), "{t2}");
    let d = stream_until(&mut s_reader, "/v1/key/describe/default-marker");
    let d1 = stream_until(&mut s_both, "/v1/key/describe/t1-marker");
    stream_until(&mut s_both, "/v1/key/describe/default-marker");
    // Everything the events of the other two enclaves were caught up with: nothing of them.
    stream_until(&mut s_reader, "/v1/key/describe/default-marker");
    for (who, text, foreign) in [
        (
            "t2's admin",
            &t2,
            &[
                "default-secret-name",
                "t1-secret-name",
                "default-marker",
                "t1-marker",
            ][..],
        ),
        (
            "the default reader",
            &d,
            &["t1-secret-name", "t2-own-key", "t1-marker", "t2-marker"][..],
        ),
        (
            "the default and t1 reader",
            &d1,
            &["t2-own-key", "t2-marker"][..],
        ),
    ] {
        for name in foreign {
            assert!(!text.contains(name), "{who} saw {name}: {text}");
        }
    }
    assert!(
        d1.contains("t1-secret-name") && d1.contains("\"enclave\":\"t1\""),
        "{d1}"
    );
    // t2's admin sees the admin's requests only where they addressed t2.
    assert!(
        !t2.contains(&format!("\"identity\":\"{}\"", reader.identity)),
        "{t2}"
    );
}

// ---------------------------------------------------------------------------------------
// 11. Found by the model-based test (tests/authz_model.rs)
// ---------------------------------------------------------------------------------------

/// Found by tests/authz_model.rs: deletes in an enclave that does not exist answered
/// "policy does not exist" (and the like) where every read answers "enclave does not exist".
#[test]
fn deletes_in_a_missing_enclave_name_the_enclave() {
    let env = Env::new("acc-noenclave-delete");
    let server = env.start();
    let mut admin = server.admin();
    let someone = self_signed_client("someone");
    for path in [
        "/v1/policy/delete/p".to_string(),
        "/v1/key/delete/k".to_string(),
        "/v1/secret/delete/s".to_string(),
        format!("/v1/identity/delete/{}", someone.identity),
    ] {
        delete_in(&mut admin, &path, "nowhere").assert_error(404, ENCLAVE_NOT_FOUND);
    }
    // In an enclave that exists, the item is what is missing.
    admin.put("/v1/enclave/create/somewhere").assert_empty_ok();
    delete_in(&mut admin, "/v1/policy/delete/p", "somewhere").assert_error(404, POLICY_NOT_FOUND);
    delete_in(&mut admin, "/v1/key/delete/k", "somewhere").assert_error(404, KEY_NOT_FOUND);
    delete_in(&mut admin, "/v1/secret/delete/s", "somewhere").assert_error(404, SECRET_NOT_FOUND);
}
