//! Access to the Nitro Secure Module (NSM).
//!
//! The [`Nsm`] trait takes the request and response types of
//! `aws-nitro-enclaves-nsm-api`, so the real device ([`DeviceNsm`], through
//! `/dev/nsm`) and the mock ([`MockNsm`], a PCR bank and a CA chain on disk)
//! are interchangeable. The helpers in this module ([`attest`],
//! [`describe_pcr`], …) turn a response into a typed result.

pub mod ca_store;
pub mod device;
pub mod mock;
pub mod pcr_file;

use std::fmt;
use std::io;
use std::path::PathBuf;

use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};
use serde_bytes::ByteBuf;

pub use ca_store::{CaStore, init_ca};
pub use device::DeviceNsm;
pub use mock::MockNsm;

/// The largest CBOR-encoded request the NSM driver accepts (4 KiB).
pub const MAX_REQUEST_LEN: usize = 0x1000;
/// The largest CBOR-encoded response the NSM driver returns (12 KiB).
pub const MAX_RESPONSE_LEN: usize = 0x3000;
/// The largest `public_key`, `user_data` or `nonce` an attestation request may carry.
pub const MAX_ATTESTATION_FIELD_LEN: usize = recipient_common::attestation::MAX_USER_FIELD_LEN;

/// A Nitro Secure Module: takes one request and returns one response.
///
/// Failures come back as `Response::Error(code)`, as from the device.
pub trait Nsm: Send + Sync {
    fn process(&self, request: Request) -> Response;
}

/// An NSM error code, mirroring [`ErrorCode`] with `Copy`, `Eq` and a `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsmErrorCode {
    Success,
    InvalidArgument,
    InvalidIndex,
    InvalidResponse,
    ReadOnlyIndex,
    InvalidOperation,
    BufferTooSmall,
    InputTooLarge,
    InternalError,
}

impl From<&ErrorCode> for NsmErrorCode {
    fn from(code: &ErrorCode) -> Self {
        match code {
            ErrorCode::Success => NsmErrorCode::Success,
            ErrorCode::InvalidArgument => NsmErrorCode::InvalidArgument,
            ErrorCode::InvalidIndex => NsmErrorCode::InvalidIndex,
            ErrorCode::InvalidResponse => NsmErrorCode::InvalidResponse,
            ErrorCode::ReadOnlyIndex => NsmErrorCode::ReadOnlyIndex,
            ErrorCode::InvalidOperation => NsmErrorCode::InvalidOperation,
            ErrorCode::BufferTooSmall => NsmErrorCode::BufferTooSmall,
            ErrorCode::InputTooLarge => NsmErrorCode::InputTooLarge,
            ErrorCode::InternalError => NsmErrorCode::InternalError,
        }
    }
}

