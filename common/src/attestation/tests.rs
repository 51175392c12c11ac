//! Parser tests: every malformed envelope or payload field gets its own error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use ciborium::value::Value;

use super::*;

fn document() -> AttestationDocument {
    AttestationDocument {
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".to_owned(),
        digest: "SHA384".to_owned(),
        timestamp: 1_700_000_000_000,
        pcrs: (0..16).map(|index| (index, vec![index as u8; 48])).collect(),
        certificate: vec![0x30; 500],
        cabundle: vec![vec![0x30; 400], vec![0x31; 600]],
        public_key: Some(vec![1; 294]),
        user_data: None,
        nonce: Some(Vec::new()),
    }
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

fn key() -> EcdsaKeyPair {
    EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap()
}

/// The payload of [`document`] as a map, to mutate before encoding.
fn payload_entries() -> Vec<(Value, Value)> {
    let bytes = payload::encode_payload(&document()).unwrap();
    match ciborium::de::from_reader::<Value, _>(bytes.as_slice()).unwrap() {
        Value::Map(entries) => entries,
        other => panic!("payload is {other:?}"),
    }
}

/// A COSE_Sign1 around `payload` with the NSM's headers and a 96-byte signature.
fn envelope(payload: Vec<u8>) -> Vec<u8> {
    cose::CoseSign1 { protected: cose::PROTECTED_ES384.to_vec(), payload, signature: vec![0; 96] }.encode()
}

fn with_field(field: &str, value: Option<Value>) -> Vec<u8> {
    let mut entries = payload_entries();
    let position = entries.iter().position(|(key, _)| key.as_text() == Some(field)).unwrap();
    match value {
        Some(value) => entries[position].1 = value,
        None => {
            entries.remove(position);
        }
    }
    envelope(encode(&Value::Map(entries)))
}

fn items(document: &[u8]) -> Vec<Value> {
    match ciborium::de::from_reader::<Value, _>(document).unwrap() {
        Value::Array(items) => items,
        other => panic!("document is {other:?}"),
    }
}

#[test]
fn sign_then_parse_round_trips() {
    let signed = sign(&document(), &key()).unwrap();
    assert_eq!(parse(&signed).unwrap(), document());
}

#[test]
fn sign_uses_nsm_layout() {
    let signed = sign(&document(), &key()).unwrap();
    assert_eq!(&signed[..7], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0]);
    let items = items(&signed);
    assert_eq!(items[3].as_bytes().unwrap().len(), 96);
    let payload = items[2].as_bytes().unwrap();
    assert_eq!(payload[0], 0xa9);
}

#[test]
fn sign_rejects_asn1_signing_key() {
    let key = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
    let err = sign(&document(), &key).unwrap_err();
    assert!(matches!(err, AttestationError::Signing { ref reason } if reason.contains("FIXED")), "{err}");
}

#[test]
fn tag_18_parses_like_untagged() {
    let untagged = sign(&document(), &key()).unwrap();
    let tagged = [&[0xd2][..], &untagged].concat();
    assert_eq!(parse(&tagged).unwrap(), parse(&untagged).unwrap());
}

#[test]
fn other_tags_rejected() {
    let untagged = sign(&document(), &key()).unwrap();
    for (prefix, tag) in [(&[0xd1][..], 17), (&[0xd8, 0x62][..], 98), (&[0xc0][..], 0)] {
        let err = parse(&[prefix, &untagged].concat()).unwrap_err();
        assert!(matches!(err, AttestationError::UnexpectedTag { tag: found } if found == tag), "{err}");
    }
}

#[test]
fn indefinite_length_payload_parses() {
    let entries = payload_entries();
    let mut payload = vec![0xbf];
    for (key, value) in &entries {
        payload.extend(encode(key));
        payload.extend(encode(value));
    }
    payload.push(0xff);
    assert_eq!(parse(&envelope(payload)).unwrap(), document());
}

#[test]
fn nil_payload_rejected() {
    let signed = sign(&document(), &key()).unwrap();
    let mut items = items(&signed);
    items[2] = Value::Null;
    let err = parse(&encode(&Value::Array(items))).unwrap_err();
    assert!(matches!(err, AttestationError::NilPayload), "{err}");
}

