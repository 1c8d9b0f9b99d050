//! One client connection: TCP socket -> rustls -> request parser -> app -> responses.
//!
//! Requests are answered strictly in order. While a response is still waiting for the socket
//! (the client reads slowly), no further pipelined request is processed and no more input is
//! read beyond a bounded buffer: a slow client only ever costs its own connection memory.
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::ServerConnection;

use crate::api::logs::{Subscription, Topic};
use crate::api::{App, Outcome, Pending, Resume, Wait};
use crate::auth::Peer;
use crate::http::{Parsed, RequestParser, Response};
use crate::identity::peer_identity;

/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed from the first byte of a request to its last.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a keep-alive connection may sit idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time a response may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Plaintext read ahead of processing (pipelined requests) before we stop reading.
const MAX_INPUT: usize = 2 * 1024 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and answering requests.
    Open,
    /// Send what is buffered, then close.
    Closing,
    /// A log stream: the response stays open; input is ignored.
    Streaming,
    /// A produced body is being sent (see `Response::producer`); requests behind it wait.
    Producing,
    /// A request waits for its write to commit, the cluster's read gate or the edge server's
    /// key store; nothing else is served meanwhile.
    Waiting,
    /// Done: remove it.
    Closed,
}

/// How to answer a request whose response comes later.
struct Answer {
    minor: u8,
    head_only: bool,
    keep_alive: bool,
    subscription: Option<Subscription>,
}

pub struct Connection {
    pub socket: TcpStream,
    /// Unique among all connections of this process (tokens are reused, serials are not).
    pub serial: u64,
    tls: ServerConnection,
    input: Vec<u8>,
    /// Scratch space to encode a response in.
    out: Vec<u8>,
    parser: RequestParser,
    peer: Option<Peer>,
    phase: Phase,
    created: Instant,
    request_started: Option<Instant>,
    last_activity: Instant,
    write_blocked_since: Option<Instant>,
    peer_eof: bool,
    /// The log stream this connection subscribed to, if any.
    subscription: Option<Subscription>,
    /// Set when the subscription starts, taken by the event loop to count subscribers.
    new_subscription: bool,
    /// The request waiting for a write, and the write itself until the event loop takes it.
    waiting: Option<Answer>,
    write: Option<Box<Pending>>,
    /// A request that waits (at the read gate, or for the key store), and what it waits for
    /// until the event loop takes it.
    parked: Option<crate::http::Request>,
    wait: Option<Wait>,
    /// The body being produced, and whether to close after it.
    producer: Option<(crate::http::Producer, bool)>,
}

impl Connection {
    pub fn new(socket: TcpStream, mut tls: ServerConnection, now: Instant) -> Connection {
        // Responses can exceed rustls's default 64 KiB send buffer (decrypting 1 MB); our own
        // loop provides backpressure by answering one request at a time.
        tls.set_buffer_limit(None);
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Connection {
            socket,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tls,
            input: Vec::new(),
            out: Vec::new(),
            parser: RequestParser::default(),
            peer: None,
            phase: Phase::Open,
            created: now,
            request_started: None,
            last_activity: now,
            write_blocked_since: None,
            peer_eof: false,
            subscription: None,
            new_subscription: false,
            waiting: None,
            write: None,
            parked: None,
            wait: None,
            producer: None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True if the connection is between requests (safe to close on shutdown).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Open
            && self.input.is_empty()
            && !self.tls.wants_write()
            && self.request_started.is_none()
    }

    /// Shutdown: finish what is in flight, then close.
    pub fn close_after_current(&mut self) {
        if self.is_idle() || self.phase == Phase::Streaming {
            self.tls.send_close_notify();
            self.phase = Phase::Closing;
            self.flush();
            if !self.tls.wants_write() {
                self.phase = Phase::Closed;
            }
        }
    }

    /// Reads what the socket has, answers complete requests, writes what it can.
    pub fn on_ready(&mut self, app: &App, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        loop {
            self.read(now);
            // Flush first: after the handshake rustls has session tickets to send, and requests
            // are only served while nothing is waiting for the socket.
            self.flush();
            self.produce(now);
            let served = self.serve(app, now);
            self.flush();
            // With edge-triggered readiness no new event comes for input we already hold
            // (or stopped reading at MAX_INPUT), so keep going while requests get answered.
            if served == 0 || self.phase != Phase::Open || self.tls.wants_write() {
                break;
            }
        }
        if self.phase == Phase::Closing && !self.tls.wants_write() {
            self.phase = Phase::Closed;
        }
        if self.peer_eof && self.phase != Phase::Closed && !self.tls.wants_write() {
            // The client closed its side; anything it still sent has been answered.
            self.phase = Phase::Closed;
        }
    }

    /// Closes connections that exceeded a deadline.
    pub fn check_timeouts(&mut self, now: Instant) {
        let expired = match self.phase {
            Phase::Closed => false,
            _ if self
                .write_blocked_since
                .is_some_and(|t| now - t > WRITE_TIMEOUT) =>
            {
                true
            }
            // Only a client that stops reading ends these (the write timeout above).
            Phase::Streaming | Phase::Producing => false,
            _ if self.tls.is_handshaking() => now - self.created > HANDSHAKE_TIMEOUT,
            _ => match self.request_started {
                Some(t) => now - t > REQUEST_TIMEOUT,
                None => now - self.last_activity > IDLE_TIMEOUT,
            },
        };
        if expired {
            self.phase = Phase::Closed;
        }
    }

    fn read(&mut self, now: Instant) {
        while self.input.len() < MAX_INPUT && !self.peer_eof {
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => self.peer_eof = true,
                Ok(_) => {
                    self.last_activity = now;
                    if self.tls.process_new_packets().is_err() {
                        // rustls queued an alert for the peer; send it and give up.
                        self.flush();
                        self.phase = Phase::Closed;
                        return;
                    }
                    self.drain_plaintext();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.phase = Phase::Closed;
                    return;
                }
            }
        }
        if self.request_started.is_none() && !self.input.is_empty() {
            self.request_started = Some(now);
        }
    }

