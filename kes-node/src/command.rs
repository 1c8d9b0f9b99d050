//! State changes as values. Every write the API makes is a [`Command`] that the store applies
//! in one transaction. Commands are deterministic: the node that takes the request draws the
//! random key material and reads the clock, and puts the results inside the command, so that
//! applying the same commands in the same order gives the same state on every node.
use crate::item::{ItemName, Kind};
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
    /// The names this command changes: reads of these names must wait while the command is
    /// pending (two-phase visibility in clusters).
    pub fn touches(&self) -> Vec<ItemName> {
        use Command::*;
        // Each item name, plus its listing for creations and deletions, so that listings are
        // linearizable too.
        let item_and_listing = |kind, enclave: &str, name: &str| {
            vec![
                ItemName::item(kind, enclave, name),
                ItemName::listing(kind, enclave),
            ]
        };
        match self {
            CreateKey { enclave, name, .. } | DeleteKey { enclave, name } => {
                item_and_listing(Kind::Key, enclave, name)
            }
            CreatePolicy { enclave, name, .. } | DeletePolicy { enclave, name } => {
                item_and_listing(Kind::Policy, enclave, name)
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
                ItemName::item(Kind::Identity, enclave, identity),
                ItemName::item(Kind::Identity, enclave, &record.created_by),
                ItemName::listing(Kind::Identity, enclave),
            ],
            // A deletion may take children along; their reads are not held back (they fail
            // with "does not exist" either way once it commits).
            DeleteIdentity { enclave, identity } => {
                item_and_listing(Kind::Identity, enclave, identity)
            }
            CreateSecret { enclave, name, .. } | DeleteSecret { enclave, name } => {
                item_and_listing(Kind::Secret, enclave, name)
            }
            CreateEnclave { name, .. } | DeleteEnclave { name } => {
                vec![ItemName::enclave(name), ItemName::Enclaves]
            }
            Expand { .. } | Shrink { .. } => vec![ItemName::Cluster],
        }
    }
}
