//! Verification of attestation documents against pinned roots.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use x509_parser::pem::Pem;

use super::chain::{self, CertificateCache, CertificateInfo, Issuer, Sha256, sha256};
use super::cose::sig_structure;
use super::error::{AttestationError, CertificatePosition};
use super::{AttestationDocument, ParsedDocument};

/// The PEM text of the AWS Nitro Enclaves root G1 (`CN=aws.nitro-enclaves,
/// OU=AWS, O=Amazon, C=US`, valid 2019-10-28 to 2049-10-28). The SHA-256 of
/// its DER is [`AWS_ROOT_G1_SHA256`].
pub const AWS_ROOT_G1_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
";

/// SHA-256 of the DER of the AWS Nitro Enclaves root G1, in lower-case hex.
pub const AWS_ROOT_G1_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// The maximum document age of [`TimeMode::live`].
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// How far a document's timestamp may run ahead of the verifier's clock in
/// live mode, to absorb clock differences between the enclave host and the verifier.
pub const ALLOWED_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// When certificates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// The current time; documents older than `max_age` are rejected.
    Live { max_age: Duration },
    /// A given instant; the document's age is not checked.
    At(SystemTime),
    /// The document's own timestamp, for archived documents.
    DocumentTime,
}

impl TimeMode {
    /// Live verification with the default maximum age of five minutes.
    pub fn live() -> Self {
        TimeMode::Live { max_age: DEFAULT_MAX_AGE }
    }
}

/// Options of one verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    pub time: TimeMode,
    /// Accept debug-mode documents (PCR0, PCR1 and PCR2 all zero).
    pub allow_debug: bool,
}

impl Default for VerifyOptions {
    /// Live verification with the default maximum age; debug documents rejected.
    fn default() -> Self {
        Self { time: TimeMode::live(), allow_debug: false }
    }
}

/// A document whose COSE signature, certificate chain and time checks passed.
///
/// Only [`Verifier::verify`] creates one, so code that takes a
/// `VerifiedDocument` cannot be handed an unverified document.
#[derive(Debug, Clone)]
pub struct VerifiedDocument {
    document: AttestationDocument,
    chain_subjects: Vec<String>,
    root_sha256: String,
    verified_at: OffsetDateTime,
    debug_mode: bool,
}

impl VerifiedDocument {
    /// Returns the verified payload.
    pub fn document(&self) -> &AttestationDocument {
        &self.document
    }

    /// Consumes the token and returns the payload.
    pub fn into_document(self) -> AttestationDocument {
        self.document
    }

    /// Returns the subjects of the validated path, root first and leaf last.
    pub fn chain_subjects(&self) -> &[String] {
        &self.chain_subjects
    }

    /// Returns the SHA-256 of the trusted root's DER, in lower-case hex.
    pub fn root_sha256(&self) -> &str {
        &self.root_sha256
    }

    /// Returns the instant at which the certificates were found valid.
    pub fn verified_at(&self) -> OffsetDateTime {
        self.verified_at
    }

    /// Returns whether PCR0, PCR1 and PCR2 are all zero (the document was
    /// accepted only because debug documents were allowed).
    pub fn is_debug_mode(&self) -> bool {
        self.debug_mode
    }
}

/// A trusted root certificate.
#[derive(Clone)]
struct TrustedRoot {
    der: Arc<[u8]>,
    sha256: Sha256,
    subject: String,
}

/// Verifies documents against a set of trusted root certificates.
///
/// Clones share one certificate cache, and the cache is safe to use from
/// many threads, so a service can keep one `Verifier` (or an `Arc` of it) for
/// all its tasks.
#[derive(Clone, Default)]
pub struct Verifier {
    roots: Vec<TrustedRoot>,
    cache: Arc<CertificateCache>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots: Vec<&str> = self.roots.iter().map(|root| root.subject.as_str()).collect();
        f.debug_struct("Verifier").field("roots", &roots).field("cache", &self.cache).finish()
    }
}

/// Returns whether `document` comes from a debug-mode enclave: PCR0, PCR1 and
/// PCR2 are all present and all zero.
pub fn is_debug_mode(document: &AttestationDocument) -> bool {
    (0..3).all(|index| document.pcrs.get(&index).is_some_and(|value| value.iter().all(|byte| *byte == 0)))
}

