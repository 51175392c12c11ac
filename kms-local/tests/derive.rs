//! DeriveSharedSecret, CreateKey, DescribeKey and GetPublicKey through the
//! real aws-sdk-kms client against an in-process kms-local on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyAgreementAlgorithmSpec, KeySpec, KeyUsageType, RecipientInfo};
use common::{client, client_with, error_parts, start};
use kms_local::Config;

fn peer(algorithm: &'static agreement::Algorithm) -> (agreement::PrivateKey, Vec<u8>) {
    let private = agreement::PrivateKey::generate(algorithm).unwrap();
    let public = private.compute_public_key().unwrap();
    let der: PublicKeyX509Der = public.as_der().unwrap();
    (private, der.as_ref().to_vec())
}

async fn create_ecc_key(client: &aws_sdk_kms::Client, spec: KeySpec) -> String {
    let created = client.create_key().key_spec(spec).key_usage(KeyUsageType::KeyAgreement).send().await.unwrap();
    created.key_metadata().unwrap().key_id().to_owned()
}

#[tokio::test]
async fn derive_matches_independent_ecdh() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());

    for (spec, algorithm, length) in [
        (KeySpec::EccNistP256, &agreement::ECDH_P256, 32),
        (KeySpec::EccNistP384, &agreement::ECDH_P384, 48),
        (KeySpec::EccNistP521, &agreement::ECDH_P521, 66),
    ] {
        let created = client
            .create_key()
            .key_spec(spec.clone())
            .key_usage(KeyUsageType::KeyAgreement)
            .description("derive test")
            .send()
            .await
            .unwrap();
        let metadata = created.key_metadata().unwrap();
        assert_eq!(metadata.key_spec(), Some(&spec));
        assert_eq!(metadata.key_usage(), Some(&KeyUsageType::KeyAgreement));
        assert_eq!(metadata.key_agreement_algorithms(), [KeyAgreementAlgorithmSpec::Ecdh]);
        assert_eq!(metadata.aws_account_id(), Some("111122223333"));
        assert!(metadata.enabled());
        let key_id = metadata.key_id().to_owned();
        let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}");
        assert_eq!(metadata.arn(), Some(arn.as_str()));

        let public = client.get_public_key().key_id(&key_id).send().await.unwrap();
        assert_eq!(public.key_agreement_algorithms(), [KeyAgreementAlgorithmSpec::Ecdh]);
        assert_eq!(public.key_spec(), Some(&spec));
        assert_eq!(public.key_usage(), Some(&KeyUsageType::KeyAgreement));
        let kms_public = public.public_key().unwrap().as_ref().to_vec();

        let (peer_private, peer_spki) = peer(algorithm);
        let derived = client
            .derive_shared_secret()
            .key_id(&key_id)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer_spki))
            .send()
            .await
            .unwrap();
        let secret = derived.shared_secret().unwrap().as_ref().to_vec();
        assert_eq!(secret.len(), length, "{spec:?}");
        assert!(derived.ciphertext_for_recipient().is_none());
        assert_eq!(derived.key_id(), Some(arn.as_str()));
        assert_eq!(derived.key_agreement_algorithm(), Some(&KeyAgreementAlgorithmSpec::Ecdh));
        assert!(derived.request_id().is_some_and(|id| !id.is_empty()));

        let expected =
            agreement::agree(&peer_private, agreement::UnparsedPublicKey::new(algorithm, &kms_public), (), |z| {
                Ok(z.to_vec())
            })
            .unwrap();
        assert_eq!(secret, expected, "{spec:?}");
    }
}

#[tokio::test]
async fn key_id_forms_all_resolve() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = create_ecc_key(&client, KeySpec::EccNistP256).await;
    client.create_alias().alias_name("alias/enclave-ecdh").target_key_id(&key_id).send().await.unwrap();

    let forms = [
        key_id.clone(),
        format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}"),
        "alias/enclave-ecdh".to_owned(),
        "arn:aws:kms:us-east-1:111122223333:alias/enclave-ecdh".to_owned(),
    ];
    let (_, peer_spki) = peer(&agreement::ECDH_P256);
    let mut secrets = Vec::new();
    for form in &forms {
        let described = client.describe_key().key_id(form).send().await.unwrap();
        assert_eq!(described.key_metadata().unwrap().key_id(), key_id, "{form}");
        let derived = client
            .derive_shared_secret()
            .key_id(form)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer_spki.clone()))
            .send()
            .await
            .unwrap();
        secrets.push(derived.shared_secret().unwrap().as_ref().to_vec());
    }
    assert!(secrets.windows(2).all(|pair| pair[0] == pair[1]));
}

