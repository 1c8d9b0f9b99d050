//! The event loop: one mio `Poll` serving the listener, every client connection and the
//! shutdown signals on a single thread. Handlers are synchronous and short; nothing blocks on
//! a client, so a slow or half-open client only holds its own connection until its timeout.
//! What cannot be answered at once goes to the [`Backend`] (a stateful node's cluster, or the
//! edge server's key store workers), which reports back when it is decided. The loop knows
//! connections and that trait, nothing of what implements it.
//!
//! With more than one worker (`limits.workers`, `--workers`), `workers.rs` runs this same loop
//! on N threads, each over its own listening socket on the shared address; one of them owns
//! the backend and the others proxy to it.
mod admission;
mod backend;
mod budget;
mod connection;
mod limits;
mod pump;
mod session;
pub(crate) mod stop;
pub(crate) mod tls;
pub(crate) mod workers;

pub(crate) use backend::{Backend, Completion, ConnRef, PeerStream, BACKEND_TOKENS};
pub(crate) use limits::Limits;
pub(crate) use pump::{Broken, Pump, PRE_AUTH_INPUT};
pub(crate) use session::Session;

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::SIGHUP;
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::api::logs::Topic;
use crate::api::App;
use admission::Admission;
use budget::Budget;
use connection::{Connection, Setup};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The program's own stop ([`stop::Trigger`]).
const STOP: Token = Token(2);
const FIRST_CONNECTION: usize = 3;
/// How often deadlines are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// How long shutdown waits for in-flight responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The event loop's connections and what it keeps about them.
struct Conns {
    slab: Slab<Connection>,
    admission: Admission,
    budget: Rc<Budget>,
    /// Connections that stopped for the budget, woken in order once there is room.
    starved: std::collections::VecDeque<(usize, u64)>,
    /// Connections that ended their turn with work left: run again after the next poll.
    yielded: std::collections::VecDeque<(usize, u64)>,
}

/// What stops the event loops: SIGINT and SIGTERM (if `signals`: a server of its own
/// process; an embedded one leaves the host's signals alone) and the program's
/// [`stop::Trigger`], whose receiving ends are here, one per loop.
pub(crate) struct Stopping {
    /// Installed before the server says it listens (see [`stop::handle_signals`]), so a
    /// signal sent the moment it does is not lost; only the first loop watches them.
    pub signals: Option<Signals>,
    pub receivers: Vec<stop::Receiver>,
    /// What pulls `receivers`: when one loop fails, the others are stopped with it.
    pub trigger: Arc<stop::Trigger>,
}

/// Serves `app` on `listener` until stopped (see [`Stopping`]), then shuts down gracefully.
/// TLS configurations are read from `tls` at each accept, so replacing them there (a reload)
/// applies to new connections. SIGHUP calls `reload` (on this thread, between events) when
/// signals are handled. This is one event loop (`workers: 1`); `workers::run` starts N of them.
pub(crate) fn serve(
    listener: TcpListener,
    tls: Arc<tls::Shared>,
    limits: &Limits,
    app: &App,
    backend: &mut dyn Backend,
    reload: &dyn Fn(&App),
    stopping: Stopping,
) -> io::Result<()> {
    let me = Worker {
        id: 0,
        listener,
        reload: Some(reload),
        signals: stopping.signals,
        stop: stopping.receivers.into_iter().next(),
        trigger: stopping.trigger,
    };
    serve_loop(me, tls, limits, app, backend)
}

/// One event loop of several: its number (0 owns the backend), its listening socket, on
/// the loop that handles signals what a reload does and the signals, its end of the
/// program's stop, and the trigger that stops every loop.
pub(crate) struct Worker<'r> {
    pub id: usize,
    pub listener: TcpListener,
    pub reload: Option<&'r dyn Fn(&App)>,
    /// One loop watches the process's signals and, on SIGINT/SIGTERM, stops all of them with
    /// `trigger`: a handler per loop would miss a signal sent before a loop's thread had
    /// registered its own, and that loop would serve on (the process never exiting).
    pub signals: Option<Signals>,
    pub stop: Option<stop::Receiver>,
    pub trigger: Arc<stop::Trigger>,
}

