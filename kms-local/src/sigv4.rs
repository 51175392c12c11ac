//! Verification of AWS Signature Version 4 on incoming requests.
//!
//! The server recomputes the signature from the canonical request (method,
//! path, query, the headers named in `SignedHeaders`, the SHA-256 of the body)
//! with the secret of the access key in the credential scope, and compares it
//! in constant time. The scope must name the configured region, the service
//! `kms` and the date of `X-Amz-Date`, which must lie within five minutes of
//! the server clock. Query-string (presigned) authentication is not accepted.

use std::time::{Duration, SystemTime};

use aws_lc_rs::{digest, hmac};
use axum::http::{HeaderMap, Method, Uri};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::credentials::{Credentials, Principal};
use crate::error::{ErrorKind, KmsError};

/// The service name in the credential scope.
pub const SERVICE: &str = "kms";
/// The largest accepted difference between `X-Amz-Date` and the server clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorKind::IncompleteSignature, message)
}

fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorKind::InvalidSignature, message)
}

/// Verifies the signature of a request and returns the principal that signed
/// it. `now` is the server clock.
pub fn verify<'c>(
    credentials: &'c Credentials,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<&'c Principal, KmsError> {
    let Some(header) = headers.get("authorization") else {
        if uri.query().is_some_and(|query| query.contains("X-Amz-Signature")) {
            return Err(incomplete(
                "query-string (presigned) authentication is not supported; sign the Authorization header",
            ));
        }
        return Err(KmsError::new(
            ErrorKind::MissingAuthenticationToken,
            "missing Authorization header; sign the request with AWS Signature Version 4",
        ));
    };
    let header = header.to_str().map_err(|_| incomplete("Authorization header is not visible ASCII"))?;
    let authorization = parse_authorization(header)?;

    let principal = credentials.principal(authorization.access_key_id).ok_or_else(|| {
        KmsError::new(
            ErrorKind::UnrecognizedClient,
            format!(
                "the security token included in the request is invalid: access key id {} is not configured",
                authorization.access_key_id
            ),
        )
    })?;

    let amz_date = headers
        .get("x-amz-date")
        .ok_or_else(|| incomplete("missing X-Amz-Date header; it must carry the signing time as YYYYMMDDTHHMMSSZ"))?
        .to_str()
        .map_err(|_| incomplete("X-Amz-Date header is not visible ASCII"))?;
    let signed_at = parse_amz_date(amz_date)?;
    check_clock_skew(amz_date, signed_at, now)?;
    if amz_date.get(..8) != Some(authorization.date) {
        return Err(invalid(format!(
            "date {} in the credential scope does not match X-Amz-Date {amz_date}",
            authorization.date
        )));
    }
    if authorization.region != credentials.region {
        return Err(invalid(format!(
            "credential should be scoped to a valid region: found {:?}, this kms-local serves {:?}",
            authorization.region, credentials.region
        )));
    }
    if authorization.service != SERVICE {
        return Err(invalid(format!(
            "credential should be scoped to the correct service: found {:?}, expected {SERVICE:?}",
            authorization.service
        )));
    }
    if !authorization.signed_headers.contains(&"host") {
        return Err(invalid("SignedHeaders must include host"));
    }

    let canonical = canonical_request(method, uri, headers, &authorization.signed_headers, body)?;
    let scope = format!("{}/{}/{}/aws4_request", authorization.date, authorization.region, authorization.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let key = principal.signing_key(authorization.date, authorization.region);
    let signature = hex::decode(authorization.signature)
        .map_err(|_| incomplete(format!("Signature {:?} is not hex", authorization.signature)))?;
    hmac::verify(&key, string_to_sign.as_bytes(), &signature).map_err(|_| {
        invalid(
            "the request signature we calculated does not match the signature you provided; \
             check the secret access key and the signing method",
        )
    })?;
    Ok(principal)
}

/// Derives the SigV4 signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut key = zeroize::Zeroizing::new(format!("AWS4{secret}").into_bytes());
    for part in [date, region, service, "aws4_request"] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes());
        *key = tag.as_ref().to_vec();
    }
    hmac::Key::new(hmac::HMAC_SHA256, &key)
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, KmsError> {
    let Some(rest) = header.strip_prefix(ALGORITHM) else {
        let found = header.split_whitespace().next().unwrap_or("");
        return Err(incomplete(format!("unsupported authorization algorithm {found:?}; expected {ALGORITHM}")));
    };

    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(value) = part.strip_prefix("Credential=") {
            credential = Some(value);
        } else if let Some(value) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(value);
        } else if let Some(value) = part.strip_prefix("Signature=") {
            signature = Some(value);
        } else if !part.is_empty() {
            return Err(incomplete(format!("unknown Authorization parameter {part:?}")));
        }
    }
    let missing = |name: &str| incomplete(format!("Authorization header requires a '{name}' parameter"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(incomplete(format!(
            "Credential {credential:?} is malformed; expected ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request"
        )));
    };
    if *terminator != "aws4_request" {
        return Err(incomplete(format!("credential scope must end with aws4_request, found {terminator:?}")));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!("date {date:?} in the credential scope is not YYYYMMDD")));
    }
    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    if signed_headers.iter().any(|name| name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(incomplete("SignedHeaders must be lower-case header names separated by ';'"));
    }
    Ok(Authorization { access_key_id, date, region, service, signed_headers, signature })
}

