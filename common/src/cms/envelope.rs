//! The typed view of an envelope: parsing with every algorithm check, and
//! encoding in the layout real KMS uses.

use std::fmt;

use super::ber::{self, Element, Reader, Tag};
use super::oid::{self, Oid};
use super::{CmsError, MAX_ENCRYPTED_CONTENT_LEN};

/// A parsed `ContentInfo` holding an `EnvelopedData` (RFC 5652 section 6.1)
/// that passed every check [`parse`](super::parse) makes:
///
/// ```text
/// EnvelopedData ::= SEQUENCE {
///   version CMSVersion,
///   originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,   -- rejected
///   recipientInfos RecipientInfos,                         -- exactly one KeyTransRecipientInfo
///   encryptedContentInfo EncryptedContentInfo,
///   unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }  -- rejected
/// ```
///
/// The content type of the encrypted content is always `id-data`, so it is
/// not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `EnvelopedData.version`: 2 with a subjectKeyIdentifier recipient (KMS,
    /// and OpenSSL with `-keyid`), 0 with issuerAndSerialNumber.
    pub version: u8,
    pub recipient: KeyTransRecipient,
    pub content_encryption: ContentEncryption,
    /// The AES-CBC ciphertext, segments of a constructed encoding joined.
    pub encrypted_content: Vec<u8>,
}

/// `KeyTransRecipientInfo` (RFC 5652 section 6.2.1):
///
/// ```text
/// KeyTransRecipientInfo ::= SEQUENCE {
///   version CMSVersion,  -- always set to 0 or 2
///   rid RecipientIdentifier,
///   keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
///   encryptedKey EncryptedKey }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTransRecipient {
    /// 2 for a subjectKeyIdentifier, 0 for an issuerAndSerialNumber.
    pub version: u8,
    pub rid: RecipientIdentifier,
    pub key_encryption: KeyEncryption,
    /// The RSA-OAEP ciphertext of the content-encryption key; as long as the
    /// recipient's modulus.
    pub encrypted_key: Vec<u8>,
}

/// `RecipientIdentifier` (RFC 5652 section 6.2.1). Decryption ignores it,
/// because the caller has one key and tries it.
#[derive(Clone, PartialEq, Eq)]
pub enum RecipientIdentifier {
    /// `[0] IMPLICIT SubjectKeyIdentifier`. KMS writes 32 bytes (how it
    /// derives them is not documented); [`build`](super::build) writes the
    /// SHA-256 of the recipient's SubjectPublicKeyInfo DER.
    SubjectKeyIdentifier(Vec<u8>),
    /// `IssuerAndSerialNumber`, as OpenSSL writes it without `-keyid`.
    IssuerAndSerialNumber {
        /// The issuer `Name`, as encoded in the envelope.
        issuer: Vec<u8>,
        /// The content octets of the serial number INTEGER.
        serial_number: Vec<u8>,
    },
}

impl fmt::Debug for RecipientIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SubjectKeyIdentifier(id) => write!(f, "SubjectKeyIdentifier({})", hex::encode(id)),
            Self::IssuerAndSerialNumber { issuer, serial_number } => f
                .debug_struct("IssuerAndSerialNumber")
                .field("issuer", &hex::encode(issuer))
                .field("serial_number", &hex::encode(serial_number))
                .finish(),
        }
    }
}

/// The key encryption algorithms the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyEncryption {
    /// RSAES-OAEP (RFC 8017 section 7.1) with SHA-256, MGF1 with SHA-256 and
    /// an empty label, the only scheme KMS uses (`RSAES_OAEP_SHA_256`).
    RsaesOaepSha256,
}

/// The content encryption algorithms the reader accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentEncryption {
    /// AES-256 in CBC mode with PKCS#7 padding (RFC 3565), with its IV.
    Aes256Cbc { iv: [u8; 16] },
}

impl fmt::Debug for ContentEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aes256Cbc { iv } => write!(f, "Aes256Cbc {{ iv: {} }}", hex::encode(iv)),
        }
    }
}

