//! Model-based test of authorization (issue 13): random sequences of identity, policy and
//! enclave operations by random actors (the system admin, enclave admins, identities with
//! random policies drawn from the route patterns) against one real `kes-node` (real TLS, real
//! kes.db), beside the reference model in `authz_model/model.rs`. After every step:
//! - the server answered exactly as the model says (status and message, success or refusal);
//! - probes (real requests that change nothing) by the identities of the step's enclave are
//!   allowed exactly when the model allows them;
//! - every probe the server allows is allowed for each non-admin creator on the caller's
//!   chain too (real requests): no identity can do anything its creators cannot.
//!
//! At the end of a sequence, every identity the model knows is compared with the server's
//! description, and every actor probes every path in every enclave of the sequence.
//!
//! TTLs are real: identities get TTLs of one or two seconds, and no request is sent within a
//! quarter second of an expiry the model knows (the test waits until it has passed), so the
//! server and the model never disagree about which side of an expiry a request fell on.
//!
//! Sequences are seeded: a failing one prints the command that replays it alone,
//! `AUTHZ_SEED=<seed> cargo test -p kes-node --test authz_model -- --nocapture`.
//! `cargo test` runs a fast default set; `-- --ignored` runs the long one
//! (`AUTHZ_SEQUENCES=<n>` sets how many).

mod support;

#[path = "authz_model/model.rs"]
mod model;

use std::time::{Duration, Instant};

use model::{Expect, Model, Op, Policy, Step, NOT_ALLOWED, SYSADMIN};
use support::*;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Client identities per sequence (actors 1..=IDENTITIES; actor 0 is the system admin).
const IDENTITIES: usize = 6;
/// Policy names of a sequence.
const POLICY_NAMES: [&str; 4] = ["p0", "p1", "p2", "p3"];
/// Patterns policies are drawn from: the routes of identities, policies, keys, secrets,
/// enclaves and logs, wide and narrow, and exact names of the sequence's policies.
const PATTERNS: [&str; 26] = [
    "/v1/*",
    "/v1/key/*",
    "/v1/key/describe/*",
    "/v1/key/generate/*",
    "/v1/key/delete/*",
    "/v1/key/list/*",
    "/v1/secret/*",
    "/v1/secret/describe/*",
    "/v1/policy/*",
    "/v1/policy/create/*",
    "/v1/policy/create/p1",
    "/v1/policy/delete/*",
    "/v1/policy/delete/p2",
    "/v1/policy/describe/*",
    "/v1/policy/assign/*",
    "/v1/policy/assign/p0",
    "/v1/identity/*",
    "/v1/identity/create/*",
    "/v1/identity/delete/*",
    "/v1/identity/describe/*",
    "/v1/status",
    "/v1/enclave/*",
    "/v1/log/audit",
    "/v1/key/d*",
    "/v1/policy/*p3",
    "/v1/i*",
];
/// Patterns that let an identity create, assign or change identities and policies.
const POWERS: [&str; 7] = [
    "/v1/*",
    "/v1/identity/*",
    "/v1/identity/create/*",
    "/v1/policy/*",
    "/v1/policy/assign/*",
    "/v1/policy/create/*",
    "/v1/policy/delete/*",
];
/// TTLs of created identities (None: never expires).
const TTLS: [Option<&str>; 6] = [None, None, None, Some("1s"), Some("2s"), Some("1h")];
/// The first steps of a sequence: the system admin creates policies and identities.
const SETUP_STEPS: usize = 6;
/// No request within this long before an expiry the model knows.
const EXPIRY_MARGIN: Duration = Duration::from_millis(250);
/// ... nor this long after it (the server's clock reads a moment after ours).
const EXPIRY_SLACK: Duration = Duration::from_millis(40);
/// Never an identity: probes of identity routes name it.
const NOBODY: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A request that changes nothing, and how the server answers it when allowed.
struct Probe {
    method: &'static str,
    path: String,
    body: Option<&'static [u8]>,
    allowed: Expect,
}

