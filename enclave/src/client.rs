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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use recipient_common::cms;
use recipient_common::protocol::{
    DecryptRequest, DeriveSharedSecretRequest, ErrorFrame, GenerateDataKeyPairRequest, GenerateDataKeyRequest,
    GenerateRandomRequest, Operation, Output, Recipient, SecretBytes,
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
    /// Returns the KMS or parent error frame behind this error, if any.
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

/// Parameters of [`RecipientClient::decrypt`].
#[derive(Debug, Clone, Default)]
pub struct DecryptParams {
    pub ciphertext_blob: Vec<u8>,
    /// Needed for asymmetric KMS keys; optional for symmetric ones.
    pub key_id: Option<String>,
    pub encryption_context: BTreeMap<String, String>,
    /// `SYMMETRIC_DEFAULT`, `RSAES_OAEP_SHA_1` or `RSAES_OAEP_SHA_256`.
    pub encryption_algorithm: Option<String>,
    pub grant_tokens: Vec<String>,
    pub dry_run: bool,
}

/// A KMS `Decrypt` result opened inside the enclave.
#[derive(Debug)]
pub struct Decrypted {
    pub key_id: Option<String>,
    pub plaintext: Zeroizing<Vec<u8>>,
    pub encryption_algorithm: Option<String>,
}

/// Parameters of [`RecipientClient::generate_data_key`]: either `key_spec`
/// (`AES_256`, `AES_128`) or `number_of_bytes` (1 to 1024).
#[derive(Debug, Clone, Default)]
pub struct GenerateDataKeyParams {
    pub key_id: String,
    pub key_spec: Option<String>,
    pub number_of_bytes: Option<u32>,
    pub encryption_context: BTreeMap<String, String>,
    pub grant_tokens: Vec<String>,
    pub dry_run: bool,
}

/// A KMS `GenerateDataKey` result: the data key in plaintext (opened inside
/// the enclave) and encrypted under the KMS key.
#[derive(Debug)]
pub struct GeneratedDataKey {
    pub key_id: Option<String>,
    pub plaintext: Zeroizing<Vec<u8>>,
    pub ciphertext_blob: Vec<u8>,
}

/// Parameters of [`RecipientClient::generate_data_key_pair`].
#[derive(Debug, Clone, Default)]
pub struct GenerateDataKeyPairParams {
    pub key_id: String,
    /// `RSA_2048`, `RSA_3072`, `RSA_4096`, `ECC_NIST_P256`, `ECC_NIST_P384`,
    /// `ECC_NIST_P521`, `ECC_SECG_P256K1` or `SM2`.
    pub key_pair_spec: String,
    pub encryption_context: BTreeMap<String, String>,
    pub grant_tokens: Vec<String>,
    pub dry_run: bool,
}

/// A KMS `GenerateDataKeyPair` result: the private key (PKCS#8 DER, opened
/// inside the enclave), the public key and the encrypted private key.
#[derive(Debug)]
pub struct GeneratedDataKeyPair {
    pub key_id: Option<String>,
    pub key_pair_spec: Option<String>,
    pub private_key_plaintext: Zeroizing<Vec<u8>>,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    pub private_key_ciphertext_blob: Vec<u8>,
}

/// When an attested key pair may serve more than one request.
///
/// Once a key pair has served three quarters of its uses or of its age, the
/// client makes the next one in the background, so that requests do not wait
/// for RSA key generation when the current one runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReuse {
    /// Age after which a new key pair and document are made. Keep it below
    /// the maximum document age the verifier allows (kms-local: 5 minutes).
    pub max_age: Duration,
    /// Requests one key pair may serve.
    pub max_uses: u32,
}

struct AttestedKey {
    key: EphemeralKey,
    recipient: Recipient,
    created: Instant,
    uses: AtomicU32,
}

