//! `kes-node server`: open (or create) `kes.db` in a directory and serve the KES API.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::api::App;
use crate::config::Config;
use crate::hsm::Hsm;
use crate::store::Store;

/// Default listen address, as upstream.
pub(super) const DEFAULT_ADDR: &str = "0.0.0.0:7373";

/// Run a stateful KES server whose state lives in DIR/kes.db.
#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
pub struct ServerArgs {
    /// the YAML configuration file
    #[argh(option)]
    config: Option<PathBuf>,
    /// listen address IP:PORT (default 0.0.0.0:7373; 127.0.0.1:7373 with --dev)
    #[argh(option)]
    addr: Option<String>,
    /// start a development server: generate keys and certificates, no set-up needed
    #[argh(switch)]
    dev: bool,
    /// start empty and wait to be added to a cluster (PUT /v1/cluster/expand on a member)
    #[argh(switch)]
    join: bool,
    /// the working directory holding kes.db (with --dev: where to keep the generated files;
    /// default a new temporary directory)
    #[argh(positional)]
    dir: Option<PathBuf>,
}

pub fn run(args: ServerArgs) -> Result<(), String> {
    // A re-executed server (see `harden`) first takes the secrets it was handed: the config
    // may refer to them.
    crate::harden::receive()?;
    if args.dev {
        crate::harden::start(&[])?;
        return super::dev::run(args.dir, args.addr);
    }
    let Some(config_path) = args.config else {
        return Err(
            "no --config FILE given (or use --dev for a development server with no set-up)".into(),
        );
    };
    let Some(dir) = args.dir else {
        return Err("no working directory given: kes-node server --config FILE DIR".into());
    };
    let config = crate::config::load(&config_path)?;
    crate::harden::start(&secret_vars(&config))?;
    let addr = args
        .addr
        .or_else(|| config.address.clone())
        .unwrap_or_else(|| DEFAULT_ADDR.into());
    start(&config, Some(&config_path), &dir, &addr, args.join, |_| {})
}

/// The environment variables besides `KES_HSM_KEY` that hold secrets: the PKCS#11 PIN's.
fn secret_vars(config: &Config) -> Vec<&str> {
    match config.pkcs11.as_ref().map(|p| &p.pin) {
        Some(crate::config::PinSource::Env(var)) => vec![var.as_str()],
        _ => Vec::new(),
    }
}

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
    let device: std::sync::Arc<dyn Hsm> =
        crate::hsm::open(config, dir, crate::hsm::NewKey::IfNewDb)?.into();
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

    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = mio::net::TcpListener::from_std(listener);
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
    configure(&mut app, config)?;
    app.member
        .store(cluster.is_member(), std::sync::atomic::Ordering::Relaxed);
    let every = config
        .pkcs11
        .as_ref()
        .map_or(crate::config::DEFAULT_HEALTH_CHECK, |p| p.health_check);
    crate::hsm::health::watch(device, app.hsm.clone(), every);
    println!("kes-node: listening on {local}");
    on_listening(local);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let reloader = super::reload::Reloader::new(config_path, tls.clone(), true, config);
    crate::net::serve(listener, tls, &config.limits, &app, &mut cluster, &|app| {
        reloader.reload(app)
    })
    .map_err(|e| format!("server failed: {e}"))?;
    println!("kes-node: stopped");
    Ok(())
}

/// What the stateful and the edge server take from the config alike: logging, `api.<path>`
/// options and the static policies.
pub(super) fn configure(app: &mut App, config: &Config) -> Result<(), String> {
    set_logs(app, config);
    app.skip_auth = config
        .api
        .iter()
        .filter(|(_, r)| r.skip_auth)
        .map(|(p, _)| p.trim_end_matches('/').to_owned())
        .collect();
    seed_policies(app, config)
}

/// `log.audit` and `log.error` (at start and on a reload).
pub(super) fn set_logs(app: &App, config: &Config) {
    use std::sync::atomic::Ordering;
    app.logs
        .audit_to_stdout
        .store(config.log_audit, Ordering::Relaxed);
    app.logs
        .error_to_stderr
        .store(config.log_error, Ordering::Relaxed);
}

