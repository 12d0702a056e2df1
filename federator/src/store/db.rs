//! Opening redb files, and turning redb's errors into `StoreError`s that name the file.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, DatabaseError};
use tokio::sync::mpsc;

use super::error::StoreError;
use super::NodeId;

/// An open redb file. Whoever holds one keeps the file open; `Store::shutdown` waits until
/// every holder (log readers, snapshot builders, the Raft tasks) has dropped its handle, so a
/// restarted store can open the file again.
pub(crate) struct DbFile {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    /// Dropped with the last handle; closes the channel `Store::shutdown` waits on.
    _open: mpsc::Sender<()>,
}

/// redb's page cache for the state file.
const CACHE_BYTES: usize = 16 << 20;

impl DbFile {
    /// Opens (or creates) the file and checks its integrity. Runs on the blocking pool: redb
    /// does synchronous I/O, and a panic while reading a damaged file becomes an error.
    pub(crate) async fn open(
        path: PathBuf,
        open: mpsc::Sender<()>,
    ) -> Result<Arc<DbFile>, StoreError> {
        let for_panic = path.clone();
        tokio::task::spawn_blocking(move || {
            // The file holds snapshots, written once each and read at startup: redb's default
            // 1 GiB page cache would keep every snapshot written, tens of MiB each, in memory.
            let mut db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|e| open_error(&path, e))?;
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(StoreError::corrupt(
                        &path,
                        "failed its integrity check (redb repaired it, possibly by rolling back \
                         recent commits)",
                    ))
                }
                Err(e) => return Err(open_error(&path, e)),
            }
            Ok(Arc::new(DbFile {
                db,
                path,
                _open: open,
            }))
        })
        .await
        .map_err(|e| blocking_failed(&for_panic, e))?
    }

    /// A `StoreError` about this file.
    pub(crate) fn error(&self, e: impl Into<redb::Error>) -> StoreError {
        redb_error(&self.path, e.into())
    }

    pub(crate) fn corrupt(&self, detail: impl ToString) -> StoreError {
        StoreError::corrupt(&self.path, detail)
    }
}

impl Drop for DbFile {
    /// Makes commits written without an fsync durable before the file closes, so a clean
    /// restart needs no replay.
    fn drop(&mut self) {
        if let Ok(txn) = self.db.begin_write() {
            let _ = txn.commit();
        }
    }
}

/// Runs blocking redb work off the async threads.
pub(crate) async fn blocking<T, F>(file: &Arc<DbFile>, work: F) -> Result<T, StoreError>
where
    F: FnOnce(&DbFile) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let file = file.clone();
    let path = file.path.clone();
    tokio::task::spawn_blocking(move || work(&file))
        .await
        .map_err(|e| blocking_failed(&path, e))?
}

fn blocking_failed(path: &Path, e: tokio::task::JoinError) -> StoreError {
    if e.is_panic() {
        StoreError::corrupt(path, format!("the storage engine crashed reading it: {e}"))
    } else {
        StoreError::storage(path, format!("storage task cancelled: {e}"))
    }
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_path_buf(),
        },
        DatabaseError::RepairAborted => StoreError::corrupt(path, "repair was aborted"),
        DatabaseError::UpgradeRequired(version) => StoreError::storage(
            path,
            format!("written in redb file format {version}, which this build cannot read"),
        ),
        other => redb_error(path, other.into()),
    }
}

fn redb_error(path: &Path, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(detail) => StoreError::corrupt(path, detail),
        // redb reports a file that does not start with its header this way.
        redb::Error::Io(io) if io.kind() == ErrorKind::InvalidData => {
            StoreError::corrupt(path, format!("not a redb database file ({io})"))
        }
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_path_buf(),
        },
        other => StoreError::storage(path, other),
    }
}

/// Wraps a `StoreError` for openraft, which stops the node on any storage error.
pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: StoreError,
) -> openraft::StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// JSON-decodes a stored value, naming the file and the record when it cannot be read.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    file: &DbFile,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| file.corrupt(format!("{what}: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(
    path: &Path,
    what: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::storage(path, format!("encode {what}: {e}")))
}
