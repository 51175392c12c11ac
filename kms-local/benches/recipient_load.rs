//! Load benchmark: DeriveSharedSecret with a Recipient through the aws-sdk-kms
//! client against an in-process kms-local on 127.0.0.1, at concurrency 1, 16
//! and 64, next to the cryptographic floor of one such request measured in
//! the same run (attestation check, ECDH, RSA-OAEP encryption, the whole CMS
//! envelope).
//!
//! Run with `cargo bench -p kms-local --bench recipient_load`. Set
//! `KMS_LOCAL_BENCH_REQUESTS` to change the number of requests per
//! concurrency level (default 2000). Under `cargo test` it makes a short
//! smoke run instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyAgreementAlgorithmSpec, KeyEncryptionMechanism, KeySpec, KeyUsageType, RecipientInfo};
use common::{RecipientKey, TestCa, client, pcrs, start};
use recipient_common::attestation::{TimeMode, Verifier, VerifyOptions};

/// Runs `operation` `iterations` times and returns the mean time per call.
fn mean_time(iterations: u32, mut operation: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        operation();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        operation();
    }
    started.elapsed() / iterations
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this file
    // without it, and then a short smoke run checks that it still works.
    let measuring = std::env::args().any(|argument| argument == "--bench");
    let default_requests = if measuring { 2000 } else { 128 };
    let requests: usize =
        std::env::var("KMS_LOCAL_BENCH_REQUESTS").ok().and_then(|value| value.parse().ok()).unwrap_or(default_requests);
    let floor_iterations = if measuring { 2000 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(requests, floor_iterations));
}

async fn run(requests: usize, floor_iterations: u32) {
    let ca = TestCa::new();
    let enclave = RecipientKey::new();
    let document = ca.document(&pcrs(1), Some(&enclave.spki));
    let peer = agreement::PrivateKey::generate(&agreement::ECDH_P384).unwrap();
    let peer_public: PublicKeyX509Der = peer.compute_public_key().unwrap().as_der().unwrap();
    let peer_spki = peer_public.as_ref().to_vec();

    // The cryptographic floor of one request, single-threaded.
    let mut verifier = Verifier::with_aws_root();
    verifier.add_root_pem(ca.root_pem.as_bytes()).unwrap();
    let options = VerifyOptions { time: TimeMode::Live { max_age: Duration::from_secs(300) }, allow_debug: true };
    let attestation = mean_time(floor_iterations / 4, || {
        verifier.verify(&document, &options).unwrap();
    });
    let kms_key = agreement::PrivateKey::generate(&agreement::ECDH_P384).unwrap();
    let peer_point = agreement::PrivateKey::generate(&agreement::ECDH_P384).unwrap().compute_public_key().unwrap();
    let ecdh = mean_time(floor_iterations, || {
        agreement::agree(
            &kms_key,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P384, peer_point.as_ref()),
            (),
            |z| Ok(z.len()),
        )
        .unwrap();
    });
    let oaep = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&enclave.spki).unwrap()).unwrap();
    let mut output = vec![0_u8; oaep.ciphertext_size()];
    let rsa_oaep = mean_time(floor_iterations, || {
        oaep.encrypt(&OAEP_SHA256_MGF1SHA256, &[7; 32], &mut output, None).unwrap();
    });
    let envelope = mean_time(floor_iterations, || {
        recipient_common::cms::build(&[7; 48], &enclave.spki).unwrap();
    });

    println!("cryptographic floor (mean per call, one thread):");
    println!("  attestation check (COSE ES384 + chain)  {:8.3} ms", millis(attestation));
    println!("  ECDH P-384                              {:8.3} ms", millis(ecdh));
    println!("  RSA-2048 OAEP-SHA-256 encryption        {:8.3} ms", millis(rsa_oaep));
    println!("  CMS envelope (OAEP + AES-256-CBC + BER) {:8.3} ms", millis(envelope));
    println!("  sum (attestation + ECDH + envelope)     {:8.3} ms", millis(attestation + ecdh + envelope));

    let server = start(ca.config()).await;
    let client = client(&server.endpoint());
    let key_id = client
        .create_key()
        .key_spec(KeySpec::EccNistP384)
        .key_usage(KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let recipient = RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document.clone()))
        .build();

    // Check once that the result opens to the expected secret.
    let plain = client
        .derive_shared_secret()
        .key_id(&key_id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_spki.clone()))
        .send()
        .await
        .unwrap();
    let opened = client
        .derive_shared_secret()
        .key_id(&key_id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_spki.clone()))
        .recipient(recipient.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        enclave.open(opened.ciphertext_for_recipient().unwrap().as_ref()),
        plain.shared_secret().unwrap().as_ref()
    );

    println!("DeriveSharedSecret with Recipient, aws-sdk-kms client, {requests} requests per level:");
    println!("  concurrency  throughput (req/s)  p50 (ms)  p99 (ms)");
    for concurrency in [1_usize, 16, 64] {
        let shared = Arc::new((client.clone(), key_id.clone(), peer_spki.clone(), recipient.clone()));
        let per_task = requests / concurrency;
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let (client, key_id, peer_spki, recipient) = &*shared;
                    let mut latencies = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let sent = Instant::now();
                        let output = client
                            .derive_shared_secret()
                            .key_id(key_id)
                            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
                            .public_key(Blob::new(peer_spki.clone()))
                            .recipient(recipient.clone())
                            .send()
                            .await
                            .unwrap();
                        assert!(output.ciphertext_for_recipient().is_some());
                        latencies.push(sent.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(requests);
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        println!(
            "  {concurrency:>11}  {:>18.0}  {:>8.2}  {:>8.2}",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            millis(percentile(&latencies, 0.50)),
            millis(percentile(&latencies, 0.99)),
        );
    }
    server.shutdown().await.unwrap();
}
