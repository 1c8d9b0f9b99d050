//! The configured HSM of a node's directory: opened as the config says, and when its key is
//! missing, explained against the sealed copies `kes.db` holds (the HSM itself knows nothing
//! of the database). Used by the server and by `kes-node hsm` and `restore`.
use std::path::Path;

use crate::config::HsmConfig;
use crate::hsm::{Hsm, NewKey, OpenError};
use crate::store::DB_FILE;

/// The configured HSM of the node whose directory is `dir`. A new key may be made on the
/// device only if `first_start` and `dir` holds no `kes.db` yet; a missing key is explained
/// against the copies `kes.db` holds (the HSM itself knows nothing of the database).
pub(crate) fn open_for(
    config: &HsmConfig,
    dir: &Path,
    first_start: bool,
) -> Result<Box<dyn Hsm>, String> {
    let new_key = if first_start && !dir.join(DB_FILE).exists() {
        NewKey::Allowed
    } else {
        NewKey::Never
    };
    crate::hsm::open(config, new_key).map_err(|e| explain(e, dir))
}

/// An HSM that could not be opened, explained against the sealed copies in `<dir>/kes.db`.
pub(crate) fn explain(err: OpenError, dir: &Path) -> String {
    let OpenError::MissingKey { name, why } = err else {
        return err.to_string();
    };
    match crate::store::sealed_names(dir).ok().flatten() {
        None => format!("{why}: configure the HSM and key that sealed the data"),
        Some(copies) if copies.contains(&name) => format!(
            "{why}, but kes.db holds the root key sealed by it: the key was deleted or this is \
             not the device kes.db was sealed with (check the hsm: section)"
        ),
        Some(copies) => format!(
            "{why}, and kes.db has no root key sealed by it (it has: {}): configure one of \
             those HSMs",
            copies.join(", ")
        ),
    }
}
