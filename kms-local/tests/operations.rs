//! Key management, cryptographic operations, DryRun, GrantTokens and their
//! errors, through the aws-sdk-kms client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, DataKeySpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeySpec, KeyState, KeyUsageType,
};
use common::{client, client_with, error_parts, start};
use kms_local::{Config, Credentials};

async fn symmetric_key(client: &aws_sdk_kms::Client) -> String {
    client.create_key().send().await.unwrap().key_metadata().unwrap().key_id().to_owned()
}

#[tokio::test]
async fn list_keys_paginates() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(symmetric_key(&client).await);
    }
    created.sort();

    let first = client.list_keys().limit(2).send().await.unwrap();
    assert!(first.truncated());
    let first_ids: Vec<&str> = first.keys().iter().map(|key| key.key_id().unwrap()).collect();
    assert_eq!(first_ids, [created[0].as_str(), created[1].as_str()]);
    assert_eq!(
        first.keys()[0].key_arn(),
        Some(format!("arn:aws:kms:us-east-1:111122223333:key/{}", created[0]).as_str())
    );
    let second = client.list_keys().limit(2).marker(first.next_marker().unwrap()).send().await.unwrap();
    assert!(!second.truncated());
    assert!(second.next_marker().is_none());
    let second_ids: Vec<&str> = second.keys().iter().map(|key| key.key_id().unwrap()).collect();
    assert_eq!(second_ids, [created[2].as_str()]);

    let error = client.list_keys().limit(0).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
}

#[tokio::test]
async fn key_states_gate_operations() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = symmetric_key(&client).await;
    let encrypt = || client.encrypt().key_id(&key_id).plaintext(Blob::new(b"x".to_vec())).send();

    client.disable_key().key_id(&key_id).send().await.unwrap();
    let described = client.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(described.key_metadata().unwrap().key_state(), Some(&KeyState::Disabled));
    assert!(!described.key_metadata().unwrap().enabled());
    let (code, message) = error_parts(&encrypt().await.unwrap_err());
    assert_eq!(code, "DisabledException");
    assert!(message.contains("is disabled"), "{message}");

    client.enable_key().key_id(&key_id).send().await.unwrap();
    encrypt().await.unwrap();

    let error = client.schedule_key_deletion().key_id(&key_id).pending_window_in_days(5).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "ValidationException");
    assert!(message.contains("between 7 and 30"), "{message}");

    let scheduled = client.schedule_key_deletion().key_id(&key_id).pending_window_in_days(7).send().await.unwrap();
    assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(scheduled.pending_window_in_days(), Some(7));
    let deletion = scheduled.deletion_date().unwrap().secs();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((deletion - now - 7 * 86_400).abs() < 60, "deletion date {deletion}, now {now}");

    let (code, _) = error_parts(&encrypt().await.unwrap_err());
    assert_eq!(code, "KMSInvalidStateException");
    let error = client.enable_key().key_id(&key_id).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "KMSInvalidStateException");
    let error = client.schedule_key_deletion().key_id(&key_id).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "KMSInvalidStateException");

    client.cancel_key_deletion().key_id(&key_id).send().await.unwrap();
    let described = client.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(described.key_metadata().unwrap().key_state(), Some(&KeyState::Disabled));
    assert!(described.key_metadata().unwrap().deletion_date().is_none());
    let error = client.cancel_key_deletion().key_id(&key_id).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "KMSInvalidStateException");
}

#[tokio::test]
async fn aliases_lifecycle() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let first = symmetric_key(&client).await;
    let second = symmetric_key(&client).await;
    let agreement = client
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();

    client.create_alias().alias_name("alias/app").target_key_id(&first).send().await.unwrap();
    let error = client.create_alias().alias_name("alias/app").target_key_id(&second).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "AlreadyExistsException");
    let error = client.create_alias().alias_name("alias/aws/app").target_key_id(&first).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidAliasNameException");
    let error = client.create_alias().alias_name("app").target_key_id(&first).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
    let error = client.create_alias().alias_name("alias/x").target_key_id("alias/app").send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "NotFoundException");

    let listed = client.list_aliases().key_id(&first).send().await.unwrap();
    assert_eq!(listed.aliases().len(), 1);
    assert_eq!(listed.aliases()[0].alias_name(), Some("alias/app"));
    assert_eq!(listed.aliases()[0].target_key_id(), Some(first.as_str()));
    assert_eq!(listed.aliases()[0].alias_arn(), Some("arn:aws:kms:us-east-1:111122223333:alias/app"));

    client.update_alias().alias_name("alias/app").target_key_id(&second).send().await.unwrap();
    let described = client.describe_key().key_id("alias/app").send().await.unwrap();
    assert_eq!(described.key_metadata().unwrap().key_id(), second);
    let error = client.update_alias().alias_name("alias/app").target_key_id(&agreement).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "ValidationException");
    assert!(message.contains("same type and usage"), "{message}");

    client.delete_alias().alias_name("alias/app").send().await.unwrap();
    let error = client.delete_alias().alias_name("alias/app").send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "NotFoundException");
    assert!(client.list_aliases().send().await.unwrap().aliases().is_empty());
}

