#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::OnceLock;

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, OaepPublicEncryptingKey, PrivateDecryptingKey};

use super::ber::{self, Reader, Tag};
use super::envelope::{CONTENT_CHUNK_LEN, KMS_OAEP_ALGORITHM};
use super::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

fn kms_vector(number: u8) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/cms-kms-ciphertext-for-recipient-{number}.ber")).unwrap()
}

/// Returns one key per size for the whole test binary, because key
/// generation would otherwise dominate the run time.
fn key(bits: usize) -> &'static PrivateDecryptingKey {
    static KEYS: [OnceLock<PrivateDecryptingKey>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, size) = match bits {
        2048 => (&KEYS[0], KeySize::Rsa2048),
        3072 => (&KEYS[1], KeySize::Rsa3072),
        4096 => (&KEYS[2], KeySize::Rsa4096),
        _ => panic!("no test key of {bits} bits"),
    };
    slot.get_or_init(|| PrivateDecryptingKey::generate(size).unwrap())
}

fn spki(key: &PrivateDecryptingKey) -> Vec<u8> {
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

/// RSA-OAEP-SHA-256 encryption of `content_key` to `key`.
fn wrap_key(key: &PrivateDecryptingKey, content_key: &[u8]) -> Vec<u8> {
    let oaep = OaepPublicEncryptingKey::new(key.public_key()).unwrap();
    let mut out = vec![0; oaep.ciphertext_size()];
    let len = oaep.encrypt(&OAEP_SHA256_MGF1SHA256, content_key, &mut out, None).unwrap().len();
    out.truncate(len);
    out
}

/// AES-256-CBC of block-aligned `blocks` without adding padding, so a test
/// can choose the padding bytes itself.
fn cbc_raw(content_key: &[u8; 32], iv: [u8; 16], blocks: &[u8]) -> Vec<u8> {
    let cipher = EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, content_key).unwrap()).unwrap();
    let mut out = blocks.to_vec();
    cipher.less_safe_encrypt(&mut out, EncryptionContext::Iv128(iv.into())).unwrap();
    out
}

/// PKCS#7 padding of `plaintext` to whole blocks.
fn pad(plaintext: &[u8]) -> Vec<u8> {
    let padding = 16 - plaintext.len() % 16;
    let mut out = plaintext.to_vec();
    out.extend(std::iter::repeat_n(padding as u8, padding));
    out
}

fn envelope_with(encrypted_key: Vec<u8>, iv: [u8; 16], encrypted_content: Vec<u8>) -> Envelope {
    Envelope {
        version: 2,
        recipient: KeyTransRecipient {
            version: 2,
            rid: RecipientIdentifier::SubjectKeyIdentifier(vec![0x11; 32]),
            key_encryption: KeyEncryption::RsaesOaepSha256,
            encrypted_key,
        },
        content_encryption: ContentEncryption::Aes256Cbc { iv },
        encrypted_content,
    }
}

// ---- real KMS output -------------------------------------------------------

#[test]
fn parse_kms_vectors_match_sources() {
    let cases: [(u8, &str, &str, usize); 3] = [
        (1, "37343df1470df625eeb6f4bfd2f1acc3", "cc74adf65d973c8b72cd51e1b927f0f0", 16),
        (2, "688c6d5f7f31b0fecedf09f2e7c99ac9", "70e5caaffd49ad24", 48),
        (3, "e66c1172aee0f2f7be34e3afc6b0e4fe", "1f943eb0105c1b0644df4f7130448a28", 16),
    ];
    for (number, iv, content_start, content_len) in cases {
        let envelope = parse(&kms_vector(number)).unwrap();
        assert_eq!(envelope.version, 2, "file {number}");
        assert_eq!(envelope.recipient.version, 2, "file {number}");
        let RecipientIdentifier::SubjectKeyIdentifier(id) = &envelope.recipient.rid else {
            panic!("file {number}: rid is not a subjectKeyIdentifier");
        };
        assert_eq!(id.len(), 32, "file {number}");
        assert_eq!(envelope.recipient.key_encryption, KeyEncryption::RsaesOaepSha256, "file {number}");
        assert_eq!(envelope.recipient.encrypted_key.len(), 256, "file {number}");
        let ContentEncryption::Aes256Cbc { iv: found_iv } = envelope.content_encryption;
        assert_eq!(hex::encode(found_iv), iv, "file {number}");
        assert_eq!(envelope.encrypted_content.len(), content_len, "file {number}");
        assert!(hex::encode(&envelope.encrypted_content).starts_with(content_start), "file {number}");
    }
}

#[test]
fn parse_kms_vector_1_identifier_and_key_start() {
    let envelope = parse(&kms_vector(1)).unwrap();
    assert_eq!(
        envelope.recipient.rid,
        RecipientIdentifier::SubjectKeyIdentifier(
            hex::decode("710d335fec8e74647c098c28bf4e5709b1d595fc9d4f81e88d3202ebe7fb6997").unwrap()
        )
    );
    assert!(hex::encode(&envelope.recipient.encrypted_key).starts_with("29cffeb1322f4f82"));
}

