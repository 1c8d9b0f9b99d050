//! Client identities: the SHA-256 of a certificate's SubjectPublicKeyInfo, `kes:v1:` API keys,
//! and the certificates made from them (spec §2.1, §2.4).
//!
//! An identity is the lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of a client's leaf
//! certificate. Nothing else in the certificate matters, so an API key (an Ed25519 seed) and
//! every certificate generated from it share one identity.
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub(crate) mod names;

/// Lowercase hex SHA-256 of a DER SubjectPublicKeyInfo.
pub(crate) fn identity_of_spki(spki_der: &[u8]) -> String {
    hex(&Sha256::digest(spki_der))
}

/// Why no identity could be taken from a TLS peer (messages are upstream's, spec §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerIdentityError {
    /// `tls: client certificate is required`
    NoCertificate,
    /// `tls: received more than one client certificate`
    TooMany,
}

impl std::fmt::Display for PeerIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerIdentityError::NoCertificate => "tls: client certificate is required",
            PeerIdentityError::TooMany => "tls: received more than one client certificate",
        })
    }
}

impl std::error::Error for PeerIdentityError {}

/// The identity of a TLS peer: skip every certificate with `CA:TRUE`; exactly one must remain.
///
/// A certificate that does not parse as X.509 is skipped as well: it has no SubjectPublicKeyInfo
/// to take an identity from, and treating it as "no certificate" never grants access.
pub(crate) fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<String, PeerIdentityError> {
    let mut found = None;
    for der in certs {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            continue;
        };
        if cert.is_ca() {
            continue;
        }
        if found.is_some() {
            return Err(PeerIdentityError::TooMany);
        }
        found = Some(identity_of_spki(cert.public_key().raw));
    }
    found.ok_or(PeerIdentityError::NoCertificate)
}

/// The identity of the first certificate in a PEM text (what `kes identity of <cert>` prints).
pub(crate) fn identity_of_certificate_pem(pem: &str) -> Result<String, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| format!("kes: invalid certificate PEM: {err}"))?;
    if block.label != "CERTIFICATE" {
        return Err(format!(
            "kes: invalid certificate PEM: unexpected block '{}'",
            block.label
        ));
    }
    let cert = block
        .parse_x509()
        .map_err(|err| format!("kes: invalid certificate: {err}"))?;
    Ok(identity_of_spki(cert.public_key().raw))
}

/// `kes:v1:`: the prefix of every API key.
const API_KEY_PREFIX: &str = "kes:v1:";
/// The type byte of an Ed25519 API key, the only type there is.
const API_KEY_TYPE_ED25519: u8 = 0x00;
/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32-byte public key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER of a PKCS#8 v1 Ed25519 private key up to the 32-byte seed, exactly what Go's
/// `x509.MarshalPKCS8PrivateKey` writes (RFC 8410 §7).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// Validity of a certificate made from an API key (upstream `GenerateCertificate`).
const API_KEY_CERT_VALIDITY: time::Duration = time::Duration::days(90);

/// A `kes:v1:` API key: an Ed25519 seed.
pub(crate) struct ApiKey {
    seed: zeroize::Zeroizing<[u8; 32]>,
}

impl ApiKey {
    pub(crate) fn from_seed(seed: [u8; 32]) -> ApiKey {
        ApiKey {
            seed: zeroize::Zeroizing::new(seed),
        }
    }

    /// A new random API key.
    pub(crate) fn generate() -> ApiKey {
        ApiKey::from_seed(crate::random::bytes())
    }

