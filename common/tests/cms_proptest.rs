//! Property tests: the CMS reader and decryptor return an error, never a
//! panic, for mutated and truncated envelopes and for arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use proptest::prelude::*;
use recipient_common::cms;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

fn key() -> &'static PrivateDecryptingKey {
    static KEY: OnceLock<PrivateDecryptingKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap())
}

/// Valid envelopes to mutate: the real KMS files and two made by `build`
/// for [`key`], one with a single content chunk and one with five.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let spki = key().public_key().as_der().unwrap().as_ref().to_vec();
        let mut seeds: Vec<Vec<u8>> = (1..=3)
            .map(|number| std::fs::read(format!("{VECTORS}/cms-kms-ciphertext-for-recipient-{number}.ber")).unwrap())
            .collect();
        seeds.push(
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/cms-kms-ciphertext-for-recipient-4.ber"))
                .unwrap(),
        );
        seeds.push(cms::build(b"proptest plaintext", &spki).unwrap());
        seeds.push(cms::build(&[7; 4096], &spki).unwrap());
        seeds
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replaces the byte at `position` (modulo the length) with `value`.
    Replace { position: usize, value: u8 },
    /// Inserts `bytes` at `position`.
    Insert { position: usize, bytes: Vec<u8> },
    /// Removes up to `len` bytes from `position`.
    Remove { position: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(position, value)| Mutation::Replace { position, value }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(position, bytes)| Mutation::Insert { position, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(position, len)| Mutation::Remove { position, len }),
    ]
}

fn apply(envelope: &mut Vec<u8>, mutation: &Mutation) {
    let len = envelope.len().max(1);
    match mutation {
        Mutation::Replace { position, value } => {
            if let Some(byte) = envelope.get_mut(position % len) {
                *byte = *value;
            }
        }
        Mutation::Insert { position, bytes } => {
            let at = position % (envelope.len() + 1);
            envelope.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { position, len: count } => {
            let start = position % len;
            let end = (start + count).min(envelope.len());
            if start < end {
                envelope.drain(start..end);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_envelopes_never_panic(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut envelope = seed.get(seeds()).clone();
        for mutation in &mutations {
            apply(&mut envelope, mutation);
        }
        let _ = cms::parse(&envelope);
        let _ = cms::decrypt(&envelope, key());
    }

    #[test]
    fn truncated_envelopes_are_rejected(seed in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let envelope = seed.get(seeds());
        let len = cut.index(envelope.len());
        prop_assert!(cms::parse(&envelope[..len]).is_err(), "prefix of {} bytes parsed", len);
        prop_assert!(cms::decrypt(&envelope[..len], key()).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = cms::parse(&bytes);
    }

    #[test]
    fn indefinite_nesting_never_panics(depth in 0usize..200, tail in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = [0x30, 0x80].repeat(depth);
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(&[0x00, 0x00].repeat(depth));
        let _ = cms::parse(&bytes);
    }
}

#[test]
fn build_output_still_decrypts() {
    let envelope = &seeds()[4];
    assert_eq!(cms::decrypt(envelope, key()).unwrap().as_slice(), b"proptest plaintext");
}
