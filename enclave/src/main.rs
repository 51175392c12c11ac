//! `enclave-agent`: KMS Recipient operations from inside a Nitro Enclave.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, Subcommand};
use enclave_agent::client::{ClientError, DeriveSharedSecretParams, RecipientClient};
use enclave_agent::input::{InputError, read_blob_argument};
use enclave_agent::key::RsaKeySize;
use enclave_agent::nsm::Nsm;
use enclave_agent::parent::{ParentClient, ParentError};
use recipient_common::protocol::ErrorFrame;
use recipient_common::transport::{Address, DEFAULT_PARENT_ADDRESS};

/// Exit code: success.
const EXIT_OK: u8 = 0;
/// Exit code: KMS or the parent refused the request.
const EXIT_REFUSED: u8 = 1;
/// Exit code: invalid usage or input.
const EXIT_USAGE: u8 = 2;
/// Exit code: transport failure or timeout between enclave, parent and KMS.
const EXIT_TRANSPORT: u8 = 3;

/// KMS Recipient operations from inside a Nitro Enclave.
///
/// Each request attests a fresh RSA key with the NSM, goes to KMS through
/// parent-proxy with that attestation document as Recipient, and the result
/// is opened inside the enclave.
///
/// Exit codes: 0 success; 1 refused (a KMS error such as
/// AccessDeniedException, or a parent allowlist refusal); 2 invalid usage or
/// input; 3 transport failure or timeout (enclave to parent, or parent to KMS).
#[derive(Debug, Parser)]
#[command(name = "enclave-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Derive the ECDH shared secret of a KMS key-agreement key and a peer public key.
    DeriveSharedSecret(DeriveSharedSecretArgs),
    /// Manage the mock NSM's certificate authority.
    MockCa {
        #[command(subcommand)]
        command: MockCaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MockCaCommand {
    /// Create the mock CA chain (root, intermediate, leaf) in a directory.
    Init(enclave_agent::cli::mock_ca::MockCaArgs),
}

/// Where attestation documents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NsmKind {
    /// The Nitro Secure Module, /dev/nsm (inside a real enclave).
    Device,
    /// The mock NSM, signing with the CA in --mock-dir.
    Mock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct NsmArgs {
    /// NSM backend.
    #[arg(long, value_enum, default_value_t = NsmKind::Device)]
    nsm: NsmKind,
    /// Directory of the mock CA (made by `enclave-agent mock-ca init`); needed with --nsm mock.
    #[arg(long, required_if_eq("nsm", "mock"))]
    mock_dir: Option<PathBuf>,
    /// JSON file of mock PCR values, {"0": "<96 hex digits>", ...}.
    #[arg(long)]
    mock_pcrs: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ConnectionArgs {
    /// Address of parent-proxy: vsock://CID:PORT, tcp://HOST:PORT or unix:///PATH.
    #[arg(long, default_value = DEFAULT_PARENT_ADDRESS)]
    parent: Address,
    /// Seconds to wait for the parent's answer.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Size in bits of the ephemeral RSA key.
    #[arg(long, value_enum, default_value_t = RsaKeySize::Rsa2048)]
    rsa_key_size: RsaKeySize,
}

#[derive(Debug, clap::Args)]
struct DeriveSharedSecretArgs {
    /// Key id, key ARN, alias name (alias/...) or alias ARN of the KMS key-agreement key.
    #[arg(long)]
    key_id: String,
    /// The peer's public key: fileb://PATH (DER or PEM), file://PATH, or base64 of the DER.
    #[arg(long)]
    public_key: String,
    /// Grant tokens (repeatable).
    #[arg(long = "grant-tokens", num_args = 1..)]
    grant_tokens: Vec<String>,
    /// Ask KMS to check permissions without deriving.
    #[arg(long)]
    dry_run: bool,
    /// text: the secret in base64; json: the KMS response fields.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[command(flatten)]
    nsm: NsmArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// An error with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        Failure { code: exit_code(&error), error }
    }
}

fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<InputError>().is_some() {
            return EXIT_USAGE;
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::InvalidInput { .. } | ClientError::PublicKey(_) => EXIT_USAGE,
                ClientError::Parent(parent) => parent_exit_code(parent),
                _ => EXIT_REFUSED,
            };
        }
        if let Some(parent) = cause.downcast_ref::<ParentError>() {
            return parent_exit_code(parent);
        }
    }
    EXIT_REFUSED
}

