//! The replicated document store of peer mode: one winning version per key, merged by
//! the rule in [`crate::records`], with bucketed digests for anti-entropy, tombstone
//! garbage collection and change notifications.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::{broadcast, watch};

use crate::hlc::{system_time_ms, Clock, NodeId};
use crate::records::{Fingerprint, InvalidRecord, Kind, Record, RecordKey, Version};

/// Digest buckets per kind: a digest is at most `4 * BUCKETS` small entries, and a
/// mismatch costs one bucket's versions, about `1/BUCKETS` of the keys.
pub const BUCKETS: u16 = 64;

/// How many changes a slow subscriber may fall behind before it sees `Lagged`.
const CHANGE_CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This peer's name: the origin of local writes.
    pub peer: String,
    /// A tombstone is kept at least this long after the delete. Must exceed the
    /// longest time a peer may be away and still catch up through anti-entropy;
    /// a peer away longer must rejoin with an empty store, or it may bring a deleted
    /// record back.
    pub tombstone_ttl: Duration,
}

impl StoreConfig {
    pub fn new(peer: impl Into<String>) -> Self {
        Self {
            peer: peer.into(),
            tombstone_ttl: default_tombstone_ttl(),
        }
    }
}

pub fn default_tombstone_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

/// Identifies a digest bucket: a kind and a slice of the key hash space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketId {
    pub kind: Kind,
    pub index: u16,
}

impl BucketId {
    pub fn of(kind: Kind, key: &str) -> Self {
        let hash = Sha256::digest(key.as_bytes());
        let index = u16::from_be_bytes([hash[0], hash[1]]) % BUCKETS;
        Self { kind, index }
    }
}

/// Summary of one bucket: XOR of its records' fingerprints, and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSummary {
    pub id: BucketId,
    pub hash: Fingerprint,
    pub count: u32,
}

/// A compact summary of a whole store: one entry per non-empty bucket, sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub buckets: Vec<BucketSummary>,
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    /// A write made through this store (`put` / `delete`).
    Local,
    /// A version received from a peer, by gossip or anti-entropy.
    Remote,
}

/// A key's winning version changed.
#[derive(Clone, Debug)]
pub struct Change {
    pub record: Record,
    pub previous: Option<Record>,
    pub source: ChangeSource,
}

/// The result of merging a batch of records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Keys whose winning version changed.
    pub applied: Vec<RecordKey>,
    /// Versions that lost to (or equalled) what the store already had.
    pub stale: usize,
    /// Records refused as malformed.
    pub rejected: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error(transparent)]
    Invalid(#[from] InvalidRecord),
}

#[derive(Clone, Debug)]
struct Entry {
    record: Record,
    fingerprint: Fingerprint,
}

impl Entry {
    fn new(record: Record) -> Self {
        let fingerprint = record.fingerprint();
        Self {
            record,
            fingerprint,
        }
    }

    fn rank(&self) -> (u64, &crate::hlc::Timestamp, &str, &Fingerprint) {
        (
            self.record.generation,
            &self.record.hlc,
            &self.record.origin,
            &self.fingerprint,
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<RecordKey, Entry>,
    buckets: BTreeMap<BucketId, (Fingerprint, u32)>,
}

impl Inner {
    fn bucket_add(&mut self, key: &RecordKey, fingerprint: Fingerprint) {
        let bucket = self
            .buckets
            .entry(BucketId::of(key.kind, &key.key))
            .or_default();
        bucket.0 = bucket.0.xor(fingerprint);
        bucket.1 += 1;
    }

    fn bucket_remove(&mut self, key: &RecordKey, fingerprint: Fingerprint) {
        let id = BucketId::of(key.kind, &key.key);
        if let Some(bucket) = self.buckets.get_mut(&id) {
            bucket.0 = bucket.0.xor(fingerprint);
            bucket.1 -= 1;
            if bucket.1 == 0 {
                self.buckets.remove(&id);
            }
        }
    }

    /// Installs `entry` as the key's version, returning the one it replaced.
    fn install(&mut self, key: RecordKey, entry: Entry) -> Option<Record> {
        self.bucket_add(&key, entry.fingerprint);
        let previous = self.entries.insert(key.clone(), entry)?;
        self.bucket_remove(&key, previous.fingerprint);
        Some(previous.record)
    }
}

/// The replicated record store. Share it behind an `Arc`; every method takes `&self`.
pub struct RecordStore {
    config: StoreConfig,
    clock: Clock,
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    revision: watch::Sender<u64>,
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore")
            .field("peer", &self.config.peer)
            .field("records", &self.lock().entries.len())
            .finish()
    }
}

impl RecordStore {
    pub fn new(config: StoreConfig) -> Arc<Self> {
        let clock = Clock::new(NodeId::from_name(&config.peer));
        Self::with_clock(config, clock)
    }

