//! `[[nodes]]`: the nodes of a member cluster, each with its own address, capacity and
//! runtimes; without it, one implicit node from the single-node keys.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hansa_core::{Resources, RuntimeKind};
use serde::Deserialize;

use super::{
    host_cpu_millis, host_disk_bytes, host_memory_bytes, AgentConfig, CapacityConfig,
    CapacityOverride, ConfigError,
};

/// One `[[nodes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    /// Where the node's replicas bind (process) or publish their ports (docker), and where
    /// their endpoints point.
    pub address: IpAddr,
    #[serde(default)]
    pub capacity: CapacityConfig,
    /// Runs image-less templates as child processes of the agent, so only a node whose
    /// address belongs to the agent's own host may set it.
    #[serde(default)]
    pub process: bool,
    /// The node's Docker Engine: `unix:///var/run/docker.sock` or `tcp://host:2376`.
    #[serde(default)]
    pub docker: Option<String>,
    /// Client TLS for a `tcp://` engine (all three files, PEM).
    #[serde(default)]
    pub docker_tls: Option<DockerTlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The name of the one node of an agent configured without `[[nodes]]`.
pub const IMPLICIT_NODE: &str = "local";

/// A node as the agent runs it, from `[[nodes]]` or the implicit single node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub address: IpAddr,
    pub capacity: CapacityOverride,
    /// In the order the agent prefers them (the first is the default kind).
    pub runtimes: Vec<RuntimeKind>,
    /// Set when `runtimes` holds docker.
    pub docker: Option<crate::runtime::docker::DockerEndpoint>,
}