    fn drain_plaintext(&mut self) {
        // Straight into `input` (no bounce buffer to zero and copy). rustls's reader ends with
        // Ok(0) after the peer's close_notify and WouldBlock when it has no more plaintext;
        // what was read before the error is kept either way.
        if self.tls.reader().read_to_end(&mut self.input).is_ok() {
            self.peer_eof = true;
        }
    }

    /// True once the handshake chose the peer protocol: the event loop hands the connection
    /// to the cluster (see [`Connection::into_link`]).
    pub fn is_peer_link(&self) -> bool {
        !self.tls.is_handshaking() && self.tls.alpn_protocol() == Some(crate::cluster::peer::ALPN)
    }

    /// Turns a peer connection into a cluster link (with any bytes already read).
    pub fn into_link(self, now: Instant) -> crate::cluster::peer::Link {
        crate::cluster::peer::Link::new(
            self.socket,
            rustls::Connection::Server(self.tls),
            false,
            self.input,
            now,
        )
    }

    /// Answers complete requests while the socket keeps up; returns how many.
    fn serve(&mut self, app: &App, now: Instant) -> usize {
        let mut served = 0;
        while self.phase == Phase::Open && !self.tls.wants_write() {
            if self.peer.is_none() {
                if self.tls.is_handshaking() || self.is_peer_link() {
                    return served;
                }
                let certs = self.tls.peer_certificates().unwrap_or(&[]);
                self.peer = Some(Peer {
                    identity: peer_identity(certs),
                    ip: self.socket.peer_addr().ok().map(|a| a.ip()),
                });
            }
            let peer = self.peer.as_ref().expect("peer identified");
            let parsed = self.parser.poll(&mut self.input, |r| app.admit(r, peer));
            if self.parser.take_continue() {
                // The head was admitted: the client may send its body.
                let _ = self
                    .tls
                    .writer()
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            served += 1;
            match parsed {
                Parsed::Incomplete => return served - 1,
                Parsed::Error(resp) => {
                    self.send(&resp, 1, false);
                    self.phase = Phase::Closing;
                }
                Parsed::Refused(resp) => {
                    // Answered before its (short) body, which the parser discards.
                    self.send(&resp, 1, false);
                    self.last_activity = now;
                }
                Parsed::Request(req) => {
                    let peer = self.peer.as_ref().expect("peer identified");
                    let answer = Answer {
                        minor: req.minor_version,
                        head_only: req.method == "HEAD",
                        keep_alive: req.keep_alive,
                        subscription: Subscription::of_request(app, &req),
                    };
                    let outcome = app.handle(&req, peer, false);
                    self.take_outcome(outcome, answer, req, now);
                }
            }
            self.flush();
        }
        served
    }

    /// Sends the answer to the request at the head of the line and gets ready for the next.
    fn respond(&mut self, mut resp: Response, answer: &Answer, now: Instant) {
        if !answer.keep_alive {
            resp.close = true;
        }
        self.send(&resp, answer.minor, answer.head_only);
        if let Some(producer) = resp.producer.take().filter(|_| !answer.head_only) {
            self.producer = Some((producer, resp.close));
            self.phase = Phase::Producing;
            self.last_activity = now;
            self.produce(now);
            return;
        }
        if resp.stream {
            self.subscription = answer.subscription.clone();
            self.new_subscription = self.subscription.is_some();
        }
        self.phase = if resp.stream {
            Phase::Streaming
        } else if resp.close {
            Phase::Closing
        } else {
            Phase::Open
        };
        self.request_started = if self.input.is_empty() {
            None
        } else {
            Some(now)
        };
        self.last_activity = now;
    }

    fn take_outcome(
        &mut self,
        outcome: Outcome,
        answer: Answer,
        req: crate::http::Request,
        now: Instant,
    ) {
        match outcome {
            Outcome::Done(resp) => self.respond(resp, &answer, now),
            Outcome::Write(pending) => {
                // Nothing more is read off this connection until the write is answered:
                // responses go out in request order.
                self.write = Some(pending);
                self.waiting = Some(answer);
                self.phase = Phase::Waiting;
            }
            Outcome::Wait(wait) => {
                self.wait = Some(wait);
                self.parked = Some(req);
                self.waiting = Some(answer);
                self.phase = Phase::Waiting;
            }
        }
    }

    /// What a waiting request waits for (taken once by the event loop).
    pub fn take_wait(&mut self) -> Option<Wait> {
        self.wait.take()
    }

    /// What the waiting request waited for is there: handle it the way `resume` says.
    pub fn resume(&mut self, app: &App, resume: Resume, now: Instant) {
        let (Some(req), Some(answer)) = (self.parked.take(), self.waiting.take()) else {
            return;
        };
        if self.phase != Phase::Waiting {
            return;
        }
        let peer = self.peer.clone().expect("peer identified");
        let outcome = app.resume(&req, &peer, resume);
        self.phase = Phase::Open;
        self.take_outcome(outcome, answer, req, now);
        self.flush();
        if self.phase == Phase::Open {
            self.on_ready(app, now);
        }
    }

    /// The write this connection's request waits for (taken once by the event loop).
    pub fn take_write(&mut self) -> Option<Box<Pending>> {
        self.write.take()
    }

    /// Answers the write this connection waits for, then serves what is pipelined behind it.
    pub fn complete(&mut self, app: &App, resp: Response, now: Instant) {
        let Some(answer) = self.waiting.take() else {
            return;
        };
        if self.phase != Phase::Waiting {
            return;
        }
        self.respond(resp, &answer, now);
        self.flush();
        self.on_ready(app, now);
    }

    fn send(&mut self, resp: &Response, minor: u8, head_only: bool) {
        // One reused buffer per connection: the encoded response is copied into rustls (which
        // encrypts it into records) right away. Wiped (responses carry data keys and
        // plaintexts), and freed if a big response left it large.
        resp.encode(minor, head_only, &mut self.out);
        // Cannot fail: the buffer limit is off.
        let _ = self.tls.writer().write_all(&self.out);
        zeroize::Zeroize::zeroize(&mut self.out);
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
    }

    /// The topic of a log stream that just started (once).
    pub fn take_new_subscription(&mut self) -> Option<Topic> {
        std::mem::take(&mut self.new_subscription)
            .then(|| self.subscription.as_ref().map(|s| s.topic))
            .flatten()
    }

    /// The topic this connection streams, if it is a log stream.
    pub fn topic(&self) -> Option<Topic> {
        self.subscription
            .as_ref()
            .map(|s| s.topic)
            .filter(|_| self.phase == Phase::Streaming || self.phase == Phase::Closed)
    }

    /// What this log stream subscribed to and who it is (while it streams).
    pub fn subscriber(&self) -> Option<(&Subscription, &str)> {
        let sub = self
            .subscription
            .as_ref()
            .filter(|_| self.phase == Phase::Streaming)?;
        let id = self.peer.as_ref().and_then(|p| p.identity.as_deref().ok());
        Some((sub, id.unwrap_or_default()))
    }

    /// Ends a log stream (its subscriber may no longer read it): the last chunk, then close.
    pub fn end_stream(&mut self) {
        if self.phase != Phase::Streaming {
            return;
        }
        let _ = self.tls.writer().write_all(b"0\r\n\r\n");
        self.tls.send_close_notify();
        self.phase = Phase::Closing;
        self.flush();
        if !self.tls.wants_write() {
            self.phase = Phase::Closed;
        }
    }

    /// Appends one event to a log stream as an HTTP chunk. Returns false if not streaming.
    pub fn send_event(&mut self, line: &[u8]) -> bool {
        if self.phase != Phase::Streaming {
            return false;
        }
        self.send_chunk(line);
        self.flush();
        true
    }

    /// Writes `bytes` as one HTTP chunk of a chunked body.
    fn send_chunk(&mut self, bytes: &[u8]) {
        let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
        let _ = self.tls.writer().write_all(&out);
    }

    /// Sends the next pieces of a produced body while the socket keeps up; after the last,
    /// the connection serves requests again (or closes).
    fn produce(&mut self, now: Instant) {
        // Only an event for a socket that blocked wakes this connection again: so keep going
        // until it blocks (or the body ends).
        self.flush();
        while self.phase == Phase::Producing && !self.tls.wants_write() {
            let Some((producer, close)) = self.producer.as_mut() else {
                self.phase = Phase::Closed;
                return;
            };
            let close = *close;
            match producer.0.next_piece() {
                Ok(Some(piece)) if piece.is_empty() => {}
                Ok(Some(piece)) => self.send_chunk(&piece),
                Ok(None) => {
                    let _ = self.tls.writer().write_all(b"0\r\n\r\n");
                    self.producer = None;
                    self.phase = if close { Phase::Closing } else { Phase::Open };
                    self.request_started = (!self.input.is_empty()).then_some(now);
                }
                Err(why) => {
                    eprintln!("kes-node: a response body failed midway: {why}");
                    self.producer = None;
                    self.phase = Phase::Closed;
                    return;
                }
            }
            self.flush();
        }
    }

    fn flush(&mut self) {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => self.write_blocked_since = None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked_since.get_or_insert_with(Instant::now);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.phase = Phase::Closed;
                    return;
                }
            }
        }
    }
}
