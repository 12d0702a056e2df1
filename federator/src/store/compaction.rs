//! When to build a snapshot (and so purge the log it covers): once at least
//! `snapshot_logs_since_last` entries were applied since the last one, and the log written
//! since then is at least as large as that snapshot.
//!
//! A snapshot encodes the whole state, so building one every N entries costs O(state) per N
//! writes and grows without bound with the state (40k workloads: a tenth of the federators'
//! CPU at 5,000 entries). Waiting until the log since the last snapshot outweighs it bounds
//! snapshot work by the bytes written, as a log-structured store bounds compaction, while a
//! small state still compacts every N entries. A restart then replays at most about one
//! snapshot's worth of log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::TypeConfig;

/// A snapshot asked for that has not appeared after this long is asked for again.
const RETRY: Duration = Duration::from_secs(30);

/// Watches Raft's metrics and triggers a snapshot when one is due; ends when Raft stops.
pub(crate) async fn run(
    raft: openraft::Raft<TypeConfig>,
    min_entries: u64,
    log_bytes: Arc<AtomicU64>,
    snapshot_bytes: Arc<AtomicU64>,
) {
    let mut metrics = raft.metrics();
    let index = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| {
        (
            m.snapshot.map(|s| s.index),
            m.last_applied.map_or(0, |l| l.index),
        )
    };
    let (mut snapshot, _) = index(&metrics.borrow());
    let mut log_at_snapshot = log_bytes.load(Ordering::Relaxed);
    // When this task last asked for a snapshot that has not appeared yet.
    let mut asked: Option<Instant> = None;
    while metrics.changed().await.is_ok() {
        let (now_snapshot, applied) = index(&metrics.borrow_and_update());
        if now_snapshot != snapshot {
            // Built (ours, or one asked for elsewhere) or installed from the leader.
            snapshot = now_snapshot;
            log_at_snapshot = log_bytes.load(Ordering::Relaxed);
            asked = None;
            continue;
        }
        // One that came to nothing (it failed, or was not newer) is asked for again later.
        if asked.is_some_and(|at| at.elapsed() < RETRY) {
            continue;
        }
        let entries = applied.saturating_sub(snapshot.unwrap_or(0));
        let logged = log_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(log_at_snapshot);
        let size = snapshot_bytes.load(Ordering::Relaxed);
        if due(entries, logged, size, min_entries) {
            debug!(entries, logged, snapshot = size, "building a snapshot");
            if let Err(e) = raft.trigger().snapshot().await {
                warn!(error = %e, "could not ask for a snapshot");
                return;
            }
            asked = Some(Instant::now());
        }
    }
}

/// Whether `entries` applied and `logged` bytes appended since a snapshot of `snapshot`
/// bytes call for the next one.
fn due(entries: u64, logged: u64, snapshot: u64, min_entries: u64) -> bool {
    entries >= min_entries && logged >= snapshot
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_snapshot_waits_for_enough_entries_and_a_log_as_large_as_itself() {
        // A small state compacts every `min_entries`.
        assert!(!due(4_999, 10 << 20, 1 << 10, 5_000));
        assert!(due(5_000, 2 << 10, 1 << 10, 5_000));
        // A large one waits until the log since it outweighs it.
        assert!(!due(50_000, 39 << 20, 40 << 20, 5_000));
        assert!(due(50_000, 40 << 20, 40 << 20, 5_000));
    }
}
