//! The node: its state, the inputs it takes, and the single entry point [`Node::step`], which
//! hands what it decides to the shell's [`Output`] sink. The protocol rules live in the sibling
//! files (`election`, `replication`, `membership`, `visibility`); this file only dispatches.

use heapless::Vec;

use super::log::Log;
use super::message::{
    Entry, Envelope, HardState, Index, Message, Names, NodeId, SnapshotMeta, Term, Time,
};
use super::outcome::{ProposalId, ProposeError, ReadId};
use super::output::Output;
use super::{MAX_NODES, MAX_PROPOSALS, MAX_READS};

/// Timing parameters, in the unit of [`Time`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// A follower or candidate that hears nothing for a random time in
    /// `[election_timeout, 2 * election_timeout)` starts an election.
    pub election_timeout: Time,
    /// How often a leader sends `AppendEntries` when it has nothing else to say.
    pub heartbeat_interval: Time,
    /// How long a read may wait for pending entries (or a lease) before it fails.
    pub read_timeout: Time,
    /// How long a proposal may wait for its commit before its outcome is reported unknown.
    pub write_timeout: Time,
    /// The optional read lease (see the module docs). `None` disables it.
    pub read_lease: Option<Time>,
    /// Bound on the clock error accumulated over one `read_lease`.
    pub clock_drift: Time,
    /// Ask for pre-votes before starting an election (Raft thesis §9.6), so a node that cannot
    /// win (cut off, behind, or removed without knowing it) never bumps everyone's term.
    pub pre_vote: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            election_timeout: 1000,
            heartbeat_interval: 100,
            read_timeout: 5000,
            write_timeout: 5000,
            read_lease: None,
            clock_drift: 0,
            pre_vote: true,
        }
    }
}

/// A node's role in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes: would a majority vote for us in the next term?
    PreCandidate,
    /// Asking for votes in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// A membership change; one node at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Expand: commits when every node of the new configuration holds it.
    Add(NodeId),
    /// Shrink: commits when every node of the old configuration holds it.
    Remove(NodeId),
    /// Forced shrink of a dead node: commits with the remaining nodes only.
    ForceRemove(NodeId),
}

/// One input to [`Node::step`].
#[derive(Clone, Debug)]
pub enum Input<C> {
    /// Time passed. `random` is fresh randomness for the election timeout.
    Tick {
        /// Fresh randomness.
        random: u64,
    },
    /// A message from a peer.
    Message(Envelope<C>),
    /// A client write touching `names`.
    Propose {
        /// The shell's handle, returned with the outcome.
        id: ProposalId,
        /// The names the command touches.
        names: Names,
        /// The command.
        command: C,
    },
    /// A membership change; `command` is the shell's part of the configuration entry.
    ChangeMembership {
        /// The shell's handle, returned with the outcome.
        id: ProposalId,
        /// The change.
        change: Change,
        /// The shell's part of the configuration entry.
        command: C,
    },
    /// A client read of `names`; answered through [`Output::read`] once it may be served.
    Read {
        /// The shell's handle, returned with the decision.
        id: ReadId,
        /// The names the read reads.
        names: Names,
    },
    /// Hand leadership to another member (leader only), e.g. before removing this node; see
    /// `transfer.rs`. Proposals get `Busy` until it succeeds or is abandoned.
    TransferLeadership,
}

/// Why [`Node::new`] refused the stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// More than [`WINDOW`](super::WINDOW) stored entries above the applied index.
    TooManyEntries,
    /// The stored entries do not follow the applied index.
    Gap,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::TooManyEntries => f.write_str(
                "more log entries above the applied index than the consensus window holds",
            ),
            StartError::Gap => {
                f.write_str("the stored log does not continue from the applied index")
            }
        }
    }
}

/// Pushes onto a collection whose capacity the protocol already bounds (members, votes and
/// replication targets are at most [`MAX_NODES`]; a proposal is tracked only after checking
/// for room). Overflowing would mean a broken invariant: debug builds (and so the simulator)
/// panic; release builds keep the collection as it is.
pub(super) fn push_bounded<T, const N: usize>(collection: &mut Vec<T, N>, item: T) {
    let pushed = collection.push(item).is_ok();
    debug_assert!(
        pushed,
        "a bounded collection of the consensus core overflowed"
    );
}

/// The leader's view of one follower.
#[derive(Clone, Copy, Debug)]
pub(super) struct Progress {
    pub id: NodeId,
    /// The next index to send.
    pub next: Index,
    /// The highest index acknowledged in this term.
    pub matched: Index,
    /// The follower's clock at its latest response (for its lease).
    pub echo: Option<Time>,
    /// Our clock when we last got a response from it (or began replicating to it).
    pub last_heard: Time,
}

#[derive(Clone, Debug)]
pub(super) struct Proposal {
    pub id: ProposalId,
    pub index: Index,
    pub term: Term,
    pub deadline: Time,
}

#[derive(Clone, Debug)]
pub(super) struct WaitingRead {
    pub id: ReadId,
    pub names: Names,
    pub deadline: Time,
}

