//! The `kms-local` binary: its start-up line, flags, exit codes, the data
//! directory lock, and durability of acknowledged writes across SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use common::{client, error_parts};

/// A running kms-local process and the endpoint it printed.
struct Process {
    child: Child,
    endpoint: String,
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kms-local"));
    command.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
    command
}

/// Starts kms-local on a free port and waits for its start-up line.
fn spawn(args: &[&str]) -> Process {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = command(&all).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let endpoint = line
        .strip_prefix("kms-local listening on ")
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"))
        .trim_end()
        .to_owned();
    Process { child, endpoint }
}

/// Starts a kms-local on the store that `store` selects (for example
/// `--ephemeral`), logging at `level` to a pipe that [`stderr_after_exit`]
/// reads.
fn spawn_logging(level: &str, store: &[&str]) -> Process {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(store);
    let mut child =
        command(&args).env("RUST_LOG", level).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let endpoint = line.trim_end().strip_prefix("kms-local listening on ").unwrap().to_owned();
    Process { child, endpoint }
}

/// Returns what a process from [`spawn_logging`] wrote to stderr; call it
/// after the process has exited.
fn stderr_after_exit(process: &mut Process) -> String {
    let mut stderr = String::new();
    process.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    stderr
}

/// Runs kms-local to completion and returns its exit code and stderr.
fn run_failing(args: &[&str]) -> (i32, String) {
    let output = command(args).output().unwrap();
    (output.status.code().unwrap(), String::from_utf8(output.stderr).unwrap())
}

fn terminate(process: &mut Process) -> i32 {
    let status = Command::new("kill").args(["-TERM", &process.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    process.child.wait().unwrap().code().unwrap()
}

#[tokio::test]
async fn prints_one_line_and_serves() {
    let mut process = spawn(&["--ephemeral"]);
    let address: std::net::SocketAddr = process.endpoint.strip_prefix("http://").unwrap().parse().unwrap();
    assert!(address.ip().is_loopback());
    assert_ne!(address.port(), 0);

    let client = client(&process.endpoint);
    let created = client.create_key().send().await.unwrap();
    assert!(created.key_metadata().is_some());

    assert_eq!(terminate(&mut process), 0);
    let mut rest = String::new();
    process.child.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "stdout must hold only the start-up line");
}

#[tokio::test]
async fn second_instance_on_same_directory_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let data_arg = data.to_str().unwrap();
    let mut first = spawn(&["--data-dir", data_arg]);

    let (code, stderr) = run_failing(&["--listen", "127.0.0.1:0", "--data-dir", data_arg]);
    assert_eq!(code, 1);
    assert!(stderr.contains("another kms-local is already using data directory"), "{stderr}");

    for name in ["kms-local.redb", "kms-local.lock"] {
        let mode = std::fs::metadata(data.join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(terminate(&mut first), 0);

    // Once the first instance is gone, the directory is free again.
    let mut again = spawn(&["--data-dir", data_arg]);
    assert_eq!(terminate(&mut again), 0);
}

#[test]
fn invalid_arguments_exit_with_clear_messages() {
    let (code, stderr) = run_failing(&["--listen", "127.0.0.1:0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--data-dir"), "{stderr}");

    let directory = tempfile::tempdir().unwrap();
    let not_pem = directory.path().join("root.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let (code, stderr) = run_failing(&["--ephemeral", "--trust-root", not_pem.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("--trust-root {}", not_pem.display())), "{stderr}");

    let missing = directory.path().join("missing.pem");
    let (code, stderr) = run_failing(&["--ephemeral", "--trust-root", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read --trust-root"), "{stderr}");

    let credentials = directory.path().join("credentials.json");
    std::fs::write(&credentials, r#"{"credentials": []}"#).unwrap();
    let (code, stderr) = run_failing(&["--ephemeral", "--credentials", credentials.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("credentials is empty"), "{stderr}");

    for (value, expected) in [
        ("0", "`0` is out of range; write a whole number of seconds from 1 to 86400"),
        ("-5", "`-5` is out of range"),
        ("86401", "`86401` is out of range"),
        ("1.5", "`1.5` is not a whole number of seconds"),
    ] {
        let (code, stderr) = run_failing(&["--ephemeral", "--max-document-age", value]);
        assert_eq!(code, 2, "{value}: {stderr}");
        assert!(stderr.contains("--max-document-age"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }

    for listen in ["localhost:4566", "http://127.0.0.1:4566", "127.0.0.1"] {
        let (code, stderr) = run_failing(&["--ephemeral", "--listen", listen]);
        assert_eq!(code, 2, "{listen}");
        assert!(stderr.contains(&format!("`{listen}` is not an IP address and port")), "{stderr}");
        assert!(stderr.contains("write for example 127.0.0.1:"), "{stderr}");
    }

    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = occupied.local_addr().unwrap().to_string();
    let (code, stderr) = run_failing(&["--ephemeral", "--listen", &address]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("cannot listen on --listen {address}")), "{stderr}");
    assert!(stderr.contains("choose another port"), "{stderr}");
}

#[tokio::test]
async fn credentials_file_replaces_development_pair() {
    let directory = tempfile::tempdir().unwrap();
    let credentials = directory.path().join("credentials.json");
    std::fs::write(
        &credentials,
        r#"{"region": "eu-central-1", "credentials": [{"access_key_id": "AKIACUSTOM", "secret_access_key": "custom"}]}"#,
    )
    .unwrap();
    let mut process = spawn(&["--ephemeral", "--credentials", credentials.to_str().unwrap()]);

    let custom = common::client_with(&process.endpoint, "AKIACUSTOM", "custom", "eu-central-1");
    let created = custom.create_key().send().await.unwrap();
    assert!(created.key_metadata().unwrap().arn().unwrap().starts_with("arn:aws:kms:eu-central-1:111122223333:key/"));
    let development =
        common::client_with(&process.endpoint, common::ACCESS_KEY_ID, common::SECRET_ACCESS_KEY, "eu-central-1");
    let error = development.list_keys().send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "UnrecognizedClientException");
    assert_eq!(terminate(&mut process), 0);
}

/// What one writer knows about its key when the process is killed.
#[derive(Debug, Clone)]
struct Written {
    key_id: String,
    /// The policy whose PutKeyPolicy was acknowledged.
    acknowledged: Option<String>,
    /// A policy sent but not yet acknowledged.
    in_flight: Option<String>,
}

fn policy(marker: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "{marker}", "Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:root"}}, "Action": "kms:*", "Resource": "*"}}]}}"#
    )
}