/// The complete `keyEncryptionAlgorithm` that KMS writes: `id-RSAES-OAEP`
/// with `RSAES-OAEP-params { hashFunc [0] sha256 (NULL parameters),
/// maskGenFunc [1] mgf1 with sha256 (NULL parameters) }` and no
/// pSourceFunc. These are the bytes of real KMS output.
pub(crate) const KMS_OAEP_ALGORITHM: &[u8] = &[
    0x30, 0x3c, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07, 0x30, 0x2f, 0xa0, 0x0f, 0x30, 0x0d,
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09,
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
    0x04, 0x02, 0x01, 0x05, 0x00,
];

/// Real KMS splits the encrypted content into OCTET STRINGs of this size.
pub(crate) const CONTENT_CHUNK_LEN: usize = 1000;

/// The encryptedKey lengths of the accepted RSA key sizes (2048, 3072 and
/// 4096 bits).
const ENCRYPTED_KEY_LENS: [usize; 3] = [256, 384, 512];

pub(crate) fn parse(ber: &[u8]) -> Result<Envelope, CmsError> {
    let mut top = Reader::new(ber);
    let content_info = top.read(Tag::SEQUENCE, "ContentInfo")?;
    top.finish("ContentInfo")?;

    let mut content_info = content_info.children();
    let content_type = content_info.read(Tag::OID, "ContentInfo.contentType")?;
    let content_type = content_type.oid("ContentInfo.contentType")?;
    if content_type != oid::ENVELOPED_DATA {
        return Err(CmsError::ContentType {
            field: "ContentInfo.contentType",
            expected: "id-envelopedData (1.2.840.113549.1.7.3)",
            found: Oid::new(content_type),
        });
    }
    let explicit = content_info.read(Tag::context_constructed(0), "ContentInfo.content")?;
    content_info.finish("ContentInfo")?;
    let mut explicit = explicit.children();
    let enveloped_data = explicit.read(Tag::SEQUENCE, "EnvelopedData")?;
    explicit.finish("ContentInfo.content")?;

    let mut fields = enveloped_data.children();
    let version = read_version(&mut fields, "EnvelopedData.version")?;
    if fields.peek_tag() == Some(Tag::context_constructed(0)) {
        return Err(CmsError::UnsupportedField { field: "EnvelopedData.originatorInfo" });
    }
    let recipient_infos = fields.read(Tag::SET, "EnvelopedData.recipientInfos")?;
    let encrypted_content_info = fields.read(Tag::SEQUENCE, "EnvelopedData.encryptedContentInfo")?;
    if fields.peek_tag() == Some(Tag::context_constructed(1)) {
        return Err(CmsError::UnsupportedField { field: "EnvelopedData.unprotectedAttrs" });
    }
    fields.finish("EnvelopedData")?;

    let recipient = parse_recipient_infos(&recipient_infos)?;
    let expected_version = match recipient.rid {
        RecipientIdentifier::SubjectKeyIdentifier(_) => 2,
        RecipientIdentifier::IssuerAndSerialNumber { .. } => 0,
    };
    if version != expected_version {
        return Err(CmsError::UnsupportedVersion {
            field: "EnvelopedData.version",
            found: version,
            expected: if expected_version == 2 {
                "2 (the recipient is a version 2 KeyTransRecipientInfo)"
            } else {
                "0 (the recipient is a version 0 KeyTransRecipientInfo)"
            },
        });
    }

    let (content_encryption, encrypted_content) = parse_encrypted_content_info(&encrypted_content_info)?;

    Ok(Envelope { version: expected_version as u8, recipient, content_encryption, encrypted_content })
}

fn read_version(reader: &mut Reader<'_>, field: &'static str) -> Result<u64, CmsError> {
    reader.read(Tag::INTEGER, field)?.small_unsigned(field)
}

