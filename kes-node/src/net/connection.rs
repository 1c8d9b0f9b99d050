//! One client connection: TCP socket -> rustls -> request parser -> app -> responses.
//!
//! Requests are answered strictly in order. While a response is still waiting for the socket
//! (the client reads slowly), no further pipelined request is processed and no more input is
//! read beyond a bounded buffer: a slow client only ever costs its own connection memory.
//!
//! What one connection may hold is bounded: its input buffer ([`MAX_INPUT`]), the body of the
//! request being read (the route's limit, read only once the head is admitted), one response
//! at a time, and for a log stream `limits.log_queue` of events (a subscriber further behind
//! is dropped). All of it is charged to the event loop's [`Budget`].
use std::io::{self, Read};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::budget::Budget;
use super::pump::{Broken, Pump, PRE_AUTH_INPUT};
use super::session::Session;
use crate::api::logs::{Subscription, Topic};
use crate::api::{App, Outcome, Parked, Pending, Resume, Wait};
use crate::auth::Peer;
use crate::http::{Parsed, Producer, RequestParser, Response};
use crate::identity::peer_identity;

/// Time allowed from the first byte of a request to its last.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a keep-alive connection may sit idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time a response may wait for the client to read all of it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Plaintext read ahead of processing (pipelined requests, the body being read) before we
/// stop reading: more than the longest head, so a head always fits.
const MAX_INPUT: usize = 128 * 1024;
/// Requests answered per turn: a client that keeps sending gets its next turn after the
/// other connections had theirs (and the loop polled again).
const REQUESTS_PER_TURN: usize = 8;
/// After a response that closes the connection, unread input is discarded this long (so the
/// client sees the response instead of a reset), then the socket closes.
const LINGER: Duration = Duration::from_secs(2);

/// How much a connection is trusted when the server is full (see `net/limits.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Standing {
    /// TLS not finished, or an identity neither the admin nor known to the store: evicted
    /// first when a newcomer needs the slot.
    Unknown,
    /// An identity the store knows.
    Known,
    /// The admin identity: never evicted, never held back by the memory budget.
    Admin,
}

/// Where a connection is in its life, with what that part of it needs.
enum State {
    /// The TLS handshake: nothing is known of the client yet.
    Handshaking,
    /// Identified: reading a request's head, or its body (the parser holds the body limit of
    /// the route that admitted the head), and answering it.
    Open,
    /// A request waits for the backend; nothing else is served meanwhile.
    Waiting(Box<Waiting>),
    /// A produced body is being sent (see `Response::producer`), then the connection serves
    /// requests again (or closes, if `close`); requests behind it wait.
    Producing { producer: Producer, close: bool },
    /// A log stream: the response stays open; input is ignored.
    Streaming(Subscription),
    /// Send what is buffered, then close.
    Closing,
    /// The last response is out and our side is shut: unread input is discarded until the
    /// client closes or [`LINGER`] after this instant.
    Lingering(Instant),
    /// Done: remove it.
    Closed,
}

/// A request waiting for the backend, and how to answer it.
struct Waiting {
    answer: Answer,
    on: Awaited,
}

/// What a waiting request waits for.
enum Awaited {
    /// Its write to commit: the write, until the event loop takes it to the backend.
    Write(Option<Box<Pending>>),
    /// The cluster's read gate or the edge server's key store: the request parked as it was
    /// admitted, and the wait until the event loop takes it to the backend.
    Wait {
        parked: Box<Parked>,
        wait: Option<Wait>,
    },
}

/// How to answer a request whose response comes later.
struct Answer {
    minor: u8,
    head_only: bool,
    keep_alive: bool,
    subscription: Option<Subscription>,
}

impl Answer {
    fn of(app: &App, req: &crate::http::Request) -> Answer {
        Answer {
            minor: req.minor_version,
            head_only: req.method == "HEAD",
            keep_alive: req.keep_alive,
            subscription: Subscription::of_request(app, req),
        }
    }
}

