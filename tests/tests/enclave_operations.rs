//! Every enclave-agent operation end to end (enclave-agent -> parent-proxy ->
//! kms-local, real processes on loopback), its bad inputs and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use recipient_tests::{
    Binaries, Service, create_agreement_key, init_mock_ca, kms_client, openssl, openssl_derive, openssl_peer_key,
    start_kms_local, start_parent_proxy,
};

struct Flow {
    binaries: Binaries,
    scratch: tempfile::TempDir,
    mock_ca: PathBuf,
    kms: Service,
    parent: Service,
}

fn start_flow() -> Flow {
    let binaries = Binaries::build_debug().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let mock_ca = dir.join("mock-ca");
    init_mock_ca(&binaries, &dir, &mock_ca).unwrap();
    let kms = start_kms_local(&binaries, &dir, &dir.join("kms-data"), &[&mock_ca.join("root.pem")]).unwrap();
    let parent = start_parent_proxy(&binaries, &dir, &kms.address, &["--max-attempts", "1"]).unwrap();
    Flow { binaries, scratch, mock_ca, kms, parent }
}

impl Flow {
    /// Runs enclave-agent `subcommand` with the mock NSM through the parent.
    fn agent(&self, subcommand: &str, args: &[&str]) -> Output {
        self.agent_via(&self.parent.address, subcommand, args)
    }

