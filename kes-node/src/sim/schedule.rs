//! The random scheduler of the fault phase and the liveness phase that follows it.
use super::shell::Shell;
use super::world::{Result, World};
use super::Options;

fn live<S: Shell>(world: &World<S>) -> Vec<usize> {
    (0..world.nodes.len()).filter(|&i| world.is_up(i)).collect()
}

fn pick<S: Shell>(world: &mut World<S>, from: &[usize]) -> Option<usize> {
    if from.is_empty() {
        return None;
    }
    Some(from[world.chooser.below(from.len() as u64) as usize])
}

/// One scheduler event of the fault phase.
pub(super) fn random_event<S: Shell>(world: &mut World<S>, options: &Options) -> Result {
    let roll = world.chooser.below(100);
    match roll {
        0..=34 => {
            if !world.deliver_random()? {
                let max = 1 + world.chooser.below(options.params().heartbeat_interval);
                world.advance(max)?;
            }
        }
        35..=49 => {
            let max = 1 + world.chooser.below(options.params().election_timeout);
            world.advance(max)?;
        }
        50..=53 => {
            let up = live(world);
            if let Some(i) = pick(world, &up) {
                world.round(i)?;
            }
        }
        54..=67 => {
            // Clients mostly find the leader; some ask another node.
            let up = match world.leader() {
                Some(l) if options.leader_only || world.chooser.chance(60) => vec![l],
                _ => live(world),
            };
            if let Some(i) = pick(world, &up) {
                let key = world.chooser.below(world.keys as u64) as u8;
                world.write(i, key)?;
            }
        }
        68..=81 => {
            let up = live(world);
            if let Some(i) = pick(world, &up) {
                let key = world.chooser.below(world.keys as u64) as u8;
                world.read(i, key)?;
            }
        }
        82..=83 => {
            if options.faults.drop_percent > 0 {
                world.net.drop_random(&mut world.chooser);
            }
        }
        84..=86 => {
            if options.crashes {
                let up = live(world);
                if let Some(i) = pick(world, &up) {
                    world.crash(i)?;
                }
            }
        }
        87..=90 => {
            let down: Vec<usize> = (0..world.nodes.len())
                .filter(|&i| !world.is_up(i) && !world.nodes[i].destroyed)
                .collect();
            if let Some(i) = pick(world, &down) {
                world.restart(i)?;
            }
        }
        91..=93 => {
            if options.partitions {
                let groups: Vec<u8> = (0..world.nodes.len())
                    .map(|_| world.chooser.below(2) as u8)
                    .collect();
                world.partition(groups);
            }
        }
        _ => world.heal(),
    }
    Ok(())
}

/// Faults stop, everyone is connected and running: a leader must emerge and a write commit
/// within a bound, and then every live member must serve reads of every key.
pub(super) fn liveness<S: Shell>(world: &mut World<S>, options: &Options) -> Result {
    let params = options.params();
    let bound = 40 * params.election_timeout;
    world.heal();
    world.net.faults.drop_percent = 0;
    world.net.faults.dup_percent = 0;
    world.net.faults.long_delay_percent = 0;
    for i in 0..world.nodes.len() {
        world.restart(i)?;
    }
    let start = world.now;
    let mut write: Option<usize> = None;
    while world.now < start + bound {
        world.deliver_all()?;
        world.check()?;
        if let Some(op) = write {
            match world.completed(op) {
                Some(true) => break,
                Some(false) if world.write_pending(op) => {}
                _ => write = None,
            }
        }
        if write.is_none() {
            if let Some(l) = world.leader() {
                write = Some(world.write(l, 0)?);
            }
        }
        world.advance(params.heartbeat_interval)?;
    }
    if write.is_none_or(|op| world.completed(op) != Some(true)) {
        let views: Vec<_> = (0..world.nodes.len()).map(|i| (i, world.view(i))).collect();
        return Err(format!(
            "no write committed within {bound} ms of healing: {views:?}"
        ));
    }
    // Every live member serves a read of every key (a refused read is retried, as a client
    // would).
    for i in 0..world.nodes.len() {
        if !world.view(i).is_some_and(|v| v.member) {
            continue;
        }
        for key in 0..world.keys {
            let mut served = false;
            for _ in 0..5 {
                world.run_until(bound, |w| {
                    w.view(i).is_some_and(|v| v.member && v.leader.is_some())
                })?;
                let op = world.read(i, key)?;
                world.run_until(bound, |w| !w.read_pending(op))?;
                if world.completed(op) == Some(true) {
                    served = true;
                    break;
                }
                world.run(params.election_timeout)?;
            }
            if !served {
                return Err(format!(
                    "member n{i} did not serve a read of k{key} after healing"
                ));
            }
        }
    }
    Ok(())
}
