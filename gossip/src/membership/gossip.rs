//! Record updates riding on SWIM messages (foca's custom broadcasts).

use std::sync::Arc;

use foca::{BroadcastHandler, Invalidates};

use super::{Metrics, PeerId};
use crate::records::{Fingerprint, Record, RecordKey};
use crate::store::RecordStore;

/// First byte of a record broadcast, so other broadcast kinds can follow later.
const RECORD_TAG: u8 = 1;

pub(super) fn encode(record: &Record) -> Result<Vec<u8>, postcard::Error> {
    let mut data = vec![RECORD_TAG];
    data.extend(postcard::to_allocvec(record)?);
    Ok(data)
}

fn decode(data: &[u8]) -> Result<Record, BroadcastError> {
    match data.split_first() {
        Some((&RECORD_TAG, rest)) => postcard::from_bytes(rest).map_err(BroadcastError::Decode),
        Some((tag, _)) => Err(BroadcastError::UnknownTag(*tag)),
        None => Err(BroadcastError::Empty),
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum BroadcastError {
    #[error("empty broadcast")]
    Empty,
    #[error("unknown broadcast tag {0}")]
    UnknownTag(u8),
    #[error("undecodable record broadcast: {0}")]
    Decode(postcard::Error),
}

/// Identifies one version of one key in foca's dissemination backlog.
pub(super) struct VersionKey {
    key: RecordKey,
    rank: (u64, crate::hlc::Timestamp, String, Fingerprint),
}

impl VersionKey {
    fn of(record: &Record) -> Self {
        Self {
            key: record.record_key(),
            rank: (
                record.generation,
                record.hlc,
                record.origin.clone(),
                record.fingerprint(),
            ),
        }
    }
}

impl Invalidates for VersionKey {
    /// A newer (or the same) version of a key replaces the queued one, so peers stop
    /// spreading superseded versions.
    fn invalidates(&self, other: &Self) -> bool {
        self.key == other.key && self.rank >= other.rank
    }
}

/// Merges received record broadcasts into the store and keeps spreading the ones that
/// were news.
pub(super) struct RecordGossip {
    pub(super) store: Arc<RecordStore>,
    pub(super) metrics: Arc<Metrics>,
}

impl BroadcastHandler<PeerId> for RecordGossip {
    type Key = VersionKey;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&PeerId>,
    ) -> Result<Option<Self::Key>, Self::Error> {
        let record = decode(data)?;
        let key = VersionKey::of(&record);
        if sender.is_none() {
            // Our own write, already in the store: always spread it.
            return Ok(Some(key));
        }
        let report = self.store.merge([record]);
        if report.rejected > 0 {
            Metrics::bump(&self.metrics.broadcasts_rejected);
        }
        if report.applied.is_empty() {
            // Stale or already known: stop spreading it (foca relies on this).
            return Ok(None);
        }
        Metrics::bump(&self.metrics.broadcasts_applied);
        Ok(Some(key))
    }
}
