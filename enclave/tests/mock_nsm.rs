//! The mock NSM against the real verifier: request semantics, limits, the
//! document format, and the CA store on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aws_lc_rs::digest::{SHA384, digest};
use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use ciborium::value::Value;
use enclave_agent::nsm::{
    self, MockNsm, Nsm, NsmError, NsmErrorCode, attest, describe_nsm, describe_pcr, extend_pcr, get_random, init_ca,
    lock_pcr, lock_pcrs,
};
use recipient_common::attestation::{AttestationError, TimeMode, Verifier, VerifyOptions, parse};
use serde_bytes::ByteBuf;

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init_ca(&dir.path().join("ca")).unwrap();
    dir
}

fn ca(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("ca")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn mock_verifier(dir: &Path) -> Verifier {
    let mut verifier = Verifier::new();
    verifier.add_root_pem(&std::fs::read(dir.join("root.pem")).unwrap()).unwrap();
    verifier
}

fn rejected(err: &NsmError) -> NsmErrorCode {
    match err {
        NsmError::Rejected { code, .. } => *code,
        other => panic!("expected an NSM error code, found {other}"),
    }
}

#[test]
fn init_ca_sets_private_modes() {
    let dir = store();
    let ca = ca(&dir);
    assert_eq!(mode(&ca), 0o700);
    for key in ["root.key", "intermediate-1.key", "intermediate-2.key", "intermediate-3.key", "leaf.key"] {
        assert_eq!(mode(&ca.join(key)), 0o600, "{key}");
    }
    assert!(ca.join("root.pem").is_file());
}

#[test]
fn init_ca_twice_keeps_store() {
    let dir = store();
    let ca = ca(&dir);
    let root = std::fs::read(ca.join("root.pem")).unwrap();
    let key = std::fs::read(ca.join("root.key")).unwrap();
    let err = init_ca(&ca).unwrap_err();
    assert!(matches!(err, NsmError::AlreadyInitialised { .. }), "{err}");
    assert_eq!(std::fs::read(ca.join("root.pem")).unwrap(), root);
    assert_eq!(std::fs::read(ca.join("root.key")).unwrap(), key);
}

#[test]
fn init_ca_rejects_open_directory() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = init_ca(&ca).unwrap_err();
    assert!(matches!(err, NsmError::UnsafePermissions { mode: 0o755, fix: 0o700, .. }), "{err}");
    assert!(!ca.join("root.pem").exists());
}

#[test]
fn open_rejects_group_readable_directory() {
    let dir = store();
    let ca = ca(&dir);
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o750)).unwrap();
    let err = MockNsm::open(&ca, None).unwrap_err();
    assert!(matches!(err, NsmError::UnsafePermissions { mode: 0o750, .. }), "{err}");
    assert!(err.to_string().contains("chmod 700"), "{err}");
}

#[test]
fn open_rejects_readable_key() {
    let dir = store();
    let ca = ca(&dir);
    let key = ca.join("intermediate-3.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = MockNsm::open(&ca, None).unwrap_err();
    assert!(
        matches!(err, NsmError::UnsafePermissions { ref path, mode: 0o644, fix: 0o600, .. } if *path == key),
        "{err}"
    );
}

#[test]
fn open_rejects_symlinked_key() {
    let dir = store();
    let ca = ca(&dir);
    let key = ca.join("intermediate-3.key");
    let moved = dir.path().join("elsewhere.key");
    std::fs::rename(&key, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key).unwrap();
    let err = MockNsm::open(&ca, None).unwrap_err();
    assert!(matches!(err, NsmError::SymbolicLink { ref path } if *path == key), "{err}");
}

#[test]
fn open_uninitialised_directory_names_command() {
    let dir = tempfile::tempdir().unwrap();
    let err = MockNsm::open(dir.path(), None).unwrap_err();
    assert!(matches!(err, NsmError::NotInitialised { .. }), "{err}");
    assert!(err.to_string().contains("mock-ca init --dir"), "{err}");
}

#[test]
fn mock_document_verifies_against_mock_root() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let document = attest(&nsm, Some(vec![1; 294]), Some(b"hello".to_vec()), Some(vec![7; 32])).unwrap();

    let verified = mock_verifier(&ca(&dir)).verify(&document, &VerifyOptions::default()).unwrap();
    let parsed = verified.document();
    assert_eq!(parsed.module_id, nsm.module_id());
    assert_eq!(parsed.public_key, Some(vec![1; 294]));
    assert_eq!(parsed.user_data.as_deref(), Some(&b"hello"[..]));
    assert_eq!(parsed.nonce, Some(vec![7; 32]));
    assert_eq!(parsed.cabundle.len(), 4);
    assert!(!verified.is_debug_mode());

    let at_document = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: false };
    mock_verifier(&ca(&dir)).verify(&document, &at_document).unwrap();
}