#[tokio::test]
async fn derive_errors_have_kms_names() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let p256 = create_ecc_key(&client, KeySpec::EccNistP256).await;
    let symmetric = client.create_key().send().await.unwrap().key_metadata().unwrap().key_id().to_owned();
    let (_, p384_peer) = peer(&agreement::ECDH_P384);
    let (_, p256_peer) = peer(&agreement::ECDH_P256);

    let derive = |key_id: &str, public_key: Vec<u8>| {
        client
            .derive_shared_secret()
            .key_id(key_id)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(public_key))
            .send()
    };

    let error = derive(&p256, p384_peer).await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "ValidationException");
    assert!(message.contains("KMS key is on P-256"), "{message}");

    let error = derive(&p256, b"not a key".to_vec()).await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");

    use base64::Engine;
    let inline = base64::engine::general_purpose::STANDARD.encode(&p256_peer).into_bytes();
    let (code, message) = error_parts(&derive(&p256, inline).await.unwrap_err());
    assert_eq!(code, "ValidationException");
    assert!(message.contains("base64 text, not DER"), "{message}");

    let (code, message) = error_parts(&derive(&symmetric, p256_peer.clone()).await.unwrap_err());
    assert_eq!(code, "InvalidKeyUsageException");
    assert!(message.contains("requires a KEY_AGREEMENT key"), "{message}");

    let missing = "00000000-0000-4000-8000-000000000000";
    let (code, message) = error_parts(&derive(missing, p256_peer.clone()).await.unwrap_err());
    assert_eq!(code, "NotFoundException");
    assert!(message.contains(missing), "{message}");

    let (code, _) = error_parts(&derive("alias/none", p256_peer.clone()).await.unwrap_err());
    assert_eq!(code, "NotFoundException");

    let wrong_secret = client_with(&server.endpoint(), common::ACCESS_KEY_ID, "wrong", "us-east-1");
    let error = wrong_secret.list_keys().send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidSignatureException");

    let unknown = client_with(&server.endpoint(), "AKIAUNKNOWN", common::SECRET_ACCESS_KEY, "us-east-1");
    let error = unknown.list_keys().send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "UnrecognizedClientException");

    let other_region = client_with(&server.endpoint(), common::ACCESS_KEY_ID, common::SECRET_ACCESS_KEY, "eu-west-1");
    let error = other_region.list_keys().send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidSignatureException");
}

#[tokio::test]
async fn create_key_rejects_wrong_usage() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());

    let error = client.create_key().key_spec(KeySpec::EccNistP256).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "ValidationException");
    assert!(message.contains("KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec ECC_NIST_P256"), "{message}");

    let error = client
        .create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");

    let error = client
        .create_key()
        .key_spec(KeySpec::EccSecgP256K1)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "UnsupportedOperationException");
}

/// Sends DeriveSharedSecret with a Recipient carrying `document`, expects it
/// to fail, and returns the error's code and message.
async fn rejected_document(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    peer_spki: &[u8],
    document: Vec<u8>,
) -> (String, String) {
    let error = client
        .derive_shared_secret()
        .key_id(key_id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_spki.to_vec()))
        .recipient(
            RecipientInfo::builder()
                .key_encryption_algorithm(aws_sdk_kms::types::KeyEncryptionMechanism::RsaesOaepSha256)
                .attestation_document(Blob::new(document))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    error_parts(&error)
}

#[tokio::test]
async fn recipient_file_reference_is_rejected() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = create_ecc_key(&client, KeySpec::EccNistP256).await;
    let (_, peer_spki) = peer(&agreement::ECDH_P256);

    for text in ["fileb://attestation.cbor", "file://doc"] {
        let (code, message) = rejected_document(&client, &key_id, &peer_spki, text.as_bytes().to_vec()).await;
        assert_eq!(code, "ValidationException", "{text}");
        assert!(message.contains("the file was not read"), "{message}");
        assert!(message.contains(text), "{message}");
    }
}

