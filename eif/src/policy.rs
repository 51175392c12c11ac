//! KMS key policies that allow the Recipient operations only to an enclave
//! running a given image.
//!
//! A generated policy has two statements:
//!
//! 1. an administrator statement for the account root, listing the key
//!    management actions explicitly. It leaves out the Recipient operations
//!    and `kms:CreateGrant`, because the account root delegates to IAM
//!    policies: allowing it `kms:*` would let any IAM principal with a
//!    matching IAM policy decrypt without an attestation document.
//! 2. a statement allowing the Recipient operations to the given principal
//!    under `StringEqualsIgnoreCase` conditions on
//!    `kms:RecipientAttestation:ImageSha384` (PCR0) and any requested
//!    `kms:RecipientAttestation:PCR<n>` keys.

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::measure::{Measurements, PCR_LEN, Pcr};

/// The condition key KMS compares with PCR0 of the attestation document.
pub const IMAGE_SHA384_KEY: &str = "kms:RecipientAttestation:ImageSha384";

/// Prefix of the condition keys KMS compares with a PCR of the attestation
/// document; the PCR index follows.
pub const PCR_KEY_PREFIX: &str = "kms:RecipientAttestation:PCR";

/// Highest PCR index accepted in a condition key. AWS does not document
/// which indexes KMS accepts, and an attestation document can contain PCR0
/// to PCR31.
pub const MAX_PCR_INDEX: u8 = 31;

/// The operator of the generated conditions.
pub const CONDITION_OPERATOR: &str = "StringEqualsIgnoreCase";

/// Key management actions of the administrator statement.
pub const ADMINISTRATOR_ACTIONS: [&str; 24] = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:GetPublicKey",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
];

/// Errors generating a policy from command-line values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("invalid principal ARN {arn:?}: {reason}; expected arn:aws:iam::123456789012:role/NAME")]
    InvalidPrincipal { arn: String, reason: String },
    #[error(
        "unknown Recipient operation {found:?}; expected Decrypt, DeriveSharedSecret, GenerateDataKey, \
         GenerateDataKeyPair or GenerateRandom"
    )]
    UnknownOperation { found: String },
    #[error("no Recipient operations given; pass at least one with --operations")]
    NoOperations,
    #[error("invalid PCR condition {found:?}: {reason}")]
    InvalidPcr { found: String, reason: String },
    #[error("PCR{index} is given twice; pass each index once")]
    DuplicatePcr { index: u8 },
    #[error("PCR{index} is not measured from the image; pass its value as --pcr {index}=HEX")]
    PcrNotInImage { index: u8 },
    /// `--pcr 8` without a value on an image without a signature section.
    #[error(
        "the image is not signed, so it has no PCR8; build it with --signing-certificate and --private-key to get one"
    )]
    UnsignedImage,
    #[error("--pcr 0={given} contradicts the image's PCR0 {measured}; no enclave running this image could match")]
    Pcr0Conflict { given: String, measured: String },
}

/// An operation that accepts a `Recipient` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecipientOperation {
    Decrypt,
    DeriveSharedSecret,
    GenerateDataKey,
    GenerateDataKeyPair,
    /// NOTE: GenerateRandom uses no KMS key, so a key policy does not
    /// govern it; an IAM policy with the same condition does.
    GenerateRandom,
}

impl RecipientOperation {
    /// All five operations.
    pub const ALL: [Self; 5] = [
        Self::Decrypt,
        Self::DeriveSharedSecret,
        Self::GenerateDataKey,
        Self::GenerateDataKeyPair,
        Self::GenerateRandom,
    ];

    /// The operations a key policy governs: all but GenerateRandom.
    pub const KEY_OPERATIONS: [Self; 4] =
        [Self::Decrypt, Self::DeriveSharedSecret, Self::GenerateDataKey, Self::GenerateDataKeyPair];

    /// Returns the operation name as KMS spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Decrypt => "Decrypt",
            Self::DeriveSharedSecret => "DeriveSharedSecret",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::GenerateDataKeyPair => "GenerateDataKeyPair",
            Self::GenerateRandom => "GenerateRandom",
        }
    }

    /// Returns the IAM action: `kms:` and the name.
    pub fn action(self) -> String {
        format!("kms:{}", self.name())
    }
}

