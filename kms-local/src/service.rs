//! The KMS operations: request parsing and validation, key resolution,
//! authorization against the key policy, key state and usage checks, and the
//! responses in the shape of the AWS KMS API.
//!
//! Each operation checks, in this order: the request members, the key, the
//! `Recipient` attestation document, the key policy, the key state, the key
//! usage, then `DryRun`, and only then performs the cryptography.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::agreement;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Config;
use crate::blob::Blob;
use crate::credentials::{Credentials, Principal};
use crate::error::{ErrorKind, KmsError, KmsResult};
use crate::keys::{
    DataKeyPairSpec, EncryptionAlgorithm, KeyMaterial, KeySpec, KeyState, KeyUsage, derive_shared_secret,
    generate_data_key_pair, random_bytes,
};
use crate::policy::{Policy, RequestContext, default_policy};
use crate::recipient::{RecipientParam, RecipientVerifier, VerifiedRecipient, envelope};
use crate::store::{AliasRecord, KeyRecord, Store, StoreError};

/// The largest Plaintext of Encrypt, in bytes.
const MAX_PLAINTEXT_LEN: usize = 4096;
/// The largest CiphertextBlob of Decrypt, in bytes.
const MAX_CIPHERTEXT_LEN: usize = 6144;
/// The version byte of kms-local's symmetric ciphertext format.
const CIPHERTEXT_VERSION: u8 = 1;
/// Length of a key id (a UUID in its 36-character text form).
const KEY_ID_LEN: usize = 36;

/// Errors building the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("trust root {index} is not a PEM certificate: {message}")]
    TrustRoot { index: usize, message: String },
}

/// The local KMS: its store, credentials and attestation verifier.
#[derive(Debug)]
pub struct Kms {
    store: Store,
    credentials: Credentials,
    recipient: RecipientVerifier,
    /// Parsed key policies by their text.
    policies: ParsedCache<Policy>,
    /// Parsed key-agreement private keys by key id. Key material is written
    /// once, when the key is created, so an entry never goes stale.
    agreement_keys: ParsedCache<agreement::PrivateKey>,
}

/// Maximum number of parsed policies kept. Policies are cached by their text,
/// at most 32,768 characters each, so the cached texts take at most 8 MiB.
const MAX_CACHED_POLICIES: usize = 256;
/// Maximum number of parsed key-agreement private keys kept.
const MAX_CACHED_AGREEMENT_KEYS: usize = 1024;

/// Values parsed from stored data that does not change for its cache key, so
/// that repeated requests on the same key skip the parsing. A full cache is
/// emptied.
struct ParsedCache<V> {
    entries: std::sync::Mutex<HashMap<String, Arc<V>>>,
    capacity: usize,
}

impl<V> std::fmt::Debug for ParsedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedCache({} entries)", self.lock().len())
    }
}

impl<V> ParsedCache<V> {
    fn new(capacity: usize) -> Self {
        Self { entries: std::sync::Mutex::new(HashMap::new()), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<V>>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the value for `key`, parsing it with `parse` if it is not cached.
    fn get_or_parse(&self, key: &str, parse: impl FnOnce() -> KmsResult<V>) -> KmsResult<Arc<V>> {
        if let Some(value) = self.lock().get(key) {
            return Ok(Arc::clone(value));
        }
        let value = Arc::new(parse()?);
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key.to_owned(), Arc::clone(&value));
        Ok(value)
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the epoch as the JSON protocol sends timestamps.
fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// Generates a random UUID (version 4) in its text form.
pub(crate) fn new_uuid() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut bytes = bytes;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let text = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &text[0..8], &text[8..12], &text[12..16], &text[16..20], &text[20..32])
}

fn is_uuid(text: &str) -> bool {
    text.len() == KEY_ID_LEN
        && text.char_indices().all(
            |(index, c)| {
                if matches!(index, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() }
            },
        )
}

/// Builds the ValidationException AWS returns for a missing required member.
fn missing(member: &str) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: value null at '{member}' failed to satisfy constraint: member must not be null"
    ))
}

fn required<T>(value: Option<T>, member: &str) -> KmsResult<T> {
    value.ok_or_else(|| missing(member))
}

fn check_length(member: &str, length: usize, min: usize, max: usize) -> KmsResult<()> {
    if length < min || length > max {
        return Err(KmsError::validation(format!(
            "1 validation error detected: value at '{member}' has length {length}; it must have length between {min} and {max}"
        )));
    }
    Ok(())
}

fn check_grant_tokens(tokens: &[String]) -> KmsResult<()> {
    if tokens.len() > 10 {
        return Err(KmsError::validation(format!("GrantTokens has {} entries; at most 10 are allowed", tokens.len())));
    }
    for token in tokens {
        check_length("grantTokens.member", token.len(), 1, 8192)?;
    }
    Ok(())
}

fn parse_request<T: DeserializeOwned>(body: &[u8]) -> KmsResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|error| {
        KmsError::new(
            ErrorKind::Serialization,
            format!("request body is not a valid JSON request of this operation: {error}"),
        )
    })
}

