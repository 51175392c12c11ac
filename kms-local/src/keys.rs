//! Key specs, key material and the cryptography of each key type: ECDH for
//! key-agreement keys, AES-256-GCM for symmetric keys, RSAES-OAEP for RSA
//! keys, and data key pairs.
//!
//! Private key material is PKCS#8 DER (RSA and ECC) or 32 random bytes
//! (symmetric), held in [`Zeroizing`] buffers.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{self, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine;
use der::Decode;
use der::asn1::ObjectIdentifier;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{ErrorKind, KmsError, KmsResult};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Generates a KMS-style wire enum: a Rust enum with `as_str`, `parse` (which
/// names the accepted values on failure) and serde as the wire string.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }

            /// Parses the wire name; the error is a ValidationException that
            /// lists the accepted values.
            pub fn parse(text: &str) -> KmsResult<Self> {
                match text {
                    $($wire => Ok(Self::$variant),)+
                    other => Err(KmsError::validation(format!(
                        "1 validation error detected: value {other:?} at '{}' failed to satisfy constraint: member must satisfy enum value set: [{}]",
                        $field,
                        [$($wire),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// The key specs kms-local can create (`KeySpec` of CreateKey).
    KeySpec, "keySpec" {
        SymmetricDefault => "SYMMETRIC_DEFAULT",
        Rsa2048 => "RSA_2048",
        Rsa3072 => "RSA_3072",
        Rsa4096 => "RSA_4096",
        EccNistP256 => "ECC_NIST_P256",
        EccNistP384 => "ECC_NIST_P384",
        EccNistP521 => "ECC_NIST_P521",
    }
);

wire_enum!(
    /// The key usages kms-local supports (`KeyUsage` of CreateKey).
    KeyUsage, "keyUsage" {
        EncryptDecrypt => "ENCRYPT_DECRYPT",
        KeyAgreement => "KEY_AGREEMENT",
    }
);

wire_enum!(
    /// The lifecycle state of a key.
    KeyState, "keyState" {
        Enabled => "Enabled",
        Disabled => "Disabled",
        PendingDeletion => "PendingDeletion",
    }
);

wire_enum!(
    /// `EncryptionAlgorithm` of Encrypt and Decrypt.
    EncryptionAlgorithm, "encryptionAlgorithm" {
        SymmetricDefault => "SYMMETRIC_DEFAULT",
        RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
    }
);

wire_enum!(
    /// `KeyPairSpec` of GenerateDataKeyPair.
    DataKeyPairSpec, "keyPairSpec" {
        Rsa2048 => "RSA_2048",
        Rsa3072 => "RSA_3072",
        Rsa4096 => "RSA_4096",
        EccNistP256 => "ECC_NIST_P256",
        EccNistP384 => "ECC_NIST_P384",
        EccNistP521 => "ECC_NIST_P521",
        EccSecgP256k1 => "ECC_SECG_P256K1",
    }
);

impl KeySpec {
    /// Returns whether `usage` is valid for this spec in AWS KMS and implemented here.
    pub fn allows_usage(self, usage: KeyUsage) -> bool {
        match self {
            Self::SymmetricDefault | Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => usage == KeyUsage::EncryptDecrypt,
            Self::EccNistP256 | Self::EccNistP384 | Self::EccNistP521 => usage == KeyUsage::KeyAgreement,
        }
    }

    pub fn is_asymmetric(self) -> bool {
        self != Self::SymmetricDefault
    }

    /// Returns the encryption algorithms of an ENCRYPT_DECRYPT key of this spec.
    pub fn encryption_algorithms(self) -> &'static [EncryptionAlgorithm] {
        match self {
            Self::SymmetricDefault => &[EncryptionAlgorithm::SymmetricDefault],
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => {
                &[EncryptionAlgorithm::RsaesOaepSha1, EncryptionAlgorithm::RsaesOaepSha256]
            }
            Self::EccNistP256 | Self::EccNistP384 | Self::EccNistP521 => &[],
        }
    }

    fn ecdh_algorithm(self) -> Option<(&'static agreement::Algorithm, ObjectIdentifier, &'static str)> {
        match self {
            Self::EccNistP256 => Some((&agreement::ECDH_P256, SECP256R1, "P-256")),
            Self::EccNistP384 => Some((&agreement::ECDH_P384, SECP384R1, "P-384")),
            Self::EccNistP521 => Some((&agreement::ECDH_P521, SECP521R1, "P-521")),
            _ => None,
        }
    }

    fn rsa_size(self) -> Option<KeySize> {
        match self {
            Self::Rsa2048 => Some(KeySize::Rsa2048),
            Self::Rsa3072 => Some(KeySize::Rsa3072),
            Self::Rsa4096 => Some(KeySize::Rsa4096),
            _ => None,
        }
    }
}

/// Private key material: PKCS#8 DER for RSA and ECC keys, 32 bytes for
/// symmetric keys. Zeroized on drop; `Debug` shows only the length.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({} bytes)", self.0.len())
    }
}

impl KeyMaterial {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Generates new material for a key of `spec`.
    pub fn generate(spec: KeySpec) -> KmsResult<Self> {
        if spec == KeySpec::SymmetricDefault {
            let mut bytes = Zeroizing::new(vec![0_u8; 32]);
            SystemRandom::new().fill(&mut bytes).map_err(|_| KmsError::internal("random number generator failed"))?;
            return Ok(Self(bytes));
        }
        if let Some(size) = spec.rsa_size() {
            let key = PrivateDecryptingKey::generate(size)
                .map_err(|_| KmsError::internal(format!("{spec} key generation failed")))?;
            return pkcs8_bytes(AsDer::<Pkcs8V1Der>::as_der(&key)).map(Self);
        }
        let (algorithm, _, _) = ecdh_parameters(spec)?;
        let key = agreement::PrivateKey::generate(algorithm)
            .map_err(|_| KmsError::internal(format!("{spec} key generation failed")))?;
        pkcs8_bytes(AsDer::<Pkcs8V1Der>::as_der(&key)).map(Self)
    }

    /// Returns the DER SubjectPublicKeyInfo of an asymmetric key.
    pub fn public_key(&self, spec: KeySpec) -> KmsResult<Vec<u8>> {
        let der = if spec.rsa_size().is_some() {
            self.rsa_key(spec)?.public_key().as_der().map(|der| der.as_ref().to_vec())
        } else {
            self.agreement_key(spec)?
                .compute_public_key()
                .and_then(|public| AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(&public))
                .map(|der| der.as_ref().to_vec())
        };
        der.map_err(|_| KmsError::internal(format!("cannot encode the public key of a {spec} key")))
    }

    /// Computes the ECDH shared secret with the peer's public key; see
    /// [`derive_shared_secret`].
    pub fn derive_shared_secret(&self, spec: KeySpec, peer_spki: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
        derive_shared_secret(&self.agreement_key(spec)?, spec, peer_spki)
    }

    /// Encrypts with RSAES-OAEP; `plaintext` must fit the key and algorithm.
    pub fn rsa_encrypt(&self, spec: KeySpec, algorithm: EncryptionAlgorithm, plaintext: &[u8]) -> KmsResult<Vec<u8>> {
        let oaep = oaep_algorithm(algorithm)?;
        let public = OaepPublicEncryptingKey::new(self.rsa_key(spec)?.public_key())
            .map_err(|_| KmsError::internal("cannot load the RSA public key"))?;
        let max = public.max_plaintext_size(oaep);
        if plaintext.len() > max {
            return Err(KmsError::validation(format!(
                "Plaintext of {} bytes is too long for {algorithm} with a {spec} key; the maximum is {max} bytes",
                plaintext.len()
            )));
        }
        let mut ciphertext = vec![0_u8; public.ciphertext_size()];
        let written = public
            .encrypt(oaep, plaintext, &mut ciphertext, None)
            .map_err(|_| KmsError::internal("RSA encryption failed"))?
            .len();
        ciphertext.truncate(written);
        Ok(ciphertext)
    }

    /// Decrypts RSAES-OAEP ciphertext. Every failure is the same
    /// InvalidCiphertextException.
    pub fn rsa_decrypt(
        &self,
        spec: KeySpec,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> KmsResult<Zeroizing<Vec<u8>>> {
        let oaep = oaep_algorithm(algorithm)?;
        let private = OaepPrivateDecryptingKey::new(self.rsa_key(spec)?)
            .map_err(|_| KmsError::internal("cannot load the RSA private key"))?;
        let mut plaintext = Zeroizing::new(vec![0_u8; private.min_output_size()]);
        let written = private.decrypt(oaep, ciphertext, &mut plaintext, None).map_err(|_| invalid_ciphertext())?.len();
        plaintext.truncate(written);
        Ok(plaintext)
    }

    /// Encrypts with AES-256-GCM under a symmetric key; `aad` binds the
    /// ciphertext to its key id and encryption context.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> KmsResult<(Vec<u8>, [u8; 12])> {
        let key = self.aes_key()?;
        let mut nonce = [0_u8; 12];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KmsError::internal("random number generator failed"))?;
        let mut in_out = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .map_err(|_| KmsError::internal("AES-GCM encryption failed"))?;
        Ok((in_out, nonce))
    }

    /// Decrypts AES-256-GCM ciphertext (with its tag). A wrong key, nonce,
    /// `aad` or a modified ciphertext all give the same
    /// InvalidCiphertextException.
    pub fn open(&self, aad: &[u8], nonce: [u8; 12], ciphertext: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
        let key = self.aes_key()?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let length = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .map_err(|_| invalid_ciphertext())?
            .len();
        in_out.truncate(length);
        Ok(in_out)
    }

    fn aes_key(&self) -> KmsResult<LessSafeKey> {
        UnboundKey::new(&aead::AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| KmsError::internal("stored symmetric key material is not 32 bytes"))
    }

    fn rsa_key(&self, spec: KeySpec) -> KmsResult<PrivateDecryptingKey> {
        PrivateDecryptingKey::from_pkcs8(&self.0)
            .map_err(|_| KmsError::internal(format!("stored key material is not a {spec} PKCS#8 key")))
    }

    /// Parses the material of an ECC key as its key-agreement private key.
    pub fn agreement_key(&self, spec: KeySpec) -> KmsResult<agreement::PrivateKey> {
        let (algorithm, _, _) = ecdh_parameters(spec)?;
        agreement::PrivateKey::from_private_key_der(algorithm, &self.0)
            .map_err(|_| KmsError::internal(format!("stored key material is not a {spec} PKCS#8 key")))
    }
}

/// Computes the ECDH shared secret of `private`, a key of `spec`, with the
/// peer's public key, which must be a DER SubjectPublicKeyInfo on the key's
/// curve. The result is the raw x-coordinate, with no KDF applied.
pub fn derive_shared_secret(
    private: &agreement::PrivateKey,
    spec: KeySpec,
    peer_spki: &[u8],
) -> KmsResult<Zeroizing<Vec<u8>>> {
    let (algorithm, curve, curve_name) = ecdh_parameters(spec)?;
    let point = parse_peer_public_key(peer_spki, curve, curve_name)?;
    let peer = agreement::UnparsedPublicKey::new(algorithm, point);
    agreement::agree(
        private,
        peer,
        KmsError::validation(format!(
            "PublicKey is not a valid point on {curve_name}; pass the peer's {curve_name} public key"
        )),
        |secret| Ok(Zeroizing::new(secret.to_vec())),
    )
}

/// A new data key pair: the private key as PKCS#8 DER and the public key as
/// DER SubjectPublicKeyInfo.
pub struct DataKeyPair {
    pub private_pkcs8: Zeroizing<Vec<u8>>,
    pub public_spki: Vec<u8>,
}

impl fmt::Debug for DataKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyPair").field("public_spki_len", &self.public_spki.len()).finish()
    }
}

