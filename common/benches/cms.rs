//! CMS envelope benchmarks.
//!
//! - `cms_decrypt`: `cms::decrypt` of a 32-byte and a 4096-byte envelope
//!   (RSA-2048) against the raw cost of the same RSA-OAEP and AES-256-CBC
//!   steps without parsing, run alternately so that both see the same load,
//!   and `cms::parse` alone.
//! - `rsa_oaep`: RSA-OAEP-SHA-256 with aws-lc-rs against the `rsa` crate, the
//!   measurement behind the choice of aws-lc-rs.
//!
//! Run with `cargo bench -p recipient-common --bench cms`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::cipher::{AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use recipient_common::cms::{self, ContentEncryption};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;

fn spki(key: &PrivateDecryptingKey) -> Vec<u8> {
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

/// Does the RSA-OAEP and AES-CBC work of `cms::decrypt` without the
/// parsing: unwraps the content key, then decrypts and unpads the content.
fn raw_decrypt(key: &PrivateDecryptingKey, encrypted_key: &[u8], iv: [u8; 16], encrypted_content: &[u8]) -> Vec<u8> {
    let oaep = OaepPrivateDecryptingKey::new(key.clone()).unwrap();
    let mut content_key = vec![0u8; key.key_size_bytes()];
    let content_key = oaep.decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut content_key, None).unwrap();
    let cipher = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, content_key).unwrap()).unwrap();
    let mut buffer = encrypted_content.to_vec();
    let len = cipher.decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv))).unwrap().len();
    buffer.truncate(len);
    buffer
}

/// Runs `first` and `second` alternately `iterations` times each, switching
/// which goes first, and returns the time spent in each. Both see the same
/// machine load, so their ratio stays stable on a busy machine.
fn interleaved<A, B>(iterations: u64, first: &impl Fn() -> A, second: &impl Fn() -> B) -> (Duration, Duration) {
    let mut first_time = Duration::ZERO;
    let mut second_time = Duration::ZERO;
    for iteration in 0..iterations {
        if iteration % 2 == 0 {
            first_time += time(first);
            second_time += time(second);
        } else {
            second_time += time(second);
            first_time += time(first);
        }
    }
    (first_time, second_time)
}

fn time<T>(run: &impl Fn() -> T) -> Duration {
    let start = Instant::now();
    black_box(run());
    start.elapsed()
}

fn bench_decrypt(c: &mut Criterion) {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = spki(&key);
    let mut group = c.benchmark_group("cms_decrypt");
    group.sample_size(100).measurement_time(Duration::from_secs(5));

    for len in [32usize, 4096] {
        let ber = cms::build(&vec![0xa5; len], &spki).unwrap();
        let envelope = cms::parse(&ber).unwrap();
        let ContentEncryption::Aes256Cbc { iv } = envelope.content_encryption else {
            unreachable!("build writes AES-256-CBC");
        };
        assert_eq!(raw_decrypt(&key, &envelope.recipient.encrypted_key, iv, &envelope.encrypted_content).len(), len);

        let envelope_decrypt = || cms::decrypt(black_box(&ber), &key).unwrap();
        let raw = || {
            raw_decrypt(&key, black_box(&envelope.recipient.encrypted_key), iv, black_box(&envelope.encrypted_content))
        };
        // Both benchmarks run both operations; the totals over both runs
        // give the parsing overhead from paired measurements.
        let totals = Cell::new((Duration::ZERO, Duration::ZERO));
        let paired = |iterations| {
            let (envelope_time, raw_time) = interleaved(iterations, &envelope_decrypt, &raw);
            let (envelope_total, raw_total) = totals.get();
            totals.set((envelope_total + envelope_time, raw_total + raw_time));
            (envelope_time, raw_time)
        };
        group.bench_function(BenchmarkId::new("envelope", len), |b| b.iter_custom(|iterations| paired(iterations).0));
        group.bench_function(BenchmarkId::new("raw_oaep_cbc", len), |b| {
            b.iter_custom(|iterations| paired(iterations).1)
        });
        let (envelope_total, raw_total) = totals.get();
        println!(
            "cms_decrypt/{len}: envelope time / raw time = {:.4} (paired, {:.1} s measured)",
            envelope_total.as_secs_f64() / raw_total.as_secs_f64(),
            (envelope_total + raw_total).as_secs_f64()
        );
        group.bench_with_input(BenchmarkId::new("parse", len), &ber, |b, ber| {
            b.iter(|| cms::parse(black_box(ber)).unwrap())
        });
    }
    group.finish();
}

fn bench_rsa_implementations(c: &mut Criterion) {
    let mut group = c.benchmark_group("rsa_oaep");
    group.sample_size(30).measurement_time(Duration::from_secs(5));

    for (size, bits) in [(KeySize::Rsa2048, 2048), (KeySize::Rsa4096, 4096)] {
        let key = PrivateDecryptingKey::generate(size).unwrap();
        let spki = spki(&key);
        let rsa_private = rsa::PrivateKey::from_pkcs8_der(key.as_der().unwrap().as_ref()).unwrap();
        let rsa_public = rsa::PublicKey::from_public_key_der(&spki).unwrap();
        let aws_public = OaepPublicEncryptingKey::new(key.public_key()).unwrap();
        let aws_private = OaepPrivateDecryptingKey::new(key.clone()).unwrap();
        let content_key = [0x42u8; 32];
        let encrypted_key = rsa_public.oaep_encrypt::<Sha256>(&content_key).unwrap();

        group.bench_function(BenchmarkId::new("decrypt_aws_lc_rs", bits), |b| {
            let mut output = vec![0u8; key.key_size_bytes()];
            b.iter(|| {
                aws_private
                    .decrypt(&OAEP_SHA256_MGF1SHA256, black_box(&encrypted_key), &mut output, None)
                    .unwrap()
                    .len()
            })
        });
        group.bench_function(BenchmarkId::new("decrypt_rsa", bits), |b| {
            b.iter(|| rsa_private.oaep_decrypt::<Sha256>(black_box(&encrypted_key)).unwrap())
        });
        group.bench_function(BenchmarkId::new("encrypt_aws_lc_rs", bits), |b| {
            let mut output = vec![0u8; aws_public.ciphertext_size()];
            b.iter(|| {
                aws_public.encrypt(&OAEP_SHA256_MGF1SHA256, black_box(&content_key), &mut output, None).unwrap().len()
            })
        });
        group.bench_function(BenchmarkId::new("encrypt_rsa", bits), |b| {
            b.iter(|| rsa_public.oaep_encrypt::<Sha256>(black_box(&content_key)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decrypt, bench_rsa_implementations);
criterion_main!(benches);
