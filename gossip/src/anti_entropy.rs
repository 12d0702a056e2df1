//! Anti-entropy: a peer pulls what it is missing from another, so a peer that was away
//! (or missed gossip) catches up. Transport-independent: the federator implements
//! [`AntiEntropyPeer`] as a gRPC client, and serves the same two calls from its
//! [`RecordStore`].
//!
//! One pull, with A asking B:
//! 1. A sends `A.digest()` (one small entry per bucket).
//! 2. B answers `B.versions_differing(digest)`: versions of B's records in buckets
//!    that differ.
//! 3. A computes `A.diff(versions)`: keys where B's version wins or A has none.
//! 4. A asks `B.records(keys)` and `A.merge`s them.
//!
//! A pull never sends A's data to B; B catches up by pulling from A on its own turn.
//! Every peer pulling from a random live peer every few seconds converges the pool.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::hlc::NodeId;
use crate::membership::Member;
use crate::records::{Record, RecordKey, Version};
use crate::store::{Digest, MergeReport, RecordStore};

/// Keys fetched per `records` call, to bound message size.
pub const FETCH_BATCH: usize = 256;

/// The remote half of an anti-entropy pull.
pub trait AntiEntropyPeer {
    type Error;

    /// Step 2, answered by the remote's [`RecordStore::versions_differing`].
    fn fetch_versions(
        &self,
        digest: Digest,
    ) -> impl Future<Output = Result<Vec<Version>, Self::Error>> + Send;

    /// Step 4, answered by the remote's [`RecordStore::records`].
    fn fetch_records(
        &self,
        keys: Vec<RecordKey>,
    ) -> impl Future<Output = Result<Vec<Record>, Self::Error>> + Send;
}

/// Pulls from `remote` everything whose version there beats ours.
pub async fn pull<P: AntiEntropyPeer + Sync>(
    local: &RecordStore,
    remote: &P,
) -> Result<MergeReport, P::Error> {
    let versions = remote.fetch_versions(local.digest()).await?;
    let wanted = local.diff(&versions);
    let mut report = MergeReport::default();
    for batch in wanted.chunks(FETCH_BATCH) {
        let records = remote.fetch_records(batch.to_vec()).await?;
        let batch_report = local.merge(records);
        report.applied.extend(batch_report.applied);
        report.stale += batch_report.stale;
        report.rejected += batch_report.rejected;
    }
    if !report.applied.is_empty() {
        tracing::debug!(
            applied = report.applied.len(),
            "anti-entropy pulled records"
        );
    }
    Ok(report)
}

/// A store in the same process answers directly (tests, `hansa dev`).
impl AntiEntropyPeer for RecordStore {
    type Error = Infallible;

    async fn fetch_versions(&self, digest: Digest) -> Result<Vec<Version>, Infallible> {
        Ok(RecordStore::versions_differing(self, &digest))
    }

    async fn fetch_records(&self, keys: Vec<RecordKey>) -> Result<Vec<Record>, Infallible> {
        Ok(RecordStore::records(self, &keys))
    }
}

impl<P: AntiEntropyPeer + Send + Sync> AntiEntropyPeer for Arc<P> {
    type Error = P::Error;

    fn fetch_versions(
        &self,
        digest: Digest,
    ) -> impl Future<Output = Result<Vec<Version>, Self::Error>> + Send {
        P::fetch_versions(self, digest)
    }

    fn fetch_records(
        &self,
        keys: Vec<RecordKey>,
    ) -> impl Future<Output = Result<Vec<Record>, Self::Error>> + Send {
        P::fetch_records(self, keys)
    }
}

/// Opens an anti-entropy session with a live peer; the federator's connects a gRPC
/// client to that peer's API.
pub trait Connector {
    type Peer: AntiEntropyPeer<Error: Display> + Sync;
    type Error: Display;

    fn connect(
        &self,
        member: &Member,
    ) -> impl Future<Output = Result<Self::Peer, Self::Error>> + Send;
}

#[derive(Clone, Debug)]
pub struct AntiEntropyConfig {
    /// How often we pull from the next live peer.
    pub interval: Duration,
    /// How often expired tombstones are collected.
    pub gc_interval: Duration,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            gc_interval: Duration::from_secs(60),
        }
    }
}

