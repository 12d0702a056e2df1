//! `hansa logs`: a replica's output, asked of its agent over the Sync stream and relayed to the
//! CLI through the `ReplicaLogs` service.
//!
//! [`LogRouter`] knows which agents stream to this federator and which requests wait for
//! chunks. A request for a cluster whose agent streams to another federator (a follower in hub
//! mode, another peer in peer mode) is forwarded there, with this federator's identity; a
//! forwarded request is never forwarded again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::Stream;
use hansa_core::{ReplicaState, WorkloadKey};
use hansa_proto::v1::{
    self, federator_message, replica_logs_server::ReplicaLogs, FederatorMessage, LogsRequest,
    LogsResponse,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::liveness::Liveness;
use crate::security::{caller, Role};

type AgentTx = mpsc::Sender<Result<FederatorMessage, Status>>;

/// Chunks a request may have in flight before the agent's stream waits for the CLI.
const CHUNK_BUFFER: usize = 64;
/// How long a chunk may wait for a slow reader before its request is cancelled.
const SLOW_READER: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Default)]
pub struct LogRouter {
    agents: Mutex<HashMap<String, (u64, AgentTx)>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

struct Pending {
    cluster: String,
    session: u64,
    chunks: mpsc::Sender<Result<Vec<u8>, Status>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or remove.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// An agent's Sync stream opened: requests for its cluster go down `tx`.
    pub fn connect(&self, cluster: &str, session: u64, tx: AgentTx) {
        lock(&self.agents).insert(cluster.to_string(), (session, tx));
    }

    /// The stream of `session` closed: its requests end with an error.
    pub fn disconnect(&self, cluster: &str, session: u64) {
        let mut agents = lock(&self.agents);
        if agents.get(cluster).is_some_and(|(s, _)| *s == session) {
            agents.remove(cluster);
        }
        drop(agents);
        lock(&self.pending).retain(|_, p| {
            let gone = p.cluster == cluster && p.session == session;
            if gone {
                let _ = p.chunks.try_send(Err(Status::unavailable(format!(
                    "the agent of cluster {cluster} disconnected"
                ))));
            }
            !gone
        });
    }

    /// A chunk from `cluster`'s agent. Chunks of unknown requests (the CLI went away) are
    /// dropped; the agent is told to stop.
    pub async fn deliver(&self, cluster: &str, chunk: v1::LogChunk) {
        let sender = lock(&self.pending)
            .get(&chunk.id)
            .filter(|p| p.cluster == cluster)
            .map(|p| p.chunks.clone());
        let Some(sender) = sender else {
            self.cancel(cluster, chunk.id).await;
            return;
        };
        let mut open = true;
        if !chunk.data.is_empty() {
            // A reader that does not keep up must not hold up the agent's heartbeats.
            let sent = tokio::time::timeout(SLOW_READER, sender.send(Ok(chunk.data))).await;
            open = matches!(sent, Ok(Ok(())));
        }
        if !chunk.error.is_empty() {
            let _ = sender.send(Err(Status::unavailable(chunk.error))).await;
        }
        if chunk.eof || !open {
            lock(&self.pending).remove(&chunk.id);
            if !open && !chunk.eof {
                self.cancel(cluster, chunk.id).await;
            }
        }
    }

    async fn cancel(&self, cluster: &str, id: u64) {
        let tx = lock(&self.agents).get(cluster).map(|(_, tx)| tx.clone());
        if let Some(tx) = tx {
            let _ = tx
                .send(Ok(log_request(id, String::new(), false, None, true)))
                .await;
        }
    }

    /// Whether `cluster`'s agent streams to this federator.
    fn serves(&self, cluster: &str) -> bool {
        lock(&self.agents).contains_key(cluster)
    }

