//! Errors from parsing, verifying and signing attestation documents.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where a certificate sits in the document: the leaf in `certificate`, or
/// an entry of `cabundle` (index 0 is the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificatePosition {
    Leaf,
    Bundle(usize),
}

impl fmt::Display for CertificatePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificatePosition::Leaf => f.write_str("certificate (leaf)"),
            CertificatePosition::Bundle(0) => f.write_str("cabundle[0] (root)"),
            CertificatePosition::Bundle(index) => write!(f, "cabundle[{index}]"),
        }
    }
}

/// Formats an instant as RFC 3339 for error messages.
pub(crate) fn rfc3339(instant: &OffsetDateTime) -> String {
    instant.format(&Rfc3339).unwrap_or_else(|_| format!("{} s since the epoch", instant.unix_timestamp()))
}

/// Formats a millisecond timestamp as RFC 3339 for error messages.
pub(crate) fn rfc3339_millis(millis: u64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(instant) => rfc3339(&instant),
        Err(_) => format!("{millis} ms since the epoch"),
    }
}

/// Errors from parsing, verifying or building an attestation document.
///
/// Parse errors (the document's bytes are malformed) come first, then chain
/// errors (a certificate fails a check), then document-level verification
/// errors. Each variant carries the values involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    // --- COSE_Sign1 envelope; the document's producer is at fault ---
    /// The document has no bytes.
    #[error("attestation document is empty; expected a COSE_Sign1 structure in binary CBOR, as the NSM returns it")]
    Empty,
    /// The bytes start like a COSE_Sign1 but end inside a CBOR item.
    #[error(
        "attestation document is truncated: its {length} bytes end inside a CBOR item, so the COSE_Sign1 structure is incomplete; pass the whole document"
    )]
    Truncated { length: usize },
    /// The bytes start like a COSE_Sign1 but are not well-formed CBOR.
    #[error("attestation document is not well-formed CBOR ({reason}); expected a COSE_Sign1 structure")]
    Cbor { reason: String },
    /// Bytes follow the COSE_Sign1 structure.
    #[error(
        "attestation document has {count} trailing bytes after the COSE_Sign1 structure; pass exactly one document"
    )]
    TrailingBytes { count: usize },
    /// The document carries a CBOR tag other than 18 (COSE_Sign1).
    #[error("attestation document has CBOR tag {tag}; expected no tag or tag 18 (COSE_Sign1)")]
    UnexpectedTag { tag: u64 },
    /// The top-level item is not a four-element array, or the bytes neither
    /// decode as CBOR nor start like a COSE_Sign1.
    #[error(
        "input is not an attestation document: expected a COSE_Sign1 structure (a CBOR array of 4 items), found {found}"
    )]
    NotCoseSign1 { found: String },
    /// One of the four COSE_Sign1 items has the wrong CBOR type.
    #[error("COSE_Sign1 {field} has the wrong type: expected {expected}, found {found}")]
    CoseItemType { field: &'static str, expected: &'static str, found: String },
    /// The payload is CBOR null (a detached payload), which attestation documents never use.
    #[error("COSE_Sign1 payload is nil; attestation documents carry the payload inline")]
    NilPayload,
    /// The protected header is not a CBOR map or has an unexpected label.
    #[error("COSE_Sign1 protected header is invalid: {reason}")]
    ProtectedHeader { reason: String },
    /// The protected header names an algorithm other than ES384 (-35).
    #[error("COSE_Sign1 algorithm is {found}; expected ES384 (-35)")]
    UnsupportedAlgorithm { found: String },
    /// The signature is not a raw 96-byte r‖s P-384 signature.
    #[error("COSE_Sign1 signature is {found} bytes; expected 96 (raw r||s for ES384)")]
    SignatureLength { found: usize },

    // --- payload fields; the document's producer is at fault ---
    /// The payload is not a CBOR map.
    #[error("attestation payload is invalid: {reason}")]
    Payload { reason: String },
    /// A mandatory payload field is absent.
    #[error("attestation payload is missing the mandatory field `{field}`")]
    MissingField { field: &'static str },
    /// A payload field has the wrong CBOR type.
    #[error("attestation field `{field}` has the wrong type: expected {expected}, found {found}")]
    FieldType { field: String, expected: &'static str, found: String },
    /// A payload key appears twice.
    #[error("attestation field `{field}` appears more than once")]
    DuplicateField { field: String },
    /// A payload key is not one of the nine document fields.
    #[error("attestation payload has the unknown field `{field}`")]
    UnknownField { field: String },
    /// `digest` is not `SHA384`.
    #[error("attestation field `digest` is `{found}`; expected `SHA384`")]
    UnsupportedDigest { found: String },
    /// `module_id` is the empty string.
    #[error("attestation field `module_id` is empty; expected the enclave's module id (i-...-enc...)")]
    EmptyModuleId,
    /// `timestamp` is zero.
    #[error("attestation field `timestamp` is zero; expected milliseconds since the Unix epoch")]
    ZeroTimestamp,
    /// `pcrs` has no entries or more than 32.
    #[error("attestation field `pcrs` has {count} entries; expected 1 to 32")]
    PcrCount { count: usize },
    /// A PCR index is over 31.
    #[error("PCR index {index} is out of range; expected 0 to 31")]
    PcrIndex { index: u64 },
    /// A PCR index appears twice.
    #[error("PCR index {index} appears more than once in `pcrs`")]
    DuplicatePcr { index: u32 },
    /// A PCR value is not 32, 48 or 64 bytes long.
    #[error("PCR{index} is {length} bytes; expected 32, 48 or 64")]
    PcrLength { index: u32, length: usize },
    /// `cabundle` has no entries.
    #[error("attestation field `cabundle` is empty; expected the CA chain from the root down")]
    EmptyCabundle,
    /// A certificate is empty or longer than 1024 bytes.
    #[error("{position} is {length} bytes; expected 1 to 1024")]
    CertificateLength { position: CertificatePosition, length: usize },
    /// `public_key`, `user_data` or `nonce` is longer than 1024 bytes.
    #[error("attestation field `{field}` is {length} bytes; the maximum is {max}")]
    FieldTooLong { field: &'static str, length: usize, max: usize },

    // --- certificate chain; the document's producer or the caller's trust settings are at fault ---
    /// A certificate is not valid DER X.509.
    #[error("{position} is not a valid X.509 certificate: {reason}")]
    CertificateParse { position: CertificatePosition, reason: String },
    /// `cabundle[0]` is not one of the trusted roots.
    #[error(
        "cabundle[0] (SHA-256 {sha256}, subject `{subject}`) is not a trusted root; add its PEM with --root if you trust it"
    )]
    UntrustedRoot { sha256: String, subject: String },
    /// A certificate is signed with an algorithm other than ecdsa-with-SHA384.
    #[error("{position} is signed with algorithm {found}; expected ecdsa-with-SHA384 (1.2.840.10045.4.3.3)")]
    CertificateAlgorithm { position: CertificatePosition, found: String },
    /// A certificate's public key is not an ECDSA P-384 key.
    #[error("{position} public key is invalid: {reason}; expected an EC key on P-384 (secp384r1)")]
    CertificateKey { position: CertificatePosition, reason: String },
    /// A certificate's issuer name differs from the subject of the certificate above it.
    #[error("{position} names issuer `{issuer}`, but the certificate above it is `{expected}`")]
    IssuerMismatch { position: CertificatePosition, issuer: String, expected: String },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("{position} (subject `{subject}`) signature does not verify under its issuer's key")]
    CertificateSignature { position: CertificatePosition, subject: String },
    /// The verification instant is before a certificate's notBefore.
    #[error(
        "{position} (subject `{subject}`) is not yet valid at {}: notBefore {}, notAfter {}",
        rfc3339(at),
        rfc3339(not_before),
        rfc3339(not_after)
    )]
    CertificateNotYetValid {
        position: CertificatePosition,
        subject: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// The verification instant is after a certificate's notAfter.
    #[error(
        "{position} (subject `{subject}`) expired before {}: notBefore {}, notAfter {}; verify an archived document at its own timestamp",
        rfc3339(at),
        rfc3339(not_before),
        rfc3339(not_after)
    )]
    CertificateExpired {
        position: CertificatePosition,
        subject: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// A CA certificate lacks basicConstraints with cA set.
    #[error("{position} (subject `{subject}`) is used as a CA but basicConstraints {found}")]
    NotCa { position: CertificatePosition, subject: String, found: &'static str },
    /// A CA certificate's pathLenConstraint is smaller than the number of CAs below it.
    #[error("{position} (subject `{subject}`) allows {path_len} intermediate CAs below it, but the chain has {below}")]
    PathLength { position: CertificatePosition, subject: String, path_len: u32, below: usize },
    /// The leaf certificate is a CA certificate.
    #[error("certificate (leaf, subject `{subject}`) has basicConstraints cA=true; expected an end-entity certificate")]
    LeafIsCa { subject: String },
    /// A certificate's keyUsage is absent or lacks the bit its position needs.
    #[error("{position} (subject `{subject}`) keyUsage {found}; expected {expected}")]
    KeyUsage { position: CertificatePosition, subject: String, expected: &'static str, found: String },
    /// A certificate has a critical extension this verifier does not process.
    #[error("{position} (subject `{subject}`) has the unsupported critical extension {oid}")]
    UnsupportedCriticalExtension { position: CertificatePosition, subject: String, oid: String },

    // --- document-level verification ---
    /// The COSE signature does not verify under the leaf certificate's key.
    #[error("COSE_Sign1 signature does not verify under the leaf certificate's key (subject `{subject}`)")]
    CoseSignature { subject: String },
    /// In live mode, the document is older than the maximum age.
    #[error(
        "attestation document is too old: timestamp {}, verified at {}, age {} ms exceeds the maximum {} ms; request a fresh document",
        rfc3339_millis(*timestamp), rfc3339(now), age.as_millis(), max_age.as_millis()
    )]
    DocumentTooOld { timestamp: u64, now: OffsetDateTime, age: Duration, max_age: Duration },
    /// In live mode, the document's timestamp is ahead of the clock by more than the allowed skew.
    #[error(
        "attestation document timestamp {} is ahead of the verifier's clock {} by more than {} s; check both clocks",
        rfc3339_millis(*timestamp), rfc3339(now), allowed_skew.as_secs()
    )]
    DocumentFromFuture { timestamp: u64, now: OffsetDateTime, allowed_skew: Duration },
    /// The document comes from a debug-mode enclave and debug documents were not allowed.
    #[error(
        "attestation document comes from a debug-mode enclave (PCR0, PCR1 and PCR2 are all zero); allow debug documents explicitly to accept it"
    )]
    DebugMode,
    /// The requested verification instant cannot be represented.
    #[error("verification time is invalid: {reason}")]
    InvalidTime { reason: String },

    // --- trust configuration and signing; the caller is at fault ---
    /// Root PEM text holds no certificate or an invalid one.
    #[error("trusted root PEM is invalid: {reason}")]
    RootPem { reason: String },
    /// Signing a document failed.
    #[error("signing the attestation document failed: {reason}")]
    Signing { reason: String },
}
