//! Reproducible ramdisks: a directory tree as a newc cpio archive, the
//! format the Linux kernel unpacks into its initial root file system.
//!
//! Each entry starts with a 110-byte ASCII header: the magic `070701`, then
//! 13 fields of 8 hex digits (inode, mode, uid, gid, nlink, mtime, filesize,
//! devmajor, devminor, rdevmajor, rdevminor, namesize, check). The
//! NUL-terminated name follows, padded to a multiple of 4 bytes, and then
//! the data, padded the same way.
//! The archive ends with the entry `TRAILER!!!`.
//!
//! The same tree always gives the same bytes: entries are sorted by path
//! bytes (a directory sorts before its contents), owners are 0, modification
//! times are one value the caller chooses, inode numbers count up from 1 in
//! entry order, and device numbers are 0. Permission bits are kept, because
//! the enclave needs its executables executable. Hard links are stored as
//! separate files.

use std::env;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::debug;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &[u8] = b"TRAILER!!!";

const MODE_DIRECTORY: u32 = 0o040000;
const MODE_REGULAR: u32 = 0o100000;
const MODE_SYMLINK: u32 = 0o120000;
const PERMISSION_BITS: u32 = 0o7777;

/// Errors writing a ramdisk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RamdiskError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    /// The archive could not be written.
    #[error("cannot write the ramdisk: {0}")]
    Write(#[source] io::Error),
    /// The root is not a directory.
    #[error("{path} is not a directory; pass the directory to pack")]
    NotADirectory { path: PathBuf },
    /// The tree contains a file type the archive does not store.
    #[error("{path} is a {kind}; only regular files, directories and symbolic links can be packed")]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A file exceeds the 32-bit size field of the newc format.
    #[error("{path} has {size} bytes; the newc format stores at most 4294967295 bytes per file")]
    FileTooLarge { path: PathBuf, size: u64 },
    /// A file changed size while it was archived.
    #[error("{path} changed while it was read: expected {expected} bytes, read {read}")]
    FileChanged { path: PathBuf, expected: u64, read: u64 },
    /// `SOURCE_DATE_EPOCH` is not a number of seconds the format can store.
    #[error("SOURCE_DATE_EPOCH={value} is invalid; expected whole seconds since 1970 from 0 to 4294967295")]
    InvalidSourceDateEpoch { value: String },
}

/// Counts of what an archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamdiskSummary {
    /// Entries, the trailer excluded.
    pub entries: usize,
    /// Archive length in bytes.
    pub bytes: u64,
}

/// Reads `SOURCE_DATE_EPOCH` (the reproducible-builds convention for a
/// fixed build time); returns 0 when it is unset or empty.
pub fn source_date_epoch() -> Result<u32, RamdiskError> {
    match env::var_os("SOURCE_DATE_EPOCH") {
        None => Ok(0),
        Some(value) if value.is_empty() => Ok(0),
        Some(value) => {
            let text = value.to_string_lossy();
            text.trim().parse::<u32>().map_err(|_| RamdiskError::InvalidSourceDateEpoch { value: text.into_owned() })
        }
    }
}

/// Archives the tree under `root` (the root itself excluded) into `out`,
/// with every modification time set to `mtime`.
pub fn write_ramdisk(root: &Path, mtime: u32, out: &mut impl Write) -> Result<RamdiskSummary, RamdiskError> {
    let root_metadata = fs::metadata(root).map_err(|error| RamdiskError::Read { path: root.to_owned(), error })?;
    if !root_metadata.is_dir() {
        return Err(RamdiskError::NotADirectory { path: root.to_owned() });
    }
    let mut paths = Vec::new();
    collect(root, Path::new(""), &mut paths)?;
    paths.sort_by(|left, right| left.as_os_str().as_bytes().cmp(right.as_os_str().as_bytes()));

    let mut writer = ArchiveWriter { out, written: 0, mtime };
    for (position, relative) in paths.iter().enumerate() {
        let inode = u32::try_from(position + 1).unwrap_or(u32::MAX);
        writer.write_path(root, relative, inode)?;
    }
    writer.write_entry(&Entry { inode: 0, mode: 0, nlink: 1, size: 0, name: TRAILER })?;
    debug!(root = %root.display(), entries = paths.len(), bytes = writer.written, "ramdisk written");
    Ok(RamdiskSummary { entries: paths.len(), bytes: writer.written })
}

