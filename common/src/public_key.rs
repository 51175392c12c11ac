//! Recognition of peer public keys as users supply them: DER
//! SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), PEM, or base64 of DER.
//!
//! KMS wants DER. The common mistakes get their own errors: base64 applied
//! twice (what AWS CLI version 1 sends for an inline blob), a private key, a
//! certificate or other DER structure, and a curve KMS does not use for ECDH.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::Decode as _;
use der::asn1::ObjectIdentifier;
use spki::SubjectPublicKeyInfoRef;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// NIST curves KMS supports for key agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The KMS key spec of this curve.
    pub fn key_spec(self) -> &'static str {
        match self {
            Curve::P256 => "ECC_NIST_P256",
            Curve::P384 => "ECC_NIST_P384",
            Curve::P521 => "ECC_NIST_P521",
        }
    }

    /// The length of the ECDH shared secret Z (the x-coordinate) in bytes.
    pub fn shared_secret_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The curve of a KMS key spec, if it is one of the three.
    pub fn from_key_spec(spec: &str) -> Option<Self> {
        match spec {
            "ECC_NIST_P256" => Some(Curve::P256),
            "ECC_NIST_P384" => Some(Curve::P384),
            "ECC_NIST_P521" => Some(Curve::P521),
            _ => None,
        }
    }
}

/// The algorithm of a recognised public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Ec(Curve),
    Rsa,
}

/// A public key in DER SubjectPublicKeyInfo form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub der: Vec<u8>,
    pub algorithm: KeyAlgorithm,
}

/// Why bytes are not a usable public key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKeyError {
    #[error(
        "public key is base64 text of base64 text (encoded twice); decode it once, or pass the DER file with fileb://"
    )]
    Base64Twice,
    #[error("public key is base64 of PEM text; pass the PEM file itself, or its DER form with fileb://")]
    Base64OfPem,
    #[error("this is a private key ({label}), not a public key; extract the public key with `openssl pkey -pubout`")]
    PrivateKey { label: String },
    #[error(
        "this is an X.509 certificate, not a SubjectPublicKeyInfo; extract the key with `openssl x509 -pubkey -noout`"
    )]
    Certificate,
    #[error("PEM block `{label}` is not a public key; expected `-----BEGIN PUBLIC KEY-----`")]
    UnexpectedPemLabel { label: String },
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    #[error("DER structure is not a SubjectPublicKeyInfo: {0}")]
    NotSubjectPublicKeyInfo(String),
    #[error("public key is neither DER, PEM nor base64 of DER; pass the DER file with fileb://PATH")]
    Unrecognised,
    #[error(
        "curve {oid} is not supported for key agreement; use P-256, P-384 or P-521 (secp256k1 is signing-only in KMS)"
    )]
    UnsupportedCurve { oid: String },
    #[error("key algorithm {oid} is not supported; expected an EC (id-ecPublicKey) or RSA key")]
    UnsupportedAlgorithm { oid: String },
    #[error("public key is on {found:?} but the KMS key is {expected}; use a peer key on the KMS key's curve")]
    CurveMismatch { expected: &'static str, found: Curve },
}

/// Recognises `input` as DER, PEM, or base64 of DER, and returns the DER
/// SubjectPublicKeyInfo with its algorithm.
pub fn recognise(input: &[u8]) -> Result<PublicKey, PublicKeyError> {
    let text = std::str::from_utf8(input).ok().map(str::trim);

    if input.first() == Some(&0x30) {
        return parse_der(input);
    }
    let Some(text) = text else {
        return Err(PublicKeyError::Unrecognised);
    };
    if text.starts_with("-----BEGIN") {
        return parse_pem(text);
    }

    let Some(decoded) = decode_base64(text) else {
        return Err(PublicKeyError::Unrecognised);
    };
    if decoded.first() == Some(&0x30) {
        return parse_der(&decoded);
    }
    let inner = std::str::from_utf8(&decoded).ok().map(str::trim);
    match inner {
        Some(inner) if inner.starts_with("-----BEGIN") => Err(PublicKeyError::Base64OfPem),
        Some(inner) if decode_base64(inner).is_some_and(|d| d.first() == Some(&0x30)) => {
            Err(PublicKeyError::Base64Twice)
        }
        _ => Err(PublicKeyError::Unrecognised),
    }
}

