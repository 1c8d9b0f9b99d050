//! The KES HTTP API: the route table, dispatch (path cleaning, redirects, method and auth
//! checks in upstream's order) and the handlers.
mod body;
mod cluster;
mod edge_keys;
mod enclaves;
mod errors;
mod identities;
mod keys;
mod listing;
pub(crate) mod logs;
mod metrics;
mod parked;
mod policies;
mod reply;
mod routes;
mod secrets;
mod system;
pub(crate) mod view;

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::auth::{authorize, Caller, Peer};
use crate::command::Command;
use crate::http::{percent_decode, Request, Response};
use crate::item::{ItemName, Kind as ItemKind};
use crate::store::{Store, StoreError, DEFAULT_ENCLAVE};

pub(crate) use edge_keys::{EdgeKeys, KeyStoreDown};
pub(crate) use keys::default_cipher;
pub(crate) use metrics::Metrics;
pub(crate) use parked::Parked;
use parked::{Granted, Routed};
pub(crate) use reply::{Fetch, Fetched, Reply, Resume, Wait};
pub(crate) use routes::{Handler, Route, EDGE_PATHS, ROUTES};

/// Where keys live.
pub(crate) enum Keys {
    /// In [`App::store`]: the stateful server (writes replicated by the cluster).
    Store,
    /// In a central key store behind a cache: the edge server. Its [`App::store`] holds only
    /// the config's policies and identities, in memory.
    Edge(std::sync::Arc<dyn EdgeKeys>),
}

/// Everything a handler may use.
pub(crate) struct App {
    pub store: Store,
    /// Where keys live (`Store` unless this is an edge server).
    pub keys: Keys,
    /// The routes served: all of [`ROUTES`], or upstream's stateless set on an edge server.
    pub routes: Vec<&'static Route>,
    /// Whether `Kes-Enclave` selects an enclave (the edge server has none and ignores it).
    pub enclaves: bool,
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
    pub cluster: std::sync::Mutex<view::Describe>,
    /// The configured HSM's last probe result (for `/v1/status`).
    pub hsm: std::sync::Arc<crate::hsm::health::HsmHealth>,
    /// Resolved rights of identities (see `auth/grants.rs`).
    pub grants: crate::auth::Grants,
}

/// One request as a handler sees it.
pub(crate) struct Ctx<'a> {
    pub req: &'a Request,
    /// The percent-decoded path remainder after the route's prefix.
    pub resource: String,
    /// Who is calling.
    pub caller: Caller<'a>,
    /// The enclave the request addresses (`Kes-Enclave`, else `default`).
    pub enclave: String,
    /// What the edge server's key store answered, when the request waited for it.
    pub fetched: Option<Fetched>,
}

impl Ctx<'_> {
    /// The caller's identity, or empty.
    pub(crate) fn identity(&self) -> &str {
        self.caller.id().unwrap_or_default()
    }
}

impl App {
    pub(crate) fn new(store: Store, admin: String) -> App {
        App {
            store,
            keys: Keys::Store,
            routes: ROUTES.iter().collect(),
            enclaves: true,
            admin,
            started: Instant::now(),
            started_at: crate::timefmt::now(),
            metrics: Metrics::default(),
            logs: logs::LogHub::default(),
            cluster: Default::default(),
            gating: Default::default(),
            member: std::sync::atomic::AtomicBool::new(true),
            skip_auth: Default::default(),
            hsm: Default::default(),
            grants: Default::default(),
        }
    }

    /// An edge server's app: upstream's stateless routes, keys in `edge`'s key store, and
    /// `store` (in memory) for the config's policies and identities.
    pub(crate) fn edge(store: Store, admin: String, edge: std::sync::Arc<dyn EdgeKeys>) -> App {
        let mut app = App::new(store, admin);
        app.keys = Keys::Edge(edge);
        app.routes = ROUTES
            .iter()
            .filter(|r| EDGE_PATHS.contains(&r.path))
            .collect();
        app.enclaves = false;
        app
    }

