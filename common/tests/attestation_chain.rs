//! Certificate path rules, time modes and the certificate cache, on chains
//! made with rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, SignatureAlgorithm,
};
use recipient_common::attestation::{
    AttestationDocument, AttestationError, CertificatePosition, TimeMode, Verifier, VerifyOptions, sign,
};
use time::OffsetDateTime;

/// One certificate of a test chain.
#[derive(Clone)]
struct Spec {
    name: &'static str,
    is_ca: IsCa,
    key_usages: Vec<KeyUsagePurpose>,
    algorithm: &'static SignatureAlgorithm,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    critical_extension: bool,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ca(name: &'static str, path_len: Option<u8>) -> Spec {
    Spec {
        name,
        is_ca: IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained)),
        key_usages: vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        algorithm: &PKCS_ECDSA_P384_SHA384,
        not_before: now() - Duration::from_secs(86_400),
        not_after: now() + Duration::from_secs(86_400),
        critical_extension: false,
    }
}

fn leaf() -> Spec {
    Spec {
        name: "leaf",
        is_ca: IsCa::ExplicitNoCa,
        key_usages: vec![KeyUsagePurpose::DigitalSignature],
        not_before: now() - Duration::from_secs(60),
        not_after: now() + Duration::from_secs(3 * 3600),
        ..ca("leaf", None)
    }
}

/// A chain from the specs (root first, leaf last) and the leaf's signing key.
struct Chain {
    root_pem: String,
    cabundle: Vec<Vec<u8>>,
    leaf: Vec<u8>,
    leaf_key: Option<EcdsaKeyPair>,
}

fn params(spec: &Spec) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, spec.name);
    params.is_ca = spec.is_ca;
    params.key_usages = spec.key_usages.clone();
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    if spec.critical_extension {
        let mut extension = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        extension.set_criticality(true);
        params.custom_extensions.push(extension);
    }
    params
}

fn build(specs: &[Spec]) -> Chain {
    let (root_spec, rest) = specs.split_first().unwrap();
    let root_key = KeyPair::generate_for(root_spec.algorithm).unwrap();
    let root_params = params(root_spec);
    let root = root_params.self_signed(&root_key).unwrap();
    let mut cabundle = vec![root.der().to_vec()];
    let mut issuer = Issuer::new(root_params, root_key);
    let mut leaf = Vec::new();
    let mut leaf_key = None;
    for (i, spec) in rest.iter().enumerate() {
        let key = KeyPair::generate_for(spec.algorithm).unwrap();
        let params = params(spec);
        let cert = params.signed_by(&key, &issuer).unwrap();
        if i + 1 == rest.len() {
            leaf = cert.der().to_vec();
            leaf_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &key.serialize_der()).ok();
        } else {
            cabundle.push(cert.der().to_vec());
        }
        issuer = Issuer::new(params, key);
    }
    Chain { root_pem: root.pem(), cabundle, leaf, leaf_key }
}

fn standard() -> Vec<Spec> {
    vec![ca("root", None), ca("regional", Some(2)), ca("zonal", Some(1)), ca("instance", Some(0)), leaf()]
}

fn document_for(chain: &Chain, timestamp: OffsetDateTime) -> AttestationDocument {
    AttestationDocument {
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".to_owned(),
        digest: "SHA384".to_owned(),
        timestamp: u64::try_from(timestamp.unix_timestamp_nanos() / 1_000_000).unwrap(),
        pcrs: (0..16).map(|index| (index, vec![index as u8 + 1; 48])).collect(),
        certificate: chain.leaf.clone(),
        cabundle: chain.cabundle.clone(),
        public_key: None,
        user_data: None,
        nonce: None,
    }
}

fn signed(chain: &Chain) -> Vec<u8> {
    sign(&document_for(chain, now()), chain.leaf_key.as_ref().unwrap()).unwrap()
}

fn verifier(chain: &Chain) -> Verifier {
    let mut verifier = Verifier::new();
    verifier.add_root_pem(chain.root_pem.as_bytes()).unwrap();
    verifier
}

fn verify(chain: &Chain) -> Result<(), AttestationError> {
    verifier(chain).verify(&signed(chain), &VerifyOptions::default()).map(|_| ())
}

#[test]
fn standard_chain_verifies() {
    let chain = build(&standard());
    let verified = verifier(&chain).verify(&signed(&chain), &VerifyOptions::default()).unwrap();
    assert_eq!(verified.chain_subjects(), ["CN=root", "CN=regional", "CN=zonal", "CN=instance", "CN=leaf"]);
}

