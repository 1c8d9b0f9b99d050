//! One place that turns store errors into KES error responses with upstream's messages.
use crate::http::Response;
use crate::store::StoreError;

/// What kind of item an error is about.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Key,
    Policy,
    Identity,
    Secret,
    Enclave,
    /// A cluster member (expand, shrink).
    Cluster,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Policy => "policy",
            Kind::Identity => "identity",
            Kind::Secret => "secret",
            Kind::Enclave => "enclave",
            Kind::Cluster => "node",
        }
    }
}

/// Maps a store error; `io_message` is upstream's text for a failing key store.
pub(super) fn store_error(kind: Kind, err: StoreError, io_message: &str) -> Response {
    match err {
        StoreError::NotFound if matches!(kind, Kind::Cluster) => {
            Response::error(409, "node is not part of the cluster")
        }
        StoreError::Exists if matches!(kind, Kind::Cluster) => {
            Response::error(409, "node is already part of the cluster")
        }
        StoreError::NotFound => Response::error(404, &format!("{} does not exist", kind.noun())),
        // Upstream's ErrSecretExists is a 404 and clients compare status and message, so the
        // odd status stays for compatibility.
        StoreError::Exists if matches!(kind, Kind::Secret) => {
            Response::error(404, "secret already exists")
        }
        StoreError::Exists => Response::error(400, &format!("{} already exists", kind.noun())),
        StoreError::NoEnclave => Response::error(404, "enclave does not exist"),
        StoreError::Refused(why) => Response::error(400, &why.to_string()),
        StoreError::Unavailable(why) => Response::error(503, &why.to_string()),
        StoreError::Corrupted(what) => Response::error(500, &what.to_string()),
        // The cause is the server's business (and logged where it is known); clients get
        // upstream's text.
        StoreError::Io(_) => Response::error(502, io_message),
        StoreError::NoSpace(why) => Response::error(507, &why.to_string()),
    }
}

/// `400 <kind> name '<s>' is empty, too long or contains invalid characters` (identities:
/// `identity '<s>' ...`), upstream's messages.
pub(super) fn invalid_name(kind: Kind, s: &str) -> Response {
    let what = match kind {
        Kind::Identity => "identity".to_owned(),
        k => format!("{} name", k.noun()),
    };
    Response::error(
        400,
        &format!("{what} '{s}' is empty, too long or contains invalid characters"),
    )
}

/// `400 listing pattern '<s>' is empty, too long or is invalid`
pub(super) fn invalid_pattern(s: &str) -> Response {
    Response::error(
        400,
        &format!("listing pattern '{s}' is empty, too long or is invalid"),
    )
}