    /// The enclave `req` addresses: its `Kes-Enclave` header, else (and on an edge server,
    /// which has no enclaves) `default`.
    pub(crate) fn enclave_of(&self, req: &Request) -> String {
        match req.header("Kes-Enclave") {
            Some(v) if !v.is_empty() && self.enclaves => String::from_utf8_lossy(v).into_owned(),
            _ => DEFAULT_ENCLAVE.to_owned(),
        }
    }

    /// True if `identity` is known here (the admin, or an identity of some enclave): its
    /// connections are not evicted for newcomers when the server is full.
    pub(crate) fn is_known(&self, identity: &str) -> bool {
        if crate::auth::is_admin(&self.admin, identity) {
            return true;
        }
        if self.store.identity(DEFAULT_ENCLAVE, identity).is_ok() {
            return true;
        }
        // Bounded: a connection asks once, after its handshake.
        let enclaves = self.store.list_enclaves("").unwrap_or_default();
        enclaves
            .iter()
            .take(256)
            .any(|e| e != DEFAULT_ENCLAVE && self.store.identity(e, identity).is_ok())
    }

    /// Admission of a request's head, before its body is read (upstream's order: method, then
    /// authentication and policy): `Ok(limit)` reads at most `limit` body bytes and dispatch
    /// decides as usual; `Err(response)` refuses it now (answered, audited, and the
    /// connection closed with the body unread). The checks are dispatch's own; whatever they
    /// cannot decide from the head alone (unknown paths, redirects, names) is left to it.
    /// While the node holds undecided writes (`gating`), a refusal of a non-admin may still
    /// turn into a grant once they are decided: such a request goes the normal way.
    pub(crate) fn admit(&self, req: &Request, peer: &Peer) -> Result<usize, Response> {
        let route = match (is_clean(&req.path), find_route(&self.routes, &req.path)) {
            (true, Some(Match::Route(route))) => route,
            _ => return Ok(0),
        };
        if !self.serves(route) {
            return Ok(route.max_body);
        }
        let method_ok =
            req.method == route.method || (route.method == "PUT" && req.method == "POST");
        let gating = || self.gating.load(Relaxed);
        let refused = if !method_ok {
            match self.route(req) {
                Err((resp, _)) => resp,
                Ok(_) => return Ok(route.max_body),
            }
        } else {
            let Some(path) = percent_decode(&req.path) else {
                return Ok(route.max_body);
            };
            let (enclave, auth) = self.enclave_and_auth(req, route);
            let grants = &self.grants;
            match authorize(
                &self.store,
                grants,
                &self.admin,
                auth,
                peer,
                &enclave,
                &path,
            ) {
                Ok(_) => return Ok(route.max_body),
                Err(_) if gating() => return Ok(route.max_body),
                Err(resp) => resp,
            }
        };
        let done = Done {
            started: Instant::now(),
            counted: route.counted && method_ok,
            ip: peer.ip,
            identity: peer.identity.as_deref().unwrap_or_default().into(),
            enclave: self.enclave_of(req).into(),
            method: req.method.as_str().into(),
            path: req.path.as_str().into(),
        };
        Err(self.record(&done, refused))
    }

