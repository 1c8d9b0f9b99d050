//! Drives kes-node's cluster simulator (`kes_node::sim`: the shipped replica over real stores on
//! simulated disks and a faulty network) from fuzz input: the first two bytes pick the options
//! (cluster size, spares, lease, crashes, partitions, membership changes, fault rates), the
//! further bytes the schedule's decisions one byte each (which event, which frame, which node,
//! ...), then a generator seeded by the input takes over up to `FUZZ_STEPS` events; the liveness
//! phase follows. A failed check (one leader per term, applied agreement, durability after a
//! restart, liveness, linearizability) or a panic in the shell fails the run, with its trace.
#![no_main]
use kes_node::sim::run_fuzz_traced;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if run_fuzz_traced(data, false).is_err() {
        // Runs are deterministic: replay with a trace for the report (too slow to keep always).
        match run_fuzz_traced(data, true) {
            Err(failure) => panic!("cluster simulator check failed: {failure}"),
            Ok(_) => {
                panic!("cluster simulator check failed, but passed when replayed with a trace")
            }
        }
    }
});
