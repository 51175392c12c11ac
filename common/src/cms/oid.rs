//! Object identifiers that appear in (or are rejected from) an envelope, as
//! the content octets of their DER encoding, and a printable [`Oid`] type
//! for error messages.

use std::fmt;

/// `id-envelopedData` 1.2.840.113549.1.7.3 (RFC 5652 section 6.1).
pub const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// `id-data` 1.2.840.113549.1.7.1 (RFC 5652 section 4).
pub const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// `id-signedData` 1.2.840.113549.1.7.2.
pub const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// `id-encryptedData` 1.2.840.113549.1.7.6.
pub const ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
/// `id-ct-authEnvelopedData` 1.2.840.113549.1.9.16.1.23 (RFC 5083), the
/// content type that carries AES-GCM.
pub const AUTH_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17];

/// `rsaEncryption` 1.2.840.113549.1.1.1: an RSA public key, and as a key
/// encryption algorithm RSAES-PKCS1-v1_5.
pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `id-RSAES-OAEP` 1.2.840.113549.1.1.7 (RFC 8017 appendix A.2.1).
pub const RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// `id-mgf1` 1.2.840.113549.1.1.8.
pub const MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// `id-pSpecified` 1.2.840.113549.1.1.9, the source of the OAEP label.
pub const P_SPECIFIED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];
/// `id-RSASSA-PSS` 1.2.840.113549.1.1.10.
pub const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// `id-ecPublicKey` 1.2.840.10045.2.1.
pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// `id-sha1` 1.3.14.3.2.26, the RSAES-OAEP default hash.
pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// `id-sha224` 2.16.840.1.101.3.4.2.4.
pub const SHA224: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04];
/// `id-sha256` 2.16.840.1.101.3.4.2.1.
pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// `id-sha384` 2.16.840.1.101.3.4.2.2.
pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
/// `id-sha512` 2.16.840.1.101.3.4.2.3.
pub const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

/// `id-aes128-CBC` 2.16.840.1.101.3.4.1.2.
pub const AES_128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
/// `id-aes192-CBC` 2.16.840.1.101.3.4.1.22.
pub const AES_192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
/// `id-aes256-CBC` 2.16.840.1.101.3.4.1.42.
pub const AES_256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
/// `id-aes128-GCM` 2.16.840.1.101.3.4.1.6.
pub const AES_128_GCM: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x06];
/// `id-aes192-GCM` 2.16.840.1.101.3.4.1.26.
pub const AES_192_GCM: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x1a];
/// `id-aes256-GCM` 2.16.840.1.101.3.4.1.46.
pub const AES_256_GCM: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e];
/// `des-ede3-cbc` 1.2.840.113549.3.7.
pub const DES_EDE3_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];

/// Names printed next to the dotted form of the identifiers above.
const NAMES: &[(&[u8], &str)] = &[
    (ENVELOPED_DATA, "id-envelopedData"),
    (DATA, "id-data"),
    (SIGNED_DATA, "id-signedData"),
    (ENCRYPTED_DATA, "id-encryptedData"),
    (AUTH_ENVELOPED_DATA, "id-ct-authEnvelopedData"),
    (RSA_ENCRYPTION, "rsaEncryption"),
    (RSAES_OAEP, "RSAES-OAEP"),
    (MGF1, "MGF1"),
    (P_SPECIFIED, "id-pSpecified"),
    (RSASSA_PSS, "RSASSA-PSS"),
    (EC_PUBLIC_KEY, "id-ecPublicKey"),
    (SHA1, "SHA-1"),
    (SHA224, "SHA-224"),
    (SHA256, "SHA-256"),
    (SHA384, "SHA-384"),
    (SHA512, "SHA-512"),
    (AES_128_CBC, "AES-128-CBC"),
    (AES_192_CBC, "AES-192-CBC"),
    (AES_256_CBC, "AES-256-CBC"),
    (AES_128_GCM, "AES-128-GCM"),
    (AES_192_GCM, "AES-192-GCM"),
    (AES_256_GCM, "AES-256-GCM"),
    (DES_EDE3_CBC, "DES-EDE3-CBC"),
];

/// An object identifier found in an envelope, kept as the content octets of
/// its encoding. `Display` prints the name where it is known and the dotted
/// form, as in `AES-128-CBC (2.16.840.1.101.3.4.1.2)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Oid(Vec<u8>);

impl Oid {
    pub(crate) fn new(content: &[u8]) -> Self {
        Self(content.to_vec())
    }

    /// Returns the content octets of the DER encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Returns the conventional name of the identifiers this module lists.
    pub fn name(&self) -> Option<&'static str> {
        NAMES.iter().find(|(bytes, _)| *bytes == self.0.as_slice()).map(|(_, name)| *name)
    }

    /// Formats the dotted decimal form, such as `1.2.840.113549.1.7.3`.
    /// Content that is not a valid encoding (the reader rejects those) is
    /// formatted as hex.
    pub fn to_dotted(&self) -> String {
        dotted(&self.0).unwrap_or_else(|| format!("0x{}", hex::encode(&self.0)))
    }
}

/// Decodes base-128 subidentifiers; `None` on overflow or a dangling
/// continuation octet.
fn dotted(content: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    let mut pending = false;
    for &byte in content {
        value = value.checked_mul(128)?.checked_add(u64::from(byte & 0x7f))?;
        pending = byte & 0x80 != 0;
        if !pending {
            arcs.push(value);
            value = 0;
        }
    }
    if pending || arcs.is_empty() {
        return None;
    }

    let mut text = String::new();
    for (index, arc) in arcs.iter().enumerate() {
        if index == 0 {
            let (first, second) = match *arc {
                0..40 => (0, *arc),
                40..80 => (1, *arc - 40),
                _ => (2, *arc - 80),
            };
            text.push_str(&format!("{first}.{second}"));
        } else {
            text.push_str(&format!(".{arc}"));
        }
    }
    Some(text)
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.to_dotted()),
            None => f.write_str(&self.to_dotted()),
        }
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_dotted_forms() {
        let cases: &[(&[u8], &str)] = &[
            (ENVELOPED_DATA, "1.2.840.113549.1.7.3"),
            (AUTH_ENVELOPED_DATA, "1.2.840.113549.1.9.16.1.23"),
            (SHA1, "1.3.14.3.2.26"),
            (AES_256_CBC, "2.16.840.1.101.3.4.1.42"),
            (AES_192_CBC, "2.16.840.1.101.3.4.1.22"),
            (AES_256_GCM, "2.16.840.1.101.3.4.1.46"),
            (DES_EDE3_CBC, "1.2.840.113549.3.7"),
            (EC_PUBLIC_KEY, "1.2.840.10045.2.1"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Oid::new(bytes).to_dotted(), *expected);
        }
    }

    #[test]
    fn oid_display_names_known_identifiers() {
        assert_eq!(Oid::new(AES_128_CBC).to_string(), "AES-128-CBC (2.16.840.1.101.3.4.1.2)");
        assert_eq!(Oid::new(&[0x2a, 0x03]).to_string(), "1.2.3");
    }

    #[test]
    fn oid_invalid_content_prints_hex() {
        assert_eq!(Oid::new(&[0x2a, 0x86]).to_dotted(), "0x2a86");
        assert_eq!(Oid::new(&[]).to_dotted(), "0x");
    }
}
