//! Micro-benchmarks of the kes-core operations on every request's path: the KES ciphertext
//! format (encrypt/decrypt a 32-byte data key with both ciphers), HMAC, policy matching and
//! one consensus step (a write proposed to, and a read served by, a single-node leader).
//! `cargo bench -p kes-core`; compare runs of the same machine to spot regressions.
use std::hint::black_box;

use criterion::Criterion;
use kes_core::consensus::{
    Config, HardState, Input, Members, NameId, Names, Node, Params, ProposalId, ReadId, Role,
    SnapshotMeta, StepOutput,
};
use kes_core::crypto::{Cipher, HmacKey, SecretKey};
use kes_core::policy;

fn crypto(c: &mut Criterion) {
    let dek = [7u8; 32];
    let random = [9u8; 28];
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = SecretKey::new(cipher, [1u8; 32]);
        let sealed = key.encrypt(&random, &dek, b"bucket/object");
        c.bench_function(&format!("encrypt 32 B {}", cipher.as_str()), |b| {
            b.iter(|| key.encrypt(black_box(&random), black_box(&dek), b"bucket/object"))
        });
        c.bench_function(&format!("decrypt 32 B {}", cipher.as_str()), |b| {
            b.iter(|| key.decrypt(black_box(&sealed), b"bucket/object").unwrap())
        });
    }
    let mac = HmacKey::new([3u8; 32]);
    c.bench_function("hmac 32 B", |b| b.iter(|| mac.sign(black_box(&dek))));
}

fn policies(c: &mut Criterion) {
    let allow = [
        "/v1/key/create/app-*",
        "/v1/key/generate/app-*",
        "/v1/key/decrypt/app-*",
        "/v1/key/list/*",
        "/version",
    ];
    let deny = ["/v1/key/decrypt/app-internal*", "/v1/key/delete/*"];
    c.bench_function("policy verify (5 allow, 2 deny)", |b| {
        b.iter(|| {
            policy::verify(
                allow.iter().copied(),
                deny.iter().copied(),
                black_box("/v1/key/decrypt/app-bucket-42"),
            )
        })
    });
}

/// A single-node cluster's node, elected leader.
fn leader() -> (Node<u64>, u64) {
    let params = Params::default();
    let mut members = Members::new();
    members.extend([0]);
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
    let mut ready = StepOutput::default();
    let mut now = 0;
    while node.role() != Role::Leader {
        now += params.election_timeout;
        node.step(now, Input::Tick { random: now }, &mut ready);
        ready.clear();
        assert!(now < 100 * params.election_timeout, "no leader");
    }
    (node, now)
}

fn consensus(c: &mut Criterion) {
    let mut names = Names::new();
    let _ = names.push(NameId(1));
    let (mut node, now) = leader();
    let mut ready = StepOutput::default();
    let mut id = 0;
    c.bench_function("consensus step: propose on a 1-node leader", |b| {
        b.iter(|| {
            id += 1;
            let input = Input::Propose {
                id: ProposalId(id),
                names: names.clone(),
                command: id,
            };
            node.step(now, input, &mut ready);
            ready.clear();
        })
    });
    let (mut node, now) = leader();
    c.bench_function("consensus step: read on a 1-node leader", |b| {
        b.iter(|| {
            id += 1;
            let input = Input::Read {
                id: ReadId(id),
                names: names.clone(),
            };
            node.step(now, input, &mut ready);
            assert!(ready.reads.iter().all(|(_, r)| r.is_ok()));
            ready.clear();
        })
    });
}

/// Runs the benchmarks (what `criterion_group!` and `criterion_main!` would write, which
/// leave their functions undocumented).
fn main() {
    let mut c = Criterion::default().configure_from_args();
    crypto(&mut c);
    policies(&mut c);
    consensus(&mut c);
    c.final_summary();
}
