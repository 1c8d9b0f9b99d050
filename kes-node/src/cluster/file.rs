//! `.cluster.json`: the cluster's members as upstream writes them, `{"0":"host:port",...}`
//! (node id → address, one line). It mirrors the configuration in `kes.db` for people and
//! tools; `kes.db` is the source of truth once the node has run.
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use crate::store::{Addresses, RaftState};

/// The file name inside the node's directory.
pub(crate) const FILE: &str = ".cluster.json";

/// Reads `.cluster.json`; `None` if it does not exist.
pub(crate) fn read(dir: &Path) -> Result<Option<Addresses>, String> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let raw: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a JSON object of node id to address: {e}",
            path.display()
        )
    })?;
    let mut nodes = Addresses::new();
    for (id, addr) in raw {
        let id: u16 = id.parse().map_err(|_| {
            format!(
                "{}: node id '{id}' is not a small non-negative integer",
                path.display()
            )
        })?;
        let addr = normalize(&addr).map_err(|e| format!("{}: node {id}: {e}", path.display()))?;
        if nodes.values().any(|a| *a == addr) {
            return Err(format!("{}: address {addr} appears twice", path.display()));
        }
        nodes.insert(id, addr);
    }
    if nodes.is_empty() {
        return Err(format!("{}: lists no nodes", path.display()));
    }
    Ok(Some(nodes))
}

/// Writes `.cluster.json` atomically (temporary file, fsync, rename).
pub(crate) fn write(dir: &Path, nodes: &Addresses) -> Result<(), String> {
    use std::io::Write;
    // Removed nodes stay in the configuration as tombstones (empty addresses) so their ids are
    // never reused; the file lists only the members.
    let map: BTreeMap<String, &String> = nodes
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(id, a)| (id.to_string(), a))
        .collect();
    let mut text = serde_json::to_string(&map).map_err(|e| e.to_string())?;
    text.push('\n');
    let path = dir.join(FILE);
    let tmp = dir.join(".cluster.json.tmp");
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `host:port` with an optional `https://` prefix (upstream's address syntax).
pub(crate) fn normalize(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    let a = a.strip_prefix("https://").unwrap_or(a);
    let (host, port) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("address '{addr}' needs host:port"))?;
    if host.is_empty()
        || port.parse::<u16>().is_err()
        || (host.contains(':') && !host.starts_with('['))
    {
        return Err(format!("address '{addr}' needs host:port"));
    }
    Ok(a.to_owned())
}

/// Resolves an address to a socket address (the first one).
pub(crate) fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}

/// The members' addresses of the newest configuration in `state`: the applied one, or one
/// appended after it. A node that just joined holds the configuration that adds it only in its
/// log until that commits: a crash then must not make it a stranger to itself.
pub(crate) fn newest(state: &RaftState) -> Addresses {
    let mut addresses = state.addresses.clone();
    for entry in &state.entries {
        if let kes_core::consensus::Body::Config { command, .. } = &entry.body {
            if let Ok(a) = crate::store::decode_addresses(command) {
                addresses = a;
            }
        }
    }
    addresses
}

/// This node's id at start: [`JOINING_ID`](super::frame::JOINING_ID) for a node without a
/// configuration (started with `--join`), else the id its address `listen` has in the newest
/// configuration it holds; `None` if it has none there (it was removed).
pub(crate) fn own_id(state: &RaftState, listen: SocketAddr) -> Option<u16> {
    if state.applied.config.members.is_empty() {
        return Some(super::frame::JOINING_ID);
    }
    find_self(&newest(state), listen)
}

/// The id of the node listening on `listen`: same port, and the same host or both loopback.
pub(crate) fn find_self(nodes: &Addresses, listen: SocketAddr) -> Option<u16> {
    nodes
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .find_map(|(id, addr)| {
            let a = resolve(addr)?;
            let same_host = a.ip() == listen.ip()
                || (a.ip().is_loopback() && listen.ip().is_loopback())
                || listen.ip().is_unspecified();
            (a.port() == listen.port() && same_host).then_some(*id)
        })
}

/// Where to dial each peer: its address, unless `KES_PEER_DIAL` (`id=host:port,...`) says
/// otherwise. The override exists for tests that put a fault-injecting proxy between nodes.
pub(crate) fn dial_overrides() -> BTreeMap<u16, String> {
    let Ok(v) = std::env::var("KES_PEER_DIAL") else {
        return BTreeMap::new();
    };
    v.split(',')
        .filter_map(|part| {
            let (id, addr) = part.trim().split_once('=')?;
            Some((id.trim().parse().ok()?, addr.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the simulator: a node that joined (it installed the leader's snapshot, whose
    /// configuration does not hold it yet) and appended the configuration that adds it, then
    /// crashed before applying it, refused to start ("not part of the cluster"), which left
    /// the expand stuck until a forced shrink.
    #[test]
    fn own_id_comes_from_the_newest_configuration() {
        use kes_core::consensus::{Body, Config, Entry, HardState, Members, SnapshotMeta};
        let old = Addresses::from([(0, "10.0.0.1:7373".to_string())]);
        let mut new = old.clone();
        new.insert(1, "10.0.0.2:7373".into());
        let mut members = Members::new();
        members.push(0).unwrap();
        let mut state = RaftState {
            hard_state: HardState::default(),
            applied: SnapshotMeta {
                index: 5,
                term: 1,
                config: Config {
                    index: 0,
                    members: members.clone(),
                    forced: false,
                },
            },
            addresses: old,
            entries: Vec::new(),
        };
        let listen = "10.0.0.2:7373".parse().unwrap();
        assert_eq!(own_id(&state, listen), None);
        members.push(1).unwrap();
        state.entries.push(Entry {
            term: 1,
            index: 6,
            body: Body::Config {
                members,
                forced: false,
                command: crate::store::encode_addresses(&new),
            },
        });
        assert_eq!(own_id(&state, listen), Some(1));
        // Waiting to join: no configuration at all.
        state.applied.config = Config::default();
        assert_eq!(
            own_id(&state, listen),
            Some(super::super::frame::JOINING_ID)
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            normalize("https://localhost:7373").unwrap(),
            "localhost:7373"
        );
        assert!(normalize("127.0.0.1").is_err());
        assert!(normalize(":7373").is_err());
        assert!(normalize("fe80::1:7373").is_err());
        assert!(normalize("[fe80::1]:7373").is_ok());
        let mut nodes = Addresses::new();
        nodes.insert(0, "127.0.0.1:7001".into());
        nodes.insert(1, "127.0.0.1:7002".into());
        assert_eq!(
            find_self(&nodes, "127.0.0.1:7002".parse().unwrap()),
            Some(1)
        );
        assert_eq!(find_self(&nodes, "127.0.0.1:7003".parse().unwrap()), None);
    }

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("kes-cluster-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Addresses::new();
        nodes.insert(0, "127.0.0.1:7001".into());
        nodes.insert(10, "127.0.0.1:7010".into());
        write(&dir, &nodes).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(FILE)).unwrap(),
            "{\"0\":\"127.0.0.1:7001\",\"10\":\"127.0.0.1:7010\"}\n"
        );
        assert_eq!(read(&dir).unwrap().unwrap(), nodes);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