#[test]
fn kms_oaep_algorithm_bytes_equal_real_kms_output() {
    for number in 1..=3 {
        let bytes = kms_vector(number);
        assert_eq!(&bytes[65..127], KMS_OAEP_ALGORITHM, "file {number}");
    }
}

#[test]
fn to_ber_reproduces_kms_vectors_byte_for_byte() {
    // Files 1 and 2 carry the content in a constructed [0], as the builder
    // writes it. File 3 uses a primitive [0] and differs only there.
    for number in [1, 2] {
        let bytes = kms_vector(number);
        assert_eq!(parse(&bytes).unwrap().to_ber(), bytes, "file {number}");
    }
    let bytes = kms_vector(3);
    let rewritten = parse(&bytes).unwrap().to_ber();
    assert_eq!(parse(&rewritten).unwrap(), parse(&bytes).unwrap());
    assert_eq!(rewritten[..431], bytes[..431]);
}

/// Reads the real KMS envelope whose content spans five OCTET STRINGs.
fn kms_vector_4() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/cms-kms-ciphertext-for-recipient-4.ber")).unwrap()
}

#[test]
fn parse_kms_vector_4_joins_five_chunks() {
    let bytes = kms_vector_4();
    let envelope = parse(&bytes).unwrap();
    assert_eq!(envelope.encrypted_content.len(), 4112);
    assert!(hex::encode(&envelope.encrypted_content).starts_with("cfee6403064fd7d7"));
    assert_eq!(hex::encode(&envelope.encrypted_content[4000..4008]), hex::encode(&bytes[4451..4459]));
    assert_eq!(
        envelope.content_encryption,
        ContentEncryption::Aes256Cbc {
            iv: hex::decode("f92dcb53d4617d10fc5a8bff96d7d6ff").unwrap().try_into().unwrap()
        }
    );
    assert_eq!(envelope.to_ber(), bytes);
}

#[test]
fn decrypt_kms_vector_with_wrong_key_is_opaque() {
    let error = decrypt(&kms_vector(1), key(2048)).unwrap_err();
    assert!(matches!(error, CmsError::Decryption), "{error:?}");
}

// ---- builder ---------------------------------------------------------------

#[test]
fn build_round_trips_all_key_sizes_and_lengths() {
    for bits in SUPPORTED_KEY_BITS {
        let key = key(bits);
        let spki = spki(key);
        for len in [0usize, 1, 16, 32, 1000, 1001, 4096] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + bits) as u8).collect();
            let envelope = build(&plaintext, &spki).unwrap();
            let opened = decrypt(&envelope, key).unwrap();
            assert_eq!(opened.as_slice(), plaintext.as_slice(), "RSA-{bits}, {len} bytes");
            assert_eq!(parse(&envelope).unwrap().recipient.encrypted_key.len(), bits / 8, "RSA-{bits}");
        }
    }
}

#[test]
fn build_identifies_recipient_by_spki_sha256() {
    let spki = spki(key(2048));
    let envelope = parse(&build(b"secret", &spki).unwrap()).unwrap();
    let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
    assert_eq!(envelope.recipient.rid, RecipientIdentifier::SubjectKeyIdentifier(expected.as_ref().to_vec()));
    assert_eq!(envelope.version, 2);
    assert_eq!(envelope.recipient.version, 2);
}

#[test]
fn build_uses_fresh_iv_and_key_each_time() {
    let spki = spki(key(2048));
    let first = parse(&build(b"same plaintext", &spki).unwrap()).unwrap();
    let second = parse(&build(b"same plaintext", &spki).unwrap()).unwrap();
    assert_ne!(first.content_encryption, second.content_encryption);
    assert_ne!(first.recipient.encrypted_key, second.recipient.encrypted_key);
    assert_ne!(first.encrypted_content, second.encrypted_content);
}

