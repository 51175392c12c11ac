//! Interoperability of `recipient_common::cms` with the `openssl cms`
//! command (OpenSSL 3.0 or later on PATH; `make test` installs it): our
//! envelopes open with OpenSSL, OpenSSL's RSAES-OAEP-SHA-256 with
//! AES-256-CBC envelopes open with ours, and OpenSSL's other algorithm
//! choices are rejected with their named errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::rsa::PrivateDecryptingKey;
use recipient_common::cms::{self, CmsError, RecipientIdentifier, oid};

/// Runs `openssl` with `args` in `dir` and returns its standard output,
/// failing the test with OpenSSL's message if it exits non-zero.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run `openssl` ({error}); install OpenSSL 3 or run `make deps`"));
    assert!(output.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// An RSA key pair made by OpenSSL, with a self-signed certificate whose
/// subjectKeyIdentifier is the SHA-256 of the SubjectPublicKeyInfo (the
/// identifier `cms::build` writes), in a temporary directory.
struct Recipient {
    dir: tempfile::TempDir,
    spki: Vec<u8>,
    key: PrivateDecryptingKey,
}

impl Recipient {
    fn new(bits: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        openssl(
            path,
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}"), "-out", "key.pem"],
        );
        openssl(path, &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "spki.der"]);
        openssl(path, &["pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.p8"]);
        let spki = std::fs::read(path.join("spki.der")).unwrap();
        let key_identifier = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki));
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "key.pem",
                "-subj",
                "/CN=cms interop test",
                "-days",
                "1",
                "-addext",
                &format!("subjectKeyIdentifier={key_identifier}"),
                "-out",
                "cert.pem",
            ],
        );
        let key = PrivateDecryptingKey::from_pkcs8(&std::fs::read(path.join("key.p8")).unwrap()).unwrap();
        Self { dir, spki, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Encrypts `plaintext` with `openssl cms -encrypt`, the content cipher
    /// option `cipher` and the recipient's `-keyopt` options; returns the DER
    /// envelope.
    fn openssl_encrypt(&self, plaintext: &[u8], cipher: &str, key_options: &[&str]) -> Vec<u8> {
        std::fs::write(self.path("plain.bin"), plaintext).unwrap();
        let mut args = vec!["cms", "-encrypt", "-binary", "-in", "plain.bin", "-outform", "DER", "-out", "env.der"];
        args.extend_from_slice(&[cipher, "-recip", "cert.pem"]);
        // OpenSSL applies -keyopt to the -recip before it.
        args.extend_from_slice(key_options);
        openssl(self.dir.path(), &args);
        std::fs::read(self.path("env.der")).unwrap()
    }

    /// Decrypts `envelope` with `openssl cms -decrypt -inform DER`; with
    /// `match_certificate`, OpenSSL also matches the recipient identifier
    /// against the certificate.
    fn openssl_decrypt(&self, envelope: &[u8], match_certificate: bool) -> Vec<u8> {
        std::fs::write(self.path("env.ber"), envelope).unwrap();
        let mut args = vec!["cms", "-decrypt", "-binary", "-inform", "DER", "-in", "env.ber", "-inkey", "key.pem"];
        if match_certificate {
            args.extend_from_slice(&["-recip", "cert.pem"]);
        }
        args.extend_from_slice(&["-out", "out.bin"]);
        openssl(self.dir.path(), &args);
        std::fs::read(self.path("out.bin")).unwrap()
    }
}

const OAEP_SHA256: [&str; 4] = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"];

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn build_output_decrypts_with_openssl() {
    for bits in [2048, 3072, 4096] {
        let recipient = Recipient::new(bits);
        for len in [1, 32, 1001, 4096] {
            let plaintext = plaintext(len);
            let envelope = cms::build(&plaintext, &recipient.spki).unwrap();
            assert_eq!(recipient.openssl_decrypt(&envelope, false), plaintext, "RSA-{bits}, {len} bytes, -inkey only");
            assert_eq!(recipient.openssl_decrypt(&envelope, true), plaintext, "RSA-{bits}, {len} bytes, with -recip");
        }
    }
}

#[test]
fn openssl_oaep_sha256_envelope_decrypts() {
    let recipient = Recipient::new(2048);
    for len in [1, 16, 1000, 4096] {
        let plaintext = plaintext(len);
        let envelope = recipient.openssl_encrypt(&plaintext, "-aes-256-cbc", &OAEP_SHA256);

        let parsed = cms::parse(&envelope).unwrap();
        assert_eq!(parsed.version, 0);
        assert!(matches!(parsed.recipient.rid, RecipientIdentifier::IssuerAndSerialNumber { .. }));
        assert_eq!(cms::decrypt(&envelope, &recipient.key).unwrap().as_slice(), plaintext.as_slice(), "{len} bytes");
    }
}