fn parse_amz_date(text: &str) -> Result<SystemTime, KmsError> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed = time::PrimitiveDateTime::parse(text, format)
        .map_err(|_| incomplete(format!("X-Amz-Date {text:?} is not in the form YYYYMMDDTHHMMSSZ")))?;
    Ok(SystemTime::from(parsed.assume_utc()))
}

fn check_clock_skew(amz_date: &str, signed_at: SystemTime, now: SystemTime) -> Result<(), KmsError> {
    let server_time = OffsetDateTime::from(now);
    if signed_at + MAX_CLOCK_SKEW < now {
        return Err(invalid(format!(
            "signature expired: {amz_date} is more than 5 minutes before the server time {server_time}; check the client clock"
        )));
    }
    if signed_at > now + MAX_CLOCK_SKEW {
        return Err(invalid(format!(
            "signature not yet current: {amz_date} is more than 5 minutes after the server time {server_time}; check the client clock"
        )));
    }
    Ok(())
}

fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &[&str],
    body: &[u8],
) -> Result<String, KmsError> {
    let path = if uri.path().is_empty() { "/" } else { uri.path() };
    let mut canonical = String::with_capacity(1024);
    canonical.push_str(method.as_str());
    canonical.push('\n');
    canonical.push_str(path);
    canonical.push('\n');
    canonical.push_str(&canonical_query(uri.query().unwrap_or("")));
    canonical.push('\n');
    for name in signed_headers {
        canonical.push_str(name);
        canonical.push(':');
        let mut values = headers.get_all(*name).iter().peekable();
        if values.peek().is_none() {
            return Err(invalid(format!("header {name} is listed in SignedHeaders but absent from the request")));
        }
        for (index, value) in values.enumerate() {
            let value = value.to_str().map_err(|_| incomplete(format!("signed header {name} is not visible ASCII")))?;
            if index > 0 {
                canonical.push(',');
            }
            // Runs of spaces inside a value become one space.
            for (word_index, word) in value.split_whitespace().enumerate() {
                if word_index > 0 {
                    canonical.push(' ');
                }
                canonical.push_str(word);
            }
        }
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(&hex::encode(digest::digest(&digest::SHA256, body)));
    Ok(canonical)
}

/// Sorts the query parameters by name and value, as SigV4 requires. The
/// parameters are kept in the encoding the client sent.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    pairs.sort_unstable();
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::http::HeaderValue;

    /// Signs like a client would, so that each test can break one part.
    fn signed_headers(secret: &str, amz_date: &str, scope_region: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:4566"));
        headers.insert("x-amz-date", HeaderValue::from_str(amz_date).unwrap());
        headers.insert("x-amz-target", HeaderValue::from_static("TrentService.ListKeys"));
        let names = ["host", "x-amz-date", "x-amz-target"];
        let canonical = canonical_request(&Method::POST, &Uri::from_static("/"), &headers, &names, body).unwrap();
        let date = &amz_date[..8];
        let scope = format!("{date}/{scope_region}/kms/aws4_request");
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
        );
        let key = signing_key(secret, date, scope_region, "kms");
        let signature = hex::encode(hmac::sign(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "{ALGORITHM} Credential=AKIAKMSLOCALEXAMPLE/{scope}, SignedHeaders={}, Signature={signature}",
            names.join(";")
        );
        headers.insert("authorization", HeaderValue::from_str(&authorization).unwrap());
        headers
    }

    fn at(text: &str) -> SystemTime {
        parse_amz_date(text).unwrap()
    }

    fn check(headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<String, KmsError> {
        let credentials = Credentials::development();
        verify(&credentials, &Method::POST, &Uri::from_static("/"), headers, body, now).map(|p| p.arn.clone())
    }

    #[test]
    fn signing_key_follows_scope_date() {
        // The principal keeps the last day's signing key; a request of another
        // day, and a return to the first, must each verify with their own.
        let credentials = Credentials::development();
        let verify_at = |amz_date: &str| {
            let headers = signed_headers("kms-local-example-secret", amz_date, "us-east-1", b"{}");
            verify(&credentials, &Method::POST, &Uri::from_static("/"), &headers, b"{}", at(amz_date)).map(|_| ())
        };
        for amz_date in ["20260101T000000Z", "20260102T000000Z", "20260101T120000Z", "20260102T235959Z"] {
            verify_at(amz_date).unwrap_or_else(|error| panic!("{amz_date}: {error}"));
        }
        // A wrong secret still fails on a day whose key is cached.
        let headers = signed_headers("not-the-secret", "20260102T000000Z", "us-east-1", b"{}");
        let error =
            verify(&credentials, &Method::POST, &Uri::from_static("/"), &headers, b"{}", at("20260102T000000Z"))
                .unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidSignature);
    }

    #[test]
    fn signing_key_matches_aws_example() {
        // The worked example of the AWS SigV4 documentation ("Examples of how
        // to derive a signing key"): secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
        // 20120215, us-east-1, iam.
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        let tag = hmac::sign(&key, b"");
        let expected = hmac::sign(
            &hmac::Key::new(
                hmac::HMAC_SHA256,
                &hex::decode("f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d").unwrap(),
            ),
            b"",
        );
        assert_eq!(tag.as_ref(), expected.as_ref());
    }

    #[test]
    fn valid_signature_returns_principal() {
        let headers = signed_headers("kms-local-example-secret", "20261204T120000Z", "us-east-1", b"{}");
        let arn = check(&headers, b"{}", at("20261204T120100Z")).unwrap();
        assert_eq!(arn, "arn:aws:iam::111122223333:root");
    }

    #[test]
    fn changed_body_is_invalid_signature() {
        let headers = signed_headers("kms-local-example-secret", "20261204T120000Z", "us-east-1", b"{}");
        let error = check(&headers, b"{\"a\":1}", at("20261204T120000Z")).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidSignature);
    }

    #[test]
    fn wrong_secret_is_invalid_signature() {
        let headers = signed_headers("other-secret", "20261204T120000Z", "us-east-1", b"{}");
        let error = check(&headers, b"{}", at("20261204T120000Z")).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidSignature);
        assert!(error.message.contains("does not match"), "{}", error.message);
    }

    #[test]
    fn clock_skew_over_five_minutes_is_rejected() {
        let headers = signed_headers("kms-local-example-secret", "20261204T120000Z", "us-east-1", b"{}");
        assert!(check(&headers, b"{}", at("20261204T120459Z")).is_ok());
        assert!(check(&headers, b"{}", at("20261204T115501Z")).is_ok());
        let late = check(&headers, b"{}", at("20261204T120501Z")).unwrap_err();
        assert_eq!(late.kind, ErrorKind::InvalidSignature);
        assert!(late.message.starts_with("signature expired"), "{}", late.message);
        let early = check(&headers, b"{}", at("20261204T115459Z")).unwrap_err();
        assert!(early.message.starts_with("signature not yet current"), "{}", early.message);
    }

    #[test]
    fn wrong_region_in_scope_is_rejected() {
        let headers = signed_headers("kms-local-example-secret", "20261204T120000Z", "eu-west-1", b"{}");
        let error = check(&headers, b"{}", at("20261204T120000Z")).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidSignature);
        assert!(error.message.contains("\"eu-west-1\""), "{}", error.message);
    }

    #[test]
    fn unknown_access_key_is_unrecognized_client() {
        let mut headers = signed_headers("kms-local-example-secret", "20261204T120000Z", "us-east-1", b"{}");
        let authorization = headers["authorization"].to_str().unwrap().replace("AKIAKMSLOCALEXAMPLE", "AKIAOTHER");
        headers.insert("authorization", HeaderValue::from_str(&authorization).unwrap());
        let error = check(&headers, b"{}", at("20261204T120000Z")).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnrecognizedClient);
        assert!(error.message.contains("AKIAOTHER"), "{}", error.message);
    }

    #[test]
    fn malformed_headers_are_incomplete_signature() {
        let good = signed_headers("kms-local-example-secret", "20261204T120000Z", "us-east-1", b"{}");
        let now = at("20261204T120000Z");

        let mut no_signature = good.clone();
        let authorization = good["authorization"].to_str().unwrap();
        let cut = authorization.split(", Signature=").next().unwrap().to_owned();
        no_signature.insert("authorization", HeaderValue::from_str(&cut).unwrap());
        let error = check(&no_signature, b"{}", now).unwrap_err();
        assert_eq!(error.kind, ErrorKind::IncompleteSignature);
        assert!(error.message.contains("'Signature'"), "{}", error.message);

        let mut no_date = good.clone();
        no_date.remove("x-amz-date");
        assert_eq!(check(&no_date, b"{}", now).unwrap_err().kind, ErrorKind::IncompleteSignature);

        let mut other_algorithm = good.clone();
        other_algorithm.insert("authorization", HeaderValue::from_static("AWS4-HMAC-SHA512 Credential=x"));
        assert_eq!(check(&other_algorithm, b"{}", now).unwrap_err().kind, ErrorKind::IncompleteSignature);

        let mut missing = good;
        missing.remove("authorization");
        assert_eq!(check(&missing, b"{}", now).unwrap_err().kind, ErrorKind::MissingAuthenticationToken);
    }
}