#[test]
fn short_chain_verifies() {
    let chain = build(&[ca("root", None), ca("only", Some(0)), leaf()]);
    verify(&chain).unwrap();
}

#[test]
fn intermediate_without_basic_constraints_rejected() {
    let mut specs = standard();
    specs[2].is_ca = IsCa::NoCa;
    let err = verify(&build(&specs)).unwrap_err();
    assert!(matches!(err, AttestationError::NotCa { position: CertificatePosition::Bundle(2), .. }), "{err}");
}

#[test]
fn intermediate_with_ca_false_rejected() {
    let mut specs = standard();
    specs[1].is_ca = IsCa::ExplicitNoCa;
    let err = verify(&build(&specs)).unwrap_err();
    assert!(matches!(err, AttestationError::NotCa { position: CertificatePosition::Bundle(1), .. }), "{err}");
}

#[test]
fn path_length_exceeded_rejected() {
    let mut specs = standard();
    specs[2] = ca("zonal", Some(0));
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::PathLength { position: CertificatePosition::Bundle(2), path_len: 0, below: 1, .. }
        ),
        "{err}"
    );

    let mut specs = standard();
    specs[0] = ca("root", Some(1));
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::PathLength { position: CertificatePosition::Bundle(0), path_len: 1, below: 3, .. }
        ),
        "{err}"
    );
}

#[test]
fn ca_without_key_cert_sign_rejected() {
    let mut specs = standard();
    specs[3].key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(err, AttestationError::KeyUsage { position: CertificatePosition::Bundle(3), expected: "keyCertSign", ref found, .. } if found == "is digitalSignature"),
        "{err}"
    );

    let mut specs = standard();
    specs[1].key_usages = Vec::new();
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(err, AttestationError::KeyUsage { position: CertificatePosition::Bundle(1), ref found, .. } if found == "is absent"),
        "{err}"
    );
}

#[test]
fn leaf_rules_enforced() {
    let mut specs = standard();
    specs[4].is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let err = verify(&build(&specs)).unwrap_err();
    assert!(matches!(err, AttestationError::LeafIsCa { .. }), "{err}");

    let mut specs = standard();
    specs[4].key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::KeyUsage { position: CertificatePosition::Leaf, expected: "digitalSignature", .. }
        ),
        "{err}"
    );

    let mut specs = standard();
    specs[4].key_usages = Vec::new();
    let err = verify(&build(&specs)).unwrap_err();
    assert!(matches!(err, AttestationError::KeyUsage { position: CertificatePosition::Leaf, .. }), "{err}");
}

#[test]
fn p256_keys_rejected() {
    let mut specs = standard();
    specs[4].algorithm = &PKCS_ECDSA_P256_SHA256;
    let chain = build(&specs);
    let document =
        sign(&document_for(&chain, now()), &EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap()).unwrap();
    let err = verifier(&chain).verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateKey { position: CertificatePosition::Leaf, ref reason } if reason.contains("1.2.840.10045.3.1.7")),
        "{err}"
    );

    // An intermediate with a P-256 key signs its children with ecdsa-with-SHA256.
    let mut specs = standard();
    specs[3].algorithm = &PKCS_ECDSA_P256_SHA256;
    let err = verify(&build(&specs)).unwrap_err();
    assert!(matches!(err, AttestationError::CertificateKey { position: CertificatePosition::Bundle(3), .. }), "{err}");
}

#[test]
fn p256_root_rejected_as_trust_anchor() {
    let mut specs = standard();
    specs[0].algorithm = &PKCS_ECDSA_P256_SHA256;
    let chain = build(&specs);
    let mut verifier = Verifier::new();
    let err = verifier.add_root_pem(chain.root_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, AttestationError::RootPem { ref reason } if reason.contains("ecdsa-with-SHA384")), "{err}");
}

/// Replaces every occurrence of `from` in `bytes` with `to` (same length).
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn sha256_signature_algorithm_rejected() {
    const ECDSA_WITH_SHA384: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_WITH_SHA256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let chain = build(&standard());
    let mut document = document_for(&chain, now());
    document.certificate = replace_all(&chain.leaf, &ECDSA_WITH_SHA384, &ECDSA_WITH_SHA256);
    assert_ne!(document.certificate, chain.leaf);
    let document = sign(&document, chain.leaf_key.as_ref().unwrap()).unwrap();
    let err = verifier(&chain).verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateAlgorithm { position: CertificatePosition::Leaf, ref found } if found == "1.2.840.10045.4.3.2"),
        "{err}"
    );
}

