//! The five Recipient operations and the key policy test matrix, through the
//! aws-sdk-kms client, with attestation documents signed by a test CA that
//! the server trusts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::time::Duration;

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::KeySize;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, DataKeySpec, KeyAgreementAlgorithmSpec, KeyEncryptionMechanism, KeySpec, KeyUsageType,
    RecipientInfo,
};
use common::{RecipientKey, TestCa, client, debug_pcrs, error_parts, pcrs, start};

fn recipient(document: Vec<u8>) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document))
        .build()
}

fn peer() -> (agreement::PrivateKey, Vec<u8>) {
    let private = agreement::PrivateKey::generate(&agreement::ECDH_P384).unwrap();
    let der: PublicKeyX509Der = private.compute_public_key().unwrap().as_der().unwrap();
    (private, der.as_ref().to_vec())
}

async fn derive(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    peer_spki: &[u8],
    document: Option<Vec<u8>>,
) -> Result<
    aws_sdk_kms::operation::derive_shared_secret::DeriveSharedSecretOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::derive_shared_secret::DeriveSharedSecretError>,
> {
    client
        .derive_shared_secret()
        .key_id(key_id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_spki))
        .set_recipient(document.map(recipient))
        .send()
        .await
}

async fn create_p384_key(client: &aws_sdk_kms::Client, policy: Option<String>) -> String {
    client
        .create_key()
        .key_spec(KeySpec::EccNistP384)
        .key_usage(KeyUsageType::KeyAgreement)
        .set_policy(policy)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned()
}

#[tokio::test]
async fn derive_with_recipient_envelopes_secret() {
    let ca = TestCa::new();
    let server = start(ca.config()).await;
    let client = client(&server.endpoint());
    let key_id = create_p384_key(&client, None).await;
    let (_, peer_spki) = peer();

    let plain = derive(&client, &key_id, &peer_spki, None).await.unwrap();
    let expected = plain.shared_secret().unwrap().as_ref().to_vec();
    assert_eq!(expected.len(), 48);

    for size in [KeySize::Rsa2048, KeySize::Rsa3072, KeySize::Rsa4096] {
        let enclave = RecipientKey::with_size(size);
        let document = ca.document(&pcrs(1), Some(&enclave.spki));
        let output = derive(&client, &key_id, &peer_spki, Some(document)).await.unwrap();
        assert!(output.shared_secret().is_none(), "SharedSecret must be absent with a Recipient");
        let envelope = output.ciphertext_for_recipient().unwrap().as_ref();
        assert_eq!(enclave.open(envelope), expected);
    }
}

#[tokio::test]
async fn recipient_documents_are_checked() {
    let ca = TestCa::new();
    let server = start(ca.config()).await;
    let client = client(&server.endpoint());
    let key_id = create_p384_key(&client, None).await;
    let (_, peer_spki) = peer();
    let enclave = RecipientKey::new();

    // Signed by a CA the server does not trust.
    let stranger = TestCa::new().document(&pcrs(1), Some(&enclave.spki));
    let (code, message) = error_parts(&derive(&client, &key_id, &peer_spki, Some(stranger)).await.unwrap_err());
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("is not a trusted root"), "{message}");
    assert!(message.contains("--trust-root"), "{message}");

    // Older than the default maximum age of five minutes.
    let old = ca.document_aged(&pcrs(1), Some(&enclave.spki), Duration::from_secs(400));
    let (code, message) = error_parts(&derive(&client, &key_id, &peer_spki, Some(old)).await.unwrap_err());
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("too old"), "{message}");

    // A real AWS document: the chain is trusted but long expired.
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/attestation-2023-09-18-debug-userdata-spki.cbor"
    ))
    .unwrap();
    let (code, message) = error_parts(&derive(&client, &key_id, &peer_spki, Some(real)).await.unwrap_err());
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("expired") || message.contains("too old"), "{message}");

    // No public key, or an EC public key, in the document.
    let without_key = ca.document(&pcrs(1), None);
    let (code, message) = error_parts(&derive(&client, &key_id, &peer_spki, Some(without_key)).await.unwrap_err());
    assert_eq!(code, "ValidationException");
    assert!(message.contains("has no public_key"), "{message}");
    let ec_key = ca.document(&pcrs(1), Some(&peer_spki));
    let (code, message) = error_parts(&derive(&client, &key_id, &peer_spki, Some(ec_key)).await.unwrap_err());
    assert_eq!(code, "ValidationException");
    assert!(message.contains("expected rsaEncryption"), "{message}");

    // Not a document at all.
    let (code, _) =
        error_parts(&derive(&client, &key_id, &peer_spki, Some(b"\x01\x02\x03".to_vec())).await.unwrap_err());
    assert_eq!(code, "ValidationException");
}

