//! What the agent runs, persisted in its data dir so that a restarted agent picks up where the
//! last one stopped:
//!
//! ```text
//! <data_dir>/assignments.json               the last full assignment set from the federator
//! <data_dir>/replicas/<id>/replica.json     one running replica (process runtime), for adoption
//! <data_dir>/replicas/<id>/{stdout,stderr}.log
//! ```
//!
//! Writes are atomic (temporary file, fsync, rename): a crash leaves the old or the new file,
//! never half of one.

use std::io;
use std::path::{Path, PathBuf};

use hansa_core::Assignment;
use serde::{Deserialize, Serialize};

use crate::runtime::ReplicaRecord;

pub const ASSIGNMENTS_FILE: &str = "assignments.json";
pub const REPLICAS_DIR: &str = "replicas";
pub const RECORD_FILE: &str = "replica.json";

/// Bumped when the file layout changes incompatibly.
const ASSIGNMENTS_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid ({source}); fix or delete it")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has version {found}, this agent reads version {expected}; delete it or use a newer agent")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("replica id {0:?} is not usable as a directory name")]
    InvalidId(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentsFile {
    version: u32,
    assignments: Vec<Assignment>,
}

pub fn replicas_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(REPLICAS_DIR)
}

/// The sandbox of one replica: its working directory, logs and record.
pub fn replica_dir(data_dir: &Path, id: &str) -> Result<PathBuf, StateError> {
    if !is_valid_id(id) {
        return Err(StateError::InvalidId(id.to_string()));
    }
    Ok(replicas_dir(data_dir).join(id))
}

/// Replica ids become directory names: lowercase letters, digits, `-`, `_` and `.`, not
/// starting with a dot.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Persists the full assignment set.
pub async fn save_assignments(
    data_dir: &Path,
    assignments: &[Assignment],
) -> Result<(), StateError> {
    let file = AssignmentsFile {
        version: ASSIGNMENTS_VERSION,
        assignments: assignments.to_vec(),
    };
    let path = data_dir.join(ASSIGNMENTS_FILE);
    let bytes = serde_json::to_vec_pretty(&file).map_err(|source| StateError::Json {
        path: path.clone(),
        source,
    })?;
    write_atomically(&path, &bytes).await
}

/// The last persisted assignment set; none when the agent never received one.
pub async fn load_assignments(data_dir: &Path) -> Result<Vec<Assignment>, StateError> {
    let path = data_dir.join(ASSIGNMENTS_FILE);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    let file: AssignmentsFile =
        serde_json::from_slice(&bytes).map_err(|source| StateError::Json {
            path: path.clone(),
            source,
        })?;
    if file.version != ASSIGNMENTS_VERSION {
        return Err(StateError::Version {
            path,
            found: file.version,
            expected: ASSIGNMENTS_VERSION,
        });
    }
    Ok(file.assignments)
}

pub async fn write_record(data_dir: &Path, record: &ReplicaRecord) -> Result<(), StateError> {
    let path = replica_dir(data_dir, &record.id)?.join(RECORD_FILE);
    let bytes = serde_json::to_vec_pretty(record).map_err(|source| StateError::Json {
        path: path.clone(),
        source,
    })?;
    write_atomically(&path, &bytes).await
}

/// Every replica record in the data dir. A record that cannot be read is reported, not
/// deleted: it may come from a newer agent.
pub async fn read_records(data_dir: &Path) -> Vec<Result<ReplicaRecord, StateError>> {
    let dir = replicas_dir(data_dir);
    let mut entries = match tokio::fs::read_dir(&dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(source) => {
            return vec![Err(StateError::Io {
                action: "list",
                path: dir,
                source,
            })]
        }
    };
    let mut records = Vec::new();
    loop {
        let entry = match entries.next_entry().await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(source) => {
                records.push(Err(StateError::Io {
                    action: "list",
                    path: dir.clone(),
                    source,
                }));
                break;
            }
        };
        let path = entry.path().join(RECORD_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => records.push(
                serde_json::from_slice::<ReplicaRecord>(&bytes)
                    .map_err(|source| StateError::Json { path, source }),
            ),
            // A directory with logs only: a replica that was stopped.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => records.push(Err(StateError::Io {
                action: "read",
                path,
                source,
            })),
        }
    }
    records
}

/// Forgets a replica (its logs stay).
pub async fn remove_record(data_dir: &Path, id: &str) -> Result<(), StateError> {
    let path = replica_dir(data_dir, id)?.join(RECORD_FILE);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

/// Deletes a replica's directory: record, logs and whatever it wrote in its sandbox.
pub async fn remove_replica_dir(data_dir: &Path, id: &str) -> Result<(), StateError> {
    let path = replica_dir(data_dir, id)?;
    match tokio::fs::remove_dir_all(&path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use tokio::io::AsyncWriteExt;

    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_error("create", parent))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io_error("create", &tmp))?;
    file.write_all(bytes)
        .await
        .map_err(io_error("write", &tmp))?;
    file.sync_all().await.map_err(io_error("sync", &tmp))?;
    drop(file);
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(io_error("rename into", path))
}

#[cfg(test)]
mod tests {
    use hansa_core::{TaskTemplate, WorkloadKey};

    use super::*;
    use crate::runtime::RuntimeHandle;

    fn assignment(name: &str) -> Assignment {
        Assignment {
            workload: WorkloadKey::new("default", name),
            revision: 3,
            replicas: 2,
            template: TaskTemplate {
                command: vec!["sleep".to_string(), "1000".to_string()],
                ..TaskTemplate::default()
            },
            update: Default::default(),
        }
    }

    #[tokio::test]
    async fn assignments_round_trip_and_default_to_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_assignments(dir.path()).await.unwrap().is_empty());
        let set = vec![assignment("web"), assignment("api")];
        save_assignments(dir.path(), &set).await.unwrap();
        assert_eq!(load_assignments(dir.path()).await.unwrap(), set);
    }

    #[tokio::test]
    async fn a_corrupt_assignments_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ASSIGNMENTS_FILE), b"{not json").unwrap();
        let err = load_assignments(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("assignments.json"), "{err}");
        assert!(err.contains("fix or delete it"), "{err}");
    }

    #[tokio::test]
    async fn records_are_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let record = ReplicaRecord {
            id: "web-0a1b2c".to_string(),
            workload: WorkloadKey::new("default", "web"),
            revision: 1,
            template_hash: "00".to_string(),
            node: "local".to_string(),
            host_ports: vec![31000],
            endpoints: Vec::new(),
            started_at_ms: 1,
            handle: RuntimeHandle::Process {
                pid: 42,
                start_ticks: 7,
            },
        };
        write_record(dir.path(), &record).await.unwrap();
        std::fs::create_dir_all(replicas_dir(dir.path()).join("logs-only")).unwrap();
        let records = read_records(dir.path()).await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].as_ref().unwrap(), &record);
        remove_record(dir.path(), &record.id).await.unwrap();
        assert!(read_records(dir.path()).await.is_empty());
        remove_replica_dir(dir.path(), &record.id).await.unwrap();
        assert!(!replica_dir(dir.path(), &record.id).unwrap().exists());
    }

    #[test]
    fn ids_that_escape_the_data_dir_are_refused() {
        assert!(is_valid_id("web-0a1b2c"));
        for id in ["", "..", "../etc", "a/b", ".hidden", "Web"] {
            assert!(!is_valid_id(id), "{id}");
        }
    }
}
