//! Why a store operation (or a write through the cluster, or the edge server's key store)
//! failed, as values. Each failure is a variant with the data that names it; the sentence a
//! user reads is made by `Display` alone, and the HTTP layer (`api/errors.rs`) maps the kinds
//! to status codes once.
//!
//! Some reasons arrive as text and stay text: what another node answered over the peer
//! protocol (`Peer`, the wire carries its words), and what a library said (redb, postcard, an
//! HSM or a key store), kept as the detail of a typed variant.
use std::fmt;

use kes_core::consensus::{Index, NodeId};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    Exists,
    /// The enclave of the item does not exist.
    NoEnclave,
    /// A rule of the change was violated; maps to a client error (`400`).
    Refused(Refusal),
    /// The cluster could not commit the change; maps to `503`.
    Unavailable(Unavailable),
    /// The stored value does not decrypt or decode: the file was modified outside kes-node.
    Corrupted(Corruption),
    /// redb, the disk or the key store failed; maps to `502` with upstream's message.
    Io(IoFailure),
    /// The disk is full, or below the configured floor (`store.min_free`); maps to `507`.
    NoSpace(NoSpace),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Exists => f.write_str("already exists"),
            StoreError::NoEnclave => f.write_str("enclave does not exist"),
            StoreError::Refused(why) => why.fmt(f),
            StoreError::Unavailable(why) => why.fmt(f),
            StoreError::Corrupted(what) => what.fmt(f),
            StoreError::NoSpace(why) => why.fmt(f),
            StoreError::Io(why) => write!(f, "kes.db: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A rule that a change broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `default` always exists.
    DeleteDefaultEnclave,
    /// An identity changing another one was deleted meanwhile.
    CallerGone,
    /// An identity changing another one expired meanwhile.
    CallerExpired,
    /// Enclave admins get no policy.
    AssignToEnclaveAdmin,
    /// A caller assigns policies only to identities it created (directly or not).
    NotCreatedByCaller { identity: String },
    /// The input of a restore is not a backup; `why` says what is wrong with it.
    NotABackup(&'static str),
    /// The backup has no root key sealed by this HSM.
    BackupNotSealedFor { hsm: String },
    /// The HSM key does not unseal the backup.
    BackupWrongKey,
    /// A restore goes into a new database only.
    RestoreNotEmpty,
    /// The HSM failed to seal the root key (its words).
    HsmCannotSeal { hsm: String, why: String },
    /// The HSM failed to unseal what it sealed (its words).
    HsmCannotUnseal { hsm: String, why: String },
    /// The HSM unsealed something else than it sealed.
    HsmUnsealsWrong { hsm: String },
    /// The last sealed copy of the root key cannot be removed.
    OnlySealedCopy { hsm: String },
    /// The HSM that opened the store cannot be removed; `others` are the ones that can.
    ConfiguredHsm { hsm: String, others: Vec<String> },
    /// A forced reconfiguration of a database that never ran a cluster.
    NeverClustered,
    /// A forced reconfiguration names a node that is no member.
    NotAMember(NodeId),
    /// More nodes than a configuration holds.
    TooManyNodes,
    /// The only node of a cluster cannot be removed.
    OnlyNode,
    /// A membership change the cluster refuses, in the cluster module's words.
    Membership(String),
    /// Another node's refusal, as it worded it (the peer protocol carries text).
    Peer(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::DeleteDefaultEnclave => f.write_str("the default enclave cannot be deleted"),
            Refusal::CallerGone => f.write_str("the calling identity no longer exists"),
            Refusal::CallerExpired => f.write_str("the calling identity has expired"),
            Refusal::AssignToEnclaveAdmin => {
                f.write_str("cannot assign policy to an enclave admin")
            }
            Refusal::NotCreatedByCaller { identity } => write!(
                f,
                "cannot assign policy to '{identity}': it was not created by the caller"
            ),
            Refusal::NotABackup(why) => write!(f, "not a kes-rs backup: {why}"),
            Refusal::BackupNotSealedFor { hsm } => {
                write!(f, "the backup has no root key sealed by HSM '{hsm}'")
            }
            Refusal::BackupWrongKey => f.write_str(
                "the HSM key does not unseal the backup: use the key of the backed-up cluster",
            ),
            Refusal::RestoreNotEmpty => f.write_str("restore needs a new, empty directory"),
            Refusal::HsmCannotSeal { hsm, why } => write!(f, "HSM '{hsm}' cannot seal: {why}"),
            Refusal::HsmCannotUnseal { hsm, why } => {
                write!(f, "HSM '{hsm}' cannot unseal what it sealed: {why}")
            }
            Refusal::HsmUnsealsWrong { hsm } => {
                write!(f, "HSM '{hsm}' does not unseal what it sealed")
            }
            Refusal::OnlySealedCopy { hsm } => write!(
                f,
                "'{hsm}' holds the only sealed copy of the root key: add another HSM first \
                 (kes-node hsm add), or kes.db could never be opened again"
            ),
            Refusal::ConfiguredHsm { hsm, others } => write!(
                f,
                "'{hsm}' is the configured HSM: configure one of the other HSMs ({}) to remove it",
                others.join(", ")
            ),
            Refusal::NeverClustered => f.write_str("this database never ran a cluster"),
            Refusal::NotAMember(id) => write!(f, "node {id} is not a member of the cluster"),
            Refusal::TooManyNodes => f.write_str("too many nodes"),
            Refusal::OnlyNode => f.write_str("cluster: cannot remove the only node of the cluster"),
            Refusal::Membership(why) | Refusal::Peer(why) => f.write_str(why),
        }
    }
}

