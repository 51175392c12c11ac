//! Opening the redb database file, and the advice that goes with I/O errors.
//!
//! redb 2.6.4 panics on some damaged files instead of returning an error: an
//! assertion fails when the file is shorter than the layout its header
//! records (a truncated copy), or when a region header does not match. The
//! open functions here catch those panics, keep their message off stderr and
//! report them as a damaged database. With the damaged files of the tests
//! (truncated, garbage, a valid header over garbage pages) redb writes
//! nothing to the file before it fails.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use redb::backends::InMemoryBackend;
use redb::{Database, DatabaseError, StorageBackend, StorageError};

/// A failure to open the database file.
#[derive(Debug)]
pub(super) enum OpenFailure {
    /// The file is not a redb database, is truncated, or is damaged.
    Damaged(String),
    /// An I/O error, for example while redb writes its header.
    Io(io::Error),
    /// Any other redb error.
    Database(Box<redb::Error>),
}

thread_local! {
    /// Whether a database is being opened on this thread, so that the panic
    /// hook records a panic here instead of printing it.
    static CATCHING_PANIC: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last panic caught on this thread.
    static CAUGHT_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Opens the database in `file` at `path`, initialising an empty database
/// when the file is empty, and checks its integrity.
///
/// redb's integrity check rebuilds the allocator state from the tables and
/// writes it when it differs; it reads every page. Without it, redb 2.6.4
/// trusted the allocator state that repairs interrupted by I/O errors had
/// left behind, and later writes hit its debug assertions (a page freed
/// twice, or allocated while in use). The test
/// `full_disk_rejects_writes_and_serves_reads` goes through such repairs.
pub(super) fn open_file(file: File, path: &Path) -> Result<Database, OpenFailure> {
    open_catching_panics(|| {
        let mut database = Database::builder().create_file(file)?;
        if !database.check_integrity()? {
            tracing::warn!(database = %path.display(), "redb's integrity check repaired the database");
        }
        Ok(database)
    })
}

/// Opens the existing database file at `path` again, after an I/O error.
pub(super) fn reopen(path: &Path) -> Result<Database, OpenFailure> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(OpenFailure::Io)?;
    open_file(file, path)
}

/// Opens a copy in memory of the database file at `path`. redb's repair
/// after an I/O error then writes to the copy, not to the file.
// NOTE: the copy takes as much memory as the file is long.
pub(super) fn open_snapshot(path: &Path) -> Result<Database, OpenFailure> {
    let bytes = std::fs::read(path).map_err(OpenFailure::Io)?;
    let backend = InMemoryBackend::new();
    backend.set_len(bytes.len() as u64).map_err(OpenFailure::Io)?;
    backend.write(0, &bytes).map_err(OpenFailure::Io)?;
    open_catching_panics(|| {
        let mut database = Database::builder().create_with_backend(backend)?;
        // redb commits to the copy when it is dropped, and with stale
        // allocator state that commit hits the same debug assertions.
        database.check_integrity()?;
        Ok(database)
    })
}

fn open_catching_panics(open: impl FnOnce() -> Result<Database, DatabaseError>) -> Result<Database, OpenFailure> {
    install_panic_filter();
    CATCHING_PANIC.set(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(open));
    CATCHING_PANIC.set(false);
    match outcome {
        Ok(Ok(database)) => Ok(database),
        Ok(Err(error)) => Err(classify(error)),
        Err(_) => {
            let message = CAUGHT_PANIC.take().unwrap_or_else(|| "no panic message".to_owned());
            Err(OpenFailure::Damaged(format!("redb panicked while reading it: {message}")))
        }
    }
}

fn classify(error: DatabaseError) -> OpenFailure {
    match error {
        // redb returns InvalidData for a file without its magic number and
        // UnexpectedEof for one shorter than its header.
        DatabaseError::Storage(StorageError::Io(io_error))
            if matches!(io_error.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) =>
        {
            OpenFailure::Damaged(format!("redb: {io_error}"))
        }
        DatabaseError::Storage(StorageError::Corrupted(message)) => OpenFailure::Damaged(format!("redb: {message}")),
        DatabaseError::Storage(StorageError::Io(io_error)) => OpenFailure::Io(io_error),
        other => OpenFailure::Database(Box::new(other.into())),
    }
}

/// Installs, once per process, a panic hook that records panics on threads
/// inside `open_catching_panics` and passes every other panic to the hook
/// installed before it. A hook that the application installs later replaces this one;
/// a caught panic is then printed but still reported as an error.
fn install_panic_filter() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CATCHING_PANIC.get() {
                previous(info);
                return;
            }
            let message = info.payload_as_str().unwrap_or("a panic without a message");
            let location = info.location().map(|location| format!(" at {location}")).unwrap_or_default();
            CAUGHT_PANIC.set(Some(format!("{message}{location}")));
        }));
    });
}

/// Describes an I/O error of the database file while serving requests: what
/// failed and why, and what to do about it, for the message to the client.
pub(super) fn describe_io_error(error: &io::Error, database: &str, directory: &str) -> (String, String) {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => (
            format!(
                "cannot write to the key store {database}: {error}. The file system of the data directory \
                 {directory} is full"
            ),
            "free space there".to_owned(),
        ),
        io::ErrorKind::FileTooLarge => (
            format!(
                "cannot write to the key store {database}: {error}. The database file reached the file size limit \
                 of the kms-local process (ulimit -f) or of the file system"
            ),
            format!("raise the limit or free space in the data directory {directory}"),
        ),
        io::ErrorKind::ReadOnlyFilesystem => (
            format!(
                "cannot write to the key store {database}: {error}. The data directory {directory} is on a file \
                 system that is now read-only"
            ),
            "remount it read-write".to_owned(),
        ),
        io::ErrorKind::PermissionDenied => (
            format!(
                "cannot read or write the key store {database}: {error}. The user running kms-local lost access to \
                 the data directory {directory}"
            ),
            "restore its access".to_owned(),
        ),
        _ => (
            format!("I/O error on the key store {database}: {error}"),
            format!("check the disk and the file system of the data directory {directory}"),
        ),
    }
}

