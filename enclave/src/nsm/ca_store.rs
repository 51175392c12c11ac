//! The mock NSM's certificate authority, stored in a directory.
//!
//! The chain has the shape of the real one: a root, three intermediates with
//! pathLenConstraint 2, 1 and 0 (regional, zonal, instance on Nitro), and a
//! short-lived leaf that signs documents. All keys are ECDSA P-384 and all
//! certificates are signed with ecdsa-with-SHA384.
//!
//! ```text
//! DIR/                 mode 0700
//!   root.pem           the root certificate, to pass to a verifier as --trust-root DIR/root.pem
//!   root.key           PKCS#8 private keys, mode 0600
//!   intermediate-{1,2,3}.pem / .key
//!   leaf.pem / leaf.key   re-issued when less than LEAF_RENEW_BEFORE of its validity remains
//!   instance-id        the mock parent instance id, for module_id and PCR4
//! ```
//!
//! The store rejects a directory or key file that other users can read or
//! write, a symbolic link in place of either, and a path of the wrong type
//! (a file where the directory belongs, or the reverse).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
    SerialNumber,
};
use recipient_common::attestation::der_error_reason;
use time::OffsetDateTime;
use x509_parser::error::PEMError;
use x509_parser::nom;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::NsmError;

/// The root certificate's file name inside the store.
pub const ROOT_CERT_FILE: &str = "root.pem";
const ROOT_KEY_FILE: &str = "root.key";
const LEAF_CERT_FILE: &str = "leaf.pem";
const LEAF_KEY_FILE: &str = "leaf.key";
const INSTANCE_ID_FILE: &str = "instance-id";

/// Intermediate CAs from the root down, with their pathLenConstraint.
const INTERMEDIATES: [(&str, &str, u8); 3] = [
    ("intermediate-1", "regional.mock.nitro-enclaves", 2),
    ("intermediate-2", "zonal.mock.nitro-enclaves", 1),
    ("intermediate-3", "instance.mock.nitro-enclaves", 0),
];

/// The intermediate that issues leaves: the last of [`INTERMEDIATES`].
const ISSUING_INTERMEDIATE: &str = "intermediate-3";

const ORGANIZATION: &str = "enclave-agent mock NSM";
const ROOT_COMMON_NAME: &str = "mock.nitro-enclaves";

/// Validity of the root certificate.
const ROOT_LIFETIME: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
/// Validity of the intermediate certificates.
// NOTE: intermediates are not re-issued, so a store is usable for this long after `init_ca`.
const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of a leaf certificate, as on Nitro hardware.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// A leaf with less validity left than this is replaced before it signs, so
/// that a document stays verifiable for longer than a live verifier's maximum age.
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(30 * 60);

/// A leaf certificate and its signing key.
pub struct LeafSigner {
    pub certificate: Vec<u8>,
    pub key: EcdsaKeyPair,
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for LeafSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafSigner").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl LeafSigner {
    /// Whether the leaf must be replaced before signing at `now`.
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        now + LEAF_RENEW_BEFORE > self.not_after
    }
}

/// An opened CA store: the chain above the leaf and the key that issues leaves.
pub struct CaStore {
    dir: PathBuf,
    cabundle: Vec<Vec<u8>>,
    instance_id: String,
    issuer_certificate: Vec<u8>,
    issuer_key: KeyPair,
}

impl std::fmt::Debug for CaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaStore")
            .field("dir", &self.dir)
            .field("instance_id", &self.instance_id)
            .field("cabundle_len", &self.cabundle.len())
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NsmError + '_ {
    move |error| NsmError::Io { path: path.to_owned(), error }
}

fn crypto_error(action: &'static str) -> impl FnOnce(rcgen::Error) -> NsmError {
    move |e| NsmError::Crypto { action, reason: e.to_string() }
}

/// The type of filesystem object a store path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Directory,
    File,
}

