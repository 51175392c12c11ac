//! The KMS subcommands of `enclave-agent`: `derive-shared-secret`,
//! `decrypt`, `generate-data-key`, `generate-data-key-pair` and
//! `generate-random`. Flags follow the AWS CLI where the concept is the same.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use zeroize::Zeroizing;

use super::NsmArgs;
use crate::client::{
    ClientError, DecryptParams, DeriveSharedSecretParams, GenerateDataKeyPairParams, GenerateDataKeyParams, KeyReuse,
    RecipientClient,
};
use crate::input::{InputError, parse_encryption_context, read_binary_blob, read_blob_argument};
use crate::key::RsaKeySize;
use crate::parent::ParentClient;
use recipient_common::public_key;
use recipient_common::transport::{Address, DEFAULT_PARENT_ADDRESS};

/// Connection to the parent and the ephemeral key.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Address of parent-proxy: vsock://CID:PORT, tcp://HOST:PORT or unix:///PATH.
    #[arg(long, default_value = DEFAULT_PARENT_ADDRESS)]
    pub parent: Address,
    /// Seconds to wait for the parent's response, KMS call included.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Size in bits of the ephemeral RSA key that KMS encrypts the result to.
    #[arg(long, value_enum, default_value_t = RsaKeySize::Rsa2048)]
    pub rsa_key_size: RsaKeySize,
}

/// Output format and destination of the result.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// json: the KMS response fields, blobs in base64; text: the result (the
    /// plaintext, secret or random bytes) in base64 on one line; raw: its bytes.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Write the output to this file (created with mode 0600) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub outfile: Option<PathBuf>,
}

impl OutputArgs {
    /// Checks, before anything is sent to KMS, that `--outfile` names a file
    /// in an existing directory, so that a mistyped path does not cost a
    /// KMS call whose result is then lost.
    pub fn check(&self) -> Result<(), InputError> {
        let Some(path) = &self.outfile else {
            return Ok(());
        };
        let invalid = |message: String| InputError::Invalid { flag: "--outfile", message };
        if path.is_dir() {
            return Err(invalid(format!("{} is a directory; name a file in it", path.display())));
        }
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => std::path::Path::new("."),
        };
        if !parent.is_dir() {
            return Err(invalid(format!(
                "directory {} of {} does not exist; create it or choose another path",
                parent.display(),
                path.display()
            )));
        }
        Ok(())
    }
}

/// Output formats of the KMS subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Text,
    Raw,
}

/// Key derivation functions for the shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kdf {
    /// HKDF with SHA-256 (RFC 5869; NIST SP 800-56C two-step).
    HkdfSha256,
    /// HKDF with SHA-384.
    HkdfSha384,
}

