//! The agent `Sync` stream: status and capacity up, assignment sets down.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use hansa_core::{Cluster, ClusterHealth, NodeCapacity, ReplicaStatus, Resources};
use hansa_proto::v1::{
    self, agent_message, agent_sync_server::AgentSync, federator_message, AgentMessage,
    FederatorMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::controllers::assignments;
use crate::liveness::Liveness;
use crate::security::{caller, Role};
use crate::store::{Command, Store};

use super::ApiError;

/// A capacity change smaller than this share of the allocatable amount is soft state only.
const CAPACITY_WRITE_THRESHOLD_PERCENT: u64 = 10;

pub struct SyncService {
    pub store: Store,
    pub live: Arc<Liveness>,
    pub trust_domain: String,
    pub shutdown: CancellationToken,
    /// Routes `hansa logs` requests to agents and their chunks back.
    pub logs: Arc<crate::logs::LogRouter>,
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<FederatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentSync for SyncService {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SyncStream>, Status> {
        let identity = caller(&request, &self.trust_domain, &[Role::Cluster])?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before Register"))?;
        let Some(agent_message::Kind::Register(register)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message on a Sync stream must be Register",
            ));
        };
        let info = register
            .cluster
            .ok_or_else(|| Status::invalid_argument("register.cluster: missing"))?;
        if info.name != identity.name {
            return Err(Status::permission_denied(format!(
                "certificate is for cluster {:?}; it cannot report for cluster {:?}",
                identity.name, info.name
            )));
        }
        let cluster =
            Cluster::try_from(info).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !hansa_core::is_dns_label(&cluster.name) {
            return Err(Status::invalid_argument(format!(
                "register.cluster.name: must be a DNS label (got {:?})",
                cluster.name
            )));
        }
        register_cluster(&self.store, &cluster).await?;
        let session = self.live.connect(&cluster.name, cluster.available);
        info!(cluster = %cluster.name, session, "agent connected");

        let (tx, rx) = mpsc::channel(4);
        self.logs.connect(&cluster.name, session, tx.clone());
        let stream_done = self.shutdown.child_token();
        tokio::spawn(send_assignments(
            self.store.clone(),
            cluster.name.clone(),
            tx,
            stream_done.clone(),
        ));
        tokio::spawn(receive_reports(
            self.store.clone(),
            self.live.clone(),
            cluster,
            session,
            inbound,
            stream_done,
            self.logs.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Writes the cluster's registration when it differs from the store (a new cluster, changed
/// labels, taints or capacity, or a return from Unreachable). Agent taints are stamped with the
/// time they first appeared, so `tolerationSeconds` count from then.
async fn register_cluster(store: &Store, cluster: &Cluster) -> Result<(), Status> {
    let (stored, operator) = store.read(|s| {
        (
            s.clusters.get(&cluster.name).cloned(),
            s.operator_taints
                .get(&cluster.name)
                .cloned()
                .unwrap_or_default(),
        )
    });
    let mut cluster = cluster.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let same = |a: &hansa_core::Taint, b: &hansa_core::Taint| {
        a.key == b.key && a.value == b.value && a.effect == b.effect
    };
    for taint in &mut cluster.taints {
        taint.added_ms = stored
            .as_ref()
            .and_then(|s| s.taints.iter().find(|t| same(t, taint)))
            .map_or(now, |t| t.added_ms);
    }
    let unchanged = stored.as_ref().is_some_and(|s| {
        let agent_taints: Vec<&hansa_core::Taint> =
            s.taints.iter().filter(|t| !operator.contains(t)).collect();
        s.health == ClusterHealth::Ready
            && s.labels == cluster.labels
            && s.region == cluster.region
            && s.zone == cluster.zone
            && s.provider == cluster.provider
            && s.runtimes == cluster.runtimes
            && s.addresses == cluster.addresses
            && s.allocatable == cluster.allocatable
            && same_nodes(&s.nodes, &cluster.nodes)
            && agent_taints.len() == cluster.taints.len()
            && agent_taints
                .iter()
                .zip(&cluster.taints)
                .all(|(a, b)| *a == b)
    });
    if !unchanged {
        store
            .propose(Command::UpsertCluster {
                cluster: cluster.clone(),
            })
            .await
            .map_err(ApiError::from)?;
    }
    Ok(())
}

/// Pushes the cluster's full assignment set whenever it changes.
async fn send_assignments(
    store: Store,
    cluster: String,
    tx: mpsc::Sender<Result<FederatorMessage, Status>>,
    done: CancellationToken,
) {
    let mut changes = store.subscribe();
    let mut last = None;
    let mut version = 0u64;
    loop {
        let set = store.read(|s| assignments::for_cluster(s, &cluster));
        if last.as_ref() != Some(&set) {
            version += 1;
            let wire: Result<Vec<v1::Assignment>, _> =
                set.iter().map(v1::Assignment::try_from).collect();
            let message = match wire {
                Ok(assignments) => Ok(FederatorMessage {
                    kind: Some(federator_message::Kind::Assignments(v1::AssignmentSet {
                        version,
                        assignments,
                    })),
                }),
                Err(e) => Err(Status::internal(format!("encode assignments: {e}"))),
            };
            debug!(%cluster, version, count = set.len(), "sending assignments");
            if tx.send(message).await.is_err() {
                break;
            }
            last = Some(set);
        }
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tx.closed() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    done.cancel();
}

/// Reads heartbeats into soft state until the stream ends.
async fn receive_reports(
    store: Store,
    live: Arc<Liveness>,
    mut cluster: Cluster,
    session: u64,
    mut inbound: Streaming<AgentMessage>,
    done: CancellationToken,
    logs: Arc<crate::logs::LogRouter>,
) {
    loop {
        let message = tokio::select! {
            _ = done.cancelled() => break,
            message = inbound.message() => message,
        };
        let heartbeat = match message {
            Ok(Some(AgentMessage {
                kind: Some(agent_message::Kind::Heartbeat(h)),
            })) => h,
            Ok(Some(AgentMessage {
                kind: Some(agent_message::Kind::LogChunk(chunk)),
            })) => {
                logs.deliver(&cluster.name, chunk).await;
                continue;
            }
            Ok(Some(_)) => {
                warn!(cluster = %cluster.name, "ignoring an unexpected message on the Sync stream");
                continue;
            }
            Ok(None) => break,
            Err(status) => {
                debug!(cluster = %cluster.name, %status, "Sync stream ended");
                break;
            }
        };
        let available: Resources = heartbeat.available.map(Into::into).unwrap_or_default();
        let replicas: Vec<ReplicaStatus> = heartbeat
            .replicas
            .into_iter()
            .filter_map(|r| match ReplicaStatus::try_from(r) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(cluster = %cluster.name, error = %e, "dropping a malformed replica status");
                    None
                }
            })
            .collect();
        let nodes: Vec<NodeCapacity> = heartbeat
            .nodes
            .into_iter()
            .filter_map(|n| match NodeCapacity::try_from(n) {
                Ok(n) => Some(n),
                Err(e) => {
                    warn!(cluster = %cluster.name, error = %e, "dropping a malformed node capacity");
                    None
                }
            })
            .collect();
        live.heartbeat(&cluster.name, session, available, replicas);
        let unplaced = heartbeat.unplaced.into_iter().map(Into::into).collect();
        live.set_unplaced(&cluster.name, session, unplaced);
        if capacity_shift_is_significant(&cluster, &available) {
            cluster.available = available;
            // Per-node free capacity is written with the cluster's, at the same pace.
            if !nodes.is_empty() {
                cluster.nodes = nodes;
            }
            if let Err(e) = store
                .propose(Command::UpsertCluster {
                    cluster: cluster.clone(),
                })
                .await
            {
                warn!(cluster = %cluster.name, error = %e, "could not record a capacity change");
            }
        }
    }
    live.disconnect(&cluster.name, session);
    logs.disconnect(&cluster.name, session);
    info!(cluster = %cluster.name, session, "agent disconnected");
    done.cancel();
}

/// Whether two node lists describe the same nodes (free capacity aside: it changes all the time).
fn same_nodes(a: &[NodeCapacity], b: &[NodeCapacity]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.name == b.name
                && a.address == b.address
                && a.runtimes == b.runtimes
                && a.allocatable == b.allocatable
        })
}

fn capacity_shift_is_significant(cluster: &Cluster, now: &Resources) -> bool {
    let shifted = |was: u64, is: u64, total: u64| {
        let delta = was.abs_diff(is);
        delta > 0 && (total == 0 || delta * 100 >= total * CAPACITY_WRITE_THRESHOLD_PERCENT)
    };
    let (was, total) = (&cluster.available, &cluster.allocatable);
    shifted(was.cpu_millis, now.cpu_millis, total.cpu_millis)
        || shifted(was.memory_bytes, now.memory_bytes, total.memory_bytes)
}
