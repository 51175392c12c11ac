//! Output files that appear whole or not at all. The content goes to a
//! temporary file in the output's directory, which is renamed over the
//! output at the end. Errors name the output path and its directory, never
//! the temporary file, because its name means nothing to the user.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Errors creating or replacing an output file. Each message starts with
/// the output path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output path names an existing directory.
    #[error("cannot write {path}: it is a directory; pass the path of a file to create")]
    IsADirectory { path: PathBuf },
    /// The directory that would contain the output does not exist.
    #[error("cannot write {path}: directory {directory} does not exist; create it or choose another output path")]
    MissingDirectory { path: PathBuf, directory: PathBuf },
    /// The path that would contain the output is not a directory.
    #[error("cannot write {path}: {directory} is not a directory; choose an output path inside a directory")]
    ParentNotADirectory { path: PathBuf, directory: PathBuf },
    /// The directory rejects new files (permissions or a read-only file system).
    #[error(
        "cannot write {path}: directory {directory} is not writable ({kind}); choose another output path or make the directory writable"
    )]
    DirectoryNotWritable { path: PathBuf, directory: PathBuf, kind: io::ErrorKind },
    /// Creating the temporary file failed for another reason.
    #[error("cannot write {path}: cannot create a temporary file in {directory} ({kind}); choose another output path")]
    Create { path: PathBuf, directory: PathBuf, kind: io::ErrorKind },
    /// Renaming the finished temporary file over the output failed.
    #[error("cannot write {path}: cannot rename the finished file to it: {error}")]
    Rename { path: PathBuf, error: io::Error },
}

/// An output file being written: a temporary file in the output's
/// directory, deleted on drop unless [`OutputFile::persist`] renames it to
/// the output path.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    temporary: NamedTempFile,
}

impl OutputFile {
    /// Creates the temporary file next to `path`, or reports why `path`
    /// cannot be written.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        if path.is_dir() {
            return Err(OutputError::IsADirectory { path: path.to_owned() });
        }
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        match fs::metadata(directory) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(OutputError::ParentNotADirectory {
                    path: path.to_owned(),
                    directory: directory.to_owned(),
                });
            }
            // NotADirectory: a component above the directory is a file, so
            // the directory itself cannot exist either.
            Err(error) if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Err(OutputError::MissingDirectory { path: path.to_owned(), directory: directory.to_owned() });
            }
            // Any other failure to inspect the directory shows again, with
            // its kind, when the temporary file is created below.
            Err(_) => {}
        }

        // Mode 0666 less the umask, as for a file that File::create makes:
        // images and ramdisks are not secret. tempfile's own error names the
        // temporary file, so only its kind is kept.
        let temporary = tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(directory)
            .map_err(|error| {
                let kind = error.kind();
                let path = path.to_owned();
                let directory = directory.to_owned();
                match kind {
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                        OutputError::DirectoryNotWritable { path, directory, kind }
                    }
                    _ => OutputError::Create { path, directory, kind },
                }
            })?;
        Ok(Self { path: path.to_owned(), temporary })
    }

    /// Returns the temporary file to write to. Its write errors do not name
    /// the temporary file, unlike those of [`NamedTempFile`]'s `Write`.
    pub fn file(&mut self) -> &mut File {
        self.temporary.as_file_mut()
    }

    /// Renames the temporary file to the output path, replacing any file
    /// there.
    pub fn persist(self) -> Result<(), OutputError> {
        let path = self.path;
        match self.temporary.persist(&path) {
            Ok(_) => Ok(()),
            Err(error) => Err(OutputError::Rename { path, error: error.error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn persisted_file_has_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");

        let mut output = OutputFile::create(&path).unwrap();
        output.file().write_all(b"content").unwrap();
        output.persist().unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn persisted_file_has_usual_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let reference = dir.path().join("reference");
        File::create(&reference).unwrap();

        let output = OutputFile::create(&path).unwrap();
        output.persist().unwrap();

        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&reference));
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");

        let mut output = OutputFile::create(&path).unwrap();
        output.file().write_all(b"partial").unwrap();
        drop(output);

        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent/out.bin");

        let error = OutputFile::create(&path).unwrap_err();

        assert!(matches!(error, OutputError::MissingDirectory { .. }), "{error:?}");
        let expected = format!(
            "cannot write {}: directory {} does not exist; create it or choose another output path",
            path.display(),
            dir.path().join("absent").display()
        );
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn file_as_parent_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();

        let error = OutputFile::create(&file.join("out.bin")).unwrap_err();

        assert!(matches!(error, OutputError::ParentNotADirectory { .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("{} is not a directory", file.display())));
    }

    #[test]
    fn directory_under_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();

        let error = OutputFile::create(&file.join("sub/out.bin")).unwrap_err();

        assert!(matches!(error, OutputError::MissingDirectory { .. }), "{error:?}");
    }

    #[test]
    fn directory_output_is_rejected() {
        let dir = tempfile::tempdir().unwrap();

        let error = OutputFile::create(dir.path()).unwrap_err();

        assert!(matches!(error, OutputError::IsADirectory { .. }), "{error:?}");
        assert!(error.to_string().contains("it is a directory"));
    }
}