#[test]
fn mock_document_fails_against_aws_root() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let document = attest(&nsm, None, None, None).unwrap();
    let err = Verifier::with_aws_root().verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, AttestationError::UntrustedRoot { ref subject, .. } if subject.contains("mock.nitro-enclaves")),
        "{err}"
    );
}

#[test]
fn mock_document_has_nsm_layout() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let document = attest(&nsm, None, Some(Vec::new()), None).unwrap();

    // Untagged COSE_Sign1 with protected header {1: -35} and an empty unprotected map.
    assert_eq!(document[0], 0x84);
    assert_eq!(&document[1..6], &[0x44, 0xa1, 0x01, 0x38, 0x22]);
    assert_eq!(document[6], 0xa0);
    let Value::Array(items) = ciborium::de::from_reader::<Value, _>(document.as_slice()).unwrap() else {
        panic!("not an array");
    };
    assert_eq!(items[3].as_bytes().unwrap().len(), 96);
    let payload = items[2].as_bytes().unwrap();
    assert_eq!(payload[0], 0xa9, "definite-length map of nine entries");
    let Value::Map(entries) = ciborium::de::from_reader::<Value, _>(payload.as_slice()).unwrap() else {
        panic!("payload is not a map");
    };
    let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_text().unwrap()).collect();
    assert_eq!(
        keys,
        ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"]
    );
    assert_eq!(entries[6].1, Value::Null, "public_key not supplied is null");
    assert_eq!(entries[7].1, Value::Bytes(Vec::new()), "user_data supplied empty stays an empty bstr");
    assert_eq!(entries[8].1, Value::Null);

    let parsed = parse(&document).unwrap();
    assert_eq!(parsed.public_key, None);
    assert_eq!(parsed.user_data, Some(Vec::new()));
    assert_eq!(parsed.digest, "SHA384");
    assert_eq!(parsed.pcrs.len(), 16);
    assert!(parsed.pcrs.values().all(|value| value.len() == 48));
}

#[test]
fn pcr4_derived_from_instance_id() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let instance_id = nsm.module_id().split("-enc").next().unwrap().to_owned();
    assert_eq!(instance_id, nsm.store().instance_id());
    assert!(instance_id.starts_with("i-") && instance_id.len() == 19, "{instance_id}");
    let enclave_id = nsm.module_id().split("-enc").nth(1).unwrap();
    assert_eq!(enclave_id.len(), 16);

    let mut input = vec![0u8; 48];
    input.extend_from_slice(instance_id.as_bytes());
    let expected = digest(&SHA384, &input);
    let pcr4 = describe_pcr(&nsm, 4).unwrap();
    assert_eq!(pcr4.value, expected.as_ref());
    assert!(pcr4.locked);
    let document = parse(&attest(&nsm, None, None, None).unwrap()).unwrap();
    assert_eq!(document.pcrs[&4], expected.as_ref());
}

#[test]
fn initial_pcrs_locked_and_set() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    for index in 0..16 {
        let pcr = describe_pcr(&nsm, index).unwrap();
        assert!(pcr.locked, "PCR{index} locked");
        let zero = pcr.value.iter().all(|b| *b == 0);
        assert_eq!(zero, ![0, 1, 2, 4].contains(&index), "PCR{index} value");
    }
    for index in 16..32 {
        let pcr = describe_pcr(&nsm, index).unwrap();
        assert!(!pcr.locked, "PCR{index} unlocked");
        assert_eq!(pcr.value, vec![0; 48]);
    }
    let err = describe_pcr(&nsm, 32).unwrap_err();
    assert_eq!(rejected(&err), NsmErrorCode::InvalidIndex);
}

