//! What the event loop hands the requests it cannot answer at once, and where it learns that
//! they are decided: a stateful node's [`Cluster`] (writes are replicated, reads may wait at
//! the gate) or an edge server's key store workers ([`crate::edge::Runtime`]: writes and cache
//! misses go to the central key store off the loop thread).
use std::io;
use std::time::Duration;

use mio::{Registry, Token};

use crate::api::{App, Pending, Resume, Wait};
use crate::cluster::peer::Link;
use crate::cluster::{Cluster, Completion, ConnRef};

/// The event loop's backend. Tokens from [`crate::cluster::LINK_BASE`] up are the backend's.
pub trait Backend {
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
    /// A connection that negotiated the cluster's peer protocol (dropped if of no use).
    fn adopt(&mut self, registry: &Registry, app: &App, link: Link);
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
}

impl Backend for Cluster {
    fn register(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }

    fn connections(&self) -> usize {
        self.link_count()
    }

    fn next_timeout(&self) -> Duration {
        Cluster::next_timeout(self)
    }

    fn on_event(&mut self, registry: &Registry, app: &App, token: Token) {
        self.on_link_event(registry, &app.store, token);
    }

    fn adopt(&mut self, registry: &Registry, app: &App, link: Link) {
        let token = Cluster::adopt(self, registry, link);
        self.on_link_event(registry, &app.store, token);
    }

    fn propose(&mut self, app: &App, conn: ConnRef, pending: Box<Pending>) {
        Cluster::propose(self, &app.store, conn, pending);
    }

    fn wait(&mut self, app: &App, conn: ConnRef, wait: Wait) {
        match wait {
            Wait::Gate(names) => self.read(&app.store, conn, &names),
            // Keys are local here: handlers never fetch.
            Wait::Fetch(_) => self.released.push((
                conn,
                Err("this server has no key store to fetch from".into()),
            )),
        }
    }

    fn round(&mut self, registry: &Registry, app: &App) {
        use std::sync::atomic::Ordering;
        self.maintain(registry, &app.store);
        // One transaction (one fsync) for every step of this round: group commit.
        Cluster::flush(self, &app.store);
        self.publish(&app.cluster);
        app.gating.store(self.has_pending(), Ordering::Relaxed);
        app.member.store(self.is_member(), Ordering::Relaxed);
    }

    fn flush(&mut self, app: &App) {
        Cluster::flush(self, &app.store);
    }

    fn take_decided(&mut self) -> (Vec<Completion>, Vec<(ConnRef, Resume)>) {
        let writes = std::mem::take(&mut self.completions);
        let reads = std::mem::take(&mut self.released)
            .into_iter()
            .map(|(conn, decision)| {
                let resume = match decision {
                    Ok(()) => Resume::Granted,
                    Err(why) => Resume::Refused(why),
                };
                (conn, resume)
            })
            .collect();
        (writes, reads)
    }
}
