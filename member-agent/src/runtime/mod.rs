//! Runtimes run replicas: `process` (supervised child processes, the embedded default) and
//! `docker` (containers on a Docker Engine); [`MultiRuntime`] offers both on one node. The scheduler speaks to them only through [`Runtime`]: a [`ReplicaSpec`]
//! goes in, a [`ReplicaRecord`] comes out, and [`Runtime::list`] tells what runs — including
//! replicas a previous agent started, so a restarted agent adopts instead of duplicating.

pub mod docker;
#[cfg(test)]
mod docker_tls_tests;
mod multi;
pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use hansa_core::{Endpoint, EnvConvention, RuntimeKind, TaskTemplate, WorkloadKey};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use docker::DockerRuntime;
pub use multi::MultiRuntime;
pub use process::ProcessRuntime;

/// A replica's output, chunk by chunk; an error ends it.
pub type LogStream = Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>> + Send>>;

/// A boxed future, so that [`Runtime`] stays object-safe (`Arc<dyn Runtime>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts, stops and lists replicas. Every method is idempotent where that makes sense:
/// stopping or removing an unknown replica succeeds.
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// Starts one replica. Its id may be that of an exited replica that was stopped (a restart
    /// in place: same id, same ports, logs appended).
    fn start(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaRecord, RuntimeError>>;

    /// Stops a replica: a polite signal, `grace` to exit, then a forced kill; waits until all
    /// of its processes are gone and forgets it. Its logs stay until [`Runtime::remove`].
    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Deletes what a stopped replica left behind (logs, sandbox).
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Every replica the runtime runs or saw exit (until stopped), including those a previous
    /// agent started and this one adopted.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RuntimeError>>;

    /// [`Runtime::list`] for the scheduler's periodic look: never waits longer than
    /// [`SURVEY_TIMEOUT`], and a runtime made of several ([`MultiRuntime`]) reports the ones
    /// that did not answer instead of failing as a whole, so one unreachable Docker Engine
    /// does not blind the agent to every other node.
    fn survey(&self) -> BoxFuture<'_, Survey> {
        Box::pin(async move {
            let (replicas, error) = match tokio::time::timeout(SURVEY_TIMEOUT, self.list()).await {
                Ok(Ok(replicas)) => (replicas, None),
                Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
                Err(_) => (Vec::new(), Some(survey_timed_out())),
            };
            Survey {
                replicas,
                unreachable: error
                    .map(|error| Unreachable {
                        node: None,
                        kind: self.kind(),
                        error,
                    })
                    .into_iter()
                    .collect(),
            }
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ReplicaInfo>, RuntimeError>>;

    /// Bumps whenever a replica appears, changes its [`RunState`] (typically: it exited) or
    /// goes, so the scheduler reacts at once instead of at its next periodic pass.
    fn changes(&self) -> watch::Receiver<u64>;

    /// The replica's output (stdout and stderr), the last `tail` lines of it (all if `None`),
    /// then, with `follow`, what it writes until it stops.
    fn logs<'a>(
        &'a self,
        id: &'a str,
        follow: bool,
        tail: Option<u32>,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>>;

    /// Runs an exec health probe's `command` inside the replica and returns its exit code;
    /// `None` when the runtime has no inside (the process runtime: the probe runs on the host,
    /// in the replica's directory and environment).
    fn exec<'a>(
        &'a self,
        id: &'a str,
        command: &'a [String],
    ) -> BoxFuture<'a, Option<Result<i64, String>>> {
        let _ = (id, command);
        Box::pin(async { None })
    }
}

/// The last `tail` lines of `text` (all of it for `None`).
pub fn tail_lines(text: &[u8], tail: Option<u32>) -> Vec<u8> {
    let Some(tail) = tail else {
        return text.to_vec();
    };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut newlines = 0u32;
    for (i, &byte) in body.iter().enumerate().rev() {
        if byte == b'\n' {
            newlines += 1;
            if newlines == tail {
                return text[i + 1..].to_vec();
            }
        }
    }
    if tail == 0 {
        Vec::new()
    } else {
        text.to_vec()
    }
}