/// `Tags` member of CreateKey.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    tag_key: String,
    tag_value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateKeyRequest {
    policy: Option<String>,
    description: Option<String>,
    key_usage: Option<String>,
    customer_master_key_spec: Option<String>,
    key_spec: Option<String>,
    origin: Option<String>,
    custom_key_store_id: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
    tags: Vec<Tag>,
    multi_region: Option<bool>,
    xks_key_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct KeyIdRequest {
    key_id: Option<String>,
    grant_tokens: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ScheduleKeyDeletionRequest {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AliasRequest {
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct KeyPolicyRequest {
    key_id: Option<String>,
    policy_name: Option<String>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct EncryptRequest {
    key_id: Option<String>,
    plaintext: Option<Blob>,
    encryption_context: BTreeMap<String, String>,
    grant_tokens: Vec<String>,
    encryption_algorithm: Option<String>,
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DecryptRequest {
    ciphertext_blob: Option<Blob>,
    encryption_context: BTreeMap<String, String>,
    grant_tokens: Vec<String>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    recipient: Option<RecipientParam>,
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GenerateDataKeyRequest {
    key_id: Option<String>,
    encryption_context: BTreeMap<String, String>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    grant_tokens: Vec<String>,
    recipient: Option<RecipientParam>,
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GenerateDataKeyPairRequest {
    key_id: Option<String>,
    encryption_context: BTreeMap<String, String>,
    key_pair_spec: Option<String>,
    grant_tokens: Vec<String>,
    recipient: Option<RecipientParam>,
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GenerateRandomRequest {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<RecipientParam>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DeriveSharedSecretRequest {
    key_id: Option<String>,
    key_agreement_algorithm: Option<String>,
    public_key: Option<Blob>,
    grant_tokens: Vec<String>,
    dry_run: bool,
    recipient: Option<RecipientParam>,
}

/// The operations kms-local serves, by `X-Amz-Target` suffix.
pub const OPERATIONS: &[&str] = &[
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "GetPublicKey",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "CreateAlias",
    "UpdateAlias",
    "DeleteAlias",
    "ListAliases",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateRandom",
    "DeriveSharedSecret",
];

/// Key specs and usages that AWS KMS accepts but kms-local does not implement.
const UNSUPPORTED_KEY_SPECS: &[&str] =
    &["ECC_SECG_P256K1", "HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512", "SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87"];
const UNSUPPORTED_KEY_USAGES: &[&str] = &["SIGN_VERIFY", "GENERATE_VERIFY_MAC"];

impl Kms {
    /// Opens the store and sets up the attestation verifier.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        let store = match &config.data_dir {
            Some(directory) => Store::open(directory)?,
            None => Store::in_memory()?,
        };
        let mut verifier = recipient_common::attestation::Verifier::with_aws_root();
        for (index, pem) in config.trust_roots_pem.iter().enumerate() {
            verifier.add_root_pem(pem).map_err(|error| OpenError::TrustRoot { index, message: error.to_string() })?;
        }
        Ok(Self {
            store,
            credentials: config.credentials,
            recipient: RecipientVerifier::new(verifier, config.max_document_age),
            policies: ParsedCache::new(MAX_CACHED_POLICIES),
            agreement_keys: ParsedCache::new(MAX_CACHED_AGREEMENT_KEYS),
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs one operation. `body` is the JSON request; the result is the JSON
    /// response or a KMS error.
    pub fn handle(&self, operation: &str, body: &[u8], caller: Caller<'_>) -> KmsResult<Value> {
        match operation {
            "CreateKey" => self.create_key(parse_request(body)?, caller),
            "DescribeKey" => self.describe_key(parse_request(body)?, caller),
            "ListKeys" => self.list_keys(parse_request(body)?),
            "GetPublicKey" => self.get_public_key(parse_request(body)?, caller),
            "EnableKey" => self.set_enabled(parse_request(body)?, caller, true),
            "DisableKey" => self.set_enabled(parse_request(body)?, caller, false),
            "ScheduleKeyDeletion" => self.schedule_key_deletion(parse_request(body)?, caller),
            "CancelKeyDeletion" => self.cancel_key_deletion(parse_request(body)?, caller),
            "CreateAlias" => self.create_alias(parse_request(body)?, caller),
            "UpdateAlias" => self.update_alias(parse_request(body)?, caller),
            "DeleteAlias" => self.delete_alias(parse_request(body)?, caller),
            "ListAliases" => self.list_aliases(parse_request(body)?),
            "GetKeyPolicy" => self.get_key_policy(parse_request(body)?, caller),
            "PutKeyPolicy" => self.put_key_policy(parse_request(body)?, caller),
            "Encrypt" => self.encrypt(parse_request(body)?, caller),
            "Decrypt" => self.decrypt(parse_request(body)?, caller),
            "GenerateDataKey" => self.generate_data_key(parse_request(body)?, caller),
            "GenerateDataKeyPair" => self.generate_data_key_pair(parse_request(body)?, caller),
            "GenerateRandom" => self.generate_random(parse_request(body)?),
            "DeriveSharedSecret" => self.derive_shared_secret(parse_request(body)?, caller),
            other => Err(KmsError::new(
                ErrorKind::UnknownOperation,
                format!("operation {other:?} is not supported by kms-local; supported: {}", OPERATIONS.join(", ")),
            )),
        }
    }

    // --- keys, ARNs and the checks every operation shares ---

    fn key_arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{}:key/{key_id}", self.credentials.region, self.credentials.account_id)
    }

    fn alias_arn(&self, alias_name: &str) -> String {
        format!("arn:aws:kms:{}:{}:{alias_name}", self.credentials.region, self.credentials.account_id)
    }

    /// Returns the key a `KeyId` member names: a key id, a key ARN, and where
    /// `allow_alias` is set an alias name or alias ARN. Keys whose deletion
    /// date has passed are deleted here.
    fn resolve(&self, key_id: &str, allow_alias: bool) -> KmsResult<KeyRecord> {
        check_length("keyId", key_id.len(), 1, 2048)?;
        let arn_prefix = format!("arn:aws:kms:{}:{}:", self.credentials.region, self.credentials.account_id);

        let alias_name = if let Some(rest) = key_id.strip_prefix(&arn_prefix) {
            if let Some(id) = rest.strip_prefix("key/") {
                return self.load(id, key_id);
            }
            rest.starts_with("alias/").then_some(rest)
        } else if key_id.starts_with("arn:") {
            return Err(KmsError::not_found(format!(
                "key ARN {key_id:?} does not name a key of this kms-local (region {}, account {})",
                self.credentials.region, self.credentials.account_id
            )));
        } else {
            key_id.starts_with("alias/").then_some(key_id)
        };

        let Some(alias_name) = alias_name else {
            return self.load(key_id, key_id);
        };
        if !allow_alias {
            return Err(KmsError::not_found(format!(
                "{key_id:?} is an alias; this operation takes a key id or key ARN"
            )));
        }
        let alias = self
            .store
            .alias(alias_name)?
            .ok_or_else(|| KmsError::not_found(format!("alias {} is not found", self.alias_arn(alias_name))))?;
        self.load(&alias.target_key_id, key_id)
    }

    fn load(&self, id: &str, requested: &str) -> KmsResult<KeyRecord> {
        let not_found = || KmsError::not_found(format!("key '{}' does not exist", self.key_arn(id)));
        if !is_uuid(id) {
            return Err(KmsError::not_found(format!(
                "invalid keyId {requested:?}; expected a key id, key ARN, alias name (alias/…) or alias ARN"
            )));
        }
        let record = self.store.key(id)?.ok_or_else(not_found)?;
        if record.state == KeyState::PendingDeletion && record.deletion_date_ms.is_some_and(|date| date <= now_ms()) {
            tracing::info!(key_id = id, "deleting key whose deletion date has passed");
            self.store.delete_key(id)?;
            return Err(not_found());
        }
        Ok(record)
    }

    /// Evaluates the key policy; a denial is logged with the deciding
    /// statement and returned as AccessDeniedException.
    fn authorize(
        &self,
        caller: Caller<'_>,
        action: &str,
        record: &KeyRecord,
        recipient: Option<&VerifiedRecipient>,
    ) -> KmsResult<()> {
        let arn = self.key_arn(&record.key_id);
        let policy = self.policies.get_or_parse(&record.policy, || Policy::parse(&record.policy))?;
        let context = RequestContext {
            principal_arn: &caller.principal.arn,
            caller_account: &caller.principal.account_id,
            action,
            resource: &arn,
            recipient_pcrs: recipient.map(|recipient| &recipient.pcrs),
        };
        let decision = policy.evaluate(&context);
        if decision.allowed {
            tracing::debug!(request_id = caller.request_id, action, key = %arn, reason = %decision.reason, "key policy allows");
            return Ok(());
        }
        tracing::warn!(
            request_id = caller.request_id,
            principal = %caller.principal.arn,
            action,
            key = %arn,
            reason = %decision.reason,
            "key policy denies the request"
        );
        let because = if decision.reason.starts_with("explicit Deny") {
            "with an explicit deny in a resource-based policy"
        } else {
            "because no resource-based policy allows the action"
        };
        Err(KmsError::new(
            ErrorKind::AccessDenied,
            format!(
                "user: {} is not authorized to perform: {action} on resource: {arn} {because}",
                caller.principal.arn
            ),
        ))
    }

    fn require_enabled(&self, record: &KeyRecord) -> KmsResult<()> {
        match record.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::new(
                ErrorKind::Disabled,
                format!("{} is disabled; enable it with EnableKey", self.key_arn(&record.key_id)),
            )),
            KeyState::PendingDeletion => Err(self.pending_deletion(record)),
        }
    }

    fn pending_deletion(&self, record: &KeyRecord) -> KmsError {
        KmsError::new(
            ErrorKind::KmsInvalidState,
            format!(
                "{} is pending deletion; cancel the deletion with CancelKeyDeletion to use it",
                self.key_arn(&record.key_id)
            ),
        )
    }

    fn require_usage(&self, record: &KeyRecord, usage: KeyUsage, operation: &str) -> KmsResult<()> {
        if record.key_usage == usage {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorKind::InvalidKeyUsage,
            format!(
                "{} key usage is {} (key spec {}); {operation} requires a {usage} key",
                self.key_arn(&record.key_id),
                record.key_usage,
                record.key_spec
            ),
        ))
    }

    fn verify_recipient(
        &self,
        recipient: Option<&RecipientParam>,
        caller: Caller<'_>,
    ) -> KmsResult<Option<VerifiedRecipient>> {
        let Some(recipient) = recipient else {
            return Ok(None);
        };
        match self.recipient.verify(recipient) {
            Ok(verified) => {
                tracing::debug!(request_id = caller.request_id, module_id = %verified.module_id, "Recipient attestation document verified");
                Ok(Some(verified))
            }
            Err(error) => {
                tracing::warn!(request_id = caller.request_id, %error, "Recipient rejected");
                Err(error)
            }
        }
    }

    fn key_metadata(&self, record: &KeyRecord) -> Value {
        let mut metadata = json!({
            "AWSAccountId": self.credentials.account_id,
            "KeyId": record.key_id,
            "Arn": self.key_arn(&record.key_id),
            "CreationDate": epoch_seconds(record.creation_date_ms),
            "Enabled": record.state == KeyState::Enabled,
            "Description": record.description,
            "KeyUsage": record.key_usage,
            "KeyState": record.state,
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": record.key_spec,
            "KeySpec": record.key_spec,
            "MultiRegion": false,
        });
        let Value::Object(fields) = &mut metadata else {
            return metadata;
        };
        match record.key_usage {
            KeyUsage::EncryptDecrypt => {
                fields.insert("EncryptionAlgorithms".to_owned(), json!(record.key_spec.encryption_algorithms()));
            }
            KeyUsage::KeyAgreement => {
                fields.insert("KeyAgreementAlgorithms".to_owned(), json!(["ECDH"]));
            }
        }
        if let Some(date) = record.deletion_date_ms {
            fields.insert("DeletionDate".to_owned(), json!(epoch_seconds(date)));
        }
        if let Some(days) = record.pending_window_days {
            fields.insert("PendingDeletionWindowInDays".to_owned(), json!(days));
        }
        metadata
    }

    /// Rejects a policy that would lock the caller out of PutKeyPolicy, unless
    /// the caller bypasses the check, as KMS does.
    fn check_lockout(&self, policy: &Policy, key_id: &str, caller: Caller<'_>, bypass: bool) -> KmsResult<()> {
        if bypass {
            return Ok(());
        }
        let arn = self.key_arn(key_id);
        let context = RequestContext {
            principal_arn: &caller.principal.arn,
            caller_account: &caller.principal.account_id,
            action: "kms:PutKeyPolicy",
            resource: &arn,
            recipient_pcrs: None,
        };
        if policy.evaluate(&context).allowed {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorKind::MalformedPolicyDocument,
            format!(
                "the new key policy will not allow {} to update the key policy in the future; \
                 allow kms:PutKeyPolicy for this principal or set BypassPolicyLockoutSafetyCheck",
                caller.principal.arn
            ),
        ))
    }

    // --- key management ---

    fn create_key(&self, request: CreateKeyRequest, caller: Caller<'_>) -> KmsResult<Value> {
        if let Some(description) = &request.description {
            check_length("description", description.len(), 0, 8192)?;
        }
        if request.custom_key_store_id.is_some() || request.xks_key_id.is_some() {
            return Err(KmsError::new(ErrorKind::UnsupportedOperation, "kms-local has no custom key stores"));
        }
        if request.multi_region == Some(true) {
            return Err(KmsError::new(ErrorKind::UnsupportedOperation, "kms-local does not create multi-Region keys"));
        }
        match request.origin.as_deref() {
            None | Some("AWS_KMS") => {}
            Some(origin @ ("EXTERNAL" | "AWS_CLOUDHSM" | "EXTERNAL_KEY_STORE")) => {
                return Err(KmsError::new(
                    ErrorKind::UnsupportedOperation,
                    format!("Origin {origin} is not supported by kms-local; use AWS_KMS"),
                ));
            }
            Some(other) => {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: value {other:?} at 'origin' failed to satisfy constraint: member must satisfy enum value set: [AWS_KMS, EXTERNAL, AWS_CLOUDHSM, EXTERNAL_KEY_STORE]"
                )));
            }
        }
        if request.key_spec.is_some() && request.customer_master_key_spec.is_some() {
            return Err(KmsError::validation(
                "KeySpec and CustomerMasterKeySpec are both set; use KeySpec (CustomerMasterKeySpec is deprecated)",
            ));
        }
        let spec_text =
            request.key_spec.or(request.customer_master_key_spec).unwrap_or_else(|| "SYMMETRIC_DEFAULT".to_owned());
        if UNSUPPORTED_KEY_SPECS.contains(&spec_text.as_str()) {
            return Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                format!("KeySpec {spec_text} is valid in AWS KMS but not implemented by kms-local"),
            ));
        }
        let key_spec = KeySpec::parse(&spec_text)?;
        let usage_text = request.key_usage.unwrap_or_else(|| "ENCRYPT_DECRYPT".to_owned());
        if UNSUPPORTED_KEY_USAGES.contains(&usage_text.as_str()) {
            return Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                format!("KeyUsage {usage_text} is valid in AWS KMS but not implemented by kms-local"),
            ));
        }
        let key_usage = KeyUsage::parse(&usage_text)?;
        if !key_spec.allows_usage(key_usage) {
            let hint = if key_spec.is_asymmetric() && key_usage == KeyUsage::EncryptDecrypt {
                "; ECC_NIST_* keys need KeyUsage KEY_AGREEMENT"
            } else {
                ""
            };
            return Err(KmsError::validation(format!(
                "KeyUsage {key_usage} is not compatible with KeySpec {key_spec}{hint}"
            )));
        }
        for tag in &request.tags {
            check_length("tags.member.tagKey", tag.tag_key.len(), 1, 128)?;
            check_length("tags.member.tagValue", tag.tag_value.len(), 0, 256)?;
        }

        let key_id = new_uuid();
        let policy_text = match request.policy {
            Some(text) => {
                check_length("policy", text.len(), 1, 131_072)?;
                let policy = Policy::parse(&text)?;
                self.check_lockout(
                    &policy,
                    &key_id,
                    caller,
                    request.bypass_policy_lockout_safety_check.unwrap_or(false),
                )?;
                text
            }
            None => default_policy(&self.credentials.account_id),
        };

        let material = KeyMaterial::generate(key_spec)?;
        let record = KeyRecord {
            key_id: key_id.clone(),
            creation_date_ms: now_ms(),
            description: request.description.unwrap_or_default(),
            key_spec,
            key_usage,
            state: KeyState::Enabled,
            deletion_date_ms: None,
            pending_window_days: None,
            policy: policy_text,
            tags: request.tags.into_iter().map(|tag| (tag.tag_key, tag.tag_value)).collect(),
        };
        self.store.insert_key(&record, &material)?;
        tracing::info!(request_id = caller.request_id, key_id, %key_spec, %key_usage, "created key");
        Ok(json!({ "KeyMetadata": self.key_metadata(&record) }))
    }

    fn describe_key(&self, request: KeyIdRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let record = self.resolve(&required(request.key_id, "keyId")?, true)?;
        self.authorize(caller, "kms:DescribeKey", &record, None)?;
        Ok(json!({ "KeyMetadata": self.key_metadata(&record) }))
    }

    fn list_keys(&self, request: ListRequest) -> KmsResult<Value> {
        let limit = list_limit(request.limit)?;
        let keys: Vec<KeyRecord> = self.store.keys()?;
        let ids: Vec<String> = keys.into_iter().map(|record| record.key_id).collect();
        let (page, next) = paginate(&ids, request.marker.as_deref(), limit, |id| id.clone())?;
        let entries: Vec<Value> = page.iter().map(|id| json!({ "KeyId": id, "KeyArn": self.key_arn(id) })).collect();
        Ok(list_response("Keys", entries, next))
    }

    fn get_public_key(&self, request: KeyIdRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let record = self.resolve(&required(request.key_id, "keyId")?, true)?;
        self.authorize(caller, "kms:GetPublicKey", &record, None)?;
        self.require_enabled(&record)?;
        if !record.key_spec.is_asymmetric() {
            return Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                format!("{} is a symmetric key; it has no public key", self.key_arn(&record.key_id)),
            ));
        }

        let public_key = self.store.material(&record.key_id)?.public_key(record.key_spec)?;
        let mut response = json!({
            "KeyId": self.key_arn(&record.key_id),
            "PublicKey": Blob::new(public_key),
            "CustomerMasterKeySpec": record.key_spec,
            "KeySpec": record.key_spec,
            "KeyUsage": record.key_usage,
        });
        if let Value::Object(fields) = &mut response {
            match record.key_usage {
                KeyUsage::EncryptDecrypt => {
                    fields.insert("EncryptionAlgorithms".to_owned(), json!(record.key_spec.encryption_algorithms()));
                }
                KeyUsage::KeyAgreement => {
                    fields.insert("KeyAgreementAlgorithms".to_owned(), json!(["ECDH"]));
                }
            }
        }
        Ok(response)
    }

    fn set_enabled(&self, request: KeyIdRequest, caller: Caller<'_>, enable: bool) -> KmsResult<Value> {
        let record = self.resolve(&required(request.key_id, "keyId")?, false)?;
        let action = if enable { "kms:EnableKey" } else { "kms:DisableKey" };
        self.authorize(caller, action, &record, None)?;
        if record.state == KeyState::PendingDeletion {
            return Err(self.pending_deletion(&record));
        }
        self.store.update_key(&record.key_id, |key| {
            if key.state == KeyState::PendingDeletion {
                return Err(self.pending_deletion(key));
            }
            key.state = if enable { KeyState::Enabled } else { KeyState::Disabled };
            Ok(())
        })?;
        tracing::info!(request_id = caller.request_id, key_id = %record.key_id, enable, "changed key state");
        Ok(json!({}))
    }

    fn schedule_key_deletion(&self, request: ScheduleKeyDeletionRequest, caller: Caller<'_>) -> KmsResult<Value> {
        let days = request.pending_window_in_days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            return Err(KmsError::validation(format!("PendingWindowInDays is {days}; it must be between 7 and 30")));
        }
        let days = u32::try_from(days).unwrap_or(30);
        let record = self.resolve(&required(request.key_id, "keyId")?, false)?;
        self.authorize(caller, "kms:ScheduleKeyDeletion", &record, None)?;
        let deletion_date = now_ms() + i64::from(days) * 86_400_000;
        let updated = self
            .store
            .update_key(&record.key_id, |key| {
                if key.state == KeyState::PendingDeletion {
                    return Err(self.pending_deletion(key));
                }
                key.state = KeyState::PendingDeletion;
                key.deletion_date_ms = Some(deletion_date);
                key.pending_window_days = Some(days);
                Ok(())
            })?
            .ok_or_else(|| KmsError::not_found(format!("key '{}' does not exist", self.key_arn(&record.key_id))))?;
        tracing::info!(request_id = caller.request_id, key_id = %record.key_id, days, "scheduled key deletion");
        Ok(json!({
            "KeyId": self.key_arn(&updated.key_id),
            "DeletionDate": epoch_seconds(deletion_date),
            "KeyState": updated.state,
            "PendingWindowInDays": days,
        }))
    }

    fn cancel_key_deletion(&self, request: KeyIdRequest, caller: Caller<'_>) -> KmsResult<Value> {
        let record = self.resolve(&required(request.key_id, "keyId")?, false)?;
        self.authorize(caller, "kms:CancelKeyDeletion", &record, None)?;
        self.store.update_key(&record.key_id, |key| {
            if key.state != KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorKind::KmsInvalidState,
                    format!("{} is {}, not pending deletion", self.key_arn(&key.key_id), key.state),
                ));
            }
            // As in KMS, a key whose deletion is cancelled is disabled.
            key.state = KeyState::Disabled;
            key.deletion_date_ms = None;
            key.pending_window_days = None;
            Ok(())
        })?;
        tracing::info!(request_id = caller.request_id, key_id = %record.key_id, "cancelled key deletion");
        Ok(json!({ "KeyId": self.key_arn(&record.key_id) }))
    }

    // --- aliases ---

    fn check_alias_name(alias_name: &str) -> KmsResult<()> {
        check_length("aliasName", alias_name.len(), 1, 256)?;
        let Some(name) = alias_name.strip_prefix("alias/") else {
            return Err(KmsError::validation(format!(
                "alias name {alias_name:?} must begin with alias/, e.g. alias/my-enclave-key"
            )));
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')) {
            return Err(KmsError::validation(format!(
                "alias name {alias_name:?} may contain only letters, digits, '/', '_' and '-' after alias/"
            )));
        }
        if name.starts_with("aws/") {
            return Err(KmsError::new(
                ErrorKind::InvalidAliasName,
                format!("alias name {alias_name:?} is invalid: the prefix alias/aws/ is reserved for AWS managed keys"),
            ));
        }
        Ok(())
    }

    fn create_alias(&self, request: AliasRequest, caller: Caller<'_>) -> KmsResult<Value> {
        let alias_name = required(request.alias_name, "aliasName")?;
        Self::check_alias_name(&alias_name)?;
        let record = self.resolve(&required(request.target_key_id, "targetKeyId")?, false)?;
        self.authorize(caller, "kms:CreateAlias", &record, None)?;
        if record.state == KeyState::PendingDeletion {
            return Err(self.pending_deletion(&record));
        }
        let now = now_ms();
        let alias = AliasRecord {
            alias_name: alias_name.clone(),
            target_key_id: record.key_id.clone(),
            creation_date_ms: now,
            last_updated_ms: now,
        };
        if !self.store.put_alias(&alias, true)? {
            return Err(KmsError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "an alias with the name {} already exists; use UpdateAlias to point it at another key",
                    self.alias_arn(&alias_name)
                ),
            ));
        }
        tracing::info!(request_id = caller.request_id, alias_name, key_id = %record.key_id, "created alias");
        Ok(json!({}))
    }

    fn update_alias(&self, request: AliasRequest, caller: Caller<'_>) -> KmsResult<Value> {
        let alias_name = required(request.alias_name, "aliasName")?;
        Self::check_alias_name(&alias_name)?;
        let target = self.resolve(&required(request.target_key_id, "targetKeyId")?, false)?;
        let mut alias = self
            .store
            .alias(&alias_name)?
            .ok_or_else(|| KmsError::not_found(format!("alias {} is not found", self.alias_arn(&alias_name))))?;
        let current = self.load(&alias.target_key_id, &alias_name)?;
        self.authorize(caller, "kms:UpdateAlias", &current, None)?;
        self.authorize(caller, "kms:UpdateAlias", &target, None)?;
        if target.state == KeyState::PendingDeletion {
            return Err(self.pending_deletion(&target));
        }
        if (current.key_spec.is_asymmetric(), current.key_usage) != (target.key_spec.is_asymmetric(), target.key_usage)
        {
            return Err(KmsError::validation(format!(
                "alias {alias_name} points to a {} {} key; the new target {} is a {} {} key, and an alias may only move between keys of the same type and usage",
                current.key_spec, current.key_usage, target.key_id, target.key_spec, target.key_usage
            )));
        }
        alias.target_key_id = target.key_id.clone();
        alias.last_updated_ms = now_ms();
        self.store.put_alias(&alias, false)?;
        tracing::info!(request_id = caller.request_id, alias_name, key_id = %target.key_id, "updated alias");
        Ok(json!({}))
    }

    fn delete_alias(&self, request: AliasRequest, caller: Caller<'_>) -> KmsResult<Value> {
        let alias_name = required(request.alias_name, "aliasName")?;
        check_length("aliasName", alias_name.len(), 1, 256)?;
        let alias = self
            .store
            .alias(&alias_name)?
            .ok_or_else(|| KmsError::not_found(format!("alias {} is not found", self.alias_arn(&alias_name))))?;
        let record = self.load(&alias.target_key_id, &alias_name)?;
        self.authorize(caller, "kms:DeleteAlias", &record, None)?;
        self.store.delete_alias(&alias_name)?;
        tracing::info!(request_id = caller.request_id, alias_name, "deleted alias");
        Ok(json!({}))
    }

    fn list_aliases(&self, request: ListRequest) -> KmsResult<Value> {
        let limit = list_limit(request.limit)?;
        let filter = match &request.key_id {
            Some(key_id) => Some(self.resolve(key_id, false)?.key_id),
            None => None,
        };
        let aliases: Vec<AliasRecord> = self
            .store
            .aliases()?
            .into_iter()
            .filter(|alias| filter.as_ref().is_none_or(|id| *id == alias.target_key_id))
            .collect();
        let (page, next) = paginate(&aliases, request.marker.as_deref(), limit, |alias| alias.alias_name.clone())?;
        let entries: Vec<Value> = page
            .iter()
            .map(|alias| {
                json!({
                    "AliasName": alias.alias_name,
                    "AliasArn": self.alias_arn(&alias.alias_name),
                    "TargetKeyId": alias.target_key_id,
                    "CreationDate": epoch_seconds(alias.creation_date_ms),
                    "LastUpdatedDate": epoch_seconds(alias.last_updated_ms),
                })
            })
            .collect();
        Ok(list_response("Aliases", entries, next))
    }

    // --- key policies ---

    fn check_policy_name(name: Option<&str>) -> KmsResult<()> {
        match name {
            None | Some("default") => Ok(()),
            Some(other) => {
                Err(KmsError::not_found(format!("no key policy named {other:?}; the only policy name is \"default\"")))
            }
        }
    }

    fn get_key_policy(&self, request: KeyPolicyRequest, caller: Caller<'_>) -> KmsResult<Value> {
        Self::check_policy_name(request.policy_name.as_deref())?;
        let record = self.resolve(&required(request.key_id, "keyId")?, false)?;
        self.authorize(caller, "kms:GetKeyPolicy", &record, None)?;
        Ok(json!({ "Policy": record.policy, "PolicyName": "default" }))
    }

    fn put_key_policy(&self, request: KeyPolicyRequest, caller: Caller<'_>) -> KmsResult<Value> {
        Self::check_policy_name(request.policy_name.as_deref())?;
        let text = required(request.policy, "policy")?;
        check_length("policy", text.len(), 1, 131_072)?;
        let record = self.resolve(&required(request.key_id, "keyId")?, false)?;
        self.authorize(caller, "kms:PutKeyPolicy", &record, None)?;
        if record.state == KeyState::PendingDeletion {
            return Err(self.pending_deletion(&record));
        }
        let policy = Policy::parse(&text)?;
        self.check_lockout(
            &policy,
            &record.key_id,
            caller,
            request.bypass_policy_lockout_safety_check.unwrap_or(false),
        )?;
        self.store.update_key(&record.key_id, |key| {
            key.policy = text;
            Ok(())
        })?;
        tracing::info!(request_id = caller.request_id, key_id = %record.key_id, "replaced key policy");
        Ok(json!({}))
    }

    // --- cryptographic operations ---

    /// Encrypts under a symmetric key in kms-local's ciphertext format:
    /// version (1 byte) ‖ key id (36 bytes) ‖ nonce (12 bytes) ‖ AES-256-GCM
    /// ciphertext and tag. The additional data binds the key id and the
    /// encryption context.
    fn seal_symmetric(
        &self,
        record: &KeyRecord,
        context: &BTreeMap<String, String>,
        plaintext: &[u8],
    ) -> KmsResult<Vec<u8>> {
        let material = self.store.material(&record.key_id)?;
        let aad = symmetric_aad(&record.key_id, context);
        let (sealed, nonce) = material.seal(&aad, plaintext)?;
        let mut blob = Vec::with_capacity(1 + KEY_ID_LEN + nonce.len() + sealed.len());
        blob.push(CIPHERTEXT_VERSION);
        blob.extend_from_slice(record.key_id.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    fn encrypt(&self, request: EncryptRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let key_id = required(request.key_id, "keyId")?;
        let plaintext = required(request.plaintext, "plaintext")?;
        check_length("plaintext", plaintext.as_slice().len(), 1, MAX_PLAINTEXT_LEN)?;
        let algorithm = request
            .encryption_algorithm
            .as_deref()
            .map(EncryptionAlgorithm::parse)
            .transpose()?
            .unwrap_or(EncryptionAlgorithm::SymmetricDefault);

        let record = self.resolve(&key_id, true)?;
        self.authorize(caller, "kms:Encrypt", &record, None)?;
        self.require_enabled(&record)?;
        self.require_usage(&record, KeyUsage::EncryptDecrypt, "Encrypt")?;
        self.check_algorithm(&record, algorithm)?;
        if record.key_spec.is_asymmetric() && !request.encryption_context.is_empty() {
            return Err(KmsError::validation("EncryptionContext is not supported with asymmetric keys; remove it"));
        }
        if request.dry_run {
            return Err(KmsError::dry_run_succeeded());
        }

        let ciphertext = if record.key_spec.is_asymmetric() {
            self.store.material(&record.key_id)?.rsa_encrypt(record.key_spec, algorithm, plaintext.as_slice())?
        } else {
            self.seal_symmetric(&record, &request.encryption_context, plaintext.as_slice())?
        };
        Ok(json!({
            "CiphertextBlob": Blob::new(ciphertext),
            "KeyId": self.key_arn(&record.key_id),
            "EncryptionAlgorithm": algorithm,
        }))
    }

    fn check_algorithm(&self, record: &KeyRecord, algorithm: EncryptionAlgorithm) -> KmsResult<()> {
        if record.key_spec.encryption_algorithms().contains(&algorithm) {
            return Ok(());
        }
        let accepted: Vec<&str> = record.key_spec.encryption_algorithms().iter().map(|a| a.as_str()).collect();
        Err(KmsError::new(
            ErrorKind::InvalidKeyUsage,
            format!(
                "{} is a {} key; EncryptionAlgorithm {algorithm} is not valid for it (accepted: {})",
                self.key_arn(&record.key_id),
                record.key_spec,
                accepted.join(", ")
            ),
        ))
    }

    fn decrypt(&self, request: DecryptRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let blob = required(request.ciphertext_blob, "ciphertextBlob")?;
        check_length("ciphertextBlob", blob.as_slice().len(), 1, MAX_CIPHERTEXT_LEN)?;
        let algorithm = request
            .encryption_algorithm
            .as_deref()
            .map(EncryptionAlgorithm::parse)
            .transpose()?
            .unwrap_or(EncryptionAlgorithm::SymmetricDefault);

        let (record, symmetric) = if algorithm == EncryptionAlgorithm::SymmetricDefault {
            let parsed = parse_symmetric_blob(blob.as_slice())?;
            let record = self.load(parsed.key_id, parsed.key_id)?;
            if let Some(key_id) = &request.key_id {
                let named = self.resolve(key_id, true)?;
                if named.key_id != record.key_id {
                    return Err(KmsError::new(
                        ErrorKind::IncorrectKey,
                        format!(
                            "the ciphertext was encrypted under {}, not under the KeyId {key_id}",
                            self.key_arn(&record.key_id)
                        ),
                    ));
                }
            }
            (record, Some(parsed))
        } else {
            let key_id = request.key_id.as_deref().ok_or_else(|| {
                KmsError::validation("KeyId is required to decrypt with an asymmetric EncryptionAlgorithm")
            })?;
            (self.resolve(key_id, true)?, None)
        };
        let recipient = self.verify_recipient(request.recipient.as_ref(), caller)?;
        self.authorize(caller, "kms:Decrypt", &record, recipient.as_ref())?;
        self.require_enabled(&record)?;
        self.require_usage(&record, KeyUsage::EncryptDecrypt, "Decrypt")?;
        self.check_algorithm(&record, algorithm)?;
        if request.dry_run {
            return Err(KmsError::dry_run_succeeded());
        }

        let material = self.store.material(&record.key_id)?;
        let plaintext = match symmetric {
            Some(parsed) => {
                let aad = symmetric_aad(&record.key_id, &request.encryption_context);
                material.open(&aad, parsed.nonce, parsed.sealed)?
            }
            None => material.rsa_decrypt(record.key_spec, algorithm, blob.as_slice())?,
        };
        let mut response = json!({
            "KeyId": self.key_arn(&record.key_id),
            "EncryptionAlgorithm": algorithm,
        });
        self.put_plaintext(&mut response, "Plaintext", plaintext, recipient.as_ref())?;
        Ok(response)
    }

    /// Puts a plaintext into a response: under `field`, or, with a
    /// `Recipient`, as `CiphertextForRecipient` with `field` left out.
    fn put_plaintext(
        &self,
        response: &mut Value,
        field: &str,
        plaintext: Zeroizing<Vec<u8>>,
        recipient: Option<&VerifiedRecipient>,
    ) -> KmsResult<()> {
        let Value::Object(fields) = response else {
            return Err(KmsError::internal("response is not a JSON object"));
        };
        match recipient {
            Some(recipient) => {
                let envelope = envelope(recipient, &plaintext)?;
                fields.insert("CiphertextForRecipient".to_owned(), json!(Blob::new(envelope)));
            }
            None => {
                fields.insert(field.to_owned(), json!(Blob::from(plaintext)));
            }
        }
        Ok(())
    }

    fn generate_data_key(&self, request: GenerateDataKeyRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let key_id = required(request.key_id, "keyId")?;
        let length = match (request.number_of_bytes, request.key_spec.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(KmsError::validation("NumberOfBytes and KeySpec are both set; set exactly one"));
            }
            (None, None) => {
                return Err(KmsError::validation("set either KeySpec (AES_256 or AES_128) or NumberOfBytes"));
            }
            (Some(bytes), None) => number_of_bytes(bytes)?,
            (None, Some("AES_256")) => 32,
            (None, Some("AES_128")) => 16,
            (None, Some(other)) => {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: value {other:?} at 'keySpec' failed to satisfy constraint: member must satisfy enum value set: [AES_256, AES_128]"
                )));
            }
        };

        let record = self.resolve(&key_id, true)?;
        let recipient = self.verify_recipient(request.recipient.as_ref(), caller)?;
        self.authorize(caller, "kms:GenerateDataKey", &record, recipient.as_ref())?;
        self.require_enabled(&record)?;
        self.require_symmetric(&record, "GenerateDataKey")?;
        if request.dry_run {
            return Err(KmsError::dry_run_succeeded());
        }

        let plaintext = random_bytes(length)?;
        let ciphertext = self.seal_symmetric(&record, &request.encryption_context, &plaintext)?;
        let mut response = json!({
            "CiphertextBlob": Blob::new(ciphertext),
            "KeyId": self.key_arn(&record.key_id),
        });
        self.put_plaintext(&mut response, "Plaintext", plaintext, recipient.as_ref())?;
        Ok(response)
    }

    fn require_symmetric(&self, record: &KeyRecord, operation: &str) -> KmsResult<()> {
        if record.key_spec == KeySpec::SymmetricDefault {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorKind::InvalidKeyUsage,
            format!(
                "{} is a {} key; {operation} requires a symmetric encryption key (SYMMETRIC_DEFAULT)",
                self.key_arn(&record.key_id),
                record.key_spec
            ),
        ))
    }

    fn generate_data_key_pair(&self, request: GenerateDataKeyPairRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let key_id = required(request.key_id, "keyId")?;
        let spec_text = required(request.key_pair_spec, "keyPairSpec")?;
        if spec_text == "SM2" {
            return Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                "KeyPairSpec SM2 is available only in China Regions",
            ));
        }
        let spec = DataKeyPairSpec::parse(&spec_text)?;

        let record = self.resolve(&key_id, true)?;
        let recipient = self.verify_recipient(request.recipient.as_ref(), caller)?;
        self.authorize(caller, "kms:GenerateDataKeyPair", &record, recipient.as_ref())?;
        self.require_enabled(&record)?;
        self.require_symmetric(&record, "GenerateDataKeyPair")?;
        if request.dry_run {
            return Err(KmsError::dry_run_succeeded());
        }

        let pair = generate_data_key_pair(spec)?;
        let private_ciphertext = self.seal_symmetric(&record, &request.encryption_context, &pair.private_pkcs8)?;
        let mut response = json!({
            "PrivateKeyCiphertextBlob": Blob::new(private_ciphertext),
            "PublicKey": Blob::new(pair.public_spki),
            "KeyId": self.key_arn(&record.key_id),
            "KeyPairSpec": spec,
        });
        self.put_plaintext(&mut response, "PrivateKeyPlaintext", pair.private_pkcs8, recipient.as_ref())?;
        Ok(response)
    }

    fn generate_random(&self, request: GenerateRandomRequest) -> KmsResult<Value> {
        if request.custom_key_store_id.is_some() {
            return Err(KmsError::new(ErrorKind::UnsupportedOperation, "kms-local has no custom key stores"));
        }
        let length = number_of_bytes(required(request.number_of_bytes, "numberOfBytes")?)?;
        let recipient = match &request.recipient {
            Some(param) => Some(self.recipient.verify(param)?),
            None => None,
        };
        let mut response = json!({});
        self.put_plaintext(&mut response, "Plaintext", random_bytes(length)?, recipient.as_ref())?;
        Ok(response)
    }

    fn derive_shared_secret(&self, request: DeriveSharedSecretRequest, caller: Caller<'_>) -> KmsResult<Value> {
        check_grant_tokens(&request.grant_tokens)?;
        let key_id = required(request.key_id, "keyId")?;
        match required(request.key_agreement_algorithm, "keyAgreementAlgorithm")?.as_str() {
            "ECDH" => {}
            other => {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: value {other:?} at 'keyAgreementAlgorithm' failed to satisfy constraint: member must satisfy enum value set: [ECDH]"
                )));
            }
        }
        let public_key = required(request.public_key, "publicKey")?;
        check_length("publicKey", public_key.as_slice().len(), 1, 8192)?;

        let record = self.resolve(&key_id, true)?;
        let recipient = self.verify_recipient(request.recipient.as_ref(), caller)?;
        self.authorize(caller, "kms:DeriveSharedSecret", &record, recipient.as_ref())?;
        self.require_enabled(&record)?;
        self.require_usage(&record, KeyUsage::KeyAgreement, "DeriveSharedSecret")?;
        let private = self
            .agreement_keys
            .get_or_parse(&record.key_id, || self.store.material(&record.key_id)?.agreement_key(record.key_spec))?;
        let secret = derive_shared_secret(&private, record.key_spec, public_key.as_slice())?;
        if request.dry_run {
            return Err(KmsError::dry_run_succeeded());
        }

        let mut response = json!({
            "KeyId": self.key_arn(&record.key_id),
            "KeyAgreementAlgorithm": "ECDH",
            "KeyOrigin": "AWS_KMS",
        });
        self.put_plaintext(&mut response, "SharedSecret", secret, recipient.as_ref())?;
        Ok(response)
    }
}

