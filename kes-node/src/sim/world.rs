//! The simulated cluster: nodes (a shell, its `Store` on a simulated disk, a drifting clock),
//! the network, the clients and everything observed about them.
//!
//! Time is global and in milliseconds; node `i`'s clock reads `offset + now * rate / 100`.
//! A node's shell hears its events as an event loop would hand them over and runs a round
//! (timers, group commit, answers) when the scheduler says so, when its deadline passes, or
//! before time moves on: several events may share one round, as in production.
use std::collections::BTreeMap;

use kes_core::consensus::sim::linearizability::{Kind, Operation};
use kes_core::consensus::sim::Chooser;
use kes_core::consensus::{Config, Members, NodeId, Params, Role, Term};
use kes_core::crypto::{Cipher, SecretKey};

use super::disk::Disk;
use super::net::{Faults, LinkChange, Net};
use super::shell::{Links, Shell, View, Waiter};
use super::Counters;
use crate::command::Command;
use crate::item::{ItemName, Kind as ItemKind};
use crate::records::PolicyRecord;
use crate::store::{Addresses, Store, StoreError};

/// The enclave the clients write to.
const ENCLAVE: &str = "default";

pub type Result<T = ()> = std::result::Result<T, String>;

/// One simulated machine.
pub struct Machine<S> {
    /// `None` while crashed.
    pub shell: Option<S>,
    pub store: Option<Store>,
    pub disk: Disk,
    offset: u64,
    rate: u64,
    /// Steps since the last round (a round is due before time moves on).
    dirty: bool,
    /// What the API last learned from the shell (at the end of its last round).
    gating: bool,
    member: bool,
    /// Gone for good (force-removed while down).
    pub destroyed: bool,
    /// In the initial configuration (else it waits to join).
    initial: bool,
}

/// The network as one node's links.
struct NodeLinks<'a> {
    net: &'a mut Net,
    chooser: &'a mut Chooser,
    now: u64,
    from: NodeId,
}

impl Links for NodeLinks<'_> {
    fn send(&mut self, to: NodeId, frame: &crate::cluster::peer::Frame) -> bool {
        self.net.send(self.chooser, self.now, self.from, to, frame)
    }
}

/// The cluster and what was observed about it.
pub struct World<S: Shell> {
    pub nodes: Vec<Machine<S>>,
    pub net: Net,
    /// Global time (ms).
    pub now: u64,
    pub chooser: Chooser,
    pub params: Params,
    hsm: crate::hsm::SoftHsmDevice,
    /// History clock: every call and return gets a distinct time.
    clock: u64,
    pub history: Vec<Option<Operation>>,
    writes: BTreeMap<(usize, Waiter), usize>,
    reads: BTreeMap<(usize, Waiter), usize>,
    next_waiter: Waiter,
    next_value: u64,
    leaders: BTreeMap<Term, usize>,
    /// The registers at each applied index, as the first node to apply it stored them.
    applied: BTreeMap<u64, (u64, Vec<Option<u64>>)>,
    /// The applied index each node's store last showed (it never goes back, crash or not).
    applied_seen: Vec<u64>,
    pub keys: u8,
    pub trace: Option<Vec<String>>,
    pub counters: Counters,
}

/// The value of register `key` in `store` (a policy whose first allow rule is the value).
fn register(store: &Store, key: u8) -> Result<Option<u64>> {
    match store.policy(ENCLAVE, &format!("k{key}")) {
        Ok(p) => p
            .allow
            .first()
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("register k{key} holds {:?}", p.allow)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(format!("reading k{key}: {e}")),
    }
}

