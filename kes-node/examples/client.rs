//! The client library in a complete program: connects to a KES server the way the `kes-node`
//! CLI does, creates a key (or finds it there), generates a data key, decrypts its ciphertext
//! again and lists the keys.
//!
//! ```text
//! KES_SERVER=https://127.0.0.1:7373 KES_API_KEY=kes:v1:... KES_CA=ca.pem \
//!     cargo run --example client -- [KEY-NAME]
//! ```
//!
//! Credentials: `KES_API_KEY`, or `KES_CLIENT_CERT` and `KES_CLIENT_KEY` (PEM files). The
//! server is verified with the CA certificates in `KES_CA`; `-k` skips that (development
//! servers only). `KES_ENCLAVE` selects an enclave. It exits 0 only if every step worked.
use std::path::{Path, PathBuf};

use kes_node::client::{Client, ClientError, Credentials, ServerTrust, DEFAULT_SERVER};

/// Where and how to connect, and the key to use.
pub struct Settings {
    /// `https://host:port`
    pub server: String,
    /// `kes:v1:...`
    pub api_key: Option<String>,
    /// Client certificate and private key (PEM), if there is no API key.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// CA certificates that verify the server; `None` with `insecure`.
    pub ca: Option<PathBuf>,
    /// Skip verifying the server's certificate.
    pub insecure: bool,
    /// The enclave to work in.
    pub enclave: Option<String>,
    /// The key to create and use.
    pub key: String,
}

impl Settings {
    /// The settings from the environment and the command line.
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut insecure = false;
        let mut key = "example-key".to_owned();
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "-k" | "--insecure" => insecure = true,
                name => key = name.to_owned(),
            }
        }
        Settings {
            server: var("KES_SERVER").unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
            api_key: var("KES_API_KEY"),
            cert_and_key: var("KES_CLIENT_CERT")
                .zip(var("KES_CLIENT_KEY"))
                .map(|(c, k)| (PathBuf::from(c), PathBuf::from(k))),
            ca: var("KES_CA").map(PathBuf::from),
            insecure,
            enclave: var("KES_ENCLAVE"),
            key,
        }
    }
}

/// A client as the settings say.
pub fn connect(s: &Settings) -> Result<Client, ClientError> {
    let credentials = match (&s.api_key, &s.cert_and_key) {
        (Some(key), _) => Credentials::from_api_key(key)?,
        (None, Some((cert, key))) => Credentials::from_pem_files(cert, key)?,
        (None, None) => {
            return Err(ClientError::Config(
                "no credentials: set KES_API_KEY, or KES_CLIENT_CERT and KES_CLIENT_KEY".into(),
            ))
        }
    };
    let trust =
        match (&s.ca, s.insecure) {
            (_, true) => ServerTrust::Insecure,
            (Some(ca), false) => ServerTrust::from_ca_path(Path::new(ca))?,
            (None, false) => return Err(ClientError::Config(
                "set KES_CA to the server's CA certificate, or pass -k for a development server"
                    .into(),
            )),
        };
    Ok(Client::new(&s.server, credentials, trust)?.with_enclave(s.enclave.clone()))
}

/// The walk through the API; prints what it does and returns the names of all keys.
pub fn run(s: &Settings) -> Result<Vec<String>, ClientError> {
    let client = connect(s)?;
    println!(
        "server {} (version {})",
        s.server,
        client.version()?.version
    );
    println!("identity {}", client.identity());

    match client.create_key(&s.key) {
        Ok(()) => println!("created key {}", s.key),
        Err(ClientError::Exists(_)) => println!("key {} exists already", s.key),
        Err(err) => return Err(err),
    }

    // The context is bound to the ciphertext: the same context must come with the decryption.
    let context = b"example: object 42";
    let dek = client.generate_key(&s.key, context)?;
    println!(
        "generated a data key: {} bytes, sealed into {} bytes",
        dek.plaintext.len(),
        dek.ciphertext.len()
    );
    let plaintext = client.decrypt(&s.key, &dek.ciphertext, context)?;
    if *plaintext != dek.plaintext {
        return Err(ClientError::Response(
            "the decrypted data key differs from the generated one".into(),
        ));
    }
    println!("decrypted the sealed data key: it matches");

    // A wrong context is refused: the ciphertext is not authentic for it.
    match client.decrypt(&s.key, &dek.ciphertext, b"another object") {
        Err(ClientError::BadRequest(e)) => println!("a wrong context is refused: {e}"),
        Ok(_) => return Err(ClientError::Response("a wrong context decrypted".into())),
        Err(err) => return Err(err),
    }

    let names = client.keys("*").collect::<Result<Vec<_>, _>>()?;
    println!("keys: {}", names.join(" "));
    Ok(names)
}

#[allow(dead_code)] // tests/client.rs includes this file and calls `run` itself.
fn main() {
    if let Err(err) = run(&Settings::from_env()) {
        eprintln!("client example: {err}");
        std::process::exit(1);
    }
}
