//! The `docker` runtime: each replica is a container on a Docker Engine, reached through its
//! API (bollard) on the local socket or over TCP with TLS.
//!
//! The engine is the record: every container carries labels (`hansa.dev/workload`,
//! `hansa.dev/namespace`, `hansa.dev/revision`, `hansa.dev/replica`, `hansa.dev/cluster`, and
//! what adoption needs besides: ports, endpoints, template hash, start time), so a restarted
//! agent lists its cluster's containers and adopts the running ones without restarting them.
//! Containers are named `hansa-<cluster>-<replica>`, so clusters sharing one engine (as those of
//! `hansa dev` do) never clash. Restarts are the agent's (no Docker restart policy), so health
//! and backoff behave the same on every runtime.
//!
//! A stop removes the container after appending its output to
//! `<data_dir>/replicas/<id>/container.log`, so that `hansa logs` still shows why a failed run
//! ended while the replica waits for its restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy};
use bollard::models::{ContainerSummaryStateEnum, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use hansa_core::{Endpoint, ImagePullPolicy, RuntimeKind, WorkloadKey};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{
    BoxFuture, LogStream, ReplicaInfo, ReplicaRecord, ReplicaSpec, RunState, Runtime, RuntimeError,
    RuntimeHandle,
};
use crate::state;

pub const LABEL_WORKLOAD: &str = "hansa.dev/workload";
pub const LABEL_NAMESPACE: &str = "hansa.dev/namespace";
pub const LABEL_REVISION: &str = "hansa.dev/revision";
pub const LABEL_REPLICA: &str = "hansa.dev/replica";
pub const LABEL_CLUSTER: &str = "hansa.dev/cluster";
const LABEL_TEMPLATE_HASH: &str = "hansa.dev/template-hash";
const LABEL_HOST_PORTS: &str = "hansa.dev/host-ports";
const LABEL_ENDPOINTS: &str = "hansa.dev/endpoints";
const LABEL_STARTED_AT: &str = "hansa.dev/started-at-ms";
/// The node of the cluster the container was placed on.
pub const LABEL_NODE: &str = "hansa.dev/node";

/// Saved output of stopped runs, per replica, kept under this size (the newest part).
const SAVED_LOG_LIMIT: usize = 1 << 20;
/// How long a call to the engine may take before the runtime reports it unreachable.
const API_TIMEOUT_SECONDS: u64 = 60;
/// How long after an event the replicas are looked at once more.
const EVENT_SETTLE: Duration = Duration::from_millis(300);
/// How long the event watcher waits before resubscribing after the engine dropped it.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// Where a node's Docker Engine listens: `unix:///var/run/docker.sock`, or `tcp://host:2376`
/// with TLS files (all three, or none for plain TCP on a trusted network).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerEndpoint {
    /// `unix://...`, `tcp://...` or `https://...`; default: the local socket.
    #[serde(default = "DockerEndpoint::default_address")]
    pub address: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl DockerEndpoint {
    pub fn default_address() -> String {
        "unix:///var/run/docker.sock".to_string()
    }

    pub fn local() -> Self {
        Self {
            address: Self::default_address(),
            ..Self::default()
        }
    }

    /// A client for this endpoint whose API version is negotiated with the engine (so that an
    /// older engine, e.g. Debian's 20.10, works). Fails when the engine is unreachable.
    pub async fn connect(&self) -> Result<Docker, RuntimeError> {
        let unreachable = |e: BollardError| RuntimeError::Docker {
            action: format!("connect to the Docker Engine at {}", self.address),
            message: e.to_string(),
        };
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if let Some(path) = self.address.strip_prefix("unix://") {
            Docker::connect_with_unix(path, API_TIMEOUT_SECONDS, version)
        } else {
            match (&self.ca, &self.cert, &self.key) {
                (Some(ca), Some(cert), Some(key)) => Docker::connect_with_ssl(
                    &self.address,
                    key,
                    cert,
                    ca,
                    API_TIMEOUT_SECONDS,
                    version,
                ),
                (None, None, None) => {
                    Docker::connect_with_http(&self.address, API_TIMEOUT_SECONDS, version)
                }
                _ => {
                    return Err(RuntimeError::Docker {
                        action: format!("connect to the Docker Engine at {}", self.address),
                        message: "TLS needs all of ca, cert and key".to_string(),
                    })
                }
            }
        }
        .map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(docker)
    }
}

pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    cluster: String,
    /// Lists only the containers of this node (a `[[nodes]]` entry): two nodes never claim
    /// each other's containers, even on one engine.
    node: Option<String>,
    data_dir: PathBuf,
    changes: watch::Sender<u64>,
    /// Replicas this agent started (the others it lists were adopted).
    started: Mutex<HashSet<String>>,
}