/// Walks the built envelope element by element and checks the layout of
/// real KMS output: which elements use indefinite lengths, and the chunks.
#[test]
fn build_layout_matches_kms() {
    let key = key(2048);
    let bytes = build(&[0x42; 4096], &spki(key)).unwrap();
    let indefinite = |element: &ber::Element<'_>| element.encoded.get(1) == Some(&0x80);

    let mut top = Reader::new(&bytes);
    let content_info = top.read(Tag::SEQUENCE, "ContentInfo").unwrap();
    assert!(indefinite(&content_info));
    let mut fields = content_info.children();
    assert_eq!(fields.read(Tag::OID, "type").unwrap().content, oid::ENVELOPED_DATA);
    let explicit = fields.read(Tag::context_constructed(0), "content").unwrap();
    assert!(indefinite(&explicit));
    let enveloped_data = explicit.children().read(Tag::SEQUENCE, "EnvelopedData").unwrap();
    assert!(indefinite(&enveloped_data));

    let mut fields = enveloped_data.children();
    assert_eq!(fields.read(Tag::INTEGER, "version").unwrap().content, [2]);
    let set = fields.read(Tag::SET, "recipientInfos").unwrap();
    assert!(!indefinite(&set));
    let ktri = set.children().read(Tag::SEQUENCE, "ktri").unwrap();
    let mut ktri = ktri.children();
    assert_eq!(ktri.read(Tag::INTEGER, "version").unwrap().content, [2]);
    assert_eq!(ktri.read(Tag::context(0), "rid").unwrap().content.len(), 32);
    assert_eq!(ktri.read(Tag::SEQUENCE, "alg").unwrap().encoded, KMS_OAEP_ALGORITHM);
    assert_eq!(ktri.read(Tag::OCTET_STRING, "key").unwrap().content.len(), 256);

    let info = fields.read(Tag::SEQUENCE, "encryptedContentInfo").unwrap();
    assert!(indefinite(&info));
    let mut info = info.children();
    assert_eq!(info.read(Tag::OID, "type").unwrap().content, oid::DATA);
    let algorithm = info.read(Tag::SEQUENCE, "alg").unwrap();
    let mut algorithm = algorithm.children();
    assert_eq!(algorithm.read(Tag::OID, "aes").unwrap().content, oid::AES_256_CBC);
    assert_eq!(algorithm.read(Tag::OCTET_STRING, "iv").unwrap().content.len(), 16);
    let content = info.read(Tag::context_constructed(0), "content").unwrap();
    assert!(indefinite(&content));
    let mut chunks = content.children();
    let mut lengths = Vec::new();
    while !chunks.is_empty() {
        lengths.push(chunks.read(Tag::OCTET_STRING, "chunk").unwrap().content.len());
    }
    assert_eq!(lengths, [CONTENT_CHUNK_LEN, 1000, 1000, 1000, 112]);
}

#[test]
fn build_rejects_plaintext_over_4096_bytes() {
    let error = build(&[0; 4097], &spki(key(2048))).unwrap_err();
    assert!(matches!(error, CmsError::PlaintextTooLarge { len: 4097, max: 4096 }), "{error:?}");
}

/// Encodes a SubjectPublicKeyInfo with an arbitrary modulus, for size
/// checks that need no real key.
fn fake_rsa_spki(modulus: &[u8]) -> Vec<u8> {
    let mut rsa_public_key = ber::element(Tag::INTEGER, modulus);
    ber::write_element(&mut rsa_public_key, Tag::INTEGER, &[0x01, 0x00, 0x01]);
    let rsa_public_key = ber::element(Tag::SEQUENCE, &rsa_public_key);
    let mut bit_string = vec![0];
    bit_string.extend_from_slice(&rsa_public_key);
    let mut algorithm = ber::element(Tag::OID, oid::RSA_ENCRYPTION);
    ber::write_element(&mut algorithm, Tag::NULL, &[]);
    let mut info = ber::element(Tag::SEQUENCE, &algorithm);
    ber::write_element(&mut info, Tag::BIT_STRING, &bit_string);
    ber::element(Tag::SEQUENCE, &info)
}

#[test]
fn build_rejects_unsupported_key_sizes() {
    for bits in [1024usize, 2047, 2056, 8192] {
        let mut modulus = vec![0x00];
        modulus.extend(std::iter::repeat_n(0xff, bits.div_ceil(8)));
        if bits % 8 != 0 {
            modulus[1] = 0xff >> (8 - bits % 8);
        }
        let error = build(b"x", &fake_rsa_spki(&modulus)).unwrap_err();
        assert!(matches!(error, CmsError::UnsupportedKeySize { bits: found } if found == bits), "{bits}: {error:?}");
        assert!(error.to_string().contains("use a 2048, 3072 or 4096-bit key"));
    }
}

#[test]
fn build_rejects_non_rsa_and_malformed_keys() {
    let ec = {
        let mut algorithm = ber::element(Tag::OID, oid::EC_PUBLIC_KEY);
        ber::write_element(&mut algorithm, Tag::OID, &[0x2b, 0x81, 0x04, 0x00, 0x22]);
        let mut info = ber::element(Tag::SEQUENCE, &algorithm);
        ber::write_element(&mut info, Tag::BIT_STRING, &[0, 4, 1, 2, 3]);
        ber::element(Tag::SEQUENCE, &info)
    };
    let error = build(b"x", &ec).unwrap_err();
    assert!(matches!(&error, CmsError::RecipientKeyNotRsa { found } if found.as_bytes() == oid::EC_PUBLIC_KEY));
    assert_eq!(
        error.to_string(),
        "recipient public key algorithm is id-ecPublicKey (1.2.840.10045.2.1); expected rsaEncryption (1.2.840.113549.1.1.1)"
    );

    let error = build(b"x", b"-----BEGIN PUBLIC KEY-----\n").unwrap_err();
    assert!(error.to_string().contains("PEM"), "{error}");

    let mut trailing = spki(key(2048));
    trailing.push(0);
    assert!(matches!(
        build(b"x", &trailing).unwrap_err(),
        CmsError::TrailingData { field: "SubjectPublicKeyInfo", .. }
    ));

    let full = spki(key(2048));
    let error = build(b"x", &full[..full.len() - 1]).unwrap_err();
    assert!(matches!(error, CmsError::Truncated { .. }), "{error:?}");
}

