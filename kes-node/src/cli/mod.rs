//! The command line: `kes-node server`, `edge` and `hsm` run a server and manage its HSMs;
//! the other subcommands are a KES client (keys, policies, identities, secrets, enclaves,
//! logs, status, cluster).
mod check;
mod client;
mod dev;
mod edge;
mod hsm;
mod recover;
mod reload;
mod server;
mod settings;
mod startup;

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
