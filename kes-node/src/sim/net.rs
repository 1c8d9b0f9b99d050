//! The simulated network between the nodes: one link per ordered pair of nodes, carrying the
//! same postcard-encoded `Frame`s as the TLS links of production.
//!
//! A link is up while both ends run and no partition separates them; when it breaks, what it
//! carried is lost and both ends hear [`LinkChange::Down`]. Consensus messages (`Frame::Raft`)
//! may also be lost, duplicated, delayed and reordered on a live link (the core must survive
//! all of that; in production a broken and redialed link loses and reorders them too). The
//! shell's own frames (forwarded writes and their answers, snapshot chunks) travel in order, as
//! on one TCP connection, and are lost only with the link.
use std::collections::BTreeMap;

use kes_core::consensus::sim::Chooser;
use kes_core::consensus::NodeId;

use crate::cluster::frame::Frame;

/// Fault rates of the network.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Percent of consensus messages lost / duplicated at sending.
    pub drop_percent: u64,
    pub dup_percent: u64,
    /// Usual delay: 1..=max_delay ms.
    pub max_delay: u64,
    /// Percent of consensus messages held back far longer (up to `long_delay` more ms).
    pub long_delay_percent: u64,
    pub long_delay: u64,
}

struct Packet {
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
    at: u64,
    /// Sent in order on its link (the shell's frames).
    ordered: bool,
    seq: u64,
    /// The link's generation it was sent on (a broken link's packets are gone).
    generation: u64,
}

/// A link came up or went down, seen from `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkChange {
    Up { node: NodeId, peer: NodeId },
    Down { node: NodeId, peer: NodeId },
}

/// The network.
pub struct Net {
    packets: Vec<Packet>,
    /// Which node runs (links need both ends up).
    up: Vec<bool>,
    /// Partition group of each node.
    group: Vec<u8>,
    /// Current generation of each link (bumped when it breaks).
    generation: BTreeMap<(NodeId, NodeId), u64>,
    /// The latest delivery time of an ordered packet per link (keeps them in order).
    last_ordered: BTreeMap<(NodeId, NodeId), u64>,
    seq: u64,
    pub faults: Faults,
    /// Frames sent, lost to faults, delivered (for the statistics).
    pub sent: u64,
    pub lost: u64,
    pub delivered: u64,
}

impl Net {
    pub fn new(nodes: usize, faults: Faults) -> Net {
        Net {
            packets: Vec::new(),
            up: vec![false; nodes],
            group: vec![0; nodes],
            generation: BTreeMap::new(),
            last_ordered: BTreeMap::new(),
            seq: 0,
            faults,
            sent: 0,
            lost: 0,
            delivered: 0,
        }
    }

    fn connected_in(up: &[bool], group: &[u8], a: NodeId, b: NodeId) -> bool {
        let (a, b) = (a as usize, b as usize);
        a != b && a < up.len() && b < up.len() && up[a] && up[b] && group[a] == group[b]
    }

