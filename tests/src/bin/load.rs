//! `load`: an end-to-end load driver. Starts kms-local and parent-proxy from
//! a build directory, then sends DeriveSharedSecret with a Recipient at a
//! chosen concurrency and count, and prints throughput, p50, p99 and the
//! peak resident memory of each process.
//!
//! Before and after the load, it measures the cryptographic floor of one
//! request on this machine, single-threaded, and reports the enclave mode
//! against the lower of the two measurements.
//!
//! Modes, so that each hop's cost can be measured separately in one run:
//! - `enclave`: the enclave-agent library (attest, send through the parent,
//!   open the envelope), the whole flow;
//! - `proxy`: protocol frames through parent-proxy with a prepared document,
//!   no enclave-side cryptography;
//! - `direct`: the same KMS calls made with aws-sdk-kms straight to kms-local.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_lc_rs::agreement;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyAgreementAlgorithmSpec, KeyEncryptionMechanism, RecipientInfo};
use clap::Parser;
use enclave_agent::client::{DeriveSharedSecretParams, KeyReuse, RecipientClient};
use enclave_agent::key::{EphemeralKey, RsaKeySize};
use enclave_agent::nsm::{MockNsm, Nsm};
use enclave_agent::parent::ParentClient;
use recipient_common::attestation::{Verifier, VerifyOptions};
use recipient_common::cms;
use recipient_common::protocol::{DeriveSharedSecretRequest, Operation, Output, Recipient};
use recipient_common::transport::Address;
use recipient_tests::{
    Binaries, create_agreement_key, init_mock_ca, kms_client, openssl_derive, openssl_peer_key, start_kms_local,
    start_parent_proxy,
};

/// Path of the kernel's idle driver name.
const CPUIDLE_DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
/// Path of the time a guest with the haltpoll driver polls before it halts a core.
const GUEST_HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

fn read_setting(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
}

/// Returns the line that records the run's idle setting, or `None` when the
/// kernel does not report one. On a virtual machine, resuming an idle core
/// can take tens of microseconds, which shows in the concurrency 1 median.
fn describe_idle(driver: Option<String>, halt_poll_ns: Option<String>) -> Option<String> {
    let driver = driver?;
    Some(match halt_poll_ns {
        Some(ns) if driver == "haltpoll" => format!("cpu idle driver: haltpoll, guest_halt_poll_ns {ns}"),
        _ => format!("cpu idle driver: {driver}"),
    })
}

/// Load the Recipient flow end to end and report latency and memory.
#[derive(Debug, Parser)]
struct Args {
    /// Directory holding the enclave-agent, parent-proxy and kms-local binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Modes to run, in order.
    #[arg(long, value_enum, num_args = 1.., default_values = ["direct", "proxy", "enclave"])]
    mode: Vec<Mode>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests per mode.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests per mode before measuring, to warm connections and caches.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Requests one enclave key pair may serve (enclave mode); 1 makes a key per request.
    #[arg(long, default_value_t = 1000)]
    key_reuse: u32,
    /// Also open this many idle connections to parent-proxy and to kms-local and report their memory.
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Calls of each step when measuring the cryptographic floor.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    floor_rounds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Direct,
    Proxy,
    Enclave,
}

/// One request's work in a mode.
#[derive(Clone)]
enum Caller {
    Direct { client: aws_sdk_kms::Client, key_id: String, peer: Vec<u8>, document: Vec<u8> },
    Proxy { parent: Arc<ParentClient>, key_id: String, peer: Vec<u8>, document: Vec<u8> },
    Enclave { client: Arc<RecipientClient>, key_id: String, peer: Vec<u8>, expected: Arc<Vec<u8>> },
}

