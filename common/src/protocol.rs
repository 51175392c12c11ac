//! The enclave-parent wire protocol.
//!
//! Each message is one frame: a 4-byte big-endian body length, then a CBOR
//! body. A request carries the protocol version, a request id chosen by the
//! enclave, and one of the five KMS operations that accept a `Recipient`. The
//! response carries the same id and either the operation's output or a typed
//! [`ErrorFrame`] that tells parent refusals, KMS errors, transport failures
//! and malformed requests apart. Field names follow the KMS API.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The default maximum frame body: room for a 256 KiB attestation document
/// (the KMS limit for `AttestationDocument`) plus the other request fields.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 320 * 1024;

/// The only key encryption algorithm KMS accepts in a `Recipient`.
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";

/// Errors reading or writing a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer declared a body larger than this side accepts; the body was
    /// not read.
    #[error("frame of {declared} bytes exceeds the maximum of {max} bytes")]
    TooLarge { declared: u64, max: u32 },
    /// The four bytes where a frame length belongs are text, such as `HTTP`
    /// or `GET `: the peer speaks a text protocol. The rest was not read.
    #[error(
        "the peer sent {text:?} where a frame length belongs, so it speaks a text protocol such as HTTP, not the frame protocol of enclave-agent and parent-proxy"
    )]
    NotFrames { text: String },
    /// The stream ended inside a frame.
    #[error("truncated frame: expected {expected} bytes, the stream ended after {received}")]
    Truncated { expected: u64, received: u64 },
    /// The stream ended cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The body is not CBOR.
    #[error("frame body is not valid CBOR: {0}")]
    NotCbor(String),
    /// The body is CBOR but carries a protocol version this build does not speak.
    #[error("unsupported protocol version {found}; this build speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion { found: u64 },
    /// The body is CBOR of the right version but not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A `Recipient` parameter: the attestation document whose public key KMS
/// encrypts the result to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Recipient {
    pub key_encryption_algorithm: String,
    pub attestation_document: ByteBuf,
}

impl Recipient {
    /// Creates a recipient with the `RSAES_OAEP_SHA_256` algorithm.
    pub fn new(attestation_document: Vec<u8>) -> Self {
        Self {
            key_encryption_algorithm: KEY_ENCRYPTION_ALGORITHM.to_owned(),
            attestation_document: ByteBuf::from(attestation_document),
        }
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipient")
            .field("key_encryption_algorithm", &self.key_encryption_algorithm)
            .field("attestation_document_len", &self.attestation_document.len())
            .finish()
    }
}

/// KMS `DeriveSharedSecret` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretRequest {
    pub key_id: String,
    pub key_agreement_algorithm: String,
    /// The peer's public key, DER SubjectPublicKeyInfo.
    pub public_key: ByteBuf,
    #[serde(default)]
    pub grant_tokens: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub recipient: Option<Recipient>,
}

/// KMS `Decrypt` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    pub ciphertext_blob: ByteBuf,
    pub key_id: Option<String>,
    #[serde(default)]
    pub encryption_context: BTreeMap<String, String>,
    pub encryption_algorithm: Option<String>,
    #[serde(default)]
    pub grant_tokens: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub recipient: Option<Recipient>,
}

/// KMS `GenerateDataKey` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    pub key_spec: Option<String>,
    pub number_of_bytes: Option<u32>,
    #[serde(default)]
    pub encryption_context: BTreeMap<String, String>,
    #[serde(default)]
    pub grant_tokens: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub recipient: Option<Recipient>,
}

/// KMS `GenerateDataKeyPair` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairRequest {
    pub key_id: String,
    pub key_pair_spec: String,
    #[serde(default)]
    pub encryption_context: BTreeMap<String, String>,
    #[serde(default)]
    pub grant_tokens: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub recipient: Option<Recipient>,
}

/// KMS `GenerateRandom` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomRequest {
    pub number_of_bytes: u32,
    pub custom_key_store_id: Option<String>,
    pub recipient: Option<Recipient>,
}

/// One of the five KMS operations that accept a `Recipient`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    DeriveSharedSecret(DeriveSharedSecretRequest),
    Decrypt(DecryptRequest),
    GenerateDataKey(GenerateDataKeyRequest),
    GenerateDataKeyPair(GenerateDataKeyPairRequest),
    GenerateRandom(GenerateRandomRequest),
}

