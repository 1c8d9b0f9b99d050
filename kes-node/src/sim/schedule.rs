//! The random scheduler of the fault phase and the liveness phase that follows it.
use std::collections::BTreeSet;

use kes_core::consensus::Body;

use super::world::{Change, Result, World};
use super::Options;
use crate::store::StoreError;

fn live(world: &World) -> Vec<usize> {
    (0..world.machines.len())
        .filter(|&i| world.is_up(i))
        .collect()
}

fn pick(world: &mut World, from: &[usize]) -> Option<usize> {
    if from.is_empty() {
        return None;
    }
    Some(from[world.chooser.below(from.len() as u64) as usize])
}

/// One scheduler event of the fault phase.
pub(super) fn random_event(world: &mut World, options: &Options) -> Result {
    let params = options.params();
    match world.chooser.below(100) {
        0..=31 => {
            if !world.deliver_random()? {
                let max = 1 + world.chooser.below(params.heartbeat_interval);
                world.advance(max)?;
            }
        }
        32..=45 => {
            let max = 1 + world.chooser.below(params.election_timeout);
            world.advance(max)?;
        }
        46..=49 => {
            let up = live(world);
            if let Some(i) = pick(world, &up) {
                world.round(i)?;
            }
        }
        50..=63 => {
            // Clients write on any node (followers forward to the leader), mostly the leader.
            let up = match world.leader() {
                Some(l) if world.chooser.chance(50) => vec![l],
                _ => live(world),
            };
            if let Some(i) = pick(world, &up) {
                let key = world.chooser.below(world.keys as u64) as u8;
                world.write(i, key)?;
            }
        }
        64..=77 => {
            let up = live(world);
            if let Some(i) = pick(world, &up) {
                let key = world.chooser.below(world.keys as u64) as u8;
                world.read(i, key)?;
            }
        }
        78..=79 => {
            if options.faults.drop_percent > 0 {
                world.net.drop_random(&mut world.chooser);
            }
        }
        80..=82 => {
            if options.crashes {
                let up = live(world);
                if let Some(i) = pick(world, &up) {
                    world.crash(i)?;
                }
            }
        }
        83..=86 => {
            let down: Vec<usize> = (0..world.machines.len())
                .filter(|&i| !world.is_up(i) && !world.machines[i].doomed)
                .collect();
            if let Some(i) = pick(world, &down) {
                world.restart(i)?;
            }
        }
        87..=89 => {
            if options.partitions {
                let groups: Vec<u8> = (0..world.machines.len())
                    .map(|_| world.chooser.below(2) as u8)
                    .collect();
                world.partition(groups);
            }
        }
        90..=92 => world.heal(),
        _ => {
            if options.membership {
                random_change(world, options)?;
            }
        }
    }
    Ok(())
}

/// A membership change as an operator would ask for it, on a random live node.
fn random_change(world: &mut World, options: &Options) -> Result {
    let Some(l) = world.leader() else {
        return Ok(());
    };
    let members = world.members_seen_by(l);
    let up = live(world);
    let Some(via) = pick(world, &up) else {
        return Ok(());
    };
    match world.chooser.below(5) {
        0 | 1 => {
            // Add a machine waiting to join.
            let spares: Vec<usize> = up
                .iter()
                .copied()
                .filter(|&j| {
                    !members.contains(&j)
                        && world.machines[j].id == Some(crate::cluster::replica::JOINING_ID)
                })
                .collect();
            if let Some(j) = pick(world, &spares) {
                world.change(via, Change::Expand(j))?;
            }
        }
        2 => {
            // Remove a member (the leader too: it hands over first).
            if members.len() > 1 {
                if let Some(j) = pick(world, &members) {
                    world.change(via, Change::Shrink(j))?;
                }
            }
        }
        3 => {
            // A member that is down is gone for good: remove it by force (without a lease
            // only while the others are a majority of the configuration; a live node is
            // never force-removed: that is the documented hazard). While a change is
            // pending, the node it adds or removes, or (`override_others`) another member
            // that died: a pending shrink then still waits for the leaving node (seed 58,
            // `tests/sim.rs`), which, if down too, may be forced out on top. Like the README's
            // operator, never another member while a forced shrink is pending.
            let subject = pending_subject(world, l);
            let others = options.override_others && !forced_pending(world, l);
            let down: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&j| !world.is_up(j) && (others || subject.is_none_or(|s| s == j)))
                .collect();
            let allowed = options.read_lease || 2 * (members.len() - 1) > members.len();
            if let (true, Some(j)) = (allowed, pick(world, &down)) {
                if subject.is_some_and(|s| s != j) {
                    world.counters.overrides_of_others += 1;
                }
                world.change(via, Change::ForceShrink(j))?;
            }
        }
        _ => {
            // A machine that is down and not a member is rebuilt empty, to join again.
            let gone: Vec<usize> = (0..world.machines.len())
                .filter(|&j| !world.is_up(j) && !members.contains(&j))
                .collect();
            if let Some(j) = pick(world, &gone) {
                world.rebuild(j)?;
            }
        }
    }
    Ok(())
}

