//! The `store:` section of the config file: limits of the stateful server's `kes.db`.
//!
//! ```yaml
//! store:
//!   min_free: 64MiB    # refuse client writes (507) while kes.db's disk has less free space
//! ```
//! Sizes are bytes, or a number with `KiB`, `MiB`, `GiB` (or `KB`, `MB`, `GB`: powers of 1000);
//! `0` turns the check off.
//!
//! ```
//! # use kes_node::config::parse;
//! let base = std::path::Path::new(".");
//! let head = "admin: {identity: disabled}\ntls: {key: k, cert: c}\n";
//! let config = parse(&format!("{head}store: {{min_free: 2MiB}}\n"), base).unwrap();
//! assert_eq!(config.min_free, Some(2 << 20));
//! assert!(parse(&format!("{head}store: {{min_free: lots}}\n"), base).is_err());
//! ```
use super::Fields;

/// Parses the `store:` section: the free-space floor, if given.
pub(super) fn parse_store(top: &Fields<'_>) -> Result<Option<u64>, String> {
    let store = top.section("store")?;
    store.check_known(&["min_free"], &[])?;
    match store.string("min_free")? {
        None => Ok(None),
        Some(v) => super::parse_size(&v)
            .map(|n| Some(n as u64))
            .ok_or_else(|| {
                format!(
                    "config: store.min_free: '{v}' is not a size: use bytes or a number with KiB, \
                 MiB or GiB"
                )
            }),
    }
}
