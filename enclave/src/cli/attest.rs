//! `enclave-agent attest`: request an attestation document from the NSM and
//! write it to a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::input::InputError;
use crate::nsm::{self, DeviceNsm, MAX_ATTESTATION_FIELD_LEN, MockNsm, Nsm};

/// NSM backend that processes requests.
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
    #[arg(long, value_name = "FILE", conflicts_with = "mock_eif")]
    pub mock_pcrs: Option<PathBuf>,
    /// Enclave image file whose measurements (PCR0, 1, 2 and, when signed,
    /// 8) the mock reports, as a real enclave booted from it would.
    #[arg(long, value_name = "IMAGE.eif")]
    pub mock_eif: Option<PathBuf>,
    /// Seconds added to the mock documents' timestamp (negative: into the
    /// past), to test how a verifier handles NSM clock skew.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, allow_negative_numbers = true)]
    pub mock_timestamp_skew: i64,
}

impl NsmArgs {
    /// Opens the selected NSM.
    pub fn open(&self) -> anyhow::Result<Arc<dyn Nsm>> {
        match self.nsm {
            NsmKind::Device => {
                let mock_flag = [
                    (self.mock_dir.is_some(), "--mock-dir"),
                    (self.mock_pcrs.is_some(), "--mock-pcrs"),
                    (self.mock_eif.is_some(), "--mock-eif"),
                    (self.mock_timestamp_skew != 0, "--mock-timestamp-skew"),
                ]
                .into_iter()
                .find_map(|(given, flag)| given.then_some(flag));
                if let Some(flag) = mock_flag {
                    let message = "applies only to the mock NSM; add --nsm mock, or drop the flag".to_owned();
                    return Err(InputError::Invalid { flag, message }.into());
                }
                let device = DeviceNsm::open()?;
                Ok(Arc::new(device))
            }
            NsmKind::Mock => {
                let Some(dir) = self.mock_dir.as_deref() else {
                    bail!("--nsm mock needs --mock-dir DIR");
                };
                let mock = match &self.mock_eif {
                    Some(image) => {
                        let measurements = eif_tool::measure_eif(image)
                            .with_context(|| format!("cannot measure --mock-eif {}", image.display()))?;
                        let initial =
                            measurements.indexed().into_iter().map(|(index, pcr)| (u32::from(index), pcr)).collect();
                        MockNsm::open_with_pcrs(dir, &initial)
                    }
                    None => MockNsm::open(dir, self.mock_pcrs.as_deref()),
                }
                .with_context(|| format!("cannot start the mock NSM from {}", dir.display()))?;
                Ok(Arc::new(mock.with_timestamp_skew(time::Duration::seconds(self.mock_timestamp_skew))))
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
    /// Output file for the document (binary CBOR); `-` writes to standard output.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub nsm: NsmArgs,
}

/// Reads an attestation field from `path`, checking the NSM's size limit.
fn read_field(flag: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    let read_error = |error| InputError::Read { flag, path: path.display().to_string(), error };
    let too_large = |size| InputError::TooLarge {
        flag,
        path: path.display().to_string(),
        size,
        max: MAX_ATTESTATION_FIELD_LEN as u64,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    // A PEM public key is larger than its DER, so allow room for the conversion.
    if size > 4 * MAX_ATTESTATION_FIELD_LEN as u64 {
        return Err(too_large(size));
    }
    let mut bytes = std::fs::read(path).map_err(read_error)?;
    if flag == "--public-key"
        && let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&bytes)
    {
        if pem.label != "PUBLIC KEY" {
            let message = format!("file {} is PEM `{}`; expected `PUBLIC KEY` or DER", path.display(), pem.label);
            return Err(InputError::Invalid { flag, message });
        }
        bytes = pem.contents;
    }
    if bytes.len() > MAX_ATTESTATION_FIELD_LEN {
        return Err(too_large(bytes.len() as u64));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;
    use recipient_common::attestation::parse;

    use super::*;
    use crate::cli::mock_ca::{self, MockCaArgs};
    use crate::cli::verify_attestation::{self, VerifyAttestationArgs};

    #[derive(Debug, Parser)]
    struct Attest {
        #[command(flatten)]
        args: AttestArgs,
    }

    #[derive(Debug, Parser)]
    struct Verify {
        #[command(flatten)]
        args: VerifyAttestationArgs,
    }

    #[test]
    fn mock_requires_mock_dir() {
        assert!(Attest::try_parse_from(["attest", "--out", "doc", "--nsm", "mock"]).is_err());
        let parsed = Attest::try_parse_from(["attest", "--out", "doc"]).unwrap();
        assert_eq!(parsed.args.nsm.nsm, NsmKind::Device);
    }

    #[test]
    fn attest_then_verify_with_mock() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        mock_ca::run(&MockCaArgs { dir: ca.clone(), keep_existing: false }).unwrap();

        let key = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::as_der(&key.public_key()).unwrap();
        let der = spki.as_ref().to_vec();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
        );
        let key_path = dir.path().join("key.pem");
        std::fs::write(&key_path, pem).unwrap();
        let nonce_path = dir.path().join("nonce");
        std::fs::write(&nonce_path, [1, 2, 3]).unwrap();
        let out = dir.path().join("doc.cbor");
        let argv = [
            "attest",
            "--public-key",
            key_path.to_str().unwrap(),
            "--nonce",
            nonce_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--nsm",
            "mock",
            "--mock-dir",
            ca.to_str().unwrap(),
        ];
        run(&Attest::try_parse_from(argv).unwrap().args).unwrap();

        let document = parse(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(document.public_key, Some(der), "the PEM key is stored as DER");
        assert_eq!(document.nonce, Some(vec![1, 2, 3]));
        assert_eq!(document.user_data, None);

        let root = ca.join("root.pem");
        let argv = ["verify-attestation", out.to_str().unwrap(), "--root", root.to_str().unwrap()];
        verify_attestation::run(&Verify::try_parse_from(argv).unwrap().args).unwrap();
        let argv = ["verify-attestation", out.to_str().unwrap()];
        assert!(verify_attestation::run(&Verify::try_parse_from(argv).unwrap().args).is_err());
    }

    #[test]
    fn oversized_field_rejected_before_nsm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        std::fs::write(&path, vec![0u8; 1025]).unwrap();
        let err = read_field("--user-data", &path).unwrap_err();
        assert!(err.to_string().contains("is 1025 bytes, more than the 1024-byte maximum"), "{err}");
        std::fs::write(&path, vec![0u8; 1024]).unwrap();
        assert_eq!(read_field("--user-data", &path).unwrap().len(), 1024);
    }

    #[test]
    fn private_key_pem_rejected_as_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let err = read_field("--public-key", &path).unwrap_err();
        assert!(err.to_string().contains("expected `PUBLIC KEY`"), "{err}");
    }
}
