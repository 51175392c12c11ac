//! `enclave-agent verify-attestation FILE`: verify an attestation document and
//! print a summary of it.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use recipient_common::attestation::{
    AttestationError, ParsedDocument, TimeMode, VerifiedDocument, Verifier, VerifyOptions,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::operations::write_stdout;
use crate::input::InputError;

/// The maximum size of an attestation document, as binary CBOR or after
/// base64 decoding: the length limit of `RecipientInfo.AttestationDocument`
/// in the KMS API reference (262144 bytes).
const MAX_DOCUMENT_LEN: usize = 256 * 1024;

/// The maximum number of bytes read from the input. Base64 text of a
/// maximum-size document is 349528 characters, so twice the document limit
/// leaves room for a one-byte line break after every two characters.
const MAX_INPUT_LEN: u64 = 2 * MAX_DOCUMENT_LEN as u64;

/// Summary output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The instant `--at` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyAt {
    /// The document's own timestamp.
    Document,
    /// A given instant.
    Instant(SystemTime),
}

impl FromStr for VerifyAt {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("document") {
            return Ok(VerifyAt::Document);
        }
        let instant = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            format!("`{text}` is neither `document` nor an RFC 3339 time such as 2024-09-07T14:40:00Z: {e}")
        })?;
        Ok(VerifyAt::Instant(instant.into()))
    }
}

/// Arguments of `verify-attestation`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyAttestationArgs {
    /// The document: binary CBOR, or base64 text of it; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// PEM file of a root certificate to trust besides the AWS Nitro Enclaves root G1 (repeatable).
    #[arg(long = "root", value_name = "PEM")]
    pub roots: Vec<PathBuf>,
    /// Do not trust the built-in AWS Nitro Enclaves root G1.
    #[arg(long)]
    pub no_aws_root: bool,
    /// Check certificates at this RFC 3339 instant, or at the document's own timestamp with
    /// `document` (for archived documents). Default: now, with --max-age.
    #[arg(long, value_name = "RFC3339|document", conflicts_with = "max_age")]
    pub at: Option<VerifyAt>,
    /// Maximum document age in seconds when verifying at the current time.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub max_age: u64,
    /// Accept documents from debug-mode enclaves (PCR0, PCR1 and PCR2 all zero).
    #[arg(long)]
    pub allow_debug: bool,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Returns how messages name the document input: `standard input` for `-`, otherwise the path.
fn input_name(path: &Path) -> String {
    if path == Path::new("-") { "standard input".to_owned() } else { path.display().to_string() }
}

/// Reads the document at `path` (`-` is standard input) and decodes base64
/// text, keeping binary CBOR as is. Rejects empty input and documents larger
/// than 256 KiB.
pub fn read_document(path: &Path) -> Result<Vec<u8>, InputError> {
    let flag = "document";
    let name = input_name(path);
    let mut bytes = Vec::new();
    let read_error = |error| InputError::Read { flag, path: name.clone(), error };
    if path == Path::new("-") {
        std::io::stdin().take(MAX_INPUT_LEN + 1).read_to_end(&mut bytes).map_err(read_error)?;
    } else {
        let file = std::fs::File::open(path).map_err(read_error)?;
        file.take(MAX_INPUT_LEN + 1).read_to_end(&mut bytes).map_err(read_error)?;
    }
    let invalid = |message: String| InputError::Invalid { flag, message };
    let limit = format!("the {MAX_DOCUMENT_LEN}-byte (256 KiB) maximum size of an attestation document");

    if bytes.len() as u64 > MAX_INPUT_LEN {
        return Err(invalid(format!("{name} is larger than {limit}")));
    }
    if bytes.is_empty() {
        return Err(invalid(format!(
            "{name} is empty; expected an attestation document as binary CBOR or base64 text"
        )));
    }

    let input_len = bytes.len();
    let document = decode_document(bytes);
    if document.is_empty() {
        let message =
            format!("{name} contains only whitespace; expected an attestation document as binary CBOR or base64 text");
        return Err(invalid(message));
    }
    if document.len() > MAX_DOCUMENT_LEN {
        // Decoding base64 always shortens non-empty text, so an unchanged
        // length means the bytes were kept as they are.
        let size = if document.len() == input_len {
            format!("is {} bytes", document.len())
        } else {
            format!("decodes from base64 to {} bytes", document.len())
        };
        return Err(invalid(format!("{name} {size}, more than {limit}")));
    }
    Ok(document)
}

/// Returns the CBOR of a document given as binary CBOR or as base64 text.
///
/// A COSE_Sign1 starts with 0x84 (untagged) or 0xD2 (tag 18), neither of
/// which is a base64 character, so binary input is never mistaken for text.
pub fn decode_document(bytes: Vec<u8>) -> Vec<u8> {
    if matches!(bytes.first(), Some(0x84 | 0xd2)) {
        return bytes;
    }
    let text: Vec<u8> = bytes.iter().copied().filter(|byte| !byte.is_ascii_whitespace()).collect();
    match STANDARD.decode(&text) {
        Ok(decoded) => decoded,
        // Not base64 either: let the parser report what is wrong with the bytes.
        Err(_) => bytes,
    }
}