/// How long [`Runtime::survey`] waits for a runtime to list its replicas.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn survey_timed_out() -> String {
    format!(
        "did not list its replicas within {} s",
        SURVEY_TIMEOUT.as_secs()
    )
}

/// What [`Runtime::survey`] found.
#[derive(Debug, Default)]
pub struct Survey {
    /// The replicas of every runtime that answered.
    pub replicas: Vec<ReplicaInfo>,
    /// The runtimes that did not: their replicas are missing from `replicas`, but not gone.
    pub unreachable: Vec<Unreachable>,
}

/// A runtime that did not list its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The node it serves; `None`: every node (an agent with one runtime).
    pub node: Option<String>,
    pub kind: RuntimeKind,
    pub error: String,
}

impl Unreachable {
    /// Whether this is the runtime of `kind` (of any kind for `None`) on `node`.
    pub fn covers(&self, node: &str, kind: Option<RuntimeKind>) -> bool {
        self.node.as_deref().is_none_or(|n| n == node) && kind.is_none_or(|k| k == self.kind)
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(node) = &self.node {
            write!(f, "node {node}: ")?;
        }
        write!(
            f,
            "the {} runtime is unreachable: {}",
            self.kind, self.error
        )
    }
}

/// What the scheduler asks a runtime to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    pub id: String,
    pub workload: WorkloadKey,
    pub revision: u64,
    pub cluster: String,
    /// The node of the cluster the replica runs on (recorded, so it stays there).
    pub node: String,
    /// Where the replica binds and its endpoints point: its node's address.
    pub node_address: String,
    pub template: TaskTemplate,
    /// [`template_hash`] of `template`, recorded so an operator can tell what a replica ran.
    pub template_hash: String,
    /// Host ports in template port order, allocated by the scheduler.
    pub host_ports: Vec<u16>,
}

impl ReplicaSpec {
    /// One endpoint per template port: (node address, host port, protocol).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.template
            .ports
            .iter()
            .zip(&self.host_ports)
            .map(|(spec, &port)| Endpoint {
                name: spec.name.clone(),
                address: self.node_address.clone(),
                port,
                protocol: spec.protocol,
            })
            .collect()
    }

    /// The replica's environment.
    ///
    /// The agent's own environment is *not* inherited wholesale: it may hold credentials (the
    /// agent's bootstrap token, cloud keys, `*_PASSWORD`) that replicas must never see. Only
    /// `PATH`, `HOME`, `LANG` and `TZ` pass through, so ordinary programs still resolve and
    /// format as on the host. Then the template's env, then the variables the runtime owns
    /// (`HOST`, `PORT*`, `HANSA_*`, Marathon's), which win so that they cannot lie.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for name in INHERITED_ENV {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.to_string(), value);
            }
        }
        env.extend(self.template.env.clone());
        env.extend(self.runtime_env());
        env
    }

    /// The variables the runtime owns, per the template's [`EnvConvention`].
    pub fn runtime_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("HOST".to_string(), self.node_address.clone());
        if let Some(first) = self.host_ports.first() {
            env.insert("PORT".to_string(), first.to_string());
        }
        for (index, (spec, port)) in self.template.ports.iter().zip(&self.host_ports).enumerate() {
            env.insert(format!("PORT{index}"), port.to_string());
            if !spec.name.is_empty() {
                env.insert(format!("PORT_{}", env_name(&spec.name)), port.to_string());
            }
        }
        env.insert("HANSA_REPLICA_ID".to_string(), self.id.clone());
        env.insert("HANSA_WORKLOAD".to_string(), self.workload.name.to_string());
        env.insert(
            "HANSA_NAMESPACE".to_string(),
            self.workload.namespace.to_string(),
        );
        env.insert("HANSA_CLUSTER".to_string(), self.cluster.clone());
        env.insert("HANSA_REVISION".to_string(), self.revision.to_string());
        if let EnvConvention::Marathon { app_id } = &self.template.env_convention {
            let ports: Vec<String> = self.host_ports.iter().map(u16::to_string).collect();
            env.insert("PORTS".to_string(), ports.join(","));
            env.insert("MARATHON_APP_ID".to_string(), app_id.clone());
            for (spec, port) in self.template.ports.iter().zip(&self.host_ports) {
                if let Some(container_port) = spec.container_port {
                    env.insert(format!("PORT_{container_port}"), port.to_string());
                }
            }
        }
        env
    }
}

