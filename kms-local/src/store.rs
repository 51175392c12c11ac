//! Durable storage of keys, key material, policies and aliases in a redb
//! database (`DIR/kms-local.redb`), or in memory for `--ephemeral`.
//!
//! Each write is one redb transaction committed with immediate durability
//! (the data is fsynced before the commit returns), so a write that was
//! acknowledged to a client survives a crash of the process. A lock file
//! (`DIR/kms-local.lock`, held with an exclusive `flock`) keeps a second
//! kms-local off the same directory. The database and the lock file are
//! created with mode 0600 and the directory with 0700.
//!
//! After an I/O error the store reopens the database, and serves reads from
//! a copy in memory while the file cannot be written (see `store/handle.rs`).

mod database;
mod handle;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{KmsError, KmsResult};
use crate::keys::{KeyMaterial, KeySpec, KeyState, KeyUsage};
use database::{OpenFailure, create_directory_remedy, open_database_remedy, open_file_remedy};
use handle::{Access, Failure, Handle};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const MATERIAL: TableDefinition<&str, &[u8]> = TableDefinition::new("key_material");
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
const TABLES: [TableDefinition<&str, &[u8]>; 3] = [KEYS, MATERIAL, ALIASES];

/// The database file name inside the data directory.
pub const DATABASE_FILE: &str = "kms-local.redb";
/// The lock file name inside the data directory.
pub const LOCK_FILE: &str = "kms-local.lock";

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot create data directory {path}: {error}; {}", create_directory_remedy(.error))]
    CreateDirectory { path: PathBuf, error: io::Error },
    #[error("cannot open {path} for reading and writing: {error}; {}", open_file_remedy(.error))]
    Open { path: PathBuf, error: io::Error },
    #[error(
        "another kms-local is already using data directory {directory} (it holds the lock on {lock}); \
         stop that process or pass a different --data-dir"
    )]
    Locked { directory: PathBuf, lock: PathBuf },
    #[error(
        "database {path} is damaged or is not a kms-local database ({message}); restore it from a backup, \
         or move it out of the data directory to start with an empty store"
    )]
    Damaged { path: PathBuf, message: String },
    #[error("cannot open database {path}: {error}; {}", open_database_remedy(.error))]
    DatabaseIo { path: PathBuf, error: io::Error },
    #[error("cannot open database {path}: {message}")]
    Database { path: PathBuf, message: String },
}

impl StoreError {
    fn from_open_failure(path: &Path, failure: OpenFailure) -> Self {
        match failure {
            OpenFailure::Damaged(message) => Self::Damaged { path: path.to_owned(), message },
            OpenFailure::Io(error) => Self::DatabaseIo { path: path.to_owned(), error },
            OpenFailure::Database(error) => Self::Database { path: path.to_owned(), message: error.to_string() },
        }
    }
}

/// The stored state of one key, without its material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    /// Milliseconds since the Unix epoch.
    pub creation_date_ms: i64,
    pub description: String,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub state: KeyState,
    /// When a key pending deletion is deleted, in milliseconds since the epoch.
    pub deletion_date_ms: Option<i64>,
    pub pending_window_days: Option<u32>,
    /// The key policy document, as the caller sent it.
    pub policy: String,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// The stored state of one alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub alias_name: String,
    pub target_key_id: String,
    pub creation_date_ms: i64,
    pub last_updated_ms: i64,
}

/// The key store. Cheap to share behind an `Arc`; redb serialises writers.
#[derive(Debug)]
pub struct Store {
    handle: Handle,
    /// Held for the life of the store; dropping it releases the lock.
    _lock: Option<File>,
}

fn internal(error: impl std::fmt::Display) -> KmsError {
    tracing::error!(%error, "key store operation failed");
    KmsError::internal(format!("key store operation failed: {error}"))
}

fn encode<T: Serialize>(value: &T) -> KmsResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(internal)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> KmsResult<T> {
    serde_json::from_slice(bytes).map_err(internal)
}

impl Store {
    /// Opens (or creates) the store in `directory`, refusing a directory that
    /// another kms-local holds. Opening writes to an existing database too:
    /// redb rewrites its header and allocator state, and repairs the file
    /// after a crash.
    pub fn open(directory: &Path) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(|error| StoreError::CreateDirectory { path: directory.to_owned(), error })?;

