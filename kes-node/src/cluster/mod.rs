//! The cluster shell: drives the pure consensus core (`kes_core::consensus`) with time,
//! randomness, peer messages and client writes, and carries out what it asks for: persist and
//! apply through the store, send messages over peer links, answer waiting clients.
//!
//! One node is the smallest cluster, so every write of every server goes through here: the
//! handler returns a command, the event loop proposes it, and the client is answered once the
//! command committed on every node (or failed). A follower forwards writes to the leader over
//! its peer link and relays the answer.
mod expand;
pub mod file;
mod handover;
pub mod peer;
mod persist;
mod snapshots;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kes_core::consensus::{
    Change, Config, HardState, Input, Members, Names, Node, NodeId, Params, ProposalId,
    ProposeError, ReadError, ReadId, Ready, Role, MAX_NAMES, WINDOW,
};
use kes_core::crypto::HmacKey;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::api::Pending;
use crate::command::Command;
use crate::item::ItemName;
use crate::store::{codec, Addresses, IoFailure, Refusal, Store, StoreError, Unavailable};
use peer::{Failure, Frame, Link, LinkState, WireOutcome};

/// Tokens of peer links start here (the HTTP connections use the low range).
pub const LINK_BASE: usize = 1 << 30;
/// How long a forwarded write waits for the leader's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(6);
/// The same for a membership change (an expand ships a snapshot first).
const MEMBERSHIP_FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// The placeholder id of a node that waits to be added (no real node has it).
const JOINING_ID: NodeId = NodeId::MAX;
/// How long a write waits for an election to produce a leader.
const LEADERLESS_WAIT: Duration = Duration::from_secs(5);
/// Delay before redialing a peer whose link failed.
const REDIAL: Duration = Duration::from_millis(250);
/// The longest delay between attempts: redials back off exponentially up to this, so a node
/// that is down for long costs little, and one that returns is found again within it.
const REDIAL_MAX: Duration = Duration::from_secs(2);

/// A client connection of the event loop: its token and a serial number, so that an answer
/// for a connection that went away never reaches a new connection that reuses the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub token: Token,
    pub serial: u64,
}

/// A finished write: which connection waits for it, its request, and its outcome.
pub type Completion = (ConnRef, Box<Pending>, Result<(), StoreError>);

enum Waiter {
    /// A client of this node.
    Local(ConnRef, Box<Pending>),
    /// A client of another node that forwarded the write (its forward id).
    Remote(NodeId, u64),
}

/// This node's part of the cluster.
pub struct Cluster {
    id: NodeId,
    node: Node<Vec<u8>>,
    epoch: Instant,
    dir: PathBuf,
    addresses: Addresses,
    dial: BTreeMap<NodeId, String>,
    secret: HmacKey,
    client_tls: Arc<rustls::ClientConfig>,
    links: Slab<Link>,
    outbound: BTreeMap<NodeId, usize>,
    redial_at: BTreeMap<NodeId, Instant>,
    /// The current backoff per peer (absent: [`REDIAL`]); reset when a dialed link opens.
    redial_delay: BTreeMap<NodeId, Duration>,
    next_id: u64,
    proposals: HashMap<u64, Waiter>,
    forwards: HashMap<u64, (ConnRef, Box<Pending>, Instant)>,
    outcomes: HashMap<u64, Result<(), StoreError>>,
    /// Finished writes for the event loop to answer.
    pub completions: Vec<Completion>,
    reads: HashMap<u64, ConnRef>,
    /// True until a joining node learned its id from the leader (`--join`).
    joining: bool,
    params: Params,
    /// Persist the steps of one event-loop round together (on unless `KES_GROUP_COMMIT=off`,
    /// which exists to measure what batching buys).
    group_commit: bool,
    /// Proposals waiting for room in the core's window, with their deadline.
    backlog: std::collections::VecDeque<(Input<Vec<u8>>, Instant)>,
    /// Steps whose storage work is not persisted yet (see [`Cluster::flush`]).
    /// Each with the chunk count of the staged snapshot it installs, if it does.
    batch: Vec<(Ready<Vec<u8>>, Option<u32>)>,
    /// Snapshots being sent, by receiver (see `snapshots.rs`).
    outgoing: BTreeMap<NodeId, snapshots::Outgoing>,
    /// The snapshot being received.
    incoming: snapshots::Incoming,
    /// Writes that arrived while no leader was known, with their deadline.
    leaderless: Vec<(ConnRef, Box<Pending>, Instant)>,
    /// Shrinks of the leader waiting for it to hand over (see `handover.rs`).
    held: Vec<handover::Held>,
    /// Decided gated reads: the connection and `Ok`, or why the read may not be served.
    pub released: Vec<(ConnRef, Result<(), String>)>,
    /// The expand being prepared (see `expand.rs`).
    expansion: Option<expand::Expansion>,
    /// Why the last outbound link to a node closed before it opened (cleared when one opens).
    link_failures: BTreeMap<NodeId, Failure>,
    /// Bumped whenever a link opens or closes, so that `publish` refreshes the view.
    link_epoch: u64,
    /// Whether this node was a member when last checked (see `note_removal`).
    was_member: bool,
    /// Persistence failures and the recovery from them (see `persist.rs`).
    health: persist::Health,
}

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