    /// The enclave a request addresses (`Kes-Enclave`, else `default`; always `default` on an
    /// edge server) and how its route authenticates (`api.<path>.skip_auth` relaxes `Verify`).
    /// Shared by [`App::admit`] (after the head) and dispatch (after the body), which must agree.
    fn enclave_and_auth(&self, req: &Request, route: &Route) -> (String, crate::auth::Auth) {
        let enclave = match req.header("Kes-Enclave") {
            Some(v) if !v.is_empty() && self.enclaves => String::from_utf8_lossy(v).into_owned(),
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
        (enclave, auth)
    }

    /// Answers one request, or returns the write it needs or what it waits for; records it in
    /// the audit log and the metrics once it is answered.
    pub(crate) fn handle(&self, req: Request, peer: &Peer) -> Outcome {
        let started = Instant::now();
        match self.route(&req) {
            Ok((route, resource, path)) => {
                let (enclave, auth) = self.enclave_and_auth(&req, route);
                let routed = Routed {
                    req,
                    route,
                    resource,
                    path,
                    enclave,
                    auth,
                    granted: None,
                    started,
                };
                self.go_on(routed, peer, false, None)
            }
            Err((resp, route)) => {
                let done = Done {
                    started,
                    counted: route.is_some_and(|r| r.counted),
                    ip: peer.ip,
                    identity: peer.identity.as_deref().unwrap_or_default().into(),
                    enclave: self.enclave_of(&req).into(),
                    method: req.method.into(),
                    path: req.path.into(),
                };
                Outcome::Done(self.record(&done, resp))
            }
        }
    }

    /// Goes on with a request that waited, the way `resume` says: from where it parked,
    /// neither routed nor (if it was before it parked) authorized again.
    pub(crate) fn resume(&self, parked: Box<Parked>, resume: Resume) -> Outcome {
        let Parked { routed, peer } = *parked;
        match resume {
            Resume::Granted => self.go_on(routed, &peer, true, None),
            Resume::Refused(why) => {
                let done = Done::of(&routed, &peer, true);
                Outcome::Done(self.record(&done, Response::error(503, &why)))
            }
            Resume::Fetched(fetched) => self.go_on(routed, &peer, true, Some(fetched)),
        }
    }

    /// Answers a write once its outcome is known.
    pub(crate) fn finish(
        &self,
        pending: Box<Pending>,
        outcome: Result<(), StoreError>,
    ) -> Response {
        let resp = pending.write.respond(outcome);
        self.record(&pending.done, resp)
    }

    /// Counts, audits and (for server errors) logs an answered request.
    fn record(&self, done: &Done, resp: Response) -> Response {
        let took = done.started.elapsed();
        if done.counted {
            self.metrics.record(resp.status, Some(took));
        }
        let audited = logs::Audited {
            ip: done.ip,
            path: &done.path,
            identity: &done.identity,
            enclave: &done.enclave,
        };
        self.logs.audit(audited, resp.status, took);
        if resp.status >= 500 {
            let message = String::from_utf8_lossy(&resp.body);
            self.logs.error_in(
                &done.enclave,
                &format!(
                    "{} {}: {} {}",
                    done.method,
                    done.path,
                    resp.status,
                    message.trim()
                ),
            );
        }
        resp
    }

    /// Routes a request: its route, percent-decoded resource and path; or the answer for a
    /// path no route serves, a redirect, a node that is not a member, a wrong method (with the
    /// route when it counts in the metrics).
    fn route(
        &self,
        req: &Request,
    ) -> Result<(&'static Route, String, String), (Response, Option<&'static Route>)> {
        self.metrics.routed.fetch_add(1, Relaxed);
        let Some(route_match) = (if is_clean(&req.path) {
            find_route(&self.routes, &req.path)
        } else {
            None
        }) else {
            if !is_clean(&req.path) {
                let to = with_query(&clean(&req.path), req);
                return Err((Response::moved(&to, &req.method), None));
            }
            return Err((Response::text(404, "404 page not found\n"), None));
        };
        let route = match route_match {
            Match::Redirect(to) => {
                return Err((Response::moved(&with_query(&to, req), &req.method), None))
            }
            Match::Route(route) => route,
        };
        if !self.serves(route) {
            return Err((Response::error(503, NOT_A_MEMBER), Some(route)));
        }
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
            r.headers.insert(0, ("Accept", route.method.into()));
            return Err((r, None));
        }
        match (
            percent_decode(resource_of(route, &req.path)),
            percent_decode(&req.path),
        ) {
            (Some(resource), Some(path)) => Ok((route, resource, path)),
            _ => Err((Response::text(400, "400 Bad Request"), None)),
        }
    }

    /// False while this node is not a member: it then serves only `/version` and
    /// `/v1/cluster/describe`.
    fn serves(&self, route: &Route) -> bool {
        self.member.load(Relaxed)
            || route.path == "/version"
            || route.path == "/v1/cluster/describe"
    }

