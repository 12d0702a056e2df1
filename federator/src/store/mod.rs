//! The federation store in hub mode (DESIGN.md §2): a Raft group (openraft) whose log lives in
//! segment files and whose snapshots live in a redb file under the data directory.
//!
//! - `state`: the replicated data and the pure `apply` function.
//! - `log_store`: the Raft log, `<data_dir>/raft-log/` (segment files, see `wal`), the one
//!   thing every write waits on: an append is a single sequential write and fsync.
//! - `state_machine`: the applied state in memory, and the current snapshot in
//!   `<data_dir>/state.redb`.
//! - `network`: Raft between federators over gRPC with mutual TLS, client and server.
//!
//! Nothing needs a transaction across the two: Raft re-applies the committed entries after the
//! snapshot, and purges the log only once a durable snapshot covers it.

mod batch;
mod command_de;
mod compaction;
mod db;
mod error;
mod leader;
mod legacy_log;
mod log_store;
mod network;
mod peer;
mod pipe;
mod revisions;
mod state;
mod state_machine;
mod wal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};
use tonic::transport::ClientTlsConfig;
use tracing::info;

pub use error::StoreError;
pub use network::{Authorize, RaftGrpc};
pub use peer::{GossipHandler, MembershipChange, NodeStatus, RelayHandler};
pub use revisions::RolloutAction;
pub use state::{
    placement_key, policy_key, Command, CommandResponse, FederationState, Logged, OverrideRecord,
    PolicyRecord, PutOutcome, WorkloadRecord,
};

use batch::Proposer;
use log_store::LogStore;
use network::{Connections, NetworkFactory};
use peer::{Local, PeerAnswer, PeerRequest};
#[cfg(test)]
pub(crate) use state::ObjectKey;
pub use state_machine::ChangeFeed;
use state_machine::{Shared, StateMachineStore};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Hansa's Raft types: commands in, command responses out, nodes addressed by URL.
    pub TypeConfig:
        D = Logged,
        R = CommandResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft log's directory in the data directory.
pub const LOG_DIR: &str = "raft-log";
/// The state machine file in the data directory.
pub const STATE_FILE: &str = "state.redb";

/// How long `shutdown` waits for the storage files to close after Raft stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// This node's Raft address as peers dial it, e.g. `https://10.0.0.1:7001`.
    pub advertise_url: String,
    /// Initialise the group if this node has no membership yet: with `initial_members`, or
    /// as a one-member group when that is empty.
    pub bootstrap: bool,
    /// The voters of a new control plane (node id -> peer URL), the same on every member.
    pub initial_members: BTreeMap<NodeId, String>,
    /// Mutual TLS for dialling peers.
    pub client_tls: ClientTlsConfig,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one, once the log since then
    /// is also larger than that snapshot (see `compaction`).
    pub snapshot_logs_since_last: u64,
    /// Entries a snapshot covers that are kept anyway, for followers slightly behind.
    pub max_in_snapshot_log_to_keep: u64,
    /// How long `propose` waits for a command to be committed and applied.
    pub propose_timeout: Duration,
}

impl StoreConfig {
    pub fn new(
        node_id: NodeId,
        data_dir: impl Into<PathBuf>,
        advertise_url: impl Into<String>,
        bootstrap: bool,
        client_tls: ClientTlsConfig,
    ) -> StoreConfig {
        StoreConfig {
            node_id,
            data_dir: data_dir.into(),
            advertise_url: advertise_url.into(),
            bootstrap,
            initial_members: BTreeMap::new(),
            client_tls,
            heartbeat_interval: StoreConfig::default_heartbeat_interval(),
            election_timeout_min: StoreConfig::default_election_timeout_min(),
            election_timeout_max: StoreConfig::default_election_timeout_max(),
            snapshot_logs_since_last: StoreConfig::default_snapshot_logs_since_last(),
            max_in_snapshot_log_to_keep: StoreConfig::default_max_in_snapshot_log_to_keep(),
            propose_timeout: StoreConfig::default_propose_timeout(),
        }
    }