fn parse_recipient_infos(set: &Element<'_>) -> Result<KeyTransRecipient, CmsError> {
    let mut infos = set.children();
    if infos.is_empty() {
        return Err(CmsError::NoRecipients);
    }
    let first = infos.read_any("RecipientInfo")?;
    if !infos.is_empty() {
        let mut count = 1;
        while !infos.is_empty() {
            infos.read_any("RecipientInfo")?;
            count += 1;
        }
        return Err(CmsError::MultipleRecipients { count });
    }

    let kind = match first.tag.identifier() {
        0x30 => return parse_key_trans_recipient(&first),
        0xa1 => "KeyAgreeRecipientInfo",
        0xa2 => "KEKRecipientInfo",
        0xa3 => "PasswordRecipientInfo",
        0xa4 => "OtherRecipientInfo",
        _ => {
            return Err(CmsError::UnexpectedChoice {
                field: "RecipientInfo",
                offset: first.offset,
                expected: "KeyTransRecipientInfo (SEQUENCE)",
                found: first.tag,
            });
        }
    };
    Err(CmsError::UnsupportedRecipientInfo { found: kind })
}

fn parse_key_trans_recipient(info: &Element<'_>) -> Result<KeyTransRecipient, CmsError> {
    let mut fields = info.children();
    let version = read_version(&mut fields, "KeyTransRecipientInfo.version")?;
    let rid = fields.read_any("KeyTransRecipientInfo.rid")?;
    let algorithm = fields.read(Tag::SEQUENCE, "KeyTransRecipientInfo.keyEncryptionAlgorithm")?;
    let encrypted_key = fields.read_any("KeyTransRecipientInfo.encryptedKey")?;
    fields.finish("KeyTransRecipientInfo")?;

    let (rid, expected_version) = parse_recipient_identifier(&rid)?;
    if version != expected_version {
        return Err(CmsError::UnsupportedVersion {
            field: "KeyTransRecipientInfo.version",
            found: version,
            expected: if expected_version == 2 {
                "2 (the rid is a subjectKeyIdentifier)"
            } else {
                "0 (the rid is an issuerAndSerialNumber)"
            },
        });
    }

    let key_encryption = parse_key_encryption_algorithm(&algorithm)?;

    let field = "KeyTransRecipientInfo.encryptedKey";
    expect_octet_string(&encrypted_key, Tag::OCTET_STRING, field)?;
    let encrypted_key = encrypted_key.octet_string(field)?;
    if !ENCRYPTED_KEY_LENS.contains(&encrypted_key.len()) {
        return Err(CmsError::EncryptedKeyLength { found: encrypted_key.len() });
    }

    Ok(KeyTransRecipient { version: expected_version as u8, rid, key_encryption, encrypted_key })
}

/// Returns the identifier and the KeyTransRecipientInfo version it requires.
fn parse_recipient_identifier(rid: &Element<'_>) -> Result<(RecipientIdentifier, u64), CmsError> {
    if rid.tag == Tag::context(0) || rid.tag == Tag::context_constructed(0) {
        let id = rid.octet_string("KeyTransRecipientInfo.rid.subjectKeyIdentifier")?;
        if id.is_empty() {
            return Err(CmsError::Malformed {
                field: "KeyTransRecipientInfo.rid.subjectKeyIdentifier",
                offset: rid.offset,
                problem: "empty subjectKeyIdentifier",
            });
        }
        return Ok((RecipientIdentifier::SubjectKeyIdentifier(id), 2));
    }
    if rid.tag != Tag::SEQUENCE {
        return Err(CmsError::UnexpectedChoice {
            field: "KeyTransRecipientInfo.rid",
            offset: rid.offset,
            expected: "subjectKeyIdentifier ([0]) or issuerAndSerialNumber (SEQUENCE)",
            found: rid.tag,
        });
    }

    let mut fields = rid.children();
    let issuer = fields.read(Tag::SEQUENCE, "KeyTransRecipientInfo.rid.issuer")?;
    let serial_number = fields.read(Tag::INTEGER, "KeyTransRecipientInfo.rid.serialNumber")?;
    fields.finish("KeyTransRecipientInfo.rid.issuerAndSerialNumber")?;
    if serial_number.content.is_empty() {
        return Err(CmsError::Malformed {
            field: "KeyTransRecipientInfo.rid.serialNumber",
            offset: serial_number.offset,
            problem: "empty INTEGER",
        });
    }
    let rid = RecipientIdentifier::IssuerAndSerialNumber {
        issuer: issuer.encoded.to_vec(),
        serial_number: serial_number.content.to_vec(),
    };
    Ok((rid, 0))
}

