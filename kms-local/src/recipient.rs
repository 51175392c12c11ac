//! The `Recipient` parameter: verification of the attestation document and
//! the envelope of the result to the document's RSA public key.

use std::collections::BTreeMap;
use std::time::Duration;

use recipient_common::attestation::{AttestationError, ParsedDocument, TimeMode, Verifier, VerifyOptions};
use serde::Deserialize;

use crate::blob::Blob;
use crate::error::{ErrorKind, KmsError, KmsResult};
use crate::keys::check_recipient_rsa_key;

/// The only `KeyEncryptionAlgorithm` KMS accepts.
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// The largest `AttestationDocument` KMS accepts, in bytes.
pub const MAX_ATTESTATION_DOCUMENT_LEN: usize = 262_144;
/// The default maximum age of an attestation document.
pub const DEFAULT_MAX_DOCUMENT_AGE: Duration = Duration::from_secs(300);

/// The `Recipient` request member.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecipientParam {
    pub key_encryption_algorithm: Option<String>,
    pub attestation_document: Option<Blob>,
}

/// What the rest of a request uses from a verified attestation document.
#[derive(Debug, Clone)]
pub struct VerifiedRecipient {
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// The RSA SubjectPublicKeyInfo the result is enveloped to.
    pub public_key: Vec<u8>,
    pub module_id: String,
}

/// Verifies `Recipient` documents against the trusted roots.
#[derive(Debug)]
pub struct RecipientVerifier {
    verifier: Verifier,
    max_age: Duration,
}

impl RecipientVerifier {
    pub fn new(verifier: Verifier, max_age: Duration) -> Self {
        Self { verifier, max_age }
    }

    /// Checks the parameter and verifies its document: signature, chain to a
    /// trusted root at the current time, age at most the configured maximum.
    /// Debug-mode documents are accepted, so that the key policy decides about
    /// them as KMS does.
    pub fn verify(&self, recipient: &RecipientParam) -> KmsResult<VerifiedRecipient> {
        match recipient.key_encryption_algorithm.as_deref() {
            Some(KEY_ENCRYPTION_ALGORITHM) => {}
            Some(other) => {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: value {other:?} at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: member must satisfy enum value set: [{KEY_ENCRYPTION_ALGORITHM}]"
                )));
            }
            None => {
                return Err(KmsError::validation(
                    "Recipient.KeyEncryptionAlgorithm is missing; it must be RSAES_OAEP_SHA_256",
                ));
            }
        }
        let Some(document) = &recipient.attestation_document else {
            return Err(KmsError::validation("Recipient.AttestationDocument is missing"));
        };
        let document = document.as_slice();
        if document.is_empty() || document.len() > MAX_ATTESTATION_DOCUMENT_LEN {
            return Err(KmsError::validation(format!(
                "Recipient.AttestationDocument has {} bytes; it must have 1 to {MAX_ATTESTATION_DOCUMENT_LEN} bytes",
                document.len()
            )));
        }
        for prefix in ["fileb://", "file://"] {
            if document.starts_with(prefix.as_bytes()) {
                let text: String = String::from_utf8_lossy(document).chars().take(200).collect();
                return Err(KmsError::validation(format!(
                    "Recipient.AttestationDocument is the text {text:?}, not a document: the file was not read. \
                     The AWS CLI resolves {prefix} only in top-level arguments, not inside --recipient; \
                     send the Recipient through an SDK or pass the document bytes"
                )));
            }
        }

        let parsed = ParsedDocument::parse(document).map_err(|error| {
            if is_base64_document(document) {
                return KmsError::validation(
                    "Recipient.AttestationDocument contains the base64 text of an attestation document, so it was \
                     base64-encoded twice; send the document's bytes, which the SDK or the CLI encodes once",
                );
            }
            KmsError::validation(format!("Recipient.AttestationDocument is not a valid attestation document: {error}"))
        })?;
        let options = VerifyOptions { time: TimeMode::Live { max_age: self.max_age }, allow_debug: true };
        let verified = self.verifier.verify_parsed(parsed, &options).map_err(|error| {
            let hint = if matches!(error, AttestationError::UntrustedRoot { .. }) {
                " (kms-local trusts the AWS Nitro Enclaves root G1 and each root given with --trust-root)"
            } else {
                ""
            };
            KmsError::new(
                ErrorKind::AccessDenied,
                format!("the Recipient attestation document was rejected: {error}{hint}"),
            )
        })?;
        let parsed = verified.document();

        let Some(public_key) = &parsed.public_key else {
            return Err(KmsError::validation(
                "the Recipient attestation document has no public_key; request the document with the RSA public key (DER SubjectPublicKeyInfo) the result is encrypted to",
            ));
        };
        check_recipient_rsa_key(public_key)
            .map_err(|message| KmsError::validation(format!("the Recipient attestation document's {message}")))?;

        Ok(VerifiedRecipient {
            pcrs: parsed.pcrs.clone(),
            public_key: public_key.clone(),
            module_id: parsed.module_id.clone(),
        })
    }
}

/// Envelopes `plaintext` to the recipient's RSA key as `CiphertextForRecipient`.
pub fn envelope(recipient: &VerifiedRecipient, plaintext: &[u8]) -> KmsResult<Vec<u8>> {
    recipient_common::cms::build(plaintext, &recipient.public_key)
        .map_err(|error| KmsError::internal(format!("cannot build CiphertextForRecipient: {error}")))
}

/// Returns whether `bytes` are base64 text whose decoded bytes start as an
/// attestation document does: a COSE_Sign1 array of four, tagged (18) or
/// not.
fn is_base64_document(bytes: &[u8]) -> bool {
    use base64::Engine;
    let text: Vec<u8> = bytes.iter().copied().filter(|byte| !byte.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok_and(|decoded| matches!(decoded.as_slice(), [0x84, ..] | [0xd2, 0x84, ..]))
}
