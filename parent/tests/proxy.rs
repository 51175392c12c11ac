//! parent-proxy as a real process on loopback, driven with protocol frames,
//! in front of a test KMS endpoint whose behaviour each test chooses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use recipient_common::protocol::{
    self, DEFAULT_MAX_FRAME_LEN, DeriveSharedSecretRequest, ErrorFrame, GenerateRandomRequest, Operation, Output,
    Recipient, Request, Response,
};
use recipient_common::transport::{self, Address, Stream};
use recipient_tests::{Service, isolate_aws_environment};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the test KMS endpoint answers.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// A DeriveSharedSecret response with a CiphertextForRecipient.
    Ok,
    /// Sleeps this long, then answers as `Ok`.
    Slow(Duration),
    /// Answers 500 KMSInternalException to the first request, then as `Ok`.
    FailOnce,
    /// Answers 400 AccessDeniedException.
    Deny,
    /// A DeriveSharedSecret response with a 3000-byte CiphertextForRecipient.
    Long,
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that plays KMS.
struct TestKms {
    url: String,
    requests: Arc<AtomicUsize>,
}

async fn start_test_kms(behaviour: Behaviour) -> TestKms {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let counter = Arc::clone(&counter);
            tokio::spawn(serve_http(stream, behaviour, counter));
        }
    });
    TestKms { url, requests }
}

