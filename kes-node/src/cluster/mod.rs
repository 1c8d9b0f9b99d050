//! The cluster shell: plugs the sans-IO [`Replica`] into the world. It owns the mio event
//! loop's side of clustering (peer links: TLS connections, dialing, redial backoff; see
//! `links.rs`), the wall clock and the operating system's randomness, and `.cluster.json`;
//! it turns event-loop events into replica events and carries out what the replica decides:
//! answers clients, releases reads, publishes the describe view.
//!
//! One node is the smallest cluster, so every write of every server goes through here: the
//! handler returns a command, the event loop proposes it, and the client is answered once the
//! command committed on every node (or failed). A follower forwards writes to the leader over
//! its peer link and relays the answer (see `replica/forward.rs`).
mod backend;
pub(crate) mod file;
pub(crate) mod frame;
mod links;
pub(crate) mod peer;
pub(crate) mod replica;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kes_core::consensus::{Config, Members, Params};
use kes_core::crypto::HmacKey;
use mio::{Registry, Token};

pub(crate) use crate::api::view::Describe;
use crate::api::Pending;
use crate::command::Command;
use crate::item::ItemName;
use crate::store::{Addresses, Store};
use links::Net;
use peer::Link;
pub(crate) use replica::{Millis, Replica, JOINING_ID};

pub(crate) use crate::net::{Completion, ConnRef};

/// A client's write waiting in the replica: its connection and request.
pub(crate) struct Client {
    conn: ConnRef,
    pending: Box<Pending>,
}

impl replica::Write for Client {
    fn command(&self) -> &Command {
        &self.pending.write.cmd
    }
}

/// This node's part of the cluster: the replica and the links it talks over.
pub(crate) struct Cluster {
    replica: Replica<Client, ConnRef>,
    net: Net,
    /// The replica's time is milliseconds since this instant.
    epoch: Instant,
    dir: PathBuf,
    /// Decided writes and reads, for the event loop to answer.
    pub completions: Vec<Completion>,
    pub released: Vec<(ConnRef, Result<(), String>)>,
}

