//! KMS errors as the JSON 1.1 protocol returns them: an HTTP status and a body
//! `{"__type": "<Name>", "message": "…"}`.

use std::fmt;

use axum::http::StatusCode;

/// The KMS error names kms-local returns. The name is the `__type` on the wire
/// and the class that SDKs map the error to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parameter is missing, out of range, or not a valid value of its type.
    Validation,
    /// The request body is not JSON, or a field has the wrong JSON type.
    Serialization,
    /// `X-Amz-Target` names no operation of `TrentService`.
    UnknownOperation,
    NotFound,
    AlreadyExists,
    Disabled,
    InvalidKeyUsage,
    /// The key is pending deletion, or the operation is invalid in its state.
    KmsInvalidState,
    IncorrectKey,
    InvalidCiphertext,
    InvalidGrantToken,
    InvalidAliasName,
    InvalidMarker,
    MalformedPolicyDocument,
    /// The key policy does not allow the call, or a `Recipient` attestation
    /// document was rejected.
    AccessDenied,
    /// A dry run would have succeeded.
    DryRunOperation,
    /// The request is valid for AWS KMS but kms-local does not implement it.
    UnsupportedOperation,
    /// The `Authorization` header is absent.
    MissingAuthenticationToken,
    /// The access key id is not configured.
    UnrecognizedClient,
    /// The signature, its scope or its date is wrong.
    InvalidSignature,
    /// The `Authorization` header or `X-Amz-Date` is malformed or missing a part.
    IncompleteSignature,
    Internal,
}

impl ErrorKind {
    /// The `__type` name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Validation => "ValidationException",
            Self::Serialization => "SerializationException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::NotFound => "NotFoundException",
            Self::AlreadyExists => "AlreadyExistsException",
            Self::Disabled => "DisabledException",
            Self::InvalidKeyUsage => "InvalidKeyUsageException",
            Self::KmsInvalidState => "KMSInvalidStateException",
            Self::IncorrectKey => "IncorrectKeyException",
            Self::InvalidCiphertext => "InvalidCiphertextException",
            Self::InvalidGrantToken => "InvalidGrantTokenException",
            Self::InvalidAliasName => "InvalidAliasNameException",
            Self::InvalidMarker => "InvalidMarkerException",
            Self::MalformedPolicyDocument => "MalformedPolicyDocumentException",
            Self::AccessDenied => "AccessDeniedException",
            Self::DryRunOperation => "DryRunOperationException",
            Self::UnsupportedOperation => "UnsupportedOperationException",
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature => "InvalidSignatureException",
            Self::IncompleteSignature => "IncompleteSignatureException",
            Self::Internal => "KMSInternalException",
        }
    }

    /// The HTTP status AWS KMS uses for this error.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MissingAuthenticationToken => StatusCode::FORBIDDEN,
            // NOTE: believed to be 412; no AWS document states the status.
            Self::DryRunOperation => StatusCode::PRECONDITION_FAILED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// One failed request: the KMS error name and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct KmsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl KmsError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The error for a dry run whose checks all passed.
    pub fn dry_run_succeeded() -> Self {
        Self::new(ErrorKind::DryRunOperation, "the request would have succeeded, but the DryRun option is set")
    }
}

/// The result type of KMS operations.
pub type KmsResult<T> = Result<T, KmsError>;
