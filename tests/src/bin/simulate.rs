//! `simulate`: runs the whole DeriveSharedSecret Recipient flow on this
//! machine with real processes on loopback (kms-local, parent-proxy,
//! enclave-agent with the mock NSM) and checks the enclave's secret against
//! OpenSSL's. Then it binds the key to an enclave image built with eif-tool
//! and checks that the key policy allows that image and denies another.
//! Behind `make simulate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use recipient_tests::{
    Binaries, check_success, create_agreement_key, init_mock_ca, kms_client, openssl_derive, openssl_peer_key,
    start_kms_local, start_parent_proxy,
};

/// Simulate the Nitro Enclaves DeriveSharedSecret Recipient flow locally.
#[derive(Debug, Parser)]
struct Args {
    /// Directory holding the enclave-agent, parent-proxy and kms-local binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// KMS key spec of the key-agreement key.
    #[arg(long, default_value = "ECC_NIST_P256", value_parser = ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"])]
    key_spec: String,
}

/// Prints a step's name, runs it and prints its duration.
async fn step<T, F>(number: usize, name: &str, work: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    println!("[{number}] {name} ...");
    let started = Instant::now();
    let result = work.await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(_) => println!("    done in {elapsed:.0} ms"),
        Err(error) => println!("    FAILED after {elapsed:.0} ms: {error:#}"),
    }
    result
}

/// The working directory, for the Ctrl-C handler.
static WORKING_DIRECTORY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

async fn simulate(args: Args) -> anyhow::Result<bool> {
    let scratch = tempfile::Builder::new().prefix("nitro-recipient-simulate-").tempdir()?;
    let _ = WORKING_DIRECTORY.set(scratch.path().to_path_buf());
    let result = run_steps(&args, scratch.path()).await;
    if !matches!(result, Ok(true)) {
        print_logs(scratch.path());
    }
    result
}

/// Prints the last lines of each service log in `dir`.
fn print_logs(dir: &std::path::Path) {
    for name in ["kms-local", "parent-proxy", "enclave-agent"] {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.log"))) else { continue };
        if text.trim().is_empty() {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        println!("--- last lines of the {name} log ---");
        for line in lines.iter().skip(lines.len().saturating_sub(20)) {
            println!("{line}");
        }
    }
}

async fn run_steps(args: &Args, dir: &std::path::Path) -> anyhow::Result<bool> {
    let binaries = Binaries::in_dir(&args.bin_dir)?.log_to(dir);
    println!("working directory: {} (removed at exit; service logs are printed on failure)", dir.display());
    let curve = recipient_tests::openssl_curve(&args.key_spec)?;

    let mock_ca = dir.join("mock-ca");
    step(1, "create the mock NSM certificate authority (enclave-agent mock-ca init)", async {
        init_mock_ca(&binaries, dir, &mock_ca)
    })
    .await?;

    let root = mock_ca.join("root.pem");
    let kms = step(2, "start kms-local trusting the mock root", async {
        let service = start_kms_local(&binaries, dir, &dir.join("kms-data"), &[&root])?;
        println!("    kms-local at {}", service.address);
        Ok(service)
    })
    .await?;

    let parent = step(3, "start parent-proxy forwarding to kms-local", async {
        let service = start_parent_proxy(&binaries, dir, &kms.address, &[])?;
        println!("    parent-proxy at {}", service.address);
        Ok(service)
    })
    .await?;

    let client = kms_client(&kms.address);
    let (key_id, kms_public_der) =
        step(4, &format!("create a KEY_AGREEMENT {} key and fetch its public key", args.key_spec), async {
            let created = create_agreement_key(&client, &args.key_spec).await?;
            println!("    key id {}", created.0);
            Ok(created)
        })
        .await?;
    let kms_public_path = dir.join("kms-public.der");
    std::fs::write(&kms_public_path, &kms_public_der)?;

    let peer =
        step(5, &format!("make a peer {curve} key pair with openssl genpkey"), async { openssl_peer_key(dir, curve) })
            .await?;

    let enclave_secret = step(6, "enclave-agent derive-shared-secret with the mock NSM, through the parent", async {
        let output = binaries
            .command("enclave-agent", dir)
            .args(["derive-shared-secret", "--key-id", &key_id, "--public-key"])
            .arg(format!("fileb://{}", peer.public_der.display()))
            .args(["--parent", &parent.address, "--nsm", "mock", "--mock-dir"])
            .arg(&mock_ca)
            .args(["--output", "json"])
            .output()
            .context("cannot run enclave-agent")?;
        check_success("enclave-agent derive-shared-secret", &output)?;
        let response: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("enclave-agent did not print JSON")?;
        let secret =
            response.get("SharedSecret").and_then(|v| v.as_str()).context("no SharedSecret in the enclave's output")?;
        println!(
            "    KeyId {}, KeyAgreementAlgorithm {}, KeyOrigin {}",
            field(&response, "KeyId"),
            field(&response, "KeyAgreementAlgorithm"),
            field(&response, "KeyOrigin")
        );
        STANDARD.decode(secret).context("SharedSecret is not base64")
    })
    .await?;

    let openssl_secret = step(7, "derive the peer's side with openssl pkeyutl -derive", async {
        openssl_derive(&peer, &kms_public_path)
    })
    .await?;

    // The shared secret is a throwaway from a throwaway key; a digest is
    // enough to compare by eye.
    let digest = |secret: &[u8]| {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(secret, &mut hasher);
        format!("{:016x}", std::hash::Hasher::finish(&hasher))
    };
    println!("enclave secret: {} bytes, fingerprint {}", enclave_secret.len(), digest(&enclave_secret));
    println!("openssl secret: {} bytes, fingerprint {}", openssl_secret.len(), digest(&openssl_secret));
    if enclave_secret != openssl_secret {
        println!("    MISMATCH: the enclave's shared secret differs from OpenSSL's");
        return Ok(false);
    }

    // The same key, now bound to an enclave image by its key policy.
    let image =
        step(8, "build an enclave image with eif-tool (stand-in kernel, enclave-agent in the ramdisk)", async {
            build_image(&binaries, dir, "app", b"")
        })
        .await?;
    step(9, "write the image's key policy with eif-tool policy and put it on the key", async {
        let output = binaries
            .command("eif-tool", dir)
            .args(["policy", "--eif"])
            .arg(&image.eif)
            .args(["--principal", "arn:aws:iam::111122223333:root"])
            .output()?;
        check_success("eif-tool policy", &output)?;
        let policy = String::from_utf8(output.stdout).context("eif-tool policy printed non-UTF-8")?;
        client.put_key_policy().key_id(&key_id).policy_name("default").policy(policy).send().await?;
        println!("    ImageSha384 (PCR0) {}", image.pcr0);
        Ok(())
    })
    .await?;

    let derive_as = |image: &std::path::Path| {
        binaries
            .command("enclave-agent", dir)
            .args(["derive-shared-secret", "--key-id", &key_id, "--public-key"])
            .arg(format!("fileb://{}", peer.public_der.display()))
            .args(["--parent", &parent.address, "--nsm", "mock", "--mock-dir"])
            .arg(&mock_ca)
            .arg("--mock-eif")
            .arg(image)
            .output()
    };
    let allowed = step(10, "enclave-agent with --mock-eif of that image: allowed", async {
        let output = derive_as(&image.eif)?;
        check_success("enclave-agent derive-shared-secret", &output)?;
        let secret = STANDARD.decode(String::from_utf8_lossy(&output.stdout).trim())?;
        let matches = secret == openssl_secret;
        println!(
            "    shared secret {} bytes, fingerprint {}: {}",
            secret.len(),
            digest(&secret),
            if matches { "matches OpenSSL's" } else { "MISMATCH" }
        );
        Ok(matches)
    })
    .await?;

    let other = build_image(&binaries, dir, "other", b"one more application file")?;
    let denied = step(11, "enclave-agent with --mock-eif of a different image: denied", async {
        let output = derive_as(&other.eif)?;
        let log = std::fs::read_to_string(dir.join("enclave-agent.log")).unwrap_or_default();
        let denied =
            output.status.code() == Some(1) && log.contains("AccessDeniedException") && output.stdout.is_empty();
        println!(
            "    PCR0 {}: {}",
            other.pcr0.get(..16).unwrap_or_default(),
            if denied { "AccessDeniedException, as expected" } else { "NOT denied" }
        );
        Ok(denied)
    })
    .await?;

    drop(parent);
    drop(kms);
    Ok(allowed && denied)
}

/// Returns a JSON field for printing, `null` when absent.
fn field<'a>(value: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    value.get(name).unwrap_or(&serde_json::Value::Null)
}

