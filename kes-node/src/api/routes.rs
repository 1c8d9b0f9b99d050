//! The route table: upstream's paths, methods, body limits and timeouts (spec §4), which is
//! also what `GET /v1/api` reports.
use super::reply::Reply;
use super::{cluster, enclaves, identities, keys, policies, secrets, system, App, Ctx};
use crate::auth::Auth;
use crate::http::Response;

/// One API route. Paths ending in `/` take the rest of the URL path as their argument.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub max_body: usize,
    /// Seconds; 0 = none (log streams).
    pub timeout: u64,
    pub auth: Auth,
    /// Whether the request counters and latency histogram see this route (upstream counts
    /// only key, policy and identity routes).
    pub counted: bool,
    pub handler: Handler,
}

/// A route's handler: reads answer at once; writes return the state change to replicate.
#[derive(Clone, Copy)]
pub(crate) enum Handler {
    Read(fn(&App, &Ctx) -> Response),
    /// A read of keys: answers at once, or (edge server) fetches from the key store first.
    KeyRead(fn(&App, &Ctx) -> Reply),
    Write(fn(&App, &Ctx) -> Reply),
}

use Handler::{KeyRead as K, Read as R, Write as W};

/// 1 MB as upstream counts it (`aead.dev/mem`: 1 MB = 1,000,000 bytes).
const MB: usize = 1_000_000;

const fn route(
    method: &'static str,
    path: &'static str,
    max_body: usize,
    timeout: u64,
    auth: Auth,
    counted: bool,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        max_body,
        timeout,
        auth,
        counted,
        handler,
    }
}

use Auth::{Admin, IdentifyOnly, None as NoAuth, Verify};

/// Secret values are at most 1 MB; their base64 form in JSON is a third longer.
const SECRET_BODY: usize = 1_400_000;
/// Identity and assign bodies are tiny (upstream: 1 KB).
const KB: usize = 1_000;

/// The routes of upstream's stateless server (spec §4), which the edge server serves; the
/// others (secrets, enclaves, cluster, policy and identity writes) are unknown paths there,
/// answered `404` as upstream does.
pub(crate) const EDGE_PATHS: &[&str] = &[
    "/version",
    "/v1/ready",
    "/v1/status",
    "/v1/metrics",
    "/v1/api",
    "/v1/key/create/",
    "/v1/key/import/",
    "/v1/key/describe/",
    "/v1/key/list/",
    "/v1/key/delete/",
    "/v1/key/generate/",
    "/v1/key/encrypt/",
    "/v1/key/decrypt/",
    "/v1/key/hmac/",
    "/v1/policy/describe/",
    "/v1/policy/read/",
    "/v1/policy/list/",
    "/v1/identity/describe/",
    "/v1/identity/list/",
    "/v1/identity/self/describe",
    "/v1/log/error",
    "/v1/log/audit",
];

#[rustfmt::skip]
pub(crate) static ROUTES: &[Route] = &[
    route("GET", "/version", 0, 10, NoAuth, false, R(system::version)),
    route("GET", "/v1/ready", 0, 15, Verify, false, R(system::ready)),
    route("GET", "/v1/status", 0, 15, Verify, false, R(system::status)),
    route("GET", "/v1/metrics", 0, 15, Verify, false, R(system::metrics)),
    route("GET", "/v1/api", 0, 10, Verify, false, R(system::api)),
    route("PUT", "/v1/key/create/", 0, 15, Verify, true, W(keys::create)),
    route("PUT", "/v1/key/import/", MB, 15, Verify, true, W(keys::import)),
    route("GET", "/v1/key/describe/", 0, 15, Verify, true, K(keys::describe)),
    route("GET", "/v1/key/list/", 0, 15, Verify, true, K(keys::list)),
    route("DELETE", "/v1/key/delete/", 0, 15, Verify, true, W(keys::delete)),
    route("PUT", "/v1/key/generate/", MB, 15, Verify, true, K(keys::generate)),
    route("PUT", "/v1/key/encrypt/", MB, 15, Verify, true, K(keys::encrypt)),
    route("PUT", "/v1/key/decrypt/", MB, 15, Verify, true, K(keys::decrypt)),
    route("PUT", "/v1/key/hmac/", MB, 15, Verify, true, K(keys::hmac)),
    route("PUT", "/v1/policy/create/", MB, 15, Verify, true, W(policies::create)),
    route("POST", "/v1/policy/assign/", KB, 15, Verify, true, W(policies::assign)),
    route("GET", "/v1/policy/describe/", 0, 15, Verify, true, R(policies::describe)),
    route("GET", "/v1/policy/read/", 0, 15, Verify, true, R(policies::read)),
    route("GET", "/v1/policy/list/", 0, 15, Verify, true, R(policies::list)),
    route("DELETE", "/v1/policy/delete/", 0, 15, Verify, true, W(policies::delete)),
    route("PUT", "/v1/identity/create/", KB, 15, Verify, true, W(identities::create)),
    route("GET", "/v1/identity/describe/", 0, 15, Verify, true, R(identities::describe)),
    route("GET", "/v1/identity/list/", 0, 15, Verify, true, R(identities::list)),
    route("DELETE", "/v1/identity/delete/", 0, 15, Verify, true, W(identities::delete)),
    route("GET", "/v1/identity/self/describe", 0, 15, IdentifyOnly, true, R(identities::describe_self)),
    route("PUT", "/v1/secret/create/", SECRET_BODY, 15, Verify, true, W(secrets::create)),
    route("GET", "/v1/secret/describe/", 0, 15, Verify, true, R(secrets::describe)),
    route("GET", "/v1/secret/read/", 0, 15, Verify, true, R(secrets::read)),
    // Upstream's stateful server registered the listing without a trailing slash; both work.
    route("GET", "/v1/secret/list", 0, 15, Verify, true, R(secrets::list)),
    route("GET", "/v1/secret/list/", 0, 15, Verify, true, R(secrets::list)),
    route("DELETE", "/v1/secret/delete/", 0, 15, Verify, true, W(secrets::delete)),
    route("PUT", "/v1/enclave/create/", 0, 15, Admin, true, W(enclaves::create)),
    route("GET", "/v1/enclave/describe/", 0, 15, Verify, true, R(enclaves::describe)),
    route("GET", "/v1/enclave/list/", 0, 15, Verify, true, R(enclaves::list)),
    route("DELETE", "/v1/enclave/delete/", 0, 15, Admin, true, W(enclaves::delete)),
    route("PUT", "/v1/cluster/expand", KB, 300, Admin, false, W(cluster::expand)),
    route("DELETE", "/v1/cluster/shrink", KB, 15, Admin, false, W(cluster::shrink)),
    route("GET", "/v1/cluster/backup", 0, 300, Admin, false, R(cluster::backup)),
    route("GET", "/v1/cluster/describe", 0, 15, Verify, false, R(system::describe_cluster)),
    route("GET", "/v1/log/error", 0, 0, Verify, false, R(system::log_stream)),
    route("GET", "/v1/log/audit", 0, 0, Verify, false, R(system::log_stream)),
];
