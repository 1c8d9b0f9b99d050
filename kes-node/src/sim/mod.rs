//! A deterministic simulator of a whole kes-node cluster (feature `sim`), driving the code
//! that ships: each machine runs the cluster's sans-IO `Replica` (`cluster/replica`)
//! (group commit, forwarding to the leader, backlog, leaderless waits, hand-over, expand with
//! its snapshot, the read gate) over a real `Store` whose `kes.db` lives
//! on a simulated disk ([`disk::Disk`]: redb on memory that loses unsynced writes on a crash).
//! The machines talk over an in-memory network ([`net::Net`]) carrying production's peer
//! frames, which loses, duplicates, delays and reorders consensus messages, breaks links, and
//! partitions. Machines crash (losing memory and unsynced writes) and restart; operators expand,
//! shrink (the leader too: it hands over), force-shrink dead members and rebuild them empty to
//! join again. Clients write and read registers (policies of the default enclave) on every
//! node; reads go through the gate as the API's do. Every decision comes from one [`Chooser`]
//! (a seed, or fuzz bytes), so a seed replays exactly.
//!
//! Checked: after every event at most one leader per term; after every round that machines
//! that applied up to the same index hold the same state; after a restart that nothing applied
//! was lost; at the end that the client history is linearizable, and liveness: with faults
//! stopped and everyone connected, a write commits within a bound (after the operator removed
//! the members that are gone for good) and every member serves reads.
//!
//! `SIM_SEED=n cargo test -p kes-node --features sim --test sim replay` replays seed `n` and
//! prints its trace.
pub mod disk;
pub mod net;
pub mod node;
mod schedule;
pub mod world;

use kes_core::consensus::sim::{Chooser, Rng};
use kes_core::consensus::Params;

pub use net::Faults;
pub use world::World;

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes in the initial configuration (1–5).
    pub members: usize,
    /// Nodes in total (the others may join).
    pub total: usize,
    /// Scheduler events in the fault phase.
    pub steps: usize,
    pub read_lease: bool,
    pub crashes: bool,
    pub partitions: bool,
    /// Expands, shrinks, forced shrinks and rebuilds.
    pub membership: bool,
    /// The operator may also force out a dead member other than the one a pending change
    /// adds or removes (README allows it: "of a member that died meanwhile"); on for half the
    /// seeds.
    pub override_others: bool,
    pub faults: Faults,
    /// Keep a trace of events (returned with a failure, printed by a replay).
    pub trace: bool,
}

impl Options {
    /// The options seed `seed` runs with: every combination appears among consecutive seeds.
    pub fn for_seed(seed: u64) -> Options {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let members = 1 + (rng.next_u64() % 5) as usize;
        let total = (members + (rng.next_u64() % 3) as usize).min(5);
        Options {
            members,
            total,
            steps: 400,
            read_lease: rng.next_u64().is_multiple_of(3),
            crashes: !rng.next_u64().is_multiple_of(4),
            partitions: !rng.next_u64().is_multiple_of(3),
            membership: !rng.next_u64().is_multiple_of(3),
            // Not drawn from `rng`, so that the other options of a seed stay as they were.
            override_others: seed % 4 < 2,
            faults: Faults {
                drop_percent: rng.next_u64() % 10,
                dup_percent: rng.next_u64() % 5,
                max_delay: 5,
                long_delay_percent: rng.next_u64() % 4,
                long_delay: 1500,
            },
            trace: false,
        }
    }

    /// The consensus timing (ms): production's halved, against the shell's own timeouts
    /// (forwards 6 s, leaderless waits 5 s), so that a run sees many elections.
    pub fn params(&self) -> Params {
        Params {
            election_timeout: 500,
            heartbeat_interval: 50,
            read_timeout: 2500,
            write_timeout: 2500,
            read_lease: self.read_lease.then_some(1000),
            clock_drift: 100,
            pre_vote: true,
        }
    }
}

