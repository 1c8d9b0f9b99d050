//! A deterministic cluster simulator for the consensus core (feature `sim`).
//!
//! [`Cluster`] holds 1–5 [`Node`](super::Node)s with simulated disks, a network that loses,
//! duplicates, delays and reorders messages, partitions, crashes (also in the middle of carrying
//! out a step's output), restarts, membership changes and clients writing and reading on every
//! node. Every decision comes from one [`Chooser`] (a seeded generator or fuzz bytes), so a seed
//! replays exactly. After every event [`Cluster::check`] asserts the safety invariants; at the
//! end the client history is checked for linearizability and liveness is checked: with faults stopped
//! and everyone connected, a leader emerges and a write commits within a bounded time, and every
//! member then serves reads.
//!
//! ```
//! # use kes_core::consensus::sim::{run_seed, Options};
//! run_seed(7, &Options::for_seed(7)).expect("seed 7 passes");
//! ```

mod cluster;
mod invariants;
pub mod linearizability;
mod rng;
mod schedule;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use cluster::{names, Cluster, Cmd, Disk, SimNode, CONFIG_CMD};
pub use rng::{Chooser, Rng};

use super::Params;
use schedule::{liveness, random_event};

/// What a simulation run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes in the initial configuration (1–5).
    pub members: usize,
    /// Nodes in total (the others may join).
    pub total: usize,
    /// Scheduler events in the fault phase.
    pub steps: usize,
    /// Run with `Params::read_lease` on.
    pub read_lease: bool,
    /// Crash and restart nodes (also in the middle of carrying out a step's output).
    pub crashes: bool,
    /// Partition the network.
    pub partitions: bool,
    /// Change the membership (add, remove, force-remove nodes).
    pub membership: bool,
    /// Percent of messages lost at sending.
    pub drop_percent: u64,
    /// Percent of messages duplicated at sending.
    pub dup_percent: u64,
    /// Percent of messages delayed far longer than usual.
    pub long_delay_percent: u64,
    /// Pre-votes before elections (on in every seed: without them a removed or cut-off node can
    /// keep the cluster electing forever, which the liveness check would report).
    pub pre_vote: bool,
    /// Keep a trace of events (returned with a failure).
    pub trace: bool,
}

impl Options {
    /// The options seed `seed` runs with: every combination appears among consecutive seeds.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let members = 1 + (rng.next_u64() % 5) as usize;
        let total = (members + (rng.next_u64() % 2) as usize).min(5);
        Options {
            members,
            total,
            steps: 300,
            read_lease: matches!(rng.next_u64() % 3, 0),
            crashes: !matches!(rng.next_u64() % 4, 0),
            partitions: !matches!(rng.next_u64() % 3, 0),
            membership: matches!(rng.next_u64() % 2, 0),
            drop_percent: rng.next_u64() % 10,
            dup_percent: rng.next_u64() % 5,
            long_delay_percent: rng.next_u64() % 4,
            pre_vote: true,
            trace: false,
        }
    }

    /// The core's timing parameters for these options (in simulated ticks).
    pub fn params(&self) -> Params {
        Params {
            election_timeout: 10,
            heartbeat_interval: 3,
            read_timeout: 40,
            write_timeout: 40,
            read_lease: if self.read_lease { Some(12) } else { None },
            clock_drift: 1,
            pre_vote: self.pre_vote,
        }
    }
}

/// A failed run: what broke, at which event, and the trace if one was kept.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The number of the event after which a check failed.
    pub event: usize,
    /// What broke.
    pub message: String,
    /// The events up to the failure (empty unless `Options::trace`).
    pub trace: Vec<String>,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "event {}: {}", self.event, self.message)?;
        let skip = self.trace.len().saturating_sub(200);
        for line in &self.trace[skip..] {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// What a successful run saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Entries committed.
    pub committed: usize,
    /// Writes acknowledged to clients.
    pub acked_writes: usize,
    /// Reads answered.
    pub reads: usize,
    /// Simulated time at the end.
    pub ticks: u64,
    /// How often interesting things happened (to see what a set of seeds covers).
    pub counters: Counters,
}

