//! The enclave's ephemeral RSA key pair, whose public half goes into the
//! attestation document and whose private half opens `CiphertextForRecipient`.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};

/// RSA modulus sizes KMS accepts for a Recipient key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RsaKeySize {
    #[default]
    #[value(name = "2048")]
    Rsa2048,
    #[value(name = "3072")]
    Rsa3072,
    #[value(name = "4096")]
    Rsa4096,
}

impl RsaKeySize {
    /// Returns the modulus size in bits.
    pub fn bits(self) -> usize {
        match self {
            RsaKeySize::Rsa2048 => 2048,
            RsaKeySize::Rsa3072 => 3072,
            RsaKeySize::Rsa4096 => 4096,
        }
    }

    fn aws_lc(self) -> KeySize {
        match self {
            RsaKeySize::Rsa2048 => KeySize::Rsa2048,
            RsaKeySize::Rsa3072 => KeySize::Rsa3072,
            RsaKeySize::Rsa4096 => KeySize::Rsa4096,
        }
    }
}

/// Errors making the key pair.
#[derive(Debug, thiserror::Error)]
#[error("RSA-{bits} key generation failed")]
pub struct KeyGenerationError {
    bits: usize,
}

/// An RSA key pair that lives only in this process. aws-lc frees the private
/// key with its clearing free, which overwrites the key material on drop.
/// The type has no `Clone` and its `Debug` shows only the size.
pub struct EphemeralKey {
    private_key: PrivateDecryptingKey,
    public_key_der: Vec<u8>,
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKey").field("bits", &self.private_key.key_size_bits()).finish_non_exhaustive()
    }
}

impl EphemeralKey {
    /// Generates a key pair. This takes tens to hundreds of milliseconds;
    /// async callers should run it on a blocking thread.
    pub fn generate(size: RsaKeySize) -> Result<Self, KeyGenerationError> {
        let error = || KeyGenerationError { bits: size.bits() };
        let private_key = PrivateDecryptingKey::generate(size.aws_lc()).map_err(|_| error())?;
        let public_key_der = private_key.public_key().as_der().map_err(|_| error())?.as_ref().to_vec();
        Ok(Self { private_key, public_key_der })
    }

    /// Returns the public key as DER SubjectPublicKeyInfo, the form the
    /// attestation document's `public_key` field carries.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// Returns the private key, for opening envelopes.
    pub fn private_key(&self) -> &PrivateDecryptingKey {
        &self.private_key
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn public_key_is_rsa_spki_of_requested_size() {
        let key = EphemeralKey::generate(RsaKeySize::Rsa2048).unwrap();
        let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(key.public_key_der()).unwrap();
        assert_eq!(public.key_size_bits(), 2048);
        // SEQUENCE { SEQUENCE { rsaEncryption OID ...
        assert_eq!(&key.public_key_der()[4..6], &[0x30, 0x0d]);
    }

    #[test]
    fn debug_hides_key_material() {
        let key = EphemeralKey::generate(RsaKeySize::Rsa2048).unwrap();
        assert_eq!(format!("{key:?}"), "EphemeralKey { bits: 2048, .. }");
    }
}