    /// Takes a routed request on from where it is: the gate (if it must wait before it is
    /// authorized), authorization (once), the handler. `granted`: it comes back from a wait.
    fn go_on(
        &self,
        mut r: Routed,
        peer: &Peer,
        granted: bool,
        fetched: Option<Fetched>,
    ) -> Outcome {
        if granted && !self.serves(r.route) {
            // Removed from the cluster while it waited.
            let done = Done::of(&r, peer, r.route.counted);
            return Outcome::Done(self.record(&done, Response::error(503, NOT_A_MEMBER)));
        }
        let gating = !granted && self.gating.load(Relaxed);
        // Two-phase visibility covers the caller too: while this node holds undecided writes
        // of the caller's identity, of a policy in its enclave or of the enclave itself, the
        // request waits for them like a read of those names (together with what it reads),
        // and is authorized once they are decided.
        if gating && r.granted.is_none() && r.auth != crate::auth::Auth::None {
            if let Ok(id) = &peer.identity {
                if !crate::auth::is_admin(&self.admin, id) {
                    let mut names = vec![
                        ItemName::item(ItemKind::Identity, &r.enclave, id),
                        ItemName::listing(ItemKind::Policy, &r.enclave),
                        ItemName::enclave(&r.enclave),
                    ];
                    if !matches!(r.route.handler, Handler::Write(_)) {
                        names.extend(
                            read_names(r.route, &r.enclave, &r.resource, id).unwrap_or_default(),
                        );
                    }
                    return park(r, peer, Wait::Gate(names));
                }
            }
        }
        let caller = match r.granted {
            Some(granted) => granted.caller(peer),
            None => {
                self.metrics.authorized.fetch_add(1, Relaxed);
                let grants = &self.grants;
                match authorize(
                    &self.store,
                    grants,
                    &self.admin,
                    r.auth,
                    peer,
                    &r.enclave,
                    &r.path,
                ) {
                    Ok(caller) => caller,
                    Err(resp) => {
                        let done = Done::of(&r, peer, r.route.counted);
                        return Outcome::Done(self.record(&done, resp));
                    }
                }
            }
        };
        r.granted = Some(Granted::of(&caller));
        let route = r.route;
        // The context borrows the request and owns the strings it needs, which go back into
        // the routed request if it parks.
        let ctx = Ctx {
            req: &r.req,
            resource: std::mem::take(&mut r.resource),
            caller,
            enclave: std::mem::take(&mut r.enclave),
            fetched,
        };
        let reply = match route.handler {
            Handler::Write(f) => f(self, &ctx),
            read => {
                let names = || read_names(route, &ctx.enclave, &ctx.resource, ctx.identity());
                match (gating.then(names).flatten(), read) {
                    (Some(names), _) => Reply::Gate(names),
                    (None, Handler::Read(f)) => Reply::Now(f(self, &ctx)),
                    (None, Handler::KeyRead(f) | Handler::Write(f)) => f(self, &ctx),
                }
            }
        };
        let Ctx {
            resource, enclave, ..
        } = ctx;
        (r.resource, r.enclave) = (resource, enclave);
        match reply {
            Reply::Now(resp) => {
                let done = Done::of(&r, peer, route.counted);
                Outcome::Done(self.record(&done, resp))
            }
            Reply::Write(write) => {
                let done = Done::of(&r, peer, route.counted).into_owned();
                Outcome::Write(Box::new(Pending { write, done }))
            }
            Reply::Gate(names) => park(r, peer, Wait::Gate(names)),
            Reply::Fetch(fetch) => park(r, peer, Wait::Fetch(fetch)),
        }
    }

    /// Applies a state change to this node's store directly, bypassing replication: only for
    /// state every node derives the same way on its own (the config's static policies).
    pub(crate) fn write_local(&self, cmd: Command) -> Result<(), StoreError> {
        self.store.apply(&cmd)
    }
}

/// What became of a request.
pub(crate) enum Outcome {
    Done(Response),
    /// A write waiting for its outcome; answer it with [`App::finish`].
    Write(Box<Pending>),
    /// A request that must wait (for the cluster's gate, or the edge server's key store):
    /// hand the [`Wait`] to the backend, keep the [`Parked`] request, and go on with
    /// [`App::resume`].
    Wait(Box<Parked>, Wait),
}

/// Parks a routed request with its caller.
fn park(routed: Routed, peer: &Peer, wait: Wait) -> Outcome {
    let parked = Parked {
        routed,
        peer: peer.clone(),
    };
    Outcome::Wait(Box::new(parked), wait)
}

/// Why a node that is not a member of its cluster refuses a request.
const NOT_A_MEMBER: &str =
    "cluster: this node is not a member of the cluster (it is joining, or was removed)";

