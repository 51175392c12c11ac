//! The attestation payload: a CBOR map with nine text keys.
//!
//! ```text
//! AttestationDocument = {
//!     module_id:   text,                 ; non-empty, i-<instance>-enc<enclave>
//!     digest:      "SHA384",
//!     timestamp:   uint,                 ; milliseconds since the Unix epoch
//!     pcrs:        { + uint => bstr },   ; 1 to 32 entries, index 0-31, 32/48/64 bytes
//!     certificate: bstr,                 ; DER leaf, 1-1024 bytes
//!     cabundle:    [ + bstr ],           ; DER, root first, each 1-1024 bytes
//!     public_key:  bstr / nil,           ; at most 1024 bytes
//!     user_data:   bstr / nil,           ; at most 1024 bytes
//!     nonce:       bstr / nil,           ; at most 1024 bytes
//! }
//! ```
//!
//! The bounds are those of the AWS Nitro Enclaves attestation process
//! documentation. The map may be definite or indefinite length.

use std::collections::BTreeMap;

use ciborium::value::Value;

use super::AttestationDocument;
use super::cose::{decode_single, type_name};
use super::error::{AttestationError, CertificatePosition};

/// The only digest NSM documents use.
pub const DIGEST_SHA384: &str = "SHA384";
/// The maximum length of `public_key`, `user_data` and `nonce`.
pub const MAX_USER_FIELD_LEN: usize = 1024;
/// The maximum length of one certificate in `certificate` or `cabundle`.
pub const MAX_CERTIFICATE_LEN: usize = 1024;
/// The maximum number of PCRs in a document, and one more than the maximum index.
pub const MAX_PCRS: usize = 32;

const FIELDS: [&str; 9] =
    ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"];

fn field_type(field: &str, expected: &'static str, found: &Value) -> AttestationError {
    AttestationError::FieldType { field: field.to_owned(), expected, found: type_name(found) }
}

fn take_bytes(field: &str, value: Value) -> Result<Vec<u8>, AttestationError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        other => Err(field_type(field, "byte string", &other)),
    }
}

fn take_optional_bytes(field: &'static str, value: Value) -> Result<Option<Vec<u8>>, AttestationError> {
    let bytes = match value {
        Value::Null => return Ok(None),
        Value::Bytes(bytes) => bytes,
        other => return Err(field_type(field, "byte string or null", &other)),
    };
    if bytes.len() > MAX_USER_FIELD_LEN {
        return Err(AttestationError::FieldTooLong { field, length: bytes.len(), max: MAX_USER_FIELD_LEN });
    }
    Ok(Some(bytes))
}

fn check_certificate_length(position: CertificatePosition, der: &[u8]) -> Result<(), AttestationError> {
    if der.is_empty() || der.len() > MAX_CERTIFICATE_LEN {
        return Err(AttestationError::CertificateLength { position, length: der.len() });
    }
    Ok(())
}

fn take_pcrs(value: Value) -> Result<BTreeMap<u32, Vec<u8>>, AttestationError> {
    let entries = match value {
        Value::Map(entries) => entries,
        other => return Err(field_type("pcrs", "map of integer to byte string", &other)),
    };
    if entries.is_empty() || entries.len() > MAX_PCRS {
        return Err(AttestationError::PcrCount { count: entries.len() });
    }

    let mut pcrs = BTreeMap::new();
    for (key, value) in entries {
        let index = match key {
            Value::Integer(index) => i128::from(index),
            other => return Err(field_type("pcrs key", "unsigned integer", &other)),
        };
        if index < 0 {
            return Err(AttestationError::FieldType {
                field: "pcrs key".to_owned(),
                expected: "unsigned integer",
                found: format!("integer {index}"),
            });
        }
        let index = match u32::try_from(index) {
            Ok(index) if (index as usize) < MAX_PCRS => index,
            _ => return Err(AttestationError::PcrIndex { index: u64::try_from(index).unwrap_or(u64::MAX) }),
        };
        let bytes = take_bytes(&format!("pcrs[{index}]"), value)?;
        if ![32, 48, 64].contains(&bytes.len()) {
            return Err(AttestationError::PcrLength { index, length: bytes.len() });
        }
        if pcrs.insert(index, bytes).is_some() {
            return Err(AttestationError::DuplicatePcr { index });
        }
    }
    Ok(pcrs)
}