fn names_of(cmd: &Command) -> Names {
    let mut names = Names::new();
    for n in cmd.touches().iter().take(MAX_NAMES) {
        let _ = names.push(n.id());
    }
    names
}

fn to_wire(outcome: &Result<(), StoreError>) -> WireOutcome {
    match outcome {
        Ok(()) => WireOutcome::Ok,
        Err(StoreError::NotFound) => WireOutcome::NotFound,
        Err(StoreError::Exists) => WireOutcome::Exists,
        Err(StoreError::NoEnclave) => WireOutcome::NoEnclave,
        Err(StoreError::Refused(why)) => WireOutcome::Refused(why.to_string()),
        Err(StoreError::Unavailable(why)) => WireOutcome::Unavailable(why.to_string()),
        Err(StoreError::NoSpace(why)) => WireOutcome::Unavailable(why.to_string()),
        Err(e) => WireOutcome::Failed(e.to_string()),
    }
}

fn from_wire(outcome: WireOutcome) -> Result<(), StoreError> {
    match outcome {
        WireOutcome::Ok => Ok(()),
        WireOutcome::NotFound => Err(StoreError::NotFound),
        WireOutcome::Exists => Err(StoreError::Exists),
        WireOutcome::NoEnclave => Err(StoreError::NoEnclave),
        WireOutcome::Refused(m) => Err(StoreError::Refused(Refusal::Peer(m))),
        WireOutcome::Unavailable(m) => Err(StoreError::Unavailable(Unavailable::Peer(m))),
        WireOutcome::Failed(m) => Err(StoreError::Io(IoFailure::Peer(m))),
        WireOutcome::HandingOver => Err(StoreError::Unavailable(Unavailable::HandingOver)),
    }
}

