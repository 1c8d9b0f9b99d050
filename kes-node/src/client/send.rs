//! Sending a request to one of the client's servers and reading its answer.
//!
//! Each server ([`Node`]) has one kept-alive connection. A request goes to the server that
//! answered last and on to the next while a server cannot be reached or answers `503` (the
//! Go SDK's load balancer fails over the same way), except where a write may have been made:
//! a `503` that says so, or a write cut off after it was sent. Sent again elsewhere, it could
//! be made twice or answered as a conflict with itself; that is the caller's to check. The
//! answer that ends the round is the caller's, whatever it is. When every server failed, a `503` wins over servers that could
//! not be reached (it says why), and those are named together.
//!
//! A call has one deadline ([`Client::with_timeout`]) for all the servers it tries. A server
//! that used it up is not asked first by the next call: one slow node of a cluster costs one
//! call, not every call.
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use rustls::pki_types::ServerName;

use super::deadline::Deadline;
use super::{api_error, http, tls, Call, Client, ClientError, Endpoint, TIMEOUT};

/// One server of a client.
pub(super) struct Node {
    pub(super) endpoint: Endpoint,
    server_name: ServerName<'static>,
    conn: Mutex<Option<http::Conn>>,
}

impl Node {
    pub(super) fn new(server: &str) -> Result<Node, ClientError> {
        let endpoint = Endpoint::parse(server)?;
        let server_name = tls::server_name(&endpoint.host)?;
        Ok(Node {
            endpoint,
            server_name,
            conn: Mutex::new(None),
        })
    }
}

/// Whether the answer of one server sends the request on to the next. Not a `503` that
/// says the write may have been made ([`outcome_unknown`]): sent again elsewhere, a create
/// would answer that the item exists, a delete that it does not, and the caller would
/// believe its write failed.
///
/// The same holds for a write cut off after it was sent (the server may have made it before
/// it failed): only a server that could not be reached at all passes a write on.
fn try_next(call: &Call, result: &Result<http::Response, Failed>) -> bool {
    match result {
        Ok(resp) => resp.status == 503 && !outcome_unknown(&resp.body),
        Err(failed) => {
            matches!(
                failed.error,
                ClientError::Transport(_) | ClientError::Tls(_)
            ) && !(failed.sent && call.changes_state())
        }
    }
}

/// A failed exchange with one server, and whether the request may have reached it.
struct Failed {
    error: ClientError,
    /// Set once the connection was open and the request was being sent.
    sent: bool,
}

/// What a kes-node cluster's `503`s say when a write may have been made after all (an answer
/// lost with the link to the leader, a leader that did not answer in time, a write committed
/// but not replicated everywhere; see `store/error.rs`, whose tests hold it to these).
pub(crate) const OUTCOME_UNKNOWN: [&str; 3] = [
    "may or may not have been made",
    "the write may still commit",
    "committed but not replicated",
];

/// Does a `503`'s error body say that the write may have been made?
fn outcome_unknown(body: &[u8]) -> bool {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    OUTCOME_UNKNOWN.iter().any(|p| message.contains(p))
}

impl Client {
    /// One request and its answer, from the first server that can give one. If none can,
    /// the first `503` (a server that answered says more than one that cannot be reached),
    /// else the last failure, naming every server that could not be reached.
    pub(super) fn round_trip(&self, call: &Call) -> Result<http::Response, ClientError> {
        let deadline = Deadline::after(self.timeout);
        let n = self.nodes.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut unavailable: Option<(usize, http::Response)> = None;
        let mut unreachable: Vec<String> = Vec::new();
        let mut last = ClientError::Config("no server given".into());
        for i in 0..n {
            let at = (first + i) % n;
            let result = self.round_trip_on(&self.nodes[at], call, deadline);
            if result.is_err() && deadline.passed() {
                self.pass_over(at);
            }
            if !try_next(call, &result) {
                if result.is_ok() {
                    self.preferred.store(at, Ordering::Relaxed);
                }
                return result.map_err(|f| f.error);
            }
            match result {
                Ok(resp) => {
                    unavailable.get_or_insert((at, resp));
                }
                Err(Failed { error: e, .. }) => {
                    if let ClientError::Transport(why) | ClientError::Tls(why) = &e {
                        unreachable.push(why.clone());
                    }
                    last = e;
                }
            }
            if deadline.passed() {
                break;
            }
        }
        if let Some((at, resp)) = unavailable {
            self.preferred.store(at, Ordering::Relaxed);
            return Ok(resp);
        }
        Err(match last {
            ClientError::Transport(_) if unreachable.len() > 1 => {
                ClientError::Transport(unreachable.join("; "))
            }
            ClientError::Tls(_) if unreachable.len() > 1 => {
                ClientError::Tls(unreachable.join("; "))
            }
            other => other,
        })
    }