// ---- decryption ------------------------------------------------------------

#[test]
fn envelope_decrypt_with_crafted_parts() {
    let key = key(2048);
    let content_key = [7u8; 32];
    let iv = [9u8; 16];
    let envelope = envelope_with(wrap_key(key, &content_key), iv, cbc_raw(&content_key, iv, &pad(b"hello")));
    assert_eq!(decrypt(&envelope.to_ber(), key).unwrap().as_slice(), b"hello");
}

#[test]
fn decrypt_failures_after_parsing_are_one_error() {
    let key = key(2048);
    let content_key = [7u8; 32];
    let iv = [9u8; 16];
    let good_content = cbc_raw(&content_key, iv, &pad(b"hello"));

    let mut bad_padding = pad(b"hello");
    *bad_padding.last_mut().unwrap() = 0;
    let mut not_oaep = vec![0u8; 256];
    not_oaep[1] = 1;
    let cases = [
        ("RSA-OAEP padding", envelope_with(not_oaep, iv, good_content.clone())),
        ("16-byte content key", envelope_with(wrap_key(key, &[7u8; 16]), iv, good_content.clone())),
        ("CBC padding", envelope_with(wrap_key(key, &content_key), iv, cbc_raw(&content_key, iv, &bad_padding))),
        (
            "plaintext over 4096 bytes",
            envelope_with(wrap_key(key, &content_key), iv, cbc_raw(&content_key, iv, &pad(&[1; 4100]))),
        ),
        ("key of another RSA-2048 pair", parse(&build(b"hello", &spki(key_other_2048())).unwrap()).unwrap()),
    ];
    for (case, envelope) in cases {
        let error = decrypt(&envelope.to_ber(), key).unwrap_err();
        assert!(matches!(error, CmsError::Decryption), "{case}: {error:?}");
        assert_eq!(error.to_string(), "decryption failed", "{case}");
    }
}

fn key_other_2048() -> &'static PrivateDecryptingKey {
    static KEY: OnceLock<PrivateDecryptingKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap())
}

#[test]
fn decrypt_accepts_exactly_4096_byte_plaintext() {
    let key = key(2048);
    let content_key = [3u8; 32];
    let iv = [4u8; 16];
    let envelope = envelope_with(wrap_key(key, &content_key), iv, cbc_raw(&content_key, iv, &pad(&[5; 4096])));
    assert_eq!(decrypt(&envelope.to_ber(), key).unwrap().len(), 4096);
}

#[test]
fn decrypt_rejects_key_of_other_size() {
    let envelope = build(b"hello", &spki(key(3072))).unwrap();
    let error = decrypt(&envelope, key(2048)).unwrap_err();
    assert!(matches!(error, CmsError::KeyMismatch { encrypted_key_len: 384, key_bits: 2048 }), "{error:?}");
}

/// A `tracing` subscriber that appends formatted events to a buffer.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_of(run: impl FnOnce()) -> String {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .without_time()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    String::from_utf8(log.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn decrypt_logs_rsa_and_cbc_failures_identically() {
    let key = key(2048);
    let content_key = [7u8; 32];
    let iv = [9u8; 16];
    let mut bad_padding = pad(b"hello");
    *bad_padding.last_mut().unwrap() = 0;
    let rsa_failure = envelope_with(vec![0u8; 256], iv, cbc_raw(&content_key, iv, &pad(b"hello"))).to_ber();
    let cbc_failure = envelope_with(wrap_key(key, &content_key), iv, cbc_raw(&content_key, iv, &bad_padding)).to_ber();

    let rsa_log = log_of(|| assert!(matches!(decrypt(&rsa_failure, key), Err(CmsError::Decryption))));
    let cbc_log = log_of(|| assert!(matches!(decrypt(&cbc_failure, key), Err(CmsError::Decryption))));
    assert!(rsa_log.contains("envelope decryption failed"), "{rsa_log}");
    assert_eq!(rsa_log, cbc_log);
}

// ---- rejections by name -----------------------------------------------------

/// The pieces of an envelope, encoded with definite lengths (DER), so that a
/// test can swap any one of them.
struct Parts {
    content_type: Vec<u8>,
    version: Vec<u8>,
    before_recipients: Vec<u8>,
    recipient_infos: Vec<Vec<u8>>,
    content_type_inner: Vec<u8>,
    content_algorithm: Vec<u8>,
    encrypted_content: Vec<u8>,
    after_content_info: Vec<u8>,
    after_all: Vec<u8>,
}