/// Why the cluster cannot take a write now (a client may retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// This node was the leader when the write came, and is no longer.
    LostLeadership,
    /// The window of writes in flight is full.
    Busy,
    /// No leader was known within the wait.
    NoLeader,
    /// The leader's link stayed down within the wait.
    LeaderUnreachable(NodeId),
    /// A write forwarded to the leader got no answer in time.
    LeaderSilent,
    /// A write (`change`: a membership change) forwarded to node `leader` got no answer, and
    /// the answer may be lost: the write may or may not have been made.
    AnswerLost {
        leader: NodeId,
        cause: LostAnswer,
        change: bool,
    },
    /// The leader is handing over its leadership.
    HandingOver,
    /// This node could not store the write (why).
    NotStored(Box<StoreError>),
    /// This node could not persist its state (why); the write may or may not commit.
    OutcomeUnknown(String),
    /// The consensus state is being reloaded from kes.db after a failed write.
    Reloading,
    /// Another reason of the cluster module, in its words.
    Cluster(String),
    /// Another node's answer, as it worded it (the peer protocol carries text).
    Peer(String),
}

/// Why the answer to a forwarded write may be lost (see [`Unavailable::AnswerLost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    /// A link between this node and the leader broke after the write left.
    LinkBroke,
    /// Another term began without that leader (the new leader, if known and another node).
    LeaderChanged(Option<NodeId>),
    /// This node stopped hearing from the leader for an election timeout (in the same term: a
    /// link that stays open but carries nothing, or a leader that stopped sending).
    NotHeard,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::LostLeadership => {
                f.write_str("cluster: this node lost its leadership; retry")
            }
            Unavailable::Busy => f.write_str("cluster: too many writes in flight; retry"),
            Unavailable::NoLeader => f.write_str(
                "cluster: no leader: an election is under way or a majority of nodes is \
                 unreachable",
            ),
            Unavailable::LeaderUnreachable(leader) => {
                write!(
                    f,
                    "cluster: the leader (node {leader}) is unreachable; retry"
                )
            }
            Unavailable::LeaderSilent => f.write_str(
                "cluster: the leader did not answer in time; the write may still commit",
            ),
            Unavailable::AnswerLost {
                leader,
                cause,
                change,
            } => {
                match cause {
                    LostAnswer::LinkBroke => write!(
                        f,
                        "cluster: the connection to the leader (node {leader}) broke before it \
                         answered"
                    )?,
                    LostAnswer::LeaderChanged(Some(new)) => write!(
                        f,
                        "cluster: the leadership moved from node {leader} to node {new} before \
                         node {leader} answered"
                    )?,
                    LostAnswer::NotHeard => write!(
                        f,
                        "cluster: this node stopped hearing from the leader (node {leader}) \
                         before it answered"
                    )?,
                    LostAnswer::LeaderChanged(None) => write!(
                        f,
                        "cluster: the leader (node {leader}) lost its leadership before it \
                         answered"
                    )?,
                }
                if *change {
                    f.write_str(
                        "; the change may or may not have been made: check `kes-node cluster \
                         info` before retrying",
                    )
                } else {
                    f.write_str(
                        "; the write may or may not have been made: check before retrying (a \
                         retried create may answer that the item exists)",
                    )
                }
            }
            Unavailable::HandingOver => {
                f.write_str("cluster: the leader is handing over its leadership; retry")
            }
            Unavailable::NotStored(err) => {
                write!(f, "cluster: this node could not store the write: {err}")
            }
            Unavailable::OutcomeUnknown(why) => write!(
                f,
                "cluster: this node could not persist its state ({why}): the outcome of the \
                 write is unknown; check before retrying"
            ),
            Unavailable::Reloading => f.write_str(
                "cluster: the cluster state is being reloaded from kes.db after a failed \
                 write; retry",
            ),
            Unavailable::Cluster(why) | Unavailable::Peer(why) => f.write_str(why),
        }
    }
}