fn verifier(args: &VerifyAttestationArgs) -> anyhow::Result<Verifier> {
    let mut verifier = if args.no_aws_root { Verifier::new() } else { Verifier::with_aws_root() };
    for path in &args.roots {
        let pem = std::fs::read(path).map_err(|error| InputError::Read {
            flag: "--root",
            path: path.display().to_string(),
            error,
        })?;
        verifier.add_root_pem(&pem).map_err(|error| InputError::Invalid {
            flag: "--root",
            message: format!("{} is not a usable root certificate: {error}", path.display()),
        })?;
    }
    if args.no_aws_root && args.roots.is_empty() {
        let message = "leaves no trusted root; add one with --root PEM".to_owned();
        return Err(InputError::Invalid { flag: "--no-aws-root", message }.into());
    }
    Ok(verifier)
}

fn options(args: &VerifyAttestationArgs) -> VerifyOptions {
    let time = match args.at {
        Some(VerifyAt::Document) => TimeMode::DocumentTime,
        Some(VerifyAt::Instant(instant)) => TimeMode::At(instant),
        None => TimeMode::Live { max_age: Duration::from_secs(args.max_age) },
    };
    VerifyOptions { time, allow_debug: args.allow_debug }
}

fn rfc3339(instant: OffsetDateTime) -> String {
    instant.format(&Rfc3339).unwrap_or_else(|_| instant.unix_timestamp().to_string())
}

fn timestamp_rfc3339(millis: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_or_else(|_| format!("{millis} ms"), rfc3339)
}

fn field_size(field: &Option<Vec<u8>>) -> String {
    field.as_ref().map_or_else(|| "null".to_owned(), |bytes| format!("{} bytes", bytes.len()))
}

/// Formats the summary of a verified document as text.
pub fn summary_text(verified: &VerifiedDocument) -> String {
    let document = verified.document();
    let mut lines = vec![
        "attestation document is valid".to_owned(),
        format!("module_id:   {}", document.module_id),
        format!("timestamp:   {} ({} ms)", timestamp_rfc3339(document.timestamp), document.timestamp),
        format!("verified at: {}", rfc3339(verified.verified_at())),
        format!("debug mode:  {}", if verified.is_debug_mode() { "yes (PCR0-2 are zero)" } else { "no" }),
        format!("public_key:  {}", field_size(&document.public_key)),
        format!("user_data:   {}", field_size(&document.user_data)),
        format!("nonce:       {}", field_size(&document.nonce)),
        "pcrs:".to_owned(),
    ];
    lines.extend(document.pcrs.iter().map(|(index, value)| format!("  PCR{index:<2} {}", hex::encode(value))));
    lines.push(format!("chain (root first, root SHA-256 {}):", verified.root_sha256()));
    lines.extend(verified.chain_subjects().iter().map(|subject| format!("  {subject}")));
    lines.join("\n")
}

/// Formats the summary of a verified document as JSON.
pub fn summary_json(verified: &VerifiedDocument) -> serde_json::Value {
    let document = verified.document();
    let size = |field: &Option<Vec<u8>>| field.as_ref().map(Vec::len);
    let pcrs: serde_json::Map<String, serde_json::Value> =
        document.pcrs.iter().map(|(index, value)| (index.to_string(), hex::encode(value).into())).collect();
    serde_json::json!({
        "valid": true,
        "module_id": document.module_id,
        "timestamp": document.timestamp,
        "timestamp_rfc3339": timestamp_rfc3339(document.timestamp),
        "verified_at": rfc3339(verified.verified_at()),
        "debug_mode": verified.is_debug_mode(),
        "digest": document.digest,
        "pcrs": pcrs,
        "public_key_len": size(&document.public_key),
        "user_data_len": size(&document.user_data),
        "nonce_len": size(&document.nonce),
        "root_sha256": verified.root_sha256(),
        "chain": verified.chain_subjects(),
    })
}