impl Caller {
    async fn call(&self) -> anyhow::Result<()> {
        match self {
            Caller::Direct { client, key_id, peer, document } => {
                let recipient = RecipientInfo::builder()
                    .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
                    .attestation_document(Blob::new(document.clone()))
                    .build();
                let response = client
                    .derive_shared_secret()
                    .key_id(key_id)
                    .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
                    .public_key(Blob::new(peer.clone()))
                    .recipient(recipient)
                    .send()
                    .await?;
                if response.ciphertext_for_recipient().is_none() {
                    bail!("no CiphertextForRecipient");
                }
            }
            Caller::Proxy { parent, key_id, peer, document } => {
                let request = DeriveSharedSecretRequest {
                    key_id: key_id.clone(),
                    key_agreement_algorithm: "ECDH".to_owned(),
                    public_key: serde_bytes::ByteBuf::from(peer.clone()),
                    grant_tokens: Vec::new(),
                    dry_run: false,
                    recipient: Some(Recipient::new(document.clone())),
                };
                match parent.call(Operation::DeriveSharedSecret(request)).await? {
                    Output::DeriveSharedSecret(output) if output.ciphertext_for_recipient.is_some() => {}
                    other => bail!("unexpected output {other:?}"),
                }
            }
            Caller::Enclave { client, key_id, peer, expected } => {
                let params = DeriveSharedSecretParams {
                    key_id: key_id.clone(),
                    public_key: peer.clone(),
                    grant_tokens: Vec::new(),
                    dry_run: false,
                };
                let derived = client.derive_shared_secret(params).await?;
                if derived.shared_secret.as_slice() != expected.as_slice() {
                    bail!("the shared secret differs from OpenSSL's");
                }
            }
        }
        Ok(())
    }
}

/// Median time of one call of `step`, over `rounds` calls after one warm-up
/// call. The median, like the load's p50, leaves out calls that an interrupt
/// or another process slowed down.
fn median_time(rounds: u32, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    step()?;
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let started = Instant::now();
        step()?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(percentile(&times, 0.5))
}

/// Mean time of one call of `step`, over `rounds` calls after one warm-up
/// call: the expected cost of a step whose time varies by nature, such as
/// the prime search of key-pair generation.
fn mean_time(rounds: u32, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    step()?;
    let started = Instant::now();
    for _ in 0..rounds {
        step()?;
    }
    Ok(started.elapsed() / rounds)
}

/// The cryptographic work of one request, each step timed alone on one thread.
struct Floor {
    attestation: Duration,
    verification: Duration,
    ecdh: Duration,
    envelope: Duration,
    opening: Duration,
    key_pair: Duration,
}

impl Floor {
    /// Measures each step with the same algorithms and sizes as the load:
    /// a mock NSM document for an RSA-2048 key, its verification with a warm
    /// certificate cache, ECDH on P-256, the CMS envelope of a 32-byte secret,
    /// and opening it.
    fn measure(nsm: &dyn Nsm, root_pem: &[u8], peer_public: &[u8], rounds: u32) -> anyhow::Result<Self> {
        let key = EphemeralKey::generate(RsaKeySize::Rsa2048)?;
        let spki = key.public_key_der().to_vec();
        let attestation = median_time(rounds, || {
            enclave_agent::nsm::attest(nsm, Some(spki.clone()), None, None)?;
            Ok(())
        })?;

        let document = enclave_agent::nsm::attest(nsm, Some(spki.clone()), None, None)?;
        let mut verifier = Verifier::new();
        verifier.add_root_pem(root_pem)?;
        let options = VerifyOptions::default();
        let verification = median_time(rounds, || {
            verifier.verify(&document, &options)?;
            Ok(())
        })?;

        // The uncompressed point is the last 65 bytes of a P-256 SubjectPublicKeyInfo.
        let point = peer_public.get(peer_public.len().saturating_sub(65)..).unwrap_or_default();
        let kms_key = agreement::PrivateKey::generate(&agreement::ECDH_P256)
            .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
        let mut secret = Vec::new();
        let ecdh = median_time(rounds, || {
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
            secret = agreement::agree(&kms_key, peer, anyhow::anyhow!("ECDH with the peer key failed"), |shared| {
                Ok(shared.to_vec())
            })?;
            Ok(())
        })?;

        let sealed = cms::build(&secret, &spki)?;
        let envelope = median_time(rounds, || {
            cms::build(&secret, &spki)?;
            Ok(())
        })?;
        let opening = median_time(rounds, || {
            cms::decrypt(&sealed, key.private_key())?;
            Ok(())
        })?;
        let key_pair = mean_time(rounds.div_ceil(10), || {
            EphemeralKey::generate(RsaKeySize::Rsa2048)?;
            Ok(())
        })?;
        Ok(Self { attestation, verification, ecdh, envelope, opening, key_pair })
    }

