//! What an identity may do, resolved from its chain of creators, and a cache of it.
//!
//! The rule (README "Policies, identities, enclaves, secrets"): a non-admin identity may call a
//! path only if its own policy allows it *and* the policy of every non-admin identity on its
//! `created_by` chain allows it, and only while neither it nor any identity on that chain has
//! expired. The chain ends at a creator that is an enclave admin (an admin may grant anything
//! in its enclave) or that has no record in the enclave (the system admin, or the config).
//! Because the rule is evaluated on every request against the current state, no later change
//! (a policy deleted and created again wider, a parent re-assigned a smaller policy, an expired
//! parent) can leave a child with more than its creators have.
//!
//! Resolving a chain costs a database read per identity and policy on it, so the result is
//! cached per (enclave, identity) and the whole cache is dropped whenever the store commits
//! anything ([`Store::commits`]): a resolved grant is only ever used against the state it was
//! resolved from. Expiry is checked per request against the clock, never cached.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::records::PolicyRecord;
use crate::store::{Store, StoreError};

/// The most (enclave, identity) pairs cached; a full cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// The rights of one identity of one enclave.
#[derive(Debug)]
pub(crate) struct Grant {
    /// An enclave admin: everything in its enclave but enclave creation and deletion.
    pub admin: bool,
    /// The earliest expiry on the chain (the identity's own and its creators').
    pub expires_at: Option<OffsetDateTime>,
    /// The identity's policy, then each non-admin creator's, nearest first. A policy that does
    /// not exist is empty here (it allows nothing).
    pub policies: Vec<PolicyRecord>,
}

impl Grant {
    /// True once `now` is past the earliest expiry on the chain.
    pub(crate) fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// True if every policy on the chain allows `path` (enclave admins: always).
    pub(crate) fn allows(&self, path: &str) -> bool {
        self.admin
            || (!self.policies.is_empty()
                && self.policies.iter().all(|p| {
                    kes_core::policy::verify(
                        p.allow.iter().map(String::as_str),
                        p.deny.iter().map(String::as_str),
                        path,
                    )
                }))
    }
}