    /// Also openraft's timeout for one AppendEntries call: not much lower, or a busy
    /// follower's fsync of a large batch would time out and be sent again.
    pub fn default_heartbeat_interval() -> Duration {
        Duration::from_millis(100)
    }
    // openraft 0.9 lets a follower stand for election only after the leader lease (the maximum
    // election timeout) plus its own random timeout without a heartbeat: 550-700 ms here,
    // checked every 1.5 heartbeats (150 ms). A dead leader is replaced in about 0.8 s (etcd's
    // defaults take 1.3 s), and a loaded machine must stall a follower for 0.55 s before it
    // calls a needless election (five missed heartbeats).
    pub fn default_election_timeout_min() -> Duration {
        Duration::from_millis(200)
    }
    pub fn default_election_timeout_max() -> Duration {
        Duration::from_millis(350)
    }
    pub fn default_snapshot_logs_since_last() -> u64 {
        5000
    }
    pub fn default_max_in_snapshot_log_to_keep() -> u64 {
        1000
    }
    pub fn default_propose_timeout() -> Duration {
        Duration::from_secs(5)
    }

    fn raft_config(&self) -> Result<openraft::Config, StoreError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "hansa".into(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            // `compaction` decides when (it needs the sizes of the log and the snapshot).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            // 1 MiB chunks stay well below the gRPC message limit once JSON-encoded.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 5000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Config(e.to_string()))
    }
}

/// The federation store: propose commands, read the applied state, watch it change.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    data_dir: PathBuf,
    raft: openraft::Raft<TypeConfig>,
    shared: Shared,
    leader: watch::Receiver<bool>,
    connections: Arc<Connections>,
    /// Answers other federators' `Peer` requests, and this node's own when it leads.
    local: Arc<Local>,
    propose_timeout: Duration,
    /// Closes when the last handle on a storage file is gone.
    files_open: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
    /// The last quorum probe, shared by concurrent requests (see `leader`).
    reachability: tokio::sync::Mutex<Option<(Instant, leader::Reachability)>>,
    /// Peer mode: stamps this node's writes as replicated versions and hears of them.
    replicator: std::sync::OnceLock<Arc<dyn Replicator>>,
}

/// Whether `key` names an object peers replicate through the store (`workload/NS/NAME`,
/// `placement/..`, `cluster/..`, `policy/..`, `override/..`, `taints/..`); soft state such as
/// `status/..` is gossiped but never stored.
pub fn is_replicated(key: &str) -> bool {
    state::ObjectKey::parse(key).is_some()
}

/// Peer mode's hook into writes (DESIGN.md §2): every command proposed here is applied as
/// `Command::Stamped` with this clock and origin, and the versions it wrote are handed back
/// for gossip. Versions from other peers come in as `Command::Merge`, through `merge`.
pub trait Replicator: Send + Sync {
    /// This peer's name, the origin of its versions.
    fn origin(&self) -> &str;
    /// A hybrid logical clock reading later than every version seen.
    fn stamp(&self) -> hansa_gossip::Timestamp;
    /// The versions a local write produced, once applied.
    fn written(&self, records: Vec<hansa_gossip::Record>);
}

