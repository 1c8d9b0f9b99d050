//! The consensus core: all-node writes, any-node reads (`shared/spec/cluster.md`).
//!
//! This is Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm") with
//! one rule changed — an entry commits when **every** node of the configuration holds it, not a
//! majority — and with what that change buys: any node can answer reads from its own state.
//! The words are Raft's: term, vote, leader, follower, candidate, log, entry, index, match
//! index, commit index, `AppendEntries`, `RequestVote`.
//!
//! # Shape
//!
//! [`Node`] is a pure state machine. The shell (`kes-node`) feeds it one [`Input`] at a time
//! with [`Node::step`] — a tick with fresh randomness, a peer [`Message`], a client write
//! ([`Input::Propose`]), a membership change ([`Input::ChangeMembership`]), a client read
//! ([`Input::Read`]) — together with the current time of its monotonic clock. The node hands
//! every decision to the shell's [`Output`] sink, one call each, and the shell carries them out
//! in three groups (the full contract is on [`Output`]):
//!
//! 1. one durable transaction: `hard_state` (term, vote), `restore` (install a received
//!    snapshot), `truncate`, `append` (new log entries), `apply` (committed entries, in
//!    order, with the applied index);
//! 2. `send` messages, and `send_snapshot`s (each with a snapshot of the state just applied);
//! 3. answer `proposal`s (write outcomes) and `read`s (a released read is answered from the
//!    state of step 1).
//!
//! The core builds no batch of outputs and so drops none. `StepOutput` (feature `alloc`)
//! collects a step into `Vec`s for shells that want one.
//!
//! The core has no I/O, no clock, no randomness and no heap; its own state is in `heapless`
//! collections bounded by the constants below. A bound that a client can hit is reported to it:
//! a full window or too many writes in flight is [`ProposeError::Busy`], too many waiting reads
//! is [`ReadError::Busy`]. Commands are opaque to the core (type parameter `C`; the
//! shell picks e.g. `heapless::Vec<u8, N>` or a handle) and come with the [`Names`] they touch.
//! Messages and hard state derive `Serialize`/`Deserialize` for postcard.
//!
//! The shell owns the log. The core keeps only the entries above the commit index (at most
//! [`WINDOW`]) and the term and configuration at the commit index. Because the shell applies
//! committed entries in the same transaction that persists new ones, *commit index = applied
//! index* at every point the outside world can observe; on restart the shell passes the hard
//! state, the applied [`SnapshotMeta`] and the stored entries above it to [`Node::new`].
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! use kes_core::consensus::*;
//!
//! let mut members = Members::new();
//! members.push(0).unwrap();
//! let applied = SnapshotMeta { index: 0, term: 0, config: Config { index: 0, members, forced: false } };
//! let mut node: Node<u64> =
//!     Node::new(0, Params::default(), 0, 42, HardState::default(), applied, &[]).unwrap();
//! let mut out = StepOutput::default();
//!
//! // Time passes; the only member elects itself and commits its no-op at once.
//! node.step(5_000, Input::Tick { random: 7 }, &mut out);
//! assert_eq!(node.role(), Role::Leader);
//! assert_eq!(out.hard_state, Some(HardState { term: 1, voted_for: Some(0) }));
//! assert_eq!(out.apply[0].body, Body::Noop);
//!
//! // A client write touching name 1: persisted, applied and acknowledged in one step.
//! let mut names = Names::new();
//! names.push(NameId(1)).unwrap();
//! out.clear();
//! node.step(5_001, Input::Propose { id: ProposalId(7), names, command: 99 }, &mut out);
//! assert_eq!(out.append.len(), 1);
//! assert_eq!(out.apply.len(), 1);
//! assert_eq!(out.proposals[0], (ProposalId(7), Ok(2)));
//!
//! // Reads of name 1 may be served at once: nothing touching it is pending.
//! assert_eq!(node.read_status(&[NameId(1)]), Ok(()));
//! # }
//! ```
//!
//! What the shell must do, in short: tick often (every few ms) with fresh randomness; hand every
//! peer message to the core as it arrives (the core tolerates loss, duplication, reordering);
//! carry out each step's outputs in order, fsync before sending; derive [`NameId`]s the same way
//! on every node; on [`Output::send_snapshot`] ship a snapshot of the applied state with the
//! message and, on the receiving side, keep it until the core says `restore` (or drop it); and
//! on restart pass exactly what was persisted to [`Node::new`].
//!
//! # The rules
//!
//! 1. **Election** (`election.rs`). Persistent `term` and `voted_for`; a follower whose
//!    randomized election timeout passes becomes a candidate of `term + 1`; a node votes once per
//!    term, for a candidate whose log is at least as up to date as its own; a candidate with
//!    votes from a *majority* of its configuration becomes leader. A new leader resets every match
//!    index and appends a **no-op** of its own term. Three guards keep nodes that cannot win
//!    (cut off, behind, removed without knowing it) from disrupting the others, as in the Raft
//!    thesis: a node first asks for *pre-votes* and starts an election only if a majority would
//!    vote for it; a follower that heard from a leader within the election timeout refuses
//!    candidates (leader stickiness); and a candidate that a *committed* configuration excludes
//!    gets `NotMember`, which tells it it was removed.
//! 2. **Replication** (`replication.rs`). `AppendEntries` carries `prev_index`/`prev_term`; a
//!    follower rejects a mismatch, truncates only from the first conflicting entry, appends the
//!    rest, and persists before acknowledging. Match indexes count only acknowledgements of the
//!    leader's current term.
//! 3. **All-node commit** (`replication.rs`). Index `c` commits when every member of the
//!    configuration has matched `c` (plus the membership rules below). The leader then applies and
//!    immediately sends the new commit index to every follower.
//! 4. **Two-phase visibility** (`visibility.rs`). A read of a name waits while any entry above the
//!    applied index touches that name, and is released when that entry is applied or truncated.
//!    It also waits while a leader has told this node of a commit index above its own (it lacks
//!    committed entries). Otherwise reads never wait.
//! 5. **Membership** (`membership.rs`). One node at a time; a configuration is a log entry and
//!    takes effect when appended. Shrink commits with all nodes of the old configuration, expand
//!    with all of the new one, a forced shrink with the remaining nodes only (and entries below
//!    it commit without the removed node only together with it; it waives no other node, so a
//!    shrink it overrides still waits for the leaving node to append its removal).
//! 6. **Snapshots** (`replication.rs`). A follower that lacks entries at or below the leader's
//!    commit index (only a joining node can) is sent the leader's applied state; the core says
//!    to whom and with which metadata, the shell produces, ships and installs the data.
//! 7. **Read lease** (optional, `Params::read_lease`). A node serves reads only while it holds a
//!    lease. A follower's lease is anchored at the time *it sent* a response that the leader
//!    echoes back in a later `AppendEntries` (so the anchor precedes the leader's sending), and
//!    the leader echoes only to followers that hold its no-op (hence every committed entry). A
//!    leader's lease is anchored at the time it sent an `AppendEntries` that a follower answered
//!    in its term. Both last `read_lease - clock_drift` on the holder's clock. A forced shrink
//!    commits only `read_lease` after all remaining nodes acknowledged it in the leader's term.
//!
//! # Why it is safe
//!
//! - *Election safety*: one vote per term, persisted before it is sent, and majorities of one
//!   configuration intersect (changes are one node at a time, so consecutive configurations'
//!   majorities intersect too): at most one leader per term.
//! - *Log matching*: as in Raft, an entry is identified by (index, term) and the
//!   `prev_index`/`prev_term` check makes equal entries have equal prefixes.
//! - *Every committed entry is on every node*: by the commit rule, and it is never removed since
//!   a follower truncates only conflicting entries and a committed entry is held by every later
//!   leader (its voters include a node holding it, which only votes for logs at least as up to
//!   date). Entries of earlier terms may therefore commit the same way, unlike Raft's figure 8:
//!   an entry held by every node cannot be overwritten.
//! - *Linearizable reads everywhere*: a write becomes visible (applied) somewhere only after every
//!   node holds it; a node holding a write it has not applied refuses reads of the names it
//!   touches. Crashes lose nothing a node acknowledged, because the shell persists before it
//!   sends. A node that leaves appends its removal before anything can commit without it.
//!   A force-removed node is the exception (it may be cut off and not know): without a lease it
//!   can serve stale reads until it hears from the cluster (the documented hazard); with a lease,
//!   its lease has run out before anything commits without it.
//! - *Pending entries after a leader dies* are decided by the ordinary protocol: the new
//!   leader's no-op either carries them to commit or truncates them (a committed entry is on
//!   every node, so one the new leader lacks was never committed). While a member is down they
//!   may stay undecided, and reads of their names wait (bounded by `read_timeout`).
//!
//! # Differences from Raft
//!
//! - Commit needs all nodes of the configuration, not a majority; election still needs a
//!   majority. So a single unreachable node stops writes (they time out, naming the nodes that
//!   did not store the entry), while reads keep working on every node and elections succeed.
//! - Entries of earlier terms commit by the same rule (no "current term only" restriction).
//! - No read index or leader round trip for reads: visibility is local (rule 4).
//! - Snapshots are only needed for joining (or re-joining) nodes: a member always holds every
//!   committed entry.
//! - The core keeps a bounded window of uncommitted entries; the shell keeps the log and applies
//!   in the same transaction that persists, so commit index = applied index.
//! - Candidates that a committed configuration excludes get `NotMember` instead of a vote.
//! - The leader never removes itself (a change removing it is refused); the shell removes a
//!   leader by transferring leadership first (`Input::TransferLeadership`, `transfer.rs`) and
//!   having the new leader propose the removal.
//!
//! # Testing
//!
//! The `sim` module (feature `sim`) simulates whole clusters deterministically and checks the
//! invariants after every event and linearizability at the end; `tests/consensus_sim.rs` runs thousands of seeds and
//! `tests/consensus_scenarios.rs` the regression scenarios; `fuzz/fuzz_targets/consensus.rs`
//! lets libFuzzer steer the simulator.

mod election;
mod log;
mod membership;
mod message;
mod node;
mod outcome;
mod output;
mod replication;
mod transfer;
mod visibility;

#[cfg(feature = "sim")]
pub mod sim;

pub use message::{
    Body, Config, Entry, Envelope, HardState, Index, Members, Message, NameId, Names, NodeId,
    SnapshotMeta, Term, Time,
};
pub use node::{Change, Input, Node, Params, Role, StartError};
pub use outcome::{ProposalId, ProposeError, ReadError, ReadId};
pub use output::Output;
#[cfg(feature = "alloc")]
pub use output::StepOutput;

/// The largest cluster.
pub const MAX_NODES: usize = 7;
/// The most names one command may touch.
pub const MAX_NAMES: usize = 4;
/// The most uncommitted entries a node holds (and the most writes in flight).
pub const WINDOW: usize = 128;
/// The most entries in one `AppendEntries`.
pub const MAX_BATCH: usize = 8;
/// The most reads waiting on one node.
pub const MAX_READS: usize = 64;
/// The most writes one node tracks.
pub const MAX_PROPOSALS: usize = WINDOW;
