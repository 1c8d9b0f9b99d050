//! The reference model of who may do what (README "Who may do what", spec §2.2, §3.1, §10.5),
//! written from the rules, not from the server's code: enclaves with policies and identities,
//! each identity with its policy, admin flag, creator and expiry. [`Model::expect`] says how the
//! server must answer a step (status and message), [`Model::apply`] changes the model as a
//! successful step changes the server, [`Model::allowed`] says whether an actor may call a path.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use time::OffsetDateTime;

/// Actor 0 is the system admin (`admin.identity`); the others are client certificates.
pub const SYSADMIN: usize = 0;

pub const NOT_ALLOWED: &str = "not authorized: insufficient permissions";
pub const NOT_SUBSET: &str = "policy is not a subset of parent policy";
pub const NO_ADMIN_CHILD: &str = "insufficient permissions to create admin identity";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Ident {
    /// Empty for enclave admins.
    pub policy: String,
    pub admin: bool,
    pub created_by: usize,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, Default)]
pub struct Enclave {
    pub policies: BTreeMap<String, Policy>,
    pub identities: BTreeMap<usize, Ident>,
}

/// One operation of a sequence.
#[derive(Clone, Debug)]
pub enum Op {
    CreatePolicy {
        name: String,
        policy: Policy,
    },
    DeletePolicy {
        name: String,
    },
    CreateIdentity {
        target: usize,
        policy: String,
        admin: bool,
        ttl: Option<&'static str>,
    },
    DeleteIdentity {
        target: usize,
    },
    /// `POST /v1/policy/assign/<policy>` `{"identity": target}`.
    Assign {
        policy: String,
        target: usize,
    },
    CreateEnclave,
    DeleteEnclave,
    /// Let the next expiry pass (real time).
    Expire,
}

/// An actor does an operation in an enclave.
#[derive(Clone, Debug)]
pub struct Step {
    pub actor: usize,
    pub enclave: String,
    pub op: Op,
}

/// How the server must answer: a status and, for errors, the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub status: u16,
    pub message: Option<String>,
}

impl Expect {
    fn ok() -> Expect {
        Expect {
            status: 200,
            message: None,
        }
    }

    fn err(status: u16, message: &str) -> Expect {
        Expect {
            status,
            message: Some(message.to_owned()),
        }
    }
}

/// `match(pattern, s)` of spec §3.1: a trailing `*` matches a prefix, else exact.
fn matches(pattern: &str, s: &str) -> bool {
    match pattern.strip_suffix('*') {
        _ if pattern.is_empty() => false,
        Some(prefix) => s.starts_with(prefix),
        None => s == pattern,
    }
}

/// Spec §3.1 `verify`: deny wins, then some allow must match.
pub fn verify(p: &Policy, path: &str) -> bool {
    !p.deny.iter().any(|d| matches(d, path)) && p.allow.iter().any(|a| matches(a, path))
}

/// Spec §3.1 `IsSubset(p, o)`.
pub fn is_subset(p: &Policy, o: &Policy) -> bool {
    p.allow.iter().all(|a| {
        o.allow.iter().any(|oa| matches(oa, a))
            && o.deny
                .iter()
                .filter(|d| matches(a, d))
                .all(|d| p.deny.iter().any(|pd| matches(pd, d)))
    })
}

/// What an identity may do right now.
enum Grant<'a> {
    Admin,
    /// Its policy and each non-admin creator's (None: a policy that does not exist).
    Policies(Vec<Option<&'a Policy>>),
}

/// The model: the enclaves of one sequence, and the identities (hex) of the actors.
pub struct Model {
    pub enclaves: BTreeMap<String, Enclave>,
    pub ids: Vec<String>,
}

impl Model {
    pub fn new(ids: Vec<String>) -> Model {
        Model {
            enclaves: BTreeMap::new(),
            ids,
        }
    }