/// A client's write of `value` to register `key`.
fn write_command(key: u8, value: u64) -> Command {
    Command::CreatePolicy {
        enclave: ENCLAVE.into(),
        name: format!("k{key}"),
        policy: PolicyRecord {
            allow: vec![value.to_string()],
            deny: Vec::new(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            created_by: String::new(),
        },
        replace: true,
    }
}

impl<S: Shell> World<S> {
    /// `members` nodes form the initial configuration; `total - members` more may join.
    pub fn new(
        members: usize,
        total: usize,
        params: Params,
        mut chooser: Chooser,
        faults: Faults,
    ) -> Result<Self> {
        let hsm = crate::hsm::SoftHsmDevice(kes_core::hsm::SoftHsm::from_key(SecretKey::new(
            Cipher::Aes256,
            [7; 32],
        )));
        let mut world = World {
            nodes: Vec::new(),
            net: Net::new(total, faults),
            now: 0,
            params,
            hsm,
            clock: 0,
            history: Vec::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_waiter: 1,
            next_value: 1,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_seen: vec![0; total],
            keys: 3,
            trace: None,
            counters: Counters::default(),
            chooser: Chooser::seeded(0),
        };
        let mut initial = Members::new();
        let mut addresses = Addresses::new();
        for id in 0..members {
            let _ = initial.push(id as NodeId);
            addresses.insert(id as NodeId, address(id));
        }
        for i in 0..total {
            let offset = chooser.random() % 1000;
            // Rates 97%..=103%: well within the drift the lease allows.
            let rate = 97 + chooser.random() % 7;
            let disk = Disk::new();
            let store = Store::open_backend(disk.clone(), &world.hsm)
                .map_err(|e| format!("n{i}: cannot create kes.db: {e}"))?;
            let config = if i < members {
                Config {
                    index: 0,
                    members: initial.clone(),
                    forced: false,
                }
            } else {
                Config::default()
            };
            let addrs = if i < members {
                addresses.clone()
            } else {
                Addresses::new()
            };
            store
                .init_raft(config, &addrs)
                .map_err(|e| format!("n{i}: {e}"))?;
            drop(store);
            world.nodes.push(Machine {
                shell: None,
                store: None,
                disk,
                offset,
                rate,
                dirty: false,
                gating: true,
                member: false,
                destroyed: false,
                initial: i < members,
            });
        }
        world.chooser = chooser;
        for i in 0..total {
            world.start(i)?;
        }
        Ok(world)
    }

    pub fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("[t={}] {}", self.now, line()));
        }
    }

    /// Node `i`'s clock.
    pub fn clock_of(&self, i: usize) -> u64 {
        self.nodes[i].offset + self.now * self.nodes[i].rate / 100
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].shell.is_some()
    }

    pub fn view(&self, i: usize) -> Option<View> {
        self.nodes[i].shell.as_ref().map(Shell::view)
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| self.view(i).map(|v| (i, v)))
            .filter(|(_, v)| v.role == Role::Leader)
            .max_by_key(|(_, v)| v.term)
            .map(|(i, _)| i)
    }

    /// Opens node `i`'s store on its disk and boots its shell.
    fn start(&mut self, i: usize) -> Result {
        let store = Store::open_backend(self.nodes[i].disk.clone(), &self.hsm)
            .map_err(|e| format!("n{i}: kes.db does not open after a crash: {e}"))?;
        let now = self.clock_of(i);
        let random = self.chooser.random();
        let id = self.nodes[i].initial.then_some(i as NodeId);
        let shell = S::boot(&store, id, self.params, now, random)?;
        let m = &mut self.nodes[i];
        m.gating = true;
        m.member = false;
        m.shell = Some(shell);
        m.store = Some(store);
        let changes = self.net.set_up(i, true);
        self.link_changes(changes);
        self.check_durable(i)?;
        self.round(i)
    }

    /// Runs `f` on node `i`'s shell with its store and links; marks the node for a round.
    fn with_shell(&mut self, i: usize, f: impl FnOnce(&mut S, &Store, &mut dyn Links, u64)) {
        let now = self.clock_of(i);
        let m = &mut self.nodes[i];
        let (Some(shell), Some(store)) = (m.shell.as_mut(), m.store.as_ref()) else {
            return;
        };
        let mut links = NodeLinks {
            net: &mut self.net,
            chooser: &mut self.chooser,
            now: self.now,
            from: i as NodeId,
        };
        f(shell, store, &mut links, now);
        m.dirty = true;
    }

    fn link_changes(&mut self, changes: Vec<LinkChange>) {
        for change in changes {
            let (node, peer, up) = match change {
                LinkChange::Up { node, peer } => (node, peer, true),
                LinkChange::Down { node, peer } => (node, peer, false),
            };
            self.with_shell(node as usize, |s, store, links, now| {
                s.on_link(store, links, now, peer, up)
            });
        }
    }

    /// The end of node `i`'s loop round: its shell's round, then the answers to its clients.
    pub fn round(&mut self, i: usize) -> Result {
        let random = self.chooser.random();
        self.with_shell(i, |s, store, links, now| s.round(store, links, now, random));
        let m = &mut self.nodes[i];
        m.dirty = false;
        let Some(shell) = m.shell.as_mut() else {
            return Ok(());
        };
        let decided = shell.take_decided();
        let view = shell.view();
        m.gating = view.gating;
        m.member = view.member;
        for (waiter, outcome) in decided.writes {
            self.write_done(i, waiter, outcome)?;
        }
        for (waiter, decision) in decided.reads {
            self.read_done(i, waiter, decision)?;
        }
        self.check_applied(i)
    }

    fn write_done(
        &mut self,
        i: usize,
        waiter: Waiter,
        outcome: std::result::Result<(), StoreError>,
    ) -> Result {
        let Some(op) = self.writes.remove(&(i, waiter)) else {
            return Err(format!("n{i} answered write {waiter} twice or never asked"));
        };
        self.log(|| format!("n{i} write {waiter} -> {outcome:?}"));
        match outcome {
            Ok(()) => {
                self.clock += 1;
                let clock = self.clock;
                self.history[op].as_mut().expect("write recorded").ret = Some(clock);
                self.counters.acked_writes += 1;
            }
            // The outcome of a failed write is unknown to the client (it may have committed).
            Err(_) => self.counters.failed_writes += 1,
        }
        Ok(())
    }

    fn read_done(
        &mut self,
        i: usize,
        waiter: Waiter,
        decision: std::result::Result<(), String>,
    ) -> Result {
        let Some(op) = self.reads.remove(&(i, waiter)) else {
            return Err(format!("n{i} released read {waiter} twice or never asked"));
        };
        match decision {
            Ok(()) => self.serve_read(i, op),
            Err(why) => {
                self.log(|| format!("n{i} read {waiter} refused: {why}"));
                self.history[op] = None;
                Ok(())
            }
        }
    }

    /// Serves read `op` from node `i`'s store, as the API does once the gate lets it pass.
    fn serve_read(&mut self, i: usize, op: usize) -> Result {
        let key = self.history[op].as_ref().expect("read recorded").key;
        let store = self.nodes[i].store.as_ref().expect("node is up");
        let value = register(store, key)?;
        self.clock += 1;
        let clock = self.clock;
        let operation = self.history[op].as_mut().expect("read recorded");
        operation.kind = Kind::Read(value);
        operation.ret = Some(clock);
        self.counters.reads_served += 1;
        self.log(|| format!("n{i} read k{key} -> {value:?}"));
        Ok(())
    }

    /// A client writes a fresh value to `key` through node `i`.
    pub fn write(&mut self, i: usize, key: u8) -> Result<usize> {
        let value = self.next_value;
        self.next_value += 1;
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        self.clock += 1;
        let op = self.history.len();
        self.history.push(Some(Operation {
            key,
            kind: Kind::Write(value),
            call: self.clock,
            ret: None,
        }));
        self.writes.insert((i, waiter), op);
        self.log(|| format!("n{i} client write k{key}={value} ({waiter})"));
        let cmd = write_command(key, value);
        self.with_shell(i, |s, store, links, now| {
            s.propose(store, links, now, waiter, cmd)
        });
        if self.chooser.chance(50) {
            self.round(i)?;
        }
        Ok(op)
    }

    /// A client reads `key` through node `i`: served at once unless the gate is on.
    pub fn read(&mut self, i: usize, key: u8) -> Result<usize> {
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        self.clock += 1;
        let op = self.history.len();
        self.history.push(Some(Operation {
            key,
            kind: Kind::Read(None),
            call: self.clock,
            ret: None,
        }));
        let (gating, member) = (self.nodes[i].gating, self.nodes[i].member);
        if !member {
            self.log(|| format!("n{i} refuses a read of k{key}: not a member"));
            self.history[op] = None;
            return Ok(op);
        }
        if !gating {
            self.serve_read(i, op)?;
            return Ok(op);
        }
        self.reads.insert((i, waiter), op);
        self.counters.reads_gated += 1;
        self.log(|| format!("n{i} client read k{key} waits at the gate ({waiter})"));
        let names = [ItemName::item(
            ItemKind::Policy,
            ENCLAVE,
            &format!("k{key}"),
        )];
        self.with_shell(i, |s, store, links, now| {
            s.read(store, links, now, waiter, &names)
        });
        if self.chooser.chance(50) {
            self.round(i)?;
        }
        Ok(op)
    }

    /// Whether the operation at history index `op` completed (`Some(true)`), failed or was
    /// refused (`None`), or is still waiting or of unknown outcome (`Some(false)`).
    pub fn completed(&self, op: usize) -> Option<bool> {
        self.history[op].as_ref().map(|o| o.ret.is_some())
    }

    pub fn write_pending(&self, op: usize) -> bool {
        self.writes.values().any(|&o| o == op)
    }

    pub fn read_pending(&self, op: usize) -> bool {
        self.reads.values().any(|&o| o == op)
    }

    /// Delivers one due frame (a random one); false if none was due.
    pub fn deliver_random(&mut self) -> Result<bool> {
        self.deliver(false)
    }

    fn deliver(&mut self, first: bool) -> Result<bool> {
        let Some((from, to, frame)) = self.net.take_due(&mut self.chooser, self.now, first) else {
            return Ok(false);
        };
        let i = to as usize;
        self.log(|| format!("deliver n{from}->n{to} {}", describe(&frame)));
        self.with_shell(i, |s, store, links, now| {
            s.on_frame(store, links, now, from, frame)
        });
        if self.chooser.chance(30) {
            self.round(i)?;
        }
        Ok(true)
    }

    /// Delivers every due frame, then runs the rounds that are due.
    pub fn deliver_all(&mut self) -> Result {
        while self.deliver(true)? {}
        self.rounds()
    }

    /// Runs the round of every node that stepped since its last one or whose deadline passed.
    pub fn rounds(&mut self) -> Result {
        for i in 0..self.nodes.len() {
            let due = match &self.nodes[i].shell {
                Some(s) => self.nodes[i].dirty || self.clock_of(i) >= s.next_deadline(),
                None => false,
            };
            if due {
                self.round(i)?;
            }
        }
        Ok(())
    }

    /// The global time at which node `i`'s clock reaches `t`.
    fn global_time(&self, i: usize, t: u64) -> u64 {
        let m = &self.nodes[i];
        (t.saturating_sub(m.offset) * 100).div_ceil(m.rate)
    }

    /// Moves time to the next moment something happens (a frame due, a deadline), at most
    /// `max` ms ahead, after the pending rounds.
    pub fn advance(&mut self, max: u64) -> Result {
        self.rounds()?;
        let mut next = self.now + max.max(1);
        if let Some(at) = self.net.next_due() {
            next = next.min(at);
        }
        for i in 0..self.nodes.len() {
            if let Some(s) = &self.nodes[i].shell {
                next = next.min(self.global_time(i, s.next_deadline()));
            }
        }
        self.now = next.max(self.now + 1);
        self.rounds()
    }

    /// Runs for `ms` ms with every due frame delivered.
    pub fn run(&mut self, ms: u64) -> Result {
        let end = self.now + ms;
        while self.now < end {
            self.deliver_all()?;
            self.check()?;
            self.advance(end - self.now)?;
        }
        Ok(())
    }

    /// Runs until `done` holds, at most `ms` ms.
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&World<S>) -> bool) -> Result<bool> {
        let end = self.now + ms;
        while self.now < end {
            if done(self) {
                return Ok(true);
            }
            self.deliver_all()?;
            self.check()?;
            self.advance(end - self.now)?;
        }
        Ok(done(self))
    }

    /// Crashes node `i`: its memory, its unsynced writes, its clients and its links are lost.
    pub fn crash(&mut self, i: usize) -> Result {
        if self.nodes[i].shell.take().is_none() {
            return Ok(());
        }
        self.log(|| format!("n{i} crashes"));
        self.counters.crashes += 1;
        let m = &mut self.nodes[i];
        m.dirty = false;
        // The disk forgets first, so that nothing redb does while dropped reaches it.
        m.disk = m.disk.crash();
        m.store = None;
        let changes = self.net.set_up(i, false);
        self.link_changes(changes);
        // Writes in flight have an unknown outcome; reads in flight are never answered.
        self.writes.retain(|&(n, _), _| n != i);
        let reads: Vec<usize> = self
            .reads
            .iter()
            .filter(|(&(n, _), _)| n == i)
            .map(|(_, &op)| op)
            .collect();
        for op in reads {
            self.history[op] = None;
        }
        self.reads.retain(|&(n, _), _| n != i);
        Ok(())
    }

    pub fn restart(&mut self, i: usize) -> Result {
        if self.is_up(i) || self.nodes[i].destroyed {
            return Ok(());
        }
        self.log(|| format!("n{i} restarts"));
        self.counters.restarts += 1;
        self.start(i)
    }

    pub fn partition(&mut self, groups: Vec<u8>) {
        self.log(|| format!("partition {groups:?}"));
        self.counters.partitions += 1;
        let changes = self.net.partition(groups);
        self.link_changes(changes);
    }

    pub fn heal(&mut self) {
        if self.net.groups().iter().all(|&g| g == 0) {
            return;
        }
        self.log(|| "heal".into());
        let changes = self.net.heal();
        self.link_changes(changes);
    }

    /// The invariants, checked after every event: at most one leader per term.
    pub fn check(&mut self) -> Result {
        for i in 0..self.nodes.len() {
            let Some(v) = self.view(i) else { continue };
            if v.role == Role::Leader {
                let leader = *self.leaders.entry(v.term).or_insert_with(|| {
                    self.counters.elections += 1;
                    i
                });
                if leader != i {
                    return Err(format!(
                        "two leaders in term {}: n{leader} and n{i}",
                        v.term
                    ));
                }
            }
        }
        Ok(())
    }

    /// After a round of node `i`: every node that applied up to the same index holds the same
    /// registers, and a node's applied index never goes back.
    fn check_applied(&mut self, i: usize) -> Result {
        let Some(store) = self.nodes[i].store.as_ref() else {
            return Ok(());
        };
        let state = store
            .raft_state()
            .map_err(|e| format!("n{i}: {e}"))?
            .ok_or_else(|| format!("n{i}: no cluster state"))?;
        let index = state.applied.index;
        if index == self.applied_seen[i] {
            return Ok(());
        }
        if index < self.applied_seen[i] {
            return Err(format!(
                "n{i} applied index went back from {} to {index}",
                self.applied_seen[i]
            ));
        }
        self.applied_seen[i] = index;
        let regs = (0..self.keys)
            .map(|k| register(store, k))
            .collect::<Result<Vec<_>>>()?;
        match self.applied.get(&index) {
            Some((term, first)) if (*term, first) != (state.applied.term, &regs) => Err(format!(
                "n{i} applied up to {index} (term {}) and holds {regs:?}, but another node \
                 held {first:?} at that index (term {term})",
                state.applied.term
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, (state.applied.term, regs));
                Ok(())
            }
        }
    }

    /// After a restart: the store kept everything it had applied (it was durable).
    fn check_durable(&mut self, i: usize) -> Result {
        let store = self.nodes[i].store.as_ref().expect("node is up");
        let state = store.raft_state().map_err(|e| format!("n{i}: {e}"))?;
        let index = state.map_or(0, |s| s.applied.index);
        if index < self.applied_seen[i] {
            return Err(format!(
                "n{i} restarted with applied index {index}, below the {} it had applied",
                self.applied_seen[i]
            ));
        }
        Ok(())
    }

    /// Linearizability of the client history.
    pub fn check_history(&self) -> Result {
        let history: Vec<Operation> = self.history.iter().flatten().cloned().collect();
        kes_core::consensus::sim::linearizability::check(&history)
            .map_err(|key| format!("history of k{key} is not linearizable"))
    }

    /// The history of one key (for failure reports).
    pub fn history_of(&self, key: u8) -> Vec<String> {
        self.history
            .iter()
            .flatten()
            .filter(|o| o.key == key)
            .map(|o| format!("{o:?}"))
            .collect()
    }
}

/// A node's address in the configuration (never dialed: the simulator's links are in memory).
fn address(i: usize) -> String {
    format!("10.0.0.{}:7373", i + 1)
}

/// A frame in a trace line.
fn describe(frame: &crate::cluster::peer::Frame) -> String {
    use crate::cluster::peer::Frame;
    match frame {
        Frame::Raft(env) => format!("{:?}", env.message),
        Frame::Hello { node, .. } => format!("Hello from n{node}"),
        Frame::SnapshotChunk { stream, seq, data } => {
            format!("SnapshotChunk {stream} #{seq} ({} bytes)", data.len())
        }
        Frame::SnapshotEnd { stream, chunks, .. } => {
            format!("SnapshotEnd {stream} ({chunks} chunks)")
        }
        Frame::Forward { id, .. } => format!("Forward {id}"),
        Frame::ForwardResult { id, outcome } => format!("ForwardResult {id} {outcome:?}"),
    }
}