impl AgentConfig {
    /// Checks `[[nodes]]`; an error is (key, message).
    pub(super) fn validate_nodes(&self) -> Result<(), (String, String)> {
        let single_node_keys = [
            ("node_address", self.node_address.is_some()),
            ("docker", self.docker.is_some()),
            (
                "capacity",
                self.capacity.cpu.is_some()
                    || self.capacity.memory.is_some()
                    || self.capacity.disk.is_some(),
            ),
        ];
        for (key, set) in single_node_keys {
            if set {
                return Err((
                    key.to_string(),
                    "set it per node in [[nodes]] (it is for agents without [[nodes]])".into(),
                ));
            }
        }
        for (index, node) in self.nodes.iter().enumerate() {
            let key = |field: &str| format!("nodes[{index}].{field}");
            if !hansa_core::is_dns_label(&node.name) {
                return Err((
                    key("name"),
                    format!("must be a DNS label (got {:?})", node.name),
                ));
            }
            if let Some(first) = self.nodes[..index].iter().find(|n| n.name == node.name) {
                return Err((
                    key("name"),
                    format!(
                        "{:?} is listed twice (node names must be unique)",
                        first.name
                    ),
                ));
            }
            if let Some(other) = self.nodes[..index]
                .iter()
                .find(|n| n.address == node.address)
            {
                return Err((
                    key("address"),
                    format!(
                        "{} is also node {:?}'s (each node needs its own address)",
                        node.address, other.name
                    ),
                ));
            }
            if !node.process && node.docker.is_none() {
                return Err((
                    format!("nodes[{index}]"),
                    format!(
                        "node {:?} offers no runtime: set process = true and/or docker = \"unix:///var/run/docker.sock\"",
                        node.name
                    ),
                ));
            }
            node_capacity(&node.capacity, &|field| key(&format!("capacity.{field}")))?;
            let remote = node
                .docker
                .as_deref()
                .is_some_and(|a| !a.starts_with("unix://"));
            if remote && (node.capacity.cpu.is_none() || node.capacity.memory.is_none()) {
                return Err((
                    key("capacity"),
                    "a node with a remote docker engine needs cpu and memory (the agent cannot measure another host)".into(),
                ));
            }
            if let Some(address) = &node.docker {
                let scheme = address.split("://").next().unwrap_or_default();
                if !address.contains("://") || !["unix", "tcp", "http", "https"].contains(&scheme) {
                    return Err((
                        key("docker"),
                        format!("must be unix:///path or tcp://host:port (got {address:?})"),
                    ));
                }
                if scheme == "unix" && node.docker_tls.is_some() {
                    return Err((
                        key("docker_tls"),
                        "only for a tcp:// engine; a unix socket needs no TLS".into(),
                    ));
                }
            } else if node.docker_tls.is_some() {
                return Err((
                    key("docker_tls"),
                    "set docker = \"tcp://host:2376\" too, or drop docker_tls".into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the files the config names exist (the nodes' Docker TLS files), so that a
    /// typo fails at load naming its key rather than at the first connection.
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(tls) = &node.docker_tls else {
                continue;
            };
            for (field, file) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if let Err(e) = std::fs::metadata(file) {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        key: format!("nodes[{index}].docker_tls.{field}"),
                        message: format!("cannot read {}: {e}", file.display()),
                    });
                }
            }
        }
        Ok(())
    }

    /// The nodes the agent schedules onto, in configuration order.
    pub fn node_plans(&self) -> Vec<NodePlan> {
        use crate::runtime::docker::DockerEndpoint;
        if self.nodes.is_empty() {
            let docker = self
                .runtimes
                .contains(&RuntimeKind::Docker)
                .then(|| self.docker.clone().unwrap_or_else(DockerEndpoint::local));
            return vec![NodePlan {
                name: IMPLICIT_NODE.to_string(),
                address: self
                    .node_address
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                capacity: self.capacity_override().unwrap_or_default(),
                runtimes: self.runtimes.clone(),
                docker,
            }];
        }
        self.nodes
            .iter()
            .map(|node| {
                let mut runtimes = Vec::new();
                if node.process {
                    runtimes.push(RuntimeKind::Process);
                }
                let docker = node.docker.as_ref().map(|address| DockerEndpoint {
                    address: address.clone(),
                    ca: node.docker_tls.as_ref().map(|t| t.ca.clone()),
                    cert: node.docker_tls.as_ref().map(|t| t.cert.clone()),
                    key: node.docker_tls.as_ref().map(|t| t.key.clone()),
                });
                if docker.is_some() {
                    runtimes.push(RuntimeKind::Docker);
                }
                NodePlan {
                    name: node.name.clone(),
                    address: node.address,
                    capacity: node_capacity(&node.capacity, &|f| f.to_string()).unwrap_or_default(),
                    runtimes,
                    docker,
                }
            })
            .collect()
    }

    /// What a node can run: configured values, else the host's cores, memory and the data
    /// dir's file system size.
    pub fn node_allocatable(&self, node: &NodePlan) -> Resources {
        let configured = node.capacity;
        Resources {
            cpu_millis: configured.cpu_millis.unwrap_or_else(host_cpu_millis),
            memory_bytes: configured.memory_bytes.unwrap_or_else(host_memory_bytes),
            disk_bytes: configured
                .disk_bytes
                .unwrap_or_else(|| host_disk_bytes(&self.data_dir)),
        }
    }
}

/// Parses a node's `capacity`; an error is (key, message), the key made by `key`.
fn node_capacity(
    c: &CapacityConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<CapacityOverride, (String, String)> {
    use hansa_core::manifest::quantity::{bytes, cpu_millis};
    let parse =
        |field: &str, value: &Option<String>, parse: fn(&str) -> Result<u64, _>| {
            value.as_deref().map(parse).transpose().map_err(
                |e: hansa_core::manifest::quantity::QuantityError| (key(field), e.to_string()),
            )
        };
    Ok(CapacityOverride {
        cpu_millis: parse("cpu", &c.cpu, cpu_millis)?,
        memory_bytes: parse("memory", &c.memory, bytes)?,
        disk_bytes: parse("disk", &c.disk, bytes)?,
    })
}
