//! The consensus state machine (see `../shared/spec/cluster.md`). Filled in by issue 4.
