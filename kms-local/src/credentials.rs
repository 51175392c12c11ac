//! The access keys kms-local accepts, the account that owns its keys, and its
//! region.
//!
//! `--credentials FILE` reads a JSON file of this shape:
//!
//! ```json
//! {
//!   "account_id": "111122223333",
//!   "region": "us-east-1",
//!   "credentials": [
//!     {
//!       "access_key_id": "AKIAKMSLOCALEXAMPLE",
//!       "secret_access_key": "kms-local-example-secret",
//!       "principal_arn": "arn:aws:iam::111122223333:user/alice"
//!     }
//!   ]
//! }
//! ```
//!
//! `account_id` and `region` default to the development values below;
//! `principal_arn` defaults to the root of `account_id`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use zeroize::Zeroizing;

/// The development access key id accepted when no credentials file is given.
pub const DEV_ACCESS_KEY_ID: &str = "AKIAKMSLOCALEXAMPLE";
/// The secret of [`DEV_ACCESS_KEY_ID`]. It is public, so it protects nothing.
pub const DEV_SECRET_ACCESS_KEY: &str = "kms-local-example-secret";
/// The account that owns keys unless a credentials file names another.
pub const DEV_ACCOUNT_ID: &str = "111122223333";
/// The region in key ARNs and in the SigV4 scope unless a credentials file
/// names another.
pub const DEV_REGION: &str = "us-east-1";

/// Errors reading a credentials file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("credentials file {path} is not valid JSON of the documented shape: {message}")]
    Json { path: String, message: String },
    #[error("credentials file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// One access key and the principal it signs as.
pub struct Principal {
    pub access_key_id: String,
    secret_access_key: Zeroizing<String>,
    /// The IAM ARN that key policies match against, e.g. `arn:aws:iam::111122223333:root`.
    pub arn: String,
    /// The account of `arn` (the `kms:CallerAccount` condition key).
    pub account_id: String,
    /// The SigV4 signing key of the last scope verified (date and region),
    /// because a client signs with the same one all day.
    signing_key: std::sync::Mutex<Option<(String, String, aws_lc_rs::hmac::Key)>>,
}

impl Principal {
    fn new(access_key_id: String, secret_access_key: Zeroizing<String>, arn: String, account_id: String) -> Self {
        Self { access_key_id, secret_access_key, arn, account_id, signing_key: std::sync::Mutex::new(None) }
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// Returns the SigV4 signing key of `date` (YYYYMMDD), `region` and the
    /// service `kms`, derived from the secret on first use.
    pub fn signing_key(&self, date: &str, region: &str) -> aws_lc_rs::hmac::Key {
        let mut last = self.signing_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((last_date, last_region, key)) = &*last
            && last_date == date
            && last_region == region
        {
            return key.clone();
        }
        let key = crate::sigv4::signing_key(self.secret_access_key(), date, region, crate::sigv4::SERVICE);
        *last = Some((date.to_owned(), region.to_owned(), key.clone()));
        key
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("arn", &self.arn)
            .finish()
    }
}

/// The configured access keys, the owning account and the region.
#[derive(Debug)]
pub struct Credentials {
    pub account_id: String,
    pub region: String,
    principals: HashMap<String, Principal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    account_id: Option<String>,
    region: Option<String>,
    credentials: Vec<CredentialEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    principal_arn: Option<String>,
}

impl Default for Credentials {
    fn default() -> Self {
        Self::development()
    }
}

impl Credentials {
    /// Returns the development pair: [`DEV_ACCESS_KEY_ID`] signing as the root of
    /// [`DEV_ACCOUNT_ID`] in [`DEV_REGION`].
    pub fn development() -> Self {
        let principal = Principal::new(
            DEV_ACCESS_KEY_ID.to_owned(),
            Zeroizing::new(DEV_SECRET_ACCESS_KEY.to_owned()),
            format!("arn:aws:iam::{DEV_ACCOUNT_ID}:root"),
            DEV_ACCOUNT_ID.to_owned(),
        );
        Self {
            account_id: DEV_ACCOUNT_ID.to_owned(),
            region: DEV_REGION.to_owned(),
            principals: HashMap::from([(principal.access_key_id.clone(), principal)]),
        }
    }

