//! Forwarding of Recipient operations to KMS through aws-sdk-kms.
//!
//! The parent calls KMS with its own credentials (the standard AWS credential
//! chain) and passes the enclave's `Recipient` through unchanged, so KMS
//! encrypts the result to the enclave's attested RSA key.

use std::time::Duration;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, DataKeySpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeyEncryptionMechanism,
    RecipientInfo,
};
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use recipient_common::protocol::{
    DecryptOutput, DeriveSharedSecretOutput, ErrorFrame, GenerateDataKeyOutput, GenerateDataKeyPairOutput,
    GenerateRandomOutput, Operation, Output, Recipient, SecretBytes,
};
use serde_bytes::ByteBuf;

/// Settings of the KMS client.
#[derive(Debug, Clone, Default)]
pub struct KmsOptions {
    /// Overrides the endpoint (`--endpoint-url`); `AWS_ENDPOINT_URL_KMS` and
    /// `AWS_ENDPOINT_URL` are honoured by the SDK when this is `None`.
    pub endpoint_url: Option<String>,
    /// Overrides the region found by the standard region chain.
    pub region: Option<String>,
    /// Total attempts per call, first one included.
    pub max_attempts: u32,
    /// `standard` or `adaptive`.
    pub retry_mode: RetryMode,
    /// Connect timeout of one attempt.
    pub connect_timeout: Duration,
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
}

/// The SDK retry strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryMode {
    #[default]
    Standard,
    Adaptive,
}

/// A KMS operation's result with the KMS request id, when KMS sent one.
#[derive(Debug)]
pub struct Forwarded {
    pub output: Output,
    pub kms_request_id: Option<String>,
}

/// A failed forward, with the KMS request id when KMS responded.
#[derive(Debug)]
pub struct ForwardError {
    pub error: ErrorFrame,
    pub kms_request_id: Option<String>,
}

/// A region that KMS requests cannot be signed for.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The standard region chain found no region and none was given.
    #[error(
        "no AWS region is configured; pass --region (for example --region us-east-1), set AWS_REGION, \
         or set a region in the AWS profile"
    )]
    Missing,
    /// The region is not a valid host label, so no endpoint can be built.
    #[error("AWS region `{0}` is not valid; {REGION_FORM}")]
    Invalid(String),
}

/// The form of a valid region, for error messages.
pub const REGION_FORM: &str =
    "a region is lowercase letters, digits and hyphens, for example us-east-1 or eu-central-1";

