//! `kes-node policy ...`: create, describe, show, list, delete and assign policies (upstream's
//! `kes policy`, with the stateful server's `create` and `assign`, spec §6.3).
use std::path::PathBuf;

use argh::FromArgs;

use super::{
    client_command, for_each_name, need_names, print_fields, print_json, print_names, print_table,
};
use crate::client::{Policy, Rules};

/// Manage policies.
#[derive(FromArgs)]
#[argh(subcommand, name = "policy")]
pub(crate) struct PolicyArgs {
    #[argh(subcommand)]
    command: PolicyCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum PolicyCommand {
    Create(Create),
    Info(Info),
    Show(Show),
    Ls(Ls),
    Rm(Rm),
    Assign(Assign),
}

client_command! {
    /// Create a policy from a JSON file: {"allow": [...patterns], "deny": [...patterns]}
    /// (or objects keyed by pattern).
    #[argh(subcommand, name = "create")]
    struct Create {
        /// the name of the policy
        #[argh(positional)]
        name: String,
        /// the policy file
        #[argh(positional)]
        file: PathBuf,
    }
}

client_command! {
    /// Describe a policy.
    #[argh(subcommand, name = "info")]
    struct Info {
        /// the name of the policy
        #[argh(positional)]
        name: String,
    }
}

client_command! {
    /// Show a policy's rules.
    #[argh(subcommand, name = "show")]
    struct Show {
        /// the name of the policy
        #[argh(positional)]
        name: String,
    }
}

client_command! {
    /// List policies (all of them, or those starting with PATTERN).
    #[argh(subcommand, name = "ls")]
    struct Ls {
        /// a listing pattern (default '*': all policies)
        #[argh(positional, default = "String::from(\"*\")")]
        pattern: String,
    }
}

client_command! {
    /// Delete policies.
    #[argh(subcommand, name = "rm")]
    struct Rm {
        /// the names of the policies
        #[argh(positional)]
        names: Vec<String>,
    }
}

client_command! {
    /// Assign a policy to identities.
    #[argh(subcommand, name = "assign")]
    struct Assign {
        /// the name of the policy
        #[argh(positional)]
        policy: String,
        /// the identities
        #[argh(positional)]
        identities: Vec<String>,
    }
}

pub(crate) fn run(args: PolicyArgs) -> Result<(), String> {
    match args.command {
        PolicyCommand::Create(a) => {
            let text = std::fs::read(&a.file)
                .map_err(|e| format!("cannot read {}: {e}", a.file.display()))?;
            let policy =
                Policy::from_json(&text).map_err(|e| format!("{}: {e}", a.file.display()))?;
            a.connect()?
                .create_policy(&a.name, &policy)
                .map_err(|e| e.to_string())?;
            if !a.json {
                println!("created policy {}", a.name);
            }
            Ok(())
        }
        PolicyCommand::Info(a) => {
            let info = a
                .connect()?
                .describe_policy(&a.name)
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
        PolicyCommand::Show(a) => {
            let policy = a
                .connect()?
                .read_policy(&a.name)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(policy.body());
            } else {
                print_rules(&policy.allow, &policy.deny);
                print_fields(&[
                    ("Created", policy.created_at.clone()),
                    ("Owner", policy.created_by.clone()),
                ]);
            }
            Ok(())
        }
        PolicyCommand::Ls(a) => print_names(a.connect()?.policies(&a.pattern), a.json, "name"),
        PolicyCommand::Rm(a) => {
            let client = a.connect()?;
            for_each_name(&a.names, "policy", "deleted", a.json, |n| {
                client.delete_policy(n)
            })
        }
        PolicyCommand::Assign(a) => {
            need_names(&a.identities, "identity")?;
            let client = a.connect()?;
            for identity in &a.identities {
                client
                    .assign_policy(&a.policy, identity)
                    .map_err(|e| e.to_string())?;
                if !a.json {
                    println!("assigned policy {} to {identity}", a.policy);
                }
            }
            Ok(())
        }
    }
}

/// `Allow` and `Deny` with one pattern per line.
pub(super) fn print_rules(allow: &Rules, deny: &Rules) {
    let mut rows = Vec::new();
    for (label, rules) in [("Allow", allow), ("Deny", deny)] {
        let mut first = true;
        for pattern in rules.keys() {
            let label = if first { label } else { "" };
            rows.push(vec![label.to_owned(), pattern.clone()]);
            first = false;
        }
        if rules.is_empty() {
            rows.push(vec![label.to_owned(), "-".to_owned()]);
        }
    }
    print_table(&rows);
}