#[test]
fn extend_computes_sha384_of_old_and_data() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let first = extend_pcr(&nsm, 16, b"abc".to_vec()).unwrap();
    let mut input = vec![0u8; 48];
    input.extend_from_slice(b"abc");
    assert_eq!(first, digest(&SHA384, &input).as_ref());
    let second = extend_pcr(&nsm, 16, b"def".to_vec()).unwrap();
    let mut input = first.clone();
    input.extend_from_slice(b"def");
    assert_eq!(second, digest(&SHA384, &input).as_ref());
    assert_eq!(describe_pcr(&nsm, 16).unwrap().value, second);

    let document = parse(&attest(&nsm, None, None, None).unwrap()).unwrap();
    assert_eq!(document.pcrs.len(), 17, "PCR16 listed once extended");
    assert_eq!(document.pcrs[&16], second);
}

#[test]
fn locked_pcrs_read_only() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    assert_eq!(rejected(&extend_pcr(&nsm, 0, vec![1]).unwrap_err()), NsmErrorCode::ReadOnlyIndex);
    assert_eq!(rejected(&lock_pcr(&nsm, 3).unwrap_err()), NsmErrorCode::ReadOnlyIndex);
    assert_eq!(rejected(&extend_pcr(&nsm, 32, vec![1]).unwrap_err()), NsmErrorCode::InvalidIndex);
    assert_eq!(rejected(&lock_pcr(&nsm, 40).unwrap_err()), NsmErrorCode::InvalidIndex);

    lock_pcr(&nsm, 20).unwrap();
    assert!(describe_pcr(&nsm, 20).unwrap().locked);
    assert_eq!(rejected(&extend_pcr(&nsm, 20, vec![1]).unwrap_err()), NsmErrorCode::ReadOnlyIndex);

    assert_eq!(rejected(&lock_pcrs(&nsm, 33).unwrap_err()), NsmErrorCode::InvalidIndex);
    lock_pcrs(&nsm, 24).unwrap();
    assert!(describe_pcr(&nsm, 23).unwrap().locked);
    assert!(!describe_pcr(&nsm, 24).unwrap().locked);
    lock_pcrs(&nsm, 32).unwrap();
    assert!(describe_pcr(&nsm, 31).unwrap().locked);
}

#[test]
fn describe_nsm_reports_mock() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    lock_pcr(&nsm, 17).unwrap();
    let description = describe_nsm(&nsm).unwrap();
    assert_eq!(description.module_id, nsm.module_id());
    assert_eq!(description.max_pcrs, 32);
    assert_eq!(description.digest, "SHA384");
    let mut expected: Vec<u16> = (0..16).collect();
    expected.push(17);
    assert_eq!(description.locked_pcrs, expected);
}

#[test]
fn get_random_returns_fresh_bytes() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let first = get_random(&nsm).unwrap();
    let second = get_random(&nsm).unwrap();
    assert_eq!(first.len(), 256);
    assert_ne!(first, second);
}

#[test]
fn field_limits_enforced() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let full = vec![0x80u8; 1024];
    let document = attest(&nsm, Some(full.clone()), Some(full.clone()), Some(full.clone())).unwrap();
    let parsed = mock_verifier(&ca(&dir)).verify(&document, &VerifyOptions::default()).unwrap();
    assert_eq!(parsed.document().nonce.as_ref().map(Vec::len), Some(1024));

    for (public_key, user_data, nonce) in
        [(Some(vec![0; 1025]), None, None), (None, Some(vec![0; 1025]), None), (None, None, Some(vec![0; 1025]))]
    {
        let err = attest(&nsm, public_key, user_data, nonce).unwrap_err();
        assert_eq!(rejected(&err), NsmErrorCode::InputTooLarge);
    }
}

#[test]
fn request_over_4k_rejected() {
    let dir = store();
    let nsm = MockNsm::open(&ca(&dir), None).unwrap();
    let response = nsm.process(Request::ExtendPCR { index: 16, data: vec![0; 4096] });
    assert!(matches!(response, Response::Error(ErrorCode::InputTooLarge)), "{response:?}");
    assert_eq!(describe_pcr(&nsm, 16).unwrap().value, vec![0; 48], "rejected extend left the PCR alone");
    let response = nsm.process(Request::Attestation {
        user_data: Some(ByteBuf::from(vec![0; 1024])),
        nonce: None,
        public_key: None,
    });
    assert!(matches!(response, Response::Attestation { .. }));
}

