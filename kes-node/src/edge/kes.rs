//! The `kes` key store: a kes-node server or cluster as the central store. The edge server
//! authenticates with an API key or a certificate and keeps each key as a secret of one
//! enclave (the value is the key's stored form, as in any other key store), so a fleet of edge
//! servers can sit in front of one replicated cluster.
//!
//! The edge server's identity needs, in that enclave, a policy allowing `/v1/secret/*`. Given
//! the nodes of a cluster, it fails over the way the client library does
//! ([`Client::with_endpoints`]): a call goes to the node that answered last, and on to the next
//! while a node cannot be reached or answers `503` (not a member, no quorum on its side). Every
//! node answers reads, so keys stay available while nodes are down (writes need every node of
//! a kes-node cluster anyway). A create that reached a node whose answer got lost may, retried
//! on the next node, find its own key and answer "exists".
//!
//! Each call has `keystore.kes.timeout` (10 s by default) for its whole answer, all nodes it
//! tries together ([`Client::with_timeout`]): a node that answers slowly, a byte at a time or
//! never, counts as unreachable once the time is up, as a node that is down does (the edge
//! server serves from its offline cache, or answers `502`), instead of holding a key store
//! worker and the requests waiting for it, or the start (which checks the store and creates
//! the `keys:`).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::keystore::{KeyStore, KeyStoreError};
use crate::client::{ApiError, Client, ClientError, Credentials, Endpoint, ServerTrust};

/// A secret name no key is expected to have: the health check reads it (a `404` proves that
/// the server answers, the enclave exists and the edge server may read it).
const PROBE: &str = "kes-edge-status-probe";

pub(crate) struct KesStore {
    /// Clients over every endpoint, each with a connection per node of its own, so that
    /// workers do not queue behind one another; taken in turn.
    clients: Vec<Client>,
    next: AtomicUsize,
    enclave: String,
    identity: String,
}

impl KesStore {
    /// `connections` clients, each call of which takes at most `timeout`; `credentials` makes
    /// each one's credentials.
    pub(crate) fn new(
        endpoints: &[String],
        enclave: &str,
        connections: usize,
        timeout: Duration,
        credentials: impl Fn() -> Result<Credentials, ClientError>,
        trust: ServerTrust,
    ) -> Result<KesStore, String> {
        if endpoints.is_empty() {
            return Err("keystore.kes.endpoint: no endpoint given".into());
        }
        let bad = |e: ClientError| format!("keystore.kes: {e}");
        let clients = (0..connections.max(1))
            .map(|_| {
                Client::with_endpoints(endpoints, credentials().map_err(bad)?, trust.clone())
                    .map(|c| {
                        c.with_enclave(Some(enclave.to_owned()))
                            .with_timeout(timeout)
                    })
                    .map_err(bad)
            })
            .collect::<Result<Vec<Client>, String>>()?;
        Ok(KesStore {
            identity: clients[0].identity().to_owned(),
            clients,
            next: AtomicUsize::new(0),
            enclave: enclave.to_owned(),
        })
    }

    /// Runs `call` on the next client (which fails over across the nodes).
    fn call<T>(
        &self,
        call: impl FnOnce(&Client) -> Result<T, ClientError>,
    ) -> Result<T, KeyStoreError> {
        let client = &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()];
        call(client).map_err(|e| self.error(client.endpoint(), e))
    }

    /// `err` as the edge server sees it; `endpoint` is the node that answered.
    fn error(&self, endpoint: &Endpoint, err: ClientError) -> KeyStoreError {
        let endpoint = endpoint.url();
        match err {
            ClientError::Transport(why) | ClientError::Tls(why) => KeyStoreError::Unreachable(why),
            e if e.is(&ApiError::SECRET_NOT_FOUND) => KeyStoreError::NotFound,
            // Upstream's ErrSecretExists is a 404.
            ClientError::Exists(e) if e.message() == "secret already exists" => {
                KeyStoreError::Exists
            }
            ClientError::Forbidden(_) => KeyStoreError::Failed(format!(
                "{endpoint} refuses the edge server's identity {} in enclave '{}': the enclave \
                 must exist and the identity needs a policy allowing /v1/secret/* there",
                self.identity, self.enclave
            )),
            other => match other.api() {
                Some(e) => KeyStoreError::Failed(format!("{endpoint}: {} {e}", e.status())),
                None => KeyStoreError::Failed(format!("{endpoint}: {other}")),
            },
        }
    }
}

impl KeyStore for KesStore {
    fn describe(&self) -> String {
        let endpoints: Vec<String> = self.clients[0].endpoints().map(Endpoint::url).collect();
        format!("kes: {} (enclave {})", endpoints.join(", "), self.enclave)
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let start = Instant::now();
        match self.call(|c| c.describe_secret(PROBE).map(drop)) {
            Ok(()) | Err(KeyStoreError::NotFound) => Ok(start.elapsed()),
            Err(e) => Err(e),
        }
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        self.call(|c| c.create_secret(name, value))
    }

    fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let secret = self.call(|c| c.read_secret(name))?;
        Ok(Zeroizing::new(secret.into_inner().secret))
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        self.call(|c| c.delete_secret(name))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError> {
        let list = self.call(|c| c.list_secrets(prefix))?;
        let mut names: Vec<String> = list
            .into_inner()
            .names
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }
}
