//! `enclave-agent`: KMS Recipient operations from inside a Nitro Enclave.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enclave_agent::cli::operations::{
    self, DecryptArgs, DeriveSharedSecretArgs, GenerateDataKeyArgs, GenerateDataKeyPairArgs, GenerateRandomArgs,
};
use enclave_agent::cli::{AttestArgs, MockCaArgs, VerifyAttestationArgs};
use enclave_agent::client::ClientError;
use enclave_agent::input::InputError;
use enclave_agent::nsm::NsmError;
use enclave_agent::parent::ParentError;
use recipient_common::protocol::ErrorFrame;

/// Exit code: KMS, the parent or a verifier refused the request.
const EXIT_REFUSED: u8 = 1;
/// Exit code: invalid usage, input or local setup.
const EXIT_USAGE: u8 = 2;
/// Exit code: transport failure or timeout between enclave, parent and KMS.
const EXIT_TRANSPORT: u8 = 3;

/// KMS Recipient operations from inside a Nitro Enclave.
///
/// Each KMS request attests a fresh RSA key with the NSM, goes to KMS
/// through parent-proxy with that attestation document as Recipient, and the
/// result is opened inside the enclave.
///
/// Exit codes: 0 success; 1 refused (a KMS error such as
/// AccessDeniedException, a parent allowlist refusal, or a document that
/// fails verification); 2 invalid usage or input (KMS ValidationException
/// included) or local setup (no NSM device, a missing or unsafe mock CA
/// store, an invalid PCR file or image); 3 transport failure or timeout
/// anywhere on the path (enclave to parent, or parent to KMS).
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
    /// Decrypt a KMS ciphertext.
    Decrypt(DecryptArgs),
    /// Generate a data key (plaintext for the enclave, ciphertext for storage).
    GenerateDataKey(GenerateDataKeyArgs),
    /// Generate a data key pair (private key for the enclave).
    GenerateDataKeyPair(GenerateDataKeyPairArgs),
    /// Get random bytes from KMS.
    GenerateRandom(GenerateRandomArgs),
    /// Write an attestation document from the NSM.
    Attest(AttestArgs),
    /// Verify an attestation document and print its summary.
    VerifyAttestation(VerifyAttestationArgs),
    /// Manage the mock NSM's certificate authority.
    MockCa {
        #[command(subcommand)]
        command: MockCaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MockCaCommand {
    /// Create the mock CA (a root and three intermediates; leaves are made per document) in a directory.
    Init(MockCaArgs),
}

/// Maps an error to the documented exit codes by the first typed cause.
fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<InputError>().is_some() {
            return EXIT_USAGE;
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::InvalidInput { .. } | ClientError::PublicKey(_) => EXIT_USAGE,
                ClientError::Parent(parent) => parent_exit_code(parent),
                ClientError::Nsm(nsm) => nsm_exit_code(nsm),
                _ => EXIT_REFUSED,
            };
        }
        if let Some(parent) = cause.downcast_ref::<ParentError>() {
            return parent_exit_code(parent);
        }
        if let Some(nsm) = cause.downcast_ref::<NsmError>() {
            return nsm_exit_code(nsm);
        }
        if cause.downcast_ref::<eif_tool::EifError>().is_some() {
            return EXIT_USAGE;
        }
    }
    EXIT_REFUSED
}

fn parent_exit_code(error: &ParentError) -> u8 {
    match error {
        ParentError::Remote(ErrorFrame::Malformed { .. }) => EXIT_USAGE,
        ParentError::Remote(ErrorFrame::Kms { name, .. }) if name == "ValidationException" => EXIT_USAGE,
        ParentError::Remote(
            ErrorFrame::KmsUnreachable { .. } | ErrorFrame::KmsTimeout { .. } | ErrorFrame::Busy { .. },
        ) => EXIT_TRANSPORT,
        ParentError::Remote(_) => EXIT_REFUSED,
        _ => EXIT_TRANSPORT,
    }
}

/// Maps NSM errors: local setup problems are usage errors, an NSM that
/// rejects a request or fails to sign is a refusal.
fn nsm_exit_code(error: &NsmError) -> u8 {
    match error {
        NsmError::DeviceOpen { .. }
        | NsmError::Io { .. }
        | NsmError::UnsafePermissions { .. }
        | NsmError::SymbolicLink { .. }
        | NsmError::NotADirectory { .. }
        | NsmError::NotAFile { .. }
        | NsmError::AlreadyInitialised { .. }
        | NsmError::NotInitialised { .. }
        | NsmError::InvalidStoreFile { .. }
        | NsmError::PcrFile { .. }
        | NsmError::PcrFileRead { .. }
        | NsmError::InvalidArgument { .. } => EXIT_USAGE,
        _ => EXIT_REFUSED,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::DeriveSharedSecret(args) => operations::derive_shared_secret(&args).await,
        Command::Decrypt(args) => operations::decrypt(&args).await,
        Command::GenerateDataKey(args) => operations::generate_data_key(&args).await,
        Command::GenerateDataKeyPair(args) => operations::generate_data_key_pair(&args).await,
        Command::GenerateRandom(args) => operations::generate_random(&args).await,
        Command::Attest(args) => enclave_agent::cli::attest::run(&args),
        Command::VerifyAttestation(args) => enclave_agent::cli::verify_attestation::run(&args),
        Command::MockCa { command: MockCaCommand::Init(args) } => enclave_agent::cli::mock_ca::run(&args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("enclave-agent: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("enclave-agent: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}
