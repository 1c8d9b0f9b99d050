//! The KES HTTP API: the route table, dispatch (path cleaning, redirects, method and auth
//! checks in upstream's order) and the handlers.
mod body;
mod cluster;
mod enclaves;
mod errors;
mod identities;
mod keys;
pub mod logs;
mod metrics;
mod policies;
mod reply;
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
pub use reply::{Reply, Write};
pub use routes::{Handler, Route, ROUTES};

/// Everything a handler may use.
pub struct App {
    pub store: Store,
    /// The admin identity (`admin.identity`); a non-hex value disables admin access.
    pub admin: String,
    pub started: Instant,
    pub started_at: time::OffsetDateTime,
    pub metrics: Metrics,
    pub logs: logs::LogHub,
    /// False while this node is not a member of its cluster (joining, or removed): it then
    /// answers nothing but `/version` and `/v1/cluster/describe`.
    pub member: std::sync::atomic::AtomicBool,
    /// Routes configured with `api.<path>.skip_auth: true`: they identify callers but refuse
    /// nobody (upstream's option for `/v1/ready`, `/v1/status` and the like).
    pub skip_auth: std::collections::HashSet<String>,
    /// True while this node holds writes of undecided outcome: reads then pass the gate.
    pub gating: std::sync::atomic::AtomicBool,
    /// The cluster as the event loop last saw it (for `/v1/cluster/describe`).
    pub cluster: std::sync::Mutex<crate::cluster::Describe>,
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
            cluster: Default::default(),
            gating: Default::default(),
            member: std::sync::atomic::AtomicBool::new(true),
            skip_auth: Default::default(),
        }
    }

    /// How many body bytes the route of `req` accepts (0 for unknown routes).
    pub fn body_limit(&self, req: &Request) -> usize {
        match find_route(&req.path) {
            Some(Match::Route(r)) => r.max_body,
            _ => 0,
        }
    }

    /// Answers one request, or returns the write it needs; records it in the audit log and
    /// the metrics once it is answered.
    /// `granted` is true when the request comes back after its read gate opened.
    pub fn handle(&self, req: &Request, peer: &Peer, granted: bool) -> Outcome {
        let (reply, route) = self.dispatch(req, peer, granted);
        let done = Done {
            started: Instant::now(),
            counted: route.is_some_and(|r| r.counted),
            ip: peer.ip,
            identity: peer.identity.as_deref().unwrap_or_default().to_owned(),
            method: req.method.clone(),
            path: req.path.clone(),
        };
        match reply {
            Reply::Now(resp) => Outcome::Done(self.record(&done, resp)),
            Reply::Write(write) => Outcome::Write(Box::new(Pending { write, done })),
            Reply::Gate(names) => Outcome::Gate(names),
        }
    }

    /// Answers a write once its outcome is known.
    pub fn finish(&self, pending: Box<Pending>, outcome: Result<(), StoreError>) -> Response {
        let resp = pending.write.respond(outcome);
        self.record(&pending.done, resp)
    }

    /// Answers a gated read that may not be served (`503` with the reason).
    pub fn read_refused(&self, req: &Request, peer: &Peer, why: &str) -> Response {
        let done = Done {
            started: Instant::now(),
            counted: true,
            ip: peer.ip,
            identity: peer.identity.as_deref().unwrap_or_default().to_owned(),
            method: req.method.clone(),
            path: req.path.clone(),
        };
        self.record(&done, Response::error(503, why))
    }

    /// Counts, audits and (for server errors) logs an answered request.
    fn record(&self, done: &Done, resp: Response) -> Response {
        let took = done.started.elapsed();
        if done.counted {
            self.metrics.record(resp.status, Some(took));
        }
        self.logs
            .audit(done.ip, &done.path, &done.identity, resp.status, took);
        if resp.status >= 500 {
            let message = String::from_utf8_lossy(&resp.body);
            self.logs.error(&format!(
                "{} {}: {} {}",
                done.method,
                done.path,
                resp.status,
                message.trim()
            ));
        }
        resp
    }

    fn dispatch(
        &self,
        req: &Request,
        peer: &Peer,
        granted: bool,
    ) -> (Reply, Option<&'static Route>) {
        let Some(route_match) = (if is_clean(&req.path) {
            find_route(&req.path)
        } else {
            None
        }) else {
            if !is_clean(&req.path) {
                return (
                    Response::moved(&with_query(&clean(&req.path), req), &req.method).into(),
                    None,
                );
            }
            return (Response::text(404, "404 page not found\n").into(), None);
        };
        let route = match route_match {
            Match::Redirect(to) => {
                return (
                    Response::moved(&with_query(&to, req), &req.method).into(),
                    None,
                )
            }
            Match::Route(route) => route,
        };
        let member = self.member.load(std::sync::atomic::Ordering::Relaxed);
        if !member && route.path != "/version" && route.path != "/v1/cluster/describe" {
            let why =
                "cluster: this node is not a member of the cluster (it is joining, or was removed)";
            return (Response::error(503, why).into(), Some(route));
        }
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
            return (r.into(), None);
        }
        let (Some(resource), Some(path)) =
            (percent_decode(raw_resource), percent_decode(&req.path))
        else {
            return (Response::text(400, "400 Bad Request").into(), None);
        };
        let enclave = match req.header("Kes-Enclave") {
            Some(v) if !v.is_empty() => String::from_utf8_lossy(v).into_owned(),
            _ => DEFAULT_ENCLAVE.to_owned(),
        };
        let auth = match route.auth {
            crate::auth::Auth::Verify
                if self.skip_auth.contains(route.path.trim_end_matches('/')) =>
            {
                crate::auth::Auth::IdentifyOnly
            }
            a => a,
        };
        let caller = match authorize(&self.store, &self.admin, auth, peer, &enclave, &path) {
            Ok(c) => c,
            Err(resp) => return (resp.into(), Some(route)),
        };
        let ctx = Ctx {
            req,
            resource,
            caller,
            enclave,
        };
        let reply = match route.handler {
            Handler::Read(f) => {
                let gate = !granted && self.gating.load(std::sync::atomic::Ordering::Relaxed);
                match gate.then(|| read_names(route, &ctx)).flatten() {
                    Some(names) => Reply::Gate(names),
                    None => Reply::Now(f(self, &ctx)),
                }
            }
            Handler::Write(f) => f(self, &ctx),
        };
        (reply, Some(route))
    }

    /// Applies a state change to this node's store directly, bypassing replication: only for
    /// state every node derives the same way on its own (the config's static policies).
    pub fn write_local(&self, cmd: Command) -> Result<(), StoreError> {
        self.store.apply(&cmd)
    }
}

