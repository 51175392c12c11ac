//! The recipient's RSA public key for [`build`](super::build): a DER
//! SubjectPublicKeyInfo, checked for algorithm and modulus size before it
//! reaches aws-lc-rs, so that a rejection names what was wrong.

use aws_lc_rs::rsa::PublicEncryptingKey;

use super::ber::{Reader, Tag};
use super::oid::{self, Oid};
use super::{CmsError, SUPPORTED_KEY_BITS};

/// Parses `spki` and returns the key if it is RSA with a supported modulus.
///
/// ```text
/// SubjectPublicKeyInfo ::= SEQUENCE {
///   algorithm         AlgorithmIdentifier,   -- rsaEncryption, NULL
///   subjectPublicKey  BIT STRING }           -- RSAPublicKey
/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
/// ```
pub(crate) fn parse(spki: &[u8]) -> Result<PublicEncryptingKey, CmsError> {
    if spki.starts_with(b"-----BEGIN") {
        return Err(CmsError::InvalidRecipientKey {
            reason: "the key is PEM text; pass the DER bytes of the SubjectPublicKeyInfo",
        });
    }

    let mut top = Reader::new(spki);
    let info = top.read(Tag::SEQUENCE, "SubjectPublicKeyInfo")?;
    top.finish("SubjectPublicKeyInfo")?;
    let mut fields = info.children();
    let algorithm = fields.read(Tag::SEQUENCE, "SubjectPublicKeyInfo.algorithm")?;
    let public_key = fields.read(Tag::BIT_STRING, "SubjectPublicKeyInfo.subjectPublicKey")?;
    fields.finish("SubjectPublicKeyInfo")?;

    let mut algorithm = algorithm.children();
    let algorithm_oid = algorithm.read(Tag::OID, "SubjectPublicKeyInfo.algorithm")?;
    let algorithm_oid = algorithm_oid.oid("SubjectPublicKeyInfo.algorithm")?;
    if algorithm_oid != oid::RSA_ENCRYPTION {
        return Err(CmsError::RecipientKeyNotRsa { found: Oid::new(algorithm_oid) });
    }
    if let Some(null) = algorithm.read_optional(Tag::NULL, "SubjectPublicKeyInfo.algorithm.parameters")? {
        null.null("SubjectPublicKeyInfo.algorithm.parameters")?;
    }
    algorithm.finish("SubjectPublicKeyInfo.algorithm")?;

    let Some((&unused_bits, rsa_public_key)) = public_key.content.split_first() else {
        return Err(CmsError::InvalidRecipientKey { reason: "the subjectPublicKey BIT STRING is empty" });
    };
    if unused_bits != 0 {
        return Err(CmsError::InvalidRecipientKey { reason: "the subjectPublicKey BIT STRING has unused bits" });
    }
    let mut top = Reader::new(rsa_public_key);
    let rsa_public_key = top.read(Tag::SEQUENCE, "RSAPublicKey")?;
    top.finish("RSAPublicKey")?;
    let mut fields = rsa_public_key.children();
    let modulus = fields.read(Tag::INTEGER, "RSAPublicKey.modulus")?;
    fields.read(Tag::INTEGER, "RSAPublicKey.publicExponent")?;
    fields.finish("RSAPublicKey")?;

    let bits = modulus_bits(modulus.content)?;
    if !SUPPORTED_KEY_BITS.contains(&bits) {
        return Err(CmsError::UnsupportedKeySize { bits });
    }

    PublicEncryptingKey::from_der(spki).map_err(|_| CmsError::InvalidRecipientKey {
        reason: "aws-lc-rs rejected the RSA public key (check the public exponent)",
    })
}

/// Counts the significant bits of a positive INTEGER given as its content
/// octets.
fn modulus_bits(content: &[u8]) -> Result<usize, CmsError> {
    if content.first().is_some_and(|&byte| byte & 0x80 != 0) {
        return Err(CmsError::InvalidRecipientKey { reason: "the RSA modulus is negative" });
    }
    let skip = content.iter().take_while(|&&byte| byte == 0).count();
    let significant = content.get(skip..).unwrap_or_default();
    let Some(&first) = significant.first() else {
        return Err(CmsError::InvalidRecipientKey { reason: "the RSA modulus is zero" });
    };
    Ok(significant.len() * 8 - first.leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_counts_significant_bits() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]).unwrap_or_default(), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]).unwrap_or_default(), 9);
        assert!(modulus_bits(&[0x80]).is_err());
        assert!(modulus_bits(&[0x00]).is_err());
    }
}
