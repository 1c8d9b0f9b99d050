//! kes-node: the std shell around kes-core.
#![forbid(unsafe_code)]