impl DockerRuntime {
    /// A runtime for `cluster`'s containers on the engine `docker` is connected to. Watches the
    /// engine's events, so exits are noticed at once.
    pub fn new(docker: Docker, cluster: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self::build(docker, cluster.into(), None, data_dir.into())
    }

    /// The runtime of one node of the cluster: it lists only the containers labelled with
    /// `node`.
    pub fn for_node(
        docker: Docker,
        cluster: impl Into<String>,
        node: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self::build(docker, cluster.into(), Some(node.into()), data_dir.into())
    }

    fn build(docker: Docker, cluster: String, node: Option<String>, data_dir: PathBuf) -> Self {
        let inner = Arc::new(Inner {
            docker,
            cluster,
            node,
            data_dir,
            changes: watch::channel(0).0,
            started: Mutex::new(HashSet::new()),
        });
        tokio::spawn(watch_events(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// The container name of a replica.
    pub fn container_name(&self, id: &str) -> String {
        container_name(&self.inner.cluster, id)
    }
}

pub fn container_name(cluster: &str, id: &str) -> String {
    format!("hansa-{cluster}-{id}")
}

impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn start(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaRecord, RuntimeError>> {
        Box::pin(self.inner.clone().start(spec))
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.inner.stop(id, grace))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.inner.stop(id, Duration::ZERO).await?;
            state::remove_replica_dir(&self.inner.data_dir, id)
                .await
                .map_err(|source| RuntimeError::Record {
                    id: id.to_string(),
                    source,
                })
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RuntimeError>> {
        Box::pin(self.inner.list(None))
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ReplicaInfo>, RuntimeError>> {
        Box::pin(async move { Ok(self.inner.list(Some(id)).await?.into_iter().next()) })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn logs<'a>(
        &'a self,
        id: &'a str,
        follow: bool,
        tail: Option<u32>,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>> {
        Box::pin(self.inner.logs(id, follow, tail))
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        command: &'a [String],
    ) -> BoxFuture<'a, Option<Result<i64, String>>> {
        Box::pin(async move { Some(self.inner.exec(id, command).await) })
    }
}

fn docker_error(action: impl Into<String>) -> impl FnOnce(BollardError) -> RuntimeError {
    let action = action.into();
    move |e| RuntimeError::Docker {
        action,
        message: e.to_string(),
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Inner {
    fn started(&self) -> MutexGuard<'_, HashSet<String>> {
        self.started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn name(&self, id: &str) -> String {
        container_name(&self.cluster, id)
    }

    /// Makes `image` present as its pull policy says.
    async fn ensure_image(&self, image: &str, policy: ImagePullPolicy) -> Result<(), RuntimeError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(docker_error(format!("inspect image {image}"))(e)),
        };
        let pull = match policy {
            ImagePullPolicy::Always => true,
            ImagePullPolicy::IfNotPresent => !present,
            ImagePullPolicy::Never if present => false,
            ImagePullPolicy::Never => {
                return Err(RuntimeError::ImageAbsent {
                    image: image.to_string(),
                })
            }
        };
        if !pull {
            return Ok(());
        }
        tracing::info!(%image, ?policy, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..CreateImageOptions::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                if present {
                    tracing::warn!(%image, error = %e, "cannot pull image; using the present one");
                    return Ok(());
                }
                return Err(RuntimeError::ImagePull {
                    image: image.to_string(),
                    message: e.to_string(),
                    present,
                });
            }
        }
        Ok(())
    }

    async fn start(self: Arc<Self>, spec: ReplicaSpec) -> Result<ReplicaRecord, RuntimeError> {
        let Some(image) = spec.template.image.clone() else {
            return Err(RuntimeError::NoImage);
        };
        if let Some(existing) = self.list(Some(&spec.id)).await?.into_iter().next() {
            if existing.run == RunState::Running {
                return Err(RuntimeError::AlreadyRunning(spec.id.clone()));
            }
            // What is left of an earlier run of this id: its output is kept, then it goes.
            self.stop(&spec.id, Duration::ZERO).await?;
        }
        self.ensure_image(&image, spec.template.image_pull_policy)
            .await?;
        let name = self.name(&spec.id);
        let started_at_ms = now_ms();
        let record = ReplicaRecord {
            id: spec.id.clone(),
            workload: spec.workload.clone(),
            revision: spec.revision,
            template_hash: spec.template_hash.clone(),
            node: spec.node.clone(),
            host_ports: spec.host_ports.clone(),
            endpoints: spec.endpoints(),
            started_at_ms,
            handle: RuntimeHandle::Docker {
                container: name.clone(),
            },
        };
        let body = create_body(&spec, &image, &record, &self.cluster);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..CreateContainerOptions::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(docker_error(format!("create container {name}")))?;
        if let Err(e) = self
            .docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            // Unstarted, it would hold its name and look like an exited replica.
            let _ = self
                .docker
                .remove_container(&name, Some(force_remove()))
                .await;
            return Err(docker_error(format!("start container {name}"))(e));
        }
        self.started().insert(spec.id.clone());
        tracing::info!(replica = %spec.id, container = %name, %image, "replica started");
        self.bump();
        Ok(record)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let name = self.name(id);
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            t: Some(seconds),
            ..StopContainerOptions::default()
        };
        match self.docker.stop_container(&name, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {
                self.started().remove(id);
                return Ok(());
            }
            // 304: it was not running.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(docker_error(format!("stop container {name}"))(e)),
        }
        if let Err(e) = self.save_output(id, &name).await {
            tracing::warn!(replica = id, error = %e, "cannot keep the output of a stopped container");
        }
        match self
            .docker
            .remove_container(&name, Some(force_remove()))
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            // 409: a removal is already in progress.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(docker_error(format!("remove container {name}"))(e)),
        }
        self.started().remove(id);
        tracing::info!(replica = id, container = %name, "replica stopped");
        self.bump();
        Ok(())
    }

