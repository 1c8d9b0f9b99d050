//! A write forwarded to the leader whose answer may be lost: the link between the two broke
//! after it left, or another node leads now. Its client hears `503` (outcome unknown) within
//! about an election timeout, not after the forward timeout (two minutes for a membership
//! change); an answer that still comes within that grace is relayed as it is.
use kes_core::consensus::NodeId;

use super::{addr, secret, unavailable, Cluster};
use crate::cluster::frame::Frame;
use crate::cluster::replica::{Millis, MEMBERSHIP_FORWARD_TIMEOUT};
use crate::command::Command;
use crate::store::{LostAnswer, Unavailable};

/// The election timeout of [`Cluster`]'s nodes, and so the grace after a possible loss.
const ELECTION: Millis = 1_000;

/// Runs the cluster until node `i` answered client `client`, or for at most `limit`;
/// returns how long that took.
fn run_until_answered(c: &mut Cluster, i: usize, client: u32, limit: Millis) -> Millis {
    let start = c.now;
    while c.write_outcome(i, client).is_none() && c.now < start + limit {
        c.run(10);
    }
    c.now - start
}

/// The id of the first forward in flight from `from` to `to`.
fn forward_id(c: &Cluster, from: usize, to: usize) -> u64 {
    (c.wires.queue.iter())
        .filter(|(f, t, _)| (*f, *t) == (from as NodeId, to as NodeId))
        .find_map(|(_, _, bytes)| match postcard::from_bytes(bytes) {
            Ok(Frame::Forward { id, .. }) => Some(id),
            _ => None,
        })
        .expect("a forward in flight")
}

/// Delivers the first frame in flight from `from` to `to` alone (it must be a forward).
fn deliver_forward(c: &mut Cluster, from: usize, to: usize) {
    let at = (c.wires.queue.iter())
        .position(|(f, t, _)| (*f, *t) == (from as NodeId, to as NodeId))
        .expect("a frame in flight");
    let (_, _, bytes) = c.wires.queue.remove(at).unwrap();
    let frame: Frame = postcard::from_bytes(&bytes).unwrap();
    assert!(matches!(frame, Frame::Forward { .. }), "{frame:?}");
    let now = c.now;
    let (node, store, mut port) = c.port(to);
    node.on_frame(now, &mut port, store, from as NodeId, frame);
    c.flush(to);
}

fn shrink(place: usize) -> Command {
    Command::Shrink {
        endpoint: addr(place as NodeId),
        force: false,
    }
}

#[test]
fn a_forwarded_change_whose_link_to_the_leader_breaks_gets_503_outcome_unknown_at_once() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.propose(follower, 1, shrink(other));
    // The request left; the link breaks before the leader read it (`cluster add` or `rm` on
    // a follower while the leader restarts, or a network fault).
    c.cut(leader as NodeId, follower as NodeId);
    let took = run_until_answered(&mut c, follower, 1, MEMBERSHIP_FORWARD_TIMEOUT + 1_000);
    eprintln!("answered after {took} ms (the forward timeout is {MEMBERSHIP_FORWARD_TIMEOUT} ms)");
    let why = unavailable(c.write_outcome(follower, 1));
    assert!(
        took <= ELECTION + 100,
        "answered after {took} ms, not within the grace: {why}"
    );
    assert_eq!(
        why,
        &Unavailable::AnswerLost {
            leader: leader as NodeId,
            cause: LostAnswer::LinkBroke,
            change: true,
        }
    );
    let text = why.to_string();
    assert!(
        text.contains("may or may not have been made") && text.contains("kes-node cluster info"),
        "{text}"
    );
}

#[test]
fn a_forwarded_change_whose_leader_hangs_gets_503_outcome_unknown_once_another_leads() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.propose(follower, 1, shrink(other));
    // The leader hangs: its links stay up (nothing breaks), but it never answers; the others
    // elect a new leader.
    c.wires.hung.insert(leader as NodeId);
    let took = run_until_answered(&mut c, follower, 1, MEMBERSHIP_FORWARD_TIMEOUT + 1_000);
    eprintln!("answered after {took} ms (the forward timeout is {MEMBERSHIP_FORWARD_TIMEOUT} ms)");
    let why = unavailable(c.write_outcome(follower, 1));
    // An election (at most twice the election timeout, plus a pre-vote round), then the grace.
    assert!(
        took <= 4 * ELECTION,
        "answered after {took} ms, not soon after the election: {why}"
    );
    let new = c.nodes[follower].node().leader().expect("a new leader");
    assert_ne!(new, leader as NodeId);
    assert_eq!(
        why,
        &Unavailable::AnswerLost {
            leader: leader as NodeId,
            cause: LostAnswer::LeaderChanged(Some(new)),
            change: true,
        }
    );
}