    /// Whether the link between `a` and `b` is up.
    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        Net::connected_in(&self.up, &self.group, a, b)
    }

    /// Sets who runs and the partition groups; returns the link changes each node must hear
    /// (a broken link loses what it carried).
    fn reconfigure(&mut self, up: Vec<bool>, group: Vec<u8>) -> Vec<LinkChange> {
        let n = self.up.len() as NodeId;
        let mut changes = Vec::new();
        for a in 0..n {
            for b in 0..n {
                let before = Net::connected_in(&self.up, &self.group, a, b);
                let after = Net::connected_in(&up, &group, a, b);
                if before && !after {
                    *self.generation.entry((a, b)).or_default() += 1;
                    self.last_ordered.remove(&(a, b));
                }
                // Each node hears about its own end, once per pair.
                if before != after && up[a as usize] {
                    changes.push(if after {
                        LinkChange::Up { node: a, peer: b }
                    } else {
                        LinkChange::Down { node: a, peer: b }
                    });
                }
            }
        }
        self.up = up;
        self.group = group;
        let generation = &self.generation;
        let before = self.packets.len();
        self.packets
            .retain(|p| generation.get(&(p.from, p.to)).copied().unwrap_or(0) == p.generation);
        self.lost += (before - self.packets.len()) as u64;
        changes
    }

    /// Node `i` starts or stops running.
    pub fn set_up(&mut self, i: usize, running: bool) -> Vec<LinkChange> {
        let mut up = self.up.clone();
        up[i] = running;
        self.reconfigure(up, self.group.clone())
    }

    /// Splits the nodes into groups; links across groups break.
    pub fn partition(&mut self, group: Vec<u8>) -> Vec<LinkChange> {
        self.reconfigure(self.up.clone(), group)
    }

    pub fn heal(&mut self) -> Vec<LinkChange> {
        let n = self.group.len();
        self.reconfigure(self.up.clone(), vec![0; n])
    }

    /// How many times the link from `a` to `b` broke (it breaks both ways at once).
    pub fn breaks(&self, a: NodeId, b: NodeId) -> u64 {
        self.generation.get(&(a, b)).copied().unwrap_or(0)
    }

    pub fn groups(&self) -> &[u8] {
        &self.group
    }

    /// Sends `frame` from `from` to `to` at time `now`; false if their link is down.
    pub fn send(
        &mut self,
        chooser: &mut Chooser,
        now: u64,
        from: NodeId,
        to: NodeId,
        frame: &Frame,
    ) -> bool {
        if !self.connected(from, to) {
            return false;
        }
        self.sent += 1;
        let bytes = postcard::to_allocvec(frame).expect("frames encode");
        let ordered = !matches!(frame, Frame::Raft(_));
        let f = self.faults;
        if !ordered && chooser.chance(f.drop_percent) {
            self.lost += 1;
            return true;
        }
        let copies = if !ordered && chooser.chance(f.dup_percent) {
            2
        } else {
            1
        };
        let generation = self.generation.get(&(from, to)).copied().unwrap_or(0);
        for _ in 0..copies {
            let mut at = now + 1 + chooser.below(f.max_delay.max(1));
            if !ordered && f.long_delay > 0 && chooser.chance(f.long_delay_percent) {
                at += chooser.below(f.long_delay);
            }
            if ordered {
                let last = self.last_ordered.entry((from, to)).or_default();
                at = at.max(*last);
                *last = at;
            }
            self.seq += 1;
            self.packets.push(Packet {
                from,
                to,
                bytes: bytes.clone(),
                at,
                ordered,
                seq: self.seq,
                generation,
            });
        }
        true
    }

    /// The earliest time a packet is due, if any is in flight.
    pub fn next_due(&self) -> Option<u64> {
        self.packets.iter().map(|p| p.at).min()
    }

    pub fn in_flight(&self) -> usize {
        self.packets.len()
    }

    /// Indices of packets that may be delivered at `now` (ordered ones only at their turn).
    fn due(&self, now: u64) -> Vec<usize> {
        (0..self.packets.len())
            .filter(|&k| {
                let p = &self.packets[k];
                p.at <= now
                    && (!p.ordered
                        || !self.packets.iter().any(|q| {
                            q.ordered && q.from == p.from && q.to == p.to && q.seq < p.seq
                        }))
            })
            .collect()
    }

    /// Takes one due packet (a random one, or the oldest with `first`): (from, to, frame).
    pub fn take_due(
        &mut self,
        chooser: &mut Chooser,
        now: u64,
        first: bool,
    ) -> Option<(NodeId, NodeId, Frame)> {
        let due = self.due(now);
        let k = if first {
            *due.iter().min_by_key(|&&k| self.packets[k].seq)?
        } else {
            *due.get(chooser.below(due.len().max(1) as u64) as usize)?
        };
        let p = self.packets.remove(k);
        self.delivered += 1;
        let frame = postcard::from_bytes(&p.bytes).expect("frames decode");
        Some((p.from, p.to, frame))
    }

    /// Loses one packet in flight (a random one).
    pub fn drop_random(&mut self, chooser: &mut Chooser) {
        let raft: Vec<usize> = (0..self.packets.len())
            .filter(|&k| !self.packets[k].ordered)
            .collect();
        if let Some(&k) = raft.get(chooser.below(raft.len().max(1) as u64) as usize) {
            self.packets.remove(k);
            self.lost += 1;
        }
    }
}
