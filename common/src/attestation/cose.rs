//! The COSE_Sign1 envelope (RFC 9052 §4.2) of an attestation document.
//!
//! ```text
//! COSE_Sign1 = [
//!     protected : bstr .cbor header_map,   ; {1: -35} (alg ES384) on NSM output
//!     unprotected : header_map,            ; {} on NSM output
//!     payload : bstr / nil,                ; the attestation payload, never nil here
//!     signature : bstr                     ; raw r||s, 96 bytes for ES384
//! ]
//! ```
//!
//! The NSM writes the structure untagged; tag 18 is accepted too. The
//! signature covers the Sig_structure `["Signature1", protected, h'', payload]`
//! (RFC 9052 §4.4).

use ciborium::value::Value;

use super::error::AttestationError;

/// COSE algorithm identifier of ES384 (ECDSA P-384 with SHA-384).
pub(crate) const ALG_ES384: i128 = -35;
/// CBOR tag of COSE_Sign1.
pub(crate) const TAG_COSE_SIGN1: u64 = 18;
/// The protected header NSM documents carry: `{1: -35}`.
pub(crate) const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// Length of a raw ES384 signature (r‖s, 48 bytes each).
pub(crate) const ES384_SIGNATURE_LEN: usize = 96;

/// The decoded items of a COSE_Sign1 structure.
#[derive(Debug, Clone)]
pub(crate) struct CoseSign1 {
    pub protected: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Names a CBOR value's type for error messages.
pub(crate) fn type_name(value: &Value) -> String {
    match value {
        Value::Integer(i) => format!("integer {}", i128::from(*i)),
        Value::Bytes(b) => format!("byte string of {} bytes", b.len()),
        Value::Float(_) => "float".to_owned(),
        Value::Text(t) => format!("text of {} bytes", t.len()),
        Value::Bool(b) => format!("bool {b}"),
        Value::Null => "null".to_owned(),
        Value::Tag(tag, _) => format!("tag {tag}"),
        Value::Array(a) => format!("array of {} items", a.len()),
        Value::Map(m) => format!("map of {} entries", m.len()),
        _ => "an unsupported CBOR item".to_owned(),
    }
}

/// A failure to decode bytes as exactly one CBOR item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CborError {
    /// There are no bytes at all.
    Empty,
    /// The bytes end inside an item.
    Truncated,
    /// The byte at `offset` cannot start or continue a CBOR item.
    Syntax { offset: usize },
    /// An item is well-formed but not an acceptable value, such as text that is not UTF-8.
    Semantic { offset: Option<usize>, reason: String },
    /// Arrays, maps or tags are nested deeper than the decoder's recursion limit.
    TooDeep,
    /// Bytes follow the item.
    Trailing { count: usize },
}

impl CborError {
    /// Converts an error of ciborium reading from a byte slice.
    pub(crate) fn from_slice_error<T>(error: ciborium::de::Error<T>) -> Self {
        match error {
            // `Read` for a byte slice fails only with UnexpectedEof, when the slice ends.
            ciborium::de::Error::Io(_) => CborError::Truncated,
            ciborium::de::Error::Syntax(offset) => CborError::Syntax { offset },
            ciborium::de::Error::Semantic(offset, reason) => CborError::Semantic { offset, reason },
            ciborium::de::Error::RecursionLimitExceeded => CborError::TooDeep,
        }
    }
}

impl std::fmt::Display for CborError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CborError::Empty => f.write_str("there are no bytes"),
            CborError::Truncated => f.write_str("the bytes end inside a CBOR item"),
            CborError::Syntax { offset } => write!(f, "invalid CBOR at byte offset {offset}"),
            CborError::Semantic { offset: Some(offset), reason } => {
                write!(f, "invalid CBOR item at byte offset {offset}: {reason}")
            }
            CborError::Semantic { offset: None, reason } => write!(f, "invalid CBOR item: {reason}"),
            CborError::TooDeep => f.write_str("CBOR items are nested too deeply"),
            CborError::Trailing { count } => write!(f, "{count} bytes follow the CBOR item"),
        }
    }
}