/// Checks that `key` is an EC key on `expected`.
pub fn require_curve(key: &PublicKey, expected: Curve) -> Result<(), PublicKeyError> {
    match key.algorithm {
        KeyAlgorithm::Ec(found) if found == expected => Ok(()),
        KeyAlgorithm::Ec(found) => Err(PublicKeyError::CurveMismatch { expected: expected.key_spec(), found }),
        KeyAlgorithm::Rsa => Err(PublicKeyError::UnsupportedAlgorithm { oid: ID_RSA_ENCRYPTION.to_string() }),
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    STANDARD.decode(compact.as_bytes()).ok()
}

fn parse_pem(text: &str) -> Result<PublicKey, PublicKeyError> {
    let first_line = text.lines().next().unwrap_or_default();
    let label = first_line.trim_start_matches("-----BEGIN ").trim_end_matches('-').trim().to_owned();
    if label.contains("PRIVATE KEY") {
        return Err(PublicKeyError::PrivateKey { label });
    }
    if label == "CERTIFICATE" {
        return Err(PublicKeyError::Certificate);
    }
    if label != "PUBLIC KEY" {
        return Err(PublicKeyError::UnexpectedPemLabel { label });
    }

    let end = "-----END PUBLIC KEY-----";
    let body_end = text.find(end).ok_or_else(|| PublicKeyError::InvalidPem(format!("missing `{end}`")))?;
    let body = text.get(first_line.len()..body_end).unwrap_or_default();
    let der = decode_base64(body).ok_or_else(|| PublicKeyError::InvalidPem("the body is not base64".to_owned()))?;
    parse_der(&der)
}

fn parse_der(der: &[u8]) -> Result<PublicKey, PublicKeyError> {
    if let Some(kind) = private_key_kind(der) {
        return Err(PublicKeyError::PrivateKey { label: kind.to_owned() });
    }
    let spki = match SubjectPublicKeyInfoRef::from_der(der) {
        Ok(spki) => spki,
        Err(error) if x509_cert_like(der) => {
            let _ = error;
            return Err(PublicKeyError::Certificate);
        }
        Err(error) => return Err(PublicKeyError::NotSubjectPublicKeyInfo(error.to_string())),
    };

    let algorithm = match spki.algorithm.oid {
        ID_EC_PUBLIC_KEY => {
            let curve_oid =
                spki.algorithm.parameters.and_then(|p| p.decode_as::<ObjectIdentifier>().ok()).ok_or_else(|| {
                    PublicKeyError::NotSubjectPublicKeyInfo("EC key without a named curve".to_owned())
                })?;
            match curve_oid {
                SECP256R1 => KeyAlgorithm::Ec(Curve::P256),
                SECP384R1 => KeyAlgorithm::Ec(Curve::P384),
                SECP521R1 => KeyAlgorithm::Ec(Curve::P521),
                SECP256K1 => {
                    return Err(PublicKeyError::UnsupportedCurve { oid: "secp256k1 (1.3.132.0.10)".to_owned() });
                }
                other => return Err(PublicKeyError::UnsupportedCurve { oid: other.to_string() }),
            }
        }
        ID_RSA_ENCRYPTION => KeyAlgorithm::Rsa,
        other => return Err(PublicKeyError::UnsupportedAlgorithm { oid: other.to_string() }),
    };
    Ok(PublicKey { der: der.to_vec(), algorithm })
}

/// Reads one DER TLV header and returns (tag, header length, content length).
fn tlv(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, usize::from(first)));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return None;
    }
    let mut length = 0usize;
    for byte in bytes.get(2..2 + count)? {
        length = (length << 8) | usize::from(*byte);
    }
    Some((tag, 2 + count, length))
}

/// Names the private-key structure `der` starts like: PKCS#8, PKCS#1 RSA and
/// SEC1 EC private keys all open with SEQUENCE { INTEGER version, ... }.
fn private_key_kind(der: &[u8]) -> Option<&'static str> {
    let (outer_tag, outer_header, _) = tlv(der)?;
    if outer_tag != 0x30 {
        return None;
    }
    let inner = der.get(outer_header..)?;
    let (tag, header, length) = tlv(inner)?;
    if tag != 0x02 {
        return None;
    }
    let version = inner.get(header..header + length)?;
    let after = inner.get(header + length..)?;
    match (version, after.first()) {
        ([0], Some(0x30)) => Some("PKCS#8 PRIVATE KEY"),
        ([1], Some(0x04)) => Some("EC PRIVATE KEY"),
        ([0], Some(0x02)) => Some("RSA PRIVATE KEY"),
        _ => Some("PRIVATE KEY"),
    }
}