/// The names a read route reads (an item, or a listing), built as [`Command::touches`]
/// builds those of writes.
fn read_names(route: &Route, e: &str, resource: &str, identity: &str) -> Option<Vec<ItemName>> {
    let mut parts = route.path.trim_matches('/').split('/').skip(1);
    let (kind, op) = (parts.next()?, parts.next()?);
    let name = match (kind, op) {
        ("enclave", "list") => ItemName::Enclaves,
        ("enclave", _) => ItemName::enclave(resource),
        (kind, op) => {
            let kind = ItemKind::parse(kind)?;
            match op {
                "list" => ItemName::listing(kind, e),
                "self" if kind == ItemKind::Identity => ItemName::item(kind, e, identity),
                _ => ItemName::item(kind, e, resource),
            }
        }
    };
    Some(vec![name])
}

/// A write in flight and what the audit log needs once it is answered.
pub(crate) struct Pending {
    pub write: reply::Write,
    done: Done<'static>,
}

/// What the audit log and the metrics need of an answered request: borrowed from the request
/// when it is answered at once (no copies per request), owned by a write that waits.
struct Done<'a> {
    started: Instant,
    counted: bool,
    ip: Option<std::net::IpAddr>,
    identity: Cow<'a, str>,
    /// The enclave the request addressed (its audit event and errors belong to it).
    enclave: Cow<'a, str>,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
}

impl<'a> Done<'a> {
    /// What the audit log needs of a routed request once it is answered.
    fn of(r: &'a Routed, peer: &'a Peer, counted: bool) -> Done<'a> {
        Done {
            started: r.started,
            counted,
            ip: peer.ip,
            identity: peer.identity.as_deref().unwrap_or_default().into(),
            enclave: r.enclave.as_str().into(),
            method: r.req.method.as_str().into(),
            path: r.req.path.as_str().into(),
        }
    }

    /// The same, owning its strings (a write that waits for its outcome).
    fn into_owned(self) -> Done<'static> {
        Done {
            identity: self.identity.into_owned().into(),
            enclave: self.enclave.into_owned().into(),
            method: self.method.into_owned().into(),
            path: self.path.into_owned().into(),
            ..self
        }
    }
}

