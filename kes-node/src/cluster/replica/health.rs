//! The replica's record of persistence failures (see `persist.rs` for what it does with it).
use super::clock::Millis;

/// How often a persisting failure is logged again while it lasts.
pub(super) const LOG_AGAIN: Millis = 30_000;

/// The replica's record of persistence failures.
#[derive(Default)]
pub(super) struct Health {
    /// Proposals stepped since the last successful persist: never stored, never sent.
    pub unflushed: Vec<u64>,
    /// The core must be rebuilt from disk before anything else is persisted or sent.
    pub needs_reset: bool,
    /// The last failure logged, and when (so that a lasting failure is not logged per step).
    pub logged: Option<(String, Millis)>,
}
