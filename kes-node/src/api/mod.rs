//! The KES HTTP API: the route table, dispatch (path cleaning, redirects, method and auth
//! checks in upstream's order) and the handlers.
mod body;
mod enclaves;
mod errors;
mod identities;
mod keys;
pub mod logs;
mod metrics;
mod policies;
mod routes;
mod secrets;
mod system;

use std::time::Instant;

use crate::auth::{authorize, Caller, Peer};
use crate::command::Command;
use crate::http::{percent_decode, Request, Response};
use crate::store::{Store, StoreError, DEFAULT_ENCLAVE};

pub use body::b64;
pub use metrics::Metrics;
pub use routes::{Route, ROUTES};

/// Everything a handler may use.
pub struct App {
    pub store: Store,
    /// The admin identity (`admin.identity`); a non-hex value disables admin access.
    pub admin: String,
    pub started: Instant,
    pub started_at: time::OffsetDateTime,
    pub metrics: Metrics,
    pub logs: logs::LogHub,
}

/// One request as a handler sees it.
pub struct Ctx<'a> {
    pub req: &'a Request,
    /// The percent-decoded path remainder after the route's prefix.
    pub resource: String,
    /// Who is calling.
    pub caller: Caller<'a>,
    /// The enclave the request addresses (`Kes-Enclave`, else `default`).
    pub enclave: String,
}

impl Ctx<'_> {
    /// The caller's identity, or empty.
    pub fn identity(&self) -> &str {
        self.caller.id().unwrap_or_default()
    }
}

impl App {
    pub fn new(store: Store, admin: String) -> App {
        App {
            store,
            admin,
            started: Instant::now(),
            started_at: crate::timefmt::now(),
            metrics: Metrics::default(),
            logs: logs::LogHub::default(),
        }
    }

    /// How many body bytes the route of `req` accepts (0 for unknown routes).
    pub fn body_limit(&self, req: &Request) -> usize {
        match find_route(&req.path) {
            Some(Match::Route(r)) => r.max_body,
            _ => 0,
        }
    }

    /// Answers one request and records it in the audit log.
    pub fn handle(&self, req: &Request, peer: &Peer) -> Response {
        let started = Instant::now();
        let resp = self.dispatch(req, peer);
        let identity = peer.identity.as_deref().unwrap_or_default();
        self.logs
            .audit(peer.ip, &req.path, identity, resp.status, started.elapsed());
        if resp.status >= 500 {
            let message = String::from_utf8_lossy(&resp.body);
            self.logs.error(&format!(
                "{} {}: {} {}",
                req.method,
                req.path,
                resp.status,
                message.trim()
            ));
        }
        resp
    }

    fn dispatch(&self, req: &Request, peer: &Peer) -> Response {
        let Some(route_match) = (if is_clean(&req.path) {
            find_route(&req.path)
        } else {
            None
        }) else {
            if !is_clean(&req.path) {
                return Response::moved(&with_query(&clean(&req.path), req), &req.method);
            }
            return Response::text(404, "404 page not found\n");
        };
        let route = match route_match {
            Match::Redirect(to) => return Response::moved(&with_query(&to, req), &req.method),
            Match::Route(route) => route,
        };
        let raw_resource = resource_of(route, &req.path);
        let method_ok =
            req.method == route.method || (route.method == "PUT" && req.method == "POST");
        if !method_ok {
            let mut r = Response::error(
                405,
                &format!(
                    "received method '{}' expected '{}'",
                    req.method, route.method
                ),
            );
            r.headers.insert(0, ("Accept", route.method.to_owned()));
            return r;
        }
        let Some(resource) = percent_decode(raw_resource) else {
            return Response::text(400, "400 Bad Request");
        };
        let Some(path) = percent_decode(&req.path) else {
            return Response::text(400, "400 Bad Request");
        };
        let enclave = match req.header("Kes-Enclave") {
            Some(v) if !v.is_empty() => String::from_utf8_lossy(v).into_owned(),
            _ => DEFAULT_ENCLAVE.to_owned(),
        };
        let caller = match authorize(&self.store, &self.admin, route.auth, peer, &enclave, &path) {
            Ok(c) => c,
            Err(resp) => return self.count(route, resp, None),
        };
        let started = Instant::now();
        let ctx = Ctx {
            req,
            resource,
            caller,
            enclave,
        };
        let resp = (route.handler)(self, &ctx);
        self.count(route, resp, Some(started))
    }

    /// Applies a state change. (With clusters this is where a command is replicated.)
    pub fn write(&self, cmd: Command) -> Result<(), StoreError> {
        self.store.apply(&cmd)
    }

    fn count(&self, route: &Route, resp: Response, started: Option<Instant>) -> Response {
        if route.counted {
            self.metrics
                .record(resp.status, started.map(|s| s.elapsed()));
        }
        resp
    }
}

enum Match {
    Route(&'static Route),
    Redirect(String),
}

/// Finds the route for an (encoded) path, like Go's ServeMux: exact paths match exactly,
/// subtree paths (ending in `/`) match by prefix, and a subtree root without its slash redirects.
fn find_route(path: &str) -> Option<Match> {
    for route in ROUTES {
        if route.path.ends_with('/') {
            if path.starts_with(route.path) {
                return Some(Match::Route(route));
            }
            if path.len() + 1 == route.path.len() && route.path.starts_with(path) {
                return Some(Match::Redirect(route.path.to_owned()));
            }
        } else if path == route.path {
            return Some(Match::Route(route));
        }
    }
    None
}

/// The resource of a matched subtree route: the encoded remainder of the path.
fn resource_of<'p>(route: &Route, path: &'p str) -> &'p str {
    path.strip_prefix(route.path).unwrap_or("")
}

fn with_query(path: &str, req: &Request) -> String {
    match &req.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// True if `clean(path) == path`.
fn is_clean(path: &str) -> bool {
    !(path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/.."))
}

/// Go's `path.Clean`, keeping a trailing slash (as ServeMux does).
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&parts.join("/"));
    if (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..")) && out.len() > 1 {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(
            clean("/v1/key/describe//wire-k1"),
            "/v1/key/describe/wire-k1"
        );
        assert_eq!(
            clean("/v1/key/x/../describe/wire-k1"),
            "/v1/key/describe/wire-k1"
        );
        assert_eq!(clean("/v1/key/list/"), "/v1/key/list/");
        assert!(is_clean("/v1/key/create/wire-k9/"));
        assert!(!is_clean("/a/./b"));
    }
}