/// Returns whether `region` can name a regional endpoint: a DNS label of
/// lowercase letters, digits and inner hyphens, 1 to 63 characters.
pub fn is_valid_region(region: &str) -> bool {
    (1..=63).contains(&region.len())
        && region.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// An aws-sdk-kms client that forwards protocol operations.
#[derive(Debug, Clone)]
pub struct KmsForwarder {
    client: aws_sdk_kms::Client,
    /// The endpoint, as named in an "unreachable" error.
    endpoint: String,
}

impl KmsForwarder {
    /// Builds the client from the standard configuration chain and `options`.
    /// Fails when no valid region is configured, because KMS requests are
    /// signed for a region and every call would fail.
    pub async fn new(options: &KmsOptions) -> Result<Self, RegionError> {
        let retry = match options.retry_mode {
            RetryMode::Standard => aws_config::retry::RetryConfig::standard(),
            RetryMode::Adaptive => aws_config::retry::RetryConfig::adaptive(),
        }
        .with_max_attempts(options.max_attempts.max(1));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout)
            .build();

        // Stalled-stream protection watches the throughput of long bodies.
        // KMS bodies are small (at most a few hundred kilobytes) and every
        // attempt is bounded by the attempt timeout, so it would only add a
        // timer to each request.
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .retry_config(retry)
                .timeout_config(timeouts)
                .stalled_stream_protection(
                    aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
                );
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        match config.region() {
            None => return Err(RegionError::Missing),
            Some(region) if !is_valid_region(region.as_ref()) => {
                return Err(RegionError::Invalid(region.as_ref().to_owned()));
            }
            Some(_) => {}
        }
        let environment = ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"].iter().find_map(|name| std::env::var(name).ok());
        let endpoint = match (&options.endpoint_url, environment, config.region()) {
            (Some(url), _, _) => url.clone(),
            (None, Some(url), _) => url,
            (None, None, Some(region)) => format!("the KMS endpoint of region {region}"),
            (None, None, None) => "the KMS endpoint".to_owned(),
        };
        let kms_config = aws_sdk_kms::config::Builder::from(&config).interceptor(RetryLogger).build();
        Ok(Self { client: aws_sdk_kms::Client::from_conf(kms_config), endpoint })
    }

    /// Wraps an existing client.
    pub fn from_client(client: aws_sdk_kms::Client) -> Self {
        Self { client, endpoint: "the KMS endpoint".to_owned() }
    }

    /// Calls KMS for `operation`, on behalf of the enclave request `origin`.
    /// An "unreachable" error names the endpoint and the flag that sets it.
    pub async fn forward(&self, origin: Origin, operation: Operation) -> Result<Forwarded, ForwardError> {
        let mut result = ORIGIN.scope(origin, self.call(operation)).await;
        if let Err(ForwardError { error: ErrorFrame::KmsUnreachable { message }, .. }) = &mut result {
            message.push_str(&format!(
                "; check that {} is reachable from the parent and that parent-proxy's --endpoint-url is correct",
                self.endpoint
            ));
        }
        result
    }

    async fn call(&self, operation: Operation) -> Result<Forwarded, ForwardError> {
        match operation {
            Operation::DeriveSharedSecret(request) => {
                let response = self
                    .client
                    .derive_shared_secret()
                    .key_id(request.key_id)
                    .key_agreement_algorithm(KeyAgreementAlgorithmSpec::from(request.key_agreement_algorithm.as_str()))
                    .public_key(Blob::new(request.public_key.into_vec()))
                    .set_grant_tokens(non_empty(request.grant_tokens))
                    .set_dry_run(request.dry_run.then_some(true))
                    .set_recipient(request.recipient.map(recipient_info))
                    .send()
                    .await
                    .map_err(forward_error)?;
                let kms_request_id = response.request_id().map(str::to_owned);
                let output = Output::DeriveSharedSecret(DeriveSharedSecretOutput {
                    key_id: response.key_id,
                    shared_secret: response.shared_secret.map(secret),
                    ciphertext_for_recipient: response.ciphertext_for_recipient.map(bytes),
                    key_agreement_algorithm: response.key_agreement_algorithm.map(|a| a.as_str().to_owned()),
                    key_origin: response.key_origin.map(|o| o.as_str().to_owned()),
                });
                Ok(Forwarded { output, kms_request_id })
            }
            Operation::Decrypt(request) => {
                let response = self
                    .client
                    .decrypt()
                    .ciphertext_blob(Blob::new(request.ciphertext_blob.into_vec()))
                    .set_key_id(request.key_id)
                    .set_encryption_context(non_empty_map(request.encryption_context))
                    .set_encryption_algorithm(
                        request.encryption_algorithm.as_deref().map(EncryptionAlgorithmSpec::from),
                    )
                    .set_grant_tokens(non_empty(request.grant_tokens))
                    .set_dry_run(request.dry_run.then_some(true))
                    .set_recipient(request.recipient.map(recipient_info))
                    .send()
                    .await
                    .map_err(forward_error)?;
                let kms_request_id = response.request_id().map(str::to_owned);
                let output = Output::Decrypt(DecryptOutput {
                    key_id: response.key_id,
                    plaintext: response.plaintext.map(secret),
                    ciphertext_for_recipient: response.ciphertext_for_recipient.map(bytes),
                    encryption_algorithm: response.encryption_algorithm.map(|a| a.as_str().to_owned()),
                });
                Ok(Forwarded { output, kms_request_id })
            }
            Operation::GenerateDataKey(request) => {
                let response = self
                    .client
                    .generate_data_key()
                    .key_id(request.key_id)
                    .set_key_spec(request.key_spec.as_deref().map(DataKeySpec::from))
                    .set_number_of_bytes(request.number_of_bytes.map(clamp_i32))
                    .set_encryption_context(non_empty_map(request.encryption_context))
                    .set_grant_tokens(non_empty(request.grant_tokens))
                    .set_dry_run(request.dry_run.then_some(true))
                    .set_recipient(request.recipient.map(recipient_info))
                    .send()
                    .await
                    .map_err(forward_error)?;
                let kms_request_id = response.request_id().map(str::to_owned);
                let output = Output::GenerateDataKey(GenerateDataKeyOutput {
                    key_id: response.key_id,
                    ciphertext_blob: response.ciphertext_blob.map(bytes),
                    plaintext: response.plaintext.map(secret),
                    ciphertext_for_recipient: response.ciphertext_for_recipient.map(bytes),
                });
                Ok(Forwarded { output, kms_request_id })
            }
            Operation::GenerateDataKeyPair(request) => {
                let response = self
                    .client
                    .generate_data_key_pair()
                    .key_id(request.key_id)
                    .key_pair_spec(DataKeyPairSpec::from(request.key_pair_spec.as_str()))
                    .set_encryption_context(non_empty_map(request.encryption_context))
                    .set_grant_tokens(non_empty(request.grant_tokens))
                    .set_dry_run(request.dry_run.then_some(true))
                    .set_recipient(request.recipient.map(recipient_info))
                    .send()
                    .await
                    .map_err(forward_error)?;
                let kms_request_id = response.request_id().map(str::to_owned);
                let output = Output::GenerateDataKeyPair(GenerateDataKeyPairOutput {
                    key_id: response.key_id,
                    key_pair_spec: response.key_pair_spec.map(|s| s.as_str().to_owned()),
                    public_key: response.public_key.map(bytes),
                    private_key_ciphertext_blob: response.private_key_ciphertext_blob.map(bytes),
                    private_key_plaintext: response.private_key_plaintext.map(secret),
                    ciphertext_for_recipient: response.ciphertext_for_recipient.map(bytes),
                });
                Ok(Forwarded { output, kms_request_id })
            }
            Operation::GenerateRandom(request) => {
                let response = self
                    .client
                    .generate_random()
                    .number_of_bytes(clamp_i32(request.number_of_bytes))
                    .set_custom_key_store_id(request.custom_key_store_id)
                    .set_recipient(request.recipient.map(recipient_info))
                    .send()
                    .await
                    .map_err(forward_error)?;
                let kms_request_id = response.request_id().map(str::to_owned);
                let output = Output::GenerateRandom(GenerateRandomOutput {
                    plaintext: response.plaintext.map(secret),
                    ciphertext_for_recipient: response.ciphertext_for_recipient.map(bytes),
                });
                Ok(Forwarded { output, kms_request_id })
            }
        }
    }
}