    /// Appends the container's output to `container.log`, keeping its newest part.
    async fn save_output(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            ..LogsOptions::default()
        };
        let mut output = Vec::new();
        let mut chunks = self.docker.logs(name, Some(options));
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => output.extend_from_slice(&chunk.into_bytes()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(docker_error(format!("read the logs of {name}"))(e)),
            }
        }
        let dir =
            state::replica_dir(&self.data_dir, id).map_err(|source| RuntimeError::Record {
                id: id.to_string(),
                source,
            })?;
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io("cannot create", &dir))?;
        let path = dir.join(SAVED_LOG_FILE);
        let mut saved = tokio::fs::read(&path).await.unwrap_or_default();
        saved.extend_from_slice(&output);
        if saved.len() > SAVED_LOG_LIMIT {
            saved.drain(..saved.len() - SAVED_LOG_LIMIT);
        }
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(io("cannot write", &path))?;
        file.write_all(&saved)
            .await
            .map_err(io("cannot write", &path))?;
        Ok(())
    }

    /// This cluster's replicas on the engine (one, if `only` names it).
    async fn list(&self, only: Option<&str>) -> Result<Vec<ReplicaInfo>, RuntimeError> {
        let mut labels = vec![format!("{LABEL_CLUSTER}={}", self.cluster)];
        if let Some(node) = &self.node {
            labels.push(format!("{LABEL_NODE}={node}"));
        }
        if let Some(id) = only {
            labels.push(format!("{LABEL_REPLICA}={id}"));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), labels)])),
            ..ListContainersOptions::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error("list containers"))?;
        let mut replicas = Vec::new();
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            let Some(record) = record_from_labels(&labels) else {
                tracing::warn!(
                    container = ?container.names,
                    "ignoring a container with incomplete hansa.dev labels"
                );
                continue;
            };
            let run = match container.state {
                Some(ContainerSummaryStateEnum::RUNNING)
                | Some(ContainerSummaryStateEnum::PAUSED)
                | Some(ContainerSummaryStateEnum::RESTARTING) => RunState::Running,
                // Created but never started: a start that failed half-way.
                Some(ContainerSummaryStateEnum::CREATED) => RunState::Exited {
                    reason: "the container was created but never started".to_string(),
                },
                Some(ContainerSummaryStateEnum::REMOVING) => continue,
                _ => RunState::Exited {
                    reason: self.exit_reason(&record.id).await,
                },
            };
            let adopted = !self.started().contains(&record.id);
            replicas.push(ReplicaInfo {
                record,
                run,
                adopted,
            });
        }
        Ok(replicas)
    }

    /// `exited with status 1`, `killed: out of memory (status 137)`.
    async fn exit_reason(&self, id: &str) -> String {
        let name = self.name(id);
        match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                let code = state.exit_code.unwrap_or_default();
                if state.oom_killed == Some(true) {
                    format!("killed: out of memory (status {code})")
                } else if let Some(error) = state.error.filter(|e| !e.is_empty()) {
                    format!("exited with status {code}: {error}")
                } else {
                    format!("exited with status {code}")
                }
            }
            Err(e) => format!("exited (cannot inspect the container: {e})"),
        }
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<LogStream, RuntimeError> {
        let name = self.name(id);
        let saved = match state::replica_dir(&self.data_dir, id) {
            Ok(dir) => tokio::fs::read(dir.join(SAVED_LOG_FILE))
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let exists = match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(docker_error(format!("inspect container {name}"))(e)),
        };
        if !exists && saved.is_empty() {
            return Err(RuntimeError::UnknownReplica(id.to_string()));
        }
        let saved = super::tail_lines(&saved, tail);
        let head = futures::stream::iter((!saved.is_empty()).then_some(Ok(saved)));
        if !exists {
            return Ok(Box::pin(head));
        }
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..LogsOptions::default()
        };
        let live = self.docker.logs(&name, Some(options)).map(|chunk| {
            chunk
                .map(|c| c.into_bytes().to_vec())
                .map_err(|e| e.to_string())
        });
        Ok(Box::pin(head.chain(live)))
    }

    /// Runs `command` in the replica's container; its exit code.
    async fn exec(&self, id: &str, command: &[String]) -> Result<i64, String> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let name = self.name(id);
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..CreateExecOptions::default()
        };
        let exec = self
            .docker
            .create_exec(&name, options)
            .await
            .map_err(|e| format!("exec in {name}: {e}"))?;
        let started = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| format!("exec in {name}: {e}"))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            // Drained, so that the command is not blocked on a full pipe.
            while output.next().await.is_some() {}
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| format!("exec in {name}: {e}"))?;
        inspect
            .exit_code
            .ok_or_else(|| format!("exec in {name}: no exit code"))
    }
}

