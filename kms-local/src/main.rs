//! `kms-local`: a local AWS KMS endpoint for simulation and tests.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kms_local::{Config, Credentials, DEFAULT_LISTEN, Kms};

/// A local AWS KMS endpoint (KMS JSON 1.1 over HTTP) with attestation-aware
/// Recipient support.
///
/// Point an AWS SDK or the AWS CLI at it with `--endpoint-url
/// http://127.0.0.1:4566` (or AWS_ENDPOINT_URL_KMS) and sign with the
/// development credentials: access key AKIAKMSLOCALEXAMPLE, secret
/// kms-local-example-secret, region us-east-1, account 111122223333.
///
/// Once it accepts connections it prints one line to stdout,
/// `kms-local listening on http://ADDRESS`; logs go to stderr (RUST_LOG sets
/// the level, default info).
///
/// Exit codes: 0 after a clean shutdown (SIGINT or SIGTERM), 1 when it cannot
/// start or fails, 2 for invalid arguments.
#[derive(Debug, Parser)]
#[command(name = "kms-local", version)]
#[command(group = clap::ArgGroup::new("store").required(true).args(["data_dir", "ephemeral"]))]
struct Args {
    /// Address to listen on; port 0 picks a free port. Anything other than a
    /// loopback address exposes the development credentials to the network.
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    listen: SocketAddr,

    /// Directory of the key database (created with mode 0700, files 0600).
    /// Only one kms-local may use a directory at a time. Required unless
    /// --ephemeral is given.
    #[arg(long, value_name = "DIR", group = "store")]
    data_dir: Option<PathBuf>,

    /// Keep keys in memory only; they are lost when the process exits.
    #[arg(long, group = "store")]
    ephemeral: bool,

    /// PEM certificate to trust as an attestation root, besides the AWS Nitro
    /// Enclaves root G1 (for example the mock NSM's root.pem). Repeatable.
    #[arg(long, value_name = "PEM")]
    trust_root: Vec<PathBuf>,

    /// Maximum age of a Recipient attestation document, in seconds, 1 to 86400.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, allow_negative_numbers = true, value_parser = parse_document_age)]
    max_document_age: u64,

    /// JSON file of accepted credentials, replacing the development pair:
    /// {"account_id": "111122223333", "region": "us-east-1", "credentials":
    /// [{"access_key_id": "...", "secret_access_key": "...", "principal_arn":
    /// "arn:aws:iam::111122223333:user/NAME"}]}. account_id and region default
    /// to the development values, principal_arn to the account root.
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
}

/// Parses `--listen`: an IP address and a port, with no scheme or host name.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        let example = value.rsplit_once(':').map_or("4566", |(_, port)| port).trim_start_matches('/');
        format!("`{value}` is not an IP address and port; write for example 127.0.0.1:{example}, with no scheme or host name")
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kms-local: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `--max-document-age`: whole seconds from 1 to one day.
fn parse_document_age(value: &str) -> Result<u64, String> {
    match value.trim().parse::<i128>() {
        Ok(seconds @ 1..=86_400) => Ok(seconds as u64),
        Ok(_) => Err(format!("`{value}` is out of range; write a whole number of seconds from 1 to 86400")),
        Err(_) => Err(format!("`{value}` is not a whole number of seconds; write one from 1 to 86400, such as 300")),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let credentials = match &args.credentials {
        Some(path) => Credentials::from_file(path)?,
        None => Credentials::development(),
    };
    let mut trust_roots_pem = Vec::new();
    for path in &args.trust_root {
        let pem = std::fs::read(path).with_context(|| format!("cannot read --trust-root {}", path.display()))?;
        trust_roots_pem.push(pem);
    }
    let config = Config {
        data_dir: if args.ephemeral { None } else { args.data_dir.clone() },
        credentials,
        trust_roots_pem,
        max_document_age: Duration::from_secs(args.max_document_age),
    };
    let kms = Kms::open(config).map_err(|error| match error {
        kms_local::OpenError::TrustRoot { index, message } => {
            let path = args.trust_root.get(index).map(|path| path.display().to_string()).unwrap_or_default();
            anyhow::anyhow!("--trust-root {path} is not a PEM certificate: {message}")
        }
        other => anyhow::Error::new(other),
    })?;

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")?;
    runtime.block_on(serve(args.listen, kms))
}

async fn serve(address: SocketAddr, kms: Kms) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|error| {
        let hint = recipient_common::transport::bind_hint(&error);
        anyhow::anyhow!("cannot listen on --listen {address}: {error}{hint}")
    })?;
    let bound = listener.local_addr().context("cannot read the bound address")?;
    let shutdown = shutdown_signal()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "listening on a non-loopback address; anyone who can reach it can use the configured credentials");
    }
    tracing::info!(%bound, store = kms.store().location(), region = %kms.credentials().region, "kms-local started");
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "kms-local listening on http://{bound}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }

    kms_local::serve(listener, Arc::new(kms), shutdown).await.context("server failed")?;
    tracing::info!("kms-local stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, so a signal that arrives before the future is polled still counts.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
    })
}
