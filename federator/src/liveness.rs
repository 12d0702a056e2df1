//! Soft state (DESIGN.md §2): what agents report between heartbeats. Kept in memory on the
//! federator that receives it; only transitions (Ready -> Unreachable, big capacity shifts)
//! are written to the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hansa_core::{ReplicaStatus, Resources, Unplaced};
use tokio::sync::watch;

use crate::relay::RelayedCluster;

/// The latest report of one cluster's agent.
#[derive(Debug, Clone)]
pub struct ClusterLive {
    /// Whether a Sync stream is open now.
    pub connected: bool,
    /// Distinguishes streams, so an old stream's close does not mark a newer one gone.
    pub session: u64,
    pub last_seen: Instant,
    pub available: Resources,
    pub replicas: Vec<ReplicaStatus>,
    /// Replicas the agent could place on no node (not relayed between federators).
    pub unplaced: Vec<Unplaced>,
    /// The API URL of the federator the agent streams to, when it is another one (a relayed
    /// report): `hansa logs` asks that federator.
    pub via: Option<String>,
}

/// The session of an entry relayed by a follower rather than streamed here (local sessions
/// start at 1).
const RELAYED: u64 = 0;
/// A relayed entry whose follower has gone quiet this long no longer counts as connected.
const RELAY_TTL: Duration = Duration::from_secs(3);

pub struct Liveness {
    started: Instant,
    /// When each relayed entry was last refreshed by its follower.
    relayed_at: Mutex<HashMap<String, Instant>>,
    clusters: Mutex<HashMap<String, ClusterLive>>,
    next_session: Mutex<u64>,
    /// Bumps on every report, so views (describe, DNS later) can follow replica status.
    changed: watch::Sender<u64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Liveness {
            started: Instant::now(),
            relayed_at: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
            next_session: Mutex::new(0),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClusterLive>> {
        // A panic while holding the lock cannot leave the map half-written: every update is
        // a single insert or field assignment.
        self.clusters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A new stream for `cluster`; returns its session number.
    pub fn connect(&self, cluster: &str, available: Resources) -> u64 {
        let session = {
            let mut next = self.next_session.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let mut clusters = self.lock();
        let replicas = clusters
            .get(cluster)
            .map(|c| c.replicas.clone())
            .unwrap_or_default();
        clusters.insert(
            cluster.to_string(),
            ClusterLive {
                connected: true,
                session,
                last_seen: Instant::now(),
                available,
                replicas,
                unplaced: Vec::new(),
                via: None,
            },
        );
        drop(clusters);
        self.bump();
        session
    }

    /// What the agent of `cluster` (on stream `session`) could not place.
    pub fn set_unplaced(&self, cluster: &str, session: u64, unplaced: Vec<Unplaced>) {
        let mut clusters = self.lock();
        let Some(live) = clusters.get_mut(cluster).filter(|l| l.session == session) else {
            return;
        };
        if live.unplaced != unplaced {
            live.unplaced = unplaced;
            drop(clusters);
            self.bump();
        }
    }

    pub fn heartbeat(
        &self,
        cluster: &str,
        session: u64,
        available: Resources,
        replicas: Vec<ReplicaStatus>,
    ) {
        let mut clusters = self.lock();
        if let Some(live) = clusters.get_mut(cluster).filter(|c| c.session == session) {
            live.last_seen = Instant::now();
            live.available = available;
            live.replicas = replicas;
        }
        drop(clusters);
        self.bump();
    }

    pub fn disconnect(&self, cluster: &str, session: u64) {
        let mut clusters = self.lock();
        if let Some(live) = clusters.get_mut(cluster).filter(|c| c.session == session) {
            live.connected = false;
        }
        drop(clusters);
        self.bump();
    }

    pub fn get(&self, cluster: &str) -> Option<ClusterLive> {
        let mut live = self.lock().get(cluster).cloned()?;
        if live.session == RELAYED {
            let relayed_at = self.relayed_at.lock().unwrap_or_else(|e| e.into_inner());
            if relayed_at
                .get(cluster)
                .is_none_or(|at| at.elapsed() > RELAY_TTL)
            {
                live.connected = false;
            }
        }
        Some(live)
    }

    /// A report a follower relayed (hub mode): kept unless the agent streams to this
    /// federator itself.
    pub fn relayed(&self, report: RelayedCluster) {
        let RelayedCluster {
            name,
            connected,
            silence_ms,
            available,
            replicas,
            via,
        } = report;
        let cluster = name.as_str();
        let silence = Duration::from_millis(silence_ms);
        let mut clusters = self.lock();
        if clusters
            .get(cluster)
            .is_some_and(|c| c.session != RELAYED && c.connected)
        {
            return;
        }
        let now = Instant::now();
        clusters.insert(
            cluster.to_string(),
            ClusterLive {
                connected,
                session: RELAYED,
                last_seen: now.checked_sub(silence).unwrap_or(now),
                available,
                replicas,
                unplaced: Vec::new(),
                via: (!via.is_empty()).then_some(via),
            },
        );
        drop(clusters);
        self.relayed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.to_string(), now);
        self.bump();
    }

    /// Every cluster this federator knows about, its own agents' and relayed ones.
    pub fn reports(&self) -> Vec<(String, ClusterLive)> {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|name| Some((name.clone(), self.get(&name)?)))
            .collect()
    }

    /// The clusters whose agents stream to this federator (not relayed ones).
    pub fn local_reports(&self) -> Vec<(String, ClusterLive)> {
        self.lock()
            .iter()
            .filter(|(_, c)| c.session != RELAYED)
            .map(|(name, c)| (name.clone(), c.clone()))
            .collect()
    }

    /// How long since `cluster` was last heard from. A cluster never heard from since this
    /// federator started counts from the start, so a restarted federator gives agents the
    /// full grace period to reconnect before declaring them Unreachable.
    pub fn silence(&self, cluster: &str) -> Duration {
        let since = self
            .lock()
            .get(cluster)
            .map(|c| c.last_seen)
            .unwrap_or(self.started);
        since.elapsed()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