/// The live members of the newest configuration any live member holds, if the members that
/// are gone for good leave them without a majority (the case for offline recovery).
fn survivors(world: &World) -> Option<Vec<usize>> {
    let newest = live(world)
        .into_iter()
        .filter(|&i| world.machines[i].member)
        .max_by_key(|&i| world.replica(i).map(|r| r.node().config().index))?;
    let members = world.members_seen_by(newest);
    let alive: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&m| world.is_up(m) && !world.machines[m].doomed)
        .collect();
    (!alive.is_empty() && 2 * alive.len() <= members.len()).then_some(alive)
}

/// Whether leader `l` holds a forced shrink it has not committed (`cluster info` says
/// `forced`).
fn forced_pending(world: &World, l: usize) -> bool {
    world.replica(l).is_some_and(|r| {
        let node = r.node();
        node.config().forced && node.config() != *node.committed_config()
    })
}

/// The machine a membership change pending on leader `l` adds or removes, if one is pending.
fn pending_subject(world: &World, l: usize) -> Option<usize> {
    let node = world.replica(l)?.node();
    let (latest, committed) = (node.config(), node.committed_config().clone());
    if latest == committed {
        return None;
    }
    let id = latest
        .members
        .iter()
        .chain(committed.members.iter())
        .copied()
        .find(|&m| latest.contains(m) != committed.contains(m))?;
    // A node being added that has no machine yet cannot be down.
    Some(world.machine_seen_by(l, id).unwrap_or(usize::MAX))
}

/// Whether no running machine holds a configuration without `m` (committed or pending): the
/// operator's forced shrink of `m`, if asked for, never got anywhere (its request was lost).
fn never_removed(world: &World, m: usize) -> bool {
    let Some(id) = world.machines[m].id else {
        return false;
    };
    let keeps = |i: usize| {
        // (A node waiting to join holds no configuration yet.)
        let Some(node) = world.replica(i).map(|r| r.node()) else {
            return true;
        };
        let config = node.committed_config();
        (config.members.is_empty() || config.contains(id))
            && node.pending_entries().iter().all(|e| match &e.body {
                Body::Config { members, .. } => members.contains(&id),
                _ => true,
            })
    };
    (0..world.machines.len()).all(keeps)
}

/// The operator brings back machine `m`, which it meant to be gone for good but whose forced
/// shrink never happened and cannot happen now (see the callers): its disk was kept.
fn bring_back(world: &mut World, m: usize) -> Result {
    world.log(|| format!("n{m} was not removed: the operator brings it back"));
    world.machines[m].doomed = false;
    world.restart(m)
}

/// Running machines the operator wants in the cluster that the leader `l` does not count as
/// members (latest or committed configuration): each believes it is a member, or (`rejoin`)
/// was found so before and was rebuilt. The case: an expand shipped the snapshot and appended
/// the configuration that adds the node, the node got that entry, and then a leader elected
/// without it cut it from the log (seed 1002282). Nothing in the cluster can tell the node
/// that it was not added after all (the node's pre-votes get `NotMember` from members that may
/// just lag), so it waits for a leader forever and its clients get no answers; its operator's
/// `cluster add` failed or timed out, and `cluster info` on a member does not list it.
fn outsiders(world: &World, l: usize, rejoin: &BTreeSet<usize>) -> Vec<usize> {
    let members = world.members_seen_by(l);
    (0..world.machines.len())
        .filter(|&j| world.is_up(j) && !world.machines[j].doomed && !members.contains(&j))
        .filter(|&j| world.machines[j].member || rejoin.contains(&j))
        .collect()
}