/// Names a file type for error messages.
fn file_type_name(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;

    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// Joins phrases as in prose: `a`, `a and b`, `a, b and c`.
fn join_phrases(phrases: &[&str]) -> String {
    match phrases {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Describes what the permission bits of `mode` selected by `mask` let the
/// file's group and all other users do, for example "its group and all other
/// users list its contents and access files in it by name".
fn describe_access(mode: u32, mask: u32, kind: PathKind) -> String {
    let names = match kind {
        PathKind::Directory => ["list its contents", "create or delete files in it", "access files in it by name"],
        PathKind::File => ["read it", "write it", "execute it"],
    };
    let actions = |bits: u32| -> Vec<&str> {
        [0o4, 0o2, 0o1].into_iter().zip(names).filter(|(bit, _)| bits & bit != 0).map(|(_, name)| name).collect()
    };
    let group = actions((mode & mask) >> 3 & 0o7);
    let others = actions(mode & mask & 0o7);

    if group == others {
        return format!("its group and all other users {}", join_phrases(&group));
    }
    let mut parts = Vec::new();
    if !group.is_empty() {
        parts.push(format!("its group {}", join_phrases(&group)));
    }
    if !others.is_empty() {
        parts.push(format!("all other users {}", join_phrases(&others)));
    }
    parts.join(", and ")
}

/// Checks that `path` is a directory or regular file as `kind` requires, not a
/// symbolic link, and that other users can neither read nor write it
/// (`private`) or at least not write it.
fn check_permissions(path: &Path, kind: PathKind, private: bool) -> Result<(), NsmError> {
    let metadata = fs::symlink_metadata(path).map_err(io_error(path))?;
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        return Err(NsmError::SymbolicLink { path: path.to_owned() });
    }
    match kind {
        PathKind::Directory if !file_type.is_dir() => {
            return Err(NsmError::NotADirectory { path: path.to_owned(), found: file_type_name(file_type) });
        }
        PathKind::File if !file_type.is_file() => {
            return Err(NsmError::NotAFile { path: path.to_owned(), found: file_type_name(file_type) });
        }
        _ => {}
    }

    let mode = metadata.mode() & 0o7777;
    let is_dir = kind == PathKind::Directory;
    if private && mode & 0o077 != 0 {
        let fix = if is_dir { 0o700 } else { 0o600 };
        let access = describe_access(mode, 0o077, kind);
        return Err(NsmError::UnsafePermissions { path: path.to_owned(), mode, access, fix });
    }
    if mode & 0o022 != 0 {
        let fix = if is_dir { 0o700 } else { 0o644 };
        let access = describe_access(mode, 0o022, kind);
        return Err(NsmError::UnsafePermissions { path: path.to_owned(), mode, access, fix });
    }
    Ok(())
}

/// Formats a PEM parse error. The `Display` of `nom::Err` shows the inner
/// error with `Debug` (`Parsing Error: MissingHeader`), so the inner error's
/// own `Display` is used instead.
fn pem_error_reason(error: &nom::Err<PEMError>) -> String {
    match error {
        nom::Err::Error(inner) | nom::Err::Failure(inner) => inner.to_string(),
        nom::Err::Incomplete(_) => "the PEM text ends early".to_owned(),
    }
}

fn random_hex(bytes: usize) -> Result<String, NsmError> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buffer).map_err(|_| NsmError::Crypto {
        action: "generate random bytes",
        reason: "the system RNG failed".to_owned(),
    })?;
    Ok(hex::encode(buffer))
}

fn random_serial() -> Result<SerialNumber, NsmError> {
    let mut serial = [0u8; 16];
    SystemRandom::new().fill(&mut serial).map_err(|_| NsmError::Crypto {
        action: "generate a serial number",
        reason: "the system RNG failed".to_owned(),
    })?;
    // A positive INTEGER: clear the sign bit and keep the first byte non-zero.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&serial))
}

/// Makes a mock instance id in the form of an EC2 instance id, `i-` and 17 hex digits.
fn new_instance_id() -> Result<String, NsmError> {
    let hex = random_hex(9)?;
    Ok(format!("i-{}", hex.get(..17).unwrap_or(&hex)))
}

fn is_valid_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn ca_params(
    common_name: &str,
    is_ca: IsCa,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<CertificateParams, NsmError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "US");
    params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = is_ca;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now;
    params.not_after = now + lifetime;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn generate_key() -> Result<KeyPair, NsmError> {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(crypto_error("generate a P-384 key"))
}

