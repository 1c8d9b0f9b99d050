//! # kes-core
//!
//! The pure heart of kes-rs: everything here is a function of its inputs. No I/O, no clock,
//! no randomness of its own (callers pass random bytes and the current time in), no heap unless
//! the `alloc` feature is on. That keeps the crate linkable into firmware and fuzzable.
//!
//! - [`crypto`]: secret keys, the KES ciphertext format (and its legacy variants), HMAC keys.
//! - [`hsm`]: the software HSM (`kes:v1:aes256:...`), its key derivation and root-key sealing.
//! - [`name`]: validation of key, policy and identity names and of listing patterns.
//! - [`policy`]: allow/deny path patterns and the subset rule.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod consensus;
pub mod crypto;
pub mod hsm;
pub mod name;
pub mod policy;
