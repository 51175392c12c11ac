//! The signature section of a signed EIF.
//!
//! The section is a CBOR array with one entry per signed PCR; nitro-cli
//! signs PCR0 only:
//!
//! ```text
//! [ { "signing_certificate": <PEM file bytes>,
//!     "signature":           <COSE_Sign1 bytes> } ]
//! ```
//!
//! Both byte fields are CBOR arrays of small integers, not byte strings,
//! because nitro-cli serializes `Vec<u8>` with serde. The COSE_Sign1
//! (RFC 9052 §4.2, untagged, protected header `{1: -35}` for ES384, empty
//! unprotected header) signs the payload `{"register_index": 0,
//! "register_value": <PCR0 as an integer array>}`. PCR8 is measured over the
//! DER of the first certificate in `signing_certificate`.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED,
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, VerificationAlgorithm,
};
use ciborium::Value;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use x509_parser::asn1_rs::{Any, Class, Oid, Tag};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED448, OID_SIG_ED25519,
};
use x509_parser::pem::Pem;
use x509_parser::prelude::{AlgorithmIdentifier, FromDer, X509Certificate};
use zeroize::{Zeroize, Zeroizing};

use crate::measure::{PCR_LEN, Pcr, measure_bytes};

/// COSE algorithm identifiers (RFC 9053 §2.1).
const COSE_ES256: i64 = -7;
const COSE_ES384: i64 = -35;
const COSE_ES512: i64 = -36;

/// The COSE protected header `{1: -35}` (alg: ES384).
const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// Length of a P-384 uncompressed point: 0x04, then X and Y of 48 bytes each.
const P384_POINT_LEN: usize = 97;

/// The OpenSSL command that creates an ECDSA P-384 private key.
const P384_KEY_COMMAND: &str = "openssl ecparam -name secp384r1 -genkey";

/// Errors reading the signature section or loading a signing key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature section is not the CBOR structure nitro-cli writes.
    #[error("malformed signature section: {0}")]
    MalformedSection(String),
    /// The COSE_Sign1 inside the signature section is malformed.
    #[error("malformed COSE_Sign1 signature: {0}")]
    MalformedCose(String),
    /// No `CERTIFICATE` PEM block was found.
    #[error("{what} contains no PEM block labelled CERTIFICATE; pass the certificate in PEM form")]
    NoCertificate { what: &'static str },
    /// A PEM block could not be decoded.
    #[error("{what} is not valid PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    /// The certificate DER could not be parsed.
    #[error("signing certificate is not a valid X.509 certificate: {0}")]
    Certificate(String),
    /// The certificate's key is not an ECDSA P-384 key.
    #[error(
        "signing certificate has {found}; expected an ECDSA P-384 (secp384r1) key. \
         Issue the certificate for a key made with `{P384_KEY_COMMAND}`"
    )]
    CertificateKeyType {
        /// The key type in words, such as "an RSA key".
        found: String,
    },
    /// The certificate's P-384 public key is not an uncompressed point.
    #[error(
        "signing certificate has an ECDSA P-384 public key of {len} bytes; expected the {P384_POINT_LEN}-byte \
         uncompressed point. Issue the certificate again with OpenSSL's default, uncompressed point form"
    )]
    CertificatePointLength { len: usize },
    /// The private key file contains no supported key.
    #[error(
        "private key file contains no EC PRIVATE KEY or PRIVATE KEY PEM block (found {found}); \
         create one with `{P384_KEY_COMMAND}`"
    )]
    NoPrivateKey { found: String },
    /// The private key is encrypted.
    #[error("private key is encrypted; decrypt it first with `openssl pkey -in KEY -out PLAIN`")]
    EncryptedPrivateKey,
    /// The private key is not an ECDSA P-384 key.
    #[error("private key is {found}; expected an ECDSA P-384 (secp384r1) key. Create one with `{P384_KEY_COMMAND}`")]
    PrivateKeyType {
        /// The key type in words, such as "an RSA key".
        found: String,
    },
    /// The private key is not a P-384 key aws-lc accepts.
    #[error("private key is not a valid ECDSA P-384 key: {0}")]
    PrivateKey(String),
    /// The private key does not belong to the certificate.
    #[error("private key does not match the public key of the signing certificate")]
    KeyMismatch,
    /// Signing failed inside aws-lc.
    #[error("ECDSA signing failed")]
    Signing,
}