fn probes() -> Vec<Probe> {
    let not_found = |m: &str| Expect {
        status: 404,
        message: Some(m.to_owned()),
    };
    let ok = Expect {
        status: 200,
        message: None,
    };
    let p = |method, path: &str, body, allowed| Probe {
        method,
        path: path.to_owned(),
        body,
        allowed,
    };
    vec![
        p(
            "GET",
            "/v1/key/describe/nokey",
            None,
            not_found("key does not exist"),
        ),
        p(
            "PUT",
            "/v1/key/generate/nokey",
            Some(b"{}"),
            not_found("key does not exist"),
        ),
        p(
            "DELETE",
            "/v1/key/delete/nokey",
            None,
            not_found("key does not exist"),
        ),
        p(
            "GET",
            "/v1/secret/describe/nosecret",
            None,
            not_found("secret does not exist"),
        ),
        p(
            "GET",
            "/v1/policy/describe/nopolicy",
            None,
            not_found("policy does not exist"),
        ),
        p(
            "DELETE",
            "/v1/policy/delete/nopolicy",
            None,
            not_found("policy does not exist"),
        ),
        p(
            "GET",
            &format!("/v1/identity/describe/{NOBODY}"),
            None,
            not_found("identity does not exist"),
        ),
        p(
            "DELETE",
            &format!("/v1/identity/delete/{NOBODY}"),
            None,
            not_found("identity does not exist"),
        ),
        p("GET", "/v1/status", None, ok.clone()),
        p("GET", "/v1/key/list/*", None, ok),
    ]
}

/// splitmix64: a small seeded generator (no crate needed, the same on every platform).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What one sequence did.
#[derive(Default, Debug)]
struct Counts {
    steps: usize,
    requests: usize,
    successes: usize,
    /// Successes of steps by identities other than the system admin.
    identity_successes: usize,
    refusals: usize,
    expiries_waited: usize,
}

/// One sequence against `server`: the actors, their connections and the model.
struct Run<'s> {
    seed: u64,
    rng: Rng,
    server: &'s Server,
    clients: Vec<Client>,
    model: Model,
    enclaves: Vec<String>,
    probes: Vec<Probe>,
    counts: Counts,
}

