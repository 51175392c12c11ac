//! Real Nitro attestation documents verified against the AWS root G1, and
//! tampered copies of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::{Duration, UNIX_EPOCH};

use recipient_common::attestation::{
    AWS_ROOT_G1_PEM, AWS_ROOT_G1_SHA256, AttestationError, CertificatePosition, TimeMode, Verifier, VerifyOptions,
    parse,
};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

struct Vector {
    file: &'static str,
    debug: bool,
    timestamp: u64,
    pcr0_prefix: &'static str,
}

const DOCUMENTS: [Vector; 4] = [
    Vector {
        file: "attestation-2022-10-13-signed-eif.cbor",
        debug: false,
        timestamp: 1_665_651_482_136,
        pcr0_prefix: "f4d48b81a460c991",
    },
    Vector {
        file: "attestation-2022-10-12-debug.cbor",
        debug: true,
        timestamp: 1_665_582_606_081,
        pcr0_prefix: "0000000000000000",
    },
    Vector {
        file: "attestation-2023-09-18-debug-userdata-spki.cbor",
        debug: true,
        timestamp: 1_695_049_410_860,
        pcr0_prefix: "0000000000000000",
    },
    Vector {
        file: "attestation-2024-09-07-fields-1024.cbor",
        debug: false,
        timestamp: 1_725_719_859_545,
        pcr0_prefix: "e72a46ca80a260fb",
    },
];

fn read(file: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{file}")).unwrap()
}

fn at_document(allow_debug: bool) -> VerifyOptions {
    VerifyOptions { time: TimeMode::DocumentTime, allow_debug }
}

#[test]
fn aws_root_digest_matches() {
    let der = x509_parser::pem::parse_x509_pem(AWS_ROOT_G1_PEM.as_bytes()).unwrap().1.contents;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    assert_eq!(hex::encode(digest.as_ref()), AWS_ROOT_G1_SHA256);
    assert_eq!(AWS_ROOT_G1_SHA256, "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
    let shipped = std::fs::read(format!("{VECTORS}/aws-nitro-enclaves-root-g1.pem")).unwrap();
    assert_eq!(x509_parser::pem::parse_x509_pem(&shipped).unwrap().1.contents, der);
}

#[test]
fn vectors_parse_with_expected_fields() {
    for vector in &DOCUMENTS {
        let document = parse(&read(vector.file)).unwrap();
        assert_eq!(document.timestamp, vector.timestamp, "{}", vector.file);
        assert_eq!(document.digest, "SHA384");
        assert!(hex::encode(&document.pcrs[&0]).starts_with(vector.pcr0_prefix), "{}", vector.file);
        assert_eq!(document.cabundle.len(), 4, "{}", vector.file);
        let instance_id = document.module_id.split("-enc").next().unwrap();
        let mut extend = vec![0u8; 48];
        extend.extend_from_slice(instance_id.as_bytes());
        let pcr4 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &extend);
        assert_eq!(document.pcrs[&4], pcr4.as_ref(), "{}", vector.file);
    }
}

#[test]
fn vectors_null_and_sizes_kept() {
    let signed = parse(&read("attestation-2022-10-13-signed-eif.cbor")).unwrap();
    assert_eq!(signed.public_key, None);
    assert_eq!(signed.user_data, None);
    assert_eq!(signed.nonce.as_ref().map(Vec::len), Some(256));
    assert_eq!(signed.pcrs.len(), 16);

    let debug = parse(&read("attestation-2022-10-12-debug.cbor")).unwrap();
    assert_eq!(debug.public_key.as_ref().map(Vec::len), Some(19));
    assert_eq!(debug.user_data.as_ref().map(Vec::len), Some(13));
    assert_eq!(debug.nonce, None);

    let full = parse(&read("attestation-2024-09-07-fields-1024.cbor")).unwrap();
    assert_eq!(full.public_key.as_ref().map(Vec::len), Some(1024));
    assert_eq!(full.user_data.as_ref().map(Vec::len), Some(1024));
    assert_eq!(full.nonce.as_ref().map(Vec::len), Some(1024));
}