/// Decodes the first CBOR item of `bytes` and returns it with the number of
/// bytes that follow it.
fn decode_first(bytes: &[u8]) -> Result<(Value, usize), CborError> {
    if bytes.is_empty() {
        return Err(CborError::Empty);
    }
    let mut reader = bytes;
    let value = ciborium::de::from_reader(&mut reader).map_err(CborError::from_slice_error)?;
    Ok((value, reader.len()))
}

/// Decodes exactly one CBOR item from `bytes`; trailing bytes are an error.
pub(crate) fn decode_single(bytes: &[u8]) -> Result<Value, CborError> {
    match decode_first(bytes)? {
        (value, 0) => Ok(value),
        (_, count) => Err(CborError::Trailing { count }),
    }
}

/// Maps a failure to decode the whole document to the error that explains it best.
///
/// A COSE_Sign1 as the NSM writes it starts with 0x84 (an array of 4 items),
/// or with 0xd2 (tag 18) when tagged. Bytes that start otherwise and do not
/// decode are reported as not being a COSE_Sign1 at all, because their CBOR
/// details (a syntax error offset, or an item cut short) mean nothing to a
/// user who passed the wrong file.
fn envelope_error(bytes: &[u8], error: CborError) -> AttestationError {
    let Some(&first) = bytes.first() else {
        return AttestationError::Empty;
    };
    if !matches!(first, 0x84 | 0xd2) {
        return AttestationError::NotCoseSign1 {
            found: format!("bytes starting with 0x{first:02x} that are not valid CBOR ({error})"),
        };
    }
    match error {
        CborError::Truncated => AttestationError::Truncated { length: bytes.len() },
        other => AttestationError::Cbor { reason: other.to_string() },
    }
}

impl CoseSign1 {
    /// Decodes a COSE_Sign1 structure, tagged (18) or untagged, and checks the
    /// algorithm and the signature length.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, AttestationError> {
        let (value, trailing) = decode_first(bytes).map_err(|error| envelope_error(bytes, error))?;

        // The item's type is checked before any trailing bytes, so that a file
        // that happens to start with a small CBOR item is reported as not being
        // a COSE_Sign1 rather than as a document followed by extra bytes.
        let value = match value {
            Value::Tag(TAG_COSE_SIGN1, inner) => *inner,
            Value::Tag(tag, _) => return Err(AttestationError::UnexpectedTag { tag }),
            other => other,
        };
        let items = match value {
            Value::Array(items) if items.len() == 4 => items,
            other => return Err(AttestationError::NotCoseSign1 { found: type_name(&other) }),
        };
        if trailing != 0 {
            return Err(AttestationError::TrailingBytes { count: trailing });
        }
        let mut items = items.into_iter();
        let (Some(protected), Some(unprotected), Some(payload), Some(signature)) =
            (items.next(), items.next(), items.next(), items.next())
        else {
            return Err(AttestationError::NotCoseSign1 { found: "fewer than 4 items".to_owned() });
        };

        let protected = match protected {
            Value::Bytes(bytes) => bytes,
            other => {
                return Err(AttestationError::CoseItemType {
                    field: "protected header",
                    expected: "byte string",
                    found: type_name(&other),
                });
            }
        };
        if !matches!(unprotected, Value::Map(_)) {
            return Err(AttestationError::CoseItemType {
                field: "unprotected header",
                expected: "map",
                found: type_name(&unprotected),
            });
        }
        let payload = match payload {
            Value::Bytes(bytes) => bytes,
            Value::Null => return Err(AttestationError::NilPayload),
            other => {
                return Err(AttestationError::CoseItemType {
                    field: "payload",
                    expected: "byte string",
                    found: type_name(&other),
                });
            }
        };
        let signature = match signature {
            Value::Bytes(bytes) => bytes,
            other => {
                return Err(AttestationError::CoseItemType {
                    field: "signature",
                    expected: "byte string",
                    found: type_name(&other),
                });
            }
        };

        check_protected_header(&protected)?;
        if signature.len() != ES384_SIGNATURE_LEN {
            return Err(AttestationError::SignatureLength { found: signature.len() });
        }
        Ok(Self { protected, payload, signature })
    }

    /// Encodes the structure untagged, with an empty unprotected header.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.signature.len() + 32);
        out.push(0x84);
        write_bstr(&mut out, &self.protected);
        out.push(0xa0);
        write_bstr(&mut out, &self.payload);
        write_bstr(&mut out, &self.signature);
        out
    }
}