#[test]
fn pcr_file_values_used() {
    let dir = store();
    let file = dir.path().join("pcrs.json");
    let pcr0 = "11".repeat(48);
    let pcr8 = "88".repeat(48);
    std::fs::write(&file, format!(r#"{{"PCR0": "{pcr0}", "PCR8": "{pcr8}"}}"#)).unwrap();
    let nsm = MockNsm::open(&ca(&dir), Some(&file)).unwrap();
    let document = parse(&attest(&nsm, None, None, None).unwrap()).unwrap();
    assert_eq!(hex::encode(&document.pcrs[&0]), pcr0);
    assert_eq!(hex::encode(&document.pcrs[&8]), pcr8);
    assert_eq!(document.pcrs[&1], vec![0; 48], "PCRs absent from the file start at zero");
}

#[test]
fn pcr_file_errors_name_file() {
    let dir = store();
    let file = dir.path().join("pcrs.json");
    std::fs::write(&file, r#"{"PCR0": "1234"}"#).unwrap();
    let err = MockNsm::open(&ca(&dir), Some(&file)).unwrap_err();
    assert!(matches!(err, NsmError::PcrFile { ref path, .. } if *path == file), "{err}");
    assert!(err.to_string().contains("expected 48"), "{err}");

    let missing = dir.path().join("missing.json");
    let err = MockNsm::open(&ca(&dir), Some(&missing)).unwrap_err();
    assert!(matches!(err, NsmError::PcrFileRead { ref path, .. } if *path == missing), "{err}");
    assert!(err.to_string().starts_with(&format!("cannot read PCR file {}: ", missing.display())), "{err}");
}

#[test]
fn zero_pcrs_make_debug_document() {
    let dir = store();
    let file = dir.path().join("pcrs.json");
    let zero = "00".repeat(48);
    std::fs::write(&file, format!(r#"{{"0": "{zero}", "1": "{zero}", "2": "{zero}"}}"#)).unwrap();
    let nsm = MockNsm::open(&ca(&dir), Some(&file)).unwrap();
    let document = attest(&nsm, None, None, None).unwrap();
    let verifier = mock_verifier(&ca(&dir));
    let err = verifier.verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, AttestationError::DebugMode), "{err}");
    let allowed = VerifyOptions { allow_debug: true, ..VerifyOptions::default() };
    assert!(verifier.verify(&document, &allowed).unwrap().is_debug_mode());
}

#[test]
fn store_survives_restart() {
    let dir = store();
    let first = MockNsm::open(&ca(&dir), None).unwrap();
    let leaf = std::fs::read(ca(&dir).join("leaf.pem")).unwrap();
    let instance_id = first.store().instance_id().to_owned();
    let cabundle = first.store().cabundle().to_vec();
    drop(first);

    let second = MockNsm::open(&ca(&dir), None).unwrap();
    assert_eq!(second.store().instance_id(), instance_id);
    assert_eq!(second.store().cabundle(), cabundle.as_slice());
    assert_eq!(std::fs::read(ca(&dir).join("leaf.pem")).unwrap(), leaf, "a valid leaf is reused");
    let document = parse(&attest(&second, None, None, None).unwrap()).unwrap();
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(&leaf).unwrap();
    assert_eq!(document.certificate, leaf_pem.contents);
}

#[test]
fn concurrent_attestations_verify() {
    let dir = store();
    let nsm = std::sync::Arc::new(MockNsm::open(&ca(&dir), None).unwrap());
    let verifier = mock_verifier(&ca(&dir));
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let nsm = std::sync::Arc::clone(&nsm);
            let verifier = verifier.clone();
            std::thread::spawn(move || {
                let document = attest(nsm.as_ref(), None, None, Some(vec![i])).unwrap();
                verifier.verify(&document, &VerifyOptions::default()).unwrap().into_document().nonce
            })
        })
        .collect();
    let mut nonces: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    nonces.sort();
    assert_eq!(nonces, [Some(vec![0]), Some(vec![1]), Some(vec![2]), Some(vec![3])]);
    assert!(verifier.cached_certificates() >= 5);
}

#[test]
fn helper_maps_module() {
    // The request names used in errors and logs.
    assert_eq!(nsm::request_name(&Request::GetRandom), "GetRandom");
    assert_eq!(nsm::response_name(&Response::LockPCRs), "LockPCRs");
}