/// Faults stop, everyone is connected and running: a leader must emerge and a write commit
/// within a bound, and then every live member must serve reads of every key.
pub(super) fn liveness(world: &mut World, options: &Options) -> Result {
    let params = options.params();
    let bound = 40 * params.election_timeout;
    world.heal();
    world.net.faults.drop_percent = 0;
    world.net.faults.dup_percent = 0;
    world.net.faults.long_delay_percent = 0;
    for i in 0..world.machines.len() {
        world.restart(i)?;
    }
    let start = world.now;
    let mut write: Option<usize> = None;
    let mut changing = None;
    let mut attempts = 0;
    let mut leaderless_since = world.now;
    // Machines to add again (see `outsiders`), and the one `changing` adds.
    let mut rejoin = BTreeSet::new();
    let mut adding = None;
    while world.now < start + bound {
        if world.leader().is_some() {
            leaderless_since = world.now;
        } else if world.now > leaderless_since + 10 * params.election_timeout {
            // No majority is left among the living: the operator's offline recovery. Or a
            // majority is left only with a node the operator asked to remove by force, which
            // never happened (no leader could take the request): it brings that one back.
            if let Some(keep) = survivors(world) {
                world.recover(&keep)?;
            } else {
                let lost: Vec<usize> = (0..world.machines.len())
                    .filter(|&m| world.machines[m].doomed && never_removed(world, m))
                    .collect();
                for m in lost {
                    bring_back(world, m)?;
                }
            }
            leaderless_since = world.now;
        }
        world.deliver_all()?;
        world.check()?;
        if let Some(op) = write {
            match world.completed(op) {
                Some(true) => break,
                Some(false) if world.write_pending(op) => {}
                _ => write = None,
            }
        }
        if let Some(l) = world.leader() {
            // Members that are gone for good are removed by the operator, one at a time:
            // first those of the leader's latest configuration (a pending change may already
            // be removing the others, and may need the first ones to commit); among the
            // others, whichever the pending change still waits for: each in turn, as a
            // refused one is not it.
            let in_latest = |m: usize| {
                let id = world.machines[m].id;
                let node = world.replica(l).map(|r| r.node());
                id.zip(node)
                    .is_some_and(|(id, node)| node.config().contains(id))
            };
            let all: Vec<usize> = (world.members_seen_by(l).into_iter())
                .filter(|&m| world.machines[m].doomed)
                .collect();
            let first: Vec<usize> = all.iter().copied().filter(|&m| in_latest(m)).collect();
            let candidates = if first.is_empty() { all } else { first };
            let doomed = (!candidates.is_empty()).then(|| candidates[attempts % candidates.len()]);
            let outside = outsiders(world, l, &rejoin);
            rejoin.extend(outside.iter().copied());
            if let Some(handle) = changing {
                if !world.change_pending(handle) {
                    changing = None;
                    // The expand of an outsider answered 400 (it is not waiting to join: its
                    // id went to another node meanwhile, or it was removed before): its
                    // operator wipes it and starts it with `--join`, to add it once more.
                    let refused = matches!(
                        world.change_outcomes.get(&handle),
                        Some(Err(StoreError::Refused(_)))
                    );
                    if let Some(j) = adding.take().filter(|_| refused) {
                        world.crash(j)?;
                        world.rebuild(j)?;
                    }
                }
            } else if let Some(m) = doomed {
                // A forced shrink that needs `m` is pending: no other is accepted on top.
                if forced_pending(world, l) && never_removed(world, m) {
                    bring_back(world, m)?;
                } else {
                    attempts += 1;
                    changing = world.change(l, Change::ForceShrink(m))?;
                }
            } else if let Some(&j) = outside.get(attempts % outside.len().max(1)) {
                // The operator adds the node again (`kes-node cluster add`), as after any
                // expand that did not complete; the leader finds it waiting with the id it
                // is to get and ships it a fresh snapshot.
                attempts += 1;
                changing = world.change(l, Change::Expand(j))?;
                adding = Some(j);
            } else if write.is_none() {
                write = Some(world.write(l, 0)?);
            }
        }
        world.advance(params.heartbeat_interval)?;
    }
    if write.is_none_or(|op| world.completed(op) != Some(true)) {
        return Err(format!(
            "no write committed within {bound} ms of healing: {}",
            world.describe()
        ));
    }
    // Every live member serves a read of every key (a refused read is retried, as a client
    // would).
    for i in 0..world.machines.len() {
        if !world.machines[i].member || !world.is_up(i) {
            continue;
        }
        for key in 0..world.keys {
            let mut served = false;
            for _ in 0..5 {
                let op = world.read(i, key)?;
                world.run_until(bound, |w| !w.read_pending(op))?;
                // A node that a change in flight removed meanwhile owes no reads.
                if world.completed(op) == Some(true) || !world.machines[i].member {
                    served = true;
                    break;
                }
                world.run(params.election_timeout)?;
            }
            if !served {
                return Err(format!(
                    "member n{i} did not serve a read of k{key} after healing: {}",
                    world.describe()
                ));
            }
        }
    }
    Ok(())
}
