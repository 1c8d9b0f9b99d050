//! Who may call what (spec §2.2, §3). The admin identity may do everything. Any other identity
//! must exist in the request's enclave (the `Kes-Enclave` header, `default` without one), must
//! not be expired, and then either is an enclave admin or its policy must allow the URL path:
//! deny patterns win, and a path no allow pattern matches is refused. A non-admin identity's
//! creators limit it too: see [`grants`].
pub(crate) mod grants;

use std::net::IpAddr;

pub(crate) use grants::Grants;

use crate::http::Response;
use crate::identity::PeerIdentityError;
use crate::store::Store;

/// The TLS peer of a connection, identified once after the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub identity: Result<String, PeerIdentityError>,
    pub ip: Option<IpAddr>,
}

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// No identity needed (`/version`).
    None,
    /// The caller's identity is looked up but never rejected (`/v1/identity/self/describe`).
    IdentifyOnly,
    /// Admin, enclave admin, or an identity whose policy allows the path.
    Verify,
    /// The admin identity only (creating and deleting enclaves).
    Admin,
}

/// The reason every upstream client understands for a refused request.
pub(crate) const NOT_ALLOWED: &str = "not authorized: insufficient permissions";

/// Who the caller turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller<'a> {
    /// Unknown (routes that do not authenticate).
    Anonymous,
    /// The admin identity (`admin.identity`).
    Admin(&'a str),
    /// An identity of the request's enclave; `enclave_admin` if it has admin rights there.
    Identity { id: &'a str, enclave_admin: bool },
}

impl<'a> Caller<'a> {
    /// The caller's identity, if known.
    pub(crate) fn id(&self) -> Option<&'a str> {
        match *self {
            Caller::Anonymous => None,
            Caller::Admin(id) | Caller::Identity { id, .. } => Some(id),
        }
    }
}

/// Decides whether `peer` may call `path` in `enclave` under `auth`.
pub(crate) fn authorize<'p>(
    store: &Store,
    grants: &Grants,
    admin: &str,
    auth: Auth,
    peer: &'p Peer,
    enclave: &str,
    path: &str,
) -> Result<Caller<'p>, Response> {
    if auth == Auth::None {
        return Ok(Caller::Anonymous);
    }
    let id = match (&peer.identity, auth) {
        (Ok(id), _) => id.as_str(),
        (Err(_), Auth::IdentifyOnly) => return Ok(Caller::Anonymous),
        (Err(PeerIdentityError::NoCertificate), _) => {
            return Err(Response::error(400, "tls: client certificate is required"))
        }
        (Err(PeerIdentityError::TooMany), _) => {
            return Err(Response::error(
                400,
                "tls: received more than one client certificate",
            ))
        }
    };
    if is_admin(admin, id) {
        return Ok(Caller::Admin(id));
    }
    let forbidden = || Response::error(403, NOT_ALLOWED);
    let grant = match grants.lookup(store, enclave, id) {
        Ok(Some(g)) => g,
        _ if auth == Auth::IdentifyOnly => return Ok(Caller::Anonymous),
        // Unknown identities and unknown enclaves are refused alike: a caller learns nothing.
        Ok(None) => return Err(forbidden()),
        Err(err) => return Err(Response::error(500, &err.to_string())),
    };
    if grant.expired(crate::timefmt::now()) {
        return match auth {
            Auth::IdentifyOnly => Ok(Caller::Anonymous),
            _ => Err(forbidden()),
        };
    }
    let caller = Caller::Identity {
        id,
        enclave_admin: grant.admin,
    };
    match auth {
        Auth::IdentifyOnly => Ok(caller),
        Auth::Admin => Err(forbidden()),
        _ if grant.allows(path) => Ok(caller),
        _ => Err(forbidden()),
    }
}

/// True if `id` may still call `path` in `enclave` (a log stream re-checks this while it
/// streams): the admin always, anyone else as [`authorize`] would decide now.
pub(crate) fn still_allowed(
    store: &Store,
    grants: &Grants,
    admin: &str,
    enclave: &str,
    id: &str,
    path: &str,
) -> bool {
    if is_admin(admin, id) {
        return true;
    }
    match grants.lookup(store, enclave, id) {
        Ok(Some(g)) => !g.expired(crate::timefmt::now()) && g.allows(path),
        _ => false,
    }
}

/// Constant-time identity comparison (identities are public, but policy decisions should not
/// leak how much of an admin identity a caller guessed).
pub(crate) fn is_admin(admin: &str, identity: &str) -> bool {
    use subtle::ConstantTimeEq;
    admin.len() == identity.len() && bool::from(admin.as_bytes().ct_eq(identity.as_bytes()))
}