impl Operation {
    /// The KMS operation name, as in `X-Amz-Target: TrentService.<name>`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::DeriveSharedSecret(_) => "DeriveSharedSecret",
            Operation::Decrypt(_) => "Decrypt",
            Operation::GenerateDataKey(_) => "GenerateDataKey",
            Operation::GenerateDataKeyPair(_) => "GenerateDataKeyPair",
            Operation::GenerateRandom(_) => "GenerateRandom",
        }
    }

    /// The key id the request names, if the operation takes one.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Operation::DeriveSharedSecret(r) => Some(&r.key_id),
            Operation::Decrypt(r) => r.key_id.as_deref(),
            Operation::GenerateDataKey(r) => Some(&r.key_id),
            Operation::GenerateDataKeyPair(r) => Some(&r.key_id),
            Operation::GenerateRandom(_) => None,
        }
    }

    /// The request's `Recipient`, if any.
    pub fn recipient(&self) -> Option<&Recipient> {
        match self {
            Operation::DeriveSharedSecret(r) => r.recipient.as_ref(),
            Operation::Decrypt(r) => r.recipient.as_ref(),
            Operation::GenerateDataKey(r) => r.recipient.as_ref(),
            Operation::GenerateDataKeyPair(r) => r.recipient.as_ref(),
            Operation::GenerateRandom(r) => r.recipient.as_ref(),
        }
    }
}

/// A request frame from the enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u16,
    pub id: u64,
    pub operation: Operation,
}

impl Request {
    /// Creates a request of the current protocol version.
    pub fn new(id: u64, operation: Operation) -> Self {
        Self { version: PROTOCOL_VERSION, id, operation }
    }
}

/// A byte string that may hold a secret: its `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// KMS `DeriveSharedSecret` response fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretOutput {
    pub key_id: Option<String>,
    /// Present only when no `Recipient` was sent.
    pub shared_secret: Option<SecretBytes>,
    pub ciphertext_for_recipient: Option<ByteBuf>,
    pub key_agreement_algorithm: Option<String>,
    pub key_origin: Option<String>,
}

/// KMS `Decrypt` response fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptOutput {
    pub key_id: Option<String>,
    pub plaintext: Option<SecretBytes>,
    pub ciphertext_for_recipient: Option<ByteBuf>,
    pub encryption_algorithm: Option<String>,
}

/// KMS `GenerateDataKey` response fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyOutput {
    pub key_id: Option<String>,
    pub ciphertext_blob: Option<ByteBuf>,
    pub plaintext: Option<SecretBytes>,
    pub ciphertext_for_recipient: Option<ByteBuf>,
}

/// KMS `GenerateDataKeyPair` response fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairOutput {
    pub key_id: Option<String>,
    pub key_pair_spec: Option<String>,
    pub public_key: Option<ByteBuf>,
    pub private_key_ciphertext_blob: Option<ByteBuf>,
    pub private_key_plaintext: Option<SecretBytes>,
    pub ciphertext_for_recipient: Option<ByteBuf>,
}

/// KMS `GenerateRandom` response fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomOutput {
    pub plaintext: Option<SecretBytes>,
    pub ciphertext_for_recipient: Option<ByteBuf>,
}

/// The successful result of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    DeriveSharedSecret(DeriveSharedSecretOutput),
    Decrypt(DecryptOutput),
    GenerateDataKey(GenerateDataKeyOutput),
    GenerateDataKeyPair(GenerateDataKeyPairOutput),
    GenerateRandom(GenerateRandomOutput),
}

impl Output {
    /// The KMS operation name this output belongs to.
    pub fn name(&self) -> &'static str {
        match self {
            Output::DeriveSharedSecret(_) => "DeriveSharedSecret",
            Output::Decrypt(_) => "Decrypt",
            Output::GenerateDataKey(_) => "GenerateDataKey",
            Output::GenerateDataKeyPair(_) => "GenerateDataKeyPair",
            Output::GenerateRandom(_) => "GenerateRandom",
        }
    }
}