/// Writes a new file; fails if it exists.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), NsmError> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Replaces a file atomically: writes a temporary file beside it, then renames it.
fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), NsmError> {
    let temporary = path.with_extension(format!("tmp-{}", random_hex(6)?));
    write_new(&temporary, contents, mode)?;
    fs::rename(&temporary, path).map_err(io_error(path))
}

fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Creates a CA store in `dir`: a root, three intermediates, a leaf and a mock
/// instance id.
///
/// `dir` is created with mode 0700 if missing; an existing `dir` must not be
/// accessible to other users. An already initialised store (one with
/// `root.pem`) is left untouched and [`NsmError::AlreadyInitialised`] returned.
pub fn init_ca(dir: &Path) -> Result<(), NsmError> {
    if dir.exists() {
        check_permissions(dir, PathKind::Directory, true)?;
        if dir.join(ROOT_CERT_FILE).exists() {
            return Err(NsmError::AlreadyInitialised { dir: dir.to_owned() });
        }
    } else {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error(dir))?;
        check_permissions(dir, PathKind::Directory, true)?;
    }

    let now = now_seconds();
    let root_key = generate_key()?;
    let root_key_pem = Zeroizing::new(root_key.serialize_pem());
    let root_params = ca_params(ROOT_COMMON_NAME, IsCa::Ca(BasicConstraints::Unconstrained), now, ROOT_LIFETIME)?;
    let root = root_params.self_signed(&root_key).map_err(crypto_error("sign the root certificate"))?;
    let mut issuer = Issuer::new(root_params, root_key);
    let mut files: Vec<(String, String, Zeroizing<String>)> = Vec::new();
    for (name, common_name, path_len) in INTERMEDIATES {
        let key = generate_key()?;
        let is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        let params = ca_params(common_name, is_ca, now, INTERMEDIATE_LIFETIME)?;
        let certificate = params.signed_by(&key, &issuer).map_err(crypto_error("sign an intermediate certificate"))?;
        files.push((name.to_owned(), certificate.pem(), Zeroizing::new(key.serialize_pem())));
        issuer = Issuer::new(params, key);
    }
    let instance_id = new_instance_id()?;

    let key_path = |name: &str| dir.join(format!("{name}.key"));
    let cert_path = |name: &str| dir.join(format!("{name}.pem"));
    write_new(&dir.join(INSTANCE_ID_FILE), format!("{instance_id}\n").as_bytes(), 0o644)?;
    for (name, certificate, key) in &files {
        write_new(&key_path(name), key.as_bytes(), 0o600)?;
        write_new(&cert_path(name), certificate.as_bytes(), 0o644)?;
    }
    let (leaf_pem, leaf_key) = issue_leaf_pem(&issuer, &instance_id, now)?;
    write_new(&dir.join(LEAF_KEY_FILE), leaf_key.as_bytes(), 0o600)?;
    write_new(&dir.join(LEAF_CERT_FILE), leaf_pem.as_bytes(), 0o644)?;
    write_new(&dir.join(ROOT_KEY_FILE), root_key_pem.as_bytes(), 0o600)?;
    // root.pem is written last: its presence marks a complete store.
    write_new(&dir.join(ROOT_CERT_FILE), root.pem().as_bytes(), 0o644)?;

    tracing::info!(dir = %dir.display(), %instance_id, "initialised the mock CA store");
    Ok(())
}

/// Issues a leaf certificate under `issuer`, valid from `now` for [`LEAF_LIFETIME`].
fn issue_leaf_pem(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    instance_id: &str,
    now: OffsetDateTime,
) -> Result<(String, Zeroizing<String>), NsmError> {
    let key = generate_key()?;
    let mut params =
        ca_params(&format!("{instance_id}.leaf.mock.nitro-enclaves"), IsCa::ExplicitNoCa, now, LEAF_LIFETIME)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let certificate = params.signed_by(&key, issuer).map_err(crypto_error("sign a leaf certificate"))?;
    Ok((certificate.pem(), Zeroizing::new(key.serialize_pem())))
}

