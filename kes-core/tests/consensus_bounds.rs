//! The core's bounds surface as explicit answers, and its output drops nothing.
//!
//! The core keeps at most [`WINDOW`] uncommitted entries (and as many tracked writes) and at
//! most [`MAX_READS`] waiting reads. Hitting either bound must answer the client
//! (`ProposeError::Busy`, `ReadError::Busy`) and lose nothing else; and since a step hands every
//! decision to the shell's [`Output`] sink, a step's messages and answers are all delivered,
//! however many there are.

use kes_core::consensus::{
    Config, Entry, Envelope, HardState, Index, Input, Members, Message, NameId, Names, Node,
    NodeId, Output, Params, ProposalId, ProposeError, ReadError, ReadId, Role, SnapshotMeta,
    StepOutput, MAX_READS, WINDOW,
};

/// Leader of a cluster of `size` nodes (id 0), elected by votes fed to it by hand; the other
/// nodes never answer after that, so nothing it appends commits. Time stays at the returned
/// instant, so no peer counts as unreachable.
fn lonely_leader(size: u16) -> (Node<u64>, u64) {
    let params = Params {
        pre_vote: false,
        ..Params::default()
    };
    let members: Members = (0..size).collect();
    let applied = SnapshotMeta {
        index: 0,
        term: 0,
        config: Config {
            index: 0,
            members,
            forced: false,
        },
    };
    let mut node = Node::new(0, params, 0, 1, HardState::default(), applied, &[]).unwrap();
    let now = 2 * params.election_timeout;
    let mut out = StepOutput::default();
    node.step(now, Input::Tick { random: 1 }, &mut out);
    assert_eq!(node.role(), Role::Candidate);
    let term = node.term();
    for from in 1..size {
        if node.role() == Role::Leader {
            break;
        }
        let vote = Message::Vote {
            term,
            granted: true,
            pre_vote: false,
        };
        let envelope = Envelope {
            from,
            to: 0,
            message: vote,
        };
        node.step(now, Input::Message(envelope), &mut out);
    }
    assert_eq!(node.role(), Role::Leader);
    (node, now)
}

fn names(name: u64) -> Names {
    let mut names = Names::new();
    names.push(NameId(name)).unwrap();
    names
}

/// With the window of uncommitted entries full, the next write is refused with `Busy` at once
/// (nothing appended, nothing sent for it), and every earlier write stays in flight.
#[test]
fn a_write_beyond_the_window_is_busy() {
    let (mut node, now) = lonely_leader(2);
    // The leader's no-op takes one slot of the window.
    let room = WINDOW as u64 - node.pending_entries().len() as u64;
    let mut appended = 0;
    let mut sent = 0;
    for id in 0..room {
        let mut out = StepOutput::default();
        let input = Input::Propose {
            id: ProposalId(id),
            names: names(1),
            command: id,
        };
        node.step(now, input, &mut out);
        assert!(out.proposals.is_empty(), "write {id}: {:?}", out.proposals);
        appended += out.append.len();
        sent += out.messages.len();
    }
    assert_eq!(appended as u64, room);
    assert_eq!(
        sent as u64, room,
        "one AppendEntries to the follower per write"
    );
    assert_eq!(node.pending_entries().len(), WINDOW);

    let mut out = StepOutput::default();
    let input = Input::Propose {
        id: ProposalId(room),
        names: names(1),
        command: 0,
    };
    node.step(now, input, &mut out);
    assert_eq!(out.proposals, [(ProposalId(room), Err(ProposeError::Busy))]);
    assert!(out.append.is_empty() && out.messages.is_empty(), "{out:?}");
    assert_eq!(node.pending_entries().len(), WINDOW);

    // The writes in flight are not forgotten: each gets its own outcome when it times out.
    let mut out = StepOutput::default();
    let later = now + Params::default().write_timeout;
    node.step(later, Input::Tick { random: 2 }, &mut out);
    let mut timed_out: Vec<u64> = out
        .proposals
        .iter()
        .map(|(id, result)| {
            assert!(
                matches!(result, Err(ProposeError::Timeout { .. })),
                "{result:?}"
            );
            id.0
        })
        .collect();
    timed_out.sort_unstable();
    assert_eq!(timed_out, (0..room).collect::<Vec<_>>());
}

