//! The records of the state: keys, policies, identities, secrets and enclaves.
//!
//! They sit below both the commands that carry them ([`crate::command`]) and the store that
//! keeps them ([`crate::store`]), so that neither has to import the other to name them.
use std::time::Duration;

use kes_core::crypto::{HmacKey, SecretKey};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A key as stored: the secret key, its HMAC key (absent for keys imported from legacy
/// formats) and who created it when.
#[derive(Clone)]
pub struct KeyRecord {
    pub key: SecretKey,
    pub hmac: Option<HmacKey>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

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