/// One consensus node. See the module docs for the rules.
#[derive(Clone, Debug)]
pub struct Node<C> {
    pub(super) id: NodeId,
    pub(super) params: Params,
    pub(super) now: Time,
    pub(super) random: u64,
    // Persistent (mirrored by the shell through `Output::hard_state`).
    pub(super) term: Term,
    pub(super) voted_for: Option<NodeId>,
    // Volatile.
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) log: Log<C>,
    pub(super) election_deadline: Time,
    pub(super) heartbeat_deadline: Time,
    pub(super) votes: Vec<NodeId, MAX_NODES>,
    pub(super) progress: Vec<Progress, MAX_NODES>,
    pub(super) noop_pending: bool,
    /// (index of a forced configuration, time all its members acknowledged it in this term).
    pub(super) forced_acked: Option<(Index, Time)>,
    pub(super) proposals: Vec<Proposal, MAX_PROPOSALS>,
    pub(super) reads: Vec<WaitingRead, MAX_READS>,
    pub(super) lease_until: Time,
    /// Set when a member told us its configuration (this index) excludes us.
    pub(super) removed_at: Option<Index>,
    /// The highest commit index a leader of our term told us about; reads wait while our own
    /// commit index is lower (we lack committed entries, e.g. after being force-removed).
    pub(super) leader_commit: Index,
    /// As leader: the index of our no-op (0 until appended). Followers get lease echoes only
    /// once they hold it, i.e. hold every committed entry.
    pub(super) noop_index: Index,
    /// When we last accepted a message from the leader of our term.
    pub(super) leader_contact: Time,
    /// As leader: the leadership transfer under way, if any.
    pub(super) transfer: Option<Transfer>,
}

impl<C: Clone> Node<C> {
    /// Starts a node from its stored state: the hard state, the snapshot of the applied state
    /// (for a new cluster: index 0, term 0 and the initial configuration; for a node that is
    /// about to join: index 0 and an empty configuration) and the stored entries above it.
    pub fn new(
        id: NodeId,
        params: Params,
        now: Time,
        random: u64,
        hard_state: HardState,
        applied: SnapshotMeta,
        entries: &[Entry<C>],
    ) -> Result<Self, StartError> {
        let mut log = Log::new(applied);
        for entry in entries {
            if entry.index <= log.commit() {
                continue;
            }
            if entry.index != log.last_index() + 1 {
                return Err(StartError::Gap);
            }
            if !log.push(entry.clone()) {
                return Err(StartError::TooManyEntries);
            }
        }
        let mut node = Node {
            id,
            params,
            now,
            random,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            log,
            election_deadline: 0,
            heartbeat_deadline: 0,
            votes: Vec::new(),
            progress: Vec::new(),
            noop_pending: false,
            forced_acked: None,
            proposals: Vec::new(),
            reads: Vec::new(),
            lease_until: 0,
            removed_at: None,
            leader_commit: 0,
            noop_index: 0,
            leader_contact: 0,
            transfer: None,
        };
        node.reset_election_timer();
        Ok(node)
    }

    /// Feeds one input at time `now` (this node's monotonic clock). Everything the step
    /// decides goes to `out`, one call per decision, which the shell carries out as the
    /// [`Output`] contract says (persist, then send, then answer).
    pub fn step(&mut self, now: Time, input: Input<C>, out: &mut impl Output<C>) {
        self.now = self.now.max(now);
        match input {
            Input::Tick { random } => {
                self.random = random;
                self.tick(out);
            }
            Input::Message(envelope) => {
                if envelope.to == self.id && envelope.from != self.id {
                    self.handle_message(envelope.from, envelope.message, out);
                }
            }
            Input::Propose { id, names, command } => self.propose(id, names, command, out),
            Input::ChangeMembership {
                id,
                change,
                command,
            } => self.propose_change(id, change, command, out),
            Input::Read { id, names } => self.read(id, names, out),
            Input::TransferLeadership => self.transfer_leadership(out),
        }
        if self.role == Role::Leader {
            self.maybe_commit(out);
        }
        self.release_reads(out);
    }

