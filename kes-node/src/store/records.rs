//! The records the store keeps besides keys: policies, identities, secrets and enclaves.
use std::time::Duration;

use kes_core::crypto::SecretKey;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A policy: allowed and denied URL-path patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRecord {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// An identity of an enclave: its policy (or enclave-admin rights), expiry and the children
/// it created (deleted with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRecord {
    pub policy: String,
    pub admin: bool,
    /// The requested lifetime; zero for identities that do not expire.
    pub ttl: Duration,
    pub expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// The identity that created this one (its parent).
    pub created_by: String,
    pub children: Vec<String>,
}

impl IdentityRecord {
    /// True once `now` is past the expiry.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// A secret value (up to 1 MB).
#[derive(Clone)]
pub struct SecretRecord {
    pub value: Zeroizing<Vec<u8>>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// An enclave: a tenant with its own keys, policies, identities and secrets, all encrypted
/// with the enclave's own data key.
#[derive(Clone)]
pub struct EnclaveRecord {
    pub key: SecretKey,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}
