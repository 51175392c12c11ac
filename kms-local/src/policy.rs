//! Key policies: parsing, validation and evaluation.
//!
//! A policy is the IAM JSON policy language restricted to what KMS key
//! policies use: statements with `Effect`, `Principal`, `Action` or
//! `NotAction`, `Resource`, and `Condition`. A request is allowed when some
//! Allow statement matches and no Deny statement matches; an explicit Deny
//! wins. kms-local has no IAM policies, so a statement whose principal is an
//! account (`arn:aws:iam::ACCOUNT:root` or `ACCOUNT`) matches every principal
//! of that account, as it would in AWS with IAM policies that allow the call.
//!
//! Condition operators: `StringEquals`, `StringNotEquals`,
//! `StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, `StringLike`,
//! `StringNotLike`, `Null` and `Bool`, each also with the `IfExists` suffix.
//! Condition keys: `kms:RecipientAttestation:ImageSha384`,
//! `kms:RecipientAttestation:PCR0` … `PCR31`, `kms:CallerAccount`,
//! `kms:ViaService` (never present, because kms-local has no integrated
//! services), `aws:PrincipalArn` and `aws:PrincipalAccount`. Key names are
//! case-insensitive; an unknown key is absent from every request.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{ErrorKind, KmsError, KmsResult};

/// The longest key policy AWS KMS accepts, in characters.
pub const MAX_POLICY_LENGTH: usize = 32_768;

/// Builds the default key policy: the account root may do everything.
pub fn default_policy(account_id: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

/// A parsed key policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
enum Principals {
    Any,
    /// IAM principals (ARNs or account ids); other principal types (Service,
    /// Federated) never match a SigV4 caller of kms-local.
    Listed(Vec<String>),
}

#[derive(Debug, Clone)]
struct Statement {
    /// The Sid, or `#N` (the statement's position) when it has none.
    label: String,
    effect: Effect,
    principals: Principals,
    /// `NotPrincipal` instead of `Principal`.
    not_principal: bool,
    actions: Vec<String>,
    not_action: bool,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    Null,
    Bool,
}

impl Operator {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Self::StringEquals,
            "StringNotEquals" => Self::StringNotEquals,
            "StringEqualsIgnoreCase" => Self::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Self::StringNotEqualsIgnoreCase,
            "StringLike" => Self::StringLike,
            "StringNotLike" => Self::StringNotLike,
            "Null" => Self::Null,
            "Bool" => Self::Bool,
            _ => return None,
        })
    }

    fn is_negated(self) -> bool {
        matches!(self, Self::StringNotEquals | Self::StringNotEqualsIgnoreCase | Self::StringNotLike)
    }
}

#[derive(Debug, Clone)]
struct Condition {
    /// The operator as written, for log messages.
    text: String,
    operator: Operator,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

/// What a request offers to the policy.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub principal_arn: &'a str,
    pub caller_account: &'a str,
    /// The IAM action, e.g. `kms:DeriveSharedSecret`.
    pub action: &'a str,
    /// The key ARN.
    pub resource: &'a str,
    /// The PCRs of a verified `Recipient` attestation document, if the request
    /// carried one.
    pub recipient_pcrs: Option<&'a BTreeMap<u32, Vec<u8>>>,
}

impl RequestContext<'_> {
    /// Returns the value of a condition key, or `None` when the request lacks it.
    fn value(&self, key: &str) -> Option<String> {
        let key = key.to_ascii_lowercase();
        match key.as_str() {
            "kms:calleraccount" | "aws:principalaccount" => return Some(self.caller_account.to_owned()),
            "aws:principalarn" => return Some(self.principal_arn.to_owned()),
            "kms:recipientattestation:imagesha384" => {
                return self.recipient_pcrs?.get(&0).map(hex::encode);
            }
            _ => {}
        }
        let index: u32 = key.strip_prefix("kms:recipientattestation:pcr")?.parse().ok()?;
        if index > 31 {
            return None;
        }
        self.recipient_pcrs?.get(&index).map(hex::encode)
    }
}

/// The outcome of evaluating a policy, with the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Which statement decided, and why the others did not apply.
    pub reason: String,
}

fn malformed(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorKind::MalformedPolicyDocument, message)
}

/// Reads a string or an array of strings.
fn strings(value: &Value, field: &str, label: &str) -> KmsResult<Vec<String>> {
    let list = match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(malformed(format!("statement {label}: {field} contains {other}; expected strings"))),
            })
            .collect::<KmsResult<_>>()?,
        other => {
            return Err(malformed(format!(
                "statement {label}: {field} is {other}; expected a string or a list of strings"
            )));
        }
    };
    if list.is_empty() {
        return Err(malformed(format!("statement {label}: {field} is empty")));
    }
    Ok(list)
}