    /// The next call starts after the server at `at` (unless another call moved on already).
    fn pass_over(&self, at: usize) {
        let next = (at + 1) % self.nodes.len();
        let _ = self
            .preferred
            .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One request and response on `node`'s kept connection, complete by `deadline`. A kept
    /// connection the server has closed in the meantime fails before any answer arrives: then
    /// the request is sent once more on a new connection.
    fn round_trip_on(
        &self,
        node: &Node,
        call: &Call,
        deadline: Deadline,
    ) -> Result<http::Response, Failed> {
        let head = self.request_head(node, call);
        let body = call.body.as_deref().unwrap_or_default();
        let network = |e| Failed {
            error: http::io_error(&node.endpoint, e),
            sent: true,
        };
        let mut slot = node.conn.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (mut conn, reused) = match slot.take() {
                Some(mut c) => {
                    c.set_limits(Some(TIMEOUT), Some(deadline));
                    (c, true)
                }
                None => {
                    let conn = self
                        .connect(node, deadline)
                        .map_err(|error| Failed { error, sent: false })?;
                    (conn, false)
                }
            };
            let attempt = conn.send(&head, body).and_then(|()| conn.read_head());
            let head_in = match attempt {
                Ok(h) => h,
                Err(_) if reused && conn.nothing_received() => continue,
                Err(e) => return Err(network(e)),
            };
            let (body, keep) = conn.read_body(&head_in, false).map_err(network)?;
            if keep {
                *slot = Some(conn);
            }
            return Ok(http::Response {
                status: head_in.status,
                headers: head_in.headers,
                body: body.into(),
            });
        }
    }

    /// A `GET` whose answer is read as it arrives, on a connection of its own (it never
    /// becomes free again), from the first server that can give it. Also returns that server.
    /// The deadline holds until the answer's head is in; the body takes as long as it takes.
    pub(super) fn open_stream(&self, path: &str) -> Result<(http::Stream, &Endpoint), ClientError> {
        let call = self.get(path);
        let deadline = Deadline::after(self.timeout);
        let n = self.nodes.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = Err(ClientError::Config("no server given".into()));
        for i in 0..n {
            let node = &self.nodes[(first + i) % n];
            last = self
                .stream_on(node, &call, deadline)
                .map(|s| (s, &node.endpoint));
            let unreachable = matches!(last, Err(ClientError::Transport(_) | ClientError::Tls(_)));
            if !unreachable || deadline.passed() {
                break;
            }
        }
        last
    }

    fn stream_on(
        &self,
        node: &Node,
        call: &Call,
        deadline: Deadline,
    ) -> Result<http::Stream, ClientError> {
        let network = |e| http::io_error(&node.endpoint, e);
        let mut conn = self.connect(node, deadline)?;
        conn.send(&self.request_head(node, call), &[])
            .map_err(network)?;
        let head_in = conn.read_head().map_err(network)?;
        if !(200..300).contains(&head_in.status) {
            let (body, _) = conn.read_body(&head_in, false).map_err(network)?;
            return Err(api_error(
                head_in.status,
                head_in.header("Content-Type"),
                &body,
            ));
        }
        Ok(http::Stream::new(conn, &head_in))
    }

    fn connect(&self, node: &Node, deadline: Deadline) -> Result<http::Conn, ClientError> {
        http::Conn::open(
            &node.endpoint,
            node.server_name.clone(),
            self.tls.clone(),
            TIMEOUT,
            deadline,
        )
    }

    fn request_head(&self, node: &Node, call: &Call) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kes-node/{}\r\nAccept: application/json\r\n",
            call.method,
            call.path,
            node.endpoint.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(enclave) = &self.enclave {
            head.push_str(&format!("Kes-Enclave: {enclave}\r\n"));
        }
        match &call.body {
            Some(body) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )),
            None if call.method == "PUT" => head.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}
