//! The shell's peer links: the TLS connections of the mio event loop (a [`Slab`] of
//! [`Link`]s), which this node dials to every other member and redials with backoff, and the
//! [`Links`] view of them that the replica sends through.
//!
//! Messages for a node go only over a link whose verified Hello named that node. A dialed
//! member that answers as another node (an empty node waiting to join, started at the address
//! of a member not removed yet) is refused: a node waiting to join takes its id from the first
//! message addressed to it, so it would otherwise become that member, empty. Only the link an
//! expand dials may open to a node waiting to join; the expand then claims it for the new id.
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kes_core::consensus::NodeId;
use kes_core::crypto::HmacKey;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::file;
use super::frame::{Failure, Frame, JOINING_ID};
use super::peer::{Link, LinkState};
use super::replica::{Dialed, Links, Peer};
use crate::api::view::LinkView;

/// Tokens of peer links start here (the event loop leaves this range to its backend).
const LINK_BASE: usize = crate::net::BACKEND_TOKENS;

/// Delay before redialing a peer whose link failed.
const REDIAL: Duration = Duration::from_millis(250);
/// The longest delay between attempts: redials back off exponentially up to this, so a node
/// that is down for long costs little, and one that returns is found again within it.
const REDIAL_MAX: Duration = Duration::from_secs(2);

/// The most inbound links waiting for their Hello. A client needs nothing but a self-signed
/// certificate to get a link this far, and a link no longer holds an HTTP connection slot once
/// the event loop handed it over; so a newcomer beyond this closes the oldest such link. A real
/// peer sends its Hello right after the handshake, so it waits here for a round trip at most.
const MAX_STRANGERS: usize = 32;

/// Every peer link of this node, inbound and outbound.
pub(super) struct Net {
    links: Slab<Link>,
    /// The link this node dialed, per peer.
    outbound: BTreeMap<NodeId, usize>,
    redial_at: BTreeMap<NodeId, Instant>,
    /// The current backoff per peer (absent: [`REDIAL`]); reset when a dialed link opens.
    redial_delay: BTreeMap<NodeId, Duration>,
    /// Why the last outbound link to a node closed before it opened (cleared when one opens).
    link_failures: BTreeMap<NodeId, Failure>,
    /// Ids dialed by an expand ([`Links::dial`]): their link may open to a node waiting to
    /// join. Forgotten when that link goes.
    expanding: BTreeSet<NodeId>,
    /// Bumped whenever a link opens or closes, so that `publish` refreshes the view.
    pub epoch: u64,
    /// How many links whose Hello named a peer have closed, per peer ([`Links::breaks`]).
    breaks: BTreeMap<NodeId, u64>,
    /// Addresses to dial instead of the configured ones (`KES_PEER_DIAL`, for tests).
    dial: BTreeMap<NodeId, String>,
    secret: HmacKey,
    client_tls: Arc<rustls::ClientConfig>,
}

impl Net {
    pub(super) fn new(secret: HmacKey, client_tls: Arc<rustls::ClientConfig>) -> Net {
        Net {
            links: Slab::new(),
            outbound: BTreeMap::new(),
            redial_at: BTreeMap::new(),
            redial_delay: BTreeMap::new(),
            link_failures: BTreeMap::new(),
            expanding: BTreeSet::new(),
            epoch: 0,
            breaks: BTreeMap::new(),
            dial: file::dial_overrides(),
            secret,
            client_tls,
        }
    }

    /// Links open now (inbound and outbound).
    pub(super) fn count(&self) -> usize {
        self.links.len()
    }

    /// The replica's view of the links; `registry` is needed to dial, close and pace.
    pub(super) fn io<'a>(&'a mut self, registry: Option<&'a Registry>) -> PeerIo<'a> {
        PeerIo {
            net: self,
            registry,
        }
    }

