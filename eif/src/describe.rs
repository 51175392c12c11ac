//! The `describe` report of an image, in nitro-cli's `describe-eif` field
//! names plus the layout fields nitro-cli leaves out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::format::SectionKind;
use crate::measure::HASH_ALGORITHM;
use crate::reader::EifImage;
use crate::signature::{CertificateInfo, SignatureCheck};

/// The JSON object `eif-tool describe` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    #[serde(rename = "EifVersion")]
    pub version: u16,
    #[serde(rename = "Flags")]
    pub flags: u16,
    #[serde(rename = "Architecture")]
    pub architecture: &'static str,
    /// Bytes.
    #[serde(rename = "DefaultMemory")]
    pub default_memory: u64,
    #[serde(rename = "DefaultCpus")]
    pub default_cpus: u64,
    #[serde(rename = "Sections")]
    pub sections: Vec<SectionDescription>,
    #[serde(rename = "Measurements")]
    pub measurements: BTreeMap<String, String>,
    #[serde(rename = "IsSigned")]
    pub is_signed: bool,
    #[serde(rename = "SigningCertificate", skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<CertificateInfo>,
    /// Always true: an image whose CRC does not match is not described.
    #[serde(rename = "CheckCRC")]
    pub check_crc: bool,
    /// True when the signature verifies and signs this image's PCR0.
    #[serde(rename = "SignatureCheck", skip_serializing_if = "Option::is_none")]
    pub signature_check: Option<bool>,
    #[serde(rename = "ImageName", skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(rename = "ImageVersion", skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
    #[serde(rename = "Metadata", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip)]
    crc32: u32,
    #[serde(skip)]
    signature_detail: Option<SignatureCheck>,
}

/// One section in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SectionDescription {
    #[serde(rename = "Index")]
    pub index: usize,
    #[serde(rename = "Type")]
    pub kind: SectionKind,
    #[serde(rename = "Offset")]
    pub offset: u64,
    #[serde(rename = "Size")]
    pub size: u64,
}

impl Description {
    /// Builds the report of a read image.
    pub fn new(image: &EifImage) -> Self {
        let metadata = image.metadata.as_ref();
        let text_field =
            |name: &str| metadata.and_then(|value| value.get(name)).and_then(Value::as_str).map(str::to_owned);
        Self {
            version: image.header.version,
            flags: image.header.flags,
            architecture: image.header.architecture().name(),
            default_memory: image.header.default_mem,
            default_cpus: image.header.default_cpus,
            sections: image
                .sections
                .iter()
                .map(|section| SectionDescription {
                    index: section.index,
                    kind: section.kind,
                    offset: section.offset,
                    size: section.size,
                })
                .collect(),
            measurements: image.measurements.to_nitro_cli_map(),
            is_signed: image.signature.is_some(),
            signing_certificate: image.signature.as_ref().map(|signature| signature.certificate.clone()),
            check_crc: true,
            signature_check: image.signature.as_ref().map(|signature| signature.check == SignatureCheck::Valid),
            image_name: text_field("ImageName"),
            image_version: text_field("ImageVersion"),
            metadata: metadata.map(nitro_cli_metadata),
            crc32: image.header.crc32,
            signature_detail: image.signature.as_ref().map(|signature| signature.check),
        }
    }

    /// Renders the report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "EIF version      {}", self.version);
        let _ = writeln!(out, "Architecture     {} (flags 0x{:04x})", self.architecture, self.flags);
        let _ = writeln!(out, "Default memory   {} MiB, {} vCPUs", self.default_memory >> 20, self.default_cpus);
        let _ = writeln!(out, "CRC-32           {:08x} (matches)", self.crc32);
        if let (Some(name), Some(version)) = (&self.image_name, &self.image_version) {
            let _ = writeln!(out, "Image            {name} {version}");
        }

        let _ = writeln!(out, "Sections");
        for section in &self.sections {
            let _ = writeln!(
                out,
                "  {:>2}  {:<9}  offset {:>12}  size {:>12}",
                section.index,
                section.kind.name(),
                section.offset,
                section.size
            );
        }

        let _ = writeln!(out, "Measurements     {HASH_ALGORITHM}");
        for (name, value) in self.measurements.iter().filter(|(name, _)| name.starts_with("PCR")) {
            let _ = writeln!(out, "  {name:<5} {value}");
        }

        match (&self.signing_certificate, self.signature_detail) {
            (Some(certificate), Some(check)) => {
                let verdict = match check {
                    SignatureCheck::Valid => "valid, signs this image's PCR0".to_owned(),
                    SignatureCheck::BadSignature => "INVALID: does not verify under the certificate's key".to_owned(),
                    SignatureCheck::PayloadMismatch => "INVALID: signs another PCR0 than this image's".to_owned(),
                    SignatureCheck::UnsupportedAlgorithm(alg) => {
                        format!("not checked: COSE algorithm {alg} is not supported")
                    }
                };
                let _ = writeln!(out, "Signature        {verdict}");
                let _ = writeln!(out, "  Subject        {}", certificate.subject);
                let _ = writeln!(out, "  Issuer         {}", certificate.issuer);
                let _ = writeln!(out, "  Valid          {} to {}", certificate.not_before, certificate.not_after);
            }
            _ => {
                let _ = writeln!(out, "Signature        none (unsigned image, no PCR8)");
            }
        }
        out
    }
}

/// Reshapes the metadata section the way nitro-cli prints it: the build
/// fields and `DockerInfo` at the top, `CustomMetadata` merged in.
fn nitro_cli_metadata(metadata: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(Value::Object(build)) = metadata.get("BuildMetadata") {
        out.extend(build.clone());
    }
    out.insert("DockerInfo".to_owned(), metadata.get("DockerInfo").cloned().unwrap_or(Value::Null));
    if let Some(Value::Object(custom)) = metadata.get("CustomMetadata") {
        out.extend(custom.clone());
    }
    Value::Object(out)
}
