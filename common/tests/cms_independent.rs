//! Checks `recipient_common::cms` against independent implementations: the
//! `rsa` crate for RSA-OAEP (envelopes made by one RSA implementation open
//! with the other) and the RustCrypto `cms` crate as a second BER parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use der::{Decode, Encode};
use recipient_common::cms::{self, ContentEncryption, Envelope, KeyEncryption, KeyTransRecipient, RecipientIdentifier};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;

fn aws_lc_key() -> PrivateDecryptingKey {
    PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap()
}

fn spki(key: &PrivateDecryptingKey) -> Vec<u8> {
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

fn iv_of(envelope: &Envelope) -> [u8; 16] {
    match envelope.content_encryption {
        ContentEncryption::Aes256Cbc { iv } => iv,
        _ => panic!("unexpected content encryption {:?}", envelope.content_encryption),
    }
}

#[test]
fn rsa_crate_oaep_envelope_opens_with_aws_lc() {
    let key = aws_lc_key();
    let rsa_public = rsa::PublicKey::from_public_key_der(&spki(&key)).unwrap();

    let content_key = [0x5au8; 32];
    let encrypted_key = rsa_public.oaep_encrypt::<Sha256>(&content_key).unwrap();
    let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &content_key).unwrap()).unwrap();
    let mut encrypted_content = b"opened across RSA implementations".to_vec();
    let context = cipher.encrypt(&mut encrypted_content).unwrap();
    let iv: [u8; 16] = <&[u8]>::try_from(&context).unwrap().try_into().unwrap();

    let envelope = Envelope {
        version: 2,
        recipient: KeyTransRecipient {
            version: 2,
            rid: RecipientIdentifier::SubjectKeyIdentifier(vec![1; 32]),
            key_encryption: KeyEncryption::RsaesOaepSha256,
            encrypted_key,
        },
        content_encryption: ContentEncryption::Aes256Cbc { iv },
        encrypted_content,
    };
    let plaintext = cms::decrypt(&envelope.to_ber(), &key).unwrap();
    assert_eq!(plaintext.as_slice(), b"opened across RSA implementations");
}

#[test]
fn aws_lc_envelope_opens_with_rsa_crate() {
    let key = aws_lc_key();
    let rsa_private = rsa::PrivateKey::from_pkcs8_der(key.as_der().unwrap().as_ref()).unwrap();

    let envelope = cms::parse(&cms::build(b"built with aws-lc-rs", &spki(&key)).unwrap()).unwrap();
    let content_key = rsa_private.oaep_decrypt::<Sha256>(&envelope.recipient.encrypted_key).unwrap();
    assert_eq!(content_key.len(), 32);

    let cipher = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &content_key).unwrap()).unwrap();
    let mut buffer = envelope.encrypted_content.clone();
    let context = DecryptionContext::Iv128(FixedLength::from(iv_of(&envelope)));
    assert_eq!(cipher.decrypt(&mut buffer, context).unwrap(), b"built with aws-lc-rs");
}

/// The fields the RustCrypto `cms` crate reads from an envelope.
struct CmsCrateView {
    key_algorithm: Vec<u8>,
    encrypted_key: Vec<u8>,
    content_algorithm: Vec<u8>,
    encrypted_content: Vec<u8>,
}

/// Parses `ber` with the RustCrypto `cms` crate.
fn parse_with_cms_crate(ber: &[u8]) -> CmsCrateView {
    let content_info = ::cms::content_info::ContentInfo::from_ber(ber).unwrap();
    assert_eq!(content_info.content_type.as_bytes(), cms::oid::ENVELOPED_DATA);
    let inner = content_info.content.to_der().unwrap();
    let data = ::cms::enveloped_data::EnvelopedData::from_ber(&inner).unwrap();
    let recipients: Vec<_> = data.recip_infos.0.iter().collect();
    assert_eq!(recipients.len(), 1);
    let ::cms::enveloped_data::RecipientInfo::Ktri(ktri) = recipients[0] else {
        panic!("recipient is not a KeyTransRecipientInfo");
    };
    CmsCrateView {
        key_algorithm: ktri.key_enc_alg.to_der().unwrap(),
        encrypted_key: ktri.enc_key.as_bytes().to_vec(),
        content_algorithm: data.encrypted_content.content_enc_alg.oid.as_bytes().to_vec(),
        encrypted_content: data.encrypted_content.encrypted_content.unwrap().as_bytes().to_vec(),
    }
}

#[test]
fn cms_crate_reads_build_output_alike() {
    let key = aws_lc_key();
    for len in [1usize, 1000, 4096] {
        let bytes = cms::build(&vec![9; len], &spki(&key)).unwrap();
        let ours = cms::parse(&bytes).unwrap();
        let theirs = parse_with_cms_crate(&bytes);
        assert_eq!(theirs.encrypted_key, ours.recipient.encrypted_key, "{len} bytes");
        assert_eq!(theirs.content_algorithm, cms::oid::AES_256_CBC, "{len} bytes");
        assert_eq!(theirs.encrypted_content, ours.encrypted_content, "{len} bytes");
        assert_eq!(theirs.key_algorithm, &bytes[65..127], "{len} bytes");
    }
}