/// Arguments of `derive-shared-secret`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeriveSharedSecretArgs {
    /// Key id, key ARN, alias name (alias/...) or alias ARN of the KMS key-agreement key.
    #[arg(long)]
    pub key_id: String,
    /// The peer's public key: fileb://PATH (DER or PEM), file://PATH, or base64 of the DER.
    #[arg(long)]
    pub public_key: String,
    /// Grant tokens.
    #[arg(long = "grant-tokens", num_args = 1..)]
    pub grant_tokens: Vec<String>,
    /// Check permissions without deriving (KMS returns DryRunOperationException on success).
    #[arg(long)]
    pub dry_run: bool,
    /// Derive a key from the shared secret instead of returning the raw secret.
    #[arg(long, value_enum)]
    pub kdf: Option<Kdf>,
    /// HKDF salt: fileb://PATH, file://PATH or base64 text (default: no salt).
    #[arg(long, requires = "kdf")]
    pub kdf_salt: Option<String>,
    /// HKDF info (context): fileb://PATH, file://PATH or base64 text (default: empty).
    #[arg(long, requires = "kdf")]
    pub kdf_info: Option<String>,
    /// Length in bytes of the derived key.
    #[arg(long, requires = "kdf", default_value_t = 32)]
    pub length: usize,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub nsm: NsmArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `decrypt`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// The ciphertext: fileb://PATH, file://PATH (base64 text) or base64 text.
    #[arg(long)]
    pub ciphertext_blob: String,
    /// The KMS key; required for asymmetric keys.
    #[arg(long)]
    pub key_id: Option<String>,
    /// Encryption context: JSON ({"k":"v"}) or k=v,k2=v2.
    #[arg(long)]
    pub encryption_context: Option<String>,
    /// SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.
    #[arg(long, value_parser = ["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])]
    pub encryption_algorithm: Option<String>,
    /// Grant tokens.
    #[arg(long = "grant-tokens", num_args = 1..)]
    pub grant_tokens: Vec<String>,
    /// Check permissions without decrypting.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub nsm: NsmArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `generate-data-key`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateDataKeyArgs {
    /// The KMS symmetric encryption key.
    #[arg(long)]
    pub key_id: String,
    /// AES_256 or AES_128; or give --number-of-bytes.
    #[arg(long, value_parser = ["AES_256", "AES_128"], required_unless_present = "number_of_bytes", conflicts_with = "number_of_bytes")]
    pub key_spec: Option<String>,
    /// Length of the data key in bytes, 1 to 1024.
    #[arg(long, value_parser = byte_count, allow_negative_numbers = true)]
    pub number_of_bytes: Option<u32>,
    /// Encryption context: JSON ({"k":"v"}) or k=v,k2=v2.
    #[arg(long)]
    pub encryption_context: Option<String>,
    /// Grant tokens.
    #[arg(long = "grant-tokens", num_args = 1..)]
    pub grant_tokens: Vec<String>,
    /// Check permissions without generating.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub nsm: NsmArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `generate-data-key-pair`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateDataKeyPairArgs {
    /// The KMS symmetric encryption key that encrypts the private key.
    #[arg(long)]
    pub key_id: String,
    /// The data key pair type.
    #[arg(long, value_parser = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1", "SM2"])]
    pub key_pair_spec: String,
    /// Encryption context: JSON ({"k":"v"}) or k=v,k2=v2.
    #[arg(long)]
    pub encryption_context: Option<String>,
    /// Grant tokens.
    #[arg(long = "grant-tokens", num_args = 1..)]
    pub grant_tokens: Vec<String>,
    /// Check permissions without generating.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub nsm: NsmArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `generate-random`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateRandomArgs {
    /// Number of random bytes, 1 to 1024.
    #[arg(long, value_parser = byte_count, allow_negative_numbers = true)]
    pub number_of_bytes: u32,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub nsm: NsmArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Builds the client from the NSM and connection flags.
fn client(nsm: &NsmArgs, connection: &ConnectionArgs) -> anyhow::Result<RecipientClient> {
    let timeout = Duration::try_from_secs_f64(connection.timeout).ok().filter(|t| !t.is_zero()).ok_or_else(|| {
        InputError::Invalid {
            flag: "--timeout",
            message: format!("{} is not a positive number of seconds", connection.timeout),
        }
    })?;
    let nsm = nsm.open()?;
    let parent = ParentClient::new(connection.parent.clone(), timeout);
    Ok(RecipientClient::new(nsm, parent, connection.rsa_key_size).with_key_reuse(None::<KeyReuse>))
}

fn context_argument(argument: Option<&str>) -> Result<std::collections::BTreeMap<String, String>, InputError> {
    argument.map_or_else(|| Ok(Default::default()), parse_encryption_context)
}

/// Runs `derive-shared-secret`.
pub async fn derive_shared_secret(args: &DeriveSharedSecretArgs) -> anyhow::Result<()> {
    args.output.check()?;
    let public_key = read_blob_argument("--public-key", &args.public_key)?;
    let inline = !args.public_key.starts_with("fileb://") && !args.public_key.starts_with("file://");
    if inline && matches!(public_key::recognise(&public_key), Err(public_key::PublicKeyError::Unrecognised)) {
        // Name the value: it is often a file path given without fileb://.
        let value: String = args.public_key.chars().take(60).collect();
        return Err(InputError::Invalid {
            flag: "--public-key",
            message: format!(
                "`{value}` is neither PEM nor base64 of DER, and no file of that name exists; \
                 pass a DER file with fileb://PATH"
            ),
        }
        .into());
    }
    let salt = args.kdf_salt.as_deref().map(|s| read_binary_blob("--kdf-salt", s)).transpose()?;
    let info = args.kdf_info.as_deref().map(|s| read_binary_blob("--kdf-info", s)).transpose()?;
    if let Some(kdf) = args.kdf {
        check_kdf_length(kdf, args.length)?;
    }
    let client = client(&args.nsm, &args.connection)?;

    let params = DeriveSharedSecretParams {
        key_id: args.key_id.clone(),
        public_key,
        grant_tokens: args.grant_tokens.clone(),
        dry_run: args.dry_run,
    };
    let derived =
        client.derive_shared_secret(params).await.map_err(|error| request_error("DeriveSharedSecret", error))?;

    let (field, secret) = match args.kdf {
        None => ("SharedSecret", Zeroizing::new(derived.shared_secret.to_vec())),
        Some(kdf) => {
            let key = hkdf(
                kdf,
                &derived.shared_secret,
                salt.as_deref().unwrap_or_default(),
                info.as_deref().unwrap_or_default(),
                args.length,
            )?;
            ("DerivedKey", key)
        }
    };
    let mut fields = json!({
        "KeyId": derived.key_id,
        "KeyAgreementAlgorithm": derived.key_agreement_algorithm,
        "KeyOrigin": derived.key_origin,
    });
    if let (Some(kdf), Some(object)) = (args.kdf, fields.as_object_mut()) {
        let name = match kdf {
            Kdf::HkdfSha256 => "HKDF-SHA256",
            Kdf::HkdfSha384 => "HKDF-SHA384",
        };
        object.insert("Kdf".to_owned(), json!(name));
    }
    emit(&args.output, field, &secret, fields)
}