#[test]
fn wrong_envelope_shapes_rejected() {
    let err = parse(&encode(&Value::Map(Vec::new()))).unwrap_err();
    assert!(matches!(err, AttestationError::NotCoseSign1 { ref found } if found == "map of 0 entries"), "{err}");

    let mut three = items(&sign(&document(), &key()).unwrap());
    three.pop();
    let err = parse(&encode(&Value::Array(three))).unwrap_err();
    assert!(matches!(err, AttestationError::NotCoseSign1 { ref found } if found == "array of 3 items"), "{err}");

    let mut items = items(&sign(&document(), &key()).unwrap());
    items[1] = Value::Bytes(Vec::new());
    let err = parse(&encode(&Value::Array(items))).unwrap_err();
    assert!(matches!(err, AttestationError::CoseItemType { field: "unprotected header", .. }), "{err}");
}

#[test]
fn other_algorithm_rejected() {
    let mut items = items(&sign(&document(), &key()).unwrap());
    items[0] = Value::Bytes(vec![0xa1, 0x01, 0x26]); // {1: -7}, ES256
    let err = parse(&encode(&Value::Array(items))).unwrap_err();
    assert!(matches!(err, AttestationError::UnsupportedAlgorithm { .. }), "{err}");
    assert!(err.to_string().contains("-7"), "{err}");
}

#[test]
fn signature_length_checked() {
    for length in [0, 95, 97, 104] {
        let mut items = items(&sign(&document(), &key()).unwrap());
        items[3] = Value::Bytes(vec![1; length]);
        let err = parse(&encode(&Value::Array(items))).unwrap_err();
        assert!(matches!(err, AttestationError::SignatureLength { found } if found == length), "{err}");
    }
}

#[test]
fn trailing_bytes_rejected() {
    let signed = sign(&document(), &key()).unwrap();
    let err = parse(&[&signed[..], &[0x00, 0x01]].concat()).unwrap_err();
    assert!(matches!(err, AttestationError::TrailingBytes { count: 2 }), "{err}");
}

#[test]
fn payload_trailing_bytes_rejected() {
    let mut payload = payload::encode_payload(&document()).unwrap();
    payload.push(0x00);
    let err = parse(&envelope(payload)).unwrap_err();
    assert!(matches!(err, AttestationError::Payload { .. }), "{err}");
}

#[test]
fn malformed_cbor_rejected() {
    // 0x1c is a reserved additional-information value, so byte 1 is invalid CBOR.
    let err = parse(&[0x84, 0x1c]).unwrap_err();
    assert!(matches!(err, AttestationError::Cbor { .. }), "{err}");
    assert!(err.to_string().contains("invalid CBOR at byte offset 1"), "{err}");
}

#[test]
fn empty_document_rejected() {
    let err = parse(&[]).unwrap_err();
    assert!(matches!(err, AttestationError::Empty), "{err}");
    assert!(err.to_string().contains("expected a COSE_Sign1 structure"), "{err}");
}

#[test]
fn truncated_document_rejected() {
    let signed = sign(&document(), &key()).unwrap();
    for length in [1, 3, 100, signed.len() - 1] {
        let err = parse(&signed[..length]).unwrap_err();
        assert!(matches!(err, AttestationError::Truncated { length: found } if found == length), "{err}");
        assert!(err.to_string().contains(&format!("truncated: its {length} bytes")), "{err}");
    }
}

#[test]
fn non_cose_bytes_rejected() {
    let cases: [(&[u8], &str); 4] = [
        (&[0x1c, 0x00], "bytes starting with 0x1c that are not valid CBOR (invalid CBOR at byte offset 0)"),
        (&[0x5b, 0xff, 0x00], "bytes starting with 0x5b that are not valid CBOR (the bytes end inside a CBOR item)"),
        (b"hello world", "text of 8 bytes"),
        (&[0x05, 0x84, 0x00], "integer 5"),
    ];
    for (bytes, found) in cases {
        let err = parse(bytes).unwrap_err();
        assert!(matches!(err, AttestationError::NotCoseSign1 { .. }), "{bytes:02x?}: {err}");
        assert!(err.to_string().starts_with("input is not an attestation document"), "{err}");
        assert!(err.to_string().ends_with(&format!("found {found}")), "{err}");
    }
}

#[test]
fn cbor_errors_hide_debug_text() {
    let signed = sign(&document(), &key()).unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new(), signed[..10].to_vec(), vec![0x84, 0x1c], vec![0x1c]];
    // A payload that is cut short and a protected header that is not CBOR.
    inputs.push(envelope(payload::encode_payload(&document()).unwrap()[..50].to_vec()));
    let mut items = items(&signed);
    items[0] = Value::Bytes(vec![0xa1, 0x01]);
    inputs.push(encode(&Value::Array(items)));
    for bytes in inputs {
        let text = parse(&bytes).unwrap_err().to_string();
        for debug in ["Io(", "Syntax(", "Semantic(", "Error {", "UnexpectedEof"] {
            assert!(!text.contains(debug), "{bytes:02x?}: {text}");
        }
    }
}