/// Event counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Elections won.
    pub elections: u64,
    /// Log truncations (uncommitted entries replaced).
    pub truncations: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
    /// Configuration entries committed.
    pub config_commits: u64,
    /// Forced shrinks committed.
    pub forced_commits: u64,
    /// Pending changes stuck on a down node that a forced removal overrode.
    pub overrides: u64,
    /// Crashes.
    pub crashes: u64,
    /// Crashes in the middle of carrying out a step's output.
    pub crashes_in_ready: u64,
    /// Restarts of crashed nodes.
    pub restarts: u64,
    /// Partitions made.
    pub partitions: u64,
    /// Reads that had to wait before they were answered.
    pub reads_waited: u64,
    /// Writes acknowledged to clients.
    pub acked_writes: u64,
    /// Reads answered with a value.
    pub reads_served: u64,
}

impl Counters {
    /// Adds another run's counts to these.
    pub fn add(&mut self, o: &Counters) {
        self.elections += o.elections;
        self.truncations += o.truncations;
        self.snapshots_installed += o.snapshots_installed;
        self.config_commits += o.config_commits;
        self.forced_commits += o.forced_commits;
        self.overrides += o.overrides;
        self.crashes += o.crashes;
        self.crashes_in_ready += o.crashes_in_ready;
        self.restarts += o.restarts;
        self.partitions += o.partitions;
        self.reads_waited += o.reads_waited;
        self.acked_writes += o.acked_writes;
        self.reads_served += o.reads_served;
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, options: &Options) -> Result<Stats, Failure> {
    run(Chooser::seeded(seed), options, false)
}

/// Runs a schedule steered by fuzz input: the first bytes pick the options, the rest the events.
pub fn run_fuzz(data: &[u8]) -> Result<Stats, Failure> {
    run_fuzz_traced(data, false)
}

/// [`run_fuzz`], optionally keeping a trace (to replay a fuzz crash).
pub fn run_fuzz_traced(data: &[u8], trace: bool) -> Result<Stats, Failure> {
    let (head, rest) = data.split_at(data.len().min(2));
    let seed = head.iter().fold(0u64, |h, &b| (h << 8) | b as u64);
    let mut options = Options::for_seed(seed);
    options.steps = 2000;
    options.trace = trace;
    run(Chooser::from_bytes(rest), &options, true)
}

fn run(chooser: Chooser, options: &Options, fuzz: bool) -> Result<Stats, Failure> {
    let mut cluster = Cluster::new(options.members, options.total, options.params(), chooser);
    cluster.drop_percent = options.drop_percent;
    cluster.dup_percent = options.dup_percent;
    cluster.max_delay = 4;
    cluster.long_delay_percent = options.long_delay_percent;
    cluster.crash_in_ready_percent = if options.crashes { 1 } else { 0 };
    if options.trace {
        cluster.trace = Some(Vec::new());
    }
    let mut event = 0;
    let fail = |cluster: &mut Cluster, event: usize, message: String| Failure {
        event,
        message,
        trace: cluster.trace.take().unwrap_or_default(),
    };
    while event < options.steps && !(fuzz && cluster.chooser.exhausted()) {
        event += 1;
        if let Err(message) = random_event(&mut cluster, options).and_then(|()| cluster.check()) {
            return Err(fail(&mut cluster, event, message));
        }
    }
    if let Err(message) = liveness(&mut cluster, options) {
        return Err(fail(&mut cluster, event, format!("liveness: {message}")));
    }
    if let Err(message) = cluster.check_history() {
        let key = message
            .as_bytes()
            .get(message.find('k').unwrap_or(0) + 1)
            .map_or(0, |b| b - b'0');
        let mut failure = fail(&mut cluster, event, message);
        failure.trace.extend(cluster.history_of(key));
        return Err(failure);
    }
    let mut counters = cluster.counters;
    counters.acked_writes = cluster.acked.len() as u64;
    counters.reads_served = cluster
        .history
        .iter()
        .flatten()
        .filter(|o| matches!(o.kind, linearizability::Kind::Read(_)) && o.ret.is_some())
        .count() as u64;
    Ok(Stats {
        counters,
        committed: cluster.committed.len(),
        acked_writes: cluster.acked.len(),
        reads: cluster
            .history
            .iter()
            .flatten()
            .filter(|o| matches!(o.kind, linearizability::Kind::Read(_)))
            .count(),
        ticks: cluster.now,
    })
}