fn check_kdf_length(kdf: Kdf, length: usize) -> Result<(), InputError> {
    let hash_len = match kdf {
        Kdf::HkdfSha256 => 32,
        Kdf::HkdfSha384 => 48,
    };
    if length == 0 || length > 255 * hash_len {
        return Err(InputError::Invalid {
            flag: "--length",
            message: format!("{length} is out of range; HKDF gives 1 to {} bytes with this hash", 255 * hash_len),
        });
    }
    Ok(())
}

/// Derives `length` bytes from `secret` with HKDF (extract, then expand).
pub fn hkdf(kdf: Kdf, secret: &[u8], salt: &[u8], info: &[u8], length: usize) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    use aws_lc_rs::hkdf::{HKDF_SHA256, HKDF_SHA384, Salt};

    struct Length(usize);
    impl aws_lc_rs::hkdf::KeyType for Length {
        fn len(&self) -> usize {
            self.0
        }
    }

    let algorithm = match kdf {
        Kdf::HkdfSha256 => HKDF_SHA256,
        Kdf::HkdfSha384 => HKDF_SHA384,
    };
    let info_parts = [info];
    let mut output = Zeroizing::new(vec![0u8; length]);
    Salt::new(algorithm, salt)
        .extract(secret)
        .expand(&info_parts, Length(length))
        .and_then(|okm| okm.fill(&mut output))
        .map_err(|_| anyhow::anyhow!("HKDF failed for a {length}-byte output"))?;
    Ok(output)
}

/// Runs `decrypt`.
pub async fn decrypt(args: &DecryptArgs) -> anyhow::Result<()> {
    args.output.check()?;
    let ciphertext_blob = read_binary_blob("--ciphertext-blob", &args.ciphertext_blob)?;
    let encryption_context = context_argument(args.encryption_context.as_deref())?;
    let client = client(&args.nsm, &args.connection)?;

    let params = DecryptParams {
        ciphertext_blob,
        key_id: args.key_id.clone(),
        encryption_context,
        encryption_algorithm: args.encryption_algorithm.clone(),
        grant_tokens: args.grant_tokens.clone(),
        dry_run: args.dry_run,
    };
    let decrypted = client.decrypt(params).await.map_err(|error| request_error("Decrypt", error))?;

    let fields = json!({ "KeyId": decrypted.key_id, "EncryptionAlgorithm": decrypted.encryption_algorithm });
    emit(&args.output, "Plaintext", &decrypted.plaintext, fields)
}

/// Runs `generate-data-key`.
pub async fn generate_data_key(args: &GenerateDataKeyArgs) -> anyhow::Result<()> {
    args.output.check()?;
    let encryption_context = context_argument(args.encryption_context.as_deref())?;
    let client = client(&args.nsm, &args.connection)?;

    let params = GenerateDataKeyParams {
        key_id: args.key_id.clone(),
        key_spec: args.key_spec.clone(),
        number_of_bytes: args.number_of_bytes,
        encryption_context,
        grant_tokens: args.grant_tokens.clone(),
        dry_run: args.dry_run,
    };
    let generated = client.generate_data_key(params).await.map_err(|error| request_error("GenerateDataKey", error))?;

    let fields = json!({ "KeyId": generated.key_id, "CiphertextBlob": STANDARD.encode(&generated.ciphertext_blob) });
    emit(&args.output, "Plaintext", &generated.plaintext, fields)
}

