//! The enclave-agent library against real parent-proxy and kms-local
//! processes: key-pair reuse, reconnection after a parent restart, and a
//! small concurrent load with every secret checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use enclave_agent::client::{DeriveSharedSecretParams, KeyReuse, RecipientClient};
use enclave_agent::key::RsaKeySize;
use enclave_agent::nsm::{MockNsm, Nsm};
use enclave_agent::parent::ParentClient;
use recipient_common::transport::Address;
use recipient_tests::{
    Binaries, Service, create_agreement_key, init_mock_ca, kms_client, openssl_derive, openssl_peer_key,
    start_kms_local, start_parent_proxy,
};

/// Counts the attestation requests that reach the mock NSM.
struct CountingNsm {
    inner: MockNsm,
    attestations: AtomicUsize,
}

impl Nsm for CountingNsm {
    fn process(&self, request: Request) -> Response {
        if matches!(request, Request::Attestation { .. }) {
            self.attestations.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.process(request)
    }
}

struct Setup {
    binaries: Binaries,
    scratch: tempfile::TempDir,
    nsm: Arc<CountingNsm>,
    kms: Service,
    key_id: String,
    peer_public: Vec<u8>,
    expected_secret: Vec<u8>,
}

async fn setup() -> Setup {
    let binaries = Binaries::build_debug().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let mock_ca = dir.join("mock-ca");
    init_mock_ca(&binaries, &dir, &mock_ca).unwrap();
    let kms = start_kms_local(&binaries, &dir, &dir.join("kms-data"), &[&mock_ca.join("root.pem")]).unwrap();

    let client = kms_client(&kms.address);
    let (key_id, kms_public) = create_agreement_key(&client, "ECC_NIST_P256").await.unwrap();
    let kms_public_path = dir.join("kms.der");
    std::fs::write(&kms_public_path, &kms_public).unwrap();
    let peer = openssl_peer_key(&dir, "P-256").unwrap();
    let expected_secret = openssl_derive(&peer, &kms_public_path).unwrap();
    let peer_public = std::fs::read(&peer.public_der).unwrap();

    let nsm =
        Arc::new(CountingNsm { inner: MockNsm::open(&mock_ca, None).unwrap(), attestations: AtomicUsize::new(0) });
    Setup { binaries, scratch, nsm, kms, key_id, peer_public, expected_secret }
}

fn params(setup: &Setup) -> DeriveSharedSecretParams {
    DeriveSharedSecretParams {
        key_id: setup.key_id.clone(),
        public_key: setup.peer_public.clone(),
        grant_tokens: Vec::new(),
        dry_run: false,
    }
}

fn client(setup: &Setup, parent: &str, reuse: Option<KeyReuse>) -> RecipientClient {
    let parent = ParentClient::new(parent.parse::<Address>().unwrap(), Duration::from_secs(30));
    let nsm: Arc<dyn Nsm> = setup.nsm.clone();
    RecipientClient::new(nsm, parent, RsaKeySize::Rsa2048).with_key_reuse(reuse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reuse_is_bounded_by_uses() {
    let setup = setup().await;
    let parent = start_parent_proxy(&setup.binaries, setup.scratch.path(), &setup.kms.address, &[]).unwrap();

    let reusing = client(&setup, &parent.address, Some(KeyReuse { max_age: Duration::from_secs(60), max_uses: 3 }));
    for _ in 0..7 {
        let derived = reusing.derive_shared_secret(params(&setup)).await.unwrap();
        assert_eq!(derived.shared_secret.as_slice(), setup.expected_secret.as_slice());
    }
    // Uses 3 + 3 + 1: three key pairs and documents for seven requests.
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 3);

    let fresh = client(&setup, &parent.address, None);
    for _ in 0..2 {
        fresh.derive_shared_secret(params(&setup)).await.unwrap();
    }
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_key_pair_is_made_ahead() {
    let setup = setup().await;
    let parent = start_parent_proxy(&setup.binaries, setup.scratch.path(), &setup.kms.address, &[]).unwrap();
    let reusing = client(&setup, &parent.address, Some(KeyReuse { max_age: Duration::from_secs(60), max_uses: 4 }));
    let derive = || async {
        let derived = reusing.derive_shared_secret(params(&setup)).await.unwrap();
        assert_eq!(derived.shared_secret.as_slice(), setup.expected_secret.as_slice());
    };

    derive().await;
    derive().await;
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 1);

    // The third use reaches three quarters of four: the next key pair is made
    // in the background, with no further request.
    derive().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while setup.nsm.attestations.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 2);

    // The fourth request uses the first key pair, the fifth the one made ahead.
    derive().await;
    derive().await;
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reuse_is_bounded_by_age() {
    let setup = setup().await;
    let parent = start_parent_proxy(&setup.binaries, setup.scratch.path(), &setup.kms.address, &[]).unwrap();

    let reusing =
        client(&setup, &parent.address, Some(KeyReuse { max_age: Duration::from_millis(300), max_uses: 100 }));
    reusing.derive_shared_secret(params(&setup)).await.unwrap();
    reusing.derive_shared_secret(params(&setup)).await.unwrap();
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    reusing.derive_shared_secret(params(&setup)).await.unwrap();
    assert_eq!(setup.nsm.attestations.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_reconnects_after_parent_restart() {
    let setup = setup().await;
    let socket = setup.scratch.path().join("parent.sock");
    let address = format!("unix://{}", socket.display());
    let listen = ["--listen", address.as_str()];

    let command = |setup: &Setup| {
        let mut command = setup.binaries.command("parent-proxy", setup.scratch.path());
        command.args(listen).args(["--endpoint-url", &setup.kms.address, "--region", "us-east-1"]);
        command
    };
    let parent = Service::start("parent-proxy", command(&setup), "parent-proxy listening on ").unwrap();
    let client = client(&setup, &address, None);
    client.derive_shared_secret(params(&setup)).await.unwrap();

    // A hard crash: no graceful close of the connection.
    parent.signal("KILL").unwrap();
    drop(parent);
    let restarted = Service::start("parent-proxy", command(&setup), "parent-proxy listening on ").unwrap();

    let derived = client.derive_shared_secret(params(&setup)).await.unwrap();
    assert_eq!(derived.shared_secret.as_slice(), setup.expected_secret.as_slice());
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_all_secrets_correct() {
    const REQUESTS: usize = 200;
    const CONCURRENCY: usize = 8;

    let setup = setup().await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let parent = start_parent_proxy(
        &setup.binaries,
        setup.scratch.path(),
        &setup.kms.address,
        &["--metrics-listen", &metrics_address],
    )
    .unwrap();
    let client =
        Arc::new(client(&setup, &parent.address, Some(KeyReuse { max_age: Duration::from_secs(60), max_uses: 50 })));
    let setup = Arc::new(setup);

    let mut tasks = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..CONCURRENCY {
        let (client, setup, next) = (Arc::clone(&client), Arc::clone(&setup), Arc::clone(&next));
        tasks.spawn(async move {
            let mut done = 0;
            while next.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                let derived = client.derive_shared_secret(params(&setup)).await.unwrap();
                assert_eq!(derived.shared_secret.as_slice(), setup.expected_secret.as_slice());
                done += 1;
            }
            done
        });
    }
    let mut completed = 0;
    while let Some(done) = tasks.join_next().await {
        completed += done.unwrap();
    }
    assert_eq!(completed, REQUESTS);

    // All requests shared one connection, and it is closed once the client goes.
    let metrics = http_get(&metrics_address, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "parent_proxy_requests_total{{operation=\"DeriveSharedSecret\",outcome=\"ok\"}} {REQUESTS}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("parent_proxy_connections 1\n"), "{metrics}");
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = http_get(&metrics_address, "/metrics").await;
    assert!(metrics.contains("parent_proxy_connections 0\n"), "{metrics}");
    assert!(metrics.contains("parent_proxy_requests_in_flight 0\n"), "{metrics}");
}

async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
