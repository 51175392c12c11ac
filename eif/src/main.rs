//! `eif-tool`: measure enclave image files, build them reproducibly, and
//! write and check KMS key policies bound to their PCRs.
//!
//! Exit status: 0 on success, 1 when `policy-lint` found warnings, 2 on any
//! error (unreadable or invalid input, failed write).

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use eif_tool::builder::{BuildError, BuildOptions, DEFAULT_CPUS, DEFAULT_MEMORY_BYTES, build_eif};
use eif_tool::describe::Description;
use eif_tool::lint::lint_policy_text;
use eif_tool::policy::{PcrCondition, PolicyOptions, RecipientOperation, key_policy};
use eif_tool::ramdisk::{source_date_epoch, write_ramdisk};
use eif_tool::{Architecture, OutputFile, SigningKey, read_eif};
use zeroize::Zeroizing;

/// Exit status when `policy-lint` reports findings.
const EXIT_FINDINGS: u8 = 1;
/// Exit status for errors.
const EXIT_ERROR: u8 = 2;

/// Measure, build and write key policies for AWS Nitro Enclave image files (EIF).
#[derive(Debug, Parser)]
#[command(name = "eif-tool", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate an EIF and print its layout and PCRs.
    ///
    /// Checks every offset and size, the section order and the CRC, then
    /// prints the fields of `nitro-cli describe-eif` (EifVersion,
    /// Measurements with HashAlgorithm and PCR0/1/2/8, IsSigned, CheckCRC,
    /// SignatureCheck, metadata) plus flags, architecture and sections.
    Describe {
        /// The image file.
        image: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        output: OutputFormat,
    },
    /// Pack a directory into a reproducible newc cpio ramdisk.
    ///
    /// Entries are sorted, owners are 0 and every modification time is
    /// SOURCE_DATE_EPOCH (0 when unset), so the same tree gives the same bytes.
    Ramdisk {
        /// The directory whose contents become the ramdisk's root.
        directory: PathBuf,
        /// The archive to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build an EIF from a kernel, a command line and ramdisks.
    ///
    /// The first ramdisk is measured into PCR1 with the kernel and command
    /// line, the others into PCR2. With a signing certificate and key the
    /// image gets a signature section over PCR0 and a PCR8. Prints the
    /// measurements as `nitro-cli build-enclave` does.
    Build {
        /// The kernel image (bzImage on x86_64, Image on aarch64).
        #[arg(long)]
        kernel: PathBuf,
        /// The kernel command line.
        #[arg(long)]
        cmdline: String,
        /// Ramdisks in boot order; repeat the flag or list several files.
        #[arg(long, required = true, num_args = 1..)]
        ramdisk: Vec<PathBuf>,
        /// PEM certificate of an ECDSA P-384 signing key.
        #[arg(long, requires = "private_key")]
        signing_certificate: Option<PathBuf>,
        /// PEM private key (SEC 1 or PKCS #8) matching the certificate.
        #[arg(long, requires = "signing_certificate")]
        private_key: Option<PathBuf>,
        /// CPU architecture recorded in the header flags.
        #[arg(long, value_enum, default_value_t = ArchitectureArg::X86_64)]
        arch: ArchitectureArg,
        /// Default enclave memory in MiB, from 1 to 17592186044415.
        #[arg(long, value_name = "MIB", value_parser = parse_memory_mib, default_value_t = DEFAULT_MEMORY_BYTES >> 20)]
        memory: u64,
        /// Default number of vCPUs, at least 1.
        #[arg(long, value_name = "COUNT", value_parser = parse_cpus, default_value_t = DEFAULT_CPUS)]
        cpus: u64,
        /// ImageName in the metadata section [default: the output file's stem].
        #[arg(long)]
        image_name: Option<String>,
        /// ImageVersion in the metadata section.
        #[arg(long, default_value = "1.0")]
        image_version: String,
        /// The image to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print a KMS key policy that allows the Recipient operations only to
    /// enclaves running the image.
    ///
    /// The policy has an administrator statement for the account root
    /// (key management actions only) and a statement allowing the Recipient
    /// operations to PRINCIPAL under a kms:RecipientAttestation:ImageSha384
    /// condition equal to the image's PCR0, plus one
    /// kms:RecipientAttestation:PCR<N> condition per --pcr.
    Policy {
        /// The image whose PCRs the policy requires.
        #[arg(long)]
        eif: PathBuf,
        /// IAM principal ARN that calls KMS, usually the parent instance's role.
        #[arg(long)]
        principal: String,
        /// Principal ARN of the administrator statement [default: the principal's account root].
        #[arg(long)]
        administrator: Option<String>,
        /// Recipient operations to allow, comma-separated
        /// [default: Decrypt,DeriveSharedSecret,GenerateDataKey,GenerateDataKeyPair].
        #[arg(long, value_delimiter = ',')]
        operations: Vec<RecipientOperation>,
        /// Add a PCR condition: N=HEX (96 hex digits) or N alone to take PCR N (1, 2 or 8) from the image.
        #[arg(long = "pcr", value_name = "N[=HEX]")]
        pcrs: Vec<PcrCondition>,
    },
    /// Check a key policy for attestation mistakes.
    ///
    /// Warns about kms:RecipientAttestation condition keys that do not
    /// exist, PCR values that are not 96 hex digits, operators that a
    /// request without attestation satisfies, statements that allow
    /// Recipient operations without an attestation condition, and
    /// kms:CreateGrant. Exit status: 0 no findings, 1 findings, 2 error.
    PolicyLint {
        /// The policy JSON file.
        policy: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// Largest `--memory` in MiB whose size in bytes fits the header's 64-bit
/// default_mem field.
const MAX_MEMORY_MIB: u64 = u64::MAX >> 20;

/// Parses `--memory`. clap adds the value and the option name to the error.
fn parse_memory_mib(text: &str) -> Result<u64, String> {
    // NOTE: the lower bound of 1 MiB only rules out 0. An enclave needs more
    // to boot, but neither the EIF format nor this crate documents the minimum.
    let range = 1..=MAX_MEMORY_MIB;
    match text.parse::<u64>() {
        Ok(mib) if range.contains(&mib) => Ok(mib),
        _ => Err(format!("pass a whole number of MiB from 1 to {MAX_MEMORY_MIB}")),
    }
}

/// Parses `--cpus`. clap adds the value and the option name to the error.
fn parse_cpus(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(cpus) if cpus >= 1 => Ok(cpus),
        _ => Err(format!("pass a whole number of vCPUs from 1 to {}", u64::MAX)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ArchitectureArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eif-tool: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Describe { image, output } => describe(&image, output),
        Command::Ramdisk { directory, output } => ramdisk(&directory, &output),
        Command::Build {
            kernel,
            cmdline,
            ramdisk,
            signing_certificate,
            private_key,
            arch,
            memory,
            cpus,
            image_name,
            image_version,
            output,
        } => {
            check_build_inputs(&kernel, &ramdisk)?;
            let signing_key = match (signing_certificate, private_key) {
                (Some(certificate), Some(key)) => Some(load_signing_key(&certificate, &key)?),
                _ => None,
            };
            let default_memory = memory
                .checked_mul(1 << 20)
                .with_context(|| format!("--memory {memory} MiB is too large; pass at most {MAX_MEMORY_MIB}"))?;
            let image_name = match image_name {
                Some(name) => name,
                None => {
                    output.file_stem().map_or_else(|| "enclave".to_owned(), |stem| stem.to_string_lossy().into_owned())
                }
            };
            let options = BuildOptions {
                kernel,
                cmdline,
                ramdisks: ramdisk,
                signing_key,
                architecture: match arch {
                    ArchitectureArg::X86_64 => Architecture::X86_64,
                    ArchitectureArg::Aarch64 => Architecture::Aarch64,
                },
                default_memory,
                default_cpus: cpus,
                image_name,
                image_version,
                build_time: i64::from(source_date_epoch()?),
            };
            build(&options, &output)
        }
        Command::Policy { eif, principal, administrator, operations, pcrs } => {
            let operations =
                if operations.is_empty() { RecipientOperation::KEY_OPERATIONS.to_vec() } else { operations };
            policy(&eif, PolicyOptions { principal, administrator, operations, pcrs })
        }
        Command::PolicyLint { policy, output } => policy_lint(&policy, output),
    }
}

/// Reads and measures the image at `path`. A file that cannot be read is
/// reported as such; only a readable file that fails the checks is an
/// invalid EIF.
fn open_eif(path: &Path) -> Result<eif_tool::EifImage> {
    match read_eif(path) {
        Ok(image) => Ok(image),
        Err(error @ eif_tool::EifError::Io { .. }) => Err(error.into()),
        Err(error) => Err(anyhow::Error::new(error).context(format!("invalid EIF {}", path.display()))),
    }
}

fn describe(image: &Path, output: OutputFormat) -> Result<ExitCode> {
    let image = open_eif(image)?;
    let description = Description::new(&image);
    let mut stdout = io::stdout().lock();
    match output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &description)?;
            writeln!(stdout)?;
        }
        OutputFormat::Text => stdout.write_all(description.to_text().as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn ramdisk(directory: &Path, output: &Path) -> Result<ExitCode> {
    input_metadata("ramdisk directory", directory)?;
    let mtime = source_date_epoch()?;
    let mut file = OutputFile::create(output)?;
    let mut writer = BufWriter::new(file.file());
    let summary = write_ramdisk(directory, mtime, &mut writer)?;
    writer.into_inner().map_err(|error| error.into_error()).context("cannot write the ramdisk")?;
    file.persist()?;
    let entries = if summary.entries == 1 { "entry" } else { "entries" };
    eprintln!("eif-tool: wrote {} ({} {entries}, {} bytes)", output.display(), summary.entries, summary.bytes);
    Ok(ExitCode::SUCCESS)
}

/// Returns the metadata of an input path given as `option`, with an error
/// that names the option when the path does not exist.
fn input_metadata(option: &str, path: &Path) -> Result<fs::Metadata> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(metadata),
        Err(error) if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            bail!("{option} {} does not exist", path.display())
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {option} {}", path.display())),
    }
}

/// Checks the kernel and ramdisk paths before the output file is created.
/// The kernel must be a regular file. A ramdisk must not be a directory, and
/// other file types are left to the builder.
fn check_build_inputs(kernel: &Path, ramdisks: &[PathBuf]) -> Result<()> {
    if !input_metadata("--kernel", kernel)?.is_file() {
        bail!("--kernel {} is not a file", kernel.display());
    }
    for ramdisk in ramdisks {
        if input_metadata("--ramdisk", ramdisk)?.is_dir() {
            bail!(
                "--ramdisk {0} is not a file; pack the directory first with `eif-tool ramdisk {0} -o FILE.cpio`",
                ramdisk.display()
            );
        }
    }
    Ok(())
}

fn load_signing_key(certificate: &Path, key: &Path) -> Result<SigningKey> {
    // Pipes such as `<(command)` are accepted, so only directories are rejected.
    for (option, path) in [("--signing-certificate", certificate), ("--private-key", key)] {
        if input_metadata(option, path)?.is_dir() {
            bail!("{option} {} is not a file", path.display());
        }
    }
    let certificate_pem = fs::read(certificate)
        .with_context(|| format!("cannot read --signing-certificate {}", certificate.display()))?;
    let key_pem =
        Zeroizing::new(fs::read(key).with_context(|| format!("cannot read --private-key {}", key.display()))?);
    SigningKey::from_pem(&certificate_pem, &key_pem)
        .with_context(|| format!("cannot sign with {} and {}", certificate.display(), key.display()))
}

fn build(options: &BuildOptions, output: &Path) -> Result<ExitCode> {
    // Output errors already start with "cannot write OUTPUT".
    let measurements = match build_eif(options, output) {
        Ok(measurements) => measurements,
        Err(error @ BuildError::Destination(_)) => return Err(error.into()),
        Err(error) => return Err(anyhow::Error::new(error).context(format!("cannot build {}", output.display()))),
    };
    let report = serde_json::json!({ "Measurements": measurements.to_nitro_cli_map() });
    let mut stdout = io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &report)?;
    writeln!(stdout)?;
    Ok(ExitCode::SUCCESS)
}

