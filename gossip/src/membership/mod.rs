//! SWIM membership and failure detection (foca) over encrypted UDP, carrying record
//! updates as piggybacked broadcasts.
//!
//! [`Membership::start`] binds the socket and spawns one task that owns the foca
//! instance: it opens every datagram with the gossip key (dropping and counting the
//! ones that fail), feeds foca, runs its timers, seals what foca sends, and publishes
//! the member table and events. The handle talks to the task over a channel.

mod driver;
mod gossip;
mod sync;
mod transport;

pub use transport::MemoryNetwork;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::crypto::{GossipKey, Sealer, OVERHEAD};
use crate::hlc::system_time_ms;
use crate::records::Record;
use crate::store::RecordStore;
use transport::Socket;

/// The largest UDP payload we send, sealed; below common MTUs to avoid fragmentation.
pub const MAX_DATAGRAM: usize = 1400;

/// How this peer takes part in the gossip pool.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This federator's name, unique in the federation (also the origin of its records).
    pub name: String,
    /// The member cluster this federator runs next to.
    pub cluster: String,
    /// Local UDP address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// Address peers reach us at, if not the bound one (NAT, 0.0.0.0 binds).
    pub advertise: Option<SocketAddr>,
    pub key: GossipKey,
    /// Peers to announce ourselves to; retried while we know no one.
    pub join: Vec<SocketAddr>,
    /// How often we probe one random peer.
    pub probe_period: Duration,
    /// How long a direct probe waits before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspicion_timeout: Duration,
    /// Peers asked to probe indirectly; more tolerates more packet loss.
    pub indirect_probes: usize,
    /// How often we push pending updates to a few random peers.
    pub gossip_interval: Duration,
    /// How many peers each periodic gossip goes to.
    pub gossip_fanout: usize,
    /// Pool size we plan for: sets how many times each update is retransmitted.
    pub expected_peers: u32,
    /// How often to re-announce to `join` while we know no live peer.
    pub rejoin_interval: Duration,
    /// How often to exchange whole member tables with a random member, repairing what
    /// gossip missed (a joiner does it at once with its join addresses).
    pub state_sync_interval: Duration,
    /// Records larger than this (encoded) are not gossiped; anti-entropy carries them.
    pub max_broadcast_bytes: usize,
}

impl MembershipConfig {
    /// Defaults aimed at detecting a dead peer in under 5 s in a pool of 100 while
    /// riding out 5% packet loss: a suspect gets 2 s (news of it spreads at once) to
    /// refute, and a probe only fails if the direct and all 3 indirect paths lose a
    /// packet.
    pub fn new(
        name: impl Into<String>,
        cluster: impl Into<String>,
        bind: SocketAddr,
        key: GossipKey,
    ) -> Self {
        Self {
            name: name.into(),
            cluster: cluster.into(),
            bind,
            advertise: None,
            key,
            join: Vec::new(),
            probe_period: Duration::from_millis(800),
            probe_rtt: Duration::from_millis(320),
            suspicion_timeout: Duration::from_millis(2000),
            indirect_probes: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            expected_peers: 100,
            rejoin_interval: Duration::from_secs(1),
            state_sync_interval: Duration::from_secs(10),
            max_broadcast_bytes: 1024,
        }
    }

    fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |why: String| Err(MembershipError::InvalidConfig(why));
        if self.name.is_empty() || self.name.len() > crate::records::MAX_ORIGIN_LEN {
            return invalid(format!(
                "name: must be 1 to {} bytes (got {:?})",
                crate::records::MAX_ORIGIN_LEN,
                self.name
            ));
        }
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return invalid(format!(
                "probe_rtt: must be above zero and below probe_period {:?} (got {:?})",
                self.probe_period, self.probe_rtt
            ));
        }
        if self.suspicion_timeout.is_zero()
            || self.gossip_interval.is_zero()
            || self.rejoin_interval.is_zero()
            || self.state_sync_interval.is_zero()
        {
            return invalid(
                "suspicion_timeout, gossip_interval, rejoin_interval and state_sync_interval: \
                 must be above zero"
                    .into(),
            );
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 {
            return invalid("indirect_probes and gossip_fanout: must be at least 1".into());
        }
        let max = MAX_DATAGRAM - OVERHEAD - 200;
        if self.max_broadcast_bytes == 0 || self.max_broadcast_bytes > max {
            return invalid(format!(
                "max_broadcast_bytes: must be 1 to {max}, leaving room for SWIM headers (got {})",
                self.max_broadcast_bytes
            ));
        }
        Ok(())
    }
}