    fn tick(&mut self, out: &mut impl Output<C>) {
        self.expire_transfer();
        self.expire_proposals(out);
        self.expire_reads(out);
        match self.role {
            Role::Leader => {
                if self.now >= self.heartbeat_deadline {
                    self.broadcast_append(out);
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.now >= self.election_deadline {
                    self.campaign(out);
                }
            }
        }
    }

    fn handle_message(&mut self, from: NodeId, message: Message<C>, out: &mut impl Output<C>) {
        match message {
            Message::RequestVote {
                term,
                last_index,
                last_term,
                pre_vote,
                transfer,
            } => {
                self.handle_request_vote(from, term, last_index, last_term, pre_vote, transfer, out)
            }
            Message::Vote {
                term,
                granted,
                pre_vote,
            } => self.handle_vote(from, term, granted, pre_vote, out),
            Message::AppendEntries {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at,
                echo,
            } => self.handle_append(
                from, term, prev_index, prev_term, entries, commit, sent_at, echo, out,
            ),
            Message::AppendResponse {
                term,
                success,
                index,
                last_index,
                echo,
                sent_at,
            } => self
                .handle_append_response(from, term, success, index, last_index, echo, sent_at, out),
            Message::InstallSnapshot {
                term,
                meta,
                sent_at,
            } => self.handle_snapshot(from, term, meta, sent_at, out),
            Message::NotMember { config_index, .. } => self.handle_not_member(config_index),
            Message::TimeoutNow { term } => self.handle_timeout_now(from, term, out),
        }
    }

    // ---- shared helpers -------------------------------------------------------------------

    /// Hands a message to the shell for sending.
    pub(super) fn send(&self, to: NodeId, message: Message<C>, out: &mut impl Output<C>) {
        out.send(Envelope {
            from: self.id,
            to,
            message,
        });
    }

    pub(super) fn persist_hard_state(&self, out: &mut impl Output<C>) {
        out.hard_state(HardState {
            term: self.term,
            voted_for: self.voted_for,
        });
    }

    /// Adopts `term` (if newer) and becomes a follower of `leader`.
    pub(super) fn become_follower(
        &mut self,
        term: Term,
        leader: Option<NodeId>,
        out: &mut impl Output<C>,
    ) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state(out);
        }
        // As in Raft, a candidate that steps down keeps its timer running (resetting it here
        // would let one node's higher term synchronize everyone's timeouts into split votes);
        // a leader had no timer running, so it starts one.
        if self.role == Role::Leader {
            self.reset_election_timer();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.noop_pending = false;
        self.noop_index = 0;
        self.forced_acked = None;
        self.transfer = None;
    }

    /// Appends an entry this node created (as leader) and records it for the shell.
    pub(super) fn append_own(&mut self, entry: Entry<C>, out: &mut impl Output<C>) -> bool {
        if !self.log.push(entry.clone()) {
            return false;
        }
        out.append(entry);
        true
    }

    /// Commits up to `index`, handing the entries to [`Output::apply`] and settling proposals.
    pub(super) fn commit_to(&mut self, index: Index, out: &mut impl Output<C>) {
        let proposals = &mut self.proposals;
        self.log.commit_to(index, |entry| {
            proposals.retain(|p| {
                if p.index != entry.index {
                    return true;
                }
                let result = if p.term == entry.term {
                    Ok(p.index)
                } else {
                    Err(ProposeError::Overwritten)
                };
                out.proposal(p.id, result);
                false
            });
            out.apply(entry);
        });
        if self.noop_pending && self.role == Role::Leader {
            self.append_noop(out);
        }
    }

    /// Removes uncommitted entries from `index` on; their proposals will never commit.
    pub(super) fn truncate_from(&mut self, index: Index, out: &mut impl Output<C>) {
        self.log.truncate_from(index);
        out.truncate(index);
        self.proposals.retain(|p| {
            if p.index < index {
                return true;
            }
            out.proposal(p.id, Err(ProposeError::Overwritten));
            false
        });
    }

    // ---- queries ------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Its role in the current term.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The candidate this node voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    /// The term and vote, as persisted through [`Output::hard_state`].
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }
    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The commit index, which is also the index the shell has applied.
    pub fn commit_index(&self) -> Index {
        self.log.commit()
    }
    /// The index of the last entry in this node's log.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The term of the last entry in this node's log.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }
    /// The uncommitted entries this node holds.
    pub fn pending_entries(&self) -> &[Entry<C>] {
        self.log.pending()
    }
    /// The latest configuration in this node's log (committed or not).
    pub fn config(&self) -> super::message::Config {
        self.log.config()
    }
    /// The configuration in force at the commit index.
    pub fn committed_config(&self) -> &super::message::Config {
        self.log.committed_config()
    }
    /// The leader's match index for `id` (its own last index for itself).
    pub fn match_index(&self, id: NodeId) -> Option<Index> {
        if self.role != Role::Leader {
            return None;
        }
        if id == self.id {
            return Some(self.log.last_index());
        }
        self.progress.iter().find(|p| p.id == id).map(|p| p.matched)
    }
    /// As leader: each replication target with its match index and when the leader last heard
    /// from it (its own clock). For `describe`.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, Index, Time)> + '_ {
        self.progress
            .iter()
            .map(|p| (p.id, p.matched, p.last_heard))
    }

    /// When the next timer needs a tick (the shell may tick more often).
    pub fn next_deadline(&self) -> Time {
        let timer = if self.role == Role::Leader {
            self.heartbeat_deadline
        } else {
            self.election_deadline
        };
        let reads = self
            .reads
            .iter()
            .map(|r| r.deadline)
            .min()
            .unwrap_or(Time::MAX);
        let proposals = self
            .proposals
            .iter()
            .map(|p| p.deadline)
            .min()
            .unwrap_or(Time::MAX);
        timer.min(reads).min(proposals)
    }
}

/// A transfer under way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub target: NodeId,
    /// When the transfer is abandoned.
    pub until: super::message::Time,
    /// Whether `TimeoutNow` went out.
    pub sent: bool,
}
