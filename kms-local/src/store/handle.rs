//! The database behind a store, and its recovery from I/O errors.
//!
//! After an I/O error (a full disk, for example) redb 2.6.4 refuses every
//! later transaction, and every read of a page it has not cached, with
//! `PreviousIo` until the database is opened again. So the handle closes the
//! database after such an error and opens the file again; redb's repair then
//! goes back to the last committed transaction.
//!
//! The repair writes to the file. When that fails too (the disk is still
//! full, or the file system is copy-on-write), the handle serves reads from
//! a copy of the file in memory and rejects writes. Each write request tries
//! the file again, so writes resume once there is space.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::Database;

use super::database::{self, OpenFailure, describe_io_error};
use super::{StoreError, internal};
use crate::error::{KmsError, KmsResult};

/// Whether an operation only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// The cause of a failed store operation.
pub(super) enum Failure {
    /// An error for the client as it is: a failed check or an unreadable record.
    Request(KmsError),
    /// An error of redb.
    Database(Box<redb::Error>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request(error) => error.fmt(f),
            Self::Database(error) => error.fmt(f),
        }
    }
}

impl From<KmsError> for Failure {
    fn from(error: KmsError) -> Self {
        Self::Request(error)
    }
}

macro_rules! failure_from_redb {
    ($($error:ty),*) => {
        $(impl From<$error> for Failure {
            fn from(error: $error) -> Self {
                Self::Database(Box::new(error.into()))
            }
        })*
    };
}

failure_from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// The database of a store, replaced after an I/O error.
#[derive(Debug)]
pub(super) struct Handle {
    slot: RwLock<Slot>,
    /// The database file, or `None` for a store in memory.
    path: Option<PathBuf>,
    location: String,
}

#[derive(Debug)]
struct Slot {
    state: State,
    /// Counts reopenings, so that requests that fail on the same database
    /// recover it once.
    generation: u64,
}

#[derive(Debug)]
enum State {
    /// The database file, open for reads and writes.
    Open(Database),
    /// A copy of the file in memory that serves reads, because the file could
    /// not be opened again. `rejection` is the message for writes.
    Snapshot { database: Database, cause: Cause, rejection: String },
    /// Neither the file nor a copy could be opened, for the reason in `message`.
    Closed { cause: Cause, message: String },
}

/// The I/O error that closed the database, described for clients.
#[derive(Debug, Clone)]
struct Cause {
    /// The failed operation and its cause.
    summary: String,
    /// The action that fixes it, for example "free space there".
    remedy: String,
}

/// The outcome of [`Handle::recover`].
enum Recovered {
    Reopened,
    /// The file could not be opened again; the message for the client.
    Failed(String),
}

impl Handle {
    pub(super) fn new(database: Database, path: Option<PathBuf>) -> Self {
        let location = path.as_ref().map_or_else(|| "memory".to_owned(), |path| path.display().to_string());
        Self { slot: RwLock::new(Slot { state: State::Open(database), generation: 0 }), path, location }
    }

    /// Returns where the store lives: the database path, or `memory`.
    pub(super) fn location(&self) -> &str {
        &self.location
    }

    fn directory(&self) -> String {
        self.path.as_deref().and_then(Path::parent).map(|path| path.display().to_string()).unwrap_or_default()
    }

    fn read_slot(&self) -> RwLockReadGuard<'_, Slot> {
        self.slot.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_slot(&self) -> RwLockWriteGuard<'_, Slot> {
        self.slot.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `body` on the database. The request that meets an I/O error fails
    /// with a message that states the fix, and the database is reopened for
    /// the requests after it.
    pub(super) fn run<T>(&self, access: Access, body: impl FnOnce(&Database) -> Result<T, Failure>) -> KmsResult<T> {
        let usable =
            matches!((&self.read_slot().state, access), (State::Open(_), _) | (State::Snapshot { .. }, Access::Read));
        if !usable {
            self.retry();
        }

        let slot = self.read_slot();
        let database = match (&slot.state, access) {
            (State::Open(database), _) | (State::Snapshot { database, .. }, Access::Read) => database,
            (State::Snapshot { rejection, .. }, Access::Write) => return Err(KmsError::internal(rejection.clone())),
            (State::Closed { message, .. }, _) => return Err(KmsError::internal(message.clone())),
        };
        let generation = slot.generation;
        let outcome = body(database);
        drop(slot);

        match outcome {
            Ok(value) => Ok(value),
            Err(Failure::Request(error)) => Err(error),
            Err(Failure::Database(error)) => Err(self.failed(error, generation)),
        }
    }