/// The result of checking the signature against the certificate and PCR0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SignatureCheck {
    /// The signature verifies under the certificate's key and signs this
    /// image's PCR0.
    Valid,
    /// The signature does not verify under the certificate's key.
    BadSignature,
    /// The signature verifies but signs another PCR value than this image's
    /// PCR0.
    PayloadMismatch,
    /// The COSE algorithm is not ES256, ES384 or ES512.
    UnsupportedAlgorithm(i64),
}

/// A parsed signature section.
#[derive(Clone)]
pub struct SignatureInfo {
    /// DER of the first certificate in the section; PCR8 measures it.
    pub certificate_der: Vec<u8>,
    pub certificate: CertificateInfo,
    pub check: SignatureCheck,
}

impl SignatureInfo {
    /// PCR8: the measurement of the certificate's DER.
    pub fn pcr8(&self) -> Pcr {
        measure_bytes(&self.certificate_der)
    }
}

impl fmt::Debug for SignatureInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureInfo")
            .field("certificate_der_len", &self.certificate_der.len())
            .field("certificate", &self.certificate)
            .field("check", &self.check)
            .finish()
    }
}

/// Fields of the signing certificate shown by `describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    #[serde(rename = "Subject")]
    pub subject: String,
    #[serde(rename = "IssuerName")]
    pub issuer: String,
    /// Signature algorithm OID in dotted form.
    #[serde(rename = "Algorithm")]
    pub algorithm: String,
    /// RFC 3339.
    #[serde(rename = "NotBefore")]
    pub not_before: String,
    /// RFC 3339.
    #[serde(rename = "NotAfter")]
    pub not_after: String,
}

/// Parses a signature section and checks its first signature against
/// `pcr0`. Malformed CBOR, COSE or certificates are errors; a signature that
/// does not verify is reported in [`SignatureInfo::check`].
pub fn parse_section(section: &[u8], pcr0: &Pcr) -> Result<SignatureInfo, SignatureError> {
    let value = decode_cbor(section).map_err(SignatureError::MalformedSection)?;
    let Value::Array(entries) = value else {
        return Err(SignatureError::MalformedSection("expected a CBOR array of PCR signatures".to_owned()));
    };
    let Some(first) = entries.first() else {
        return Err(SignatureError::MalformedSection("the array of PCR signatures is empty".to_owned()));
    };
    let Value::Map(fields) = first else {
        return Err(SignatureError::MalformedSection("a PCR signature is not a CBOR map".to_owned()));
    };
    let certificate_pem = byte_field(fields, "signing_certificate")?;
    let cose = byte_field(fields, "signature")?;

    let certificate_der = first_certificate_der(&certificate_pem, "signing_certificate")?;
    let (_, certificate) =
        X509Certificate::from_der(&certificate_der).map_err(|error| SignatureError::Certificate(error.to_string()))?;
    let info = certificate_info(&certificate);

    let check = check_cose(&cose, &certificate, pcr0)?;
    Ok(SignatureInfo { certificate_der, certificate: info, check })
}

/// A loaded signing certificate and its ECDSA P-384 private key.
pub struct SigningKey {
    certificate_pem: Vec<u8>,
    certificate_der: Vec<u8>,
    key_pair: EcdsaKeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("certificate_der_len", &self.certificate_der.len())
            .field("key_pair", &"<hidden>")
            .finish()
    }
}

impl SigningKey {
    /// Loads a PEM certificate and its PEM private key (SEC 1 `EC PRIVATE
    /// KEY` or PKCS #8 `PRIVATE KEY`), and checks that they belong together.
    /// The certificate bytes are stored in the image unchanged, as nitro-cli
    /// stores them.
    pub fn from_pem(certificate_pem: &[u8], private_key_pem: &[u8]) -> Result<Self, SignatureError> {
        let certificate_der = first_certificate_der(certificate_pem, "signing certificate file")?;
        let (_, certificate) = X509Certificate::from_der(&certificate_der)
            .map_err(|error| SignatureError::Certificate(error.to_string()))?;
        let certificate_point = p384_point(&certificate)?.to_vec();

        let key_der = private_key_der(private_key_pem)?;
        let key_pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, &key_der)
            .map_err(|error| private_key_error(&key_der, error.to_string()))?;