#[tokio::test]
async fn all_recipient_operations_envelope_plaintext() {
    let ca = TestCa::new();
    let server = start(ca.config()).await;
    let client = client(&server.endpoint());
    let enclave = RecipientKey::new();
    let document = || recipient(ca.document(&pcrs(1), Some(&enclave.spki)));
    let symmetric = client.create_key().send().await.unwrap().key_metadata().unwrap().key_id().to_owned();

    // GenerateDataKey: the plaintext key goes to the enclave, the ciphertext
    // still decrypts (without a Recipient) to the same key.
    let generated = client
        .generate_data_key()
        .key_id(&symmetric)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("purpose", "test")
        .recipient(document())
        .send()
        .await
        .unwrap();
    assert!(generated.plaintext().is_none());
    let data_key = enclave.open(generated.ciphertext_for_recipient().unwrap().as_ref());
    assert_eq!(data_key.len(), 32);
    let decrypted = client
        .decrypt()
        .ciphertext_blob(generated.ciphertext_blob().unwrap().clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), data_key.as_slice());

    // Decrypt with a Recipient.
    let encrypted =
        client.encrypt().key_id(&symmetric).plaintext(Blob::new(b"enclave secret".to_vec())).send().await.unwrap();
    let decrypted = client
        .decrypt()
        .ciphertext_blob(encrypted.ciphertext_blob().unwrap().clone())
        .recipient(document())
        .send()
        .await
        .unwrap();
    assert!(decrypted.plaintext().is_none());
    assert_eq!(enclave.open(decrypted.ciphertext_for_recipient().unwrap().as_ref()), b"enclave secret");

    // GenerateDataKeyPair: the private key goes to the enclave and matches
    // the public key.
    let pair = client
        .generate_data_key_pair()
        .key_id(&symmetric)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .recipient(document())
        .send()
        .await
        .unwrap();
    assert!(pair.private_key_plaintext().is_none());
    assert!(pair.private_key_ciphertext_blob().is_some());
    let pkcs8 = enclave.open(pair.ciphertext_for_recipient().unwrap().as_ref());
    let signing =
        aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
            .unwrap();
    let public: PublicKeyX509Der = aws_lc_rs::signature::KeyPair::public_key(&signing).as_der().unwrap();
    assert_eq!(public.as_ref(), pair.public_key().unwrap().as_ref());

    // GenerateRandom.
    let random = client.generate_random().number_of_bytes(64).recipient(document()).send().await.unwrap();
    assert!(random.plaintext().is_none());
    assert_eq!(enclave.open(random.ciphertext_for_recipient().unwrap().as_ref()).len(), 64);
}

/// A policy where the account administers the key, and DeriveSharedSecret is
/// allowed only under `condition`.
fn enclave_policy(condition: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [
            {{"Sid": "Admin", "Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:root"}},
              "NotAction": "kms:DeriveSharedSecret", "Resource": "*"}},
            {{"Sid": "EnclaveOnly", "Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:root"}},
              "Action": "kms:DeriveSharedSecret", "Resource": "*", "Condition": {condition}}}]}}"#
    )
}

#[tokio::test]
async fn policy_matrix() {
    let ca = TestCa::new();
    let server = start(ca.config()).await;
    let client = client(&server.endpoint());
    let enclave = RecipientKey::new();
    let (_, peer_spki) = peer();
    let image = pcrs(1);
    let pcr0 = hex::encode(&image[&0]);

    let exact = create_p384_key(
        &client,
        Some(enclave_policy(&format!(r#"{{"StringEquals": {{"kms:RecipientAttestation:ImageSha384": "{pcr0}"}}}}"#))),
    )
    .await;
    let ignore_case = create_p384_key(
        &client,
        Some(enclave_policy(&format!(
            r#"{{"StringEqualsIgnoreCase": {{"kms:RecipientAttestation:PCR0": "{}"}}}}"#,
            pcr0.to_uppercase()
        ))),
    )
    .await;
    let debug_zero = create_p384_key(
        &client,
        Some(enclave_policy(&format!(
            r#"{{"StringEquals": {{"kms:RecipientAttestation:ImageSha384": "{}"}}}}"#,
            "0".repeat(96)
        ))),
    )
    .await;
    let deny = create_p384_key(
        &client,
        Some(format!(
            r#"{{"Version": "2012-10-17", "Statement": [
                {{"Effect": "Allow", "Principal": {{"AWS": "111122223333"}}, "Action": "kms:*", "Resource": "*"}},
                {{"Sid": "DenyImage", "Effect": "Deny", "Principal": "*", "Action": "kms:DeriveSharedSecret", "Resource": "*",
                  "Condition": {{"StringEquals": {{"kms:RecipientAttestation:ImageSha384": "{pcr0}"}}}}}}]}}"#
        )),
    )
    .await;

    let matching = || Some(ca.document(&image, Some(&enclave.spki)));
    let other_image = || Some(ca.document(&pcrs(9), Some(&enclave.spki)));
    let debug = || Some(ca.document(&debug_pcrs(), Some(&enclave.spki)));

    let cases: Vec<(&str, &str, Option<Vec<u8>>, bool)> = vec![
        ("matching PCR0", &exact, matching(), true),
        ("different PCR0", &exact, other_image(), false),
        ("no Recipient", &exact, None, false),
        ("upper-case hex, IgnoreCase", &ignore_case, matching(), true),
        ("different PCR0, IgnoreCase", &ignore_case, other_image(), false),
        ("debug document, real image policy", &exact, debug(), false),
        ("debug document, zero PCR0 policy", &debug_zero, debug(), true),
        ("explicit Deny beats Allow", &deny, matching(), false),
        ("Deny condition not met", &deny, other_image(), true),
    ];
    for (name, key_id, document, allowed) in cases {
        let result = derive(&client, key_id, &peer_spki, document).await;
        match (allowed, result) {
            (true, Ok(_)) => {}
            (false, Err(error)) => {
                let (code, message) = error_parts(&error);
                assert_eq!(code, "AccessDeniedException", "{name}: {message}");
                assert!(message.contains("kms:DeriveSharedSecret"), "{name}: {message}");
            }
            (true, Err(error)) => panic!("{name}: expected success, got {:?}", error_parts(&error)),
            (false, Ok(_)) => panic!("{name}: expected AccessDeniedException, got success"),
        }
    }
}
