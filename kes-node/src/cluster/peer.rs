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
//!
//! Until its Hello verified, a link is a stranger's: it may send [`PRE_AUTH_INPUT`] bytes (a
//! Hello frame of at most [`MAX_HELLO`] and its length), and an
//! accepted link must send its Hello within [`HELLO_TIMEOUT`]. A link that fails before it
//! opens is logged with the reason on either side, once per change of reason.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kes_core::consensus::NodeId;
use kes_core::crypto::HmacKey;
use mio::net::TcpStream;
use subtle::ConstantTimeEq;

use crate::net::{Broken, Pump, Session, PRE_AUTH_INPUT};

pub(crate) use super::frame::{Failure, Frame};

/// The ALPN protocol of peer links (the event loop's TLS setup offers it, so it lives there).
pub(crate) use crate::net::tls::PEER_ALPN as ALPN;
/// The largest frame accepted: the largest log batch or snapshot chunk, with room to spare.
const MAX_FRAME: usize = 64 * 1024 * 1024;
const EXPORTER_LABEL: &[u8] = b"EXPORTER-kes-peer-hello";
/// The most a link may send before its Hello verified (a Hello frame is about 45 bytes).
pub(crate) const MAX_HELLO: usize = PRE_AUTH_INPUT - 4;
/// Time an accepted link has from its hand-over to the verified Hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a dialed link has for its TLS handshake and the peer's Hello.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// TLS handshake (and Hello exchange) in progress.
    Opening,
    /// Both Hellos verified: frames flow.
    Open,
    Closed,
}

/// One TLS connection to or from a peer.
pub(crate) struct Link {
    pub socket: TcpStream,
    /// The TLS session and the plaintext received (`net/pump.rs`, shared with HTTP).
    pump: Pump,
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

/// Distinct reasons remembered for accepted links (see [`LOGGED`]).
const INBOUND_REASONS: usize = 16;

/// What was logged per side. Dialed links keep their last reason, per address: a peer that
/// keeps failing the same way is logged once, and again when the reason changes. Accepted
/// links, which anyone with a certificate can open, keep up to [`INBOUND_REASONS`] distinct
/// reasons all together, so a stranger interleaving failures does not log each attempt.
/// `"open"` stands for the link having opened.
static LOGGED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());

/// Logs why a link to or from `remote` did not open, unless that reason is logged already
/// (see [`LOGGED`]); `None` notes that it opened (logged if it had failed before).
fn log_reason(dialer: bool, remote: &str, reason: Option<&str>) {
    let key = if dialer {
        format!("to {remote}")
    } else {
        "from peers".to_string()
    };
    let now = reason.unwrap_or("open");
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    let slot = logged.iter().position(|(k, _)| *k == key);
    let fresh = match slot {
        Some(i) => !logged[i].1.iter().any(|r| r == now),
        None => reason.is_some(),
    };
    if !fresh {
        return;
    }
    match reason {
        Some(why) if dialer => eprintln!("kes-node: peer link to {remote} failed: {why}"),
        Some(why) => eprintln!("kes-node: peer link from {remote} refused: {why}"),
        None => eprintln!("kes-node: peer link {key}: open"),
    }
    let reasons = match slot {
        Some(i) => &mut logged[i].1,
        None => {
            if logged.len() >= 64 {
                logged.remove(0);
            }
            logged.push((key, Vec::new()));
            &mut logged.last_mut().expect("just pushed").1
        }
    };
    if dialer || reason.is_none() || reasons.iter().any(|r| r == "open") {
        reasons.clear();
    }
    if reasons.len() >= INBOUND_REASONS {
        reasons.remove(0);
    }
    reasons.push(now.to_owned());
}

fn role(dialer: bool) -> u8 {
    if dialer {
        b'd'
    } else {
        b'a'
    }
}

impl Link {
    pub(crate) fn new(
        socket: TcpStream,
        tls: rustls::Connection,
        dialer: bool,
        input: Vec<u8>,
        now: Instant,
    ) -> Link {
        Link::with_pump(socket, Pump::new(Session::ready(tls), input), dialer, now)
    }