/// The agent variables a replica inherits; see [`ReplicaSpec::environment`].
pub const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// `web-api` -> `WEB_API`: a port name as an environment variable suffix.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A stable hash of a template (FNV-1a over its JSON form), as 16 hex digits.
pub fn template_hash(template: &TaskTemplate) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// What a runtime knows about a replica it started: enough to adopt it after an agent restart.
/// The process runtime keeps it in `<data_dir>/replicas/<id>/replica.json`; the docker runtime
/// will keep it in container labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    pub id: String,
    pub workload: WorkloadKey,
    pub revision: u64,
    pub template_hash: String,
    /// The node it was placed on; empty in records of agents from before nodes (they ran
    /// one node).
    #[serde(default)]
    pub node: String,
    pub host_ports: Vec<u16>,
    pub endpoints: Vec<Endpoint>,
    /// Wall-clock start, milliseconds since the Unix epoch (the health grace of an adopted
    /// replica counts from here).
    pub started_at_ms: u64,
    pub handle: RuntimeHandle,
}

/// How a runtime finds its replica again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RuntimeHandle {
    Process {
        /// Also the process group id: each replica leads its own group.
        pid: u32,
        /// `/proc/<pid>/stat` field 22 (clock ticks after boot): tells our process from a
        /// later one that reused its pid.
        start_ticks: u64,
    },
    Docker {
        /// The container's name, `hansa-<cluster>-<replica>`.
        container: String,
    },
}

/// Whether a replica's processes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// It exited on its own (or was killed by someone else); `reason` reads like
    /// `exited with status 1` or `killed by signal 9 (SIGKILL)`.
    Exited {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub record: ReplicaRecord,
    pub run: RunState,
    /// Started by a previous agent and adopted by this one.
    pub adopted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the {runtime} runtime cannot run image {image}: templates with an image need the docker runtime")]
    ImageNotSupported { runtime: RuntimeKind, image: String },
    #[error("the template has no command: set command (and args)")]
    NoCommand,
    #[error(
        "the docker runtime needs an image: set the template's image, or use the process runtime"
    )]
    NoImage,
    #[error("no {0} runtime on this cluster (it offers {1}); set the template's image accordingly or enable that runtime in the agent's runtimes")]
    RuntimeMissing(RuntimeKind, String),
    #[error("image {image} is not present on the node and imagePullPolicy is Never: load it (docker load / docker import) or allow pulls")]
    ImageAbsent { image: String },
    #[error("cannot pull image {image}: {message}")]
    ImagePull {
        image: String,
        message: String,
        /// Whether an older copy is present (used by `Always` when the pull fails).
        present: bool,
    },
    #[error("docker: cannot {action}: {message}")]
    Docker { action: String, message: String },
    #[error("no replica {0} on this node")]
    UnknownReplica(String),
    #[error("replica {0} is already running")]
    AlreadyRunning(String),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot record replica {id}: {source}")]
    Record {
        id: String,
        #[source]
        source: crate::state::StateError,
    },
    #[error("cannot signal process group {pgid}: {source}")]
    Signal {
        pgid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("replica {id}: process group {pgid} still has processes {waited:?} after SIGKILL")]
    StopTimeout {
        id: String,
        pgid: u32,
        waited: Duration,
    },
}