impl Cluster {
    /// Loads (or, for a new database, bootstraps from `.cluster.json`) this node's consensus
    /// state. `listen` identifies this node among the members.
    pub fn open(
        store: &Store,
        dir: &Path,
        listen: SocketAddr,
        hsm: &dyn crate::hsm::Hsm,
        join: bool,
        read_lease: Option<(Duration, Duration)>,
    ) -> Result<Cluster, String> {
        let state = match store.raft_state().map_err(|e| e.to_string())? {
            Some(s) => s,
            None if join => {
                // A node about to join: nothing applied, no configuration. The leader's
                // snapshot brings both.
                store
                    .init_raft(Config::default(), &Addresses::new())
                    .map_err(|e| format!("cannot initialize the cluster state: {e}"))?;
                store
                    .raft_state()
                    .map_err(|e| e.to_string())?
                    .ok_or("cluster state missing after init")?
            }
            None => {
                let nodes = match file::read(dir)? {
                    Some(nodes) => nodes,
                    None => Addresses::from([(0, listen.to_string())]),
                };
                let mut members = Members::new();
                for id in nodes.keys() {
                    members
                        .push(*id)
                        .map_err(|_| "too many nodes in .cluster.json (at most 7)".to_string())?;
                }
                store
                    .init_raft(
                        Config {
                            index: 0,
                            members,
                            forced: false,
                        },
                        &nodes,
                    )
                    .map_err(|e| format!("cannot initialize the cluster state: {e}"))?;
                store
                    .raft_state()
                    .map_err(|e| e.to_string())?
                    .ok_or("cluster state missing after init")?
            }
        };
        let joining = state.applied.config.members.is_empty();
        let id = if joining {
            JOINING_ID
        } else {
            file::find_self(&state.addresses, listen).ok_or_else(|| {
            format!(
                "this node ({listen}) is not part of the cluster {:?}: start it with --addr set to its address in .cluster.json",
                state.addresses
            )
        })?
        };
        if !joining {
            // A mirror for people and tools: a full disk must not keep the node from serving.
            if let Err(err) = file::write(dir, &state.addresses) {
                eprintln!("kes-node: {err}");
            }
        }
        let single = state.applied.config.members.len() == 1;
        let params = Params {
            election_timeout: 1000,
            heartbeat_interval: 100,
            read_timeout: 5000,
            write_timeout: 5000,
            // With a lease, a node answers reads only while a leader recently counted it a
            // member, which bounds stale reads after a forced removal (spec: read_lease).
            read_lease: read_lease.map(|(lease, _)| lease.as_millis() as u64),
            clock_drift: read_lease.map_or(0, |(_, drift)| drift.as_millis() as u64),
            ..Params::default()
        };
        let epoch = Instant::now();
        let random = u64::from_le_bytes(crate::random::bytes());
        let node = Node::new(
            id,
            params,
            0,
            random,
            state.hard_state,
            state.applied,
            &state.entries,
        )
        .map_err(|e| format!("cannot start the cluster state: {e}"))?;
        let seed = crate::hsm::cluster_seed(hsm, &[]);
        let cluster_key = crate::identity::ApiKey::from_seed(seed);
        let secret = HmacKey::new(crate::hsm::cluster_seed(hsm, b"kes:v1:peer_auth"));
        let mut cluster = Cluster {
            id,
            node,
            epoch,
            dir: dir.to_path_buf(),
            addresses: state.addresses,
            dial: file::dial_overrides(),
            secret,
            client_tls: client_config(&cluster_key)?,
            links: Slab::new(),
            outbound: BTreeMap::new(),
            redial_at: BTreeMap::new(),
            redial_delay: BTreeMap::new(),
            next_id: 1,
            proposals: HashMap::new(),
            forwards: HashMap::new(),
            outcomes: HashMap::new(),
            completions: Vec::new(),
            reads: HashMap::new(),
            leaderless: Vec::new(),
            held: Vec::new(),
            released: Vec::new(),
            was_member: !joining,
            health: Default::default(),
            joining,
            params,
            expansion: None,
            link_failures: BTreeMap::new(),
            link_epoch: 0,
            outgoing: BTreeMap::new(),
            incoming: Default::default(),
            batch: Vec::new(),
            backlog: Default::default(),
            group_commit: std::env::var("KES_GROUP_COMMIT").map_or(true, |v| v != "off"),
        };
        if single {
            // Nobody else can vote: become leader before serving the first request.
            for _ in 0..3 {
                if cluster.node.role() == Role::Leader {
                    break;
                }
                let at = cluster.node.next_deadline();
                let random = u64::from_le_bytes(crate::random::bytes());
                let mut ready = Ready::default();
                cluster.node.step(at, Input::Tick { random }, &mut ready);
                cluster.batch.push((ready, None));
                cluster.flush(store);
            }
        }
        Ok(cluster)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Milliseconds until the core wants its next tick.
    pub fn next_timeout(&self) -> Duration {
        Duration::from_millis(self.node.next_deadline().saturating_sub(now_ms(self.epoch)))
    }

    /// Ticks the core if a deadline passed.
    pub fn tick(&mut self, store: &Store) {
        let now = now_ms(self.epoch);
        if now >= self.node.next_deadline() {
            let random = u64::from_le_bytes(crate::random::bytes());
            self.step(store, Input::Tick { random });
        }
    }

    /// Feeds one input to the core. Its storage work joins the batch that [`Cluster::flush`]
    /// persists in one transaction; nothing it asks for leaves this node before that.
    fn step(&mut self, store: &Store, input: Input<Vec<u8>>) {
        let now = now_ms(self.epoch);
        let mut ready = Ready::default();
        if let Input::Propose { id, .. } | Input::ChangeMembership { id, .. } = &input {
            self.health.unflushed.push(id.0);
        }
        self.node.step(now, input, &mut ready);
        let staged = if ready.restore.is_some() {
            self.incoming.take_complete()
        } else {
            None
        };
        self.batch.push((ready, staged));
        if !self.group_commit {
            self.flush(store);
        }
    }

    /// Proposes, or queues the proposal while the core's window of uncommitted entries is full
    /// (the queue drains as entries commit; see [`Cluster::flush`]).
    fn submit(&mut self, store: &Store, input: Input<Vec<u8>>) {
        let full = self.node.pending_entries().len() + 1 >= WINDOW;
        if matches!(input, Input::Propose { .. }) && (full || !self.backlog.is_empty()) {
            self.backlog
                .push_back((input, Instant::now() + LEADERLESS_WAIT));
            return;
        }
        self.step(store, input);
    }

    /// Proposes queued writes while the window has room.
    fn drain_backlog(&mut self, store: &Store) {
        while !self.backlog.is_empty() && self.node.pending_entries().len() + 1 < WINDOW {
            if self.node.role() != Role::Leader {
                // Leadership moved: tell the waiting clients to retry.
                for (input, _) in std::mem::take(&mut self.backlog) {
                    if let Input::Propose { id, .. } = input {
                        self.fail_proposal(id.0, Unavailable::LostLeadership);
                    }
                }
                return;
            }
            let (input, _) = self.backlog.pop_front().expect("non-empty");
            self.step(store, input);
        }
    }

    /// Answers a proposal's waiter with `503 why`.
    fn fail_proposal(&mut self, id: u64, why: Unavailable) {
        let outcome = Err(StoreError::Unavailable(why));
        match self.proposals.remove(&id) {
            Some(Waiter::Local(token, pending)) => self.completions.push((token, pending, outcome)),
            Some(Waiter::Remote(node, fid)) => {
                let frame = Frame::ForwardResult {
                    id: fid,
                    outcome: to_wire(&outcome),
                };
                self.send_to(node, &frame);
            }
            None => {}
        }
    }

    /// Persists everything the steps since the last flush asked for in one durable
    /// transaction (group commit), then sends their messages and answers their clients.
    pub fn flush(&mut self, store: &Store) {
        if !self.core_trusted(store) {
            return;
        }
        while !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            let refs: Vec<crate::store::ReadyRef<'_>> =
                batch.iter().map(|(r, s)| (r, *s)).collect();
            let installs = refs.iter().any(|(_, s)| s.is_some());
            match store.persist_batch(&refs) {
                Ok(outcomes) => {
                    self.persist_succeeded();
                    if installs {
                        self.incoming.persisted();
                    }
                    for (index, outcome) in outcomes {
                        self.outcomes.insert(index, outcome);
                    }
                }
                Err(err) => {
                    // Continuing from the core's state would acknowledge what is not on
                    // disk: it is rebuilt from kes.db instead (see `persist.rs`).
                    self.persist_failed(store, err);
                    return;
                }
            }
            for (ready, _) in &batch {
                self.carry_out(store, ready);
            }
            // Commits made room in the window: queued writes go next (and are persisted by
            // the next round of this loop).
            self.drain_backlog(store);
        }
        self.ship_expansion(store);
        self.note_removal();
    }