    /// A store whose local writes are stamped by `clock` (tests pass a fake one).
    pub fn with_clock(config: StoreConfig, clock: Clock) -> Arc<Self> {
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let (revision, _) = watch::channel(0);
        Arc::new(Self {
            config,
            clock,
            inner: Mutex::new(Inner::default()),
            changes,
            revision,
        })
    }

    pub fn peer(&self) -> &str {
        &self.config.peer
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent: every mutation is
        // a single insert/remove pair with no await in between.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every change to a key's winning version, in the order applied. A subscriber
    /// that falls behind gets `RecvError::Lagged` and should re-read with `list`.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// A counter bumped after each batch of changes: for reconcile loops that only
    /// need "something changed, look again" (deduplicated for free by `watch`).
    pub fn watch_revision(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            // No subscribers is fine.
            let _ = self.changes.send(change);
        }
        self.revision.send_modify(|revision| *revision += 1);
    }

    /// Writes a document on this peer: generation one past the current version
    /// (tombstone included), stamped now, with this peer as origin.
    pub fn put(&self, kind: Kind, key: &str, body: impl Into<Bytes>) -> Result<Record, StoreError> {
        let body = body.into();
        self.write(kind, key, |generation, hlc, origin| {
            Record::live(kind, key, generation, hlc, origin, body)
        })
    }

    /// Deletes a document on this peer by writing a tombstone. Returns `None` when the
    /// key is absent or already deleted.
    pub fn delete(&self, kind: Kind, key: &str) -> Result<Option<Record>, StoreError> {
        let record_key = RecordKey::new(kind, key);
        if self.get(&record_key).is_none() {
            return Ok(None);
        }
        self.write(kind, key, |generation, hlc, origin| {
            Record::tombstone(kind, key, generation, hlc, origin)
        })
        .map(Some)
    }

    fn write(
        &self,
        kind: Kind,
        key: &str,
        make: impl FnOnce(u64, crate::hlc::Timestamp, &str) -> Record,
    ) -> Result<Record, StoreError> {
        let record_key = RecordKey::new(kind, key);
        let (record, previous) = {
            let mut inner = self.lock();
            let generation = inner
                .entries
                .get(&record_key)
                .map_or(1, |entry| entry.record.generation + 1);
            let record = make(generation, self.clock.now(), &self.config.peer);
            record.validate()?;
            let previous = inner.install(record_key, Entry::new(record.clone()));
            (record, previous)
        };
        self.publish(vec![Change {
            record: record.clone(),
            previous,
            source: ChangeSource::Local,
        }]);
        Ok(record)
    }

    /// The live version of a key (`None` if absent or deleted).
    pub fn get(&self, key: &RecordKey) -> Option<Record> {
        self.get_including_tombstone(key)
            .filter(|record| !record.is_tombstone())
    }

    /// The winning version of a key, tombstone or not.
    pub fn get_including_tombstone(&self, key: &RecordKey) -> Option<Record> {
        self.lock()
            .entries
            .get(key)
            .map(|entry| entry.record.clone())
    }

    /// Live records of one kind, sorted by key.
    pub fn list(&self, kind: Kind) -> Vec<Record> {
        let inner = self.lock();
        inner
            .entries
            .range(RecordKey::new(kind, "")..)
            .take_while(|(key, _)| key.kind == kind)
            .filter(|(_, entry)| !entry.record.is_tombstone())
            .map(|(_, entry)| entry.record.clone())
            .collect()
    }

