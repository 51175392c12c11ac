//! Attestation documents: a COSE_Sign1 (ES384) over a CBOR payload, signed by
//! the Nitro Secure Module under a certificate chain that ends at a trusted root.
//!
//! [`parse`] decodes a document without trusting it. [`Verifier::verify`]
//! checks the chain, the signature and the time rules and returns a
//! [`VerifiedDocument`], the only type that says a document was verified.
//! [`sign`] builds documents the way the NSM does, for the mock NSM and tests.

mod chain;
mod cose;
pub(crate) use cose::CborError;
mod error;
mod payload;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::BTreeMap;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::EcdsaKeyPair;

pub use chain::der_error_reason;
pub use error::{AttestationError, CertificatePosition};
pub use payload::{DIGEST_SHA384, MAX_CERTIFICATE_LEN, MAX_PCRS, MAX_USER_FIELD_LEN};
pub use verify::{
    ALLOWED_CLOCK_SKEW, AWS_ROOT_G1_PEM, AWS_ROOT_G1_SHA256, DEFAULT_MAX_AGE, TimeMode, VerifiedDocument, Verifier,
    VerifyOptions, is_debug_mode,
};

/// The payload of an attestation document (nine fields, in the order real
/// documents use). `None` is CBOR null, which differs from an empty byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDocument {
    /// The enclave's id, `i-<instance id>-enc<enclave id>` on Nitro hardware.
    pub module_id: String,
    /// Always `SHA384`.
    pub digest: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// PCR index to value (48 bytes on Nitro).
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// DER of the leaf certificate whose key signs the document.
    pub certificate: Vec<u8>,
    /// DER of the CA certificates, root first.
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// Parses a document without verifying it: the COSE_Sign1 structure (tagged
/// or not), the ES384 algorithm, the signature length and every payload field
/// bound are checked, the signature and the chain are not.
pub fn parse(bytes: &[u8]) -> Result<AttestationDocument, AttestationError> {
    ParsedDocument::parse(bytes).map(ParsedDocument::into_document)
}

/// A document parsed as [`parse`] does, with its COSE_Sign1 kept for
/// [`Verifier::verify_parsed`]. A caller that must tell a malformed document
/// from one that fails verification parses with this type and then verifies,
/// without decoding the document twice.
#[derive(Debug)]
pub struct ParsedDocument {
    cose: cose::CoseSign1,
    document: AttestationDocument,
}

impl ParsedDocument {
    /// Parses a document without verifying it; see [`parse`].
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestationError> {
        let cose = cose::CoseSign1::decode(bytes)?;
        let document = payload::parse_payload(&cose.payload)?;
        Ok(Self { cose, document })
    }

    /// Returns the payload, not verified.
    pub fn document(&self) -> &AttestationDocument {
        &self.document
    }

    /// Returns the payload, not verified.
    pub fn into_document(self) -> AttestationDocument {
        self.document
    }
}

/// Encodes `document` as an untagged COSE_Sign1 signed with ES384 by the
/// P-384 key `signing_key` (made with `ECDSA_P384_SHA384_FIXED_SIGNING`).
///
/// The payload is a definite-length map with the keys in NSM order; the
/// document's fields are not checked against the parser's bounds.
pub fn sign(document: &AttestationDocument, signing_key: &EcdsaKeyPair) -> Result<Vec<u8>, AttestationError> {
    let payload = payload::encode_payload(document)?;
    let protected = cose::PROTECTED_ES384.to_vec();

    let signed = cose::sig_structure(&protected, &payload);
    let signature = signing_key
        .sign(&SystemRandom::new(), &signed)
        .map_err(|_| AttestationError::Signing { reason: "ECDSA signing failed".to_owned() })?;
    let signature = signature.as_ref().to_vec();
    if signature.len() != cose::ES384_SIGNATURE_LEN {
        return Err(AttestationError::Signing {
            reason: format!(
                "the key produced a {}-byte signature; expected 96 (use ECDSA_P384_SHA384_FIXED_SIGNING)",
                signature.len()
            ),
        });
    }

    Ok(cose::CoseSign1 { protected, payload, signature }.encode())
}
