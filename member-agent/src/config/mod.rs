//! The member agent's configuration file (TOML, strict: unknown keys are errors).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hansa_core::{Resources, RuntimeKind};
use hansa_federator::security::TlsFiles;
use serde::Deserialize;

mod nodes;
#[cfg(test)]
mod tests;

pub use nodes::{DockerTlsConfig, NodeConfig, NodePlan, IMPLICIT_NODE};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Capacity to announce instead of the host's (quantities as in manifests: `4`, `500m`, `8Gi`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub disk: Option<String>,
}

/// Parsed `[capacity]` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityOverride {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The member cluster this agent runs; must match the name in its certificate.
    pub cluster: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Placement taints (`[[taints]] key = "dedicated", value = "gpu", effect = "NoSchedule"`):
    /// only workloads that tolerate them are placed here.
    #[serde(default)]
    pub taints: Vec<hansa_core::Taint>,
    /// Federator API addresses (`host:port` or `https://host:port`); the agent fails over
    /// among them.
    pub federators: Vec<String>,
    /// The address replicas bind to and endpoints point at (the single node's; required
    /// unless `[[nodes]]` lists the nodes).
    #[serde(default)]
    pub node_address: Option<IpAddr>,
    /// Node addresses or CIDRs of the cluster (default: the nodes' addresses).
    #[serde(default)]
    pub addresses: Vec<String>,
    pub data_dir: PathBuf,
    #[serde(default = "default_runtimes")]
    pub runtimes: Vec<RuntimeKind>,
    #[serde(default)]
    pub capacity: CapacityConfig,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a replica gets between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_grace_seconds")]
    pub stop_grace_seconds: u64,
    /// How long the replicas of a node whose runtime (its Docker Engine, say) does not answer
    /// wait before they are replaced on the cluster's other nodes; 0: never.
    #[serde(default = "default_replace_unreachable_seconds")]
    pub replace_unreachable_seconds: u64,
    pub tls: TlsFiles,
    /// The Docker Engine of this node, used when `runtimes` names `docker` (default: the
    /// local socket `unix:///var/run/docker.sock`; `tcp://host:2376` with `ca`, `cert`, `key`).
    #[serde(default)]
    pub docker: Option<crate::runtime::docker::DockerEndpoint>,
    /// The cluster's nodes, each with its own address, capacity and runtimes. Empty: one
    /// node, `local`, from `node_address`, `capacity`, `runtimes` and `docker`.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
}

fn default_runtimes() -> Vec<RuntimeKind> {
    vec![RuntimeKind::Process]
}
fn default_heartbeat_ms() -> u64 {
    2000
}
fn default_stop_grace_seconds() -> u64 {
    10
}
fn default_replace_unreachable_seconds() -> u64 {
    crate::scheduler::SchedulerConfig::default_replace_unreachable_after().as_secs()
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = AgentConfig::parse(path, &text)?;
        config.check_files(path)?;
        Ok(config)
    }

    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if !hansa_core::is_dns_label(&self.cluster) {
            return Err(invalid(
                "cluster",
                format!("must be a DNS label (got {:?})", self.cluster),
            ));
        }
        if self.federators.is_empty() {
            return Err(invalid(
                "federators",
                "must name at least one federator".into(),
            ));
        }
        if self.runtimes.is_empty() {
            return Err(invalid("runtimes", "must name at least one runtime".into()));
        }
        if self.nodes.is_empty() {
            if self.node_address.is_none() {
                return Err(invalid(
                    "node_address",
                    "required (the address replicas bind to), unless [[nodes]] lists the nodes"
                        .into(),
                ));
            }
        } else {
            self.validate_nodes()
                .map_err(|(key, message)| invalid(&key, message))?;
        }
        if self.heartbeat_ms < 100 {
            return Err(invalid(
                "heartbeat_ms",
                format!("must be >= 100 (got {})", self.heartbeat_ms),
            ));
        }
        self.capacity_override()
            .map_err(|(key, message)| invalid(&key, message))?;
        Ok(())
    }

    /// The configured capacity, dimension by dimension (`None`: detect from the host).
    /// An unparsable quantity is returned as (key, message).
    pub fn capacity_override(&self) -> Result<CapacityOverride, (String, String)> {
        use hansa_core::manifest::quantity::{bytes, cpu_millis};
        let parse = |key: &str, value: &Option<String>, parse: fn(&str) -> Result<u64, _>| {
            value.as_deref().map(parse).transpose().map_err(
                |e: hansa_core::manifest::quantity::QuantityError| {
                    (format!("capacity.{key}"), e.to_string())
                },
            )
        };
        let c = &self.capacity;
        Ok(CapacityOverride {
            cpu_millis: parse("cpu", &c.cpu, cpu_millis)?,
            memory_bytes: parse("memory", &c.memory, bytes)?,
            disk_bytes: parse("disk", &c.disk, bytes)?,
        })
    }

    /// What the cluster can run: the sum over its nodes.
    pub fn allocatable(&self) -> Resources {
        self.node_plans().iter().fold(Resources::ZERO, |sum, node| {
            sum.saturating_add(&self.node_allocatable(node))
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_seconds)
    }

    pub fn replace_unreachable_after(&self) -> Option<Duration> {
        (self.replace_unreachable_seconds > 0)
            .then(|| Duration::from_secs(self.replace_unreachable_seconds))
    }

    pub fn cluster_addresses(&self) -> Vec<String> {
        if self.addresses.is_empty() {
            self.node_plans()
                .iter()
                .map(|node| node.address.to_string())
                .collect()
        } else {
            self.addresses.clone()
        }
    }
}

pub(crate) fn host_cpu_millis() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u64::try_from(cores).unwrap_or(1) * 1000
}

pub(crate) fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

pub(crate) fn host_disk_bytes(dir: &Path) -> u64 {
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    nix::sys::statvfs::statvfs(probe)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0)
}
