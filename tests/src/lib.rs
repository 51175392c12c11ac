//! Harness for end-to-end runs: starts the real `kms-local`, `parent-proxy`
//! and `enclave-agent` binaries on loopback, each in a temporary directory,
//! and stops them when dropped.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Development credentials kms-local accepts by default.
pub const ACCESS_KEY_ID: &str = "AKIAKMSLOCALEXAMPLE";
pub const SECRET_ACCESS_KEY: &str = "kms-local-example-secret";
pub const REGION: &str = "us-east-1";

/// How long a service may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Binaries of the workspace, in one build directory.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
    log_dir: Option<PathBuf>,
}

impl Binaries {
    /// Uses the binaries in `dir` (for example `target/release`).
    pub fn in_dir(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let binaries = Self { dir: dir.into(), log_dir: None };
        for name in ["enclave-agent", "parent-proxy", "kms-local", "eif-tool"] {
            let path = binaries.path(name);
            if !path.is_file() {
                bail!(
                    "{} not found; build it with `cargo build --release --bins`, or pass the folder of the binaries with --bin-dir",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// Builds the debug binaries with cargo (a no-op when they are current)
    /// and uses them. For tests.
    pub fn build_debug() -> anyhow::Result<Self> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args(["build", "--bins", "-p", "enclave-agent", "-p", "parent-proxy", "-p", "kms-local", "-p", "eif-tool"])
            .status()
            .context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build of the binaries failed");
        }
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
        Self::in_dir(target.join("debug"))
    }

    /// Sends the stderr of every command made from now on to
    /// `DIR/<binary>.log` instead of this process's stderr.
    pub fn log_to(mut self, dir: &Path) -> Self {
        self.log_dir = Some(dir.to_path_buf());
        self
    }

    /// Returns the path of binary `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Returns a command for binary `name` with an environment that cannot reach
    /// real AWS: development credentials, no instance metadata, no profiles.
    /// Without a log directory the binary logs to this process's stderr,
    /// warnings and errors only unless `RUST_LOG` is set, so that passing
    /// tests stay quiet.
    pub fn command(&self, name: &str, scratch: &Path) -> Command {
        let mut command = Command::new(self.path(name));
        isolate_aws_environment(&mut command, scratch);
        match &self.log_dir {
            Some(dir) => {
                let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log")));
                if let Ok(log) = log {
                    command.stderr(Stdio::from(log));
                }
            }
            None if std::env::var_os("RUST_LOG").is_none() => {
                command.env("RUST_LOG", "warn");
            }
            None => {}
        }
        command
    }
}

/// Points every AWS setting of `command` at local, harmless values: the
/// development credentials, no instance metadata, and empty config files.
pub fn isolate_aws_environment(command: &mut Command, scratch: &Path) {
    let config = scratch.join("aws-config-empty");
    if !config.exists() {
        let _ = std::fs::write(&config, b"");
    }
    for variable in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ROLE_ARN"] {
        command.env_remove(variable);
    }
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &config);
}

/// Process ids of the services running now, for [`stop_all_services`].
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends SIGTERM to every service still running, for a program that must
/// stop them from a signal handler while another thread is blocked.
pub fn stop_all_services() {
    for pid in running().drain(..) {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    /// The address from the service's ready line.
    pub address: String,
}

impl Service {
    /// Starts `command` and waits for a stdout line that starts with
    /// `ready_prefix`; the rest of that line is the service's address.
    /// Stderr stays as `command` sets it (inherited by default).
    pub fn start(name: &str, mut command: Command, ready_prefix: &str) -> anyhow::Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        running().push(child.id());
        let stdout = child.stdout.take().context("no stdout pipe")?;

        let (sender, receiver) = mpsc::channel();
        let prefix = ready_prefix.to_owned();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent && let Some(address) = line.strip_prefix(&prefix) {
                    let _ = sender.send(address.trim().to_owned());
                    sent = true;
                }
            }
        });

        let mut service = Service { name: name.to_owned(), child, address: String::new() };
        match receiver.recv_timeout(START_TIMEOUT) {
            Ok(address) => {
                service.address = address;
                Ok(service)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed without the ready line: the process exited or is exiting.
                let status = service.child.wait().map_or_else(|error| error.to_string(), |status| status.to_string());
                bail!("{name} exited ({status}) before it printed `{ready_prefix}…`; its log says why")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{name} did not print `{ready_prefix}…` within {} s", START_TIMEOUT.as_secs())
            }
        }
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").args([format!("-{signal}"), self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.child.id());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{} still running after {timeout:?}", self.name)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let pid = self.child.id();
        running().retain(|running| *running != pid);
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts kms-local on a free loopback port.
pub fn start_kms_local(
    binaries: &Binaries,
    scratch: &Path,
    data_dir: &Path,
    trust_roots: &[&Path],
) -> anyhow::Result<Service> {
    let mut command = binaries.command("kms-local", scratch);
    command.arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir);
    for root in trust_roots {
        command.arg("--trust-root").arg(root);
    }
    let mut service = Service::start("kms-local", command, "kms-local listening on ")?;
    if !service.address.starts_with("http://") {
        bail!("kms-local printed an unexpected address `{}`", service.address);
    }
    service.address = service.address.trim_end_matches('/').to_owned();
    Ok(service)
}

