//! A whole simulated cluster: nodes with their disks, the network, clients, faults, and the
//! invariant checks run after every event.
//!
//! The disk of a node is what survives a crash: hard state, log, applied state (a key-value map
//! of registers) and its metadata. Everything else — the core's in-memory state, messages in
//! flight, clients waiting — is lost. The shell's contract (`Output`) is followed literally: one
//! atomic transaction per step (collected in a [`StepOutput`]), then messages, then answers; a
//! crash may cut in anywhere between.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::linearizability::{Kind, Operation};
use super::rng::Chooser;
use crate::consensus::{
    Body, Change, Config, Entry, Envelope, HardState, Index, Input, Members, Message, NameId,
    Names, Node, NodeId, Params, ProposalId, ProposeError, ReadId, Role, SnapshotMeta, StepOutput,
    Term,
};

/// The simulated application command: set register `key` to `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd {
    /// The register.
    pub key: u8,
    /// Its new value.
    pub value: u64,
}

/// The command carried by configuration entries in the simulation.
pub const CONFIG_CMD: Cmd = Cmd {
    key: u8::MAX,
    value: 0,
};

/// What a simulated disk holds.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// The persisted term and vote.
    pub hard: HardState,
    /// The whole log, `log[i - 1]` being index `i` (a snapshot install copies the prefix).
    pub log: Vec<Entry<Cmd>>,
    /// The applied point.
    pub applied: SnapshotMeta,
    /// The applied state: the registers.
    pub kv: BTreeMap<u8, u64>,
}

/// The data of a snapshot (the shell's part).
#[derive(Clone, Debug)]
struct SnapshotData {
    kv: BTreeMap<u8, u64>,
    log: Vec<Entry<Cmd>>,
}

#[derive(Clone, Debug)]
struct Packet {
    envelope: Envelope<Cmd>,
    snapshot: Option<SnapshotData>,
    at: u64,
}

/// One simulated machine.
#[derive(Clone, Debug)]
pub struct SimNode {
    /// `None` while crashed.
    pub node: Option<Node<Cmd>>,
    /// What survives a crash.
    pub disk: Disk,
    /// This machine's clock is `offset + now * rate / 100` (clocks of different nodes disagree
    /// and run at slightly different rates, within the `clock_drift` the params allow).
    pub offset: u64,
    /// The clock's rate, in percent of the global time's.
    pub rate: u64,
    /// Gone for good (force-removed while crashed).
    pub destroyed: bool,
    incoming: Option<SnapshotData>,
}

#[derive(Clone, Debug)]
enum Pending {
    Write(usize),
    Change,
}

/// The cluster and everything observed about it.
pub struct Cluster {
    /// The machines, by node id.
    pub nodes: Vec<SimNode>,
    net: Vec<Packet>,
    group: Vec<u8>,
    /// Global simulated time, in ticks.
    pub now: u64,
    /// History clock: every call and return gets a distinct time.
    clock: u64,
    /// Where every decision of the schedule comes from.
    pub chooser: Chooser,
    /// The core's timing parameters.
    pub params: Params,
    /// The committed log as observed through every node's applies.
    pub committed: Vec<Entry<Cmd>>,
    pub(super) committed_config: Config,
    pub(super) leaders: BTreeMap<Term, NodeId>,
    /// The clients' operations, for the linearizability check (`None`: a failed read).
    pub history: Vec<Option<Operation>>,
    writes: BTreeMap<(usize, u64), Pending>,
    reads: BTreeMap<(usize, u64), usize>,
    next_id: u64,
    next_value: u64,
    /// Acknowledged writes: (index, key, value).
    pub acked: Vec<(Index, u8, u64)>,
    /// Percent of messages lost at sending.
    pub drop_percent: u64,
    /// Percent of messages duplicated at sending.
    pub dup_percent: u64,
    /// The longest ordinary delay of a message, in ticks.
    pub max_delay: u64,
    /// Percent of messages held back up to 40 more ticks (longer than a lease).
    pub long_delay_percent: u64,
    /// Percent chance that processing a `StepOutput` is cut by a crash.
    pub crash_in_ready_percent: u64,
    /// The events so far, if kept.
    pub trace: Option<Vec<String>>,
    refused: bool,
    /// Nodes whose forced removal a leader accepted (the operator's word that they are gone).
    pub(super) force_removed: BTreeSet<NodeId>,
    /// How often interesting things happened.
    pub counters: super::Counters,
    /// Every error a write or membership change got, in order (node, error).
    pub write_errors: Vec<(usize, ProposeError)>,
    /// Scenario hook: crash node `.0` at action `.1` of the first `StepOutput` that applies entries
    /// (action 0: before its transaction; 1: after it, before any message; ...).
    pub crash_on_apply: Option<(usize, usize)>,
}

