//! Opening an edge server: its key store (checked once, so that `/v1/ready` is right from
//! the start), the `keys:` it must have, the in-memory policy store and the listening sockets.
use std::net::TcpListener;
use std::sync::Arc;

use crate::api::App;
use crate::config::{Config, EdgeConfig, KeyStoreConfig};
use crate::edge::{Edge, KeyStore, KeyStoreError, Runtime};
use crate::net::Backend;
use crate::records::KeyRecord;
use crate::store::Store;

/// Key store worker threads: enough to overlap a few slow network calls.
const WORKERS: usize = 4;

/// An edge server ready to serve.
pub(super) struct EdgeServer {
    pub(super) app: App,
    /// The key store's worker threads.
    pub(super) backend: Box<dyn Backend>,
    pub(super) listeners: Vec<TcpListener>,
}

/// Opens the key store and binds with `listeners`; `announce` prints which key store.
pub(super) fn prepare(
    config: &Config,
    edge_config: &EdgeConfig,
    announce: bool,
    listeners: impl FnOnce() -> Result<Vec<TcpListener>, String>,
) -> Result<EdgeServer, String> {
    let keystore = open_keystore(&edge_config.keystore)?;
    let edge = Arc::new(Edge::new(
        keystore.clone(),
        edge_config.cache,
        edge_config.ping,
    ));
    // The first health check, so that /v1/ready is right from the start.
    let health = keystore.status();
    if let Err(err) = &health {
        eprintln!("kes-node: warning: {}: {err}", keystore.describe());
    }
    edge.report(health);
    for name in &edge_config.keys {
        create_if_missing(keystore.as_ref(), name, &config.admin_identity)?;
    }

    let store = Store::in_memory().map_err(|e| format!("cannot set up the policy store: {e}"))?;
    let mut app = App::edge(store, config.admin_identity.clone(), edge.clone());
    super::settings::configure(&mut app, config)?;
    let listeners = listeners()?;
    if announce {
        println!("kes-node: edge server; key store {}", keystore.describe());
    }
    Ok(EdgeServer {
        app,
        backend: Box::new(Runtime::new(edge, WORKERS)),
        listeners,
    })
}

/// The configured key store.
fn open_keystore(config: &KeyStoreConfig) -> Result<Arc<dyn KeyStore>, String> {
    Ok(match config {
        KeyStoreConfig::Fs { path } => Arc::new(crate::edge::fs::FsStore::open(path)?),
        KeyStoreConfig::Kes {
            endpoints,
            enclave,
            api_key,
            cert,
            key,
            ca,
            timeout,
        } => {
            use crate::client::{Credentials, ServerTrust};
            let trust = match ca {
                Some(ca) => ServerTrust::from_ca_path(ca)
                    .map_err(|e| format!("keystore.kes.tls.ca: {e}"))?,
                None => ServerTrust::Roots(Arc::new(crate::edge::public_roots())),
            };
            let credentials = || match (api_key, cert, key) {
                (Some(k), _, _) => Credentials::from_api_key(k),
                (None, Some(c), Some(k)) => Credentials::from_pem_files(c, k),
                _ => unreachable!("checked by the config"),
            };
            Arc::new(crate::edge::kes::KesStore::new(
                endpoints,
                enclave,
                WORKERS,
                *timeout,
                credentials,
                trust,
            )?)
        }
        #[cfg(not(feature = "aws"))]
        KeyStoreConfig::Aws { .. } => {
            return Err(
                "keystore.aws: this kes-node was built without the AWS key store \
                        (cargo feature aws)"
                    .into(),
            )
        }
        #[cfg(feature = "aws")]
        KeyStoreConfig::Aws {
            endpoint,
            region,
            kms_key,
            access_key,
            secret_key,
            token,
        } => {
            let creds = crate::edge::aws::Credentials {
                access_key: access_key.clone(),
                secret_key: zeroize::Zeroizing::new(secret_key.clone()),
                token: token.clone(),
            };
            Arc::new(crate::edge::aws::SecretsManager::new(
                endpoint,
                region,
                kms_key.clone(),
                creds,
            )?)
        }
    })
}

/// `keys:`: creates a key unless it exists.
fn create_if_missing(store: &dyn KeyStore, name: &str, admin: &str) -> Result<(), String> {
    use kes_core::crypto::{HmacKey, SecretKey};
    let rec = KeyRecord {
        key: SecretKey::new(crate::api::default_cipher(), crate::random::bytes()),
        hmac: Some(HmacKey::new(crate::random::bytes())),
        created_at: crate::timefmt::now(),
        created_by: admin.to_owned(),
    };
    match store.create(name, &crate::edge::format::encode(&rec)) {
        Ok(()) | Err(KeyStoreError::Exists) => Ok(()),
        Err(err) => Err(format!("config: keys: cannot create key '{name}': {err}")),
    }
}