/// A peer's identity in the pool. `epoch` starts at the boot time in ms and grows on
/// every rejoin, so a restarted or wrongly-declared-dead peer comes back as a newer
/// identity that wins over its old one at the same address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerId {
    pub name: String,
    pub cluster: String,
    pub addr: SocketAddr,
    pub epoch: u64,
}

impl foca::Identity for PeerId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            epoch: self.epoch + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.epoch, &self.name, &self.cluster)
            > (adversary.epoch, &adversary.name, &adversary.cluster)
    }
}

/// How this peer sees another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    /// Missed a probe; alive until it fails to refute within the suspicion timeout.
    Suspect,
    /// Declared dead, or left.
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub cluster: String,
    pub addr: SocketAddr,
    pub epoch: u64,
    pub state: MemberState,
    /// When a datagram from it last arrived (`None`: only heard of, through others).
    pub last_heard: Option<Instant>,
}

impl Member {
    /// Alive or suspect: still counted for ownership.
    pub fn is_live(&self) -> bool {
        self.state != MemberState::Down
    }
}

/// A change in how this peer sees another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// Joined, came back, or refuted a suspicion.
    Up(Member),
    Suspect(Member),
    Down(Member),
}

impl MembershipEvent {
    pub fn member(&self) -> &Member {
        match self {
            MembershipEvent::Up(m) | MembershipEvent::Suspect(m) | MembershipEvent::Down(m) => m,
        }
    }
}

/// What happened to a record handed to [`Membership::broadcast`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BroadcastOutcome {
    Queued,
    /// Too large to gossip (encoded size given); anti-entropy will carry it.
    TooLarge(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("gossip config: {0}")]
    InvalidConfig(String),
    #[error("gossip: cannot bind UDP {addr}: {source}; is another federator using the port?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gossip: membership task has stopped")]
    Stopped,
    #[error("gossip: cannot encode record for broadcast: {0}")]
    Encode(#[from] postcard::Error),
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    pub datagrams_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    /// Failed to open: wrong key, tampered, or not ours at all.
    pub datagrams_unauthenticated: AtomicU64,
    /// Opened, but foca refused the content.
    pub datagrams_invalid: AtomicU64,
    pub broadcasts_queued: AtomicU64,
    pub broadcasts_too_large: AtomicU64,
    /// Gossiped records that changed our store.
    pub broadcasts_applied: AtomicU64,
    pub broadcasts_rejected: AtomicU64,
}