pub(super) struct Connection {
    pub socket: TcpStream,
    /// Unique among all connections of this process (tokens are reused, serials are not).
    pub serial: u64,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The socket's TLS session and the plaintext received.
    pump: Pump,
    /// Scratch space to encode a response in.
    out: Vec<u8>,
    parser: RequestParser,
    /// Who the client is: anonymous (no certificate) until the handshake identified it.
    peer: Peer,
    standing: Standing,
    state: State,
    pub created: Instant,
    /// The first request's head arrived (the handshake deadline no longer applies).
    headed: bool,
    request_started: Option<Instant>,
    last_activity: Instant,
    write_blocked_since: Option<Instant>,
    /// Plaintext handed to rustls since its output last drained completely.
    out_pending: usize,
    /// What this connection holds, as charged to `budget`.
    charged: usize,
    budget: Rc<Budget>,
    /// Stopped reading for the budget; the event loop wakes it when there is room.
    starved: bool,
    /// Stopped after its turn with work left; the event loop runs it again soon.
    yielded: bool,
    handshake_timeout: Duration,
    log_queue: usize,
    /// The log topic this connection's stream is counted under (the event loop uncounts it
    /// when the connection goes).
    counted: Option<Topic>,
}

/// What a connection needs from the event loop besides its socket.
pub(super) struct Setup {
    pub budget: Rc<Budget>,
    pub handshake_timeout: Duration,
    pub log_queue: usize,
}

impl Connection {
    pub(super) fn new(socket: TcpStream, tls: Session, setup: &Setup, now: Instant) -> Connection {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Connection {
            ip: socket.peer_addr().ok().map(|a| a.ip()),
            socket,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            pump: Pump::new(tls, Vec::new()).with_short_reads(),
            out: Vec::new(),
            parser: RequestParser::default(),
            peer: Peer {
                identity: Err(crate::identity::PeerIdentityError::NoCertificate),
                ip: None,
            },
            standing: Standing::Unknown,
            state: State::Handshaking,
            created: now,
            headed: false,
            request_started: None,
            last_activity: now,
            write_blocked_since: None,
            out_pending: 0,
            charged: 0,
            budget: setup.budget.clone(),
            starved: false,
            yielded: false,
            handshake_timeout: setup.handshake_timeout,
            log_queue: setup.log_queue,
            counted: None,
        }
    }

    /// How much this connection is trusted (see [`Standing`]).
    pub(super) fn standing(&self) -> Standing {
        self.standing
    }

    /// Closes the connection at once (evicted for a newcomer).
    pub(super) fn evict(&mut self) {
        self.state = State::Closed;
    }

    /// True (once) if the connection stopped for the memory budget since the last call.
    pub(super) fn take_starved(&mut self) -> bool {
        std::mem::take(&mut self.starved)
    }