        if key_pair.public_key().as_ref() != certificate_point.as_slice() {
            return Err(SignatureError::KeyMismatch);
        }
        Ok(Self { certificate_pem: certificate_pem.to_vec(), certificate_der, key_pair })
    }

    /// PCR8 of images signed with this key.
    pub fn pcr8(&self) -> Pcr {
        measure_bytes(&self.certificate_der)
    }

    /// Signs `pcr0` and returns the encoded signature section.
    pub fn signature_section(&self, pcr0: &Pcr) -> Result<Vec<u8>, SignatureError> {
        let payload = pcr0_payload(pcr0);
        let to_be_signed = sig_structure(&PROTECTED_ES384, &payload);
        let signature = self.key_pair.sign(&SystemRandom::new(), &to_be_signed).map_err(|_| SignatureError::Signing)?;

        let cose = Value::Array(vec![
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(Vec::new()),
            Value::Bytes(payload),
            Value::Bytes(signature.as_ref().to_vec()),
        ]);
        let entry = Value::Map(vec![
            (Value::Text("signing_certificate".to_owned()), integer_array(&self.certificate_pem)),
            (Value::Text("signature".to_owned()), integer_array(&encode_cbor(&cose))),
        ]);
        Ok(encode_cbor(&Value::Array(vec![entry])))
    }
}

/// Encodes the CBOR payload nitro-cli signs: `{"register_index": 0,
/// "register_value": [PCR0 bytes as integers]}`.
pub fn pcr0_payload(pcr0: &Pcr) -> Vec<u8> {
    let info = Value::Map(vec![
        (Value::Text("register_index".to_owned()), Value::Integer(0.into())),
        (Value::Text("register_value".to_owned()), integer_array(pcr0)),
    ]);
    encode_cbor(&info)
}

/// Checks a COSE_Sign1 against the certificate's key and the expected PCR0.
fn check_cose(cose: &[u8], certificate: &X509Certificate<'_>, pcr0: &Pcr) -> Result<SignatureCheck, SignatureError> {
    let value = decode_cbor(cose).map_err(SignatureError::MalformedCose)?;
    let value = match value {
        Value::Tag(18, inner) => *inner,
        Value::Tag(tag, _) => {
            return Err(SignatureError::MalformedCose(format!("unexpected CBOR tag {tag}; expected 18")));
        }
        other => other,
    };
    let Value::Array(items) = value else {
        return Err(SignatureError::MalformedCose("expected a CBOR array of 4 items".to_owned()));
    };
    let [protected, _unprotected, payload, signature] = <[Value; 4]>::try_from(items)
        .map_err(|items| SignatureError::MalformedCose(format!("expected 4 items, found {}", items.len())))?;
    let (Value::Bytes(protected), Value::Bytes(payload), Value::Bytes(signature)) = (protected, payload, signature)
    else {
        return Err(SignatureError::MalformedCose(
            "protected header, payload and signature must be byte strings".to_owned(),
        ));
    };

    let algorithm_id = cose_algorithm(&protected)?;
    let algorithm: &'static dyn VerificationAlgorithm = match algorithm_id {
        COSE_ES256 => &ECDSA_P256_SHA256_FIXED,
        COSE_ES384 => &ECDSA_P384_SHA384_FIXED,
        COSE_ES512 => &ECDSA_P521_SHA512_FIXED,
        other => return Ok(SignatureCheck::UnsupportedAlgorithm(other)),
    };
    let public_key = certificate.public_key().subject_public_key.data.as_ref();
    let to_be_signed = sig_structure(&protected, &payload);
    if UnparsedPublicKey::new(algorithm, public_key).verify(&to_be_signed, &signature).is_err() {
        return Ok(SignatureCheck::BadSignature);
    }

    if payload != pcr0_payload(pcr0) {
        return Ok(SignatureCheck::PayloadMismatch);
    }
    Ok(SignatureCheck::Valid)
}

/// Reads the `alg` (label 1) parameter of a COSE protected header.
fn cose_algorithm(protected: &[u8]) -> Result<i64, SignatureError> {
    let header = decode_cbor(protected).map_err(SignatureError::MalformedCose)?;
    let Value::Map(entries) = header else {
        return Err(SignatureError::MalformedCose("protected header is not a CBOR map".to_owned()));
    };
    for (label, value) in entries {
        if label.as_integer() == Some(1.into()) {
            return value
                .as_integer()
                .and_then(|alg| i64::try_from(alg).ok())
                .ok_or_else(|| SignatureError::MalformedCose("alg is not an integer".to_owned()));
        }
    }
    Err(SignatureError::MalformedCose("protected header has no alg (label 1)".to_owned()))
}

