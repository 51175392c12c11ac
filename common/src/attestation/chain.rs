//! Certificate path validation for attestation documents, and the cache of
//! certificates already verified.
//!
//! The path is `certificate → cabundle[n-1] → … → cabundle[0]`, and
//! `cabundle[0]` must be byte-equal to a trusted root. Every certificate is
//! ECDSA P-384 signed with ecdsa-with-SHA384. CA certificates need
//! basicConstraints cA=true, a pathLenConstraint (when present) at least the
//! number of CAs below them, and keyUsage keyCertSign; the leaf must not be a
//! CA and needs keyUsage digitalSignature (RFC 5280 §4.2.1.3, §4.2.1.9).
//!
//! `x509-parser` only decodes, so these rules are checked here.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
use time::OffsetDateTime;
use x509_parser::error::X509Error;
use x509_parser::nom;
use x509_parser::nom::error::ErrorKind;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::{AttestationError, CertificatePosition};

const OID_ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";

/// The number of (certificate, issuer) links the cache contains before it drops
/// expired entries, and clears itself if that does not free room.
const CACHE_CAPACITY: usize = 4096;

pub(crate) type Sha256 = [u8; 32];

pub(crate) fn sha256(bytes: &[u8]) -> Sha256 {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Facts about one certificate whose encoding, algorithms and signature under
/// its issuer were checked.
pub(crate) struct CertificateInfo {
    pub subject: String,
    pub subject_raw: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `Some(path_len)` when basicConstraints has cA=true.
    pub ca: Option<Option<u32>>,
    /// keyUsage bits as x509-parser reports them, `None` when the extension is absent.
    pub key_usage: Option<u16>,
    /// The key for verifying certificates this one issued (DER signatures).
    pub certificate_key: ParsedPublicKey,
    /// The same key for verifying raw r‖s COSE signatures.
    pub cose_key: ParsedPublicKey,
}

impl fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("subject", &self.subject)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("ca", &self.ca)
            .field("key_usage", &self.key_usage)
            .finish_non_exhaustive()
    }
}

const KEY_USAGE_DIGITAL_SIGNATURE: u16 = 1;
const KEY_USAGE_KEY_CERT_SIGN: u16 = 1 << 5;

fn key_usage_names(bits: u16) -> String {
    const NAMES: [&str; 9] = [
        "digitalSignature",
        "nonRepudiation",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];
    let names: Vec<&str> =
        NAMES.iter().enumerate().filter(|(bit, _)| bits & (1 << bit) != 0).map(|(_, name)| *name).collect();
    if names.is_empty() { "has no bits set".to_owned() } else { format!("is {}", names.join(", ")) }
}

/// Returns the subject of a certificate, without checking anything else.
pub(crate) fn subject_of(der: &[u8]) -> Option<String> {
    X509Certificate::from_der(der).ok().map(|(_, cert)| cert.subject().to_string())
}

/// The issuer a certificate's signature is checked against.
pub(crate) enum Issuer<'a> {
    /// The certificate is a trusted root: check its self-signature.
    SelfSigned,
    /// The certificate above it in the path.
    Certificate(&'a CertificateInfo),
}

/// Formats a DER parse error. The `Display` of `nom::Err` and of
/// `X509Error::NomError` show Rust `Debug` text (`Parsing Error: Der(...)`,
/// `nom error: Eof`), so those cases are worded here.
pub fn der_error_reason(error: &nom::Err<X509Error>) -> String {
    match error {
        nom::Err::Incomplete(_)
        | nom::Err::Error(X509Error::NomError(ErrorKind::Eof))
        | nom::Err::Failure(X509Error::NomError(ErrorKind::Eof)) => "the DER ends inside an element".to_owned(),
        nom::Err::Error(inner) | nom::Err::Failure(inner) => inner.to_string(),
    }
}

