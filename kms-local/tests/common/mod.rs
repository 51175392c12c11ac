//! Shared helpers of the kms-local integration tests: an in-process server on
//! 127.0.0.1, aws-sdk-kms clients pointed at it with explicit credentials,
//! and a small attestation CA that signs documents the server can be told to
//! trust.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use kms_local::{Config, Kms, RunningServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use recipient_common::attestation::{self, AttestationDocument};

pub const ACCESS_KEY_ID: &str = "AKIAKMSLOCALEXAMPLE";
pub const SECRET_ACCESS_KEY: &str = "kms-local-example-secret";

/// Starts an in-process kms-local on a free loopback port.
pub async fn start(config: Config) -> RunningServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    RunningServer::spawn(listener, Kms::open(config).unwrap()).unwrap()
}

/// An aws-sdk-kms client with the development credentials.
pub fn client(endpoint: &str) -> aws_sdk_kms::Client {
    client_with(endpoint, ACCESS_KEY_ID, SECRET_ACCESS_KEY, "us-east-1")
}

/// An aws-sdk-kms client with explicit credentials and region; it never looks
/// for credentials elsewhere (no environment, profile or instance metadata).
pub fn client_with(endpoint: &str, access_key_id: &str, secret: &str, region: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "kms-local-test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// The `__type` name and message of an SDK error.
pub fn error_parts<E, R>(error: &aws_sdk_kms::error::SdkError<E, R>) -> (String, String)
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    use aws_sdk_kms::error::ProvideErrorMetadata;
    let code = error.code().map(str::to_owned).unwrap_or_else(|| format!("no error code: {error:?}"));
    (code, error.message().unwrap_or_default().to_owned())
}

/// An ephemeral RSA key pair like the one an enclave makes for `Recipient`.
pub struct RecipientKey {
    pub private: PrivateDecryptingKey,
    pub spki: Vec<u8>,
}

impl RecipientKey {
    pub fn new() -> Self {
        Self::with_size(KeySize::Rsa2048)
    }

    pub fn with_size(size: KeySize) -> Self {
        let private = PrivateDecryptingKey::generate(size).unwrap();
        let spki = private.public_key().as_der().unwrap().as_ref().to_vec();
        Self { private, spki }
    }

    /// Opens a `CiphertextForRecipient`.
    pub fn open(&self, envelope: &[u8]) -> Vec<u8> {
        recipient_common::cms::decrypt(envelope, &self.private).unwrap().to_vec()
    }
}

/// A root → leaf P-384 chain that signs attestation documents.
pub struct TestCa {
    pub root_pem: String,
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

fn params(common_name: &str, is_ca: IsCa) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = is_ca;
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(3);
    params
}

impl TestCa {
    pub fn new() -> Self {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut root_params = params("kms-local test root", IsCa::Ca(BasicConstraints::Unconstrained));
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = root_params.self_signed(&root_key).unwrap();
        let issuer = Issuer::new(root_params, root_key);

        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut leaf_params = params("kms-local test leaf", IsCa::ExplicitNoCa);
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let leaf_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &leaf_key.serialize_der()).unwrap();

        Self { root_pem: root.pem(), root_der: root.der().to_vec(), leaf_der: leaf.der().to_vec(), leaf_key }
    }

    /// A config with an in-memory store that trusts this CA.
    pub fn config(&self) -> Config {
        let mut config = Config::ephemeral();
        config.trust_roots_pem.push(self.root_pem.clone().into_bytes());
        config
    }

    /// Signs a document with `pcrs` and `public_key`, timestamped `age` ago.
    pub fn document_aged(&self, pcrs: &BTreeMap<u32, Vec<u8>>, public_key: Option<&[u8]>, age: Duration) -> Vec<u8> {
        let timestamp = (SystemTime::now() - age).duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let document = AttestationDocument {
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".to_owned(),
            digest: "SHA384".to_owned(),
            timestamp,
            pcrs: pcrs.clone(),
            certificate: self.leaf_der.clone(),
            cabundle: vec![self.root_der.clone()],
            public_key: public_key.map(<[u8]>::to_vec),
            user_data: None,
            nonce: None,
        };
        attestation::sign(&document, &self.leaf_key).unwrap()
    }

    /// Signs a fresh document.
    pub fn document(&self, pcrs: &BTreeMap<u32, Vec<u8>>, public_key: Option<&[u8]>) -> Vec<u8> {
        self.document_aged(pcrs, public_key, Duration::ZERO)
    }
}

/// PCR0–4 and PCR8 of a made-up production enclave, each byte set to `seed`
/// plus the index.
pub fn pcrs(seed: u8) -> BTreeMap<u32, Vec<u8>> {
    [0_u32, 1, 2, 3, 4, 8].iter().map(|&index| (index, vec![seed.wrapping_add(index as u8); 48])).collect()
}

/// The PCRs of a debug-mode enclave: PCR0, PCR1 and PCR2 all zero.
pub fn debug_pcrs() -> BTreeMap<u32, Vec<u8>> {
    let mut pcrs = pcrs(7);
    for index in [0, 1, 2] {
        pcrs.insert(index, vec![0; 48]);
    }
    pcrs
}

/// Sends one raw HTTP/1.1 request and returns the status line, the headers
/// (lower-case names) and the body.
pub async fn raw_request(address: std::net::SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    (status, headers, body.to_owned())
}

/// Builds a raw HTTP/1.1 request signed with SigV4 by a small signer written
/// for the tests (independent of the server's verifier), with `Connection:
/// close` so the response ends the stream.
pub fn signed_request(address: std::net::SocketAddr, target: &str, content_type: &str, body: &str) -> String {
    signed_request_at(address, target, content_type, body, time::OffsetDateTime::now_utc())
}

/// Like [`signed_request`], signed as if the client clock read `signed_at`.
pub fn signed_request_at(
    address: std::net::SocketAddr,
    target: &str,
    content_type: &str,
    body: &str,
    signed_at: time::OffsetDateTime,
) -> String {
    use aws_lc_rs::{digest, hmac};
    let host = address.to_string();
    let amz_date =
        signed_at.format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap();
    let date = &amz_date[..8];
    let payload_hash = hex::encode(digest::digest(&digest::SHA256, body.as_bytes()));
    let canonical = format!(
        "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n\n\
         content-type;host;x-amz-date;x-amz-target\n{payload_hash}"
    );
    let scope = format!("{date}/us-east-1/kms/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let mut key = format!("AWS4{SECRET_ACCESS_KEY}").into_bytes();
    for part in [date, "us-east-1", "kms", "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes()).as_ref().to_vec();
    }
    let signature = hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), string_to_sign.as_bytes()));
    format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nX-Amz-Date: {amz_date}\r\n\
         X-Amz-Target: {target}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{scope}, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