#[test]
fn unknown_critical_extension_rejected() {
    let mut specs = standard();
    specs[2].critical_extension = true;
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(err, AttestationError::UnsupportedCriticalExtension { position: CertificatePosition::Bundle(2), ref oid, .. } if oid == "1.3.6.1.4.1.99999.1"),
        "{err}"
    );
}

#[test]
fn leaf_from_other_chain_rejected() {
    let chain = build(&standard());
    let other = build(&standard());
    // The other chain's leaf names `CN=instance` as issuer too, but a different key signed it.
    let mut document = document_for(&chain, now());
    document.certificate = other.leaf.clone();
    let document = sign(&document, other.leaf_key.as_ref().unwrap()).unwrap();
    let err = verifier(&chain).verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, AttestationError::CertificateSignature { position: CertificatePosition::Leaf, .. }), "{err}");
}

#[test]
fn leaf_issuer_name_checked() {
    let chain = build(&standard());
    let mut specs = standard();
    specs[3].name = "renamed";
    let renamed = build(&specs);
    // The renamed chain's leaf names `CN=renamed` as its issuer.
    let mut document = document_for(&chain, now());
    document.certificate = renamed.leaf.clone();
    let document = sign(&document, renamed.leaf_key.as_ref().unwrap()).unwrap();
    let err = verifier(&chain).verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, AttestationError::IssuerMismatch { position: CertificatePosition::Leaf, ref issuer, ref expected } if issuer == "CN=renamed" && expected == "CN=instance"),
        "{err}"
    );
}

#[test]
fn cose_signed_by_other_key_rejected() {
    let chain = build(&standard());
    let other = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
    let document = sign(&document_for(&chain, now()), &other).unwrap();
    let err = verifier(&chain).verify(&document, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, AttestationError::CoseSignature { ref subject } if subject == "CN=leaf"), "{err}");
}

#[test]
fn untrusted_root_rejected() {
    let chain = build(&standard());
    let err = Verifier::with_aws_root().verify(&signed(&chain), &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, AttestationError::UntrustedRoot { ref subject, .. } if subject == "CN=root"), "{err}");
    let err = Verifier::new().verify(&signed(&chain), &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, AttestationError::UntrustedRoot { .. }), "{err}");
}

#[test]
fn expired_and_future_certificates_rejected() {
    let mut specs = standard();
    specs[2].not_after = now() - Duration::from_secs(10);
    specs[2].not_before = now() - Duration::from_secs(86_400);
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateExpired { position: CertificatePosition::Bundle(2), .. }),
        "{err}"
    );

    let mut specs = standard();
    specs[4].not_before = now() + Duration::from_secs(600);
    let err = verify(&build(&specs)).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateNotYetValid { position: CertificatePosition::Leaf, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("notBefore"), "{err}");
}

#[test]
fn live_mode_rejects_old_document() {
    let chain = build(&standard());
    let verifier = verifier(&chain);
    let old = sign(&document_for(&chain, now() - Duration::from_secs(600)), chain.leaf_key.as_ref().unwrap()).unwrap();
    let err = verifier.verify(&old, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, AttestationError::DocumentTooOld { max_age, age, .. } if max_age == Duration::from_secs(300) && age >= Duration::from_secs(600)),
        "{err}"
    );

    let relaxed = VerifyOptions { time: TimeMode::Live { max_age: Duration::from_secs(900) }, allow_debug: false };
    verifier.verify(&old, &relaxed).unwrap();
    let at = VerifyOptions { time: TimeMode::At(SystemTime::now()), allow_debug: false };
    verifier.verify(&old, &at).unwrap();
    // The leaf became valid a minute before now, after this document's timestamp.
    let at_document = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: false };
    let err = verifier.verify(&old, &at_document).unwrap_err();
    assert!(
        matches!(err, AttestationError::CertificateNotYetValid { position: CertificatePosition::Leaf, .. }),
        "{err}"
    );
}