fn to_datetime(time: SystemTime) -> Result<OffsetDateTime, AttestationError> {
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AttestationError::InvalidTime { reason: "the instant is before the Unix epoch".to_owned() })?;
    let nanos = i128::try_from(since_epoch.as_nanos())
        .map_err(|_| AttestationError::InvalidTime { reason: "the instant is out of range".to_owned() })?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|e| AttestationError::InvalidTime { reason: format!("the instant is out of range: {e}") })
}

fn millis_to_datetime(millis: u64) -> Result<OffsetDateTime, AttestationError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|e| AttestationError::InvalidTime { reason: format!("timestamp {millis} ms is out of range: {e}") })
}

impl Verifier {
    /// Creates a verifier that trusts no root. Add roots with [`Verifier::add_root_pem`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a verifier that trusts the AWS Nitro Enclaves root G1 only.
    pub fn with_aws_root() -> Self {
        let mut verifier = Self::new();
        // Tests verify real documents with this constant, so this branch is not expected to run.
        if let Err(e) = verifier.add_root_pem(AWS_ROOT_G1_PEM.as_bytes()) {
            tracing::error!(error = %e, "the built-in AWS Nitro Enclaves root G1 is invalid");
        }
        verifier
    }

    /// Adds trusted roots from PEM text (one or more `CERTIFICATE` blocks).
    ///
    /// Each must be a self-signed ECDSA P-384 certificate; its validity is
    /// checked at verification time.
    pub fn add_root_pem(&mut self, pem: &[u8]) -> Result<(), AttestationError> {
        let mut added = 0;
        for block in Pem::iter_from_buffer(pem) {
            let block = block.map_err(|e| AttestationError::RootPem { reason: e.to_string() })?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            self.add_root_der(&block.contents)?;
            added += 1;
        }
        if added == 0 {
            return Err(AttestationError::RootPem { reason: "no CERTIFICATE block found".to_owned() });
        }
        Ok(())
    }

    /// Adds a trusted root from its DER encoding.
    pub fn add_root_der(&mut self, der: &[u8]) -> Result<(), AttestationError> {
        let info = chain::inspect_certificate(CertificatePosition::Bundle(0), der, Issuer::SelfSigned)
            .map_err(|e| AttestationError::RootPem { reason: e.to_string() })?;
        let sha256 = sha256(der);
        if self.roots.iter().any(|root| root.sha256 == sha256) {
            return Ok(());
        }
        self.roots.push(TrustedRoot { der: Arc::from(der), sha256, subject: info.subject });
        Ok(())
    }

    /// Returns the subjects of the trusted roots.
    pub fn root_subjects(&self) -> Vec<String> {
        self.roots.iter().map(|root| root.subject.clone()).collect()
    }

    /// Returns the number of certificates in the shared cache.
    pub fn cached_certificates(&self) -> usize {
        self.cache.len()
    }

    /// Empties the shared certificate cache.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Parses and verifies a document: the certificate path up to a trusted
    /// root, each certificate's validity at the instant `options.time` picks,
    /// the COSE signature under the leaf key, the document's age in live
    /// mode, and the debug-mode rule.
    pub fn verify(&self, bytes: &[u8], options: &VerifyOptions) -> Result<VerifiedDocument, AttestationError> {
        self.verify_parsed(ParsedDocument::parse(bytes)?, options)
    }

