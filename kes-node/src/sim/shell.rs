//! What the simulator drives: one node's shell, fed with events and time, over its `Store`.
//!
//! [`Shell`] is the narrow surface the simulator needs from a node: the events an event loop
//! feeds it (a peer's frame, a link that came up or went down, a client's write or gated
//! read, the end of a loop round) with the time and randomness passed in, and what it decided
//! (finished writes, released reads). Frames leave through [`Links`], which the simulator
//! implements with its in-memory network.
use kes_core::consensus::{Index, NodeId, Params, Role, Term};

use crate::cluster::peer::Frame;
use crate::command::Command;
use crate::item::ItemName;
use crate::store::{Store, StoreError};

/// A client request's handle, chosen by the simulator.
pub type Waiter = u64;

/// The peer links of one node.
pub trait Links {
    /// Sends a frame to `to`; false if there is no open link to it.
    fn send(&mut self, to: NodeId, frame: &Frame) -> bool;
}

/// A node's state as the checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    /// Reads must pass the gate (the API asks [`Shell::read`] before serving them).
    pub gating: bool,
    /// The node may serve clients.
    pub member: bool,
    /// The members of its latest configuration.
    pub members: Vec<NodeId>,
}

/// One node's shell as the simulator drives it.
pub trait Shell: Sized {
    /// Starts (or restarts after a crash) from what `store` holds. `id` is the node's id in
    /// the initial configuration, or `None` for a node waiting to join.
    fn boot(
        store: &Store,
        id: Option<NodeId>,
        params: Params,
        now: u64,
        random: u64,
    ) -> Result<Self, String>;
    /// A frame from peer `from`.
    fn on_frame(
        &mut self,
        store: &Store,
        links: &mut dyn Links,
        now: u64,
        from: NodeId,
        frame: Frame,
    );
    /// The link to `peer` opened (`up`) or closed.
    fn on_link(&mut self, store: &Store, links: &mut dyn Links, now: u64, peer: NodeId, up: bool);
    /// A client's write.
    fn propose(
        &mut self,
        store: &Store,
        links: &mut dyn Links,
        now: u64,
        waiter: Waiter,
        cmd: Command,
    );
    /// A client's read of `names` that must pass the gate.
    fn read(
        &mut self,
        store: &Store,
        links: &mut dyn Links,
        now: u64,
        waiter: Waiter,
        names: &[ItemName],
    );
    /// The end of an event-loop round: timers, then one durable transaction for every step
    /// since the last round (group commit), then messages and answers.
    fn round(&mut self, store: &Store, links: &mut dyn Links, now: u64, random: u64);
    /// When the shell wants its next round at the latest (its own clock).
    fn next_deadline(&self) -> u64;
    /// Writes and reads decided since the last call.
    fn take_decided(&mut self) -> Decided;
    fn view(&self) -> View;
}

/// What a shell decided: finished writes and released (or refused) reads.
#[derive(Debug, Default)]
pub struct Decided {
    pub writes: Vec<(Waiter, Result<(), StoreError>)>,
    pub reads: Vec<(Waiter, Result<(), String>)>,
}