#[test]
fn vectors_verify_at_document_time() {
    let verifier = Verifier::with_aws_root();
    for vector in &DOCUMENTS {
        let verified = verifier
            .verify(&read(vector.file), &at_document(vector.debug))
            .unwrap_or_else(|e| panic!("{}: {e}", vector.file));
        assert_eq!(verified.document().timestamp, vector.timestamp);
        assert_eq!(verified.is_debug_mode(), vector.debug);
        assert_eq!(verified.root_sha256(), AWS_ROOT_G1_SHA256);
        assert_eq!(verified.chain_subjects().len(), 5);
        assert_eq!(verified.chain_subjects()[0], "C=US, O=Amazon, OU=AWS, CN=aws.nitro-enclaves");
    }
}

#[test]
fn debug_vectors_rejected_without_allow_debug() {
    let verifier = Verifier::with_aws_root();
    for vector in DOCUMENTS.iter().filter(|v| v.debug) {
        let err = verifier.verify(&read(vector.file), &at_document(false)).unwrap_err();
        assert!(matches!(err, AttestationError::DebugMode), "{}: {err}", vector.file);
    }
}

#[test]
fn vectors_expired_at_current_time() {
    let verifier = Verifier::with_aws_root();
    for vector in &DOCUMENTS {
        let err = verifier.verify(&read(vector.file), &VerifyOptions::default()).unwrap_err();
        // Validation runs from the root down, so the first expired certificate
        // found is the regional one (valid for weeks), not the 3-hour leaf.
        assert!(matches!(err, AttestationError::CertificateExpired { .. }), "{}: {err}", vector.file);
        let options = VerifyOptions { time: TimeMode::Live { max_age: Duration::MAX }, allow_debug: true };
        let err = verifier.verify(&read(vector.file), &options).unwrap_err();
        assert!(matches!(err, AttestationError::CertificateExpired { .. }), "{}: {err}", vector.file);
    }
}

#[test]
fn vector_not_yet_valid_before_leaf() {
    let verifier = Verifier::with_aws_root();
    let vector = &DOCUMENTS[0];
    // The leaf of this document becomes valid at 08:57:59 UTC, a few seconds
    // before the document's timestamp.
    let before = UNIX_EPOCH + Duration::from_millis(vector.timestamp) - Duration::from_secs(60);
    let options = VerifyOptions { time: TimeMode::At(before), allow_debug: false };
    let err = verifier.verify(&read(vector.file), &options).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateNotYetValid { position: CertificatePosition::Leaf, .. }),
        "{err}"
    );
    let inside = UNIX_EPOCH + Duration::from_millis(vector.timestamp) + Duration::from_secs(3600);
    let options = VerifyOptions { time: TimeMode::At(inside), allow_debug: false };
    verifier.verify(&read(vector.file), &options).unwrap();
}

/// Returns the real document most tamper tests start from, with its verifier options.
fn original() -> (Vec<u8>, VerifyOptions) {
    (read(DOCUMENTS[0].file), at_document(false))
}

fn position_of(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|window| window == needle).unwrap()
}

fn resign(document: &recipient_common::attestation::AttestationDocument) -> Vec<u8> {
    let key =
        aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
    recipient_common::attestation::sign(document, &key).unwrap()
}

#[test]
fn tampered_payload_fails_cose_signature() {
    let (mut bytes, options) = original();
    let at = position_of(&bytes, b"module_id") + 12;
    bytes[at] ^= 0x01;
    let err = Verifier::with_aws_root().verify(&bytes, &options).unwrap_err();
    assert!(matches!(err, AttestationError::CoseSignature { .. }), "{err}");
}

#[test]
fn tampered_signature_fails_cose_signature() {
    let (mut bytes, options) = original();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    let err = Verifier::with_aws_root().verify(&bytes, &options).unwrap_err();
    assert!(matches!(err, AttestationError::CoseSignature { .. }), "{err}");
}