    /// When this node stops being a member (removed by a shrink, or it learns it was
    /// force-removed), `.cluster.json` is rewritten without it, so that the file says so.
    fn note_removal(&mut self) {
        let member = self.is_member();
        if member == self.was_member {
            return;
        }
        self.was_member = member;
        if member || self.joining {
            return;
        }
        let mut rest = self.addresses.clone();
        rest.remove(&self.id);
        eprintln!(
            "kes-node: this node ({}) is not a member of the cluster any more: it was removed; \
             it serves no requests",
            self.name_of(self.id)
        );
        if let Err(err) = file::write(&self.dir, &rest) {
            eprintln!("kes-node: {err}");
        }
    }

    /// Does what a persisted step asked for, in the order [`Ready`] prescribes.
    fn carry_out(&mut self, store: &Store, ready: &Ready<Vec<u8>>) {
        if ready
            .apply
            .iter()
            .any(|e| matches!(e.body, kes_core::consensus::Body::Config { .. }))
        {
            if let Ok(addresses) = store.applied_addresses() {
                self.addresses = addresses;
                if let Err(err) = file::write(&self.dir, &self.addresses) {
                    eprintln!("kes-node: {err}");
                }
            }
        }
        // A configuration takes effect when appended: dial new members at once.
        for entry in &ready.append {
            if let kes_core::consensus::Body::Config { command, .. } = &entry.body {
                if let Ok(addresses) = crate::store::decode_addresses(command) {
                    self.addresses = addresses;
                }
            }
        }
        if ready.restore.is_some() {
            if let Ok(addresses) = store.applied_addresses() {
                self.addresses = addresses;
            }
        }
        for env in &ready.messages {
            self.send_to(env.to, &Frame::Raft(Box::new(env.clone())));
        }
        for env in &ready.snapshots {
            self.start_snapshot(store, env);
        }
        for (id, result) in &ready.proposals {
            let outcome = match result {
                Ok(index) => self.outcomes.remove(index).unwrap_or(Ok(())),
                Err(err) => Err(self.unavailable(err)),
            };
            match self.proposals.remove(&id.0) {
                Some(Waiter::Local(token, pending)) => {
                    self.completions.push((token, pending, outcome))
                }
                Some(Waiter::Remote(node, fid)) => {
                    let frame = Frame::ForwardResult {
                        id: fid,
                        outcome: to_wire(&outcome),
                    };
                    self.send_to(node, &frame);
                }
                None => {}
            }
        }
        for (id, result) in &ready.reads {
            if let Some(token) = self.reads.remove(&id.0) {
                let decision = result.as_ref().map(|_| ()).map_err(|err| match err {
                    ReadError::NotMember => "cluster: this node is not a member of the cluster".to_string(),
                    ReadError::Busy => "cluster: too many reads are waiting; retry".to_string(),
                    ReadError::Pending { index } => {
                        format!("cluster: a write to this name (log index {index}) is still undecided; retry")
                    }
                    ReadError::NoLease => "cluster: this node holds no read lease".to_string(),
                    ReadError::CatchingUp => "cluster: this node is catching up with the leader; retry".to_string(),
                });
                self.released.push((token, decision));
            }
        }
        // Outcomes of entries nobody waits for here (other leaders' proposals) are dropped.
        if self.proposals.is_empty() {
            self.outcomes.clear();
        }
    }

    fn unavailable(&self, err: &ProposeError) -> StoreError {
        let name = |id: &NodeId| {
            format!(
                "{id} ({})",
                self.addresses.get(id).map(String::as_str).unwrap_or("?")
            )
        };
        StoreError::Unavailable(Unavailable::Cluster(match err {
            ProposeError::NotLeader { .. } => {
                "cluster: this node lost its leadership; retry".into()
            }
            ProposeError::Busy => "cluster: too many writes in flight; retry".into(),
            ProposeError::InvalidChange => match self.pending_change() {
                Some(change) => format!(
                    "cluster: a membership change is pending ({change}): only a forced shrink of \
                     a node it waits for can override it"
                ),
                None => "cluster: invalid membership change".into(),
            },
            ProposeError::Overwritten => {
                "cluster: the write was overwritten by a new leader; retry".into()
            }
            ProposeError::Unavailable { unreachable } => format!(
                "cluster: write refused: node(s) {} unreachable",
                unreachable.iter().map(name).collect::<Vec<_>>().join(", ")
            ),
            ProposeError::Timeout { unreachable } => format!(
                "cluster: write not committed yet: node(s) {} unreachable (it commits once they are back)",
                unreachable.iter().map(name).collect::<Vec<_>>().join(", ")
            ),
            ProposeError::Unknown => "cluster: the outcome of the write is unknown".into(),
        }))
    }