/// What of kes.db does not read back as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// An item's stored value does not decrypt or decode.
    Item {
        /// The kind of item (`key`, `policy`, ...).
        what: &'static str,
        enclave: String,
        name: String,
        defect: Defect,
    },
    /// An item of an enclave that does not exist.
    Orphan {
        what: &'static str,
        enclave: String,
        name: String,
    },
    /// A table's records do not match its digest.
    Digest { table: &'static str },
    /// redb found a page that does not check out (redb's words).
    Damaged(String),
    /// Reading kes.db panicked inside redb (`during` says what was read).
    Panicked { during: String, panic: String },
    /// A record of the consensus state does not read back.
    Consensus(ConsensusDefect),
    /// A key in the edge server's key store is not a valid key.
    KeyStoreValue { name: String, why: String },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Item {
                what,
                enclave,
                name,
                defect,
            } => write!(
                f,
                "{what} '{name}' in enclave '{enclave}' is corrupted: its stored value \
                 {defect} (kes.db was modified outside kes-node)"
            ),
            Corruption::Orphan {
                what,
                enclave,
                name,
            } => write!(
                f,
                "{what} '{name}' belongs to enclave '{enclave}', which does not exist"
            ),
            Corruption::Digest { table } => write!(
                f,
                "the records of table '{table}' do not match their digest: records are missing \
                 or were altered (the file was damaged or modified outside kes-node)"
            ),
            Corruption::Damaged(msg) => write!(
                f,
                "kes.db is damaged: {msg}: run kes-node check on a stopped node, and restore \
                 the file or rebuild the node from a healthy one"
            ),
            Corruption::Panicked { during, panic } => write!(
                f,
                "{during}: kes.db is damaged: reading it failed ({panic}): run kes-node check \
                 on a stopped node, and restore the file or rebuild the node from a healthy one"
            ),
            Corruption::Consensus(defect) => defect.fmt(f),
            Corruption::KeyStoreValue { name, why } => {
                write!(f, "key '{name}' in the key store is not a valid key: {why}")
            }
        }
    }
}

/// What is wrong with a stored item's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// It does not decrypt with the key named (`its enclave's key`, `the root key`).
    Undecryptable(&'static str),
    /// It decrypts but does not decode.
    Undecodable(CodecError),
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Undecryptable(key) => write!(f, "does not decrypt with {key}"),
            Defect::Undecodable(why) => why.fmt(f),
        }
    }
}

/// A record of the consensus state (log, hard state, snapshot) that does not read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusDefect {
    /// The addresses of a configuration (postcard's words).
    Addresses(String),
    /// The applied state (postcard's words).
    Applied(String),
    /// There is a log but no applied state.
    NoApplied,
    /// The hard state (postcard's words).
    HardState(String),
    /// A log entry does not decrypt with the root key.
    EntryUndecryptable(Index),
    /// A log entry does not decode (postcard's words).
    EntryUndecodable(Index, String),
    /// A command in a log entry does not decode.
    Command(Index, CodecError),
    /// A staged snapshot chunk is missing.
    ChunkMissing(u32),
    /// A staged snapshot chunk does not decrypt with the root key.
    ChunkUndecryptable(u32),
    /// A snapshot chunk does not decode (postcard's words).
    ChunkUndecodable(String),
    /// An enclave record of a snapshot does not decode.
    SnapshotEnclave(CodecError),
    /// A snapshot names a table this build does not know.
    UnknownTable(String),
    /// A snapshot without the cluster's addresses.
    NoAddresses,
}