/// Parses the payload map into a document and checks every field bound.
pub(crate) fn parse_payload(payload: &[u8]) -> Result<AttestationDocument, AttestationError> {
    let entries = match decode_single(payload) {
        Ok(Value::Map(entries)) => entries,
        Ok(other) => {
            return Err(AttestationError::Payload { reason: format!("expected a map, found {}", type_name(&other)) });
        }
        Err(e) => return Err(AttestationError::Payload { reason: e.to_string() }),
    };

    let mut values: [Option<Value>; 9] = Default::default();
    for (key, value) in entries {
        let key = match key {
            Value::Text(key) => key,
            other => return Err(field_type("payload key", "text", &other)),
        };
        let Some(slot) = FIELDS.iter().position(|field| *field == key).and_then(|i| values.get_mut(i)) else {
            return Err(AttestationError::UnknownField { field: key });
        };
        if slot.is_some() {
            return Err(AttestationError::DuplicateField { field: key });
        }
        *slot = Some(value);
    }
    let [module_id, digest, timestamp, pcrs, certificate, cabundle, public_key, user_data, nonce] = values;
    let required = |value: Option<Value>, field: &'static str| value.ok_or(AttestationError::MissingField { field });

    let module_id = match required(module_id, "module_id")? {
        Value::Text(text) if text.is_empty() => return Err(AttestationError::EmptyModuleId),
        Value::Text(text) => text,
        other => return Err(field_type("module_id", "text", &other)),
    };
    let digest = match required(digest, "digest")? {
        Value::Text(text) if text == DIGEST_SHA384 => text,
        Value::Text(text) => return Err(AttestationError::UnsupportedDigest { found: text }),
        other => return Err(field_type("digest", "text", &other)),
    };
    let timestamp = match required(timestamp, "timestamp")? {
        Value::Integer(int) => match u64::try_from(i128::from(int)) {
            Ok(0) => return Err(AttestationError::ZeroTimestamp),
            Ok(millis) => millis,
            Err(_) => return Err(field_type("timestamp", "unsigned integer", &Value::Integer(int))),
        },
        other => return Err(field_type("timestamp", "unsigned integer", &other)),
    };
    let pcrs = take_pcrs(required(pcrs, "pcrs")?)?;
    let certificate = take_bytes("certificate", required(certificate, "certificate")?)?;
    check_certificate_length(CertificatePosition::Leaf, &certificate)?;
    let cabundle = match required(cabundle, "cabundle")? {
        Value::Array(items) => items,
        other => return Err(field_type("cabundle", "array of byte strings", &other)),
    };
    if cabundle.is_empty() {
        return Err(AttestationError::EmptyCabundle);
    }
    let cabundle = cabundle
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let der = take_bytes(&format!("cabundle[{index}]"), item)?;
            check_certificate_length(CertificatePosition::Bundle(index), &der)?;
            Ok(der)
        })
        .collect::<Result<Vec<_>, AttestationError>>()?;
    let public_key = take_optional_bytes("public_key", required(public_key, "public_key")?)?;
    let user_data = take_optional_bytes("user_data", required(user_data, "user_data")?)?;
    let nonce = take_optional_bytes("nonce", required(nonce, "nonce")?)?;

    Ok(AttestationDocument { module_id, digest, timestamp, pcrs, certificate, cabundle, public_key, user_data, nonce })
}

fn optional_bytes(value: &Option<Vec<u8>>) -> Value {
    match value {
        Some(bytes) => Value::Bytes(bytes.clone()),
        None => Value::Null,
    }
}

/// Encodes the payload as a definite-length map with the keys in the order
/// the NSM writes them.
pub(crate) fn encode_payload(document: &AttestationDocument) -> Result<Vec<u8>, AttestationError> {
    let pcrs = document
        .pcrs
        .iter()
        .map(|(index, value)| (Value::Integer((*index).into()), Value::Bytes(value.clone())))
        .collect();
    let cabundle = document.cabundle.iter().map(|der| Value::Bytes(der.clone())).collect();
    let entries = vec![
        (Value::Text("module_id".into()), Value::Text(document.module_id.clone())),
        (Value::Text("digest".into()), Value::Text(document.digest.clone())),
        (Value::Text("timestamp".into()), Value::Integer(document.timestamp.into())),
        (Value::Text("pcrs".into()), Value::Map(pcrs)),
        (Value::Text("certificate".into()), Value::Bytes(document.certificate.clone())),
        (Value::Text("cabundle".into()), Value::Array(cabundle)),
        (Value::Text("public_key".into()), optional_bytes(&document.public_key)),
        (Value::Text("user_data".into()), optional_bytes(&document.user_data)),
        (Value::Text("nonce".into()), optional_bytes(&document.nonce)),
    ];

    let mut out = Vec::new();
    ciborium::ser::into_writer(&Value::Map(entries), &mut out)
        .map_err(|e| AttestationError::Signing { reason: format!("encoding the payload failed: {e}") })?;
    Ok(out)
}