/// The event loop of [`serve`], as one of several workers.
pub(crate) fn serve_loop(
    me: Worker<'_>,
    tls: Arc<tls::Shared>,
    limits: &Limits,
    app: &App,
    backend: &mut dyn Backend,
) -> io::Result<()> {
    let Worker {
        id,
        listener,
        reload,
        signals,
        stop,
        trigger,
    } = me;
    // `None` once shutting down: the socket is closed then, so new connections are refused.
    let mut listener = Some(listener);
    crate::api::logs::enter_loop(id);
    let mut poll = Poll::new()?;
    backend.register(poll.registry())?;
    let mut events = Events::with_capacity(1024);
    if let Some(listener) = &mut listener {
        poll.registry()
            .register(listener, LISTENER, Interest::READABLE)?;
    }
    let mut signals = signals;
    if let Some(signals) = &mut signals {
        poll.registry()
            .register(signals, SIGNALS, Interest::READABLE)?;
    }
    let mut stop = stop;
    if let Some(stop) = &mut stop {
        poll.registry().register(stop, STOP, Interest::READABLE)?;
    }

    let budget = Rc::new(Budget::new(limits.memory));
    let setup = Setup {
        budget: budget.clone(),
        handshake_timeout: limits.handshake_timeout,
        log_queue: limits.log_queue,
    };
    let mut conns = Conns {
        slab: Slab::new(),
        admission: Admission::new(limits),
        budget,
        starved: Default::default(),
        yielded: Default::default(),
    };
    let mut shutdown_at: Option<Instant> = None;
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;

    loop {
        let now = Instant::now();
        let timeout = if conns.yielded.is_empty() {
            next_sweep
                .saturating_duration_since(now)
                .min(backend.next_timeout())
        } else {
            Duration::ZERO
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    if let Some(listener) = &listener {
                        let n = accept(
                            &poll, listener, &tls, &setup, &mut conns, app, &*backend, now,
                        );
                        app.metrics.accepted(id, n);
                    }
                }
                SIGNALS => {
                    let pending: Vec<i32> = match &mut signals {
                        Some(signals) => signals.pending().collect(),
                        None => Vec::new(),
                    };
                    if let Some(reload) = reload.filter(|_| pending.contains(&SIGHUP)) {
                        reload(app);
                    }
                    if pending.iter().any(|s| *s != SIGHUP) {
                        // Every other loop sees its stop end readable and shuts down too.
                        trigger.stop();
                        if shutdown_at.is_none() {
                            shutdown_at = Some(now);
                            begin_shutdown(&poll, listener.take(), &mut conns, app)?;
                        }
                    }
                }
                STOP => {
                    if shutdown_at.is_none() {
                        shutdown_at = Some(now);
                        begin_shutdown(&poll, listener.take(), &mut conns, app)?;
                    }
                }
                Token(t) if t >= BACKEND_TOKENS => {
                    backend.on_event(poll.registry(), app, Token(t));
                }
                Token(t) => {
                    let key = t - FIRST_CONNECTION;
                    if let Some(conn) = conns.slab.get_mut(key) {
                        if event.is_read_closed() || event.is_error() {
                            conn.hung_up();
                        }
                        conn.on_ready(app, now);
                        after_ready(&poll, &mut conns, key, app, backend, shutdown_at, now);
                    }
                }
            }
        }
        for (key, serial) in std::mem::take(&mut conns.yielded) {
            if let Some(conn) = conns.slab.get_mut(key).filter(|c| c.serial == serial) {
                conn.on_ready(app, now);
                after_ready(&poll, &mut conns, key, app, backend, shutdown_at, now);
            }
        }
        wake_starved(&poll, &mut conns, app, backend, shutdown_at, now);
        if now >= next_sweep {
            next_sweep = now + SWEEP_INTERVAL;
            end_revoked_streams(&mut conns, app);
            let expired: Vec<usize> = conns
                .slab
                .iter_mut()
                .filter_map(|(k, c)| {
                    c.check_timeouts(now);
                    c.is_closed().then_some(k)
                })
                .collect();
            for key in expired {
                update(&poll, &mut conns, key, app);
            }
        }
        backend.round(poll.registry(), app);
        answer_writes(&poll, &mut conns, app, backend, shutdown_at, now);
        publish_logs(&poll, &mut conns, app, id);
        if let Some(t) = shutdown_at {
            // A loop that owns the backend for others stays until they are done.
            if (conns.slab.is_empty() && !backend.busy()) || now - t > SHUTDOWN_GRACE {
                return Ok(());
            }
        }
    }
}

