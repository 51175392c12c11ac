//! End to end: enclave-agent (mock NSM) -> parent-proxy -> kms-local, all
//! real processes on loopback, checked against OpenSSL's ECDH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use recipient_tests::{
    Binaries, Service, create_agreement_key, init_mock_ca, kms_client, openssl_curve, openssl_derive, openssl_peer_key,
    start_kms_local, start_parent_proxy,
};

struct Flow {
    binaries: Binaries,
    scratch: tempfile::TempDir,
    mock_ca: std::path::PathBuf,
    kms: Service,
    parent: Service,
}

/// Starts kms-local (trusting the mock CA made here) and parent-proxy.
fn start_flow() -> Flow {
    let binaries = Binaries::build_debug().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let mock_ca = dir.join("mock-ca");
    init_mock_ca(&binaries, &dir, &mock_ca).unwrap();
    let kms = start_kms_local(&binaries, &dir, &dir.join("kms-data"), &[&mock_ca.join("root.pem")]).unwrap();
    let parent = start_parent_proxy(&binaries, &dir, &kms.address, &[]).unwrap();
    Flow { binaries, scratch, mock_ca, kms, parent }
}

fn run_enclave_agent(flow: &Flow, mock_ca: &Path, key_id: &str, public_key: &Path) -> Output {
    flow.binaries
        .command("enclave-agent", flow.scratch.path())
        .args(["derive-shared-secret", "--key-id", key_id, "--public-key"])
        .arg(format!("fileb://{}", public_key.display()))
        .args(["--parent", &flow.parent.address, "--nsm", "mock", "--mock-dir"])
        .arg(mock_ca)
        .args(["--output", "json"])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_secret_equals_openssl_for_each_curve() {
    let flow = start_flow();
    let client = kms_client(&flow.kms.address);

    for key_spec in ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"] {
        let (key_id, kms_public) = create_agreement_key(&client, key_spec).await.unwrap();
        let kms_public_path = flow.scratch.path().join(format!("kms-{key_spec}.der"));
        std::fs::write(&kms_public_path, &kms_public).unwrap();
        let peer = openssl_peer_key(flow.scratch.path(), openssl_curve(key_spec).unwrap()).unwrap();

        let output = run_enclave_agent(&flow, &flow.mock_ca, &key_id, &peer.public_der);
        assert!(output.status.success(), "{key_spec}: {}", String::from_utf8_lossy(&output.stderr));
        let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let enclave_secret = STANDARD.decode(response["SharedSecret"].as_str().unwrap()).unwrap();
        let openssl_secret = openssl_derive(&peer, &kms_public_path).unwrap();

        assert_eq!(enclave_secret, openssl_secret, "{key_spec}");
        let expected_len = match key_spec {
            "ECC_NIST_P256" => 32,
            "ECC_NIST_P384" => 48,
            _ => 66,
        };
        assert_eq!(enclave_secret.len(), expected_len, "{key_spec}");
        assert_eq!(response["KeyAgreementAlgorithm"], "ECDH", "{key_spec}");
        assert_eq!(response["KeyOrigin"], "AWS_KMS", "{key_spec}");
        let arn = response["KeyId"].as_str().unwrap();
        assert!(arn.starts_with("arn:aws:kms:us-east-1:111122223333:key/"), "{arn}");
        assert!(arn.ends_with(&key_id), "{arn} does not name {key_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_mock_chain_is_rejected_by_kms() {
    let flow = start_flow();
    let client = kms_client(&flow.kms.address);
    let (key_id, _) = create_agreement_key(&client, "ECC_NIST_P256").await.unwrap();
    let peer = openssl_peer_key(flow.scratch.path(), "P-256").unwrap();

    // A second mock CA that kms-local was not told to trust.
    let stranger = flow.scratch.path().join("untrusted-ca");
    init_mock_ca(&flow.binaries, flow.scratch.path(), &stranger).unwrap();
    let output = run_enclave_agent(&flow, &stranger, &key_id, &peer.public_der);

    assert_eq!(output.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AccessDeniedException"), "{stderr}");
    assert!(output.stdout.is_empty(), "no secret may be printed: {}", String::from_utf8_lossy(&output.stdout));
}