#[cfg(test)]
mod tests {
    use hansa_core::{PortSpec, Protocol};

    use super::*;

    fn spec(convention: EnvConvention) -> ReplicaSpec {
        let template = TaskTemplate {
            command: vec!["app".to_string()],
            env: BTreeMap::from([
                ("GREETING".to_string(), "hi".to_string()),
                ("PORT".to_string(), "1".to_string()),
            ]),
            ports: vec![
                PortSpec {
                    name: "http".to_string(),
                    container_port: Some(8080),
                    ..PortSpec::default()
                },
                PortSpec {
                    name: "admin-ui".to_string(),
                    protocol: Protocol::Udp,
                    ..PortSpec::default()
                },
            ],
            env_convention: convention,
            ..TaskTemplate::default()
        };
        ReplicaSpec {
            id: "web-abc123".to_string(),
            workload: WorkloadKey::new("shop", "web"),
            revision: 7,
            cluster: "eu-1".to_string(),
            node: "local".to_string(),
            node_address: "127.0.1.1".to_string(),
            template_hash: template_hash(&template),
            template,
            host_ports: vec![31000, 31001],
        }
    }

    #[test]
    fn hansa_env_names_ports_by_index_and_name() {
        let env = spec(EnvConvention::Hansa).environment();
        assert_eq!(env["HOST"], "127.0.1.1");
        assert_eq!(
            env["PORT"], "31000",
            "runtime variables win over the template's"
        );
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT_HTTP"], "31000");
        assert_eq!(env["PORT_ADMIN_UI"], "31001");
        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["HANSA_REPLICA_ID"], "web-abc123");
        assert_eq!(env["HANSA_WORKLOAD"], "web");
        assert_eq!(env["HANSA_NAMESPACE"], "shop");
        assert_eq!(env["HANSA_CLUSTER"], "eu-1");
        assert_eq!(env["HANSA_REVISION"], "7");
        assert!(!env.contains_key("PORTS"));
        assert!(!env.contains_key("PORT_8080"));
    }

    #[test]
    fn marathon_env_adds_ports_app_id_and_container_ports() {
        let env = spec(EnvConvention::Marathon {
            app_id: "/shop/web".to_string(),
        })
        .environment();
        assert_eq!(env["PORTS"], "31000,31001");
        assert_eq!(env["MARATHON_APP_ID"], "/shop/web");
        assert_eq!(env["PORT_8080"], "31000");
        assert_eq!(env["PORT0"], "31000");
    }

    #[test]
    fn only_the_listed_agent_variables_are_inherited() {
        let env = spec(EnvConvention::Hansa).environment();
        let ours = spec(EnvConvention::Hansa).runtime_env();
        for name in env.keys() {
            assert!(
                INHERITED_ENV.contains(&name.as_str())
                    || ours.contains_key(name)
                    || name == "GREETING",
                "unexpected variable {name}"
            );
        }
    }

    #[test]
    fn endpoints_follow_template_ports() {
        let endpoints = spec(EnvConvention::Hansa).endpoints();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[1].name, "admin-ui");
        assert_eq!(endpoints[1].address, "127.0.1.1");
        assert_eq!(endpoints[1].port, 31001);
        assert_eq!(endpoints[1].protocol, Protocol::Udp);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(tail_lines(text, None), text);
        assert_eq!(tail_lines(text, Some(2)), b"two\nthree\n");
        assert_eq!(tail_lines(text, Some(3)), text);
        assert_eq!(tail_lines(text, Some(9)), text);
        assert_eq!(tail_lines(text, Some(0)), b"");
        assert_eq!(tail_lines(b"a\nno newline", Some(1)), b"no newline");
    }

    #[test]
    fn template_hash_is_stable_and_sensitive() {
        let a = spec(EnvConvention::Hansa).template;
        let mut b = a.clone();
        assert_eq!(template_hash(&a), template_hash(&b));
        b.args.push("--verbose".to_string());
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 16);
    }
}