/// Closes the listening socket (new connections are refused from now on) and every
/// connection: idle ones now, busy ones after their answer.
fn begin_shutdown(
    poll: &Poll,
    listener: Option<TcpListener>,
    conns: &mut Conns,
    app: &App,
) -> io::Result<()> {
    if let Some(mut listener) = listener {
        poll.registry().deregister(&mut listener)?;
    }
    let keys: Vec<usize> = conns.slab.iter().map(|(k, _)| k).collect();
    for key in keys {
        conns.slab[key].close_after_current();
        update(poll, conns, key, app);
    }
    Ok(())
}

/// After a connection ran: hands a peer link to the backend, passes on what its request
/// needs (a write, a wait), notes a stop for the budget, removes it if closed.
fn after_ready(
    poll: &Poll,
    conns: &mut Conns,
    key: usize,
    app: &App,
    backend: &mut dyn Backend,
    shutdown_at: Option<Instant>,
    now: Instant,
) {
    let conn = &mut conns.slab[key];
    if conn.is_peer_link() {
        let conn = conns.slab.remove(key);
        conns.admission.removed(conn.ip);
        if let Some(stream) = conn.into_peer_stream(now) {
            backend.adopt(poll.registry(), app, stream);
        }
        return;
    }
    let me = ConnRef {
        token: Token(key + FIRST_CONNECTION),
        serial: conn.serial,
    };
    if let Some(pending) = conn.take_write() {
        backend.propose(app, me, pending);
    }
    if let Some(wait) = conn.take_wait() {
        backend.wait(app, me, wait);
    }
    if shutdown_at.is_some() {
        conn.close_after_current();
    }
    if conn.take_starved() {
        conns.starved.push_back((key, conn.serial));
    }
    if conn.take_yielded() {
        conns.yielded.push_back((key, conn.serial));
    }
    update(poll, conns, key, app);
}

