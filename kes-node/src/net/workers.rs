//! N event loops (`limits.workers`, `--workers`). Each worker is a thread running the same
//! loop as a single-worker server ([`super::serve_loop`]) over its own listening socket: all
//! sockets are bound to one address with `SO_REUSEPORT`, so the kernel spreads new
//! connections across them, and each loop owns the connections it accepted. Reads (key
//! operations, describe, list, status) are answered on that loop: the [`App`] is shared.
//!
//! Worker 0 runs on the calling thread and owns the stateful backend (the cluster replica,
//! or the edge server's key store runtime): [`Owner`] wraps it. The other workers get a
//! [`Proxy`] backend that sends writes, waits and adopted peer links to worker 0 over a
//! channel (waking it with its `mio::Waker`); worker 0 proposes them with its own, so group
//! commit stays one transaction per round for the whole server, and sends each decision back
//! over the worker's channel, waking that worker. SIGHUP reloads on worker 0; SIGINT and
//! SIGTERM (or the program's stop, `stop.rs`) stop every worker gracefully, worker 0 last (it
//! serves the others' writes until they are done).
//!
//! Limits are split (see [`Limits::share`]): each loop admits its share of the connections
//! and has its share of the memory budget, so no counter is shared on the hot path.
//!
//! One worker is exactly the single loop: no thread, no channel, no `SO_REUSEPORT`.
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token, Waker};
use slab::Slab;

use super::{
    tls, Backend, Completion, ConnRef, Limits, PeerStream, Stopping, Worker, BACKEND_TOKENS,
};
use crate::api::{App, Pending, Resume, Wait};

/// Each worker's waker (far above the backends' own tokens, which count up from
/// [`BACKEND_TOKENS`]).
const WAKER: Token = Token(usize::MAX - 1);
/// Where an adopted peer link sits until the backend re-registers it.
const ADOPTING: Token = Token(usize::MAX - 2);
/// The owner's stand-in tokens for other workers' connections: above its own connections'
/// tokens, below the backend's.
const REMOTE_BASE: usize = BACKEND_TOKENS / 2;
/// Listen backlog of the `SO_REUSEPORT` sockets (each worker has its own queue).
const BACKLOG: i32 = 1024;

/// Binds `n` listening sockets to `addr` (non-blocking). With one, a plain socket, as a
/// single-loop server always had. With more, each has `SO_REUSEPORT`; the first is bound
/// first so that port 0 picks one port that all of them then share.
pub(crate) fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if n <= 1 {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        return Ok(vec![listener]);
    }
    let first = reuseport_listener(addr)?;
    let shared = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(reuseport_listener(shared)?);
    }
    Ok(all)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    // As std's bind does (a restarted server rebinds at once), and the shared port.
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(std::net::TcpListener::from(fd))
}