/// Generates a data key pair of `spec`.
pub fn generate_data_key_pair(spec: DataKeyPairSpec) -> KmsResult<DataKeyPair> {
    let failed = || KmsError::internal(format!("{spec} key pair generation failed"));
    let rsa_size = match spec {
        DataKeyPairSpec::Rsa2048 => Some(KeySize::Rsa2048),
        DataKeyPairSpec::Rsa3072 => Some(KeySize::Rsa3072),
        DataKeyPairSpec::Rsa4096 => Some(KeySize::Rsa4096),
        _ => None,
    };
    if let Some(size) = rsa_size {
        let key = PrivateDecryptingKey::generate(size).map_err(|_| failed())?;
        let private_pkcs8 = pkcs8_bytes(AsDer::<Pkcs8V1Der>::as_der(&key))?;
        let public_spki = key.public_key().as_der().map_err(|_| failed())?.as_ref().to_vec();
        return Ok(DataKeyPair { private_pkcs8, public_spki });
    }

    let algorithm = match spec {
        DataKeyPairSpec::EccNistP256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        DataKeyPairSpec::EccNistP384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        DataKeyPairSpec::EccNistP521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
    };
    let key = EcdsaKeyPair::generate(algorithm).map_err(|_| failed())?;
    let document = key.to_pkcs8v1().map_err(|_| failed())?;
    let private_pkcs8 = Zeroizing::new(document.as_ref().to_vec());
    let public_spki = key.public_key().as_der().map_err(|_| failed())?.as_ref().to_vec();
    Ok(DataKeyPair { private_pkcs8, public_spki })
}

