//! Who may call what. The admin identity may do everything; every other identity is checked
//! against its policy (policies arrive with the next issue: until then, nobody else may).
use crate::http::Response;
use crate::identity::PeerIdentityError;

/// The TLS peer of a connection, identified once after the handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    pub identity: Result<String, PeerIdentityError>,
}

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No identity needed (`/version`).
    None,
    /// The caller's identity is looked up but never rejected (`/v1/identity/self/describe`).
    IdentifyOnly,
    /// Admin, or an identity whose policy allows the path.
    Verify,
}

/// The reason every upstream client understands for a refused request.
pub const NOT_ALLOWED: &str = "not authorized: insufficient permissions";

/// The decision for one request.
pub struct Authorizer<'a> {
    pub admin: &'a str,
}

impl Authorizer<'_> {
    /// Checks `peer` for `path` under `auth`. Returns the caller's identity, if known.
    pub fn check<'p>(
        &self,
        auth: Auth,
        peer: &'p Peer,
        path: &str,
    ) -> Result<Option<&'p str>, Response> {
        let _ = path; // Policy matching on the path comes with policies.
        match auth {
            Auth::None => Ok(None),
            Auth::IdentifyOnly => Ok(peer.identity.as_deref().ok()),
            Auth::Verify => {
                let id = match &peer.identity {
                    Ok(id) => id.as_str(),
                    Err(PeerIdentityError::NoCertificate) => {
                        return Err(Response::error(400, "tls: client certificate is required"))
                    }
                    Err(PeerIdentityError::TooMany) => {
                        return Err(Response::error(
                            400,
                            "tls: received more than one client certificate",
                        ))
                    }
                };
                if is_admin(self.admin, id) {
                    Ok(Some(id))
                } else {
                    Err(Response::error(403, NOT_ALLOWED))
                }
            }
        }
    }
}

/// Constant-time identity comparison (identities are public, but policy decisions should not
/// leak how much of an admin identity a caller guessed).
pub fn is_admin(admin: &str, identity: &str) -> bool {
    use subtle::ConstantTimeEq;
    admin.len() == identity.len() && bool::from(admin.as_bytes().ct_eq(identity.as_bytes()))
}
