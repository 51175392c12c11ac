//! Checks a key policy for mistakes that make an attestation condition
//! wrong or irrelevant.
//!
//! Findings:
//!
//! - `unknown-condition-key`: a `kms:RecipientAttestation…` key that KMS does
//!   not define, such as `kms:RecipientAttestation` alone or `…:PCR32`. A
//!   condition on a key that is never present is never satisfied.
//! - `invalid-pcr-value`: an ImageSha384 or PCR value that is not 96 hex
//!   digits, which no attestation document matches.
//! - `recipient-allow-without-attestation`: an `Allow` statement that
//!   grants a Recipient operation without an attestation condition. Any
//!   allowed caller then receives the plaintext without attesting, so the
//!   attestation conditions elsewhere protect nothing.
//! - `ineffective-operator`: an attestation condition with an operator that
//!   a request without a Recipient also satisfies (`…IfExists`,
//!   `ForAllValues:`) or that negates the match (`StringNot…`).
//! - `grant-bypass`: an `Allow` of `kms:CreateGrant`, whose grants can allow
//!   the Recipient operations with no attestation condition.
//!
//! Condition keys and actions are compared case-insensitively, as IAM does.

use serde::Serialize;
use serde_json::Value;

use crate::policy::{IMAGE_SHA384_KEY, MAX_PCR_INDEX, PCR_KEY_PREFIX, RecipientOperation};

const ATTESTATION_PREFIX: &str = "kms:recipientattestation";
const NITRO_TPM_PCR_PREFIX: &str = "kms:recipientattestation:nitrotpmpcr";

/// Errors that stop the linter: the document is not a policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LintError {
    #[error("policy is not valid JSON: {0}")]
    NotJson(String),
    #[error("invalid policy at {location}: {reason}")]
    Malformed { location: String, reason: String },
}

/// The kind of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    UnknownConditionKey,
    InvalidPcrValue,
    RecipientAllowWithoutAttestation,
    IneffectiveOperator,
    GrantBypass,
}

impl FindingKind {
    /// Returns the kebab-case code printed with each finding.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownConditionKey => "unknown-condition-key",
            Self::InvalidPcrValue => "invalid-pcr-value",
            Self::RecipientAllowWithoutAttestation => "recipient-allow-without-attestation",
            Self::IneffectiveOperator => "ineffective-operator",
            Self::GrantBypass => "grant-bypass",
        }
    }
}

/// One warning about one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Position of the statement, from 0.
    pub statement: usize,
    pub sid: Option<String>,
    pub kind: FindingKind,
    pub message: String,
}

/// Parses and lints a policy document.
pub fn lint_policy_text(text: &str) -> Result<Vec<Finding>, LintError> {
    let policy: Value = serde_json::from_str(text).map_err(|error| LintError::NotJson(error.to_string()))?;
    lint_policy(&policy)
}

