//! Which link a frame may take: a node is the one at its configured address, not whoever
//! claims its id.
//!
//! A request that makes its receiver act as node `id` of the configuration (`AppendEntries`,
//! a snapshot, `RequestVote`, `TimeoutNow`) travels only on the link this node dialed to
//! `id`'s address. Ids are claimed by the peer's Hello, and two live nodes can claim one: an
//! expand that shipped its snapshot and then failed leaves the prepared node running with
//! the id it was given, which nothing records, so the next expand gives that id to another
//! node. Had the claimant's own link carried the leader's entries for the real member, it
//! would have appended and acknowledged them as that member, the leader would have committed
//! them without the member, and the member (still a member, holding a read lease) would have
//! answered reads from a state without them (sim seed 1004951). Answers (`AppendResponse`,
//! `Vote`, `NotMember`, forwarded writes and their results) may also take a link the other
//! node opened, while the dialed one is down: a joining node does not dial the leader yet.
//! Only the node that asked acts on an answer (a leader, a candidate, a member that forwarded
//! a write), and a node left over from an expand never asked: it never was a member.
//!
//! So that a request always has a dialed link, this node dials every member of its latest
//! and committed configurations ([`Replica::peers`]), the node a pending shrink removes
//! included, at the address this node last saw it have (`Replica::book`).
use kes_core::consensus::{Message, NodeId};

use super::{Replica, Write};
use crate::store::Addresses;

/// The receiver of a frame as the links see it (see [`super::Links`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer<'a> {
    pub id: NodeId,
    /// `id`'s address, if this node knows it: the link dialed there carries the frame.
    pub at: Option<&'a str>,
    /// Whether only that link may (a request). Otherwise, while it is not open or for a peer
    /// without an address, an open link whose Hello claimed `id` may.
    pub only_dialed: bool,
}

impl Peer<'_> {
    /// `id` without an address: any link to it.
    pub fn any(id: NodeId) -> Peer<'static> {
        Peer {
            id,
            at: None,
            only_dialed: false,
        }
    }
}

/// Whether `message` makes its receiver act as a node of the configuration (see the module
/// docs); such a message goes only over the link dialed to the receiver's address.
pub(super) fn is_request<C>(message: &Message<C>) -> bool {
    match message {
        Message::AppendEntries { .. }
        | Message::InstallSnapshot { .. }
        | Message::RequestVote { .. }
        | Message::TimeoutNow { .. } => true,
        Message::AppendResponse { .. } | Message::Vote { .. } | Message::NotMember { .. } => false,
    }
}

impl<W: Write, R> Replica<W, R> {
    /// `to` as the receiver of a request: only at its address, if this node knows it (a
    /// member, or the node an expand prepares).
    pub(super) fn request_to(&self, to: NodeId) -> Peer<'_> {
        let peer = self.answer_to(to);
        Peer {
            only_dialed: peer.at.is_some(),
            ..peer
        }
    }

    /// `to` as the receiver of an answer: at its address if this node knows it, else (or
    /// while that link is down) over a link it opened.
    pub(super) fn answer_to(&self, to: NodeId) -> Peer<'_> {
        let expanding = self
            .expansion
            .as_ref()
            .filter(|e| e.id == to)
            .map(|e| e.endpoint.as_str());
        let known = || {
            self.book
                .get(&to)
                .map(String::as_str)
                .filter(|a| !a.is_empty())
        };
        Peer {
            id: to,
            at: expanding.or_else(known),
            only_dialed: false,
        }
    }

    /// Remembers the addresses in `addresses` (removed nodes keep the one they had: ids are
    /// never reused for members).
    pub(super) fn remember(&mut self, addresses: &Addresses) {
        for (id, a) in addresses.iter().filter(|(_, a)| !a.is_empty()) {
            self.book.insert(*id, a.clone());
        }
    }

    /// The address this node knows node `id` by (a removed member keeps its last one).
    pub fn address_of(&self, id: NodeId) -> Option<&str> {
        self.book.get(&id).map(String::as_str)
    }

    /// Sets the addresses of the newest configuration.
    pub(super) fn set_addresses(&mut self, addresses: Addresses) {
        self.remember(&addresses);
        self.addresses = addresses;
    }

    /// The other nodes this node keeps links to: the members of its latest and committed
    /// configurations (so the node a pending shrink removes too), at their addresses.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        let latest = self.node.config();
        let committed = self.node.committed_config().clone();
        self.book
            .iter()
            .filter(move |(id, _)| {
                **id != self.id && (latest.contains(**id) || committed.contains(**id))
            })
            .map(|(id, a)| (*id, a.as_str()))
    }
}