impl Metrics {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the handle and the driver task share.
#[derive(Debug)]
struct Shared {
    identity: Mutex<PeerId>,
    /// Keyed by address, as foca keys members.
    members: Mutex<BTreeMap<SocketAddr, Member>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum Command {
    Broadcast(Vec<u8>),
    Announce(Vec<SocketAddr>),
}

/// A running member of the gossip pool. Dropping it without [`Membership::leave`]
/// stops the task at once: to peers that looks like a crash.
pub struct Membership {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    events: broadcast::Sender<MembershipEvent>,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    max_broadcast_bytes: usize,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.identity())
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Membership {
    /// Binds the socket, starts the task and announces to the join addresses.
    /// Cancelling `shutdown` makes the task leave the pool gracefully and stop.
    pub async fn start(
        config: MembershipConfig,
        store: Arc<RecordStore>,
        shutdown: CancellationToken,
    ) -> Result<Self, MembershipError> {
        config.validate()?;
        let socket =
            UdpSocket::bind(config.bind)
                .await
                .map_err(|source| MembershipError::Bind {
                    addr: config.bind,
                    source,
                })?;
        Self::launch(config, Socket::Udp(socket), store, shutdown)
    }

    /// Like [`Membership::start`], on an in-process network instead of UDP (simulations;
    /// see [`MemoryNetwork`]). A `bind` port of 0 picks a free address on the network.
    pub fn start_in_memory(
        config: MembershipConfig,
        network: &MemoryNetwork,
        store: Arc<RecordStore>,
        shutdown: CancellationToken,
    ) -> Result<Self, MembershipError> {
        config.validate()?;
        let endpoint = network
            .bind(config.bind)
            .map_err(|source| MembershipError::Bind {
                addr: config.bind,
                source,
            })?;
        Self::launch(config, Socket::Memory(endpoint), store, shutdown)
    }

    fn launch(
        config: MembershipConfig,
        socket: Socket,
        store: Arc<RecordStore>,
        shutdown: CancellationToken,
    ) -> Result<Self, MembershipError> {
        let local_addr = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                addr: config.bind,
                source,
            })?;
        let identity = PeerId {
            name: config.name.clone(),
            cluster: config.cluster.clone(),
            addr: config.advertise.unwrap_or(local_addr),
            epoch: system_time_ms(),
        };
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared {
            identity: Mutex::new(identity.clone()),
            members: Mutex::new(BTreeMap::new()),
            metrics: metrics.clone(),
        });
        let (events, _) = broadcast::channel(1024);
        let (commands, command_rx) = mpsc::channel(1024);
        let stop = shutdown.child_token();
        let driver = driver::Driver::new(
            &config,
            identity,
            socket,
            Sealer::new(&config.key),
            gossip::RecordGossip { store, metrics },
            shared.clone(),
            events.clone(),
        );
        let task = tokio::spawn(driver.run(command_rx, stop.clone()));
        tracing::info!(name = %config.name, %local_addr, "gossip membership started");
        Ok(Self {
            shared,
            local_addr,
            events,
            commands,
            stop,
            task: Some(task),
            max_broadcast_bytes: config.max_broadcast_bytes,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our current identity (its epoch grows if we had to rejoin).
    pub fn identity(&self) -> PeerId {
        lock(&self.shared.identity).clone()
    }

    /// How many peers we hold in this state (cheaper than counting [`Membership::members`]).
    pub fn count(&self, state: MemberState) -> usize {
        lock(&self.shared.members)
            .values()
            .filter(|m| m.state == state)
            .count()
    }

    /// Every peer we know of, dead ones included, sorted by address; not ourselves.
    pub fn members(&self) -> Vec<Member> {
        lock(&self.shared.members).values().cloned().collect()
    }

    /// Names of the live peers, ourselves included, sorted: the input to
    /// [`crate::ownership::owner`].
    pub fn live_peers(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.shared.members)
            .values()
            .filter(|m| m.is_live())
            .map(|m| m.name.clone())
            .collect();
        names.push(self.identity().name);
        names.sort();
        names.dedup();
        names
    }

    /// Member up/suspect/down events from now on. A receiver that lags gets
    /// `RecvError::Lagged` and should re-read [`Membership::members`].
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Spreads a record (already written to the local store) to the pool by gossip.
    pub async fn broadcast(&self, record: &Record) -> Result<BroadcastOutcome, MembershipError> {
        let data = gossip::encode(record)?;
        if data.len() > self.max_broadcast_bytes {
            Metrics::bump(&self.shared.metrics.broadcasts_too_large);
            return Ok(BroadcastOutcome::TooLarge(data.len()));
        }
        self.commands
            .send(Command::Broadcast(data))
            .await
            .map_err(|_| MembershipError::Stopped)?;
        Metrics::bump(&self.shared.metrics.broadcasts_queued);
        Ok(BroadcastOutcome::Queued)
    }

    /// Announces ourselves to more peers (for example from DNS SRV discovery).
    pub async fn join(&self, addrs: Vec<SocketAddr>) -> Result<(), MembershipError> {
        self.commands
            .send(Command::Announce(addrs))
            .await
            .map_err(|_| MembershipError::Stopped)
    }

    /// Tells the pool we are leaving, then stops the task.
    pub async fn leave(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "gossip task ended abnormally");
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
