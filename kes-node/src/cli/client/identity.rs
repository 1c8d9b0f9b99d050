//! `kes-node identity ...`: identities on a server (`create`, `info`, `ls`, `rm`) and two
//! offline tools: `new` makes an API key (and, if asked, a certificate and private key made from
//! it), `of` tells the identity of an API key or certificate, or the API key of an Ed25519
//! private key file (spec §2.4, §6.2, §6.3).
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argh::FromArgs;

use super::{client_command, need_names, print_fields, print_json, print_names};
use crate::identity::{identity_of_certificate_pem, ApiKey};

/// Manage identities; make API keys and certificates.
#[derive(FromArgs)]
#[argh(subcommand, name = "identity")]
pub(crate) struct IdentityArgs {
    #[argh(subcommand)]
    command: IdentityCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum IdentityCommand {
    New(New),
    Of(Of),
    Create(Create),
    Info(Info),
    Ls(Ls),
    Rm(Rm),
}

/// Make a new API key and print it with its identity; optionally write a certificate and
/// private key made from it (for TLS clients and servers that want files).
#[derive(FromArgs)]
#[argh(subcommand, name = "new")]
struct New {
    /// write the private key (PKCS#8 PEM) to FILE
    #[argh(option)]
    key: Option<PathBuf>,
    /// write a self-signed certificate (PEM) to FILE
    #[argh(option)]
    cert: Option<PathBuf>,
    /// an IP address for the certificate (repeatable)
    #[argh(option)]
    ip: Vec<String>,
    /// a DNS name for the certificate (repeatable)
    #[argh(option)]
    dns: Vec<String>,
    /// how long the certificate is valid, a Go duration (default 720h)
    #[argh(option, default = "String::from(\"720h\")")]
    expiry: String,
    /// overwrite existing files
    #[argh(switch, short = 'f')]
    force: bool,
    /// the certificate's subject common name (default: the identity)
    #[argh(positional)]
    subject: Option<String>,
}

/// Print the identity of an API key or a certificate file, or the API key of an Ed25519
/// private key file.
#[derive(FromArgs)]
#[argh(subcommand, name = "of")]
struct Of {
    /// a kes:v1: API key, or a PEM file holding a certificate or a private key
    #[argh(positional)]
    source: String,
}

client_command! {
    /// Create an identity on the server, with a policy or as an enclave admin.
    #[argh(subcommand, name = "create")]
    struct Create {
        /// make the identity an admin
        #[argh(switch)]
        admin: bool,
        /// the policy of the identity
        #[argh(option)]
        policy: Option<String>,
        /// how long the identity lives, a Go duration (720h); default: forever
        #[argh(option)]
        ttl: Option<String>,
        /// the identity (hex)
        #[argh(positional)]
        identity: String,
    }
}

client_command! {
    /// Describe an identity, or the caller's own when none is given.
    #[argh(subcommand, name = "info")]
    struct Info {
        /// the identity (default: the caller's)
        #[argh(positional)]
        identity: Option<String>,
    }
}

client_command! {
    /// List identities (all of them, or those starting with PATTERN).
    #[argh(subcommand, name = "ls")]
    struct Ls {
        /// a listing pattern (default '*': all identities)
        #[argh(positional, default = "String::from(\"*\")")]
        pattern: String,
    }
}

client_command! {
    /// Delete identities.
    #[argh(subcommand, name = "rm")]
    struct Rm {
        /// the identities
        #[argh(positional)]
        identities: Vec<String>,
    }
}

pub(crate) fn run(args: IdentityArgs) -> Result<(), String> {
    match args.command {
        IdentityCommand::New(a) => new(a),
        IdentityCommand::Of(a) => {
            println!("{}", of(&a.source)?);
            Ok(())
        }
        IdentityCommand::Create(a) => {
            if let Some(ttl) = &a.ttl {
                crate::config::parse_go_duration(ttl)?;
            }
            if !a.admin && a.policy.is_none() {
                return Err("an identity needs --policy NAME (or --admin)".into());
            }
            a.connect()?
                .create_identity(
                    &a.identity,
                    a.policy.as_deref().unwrap_or_default(),
                    a.admin,
                    a.ttl.as_deref().unwrap_or_default(),
                )
                .map_err(|e| e.to_string())?;
            if !a.json {
                println!("created identity {}", a.identity);
            }
            Ok(())
        }
        IdentityCommand::Info(a) => {
            let client = a.connect()?;
            match &a.identity {
                Some(identity) => {
                    let info = client
                        .describe_identity(identity)
                        .map_err(|e| e.to_string())?;
                    if a.json {
                        print_json(info.body());
                    } else {
                        print_identity(identity, &info);
                    }
                }
                None => {
                    let me = client.describe_self().map_err(|e| e.to_string())?;
                    if a.json {
                        print_json(me.body());
                    } else {
                        let identity = me
                            .identity
                            .identity
                            .clone()
                            .unwrap_or_else(|| client.identity().to_owned());
                        print_identity(&identity, &me.identity);
                        if !me.allow.is_empty() || !me.deny.is_empty() {
                            super::policy::print_rules(&me.allow, &me.deny);
                        }
                    }
                }
            }
            Ok(())
        }
        IdentityCommand::Ls(a) => {
            print_names(a.connect()?.identities(&a.pattern), a.json, "identity")
        }
        IdentityCommand::Rm(a) => {
            need_names(&a.identities, "identity")?;
            let client = a.connect()?;
            for identity in &a.identities {
                client
                    .delete_identity(identity)
                    .map_err(|e| e.to_string())?;
                if !a.json {
                    println!("deleted identity {identity}");
                }
            }
            Ok(())
        }
    }
}

fn print_identity(identity: &str, info: &crate::client::IdentityInfo) {
    print_fields(&[
        ("Identity", Some(identity.to_owned())),
        ("Admin", info.admin.then(|| "yes".to_owned())),
        ("Policy", info.policy.clone()),
        ("TTL", info.ttl.clone()),
        ("Expires", info.expires_at.clone()),
        ("Created", info.created_at.clone()),
        ("Owner", info.created_by.clone()),
        (
            "Children",
            (!info.children.is_empty()).then(|| info.children.join(", ")),
        ),
    ]);
}

/// `identity of`: an API key's identity, a certificate's identity, or a private key's API key.
fn of(source: &str) -> Result<String, String> {
    if source.starts_with("kes:v1:") {
        return Ok(ApiKey::parse(source)?.identity());
    }
    let pem = fs::read_to_string(source).map_err(|e| format!("cannot read {source}: {e}"))?;
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        return identity_of_certificate_pem(&pem).map_err(|e| format!("{source}: {e}"));
    }
    if pem.contains("-----BEGIN PRIVATE KEY-----") {
        return ApiKey::from_pkcs8_pem(&pem)
            .map(|k| k.encode())
            .map_err(|e| format!("{source}: {e}"));
    }
    Err(format!(
        "{source}: neither a kes:v1: API key nor a PEM certificate or PKCS#8 private key"
    ))
}