/// An image built for the simulation: the EIF and its PCR0 in hex.
struct Image {
    eif: PathBuf,
    pcr0: String,
}

/// Builds an EIF whose ramdisk holds enclave-agent (and `extra`, when not
/// empty).
fn build_image(binaries: &Binaries, dir: &std::path::Path, name: &str, extra: &[u8]) -> anyhow::Result<Image> {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy(binaries.path("enclave-agent"), root.join("bin/enclave-agent"))?;
    if !extra.is_empty() {
        std::fs::write(root.join("bin/extra.txt"), extra)?;
    }
    let kernel = dir.join("stand-in-kernel");
    std::fs::write(&kernel, b"a stand-in for a bzImage: eif-tool measures bytes, it does not boot them")?;

    let ramdisk = dir.join(format!("{name}.cpio"));
    let output = binaries.command("eif-tool", dir).arg("ramdisk").arg(&root).arg("-o").arg(&ramdisk).output()?;
    check_success("eif-tool ramdisk", &output)?;
    let eif = dir.join(format!("{name}.eif"));
    let output = binaries
        .command("eif-tool", dir)
        .args(["build", "--kernel"])
        .arg(&kernel)
        .args(["--cmdline", "console=ttyS0 reboot=k panic=30", "--ramdisk"])
        .arg(&ramdisk)
        .arg("--output")
        .arg(&eif)
        .output()?;
    check_success("eif-tool build", &output)?;

    let measurements: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("eif-tool build printed no JSON")?;
    let pcr0 = measurements
        .pointer("/Measurements/PCR0")
        .and_then(|v| v.as_str())
        .context("no PCR0 in eif-tool's output")?
        .to_owned();
    Ok(Image { eif, pcr0 })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("simulate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    // The steps block their thread while a child runs, so Ctrl-C is handled
    // here on the main thread: stop every service, remove the working
    // directory, and exit.
    let result = runtime.block_on(async {
        let flow = tokio::spawn(simulate(args));
        tokio::select! {
            joined = flow => joined.unwrap_or_else(|error| Err(anyhow::anyhow!("the simulation task failed: {error}"))),
            _ = tokio::signal::ctrl_c() => {
                recipient_tests::stop_all_services();
                if let Some(dir) = WORKING_DIRECTORY.get() {
                    let _ = std::fs::remove_dir_all(dir);
                }
                println!("RESULT: interrupted; every service was stopped and the working directory removed");
                std::process::exit(130);
            }
        }
    });
    match result {
        Ok(true) => {
            println!(
                "RESULT: the enclave's shared secret matches OpenSSL's, and the image's key policy allows only that image"
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("RESULT: FAILED: a check above did not hold");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("RESULT: simulation failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