/// Serves `app` with one event loop per listener until stopped (see the module docs and
/// [`Stopping`]: one receiving end per listener). `backend` and `reload` stay on the calling
/// thread (worker 0).
pub(crate) fn run(
    listeners: Vec<std::net::TcpListener>,
    tls: Arc<tls::Shared>,
    limits: &Limits,
    app: &App,
    backend: &mut dyn Backend,
    reload: &dyn Fn(&App),
    stopping: Stopping,
) -> io::Result<()> {
    let n = listeners.len();
    app.metrics.set_workers(n);
    let mut listeners = listeners.into_iter().map(TcpListener::from_std);
    let first = listeners
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no listener"))?;
    if n == 1 {
        return super::serve(first, tls, limits, app, backend, reload, stopping);
    }
    let signals = stopping.signals;
    let trigger = stopping.trigger;
    let mut stops = stopping.receivers.into_iter().map(Some);
    let first_stop = stops.next().flatten();
    let share = limits.share(n);
    let (to_owner, from_workers) = mpsc::channel();
    let owner_waker: Arc<OnceLock<Arc<Waker>>> = Arc::default();
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        let mut result = Ok(());
        for (id, listener) in (1..n).zip(listeners) {
            let (tls, share, app, trigger) = (tls.clone(), &share, app, trigger.clone());
            let stop = stops.next().flatten();
            let mut proxy = Proxy::new(id, app, to_owner.clone(), owner_waker.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn_scoped(scope, move || {
                    let me = Worker {
                        id,
                        listener,
                        reload: None,
                        signals: None,
                        stop,
                        trigger,
                    };
                    let result = super::serve_loop(me, tls, share, app, &mut proxy);
                    if let Err(e) = &result {
                        eprintln!("kes-node: worker {id} failed: {e}");
                    }
                    result
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(to_owner);
        if result.is_ok() {
            let running = threads.len();
            let mut owner = Owner::new(backend, app, from_workers, owner_waker, running);
            let me = Worker {
                id: 0,
                listener: first,
                reload: Some(reload),
                signals,
                stop: first_stop,
                trigger: trigger.clone(),
            };
            result = super::serve_loop(me, tls, &share, app, &mut owner);
        }
        // Worker 0 failed (or a worker could not start): without it there are no writes, so
        // the others are stopped too, as a stop would (the server's own trigger), rather than
        // serving on until a signal.
        if result.is_err() {
            trigger.stop();
        }
        for t in threads {
            let _ = t.join();
        }
        result
    })
}

/// What a worker sends to worker 0.
enum ToOwner {
    /// A worker's channel for decisions, and how to wake it.
    Hello(usize, Sender<Decided>, Arc<Waker>),
    Propose(usize, ConnRef, Box<Pending>),
    Wait(usize, ConnRef, Wait),
    Adopt(Box<PeerStream>),
    /// A worker's loop ended.
    Gone,
}

/// What worker 0 sends back.
enum Decided {
    Write(Completion),
    Read(ConnRef, Resume),
}

/// Worker 0's backend: the real one, plus the other workers' requests.
struct Owner<'b> {
    inner: &'b mut dyn Backend,
    app: &'b App,
    requests: Receiver<ToOwner>,
    waker: Arc<OnceLock<Arc<Waker>>>,
    /// By worker id: where its decisions go.
    workers: Vec<Option<(Sender<Decided>, Arc<Waker>)>>,
    /// The other workers' connections with a request at the backend, by stand-in token.
    remote: Slab<(usize, ConnRef)>,
    /// Workers still running.
    running: usize,
}

impl<'b> Owner<'b> {
    fn new(
        inner: &'b mut dyn Backend,
        app: &'b App,
        requests: Receiver<ToOwner>,
        waker: Arc<OnceLock<Arc<Waker>>>,
        others: usize,
    ) -> Owner<'b> {
        Owner {
            inner,
            app,
            requests,
            waker,
            workers: Vec::new(),
            remote: Slab::new(),
            running: others,
        }
    }

    /// A stand-in for another worker's connection, unique among the owner's own.
    fn stand_in(&mut self, worker: usize, conn: ConnRef) -> ConnRef {
        let key = self.remote.insert((worker, conn));
        ConnRef {
            token: Token(REMOTE_BASE + key),
            serial: conn.serial,
        }
    }

    /// Takes the other workers' requests to the backend.
    fn drain(&mut self, registry: &Registry, app: &App) {
        while let Ok(msg) = self.requests.try_recv() {
            match msg {
                ToOwner::Hello(id, tx, waker) => {
                    if self.workers.len() <= id {
                        self.workers.resize_with(id + 1, || None);
                    }
                    self.workers[id] = Some((tx, waker));
                }
                ToOwner::Propose(id, conn, pending) => {
                    let me = self.stand_in(id, conn);
                    self.inner.propose(app, me, pending);
                }
                ToOwner::Wait(id, conn, wait) => {
                    let me = self.stand_in(id, conn);
                    self.inner.wait(app, me, wait);
                }
                ToOwner::Adopt(stream) => {
                    let mut stream = *stream;
                    // The backend re-registers it under its own token.
                    let both = Interest::READABLE | Interest::WRITABLE;
                    if registry
                        .register(&mut stream.socket, ADOPTING, both)
                        .is_ok()
                    {
                        self.inner.adopt(registry, app, stream);
                    }
                }
                ToOwner::Gone => self.running = self.running.saturating_sub(1),
            }
        }
    }

    /// Sends a decision for a stand-in back to its worker; returns the worker to wake.
    fn send_back(&mut self, token: Token, decided: impl FnOnce(ConnRef) -> Decided) -> usize {
        let (worker, conn) = self.remote.remove(token.0 - REMOTE_BASE);
        if let Some((tx, _)) = self.workers.get(worker).and_then(Option::as_ref) {
            let _ = tx.send(decided(conn));
        }
        worker
    }
}

fn is_remote(conn: &ConnRef) -> bool {
    (REMOTE_BASE..BACKEND_TOKENS).contains(&conn.token.0)
}

