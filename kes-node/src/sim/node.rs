//! One simulated machine: the shipped `Replica` over a real `Store` on a simulated disk,
//! with a drifting clock, and the in-memory network as its `Links`.
use std::collections::BTreeMap;

use kes_core::consensus::sim::Chooser;
use kes_core::consensus::{NodeId, Params};

use super::disk::Disk;
use super::net::Net;
use crate::cluster::frame::Frame;
use crate::cluster::replica::{Dialed, Links, Peer, Replica, Start, Write, JOINING_ID};
use crate::command::Command;
use crate::store::Store;

/// A client request's handle, chosen by the simulator.
pub type Waiter = u64;

/// A client's write as the replica sees it.
pub struct SimWrite {
    pub waiter: Waiter,
    pub cmd: Command,
}

impl Write for SimWrite {
    fn command(&self) -> &Command {
        &self.cmd
    }
}

/// The replica as the simulator runs it.
pub type SimReplica = Replica<SimWrite, Waiter>;

/// One simulated machine.
pub struct Machine {
    /// `None` while down.
    pub replica: Option<SimReplica>,
    pub store: Option<Store>,
    pub disk: Disk,
    /// Its address in configurations (never dialed: links are in memory).
    pub address: String,
    /// Its clock reads `offset + now * rate / 100`.
    pub offset: u64,
    pub rate: u64,
    /// Stepped since its last round (a round is due before time moves on).
    pub dirty: bool,
    /// What the API learned from the replica at the end of its last round.
    pub gating: bool,
    pub member: bool,
    /// The id it last had (kept while down: peers still address it by it).
    pub id: Option<NodeId>,
    /// Outbound links it dialed (an expand's new node): the id it dialed as, and the machine.
    pub dials: BTreeMap<NodeId, usize>,
    /// Force-removed while down: it never comes back with this disk (an operator rebuilds it).
    pub doomed: bool,
}

impl Machine {
    /// Boots the replica from what the store holds, finding its id as `Cluster::open` does.
    pub fn boot(
        store: &Store,
        address: &str,
        params: Params,
        now: u64,
        seed: u64,
    ) -> Result<SimReplica, String> {
        let state = store
            .raft_state()
            .map_err(|e| e.to_string())?
            .ok_or("no cluster state")?;
        let listen = address.parse().map_err(|e| format!("{address}: {e}"))?;
        let id = crate::cluster::file::own_id(&state, listen)
            .ok_or_else(|| format!("{address} is not part of the cluster any more"))?;
        let start = Start {
            id,
            params,
            seed,
            group_commit: true,
        };
        Replica::new(now, store, start)
    }
}

/// The network as one machine's links. The link this machine dialed to a peer goes to the
/// machine at the peer's address, or for a peer without one to the machine it dialed for an
/// expand; the links other machines opened belong to the id each claims (`ids`).
pub struct MachineLinks<'a> {
    pub net: &'a mut Net,
    pub chooser: &'a mut Chooser,
    pub now: u64,
    pub me: usize,
    pub ids: &'a [Option<NodeId>],
    pub dials: &'a mut BTreeMap<NodeId, usize>,
    pub addresses: &'a [String],
}

impl MachineLinks<'_> {
    /// The machine at the other end of the link this machine dialed to `to`.
    fn dialed_machine(&self, to: Peer<'_>) -> Option<usize> {
        match to.at {
            Some(at) => self.addresses.iter().position(|a| a == at),
            None => self.dials.get(&to.id).copied(),
        }
    }

    /// The machine a frame for `to` goes to: the dialed one, or (unless `to.only_dialed`)
    /// while that link is down, a connected machine that claims `to`'s id.
    fn machine(&self, to: Peer<'_>) -> Option<usize> {
        let dialed = self.dialed_machine(to);
        let up = |m: usize| self.net.connected(self.me as NodeId, m as NodeId);
        if dialed.is_some_and(up) || to.only_dialed || to.id == JOINING_ID {
            return dialed;
        }
        (0..self.ids.len())
            .find(|&m| m != self.me && self.ids[m] == Some(to.id) && up(m))
            .or(dialed)
    }
}

impl Links for MachineLinks<'_> {
    fn send(&mut self, to: Peer<'_>, frame: &Frame) -> bool {
        let Some(m) = self.machine(to) else {
            return false;
        };
        self.net.send(
            self.chooser,
            self.now,
            self.me as NodeId,
            m as NodeId,
            frame,
        )
    }
    fn open(&self, to: Peer<'_>) -> bool {
        self.machine(to)
            .is_some_and(|m| self.net.connected(self.me as NodeId, m as NodeId))
    }
    fn breaks(&self, to: Peer<'_>) -> u64 {
        // The links with every machine that may carry frames for `to`: the dialed one and
        // those that claim its id.
        let dialed = self.dialed_machine(to);
        (0..self.ids.len())
            .filter(|&m| m != self.me && (Some(m) == dialed || self.ids[m] == Some(to.id)))
            .map(|m| self.net.breaks(self.me as NodeId, m as NodeId))
            .sum()
    }
    fn busy(&self, _: Peer<'_>) -> bool {
        false
    }
    fn watch_writable(&mut self, _: Peer<'_>) {}
    fn dial(&mut self, to: NodeId, addr: &str) -> Result<(), String> {
        let m = self
            .addresses
            .iter()
            .position(|a| a == addr)
            .ok_or_else(|| format!("{addr}: no such machine"))?;
        self.dials.insert(to, m);
        Ok(())
    }
    fn dialed(&self, to: Peer<'_>) -> Dialed {
        // The shell dials every peer (and an expand's new node): the outbound link is open
        // whenever the two machines are connected.
        match self.dialed_machine(to) {
            Some(m) if self.net.connected(self.me as NodeId, m as NodeId) => {
                Dialed::Open(self.ids[m].unwrap_or(JOINING_ID))
            }
            Some(_) => Dialed::Closed(Some(crate::cluster::frame::Failure::Unreachable(
                "connection refused".into(),
            ))),
            None => Dialed::Closed(None),
        }
    }
    fn claim(&mut self, _: NodeId) {}
    fn close(&mut self, to: NodeId) {
        self.dials.remove(&to);
    }
}