#[test]
fn live_mode_rejects_future_document() {
    let chain = build(&standard());
    let verifier = verifier(&chain);
    let ahead =
        sign(&document_for(&chain, now() + Duration::from_secs(300)), chain.leaf_key.as_ref().unwrap()).unwrap();
    let err = verifier.verify(&ahead, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, AttestationError::DocumentFromFuture { .. }), "{err}");

    let slightly =
        sign(&document_for(&chain, now() + Duration::from_secs(30)), chain.leaf_key.as_ref().unwrap()).unwrap();
    verifier.verify(&slightly, &VerifyOptions::default()).unwrap();
}

#[test]
fn time_before_epoch_rejected() {
    let chain = build(&standard());
    let options = VerifyOptions { time: TimeMode::At(UNIX_EPOCH - Duration::from_secs(1)), allow_debug: false };
    let err = verifier(&chain).verify(&signed(&chain), &options).unwrap_err();
    assert!(matches!(err, AttestationError::InvalidTime { .. }), "{err}");
}

#[test]
fn cache_reused_and_shared_by_clones() {
    let chain = build(&standard());
    let verifier = verifier(&chain);
    assert_eq!(verifier.cached_certificates(), 0);
    verifier.verify(&signed(&chain), &VerifyOptions::default()).unwrap();
    assert_eq!(verifier.cached_certificates(), 5);
    let clone = verifier.clone();
    clone.verify(&signed(&chain), &VerifyOptions::default()).unwrap();
    assert_eq!(verifier.cached_certificates(), 5, "a second document from the same chain adds nothing");

    // A leaf from another chain fails its signature check and is not cached.
    let mut document = document_for(&chain, now());
    let other_leaf = build(&standard());
    document.certificate = other_leaf.leaf.clone();
    let _ =
        verifier.verify(&sign(&document, other_leaf.leaf_key.as_ref().unwrap()).unwrap(), &VerifyOptions::default());
    assert_eq!(verifier.cached_certificates(), 5, "a leaf that fails its signature check is not cached");

    verifier.clear_cache();
    assert_eq!(clone.cached_certificates(), 0);
}

#[test]
fn cached_certificate_still_checked_for_validity() {
    let chain = build(&standard());
    let verifier = verifier(&chain);
    verifier.verify(&signed(&chain), &VerifyOptions::default()).unwrap();
    assert_eq!(verifier.cached_certificates(), 5);

    let later = SystemTime::now() + Duration::from_secs(4 * 3600);
    let options = VerifyOptions { time: TimeMode::At(later), allow_debug: false };
    let err = verifier.verify(&signed(&chain), &options).unwrap_err();
    assert!(matches!(err, AttestationError::CertificateExpired { position: CertificatePosition::Leaf, .. }), "{err}");
}

#[test]
fn cached_ca_still_checked_for_position() {
    // `int` allows no CA below it. A first document that ends at `sub` puts
    // root and int in the cache; the full path must still fail the
    // path-length rule at int.
    let chain = build(&[ca("root", None), ca("int", Some(0)), ca("sub", None), leaf()]);
    let verifier = verifier(&chain);
    let mut short = document_for(&chain, now());
    short.cabundle.truncate(2);
    short.certificate = chain.cabundle[2].clone();
    let err = verifier.verify(&sign(&short, chain.leaf_key.as_ref().unwrap()).unwrap(), &VerifyOptions::default());
    assert!(matches!(err, Err(AttestationError::LeafIsCa { .. })), "{err:?}");
    assert_eq!(verifier.cached_certificates(), 3);

    let err = verifier.verify(&signed(&chain), &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::PathLength { position: CertificatePosition::Bundle(1), path_len: 0, below: 1, .. }
        ),
        "{err}"
    );
}

#[test]
fn verifier_is_send_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Verifier>();
}

#[test]
fn add_root_pem_errors() {
    let mut verifier = Verifier::new();
    let err = verifier.add_root_pem(b"not pem at all").unwrap_err();
    assert!(matches!(err, AttestationError::RootPem { .. }), "{err}");
    let err = verifier.add_root_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
    assert!(matches!(err, AttestationError::RootPem { .. }), "{err}");
    assert!(verifier.root_subjects().is_empty());

    let chain = build(&standard());
    let two = format!("{}{}", chain.root_pem, build(&standard()).root_pem);
    verifier.add_root_pem(two.as_bytes()).unwrap();
    assert_eq!(verifier.root_subjects().len(), 2);
    verifier.add_root_pem(chain.root_pem.as_bytes()).unwrap();
    assert_eq!(verifier.root_subjects().len(), 2, "adding a root twice keeps one copy");
}
