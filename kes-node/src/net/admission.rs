//! Connection admission (see `net/limits.rs`): counts connections per source address and
//! decides, for each newcomer, whether it takes a free slot, the slot of the oldest
//! unauthenticated connection, or none.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use slab::Slab;

use super::connection::{Connection, Standing};
use super::Limits;

/// What to do with a newly accepted socket.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Admit,
    /// Admit it after closing this connection (the oldest unauthenticated one).
    Evict(usize),
    /// Close it: every slot is held by authenticated connections.
    Refuse,
}

pub(super) struct Admission {
    max: usize,
    max_per_ip: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections in accept order (slab key, serial): eviction candidates, oldest first.
    /// Entries of connections that closed or authenticated are skipped (and compacted away).
    order: VecDeque<(usize, u64)>,
}

impl Admission {
    pub(super) fn new(limits: &Limits) -> Admission {
        Admission {
            max: limits.effective_connections(),
            max_per_ip: limits.connections_per_ip,
            per_ip: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A newcomer from `ip` while `open` connections (peer links included) are open.
    pub(super) fn admit(&mut self, conns: &Slab<Connection>, ip: IpAddr, open: usize) -> Decision {
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        let victim = if from_ip >= self.max_per_ip {
            self.oldest_unknown(conns, Some(ip))
        } else if open >= self.max {
            self.oldest_unknown(conns, None)
        } else {
            return Decision::Admit;
        };
        match victim {
            Some(key) => Decision::Evict(key),
            None => Decision::Refuse,
        }
    }

    /// The oldest connection still unauthenticated (from `ip`, if given); removes it and every
    /// stale entry before it from the order.
    fn oldest_unknown(&mut self, conns: &Slab<Connection>, ip: Option<IpAddr>) -> Option<usize> {
        let live = |(key, serial): (usize, u64)| {
            conns
                .get(key)
                .filter(|c| c.serial == serial && c.standing() == Standing::Unknown)
        };
        let mut i = 0;
        while i < self.order.len() {
            let entry = self.order[i];
            match live(entry) {
                None => {
                    self.order.remove(i);
                }
                Some(c) if ip.is_none() || c.ip == ip => {
                    self.order.remove(i);
                    return Some(entry.0);
                }
                Some(_) => i += 1,
            }
        }
        None
    }

    pub(super) fn added(&mut self, conns: &Slab<Connection>, key: usize, ip: Option<IpAddr>) {
        let Some(serial) = conns.get(key).map(|c| c.serial) else {
            return;
        };
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        self.order.push_back((key, serial));
        // Entries of connections that closed or authenticated stay until skipped: drop them
        // now and then, so the order stays about as long as the number of connections.
        if self.order.len() > 2 * conns.len() + 64 {
            self.order.retain(|&(k, s)| {
                conns
                    .get(k)
                    .is_some_and(|c| c.serial == s && c.standing() == Standing::Unknown)
            });
        }
    }

    pub(super) fn removed(&mut self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }
}
