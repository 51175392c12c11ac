//! The enclave's KMS client: every call attests a fresh RSA key, sends the
//! operation with that document as `Recipient` through the parent, and opens
//! `CiphertextForRecipient` inside the enclave.
//!
//! The parent sees the request and the response, so the client fails closed
//! on responses a well-behaved KMS never sends with a Recipient: a plaintext
//! field, a missing `CiphertextForRecipient`, a shared secret of the wrong
//! length, or a key ARN other than the one requested. This detects a parent
//! that drops the Recipient; it cannot detect a parent that fabricates an
//! envelope to the enclave's public key (see docs/threat-model.md).

use std::sync::Arc;

use recipient_common::cms;
use recipient_common::protocol::{
    DeriveSharedSecretRequest, ErrorFrame, Operation, Output, Recipient, SecretBytes,
};
use recipient_common::public_key::{self, Curve, KeyAlgorithm, PublicKeyError};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::key::{EphemeralKey, KeyGenerationError, RsaKeySize};
use crate::nsm::{self, Nsm, NsmError};
use crate::parent::{ParentClient, ParentError};

/// Errors of a Recipient call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A caller-supplied parameter is invalid; nothing was sent.
    #[error("invalid {parameter}: {message}")]
    InvalidInput { parameter: &'static str, message: String },
    #[error(transparent)]
    PublicKey(#[from] PublicKeyError),
    #[error(transparent)]
    KeyGeneration(#[from] KeyGenerationError),
    #[error("attestation failed: {0}")]
    Nsm(#[from] NsmError),
    #[error(transparent)]
    Parent(#[from] ParentError),
    /// The envelope did not open with the enclave's key.
    #[error("CiphertextForRecipient could not be opened: {0}")]
    Envelope(#[from] cms::CmsError),
    /// The response is not what KMS returns for a Recipient request.
    #[error("unexpected response, rejected: {0}")]
    FailClosed(String),
}

impl ClientError {
    /// The KMS or parent error frame behind this error, if any.
    pub fn error_frame(&self) -> Option<&ErrorFrame> {
        match self {
            ClientError::Parent(ParentError::Remote(frame)) => Some(frame),
            _ => None,
        }
    }
}

/// A KMS `DeriveSharedSecret` result opened inside the enclave.
#[derive(Debug)]
pub struct DerivedSharedSecret {
    /// The ARN of the KMS key.
    pub key_id: Option<String>,
    /// The raw ECDH shared secret Z (x-coordinate), with no KDF applied.
    pub shared_secret: Zeroizing<Vec<u8>>,
    pub key_agreement_algorithm: Option<String>,
    pub key_origin: Option<String>,
}

/// Parameters of [`RecipientClient::derive_shared_secret`].
#[derive(Debug, Clone)]
pub struct DeriveSharedSecretParams {
    /// Key id, key ARN, alias name or alias ARN of the KMS key-agreement key.
    pub key_id: String,
    /// The peer's public key: DER SubjectPublicKeyInfo, PEM, or base64 of DER.
    pub public_key: Vec<u8>,
    pub grant_tokens: Vec<String>,
    pub dry_run: bool,
}

/// The enclave-side client of the Recipient operations.
pub struct RecipientClient {
    nsm: Arc<dyn Nsm>,
    parent: ParentClient,
    key_size: RsaKeySize,
}

impl std::fmt::Debug for RecipientClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientClient").field("parent", &self.parent).field("key_size", &self.key_size).finish()
    }
}

impl RecipientClient {
    /// Creates a client that attests with `nsm` and sends through `parent`.
    pub fn new(nsm: Arc<dyn Nsm>, parent: ParentClient, key_size: RsaKeySize) -> Self {
        Self { nsm, parent, key_size }
    }

    /// Makes a fresh key pair and an attestation document carrying its public key.
    async fn attested_key(&self) -> Result<(EphemeralKey, Recipient), ClientError> {
        let size = self.key_size;
        let key = tokio::task::spawn_blocking(move || EphemeralKey::generate(size))
            .await
            .map_err(|e| ClientError::FailClosed(format!("key generation task failed: {e}")))??;
        let nsm = Arc::clone(&self.nsm);
        let public_key = key.public_key_der().to_vec();
        let document = tokio::task::spawn_blocking(move || nsm::attest(nsm.as_ref(), Some(public_key), None, None))
            .await
            .map_err(|e| ClientError::FailClosed(format!("attestation task failed: {e}")))??;
        Ok((key, Recipient::new(document)))
    }

    /// Derives the ECDH shared secret between the KMS key and a peer public
    /// key, readable only inside this enclave.
    pub async fn derive_shared_secret(
        &self,
        params: DeriveSharedSecretParams,
    ) -> Result<DerivedSharedSecret, ClientError> {
        let peer = public_key::recognise(&params.public_key)?;
        let KeyAlgorithm::Ec(curve) = peer.algorithm else {
            return Err(ClientError::InvalidInput {
                parameter: "public key",
                message: "an RSA key cannot be used for ECDH; pass the peer's EC public key (P-256, P-384 or P-521)"
                    .to_owned(),
            });
        };
        let (key, recipient) = self.attested_key().await?;

        let request = DeriveSharedSecretRequest {
            key_id: params.key_id.clone(),
            key_agreement_algorithm: "ECDH".to_owned(),
            public_key: ByteBuf::from(peer.der),
            grant_tokens: params.grant_tokens,
            dry_run: params.dry_run,
            recipient: Some(recipient),
        };
        let output = self.parent.call(Operation::DeriveSharedSecret(request)).await?;

        let Output::DeriveSharedSecret(output) = output else {
            return Err(ClientError::FailClosed(format!(
                "the parent returned a {} result to DeriveSharedSecret",
                output.name()
            )));
        };
        reject_plaintext("SharedSecret", output.shared_secret.as_ref())?;
        check_key_arn(&params.key_id, output.key_id.as_deref())?;
        let envelope = output.ciphertext_for_recipient.ok_or_else(|| {
            ClientError::FailClosed("CiphertextForRecipient is missing from the DeriveSharedSecret response".to_owned())
        })?;

        let shared_secret = cms::decrypt(&envelope, key.private_key())?;
        check_secret_length(curve, shared_secret.len())?;
        Ok(DerivedSharedSecret {
            key_id: output.key_id,
            shared_secret,
            key_agreement_algorithm: output.key_agreement_algorithm,
            key_origin: output.key_origin,
        })
    }
}

/// Fails when a plaintext field came back although a Recipient was sent.
fn reject_plaintext(field: &str, value: Option<&SecretBytes>) -> Result<(), ClientError> {
    match value {
        Some(bytes) if !bytes.0.is_empty() => Err(ClientError::FailClosed(format!(
            "the response carries a plaintext {field} although a Recipient was sent; KMS never does that, so the parent may have dropped the Recipient"
        ))),
        _ => Ok(()),
    }
}

/// Fails when the request named a key ARN and the response names another key.
fn check_key_arn(requested: &str, returned: Option<&str>) -> Result<(), ClientError> {
    if !requested.starts_with("arn:") || requested.contains(":alias/") {
        return Ok(());
    }
    match returned {
        Some(returned) if returned == requested => Ok(()),
        Some(returned) => Err(ClientError::FailClosed(format!(
            "the response names key {returned}, but the request named {requested}"
        ))),
        None => Err(ClientError::FailClosed("the response names no key id".to_owned())),
    }
}

fn check_secret_length(curve: Curve, length: usize) -> Result<(), ClientError> {
    if length == curve.shared_secret_len() {
        return Ok(());
    }
    Err(ClientError::FailClosed(format!(
        "the shared secret is {length} bytes, but ECDH on {} gives {} bytes",
        curve.key_spec(),
        curve.shared_secret_len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_field_fails_closed() {
        assert!(reject_plaintext("SharedSecret", None).is_ok());
        assert!(reject_plaintext("SharedSecret", Some(&SecretBytes(Vec::new()))).is_ok());
        let error = reject_plaintext("SharedSecret", Some(&SecretBytes(vec![1; 32]))).map(|_| ()).err();
        assert!(matches!(error, Some(ClientError::FailClosed(ref m)) if m.contains("plaintext SharedSecret")));
    }

    #[test]
    fn key_arn_must_match_when_requested_as_arn() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(check_key_arn(arn, Some(arn)).is_ok());
        assert!(check_key_arn("alias/x", Some(arn)).is_ok());
        assert!(check_key_arn("arn:aws:kms:us-east-1:111122223333:alias/x", Some(arn)).is_ok());
        assert!(check_key_arn(arn, Some("arn:aws:kms:us-east-1:111122223333:key/other")).is_err());
        assert!(check_key_arn(arn, None).is_err());
    }

    #[test]
    fn secret_length_follows_curve() {
        assert!(check_secret_length(Curve::P256, 32).is_ok());
        assert!(check_secret_length(Curve::P384, 48).is_ok());
        assert!(check_secret_length(Curve::P521, 66).is_ok());
        assert!(check_secret_length(Curve::P256, 48).is_err());
    }
}