    fn with_pump(socket: TcpStream, pump: Pump, dialer: bool, now: Instant) -> Link {
        Link {
            socket,
            pump,
            state: LinkState::Opening,
            dialer,
            peer: None,
            hello_sent: false,
            opened: now,
            failure: None,
            heard: false,
        }
    }

    /// An inbound link: a connection the event loop accepted and handed over once its
    /// handshake chose the peer protocol.
    pub(crate) fn accepted(stream: crate::net::PeerStream) -> Link {
        Link::with_pump(stream.socket, stream.pump, false, stream.handed_over)
    }

    /// Closes the link; if it never opened, remembers why and logs it.
    fn fail(&mut self, refused: bool, why: impl Into<String>) {
        if self.state == LinkState::Opening && self.failure.is_none() {
            let why = why.into();
            self.log_failure(&why);
            self.failure = Some(if refused || self.heard {
                Failure::Refused(why)
            } else {
                Failure::Unreachable(why)
            });
        }
        self.state = LinkState::Closed;
    }

    fn log_failure(&self, why: &str) {
        let remote = match self.socket.peer_addr() {
            Ok(a) if self.dialer => a.to_string(),
            Ok(a) => a.ip().to_string(),
            Err(_) => "?".into(),
        };
        log_reason(self.dialer, &remote, Some(why));
    }

    /// Closes a link that opened to another node than the one dialed (see `links.rs`):
    /// nothing went over it, and `why` is what `cluster info` shows for it.
    pub(crate) fn refuse(&mut self, why: String) {
        self.log_failure(&why);
        self.failure = Some(Failure::Refused(why));
        self.state = LinkState::Closed;
    }

    /// Closes an inbound link still waiting for its Hello to make room for a newer one (see
    /// `links.rs`, `MAX_STRANGERS`).
    pub(crate) fn evict(&mut self) {
        self.fail(true, "too many peer links waiting for their Hello");
    }

    /// True if the link has not opened in time: close it with [`Link::expire`].
    pub(crate) fn overdue(&self, now: Instant) -> bool {
        let limit = if self.dialer {
            DIAL_TIMEOUT
        } else {
            HELLO_TIMEOUT
        };
        self.state == LinkState::Opening && now - self.opened > limit
    }

    /// Closes a link that did not open in time.
    pub(crate) fn expire(&mut self) {
        if self.pump.tls.is_handshaking() {
            let limit = if self.dialer {
                DIAL_TIMEOUT
            } else {
                HELLO_TIMEOUT
            };
            self.fail(
                false,
                format!("no TLS handshake within {} s", limit.as_secs()),
            );
        } else {
            self.fail(true, "no valid Hello in time");
        }
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
        self.pump
            .tls
            .export_keying_material(&mut buf[..], EXPORTER_LABEL)
    }

    /// Reads what arrived; returns the verified frames after the Hello.
    pub(crate) fn on_ready(&mut self, me: NodeId, secret: &HmacKey, frames: &mut Vec<Frame>) {
        if self.state == LinkState::Closed {
            return;
        }
        self.flush();
        loop {
            // While the link is a stranger's, reading stops at its first frame (the Hello),
            // which is checked before anything more is read.
            let (hello_first, eof) = self.read();
            if self.state == LinkState::Closed {
                return;
            }
            if !self.pump.tls.is_handshaking() && !self.hello_sent && !eof {
                match self.mac(secret, self.dialer, me) {
                    Some(mac) => {
                        self.hello_sent = true;
                        self.write_frame(&Frame::Hello { node: me, mac });
                    }
                    None => self.state = LinkState::Closed,
                }
            }
            self.take_frames(me, secret, frames);
            // The end of the stream is acted on after the frames before it (a Hello, say).
            if eof {
                self.fail(false, "the peer closed the connection during the handshake");
            }
            if !(hello_first && self.state == LinkState::Open) {
                break;
            }
        }
        self.flush();
    }