#[test]
fn a_forwarded_change_whose_leader_falls_silent_gets_503_outcome_unknown_soon_after() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.propose(follower, 1, shrink(other));
    // The link between the two stays up but carries nothing any more (a black hole); the
    // third node still hears the leader, so nobody else is elected and the term stays.
    let pair = (
        leader.min(follower) as NodeId,
        leader.max(follower) as NodeId,
    );
    c.wires.silent.insert(pair);
    let term = c.nodes[follower].node().term();
    let took = run_until_answered(&mut c, follower, 1, MEMBERSHIP_FORWARD_TIMEOUT + 1_000);
    eprintln!("answered after {took} ms (the forward timeout is {MEMBERSHIP_FORWARD_TIMEOUT} ms)");
    let why = unavailable(c.write_outcome(follower, 1));
    // Its election timeout (at most twice the configured one), then the grace.
    assert!(
        took <= 3 * ELECTION + 100,
        "answered after {took} ms, not soon after it stopped hearing the leader: {why}"
    );
    assert_eq!(c.nodes[follower].node().term(), term, "no other term began");
    assert_eq!(c.nodes[other].node().leader(), Some(leader as NodeId));
    assert_eq!(
        why,
        &Unavailable::AnswerLost {
            leader: leader as NodeId,
            cause: LostAnswer::NotHeard,
            change: true,
        }
    );
}

#[test]
fn a_forwarded_write_still_gets_the_leaders_answer_if_the_link_is_back_within_the_grace() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (leader + 1) % 3;
    c.propose(follower, 1, secret("late"));
    // The leader got the write; then the link breaks, so it cannot commit (every node must
    // have the entry) nor answer.
    deliver_forward(&mut c, follower, leader);
    c.cut(leader as NodeId, follower as NodeId);
    c.run(ELECTION / 2);
    assert!(c.write_outcome(follower, 1).is_none(), "it waits, briefly");
    // The link is redialed within the grace: the write commits and the answer comes back.
    c.heal();
    let took = run_until_answered(&mut c, follower, 1, ELECTION);
    assert_eq!(
        c.write_outcome(follower, 1),
        Some(&Ok(())),
        "after {took} ms"
    );
    assert!(c.stores[follower]
        .secret(crate::store::DEFAULT_ENCLAVE, "late")
        .is_ok());
}

#[test]
fn a_restarted_follower_never_takes_an_answer_meant_for_its_former_self() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    // The third node hangs a while: nothing commits (every node must have an entry).
    c.wires.hung.insert(other as NodeId);
    c.propose(follower, 1, secret("twice"));
    deliver_forward(&mut c, follower, leader);
    // The leader appended the write; the follower restarts, and its client is gone.
    c.restart(follower, 1234);
    // A new client of the restarted follower creates the same name.
    c.propose(follower, 2, secret("twice"));
    c.run(300);
    assert!(
        c.write_outcome(follower, 2).is_none(),
        "nothing commits yet"
    );
    // Both commit: the first creates the name, the second finds it. The leader answers the
    // first toward the follower too, under the id the follower's former self gave it.
    c.wires.hung.clear();
    run_until_answered(&mut c, follower, 2, 2 * ELECTION);
    c.run(200);
    assert!(c.stores[follower]
        .secret(crate::store::DEFAULT_ENCLAVE, "twice")
        .is_ok());
    assert_eq!(
        c.write_outcome(follower, 2),
        Some(&Err(crate::store::StoreError::Exists)),
        "the second create was told the first one's outcome"
    );
}

#[test]
fn only_the_node_a_write_went_to_answers_it() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.propose(follower, 1, secret("mine"));
    let id = forward_id(&c, follower, leader);
    // Another node sends an answer under that id (a mix-up; it never got the write).
    let now = c.now;
    let outcome = crate::cluster::frame::WireOutcome::Exists;
    let (node, store, mut port) = c.port(follower);
    node.on_frame(
        now,
        &mut port,
        store,
        other as NodeId,
        Frame::ForwardResult { id, outcome },
    );
    c.flush(follower);
    assert!(
        c.write_outcome(follower, 1).is_none(),
        "taken from node {other}"
    );
    c.run(50);
    assert_eq!(c.write_outcome(follower, 1), Some(&Ok(())));
}