/// Writes the config's `policy:` section into the default enclave: each policy, and each of
/// its identities assigned to it. Entries that already match are left alone.
pub(super) fn seed_policies(app: &App, config: &Config) -> Result<(), String> {
    use crate::command::Command;
    use crate::records::{IdentityRecord, PolicyRecord};
    use crate::store::DEFAULT_ENCLAVE;
    let now = crate::timefmt::now();
    for (name, p) in &config.policies {
        let mut allow = p.allow.clone();
        let mut deny = p.deny.clone();
        allow.sort();
        allow.dedup();
        deny.sort();
        deny.dedup();
        let same = app
            .store
            .policy(DEFAULT_ENCLAVE, name)
            .is_ok_and(|old| old.allow == allow && old.deny == deny);
        if !same {
            let policy = PolicyRecord {
                allow,
                deny,
                created_at: now,
                created_by: config.admin_identity.clone(),
            };
            let cmd = Command::CreatePolicy {
                enclave: DEFAULT_ENCLAVE.into(),
                name: name.clone(),
                policy,
                replace: true,
            };
            app.write_local(cmd)
                .map_err(|e| format!("config: policy.{name}: cannot store it: {e}"))?;
        }
        for id in &p.identities {
            if app
                .store
                .identity(DEFAULT_ENCLAVE, id)
                .is_ok_and(|old| old.policy == *name && !old.admin)
            {
                continue;
            }
            let record = IdentityRecord {
                policy: name.clone(),
                admin: false,
                ttl: std::time::Duration::ZERO,
                expires_at: None,
                created_at: now,
                created_by: config.admin_identity.clone(),
                children: Vec::new(),
            };
            let cmd = Command::CreateIdentity {
                enclave: DEFAULT_ENCLAVE.into(),
                identity: id.clone(),
                record,
                replace: true,
            };
            app.write_local(cmd)
                .map_err(|e| format!("config: policy.{name}.identities: cannot store {id}: {e}"))?;
        }
    }
    Ok(())
}

/// Restore a backup (from `kes-node cluster backup`) into a new directory DIR; then start a
/// server on DIR as usual. The HSM key (KES_HSM_KEY or hsm.key in --config) must be the
/// backed-up cluster's.
#[derive(FromArgs)]
#[argh(subcommand, name = "restore")]
pub struct RestoreArgs {
    /// the backup file
    #[argh(option)]
    from: PathBuf,
    /// a config file with the hsm section (otherwise KES_HSM_KEY)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the new node directory (must not hold a kes.db yet)
    #[argh(positional)]
    dir: PathBuf,
}

pub fn restore(args: RestoreArgs) -> Result<(), String> {
    let config = crate::config::hsm_only(args.config.as_deref())?;
    let file = std::fs::File::open(&args.from)
        .map_err(|e| format!("cannot read {}: {e}", args.from.display()))?;
    let mut input = std::io::BufReader::new(file);
    if args.dir.join(crate::store::DB_FILE).exists() {
        return Err(format!(
            "{} already holds a kes.db: restore into a new directory",
            args.dir.display()
        ));
    }
    let device = crate::hsm::open(&config, &args.dir, crate::hsm::NewKey::Never)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let store = Store::open(&args.dir, &*device).map_err(|e| e.to_string())?;
    if let Err(err) = store.restore_from(&mut input, &*device) {
        drop(store);
        // Leave no half-made database behind.
        let _ = std::fs::remove_file(args.dir.join(crate::store::DB_FILE));
        return Err(err.to_string());
    }
    let keys = store
        .list_keys(crate::store::DEFAULT_ENCLAVE, "")
        .map(|k| k.len())
        .unwrap_or(0);
    let enclaves = store.list_enclaves("").map(|e| e.len()).unwrap_or(0);
    println!(
        "restored {} into {} ({keys} keys in the default enclave, {enclaves} enclaves)",
        args.from.display(),
        args.dir.display()
    );
    Ok(())
}
