//! kes-node: the std shell around kes-core.
//!
//! A request travels one way, each stage in its own module:
//! socket ([`net`], mio) -> TLS (rustls) -> HTTP framing ([`http`], httparse) -> identity and
//! policy ([`auth`]) -> route handler ([`api`]) -> [`store`] (redb) -> response encoding.
//! The edge server ([`edge`]) shares every stage but the store: its keys live in a central key
//! store behind a cache.
//!
//! As a library: [`server::Builder`] runs a stateful node or an edge server inside another
//! program (the `kes-node` command starts its servers the same way), [`config`] loads the YAML
//! configuration, [`client`] talks to any KES server, and [`hsm::Hsm`] plugs in an HSM of your
//! own. See `examples/embedded_server.rs` and `examples/toy_hsm.rs`.
#![forbid(unsafe_code)]

pub mod api;
pub mod apicert;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod edge;
pub mod harden;
pub mod hsm;
pub mod http;
pub mod identity;
pub mod item;
pub mod net;
pub mod random;
pub mod records;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod sysinfo;
pub mod timefmt;
