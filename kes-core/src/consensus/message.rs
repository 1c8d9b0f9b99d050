//! The wire and storage vocabulary: ids, log entries, configurations, peer messages and the
//! persistent hard state. Everything here derives `Serialize`/`Deserialize` so the shell encodes
//! it with postcard (length-prefixed frames on the wire, rows in the database).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use super::{MAX_BATCH, MAX_NAMES, MAX_NODES};

/// A node's id inside its cluster (KES numbers nodes `0, 1, ...`).
pub type NodeId = u16;
/// A Raft term.
pub type Term = u64;
/// A log index; the first entry has index 1, index 0 is the empty log.
pub type Index = u64;
/// A point in time on one node's monotonic clock, in the shell's unit (milliseconds in
/// `kes-node`). Times from different nodes are never compared with each other.
pub type Time = u64;

/// The members of a configuration, sorted ascending, without duplicates.
pub type Members = Vec<NodeId, MAX_NODES>;

/// The names a command touches, as 64-bit ids the shell derives (for example a keyed hash of the
/// kind and the name). Two names sharing an id only make reads wait more, never less.
pub type Names = Vec<NameId, MAX_NAMES>;

/// The id of a name (key, policy, identity, secret, enclave or the cluster itself).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameId(pub u64);

impl NameId {
    /// The name every configuration entry touches; reads of the cluster membership use it.
    pub const CLUSTER: NameId = NameId(0);
}

/// One log entry. `C` is the application's command, opaque to the core.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry<C> {
    pub term: Term,
    pub index: Index,
    pub body: Body<C>,
}

/// What an entry carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Body<C> {
    /// Appended by every new leader so that entries left pending by its predecessors get decided.
    Noop,
    /// An application command and the names it touches.
    Command { names: Names, command: C },
    /// A new configuration (one node added or removed). `forced` marks a forced shrink, which
    /// commits without the removed node. `command` is the shell's part (e.g. addresses).
    Config {
        members: Members,
        forced: bool,
        command: C,
    },
}

impl<C> Entry<C> {
    /// Whether a read of `name` must wait while this entry is not applied.
    pub fn touches(&self, name: NameId) -> bool {
        match &self.body {
            Body::Noop => false,
            Body::Command { names, .. } => names.contains(&name),
            Body::Config { .. } => name == NameId::CLUSTER,
        }
    }
}

/// A configuration: its members and the index of the entry that created it (0 for the initial
/// configuration a cluster is bootstrapped with).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Config {
    pub index: Index,
    pub members: Members,
    /// Created by a forced shrink.
    pub forced: bool,
}

impl Config {
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains(&id)
    }
    /// Votes a candidate needs: a majority of the members.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// Describes a snapshot: the state after applying every entry up to `index` (whose term is
/// `term`), with the configuration in force at that index. The data itself is the shell's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub config: Config,
}

/// The state a node must persist before it sends any message that depends on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// A message between two nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Envelope<C> {
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message<C>,
}

/// The peer protocol (Raft's RPCs, with responses as separate messages).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message<C> {
    /// A candidate asks for a vote. With `pre_vote` it only asks whether it *would* get one in
    /// `term` (Raft thesis §9.6): nobody changes term or vote for a pre-vote.
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
        pre_vote: bool,
        /// Sent because the leader handed over (`TimeoutNow`): voters that heard from the
        /// leader recently vote anyway.
        transfer: bool,
    },
    /// The answer to `RequestVote` (a granted pre-vote carries the requested term).
    Vote {
        term: Term,
        granted: bool,
        pre_vote: bool,
    },
    /// Replication and heartbeat from the leader. `sent_at` is the leader's clock when sending;
    /// `echo` is the latest `sent_at` of this follower's responses the leader has seen (the
    /// follower's clock), which anchors the follower's read lease.
    AppendEntries {
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry<C>, MAX_BATCH>,
        commit: Index,
        sent_at: Time,
        echo: Option<Time>,
    },
    /// The answer to `AppendEntries` or `InstallSnapshot`. On success `index` is the last index
    /// known to match the leader's log; on failure it is the rejected `prev_index`.
    /// `last_index` is the follower's last index (a hint). `echo` is the leader's `sent_at`,
    /// `sent_at` the follower's clock (both for leases).
    AppendResponse {
        term: Term,
        success: bool,
        index: Index,
        last_index: Index,
        echo: Time,
        sent_at: Time,
    },
    /// The leader replaces the follower's state with a snapshot. The shell carries the snapshot
    /// data next to this message and hands it to the follower's shell.
    InstallSnapshot {
        term: Term,
        meta: SnapshotMeta,
        sent_at: Time,
    },
    /// "You are not a member of my configuration `config_index`": sent to a node that asks for a
    /// vote without being a member, so a removed node learns it was removed.
    NotMember { term: Term, config_index: Index },
    /// The leader of `term` hands leadership to the receiver, which holds its whole log:
    /// start an election now (see `transfer.rs`).
    TimeoutNow { term: Term },
}

impl<C> Message<C> {
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote { term, .. }
            | Message::Vote { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::NotMember { term, .. }
            | Message::TimeoutNow { term } => *term,
        }
    }
}
