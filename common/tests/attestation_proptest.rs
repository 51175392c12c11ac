//! Truncated and mutated attestation documents never panic the parser or
//! the verifier; each returns a value or an error, the same whether the
//! document is verified at once or parsed first.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use recipient_common::attestation::{ParsedDocument, TimeMode, Verifier, VerifyOptions, parse};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");
const FILES: [&str; 4] = [
    "attestation-2022-10-13-signed-eif.cbor",
    "attestation-2022-10-12-debug.cbor",
    "attestation-2023-09-18-debug-userdata-spki.cbor",
    "attestation-2024-09-07-fields-1024.cbor",
];

fn documents() -> Vec<Vec<u8>> {
    FILES.iter().map(|file| std::fs::read(format!("{VECTORS}/{file}")).unwrap()).collect()
}

fn check(verifier: &Verifier, bytes: &[u8]) {
    let _ = parse(bytes);
    let options = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: true };
    let whole = verifier.verify(bytes, &options).map(|verified| verified.into_document()).map_err(|e| e.to_string());
    let _ = verifier.verify(bytes, &VerifyOptions::default());

    // Parsing first, then verifying the parsed document, gives the same result.
    let split = ParsedDocument::parse(bytes).map_err(|e| e.to_string()).and_then(|parsed| {
        verifier.verify_parsed(parsed, &options).map(|verified| verified.into_document()).map_err(|e| e.to_string())
    });
    assert_eq!(whole, split);
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip { at: usize, mask: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Flip { at, mask } => {
            if let Some(byte) = bytes.get_mut(at % len) {
                *byte ^= mask;
            }
        }
        Mutation::Insert { at, bytes: inserted } => {
            let at = (at % len).min(bytes.len());
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Remove { at, len: count } => {
            let start = (at % len).min(bytes.len());
            let end = (start + count).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Overwrite { at, bytes: new } => {
            let start = at % len;
            for (offset, byte) in new.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(start + offset) {
                    *slot = *byte;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_documents_never_panic(
        which in 0..FILES.len(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let verifier = Verifier::with_aws_root();
        let mut bytes = documents().swap_remove(which);
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        check(&verifier, &bytes);
    }

    #[test]
    fn truncated_documents_rejected(which in 0..FILES.len(), cut in any::<usize>()) {
        let verifier = Verifier::with_aws_root();
        let mut bytes = documents().swap_remove(which);
        let cut = cut % bytes.len();
        bytes.truncate(cut);
        prop_assert!(parse(&bytes).is_err());
        let options = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: true };
        prop_assert!(verifier.verify(&bytes, &options).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&Verifier::with_aws_root(), &bytes);
    }

    #[test]
    fn random_cose_prefix_never_panics(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        // Start like a real document so the random bytes reach the payload parser.
        let mut bytes = vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0];
        bytes.extend(tail);
        check(&Verifier::with_aws_root(), &bytes);
    }
}