    /// Parses `kes:v1:<base64(0x00 || seed)>` with upstream's error messages.
    pub(crate) fn parse(s: &str) -> Result<ApiKey, String> {
        // Like Go's `strings.TrimPrefix`: without the prefix the whole string is decoded, which
        // fails for `v1:...` and `kes:...` on the `:`.
        let b64 = s.strip_prefix(API_KEY_PREFIX).unwrap_or(s);
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(go_base64_error)?,
        );
        if bytes.len() != 33 {
            return Err("kes: invalid API key: invalid length".into());
        }
        if bytes[0] != API_KEY_TYPE_ED25519 {
            return Err("kes: invalid API key: unsupported type".into());
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[1..]);
        let key = ApiKey::from_seed(seed);
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(key)
    }

    /// The API key of a PKCS#8 Ed25519 private key in PEM (what `kes identity of <key>` prints).
    ///
    /// PKCS#8 v1 (Go's, OpenSSL's) and v2 (with the public key, RFC 5958) are accepted; ring
    /// checks the structure (and, for v2, that the public key belongs to the seed). Both put
    /// the seed at the same offset, behind the same 16-byte header up to the length and version.
    pub(crate) fn from_pkcs8_pem(pem: &str) -> Result<ApiKey, String> {
        let invalid = |why: &str| format!("kes: invalid Ed25519 private key: {why}");
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|err| invalid(&err.to_string()))?;
        let der = der.secret_pkcs8_der();
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|err| invalid(&err.to_string()))?;
        let header_matches = der.len() >= 48
            && der[0] == ED25519_PKCS8_PREFIX[0]
            && der[2..4] == ED25519_PKCS8_PREFIX[2..4]
            && der[5..16] == ED25519_PKCS8_PREFIX[5..16];
        if !header_matches {
            return Err(invalid("unexpected PKCS#8 layout"));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&der[16..48]);
        let key = ApiKey::from_seed(seed);
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(key)
    }

    /// `kes:v1:...`
    pub(crate) fn encode(&self) -> String {
        let mut bytes = Zeroizing::new([0u8; 33]);
        bytes[0] = API_KEY_TYPE_ED25519;
        bytes[1..].copy_from_slice(&self.seed[..]);
        let mut s = String::with_capacity(51);
        s.push_str(API_KEY_PREFIX);
        base64::engine::general_purpose::STANDARD.encode_string(&bytes[..], &mut s);
        s
    }

    /// The Ed25519 public key.
    pub(crate) fn public_key(&self) -> [u8; 32] {
        let mut public = [0u8; 32];
        // Every 32-byte string is an Ed25519 seed: ring fails only on a wrong length.
        if let Ok(pair) = Ed25519KeyPair::from_seed_unchecked(&self.seed[..]) {
            public.copy_from_slice(pair.public_key().as_ref());
        }
        public
    }

    /// The DER SubjectPublicKeyInfo of the key.
    fn spki(&self) -> [u8; 44] {
        let mut spki = [0u8; 44];
        spki[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        spki[12..].copy_from_slice(&self.public_key());
        spki
    }

    /// The identity of every certificate made from this key.
    pub(crate) fn identity(&self) -> String {
        identity_of_spki(&self.spki())
    }

    /// The PKCS#8 v1 DER of the private key.
    fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(&self.seed[..]);
        der
    }

    /// A self-signed client certificate and its PKCS#8 private key, both PEM (spec §2.4).
    ///
    /// Like upstream's `GenerateCertificate`: `CN=<identity>`, valid from now for 90 days,
    /// key usage digitalSignature, extended key usage clientAuth, `CA:FALSE`, a random serial.
    pub(crate) fn certificate_pem(&self) -> Result<(String, String), String> {
        let now = time::OffsetDateTime::now_utc();
        let cert = crate::apicert::client_certificate_der(
            &self.seed,
            &self.spki(),
            &self.identity(),
            &random_serial(),
            now,
            now + API_KEY_CERT_VALIDITY,
        )?;
        Ok((
            crate::apicert::pem("CERTIFICATE", &cert),
            crate::apicert::pem("PRIVATE KEY", &self.pkcs8_der()),
        ))
    }
}

/// A self-signed ECDSA P-256 server certificate for `names` (DNS names or IPs), PEM cert and key.
///
/// Names that parse as IP addresses become IP SANs, the others DNS SANs. The subject CN is the
/// first name (`localhost` if there is none). Valid from now for one year, like upstream's dev
/// mode certificate it is meant for tests and development only.
#[cfg(feature = "certgen")]
pub(crate) fn self_signed_server_pem(names: &[String]) -> Result<(String, String), String> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        SerialNumber, PKCS_ECDSA_P256_SHA256,
    };
    let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|err| format!("kes: cannot generate a P-256 key: {err}"))?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|err| format!("kes: invalid server certificate name: {err}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let cn = names.first().map(String::as_str).unwrap_or("localhost");
    params.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(365);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|err| format!("kes: cannot create server certificate: {err}"))?;
    Ok((cert.pem(), key_pair.serialize_pem()))
}

