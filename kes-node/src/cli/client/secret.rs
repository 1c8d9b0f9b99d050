//! `kes-node secret ...`: create, describe, show, list and delete secrets (stateful servers,
//! spec §10.7).
use argh::FromArgs;

use super::{
    client_command, encode_b64, for_each_name, print_fields, print_json, print_names, read_stdin,
};

/// Manage secrets.
#[derive(FromArgs)]
#[argh(subcommand, name = "secret")]
pub(crate) struct SecretArgs {
    #[argh(subcommand)]
    command: SecretCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum SecretCommand {
    Create(Create),
    Info(Info),
    Show(Show),
    Ls(Ls),
    Rm(Rm),
}

client_command! {
    /// Create a secret (its value is read from stdin if not given).
    #[argh(subcommand, name = "create")]
    struct Create {
        /// the name of the secret
        #[argh(positional)]
        name: String,
        /// the value, as text
        #[argh(positional)]
        value: Option<String>,
    }
}

client_command! {
    /// Describe a secret.
    #[argh(subcommand, name = "info")]
    struct Info {
        /// the name of the secret
        #[argh(positional)]
        name: String,
    }
}

client_command! {
    /// Print a secret's value.
    #[argh(subcommand, name = "show")]
    struct Show {
        /// the name of the secret
        #[argh(positional)]
        name: String,
    }
}

client_command! {
    /// List secrets (all of them, or those starting with PREFIX).
    #[argh(subcommand, name = "ls")]
    struct Ls {
        /// a name prefix (default: all secrets)
        #[argh(positional, default = "String::new()")]
        prefix: String,
    }
}

client_command! {
    /// Delete secrets.
    #[argh(subcommand, name = "rm")]
    struct Rm {
        /// the names of the secrets
        #[argh(positional)]
        names: Vec<String>,
    }
}

pub(crate) fn run(args: SecretArgs) -> Result<(), String> {
    match args.command {
        SecretCommand::Create(a) => {
            let value = match &a.value {
                Some(v) => v.as_bytes().to_vec(),
                None => read_stdin("the secret")?,
            };
            a.connect()?
                .create_secret(&a.name, &value)
                .map_err(|e| e.to_string())?;
            if !a.json {
                println!("created secret {}", a.name);
            }
            Ok(())
        }
        SecretCommand::Info(a) => {
            let info = a
                .connect()?
                .describe_secret(&a.name)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(info.body());
            } else {
                print_fields(&[
                    ("Name", Some(info.name.clone().unwrap_or(a.name.clone()))),
                    ("Version", info.version.as_ref().map(|v| v.to_string())),
                    ("Type", info.kind.clone()),
                    ("Created", info.created_at.clone()),
                    ("Owner", info.created_by.clone()),
                ]);
            }
            Ok(())
        }
        SecretCommand::Show(a) => {
            let secret = a
                .connect()?
                .read_secret(&a.name)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(secret.body());
            } else {
                match std::str::from_utf8(&secret.secret) {
                    Ok(text) => println!("{text}"),
                    Err(_) => {
                        eprintln!("kes-node: the secret is binary; printed as base64");
                        println!("{}", encode_b64(&secret.secret));
                    }
                }
            }
            Ok(())
        }
        SecretCommand::Ls(a) => print_names(a.connect()?.secrets(&a.prefix), a.json, "name"),
        SecretCommand::Rm(a) => {
            let client = a.connect()?;
            for_each_name(&a.names, "secret", "deleted", a.json, |n| {
                client.delete_secret(n)
            })
        }
    }
}