#[test]
fn openssl_keyid_envelope_decrypts() {
    let recipient = Recipient::new(2048);
    let envelope = recipient.openssl_encrypt(b"key id", "-aes-256-cbc", &[&["-keyid"], &OAEP_SHA256[..]].concat());

    let parsed = cms::parse(&envelope).unwrap();
    assert_eq!(parsed.version, 2);
    let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &recipient.spki).as_ref().to_vec();
    assert_eq!(parsed.recipient.rid, RecipientIdentifier::SubjectKeyIdentifier(expected));
    assert_eq!(cms::decrypt(&envelope, &recipient.key).unwrap().as_slice(), b"key id");
}

#[test]
fn openssl_envelope_for_other_key_is_opaque_error() {
    let recipient = Recipient::new(2048);
    let other = Recipient::new(2048);
    let envelope = recipient.openssl_encrypt(b"secret", "-aes-256-cbc", &OAEP_SHA256);
    let error = cms::decrypt(&envelope, &other.key).unwrap_err();
    assert!(matches!(error, CmsError::Decryption), "{error:?}");
}

#[test]
fn openssl_pkcs1v15_envelope_rejected() {
    let recipient = Recipient::new(2048);
    let envelope = recipient.openssl_encrypt(b"secret", "-aes-256-cbc", &[]);
    let error = cms::decrypt(&envelope, &recipient.key).unwrap_err();
    assert!(matches!(error, CmsError::Pkcs1v15KeyEncryption), "{error:?}");
}

#[test]
fn openssl_oaep_sha1_envelope_rejected() {
    let recipient = Recipient::new(2048);
    for options in [
        &["-keyopt", "rsa_padding_mode:oaep"][..],
        &["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha1"],
    ] {
        let envelope = recipient.openssl_encrypt(b"secret", "-aes-256-cbc", options);
        let error = cms::decrypt(&envelope, &recipient.key).unwrap_err();
        assert!(
            matches!(&error, CmsError::OaepHash { found } if found.as_bytes() == oid::SHA1),
            "{options:?}: {error:?}"
        );
    }
}

#[test]
fn openssl_aes128_and_aes192_envelopes_rejected() {
    let recipient = Recipient::new(2048);
    for (cipher, expected) in [("-aes-128-cbc", oid::AES_128_CBC), ("-aes-192-cbc", oid::AES_192_CBC)] {
        let envelope = recipient.openssl_encrypt(b"secret", cipher, &OAEP_SHA256);
        let error = cms::decrypt(&envelope, &recipient.key).unwrap_err();
        assert!(
            matches!(&error, CmsError::UnsupportedContentEncryption { found } if found.as_bytes() == expected),
            "{cipher}: {error:?}"
        );
    }
}

#[test]
fn openssl_aes_gcm_envelope_rejected() {
    let recipient = Recipient::new(2048);
    let envelope = recipient.openssl_encrypt(b"secret", "-aes-256-gcm", &OAEP_SHA256);
    let error = cms::decrypt(&envelope, &recipient.key).unwrap_err();
    assert!(
        matches!(&error, CmsError::ContentType { found, .. } if found.as_bytes() == oid::AUTH_ENVELOPED_DATA),
        "{error:?}"
    );
}

#[test]
fn keys_outside_2048_3072_4096_rejected() {
    let recipient = Recipient::new(2560);
    let error = cms::build(b"secret", &recipient.spki).unwrap_err();
    assert!(matches!(error, CmsError::UnsupportedKeySize { bits: 2560 }), "{error:?}");
    let envelope = Recipient::new(2048).openssl_encrypt(b"secret", "-aes-256-cbc", &OAEP_SHA256);
    let error = cms::decrypt(&envelope, &recipient.key).unwrap_err();
    assert!(matches!(error, CmsError::UnsupportedKeySize { bits: 2560 }), "{error:?}");

    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/rsa-8192-test-key.p8");
    let key = PrivateDecryptingKey::from_pkcs8(&std::fs::read(fixture).unwrap()).unwrap();
    assert_eq!(key.key_size_bits(), 8192);
    let error = cms::decrypt(&envelope, &key).unwrap_err();
    assert!(matches!(error, CmsError::UnsupportedKeySize { bits: 8192 }), "{error:?}");
    assert_eq!(error.to_string(), "RSA key of 8192 bits is not supported; use a 2048, 3072 or 4096-bit key");

    // aws-lc-rs itself refuses RSA keys below 2048 bits, so a 1024-bit key
    // never reaches `cms::decrypt`.
    let small = tempfile::tempdir().unwrap();
    openssl(small.path(), &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "key.pem"]);
    openssl(small.path(), &["pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.p8"]);
    assert!(PrivateDecryptingKey::from_pkcs8(&std::fs::read(small.path().join("key.p8")).unwrap()).is_err());
    openssl(small.path(), &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "spki.der"]);
    let error = cms::build(b"secret", &std::fs::read(small.path().join("spki.der")).unwrap()).unwrap_err();
    assert!(matches!(error, CmsError::UnsupportedKeySize { bits: 1024 }), "{error:?}");
}