/// `identity new`: an API key, and on request a certificate and key file made from it.
fn new(a: New) -> Result<(), String> {
    if a.key.is_some() != a.cert.is_some() {
        return Err("--key and --cert go together: give both files or neither".into());
    }
    let api_key = ApiKey::generate();
    if let (Some(key_path), Some(cert_path)) = (&a.key, &a.cert) {
        let expiry = crate::config::parse_go_duration(&a.expiry)?;
        if expiry.is_zero() {
            return Err(format!("invalid --expiry '{}': must be positive", a.expiry));
        }
        for path in [key_path, cert_path] {
            if !a.force && path.exists() {
                return Err(format!(
                    "{} already exists; use -f to overwrite it",
                    path.display()
                ));
            }
        }
        let subject = a.subject.clone().unwrap_or_else(|| api_key.identity());
        let (cert_pem, key_pem) = certificate(&api_key, &subject, &a.ip, &a.dns, expiry)?;
        write_file(key_path, key_pem.as_bytes(), 0o600)?;
        write_file(cert_path, cert_pem.as_bytes(), 0o644)?;
    }
    println!("API key:  {}", api_key.encode());
    println!("Identity: {}", api_key.identity());
    if let (Some(key_path), Some(cert_path)) = (&a.key, &a.cert) {
        println!("Private key: {}", key_path.display());
        println!("Certificate: {}", cert_path.display());
    }
    Ok(())
}

/// Without the `certgen` feature (rcgen) there is no `identity new --cert`.
#[cfg(not(feature = "certgen"))]
fn certificate(
    _: &ApiKey,
    _: &str,
    _: &[String],
    _: &[String],
    _: std::time::Duration,
) -> Result<(String, String), String> {
    Err(crate::identity::NO_CERTGEN.into())
}

/// A self-signed Ed25519 certificate for both TLS clients and servers, as upstream's
/// `identity new` makes it: `CN=<subject>`, the given SANs, valid from now for `expiry`.
#[cfg(feature = "certgen")]
fn certificate(
    api_key: &ApiKey,
    subject: &str,
    ips: &[String],
    dns: &[String],
    expiry: std::time::Duration,
) -> Result<(String, String), String> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        SanType, PKCS_ED25519,
    };
    // The PKCS#8 form of the API key comes with its client certificate; the key pair signs ours.
    let (_, key_pem) = api_key.certificate_pem()?;
    let key_pair = KeyPair::from_pem_and_sign_algo(&key_pem, &PKCS_ED25519)
        .map_err(|e| format!("cannot use the API key: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, subject);
    for ip in ips {
        let addr = ip
            .parse()
            .map_err(|_| format!("invalid --ip '{ip}': not an IP address"))?;
        params.subject_alt_names.push(SanType::IpAddress(addr));
    }
    for name in dns {
        let name = name
            .clone()
            .try_into()
            .map_err(|_| format!("invalid --dns '{name}'"))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    let now = time::OffsetDateTime::now_utc();
    let expiry =
        time::Duration::try_from(expiry).map_err(|_| "the --expiry is too long".to_string())?;
    params.not_before = now;
    params.not_after = now.checked_add(expiry).ok_or("the --expiry is too long")?;
    let mut serial: [u8; 16] = crate::random::bytes();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| format!("cannot create the certificate: {e}"))?;
    Ok((cert.pem(), key_pem))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(contents)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