    fn agent_via(&self, parent: &str, subcommand: &str, args: &[&str]) -> Output {
        self.binaries
            .command("enclave-agent", self.scratch.path())
            .arg(subcommand)
            .args(args)
            .args(["--parent", parent, "--nsm", "mock", "--mock-dir"])
            .arg(&self.mock_ca)
            .output()
            .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "exit {:?}: {}", output.status.code(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn base64_field(value: &serde_json::Value, field: &str) -> Vec<u8> {
    STANDARD.decode(value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}"))).unwrap()
}

fn fileb(path: &Path) -> String {
    format!("fileb://{}", path.display())
}

async fn symmetric_key(flow: &Flow) -> String {
    let client = kms_client(&flow.kms.address);
    let created = client.create_key().send().await.unwrap();
    created.key_metadata().unwrap().key_id().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_returns_what_encrypt_took() {
    let flow = start_flow();
    let key_id = symmetric_key(&flow).await;
    let client = kms_client(&flow.kms.address);
    let plaintext = b"attested enclaves only".to_vec();
    let encrypted = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext.clone()))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    let ciphertext_path = flow.path("ciphertext.bin");
    std::fs::write(&ciphertext_path, encrypted.ciphertext_blob().unwrap().as_ref()).unwrap();

    let output = flow.agent(
        "decrypt",
        &["--ciphertext-blob", &fileb(&ciphertext_path), "--encryption-context", "purpose=test", "--output", "json"],
    );
    let response = stdout_json(&output);
    assert_eq!(base64_field(&response, "Plaintext"), plaintext);
    assert!(response["KeyId"].as_str().unwrap().ends_with(&key_id));
    assert_eq!(response["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");

    // The raw output to a private file.
    let outfile = flow.path("plaintext.out");
    let output = flow.agent(
        "decrypt",
        &[
            "--ciphertext-blob",
            &STANDARD.encode(encrypted.ciphertext_blob().unwrap().as_ref()),
            "--encryption-context",
            r#"{"purpose":"test"}"#,
            "--output",
            "raw",
            "--outfile",
            outfile.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
    assert_eq!(std::fs::read(&outfile).unwrap(), plaintext);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&outfile).unwrap().permissions().mode() & 0o777, 0o600);

    // An output file that cannot be written (a full device) is a local error: exit 2.
    let output = flow.agent(
        "decrypt",
        &[
            "--ciphertext-blob",
            &fileb(&ciphertext_path),
            "--encryption-context",
            "purpose=test",
            "--outfile",
            "/dev/full",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write --outfile /dev/full"), "{stderr}");

    // The wrong encryption context is KMS's InvalidCiphertextException: refused, exit 1.
    let output = flow
        .agent("decrypt", &["--ciphertext-blob", &fileb(&ciphertext_path), "--encryption-context", "purpose=other"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("InvalidCiphertextException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_data_key_plaintext_decrypts_its_blob() {
    let flow = start_flow();
    let key_id = symmetric_key(&flow).await;

    let response = stdout_json(
        &flow.agent("generate-data-key", &["--key-id", &key_id, "--key-spec", "AES_256", "--output", "json"]),
    );
    let plaintext = base64_field(&response, "Plaintext");
    assert_eq!(plaintext.len(), 32);
    let blob = base64_field(&response, "CiphertextBlob");

    let blob_path = flow.path("data-key.bin");
    std::fs::write(&blob_path, &blob).unwrap();
    let decrypted = stdout_json(&flow.agent("decrypt", &["--ciphertext-blob", &fileb(&blob_path), "--output", "json"]));
    assert_eq!(base64_field(&decrypted, "Plaintext"), plaintext);

    let response = stdout_json(
        &flow.agent("generate-data-key", &["--key-id", &key_id, "--number-of-bytes", "7", "--output", "json"]),
    );
    assert_eq!(base64_field(&response, "Plaintext").len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_data_key_pair_private_key_matches_public_key() {
    let flow = start_flow();
    let key_id = symmetric_key(&flow).await;

    for spec in ["ECC_NIST_P256", "RSA_2048"] {
        let response = stdout_json(
            &flow.agent("generate-data-key-pair", &["--key-id", &key_id, "--key-pair-spec", spec, "--output", "json"]),
        );
        assert_eq!(response["KeyPairSpec"], spec);
        let private_der = flow.path(&format!("{spec}-private.der"));
        let public_der = flow.path(&format!("{spec}-public.der"));
        std::fs::write(&private_der, base64_field(&response, "PrivateKeyPlaintext")).unwrap();
        std::fs::write(&public_der, base64_field(&response, "PublicKey")).unwrap();
        assert!(!base64_field(&response, "PrivateKeyCiphertextBlob").is_empty());

        // OpenSSL signs with the private key and verifies with the public key.
        let data = flow.path("data.txt");
        std::fs::write(&data, b"sign me").unwrap();
        let signature = flow.path(&format!("{spec}.sig"));
        let (private, public, data, signature) = (
            private_der.to_str().unwrap(),
            public_der.to_str().unwrap(),
            data.to_str().unwrap(),
            signature.to_str().unwrap(),
        );
        openssl(&["dgst", "-sha256", "-keyform", "DER", "-sign", private, "-out", signature, data]).unwrap();
        let verified =
            openssl(&["dgst", "-sha256", "-keyform", "DER", "-verify", public, "-signature", signature, data]).unwrap();
        assert_eq!(String::from_utf8_lossy(&verified).trim(), "Verified OK", "{spec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_random_returns_requested_length() {
    let flow = start_flow();
    for count in [1usize, 32, 1024] {
        let output = flow.agent("generate-random", &["--number-of-bytes", &count.to_string(), "--output", "raw"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.stdout.len(), count);
    }
    for bad in ["0", "1025"] {
        let output = flow.agent("generate-random", &["--number-of-bytes", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_with_kdf_equals_independent_hkdf() {
    let flow = start_flow();
    let client = kms_client(&flow.kms.address);
    let (key_id, kms_public) = create_agreement_key(&client, "ECC_NIST_P256").await.unwrap();
    let kms_public_path = flow.path("kms.der");
    std::fs::write(&kms_public_path, &kms_public).unwrap();
    let peer = openssl_peer_key(flow.scratch.path(), "P-256").unwrap();
    let secret = openssl_derive(&peer, &kms_public_path).unwrap();

    let salt = b"salt-for-test";
    let info = b"enclave session key";
    let output = flow.agent(
        "derive-shared-secret",
        &[
            "--key-id",
            &key_id,
            "--public-key",
            &fileb(&peer.public_der),
            "--kdf",
            "hkdf-sha256",
            "--kdf-salt",
            &STANDARD.encode(salt),
            "--kdf-info",
            &STANDARD.encode(info),
            "--length",
            "42",
            "--output",
            "json",
        ],
    );
    let response = stdout_json(&output);
    assert_eq!(response["Kdf"], "HKDF-SHA256");
    let derived = base64_field(&response, "DerivedKey");

    // OpenSSL's HKDF over the secret OpenSSL derived on the peer side.
    let expected = openssl(&[
        "kdf",
        "-keylen",
        "42",
        "-kdfopt",
        "digest:SHA256",
        "-kdfopt",
        &format!("hexkey:{}", hex::encode(&secret)),
        "-kdfopt",
        &format!("hexsalt:{}", hex::encode(salt)),
        "-kdfopt",
        &format!("hexinfo:{}", hex::encode(info)),
        "HKDF",
    ])
    .unwrap();
    let expected = hex::decode(String::from_utf8_lossy(&expected).trim().replace(':', "")).unwrap();
    assert_eq!(derived, expected);
    assert_eq!(derived.len(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_public_keys_exit_2_with_message() {
    let flow = start_flow();
    let client = kms_client(&flow.kms.address);
    let (key_id, _) = create_agreement_key(&client, "ECC_NIST_P256").await.unwrap();
    let peer = openssl_peer_key(flow.scratch.path(), "P-256").unwrap();
    let der = std::fs::read(&peer.public_der).unwrap();

    let twice = STANDARD.encode(STANDARD.encode(&der));
    let secp256k1 = flow.path("k1.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:secp256k1",
        "-out",
        secp256k1.to_str().unwrap(),
    ])
    .unwrap();
    let secp256k1_public = flow.path("k1.pub.der");
    openssl(&[
        "pkey",
        "-in",
        secp256k1.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        secp256k1_public.to_str().unwrap(),
    ])
    .unwrap();
    let p384 = openssl_peer_key(flow.scratch.path(), "P-384").unwrap();
    let certificate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/aws-nitro-enclaves-root-g1.pem");

    let path_hint = format!("pass fileb://{}", peer.public_der.display());
    let cases: Vec<(String, &str)> = vec![
        (twice, "encoded twice"),
        (fileb(&peer.private_pem), "private key"),
        (fileb(&certificate), "certificate"),
        (fileb(&secp256k1_public), "secp256k1"),
        (fileb(&p384.public_der), "ValidationException"),
        ("fileb:///nonexistent/peer.der".to_owned(), "/nonexistent/peer.der"),
        ("not a key".to_owned(), "invalid --public-key: `not a key` is neither PEM nor base64 of DER"),
        ("/nonexistent/peer.der".to_owned(), "`/nonexistent/peer.der` is neither PEM nor base64 of DER"),
        (peer.public_der.to_str().unwrap().to_owned(), &path_hint),
    ];
    for (public_key, expected) in cases {
        let output = flow.agent("derive-shared-secret", &["--key-id", &key_id, "--public-key", &public_key]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "expected `{expected}` in: {stderr}");
        assert!(output.stdout.is_empty());
    }

    // The PEM and base64 forms of a good key are accepted.
    let pem = flow.path("peer.pub.pem");
    openssl(&["pkey", "-in", peer.private_pem.to_str().unwrap(), "-pubout", "-out", pem.to_str().unwrap()]).unwrap();
    for public_key in [fileb(&pem), STANDARD.encode(&der)] {
        let output = flow.agent("derive-shared-secret", &["--key-id", &key_id, "--public-key", &public_key]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(STANDARD.decode(String::from_utf8_lossy(&output.stdout).trim()).unwrap().len(), 32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_exit_3_within_timeout() {
    let flow = start_flow();

    // No parent listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    let started = Instant::now();
    let output = flow.agent_via(&address, "generate-random", &["--number-of-bytes", "8", "--timeout", "10"]);
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&address));
    assert!(started.elapsed() < Duration::from_secs(10));

    // A parent whose KMS endpoint is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", down.local_addr().unwrap());
    drop(down);
    let parent = start_parent_proxy(
        &flow.binaries,
        flow.scratch.path(),
        &endpoint,
        &["--max-attempts", "1", "--request-timeout", "5"],
    )
    .unwrap();
    let started = Instant::now();
    let output = flow.agent_via(&parent.address, "generate-random", &["--number-of-bytes", "8", "--timeout", "10"]);
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unreachable"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_exits_1_with_error_name() {
    let flow = start_flow();
    let key_id = symmetric_key(&flow).await;
    let client = kms_client(&flow.kms.address);
    // A policy that lets the account administer the key but allows
    // GenerateDataKey only for an image this enclave is not.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
             "Action": ["kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"], "Resource": "*"},
            {"Sid": "Enclave", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
             "Action": "kms:GenerateDataKey", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "ab".repeat(48)}}}
        ]
    });
    client.put_key_policy().key_id(&key_id).policy_name("default").policy(policy.to_string()).send().await.unwrap();

    let output = flow.agent("generate-data-key", &["--key-id", &key_id, "--key-spec", "AES_256"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("AccessDeniedException"));
    assert!(output.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_returning_plaintext_is_rejected() {
    use recipient_common::protocol::{
        self, DEFAULT_MAX_FRAME_LEN, GenerateRandomOutput, Output, Request, Response, SecretBytes,
    };

    let flow = start_flow();
    // A parent that drops the Recipient and answers with a plaintext.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Ok(request) = protocol::read_frame::<_, Request>(&mut stream, DEFAULT_MAX_FRAME_LEN).await {
                    let output = Output::GenerateRandom(GenerateRandomOutput {
                        plaintext: Some(SecretBytes(vec![7; 8])),
                        ciphertext_for_recipient: None,
                    });
                    let response = Response::new(request.id, Ok(output));
                    let _ = protocol::write_frame(&mut stream, &response, DEFAULT_MAX_FRAME_LEN).await;
                }
            });
        }
    });

    let output = tokio::task::spawn_blocking(move || {
        let output = flow.agent_via(&address, "generate-random", &["--number-of-bytes", "8"]);
        drop(flow);
        output
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plaintext Plaintext although a Recipient was sent"), "{stderr}");
    assert!(output.stdout.is_empty());
}
