//! The AWS CLI version 1 against kms-local: create-key, get-public-key,
//! derive-shared-secret with `fileb://` (checked against `openssl pkeyutl
//! -derive`), put-key-policy with an ImageSha384 condition, and the two
//! blob mistakes the CLI makes easy (an inline base64 public key, and
//! `fileb://` inside `--recipient`).
//!
//! The CLI is the one `make deps` installs into `.venv/` at the repository
//! root. It only ever talks to the kms-local these tests start on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::start;
use kms_local::Config;
use serde_json::Value;

fn aws_cli() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/aws");
    assert!(
        path.exists(),
        "the AWS CLI is missing at {}; run `make deps` in the repository root to install it",
        path.display()
    );
    path
}

/// The result of one CLI run.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "aws failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap()
    }
}

/// Runs `aws kms ARGS` against `endpoint` with the development credentials
/// and nothing from the user's environment or AWS configuration.
async fn aws(endpoint: &str, home: &Path, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(aws_cli())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", common::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", common::SECRET_ACCESS_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .arg("kms")
        .args(args)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .output()
        .await
        .unwrap();
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn openssl(args: &[&str]) {
    let status = std::process::Command::new("openssl").args(args).status().unwrap();
    assert!(status.success(), "openssl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_derive_matches_openssl() {
    let server = start(Config::ephemeral()).await;
    let endpoint = server.endpoint();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();

    let created = aws(&endpoint, dir, &["create-key", "--key-spec", "ECC_NIST_P256", "--key-usage", "KEY_AGREEMENT"])
        .await
        .json();
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    assert_eq!(created["KeyMetadata"]["KeyAgreementAlgorithms"], serde_json::json!(["ECDH"]));

    let public = aws(&endpoint, dir, &["get-public-key", "--key-id", &key_id]).await.json();
    assert_eq!(public["KeyAgreementAlgorithms"], serde_json::json!(["ECDH"]));
    assert_eq!(public["KeySpec"], "ECC_NIST_P256");
    std::fs::write(path("kms.der"), STANDARD.decode(public["PublicKey"].as_str().unwrap()).unwrap()).unwrap();
    openssl(&["pkey", "-pubin", "-inform", "DER", "-in", &path("kms.der"), "-out", &path("kms.pem")]);

    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &path("peer.pem")]);
    openssl(&["pkey", "-in", &path("peer.pem"), "-pubout", "-outform", "DER", "-out", &path("peer.der")]);
    openssl(&["pkeyutl", "-derive", "-inkey", &path("peer.pem"), "-peerkey", &path("kms.pem"), "-out", &path("z.bin")]);
    let expected = std::fs::read(path("z.bin")).unwrap();
    assert_eq!(expected.len(), 32);

    let derived = aws(
        &endpoint,
        dir,
        &[
            "derive-shared-secret",
            "--key-id",
            &key_id,
            "--key-agreement-algorithm",
            "ECDH",
            "--public-key",
            &format!("fileb://{}", path("peer.der")),
        ],
    )
    .await
    .json();
    assert_eq!(STANDARD.decode(derived["SharedSecret"].as_str().unwrap()).unwrap(), expected);
    assert_eq!(derived["KeyOrigin"], "AWS_KMS");

    // An inline public key: the CLI version 1 base64-encodes it again.
    let peer_base64 = STANDARD.encode(std::fs::read(path("peer.der")).unwrap());
    let inline = aws(
        &endpoint,
        dir,
        &[
            "derive-shared-secret",
            "--key-id",
            &key_id,
            "--key-agreement-algorithm",
            "ECDH",
            "--public-key",
            &peer_base64,
        ],
    )
    .await;
    assert_ne!(inline.code, 0);
    assert!(inline.stderr.contains("ValidationException"), "{}", inline.stderr);
    assert!(inline.stderr.contains("base64 text, not DER"), "{}", inline.stderr);

    // fileb:// inside --recipient is sent as literal text.
    std::fs::write(path("doc.cbor"), b"\x84").unwrap();
    let recipient =
        format!("KeyEncryptionAlgorithm=RSAES_OAEP_SHA_256,AttestationDocument=fileb://{}", path("doc.cbor"));
    let nested = aws(
        &endpoint,
        dir,
        &[
            "derive-shared-secret",
            "--key-id",
            &key_id,
            "--key-agreement-algorithm",
            "ECDH",
            "--public-key",
            &format!("fileb://{}", path("peer.der")),
            "--recipient",
            &recipient,
        ],
    )
    .await;
    assert_ne!(nested.code, 0);
    assert!(nested.stderr.contains("ValidationException"), "{}", nested.stderr);
    assert!(nested.stderr.contains("the file was not read"), "{}", nested.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_put_key_policy_with_image_condition() {
    let server = start(Config::ephemeral()).await;
    let endpoint = server.endpoint();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();

    let created = aws(&endpoint, dir, &["create-key", "--key-spec", "ECC_NIST_P384", "--key-usage", "KEY_AGREEMENT"])
        .await
        .json();
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();

    let image = "ab".repeat(48);
    let policy = format!(
        r#"{{"Version": "2012-10-17", "Statement": [
            {{"Sid": "Admin", "Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:root"}}, "NotAction": "kms:DeriveSharedSecret", "Resource": "*"}},
            {{"Sid": "EnclaveOnly", "Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:root"}}, "Action": "kms:DeriveSharedSecret", "Resource": "*",
              "Condition": {{"StringEqualsIgnoreCase": {{"kms:RecipientAttestation:ImageSha384": "{image}"}}}}}}]}}"#
    );
    let policy_path = dir.join("policy.json");
    std::fs::write(&policy_path, &policy).unwrap();
    let put = aws(
        &endpoint,
        dir,
        &[
            "put-key-policy",
            "--key-id",
            &key_id,
            "--policy-name",
            "default",
            "--policy",
            &format!("file://{}", policy_path.display()),
        ],
    )
    .await;
    assert_eq!(put.code, 0, "{}", put.stderr);

    let stored = aws(&endpoint, dir, &["get-key-policy", "--key-id", &key_id, "--policy-name", "default"]).await.json();
    assert_eq!(stored["Policy"].as_str().unwrap(), policy);

    // Without a Recipient the ImageSha384 condition is not met.
    let peer = dir.join("peer.der");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        dir.join("peer.pem").to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        dir.join("peer.pem").to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        peer.to_str().unwrap(),
    ]);
    let denied = aws(
        &endpoint,
        dir,
        &[
            "derive-shared-secret",
            "--key-id",
            &key_id,
            "--key-agreement-algorithm",
            "ECDH",
            "--public-key",
            &format!("fileb://{}", peer.display()),
        ],
    )
    .await;
    assert_ne!(denied.code, 0);
    assert!(denied.stderr.contains("AccessDeniedException"), "{}", denied.stderr);

    let malformed =
        aws(&endpoint, dir, &["put-key-policy", "--key-id", &key_id, "--policy", "{\"Statement\": 1}"]).await;
    assert_ne!(malformed.code, 0);
    assert!(malformed.stderr.contains("MalformedPolicyDocumentException"), "{}", malformed.stderr);
}
