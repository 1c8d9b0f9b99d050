//! Running a KES server inside your own program: a [`Builder`] takes a configuration and
//! gives a running [`Server`], which you stop gracefully with [`Server::shutdown`] (or a
//! [`Shutdown`] handle from another thread). `kes-node server`, `server --dev` and `edge`
//! start their servers through this same builder.
//!
//! Two kinds of server, as on the command line:
//!
//! - [`Builder::node`]: a stateful node whose keys, policies and identities live in
//!   `DIR/kes.db`, sealed by the configured HSM (or one you hand in with [`Builder::hsm`],
//!   such as your own [`Hsm`] implementation).
//! - [`Builder::edge`]: a stateless edge server in front of a central key store (the config's
//!   `keystore:` section), caching keys in memory.
//!
//! The configuration is a [`Config`]: load it from a YAML file with [`crate::config::load`]
//! (and the edge server's sections with [`crate::config::load_edge`]), or fill one in. The
//! server listens on a `std::net::TcpListener` you bound ([`Builder::listener`]), or binds an
//! address ([`Builder::address`]; default: the config's `address`, else `0.0.0.0:7373`).
//!
//! ```no_run
//! use kes_node::server::Builder;
//!
//! let config = kes_node::config::load("kes.yml".as_ref())?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let server = Builder::node(config, "/var/lib/kes").listener(listener).start()?;
//! println!("KES on https://{}", server.local_addr());
//! // ... use it (see `kes_node::client`) ...
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An embedded server is a good guest: it serves on threads of its own (one event loop per
//! `limits.workers`, default one per core), leaves the host's signal handlers alone unless
//! asked ([`Builder::handle_signals`]), and neither re-executes the program nor locks its
//! memory unless asked ([`Builder::harden`], which the command line uses). It does read
//! `KES_HSM_KEY` like the command line does when the config's HSM is the software HSM; hand
//! in the HSM with [`Builder::hsm`] to rule that out. It writes the config's logs (`log.audit`
//! to standard output, `log.error` to standard error) and warnings to standard error.
//!
//! Stopping is graceful: the listening socket is closed at once (new connections are
//! refused), requests already received are answered (for at most five seconds), and when
//! [`Server::shutdown`] or [`Server::wait`] returns, every thread of the server has ended and
//! `kes.db` is closed, so it can be opened again (by a new server, or `kes-node hsm`).
mod edge;
pub(crate) mod hsm;
mod node;
mod reload;
mod settings;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook_mio::v1_0::Signals;

use crate::api::App;
use crate::config::{Config, EdgeConfig};
use crate::hsm::Hsm;
use crate::net::{stop, tls, Backend, Stopping};

/// Where a server listens unless told otherwise (upstream's default).
pub const DEFAULT_ADDR: &str = "0.0.0.0:7373";

/// Why a server could not start, or failed while serving. The message is one line that names
/// the problem (a config field, a file, the HSM); it never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(msg: String) -> Error {
        Error(msg)
    }
}

/// Which server, with what only it needs.
enum Kind {
    Node {
        dir: PathBuf,
        hsm: Option<Arc<dyn Hsm>>,
        join: bool,
    },
    Edge(Box<EdgeConfig>),
}

/// Where to listen.
enum Listen {
    /// `Builder::address`, else the config's, else [`DEFAULT_ADDR`].
    Address(Option<String>),
    Listener(TcpListener),
}

/// Configuration in, a running [`Server`] out (see the [module docs](self)).
pub struct Builder {
    config: Config,
    kind: Kind,
    listen: Listen,
    signals: bool,
    config_file: Option<PathBuf>,
    harden: bool,
    /// The command line's start-up lines on standard output ("listening on ...").
    announce: bool,
}

impl Builder {
    /// A stateful node keeping its state in `dir/kes.db` (created with the directory if
    /// missing), sealed by the HSM of `config.hsm` unless [`Builder::hsm`] gives one.
    pub fn node(config: Config, dir: impl Into<PathBuf>) -> Builder {
        Builder::new(
            config,
            Kind::Node {
                dir: dir.into(),
                hsm: None,
                join: false,
            },
        )
    }

    /// A stateless edge server: `config` for what every server has (TLS, admin, policies,
    /// logs, limits), `edge` for its key store, cache and `keys:` (both from one file:
    /// [`crate::config::load`] and [`crate::config::load_edge`]).
    pub fn edge(config: Config, edge: EdgeConfig) -> Builder {
        Builder::new(config, Kind::Edge(Box::new(edge)))
    }

    fn new(config: Config, kind: Kind) -> Builder {
        Builder {
            config,
            kind,
            listen: Listen::Address(None),
            signals: false,
            config_file: None,
            harden: false,
            announce: false,
        }
    }

