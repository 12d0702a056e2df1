//! The member agent's configuration file (TOML, strict: unknown keys are errors).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hansa_core::{Resources, RuntimeKind};
use hansa_federator::security::TlsFiles;
use serde::Deserialize;

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

fn default_runtimes() -> Vec<RuntimeKind> {
    vec![RuntimeKind::Process]
}
fn default_heartbeat_ms() -> u64 {
    2000
}
fn default_stop_grace_seconds() -> u64 {
    10
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

    /// Checks `[[nodes]]`; an error is (key, message).
    fn validate_nodes(&self) -> Result<(), (String, String)> {
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

fn host_cpu_millis() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u64::try_from(cores).unwrap_or(1) * 1000
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn host_disk_bytes(dir: &Path) -> u64 {
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    nix::sys::statvfs::statvfs(probe)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/member-agent.toml"
        ));
        let config = AgentConfig::load(path).expect("deploy/member-agent.toml");
        assert_eq!(config.cluster, "eu-1");
        assert_eq!(config.allocatable().memory_bytes, 8 << 30);
    }

    #[test]
    fn the_shipped_docker_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/member-agent-docker.toml"
        ));
        let config = AgentConfig::load(path).expect("deploy/member-agent-docker.toml");
        assert_eq!(config.runtimes, [RuntimeKind::Process, RuntimeKind::Docker]);
        let docker = config.docker.expect("[docker]");
        assert_eq!(docker.address, "tcp://10.2.0.11:2376");
        assert!(docker.ca.is_some() && docker.cert.is_some() && docker.key.is_some());
    }

    #[test]
    fn the_shipped_nodes_example_parses() {
        // Parsed, not loaded: its TLS files live on the operator's host, not in the repo.
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/member-agent-nodes.toml"
        ));
        let text = std::fs::read_to_string(path).expect("deploy/member-agent-nodes.toml");
        let config = AgentConfig::parse(path, &text).expect("deploy/member-agent-nodes.toml");
        let plans = config.node_plans();
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b"]);
        assert_eq!(
            plans[0].runtimes,
            [RuntimeKind::Process, RuntimeKind::Docker]
        );
        let remote = plans[1].docker.as_ref().expect("node-b's engine");
        assert_eq!(remote.address, "tcp://10.2.0.12:2376");
        assert!(remote.ca.is_some() && remote.cert.is_some() && remote.key.is_some());
        assert_eq!(config.allocatable().cpu_millis, 24_000);
        let err = config
            .check_files(path)
            .expect_err("the example's TLS files are not here");
        assert!(
            err.to_string()
                .contains("nodes[1].docker_tls.ca: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_quantity_names_its_key() {
        let text = r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
node_address = "127.0.1.1"
data_dir = "/tmp/agent"
[capacity]
memory = "lots"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;
        let err = AgentConfig::parse(Path::new("a.toml"), text).expect_err("bad quantity");
        assert!(
            err.to_string().starts_with("a.toml: capacity.memory: "),
            "{err}"
        );
    }

    const HEAD: &str = r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
data_dir = "/tmp/agent"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;

    fn with_nodes(nodes: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(Path::new("a.toml"), &format!("{HEAD}{nodes}"))
    }

    fn error(nodes: &str) -> String {
        with_nodes(nodes).expect_err("invalid").to_string()
    }

    /// Loads like the agent does: parse, then check the files it names.
    fn load_nodes(dir: &Path, nodes: &str) -> Result<AgentConfig, ConfigError> {
        let path = dir.join("agent.toml");
        std::fs::write(&path, format!("{HEAD}{nodes}")).expect("write config");
        AgentConfig::load(&path)
    }

    #[test]
    fn nodes_have_their_own_address_capacity_and_runtimes() {
        let config = with_nodes(
            r#"
[[nodes]]
name = "node-a"
address = "127.0.0.41"
process = true
capacity = { cpu = "2", memory = "1Gi" }
[[nodes]]
name = "node-b"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
capacity = { cpu = "500m", memory = "512Mi", disk = "10Gi" }
"#,
        )
        .expect("valid");
        let plans = config.node_plans();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].name, "node-a");
        assert_eq!(plans[0].runtimes, [RuntimeKind::Process]);
        assert_eq!(plans[0].docker, None);
        assert_eq!(plans[1].runtimes, [RuntimeKind::Docker]);
        let docker = plans[1].docker.as_ref().expect("docker endpoint");
        assert_eq!(docker.address, "tcp://10.2.0.12:2376");
        assert_eq!(docker.ca, None);
        let b = config.node_allocatable(&plans[1]);
        assert_eq!(
            (b.cpu_millis, b.memory_bytes, b.disk_bytes),
            (500, 512 << 20, 10 << 30)
        );
        let total = config.allocatable();
        assert_eq!(total.cpu_millis, 2500);
        assert_eq!(total.memory_bytes, (1 << 30) + (512 << 20));
        assert_eq!(config.cluster_addresses(), ["127.0.0.41", "10.2.0.12"]);
    }

    #[test]
    fn without_nodes_the_agent_runs_one_implicit_node() {
        let text = HEAD.replace(
            "data_dir",
            "node_address = \"127.0.1.1\"\nruntimes = [\"process\", \"docker\"]\ndata_dir",
        );
        let config = AgentConfig::parse(Path::new("a.toml"), &text).expect("valid");
        let plans = config.node_plans();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].name, IMPLICIT_NODE);
        assert_eq!(plans[0].address.to_string(), "127.0.1.1");
        assert_eq!(
            plans[0].runtimes,
            [RuntimeKind::Process, RuntimeKind::Docker]
        );
        assert_eq!(
            plans[0].docker.as_ref().map(|d| d.address.as_str()),
            Some("unix:///var/run/docker.sock")
        );
    }

    #[test]
    fn a_docker_tls_node_names_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(file), "pem").expect("write");
        }
        let d = dir.path().display();
        let config = load_nodes(
            dir.path(),
            &format!(
                r#"
[[nodes]]
name = "remote"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
docker_tls = {{ ca = "{d}/ca.pem", cert = "{d}/cert.pem", key = "{d}/key.pem" }}
capacity = {{ cpu = "4", memory = "8Gi" }}
"#
            ),
        )
        .expect("valid");
        let docker = config.node_plans()[0].docker.clone().expect("docker");
        assert_eq!(docker.ca, Some(dir.path().join("ca.pem")));
        assert_eq!(docker.cert, Some(dir.path().join("cert.pem")));
        assert_eq!(docker.key, Some(dir.path().join("key.pem")));

        let missing = load_nodes(
            dir.path(),
            &format!(
                r#"
[[nodes]]
name = "remote"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
docker_tls = {{ ca = "{d}/ca.pem", cert = "{d}/nope.pem", key = "{d}/key.pem" }}
capacity = {{ cpu = "4", memory = "8Gi" }}
"#
            ),
        )
        .expect_err("a missing file")
        .to_string();
        assert!(
            missing.contains("agent.toml: nodes[0].docker_tls.cert: cannot read ")
                && missing.contains("nope.pem"),
            "{missing}"
        );
        let partial = error(
            r#"
[[nodes]]
name = "remote"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
docker_tls = { ca = "ca.pem", cert = "cert.pem" }
"#,
        );
        assert!(partial.contains("missing field `key`"), "{partial}");
    }

    #[test]
    fn bad_nodes_are_errors_naming_the_key() {
        let cases = [
            (
                "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\n[[nodes]]\nname = \"a\"\naddress = \"127.0.0.42\"\nprocess = true\n",
                "a.toml: nodes[1].name: \"a\" is listed twice",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\n",
                "a.toml: nodes[0]: node \"a\" offers no runtime",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\n[[nodes]]\nname = \"b\"\naddress = \"127.0.0.41\"\nprocess = true\n",
                "a.toml: nodes[1].address: 127.0.0.41 is also node \"a\"'s",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\ncapacity = { memory = \"lots\" }\n",
                "a.toml: nodes[0].capacity.memory: ",
            ),
            (
                "[[nodes]]\nname = \"r\"\naddress = \"10.0.0.9\"\ndocker = \"tcp://10.0.0.9:2376\"\n",
                "a.toml: nodes[0].capacity: a node with a remote docker engine needs cpu and memory",
            ),
            (
                "[[nodes]]\nname = \"r\"\naddress = \"10.0.0.9\"\ndocker = \"10.0.0.9:2376\"\ncapacity = { cpu = \"1\", memory = \"1Gi\" }\n",
                "a.toml: nodes[0].docker: must be unix:///path or tcp://host:port",
            ),
            (
                "[[nodes]]\nname = \"l\"\naddress = \"127.0.0.41\"\ndocker = \"unix:///var/run/docker.sock\"\ndocker_tls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
                "a.toml: nodes[0].docker_tls: only for a tcp:// engine",
            ),
            (
                "[[nodes]]\nname = \"l\"\naddress = \"127.0.0.41\"\nprocess = true\ndocker_tls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
                "a.toml: nodes[0].docker_tls: set docker = ",
            ),
            (
                "[[nodes]]\nname = \"Node_A\"\naddress = \"127.0.0.41\"\nprocess = true\n",
                "a.toml: nodes[0].name: must be a DNS label",
            ),
            (
                "[capacity]\ncpu = \"2\"\n[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\n",
                "a.toml: capacity: set it per node in [[nodes]]",
            ),
            (
                "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\nruntime = \"process\"\n",
                "unknown field `runtime`",
            ),
        ];
        for (nodes, expected) in cases {
            let err = error(nodes);
            assert!(
                err.contains(expected),
                "{nodes}\n=> {err}\nexpected {expected}"
            );
        }
    }

    #[test]
    fn node_address_is_required_without_nodes() {
        let err = AgentConfig::parse(Path::new("a.toml"), HEAD).expect_err("no address");
        assert!(
            err.to_string()
                .starts_with("a.toml: node_address: required"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
node_address = "127.0.1.1"
data_dir = "/tmp/agent"
regoin = "eu"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;
        let err = AgentConfig::parse(Path::new("a.toml"), text).expect_err("typo");
        assert!(err.to_string().contains("regoin"), "{err}");
    }
}
