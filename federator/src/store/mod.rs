//! The federation store in hub mode (DESIGN.md §2): a Raft group (openraft) whose log and
//! applied state live in redb files under the data directory.
//!
//! - `state`: the replicated data and the pure `apply` function.
//! - `log_store`: the Raft log, `<data_dir>/raft.redb`.
//! - `state_machine`: the applied state and the current snapshot, `<data_dir>/state.redb`.
//! - `network`: Raft between federators over gRPC with mutual TLS, client and server.
//!
//! Two files rather than one: redb allows one write transaction at a time per file, and the
//! log (appended by the Raft core) and the state machine (applied by its own task) are written
//! concurrently; each keeps its own atomic commits and fsyncs. Nothing needs a transaction
//! across both: Raft re-applies committed entries the state machine has not recorded.

mod db;
mod error;
mod log_store;
mod network;
mod state;
mod state_machine;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};
use tonic::transport::ClientTlsConfig;
use tracing::{debug, info};

pub use error::StoreError;
pub use network::{Authorize, RaftGrpc};
pub use state::{
    placement_key, Command, CommandResponse, FederationState, PutOutcome, WorkloadRecord,
};

use log_store::LogStore;
use network::{forward_client_write, Connections, NetworkFactory};
use state_machine::{Shared, StateMachineStore};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Hansa's Raft types: commands in, command responses out, nodes addressed by URL.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft log file in the data directory.
pub const LOG_FILE: &str = "raft.redb";
/// The state machine file in the data directory.
pub const STATE_FILE: &str = "state.redb";

