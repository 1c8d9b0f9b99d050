//! kes-node: the std shell around kes-core.
//!
//! A request travels one way, each stage in its own module:
//! socket (`net`, mio) -> TLS (rustls) -> HTTP framing (`http`, httparse) -> identity and
//! policy (`auth`) -> route handler (`api`) -> `store` (redb) -> response encoding.
//! The edge server (`edge`) shares every stage but the store: its keys live in a central key
//! store behind a cache. (These modules are private: the library's surface is below.)
//!
//! As a library: [`server::Builder`] runs a stateful node or an edge server inside another
//! program (the `kes-node` command starts its servers the same way), [`config`] loads the YAML
//! configuration, [`client`] talks to any KES server, and [`hsm::Hsm`] plugs in an HSM of your
//! own. See `examples/embedded_server.rs` and `examples/toy_hsm.rs`.
#![forbid(unsafe_code)]
// The surface is the four modules below (and two hidden ones): nothing else is `pub`, and all
// of it is documented. (Crate attributes, not a `[lints]` table: that would bind the
// integration tests too, which call libc to signal processes.)
#![warn(missing_docs, unreachable_pub)]

// The library surface: what a program embedding a server or talking to one uses.
pub mod client;
pub mod config;
pub mod hsm;
pub mod server;

// The `kes-node` command (`main.rs` is a crate of its own): not part of the surface.
#[doc(hidden)]
pub mod cli;
// The cluster simulator of tests/sim.rs and the fuzz targets: not part of the surface.
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod sim;

mod api;
mod apicert;
mod auth;
#[cfg(feature = "aws")]
mod aws;
mod edge;
mod harden;
mod http;
mod identity;
mod net;
mod random;
mod sysinfo;
mod timefmt;

// The simulator drives the replica and the store through their `pub` items, so those stay
// `pub` (reachable through `sim` only); built without it, they are crate-private in effect,
// and what only the simulator calls is unused.
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub, dead_code))]
mod cluster;
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub, dead_code))]
mod command;
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub, dead_code))]
mod item;
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub, dead_code))]
mod records;
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub, dead_code))]
mod store;