impl Store {
    /// Opens the data directory (creating it if needed) and starts the Raft node. With
    /// `bootstrap`, a node that has never been a member initialises a one-member group.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let raft_config = Arc::new(config.raft_config()?);
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::storage(&config.data_dir, format!("create the data directory: {e}"))
        })?;
        let (open_tx, open_rx) = mpsc::channel(1);
        let log = LogStore::open(
            config.data_dir.join(LOG_DIR),
            config.node_id,
            open_tx.clone(),
        )
        .await?;
        let state_machine =
            StateMachineStore::open(config.data_dir.join(STATE_FILE), open_tx).await?;
        let shared = state_machine.shared();
        let log_bytes = log.appended_bytes();
        let connections = Arc::new(Connections::new(config.client_tls.clone()));
        let network = NetworkFactory {
            node_id: config.node_id,
            connections: connections.clone(),
        };
        let raft = openraft::Raft::new(config.node_id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| StoreError::Fatal(e.to_string()))?;

        tokio::spawn(compaction::run(
            raft.clone(),
            config.snapshot_logs_since_last,
            log_bytes,
            shared.snapshot_bytes.clone(),
        ));

        if config.bootstrap && !is_initialized(&raft).await? {
            let members: BTreeMap<NodeId, BasicNode> = if config.initial_members.is_empty() {
                BTreeMap::from([(config.node_id, BasicNode::new(&config.advertise_url))])
            } else {
                config
                    .initial_members
                    .iter()
                    .map(|(id, url)| (*id, BasicNode::new(url)))
                    .collect()
            };
            let voters: Vec<NodeId> = members.keys().copied().collect();
            // Every member initialises with the same voters; whichever log is written first,
            // the entries are identical, and the others answer `NotAllowed`.
            match raft.initialize(members).await {
                Ok(()) => info!(node = config.node_id, ?voters, "initialised the Raft group"),
                // Another path initialised it first: nothing to do.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StoreError::Fatal(format!("initialise the group: {e}"))),
            }
        }

        let local = Arc::new(Local {
            raft: raft.clone(),
            shared: shared.clone(),
            relay: std::sync::RwLock::new(None),
            gossip: std::sync::RwLock::new(None),
            read_timeout: config.propose_timeout,
            proposer: Proposer::local(raft.clone()),
        });
        Ok(Store {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                data_dir: config.data_dir,
                leader: watch_leadership(&raft),
                raft,
                shared,
                connections,
                local,
                propose_timeout: config.propose_timeout,
                files_open: tokio::sync::Mutex::new(Some(open_rx)),
                reachability: tokio::sync::Mutex::new(None),
                replicator: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Waits until this node has applied everything committed before the call, as confirmed by
    /// the leader with a quorum (Raft's read index). Read with `read` afterwards for a
    /// linearizable read. Fails with `NoQuorum`/`NoLeader` when that cannot be confirmed.
    pub async fn read_index(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.inner.propose_timeout;
        let index = match self.on_leader(PeerRequest::ReadIndex, deadline).await? {
            PeerAnswer::ReadIndex { index } => index,
            other => return Err(unexpected(&other)),
        };
        let mut applied = self.subscribe();
        timeout_at(deadline, applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| StoreError::Unavailable(format!(
                "this federator has not applied up to the leader's read index {index} within {:?}; read with --stale, or ask another federator",
                self.inner.propose_timeout
            )))?
            .map_err(|_| StoreError::Fatal("Raft has stopped".into()))?;
        Ok(())
    }

    /// Changes the Raft group's membership, on the leader wherever it is.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), StoreError> {
        // Adding a learner waits until it has caught up, which may take a snapshot's time.
        let deadline = Instant::now() + self.inner.propose_timeout * 12;
        match self
            .on_leader(PeerRequest::Membership { change }, deadline)
            .await?
        {
            PeerAnswer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// This node's own status.
    pub fn status(&self) -> NodeStatus {
        self.inner.local.status()
    }

    /// The status of the federator at peer URL `addr` (this one's own when it is ours).
    pub async fn peer_status(&self, addr: &str, limit: Duration) -> Result<NodeStatus, String> {
        match peer::call(&self.inner.connections, addr, &PeerRequest::Status, limit).await {
            Ok(Ok(PeerAnswer::Status { status })) => Ok(status),
            Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(status) => Err(status.message().to_string()),
        }
    }

    /// Every member of the group (id -> peer URL, voter?) as this node knows it.
    pub fn members(&self) -> Vec<(NodeId, String, bool)> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone(), voters.contains(id)))
            .collect()
    }

    /// Sends agent soft state to the leader's relay handler (see `set_relay_handler`); returns
    /// the handler's answer (`null` when the leader has none).
    pub async fn relay(
        &self,
        report: serde_json::Value,
        limit: Duration,
    ) -> Result<serde_json::Value, StoreError> {
        let request = PeerRequest::Relay {
            from: self.inner.node_id,
            report,
        };
        match self.on_leader(request, Instant::now() + limit).await? {
            PeerAnswer::Relayed { view } => Ok(view),
            other => Err(unexpected(&other)),
        }
    }

    /// Turns on peer mode's write path (see [`Replicator`]); once only.
    pub fn set_replicator(&self, replicator: Arc<dyn Replicator>) -> Result<(), StoreError> {
        self.inner
            .replicator
            .set(replicator)
            .map_err(|_| StoreError::Config("the store already has a replicator".into()))
    }

    /// Who answers other peers' anti-entropy requests.
    pub fn set_gossip_handler(&self, handler: GossipHandler) {
        *self
            .inner
            .local
            .gossip
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handler);
    }

    /// Sends an anti-entropy request to the federator at peer URL `addr`.
    pub async fn gossip_call(
        &self,
        addr: &str,
        request: serde_json::Value,
        limit: Duration,
    ) -> Result<serde_json::Value, String> {
        match peer::call(
            &self.inner.connections,
            addr,
            &PeerRequest::Gossip { request },
            limit,
        )
        .await
        {
            Ok(Ok(PeerAnswer::Gossip { answer })) => Ok(answer),
            Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(status) => Err(status.message().to_string()),
        }
    }

    /// Peer mode: merges versions from other peers into the state (see `Command::Merge`);
    /// returns how many won.
    pub async fn merge(&self, records: Vec<hansa_gossip::Record>) -> Result<usize, StoreError> {
        match self.propose_as_is(Command::Merge { records }).await? {
            CommandResponse::Merged(n) => Ok(n),
            other => Err(StoreError::Fatal(format!(
                "unexpected merge response {other:?}"
            ))),
        }
    }

    /// Peer mode: drops tombstones deleted before `before_ms` (see
    /// `Command::ForgetTombstones`); returns how many.
    pub async fn forget_tombstones(&self, before_ms: u64) -> Result<usize, StoreError> {
        match self
            .propose_as_is(Command::ForgetTombstones { before_ms })
            .await?
        {
            CommandResponse::Merged(n) => Ok(n),
            other => Err(StoreError::Fatal(format!("unexpected response {other:?}"))),
        }
    }

    /// Where soft state relayed by followers goes while this node leads.
    pub fn set_relay_handler(&self, handler: RelayHandler) {
        *self
            .inner
            .local
            .relay
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handler);
    }

    /// The whole applied state after a linearizable read, as the JSON document that
    /// `restore_from` loads, and the index it is as of.
    pub async fn backup(&self) -> Result<(u64, Vec<u8>), StoreError> {
        self.read_index().await?;
        let applied = self.inner.shared.read();
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let data = serde_json::to_vec(&*applied)
            .map_err(|e| StoreError::Fatal(format!("encode the backup: {e}")))?;
        Ok((index, data))
    }

    /// Seeds an empty data directory with the federation state of a backup (`hansa snapshot
    /// save`), to start a new one-member control plane from it; the other members join
    /// afterwards and receive it as a snapshot (see `compact`).
    pub async fn restore(data_dir: &std::path::Path, backup: &[u8]) -> Result<u64, StoreError> {
        let log = data_dir.join(LOG_DIR);
        let state_file = data_dir.join(STATE_FILE);
        if log.exists() || data_dir.join("raft.redb").exists() || state_file.exists() {
            return Err(StoreError::storage(
                data_dir,
                "already holds a control plane's data: restore into an empty data directory",
            ));
        }
        let backup: state_machine::Applied = serde_json::from_slice(backup).map_err(|e| {
            StoreError::Config(format!(
                "the backup does not decode (is it from `hansa snapshot save`?): {e}"
            ))
        })?;
        let index = backup.last_applied.map(|l| l.index).unwrap_or(0);
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::storage(data_dir, format!("create the data directory: {e}"))
        })?;
        let (open_tx, mut open_rx) = mpsc::channel(1);
        state_machine::seed(state_file, backup.state, open_tx).await?;
        // Nothing is sent: `recv` returns once the file is closed.
        open_rx.recv().await;
        Ok(index)
    }

    /// Builds a snapshot and drops the log it covers, once this node leads: members that join
    /// later then start from the snapshot (a restored state is not in the log).
    pub async fn compact(&self) -> Result<u64, StoreError> {
        let raft = &self.inner.raft;
        let mut metrics = raft.metrics();
        let deadline = Instant::now() + self.inner.propose_timeout * 6;
        timeout_at(
            deadline,
            metrics.wait_for(|m| m.state == ServerState::Leader && m.last_applied.is_some()),
        )
        .await
        .map_err(|_| StoreError::NoLeader)?
        .map_err(|_| StoreError::Fatal("Raft has stopped".into()))?;
        let applied = raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| StoreError::Fatal(e.to_string()))?;
        let snapshot = timeout_at(
            deadline,
            metrics.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= applied)),
        )
        .await
        .map_err(|_| StoreError::Fatal("the snapshot was not built in time".into()))?
        .map_err(|_| StoreError::Fatal("Raft has stopped".into()))?
        .snapshot
        .map(|s| s.index)
        .unwrap_or(0);
        raft.trigger()
            .purge_log(snapshot)
            .await
            .map_err(|e| StoreError::Fatal(e.to_string()))?;
        Ok(snapshot)
    }

    /// Reads the locally applied state; call `read_index` first for a linearizable read.
    pub fn read<R>(&self, f: impl FnOnce(&FederationState) -> R) -> R {
        f(&self.inner.shared.read().state)
    }

    /// The workloads whose record or placement is changed from now on, collected until taken.
    pub fn changes(&self) -> Arc<ChangeFeed> {
        self.inner.shared.changes()
    }

    /// The last applied log index; bumped after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.applied_index.subscribe()
    }

    /// True while this node is the leader.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.inner.leader.clone()
    }

    pub fn raft(&self) -> &openraft::Raft<TypeConfig> {
        &self.inner.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The Raft service peers call; `authorize` vets every call (e.g. a federator's
    /// certificate), and `stop` ends its long-lived streams when the server shuts down.
    pub fn grpc_service(
        &self,
        authorize: Authorize,
        stop: tokio_util::sync::CancellationToken,
    ) -> hansa_proto::v1::raft_server::RaftServer<RaftGrpc> {
        self.raft_grpc(authorize, stop).server()
    }

    pub(crate) fn raft_grpc(
        &self,
        authorize: Authorize,
        stop: tokio_util::sync::CancellationToken,
    ) -> RaftGrpc {
        RaftGrpc::new(
            self.inner.raft.clone(),
            self.inner.local.clone(),
            authorize,
            stop,
        )
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Stops Raft and waits until the storage files are closed, so the data directory can be
    /// opened again.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| StoreError::Fatal(format!("stopping Raft: {e}")))?;
        let mut files_open = self.inner.files_open.lock().await;
        if let Some(mut open) = files_open.take() {
            // Nothing is ever sent: `recv` returns when the last sender (file handle) is dropped.
            if tokio::time::timeout(CLOSE_TIMEOUT, open.recv())
                .await
                .is_err()
            {
                return Err(StoreError::storage(
                    &self.inner.data_dir,
                    format!("storage files still open {CLOSE_TIMEOUT:?} after Raft stopped"),
                ));
            }
        }
        info!("store closed");
        Ok(())
    }
}

fn unexpected(answer: &PeerAnswer) -> StoreError {
    StoreError::Fatal(format!("unexpected answer from the leader: {answer:?}"))
}

async fn is_initialized(raft: &openraft::Raft<TypeConfig>) -> Result<bool, StoreError> {
    raft.is_initialized()
        .await
        .map_err(|e| StoreError::Fatal(e.to_string()))
}

fn leader_of(metrics: &RaftMetrics<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    let leader = metrics.current_leader?;
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some((leader, node.addr.clone()))
}

/// A watch of "this node is the leader", fed from Raft's metrics until Raft stops.
fn watch_leadership(raft: &openraft::Raft<TypeConfig>) -> watch::Receiver<bool> {
    let mut metrics = raft.metrics();
    let leading = |m: &RaftMetrics<NodeId, BasicNode>| {
        m.state == ServerState::Leader && m.running_state.is_ok()
    };
    let (tx, rx) = watch::channel(leading(&metrics.borrow()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                _ = tx.closed() => return,
            }
            let now = leading(&metrics.borrow_and_update());
            tx.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
        tx.send_replace(false);
    });
    rx
}

#[cfg(test)]
mod tests;