/// Pulls from one live peer per interval, going round the live set (so every peer
/// is pulled from within `interval * peers`), and collects expired tombstones, until
/// `shutdown`. Peers start at different points of the round, spreading the load.
pub async fn run<C: Connector>(
    store: Arc<RecordStore>,
    live_members: impl Fn() -> Vec<Member>,
    connector: C,
    config: AntiEntropyConfig,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut turn = NodeId::from_name(store.peer()).0 as usize;
    let mut last_gc = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if last_gc.elapsed() >= config.gc_interval {
            store.collect_expired_tombstones();
            last_gc = Instant::now();
        }
        let mut members: Vec<Member> = live_members().into_iter().filter(Member::is_live).collect();
        if members.is_empty() {
            continue;
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        turn = turn.wrapping_add(1);
        let member = &members[turn % members.len()];
        let outcome = match connector.connect(member).await {
            Ok(peer) => pull(&store, &peer).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = outcome {
            tracing::debug!(peer = %member.name, %error, "anti-entropy pull failed");
        }
    }
}

/// A pull between two stores in one process: the reference for what a networked pull
/// must achieve, and a test helper.
pub fn pull_in_process(local: &RecordStore, remote: &RecordStore) -> MergeReport {
    let versions = remote.versions_differing(&local.digest());
    let wanted = local.diff(&versions);
    local.merge(remote.records(&wanted))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::membership::MemberState;
    use crate::records::Kind;
    use crate::store::StoreConfig;

    /// A remote that answers from a store and counts what it ships.
    struct Remote {
        store: Arc<RecordStore>,
        shipped: AtomicUsize,
    }

    impl AntiEntropyPeer for Remote {
        type Error = Infallible;

        async fn fetch_versions(&self, digest: Digest) -> Result<Vec<Version>, Infallible> {
            Ok(self.store.versions_differing(&digest))
        }

        async fn fetch_records(&self, keys: Vec<RecordKey>) -> Result<Vec<Record>, Infallible> {
            let records = self.store.records(&keys);
            self.shipped.fetch_add(records.len(), Ordering::SeqCst);
            Ok(records)
        }
    }

    struct InProcess(BTreeMap<String, Arc<RecordStore>>);

    impl Connector for InProcess {
        type Peer = Arc<RecordStore>;
        type Error = String;

        async fn connect(&self, member: &Member) -> Result<Arc<RecordStore>, String> {
            self.0
                .get(&member.name)
                .cloned()
                .ok_or_else(|| format!("no peer {}", member.name))
        }
    }

    fn member(name: &str, state: MemberState) -> Member {
        Member {
            name: name.to_owned(),
            cluster: "c".to_owned(),
            addr: "127.0.0.1:1".parse().unwrap(),
            epoch: 1,
            state,
            last_heard: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_catches_up_from_every_live_peer_and_skips_dead_ones() {
        let (b, c, dead) = (
            RecordStore::new(StoreConfig::new("b")),
            RecordStore::new(StoreConfig::new("c")),
            RecordStore::new(StoreConfig::new("dead")),
        );
        b.put(Kind::Workload, "from-b", "{}").unwrap();
        c.put(Kind::Policy, "from-c", "{}").unwrap();
        dead.put(Kind::Policy, "from-dead", "{}").unwrap();
        let peers = BTreeMap::from([
            ("b".to_owned(), b.clone()),
            ("c".to_owned(), c.clone()),
            ("dead".to_owned(), dead),
        ]);
        let a = RecordStore::new(StoreConfig::new("a"));
        let shutdown = CancellationToken::new();
        let members = vec![
            member("b", MemberState::Alive),
            member("c", MemberState::Suspect),
            member("dead", MemberState::Down),
        ];
        let task = tokio::spawn(run(
            a.clone(),
            move || members.clone(),
            InProcess(peers),
            AntiEntropyConfig::default(),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(25)).await;
        shutdown.cancel();
        task.await.unwrap();
        let keys: Vec<String> = a.snapshot().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["from-b", "from-c"]);
    }

    #[tokio::test]
    async fn pull_fetches_in_batches_and_only_what_is_missing() {
        let local = RecordStore::new(StoreConfig::new("a"));
        let remote = Remote {
            store: RecordStore::new(StoreConfig::new("b")),
            shipped: AtomicUsize::new(0),
        };
        for i in 0..(FETCH_BATCH + 10) {
            remote
                .store
                .put(Kind::Workload, &format!("w{i}"), "{}")
                .unwrap();
        }
        let report = pull(&local, &remote).await.unwrap();
        assert_eq!(report.applied.len(), FETCH_BATCH + 10);
        assert_eq!(local.snapshot(), remote.store.snapshot());

        let again = pull(&local, &remote).await.unwrap();
        assert!(again.applied.is_empty());
        assert_eq!(remote.shipped.load(Ordering::SeqCst), FETCH_BATCH + 10);
    }
}
