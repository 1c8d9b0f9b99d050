//! The state of snapshot streams: the one being sent to each node and the one being received
//! (see `snapshots.rs` for how they flow).
use kes_core::consensus::Envelope;
use zeroize::Zeroize;

use super::storage::Storage;
use crate::store::SnapshotReader;

/// A snapshot on its way to one node.
pub(super) struct Outgoing {
    pub stream: u64,
    pub reader: SnapshotReader,
    /// The core's `InstallSnapshot`, sent after the last chunk.
    pub envelope: Envelope<Vec<u8>>,
}

impl Outgoing {
    /// Chunks sent so far.
    pub(super) fn chunks(&self) -> u32 {
        self.reader.chunks
    }
}

/// The snapshot being received.
#[derive(Default)]
pub(super) struct Incoming {
    /// The stream and the next chunk expected.
    receiving: Option<(u64, u32)>,
    /// The chunk count of a complete stream whose `InstallSnapshot` is being stepped.
    complete: Option<u32>,
    /// True from a complete stream's step until its install is persisted: the stage must
    /// not change under it.
    installing: bool,
}

impl Incoming {
    /// Stages one chunk if it continues the current stream (or starts a new one).
    pub(super) fn chunk(&mut self, store: &dyn Storage, stream: u64, seq: u32, mut data: Vec<u8>) {
        let expected = match self.receiving {
            Some((s, next)) if s == stream => next,
            _ => 0,
        };
        if self.installing || seq != expected {
            self.receiving = None;
        } else {
            match store.stage_snapshot_chunk(seq, &data) {
                Ok(()) => self.receiving = Some((stream, seq + 1)),
                Err(err) => {
                    eprintln!("kes-node: cannot stage a snapshot chunk: {err}");
                    self.receiving = None;
                }
            }
        }
        data.zeroize();
    }

    /// True if `stream` arrived whole: its `InstallSnapshot` may be stepped.
    pub(super) fn end(&mut self, stream: u64, chunks: u32) -> bool {
        let whole = !self.installing && self.receiving == Some((stream, chunks));
        self.receiving = None;
        if whole {
            self.complete = Some(chunks);
        }
        whole
    }

    /// The chunk count for a step that installs the snapshot (see `batch.rs`).
    pub(super) fn take_complete(&mut self) -> Option<u32> {
        let chunks = self.complete.take();
        if chunks.is_some() {
            self.installing = true;
        }
        chunks
    }

    /// A complete stream's `InstallSnapshot` was stepped; if the core did not install it
    /// (a stale term, say), it is dropped.
    pub(super) fn stepped(&mut self) {
        self.complete = None;
    }

    /// The staged snapshot is installed.
    pub(super) fn persisted(&mut self) {
        self.installing = false;
    }
}
