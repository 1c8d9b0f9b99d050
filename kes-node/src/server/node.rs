//! Opening a stateful node: the HSM, `kes.db`, the listening sockets and the cluster state,
//! in that order, everything that can be checked checked before `kes.db` is touched.
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use crate::api::App;
use crate::config::Config;
use crate::hsm::Hsm;
use crate::net::Backend;
use crate::store::Store;

/// A node ready to serve.
pub(super) struct Node {
    pub(super) app: App,
    /// The cluster (one node is the smallest cluster).
    pub(super) backend: Box<dyn Backend>,
    pub(super) listeners: Vec<TcpListener>,
}

/// Opens the HSM (`hsm`, else the config's), the store in `dir` and the cluster state, and
/// binds with `listeners`.
pub(super) fn prepare(
    config: &Config,
    dir: &Path,
    hsm: Option<Arc<dyn Hsm>>,
    join: bool,
    listeners: impl FnOnce() -> Result<Vec<TcpListener>, String>,
) -> Result<Node, String> {
    let device: Arc<dyn Hsm> = match hsm {
        Some(hsm) => hsm,
        None => super::hsm::open_for(&config.hsm, dir, true)?.into(),
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let store = Store::open(dir, &*device).map_err(|e| e.to_string())?;
    store.set_min_free(
        config
            .min_free
            .unwrap_or(crate::store::space::DEFAULT_MIN_FREE),
    );

    let listeners = listeners()?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let cluster = crate::cluster::Cluster::open(
        &store,
        dir,
        local,
        &*device,
        join,
        config
            .read_lease
            .map(|l| (l, config.clock_drift.unwrap_or(l / 10))),
    )?;

    let mut app = App::new(store, config.admin_identity.clone());
    super::settings::configure(&mut app, config)?;
    app.member
        .store(cluster.is_member(), std::sync::atomic::Ordering::Relaxed);
    crate::hsm::health::watch(device, app.hsm.clone(), config.hsm.health_check());
    Ok(Node {
        app,
        backend: Box::new(cluster),
        listeners,
    })
}