/// Runs `generate-data-key-pair`.
pub async fn generate_data_key_pair(args: &GenerateDataKeyPairArgs) -> anyhow::Result<()> {
    args.output.check()?;
    let encryption_context = context_argument(args.encryption_context.as_deref())?;
    let client = client(&args.nsm, &args.connection)?;

    let params = GenerateDataKeyPairParams {
        key_id: args.key_id.clone(),
        key_pair_spec: args.key_pair_spec.clone(),
        encryption_context,
        grant_tokens: args.grant_tokens.clone(),
        dry_run: args.dry_run,
    };
    let pair =
        client.generate_data_key_pair(params).await.map_err(|error| request_error("GenerateDataKeyPair", error))?;

    let fields = json!({
        "KeyId": pair.key_id,
        "KeyPairSpec": pair.key_pair_spec,
        "PublicKey": STANDARD.encode(&pair.public_key),
        "PrivateKeyCiphertextBlob": STANDARD.encode(&pair.private_key_ciphertext_blob),
    });
    emit(&args.output, "PrivateKeyPlaintext", &pair.private_key_plaintext, fields)
}

/// Runs `generate-random`.
pub async fn generate_random(args: &GenerateRandomArgs) -> anyhow::Result<()> {
    args.output.check()?;
    let client = client(&args.nsm, &args.connection)?;
    let random =
        client.generate_random(args.number_of_bytes).await.map_err(|error| request_error("GenerateRandom", error))?;
    emit(&args.output, "Plaintext", &random, json!({}))
}

/// Adds the operation's name to a failed request's error, except for errors
/// in the arguments, which name the argument themselves.
fn request_error(operation: &str, error: ClientError) -> anyhow::Error {
    match error {
        ClientError::InvalidInput { .. } | ClientError::PublicKey(_) => error.into(),
        _ => anyhow::Error::new(error).context(format!("{operation} failed")),
    }
}

/// Writes the result: the secret (in base64 for json and text), with the
/// other response fields in json.
fn emit(output: &OutputArgs, secret_field: &str, secret: &[u8], mut fields: serde_json::Value) -> anyhow::Result<()> {
    let bytes = match output.output {
        OutputFormat::Raw => Zeroizing::new(secret.to_vec()),
        OutputFormat::Text => Zeroizing::new(format!("{}\n", STANDARD.encode(secret)).into_bytes()),
        OutputFormat::Json => {
            if let Some(object) = fields.as_object_mut() {
                object.insert(secret_field.to_owned(), json!(STANDARD.encode(secret)));
                object.retain(|_, value| !value.is_null());
            }
            let text = Zeroizing::new(format!("{fields:#}\n"));
            // The JSON value contains a copy of the secret, so overwrite it.
            if let Some(serde_json::Value::String(encoded)) = fields.get_mut(secret_field) {
                zeroize::Zeroize::zeroize(encoded);
            }
            Zeroizing::new(text.as_bytes().to_vec())
        }
    };

    match &output.outfile {
        Some(path) => write_private_file(path, &bytes),
        None => write_stdout(&bytes),
    }
}

/// Writes `bytes` to `path`, created (or truncated) with mode 0600.
fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    let failed = |error| InputError::Write { flag: "--outfile", path: path.display().to_string(), error };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(failed)?;
    // An existing file keeps its mode on open; make it private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    Ok(())
}

/// Writes to stdout; a closed pipe is not an error.
pub(crate) fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Accepts a byte count for `--number-of-bytes`, 1 to 1024 as KMS allows.
fn byte_count(value: &str) -> Result<u32, String> {
    match value.trim().parse::<i128>() {
        Ok(number @ 1..=1024) => Ok(number as u32),
        Ok(_) => Err(format!("`{value}` is out of range; write a whole number of bytes from 1 to 1024")),
        Err(_) => Err(format!("`{value}` is not a whole number; write a number of bytes from 1 to 1024")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        // RFC 5869 appendix A.1.
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf(Kdf::HkdfSha256, &ikm, &salt, &info, 42).unwrap();
        assert_eq!(
            hex::encode(okm.as_slice()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn kdf_length_bounds() {
        assert!(check_kdf_length(Kdf::HkdfSha256, 32).is_ok());
        assert!(check_kdf_length(Kdf::HkdfSha256, 255 * 32).is_ok());
        assert!(check_kdf_length(Kdf::HkdfSha256, 255 * 32 + 1).is_err());
        assert!(check_kdf_length(Kdf::HkdfSha384, 0).is_err());
    }

    #[test]
    fn outfile_is_private() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.out");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let output = OutputArgs { output: OutputFormat::Raw, outfile: Some(path.clone()) };
        emit(&output, "Plaintext", &[1, 2, 3], json!({})).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![1, 2, 3]);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn json_output_uses_kms_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let output = OutputArgs { output: OutputFormat::Json, outfile: Some(path.clone()) };
        emit(&output, "SharedSecret", &[0xff; 3], json!({"KeyId": "arn", "KeyOrigin": null})).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(value, json!({"KeyId": "arn", "SharedSecret": "////"}));
    }
}
