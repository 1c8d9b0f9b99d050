//! `kes-node cluster recover --force`: the documented unsafe escape hatch for a cluster that
//! lost its majority for good (one survivor of two, say). It rewrites the configuration of a
//! *stopped* node to the nodes the operator names; the others become tombstones.
//!
//! Run it on every named node while they are all stopped, with the same `--keep` list, then
//! start them: they elect a leader among themselves and decide the entries that were pending
//! by the ordinary protocol (nothing pending is dropped: it may have been acknowledged). The
//! operator asserts that the other nodes are gone for good; one that comes back would hold a
//! configuration that still counts the survivors, so wipe it and `--join` it anew.
use std::path::PathBuf;

use argh::FromArgs;

use crate::cluster::file;
use crate::config::Config;
use crate::store::Store;

/// Offline: make the nodes given by --keep (host:port, as in .cluster.json) the whole
/// cluster of the stopped node in DIR. Unsafe: the other nodes must be gone for good.
#[derive(FromArgs)]
#[argh(subcommand, name = "recover")]
pub(super) struct RecoverArgs {
    /// confirm that the nodes not kept are gone for good
    #[argh(switch)]
    force: bool,
    /// a node to keep (repeat for each; this node must be one of them)
    #[argh(option)]
    keep: Vec<String>,
    /// a config file with hsm.key (otherwise KES_HSM_KEY)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the stopped node's directory (its kes.db)
    #[argh(positional)]
    dir: PathBuf,
}

pub(super) fn run(args: RecoverArgs) -> Result<(), String> {
    if !args.force {
        return Err(
            "cluster recover rewrites the cluster configuration without the consent of \
                    the nodes it drops: if they are gone for good, repeat with --force"
                .into(),
        );
    }
    if args.keep.is_empty() {
        return Err("name the nodes to keep with --keep host:port (this node among them)".into());
    }
    if !args.dir.join(crate::store::DB_FILE).exists() {
        return Err(format!("{} holds no kes.db", args.dir.display()));
    }
    let config = match &args.config {
        Some(path) => crate::config::load(path)?,
        None => Config::default(),
    };
    let device = crate::server::hsm::open_for(&config.hsm, &args.dir, false)?;
    // Opening takes redb's file lock: a running node makes this fail instead of racing it.
    let store = Store::open(&args.dir, &*device).map_err(|e| e.to_string())?;
    let current = store.applied_addresses().map_err(|e| e.to_string())?;
    let mut keep = Vec::new();
    for endpoint in &args.keep {
        let addr = file::normalize(endpoint)?;
        let id = current
            .iter()
            .find(|(_, a)| **a == addr)
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                format!(
                    "{endpoint} is not a member of this node's cluster {:?}",
                    current
                        .values()
                        .filter(|a| !a.is_empty())
                        .collect::<Vec<_>>()
                )
            })?;
        keep.push(id);
    }
    let addresses = store
        .force_configuration(&keep)
        .map_err(|e| format!("cannot rewrite the configuration: {e}"))?;
    drop(store);
    file::write(&args.dir, &addresses)?;
    let members: Vec<String> = addresses
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(id, a)| format!("{id}={a}"))
        .collect();
    println!(
        "{}: the cluster is now {}; start the node (and every other kept node, recovered the same way)",
        args.dir.display(),
        members.join(", ")
    );
    Ok(())
}
