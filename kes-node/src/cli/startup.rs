//! Starting a stateful node: validate everything, open `kes.db`, bind, join the cluster and
//! serve until stopped. Shared by `kes-node server` (`server.rs`) and its `--dev` mode
//! (`dev.rs`).
use std::net::SocketAddr;
use std::path::Path;

use crate::api::App;
use crate::config::Config;
use crate::hsm::Hsm;
use crate::store::Store;

/// Validates everything, opens the store, binds and serves. `on_listening` runs once the
/// socket is bound (dev mode prints its instructions there). `config_path` is where a SIGHUP
/// reloads the config from (`None`: a dev server, nothing to reload).
pub fn start(
    config: &Config,
    config_path: Option<&Path>,
    dir: &Path,
    addr: &str,
    join: bool,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    // Everything that can be checked is checked before kes.db is touched.
    let device: std::sync::Arc<dyn Hsm> = super::hsm::open_for(&config.hsm, dir, true)?.into();
    let tls = crate::net::tls::Shared::new(crate::net::tls::configs(config, true)?);
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("invalid listen address '{addr}': expected IP:PORT"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let store = Store::open(dir, &*device).map_err(|e| e.to_string())?;
    store.set_min_free(
        config
            .min_free
            .unwrap_or(crate::store::space::DEFAULT_MIN_FREE),
    );

    let workers = config.limits.worker_count();
    let listeners = crate::net::workers::bind(addr, workers)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let mut cluster = crate::cluster::Cluster::open(
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
    if workers > 1 {
        println!("kes-node: {workers} event loops");
    }
    println!("kes-node: listening on {local}");
    on_listening(local);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let reloader = super::reload::Reloader::new(config_path, tls.clone(), true, config);
    crate::net::workers::run(listeners, tls, &config.limits, &app, &mut cluster, &|app| {
        reloader.reload(app)
    })
    .map_err(|e| format!("server failed: {e}"))?;
    println!("kes-node: stopped");
    Ok(())
}