/// Accepts only RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label
/// (RFC 8017 appendix A.2.1):
///
/// ```text
/// RSAES-OAEP-params ::= SEQUENCE {
///   hashAlgorithm     [0] HashAlgorithm     DEFAULT sha1,
///   maskGenAlgorithm  [1] MaskGenAlgorithm  DEFAULT mgf1SHA1,
///   pSourceAlgorithm  [2] PSourceAlgorithm  DEFAULT pSpecifiedEmpty }
/// ```
fn parse_key_encryption_algorithm(algorithm: &Element<'_>) -> Result<KeyEncryption, CmsError> {
    let mut fields = algorithm.children();
    let field = "KeyTransRecipientInfo.keyEncryptionAlgorithm";
    let algorithm_oid = fields.read(Tag::OID, field)?.oid(field)?;
    if algorithm_oid == oid::RSA_ENCRYPTION {
        return Err(CmsError::Pkcs1v15KeyEncryption);
    }
    if algorithm_oid != oid::RSAES_OAEP {
        return Err(CmsError::UnsupportedKeyEncryption { found: Oid::new(algorithm_oid) });
    }
    let params = match fields.peek_tag() {
        None | Some(Tag::NULL) => return Err(CmsError::OaepParametersAbsent),
        Some(_) => fields.read(Tag::SEQUENCE, "RSAES-OAEP-params")?,
    };
    fields.finish(field)?;

    let mut params = params.children();
    let hash = params.read_optional(Tag::context_constructed(0), "RSAES-OAEP-params.hashAlgorithm")?;
    let mask_generation = params.read_optional(Tag::context_constructed(1), "RSAES-OAEP-params.maskGenAlgorithm")?;
    let label_source = params.read_optional(Tag::context_constructed(2), "RSAES-OAEP-params.pSourceAlgorithm")?;
    params.finish("RSAES-OAEP-params")?;

    let hash = match hash {
        None => oid::SHA1,
        Some(explicit) => read_hash_algorithm(&explicit, "RSAES-OAEP-params.hashAlgorithm")?,
    };
    if hash != oid::SHA256 {
        return Err(CmsError::OaepHash { found: Oid::new(hash) });
    }

    let mask_generation_hash = match mask_generation {
        None => oid::SHA1,
        Some(explicit) => {
            let field = "RSAES-OAEP-params.maskGenAlgorithm";
            let mut wrapper = explicit.children();
            let algorithm = wrapper.read(Tag::SEQUENCE, field)?;
            wrapper.finish(field)?;
            let mut fields = algorithm.children();
            let function = fields.read(Tag::OID, field)?.oid(field)?;
            if function != oid::MGF1 {
                return Err(CmsError::OaepMaskGeneration { found: Oid::new(function) });
            }
            let hash = fields.read(Tag::SEQUENCE, "RSAES-OAEP-params.maskGenAlgorithm.parameters")?;
            fields.finish(field)?;
            read_hash_algorithm_fields(&hash, "RSAES-OAEP-params.maskGenAlgorithm.parameters")?
        }
    };
    if mask_generation_hash != oid::SHA256 {
        return Err(CmsError::OaepMaskGenerationHash { found: Oid::new(mask_generation_hash) });
    }

    if let Some(explicit) = label_source {
        let field = "RSAES-OAEP-params.pSourceAlgorithm";
        let mut wrapper = explicit.children();
        let algorithm = wrapper.read(Tag::SEQUENCE, field)?;
        wrapper.finish(field)?;
        let mut fields = algorithm.children();
        let source = fields.read(Tag::OID, field)?.oid(field)?;
        if source != oid::P_SPECIFIED {
            return Err(CmsError::OaepLabelSource { found: Oid::new(source) });
        }
        let label = fields.read_any("RSAES-OAEP-params.pSourceAlgorithm.parameters")?;
        fields.finish(field)?;
        expect_octet_string(&label, Tag::OCTET_STRING, "RSAES-OAEP-params.pSourceAlgorithm.parameters")?;
        let label = label.octet_string("RSAES-OAEP-params.pSourceAlgorithm.parameters")?;
        if !label.is_empty() {
            return Err(CmsError::OaepLabel { len: label.len() });
        }
    }

    Ok(KeyEncryption::RsaesOaepSha256)
}