#[tokio::test]
async fn recipient_document_encoded_twice_is_named() {
    use base64::Engine;
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = create_ecc_key(&client, KeySpec::EccNistP256).await;
    let (_, peer_spki) = peer(&agreement::ECDH_P256);
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
    let document = std::fs::read(vectors.join("attestation-2022-10-12-debug.cbor")).unwrap();

    let twice = base64::engine::general_purpose::STANDARD.encode(&document).into_bytes();
    let (code, message) = rejected_document(&client, &key_id, &peer_spki, twice).await;
    assert_eq!(code, "ValidationException");
    assert!(message.contains("contains the base64 text of an attestation document"), "{message}");
    assert!(message.contains("base64-encoded twice"), "{message}");

    // Base64 text of something else gets the parser's own error.
    let other = base64::engine::general_purpose::STANDARD.encode(b"not a document").into_bytes();
    let (code, message) = rejected_document(&client, &key_id, &peer_spki, other).await;
    assert_eq!(code, "ValidationException");
    assert!(message.contains("is not a valid attestation document"), "{message}");
}

#[tokio::test]
async fn every_response_has_request_id() {
    let server = start(Config::ephemeral()).await;

    let request = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n\
                   X-Amz-Target: TrentService.ListKeys\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let (status, headers, body) = common::raw_request(server.address(), request).await;
    assert_eq!(status, 403);
    let header = |name: &str| headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    assert!(header("x-amzn-requestid").is_some_and(|id| id.len() == 36));
    assert_eq!(header("content-type").as_deref(), Some("application/x-amz-json-1.1"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["__type"], "MissingAuthenticationTokenException");
    assert!(body["message"].as_str().unwrap().contains("Authorization"));

    let client = client(&server.endpoint());
    let error = client.describe_key().key_id("alias/missing").send().await.unwrap_err();
    assert!(error.as_service_error().and_then(|e| e.meta().request_id()).is_some_and(|id| id.len() == 36));
}

#[tokio::test]
async fn derive_follows_key_and_policy() {
    // kms-local keeps parsed private keys and policies between requests; each
    // request must still use its own key and the key's current policy.
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let first = create_ecc_key(&client, KeySpec::EccNistP256).await;
    let second = create_ecc_key(&client, KeySpec::EccNistP256).await;
    let (peer_private, peer_spki) = peer(&agreement::ECDH_P256);

    let derive = |key_id: String| {
        let client = client.clone();
        let peer_spki = peer_spki.clone();
        async move {
            client
                .derive_shared_secret()
                .key_id(key_id)
                .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
                .public_key(Blob::new(peer_spki))
                .send()
                .await
        }
    };
    let mut secrets = Vec::new();
    for key_id in [&first, &second] {
        let public = client.get_public_key().key_id(key_id).send().await.unwrap();
        let public = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, public.public_key().unwrap().as_ref());
        secrets.push(agreement::agree(&peer_private, public, (), |z| Ok(z.to_vec())).unwrap());
    }
    let [first_secret, second_secret] = <[Vec<u8>; 2]>::try_from(secrets).unwrap();
    assert_ne!(first_secret, second_secret);
    for key_id in [&first, &second, &first, &second] {
        let derived = derive(key_id.clone()).await.unwrap();
        let want = if key_id == &first { &first_secret } else { &second_secret };
        assert_eq!(derived.shared_secret().unwrap().as_ref(), want.as_slice(), "{key_id}");
    }

    let deny = r#"{"Statement": [
        {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "NoDerive", "Effect": "Deny", "Principal": "*", "Action": "kms:DeriveSharedSecret", "Resource": "*"}]}"#;
    client.put_key_policy().key_id(&first).policy(deny).send().await.unwrap();
    let error = derive(first.clone()).await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("kms:DeriveSharedSecret"), "{message}");
    // The other key keeps its own policy.
    assert!(derive(second.clone()).await.is_ok());

    let allow = r#"{"Statement": [
        {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"}]}"#;
    client.put_key_policy().key_id(&first).policy(allow).send().await.unwrap();
    let derived = derive(first.clone()).await.unwrap();
    assert_eq!(derived.shared_secret().unwrap().as_ref(), first_secret.as_slice());
}