/// Encodes the COSE Sig_structure `["Signature1", protected, h'', payload]`
/// (RFC 9052 §4.4).
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    encode_cbor(&Value::Array(vec![
        Value::Text("Signature1".to_owned()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// Reads a byte field that nitro-cli writes as an integer array; a CBOR
/// byte string is accepted as well.
fn byte_field(fields: &[(Value, Value)], name: &str) -> Result<Vec<u8>, SignatureError> {
    let value = fields
        .iter()
        .find(|(key, _)| key.as_text() == Some(name))
        .map(|(_, value)| value)
        .ok_or_else(|| SignatureError::MalformedSection(format!("missing field {name}")))?;
    match value {
        Value::Bytes(bytes) => Ok(bytes.clone()),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_integer().and_then(|integer| u8::try_from(integer).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| SignatureError::MalformedSection(format!("field {name} contains a value outside 0 to 255"))),
        _ => Err(SignatureError::MalformedSection(format!("field {name} is neither a byte array nor a byte string"))),
    }
}

/// Returns the DER of the first `CERTIFICATE` block in a PEM buffer.
fn first_certificate_der(pem: &[u8], what: &'static str) -> Result<Vec<u8>, SignatureError> {
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|error| SignatureError::Pem { what, reason: error.to_string() })?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err(SignatureError::NoCertificate { what })
}

/// Returns the DER of the first private key block, skipping the `EC
/// PARAMETERS` block that `openssl ecparam -genkey` writes first.
fn private_key_der(pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, SignatureError> {
    let mut labels = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let mut block =
            block.map_err(|error| SignatureError::Pem { what: "private key file", reason: error.to_string() })?;
        match block.label.as_str() {
            "EC PRIVATE KEY" | "PRIVATE KEY" => return Ok(Zeroizing::new(std::mem::take(&mut block.contents))),
            "ENCRYPTED PRIVATE KEY" => {
                block.contents.zeroize();
                return Err(SignatureError::EncryptedPrivateKey);
            }
            _ => {
                block.contents.zeroize();
                labels.push(block.label);
            }
        }
    }
    let found = if labels.is_empty() { "no PEM blocks".to_owned() } else { labels.join(", ") };
    Err(SignatureError::NoPrivateKey { found })
}

/// Returns the certificate's public key point after checking that it is an
/// uncompressed P-384 point.
fn p384_point<'a>(certificate: &'a X509Certificate<'_>) -> Result<&'a [u8], SignatureError> {
    let spki = certificate.public_key();
    let curve = spki.algorithm.parameters.as_ref().and_then(|parameters| parameters.as_oid().ok());
    if !is_p384(&spki.algorithm.algorithm, curve.as_ref()) {
        let found = key_type_name(&spki.algorithm.algorithm, curve.as_ref());
        return Err(SignatureError::CertificateKeyType { found });
    }
    let point = spki.subject_public_key.data.as_ref();
    if point.len() != P384_POINT_LEN {
        return Err(SignatureError::CertificatePointLength { len: point.len() });
    }
    Ok(point)
}

/// Explains why aws-lc rejected a private key: by its type when the DER
/// contains another key type than ECDSA P-384, else by aws-lc's `reason`.
fn private_key_error(der: &[u8], reason: String) -> SignatureError {
    match private_key_algorithm(der) {
        Some((algorithm, curve)) if !is_p384(&algorithm, curve.as_ref()) => {
            SignatureError::PrivateKeyType { found: key_type_name(&algorithm, curve.as_ref()) }
        }
        _ => SignatureError::PrivateKey(reason),
    }
}

/// Reads the key algorithm and named curve of a DER private key in PKCS #8
/// PrivateKeyInfo (RFC 5208) or SEC 1 ECPrivateKey (RFC 5915) form. Returns
/// `None` when the DER is neither.
fn private_key_algorithm(der: &[u8]) -> Option<(Oid<'static>, Option<Oid<'static>>)> {
    let (_, outer) = Any::from_der(der).ok()?;
    if outer.tag() != Tag::Sequence {
        return None;
    }
    // Both forms start with a version INTEGER.
    let (fields, _version) = Any::from_der(outer.data).ok()?;

    // PKCS #8: the privateKeyAlgorithm AlgorithmIdentifier follows, with the
    // curve OID as its parameters for EC keys.
    if let Ok((_, algorithm)) = AlgorithmIdentifier::from_der(fields) {
        let curve = algorithm.parameters.as_ref().and_then(|parameters| parameters.as_oid().ok());
        return Some((algorithm.algorithm.to_owned(), curve.map(|curve| curve.to_owned())));
    }

    // SEC 1: the privateKey OCTET STRING follows, then the optional
    // parameters [0], explicitly tagged, which contain the curve OID.
    let (fields, private_key) = Any::from_der(fields).ok()?;
    if private_key.tag() != Tag::OctetString {
        return None;
    }
    let curve = Any::from_der(fields)
        .ok()
        .filter(|(_, parameters)| parameters.class() == Class::ContextSpecific && parameters.tag() == Tag(0))
        .and_then(|(_, parameters)| Oid::from_der(parameters.data).ok())
        .map(|(_, curve)| curve.to_owned());
    Some((OID_KEY_TYPE_EC_PUBLIC_KEY, curve))
}

fn is_p384(algorithm: &Oid<'_>, curve: Option<&Oid<'_>>) -> bool {
    *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(&OID_NIST_EC_P384)
}

/// Names a key type for error messages, such as "an RSA key" or "an ECDSA
/// P-256 (prime256v1) key". An algorithm or curve without a name here is
/// given as its dotted OID.
fn key_type_name(algorithm: &Oid<'_>, curve: Option<&Oid<'_>>) -> String {
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        return match curve {
            Some(curve) if *curve == OID_EC_P256 => "an ECDSA P-256 (prime256v1) key".to_owned(),
            Some(curve) if *curve == OID_NIST_EC_P384 => "an ECDSA P-384 (secp384r1) key".to_owned(),
            Some(curve) if *curve == OID_NIST_EC_P521 => "an ECDSA P-521 (secp521r1) key".to_owned(),
            Some(curve) => format!("an EC key on curve {curve}"),
            None => "an EC key without a named curve".to_owned(),
        };
    }
    let names = [
        (OID_PKCS1_RSAENCRYPTION, "an RSA key"),
        (OID_PKCS1_RSASSAPSS, "an RSA-PSS key"),
        (OID_SIG_ED25519, "an Ed25519 key"),
        (OID_SIG_ED448, "an Ed448 key"),
        (OID_KEY_TYPE_DSA, "a DSA key"),
    ];
    match names.iter().find(|(oid, _)| oid == algorithm) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("a key of algorithm {algorithm}"),
    }
}

fn certificate_info(certificate: &X509Certificate<'_>) -> CertificateInfo {
    let format_time =
        |time: x509_parser::time::ASN1Time| time.to_datetime().format(&Rfc3339).unwrap_or_else(|_| time.to_string());
    CertificateInfo {
        subject: certificate.subject().to_string(),
        issuer: certificate.issuer().to_string(),
        algorithm: certificate.signature_algorithm.algorithm.to_id_string(),
        not_before: format_time(certificate.validity().not_before),
        not_after: format_time(certificate.validity().not_after),
    }
}

fn integer_array(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|byte| Value::Integer((*byte).into())).collect())
}

