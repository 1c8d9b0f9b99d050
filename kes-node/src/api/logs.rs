//! The audit and error logs: events go to the subscribers of `/v1/log/audit` and
//! `/v1/log/error` (long-lived ndjson streams held by the event loop) and, if configured, to
//! standard output / standard error.
//!
//! Handlers only queue events here; the event loop takes them after each round of I/O and
//! writes them to the streaming connections, so producing an event never blocks on a client.
//! With several event loops (`net/workers.rs`) each loop has its own queue: an event is
//! copied to every loop holding a subscriber of its topic, and a loop other than the one that
//! produced it is woken (its `mio::Waker`) to publish it at once.
//!
//! Who sees what (issue 13): every event belongs to an enclave (a request's `Kes-Enclave`,
//! `default` without one; server-wide errors belong to `default`). A subscriber receives an
//! event only if it may read that log in the event's enclave right now (the system admin: all
//! of them), and its stream ends once it may no longer read the log it subscribed to (deleted,
//! expired or re-assigned): [`may_see`], [`still_subscribed`], checked by the event loop.
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::App;
use crate::http::Request;

/// What the audit log records of a request.
pub(crate) struct Audited<'a> {
    pub ip: Option<IpAddr>,
    pub path: &'a str,
    pub identity: &'a str,
    pub enclave: &'a str,
}

/// Which stream an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    Audit,
    Error,
}

impl Topic {
    /// The topic of a log stream path.
    pub(crate) fn of_path(path: &str) -> Option<Topic> {
        match path {
            "/v1/log/audit" => Some(Topic::Audit),
            "/v1/log/error" => Some(Topic::Error),
            _ => None,
        }
    }

    /// The path that streams this topic (what a subscriber must be allowed).
    pub(crate) fn path(self) -> &'static str {
        match self {
            Topic::Audit => "/v1/log/audit",
            Topic::Error => "/v1/log/error",
        }
    }
}

/// One queued event: its stream, its enclave and its ndjson line.
#[derive(Clone)]
pub(crate) struct Event {
    pub topic: Topic,
    pub enclave: String,
    pub line: Vec<u8>,
}

/// What a streaming connection subscribed to: a topic, in an enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub topic: Topic,
    pub enclave: String,
}

impl Subscription {
    /// The subscription `req` asks for, if it is a log stream request.
    pub(crate) fn of_request(app: &App, req: &Request) -> Option<Subscription> {
        Some(Subscription {
            topic: Topic::of_path(&req.path)?,
            enclave: app.enclave_of(req),
        })
    }
}

/// True while `identity` may still read the log it subscribed to (in its enclave).
pub(crate) fn still_subscribed(app: &App, sub: &Subscription, identity: &str) -> bool {
    app.skip_auth.contains(sub.topic.path())
        || crate::auth::still_allowed(
            &app.store,
            &app.grants,
            &app.admin,
            &sub.enclave,
            identity,
            sub.topic.path(),
        )
}

/// True if the subscriber `identity` may receive `event`: its topic, and an enclave whose log
/// it may read now.
pub(crate) fn may_see(app: &App, sub: &Subscription, identity: &str, event: &Event) -> bool {
    event.topic == sub.topic
        && (app.skip_auth.contains(sub.topic.path())
            || crate::auth::still_allowed(
                &app.store,
                &app.grants,
                &app.admin,
                &event.enclave,
                identity,
                sub.topic.path(),
            ))
}

/// The events of a batch the subscriber `identity` may receive, in order: [`may_see`],
/// decided once per enclave of the batch.
pub(crate) fn visible<'e>(
    app: &App,
    sub: &Subscription,
    identity: &str,
    events: &'e [Event],
) -> Vec<&'e Event> {
    let mut decided: Vec<(&str, bool)> = Vec::new();
    let mut out = Vec::new();
    for event in events.iter().filter(|e| e.topic == sub.topic) {
        let seen = match decided.iter().find(|(e, _)| *e == event.enclave) {
            Some(&(_, seen)) => seen,
            None => {
                let seen = may_see(app, sub, identity, event);
                decided.push((&event.enclave, seen));
                seen
            }
        };
        if seen {
            out.push(event);
        }
    }
    out
}

