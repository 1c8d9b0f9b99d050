//! `kes-node hsm new|ls|add|rm`: SoftHSM keys, and the sealed copies of the root key in
//! `kes.db` (one per HSM, see `crate::hsm`). `ls`, `add` and `rm` work on the database
//! directly, with the server stopped (redb allows one process at a time).
use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::hsm::{Hsm, NewKey};
use crate::server::hsm::{explain, open_for};
use crate::store::{Store, StoreError, DB_FILE};

/// HSMs: new SoftHSM keys, and which HSMs seal kes.db.
#[derive(FromArgs)]
#[argh(subcommand, name = "hsm")]
pub(super) struct HsmArgs {
    #[argh(subcommand)]
    command: HsmCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum HsmCommand {
    New(NewArgs),
    Ls(LsArgs),
    Add(AddArgs),
    Rm(RmArgs),
}

/// Print a new random SoftHSM key (for KES_HSM_KEY).
#[derive(FromArgs)]
#[argh(subcommand, name = "new")]
struct NewArgs {}

/// List the HSMs holding a sealed copy of kes.db's root key (no HSM needed).
#[derive(FromArgs)]
#[argh(subcommand, name = "ls")]
struct LsArgs {
    /// the directory holding kes.db (default: the working directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    data: PathBuf,
    /// print a JSON list of names
    #[argh(switch)]
    json: bool,
}

/// Seal kes.db's root key with another HSM too. The configured HSM (--config, else
/// KES_HSM_KEY) unseals it; --to FILE names the new one by its `hsm:` section (key, pkcs11,
/// tpm or aws-kms). The server must
/// be stopped.
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct AddArgs {
    /// a YAML file whose hsm: section (key, pkcs11, tpm or aws-kms) is the HSM to add
    #[argh(option)]
    to: PathBuf,
    /// the server's config file (its hsm: section unseals kes.db; default: KES_HSM_KEY)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the directory holding kes.db (default: the working directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    data: PathBuf,
}

/// Remove the copy of kes.db's root key sealed by HSM NAME (see `hsm ls`). The configured HSM
/// (--config, else KES_HSM_KEY) must be another one that unseals kes.db; the last copy is
/// never removed. The server must be stopped.
#[derive(FromArgs)]
#[argh(subcommand, name = "rm")]
struct RmArgs {
    /// the HSM name, as `hsm ls` prints it
    #[argh(positional)]
    name: String,
    /// the server's config file (its hsm: section unseals kes.db; default: KES_HSM_KEY)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the directory holding kes.db (default: the working directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    data: PathBuf,
}

pub(super) fn run(args: HsmArgs) -> Result<(), String> {
    match args.command {
        HsmCommand::New(_) => {
            println!("{}", super::new_soft_hsm_key());
            Ok(())
        }
        HsmCommand::Ls(a) => ls(a),
        HsmCommand::Add(a) => add(a),
        HsmCommand::Rm(a) => rm(a),
    }
}

fn ls(a: LsArgs) -> Result<(), String> {
    let names = crate::store::sealed_names(&a.data)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| no_db(&a.data))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&names).map_err(|e| e.to_string())?
        );
    } else {
        for name in names {
            println!("{name}");
        }
    }
    Ok(())
}

fn add(a: AddArgs) -> Result<(), String> {
    let (store, _current) = open_store(a.config.as_deref(), &a.data)?;
    let to = crate::config::load_hsm(&a.to)?;
    let new = crate::hsm::open_exact(&to, NewKey::Allowed).map_err(|e| explain(e, &a.data))?;
    match store.add_sealed_root(&*new) {
        Ok(()) => {
            println!(
                "added HSM '{}' to {}",
                new.name(),
                a.data.join(DB_FILE).display()
            );
            Ok(())
        }
        Err(StoreError::Exists) => Err(format!(
            "kes.db already holds a root key sealed by HSM '{}'",
            new.name()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn rm(a: RmArgs) -> Result<(), String> {
    let (store, current) = open_store(a.config.as_deref(), &a.data)?;
    match store.remove_sealed_root(&a.name, &*current) {
        Ok(()) => {
            println!(
                "removed HSM '{}' from {}",
                a.name,
                a.data.join(DB_FILE).display()
            );
            Ok(())
        }
        Err(StoreError::NotFound) => Err(format!(
            "kes.db holds no root key sealed by HSM '{}' (see kes-node hsm ls)",
            a.name
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens an existing kes.db with the configured HSM.
fn open_store(config: Option<&Path>, data: &Path) -> Result<(Store, Box<dyn Hsm>), String> {
    if !data.join(DB_FILE).exists() {
        return Err(no_db(data));
    }
    let config = crate::config::hsm_only(config)?;
    let hsm = open_for(&config.hsm, data, false)?;
    let store = Store::open(data, &*hsm).map_err(|e| e.to_string())?;
    Ok((store, hsm))
}

fn no_db(data: &Path) -> String {
    format!(
        "{} does not exist: give the node's directory with --data DIR",
        data.join(DB_FILE).display()
    )
}
