//! Fuzzes kms-local's request handler, `Kms::handle`, and the HTTP router in
//! front of it. The first input byte `b` picks what the rest of the input is,
//! by `b % (OPERATIONS.len() + 4)`:
//!
//! - below `OPERATIONS.len()`: the JSON body of that operation, passed to
//!   `Kms::handle`;
//! - `OPERATIONS.len()`: the body of an Encrypt, followed by a Decrypt of the
//!   ciphertext it returns;
//! - one more: a byte that picks the operation, then the JSON body, sent
//!   through `kms_local::router` as a request that the target signs with
//!   SigV4 for the development access key;
//! - one more again: a raw HTTP/1.1 request, sent through the router as it
//!   is (its signature, if any, is almost never valid);
//! - the last: a byte that picks one of the five operations that take a
//!   `Recipient` (`RECIPIENT_OPERATIONS`), then the JSON body. The target
//!   sets the body's `Recipient` to a fresh attestation document of a mock
//!   enclave, passes it to `Kms::handle`, and checks that a successful
//!   response returns the result only as a `CiphertextForRecipient` that the
//!   enclave's RSA key opens.
//!
//! Requests reach the router with tower's `oneshot`, so no socket is opened.
//!
//! The `Kms` is opened once, on a store in a temporary directory, with four
//! keys of fixed ids and three aliases that seed bodies can name. After each
//! input the store is put back to exactly these keys and aliases, so every
//! input starts from the same keys and aliases. The `Kms` also trusts the
//! root of a mock NSM CA, which signs the documents of the last mode.
#![no_main]

use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::{digest, hmac};
use axum::body::Body;
use axum::http::{Method, Request};
use enclave_agent::key::{EphemeralKey, RsaKeySize};
use enclave_agent::nsm::MockNsm;
use kms_local::blob::Blob;
use kms_local::credentials::{DEV_ACCESS_KEY_ID, DEV_ACCOUNT_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY};
use kms_local::keys::{KeyMaterial, KeySpec, KeyState, KeyUsage};
use kms_local::policy::default_policy;
use kms_local::recipient::{DEFAULT_MAX_DOCUMENT_AGE, KEY_ENCRYPTION_ALGORITHM};
use kms_local::server::{CONTENT_TYPE, MAX_REQUEST_BODY, TARGET_PREFIX};
use kms_local::service::{Caller, OPERATIONS};
use kms_local::store::{AliasRecord, KeyRecord};
use kms_local::{Config, Kms};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;
use tower::ServiceExt;

/// Milliseconds since the epoch stored as the fixtures' creation dates
/// (2026-01-01T00:00:00Z).
const FIXTURE_TIME_MS: i64 = 1_767_225_600_000;

/// A key that the store contains before every input.
struct FixtureKey {
    record: KeyRecord,
    material: Vec<u8>,
}

struct Fixture {
    kms: Arc<Kms>,
    runtime: tokio::runtime::Runtime,
    keys: Vec<FixtureKey>,
    aliases: Vec<AliasRecord>,
    enclave: Enclave,
}

/// How long the fixture uses one attestation document: a minute less than
/// `DEFAULT_MAX_DOCUMENT_AGE` (five minutes), the age above which kms-local
/// rejects a document, so that an input never gets a document about to
/// expire.
const DOCUMENT_LIFETIME: Duration = DEFAULT_MAX_DOCUMENT_AGE.saturating_sub(Duration::from_secs(60));

/// The mock enclave of the Recipient mode: a mock NSM, whose CA root the
/// `Kms` trusts, and the RSA key that its documents attest.
struct Enclave {
    nsm: MockNsm,
    /// The mock CA's directory, which exists only while a document is made
    /// (see `make_recipient`).
    ca_directory: PathBuf,
    key: EphemeralKey,
    current: Mutex<RecipientMember>,
}

/// A `Recipient` request member and the time just before its document was
/// made, so that the document is never older than `created.elapsed()`.
struct RecipientMember {
    value: Value,
    created: Instant,
}

