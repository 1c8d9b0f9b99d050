//! The simulated cluster: machines (the shipped replica over a real `Store` on a simulated
//! disk, with a drifting clock), the network, the clients and everything observed about them.
//!
//! Time is global and in milliseconds; machine `i`'s clock reads `offset + now * rate / 100`.
//! A machine hears its events as the event loop hands them over and runs a round (the
//! replica's timers, then one durable transaction for all steps since the last round, then
//! messages and answers) when the scheduler says so, when its deadline passes, or before time
//! moves on: several events share one round, as in production.
use std::collections::BTreeMap;

use kes_core::consensus::sim::linearizability::{Kind, Operation};
use kes_core::consensus::sim::Chooser;
use kes_core::consensus::{Config, Members, NodeId, Params, Role, Term};
use kes_core::crypto::{Cipher, SecretKey};

use super::disk::Disk;
use super::net::{Faults, LinkChange, Net};
use super::node::{Machine, MachineLinks, SimReplica, SimWrite, Waiter};
use super::Counters;
use crate::cluster::frame::Frame;
use crate::cluster::replica::JOINING_ID;
use crate::command::Command;
use crate::item::{ItemName, Kind as ItemKind};
use crate::records::PolicyRecord;
use crate::store::{Addresses, Store, StoreError, Unavailable};

/// The enclave the clients write to.
const ENCLAVE: &str = "default";

pub type Result<T = ()> = std::result::Result<T, String>;

/// A membership change a client asked for.
#[derive(Clone, Debug)]
pub enum Change {
    Expand(usize),
    Shrink(usize),
    ForceShrink(usize),
}

/// The cluster and what was observed about it.
pub struct World {
    pub machines: Vec<Machine>,
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
    /// Membership changes waiting for their outcome.
    pub changes: BTreeMap<(usize, Waiter), Change>,
    /// The outcomes of answered membership changes (what the operator reads).
    pub change_outcomes: BTreeMap<(usize, Waiter), std::result::Result<(), StoreError>>,
    next_waiter: Waiter,
    next_value: u64,
    leaders: BTreeMap<Term, usize>,
    /// The registers at each applied index, as the first machine to apply it stored them.
    applied: BTreeMap<u64, (u64, Vec<Option<u64>>)>,
    /// The applied index each machine's store last showed (it never goes back, crash or not).
    applied_seen: Vec<u64>,
    /// The newest configuration index any machine applied.
    config_seen: u64,
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

/// A machine's address in configurations.
pub fn address(i: usize) -> String {
    format!("10.0.0.{}:7373", i + 1)
}

impl World {
    /// `members` machines form the initial configuration; `total - members` more wait to
    /// join (started with `--join`).
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
        let mut initial = Members::new();
        let mut addresses = Addresses::new();
        for id in 0..members {
            let _ = initial.push(id as NodeId);
            addresses.insert(id as NodeId, address(id));
        }
        let mut machines = Vec::new();
        for i in 0..total {
            let offset = chooser.random() % 1000;
            // Rates 97%..=103%: within the drift a lease allows.
            let rate = 97 + chooser.random() % 7;
            let disk = Disk::new();
            let config = Config {
                index: 0,
                members: initial.clone(),
                forced: false,
            };
            if i < members {
                init_disk(&disk, &hsm, config, &addresses)?;
            } else {
                init_disk(&disk, &hsm, Config::default(), &Addresses::new())?;
            }
            machines.push(Machine {
                replica: None,
                store: None,
                disk,
                address: address(i),
                offset,
                rate,
                dirty: false,
                gating: true,
                member: false,
                id: None,
                dials: BTreeMap::new(),
                doomed: false,
            });
        }
        let mut world = World {
            machines,
            net: Net::new(total, faults),
            now: 0,
            chooser,
            params,
            hsm,
            clock: 0,
            history: Vec::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            changes: BTreeMap::new(),
            change_outcomes: BTreeMap::new(),
            next_waiter: 1,
            next_value: 1,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_seen: vec![0; total],
            config_seen: 0,
            keys: 3,
            trace: None,
            counters: Counters::default(),
        };
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