pub(super) type Result<T = ()> = core::result::Result<T, String>;

impl Cluster {
    /// `members` nodes form the initial configuration; `total - members` more wait to join.
    pub fn new(members: usize, total: usize, params: Params, chooser: Chooser) -> Self {
        let mut initial = Members::new();
        for id in 0..members {
            let _ = initial.push(id as NodeId);
        }
        let config = Config {
            index: 0,
            members: initial,
            forced: false,
        };
        let mut cluster = Cluster {
            nodes: Vec::new(),
            net: Vec::new(),
            group: alloc::vec![0; total],
            now: 0,
            clock: 0,
            chooser,
            params,
            committed: Vec::new(),
            committed_config: config.clone(),
            leaders: BTreeMap::new(),
            history: Vec::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_id: 1,
            next_value: 1,
            acked: Vec::new(),
            drop_percent: 0,
            dup_percent: 0,
            max_delay: 3,
            long_delay_percent: 0,
            crash_in_ready_percent: 0,
            trace: None,
            refused: false,
            force_removed: Default::default(),
            crash_on_apply: None,
            write_errors: Vec::new(),
            counters: super::Counters::default(),
        };
        for id in 0..total {
            let applied = SnapshotMeta {
                index: 0,
                term: 0,
                config: if id < members {
                    config.clone()
                } else {
                    Config::default()
                },
            };
            let disk = Disk {
                applied,
                ..Disk::default()
            };
            let offset = cluster.chooser.random() % 1000;
            // Rates 97%..=103%: over a 12-tick lease that is well within a drift bound of 1.
            let rate = 97 + cluster.chooser.random() % 7;
            cluster.nodes.push(SimNode {
                node: None,
                disk,
                offset,
                rate,
                destroyed: false,
                incoming: None,
            });
            cluster.start(id);
        }
        cluster
    }

