//! `kes-node edge --config FILE`: the stateless edge server in front of a central key store.
//! Starting one is [`crate::server::Builder::edge`]'s job.
use std::path::PathBuf;

use argh::FromArgs;

/// Run a stateless edge server: keys in a central key store (keystore: in the config), cached.
#[derive(FromArgs)]
#[argh(subcommand, name = "edge")]
pub(super) struct EdgeArgs {
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

pub(super) fn run(args: EdgeArgs) -> Result<(), String> {
    let mut config = crate::config::load(&args.config)?;
    super::override_workers(&mut config.limits, args.workers)?;
    let edge_config = crate::config::load_edge(&args.config)?;
    let mut builder = crate::server::Builder::edge(config, edge_config).config_file(&args.config);
    if let Some(addr) = args.addr {
        builder = builder.address(addr);
    }
    super::serve(builder)
}
