//! State changes as values. Every write the API makes is a [`Command`] that the store applies
//! in one transaction. Commands are deterministic: the node that takes the request draws the
//! random key material and reads the clock, and puts the results inside the command, so that
//! applying the same commands in the same order gives the same state on every node.
use crate::records::{EnclaveRecord, IdentityRecord, KeyRecord, PolicyRecord, SecretRecord};

/// One state change.
#[derive(Clone)]
pub enum Command {
    CreateKey {
        enclave: String,
        name: String,
        key: KeyRecord,
    },
    DeleteKey {
        enclave: String,
        name: String,
    },
    /// With `replace`, an existing policy of that name is overwritten (config reloads and the
    /// legacy assign flow); otherwise it is `Exists`.
    CreatePolicy {
        enclave: String,
        name: String,
        policy: PolicyRecord,
        replace: bool,
    },
    DeletePolicy {
        enclave: String,
        name: String,
    },
    /// With `replace`, an existing identity keeps its children and gets the new policy.
    CreateIdentity {
        enclave: String,
        identity: String,
        record: IdentityRecord,
        replace: bool,
    },
    /// An identity created, or re-assigned a policy, by an identity of the enclave (a non-admin
    /// or an enclave admin: `record.created_by`). Checked where it applies, against the state it
    /// changes, so that no concurrent write can slip between the handler's checks and the
    /// change: the creator must still exist and not be expired at `record.created_at`. With
    /// `assign`, the identity must exist, must not be an enclave admin and must descend from
    /// the creator, and only its policy changes (it keeps its parent, expiry and children).
    ChildIdentity {
        enclave: String,
        identity: String,
        record: IdentityRecord,
        assign: bool,
    },
    /// Deletes the identity and, recursively, every identity it created.
    DeleteIdentity {
        enclave: String,
        identity: String,
    },
    CreateSecret {
        enclave: String,
        name: String,
        secret: SecretRecord,
    },
    DeleteSecret {
        enclave: String,
        name: String,
    },
    CreateEnclave {
        name: String,
        record: EnclaveRecord,
    },
    /// Deletes the enclave and everything in it.
    DeleteEnclave {
        name: String,
    },
    /// Adds the node at `endpoint` to the cluster (a membership change, not a table change).
    Expand {
        endpoint: String,
    },
    /// Removes the node at `endpoint`; `force` removes a dead node without its consent.
    Shrink {
        endpoint: String,
        force: bool,
    },
}

impl Command {
    /// The names this command changes, as `<kind>/<enclave>/<name>`: reads of these names
    /// must wait while the command is pending (two-phase visibility in clusters).
    pub fn touches(&self) -> Vec<String> {
        use Command::*;
        // Each item name, plus its listing (`<kind>/<enclave>`) for creations and deletions,
        // so that listings are linearizable too.
        match self {
            CreateKey { enclave, name, .. } | DeleteKey { enclave, name } => {
                vec![format!("key/{enclave}/{name}"), format!("key/{enclave}")]
            }
            CreatePolicy { enclave, name, .. } | DeletePolicy { enclave, name } => {
                vec![
                    format!("policy/{enclave}/{name}"),
                    format!("policy/{enclave}"),
                ]
            }
            CreateIdentity {
                enclave,
                identity,
                record,
                ..
            }
            | ChildIdentity {
                enclave,
                identity,
                record,
                ..
            } => vec![
                format!("identity/{enclave}/{identity}"),
                format!("identity/{enclave}/{}", record.created_by),
                format!("identity/{enclave}"),
            ],
            // A deletion may take children along; their reads are not held back (they fail
            // with "does not exist" either way once it commits).
            DeleteIdentity { enclave, identity } => {
                vec![
                    format!("identity/{enclave}/{identity}"),
                    format!("identity/{enclave}"),
                ]
            }
            CreateSecret { enclave, name, .. } | DeleteSecret { enclave, name } => {
                vec![
                    format!("secret/{enclave}/{name}"),
                    format!("secret/{enclave}"),
                ]
            }
            CreateEnclave { name, .. } | DeleteEnclave { name } => {
                vec![format!("enclave/{name}"), "enclave".to_string()]
            }
            Expand { .. } | Shrink { .. } => vec!["cluster".to_string()],
        }
    }
}