    pub(super) fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("[t={}] {}", self.now, line()));
        }
    }

    fn start(&mut self, i: usize) {
        let random = self.chooser.random();
        let now = self.clock_of(i);
        let disk = &self.nodes[i].disk;
        let above = &disk.log[disk.applied.index as usize..];
        let node = Node::new(
            i as NodeId,
            self.params,
            now,
            random,
            disk.hard,
            disk.applied.clone(),
            above,
        )
        .expect("stored state accepted");
        self.nodes[i].node = Some(node);
    }

    /// Node `i`'s clock.
    pub fn clock_of(&self, i: usize) -> u64 {
        self.nodes[i].offset + self.now * self.nodes[i].rate / 100
    }

    /// Whether node `i` is running (not crashed).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    /// The core of node `i` (which must be up).
    pub fn node(&self, i: usize) -> &Node<Cmd> {
        self.nodes[i].node.as_ref().expect("node is up")
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.role() == Role::Leader)
            })
            .max_by_key(|&i| self.node(i).term())
    }

    /// Feeds one input to node `i` and carries out its `StepOutput`.
    pub fn step(&mut self, i: usize, input: Input<Cmd>) -> Result {
        let now = self.clock_of(i);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Ok(());
        };
        let mut out = StepOutput::default();
        node.step(now, input, &mut out);
        let mut crash_at = if self.crash_in_ready_percent > 0
            && self.chooser.chance(self.crash_in_ready_percent)
        {
            Some(self.chooser.below(out.messages.len() as u64 + 3) as usize)
        } else {
            None
        };
        if let Some((n, action)) = self.crash_on_apply {
            if n == i && !out.apply.is_empty() {
                self.crash_on_apply = None;
                crash_at = Some(action);
            }
        }
        self.process(i, out, crash_at)
    }

    fn process(&mut self, i: usize, out: StepOutput<Cmd>, crash_at: Option<usize>) -> Result {
        let mut action = 0;
        let mut cut = |cluster: &mut Cluster| {
            let stop = crash_at == Some(action);
            action += 1;
            if stop {
                cluster.log(|| format!("n{i} crashes while carrying out its step"));
                cluster.counters.crashes_in_ready += 1;
                cluster.crash(i);
            }
            stop
        };
        if cut(self) {
            return Ok(());
        }
        self.transaction(i, &out)?;
        for envelope in out.messages {
            if cut(self) {
                return Ok(());
            }
            self.send(envelope, None);
        }
        for envelope in out.snapshots {
            if cut(self) {
                return Ok(());
            }
            let disk = &self.nodes[i].disk;
            let Message::InstallSnapshot { meta, .. } = &envelope.message else {
                return Err(format!("n{i}: snapshot output without InstallSnapshot"));
            };
            if disk.applied.index != meta.index || disk.applied.term != meta.term {
                return Err(format!(
                    "n{i}: snapshot meta {meta:?} is not the applied state"
                ));
            }
            let data = SnapshotData {
                kv: disk.kv.clone(),
                log: disk.log[..meta.index as usize].to_vec(),
            };
            self.send(envelope, Some(data));
        }
        if cut(self) {
            return Ok(());
        }
        for (id, result) in out.proposals {
            self.proposal_result(i, id, result)?;
        }
        for (id, result) in out.reads {
            let Some(op) = self.reads.remove(&(i, id.0)) else {
                continue;
            };
            match result {
                Ok(()) => {
                    self.clock += 1;
                    let clock = self.clock;
                    let operation = self.history[op].as_mut().expect("read recorded");
                    let value = self.nodes[i].disk.kv.get(&operation.key).copied();
                    operation.kind = Kind::Read(value);
                    operation.ret = Some(clock);
                    self.log(|| format!("n{i} read {id:?} -> {value:?}"));
                }
                Err(e) => {
                    self.log(|| format!("n{i} read {id:?} failed: {e:?}"));
                    self.history[op] = None;
                }
            }
        }
        Ok(())
    }

    fn transaction(&mut self, i: usize, out: &StepOutput<Cmd>) -> Result {
        let committed_len = self.committed.len() as Index;
        let sim = &mut self.nodes[i];
        let disk = &mut sim.disk;
        if let Some(hard) = out.hard_state {
            disk.hard = hard;
        }
        if let Some(meta) = &out.restore {
            let data = sim
                .incoming
                .take()
                .ok_or_else(|| format!("n{i}: restore without snapshot data"))?;
            if data.log.len() as Index != meta.index {
                return Err(format!("n{i}: snapshot data does not match {meta:?}"));
            }
            let suffix: Vec<_> = disk
                .log
                .iter()
                .filter(|e| e.index > meta.index)
                .cloned()
                .collect();
            disk.log = data.log;
            disk.log.extend(suffix);
            disk.kv = data.kv;
            disk.applied = meta.clone();
            self.counters.snapshots_installed += 1;
        }
        if let Some(from) = out.truncate_from {
            let last = disk.log.len() as Index;
            if from <= last && from <= committed_len {
                return Err(format!(
                    "n{i} truncates committed entries from {from} (committed {committed_len})"
                ));
            }
            if from <= last {
                self.counters.truncations += 1;
            }
            disk.log.truncate(from.saturating_sub(1) as usize);
        }
        for entry in &out.append {
            if entry.index != disk.log.len() as Index + 1 {
                return Err(format!(
                    "n{i} appends {} after {}",
                    entry.index,
                    disk.log.len()
                ));
            }
            disk.log.push(entry.clone());
        }
        let mut newly = Vec::new();
        for entry in &out.apply {
            if entry.index != disk.applied.index + 1 {
                return Err(format!(
                    "n{i} applies {} after {}",
                    entry.index, disk.applied.index
                ));
            }
            if disk.log.get(entry.index as usize - 1) != Some(entry) {
                return Err(format!(
                    "n{i} applies entry {} that is not in its log",
                    entry.index
                ));
            }
            match &entry.body {
                Body::Command { command, .. } => {
                    disk.kv.insert(command.key, command.value);
                }
                Body::Config {
                    members, forced, ..
                } => {
                    disk.applied.config = Config {
                        index: entry.index,
                        members: members.clone(),
                        forced: *forced,
                    };
                }
                Body::Noop => {}
            }
            disk.applied.index = entry.index;
            disk.applied.term = entry.term;
            newly.push(entry.clone());
        }
        let node = sim.node.as_ref().expect("node is up");
        if node.commit_index() != disk.applied.index || node.last_index() != disk.log.len() as Index
        {
            return Err(format!(
                "n{i}: core (commit {}, last {}) disagrees with disk (applied {}, last {})",
                node.commit_index(),
                node.last_index(),
                disk.applied.index,
                disk.log.len()
            ));
        }
        for entry in newly {
            self.observe_commit(i, entry)?;
        }
        Ok(())
    }

    fn proposal_result(
        &mut self,
        i: usize,
        id: ProposalId,
        result: core::result::Result<Index, ProposeError>,
    ) -> Result {
        let Some(pending) = self.writes.remove(&(i, id.0)) else {
            return Ok(());
        };
        self.log(|| format!("n{i} proposal {id:?} -> {result:?}"));
        if let Err(e) = &result {
            self.write_errors.push((i, e.clone()));
        }
        match pending {
            Pending::Write(op) => match result {
                Ok(index) => {
                    self.clock += 1;
                    let clock = self.clock;
                    let operation = self.history[op].as_mut().expect("write recorded");
                    operation.ret = Some(clock);
                    let (key, Kind::Write(value)) = (operation.key, operation.kind.clone()) else {
                        unreachable!()
                    };
                    let expected = Body::Command {
                        names: names(key),
                        command: Cmd { key, value },
                    };
                    match self.committed.get(index as usize - 1) {
                        Some(entry) if entry.body == expected => {}
                        other => {
                            return Err(format!(
                            "n{i} acknowledged write {value} at {index} but committed is {other:?}"
                        ))
                        }
                    }
                    self.acked.push((index, key, value));
                }
                Err(ProposeError::Timeout { .. } | ProposeError::Unknown) => {}
                Err(_) => self.history[op] = None,
            },
            Pending::Change => {
                if matches!(
                    result,
                    Err(ProposeError::NotLeader { .. }
                        | ProposeError::Busy
                        | ProposeError::InvalidChange)
                ) {
                    self.refused = true;
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, envelope: Envelope<Cmd>, snapshot: Option<SnapshotData>) {
        if self.chooser.chance(self.drop_percent) {
            return;
        }
        let copies = if self.chooser.chance(self.dup_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.now + 1 + self.chooser.below(self.max_delay.max(1));
            if self.chooser.chance(self.long_delay_percent) {
                at += self.chooser.below(40);
            }
            self.net.push(Packet {
                envelope: envelope.clone(),
                snapshot: snapshot.clone(),
                at,
            });
        }
    }

    /// As the shell of a safe expand does: leader `i` ships a snapshot of its applied state to
    /// node `to` *before* proposing the configuration that adds it
    /// ([`Node::snapshot_for`]). Returns false if `i` does not lead.
    pub fn ship_snapshot(&mut self, i: usize, to: usize) -> Result<bool> {
        let Some(envelope) = self.node(i).snapshot_for(to as NodeId) else {
            return Ok(false);
        };
        let Message::InstallSnapshot { meta, .. } = &envelope.message else {
            return Err(format!("n{i}: snapshot_for made {:?}", envelope.message));
        };
        let disk = &self.nodes[i].disk;
        if disk.applied.index != meta.index {
            return Err(format!(
                "n{i}: snapshot_for {meta:?} is not the applied state"
            ));
        }
        let data = SnapshotData {
            kv: disk.kv.clone(),
            log: disk.log[..meta.index as usize].to_vec(),
        };
        self.log(|| format!("n{i} ships a snapshot to n{to} before adding it"));
        self.send(envelope, Some(data));
        Ok(true)
    }

    /// Advances time by one tick and ticks every live node.
    pub fn tick(&mut self) -> Result {
        self.now += 1;
        for i in 0..self.nodes.len() {
            let random = self.chooser.random();
            self.step(i, Input::Tick { random })?;
        }
        Ok(())
    }

    /// Messages due for delivery.
    fn due(&self) -> Vec<usize> {
        (0..self.net.len())
            .filter(|&k| self.net[k].at <= self.now)
            .collect()
    }

    /// Delivers packet `k` (dropped if its destination is down or partitioned away).
    fn deliver(&mut self, k: usize) -> Result {
        let packet = self.net.swap_remove(k);
        let (from, to) = (packet.envelope.from as usize, packet.envelope.to as usize);
        if to >= self.nodes.len() || self.group[from] != self.group[to] || !self.is_up(to) {
            return Ok(());
        }
        self.log(|| format!("deliver n{from}->n{to} {:?}", packet.envelope.message));
        self.nodes[to].incoming = packet.snapshot;
        let result = self.step(to, Input::Message(packet.envelope));
        self.nodes[to].incoming = None;
        result
    }

    /// Delivers one random due message; returns false if none was due.
    pub fn deliver_random(&mut self) -> Result<bool> {
        let due = self.due();
        if due.is_empty() {
            return Ok(false);
        }
        let k = due[self.chooser.below(due.len() as u64) as usize];
        self.deliver(k)?;
        Ok(true)
    }

    /// Delivers every due message (and those they cause, once due).
    pub fn deliver_all(&mut self) -> Result {
        loop {
            let due = self.due();
            let Some(&k) = due.first() else {
                return Ok(());
            };
            self.deliver(k)?;
        }
    }

    /// Ticks and delivers everything for `ticks` ticks.
    pub fn run(&mut self, ticks: u64) -> Result {
        for _ in 0..ticks {
            self.tick()?;
            self.deliver_all()?;
            self.check()?;
        }
        Ok(())
    }

    /// Runs until `done` holds (checked after each tick), at most `ticks` ticks.
    pub fn run_until(
        &mut self,
        ticks: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<bool> {
        for _ in 0..ticks {
            if done(self) {
                return Ok(true);
            }
            self.tick()?;
            self.deliver_all()?;
            self.check()?;
        }
        Ok(done(self))
    }

    /// A client writes a fresh value to `key` through node `i`; returns the history index.
    pub fn write(&mut self, i: usize, key: u8) -> Result<usize> {
        let value = self.next_value;
        self.next_value += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.clock += 1;
        let op = self.history.len();
        self.history.push(Some(Operation {
            key,
            kind: Kind::Write(value),
            call: self.clock,
            ret: None,
        }));
        self.writes.insert((i, id), Pending::Write(op));
        self.log(|| format!("n{i} client write k{key}={value} ({id})"));
        let input = Input::Propose {
            id: ProposalId(id),
            names: names(key),
            command: Cmd { key, value },
        };
        self.step(i, input)?;
        Ok(op)
    }

    /// A client reads `key` through node `i`; returns the history index.
    pub fn read(&mut self, i: usize, key: u8) -> Result<usize> {
        let id = self.next_id;
        self.next_id += 1;
        self.clock += 1;
        let op = self.history.len();
        self.history.push(Some(Operation {
            key,
            kind: Kind::Read(None),
            call: self.clock,
            ret: None,
        }));
        self.reads.insert((i, id), op);
        self.log(|| format!("n{i} client read k{key} ({id})"));
        self.step(
            i,
            Input::Read {
                id: ReadId(id),
                names: names(key),
            },
        )?;
        if self.reads.contains_key(&(i, id)) {
            self.counters.reads_waited += 1;
        }
        Ok(op)
    }

    /// Whether the operation at history index `op` completed (`Some(true)`), failed
    /// definitely (`None`), or is still waiting or unknown (`Some(false)`).
    pub fn completed(&self, op: usize) -> Option<bool> {
        self.history[op].as_ref().map(|o| o.ret.is_some())
    }

    /// Whether the write at history index `op` still waits for its outcome.
    pub fn write_pending(&self, op: usize) -> bool {
        self.writes
            .values()
            .any(|p| matches!(p, Pending::Write(o) if *o == op))
    }

    /// The value a completed read returned.
    pub fn read_value(&self, op: usize) -> Option<Option<u64>> {
        match self.history[op].as_ref() {
            Some(Operation {
                kind: Kind::Read(v),
                ret: Some(_),
                ..
            }) => Some(*v),
            _ => None,
        }
    }

    /// Asks node `i` to change the membership; returns whether the leader took the change
    /// (it was not refused at once).
    pub fn change(&mut self, i: usize, change: Change) -> Result<bool> {
        let id = self.next_id;
        self.next_id += 1;
        self.writes.insert((i, id), Pending::Change);
        self.log(|| format!("n{i} membership {change:?} ({id})"));
        self.refused = false;
        // Recorded before the step, which may already commit the removal.
        let fresh = matches!(change, Change::ForceRemove(n) if self.force_removed.insert(n));
        self.step(
            i,
            Input::ChangeMembership {
                id: ProposalId(id),
                change,
                command: CONFIG_CMD,
            },
        )?;
        if let (true, true, Change::ForceRemove(n)) = (self.refused, fresh, change) {
            self.force_removed.remove(&n);
        }
        Ok(!self.refused)
    }

    /// Asks node `i` to hand its leadership to another member.
    pub fn transfer(&mut self, i: usize) -> Result<()> {
        self.log(|| format!("n{i} transfers leadership"));
        self.step(i, Input::TransferLeadership)
    }

    /// Crashes node `i`: its memory, its clients' pending requests and nothing else are lost.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].node.take().is_none() {
            return;
        }
        self.log(|| format!("n{i} crashes"));
        self.counters.crashes += 1;
        self.nodes[i].incoming = None;
        // Writes in flight have an unknown outcome; reads in flight are simply unanswered.
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
    }

    /// Restarts crashed node `i` from its disk.
    pub fn restart(&mut self, i: usize) {
        if self.is_up(i) || self.nodes[i].destroyed {
            return;
        }
        self.log(|| format!("n{i} restarts"));
        self.counters.restarts += 1;
        self.start(i);
    }

    /// Splits the nodes into `groups` (node -> group number); messages across groups are lost.
    pub fn partition(&mut self, groups: &[u8]) {
        self.log(|| format!("partition {groups:?}"));
        self.counters.partitions += 1;
        self.group = groups.to_vec();
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.log(|| String::from("heal"));
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Renders the history of one key (for failure reports).
    pub fn history_of(&self, key: u8) -> Vec<String> {
        self.history
            .iter()
            .flatten()
            .filter(|o| o.key == key)
            .map(|o| format!("{o:?}"))
            .collect()
    }

    /// Holds back every message in flight that matches `pred` by `ticks` more ticks; returns
    /// how many matched.
    pub fn delay_matching(&mut self, ticks: u64, pred: impl Fn(&Envelope<Cmd>) -> bool) -> usize {
        let mut n = 0;
        for packet in self.net.iter_mut().filter(|p| pred(&p.envelope)) {
            packet.at += ticks;
            n += 1;
        }
        n
    }

    pub(super) fn drop_random(&mut self) {
        if !self.net.is_empty() {
            let k = self.chooser.below(self.net.len() as u64) as usize;
            self.net.swap_remove(k);
        }
    }

    pub(super) fn duplicate_random(&mut self) {
        if !self.net.is_empty() {
            let k = self.chooser.below(self.net.len() as u64) as usize;
            let mut copy = self.net[k].clone();
            copy.at = self.now + 1 + self.chooser.below(self.max_delay.max(1));
            self.net.push(copy);
        }
    }
}

/// The names a write or read of `key` touches (0 is the cluster's).
pub fn names(key: u8) -> Names {
    let mut names = Names::new();
    let _ = names.push(NameId(key as u64 + 1));
    names
}