#[tokio::test]
async fn key_policies_get_put_and_validate() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = symmetric_key(&client).await;

    let policy = client.get_key_policy().key_id(&key_id).policy_name("default").send().await.unwrap();
    let document: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    assert_eq!(document["Statement"][0]["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    assert_eq!(document["Statement"][0]["Action"], "kms:*");

    let malformed = [
        r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringMaybe": {"kms:CallerAccount": "1"}}}]}"#,
        r#"{"Statement": "#,
        r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}]}"#,
    ];
    for text in malformed {
        let error =
            client.put_key_policy().key_id(&key_id).policy_name("default").policy(text).send().await.unwrap_err();
        assert_eq!(error_parts(&error).0, "MalformedPolicyDocumentException", "{text}");
        let error = client.create_key().policy(text).send().await.unwrap_err();
        assert_eq!(error_parts(&error).0, "MalformedPolicyDocumentException", "{text}");
    }

    // A policy that would lock the caller out needs the bypass flag.
    let lockout = r#"{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:Encrypt", "Resource": "*"}]}"#;
    let error = client.put_key_policy().key_id(&key_id).policy(lockout).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "MalformedPolicyDocumentException");
    assert!(message.contains("BypassPolicyLockoutSafetyCheck"), "{message}");
    client
        .put_key_policy()
        .key_id(&key_id)
        .policy(lockout)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .unwrap();
    client.encrypt().key_id(&key_id).plaintext(Blob::new(b"x".to_vec())).send().await.unwrap();
    let error = client.get_key_policy().key_id(&key_id).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("kms:GetKeyPolicy"), "{message}");
}

#[tokio::test]
async fn principals_and_caller_account() {
    let credentials = Credentials::from_json(
        r#"{"credentials": [
            {"access_key_id": "AKIAOWNER", "secret_access_key": "owner-secret"},
            {"access_key_id": "AKIAPARTNER", "secret_access_key": "partner-secret", "principal_arn": "arn:aws:iam::444455556666:role/partner"}]}"#,
    )
    .unwrap();
    let mut config = Config::ephemeral();
    config.credentials = credentials;
    let server = start(config).await;
    let owner = client_with(&server.endpoint(), "AKIAOWNER", "owner-secret", "us-east-1");
    let partner = client_with(&server.endpoint(), "AKIAPARTNER", "partner-secret", "us-east-1");

    let default_key = symmetric_key(&owner).await;
    let error = partner.describe_key().key_id(&default_key).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("arn:aws:iam::444455556666:role/partner"), "{message}");

    let shared = owner
        .create_key()
        .policy(
            r#"{"Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"},
                {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:role/partner"}, "Action": "kms:Encrypt", "Resource": "*",
                 "Condition": {"StringEquals": {"kms:CallerAccount": "444455556666"}}}]}"#,
        )
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{shared}");
    partner.encrypt().key_id(&arn).plaintext(Blob::new(b"x".to_vec())).send().await.unwrap();
    let error = partner.describe_key().key_id(&arn).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "AccessDeniedException");
}

#[tokio::test]
async fn symmetric_encrypt_decrypt_and_errors() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = symmetric_key(&client).await;
    let other = symmetric_key(&client).await;

    let encrypted = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"hello".to_vec()))
        .encryption_context("tenant", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(encrypted.encryption_algorithm(), Some(&EncryptionAlgorithmSpec::SymmetricDefault));
    let blob = encrypted.ciphertext_blob().unwrap().clone();

    let decrypted =
        client.decrypt().ciphertext_blob(blob.clone()).encryption_context("tenant", "a").send().await.unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"hello");
    assert_eq!(decrypted.key_id(), Some(format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}").as_str()));

    let error =
        client.decrypt().ciphertext_blob(blob.clone()).encryption_context("tenant", "b").send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidCiphertextException");
    let mut tampered = blob.as_ref().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let error = client
        .decrypt()
        .ciphertext_blob(Blob::new(tampered))
        .encryption_context("tenant", "a")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidCiphertextException");
    let error = client.decrypt().ciphertext_blob(Blob::new(b"garbage".to_vec())).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidCiphertextException");
    let error = client
        .decrypt()
        .ciphertext_blob(blob)
        .key_id(&other)
        .encryption_context("tenant", "a")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "IncorrectKeyException");

    let error = client.encrypt().key_id(&key_id).plaintext(Blob::new(vec![0; 4097])).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
    let error = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidKeyUsageException");
}