/// Fills a buffer with random bytes (GenerateRandom, data keys).
pub fn random_bytes(length: usize) -> KmsResult<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0_u8; length]);
    SystemRandom::new().fill(&mut bytes).map_err(|_| KmsError::internal("random number generator failed"))?;
    Ok(bytes)
}

/// Checks that `spki` is the DER SubjectPublicKeyInfo of an RSA key of 2048,
/// 3072 or 4096 bits, the sizes a `Recipient` may use, and returns the size.
pub fn check_recipient_rsa_key(spki: &[u8]) -> Result<usize, String> {
    let parsed = spki::SubjectPublicKeyInfoRef::from_der(spki)
        .map_err(|error| format!("public_key is not a DER SubjectPublicKeyInfo: {error}"))?;
    if parsed.algorithm.oid != RSA_ENCRYPTION {
        return Err(format!(
            "public_key has algorithm {}; expected rsaEncryption ({RSA_ENCRYPTION})",
            parsed.algorithm.oid
        ));
    }
    let key = rsa::PublicEncryptingKey::from_der(spki)
        .map_err(|error| format!("public_key is not a usable RSA key: {error}"))?;
    match key.key_size_bits() {
        bits @ (2048 | 3072 | 4096) => Ok(bits),
        bits => Err(format!("public_key is a {bits}-bit RSA key; expected 2048, 3072 or 4096 bits")),
    }
}