impl Backend for Owner<'_> {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        self.inner.register(registry)?;
        let waker = match self.inner.waker() {
            Some(shared) => shared,
            None => Arc::new(Waker::new(registry, WAKER)?),
        };
        self.app.logs.attach(0, waker.clone());
        let _ = self.waker.set(waker);
        Ok(())
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn next_timeout(&self) -> Duration {
        self.inner.next_timeout()
    }

    fn on_event(&mut self, registry: &Registry, app: &App, token: Token) {
        // The waker may be the backend's own: then its event is the backend's too.
        self.drain(registry, app);
        if token != WAKER {
            self.inner.on_event(registry, app, token);
        }
    }

    fn waker(&self) -> Option<Arc<Waker>> {
        self.waker.get().cloned()
    }

    fn adopt(&mut self, registry: &Registry, app: &App, stream: PeerStream) {
        self.inner.adopt(registry, app, stream);
    }

    fn propose(&mut self, app: &App, conn: ConnRef, pending: Box<Pending>) {
        self.inner.propose(app, conn, pending);
    }

    fn wait(&mut self, app: &App, conn: ConnRef, wait: Wait) {
        self.inner.wait(app, conn, wait);
    }

    fn round(&mut self, registry: &Registry, app: &App) {
        // Also what was sent before this loop's waker existed.
        self.drain(registry, app);
        self.inner.round(registry, app);
    }

    fn flush(&mut self, app: &App) {
        self.inner.flush(app);
    }

    fn take_decided(&mut self) -> (Vec<Completion>, Vec<(ConnRef, Resume)>) {
        let (writes, reads) = self.inner.take_decided();
        if self.remote.is_empty() {
            return (writes, reads);
        }
        let mut woken = Vec::new();
        let (mut own_writes, mut own_reads) = (Vec::new(), Vec::new());
        for (conn, pending, outcome) in writes {
            if is_remote(&conn) {
                woken.push(self.send_back(conn.token, |c| Decided::Write((c, pending, outcome))));
            } else {
                own_writes.push((conn, pending, outcome));
            }
        }
        for (conn, resume) in reads {
            if is_remote(&conn) {
                woken.push(self.send_back(conn.token, |c| Decided::Read(c, resume)));
            } else {
                own_reads.push((conn, resume));
            }
        }
        woken.sort_unstable();
        woken.dedup();
        for id in woken {
            if let Some((_, waker)) = self.workers.get(id).and_then(Option::as_ref) {
                let _ = waker.wake();
            }
        }
        (own_writes, own_reads)
    }

    fn busy(&self) -> bool {
        self.running > 0 || self.inner.busy()
    }
}

/// The backend of workers other than 0: everything goes to worker 0.
struct Proxy<'a> {
    id: usize,
    app: &'a App,
    to_owner: Sender<ToOwner>,
    owner: Arc<OnceLock<Arc<Waker>>>,
    decided: Option<Receiver<Decided>>,
    completions: Vec<Completion>,
    resumed: Vec<(ConnRef, Resume)>,
}

impl<'a> Proxy<'a> {
    fn new(
        id: usize,
        app: &'a App,
        to_owner: Sender<ToOwner>,
        owner: Arc<OnceLock<Arc<Waker>>>,
    ) -> Proxy<'a> {
        Proxy {
            id,
            app,
            to_owner,
            owner,
            decided: None,
            completions: Vec::new(),
            resumed: Vec::new(),
        }
    }

    fn send(&self, msg: ToOwner) {
        if self.to_owner.send(msg).is_ok() {
            // Before worker 0 has its waker it drains the channel in its first round.
            if let Some(waker) = self.owner.get() {
                let _ = waker.wake();
            }
        }
    }
}

impl Drop for Proxy<'_> {
    fn drop(&mut self) {
        self.send(ToOwner::Gone);
    }
}

impl Backend for Proxy<'_> {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        let waker = Arc::new(Waker::new(registry, WAKER)?);
        let (tx, rx) = mpsc::channel();
        self.decided = Some(rx);
        self.app.logs.attach(self.id, waker.clone());
        self.send(ToOwner::Hello(self.id, tx, waker));
        Ok(())
    }

    fn next_timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn on_event(&mut self, _: &Registry, _: &App, token: Token) {
        if token != WAKER {
            return;
        }
        let Some(rx) = &self.decided else { return };
        while let Ok(d) = rx.try_recv() {
            match d {
                Decided::Write(c) => self.completions.push(c),
                Decided::Read(conn, resume) => self.resumed.push((conn, resume)),
            }
        }
    }

    fn adopt(&mut self, registry: &Registry, _: &App, mut stream: PeerStream) {
        // Worker 0 registers it with its own poll.
        let _ = registry.deregister(&mut stream.socket);
        self.send(ToOwner::Adopt(Box::new(stream)));
    }

    fn propose(&mut self, _: &App, conn: ConnRef, pending: Box<Pending>) {
        self.send(ToOwner::Propose(self.id, conn, pending));
    }

    fn wait(&mut self, _: &App, conn: ConnRef, wait: Wait) {
        self.send(ToOwner::Wait(self.id, conn, wait));
    }

    fn round(&mut self, _: &Registry, _: &App) {}

    fn flush(&mut self, _: &App) {}

    fn take_decided(&mut self) -> (Vec<Completion>, Vec<(ConnRef, Resume)>) {
        (
            std::mem::take(&mut self.completions),
            std::mem::take(&mut self.resumed),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_shared_and_port_zero_works() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let all = super::bind(addr, 3).unwrap();
        let ports: Vec<u16> = all.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        // Another process (or server) without SO_REUSEPORT cannot take the port.
        assert!(std::net::TcpListener::bind(all[0].local_addr().unwrap()).is_err());
    }

    #[test]
    fn limits_are_split() {
        let l = crate::net::Limits::default().share(3);
        assert_eq!(l.connections, (16 * 1024usize).div_ceil(3));
        assert_eq!(l.memory, (256usize << 20).div_ceil(3));
        assert_eq!(crate::net::Limits::default().share(1), Default::default());
    }
}
