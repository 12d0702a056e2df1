//! Peer mode (DESIGN.md §2): federators as equal peers, one beside each member cluster, with
//! no master. Each peer keeps the federation's state in its own store (a one-member Raft
//! group, so it is durable and could grow into a small HA group); what it writes there is
//! stamped as replicated versions (`Command::Stamped`), spread by gossip, and merged on the
//! other peers by the same deterministic rule (`Command::Merge`).
//!
//! - Membership and failure detection: SWIM (foca) over UDP sealed with the gossip key
//!   ([`hansa_gossip::Membership`]); small versions ride on it.
//! - Anti-entropy: every `anti_entropy_interval_ms` this peer pulls what it misses from the
//!   next live peer, over the peer port's mutual-TLS gRPC (`Peer` RPC).
//! - Soft state, never stored: each peer publishes its own agents' reports (`status/CLUSTER`)
//!   and its addresses (`peer/NAME`) as gossip records; the others feed them to their
//!   `Liveness` while the publishing peer is alive, as a hub follower's relay does.
//! - Ownership: a workload is placed by the peer that last wrote it while that peer is alive,
//!   else by the live peer that wins the rendezvous hash ([`hansa_gossip::ownership`]); a
//!   cluster whose peer is down counts as unreachable on this peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hansa_core::{ClusterHealth, WorkloadKey};
use hansa_gossip::anti_entropy::{self, AntiEntropyConfig, AntiEntropyPeer, Connector};
use hansa_gossip::hlc::system_time_ms;
use hansa_gossip::{
    Digest, GossipKey, Kind, Member, MemberState, Membership, MembershipConfig, MembershipEvent,
    Record, RecordKey, RecordStore, Timestamp, Version,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::views::PeerView;
use crate::config::PeerModeConfig;
use crate::liveness::Liveness;
use crate::relay::RelayedCluster;
use crate::store::{FederationState, Replicator, Store};
use crate::FederatorError;

/// How often this peer publishes its agents' reports and refreshes the others'.
const SOFT_INTERVAL: Duration = Duration::from_millis(500);
/// An unchanged report is published again this often, so a peer that missed it catches up.
const SOFT_REFRESH: Duration = Duration::from_secs(10);
/// How long one anti-entropy call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Versions merged into the store in one write, at most.
const MERGE_AT_ONCE: usize = 512;
/// How often tombstones older than the gossip store's TTL are dropped from the store.
const TOMBSTONE_GC: Duration = Duration::from_secs(600);
/// How often a peer alone in the pool looks up `join_srv` again.
const SRV_RETRY: Duration = Duration::from_secs(5);

/// What a peer publishes about itself (`peer/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeerAddresses {
    name: String,
    cluster: String,
    /// The API URL (`hansa`, agents).
    api: String,
    /// The peer port URL, for anti-entropy.
    peer_url: String,
}

/// A running peer: its gossip membership and record store, and what the controllers and the
/// API ask of it.
pub struct PeerMode {
    name: String,
    cluster: String,
    records: Arc<RecordStore>,
    membership: Arc<Membership>,
    /// Bumped whenever a peer's state changes, so the placement controller looks again.
    changed: watch::Sender<u64>,
}