/// The saved output of a replica's stopped containers, in its replica directory.
pub const SAVED_LOG_FILE: &str = "container.log";

fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        ..RemoveContainerOptions::default()
    }
}

/// The container's configuration: image, entrypoint and arguments, environment, labels,
/// published ports and limits.
pub fn create_body(
    spec: &ReplicaSpec,
    image: &str,
    record: &ReplicaRecord,
    cluster: &str,
) -> ContainerCreateBody {
    let template = &spec.template;
    // The image's own PATH and HOME hold inside the container, not the agent's.
    let mut env = template.env.clone();
    env.extend(spec.runtime_env());
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut exposed = HashMap::new();
    let mut bindings = HashMap::new();
    for (port, &host_port) in template.ports.iter().zip(&spec.host_ports) {
        // Unset: the same number inside and out (the replica reads it from PORT0..).
        let inside = port.container_port.unwrap_or(host_port);
        let key = format!("{inside}/{}", port.protocol);
        exposed.insert(key.clone(), HashMap::new());
        bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: Some(spec.node_address.clone()),
                host_port: Some(host_port.to_string()),
            }]),
        );
    }
    let resources = template.resources;
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        nano_cpus: (resources.cpu_millis > 0)
            .then(|| i64::try_from(resources.cpu_millis.saturating_mul(1_000_000)).ok())
            .flatten(),
        memory: (resources.memory_bytes > 0)
            .then(|| i64::try_from(resources.memory_bytes).ok())
            .flatten(),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..HostConfig::default()
    };
    let (entrypoint, cmd) = if template.command.is_empty() {
        (
            None,
            (!template.args.is_empty()).then(|| template.args.clone()),
        )
    } else {
        (Some(template.command.clone()), Some(template.args.clone()))
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(
            // The template's labels (from override policies) never shadow Hansa's own.
            template
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("hansa.dev/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(labels(record, cluster))
                .collect(),
        ),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

/// The labels that let a restarted agent adopt the container.
pub fn labels(record: &ReplicaRecord, cluster: &str) -> HashMap<String, String> {
    let ports: Vec<String> = record.host_ports.iter().map(u16::to_string).collect();
    HashMap::from([
        (LABEL_WORKLOAD.to_string(), record.workload.name.to_string()),
        (
            LABEL_NAMESPACE.to_string(),
            record.workload.namespace.to_string(),
        ),
        (LABEL_REVISION.to_string(), record.revision.to_string()),
        (LABEL_REPLICA.to_string(), record.id.clone()),
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_NODE.to_string(), record.node.clone()),
        (
            LABEL_TEMPLATE_HASH.to_string(),
            record.template_hash.clone(),
        ),
        (LABEL_HOST_PORTS.to_string(), ports.join(",")),
        (
            LABEL_ENDPOINTS.to_string(),
            serde_json::to_string(&record.endpoints).unwrap_or_default(),
        ),
        (
            LABEL_STARTED_AT.to_string(),
            record.started_at_ms.to_string(),
        ),
    ])
}

/// The inverse of [`labels`]; `None` when a label is missing or malformed.
pub fn record_from_labels(labels: &HashMap<String, String>) -> Option<ReplicaRecord> {
    let get = |key: &str| labels.get(key);
    let id = get(LABEL_REPLICA)?.clone();
    let cluster = get(LABEL_CLUSTER)?;
    let host_ports = match get(LABEL_HOST_PORTS)?.as_str() {
        "" => Vec::new(),
        ports => ports
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<u16>, _>>()
            .ok()?,
    };
    let endpoints: Vec<Endpoint> = serde_json::from_str(get(LABEL_ENDPOINTS)?).ok()?;
    Some(ReplicaRecord {
        workload: WorkloadKey::new(get(LABEL_NAMESPACE)?, get(LABEL_WORKLOAD)?),
        revision: get(LABEL_REVISION)?.parse().ok()?,
        template_hash: get(LABEL_TEMPLATE_HASH)?.clone(),
        // Containers of agents from before nodes have no node label.
        node: get(LABEL_NODE).cloned().unwrap_or_default(),
        host_ports,
        endpoints,
        started_at_ms: get(LABEL_STARTED_AT)?.parse().ok()?,
        handle: RuntimeHandle::Docker {
            container: container_name(cluster, &id),
        },
        id,
    })
}

/// Bumps `changes` on every container event of the cluster (start, die, destroy ..), so the
/// scheduler notices an exit at once; resubscribes when the engine drops the stream.
async fn watch_events(inner: std::sync::Weak<Inner>) {
    loop {
        let (docker, cluster) = match inner.upgrade() {
            Some(inner) => (inner.docker.clone(), inner.cluster.clone()),
            None => return,
        };
        let options = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{LABEL_CLUSTER}={cluster}")],
                ),
            ])),
            ..EventsOptions::default()
        };
        let mut events = docker.events(Some(options));
        while let Some(event) = events.next().await {
            let Some(inner) = inner.upgrade() else { return };
            match event {
                Ok(event) => {
                    tracing::debug!(action = ?event.action, "container event");
                    inner.bump();
                    // The engine may announce a death before its listing shows it: look again.
                    let later = Arc::downgrade(&inner);
                    tokio::spawn(async move {
                        tokio::time::sleep(EVENT_SETTLE).await;
                        if let Some(inner) = later.upgrade() {
                            inner.bump();
                        }
                    });
                }
                Err(e) => {
                    // Something happened, or the stream broke: either way, look again.
                    tracing::debug!(error = %e, "the Docker event stream failed");
                    inner.bump();
                    break;
                }
            }
        }
        tokio::time::sleep(EVENTS_RETRY).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use hansa_core::{PortSpec, Protocol, Resources, TaskTemplate};

    use super::*;

    fn spec(id: &str, image: &str, script: &str) -> ReplicaSpec {
        let template = TaskTemplate {
            image: Some(image.to_string()),
            command: vec!["sh".to_string(), "-c".to_string()],
            args: vec![script.to_string()],
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            ports: vec![
                PortSpec {
                    name: "http".to_string(),
                    ..PortSpec::default()
                },
                PortSpec {
                    name: "dns".to_string(),
                    container_port: Some(53),
                    protocol: Protocol::Udp,
                    ..PortSpec::default()
                },
            ],
            resources: Resources {
                cpu_millis: 250,
                memory_bytes: 64 << 20,
                disk_bytes: 0,
            },
            image_pull_policy: ImagePullPolicy::Never,
            ..TaskTemplate::default()
        };
        ReplicaSpec {
            id: id.to_string(),
            workload: WorkloadKey::new("shop", "web"),
            revision: 3,
            cluster: "unit".to_string(),
            node: "local".to_string(),
            node_address: "127.0.0.1".to_string(),
            template_hash: super::super::template_hash(&template),
            template,
            host_ports: vec![free_port(), free_port()],
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    fn record(spec: &ReplicaSpec) -> ReplicaRecord {
        ReplicaRecord {
            id: spec.id.clone(),
            workload: spec.workload.clone(),
            revision: spec.revision,
            template_hash: spec.template_hash.clone(),
            node: spec.node.clone(),
            host_ports: spec.host_ports.clone(),
            endpoints: spec.endpoints(),
            started_at_ms: 1_700_000_000_000,
            handle: RuntimeHandle::Docker {
                container: container_name(&spec.cluster, &spec.id),
            },
        }
    }

    #[test]
    fn labels_round_trip_to_the_record() {
        let spec = spec("web-abc123", "img", "true");
        let record = record(&spec);
        let labels = labels(&record, "unit");
        assert_eq!(labels[LABEL_WORKLOAD], "web");
        assert_eq!(labels[LABEL_NAMESPACE], "shop");
        assert_eq!(labels[LABEL_REVISION], "3");
        assert_eq!(labels[LABEL_REPLICA], "web-abc123");
        assert_eq!(labels[LABEL_CLUSTER], "unit");
        assert_eq!(labels[LABEL_NODE], "local");
        assert_eq!(record_from_labels(&labels), Some(record));
        let mut broken = labels.clone();
        broken.insert(LABEL_REVISION.to_string(), "x".to_string());
        assert_eq!(record_from_labels(&broken), None);
    }

    #[test]
    fn the_container_publishes_ports_passes_env_and_limits() {
        let spec = spec("web-abc123", "img", "true");
        let body = create_body(&spec, "img", &record(&spec), "unit");
        let (http, dns) = (spec.host_ports[0], spec.host_ports[1]);
        let host = body.host_config.clone().unwrap();
        let bindings = host.port_bindings.unwrap();
        // Without containerPort the same number inside and out; with it, as given.
        let binding = bindings[&format!("{http}/tcp")].clone().unwrap();
        assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding[0].host_port, Some(http.to_string()));
        let binding = bindings["53/udp"].clone().unwrap();
        assert_eq!(binding[0].host_port, Some(dns.to_string()));
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(
            host.restart_policy.and_then(|p| p.name),
            Some(RestartPolicyNameEnum::NO),
            "restarts are the agent's"
        );
        let env = body.env.unwrap();
        assert!(env.contains(&format!("PORT0={http}")));
        assert!(env.contains(&"GREETING=hi".to_string()));
        assert!(env.contains(&"HANSA_REPLICA_ID=web-abc123".to_string()));
        assert!(
            !env.iter().any(|e| e.starts_with("PATH=")),
            "the image's PATH holds inside"
        );
        assert_eq!(
            body.entrypoint,
            Some(vec!["sh".to_string(), "-c".to_string()])
        );
        assert_eq!(body.cmd, Some(vec!["true".to_string()]));
    }

    /// An engine, or `None` (a loud skip) outside CI; in CI a missing engine fails.
    pub(crate) async fn engine() -> Option<Docker> {
        match DockerEndpoint::local().connect().await {
            Ok(docker) => Some(docker),
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
                assert!(!ci, "no Docker Engine in CI: {e}");
                eprintln!(
                    "!!! SKIPPED: no Docker Engine is reachable ({e}); run scripts/docker-engine"
                );
                None
            }
        }
    }

    /// A busybox image from /bin/busybox; removed on drop, with every container of the
    /// test's cluster (also when the test fails half-way).
    pub(crate) struct Image(String, String);

    impl Image {
        pub(crate) fn build(tag: &str, cluster: &str) -> Image {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::copy("/bin/busybox", root.join("bin/busybox"))
                .expect("/bin/busybox (apt-get install busybox-static)");
            for applet in ["sh", "echo", "sleep", "true", "false", "cat", "httpd"] {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
            let tarball = dir.path().join("image.tar");
            let tar = Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tarball)
                .arg(".")
                .status()
                .unwrap();
            assert!(tar.success());
            let import = Command::new("docker")
                .args(["import", "--change", "ENV PATH=/bin"])
                .arg(&tarball)
                .arg(tag)
                .output()
                .unwrap();
            assert!(import.status.success(), "{import:?}");
            Image(tag.to_string(), cluster.to_string())
        }
    }

    impl Drop for Image {
        fn drop(&mut self) {
            let filter = format!("label={LABEL_CLUSTER}={}", self.1);
            let ids = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }

    async fn collect(mut stream: LogStream) -> String {
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend(chunk.unwrap());
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    #[tokio::test]
    async fn docker_containers_run_exit_are_adopted_logged_and_stopped() {
        let Some(docker) = engine().await else {
            return;
        };
        let run = std::process::id();
        let cluster = format!("unit-{run}");
        let image = Image::build(&format!("hansa-test/busybox:unit-{run}"), &cluster);
        let dir = tempfile::tempdir().unwrap();
        let runtime = DockerRuntime::new(docker.clone(), cluster.clone(), dir.path());
        let mut changes = runtime.changes();

        // An absent image with Never: a clear error, nothing created.
        let mut absent = spec("absent-000001", "hansa-test/absent:unit", "true");
        absent.cluster = cluster.clone();
        let err = runtime.start(absent).await.unwrap_err().to_string();
        assert!(
            err.contains("hansa-test/absent:unit") && err.contains("Never"),
            "{err}"
        );

        let mut long = spec("web-000001", &image.0, "echo started; exec sleep 600");
        long.cluster = cluster.clone();
        let mut short = spec("web-000002", &image.0, "echo bye; exit 3");
        short.cluster = cluster.clone();
        runtime.start(long.clone()).await.unwrap();
        runtime.start(short).await.unwrap();
        assert!(matches!(
            runtime.start(long.clone()).await,
            Err(RuntimeError::AlreadyRunning(_))
        ));
        let exited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(info) = runtime.inspect("web-000002").await.unwrap() {
                    if let RunState::Exited { reason } = info.run {
                        return reason;
                    }
                }
                // An exit before the event stream was subscribed is seen by the next look.
                tokio::select! {
                    changed = changes.changed() => changed.unwrap(),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
        .await
        .expect("the short container exits");
        assert_eq!(exited, "exited with status 3");

        // Exec probes run inside.
        let ok = runtime.exec("web-000001", &["true".to_string()]).await;
        assert_eq!(ok, Some(Ok(0)));
        let fail = runtime.exec("web-000001", &["false".to_string()]).await;
        assert_eq!(fail, Some(Ok(1)));

        // A new runtime (a restarted agent) adopts the running container as it is.
        let again = DockerRuntime::new(docker.clone(), cluster.clone(), dir.path());
        let listed = again.list().await.unwrap();
        let adopted = listed
            .iter()
            .find(|i| i.record.id == "web-000001")
            .expect("adopted");
        assert!(adopted.adopted);
        assert_eq!(adopted.run, RunState::Running);
        assert_eq!(
            adopted.record,
            record_with_time(&long, adopted.record.started_at_ms)
        );

        let logs = collect(again.logs("web-000001", false, None).await.unwrap()).await;
        assert_eq!(logs, "started\n");

        // A stop keeps the output for `hansa logs`; remove deletes it.
        again
            .stop("web-000002", Duration::from_secs(1))
            .await
            .unwrap();
        assert!(again.inspect("web-000002").await.unwrap().is_none());
        let kept = collect(again.logs("web-000002", false, None).await.unwrap()).await;
        assert_eq!(kept, "bye\n");
        again.remove("web-000002").await.unwrap();
        assert!(matches!(
            again.logs("web-000002", false, None).await,
            Err(RuntimeError::UnknownReplica(_))
        ));
        again
            .stop("web-000001", Duration::from_secs(1))
            .await
            .unwrap();
        again.remove("web-000001").await.unwrap();
        assert!(again.list().await.unwrap().is_empty());
    }

    fn record_with_time(spec: &ReplicaSpec, started_at_ms: u64) -> ReplicaRecord {
        ReplicaRecord {
            started_at_ms,
            ..record(spec)
        }
    }
}