fn encode_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // ciborium's writer into a Vec does not fail, and every Value built in
    // this module is encodable. An error would leave an empty output, which
    // every reader rejects.
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes exactly one CBOR item; trailing bytes are an error.
fn decode_cbor(mut bytes: &[u8]) -> Result<Value, String> {
    let value: Value = ciborium::from_reader(&mut bytes).map_err(|error| format!("invalid CBOR: {error}"))?;
    if !bytes.is_empty() {
        return Err(format!("{} trailing bytes after the CBOR item", bytes.len()));
    }
    Ok(value)
}

// PCR values are SHA-384 digests; the payload encoding above assumes it.
const _: () = assert!(PCR_LEN == 48);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;

    /// Creates a self-signed P-384 certificate and its PKCS #8 key with rcgen.
    pub(crate) fn test_signer() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let params = rcgen::CertificateParams::new(vec!["eif-signing.test".to_owned()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    #[test]
    fn pcr0_payload_matches_nitro_cli_bytes() {
        // The payload nitro-cli 0.8 writes for register_value 0x00..=0x2f,
        // from the `aws-nitro-enclaves-image-format` test suite.
        let expected = "a26e72656769737465725f696e646578006e72656769737465725f76616c75659830000102030405060708090a0b0c0d0e0f101112131415161718181819181a181b181c181d181e181f1820182118221823182418251826182718281829182a182b182c182d182e182f";
        let pcr0: Pcr = std::array::from_fn(|i| i as u8);

        assert_eq!(hex::encode(pcr0_payload(&pcr0)), expected);
    }

    #[test]
    fn signature_section_round_trip_verifies() {
        let (certificate, key) = test_signer();
        let signer = SigningKey::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap();
        let pcr0 = [7u8; 48];

        let section = signer.signature_section(&pcr0).unwrap();
        let info = parse_section(&section, &pcr0).unwrap();

        assert_eq!(info.check, SignatureCheck::Valid);
        assert_eq!(info.pcr8(), signer.pcr8());
        assert_eq!(info.certificate.subject, "CN=rcgen self signed cert");
        assert_eq!(info.certificate.algorithm, "1.2.840.10045.4.3.3");
    }

    #[test]
    fn signature_over_other_pcr0_is_payload_mismatch() {
        let (certificate, key) = test_signer();
        let signer = SigningKey::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap();

        let section = signer.signature_section(&[1u8; 48]).unwrap();
        let info = parse_section(&section, &[2u8; 48]).unwrap();

        assert_eq!(info.check, SignatureCheck::PayloadMismatch);
    }

    #[test]
    fn signature_from_other_key_is_bad_signature() {
        let (certificate, key) = test_signer();
        let (other_certificate, other_key) = test_signer();
        let signer = SigningKey::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap();
        let other = SigningKey::from_pem(other_certificate.as_bytes(), other_key.as_bytes()).unwrap();
        let pcr0 = [3u8; 48];

        let mut forged = other.signature_section(&pcr0).unwrap();
        let genuine = signer.signature_section(&pcr0).unwrap();
        // Swap in the genuine certificate: the signature no longer matches it.
        let Value::Array(mut entries) = decode_cbor(&forged).unwrap() else { panic!("not an array") };
        let Value::Array(genuine_entries) = decode_cbor(&genuine).unwrap() else { panic!("not an array") };
        let Value::Map(fields) = &mut entries[0] else { panic!("not a map") };
        let Value::Map(genuine_fields) = &genuine_entries[0] else { panic!("not a map") };
        fields[0] = genuine_fields[0].clone();
        forged = encode_cbor(&Value::Array(entries));
        let info = parse_section(&forged, &pcr0).unwrap();

        assert_eq!(info.check, SignatureCheck::BadSignature);
    }

    #[test]
    fn key_of_other_certificate_is_rejected() {
        let (certificate, _) = test_signer();
        let (_, other_key) = test_signer();

        let error = SigningKey::from_pem(certificate.as_bytes(), other_key.as_bytes()).unwrap_err();

        assert!(matches!(error, SignatureError::KeyMismatch), "{error}");
    }

    /// Creates a self-signed certificate and its PKCS #8 key of any type that
    /// rcgen generates.
    fn signer_for(algorithm: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let params = rcgen::CertificateParams::new(vec!["other-key.test".to_owned()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// Key types other than ECDSA P-384, each with its name in messages.
    /// ML-DSA-44 (OID 2.16.840.1.101.3.4.3.17) has no name, so its OID is shown.
    fn other_key_types() -> [(&'static rcgen::SignatureAlgorithm, &'static str); 5] {
        [
            (&rcgen::PKCS_ECDSA_P256_SHA256, "an ECDSA P-256 (prime256v1) key"),
            (&rcgen::PKCS_ECDSA_P521_SHA512, "an ECDSA P-521 (secp521r1) key"),
            (&rcgen::PKCS_RSA_SHA256, "an RSA key"),
            (&rcgen::PKCS_ED25519, "an Ed25519 key"),
            (&rcgen::PKCS_ML_DSA_44, "a key of algorithm 2.16.840.1.101.3.4.3.17"),
        ]
    }

    #[test]
    fn p256_certificate_error_names_curve() {
        let (certificate, key) = signer_for(&rcgen::PKCS_ECDSA_P256_SHA256);

        let error = SigningKey::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap_err();

        assert!(matches!(error, SignatureError::CertificateKeyType { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            "signing certificate has an ECDSA P-256 (prime256v1) key; expected an ECDSA P-384 (secp384r1) key. \
             Issue the certificate for a key made with `openssl ecparam -name secp384r1 -genkey`"
        );
    }

    #[test]
    fn certificate_key_types_are_named() {
        for (algorithm, name) in other_key_types() {
            let (certificate, key) = signer_for(algorithm);

            let error = SigningKey::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap_err();

            let message = error.to_string();
            assert!(matches!(error, SignatureError::CertificateKeyType { .. }), "{name}: {message}");
            let expected = format!("signing certificate has {name}; expected an ECDSA P-384 (secp384r1) key.");
            assert!(message.starts_with(&expected), "{name}: {message}");
        }
    }

    #[test]
    fn private_key_types_are_named() {
        let (certificate, _) = test_signer();
        for (algorithm, name) in other_key_types() {
            let (_, key) = signer_for(algorithm);

            let error = SigningKey::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap_err();

            let message = error.to_string();
            assert!(matches!(error, SignatureError::PrivateKeyType { .. }), "{name}: {message}");
            let expected = format!(
                "private key is {name}; expected an ECDSA P-384 (secp384r1) key. \
                 Create one with `openssl ecparam -name secp384r1 -genkey`"
            );
            assert_eq!(message, expected);
        }
    }

    #[test]
    fn unnamed_curve_keeps_its_oid() {
        let secp256k1 = Oid::from(&[1, 3, 132, 0, 10]).unwrap();

        let name = key_type_name(&OID_KEY_TYPE_EC_PUBLIC_KEY, Some(&secp256k1));

        assert_eq!(name, "an EC key on curve 1.3.132.0.10");
    }

    #[test]
    fn rejected_p384_or_unparsed_key_keeps_reason() {
        let (_, key) = test_signer();
        let p384_der = Pem::iter_from_buffer(key.as_bytes()).next().unwrap().unwrap().contents;

        let p384 = private_key_error(&p384_der, "InvalidEncoding".to_owned());
        let unparsed = private_key_error(b"not DER", "InvalidEncoding".to_owned());

        for error in [p384, unparsed] {
            assert!(matches!(error, SignatureError::PrivateKey(ref reason) if reason == "InvalidEncoding"), "{error}");
        }
    }

    #[test]
    fn certificate_file_without_certificate_is_rejected() {
        let (_, key) = test_signer();

        let error = SigningKey::from_pem(key.as_bytes(), key.as_bytes()).unwrap_err();

        assert!(matches!(error, SignatureError::NoCertificate { .. }), "{error}");
    }

    #[test]
    fn key_file_without_key_is_rejected() {
        let (certificate, _) = test_signer();

        let error = SigningKey::from_pem(certificate.as_bytes(), certificate.as_bytes()).unwrap_err();

        assert!(matches!(error, SignatureError::NoPrivateKey { ref found } if found == "CERTIFICATE"), "{error}");
    }

    #[test]
    fn encrypted_key_is_rejected() {
        let (certificate, _) = test_signer();
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";

        let error = SigningKey::from_pem(certificate.as_bytes(), encrypted.as_bytes()).unwrap_err();

        assert!(matches!(error, SignatureError::EncryptedPrivateKey), "{error}");
    }

    #[test]
    fn malformed_sections_are_rejected() {
        let pcr0 = [0u8; 48];
        let cases: [(&str, Vec<u8>); 4] = [
            ("not cbor", vec![0xff, 0x00]),
            ("map instead of array", encode_cbor(&Value::Map(Vec::new()))),
            ("empty array", encode_cbor(&Value::Array(Vec::new()))),
            ("missing fields", encode_cbor(&Value::Array(vec![Value::Map(Vec::new())]))),
        ];

        for (name, section) in cases {
            let error = parse_section(&section, &pcr0).unwrap_err();
            assert!(matches!(error, SignatureError::MalformedSection(_)), "{name}: {error}");
        }
    }

    #[test]
    fn byte_field_rejects_integers_above_255() {
        let fields = vec![(Value::Text("signature".to_owned()), Value::Array(vec![Value::Integer(256.into())]))];

        let error = byte_field(&fields, "signature").unwrap_err();

        assert!(error.to_string().contains("outside 0 to 255"), "{error}");
    }
}