/// Runs the connections that stopped for the budget, oldest first, while there is room.
fn wake_starved(
    poll: &Poll,
    conns: &mut Conns,
    app: &App,
    backend: &mut dyn Backend,
    shutdown_at: Option<Instant>,
    now: Instant,
) {
    let mut n = conns.starved.len();
    while n > 0 && !conns.budget.over() {
        n -= 1;
        let Some((key, serial)) = conns.starved.pop_front() else {
            return;
        };
        if let Some(conn) = conns.slab.get_mut(key).filter(|c| c.serial == serial) {
            conn.on_ready(app, now);
            after_ready(poll, conns, key, app, backend, shutdown_at, now);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn accept(
    poll: &Poll,
    listener: &TcpListener,
    tls: &tls::Shared,
    setup: &Setup,
    conns: &mut Conns,
    app: &App,
    backend: &dyn Backend,
    now: Instant,
) -> u64 {
    let mut accepted = 0;
    loop {
        match listener.accept() {
            Ok((mut socket, addr)) => {
                let open = conns.slab.len() + backend.connections();
                match conns.admission.admit(&conns.slab, addr.ip(), open) {
                    admission::Decision::Admit => {}
                    admission::Decision::Evict(key) => {
                        conns.slab[key].evict();
                        update(poll, conns, key, app);
                    }
                    // Dropped: closes the socket.
                    admission::Decision::Refuse => continue,
                }
                let _ = socket.set_nodelay(true);
                let entry = conns.slab.vacant_entry();
                let token = Token(entry.key() + FIRST_CONNECTION);
                if poll
                    .registry()
                    // Edge-triggered and registered once for both directions: a writable edge
                    // only comes after a write found the socket full, so nothing is
                    // re-registered per request (an epoll_ctl per event saved).
                    .register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
                    .is_ok()
                {
                    let conn = entry.insert(Connection::new(
                        socket,
                        Session::new(tls.current()),
                        setup,
                        now,
                    ));
                    let (key, ip) = (token.0 - FIRST_CONNECTION, conn.ip);
                    conns.admission.added(&conns.slab, key, ip);
                    accepted += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return accepted,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of file descriptors and the like: try again on the next event.
            Err(_) => return accepted,
        }
    }
}

/// Answers the connections whose writes finished and resumes those whose waits ended; a
/// connection with more pipelined requests hands on the next one.
fn answer_writes(
    poll: &Poll,
    conns: &mut Conns,
    app: &App,
    backend: &mut dyn Backend,
    shutdown_at: Option<Instant>,
    now: Instant,
) {
    let find = |conns: &Conns, r: ConnRef| -> Option<usize> {
        let key = r.token.0 - FIRST_CONNECTION;
        conns
            .slab
            .get(key)
            .is_some_and(|c| c.serial == r.serial)
            .then_some(key)
    };
    loop {
        // Steps taken while answering (pipelined requests) are persisted here too.
        backend.flush(app);
        let (writes, reads) = backend.take_decided();
        if writes.is_empty() && reads.is_empty() {
            return;
        }
        let mut touched = Vec::with_capacity(writes.len() + reads.len());
        for (r, pending, outcome) in writes {
            // Answered (and audited) even if the client went away: the write happened.
            let resp = app.finish(pending, outcome);
            if let Some(key) = find(conns, r) {
                conns.slab[key].complete(app, resp, now);
                touched.push(r);
            }
        }
        for (r, resume) in reads {
            if let Some(key) = find(conns, r) {
                conns.slab[key].resume(app, resume, now);
                touched.push(r);
            }
        }
        for r in touched {
            let Some(key) = find(conns, r) else { continue };
            // Answering may have let the connection serve what was pipelined behind; when
            // shutting down, it closes once answered.
            after_ready(poll, conns, key, app, backend, shutdown_at, now);
        }
    }
}

/// Writes queued log events to the connections streaming their topic, each only what its
/// subscriber may see (`api/logs.rs`).
fn publish_logs(poll: &Poll, conns: &mut Conns, app: &App, id: usize) {
    let events = app.logs.take(id);
    if events.is_empty() {
        return;
    }
    let streams: Vec<usize> = conns
        .slab
        .iter()
        .filter(|(_, c)| c.is_streaming())
        .map(|(k, _)| k)
        .collect();
    for key in streams {
        let conn = &mut conns.slab[key];
        let visible = match conn.subscriber() {
            Some((sub, id)) => crate::api::logs::visible(app, sub, id, &events),
            None => Vec::new(),
        };
        for event in visible {
            if conn.send_event(&event.line) {
                let counter = match event.topic {
                    Topic::Audit => &app.metrics.audit_events,
                    Topic::Error => &app.metrics.error_events,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        update(poll, conns, key, app);
    }
}

/// Ends the log streams whose subscriber may no longer read them (deleted, expired, its
/// policy changed): authorization holds for the whole life of a stream (issue 13).
fn end_revoked_streams(conns: &mut Conns, app: &App) {
    for (_, conn) in conns.slab.iter_mut() {
        let revoked = conn
            .subscriber()
            .is_some_and(|(sub, id)| !crate::api::logs::still_subscribed(app, sub, id));
        if revoked {
            conn.end_stream();
        }
    }
}

/// Removes a connection once it is closed (interest never changes: see `accept`).
fn update(poll: &Poll, conns: &mut Conns, key: usize, app: &App) {
    if conns.slab[key].is_closed() {
        let mut c = conns.slab.remove(key);
        c.release();
        conns.admission.removed(c.ip);
        if let Some(topic) = c.counted_topic() {
            app.logs.subscribe(topic, -1);
        }
        let _ = poll.registry().deregister(&mut c.socket);
    }
}