async fn write_burst(endpoint: String, writer: usize, log: Arc<Mutex<Vec<Written>>>) {
    let client = client(&endpoint);
    for round in 0.. {
        let Ok(created) = client.create_key().description(format!("writer {writer}")).send().await else {
            return;
        };
        let key_id = created.key_metadata().unwrap().key_id().to_owned();
        let index = {
            let mut log = log.lock().unwrap();
            log.push(Written { key_id: key_id.clone(), acknowledged: None, in_flight: None });
            log.len() - 1
        };
        let text = policy(&format!("w{writer}r{round}"));
        log.lock().unwrap()[index].in_flight = Some(text.clone());
        if client.put_key_policy().key_id(&key_id).policy(&text).send().await.is_err() {
            return;
        }
        let mut log = log.lock().unwrap();
        log[index].acknowledged = Some(text);
        log[index].in_flight = None;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_burst_keeps_acknowledged_writes() {
    let directory = tempfile::tempdir().unwrap();
    let data_arg = directory.path().join("data").to_str().unwrap().to_owned();
    let mut process = spawn(&["--data-dir", &data_arg]);

    let log = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> =
        (0..8).map(|writer| tokio::spawn(write_burst(process.endpoint.clone(), writer, Arc::clone(&log)))).collect();
    // Kill once enough writes are acknowledged; a loaded machine may need
    // far longer than an idle one to get there.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let acknowledged = log.lock().unwrap().iter().filter(|entry| entry.acknowledged.is_some()).count();
        if acknowledged >= 16 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let written = log.lock().unwrap().clone();
    let with_policy = written.iter().filter(|entry| entry.acknowledged.is_some()).count();
    assert!(with_policy >= 8, "too few acknowledged writes to test anything: {written:?}");
    eprintln!("{} keys created before SIGKILL, {with_policy} with an acknowledged policy", written.len());

    let mut restarted = spawn(&["--data-dir", &data_arg]);
    let client = client(&restarted.endpoint);
    let listed = client.list_keys().limit(1000).send().await.unwrap();
    assert!(
        listed.keys().len() >= written.len(),
        "{} keys listed, {} acknowledged",
        listed.keys().len(),
        written.len()
    );
    for entry in &written {
        let stored = client.get_key_policy().key_id(&entry.key_id).send().await.unwrap();
        let stored = stored.policy().unwrap();
        match (&entry.acknowledged, &entry.in_flight) {
            (Some(acknowledged), _) => assert_eq!(stored, acknowledged, "{}", entry.key_id),
            (None, Some(in_flight)) => {
                let default = kms_local::policy::default_policy("111122223333");
                assert!(stored == in_flight || stored == default, "{}: {stored}", entry.key_id);
            }
            (None, None) => {}
        }
        let encrypted =
            client.encrypt().key_id(&entry.key_id).plaintext(Blob::new(b"still usable".to_vec())).send().await.unwrap();
        let decrypted =
            client.decrypt().ciphertext_blob(encrypted.ciphertext_blob().unwrap().clone()).send().await.unwrap();
        assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"still usable");
    }
    assert_eq!(terminate(&mut restarted), 0);
    assert!(Path::new(&data_arg).join("kms-local.redb").exists());
}

#[tokio::test]
async fn policy_denial_logs_deciding_statement() {
    let mut process = spawn_logging("warn", &["--ephemeral"]);

    let client = client(&process.endpoint);
    let key_id = client
        .create_key()
        .policy(
            r#"{"Statement": [
                {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"},
                {"Sid": "NoEncrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"}]}"#,
        )
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let error =
        client.encrypt().key_id(&key_id).plaintext(Blob::new(b"secret plaintext".to_vec())).send().await.unwrap_err();
    assert_eq!(error_parts(&error).0, "AccessDeniedException");
    assert_eq!(terminate(&mut process), 0);

    let stderr = stderr_after_exit(&mut process);
    let denial = stderr
        .lines()
        .find(|line| line.contains("key policy denies the request"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(denial.contains(r#"reason=explicit Deny in statement "NoEncrypt""#), "{denial}");
    assert!(denial.contains(&key_id), "{denial}");
    assert!(!stderr.contains("kms-local-example-secret"), "the secret must not be logged");
    assert!(!stderr.contains("c2VjcmV0IHBsYWludGV4dA"), "the plaintext must not be logged");
}

#[test]
fn new_store_is_announced_once() {
    let scratch = tempfile::tempdir().unwrap();
    let directory = scratch.path().join("not").join("yet");
    let directory_arg = directory.to_str().unwrap();

    let mut process = spawn_logging("info", &["--data-dir", directory_arg]);
    assert_eq!(terminate(&mut process), 0);
    let stderr = stderr_after_exit(&mut process);
    let line = stderr.lines().find(|line| line.contains("no store found; created an empty one")).unwrap_or_else(|| {
        panic!("no line about the new store: {stderr}");
    });
    assert!(line.contains(&directory.join("kms-local.redb").display().to_string()), "{line}");

    // The second start opens the store that the first one created.
    let mut process = spawn_logging("info", &["--data-dir", directory_arg]);
    assert_eq!(terminate(&mut process), 0);
    let stderr = stderr_after_exit(&mut process);
    assert!(stderr.contains("kms-local started"), "{stderr}");
    assert!(!stderr.contains("no store found"), "{stderr}");
}

#[tokio::test]
async fn request_lines_are_written_before_exit() {
    // Request lines are written after the response leaves; every request
    // still gets its line, with its id, by the time the process has exited.
    let mut process = spawn_logging("info", &["--ephemeral"]);

    let client = client(&process.endpoint);
    let mut request_ids = Vec::new();
    for _ in 0..20 {
        let output = client.generate_random().number_of_bytes(16).send().await.unwrap();
        assert_eq!(output.plaintext().unwrap().as_ref().len(), 16);
        let id = aws_sdk_kms::operation::RequestId::request_id(&output).unwrap().to_owned();
        request_ids.push(id);
    }
    assert_eq!(terminate(&mut process), 0);

    let stderr = stderr_after_exit(&mut process);
    for id in &request_ids {
        let line = stderr
            .lines()
            .find(|line| line.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no line for request {id}: {stderr}"));
        assert!(line.contains("request handled"), "{line}");
        assert!(line.contains("operation=\"GenerateRandom\""), "{line}");
        assert!(line.contains("status=200"), "{line}");
    }
}