impl Enclave {
    /// Creates a mock CA in a temporary directory, opens a mock NSM on it, and
    /// generates the RSA-2048 key and a first document. Returns the enclave
    /// and the CA's root certificate (PEM) for the `Kms` to trust.
    fn open() -> Result<(Enclave, Vec<u8>), String> {
        // `init_ca` rejects a directory that other users can read.
        let directory = tempfile::Builder::new()
            .permissions(Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|error| format!("failed to create a temporary directory: {error}"))?;
        enclave_agent::nsm::init_ca(directory.path()).map_err(|error| error.to_string())?;
        let nsm = MockNsm::open(directory.path(), None).map_err(|error| error.to_string())?;
        let root_path = nsm.store().root_path();
        let root_pem =
            std::fs::read(&root_path).map_err(|error| format!("failed to read {}: {error}", root_path.display()))?;
        let key = EphemeralKey::generate(RsaKeySize::Rsa2048).map_err(|error| error.to_string())?;

        // The opened CA store keeps its keys and certificates in memory, so
        // the directory can be removed now.
        let ca_directory = directory.path().to_owned();
        directory.close().map_err(|error| format!("failed to remove {}: {error}", ca_directory.display()))?;

        let created = Instant::now();
        let value = make_recipient(&nsm, &ca_directory, &key)?;
        let current = Mutex::new(RecipientMember { value, created });
        Ok((Enclave { nsm, ca_directory, key, current }, root_pem))
    }

    /// Returns the current `Recipient` member, first replacing it with a new
    /// one when it is older than `DOCUMENT_LIFETIME`. A document that cannot
    /// be made stops the run, because the Recipient mode would then test
    /// only the rejection of old documents.
    fn recipient(&self) -> Value {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.created.elapsed() >= DOCUMENT_LIFETIME {
            let created = Instant::now();
            match make_recipient(&self.nsm, &self.ca_directory, &self.key) {
                Ok(value) => *current = RecipientMember { value, created },
                Err(message) => panic!("failed to make a new attestation document: {message}"),
            }
        }
        current.value.clone()
    }
}

/// Makes a `Recipient` member with a new document from `nsm` that attests
/// `key`.
fn make_recipient(nsm: &MockNsm, ca_directory: &Path, key: &EphemeralKey) -> Result<Value, String> {
    // The mock NSM writes to its CA directory only when it renews its leaf
    // certificate, which it does when less than `LEAF_RENEW_BEFORE` (30
    // minutes) of the leaf's `LEAF_LIFETIME` (3 hours) is left. Creating the
    // directory for each document and removing it again keeps long runs
    // working and leaves nothing behind when the run stops.
    DirBuilder::new()
        .mode(0o700)
        .create(ca_directory)
        .map_err(|error| format!("failed to create {}: {error}", ca_directory.display()))?;
    let document = enclave_agent::nsm::attest(nsm, Some(key.public_key_der().to_vec()), None, None);
    std::fs::remove_dir_all(ca_directory)
        .map_err(|error| format!("failed to remove {}: {error}", ca_directory.display()))?;
    let document = document.map_err(|error| error.to_string())?;
    Ok(json!({
        "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
        "AttestationDocument": Blob::new(document),
    }))
}

fn key_record(key_id: &str, key_spec: KeySpec, key_usage: KeyUsage, state: KeyState) -> KeyRecord {
    KeyRecord {
        key_id: key_id.to_owned(),
        creation_date_ms: FIXTURE_TIME_MS,
        description: format!("fuzz fixture {key_spec}"),
        key_spec,
        key_usage,
        state,
        deletion_date_ms: None,
        pending_window_days: None,
        policy: default_policy(DEV_ACCOUNT_ID),
        tags: Vec::new(),
    }
}

fn alias_record(alias_name: &str, target_key_id: &str) -> AliasRecord {
    AliasRecord {
        alias_name: alias_name.to_owned(),
        target_key_id: target_key_id.to_owned(),
        creation_date_ms: FIXTURE_TIME_MS,
        last_updated_ms: FIXTURE_TIME_MS,
    }
}