impl Policy {
    /// Parses and validates a key policy document.
    pub fn parse(text: &str) -> KmsResult<Self> {
        if text.len() > MAX_POLICY_LENGTH {
            return Err(malformed(format!("policy has {} characters; the maximum is {MAX_POLICY_LENGTH}", text.len())));
        }
        let document: Value =
            serde_json::from_str(text).map_err(|error| malformed(format!("policy is not valid JSON: {error}")))?;
        let Value::Object(document) = document else {
            return Err(malformed("policy must be a JSON object"));
        };
        for field in document.keys() {
            if !matches!(field.as_str(), "Version" | "Id" | "Statement") {
                return Err(malformed(format!("unknown policy element {field:?}; expected Version, Id and Statement")));
            }
        }
        match document.get("Version") {
            None => {}
            Some(Value::String(version)) if version == "2012-10-17" || version == "2008-10-17" => {}
            Some(other) => return Err(malformed(format!("policy Version {other} is not 2012-10-17 or 2008-10-17"))),
        }
        let statements = match document.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(item @ Value::Object(_)) => vec![item.clone()],
            Some(other) => return Err(malformed(format!("policy Statement is {other}; expected an object or a list"))),
            None => return Err(malformed("policy has no Statement")),
        };
        if statements.is_empty() {
            return Err(malformed("policy Statement is empty"));
        }
        let statements = statements
            .iter()
            .enumerate()
            .map(|(index, value)| Statement::parse(index, value))
            .collect::<KmsResult<_>>()?;
        Ok(Self { statements })
    }

    /// Evaluates the policy for one request: an explicit Deny wins, then any
    /// Allow, else the request is implicitly denied.
    pub fn evaluate(&self, context: &RequestContext<'_>) -> Decision {
        let mut allowed_by = None;
        let mut notes = Vec::new();
        for statement in &self.statements {
            match statement.applies(context) {
                Ok(()) if statement.effect == Effect::Deny => {
                    return Decision {
                        allowed: false,
                        reason: format!("explicit Deny in statement {}", statement.label),
                    };
                }
                Ok(()) => {
                    if allowed_by.is_none() {
                        allowed_by = Some(statement.label.clone());
                    }
                }
                Err(why) => notes.push(format!("statement {} does not apply: {why}", statement.label)),
            }
        }
        match allowed_by {
            Some(label) => Decision { allowed: true, reason: format!("allowed by statement {label}") },
            None if notes.is_empty() => {
                Decision { allowed: false, reason: "no statement allows the request".to_owned() }
            }
            None => {
                Decision { allowed: false, reason: format!("no statement allows the request ({})", notes.join("; ")) }
            }
        }
    }
}

impl Statement {
    fn parse(index: usize, value: &Value) -> KmsResult<Self> {
        let Value::Object(fields) = value else {
            return Err(malformed(format!("statement #{index} is not a JSON object")));
        };
        let label = match fields.get("Sid") {
            Some(Value::String(sid)) => format!("{sid:?}"),
            None => format!("#{index}"),
            Some(other) => return Err(malformed(format!("statement #{index}: Sid is {other}; expected a string"))),
        };
        for field in fields.keys() {
            if !matches!(
                field.as_str(),
                "Sid" | "Effect" | "Principal" | "NotPrincipal" | "Action" | "NotAction" | "Resource" | "Condition"
            ) {
                return Err(malformed(format!("statement {label}: unknown element {field:?}")));
            }
        }

        let effect = match fields.get("Effect") {
            Some(Value::String(effect)) if effect == "Allow" => Effect::Allow,
            Some(Value::String(effect)) if effect == "Deny" => Effect::Deny,
            Some(other) => {
                return Err(malformed(format!("statement {label}: Effect is {other}; expected \"Allow\" or \"Deny\"")));
            }
            None => return Err(malformed(format!("statement {label}: Effect is missing"))),
        };

        let (principal, not_principal) = match (fields.get("Principal"), fields.get("NotPrincipal")) {
            (Some(value), None) => (value, false),
            (None, Some(value)) => (value, true),
            (Some(_), Some(_)) => {
                return Err(malformed(format!("statement {label}: has both Principal and NotPrincipal")));
            }
            (None, None) => {
                return Err(malformed(format!(
                    "statement {label}: Principal is missing; key policies must name a principal"
                )));
            }
        };
        let principals = parse_principals(principal, &label)?;

        let (actions, not_action) = match (fields.get("Action"), fields.get("NotAction")) {
            (Some(value), None) => (strings(value, "Action", &label)?, false),
            (None, Some(value)) => (strings(value, "NotAction", &label)?, true),
            (Some(_), Some(_)) => return Err(malformed(format!("statement {label}: has both Action and NotAction"))),
            (None, None) => return Err(malformed(format!("statement {label}: Action is missing"))),
        };
        for action in &actions {
            let lower = action.to_ascii_lowercase();
            if action != "*" && !lower.starts_with("kms:") {
                return Err(malformed(format!("statement {label}: action {action:?} is not a kms: action")));
            }
        }

        let resources = match fields.get("Resource") {
            Some(value) => strings(value, "Resource", &label)?,
            None => return Err(malformed(format!("statement {label}: Resource is missing; use \"*\" for this key"))),
        };

        let conditions = match fields.get("Condition") {
            None => Vec::new(),
            Some(value) => parse_conditions(value, &label)?,
        };

        Ok(Self { label, effect, principals, not_principal, actions, not_action, resources, conditions })
    }