thread_local! {
    /// The event loop this thread runs (0 outside the loops: the only one with one worker).
    static LOOP: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as event loop `id`: its subscriptions are counted in that loop's queue.
pub(crate) fn enter_loop(id: usize) {
    LOOP.with(|l| l.set(id));
}

/// One event loop's queue and subscribers.
#[derive(Default)]
struct LoopQueue {
    events: Vec<Event>,
    audit: usize,
    error: usize,
    /// Wakes the loop when another thread queued an event for it (none with one loop).
    waker: Option<Arc<mio::Waker>>,
}

impl LoopQueue {
    fn subscribers(&mut self, topic: Topic) -> &mut usize {
        match topic {
            Topic::Audit => &mut self.audit,
            Topic::Error => &mut self.error,
        }
    }
}

/// Queued events and who wants them.
#[derive(Default)]
pub(crate) struct LogHub {
    /// By event loop.
    loops: Mutex<Vec<LoopQueue>>,
    /// All loops' subscribers (checked without the lock before an event is made).
    audit_subscribers: AtomicUsize,
    error_subscribers: AtomicUsize,
    /// Audit events to standard output (`log.audit: on`; a SIGHUP may change it).
    pub audit_to_stdout: std::sync::atomic::AtomicBool,
    /// Error events to standard error (`log.error: on`; a SIGHUP may change it).
    pub error_to_stderr: std::sync::atomic::AtomicBool,
}

#[derive(Serialize)]
struct AuditEvent<'a> {
    time: String,
    request: AuditRequest<'a>,
    response: AuditResponse,
}

#[derive(Serialize)]
struct AuditRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    path: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    identity: &'a str,
    /// v0.22's field, omitted for the default enclave (as for clients that never name one).
    #[serde(skip_serializing_if = "is_default_enclave")]
    enclave: &'a str,
}

fn is_default_enclave(e: &&str) -> bool {
    *e == crate::store::DEFAULT_ENCLAVE
}

#[derive(Serialize)]
struct AuditResponse {
    code: u16,
    /// Nanoseconds, as the Go client decodes a `time.Duration`.
    time: u64,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    message: &'a str,
}

impl LogHub {
    fn subscribers(&self, topic: Topic) -> &AtomicUsize {
        match topic {
            Topic::Audit => &self.audit_subscribers,
            Topic::Error => &self.error_subscribers,
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Vec<LoopQueue>> {
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(queues: &mut Vec<LoopQueue>, id: usize) -> &mut LoopQueue {
        if queues.len() <= id {
            queues.resize_with(id + 1, LoopQueue::default);
        }
        &mut queues[id]
    }

    /// Event loop `id` is woken by `waker` when another thread queued events for it.
    pub(crate) fn attach(&self, id: usize, waker: Arc<mio::Waker>) {
        Self::queue(&mut self.queues(), id).waker = Some(waker);
    }

    /// A stream of `topic` opened (`+1`) or closed (`-1`) on this thread's event loop.
    pub(crate) fn subscribe(&self, topic: Topic, delta: isize) {
        {
            let mut queues = self.queues();
            let n = Self::queue(&mut queues, LOOP.with(Cell::get)).subscribers(topic);
            *n = n.saturating_add_signed(delta);
        }
        let n = self.subscribers(topic);
        if delta >= 0 {
            n.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(delta.unsigned_abs()))
            });
        }
    }