impl fmt::Display for RecipientOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RecipientOperation {
    type Err = PolicyError;

    /// Accepts the name with or without `kms:`, in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let name = trimmed
            .get(..4)
            .filter(|prefix| prefix.eq_ignore_ascii_case("kms:"))
            .map_or(trimmed, |_| trimmed.get(4..).unwrap_or_default());
        Self::ALL
            .into_iter()
            .find(|operation| operation.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| PolicyError::UnknownOperation { found: text.to_owned() })
    }
}

/// A `--pcr N` or `--pcr N=HEX` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcrCondition {
    pub index: u8,
    /// `None` takes the value from the image.
    pub value: Option<Pcr>,
}

impl FromStr for PcrCondition {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| PolicyError::InvalidPcr { found: text.to_owned(), reason };
        let (index_text, value_text) = match text.split_once('=') {
            Some((index, value)) => (index, Some(value)),
            None => (text, None),
        };
        let index = index_text
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|index| *index <= MAX_PCR_INDEX)
            .ok_or_else(|| invalid(format!("index {index_text:?} is not a number from 0 to {MAX_PCR_INDEX}")))?;
        let value = match value_text {
            Some(hex_text) => Some(parse_pcr_hex(hex_text.trim()).map_err(invalid)?),
            None => None,
        };
        Ok(Self { index, value })
    }
}

/// Parses a PCR value of exactly 96 hex digits.
pub fn parse_pcr_hex(text: &str) -> Result<Pcr, String> {
    if text.len() != 2 * PCR_LEN {
        return Err(format!("value has {} characters; a SHA-384 PCR is {} hex digits", text.len(), 2 * PCR_LEN));
    }
    let mut value = [0u8; PCR_LEN];
    hex::decode_to_slice(text, &mut value).map_err(|error| format!("value is not hex: {error}"))?;
    Ok(value)
}

/// Inputs of a key policy besides the image's PCRs.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// The IAM principal that makes the Recipient calls: the parent
    /// instance's role.
    pub principal: String,
    /// Principal of the administrator statement; the account root of
    /// `principal` when `None`.
    pub administrator: Option<String>,
    pub operations: Vec<RecipientOperation>,
    /// PCR conditions besides ImageSha384.
    pub pcrs: Vec<PcrCondition>,
}

/// A key policy document; serialize it with `serde_json`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyPolicy {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Id")]
    pub id: &'static str,
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

/// One statement of a [`KeyPolicy`].
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: &'static str,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Principal")]
    pub principal: AwsPrincipal,
    #[serde(rename = "Action")]
    pub actions: Vec<String>,
    #[serde(rename = "Resource")]
    pub resource: &'static str,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// `{"AWS": ARN}`.
#[derive(Debug, Clone, Serialize)]
pub struct AwsPrincipal {
    #[serde(rename = "AWS")]
    pub aws: String,
}

/// `{OPERATOR: {KEY: VALUE, …}}`, keys kept in insertion order.
#[derive(Debug, Clone)]
pub struct Condition {
    pub operator: &'static str,
    pub entries: Vec<(String, String)>,
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Entries<'a>(&'a [(String, String)]);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (key, value) in self.0 {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.operator, &Entries(&self.entries))?;
        map.end()
    }
}

