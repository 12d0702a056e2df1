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
use crate::runtime::docker::DockerEndpoint;
use crate::runtime::{DockerRuntime, MultiRuntime, ProcessRuntime, Runtime};
use crate::scheduler::{self, SchedulerConfig, SchedulerHandle};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("the certificate is for {found}, but this agent runs cluster {expected:?}")]
    WrongIdentity { expected: String, found: String },
    #[error("runtimes: {0} is listed twice")]
    DuplicateRuntime(RuntimeKind),
    #[error("runtimes: docker: {0}; start the engine, fix [docker] address, or drop docker from runtimes")]
    Docker(crate::runtime::RuntimeError),
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
        let runtime = runtime(&config).await?;
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
            taints: config
                .taints
                .iter()
                .map(|t| v1::Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: t.effect.to_string(),
                })
                .collect(),
            // The agent runs one node and does not list it yet.
            nodes: Vec::new(),
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

/// The node's runtime: the one listed, or several behind a [`MultiRuntime`] (a template with
/// an image runs on docker, one without on process).
async fn runtime(config: &AgentConfig) -> Result<Arc<dyn Runtime>, AgentError> {
    let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
    for kind in &config.runtimes {
        if runtimes.iter().any(|r| r.kind() == *kind) {
            return Err(AgentError::DuplicateRuntime(*kind));
        }
        let runtime: Arc<dyn Runtime> = match kind {
            RuntimeKind::Process => Arc::new(ProcessRuntime::new(&config.data_dir)),
            RuntimeKind::Docker => {
                let endpoint = config.docker.clone().unwrap_or_else(DockerEndpoint::local);
                let docker = endpoint.connect().await.map_err(AgentError::Docker)?;
                info!(engine = %endpoint.address, "docker runtime ready");
                Arc::new(DockerRuntime::new(
                    docker,
                    config.cluster.clone(),
                    &config.data_dir,
                ))
            }
        };
        runtimes.push(runtime);
    }
    Ok(match runtimes.len() {
        0 => Arc::new(ProcessRuntime::new(&config.data_dir)),
        1 => runtimes.remove(0),
        _ => Arc::new(MultiRuntime::new(runtimes)),
    })
}

/// Runs an agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::start(config, shutdown).await?.wait().await;
    Ok(())
}
