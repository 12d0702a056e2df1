//! The local scheduler: makes the node run what the federator assigned to this cluster.
//!
//! One task owns all replica state and reconciles, kube-rs style: on every trigger (a new
//! assignment set, a replica exiting, a health verdict, a stop finishing) and at least every
//! second, it observes the runtime, asks [`plan::plan`] what to start and retire, restarts
//! failed replicas whose backoff has passed, and publishes statuses. Slow work (stopping with a
//! grace period, probing) runs in tasks that report back as events, so the loop never waits
//! on a replica.
//!
//! What survives an agent restart: the assignment set (`assignments.json`, so an agent without
//! a federator keeps running its last assignment) and the replicas themselves (the runtime
//! adopts them). Restart counts and backoff positions start over.

pub mod backoff;
pub mod nodes;
pub mod plan;
pub mod ports;
mod reconcile;
mod replica;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use hansa_core::{Assignment, NodeCapacity, ReplicaStatus, Resources, Unplaced};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::backoff::BackoffConfig;
pub use self::nodes::NodeSpec;
use self::reconcile::Scheduler;
use crate::runtime::Runtime;
use crate::state;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This member cluster's name (`HANSA_CLUSTER` of its replicas).
    pub cluster: String,
    /// The nodes replicas are placed on (at least one); replicas whose requests fit none wait.
    pub nodes: Vec<NodeSpec>,
    /// Holds `assignments.json` (and, for the process runtime, `replicas/`).
    pub data_dir: PathBuf,
    /// How long a replica has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    pub backoff: BackoffConfig,
    /// How long the replicas of a node whose runtime does not answer wait before they are
    /// replaced on another node that can run them (`None`: never). When the node comes back,
    /// the replaced replicas still running there are stopped.
    pub replace_unreachable_after: Option<Duration>,
}

impl SchedulerConfig {
    /// One node, `local`, at `node_address`, offering whatever the runtime offers.
    pub fn new(
        cluster: impl Into<String>,
        node_address: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        allocatable: Resources,
        stop_grace: Duration,
    ) -> Self {
        let node = NodeSpec {
            name: "local".to_string(),
            address: node_address.into(),
            allocatable,
            runtimes: Vec::new(),
        };
        Self::with_nodes(cluster, vec![node], data_dir, stop_grace)
    }

    pub fn with_nodes(
        cluster: impl Into<String>,
        nodes: Vec<NodeSpec>,
        data_dir: impl Into<PathBuf>,
        stop_grace: Duration,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            nodes,
            data_dir: data_dir.into(),
            stop_grace,
            backoff: BackoffConfig::default(),
            replace_unreachable_after: Some(Self::default_replace_unreachable_after()),
        }
    }

    pub fn default_stop_grace() -> Duration {
        Duration::from_secs(10)
    }

    /// Nomad marks a client's allocations lost after about 30 s of missed heartbeats;
    /// Kubernetes evicts pods from an unreachable node after 5 min. A minute rides out an
    /// engine restart without moving anything, and moves replicas long before Kubernetes.
    pub fn default_replace_unreachable_after() -> Duration {
        Duration::from_secs(60)
    }
}

/// Talks to the scheduler's task. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
}

/// What the handle and the loop share.
struct Shared {
    desired: watch::Sender<Arc<Vec<Assignment>>>,
    statuses: Mutex<Vec<ReplicaStatus>>,
    /// Replicas the last pass wanted to start but could place on no node.
    unplaced: Mutex<Vec<Unplaced>>,
    /// Sum of the requests of the replicas the scheduler runs, per node.
    in_use: Mutex<BTreeMap<String, Resources>>,
    nodes: Vec<NodeSpec>,
    changes: watch::Sender<u64>,
    runtime: Arc<dyn Runtime>,
    stop_grace: Duration,
    /// Set by `stop_all`: from then on nothing starts.
    stopped: AtomicBool,
    /// Held around every start, so `stop_all` can wait out a start in flight.
    start_gate: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single assignment; a panic cannot leave them torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SchedulerHandle {
    /// Replaces the desired set (the full AssignmentSet from the federator). Persisted to
    /// `<data_dir>/assignments.json` so an agent restarted while no federator is reachable
    /// keeps running its last assignment.
    pub fn set_assignments(&self, assignments: Vec<Assignment>) {
        self.shared.desired.send_replace(Arc::new(assignments));
    }

    /// The desired set the scheduler works towards.
    pub fn assignments(&self) -> Arc<Vec<Assignment>> {
        self.shared.desired.borrow().clone()
    }

    /// Every replica, ordered by workload, then id.
    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        lock(&self.shared.statuses).clone()
    }