fn open_fixture() -> Result<Fixture, String> {
    let (enclave, root_pem) = Enclave::open()?;
    let directory = tempfile::tempdir().map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let config = Config { trust_roots_pem: vec![root_pem], ..Config::persistent(directory.path()) };
    let kms = Kms::open(config).map_err(|error| error.to_string())?;
    let kms = Arc::new(kms);
    // The router runs the longer operations with `spawn_blocking`, which a
    // current-thread runtime supports.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| format!("cannot build a tokio runtime: {error}"))?;
    // The store keeps its files open, so the directory can be removed now and
    // no fuzzing run leaves one behind.
    drop(directory);

    let symmetric_id = "00000000-0000-4000-8000-000000000001";
    let rsa_id = "00000000-0000-4000-8000-000000000002";
    let ecc_id = "00000000-0000-4000-8000-000000000003";
    let disabled_id = "00000000-0000-4000-8000-000000000004";
    // The symmetric key material is fixed, so a ciphertext saved in the
    // corpus stays valid in later runs.
    let keys = vec![
        FixtureKey {
            record: key_record(symmetric_id, KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt, KeyState::Enabled),
            material: vec![0x42; 32],
        },
        FixtureKey {
            record: key_record(rsa_id, KeySpec::Rsa2048, KeyUsage::EncryptDecrypt, KeyState::Enabled),
            material: KeyMaterial::generate(KeySpec::Rsa2048).map_err(|error| error.to_string())?.as_bytes().to_vec(),
        },
        FixtureKey {
            record: key_record(ecc_id, KeySpec::EccNistP256, KeyUsage::KeyAgreement, KeyState::Enabled),
            material: KeyMaterial::generate(KeySpec::EccNistP256)
                .map_err(|error| error.to_string())?
                .as_bytes()
                .to_vec(),
        },
        FixtureKey {
            record: key_record(disabled_id, KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt, KeyState::Disabled),
            material: vec![0x24; 32],
        },
    ];
    let aliases = vec![
        alias_record("alias/fuzz-symmetric", symmetric_id),
        alias_record("alias/fuzz-rsa", rsa_id),
        alias_record("alias/fuzz-ecc", ecc_id),
    ];

    let fixture = Fixture { kms, runtime, keys, aliases, enclave };
    restore(&fixture).ok_or("cannot write the fixture keys and aliases")?;
    Ok(fixture)
}

/// Returns the shared fixture. A setup failure stops the run, because
/// fuzzing on without the fixture would exercise nothing.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| match open_fixture() {
        Ok(fixture) => fixture,
        Err(message) => panic!("cannot set up the kms-local fixture: {message}"),
    })
}

/// Puts the store back to the fixture's keys and aliases, writing only what
/// an input changed.
fn restore(fixture: &Fixture) -> Option<()> {
    let store = fixture.kms.store();

    for record in store.keys().ok()? {
        if !fixture.keys.iter().any(|key| key.record.key_id == record.key_id) {
            store.delete_key(&record.key_id).ok()?;
        }
    }
    for key in &fixture.keys {
        match store.key(&key.record.key_id).ok()? {
            Some(current) if current == key.record => {}
            Some(_) => {
                store
                    .update_key(&key.record.key_id, |record| {
                        *record = key.record.clone();
                        Ok(())
                    })
                    .ok()?;
            }
            None => store.insert_key(&key.record, &KeyMaterial::from_bytes(key.material.clone())).ok()?,
        }
    }

    for alias in store.aliases().ok()? {
        if !fixture.aliases.contains(&alias) {
            store.delete_alias(&alias.alias_name).ok()?;
        }
    }
    for alias in &fixture.aliases {
        if store.alias(&alias.alias_name).ok()?.as_ref() != Some(alias) {
            store.put_alias(alias, false).ok()?;
        }
    }
    Some(())
}

/// Encrypts with `body` as the Encrypt request, then decrypts the ciphertext
/// with the same members (Plaintext replaced by CiphertextBlob) and checks
/// that a returned Plaintext is the one encrypted.
fn encrypt_then_decrypt(kms: &Kms, body: &[u8], caller: Caller<'_>) {
    let Ok(encrypted) = kms.handle("Encrypt", body, caller) else {
        return;
    };
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Some(plaintext) = request.remove("Plaintext") else {
        return;
    };
    let Some(ciphertext) = encrypted.get("CiphertextBlob") else {
        return;
    };
    request.insert("CiphertextBlob".to_owned(), ciphertext.clone());
    let Ok(decrypt_body) = serde_json::to_vec(&request) else {
        return;
    };

    let Ok(decrypted) = kms.handle("Decrypt", &decrypt_body, caller) else {
        return;
    };
    if let Some(returned) = decrypted.get("Plaintext") {
        let sent = serde_json::from_value::<Blob>(plaintext).ok();
        let returned = serde_json::from_value::<Blob>(returned.clone()).ok();
        assert_eq!(sent, returned, "Decrypt returned a different plaintext than Encrypt was given");
    }
}

/// The operations that take a `Recipient`, in the order in which the
/// Recipient mode's picker byte selects them.
const RECIPIENT_OPERATIONS: [&str; 5] =
    ["DeriveSharedSecret", "Decrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom"];

/// The response members that carry a plaintext when a request has no
/// `Recipient`.
const PLAINTEXT_MEMBERS: [&str; 3] = ["Plaintext", "PrivateKeyPlaintext", "SharedSecret"];

