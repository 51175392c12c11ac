//! Faults under load: kms-local restarted while requests are in flight, and
//! clock faults: attestation documents past the maximum age or from the future.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use enclave_agent::client::{ClientError, DeriveSharedSecretParams, KeyReuse, RecipientClient};
use enclave_agent::key::RsaKeySize;
use enclave_agent::nsm::{MockNsm, Nsm};
use enclave_agent::parent::{ParentClient, ParentError};
use recipient_common::protocol::ErrorFrame;
use recipient_tests::{
    Binaries, Service, create_agreement_key, init_mock_ca, kms_client, openssl_derive, openssl_peer_key,
    start_parent_proxy,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_kms_on(binaries: &Binaries, scratch: &std::path::Path, port: u16, extra: &[&str]) -> Service {
    let mut command: Command = binaries.command("kms-local", scratch);
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(scratch.join("kms-data"))
        .arg("--trust-root")
        .arg(scratch.join("mock-ca/root.pem"))
        .args(extra);
    Service::start("kms-local", command, "kms-local listening on ").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_restart_during_load_fails_cleanly_then_recovers() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    // parent-proxy logs each request that fails while kms-local is down as a
    // warning; those lines go to a file in the scratch directory.
    let binaries = Binaries::build_debug().unwrap().log_to(dir);
    init_mock_ca(&binaries, dir, &dir.join("mock-ca")).unwrap();
    let port = free_port();
    let kms = start_kms_on(&binaries, dir, port, &[]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let parent =
        start_parent_proxy(&binaries, dir, &endpoint, &["--max-attempts", "1", "--request-timeout", "10"]).unwrap();

    let (key_id, kms_public) = create_agreement_key(&kms_client(&endpoint), "ECC_NIST_P256").await.unwrap();
    std::fs::write(dir.join("kms.der"), &kms_public).unwrap();
    let peer = openssl_peer_key(dir, "P-256").unwrap();
    let expected = openssl_derive(&peer, &dir.join("kms.der")).unwrap();
    let params = DeriveSharedSecretParams {
        key_id,
        public_key: std::fs::read(&peer.public_der).unwrap(),
        grant_tokens: Vec::new(),
        dry_run: false,
    };

    let nsm: Arc<dyn Nsm> = Arc::new(MockNsm::open(&dir.join("mock-ca"), None).unwrap());
    let parent_client = ParentClient::new(parent.address.parse().unwrap(), Duration::from_secs(20));
    let client = Arc::new(
        RecipientClient::new(nsm, parent_client, RsaKeySize::Rsa2048)
            .with_key_reuse(Some(KeyReuse { max_age: Duration::from_secs(120), max_uses: 10_000 })),
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (succeeded, transport_failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, params, expected) = (Arc::clone(&client), params.clone(), expected.clone());
        let (stop, succeeded, transport_failures) =
            (Arc::clone(&stop), Arc::clone(&succeeded), Arc::clone(&transport_failures));
        workers.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.derive_shared_secret(params.clone()).await {
                    Ok(derived) => {
                        assert_eq!(derived.shared_secret.as_slice(), expected.as_slice());
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(ClientError::Parent(ParentError::Remote(
                        ErrorFrame::KmsUnreachable { .. } | ErrorFrame::KmsTimeout { .. },
                    ))) => {
                        transport_failures.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("a request failed with a non-transport error: {other}"),
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_restart = succeeded.load(Ordering::SeqCst);
    assert!(before_restart > 0, "no request succeeded before the restart");
    kms.signal("KILL").unwrap();
    drop(kms);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kms = tokio::task::spawn_blocking({
        let (binaries, dir) = (binaries.clone(), dir.to_path_buf());
        move || start_kms_on(&binaries, &dir, port, &[])
    })
    .await
    .unwrap();
    let after_restart = succeeded.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(joined) = workers.join_next().await {
        joined.unwrap();
    }

    assert!(transport_failures.load(Ordering::SeqCst) > 0, "the outage produced no transport error");
    assert!(succeeded.load(Ordering::SeqCst) > after_restart, "no request succeeded after the restart");
    drop(kms);
}

/// A mock CA, kms-local (with `kms_args`), parent-proxy, a P-256
/// key-agreement key and the parameters of a DeriveSharedSecret on it.
struct ClockFlow {
    scratch: tempfile::TempDir,
    _kms: Service,
    parent: Service,
    params: DeriveSharedSecretParams,
}

async fn start_clock_flow(kms_args: &[&str]) -> ClockFlow {
    let binaries = Binaries::build_debug().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    init_mock_ca(&binaries, dir, &dir.join("mock-ca")).unwrap();
    let port = free_port();
    let kms = start_kms_on(&binaries, dir, port, kms_args);
    let endpoint = format!("http://127.0.0.1:{port}");
    let parent = start_parent_proxy(&binaries, dir, &endpoint, &[]).unwrap();
    let (key_id, _) = create_agreement_key(&kms_client(&endpoint), "ECC_NIST_P256").await.unwrap();
    let peer = openssl_peer_key(dir, "P-256").unwrap();
    let params = DeriveSharedSecretParams {
        key_id,
        public_key: std::fs::read(&peer.public_der).unwrap(),
        grant_tokens: Vec::new(),
        dry_run: false,
    };
    ClockFlow { scratch, _kms: kms, parent, params }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_past_max_age_is_rejected() {
    let flow = start_clock_flow(&["--max-document-age", "2"]).await;
    let (dir, parent, params) = (flow.scratch.path(), &flow.parent, flow.params.clone());

    // Reuse allowed for longer than kms-local's maximum age, so the second
    // request carries a document that has become too old.
    let nsm: Arc<dyn Nsm> = Arc::new(MockNsm::open(&dir.join("mock-ca"), None).unwrap());
    let parent_client = ParentClient::new(parent.address.parse().unwrap(), Duration::from_secs(20));
    let client = RecipientClient::new(nsm, parent_client, RsaKeySize::Rsa2048)
        .with_key_reuse(Some(KeyReuse { max_age: Duration::from_secs(60), max_uses: 10 }));
    client.derive_shared_secret(params.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;

    match client.derive_shared_secret(params).await {
        Err(ClientError::Parent(ParentError::Remote(ErrorFrame::Kms { name, message, .. }))) => {
            assert_eq!(name, "AccessDeniedException");
            assert!(message.contains("too old"), "{message}");
        }
        other => panic!("expected AccessDeniedException for an old document, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_document_timestamps_are_rejected() {
    let flow = start_clock_flow(&[]).await;
    let (dir, parent, params) = (flow.scratch.path(), &flow.parent, flow.params.clone());

    // kms-local allows 60 s of skew ahead and a maximum age of 5 minutes by default.
    let cases = [
        (time::Duration::minutes(10), Some("ahead of the verifier's clock")),
        (time::Duration::minutes(-10), Some("too old")),
        (time::Duration::seconds(30), None),
        (time::Duration::seconds(-30), None),
    ];
    for (skew, expected) in cases {
        let nsm = MockNsm::open(&dir.join("mock-ca"), None).unwrap().with_timestamp_skew(skew);
        let parent_client = ParentClient::new(parent.address.parse().unwrap(), Duration::from_secs(20));
        let client = RecipientClient::new(Arc::new(nsm), parent_client, RsaKeySize::Rsa2048);
        let result = client.derive_shared_secret(params.clone()).await;
        match (expected, result) {
            (None, Ok(secret)) => assert_eq!(secret.shared_secret.len(), 32, "skew {skew}"),
            (Some(fragment), Err(ClientError::Parent(ParentError::Remote(ErrorFrame::Kms { name, message, .. })))) => {
                assert_eq!(name, "AccessDeniedException", "skew {skew}");
                assert!(message.contains(fragment), "skew {skew}: {message}");
            }
            (expected, other) => panic!("skew {skew}: expected {expected:?}, got {other:?}"),
        }
    }
}
