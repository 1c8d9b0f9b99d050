//! Drives the consensus simulator from fuzz input: the first two bytes pick the cluster options
//! (size, lease, faults), every further byte one scheduling decision (which event, which message,
//! which node, ...). The simulator checks the invariants after every event, then liveness and
//! linearizability of the client history; any violation panics with a description.
#![no_main]
use kes_core::consensus::sim::run_fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = run_fuzz(data) {
        panic!("consensus invariant violated: {failure}");
    }
});
