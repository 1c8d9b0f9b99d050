//! The cluster as the event loop's [`Backend`]: peer links are its event sources, client
//! writes are proposed, gated reads wait for the pending writes they read. This arrow points
//! down (cluster -> net): the event loop itself names no cluster type.
use std::io;
use std::time::Duration;

use mio::{Registry, Token};

use super::peer::Link;
use super::Cluster;
use crate::api::{App, Pending, Resume, Wait};
use crate::net::{Backend, Completion, ConnRef, PeerStream};

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

    fn adopt(&mut self, registry: &Registry, app: &App, stream: PeerStream) {
        let token = Cluster::adopt(self, registry, Link::accepted(stream));
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