/// A failed run: what broke, at which event, and the trace if one was kept.
#[derive(Clone, Debug)]
pub struct Failure {
    pub event: usize,
    pub message: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {}: {}", self.event, self.message)?;
        let skip = self.trace.len().saturating_sub(300);
        for line in &self.trace[skip..] {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Event counts of a run (to see what a set of seeds covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, core::default::Default)]
pub struct Counters {
    pub elections: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub acked_writes: u64,
    pub failed_writes: u64,
    pub reads_served: u64,
    pub reads_gated: u64,
    pub frames_sent: u64,
    pub frames_lost: u64,
    pub expands: u64,
    pub shrinks: u64,
    pub forced_shrinks: u64,
    /// Forced shrinks of a member other than the one a pending change adds or removes, asked
    /// for while that change was pending (`Options::override_others`).
    pub overrides_of_others: u64,
    pub rebuilds: u64,
    /// Restarts the server refused (see `World::start`).
    pub refused_starts: u64,
    /// Offline recoveries after a majority was gone for good.
    pub recoveries: u64,
    /// Configurations (membership changes) seen committed and applied.
    pub configs_committed: u64,
    /// Forwarded writes and changes answered `503` because the leader's answer may be lost
    /// (a link with it broke, or another node leads), and those that waited out their timeout.
    pub answers_lost: u64,
    pub forwards_timed_out: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.elections += o.elections;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.partitions += o.partitions;
        self.acked_writes += o.acked_writes;
        self.failed_writes += o.failed_writes;
        self.reads_served += o.reads_served;
        self.reads_gated += o.reads_gated;
        self.frames_sent += o.frames_sent;
        self.frames_lost += o.frames_lost;
        self.expands += o.expands;
        self.shrinks += o.shrinks;
        self.forced_shrinks += o.forced_shrinks;
        self.overrides_of_others += o.overrides_of_others;
        self.rebuilds += o.rebuilds;
        self.refused_starts += o.refused_starts;
        self.recoveries += o.recoveries;
        self.configs_committed += o.configs_committed;
        self.answers_lost += o.answers_lost;
        self.forwards_timed_out += o.forwards_timed_out;
    }
}

/// Runs one seed with the default shell.
pub fn run_seed(seed: u64, options: &Options) -> Result<Counters, Failure> {
    run(Chooser::seeded(seed), options, false)
}

/// Runs a schedule steered by fuzz input: the first two bytes pick the options, the rest the
/// first decisions; then the liveness phase.
pub fn run_fuzz(data: &[u8]) -> Result<Counters, Failure> {
    run_fuzz_traced(data, false)
}

/// The fault-phase events of a fuzz run, whatever the input's length: a run costs about
/// 0.2 ms an event under cargo-fuzz (ASan and coverage) beside ~80 ms to build the cluster and
/// check liveness, so a run stays near 100 ms and 20 s of fuzzing still makes ~100 runs.
pub const FUZZ_STEPS: usize = 200;

/// `run_fuzz`, with a trace kept (and returned with a failure) if `trace`.
///
/// The fault phase always runs `FUZZ_STEPS` events: once the input's bytes are used up the
/// choices come from a generator seeded by them, so a short input is a whole random run
/// (libFuzzer starts with inputs of a few bytes) and longer ones steer more of it.
pub fn run_fuzz_traced(data: &[u8], trace: bool) -> Result<Counters, Failure> {
    let (head, rest) = data.split_at(data.len().min(2));
    let seed = head.iter().fold(0u64, |h, &b| (h << 8) | b as u64);
    let mut options = Options::for_seed(seed);
    options.steps = FUZZ_STEPS;
    options.trace = trace;
    // Not `fuzz` mode: the phase does not end when the bytes run out (see above).
    run(Chooser::from_bytes(rest), &options, false)
}

/// Runs one seed with a trace, which is returned whatever the outcome.
pub fn run_traced(seed: u64, options: &Options) -> (Result<Counters, Failure>, Vec<String>) {
    let mut options = options.clone();
    options.trace = true;
    let mut trace = Vec::new();
    let result = run_inner(Chooser::seeded(seed), &options, false, &mut trace);
    (result, trace)
}

/// Runs one schedule.
pub fn run(chooser: Chooser, options: &Options, fuzz: bool) -> Result<Counters, Failure> {
    run_inner(chooser, options, fuzz, &mut Vec::new())
}

fn run_inner(
    chooser: Chooser,
    options: &Options,
    fuzz: bool,
    trace: &mut Vec<String>,
) -> Result<Counters, Failure> {
    let mut world = match World::new(
        options.members,
        options.total,
        options.params(),
        chooser,
        options.faults,
    ) {
        Ok(w) => w,
        Err(message) => {
            return Err(Failure {
                event: 0,
                message,
                trace: Vec::new(),
            })
        }
    };
    if options.trace {
        world.trace = Some(Vec::new());
    }
    let fail = |world: &mut World, event: usize, message: String| Failure {
        event,
        message,
        trace: world.trace.take().unwrap_or_default(),
    };
    let mut event = 0;
    while event < options.steps && !(fuzz && world.chooser.exhausted()) {
        event += 1;
        if let Err(message) =
            schedule::random_event(&mut world, options).and_then(|()| world.check())
        {
            return Err(fail(&mut world, event, message));
        }
    }
    if let Err(message) = schedule::liveness(&mut world, options) {
        return Err(fail(&mut world, event, format!("liveness: {message}")));
    }
    if let Err(message) = world.check_history() {
        let key = message
            .find(" of k")
            .and_then(|at| message.as_bytes().get(at + 5))
            .map_or(0, |b| b - b'0');
        let mut failure = fail(&mut world, event, message);
        failure.trace.extend(world.history_of(key));
        return Err(failure);
    }
    *trace = world.trace.take().unwrap_or_default();
    let mut counters = world.counters;
    counters.frames_sent = world.net.sent;
    counters.frames_lost = world.net.lost;
    Ok(counters)
}