/// Verifies the document and prints its summary; a failed verification is
/// returned as an error whose source is the named
/// [`recipient_common::attestation::AttestationError`].
pub fn run(args: &VerifyAttestationArgs) -> anyhow::Result<()> {
    let bytes = read_document(&args.file)?;
    let verifier = verifier(args)?;
    let name = input_name(&args.file);

    // A document that does not parse is invalid input (exit 2); one that
    // parses but fails verification is refused (exit 1).
    let parsed = ParsedDocument::parse(&bytes)
        .map_err(|error| InputError::Invalid { flag: "document", message: format!("cannot parse {name}: {error}") })?;
    let verified = verifier.verify_parsed(parsed, &options(args)).map_err(|error| {
        // The library's message names no flag, so the flag that changes the
        // outcome is named here.
        let hint = match error {
            AttestationError::DebugMode => " (--allow-debug accepts debug-mode documents)",
            AttestationError::CertificateExpired { .. } | AttestationError::DocumentTooOld { .. } => {
                " (--at document verifies an archived document at its own timestamp)"
            }
            _ => "",
        };
        anyhow::Error::new(error).context(format!("attestation document {name} is not valid{hint}"))
    })?;

    let summary = match args.output {
        OutputFormat::Text => summary_text(&verified),
        OutputFormat::Json => summary_json(&verified).to_string(),
    };
    write_stdout(format!("{summary}\n").as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use clap::Parser;
    use recipient_common::attestation::AttestationError;

    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: VerifyAttestationArgs,
    }

    fn args(argv: &[&str]) -> VerifyAttestationArgs {
        Command::try_parse_from([&["verify-attestation"], argv].concat()).unwrap().args
    }

    fn vector(name: &str) -> String {
        format!("{VECTORS}/{name}")
    }

    fn attestation_error(err: &anyhow::Error) -> &AttestationError {
        err.chain().find_map(|cause| cause.downcast_ref::<AttestationError>()).unwrap()
    }

    #[test]
    fn at_parses_document_and_rfc3339() {
        assert_eq!("document".parse::<VerifyAt>().unwrap(), VerifyAt::Document);
        let instant = "2024-09-07T14:40:00Z".parse::<VerifyAt>().unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_725_720_000);
        assert_eq!(instant, VerifyAt::Instant(expected));
        let err = "yesterday".parse::<VerifyAt>().unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn at_conflicts_with_max_age() {
        let result = Command::try_parse_from(["verify-attestation", "doc", "--at", "document", "--max-age", "5"]);
        assert!(result.is_err());
        let parsed = args(&["doc", "--root", "a.pem", "--root", "b.pem", "--output", "json"]);
        assert_eq!(parsed.roots.len(), 2);
        assert_eq!(parsed.output, OutputFormat::Json);
        assert_eq!(parsed.max_age, 300);
    }

    #[test]
    fn base64_text_decoded() {
        let binary = std::fs::read(vector("attestation-2022-10-13-signed-eif.cbor")).unwrap();
        let mut text = STANDARD.encode(&binary).into_bytes();
        text.insert(76, b'\n');
        text.push(b'\n');
        assert_eq!(decode_document(text), binary);
        assert_eq!(decode_document(binary.clone()), binary);
        assert_eq!(decode_document(b"not base64!".to_vec()), b"not base64!");
    }

    #[test]
    fn vector_verifies_at_document_time() {
        run(&args(&[&vector("attestation-2022-10-13-signed-eif.cbor"), "--at", "document"])).unwrap();
    }

    #[test]
    fn vector_expired_now() {
        let err = run(&args(&[&vector("attestation-2022-10-13-signed-eif.cbor")])).unwrap_err();
        assert!(matches!(attestation_error(&err), AttestationError::CertificateExpired { .. }), "{err:#}");
        assert!(format!("{err:#}").contains("(--at document verifies an archived document"), "{err:#}");
    }

    #[test]
    fn debug_vector_needs_allow_debug() {
        let file = vector("attestation-2022-10-12-debug.cbor");
        let err = run(&args(&[&file, "--at", "document"])).unwrap_err();
        assert!(matches!(attestation_error(&err), AttestationError::DebugMode), "{err:#}");
        assert!(format!("{err:#}").contains("(--allow-debug accepts debug-mode documents)"), "{err:#}");
        run(&args(&[&file, "--at", "document", "--allow-debug"])).unwrap();
    }

    #[test]
    fn no_aws_root_needs_root() {
        let err = run(&args(&[&vector("attestation-2022-10-13-signed-eif.cbor"), "--no-aws-root"])).unwrap_err();
        assert!(err.to_string().contains("--root"), "{err:#}");
    }

    #[test]
    fn summaries_show_fields() {
        let bytes = std::fs::read(vector("attestation-2024-09-07-fields-1024.cbor")).unwrap();
        let options = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: false };
        let verified = Verifier::with_aws_root().verify(&bytes, &options).unwrap();

        let text = summary_text(&verified);
        assert!(text.contains(&format!("module_id:   {}", verified.document().module_id)), "{text}");
        assert!(text.contains("timestamp:   2024-09-07T14:37:39.545Z"), "{text}");
        assert!(text.contains("nonce:       1024 bytes"), "{text}");
        assert!(text.contains("PCR0  e72a46ca80a260fb"), "{text}");
        assert!(text.contains("CN=aws.nitro-enclaves"), "{text}");

        let json = summary_json(&verified);
        assert_eq!(json["valid"], true);
        assert_eq!(json["timestamp"], 1_725_719_859_545u64);
        assert_eq!(json["public_key_len"], 1024);
        assert_eq!(json["chain"].as_array().unwrap().len(), 5);
        assert!(json["pcrs"]["0"].as_str().unwrap().starts_with("e72a46ca80a260fb"));
    }
}
