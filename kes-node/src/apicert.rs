//! The one certificate every build makes: the self-signed Ed25519 client certificate of a
//! `kes:v1:` API key (spec §2.4), written as DER by hand and signed with ring.
//!
//! Cluster peers dial each other with it and the client uses it for `KES_API_KEY`, so even the
//! minimal build (without the `certgen` feature, i.e. without rcgen) needs it. Its shape is
//! upstream's `GenerateCertificate`: v3, a random positive serial, `CN=<identity>` as subject
//! and issuer, the given validity, key usage digitalSignature (critical), extended key usage
//! clientAuth and `CA:FALSE` (critical). Only the SubjectPublicKeyInfo decides the identity.
use base64::Engine as _;
use ring::signature::Ed25519KeyPair;

/// AlgorithmIdentifier of Ed25519 (RFC 8410): signature and key algorithm alike.
const ED25519_ALG: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// OID 2.5.4.3 (commonName).
const OID_CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
/// keyUsage (2.5.29.15), critical: digitalSignature.
const EXT_KEY_USAGE: [u8; 16] = [
    0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80,
];
/// extKeyUsage (2.5.29.37): clientAuth (1.3.6.1.5.5.7.3.2).
const EXT_CLIENT_AUTH: [u8; 21] = [
    0x30, 0x13, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01,
    0x05, 0x05, 0x07, 0x03, 0x02,
];
/// basicConstraints (2.5.29.19), critical: an empty SEQUENCE, i.e. `CA:FALSE`.
const EXT_NOT_CA: [u8; 14] = [
    0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00,
];

/// The DER certificate for the key pair of `seed`: `CN=<common_name>`, valid over
/// `[not_before, not_after]`, with the DER INTEGER content bytes of `serial` (any bytes: made
/// positive and minimal here).
pub(crate) fn client_certificate_der(
    seed: &[u8; 32],
    spki: &[u8],
    common_name: &str,
    serial: &[u8],
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let key = Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| "kes: invalid API key: not an Ed25519 seed".to_string())?;
    let name = {
        let mut atv = OID_CN.to_vec();
        tlv(0x0c, common_name.as_bytes(), &mut atv);
        let mut rdn = Vec::new();
        tlv(0x30, &atv, &mut rdn);
        let mut set = Vec::new();
        tlv(0x31, &rdn, &mut set);
        let mut name = Vec::new();
        tlv(0x30, &set, &mut name);
        name
    };
    let mut validity = Vec::new();
    time_der(not_before, &mut validity)?;
    time_der(not_after, &mut validity)?;
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&EXT_KEY_USAGE);
    extensions.extend_from_slice(&EXT_CLIENT_AUTH);
    extensions.extend_from_slice(&EXT_NOT_CA);

    let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x02]; // [0] EXPLICIT version v3
    tlv(0x02, &positive_integer(serial), &mut tbs);
    tbs.extend_from_slice(&ED25519_ALG);
    tbs.extend_from_slice(&name);
    tlv(0x30, &validity, &mut tbs);
    tbs.extend_from_slice(&name);
    tbs.extend_from_slice(spki);
    let mut ext_seq = Vec::new();
    tlv(0x30, &extensions, &mut ext_seq);
    tlv(0xa3, &ext_seq, &mut tbs);
    let mut tbs_der = Vec::new();
    tlv(0x30, &tbs, &mut tbs_der);

    let signature = key.sign(&tbs_der);
    let mut bits = vec![0x00]; // no unused bits
    bits.extend_from_slice(signature.as_ref());
    let mut cert = tbs_der;
    cert.extend_from_slice(&ED25519_ALG);
    tlv(0x03, &bits, &mut cert);
    let mut der = Vec::new();
    tlv(0x30, &cert, &mut der);
    Ok(der)
}

/// PEM of `der` with `label`, 64 characters a line (RFC 7468).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Appends tag, DER length and `content` to `out`.
fn tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// The content bytes of a positive DER INTEGER holding the big-endian unsigned `bytes`:
/// leading zeros dropped, one zero added back if the top bit is set (X.690 §8.3.2).
fn positive_integer(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let rest = &bytes[skip..];
    let mut out = Vec::with_capacity(rest.len() + 1);
    if !matches!(rest.first(), Some(b) if b & 0x80 == 0) {
        out.push(0);
    }
    out.extend_from_slice(rest);
    out
}

/// RFC 5280 §4.1.2.5: UTCTime for the years 1950 to 2049, GeneralizedTime otherwise, in UTC
/// to the second.
fn time_der(t: time::OffsetDateTime, out: &mut Vec<u8>) -> Result<(), String> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return Err(format!("kes: certificate time out of range: year {year}"));
    }
    let rest = format!(
        "{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if (1950..2050).contains(&year) {
        tlv(0x17, format!("{:02}{rest}", year % 100).as_bytes(), out);
    } else {
        tlv(0x18, format!("{year:04}{rest}").as_bytes(), out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_integers() {
        let mut out = Vec::new();
        tlv(0x04, &[7; 200], &mut out);
        assert_eq!(&out[..3], &[0x04, 0x81, 200]);
        out.clear();
        tlv(0x04, &[7; 300], &mut out);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(positive_integer(&[0, 0, 0x7f]), [0x7f]);
        assert_eq!(positive_integer(&[0, 0x80]), [0, 0x80]);
        assert_eq!(positive_integer(&[0xff, 1]), [0, 0xff, 1]);
        assert_eq!(positive_integer(&[0, 0]), [0]);
    }

    #[test]
    fn times() {
        let mut out = Vec::new();
        let t = time::OffsetDateTime::from_unix_timestamp(2_524_607_999).unwrap();
        time_der(t, &mut out).unwrap();
        assert_eq!(out, b"\x17\x0d491231235959Z");
        out.clear();
        time_der(t + time::Duration::seconds(1), &mut out).unwrap();
        assert_eq!(out, b"\x18\x0f20500101000000Z");
    }
}
