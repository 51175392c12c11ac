//! `CiphertextForRecipient`: a CMS (RFC 5652) `ContentInfo` holding an
//! `EnvelopedData` in BER, with one RSAES-OAEP-SHA-256 key transport
//! recipient and AES-256-CBC content.
//!
//! [`parse`] reads BER or DER (definite and indefinite lengths, encrypted
//! content primitive or in segments of any size, recipient identified by
//! subjectKeyIdentifier or issuerAndSerialNumber) and rejects every other
//! algorithm by name. [`decrypt`] then unwraps the 32-byte AES key with
//! RSA-OAEP and decrypts the content; every failure after parsing is the
//! single opaque [`CmsError::Decryption`]. [`build`] writes envelopes in the
//! layout of real KMS output for the local KMS.
//!
//! The reader is our own (see `ber`) rather than the `cms` crate, so that
//! each rejection can name the field, the offset and the algorithm found.

mod ber;
mod envelope;
pub mod oid;
mod recipient_key;

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey};
use zeroize::Zeroizing;

pub use ber::{MAX_DEPTH, Tag};
pub use envelope::{ContentEncryption, Envelope, KeyEncryption, KeyTransRecipient, RecipientIdentifier};
pub use oid::Oid;

/// The largest plaintext [`build`] envelopes and [`decrypt`] returns. KMS
/// results are smaller: a shared secret is at most 66 bytes, GenerateRandom
/// returns at most 1024, and the PKCS#8 private key of an RSA-4096 data key
/// pair is about 2.4 KB.
///
/// NOTE: a real KMS envelope with 4112 bytes of encrypted content exists
/// (`common/tests/vectors/cms-kms-ciphertext-for-recipient-4.ber`), so its
/// plaintext is 4096 to 4111 bytes long, and past 4096 `decrypt` rejects it.
pub const MAX_PLAINTEXT_LEN: usize = 4096;

/// The largest encrypted content [`parse`] accepts: a 4096-byte plaintext
/// plus a full block of PKCS#7 padding.
pub const MAX_ENCRYPTED_CONTENT_LEN: usize = MAX_PLAINTEXT_LEN + 16;

/// The RSA modulus sizes accepted for recipients, in bits.
pub const SUPPORTED_KEY_BITS: [usize; 3] = [2048, 3072, 4096];

/// The length of the AES-256 content-encryption key.
const CONTENT_KEY_LEN: usize = 32;