fn algorithm(oid: &[u8], parameters: Option<Vec<u8>>) -> Vec<u8> {
    let mut content = ber::element(Tag::OID, oid);
    if let Some(parameters) = parameters {
        content.extend_from_slice(&parameters);
    }
    ber::element(Tag::SEQUENCE, &content)
}

fn hash_algorithm(oid: &[u8]) -> Vec<u8> {
    algorithm(oid, Some(ber::element(Tag::NULL, &[])))
}

fn oaep_params(hash: Option<&[u8]>, mgf_hash: Option<&[u8]>, label: Option<&[u8]>) -> Vec<u8> {
    let mut content = Vec::new();
    if let Some(hash) = hash {
        ber::write_element(&mut content, Tag::context_constructed(0), &hash_algorithm(hash));
    }
    if let Some(mgf_hash) = mgf_hash {
        let mgf = algorithm(oid::MGF1, Some(hash_algorithm(mgf_hash)));
        ber::write_element(&mut content, Tag::context_constructed(1), &mgf);
    }
    if let Some(label) = label {
        let source = algorithm(oid::P_SPECIFIED, Some(ber::element(Tag::OCTET_STRING, label)));
        ber::write_element(&mut content, Tag::context_constructed(2), &source);
    }
    ber::element(Tag::SEQUENCE, &content)
}

fn ktri(version: u8, rid: Vec<u8>, key_algorithm: Vec<u8>, encrypted_key_len: usize) -> Vec<u8> {
    let mut content = ber::element(Tag::INTEGER, &[version]);
    content.extend_from_slice(&rid);
    content.extend_from_slice(&key_algorithm);
    ber::write_element(&mut content, Tag::OCTET_STRING, &vec![0x55; encrypted_key_len]);
    ber::element(Tag::SEQUENCE, &content)
}

fn ski_rid() -> Vec<u8> {
    ber::element(Tag::context(0), &[0x22; 32])
}

fn good_ktri() -> Vec<u8> {
    ktri(2, ski_rid(), KMS_OAEP_ALGORITHM.to_vec(), 256)
}

