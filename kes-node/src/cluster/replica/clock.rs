//! The replica's only notion of time: a number the driver passes in with every event. The
//! shell counts from an `Instant` it took at start; the simulator from its own clock. Nothing
//! in the replica reads a clock, so a simulated run replays exactly.

/// Milliseconds since an epoch of the driver's choosing.
pub(crate) type Millis = u64;