/// Errors from reading, decrypting or building an envelope.
///
/// Everything up to [`CmsError::KeyMismatch`] describes the envelope's
/// encoding or algorithms, which are public, and names what was found.
/// Everything that depends on the private key is [`CmsError::Decryption`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    /// The bytes are not valid BER. Usually a corrupted or truncated envelope.
    #[error("malformed BER in {field} at byte {offset}: {problem}")]
    Malformed { field: &'static str, offset: usize, problem: &'static str },
    /// An element's length runs past the end of the input or of its parent.
    #[error("truncated {field} at byte {offset}: the element needs {needed} bytes but {available} remain")]
    Truncated { field: &'static str, offset: usize, needed: usize, available: usize },
    /// A required field is absent.
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("unexpected {found} in {field} at byte {offset}; expected {expected}")]
    UnexpectedTag { field: &'static str, offset: usize, expected: Tag, found: Tag },
    /// A CHOICE contains none of the alternatives this reader accepts.
    #[error("unexpected {found} in {field} at byte {offset}; expected {expected}")]
    UnexpectedChoice { field: &'static str, offset: usize, expected: &'static str, found: Tag },
    #[error("{len} bytes of trailing data after {field} at byte {offset}; the envelope must end there")]
    TrailingData { field: &'static str, offset: usize, len: usize },
    /// The outer or the encrypted content type is not the one KMS uses.
    #[error("{field} is {found}; expected {expected}")]
    ContentType { field: &'static str, expected: &'static str, found: Oid },
    /// A version number that neither KMS nor OpenSSL writes for this layout.
    #[error("{field} is {found}; expected {expected}")]
    UnsupportedVersion { field: &'static str, found: u64, expected: &'static str },
    #[error("EnvelopedData.recipientInfos is empty; expected exactly one KeyTransRecipientInfo")]
    NoRecipients,
    #[error("EnvelopedData.recipientInfos has {count} recipients; expected exactly one, as KMS writes")]
    MultipleRecipients { count: usize },
    #[error("the recipient is a {found}; only KeyTransRecipientInfo (RSA key transport) is supported")]
    UnsupportedRecipientInfo { found: &'static str },
    /// An optional field that KMS never writes.
    #[error("{field} is present; KMS envelopes have none, so it is not supported")]
    UnsupportedField { field: &'static str },

    #[error(
        "key encryption algorithm is RSAES-PKCS1-v1_5 (rsaEncryption, 1.2.840.113549.1.1.1); \
         only RSAES-OAEP with SHA-256 is accepted"
    )]
    Pkcs1v15KeyEncryption,
    #[error("key encryption algorithm is {found}; only RSAES-OAEP (1.2.840.113549.1.1.7) with SHA-256 is accepted")]
    UnsupportedKeyEncryption { found: Oid },
    /// Absent RSAES-OAEP parameters mean SHA-1 for both the hash and MGF1.
    #[error("RSAES-OAEP parameters are absent, which means SHA-1; only SHA-256 with MGF1-SHA-256 is accepted")]
    OaepParametersAbsent,
    /// The OAEP hash; an omitted hashAlgorithm is the default SHA-1.
    #[error("RSAES-OAEP hash is {found}; only SHA-256 is accepted")]
    OaepHash { found: Oid },
    #[error("RSAES-OAEP mask generation function is {found}; only MGF1 (1.2.840.113549.1.1.8) is accepted")]
    OaepMaskGeneration { found: Oid },
    /// The MGF1 hash; an omitted maskGenAlgorithm is the default MGF1-SHA-1.
    #[error("RSAES-OAEP MGF1 hash is {found}; only SHA-256 is accepted")]
    OaepMaskGenerationHash { found: Oid },
    #[error("RSAES-OAEP label source is {found}; only id-pSpecified with an empty label is accepted")]
    OaepLabelSource { found: Oid },
    #[error("RSAES-OAEP label is {len} bytes; only the empty label is accepted")]
    OaepLabel { len: usize },
    #[error("content encryption algorithm is {found}; only AES-256-CBC (2.16.840.1.101.3.4.1.42) is accepted")]
    UnsupportedContentEncryption { found: Oid },
    #[error("AES-256-CBC IV is {found} bytes; expected 16")]
    IvLength { found: usize },
    #[error("encrypted content is {found} bytes; AES-CBC output is a non-zero multiple of 16 bytes")]
    ContentLength { found: usize },
    #[error("encrypted content is {found} bytes; the maximum is {max} bytes (a 4096-byte plaintext plus padding)")]
    ContentTooLarge { found: usize, max: usize },
    #[error("encrypted key is {found} bytes; expected 256, 384 or 512 bytes (an RSA-2048, -3072 or -4096 modulus)")]
    EncryptedKeyLength { found: usize },

    /// The caller's RSA key, or the recipient key given to [`build`], has a
    /// size this module does not accept.
    #[error("RSA key of {bits} bits is not supported; use a 2048, 3072 or 4096-bit key")]
    UnsupportedKeySize { bits: usize },
    /// The envelope was made for a key of another size than the one given.
    #[error(
        "encrypted key is {encrypted_key_len} bytes but the private key is RSA-{key_bits}; \
         the envelope was made for a different key"
    )]
    KeyMismatch { encrypted_key_len: usize, key_bits: usize },
    /// The recipient key given to [`build`] is not an RSA key.
    #[error("recipient public key algorithm is {found}; expected rsaEncryption (1.2.840.113549.1.1.1)")]
    RecipientKeyNotRsa { found: Oid },
    /// The recipient key given to [`build`] is not a usable DER
    /// SubjectPublicKeyInfo.
    #[error("invalid recipient public key: {reason}")]
    InvalidRecipientKey { reason: &'static str },
    #[error("plaintext is {len} bytes; the maximum is {max} bytes")]
    PlaintextTooLarge { len: usize, max: usize },
    /// The crypto library failed while building (not caused by the input).
    #[error("envelope encryption failed in the crypto library")]
    Encryption,
    /// One opaque error for every failure after parsing: wrong key, RSA-OAEP
    /// padding, AES-CBC padding, content key length, plaintext size.
    #[error("decryption failed")]
    Decryption,
}

/// Parses an envelope and checks every algorithm, without decrypting.
pub fn parse(ber: &[u8]) -> Result<Envelope, CmsError> {
    envelope::parse(ber)
}

/// Opens `ber` with the RSA private key and returns the plaintext.
///
/// Parsing errors name what was wrong; once parsing succeeds, every failure
/// is [`CmsError::Decryption`], and the log records only that decryption
/// failed.
pub fn decrypt(ber: &[u8], key: &PrivateDecryptingKey) -> Result<Zeroizing<Vec<u8>>, CmsError> {
    let envelope = parse(ber)?;
    envelope.decrypt(key)
}

