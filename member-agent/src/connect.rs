//! The agent's side of the Sync stream: dial out to a federator (failing over among the
//! configured ones), register, report status and capacity, and hand every assignment set
//! to the local scheduler.

use std::time::Duration;

use hansa_core::Assignment;
use hansa_federator::security::TlsMaterial;
use hansa_proto::v1::{
    self, agent_message, agent_sync_client::AgentSyncClient, federator_message, AgentMessage,
    FederatorMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::scheduler::SchedulerHandle;

/// Status changes closer together than this go up in one heartbeat.
const REPORT_COALESCE: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{address}: {detail}")]
    Transport { address: String, detail: String },
    #[error("{address}: refused: {status}")]
    Refused { address: String, status: String },
    #[error("{address}: the federator closed the stream")]
    Closed { address: String },
}

pub struct Connection {
    pub federators: Vec<String>,
    pub tls: TlsMaterial,
    pub cluster: v1::ClusterInfo,
    pub heartbeat: Duration,
    pub scheduler: SchedulerHandle,
}

impl Connection {
    /// Keeps a Sync stream open to some federator until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut next = 0usize;
        while !shutdown.is_cancelled() {
            let address = &self.federators[next % self.federators.len()];
            let began = tokio::time::Instant::now();
            match self.session(address, &shutdown).await {
                Ok(()) => return,
                Err(e @ ConnectError::Refused { .. }) => {
                    warn!(error = %e, "federator refused this agent");
                }
                Err(e) => {
                    if backoff > BACKOFF_MIN {
                        debug!(error = %e, "federator unreachable");
                    } else {
                        warn!(error = %e, "federator unreachable; retrying");
                    }
                }
            }
            next += 1;
            // A session that ran a while was healthy (its federator died or stepped away): try
            // the next federator quickly instead of waiting out an old backoff.
            if began.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One stream's life. `Ok` only when shutdown ended it.
    async fn session(
        &self,
        address: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), ConnectError> {
        let transport = |e: &dyn std::fmt::Display| ConnectError::Transport {
            address: address.to_string(),
            detail: e.to_string(),
        };
        let channel = self
            .tls
            .endpoint(address)
            .map_err(|e| transport(&e))?
            .connect()
            .await
            .map_err(|e| transport(&hansa_federator::telemetry::error_chain(&e)))?;
        let mut client = AgentSyncClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(8);
        let register = AgentMessage {
            kind: Some(agent_message::Kind::Register(v1::Register {
                cluster: Some(self.cluster.clone()),
            })),
        };
        tx.send(register).await.map_err(|e| transport(&e))?;
        // The first report goes right after Register, so the federator knows what runs here.
        tx.send(self.heartbeat_message())
            .await
            .map_err(|e| transport(&e))?;
        let mut inbound = client
            .sync(ReceiverStream::new(rx))
            .await
            .map_err(|status| refused_or_transport(address, status))?
            .into_inner();
        info!(federator = %address, cluster = %self.cluster.name, "connected");

        let logs = crate::logs::LogServer::new(self.scheduler.clone(), tx.clone());
        let mut changes = self.scheduler.changes();
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = inbound.message() => {
                    match message.map_err(|status| refused_or_transport(address, status))? {
                        Some(message) => self.receive(message, &logs),
                        None => return Err(ConnectError::Closed { address: address.to_string() }),
                    }
                }
                _ = tick.tick() => {
                    tx.send(self.heartbeat_message()).await.map_err(|e| transport(&e))?;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    tokio::time::sleep(REPORT_COALESCE).await;
                    changes.borrow_and_update();
                    tx.send(self.heartbeat_message()).await.map_err(|e| transport(&e))?;
                }
            }
        }
    }

    fn receive(&self, message: FederatorMessage, logs: &crate::logs::LogServer) {
        if let Some(federator_message::Kind::LogRequest(request)) = message.kind {
            logs.handle(request);
            return;
        }
        let Some(federator_message::Kind::Assignments(set)) = message.kind else {
            return;
        };
        // All or nothing: a set that does not convert is dropped whole, so the agent keeps
        // running the last good set rather than a partial one.
        let converted: Result<Vec<Assignment>, _> = set
            .assignments
            .into_iter()
            .map(Assignment::try_from)
            .collect();
        match converted {
            Ok(assignments) => {
                info!(
                    version = set.version,
                    workloads = assignments.len(),
                    "new assignments"
                );
                self.scheduler.set_assignments(assignments);
            }
            Err(e) => {
                warn!(version = set.version, error = %e, "ignoring a malformed assignment set")
            }
        }
    }

    fn heartbeat_message(&self) -> AgentMessage {
        AgentMessage {
            kind: Some(agent_message::Kind::Heartbeat(v1::Heartbeat {
                available: Some(self.scheduler.available().into()),
                replicas: self
                    .scheduler
                    .statuses()
                    .iter()
                    .map(v1::ReplicaStatus::from)
                    .collect(),
                nodes: self
                    .scheduler
                    .nodes()
                    .iter()
                    .map(v1::NodeCapacity::from)
                    .collect(),
                unplaced: self
                    .scheduler
                    .unplaced()
                    .iter()
                    .map(v1::Unplaced::from)
                    .collect(),
            })),
        }
    }
}

fn refused_or_transport(address: &str, status: tonic::Status) -> ConnectError {
    use tonic::Code;
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument => {
            ConnectError::Refused {
                address: address.to_string(),
                status: status.message().to_string(),
            }
        }
        _ => ConnectError::Transport {
            address: address.to_string(),
            detail: format!("{}: {}", status.code(), status.message()),
        },
    }
}