/// Parses `der`, checks its algorithms, extensions and its signature under
/// `issuer`, and returns what later checks need.
pub(crate) fn inspect_certificate(
    position: CertificatePosition,
    der: &[u8],
    issuer: Issuer<'_>,
) -> Result<CertificateInfo, AttestationError> {
    let parse_error = |reason: String| AttestationError::CertificateParse { position, reason };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_error(der_error_reason(&e)))?;
    if !rest.is_empty() {
        return Err(parse_error(format!("{} bytes follow the certificate", rest.len())));
    }
    let subject = cert.subject().to_string();

    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    if algorithm != OID_ECDSA_WITH_SHA384 {
        return Err(AttestationError::CertificateAlgorithm { position, found: algorithm });
    }
    if cert.tbs_certificate.signature.algorithm != cert.signature_algorithm.algorithm {
        return Err(parse_error("the signature algorithm inside and outside tbsCertificate differ".to_owned()));
    }
    let spki = cert.public_key();
    let key_algorithm = spki.algorithm.algorithm.to_id_string();
    if key_algorithm != OID_EC_PUBLIC_KEY {
        return Err(AttestationError::CertificateKey { position, reason: format!("key algorithm is {key_algorithm}") });
    }
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|oid| oid.to_id_string());
    if curve.as_deref() != Some(OID_SECP384R1) {
        return Err(AttestationError::CertificateKey {
            position,
            reason: format!("curve is {}", curve.as_deref().unwrap_or("not named")),
        });
    }
    let point: &[u8] = spki.subject_public_key.data.as_ref();
    let key_error = |_| AttestationError::CertificateKey { position, reason: "the point is not on P-384".to_owned() };
    let certificate_key = ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, point).map_err(key_error)?;
    let cose_key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point).map_err(key_error)?;

    let ca = match cert.basic_constraints().map_err(|e| parse_error(format!("basicConstraints: {e}")))? {
        Some(bc) if bc.value.ca => Some(bc.value.path_len_constraint),
        _ => None,
    };
    let key_usage = cert.key_usage().map_err(|e| parse_error(format!("keyUsage: {e}")))?.map(|ku| ku.value.flags);
    for extension in cert.extensions() {
        let oid = extension.oid.to_id_string();
        if extension.critical && oid != OID_BASIC_CONSTRAINTS && oid != OID_KEY_USAGE {
            return Err(AttestationError::UnsupportedCriticalExtension { position, subject, oid });
        }
    }

    let (issuer_raw, issuer_key) = match issuer {
        Issuer::SelfSigned => (cert.subject().as_raw(), &certificate_key),
        Issuer::Certificate(info) => (info.subject_raw.as_slice(), &info.certificate_key),
    };
    if cert.issuer().as_raw() != issuer_raw {
        let mut expected = match issuer {
            Issuer::SelfSigned => subject.clone(),
            Issuer::Certificate(info) => info.subject.clone(),
        };
        let issuer = cert.issuer().to_string();
        if issuer == expected {
            expected.push_str(" (the same text in a different DER encoding)");
        }
        return Err(AttestationError::IssuerMismatch { position, issuer, expected });
    }
    let signature: &[u8] = cert.signature_value.data.as_ref();
    if issuer_key.verify_sig(cert.tbs_certificate.as_ref(), signature).is_err() {
        return Err(AttestationError::CertificateSignature { position, subject });
    }

    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    Ok(CertificateInfo {
        subject,
        subject_raw: cert.subject().as_raw().to_vec(),
        not_before,
        not_after,
        ca,
        key_usage,
        certificate_key,
        cose_key,
    })
}

/// Checks the certificate's validity period at `at`.
pub(crate) fn check_validity(
    position: CertificatePosition,
    info: &CertificateInfo,
    at: OffsetDateTime,
) -> Result<(), AttestationError> {
    if at < info.not_before {
        return Err(AttestationError::CertificateNotYetValid {
            position,
            subject: info.subject.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            at,
        });
    }
    if at > info.not_after {
        return Err(AttestationError::CertificateExpired {
            position,
            subject: info.subject.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            at,
        });
    }
    Ok(())
}

/// Checks a CA certificate that has `cas_below` CA certificates under it in the path.
pub(crate) fn check_ca(
    position: CertificatePosition,
    info: &CertificateInfo,
    cas_below: usize,
) -> Result<(), AttestationError> {
    let path_len = match info.ca {
        Some(path_len) => path_len,
        None => {
            return Err(AttestationError::NotCa {
                position,
                subject: info.subject.clone(),
                found: "is absent or has cA=false",
            });
        }
    };
    if let Some(path_len) = path_len
        && (path_len as usize) < cas_below
    {
        return Err(AttestationError::PathLength {
            position,
            subject: info.subject.clone(),
            path_len,
            below: cas_below,
        });
    }
    match info.key_usage {
        Some(bits) if bits & KEY_USAGE_KEY_CERT_SIGN != 0 => Ok(()),
        found => Err(AttestationError::KeyUsage {
            position,
            subject: info.subject.clone(),
            expected: "keyCertSign",
            found: found.map_or_else(|| "is absent".to_owned(), key_usage_names),
        }),
    }
}

/// Checks the end-entity certificate that signs the document.
pub(crate) fn check_leaf(info: &CertificateInfo) -> Result<(), AttestationError> {
    if info.ca.is_some() {
        return Err(AttestationError::LeafIsCa { subject: info.subject.clone() });
    }
    match info.key_usage {
        Some(bits) if bits & KEY_USAGE_DIGITAL_SIGNATURE != 0 => Ok(()),
        found => Err(AttestationError::KeyUsage {
            position: CertificatePosition::Leaf,
            subject: info.subject.clone(),
            expected: "digitalSignature",
            found: found.map_or_else(|| "is absent".to_owned(), key_usage_names),
        }),
    }
}

/// A cache of certificates whose encoding, extensions and signature were
/// already checked, keyed by the SHA-256 of the certificate's DER and of its
/// issuer's DER. Validity periods and positional rules are checked on every
/// use, so a cached certificate is never accepted outside its validity.
#[derive(Default)]
pub(crate) struct CertificateCache {
    entries: RwLock<HashMap<(Sha256, Sha256), Arc<CertificateInfo>>>,
}

impl fmt::Debug for CertificateCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCache").field("len", &self.len()).finish()
    }
}

impl CertificateCache {
    pub(crate) fn get(&self, certificate: &Sha256, issuer: &Sha256) -> Option<Arc<CertificateInfo>> {
        // A poisoned lock only means another thread panicked while holding it;
        // the map itself is still consistent, because every write is one insert or clear.
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(&(*certificate, *issuer)).cloned()
    }

    pub(crate) fn insert(&self, certificate: Sha256, issuer: Sha256, info: Arc<CertificateInfo>, now: OffsetDateTime) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, cached| cached.not_after >= now);
        }
        if entries.len() >= CACHE_CAPACITY {
            tracing::debug!(capacity = CACHE_CAPACITY, "certificate cache full of unexpired entries, clearing it");
            entries.clear();
        }
        entries.insert((certificate, issuer), info);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.read().map_or(0, |entries| entries.len())
    }

    pub(crate) fn clear(&self) {
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}