/// Makes an RSA key pair and an attestation document carrying its public key.
async fn make_attested_key(nsm: Arc<dyn Nsm>, size: RsaKeySize) -> Result<AttestedKey, ClientError> {
    let key = tokio::task::spawn_blocking(move || EphemeralKey::generate(size))
        .await
        .map_err(|e| ClientError::FailClosed(format!("key generation task failed: {e}")))??;
    let public_key = key.public_key_der().to_vec();
    let document = tokio::task::spawn_blocking(move || nsm::attest(nsm.as_ref(), Some(public_key), None, None))
        .await
        .map_err(|e| ClientError::FailClosed(format!("attestation task failed: {e}")))??;
    Ok(AttestedKey { key, recipient: Recipient::new(document), created: Instant::now(), uses: AtomicU32::new(0) })
}

/// The enclave-side client of the Recipient operations.
pub struct RecipientClient {
    nsm: Arc<dyn Nsm>,
    parent: ParentClient,
    key_size: RsaKeySize,
    reuse: Option<KeyReuse>,
    cached: tokio::sync::Mutex<Option<Arc<AttestedKey>>>,
    /// The next key pair, being made in the background while the cached one
    /// still serves.
    spare: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<AttestedKey, ClientError>>>>,
}

impl Drop for RecipientClient {
    fn drop(&mut self) {
        if let Some(spare) = self.spare_slot().take() {
            spare.abort();
        }
    }
}

impl std::fmt::Debug for RecipientClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientClient").field("parent", &self.parent).field("key_size", &self.key_size).finish()
    }
}

impl RecipientClient {
    /// Creates a client that attests with `nsm` and sends through `parent`.
    ///
    /// Each request gets a fresh key pair and document unless
    /// [`RecipientClient::with_key_reuse`] allows reuse.
    pub fn new(nsm: Arc<dyn Nsm>, parent: ParentClient, key_size: RsaKeySize) -> Self {
        Self {
            nsm,
            parent,
            key_size,
            reuse: None,
            cached: tokio::sync::Mutex::new(None),
            spare: std::sync::Mutex::new(None),
        }
    }

    /// Lets one key pair and its document serve several requests, within
    /// `reuse`'s bounds. `None` makes a fresh key per request.
    pub fn with_key_reuse(mut self, reuse: Option<KeyReuse>) -> Self {
        self.reuse = reuse;
        self
    }

