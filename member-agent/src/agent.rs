//! A running member agent: the local scheduler with its runtime, and the connection to the
//! federation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hansa_core::RuntimeKind;
use hansa_federator::security::{Role, SecurityError, TlsMaterial};
use hansa_proto::v1;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{AgentConfig, NodePlan};
use crate::connect::Connection;
use crate::runtime::docker::DockerEndpoint;
use crate::runtime::{DockerRuntime, MultiRuntime, ProcessRuntime, Runtime};
use crate::scheduler::{self, NodeSpec, SchedulerConfig, SchedulerHandle};

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
    #[error("nodes: {node}: docker: {source}; start the engine, or fix the node's docker and docker_tls")]
    NodeDocker {
        node: String,
        source: crate::runtime::RuntimeError,
    },
    #[error("nodes: {node}: address {address}: {source}; the process runtime runs replicas on the agent's own host, so its nodes need an address of this host")]
    NotThisHost {
        node: String,
        address: IpAddr,
        source: std::io::Error,
    },
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
        let plans = config.node_plans();
        let runtime = if config.nodes.is_empty() {
            runtime(&config).await?
        } else {
            node_runtimes(&config, &plans).await?
        };
        let nodes: Vec<NodeSpec> = plans
            .iter()
            .map(|plan| NodeSpec {
                name: plan.name.clone(),
                address: plan.address.to_string(),
                allocatable: config.node_allocatable(plan),
                runtimes: plan.runtimes.clone(),
            })
            .collect();
        let mut tasks = JoinSet::new();
        let scheduler = scheduler::start(
            SchedulerConfig {
                replace_unreachable_after: config.replace_unreachable_after(),
                ..SchedulerConfig::with_nodes(
                    config.cluster.clone(),
                    nodes,
                    config.data_dir.clone(),
                    config.stop_grace(),
                )
            },
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
            runtimes: cluster_runtimes(&plans)
                .iter()
                .map(ToString::to_string)
                .collect(),
            addresses: config.cluster_addresses(),
            allocatable: Some(scheduler.allocatable().into()),
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
            nodes: scheduler
                .nodes()
                .iter()
                .map(v1::NodeCapacity::from)
                .collect(),
        };
        let connection = Connection {
            federators: config.federators.clone(),
            tls,
            cluster,
            heartbeat: config.heartbeat(),
            scheduler: scheduler.clone(),
        };
        tasks.spawn(connection.run(shutdown));
        let names: Vec<String> = plans
            .iter()
            .map(|p| format!("{} ({})", p.name, p.address))
            .collect();
        info!(cluster = %config.cluster, nodes = %names.join(", "), "member agent started");
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

/// Every runtime kind some node offers, in the order they first appear.
fn cluster_runtimes(plans: &[NodePlan]) -> Vec<RuntimeKind> {
    let mut kinds = Vec::new();
    for kind in plans.iter().flat_map(|p| &p.runtimes) {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

/// The runtimes of `[[nodes]]`: one process runtime for every node that offers it (they all
/// run on this host), one Docker runtime per node (seeing only that node's containers, so an
/// engine shared by two nodes still tells them apart, and one that stops answering takes out
/// only its own node).
async fn node_runtimes(
    config: &AgentConfig,
    plans: &[NodePlan],
) -> Result<Arc<dyn Runtime>, AgentError> {
    let mut process: Option<Arc<dyn Runtime>> = None;
    let mut engines: BTreeMap<String, bollard::Docker> = BTreeMap::new();
    let mut by_node: BTreeMap<String, Vec<Arc<dyn Runtime>>> = BTreeMap::new();
    for plan in plans {
        let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
        if plan.runtimes.contains(&RuntimeKind::Process) {
            // Binding proves the address is this host's: a process replica binds there.
            if let Err(source) = std::net::TcpListener::bind((plan.address, 0)) {
                return Err(AgentError::NotThisHost {
                    node: plan.name.clone(),
                    address: plan.address,
                    source,
                });
            }
            let runtime = process
                .get_or_insert_with(|| Arc::new(ProcessRuntime::new(&config.data_dir)))
                .clone();
            runtimes.push(runtime);
        }
        if let Some(endpoint) = &plan.docker {
            let docker = match engines.get(&endpoint.address) {
                Some(docker) => docker.clone(),
                None => {
                    let docker =
                        endpoint
                            .connect()
                            .await
                            .map_err(|source| AgentError::NodeDocker {
                                node: plan.name.clone(),
                                source,
                            })?;
                    info!(node = %plan.name, engine = %endpoint.address, "docker runtime ready");
                    engines.insert(endpoint.address.clone(), docker.clone());
                    docker
                }
            };
            runtimes.push(Arc::new(DockerRuntime::for_node(
                docker,
                config.cluster.clone(),
                plan.name.clone(),
                &config.data_dir,
            )));
        }
        by_node.insert(plan.name.clone(), runtimes);
    }
    Ok(Arc::new(MultiRuntime::with_nodes(by_node)))
}

/// Runs an agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::start(config, shutdown).await?.wait().await;
    Ok(())
}