    /// Returns `Ok(())` when the statement applies to the request, or the
    /// first part that does not match.
    fn applies(&self, context: &RequestContext<'_>) -> Result<(), String> {
        let principal_matches = self.principals.matches(context.principal_arn, context.caller_account);
        if principal_matches == self.not_principal {
            return Err(format!("principal {} does not match", context.principal_arn));
        }

        let action_matches = self
            .actions
            .iter()
            .any(|pattern| glob_match(&pattern.to_ascii_lowercase(), &context.action.to_ascii_lowercase()));
        if action_matches == self.not_action {
            return Err(format!("action {} does not match", context.action));
        }

        if !self.resources.iter().any(|pattern| glob_match(pattern, context.resource)) {
            return Err(format!("resource {} does not match", context.resource));
        }

        for condition in &self.conditions {
            condition.check(context)?;
        }
        Ok(())
    }
}

impl Principals {
    fn matches(&self, arn: &str, account: &str) -> bool {
        let Self::Listed(entries) = self else {
            return true;
        };
        entries.iter().any(|entry| {
            entry == "*"
                || entry == arn
                || entry == account
                || entry.strip_prefix("arn:aws:iam::").and_then(|rest| rest.strip_suffix(":root")) == Some(account)
        })
    }
}

fn parse_principals(value: &Value, label: &str) -> KmsResult<Principals> {
    match value {
        Value::String(text) if text == "*" => Ok(Principals::Any),
        Value::String(text) => Err(malformed(format!(
            "statement {label}: Principal {text:?} must be \"*\" or an object such as {{\"AWS\": \"arn:aws:iam::111122223333:root\"}}"
        ))),
        Value::Object(kinds) => {
            let mut listed = Vec::new();
            for (kind, entries) in kinds {
                let entries = strings(entries, &format!("Principal.{kind}"), label)?;
                match kind.as_str() {
                    "AWS" => {
                        for entry in &entries {
                            let valid = entry == "*"
                                || crate::credentials::is_account_id(entry)
                                || crate::credentials::principal_account(entry).is_some();
                            if !valid {
                                return Err(malformed(format!(
                                    "statement {label}: principal {entry:?} is not an account id or an IAM ARN"
                                )));
                            }
                        }
                        listed.extend(entries);
                    }
                    "Service" | "Federated" | "CanonicalUser" => {}
                    other => return Err(malformed(format!("statement {label}: unknown principal type {other:?}"))),
                }
            }
            Ok(Principals::Listed(listed))
        }
        other => Err(malformed(format!("statement {label}: Principal is {other}; expected \"*\" or an object"))),
    }
}