#[test]
fn certificate_parse_error_hides_debug_text() {
    for der in [&[0x30, 0x03, 0x02, 0x01][..], &[0x04; 10][..], &[0x30, 0x00][..]] {
        let err = chain::inspect_certificate(CertificatePosition::Leaf, der, chain::Issuer::SelfSigned).unwrap_err();
        assert!(matches!(err, AttestationError::CertificateParse { .. }), "{err}");
        assert!(!err.to_string().contains("Parsing Error"), "{err}");
        assert!(!err.to_string().contains("nom error"), "{err}");
    }
}

#[test]
fn each_missing_field_named() {
    for field in
        ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"]
    {
        let err = parse(&with_field(field, None)).unwrap_err();
        assert!(matches!(err, AttestationError::MissingField { field: found } if found == field), "{field}: {err}");
    }
}

#[test]
fn each_mistyped_field_named() {
    let cases = [
        ("module_id", Value::Integer(1.into())),
        ("digest", Value::Bytes(b"SHA384".to_vec())),
        ("timestamp", Value::Text("1700000000000".to_owned())),
        ("timestamp", Value::Integer((-5).into())),
        ("pcrs", Value::Array(Vec::new())),
        ("certificate", Value::Text("MII...".to_owned())),
        ("cabundle", Value::Bytes(vec![0x30])),
        ("public_key", Value::Text("key".to_owned())),
        ("user_data", Value::Integer(0.into())),
        ("nonce", Value::Bool(false)),
    ];
    for (field, value) in cases {
        let err = parse(&with_field(field, Some(value))).unwrap_err();
        assert!(
            matches!(err, AttestationError::FieldType { field: ref found, .. } if found == field),
            "{field}: {err}"
        );
    }
}

#[test]
fn cabundle_entry_type_named() {
    let value = Value::Array(vec![Value::Bytes(vec![0x30; 10]), Value::Text("x".to_owned())]);
    let err = parse(&with_field("cabundle", Some(value))).unwrap_err();
    assert!(matches!(err, AttestationError::FieldType { ref field, .. } if field == "cabundle[1]"), "{err}");
}

#[test]
fn duplicate_and_unknown_fields_rejected() {
    let mut entries = payload_entries();
    entries.push((Value::Text("nonce".to_owned()), Value::Null));
    let err = parse(&envelope(encode(&Value::Map(entries)))).unwrap_err();
    assert!(matches!(err, AttestationError::DuplicateField { ref field } if field == "nonce"), "{err}");

    let mut entries = payload_entries();
    entries.push((Value::Text("nitrotpm_pcrs".to_owned()), Value::Map(Vec::new())));
    let err = parse(&envelope(encode(&Value::Map(entries)))).unwrap_err();
    assert!(matches!(err, AttestationError::UnknownField { ref field } if field == "nitrotpm_pcrs"), "{err}");

    let mut entries = payload_entries();
    entries.push((Value::Integer(1.into()), Value::Null));
    let err = parse(&envelope(encode(&Value::Map(entries)))).unwrap_err();
    assert!(matches!(err, AttestationError::FieldType { ref field, .. } if field == "payload key"), "{err}");
}

#[test]
fn digest_other_than_sha384_rejected() {
    let err = parse(&with_field("digest", Some(Value::Text("SHA256".to_owned())))).unwrap_err();
    assert!(matches!(err, AttestationError::UnsupportedDigest { ref found } if found == "SHA256"), "{err}");
}

#[test]
fn empty_module_id_rejected() {
    let err = parse(&with_field("module_id", Some(Value::Text(String::new())))).unwrap_err();
    assert!(matches!(err, AttestationError::EmptyModuleId), "{err}");
}

#[test]
fn zero_timestamp_rejected() {
    let err = parse(&with_field("timestamp", Some(Value::Integer(0.into())))).unwrap_err();
    assert!(matches!(err, AttestationError::ZeroTimestamp), "{err}");
}

fn pcrs(entries: Vec<(i64, usize)>) -> Value {
    Value::Map(
        entries.into_iter().map(|(index, len)| (Value::Integer(index.into()), Value::Bytes(vec![1; len]))).collect(),
    )
}

