//! Randomized whole-cluster simulation of the consensus core (see `consensus::sim`).
//!
//! - `cargo test` runs `KES_SIM_SEEDS` seeds (default 2,000) of 300 events each.
//! - `KES_SIM_SEED=N cargo test -p kes-core --test consensus_sim replay -- --nocapture` replays
//!   one seed with a trace.
//! - `cargo test -p kes-core --test consensus_sim -- --ignored` runs 100,000 seeds.

use kes_core::consensus::sim::{run_seed, Counters, Options};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs seeds `start..start + count` on all cores; panics with the first failing seed.
/// Returns the summed event counters.
fn run_seeds(start: u64, count: u64) -> Counters {
    let next = AtomicU64::new(start);
    let counters = Mutex::new(Counters::default());
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count || !failures.lock().unwrap().is_empty() {
                    return;
                }
                match run_seed(seed, &Options::for_seed(seed)) {
                    Ok(stats) => counters.lock().unwrap().add(&stats.counters),
                    Err(failure) => failures.lock().unwrap().push((seed, failure.to_string())),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    if let Some((seed, failure)) = failures.first() {
        let mut options = Options::for_seed(*seed);
        options.trace = true;
        let replay = run_seed(*seed, &options)
            .err()
            .map(|f| f.to_string())
            .unwrap_or_default();
        panic!(
            "seed {seed} failed ({options:?}): {failure}\n\nreplay: KES_SIM_SEED={seed} cargo test -p kes-core \
             --test consensus_sim replay -- --nocapture\n\ntrace:\n{replay}"
        );
    }
    counters.into_inner().unwrap()
}

#[test]
fn many_seeds() {
    let count = env("KES_SIM_SEEDS").unwrap_or(2_000);
    let started = std::time::Instant::now();
    let c = run_seeds(env("KES_SIM_START").unwrap_or(0), count);
    eprintln!("{count} seeds in {:?}: {c:?}", started.elapsed());
    // The schedule must keep exercising every mechanism.
    if count >= 1000 {
        assert!(
            c.elections > count && c.truncations > 0 && c.snapshots_installed > 0,
            "{c:?}"
        );
        assert!(
            c.config_commits > 0 && c.forced_commits > 0 && c.crashes_in_ready > 0,
            "{c:?}"
        );
        assert!(
            c.reads_waited > 0 && c.partitions > 0 && c.restarts > 0,
            "{c:?}"
        );
    }
}

#[test]
#[ignore = "100,000 seeds; run explicitly"]
fn hundred_thousand_seeds() {
    let c = run_seeds(1_000_000, 100_000);
    eprintln!("100000 seeds: {c:?}");
}

#[test]
fn replay() {
    let Some(seed) = env("KES_SIM_SEED") else {
        return;
    };
    let mut options = Options::for_seed(seed);
    options.trace = true;
    match run_seed(seed, &options) {
        Ok(stats) => eprintln!("seed {seed} ({options:?}) passes: {stats:?}"),
        Err(failure) => {
            for line in &failure.trace {
                eprintln!("{line}");
            }
            panic!(
                "seed {seed} ({options:?}) fails at event {}: {}",
                failure.event, failure.message
            )
        }
    }
}

#[test]
fn seeds_replay_exactly() {
    for seed in [1, 2, 3, 42] {
        let options = Options::for_seed(seed);
        let a = run_seed(seed, &options)
            .map(|s| format!("{s:?}"))
            .map_err(|f| f.to_string());
        let b = run_seed(seed, &options)
            .map(|s| format!("{s:?}"))
            .map_err(|f| f.to_string());
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
}