/// True when `der` opens like an X.509 certificate: SEQUENCE { SEQUENCE
/// { [0] version ... } ... }.
fn x509_cert_like(der: &[u8]) -> bool {
    let Some((0x30, outer_header, _)) = tlv(der) else {
        return false;
    };
    let Some(tbs) = der.get(outer_header..) else {
        return false;
    };
    let Some((0x30, tbs_header, _)) = tlv(tbs) else {
        return false;
    };
    matches!(tbs.get(tbs_header), Some(0xa0) | Some(0x02))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_lc_rs::agreement::{ECDH_P256, ECDH_P384, ECDH_P521, PrivateKey};
    use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der, PublicKeyX509Der};

    fn ec_spki(algorithm: &'static aws_lc_rs::agreement::Algorithm) -> Vec<u8> {
        let key = PrivateKey::generate(algorithm).unwrap();
        let der: PublicKeyX509Der<'static> = key.compute_public_key().unwrap().as_der().unwrap();
        der.as_ref().to_vec()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", STANDARD.encode(der))
    }

    #[test]
    fn recognise_der_of_each_curve() {
        for (algorithm, curve) in [(&ECDH_P256, Curve::P256), (&ECDH_P384, Curve::P384), (&ECDH_P521, Curve::P521)] {
            let der = ec_spki(algorithm);
            let key = recognise(&der).unwrap();
            assert_eq!(key.algorithm, KeyAlgorithm::Ec(curve));
            assert_eq!(key.der, der);
        }
    }

    #[test]
    fn recognise_pem_and_base64() {
        let der = ec_spki(&ECDH_P256);
        assert_eq!(recognise(pem("PUBLIC KEY", &der).as_bytes()).unwrap().der, der);
        assert_eq!(recognise(STANDARD.encode(&der).as_bytes()).unwrap().der, der);
        assert_eq!(recognise(format!("  {}\n", STANDARD.encode(&der)).as_bytes()).unwrap().der, der);
    }

    #[test]
    fn base64_twice_is_named() {
        let der = ec_spki(&ECDH_P256);
        let twice = STANDARD.encode(STANDARD.encode(&der));
        assert_eq!(recognise(twice.as_bytes()).unwrap_err(), PublicKeyError::Base64Twice);
        assert!(PublicKeyError::Base64Twice.to_string().contains("fileb://"));
    }

    #[test]
    fn base64_of_pem_is_named() {
        let der = ec_spki(&ECDH_P256);
        let wrapped = STANDARD.encode(pem("PUBLIC KEY", &der));
        assert_eq!(recognise(wrapped.as_bytes()).unwrap_err(), PublicKeyError::Base64OfPem);
    }

    #[test]
    fn private_keys_are_rejected() {
        let key = PrivateKey::generate(&ECDH_P256).unwrap();
        let sec1: EcPrivateKeyRfc5915Der<'static> = key.as_der().unwrap();
        let error = recognise(sec1.as_ref()).unwrap_err();
        assert_eq!(error, PublicKeyError::PrivateKey { label: "EC PRIVATE KEY".to_owned() });

        let pem_error = recognise(pem("PRIVATE KEY", sec1.as_ref()).as_bytes()).unwrap_err();
        assert!(matches!(pem_error, PublicKeyError::PrivateKey { .. }), "{pem_error:?}");
        assert!(pem_error.to_string().contains("openssl pkey -pubout"));

        let rsa = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> = rsa.as_der().unwrap();
        assert_eq!(
            recognise(pkcs8.as_ref()).unwrap_err(),
            PublicKeyError::PrivateKey { label: "PKCS#8 PRIVATE KEY".to_owned() }
        );
    }

    #[test]
    fn rsa_spki_is_recognised_as_rsa() {
        let rsa = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let spki: PublicKeyX509Der<'static> = rsa.public_key().as_der().unwrap();
        let key = recognise(spki.as_ref()).unwrap();
        assert_eq!(key.algorithm, KeyAlgorithm::Rsa);
        let error = require_curve(&key, Curve::P256).unwrap_err();
        assert!(matches!(error, PublicKeyError::UnsupportedAlgorithm { .. }), "{error:?}");
    }

    #[test]
    fn certificate_is_named() {
        let root =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/aws-nitro-enclaves-root-g1.pem"))
                .unwrap();
        assert_eq!(recognise(&root).unwrap_err(), PublicKeyError::Certificate);
        let text = String::from_utf8(root).unwrap();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        assert_eq!(recognise(&der).unwrap_err(), PublicKeyError::Certificate);
    }

    #[test]
    fn secp256k1_is_unsupported_curve() {
        // SPKI of a secp256k1 key: the P-256 template with the curve OID replaced.
        let mut der = vec![0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        der.extend_from_slice(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00, 0x04]);
        der.extend_from_slice(&[0x11; 64]);
        let error = recognise(&der).unwrap_err();
        assert!(matches!(error, PublicKeyError::UnsupportedCurve { .. }), "{error:?}");
        assert!(error.to_string().contains("secp256k1"));
    }

    #[test]
    fn curve_mismatch_is_named() {
        let key = recognise(&ec_spki(&ECDH_P384)).unwrap();
        let error = require_curve(&key, Curve::P256).unwrap_err();
        assert_eq!(error, PublicKeyError::CurveMismatch { expected: "ECC_NIST_P256", found: Curve::P384 });
        assert!(require_curve(&key, Curve::P384).is_ok());
    }

    #[test]
    fn garbage_is_unrecognised() {
        assert_eq!(recognise(b"hello world!").unwrap_err(), PublicKeyError::Unrecognised);
        assert_eq!(recognise(&[0xff, 0x00]).unwrap_err(), PublicKeyError::Unrecognised);
        assert_eq!(recognise(b"").unwrap_err(), PublicKeyError::Unrecognised);
        let error = recognise(&[0x30, 0x03, 0x01, 0x01, 0xff]).unwrap_err();
        assert!(matches!(error, PublicKeyError::NotSubjectPublicKeyInfo(_)), "{error:?}");
    }
}