/// Starts parent-proxy on a free loopback TCP port, forwarding to `endpoint`.
pub fn start_parent_proxy(
    binaries: &Binaries,
    scratch: &Path,
    endpoint: &str,
    extra_args: &[&str],
) -> anyhow::Result<Service> {
    let mut command = binaries.command("parent-proxy", scratch);
    command.args(["--listen", "tcp://127.0.0.1:0", "--endpoint-url", endpoint, "--region", REGION]);
    command.args(extra_args);
    Service::start("parent-proxy", command, "parent-proxy listening on ")
}

/// Creates the mock CA with `enclave-agent mock-ca init`.
pub fn init_mock_ca(binaries: &Binaries, scratch: &Path, dir: &Path) -> anyhow::Result<()> {
    let output = binaries.command("enclave-agent", scratch).args(["mock-ca", "init", "--dir"]).arg(dir).output()?;
    check_success("enclave-agent mock-ca init", &output)
}

/// Runs `openssl` with `args` and fails with its stderr when it fails.
pub fn openssl(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("openssl").args(args).output().context("cannot run openssl; install it (make deps)")?;
    check_success(&format!("openssl {}", args.join(" ")), &output)?;
    Ok(output.stdout)
}

/// Fails with the command's stderr when it exited non-zero.
pub fn check_success(what: &str, output: &Output) -> anyhow::Result<()> {
    if !output.status.success() {
        bail!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// An aws-sdk-kms client for kms-local at `endpoint`, with the development
/// credentials.
pub fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    let credentials = aws_sdk_kms::config::Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "kms-local");
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// Creates a KEY_AGREEMENT key of `key_spec` and returns its id and its
/// public key (DER SubjectPublicKeyInfo).
pub async fn create_agreement_key(client: &aws_sdk_kms::Client, key_spec: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let created = client
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::from(key_spec))
        .key_usage(aws_sdk_kms::types::KeyUsageType::KeyAgreement)
        .send()
        .await
        .with_context(|| format!("CreateKey {key_spec} failed"))?;
    let key_id = created.key_metadata().map(|m| m.key_id().to_owned()).context("CreateKey returned no KeyMetadata")?;
    let public = client.get_public_key().key_id(&key_id).send().await.context("GetPublicKey failed")?;
    let der = public.public_key().context("GetPublicKey returned no PublicKey")?.as_ref().to_vec();
    Ok((key_id, der))
}

/// The OpenSSL curve name of a KMS key spec.
pub fn openssl_curve(key_spec: &str) -> anyhow::Result<&'static str> {
    match key_spec {
        "ECC_NIST_P256" => Ok("P-256"),
        "ECC_NIST_P384" => Ok("P-384"),
        "ECC_NIST_P521" => Ok("P-521"),
        other => bail!("no OpenSSL curve for key spec {other}"),
    }
}

/// A peer EC key pair made by OpenSSL: the private key PEM and the public
/// key DER files.
#[derive(Debug)]
pub struct PeerKey {
    pub private_pem: PathBuf,
    pub public_der: PathBuf,
}

/// Makes a peer key pair on `curve` with `openssl genpkey`.
pub fn openssl_peer_key(dir: &Path, curve: &str) -> anyhow::Result<PeerKey> {
    let private_pem = dir.join(format!("peer-{curve}.pem"));
    let public_der = dir.join(format!("peer-{curve}.pub.der"));
    let private_text = private_pem.to_string_lossy().into_owned();
    let public_text = public_der.to_string_lossy().into_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        &format!("ec_paramgen_curve:{curve}"),
        "-out",
        &private_text,
    ])?;
    openssl(&["pkey", "-in", &private_text, "-pubout", "-outform", "DER", "-out", &public_text])?;
    Ok(PeerKey { private_pem, public_der })
}

/// Computes the ECDH shared secret with `openssl pkeyutl -derive`.
pub fn openssl_derive(peer: &PeerKey, kms_public_der: &Path) -> anyhow::Result<Vec<u8>> {
    let private_text = peer.private_pem.to_string_lossy().into_owned();
    let kms_text = kms_public_der.to_string_lossy().into_owned();
    openssl(&["pkeyutl", "-derive", "-inkey", &private_text, "-peerkey", &kms_text, "-peerform", "DER"])
}