    /// Proposes a client's write (or forwards it to the leader).
    pub fn propose(&mut self, store: &Store, token: ConnRef, pending: Box<Pending>) {
        self.propose_until(store, token, pending, Instant::now() + LEADERLESS_WAIT);
    }

    /// Proposes or forwards; without a reachable leader the write waits until `deadline`.
    fn propose_until(
        &mut self,
        store: &Store,
        token: ConnRef,
        pending: Box<Pending>,
        deadline: Instant,
    ) {
        let command = match codec::encode_command(&pending.write.cmd) {
            Ok(c) => c.to_vec(),
            Err(e) => {
                self.completions
                    .push((token, pending, Err(StoreError::Io(IoFailure::Encode(e)))));
                return;
            }
        };
        if let Err(err) = store.check_room(&pending.write.cmd) {
            self.completions.push((token, pending, Err(err)));
            return;
        }
        let names = names_of(&pending.write.cmd);
        if self.node.role() == Role::Leader {
            if self.removes_self(&pending.write.cmd) {
                self.hand_over_local(store, token, pending);
                return;
            }
            if let Command::Expand { endpoint } = &pending.write.cmd {
                let endpoint = endpoint.clone();
                self.begin_expand(Waiter::Local(token, pending), &endpoint);
                return;
            }
            let id = self.next();
            let input = match self.membership_input(store, &pending.write.cmd, id) {
                Some(Ok(input)) => input,
                Some(Err(err)) => {
                    self.completions.push((token, pending, Err(err)));
                    return;
                }
                None => Input::Propose {
                    id: ProposalId(id),
                    names,
                    command,
                },
            };
            self.proposals.insert(id, Waiter::Local(token, pending));
            self.submit(store, input);
            return;
        }
        match self.node.leader() {
            Some(leader) if leader != self.id => {
                let id = self.next();
                let frame = Frame::Forward { id, command };
                let timeout = match pending.write.cmd {
                    Command::Expand { .. } | Command::Shrink { .. } => MEMBERSHIP_FORWARD_TIMEOUT,
                    _ => FORWARD_TIMEOUT,
                };
                if self.send_to(leader, &frame) {
                    self.forwards
                        .insert(id, (token, pending, Instant::now() + timeout));
                } else if Instant::now() >= deadline {
                    let why = Unavailable::LeaderUnreachable(leader);
                    self.completions
                        .push((token, pending, Err(StoreError::Unavailable(why))));
                } else {
                    // Its link is down: the leader is restarting, or an election will replace it.
                    self.leaderless.push((token, pending, deadline));
                }
            }
            _ if Instant::now() >= deadline => {
                let why = Unavailable::NoLeader;
                self.completions
                    .push((token, pending, Err(StoreError::Unavailable(why))));
            }
            // An election is under way: hold the write until a leader is known.
            _ => self.leaderless.push((token, pending, deadline)),
        }
    }

    /// Asks whether a read of `names` may be answered now; the decision lands in `released`
    /// (at once, or when the writes it waits for are decided).
    pub fn read(&mut self, store: &Store, token: ConnRef, names: &[ItemName]) {
        let mut ids = Names::new();
        for n in names.iter().take(MAX_NAMES) {
            let _ = ids.push(n.id());
        }
        let id = self.next();
        self.reads.insert(id, token);
        self.step(
            store,
            Input::Read {
                id: ReadId(id),
                names: ids,
            },
        );
    }