impl fmt::Display for NsmErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Errors talking to an NSM or managing the mock's CA store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NsmError {
    /// The NSM answered a request with an error code.
    #[error("NSM rejected {request}: {code}{}", hint(*code))]
    Rejected { request: &'static str, code: NsmErrorCode },
    /// The NSM answered with a response of another kind than the request.
    #[error("NSM answered {request} with an unexpected {found} response")]
    UnexpectedResponse { request: &'static str, found: &'static str },
    /// A request argument is out of range before it reaches the NSM.
    #[error("invalid NSM request argument `{argument}`: {reason}")]
    InvalidArgument { argument: &'static str, reason: String },
    /// The NSM device could not be opened.
    // The I/O error is in the message and not a `source`, so the printed
    // chain does not repeat it.
    #[error(
        "failed to open the NSM device {}: {error}; it exists only inside a Nitro Enclave, so elsewhere use --nsm mock --mock-dir DIR",
        path.display()
    )]
    DeviceOpen { path: PathBuf, error: io::Error },
    /// Reading or writing a file of the CA store failed.
    #[error("mock CA store file {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// A CA store file or directory is readable or writable by other users.
    /// `access` names who may do what, as in "its group read it".
    #[error(
        "mock CA store path {} has mode {mode:04o}, which lets {access}; run `chmod {fix:o} {}`",
        path.display(), path.display()
    )]
    UnsafePermissions { path: PathBuf, mode: u32, access: String, fix: u32 },
    /// The CA store path exists but is not a directory.
    #[error(
        "mock CA store path {} is {found}, not a directory; pass a directory, or a path that does not exist for `enclave-agent mock-ca init` to create",
        path.display()
    )]
    NotADirectory { path: PathBuf, found: &'static str },
    /// A CA store file is a directory or another non-regular file.
    #[error(
        "mock CA store file {} is {found}, not a regular file; move it away and create a new store with `enclave-agent mock-ca init --dir DIR`",
        path.display()
    )]
    NotAFile { path: PathBuf, found: &'static str },
    /// A CA store path is a symbolic link.
    #[error("mock CA store path {} is a symbolic link; the store accepts only regular files in a real directory", path.display())]
    SymbolicLink { path: PathBuf },
    /// `init_ca` was called on a directory that already contains a store.
    #[error(
        "mock CA store {} is already initialised (root.pem exists) and was left unchanged; pass --keep-existing to use it, or choose another --dir",
        dir.display()
    )]
    AlreadyInitialised { dir: PathBuf },
    /// The directory contains no store.
    #[error("mock CA store {dir} is not initialised; run `enclave-agent mock-ca init --dir {dir}`", dir = dir.display())]
    NotInitialised { dir: PathBuf },
    /// A store file exists but its content is invalid.
    #[error("mock CA store file {} is invalid: {reason}", path.display())]
    InvalidStoreFile { path: PathBuf, reason: String },
    /// Generating or signing a certificate or a document failed.
    #[error("mock NSM could not {action}: {reason}")]
    Crypto { action: &'static str, reason: String },
    /// The PCR file is invalid.
    #[error("PCR file {} is invalid: {reason}", path.display())]
    PcrFile { path: PathBuf, reason: String },
    /// The PCR file could not be read.
    #[error("cannot read PCR file {}: {error}", path.display())]
    PcrFileRead { path: PathBuf, error: io::Error },
}

fn hint(code: NsmErrorCode) -> &'static str {
    match code {
        NsmErrorCode::InvalidIndex => " (the PCR index is outside 0-31 or the range is over 32)",
        NsmErrorCode::ReadOnlyIndex => " (the PCR is locked)",
        NsmErrorCode::InputTooLarge => {
            " (a field is over 1024 bytes, the request over 4 KiB, or the response over 12 KiB)"
        }
        _ => "",
    }
}

/// The name of a request, for messages and logs.
pub fn request_name(request: &Request) -> &'static str {
    match request {
        Request::DescribePCR { .. } => "DescribePCR",
        Request::ExtendPCR { .. } => "ExtendPCR",
        Request::LockPCR { .. } => "LockPCR",
        Request::LockPCRs { .. } => "LockPCRs",
        Request::DescribeNSM => "DescribeNSM",
        Request::Attestation { .. } => "Attestation",
        Request::GetRandom => "GetRandom",
        _ => "an unknown request",
    }
}

/// The name of a response, for messages and logs.
pub fn response_name(response: &Response) -> &'static str {
    match response {
        Response::DescribePCR { .. } => "DescribePCR",
        Response::ExtendPCR { .. } => "ExtendPCR",
        Response::LockPCR => "LockPCR",
        Response::LockPCRs => "LockPCRs",
        Response::DescribeNSM { .. } => "DescribeNSM",
        Response::Attestation { .. } => "Attestation",
        Response::GetRandom { .. } => "GetRandom",
        Response::Error(_) => "Error",
        _ => "an unknown response",
    }
}