/// Why the parent could not return an operation's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorFrame {
    /// The parent's configuration rejects the request; `rule` names the
    /// setting (for example `allow-operation`).
    #[error("request rejected by the parent ({rule}): {message}")]
    Refused { rule: String, message: String },
    /// KMS answered with an error.
    #[error("KMS returned {name}: {message}")]
    Kms { name: String, message: String, request_id: Option<String> },
    /// The parent could not reach KMS.
    #[error("KMS is unreachable from the parent: {message}")]
    KmsUnreachable { message: String },
    /// KMS did not answer within the parent's timeout.
    #[error("KMS call timed out: {message}")]
    KmsTimeout { message: String },
    /// The parent is at a limit (connections or requests in flight).
    #[error("parent is busy: {message}")]
    Busy { message: String },
    /// The parent could not decode the request.
    #[error("parent rejected a malformed request: {message}")]
    Malformed { message: String },
    /// The parent failed for a reason of its own.
    #[error("parent internal error: {message}")]
    Internal { message: String },
}

/// A response frame from the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub version: u16,
    pub id: u64,
    pub result: Result<Output, ErrorFrame>,
}

impl Response {
    /// Creates a response of the current protocol version.
    pub fn new(id: u64, result: Result<Output, ErrorFrame>) -> Self {
        Self { version: PROTOCOL_VERSION, id, result }
    }
}

/// Encodes `message` as one frame: length prefix, then CBOR body.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = Vec::new();
    append_frame(&mut frame, message, u32::MAX)?;
    Ok(frame)
}

/// Appends `message` as one frame to `buffer`, so that several frames can
/// leave in one write. A body over `max_len` bytes is an error and leaves
/// `buffer` as it was.
pub fn append_frame<T: Serialize>(buffer: &mut Vec<u8>, message: &T, max_len: u32) -> Result<(), FrameError> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    let body_len =
        ciborium::into_writer(message, &mut *buffer).map_err(|e| FrameError::Malformed(e.to_string())).and_then(|()| {
            let declared = (buffer.len() - start - 4) as u64;
            u32::try_from(declared)
                .ok()
                .filter(|len| *len <= max_len)
                .ok_or(FrameError::TooLarge { declared, max: max_len })
        });
    match body_len {
        Ok(body_len) => {
            if let Some(prefix) = buffer.get_mut(start..start + 4) {
                prefix.copy_from_slice(&body_len.to_be_bytes());
            }
            Ok(())
        }
        Err(error) => {
            buffer.truncate(start);
            Err(error)
        }
    }
}

/// Writes `message` as one frame and flushes.
pub async fn write_frame<W, T>(writer: &mut W, message: &T, max_len: u32) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut frame = Vec::new();
    append_frame(&mut frame, message, max_len)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Returns the error for a length prefix above `max_len`: [`FrameError::NotFrames`]
/// when the four bytes are printable ASCII, because such lengths come from a
/// peer that sends text (four spaces already declare 538,976,288 bytes).
fn oversized(prefix: [u8; 4], max_len: u32) -> FrameError {
    if prefix.iter().all(|byte| byte.is_ascii_graphic() || *byte == b' ') {
        FrameError::NotFrames { text: String::from_utf8_lossy(&prefix).into_owned() }
    } else {
        FrameError::TooLarge { declared: u64::from(u32::from_be_bytes(prefix)), max: max_len }
    }
}

/// Reads one frame body of at most `max_len` bytes. The length is checked
/// before any of the body is read or allocated.
pub async fn read_frame_body<R>(reader: &mut R, max_len: u32) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while let Some(rest) = prefix.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let n = reader.read(rest).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated { expected: 4, received: filled as u64 }
            });
        }
        filled += n;
    }

    let declared = u32::from_be_bytes(prefix);
    if declared > max_len {
        return Err(oversized(prefix, max_len));
    }

    let mut body = vec![0u8; declared as usize];
    let mut received = 0;
    while let Some(rest) = body.get_mut(received..).filter(|rest| !rest.is_empty()) {
        let n = reader.read(rest).await?;
        if n == 0 {
            return Err(FrameError::Truncated { expected: u64::from(declared), received: received as u64 });
        }
        received += n;
    }
    Ok(body)
}

/// A message that carries the protocol version: [`Request`] or [`Response`].
pub trait Message: DeserializeOwned {
    /// The protocol version the message was written in.
    fn version(&self) -> u16;
}

