//! The store's one error type, and its mapping to gRPC status codes.

use std::path::PathBuf;
use std::time::Duration;

use super::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A leader exists (or this node leads) but the command was not committed in time. It may
    /// still be applied later, once a majority is reachable again.
    #[error(
        "no quorum: the change was not committed within {0:?} (a majority of federators is \
         unreachable); it may still be applied once they are back"
    )]
    NoQuorum(Duration),
    /// Fewer than a majority of the voters answer at all: no write or linearizable read can
    /// succeed until enough of them are back, so this is reported at once.
    #[error(
        "no quorum: {reachable} of {voters} federators reachable, a majority ({}) is needed. \
         Start the stopped federators (a change already sent may still be applied once they \
         are back); reads with --stale still answer",
        voters / 2 + 1
    )]
    QuorumLost { reachable: usize, voters: usize },
    /// No leader could be found before the deadline (an election is under way, or a majority
    /// of federators is down).
    #[error(
        "no quorum: no Raft leader is known (a majority of federators may be down, or an \
         election is under way)"
    )]
    NoLeader,
    /// The leader could not confirm a read or make a change (no quorum, or it is catching up).
    #[error("{0}")]
    Unavailable(String),
    /// The leader could not be reached to forward a change to it.
    #[error("forwarding the change to the leader (node {leader} at {addr}) failed: {detail}")]
    Forward {
        leader: NodeId,
        addr: String,
        detail: String,
    },
    /// Reading or writing a storage file failed.
    #[error("{}: {detail}", path.display())]
    Storage { path: PathBuf, detail: String },
    /// A storage file holds data this federator cannot trust; it refuses to serve it.
    #[error(
        "{}: corrupt: {detail}. Move the file away and let this federator catch up from its \
         peers, or restore a backup",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    /// Another process (or another `Store` in this process) has the file open.
    #[error("{}: already in use by another federator process", path.display())]
    InUse { path: PathBuf },
    /// The data directory belongs to another Raft node.
    #[error(
        "{}: belongs to Raft node {stored}, but this federator is node {configured}",
        path.display()
    )]
    WrongNode {
        path: PathBuf,
        stored: NodeId,
        configured: NodeId,
    },
    #[error("invalid Raft settings: {0}")]
    Config(String),
    /// Raft stopped (shut down, or a storage failure made it stop to protect the data).
    #[error("the Raft node has stopped: {0}")]
    Fatal(String),
}

impl StoreError {
    pub(crate) fn storage(path: impl Into<PathBuf>, detail: impl ToString) -> StoreError {
        StoreError::Storage {
            path: path.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: path.into(),
            detail: detail.to_string(),
        }
    }

    /// True when retrying later may succeed (no leader, no quorum, leader unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::NoQuorum(_)
                | StoreError::QuorumLost { .. }
                | StoreError::NoLeader
                | StoreError::Forward { .. }
                | StoreError::Unavailable(_)
        )
    }

    /// The gRPC code a caller should see for this error.
    pub fn code(&self) -> tonic::Code {
        if self.is_unavailable() {
            tonic::Code::Unavailable
        } else {
            tonic::Code::Internal
        }
    }
}