/// The length of a request or response in the CBOR encoding the driver
/// sends (serde's externally tagged enums, byte fields as byte strings).
pub fn encoded_len<T: serde::Serialize>(message: &T) -> usize {
    let mut out = Vec::new();
    match ciborium::ser::into_writer(message, &mut out) {
        Ok(()) => out.len(),
        Err(_) => usize::MAX,
    }
}

fn unexpected(request: &'static str, response: &Response) -> NsmError {
    match response {
        Response::Error(code) => NsmError::Rejected { request, code: code.into() },
        other => NsmError::UnexpectedResponse { request, found: response_name(other) },
    }
}

/// Requests an attestation document carrying the given fields, each at most
/// [`MAX_ATTESTATION_FIELD_LEN`] bytes.
pub fn attest(
    nsm: &dyn Nsm,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
) -> Result<Vec<u8>, NsmError> {
    let request = Request::Attestation {
        user_data: user_data.map(ByteBuf::from),
        nonce: nonce.map(ByteBuf::from),
        public_key: public_key.map(ByteBuf::from),
    };
    match nsm.process(request) {
        Response::Attestation { document } => Ok(document),
        other => Err(unexpected("Attestation", &other)),
    }
}

/// The state of one PCR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrState {
    pub locked: bool,
    pub value: Vec<u8>,
}

/// Reads PCR `index`.
pub fn describe_pcr(nsm: &dyn Nsm, index: u16) -> Result<PcrState, NsmError> {
    match nsm.process(Request::DescribePCR { index }) {
        Response::DescribePCR { lock, data } => Ok(PcrState { locked: lock, value: data }),
        other => Err(unexpected("DescribePCR", &other)),
    }
}

/// Extends PCR `index` with `data` and returns the new value.
pub fn extend_pcr(nsm: &dyn Nsm, index: u16, data: Vec<u8>) -> Result<Vec<u8>, NsmError> {
    match nsm.process(Request::ExtendPCR { index, data }) {
        Response::ExtendPCR { data } => Ok(data),
        other => Err(unexpected("ExtendPCR", &other)),
    }
}

/// Locks PCR `index` against further extends.
pub fn lock_pcr(nsm: &dyn Nsm, index: u16) -> Result<(), NsmError> {
    match nsm.process(Request::LockPCR { index }) {
        Response::LockPCR => Ok(()),
        other => Err(unexpected("LockPCR", &other)),
    }
}

/// Locks PCRs `0..range`.
pub fn lock_pcrs(nsm: &dyn Nsm, range: u16) -> Result<(), NsmError> {
    match nsm.process(Request::LockPCRs { range }) {
        Response::LockPCRs => Ok(()),
        other => Err(unexpected("LockPCRs", &other)),
    }
}

/// The NSM's description (`DescribeNSM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsmDescription {
    pub version: (u16, u16, u16),
    pub module_id: String,
    pub max_pcrs: u16,
    pub locked_pcrs: Vec<u16>,
    /// `SHA256`, `SHA384` or `SHA512`.
    pub digest: &'static str,
}

/// Describes the NSM: version, module id, PCR count, locked PCRs and digest.
pub fn describe_nsm(nsm: &dyn Nsm) -> Result<NsmDescription, NsmError> {
    match nsm.process(Request::DescribeNSM) {
        Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
        } => Ok(NsmDescription {
            version: (version_major, version_minor, version_patch),
            module_id,
            max_pcrs,
            locked_pcrs: locked_pcrs.into_iter().collect(),
            digest: match digest {
                Digest::SHA256 => "SHA256",
                Digest::SHA384 => "SHA384",
                Digest::SHA512 => "SHA512",
            },
        }),
        other => Err(unexpected("DescribeNSM", &other)),
    }
}