fn number_of_bytes(value: i64) -> KmsResult<usize> {
    match usize::try_from(value) {
        Ok(length @ 1..=1024) => Ok(length),
        _ => Err(KmsError::validation(format!("NumberOfBytes is {value}; it must be between 1 and 1024"))),
    }
}

fn list_limit(limit: Option<i64>) -> KmsResult<usize> {
    match limit {
        None => Ok(100),
        Some(value) => match usize::try_from(value) {
            Ok(limit @ 1..=1000) => Ok(limit),
            _ => Err(KmsError::validation(format!("Limit is {value}; it must be between 1 and 1000"))),
        },
    }
}

/// Returns the page after `marker` (the last name of the previous page) and
/// the marker of the next page, if any.
fn paginate<'a, T>(
    items: &'a [T],
    marker: Option<&str>,
    limit: usize,
    name: impl Fn(&T) -> String,
) -> KmsResult<(&'a [T], Option<String>)> {
    let start = match marker {
        None => 0,
        Some(marker) => {
            check_length("marker", marker.len(), 1, 1024)?;
            items.iter().position(|item| name(item).as_str() > marker).unwrap_or(items.len())
        }
    };
    let rest = items.get(start..).unwrap_or_default();
    if rest.len() <= limit {
        return Ok((rest, None));
    }
    let page = rest.get(..limit).unwrap_or(rest);
    Ok((page, page.last().map(name)))
}