    /// True while reads must pass the gate: this node holds entries it has not applied, or
    /// it serves reads only under a lease (which the core checks on every read).
    pub fn has_pending(&self) -> bool {
        self.params.read_lease.is_some() || !self.node.pending_entries().is_empty()
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send_to(&mut self, to: NodeId, frame: &Frame) -> bool {
        match self.link_to(to) {
            Some(key) => self.links[key].send(frame),
            None => false,
        }
    }

    /// The open link that carries messages to `to`: the outbound one, or else the one the peer
    /// opened to us (a joining node does not know the leader's address yet).
    fn link_to(&self, to: NodeId) -> Option<usize> {
        if let Some(&key) = self.outbound.get(&to) {
            if self
                .links
                .get(key)
                .is_some_and(|l| l.state == LinkState::Open)
            {
                return Some(key);
            }
        }
        self.links
            .iter()
            .find(|(_, l)| !l.dialer && l.peer == Some(to) && l.state == LinkState::Open)
            .map(|(key, _)| key)
    }

    /// Handles frames that arrived on a link.
    fn on_frame(&mut self, store: &Store, from: NodeId, frame: Frame) {
        match frame {
            Frame::Hello { .. } => {}
            Frame::Raft(env) => {
                self.learn_id(env.to);
                self.observe_expansion(store, env.from, &env.message);
                if env.to == self.id {
                    self.step(store, Input::Message(*env));
                }
            }
            Frame::SnapshotChunk { stream, seq, data } => {
                self.incoming.chunk(store, stream, seq, data);
            }
            Frame::SnapshotEnd {
                stream,
                chunks,
                envelope,
            } => {
                self.learn_id(envelope.to);
                if envelope.to == self.id && self.incoming.end(stream, chunks) {
                    self.step(store, Input::Message(*envelope));
                    self.incoming.stepped();
                }
            }
            Frame::Forward { id, command } => {
                if self.node.role() != Role::Leader {
                    let outcome = WireOutcome::Unavailable("cluster: not the leader; retry".into());
                    self.send_to(from, &Frame::ForwardResult { id, outcome });
                    return;
                }
                let cmd = match codec::decode_command(&command) {
                    Ok(cmd) => cmd,
                    Err(_) => return,
                };
                if let Err(err) = store.check_room(&cmd) {
                    let outcome = to_wire(&Err(err));
                    self.send_to(from, &Frame::ForwardResult { id, outcome });
                    return;
                }
                if self.removes_self(&cmd) {
                    self.hand_over_remote(store, from, id);
                    return;
                }
                if let Command::Expand { endpoint } = &cmd {
                    self.begin_expand(Waiter::Remote(from, id), endpoint);
                    return;
                }
                let pid = self.next();
                let input = match self.membership_input(store, &cmd, pid) {
                    Some(Ok(input)) => input,
                    Some(Err(err)) => {
                        let frame = Frame::ForwardResult {
                            id,
                            outcome: to_wire(&Err(err)),
                        };
                        self.send_to(from, &frame);
                        return;
                    }
                    None => Input::Propose {
                        id: ProposalId(pid),
                        names: names_of(&cmd),
                        command,
                    },
                };
                self.proposals.insert(pid, Waiter::Remote(from, id));
                self.submit(store, input);
            }
            Frame::ForwardResult { id, outcome } => {
                if let Some((token, pending, _)) = self.forwards.remove(&id) {
                    if matches!(outcome, WireOutcome::HandingOver) {
                        self.hold_for_new_leader(token, pending, from);
                    } else {
                        self.completions.push((token, pending, from_wire(outcome)));
                    }
                }
            }
        }
    }

    /// The consensus input for a membership command (`None` for any other command): the
    /// change and the new members' addresses, or why the change is refused.
    fn membership_input(
        &self,
        store: &Store,
        cmd: &Command,
        id: u64,
    ) -> Option<Result<Input<Vec<u8>>, StoreError>> {
        let mut addresses = self.addresses.clone();
        let change = match cmd {
            Command::Expand { endpoint } => {
                let endpoint = match file::normalize(endpoint) {
                    Ok(e) => e,
                    Err(why) => return Some(Err(StoreError::Refused(Refusal::Membership(why)))),
                };
                if addresses.values().any(|a| *a == endpoint) {
                    return Some(Err(StoreError::Exists));
                }
                let new = self.next_new_id();
                addresses.insert(new, endpoint);
                Change::Add(new)
            }
            Command::Shrink { endpoint, force } => {
                let endpoint = file::normalize(endpoint).unwrap_or_else(|_| endpoint.clone());
                let find = |a: &Addresses| a.iter().find(|(_, a)| **a == endpoint).map(|(i, _)| *i);
                // A node that a pending shrink removes is no longer in the latest addresses,
                // but a forced shrink of it gets that shrink through (see `membership.rs`).
                let pending_removal = || {
                    let committed = store.applied_addresses().ok()?;
                    find(&committed).filter(|_| *force)
                };
                let Some(gone) = find(&addresses).or_else(pending_removal) else {
                    return Some(Err(StoreError::NotFound));
                };
                let reachable = self
                    .outbound
                    .get(&gone)
                    .and_then(|k| self.links.get(*k))
                    .is_some_and(|l| l.state == LinkState::Open);
                if !*force && !reachable {
                    let why = format!(
                        "node {gone} ({endpoint}) is unreachable: a shrink needs its agreement; \
                         if it is gone for good, remove it with force"
                    );
                    return Some(Err(StoreError::Unavailable(Unavailable::Cluster(why))));
                }
                addresses.insert(gone, String::new());
                if *force {
                    Change::ForceRemove(gone)
                } else {
                    Change::Remove(gone)
                }
            }
            _ => return None,
        };
        let command = crate::store::encode_addresses(&addresses);
        Some(Ok(Input::ChangeMembership {
            id: ProposalId(id),
            change,
            command,
        }))
    }

    /// A joining node learns its id from the first message the leader addresses to it.
    fn learn_id(&mut self, to: NodeId) {
        if !self.joining || to == JOINING_ID {
            return;
        }
        let random = u64::from_le_bytes(crate::random::bytes());
        let now = now_ms(self.epoch);
        match Node::new(
            to,
            self.params,
            now,
            random,
            HardState::default(),
            Default::default(),
            &[],
        ) {
            Ok(node) => {
                self.node = node;
                self.id = to;
                self.joining = false;
            }
            Err(err) => eprintln!("kes-node: cannot join as node {to}: {err}"),
        }
    }

    /// True if this node may serve clients: it is a member of the configuration it holds.
    pub fn is_member(&self) -> bool {
        !self.joining && self.node.is_member()
    }

    /// Peer links open now (inbound and outbound): they count against the server's
    /// connection limit.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Takes over an inbound peer connection accepted by the HTTP listener.
    pub fn adopt(&mut self, registry: &Registry, link: Link) -> Token {
        let entry = self.links.vacant_entry();
        let key = entry.key();
        let link = entry.insert(link);
        let _ = registry.reregister(
            &mut link.socket,
            Token(LINK_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        );
        Token(LINK_BASE + key)
    }

    /// Readiness of a link.
    pub fn on_link_event(&mut self, registry: &Registry, store: &Store, token: Token) {
        let key = token.0 - LINK_BASE;
        let mut frames = Vec::new();
        let peer = match self.links.get_mut(key) {
            Some(link) => {
                let was = link.state;
                link.on_ready(self.id, &self.secret, &mut frames);
                if let (true, LinkState::Open, Some(peer)) = (link.dialer, link.state, link.peer) {
                    self.redial_delay.remove(&peer);
                }
                if was != link.state {
                    self.link_epoch += 1;
                }
                link.peer
            }
            None => return,
        };
        if let Some(from) = peer {
            for f in frames {
                self.on_frame(store, from, f);
            }
            self.pump_snapshot(registry, from);
        }
        self.update_link(registry, key);
    }

    fn update_link(&mut self, registry: &Registry, key: usize) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if link.state == LinkState::Closed {
            let mut link = self.links.remove(key);
            let _ = registry.deregister(&mut link.socket);
            let dialed = self
                .outbound
                .iter()
                .find(|(_, k)| **k == key)
                .map(|(id, _)| *id);
            if let (Some(id), Some(failure)) = (dialed, link.failure.take()) {
                self.link_failures.insert(id, failure);
            }
            self.outbound.retain(|_, k| *k != key);
            self.link_epoch += 1;
            return;
        }
        let interest = if link.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let _ = registry.reregister(&mut link.socket, Token(LINK_BASE + key), interest);
    }

    /// Keeps an outbound link to every other member, expires forwarded writes, and flushes.
    pub fn maintain(&mut self, registry: &Registry, store: &Store) {
        let now = Instant::now();
        self.release_held(store);
        self.drive_expansion(registry);
        if !self.leaderless.is_empty() {
            let held = std::mem::take(&mut self.leaderless);
            let leader_known = self.node.leader().is_some();
            for (token, pending, deadline) in held {
                if leader_known {
                    self.propose_until(store, token, pending, deadline);
                } else if now >= deadline {
                    let why = Unavailable::NoLeader;
                    self.completions
                        .push((token, pending, Err(StoreError::Unavailable(why))));
                } else {
                    self.leaderless.push((token, pending, deadline));
                }
            }
        }
        let members: Vec<NodeId> = self
            .addresses
            .iter()
            .filter(|(id, a)| **id != self.id && !a.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in members {
            if self.outbound.contains_key(&id) || self.redial_at.get(&id).is_some_and(|t| now < *t)
            {
                continue;
            }
            let delay = self.redial_delay.get(&id).copied().unwrap_or(REDIAL);
            self.redial_at.insert(id, now + delay);
            self.redial_delay.insert(id, (delay * 2).min(REDIAL_MAX));
            let addr = self
                .dial
                .get(&id)
                .or_else(|| self.addresses.get(&id))
                .cloned()
                .unwrap_or_default();
            if let Err(err) = self.dial(registry, id, &addr, now) {
                let _ = err; // Unreachable peers are normal; the core reports them on writes.
            }
        }
        let expired: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, (_, _, d))| now >= *d)
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            if let Some((token, pending, _)) = self.forwards.remove(&id) {
                let why = Unavailable::LeaderSilent;
                self.completions
                    .push((token, pending, Err(StoreError::Unavailable(why))));
            }
        }
        while self.backlog.front().is_some_and(|(_, d)| now >= *d) {
            if let Some((Input::Propose { id, .. }, _)) = self.backlog.pop_front() {
                self.fail_proposal(id.0, Unavailable::Busy);
            }
        }
        let receivers: Vec<NodeId> = self.outgoing.keys().copied().collect();
        for to in receivers {
            self.pump_snapshot(registry, to);
        }
        // Links that did not authenticate in time are dropped (see `peer::Link::overdue`).
        let stale: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| l.overdue(now))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            if let Some(l) = self.links.get_mut(key) {
                l.expire();
            }
            self.update_link(registry, key);
        }
    }

    fn dial(
        &mut self,
        registry: &Registry,
        id: NodeId,
        addr: &str,
        now: Instant,
    ) -> io::Result<()> {
        let sock = file::resolve(addr).ok_or_else(|| io::Error::other("unresolvable"))?;
        let mut socket = mio::net::TcpStream::connect(sock)?;
        let _ = socket.set_nodelay(true);
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']'))
            .unwrap_or("localhost");
        let name =
            rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
        let mut tls = rustls::ClientConnection::new(self.client_tls.clone(), name)
            .map_err(io::Error::other)?;
        tls.set_buffer_limit(None);
        let entry = self.links.vacant_entry();
        let key = entry.key();
        registry.register(
            &mut socket,
            Token(LINK_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Link::new(
            socket,
            rustls::Connection::Client(tls),
            true,
            Vec::new(),
            now,
        ));
        self.outbound.insert(id, key);
        self.link_epoch += 1;
        Ok(())
    }

    /// The cluster as `/v1/cluster/describe` shows it.
    pub fn describe(&self) -> Describe {
        Describe {
            nodes: self
                .addresses
                .iter()
                .filter(|(_, a)| !a.is_empty())
                .map(|(id, a)| (id.to_string(), a.clone()))
                .collect(),
            leader_id: self.node.leader().map(u64::from).unwrap_or(u64::MAX),
            node_id: self.id,
            term: self.node.term(),
            commit_index: self.node.commit_index(),
            role: format!("{:?}", self.node.role()).to_lowercase(),
            links: self.link_views(),
            pending_change: self.pending_change(),
            epoch: self.link_epoch,
        }
    }

    /// Each other member's link as this node sees it.
    fn link_views(&self) -> BTreeMap<String, LinkView> {
        let view = |state: &str, error: Option<&Failure>| LinkView {
            state: state.into(),
            error: error.map(Failure::to_string),
        };
        self.addresses
            .iter()
            .filter(|(id, a)| **id != self.id && !a.is_empty())
            .map(|(id, _)| {
                let link = self.outbound.get(id).and_then(|k| self.links.get(*k));
                let failure = self.link_failures.get(id);
                let v = match (link.map(|l| l.state), failure) {
                    (Some(LinkState::Open), _) => view("connected", None),
                    (Some(_), failure) => view("dialing", failure),
                    (None, Some(f @ Failure::Unreachable(_))) => view("unreachable", Some(f)),
                    (None, Some(f)) => view("refused", Some(f)),
                    (None, None) => view("dialing", None),
                };
                (id.to_string(), v)
            })
            .collect()
    }

    /// A membership change this node holds but has not applied, or the expand being prepared.
    fn pending_change(&self) -> Option<String> {
        if let Some(exp) = &self.expansion {
            return Some(exp.describe());
        }
        let latest = self.node.config();
        let committed = self.node.committed_config();
        if latest == *committed {
            return None;
        }
        let name = |id: &NodeId| match self.addresses.get(id).filter(|a| !a.is_empty()) {
            Some(a) => format!("node {id} ({a})"),
            None => format!("node {id}"),
        };
        let mut what: Vec<String> = Vec::new();
        for m in latest.members.iter().filter(|m| !committed.contains(**m)) {
            what.push(format!("adding {}", name(m)));
        }
        for m in committed.members.iter().filter(|m| !latest.contains(**m)) {
            what.push(format!("removing {}", name(m)));
        }
        if latest.forced {
            what.push("forced".into());
        }
        Some(format!(
            "{} (log index {}, not committed)",
            what.join(", "),
            latest.index
        ))
    }

    /// Updates the shared view of the cluster if it changed.
    pub fn publish(&self, view: &std::sync::Mutex<Describe>) {
        let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
        let leader = self.node.leader().map(u64::from).unwrap_or(u64::MAX);
        let changed = v.term != self.node.term()
            || v.leader_id != leader
            || v.commit_index != self.node.commit_index()
            || v.nodes.len() != self.addresses.values().filter(|a| !a.is_empty()).count()
            || v.nodes.is_empty()
            || v.epoch != self.link_epoch
            || v.pending_change.is_some() != self.pending_change_cheap();
        if changed {
            *v = self.describe();
        }
    }

    /// Whether [`Cluster::pending_change`] is `Some`, without building its text.
    fn pending_change_cheap(&self) -> bool {
        self.expansion.is_some() || self.node.config() != *self.node.committed_config()
    }

    pub fn hard_state(&self) -> HardState {
        self.node.hard_state()
    }
}

