//! The edge server's side of the event loop ([`crate::net::Backend`]): worker threads run the
//! key store calls, a health thread checks the store, and a `mio::Waker` tells the loop that
//! answers are in. Requests for the same missing key share one fetch.
use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Registry, Token, Waker};

use super::{format, Edge, KeyStoreError};
use crate::api::{App, Fetch, Fetched, Pending, Resume, Wait};
use crate::command::Command;
use crate::net::{Backend, Completion, ConnRef, PeerStream, BACKEND_TOKENS};
use crate::records::KeyRecord;
use crate::store::{Corruption, IoFailure, StoreError};

/// The waker's token (the first of the backend's tokens).
const WAKER: Token = Token(BACKEND_TOKENS);
/// How often expired cache entries are dropped (lookups check expiry themselves).
const SWEEP: Duration = Duration::from_secs(1);
/// How often a key store that is down is checked.
const OFFLINE_PING: Duration = Duration::from_secs(1);

enum Job {
    Get(String),
    List(ConnRef, String),
    Write(ConnRef, Box<Pending>),
}

enum Done {
    Got(String, Result<KeyRecord, StoreError>),
    Listed(ConnRef, Result<Vec<String>, StoreError>),
    Wrote(ConnRef, Box<Pending>, Result<(), StoreError>),
}

/// A fetch in flight: who waits for it, and whether a delete overtook it (then its answer is
/// passed on but not cached).
struct Inflight {
    waiters: Vec<ConnRef>,
    stale: bool,
}

pub(crate) struct Runtime {
    edge: Arc<Edge>,
    workers: usize,
    jobs: Option<Sender<Job>>,
    done: Option<Receiver<Done>>,
    inflight: HashMap<String, Inflight>,
    completions: Vec<Completion>,
    resumed: Vec<(ConnRef, Resume)>,
    next_sweep: Instant,
    /// Registered with the loop's poll; shared with `net/workers.rs` (one waker per poll).
    waker: Option<Arc<Waker>>,
    /// Whether the key store answered when the loop last looked (outages are logged once).
    was_up: bool,
}

impl Runtime {
    /// `workers` threads call the key store (at least one).
    pub(crate) fn new(edge: Arc<Edge>, workers: usize) -> Runtime {
        Runtime {
            edge,
            workers: workers.max(1),
            jobs: None,
            done: None,
            inflight: HashMap::new(),
            completions: Vec::new(),
            resumed: Vec::new(),
            next_sweep: Instant::now() + SWEEP,
            waker: None,
            was_up: true,
        }
    }

    fn submit(&mut self, job: Job) {
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // No worker takes it (they died): answer at once.
        let why = || StoreError::Io(IoFailure::KeyStoreWorkersGone);
        match job {
            Job::Get(name) => self.finish_fetch(&name, Err(why())),
            Job::List(conn, _) => self
                .resumed
                .push((conn, Resume::Fetched(Fetched::List(Err(why()))))),
            Job::Write(conn, pending) => self.completions.push((conn, pending, Err(why()))),
        }
    }

    fn finish_fetch(&mut self, name: &str, result: Result<KeyRecord, StoreError>) {
        let Some(inflight) = self.inflight.remove(name) else {
            return;
        };
        if let (Ok(rec), false) = (&result, inflight.stale) {
            self.edge.cache.insert(name, rec.clone(), Instant::now());
        }
        for conn in inflight.waiters {
            self.resumed
                .push((conn, Resume::Fetched(Fetched::Key(result.clone()))));
        }
    }

    fn drain(&mut self, app: &App) {
        let Some(done) = self.done.take() else { return };
        while let Ok(d) = done.try_recv() {
            match d {
                Done::Got(name, result) => {
                    log_failure(app, &format!("reading key '{name}'"), &result);
                    self.finish_fetch(&name, result);
                }
                Done::Listed(conn, result) => {
                    log_failure(app, "listing keys", &result);
                    self.resumed
                        .push((conn, Resume::Fetched(Fetched::List(result))));
                }
                Done::Wrote(conn, pending, outcome) => {
                    log_failure(app, "writing a key", &outcome);
                    if let Command::DeleteKey { name, .. } = &pending.write.cmd {
                        if matches!(outcome, Ok(()) | Err(StoreError::NotFound)) {
                            self.edge.cache.remove(name);
                            if let Some(f) = self.inflight.get_mut(name) {
                                f.stale = true;
                            }
                        }
                    }
                    self.completions.push((conn, pending, outcome));
                }
            }
        }
        self.done = Some(done);
    }
}

impl Runtime {
    /// Logs when the key store stops answering and when it is back.
    fn log_health(&mut self, app: &App) {
        let health = self.edge.health();
        let store = self.edge.store.describe();
        match (&health, self.was_up) {
            (Err(err), true) => {
                let offline = self.edge.cache.config().offline;
                let cache = if offline.is_zero() {
                    String::new()
                } else {
                    format!(
                        "; cached keys serve for up to {}",
                        crate::timefmt::go_duration(offline)
                    )
                };
                app.logs
                    .error(&format!("edge: key store {store}: {err}{cache}"));
            }
            (Ok(_), false) => app
                .logs
                .error(&format!("edge: key store {store} answers again")),
            _ => {}
        }
        self.was_up = health.is_ok();
    }
}

