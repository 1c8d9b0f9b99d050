//! The event loop: one mio `Poll` serving the listener, every client connection and the
//! shutdown signals on a single thread. Handlers are synchronous and short; nothing blocks on
//! a client, so a slow or half-open client only holds its own connection until its timeout.
//! What cannot be answered at once goes to the [`Backend`] (the cluster, or the edge server's
//! key store workers), which reports back when it is decided.
mod backend;
mod connection;
pub mod tls;

pub use backend::Backend;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::api::logs::Topic;
use crate::api::App;
use crate::cluster::{ConnRef, LINK_BASE};
use connection::Connection;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// How often deadlines are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// How long shutdown waits for in-flight responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections beyond this are refused (accepted and closed at once).
const MAX_CONNECTIONS: usize = 16 * 1024;

/// Serves `app` on `listener` until SIGINT or SIGTERM, then shuts down gracefully.
pub fn serve(
    mut listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: &App,
    backend: &mut dyn Backend,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    backend.register(poll.registry())?;
    let mut events = Events::with_capacity(1024);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    let mut conns: Slab<Connection> = Slab::new();
    let mut shutdown_at: Option<Instant> = None;
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;

    loop {
        let now = Instant::now();
        let timeout = next_sweep
            .saturating_duration_since(now)
            .min(backend.next_timeout());
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    if shutdown_at.is_none() {
                        accept(&poll, &listener, &tls, &mut conns, now);
                    }
                }
                SIGNALS => {
                    if signals.pending().next().is_some() && shutdown_at.is_none() {
                        shutdown_at = Some(now);
                        poll.registry().deregister(&mut listener)?;
                        let keys: Vec<usize> = conns.iter().map(|(k, _)| k).collect();
                        for key in keys {
                            conns[key].close_after_current();
                            // Idle connections close now; busy ones after their answer.
                            update(&poll, &mut conns, key, app);
                        }
                    }
                }
                Token(t) if t >= LINK_BASE => {
                    backend.on_event(poll.registry(), app, Token(t));
                }
                Token(t) => {
                    let key = t - FIRST_CONNECTION;
                    if let Some(conn) = conns.get_mut(key) {
                        conn.on_ready(app, now);
                        if conn.is_peer_link() {
                            let link = conns.remove(key).into_link(now);
                            backend.adopt(poll.registry(), app, link);
                            continue;
                        }
                        let me = ConnRef {
                            token: Token(t),
                            serial: conn.serial,
                        };
                        if let Some(pending) = conn.take_write() {
                            backend.propose(app, me, pending);
                        }
                        if let Some(wait) = conn.take_wait() {
                            backend.wait(app, me, wait);
                        }
                        if let Some(topic) = conn.take_new_subscription() {
                            app.logs.subscribe(topic, 1);
                        }
                        if shutdown_at.is_some() {
                            conn.close_after_current();
                        }
                        update(&poll, &mut conns, key, app);
                    }
                }
            }
        }
        if now >= next_sweep {
            next_sweep = now + SWEEP_INTERVAL;
            end_revoked_streams(&mut conns, app);
            let expired: Vec<usize> = conns
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
        answer_writes(&poll, &mut conns, app, backend, now);
        publish_logs(&poll, &mut conns, app);
        if let Some(t) = shutdown_at {
            if conns.is_empty() || now - t > SHUTDOWN_GRACE {
                return Ok(());
            }
        }
    }
}

fn accept(
    poll: &Poll,
    listener: &TcpListener,
    tls: &Arc<rustls::ServerConfig>,
    conns: &mut Slab<Connection>,
    now: Instant,
) {
    loop {
        match listener.accept() {
            Ok((mut socket, _)) => {
                if conns.len() >= MAX_CONNECTIONS {
                    continue; // dropped: closes the socket
                }
                let _ = socket.set_nodelay(true);
                let Ok(session) = rustls::ServerConnection::new(tls.clone()) else {
                    continue;
                };
                let entry = conns.vacant_entry();
                let token = Token(entry.key() + FIRST_CONNECTION);
                if poll
                    .registry()
                    // Edge-triggered and registered once for both directions: a writable edge
                    // only comes after a write found the socket full, so nothing is
                    // re-registered per request (an epoll_ctl per event saved).
                    .register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
                    .is_ok()
                {
                    entry.insert(Connection::new(socket, session, now));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of file descriptors and the like: try again on the next event.
            Err(_) => return,
        }
    }
}

/// Answers the connections whose writes finished and resumes those whose waits ended; a
/// connection with more pipelined requests hands on the next one.
fn answer_writes(
    poll: &Poll,
    conns: &mut Slab<Connection>,
    app: &App,
    backend: &mut dyn Backend,
    now: Instant,
) {
    let find = |conns: &Slab<Connection>, r: ConnRef| -> Option<usize> {
        let key = r.token.0 - FIRST_CONNECTION;
        conns
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
                conns[key].complete(app, resp, now);
                touched.push(r);
            }
        }
        for (r, resume) in reads {
            if let Some(key) = find(conns, r) {
                conns[key].resume(app, resume, now);
                touched.push(r);
            }
        }
        for r in touched {
            let Some(key) = find(conns, r) else { continue };
            let conn = &mut conns[key];
            // Answering may have let the connection serve what was pipelined behind.
            if let Some(next) = conn.take_write() {
                backend.propose(app, r, next);
            }
            if let Some(wait) = conn.take_wait() {
                backend.wait(app, r, wait);
            }
            if let Some(topic) = conn.take_new_subscription() {
                app.logs.subscribe(topic, 1);
            }
            update(poll, conns, key, app);
        }
    }
}

/// Writes queued log events to the connections streaming their topic, each only what its
/// subscriber may see (`api/logs.rs`).
fn publish_logs(poll: &Poll, conns: &mut Slab<Connection>, app: &App) {
    let events = app.logs.take();
    if events.is_empty() {
        return;
    }
    let streams: Vec<usize> = conns
        .iter()
        .filter(|(_, c)| c.topic().is_some())
        .map(|(k, _)| k)
        .collect();
    for key in streams {
        let conn = &mut conns[key];
        for event in &events {
            let visible = conn
                .subscriber()
                .is_some_and(|(sub, id)| crate::api::logs::may_see(app, sub, id, event));
            if visible && conn.send_event(&event.line) {
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
fn end_revoked_streams(conns: &mut Slab<Connection>, app: &App) {
    for (_, conn) in conns.iter_mut() {
        let revoked = conn
            .subscriber()
            .is_some_and(|(sub, id)| !crate::api::logs::still_subscribed(app, sub, id));
        if revoked {
            conn.end_stream();
        }
    }
}

/// Removes a connection once it is closed (interest never changes: see `accept`).
fn update(poll: &Poll, conns: &mut Slab<Connection>, key: usize, app: &App) {
    if conns[key].is_closed() {
        let mut c = conns.remove(key);
        if let Some(topic) = c.topic() {
            app.logs.subscribe(topic, -1);
        }
        let _ = poll.registry().deregister(&mut c.socket);
    }
}
