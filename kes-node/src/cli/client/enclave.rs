//! `kes-node enclave ...`: create, describe, list and delete enclaves (stateful servers, cluster
//! admin only for create and delete, spec §10.7).
use argh::FromArgs;

use super::{client_command, for_each_name, print_fields, print_json, print_names};

/// Manage enclaves.
#[derive(FromArgs)]
#[argh(subcommand, name = "enclave")]
pub(crate) struct EnclaveArgs {
    #[argh(subcommand)]
    command: EnclaveCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum EnclaveCommand {
    Create(Create),
    Info(Info),
    Ls(Ls),
    Rm(Rm),
}

client_command! {
    /// Create enclaves.
    #[argh(subcommand, name = "create")]
    struct Create {
        /// the names of the enclaves
        #[argh(positional)]
        names: Vec<String>,
    }
}

client_command! {
    /// Describe an enclave.
    #[argh(subcommand, name = "info")]
    struct Info {
        /// the name of the enclave
        #[argh(positional)]
        name: String,
    }
}

client_command! {
    /// List enclaves (all of them, or those starting with PREFIX).
    #[argh(subcommand, name = "ls")]
    struct Ls {
        /// a name prefix (default: all enclaves)
        #[argh(positional, default = "String::new()")]
        prefix: String,
    }
}

client_command! {
    /// Delete enclaves.
    #[argh(subcommand, name = "rm")]
    struct Rm {
        /// the names of the enclaves
        #[argh(positional)]
        names: Vec<String>,
    }
}

pub(crate) fn run(args: EnclaveArgs) -> Result<(), String> {
    match args.command {
        EnclaveCommand::Create(a) => {
            let client = a.connect()?;
            for_each_name(&a.names, "enclave", "created", a.json, |n| {
                client.create_enclave(n)
            })
        }
        EnclaveCommand::Info(a) => {
            let info = a
                .connect()?
                .describe_enclave(&a.name)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(info.body());
            } else {
                print_fields(&[
                    ("Name", Some(info.name.clone().unwrap_or(a.name.clone()))),
                    ("Created", info.created_at.clone()),
                    ("Owner", info.created_by.clone()),
                ]);
            }
            Ok(())
        }
        EnclaveCommand::Ls(a) => print_names(a.connect()?.enclaves(&a.prefix), a.json, "name"),
        EnclaveCommand::Rm(a) => {
            let client = a.connect()?;
            for_each_name(&a.names, "enclave", "deleted", a.json, |n| {
                client.delete_enclave(n)
            })
        }
    }
}
