//! The names of what a write changes and a read reads, made in one place.
//!
//! A write declares the items it changes ([`crate::command::Command::touches`]); a read in a
//! cluster names the items it reads, and waits while a write to any of them is undecided
//! (two-phase visibility). Both sides build an [`ItemName`] with the same constructors, so
//! they agree by construction, and the consensus core sees each as a [`NameId`].
//!
//! The text form is `<kind>/<enclave>/<name>` for an item, `<kind>/<enclave>` for the listing
//! of a kind in an enclave, `enclave/<name>`, `enclave` and `cluster`. A [`NameId`] is the
//! first 8 bytes (little endian) of the SHA-256 of that text: the ids travel in the replicated
//! log and between nodes, so the text and the hash must never change.
use std::fmt;

use kes_core::consensus::NameId;
use sha2::{Digest, Sha256};

/// The kinds of items that live inside an enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Key,
    Policy,
    Identity,
    Secret,
}

impl Kind {
    /// The kind's name in item names and API paths (`/v1/<kind>/...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Policy => "policy",
            Kind::Identity => "identity",
            Kind::Secret => "secret",
        }
    }

    /// The kind an API path segment names, if any.
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Key, Kind::Policy, Kind::Identity, Kind::Secret]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One thing a write changes or a read reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ItemName {
    /// One item of an enclave: `<kind>/<enclave>/<name>`.
    Item {
        kind: Kind,
        enclave: String,
        name: String,
    },
    /// The names of one kind in an enclave (a listing): `<kind>/<enclave>`.
    Listing { kind: Kind, enclave: String },
    /// One enclave: `enclave/<name>`.
    Enclave(String),
    /// The names of the enclaves: `enclave`.
    Enclaves,
    /// The cluster's membership: `cluster`.
    Cluster,
}

impl ItemName {
    /// The item `name` of `kind` in `enclave`.
    pub fn item(kind: Kind, enclave: &str, name: &str) -> ItemName {
        ItemName::Item {
            kind,
            enclave: enclave.into(),
            name: name.into(),
        }
    }

    /// The listing of `kind` in `enclave`.
    pub fn listing(kind: Kind, enclave: &str) -> ItemName {
        ItemName::Listing {
            kind,
            enclave: enclave.into(),
        }
    }

    /// The enclave `name`.
    pub fn enclave(name: &str) -> ItemName {
        ItemName::Enclave(name.into())
    }

    /// The id the consensus core knows this name by: the first 8 bytes of the SHA-256 of its
    /// text form, the same on every node and every build. It never collides with
    /// [`NameId::CLUSTER`], which the core keeps for membership changes.
    pub fn id(&self) -> NameId {
        let mut hasher = Hasher(Sha256::new());
        fmt::write(&mut hasher, format_args!("{self}")).expect("hashing does not fail");
        let digest = hasher.0.finalize();
        let mut id = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        if id == NameId::CLUSTER.0 {
            id = 1;
        }
        NameId(id)
    }
}

impl fmt::Display for ItemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemName::Item {
                kind,
                enclave,
                name,
            } => write!(f, "{}/{enclave}/{name}", kind.as_str()),
            ItemName::Listing { kind, enclave } => write!(f, "{}/{enclave}", kind.as_str()),
            ItemName::Enclave(name) => write!(f, "enclave/{name}"),
            ItemName::Enclaves => f.write_str("enclave"),
            ItemName::Cluster => f.write_str("cluster"),
        }
    }
}

/// Feeds formatted text into SHA-256 without building the string first.
struct Hasher(Sha256);

impl fmt::Write for Hasher {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids are in the logs of running clusters and must agree between nodes of different
    /// builds: these values were computed by the string-based code this module replaced.
    #[test]
    fn ids_are_the_sha256_of_the_text_form_and_never_change() {
        let cases = [
            (ItemName::item(Kind::Key, "default", "k1"), "key/default/k1"),
            (ItemName::listing(Kind::Key, "default"), "key/default"),
            (
                ItemName::item(Kind::Identity, "tenant", "ab12"),
                "identity/tenant/ab12",
            ),
            (ItemName::listing(Kind::Policy, "default"), "policy/default"),
            (ItemName::item(Kind::Secret, "e", "s/x"), "secret/e/s/x"),
            (ItemName::enclave("default"), "enclave/default"),
            (ItemName::Enclaves, "enclave"),
            (ItemName::Cluster, "cluster"),
        ];
        for (name, text) in &cases {
            assert_eq!(name.to_string(), *text);
            let digest = Sha256::digest(text.as_bytes());
            let want = u64::from_le_bytes(digest[..8].try_into().unwrap());
            assert_eq!(name.id(), NameId(want), "{text}");
        }
        // Pinned, so that a change of the text form or the hash cannot pass unnoticed.
        let pinned = [
            (ItemName::item(Kind::Key, "default", "k1"), PIN_KEY),
            (ItemName::listing(Kind::Policy, "default"), PIN_POLICIES),
            (ItemName::Enclaves, PIN_ENCLAVES),
            (ItemName::Cluster, PIN_CLUSTER),
        ];
        for (name, id) in pinned {
            assert_eq!(name.id(), NameId(id), "{name}");
        }
    }

    const PIN_KEY: u64 = 0x2e43_5871_ce56_af11;
    const PIN_POLICIES: u64 = 0x0f66_122c_97b4_b63e;
    const PIN_ENCLAVES: u64 = 0x9bd9_be94_8c35_4897;
    const PIN_CLUSTER: u64 = 0x2e53_9183_caf1_4c16;

    #[test]
    fn kinds_parse_from_their_path_segment() {
        for kind in [Kind::Key, Kind::Policy, Kind::Identity, Kind::Secret] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("enclave"), None);
    }
}
