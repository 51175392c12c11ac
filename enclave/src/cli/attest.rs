//! `enclave-agent attest`: request an attestation document from the NSM and
//! write it to a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::nsm::{self, DeviceNsm, MAX_ATTESTATION_FIELD_LEN, MockNsm, Nsm};

/// Which NSM answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NsmKind {
    /// The Nitro Secure Module, /dev/nsm (inside a real enclave).
    Device,
    /// The mock NSM, signing with the CA store in --mock-dir.
    Mock,
}

/// NSM selection, shared by the subcommands that need an NSM.
#[derive(Debug, Clone, clap::Args)]
pub struct NsmArgs {
    /// NSM backend.
    #[arg(long, value_enum, default_value_t = NsmKind::Device)]
    pub nsm: NsmKind,
    /// Directory of the mock CA store (made by `enclave-agent mock-ca init`); required with --nsm mock.
    #[arg(long, value_name = "DIR", required_if_eq("nsm", "mock"))]
    pub mock_dir: Option<PathBuf>,
    /// JSON file of the mock's initial PCRs: {"0": "<96 hex digits>", ...}, {"PCR0": ...}, or
    /// nitro-cli's build-enclave output. Default: fixed non-zero PCR0-2.
    #[arg(long, value_name = "FILE")]
    pub mock_pcrs: Option<PathBuf>,
}

impl NsmArgs {
    /// Opens the selected NSM.
    pub fn open(&self) -> anyhow::Result<Arc<dyn Nsm>> {
        match self.nsm {
            NsmKind::Device => {
                let device = DeviceNsm::open().context("outside an enclave, use --nsm mock --mock-dir DIR")?;
                Ok(Arc::new(device))
            }
            NsmKind::Mock => {
                let Some(dir) = self.mock_dir.as_deref() else {
                    bail!("--nsm mock needs --mock-dir DIR");
                };
                let mock = MockNsm::open(dir, self.mock_pcrs.as_deref())
                    .with_context(|| format!("cannot start the mock NSM from {}", dir.display()))?;
                Ok(Arc::new(mock))
            }
        }
    }
}

/// Arguments of `attest`.
#[derive(Debug, Clone, clap::Args)]
pub struct AttestArgs {
    /// File whose bytes go into the document's public_key field (at most 1024 bytes). A PEM
    /// `PUBLIC KEY` is converted to DER.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// File whose bytes go into the user_data field (at most 1024 bytes).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// File whose bytes go into the nonce field (at most 1024 bytes).
    #[arg(long, value_name = "FILE")]
    pub nonce: Option<PathBuf>,
    /// Where to write the document (binary CBOR); `-` writes to standard output.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub nsm: NsmArgs,
}

/// Reads an attestation field from `path`, checking the NSM's size limit.
fn read_field(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {flag} file {}", path.display()))?.len();
    // A PEM public key is larger than its DER, so allow room for the conversion.
    if size > 4 * MAX_ATTESTATION_FIELD_LEN as u64 {
        bail!("{flag} file {} is {size} bytes; the NSM accepts at most {MAX_ATTESTATION_FIELD_LEN}", path.display());
    }
    let mut bytes = std::fs::read(path).with_context(|| format!("cannot read {flag} file {}", path.display()))?;
    if flag == "--public-key"
        && let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&bytes)
    {
        if pem.label != "PUBLIC KEY" {
            bail!("{flag} file {} is PEM `{}`; expected `PUBLIC KEY` or DER", path.display(), pem.label);
        }
        bytes = pem.contents;
    }
    if bytes.len() > MAX_ATTESTATION_FIELD_LEN {
        bail!(
            "{flag} file {} is {} bytes; the NSM accepts at most {MAX_ATTESTATION_FIELD_LEN}",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes)
}

/// Requests a document with the given fields and writes it to `--out`.
pub fn run(args: &AttestArgs) -> anyhow::Result<()> {
    let public_key = args.public_key.as_deref().map(|path| read_field("--public-key", path)).transpose()?;
    let user_data = args.user_data.as_deref().map(|path| read_field("--user-data", path)).transpose()?;
    let nonce = args.nonce.as_deref().map(|path| read_field("--nonce", path)).transpose()?;

    let nsm = args.nsm.open()?;
    let document = nsm::attest(nsm.as_ref(), public_key, user_data, nonce).context("attestation request failed")?;

    if args.out == Path::new("-") {
        std::io::stdout().write_all(&document).context("cannot write the document to standard output")?;
    } else {
        std::fs::write(&args.out, &document)
            .with_context(|| format!("cannot write the document to {}", args.out.display()))?;
        tracing::info!(path = %args.out.display(), len = document.len(), "wrote attestation document");
    }
    Ok(())
}