impl Parts {
    fn valid() -> Self {
        Self {
            content_type: ber::element(Tag::OID, oid::ENVELOPED_DATA),
            version: ber::element(Tag::INTEGER, &[2]),
            before_recipients: Vec::new(),
            recipient_infos: vec![good_ktri()],
            content_type_inner: ber::element(Tag::OID, oid::DATA),
            content_algorithm: algorithm(oid::AES_256_CBC, Some(ber::element(Tag::OCTET_STRING, &[1; 16]))),
            encrypted_content: ber::element(Tag::context(0), &[0x33; 32]),
            after_content_info: Vec::new(),
            after_all: Vec::new(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut content_info = self.content_type_inner.clone();
        content_info.extend_from_slice(&self.content_algorithm);
        content_info.extend_from_slice(&self.encrypted_content);

        let mut enveloped = self.version.clone();
        enveloped.extend_from_slice(&self.before_recipients);
        ber::write_element(&mut enveloped, Tag::SET, &self.recipient_infos.concat());
        ber::write_element(&mut enveloped, Tag::SEQUENCE, &content_info);
        enveloped.extend_from_slice(&self.after_content_info);

        let mut outer = self.content_type.clone();
        ber::write_element(&mut outer, Tag::context_constructed(0), &ber::element(Tag::SEQUENCE, &enveloped));
        let mut out = ber::element(Tag::SEQUENCE, &outer);
        out.extend_from_slice(&self.after_all);
        out
    }

    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}

#[test]
fn parse_accepts_der_parts() {
    let envelope = parse(&Parts::valid().encode()).unwrap();
    assert_eq!(envelope.encrypted_content, vec![0x33; 32]);
    assert_eq!(envelope.content_encryption, ContentEncryption::Aes256Cbc { iv: [1; 16] });
}

#[test]
fn parse_accepts_issuer_and_serial_number_version_0() {
    let name = ber::element(Tag::SEQUENCE, &ber::element(Tag::SET, &[]));
    let mut rid = name.clone();
    ber::write_element(&mut rid, Tag::INTEGER, &[0x01, 0x02]);
    let rid = ber::element(Tag::SEQUENCE, &rid);
    let bytes = Parts::valid()
        .with(|parts| {
            parts.version = ber::element(Tag::INTEGER, &[0]);
            parts.recipient_infos = vec![ktri(0, rid, KMS_OAEP_ALGORITHM.to_vec(), 384)];
        })
        .encode();
    let envelope = parse(&bytes).unwrap();
    assert_eq!(envelope.version, 0);
    assert_eq!(
        envelope.recipient.rid,
        RecipientIdentifier::IssuerAndSerialNumber { issuer: name, serial_number: vec![0x01, 0x02] }
    );
    assert_eq!(parse(&envelope.to_ber()).unwrap(), envelope);
}

#[test]
fn parse_accepts_oaep_variants_that_mean_the_same() {
    let variants = [
        // Hash parameters absent instead of NULL.
        {
            let mut content = Vec::new();
            ber::write_element(&mut content, Tag::context_constructed(0), &algorithm(oid::SHA256, None));
            let mgf = algorithm(oid::MGF1, Some(algorithm(oid::SHA256, None)));
            ber::write_element(&mut content, Tag::context_constructed(1), &mgf);
            ber::element(Tag::SEQUENCE, &content)
        },
        // An explicit empty label.
        oaep_params(Some(oid::SHA256), Some(oid::SHA256), Some(&[])),
    ];
    for params in variants {
        let key_algorithm = algorithm(oid::RSAES_OAEP, Some(params));
        let bytes = Parts::valid().with(|p| p.recipient_infos = vec![ktri(2, ski_rid(), key_algorithm, 256)]).encode();
        assert_eq!(parse(&bytes).unwrap().recipient.key_encryption, KeyEncryption::RsaesOaepSha256);
    }
}

#[test]
fn parse_accepts_content_in_any_chunking() {
    let content = (0..64u8).collect::<Vec<_>>();
    let chunked = |sizes: &[usize]| {
        let mut segments = Vec::new();
        let mut rest = content.as_slice();
        for &size in sizes {
            let (chunk, tail) = rest.split_at(size);
            ber::write_element(&mut segments, Tag::OCTET_STRING, chunk);
            rest = tail;
        }
        ber::element(Tag::context_constructed(0), &segments)
    };
    for sizes in [&[64][..], &[1, 63], &[0, 16, 0, 48], &[10, 10, 10, 10, 10, 14]] {
        let bytes = Parts::valid().with(|p| p.encrypted_content = chunked(sizes)).encode();
        assert_eq!(parse(&bytes).unwrap().encrypted_content, content, "{sizes:?}");
    }
}

/// Parses `parts` and returns the error, failing if parsing succeeds.
fn rejection(parts: Parts) -> CmsError {
    match parse(&parts.encode()) {
        Ok(envelope) => panic!("parsed: {envelope:?}"),
        Err(error) => error,
    }
}

fn with_key_algorithm(key_algorithm: Vec<u8>) -> Parts {
    Parts::valid().with(|p| p.recipient_infos = vec![ktri(2, ski_rid(), key_algorithm, 256)])
}

#[test]
fn parse_rejects_pkcs1v15() {
    let error = rejection(with_key_algorithm(algorithm(oid::RSA_ENCRYPTION, Some(ber::element(Tag::NULL, &[])))));
    assert!(matches!(error, CmsError::Pkcs1v15KeyEncryption), "{error:?}");
    assert!(error.to_string().contains("RSAES-PKCS1-v1_5"));
}

#[test]
fn parse_rejects_oaep_without_parameters() {
    for parameters in [None, Some(ber::element(Tag::NULL, &[]))] {
        let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, parameters)));
        assert!(matches!(error, CmsError::OaepParametersAbsent), "{error:?}");
        assert!(error.to_string().contains("which means SHA-1"));
    }
}

#[test]
fn parse_rejects_oaep_sha1_explicit_and_default() {
    for params in [oaep_params(Some(oid::SHA1), Some(oid::SHA1), None), oaep_params(None, None, None)] {
        let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, Some(params))));
        assert!(matches!(&error, CmsError::OaepHash { found } if found.as_bytes() == oid::SHA1), "{error:?}");
        assert_eq!(error.to_string(), "RSAES-OAEP hash is SHA-1 (1.3.14.3.2.26); only SHA-256 is accepted");
    }
}

#[test]
fn parse_rejects_other_oaep_hashes() {
    for hash in [oid::SHA384, oid::SHA512, oid::SHA224] {
        let params = oaep_params(Some(hash), Some(hash), None);
        let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, Some(params))));
        assert!(matches!(&error, CmsError::OaepHash { found } if found.as_bytes() == hash), "{error:?}");
    }
}

#[test]
fn parse_rejects_mgf1_with_other_hash() {
    for params in [oaep_params(Some(oid::SHA256), Some(oid::SHA1), None), oaep_params(Some(oid::SHA256), None, None)] {
        let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, Some(params))));
        assert!(
            matches!(&error, CmsError::OaepMaskGenerationHash { found } if found.as_bytes() == oid::SHA1),
            "{error:?}"
        );
    }
}

#[test]
fn parse_rejects_other_mask_generation_function() {
    let mut content = Vec::new();
    ber::write_element(&mut content, Tag::context_constructed(0), &hash_algorithm(oid::SHA256));
    let other = algorithm(&[0x2a, 0x03, 0x04], Some(hash_algorithm(oid::SHA256)));
    ber::write_element(&mut content, Tag::context_constructed(1), &other);
    let params = ber::element(Tag::SEQUENCE, &content);
    let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, Some(params))));
    assert!(matches!(&error, CmsError::OaepMaskGeneration { found } if found.to_dotted() == "1.2.3.4"), "{error:?}");
}

