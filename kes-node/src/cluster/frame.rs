//! What peer links carry (frames) and how a link fails to open: plain data, shared by the
//! replica (which decides what to send) and the TLS pump in `peer.rs` (which moves the bytes).
use kes_core::consensus::{Envelope, NodeId};
use serde::{Deserialize, Serialize};

/// The id a node waiting to be added goes by (`--join`): what its Hello says until it learned
/// its own, and what it starts as (no real node has it). Here, below both `.cluster.json`
/// (`file.rs`) and the replica, which both use it.
pub(crate) const JOINING_ID: NodeId = NodeId::MAX;

/// One frame on a peer link.
#[derive(Serialize, Deserialize, Debug)]
pub enum Frame {
    /// First frame in both directions: who I am, proven with the cluster secret.
    Hello { node: NodeId, mac: [u8; 32] },
    /// A consensus message (boxed: it is much larger than the other frames).
    Raft(Box<Envelope<Vec<u8>>>),
    /// Chunk `seq` (from 0) of snapshot `stream` for a joining node (see
    /// `store/snapshot.rs`; it carries enclave keys: zeroized after use).
    SnapshotChunk {
        stream: u64,
        seq: u32,
        data: Vec<u8>,
    },
    /// The end of snapshot `stream`: how many chunks it had, and its `InstallSnapshot`.
    SnapshotEnd {
        stream: u64,
        chunks: u32,
        envelope: Box<Envelope<Vec<u8>>>,
    },
    /// A follower hands a client's write to the leader.
    Forward { id: u64, command: Vec<u8> },
    /// The leader's answer to a `Forward`.
    ForwardResult { id: u64, outcome: WireOutcome },
}

/// The outcome of a forwarded write.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum WireOutcome {
    Ok,
    NotFound,
    Exists,
    NoEnclave,
    Refused(String),
    Unavailable(String),
    Failed(String),
    /// The write removes the leader, which is handing over its leadership: send it to the
    /// next leader.
    HandingOver,
}

/// Why a link closed before it opened: shown by `cluster info` and in expand's errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No TLS conversation happened (nothing listens, the connection was reset or timed out).
    Unreachable(String),
    /// The peer answered but the TLS handshake or the Hello failed.
    Refused(String),
    /// The peer holds the cluster's key but says it has this node's own id: a node of
    /// another cluster (or this node itself).
    SameId(NodeId),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) | Failure::Refused(why) => f.write_str(why),
            Failure::SameId(id) => write!(
                f,
                "the peer is node {id} too: a node of another cluster (or this node itself)"
            ),
        }
    }
}
