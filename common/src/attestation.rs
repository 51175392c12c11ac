//! Attestation documents: COSE_Sign1 (ES384) over a CBOR payload, signed by
//! the NSM under a certificate chain that ends at a trusted root.
//!
//! INTERFACE STUB: the attestation work replaces these bodies.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Errors from parsing, verifying or building an attestation document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    #[error("attestation document is invalid: {0}")]
    Invalid(String),
}

/// The payload of an attestation document (nine fields, in the order real
/// documents use). `None` is CBOR null, which differs from an empty byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDocument {
    pub module_id: String,
    pub digest: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    pub certificate: Vec<u8>,
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// When certificates are checked.
#[derive(Debug, Clone, Copy)]
pub enum TimeMode {
    /// The current time; documents older than `max_age` are rejected.
    Live { max_age: Duration },
    /// A given instant.
    At(SystemTime),
    /// The document's own timestamp.
    DocumentTime,
}

/// Options of one verification.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    pub time: TimeMode,
    /// Accept debug-mode documents (PCR0, PCR1 and PCR2 all zero).
    pub allow_debug: bool,
}

/// A document whose signature and chain were verified.
#[derive(Debug, Clone)]
pub struct VerifiedDocument {
    document: AttestationDocument,
}

impl VerifiedDocument {
    pub fn document(&self) -> &AttestationDocument {
        &self.document
    }
}

/// Verifies documents against a set of trusted root certificates (DER).
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    roots: Vec<Vec<u8>>,
}

impl Verifier {
    /// A verifier that trusts the AWS Nitro Enclaves root G1 only.
    pub fn with_aws_root() -> Self {
        unimplemented!()
    }
    /// Adds trusted roots from PEM text (one or more certificates).
    pub fn add_root_pem(&mut self, _pem: &[u8]) -> Result<(), AttestationError> {
        unimplemented!()
    }
    pub fn verify(&self, _bytes: &[u8], _options: &VerifyOptions) -> Result<VerifiedDocument, AttestationError> {
        let _ = &self.roots;
        unimplemented!()
    }
}

/// Parses a document without verifying it.
pub fn parse(_bytes: &[u8]) -> Result<AttestationDocument, AttestationError> {
    unimplemented!()
}

/// Encodes `document` as an untagged COSE_Sign1 signed with ES384 by the
/// P-384 key `signing_key` (made with `ECDSA_P384_SHA384_FIXED_SIGNING`).
pub fn sign(
    _document: &AttestationDocument,
    _signing_key: &aws_lc_rs::signature::EcdsaKeyPair,
) -> Result<Vec<u8>, AttestationError> {
    unimplemented!()
}