impl fmt::Display for ConsensusDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConsensusDefect::*;
        match self {
            Addresses(e) => write!(f, "cluster addresses do not decode: {e}"),
            Applied(e) => write!(f, "the applied consensus state does not decode: {e}"),
            NoApplied => f.write_str("no applied consensus state"),
            HardState(e) => write!(f, "the consensus hard state does not decode: {e}"),
            EntryUndecryptable(index) => write!(f, "log entry {index} does not decrypt"),
            EntryUndecodable(index, e) => write!(f, "log entry {index} does not decode: {e}"),
            Command(index, why) => write!(f, "log entry {index}: {why}"),
            ChunkMissing(seq) => write!(f, "snapshot chunk {seq} is missing"),
            ChunkUndecryptable(seq) => write!(f, "snapshot chunk {seq} does not decrypt"),
            ChunkUndecodable(e) => write!(f, "snapshot chunk does not decode: {e}"),
            SnapshotEnclave(why) => why.fmt(f),
            UnknownTable(table) => write!(f, "snapshot names an unknown table '{table}'"),
            NoAddresses => f.write_str("snapshot has no address record"),
        }
    }
}

/// Why a record does not encode or decode (see `codec.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// postcard could not encode it (its words).
    Encode(String),
    /// postcard could not decode it (its words).
    Decode(String),
    /// Bytes are left after the record.
    TrailingBytes(usize),
    /// A cipher number this build does not know.
    UnknownCipher(u8),
    /// A creation time out of range.
    InvalidCreationTime,
    /// A time out of range.
    InvalidTime,
    /// A command does not decode (postcard's words).
    Command(String),
    /// Bytes are left after a command.
    CommandTrailingBytes,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Encode(e) => write!(f, "cannot encode: {e}"),
            CodecError::Decode(e) => write!(f, "does not decode: {e}"),
            CodecError::TrailingBytes(n) => write!(f, "has {n} trailing bytes"),
            CodecError::UnknownCipher(c) => write!(f, "has unknown cipher {c}"),
            CodecError::InvalidCreationTime => f.write_str("has an invalid creation time"),
            CodecError::InvalidTime => f.write_str("has an invalid time"),
            CodecError::Command(e) => write!(f, "command does not decode: {e}"),
            CodecError::CommandTrailingBytes => f.write_str("command has trailing bytes"),
        }
    }
}

impl std::error::Error for CodecError {}

/// What failed underneath: redb, the disk, or the edge server's key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoFailure {
    /// redb or the file system (redb's words).
    Db(String),
    /// kes.db could not be reopened after a failed write.
    Reopen { path: String, why: String },
    /// A record does not encode.
    Encode(CodecError),
    /// The edge server's key store (`store` names it) failed; `unreachable` when it could
    /// not be reached at all.
    KeyStore {
        store: String,
        unreachable: bool,
        why: String,
    },
    /// The edge server's key store workers are gone.
    KeyStoreWorkersGone,
    /// Another node failed the write (its words).
    Peer(String),
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoFailure::Db(msg) | IoFailure::Peer(msg) => f.write_str(msg),
            IoFailure::Reopen { path, why } => {
                write!(f, "{path} cannot be reopened after a failed write: {why}")
            }
            IoFailure::Encode(why) => why.fmt(f),
            IoFailure::KeyStore {
                store,
                unreachable: true,
                why,
            } => write!(f, "{store} is not reachable: {why}"),
            IoFailure::KeyStore { store, why, .. } => write!(f, "{store}: {why}"),
            IoFailure::KeyStoreWorkersGone => f.write_str("the key store workers are gone"),
        }
    }
}

/// Why a write finds no room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSpace {
    /// The disk is full (the system's words).
    DiskFull(String),
    /// Free space is below `store.min_free`.
    BelowFloor { free: u64, floor: u64 },
}

impl fmt::Display for NoSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSpace::DiskFull(why) => write!(
                f,
                "kes.db: the disk is full ({why}): writes are refused until space is freed"
            ),
            NoSpace::BelowFloor { free, floor } => write!(
                f,
                "kes.db: only {} free on its disk, below store.min_free ({}): writes are \
                 refused until space is freed",
                human(*free),
                human(*floor)
            ),
        }
    }
}

