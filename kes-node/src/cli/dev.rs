//! `kes-node server --dev`: a development server with no set-up. It generates a SoftHSM key,
//! a self-signed server certificate and an admin API key with its client certificate, keeps
//! them beside `kes.db` (so a restart with the same directory finds them again) and prints
//! how to reach the server.
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, HsmConfig, TlsFiles};
use crate::identity::{self_signed_server_pem, ApiKey};

const DEV_ADDR: &str = "127.0.0.1:7373";

pub(super) fn run(
    dir: Option<PathBuf>,
    addr: Option<String>,
    workers: Option<usize>,
) -> Result<(), String> {
    // Without rcgen only a directory that has its server certificate already can be used:
    // refuse any other before writing anything into it.
    if cfg!(not(feature = "certgen")) {
        let has_cert = dir.as_deref().is_some_and(|d| {
            let files = DevFiles::in_dir(d);
            files.server_cert.exists() && files.server_key.exists()
        });
        if !has_cert {
            return Err(format!("--dev: {}", crate::identity::NO_CERTGEN));
        }
    }
    let dir = match dir {
        Some(d) => d,
        None => {
            let suffix: [u8; 4] = crate::random::bytes();
            let name = format!(
                "kes-dev-{}",
                suffix
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            std::env::temp_dir().join(name)
        }
    };
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    let files = DevFiles::in_dir(&dir);
    files.create_missing()?;

    let api_key_text = read(&files.api_key)?;
    let api_key = ApiKey::parse(api_key_text.trim())
        .map_err(|e| format!("{}: {e}", files.api_key.display()))?;
    let mut config = Config {
        admin_identity: api_key.identity(),
        tls: TlsFiles {
            key: files.server_key.clone(),
            cert: files.server_cert.clone(),
            ca: None,
            auth: false,
        },
        hsm: HsmConfig::Soft(Some(zeroize::Zeroizing::new(
            zeroize::Zeroizing::new(read(&files.hsm_key)?)
                .trim()
                .to_owned(),
        ))),
        ..Config::default()
    };
    super::override_workers(&mut config.limits, workers)?;
    // The process was hardened before the files above were made (`server.rs`).
    let builder =
        crate::server::Builder::node(config, &dir).address(addr.unwrap_or_else(|| DEV_ADDR.into()));
    let server = super::start(builder)?;
    let endpoint = format!("https://{}", server.local_addr());
    let d = dir.display();
    println!(
        "\nkes-node development server (not for production)\n\
         \x20 endpoint: {endpoint}\n\
         \x20 data:     {d}  (kes.db, hsm.key, server.cert, admin.cert, admin.key)\n\
         \x20 admin:    {id}\n\n\
         Use it with a KES client:\n\
         \x20 export KES_SERVER={endpoint}\n\
         \x20 export KES_API_KEY={key}\n\
         \x20 export KES_CLIENT_CERT={d}/admin.cert KES_CLIENT_KEY={d}/admin.key\n\n\
         Or with curl (create a key, then a data key):\n\
         \x20 curl --cacert {d}/server.cert --cert {d}/admin.cert --key {d}/admin.key -X PUT {endpoint}/v1/key/create/my-key\n\
         \x20 curl --cacert {d}/server.cert --cert {d}/admin.cert --key {d}/admin.key -X PUT {endpoint}/v1/key/generate/my-key -d '{{}}'\n\n\
         Restart with the same data: KES_HSM_KEY is kept in {d}/hsm.key; run `kes-node server --dev {d}`.\n",
        id = api_key.identity(),
        key = api_key_text.trim(),
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    super::finish(server)
}

struct DevFiles {
    hsm_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    api_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
}

impl DevFiles {
    fn in_dir(dir: &Path) -> DevFiles {
        DevFiles {
            hsm_key: dir.join("hsm.key"),
            server_cert: dir.join("server.cert"),
            server_key: dir.join("server.key"),
            api_key: dir.join("admin.apikey"),
            admin_cert: dir.join("admin.cert"),
            admin_key: dir.join("admin.key"),
        }
    }

    /// Generates whatever is missing; existing files are kept so data stays readable.
    fn create_missing(&self) -> Result<(), String> {
        if !self.hsm_key.exists() {
            write_secret(&self.hsm_key, &(super::new_soft_hsm_key() + "\n"))?;
        }
        if !self.server_cert.exists() || !self.server_key.exists() {
            let names = vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
                "::1".to_owned(),
            ];
            let (cert, key) = self_signed_server_pem(&names)?;
            write_secret(&self.server_key, &key)?;
            fs::write(&self.server_cert, cert)
                .map_err(|e| format!("cannot write {}: {e}", self.server_cert.display()))?;
        }
        if !self.api_key.exists() || !self.admin_cert.exists() || !self.admin_key.exists() {
            let api_key = ApiKey::from_seed(crate::random::bytes());
            let (cert, key) = api_key.certificate_pem()?;
            write_secret(&self.api_key, &(api_key.encode() + "\n"))?;
            write_secret(&self.admin_key, &key)?;
            fs::write(&self.admin_cert, cert)
                .map_err(|e| format!("cannot write {}: {e}", self.admin_cert.display()))?;
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Writes a file only its owner can read.
fn write_secret(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
