//! Snapshot transfer between nodes, streamed in chunks so that neither side holds the
//! database in memory (the chunk format is in `store/snapshot.rs`).
//!
//! The sender reads from one consistent view and writes a chunk only when the link has sent
//! everything before it, so at most one chunk per receiver is in memory. The receiver stages
//! chunks in `kes.db`; the `InstallSnapshot` of the core travels last, in `SnapshotEnd`, and
//! only a stream that arrived whole, in order, is installed. Any gap (a link that dropped, a
//! leader that changed) just abandons the stream: the leader's core asks for a snapshot again
//! as long as the receiver lacks entries, and a new stream starts.
//!
//! While a stream to a node runs, further snapshot requests for it are ignored: the core keeps
//! asking (every rejected append does) and restarting would never finish a large snapshot.
//! That is safe because a stream is labeled with the applied point of its own view (not the
//! core's commit index when it asked: see `start_snapshot`), and what commits meanwhile reaches
//! the receiver as entries after that point.
use kes_core::consensus::{Envelope, Message, NodeId};
use zeroize::Zeroize;

use super::storage::Storage;
use super::stream::Outgoing;
use super::{Links, Replica, Write};
use crate::cluster::frame::Frame;
use crate::store::CHUNK_BYTES;

impl<W: Write, R> Replica<W, R> {
    /// Starts streaming a snapshot for the core's `InstallSnapshot` in `env`, unless one to
    /// that node is under way.
    pub(super) fn start_snapshot(&mut self, store: &dyn Storage, env: &Envelope<Vec<u8>>) {
        if self.outgoing.contains_key(&env.to) {
            return;
        }
        match store.snapshot_reader() {
            Ok(reader) => {
                let stream = self.rng.next();
                let mut envelope = env.clone();
                // The snapshot is labeled with the point its view holds, which can be past the
                // core's commit: with group commit, the step that asked for it was persisted
                // together with later ones, whose entries are applied too. Labeled with the
                // core's older index, the receiver recorded a newer state at an older applied
                // index (and applied those entries again on top of it).
                if let (Message::InstallSnapshot { meta, .. }, Ok(Some(applied))) =
                    (&mut envelope.message, reader.applied())
                {
                    *meta = applied;
                }
                self.outgoing.insert(
                    env.to,
                    Outgoing {
                        stream,
                        reader,
                        envelope,
                    },
                );
            }
            Err(err) => eprintln!(
                "kes-node: cannot produce a snapshot for node {}: {err}",
                env.to
            ),
        }
    }

    /// The link to `to` drained: send more of the snapshot for it, if one is being sent.
    pub fn on_writable(&mut self, links: &mut dyn Links, to: NodeId) {
        self.pump_snapshot(links, to);
    }

    /// Sends the next chunks of the snapshot for `to` while its link keeps up.
    pub(super) fn pump_snapshot(&mut self, links: &mut dyn Links, to: NodeId) {
        let Some(mut out) = self.outgoing.remove(&to) else {
            return;
        };
        // A snapshot makes its receiver a member: only the link dialed to `to` carries it.
        let peer = self.request_to(to);
        if !links.open(peer) {
            return; // the link is gone: abandon the stream
        }
        while !links.busy(peer) {
            let frame = match out.reader.next_chunk(CHUNK_BYTES) {
                Ok(Some(chunk)) => Frame::SnapshotChunk {
                    stream: out.stream,
                    seq: out.reader.chunks - 1,
                    data: chunk.to_vec(),
                },
                Ok(None) => {
                    let frame = Frame::SnapshotEnd {
                        stream: out.stream,
                        chunks: out.reader.chunks,
                        envelope: Box::new(out.envelope),
                    };
                    links.send(peer, &frame);
                    links.watch_writable(peer);
                    return;
                }
                Err(err) => {
                    eprintln!("kes-node: cannot read a snapshot for node {to}: {err}");
                    return;
                }
            };
            let sent = links.send(peer, &frame);
            if let Frame::SnapshotChunk { mut data, .. } = frame {
                data.zeroize();
            }
            if !sent {
                return;
            }
        }
        links.watch_writable(peer);
        self.outgoing.insert(to, out);
    }
}