/// The body of `GET /v1/cluster/describe`: upstream's fields and ours.
#[derive(serde::Serialize, Clone, Debug, Default)]
pub struct Describe {
    pub nodes: BTreeMap<String, String>,
    pub leader_id: u64,
    pub node_id: NodeId,
    pub term: u64,
    pub commit_index: u64,
    pub role: String,
    /// Each other member's peer link: `connected`, `dialing`, `unreachable` or `refused`, with
    /// the error of the last failed attempt.
    pub links: BTreeMap<String, LinkView>,
    /// A membership change appended but not committed yet, or an expand being prepared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<String>,
    /// The link epoch this view was made at (not shown).
    #[serde(skip)]
    pub epoch: u64,
}

/// One peer link in [`Describe`].
#[derive(serde::Serialize, Clone, Debug, Default)]
pub struct LinkView {
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// TLS for dialing peers: the cluster's client certificate, ALPN [`peer::ALPN`]. The server's
/// certificate is not checked here; the Hello exchange authenticates the peer (see `peer`).
fn client_config(key: &crate::identity::ApiKey) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, private) = key.certificate_pem()?;
    let cert = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| e.to_string())?;
    let private = PrivateKeyDer::from_pem_slice(private.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer {
            algs: provider.signature_verification_algorithms,
        }))
        .with_client_auth_cert(vec![cert], private)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![peer::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate (checking only the handshake signature): peers prove who
/// they are with the Hello MAC over the session, which an impostor without the HSM key cannot
/// produce, and the dialer sends nothing before it verified that Hello.
#[derive(Debug)]
struct AnyServer {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}