#[test]
fn parse_rejects_non_empty_label() {
    let params = oaep_params(Some(oid::SHA256), Some(oid::SHA256), Some(b"label"));
    let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, Some(params))));
    assert!(matches!(error, CmsError::OaepLabel { len: 5 }), "{error:?}");
}

#[test]
fn parse_rejects_other_label_source() {
    let mut content = oaep_params(Some(oid::SHA256), Some(oid::SHA256), None)[2..].to_vec();
    let source = algorithm(&[0x2a, 0x03], Some(ber::element(Tag::OCTET_STRING, &[])));
    ber::write_element(&mut content, Tag::context_constructed(2), &source);
    let params = ber::element(Tag::SEQUENCE, &content);
    let error = rejection(with_key_algorithm(algorithm(oid::RSAES_OAEP, Some(params))));
    assert!(matches!(error, CmsError::OaepLabelSource { .. }), "{error:?}");
}

#[test]
fn parse_rejects_unknown_key_encryption() {
    let error = rejection(with_key_algorithm(algorithm(oid::RSASSA_PSS, None)));
    assert!(matches!(&error, CmsError::UnsupportedKeyEncryption { found } if found.as_bytes() == oid::RSASSA_PSS));
}

#[test]
fn parse_rejects_other_content_ciphers_by_name() {
    let cases: [(&[u8], &str); 6] = [
        (oid::AES_128_CBC, "AES-128-CBC (2.16.840.1.101.3.4.1.2)"),
        (oid::AES_192_CBC, "AES-192-CBC (2.16.840.1.101.3.4.1.22)"),
        (oid::AES_128_GCM, "AES-128-GCM (2.16.840.1.101.3.4.1.6)"),
        (oid::AES_256_GCM, "AES-256-GCM (2.16.840.1.101.3.4.1.46)"),
        (oid::DES_EDE3_CBC, "DES-EDE3-CBC (1.2.840.113549.3.7)"),
        (&[0x2a, 0x03], "1.2.3"),
    ];
    for (cipher, name) in cases {
        let parts = Parts::valid()
            .with(|p| p.content_algorithm = algorithm(cipher, Some(ber::element(Tag::OCTET_STRING, &[1; 16]))));
        let error = rejection(parts);
        assert!(matches!(&error, CmsError::UnsupportedContentEncryption { found } if found.as_bytes() == cipher));
        assert_eq!(
            error.to_string(),
            format!("content encryption algorithm is {name}; only AES-256-CBC (2.16.840.1.101.3.4.1.42) is accepted")
        );
    }
}

#[test]
fn parse_rejects_auth_enveloped_data() {
    let parts = Parts::valid().with(|p| p.content_type = ber::element(Tag::OID, oid::AUTH_ENVELOPED_DATA));
    let error = rejection(parts);
    assert!(
        matches!(&error, CmsError::ContentType { field: "ContentInfo.contentType", found, .. }
            if found.as_bytes() == oid::AUTH_ENVELOPED_DATA),
        "{error:?}"
    );
    assert!(error.to_string().contains("id-ct-authEnvelopedData"));
}

#[test]
fn parse_rejects_other_inner_content_type() {
    let parts = Parts::valid().with(|p| p.content_type_inner = ber::element(Tag::OID, oid::SIGNED_DATA));
    let error = rejection(parts);
    assert!(matches!(error, CmsError::ContentType { field: "EncryptedContentInfo.contentType", .. }), "{error:?}");
}

#[test]
fn parse_rejects_wrong_iv_length() {
    for len in [0usize, 8, 12, 15, 17, 32] {
        let parts = Parts::valid().with(|p| {
            p.content_algorithm = algorithm(oid::AES_256_CBC, Some(ber::element(Tag::OCTET_STRING, &vec![1; len])))
        });
        let error = rejection(parts);
        assert!(matches!(error, CmsError::IvLength { found } if found == len), "{len}: {error:?}");
    }
    let error = rejection(Parts::valid().with(|p| p.content_algorithm = algorithm(oid::AES_256_CBC, None)));
    assert!(matches!(error, CmsError::Missing { .. }), "{error:?}");
}

#[test]
fn parse_rejects_other_versions() {
    for version in [0u8, 1, 3, 4] {
        let error = rejection(Parts::valid().with(|p| p.version = ber::element(Tag::INTEGER, &[version])));
        assert!(
            matches!(error, CmsError::UnsupportedVersion { field: "EnvelopedData.version", found, .. }
                if found == u64::from(version)),
            "{version}: {error:?}"
        );
    }
    for version in [0u8, 1, 3] {
        let info = ktri(version, ski_rid(), KMS_OAEP_ALGORITHM.to_vec(), 256);
        let error = rejection(Parts::valid().with(|p| p.recipient_infos = vec![info]));
        assert!(
            matches!(error, CmsError::UnsupportedVersion { field: "KeyTransRecipientInfo.version", found, .. }
                if found == u64::from(version)),
            "{version}: {error:?}"
        );
    }
}

