//! The deterministic simulator of kes-node's cluster shell (`kes_node::sim`, feature `sim`):
//! many seeds of faults, crashes and partitions, each checked for safety, linearizability and
//! liveness.
//!
//! - `SIM_SEEDS=n` runs `n` seeds instead of the default;
//! - `SIM_SEED=n cargo test -p kes-node --features sim --test sim replay -- --nocapture`
//!   replays seed `n` and prints its trace;
//! - `cargo test -p kes-node --features sim --test sim -- --ignored` runs the long run.
use std::time::Instant;

use kes_node::sim::{run_seed, Counters, Options};

/// Seeds every `cargo test` runs.
const SEEDS: u64 = 200;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `seeds` on every core; panics with the first failure and how to replay it.
fn run_many(seeds: std::ops::Range<u64>) -> Counters {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let start = Instant::now();
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = seeds.clone();
                s.spawn(move || {
                    let mut total = Counters::default();
                    for seed in seeds.filter(|seed| seed % threads == t) {
                        match run_seed(seed, &Options::for_seed(seed)) {
                            Ok(c) => total.add(&c),
                            Err(failure) => panic!(
                                "seed {seed} failed: {}\nreplay: SIM_SEED={seed} cargo test -p \
                                 kes-node --features sim --test sim replay -- --nocapture",
                                failure.message
                            ),
                        }
                    }
                    total
                })
            })
            .collect();
        let mut total = Counters::default();
        for h in handles {
            total.add(&h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        total
    });
    eprintln!(
        "{} seeds in {:.1?}: {total:?}",
        seeds.end - seeds.start,
        start.elapsed()
    );
    total
}

#[test]
fn seeds() {
    let n = env_u64("SIM_SEEDS").unwrap_or(SEEDS);
    let total = run_many(0..n);
    // The seeds exercise what they claim to.
    assert!(total.elections > n, "{total:?}");
    assert!(
        total.crashes > 0 && total.restarts > 0 && total.partitions > 0,
        "{total:?}"
    );
    assert!(
        total.acked_writes > 0 && total.reads_served > 0 && total.reads_gated > 0,
        "{total:?}"
    );
    assert!(total.frames_lost > 0, "{total:?}");
}

#[test]
#[ignore = "long: 10,000 seeds"]
fn long_run() {
    let from = env_u64("SIM_FROM").unwrap_or(1_000_000);
    run_many(from..from + env_u64("SIM_SEEDS").unwrap_or(10_000));
}

/// Replays `SIM_SEED` with a trace (does nothing without it).
#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let mut options = Options::for_seed(seed);
    options.trace = true;
    eprintln!("seed {seed}: {options:?}");
    match kes_node::sim::run_traced(seed, &options) {
        (Ok(counters), trace) => {
            for line in trace {
                eprintln!("{line}");
            }
            eprintln!("seed {seed} passed: {counters:?}");
        }
        (Err(failure), _) => panic!("seed {seed} failed at {failure}"),
    }
}