enum Match {
    Route(&'static Route),
    Redirect(String),
}

/// Finds the route for an (encoded) path, like Go's ServeMux: exact paths match exactly,
/// subtree paths (ending in `/`) match by prefix, and a subtree root without its slash redirects.
fn find_route(routes: &[&'static Route], path: &str) -> Option<Match> {
    for &route in routes {
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

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: None,
            minor_version: 1,
            headers: Vec::new(),
            has_body: false,
            body: Vec::new(),
            body_truncated: false,
            keep_alive: true,
        }
    }

    fn gate_of(app: &App, req: &Request, identity: &str) -> Option<Vec<ItemName>> {
        let peer = Peer {
            identity: Ok(identity.into()),
            ip: None,
        };
        match app.handle(request(&req.method, &req.path), &peer) {
            Outcome::Wait(_, Wait::Gate(names)) => Some(names),
            _ => None,
        }
    }

    /// While the node holds undecided writes, a non-admin caller waits at the gate for its
    /// identity, its enclave's policies and the enclave (plus what it reads); the admin, whom
    /// no stored record authorizes, waits only for what it reads; nothing waits otherwise.
    #[test]
    fn callers_wait_for_pending_writes_of_what_authorizes_them() {
        let dir = std::env::temp_dir().join(format!(
            "kes-node-api-gate-{}-{}",
            std::process::id(),
            crate::random::bytes::<4>()[0]
        ));
        let hsm = crate::hsm::SoftHsmDevice(kes_core::hsm::SoftHsm::from_key(
            kes_core::crypto::SecretKey::new(kes_core::crypto::Cipher::Aes256, [7; 32]),
        ));
        let admin = "a".repeat(64);
        let app = App::new(Store::open(&dir, &hsm).unwrap(), admin.clone());
        let user = "b".repeat(64);
        let read = request("GET", "/v1/key/describe/k1");
        let write = request("PUT", "/v1/key/create/k1");

        assert_eq!(gate_of(&app, &read, &user), None);
        app.gating.store(true, std::sync::atomic::Ordering::Relaxed);
        let names = gate_of(&app, &read, &user).expect("a read by a user waits");
        assert_eq!(
            names,
            [
                ItemName::item(ItemKind::Identity, "default", &user),
                ItemName::listing(ItemKind::Policy, "default"),
                ItemName::enclave("default"),
                ItemName::item(ItemKind::Key, "default", "k1"),
            ]
        );
        let names = gate_of(&app, &write, &user).expect("a write by a user waits");
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(
            gate_of(&app, &read, &admin),
            Some(vec![ItemName::item(ItemKind::Key, "default", "k1")])
        );
        assert_eq!(
            gate_of(&app, &write, &admin),
            None,
            "the admin's write goes on"
        );

        // Admission of a head: a refusal waits for the gate's decision; the admin goes on.
        let peer = |id: &str| Peer {
            identity: Ok(id.into()),
            ip: None,
        };
        let create = request("PUT", "/v1/secret/create/s1");
        assert!(
            app.admit(&create, &peer(&user)).is_ok(),
            "gating: decided later"
        );
        assert!(app.admit(&create, &peer(&admin)).is_ok());
        app.gating
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let refused = app.admit(&create, &peer(&user)).unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(app.admit(&create, &peer(&admin)).unwrap() > 0);
        let refused = app.admit(&request("GET", "/v1/key/create/k"), &peer(&admin));
        assert_eq!(refused.unwrap_err().status, 405);
        // Unknown paths are left to dispatch (404, with the body drained or not read).
        assert_eq!(
            app.admit(&request("PUT", "/nowhere"), &peer(&user)).ok(),
            Some(0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every read of an item waits for the writes to that item and to its listing: the names
    /// the read route builds are among those the command declares.
    #[test]
    fn reads_wait_for_the_names_writes_touch() {
        let dir = std::env::temp_dir().join(format!(
            "kes-node-api-touch-{}-{}",
            std::process::id(),
            crate::random::bytes::<4>()[0]
        ));
        let hsm = crate::hsm::SoftHsmDevice(kes_core::hsm::SoftHsm::from_key(
            kes_core::crypto::SecretKey::new(kes_core::crypto::Cipher::Aes256, [7; 32]),
        ));
        let admin = "a".repeat(64);
        let app = App::new(Store::open(&dir, &hsm).unwrap(), admin.clone());
        app.gating.store(true, std::sync::atomic::Ordering::Relaxed);
        let d = || "default".to_string();
        let who = "c".repeat(64);
        let cases = [
            (
                Command::DeleteKey {
                    enclave: d(),
                    name: "k1".into(),
                },
                &[
                    "/v1/key/describe/k1",
                    "/v1/key/list/*",
                    "PUT /v1/key/generate/k1",
                ][..],
            ),
            (
                Command::DeletePolicy {
                    enclave: d(),
                    name: "p1".into(),
                },
                &[
                    "/v1/policy/describe/p1",
                    "/v1/policy/read/p1",
                    "/v1/policy/list/*",
                ],
            ),
            (
                Command::DeleteIdentity {
                    enclave: d(),
                    identity: who.clone(),
                },
                &[
                    &format!("/v1/identity/describe/{who}"),
                    "/v1/identity/list/*",
                ],
            ),
            (
                Command::DeleteSecret {
                    enclave: d(),
                    name: "s1".into(),
                },
                &[
                    "/v1/secret/describe/s1",
                    "/v1/secret/read/s1",
                    "/v1/secret/list",
                ],
            ),
            (
                Command::DeleteEnclave { name: "t1".into() },
                &["/v1/enclave/describe/t1", "/v1/enclave/list/*"],
            ),
        ];
        for (cmd, reads) in cases {
            let touched = cmd.touches();
            for read in reads {
                let (method, path) = read.split_once(' ').unwrap_or(("GET", read));
                let names = gate_of(&app, &request(method, path), &admin)
                    .unwrap_or_else(|| panic!("{path} waits at the gate"));
                for name in names {
                    assert!(touched.contains(&name), "{path}: {name} not in {touched:?}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