        let lock_path = directory.join(LOCK_FILE);
        let lock = open_private(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { directory: directory.to_owned(), lock: lock_path });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(StoreError::Open { path: lock_path, error }),
        }

        let db_path = directory.join(DATABASE_FILE);
        let new_store = !db_path.exists();
        let file = open_private(&db_path)?;
        let db =
            database::open_file(file, &db_path).map_err(|failure| StoreError::from_open_failure(&db_path, failure))?;
        create_missing_tables(&db).map_err(|failure| match failure {
            Failure::Database(error) => match *error {
                redb::Error::Io(error) => StoreError::DatabaseIo { path: db_path.clone(), error },
                other => StoreError::Database {
                    path: db_path.clone(),
                    message: format!("cannot create the tables: {other}"),
                },
            },
            Failure::Request(error) => StoreError::Database { path: db_path.clone(), message: error.message },
        })?;
        if new_store {
            // A mistyped --data-dir starts with no keys, so the log names the new file.
            tracing::info!(path = %db_path.display(), "no store found; created an empty one");
        }
        Ok(Self::with_database(db, Some(db_path), Some(lock)))
    }

    /// Creates an empty store that lives in memory only.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|error| StoreError::Database { path: PathBuf::from("<memory>"), message: error.to_string() })?;
        create_missing_tables(&db)
            .map_err(|error| StoreError::Database { path: PathBuf::from("<memory>"), message: error.to_string() })?;
        Ok(Self::with_database(db, None, None))
    }

    fn with_database(database: Database, path: Option<PathBuf>, lock: Option<File>) -> Self {
        Self { handle: Handle::new(database, path), _lock: lock }
    }

    /// Returns where the store lives: the database path, or `memory`.
    pub fn location(&self) -> &str {
        self.handle.location()
    }

    /// Stores a new key and its material in one transaction.
    pub fn insert_key(&self, record: &KeyRecord, material: &KeyMaterial) -> KmsResult<()> {
        let encoded = encode(record)?;
        self.handle.run(Access::Write, |db| {
            let txn = db.begin_write()?;
            {
                let mut keys = txn.open_table(KEYS)?;
                keys.insert(record.key_id.as_str(), encoded.as_slice())?;
                let mut materials = txn.open_table(MATERIAL)?;
                materials.insert(record.key_id.as_str(), material.as_bytes())?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    pub fn key(&self, key_id: &str) -> KmsResult<Option<KeyRecord>> {
        self.handle.run(Access::Read, |db| {
            let txn = db.begin_read()?;
            let keys = txn.open_table(KEYS)?;
            let Some(value) = keys.get(key_id)? else {
                return Ok(None);
            };
            Ok(decode(value.value()).map(Some)?)
        })
    }

    pub fn material(&self, key_id: &str) -> KmsResult<KeyMaterial> {
        self.handle.run(Access::Read, |db| {
            let txn = db.begin_read()?;
            let materials = txn.open_table(MATERIAL)?;
            let value =
                materials.get(key_id)?.ok_or_else(|| internal(format!("key {key_id} has no stored material")))?;
            Ok(KeyMaterial::from_bytes(value.value().to_vec()))
        })
    }

    /// Applies `change` to a key inside one write transaction and returns the
    /// updated record. An error from `change` aborts the transaction.
    pub fn update_key(
        &self,
        key_id: &str,
        change: impl FnOnce(&mut KeyRecord) -> KmsResult<()>,
    ) -> KmsResult<Option<KeyRecord>> {
        self.handle.run(Access::Write, |db| {
            let txn = db.begin_write()?;
            let updated = {
                let mut keys = txn.open_table(KEYS)?;
                let Some(current) = keys.get(key_id)?.map(|value| decode::<KeyRecord>(value.value())) else {
                    return Ok(None);
                };
                let mut record = current?;
                change(&mut record)?;
                let encoded = encode(&record)?;
                keys.insert(key_id, encoded.as_slice())?;
                record
            };
            txn.commit()?;
            Ok(Some(updated))
        })
    }

    /// Deletes a key, its material and the aliases that point to it.
    pub fn delete_key(&self, key_id: &str) -> KmsResult<()> {
        self.handle.run(Access::Write, |db| {
            let txn = db.begin_write()?;
            {
                let mut keys = txn.open_table(KEYS)?;
                keys.remove(key_id)?;
                let mut materials = txn.open_table(MATERIAL)?;
                materials.remove(key_id)?;
                let mut aliases = txn.open_table(ALIASES)?;
                let mut doomed = Vec::new();
                for entry in aliases.iter()? {
                    let (name, value) = entry?;
                    let alias: AliasRecord = decode(value.value())?;
                    if alias.target_key_id == key_id {
                        doomed.push(name.value().to_owned());
                    }
                }
                for name in doomed {
                    aliases.remove(name.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Returns every key, ordered by key id.
    pub fn keys(&self) -> KmsResult<Vec<KeyRecord>> {
        self.handle.run(Access::Read, |db| {
            let txn = db.begin_read()?;
            let keys = txn.open_table(KEYS)?;
            let mut records = Vec::new();
            for entry in keys.iter()? {
                let (_, value) = entry?;
                records.push(decode(value.value())?);
            }
            Ok(records)
        })
    }

    pub fn alias(&self, alias_name: &str) -> KmsResult<Option<AliasRecord>> {
        self.handle.run(Access::Read, |db| {
            let txn = db.begin_read()?;
            let aliases = txn.open_table(ALIASES)?;
            let Some(value) = aliases.get(alias_name)? else {
                return Ok(None);
            };
            Ok(decode(value.value()).map(Some)?)
        })
    }

    /// Inserts or replaces an alias. With `must_be_new`, an existing alias is
    /// left alone and `Ok(false)` returned.
    pub fn put_alias(&self, alias: &AliasRecord, must_be_new: bool) -> KmsResult<bool> {
        let encoded = encode(alias)?;
        self.handle.run(Access::Write, |db| {
            let txn = db.begin_write()?;
            {
                let mut aliases = txn.open_table(ALIASES)?;
                if must_be_new && aliases.get(alias.alias_name.as_str())?.is_some() {
                    return Ok(false);
                }
                aliases.insert(alias.alias_name.as_str(), encoded.as_slice())?;
            }
            txn.commit()?;
            Ok(true)
        })
    }

    /// Removes an alias; returns whether it existed.
    pub fn delete_alias(&self, alias_name: &str) -> KmsResult<bool> {
        self.handle.run(Access::Write, |db| {
            let txn = db.begin_write()?;
            let existed = {
                let mut aliases = txn.open_table(ALIASES)?;
                aliases.remove(alias_name)?.is_some()
            };
            txn.commit()?;
            Ok(existed)
        })
    }

    /// Returns every alias, ordered by name.
    pub fn aliases(&self) -> KmsResult<Vec<AliasRecord>> {
        self.handle.run(Access::Read, |db| {
            let txn = db.begin_read()?;
            let aliases = txn.open_table(ALIASES)?;
            let mut records = Vec::new();
            for entry in aliases.iter()? {
                let (_, value) = entry?;
                records.push(decode(value.value())?);
            }
            Ok(records)
        })
    }
}

/// Creates the tables that do not exist yet, in a write transaction that
/// runs only when one is missing.
fn create_missing_tables(db: &Database) -> Result<(), Failure> {
    let mut missing = false;
    {
        let txn = db.begin_read()?;
        for definition in TABLES {
            match txn.open_table(definition) {
                Ok(_) => {}
                Err(redb::TableError::TableDoesNotExist(_)) => missing = true,
                Err(error) => return Err(error.into()),
            }
        }
    }
    if !missing {
        return Ok(());
    }
    let txn = db.begin_write()?;
    for definition in TABLES {
        txn.open_table(definition)?;
    }
    txn.commit()?;
    Ok(())
}

/// Opens or creates a file readable and writable by the owner only.
fn open_private(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|error| StoreError::Open { path: path.to_owned(), error })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(key_id: &str) -> KeyRecord {
        KeyRecord {
            key_id: key_id.to_owned(),
            creation_date_ms: 1,
            description: String::new(),
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            state: KeyState::Enabled,
            deletion_date_ms: None,
            pending_window_days: None,
            policy: "{}".to_owned(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn keys_survive_reopen_and_files_are_private() {
        let directory = tempfile::tempdir().unwrap();
        {
            let store = Store::open(directory.path()).unwrap();
            store.insert_key(&record("k1"), &KeyMaterial::from_bytes(vec![7; 32])).unwrap();
        }
        let store = Store::open(directory.path()).unwrap();
        assert_eq!(store.key("k1").unwrap().unwrap(), record("k1"));
        assert_eq!(store.material("k1").unwrap().as_bytes(), &[7; 32]);
        for name in [DATABASE_FILE, LOCK_FILE] {
            let mode = std::fs::metadata(directory.path().join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn second_store_on_same_directory_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let _first = Store::open(directory.path()).unwrap();
        let error = Store::open(directory.path()).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
        assert!(error.to_string().contains("pass a different --data-dir"), "{error}");
    }

    #[test]
    fn update_error_leaves_record_unchanged() {
        let store = Store::in_memory().unwrap();
        store.insert_key(&record("k1"), &KeyMaterial::from_bytes(vec![1; 32])).unwrap();
        let result = store.update_key("k1", |key| {
            key.state = KeyState::Disabled;
            Err(KmsError::validation("no"))
        });
        assert!(result.is_err());
        assert_eq!(store.key("k1").unwrap().unwrap().state, KeyState::Enabled);
        assert!(store.update_key("missing", |_| Ok(())).unwrap().is_none());
    }

    #[test]
    fn delete_key_removes_its_aliases() {
        let store = Store::in_memory().unwrap();
        store.insert_key(&record("k1"), &KeyMaterial::from_bytes(vec![1; 32])).unwrap();
        let alias = AliasRecord {
            alias_name: "alias/a".to_owned(),
            target_key_id: "k1".to_owned(),
            creation_date_ms: 0,
            last_updated_ms: 0,
        };
        assert!(store.put_alias(&alias, true).unwrap());
        assert!(!store.put_alias(&alias, true).unwrap());
        store.delete_key("k1").unwrap();
        assert!(store.key("k1").unwrap().is_none());
        assert!(store.alias("alias/a").unwrap().is_none());
    }
}