impl PeerMode {
    /// Joins the pool and starts the peer's tasks on `tasks`. `store` must be open; what it
    /// holds is seeded into the gossip store first.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        name: &str,
        config: &PeerModeConfig,
        store: Store,
        live: Arc<Liveness>,
        api_url: String,
        peer_url: String,
        tasks: &mut JoinSet<Result<(), FederatorError>>,
        shutdown: CancellationToken,
    ) -> Result<Arc<PeerMode>, FederatorError> {
        let serve = |detail: String| FederatorError::Serve {
            what: "peer mode",
            detail,
        };
        let key_text = std::fs::read_to_string(&config.gossip_key_file).map_err(|e| {
            serve(format!(
                "peer.gossip_key_file {}: {e}",
                config.gossip_key_file.display()
            ))
        })?;
        let key: GossipKey = key_text.parse().map_err(|e| {
            serve(format!(
                "peer.gossip_key_file {}: {e}",
                config.gossip_key_file.display()
            ))
        })?;

        let records = RecordStore::new(hansa_gossip::StoreConfig::new(name));
        let held: Vec<Record> = store.read(|s| s.records.values().cloned().collect());
        records.merge(held);
        // Subscribed before gossip starts, so no version is missed.
        let inbound = records.subscribe();
        let (written_tx, written_rx) = mpsc::unbounded_channel();
        store.set_replicator(Arc::new(Outbound {
            origin: name.to_string(),
            records: records.clone(),
            written: written_tx,
        }))?;
        let answering = records.clone();
        store.set_gossip_handler(Arc::new(move |request| answer(&answering, request)));

        let mut membership_config =
            MembershipConfig::new(name, config.cluster.clone(), config.gossip_listen, key);
        membership_config.advertise = config.gossip_advertise;
        membership_config.join = resolve_join(&config.join).await;
        membership_config.suspicion_timeout = Duration::from_millis(config.suspicion_timeout_ms);
        membership_config.probe_period = Duration::from_millis(config.probe_period_ms);
        membership_config.state_sync_interval =
            Duration::from_millis(config.member_sync_interval_ms);
        membership_config.probe_rtt =
            (membership_config.probe_period * 2 / 5).max(Duration::from_millis(5));
        let membership = Arc::new(
            Membership::start(membership_config, records.clone(), shutdown.clone())
                .await
                .map_err(|e| serve(e.to_string()))?,
        );
        let peer = Arc::new(PeerMode {
            name: name.to_string(),
            cluster: config.cluster.clone(),
            records: records.clone(),
            membership: membership.clone(),
            changed: watch::channel(0).0,
        });
        info!(
            peer = name,
            cluster = %config.cluster,
            gossip = %membership.local_addr(),
            "peer mode: joined the gossip pool"
        );

        let addresses = PeerAddresses {
            name: name.to_string(),
            cluster: config.cluster.clone(),
            api: api_url,
            peer_url,
        };
        tasks.spawn(peer.clone().gossip_written(written_rx, shutdown.clone()));
        tasks.spawn(merge_inbound(
            store.clone(),
            records.clone(),
            inbound,
            shutdown.clone(),
        ));
        tasks.spawn(peer.clone().soft_state(addresses, live, shutdown.clone()));
        tasks.spawn(peer.clone().watch_members(shutdown.clone()));
        tasks.spawn(forget_tombstones(store.clone(), shutdown.clone()));
        if let Some(srv) = config.join_srv.clone() {
            tasks.spawn(peer.clone().join_by_srv(srv, shutdown.clone()));
        }
        let members = membership.clone();
        let dialer = Dialer {
            store,
            records: records.clone(),
        };
        let ae_config = AntiEntropyConfig {
            interval: Duration::from_millis(config.anti_entropy_interval_ms),
            ..AntiEntropyConfig::default()
        };
        let ae_shutdown = shutdown.clone();
        tasks.spawn(async move {
            anti_entropy::run(
                records,
                move || members.members(),
                dialer,
                ae_config,
                ae_shutdown,
            )
            .await;
            Ok(())
        });
        Ok(peer)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member cluster this peer runs beside.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The live peers' names (alive or suspect), this one included, sorted.
    pub fn live_peers(&self) -> Vec<String> {
        self.membership.live_peers()
    }

    /// Whether this peer places `key`: it last wrote the workload and is alive, or the
    /// workload's writer is down and this peer wins the rendezvous among `live_peers`.
    pub fn owns(&self, state: &FederationState, key: &WorkloadKey, live_peers: &[String]) -> bool {
        let record_key = format!("workload/{}/{}", key.namespace, key.name);
        let origin = state
            .records
            .get(&record_key)
            .map(|r| r.origin.as_str())
            .unwrap_or("");
        hansa_gossip::ownership::owner(&record_key, origin, live_peers) == Some(self.name.as_str())
    }

    /// Whether `cluster` counts as reachable here: it is this peer's own, or a live peer runs
    /// beside it.
    pub fn reachable(&self, cluster: &str) -> bool {
        cluster == self.cluster
            || self
                .membership
                .members()
                .iter()
                .any(|m| m.cluster == cluster && m.is_live())
    }

    /// The clusters whose health this peer decides (its own).
    pub fn manages_cluster(&self, cluster: &str) -> bool {
        cluster == self.cluster
    }

    /// Bumps when a peer comes, goes or becomes suspect.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every peer this one knows of, itself first.
    pub fn peers(&self, state: &FederationState) -> Vec<PeerView> {
        let mut written: BTreeMap<&str, usize> = BTreeMap::new();
        for record in state.records.values() {
            *written.entry(record.origin.as_str()).or_default() += 1;
        }
        let me = self.membership.identity();
        let mut out = vec![PeerView {
            name: me.name.clone(),
            cluster: me.cluster.clone(),
            address: me.addr.to_string(),
            state: "self".into(),
            age_ms: Some(0),
            records: written.get(me.name.as_str()).copied().unwrap_or(0),
        }];
        let mut members = self.membership.members();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(members.into_iter().map(|m: Member| {
            PeerView {
                records: written.get(m.name.as_str()).copied().unwrap_or(0),
                state: match m.state {
                    MemberState::Alive => "alive",
                    MemberState::Suspect => "suspect",
                    MemberState::Down => "down",
                }
                .into(),
                age_ms: m
                    .last_heard
                    .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                address: m.addr.to_string(),
                name: m.name,
                cluster: m.cluster,
            }
        }));
        out
    }

    /// The gossip counters and the peers by state, for `/metrics`.
    pub fn collector(&self) -> GossipCollector {
        GossipCollector {
            membership: self.membership.clone(),
        }
    }

    /// The clusters as this peer sees them: one whose peer is down is `Unreachable` here,
    /// whatever its stored health says.
    pub fn overlay(&self, cluster: &mut hansa_core::Cluster) {
        if cluster.health == ClusterHealth::Ready && !self.reachable(&cluster.name) {
            cluster.health = ClusterHealth::Unreachable;
        }
    }

    /// Gossips the versions local writes produced.
    async fn gossip_written(
        self: Arc<Self>,
        mut written: mpsc::UnboundedReceiver<Vec<Record>>,
        shutdown: CancellationToken,
    ) -> Result<(), FederatorError> {
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                batch = written.recv() => match batch {
                    Some(batch) => batch,
                    None => return Ok(()),
                },
            };
            let report = self.records.merge(batch);
            for key in report.applied {
                if let Some(record) = self.records.get_including_tombstone(&key) {
                    self.broadcast(&record).await;
                }
            }
        }
    }

    async fn broadcast(&self, record: &Record) {
        match self.membership.broadcast(record).await {
            Ok(_) => {}
            Err(e) => debug!(key = %record.key, error = %e, "could not gossip a record"),
        }
    }

    /// Writes a soft record (never stored, never deleted): its generation is the wall clock,
    /// so a restarted peer's first report still beats the ones it sent before.
    async fn put_soft(&self, key: &str, body: Vec<u8>) {
        let record_key = RecordKey::new(Kind::ClusterFact, key);
        let generation = self
            .records
            .get_including_tombstone(&record_key)
            .map_or(0, |r| r.generation + 1)
            .max(system_time_ms());
        let record = Record::live(
            Kind::ClusterFact,
            key,
            generation,
            self.records.clock().now(),
            self.name.clone(),
            body,
        );
        if !self.records.merge([record.clone()]).applied.is_empty() {
            self.broadcast(&record).await;
        }
    }

    /// Publishes this peer's addresses and its agents' reports; feeds the other peers'
    /// reports to `live` while those peers are alive.
    async fn soft_state(
        self: Arc<Self>,
        addresses: PeerAddresses,
        live: Arc<Liveness>,
        shutdown: CancellationToken,
    ) -> Result<(), FederatorError> {
        let own_key = format!("peer/{}", self.name);
        let own = serde_json::to_vec(&addresses).unwrap_or_default();
        let mut published: BTreeMap<String, (Vec<u8>, Instant)> = BTreeMap::new();
        let mut tick = tokio::time::interval(SOFT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A peer that comes up missed what we published before: it gets all of it at the next
        // tick, not at the next refresh (it cannot even reach us by anti-entropy before it has
        // our `peer/NAME`). Several arrivals within a tick cost one republish.
        let mut members = self.membership.subscribe();
        let mut arrived = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = members.recv() => {
                    match event {
                        Ok(MembershipEvent::Up(_)) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            arrived = true;
                        }
                        Ok(_) => {}
                        // The membership stopped: we are shutting down.
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            if std::mem::take(&mut arrived) {
                published.clear();
            }
            let mut due: Vec<(String, Vec<u8>)> = Vec::new();
            let mut wanted = vec![(own_key.clone(), own.clone())];
            for (name, report) in live.local_reports() {
                let mut relayed = crate::relay::relayed(name.clone(), report, &addresses.api);
                relayed.silence_ms = 0;
                if let Ok(body) = serde_json::to_vec(&relayed) {
                    wanted.push((format!("status/{name}"), body));
                }
            }
            for (key, body) in wanted {
                let stale = published
                    .get(&key)
                    .is_none_or(|(b, at)| *b != body || at.elapsed() >= SOFT_REFRESH);
                if stale {
                    due.push((key, body));
                }
            }
            for (key, body) in due {
                self.put_soft(&key, body.clone()).await;
                published.insert(key, (body, Instant::now()));
            }

            let live_peers = self.live_peers();
            for record in self.records.list(Kind::ClusterFact) {
                if !record.key.starts_with("status/")
                    || record.origin == self.name
                    || !live_peers.contains(&record.origin)
                {
                    continue;
                }
                let Some(body) = &record.body else { continue };
                match serde_json::from_slice::<RelayedCluster>(body) {
                    Ok(mut c) => {
                        c.silence_ms = 0;
                        live.relayed(c);
                    }
                    Err(e) => debug!(key = %record.key, error = %e, "ignoring a malformed report"),
                }
            }
        }
    }

    /// Logs peers coming and going and wakes the placement controller.
    async fn watch_members(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), FederatorError> {
        let mut events = self.membership.subscribe();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = events.recv() => event,
            };
            match event {
                Ok(MembershipEvent::Up(m)) => {
                    info!(peer = %m.name, cluster = %m.cluster, "peer is alive")
                }
                Ok(MembershipEvent::Suspect(m)) => info!(peer = %m.name, "peer is suspect"),
                Ok(MembershipEvent::Down(m)) => {
                    warn!(peer = %m.name, cluster = %m.cluster, "peer is down: its workloads get a new owner")
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Looks up `srv` at start and whenever this peer is alone, announcing itself to what it
    /// finds.
    async fn join_by_srv(
        self: Arc<Self>,
        srv: String,
        shutdown: CancellationToken,
    ) -> Result<(), FederatorError> {
        loop {
            let alone = self.live_peers().len() <= 1;
            if alone {
                match srv_addresses(&srv).await {
                    Ok(addrs) if !addrs.is_empty() => {
                        let own = self.membership.identity().addr;
                        let addrs: Vec<SocketAddr> =
                            addrs.into_iter().filter(|a| *a != own).collect();
                        debug!(%srv, ?addrs, "joining peers found by SRV");
                        if let Err(e) = self.membership.join(addrs).await {
                            warn!(error = %e, "cannot announce to the SRV peers");
                        }
                    }
                    Ok(_) => debug!(%srv, "the SRV lookup found no peers"),
                    Err(e) => warn!(%srv, error = %e, "SRV lookup for peers failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(SRV_RETRY) => {}
            }
        }
    }
}

/// Drops tombstones from the store once the gossip store has (after its TTL, by which
/// every peer away for less has caught up), so deletes do not accumulate for ever.
async fn forget_tombstones(
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), FederatorError> {
    let ttl =
        u64::try_from(hansa_gossip::store::default_tombstone_ttl().as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(TOMBSTONE_GC) => {}
        }
        match store
            .forget_tombstones(system_time_ms().saturating_sub(ttl))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(
                tombstones = n,
                "forgot deletes older than the tombstone TTL"
            ),
            Err(e) => warn!(error = %e, "could not drop old tombstones"),
        }
    }
}

/// Peer mode's `/metrics`: `hansa_gossip_*` counters (datagrams sent, received, refused for
/// failing to open with the gossip key, ...) and `hansa_gossip_peers{state}`.
#[derive(Debug)]
pub struct GossipCollector {
    membership: Arc<Membership>,
}

impl prometheus_client::collector::Collector for GossipCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use hansa_gossip::membership::Metrics;
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let m = self.membership.metrics();
        let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 8] = [
            (
                "hansa_gossip_datagrams_sent",
                "Gossip datagrams sent",
                &m.datagrams_sent,
            ),
            (
                "hansa_gossip_datagrams_received",
                "Gossip datagrams received",
                &m.datagrams_received,
            ),
            (
                "hansa_gossip_datagrams_unauthenticated",
                "Gossip datagrams dropped because they did not open with the gossip key",
                &m.datagrams_unauthenticated,
            ),
            (
                "hansa_gossip_datagrams_invalid",
                "Opened gossip datagrams SWIM refused",
                &m.datagrams_invalid,
            ),
            (
                "hansa_gossip_broadcasts_queued",
                "Records queued for gossip",
                &m.broadcasts_queued,
            ),
            (
                "hansa_gossip_broadcasts_too_large",
                "Records too large to gossip, left to anti-entropy",
                &m.broadcasts_too_large,
            ),
            (
                "hansa_gossip_broadcasts_applied",
                "Gossiped records that changed this peer's store",
                &m.broadcasts_applied,
            ),
            (
                "hansa_gossip_broadcasts_rejected",
                "Gossiped records refused as malformed",
                &m.broadcasts_rejected,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(Metrics::get(value));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let mut by_state: BTreeMap<&str, i64> = [("alive", 0), ("suspect", 0), ("down", 0)].into();
        for member in self.membership.members() {
            let state = match member.state {
                MemberState::Alive => "alive",
                MemberState::Suspect => "suspect",
                MemberState::Down => "down",
            };
            *by_state.entry(state).or_default() += 1;
        }
        let mut family = encoder.encode_descriptor(
            "hansa_gossip_peers",
            "Other peers as this one sees them, by state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, count) in by_state {
            let gauge = ConstGauge::new(count);
            let labels = [("state", state)];
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Stamps local writes and hands what they wrote to `gossip_written`.
struct Outbound {
    origin: String,
    records: Arc<RecordStore>,
    written: mpsc::UnboundedSender<Vec<Record>>,
}

impl Replicator for Outbound {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn stamp(&self) -> Timestamp {
        self.records.clock().now()
    }

    fn written(&self, records: Vec<Record>) {
        // Closed only at shutdown; anti-entropy would carry them anyway.
        let _ = self.written.send(records);
    }
}

/// Merges versions other peers sent (by gossip or anti-entropy) into the store, in batches.
async fn merge_inbound(
    store: Store,
    records: Arc<RecordStore>,
    mut changes: broadcast::Receiver<hansa_gossip::Change>,
    shutdown: CancellationToken,
) -> Result<(), FederatorError> {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            change = changes.recv() => change,
        };
        let mut batch: Vec<Record> = Vec::new();
        let mut resync = false;
        match first {
            Ok(change) => batch.push(change.record),
            Err(broadcast::error::RecvError::Lagged(_)) => resync = true,
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
        while batch.len() < MERGE_AT_ONCE {
            match changes.try_recv() {
                Ok(change) => batch.push(change.record),
                Err(broadcast::error::TryRecvError::Lagged(_)) => resync = true,
                Err(_) => break,
            }
        }
        if resync {
            batch = records.snapshot();
        }
        let wanted: Vec<Record> = store.read(|state| {
            batch
                .into_iter()
                .filter(|r| crate::store::is_replicated(&r.key))
                .filter(|r| {
                    state
                        .records
                        .get(&r.key)
                        .is_none_or(|held| r.precedence(held) == std::cmp::Ordering::Greater)
                })
                .collect()
        });
        for chunk in wanted.chunks(MERGE_AT_ONCE) {
            match store.merge(chunk.to_vec()).await {
                Ok(n) => debug!(merged = n, of = chunk.len(), "merged versions from peers"),
                Err(e) => {
                    warn!(error = %e, "could not store versions from peers; anti-entropy will retry")
                }
            }
        }
    }
}

/// The anti-entropy exchange on the wire (inside the `Peer` RPC's JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Exchange {
    Versions { digest: Digest },
    Records { keys: Vec<RecordKey> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Answer {
    Versions { versions: Vec<Version> },
    Records { records: Vec<Record> },
}

/// Answers another peer's anti-entropy request from `records`.
fn answer(records: &RecordStore, request: serde_json::Value) -> Result<serde_json::Value, String> {
    let request: Exchange = serde_json::from_value(request)
        .map_err(|e| format!("malformed anti-entropy request: {e}"))?;
    let answer = match request {
        Exchange::Versions { digest } => Answer::Versions {
            versions: records.versions_differing(&digest),
        },
        Exchange::Records { keys } => {
            if keys.len() > anti_entropy::FETCH_BATCH {
                return Err(format!(
                    "asked for {} records at once; at most {}",
                    keys.len(),
                    anti_entropy::FETCH_BATCH
                ));
            }
            Answer::Records {
                records: records.records(&keys),
            }
        }
    };
    serde_json::to_value(answer).map_err(|e| format!("encode the answer: {e}"))
}

/// Connects anti-entropy to a peer's peer port, found through its `peer/NAME` record.
struct Dialer {
    store: Store,
    records: Arc<RecordStore>,
}

struct Remote {
    store: Store,
    url: String,
}

impl Connector for Dialer {
    type Peer = Remote;
    type Error = String;

    async fn connect(&self, member: &Member) -> Result<Remote, String> {
        let key = RecordKey::new(Kind::ClusterFact, format!("peer/{}", member.name));
        let record = self
            .records
            .get(&key)
            .ok_or_else(|| format!("no address known for peer {} yet", member.name))?;
        let addresses: PeerAddresses =
            serde_json::from_slice(record.body.as_deref().unwrap_or_default())
                .map_err(|e| format!("peer {}'s addresses do not decode: {e}", member.name))?;
        Ok(Remote {
            store: self.store.clone(),
            url: addresses.peer_url,
        })
    }
}

impl Remote {
    async fn call(&self, request: Exchange) -> Result<Answer, String> {
        let request = serde_json::to_value(request).map_err(|e| e.to_string())?;
        let answer = self
            .store
            .gossip_call(&self.url, request, CALL_TIMEOUT)
            .await?;
        serde_json::from_value(answer)
            .map_err(|e| format!("{}: answer does not decode: {e}", self.url))
    }
}

impl AntiEntropyPeer for Remote {
    type Error = String;

    async fn fetch_versions(&self, digest: Digest) -> Result<Vec<Version>, String> {
        match self.call(Exchange::Versions { digest }).await? {
            Answer::Versions { versions } => Ok(versions),
            Answer::Records { .. } => Err(format!("{}: answered records to a digest", self.url)),
        }
    }

    async fn fetch_records(&self, keys: Vec<RecordKey>) -> Result<Vec<Record>, String> {
        match self.call(Exchange::Records { keys }).await? {
            Answer::Records { records } => Ok(records),
            Answer::Versions { .. } => Err(format!("{}: answered versions to a fetch", self.url)),
        }
    }
}

/// `host:port` join addresses, resolved (a name that does not resolve is skipped, loudly).
async fn resolve_join(join: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in join {
        match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => warn!(join = %entry, error = %e, "cannot resolve a peer join address"),
        }
    }
    out
}

/// The gossip addresses an SRV name lists, through the system resolver.
async fn srv_addresses(name: &str) -> Result<Vec<SocketAddr>, String> {
    use hickory_proto::rr::RData;
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| format!("read the system resolver configuration: {e}"))?
        .build()
        .map_err(|e| e.to_string())?;
    let lookup = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for record in lookup.answers() {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        match resolver.lookup_ip(srv.target.clone()).await {
            Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, srv.port))),
            Err(e) => warn!(target = %srv.target, error = %e, "cannot resolve an SRV target"),
        }
    }
    Ok(out)
}