/// Logs why a key store call failed (the client only gets upstream's generic message).
fn log_failure<T>(app: &App, what: &str, result: &Result<T, StoreError>) {
    match result {
        Err(StoreError::Io(why)) => app.logs.error(&format!("edge: key store: {what}: {why}")),
        Err(StoreError::Corrupted(why)) => {
            app.logs.error(&format!("edge: key store: {what}: {why}"))
        }
        _ => {}
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.edge.stop();
    }
}

impl Backend for Runtime {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        let waker = Arc::new(Waker::new(registry, WAKER)?);
        self.waker = Some(waker.clone());
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        for i in 0..self.workers {
            let (jobs, done, waker, edge) = (
                jobs_rx.clone(),
                done_tx.clone(),
                waker.clone(),
                self.edge.clone(),
            );
            std::thread::Builder::new()
                .name(format!("keystore-{i}"))
                .spawn(move || work(&edge, &jobs, &done, &waker))?;
        }
        let edge = self.edge.clone();
        std::thread::Builder::new()
            .name("keystore-health".into())
            .spawn(move || health(&edge))?;
        self.jobs = Some(jobs_tx);
        self.done = Some(done_rx);
        Ok(())
    }

    fn waker(&self) -> Option<Arc<Waker>> {
        self.waker.clone()
    }

    fn next_timeout(&self) -> Duration {
        self.next_sweep.saturating_duration_since(Instant::now())
    }

    fn on_event(&mut self, _: &Registry, app: &App, token: Token) {
        if token == WAKER {
            self.drain(app);
        }
    }

    fn adopt(&mut self, _: &Registry, _: &App, _stream: PeerStream) {
        // An edge server has no peers: the connection is dropped.
    }

    fn propose(&mut self, _: &App, conn: ConnRef, pending: Box<Pending>) {
        self.submit(Job::Write(conn, pending));
    }

    fn wait(&mut self, _: &App, conn: ConnRef, wait: Wait) {
        match wait {
            // No cluster, no pending writes: nothing to wait for.
            Wait::Gate(_) => self.resumed.push((conn, Resume::Granted)),
            Wait::Fetch(Fetch::List(prefix)) => self.submit(Job::List(conn, prefix)),
            Wait::Fetch(Fetch::Key(name)) => {
                if let Some(f) = self.inflight.get_mut(&name) {
                    f.waiters.push(conn);
                    return;
                }
                self.inflight.insert(
                    name.clone(),
                    Inflight {
                        waiters: vec![conn],
                        stale: false,
                    },
                );
                self.submit(Job::Get(name));
            }
        }
    }

    fn round(&mut self, _: &Registry, app: &App) {
        // Answers that came in while the loop was busy with other events.
        self.drain(app);
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            self.edge.cache.sweep(now);
            self.log_health(app);
        }
    }

    fn flush(&mut self, _: &App) {}

    fn take_decided(&mut self) -> (Vec<Completion>, Vec<(ConnRef, Resume)>) {
        (
            std::mem::take(&mut self.completions),
            std::mem::take(&mut self.resumed),
        )
    }
}

/// A worker: takes jobs until the runtime is gone.
fn work(edge: &Edge, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>, waker: &Waker) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let result = match job {
            Job::Get(name) => {
                edge.fetches.fetch_add(1, Ordering::Relaxed);
                let result = edge.store.get(&name).map_err(|e| observe(edge, e));
                if result.is_ok() {
                    edge.observed(true, None);
                }
                let rec = result.and_then(|value| {
                    format::decode(&value).map_err(|why| {
                        StoreError::Corrupted(Corruption::KeyStoreValue {
                            name: name.clone(),
                            why: why.to_string(),
                        })
                    })
                });
                Done::Got(name, rec)
            }
            Job::List(conn, prefix) => {
                let result = edge.store.list(&prefix).map_err(|e| observe(edge, e));
                Done::Listed(conn, result)
            }
            Job::Write(conn, pending) => {
                let outcome = match &pending.write.cmd {
                    Command::CreateKey { name, key, .. } => {
                        edge.store.create(name, &format::encode(key))
                    }
                    Command::DeleteKey { name, .. } => edge.store.delete(name),
                    _ => Err(KeyStoreError::Failed(
                        "the edge server stores nothing but keys".into(),
                    )),
                };
                if outcome.is_ok() {
                    edge.observed(true, None);
                }
                Done::Wrote(conn, pending, outcome.map_err(|e| observe(edge, e)))
            }
        };
        if done.send(result).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

/// Maps a key store error, noting an unreachable store.
fn observe(edge: &Edge, err: KeyStoreError) -> StoreError {
    match err {
        KeyStoreError::NotFound => StoreError::NotFound,
        KeyStoreError::Exists => StoreError::Exists,
        KeyStoreError::Unreachable(why) => {
            edge.observed(false, Some(&why));
            StoreError::Io(IoFailure::KeyStore {
                store: edge.store.describe(),
                unreachable: true,
                why,
            })
        }
        KeyStoreError::Failed(why) => {
            edge.observed(true, None);
            StoreError::Io(IoFailure::KeyStore {
                store: edge.store.describe(),
                unreachable: false,
                why,
            })
        }
    }
}

/// The health check: asks the store every `ping` (every second while it is down).
fn health(edge: &Edge) {
    while !edge.stopped.load(Ordering::Relaxed) {
        let result = edge.store.status();
        let down = result.is_err();
        edge.report(result);
        let wait = if down {
            OFFLINE_PING.min(edge.ping)
        } else {
            edge.ping
        };
        let until = Instant::now() + wait;
        while Instant::now() < until && !edge.stopped.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100).min(wait));
        }
    }
}