#[tokio::test]
async fn rsa_keys_encrypt_and_decrypt() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());

    for (spec, bits) in [(KeySpec::Rsa2048, 2048), (KeySpec::Rsa3072, 3072), (KeySpec::Rsa4096, 4096)] {
        let key_id = client
            .create_key()
            .key_spec(spec.clone())
            .key_usage(KeyUsageType::EncryptDecrypt)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_owned();
        let public = client.get_public_key().key_id(&key_id).send().await.unwrap();
        assert_eq!(
            public.encryption_algorithms(),
            [EncryptionAlgorithmSpec::RsaesOaepSha1, EncryptionAlgorithmSpec::RsaesOaepSha256]
        );
        assert!(public.key_agreement_algorithms().is_empty());
        let key = PublicEncryptingKey::from_der(public.public_key().unwrap().as_ref()).unwrap();
        assert_eq!(key.key_size_bits(), bits);

        // Encrypted here with the public key, decrypted by kms-local.
        let oaep = OaepPublicEncryptingKey::new(key).unwrap();
        let mut ciphertext = vec![0; oaep.ciphertext_size()];
        let ciphertext = oaep.encrypt(&OAEP_SHA256_MGF1SHA256, b"for the key", &mut ciphertext, None).unwrap().to_vec();
        let decrypted = client
            .decrypt()
            .key_id(&key_id)
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .send()
            .await
            .unwrap();
        assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"for the key");

        let error = client
            .decrypt()
            .key_id(&key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_parts(&error).0, "InvalidCiphertextException", "{spec:?}");

        let encrypted = client
            .encrypt()
            .key_id(&key_id)
            .plaintext(Blob::new(b"round trip".to_vec()))
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
            .send()
            .await
            .unwrap();
        let decrypted = client
            .decrypt()
            .key_id(&key_id)
            .ciphertext_blob(encrypted.ciphertext_blob().unwrap().clone())
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
            .send()
            .await
            .unwrap();
        assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"round trip");
    }

    let symmetric = symmetric_key(&client).await;
    let error = client.get_public_key().key_id(&symmetric).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "UnsupportedOperationException");
}

#[tokio::test]
async fn data_keys_and_random() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = symmetric_key(&client).await;

    let generated = client.generate_data_key().key_id(&key_id).number_of_bytes(24).send().await.unwrap();
    assert_eq!(generated.plaintext().unwrap().as_ref().len(), 24);
    let decrypted =
        client.decrypt().ciphertext_blob(generated.ciphertext_blob().unwrap().clone()).send().await.unwrap();
    assert_eq!(decrypted.plaintext(), generated.plaintext());
    let aes128 = client.generate_data_key().key_id(&key_id).key_spec(DataKeySpec::Aes128).send().await.unwrap();
    assert_eq!(aes128.plaintext().unwrap().as_ref().len(), 16);

    let error = client
        .generate_data_key()
        .key_id(&key_id)
        .number_of_bytes(16)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
    let error = client.generate_data_key().key_id(&key_id).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
    let error = client.generate_data_key().key_id(&key_id).number_of_bytes(1025).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");

    let rsa = client
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let error = client.generate_data_key().key_id(&rsa).number_of_bytes(16).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "InvalidKeyUsageException");

    let pair =
        client.generate_data_key_pair().key_id(&key_id).key_pair_spec(DataKeyPairSpec::Rsa2048).send().await.unwrap();
    let private =
        aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(pair.private_key_plaintext().unwrap().as_ref()).unwrap();
    let public = private.public_key().as_der().unwrap();
    assert_eq!(public.as_ref(), pair.public_key().unwrap().as_ref());
    assert_eq!(pair.key_pair_spec(), Some(&DataKeyPairSpec::Rsa2048));
    let unwrapped =
        client.decrypt().ciphertext_blob(pair.private_key_ciphertext_blob().unwrap().clone()).send().await.unwrap();
    assert_eq!(unwrapped.plaintext(), pair.private_key_plaintext());
    let error = client
        .generate_data_key_pair()
        .key_id(&key_id)
        .key_pair_spec(DataKeyPairSpec::from("RSA_1024"))
        .send()
        .await
        .unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "ValidationException");
    assert!(message.contains("\"RSA_1024\""), "{message}");

    let random = client.generate_random().number_of_bytes(1024).send().await.unwrap();
    assert_eq!(random.plaintext().unwrap().as_ref().len(), 1024);
    for bad in [0, 1025] {
        let error = client.generate_random().number_of_bytes(bad).send().await.unwrap_err();
        assert_eq!(error_parts(&error).0, "ValidationException", "{bad}");
    }
}