    /// Serves on `listener`, a socket you bound (any port, `0` included). With more than one
    /// event loop (`limits.workers`) the loops share it. A stateful node is known to its
    /// cluster (even a cluster of one) by the address it first served on, which `kes.db`
    /// keeps: restart it on that address, port included, or it refuses to start.
    pub fn listener(mut self, listener: TcpListener) -> Builder {
        self.listen = Listen::Listener(listener);
        self
    }

    /// Binds `addr` (`IP:PORT`) instead of the config's `address`. A stateful node that is
    /// one of several must listen on the address its peers know it by.
    pub fn address(mut self, addr: impl Into<String>) -> Builder {
        self.listen = Listen::Address(Some(addr.into()));
        self
    }

    /// Seals `kes.db` with `hsm` instead of the config's `hsm:` section (a stateful node
    /// only; an edge server has no HSM).
    pub fn hsm(mut self, hsm: Arc<dyn Hsm>) -> Builder {
        if let Kind::Node { hsm: h, .. } = &mut self.kind {
            *h = Some(hsm);
        }
        self
    }

    /// A new node that starts empty and waits to be added to an existing cluster (`kes-node
    /// server --join`; a stateful node only).
    pub fn join(mut self, join: bool) -> Builder {
        if let Kind::Node { join: j, .. } = &mut self.kind {
            *j = join;
        }
        self
    }

    /// Whether the server stops on SIGINT and SIGTERM and reloads on SIGHUP (from
    /// [`Builder::config_file`]), as the command line does. Off by default: the signals are
    /// the host program's. When on, the host no longer gets SIGINT's default action.
    pub fn handle_signals(mut self, on: bool) -> Builder {
        self.signals = on;
        self
    }