/// Reads `[n] EXPLICIT AlgorithmIdentifier` of a hash and returns its OID.
fn read_hash_algorithm<'a>(explicit: &Element<'a>, field: &'static str) -> Result<&'a [u8], CmsError> {
    let mut wrapper = explicit.children();
    let algorithm = wrapper.read(Tag::SEQUENCE, field)?;
    wrapper.finish(field)?;
    read_hash_algorithm_fields(&algorithm, field)
}

/// Reads a hash `AlgorithmIdentifier` whose parameters are NULL or absent.
/// Both occur: KMS writes NULL and OpenSSL 3.0 omits them.
fn read_hash_algorithm_fields<'a>(algorithm: &Element<'a>, field: &'static str) -> Result<&'a [u8], CmsError> {
    let mut fields = algorithm.children();
    let hash = fields.read(Tag::OID, field)?.oid(field)?;
    if let Some(null) = fields.read_optional(Tag::NULL, field)? {
        null.null(field)?;
    }
    fields.finish(field)?;
    Ok(hash)
}

/// Checks that `element` is an OCTET STRING in either form, where `tag` is
/// its primitive tag.
fn expect_octet_string(element: &Element<'_>, tag: Tag, field: &'static str) -> Result<(), CmsError> {
    if element.tag == tag || element.tag == tag.to_constructed() {
        Ok(())
    } else {
        Err(CmsError::UnexpectedTag { field, offset: element.offset, expected: tag, found: element.tag })
    }
}

/// ```text
/// EncryptedContentInfo ::= SEQUENCE {
///   contentType ContentType,
///   contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
///   encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }
/// ```
fn parse_encrypted_content_info(info: &Element<'_>) -> Result<(ContentEncryption, Vec<u8>), CmsError> {
    let mut fields = info.children();
    let content_type_field = "EncryptedContentInfo.contentType";
    let content_type = fields.read(Tag::OID, content_type_field)?.oid(content_type_field)?;
    let algorithm = fields.read(Tag::SEQUENCE, "EncryptedContentInfo.contentEncryptionAlgorithm")?;
    let content = fields.read_any("EncryptedContentInfo.encryptedContent")?;
    fields.finish("EncryptedContentInfo")?;

    if content_type != oid::DATA {
        return Err(CmsError::ContentType {
            field: content_type_field,
            expected: "id-data (1.2.840.113549.1.7.1)",
            found: Oid::new(content_type),
        });
    }

    let field = "EncryptedContentInfo.contentEncryptionAlgorithm";
    let mut algorithm = algorithm.children();
    let cipher = algorithm.read(Tag::OID, field)?.oid(field)?;
    if cipher != oid::AES_256_CBC {
        return Err(CmsError::UnsupportedContentEncryption { found: Oid::new(cipher) });
    }
    let iv = algorithm.read_any("EncryptedContentInfo.contentEncryptionAlgorithm.parameters (IV)")?;
    algorithm.finish(field)?;
    expect_octet_string(&iv, Tag::OCTET_STRING, "EncryptedContentInfo.contentEncryptionAlgorithm.parameters (IV)")?;
    let iv = iv.octet_string("EncryptedContentInfo.contentEncryptionAlgorithm.parameters (IV)")?;
    let iv: [u8; 16] = iv.as_slice().try_into().map_err(|_| CmsError::IvLength { found: iv.len() })?;

    let field = "EncryptedContentInfo.encryptedContent";
    expect_octet_string(&content, Tag::context(0), field)?;
    let encrypted_content = content.octet_string(field)?;
    if encrypted_content.len() > MAX_ENCRYPTED_CONTENT_LEN {
        return Err(CmsError::ContentTooLarge { found: encrypted_content.len(), max: MAX_ENCRYPTED_CONTENT_LEN });
    }
    if encrypted_content.is_empty() || encrypted_content.len() % 16 != 0 {
        return Err(CmsError::ContentLength { found: encrypted_content.len() });
    }

    Ok((ContentEncryption::Aes256Cbc { iv }, encrypted_content))
}

