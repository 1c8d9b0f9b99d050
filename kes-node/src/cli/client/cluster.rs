//! `kes-node cluster ...`: show the cluster, add a node (started with `--join`), remove one,
//! download a backup; `recover` is the offline escape hatch (`cli/recover.rs`).
use argh::FromArgs;

use super::{client_command, print_fields, print_json};
use crate::client::ClusterInfo;

/// Manage the cluster's members.
#[derive(FromArgs)]
#[argh(subcommand, name = "cluster")]
pub(crate) struct ClusterArgs {
    #[argh(subcommand)]
    command: ClusterCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum ClusterCommand {
    Info(Info),
    Add(Add),
    Rm(Rm),
    Backup(Backup),
    Recover(crate::cli::recover::RecoverArgs),
}

client_command! {
    /// Download a backup of the cluster's state into FILE (readable only with the HSM key).
    #[argh(subcommand, name = "backup")]
    struct Backup {
        /// where to write the backup
        #[argh(positional)]
        file: std::path::PathBuf,
    }
}

client_command! {
    /// Show the members with the answering node's link to each, the leader, a pending
    /// membership change, and the answering node's term and commit index.
    #[argh(subcommand, name = "info")]
    struct Info {}
}

client_command! {
    /// Add the node at NODE (host:port), which was started empty with `--join`.
    #[argh(subcommand, name = "add")]
    struct Add {
        /// the new node's address
        #[argh(positional)]
        node: String,
    }
}

client_command! {
    /// Remove the node at NODE (host:port); --force removes a dead node, also to get a
    /// membership change stuck on it out of the way (see `cluster info`).
    #[argh(subcommand, name = "rm")]
    struct Rm {
        /// the node's address
        #[argh(positional)]
        node: String,
        /// remove the node although it cannot agree (it is down for good); overrides a
        /// pending change that waits for it
        #[argh(switch)]
        force: bool,
    }
}

pub(crate) fn run(args: ClusterArgs) -> Result<(), String> {
    match args.command {
        ClusterCommand::Recover(a) => crate::cli::recover::run(a),
        ClusterCommand::Info(a) => {
            let info = a.connect()?.describe_cluster().map_err(|e| e.to_string())?;
            if a.json {
                print_json(info.body());
                return Ok(());
            }
            for (id, addr) in &info.nodes {
                println!("{id:>3}  {addr}  {}", member_note(&info, id));
            }
            let number = |n: Option<u64>| n.map(|n| n.to_string());
            print_fields(&[
                ("pending change", info.pending_change.clone()),
                ("answered by", number(info.node_id)),
                ("term", number(info.term)),
                ("commit index", number(info.commit_index)),
            ]);
            Ok(())
        }
        ClusterCommand::Add(a) => {
            a.connect()?
                .expand_cluster(&a.node)
                .map_err(|e| e.to_string())?;
            if !a.json {
                println!("added {}", a.node);
            }
            Ok(())
        }
        ClusterCommand::Backup(a) => {
            // Written to a temporary file and renamed once complete: a failed download
            // leaves no truncated backup behind.
            let tmp = a.file.with_extension("partial");
            let file = std::fs::File::create(&tmp)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let result = a.connect()?.backup_cluster_to(&mut out);
            let written = result.map_err(|e| e.to_string()).and_then(|n| {
                let file = out.into_inner().map_err(|e| e.to_string())?;
                file.sync_all().map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, &a.file).map_err(|e| e.to_string())?;
                Ok(n)
            });
            let bytes = match written {
                Ok(n) => n,
                Err(err) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(format!("backup to {}: {err}", a.file.display()));
                }
            };
            if !a.json {
                println!("wrote a backup of {bytes} bytes to {}", a.file.display());
            }
            Ok(())
        }
        ClusterCommand::Rm(a) => {
            a.connect()?
                .shrink_cluster(&a.node, a.force)
                .map_err(|e| e.to_string())?;
            if !a.json {
                println!("removed {}", a.node);
            }
            Ok(())
        }
    }
}

/// What `cluster info` says about member `id`: leader or not, and the answering node's link to
/// it (`connected`, `dialing`, `unreachable: why`, `refused: why`).
fn member_note(info: &ClusterInfo, id: &str) -> String {
    let mut notes = Vec::new();
    if info.leader().map(|(l, _)| l.to_string()).as_deref() == Some(id) {
        notes.push("leader".to_string());
    }
    if info.node_id.map(|n| n.to_string()).as_deref() == Some(id) {
        notes.push("this node".to_string());
    } else if let Some(link) = info.links.get(id) {
        let state = if link.state.is_empty() {
            "?"
        } else {
            &link.state
        };
        notes.push(match &link.error {
            Some(why) => format!("{state}: {why}"),
            None => state.to_string(),
        });
    }
    format!("({})", notes.join(", "))
}