    /// True (once) if the connection ended its turn with work left (see [`REQUESTS_PER_TURN`]).
    pub(super) fn take_yielded(&mut self) -> bool {
        std::mem::take(&mut self.yielded)
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True if the state is one that reads and answers requests (before or after the
    /// handshake).
    fn is_open(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Open)
    }

    /// True if the connection is between requests (safe to close on shutdown).
    pub(super) fn is_idle(&self) -> bool {
        self.is_open()
            && self.pump.input.is_empty()
            && !self.pump.tls.wants_write()
            && self.request_started.is_none()
    }

    /// Shutdown: finish what is in flight, then close.
    pub(super) fn close_after_current(&mut self) {
        if self.is_idle() || matches!(self.state, State::Streaming(_)) {
            self.close_now();
        }
    }

    /// Sends the TLS close and closes once it is out.
    fn close_now(&mut self) {
        self.pump.tls.send_close_notify();
        self.state = State::Closing;
        self.flush();
        if !self.pump.tls.wants_write() {
            self.state = State::Closed;
        }
    }

    /// The response that ends the connection is out: shut our side and discard what the
    /// client still sends, so that it reads the response rather than a reset.
    fn linger(&mut self, now: Instant) {
        if self.pump.eof() || self.socket.shutdown(std::net::Shutdown::Write).is_err() {
            self.state = State::Closed;
            return;
        }
        self.state = State::Lingering(now);
        self.discard_input();
    }

    fn discard_input(&mut self) {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            match self.socket.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.state = State::Closed;
    }

    /// The poller reported that the client ended its side (FIN): from now on reads go on
    /// until they see the end (see [`Pump::short_read_drains`]).
    pub(super) fn hung_up(&mut self) {
        self.pump.short_read_drains = false;
    }

    /// Reads what the socket has, answers complete requests, writes what it can.
    pub(super) fn on_ready(&mut self, app: &App, now: Instant) {
        match self.state {
            State::Closed => return,
            State::Lingering(_) => return self.discard_input(),
            _ => {}
        }
        let mut turn = 0;
        loop {
            let capped = self.read(now);
            // Flush first: after the handshake rustls has session tickets to send, and requests
            // are only served while nothing is waiting for the socket.
            self.flush();
            self.produce(now);
            let before = self.pump.input.len();
            let served = self.serve(app, now);
            self.flush();
            // With edge-triggered readiness no new event comes for input we already hold
            // (or stopped reading at MAX_INPUT), so keep going while requests get answered
            // or a capped buffer made room.
            let progress = served > 0 || (capped && self.pump.input.len() < before);
            if !progress || !self.is_open() || self.pump.tls.wants_write() {
                break;
            }
            turn += served.max(1);
            if turn >= REQUESTS_PER_TURN {
                self.yielded = true;
                break;
            }
        }
        if matches!(self.state, State::Closing) && !self.pump.tls.wants_write() {
            self.linger(now);
        }
        if self.pump.eof() && !self.is_closed() && !self.pump.tls.wants_write() {
            // The client closed its side; anything it still sent has been answered.
            self.state = State::Closed;
        }
        self.recharge();
    }

    /// Charges what this connection holds to the budget; gives back idle buffers.
    fn recharge(&mut self) {
        if self.pump.input.is_empty() && self.pump.input.capacity() > 16 * 1024 {
            self.pump.input = Vec::new();
        }
        let held = if self.is_closed() {
            0
        } else {
            self.pump.input.capacity() + self.parser.body_charge() + self.out_pending
        };
        self.budget.charge(&mut self.charged, held);
    }

    /// True if the budget holds this connection back now (see [`held_back`]).
    fn held_back(&mut self) -> bool {
        held_back(self.standing, &self.parser, &self.budget, &mut self.starved)
    }

    /// Gives this connection's charge back (it is being removed).
    pub(super) fn release(&mut self) {
        self.budget.charge(&mut self.charged, 0);
    }

    /// Closes connections that exceeded a deadline.
    pub(super) fn check_timeouts(&mut self, now: Instant) {
        let expired = match self.state {
            State::Closed => false,
            _ if self
                .write_blocked_since
                .is_some_and(|t| now - t > WRITE_TIMEOUT) =>
            {
                true
            }
            State::Lingering(since) => now - since > LINGER,
            // Only a client that stops reading ends these (the write timeout above).
            State::Streaming(_) | State::Producing { .. } => false,
            // The handshake and the first request's head come quickly, or not at all.
            _ if !self.headed => now - self.created > self.handshake_timeout,
            _ => match self.request_started {
                Some(t) => now - t > REQUEST_TIMEOUT,
                None => now - self.last_activity > IDLE_TIMEOUT,
            },
        };
        if expired {
            self.state = State::Closed;
        }
    }

    /// Reads what the socket has, up to the input bound; true if it stopped at the bound.
    fn read(&mut self, now: Instant) -> bool {
        // A peer connection is a stranger until the backend checked its Hello.
        let cap = if self.pump.tls.alpn_protocol() == Some(super::tls::PEER_ALPN) {
            PRE_AUTH_INPUT
        } else {
            MAX_INPUT
        };
        let (standing, parser, budget, starved) =
            (self.standing, &self.parser, &self.budget, &mut self.starved);
        let reading = self.pump.read(&mut self.socket, cap, |tls, _| {
            !tls.is_handshaking() && held_back(standing, parser, budget, starved)
        });
        let reading = match reading {
            Ok(reading) => reading,
            Err(Broken::Tls(_)) => {
                // rustls queued an alert for the peer; send it and give up.
                self.flush();
                self.state = State::Closed;
                return false;
            }
            Err(Broken::Io(_)) => {
                self.state = State::Closed;
                return false;
            }
        };
        if reading.heard {
            self.last_activity = now;
        }
        if self.request_started.is_none() && !self.pump.input.is_empty() {
            self.request_started = Some(now);
        }
        reading.capped
    }

    /// True once the handshake chose the peer protocol: the event loop hands the connection
    /// to its backend (see [`Connection::into_peer_stream`]).
    pub(super) fn is_peer_link(&self) -> bool {
        !self.pump.tls.is_handshaking()
            && self.pump.tls.alpn_protocol() == Some(super::tls::PEER_ALPN)
    }

    /// Turns a peer connection into what the backend adopts (with any bytes already read);
    /// `None` if its session is not established.
    pub(super) fn into_peer_stream(mut self, now: Instant) -> Option<super::PeerStream> {
        self.release();
        if self.pump.tls.is_handshaking() {
            return None;
        }
        // The peer link's poller does not pass FINs on: its reads go on to `WouldBlock`.
        self.pump.short_read_drains = false;
        Some(super::PeerStream {
            socket: self.socket,
            pump: self.pump,
            handed_over: now,
        })
    }

    /// Once the handshake is done: who the client is, and how much it is trusted. False
    /// while it is not done (or chose the peer protocol: the event loop hands it on).
    fn identify(&mut self, app: &App) -> bool {
        if !matches!(self.state, State::Handshaking) {
            return true;
        }
        if self.pump.tls.is_handshaking() || self.is_peer_link() {
            return false;
        }
        let certs = self.pump.tls.peer_certificates().unwrap_or(&[]);
        let peer = Peer {
            identity: peer_identity(certs),
            ip: self.ip,
        };
        self.standing = match &peer.identity {
            Ok(id) if crate::auth::is_admin(&app.admin, id) => Standing::Admin,
            Ok(id) if app.is_known(id) => Standing::Known,
            _ => Standing::Unknown,
        };
        self.peer = peer;
        self.state = State::Open;
        true
    }

    /// Answers complete requests while the socket keeps up; returns how many.
    fn serve(&mut self, app: &App, now: Instant) -> usize {
        let mut served = 0;
        while self.is_open() && !self.pump.tls.wants_write() {
            if !self.identify(app) || self.held_back() {
                return served;
            }
            let peer = &self.peer;
            let parsed = self
                .parser
                .poll(&mut self.pump.input, |r| app.admit(r, peer));
            if self.parser.take_continue() {
                // The head was admitted: the client may send its body.
                self.write_out(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            if !matches!(parsed, Parsed::Incomplete) || self.parser.in_body() {
                self.headed = true;
            }
            served += 1;
            match parsed {
                Parsed::Incomplete => return served - 1,
                Parsed::Error(resp) => {
                    self.send(&resp, 1, false);
                    self.state = State::Closing;
                }
                Parsed::Refused(resp) => {
                    // Answered before its (short) body, which the parser discards.
                    self.send(&resp, 1, false);
                    self.last_activity = now;
                }
                Parsed::Request(req) => {
                    let answer = Answer::of(app, &req);
                    let outcome = app.handle(req, &self.peer);
                    self.take_outcome(app, outcome, answer, now);
                }
            }
            self.flush();
        }
        served
    }

    /// Sends the answer to the request at the head of the line and gets ready for the next.
    fn respond(&mut self, app: &App, mut resp: Response, answer: Answer, now: Instant) {
        if !answer.keep_alive {
            resp.close = true;
        }
        // A log stream is counted as a subscriber before its head is queued: a client holding
        // the head may expect every request it makes afterwards in the stream, also one that
        // another event loop serves at once (counted after the head, such a request's event
        // found no subscriber and was dropped).
        let stream = answer
            .subscription
            .filter(|_| resp.stream && resp.producer.is_none());
        if let Some(sub) = &stream {
            app.logs.subscribe(sub.topic, 1);
            self.counted = Some(sub.topic);
        }
        self.send(&resp, answer.minor, answer.head_only);
        self.last_activity = now;
        if let Some(producer) = resp.producer.take().filter(|_| !answer.head_only) {
            self.state = State::Producing {
                producer,
                close: resp.close,
            };
            self.produce(now);
            return;
        }
        self.state = match stream {
            Some(sub) => State::Streaming(sub),
            // Only log routes stream.
            None if resp.stream => State::Closing,
            _ if resp.close => State::Closing,
            _ => State::Open,
        };
        self.request_started = if self.pump.input.is_empty() {
            None
        } else {
            Some(now)
        };
    }

    fn take_outcome(&mut self, app: &App, outcome: Outcome, answer: Answer, now: Instant) {
        // Until the write is answered or the wait ends, nothing more is read off this
        // connection: responses go out in request order.
        let on = match outcome {
            Outcome::Done(resp) => return self.respond(app, resp, answer, now),
            Outcome::Write(pending) => Awaited::Write(Some(pending)),
            Outcome::Wait(parked, wait) => Awaited::Wait {
                parked,
                wait: Some(wait),
            },
        };
        self.state = State::Waiting(Box::new(Waiting { answer, on }));
    }

    /// What a waiting request waits for (taken once by the event loop).
    pub(super) fn take_wait(&mut self) -> Option<Wait> {
        match &mut self.state {
            State::Waiting(w) => match &mut w.on {
                Awaited::Wait { wait, .. } => wait.take(),
                Awaited::Write(_) => None,
            },
            _ => None,
        }
    }

    /// The write this connection's request waits for (taken once by the event loop).
    pub(super) fn take_write(&mut self) -> Option<Box<Pending>> {
        match &mut self.state {
            State::Waiting(w) => match &mut w.on {
                Awaited::Write(pending) => pending.take(),
                Awaited::Wait { .. } => None,
            },
            _ => None,
        }
    }

    /// What the waiting request waited for is there: it goes on from where it parked (the
    /// way `resume` says), then what is pipelined behind it is served.
    pub(super) fn resume(&mut self, app: &App, resume: Resume, now: Instant) {
        let waiting = match std::mem::replace(&mut self.state, State::Open) {
            State::Waiting(w) if matches!(w.on, Awaited::Wait { .. }) => w,
            other => {
                self.state = other;
                return;
            }
        };
        let Waiting { answer, on } = *waiting;
        if let Awaited::Wait { parked, .. } = on {
            let outcome = app.resume(parked, resume);
            self.take_outcome(app, outcome, answer, now);
        }
        self.flush();
        if self.is_open() {
            self.on_ready(app, now);
        }
    }

    /// Answers the write this connection waits for, then serves what is pipelined behind it.
    pub(super) fn complete(&mut self, app: &App, resp: Response, now: Instant) {
        let waiting = match std::mem::replace(&mut self.state, State::Open) {
            State::Waiting(w) if matches!(w.on, Awaited::Write(_)) => w,
            other => {
                self.state = other;
                return;
            }
        };
        self.respond(app, resp, waiting.answer, now);
        self.flush();
        self.on_ready(app, now);
    }

    fn send(&mut self, resp: &Response, minor: u8, head_only: bool) {
        // One reused buffer per connection: the encoded response is copied into rustls (which
        // encrypts it into records) right away. Wiped (responses carry data keys and
        // plaintexts), and freed if a big response left it large.
        resp.encode(minor, head_only, &mut self.out);
        let out = std::mem::take(&mut self.out);
        self.write_out(&out);
        self.out = out;
        zeroize::Zeroize::zeroize(&mut self.out);
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
    }

    /// The topic this connection was counted under as a subscriber (from before its head was
    /// queued, see `respond`), if any: the event loop uncounts it when the connection goes.
    pub(super) fn counted_topic(&self) -> Option<Topic> {
        self.counted
    }

    /// True while this connection streams a log.
    pub(super) fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming(_))
    }

    /// What this log stream subscribed to and who it is (while it streams).
    pub(super) fn subscriber(&self) -> Option<(&Subscription, &str)> {
        let State::Streaming(sub) = &self.state else {
            return None;
        };
        Some((sub, self.peer.identity.as_deref().unwrap_or_default()))
    }

    /// Ends a log stream (its subscriber may no longer read it): the last chunk, then close.
    pub(super) fn end_stream(&mut self) {
        if !self.is_streaming() {
            return;
        }
        self.write_out(b"0\r\n\r\n");
        self.close_now();
    }

    /// Appends one event to a log stream as an HTTP chunk. Returns false if not streaming.
    /// A subscriber with more than `limits.log_queue` unsent is dropped: its stream ends.
    pub(super) fn send_event(&mut self, line: &[u8]) -> bool {
        if !self.is_streaming() {
            return false;
        }
        if self.out_pending + line.len() > self.log_queue {
            self.state = State::Closed;
            self.recharge();
            return false;
        }
        self.send_chunk(line);
        self.flush();
        self.recharge();
        true
    }

    /// Writes `bytes` as one HTTP chunk of a chunked body.
    fn send_chunk(&mut self, bytes: &[u8]) {
        let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
        self.write_out(&out);
    }

    /// Queues plaintext for the client (counted until the socket took all of it).
    fn write_out(&mut self, bytes: &[u8]) {
        self.pump.tls.write_plaintext(bytes);
        self.out_pending += bytes.len();
    }

    /// Sends the next pieces of a produced body while the socket keeps up; after the last,
    /// the connection serves requests again (or closes).
    fn produce(&mut self, now: Instant) {
        // Only an event for a socket that blocked wakes this connection again: so keep going
        // until it blocks (or the body ends).
        self.flush();
        while !self.pump.tls.wants_write() {
            let State::Producing { producer, close } = &mut self.state else {
                return;
            };
            let close = *close;
            match producer.0.next_piece() {
                Ok(Some(piece)) if piece.is_empty() => {}
                Ok(Some(piece)) => self.send_chunk(&piece),
                Ok(None) => {
                    self.write_out(b"0\r\n\r\n");
                    self.state = if close { State::Closing } else { State::Open };
                    self.request_started = (!self.pump.input.is_empty()).then_some(now);
                }
                Err(why) => {
                    eprintln!("kes-node: a response body failed midway: {why}");
                    self.state = State::Closed;
                    return;
                }
            }
            self.flush();
        }
    }

    fn flush(&mut self) {
        match self.pump.flush(&mut self.socket) {
            Ok(true) => {
                self.write_blocked_since = None;
                self.out_pending = 0;
            }
            Ok(false) => {
                // Cleared only once everything is out: a client reading a byte now and
                // then does not keep a response (or a log stream) alive forever.
                self.write_blocked_since.get_or_insert_with(Instant::now);
            }
            Err(_) => self.state = State::Closed,
        }
    }
}

/// True if the budget holds a connection back now (noting that it `starved`). A body already
/// admitted is read on (it was charged in full when admitted): stopping it would hold its
/// memory without ever finishing.
fn held_back(
    standing: Standing,
    parser: &RequestParser,
    budget: &Budget,
    starved: &mut bool,
) -> bool {
    if standing == Standing::Admin || parser.in_body() || !budget.over() {
        return false;
    }
    *starved = true;
    true
}