    /// Takes over an inbound peer connection accepted by the HTTP listener; closes the oldest
    /// inbound link still waiting for its Hello if [`MAX_STRANGERS`] wait already.
    pub(super) fn adopt(&mut self, registry: &Registry, link: Link) -> Token {
        let strangers = self
            .links
            .iter()
            .filter(|(_, l)| !l.dialer && l.state == LinkState::Opening);
        if strangers.clone().count() >= MAX_STRANGERS {
            if let Some(oldest) = strangers.min_by_key(|(_, l)| l.opened).map(|(k, _)| k) {
                self.links[oldest].evict();
                self.update(registry, Token(LINK_BASE + oldest));
            }
        }
        let entry = self.links.vacant_entry();
        let key = entry.key();
        let link = entry.insert(link);
        let _ = registry.reregister(
            &mut link.socket,
            Token(LINK_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        );
        Token(LINK_BASE + key)
    }

    /// Readiness of a link: reads what arrived into `frames`; returns the peer it comes from
    /// (`None` until its Hello verified, or if the link is gone).
    pub(super) fn on_ready(
        &mut self,
        me: NodeId,
        token: Token,
        frames: &mut Vec<Frame>,
    ) -> Option<NodeId> {
        let key = token.0 - LINK_BASE;
        let link = self.links.get_mut(key)?;
        let was = link.state;
        link.on_ready(me, &self.secret, frames);
        if link.dialer && was == LinkState::Opening && link.state == LinkState::Open {
            let dialed = self.outbound.iter().find(|(_, k)| **k == key);
            if let (Some((&id, _)), Some(peer)) = (dialed, link.peer) {
                if peer != id && !self.expanding.contains(&id) {
                    link.refuse(not_the_node_dialed(id, peer));
                    frames.clear();
                    self.epoch += 1;
                    return None;
                }
            }
        }
        if let (true, LinkState::Open, Some(peer)) = (link.dialer, link.state, link.peer) {
            self.redial_delay.remove(&peer);
        }
        if was != link.state {
            self.epoch += 1;
        }
        link.peer
    }

    /// Drops a closed link, or updates what the event loop watches for on it.
    pub(super) fn update(&mut self, registry: &Registry, token: Token) {
        let key = token.0 - LINK_BASE;
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if link.state == LinkState::Closed {
            let mut link = self.links.remove(key);
            let _ = registry.deregister(&mut link.socket);
            let dialed = self
                .outbound
                .iter()
                .find(|(_, k)| **k == key)
                .map(|(id, _)| *id);
            if let (Some(id), Some(failure)) = (dialed, link.failure.take()) {
                self.link_failures.insert(id, failure);
            }
            if let Some(id) = dialed {
                self.expanding.remove(&id);
            }
            if let Some(peer) = link.peer {
                *self.breaks.entry(peer).or_default() += 1;
            }
            self.outbound.retain(|_, k| *k != key);
            self.epoch += 1;
            return;
        }
        let interest = if link.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let _ = registry.reregister(&mut link.socket, Token(LINK_BASE + key), interest);
    }

    /// Keeps an outbound link to every peer (redialing with backoff) and drops links that did
    /// not authenticate in time (see `peer::Link::overdue`).
    pub(super) fn maintain<'a>(
        &mut self,
        registry: &Registry,
        peers: impl Iterator<Item = (NodeId, &'a str)>,
    ) {
        let now = Instant::now();
        for (id, addr) in peers {
            if self.outbound.contains_key(&id) || self.redial_at.get(&id).is_some_and(|t| now < *t)
            {
                continue;
            }
            let delay = self.redial_delay.get(&id).copied().unwrap_or(REDIAL);
            self.redial_at.insert(id, now + delay);
            self.redial_delay.insert(id, (delay * 2).min(REDIAL_MAX));
            let addr = self
                .dial
                .get(&id)
                .cloned()
                .unwrap_or_else(|| addr.to_owned());
            // Unreachable peers are normal; the core reports them on writes.
            let _ = self.dial(registry, id, &addr, now);
        }
        let stale: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| l.overdue(now))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            if let Some(l) = self.links.get_mut(key) {
                l.expire();
            }
            self.update(registry, Token(LINK_BASE + key));
        }
    }

    fn dial(
        &mut self,
        registry: &Registry,
        id: NodeId,
        addr: &str,
        now: Instant,
    ) -> io::Result<()> {
        let sock = file::resolve(addr).ok_or_else(|| io::Error::other("unresolvable"))?;
        let mut socket = mio::net::TcpStream::connect(sock)?;
        let _ = socket.set_nodelay(true);
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']'))
            .unwrap_or("localhost");
        let name =
            rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
        let mut tls = rustls::ClientConnection::new(self.client_tls.clone(), name)
            .map_err(io::Error::other)?;
        tls.set_buffer_limit(None);
        let entry = self.links.vacant_entry();
        let key = entry.key();
        registry.register(
            &mut socket,
            Token(LINK_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Link::new(
            socket,
            rustls::Connection::Client(tls),
            true,
            Vec::new(),
            now,
        ));
        self.outbound.insert(id, key);
        self.epoch += 1;
        Ok(())
    }

    /// The open link that carries frames to `to`: the outbound one, or else one the peer
    /// opened to us (a joining node does not know the leader's address yet), unless `to` is
    /// `only_dialed` (a request to a member: whoever else claims its id must never get it,
    /// see `replica/route.rs`); either only if its Hello named `to` (or an expand claimed it
    /// for `to`).
    fn link_to(&self, to: Peer<'_>) -> Option<usize> {
        if let Some(&key) = self.outbound.get(&to.id) {
            if self
                .links
                .get(key)
                .is_some_and(|l| l.state == LinkState::Open && l.peer == Some(to.id))
            {
                return Some(key);
            }
        }
        if to.only_dialed {
            return None;
        }
        self.links
            .iter()
            .find(|(_, l)| !l.dialer && l.peer == Some(to.id) && l.state == LinkState::Open)
            .map(|(key, _)| key)
    }

    /// The link to `id` as `cluster info` shows it.
    pub(super) fn view(&self, id: NodeId) -> LinkView {
        let view = |state: &str, error: Option<&Failure>| LinkView {
            state: state.into(),
            error: error.map(Failure::to_string),
        };
        let link = self.outbound.get(&id).and_then(|k| self.links.get(*k));
        let failure = self.link_failures.get(&id);
        match (link.map(|l| l.state), failure) {
            (Some(LinkState::Open), _) => view("connected", None),
            (Some(_), failure) => view("dialing", failure),
            (None, Some(f @ Failure::Unreachable(_))) => view("unreachable", Some(f)),
            (None, Some(f)) => view("refused", Some(f)),
            (None, None) => view("dialing", None),
        }
    }
}