    /// Machine `i`'s clock.
    pub fn clock_of(&self, i: usize) -> u64 {
        self.machines[i].offset + self.now * self.machines[i].rate / 100
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.machines[i].replica.is_some()
    }

    pub fn replica(&self, i: usize) -> Option<&SimReplica> {
        self.machines[i].replica.as_ref()
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.machines.len())
            .filter_map(|i| self.replica(i).map(|r| (i, r.node())))
            .filter(|(_, n)| n.role() == Role::Leader)
            .max_by_key(|(_, n)| n.term())
            .map(|(i, _)| i)
    }

    /// The machines of the members of machine `i`'s latest configuration, and of its
    /// committed one if a change is pending (an operator treats both as members).
    pub fn members_seen_by(&self, i: usize) -> Vec<usize> {
        let Some(r) = self.replica(i) else {
            return Vec::new();
        };
        let node = r.node();
        let mut ids: Vec<NodeId> = node.config().members.iter().copied().collect();
        ids.extend(node.committed_config().members.iter().copied());
        let mut machines: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.machine_seen_by(i, *id))
            .collect();
        machines.sort_unstable();
        machines.dedup();
        machines
    }

    /// The machine that machine `i` knows as node `id`: the one at the address it has for
    /// `id` (two machines can hold one id: a node left over from a failed expand keeps the id
    /// the next expand gives another), else the one that has the id.
    pub fn machine_seen_by(&self, i: usize, id: NodeId) -> Option<usize> {
        let at = self.replica(i).and_then(|r| r.address_of(id));
        at.and_then(|a| self.machines.iter().position(|m| m.address == a))
            .or_else(|| self.machine_of(id))
    }

    /// The machine that has node id `id`.
    pub fn machine_of(&self, id: NodeId) -> Option<usize> {
        (id != JOINING_ID)
            .then(|| self.machines.iter().position(|m| m.id == Some(id)))
            .flatten()
    }

    /// Opens machine `i`'s store on its disk and boots its replica. A machine that cannot boot
    /// (its address left the configuration) stays down, as the real server refuses to start.
    fn start(&mut self, i: usize) -> Result {
        let store = Store::open_backend(self.machines[i].disk.clone(), &self.hsm)
            .map_err(|e| format!("n{i}: kes.db does not open after a crash: {e}"))?;
        let now = self.clock_of(i);
        let seed = self.chooser.random();
        let replica = match Machine::boot(&store, &self.machines[i].address, self.params, now, seed)
        {
            Ok(r) => r,
            Err(why) => {
                // The operator's case: the server refuses to start (a node that joined
                // but crashed before it appended the configuration that adds it does);
                // it is removed by force and rebuilt (README: a damaged node).
                self.log(|| format!("n{i} does not start: {why}"));
                self.counters.refused_starts += 1;
                self.machines[i].doomed = true;
                return Ok(());
            }
        };
        let m = &mut self.machines[i];
        m.id = Some(replica.id());
        m.gating = true;
        m.member = false;
        m.replica = Some(replica);
        m.store = Some(store);
        let changes = self.net.set_up(i, true);
        self.link_changes(changes);
        self.check_durable(i)?;
        self.round(i)
    }

    /// Runs `f` on machine `i`'s replica with its store, links and clock; marks it for a round.
    fn with_replica(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut SimReplica, &Store, &mut MachineLinks<'_>, u64),
    ) {
        let now = self.clock_of(i);
        let ids: Vec<Option<NodeId>> = self.machines.iter().map(|m| m.id).collect();
        let addresses: Vec<String> = self.machines.iter().map(|m| m.address.clone()).collect();
        let m = &mut self.machines[i];
        let (Some(replica), Some(store)) = (m.replica.as_mut(), m.store.as_ref()) else {
            return;
        };
        let mut links = MachineLinks {
            net: &mut self.net,
            chooser: &mut self.chooser,
            now: self.now,
            me: i,
            ids: &ids,
            dials: &mut m.dials,
            addresses: &addresses,
        };
        f(replica, store, &mut links, now);
        m.id = Some(replica.id());
        m.dirty = true;
    }

    /// Links that came up or went down: the replica sees them through `Links::open` (it has
    /// no event for them); a broken dialed link is closed.
    fn link_changes(&mut self, changes: Vec<LinkChange>) {
        for change in changes {
            if let LinkChange::Down { node, peer } = change {
                self.machines[node as usize]
                    .dials
                    .retain(|_, m| *m != peer as usize);
            }
        }
    }

    /// The end of machine `i`'s loop round: the replica's timers, one flush, then the answers
    /// to its clients and what the API learns (gate, membership).
    pub fn round(&mut self, i: usize) -> Result {
        self.with_replica(i, |r, store, links, now| {
            r.tick(now, links, store);
            r.flush(now, links, store);
        });
        self.collect(i)
    }

    /// A flush alone (the event loop flushes after answering requests, before their answers
    /// go out).
    pub fn flush(&mut self, i: usize) -> Result {
        self.with_replica(i, |r, store, links, now| r.flush(now, links, store));
        self.collect(i)
    }

    fn collect(&mut self, i: usize) -> Result {
        let m = &mut self.machines[i];
        m.dirty = false;
        let Some(replica) = m.replica.as_mut() else {
            return Ok(());
        };
        let (writes, reads) = replica.take_decided();
        let _ = replica.take_mirror();
        m.gating = replica.has_pending();
        m.member = replica.is_member();
        for (write, outcome) in writes {
            self.write_done(i, write.waiter, outcome)?;
        }
        for (waiter, decision) in reads {
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
        match &outcome {
            Err(StoreError::Unavailable(Unavailable::AnswerLost { .. })) => {
                self.counters.answers_lost += 1
            }
            Err(StoreError::Unavailable(Unavailable::LeaderSilent)) => {
                self.counters.forwards_timed_out += 1
            }
            _ => {}
        }
        if let Some(change) = self.changes.remove(&(i, waiter)) {
            self.log(|| format!("n{i} {change:?} -> {outcome:?}"));
            if outcome.is_ok() {
                match change {
                    Change::Expand(_) => self.counters.expands += 1,
                    Change::Shrink(_) => self.counters.shrinks += 1,
                    Change::ForceShrink(_) => self.counters.forced_shrinks += 1,
                }
            }
            self.change_outcomes.insert((i, waiter), outcome);
            return Ok(());
        }
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

    /// Serves read `op` from machine `i`'s store, as the API does once the gate lets it pass.
    fn serve_read(&mut self, i: usize, op: usize) -> Result {
        let key = self.history[op].as_ref().expect("read recorded").key;
        let store = self.machines[i].store.as_ref().expect("machine is up");
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

    /// Hands a client's command to machine `i` (a round may follow at once or later).
    fn propose(&mut self, i: usize, waiter: Waiter, cmd: Command) -> Result {
        let write = SimWrite { waiter, cmd };
        self.with_replica(i, |r, store, links, now| {
            r.propose(now, links, store, write)
        });
        if self.chooser.chance(30) {
            self.flush(i)?;
        }
        Ok(())
    }

    /// A client writes a fresh value to `key` through machine `i`.
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
        if !self.machines[i].member {
            // The API refuses clients on a node that is not a member.
            self.history[op] = None;
            return Ok(op);
        }
        self.writes.insert((i, waiter), op);
        self.log(|| format!("n{i} client write k{key}={value} ({waiter})"));
        self.propose(i, waiter, write_command(key, value))?;
        Ok(op)
    }

    /// A client asks machine `i` for a membership change; returns its handle (see
    /// [`World::change_pending`]).
    pub fn change(&mut self, i: usize, change: Change) -> Result<Option<(usize, Waiter)>> {
        if !self.machines[i].member {
            return Ok(None);
        }
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        let cmd = match change {
            Change::Expand(j) => Command::Expand {
                endpoint: address(j),
            },
            Change::Shrink(j) => Command::Shrink {
                endpoint: address(j),
                force: false,
            },
            Change::ForceShrink(j) => {
                // The operator's promise: it never comes back with this disk.
                self.machines[j].doomed = true;
                Command::Shrink {
                    endpoint: address(j),
                    force: true,
                }
            }
        };
        self.log(|| format!("n{i} client {change:?} ({waiter})"));
        self.changes.insert((i, waiter), change);
        self.propose(i, waiter, cmd)?;
        Ok(Some((i, waiter)))
    }

    /// Whether the membership change `handle` still waits for its outcome.
    pub fn change_pending(&self, handle: (usize, Waiter)) -> bool {
        self.changes.contains_key(&handle)
    }

    /// A client reads `key` through machine `i`: served at once unless the gate is on.
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
        let (gating, member) = (self.machines[i].gating, self.machines[i].member);
        if !member {
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
        self.with_replica(i, |r, _, _, now| r.read(now, waiter, &names));
        if self.chooser.chance(30) {
            self.flush(i)?;
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
        let (from, i) = (from as usize, to as usize);
        // The peer id the frame comes from: the sender's id, or for a node still joining the
        // id this machine dialed it as.
        let sender = match self.machines[from].id {
            Some(JOINING_ID) | None => self.machines[i]
                .dials
                .iter()
                .find(|(_, m)| **m == from)
                .map_or(JOINING_ID, |(id, _)| *id),
            Some(id) => id,
        };
        self.log(|| format!("deliver n{from}->n{i} {}", describe(&frame)));
        self.with_replica(i, |r, store, links, now| {
            r.on_frame(now, links, store, sender, frame)
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

    /// Runs the round of every machine that stepped since its last one or whose deadline
    /// passed.
    pub fn rounds(&mut self) -> Result {
        for i in 0..self.machines.len() {
            let due = match &self.machines[i].replica {
                Some(r) => self.machines[i].dirty || self.clock_of(i) >= r.next_deadline(),
                None => false,
            };
            if due {
                self.round(i)?;
            }
        }
        Ok(())
    }

    /// The global time at which machine `i`'s clock reaches `t`.
    fn global_time(&self, i: usize, t: u64) -> u64 {
        let m = &self.machines[i];
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
        for i in 0..self.machines.len() {
            if let Some(r) = &self.machines[i].replica {
                next = next.min(self.global_time(i, r.next_deadline()));
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
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&World) -> bool) -> Result<bool> {
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

    /// Crashes machine `i`: its memory, its unsynced writes, its clients and its links are
    /// lost.
    pub fn crash(&mut self, i: usize) -> Result {
        if self.machines[i].replica.take().is_none() {
            return Ok(());
        }
        self.log(|| format!("n{i} crashes"));
        self.counters.crashes += 1;
        let m = &mut self.machines[i];
        m.dirty = false;
        m.dials.clear();
        // The disk forgets first, so that nothing redb does while dropped reaches it.
        m.disk = m.disk.crash();
        m.store = None;
        let changes = self.net.set_up(i, false);
        self.link_changes(changes);
        // Writes in flight have an unknown outcome; reads in flight are never answered.
        self.writes.retain(|&(n, _), _| n != i);
        self.changes.retain(|&(n, _), _| n != i);
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
        if self.is_up(i) || self.machines[i].doomed {
            return Ok(());
        }
        self.log(|| format!("n{i} restarts"));
        self.counters.restarts += 1;
        self.start(i)
    }

    /// The operator rebuilds machine `i` (down, and not a member any more): an empty
    /// directory, started with `--join`, ready to be added again.
    pub fn rebuild(&mut self, i: usize) -> Result {
        if self.is_up(i) {
            return Ok(());
        }
        self.log(|| format!("n{i} is rebuilt empty, to join"));
        self.counters.rebuilds += 1;
        let disk = Disk::new();
        init_disk(&disk, &self.hsm, Config::default(), &Addresses::new())?;
        let m = &mut self.machines[i];
        m.disk = disk;
        m.doomed = false;
        m.id = None;
        self.applied_seen[i] = 0;
        self.start(i)
    }

    /// Offline recovery (`kes-node cluster recover --force --keep ...` on every stopped
    /// survivor): the machines `keep` become the configuration.
    pub fn recover(&mut self, keep: &[usize]) -> Result {
        let ids: Vec<NodeId> = keep.iter().filter_map(|&i| self.machines[i].id).collect();
        self.log(|| format!("offline recovery keeping {keep:?} (ids {ids:?})"));
        self.counters.recoveries += 1;
        for &i in keep {
            self.crash(i)?;
            let store = Store::open_backend(self.machines[i].disk.clone(), &self.hsm)
                .map_err(|e| format!("n{i}: {e}"))?;
            store
                .force_configuration(&ids)
                .map_err(|e| format!("n{i}: recover: {e}"))?;
        }
        for &i in keep {
            self.restart(i)?;
        }
        Ok(())
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
        for i in 0..self.machines.len() {
            let Some(node) = self.replica(i).map(|r| r.node()) else {
                continue;
            };
            if node.role() == Role::Leader {
                let term = node.term();
                let leader = *self.leaders.entry(term).or_insert(i);
                if leader != i {
                    return Err(format!("two leaders in term {term}: n{leader} and n{i}"));
                }
            }
        }
        self.counters.elections = self.leaders.len() as u64;
        Ok(())
    }

    /// After a round of machine `i`: every machine that applied up to the same index holds the
    /// same registers, and a machine's applied index never goes back.
    fn check_applied(&mut self, i: usize) -> Result {
        let Some(store) = self.machines[i].store.as_ref() else {
            return Ok(());
        };
        let state = store
            .raft_state()
            .map_err(|e| format!("n{i}: {e}"))?
            .ok_or_else(|| format!("n{i}: no cluster state"))?;
        if state.applied.config.index > self.config_seen {
            self.config_seen = state.applied.config.index;
            self.counters.configs_committed += 1;
        }
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
                "n{i} applied up to {index} (term {}) and holds {regs:?}, but another machine \
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
        let store = self.machines[i].store.as_ref().expect("machine is up");
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

    /// One line per machine: up, id, role, term, commit, members (for failure reports).
    pub fn describe(&self) -> String {
        (0..self.machines.len())
            .map(|i| match self.replica(i) {
                Some(r) => format!(
                    "n{i}: id {} {:?} member {}/{} gating {} term {} commit {} members {:?} leader {:?}",
                    r.id(),
                    r.node().role(),
                    self.machines[i].member,
                    r.is_member(),
                    self.machines[i].gating,
                    r.node().term(),
                    r.node().commit_index(),
                    r.node().config().members,
                    r.node().leader()
                ),
                None => format!("n{i}: down (doomed: {})", self.machines[i].doomed),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Writes a new `kes.db` with the given consensus state on `disk`.
fn init_disk(
    disk: &Disk,
    hsm: &crate::hsm::SoftHsmDevice,
    config: Config,
    addresses: &Addresses,
) -> Result {
    let store = Store::open_backend(disk.clone(), hsm).map_err(|e| format!("kes.db: {e}"))?;
    store
        .init_raft(config, addresses)
        .map_err(|e| format!("kes.db: {e}"))
}

/// A frame in a trace line.
fn describe(frame: &Frame) -> String {
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