    /// Verifies a document that is already parsed, as [`Verifier::verify`] does.
    pub fn verify_parsed(
        &self,
        parsed: ParsedDocument,
        options: &VerifyOptions,
    ) -> Result<VerifiedDocument, AttestationError> {
        let ParsedDocument { cose, document } = parsed;

        let now = to_datetime(SystemTime::now())?;
        let at = match options.time {
            TimeMode::Live { .. } => now,
            TimeMode::At(instant) => to_datetime(instant)?,
            TimeMode::DocumentTime => millis_to_datetime(document.timestamp)?,
        };
        let (chain, root) = self.validate_path(&document, at, now)?;
        let (Some(root_info), Some(leaf)) = (chain.first(), chain.last()) else {
            return Err(AttestationError::EmptyCabundle);
        };

        let signed = sig_structure(&cose.protected, &cose.payload);
        if leaf.cose_key.verify_sig(&signed, &cose.signature).is_err() {
            return Err(AttestationError::CoseSignature { subject: leaf.subject.clone() });
        }

        if let TimeMode::Live { max_age } = options.time {
            check_age(document.timestamp, now, max_age)?;
        }
        let debug_mode = is_debug_mode(&document);
        if debug_mode && !options.allow_debug {
            return Err(AttestationError::DebugMode);
        }

        tracing::debug!(module_id = %document.module_id, root = %root_info.subject, "attestation document verified");
        Ok(VerifiedDocument {
            chain_subjects: chain.iter().map(|info| info.subject.clone()).collect(),
            root_sha256: hex::encode(root.sha256),
            verified_at: at,
            debug_mode,
            document,
        })
    }

    /// Validates `certificate → cabundle[n-1] → … → cabundle[0]` at `at`,
    /// with `cabundle[0]` a trusted root, and returns the path root first.
    fn validate_path(
        &self,
        document: &AttestationDocument,
        at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(Vec<Arc<CertificateInfo>>, &TrustedRoot), AttestationError> {
        let Some(root_der) = document.cabundle.first() else {
            return Err(AttestationError::EmptyCabundle);
        };
        let root_sha256 = sha256(root_der);
        let Some(root) = self.roots.iter().find(|root| root.sha256 == root_sha256 && *root.der == **root_der) else {
            let subject = chain::subject_of(root_der).unwrap_or_else(|| "not a readable certificate".to_owned());
            return Err(AttestationError::UntrustedRoot { sha256: hex::encode(root_sha256), subject });
        };

        let ders: Vec<(CertificatePosition, &[u8])> = document
            .cabundle
            .iter()
            .enumerate()
            .map(|(index, der)| (CertificatePosition::Bundle(index), der.as_slice()))
            .chain(std::iter::once((CertificatePosition::Leaf, document.certificate.as_slice())))
            .collect();
        let ca_count = document.cabundle.len();
        let mut chain: Vec<Arc<CertificateInfo>> = Vec::with_capacity(ders.len());
        let mut issuer_sha256 = root_sha256;
        for (depth, (position, der)) in ders.into_iter().enumerate() {
            let own_sha256 = if depth == 0 { root_sha256 } else { sha256(der) };
            let info = match self.cache.get(&own_sha256, &issuer_sha256) {
                Some(info) => info,
                None => {
                    let issuer = match chain.last() {
                        Some(parent) => Issuer::Certificate(parent),
                        None => Issuer::SelfSigned,
                    };
                    let info = Arc::new(chain::inspect_certificate(position, der, issuer)?);
                    self.cache.insert(own_sha256, issuer_sha256, Arc::clone(&info), now);
                    info
                }
            };

            chain::check_validity(position, &info, at)?;
            if position == CertificatePosition::Leaf {
                chain::check_leaf(&info)?;
            } else {
                chain::check_ca(position, &info, ca_count - 1 - depth)?;
            }
            issuer_sha256 = own_sha256;
            chain.push(info);
        }
        Ok((chain, root))
    }
}

/// Checks a live document's age against `max_age`, allowing
/// [`ALLOWED_CLOCK_SKEW`] for a timestamp ahead of the clock.
fn check_age(timestamp: u64, now: OffsetDateTime, max_age: Duration) -> Result<(), AttestationError> {
    let now_millis = i128::from(now.unix_timestamp()) * 1000 + i128::from(now.millisecond());
    let age_millis = now_millis - i128::from(timestamp);
    if age_millis < 0 {
        let ahead = Duration::from_millis(u64::try_from(-age_millis).unwrap_or(u64::MAX));
        if ahead > ALLOWED_CLOCK_SKEW {
            return Err(AttestationError::DocumentFromFuture { timestamp, now, allowed_skew: ALLOWED_CLOCK_SKEW });
        }
        return Ok(());
    }
    let age = Duration::from_millis(u64::try_from(age_millis).unwrap_or(u64::MAX));
    if age > max_age {
        return Err(AttestationError::DocumentTooOld { timestamp, now, age, max_age });
    }
    Ok(())
}
