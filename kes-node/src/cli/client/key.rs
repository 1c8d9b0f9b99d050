//! `kes-node key ...`: create, import, describe, list and delete keys; encrypt, decrypt, data
//! keys and HMACs. Argument shapes follow upstream's `kes key` (spec §6.2).
use argh::FromArgs;

use super::{
    client_command, decode_b64, encode_b64, for_each_name, print_fields, print_json, print_names,
    read_stdin,
};

/// Manage cryptographic keys.
#[derive(FromArgs)]
#[argh(subcommand, name = "key")]
pub(crate) struct KeyArgs {
    #[argh(subcommand)]
    command: KeyCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum KeyCommand {
    Create(Create),
    Import(Import),
    Info(Info),
    Ls(Ls),
    Rm(Rm),
    Encrypt(Encrypt),
    Decrypt(Decrypt),
    Dek(Dek),
    Hmac(Hmac),
}

client_command! {
    /// Create new keys.
    #[argh(subcommand, name = "create")]
    struct Create {
        /// the names of the keys
        #[argh(positional)]
        names: Vec<String>,
    }
}

client_command! {
    /// Import a 32-byte key (base64; read from stdin if not given).
    #[argh(subcommand, name = "import")]
    struct Import {
        /// the name of the key
        #[argh(positional)]
        name: String,
        /// the key, base64
        #[argh(positional)]
        key: Option<String>,
        /// the key's algorithm: AES256 (default) or ChaCha20
        #[argh(option, default = "String::from(\"AES256\")")]
        cipher: String,
    }
}

client_command! {
    /// Describe a key.
    #[argh(subcommand, name = "info")]
    struct Info {
        /// the name of the key
        #[argh(positional)]
        name: String,
    }
}

client_command! {
    /// List keys (all of them, or those starting with PATTERN).
    #[argh(subcommand, name = "ls")]
    struct Ls {
        /// a listing pattern (default '*': all keys)
        #[argh(positional, default = "String::from(\"*\")")]
        pattern: String,
    }
}

client_command! {
    /// Delete keys.
    #[argh(subcommand, name = "rm")]
    struct Rm {
        /// the names of the keys
        #[argh(positional)]
        names: Vec<String>,
    }
}

client_command! {
    /// Encrypt a message; prints the ciphertext (base64).
    #[argh(subcommand, name = "encrypt")]
    struct Encrypt {
        /// the name of the key
        #[argh(positional)]
        name: String,
        /// the message, as text
        #[argh(positional)]
        message: String,
        /// associated data that decryption must present again, base64
        #[argh(positional)]
        context: Option<String>,
    }
}

client_command! {
    /// Decrypt a ciphertext; prints the plaintext.
    #[argh(subcommand, name = "decrypt")]
    struct Decrypt {
        /// the name of the key
        #[argh(positional)]
        name: String,
        /// the ciphertext, base64
        #[argh(positional)]
        ciphertext: String,
        /// the associated data given at encryption, base64
        #[argh(positional)]
        context: Option<String>,
    }
}

client_command! {
    /// Generate a data encryption key: prints it in plain and encrypted (base64).
    #[argh(subcommand, name = "dek")]
    struct Dek {
        /// the name of the key
        #[argh(positional)]
        name: String,
        /// associated data that decryption must present again, base64
        #[argh(positional)]
        context: Option<String>,
    }
}

client_command! {
    /// Compute the HMAC-SHA256 of a message with a key; prints it (hex).
    #[argh(subcommand, name = "hmac")]
    struct Hmac {
        /// the name of the key
        #[argh(positional)]
        name: String,
        /// the message, as text
        #[argh(positional)]
        message: String,
    }
}

pub(crate) fn run(args: KeyArgs) -> Result<(), String> {
    match args.command {
        KeyCommand::Create(a) => {
            let client = a.connect()?;
            for_each_name(&a.names, "key", "created", a.json, |n| client.create_key(n))
        }
        KeyCommand::Import(a) => {
            let key = match &a.key {
                Some(k) => decode_b64("the key", k)?,
                None => decode_b64("the key", &String::from_utf8_lossy(&read_stdin("the key")?))?,
            };
            let client = a.connect()?;
            client
                .import_key(&a.name, &key, &a.cipher)
                .map_err(|e| e.to_string())?;
            if !a.json {
                println!("imported key {}", a.name);
            }
            Ok(())
        }
        KeyCommand::Info(a) => {
            let info = a
                .connect()?
                .describe_key(&a.name)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(info.body());
            } else {
                print_fields(&[
                    ("Name", Some(info.name.clone())),
                    ("Algorithm", info.algorithm.clone()),
                    ("Version", info.version.as_ref().map(|v| v.to_string())),
                    ("Created", info.created_at.clone()),
                    ("Owner", info.created_by.clone()),
                ]);
            }
            Ok(())
        }
        KeyCommand::Ls(a) => print_names(a.connect()?.keys(&a.pattern), a.json, "name"),
        KeyCommand::Rm(a) => {
            let client = a.connect()?;
            for_each_name(&a.names, "key", "deleted", a.json, |n| client.delete_key(n))
        }
        KeyCommand::Encrypt(a) => {
            let context = optional_b64("the context", a.context.as_deref())?;
            let ciphertext = a
                .connect()?
                .encrypt(&a.name, a.message.as_bytes(), &context)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(ciphertext.body());
            } else {
                println!("{}", encode_b64(&ciphertext));
            }
            Ok(())
        }
        KeyCommand::Decrypt(a) => {
            let ciphertext = decode_b64("the ciphertext", &a.ciphertext)?;
            let context = optional_b64("the context", a.context.as_deref())?;
            let plaintext = a
                .connect()?
                .decrypt(&a.name, &ciphertext, &context)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(plaintext.body());
            } else {
                match String::from_utf8(plaintext.into_inner()) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("kes-node: the plaintext is binary; printed as base64");
                        println!("{}", encode_b64(e.as_bytes()));
                    }
                }
            }
            Ok(())
        }
        KeyCommand::Dek(a) => {
            let context = optional_b64("the context", a.context.as_deref())?;
            let dek = a
                .connect()?
                .generate_key(&a.name, &context)
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(dek.body());
            } else {
                print_fields(&[
                    ("plaintext:", Some(encode_b64(&dek.plaintext))),
                    ("ciphertext:", Some(encode_b64(&dek.ciphertext))),
                ]);
            }
            Ok(())
        }
        KeyCommand::Hmac(a) => {
            let mac = a
                .connect()?
                .hmac(&a.name, a.message.as_bytes())
                .map_err(|e| e.to_string())?;
            if a.json {
                print_json(mac.body());
            } else {
                println!(
                    "{}",
                    mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
            }
            Ok(())
        }
    }
}

fn optional_b64(what: &str, s: Option<&str>) -> Result<Vec<u8>, String> {
    s.map(|s| decode_b64(what, s))
        .transpose()
        .map(Option::unwrap_or_default)
}