fn read_file(path: &Path) -> Result<Vec<u8>, NsmError> {
    fs::read(path).map_err(io_error(path))
}

fn invalid(path: &Path, reason: impl Into<String>) -> NsmError {
    NsmError::InvalidStoreFile { path: path.to_owned(), reason: reason.into() }
}

/// Reads a certificate file (PEM) and returns its DER.
fn read_certificate(path: &Path) -> Result<Vec<u8>, NsmError> {
    check_permissions(path, PathKind::File, false)?;
    let text = read_file(path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
        .map_err(|e| invalid(path, format!("not PEM: {}", pem_error_reason(&e))))?;
    if pem.label != "CERTIFICATE" {
        return Err(invalid(path, format!("PEM label is {}; expected CERTIFICATE", pem.label)));
    }
    X509Certificate::from_der(&pem.contents)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {}", der_error_reason(&e))))?;
    Ok(pem.contents)
}

/// Reads a private key file (PKCS#8 PEM), which must be private to its owner.
fn read_key(path: &Path) -> Result<KeyPair, NsmError> {
    check_permissions(path, PathKind::File, true)?;
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_error(path))?);
    KeyPair::from_pem(&text).map_err(|e| invalid(path, format!("not a PKCS#8 PEM private key: {e}")))
}

/// Checks that `certificate` (DER) carries the public half of `key`.
fn check_key_matches(path: &Path, certificate: &[u8], key: &KeyPair) -> Result<OffsetDateTime, NsmError> {
    let (_, parsed) = X509Certificate::from_der(certificate)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {}", der_error_reason(&e))))?;
    let point: &[u8] = parsed.public_key().subject_public_key.data.as_ref();
    if point != key.public_key_raw() {
        return Err(invalid(path, "the certificate does not match its private key file"));
    }
    Ok(parsed.validity().not_after.to_datetime())
}

fn signer_from(path: &Path, certificate: Vec<u8>, key: &KeyPair) -> Result<LeafSigner, NsmError> {
    let not_after = check_key_matches(path, &certificate, key)?;
    let pkcs8 = Zeroizing::new(key.serialize_der());
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
        .map_err(|e| invalid(path, format!("the key is not a P-384 key: {e}")))?;
    Ok(LeafSigner { certificate, key, not_after })
}

impl CaStore {
    /// Opens the store in `dir`, checking its permissions and that each
    /// certificate matches its key.
    pub fn open(dir: &Path) -> Result<Self, NsmError> {
        // A file in place of the directory is named as such, because running
        // `mock-ca init` as the NotInitialised message suggests would fail on it.
        if let Ok(metadata) = fs::metadata(dir)
            && !metadata.is_dir()
        {
            return Err(NsmError::NotADirectory { path: dir.to_owned(), found: file_type_name(metadata.file_type()) });
        }
        if !dir.join(ROOT_CERT_FILE).exists() {
            return Err(NsmError::NotInitialised { dir: dir.to_owned() });
        }
        check_permissions(dir, PathKind::Directory, true)?;

        let mut cabundle = vec![read_certificate(&dir.join(ROOT_CERT_FILE))?];
        for (name, _, _) in INTERMEDIATES {
            cabundle.push(read_certificate(&dir.join(format!("{name}.pem")))?);
        }
        let issuer_name = ISSUING_INTERMEDIATE;
        let issuer_key = read_key(&dir.join(format!("{issuer_name}.key")))?;
        let issuer_certificate = cabundle.last().cloned().unwrap_or_default();
        check_key_matches(&dir.join(format!("{issuer_name}.pem")), &issuer_certificate, &issuer_key)?;
        let instance_id_path = dir.join(INSTANCE_ID_FILE);
        check_permissions(&instance_id_path, PathKind::File, false)?;
        let instance_id = fs::read_to_string(&instance_id_path).map_err(io_error(&instance_id_path))?.trim().to_owned();
        if !is_valid_instance_id(&instance_id) {
            return Err(invalid(
                &instance_id_path,
                format!("`{instance_id}` is not an instance id (i- and 8 to 17 hex digits)"),
            ));
        }

        Ok(Self { dir: dir.to_owned(), cabundle, instance_id, issuer_certificate, issuer_key })
    }