fn policy(eif: &Path, options: PolicyOptions) -> Result<ExitCode> {
    let image = open_eif(eif)?;
    let policy = key_policy(&image.measurements, &options)?;
    let mut stdout = io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &policy)?;
    writeln!(stdout)?;
    Ok(ExitCode::SUCCESS)
}

fn policy_lint(path: &Path, output: OutputFormat) -> Result<ExitCode> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let findings = lint_policy_text(&text).with_context(|| format!("cannot lint {}", path.display()))?;
    let mut stdout = io::stdout().lock();
    match output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &findings)?;
            writeln!(stdout)?;
        }
        OutputFormat::Text => {
            for finding in &findings {
                let sid = finding.sid.as_ref().map(|sid| format!(" (Sid {sid:?})")).unwrap_or_default();
                writeln!(
                    stdout,
                    "{}: statement {}{sid}: warning[{}]: {}",
                    path.display(),
                    finding.statement,
                    finding.kind.code(),
                    finding.message
                )?;
            }
            let plural = if findings.len() == 1 { "" } else { "s" };
            writeln!(stdout, "{}: {} warning{plural}", path.display(), findings.len())?;
        }
    }
    if findings.is_empty() { Ok(ExitCode::SUCCESS) } else { Ok(ExitCode::from(EXIT_FINDINGS)) }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn memory_help_states_accepted_range() {
        let mut command = Cli::command();
        let help = command.find_subcommand_mut("build").unwrap().render_long_help().to_string();

        assert!(help.contains(&format!("from 1 to {MAX_MEMORY_MIB}")), "{help}");
    }

    #[test]
    fn memory_and_cpus_parsers_take_bounds() {
        assert_eq!(parse_memory_mib("1"), Ok(1));
        assert_eq!(parse_memory_mib(&MAX_MEMORY_MIB.to_string()), Ok(MAX_MEMORY_MIB));
        assert!(parse_memory_mib("0").is_err());
        assert!(parse_memory_mib(&(MAX_MEMORY_MIB + 1).to_string()).is_err());
        assert!(parse_memory_mib("1.5").is_err());
        assert_eq!(parse_cpus("1"), Ok(1));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-2").is_err());
    }
}