/// Envelopes `plaintext` to the RSA public key `recipient_spki` (DER
/// SubjectPublicKeyInfo of a 2048, 3072 or 4096-bit key) in the layout real
/// KMS produces; see [`Envelope::to_ber`]. The recipient is identified by the
/// SHA-256 of `recipient_spki`.
pub fn build(plaintext: &[u8], recipient_spki: &[u8]) -> Result<Vec<u8>, CmsError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CmsError::PlaintextTooLarge { len: plaintext.len(), max: MAX_PLAINTEXT_LEN });
    }
    let public_key = recipient_key::parse(recipient_spki)?;

    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    aws_lc_rs::rand::fill(content_key.as_mut_slice()).map_err(|_| CmsError::Encryption)?;

    let oaep = OaepPublicEncryptingKey::new(public_key).map_err(|_| CmsError::Encryption)?;
    let mut encrypted_key = vec![0u8; oaep.ciphertext_size()];
    let encrypted_key_len = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, content_key.as_slice(), &mut encrypted_key, None)
        .map_err(|_| CmsError::Encryption)?
        .len();
    encrypted_key.truncate(encrypted_key_len);

    let cipher_key = UnboundCipherKey::new(&AES_256, content_key.as_slice()).map_err(|_| CmsError::Encryption)?;
    let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(cipher_key).map_err(|_| CmsError::Encryption)?;
    // Room for the padding up front, so that the plaintext copy is never
    // reallocated and left behind unzeroized.
    let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + 16));
    buffer.extend_from_slice(plaintext);
    let context = cipher.encrypt(&mut *buffer).map_err(|_| CmsError::Encryption)?;
    let iv: &[u8] = (&context).try_into().map_err(|_| CmsError::Encryption)?;
    let iv: [u8; 16] = iv.try_into().map_err(|_| CmsError::Encryption)?;

    let subject_key_identifier = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, recipient_spki);
    let envelope = Envelope {
        version: 2,
        recipient: KeyTransRecipient {
            version: 2,
            rid: RecipientIdentifier::SubjectKeyIdentifier(subject_key_identifier.as_ref().to_vec()),
            key_encryption: KeyEncryption::RsaesOaepSha256,
            encrypted_key,
        },
        content_encryption: ContentEncryption::Aes256Cbc { iv },
        encrypted_content: buffer.to_vec(),
    };
    Ok(envelope.to_ber())
}

impl Envelope {
    /// Decrypts the content with the RSA private key; see [`decrypt`].
    pub fn decrypt(&self, key: &PrivateDecryptingKey) -> Result<Zeroizing<Vec<u8>>, CmsError> {
        let key_bits = key.key_size_bits();
        if !SUPPORTED_KEY_BITS.contains(&key_bits) {
            return Err(CmsError::UnsupportedKeySize { bits: key_bits });
        }
        let encrypted_key = &self.recipient.encrypted_key;
        if encrypted_key.len() != key.key_size_bytes() {
            return Err(CmsError::KeyMismatch { encrypted_key_len: encrypted_key.len(), key_bits });
        }
        let ContentEncryption::Aes256Cbc { iv } = self.content_encryption;

        // As OpenSSL does, a failed RSA step continues with a random content
        // key, so that an RSA failure and a CBC padding failure take the same
        // path and end in the same error.
        let (content_key, unwrapped) = unwrap_content_key(key, encrypted_key);
        let plaintext = decrypt_content(&content_key, iv, &self.encrypted_content);

        match plaintext {
            Some(plaintext) if unwrapped && plaintext.len() <= MAX_PLAINTEXT_LEN => Ok(plaintext),
            _ => {
                tracing::debug!("envelope decryption failed");
                Err(CmsError::Decryption)
            }
        }
    }
}

/// Decrypts the content-encryption key. Returns a random key and `false`
/// when RSA-OAEP fails or yields anything but 32 bytes.
fn unwrap_content_key(key: &PrivateDecryptingKey, encrypted_key: &[u8]) -> (Zeroizing<[u8; CONTENT_KEY_LEN]>, bool) {
    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    let mut output = Zeroizing::new(vec![0u8; key.key_size_bytes()]);

    let unwrapped = OaepPrivateDecryptingKey::new(key.clone())
        .and_then(|oaep| oaep.decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut output, None).map(|key| key.len()));
    if let Ok(CONTENT_KEY_LEN) = unwrapped
        && let Some(bytes) = output.get(..CONTENT_KEY_LEN)
    {
        content_key.copy_from_slice(bytes);
        return (content_key, true);
    }

    // If even the random source fails, the all-zero key still leads to the
    // same opaque error, because `false` is returned.
    let _ = aws_lc_rs::rand::fill(content_key.as_mut_slice());
    (content_key, false)
}

/// AES-256-CBC decryption with PKCS#7 padding; `None` on any failure.
fn decrypt_content(content_key: &[u8; CONTENT_KEY_LEN], iv: [u8; 16], ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher_key = UnboundCipherKey::new(&AES_256, content_key).ok()?;
    let cipher = PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key).ok()?;
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let plaintext_len = cipher.decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv))).ok()?.len();
    buffer.truncate(plaintext_len);
    Some(buffer)
}

#[cfg(test)]
mod tests;
