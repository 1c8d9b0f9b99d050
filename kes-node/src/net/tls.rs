//! The rustls server configurations, chosen per connection from its ClientHello (see
//! `net/session.rs`):
//!
//! - **HTTP** (every connection that does not offer the peer protocol): ALPN `http/1.1` only,
//!   and the client certificate policy of `tls.auth` (upstream's meaning). `off`, the default:
//!   any client certificate is accepted in the handshake (its signature over the handshake is
//!   still verified, so the client holds the private key) and the identity, its public key,
//!   decides. `on`: client chains must verify against `tls.ca` (the public roots without it).
//! - **Peer** (a stateful node, for connections that offer ALPN `kes-peer/1`): any client
//!   certificate; the cluster's Hello, keyed by the HSM, then authenticates the peer
//!   (`cluster/peer.rs`). So `tls.ca` and `tls.auth` never keep peers apart.
//!
//! The event loop reads the configurations from a [`Shared`] at every accept: replacing them
//! (a configuration reload) applies to new connections and leaves open ones alone.
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::config::Config;

/// The ALPN protocol of a stateful node's peer links (`cluster/peer.rs`): a connection
/// offering it is handed to the backend once its handshake is done.
pub(crate) const PEER_ALPN: &[u8] = b"kes-peer/1";

/// The server's TLS configurations.
pub(crate) struct TlsConfigs {
    /// For HTTP clients.
    pub http: Arc<ServerConfig>,
    /// For peers of a cluster; `None` on an edge server (no peer protocol: a client offering
    /// only `kes-peer/1` fails the handshake).
    pub peer: Option<Arc<ServerConfig>>,
}

impl TlsConfigs {
    /// The configuration for a ClientHello offering `alpn`.
    pub(crate) fn choose<'a>(
        &self,
        mut alpn: impl Iterator<Item = &'a [u8]>,
    ) -> &Arc<ServerConfig> {
        match &self.peer {
            Some(peer) if alpn.any(|p| p == PEER_ALPN) => peer,
            _ => &self.http,
        }
    }
}

/// The configurations in use, replaceable while the server runs.
pub(crate) struct Shared(RwLock<Arc<TlsConfigs>>);

impl Shared {
    pub(crate) fn new(configs: TlsConfigs) -> Arc<Shared> {
        Arc::new(Shared(RwLock::new(Arc::new(configs))))
    }

    /// The configurations for a new connection.
    pub(crate) fn current(&self) -> Arc<TlsConfigs> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the configurations (for connections accepted from now on).
    pub(crate) fn replace(&self, configs: TlsConfigs) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(configs);
    }
}

/// Builds the configurations from `config`'s `tls:` (and its `api.<path>.skip_auth`s);
/// `peers`: a stateful node, which also speaks the peer protocol. Errors are one line naming
/// the file.
pub(crate) fn configs(config: &Config, peers: bool) -> Result<TlsConfigs, String> {
    let tls = &config.tls;
    let optional_client_cert = config.api.values().any(|r| r.skip_auth);
    let http = server_config(
        &tls.cert,
        &tls.key,
        tls.auth.then_some(tls.ca.as_deref()),
        optional_client_cert,
    )?;
    let peer = peers
        .then(|| server_config(&tls.cert, &tls.key, None, false))
        .transpose()?
        .map(|mut c| {
            c.alpn_protocols = vec![PEER_ALPN.to_vec()];
            // Peer links live long: no resumption.
            c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            c.send_tls13_tickets = 0;
            c.ticketer = Arc::new(NoTickets);
            Arc::new(c)
        });
    Ok(TlsConfigs {
        http: Arc::new(http),
        peer,
    })
}

/// One configuration. `verify`: `Some(ca)` verifies client chains (against `ca`, else the
/// public roots); `None` accepts any client certificate.
fn server_config(
    cert: &Path,
    key: &Path,
    verify: Option<Option<&Path>>,
    optional_client_cert: bool,
) -> Result<ServerConfig, String> {
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

    let verifier: Arc<dyn ClientCertVerifier> = match verify {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            match ca {
                Some(ca) => {
                    for c in CertificateDer::pem_file_iter(ca)
                        .map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?
                    {
                        let c =
                            c.map_err(|e| format!("cannot parse CA file {}: {e}", ca.display()))?;
                        roots.add(c).map_err(|e| {
                            format!("invalid CA certificate in {}: {e}", ca.display())
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if optional_client_cert {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| match ca {
                Some(ca) => format!("cannot use CA file {}: {e}", ca.display()),
                None => format!("cannot verify client certificates: {e}"),
            })?
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Issues no session tickets (peer links).
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
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