    /// Returns one request's floor: attestation, the KMS side and the enclave side.
    fn total(&self) -> Duration {
        self.attestation + self.verification + self.ecdh + self.envelope + self.opening
    }

    fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("cryptographic floor, one thread, median per call (key pair: mean):");
        println!("  attestation (mock NSM, ES384 signature)          {:>8.3} ms", ms(self.attestation));
        println!("  KMS: document verification (certificates cached) {:>8.3} ms", ms(self.verification));
        println!("  KMS: ECDH P-256                                  {:>8.3} ms", ms(self.ecdh));
        println!("  KMS: envelope (RSA-OAEP encryption, AES-256-CBC) {:>8.3} ms", ms(self.envelope));
        println!("  enclave: open (RSA-OAEP decryption, AES-256-CBC) {:>8.3} ms", ms(self.opening));
        println!("  floor of one request                             {:>8.3} ms", ms(self.total()));
        println!("  RSA-2048 key pair, separately                    {:>8.3} ms", ms(self.key_pair));
    }
}

/// Sends `count` requests with `concurrency` workers; returns sorted latencies.
async fn drive(caller: &Caller, count: usize, concurrency: usize) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (caller, next) = (caller.clone(), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let begun = Instant::now();
                caller.call().await?;
                latencies.push(begun.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(result) = workers.join_next().await {
        latencies.extend(result.context("worker panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok((latencies, elapsed))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// Peak and current resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Counts the established TCP connections whose local port is `port`: on
/// loopback, the server ends of the connections to a service on that port.
fn established_to(port: u16) -> usize {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            let local_port = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) && state == "01" {
                count += 1;
            }
        }
    }
    count
}

/// Waits up to five seconds for every connection to `port` to close.
async fn expect_no_connections(service: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = established_to(port);
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{open} connections to {service} are still open 5 s after the load; a connection leaked");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("nitro-recipient-load-").tempdir()?;
    let dir = scratch.path();
    // The services log at their default level, as in production, to files
    // in the scratch directory.
    let binaries = Binaries::in_dir(&args.bin_dir)?.log_to(dir);
    let mock_ca = dir.join("mock-ca");
    init_mock_ca(&binaries, dir, &mock_ca)?;
    let kms = start_kms_local(&binaries, dir, &dir.join("kms-data"), &[&mock_ca.join("root.pem")])?;
    let parent_args = ["--max-in-flight", "1024", "--max-connections", "4096"];
    let parent = start_parent_proxy(&binaries, dir, &kms.address, &parent_args)?;

    let client = kms_client(&kms.address);
    let (key_id, kms_public) = create_agreement_key(&client, "ECC_NIST_P256").await?;
    let kms_public_path = dir.join("kms.der");
    std::fs::write(&kms_public_path, &kms_public)?;
    let peer = openssl_peer_key(dir, "P-256")?;
    let expected = Arc::new(openssl_derive(&peer, &kms_public_path)?);
    let peer_public = std::fs::read(&peer.public_der)?;

    let nsm: Arc<dyn Nsm> = Arc::new(MockNsm::open(&mock_ca, None)?);
    let document_key = EphemeralKey::generate(RsaKeySize::Rsa2048)?;
    let document = enclave_agent::nsm::attest(nsm.as_ref(), Some(document_key.public_key_der().to_vec()), None, None)?;
    let parent_address: Address = parent.address.parse()?;
    let parent_port: u16 = parent
        .address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("parent-proxy address {} has no port", parent.address))?;

    let root_pem = std::fs::read(mock_ca.join("root.pem"))?;
    let floor_before = Floor::measure(nsm.as_ref(), &root_pem, &peer_public, args.floor_rounds)?;
    floor_before.print();
    let mut enclave_results = Vec::new();

    if let Some(idle) = describe_idle(read_setting(CPUIDLE_DRIVER), read_setting(GUEST_HALT_POLL_NS)) {
        println!("{idle}");
    }
    println!(
        "load: {} requests per mode after {} warm-up, concurrency {}, P-256 DeriveSharedSecret with Recipient (RSA-2048)",
        args.requests, args.warmup, args.concurrency
    );
    println!("{:<8} {:>10} {:>10} {:>10} {:>10}", "mode", "req/s", "p50 ms", "p99 ms", "max ms");
    for mode in &args.mode {
        let caller = match mode {
            Mode::Direct => Caller::Direct {
                client: client.clone(),
                key_id: key_id.clone(),
                peer: peer_public.clone(),
                document: document.clone(),
            },
            Mode::Proxy => Caller::Proxy {
                parent: Arc::new(ParentClient::new(parent_address.clone(), Duration::from_secs(60))),
                key_id: key_id.clone(),
                peer: peer_public.clone(),
                document: document.clone(),
            },
            Mode::Enclave => {
                let parent_client = ParentClient::new(parent_address.clone(), Duration::from_secs(60));
                let reuse = (args.key_reuse > 1)
                    .then_some(KeyReuse { max_age: Duration::from_secs(240), max_uses: args.key_reuse });
                let recipient =
                    RecipientClient::new(Arc::clone(&nsm), parent_client, RsaKeySize::Rsa2048).with_key_reuse(reuse);
                Caller::Enclave {
                    client: Arc::new(recipient),
                    key_id: key_id.clone(),
                    peer: peer_public.clone(),
                    expected: Arc::clone(&expected),
                }
            }
        };
        drive(&caller, args.warmup, args.concurrency).await?;
        let (latencies, elapsed) = drive(&caller, args.requests, args.concurrency).await?;
        let throughput = latencies.len() as f64 / elapsed.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<8} {:>10.1} {:>10.2} {:>10.2} {:>10.2}",
            format!("{mode:?}").to_lowercase(),
            throughput,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default())
        );
        if *mode == Mode::Enclave {
            enclave_results.push((percentile(&latencies, 0.5), throughput));
        }
        drop(caller);
        expect_no_connections("parent-proxy", parent_port).await?;
    }

    // A second measurement guards against a floor taken while the machine
    // was briefly busy: the lower one, the stricter, is the reference.
    let floor_after = Floor::measure(nsm.as_ref(), &root_pem, &peer_public, args.floor_rounds)?;
    let floor = floor_before.total().min(floor_after.total());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let floor_rate = cores as f64 / floor.as_secs_f64();
    println!(
        "floor of one request: {:.3} ms before the load, {:.3} ms after; {:.3} ms is the reference",
        floor_before.total().as_secs_f64() * 1000.0,
        floor_after.total().as_secs_f64() * 1000.0,
        floor.as_secs_f64() * 1000.0
    );
    println!("  floor throughput on {cores} cores: {floor_rate:.1} requests/s");
    for (p50, throughput) in enclave_results {
        let p50 = p50.as_secs_f64() / floor.as_secs_f64();
        println!("  enclave p50 / floor {p50:.2}, throughput / floor throughput {:.2}", throughput / floor_rate);
    }

    if args.idle_connections > 0 {
        let mut idle = Vec::with_capacity(args.idle_connections);
        for _ in 0..args.idle_connections {
            idle.push(recipient_common::transport::connect(&parent_address).await?);
        }
        let kms_address = kms.address.trim_start_matches("http://");
        let mut idle_kms = Vec::with_capacity(args.idle_connections);
        for _ in 0..args.idle_connections {
            idle_kms.push(tokio::net::TcpStream::connect(kms_address).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("with {} idle connections open to each service:", idle.len());
        for (name, pid) in [("parent-proxy", parent.pid()), ("kms-local", kms.pid())] {
            let (_, rss) = memory_kib(pid);
            println!("  {name} resident {:.1} MiB", rss as f64 / 1024.0);
        }
    }
    for (name, pid) in [("kms-local", kms.pid()), ("parent-proxy", parent.pid())] {
        let (peak, current) = memory_kib(pid);
        println!("{name}: peak resident {:.1} MiB, now {:.1} MiB", peak as f64 / 1024.0, current as f64 / 1024.0);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("load: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::describe_idle;

    #[test]
    fn idle_line_per_driver() {
        assert_eq!(
            describe_idle(Some("haltpoll".into()), Some("0".into())).as_deref(),
            Some("cpu idle driver: haltpoll, guest_halt_poll_ns 0")
        );
        assert_eq!(
            describe_idle(Some("intel_idle".into()), Some("0".into())).as_deref(),
            Some("cpu idle driver: intel_idle")
        );
        assert_eq!(describe_idle(Some("acpi_idle".into()), None).as_deref(), Some("cpu idle driver: acpi_idle"));
        assert_eq!(describe_idle(None, Some("0".into())), None);
    }
}
