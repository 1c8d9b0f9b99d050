//! The random scheduler of the fault phase and the liveness phase that follows it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Cluster, Options};
use crate::consensus::Change;

const KEYS: u64 = 3;

fn live(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|&i| cluster.is_up(i))
        .collect()
}

fn pick(cluster: &mut Cluster, from: &[usize]) -> Option<usize> {
    if from.is_empty() {
        return None;
    }
    Some(from[cluster.chooser.below(from.len() as u64) as usize])
}

/// One scheduler event of the fault phase.
pub(super) fn random_event(cluster: &mut Cluster, options: &Options) -> Result<(), String> {
    let roll = cluster.chooser.below(100);
    match roll {
        0..=24 => cluster.tick(),
        25..=59 => {
            if !cluster.deliver_random()? {
                cluster.tick()?;
            }
            Ok(())
        }
        60..=71 => {
            // Clients mostly find the leader (as a forwarding client would); some ask others.
            let up = match cluster.leader() {
                Some(l) if cluster.chooser.chance(75) => alloc::vec![l],
                _ => live(cluster),
            };
            if let Some(i) = pick(cluster, &up) {
                let key = cluster.chooser.below(KEYS) as u8;
                cluster.write(i, key)?;
            }
            Ok(())
        }
        72..=85 => {
            let up = live(cluster);
            if let Some(i) = pick(cluster, &up) {
                let key = cluster.chooser.below(KEYS) as u8;
                cluster.read(i, key)?;
            }
            Ok(())
        }
        86..=87 => {
            if options.drop_percent > 0 {
                cluster.drop_random();
            }
            Ok(())
        }
        88 => {
            if options.dup_percent > 0 {
                cluster.duplicate_random();
            }
            Ok(())
        }
        89..=90 => {
            if options.crashes {
                let up = live(cluster);
                if let Some(i) = pick(cluster, &up) {
                    cluster.crash(i);
                }
            }
            Ok(())
        }
        91..=93 => {
            let down: Vec<usize> = (0..cluster.nodes.len())
                .filter(|&i| !cluster.is_up(i) && !cluster.nodes[i].destroyed)
                .collect();
            if let Some(i) = pick(cluster, &down) {
                cluster.restart(i);
            }
            Ok(())
        }
        94..=95 => {
            if options.partitions {
                let groups: Vec<u8> = (0..cluster.nodes.len())
                    .map(|_| cluster.chooser.below(2) as u8)
                    .collect();
                cluster.partition(&groups);
            }
            Ok(())
        }
        96..=97 => {
            cluster.heal();
            Ok(())
        }
        _ => {
            if options.membership {
                random_change(cluster, options)?;
            }
            Ok(())
        }
    }
}

