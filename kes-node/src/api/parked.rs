//! A request after routing: its route, resource, enclave and, once decided, who it was
//! authorized as. A request that has to wait (the cluster's read gate, the edge server's key
//! store) is parked as it is and goes on from there when it resumes: it is neither routed nor
//! authorized a second time.
//!
//! What that means for security: a request is authorized once, against the state it sees.
//! A non-admin caller whose identity, enclave or policies have undecided writes on this node
//! waits at the gate *before* it is authorized, so it is judged by their outcome. A request
//! authorized before it parked (the admin's read at the gate, a key an edge server fetches)
//! is served as admitted, like a write admitted before a revocation commits: it is ordered
//! before the change. Log streams are different: they last, and are re-checked while they
//! stream (`api/logs.rs`).
use std::time::Instant;

use super::Route;
use crate::auth::{Auth, Caller, Peer};
use crate::http::Request;

/// A routed request.
pub(super) struct Routed {
    pub req: Request,
    pub route: &'static Route,
    /// The percent-decoded path remainder after the route's prefix.
    pub resource: String,
    /// The percent-decoded path (what policies match).
    pub path: String,
    pub enclave: String,
    pub auth: Auth,
    /// Who the caller was authorized as; `None` until it is.
    pub granted: Option<Granted>,
    /// When it arrived: its latency and audit time cover its waits, as a write's do.
    pub started: Instant,
}

/// A request that waits, with the caller it waits for: hand it back to [`super::App::resume`].
pub(crate) struct Parked {
    pub(super) routed: Routed,
    pub(super) peer: Peer,
}

/// A [`Caller`] without the borrow of its identity, which the [`Peer`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Granted {
    Anonymous,
    Admin,
    Identity { enclave_admin: bool },
}

impl Granted {
    pub(super) fn of(caller: &Caller<'_>) -> Granted {
        match caller {
            Caller::Anonymous => Granted::Anonymous,
            Caller::Admin(_) => Granted::Admin,
            Caller::Identity { enclave_admin, .. } => Granted::Identity {
                enclave_admin: *enclave_admin,
            },
        }
    }

    /// The caller again, borrowing its identity from `peer` (the one it was granted to; a
    /// peer without an identity can only have been anonymous).
    pub(super) fn caller(self, peer: &Peer) -> Caller<'_> {
        match (self, peer.identity.as_deref()) {
            (Granted::Admin, Ok(id)) => Caller::Admin(id),
            (Granted::Identity { enclave_admin }, Ok(id)) => Caller::Identity { id, enclave_admin },
            _ => Caller::Anonymous,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use crate::api::{App, Outcome, Resume, Wait};
    use crate::auth::Peer;
    use crate::command::Command;
    use crate::http::{Request, Response};
    use crate::records::{IdentityRecord, PolicyRecord};
    use crate::store::{Store, DEFAULT_ENCLAVE as D};

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            minor_version: 1,
            keep_alive: true,
            ..Request::default()
        }
    }

    fn peer(id: &str) -> Peer {
        Peer {
            identity: Ok(id.into()),
            ip: None,
        }
    }

    /// An app whose user `b…` may describe keys, with a key `k1`; it gates (as a node with
    /// undecided writes does).
    fn app() -> (App, String, String) {
        let (admin, user) = ("a".repeat(64), "b".repeat(64));
        let app = App::new(Store::in_memory().unwrap(), admin.clone());
        let now = crate::timefmt::now();
        let commands = [
            Command::CreatePolicy {
                enclave: D.into(),
                name: "describe".into(),
                policy: PolicyRecord {
                    allow: vec!["/v1/key/describe/*".into()],
                    deny: Vec::new(),
                    created_at: now,
                    created_by: admin.clone(),
                },
                replace: false,
            },
            Command::CreateIdentity {
                enclave: D.into(),
                identity: user.clone(),
                record: IdentityRecord {
                    policy: "describe".into(),
                    admin: false,
                    ttl: std::time::Duration::ZERO,
                    expires_at: None,
                    created_at: now,
                    created_by: admin.clone(),
                    children: Vec::new(),
                },
                replace: false,
            },
        ];
        for cmd in commands {
            app.write_local(cmd).unwrap();
        }
        app.gating.store(true, Relaxed);
        (app, admin, user)
    }

    fn counts(app: &App) -> (u64, u64) {
        (
            app.metrics.routed.load(Relaxed),
            app.metrics.authorized.load(Relaxed),
        )
    }

    fn done(outcome: Outcome) -> Response {
        match outcome {
            Outcome::Done(resp) => resp,
            _ => panic!("answered"),
        }
    }

    /// The admin's read is authorized, then waits at the gate; when the gate opens it goes on
    /// from there: routed once, authorized once.
    #[test]
    fn a_parked_request_is_routed_and_authorized_once() {
        let (app, admin, _) = app();
        let Outcome::Wait(parked, Wait::Gate(_)) =
            app.handle(get("/v1/key/describe/k1"), &peer(&admin))
        else {
            panic!("the read waits at the gate");
        };
        assert_eq!(counts(&app), (1, 1));
        let resp = done(app.resume(parked, Resume::Granted));
        assert_eq!(resp.status, 404, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(counts(&app), (1, 1), "routed and authorized again");
    }

    /// A user's read waits at the gate *before* it is authorized (its identity's writes may be
    /// undecided): it is authorized once, against what was decided meanwhile. Revoked while
    /// it waited: refused.
    #[test]
    fn a_caller_held_at_the_gate_is_authorized_by_what_was_decided() {
        let (app, _, user) = app();
        let handle = || match app.handle(get("/v1/key/describe/k1"), &peer(&user)) {
            Outcome::Wait(parked, Wait::Gate(names)) => {
                assert_eq!(names.len(), 4, "{names:?}");
                parked
            }
            _ => panic!("the read waits at the gate"),
        };
        let parked = handle();
        assert_eq!(counts(&app), (1, 0), "not authorized before the gate");
        let resp = done(app.resume(parked, Resume::Granted));
        assert_eq!(resp.status, 404, "allowed: the key is missing");
        assert_eq!(counts(&app), (1, 1));

        let parked = handle();
        app.write_local(Command::DeleteIdentity {
            enclave: D.into(),
            identity: user.clone(),
        })
        .unwrap();
        let resp = done(app.resume(parked, Resume::Granted));
        assert_eq!(resp.status, 403, "deleted while it waited");
        assert_eq!(counts(&app), (2, 2));
    }

    /// A read the gate refuses is answered `503` with the reason, without going further.
    #[test]
    fn a_refused_wait_is_answered_with_its_reason() {
        let (app, admin, _) = app();
        let Outcome::Wait(parked, _) = app.handle(get("/v1/key/describe/k1"), &peer(&admin)) else {
            panic!("the read waits at the gate");
        };
        let resp = done(app.resume(parked, Resume::Refused("cluster: no leader".into())));
        assert_eq!(resp.status, 503);
        assert!(String::from_utf8_lossy(&resp.body).contains("no leader"));
        assert_eq!(counts(&app), (1, 1));
    }
}