impl Envelope {
    /// Encodes the envelope in the layout of real KMS output. ContentInfo,
    /// its `[0]`, EnvelopedData, EncryptedContentInfo and the constructed
    /// encryptedContent have indefinite lengths, and everything else has
    /// definite lengths. The encrypted content is split into OCTET STRINGs
    /// of 1000 bytes, the last one shorter.
    pub fn to_ber(&self) -> Vec<u8> {
        let mut recipient = Vec::with_capacity(self.recipient.encrypted_key.len() + 200);
        ber::write_element(&mut recipient, Tag::INTEGER, &[self.recipient.version]);
        match &self.recipient.rid {
            RecipientIdentifier::SubjectKeyIdentifier(id) => ber::write_element(&mut recipient, Tag::context(0), id),
            RecipientIdentifier::IssuerAndSerialNumber { issuer, serial_number } => {
                let mut rid = issuer.clone();
                ber::write_element(&mut rid, Tag::INTEGER, serial_number);
                ber::write_element(&mut recipient, Tag::SEQUENCE, &rid);
            }
        }
        match self.recipient.key_encryption {
            KeyEncryption::RsaesOaepSha256 => recipient.extend_from_slice(KMS_OAEP_ALGORITHM),
        }
        ber::write_element(&mut recipient, Tag::OCTET_STRING, &self.recipient.encrypted_key);
        let recipient = ber::element(Tag::SEQUENCE, &recipient);

        let mut out = Vec::with_capacity(recipient.len() + self.encrypted_content.len() + 128);
        ber::write_indefinite_header(&mut out, Tag::SEQUENCE);
        ber::write_element(&mut out, Tag::OID, oid::ENVELOPED_DATA);
        ber::write_indefinite_header(&mut out, Tag::context_constructed(0));
        ber::write_indefinite_header(&mut out, Tag::SEQUENCE);
        ber::write_element(&mut out, Tag::INTEGER, &[self.version]);
        ber::write_element(&mut out, Tag::SET, &recipient);

        ber::write_indefinite_header(&mut out, Tag::SEQUENCE);
        ber::write_element(&mut out, Tag::OID, oid::DATA);
        match self.content_encryption {
            ContentEncryption::Aes256Cbc { iv } => {
                let mut algorithm = ber::element(Tag::OID, oid::AES_256_CBC);
                ber::write_element(&mut algorithm, Tag::OCTET_STRING, &iv);
                ber::write_element(&mut out, Tag::SEQUENCE, &algorithm);
            }
        }
        ber::write_indefinite_header(&mut out, Tag::context_constructed(0));
        for chunk in self.encrypted_content.chunks(CONTENT_CHUNK_LEN) {
            ber::write_element(&mut out, Tag::OCTET_STRING, chunk);
        }
        ber::write_end_of_contents(&mut out);
        ber::write_end_of_contents(&mut out);

        ber::write_end_of_contents(&mut out);
        ber::write_end_of_contents(&mut out);
        ber::write_end_of_contents(&mut out);
        out
    }
}