fn random_change(cluster: &mut Cluster, options: &Options) -> Result<(), String> {
    let Some(l) = cluster.leader() else {
        return Ok(());
    };
    let config = cluster.node(l).config();
    // Like an operator: first force-remove members that are gone for good.
    if let Some(&dead) = config
        .members
        .iter()
        .find(|&&m| cluster.nodes[m as usize].destroyed)
    {
        cluster.change(l, Change::ForceRemove(dead))?;
        return Ok(());
    }
    let outsiders: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| !config.contains(i as u16) && !cluster.nodes[i].destroyed)
        .collect();
    let others: Vec<usize> = config
        .members
        .iter()
        .map(|&m| m as usize)
        .filter(|&m| m != l)
        .collect();
    match cluster.chooser.below(4) {
        3 => cluster.transfer(l)?,
        0 => {
            if let Some(n) = pick(cluster, &outsiders) {
                // Half the time like the shell's safe expand: the snapshot goes first.
                if cluster.chooser.chance(50) {
                    cluster.ship_snapshot(l, n)?;
                }
                cluster.change(l, Change::Add(n as u16))?;
            }
        }
        1 => {
            if let Some(n) = pick(cluster, &others) {
                cluster.change(l, Change::Remove(n as u16))?;
            }
        }
        _ if override_stuck(cluster, l, options)? => {}
        _ => {
            // Without a lease, force-removing a live node is the documented hazard: only
            // force-remove a crashed node, which then never comes back, and only while a
            // majority remains without it (else it is a case for offline recovery).
            if options.read_lease {
                if let Some(n) = pick(cluster, &others) {
                    cluster.change(l, Change::ForceRemove(n as u16))?;
                }
            } else if config.members.len() >= 3 {
                let down: Vec<usize> = others.into_iter().filter(|&m| !cluster.is_up(m)).collect();
                if let Some(n) = pick(cluster, &down) {
                    if cluster.change(l, Change::ForceRemove(n as u16))? {
                        cluster.nodes[n].destroyed = true;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Like an operator with a membership change stuck on a node that is down: force-removes the
/// node the pending change adds or removes (without a lease only a crashed node, which then
/// never comes back). Once a forced removal of another member overrode a pending shrink, the
/// shrink still waits for the leaving node: force-removes that one on top (the core refuses
/// any other). Returns whether it tried.
fn override_stuck(cluster: &mut Cluster, l: usize, options: &Options) -> Result<bool, String> {
    let node = cluster.node(l);
    let (latest, committed) = (node.config(), node.committed_config().clone());
    if latest == committed {
        return Ok(false);
    }
    let subject = if latest.forced {
        let gone: Vec<usize> = (committed.members.iter().map(|&m| m as usize))
            .filter(|&m| !latest.contains(m as u16) && !cluster.nodes[m].destroyed)
            .collect();
        pick(cluster, &gone).map(|m| m as u16)
    } else {
        latest
            .members
            .iter()
            .chain(committed.members.iter())
            .copied()
            .find(|&m| latest.contains(m) != committed.contains(m))
    };
    let Some(n) = subject.filter(|&n| n as usize != l) else {
        return Ok(false);
    };
    if !options.read_lease && cluster.is_up(n as usize) {
        return Ok(false);
    }
    if cluster.change(l, Change::ForceRemove(n))? {
        cluster.counters.overrides += 1;
        if !options.read_lease {
            cluster.nodes[n as usize].destroyed = true;
        }
    }
    Ok(true)
}

/// Faults stop, everyone is connected: a leader must emerge and a write commit within a bound,
/// and then every live member must serve reads.
pub(super) fn liveness(cluster: &mut Cluster, _options: &Options) -> Result<(), String> {
    const BOUND: u64 = 400;
    cluster.heal();
    cluster.drop_percent = 0;
    cluster.dup_percent = 0;
    cluster.long_delay_percent = 0;
    cluster.crash_in_ready_percent = 0;
    for i in 0..cluster.nodes.len() {
        cluster.restart(i);
    }
    let start = cluster.now;
    let mut write: Option<usize> = None;
    while cluster.now < start + BOUND {
        cluster.tick()?;
        cluster.deliver_all()?;
        cluster.check()?;
        if let Some(op) = write {
            match cluster.completed(op) {
                Some(true) => break,
                Some(false) if cluster.write_pending(op) => continue,
                _ => write = None,
            }
        }
        let Some(l) = cluster.leader() else {
            continue;
        };
        // Members that are gone for good must be force-removed by the operator.
        let config = cluster.node(l).config();
        if let Some(&dead) = config
            .members
            .iter()
            .find(|&&m| cluster.nodes[m as usize].destroyed)
        {
            if cluster
                .node(l)
                .pending_entries()
                .iter()
                .any(|e| matches!(e.body, crate::consensus::Body::Config { .. }))
            {
                // Another change (e.g. an expand the dead node must acknowledge) is pending on
                // the leader, so its forced removal did not happen: the node was not really
                // gone, bring it back (the shell would restore its disk).
                cluster.nodes[dead as usize].destroyed = false;
                cluster.restart(dead as usize);
            } else {
                cluster.change(l, Change::ForceRemove(dead))?;
            }
            continue;
        }
        if write.is_none() {
            write = Some(cluster.write(l, 0)?);
        }
    }
    match write {
        Some(op) if cluster.completed(op) == Some(true) => {}
        _ => {
            let roles: Vec<_> = live(cluster)
                .into_iter()
                .map(|i| {
                    let n = cluster.node(i);
                    (
                        i,
                        n.role(),
                        n.term(),
                        n.commit_index(),
                        n.last_index(),
                        n.config().members,
                    )
                })
                .collect();
            return Err(format!(
                "no write committed within {BOUND} ticks of healing: {roles:?}"
            ));
        }
    }
    // Every live member serves a read of every key.
    cluster.run_until(BOUND, |c| c.leader().is_some())?;
    let l = cluster.leader().ok_or("leader lost")?;
    let members = cluster.node(l).config().members;
    for &m in members.iter() {
        if !cluster.is_up(m as usize) {
            continue;
        }
        for key in 0..KEYS as u8 {
            // A read may be refused at once (e.g. `Busy`: too many reads were already waiting
            // there); a client retries.
            let mut served = false;
            for _ in 0..5 {
                let op = cluster.read(m as usize, key)?;
                cluster.run_until(BOUND, |c| c.completed(op) != Some(false))?;
                if cluster.completed(op) == Some(true) {
                    served = true;
                    break;
                }
                cluster.run(10)?;
            }
            if !served {
                return Err(format!(
                    "member n{m} did not serve a read of k{key} after healing"
                ));
            }
        }
    }
    Ok(())
}