/// What became of a request.
pub enum Outcome {
    Done(Response),
    /// A write waiting for its outcome; answer it with [`App::finish`].
    Write(Box<Pending>),
    /// A read that must wait for pending writes to these names; handle it again (granted)
    /// once the cluster releases it, or answer [`App::read_refused`].
    Gate(Vec<String>),
}

/// The names a read route reads (`<kind>/<enclave>/<name>`, or `<kind>/<enclave>` for a
/// listing), matching what [`Command::touches`] declares for writes.
fn read_names(route: &Route, ctx: &Ctx) -> Option<Vec<String>> {
    let mut parts = route.path.trim_matches('/').split('/').skip(1);
    let (kind, op) = (parts.next()?, parts.next()?);
    let e = &ctx.enclave;
    let name = match (kind, op) {
        ("key" | "policy" | "secret", "list") => format!("{kind}/{e}"),
        ("identity", "list") => format!("identity/{e}"),
        ("identity", "self") => format!("identity/{e}/{}", ctx.identity()),
        ("enclave", "list") => "enclave".to_string(),
        ("enclave", _) => format!("enclave/{}", ctx.resource),
        ("key" | "policy" | "secret" | "identity", _) => format!("{kind}/{e}/{}", ctx.resource),
        _ => return None,
    };
    Some(vec![name])
}

/// A write in flight and what the audit log needs once it is answered.
pub struct Pending {
    pub write: reply::Write,
    done: Done,
}

struct Done {
    started: Instant,
    counted: bool,
    ip: Option<std::net::IpAddr>,
    identity: String,
    method: String,
    path: String,
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
