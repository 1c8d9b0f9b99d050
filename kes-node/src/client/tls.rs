//! TLS for the client: who we are (an API key or a certificate and key from PEM files) and
//! whom we trust (CA certificates from a file or directory, or, for development servers,
//! anyone).
//!
//! A KES server identifies a client by the public key of its certificate (spec §2.1), so an
//! API key becomes a fresh self-signed certificate on every start; nothing but the key matters.
//!
//! "Insecure" skips only the check that the server's certificate chains to a trusted CA. The
//! server must still prove in the handshake that it holds the certificate's private key, so a
//! passive observer learns nothing; an active man in the middle, however, is not detected.
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ClientError;
use crate::identity::ApiKey;

/// The client's certificate chain and private key.
pub struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: String,
}

impl Credentials {
    /// A `kes:v1:` API key, presented as a self-signed certificate made from it.
    pub fn from_api_key(api_key: &str) -> Result<Credentials, ClientError> {
        let key = ApiKey::parse(api_key.trim()).map_err(ClientError::Config)?;
        let (cert_pem, key_pem) = key.certificate_pem().map_err(ClientError::Config)?;
        let chain = pem_certs(cert_pem.as_bytes(), "the API key's certificate")?;
        let private = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| ClientError::Config(format!("invalid API key: {e}")))?;
        Ok(Credentials {
            chain,
            key: private,
            identity: key.identity(),
        })
    }

    /// A certificate chain and its private key from PEM files (`KES_CLIENT_CERT`,
    /// `KES_CLIENT_KEY`).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Credentials, ClientError> {
        let cert_pem = read(cert, "client certificate")?;
        let chain = pem_certs(&cert_pem, &cert.display().to_string())?;
        let key_pem = read(key, "client private key")?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            ClientError::Config(format!(
                "cannot parse client private key {}: {e}",
                key.display()
            ))
        })?;
        let identity = crate::identity::peer_identity(&chain).map_err(|e| {
            ClientError::Config(format!("client certificate {}: {e}", cert.display()))
        })?;
        Ok(Credentials {
            chain,
            key: private,
            identity,
        })
    }

    /// The identity the server will see.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// A new random API key (`kes:v1:...`), the counterpart of the Go SDK's `kes.GenerateAPIKey`.
/// Its identity, which a server's admin or policy names, is
/// `Credentials::from_api_key(&key)?.identity()`.
///
/// The key is a secret: whoever holds it is that identity.
pub fn generate_api_key() -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(ApiKey::generate().encode())
}

/// How the server's certificate is checked.
#[derive(Clone)]
pub enum ServerTrust {
    /// It must chain to one of these CA certificates (or be one of them).
    Roots(Arc<RootCertStore>),
    /// Anything goes, as long as the server holds the certificate's key (development only).
    Insecure,
}

impl ServerTrust {
    /// The CA certificates in a PEM file, or in every file of a directory.
    pub fn from_ca_path(path: &Path) -> Result<ServerTrust, ClientError> {
        let mut files = Vec::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| {
                ClientError::Config(format!("cannot read CA directory {}: {e}", path.display()))
            })?;
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    files.push(entry.path());
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut roots = RootCertStore::empty();
        for file in &files {
            let pem = read(file, "CA certificate")?;
            for cert in pem_certs(&pem, &file.display().to_string())? {
                roots.add(cert).map_err(|e| {
                    ClientError::Config(format!(
                        "invalid CA certificate in {}: {e}",
                        file.display()
                    ))
                })?;
            }
        }
        if roots.is_empty() {
            return Err(ClientError::Config(format!(
                "no CA certificate found in {}",
                path.display()
            )));
        }
        Ok(ServerTrust::Roots(Arc::new(roots)))
    }
}

/// The rustls configuration of every connection a client makes.
pub(super) fn client_config(
    credentials: Credentials,
    trust: &ServerTrust,
) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS setup failed: {e}")))?;
    let builder = match trust {
        ServerTrust::Roots(roots) => builder.with_root_certificates(roots.clone()),
        ServerTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert {
                algs: provider.signature_verification_algorithms,
            })),
    };
    let mut config = builder
        .with_client_auth_cert(credentials.chain, credentials.key)
        .map_err(|e| {
            ClientError::Config(format!(
                "the client certificate and key do not fit together: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name for a host: an IP address or a DNS name.
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| ClientError::Config(format!("invalid server name '{host}'")))
}

/// Accepts any server certificate but still checks the handshake signature made with its key.
#[derive(Debug)]
struct AnyServerCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

fn pem_certs(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Config(format!("cannot parse certificate {source}: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "no certificate found in {source}"
        )));
    }
    Ok(certs)
}