/// Why a link dialed to member `id` is refused when the node that answered is `peer`.
fn not_the_node_dialed(id: NodeId, peer: NodeId) -> String {
    if peer == JOINING_ID {
        format!(
            "the node at its address is not node {id} but a node waiting to join (started \
             with --join): if it replaces node {id}, remove node {id} with `cluster rm --force`, \
             then add it with `cluster add`"
        )
    } else {
        format!("the node at its address is not node {id} but node {peer}")
    }
}

/// The links as the replica uses them (see [`Links`]).
pub(super) struct PeerIo<'a> {
    net: &'a mut Net,
    registry: Option<&'a Registry>,
}

impl Links for PeerIo<'_> {
    fn send(&mut self, to: Peer<'_>, frame: &Frame) -> bool {
        match self.net.link_to(to) {
            Some(key) => self.net.links[key].send(frame),
            None => false,
        }
    }

    fn open(&self, to: Peer<'_>) -> bool {
        self.net.link_to(to).is_some()
    }

    fn breaks(&self, to: Peer<'_>) -> u64 {
        self.net.breaks.get(&to.id).copied().unwrap_or(0)
    }

    fn busy(&self, to: Peer<'_>) -> bool {
        self.net
            .link_to(to)
            .is_none_or(|key| self.net.links[key].wants_write())
    }

    fn watch_writable(&mut self, to: Peer<'_>) {
        if let (Some(registry), Some(key)) = (self.registry, self.net.link_to(to)) {
            self.net.update(registry, Token(LINK_BASE + key));
        }
    }

    fn dial(&mut self, to: NodeId, addr: &str) -> Result<(), String> {
        let Some(registry) = self.registry else {
            return Err("no event loop to dial from".into());
        };
        let addr = self
            .net
            .dial
            .get(&to)
            .cloned()
            .unwrap_or_else(|| addr.to_owned());
        self.net
            .dial(registry, to, &addr, Instant::now())
            .map_err(|e| e.to_string())?;
        self.net.expanding.insert(to);
        Ok(())
    }

    fn dialed(&self, to: Peer<'_>) -> Dialed {
        let link = self
            .net
            .outbound
            .get(&to.id)
            .and_then(|k| self.net.links.get(*k));
        match link {
            Some(l) if l.state == LinkState::Open => match l.peer {
                Some(p) => Dialed::Open(p),
                None => Dialed::Opening,
            },
            Some(l) if l.state == LinkState::Opening => Dialed::Opening,
            Some(l) => Dialed::Closed(l.failure.clone()),
            None => Dialed::Closed(self.net.link_failures.get(&to.id).cloned()),
        }
    }

    fn claim(&mut self, to: NodeId) {
        if let Some(key) = self.net.outbound.get(&to).copied() {
            self.net.links[key].peer = Some(to);
        }
    }

    fn close(&mut self, to: NodeId) {
        self.net.expanding.remove(&to);
        if let Some(key) = self.net.outbound.remove(&to) {
            if let Some(link) = self.net.links.get_mut(key) {
                link.state = LinkState::Closed;
            }
            if let Some(registry) = self.registry {
                // `outbound` no longer names it: drop it like any closed link.
                self.net.update(registry, Token(LINK_BASE + key));
            }
        }
    }
}
