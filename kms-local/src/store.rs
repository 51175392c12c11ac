//! Durable storage of keys, key material, policies and aliases in a redb
//! database (`DIR/kms-local.redb`), or in memory for `--ephemeral`.
//!
//! Each write is one redb transaction committed with immediate durability
//! (the data is fsynced before the commit returns), so a write that was
//! acknowledged to a client survives a crash of the process. A lock file
//! (`DIR/kms-local.lock`, held with an exclusive `flock`) keeps a second
//! kms-local off the same directory. The database and the lock file are
//! created with mode 0600 and the directory with 0700.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{KmsError, KmsResult};
use crate::keys::{KeyMaterial, KeySpec, KeyState, KeyUsage};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const MATERIAL: TableDefinition<&str, &[u8]> = TableDefinition::new("key_material");
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");

/// The database file name inside the data directory.
pub const DATABASE_FILE: &str = "kms-local.redb";
/// The lock file name inside the data directory.
pub const LOCK_FILE: &str = "kms-local.lock";

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDirectory { path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "another kms-local is already using data directory {directory} (it holds the lock on {lock}); \
         stop that process or pass a different --data-dir"
    )]
    Locked { directory: PathBuf, lock: PathBuf },
    #[error("cannot open database {path}: {message}")]
    Database { path: PathBuf, message: String },
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
    db: Database,
    /// Held for the life of the store; dropping it releases the lock.
    _lock: Option<File>,
    location: String,
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
    /// another kms-local holds.
    pub fn open(directory: &Path) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(|source| StoreError::CreateDirectory { path: directory.to_owned(), source })?;

        let lock_path = directory.join(LOCK_FILE);
        let lock = open_private(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { directory: directory.to_owned(), lock: lock_path });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(StoreError::Open { path: lock_path, source }),
        }

        let db_path = directory.join(DATABASE_FILE);
        let file = open_private(&db_path)?;
        let db = Database::builder()
            .create_file(file)
            .map_err(|error| StoreError::Database { path: db_path.clone(), message: error.to_string() })?;
        let store = Self { db, _lock: Some(lock), location: db_path.display().to_string() };
        store.create_tables().map_err(|error| StoreError::Database { path: db_path, message: error.message })?;
        Ok(store)
    }

    /// Creates an empty store that lives in memory only.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|error| StoreError::Database { path: PathBuf::from("<memory>"), message: error.to_string() })?;
        let store = Self { db, _lock: None, location: "memory".to_owned() };
        store
            .create_tables()
            .map_err(|error| StoreError::Database { path: PathBuf::from("<memory>"), message: error.message })?;
        Ok(store)
    }

    /// Where the store lives: the database path, or `memory`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn create_tables(&self) -> KmsResult<()> {
        let txn = self.db.begin_write().map_err(internal)?;
        txn.open_table(KEYS).map_err(internal)?;
        txn.open_table(MATERIAL).map_err(internal)?;
        txn.open_table(ALIASES).map_err(internal)?;
        txn.commit().map_err(internal)
    }

    /// Stores a new key and its material in one transaction.
    pub fn insert_key(&self, record: &KeyRecord, material: &KeyMaterial) -> KmsResult<()> {
        let encoded = encode(record)?;
        let txn = self.db.begin_write().map_err(internal)?;
        {
            let mut keys = txn.open_table(KEYS).map_err(internal)?;
            keys.insert(record.key_id.as_str(), encoded.as_slice()).map_err(internal)?;
            let mut materials = txn.open_table(MATERIAL).map_err(internal)?;
            materials.insert(record.key_id.as_str(), material.as_bytes()).map_err(internal)?;
        }
        txn.commit().map_err(internal)
    }

    pub fn key(&self, key_id: &str) -> KmsResult<Option<KeyRecord>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let keys = txn.open_table(KEYS).map_err(internal)?;
        let Some(value) = keys.get(key_id).map_err(internal)? else {
            return Ok(None);
        };
        decode(value.value()).map(Some)
    }

    pub fn material(&self, key_id: &str) -> KmsResult<KeyMaterial> {
        let txn = self.db.begin_read().map_err(internal)?;
        let materials = txn.open_table(MATERIAL).map_err(internal)?;
        let value = materials
            .get(key_id)
            .map_err(internal)?
            .ok_or_else(|| internal(format!("key {key_id} has no stored material")))?;
        Ok(KeyMaterial::from_bytes(value.value().to_vec()))
    }

    /// Applies `change` to a key inside one write transaction and returns the
    /// updated record. An error from `change` aborts the transaction.
    pub fn update_key(
        &self,
        key_id: &str,
        change: impl FnOnce(&mut KeyRecord) -> KmsResult<()>,
    ) -> KmsResult<Option<KeyRecord>> {
        let txn = self.db.begin_write().map_err(internal)?;
        let updated = {
            let mut keys = txn.open_table(KEYS).map_err(internal)?;
            let current = keys.get(key_id).map_err(internal)?.map(|value| decode::<KeyRecord>(value.value()));
            let Some(current) = current else {
                return Ok(None);
            };
            let mut record = current?;
            change(&mut record)?;
            let encoded = encode(&record)?;
            keys.insert(key_id, encoded.as_slice()).map_err(internal)?;
            record
        };
        txn.commit().map_err(internal)?;
        Ok(Some(updated))
    }

    /// Deletes a key, its material and the aliases that point to it.
    pub fn delete_key(&self, key_id: &str) -> KmsResult<()> {
        let txn = self.db.begin_write().map_err(internal)?;
        {
            let mut keys = txn.open_table(KEYS).map_err(internal)?;
            keys.remove(key_id).map_err(internal)?;
            let mut materials = txn.open_table(MATERIAL).map_err(internal)?;
            materials.remove(key_id).map_err(internal)?;
            let mut aliases = txn.open_table(ALIASES).map_err(internal)?;
            let mut doomed = Vec::new();
            for entry in aliases.iter().map_err(internal)? {
                let (name, value) = entry.map_err(internal)?;
                let alias: AliasRecord = decode(value.value())?;
                if alias.target_key_id == key_id {
                    doomed.push(name.value().to_owned());
                }
            }
            for name in doomed {
                aliases.remove(name.as_str()).map_err(internal)?;
            }
        }
        txn.commit().map_err(internal)
    }

    /// Returns every key, ordered by key id.
    pub fn keys(&self) -> KmsResult<Vec<KeyRecord>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let keys = txn.open_table(KEYS).map_err(internal)?;
        let mut records = Vec::new();
        for entry in keys.iter().map_err(internal)? {
            let (_, value) = entry.map_err(internal)?;
            records.push(decode(value.value())?);
        }
        Ok(records)
    }

    pub fn alias(&self, alias_name: &str) -> KmsResult<Option<AliasRecord>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let aliases = txn.open_table(ALIASES).map_err(internal)?;
        let Some(value) = aliases.get(alias_name).map_err(internal)? else {
            return Ok(None);
        };
        decode(value.value()).map(Some)
    }

    /// Inserts or replaces an alias. With `must_be_new`, an existing alias is
    /// left alone and `Ok(false)` returned.
    pub fn put_alias(&self, alias: &AliasRecord, must_be_new: bool) -> KmsResult<bool> {
        let encoded = encode(alias)?;
        let txn = self.db.begin_write().map_err(internal)?;
        {
            let mut aliases = txn.open_table(ALIASES).map_err(internal)?;
            if must_be_new && aliases.get(alias.alias_name.as_str()).map_err(internal)?.is_some() {
                return Ok(false);
            }
            aliases.insert(alias.alias_name.as_str(), encoded.as_slice()).map_err(internal)?;
        }
        txn.commit().map_err(internal)?;
        Ok(true)
    }

    /// Removes an alias; returns whether it existed.
    pub fn delete_alias(&self, alias_name: &str) -> KmsResult<bool> {
        let txn = self.db.begin_write().map_err(internal)?;
        let existed = {
            let mut aliases = txn.open_table(ALIASES).map_err(internal)?;
            aliases.remove(alias_name).map_err(internal)?.is_some()
        };
        txn.commit().map_err(internal)?;
        Ok(existed)
    }

    /// Returns every alias, ordered by name.
    pub fn aliases(&self) -> KmsResult<Vec<AliasRecord>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let aliases = txn.open_table(ALIASES).map_err(internal)?;
        let mut records = Vec::new();
        for entry in aliases.iter().map_err(internal)? {
            let (_, value) = entry.map_err(internal)?;
            records.push(decode(value.value())?);
        }
        Ok(records)
    }
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
        .map_err(|source| StoreError::Open { path: path.to_owned(), source })
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
