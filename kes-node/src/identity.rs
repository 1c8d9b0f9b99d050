//! Client identities: the SHA-256 of a certificate's SubjectPublicKeyInfo, `kes:v1:` API keys,
//! and the certificates made from them.
use rustls_pki_types::CertificateDer;

/// Lowercase hex SHA-256 of a DER SubjectPublicKeyInfo.
pub fn identity_of_spki(spki_der: &[u8]) -> String {
    todo!("{spki_der:?}")
}

/// Why no identity could be taken from a TLS peer (messages are upstream's, spec §2.1).
#[derive(Debug, PartialEq, Eq)]
pub enum PeerIdentityError {
    /// `tls: client certificate is required`
    NoCertificate,
    /// `tls: received more than one client certificate`
    TooMany,
}

/// The identity of a TLS peer: skip every certificate with `CA:TRUE`; exactly one must remain.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<String, PeerIdentityError> {
    todo!("{}", certs.len())
}

/// A `kes:v1:` API key: an Ed25519 seed.
pub struct ApiKey {
    seed: zeroize::Zeroizing<[u8; 32]>,
}

impl ApiKey {
    pub fn from_seed(seed: [u8; 32]) -> ApiKey {
        ApiKey { seed: zeroize::Zeroizing::new(seed) }
    }
    /// Parses `kes:v1:<base64(0x00 || seed)>` with upstream's error messages.
    pub fn parse(s: &str) -> Result<ApiKey, String> {
        todo!("{s}")
    }
    /// `kes:v1:...`
    pub fn encode(&self) -> String {
        todo!("{:?}", self.seed.len())
    }
    /// The identity of every certificate made from this key.
    pub fn identity(&self) -> String {
        todo!()
    }
    /// A self-signed client certificate and its PKCS#8 private key, both PEM (spec §2.4).
    pub fn certificate_pem(&self) -> Result<(String, String), String> {
        todo!()
    }
}

/// A self-signed ECDSA P-256 server certificate for `names` (DNS names or IPs), PEM cert and key.
pub fn self_signed_server_pem(names: &[String]) -> Result<(String, String), String> {
    todo!("{names:?}")
}
