//! The client commands: `kes-node key|policy|identity|secret|enclave|log|status`, the work of
//! upstream's `kes` CLI, on top of [`crate::client`].
//!
//! Every command that talks to a server reads the same environment as upstream's CLI:
//! `KES_SERVER` (default `https://127.0.0.1:7373`; several, comma-separated, are tried in
//! turn while one cannot be reached), `KES_API_KEY` or `KES_CLIENT_CERT` and
//! `KES_CLIENT_KEY`, `KES_ENCLAVE`, plus `KES_CA` for the CA certificates that verify the
//! server. And each takes the same flags: `-k/--insecure`, `--ca FILE`, `-e/--enclave NAME`
//! and `--json`.
//!
//! Output: with `--json` the server's JSON exactly as it came (a listing becomes one object per
//! line, `{"name":...}` or `{"identity":...}`); otherwise short lines and aligned tables for
//! people. Errors go to stderr as `kes-node: <message>` with exit code 1 (see `main`).
pub(super) mod bench;
pub(super) mod cluster;
pub(super) mod enclave;
pub(super) mod identity;
pub(super) mod key;
pub(super) mod log;
pub(super) mod policy;
pub(super) mod secret;
pub(super) mod status;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::client::{Client, Credentials, Names, ServerTrust, DEFAULT_SERVER};

/// Declares a leaf command struct with the connection flags every client command shares.
/// The fields must end with a comma.
macro_rules! client_command {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        #[derive(argh::FromArgs)]
        $(#[$meta])*
        $vis struct $name {
            // The fields pass as raw tokens: argh must see `bool` to know a switch.
            $($fields)*
            /// skip verification of the server's certificate (development servers only)
            #[argh(switch, short = 'k')]
            insecure: bool,
            /// verify the server's certificate with the CA certificates in FILE or directory
            /// (default: $KES_CA)
            #[argh(option)]
            ca: Option<std::path::PathBuf>,
            /// the enclave to work in (default: $KES_ENCLAVE)
            #[argh(option, short = 'e')]
            enclave: Option<String>,
            /// print the server's JSON
            #[argh(switch)]
            json: bool,
        }

        impl $name {
            #[allow(dead_code)]
            fn connect(&self) -> Result<crate::client::Client, String> {
                super::connect(self.insecure, self.ca.as_deref(), self.enclave.as_deref())
            }
        }
    };
}
pub(crate) use client_command;

/// The environment variable holding the server's CA certificates (file or directory).
const CA_ENV: &str = "KES_CA";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A client from the flags and the environment.
fn connect(insecure: bool, ca: Option<&Path>, enclave: Option<&str>) -> Result<Client, String> {
    let server = env("KES_SERVER").unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    // A comma-separated list, as upstream accepts: the client goes on to the next server
    // while one cannot be reached.
    let servers: Vec<&str> = server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();

    let credentials = if let Some(key) = env("KES_API_KEY") {
        Credentials::from_api_key(&key).map_err(|e| format!("KES_API_KEY: {e}"))?
    } else {
        match (env("KES_CLIENT_CERT"), env("KES_CLIENT_KEY")) {
            (Some(cert), Some(key)) => {
                Credentials::from_pem_files(Path::new(&cert), Path::new(&key))
                    .map_err(|e| e.to_string())?
            }
            (Some(_), None) => {
                return Err("KES_CLIENT_CERT is set but KES_CLIENT_KEY is not".into())
            }
            (None, Some(_)) => {
                return Err("KES_CLIENT_KEY is set but KES_CLIENT_CERT is not".into())
            }
            (None, None) => {
                return Err(
                    "no credentials: set KES_API_KEY, or KES_CLIENT_CERT and KES_CLIENT_KEY".into(),
                )
            }
        }
    };

    let ca: Option<PathBuf> = ca
        .map(Path::to_path_buf)
        .or_else(|| env(CA_ENV).map(PathBuf::from));
    let trust = match (insecure, ca) {
        (true, _) => ServerTrust::Insecure,
        (false, Some(ca)) => ServerTrust::from_ca_path(&ca).map_err(|e| e.to_string())?,
        (false, None) => {
            return Err(format!(
                "cannot verify the server's certificate: no CA certificates given; set {CA_ENV} \
                 or pass --ca FILE, or use -k/--insecure for a development server"
            ))
        }
    };

    let enclave = enclave.map(str::to_owned).or_else(|| env("KES_ENCLAVE"));
    Ok(Client::with_endpoints(&servers, credentials, trust)
        .map_err(|e| e.to_string())?
        .with_enclave(enclave))
}

/// Writes the server's JSON body as one line.
fn print_json(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    println!("{}", text.trim_end());
}

/// Prints a listing as it arrives, page after page: one `{"<field>": name}` object per line,
/// or one name per line.
fn print_names(names: Names<'_>, json: bool, field: &str) -> Result<(), String> {
    for name in names {
        let name = name.map_err(|e| e.to_string())?;
        if json {
            println!("{}", serde_json::json!({ field: name }));
        } else {
            println!("{name}");
        }
    }
    Ok(())
}

/// Prints rows as columns separated by two spaces, each as wide as its widest cell.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Prints `label  value` lines, skipping absent values.
fn print_fields(fields: &[(&str, Option<String>)]) {
    let rows: Vec<Vec<String>> = fields
        .iter()
        .filter_map(|(label, value)| {
            value
                .as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| vec![(*label).to_owned(), v.clone()])
        })
        .collect();
    print_table(&rows);
}

/// Standard base64 input (context, ciphertexts, imported keys), with a clear error.
fn decode_b64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("{what} is not valid base64: {e}"))
}

fn encode_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Everything on stdin, without one trailing newline (for values not given as arguments).
fn read_stdin(what: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {what} from stdin: {e}"))?;
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    Ok(buf)
}

/// Runs `op` on each of `names` (at least one), printing `<verb> <what> <name>` unless
/// `json`: the shape of every `create`/`rm` that takes `<name>...`.
fn for_each_name(
    names: &[String],
    what: &str,
    verb: &str,
    json: bool,
    mut op: impl FnMut(&str) -> Result<(), crate::client::ClientError>,
) -> Result<(), String> {
    need_names(names, &format!("{what} name"))?;
    for name in names {
        op(name).map_err(|e| e.to_string())?;
        if !json {
            println!("{verb} {what} {name}");
        }
    }
    Ok(())
}

/// At least one name for commands that take `<name>...`.
fn need_names(names: &[String], what: &str) -> Result<(), String> {
    if names.is_empty() {
        Err(format!("no {what} given"))
    } else {
        Ok(())
    }
}

/// An uptime like `3d4h5m6s`.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if d > 0 {
        out.push_str(&format!("{d}d"));
    }
    if d > 0 || h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if d > 0 || h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// A byte count like `12.3 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(61), "1m1s");
        assert_eq!(human_duration(3_600), "1h0m0s");
        assert_eq!(human_duration(90_061), "1d1h1m1s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