impl<'s> Run<'s> {
    fn new(server: &'s Server, seed: u64) -> Run<'s> {
        let certs: Vec<ClientCert> = (1..=IDENTITIES)
            .map(|i| self_signed_client(&format!("a{i}")))
            .collect();
        let mut ids = vec![pki().admin.identity.clone()];
        ids.extend(certs.iter().map(|c| c.identity.clone()));
        let mut clients = vec![server.admin()];
        clients.extend(certs.iter().map(|c| server.client(c)));
        Run {
            seed,
            rng: Rng(seed),
            server,
            clients,
            model: Model::new(ids),
            enclaves: vec![format!("m{seed}-a"), format!("m{seed}-b")],
            probes: probes(),
            counts: Counts::default(),
        }
    }

    /// Waits while a request now could fall on either side of an expiry.
    fn clear_of_expiries(&mut self) {
        loop {
            let now = OffsetDateTime::now_utc();
            let near = self
                .model
                .expiries()
                .find(|&t| now + EXPIRY_MARGIN > t && now < t + EXPIRY_SLACK);
            let Some(t) = near else { return };
            self.counts.expiries_waited += 1;
            let until = t + EXPIRY_SLACK - now;
            std::thread::sleep(Duration::try_from(until).unwrap_or_default());
        }
    }

    fn send(
        &mut self,
        actor: usize,
        enclave: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (Response, OffsetDateTime) {
        self.clear_of_expiries();
        let now = OffsetDateTime::now_utc();
        let mut headers = vec![("Kes-Enclave", enclave)];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.counts.requests += 1;
        let resp = self.clients[actor].must(method, path, &headers, body);
        (resp, now)
    }

    fn check(&self, what: &str, expect: &Expect, resp: &Response) {
        let message = (resp.status != 200).then(|| {
            resp.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
        let got = Expect {
            status: resp.status,
            message,
        };
        assert_eq!(
            &got,
            expect,
            "seed {}: {what}: the server answered {} {:?}, the model expected {expect:?}",
            self.seed,
            resp.status,
            resp.text()
        );
    }

    fn random_policy(&mut self) -> Policy {
        let mut allow: Vec<String> = (0..1 + self.rng.below(3))
            .map(|_| self.rng.pick(&PATTERNS).to_string())
            .collect();
        // Often a right to hand out rights, else few identities would create or assign.
        if self.rng.chance(60) {
            allow.push(self.rng.pick(&POWERS).to_string());
        }
        let mut deny: Vec<String> = (0..self.rng.below(3).saturating_sub(1))
            .map(|_| self.rng.pick(&PATTERNS).to_string())
            .collect();
        allow.sort();
        allow.dedup();
        deny.sort();
        deny.dedup();
        Policy { allow, deny }
    }

    /// An actor: the system admin sometimes, else an identity (mostly one of the enclave).
    fn random_actor(&mut self, enclave: &str) -> usize {
        if self.rng.chance(10) {
            return SYSADMIN;
        }
        let present: Vec<usize> = self
            .model
            .enclaves
            .get(enclave)
            .map(|e| e.identities.keys().copied().collect())
            .unwrap_or_default();
        if !present.is_empty() && self.rng.chance(80) {
            *self.rng.pick(&present)
        } else {
            1 + self.rng.below(IDENTITIES)
        }
    }

    /// A random step; mostly one whose route the actor may call (else most steps would stop
    /// at the first check), so that the rules behind it are exercised.
    fn random_step(&mut self, index: usize) -> Step {
        let first = self.any_step(index);
        if !self.rng.chance(70) {
            return first;
        }
        let now = OffsetDateTime::now_utc();
        for _ in 0..12 {
            let step = self.any_step(index);
            let (_, path, _) = self.model.request(&step);
            if self.model.allowed(&step.enclave, step.actor, &path, now) {
                return step;
            }
        }
        first
    }

    /// A random step; the first `SETUP_STEPS` are the system admin's creations.
    fn any_step(&mut self, index: usize) -> Step {
        let setup = index < SETUP_STEPS;
        let enclave = match setup {
            true => self.enclaves[index % self.enclaves.len()].clone(),
            false => self.rng.pick(&self.enclaves).clone(),
        };
        let actor = match setup {
            true => SYSADMIN,
            false => self.random_actor(&enclave),
        };
        // Targets: mostly identities of the enclave for deletes and assignments, mostly new
        // ones for creates, sometimes the system admin.
        let present: Vec<usize> = self
            .model
            .enclaves
            .get(&enclave)
            .map(|e| e.identities.keys().copied().collect())
            .unwrap_or_default();
        let absent: Vec<usize> = (1..=IDENTITIES).filter(|i| !present.contains(i)).collect();
        let anyone = match self.rng.chance(3) {
            true => SYSADMIN,
            false => 1 + self.rng.below(IDENTITIES),
        };
        let existing_target = match present.is_empty() || self.rng.chance(20) {
            true => anyone,
            false => *self.rng.pick(&present),
        };
        let new_target = match absent.is_empty() || self.rng.chance(30) {
            true => anyone,
            false => *self.rng.pick(&absent),
        };
        // Mostly names that exist (or, to create one, that do not): else most steps would
        // only meet "policy does not exist".
        let existing: Vec<String> = self
            .model
            .enclaves
            .get(&enclave)
            .map(|e| e.policies.keys().cloned().collect())
            .unwrap_or_default();
        let missing: Vec<&str> = POLICY_NAMES
            .iter()
            .copied()
            .filter(|p| !existing.iter().any(|e| e == p))
            .collect();
        let any = self.rng.pick(&POLICY_NAMES).to_string();
        let policy = match existing.is_empty() || self.rng.chance(20) {
            true => any.clone(),
            false => self.rng.pick(&existing).clone(),
        };
        let roll = match index {
            // The system admin sets the sequence up: a policy in each enclave, then identities.
            0 | 1 => 0,
            _ if setup => 28 + self.rng.below(27),
            _ => self.rng.below(100),
        };
        let op = match roll {
            0..=19 => Op::CreatePolicy {
                name: match missing.is_empty() || self.rng.chance(25) {
                    true => any,
                    false => self.rng.pick(&missing).to_string(),
                },
                policy: self.random_policy(),
            },
            20..=27 => Op::DeletePolicy { name: policy },
            28..=54 => Op::CreateIdentity {
                target: new_target,
                policy,
                admin: self.rng.chance(10),
                ttl: *self.rng.pick(&TTLS),
            },
            55..=63 => Op::DeleteIdentity {
                target: existing_target,
            },
            64..=89 => Op::Assign {
                policy,
                target: existing_target,
            },
            90..=94 => Op::CreateEnclave,
            95..=96 => Op::DeleteEnclave,
            _ => Op::Expire,
        };
        Step { actor, enclave, op }
    }

    /// The server's `expires_at` of `target` in `enclave` (asked as the system admin).
    fn expires_at(&mut self, enclave: &str, target: usize) -> Option<OffsetDateTime> {
        let path = format!("/v1/identity/describe/{}", self.model.ids[target]);
        let (resp, _) = self.send(SYSADMIN, enclave, "GET", &path, None);
        assert_eq!(
            resp.status,
            200,
            "seed {}: {path}: {}",
            self.seed,
            resp.text()
        );
        resp.json()["expires_at"]
            .as_str()
            .map(|s| OffsetDateTime::parse(s, &Rfc3339).expect("RFC 3339 expires_at"))
    }

    fn step(&mut self, step: &Step) {
        self.counts.steps += 1;
        if let Op::Expire = step.op {
            // Let the next expiry (if one comes within 2.5 s) pass.
            let now = OffsetDateTime::now_utc();
            if let Some(t) = self
                .model
                .expiries()
                .filter(|&t| t > now && t < now + Duration::from_millis(2500))
                .min()
            {
                self.counts.expiries_waited += 1;
                let until = t + EXPIRY_SLACK - now;
                std::thread::sleep(Duration::try_from(until).unwrap_or_default());
            }
            return;
        }
        let (method, path, body) = self.model.request(step);
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let (resp, at) = self.send(
            step.actor,
            &step.enclave.clone(),
            method,
            &path,
            body.as_deref(),
        );
        let expect = self.model.expect(step, at);
        self.check(&format!("{step:?}"), &expect, &resp);
        if resp.status != 200 {
            self.counts.refusals += 1;
            return;
        }
        self.counts.successes += 1;
        if step.actor != SYSADMIN {
            self.counts.identity_successes += 1;
        }
        let target = match step.op {
            Op::CreateIdentity { target, .. } => Some(target),
            Op::Assign { target, .. } => Some(target),
            _ => None,
        };
        let expires_at = target.and_then(|t| self.expires_at(&step.enclave.clone(), t));
        self.model.apply(step, expires_at);
    }

    /// `actor` probes `probe` in `enclave`; if allowed, so must be every non-admin creator on
    /// its chain (asked with real requests too).
    fn probe(&mut self, actor: usize, enclave: &str, index: usize) {
        let (method, path, body) = {
            let p = &self.probes[index];
            (p.method, p.path.clone(), p.body)
        };
        let (resp, at) = self.send(actor, enclave, method, &path, body);
        let allowed = self.model.allowed(enclave, actor, &path, at);
        let expect = if allowed {
            self.probes[index].allowed.clone()
        } else {
            Expect {
                status: 403,
                message: Some(NOT_ALLOWED.to_owned()),
            }
        };
        self.check(
            &format!("probe {method} {path} by actor {actor} in {enclave}"),
            &expect,
            &resp,
        );
        if resp.status == 403 {
            return;
        }
        for creator in self.model.limiting_creators(enclave, actor) {
            let (resp, at) = self.send(creator, enclave, method, &path, body);
            if !self.model.allowed(enclave, actor, &path, at) {
                // The chain expired before this request (the test waited for the expiry to
                // pass): the two answers are of different states.
                continue;
            }
            assert_ne!(
                resp.status,
                403,
                "seed {}: actor {actor} may {method} {path} in {enclave}, but its creator \
                 {creator} may not; the model's enclave: {:?}",
                self.seed,
                self.model.enclaves.get(enclave)
            );
        }
    }

    /// After a step: each identity of the step's enclave (and one stranger) probes a path.
    fn probe_some(&mut self, enclave: &str) {
        let mut actors: Vec<usize> = self
            .model
            .enclaves
            .get(enclave)
            .map(|e| e.identities.keys().copied().collect())
            .unwrap_or_default();
        actors.push(1 + self.rng.below(IDENTITIES));
        for actor in actors {
            let index = self.rng.below(self.probes.len());
            self.probe(actor, enclave, index);
        }
    }

    /// At the end: the server's identities are the model's, and every actor probes every path
    /// in every enclave.
    fn final_check(&mut self) {
        for enclave in self.enclaves.clone() {
            for actor in 1..=IDENTITIES {
                let path = format!("/v1/identity/describe/{}", self.model.ids[actor]);
                let (resp, _) = self.send(SYSADMIN, &enclave, "GET", &path, None);
                let known = self
                    .model
                    .enclaves
                    .get(&enclave)
                    .and_then(|e| e.identities.get(&actor))
                    .cloned();
                match known {
                    None => assert_eq!(
                        resp.status,
                        404,
                        "seed {}: {path} in {enclave}: {}",
                        self.seed,
                        resp.text()
                    ),
                    Some(rec) => {
                        let v = resp.json();
                        let parent = &self.model.ids[rec.created_by];
                        assert_eq!(
                            (
                                v["policy"].as_str().unwrap_or_default(),
                                v["admin"].as_bool().unwrap_or_default(),
                                v["created_by"].as_str().unwrap_or_default(),
                            ),
                            (rec.policy.as_str(), rec.admin, parent.as_str()),
                            "seed {}: {path} in {enclave}: {v}",
                            self.seed
                        );
                    }
                }
                for index in 0..self.probes.len() {
                    self.probe(actor, &enclave, index);
                }
            }
        }
    }

    fn run(mut self, steps: usize) -> Counts {
        // Every sequence starts with its first enclave.
        for enclave in self.enclaves.clone() {
            let first = Step {
                actor: SYSADMIN,
                enclave,
                op: Op::CreateEnclave,
            };
            self.step(&first);
        }
        for index in 0..steps {
            let step = self.random_step(index);
            self.step(&step);
            self.probe_some(&step.enclave);
        }
        self.final_check();
        // Leave nothing behind on the shared server.
        for enclave in self.enclaves.clone() {
            let path = format!("/v1/enclave/delete/{enclave}");
            let _ = self.send(SYSADMIN, "default", "DELETE", &path, None);
        }
        let _ = self.server;
        self.counts
    }
}

/// The number of steps of the sequence of `seed` (so that a replay is the same sequence).
fn steps_of(seed: u64) -> usize {
    20 + (seed % 21) as usize
}

/// Runs the sequences of `seeds` against one server; a failure names the seed to replay.
fn run_sequences(tag: &str, seeds: impl Iterator<Item = u64>) {
    let env = Env::new(tag);
    let server = env.start();
    let started = Instant::now();
    let mut total = Counts::default();
    let mut sequences = 0;
    for seed in seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Run::new(&server, seed).run(steps_of(seed))
        }));
        match result {
            Ok(c) => {
                sequences += 1;
                total.steps += c.steps;
                total.requests += c.requests;
                total.successes += c.successes;
                total.identity_successes += c.identity_successes;
                total.refusals += c.refusals;
                total.expiries_waited += c.expiries_waited;
            }
            Err(panic) => {
                eprintln!(
                    "authz_model: sequence {seed} failed; replay it alone with\n  \
                     AUTHZ_SEED={seed} cargo test -p kes-node --test authz_model -- --nocapture"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "authz_model: {sequences} sequences, {} steps ({} succeeded, {} of them by identities; \
         {} refused), {} requests, {} expiry waits, {:.1} s",
        total.steps,
        total.successes,
        total.identity_successes,
        total.refusals,
        total.requests,
        total.expiries_waited,
        started.elapsed().as_secs_f64()
    );
}

/// A seed from `AUTHZ_SEED` replays that one sequence.
fn replay_seed() -> Option<u64> {
    std::env::var("AUTHZ_SEED").ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("AUTHZ_SEED={s:?} is not a number"))
    })
}

/// The default run: a fixed set of seeds (the same sequences on every run), a few seconds.
#[test]
fn authorization_matches_the_model() {
    match replay_seed() {
        Some(seed) => run_sequences("authz-replay", std::iter::once(seed)),
        None => run_sequences("authz-model", 1..=12),
    }
}

/// The long run: fresh random seeds (printed on failure), `AUTHZ_SEQUENCES` of them
/// (default 300).
#[test]
#[ignore]
fn authorization_matches_the_model_long() {
    let count: u64 = std::env::var("AUTHZ_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_000;
    eprintln!("authz_model: long run, seeds {base}..{}", base + count);
    run_sequences("authz-model-long", base..base + count);
}