/// Builds the key policy for an image with `measurements`.
pub fn key_policy(measurements: &Measurements, options: &PolicyOptions) -> Result<KeyPolicy, PolicyError> {
    let account_root = account_root(&options.principal)?;
    let administrator = match &options.administrator {
        Some(arn) => {
            account_root_of(arn)?;
            arn.clone()
        }
        None => account_root,
    };
    if options.operations.is_empty() {
        return Err(PolicyError::NoOperations);
    }

    let mut entries = vec![(IMAGE_SHA384_KEY.to_owned(), hex::encode(measurements.pcr0))];
    let mut seen = Vec::new();
    for condition in &options.pcrs {
        if seen.contains(&condition.index) {
            return Err(PolicyError::DuplicatePcr { index: condition.index });
        }
        seen.push(condition.index);
        let value = match (condition.value, measurements.get(condition.index)) {
            (Some(given), Some(measured)) if condition.index == 0 && given != measured => {
                return Err(PolicyError::Pcr0Conflict { given: hex::encode(given), measured: hex::encode(measured) });
            }
            (Some(given), _) => given,
            (None, Some(measured)) => measured,
            // The reader sets PCR8 exactly when the image has a signature section.
            (None, None) if condition.index == 8 => return Err(PolicyError::UnsignedImage),
            (None, None) => return Err(PolicyError::PcrNotInImage { index: condition.index }),
        };
        entries.push((format!("{PCR_KEY_PREFIX}{}", condition.index), hex::encode(value)));
    }

    let mut operations = options.operations.clone();
    operations.sort();
    operations.dedup();
    let administrator_statement = Statement {
        sid: "AllowKeyAdministrationByTheAccount",
        effect: "Allow",
        principal: AwsPrincipal { aws: administrator },
        actions: ADMINISTRATOR_ACTIONS.iter().map(|action| (*action).to_owned()).collect(),
        resource: "*",
        condition: None,
    };
    let recipient_statement = Statement {
        sid: "AllowRecipientOperationsFromAttestedEnclave",
        effect: "Allow",
        principal: AwsPrincipal { aws: options.principal.clone() },
        actions: operations.iter().map(|operation| operation.action()).collect(),
        resource: "*",
        condition: Some(Condition { operator: CONDITION_OPERATOR, entries }),
    };
    Ok(KeyPolicy {
        version: "2012-10-17",
        id: "eif-tool-recipient-policy",
        statements: vec![administrator_statement, recipient_statement],
    })
}

/// Returns `arn:PARTITION:iam::ACCOUNT:root` for an IAM or STS principal.
pub fn account_root(principal: &str) -> Result<String, PolicyError> {
    let (partition, account) = account_root_of(principal)?;
    Ok(format!("arn:{partition}:iam::{account}:root"))
}

