//! Links between nodes: long-lived TLS connections carrying length-prefixed postcard frames.
//!
//! Every node dials every other node and sends its messages over its own outbound link;
//! inbound links only receive. So no two nodes ever argue about which connection to use.
//!
//! Peers reach each other on the API port. A dialer offers only the ALPN protocol
//! [`ALPN`]; the server hands such a connection here instead of to HTTP. Before anything else
//! both sides send a `Hello` whose MAC, keyed with a secret derived from the cluster's HSM key,
//! covers the TLS session's exported keying material: only holders of the HSM key can join the
//! replication stream, and a Hello cannot be replayed into another session.
use std::io::{self, Read, Write};
use std::time::Instant;

use kes_core::consensus::{Envelope, NodeId};
use kes_core::crypto::HmacKey;
use mio::net::TcpStream;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The ALPN protocol of peer links.
pub const ALPN: &[u8] = b"kes-peer/1";
/// The largest frame accepted: the largest log batch or snapshot chunk, with room to spare.
const MAX_FRAME: usize = 64 * 1024 * 1024;
const EXPORTER_LABEL: &[u8] = b"EXPORTER-kes-peer-hello";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// TLS handshake (and Hello exchange) in progress.
    Opening,
    /// Both Hellos verified: frames flow.
    Open,
    Closed,
}

/// One TLS connection to or from a peer.
pub struct Link {
    pub socket: TcpStream,
    tls: rustls::Connection,
    input: Vec<u8>,
    pub state: LinkState,
    /// True for the side that dialed.
    pub dialer: bool,
    /// The peer's id once its Hello verified.
    pub peer: Option<NodeId>,
    hello_sent: bool,
    pub opened: Instant,
    /// Set when the link closed before it opened.
    pub failure: Option<Failure>,
    /// True once any TLS bytes arrived from the peer.
    heard: bool,
}

fn role(dialer: bool) -> u8 {
    if dialer {
        b'd'
    } else {
        b'a'
    }
}

impl Link {
    pub fn new(
        socket: TcpStream,
        tls: rustls::Connection,
        dialer: bool,
        input: Vec<u8>,
        now: Instant,
    ) -> Link {
        Link {
            socket,
            tls,
            input,
            state: LinkState::Opening,
            dialer,
            peer: None,
            hello_sent: false,
            opened: now,
            failure: None,
            heard: false,
        }
    }

    /// Closes the link; if it never opened, remembers why.
    fn fail(&mut self, refused: bool, why: impl Into<String>) {
        if self.state == LinkState::Opening && self.failure.is_none() {
            let why = why.into();
            self.failure = Some(if refused || self.heard {
                Failure::Refused(why)
            } else {
                Failure::Unreachable(why)
            });
        }
        self.state = LinkState::Closed;
    }

    fn mac(&self, secret: &HmacKey, dialer: bool, node: NodeId) -> Option<[u8; 32]> {
        let mut exported = [0u8; 32];
        let exported = self.tls_export(&mut exported)?;
        let mut msg = Vec::with_capacity(40);
        msg.extend_from_slice(exported);
        msg.push(role(dialer));
        msg.extend_from_slice(&node.to_le_bytes());
        Some(secret.sign(&msg))
    }

    fn tls_export<'b>(&self, buf: &'b mut [u8; 32]) -> Option<&'b [u8]> {
        let out = match &self.tls {
            rustls::Connection::Client(c) => {
                c.export_keying_material(&mut buf[..], EXPORTER_LABEL, None)
            }
            rustls::Connection::Server(s) => {
                s.export_keying_material(&mut buf[..], EXPORTER_LABEL, None)
            }
        };
        out.ok().map(|b| &b[..])
    }

    /// Reads what arrived; returns the verified frames after the Hello.
    pub fn on_ready(&mut self, me: NodeId, secret: &HmacKey, frames: &mut Vec<Frame>) {
        if self.state == LinkState::Closed {
            return;
        }
        self.flush();
        // The end of the stream is acted on after the frames before it (a Hello, say).
        let mut eof = false;
        loop {
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {
                    self.heard = true;
                    if let Err(err) = self.tls.process_new_packets() {
                        self.flush();
                        self.fail(true, format!("TLS handshake failed: {err}"));
                        return;
                    }
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        match self.tls.reader().read(&mut chunk) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                            Err(_) => break,
                        }
                    }
                    if eof {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(false, e.to_string());
                    return;
                }
            }
        }
        if !self.tls.is_handshaking() && !self.hello_sent && self.state != LinkState::Closed && !eof
        {
            match self.mac(secret, self.dialer, me) {
                Some(mac) => {
                    self.hello_sent = true;
                    self.write_frame(&Frame::Hello { node: me, mac });
                }
                None => self.state = LinkState::Closed,
            }
        }
        while let Some(frame) = self.next_frame() {
            match (self.state, frame) {
                (LinkState::Opening, Frame::Hello { node, mac }) => {
                    let want = self.mac(secret, !self.dialer, node);
                    let verified = want.is_some_and(|w| bool::from(w.ct_eq(&mac)));
                    if verified && node != me {
                        self.peer = Some(node);
                        self.state = LinkState::Open;
                    } else if verified {
                        self.failure = Some(Failure::SameId(node));
                        self.state = LinkState::Closed;
                    } else {
                        self.fail(
                            true,
                            "the peer's Hello does not verify: it does not hold this cluster's HSM key",
                        );
                    }
                }
                (LinkState::Open, Frame::Hello { .. }) | (LinkState::Opening, _) => {
                    self.state = LinkState::Closed
                }
                (LinkState::Open, f) => frames.push(f),
                (LinkState::Closed, _) => break,
            }
        }
        if eof {
            self.fail(false, "the peer closed the connection during the handshake");
        }
        self.flush();
    }

    fn next_frame(&mut self) -> Option<Frame> {
        if self.input.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes(self.input[..4].try_into().ok()?) as usize;
        if len > MAX_FRAME {
            self.state = LinkState::Closed;
            return None;
        }
        if self.input.len() < 4 + len {
            return None;
        }
        let frame = postcard::from_bytes::<Frame>(&self.input[4..4 + len]);
        self.input.drain(..4 + len);
        match frame {
            Ok(f) => Some(f),
            Err(_) => {
                self.state = LinkState::Closed;
                None
            }
        }
    }

    /// Sends a frame if the link is open; false if it is not (the message is lost).
    pub fn send(&mut self, frame: &Frame) -> bool {
        if self.state != LinkState::Open {
            return false;
        }
        self.write_frame(frame);
        self.state == LinkState::Open
    }

    fn write_frame(&mut self, frame: &Frame) {
        let Ok(body) = postcard::to_allocvec(frame) else {
            return;
        };
        // Frames may carry key material (snapshot chunks): no copy outlives the write.
        let body = zeroize::Zeroizing::new(body);
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(body.len() + 4));
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        if self.tls.writer().write_all(&bytes).is_err() {
            self.state = LinkState::Closed;
        }
        self.flush();
    }

    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    pub fn flush(&mut self) {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(false, e.to_string());
                    return;
                }
            }
        }
    }
}