    /// Reads a credentials file (see the module documentation for its shape).
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let path_text = path.display().to_string();
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|error| CredentialsError::Read { path: path_text.clone(), error })?,
        );
        Self::from_json(&text).map_err(|error| match error {
            CredentialsError::Json { message, .. } => CredentialsError::Json { path: path_text, message },
            CredentialsError::Invalid { message, .. } => CredentialsError::Invalid { path: path_text, message },
            other => other,
        })
    }

    /// Parses the JSON text of a credentials file.
    pub fn from_json(text: &str) -> Result<Self, CredentialsError> {
        let invalid = |message: String| CredentialsError::Invalid { path: String::new(), message };
        let file: CredentialsFile = serde_json::from_str(text)
            .map_err(|error| CredentialsError::Json { path: String::new(), message: error.to_string() })?;

        let account_id = file.account_id.unwrap_or_else(|| DEV_ACCOUNT_ID.to_owned());
        if !is_account_id(&account_id) {
            return Err(invalid(format!("account_id {account_id:?} is not a 12-digit AWS account id")));
        }
        let region = file.region.unwrap_or_else(|| DEV_REGION.to_owned());
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid(format!("region {region:?} is not a region name such as us-east-1")));
        }
        if file.credentials.is_empty() {
            return Err(invalid("credentials is empty; list at least one access key".to_owned()));
        }

        let mut principals = HashMap::new();
        for entry in file.credentials {
            if entry.access_key_id.is_empty() || entry.secret_access_key.is_empty() {
                return Err(invalid("an entry has an empty access_key_id or secret_access_key".to_owned()));
            }
            let arn = entry.principal_arn.unwrap_or_else(|| format!("arn:aws:iam::{account_id}:root"));
            let principal_account = principal_account(&arn).ok_or_else(|| {
                invalid(format!(
                    "principal_arn {arn:?} of access key {} is not an IAM ARN such as arn:aws:iam::111122223333:user/NAME",
                    entry.access_key_id
                ))
            })?;
            let principal_account = principal_account.to_owned();
            let principal =
                Principal::new(entry.access_key_id.clone(), entry.secret_access_key, arn, principal_account);
            if principals.insert(entry.access_key_id.clone(), principal).is_some() {
                return Err(invalid(format!("access key {} is listed twice", entry.access_key_id)));
            }
        }
        Ok(Self { account_id, region, principals })
    }

    /// Returns the principal of an access key id, if it is configured.
    pub fn principal(&self, access_key_id: &str) -> Option<&Principal> {
        self.principals.get(access_key_id)
    }
}

/// Returns the account of an IAM or STS ARN (`arn:aws:iam::ACCOUNT:…`).
pub(crate) fn principal_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("iam" | "sts"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (is_account_id(account) && !resource.is_empty()).then_some(account)
}

pub(crate) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn development_pair_signs_as_account_root() {
        let credentials = Credentials::development();
        let principal = credentials.principal(DEV_ACCESS_KEY_ID).unwrap();
        assert_eq!(principal.secret_access_key(), DEV_SECRET_ACCESS_KEY);
        assert_eq!(principal.arn, "arn:aws:iam::111122223333:root");
        assert_eq!(credentials.region, "us-east-1");
    }

    #[test]
    fn file_with_two_users_parses() {
        let credentials = Credentials::from_json(
            r#"{"region": "eu-west-1", "credentials": [
                {"access_key_id": "AKIA1", "secret_access_key": "s1", "principal_arn": "arn:aws:iam::111122223333:user/alice"},
                {"access_key_id": "AKIA2", "secret_access_key": "s2", "principal_arn": "arn:aws:iam::444455556666:role/other"}]}"#,
        )
        .unwrap();
        assert_eq!(credentials.region, "eu-west-1");
        assert_eq!(credentials.account_id, DEV_ACCOUNT_ID);
        assert_eq!(credentials.principal("AKIA2").unwrap().account_id, "444455556666");
        assert!(credentials.principal("AKIA3").is_none());
    }

    #[test]
    fn file_errors_name_the_value() {
        let cases = [
            (r#"{"credentials": []}"#, "credentials is empty"),
            (r#"{"account_id": "12", "credentials": []}"#, "\"12\" is not a 12-digit"),
            (
                r#"{"credentials": [{"access_key_id": "A", "secret_access_key": "s", "principal_arn": "alice"}]}"#,
                "principal_arn \"alice\"",
            ),
            (
                r#"{"credentials": [{"access_key_id": "A", "secret_access_key": "s"}, {"access_key_id": "A", "secret_access_key": "t"}]}"#,
                "listed twice",
            ),
        ];
        for (text, expected) in cases {
            let message = Credentials::from_json(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        let message = Credentials::from_json(r#"{"credentials": [], "extra": 1}"#).unwrap_err().to_string();
        assert!(message.contains("unknown field `extra`"), "{message}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let credentials = Credentials::development();
        let debug_text = format!("{:?}", credentials.principal(DEV_ACCESS_KEY_ID).unwrap());
        assert!(!debug_text.contains(DEV_SECRET_ACCESS_KEY));
    }
}
