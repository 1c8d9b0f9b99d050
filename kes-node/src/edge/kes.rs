//! The `kes` key store: a kes-node server or cluster as the central store. The edge server
//! authenticates with an API key or a certificate and keeps each key as a secret of one
//! enclave (the value is the key's stored form, as in any other key store), so a fleet of edge
//! servers can sit in front of one replicated cluster.
//!
//! The edge server's identity needs, in that enclave, a policy allowing `/v1/secret/*`.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::keystore::{KeyStore, KeyStoreError};
use crate::client::{Client, ClientError, Credentials, ServerTrust};

/// A secret name no key is expected to have: the health check reads it (a `404` proves that
/// the server answers, the enclave exists and the edge server may read it).
const PROBE: &str = "kes-edge-status-probe";

pub struct KesStore {
    /// One connection each, so that workers do not queue behind one another.
    clients: Vec<Client>,
    next: AtomicUsize,
    endpoint: String,
    enclave: String,
}

impl KesStore {
    /// `connections` clients for `endpoint`; `credentials` makes each one's credentials.
    pub fn new(
        endpoint: &str,
        enclave: &str,
        connections: usize,
        credentials: impl Fn() -> Result<Credentials, ClientError>,
        trust: ServerTrust,
    ) -> Result<KesStore, String> {
        let bad = |e: ClientError| format!("keystore.kes: {e}");
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let client = Client::new(endpoint, credentials().map_err(bad)?, trust.clone())
                .map_err(bad)?
                .with_enclave(Some(enclave.to_owned()));
            clients.push(client);
        }
        Ok(KesStore {
            clients,
            next: AtomicUsize::new(0),
            endpoint: endpoint.to_owned(),
            enclave: enclave.to_owned(),
        })
    }

    fn client(&self) -> &Client {
        &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
    }

    fn error(&self, err: ClientError) -> KeyStoreError {
        match err {
            ClientError::Network(why) => KeyStoreError::Unreachable(why),
            ClientError::Api {
                status: 404,
                message,
            } if message == "secret does not exist" => KeyStoreError::NotFound,
            // Upstream's ErrSecretExists is a 404.
            ClientError::Api { message, .. } if message == "secret already exists" => {
                KeyStoreError::Exists
            }
            ClientError::Api { status: 403, .. } => KeyStoreError::Failed(format!(
                "{} refuses the edge server's identity {} in enclave '{}': it needs a policy \
                 allowing /v1/secret/* there",
                self.endpoint,
                self.clients[0].identity(),
                self.enclave
            )),
            ClientError::Api { status, message } => {
                KeyStoreError::Failed(format!("{}: {status} {message}", self.endpoint))
            }
            other => KeyStoreError::Failed(format!("{}: {other}", self.endpoint)),
        }
    }
}

impl KeyStore for KesStore {
    fn describe(&self) -> String {
        format!("kes: {} (enclave {})", self.endpoint, self.enclave)
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let start = Instant::now();
        match self.client().describe_secret(PROBE) {
            Ok(_) => Ok(start.elapsed()),
            Err(e) => match self.error(e) {
                KeyStoreError::NotFound => Ok(start.elapsed()),
                e => Err(e),
            },
        }
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        self.client()
            .create_secret(name, value)
            .map_err(|e| self.error(e))
    }

    fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let secret = self.client().read_secret(name).map_err(|e| self.error(e))?;
        Ok(Zeroizing::new(secret.into_inner().secret))
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        self.client().delete_secret(name).map_err(|e| self.error(e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError> {
        let list = self
            .client()
            .list_secrets(prefix)
            .map_err(|e| self.error(e))?;
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