/// Lists every path under `root.join(relative)`, relative to `root`,
/// without following symbolic links.
fn collect(root: &Path, relative: &Path, paths: &mut Vec<PathBuf>) -> Result<(), RamdiskError> {
    let directory = root.join(relative);
    let entries = fs::read_dir(&directory).map_err(|error| RamdiskError::Read { path: directory.clone(), error })?;
    for entry in entries {
        let entry = entry.map_err(|error| RamdiskError::Read { path: directory.clone(), error })?;
        let child = relative.join(entry.file_name());
        let file_type = entry.file_type().map_err(|error| RamdiskError::Read { path: entry.path(), error })?;
        paths.push(child.clone());
        if file_type.is_dir() {
            collect(root, &child, paths)?;
        }
    }
    Ok(())
}

struct Entry<'a> {
    inode: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    name: &'a [u8],
}

struct ArchiveWriter<'a, W: Write> {
    out: &'a mut W,
    written: u64,
    mtime: u32,
}

impl<W: Write> ArchiveWriter<'_, W> {
    fn write_path(&mut self, root: &Path, relative: &Path, inode: u32) -> Result<(), RamdiskError> {
        let path = root.join(relative);
        let read_error = |error| RamdiskError::Read { path: path.clone(), error };
        let metadata = fs::symlink_metadata(&path).map_err(read_error)?;
        let permissions = metadata.permissions().mode() & PERMISSION_BITS;
        let name = relative.as_os_str().as_bytes();
        let file_type = metadata.file_type();

        if file_type.is_dir() {
            return self.write_entry(&Entry { inode, mode: MODE_DIRECTORY | permissions, nlink: 2, size: 0, name });
        }
        if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(read_error)?;
            let target = target.as_os_str().as_bytes();
            let size = u32::try_from(target.len())
                .map_err(|_| RamdiskError::FileTooLarge { path: path.clone(), size: target.len() as u64 })?;
            self.write_entry(&Entry { inode, mode: MODE_SYMLINK | 0o777, nlink: 1, size, name })?;
            self.write_data(target)?;
            return self.pad();
        }
        if !file_type.is_file() {
            return Err(RamdiskError::UnsupportedFileType { path, kind: describe_file_type(&metadata) });
        }

        let size = u32::try_from(metadata.len())
            .map_err(|_| RamdiskError::FileTooLarge { path: path.clone(), size: metadata.len() })?;
        self.write_entry(&Entry { inode, mode: MODE_REGULAR | permissions, nlink: 1, size, name })?;
        let mut file = File::open(&path).map_err(read_error)?;
        let mut buffer = vec![0u8; 64 << 10];
        let mut copied = 0u64;
        loop {
            let count = file.read(&mut buffer).map_err(read_error)?;
            copied += count as u64;
            if count == 0 || copied > u64::from(size) {
                break;
            }
            self.write_data(buffer.get(..count).unwrap_or_default())?;
        }
        if copied != u64::from(size) {
            return Err(RamdiskError::FileChanged { path, expected: u64::from(size), read: copied });
        }
        self.pad()
    }

    fn write_entry(&mut self, entry: &Entry<'_>) -> Result<(), RamdiskError> {
        let name_size = entry.name.len() + 1;
        let fields = [
            entry.inode,
            entry.mode,
            0, // uid
            0, // gid
            entry.nlink,
            self.mtime,
            entry.size,
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name_size + 3);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(entry.name);
        header.push(0);
        self.write_data(&header)?;
        self.pad()
    }

    fn write_data(&mut self, bytes: &[u8]) -> Result<(), RamdiskError> {
        self.out.write_all(bytes).map_err(RamdiskError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads the archive to a multiple of 4 bytes; every header and every
    /// data block starts aligned.
    fn pad(&mut self) -> Result<(), RamdiskError> {
        let padding = (4 - (self.written % 4) as usize) % 4;
        let zeros = [0u8; 3];
        self.write_data(zeros.get(..padding).unwrap_or_default())
    }
}

fn describe_file_type(metadata: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let file_type = metadata.file_type();
    if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_fifo() {
        "named pipe"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    /// Parses a newc archive into `(name, mode, mtime, uid, data)` tuples.
    fn parse(archive: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&archive[at..at + 6], MAGIC);
            let field = |n: usize| {
                let start = at + 6 + n * 8;
                u32::from_str_radix(std::str::from_utf8(&archive[start..start + 8]).unwrap(), 16).unwrap()
            };
            let (mode, uid, mtime, size, name_size) =
                (field(1), field(2), field(5), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(archive[at + HEADER_LEN..at + HEADER_LEN + name_size - 1].to_vec()).unwrap();
            let data_start = (at + HEADER_LEN + name_size).next_multiple_of(4);
            let data = archive[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len());
                return entries;
            }
            entries.push((name, mode, mtime, uid, data));
        }
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        fs::write(dir.path().join("usr/bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(dir.path().join("usr/bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("usr-config"), b"x").unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("usr/bin/app", dir.path().join("init")).unwrap();
        dir
    }

    #[test]
    fn archive_lists_sorted_entries_with_zeroed_owners() {
        let dir = sample_tree();
        let mut archive = Vec::new();

        let summary = write_ramdisk(dir.path(), 1_700_000_000, &mut archive).unwrap();

        let entries = parse(&archive);
        let names: Vec<&str> = entries.iter().map(|entry| entry.0.as_str()).collect();
        assert_eq!(names, ["empty", "init", "usr", "usr-config", "usr/bin", "usr/bin/app"]);
        assert_eq!(summary.entries, 6);
        assert_eq!(summary.bytes, archive.len() as u64);
        assert!(entries.iter().all(|entry| entry.2 == 1_700_000_000 && entry.3 == 0));
        let app = &entries[5];
        assert_eq!(app.1, MODE_REGULAR | 0o755);
        assert_eq!(app.4, b"#!/bin/sh\necho hi\n");
        let link = &entries[1];
        assert_eq!(link.1, MODE_SYMLINK | 0o777);
        assert_eq!(link.4, b"usr/bin/app");
        assert_eq!(entries[2].1 & 0o170000, MODE_DIRECTORY);
    }

    #[test]
    fn archive_ignores_file_modification_times() {
        let dir = sample_tree();
        let mut first = Vec::new();
        write_ramdisk(dir.path(), 0, &mut first).unwrap();

        let later = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
        File::options().write(true).open(dir.path().join("usr/bin/app")).unwrap().set_modified(later).unwrap();
        let mut second = Vec::new();
        write_ramdisk(dir.path(), 0, &mut second).unwrap();

        assert_eq!(first, second);
    }

    #[test]
    fn fifo_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());

        let error = write_ramdisk(dir.path(), 0, &mut Vec::new()).unwrap_err();

        assert!(matches!(error, RamdiskError::UnsupportedFileType { kind: "named pipe", .. }), "{error}");
    }

    #[test]
    fn file_root_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();

        let error = write_ramdisk(&file, 0, &mut Vec::new()).unwrap_err();

        assert!(matches!(error, RamdiskError::NotADirectory { .. }), "{error}");
    }

    #[test]
    fn empty_tree_holds_only_the_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Vec::new();

        write_ramdisk(dir.path(), 0, &mut archive).unwrap();

        assert!(parse(&archive).is_empty());
        assert_eq!(archive.len(), 124);
    }
}
