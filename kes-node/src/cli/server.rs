//! `kes-node server` and `kes-node restore`: the command lines of a stateful node. Starting
//! one is [`crate::server::Builder`]'s job (shared with `--dev`, `dev.rs`, and `edge`).
use std::path::PathBuf;

use argh::FromArgs;

use crate::store::Store;

/// Run a stateful KES server whose state lives in DIR/kes.db.
#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
pub(super) struct ServerArgs {
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
    /// event loops (threads serving connections; overrides limits.workers; default: one per
    /// core this process may use)
    #[argh(option)]
    workers: Option<usize>,
    /// the working directory holding kes.db (with --dev: where to keep the generated files;
    /// default a new temporary directory)
    #[argh(positional)]
    dir: Option<PathBuf>,
}

pub(super) fn run(args: ServerArgs) -> Result<(), String> {
    // A re-executed server (see `harden`) first takes the secrets it was handed: the config
    // may refer to them.
    crate::harden::receive()?;
    if args.dev {
        crate::harden::start(&[])?;
        return super::dev::run(args.dir, args.addr, args.workers);
    }
    let Some(config_path) = args.config else {
        return Err(
            "no --config FILE given (or use --dev for a development server with no set-up)".into(),
        );
    };
    let Some(dir) = args.dir else {
        return Err("no working directory given: kes-node server --config FILE DIR".into());
    };
    let mut config = crate::config::load(&config_path)?;
    super::override_workers(&mut config.limits, args.workers)?;
    let mut builder = crate::server::Builder::node(config, dir)
        .join(args.join)
        .config_file(config_path);
    if let Some(addr) = args.addr {
        builder = builder.address(addr);
    }
    super::serve(builder)
}

/// Restore a backup (from `kes-node cluster backup`) into a new directory DIR; then start a
/// server on DIR as usual. The HSM key (KES_HSM_KEY or hsm.key in --config) must be the
/// backed-up cluster's.
#[derive(FromArgs)]
#[argh(subcommand, name = "restore")]
pub(super) struct RestoreArgs {
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

pub(super) fn restore(args: RestoreArgs) -> Result<(), String> {
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
    let device = crate::server::hsm::open_for(&config.hsm, &args.dir, false)?;
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
