//! The replica: everything a cluster node does between the consensus core and the outside
//! world, as a state machine without I/O of its own (sans-IO, in the manner of quinn-proto).
//!
//! It owns the core [`Node`] and does what the core leaves to the shell: group commit of the
//! core's steps (`batch.rs`), forwarding of writes from followers to the leader
//! (`forward.rs`), the backlog of writes while the core's window is full (`backlog.rs`),
//! leaderless waits, leadership hand-over before a shrink of the leader (`handover.rs`),
//! snapshot streaming and staging (`snapshots.rs`), the preparation of an expand
//! (`expand.rs`), the read gate (`gate.rs`), which link a frame may take (`route.rs`), and
//! what happens when a persist fails (`persist.rs`). Each of those files adds the methods of one concern to [`Replica`]; the
//! state they keep lives in files below this one (`answer.rs`: who waits for a write and how
//! its outcome travels; `stream.rs`: snapshot streams; `expansion.rs`; `health.rs`;
//! `clock.rs`; `storage.rs`), so that every import points down. The shell (`cluster/mod.rs`)
//! owns sockets, TLS, the event loop, dialing and the wall clock; the deterministic simulator
//! plugs in memory instead and drives this same code.
//!
//! # Events in
//!
//! Every event takes the current time `now` ([`Millis`] since an epoch the driver chooses:
//! nothing in here reads a clock), the peer links (`&mut dyn` [`Links`]) and the storage
//! (`&dyn` [`Storage`], which `Store` implements: redb on a file in production, on redb's
//! in-memory backend in tests and the simulator; a driver may wrap it to inject faults):
//!
//! - [`Replica::propose`]`(now, links, store, waiter, ...)`: a client's write (the waiter `W`
//!   gives its [`Command`], see [`Write`]).
//! - [`Replica::read`]`(now, links, store, reader, names)`: may a read of `names` be answered?
//! - [`Replica::on_frame`]`(now, links, store, from, frame)`: a frame from peer `from`.
//! - [`Replica::on_writable`]`(links, to)`: the link to `to` can take more (snapshot pacing).
//! - [`Replica::tick`]`(now, links, store)`: timers: the core's deadline, forwarded writes,
//!   leaderless waits, the backlog, held shrinks, the expand's stages, snapshot streams.
//! - [`Replica::flush`]`(now, links, store)`: persist the steps of this round in one durable
//!   transaction (group commit), then carry out what they asked for.
//!
//! Membership changes arrive as writes (`Command::Expand`/`Command::Shrink`); links coming up
//! or going down are seen through [`Links::open`] when they matter, and links that broke
//! meanwhile through [`Links::breaks`] (a count, so a link that broke and came back between
//! two events is seen too). Randomness (election timeouts, snapshot stream ids, where the ids
//! of writes begin) comes from a seed given to [`Replica::new`].
//!
//! # Actions out
//!
//! - Frames to peers, dials and closes go through the narrow [`Links`] trait at once (a send
//!   that fails is a lost message, which the protocol tolerates). Nothing a step asks for is
//!   sent before [`Replica::flush`] persisted it.
//! - Decided writes and reads are pulled with [`Replica::take_decided`]: each waiter `W` with
//!   the write's outcome, each reader `R` with `Ok` or why the read may not be served.
//! - When the members' addresses change, [`Replica::take_mirror`] hands the shell the
//!   addresses to mirror in `.cluster.json`.
//!
//! Queries for the describe view and the server: [`Replica::id`], [`Replica::node`],
//! [`Replica::addresses`], [`Replica::pending_change`], [`Replica::is_member`],
//! [`Replica::has_pending`], [`Replica::next_deadline`].
mod answer;
mod backlog;
mod batch;
mod clock;
mod expand;
mod expansion;
mod forward;
mod gate;
mod handover;
mod health;
mod membership;
mod persist;
mod route;
mod snapshots;
mod storage;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};

use kes_core::consensus::{HardState, Input, Node, NodeId, Params, Role, StepOutput};

pub(crate) use super::frame::JOINING_ID;
use super::frame::{Failure, Frame};
use crate::command::Command;
use crate::store::{Addresses, StoreError};
use answer::Waiter;

