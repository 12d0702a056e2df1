//! A running member agent: the local scheduler with its runtime, and the connection to the
//! federation.

use std::sync::Arc;

use hansa_core::RuntimeKind;
use hansa_federator::security::{Role, SecurityError, TlsMaterial};
use hansa_proto::v1;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::AgentConfig;
use crate::connect::Connection;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::Runtime;
use crate::scheduler::{self, SchedulerConfig, SchedulerHandle};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("the certificate is for {found}, but this agent runs cluster {expected:?}")]
    WrongIdentity { expected: String, found: String },
    #[error("runtime {0} is not available in this build yet")]
    UnsupportedRuntime(RuntimeKind),
    #[error("local scheduler: {0:#}")]
    Scheduler(anyhow::Error),
}

pub struct Agent {
    scheduler: SchedulerHandle,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Adopts what still runs from a previous life, then connects to the federation.
    pub async fn start(
        config: AgentConfig,
        shutdown: CancellationToken,
    ) -> Result<Agent, AgentError> {
        let tls = TlsMaterial::load(&config.tls)?;
        if tls.identity.role != Role::Cluster || tls.identity.name != config.cluster {
            return Err(AgentError::WrongIdentity {
                expected: config.cluster.clone(),
                found: tls.identity.uri(),
            });
        }
        let runtime: Arc<dyn Runtime> = match config.runtimes.first() {
            Some(RuntimeKind::Process) | None => Arc::new(ProcessRuntime::new(&config.data_dir)),
            Some(other) => return Err(AgentError::UnsupportedRuntime(*other)),
        };
        let allocatable = config.allocatable();
        let mut tasks = JoinSet::new();
        let scheduler = scheduler::start(
            SchedulerConfig::new(
                config.cluster.clone(),
                config.node_address.to_string(),
                config.data_dir.clone(),
                allocatable,
                config.stop_grace(),
            ),
            runtime,
            &mut tasks,
            shutdown.clone(),
        )
        .await
        .map_err(AgentError::Scheduler)?;
        let cluster = v1::ClusterInfo {
            name: config.cluster.clone(),
            region: config.region.clone(),
            zone: config.zone.clone(),
            provider: config.provider.clone(),
            labels: config.labels.clone().into_iter().collect(),
            runtimes: config.runtimes.iter().map(ToString::to_string).collect(),
            addresses: config.cluster_addresses(),
            allocatable: Some(allocatable.into()),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let connection = Connection {
            federators: config.federators.clone(),
            tls,
            cluster,
            heartbeat: config.heartbeat(),
            scheduler: scheduler.clone(),
        };
        tasks.spawn(connection.run(shutdown));
        info!(cluster = %config.cluster, node = %config.node_address, "member agent started");
        Ok(Agent { scheduler, tasks })
    }

    pub fn scheduler(&self) -> &SchedulerHandle {
        &self.scheduler
    }

    /// Waits for the agent's tasks to end (after shutdown). Replicas keep running unless
    /// `scheduler().stop_all()` was called: a restarted agent adopts them.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs an agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::start(config, shutdown).await?.wait().await;
    Ok(())
}