impl Cluster {
    /// Loads (or, for a new database, bootstraps from `.cluster.json`) this node's consensus
    /// state. `listen` identifies this node among the members.
    pub(crate) fn open(
        store: &Store,
        dir: &Path,
        listen: SocketAddr,
        hsm: &dyn crate::hsm::Hsm,
        join: bool,
        read_lease: Option<(Duration, Duration)>,
    ) -> Result<Cluster, String> {
        let state = match store.raft_state().map_err(|e| e.to_string())? {
            Some(s) => s,
            None if join => {
                // A node about to join: nothing applied, no configuration. The leader's
                // snapshot brings both.
                store
                    .init_raft(Config::default(), &Addresses::new())
                    .map_err(|e| format!("cannot initialize the cluster state: {e}"))?;
                store
                    .raft_state()
                    .map_err(|e| e.to_string())?
                    .ok_or("cluster state missing after init")?
            }
            None => {
                let nodes = match file::read(dir)? {
                    Some(nodes) => nodes,
                    None => Addresses::from([(0, listen.to_string())]),
                };
                let mut members = Members::new();
                for id in nodes.keys() {
                    members
                        .push(*id)
                        .map_err(|_| "too many nodes in .cluster.json (at most 7)".to_string())?;
                }
                store
                    .init_raft(
                        Config {
                            index: 0,
                            members,
                            forced: false,
                        },
                        &nodes,
                    )
                    .map_err(|e| format!("cannot initialize the cluster state: {e}"))?;
                store
                    .raft_state()
                    .map_err(|e| e.to_string())?
                    .ok_or("cluster state missing after init")?
            }
        };
        let id = file::own_id(&state, listen).ok_or_else(|| {
            format!(
                "this node ({listen}) is not part of the cluster {:?}: start it with --addr set to its address in .cluster.json",
                state.addresses
            )
        })?;
        let joining = id == JOINING_ID;
        if !joining {
            // A mirror for people and tools: a full disk must not keep the node from serving.
            if let Err(err) = file::write(dir, &state.addresses) {
                eprintln!("kes-node: {err}");
            }
        }
        let params = Params {
            election_timeout: 1000,
            heartbeat_interval: 100,
            read_timeout: 5000,
            write_timeout: 5000,
            // With a lease, a node answers reads only while a leader recently counted it a
            // member, which bounds stale reads after a forced removal (spec: read_lease).
            read_lease: read_lease.map(|(lease, _)| lease.as_millis() as u64),
            clock_drift: read_lease.map_or(0, |(_, drift)| drift.as_millis() as u64),
            ..Params::default()
        };
        let epoch = Instant::now();
        let start = replica::Start {
            id,
            params,
            seed: u64::from_le_bytes(crate::random::bytes()),
            group_commit: std::env::var("KES_GROUP_COMMIT").map_or(true, |v| v != "off"),
        };
        let replica = Replica::new(0, store, start)?;
        let seed = crate::hsm::cluster_seed(hsm, &[]);
        let cluster_key = crate::identity::ApiKey::from_seed(seed);
        let secret = HmacKey::new(crate::hsm::cluster_seed(hsm, b"kes:v1:peer_auth"));
        let mut cluster = Cluster {
            replica,
            net: Net::new(secret, client_config(&cluster_key)?),
            epoch,
            dir: dir.to_path_buf(),
            completions: Vec::new(),
            released: Vec::new(),
        };
        cluster.collect();
        Ok(cluster)
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Milliseconds until the core wants its next tick.
    pub(crate) fn next_timeout(&self) -> Duration {
        Duration::from_millis(self.replica.next_deadline().saturating_sub(self.now()))
    }

    /// Persists everything the steps since the last flush asked for in one durable
    /// transaction (group commit), then sends their messages and answers their clients.
    pub(crate) fn flush(&mut self, store: &Store) {
        let now = self.now();
        self.replica.flush(now, &mut self.net.io(None), store);
        self.collect();
    }

    /// Moves what the replica decided to where the event loop picks it up, and mirrors the
    /// members in `.cluster.json` when they changed.
    fn collect(&mut self) {
        let (writes, reads) = self.replica.take_decided();
        self.completions
            .extend(writes.into_iter().map(|(c, r)| (c.conn, c.pending, r)));
        self.released.extend(reads);
        if let Some(addresses) = self.replica.take_mirror() {
            if let Err(err) = file::write(&self.dir, &addresses) {
                eprintln!("kes-node: {err}");
            }
        }
    }

    /// Proposes a client's write (or forwards it to the leader).
    pub(crate) fn propose(&mut self, store: &Store, conn: ConnRef, pending: Box<Pending>) {
        let now = self.now();
        let client = Client { conn, pending };
        self.replica
            .propose(now, &mut self.net.io(None), store, client);
        self.collect();
    }

    /// Asks whether a read of `names` may be answered now; the decision lands in `released`
    /// (at once, or when the writes it waits for are decided).
    pub(crate) fn read(&mut self, _store: &Store, conn: ConnRef, names: &[ItemName]) {
        let now = self.now();
        self.replica.read(now, conn, names);
    }

    /// True while reads must pass the gate (see `replica/gate.rs`).
    pub(crate) fn has_pending(&self) -> bool {
        self.replica.has_pending()
    }

    /// True if this node may serve clients: it is a member of the configuration it holds.
    pub(crate) fn is_member(&self) -> bool {
        self.replica.is_member()
    }

    /// Peer links open now (inbound and outbound): they count against the server's
    /// connection limit.
    pub(crate) fn link_count(&self) -> usize {
        self.net.count()
    }

    /// Takes over an inbound peer connection accepted by the HTTP listener.
    pub(crate) fn adopt(&mut self, registry: &Registry, link: Link) -> Token {
        self.net.adopt(registry, link)
    }

    /// Readiness of a link: its frames go to the replica.
    pub(crate) fn on_link_event(&mut self, registry: &Registry, store: &Store, token: Token) {
        let mut frames = Vec::new();
        let peer = self.net.on_ready(self.replica.id(), token, &mut frames);
        if let Some(from) = peer {
            let now = self.now();
            let mut io = self.net.io(Some(registry));
            for f in frames {
                self.replica.on_frame(now, &mut io, store, from, f);
            }
            self.replica.on_writable(&mut io, from);
            self.collect();
        }
        self.net.update(registry, token);
    }

    /// The replica's timers (the core's tick among them), then the links: dial every other
    /// member, drop stale links.
    pub(crate) fn maintain(&mut self, registry: &Registry, store: &Store) {
        let now = self.now();
        self.replica
            .tick(now, &mut self.net.io(Some(registry)), store);
        self.collect();
        self.net.maintain(registry, self.replica.peers());
    }

    /// The cluster as `/v1/cluster/describe` shows it.
    pub(crate) fn describe(&self) -> Describe {
        let node = self.replica.node();
        Describe {
            nodes: self
                .replica
                .addresses()
                .iter()
                .filter(|(_, a)| !a.is_empty())
                .map(|(id, a)| (id.to_string(), a.clone()))
                .collect(),
            leader_id: node.leader().map(u64::from).unwrap_or(u64::MAX),
            node_id: self.replica.id(),
            term: node.term(),
            commit_index: node.commit_index(),
            role: format!("{:?}", node.role()).to_lowercase(),
            links: self
                .replica
                .peers()
                .map(|(id, _)| (id.to_string(), self.net.view(id)))
                .collect(),
            pending_change: self.replica.pending_change(),
            epoch: self.net.epoch,
        }
    }

    /// Updates the shared view of the cluster if it changed.
    pub(crate) fn publish(&self, view: &std::sync::Mutex<Describe>) {
        let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
        let node = self.replica.node();
        let leader = node.leader().map(u64::from).unwrap_or(u64::MAX);
        let changed = v.term != node.term()
            || v.leader_id != leader
            || v.commit_index != node.commit_index()
            || v.nodes.len()
                != self
                    .replica
                    .addresses()
                    .values()
                    .filter(|a| !a.is_empty())
                    .count()
            || v.nodes.is_empty()
            || v.epoch != self.net.epoch
            || v.pending_change.is_some() != self.replica.has_pending_change();
        if changed {
            *v = self.describe();
        }
    }
}

/// TLS for dialing peers: the cluster's client certificate, ALPN [`peer::ALPN`]. The server's
/// certificate is not checked here; the Hello exchange authenticates the peer (see `peer`).
fn client_config(key: &crate::identity::ApiKey) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, private) = key.certificate_pem()?;
    let cert = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| e.to_string())?;
    let private = PrivateKeyDer::from_pem_slice(private.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer {
            algs: provider.signature_verification_algorithms,
        }))
        .with_client_auth_cert(vec![cert], private)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![peer::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate (checking only the handshake signature): peers prove who
/// they are with the Hello MAC over the session, which an impostor without the HSM key cannot
/// produce, and the dialer sends nothing before it verified that Hello.
#[derive(Debug)]
struct AnyServer {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}
