//! Blob arguments in the AWS CLI's forms: `fileb://PATH` (raw bytes),
//! `file://PATH` (the file's text) and inline text.

use std::collections::BTreeMap;
use std::path::Path;

/// Errors reading a blob argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    // The I/O error is in the message and not a `source`, so the printed
    // chain does not repeat it.
    #[error("cannot read {flag} file {path}: {error}")]
    Read { flag: &'static str, path: String, error: std::io::Error },
    #[error("{flag} is empty; pass fileb://PATH, file://PATH or base64 text")]
    Empty { flag: &'static str },
    #[error("{flag} file {path} is {size} bytes, more than the {max}-byte maximum")]
    TooLarge { flag: &'static str, path: String, size: u64, max: u64 },
    #[error("{flag} is not base64 text; pass a binary file with fileb://PATH")]
    NotBase64 { flag: &'static str },
    #[error("invalid {flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("cannot write {flag} {path}: {error}")]
    Write { flag: &'static str, path: String, error: std::io::Error },
}

/// Largest file a blob argument reads: KMS blobs are at most a few KiB, and
/// the largest, an attestation document, at most 256 KiB.
const MAX_BLOB_FILE: u64 = 1024 * 1024;

/// Returns the bytes of a blob argument: the file's bytes for `fileb://` and
/// `file://`, otherwise the argument's own text. Decoding (base64, PEM) is
/// left to the caller, which expects a particular form.
pub fn read_blob_argument(flag: &'static str, argument: &str) -> Result<Vec<u8>, InputError> {
    let path = argument.strip_prefix("fileb://").or_else(|| argument.strip_prefix("file://"));
    let bytes = match path {
        Some(path) => read_bounded(flag, Path::new(path))?,
        // Inline text that names an existing file is almost surely a path
        // given without its prefix.
        None if Path::new(argument).is_file() => {
            return Err(InputError::Invalid {
                flag,
                message: format!(
                    "`{argument}` is read as inline text, but it names a file; pass fileb://{argument} for its bytes"
                ),
            });
        }
        None => argument.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(InputError::Empty { flag });
    }
    Ok(bytes)
}

/// Returns the bytes of a binary blob argument as the AWS CLI reads them:
/// the file's bytes for `fileb://`, and base64-decoded text for `file://`
/// and inline values.
pub fn read_binary_blob(flag: &'static str, argument: &str) -> Result<Vec<u8>, InputError> {
    use base64::Engine as _;

    let raw = argument.starts_with("fileb://");
    let bytes = read_blob_argument(flag, argument)?;
    if raw {
        return Ok(bytes);
    }
    let text: String = String::from_utf8_lossy(&bytes).chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(|_| InputError::NotBase64 { flag })
}

/// Parses an encryption context given as JSON (`{"purpose":"test"}`) or in
/// the AWS CLI shorthand (`purpose=test,team=a`).
pub fn parse_encryption_context(argument: &str) -> Result<BTreeMap<String, String>, InputError> {
    let invalid = |message: String| InputError::Invalid { flag: "--encryption-context", message };
    let trimmed = argument.trim();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map_err(|e| invalid(format!("not a JSON object of strings ({e}); write {{\"key\":\"value\"}}")));
    }

    let mut context = BTreeMap::new();
    for pair in trimmed.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!("`{pair}` has no `=`; write key=value,key2=value2")));
        };
        if key.is_empty() {
            return Err(invalid(format!("`{pair}` has an empty key")));
        }
        if context.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(invalid(format!("key `{key}` appears twice")));
        }
    }
    Ok(context)
}

fn read_bounded(flag: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    let failed = |error| InputError::Read { flag, path: path.display().to_string(), error };
    let size = std::fs::metadata(path).map_err(failed)?.len();
    if size > MAX_BLOB_FILE {
        return Err(InputError::TooLarge { flag, path: path.display().to_string(), size, max: MAX_BLOB_FILE });
    }
    std::fs::read(path).map_err(failed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fileb_and_file_read_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.der");
        std::fs::write(&path, [0x30, 0x59, 0x00]).unwrap();
        let fileb = format!("fileb://{}", path.display());
        let file = format!("file://{}", path.display());
        assert_eq!(read_blob_argument("--public-key", &fileb).unwrap(), vec![0x30, 0x59, 0x00]);
        assert_eq!(read_blob_argument("--public-key", &file).unwrap(), vec![0x30, 0x59, 0x00]);
    }

    #[test]
    fn inline_text_is_returned_as_is() {
        assert_eq!(read_blob_argument("--public-key", "MFkw").unwrap(), b"MFkw".to_vec());
    }

    #[test]
    fn path_without_prefix_is_named() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let error = read_blob_argument("--public-key", path).unwrap_err().to_string();
        assert!(error.contains(&format!("pass fileb://{path}")), "{error}");
        assert!(error.starts_with("invalid --public-key: "), "{error}");
    }

    #[test]
    fn missing_file_names_flag_and_path() {
        let error = read_blob_argument("--public-key", "fileb:///nonexistent/peer.der").unwrap_err().to_string();
        assert!(error.contains("--public-key"), "{error}");
        assert!(error.contains("/nonexistent/peer.der"), "{error}");
    }

    #[test]
    fn empty_inputs_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(read_blob_argument("--x", ""), Err(InputError::Empty { .. })));
        let error = read_blob_argument("--x", &format!("fileb://{}", path.display())).unwrap_err();
        assert!(matches!(error, InputError::Empty { .. }), "{error}");
    }

    #[test]
    fn binary_blob_decodes_base64_unless_fileb() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("blob.bin");
        std::fs::write(&raw, [0xde, 0xad]).unwrap();
        let text = dir.path().join("blob.b64");
        std::fs::write(&text, "3q0=\n").unwrap();
        assert_eq!(read_binary_blob("--x", &format!("fileb://{}", raw.display())).unwrap(), vec![0xde, 0xad]);
        assert_eq!(read_binary_blob("--x", &format!("file://{}", text.display())).unwrap(), vec![0xde, 0xad]);
        assert_eq!(read_binary_blob("--x", "3q0=").unwrap(), vec![0xde, 0xad]);
        let error = read_binary_blob("--ciphertext-blob", "not base64!").unwrap_err();
        assert!(matches!(error, InputError::NotBase64 { flag: "--ciphertext-blob" }), "{error}");
        assert!(error.to_string().contains("fileb://"), "{error}");
    }

    #[test]
    fn encryption_context_json_and_shorthand() {
        let expected: BTreeMap<String, String> =
            [("purpose".to_owned(), "test".to_owned()), ("team".to_owned(), "a=b".to_owned())].into();
        assert_eq!(parse_encryption_context(r#"{"purpose":"test","team":"a=b"}"#).unwrap(), expected);
        assert_eq!(parse_encryption_context("purpose=test,team=a=b").unwrap(), expected);
    }

    #[test]
    fn encryption_context_errors_name_the_problem() {
        for (argument, expected) in [
            ("purpose", "has no `=`"),
            ("=x", "empty key"),
            ("a=1,a=2", "appears twice"),
            (r#"{"a": 1}"#, "JSON object of strings"),
        ] {
            let error = parse_encryption_context(argument).unwrap_err().to_string();
            assert!(error.contains(expected), "{argument}: {error}");
            assert!(error.contains("--encryption-context"), "{error}");
        }
    }

    #[test]
    fn oversized_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; (MAX_BLOB_FILE + 1) as usize]).unwrap();
        let error = read_blob_argument("--x", &format!("fileb://{}", path.display())).unwrap_err();
        assert!(matches!(error, InputError::TooLarge { .. }), "{error}");
    }
}