fn invalid_ciphertext() -> KmsError {
    KmsError::new(
        ErrorKind::InvalidCiphertext,
        "the ciphertext is invalid, was modified, or belongs to another key or encryption context",
    )
}

fn pkcs8_bytes(der: Result<Pkcs8V1Der<'static>, aws_lc_rs::error::Unspecified>) -> KmsResult<Zeroizing<Vec<u8>>> {
    der.map(|der| Zeroizing::new(der.as_ref().to_vec()))
        .map_err(|_| KmsError::internal("cannot encode the private key as PKCS#8"))
}

fn ecdh_parameters(spec: KeySpec) -> KmsResult<(&'static agreement::Algorithm, ObjectIdentifier, &'static str)> {
    spec.ecdh_algorithm().ok_or_else(|| {
        KmsError::new(ErrorKind::InvalidKeyUsage, format!("a {spec} key cannot be used for key agreement"))
    })
}

fn oaep_algorithm(algorithm: EncryptionAlgorithm) -> KmsResult<&'static rsa::OaepAlgorithm> {
    match algorithm {
        EncryptionAlgorithm::RsaesOaepSha1 => Ok(&rsa::OAEP_SHA1_MGF1SHA1),
        EncryptionAlgorithm::RsaesOaepSha256 => Ok(&rsa::OAEP_SHA256_MGF1SHA256),
        EncryptionAlgorithm::SymmetricDefault => Err(KmsError::new(
            ErrorKind::InvalidKeyUsage,
            "SYMMETRIC_DEFAULT is not an encryption algorithm of RSA keys; use RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256",
        )),
    }
}

/// Parses the peer public key of DeriveSharedSecret and returns its EC point.
/// The errors recognise the usual mistakes: PEM text, base64 text (the AWS CLI
/// version 1 encodes an inline blob argument a second time), another curve.
fn parse_peer_public_key<'a>(bytes: &'a [u8], curve: ObjectIdentifier, curve_name: &str) -> KmsResult<&'a [u8]> {
    let Ok(parsed) = spki::SubjectPublicKeyInfoRef::from_der(bytes) else {
        return Err(KmsError::validation(describe_non_der_public_key(bytes, curve_name)));
    };
    if parsed.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(KmsError::validation(format!(
            "PublicKey has algorithm {}; expected an elliptic curve key (id-ecPublicKey) on {curve_name}",
            describe_oid(parsed.algorithm.oid)
        )));
    }
    let found_curve =
        parsed.algorithm.parameters.and_then(|parameters| parameters.decode_as::<ObjectIdentifier>().ok());
    let Some(found_curve) = found_curve else {
        return Err(KmsError::validation(format!(
            "PublicKey has no named curve in its algorithm parameters; expected {curve_name}"
        )));
    };
    if found_curve != curve {
        return Err(KmsError::validation(format!(
            "PublicKey is on curve {}, but the KMS key is on {curve_name}; pass a {curve_name} public key",
            describe_oid(found_curve)
        )));
    }
    parsed.subject_public_key.as_bytes().ok_or_else(|| {
        KmsError::validation("PublicKey has a subjectPublicKey bit string with unused bits; it is not an EC point")
    })
}