    /// Replicas of assigned workloads that fit no node right now, with the reason.
    pub fn unplaced(&self) -> Vec<Unplaced> {
        lock(&self.shared.unplaced).clone()
    }

    /// Bumps whenever any replica status changes (state, health, endpoints, restarts).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// The runtime the scheduler drives (for `hansa logs`).
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        self.shared.runtime.clone()
    }

    /// The sum over the nodes.
    pub fn allocatable(&self) -> Resources {
        self.nodes()
            .iter()
            .fold(Resources::ZERO, |sum, n| sum.saturating_add(&n.allocatable))
    }

    /// allocatable minus the requests of the replicas it runs, summed over the nodes.
    pub fn available(&self) -> Resources {
        self.nodes()
            .iter()
            .fold(Resources::ZERO, |sum, n| sum.saturating_add(&n.available))
    }

    /// Each node with its allocatable and available capacity, in configuration order.
    pub fn nodes(&self) -> Vec<NodeCapacity> {
        let in_use = lock(&self.shared.in_use);
        self.shared
            .nodes
            .iter()
            .map(|node| NodeCapacity {
                name: node.name.clone(),
                address: node.address.clone(),
                runtimes: node.runtimes.clone(),
                allocatable: node.allocatable,
                available: node
                    .allocatable
                    .saturating_sub(&in_use.get(&node.name).copied().unwrap_or_default()),
            })
            .collect()
    }

    /// Stops every replica (used by `hansa dev` on Ctrl-C and by tests); waits until they are
    /// gone. Works whether or not the scheduler's task still runs; afterwards the scheduler
    /// starts nothing more. Logs stay in the data dir; `assignments.json` is kept.
    pub async fn stop_all(&self) {
        let shared = &self.shared;
        shared.stopped.store(true, Ordering::SeqCst);
        let _gate = shared.start_gate.lock().await;
        // What the runtimes that answer run; one that does not keeps its replicas.
        let survey = shared.runtime.survey().await;
        for failed in &survey.unreachable {
            tracing::error!(%failed, "cannot list replicas to stop them");
        }
        let replicas = survey.replicas;
        let stops = replicas.iter().map(|info| async move {
            let id = &info.record.id;
            if let Err(e) = shared.runtime.stop(id, shared.stop_grace).await {
                tracing::error!(replica = %id, error = %e, "cannot stop replica");
            }
        });
        futures::future::join_all(stops).await;
        *lock(&shared.statuses) = Vec::new();
        lock(&shared.unplaced).clear();
        lock(&shared.in_use).clear();
        shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Loads persisted assignments and adopts running replicas, then reconciles until `shutdown`.
/// The scheduler's task(s) are spawned into `tasks`. On shutdown it does NOT stop replicas (an
/// agent restart must not restart its workloads; `stop_all` does that explicitly).
pub async fn start(
    config: SchedulerConfig,
    runtime: Arc<dyn Runtime>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<SchedulerHandle> {
    anyhow::ensure!(
        !config.nodes.is_empty(),
        "the scheduler needs at least one node"
    );
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let assignments = Arc::new(state::load_assignments(&config.data_dir).await?);
    let shared = Arc::new(Shared {
        desired: watch::Sender::new(assignments.clone()),
        statuses: Mutex::new(Vec::new()),
        unplaced: Mutex::new(Vec::new()),
        in_use: Mutex::new(BTreeMap::new()),
        nodes: config.nodes.clone(),
        changes: watch::Sender::new(0),
        runtime: runtime.clone(),
        stop_grace: config.stop_grace,
        stopped: AtomicBool::new(false),
        start_gate: tokio::sync::Mutex::new(()),
    });
    let mut scheduler = Scheduler::new(config, shared.clone(), runtime.changes(), assignments);
    // Adopt and publish before returning, so the first statuses are already true.
    scheduler.reconcile().await;
    tasks.spawn(scheduler.run(shutdown));
    Ok(SchedulerHandle { shared })
}