fn parse_conditions(value: &Value, label: &str) -> KmsResult<Vec<Condition>> {
    let Value::Object(operators) = value else {
        return Err(malformed(format!("statement {label}: Condition must be an object of operators")));
    };
    let mut conditions = Vec::new();
    for (text, block) in operators {
        let (name, if_exists) = match text.strip_suffix("IfExists") {
            Some(name) => (name, true),
            None => (text.as_str(), false),
        };
        let operator = Operator::parse(name).ok_or_else(|| {
            malformed(format!(
                "statement {label}: unknown condition operator {text:?}; kms-local supports StringEquals, \
                 StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike, StringNotLike, \
                 Null and Bool (each optionally with IfExists)"
            ))
        })?;
        if operator == Operator::Null && if_exists {
            return Err(malformed(format!("statement {label}: NullIfExists is not a valid operator")));
        }
        let Value::Object(keys) = block else {
            return Err(malformed(format!("statement {label}: condition {text} must map condition keys to values")));
        };
        if keys.is_empty() {
            return Err(malformed(format!("statement {label}: condition {text} is empty")));
        }
        for (key, values) in keys {
            if !key.contains(':') {
                return Err(malformed(format!(
                    "statement {label}: condition key {key:?} has no service prefix, e.g. kms:RecipientAttestation:ImageSha384"
                )));
            }
            let values = condition_values(values).ok_or_else(|| {
                malformed(format!("statement {label}: values of {text} {key} must be strings, booleans or numbers"))
            })?;
            if matches!(operator, Operator::Null | Operator::Bool)
                && values.iter().any(|value| value != "true" && value != "false")
            {
                return Err(malformed(format!("statement {label}: {text} {key} takes \"true\" or \"false\"")));
            }
            conditions.push(Condition { text: text.clone(), operator, if_exists, key: key.clone(), values });
        }
    }
    Ok(conditions)
}

fn condition_values(value: &Value) -> Option<Vec<String>> {
    let one = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    let values: Vec<String> = match value {
        Value::Array(items) => items.iter().map(one).collect::<Option<_>>()?,
        other => vec![one(other)?],
    };
    (!values.is_empty()).then_some(values)
}

impl Condition {
    fn check(&self, context: &RequestContext<'_>) -> Result<(), String> {
        let actual = context.value(&self.key);
        let failed = |found: &str| {
            format!("condition {} {} = {:?} is not met (request value: {found})", self.text, self.key, self.values)
        };

        if self.operator == Operator::Null {
            let want_absent = self.values.iter().any(|value| value == "true");
            return if want_absent == actual.is_none() {
                Ok(())
            } else {
                Err(failed(actual.as_deref().unwrap_or("absent")))
            };
        }

        let Some(actual) = actual else {
            // An absent key satisfies ...IfExists and the negated operators,
            // and fails every other operator.
            return if self.if_exists || self.operator.is_negated() { Ok(()) } else { Err(failed("absent")) };
        };

        let matches = |value: &String| match self.operator {
            Operator::StringEquals | Operator::StringNotEquals | Operator::Bool => *value == actual,
            Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase => {
                value.eq_ignore_ascii_case(&actual)
            }
            Operator::StringLike | Operator::StringNotLike => glob_match(value, &actual),
            Operator::Null => false,
        };
        let any = self.values.iter().any(matches);
        if any != self.operator.is_negated() { Ok(()) } else { Err(failed(&actual)) }
    }
}

