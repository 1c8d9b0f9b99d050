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
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: Index,
    /// What it carries.
    pub body: Body<C>,
}

/// What an entry carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Body<C> {
    /// Appended by every new leader so that entries left pending by its predecessors get decided.
    Noop,
    /// An application command and the names it touches.
    Command {
        /// The names it touches (reads of them wait while it is pending).
        names: Names,
        /// The command.
        command: C,
    },
    /// A new configuration (one node added or removed). `forced` marks a forced shrink, which
    /// commits without the removed node. `command` is the shell's part (e.g. addresses).
    Config {
        /// The members of the new configuration.
        members: Members,
        /// Whether it is a forced shrink.
        forced: bool,
        /// The shell's part of the configuration.
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
    /// The index of the entry that created it (0: the initial configuration).
    pub index: Index,
    /// Its members.
    pub members: Members,
    /// Created by a forced shrink.
    pub forced: bool,
}

impl Config {
    /// Whether `id` is a member.
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
    /// The last index the snapshot includes.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration in force at `index`.
    pub config: Config,
}

/// The state a node must persist before it sends any message that depends on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate it voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// A message between two nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Envelope<C> {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// What it says.
    pub message: Message<C>,
}

/// The peer protocol (Raft's RPCs, with responses as separate messages).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message<C> {
    /// A candidate asks for a vote. With `pre_vote` it only asks whether it *would* get one in
    /// `term` (Raft thesis §9.6): nobody changes term or vote for a pre-vote.
    RequestVote {
        /// The term the candidate stands in.
        term: Term,
        /// The index of the candidate's last log entry.
        last_index: Index,
        /// The term of the candidate's last log entry.
        last_term: Term,
        /// Only asking whether it would get the vote.
        pre_vote: bool,
        /// Sent because the leader handed over (`TimeoutNow`): voters that heard from the
        /// leader recently vote anyway.
        transfer: bool,
    },
    /// The answer to `RequestVote` (a granted pre-vote carries the requested term).
    Vote {
        /// The voter's term (or the requested term, for a granted pre-vote).
        term: Term,
        /// Whether the vote is granted.
        granted: bool,
        /// Whether this answers a pre-vote.
        pre_vote: bool,
    },
    /// Replication and heartbeat from the leader. `sent_at` is the leader's clock when sending;
    /// `echo` is the latest `sent_at` of this follower's responses the leader has seen (the
    /// follower's clock), which anchors the follower's read lease.
    AppendEntries {
        /// The leader's term.
        term: Term,
        /// The index of the entry just before `entries`.
        prev_index: Index,
        /// The term of the entry at `prev_index`.
        prev_term: Term,
        /// The entries to append (none for a heartbeat).
        entries: Vec<Entry<C>, MAX_BATCH>,
        /// The leader's commit index.
        commit: Index,
        /// The leader's clock when sending.
        sent_at: Time,
        /// The latest `sent_at` of this follower's responses the leader has seen.
        echo: Option<Time>,
    },
    /// The answer to `AppendEntries` or `InstallSnapshot`. On success `index` is the last index
    /// known to match the leader's log; on failure it is the rejected `prev_index`.
    /// `last_index` is the follower's last index (a hint). `echo` is the leader's `sent_at`,
    /// `sent_at` the follower's clock (both for leases).
    AppendResponse {
        /// The follower's term.
        term: Term,
        /// Whether the entries (or the snapshot) were accepted.
        success: bool,
        /// The last index known to match (success) or the rejected `prev_index` (failure).
        index: Index,
        /// The follower's last index.
        last_index: Index,
        /// The `sent_at` of the message this answers (the leader's clock).
        echo: Time,
        /// The follower's clock when sending.
        sent_at: Time,
    },
    /// The leader replaces the follower's state with a snapshot. The shell carries the snapshot
    /// data next to this message and hands it to the follower's shell.
    InstallSnapshot {
        /// The leader's term.
        term: Term,
        /// What the snapshot holds.
        meta: SnapshotMeta,
        /// The leader's clock when sending.
        sent_at: Time,
    },
    /// "You are not a member of my configuration `config_index`": sent to a node that asks for a
    /// vote without being a member, so a removed node learns it was removed.
    NotMember {
        /// The sender's term.
        term: Term,
        /// The index of the sender's configuration that excludes the receiver.
        config_index: Index,
    },
    /// The leader of `term` hands leadership to the receiver, which holds its whole log:
    /// start an election now (see `transfer.rs`).
    TimeoutNow {
        /// The leader's term.
        term: Term,
    },
}

impl<C> Message<C> {
    /// The sender's term, which every message carries.
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