/// Returns random bytes from the NSM.
pub fn get_random(nsm: &dyn Nsm) -> Result<Vec<u8>, NsmError> {
    match nsm.process(Request::GetRandom) {
        Response::GetRandom { random } => Ok(random),
        other => Err(unexpected("GetRandom", &other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Returns one fixed response, to check how the helpers map it.
    struct Fixed(fn() -> Response);

    impl Nsm for Fixed {
        fn process(&self, _request: Request) -> Response {
            (self.0)()
        }
    }

    #[test]
    fn every_error_code_maps_to_its_name() {
        let cases = [
            (ErrorCode::Success, NsmErrorCode::Success),
            (ErrorCode::InvalidArgument, NsmErrorCode::InvalidArgument),
            (ErrorCode::InvalidIndex, NsmErrorCode::InvalidIndex),
            (ErrorCode::InvalidResponse, NsmErrorCode::InvalidResponse),
            (ErrorCode::ReadOnlyIndex, NsmErrorCode::ReadOnlyIndex),
            (ErrorCode::InvalidOperation, NsmErrorCode::InvalidOperation),
            (ErrorCode::BufferTooSmall, NsmErrorCode::BufferTooSmall),
            (ErrorCode::InputTooLarge, NsmErrorCode::InputTooLarge),
            (ErrorCode::InternalError, NsmErrorCode::InternalError),
        ];
        for (code, expected) in &cases {
            assert_eq!(NsmErrorCode::from(code), *expected);
            assert_eq!(NsmErrorCode::from(code).to_string(), format!("{code:?}"));
        }
    }

    #[test]
    fn attest_error_response_becomes_rejected() {
        let nsm = Fixed(|| Response::Error(ErrorCode::InputTooLarge));
        let err = attest(&nsm, None, None, None).unwrap_err();
        assert!(
            matches!(err, NsmError::Rejected { request: "Attestation", code: NsmErrorCode::InputTooLarge }),
            "{err}"
        );
        assert!(err.to_string().contains("over 1024 bytes"), "{err}");
    }

    #[test]
    fn attest_wrong_response_kind_reported() {
        let nsm = Fixed(|| Response::LockPCR);
        let err = attest(&nsm, None, None, None).unwrap_err();
        assert!(matches!(err, NsmError::UnexpectedResponse { request: "Attestation", found: "LockPCR" }), "{err}");
    }

    #[test]
    fn extend_locked_pcr_reports_read_only() {
        let nsm = Fixed(|| Response::Error(ErrorCode::ReadOnlyIndex));
        let err = extend_pcr(&nsm, 0, vec![1]).unwrap_err();
        assert!(matches!(err, NsmError::Rejected { request: "ExtendPCR", code: NsmErrorCode::ReadOnlyIndex }));
    }

    /// The request encoding the driver sends, spelled out byte by byte: serde's
    /// externally tagged enums as CBOR, byte fields as byte strings.
    #[test]
    fn request_encoding_matches_driver_format() {
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Request::DescribeNSM, &mut out).unwrap();
        assert_eq!(out, [&[0x6b][..], b"DescribeNSM"].concat());

        let mut out = Vec::new();
        ciborium::ser::into_writer(&Request::ExtendPCR { index: 16, data: vec![1, 2, 3] }, &mut out).unwrap();
        let expected =
            [&[0xa1, 0x69][..], b"ExtendPCR", &[0xa2, 0x65], b"index", &[0x10, 0x64], b"data", &[0x43, 1, 2, 3]]
                .concat();
        assert_eq!(out, expected);

        let request = Request::Attestation { user_data: None, nonce: Some(ByteBuf::from(vec![9])), public_key: None };
        let mut out = Vec::new();
        ciborium::ser::into_writer(&request, &mut out).unwrap();
        let expected = [
            &[0xa1, 0x6b][..],
            b"Attestation",
            &[0xa3, 0x69],
            b"user_data",
            &[0xf6, 0x65],
            b"nonce",
            &[0x41, 9, 0x6a],
            b"public_key",
            &[0xf6],
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(encoded_len(&request), expected.len());
    }
}
