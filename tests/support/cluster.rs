//! Multi-process cluster harness: several real `kes-node server` processes on fixed
//! 127.0.0.1 ports (one data directory each, bootstrapped with the same `.cluster.json`),
//! a fault-injecting TCP proxy between them (one listener per directed peer link, wired in
//! with `KES_PEER_DIAL`), kill -9 / SIGTERM / restart, `wait_for_leader`, a reconnecting
//! client, and a recorded client history checked for linearizability with the checker of
//! `kes-core` (`consensus::sim::linearizability`).
//!
//! Everything here is blocking std code: the proxy runs one accept thread per link and two
//! pump threads per forwarded connection, all stopped and joined on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kes_core::consensus::sim::linearizability::{check_register, Kind, Operation};

use super::{pki, wait_until, Client, Exited, Response, Server, TempDir, Tls, HSM_KEY, KES_NODE};

/// `leader_id` of `/v1/cluster/describe` when there is no leader (Go's `uint64(-1)`).
pub const NO_LEADER: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------
// Randomness and ports
// ---------------------------------------------------------------------------------------

/// A small xorshift64* generator: tests print their seed so that a schedule can be replayed
/// (`KES_TEST_SEED=<n>`), as far as real processes replay at all.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The seed from `KES_TEST_SEED`, else from the clock.
    pub fn seed_from_env() -> u64 {
        if let Some(seed) = std::env::var("KES_TEST_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return seed;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_nanos() as u64 ^ (std::process::id() as u64) << 32
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// A duration uniform in `[lo, hi)` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// `n` distinct free ports on 127.0.0.1 for nodes that must know each other's addresses.
///
/// They are picked below the kernel's ephemeral range when possible: a node that is down
/// for a while must be able to bind its port again, and an outgoing connection could take
/// a released ephemeral port in the meantime. Each port was bindable a moment ago and is
/// never handed out twice by this process.
pub fn free_ports(n: usize) -> Vec<u16> {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let (lo, _) = ephemeral_range();
    // Not from KES_TEST_SEED: two test processes replaying one seed must not pick the
    // same ports.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng::new(nanos ^ u64::from(std::process::id()) << 32);
    let mut out = Vec::with_capacity(n);
    let mut hold = Vec::with_capacity(n);
    let base: u16 = 20000;
    if lo > base + 1000 {
        for _ in 0..10_000 {
            if out.len() == n {
                break;
            }
            let port = base + rng.below(u64::from(lo - base)) as u16;
            if taken.contains(&port) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                hold.push(listener);
                taken.insert(port);
                out.push(port);
            }
        }
    }
    while out.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        if taken.insert(port) {
            hold.push(listener);
            out.push(port);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Fault-injecting TCP proxy
// ---------------------------------------------------------------------------------------

/// What a cut link does with connections that arrive while it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Accept and close at once: the dialer sees the connection die (EOF / reset).
    Refuse,
    /// Accept and hold without forwarding or answering: the dialer sees a silent peer
    /// until its own timeouts fire (closed on heal).
    BlackHole,
}

/// At most this many forwarded connections per link; more are closed at once.
const MAX_CONNS_PER_LINK: usize = 64;
/// At most this many black-holed connections per link; the oldest is closed beyond.
const MAX_HELD_PER_LINK: usize = 64;

struct Forwarded {
    id: u64,
    down: TcpStream,
    up: TcpStream,
    /// Pump threads finished (0, 1 or 2).
    done: Arc<AtomicUsize>,
}

impl Forwarded {
    fn kill(&self) {
        let _ = self.down.shutdown(Shutdown::Both);
        let _ = self.up.shutdown(Shutdown::Both);
    }
}

#[derive(Default)]
struct LinkState {
    cut: Option<CutMode>,
    conns: Vec<Forwarded>,
    held: Vec<TcpStream>,
    next_id: u64,
}

struct LinkShared {
    target: Mutex<SocketAddr>,
    state: Mutex<LinkState>,
    stop: AtomicBool,
    accepted: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections accepted (forwarded, refused or held).
    pub accepted: u64,
    /// Connections forwarded to the target.
    pub forwarded: u64,
    /// Bytes forwarded (both directions).
    pub bytes: u64,
    /// Forwarded connections open now.
    pub open: usize,
    /// Black-holed connections held now.
    pub held: usize,
}

/// One directed link: a listener on 127.0.0.1 that forwards every connection to `target`,
/// unless cut.
pub struct Link {
    listen: SocketAddr,
    shared: Arc<LinkShared>,
    accept: Option<JoinHandle<()>>,
}

impl Link {
    /// Listens on a fresh 127.0.0.1 port and forwards to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(LinkShared {
            target: Mutex::new(target),
            state: Mutex::new(LinkState::default()),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            pumps: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{listen}"))
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(Link {
            listen,
            shared,
            accept: Some(accept),
        })
    }

    /// Where dialers connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn target(&self) -> SocketAddr {
        *self.shared.target.lock().unwrap()
    }

    /// Forwards new connections to another address (existing ones are unaffected).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// Closes every forwarded connection and handles new ones per `mode` until `heal`.
    pub fn cut(&self, mode: CutMode) {
        let mut state = self.shared.state.lock().unwrap();
        state.cut = Some(mode);
        for conn in state.conns.drain(..) {
            conn.kill();
        }
        if mode == CutMode::Refuse {
            for held in state.held.drain(..) {
                let _ = held.shutdown(Shutdown::Both);
            }
        }
    }

    /// Forwards again; black-holed connections are closed (their dialers reconnect).
    pub fn heal(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.cut = None;
        for held in state.held.drain(..) {
            let _ = held.shutdown(Shutdown::Both);
        }
    }

    pub fn is_cut(&self) -> bool {
        self.shared.state.lock().unwrap().cut.is_some()
    }

    pub fn stats(&self) -> LinkStats {
        let state = self.shared.state.lock().unwrap();
        LinkStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            forwarded: self.shared.forwarded.load(Ordering::SeqCst),
            bytes: self.shared.bytes.load(Ordering::SeqCst),
            open: state
                .conns
                .iter()
                .filter(|c| c.done.load(Ordering::SeqCst) < 2)
                .count(),
            held: state.held.len(),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept thread, which sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.listen, Duration::from_secs(1));
        {
            let mut state = self.shared.state.lock().unwrap();
            for conn in state.conns.drain(..) {
                conn.kill();
            }
            for held in state.held.drain(..) {
                let _ = held.shutdown(Shutdown::Both);
            }
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let pumps = std::mem::take(&mut *self.shared.pumps.lock().unwrap());
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<LinkShared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((down, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                handle_accepted(down, &shared);
            }
            // Out of descriptors or the like: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        // Reap finished pumps and connections so that memory stays bounded.
        shared.pumps.lock().unwrap().retain(|h| !h.is_finished());
        shared
            .state
            .lock()
            .unwrap()
            .conns
            .retain(|c| c.done.load(Ordering::SeqCst) < 2);
    }
}

fn handle_accepted(down: TcpStream, shared: &Arc<LinkShared>) {
    let _ = down.set_nonblocking(false);
    let _ = down.set_nodelay(true);
    {
        let mut state = shared.state.lock().unwrap();
        match state.cut {
            Some(CutMode::Refuse) => {
                let _ = down.shutdown(Shutdown::Both);
                return;
            }
            Some(CutMode::BlackHole) => {
                if state.held.len() >= MAX_HELD_PER_LINK {
                    let old = state.held.remove(0);
                    let _ = old.shutdown(Shutdown::Both);
                }
                state.held.push(down);
                return;
            }
            None => {}
        }
        let live = state
            .conns
            .iter()
            .filter(|c| c.done.load(Ordering::SeqCst) < 2)
            .count();
        if live >= MAX_CONNS_PER_LINK {
            let _ = down.shutdown(Shutdown::Both);
            return;
        }
    }
    let target = *shared.target.lock().unwrap();
    // A target that is down is a refused connection, as without the proxy.
    let Ok(up) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        let _ = down.shutdown(Shutdown::Both);
        return;
    };
    let _ = up.set_nodelay(true);
    let mut state = shared.state.lock().unwrap();
    if state.cut.is_some() || shared.stop.load(Ordering::SeqCst) {
        // Cut while we were connecting.
        let _ = up.shutdown(Shutdown::Both);
        let _ = down.shutdown(Shutdown::Both);
        return;
    }
    let (Ok(down2), Ok(up2), Ok(down3), Ok(up3)) = (
        down.try_clone(),
        up.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return;
    };
    let id = state.next_id;
    state.next_id += 1;
    let done = Arc::new(AtomicUsize::new(0));
    state.conns.push(Forwarded {
        id,
        down,
        up,
        done: done.clone(),
    });
    drop(state);
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let mut pumps = shared.pumps.lock().unwrap();
    for (src, dst) in [(down2, up2), (up3, down3)] {
        let shared = shared.clone();
        let finished = done.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pump-{id}"))
            .spawn(move || {
                pump(src, dst, &shared);
                finished.fetch_add(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => pumps.push(handle),
            Err(_) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Copies `src` to `dst` until EOF, an error, a cut or a stop. EOF is passed on as a
/// half-close; an error or a cut closes both sockets (which ends the other direction too).
fn pump(mut src: TcpStream, mut dst: TcpStream, shared: &LinkShared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if shared.stop.load(Ordering::SeqCst) || shared.state.lock().unwrap().cut.is_some() {
            break;
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
        shared.bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// One [`Link`] per directed pair of nodes: node `i` dials node `j` through `link(i, j)`.
pub struct Proxy {
    links: BTreeMap<(usize, usize), Link>,
}

impl Proxy {
    /// Links between every ordered pair of `targets` (slot index → the node's real address).
    pub fn new(targets: &[SocketAddr]) -> Proxy {
        let mut links = BTreeMap::new();
        for (i, _) in targets.iter().enumerate() {
            for (j, target) in targets.iter().enumerate() {
                if i != j {
                    links.insert((i, j), Link::start(*target).expect("start proxy link"));
                }
            }
        }
        Proxy { links }
    }

    #[track_caller]
    pub fn link(&self, from: usize, to: usize) -> &Link {
        self.links
            .get(&(from, to))
            .unwrap_or_else(|| panic!("no proxy link {from} -> {to}"))
    }

    /// `KES_PEER_DIAL` for node `from`: `"<id>=<link addr>,..."` (node id = slot index).
    pub fn dial_env(&self, from: usize) -> String {
        self.links
            .iter()
            .filter(|((i, _), _)| *i == from)
            .map(|((_, j), link)| format!("{j}={}", link.addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn cut(&self, from: usize, to: usize, mode: CutMode) {
        self.link(from, to).cut(mode);
    }

    pub fn heal(&self, from: usize, to: usize) {
        self.link(from, to).heal();
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_between(&self, a: usize, b: usize, mode: CutMode) {
        self.cut(a, b, mode);
        self.cut(b, a, mode);
    }

    /// Cuts every link to and from `k`.
    pub fn partition(&self, k: usize, mode: CutMode) {
        for ((i, j), link) in &self.links {
            if *i == k || *j == k {
                link.cut(mode);
            }
        }
    }

    /// Heals every link to and from `k`.
    pub fn heal_node(&self, k: usize) {
        for ((i, j), link) in &self.links {
            if *i == k || *j == k {
                link.heal();
            }
        }
    }

    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// The links that are cut now.
    pub fn cut_links(&self) -> Vec<(usize, usize)> {
        self.links
            .iter()
            .filter(|(_, l)| l.is_cut())
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn stats(&self) -> BTreeMap<(usize, usize), LinkStats> {
        self.links.iter().map(|(k, l)| (*k, l.stats())).collect()
    }
}

// ---------------------------------------------------------------------------------------
// A reconnecting client
// ---------------------------------------------------------------------------------------

/// Why a request got no response.
#[derive(Debug)]
pub enum ReqError {
    /// TCP connect or TLS handshake failed: the request was never sent.
    Connect(io::Error),
    /// Failed after the request may have been sent: its outcome is unknown.
    Io(io::Error),
}

impl std::fmt::Display for ReqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReqError::Connect(err) => write!(f, "connect: {err}"),
            ReqError::Io(err) => write!(f, "i/o: {err}"),
        }
    }
}

/// An admin connection to one node that reconnects after errors and `Connection: close`.
pub struct Conn {
    pub addr: SocketAddr,
    client: Option<Client>,
    timeout: Duration,
}

impl Conn {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            client: None,
            timeout,
        }
    }

    /// Forgets the kept-alive connection (the next request dials anew).
    pub fn reset(&mut self) {
        self.client = None;
    }

    /// Sends one request (a JSON body if given) and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ReqError> {
        if self.client.is_none() {
            let client = Client::connect(self.addr, Some(&pki().admin), Tls::default())
                .map_err(ReqError::Connect)?;
            let _ = client.stream.sock.set_read_timeout(Some(self.timeout));
            let _ = client.stream.sock.set_write_timeout(Some(self.timeout));
            self.client = Some(client);
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let headers: &[(&str, &str)] = if bytes.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let client = self.client.as_mut().unwrap();
        match client.request(method, path, headers, bytes.as_deref()) {
            Ok(resp) => {
                if resp.closes() {
                    self.client = None;
                }
                Ok(resp)
            }
            Err(err) => {
                self.client = None;
                Err(ReqError::Io(err))
            }
        }
    }

    /// A read-only request, retried once on a fresh connection if a kept-alive one failed.
    pub fn read(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ReqError> {
        let reused = self.client.is_some();
        match self.request(method, path, body) {
            Err(ReqError::Io(_)) if reused => self.request(method, path, body),
            other => other,
        }
    }
}

/// The `message` of a KES error body (or the raw body if it is not one).
pub fn error_message(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| resp.text())
}

/// Whether an error message names a node, by its address or by its id (`node 2`, `'2'`,
/// `"2"`, `#2`, `id 2`, `node-2`, `[2]`...). The contract does not fix the wording.
pub fn names_node(message: &str, id: u64, addr: &str) -> bool {
    if message.contains(addr) {
        return true;
    }
    let lower = message.to_ascii_lowercase();
    [
        format!("node {id}"),
        format!("node-{id}"),
        format!("node_{id}"),
        format!("node '{id}'"),
        format!("node \"{id}\""),
        format!("node #{id}"),
        format!("node={id}"),
        format!("node: {id}"),
        format!("nodes {id}"),
        format!("id {id}"),
        format!("id={id}"),
        format!("'{id}'"),
        format!("\"{id}\""),
        format!("#{id}"),
        format!("[{id}]"),
        format!("[{id},"),
        format!(", {id}]"),
        format!(", {id},"),
    ]
    .iter()
    .any(|pat| lower.contains(pat.as_str()))
}

// ---------------------------------------------------------------------------------------
// Cluster of kes-node processes
// ---------------------------------------------------------------------------------------

/// How a [`Cluster`] is laid out.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Slots (ports and directories) in total; slots `members..slots` are spare nodes to
    /// add later with expand.
    pub slots: usize,
    /// The initial configuration: slots `0..members`.
    pub members: usize,
    /// Write `.cluster.json` into the member directories before the first start (with
    /// `false` a single node bootstraps itself as `{"0":"<addr>"}`).
    pub bootstrap_json: bool,
    /// Route peer traffic through a [`Proxy`] (between the initial members).
    pub proxy: bool,
}

impl ClusterOpts {
    pub fn nodes(n: usize) -> ClusterOpts {
        ClusterOpts {
            slots: n,
            members: n,
            bootstrap_json: true,
            proxy: false,
        }
    }

    pub fn with_proxy(mut self) -> ClusterOpts {
        self.proxy = true;
        self
    }
}

/// The answer of `GET /v1/cluster/describe`.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// Node id → address.
    pub nodes: BTreeMap<u64, String>,
    /// `None`: absent, null or `18446744073709551615`.
    pub leader_id: Option<u64>,
    pub raw: serde_json::Value,
}

impl ClusterView {
    pub fn parse(json: &serde_json::Value) -> Result<ClusterView, String> {
        let nodes = json["nodes"]
            .as_object()
            .ok_or_else(|| format!("no `nodes` object in {json}"))?
            .iter()
            .map(|(id, addr)| {
                let id: u64 = id
                    .parse()
                    .map_err(|_| format!("node id {id:?} in {json}"))?;
                let addr = addr
                    .as_str()
                    .ok_or_else(|| format!("node address of {id} in {json}"))?;
                Ok((id, addr.to_string()))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let leader_id = match &json["leader_id"] {
            serde_json::Value::Null => None,
            v => match v.as_u64() {
                Some(NO_LEADER) => None,
                Some(id) => Some(id),
                None if v.as_i64() == Some(-1) => None,
                None => return Err(format!("bad leader_id in {json}")),
            },
        };
        Ok(ClusterView {
            nodes,
            leader_id,
            raw: json.clone(),
        })
    }

    /// The id of the node with this address.
    pub fn id_of(&self, addr: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, a)| a.as_str() == addr)
            .map(|(id, _)| *id)
    }
}

/// Where a node's output goes: a log file in the cluster's temp dir (all incarnations,
/// appended) and a bounded in-memory tail for [`Server::stderr`].
struct NodeLog {
    file: Mutex<File>,
}

impl NodeLog {
    fn line(&self, text: &str) {
        let mut file = self.file.lock().unwrap();
        let _ = file.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = file.write_all(b"\n");
        }
    }
}

/// A node process that was spawned and has not printed its listening line yet.
pub struct Starting {
    slot: usize,
    child: Child,
    rx: mpsc::Receiver<SocketAddr>,
    stdout_done: mpsc::Receiver<()>,
    stderr_done: mpsc::Receiver<()>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<String>>,
}

/// In-memory output kept per node process (the log file keeps everything).
const MEMORY_TAIL: usize = 256 * 1024;

impl Starting {
    /// Waits for the listening line.
    pub fn wait(mut self, timeout: Duration) -> Result<Server, Exited> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(addr) = self.rx.recv_timeout(Duration::from_millis(20)) {
                return Ok(Server {
                    child: Some(self.child),
                    addr,
                    stderr: self.stderr,
                    stdout: self.stdout,
                });
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Both pipe readers reach EOF: all of the output is in.
                let _ = self.stdout_done.recv_timeout(Duration::from_secs(2));
                let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
                return Err(Exited {
                    status: Some(status),
                    stdout: self.stdout.lock().unwrap().clone(),
                    stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
                });
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Exited {
                    status: None,
                    stdout: self.stdout.lock().unwrap().clone(),
                    stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
                });
            }
        }
    }
}

/// Several `kes-node server` processes sharing one config, HSM key and TLS identity.
pub struct Cluster {
    pub name: String,
    tmp: TempDir,
    config: PathBuf,
    addrs: Vec<SocketAddr>,
    dirs: Vec<PathBuf>,
    logs: Vec<Arc<NodeLog>>,
    nodes: Vec<Option<Server>>,
    proxy: Option<Proxy>,
    starts: Vec<usize>,
    /// Extra environment per slot (see [`Cluster::set_env`]).
    envs: Vec<Vec<(String, String)>>,
    /// kill -9s done through [`Cluster::kill`].
    pub kills: usize,
    /// `--workers` of the nodes started from now on (default: `KES_TEST_WORKERS`).
    pub workers: Option<usize>,
}

impl Cluster {
    /// Lays out directories, ports, the config and (`bootstrap_json`) `.cluster.json`;
    /// starts nothing.
    pub fn new(tag: &str, opts: ClusterOpts) -> Cluster {
        assert!(opts.members >= 1 && opts.members <= opts.slots, "{opts:?}");
        let tmp = TempDir::new(tag);
        let pki = pki();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("server.cert"), &pki.server_cert_pem).unwrap();
        std::fs::write(root.join("server.key"), &pki.server_key_pem).unwrap();
        std::fs::write(root.join("ca.pem"), &pki.ca_cert_pem).unwrap();
        let config = root.join("config.yml");
        // Audit events (every request, with its time and status) go to the node logs.
        std::fs::write(
            &config,
            format!(
                "version: v1\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\nlog:\n  audit: on\n  error: on\n",
                pki.admin.identity,
                root.join("server.key").display(),
                root.join("server.cert").display(),
            ),
        )
        .unwrap();
        let addrs: Vec<SocketAddr> = free_ports(opts.slots)
            .into_iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let mut dirs = Vec::new();
        let mut logs = Vec::new();
        for i in 0..opts.slots {
            let dir = root.join(format!("node{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            dirs.push(dir);
            let file = File::create(root.join(format!("node{i}.log"))).unwrap();
            logs.push(Arc::new(NodeLog {
                file: Mutex::new(file),
            }));
        }
        if opts.bootstrap_json {
            let json = cluster_json(&addrs[..opts.members]);
            for dir in &dirs[..opts.members] {
                std::fs::write(dir.join(".cluster.json"), &json).unwrap();
            }
        }
        let proxy = opts.proxy.then(|| Proxy::new(&addrs[..opts.members]));
        Cluster {
            name: tag.to_string(),
            tmp,
            config,
            nodes: (0..opts.slots).map(|_| None).collect(),
            starts: vec![0; opts.slots],
            envs: vec![Vec::new(); opts.slots],
            addrs,
            dirs,
            logs,
            proxy,
            kills: 0,
            workers: None,
        }
    }

    /// A cluster of `n` members, all started, with a leader.
    pub fn start(tag: &str, opts: ClusterOpts) -> Cluster {
        let mut cluster = Cluster::new(tag, opts.clone());
        let members: Vec<usize> = (0..opts.members).collect();
        cluster.start_nodes(&members);
        if let Err(err) = cluster.wait_ready(Duration::from_secs(30)) {
            panic!("{}: not ready after start: {err}", cluster.name);
        }
        cluster
    }

    /// Waits for a leader and for every running node's peer links to the other running
    /// members to be open: then a write reaches every node (all-node commit) without waiting
    /// for a dial. Returns the leader's slot.
    pub fn wait_ready(&self, timeout: Duration) -> Result<usize, String> {
        let leader = self.wait_for_leader(timeout)?;
        let up = self.up();
        for &slot in &up {
            for &peer in up.iter().filter(|&&p| p != slot) {
                self.wait_link(slot, peer, |s| s == "connected", timeout)?;
            }
        }
        Ok(leader)
    }

    pub fn slots(&self) -> usize {
        self.addrs.len()
    }

    pub fn addr(&self, slot: usize) -> SocketAddr {
        self.addrs[slot]
    }

    pub fn dir(&self, slot: usize) -> &Path {
        &self.dirs[slot]
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn is_up(&self, slot: usize) -> bool {
        self.nodes[slot].is_some()
    }

    pub fn up(&self) -> Vec<usize> {
        (0..self.slots()).filter(|&i| self.is_up(i)).collect()
    }

    #[track_caller]
    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("cluster has no proxy")
    }

    pub fn server(&self, slot: usize) -> Option<&Server> {
        self.nodes[slot].as_ref()
    }

    /// The command line of a node (without `--join` etc.).
    fn command(&self, slot: usize, extra: &[&str]) -> Command {
        let mut cmd = Command::new(KES_NODE);
        cmd.arg("server")
            .arg("--config")
            .arg(&self.config)
            .arg("--addr")
            .arg(self.addrs[slot].to_string())
            .args(super::workers_args(self.workers));
        for arg in extra {
            cmd.arg(arg);
        }
        cmd.arg(&self.dirs[slot])
            .env("KES_HSM_KEY", HSM_KEY)
            .env_remove("KES_PEER_DIAL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(proxy) = &self.proxy {
            if proxy.links.keys().any(|(i, _)| *i == slot) {
                cmd.env("KES_PEER_DIAL", proxy.dial_env(slot));
            }
        }
        for (key, value) in &self.envs[slot] {
            cmd.env(key, value);
        }
        cmd
    }

    /// Sets an environment variable for the next starts of `slot` (for example another
    /// `KES_HSM_KEY`); `None` forgets every variable set for it.
    pub fn set_env(&mut self, slot: usize, var: Option<(&str, &str)>) {
        match var {
            Some((key, value)) => self.envs[slot].push((key.into(), value.into())),
            None => self.envs[slot].clear(),
        }
    }

    /// Spawns the process of `slot` (not waiting for it to listen).
    pub fn spawn(&mut self, slot: usize, extra: &[&str]) -> Starting {
        assert!(self.nodes[slot].is_none(), "node {slot} is already running");
        self.starts[slot] += 1;
        let mut child = self.command(slot, extra).spawn().expect("spawn kes-node");
        let log = self.logs[slot].clone();
        log.line(&format!(
            "===== {} node {slot} start #{} pid {} args {extra:?} =====",
            self.name,
            self.starts[slot],
            child.id()
        ));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (stderr_tx, stderr_done) = mpsc::channel::<()>();
        {
            let pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            log.line(&format!("[err] {}", String::from_utf8_lossy(&line)));
                            let mut buf = stderr.lock().unwrap();
                            buf.extend_from_slice(&line);
                            if buf.len() > MEMORY_TAIL {
                                let cut = buf.len() - MEMORY_TAIL / 2;
                                buf.drain(..cut);
                            }
                        }
                    }
                }
                let _ = stderr_tx.send(());
            });
        }
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let (done_tx, stdout_done) = mpsc::channel::<()>();
        {
            let pipe = child.stdout.take().unwrap();
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line).into_owned();
                            log.line(&format!("[out] {text}"));
                            if let Some(rest) = text.trim().strip_prefix("kes-node: listening on ")
                            {
                                if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                                    let _ = tx.send(addr);
                                }
                            }
                            let mut buf = stdout.lock().unwrap();
                            buf.push_str(&text);
                            if buf.len() > MEMORY_TAIL {
                                let mut cut = buf.len() - MEMORY_TAIL / 2;
                                while !buf.is_char_boundary(cut) {
                                    cut += 1;
                                }
                                buf.drain(..cut);
                            }
                        }
                    }
                }
                let _ = done_tx.send(());
            });
        }
        Starting {
            slot,
            child,
            rx,
            stdout_done,
            stderr_done,
            stderr,
            stdout,
        }
    }

    /// Starts `slot` and waits until it listens; retries a few times if its port is still
    /// busy. `Err` with the output if it exits (or hangs) before listening.
    pub fn try_start_node(&mut self, slot: usize, extra: &[&str]) -> Result<(), Exited> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let starting = self.spawn(slot, extra);
            match starting.wait(super::START_TIMEOUT) {
                Ok(server) => {
                    assert_eq!(
                        server.addr, self.addrs[slot],
                        "node {slot} listens elsewhere"
                    );
                    self.nodes[slot] = Some(server);
                    return Ok(());
                }
                Err(exit) if attempt < 10 && port_busy(&exit) => {
                    // Lingering sockets of the previous process: go on once the port binds.
                    let addr = self.addrs[slot];
                    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                        TcpListener::bind(addr).map(drop).map_err(|e| e.to_string())
                    });
                }
                Err(exit) => return Err(exit),
            }
        }
    }

    /// Starts `slot`, panicking (with its output) if it does not listen.
    #[track_caller]
    pub fn start_node(&mut self, slot: usize) {
        self.start_node_with(slot, &[]);
    }

    #[track_caller]
    pub fn start_node_with(&mut self, slot: usize, extra: &[&str]) {
        if let Err(exit) = self.try_start_node(slot, extra) {
            panic!(
                "{}: node {slot} did not start: {:?}\nstdout:\n{}\nstderr:\n{}",
                self.name, exit.status, exit.stdout, exit.stderr
            );
        }
    }

    /// Starts several nodes at once (a node may wait for its peers before it listens).
    #[track_caller]
    pub fn start_nodes(&mut self, slots: &[usize]) {
        let starting: Vec<Starting> = slots.iter().map(|&s| self.spawn(s, &[])).collect();
        let deadline = Instant::now() + super::START_TIMEOUT;
        let mut retry = Vec::new();
        for st in starting {
            let slot = st.slot;
            let left = deadline.saturating_duration_since(Instant::now());
            match st.wait(left.max(Duration::from_millis(100))) {
                Ok(server) => {
                    assert_eq!(
                        server.addr, self.addrs[slot],
                        "node {slot} listens elsewhere"
                    );
                    self.nodes[slot] = Some(server);
                }
                Err(exit) if port_busy(&exit) => retry.push(slot),
                Err(exit) => panic!(
                    "{}: node {slot} did not start: {:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name, exit.status, exit.stdout, exit.stderr
                ),
            }
        }
        for slot in retry {
            self.start_node(slot);
        }
    }

    /// kill -9 (SIGKILL) and reap.
    pub fn kill(&mut self, slot: usize) {
        let mut server = self.nodes[slot]
            .take()
            .unwrap_or_else(|| panic!("node {slot} is not running"));
        server.signal(libc::SIGKILL);
        self.kills += 1;
        self.logs[slot].line(&format!("===== node {slot} killed (SIGKILL) ====="));
    }

    /// SIGTERM and wait for the exit; returns whether it exited with status 0.
    pub fn stop(&mut self, slot: usize) -> bool {
        let mut server = self.nodes[slot]
            .take()
            .unwrap_or_else(|| panic!("node {slot} is not running"));
        let status = server.signal(libc::SIGTERM);
        self.logs[slot].line(&format!(
            "===== node {slot} stopped (SIGTERM): {status:?} ====="
        ));
        status.success()
    }

    /// SIGSTOP: the process stays alive with its sockets open but does nothing (a gray
    /// failure: peers see a silent node, not a dead one) until [`Cluster::resume`].
    pub fn pause(&mut self, slot: usize) {
        let pid = self.nodes[slot]
            .as_ref()
            .unwrap_or_else(|| panic!("node {slot} is not running"))
            .pid();
        // SAFETY: kill(2) on the pid of our own child process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP node {slot}");
        self.logs[slot].line(&format!("===== node {slot} paused (SIGSTOP) ====="));
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, slot: usize) {
        let pid = self.nodes[slot]
            .as_ref()
            .unwrap_or_else(|| panic!("node {slot} is not running"))
            .pid();
        // SAFETY: kill(2) on the pid of our own child process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        assert_eq!(rc, 0, "SIGCONT node {slot}");
        self.logs[slot].line(&format!("===== node {slot} resumed (SIGCONT) ====="));
    }

    /// kill -9 then start again on the same port and directory.
    #[track_caller]
    pub fn restart(&mut self, slot: usize) {
        self.kill(slot);
        self.start_node(slot);
    }

    /// Adds `tls.ca` (the test CA, which signed the admin's certificate) to the config, so
    /// that every node verifies client certificates against it: call before starting nodes.
    pub fn set_tls_ca(&mut self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let ca = format!("tls:\n  ca: {}\n", self.root().join("ca.pem").display());
        std::fs::write(&self.config, text.replacen("tls:\n", &ca, 1)).unwrap();
    }

    /// Runs the `kes-node` CLI against `slot` as the admin (client certificate files written
    /// next to the config, the server's certificate verified with the test CA).
    pub fn cli(&self, slot: usize, args: &[&str]) -> std::process::Output {
        use base64::Engine as _;
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                lines.join("\n")
            )
        };
        let (cert, key) = (
            self.root().join("admin.cert"),
            self.root().join("admin.key"),
        );
        if !key.exists() {
            let admin = &pki().admin;
            std::fs::write(&cert, pem("CERTIFICATE", admin.chain[0].as_ref())).unwrap();
            std::fs::write(&key, pem("PRIVATE KEY", &admin.key_der)).unwrap();
        }
        Command::new(KES_NODE)
            .args(args)
            .env_remove("KES_API_KEY")
            .env("KES_SERVER", format!("https://{}", self.addrs[slot]))
            .env("KES_CLIENT_CERT", &cert)
            .env("KES_CLIENT_KEY", &key)
            .env("KES_CA", self.root().join("ca.pem"))
            .output()
            .expect("run the kes-node CLI")
    }

    /// A connected admin client of `slot` (panics if it cannot connect).
    #[track_caller]
    pub fn client(&self, slot: usize) -> Client {
        Client::connect(self.addrs[slot], Some(&pki().admin), Tls::default())
            .unwrap_or_else(|err| panic!("{}: connect to node {slot}: {err}", self.name))
    }

    /// A reconnecting admin connection to `slot`.
    pub fn conn(&self, slot: usize) -> Conn {
        Conn::new(self.addrs[slot], Duration::from_secs(20))
    }

    /// `GET /v1/cluster/describe` on `slot`.
    pub fn describe(&self, slot: usize) -> Result<ClusterView, String> {
        let mut conn = Conn::new(self.addrs[slot], Duration::from_secs(5));
        let resp = conn
            .request("GET", "/v1/cluster/describe", None)
            .map_err(|e| format!("node {slot}: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "node {slot}: describe answered {} {:?}",
                resp.status,
                resp.text()
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| {
            format!(
                "node {slot}: describe body is not JSON ({e}): {}",
                resp.text()
            )
        })?;
        ClusterView::parse(&json).map_err(|e| format!("node {slot}: {e}"))
    }

    /// The slot whose address is `addr`.
    pub fn slot_of(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| a.to_string() == addr)
    }

    /// Polls `/v1/cluster/describe` on every running node until one node reports itself
    /// as the leader and every running member of its configuration agrees; returns the
    /// leader's slot. `Err` says what the nodes last reported.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize, String> {
        self.wait_for_leader_among(&self.up(), timeout)
    }

    /// Like [`Cluster::wait_for_leader`], asking only `slots` (for example the majority side
    /// of a partition: the cut-off node cannot know the new leader).
    pub fn wait_for_leader_among(
        &self,
        slots: &[usize],
        timeout: Duration,
    ) -> Result<usize, String> {
        wait_until(timeout, Duration::from_millis(100), || {
            let views: Vec<(usize, Result<ClusterView, String>)> = slots
                .iter()
                .filter(|&&s| self.is_up(s))
                .map(|&s| (s, self.describe(s)))
                .collect();
            self.agreed_leader(&views)
        })
        .map_err(|e| format!("no leader: {e}"))
    }

    /// Waits until `slot` shows its peer link to `peer` in a state that `want` accepts
    /// (`connected`, `dialing`, `unreachable`, `refused`); `Err` with what it last showed.
    pub fn wait_link(
        &self,
        slot: usize,
        peer: usize,
        want: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let addr = self.addrs[peer].to_string();
        wait_until(timeout, Duration::from_millis(50), || {
            let view = self.describe(slot)?;
            let id = view.id_of(&addr).ok_or_else(|| {
                format!("node {slot} does not list node {peer}: {:?}", view.nodes)
            })?;
            let link = &view.raw["links"][id.to_string()];
            match link["state"].as_str() {
                Some(state) if want(state) => Ok(()),
                _ => Err(format!("node {slot}'s link to node {peer}: {link}")),
            }
        })
    }

    fn agreed_leader(
        &self,
        views: &[(usize, Result<ClusterView, String>)],
    ) -> Result<usize, String> {
        let report = || {
            views
                .iter()
                .map(|(s, v)| match v {
                    Ok(v) => format!("node {s}: leader {:?} of {:?}", v.leader_id, v.nodes),
                    Err(e) => e.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (slot, view) in views {
            let Ok(view) = view else { continue };
            let own = view.id_of(&self.addrs[*slot].to_string());
            if own.is_none() || view.leader_id != own {
                continue;
            }
            // `slot` says it leads; every running member must agree.
            let agree = views.iter().all(|(other, v)| {
                if !view
                    .nodes
                    .values()
                    .any(|a| *a == self.addrs[*other].to_string())
                {
                    return true;
                }
                matches!(v, Ok(v) if v.leader_id == view.leader_id)
            });
            if agree {
                return Ok(*slot);
            }
        }
        Err(report())
    }

    /// The last `lines` lines of a node's log file.
    pub fn log_tail(&self, slot: usize, lines: usize) -> String {
        let path = self.tmp.path().join(format!("node{slot}.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The last `lines` lines of a node's log that are not audit events (starts, kills,
    /// errors, anything unusual), and how many audit events the log holds.
    pub fn log_notable(&self, slot: usize, lines: usize) -> (String, usize) {
        let path = self.tmp.path().join(format!("node{slot}.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let is_audit = |l: &&str| l.starts_with("[out] {\"time\"");
        let audits = text.lines().filter(is_audit).count();
        let notable: Vec<&str> = text.lines().filter(|l| !is_audit(l)).collect();
        (
            notable[notable.len().saturating_sub(lines)..].join("\n"),
            audits,
        )
    }

    /// Every node's notable log lines, for failure messages.
    pub fn dump_logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for slot in 0..self.slots() {
            let (notable, audits) = self.log_notable(slot, lines);
            out.push_str(&format!(
                "----- {} node {slot} ({}): last lines besides {audits} audit events (all in node{slot}.log) -----\n{notable}\n",
                self.name, self.addrs[slot],
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}\n(cluster files under {}; set KES_TEST_KEEP=1 to keep them)",
                self.dump_logs(40),
                self.tmp.path().display()
            );
        }
        // Nodes first (their peer connections then end), then the proxy threads.
        self.nodes.clear();
        self.proxy.take();
    }
}

fn port_busy(exit: &Exited) -> bool {
    let text = format!("{}{}", exit.stdout, exit.stderr).to_ascii_lowercase();
    text.contains("address already in use") || text.contains("addrinuse")
}

/// `.cluster.json` for these addresses (ids 0..n), the upstream way: one line, ids sorted
/// as strings, and a newline.
pub fn cluster_json(addrs: &[SocketAddr]) -> String {
    let map: BTreeMap<String, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i.to_string(), a.to_string()))
        .collect();
    format!("{}\n", serde_json::to_string(&map).unwrap())
}

// ---------------------------------------------------------------------------------------
// Client history and linearizability
// ---------------------------------------------------------------------------------------

/// What a recorded operation did to or saw of a key (a register: exists / does not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A create; `ret` is `None` when its outcome is unknown (error, timeout, 5xx).
    Create,
    /// A read that answered: `true` = the key exists (200), `false` = 404.
    Read(bool),
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Record {
    pub key: String,
    pub node: usize,
    pub event: Event,
    /// Nanoseconds since the history started.
    pub call: u64,
    pub ret: Option<u64>,
    /// Status or error, for reports.
    pub detail: String,
}

/// A concurrent history of creates and reads, checked per key.
pub struct History {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            records: Mutex::new(Vec::new()),
        }
    }

    /// Now, in nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn push(&self, record: Record) {
        self.records.lock().unwrap().push(record);
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every key's history as a register that a create sets (once) and reads
    /// observe. `Ok(number of keys)`, or `Err` with the offending key's operations.
    pub fn check(&self) -> Result<usize, String> {
        let records = self.records();
        let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for r in &records {
            by_key.entry(r.key.as_str()).or_default().push(r);
        }
        for (key, ops) in &by_key {
            let creates = ops.iter().filter(|r| r.event == Event::Create).count();
            if creates > 1 {
                return Err(format!("key {key}: {creates} creates (test bug)"));
            }
            let history: Vec<Operation> = ops
                .iter()
                .map(|r| Operation {
                    key: 0,
                    kind: match r.event {
                        Event::Create => Kind::Write(1),
                        Event::Read(found) => Kind::Read(found.then_some(1)),
                    },
                    call: r.call,
                    ret: r.ret,
                })
                .collect();
            if !check_register(&history) {
                let mut sorted = ops.clone();
                sorted.sort_by_key(|r| r.call);
                let lines: Vec<String> = sorted
                    .iter()
                    .map(|r| {
                        format!(
                            "  node {} {:?} call {:.3} ms ret {} ({})",
                            r.node,
                            r.event,
                            r.call as f64 / 1e6,
                            r.ret
                                .map(|t| format!("{:.3} ms", t as f64 / 1e6))
                                .unwrap_or_else(|| "unknown".into()),
                            r.detail
                        )
                    })
                    .collect();
                return Err(format!(
                    "key {key}: history is not linearizable:\n{}",
                    lines.join("\n")
                ));
            }
        }
        Ok(by_key.len())
    }
}

/// The `p`-th percentile (0–100) of some durations (zero if empty).
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes (see
/// [`wait_until`], which also says what it saw last).
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    wait_until(timeout, every, || f().ok_or_else(String::new)).ok()
}
