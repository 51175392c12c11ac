//! `CiphertextForRecipient`: a CMS (RFC 5652) EnvelopedData in BER, with one
//! RSAES-OAEP-SHA-256 key transport recipient and AES-256-CBC content.
//!
//! INTERFACE STUB: the CMS work replaces these bodies.

use zeroize::Zeroizing;

/// Errors from reading, decrypting or building an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// One opaque error for every failure after parsing.
    #[error("decryption failed")]
    Decryption,
}

/// Opens `ber` with the RSA private key and returns the plaintext.
pub fn decrypt(_ber: &[u8], _key: &aws_lc_rs::rsa::PrivateDecryptingKey) -> Result<Zeroizing<Vec<u8>>, CmsError> {
    unimplemented!()
}

/// Envelopes `plaintext` to the RSA public key `recipient_spki` (DER
/// SubjectPublicKeyInfo) in the shape real KMS produces.
pub fn build(_plaintext: &[u8], _recipient_spki: &[u8]) -> Result<Vec<u8>, CmsError> {
    unimplemented!()
}