/// Lints a parsed policy document.
pub fn lint_policy(policy: &Value) -> Result<Vec<Finding>, LintError> {
    let malformed = |location: &str, reason: &str| LintError::Malformed {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let Value::Object(document) = policy else {
        return Err(malformed("the document", "expected a JSON object with a Statement"));
    };
    let statements = match document.get("Statement") {
        Some(Value::Array(statements)) => statements.iter().collect::<Vec<_>>(),
        Some(statement @ Value::Object(_)) => vec![statement],
        Some(_) => return Err(malformed("Statement", "expected an object or an array of objects")),
        None => return Err(malformed("the document", "Statement is missing")),
    };

    let mut findings = Vec::new();
    for (position, statement) in statements.into_iter().enumerate() {
        lint_statement(position, statement, &mut findings)?;
    }
    Ok(findings)
}

fn lint_statement(position: usize, statement: &Value, findings: &mut Vec<Finding>) -> Result<(), LintError> {
    let location = format!("Statement[{position}]");
    let malformed = |field: &str, reason: &str| LintError::Malformed {
        location: format!("{location}.{field}"),
        reason: reason.to_owned(),
    };
    let Value::Object(statement) = statement else {
        return Err(LintError::Malformed { location, reason: "expected an object".to_owned() });
    };
    let sid = statement.get("Sid").and_then(Value::as_str).map(str::to_owned);
    let mut report = |kind: FindingKind, message: String| {
        findings.push(Finding { statement: position, sid: sid.clone(), kind, message });
    };

    let allow = match statement.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        _ => return Err(malformed("Effect", "expected \"Allow\" or \"Deny\"")),
    };
    let actions = string_list(statement.get("Action"))
        .ok_or_else(|| malformed("Action", "expected a string or an array of strings"))?;
    let not_actions = string_list(statement.get("NotAction"))
        .ok_or_else(|| malformed("NotAction", "expected a string or an array of strings"))?;

    let mut has_effective_attestation = false;
    let mut grant_is_for_aws_resource = false;
    if let Some(condition) = statement.get("Condition") {
        let Value::Object(operators) = condition else {
            return Err(malformed("Condition", "expected an object of operators"));
        };
        for (operator, keys) in operators {
            let Value::Object(keys) = keys else {
                return Err(malformed("Condition", &format!("operator {operator} must map to an object of keys")));
            };
            for (key, values) in keys {
                let lower_key = key.to_ascii_lowercase();
                if lower_key == "kms:grantisforawsresource" {
                    grant_is_for_aws_resource = true;
                }
                if !lower_key.starts_with(ATTESTATION_PREFIX) {
                    continue;
                }
                let Some(known) = classify_key(&lower_key) else {
                    report(
                        FindingKind::UnknownConditionKey,
                        format!(
                            "condition key {key} does not exist, so the condition never matches; use \
                             {IMAGE_SHA384_KEY} or {PCR_KEY_PREFIX}<0-{MAX_PCR_INDEX}>"
                        ),
                    );
                    continue;
                };
                if known == KnownKey::Measurement {
                    let values = string_list(Some(values))
                        .ok_or_else(|| malformed("Condition", &format!("{key} must map to a string or strings")))?;
                    for value in values.iter().filter(|value| !is_pcr_hex(value)) {
                        report(
                            FindingKind::InvalidPcrValue,
                            format!(
                                "{key} value {value:?} is not 96 hex digits, so no attestation document matches it"
                            ),
                        );
                    }
                }
                match operator_effect(operator) {
                    OperatorEffect::Constrains => has_effective_attestation = true,
                    OperatorEffect::Ineffective(reason) => report(
                        FindingKind::IneffectiveOperator,
                        format!("operator {operator} on {key} {reason}; use StringEqualsIgnoreCase"),
                    ),
                }
            }
        }
    }

    if !allow {
        return Ok(());
    }
    let allowed: Vec<String> = RecipientOperation::ALL
        .iter()
        .map(|operation| operation.action())
        .filter(|action| allows(action, &actions, &not_actions, statement.contains_key("NotAction")))
        .collect();
    if !allowed.is_empty() && !has_effective_attestation {
        report(
            FindingKind::RecipientAllowWithoutAttestation,
            format!(
                "allows {} without a kms:RecipientAttestation condition, so callers get plaintext without \
                 attesting and attestation conditions elsewhere protect nothing; remove these actions \
                 or add the condition",
                allowed.join(", ")
            ),
        );
    }
    if allows("kms:CreateGrant", &actions, &not_actions, statement.contains_key("NotAction"))
        && !grant_is_for_aws_resource
    {
        report(
            FindingKind::GrantBypass,
            "allows kms:CreateGrant, and a grant can allow the Recipient operations without an attestation \
             condition; remove it or restrict it with kms:GrantIsForAWSResource"
                .to_owned(),
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownKey {
    /// ImageSha384 or PCR<n>: the value is a 96-digit hex PCR.
    Measurement,
    /// NitroTPMPCR<n>, from NitroTPM attestation documents.
    NitroTpm,
}

/// Classifies a lower-case attestation condition key; `None` for keys KMS
/// does not define.
fn classify_key(lower_key: &str) -> Option<KnownKey> {
    if lower_key == IMAGE_SHA384_KEY.to_ascii_lowercase() {
        return Some(KnownKey::Measurement);
    }
    // NOTE: AWS does not list which NitroTPM PCR indexes KMS accepts; 0-31
    // avoids false warnings.
    if let Some(index) = lower_key.strip_prefix(NITRO_TPM_PCR_PREFIX) {
        return is_pcr_index(index).then_some(KnownKey::NitroTpm);
    }
    let index = lower_key.strip_prefix(&PCR_KEY_PREFIX.to_ascii_lowercase())?;
    is_pcr_index(index).then_some(KnownKey::Measurement)
}

/// True for "0" to "31" without leading zeros.
fn is_pcr_index(text: &str) -> bool {
    let canonical = text.parse::<u8>().map(|index| index.to_string());
    canonical.is_ok_and(|canonical| canonical == text && text.parse::<u8>().is_ok_and(|index| index <= MAX_PCR_INDEX))
}

fn is_pcr_hex(value: &str) -> bool {
    value.len() == 96 && value.bytes().all(|byte| byte.is_ascii_hexdigit())
}

enum OperatorEffect {
    Constrains,
    Ineffective(&'static str),
}

fn operator_effect(operator: &str) -> OperatorEffect {
    let lower = operator.to_ascii_lowercase();
    if lower.ends_with("ifexists") {
        return OperatorEffect::Ineffective("is also satisfied by requests without an attestation document");
    }
    if lower.starts_with("forallvalues:") {
        return OperatorEffect::Ineffective("is also satisfied when the key is absent");
    }
    let base = lower.strip_prefix("foranyvalue:").unwrap_or(&lower);
    match base {
        "stringequals" | "stringequalsignorecase" | "stringlike" => OperatorEffect::Constrains,
        _ if base.contains("not") => OperatorEffect::Ineffective("negates the match, so other images pass"),
        _ => OperatorEffect::Ineffective("does not compare a measurement for equality"),
    }
}

/// Reads a string or an array of strings; an absent field is an empty list.
fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None => Some(Vec::new()),
        Some(Value::String(text)) => Some(vec![text.clone()]),
        Some(Value::Array(items)) => items.iter().map(|item| item.as_str().map(str::to_owned)).collect(),
        Some(_) => None,
    }
}

/// True when a statement with these `Action` / `NotAction` lists covers
/// `action`.
fn allows(action: &str, actions: &[String], not_actions: &[String], has_not_action: bool) -> bool {
    if has_not_action {
        !not_actions.iter().any(|pattern| action_matches(pattern, action))
    } else {
        actions.iter().any(|pattern| action_matches(pattern, action))
    }
}

/// Matches an IAM action pattern (`*` any run, `?` one character),
/// ignoring ASCII case.
fn action_matches(pattern: &str, action: &str) -> bool {
    let pattern: Vec<u8> = pattern.bytes().map(|byte| byte.to_ascii_lowercase()).collect();
    let action: Vec<u8> = action.bytes().map(|byte| byte.to_ascii_lowercase()).collect();
    glob(&pattern, &action)
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| text.get(skip..).is_some_and(|tail| glob(rest, tail))),
        Some((b'?', rest)) => text.split_first().is_some_and(|(_, tail)| glob(rest, tail)),
        Some((byte, rest)) => text.split_first().is_some_and(|(first, tail)| first == byte && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use serde_json::json;

    use super::*;
    use crate::measure::Measurements;
    use crate::policy::{PolicyOptions, key_policy};

    const PCR: &str =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";

    fn policy_with(statement: Value) -> Value {
        json!({"Version": "2012-10-17", "Statement": [statement]})
    }

    fn kinds(policy: &Value) -> Vec<FindingKind> {
        lint_policy(policy).unwrap().into_iter().map(|finding| finding.kind).collect()
    }

    fn attested(operator: &str, key: &str, value: Value) -> Value {
        json!({
            "Sid": "Enclave",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/parent"},
            "Action": ["kms:Decrypt", "kms:DeriveSharedSecret"],
            "Resource": "*",
            "Condition": {operator: {key: value}}
        })
    }

    #[test]
    fn generated_policy_passes() {
        let measurements = Measurements { pcr0: [1; 48], pcr1: [2; 48], pcr2: [3; 48], pcr8: Some([8; 48]) };
        let options = PolicyOptions {
            principal: "arn:aws:iam::111122223333:role/parent".to_owned(),
            administrator: None,
            operations: RecipientOperation::ALL.to_vec(),
            pcrs: vec!["1".parse().unwrap(), "2".parse().unwrap(), "8".parse().unwrap()],
        };
        let policy = serde_json::to_value(key_policy(&measurements, &options).unwrap()).unwrap();

        assert_eq!(lint_policy(&policy).unwrap(), Vec::new());
    }

    #[test]
    fn correct_condition_passes() {
        let policy =
            policy_with(attested("StringEqualsIgnoreCase", "kms:RecipientAttestation:ImageSha384", json!(PCR)));

        assert_eq!(kinds(&policy), Vec::new());
    }

    #[test]
    fn attestation_key_alone_is_unknown() {
        let policy = policy_with(attested("StringEqualsIgnoreCase", "kms:RecipientAttestation", json!(PCR)));

        assert_eq!(kinds(&policy), [FindingKind::UnknownConditionKey, FindingKind::RecipientAllowWithoutAttestation]);
    }

    #[test]
    fn pcr32_is_unknown() {
        let policy = policy_with(attested("StringEquals", "kms:RecipientAttestation:PCR32", json!(PCR)));

        let findings = lint_policy(&policy).unwrap();

        assert_eq!(findings[0].kind, FindingKind::UnknownConditionKey);
        assert!(findings[0].message.contains("kms:RecipientAttestation:PCR32"), "{}", findings[0].message);
        assert_eq!(findings[0].sid.as_deref(), Some("Enclave"));
    }

    #[test]
    fn misspelled_and_padded_keys_are_unknown() {
        for key in
            ["kms:RecipientAttestation:ImageSha256", "kms:RecipientAttestation:PCR01", "kms:RecipientAttestation:Pcr"]
        {
            let policy = policy_with(attested("StringEquals", key, json!(PCR)));
            assert_eq!(kinds(&policy)[0], FindingKind::UnknownConditionKey, "{key}");
        }
    }

    #[test]
    fn key_case_is_ignored() {
        let policy = policy_with(attested("StringEquals", "KMS:recipientattestation:pcr4", json!(PCR)));

        assert_eq!(kinds(&policy), Vec::new());
    }

    #[test]
    fn nitro_tpm_keys_are_known() {
        let policy = policy_with(attested("StringEquals", "kms:RecipientAttestation:NitroTPMPCR7", json!(PCR)));

        assert_eq!(kinds(&policy), Vec::new());
    }

    #[test]
    fn short_pcr_value_is_flagged() {
        let policy =
            policy_with(attested("StringEqualsIgnoreCase", "kms:RecipientAttestation:PCR0", json!([PCR, "abc123"])));

        let findings = lint_policy(&policy).unwrap();

        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, FindingKind::InvalidPcrValue);
        assert!(findings[0].message.contains("\"abc123\""), "{}", findings[0].message);
    }

    #[test]
    fn sha256_length_value_is_flagged() {
        let policy =
            policy_with(attested("StringEquals", "kms:RecipientAttestation:ImageSha384", json!("ab".repeat(32))));

        assert_eq!(kinds(&policy), [FindingKind::InvalidPcrValue]);
    }

    #[test]
    fn unconditional_allow_is_flagged() {
        let statement = json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"});

        let findings = lint_policy(&policy_with(statement)).unwrap();

        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, FindingKind::RecipientAllowWithoutAttestation);
        assert!(findings[0].message.contains("kms:Decrypt"));
    }

    #[test]
    fn wildcard_actions_are_flagged() {
        for action in [json!("kms:*"), json!("*"), json!("KMS:Generate*"), json!(["kms:Derive?haredSecret"])] {
            let statement = json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": action, "Resource": "*"});
            assert!(
                kinds(&policy_with(statement)).contains(&FindingKind::RecipientAllowWithoutAttestation),
                "{action}"
            );
        }
    }

    #[test]
    fn not_action_allow_is_flagged() {
        let statement =
            json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "NotAction": "kms:Decrypt", "Resource": "*"});

        let findings = lint_policy(&policy_with(statement)).unwrap();

        assert_eq!(findings[0].kind, FindingKind::RecipientAllowWithoutAttestation);
        assert!(!findings[0].message.contains("kms:Decrypt,"));
        assert!(findings[0].message.contains("kms:DeriveSharedSecret"));
    }

    #[test]
    fn deny_statement_is_not_flagged() {
        let statement = json!({"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"});

        assert_eq!(kinds(&policy_with(statement)), Vec::new());
    }

    #[test]
    fn non_recipient_allow_is_not_flagged() {
        let statement = json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["kms:Encrypt", "kms:DescribeKey"], "Resource": "*"});

        assert_eq!(kinds(&policy_with(statement)), Vec::new());
    }

    #[test]
    fn if_exists_operator_is_ineffective() {
        let policy =
            policy_with(attested("StringEqualsIgnoreCaseIfExists", "kms:RecipientAttestation:ImageSha384", json!(PCR)));

        assert_eq!(kinds(&policy), [FindingKind::IneffectiveOperator, FindingKind::RecipientAllowWithoutAttestation]);
    }

    #[test]
    fn negated_operator_is_ineffective() {
        let policy = policy_with(attested("StringNotEquals", "kms:RecipientAttestation:ImageSha384", json!(PCR)));

        assert_eq!(kinds(&policy), [FindingKind::IneffectiveOperator, FindingKind::RecipientAllowWithoutAttestation]);
    }

    #[test]
    fn create_grant_is_flagged_unless_for_aws_resources() {
        let open = json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:CreateGrant", "Resource": "*"});
        let restricted = json!({
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:CreateGrant", "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}
        });

        assert_eq!(kinds(&policy_with(open)), [FindingKind::GrantBypass]);
        assert_eq!(kinds(&policy_with(restricted)), Vec::new());
    }

    #[test]
    fn single_statement_object_is_accepted() {
        let policy = json!({"Statement": {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}});

        assert_eq!(kinds(&policy), [FindingKind::RecipientAllowWithoutAttestation]);
    }

    #[test]
    fn malformed_documents_are_errors() {
        let cases = [
            ("[]", "the document"),
            ("{}", "Statement is missing"),
            (r#"{"Statement": 3}"#, "Statement"),
            (r#"{"Statement": [{"Effect": "Maybe", "Action": "kms:Decrypt"}]}"#, "Statement[0].Effect"),
            (r#"{"Statement": [{"Effect": "Allow", "Action": 5}]}"#, "Statement[0].Action"),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Condition": []}]}"#,
                "Statement[0].Condition",
            ),
        ];
        for (text, fragment) in cases {
            let error = lint_policy_text(text).unwrap_err();
            assert!(error.to_string().contains(fragment), "{text}: {error}");
        }
        assert!(matches!(lint_policy_text("{").unwrap_err(), LintError::NotJson(_)));
    }

    #[test]
    fn glob_matches_iam_patterns() {
        assert!(action_matches("kms:*", "kms:Decrypt"));
        assert!(action_matches("*", "kms:Decrypt"));
        assert!(action_matches("kms:de*pt", "kms:Decrypt"));
        assert!(!action_matches("kms:Decrypt", "kms:DecryptX"));
        assert!(!action_matches("kms:Gen*Pair", "kms:GenerateDataKey"));
    }
}