/// Sends `body` to `operation` with its `Recipient` member set to the
/// enclave's current document. When the operation succeeds, checks that the
/// response has no plaintext member, that the enclave key opens its
/// `CiphertextForRecipient`, and that the opened plaintext matches what
/// kms-local returns without a `Recipient`.
fn recipient_request(fixture: &Fixture, operation: &str, body: &[u8], caller: Caller<'_>) {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    request.insert("Recipient".to_owned(), fixture.enclave.recipient());
    let Ok(request_body) = serde_json::to_vec(&request) else {
        return;
    };
    let Ok(response) = fixture.kms.handle(operation, &request_body, caller) else {
        return;
    };

    for member in PLAINTEXT_MEMBERS {
        assert!(response.get(member).is_none(), "{operation} with a Recipient returned {member} in plaintext");
    }
    let Some(envelope) = blob_member(&response, "CiphertextForRecipient") else {
        panic!("{operation} with a Recipient succeeded without a valid CiphertextForRecipient");
    };
    let plaintext = match recipient_common::cms::decrypt(envelope.as_slice(), fixture.enclave.key.private_key()) {
        Ok(plaintext) => plaintext,
        Err(error) => panic!("the enclave key failed to open the CiphertextForRecipient of {operation}: {error}"),
    };

    request.remove("Recipient");
    check_recipient_plaintext(fixture, operation, &request, &response, &plaintext, caller);
}

/// Checks the plaintext opened from a `CiphertextForRecipient` against
/// kms-local itself. `request` is the request without its `Recipient`.
fn check_recipient_plaintext(
    fixture: &Fixture,
    operation: &str,
    request: &Map<String, Value>,
    response: &Value,
    plaintext: &[u8],
    caller: Caller<'_>,
) {
    match operation {
        // Both are deterministic, so the request without a Recipient
        // returns the same plaintext in the clear.
        "DeriveSharedSecret" | "Decrypt" => {
            let member = if operation == "Decrypt" { "Plaintext" } else { "SharedSecret" };
            let Ok(body) = serde_json::to_vec(request) else {
                return;
            };
            let clear = match fixture.kms.handle(operation, &body, caller) {
                Ok(clear) => clear,
                Err(error) => panic!("{operation} succeeded with a Recipient but failed without one: {error}"),
            };
            let clear = blob_member(&clear, member);
            assert_eq!(
                clear.as_ref().map(Blob::as_slice),
                Some(plaintext),
                "{operation} without a Recipient returned another {member} than the CiphertextForRecipient"
            );
        }
        // The response's ciphertext decrypts to the enveloped key.
        "GenerateDataKey" | "GenerateDataKeyPair" => {
            if operation == "GenerateDataKey" {
                assert_eq!(
                    Some(plaintext.len()),
                    requested_length(request),
                    "GenerateDataKey enveloped a data key of another length than requested"
                );
            }
            let ciphertext_member =
                if operation == "GenerateDataKey" { "CiphertextBlob" } else { "PrivateKeyCiphertextBlob" };
            let mut decrypt = Map::new();
            decrypt.insert("CiphertextBlob".to_owned(), response.get(ciphertext_member).cloned().unwrap_or_default());
            if let Some(context) = request.get("EncryptionContext") {
                decrypt.insert("EncryptionContext".to_owned(), context.clone());
            }
            let Ok(body) = serde_json::to_vec(&decrypt) else {
                return;
            };
            let decrypted = match fixture.kms.handle("Decrypt", &body, caller) {
                Ok(decrypted) => decrypted,
                Err(error) => panic!("Decrypt of the {ciphertext_member} of {operation} failed: {error}"),
            };
            let decrypted = blob_member(&decrypted, "Plaintext");
            assert_eq!(
                decrypted.as_ref().map(Blob::as_slice),
                Some(plaintext),
                "the {ciphertext_member} of {operation} decrypts to another key than the CiphertextForRecipient"
            );
        }
        "GenerateRandom" => {
            assert_eq!(
                Some(plaintext.len()),
                requested_length(request),
                "GenerateRandom enveloped another number of bytes than requested"
            );
        }
        _ => {}
    }
}

