//! `kes-node edge --config FILE`: the stateless edge server in front of a central key store.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use argh::FromArgs;

use crate::api::App;
use crate::config::KeyStoreConfig;
use crate::edge::{Edge, KeyStore, KeyStoreError, Runtime};
use crate::records::KeyRecord;
use crate::store::Store;

/// Key store worker threads: enough to overlap a few slow network calls.
const WORKERS: usize = 4;

/// Run a stateless edge server: keys in a central key store (keystore: in the config), cached.
#[derive(FromArgs)]
#[argh(subcommand, name = "edge")]
pub struct EdgeArgs {
    /// the YAML configuration file
    #[argh(option)]
    config: PathBuf,
    /// listen address IP:PORT (default: `address` in the config, else 0.0.0.0:7373)
    #[argh(option)]
    addr: Option<String>,
    /// event loops (threads serving connections; overrides limits.workers; default: one per
    /// core this process may use)
    #[argh(option)]
    workers: Option<usize>,
}

pub fn run(args: EdgeArgs) -> Result<(), String> {
    crate::harden::start(&[])?;
    let mut config = crate::config::load(&args.config)?;
    super::settings::override_workers(&mut config.limits, args.workers)?;
    let edge_config = crate::config::load_edge(&args.config)?;
    let addr = args
        .addr
        .or_else(|| config.address.clone())
        .unwrap_or_else(|| super::settings::DEFAULT_ADDR.into());
    let tls = crate::net::tls::Shared::new(crate::net::tls::configs(&config, false)?);
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("invalid listen address '{addr}': expected IP:PORT"))?;
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
    super::settings::configure(&mut app, &config)?;

    let workers = config.limits.worker_count();
    let listeners = crate::net::workers::bind(addr, workers)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    println!("kes-node: edge server; key store {}", keystore.describe());
    if workers > 1 {
        println!("kes-node: {workers} event loops");
    }
    println!("kes-node: listening on {local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut runtime = Runtime::new(edge, WORKERS);
    let reloader = super::reload::Reloader::new(Some(&args.config), tls.clone(), false, &config);
    crate::net::workers::run(listeners, tls, &config.limits, &app, &mut runtime, &|app| {
        reloader.reload(app)
    })
    .map_err(|e| format!("server failed: {e}"))?;
    println!("kes-node: stopped");
    Ok(())
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