/// `1.5 MiB`-style text for messages.
pub(super) fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages users and operators see are those of the string errors these types
    /// replaced, word for word.
    /// The client does not send a write on to another node after a `503` that says it may
    /// have been made; it knows them by these phrases.
    #[test]
    fn answers_lost_say_the_outcome_is_unknown_as_the_client_knows_it() {
        let mut lost = vec![StoreError::Unavailable(Unavailable::LeaderSilent)];
        for cause in [
            LostAnswer::LinkBroke,
            LostAnswer::LeaderChanged(Some(3)),
            LostAnswer::LeaderChanged(None),
            LostAnswer::NotHeard,
        ] {
            for change in [false, true] {
                lost.push(StoreError::Unavailable(Unavailable::AnswerLost {
                    leader: 2,
                    cause,
                    change,
                }));
            }
        }
        for err in lost {
            let message = err.to_string();
            assert!(
                crate::client::OUTCOME_UNKNOWN
                    .iter()
                    .any(|p| message.contains(p)),
                "{message}"
            );
        }
        let retry = StoreError::Unavailable(Unavailable::LeaderUnreachable(2)).to_string();
        assert!(!crate::client::OUTCOME_UNKNOWN
            .iter()
            .any(|p| retry.contains(p)));
    }

    #[test]
    fn messages_are_unchanged() {
        let item = StoreError::Corrupted(Corruption::Item {
            what: "key",
            enclave: "default".into(),
            name: "k1".into(),
            defect: Defect::Undecodable(CodecError::UnknownCipher(9)),
        });
        let cases: [(StoreError, &str); 12] = [
            (
                item,
                "key 'k1' in enclave 'default' is corrupted: its stored value has unknown \
                 cipher 9 (kes.db was modified outside kes-node)",
            ),
            (
                StoreError::Refused(Refusal::NotCreatedByCaller {
                    identity: "ab".into(),
                }),
                "cannot assign policy to 'ab': it was not created by the caller",
            ),
            (
                StoreError::Refused(Refusal::NotABackup("wrong format")),
                "not a kes-rs backup: wrong format",
            ),
            (
                StoreError::Refused(Refusal::ConfiguredHsm {
                    hsm: "a".into(),
                    others: vec!["b".into(), "c".into()],
                }),
                "'a' is the configured HSM: configure one of the other HSMs (b, c) to remove it",
            ),
            (
                StoreError::Unavailable(Unavailable::NotStored(Box::new(StoreError::Io(
                    IoFailure::Db("I/O error".into()),
                )))),
                "cluster: this node could not store the write: kes.db: I/O error",
            ),
            (
                StoreError::Unavailable(Unavailable::LeaderUnreachable(2)),
                "cluster: the leader (node 2) is unreachable; retry",
            ),
            (
                StoreError::Unavailable(Unavailable::AnswerLost {
                    leader: 2,
                    cause: LostAnswer::LinkBroke,
                    change: true,
                }),
                "cluster: the connection to the leader (node 2) broke before it answered; the \
                 change may or may not have been made: check `kes-node cluster info` before \
                 retrying",
            ),
            (
                StoreError::Unavailable(Unavailable::AnswerLost {
                    leader: 2,
                    cause: LostAnswer::NotHeard,
                    change: false,
                }),
                "cluster: this node stopped hearing from the leader (node 2) before it answered; \
                 the write may or may not have been made: check before retrying (a retried \
                 create may answer that the item exists)",
            ),
            (
                StoreError::Unavailable(Unavailable::AnswerLost {
                    leader: 2,
                    cause: LostAnswer::LeaderChanged(Some(0)),
                    change: false,
                }),
                "cluster: the leadership moved from node 2 to node 0 before node 2 answered; the \
                 write may or may not have been made: check before retrying (a retried create \
                 may answer that the item exists)",
            ),
            (
                StoreError::NoSpace(NoSpace::BelowFloor {
                    free: 512,
                    floor: 3 << 19,
                }),
                "kes.db: only 512 B free on its disk, below store.min_free (1.5 MiB): writes are \
                 refused until space is freed",
            ),
            (
                StoreError::Corrupted(Corruption::Consensus(ConsensusDefect::Command(
                    7,
                    CodecError::CommandTrailingBytes,
                ))),
                "log entry 7: command has trailing bytes",
            ),
            (
                StoreError::Io(IoFailure::KeyStore {
                    store: "fs: /k".into(),
                    unreachable: true,
                    why: "gone".into(),
                }),
                "kes.db: fs: /k is not reachable: gone",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