    /// Records that a request to `enclave` was answered.
    pub(crate) fn audit(&self, req: Audited<'_>, code: u16, took: Duration) {
        let Audited {
            ip,
            path,
            identity,
            enclave,
        } = req;
        let streaming = self.audit_subscribers.load(Ordering::Relaxed) > 0;
        if !streaming && !self.audit_to_stdout.load(Ordering::Relaxed) {
            return;
        }
        let event = AuditEvent {
            time: crate::timefmt::rfc3339(crate::timefmt::now()),
            request: AuditRequest {
                ip: ip.map(|i| i.to_string()),
                path,
                identity,
                enclave,
            },
            response: AuditResponse {
                code,
                time: took.as_nanos().min(u64::MAX as u128) as u64,
            },
        };
        let line = crate::http::go_json(&event);
        if self.audit_to_stdout.load(Ordering::Relaxed) {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&line);
        }
        if streaming {
            self.push(Event {
                topic: Topic::Audit,
                enclave: enclave.to_owned(),
                line,
            });
        }
    }

    /// Records a server-wide error (never with secrets in `message`); its stream shows it to
    /// those who may read the error log of the default enclave.
    pub(crate) fn error(&self, message: &str) {
        self.error_in(crate::store::DEFAULT_ENCLAVE, message)
    }

    /// Records an error of a request to `enclave` (never with secrets in `message`).
    pub(crate) fn error_in(&self, enclave: &str, message: &str) {
        let text = format!(
            "time={} level=ERROR msg={message:?}",
            crate::timefmt::rfc3339(crate::timefmt::now())
        );
        if self.error_to_stderr.load(Ordering::Relaxed) {
            eprintln!("{text}");
        }
        if self.error_subscribers.load(Ordering::Relaxed) > 0 {
            let line = crate::http::go_json(&ErrorEvent { message: &text });
            self.push(Event {
                topic: Topic::Error,
                enclave: enclave.to_owned(),
                line,
            });
        }
    }

    /// Queues `event` for every loop with a subscriber of its topic; wakes those other than
    /// this thread's.
    fn push(&self, event: Event) {
        let me = LOOP.with(Cell::get);
        let mut queues = self.queues();
        let wanted: Vec<usize> = (0..queues.len())
            .filter(|i| *queues[*i].subscribers(event.topic) > 0)
            .collect();
        let Some((&last, rest)) = wanted.split_last() else {
            return;
        };
        for &i in rest {
            queues[i].events.push(event.clone());
        }
        queues[last].events.push(event);
        for i in wanted {
            if let Some(waker) = queues[i].waker.as_ref().filter(|_| i != me) {
                let _ = waker.wake();
            }
        }
    }

    /// Takes the events queued for event loop `id`.
    pub(crate) fn take(&self, id: usize) -> Vec<Event> {
        match self.queues().get_mut(id) {
            Some(q) => std::mem::take(&mut q.events),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::records::{IdentityRecord, PolicyRecord};
    use crate::store::Store;

    /// Error lines of a request belong to its enclave: a tenant reading the error log of its
    /// enclave never sees another tenant's (they name its keys and paths); server-wide errors
    /// belong to the default enclave; the system admin sees everything.
    #[test]
    fn error_events_reach_only_readers_of_their_enclave() {
        let admin = "a".repeat(64);
        let (t2_reader, default_reader) = ("b".repeat(64), "c".repeat(64));
        let store = Store::in_memory().unwrap();
        let now = crate::timefmt::now();
        store
            .apply(&Command::CreateEnclave {
                name: "t2".into(),
                record: crate::records::EnclaveRecord {
                    key: kes_core::crypto::SecretKey::new(
                        kes_core::crypto::Cipher::Aes256,
                        [9; 32],
                    ),
                    created_at: now,
                    created_by: admin.clone(),
                },
            })
            .unwrap();
        for (enclave, who) in [("t2", &t2_reader), ("default", &default_reader)] {
            store
                .apply(&Command::CreatePolicy {
                    enclave: enclave.into(),
                    name: "logs".into(),
                    policy: PolicyRecord {
                        allow: vec!["/v1/log/error".into()],
                        deny: Vec::new(),
                        created_at: now,
                        created_by: admin.clone(),
                    },
                    replace: false,
                })
                .unwrap();
            store
                .apply(&Command::CreateIdentity {
                    enclave: enclave.into(),
                    identity: who.clone(),
                    record: IdentityRecord {
                        policy: "logs".into(),
                        admin: false,
                        ttl: Duration::ZERO,
                        expires_at: None,
                        created_at: now,
                        created_by: admin.clone(),
                        children: Vec::new(),
                    },
                    replace: false,
                })
                .unwrap();
        }
        let app = App::new(store, admin.clone());
        app.logs.subscribe(Topic::Error, 1);
        app.logs
            .error_in("t2", "PUT /v1/key/create/t2-key: 500 boom");
        app.logs.error("hsm: unavailable");
        let events = app.logs.take(0);
        assert_eq!(events.len(), 2);
        let sub = |enclave: &str| Subscription {
            topic: Topic::Error,
            enclave: enclave.into(),
        };
        let seen = |sub: &Subscription, who: &str| -> Vec<bool> {
            events.iter().map(|e| may_see(&app, sub, who, e)).collect()
        };
        assert_eq!(seen(&sub("t2"), &t2_reader), [true, false]);
        assert_eq!(seen(&sub("default"), &default_reader), [false, true]);
        assert_eq!(seen(&sub("default"), &admin), [true, true]);
        let audit = Subscription {
            topic: Topic::Audit,
            enclave: "t2".into(),
        };
        assert_eq!(seen(&audit, &admin), [false, false], "another topic");
        let batch = visible(&app, &sub("t2"), &t2_reader, &events);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].enclave, "t2");
        assert!(still_subscribed(&app, &sub("t2"), &t2_reader));
        assert!(!still_subscribed(&app, &sub("default"), &t2_reader));
    }
}