/// The enclave request that a KMS call is made for, named in the log line of
/// each retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The enclave connection's number, as in the request log.
    pub connection: u64,
    /// The request id that the enclave chose.
    pub request_id: u64,
}

tokio::task_local! {
    /// The origin of the KMS call running on this task.
    static ORIGIN: Origin;
}

/// Logs every KMS attempt after the first, so that retries show in the log.
#[derive(Debug)]
struct RetryLogger;

impl aws_sdk_kms::config::Intercept for RetryLogger {
    fn name(&self) -> &'static str {
        "RetryLogger"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_kms::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_kms::config::RuntimeComponents,
        cfg: &mut aws_sdk_kms::config::ConfigBag,
    ) -> Result<(), aws_sdk_kms::error::BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, RequestAttempts::attempts);
        if attempt > 1 {
            let operation =
                cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>().map_or("KMS", |m| m.name());
            let previous = cfg.load::<AttemptFailure>().map_or("-", |failure| failure.0.as_str());
            // Outside a forwarded request the two ids are absent and left out.
            let origin = ORIGIN.try_with(|origin| *origin).ok();
            tracing::warn!(
                connection = origin.map(|origin| origin.connection),
                request_id = origin.map(|origin| origin.request_id),
                attempt,
                operation,
                previous_error = previous,
                "retrying KMS call"
            );
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &aws_sdk_kms::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _components: &aws_sdk_kms::config::RuntimeComponents,
        cfg: &mut aws_sdk_kms::config::ConfigBag,
    ) -> Result<(), aws_sdk_kms::error::BoxError> {
        if let Some(Err(error)) = context.output_or_error() {
            let status = context.response().map(|response| response.status().as_u16());
            let text = match status {
                Some(status) => format!("HTTP {status}: {}", error_chain(error)),
                None => error_chain(error),
            };
            cfg.interceptor_state().store_put(AttemptFailure(text));
        }
        Ok(())
    }
}

/// The error of the last failed attempt, for the log line of the retry.
#[derive(Debug, Clone)]
struct AttemptFailure(String);

impl aws_smithy_types::config_bag::Storable for AttemptFailure {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

fn recipient_info(recipient: Recipient) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::from(recipient.key_encryption_algorithm.as_str()))
        .attestation_document(Blob::new(recipient.attestation_document.into_vec()))
        .build()
}

fn non_empty(values: Vec<String>) -> Option<Vec<String>> {
    (!values.is_empty()).then_some(values)
}

fn non_empty_map(
    values: std::collections::BTreeMap<String, String>,
) -> Option<std::collections::HashMap<String, String>> {
    (!values.is_empty()).then(|| values.into_iter().collect())
}

/// KMS takes `NumberOfBytes` as a signed 32-bit integer; larger values are
/// sent as the maximum so that KMS rejects them with its own message.
fn clamp_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn bytes(blob: Blob) -> ByteBuf {
    ByteBuf::from(blob.into_inner())
}

