//! Blob arguments in the AWS CLI's forms: `fileb://PATH` (raw bytes),
//! `file://PATH` (the file's text) and inline text.

use std::path::Path;

/// Errors reading a blob argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("cannot read {flag} file {path}: {source}")]
    Read { flag: &'static str, path: String, source: std::io::Error },
    #[error("{flag} is empty; pass fileb://PATH, file://PATH or base64 text")]
    Empty { flag: &'static str },
    #[error("{flag} file {path} is {size} bytes, more than the {max}-byte maximum")]
    TooLarge { flag: &'static str, path: String, size: u64, max: u64 },
}

/// Largest file a blob argument reads: KMS blobs are at most a few KiB, and
/// the largest, an attestation document, at most 256 KiB.
const MAX_BLOB_FILE: u64 = 1024 * 1024;

/// Returns the bytes of a blob argument: the file's bytes for `fileb://` and
/// `file://`, otherwise the argument's own text. Decoding (base64, PEM) is
/// left to the caller, which knows what the blob should be.
pub fn read_blob_argument(flag: &'static str, argument: &str) -> Result<Vec<u8>, InputError> {
    let path = argument.strip_prefix("fileb://").or_else(|| argument.strip_prefix("file://"));
    let bytes = match path {
        Some(path) => read_bounded(flag, Path::new(path))?,
        None => argument.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(InputError::Empty { flag });
    }
    Ok(bytes)
}

fn read_bounded(flag: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    let failed = |source| InputError::Read { flag, path: path.display().to_string(), source };
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
    fn oversized_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; (MAX_BLOB_FILE + 1) as usize]).unwrap();
        let error = read_blob_argument("--x", &format!("fileb://{}", path.display())).unwrap_err();
        assert!(matches!(error, InputError::TooLarge { .. }), "{error}");
    }
}