    /// Reads what arrived: (stopped early at a stranger's first frame, end of stream).
    fn read(&mut self) -> (bool, bool) {
        let opening = self.state == LinkState::Opening;
        // A stranger's reading stops at its first frame (or the pre-authentication bound).
        let cap = if opening { PRE_AUTH_INPUT } else { usize::MAX };
        let reading = self.pump.read(&mut self.socket, cap, |_, input| {
            opening && first_frame_in(input)
        });
        match reading {
            Ok(reading) => self.heard |= reading.heard,
            Err(Broken::Tls(err)) => {
                self.flush();
                self.fail(true, format!("TLS handshake failed: {err}"));
                return (false, false);
            }
            Err(Broken::Io(err)) => {
                self.fail(false, err.to_string());
                return (false, false);
            }
        }
        let eof = self.pump.eof();
        if opening && first_frame_in(&self.pump.input) {
            return (!eof, eof);
        }
        if opening && self.pump.input.len() >= PRE_AUTH_INPUT {
            self.fail(true, "it sent more than a Hello before its Hello verified");
            return (false, false);
        }
        (false, eof)
    }

    /// Verifies the Hello and collects the frames after it.
    fn take_frames(&mut self, me: NodeId, secret: &HmacKey, frames: &mut Vec<Frame>) {
        while let Some(frame) = self.next_frame() {
            match (self.state, frame) {
                (LinkState::Opening, Frame::Hello { node, mac }) => {
                    let want = self.mac(secret, !self.dialer, node);
                    let verified = want.is_some_and(|w| bool::from(w.ct_eq(&mac)));
                    if verified && node != me {
                        self.peer = Some(node);
                        self.state = LinkState::Open;
                        if let Ok(remote) = self.socket.peer_addr() {
                            let remote = if self.dialer {
                                remote.to_string()
                            } else {
                                remote.ip().to_string()
                            };
                            log_reason(self.dialer, &remote, None);
                        }
                    } else if verified {
                        self.log_failure(&Failure::SameId(node).to_string());
                        self.failure = Some(Failure::SameId(node));
                        self.state = LinkState::Closed;
                    } else {
                        self.fail(
                            true,
                            "the peer's Hello does not verify: it does not hold this cluster's HSM key",
                        );
                    }
                }
                (LinkState::Opening, _) => self.fail(true, "it sent a frame before its Hello"),
                (LinkState::Open, Frame::Hello { .. }) => self.state = LinkState::Closed,
                (LinkState::Open, f) => frames.push(f),
                (LinkState::Closed, _) => break,
            }
        }
    }

    fn next_frame(&mut self) -> Option<Frame> {
        if self.pump.input.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes(self.pump.input[..4].try_into().ok()?) as usize;
        if self.state == LinkState::Opening && len > MAX_HELLO {
            self.fail(true, "its first frame is larger than a Hello");
            return None;
        }
        if len > MAX_FRAME {
            self.state = LinkState::Closed;
            return None;
        }
        if self.pump.input.len() < 4 + len {
            return None;
        }
        let frame = postcard::from_bytes::<Frame>(&self.pump.input[4..4 + len]);
        self.pump.input.drain(..4 + len);
        match frame {
            Ok(f) => Some(f),
            Err(_) => {
                self.state = LinkState::Closed;
                None
            }
        }
    }

    /// Sends a frame if the link is open; false if it is not (the message is lost).
    pub(crate) fn send(&mut self, frame: &Frame) -> bool {
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
        if !self.pump.tls.write_plaintext(&bytes) {
            self.state = LinkState::Closed;
        }
        self.flush();
    }

    pub(crate) fn wants_write(&self) -> bool {
        self.pump.tls.wants_write()
    }

    pub(crate) fn flush(&mut self) {
        if let Err(e) = self.pump.flush(&mut self.socket) {
            self.fail(false, e.to_string());
        }
    }
}

/// True if `input` holds a whole first frame, or the length of one too long to wait for.
fn first_frame_in(input: &[u8]) -> bool {
    match input.get(..4) {
        Some(len) => {
            let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
            len > MAX_HELLO || input.len() >= 4 + len
        }
        None => false,
    }
}
