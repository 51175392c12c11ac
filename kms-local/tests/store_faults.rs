//! Storage faults of the kms-local binary: a full disk, a data directory or
//! database file that cannot be written, and a damaged database file.
//!
//! A full disk is simulated with a file size limit (RLIMIT_FSIZE) set on the
//! server with `prlimit` (util-linux): writes past the limit fail with EFBIG
//! as they would with ENOSPC. A limit of 4 KiB leaves only redb's header
//! writable, so every write fails and so does redb's repair. A limit at the
//! current file size lets redb overwrite its pages, as on a full ext4 or XFS
//! file system, so only writes that grow the file fail. The server is
//! started through `sh -c 'trap "" XFSZ; exec …'` so that SIGXFSZ is ignored
//! (the setting survives exec) and does not kill it. Permission tests run
//! kms-local as uid 65534 when the tests run as root, because root ignores
//! file modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// A file size limit, in bytes, that leaves only the first page of the
/// database file (redb's header) writable.
const HEADER_ONLY_LIMIT: &str = "4096";
/// The maximum number of writes that filling the database may take; each
/// adds about 32 KB to a file of a few MB.
const MAX_FILL_WRITES: usize = 1000;
/// The uid and gid of `nobody`, used for the child when the tests run as root.
const UNPRIVILEGED_ID: u32 = 65534;
/// How long a start-up that should fail may take before the test gives up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A running kms-local and the output it has written so far.
struct Server {
    child: Child,
    address: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// Who the kms-local children run as.
#[derive(Clone, Copy)]
enum Identity {
    /// The user running the tests, who is not root.
    Current,
    /// `nobody`, because the tests run as root.
    Unprivileged,
}

impl Identity {
    /// Picks `nobody` when the files this process creates belong to root.
    fn for_tests(probe_directory: &Path) -> Self {
        if std::fs::metadata(probe_directory).unwrap().uid() == 0 { Self::Unprivileged } else { Self::Current }
    }

    fn apply(self, command: &mut Command) {
        if let Self::Unprivileged = self {
            command.uid(UNPRIVILEGED_ID).gid(UNPRIVILEGED_ID);
        }
    }

    /// Gives `path` and everything below it to the child's user.
    fn take_ownership(self, path: &Path) {
        let Self::Unprivileged = self else {
            return;
        };
        std::os::unix::fs::chown(path, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID)).unwrap();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                self.take_ownership(&entry.unwrap().path());
            }
        }
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kms-local")
}