/// How long `shutdown` waits for the storage files to close after Raft stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between attempts to reach a leader that did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// This node's Raft address as peers dial it, e.g. `https://10.0.0.1:7001`.
    pub advertise_url: String,
    /// Initialise a one-member group if this node has no membership yet.
    pub bootstrap: bool,
    /// Mutual TLS for dialling peers.
    pub client_tls: ClientTlsConfig,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
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
            client_tls,
            heartbeat_interval: StoreConfig::default_heartbeat_interval(),
            election_timeout_min: StoreConfig::default_election_timeout_min(),
            election_timeout_max: StoreConfig::default_election_timeout_max(),
            snapshot_logs_since_last: StoreConfig::default_snapshot_logs_since_last(),
            max_in_snapshot_log_to_keep: StoreConfig::default_max_in_snapshot_log_to_keep(),
            propose_timeout: StoreConfig::default_propose_timeout(),
        }
    }

    pub fn default_heartbeat_interval() -> Duration {
        Duration::from_millis(250)
    }
    pub fn default_election_timeout_min() -> Duration {
        Duration::from_millis(800)
    }
    pub fn default_election_timeout_max() -> Duration {
        Duration::from_millis(1600)
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
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
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
    propose_timeout: Duration,
    /// Closes when the last handle on a storage file is gone.
    files_open: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
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
            config.data_dir.join(LOG_FILE),
            config.node_id,
            open_tx.clone(),
        )
        .await?;
        let state_machine =
            StateMachineStore::open(config.data_dir.join(STATE_FILE), open_tx).await?;
        let shared = state_machine.shared();
        let connections = Arc::new(Connections::new(config.client_tls.clone()));
        let network = NetworkFactory {
            node_id: config.node_id,
            connections: connections.clone(),
        };
        let raft = openraft::Raft::new(config.node_id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| StoreError::Fatal(e.to_string()))?;

        if config.bootstrap && !is_initialized(&raft).await? {
            let members = BTreeMap::from([(config.node_id, BasicNode::new(&config.advertise_url))]);
            match raft.initialize(members).await {
                Ok(()) => info!(node = config.node_id, "initialised a one-member Raft group"),
                // Another path initialised it first: nothing to do.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StoreError::Fatal(format!("initialise the group: {e}"))),
            }
        }

        Ok(Store {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                data_dir: config.data_dir,
                leader: watch_leadership(&raft),
                raft,
                shared,
                connections,
                propose_timeout: config.propose_timeout,
                files_open: tokio::sync::Mutex::new(Some(open_rx)),
            }),
        })
    }

    /// Proposes a command and waits until it is committed and applied. A follower forwards it
    /// to the leader (the one place that handles "not the leader"). Gives up after the
    /// configured `propose_timeout` with `NoLeader` or `NoQuorum` instead of hanging.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        let deadline = Instant::now() + self.inner.propose_timeout;
        let mut metrics = self.inner.raft.metrics();
        // Where the last "forward to the leader" answer pointed: fresher than our metrics.
        let mut hint: Option<(NodeId, String)> = None;
        let mut failed: Option<StoreError> = None;
        let mut attempt = 0u32;
        loop {
            // Follow a fresh hint at once (a few times); otherwise pause before retrying.
            if attempt > 0 && (hint.is_none() || attempt > 3) {
                let pause = timeout_at(deadline, tokio::time::sleep(RETRY_PAUSE)).await;
                if pause.is_err() {
                    return Err(failed.unwrap_or(StoreError::NoLeader));
                }
            }
            attempt += 1;
            let (leader, addr) = match hint.take() {
                Some(target) => target,
                None => self.wait_for_leader(&mut metrics, deadline).await?,
            };
            match self.attempt(leader, &addr, &cmd, deadline).await {
                Attempt::Done(response) => return Ok(response),
                Attempt::Failed(e) => return Err(e),
                Attempt::Retry { next, why } => {
                    debug!(leader, %addr, reason = %why, "proposal not taken; retrying");
                    hint = next;
                    failed = Some(why);
                }
            }
        }
    }

    /// Proposes `cmd` to `leader`: locally, or forwarded over its Raft service.
    async fn attempt(
        &self,
        leader: NodeId,
        addr: &str,
        cmd: &Command,
        deadline: Instant,
    ) -> Attempt {
        let inner = &self.inner;
        let too_late = || Attempt::Failed(StoreError::NoQuorum(inner.propose_timeout));
        if leader == inner.node_id {
            return match timeout_at(deadline, inner.raft.client_write(cmd.clone())).await {
                Err(_) => too_late(),
                Ok(Ok(response)) => Attempt::Done(response.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
                    Attempt::Retry {
                        next: forward_target(&to),
                        why: StoreError::NoLeader,
                    }
                }
                Ok(Err(e)) => Attempt::Failed(StoreError::Fatal(e.to_string())),
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let forwarded = timeout_at(
            deadline,
            forward_client_write(&inner.connections, addr, cmd, remaining),
        )
        .await;
        let forward_error = |detail: String| StoreError::Forward {
            leader,
            addr: addr.to_string(),
            detail,
        };
        match forwarded {
            Err(_) => too_late(),
            Ok(Ok(Ok(response))) => Attempt::Done(response.data),
            Ok(Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))))) => {
                Attempt::Retry {
                    next: forward_target(&to),
                    why: StoreError::NoLeader,
                }
            }
            // The leader is stopping or failed; another one will be elected.
            Ok(Ok(Err(e))) => Attempt::Retry {
                next: None,
                why: forward_error(e.to_string()),
            },
            Ok(Err(status)) => match status.code() {
                tonic::Code::DeadlineExceeded => too_late(),
                // Not reached: safe to retry. A write that reached the leader may have been
                // applied, and applying it twice is not harmless (a delete would report
                // "not found"), so other failures are returned.
                tonic::Code::Unavailable => Attempt::Retry {
                    next: None,
                    why: forward_error(status.to_string()),
                },
                _ => Attempt::Failed(forward_error(status.to_string())),
            },
        }
    }

    /// The leader and its address, waiting (until `deadline`) while there is none.
    async fn wait_for_leader(
        &self,
        metrics: &mut watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
        deadline: Instant,
    ) -> Result<(NodeId, String), StoreError> {
        let found = timeout_at(
            deadline,
            metrics.wait_for(|m| leader_of(m).is_some() || m.running_state.is_err()),
        )
        .await;
        match found {
            Err(_) => Err(StoreError::NoLeader),
            Ok(Err(_)) => Err(StoreError::Fatal("Raft has stopped".into())),
            Ok(Ok(m)) => match &m.running_state {
                Err(fatal) => Err(StoreError::Fatal(fatal.to_string())),
                Ok(()) => leader_of(&m).ok_or(StoreError::NoLeader),
            },
        }
    }

    /// Reads the locally applied state. (Linearizable reads come later.)
    pub fn read<R>(&self, f: impl FnOnce(&FederationState) -> R) -> R {
        f(&self.inner.shared.read().state)
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

    /// The Raft service peers call; `authorize` vets every call (e.g. a federator's certificate).
    pub fn grpc_service(
        &self,
        authorize: Authorize,
    ) -> hansa_proto::v1::raft_server::RaftServer<RaftGrpc> {
        RaftGrpc::new(self.inner.raft.clone(), authorize).server()
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

fn forward_target(
    to: &openraft::error::ForwardToLeader<NodeId, BasicNode>,
) -> Option<(NodeId, String)> {
    Some((to.leader_id?, to.leader_node.as_ref()?.addr.clone()))
}

enum Attempt {
    Done(CommandResponse),
    Failed(StoreError),
    /// Try again, at `next` if known, else at whoever the metrics name.
    Retry {
        next: Option<(NodeId, String)>,
        why: StoreError,
    },
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