    /// Every winning version, tombstones included, sorted by key: two stores that
    /// converged return equal snapshots.
    pub fn snapshot(&self) -> Vec<Record> {
        self.lock()
            .entries
            .values()
            .map(|entry| entry.record.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges versions from peers. A version is applied when it beats the current
    /// one by the merge rule; malformed ones are refused. Observing their clocks keeps
    /// our next local write ahead of everything we have seen.
    pub fn merge(&self, records: impl IntoIterator<Item = Record>) -> MergeReport {
        let mut report = MergeReport::default();
        let mut changes = Vec::new();
        {
            let mut inner = self.lock();
            for record in records {
                if let Err(error) = record.validate() {
                    tracing::debug!(%error, "refused a record from a peer");
                    report.rejected += 1;
                    continue;
                }
                if let Err(drift) = self.clock.observe(record.hlc) {
                    // The record still merges by the rule; only our clock stays put.
                    tracing::warn!(origin = %record.origin, %drift, "peer clock far ahead");
                }
                let key = record.record_key();
                let candidate = Entry::new(record);
                let wins = inner
                    .entries
                    .get(&key)
                    .is_none_or(|current| candidate.rank() > current.rank());
                if !wins {
                    report.stale += 1;
                    continue;
                }
                let record = candidate.record.clone();
                let previous = inner.install(key.clone(), candidate);
                report.applied.push(key);
                changes.push(Change {
                    record,
                    previous,
                    source: ChangeSource::Remote,
                });
            }
        }
        self.publish(changes);
        report
    }

    /// Would `version` replace what we hold for its key?
    pub fn wants(&self, version: &Version) -> bool {
        let inner = self.lock();
        match inner.entries.get(&version.record_key()) {
            None => true,
            Some(current) => {
                version.precedence(&current.record.version_with(current.fingerprint))
                    == std::cmp::Ordering::Greater
            }
        }
    }

    /// Anti-entropy step 1: a summary of the whole store, one entry per bucket.
    pub fn digest(&self) -> Digest {
        let inner = self.lock();
        Digest {
            buckets: inner
                .buckets
                .iter()
                .map(|(id, (hash, count))| BucketSummary {
                    id: *id,
                    hash: *hash,
                    count: *count,
                })
                .collect(),
        }
    }

    /// Anti-entropy step 2, on the peer that received a digest: the versions of our
    /// records in every bucket that differs from the remote summary.
    pub fn versions_differing(&self, remote: &Digest) -> Vec<Version> {
        let remote: BTreeMap<BucketId, (Fingerprint, u32)> = remote
            .buckets
            .iter()
            .map(|bucket| (bucket.id, (bucket.hash, bucket.count)))
            .collect();
        let inner = self.lock();
        let differing: BTreeSet<BucketId> = inner
            .buckets
            .iter()
            .filter(|(id, summary)| remote.get(id) != Some(summary))
            .map(|(id, _)| *id)
            .collect();
        if differing.is_empty() {
            return Vec::new();
        }
        inner
            .entries
            .iter()
            .filter(|(key, _)| differing.contains(&BucketId::of(key.kind, &key.key)))
            .map(|(_, entry)| entry.record.version_with(entry.fingerprint))
            .collect()
    }

    /// Anti-entropy step 3, back on the asking peer: the keys whose remote version
    /// beats ours (or that we lack), to fetch with [`RecordStore::records`].
    pub fn diff(&self, remote_versions: &[Version]) -> Vec<RecordKey> {
        let mut wanted: Vec<RecordKey> = remote_versions
            .iter()
            .filter(|version| self.wants(version))
            .map(Version::record_key)
            .collect();
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// Anti-entropy step 4, on the peer asked: the winning versions of `keys`
    /// (tombstones included; unknown keys are skipped).
    pub fn records(&self, keys: &[RecordKey]) -> Vec<Record> {
        let inner = self.lock();
        keys.iter()
            .filter_map(|key| inner.entries.get(key))
            .map(|entry| entry.record.clone())
            .collect()
    }

    /// Drops tombstones deleted before both `now_ms - tombstone_ttl` and `horizon_ms`,
    /// the time before which every peer is known to have caught up (pass `now_ms` when
    /// unknown; the TTL then decides alone). Returns how many were dropped.
    pub fn collect_garbage(&self, now_ms: u64, horizon_ms: u64) -> usize {
        let ttl_ms = u64::try_from(self.config.tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(ttl_ms).min(horizon_ms);
        let mut inner = self.lock();
        let expired: Vec<(RecordKey, Fingerprint)> = inner
            .entries
            .iter()
            .filter(|(_, entry)| entry.record.deleted_at.is_some_and(|at| at < cutoff))
            .map(|(key, entry)| (key.clone(), entry.fingerprint))
            .collect();
        for (key, fingerprint) in &expired {
            inner.entries.remove(key);
            inner.bucket_remove(key, *fingerprint);
        }
        if !expired.is_empty() {
            tracing::debug!(count = expired.len(), "collected tombstones");
        }
        expired.len()
    }

    /// [`RecordStore::collect_garbage`] against the system clock, TTL only.
    pub fn collect_expired_tombstones(&self) -> usize {
        let now = system_time_ms();
        self.collect_garbage(now, now)
    }
}

#[cfg(test)]
mod tests;
