//! What the event loop hands the requests it cannot answer at once, and where it learns that
//! they are decided. The loop knows only this trait: a stateful node's cluster implements it
//! in `cluster/backend.rs` (writes are replicated, reads may wait at the gate), an edge
//! server's key store workers in `edge/runtime.rs` (writes and cache misses go to the central
//! key store off the loop thread). The loop names no backend's types; backends name these.
use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Registry, Token};

use super::pump::Pump;
use crate::api::{App, Pending, Resume, Wait};
use crate::store::StoreError;

/// Tokens from here up are the backend's own event sources (peer links, wakers); the event
/// loop's listener, signals and client connections use the range below.
pub(crate) const BACKEND_TOKENS: usize = 1 << 30;

/// A client connection of the event loop: its token and a serial number, so that an answer
/// for a connection that went away never reaches a new connection that reuses the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnRef {
    pub token: Token,
    pub serial: u64,
}

/// A finished write: which connection waits for it, its request, and its outcome.
pub(crate) type Completion = (ConnRef, Box<Pending>, Result<(), StoreError>);

/// A connection whose TLS handshake chose the peer protocol ([`super::tls::PEER_ALPN`]),
/// handed to the backend as it is: its socket (still registered with the loop's poll under a
/// client token: the backend re-registers it) and its TLS pump, with the plaintext read so
/// far (at most about [`super::PRE_AUTH_INPUT`]: a stranger may send little before its Hello
/// is checked).
pub(crate) struct PeerStream {
    pub socket: TcpStream,
    pub pump: Pump,
    /// When the event loop handed it over (the peer's Hello is due within its timeout).
    pub handed_over: Instant,
}

/// The event loop's backend. Tokens from [`BACKEND_TOKENS`] up are the backend's.
pub(crate) trait Backend {
    /// Registers the backend's own event sources.
    fn register(&mut self, registry: &Registry) -> io::Result<()>;
    /// Connections the backend holds (peer links), counted against the connection limit.
    fn connections(&self) -> usize {
        0
    }
    /// How long the loop may sleep before [`Backend::round`] is due.
    fn next_timeout(&self) -> Duration;
    /// An event for one of the backend's tokens.
    fn on_event(&mut self, registry: &Registry, app: &App, token: Token);
    /// A connection that negotiated the peer protocol (dropped if of no use).
    fn adopt(&mut self, registry: &Registry, app: &App, stream: PeerStream);
    /// A client's write.
    fn propose(&mut self, app: &App, conn: ConnRef, pending: Box<Pending>);
    /// A request that waits for something.
    fn wait(&mut self, app: &App, conn: ConnRef, wait: Wait);
    /// Once per loop round, after the events: timers, persistence, state for the handlers.
    fn round(&mut self, registry: &Registry, app: &App);
    /// Persists what answering requests produced (before their answers go out).
    fn flush(&mut self, app: &App);
    /// Writes and waits decided since the last call.
    fn take_decided(&mut self) -> (Vec<Completion>, Vec<(ConnRef, Resume)>);
    /// The waker the backend registered, if any: mio allows one per poll, so a loop that
    /// needs one too (`net/workers.rs`) shares it; its events still go to the backend.
    fn waker(&self) -> Option<std::sync::Arc<mio::Waker>> {
        None
    }
    /// True while a shutting-down loop must keep running for others (`net/workers.rs`: the
    /// loop owning the backend serves the other loops' writes until they stop).
    fn busy(&self) -> bool {
        false
    }
}