fn list_response(field: &str, entries: Vec<Value>, next: Option<String>) -> Value {
    let mut response = serde_json::Map::new();
    response.insert(field.to_owned(), Value::Array(entries));
    response.insert("Truncated".to_owned(), Value::Bool(next.is_some()));
    if let Some(next) = next {
        response.insert("NextMarker".to_owned(), Value::String(next));
    }
    Value::Object(response)
}

struct SymmetricBlob<'a> {
    key_id: &'a str,
    nonce: [u8; 12],
    sealed: &'a [u8],
}

fn parse_symmetric_blob(blob: &[u8]) -> KmsResult<SymmetricBlob<'_>> {
    let invalid = || {
        KmsError::new(
            ErrorKind::InvalidCiphertext,
            "CiphertextBlob is not a kms-local symmetric ciphertext; for RSA ciphertext set KeyId and EncryptionAlgorithm",
        )
    };
    let (&version, rest) = blob.split_first().ok_or_else(invalid)?;
    if version != CIPHERTEXT_VERSION {
        return Err(invalid());
    }
    let (key_id, rest) = rest.split_at_checked(KEY_ID_LEN).ok_or_else(invalid)?;
    let key_id = std::str::from_utf8(key_id).ok().filter(|id| is_uuid(id)).ok_or_else(invalid)?;
    let (nonce, sealed) = rest.split_at_checked(12).ok_or_else(invalid)?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| invalid())?;
    if sealed.len() < 16 {
        return Err(invalid());
    }
    Ok(SymmetricBlob { key_id, nonce, sealed })
}