fn describe_oid(oid: ObjectIdentifier) -> String {
    let name = match oid {
        SECP256R1 => "P-256",
        SECP384R1 => "P-384",
        SECP521R1 => "P-521",
        SECP256K1 => "secp256k1",
        RSA_ENCRYPTION => "rsaEncryption",
        ID_EC_PUBLIC_KEY => "id-ecPublicKey",
        _ => return oid.to_string(),
    };
    format!("{name} ({oid})")
}

fn describe_non_der_public_key(bytes: &[u8], curve_name: &str) -> String {
    if bytes.starts_with(b"-----BEGIN") {
        return format!(
            "PublicKey is PEM text, not DER; convert it with `openssl pkey -pubin -outform DER` and pass the {curve_name} key as binary (fileb:// in the AWS CLI)"
        );
    }
    let text: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let looks_base64 =
        !text.is_empty() && text.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&text)
        && spki::SubjectPublicKeyInfoRef::from_der(&decoded).is_ok()
    {
        return "PublicKey is base64 text, not DER; the AWS CLI version 1 base64-encodes an inline blob again, so pass the DER file with fileb://".to_owned();
    }
    format!(
        "PublicKey ({} bytes) is not a DER-encoded SubjectPublicKeyInfo; pass the peer's {curve_name} public key in DER",
        bytes.len()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    fn peer(algorithm: &'static agreement::Algorithm) -> (agreement::PrivateKey, Vec<u8>) {
        let private = agreement::PrivateKey::generate(algorithm).unwrap();
        let public = private.compute_public_key().unwrap();
        let der = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(&public).unwrap();
        (private, der.as_ref().to_vec())
    }

    #[test]
    fn ecdh_matches_on_both_sides_for_each_curve() {
        for (spec, algorithm, length) in [
            (KeySpec::EccNistP256, &agreement::ECDH_P256, 32),
            (KeySpec::EccNistP384, &agreement::ECDH_P384, 48),
            (KeySpec::EccNistP521, &agreement::ECDH_P521, 66),
        ] {
            let material = KeyMaterial::generate(spec).unwrap();
            let (peer_private, peer_spki) = peer(algorithm);
            let secret = material.derive_shared_secret(spec, &peer_spki).unwrap();
            assert_eq!(secret.len(), length, "{spec}");

            let kms_spki = material.public_key(spec).unwrap();
            let kms_point = parse_peer_public_key(&kms_spki, spec.ecdh_algorithm().unwrap().1, "").unwrap();
            let expected =
                agreement::agree(&peer_private, agreement::UnparsedPublicKey::new(algorithm, kms_point), (), |z| {
                    Ok(z.to_vec())
                })
                .unwrap();
            assert_eq!(secret.as_slice(), expected.as_slice(), "{spec}");
        }
    }

    #[test]
    fn wrong_curve_peer_is_validation_error() {
        let material = KeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let (_, p384) = peer(&agreement::ECDH_P384);
        let error = material.derive_shared_secret(KeySpec::EccNistP256, &p384).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Validation);
        assert!(error.message.contains("P-384 (1.3.132.0.34)"), "{}", error.message);
        assert!(error.message.contains("KMS key is on P-256"), "{}", error.message);
    }

    #[test]
    fn peer_key_mistakes_are_named() {
        let material = KeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let (_, spki) = peer(&agreement::ECDH_P256);
        let base64_text = base64::engine::general_purpose::STANDARD.encode(&spki);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{base64_text}\n-----END PUBLIC KEY-----\n");
        let mut off_curve = spki.clone();
        let last = off_curve.len() - 1;
        off_curve[last] ^= 1;

        let cases: [(&[u8], &str); 4] = [
            (base64_text.as_bytes(), "base64 text, not DER"),
            (pem.as_bytes(), "PEM text, not DER"),
            (b"\x01\x02", "not a DER-encoded SubjectPublicKeyInfo"),
            (&off_curve, "not a valid point on P-256"),
        ];
        for (bytes, expected) in cases {
            let error = material.derive_shared_secret(KeySpec::EccNistP256, bytes).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Validation, "{expected}");
            assert!(error.message.contains(expected), "{:?} lacks {expected:?}", error.message);
        }
    }

    #[test]
    fn rsa_public_key_as_peer_is_named() {
        let material = KeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let rsa = KeyMaterial::generate(KeySpec::Rsa2048).unwrap().public_key(KeySpec::Rsa2048).unwrap();
        let error = material.derive_shared_secret(KeySpec::EccNistP256, &rsa).unwrap_err();
        assert!(error.message.contains("rsaEncryption"), "{}", error.message);
    }

    #[test]
    fn aes_gcm_round_trip_and_tamper() {
        let material = KeyMaterial::generate(KeySpec::SymmetricDefault).unwrap();
        let (ciphertext, nonce) = material.seal(b"aad", b"hello").unwrap();
        assert_eq!(material.open(b"aad", nonce, &ciphertext).unwrap().as_slice(), b"hello");
        assert_eq!(material.open(b"other", nonce, &ciphertext).unwrap_err().kind, ErrorKind::InvalidCiphertext);
        let mut modified = ciphertext.clone();
        modified[0] ^= 1;
        assert_eq!(material.open(b"aad", nonce, &modified).unwrap_err().kind, ErrorKind::InvalidCiphertext);
    }

    #[test]
    fn rsa_oaep_round_trip_and_limit() {
        let material = KeyMaterial::generate(KeySpec::Rsa2048).unwrap();
        for algorithm in [EncryptionAlgorithm::RsaesOaepSha1, EncryptionAlgorithm::RsaesOaepSha256] {
            let ciphertext = material.rsa_encrypt(KeySpec::Rsa2048, algorithm, b"secret").unwrap();
            assert_eq!(ciphertext.len(), 256);
            let plaintext = material.rsa_decrypt(KeySpec::Rsa2048, algorithm, &ciphertext).unwrap();
            assert_eq!(plaintext.as_slice(), b"secret");
        }
        // RSA-2048 with OAEP-SHA-256: 256 - 2 * 32 - 2 = 190 bytes at most.
        assert!(material.rsa_encrypt(KeySpec::Rsa2048, EncryptionAlgorithm::RsaesOaepSha256, &[0; 190]).is_ok());
        let error =
            material.rsa_encrypt(KeySpec::Rsa2048, EncryptionAlgorithm::RsaesOaepSha256, &[0; 191]).unwrap_err();
        assert!(error.message.contains("maximum is 190 bytes"), "{}", error.message);
    }

    #[test]
    fn recipient_key_sizes() {
        let rsa2048 = KeyMaterial::generate(KeySpec::Rsa2048).unwrap().public_key(KeySpec::Rsa2048).unwrap();
        assert_eq!(check_recipient_rsa_key(&rsa2048), Ok(2048));
        let (_, ec) = peer(&agreement::ECDH_P256);
        assert!(check_recipient_rsa_key(&ec).unwrap_err().contains("expected rsaEncryption"));
        assert!(check_recipient_rsa_key(b"junk").unwrap_err().contains("not a DER SubjectPublicKeyInfo"));
    }

    #[test]
    fn data_key_pairs_have_matching_halves() {
        for spec in [DataKeyPairSpec::EccNistP384, DataKeyPairSpec::EccSecgP256k1, DataKeyPairSpec::Rsa2048] {
            let pair = generate_data_key_pair(spec).unwrap();
            let parsed = spki::SubjectPublicKeyInfoRef::from_der(&pair.public_spki).unwrap();
            assert!(parsed.algorithm.oid == ID_EC_PUBLIC_KEY || parsed.algorithm.oid == RSA_ENCRYPTION);
            assert!(pair.private_pkcs8.len() > 32, "{spec}");
        }
    }

    #[test]
    fn enum_parse_lists_accepted_values() {
        assert_eq!(KeySpec::parse("ECC_NIST_P384").unwrap(), KeySpec::EccNistP384);
        let error = KeySpec::parse("ECC_NIST_P999").unwrap_err();
        assert_eq!(error.kind, ErrorKind::Validation);
        assert!(error.message.contains("\"ECC_NIST_P999\" at 'keySpec'"), "{}", error.message);
        assert!(error.message.contains("ECC_NIST_P521"), "{}", error.message);
    }
}