/// Returns what to do when the data directory cannot be created.
pub(super) fn create_directory_remedy(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotADirectory => {
            "a parent of that path is a file, not a directory; pass a --data-dir whose parents are directories"
        }
        io::ErrorKind::AlreadyExists => {
            "the path exists and is not a directory; pass a directory, or a path that does not exist yet, as --data-dir"
        }
        io::ErrorKind::PermissionDenied => {
            "the user running kms-local cannot write to the parent directory; create the data directory for that \
             user, or pass a different --data-dir"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "the file system is read-only; pass a --data-dir on a writable file system"
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "the file system is full; free space there, or pass a different --data-dir"
        }
        _ => "pass a different --data-dir",
    }
}

/// Returns what to do when a file in the data directory cannot be opened for
/// reading and writing.
pub(super) fn open_file_remedy(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => {
            "the data directory and its files must be writable by the user running kms-local; fix their owner or \
             mode, or pass a different --data-dir"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "the data directory is on a read-only file system; remount it read-write, or pass a --data-dir on a \
             writable file system"
        }
        io::ErrorKind::IsADirectory => "a directory has the name of this kms-local file; move it out of the way",
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "the file system of the data directory is full; free space there and start kms-local again"
        }
        _ => "check the data directory, or pass a different --data-dir",
    }
}

/// Returns what to do when redb meets an I/O error while opening the
/// database. Opening writes to the file: its header and allocator state, and
/// the repair after a crash or an earlier I/O error.
pub(super) fn open_database_remedy(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "redb must write to the file to open it, and the file system of the data directory is full; free space \
             there and start kms-local again"
        }
        io::ErrorKind::FileTooLarge => {
            "redb must write to the file to open it, and the write is over the file size limit of the process \
             (ulimit -f) or of the file system; raise the limit and start kms-local again"
        }
        _ => "check the disk and the file system of the data directory, then start kms-local again",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::Write;

    const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("t");

    /// Writes a small database and returns its bytes.
    fn database_bytes(directory: &std::path::Path) -> Vec<u8> {
        let path = directory.join("source.redb");
        let database = Database::create(&path).unwrap();
        let transaction = database.begin_write().unwrap();
        transaction.open_table(TABLE).unwrap().insert("k", [7_u8; 100].as_slice()).unwrap();
        transaction.commit().unwrap();
        drop(database);
        std::fs::read(&path).unwrap()
    }

    fn open_bytes(directory: &std::path::Path, bytes: &[u8]) -> (Result<Database, OpenFailure>, Vec<u8>) {
        let path = directory.join("copy.redb");
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let result = open_file(file, &path);
        (result, std::fs::read(&path).unwrap())
    }

    #[test]
    fn truncated_file_is_damaged_not_panic() {
        let directory = tempfile::tempdir().unwrap();
        let bytes = database_bytes(directory.path());
        let truncated = bytes.get(..bytes.len() / 2).unwrap();

        let (result, after) = open_bytes(directory.path(), truncated);
        match result {
            Err(OpenFailure::Damaged(message)) => assert!(message.contains("redb panicked"), "{message}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        assert_eq!(after, truncated, "the truncated file must not be written");
    }

    #[test]
    fn garbage_and_short_files_are_damaged() {
        let directory = tempfile::tempdir().unwrap();
        for bytes in [vec![0x5a_u8; 64 * 1024], b"redb\x1a\x0a\xa9\x0d\x0a short".to_vec()] {
            let (result, after) = open_bytes(directory.path(), &bytes);
            assert!(matches!(result, Err(OpenFailure::Damaged(_))), "{result:?}");
            assert_eq!(after, bytes);
        }
    }

    #[test]
    fn panic_outside_open_is_not_recorded() {
        install_panic_filter();
        let recorded = std::thread::spawn(|| {
            let result = panic::catch_unwind(|| panic!("a panic outside open_file"));
            assert!(result.is_err());
            CAUGHT_PANIC.take()
        })
        .join()
        .unwrap();
        assert_eq!(recorded, None);
    }

    #[test]
    fn snapshot_repair_leaves_file_alone() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("db.redb");
        std::fs::write(&path, database_bytes(directory.path())).unwrap();
        // Mark the file as needing repair, as a crash or an I/O error leaves it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] |= 2;
        std::fs::write(&path, &bytes).unwrap();

        let snapshot = open_snapshot(&path).unwrap();
        let transaction = snapshot.begin_read().unwrap();
        let table = transaction.open_table(TABLE).unwrap();
        assert_eq!(table.get("k").unwrap().unwrap().value(), [7_u8; 100]);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the repair must write to the copy only");
    }

    #[test]
    fn messages_name_the_fix() {
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let (summary, remedy) = describe_io_error(&full, "/d/db", "/d");
        assert!(summary.contains("data directory /d is full"), "{summary}");
        assert_eq!(remedy, "free space there");
        let too_large = io::Error::from(io::ErrorKind::FileTooLarge);
        let (summary, remedy) = describe_io_error(&too_large, "/d/db", "/d");
        assert!(summary.contains("ulimit -f"), "{summary}");
        assert!(remedy.contains("data directory /d"), "{remedy}");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(open_file_remedy(&denied).contains("writable by the user running kms-local"));
        let not_directory = io::Error::from(io::ErrorKind::NotADirectory);
        assert!(create_directory_remedy(&not_directory).contains("is a file, not a directory"));
    }
}
