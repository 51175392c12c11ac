//! The HTTP layer, with hand-built requests: error bodies and statuses for
//! requests an SDK would never send, the body size limit, and concurrent
//! connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::time::Duration;

use common::{raw_request, signed_request, signed_request_at, start};
use kms_local::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JSON: &str = "application/x-amz-json-1.1";

async fn send(address: std::net::SocketAddr, request: &str) -> (u16, String, Value) {
    let (status, headers, body) = raw_request(address, request).await;
    let request_id = headers.iter().find(|(name, _)| name == "x-amzn-requestid").map(|(_, value)| value.clone());
    assert!(request_id.as_ref().is_some_and(|id| id.len() == 36), "x-amzn-RequestId missing: {headers:?}");
    let body: Value = serde_json::from_str(&body).unwrap();
    (status, body["__type"].as_str().unwrap_or_default().to_owned(), body)
}

#[tokio::test]
async fn signed_request_succeeds() {
    let server = start(Config::ephemeral()).await;
    let request = signed_request(server.address(), "TrentService.ListKeys", JSON, "{}");
    let (status, kind, body) = send(server.address(), &request).await;
    assert_eq!((status, kind.as_str()), (200, ""));
    assert_eq!(body["Keys"], serde_json::json!([]));
    assert_eq!(body["Truncated"], false);
}

#[tokio::test]
async fn malformed_requests_get_kms_errors() {
    let server = start(Config::ephemeral()).await;
    let address = server.address();

    let cases = [
        ("TrentService.RotateEverything", JSON, "{}", "UnknownOperationException"),
        ("KmsService.ListKeys", JSON, "{}", "UnknownOperationException"),
        ("TrentService.ListKeys", JSON, "{not json", "SerializationException"),
        ("TrentService.ListKeys", JSON, r#"{"Limit": "ten"}"#, "SerializationException"),
        ("TrentService.Encrypt", JSON, r#"{"KeyId": "k", "Plaintext": "***"}"#, "SerializationException"),
        ("TrentService.ListKeys", "text/plain", "{}", "SerializationException"),
        ("TrentService.DescribeKey", JSON, "{}", "ValidationException"),
    ];
    for (target, content_type, body, expected) in cases {
        let (status, kind, body) = send(address, &signed_request(address, target, content_type, body)).await;
        assert_eq!(kind, expected, "{target} {content_type}: {body}");
        assert_eq!(status, 400, "{target}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }

    let (status, kind, _) = send(address, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!((status, kind.as_str()), (400, "UnknownOperationException"));

    let incomplete = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: {JSON}\r\nX-Amz-Target: TrentService.ListKeys\r\n\
         X-Amz-Date: 20260101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAKMSLOCALEXAMPLE/20260101/us-east-1/kms/aws4_request\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let (status, kind, body) = send(address, &incomplete).await;
    assert_eq!((status, kind.as_str()), (400, "IncompleteSignatureException"), "{body}");
}

#[tokio::test]
async fn oversized_body_is_rejected() {
    let server = start(Config::ephemeral()).await;
    let address = server.address();
    let body = format!(r#"{{"Description": "{}"}}"#, "a".repeat(kms_local::server::MAX_REQUEST_BODY));
    let (status, kind, body) = send(address, &signed_request(address, "TrentService.CreateKey", JSON, &body)).await;
    assert_eq!((status, kind.as_str()), (400, "ValidationException"));
    assert_eq!(
        body["message"].as_str().unwrap(),
        "request body is larger than 1048576 bytes; KMS requests are far smaller, so check what the client sends"
    );
}

#[tokio::test]
async fn slow_connection_does_not_block_others() {
    let server = start(Config::ephemeral()).await;
    let address = server.address();

    // A client that sends headers and then stalls in the middle of its body.
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    stalled.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").await.unwrap();

    let request = signed_request(address, "TrentService.ListKeys", JSON, "{}");
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), send(address, &request)).await.unwrap();
    assert_eq!(status, 200);

    let mut buffer = [0_u8; 1];
    let pending = tokio::time::timeout(Duration::from_millis(100), stalled.read(&mut buffer)).await;
    assert!(pending.is_err(), "the stalled request must still be waiting for its body");
}

#[tokio::test]
async fn clock_skew_over_five_minutes_is_rejected() {
    let server = start(Config::ephemeral()).await;
    let address = server.address();
    let now = time::OffsetDateTime::now_utc();

    let slightly_off =
        signed_request_at(address, "TrentService.ListKeys", JSON, "{}", now - time::Duration::minutes(4));
    let (status, _, _) = send(address, &slightly_off).await;
    assert_eq!(status, 200);

    for (offset, expected) in [(-6, "signature expired"), (6, "signature not yet current")] {
        let request =
            signed_request_at(address, "TrentService.ListKeys", JSON, "{}", now + time::Duration::minutes(offset));
        let (status, kind, body) = send(address, &request).await;
        assert_eq!((status, kind.as_str()), (400, "InvalidSignatureException"), "{offset} minutes");
        assert!(body["message"].as_str().unwrap().starts_with(expected), "{body}");
    }
}