/// Returns the length in bytes that a successful GenerateDataKey or
/// GenerateRandom request sets with `NumberOfBytes` or `KeySpec`. A member
/// set to null counts as absent, as kms-local reads it.
fn requested_length(request: &Map<String, Value>) -> Option<usize> {
    if let Some(bytes) = request.get("NumberOfBytes").filter(|bytes| !bytes.is_null()) {
        return usize::try_from(bytes.as_u64()?).ok();
    }
    match request.get("KeySpec")?.as_str()? {
        "AES_256" => Some(32),
        "AES_128" => Some(16),
        _ => None,
    }
}

/// Decodes the base64 blob member `name` of a response.
fn blob_member(response: &Value, name: &str) -> Option<Blob> {
    serde_json::from_value(response.get(name)?.clone()).ok()
}

/// The host name in signed requests. No connection is made to it.
const HOST: &str = "kms.fuzz.invalid";

/// Builds a POST / request for `operation` with `body`, signed with SigV4
/// (`content-type;host;x-amz-date;x-amz-target`) at the current time.
fn signed_request(operation: &str, body: &[u8]) -> Option<Request<Body>> {
    let amz_date =
        OffsetDateTime::now_utc().format(format_description!("[year][month][day]T[hour][minute][second]Z")).ok()?;
    let date = amz_date.get(..8)?;
    let target = format!("{TARGET_PREFIX}{operation}");
    let canonical = format!(
        "POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{HOST}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n\n\
         content-type;host;x-amz-date;x-amz-target\n{}",
        hex::encode(digest::digest(&digest::SHA256, body))
    );
    let scope = format!("{date}/{DEV_REGION}/kms/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let key = kms_local::sigv4::signing_key(DEV_SECRET_ACCESS_KEY, date, DEV_REGION, "kms");
    let signature = hex::encode(hmac::sign(&key, string_to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={DEV_ACCESS_KEY_ID}/{scope}, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}"
    );

    Request::builder()
        .method(Method::POST)
        .uri("/")
        .header("host", HOST)
        .header("content-type", CONTENT_TYPE)
        .header("x-amz-date", amz_date)
        .header("x-amz-target", target)
        .header("authorization", authorization)
        .body(Body::from(body.to_vec()))
        .ok()
}

/// Parses `data` as an HTTP/1.1 request head followed by the body.
fn raw_request(data: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(data).ok()? else {
        return None;
    };
    let mut builder = Request::builder().method(parsed.method?).uri(parsed.path?);
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    builder.body(Body::from(data.get(head_len..)?.to_vec())).ok()
}

/// Sends `request` through the router and checks that the response body is
/// JSON, as every kms-local response is.
fn send(fixture: &Fixture, request: Request<Body>) {
    let router = kms_local::router(Arc::clone(&fixture.kms));
    fixture.runtime.block_on(async {
        let Ok(response) = router.oneshot(request).await;
        let Ok(body) = axum::body::to_bytes(response.into_body(), MAX_REQUEST_BODY).await else {
            return;
        };
        assert!(serde_json::from_slice::<Value>(&body).is_ok(), "the response body is not JSON");
    });
}

/// Runs one input on the fixture, as the module documentation describes.
fn run(fixture: &Fixture, selector: u8, body: &[u8], caller: Caller<'_>) {
    let operations = OPERATIONS.len();
    let mode = usize::from(selector) % (operations + 4);
    if let Some(operation) = OPERATIONS.get(mode) {
        let _ = fixture.kms.handle(operation, body, caller);
    } else if mode == operations {
        encrypt_then_decrypt(&fixture.kms, body, caller);
    } else if mode == operations + 1 {
        let Some((&picker, body)) = body.split_first() else {
            return;
        };
        let operation = OPERATIONS.get(usize::from(picker) % operations).copied().unwrap_or_default();
        if let Some(request) = signed_request(operation, body) {
            send(fixture, request);
        }
    } else if mode == operations + 2 {
        if let Some(request) = raw_request(body) {
            send(fixture, request);
        }
    } else {
        let Some((&picker, body)) = body.split_first() else {
            return;
        };
        let operation = RECIPIENT_OPERATIONS.get(usize::from(picker) % RECIPIENT_OPERATIONS.len()).copied();
        recipient_request(fixture, operation.unwrap_or_default(), body, caller);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let Some(principal) = fixture.kms.credentials().principal(DEV_ACCESS_KEY_ID) else {
        return;
    };
    let caller = Caller { principal, request_id: "fuzz" };

    run(fixture, selector, body, caller);

    // A store that cannot be put back would make later inputs depend on
    // this one, so stop the run instead.
    assert!(restore(fixture).is_some(), "restoring the fixture keys and aliases failed");
});