    /// Turns a redb error into the client's error, and recovers the database
    /// after an I/O error. The server logs the returned error with the
    /// request id.
    fn failed(&self, error: Box<redb::Error>, generation: u64) -> KmsError {
        if self.path.is_none() || !matches!(*error, redb::Error::Io(_) | redb::Error::PreviousIo) {
            return internal(format!("{}: {error}", self.location));
        }
        let cause = self.describe_cause(&error);
        let message = match self.recover(generation, &error, &cause) {
            Recovered::Reopened if matches!(*error, redb::Error::Io(_)) => {
                format!("{}; {}, then retry the request", cause.summary, cause.remedy)
            }
            Recovered::Reopened => {
                format!("the key store {} failed an earlier read or write; retry the request", self.location)
            }
            Recovered::Failed(message) => message,
        };
        KmsError::internal(message)
    }

    fn describe_cause(&self, error: &redb::Error) -> Cause {
        let (summary, remedy) = match error {
            redb::Error::Io(io_error) => describe_io_error(io_error, &self.location, &self.directory()),
            other => (
                format!("the key store {} failed: {other}", self.location),
                format!("check the data directory {}", self.directory()),
            ),
        };
        Cause { summary, remedy }
    }

    /// Closes the database after `error` and opens the file again, or else a
    /// copy of it in memory, unless another request has done so since it read
    /// `generation`.
    fn recover(&self, generation: u64, error: &redb::Error, cause: &Cause) -> Recovered {
        let mut slot = self.write_slot();
        if slot.generation == generation && matches!(slot.state, State::Open(_)) {
            tracing::error!(database = self.location, %error, "key store I/O error; reopening the database");
            // redb holds a flock on the file, so the failed database must be
            // closed before the file is opened again.
            let message = format!("the key store {} is being reopened", self.location);
            slot.state = State::Closed { cause: cause.clone(), message };
            self.reopen(&mut slot, cause.clone(), true);
        }
        match &slot.state {
            State::Open(_) => Recovered::Reopened,
            State::Snapshot { rejection: message, .. } | State::Closed { message, .. } => {
                Recovered::Failed(message.clone())
            }
        }
    }

    /// Tries the file again, for a write while reads are served from the copy
    /// in memory, or for any request while the store is closed.
    fn retry(&self) {
        let mut slot = self.write_slot();
        let cause = match &slot.state {
            State::Open(_) => return,
            State::Snapshot { cause, .. } | State::Closed { cause, .. } => cause.clone(),
        };
        self.reopen(&mut slot, cause, false);
    }

    /// Opens the file again, or else a copy of it in memory unless there is
    /// one already. A failed retry (`first_attempt` false) is logged at debug
    /// level only, because the request that made it logs its own error.
    fn reopen(&self, slot: &mut Slot, cause: Cause, first_attempt: bool) {
        let Some(path) = &self.path else {
            return;
        };
        slot.generation += 1;
        let reopen_failure = match database::reopen(path) {
            Ok(database) => {
                tracing::info!(database = self.location, "reopened the key store");
                slot.state = State::Open(database);
                return;
            }
            Err(failure) => self.describe_open_failure(path, failure),
        };
        let Cause { summary, remedy } = &cause;
        let rejection = format!(
            "{summary}; {remedy}, then retry the request. Opening the database again failed ({reopen_failure}), so \
             kms-local serves reads from a copy in memory and rejects writes until it can write the file"
        );
        if let State::Snapshot { rejection: current, .. } = &mut slot.state {
            tracing::debug!(database = self.location, error = reopen_failure, "the key store still cannot be reopened");
            *current = rejection;
            return;
        }

        match database::open_snapshot(path) {
            Ok(database) => {
                tracing::error!(
                    database = self.location,
                    error = reopen_failure,
                    "cannot reopen the key store; serving reads from a copy in memory and rejecting writes"
                );
                slot.state = State::Snapshot { database, cause, rejection };
            }
            Err(snapshot_failure) => {
                let message = format!(
                    "{summary}; {remedy}, then retry the request. Opening the database again failed \
                     ({reopen_failure}), and so did reading a copy into memory ({})",
                    StoreError::from_open_failure(path, snapshot_failure)
                );
                if first_attempt {
                    tracing::error!(database = self.location, error = message, "cannot reopen the key store");
                } else {
                    tracing::debug!(
                        database = self.location,
                        error = message,
                        "the key store still cannot be reopened"
                    );
                }
                slot.state = State::Closed { cause, message };
            }
        }
    }

    fn describe_open_failure(&self, path: &Path, failure: OpenFailure) -> String {
        match failure {
            OpenFailure::Io(io_error) => io_error.to_string(),
            other => StoreError::from_open_failure(path, other).to_string(),
        }
    }
}