#[tokio::test]
async fn dry_run_and_grant_tokens() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = symmetric_key(&client).await;
    let agreement = client
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let peer = aws_lc_rs::agreement::PrivateKey::generate(&aws_lc_rs::agreement::ECDH_P256).unwrap();
    let peer_spki = peer.compute_public_key().unwrap();
    let peer_spki: aws_lc_rs::encoding::PublicKeyX509Der = peer_spki.as_der().unwrap();
    let blob = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    let mut codes = Vec::new();
    let encrypt = client.encrypt().key_id(&key_id).plaintext(Blob::new(b"x".to_vec())).dry_run(true).send().await;
    codes.push(("Encrypt", error_parts(&encrypt.unwrap_err())));
    let decrypt = client.decrypt().ciphertext_blob(blob).dry_run(true).send().await;
    codes.push(("Decrypt", error_parts(&decrypt.unwrap_err())));
    let data_key = client.generate_data_key().key_id(&key_id).number_of_bytes(8).dry_run(true).send().await;
    codes.push(("GenerateDataKey", error_parts(&data_key.unwrap_err())));
    let pair = client
        .generate_data_key_pair()
        .key_id(&key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .dry_run(true)
        .send()
        .await;
    codes.push(("GenerateDataKeyPair", error_parts(&pair.unwrap_err())));
    let derive = client
        .derive_shared_secret()
        .key_id(&agreement)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_spki.as_ref()))
        .dry_run(true)
        .send()
        .await;
    codes.push(("DeriveSharedSecret", error_parts(&derive.unwrap_err())));
    for (operation, (code, message)) in codes {
        assert_eq!(code, "DryRunOperationException", "{operation}");
        assert!(message.contains("would have succeeded"), "{operation}: {message}");
    }

    // A dry run reports the error the real call would get.
    client.disable_key().key_id(&key_id).send().await.unwrap();
    let error =
        client.encrypt().key_id(&key_id).plaintext(Blob::new(b"x".to_vec())).dry_run(true).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "DisabledException");
    let error = client
        .derive_shared_secret()
        .key_id(&agreement)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(b"bad".to_vec()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
    client.enable_key().key_id(&key_id).send().await.unwrap();

    let one_token = client.describe_key().key_id(&key_id).grant_tokens("token-1").send().await;
    assert!(one_token.is_ok());
    let mut too_many = client.describe_key().key_id(&key_id);
    for index in 0..11 {
        too_many = too_many.grant_tokens(format!("token-{index}"));
    }
    let (code, message) = error_parts(&too_many.send().await.unwrap_err());
    assert_eq!(code, "ValidationException");
    assert!(message.contains("at most 10"), "{message}");
}

#[tokio::test]
async fn unknown_enum_values_are_validation_errors() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let error = client.create_key().key_spec(KeySpec::from("ECC_NIST_P999")).send().await.unwrap_err();
    let (code, message) = error_parts(&error);
    assert_eq!(code, "ValidationException");
    assert!(message.contains("\"ECC_NIST_P999\" at 'keySpec'"), "{message}");
    let error = client.create_key().key_usage(KeyUsageType::from("DECRYPT_ONLY")).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
    let key_id = symmetric_key(&client).await;
    let error = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .encryption_algorithm(EncryptionAlgorithmSpec::from("AES_GCM"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_parts(&error).0, "ValidationException");
}

#[tokio::test]
async fn key_past_deletion_date_is_gone() {
    let server = start(Config::ephemeral()).await;
    let client = client(&server.endpoint());
    let key_id = symmetric_key(&client).await;
    client.create_alias().alias_name("alias/doomed").target_key_id(&key_id).send().await.unwrap();
    client.schedule_key_deletion().key_id(&key_id).pending_window_in_days(7).send().await.unwrap();

    // Move the deletion date into the past instead of waiting seven days.
    let store = server.kms().store();
    store
        .update_key(&key_id, |key| {
            key.deletion_date_ms = Some(1);
            Ok(())
        })
        .unwrap();

    let error = client.describe_key().key_id(&key_id).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "NotFoundException");
    assert!(store.key(&key_id).unwrap().is_none());
    assert!(store.alias("alias/doomed").unwrap().is_none());
    assert!(client.list_keys().send().await.unwrap().keys().is_empty());
}