/// Builds the AES-GCM additional data: a label, the key id and the
/// encryption context as length-prefixed pairs in key order.
fn symmetric_aad(key_id: &str, context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut aad = b"kms-local symmetric v1\0".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    for (name, value) in context {
        for part in [name, value] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
    }
    aad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parsed_cache_parses_once_and_empties_when_full() {
        let cache = ParsedCache::new(2);
        let parses = std::cell::Cell::new(0);
        let parse = |value: u32| {
            parses.set(parses.get() + 1);
            Ok(value)
        };
        assert_eq!(*cache.get_or_parse("a", || parse(1)).unwrap(), 1);
        assert_eq!(*cache.get_or_parse("a", || parse(9)).unwrap(), 1);
        assert_eq!(parses.get(), 1);

        // A failed parse is not cached.
        let error = cache.get_or_parse("b", || Err(KmsError::internal("bad"))).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Internal);
        assert_eq!(*cache.get_or_parse("b", || parse(2)).unwrap(), 2);
        assert_eq!(parses.get(), 2);

        // A third key empties the full cache, so "a" is parsed again.
        assert_eq!(*cache.get_or_parse("c", || parse(3)).unwrap(), 3);
        assert_eq!(cache.lock().len(), 1);
        assert_eq!(*cache.get_or_parse("a", || parse(4)).unwrap(), 4);
        assert_eq!(parses.get(), 4);
    }

    #[test]
    fn uuid_format() {
        let id = new_uuid();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(!is_uuid("alias/x"));
    }

    #[test]
    fn pagination_pages_by_marker() {
        let items: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let (page, next) = paginate(&items, None, 2, Clone::clone).unwrap();
        assert_eq!(page, ["k0", "k1"]);
        assert_eq!(next.as_deref(), Some("k1"));
        let (page, next) = paginate(&items, Some("k1"), 2, Clone::clone).unwrap();
        assert_eq!(page, ["k2", "k3"]);
        let (page, last) = paginate(&items, next.as_deref(), 2, Clone::clone).unwrap();
        assert_eq!(page, ["k4"]);
        assert!(last.is_none());
    }

    #[test]
    fn symmetric_blob_rejects_garbage() {
        for blob in [&b""[..], b"\x02", b"\x01short", &[1; 60]] {
            assert_eq!(parse_symmetric_blob(blob).err().unwrap().kind, ErrorKind::InvalidCiphertext);
        }
    }
}