pub(crate) use clock::Millis;
use expansion::Expansion;
pub(crate) use route::Peer;
pub(crate) use storage::Storage;

/// How long a forwarded write waits for the leader's answer.
const FORWARD_TIMEOUT: Millis = 6_000;
/// The same for a membership change (an expand ships a snapshot first).
const MEMBERSHIP_FORWARD_TIMEOUT: Millis = 120_000;
/// How long a write waits for an election to produce a leader (and for room in the window,
/// and for a hand-over).
const LEADERLESS_WAIT: Millis = 5_000;

/// A client's write as the replica sees it: the command; the rest is the shell's.
pub trait Write {
    fn command(&self) -> &Command;
}

/// The peer links as the replica needs them. The shell implements it over TLS connections in
/// its event loop; the simulator over in-memory queues.
///
/// The link that carries frames to a [`Peer`] is the one this node dialed to it; while that
/// one is not open, or for a peer without an address, it may be one the peer opened, whose
/// Hello claimed its id, unless the peer is `only_dialed` (see `route.rs`: a request to a
/// member never takes such a link).
pub trait Links {
    /// Queues `frame` on the open link that carries frames to `to`; false if there is none or
    /// it broke (the frame is lost).
    fn send(&mut self, to: Peer<'_>, frame: &Frame) -> bool;
    /// Whether a link that carries frames to `to` is open.
    fn open(&self, to: Peer<'_>) -> bool;
    /// How many links between this node and `to` (either way) have broken so far. What one
    /// carried is lost, and so may be an answer that was to come back: a write forwarded to
    /// the leader stops waiting long for its answer when this moves (see `forward.rs`).
    fn breaks(&self, to: Peer<'_>) -> u64;
    /// Whether the link to `to` still has unsent bytes queued (snapshot streams wait for it).
    fn busy(&self, to: Peer<'_>) -> bool;
    /// Asks to hear (through [`Replica::on_writable`]) when the link to `to` drained.
    fn watch_writable(&mut self, to: Peer<'_>);
    /// Opens an outbound link to a node that is not a member yet (an expand's new node).
    fn dial(&mut self, to: NodeId, addr: &str) -> Result<(), String>;
    /// The state of the outbound link to `to` (dialed to `to.at`, when given).
    fn dialed(&self, to: Peer<'_>) -> Dialed;
    /// Frames on the outbound link to `to` now come from `to` (its Hello said "joining").
    fn claim(&mut self, to: NodeId);
    /// Closes the outbound link to `to`.
    fn close(&mut self, to: NodeId);
}

/// The state of an outbound link (see [`Links::dialed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialed {
    /// TLS handshake or Hello exchange under way.
    Opening,
    /// Open; the peer's Hello said it is this node.
    Open(NodeId),
    /// No link, and why the last one closed before it opened, if known.
    Closed(Option<Failure>),
}

/// Links for a node that has none (a single node, tests): every send is lost.
pub(crate) struct NoLinks;

impl Links for NoLinks {
    fn send(&mut self, _: Peer<'_>, _: &Frame) -> bool {
        false
    }
    fn open(&self, _: Peer<'_>) -> bool {
        false
    }
    fn breaks(&self, _: Peer<'_>) -> u64 {
        0
    }
    fn busy(&self, _: Peer<'_>) -> bool {
        false
    }
    fn watch_writable(&mut self, _: Peer<'_>) {}
    fn dial(&mut self, _: NodeId, _: &str) -> Result<(), String> {
        Err("no links".into())
    }
    fn dialed(&self, _: Peer<'_>) -> Dialed {
        Dialed::Closed(None)
    }
    fn claim(&mut self, _: NodeId) {}
    fn close(&mut self, _: NodeId) {}
}

/// A small deterministic generator (splitmix64) for what the core needs random: the seed
/// comes from outside, so a simulated run replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Where the ids of this start's proposals and forwarded writes begin: at a random point, so
/// that an answer the leader sends to an earlier run of this node (a write forwarded before a
/// restart, committed after it) matches no write of this run, whose client it would give that
/// other write's outcome. Drawn apart from [`Replica`]'s generator, whose sequence it leaves
/// as it was; the top bit stays clear, so counting up never overflows.
fn first_id(seed: u64) -> u64 {
    Rng(seed ^ 0x6964_735f_6b65_7321).next() >> 1
}

/// How to start a replica (see [`Replica::new`]).
pub struct Start {
    /// This node's id, or [`JOINING_ID`] for a node waiting to be added.
    pub id: NodeId,
    pub params: Params,
    /// Seeds the replica's randomness.
    pub seed: u64,
    /// Persist the steps of one round together (`false` persists every step alone: it exists
    /// to measure what group commit buys).
    pub group_commit: bool,
}

/// One node's cluster state machine (see the module docs). `W` waits for a write, `R` for a
/// read's decision.
pub struct Replica<W, R> {
    id: NodeId,
    node: Node<Vec<u8>>,
    /// The driver's time at the latest event.
    now: Millis,
    rng: Rng,
    addresses: Addresses,
    /// Every address a member had, by id (see `route.rs`).
    book: Addresses,
    params: Params,
    /// True until a joining node learned its id from the leader (`--join`).
    joining: bool,
    /// Whether this node was a member when last checked (see `note_removal`).
    was_member: bool,
    group_commit: bool,
    /// The last id given to a proposal or a forwarded write (see [`first_id`]).
    next_id: u64,
    proposals: HashMap<u64, Waiter<W>>,
    /// Writes forwarded to the leader, waiting for its answer.
    forwards: HashMap<u64, answer::Forwarded<W>>,
    /// Outcomes of applied entries, by log index, until their proposal is answered.
    outcomes: HashMap<u64, Result<(), StoreError>>,
    reads: HashMap<u64, R>,
    /// Writes that arrived while no leader was reachable, with their deadline.
    leaderless: Vec<(W, Millis)>,
    /// Shrinks of the leader waiting for it to hand over (see `handover.rs`).
    held: Vec<answer::Held<W>>,
    /// Proposals waiting for room in the core's window, with their deadline.
    backlog: VecDeque<(Input<Vec<u8>>, Millis)>,
    /// Steps whose storage work is not persisted yet (see `batch.rs`), each with the chunk
    /// count of the staged snapshot it installs, if it does.
    batch: Vec<(StepOutput<Vec<u8>>, Option<u32>)>,
    /// Snapshots being sent, by receiver (see `snapshots.rs`).
    outgoing: BTreeMap<NodeId, stream::Outgoing>,
    /// The snapshot being received.
    incoming: stream::Incoming,
    /// The expand being prepared (see `expand.rs`).
    expansion: Option<Expansion<W>>,
    /// Persistence failures and the recovery from them (see `persist.rs`).
    health: health::Health,
    /// Decided writes, for the shell to answer.
    completions: Vec<(W, Result<(), StoreError>)>,
    /// Decided gated reads: `Ok`, or why the read may not be served.
    released: Vec<(R, Result<(), String>)>,
    /// Addresses to mirror in `.cluster.json`, when they changed.
    mirror: Option<Addresses>,
}

impl<W: Write, R> Replica<W, R> {
    /// Starts from the consensus state in `store` (which must hold one: see
    /// `Store::init_raft`). A single-node cluster elects itself before this returns.
    pub fn new(now: Millis, store: &dyn Storage, start: Start) -> Result<Self, String> {
        let state = store
            .raft_state()
            .map_err(|e| e.to_string())?
            .ok_or("the cluster state is missing")?;
        let single = state.applied.config.members.len() == 1;
        // The newest configuration: one appended but not applied yet counts (its new member
        // must be dialed, and may have to be removed by force).
        let addresses = super::file::newest(&state);
        // A node a pending shrink removes has an address in the applied configuration only.
        let book: Addresses = (state.addresses.iter().chain(addresses.iter()))
            .filter(|(_, a)| !a.is_empty())
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let mut rng = Rng(start.seed);
        let node = Node::new(
            start.id,
            start.params,
            now,
            rng.next(),
            state.hard_state,
            state.applied,
            &state.entries,
        )
        .map_err(|e| format!("cannot start the cluster state: {e}"))?;
        let joining = start.id == JOINING_ID;
        let mut replica = Replica {
            id: start.id,
            node,
            now,
            rng,
            addresses,
            book,
            params: start.params,
            joining,
            was_member: !joining,
            group_commit: start.group_commit,
            next_id: first_id(start.seed),
            proposals: HashMap::new(),
            forwards: HashMap::new(),
            outcomes: HashMap::new(),
            reads: HashMap::new(),
            leaderless: Vec::new(),
            held: Vec::new(),
            backlog: VecDeque::new(),
            batch: Vec::new(),
            outgoing: BTreeMap::new(),
            incoming: Default::default(),
            expansion: None,
            health: Default::default(),
            completions: Vec::new(),
            released: Vec::new(),
            mirror: None,
        };
        if single {
            // Nobody else can vote: become leader before serving the first request.
            for _ in 0..3 {
                if replica.node.role() == Role::Leader {
                    break;
                }
                replica.elect_alone();
                replica.flush(now, &mut NoLinks, store);
            }
        }
        Ok(replica)
    }

    /// Steps the core at its election deadline (a cluster of one elects itself at once).
    fn elect_alone(&mut self) {
        let at = self.node.next_deadline();
        let random = self.rng.next();
        let mut ready = StepOutput::default();
        self.node.step(at, Input::Tick { random }, &mut ready);
        self.batch.push((ready, None));
    }

    /// This node's id ([`JOINING_ID`] until a joining node learned its own).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The consensus core, for queries (role, term, leader, commit index, configuration).
    pub fn node(&self) -> &Node<Vec<u8>> {
        &self.node
    }

    /// The members' addresses as this node knows them (removed ids stay, with an empty
    /// address, so that ids are never reused).
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// When the core wants its next tick.
    pub fn next_deadline(&self) -> Millis {
        self.node.next_deadline()
    }

    pub fn hard_state(&self) -> HardState {
        self.node.hard_state()
    }

    /// Decided writes and reads since the last call.
    #[allow(clippy::type_complexity)]
    pub fn take_decided(
        &mut self,
    ) -> (
        Vec<(W, Result<(), StoreError>)>,
        Vec<(R, Result<(), String>)>,
    ) {
        (
            std::mem::take(&mut self.completions),
            std::mem::take(&mut self.released),
        )
    }

    /// The addresses to write to `.cluster.json`, if they changed since the last call.
    pub fn take_mirror(&mut self) -> Option<Addresses> {
        self.mirror.take()
    }

    /// Timers: ticks the core if its deadline passed, and expires or retries what waits
    /// (held shrinks, the expand, leaderless writes, forwarded writes, the backlog), and
    /// sends more of the snapshots being streamed.
    pub fn tick(&mut self, now: Millis, links: &mut dyn Links, store: &dyn Storage) {
        self.now = now;
        if now >= self.node.next_deadline() {
            let random = self.rng.next();
            self.step(Input::Tick { random });
        }
        self.release_held(links, store);
        self.drive_expansion(links);
        self.retry_leaderless(links, store);
        self.expire_forwards(links);
        self.expire_backlog(links);
        let receivers: Vec<NodeId> = self.outgoing.keys().copied().collect();
        for to in receivers {
            self.pump_snapshot(links, to);
        }
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Answers a write's waiter, here or on the node that forwarded it.
    fn answer(
        &mut self,
        links: &mut dyn Links,
        waiter: Waiter<W>,
        outcome: Result<(), StoreError>,
    ) {
        match waiter {
            Waiter::Local(w) => self.completions.push((w, outcome)),
            Waiter::Remote(node, id) => {
                let frame = Frame::ForwardResult {
                    id,
                    outcome: answer::to_wire(&outcome),
                };
                links.send(self.answer_to(node), &frame);
            }
        }
    }
}

/// An endpoint as the configuration spells it (or as given, if it does not parse).
fn file_normalize(endpoint: &str) -> String {
    super::file::normalize(endpoint).unwrap_or_else(|_| endpoint.to_string())
}