/// Matches `text` against a pattern where `*` is any run of characters and
/// `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/k";
    const ROOT: &str = "arn:aws:iam::111122223333:root";

    fn context<'a>(action: &'a str, pcrs: Option<&'a BTreeMap<u32, Vec<u8>>>) -> RequestContext<'a> {
        RequestContext {
            principal_arn: ROOT,
            caller_account: "111122223333",
            action,
            resource: KEY,
            recipient_pcrs: pcrs,
        }
    }

    fn pcrs(pcr0: u8) -> BTreeMap<u32, Vec<u8>> {
        BTreeMap::from([(0, vec![pcr0; 48]), (8, vec![0x11; 48])])
    }

    fn recipient_policy(operator: &str, value: &str) -> Policy {
        Policy::parse(&format!(
            r#"{{"Version": "2012-10-17", "Statement": [
                {{"Sid": "Admin", "Effect": "Allow", "Principal": {{"AWS": "{ROOT}"}}, "NotAction": "kms:DeriveSharedSecret", "Resource": "*"}},
                {{"Sid": "Enclave", "Effect": "Allow", "Principal": {{"AWS": "111122223333"}}, "Action": "kms:DeriveSharedSecret", "Resource": "*",
                  "Condition": {{"{operator}": {{"kms:RecipientAttestation:ImageSha384": "{value}"}}}}}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn default_policy_allows_every_kms_action_for_the_account() {
        let policy = Policy::parse(&default_policy("111122223333")).unwrap();
        assert!(policy.evaluate(&context("kms:DeriveSharedSecret", None)).allowed);
        assert!(policy.evaluate(&context("kms:PutKeyPolicy", None)).allowed);
        let mut other = context("kms:Decrypt", None);
        other.principal_arn = "arn:aws:iam::444455556666:root";
        other.caller_account = "444455556666";
        assert!(!policy.evaluate(&other).allowed);
    }

    #[test]
    fn image_sha384_condition_matrix() {
        let pcrs_a = pcrs(0xab);
        let pcrs_b = pcrs(0xcd);
        let hex_a = hex::encode([0xab_u8; 48]);

        let exact = recipient_policy("StringEquals", &hex_a);
        assert!(exact.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_a))).allowed);
        let denied = exact.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_b)));
        assert!(!denied.allowed);
        assert!(denied.reason.contains("statement \"Enclave\" does not apply"), "{}", denied.reason);
        assert!(!exact.evaluate(&context("kms:DeriveSharedSecret", None)).allowed, "no Recipient");

        let upper = recipient_policy("StringEqualsIgnoreCase", &hex_a.to_uppercase());
        assert!(upper.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_a))).allowed);
        let upper_exact = recipient_policy("StringEquals", &hex_a.to_uppercase());
        assert!(!upper_exact.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_a))).allowed);

        let like = recipient_policy("StringLike", "abab*");
        assert!(like.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_a))).allowed);
        let not_equals = recipient_policy("StringNotEquals", &hex_a);
        assert!(!not_equals.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_a))).allowed);
        assert!(not_equals.evaluate(&context("kms:DeriveSharedSecret", Some(&pcrs_b))).allowed);
    }

    #[test]
    fn explicit_deny_beats_allow() {
        let policy = Policy::parse(&format!(
            r#"{{"Statement": [
                {{"Effect": "Allow", "Principal": {{"AWS": "{ROOT}"}}, "Action": "kms:*", "Resource": "*"}},
                {{"Sid": "NoPlainSecrets", "Effect": "Deny", "Principal": "*", "Action": "kms:DeriveSharedSecret", "Resource": "*",
                  "Condition": {{"Null": {{"kms:RecipientAttestation:PCR0": "true"}}}}}}]}}"#
        ))
        .unwrap();
        let decision = policy.evaluate(&context("kms:DeriveSharedSecret", None));
        assert!(!decision.allowed);
        assert_eq!(decision.reason, "explicit Deny in statement \"NoPlainSecrets\"");
        let with_recipient = pcrs(1);
        assert!(policy.evaluate(&context("kms:DeriveSharedSecret", Some(&with_recipient))).allowed);
    }

    #[test]
    fn pcr_keys_and_caller_account() {
        let policy = Policy::parse(&format!(
            r#"{{"Statement": [{{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
                "Condition": {{"StringEquals": {{"kms:RecipientAttestation:PCR8": "{}", "kms:CallerAccount": "111122223333"}},
                               "Null": {{"kms:ViaService": "true"}}}}}}]}}"#,
            hex::encode([0x11_u8; 48])
        ))
        .unwrap();
        let values = pcrs(0);
        assert!(policy.evaluate(&context("kms:Decrypt", Some(&values))).allowed);
        let mut other_account = context("kms:Decrypt", Some(&values));
        other_account.caller_account = "444455556666";
        assert!(!policy.evaluate(&other_account).allowed);
        assert!(!policy.evaluate(&context("kms:Encrypt", Some(&values))).allowed);
    }

    #[test]
    fn malformed_policies_name_the_problem() {
        let cases = [
            ("not json", "not valid JSON"),
            (r#"{"Statement": []}"#, "Statement is empty"),
            (r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}]}"#, "Resource is missing"),
            (
                r#"{"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}"#,
                "Effect is \"Maybe\"",
            ),
            (r#"{"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}"#, "Principal is missing"),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringSortOf": {"kms:CallerAccount": "1"}}}]}"#,
                "unknown condition operator \"StringSortOf\"",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "alice"}, "Action": "kms:*", "Resource": "*"}]}"#,
                "principal \"alice\" is not an account id",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}"#,
                "not a kms: action",
            ),
            (r#"{"Version": "2020-01-01", "Statement": {}}"#, "Version \"2020-01-01\""),
        ];
        for (text, expected) in cases {
            let error = Policy::parse(text).unwrap_err();
            assert_eq!(error.kind, ErrorKind::MalformedPolicyDocument, "{text}");
            assert!(error.message.contains(expected), "{:?} lacks {expected:?}", error.message);
        }
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("kms:*", "kms:decrypt"));
        assert!(glob_match("kms:generatedatakey*", "kms:generatedatakeypair"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("kms:encrypt", "kms:encrypt2"));
        assert!(glob_match("*:key/*", KEY));
    }
}