/// Checks an IAM or STS principal ARN; returns its partition and account.
fn account_root_of(arn: &str) -> Result<(&str, &str), PolicyError> {
    let invalid = |reason: &str| PolicyError::InvalidPrincipal { arn: arn.to_owned(), reason: reason.to_owned() };
    let mut parts = arn.splitn(6, ':');
    let (Some(prefix), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("an ARN has six colon-separated fields"));
    };
    if prefix != "arn" {
        return Err(invalid("it does not start with arn:"));
    }
    if partition.is_empty() || !partition.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'-') {
        return Err(invalid("the partition must be aws, aws-cn, aws-us-gov or similar"));
    }
    if service != "iam" && service != "sts" {
        return Err(invalid("the service must be iam or sts"));
    }
    if !region.is_empty() {
        return Err(invalid("IAM ARNs have an empty region field"));
    }
    if account.len() != 12 || !account.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid("the account id must be 12 digits"));
    }
    if resource.is_empty() {
        return Err(invalid("the resource (role/NAME, user/NAME or root) is missing"));
    }
    Ok((partition, account))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    const ROLE: &str = "arn:aws:iam::111122223333:role/parent-instance";

    fn measurements() -> Measurements {
        Measurements { pcr0: [0xa0; 48], pcr1: [0xa1; 48], pcr2: [0xa2; 48], pcr8: None }
    }

    fn options(pcrs: Vec<PcrCondition>) -> PolicyOptions {
        PolicyOptions {
            principal: ROLE.to_owned(),
            administrator: None,
            operations: RecipientOperation::KEY_OPERATIONS.to_vec(),
            pcrs,
        }
    }

    #[test]
    fn policy_has_administrator_and_recipient_statements() {
        let policy = key_policy(&measurements(), &options(vec!["1".parse().unwrap()])).unwrap();

        let json = serde_json::to_value(&policy).unwrap();
        let statements = json["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0]["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
        assert!(!statements[0]["Action"].as_array().unwrap().iter().any(|action| action == "kms:Decrypt"));
        assert_eq!(statements[1]["Principal"]["AWS"], ROLE);
        assert_eq!(
            statements[1]["Action"],
            serde_json::json!([
                "kms:Decrypt",
                "kms:DeriveSharedSecret",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyPair"
            ])
        );
        let condition = &statements[1]["Condition"]["StringEqualsIgnoreCase"];
        assert_eq!(condition["kms:RecipientAttestation:ImageSha384"], "a0".repeat(48));
        assert_eq!(condition["kms:RecipientAttestation:PCR1"], "a1".repeat(48));
    }

    #[test]
    fn explicit_pcr_value_is_used() {
        let given = format!("pcr=3={}", "0B".repeat(48));
        let condition: PcrCondition = given.trim_start_matches("pcr=").parse().unwrap();

        let policy = key_policy(&measurements(), &options(vec![condition])).unwrap();

        let entries = &policy.statements[1].condition.as_ref().unwrap().entries;
        assert_eq!(entries[1], ("kms:RecipientAttestation:PCR3".to_owned(), "0b".repeat(48)));
    }

    #[test]
    fn pcr_not_in_image_needs_a_value() {
        let error = key_policy(&measurements(), &options(vec!["3".parse().unwrap()])).unwrap_err();

        assert!(matches!(error, PolicyError::PcrNotInImage { index: 3 }), "{error}");
        assert_eq!(error.to_string(), "PCR3 is not measured from the image; pass its value as --pcr 3=HEX");
    }

    #[test]
    fn pcr8_of_unsigned_image_says_unsigned() {
        let error = key_policy(&measurements(), &options(vec!["8".parse().unwrap()])).unwrap_err();

        assert!(matches!(error, PolicyError::UnsignedImage), "{error}");
        assert_eq!(
            error.to_string(),
            "the image is not signed, so it has no PCR8; \
             build it with --signing-certificate and --private-key to get one"
        );
    }

    #[test]
    fn pcr8_of_signed_image_is_used() {
        let signed = Measurements { pcr8: Some([0xa8; 48]), ..measurements() };

        let policy = key_policy(&signed, &options(vec!["8".parse().unwrap()])).unwrap();

        let entries = &policy.statements[1].condition.as_ref().unwrap().entries;
        assert_eq!(entries[1], ("kms:RecipientAttestation:PCR8".to_owned(), "a8".repeat(48)));
    }

    #[test]
    fn conflicting_pcr0_is_rejected() {
        let condition: PcrCondition = format!("0={}", "ff".repeat(48)).parse().unwrap();

        let error = key_policy(&measurements(), &options(vec![condition])).unwrap_err();

        assert!(matches!(error, PolicyError::Pcr0Conflict { .. }), "{error}");
    }

    #[test]
    fn duplicate_pcr_is_rejected() {
        let error =
            key_policy(&measurements(), &options(vec!["1".parse().unwrap(), "1".parse().unwrap()])).unwrap_err();

        assert!(matches!(error, PolicyError::DuplicatePcr { index: 1 }), "{error}");
    }

    #[test]
    fn pcr_argument_errors() {
        for (text, fragment) in [
            ("32", "from 0 to 31"),
            ("x=00", "not a number"),
            ("1=abcd", "has 4 characters"),
            (&format!("1={}", "zz".repeat(48)), "not hex"),
        ] {
            let error = text.parse::<PcrCondition>().unwrap_err();
            assert!(error.to_string().contains(fragment), "{text}: {error}");
        }
    }

    #[test]
    fn operation_names_parse_with_or_without_prefix() {
        assert_eq!("kms:Decrypt".parse::<RecipientOperation>().unwrap(), RecipientOperation::Decrypt);
        assert_eq!("derivesharedsecret".parse::<RecipientOperation>().unwrap(), RecipientOperation::DeriveSharedSecret);
        assert!("Encrypt".parse::<RecipientOperation>().is_err());
    }

    #[test]
    fn principal_arn_errors() {
        for (arn, fragment) in [
            ("role/parent", "six colon-separated"),
            ("arn:aws:iam::1111:role/parent", "12 digits"),
            ("arn:aws:s3::111122223333:bucket", "iam or sts"),
            ("arn:aws:iam:us-east-1:111122223333:role/x", "empty region"),
            ("arn:aws:iam::111122223333:", "resource"),
        ] {
            let error = account_root(arn).unwrap_err();
            assert!(error.to_string().contains(fragment), "{arn}: {error}");
        }
        assert_eq!(
            account_root("arn:aws-cn:sts::111122223333:assumed-role/r/s").unwrap(),
            "arn:aws-cn:iam::111122223333:root"
        );
    }

    #[test]
    fn empty_operations_are_rejected() {
        let mut options = options(Vec::new());
        options.operations.clear();

        let error = key_policy(&measurements(), &options).unwrap_err();

        assert!(matches!(error, PolicyError::NoOperations), "{error}");
    }
}