    /// Returns a key pair with an attestation document carrying its public
    /// key: the cached one while reuse allows, otherwise the spare made in
    /// the background or, if there is none, a new one.
    async fn attested_key(&self) -> Result<Arc<AttestedKey>, ClientError> {
        let Some(reuse) = self.reuse else {
            return make_attested_key(Arc::clone(&self.nsm), self.key_size).await.map(Arc::new);
        };

        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref() {
            let age = current.created.elapsed();
            let used = current.uses.fetch_add(1, Ordering::Relaxed);
            if age < reuse.max_age && used < reuse.max_uses {
                let uses_threshold = reuse.max_uses - reuse.max_uses / 4;
                if used + 1 >= uses_threshold || age >= reuse.max_age.mul_f64(0.75) {
                    self.prepare_spare();
                }
                return Ok(Arc::clone(current));
            }
        }
        let fresh = Arc::new(self.take_spare(reuse).await?);
        fresh.uses.store(1, Ordering::Relaxed);
        *cached = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    fn spare_slot(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<Result<AttestedKey, ClientError>>>> {
        // The slot is only ever replaced whole, so a poisoned lock still contains a consistent value.
        self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts making the next key pair, unless one is already on its way.
    fn prepare_spare(&self) {
        let mut slot = self.spare_slot();
        if slot.is_none() {
            *slot = Some(tokio::spawn(make_attested_key(Arc::clone(&self.nsm), self.key_size)));
        }
    }

    /// Returns the spare key pair if it was made and is still young enough,
    /// otherwise a new one.
    async fn take_spare(&self, reuse: KeyReuse) -> Result<AttestedKey, ClientError> {
        let spare = self.spare_slot().take();
        if let Some(spare) = spare {
            match spare.await {
                Ok(Ok(key)) if key.created.elapsed() < reuse.max_age => return Ok(key),
                Ok(Ok(_)) => tracing::debug!("the spare key pair is too old; making a new one"),
                Ok(Err(error)) => tracing::warn!(%error, "making the spare key pair failed; trying again"),
                Err(error) => tracing::warn!(%error, "the spare key pair task failed; trying again"),
            }
        }
        make_attested_key(Arc::clone(&self.nsm), self.key_size).await
    }

    /// Derives the ECDH shared secret between the KMS key and a peer public
    /// key, readable only inside this enclave.
    ///
    /// ```no_run
    /// # async fn example(client: &enclave_agent::client::RecipientClient) -> Result<(), enclave_agent::client::ClientError> {
    /// use enclave_agent::client::DeriveSharedSecretParams;
    ///
    /// let peer_public_key = std::fs::read("peer.der").unwrap_or_default();
    /// let derived = client
    ///     .derive_shared_secret(DeriveSharedSecretParams {
    ///         key_id: "alias/key-agreement".to_owned(),
    ///         public_key: peer_public_key,
    ///         grant_tokens: Vec::new(),
    ///         dry_run: false,
    ///     })
    ///     .await?;
    /// assert!(matches!(derived.shared_secret.len(), 32 | 48 | 66));
    /// # Ok(())
    /// # }
    /// ```
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
        let attested = self.attested_key().await?;

        let request = DeriveSharedSecretRequest {
            key_id: params.key_id.clone(),
            key_agreement_algorithm: "ECDH".to_owned(),
            public_key: ByteBuf::from(peer.der),
            grant_tokens: params.grant_tokens,
            dry_run: params.dry_run,
            recipient: Some(attested.recipient.clone()),
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

        let shared_secret = cms::decrypt(&envelope, attested.key.private_key())?;
        check_secret_length(curve, shared_secret.len())?;
        Ok(DerivedSharedSecret {
            key_id: output.key_id,
            shared_secret,
            key_agreement_algorithm: output.key_agreement_algorithm,
            key_origin: output.key_origin,
        })
    }

    /// Decrypts a KMS ciphertext; the plaintext is readable only inside
    /// this enclave.
    ///
    /// ```no_run
    /// # async fn example(client: &enclave_agent::client::RecipientClient) -> Result<(), enclave_agent::client::ClientError> {
    /// use enclave_agent::client::DecryptParams;
    ///
    /// let ciphertext = std::fs::read("secret.enc").unwrap_or_default();
    /// let decrypted = client
    ///     .decrypt(DecryptParams { ciphertext_blob: ciphertext, ..DecryptParams::default() })
    ///     .await?;
    /// assert!(!decrypted.plaintext.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn decrypt(&self, params: DecryptParams) -> Result<Decrypted, ClientError> {
        if params.ciphertext_blob.is_empty() {
            return Err(ClientError::InvalidInput {
                parameter: "ciphertext blob",
                message: "the ciphertext is empty".to_owned(),
            });
        }
        let attested = self.attested_key().await?;

        let requested_key = params.key_id.clone();
        let request = DecryptRequest {
            ciphertext_blob: ByteBuf::from(params.ciphertext_blob),
            key_id: params.key_id,
            encryption_context: params.encryption_context,
            encryption_algorithm: params.encryption_algorithm,
            grant_tokens: params.grant_tokens,
            dry_run: params.dry_run,
            recipient: Some(attested.recipient.clone()),
        };
        let output = self.parent.call(Operation::Decrypt(request)).await?;

        let Output::Decrypt(output) = output else {
            return Err(wrong_output("Decrypt", &output));
        };
        reject_plaintext("Plaintext", output.plaintext.as_ref())?;
        if let Some(requested) = &requested_key {
            check_key_arn(requested, output.key_id.as_deref())?;
        }
        let envelope = required_envelope("Decrypt", output.ciphertext_for_recipient)?;

        let plaintext = cms::decrypt(&envelope, attested.key.private_key())?;
        Ok(Decrypted { key_id: output.key_id, plaintext, encryption_algorithm: output.encryption_algorithm })
    }

    /// Generates a data key; its plaintext is readable only inside this
    /// enclave, and its `CiphertextBlob` can be stored outside.
    ///
    /// ```no_run
    /// # async fn example(client: &enclave_agent::client::RecipientClient) -> Result<(), enclave_agent::client::ClientError> {
    /// use enclave_agent::client::GenerateDataKeyParams;
    ///
    /// let data_key = client
    ///     .generate_data_key(GenerateDataKeyParams {
    ///         key_id: "alias/app-data".to_owned(),
    ///         key_spec: Some("AES_256".to_owned()),
    ///         ..GenerateDataKeyParams::default()
    ///     })
    ///     .await?;
    /// assert_eq!(data_key.plaintext.len(), 32);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn generate_data_key(&self, params: GenerateDataKeyParams) -> Result<GeneratedDataKey, ClientError> {
        let expected_len = match (&params.key_spec, params.number_of_bytes) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ClientError::InvalidInput {
                    parameter: "data key size",
                    message: "give exactly one of key spec (AES_256, AES_128) and number of bytes".to_owned(),
                });
            }
            (Some(spec), None) => match spec.as_str() {
                "AES_256" => 32,
                "AES_128" => 16,
                other => {
                    return Err(ClientError::InvalidInput {
                        parameter: "key spec",
                        message: format!("`{other}` is not a data key spec; use AES_256 or AES_128"),
                    });
                }
            },
            (None, Some(count)) => {
                check_byte_count("number of bytes", count)?;
                count as usize
            }
        };
        let attested = self.attested_key().await?;

        let requested_key = params.key_id.clone();
        let request = GenerateDataKeyRequest {
            key_id: params.key_id,
            key_spec: params.key_spec,
            number_of_bytes: params.number_of_bytes,
            encryption_context: params.encryption_context,
            grant_tokens: params.grant_tokens,
            dry_run: params.dry_run,
            recipient: Some(attested.recipient.clone()),
        };
        let output = self.parent.call(Operation::GenerateDataKey(request)).await?;

        let Output::GenerateDataKey(output) = output else {
            return Err(wrong_output("GenerateDataKey", &output));
        };
        reject_plaintext("Plaintext", output.plaintext.as_ref())?;
        check_key_arn(&requested_key, output.key_id.as_deref())?;
        let envelope = required_envelope("GenerateDataKey", output.ciphertext_for_recipient)?;
        let ciphertext_blob = output.ciphertext_blob.ok_or_else(|| {
            ClientError::FailClosed("CiphertextBlob is missing from the GenerateDataKey response".to_owned())
        })?;

        let plaintext = cms::decrypt(&envelope, attested.key.private_key())?;
        if plaintext.len() != expected_len {
            return Err(ClientError::FailClosed(format!(
                "the data key is {} bytes, but {expected_len} were requested",
                plaintext.len()
            )));
        }
        Ok(GeneratedDataKey { key_id: output.key_id, plaintext, ciphertext_blob: ciphertext_blob.into_vec() })
    }

    /// Generates a data key pair; the private key is readable only inside
    /// this enclave.
    ///
    /// ```no_run
    /// # async fn example(client: &enclave_agent::client::RecipientClient) -> Result<(), enclave_agent::client::ClientError> {
    /// use enclave_agent::client::GenerateDataKeyPairParams;
    ///
    /// let pair = client
    ///     .generate_data_key_pair(GenerateDataKeyPairParams {
    ///         key_id: "alias/app-data".to_owned(),
    ///         key_pair_spec: "ECC_NIST_P256".to_owned(),
    ///         ..GenerateDataKeyPairParams::default()
    ///     })
    ///     .await?;
    /// println!("public key: {} bytes of DER", pair.public_key.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn generate_data_key_pair(
        &self,
        params: GenerateDataKeyPairParams,
    ) -> Result<GeneratedDataKeyPair, ClientError> {
        const SPECS: [&str; 8] = [
            "RSA_2048",
            "RSA_3072",
            "RSA_4096",
            "ECC_NIST_P256",
            "ECC_NIST_P384",
            "ECC_NIST_P521",
            "ECC_SECG_P256K1",
            "SM2",
        ];
        if !SPECS.contains(&params.key_pair_spec.as_str()) {
            return Err(ClientError::InvalidInput {
                parameter: "key pair spec",
                message: format!("`{}` is not one of {}", params.key_pair_spec, SPECS.join(", ")),
            });
        }
        let attested = self.attested_key().await?;

        let requested_key = params.key_id.clone();
        let request = GenerateDataKeyPairRequest {
            key_id: params.key_id,
            key_pair_spec: params.key_pair_spec,
            encryption_context: params.encryption_context,
            grant_tokens: params.grant_tokens,
            dry_run: params.dry_run,
            recipient: Some(attested.recipient.clone()),
        };
        let output = self.parent.call(Operation::GenerateDataKeyPair(request)).await?;

        let Output::GenerateDataKeyPair(output) = output else {
            return Err(wrong_output("GenerateDataKeyPair", &output));
        };
        reject_plaintext("PrivateKeyPlaintext", output.private_key_plaintext.as_ref())?;
        check_key_arn(&requested_key, output.key_id.as_deref())?;
        let envelope = required_envelope("GenerateDataKeyPair", output.ciphertext_for_recipient)?;
        let missing =
            |field: &str| ClientError::FailClosed(format!("{field} is missing from the GenerateDataKeyPair response"));
        let public_key = output.public_key.ok_or_else(|| missing("PublicKey"))?;
        let private_key_ciphertext_blob =
            output.private_key_ciphertext_blob.ok_or_else(|| missing("PrivateKeyCiphertextBlob"))?;

        let private_key_plaintext = cms::decrypt(&envelope, attested.key.private_key())?;
        Ok(GeneratedDataKeyPair {
            key_id: output.key_id,
            key_pair_spec: output.key_pair_spec,
            private_key_plaintext,
            public_key: public_key.into_vec(),
            private_key_ciphertext_blob: private_key_ciphertext_blob.into_vec(),
        })
    }

    /// Returns `number_of_bytes` (1 to 1024) random bytes from KMS, readable
    /// only inside this enclave.
    ///
    /// ```no_run
    /// # async fn example(client: &enclave_agent::client::RecipientClient) -> Result<(), enclave_agent::client::ClientError> {
    /// let random = client.generate_random(32).await?;
    /// assert_eq!(random.len(), 32);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn generate_random(&self, number_of_bytes: u32) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        check_byte_count("number of bytes", number_of_bytes)?;
        let attested = self.attested_key().await?;

        let request = GenerateRandomRequest {
            number_of_bytes,
            custom_key_store_id: None,
            recipient: Some(attested.recipient.clone()),
        };
        let output = self.parent.call(Operation::GenerateRandom(request)).await?;

        let Output::GenerateRandom(output) = output else {
            return Err(wrong_output("GenerateRandom", &output));
        };
        reject_plaintext("Plaintext", output.plaintext.as_ref())?;
        let envelope = required_envelope("GenerateRandom", output.ciphertext_for_recipient)?;

        let random = cms::decrypt(&envelope, attested.key.private_key())?;
        if random.len() != number_of_bytes as usize {
            return Err(ClientError::FailClosed(format!(
                "KMS returned {} random bytes, but {number_of_bytes} were requested",
                random.len()
            )));
        }
        Ok(random)
    }
}

fn wrong_output(operation: &str, output: &Output) -> ClientError {
    ClientError::FailClosed(format!("the parent returned a {} result to {operation}", output.name()))
}

fn required_envelope(operation: &str, envelope: Option<ByteBuf>) -> Result<Vec<u8>, ClientError> {
    envelope.map(ByteBuf::into_vec).ok_or_else(|| {
        ClientError::FailClosed(format!("CiphertextForRecipient is missing from the {operation} response"))
    })
}

/// KMS takes 1 to 1024 bytes for GenerateRandom and GenerateDataKey.
fn check_byte_count(parameter: &'static str, count: u32) -> Result<(), ClientError> {
    if (1..=1024).contains(&count) {
        return Ok(());
    }
    Err(ClientError::InvalidInput { parameter, message: format!("{count} is out of range; KMS accepts 1 to 1024") })
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