/// Builds a command that starts kms-local with SIGXFSZ ignored, behind `wrapper`
/// (for example `prlimit --fsize=…`) when one is given.
fn server_command(data: &Path, wrapper: &[&str], identity: Identity) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", r#"trap '' XFSZ; exec "$0" "$@""#]);
    command.args(wrapper);
    command.args([binary(), "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]);
    command.env("RUST_LOG", "info").stdin(Stdio::null());
    identity.apply(&mut command);
    command
}

impl Server {
    fn start(data: &Path) -> Self {
        Self::start_with(server_command(data, &[], Identity::Current))
    }

    fn start_with(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = drain(child.stderr.take().unwrap(), Arc::clone(&stderr));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let Some(endpoint) = line.strip_prefix("kms-local listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            stderr_reader.join().unwrap();
            panic!("unexpected start-up line {line:?}; stderr: {}", stderr.lock().unwrap());
        };
        let address = endpoint.trim_end().parse().unwrap();
        Self { child, address, stderr, stderr_reader: Some(stderr_reader) }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends one signed KMS request and returns the status, the request id
    /// and the JSON body.
    async fn call(&self, operation: &str, body: Value) -> (u16, String, Value) {
        let request = common::signed_request(
            self.address,
            &format!("TrentService.{operation}"),
            "application/x-amz-json-1.1",
            &body.to_string(),
        );
        let (status, headers, body) = common::raw_request(self.address, &request).await;
        let request_id = headers
            .iter()
            .find(|(name, _)| name == "x-amzn-requestid")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        (status, request_id, serde_json::from_str(&body).unwrap_or_else(|_| panic!("{operation}: {body}")))
    }

    /// Sends a request that must succeed and returns its body.
    async fn ok(&self, operation: &str, body: Value) -> Value {
        let (status, _, response) = self.call(operation, body).await;
        assert_eq!(status, 200, "{operation}: {response}");
        response
    }

    async fn create_key(&self, description: &str) -> String {
        let response = self.ok("CreateKey", json!({ "Description": description })).await;
        response["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    }

    async fn key_ids(&self) -> Vec<String> {
        let response = self.ok("ListKeys", json!({ "Limit": 1000 })).await;
        let mut ids: Vec<String> =
            response["Keys"].as_array().unwrap().iter().map(|key| key["KeyId"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    }

    /// Stops the server with SIGTERM; returns its exit code and stderr.
    fn stop(mut self) -> (i32, String) {
        let status = Command::new("kill").args(["-TERM", &self.pid()]).status().unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap().code().unwrap();
        self.stderr_reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        (code, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stderr_reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies `source` into `sink` on a thread, so that the child never blocks
/// on a full pipe.
fn drain(mut source: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0_u8; 4096];
        while let Ok(read) = source.read(&mut buffer) {
            if read == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
}

/// Runs kms-local on `data` and expects it to exit without serving; returns
/// the exit code and stderr.
fn start_failing(data: &Path, identity: Identity) -> (i32, String) {
    let mut command = Command::new(binary());
    command.args(["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]).env("RUST_LOG", "info");
    identity.apply(&mut command);
    run_failing(command)
}

/// Runs `command`, which starts kms-local, and expects it to exit without
/// serving; returns the exit code and stderr.
fn run_failing(mut command: Command) -> (i32, String) {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let readers = [
        drain(child.stdout.take().unwrap(), Arc::clone(&stdout)),
        drain(child.stderr.take().unwrap(), Arc::clone(&stderr)),
    ];
    // The exit is polled with a deadline, so that a server that starts by
    // mistake fails the test instead of hanging it.
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline || stdout.lock().unwrap().contains("listening") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kms-local did not exit; stdout: {}", stdout.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(*stdout.lock().unwrap(), "", "a failed start-up must print no start-up line");
    let stderr = stderr.lock().unwrap().clone();
    (status.code().unwrap_or_else(|| panic!("killed by a signal: {status:?}; stderr: {stderr}")), stderr)
}

/// Returns the soft file size limit of process `pid`, as prlimit prints it.
fn file_size_limit(pid: &str) -> String {
    let output = Command::new("prlimit")
        .args(["--pid", pid, "--fsize", "--raw", "--noheadings", "--output=SOFT"])
        .output()
        .expect("the full-disk test needs prlimit from util-linux on PATH");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Sets the soft file size limit of process `pid` and leaves the hard limit
/// alone, so that an unprivileged user can raise it again.
fn set_file_size_limit(pid: &str, soft: &str) {
    let output = Command::new("prlimit").args(["--pid", pid, &format!("--fsize={soft}:")]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn policy(marker: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "{marker}", "Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:root"}}, "Action": "kms:*", "Resource": "*"}}]}}"#
    )
}

/// Returns a policy of about 30 000 characters, close to the CreateKey
/// maximum.
fn large_policy(marker: &str) -> String {
    policy(&format!("{marker}{}", "x".repeat(30_000)))
}

/// Checks that a write failed because the disk was full, with a message that
/// names the data directory, the cause and the fix.
fn assert_full_disk_error(operation: &str, status: u16, body: &Value, data: &Path) {
    assert_eq!(status, 500, "{operation}: {body}");
    assert_eq!(body["__type"], "KMSInternalException", "{operation}: {body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&format!("data directory {}", data.display())), "{operation}: {message}");
    assert!(message.contains("File too large"), "{operation}: {message}");
    assert!(message.contains("raise the limit or free space in the data directory"), "{operation}: {message}");
}

/// Checks that a rejected write states that the server serves reads only.
fn assert_reads_only(body: &Value) {
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("serves reads from a copy in memory and rejects writes"), "{message}");
}

/// Encrypts a text under `key_id` and checks that it decrypts again.
async fn assert_key_usable(server: &Server, key_id: &str) {
    let plaintext = BASE64.encode(format!("usable {key_id}"));
    let encrypted = server.ok("Encrypt", json!({ "KeyId": key_id, "Plaintext": plaintext })).await;
    let decrypted = server.ok("Decrypt", json!({ "CiphertextBlob": encrypted["CiphertextBlob"] })).await;
    assert_eq!(decrypted["Plaintext"], plaintext.as_str());
    assert_eq!(decrypted["KeyId"].as_str().unwrap().rsplit('/').next().unwrap(), key_id);
}

fn database_size(data: &Path) -> String {
    std::fs::metadata(data.join("kms-local.redb")).unwrap().len().to_string()
}

/// What the store must hold after the fault: every acknowledged write.
struct Acknowledged {
    key_ids: Vec<String>,
    aliases: Vec<String>,
    /// The key whose policy was replaced with `policy("Kept")`.
    policy_key: String,
    /// A ciphertext made before the fault, and its plaintext in base64.
    ciphertext: String,
    plaintext: String,
}

impl Acknowledged {
    /// Creates two keys, replaces a policy, creates an alias and encrypts.
    async fn write(server: &Server) -> Self {
        let first = server.create_key("before the fault").await;
        let second = server.create_key("before the fault").await;
        server.ok("PutKeyPolicy", json!({ "KeyId": first, "PolicyName": "default", "Policy": policy("Kept") })).await;
        server.ok("CreateAlias", json!({ "AliasName": "alias/kept", "TargetKeyId": first })).await;
        let plaintext = BASE64.encode("written before the fault");
        let encrypted = server.ok("Encrypt", json!({ "KeyId": second, "Plaintext": plaintext })).await;
        let mut key_ids = vec![first.clone(), second];
        key_ids.sort();
        Self {
            key_ids,
            aliases: vec!["alias/kept".to_owned()],
            policy_key: first,
            ciphertext: encrypted["CiphertextBlob"].as_str().unwrap().to_owned(),
            plaintext,
        }
    }

    fn add_key(&mut self, key_id: String) {
        self.key_ids.push(key_id);
        self.key_ids.sort();
    }

    /// Checks that `server` returns exactly the acknowledged writes and that
    /// every key still encrypts and decrypts.
    async fn assert_held_by(&self, server: &Server) {
        assert_eq!(server.key_ids().await, self.key_ids);
        let stored = server.ok("GetKeyPolicy", json!({ "KeyId": self.policy_key, "PolicyName": "default" })).await;
        assert_eq!(stored["Policy"], policy("Kept").as_str());
        let listed = server.ok("ListAliases", json!({})).await;
        let mut aliases: Vec<&str> =
            listed["Aliases"].as_array().unwrap().iter().map(|alias| alias["AliasName"].as_str().unwrap()).collect();
        aliases.sort();
        assert_eq!(aliases, self.aliases);
        let described = server.ok("DescribeKey", json!({ "KeyId": "alias/kept" })).await;
        assert_eq!(described["KeyMetadata"]["KeyId"], self.policy_key.as_str());
        let decrypted = server.ok("Decrypt", json!({ "CiphertextBlob": self.ciphertext })).await;
        assert_eq!(decrypted["Plaintext"], self.plaintext.as_str());
        for key_id in &self.key_ids {
            let described = server.ok("DescribeKey", json!({ "KeyId": key_id })).await;
            assert_eq!(described["KeyMetadata"]["Enabled"], true, "{key_id}");
            assert_key_usable(server, key_id).await;
        }
    }
}

/// Finds the log line of the failed request `request_id`.
fn failure_log<'a>(stderr: &'a str, request_id: &str) -> &'a str {
    stderr
        .lines()
        .find(|line| line.contains("request failed") && line.contains(request_id))
        .unwrap_or_else(|| panic!("no log line for request {request_id}: {stderr}"))
}

#[tokio::test]
async fn full_disk_rejects_writes_and_serves_reads() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let server = Server::start(&data);
    let mut acknowledged = Acknowledged::write(&server).await;
    let first = acknowledged.key_ids[0].clone();
    let second = acknowledged.key_ids[1].clone();

    let pid = server.pid();
    let original_limit = file_size_limit(&pid);
    set_file_size_limit(&pid, HEADER_ONLY_LIMIT);

    // Every kind of write fails, the first one and those after it. redb
    // cannot repair the file under this limit, so the server reads from a
    // copy in memory.
    let (status, failed_request_id, body) = server.call("CreateKey", json!({ "Description": "lost" })).await;
    assert_full_disk_error("CreateKey", status, &body, &data);
    assert_reads_only(&body);
    let (status, _, body) = server.call("CreateKey", json!({ "Description": "lost" })).await;
    assert_full_disk_error("CreateKey", status, &body, &data);
    assert_reads_only(&body);
    let (status, _, body) =
        server.call("PutKeyPolicy", json!({ "KeyId": first, "PolicyName": "default", "Policy": policy("Lost") })).await;
    assert_full_disk_error("PutKeyPolicy", status, &body, &data);
    let (status, _, body) =
        server.call("CreateAlias", json!({ "AliasName": "alias/lost", "TargetKeyId": first })).await;
    assert_full_disk_error("CreateAlias", status, &body, &data);
    let (status, _, body) = server.call("DisableKey", json!({ "KeyId": second })).await;
    assert_full_disk_error("DisableKey", status, &body, &data);
    let (status, _, body) = server.call("DeleteAlias", json!({ "AliasName": "alias/kept" })).await;
    assert_full_disk_error("DeleteAlias", status, &body, &data);

    // Reads keep working and show exactly what was acknowledged.
    acknowledged.assert_held_by(&server).await;

    // With room again, the next write opens the file again and succeeds.
    set_file_size_limit(&pid, &original_limit);
    let third = server.create_key("after the fault").await;
    acknowledged.add_key(third);
    acknowledged.assert_held_by(&server).await;

    let (code, stderr) = server.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(failure_log(&stderr, &failed_request_id).contains("File too large"), "{stderr}");
    assert!(stderr.contains("serving reads from a copy in memory"), "{stderr}");
    assert!(stderr.contains("reopened the key store"), "{stderr}");

    // Opening the store writes redb's allocator state, so a start-up on the
    // full disk fails, with a message that names the cause.
    let database = data.join("kms-local.redb");
    let limit = format!("--fsize={HEADER_ONLY_LIMIT}");
    for attempt in 0..2 {
        let (code, stderr) = run_failing(server_command(&data, &["prlimit", &limit, "--"], Identity::Current));
        assert_eq!(code, 1, "attempt {attempt}: {stderr}");
        let expected =
            format!("kms-local: cannot open database {}: File too large (os error 27); ", database.display());
        assert!(stderr.starts_with(&expected), "attempt {attempt}: {stderr}");
        assert!(
            stderr.trim_end().ends_with("raise the limit and start kms-local again"),
            "attempt {attempt}: {stderr}"
        );
    }

    // Restarted without the limit, the store contains every acknowledged
    // write and takes new ones.
    let restarted = Server::start(&data);
    acknowledged.assert_held_by(&restarted).await;
    let fourth = restarted.create_key("after the restart").await;
    restarted.ok("CreateAlias", json!({ "AliasName": "alias/after", "TargetKeyId": fourth })).await;
    restarted.ok("DisableKey", json!({ "KeyId": second })).await;
    let (code, stderr) = restarted.stop();
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn filling_disk_keeps_acknowledged_keys() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let server = Server::start(&data);
    let mut acknowledged = Acknowledged::write(&server).await;

    // The file may not grow any more; large keys fill its free pages until
    // one does not fit.
    let pid = server.pid();
    let original_limit = file_size_limit(&pid);
    set_file_size_limit(&pid, &database_size(&data));
    let mut failure = None;
    for attempt in 0..MAX_FILL_WRITES {
        let request = json!({ "Description": "fill", "Policy": large_policy(&format!("Fill{attempt}")) });
        let (status, request_id, body) = server.call("CreateKey", request).await;
        if status != 200 {
            failure = Some((status, request_id, body));
            break;
        }
        acknowledged.add_key(body["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned());
    }
    let (status, failed_request_id, body) =
        failure.unwrap_or_else(|| panic!("{MAX_FILL_WRITES} large keys fit under the file size limit"));
    assert_full_disk_error("CreateKey", status, &body, &data);
    assert!(acknowledged.key_ids.len() > 2, "the database had no free pages to fill");

    // The database was reopened in place, so reads go on.
    acknowledged.assert_held_by(&server).await;

    set_file_size_limit(&pid, &original_limit);
    let after = server.create_key("after the fault").await;
    acknowledged.add_key(after);
    let (code, stderr) = server.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(failure_log(&stderr, &failed_request_id).contains("File too large"), "{stderr}");
    assert!(stderr.contains("reopened the key store"), "{stderr}");

    let restarted = Server::start(&data);
    acknowledged.assert_held_by(&restarted).await;
    let (code, stderr) = restarted.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// Creates a store with one key in `data`, owned by the child's user, and
/// returns the key id.
async fn store_with_one_key(data: &Path, identity: Identity) -> String {
    std::fs::create_dir(data).unwrap();
    identity.take_ownership(data);
    let server = Server::start_with(server_command(data, &[], identity));
    let key_id = server.create_key("stored").await;
    let (code, stderr) = server.stop();
    assert_eq!(code, 0, "{stderr}");
    key_id
}

async fn assert_store_serves(data: &Path, identity: Identity, key_id: &str) {
    let server = Server::start_with(server_command(data, &[], identity));
    assert_eq!(server.key_ids().await, [key_id]);
    assert_key_usable(&server, key_id).await;
    let (code, stderr) = server.stop();
    assert_eq!(code, 0, "{stderr}");
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn read_only_data_directory_is_rejected() {
    let directory = tempfile::tempdir().unwrap();
    let identity = Identity::for_tests(directory.path());
    identity.take_ownership(directory.path());
    let data = directory.path().join("data");
    let key_id = store_with_one_key(&data, identity).await;
    let database = data.join("kms-local.redb");
    let lock = data.join("kms-local.lock");
    let stored = std::fs::read(&database).unwrap();

    // The whole directory is read-only: the lock file is the first to fail.
    set_mode(&data, 0o500);
    set_mode(&lock, 0o400);
    set_mode(&database, 0o400);
    let (code, stderr) = start_failing(&data, identity);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot open {} for reading and writing: Permission denied", lock.display())),
        "{stderr}"
    );
    assert!(stderr.contains("must be writable by the user running kms-local"), "{stderr}");
    assert_eq!(std::fs::read(&database).unwrap(), stored);

    // Only the database file is read-only.
    set_mode(&data, 0o700);
    set_mode(&lock, 0o600);
    let (code, stderr) = start_failing(&data, identity);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot open {} for reading and writing: Permission denied", database.display())),
        "{stderr}"
    );
    assert!(stderr.contains("fix their owner or mode, or pass a different --data-dir"), "{stderr}");
    assert_eq!(std::fs::read(&database).unwrap(), stored);
    assert_eq!(std::fs::metadata(&database).unwrap().permissions().mode() & 0o777, 0o400);

    // A new data directory in a read-only parent.
    let parent = directory.path().join("read-only");
    std::fs::create_dir(&parent).unwrap();
    identity.take_ownership(&parent);
    set_mode(&parent, 0o500);
    let fresh = parent.join("data");
    let (code, stderr) = start_failing(&fresh, identity);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot create data directory {}", fresh.display())), "{stderr}");
    assert!(stderr.contains("cannot write to the parent directory"), "{stderr}");
    assert!(!fresh.exists());

    // Writable again, the store opens unchanged.
    set_mode(&parent, 0o700);
    set_mode(&database, 0o600);
    assert_store_serves(&data, identity, &key_id).await;
}

#[test]
fn non_directory_data_dir_is_rejected() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();

    let below_file = file.join("data");
    let (code, stderr) = start_failing(&below_file, Identity::Current);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot create data directory {}", below_file.display())), "{stderr}");
    assert!(stderr.contains("a parent of that path is a file, not a directory"), "{stderr}");

    let (code, stderr) = start_failing(&file, Identity::Current);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot create data directory {}", file.display())), "{stderr}");
    assert!(stderr.contains("the path exists and is not a directory"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");

    let data = directory.path().join("data");
    std::fs::create_dir_all(data.join("kms-local.redb")).unwrap();
    let (code, stderr) = start_failing(&data, Identity::Current);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot open {}", data.join("kms-local.redb").display())), "{stderr}");
    assert!(stderr.contains("Is a directory"), "{stderr}");
    assert!(stderr.contains("a directory has the name of this kms-local file"), "{stderr}");
}

#[tokio::test]
async fn damaged_database_is_rejected_unchanged() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let key_id = store_with_one_key(&data, Identity::Current).await;
    let database: PathBuf = data.join("kms-local.redb");
    let stored = std::fs::read(&database).unwrap();

    let mut garbage = stored.clone();
    for (index, byte) in garbage.iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(31) ^ 0x5a;
    }
    let mut damaged_pages = stored.clone();
    damaged_pages[8192..].fill(0x5a);
    let damages = [
        ("truncated to half", stored[..stored.len() / 2].to_vec()),
        ("truncated inside the header", stored[..100].to_vec()),
        ("garbage", garbage),
        ("valid header, garbage pages", damaged_pages),
    ];
    for (name, bytes) in damages {
        std::fs::write(&database, &bytes).unwrap();
        let (code, stderr) = start_failing(&data, Identity::Current);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(stderr.contains(&format!("database {} is damaged", database.display())), "{name}: {stderr}");
        assert!(stderr.contains("restore it from a backup"), "{name}: {stderr}");
        assert!(!stderr.contains("panicked at"), "{name}: {stderr}");
        assert!(std::fs::read(&database).unwrap() == bytes, "{name}: kms-local changed the damaged file");
    }

    std::fs::write(&database, &stored).unwrap();
    assert_store_serves(&data, Identity::Current, &key_id).await;
}
