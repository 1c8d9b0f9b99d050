//! The command line: `kes-node server`, `edge` and `hsm` run a server and manage its HSMs;
//! the other subcommands are a KES client (keys, policies, identities, secrets, enclaves,
//! logs, status, cluster).
mod check;
mod client;
mod dev;
mod edge;
mod hsm;
mod recover;
mod server;

use argh::FromArgs;

/// kes-rs: a key management server for object storage, compatible with MinIO KES.
#[derive(FromArgs)]
pub struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Server(server::ServerArgs),
    Edge(edge::EdgeArgs),
    Hsm(hsm::HsmArgs),
    Key(client::key::KeyArgs),
    Policy(client::policy::PolicyArgs),
    Identity(client::identity::IdentityArgs),
    Secret(client::secret::SecretArgs),
    Enclave(client::enclave::EnclaveArgs),
    Log(client::log::LogArgs),
    Status(client::status::StatusArgs),
    Cluster(client::cluster::ClusterArgs),
    Bench(client::bench::BenchArgs),
    Restore(server::RestoreArgs),
    Check(check::CheckArgs),
}

/// Runs the parsed command. Errors are one line, printed by `main`.
pub fn run(args: Args) -> Result<(), String> {
    match args.command {
        Command::Server(a) => server::run(a),
        Command::Edge(a) => edge::run(a),
        Command::Hsm(a) => hsm::run(a),
        Command::Key(a) => client::key::run(a),
        Command::Policy(a) => client::policy::run(a),
        Command::Identity(a) => client::identity::run(a),
        Command::Secret(a) => client::secret::run(a),
        Command::Enclave(a) => client::enclave::run(a),
        Command::Log(a) => client::log::run(a),
        Command::Status(a) => client::status::run(a),
        Command::Cluster(a) => client::cluster::run(a),
        Command::Bench(a) => client::bench::run(a),
        Command::Restore(a) => server::restore(a),
        Command::Check(a) => check::run(a),
    }
}

/// A new random SoftHSM key string `kes:v1:aes256:<base64>`.
pub fn new_soft_hsm_key() -> String {
    use kes_core::crypto::{Cipher, SecretKey};
    let hsm =
        kes_core::hsm::SoftHsm::from_key(SecretKey::new(Cipher::Aes256, crate::random::bytes()));
    hsm.encode().as_str().to_owned()
}

/// `--workers N` replaces `limits.workers` (N must be positive).
fn override_workers(limits: &mut crate::net::Limits, workers: Option<usize>) -> Result<(), String> {
    match workers {
        Some(0) => Err("--workers: expected a positive number".into()),
        Some(n) => {
            limits.workers = Some(n);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Runs a server as a command: hardened, stopped by SIGINT/SIGTERM, reloaded by SIGHUP, its
/// start-up lines on standard output.
fn serve(builder: crate::server::Builder) -> Result<(), String> {
    let server = start(builder.harden(true))?;
    finish(server)
}

/// Starts a server as [`serve`] does, except hardening (the caller's choice), and returns it
/// running.
fn start(builder: crate::server::Builder) -> Result<crate::server::Server, String> {
    let server = builder
        .handle_signals(true)
        .announce()
        .start()
        .map_err(|e| e.to_string())?;
    Ok(server)
}

/// Waits for a started server to stop.
fn finish(server: crate::server::Server) -> Result<(), String> {
    server.wait().map_err(|e| e.to_string())?;
    println!("kes-node: stopped");
    Ok(())
}