#[test]
fn pcr_bounds_enforced() {
    let err = parse(&with_field("pcrs", Some(pcrs(vec![(0, 48), (32, 48)])))).unwrap_err();
    assert!(matches!(err, AttestationError::PcrIndex { index: 32 }), "{err}");

    let err = parse(&with_field("pcrs", Some(pcrs(vec![(0, 48), (-1, 48)])))).unwrap_err();
    assert!(matches!(err, AttestationError::FieldType { ref field, .. } if field == "pcrs key"), "{err}");

    for length in [0, 20, 47, 49, 96] {
        let err = parse(&with_field("pcrs", Some(pcrs(vec![(3, length)])))).unwrap_err();
        assert!(matches!(err, AttestationError::PcrLength { index: 3, length: found } if found == length), "{err}");
    }
    for length in [32, 48, 64] {
        let document = parse(&with_field("pcrs", Some(pcrs(vec![(31, length)])))).unwrap();
        assert_eq!(document.pcrs[&31].len(), length);
    }

    let err = parse(&with_field("pcrs", Some(pcrs(Vec::new())))).unwrap_err();
    assert!(matches!(err, AttestationError::PcrCount { count: 0 }), "{err}");
    let err = parse(&with_field("pcrs", Some(pcrs((0..33).map(|i| (i, 48)).collect())))).unwrap_err();
    assert!(matches!(err, AttestationError::PcrCount { count: 33 }), "{err}");

    let err = parse(&with_field("pcrs", Some(pcrs(vec![(5, 48), (5, 48)])))).unwrap_err();
    assert!(matches!(err, AttestationError::DuplicatePcr { index: 5 }), "{err}");

    let value = Value::Map(vec![(Value::Integer(0.into()), Value::Text("00".repeat(48)))]);
    let err = parse(&with_field("pcrs", Some(value))).unwrap_err();
    assert!(matches!(err, AttestationError::FieldType { ref field, .. } if field == "pcrs[0]"), "{err}");
}

#[test]
fn cabundle_bounds_enforced() {
    let err = parse(&with_field("cabundle", Some(Value::Array(Vec::new())))).unwrap_err();
    assert!(matches!(err, AttestationError::EmptyCabundle), "{err}");

    let value = Value::Array(vec![Value::Bytes(vec![0x30; 10]), Value::Bytes(vec![0x30; 1025])]);
    let err = parse(&with_field("cabundle", Some(value))).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateLength { position: CertificatePosition::Bundle(1), length: 1025 }),
        "{err}"
    );

    let value = Value::Array(vec![Value::Bytes(Vec::new())]);
    let err = parse(&with_field("cabundle", Some(value))).unwrap_err();
    assert!(matches!(err, AttestationError::CertificateLength { length: 0, .. }), "{err}");

    let err = parse(&with_field("certificate", Some(Value::Bytes(vec![0x30; 1025])))).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateLength { position: CertificatePosition::Leaf, length: 1025 }),
        "{err}"
    );
}

#[test]
fn user_field_limits_enforced() {
    for field in ["public_key", "user_data", "nonce"] {
        let err = parse(&with_field(field, Some(Value::Bytes(vec![0; 1025])))).unwrap_err();
        assert!(
            matches!(err, AttestationError::FieldTooLong { field: found, length: 1025, max: 1024 } if found == field),
            "{field}: {err}"
        );
        let document = parse(&with_field(field, Some(Value::Bytes(vec![0; 1024])))).unwrap();
        let value = match field {
            "public_key" => document.public_key,
            "user_data" => document.user_data,
            _ => document.nonce,
        };
        assert_eq!(value.map(|v| v.len()), Some(1024));
    }
}

#[test]
fn null_and_empty_kept_apart() {
    let document = parse(&sign(&document(), &key()).unwrap()).unwrap();
    assert_eq!(document.user_data, None);
    assert_eq!(document.nonce, Some(Vec::new()));
}

#[test]
fn pcrs_in_any_key_order_parse() {
    let reversed =
        Value::Map((0..16).rev().map(|i| (Value::Integer(i.into()), Value::Bytes(vec![i as u8; 48]))).collect());
    let parsed = parse(&with_field("pcrs", Some(reversed))).unwrap();
    let expected: BTreeMap<u32, Vec<u8>> = (0..16).map(|index| (index, vec![index as u8; 48])).collect();
    assert_eq!(parsed.pcrs, expected);
}

#[test]
fn debug_mode_needs_all_three_zero() {
    let mut document = document();
    for index in 0..3 {
        document.pcrs.insert(index, vec![0; 48]);
    }
    assert!(is_debug_mode(&document));
    document.pcrs.insert(2, vec![1; 48]);
    assert!(!is_debug_mode(&document));
    document.pcrs.remove(&2);
    assert!(!is_debug_mode(&document));
}