/// With `MAX_READS` reads waiting, the next read is refused with `Busy` at once, and every
/// waiting read still gets its answer.
#[test]
fn a_read_beyond_the_waiting_reads_is_busy() {
    let (mut node, now) = lonely_leader(2);
    let mut out = StepOutput::default();
    let write = Input::Propose {
        id: ProposalId(1),
        names: names(7),
        command: 7,
    };
    node.step(now, write, &mut out);
    // The write to name 7 is pending (the follower never acknowledges): its reads wait.
    assert!(node.is_pending(NameId(7)));
    for id in 0..MAX_READS as u64 {
        let mut out = StepOutput::default();
        let read = Input::Read {
            id: ReadId(id),
            names: names(7),
        };
        node.step(now, read, &mut out);
        assert!(
            out.reads.is_empty(),
            "read {id} was answered: {:?}",
            out.reads
        );
    }
    let mut out = StepOutput::default();
    let busy = ReadId(MAX_READS as u64);
    let read = Input::Read {
        id: busy,
        names: names(7),
    };
    node.step(now, read, &mut out);
    assert_eq!(out.reads, [(busy, Err(ReadError::Busy))]);

    // A read of another name does not wait, so the bound does not refuse it.
    let mut out = StepOutput::default();
    let other = ReadId(1000);
    let read = Input::Read {
        id: other,
        names: names(8),
    };
    node.step(now, read, &mut out);
    assert_eq!(out.reads, [(other, Ok(()))]);

    // Every waiting read is answered when it times out: all `MAX_READS` in one step.
    let mut out = StepOutput::default();
    let later = now + Params::default().read_timeout;
    node.step(later, Input::Tick { random: 3 }, &mut out);
    let mut answered: Vec<u64> = out
        .reads
        .iter()
        .map(|(id, result)| {
            assert!(
                matches!(result, Err(ReadError::Pending { .. })),
                "{result:?}"
            );
            id.0
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, (0..MAX_READS as u64).collect::<Vec<_>>());
}

/// A sink that keeps nothing but counts: the core works with any `Output`, no allocation
/// needed, and every decision reaches it.
#[derive(Default)]
struct Counts {
    hard_states: usize,
    appends: usize,
    applies: usize,
    sends: Vec<NodeId>,
    answers: usize,
}

impl Output<u64> for Counts {
    fn hard_state(&mut self, _: HardState) {
        self.hard_states += 1;
    }
    fn restore(&mut self, _: SnapshotMeta) {}
    fn truncate(&mut self, _: Index) {}
    fn append(&mut self, _: Entry<u64>) {
        self.appends += 1;
    }
    fn apply(&mut self, _: Entry<u64>) {
        self.applies += 1;
    }
    fn send(&mut self, envelope: Envelope<u64>) {
        self.sends.push(envelope.to);
    }
    fn send_snapshot(&mut self, envelope: Envelope<u64>) {
        self.sends.push(envelope.to);
    }
    fn proposal(&mut self, _: ProposalId, _: Result<Index, ProposeError>) {
        self.answers += 1;
    }
    fn read(&mut self, _: ReadId, _: Result<(), ReadError>) {
        self.answers += 1;
    }
}

/// A leader of seven writing 40 times, then a heartbeat, into one sink that is never cleared:
/// 6 messages per write and per heartbeat, 246 in all (a fixed batch held 28), each reaches
/// the sink, addressed to the right peer.
#[test]
fn every_message_reaches_the_sink() {
    let (mut node, now) = lonely_leader(7);
    let mut counts = Counts::default();
    for id in 0..40 {
        let input = Input::Propose {
            id: ProposalId(id),
            names: names(1),
            command: id,
        };
        node.step(now, input, &mut counts);
    }
    let heartbeat = now + Params::default().heartbeat_interval;
    node.step(heartbeat, Input::Tick { random: 4 }, &mut counts);
    assert_eq!(counts.appends, 40);
    assert_eq!(counts.applies, 0);
    assert_eq!(counts.answers, 0);
    assert_eq!(counts.hard_states, 0);
    assert_eq!(counts.sends.len(), 41 * 6);
    for peer in 1..7 {
        assert_eq!(counts.sends.iter().filter(|&&to| to == peer).count(), 41);
    }
}