/// Without the `certgen` feature there is no P-256 certificate generator (rcgen).
#[cfg(not(feature = "certgen"))]
pub(crate) fn self_signed_server_pem(_names: &[String]) -> Result<(String, String), String> {
    Err(NO_CERTGEN.into())
}

/// The error of everything that needs rcgen in a build without it.
pub(crate) const NO_CERTGEN: &str = "cannot make a certificate: this kes-node was built without \
     certificate generation (cargo feature certgen); bring your own certificate and key files";

/// A random positive 128-bit serial number (the top bit is cleared so the DER INTEGER needs no
/// leading zero and stays within the 20 bytes RFC 5280 allows).
fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = crate::random::bytes();
    serial[0] &= 0x7f;
    serial
}

/// Go's `base64.CorruptInputError` text.
fn go_base64_error(err: base64::DecodeError) -> String {
    let offset = match err {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            at
        }
        base64::DecodeError::InvalidLength(len) => len,
        base64::DecodeError::InvalidPadding => 0,
    };
    format!("illegal base64 data at input byte {offset}")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec vectors §C: API key → identity.
    const API_KEYS: [(&str, &str); 5] = [
        (
            "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs",
            "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
        ),
        (
            "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw",
            "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb",
        ),
        (
            "kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ",
            "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
        ),
        (
            "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc",
            "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
        ),
        (
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
            "dd4f4ea7208c5bbd56ce43f9b0717100b079d835fd09db329c9d15f8e36ad544",
        ),
    ];

    /// Spec vectors §D1: `kes@master root.cert` and `root.key`.
    const ROOT_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBKDCB26ADAgECAhB6vebGMUfKnmBKyqoApRSOMAUGAytlcDAbMRkwFwYDVQQD
DBByb290QHBsYXkubWluLmlvMB4XDTIwMDQzMDE1MjIyNVoXDTI1MDQyOTE1MjIy
NVowGzEZMBcGA1UEAwwQcm9vdEBwbGF5Lm1pbi5pbzAqMAUGAytlcAMhALzn735W
fmSH/ghKs+4iPWziZMmWdiWr/sqvqeW+WwSxozUwMzAOBgNVHQ8BAf8EBAMCB4Aw
EwYDVR0lBAwwCgYIKwYBBQUHAwIwDAYDVR0TAQH/BAIwADAFBgMrZXADQQDZOrGK
b2ATkDlu2pTcP3LyhSBDpYh7V4TvjRkBTRgjkacCzwFLm+mh+7US8V4dBpIDsJ4u
uWoF0y6vbLVGIlkG
-----END CERTIFICATE-----
";
    const ROOT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEID9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc
-----END PRIVATE KEY-----
";
    const ROOT_IDENTITY: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

    fn der_of(pem: &str) -> CertificateDer<'static> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        CertificateDer::from(block.contents)
    }

    #[test]
    fn api_key_identities() {
        for (key, identity) in API_KEYS {
            let parsed = ApiKey::parse(key).unwrap();
            assert_eq!(parsed.identity(), identity, "{key}");
            assert_eq!(parsed.encode(), key, "round trip");
        }
    }

    #[test]
    fn api_key_intermediate_values() {
        let key = ApiKey::parse("kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs").unwrap();
        assert_eq!(
            hex(&key.seed[..]),
            "6695e955c76ac174167681eb459d08e79367c7932038a42f8ce5375e9cf0d02c"
        );
        assert_eq!(
            hex(&key.public_key()),
            "97c655cdfa5829dcbf4d1e791f125ea552f0342cce061bf1d9976c5f7f7cafa7"
        );
    }

    #[test]
    fn api_key_parse_errors() {
        let err = |s: &str| ApiKey::parse(s).err().unwrap();
        assert!(err("v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E")
            .starts_with("illegal base64 data"));
        assert!(err("kes:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E")
            .starts_with("illegal base64 data"));
        assert_eq!(
            err("kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW"),
            "kes: invalid API key: unsupported type"
        );
        assert_eq!(err("kes:v1:AAAA"), "kes: invalid API key: invalid length");
        assert_eq!(err("kes:v1:"), "kes: invalid API key: invalid length");
    }

    #[test]
    fn root_cert_and_key() {
        assert_eq!(
            identity_of_certificate_pem(ROOT_CERT).unwrap(),
            ROOT_IDENTITY
        );
        assert_eq!(peer_identity(&[der_of(ROOT_CERT)]).unwrap(), ROOT_IDENTITY);
        let key = ApiKey::from_pkcs8_pem(ROOT_KEY).unwrap();
        assert_eq!(
            key.encode(),
            "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc"
        );
        assert_eq!(key.identity(), ROOT_IDENTITY);
        // Our PKCS#8 encoding is byte for byte Go's.
        let (_, block) = x509_parser::pem::parse_x509_pem(ROOT_KEY.as_bytes()).unwrap();
        assert_eq!(&key.pkcs8_der()[..], &block.contents[..]);
    }

    #[test]
    fn pkcs8_v2_private_key() {
        // ring writes PKCS#8 v2 (with the public key); the seed is read at the v1 offset.
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
        let pem = crate::apicert::pem("PRIVATE KEY", der.as_ref());
        let key = ApiKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(&key.public_key()[..], pair.public_key().as_ref());
        let err = ApiKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
        );
        assert!(err
            .err()
            .unwrap()
            .starts_with("kes: invalid Ed25519 private key"));
    }

    #[test]
    fn api_key_certificate() {
        let key = ApiKey::generate();
        let (cert_pem, key_pem) = key.certificate_pem().unwrap();
        assert_eq!(
            identity_of_certificate_pem(&cert_pem).unwrap(),
            key.identity()
        );
        assert_eq!(
            ApiKey::from_pkcs8_pem(&key_pem).unwrap().encode(),
            key.encode()
        );

        let der = der_of(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert_eq!(cert.subject().to_string(), format!("CN={}", key.identity()));
        assert!(!cert.is_ca());
        let validity = cert.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert_eq!(days, 90);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        // A positive, minimally encoded serial.
        let serial = cert.raw_serial();
        assert!(serial[0] < 0x80 && (serial[0] != 0 || serial[1] >= 0x80));
        // The certificate is signed by its own key.
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.public_key())
            .verify(
                cert.tbs_certificate.as_ref(),
                cert.signature_value.data.as_ref(),
            )
            .unwrap();
        // rustls-webpki (what the servers verify client certificates with) takes it too.
        let end_entity = webpki::EndEntityCert::try_from(&der).unwrap();
        assert_eq!(
            end_entity.verify_signature(
                webpki::ring::ED25519,
                cert.tbs_certificate.as_ref(),
                cert.signature_value.data.as_ref()
            ),
            Ok(())
        );
    }

    #[test]
    fn peer_identity_selection() {
        let (leaf, _) = ApiKey::generate().certificate_pem().unwrap();
        let (other, _) = ApiKey::generate().certificate_pem().unwrap();
        let ca = {
            use rcgen::{CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&key).unwrap().pem()
        };
        let leaf_id = identity_of_certificate_pem(&leaf).unwrap();
        assert_eq!(peer_identity(&[der_of(&leaf)]).unwrap(), leaf_id);
        assert_eq!(
            peer_identity(&[der_of(&ca), der_of(&leaf)]).unwrap(),
            leaf_id
        );
        assert_eq!(
            peer_identity(&[der_of(&leaf), der_of(&ca)]).unwrap(),
            leaf_id
        );
        assert_eq!(peer_identity(&[]), Err(PeerIdentityError::NoCertificate));
        assert_eq!(
            peer_identity(&[der_of(&ca)]),
            Err(PeerIdentityError::NoCertificate)
        );
        assert_eq!(
            peer_identity(&[der_of(&leaf), der_of(&other)]),
            Err(PeerIdentityError::TooMany)
        );
        assert_eq!(
            PeerIdentityError::TooMany.to_string(),
            "tls: received more than one client certificate"
        );
    }

    #[cfg(feature = "certgen")]
    #[test]
    fn server_certificate_sans() {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let (cert_pem, key_pem) = self_signed_server_pem(&names).unwrap();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let der = der_of(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        use x509_parser::extensions::GeneralName;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["localhost"]);
        assert_eq!(
            ips,
            [
                vec![127, 0, 0, 1],
                std::net::Ipv6Addr::LOCALHOST.octets().to_vec()
            ]
        );
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
    }
}
