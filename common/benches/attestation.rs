//! Attestation verification cost, as a ratio to one raw P-384 ECDSA
//! verification measured in the same run.
//!
//! Run with `cargo bench -p recipient-common --bench attestation`.
//!
//! - `ecdsa_p384_verify`: one ES384 verification of the COSE Sig_structure
//!   of the real document, with an already parsed key: the floor for any
//!   verification of that document.
//! - `verify_cold`: the full verification with an empty certificate cache
//!   (five certificate signatures plus the COSE signature, and X.509 parsing).
//! - `verify_warm`: the same document once its certificates are cached.
//! - `verify_warm_other_document`: a different document from the same
//!   enclave (same chain and leaf, another nonce) after the first one warmed
//!   the cache. This is the common case for a service that verifies many documents.
//! - `parse`: decoding without verification.
//!
//! Before the criterion runs, `paired` alternates each verification with the
//! raw ECDSA verification in one loop and prints the ratio of their total
//! times, so that both see the same machine load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::ParsedPublicKey;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use criterion::{Criterion, criterion_group, criterion_main};
use recipient_common::attestation::{TimeMode, Verifier, VerifyOptions, parse, sign};

const DOCUMENT: &[u8] = include_bytes!("../../../shared/vectors/attestation-2024-09-07-fields-1024.cbor");

/// Encodes the Sig_structure `["Signature1", protected, h'', payload]`.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::new();
    ciborium::ser::into_writer(
        &ciborium::value::Value::Array(vec![
            ciborium::value::Value::Text("Signature1".to_owned()),
            ciborium::value::Value::Bytes(protected.to_vec()),
            ciborium::value::Value::Bytes(Vec::new()),
            ciborium::value::Value::Bytes(payload.to_vec()),
        ]),
        &mut value,
    )
    .unwrap();
    value
}

fn cose_items(document: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let value: ciborium::value::Value = ciborium::de::from_reader(document).unwrap();
    let items = value.into_array().unwrap();
    let protected = items[0].as_bytes().unwrap().clone();
    let payload = items[2].as_bytes().unwrap().clone();
    let signature = items[3].as_bytes().unwrap().clone();
    (protected, payload, signature)
}

/// Runs `baseline` and `measured` alternately `rounds` times and prints the
/// ratio of the measured total to the baseline total.
fn paired(label: &str, rounds: u32, mut baseline: impl FnMut(), mut measured: impl FnMut()) {
    let mut baseline_total = Duration::ZERO;
    let mut measured_total = Duration::ZERO;
    for _ in 0..rounds {
        let start = Instant::now();
        baseline();
        baseline_total += start.elapsed();
        let start = Instant::now();
        measured();
        measured_total += start.elapsed();
    }
    println!(
        "paired {label}: {:.2} x ecdsa_p384_verify ({rounds} rounds, {:?} vs {:?} per call)",
        measured_total.as_secs_f64() / baseline_total.as_secs_f64(),
        measured_total / rounds,
        baseline_total / rounds,
    );
}

fn bench_attestation(c: &mut Criterion) {
    let options = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: false };

    // Raw verification: a fresh key signs the same Sig_structure, so the
    // message length matches the real document's.
    let (protected, payload, _) = cose_items(DOCUMENT);
    let message = sig_structure(&protected, &payload);
    let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
    let signature = key.sign(&aws_lc_rs::rand::SystemRandom::new(), &message).unwrap();
    let public_key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key.public_key().as_ref()).unwrap();
    c.bench_function("ecdsa_p384_verify", |b| {
        b.iter(|| public_key.verify_sig(black_box(&message), black_box(signature.as_ref())).unwrap())
    });

    c.bench_function("parse", |b| b.iter(|| parse(black_box(DOCUMENT)).unwrap()));

    let verifier = Verifier::with_aws_root();
    c.bench_function("verify_cold", |b| {
        b.iter(|| {
            verifier.clear_cache();
            verifier.verify(black_box(DOCUMENT), &options).unwrap()
        })
    });

    verifier.verify(DOCUMENT, &options).unwrap();
    c.bench_function("verify_warm", |b| b.iter(|| verifier.verify(black_box(DOCUMENT), &options).unwrap()));

    // A second document of the same enclave: same chain and leaf, another
    // nonce. The real leaf's private key is not available, so both documents
    // come from a self-made chain of the same shape.
    let chain = SelfMadeChain::new();
    let mut first = parse(DOCUMENT).unwrap();
    first.cabundle = chain.cabundle.clone();
    first.certificate = chain.leaf.clone();
    first.timestamp = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp() * 1000).unwrap();
    let mut second = first.clone();
    second.nonce = Some(vec![0x5a; 1024]);
    let first = sign(&first, &chain.leaf_key).unwrap();
    let second = sign(&second, &chain.leaf_key).unwrap();
    let mut verifier = Verifier::new();
    verifier.add_root_pem(chain.root_pem.as_bytes()).unwrap();
    verifier.verify(&first, &options).unwrap();
    c.bench_function("verify_warm_other_document", |b| {
        b.iter(|| verifier.verify(black_box(&second), &options).unwrap())
    });

    let raw = || public_key.verify_sig(black_box(&message), black_box(signature.as_ref())).unwrap();
    let aws = Verifier::with_aws_root();
    paired("verify_cold", 300, raw, || {
        aws.clear_cache();
        aws.verify(black_box(DOCUMENT), &options).unwrap();
    });
    aws.verify(DOCUMENT, &options).unwrap();
    paired("verify_warm", 2000, raw, || {
        aws.verify(black_box(DOCUMENT), &options).unwrap();
    });
    paired("verify_warm_other_document", 2000, raw, || {
        verifier.verify(black_box(&second), &options).unwrap();
    });
}

/// root → three intermediates → leaf, all P-384, like the real chain.
struct SelfMadeChain {
    root_pem: String,
    cabundle: Vec<Vec<u8>>,
    leaf: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

impl SelfMadeChain {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let params = |name: &str, is_ca: IsCa, usages: Vec<KeyUsagePurpose>| {
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = is_ca;
            params.key_usages = usages;
            params.not_before = time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(3600);
            params.not_after = time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(3 * 3600);
            params
        };
        let ca_usages = vec![KeyUsagePurpose::KeyCertSign];
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let root_params = params("root", IsCa::Ca(BasicConstraints::Unconstrained), ca_usages.clone());
        let root = root_params.self_signed(&root_key).unwrap();
        let mut cabundle = vec![root.der().to_vec()];
        let mut issuer = Issuer::new(root_params, root_key);
        for (name, path_len) in [("regional", 2), ("zonal", 1), ("instance", 0)] {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
            let params = params(name, IsCa::Ca(BasicConstraints::Constrained(path_len)), ca_usages.clone());
            cabundle.push(params.signed_by(&key, &issuer).unwrap().der().to_vec());
            issuer = Issuer::new(params, key);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let leaf_params = params("leaf", IsCa::ExplicitNoCa, vec![KeyUsagePurpose::DigitalSignature]);
        let leaf = leaf_params.signed_by(&key, &issuer).unwrap().der().to_vec();
        let leaf_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &key.serialize_der()).unwrap();
        Self { root_pem: root.pem(), cabundle, leaf, leaf_key }
    }
}

criterion_group!(benches, bench_attestation);
criterion_main!(benches);