    /// The creators of `a` whose policies limit it (non-admins, nearest first), as far as
    /// the chain goes: up to an admin, a creator without a record, or a repetition.
    pub fn limiting_creators(&self, enclave: &str, a: usize) -> Vec<usize> {
        let Some(e) = self.enclaves.get(enclave) else {
            return Vec::new();
        };
        let Some(rec) = e.identities.get(&a) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if rec.admin {
            return out;
        }
        let mut seen = BTreeSet::from([a]);
        let mut creator = rec.created_by;
        while seen.insert(creator) {
            match e.identities.get(&creator) {
                Some(p) if !p.admin => {
                    out.push(creator);
                    creator = p.created_by;
                }
                _ => break,
            }
        }
        out
    }

    /// The chain's rights, unless the identity (or a creator on its chain, admins included)
    /// does not exist or has expired.
    fn grant(&self, enclave: &str, a: usize, now: OffsetDateTime) -> Option<Grant<'_>> {
        let e = self.enclaves.get(enclave)?;
        let rec = e.identities.get(&a)?;
        let mut expiry = rec.expires_at;
        let grant = if rec.admin {
            Grant::Admin
        } else {
            let mut policies = vec![e.policies.get(&rec.policy)];
            let mut seen = BTreeSet::from([a]);
            let mut creator = rec.created_by;
            while seen.insert(creator) {
                let Some(p) = e.identities.get(&creator) else {
                    break;
                };
                expiry = match (expiry, p.expires_at) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                if p.admin {
                    break;
                }
                policies.push(e.policies.get(&p.policy));
                creator = p.created_by;
            }
            Grant::Policies(policies)
        };
        if expiry.is_some_and(|t| now >= t) {
            return None;
        }
        Some(grant)
    }

    /// True if `a` may call `path` (a route that any identity may call with the right policy).
    pub fn allowed(&self, enclave: &str, a: usize, path: &str, now: OffsetDateTime) -> bool {
        if a == SYSADMIN {
            return true;
        }
        match self.grant(enclave, a, now) {
            None => false,
            Some(Grant::Admin) => true,
            Some(Grant::Policies(ps)) => ps.iter().all(|p| p.is_some_and(|p| verify(p, path))),
        }
    }

    fn ident(&self, enclave: &str, a: usize) -> Option<&Ident> {
        self.enclaves.get(enclave)?.identities.get(&a)
    }

    /// True if `ancestor` is on `id`'s chain of creators.
    fn descends_from(&self, enclave: &str, id: usize, ancestor: usize) -> bool {
        let Some(e) = self.enclaves.get(enclave) else {
            return false;
        };
        let mut seen = BTreeSet::from([id]);
        let mut creator = match e.identities.get(&id) {
            Some(r) => r.created_by,
            None => return false,
        };
        while seen.insert(creator) {
            if creator == ancestor {
                return true;
            }
            creator = match e.identities.get(&creator) {
                Some(r) => r.created_by,
                None => return false,
            };
        }
        false
    }

    /// True if policy `child` and the policy of `a` both exist and the first is within the
    /// second.
    fn within(&self, enclave: &str, child: &str, a: usize) -> bool {
        let Some(e) = self.enclaves.get(enclave) else {
            return false;
        };
        let (Some(c), Some(own)) = (
            e.policies.get(child),
            self.ident(enclave, a)
                .and_then(|r| e.policies.get(&r.policy)),
        ) else {
            return false;
        };
        is_subset(c, own)
    }

    /// The request a step makes: method, path and JSON body.
    pub fn request(&self, step: &Step) -> (&'static str, String, Option<serde_json::Value>) {
        use serde_json::json;
        let e = &step.enclave;
        match &step.op {
            Op::CreatePolicy { name, policy } => (
                "PUT",
                format!("/v1/policy/create/{name}"),
                Some(json!({"allow": policy.allow, "deny": policy.deny})),
            ),
            Op::DeletePolicy { name } => ("DELETE", format!("/v1/policy/delete/{name}"), None),
            Op::CreateIdentity {
                target,
                policy,
                admin,
                ttl,
            } => (
                "PUT",
                format!("/v1/identity/create/{}", self.ids[*target]),
                Some(json!({"policy": policy, "admin": admin, "ttl": ttl.unwrap_or("")})),
            ),
            Op::DeleteIdentity { target } => (
                "DELETE",
                format!("/v1/identity/delete/{}", self.ids[*target]),
                None,
            ),
            Op::Assign { policy, target } => (
                "POST",
                format!("/v1/policy/assign/{policy}"),
                Some(json!({"identity": self.ids[*target]})),
            ),
            Op::CreateEnclave => ("PUT", format!("/v1/enclave/create/{e}"), None),
            Op::DeleteEnclave => ("DELETE", format!("/v1/enclave/delete/{e}"), None),
            Op::Expire => ("GET", "/version".into(), None),
        }
    }

    /// How the server must answer `step` at `now`.
    pub fn expect(&self, step: &Step, now: OffsetDateTime) -> Expect {
        let (a, e) = (step.actor, step.enclave.as_str());
        let (_, path, _) = self.request(step);
        let exists = self.enclaves.contains_key(e);
        let no_enclave = || Expect::err(404, "enclave does not exist");
        match &step.op {
            Op::Expire => Expect::ok(),
            Op::CreateEnclave | Op::DeleteEnclave if a != SYSADMIN => Expect::err(403, NOT_ALLOWED),
            _ if !self.allowed(e, a, &path, now) => Expect::err(403, NOT_ALLOWED),
            Op::CreateEnclave if exists => Expect::err(400, "enclave already exists"),
            Op::DeleteEnclave if !exists => no_enclave(),
            Op::CreateEnclave | Op::DeleteEnclave => Expect::ok(),
            Op::CreatePolicy { .. } | Op::DeletePolicy { .. } if !exists => no_enclave(),
            Op::CreatePolicy { name, .. } => {
                if self.enclaves[e].policies.contains_key(name) {
                    Expect::err(400, "policy already exists")
                } else {
                    Expect::ok()
                }
            }
            Op::DeletePolicy { name } => {
                if self.enclaves[e].policies.contains_key(name) {
                    Expect::ok()
                } else {
                    Expect::err(404, "policy does not exist")
                }
            }
            Op::CreateIdentity {
                target,
                policy,
                admin,
                ..
            } => self.expect_create_identity(e, a, *target, policy, *admin),
            Op::DeleteIdentity { target } => {
                if *target == SYSADMIN {
                    Expect::err(400, "the admin identity cannot be deleted")
                } else if !exists {
                    no_enclave()
                } else if self.ident(e, *target).is_none() {
                    Expect::err(404, "identity does not exist")
                } else {
                    Expect::ok()
                }
            }
            Op::Assign { policy, target } => self.expect_assign(e, a, *target, policy),
        }
    }

    fn expect_create_identity(
        &self,
        e: &str,
        a: usize,
        target: usize,
        policy: &str,
        admin: bool,
    ) -> Expect {
        if target == SYSADMIN {
            return Expect::err(400, "identity already exists");
        }
        if a != SYSADMIN {
            let caller_admin = self.ident(e, a).is_some_and(|r| r.admin);
            if admin && !caller_admin {
                return Expect::err(403, NO_ADMIN_CHILD);
            }
            if !admin && !caller_admin && !self.within(e, policy, a) {
                return Expect::err(403, NOT_SUBSET);
            }
        }
        let Some(enclave) = self.enclaves.get(e) else {
            return Expect::err(404, "enclave does not exist");
        };
        if !admin && !enclave.policies.contains_key(policy) {
            return Expect::err(404, "policy does not exist");
        }
        if enclave.identities.contains_key(&target) {
            return Expect::err(400, "identity already exists");
        }
        Expect::ok()
    }

    fn expect_assign(&self, e: &str, a: usize, target: usize, policy: &str) -> Expect {
        if target == SYSADMIN {
            return Expect::err(400, "cannot assign policy to system admin");
        }
        if target == a {
            return Expect::err(403, "identity cannot assign policy to itself");
        }
        let Some(enclave) = self.enclaves.get(e) else {
            return Expect::err(404, "enclave does not exist");
        };
        if !enclave.policies.contains_key(policy) {
            return Expect::err(404, "policy does not exist");
        }
        let caller_admin = a == SYSADMIN || self.ident(e, a).is_some_and(|r| r.admin);
        if caller_admin {
            return Expect::ok();
        }
        let Some(t) = enclave.identities.get(&target) else {
            return Expect::err(404, "identity does not exist");
        };
        if t.admin {
            return Expect::err(403, "cannot assign policy to an enclave admin");
        }
        if !self.descends_from(e, target, a) {
            return Expect::err(
                403,
                &format!(
                    "cannot assign policy to '{}': it was not created by the caller",
                    self.ids[target]
                ),
            );
        }
        if !self.within(e, policy, a) {
            return Expect::err(403, NOT_SUBSET);
        }
        Expect::ok()
    }

    /// Applies a step the server answered with success. `expires_at` is what the server
    /// reports for the identity a create or an admin's assignment wrote.
    pub fn apply(&mut self, step: &Step, expires_at: Option<OffsetDateTime>) {
        let (a, name) = (step.actor, step.enclave.clone());
        match &step.op {
            Op::Expire => {}
            Op::CreateEnclave => {
                self.enclaves.insert(name, Enclave::default());
            }
            Op::DeleteEnclave => {
                self.enclaves.remove(&name);
            }
            Op::CreatePolicy { name: p, policy } => {
                let e = self.enclaves.get_mut(&name).expect("enclave");
                e.policies.insert(p.clone(), policy.clone());
            }
            Op::DeletePolicy { name: p } => {
                let e = self.enclaves.get_mut(&name).expect("enclave");
                e.policies.remove(p);
            }
            Op::CreateIdentity {
                target,
                policy,
                admin,
                ..
            } => {
                let e = self.enclaves.get_mut(&name).expect("enclave");
                e.identities.insert(
                    *target,
                    Ident {
                        policy: if *admin {
                            String::new()
                        } else {
                            policy.clone()
                        },
                        admin: *admin,
                        created_by: a,
                        expires_at,
                    },
                );
            }
            Op::DeleteIdentity { target } => {
                let e = self.enclaves.get_mut(&name).expect("enclave");
                // The identity and every identity it created, transitively.
                let mut doomed = BTreeSet::from([*target]);
                let mut queue = VecDeque::from([*target]);
                while let Some(id) = queue.pop_front() {
                    for (child, rec) in &e.identities {
                        if rec.created_by == id && doomed.insert(*child) {
                            queue.push_back(*child);
                        }
                    }
                }
                e.identities.retain(|id, _| !doomed.contains(id));
            }
            Op::Assign { policy, target } => {
                let caller_admin = a == SYSADMIN || self.ident(&name, a).is_some_and(|r| r.admin);
                let e = self.enclaves.get_mut(&name).expect("enclave");
                if caller_admin {
                    e.identities.insert(
                        *target,
                        Ident {
                            policy: policy.clone(),
                            admin: false,
                            created_by: a,
                            expires_at,
                        },
                    );
                } else {
                    e.identities.get_mut(target).expect("assignee").policy = policy.clone();
                }
            }
        }
    }

    /// Every expiry in the model.
    pub fn expiries(&self) -> impl Iterator<Item = OffsetDateTime> + '_ {
        self.enclaves
            .values()
            .flat_map(|e| e.identities.values().filter_map(|r| r.expires_at))
    }
}
