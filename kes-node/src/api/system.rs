//! Server-level routes: version, readiness, status, the route list, metrics and log streams.
use serde::Serialize;

use super::{App, Ctx, KeyStoreDown, Keys};
use crate::http::Response;

/// The version reported by `/version` and `/v1/status`.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct Version {
    version: &'static str,
    commit: &'static str,
}

pub(super) fn version(_: &App, _: &Ctx) -> Response {
    Response::json(&Version {
        version: VERSION,
        commit: option_env!("KES_COMMIT").unwrap_or("<unknown>"),
    })
}

/// The key store's latency: a point read of a name that can never exist in the local
/// database, or the edge server's last health check of its key store (never a blocking call).
fn ping(app: &App) -> Result<std::time::Duration, KeyStoreDown> {
    match &app.keys {
        Keys::Store => {
            let start = std::time::Instant::now();
            match app.store.key(crate::store::DEFAULT_ENCLAVE, "-") {
                Ok(_) | Err(crate::store::StoreError::NotFound) => Ok(start.elapsed()),
                Err(_) => Err(KeyStoreDown::Unavailable),
            }
        }
        Keys::Edge(edge) => edge.health(),
    }
}

pub(super) fn ready(app: &App, _: &Ctx) -> Response {
    match ping(app) {
        Ok(_) => Response::ok(),
        Err(KeyStoreDown::Unreachable) => Response::error(504, "key store is not reachable"),
        Err(KeyStoreDown::Unavailable) => Response::error(502, "key store is unavailable"),
    }
}

/// `/v1/status`. The key store is the local database: when it cannot be read we say so with
/// both `keystore_unavailable` and `keystore_unreachable`, as the Go client requires (spec §4.4).
#[derive(Serialize)]
struct Status {
    version: &'static str,
    os: &'static str,
    arch: &'static str,
    uptime: u64,
    num_cpu: usize,
    num_cpu_used: usize,
    mem_heap_used: u64,
    mem_stack_used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keystore_latency: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keystore_unavailable: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keystore_unreachable: bool,
    /// Our extension: the configured HSM and whether its last probe succeeded (none on an edge
    /// server). The root key
    /// is in memory, so an unavailable HSM does not stop the server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hsm: Vec<crate::hsm::health::HsmState>,
}

pub(super) fn status(app: &App, _: &Ctx) -> Response {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (latency, unavailable, unreachable) = match ping(app) {
        Ok(d) => (Some((d.as_millis() as u64).max(1)), false, false),
        Err(KeyStoreDown::Unreachable) => (None, true, true),
        Err(KeyStoreDown::Unavailable) => (None, true, false),
    };
    let mem = crate::sysinfo::memory();
    Response::json(&Status {
        version: VERSION,
        os: std::env::consts::OS,
        arch: go_arch(),
        uptime: app.started.elapsed().as_secs(),
        num_cpu: cpus,
        num_cpu_used: cpus,
        mem_heap_used: mem.resident,
        mem_stack_used: mem.stack,
        keystore_latency: latency,
        keystore_unavailable: unavailable,
        keystore_unreachable: unreachable,
        hsm: app.hsm.snapshot(),
    })
}

/// Go's GOARCH names, which clients print.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[derive(Serialize)]
struct ApiRoute {
    method: &'static str,
    path: &'static str,
    max_body: usize,
    timeout: u64,
}

pub(super) fn api(app: &App, _: &Ctx) -> Response {
    let routes: Vec<ApiRoute> = app
        .routes
        .iter()
        .map(|r| ApiRoute {
            method: r.method,
            path: r.path,
            max_body: r.max_body,
            timeout: r.timeout,
        })
        .collect();
    Response::json(&routes)
}

pub(super) fn metrics(app: &App, _: &Ctx) -> Response {
    let mut r = Response::ok();
    r.headers.push((
        "Content-Type",
        "text/plain; version=0.0.4; charset=utf-8".into(),
    ));
    let mut text = app.metrics.render(app.started.elapsed());
    if let Keys::Edge(edge) = &app.keys {
        edge.render_metrics(&mut text);
    }
    r.body = text.into_bytes();
    r
}

/// `/v1/log/audit` and `/v1/log/error`: headers go out at once and the connection stays open
/// as an ndjson stream.
pub(super) fn log_stream(_: &App, _: &Ctx) -> Response {
    let mut r = Response::ok();
    r.headers
        .push(("Content-Type", "application/x-ndjson".into()));
    r.stream = true;
    r
}

/// `GET /v1/cluster/describe`: the members, the leader (`u64::MAX` when unknown, as upstream)
/// and this node's view (id, term, commit index, role).
pub(super) fn describe_cluster(app: &App, _: &Ctx) -> Response {
    let view = app
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Response::json(&view)
}
