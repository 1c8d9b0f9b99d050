//! `kes-node check DIR`: verifies a stopped node's `kes.db` and says what is wrong.
use std::path::PathBuf;

use argh::FromArgs;

/// Verify a stopped node's DIR/kes.db (read-only): redb's integrity check, the table digests
/// and every record. Exit code 0 if it is sound, 1 with what is wrong otherwise.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
pub(super) struct CheckArgs {
    /// a config file with the hsm section (otherwise KES_HSM_KEY)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the node's directory (holding kes.db)
    #[argh(positional)]
    dir: PathBuf,
}

pub(super) fn run(args: CheckArgs) -> Result<(), String> {
    let config = crate::config::hsm_only(args.config.as_deref())?;
    if !args.dir.join(crate::store::DB_FILE).exists() {
        return Err(format!("{} holds no kes.db", args.dir.display()));
    }
    let device = crate::server::hsm::open_for(&config.hsm, &args.dir, false)?;
    for line in crate::store::check(&args.dir, &*device).map_err(|e| e.to_string())? {
        println!("{line}");
    }
    println!("ok");
    Ok(())
}