/// Checks that the protected header is the map `{1: -35}`; other labels are rejected.
fn check_protected_header(protected: &[u8]) -> Result<(), AttestationError> {
    if protected == PROTECTED_ES384 {
        return Ok(());
    }

    let header = match decode_single(protected) {
        Ok(Value::Map(entries)) => entries,
        Ok(other) => {
            return Err(AttestationError::ProtectedHeader {
                reason: format!("expected a map, found {}", type_name(&other)),
            });
        }
        Err(e) => return Err(AttestationError::ProtectedHeader { reason: e.to_string() }),
    };
    let mut algorithm = None;
    for (label, value) in header {
        match label {
            Value::Integer(label) if i128::from(label) == 1 => {
                if algorithm.is_some() {
                    return Err(AttestationError::ProtectedHeader { reason: "label 1 (alg) appears twice".to_owned() });
                }
                algorithm = Some(value);
            }
            other => {
                return Err(AttestationError::ProtectedHeader {
                    reason: format!("unexpected label {}; only 1 (alg) is allowed", type_name(&other)),
                });
            }
        }
    }
    match algorithm {
        Some(Value::Integer(alg)) if i128::from(alg) == ALG_ES384 => Ok(()),
        Some(other) => Err(AttestationError::UnsupportedAlgorithm { found: type_name(&other) }),
        None => Err(AttestationError::ProtectedHeader { reason: "label 1 (alg) is missing".to_owned() }),
    }
}

/// Appends a CBOR byte-string header for `len` bytes.
fn write_bstr_header(out: &mut Vec<u8>, len: usize) {
    const MAJOR_BYTES: u8 = 0x40;
    let len = len as u64;
    if len < 24 {
        out.push(MAJOR_BYTES | len as u8);
    } else if len <= u64::from(u8::MAX) {
        out.push(MAJOR_BYTES | 24);
        out.push(len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(MAJOR_BYTES | 25);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else if len <= u64::from(u32::MAX) {
        out.push(MAJOR_BYTES | 26);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(MAJOR_BYTES | 27);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn write_bstr(out: &mut Vec<u8>, bytes: &[u8]) {
    write_bstr_header(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Encodes the Sig_structure `["Signature1", protected, h'', payload]`, the
/// bytes an ES384 COSE_Sign1 signature covers.
pub(crate) fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + protected.len() + 24);
    out.push(0x84);
    out.push(0x6a);
    out.extend_from_slice(b"Signature1");
    write_bstr(&mut out, protected);
    out.push(0x40);
    write_bstr(&mut out, payload);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn bstr_header_matches_ciborium() {
        for len in [0usize, 23, 24, 255, 256, 65535, 65536] {
            let bytes = vec![7u8; len];
            let mut ours = Vec::new();
            write_bstr(&mut ours, &bytes);
            assert_eq!(ours, encode(&Value::Bytes(bytes)), "length {len}");
        }
    }

    #[test]
    fn sig_structure_matches_ciborium() {
        let payload = vec![1u8; 300];
        let expected = encode(&Value::Array(vec![
            Value::Text("Signature1".to_owned()),
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Bytes(Vec::new()),
            Value::Bytes(payload.clone()),
        ]));
        assert_eq!(sig_structure(&PROTECTED_ES384, &payload), expected);
    }

    #[test]
    fn protected_header_other_algorithm_rejected() {
        // {1: -7} is ES256.
        let err = check_protected_header(&[0xa1, 0x01, 0x26]).unwrap_err();
        assert!(matches!(err, AttestationError::UnsupportedAlgorithm { ref found } if found == "integer -7"), "{err}");
    }

    #[test]
    fn protected_header_extra_label_rejected() {
        // {1: -35, 4: h'00'}
        let err = check_protected_header(&[0xa2, 0x01, 0x38, 0x22, 0x04, 0x41, 0x00]).unwrap_err();
        assert!(matches!(err, AttestationError::ProtectedHeader { .. }), "{err}");
    }

    #[test]
    fn protected_header_equivalent_encoding_accepted() {
        // {1: -35} with the integer in a two-byte form is the same header.
        check_protected_header(&[0xa1, 0x01, 0x39, 0x00, 0x22]).unwrap();
    }
}