    /// The file a SIGHUP reloads the config from (TLS certificates, logs, static policies;
    /// see `kes-node server`'s docs). Without it a SIGHUP reloads nothing.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.config_file = Some(path.into());
        self
    }

    /// Hardens the whole process as `kes-node server` does: takes
    /// `KES_HSM_KEY` (and the HSM's other secret variables) out of the environment by
    /// re-executing the program, turns core dumps off and locks all memory. Off by default:
    /// it changes the host program, and the re-execution starts it again from `main`.
    pub fn harden(mut self, on: bool) -> Builder {
        self.harden = on;
        self
    }

    /// Prints the command line's start-up lines (`kes-node: listening on ...`).
    pub(crate) fn announce(mut self) -> Builder {
        self.announce = true;
        self
    }

    /// Checks everything, opens the store (or the key store), starts listening and returns
    /// the server, which is then serving on threads of its own. Nothing is served if this
    /// fails; a stateful node checks what it can before it touches `kes.db`.
    pub fn start(self) -> Result<Server, Error> {
        if self.harden {
            let secrets = match &self.kind {
                Kind::Node { .. } => self.config.hsm.secret_vars(),
                Kind::Edge(_) => Vec::new(),
            };
            crate::harden::start(&secrets)?;
        }
        let workers = self.config.limits.worker_count();
        let (trigger, receivers) =
            stop::channel(workers).map_err(|e| format!("cannot set up shutdown: {e}"))?;
        let trigger = Arc::new(trigger);
        let loops_trigger = trigger.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // Everything is opened on the server's thread, which then serves: what it holds
        // (the store, the cluster) never crosses threads.
        let thread = std::thread::Builder::new()
            .name("kes-server".into())
            .spawn(move || {
                let ready = match self.prepare(workers) {
                    Ok(ready) => ready,
                    Err(err) => {
                        let _ = tx.send(Err(err));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(ready.local));
                ready.serve(receivers, loops_trigger)
            })
            .map_err(|e| format!("cannot start the server thread: {e}"))?;
        match rx.recv() {
            Ok(Ok(local)) => Ok(Server {
                local,
                workers,
                shutdown: Shutdown(trigger),
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => Err(match thread.join() {
                Err(_) => "the server thread panicked while starting".to_owned(),
                Ok(_) => "the server thread ended while starting".to_owned(),
            }
            .into()),
        }
    }

    /// Opens everything and binds: a server ready to serve.
    fn prepare(self, workers: usize) -> Result<Ready, Error> {
        // The address is checked now, bound only once the store is open.
        let listen = match self.listen {
            Listen::Listener(l) => Bind::Given(l),
            Listen::Address(addr) => {
                let addr = addr
                    .or_else(|| self.config.address.clone())
                    .unwrap_or_else(|| DEFAULT_ADDR.into());
                let parsed: SocketAddr = addr
                    .parse()
                    .map_err(|_| format!("invalid listen address '{addr}': expected IP:PORT"))?;
                Bind::Address(parsed)
            }
        };
        let listeners = move || -> Result<Vec<TcpListener>, String> {
            match listen {
                Bind::Given(listener) => share(listener, workers),
                Bind::Address(addr) => crate::net::workers::bind(addr, workers)
                    .map_err(|e| format!("cannot listen on {addr}: {e}")),
            }
        };
        let config = self.config;
        let peers = matches!(self.kind, Kind::Node { .. });
        // Checked before the store is opened.
        let tls = tls::Shared::new(tls::configs(&config, peers)?);
        let (app, backend, listeners) = match self.kind {
            Kind::Node { dir, hsm, join } => {
                let n = node::prepare(&config, &dir, hsm, join, listeners)?;
                (n.app, n.backend, n.listeners)
            }
            Kind::Edge(edge) => {
                let e = edge::prepare(&config, &edge, self.announce, listeners)?;
                (e.app, e.backend, e.listeners)
            }
        };
        let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
        // Before the listening line: whoever reads it may signal at once.
        let signals = match self.signals {
            true => {
                Some(stop::handle_signals().map_err(|e| format!("cannot handle signals: {e}"))?)
            }
            false => None,
        };
        if self.announce {
            if workers > 1 {
                println!("kes-node: {workers} event loops");
            }
            println!("kes-node: listening on {local}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        let reloader =
            reload::Reloader::new(self.config_file.as_deref(), tls.clone(), peers, &config);
        Ok(Ready {
            local,
            listeners,
            tls,
            app,
            backend,
            reloader,
            signals,
            config,
        })
    }
}

/// What is bound once the store is open.
enum Bind {
    Given(TcpListener),
    Address(SocketAddr),
}

/// `workers` listening sockets from one the caller bound: the same socket, shared.
fn share(listener: TcpListener, workers: usize) -> Result<Vec<TcpListener>, String> {
    let err = |e: std::io::Error| format!("cannot use the given listener: {e}");
    listener.set_nonblocking(true).map_err(err)?;
    let mut all = Vec::with_capacity(workers);
    for _ in 1..workers {
        all.push(listener.try_clone().map_err(err)?);
    }
    all.push(listener);
    Ok(all)
}

/// A server that is opened and bound: what its event loops run on.
struct Ready {
    local: SocketAddr,
    listeners: Vec<TcpListener>,
    tls: Arc<tls::Shared>,
    app: App,
    backend: Box<dyn Backend>,
    reloader: reload::Reloader,
    signals: Option<Signals>,
    config: Config,
}

impl Ready {
    /// Serves until stopped; then the store, the cluster and the key store are dropped.
    fn serve(
        mut self,
        receivers: Vec<stop::Receiver>,
        trigger: Arc<stop::Trigger>,
    ) -> Result<(), Error> {
        let stopping = Stopping {
            signals: self.signals.take(),
            receivers,
            trigger,
        };
        let reloader = &self.reloader;
        crate::net::workers::run(
            self.listeners,
            self.tls,
            &self.config.limits,
            &self.app,
            &mut *self.backend,
            &|app| reloader.reload(app),
            stopping,
        )
        .map_err(|e| Error(format!("server failed: {e}")))
    }
}

/// A running server. Dropping it stops it gracefully and waits, as [`Server::shutdown`] does
/// (without the error).
pub struct Server {
    local: SocketAddr,
    workers: usize,
    shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl Server {
    /// The address the server listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The number of event loops serving.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// A handle that stops the server from elsewhere (another thread, a signal handler of
    /// your own).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops the server gracefully and waits until it has stopped (see the module docs).
    pub fn shutdown(self) -> Result<(), Error> {
        self.shutdown.shutdown();
        self.wait()
    }

    /// Waits until the server stops: through a [`Shutdown`] handle, a signal (with
    /// [`Builder::handle_signals`]), or an error, which is returned.
    pub fn wait(mut self) -> Result<(), Error> {
        join(self.thread.take())
    }
}

fn join(thread: Option<JoinHandle<Result<(), Error>>>) -> Result<(), Error> {
    match thread.map(JoinHandle::join) {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(Error("the server thread panicked".into())),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown.shutdown();
            let _ = join(self.thread.take());
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Stops a [`Server`] gracefully from anywhere; cheap to clone. Returns at once: wait with
/// [`Server::wait`]. Stopping a stopped server does nothing.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<stop::Trigger>);

impl Shutdown {
    /// Begins the graceful shutdown.
    pub fn shutdown(&self) {
        self.0.stop();
    }
}