    /// Returns the store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the path of the root certificate, the one a verifier must trust.
    pub fn root_path(&self) -> PathBuf {
        self.dir.join(ROOT_CERT_FILE)
    }

    /// Returns the chain above the leaf, root first, as a document's `cabundle`.
    pub fn cabundle(&self) -> &[Vec<u8>] {
        &self.cabundle
    }

    /// Returns the mock parent instance id (`i-` and hex digits).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Returns the stored leaf, or a new one (also written to the store) when
    /// the stored one is missing, invalid or needs renewal at `now`.
    pub fn current_leaf(&self, now: OffsetDateTime) -> Result<LeafSigner, NsmError> {
        match self.stored_leaf() {
            Ok(leaf) if !leaf.needs_renewal(now) && leaf.not_after - LEAF_LIFETIME <= now => return Ok(leaf),
            Ok(_) => tracing::info!(dir = %self.dir.display(), "mock leaf certificate is due for renewal"),
            Err(e) => tracing::warn!(error = %e, "mock leaf certificate is unusable, issuing a new one"),
        }
        self.issue_leaf(now)
    }

    fn stored_leaf(&self) -> Result<LeafSigner, NsmError> {
        let key_path = self.dir.join(LEAF_KEY_FILE);
        let cert_path = self.dir.join(LEAF_CERT_FILE);
        let key = read_key(&key_path)?;
        let certificate = read_certificate(&cert_path)?;
        signer_from(&cert_path, certificate, &key)
    }

    /// Issues a new leaf valid from `now`, writes it to the store and returns it.
    pub fn issue_leaf(&self, now: OffsetDateTime) -> Result<LeafSigner, NsmError> {
        let issuer = Issuer::from_ca_cert_der(&self.issuer_certificate.as_slice().into(), &self.issuer_key)
            .map_err(crypto_error("read the issuing intermediate certificate"))?;
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let (pem, key_pem) = issue_leaf_pem(&issuer, &self.instance_id, now)?;

        let key_path = self.dir.join(LEAF_KEY_FILE);
        let cert_path = self.dir.join(LEAF_CERT_FILE);
        replace_file(&key_path, key_pem.as_bytes(), 0o600)?;
        replace_file(&cert_path, pem.as_bytes(), 0o644)?;
        let key = KeyPair::from_pem(&key_pem).map_err(crypto_error("read back the new leaf key"))?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| invalid(&cert_path, format!("not PEM: {}", pem_error_reason(&e))))?;
        tracing::info!(dir = %self.dir.display(), "issued a new mock leaf certificate");
        signer_from(&cert_path, parsed.contents, &key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuing_intermediate_is_last() {
        assert_eq!(INTERMEDIATES.last().map(|(name, _, _)| *name), Some(ISSUING_INTERMEDIATE));
    }

    #[test]
    fn access_described_from_mode_bits() {
        let cases = [
            (
                0o755,
                0o077,
                PathKind::Directory,
                "its group and all other users list its contents and access files in it by name",
            ),
            (0o700 | 0o020, 0o077, PathKind::Directory, "its group create or delete files in it"),
            (0o640, 0o077, PathKind::File, "its group read it"),
            (0o604, 0o077, PathKind::File, "all other users read it"),
            (0o664, 0o077, PathKind::File, "its group read it and write it, and all other users read it"),
            (0o666, 0o022, PathKind::File, "its group and all other users write it"),
            (0o647, 0o077, PathKind::File, "its group read it, and all other users read it, write it and execute it"),
        ];
        for (mode, mask, kind, expected) in cases {
            assert_eq!(describe_access(mode, mask, kind), expected, "mode {mode:04o}");
        }
    }

    #[test]
    fn instance_ids_validated() {
        assert!(is_valid_instance_id("i-0123456789abcdef0"));
        assert!(is_valid_instance_id("i-01234567"));
        assert!(!is_valid_instance_id("i-0123"));
        assert!(!is_valid_instance_id("0123456789abcdef0"));
        assert!(!is_valid_instance_id("i-0123456789abcdefg"));
    }
}
