//! The rustls server configuration: certificate and key from PEM files, and the client
//! certificate policy. Like upstream's default (`tls.auth` off), any client certificate is
//! accepted in the handshake (its signature over the handshake is still verified, so the
//! client holds the private key); the identity is its public key. With `tls.ca` set, client
//! certificates must chain to those CAs.
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// Builds the server's TLS configuration. Errors are one line naming the file.
pub fn server_config(
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
    optional_client_cert: bool,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read TLS private key {}: {e}", key.display()))?;

    let verifier: Arc<dyn ClientCertVerifier> = match ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("cannot parse CA file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("invalid CA certificate in {}: {e}", ca.display()))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if optional_client_cert {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| format!("cannot use CA file {}: {e}", ca.display()))?
        }
        None => Arc::new(AnyClientCert {
            algs: provider.signature_verification_algorithms,
            mandatory: !optional_client_cert,
        }),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate and key do not fit together: {e}"))?;
    // Session resumption with stateless tickets (keys rotate every 6 hours): a reconnecting
    // client skips the certificate exchange and signatures, and the server keeps no state per
    // client. Resumed sessions carry the client's certificate, so its identity is unchanged.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS setup failed: {e}"))?;
    // Peers of a cluster reach each other on the same port with their own protocol.
    config.alpn_protocols = vec![b"http/1.1".to_vec(), crate::cluster::peer::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Requires a client certificate and a valid handshake signature by its key, but no chain.
#[derive(Debug)]
struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
    /// False when some route skips authentication (`api.<path>.skip_auth`): clients without a
    /// certificate may connect, and authenticated routes refuse them at the HTTP level.
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