impl Message for Request {
    fn version(&self) -> u16 {
        self.version
    }
}

impl Message for Response {
    fn version(&self) -> u16 {
        self.version
    }
}

/// Decodes a frame body: CBOR first, then the protocol version, then the
/// message type, so each failure has its own error.
pub fn decode_body<T: Message>(body: &[u8]) -> Result<T, FrameError> {
    // A well-formed body of this version decodes in one pass; anything else
    // is decoded again step by step to name what is wrong.
    if let Ok(message) = ciborium::from_reader::<T, _>(body)
        && message.version() == PROTOCOL_VERSION
    {
        return Ok(message);
    }

    let value: ciborium::Value = ciborium::from_reader(body)
        .map_err(|error| FrameError::NotCbor(crate::attestation::CborError::from_slice_error(error).to_string()))?;

    let version = value
        .as_map()
        .and_then(|entries| entries.iter().find(|(k, _)| k.as_text() == Some("version")))
        .map(|(_, v)| v)
        .ok_or_else(|| FrameError::Malformed("missing field `version`".to_owned()))?;
    let version = version
        .as_integer()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| FrameError::Malformed("field `version` is not an unsigned integer".to_owned()))?;
    if version != u64::from(PROTOCOL_VERSION) {
        return Err(FrameError::UnsupportedVersion { found: version });
    }

    value.deserialized().map_err(|error| match error {
        // ciborium's Display of this error is its Debug form.
        ciborium::value::Error::Custom(message) => FrameError::Malformed(message),
    })
}

/// Returns the `id` field of a body that is CBOR but not a valid request,
/// so that the error response can still carry the caller's id.
pub fn peek_request_id(body: &[u8]) -> Option<u64> {
    let value: ciborium::Value = ciborium::from_reader(body).ok()?;
    let (_, id) = value.as_map()?.iter().find(|(k, _)| k.as_text() == Some("id"))?;
    u64::try_from(id.as_integer()?).ok()
}

/// Reads and decodes one frame.
pub async fn read_frame<R, T>(reader: &mut R, max_len: u32) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: Message,
{
    let body = read_frame_body(reader, max_len).await?;
    decode_body(&body)
}

/// Bytes a [`FrameReader`] requests from the stream beyond the frame it is reading.
const READ_AHEAD: usize = 16 * 1024;

/// Buffer capacity a [`FrameReader`] keeps between frames; a larger buffer,
/// left by a long frame, is released once it is empty.
const KEPT_CAPACITY: usize = 64 * 1024;