#[test]
fn tampered_cabundle_certificate_fails_chain() {
    let (bytes, options) = original();
    let document = parse(&bytes).unwrap();
    for index in 1..4 {
        let mut tampered = bytes.clone();
        // The last byte of a certificate is inside its signature value.
        let end = position_of(&bytes, &document.cabundle[index]) + document.cabundle[index].len() - 1;
        tampered[end] ^= 0x01;
        let err = Verifier::with_aws_root().verify(&tampered, &options).unwrap_err();
        assert!(
            matches!(err, AttestationError::CertificateSignature { position: CertificatePosition::Bundle(i), .. } if i == index),
            "cabundle[{index}]: {err}"
        );
    }
}

#[test]
fn tampered_leaf_fails_chain() {
    let (bytes, options) = original();
    let document = parse(&bytes).unwrap();
    let mut tampered = bytes.clone();
    let end = position_of(&bytes, &document.certificate) + document.certificate.len() - 1;
    tampered[end] ^= 0x01;
    let err = Verifier::with_aws_root().verify(&tampered, &options).unwrap_err();
    assert!(matches!(err, AttestationError::CertificateSignature { position: CertificatePosition::Leaf, .. }), "{err}");
}

#[test]
fn tampered_root_fails_pinning() {
    let (bytes, options) = original();
    let document = parse(&bytes).unwrap();
    let mut tampered = bytes.clone();
    let end = position_of(&bytes, &document.cabundle[0]) + document.cabundle[0].len() - 1;
    tampered[end] ^= 0x01;
    let err = Verifier::with_aws_root().verify(&tampered, &options).unwrap_err();
    assert!(matches!(err, AttestationError::UntrustedRoot { .. }), "{err}");
}

#[test]
fn reversed_cabundle_fails_pinning() {
    let (bytes, options) = original();
    let mut document = parse(&bytes).unwrap();
    document.cabundle.reverse();
    let err = Verifier::with_aws_root().verify(&resign(&document), &options).unwrap_err();
    assert!(matches!(err, AttestationError::UntrustedRoot { ref subject, .. } if subject.contains("i-")), "{err}");
}

#[test]
fn self_made_root_fails() {
    let (bytes, options) = original();
    let mut document = parse(&bytes).unwrap();
    // A self-made root with the AWS root's name.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // Encoded like the real one: C as PrintableString, the rest as UTF8String.
    let country = rcgen::DnValue::PrintableString("US".try_into().unwrap());
    params.distinguished_name.push(rcgen::DnType::CountryName, country);
    for (kind, value) in [
        (rcgen::DnType::OrganizationName, "Amazon"),
        (rcgen::DnType::OrganizationalUnitName, "AWS"),
        (rcgen::DnType::CommonName, "aws.nitro-enclaves"),
    ] {
        params.distinguished_name.push(kind, rcgen::DnValue::Utf8String(value.to_owned()));
    }
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let fake_root = params.self_signed(&key).unwrap();
    document.cabundle[0] = fake_root.der().to_vec();
    let forged = resign(&document);

    let err = Verifier::with_aws_root().verify(&forged, &options).unwrap_err();
    assert!(matches!(err, AttestationError::UntrustedRoot { .. }), "{err}");

    // Even a verifier that trusts the self-made root finds that it did not sign the chain.
    let mut verifier = Verifier::with_aws_root();
    verifier.add_root_pem(fake_root.pem().as_bytes()).unwrap();
    let err = verifier.verify(&forged, &options).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateSignature { position: CertificatePosition::Bundle(1), .. }),
        "{err}"
    );
}

#[test]
fn tagged_vector_verifies() {
    let (bytes, options) = original();
    let tagged = [&[0xd2][..], &bytes].concat();
    let verified = Verifier::with_aws_root().verify(&tagged, &options).unwrap();
    assert_eq!(verified.document(), &parse(&bytes).unwrap());
}