fn secret(blob: Blob) -> SecretBytes {
    SecretBytes(blob.into_inner())
}

/// Sorts an SDK failure into the protocol's error kinds: a KMS error with its
/// name, KMS unreachable, KMS timed out, or a request the SDK could not build.
fn forward_error<E, R>(error: SdkError<E, R>) -> ForwardError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
    SdkError<E, R>: RequestId,
{
    let kms_request_id = error.request_id().map(str::to_owned);
    let frame = match &error {
        SdkError::ServiceError(service) => {
            let kms_error = service.err();
            ErrorFrame::Kms {
                name: kms_error.code().unwrap_or("UnknownError").to_owned(),
                message: kms_error.message().unwrap_or_default().to_owned(),
                request_id: kms_request_id.clone(),
            }
        }
        SdkError::TimeoutError(_) => ErrorFrame::KmsTimeout { message: error_chain(&error) },
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            ErrorFrame::KmsTimeout { message: error_chain(&error) }
        }
        // The SDK reports credentials it could not find as a dispatch failure,
        // although the request never left.
        SdkError::DispatchFailure(failure)
            if failure.as_connector_error().is_some_and(|connector| caused_by_credentials(connector)) =>
        {
            ErrorFrame::Internal {
                message: format!(
                    "{NO_CREDENTIALS} ({}); give parent-proxy credentials: an instance profile role on EC2, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                    error_chain(&error)
                ),
            }
        }
        SdkError::DispatchFailure(_) => ErrorFrame::KmsUnreachable { message: error_chain(&error) },
        SdkError::ConstructionFailure(_) => ErrorFrame::Malformed { message: error_chain(&error) },
        SdkError::ResponseError(_) => {
            ErrorFrame::KmsUnreachable { message: format!("invalid response from KMS: {}", error_chain(&error)) }
        }
        _ => ErrorFrame::Internal { message: error_chain(&error) },
    };
    ForwardError { error: frame, kms_request_id }
}

/// The start of the message of a call that failed for want of credentials.
const NO_CREDENTIALS: &str = "parent-proxy has no AWS credentials to sign the KMS request";

/// Returns whether `error` or one of its sources is a failure of the
/// credential chain.
fn caused_by_credentials(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(cause) = next {
        if cause.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// Maximum length, in characters, of each cause kept in an error message.
const MAX_CAUSE_LEN: usize = 300;

/// Joins an error and its sources into one line for the enclave and the log.
/// SDK errors can carry a debug dump of the whole HTTP request, attestation
/// document included, so causes that look like one are left out and each
/// cause is cut to a bounded length.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        let dump = cause_text.contains("Request {") || cause_text.contains("body:") || cause_text.contains("SdkBody");
        if !dump && !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            let mut chars = cause_text.chars();
            text.extend(chars.by_ref().take(MAX_CAUSE_LEN));
            if chars.next().is_some() {
                text.push('…');
            }
        }
        next = cause.source();
    }
    if text.is_empty() { "the SDK reported an error without a printable cause".to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: String,
        #[source]
        inner: Option<Box<Layer>>,
    }

    fn layer(text: &str, inner: Option<Layer>) -> Layer {
        Layer { text: text.to_owned(), inner: inner.map(Box::new) }
    }

    #[test]
    fn region_forms() {
        for valid in ["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1", "local"] {
            assert!(is_valid_region(valid), "{valid}");
        }
        for invalid in ["", "us east 1", "US-EAST-1", "-us", "us-", "us_east_1", &"a".repeat(64)] {
            assert!(!is_valid_region(invalid), "{invalid:?}");
        }
    }

    #[test]
    fn error_chain_drops_request_dumps() {
        let dump = layer("Request { body: SdkBody { inner: Once(Some(b\"attestation\")) } }", None);
        let error = layer("dispatch failure", Some(layer("endpoint must contain scheme", Some(dump))));
        assert_eq!(error_chain(&error), "dispatch failure: endpoint must contain scheme");
    }

    #[test]
    fn error_chain_cuts_long_causes() {
        let error = layer("failure", Some(layer(&"x".repeat(5000), None)));
        assert_eq!(error_chain(&error), format!("failure: {}…", "x".repeat(MAX_CAUSE_LEN)));

        // A cause of exactly the maximum length is kept whole, without a mark.
        let error = layer("failure", Some(layer(&"y".repeat(MAX_CAUSE_LEN), None)));
        assert_eq!(error_chain(&error), format!("failure: {}", "y".repeat(MAX_CAUSE_LEN)));
    }
}