/// Reader of frames from a stream with as few reads as the stream allows.
/// One read takes every byte the stream has ready, up to 16 KiB past the
/// current frame, so frames sent back to back cost one system call between
/// them. Until its first frame arrives, a reader requests only the length
/// prefix and keeps a buffer of a few bytes, so idle connections cost little
/// memory.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buffer: Vec<u8>,
    /// Start of the unread bytes in `buffer`.
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, buffer: Vec::new(), start: 0 }
    }

    /// Reads one frame body of at most `max_len` bytes. The length is
    /// checked before the body is buffered. Cancelling the future loses
    /// nothing: bytes already read stay for the next call.
    pub async fn read_body(&mut self, max_len: u32) -> Result<&[u8], FrameError> {
        if self.start == self.buffer.len() {
            self.start = 0;
            self.buffer.clear();
            if self.buffer.capacity() > KEPT_CAPACITY {
                self.buffer = Vec::new();
            }
        }
        loop {
            let unread = self.buffer.get(self.start..).unwrap_or_default();
            let missing = match unread.first_chunk::<4>() {
                None => 4 - unread.len(),
                Some(prefix) => {
                    let declared = u32::from_be_bytes(*prefix);
                    if declared > max_len {
                        return Err(oversized(*prefix, max_len));
                    }
                    let frame_len = 4 + declared as usize;
                    if unread.len() >= frame_len {
                        let body = self.start + 4..self.start + frame_len;
                        self.start += frame_len;
                        return Ok(self.buffer.get(body).unwrap_or_default());
                    }
                    frame_len - unread.len()
                }
            };

            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            // Until the first frame has arrived, only the length prefix is
            // requested, so a connection that never sends keeps a buffer of a
            // few bytes.
            let ahead = if self.buffer.capacity() == 0 { 0 } else { READ_AHEAD };
            self.buffer.reserve(missing.max(ahead.saturating_sub(self.buffer.len())));
            if self.inner.read_buf(&mut self.buffer).await? == 0 {
                return Err(self.ended());
            }
        }
    }

    /// Reads and decodes one frame.
    pub async fn read<T: Message>(&mut self, max_len: u32) -> Result<T, FrameError> {
        decode_body(self.read_body(max_len).await?)
    }

    /// Returns the error for a stream that ended with the unread bytes in the buffer.
    fn ended(&self) -> FrameError {
        let unread = self.buffer.get(self.start..).unwrap_or_default();
        match unread.first_chunk::<4>() {
            None if unread.is_empty() => FrameError::Closed,
            None => FrameError::Truncated { expected: 4, received: unread.len() as u64 },
            Some(prefix) => FrameError::Truncated {
                expected: u64::from(u32::from_be_bytes(*prefix)),
                received: (unread.len() - 4) as u64,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn recipient() -> Option<Recipient> {
        Some(Recipient::new(vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]))
    }

    fn every_operation() -> Vec<Operation> {
        let context: BTreeMap<String, String> = [("purpose".to_owned(), "test".to_owned())].into();
        vec![
            Operation::DeriveSharedSecret(DeriveSharedSecretRequest {
                key_id: "alias/agreement".to_owned(),
                key_agreement_algorithm: "ECDH".to_owned(),
                public_key: ByteBuf::from(vec![0x30, 0x59, 0x30, 0x13]),
                grant_tokens: vec!["token".to_owned()],
                dry_run: false,
                recipient: recipient(),
            }),
            Operation::Decrypt(DecryptRequest {
                ciphertext_blob: ByteBuf::from(vec![1, 2, 3]),
                key_id: None,
                encryption_context: context.clone(),
                encryption_algorithm: Some("SYMMETRIC_DEFAULT".to_owned()),
                grant_tokens: vec![],
                dry_run: true,
                recipient: recipient(),
            }),
            Operation::GenerateDataKey(GenerateDataKeyRequest {
                key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".to_owned(),
                key_spec: Some("AES_256".to_owned()),
                number_of_bytes: None,
                encryption_context: context.clone(),
                grant_tokens: vec![],
                dry_run: false,
                recipient: None,
            }),
            Operation::GenerateDataKeyPair(GenerateDataKeyPairRequest {
                key_id: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".to_owned(),
                key_pair_spec: "ECC_NIST_P256".to_owned(),
                encryption_context: context,
                grant_tokens: vec![],
                dry_run: false,
                recipient: recipient(),
            }),
            Operation::GenerateRandom(GenerateRandomRequest {
                number_of_bytes: 32,
                custom_key_store_id: None,
                recipient: recipient(),
            }),
        ]
    }

    async fn round_trip<T: Serialize + Message + PartialEq + fmt::Debug>(message: &T) -> T {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, message, DEFAULT_MAX_FRAME_LEN).await.unwrap();
        let read: T = read_frame(&mut buffer.as_slice(), DEFAULT_MAX_FRAME_LEN).await.unwrap();
        let buffered: T = FrameReader::new(buffer.as_slice()).read(DEFAULT_MAX_FRAME_LEN).await.unwrap();
        assert_eq!(read, buffered);
        read
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.step.min(self.data.len()).min(buf.remaining());
            let (head, tail) = self.data.split_at(n);
            buf.put_slice(head);
            self.data = tail;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn three_frames() -> (Vec<Request>, Vec<u8>) {
        let requests: Vec<Request> =
            every_operation().into_iter().take(3).enumerate().map(|(id, op)| Request::new(id as u64 + 1, op)).collect();
        let mut stream = Vec::new();
        for request in &requests {
            append_frame(&mut stream, request, DEFAULT_MAX_FRAME_LEN).unwrap();
        }
        (requests, stream)
    }

    #[tokio::test]
    async fn frame_reader_reads_back_to_back_frames() {
        let (requests, stream) = three_frames();
        for step in [1, 3, 7, stream.len()] {
            let mut reader = FrameReader::new(Trickle { data: &stream, step });
            for request in &requests {
                assert_eq!(&reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap(), request, "step {step}");
            }
            let end = reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
            assert!(matches!(end, FrameError::Closed), "step {step}: {end:?}");
        }
    }

    #[tokio::test]
    async fn frame_reader_names_truncation_and_oversize() {
        let (_, stream) = three_frames();
        let first_len = 4 + u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;

        // The stream ends three bytes into the second frame's body.
        let mut reader = FrameReader::new(&stream[..first_len + 7]);
        reader.read_body(DEFAULT_MAX_FRAME_LEN).await.unwrap();
        let error = reader.read_body(DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        let second_len = u64::from(u32::from_be_bytes(stream[first_len..first_len + 4].try_into().unwrap()));
        assert!(
            matches!(error, FrameError::Truncated { expected, received: 3 } if expected == second_len),
            "{error:?}"
        );

        // The stream ends inside the second frame's length prefix.
        let mut reader = FrameReader::new(&stream[..first_len + 2]);
        reader.read_body(DEFAULT_MAX_FRAME_LEN).await.unwrap();
        let error = reader.read_body(DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(error, FrameError::Truncated { expected: 4, received: 2 }), "{error:?}");

        // The second frame is over this side's limit: refused from its prefix.
        let mut reader = FrameReader::new(stream.as_slice());
        reader.read_body(DEFAULT_MAX_FRAME_LEN).await.unwrap();
        let limit = u32::try_from(second_len - 1).unwrap();
        let error = reader.read_body(limit).await.unwrap_err();
        assert!(
            matches!(error, FrameError::TooLarge { declared, max } if declared == second_len && max == limit),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn frame_reader_keeps_bytes_across_cancellation() {
        let (requests, stream) = three_frames();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(server);
        client.write_all(&stream[..10]).await.unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.read_body(DEFAULT_MAX_FRAME_LEN)).await;
        assert!(waited.is_err(), "half a frame must not make a frame");
        client.write_all(&stream[10..]).await.unwrap();
        for request in &requests {
            assert_eq!(&reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap(), request);
        }
    }

    #[tokio::test]
    async fn frame_reader_idle_holds_no_buffer() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(server);
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.read_body(DEFAULT_MAX_FRAME_LEN)).await;
        assert!(waited.is_err());
        assert!(reader.buffer.capacity() <= 8, "{}", reader.buffer.capacity());

        let (requests, stream) = three_frames();
        client.write_all(&stream).await.unwrap();
        assert_eq!(reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap(), requests[0]);
        assert!(reader.buffer.capacity() >= READ_AHEAD, "{}", reader.buffer.capacity());
    }

    #[tokio::test]
    async fn frame_reader_releases_long_buffer() {
        let long = Request::new(
            5,
            Operation::GenerateRandom(GenerateRandomRequest {
                number_of_bytes: 1024,
                custom_key_store_id: None,
                recipient: Some(Recipient::new(vec![7; 200_000])),
            }),
        );
        let short = Request::new(6, every_operation().remove(4));
        let mut stream = Vec::new();
        append_frame(&mut stream, &long, DEFAULT_MAX_FRAME_LEN).unwrap();
        append_frame(&mut stream, &short, DEFAULT_MAX_FRAME_LEN).unwrap();
        let mut reader = FrameReader::new(Trickle { data: &stream, step: 4096 });
        assert_eq!(reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap(), long);
        assert!(reader.buffer.capacity() > KEPT_CAPACITY);
        assert_eq!(reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap(), short);
        let end = reader.read::<Request>(DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(end, FrameError::Closed), "{end:?}");
        assert!(reader.buffer.capacity() <= KEPT_CAPACITY, "{}", reader.buffer.capacity());
    }

    #[tokio::test]
    async fn text_prefix_named_not_frames() {
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        let error = read_frame_body(&mut http.as_slice(), DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(&error, FrameError::NotFrames { text } if text == "HTTP"), "{error:?}");
        assert!(error.to_string().starts_with("the peer sent \"HTTP\" where a frame length belongs"), "{error}");

        let get = b"GET / HTTP/1.1\r\n\r\n";
        let error = FrameReader::new(get.as_slice()).read_body(DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(&error, FrameError::NotFrames { text } if text == "GET "), "{error:?}");

        // A binary prefix over the limit is still an oversized frame.
        let binary = [0x16, 0x03, 0x01, 0x02];
        let error = read_frame_body(&mut binary.as_slice(), DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { declared: 0x1603_0102, .. }), "{error:?}");
    }

    #[test]
    fn append_frame_leaves_the_buffer_on_error() {
        let mut buffer = vec![1, 2, 3];
        let request = Request::new(1, every_operation().remove(0));
        let error = append_frame(&mut buffer, &request, 8).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { max: 8, .. }), "{error:?}");
        assert_eq!(buffer, [1, 2, 3]);
        append_frame(&mut buffer, &request, DEFAULT_MAX_FRAME_LEN).unwrap();
        assert_eq!(&buffer[3..], encode_frame(&request).unwrap());
    }

    #[tokio::test]
    async fn request_round_trip_every_operation() {
        for (id, operation) in every_operation().into_iter().enumerate() {
            let request = Request::new(id as u64, operation);
            assert_eq!(round_trip(&request).await, request, "{}", request.operation.name());
        }
    }

    #[tokio::test]
    async fn response_round_trip_every_output_and_error() {
        let outputs = vec![
            Ok(Output::DeriveSharedSecret(DeriveSharedSecretOutput {
                key_id: Some("arn:aws:kms:us-east-1:111122223333:key/k".to_owned()),
                shared_secret: None,
                ciphertext_for_recipient: Some(ByteBuf::from(vec![0x30, 0x80])),
                key_agreement_algorithm: Some("ECDH".to_owned()),
                key_origin: Some("AWS_KMS".to_owned()),
            })),
            Ok(Output::Decrypt(DecryptOutput {
                key_id: None,
                plaintext: Some(SecretBytes(vec![7; 3])),
                ciphertext_for_recipient: None,
                encryption_algorithm: Some("SYMMETRIC_DEFAULT".to_owned()),
            })),
            Ok(Output::GenerateDataKey(GenerateDataKeyOutput {
                key_id: None,
                ciphertext_blob: Some(ByteBuf::from(vec![1])),
                plaintext: None,
                ciphertext_for_recipient: Some(ByteBuf::from(vec![2])),
            })),
            Ok(Output::GenerateDataKeyPair(GenerateDataKeyPairOutput {
                key_id: None,
                key_pair_spec: Some("RSA_2048".to_owned()),
                public_key: Some(ByteBuf::from(vec![3])),
                private_key_ciphertext_blob: Some(ByteBuf::from(vec![4])),
                private_key_plaintext: None,
                ciphertext_for_recipient: Some(ByteBuf::from(vec![5])),
            })),
            Ok(Output::GenerateRandom(GenerateRandomOutput {
                plaintext: None,
                ciphertext_for_recipient: Some(ByteBuf::from(vec![6])),
            })),
            Err(ErrorFrame::Refused { rule: "allow-operation".to_owned(), message: "Decrypt".to_owned() }),
            Err(ErrorFrame::Kms {
                name: "AccessDeniedException".to_owned(),
                message: "denied".to_owned(),
                request_id: Some("r-1".to_owned()),
            }),
            Err(ErrorFrame::KmsUnreachable { message: "connection refused".to_owned() }),
            Err(ErrorFrame::KmsTimeout { message: "after 10s".to_owned() }),
            Err(ErrorFrame::Busy { message: "64 requests in flight".to_owned() }),
            Err(ErrorFrame::Malformed { message: "not CBOR".to_owned() }),
            Err(ErrorFrame::Internal { message: "bug".to_owned() }),
        ];
        for (id, result) in outputs.into_iter().enumerate() {
            let response = Response::new(id as u64, result);
            assert_eq!(round_trip(&response).await, response);
        }
    }

    #[tokio::test]
    async fn oversized_frame_rejected_before_body_read() {
        // The reader holds only the length prefix: reading any body byte
        // would give `Truncated`, so `TooLarge` proves the body was not read.
        let prefix = (DEFAULT_MAX_FRAME_LEN + 1).to_be_bytes();
        let error = read_frame_body(&mut prefix.as_slice(), DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        match error {
            FrameError::TooLarge { declared, max } => {
                assert_eq!(declared, u64::from(DEFAULT_MAX_FRAME_LEN) + 1);
                assert_eq!(max, DEFAULT_MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_frame_not_written() {
        let request = Request::new(1, every_operation().remove(0));
        let mut buffer = Vec::new();
        let error = write_frame(&mut buffer, &request, 8).await.unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { max: 8, .. }), "{error:?}");
        assert!(buffer.is_empty());
    }

    #[tokio::test]
    async fn truncated_body_is_typed_error() {
        let request = Request::new(9, every_operation().remove(4));
        let frame = encode_frame(&request).unwrap();
        let cut = &frame[..frame.len() - 3];
        let error = read_frame::<_, Request>(&mut &cut[..], DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        match error {
            FrameError::Truncated { expected, received } => {
                assert_eq!(expected, (frame.len() - 4) as u64);
                assert_eq!(received, (frame.len() - 7) as u64);
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_prefix_is_typed_error() {
        let error = read_frame_body(&mut [0u8, 0].as_slice(), DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(error, FrameError::Truncated { expected: 4, received: 2 }), "{error:?}");
    }

    #[tokio::test]
    async fn empty_stream_is_closed() {
        let error = read_frame_body(&mut [0u8; 0].as_slice(), DEFAULT_MAX_FRAME_LEN).await.unwrap_err();
        assert!(matches!(error, FrameError::Closed), "{error:?}");
    }

    #[test]
    fn unknown_version_is_typed_error() {
        let mut request = Request::new(3, every_operation().remove(4));
        request.version = 7;
        let frame = encode_frame(&request).unwrap();
        let error = decode_body::<Request>(&frame[4..]).unwrap_err();
        assert!(matches!(error, FrameError::UnsupportedVersion { found: 7 }), "{error:?}");
    }

    #[test]
    fn body_not_cbor_is_typed_error() {
        // 0xff is a CBOR "break" with nothing open, which no decoder accepts.
        let error = decode_body::<Request>(&[0xff, 0x00, 0x01]).unwrap_err();
        assert!(matches!(error, FrameError::NotCbor(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "frame body is not valid CBOR: invalid CBOR item: invalid type: break, expected non-break"
        );

        // 0x1c is a reserved initial byte, a syntax error.
        let error = decode_body::<Request>(&[0x1c]).unwrap_err();
        assert_eq!(error.to_string(), "frame body is not valid CBOR: invalid CBOR at byte offset 0");

        // A body cut inside an item.
        let frame = encode_frame(&Request::new(3, every_operation().remove(4))).unwrap();
        let error = decode_body::<Request>(&frame[4..frame.len() - 1]).unwrap_err();
        assert_eq!(error.to_string(), "frame body is not valid CBOR: the bytes end inside a CBOR item");
    }

    #[test]
    fn wrong_shape_is_malformed() {
        let mut body = Vec::new();
        let value = ciborium::Value::Map(vec![
            (ciborium::Value::Text("version".into()), ciborium::Value::Integer(1.into())),
            (ciborium::Value::Text("id".into()), ciborium::Value::Text("not a number".into())),
        ]);
        ciborium::into_writer(&value, &mut body).unwrap();
        let error = decode_body::<Request>(&body).unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error:?}");
        // serde's message, not ciborium's Debug form of it.
        let message = error.to_string();
        assert!(message.starts_with("malformed frame: invalid type: string \"not a number\""), "{message}");
        assert!(!message.contains("Custom("), "{message}");
    }

    #[test]
    fn peek_request_id_of_malformed_body() {
        let mut body = Vec::new();
        let value = ciborium::Value::Map(vec![
            (ciborium::Value::Text("version".into()), ciborium::Value::Integer(1.into())),
            (ciborium::Value::Text("id".into()), ciborium::Value::Integer(42.into())),
        ]);
        ciborium::into_writer(&value, &mut body).unwrap();
        assert!(decode_body::<Request>(&body).is_err());
        assert_eq!(peek_request_id(&body), Some(42));
        assert_eq!(peek_request_id(&[0xff]), None);
    }

    #[test]
    fn recipient_debug_hides_document() {
        let text = format!("{:?}", Recipient::new(vec![0xAB; 40]));
        assert!(text.contains("attestation_document_len: 40"), "{text}");
        assert!(!text.contains("171"), "{text}");
    }

    #[test]
    fn secret_bytes_debug_hides_content() {
        assert_eq!(format!("{:?}", SecretBytes(vec![0x42; 5])), "SecretBytes(5 bytes)");
    }
}