#[test]
fn parse_rejects_zero_or_several_recipients() {
    let error = rejection(Parts::valid().with(|p| p.recipient_infos = vec![]));
    assert!(matches!(error, CmsError::NoRecipients), "{error:?}");
    let error = rejection(Parts::valid().with(|p| p.recipient_infos = vec![good_ktri(), good_ktri()]));
    assert!(matches!(error, CmsError::MultipleRecipients { count: 2 }), "{error:?}");
}

#[test]
fn parse_rejects_other_recipient_info_kinds() {
    for (tag, kind) in [(1u8, "KeyAgreeRecipientInfo"), (2, "KEKRecipientInfo"), (3, "PasswordRecipientInfo")] {
        let info = ber::element(Tag::context_constructed(tag), &ber::element(Tag::INTEGER, &[0]));
        let error = rejection(Parts::valid().with(|p| p.recipient_infos = vec![info]));
        assert!(matches!(error, CmsError::UnsupportedRecipientInfo { found } if found == kind), "{error:?}");
    }
}

#[test]
fn parse_rejects_trailing_data() {
    let error = rejection(Parts::valid().with(|p| p.after_all = vec![0x00]));
    assert!(matches!(error, CmsError::TrailingData { field: "ContentInfo", len: 1, .. }), "{error:?}");
    let error = rejection(Parts::valid().with(|p| p.after_content_info = ber::element(Tag::OCTET_STRING, &[1])));
    assert!(matches!(error, CmsError::TrailingData { field: "EnvelopedData", .. }), "{error:?}");

    let mut bytes = kms_vector(1);
    bytes.extend_from_slice(&[0x00, 0x00]);
    let error = parse(&bytes).unwrap_err();
    assert!(matches!(error, CmsError::TrailingData { field: "ContentInfo", offset: 461, len: 2 }), "{error:?}");
}

#[test]
fn parse_rejects_originator_info_and_unprotected_attrs() {
    let error =
        rejection(Parts::valid().with(|p| p.before_recipients = ber::element(Tag::context_constructed(0), &[])));
    assert!(matches!(error, CmsError::UnsupportedField { field: "EnvelopedData.originatorInfo" }), "{error:?}");
    let error =
        rejection(Parts::valid().with(|p| p.after_content_info = ber::element(Tag::context_constructed(1), &[])));
    assert!(matches!(error, CmsError::UnsupportedField { field: "EnvelopedData.unprotectedAttrs" }), "{error:?}");
}

#[test]
fn parse_rejects_bad_content_lengths() {
    for len in [0usize, 15, 17, 33] {
        let error =
            rejection(Parts::valid().with(|p| p.encrypted_content = ber::element(Tag::context(0), &vec![1; len])));
        assert!(matches!(error, CmsError::ContentLength { found } if found == len), "{len}: {error:?}");
    }
    let error = rejection(Parts::valid().with(|p| p.encrypted_content = ber::element(Tag::context(0), &[1; 4128])));
    assert!(matches!(error, CmsError::ContentTooLarge { found: 4128, max: 4112 }), "{error:?}");
    let error = rejection(Parts::valid().with(|p| p.encrypted_content = Vec::new()));
    assert!(matches!(error, CmsError::Missing { field: "EncryptedContentInfo.encryptedContent" }), "{error:?}");
}

#[test]
fn parse_rejects_bad_encrypted_key_length() {
    for len in [0usize, 128, 255, 257, 1024] {
        let info = ktri(2, ski_rid(), KMS_OAEP_ALGORITHM.to_vec(), len);
        let error = rejection(Parts::valid().with(|p| p.recipient_infos = vec![info]));
        assert!(matches!(error, CmsError::EncryptedKeyLength { found } if found == len), "{len}: {error:?}");
    }
}

#[test]
fn parse_rejects_other_outer_layouts() {
    let error = parse(&[]).unwrap_err();
    assert!(matches!(error, CmsError::Missing { field: "ContentInfo" }), "{error:?}");
    let error = parse(&ber::element(Tag::OCTET_STRING, &[1])).unwrap_err();
    assert!(matches!(error, CmsError::UnexpectedTag { field: "ContentInfo", offset: 0, .. }), "{error:?}");
    assert_eq!(error.to_string(), "unexpected OCTET STRING (0x04) in ContentInfo at byte 0; expected SEQUENCE (0x30)");
}

#[test]
fn parse_rejects_every_strict_prefix_of_kms_vector() {
    let bytes = kms_vector(2);
    for len in 0..bytes.len() {
        assert!(parse(&bytes[..len]).is_err(), "prefix of {len} bytes parsed");
    }
}