async fn serve_http(mut stream: tokio::net::TcpStream, behaviour: Behaviour, counter: Arc<AtomicUsize>) {
    let mut buffer = Vec::new();
    loop {
        // Read one request: headers, then Content-Length bytes of body.
        let header_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let headers = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
        let length: usize = headers
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        while buffer.len() < header_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..header_end + length);

        let number = counter.fetch_add(1, Ordering::SeqCst);
        let (status, body) = match behaviour {
            Behaviour::Ok => (200, ok_body()),
            Behaviour::Slow(delay) => {
                tokio::time::sleep(delay).await;
                (200, ok_body())
            }
            Behaviour::FailOnce if number == 0 => {
                (500, r#"{"__type":"KMSInternalException","message":"try again"}"#.to_owned())
            }
            Behaviour::FailOnce => (200, ok_body()),
            Behaviour::Long => {
                (200, ok_body().replace("MIAGCSqGSIb3DQEHA6CAMIAC", &"MIAGCSqGSIb3DQEHA6CAMIAC".repeat(1000)))
            }
            Behaviour::Deny => {
                (400, r#"{"__type":"AccessDeniedException","message":"no attestation condition matched"}"#.to_owned())
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-requestid: test-{number}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn ok_body() -> String {
    // "MIAGCSqGSIb3DQEHA6CAMIAC" is the start of a BER EnvelopedData; the
    // proxy passes it through without opening it.
    r#"{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/test","CiphertextForRecipient":"MIAGCSqGSIb3DQEHA6CAMIAC","KeyAgreementAlgorithm":"ECDH","KeyOrigin":"AWS_KMS"}"#.to_owned()
}

/// Starts parent-proxy in front of `endpoint`, logging to `log`.
fn start_proxy(scratch: &Path, endpoint: &str, extra: &[&str]) -> Service {
    start_proxy_with(scratch, endpoint, extra, |_| {})
}

/// Starts parent-proxy as [`start_proxy`] does, after `adjust` has changed
/// its command, for example its environment.
fn start_proxy_with(scratch: &Path, endpoint: &str, extra: &[&str], adjust: impl FnOnce(&mut Command)) -> Service {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
    isolate_aws_environment(&mut command, scratch);
    adjust(&mut command);
    command.args(["--listen", "tcp://127.0.0.1:0", "--endpoint-url", endpoint, "--region", "us-east-1"]);
    command.args(extra);
    let log = std::fs::File::create(scratch.join("parent.log")).unwrap();
    command.env("RUST_LOG", "info").stderr(Stdio::from(log));
    let mut service = Service::start("parent-proxy", command, "parent-proxy listening on ").unwrap();
    service.address = service.address.trim().to_owned();
    service
}

fn read_log(scratch: &Path) -> String {
    std::fs::read_to_string(scratch.join("parent.log")).unwrap()
}

/// Returns the log once it contains `needle`. Request lines are written just
/// after the response, so a test that has the response may read too early.
async fn wait_for_log(scratch: &Path, needle: &str) -> String {
    for _ in 0..100 {
        let log = read_log(scratch);
        if log.contains(needle) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {needle:?} in the log after 5 s: {}", read_log(scratch));
}

fn derive_request(id: u64) -> Request {
    Request::new(
        id,
        Operation::DeriveSharedSecret(DeriveSharedSecretRequest {
            key_id: "alias/test".to_owned(),
            key_agreement_algorithm: "ECDH".to_owned(),
            public_key: ByteBuf::from(vec![0x30, 0x59]),
            grant_tokens: vec![],
            dry_run: false,
            recipient: Some(Recipient::new(vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22])),
        }),
    )
}

async fn connect(service: &Service) -> Stream {
    transport::connect(&service.address.parse::<Address>().unwrap()).await.unwrap()
}

async fn call(stream: &mut Stream, request: &Request) -> Response {
    protocol::write_frame(stream, request, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    protocol::read_frame(stream, DEFAULT_MAX_FRAME_LEN).await.unwrap()
}

fn assert_ok(response: &Response) {
    match &response.result {
        Ok(Output::DeriveSharedSecret(output)) => {
            assert_eq!(output.key_id.as_deref(), Some("arn:aws:kms:us-east-1:111122223333:key/test"));
            assert_eq!(output.ciphertext_for_recipient.as_deref().map(|b| b.len()), Some(18));
        }
        other => panic!("expected a DeriveSharedSecret output, got {other:?}"),
    }
}

/// Reads `count` responses, checks that each is a DeriveSharedSecret output,
/// and returns their ids in ascending order.
async fn read_ok_ids(stream: &mut Stream, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let response: Response = protocol::read_frame(stream, DEFAULT_MAX_FRAME_LEN).await.unwrap();
        assert_ok(&response);
        ids.push(response.id);
    }
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn forwards_and_passes_kms_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &[]);
    let mut stream = connect(&proxy).await;

    let response = call(&mut stream, &derive_request(7)).await;
    assert_eq!(response.id, 7);
    assert_ok(&response);

    let denying = start_test_kms(Behaviour::Deny).await;
    let denied_proxy = start_proxy(scratch.path(), &denying.url, &[]);
    let mut stream = connect(&denied_proxy).await;
    let response = call(&mut stream, &derive_request(8)).await;
    match response.result {
        Err(ErrorFrame::Kms { name, message, request_id }) => {
            assert_eq!(name, "AccessDeniedException");
            assert_eq!(message, "no attestation condition matched");
            assert_eq!(request_id.as_deref(), Some("test-0"));
        }
        other => panic!("expected a KMS error, got {other:?}"),
    }
}

#[tokio::test]
async fn endpoint_from_aws_endpoint_url_kms() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
    isolate_aws_environment(&mut command, scratch.path());
    command.env("AWS_ENDPOINT_URL_KMS", &kms.url).args(["--listen", "tcp://127.0.0.1:0"]);
    let proxy = Service::start("parent-proxy", command, "parent-proxy listening on ").unwrap();
    let mut stream = connect(&proxy).await;

    assert_ok(&call(&mut stream, &derive_request(1)).await);
    assert_eq!(kms.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn bad_endpoint_url_rejected_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    for (url, expected) in [
        ("127.0.0.1:4566", "has no http:// or https:// scheme; write for example http://127.0.0.1:4566"),
        ("ftp://127.0.0.1", "is not an http:// or https:// URL"),
        ("http://", "has no host"),
        ("https:///path", "has no host"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
        isolate_aws_environment(&mut command, scratch.path());
        let output = command.args(["--listen", "tcp://127.0.0.1:0", "--endpoint-url", url]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
    }
}

#[tokio::test]
async fn unreachable_kms_is_typed_within_timeout() {
    let scratch = tempfile::tempdir().unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = start_proxy(scratch.path(), &url, &["--max-attempts", "1", "--request-timeout", "5"]);
    let mut stream = connect(&proxy).await;

    let started = Instant::now();
    let response = call(&mut stream, &derive_request(1)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    match response.result {
        Err(ErrorFrame::KmsUnreachable { message }) => {
            assert!(message.contains(&format!("check that {url} is reachable")), "{message}");
            assert!(message.contains("--endpoint-url"), "{message}");
        }
        other => panic!("expected KmsUnreachable, got {other:?}"),
    }
    let log = wait_for_log(scratch.path(), "request failed").await;
    let line = log.lines().find(|line| line.contains("request failed")).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("outcome=\"kms_unreachable\""), "{line}");
}

#[tokio::test]
async fn slow_kms_times_out() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Slow(Duration::from_secs(10))).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &["--max-attempts", "1", "--request-timeout", "1"]);
    let mut stream = connect(&proxy).await;

    let started = Instant::now();
    let response = call(&mut stream, &derive_request(1)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(response.result, Err(ErrorFrame::KmsTimeout { .. })), "{:?}", response.result);
}

#[tokio::test]
async fn retry_after_500_succeeds_and_is_logged() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::FailOnce).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &["--max-attempts", "3"]);
    let mut stream = connect(&proxy).await;

    let response = call(&mut stream, &derive_request(1)).await;
    assert_ok(&response);
    assert_eq!(kms.requests.load(Ordering::SeqCst), 2);
    let log = wait_for_log(scratch.path(), "request forwarded").await;
    assert!(log.contains("retrying KMS call"), "{log}");
    assert!(log.contains("attempt=2"), "{log}");
    // The retry names the enclave request it is made for, on the connection
    // that the request line names.
    let retry = log.lines().find(|line| line.contains("retrying KMS call")).unwrap();
    let forwarded = log.lines().find(|line| line.contains("request forwarded")).unwrap();
    let connection = forwarded.split_whitespace().find(|field| field.starts_with("connection=")).unwrap();
    assert!(retry.contains(&format!("{connection} request_id=1 ")), "{retry}");
    assert!(log.contains(r#"previous_error="HTTP 500: "#), "{log}");
    assert!(log.contains("[KMSInternalException]: try again"), "{log}");
}

#[tokio::test]
async fn allowlists_and_attestation_rule_refuse() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let proxy = start_proxy(
        scratch.path(),
        &kms.url,
        &["--allow-operation", "DeriveSharedSecret", "--allow-key", "alias/test"],
    );
    let mut stream = connect(&proxy).await;

    let random = Request::new(
        1,
        Operation::GenerateRandom(GenerateRandomRequest {
            number_of_bytes: 32,
            custom_key_store_id: None,
            recipient: Some(Recipient::new(vec![1])),
        }),
    );
    let response = call(&mut stream, &random).await;
    assert!(
        matches!(&response.result, Err(ErrorFrame::Refused { rule, .. }) if rule == "allow-operation"),
        "{response:?}"
    );

    let mut other_key = derive_request(2);
    if let Operation::DeriveSharedSecret(request) = &mut other_key.operation {
        request.key_id = "alias/other".to_owned();
    }
    let response = call(&mut stream, &other_key).await;
    assert!(matches!(&response.result, Err(ErrorFrame::Refused { rule, .. }) if rule == "allow-key"), "{response:?}");

    let mut unattested = derive_request(3);
    if let Operation::DeriveSharedSecret(request) = &mut unattested.operation {
        request.recipient = None;
    }
    let response = call(&mut stream, &unattested).await;
    assert!(
        matches!(&response.result, Err(ErrorFrame::Refused { rule, .. }) if rule == "allow-unattested"),
        "{response:?}"
    );
    assert_eq!(kms.requests.load(Ordering::SeqCst), 0, "nothing refused may reach KMS");

    let response = call(&mut stream, &derive_request(4)).await;
    assert_ok(&response);

    // Refusals are decisions about a request, not faults of the parent.
    let is_refusal = |line: &&str| line.contains("outcome=\"refused\"");
    let mut log = read_log(scratch.path());
    for _ in 0..100 {
        if log.lines().filter(is_refusal).count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = read_log(scratch.path());
    }
    let refused: Vec<&str> = log.lines().filter(is_refusal).collect();
    assert_eq!(refused.len(), 3, "{log}");
    for line in refused {
        assert!(line.contains(" INFO "), "{line}");
    }
}

#[tokio::test]
async fn malformed_and_oversized_frames_do_not_stop_service() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &["--max-frame-bytes", "16384"]);

    // A body that is not CBOR: typed error, and the connection goes on.
    let mut stream = connect(&proxy).await;
    stream.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let response: Response = protocol::read_frame(&mut stream, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    assert!(matches!(response.result, Err(ErrorFrame::Malformed { .. })), "{response:?}");
    assert_ok(&call(&mut stream, &derive_request(2)).await);

    // An oversized frame: typed error, then the proxy closes that connection.
    let mut big = connect(&proxy).await;
    big.write_all(&100_000u32.to_be_bytes()).await.unwrap();
    let response: Response = protocol::read_frame(&mut big, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    match response.result {
        Err(ErrorFrame::Malformed { message }) => assert!(message.contains("100000"), "{message}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(read.unwrap(), 0, "the connection must be closed");

    // An HTTP client: the error names the text it sent, then the proxy
    // closes that connection.
    let mut http = connect(&proxy).await;
    http.write_all(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let response: Response = protocol::read_frame(&mut http, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    match response.result {
        Err(ErrorFrame::Malformed { message }) => {
            assert!(message.starts_with("the peer sent \"POST\" where a frame length belongs"), "{message}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    // The proxy closes with the rest of the request unread, so the kernel
    // may end the connection with a reset instead of a clean end of stream.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), http.read_to_end(&mut rest)).await.unwrap();
    match read {
        Ok(count) => assert_eq!(count, 0, "the connection must be closed"),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
    }

    // A client that disconnects in the middle of a frame.
    let mut cut = connect(&proxy).await;
    let frame = protocol::encode_frame(&derive_request(3)).unwrap();
    cut.write_all(&frame[..frame.len() / 2]).await.unwrap();
    drop(cut);

    let mut other = connect(&proxy).await;
    assert_ok(&call(&mut other, &derive_request(4)).await);
}

#[tokio::test]
async fn pipelined_requests_all_get_responses() {
    // With the default single worker thread and with several.
    for workers in ["1", "3"] {
        let scratch = tempfile::tempdir().unwrap();
        let kms = start_test_kms(Behaviour::Ok).await;
        let proxy = start_proxy(scratch.path(), &kms.url, &["--worker-threads", workers]);
        let mut stream = connect(&proxy).await;

        let mut frames = Vec::new();
        for id in 1..=20 {
            protocol::append_frame(&mut frames, &derive_request(id), DEFAULT_MAX_FRAME_LEN).unwrap();
        }
        stream.write_all(&frames).await.unwrap();
        assert_eq!(read_ok_ids(&mut stream, 20).await, (1..=20).collect::<Vec<_>>(), "{workers} workers");
        assert_eq!(kms.requests.load(Ordering::SeqCst), 20, "{workers} workers");
    }
}

#[test]
fn out_of_range_options_rejected() {
    let scratch = tempfile::tempdir().unwrap();
    // Each case: the option, the value, and a part of the message.
    let cases = [
        ("--worker-threads", "0", "out of range; write a whole number from 1 to 256"),
        ("--worker-threads", "257", "out of range; write a whole number from 1 to 256"),
        ("--worker-threads", "two", "is not a whole number; write one from 1 to 256"),
        ("--max-connections", "0", "write a whole number from 1 to 4294967295"),
        ("--max-in-flight", "0", "write a whole number from 1 to 4294967295"),
        ("--max-in-flight", "-3", "write a whole number from 1 to 4294967295"),
        ("--max-attempts", "11", "write a whole number from 1 to 10"),
        ("--max-frame-bytes", "0", "write a whole number from 16384 to 16777216"),
        ("--max-frame-bytes", "16383", "write a whole number from 16384 to 16777216"),
        ("--max-frame-bytes", "16777217", "write a whole number from 16384 to 16777216"),
        ("--request-timeout", "0", "would make every call time out"),
        ("--connect-timeout", "0", "would make every call time out"),
        ("--idle-timeout", "0", "would make every call time out"),
        ("--request-timeout", "nan", "write a number of seconds above 0 and at most 86400"),
        ("--request-timeout", "inf", "out of range"),
        ("--request-timeout", "1e400", "out of range"),
        ("--idle-timeout", "-1", "out of range"),
        ("--shutdown-grace", "86401", "from 0 to 86400"),
        ("--shutdown-grace", "soon", "is not a number of seconds"),
        ("--region", "", "is not an AWS region; a region is lowercase letters, digits and hyphens"),
        ("--region", "us east 1", "is not an AWS region"),
        ("--allow-key", "", "an empty key id matches no request"),
        ("--metrics-listen", "localhost:9090", "is not IP:PORT; write for example 127.0.0.1:9090"),
    ];
    for (option, value, expected) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
        isolate_aws_environment(&mut command, scratch.path());
        let output = command.args(["--listen", "tcp://127.0.0.1:0", &format!("{option}={value}")]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{option} {value}: {stderr}");
        assert!(stderr.contains(option), "{option} {value}: {stderr}");
        assert!(stderr.contains(value), "{option} {value}: {stderr}");
        assert!(stderr.contains(expected), "{option} {value}: {stderr}");
    }

    // A negative number given as a separate argument is still the option's
    // value, not an unknown option.
    let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
    isolate_aws_environment(&mut command, scratch.path());
    let output = command.args(["--listen", "tcp://127.0.0.1:0", "--connect-timeout", "-1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--connect-timeout"), "{stderr}");
    assert!(stderr.contains("`-1` is out of range"), "{stderr}");
}

#[test]
fn invalid_region_from_environment_fails_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
    isolate_aws_environment(&mut command, scratch.path());
    command.env("AWS_REGION", "us east 1");
    let output =
        command.args(["--listen", "tcp://127.0.0.1:0", "--endpoint-url", "http://127.0.0.1:9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AWS region `us east 1` is not valid; a region is lowercase letters"), "{stderr}");
}

#[test]
fn metrics_port_in_use_named() {
    let scratch = tempfile::tempdir().unwrap();
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = occupied.local_addr().unwrap().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
    isolate_aws_environment(&mut command, scratch.path());
    let output = command
        // The tcp:// form of --listen is accepted here too.
        .args([
            "--listen",
            "tcp://127.0.0.1:0",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--metrics-listen",
            &format!("tcp://{address}"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen for metrics on {address}")), "{stderr}");
    assert!(stderr.contains("stop that process or choose another port"), "{stderr}");
}

#[test]
fn missing_region_fails_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_parent-proxy"));
    isolate_aws_environment(&mut command, scratch.path());
    command.env_remove("AWS_REGION").env_remove("AWS_DEFAULT_REGION");
    let output =
        command.args(["--listen", "tcp://127.0.0.1:0", "--endpoint-url", "http://127.0.0.1:9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS region is configured; pass --region"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn missing_credentials_named_in_error() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let proxy = start_proxy_with(scratch.path(), &kms.url, &[], |command| {
        for variable in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            command.env_remove(variable);
        }
    });
    let mut stream = connect(&proxy).await;

    let response = call(&mut stream, &derive_request(1)).await;
    match response.result {
        Err(ErrorFrame::Internal { message }) => {
            assert!(message.starts_with("parent-proxy has no AWS credentials to sign the KMS request"), "{message}");
            assert!(message.contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{message}");
            assert!(!message.contains("--endpoint-url"), "{message}");
        }
        other => panic!("expected an Internal error naming credentials, got {other:?}"),
    }
    // Nothing reached KMS.
    assert_eq!(kms.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_response_becomes_error() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Long).await;
    // The request fits the limit, but the response, with its 18,000-byte ciphertext, does not.
    let limit = "16384";
    let proxy = start_proxy(scratch.path(), &kms.url, &["--max-frame-bytes", limit]);
    let mut stream = connect(&proxy).await;

    let response = call(&mut stream, &derive_request(5)).await;
    assert_eq!(response.id, 5);
    match response.result {
        Err(ErrorFrame::Internal { message }) => {
            assert!(message.contains(&format!("maximum of {limit} bytes")), "{message}");
            assert!(message.contains("--max-frame-bytes"), "{message}");
        }
        other => panic!("expected an Internal error, got {other:?}"),
    }
    // The connection goes on.
    let response = call(&mut stream, &derive_request(6)).await;
    assert!(matches!(response.result, Err(ErrorFrame::Internal { .. })), "{response:?}");
    assert_eq!(response.id, 6);
    assert_eq!(kms.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn client_disconnecting_mid_request_does_not_stop_service() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Slow(Duration::from_millis(500))).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &[]);

    let mut leaving = connect(&proxy).await;
    protocol::write_frame(&mut leaving, &derive_request(1), DEFAULT_MAX_FRAME_LEN).await.unwrap();
    drop(leaving);

    let mut stream = connect(&proxy).await;
    assert_ok(&call(&mut stream, &derive_request(2)).await);
}

#[tokio::test]
async fn in_flight_limit_answers_busy() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Slow(Duration::from_millis(1500))).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &["--max-in-flight", "1"]);
    let mut stream = connect(&proxy).await;

    protocol::write_frame(&mut stream, &derive_request(1), DEFAULT_MAX_FRAME_LEN).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    protocol::write_frame(&mut stream, &derive_request(2), DEFAULT_MAX_FRAME_LEN).await.unwrap();

    // The busy answer to request 2 comes first: responses are not held in order.
    let first: Response = protocol::read_frame(&mut stream, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    assert_eq!(first.id, 2);
    assert!(matches!(first.result, Err(ErrorFrame::Busy { .. })), "{first:?}");
    let second: Response = protocol::read_frame(&mut stream, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    assert_eq!(second.id, 1);
    assert_ok(&second);
}

#[tokio::test]
async fn slow_request_does_not_hold_up_the_next() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Slow(Duration::from_millis(300))).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &[]);
    let mut stream = connect(&proxy).await;

    let started = Instant::now();
    for id in 1..=8 {
        protocol::write_frame(&mut stream, &derive_request(id), DEFAULT_MAX_FRAME_LEN).await.unwrap();
    }
    assert_eq!(read_ok_ids(&mut stream, 8).await, (1..=8).collect::<Vec<_>>());
    // Eight sequential calls would take at least 2.4 s.
    assert!(started.elapsed() < Duration::from_millis(2000), "took {:?}", started.elapsed());
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn thousand_idle_connections_keep_memory_bounded() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &[]);
    let mut warm = connect(&proxy).await;
    assert_ok(&call(&mut warm, &derive_request(1)).await);
    let before = resident_kib(proxy.pid());

    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(connect(&proxy).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = connect(&proxy).await;
    assert_ok(&call(&mut stream, &derive_request(2)).await);
    let after = resident_kib(proxy.pid());

    // Each idle connection costs a task and two small buffers: 1000 of them
    // must stay well under 16 MiB, and the whole process under 50 MiB.
    assert!(after.saturating_sub(before) < 16 * 1024, "grew from {before} KiB to {after} KiB");
    assert!(after < 50 * 1024, "resident {after} KiB");
    drop(idle);
}

#[tokio::test]
async fn connection_limit_answers_busy() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let proxy = start_proxy(scratch.path(), &kms.url, &["--max-connections", "2"]);
    let _first = connect(&proxy).await;
    let _second = connect(&proxy).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut third = connect(&proxy).await;
    let response: Response = protocol::read_frame(&mut third, DEFAULT_MAX_FRAME_LEN).await.unwrap();
    assert_eq!(response.id, 0);
    assert!(matches!(response.result, Err(ErrorFrame::Busy { .. })), "{response:?}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Slow(Duration::from_millis(800))).await;
    let mut proxy = start_proxy(scratch.path(), &kms.url, &["--shutdown-grace", "10"]);
    let mut stream = connect(&proxy).await;

    for id in 1..=20 {
        protocol::write_frame(&mut stream, &derive_request(id), DEFAULT_MAX_FRAME_LEN).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal("TERM").unwrap();

    let mut ids = Vec::new();
    for _ in 1..=20 {
        let response: Response = protocol::read_frame(&mut stream, DEFAULT_MAX_FRAME_LEN).await.unwrap();
        assert_ok(&response);
        ids.push(response.id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).unwrap(), Some(0));

    // Each request's line is written after its response, and before the exit.
    let log = read_log(scratch.path());
    let forwarded = log.lines().filter(|line| line.contains("request forwarded")).count();
    assert_eq!(forwarded, 20, "{log}");

    // After the stop, new connections are refused.
    let address = proxy.address.parse::<Address>().unwrap();
    assert!(transport::connect(&address).await.is_err());
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    let scratch = tempfile::tempdir().unwrap();
    let kms = start_test_kms(Behaviour::Ok).await;
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let proxy = start_proxy(scratch.path(), &kms.url, &["--metrics-listen", &metrics_address, "--log-format", "json"]);
    let mut stream = connect(&proxy).await;
    assert_ok(&call(&mut stream, &derive_request(1)).await);

    let health = http_get(&metrics_address, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let metrics = http_get(&metrics_address, "/metrics").await;
    assert!(
        metrics.contains("parent_proxy_requests_total{operation=\"DeriveSharedSecret\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("parent_proxy_connections 1"), "{metrics}");

    // JSON logs: one line per request with the ids and no document bytes.
    let log = wait_for_log(scratch.path(), "request forwarded").await;
    let line = log.lines().find(|l| l.contains("request forwarded")).expect("a request log line");
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["fields"]["request_id"], 1);
    assert_eq!(entry["fields"]["operation"], "DeriveSharedSecret");
    assert_eq!(entry["fields"]["key_id"], "alias/test");
    assert_eq!(entry["fields"]["kms_request_id"], "test-0");
    // The test document is not a parsable attestation document.
    let document = entry["fields"]["document"].as_str().unwrap();
    assert!(document.starts_with("sha256:"), "{document}");
    assert!(document.ends_with(" pcr0:unparsable"), "{document}");
    assert_eq!(document.len(), "sha256: pcr0:unparsable".len() + 16, "{document}");
}

async fn http_get(address: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