fn parent_exit_code(error: &ParentError) -> u8 {
    match error {
        ParentError::Remote(ErrorFrame::Refused { .. } | ErrorFrame::Kms { .. }) => EXIT_REFUSED,
        ParentError::Remote(ErrorFrame::Malformed { .. }) => EXIT_USAGE,
        ParentError::Remote(
            ErrorFrame::KmsUnreachable { .. } | ErrorFrame::KmsTimeout { .. } | ErrorFrame::Busy { .. },
        ) => EXIT_TRANSPORT,
        ParentError::Remote(_) => EXIT_REFUSED,
        _ => EXIT_TRANSPORT,
    }
}

fn open_nsm(args: &NsmArgs) -> anyhow::Result<Arc<dyn Nsm>> {
    match args.nsm {
        NsmKind::Device => {
            let device = enclave_agent::nsm::DeviceNsm::open().context("cannot open the NSM device /dev/nsm; outside an enclave use --nsm mock --mock-dir DIR")?;
            Ok(Arc::new(device))
        }
        NsmKind::Mock => {
            let dir = args.mock_dir.as_deref().context("--nsm mock needs --mock-dir DIR")?;
            let mock = enclave_agent::nsm::MockNsm::open(dir, args.mock_pcrs.as_deref())
                .with_context(|| format!("cannot open the mock NSM in {}", dir.display()))?;
            Ok(Arc::new(mock))
        }
    }
}

fn client(nsm: &NsmArgs, connection: &ConnectionArgs) -> Result<RecipientClient, Failure> {
    let timeout = Duration::try_from_secs_f64(connection.timeout).map_err(|_| Failure {
        code: EXIT_USAGE,
        error: anyhow::anyhow!("--timeout {}: expected a positive number of seconds", connection.timeout),
    })?;
    let nsm = open_nsm(nsm).map_err(|error| Failure { code: EXIT_REFUSED, error })?;
    let parent = ParentClient::new(connection.parent.clone(), timeout);
    Ok(RecipientClient::new(nsm, parent, connection.rsa_key_size))
}

async fn derive_shared_secret(args: DeriveSharedSecretArgs) -> Result<(), Failure> {
    let public_key = read_blob_argument("--public-key", &args.public_key)?;
    let client = client(&args.nsm, &args.connection)?;
    let params = DeriveSharedSecretParams {
        key_id: args.key_id,
        public_key,
        grant_tokens: args.grant_tokens,
        dry_run: args.dry_run,
    };
    let derived = client.derive_shared_secret(params).await.context("DeriveSharedSecret failed")?;

    let secret = zeroize::Zeroizing::new(STANDARD.encode(derived.shared_secret.as_slice()));
    let text = match args.output {
        OutputFormat::Text => zeroize::Zeroizing::new(format!("{}\n", secret.as_str())),
        OutputFormat::Json => {
            let value = serde_json::json!({
                "KeyId": derived.key_id,
                "SharedSecret": secret.as_str(),
                "KeyAgreementAlgorithm": derived.key_agreement_algorithm,
                "KeyOrigin": derived.key_origin,
            });
            zeroize::Zeroizing::new(format!("{value:#}\n"))
        }
    };
    write_stdout(text.as_bytes())?;
    Ok(())
}

/// Writes to stdout; a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::DeriveSharedSecret(args) => derive_shared_secret(args).await,
        Command::MockCa { command: MockCaCommand::Init(args) } => {
            enclave_agent::cli::mock_ca::run(&args).map_err(|error| Failure { code: EXIT_USAGE, error })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("enclave-agent: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure { code, error }) => {
            eprintln!("enclave-agent: {error:#}");
            ExitCode::from(code)
        }
    }
}