    /// Asks `cluster`'s agent for `replica`'s output.
    async fn request(
        self: &Arc<Self>,
        cluster: &str,
        replica: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<(u64, mpsc::Receiver<Result<Vec<u8>, Status>>), Status> {
        let Some((session, tx)) = lock(&self.agents).get(cluster).cloned() else {
            return Err(Status::unavailable(format!(
                "the agent of cluster {cluster} is not connected to this federator; ask the federator it streams to"
            )));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (chunks_tx, chunks_rx) = mpsc::channel(CHUNK_BUFFER);
        lock(&self.pending).insert(
            id,
            Pending {
                cluster: cluster.to_string(),
                session,
                chunks: chunks_tx,
            },
        );
        let message = log_request(id, replica.to_string(), follow, tail, false);
        if tx.send(Ok(message)).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(Status::unavailable(format!(
                "the agent of cluster {cluster} disconnected"
            )));
        }
        Ok((id, chunks_rx))
    }
}

fn log_request(
    id: u64,
    replica: String,
    follow: bool,
    tail: Option<u32>,
    cancel: bool,
) -> FederatorMessage {
    FederatorMessage {
        kind: Some(federator_message::Kind::LogRequest(v1::LogRequest {
            id,
            replica,
            follow,
            tail,
            cancel,
        })),
    }
}

pub struct LogsService {
    pub router: Arc<LogRouter>,
    pub live: Arc<Liveness>,
    pub store: crate::store::Store,
    pub trust_domain: String,
    /// This federator's identity, for asking the federator an agent streams to.
    pub tls: crate::security::TlsMaterial,
}

type LogsStream = Pin<Box<dyn Stream<Item = Result<LogsResponse, Status>> + Send>>;

/// Picks the replica to read: the named one, else the first (by cluster, then id) of the
/// workload that is not being stopped, preferring running ones.
pub fn choose_replica(
    live: &Liveness,
    clusters: &[String],
    workload: &WorkloadKey,
    cluster: Option<&str>,
    replica: Option<&str>,
) -> Result<(String, String), Status> {
    let mut candidates = Vec::new();
    let mut names: Vec<&String> = clusters.iter().collect();
    names.sort();
    for name in names {
        if cluster.is_some_and(|c| c != name) {
            continue;
        }
        let Some(report) = live.get(name) else {
            continue;
        };
        for status in report.replicas.iter().filter(|r| &r.workload == workload) {
            if replica.is_some_and(|r| r != status.id) {
                continue;
            }
            let rank = match status.state {
                ReplicaState::Running => 0,
                ReplicaState::Stopping => 2,
                _ => 1,
            };
            candidates.push((rank, name.clone(), status.id.clone()));
        }
    }
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .map(|(_, cluster, id)| (cluster, id))
        .ok_or_else(|| {
            let mut what = format!("workload {workload} has no replica");
            if let Some(r) = replica {
                what = format!("workload {workload} has no replica {r}");
            }
            if let Some(c) = cluster {
                what.push_str(&format!(" on cluster {c}"));
            }
            Status::not_found(format!(
                "{what}; `hansa describe workload {}` lists its replicas",
                workload.name
            ))
        })
}

#[tonic::async_trait]
impl ReplicaLogs for LogsService {
    type LogsStream = LogsStream;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let identity = caller(&request, &self.trust_domain, &[Role::User, Role::Federator])?;
        let request = request.into_inner();
        if request.workload.is_empty() {
            return Err(Status::invalid_argument("workload: missing"));
        }
        let namespace = if request.namespace.is_empty() {
            "default".to_string()
        } else {
            request.namespace.clone()
        };
        let workload = WorkloadKey::new(namespace, request.workload.clone());
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let clusters = self.clusters_known();
        let (cluster, replica) = choose_replica(
            &self.live,
            &clusters,
            &workload,
            non_empty(&request.cluster).as_deref(),
            non_empty(&request.replica).as_deref(),
        )?;
        if !self.router.serves(&cluster) && identity.role == Role::User {
            if let Some(via) = self.live.get(&cluster).and_then(|l| l.via) {
                let forwarded = LogsRequest {
                    namespace: workload.namespace.to_string(),
                    workload: workload.name.to_string(),
                    cluster: cluster.clone(),
                    replica: replica.clone(),
                    ..request
                };
                return self.forward(&cluster, &via, forwarded).await;
            }
        }
        let (id, mut chunks) = self
            .router
            .request(&cluster, &replica, request.follow, request.tail)
            .await?;
        let router = self.router.clone();
        let stream = async_stream_from(
            move |tx: mpsc::Sender<Result<LogsResponse, Status>>| async move {
                let mut first = true;
                while let Some(chunk) = chunks.recv().await {
                    let message = chunk.map(|data| {
                        let (c, r) = if first {
                            (cluster.clone(), replica.clone())
                        } else {
                            (String::new(), String::new())
                        };
                        first = false;
                        LogsResponse {
                            cluster: c,
                            replica: r,
                            data,
                        }
                    });
                    if tx.send(message).await.is_err() {
                        // The CLI went away: the agent stops reading.
                        lock(&router.pending).remove(&id);
                        router.cancel(&cluster, id).await;
                        return;
                    }
                }
            },
        );
        Ok(Response::new(stream))
    }
}

impl LogsService {
    /// Asks the federator at `via`, which `cluster`'s agent streams to, and relays its answer.
    async fn forward(
        &self,
        cluster: &str,
        via: &str,
        request: LogsRequest,
    ) -> Result<Response<LogsStream>, Status> {
        let unavailable = |e: String| {
            Status::unavailable(format!(
                "the agent of cluster {cluster} streams to the federator at {via}: {e}"
            ))
        };
        let channel = self
            .tls
            .channel(via)
            .map_err(|e| unavailable(e.to_string()))?;
        let answer = v1::replica_logs_client::ReplicaLogsClient::new(channel)
            .logs(request)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => {
                    unavailable(status.message().to_string())
                }
                _ => status,
            })?;
        Ok(Response::new(Box::pin(answer.into_inner())))
    }

    fn clusters_known(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.read(|s| s.clusters.keys().cloned().collect());
        names.extend(lock(&self.router.agents).keys().cloned());
        names.sort();
        names.dedup();
        names
    }
}

/// A stream fed by a spawned task.
fn async_stream_from<F, Fut>(produce: F) -> LogsStream
where
    F: FnOnce(mpsc::Sender<Result<LogsResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