/// Resolves the grant of `id` in `enclave` from the store; `None` if the identity (or the
/// enclave) does not exist.
pub(crate) fn resolve(store: &Store, enclave: &str, id: &str) -> Result<Option<Grant>, StoreError> {
    let record = match store.identity(enclave, id) {
        Ok(r) => r,
        Err(StoreError::NotFound) | Err(StoreError::NoEnclave) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut grant = Grant {
        admin: record.admin,
        expires_at: record.expires_at,
        policies: Vec::new(),
    };
    if record.admin {
        return Ok(Some(grant));
    }
    grant
        .policies
        .push(policy_or_empty(store, enclave, &record.policy)?);
    let mut seen = std::collections::HashSet::from([id.to_owned()]);
    let mut creator = record.created_by;
    // A cycle (only an old re-assignment could have made one) ends the walk: every identity on
    // it is already counted.
    while seen.insert(creator.clone()) {
        let parent = match store.identity(enclave, &creator) {
            Ok(p) => p,
            Err(StoreError::NotFound) => break,
            Err(err) => return Err(err),
        };
        grant.expires_at = match (grant.expires_at, parent.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if parent.admin {
            break;
        }
        grant
            .policies
            .push(policy_or_empty(store, enclave, &parent.policy)?);
        creator = parent.created_by;
    }
    Ok(Some(grant))
}

fn policy_or_empty(store: &Store, enclave: &str, name: &str) -> Result<PolicyRecord, StoreError> {
    match store.policy(enclave, name) {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Ok(PolicyRecord {
            allow: Vec::new(),
            deny: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: String::new(),
        }),
        Err(err) => Err(err),
    }
}

/// Resolved grants by enclave and identity, valid for one state of the store.
#[derive(Default)]
pub(crate) struct Grants {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The [`Store::commits`] the entries were resolved at.
    commits: u64,
    len: usize,
    by_enclave: HashMap<String, HashMap<String, Option<Arc<Grant>>>>,
}

impl Inner {
    fn clear(&mut self, commits: u64) {
        self.by_enclave.clear();
        self.len = 0;
        self.commits = commits;
    }
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The grant of `id` in `enclave` as the store stands now (`None`: no such identity).
    pub(crate) fn lookup(
        &self,
        store: &Store,
        enclave: &str,
        id: &str,
    ) -> Result<Option<Arc<Grant>>, StoreError> {
        // No enclave can have a name that is not a valid name (enclave creation checks it), so
        // nobody is known there; and the name comes from a request header: cached, any
        // client could make the cache hold 10,000 header-long names.
        if !kes_core::name::valid_name(enclave) {
            return Ok(None);
        }
        let commits = store.commits();
        {
            let mut inner = self.lock();
            if inner.commits != commits {
                inner.clear(commits);
            } else if let Some(hit) = inner.by_enclave.get(enclave).and_then(|m| m.get(id)) {
                return Ok(hit.clone());
            }
        }
        let grant = resolve(store, enclave, id)?.map(Arc::new);
        let mut inner = self.lock();
        // Cached only if nothing committed while it was read (else it may mix two states).
        if inner.commits == commits && store.commits() == commits {
            if inner.len >= MAX_ENTRIES {
                inner.clear(commits);
            }
            inner.len += 1;
            inner
                .by_enclave
                .entry(enclave.to_owned())
                .or_default()
                .insert(id.to_owned(), grant.clone());
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::records::IdentityRecord;
    use crate::store::DEFAULT_ENCLAVE as D;

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn policy(store: &Store, name: &str, allow: &[&str]) {
        store
            .apply(&Command::CreatePolicy {
                enclave: D.into(),
                name: name.into(),
                policy: PolicyRecord {
                    allow: allow.iter().map(|s| s.to_string()).collect(),
                    deny: Vec::new(),
                    created_at: OffsetDateTime::UNIX_EPOCH,
                    created_by: String::new(),
                },
                replace: true,
            })
            .unwrap();
    }

    fn record(policy: &str, by: &str) -> IdentityRecord {
        IdentityRecord {
            policy: policy.into(),
            admin: false,
            ttl: std::time::Duration::ZERO,
            expires_at: None,
            created_at: crate::timefmt::now(),
            created_by: by.into(),
            children: Vec::new(),
        }
    }

    fn child(
        store: &Store,
        who: &str,
        rec: IdentityRecord,
        assign: bool,
    ) -> Result<(), StoreError> {
        store.apply(&Command::ChildIdentity {
            enclave: D.into(),
            identity: who.into(),
            record: rec,
            assign,
        })
    }

    /// A chain admin -> a -> b: b may do what both policies allow, as the store stands now.
    #[test]
    fn a_grant_is_the_intersection_along_the_chain_and_follows_every_commit() {
        let store = Store::in_memory().unwrap();
        let grants = Grants::default();
        let (admin, a, b) = (id('f'), id('a'), id('b'));
        policy(&store, "wide", &["/v1/key/*", "/v1/identity/create/*"]);
        policy(&store, "narrow", &["/v1/key/generate/*"]);
        store
            .apply(&Command::CreateIdentity {
                enclave: D.into(),
                identity: a.clone(),
                record: record("wide", &admin),
                replace: false,
            })
            .unwrap();
        child(&store, &b, record("narrow", &a), false).unwrap();
        let g = grants.lookup(&store, D, &b).unwrap().unwrap();
        assert_eq!(g.policies.len(), 2);
        assert!(g.allows("/v1/key/generate/k"));
        assert!(!g.allows("/v1/key/create/k"));

        // The child's policy replaced by everything: still bounded by a's.
        policy(&store, "narrow", &["/v1/*"]);
        let g = grants.lookup(&store, D, &b).unwrap().unwrap();
        assert!(g.allows("/v1/key/create/k"));
        assert!(!g.allows("/v1/secret/create/s"));
        // a's policy gone: b may do nothing.
        store
            .apply(&Command::DeletePolicy {
                enclave: D.into(),
                name: "wide".into(),
            })
            .unwrap();
        let g = grants.lookup(&store, D, &b).unwrap().unwrap();
        assert!(!g.allows("/v1/key/generate/k"));
        assert!(grants.lookup(&store, D, &id('c')).unwrap().is_none());
        assert!(grants.lookup(&store, "nowhere", &b).unwrap().is_none());
    }

    /// Enclave names come from a request header: one that no enclave can have is answered
    /// without a cache entry (the cache holds only names of valid length and characters).
    #[test]
    fn names_no_enclave_can_have_are_not_cached() {
        let store = Store::in_memory().unwrap();
        let grants = Grants::default();
        for enclave in ["e".repeat(81), "a/b".into(), "t\u{fffd}".into(), "".into()] {
            assert!(grants.lookup(&store, &enclave, &id('a')).unwrap().is_none());
        }
        assert_eq!(grants.lock().len, 0);
        assert!(grants.lookup(&store, "t1", &id('a')).unwrap().is_none());
        assert_eq!(grants.lock().len, 1);
    }

    /// The checks that hold where a change applies, whatever was ordered before it: a deleted
    /// creator creates nothing (no orphan outlives its deleted parent); an assignment by an
    /// identity reaches only its descendants, never an enclave admin, never creates.
    #[test]
    fn child_identity_changes_are_checked_where_they_apply() {
        let store = Store::in_memory().unwrap();
        let (admin, a, b, c, boss) = (id('f'), id('a'), id('b'), id('c'), id('e'));
        policy(&store, "p", &["/v1/*"]);
        for (who, admin_flag) in [(&a, false), (&c, false), (&boss, true)] {
            let mut rec = record("p", &admin);
            rec.admin = admin_flag;
            store
                .apply(&Command::CreateIdentity {
                    enclave: D.into(),
                    identity: who.clone(),
                    record: rec,
                    replace: false,
                })
                .unwrap();
        }
        child(&store, &b, record("p", &a), false).unwrap();
        let refused = |r: Result<(), StoreError>| match r {
            Err(StoreError::Refused(why)) => why,
            other => panic!("not refused: {other:?}"),
        };
        // Not to a non-descendant, nor an enclave admin; unknown identities stay unknown.
        refused(child(&store, &c, record("p", &a), true));
        refused(child(&store, &boss, record("p", &a), true));
        assert!(matches!(
            child(&store, &id('d'), record("p", &a), true),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.identity(D, &id('d')),
            Err(StoreError::NotFound)
        ));
        // To a descendant: only the policy changes.
        policy(&store, "q", &["/v1/key/*"]);
        let mut rec = record("q", &a);
        rec.expires_at = Some(OffsetDateTime::UNIX_EPOCH);
        child(&store, &b, rec, true).unwrap();
        let now = store.identity(D, &b).unwrap();
        assert_eq!(
            (now.policy.as_str(), now.created_by.as_str(), now.expires_at),
            ("q", a.as_str(), None)
        );
        // The creator is deleted before its create applies: refused.
        store
            .apply(&Command::DeleteIdentity {
                enclave: D.into(),
                identity: a.clone(),
            })
            .unwrap();
        refused(child(&store, &id('d'), record("p", &a), false));
        assert!(matches!(
            store.identity(D, &id('d')),
            Err(StoreError::NotFound)
        ));
        // An expired creator creates nothing either.
        let mut old = record("p", &admin);
        old.expires_at = Some(crate::timefmt::now() - std::time::Duration::from_secs(1));
        store
            .apply(&Command::CreateIdentity {
                enclave: D.into(),
                identity: a.clone(),
                record: old,
                replace: false,
            })
            .unwrap();
        refused(child(&store, &id('d'), record("p", &a), false));
    }
}
