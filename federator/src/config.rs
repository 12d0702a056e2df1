//! The federator's configuration file (TOML, strict: unknown keys are errors).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::security::TlsFiles;

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
        key: &'static str,
        message: String,
    },
}

/// Which store the federator runs on (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A Raft control plane of 1, 3 or 5 federators.
    #[default]
    Hub,
    /// Federator peers, one per member cluster, that gossip and reconcile placement with no
    /// master (see `[peer]`).
    Peer,
}

/// Peer mode's settings (`[peer]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerModeConfig {
    /// The member cluster this peer runs next to; its agent connects here.
    pub cluster: String,
    /// The UDP address gossip (SWIM membership and record updates) binds.
    pub gossip_listen: SocketAddr,
    /// How other peers reach `gossip_listen`, when not the bound address.
    #[serde(default)]
    pub gossip_advertise: Option<SocketAddr>,
    /// The federation's gossip key: a file holding 32 bytes as base64 or hex (make one with
    /// `openssl rand -base64 32`). Every datagram is sealed with it.
    pub gossip_key_file: PathBuf,
    /// Gossip addresses of peers to join (`host:port`); retried while no peer is known.
    #[serde(default)]
    pub join: Vec<String>,
    /// A DNS SRV name listing peers' gossip addresses (e.g. `_hansa-gossip._udp.example.org`),
    /// looked up at start and whenever this peer knows no other.
    #[serde(default)]
    pub join_srv: Option<String>,
    /// How long a suspect peer has to refute before it is declared dead.
    #[serde(default = "default_suspicion_ms")]
    pub suspicion_timeout_ms: u64,
    /// How often a peer probes another.
    #[serde(default = "default_probe_period_ms")]
    pub probe_period_ms: u64,
    /// How often this peer pulls what it misses from another (anti-entropy).
    #[serde(default = "default_anti_entropy_ms")]
    pub anti_entropy_interval_ms: u64,
    /// How often this peer swaps its whole member table with a random peer, repairing joins
    /// that gossip missed.
    #[serde(default = "default_member_sync_ms")]
    pub member_sync_interval_ms: u64,
}

fn default_suspicion_ms() -> u64 {
    2000
}
fn default_probe_period_ms() -> u64 {
    800
}
fn default_anti_entropy_ms() -> u64 {
    1000
}
fn default_member_sync_ms() -> u64 {
    10_000
}

/// `[raft]`: the control plane's timing (hub mode). The defaults suit one data center; a
/// control plane spread over distant sites wants longer timeouts, as etcd's tuning guide says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTiming {
    /// How often the leader sends heartbeats (also the timeout of one replication call).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for the leader lease (`election_timeout_max_ms`) plus
    /// a random time between these two stands for election.
    #[serde(default = "default_election_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_max_ms")]
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_min_ms: default_election_min_ms(),
            election_timeout_max_ms: default_election_max_ms(),
        }
    }
}

fn default_heartbeat_ms() -> u64 {
    ms(crate::store::StoreConfig::default_heartbeat_interval())
}
fn default_election_min_ms() -> u64 {
    ms(crate::store::StoreConfig::default_election_timeout_min())
}
fn default_election_max_ms() -> u64 {
    ms(crate::store::StoreConfig::default_election_timeout_max())
}
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This federator's name; must match the name in its certificate.
    pub name: String,
    /// Raft node id, unique in the control plane.
    #[serde(default = "default_node_id")]
    pub node_id: u64,
    #[serde(default)]
    pub mode: Mode,
    /// The API and agent address (mutual TLS gRPC).
    pub listen: SocketAddr,
    /// How other federators reach `listen`, e.g. `https://10.0.0.1:7070` (`hansa logs` for an
    /// agent streaming to this federator, peer mode's address record). Defaults to it.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The Raft peer address.
    pub peer_listen: SocketAddr,
    /// How other federators reach `peer_listen`, e.g. `https://10.0.0.1:7001`. Defaults to it.
    #[serde(default)]
    pub peer_advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Initialise a new one-member control plane when the data dir holds none.
    #[serde(default = "default_true")]
    pub bootstrap: bool,
    pub tls: TlsFiles,
    /// A cluster whose agent has not been heard from for this long becomes Unreachable and
    /// its replicas are placed elsewhere.
    #[serde(default = "default_cluster_grace_seconds")]
    pub cluster_grace_seconds: u64,
    /// The voters of a new multi-node control plane, the same list on every member (this one
    /// included). Empty: a one-member control plane (with `bootstrap`).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// The API address of a running federator that adds this one to its control plane
    /// (as a learner, then a voter). Overrides `bootstrap` and `peers`.
    #[serde(default)]
    pub join: Option<String>,
    /// Cross-cluster DNS (DESIGN.md §7); served when the section is present.
    #[serde(default)]
    pub dns: Option<crate::dns::DnsConfig>,
    /// Plain HTTP for `/metrics` and `/healthz`; off when absent.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Peer mode's settings; required with `mode = "peer"`.
    #[serde(default)]
    pub peer: Option<PeerModeConfig>,
    /// Raft timing.
    #[serde(default)]
    pub raft: RaftTiming,
}

/// One voter of a new control plane.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u64,
    /// Its Raft peer URL, `https://host:port`.
    pub url: String,
}

fn default_node_id() -> u64 {
    1
}
fn default_true() -> bool {
    true
}
fn default_cluster_grace_seconds() -> u64 {
    15
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The `[dns]` section in force: a peer's DNS server is in the peer's own cluster unless
    /// `[dns] cluster` says otherwise.
    pub fn dns(&self) -> Option<crate::dns::DnsConfig> {
        let mut dns = self.dns.clone()?;
        if let (None, Some(peer)) = (&dns.cluster, &self.peer) {
            dns.cluster = Some(peer.cluster.clone());
        }
        Some(dns)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if !hansa_core::is_dns_label(&self.name) {
            return Err(invalid(
                "name",
                format!("must be a DNS label (got {:?})", self.name),
            ));
        }
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be >= 1 (got 0)".into()));
        }
        if let Some(Err((key, message))) = self.dns.as_ref().map(|d| d.validate()) {
            return Err(invalid(key, message));
        }
        if !self.peers.is_empty() {
            let mut ids = std::collections::BTreeSet::new();
            for peer in &self.peers {
                if !ids.insert(peer.id) || peer.id == 0 {
                    return Err(invalid(
                        "peers",
                        format!("ids must be unique and >= 1 (got {} twice or 0)", peer.id),
                    ));
                }
                if !peer.url.starts_with("https://") {
                    return Err(invalid(
                        "peers",
                        format!(
                            "url must be https:// (peer links are mutual TLS; got {:?})",
                            peer.url
                        ),
                    ));
                }
            }
            if !ids.contains(&self.node_id) {
                return Err(invalid(
                    "peers",
                    format!("must include this federator's node_id {}", self.node_id),
                ));
            }
        }
        let raft = &self.raft;
        if raft.heartbeat_ms < 10 {
            return Err(invalid(
                "raft.heartbeat_ms",
                format!("must be >= 10 (got {})", raft.heartbeat_ms),
            ));
        }
        if raft.election_timeout_min_ms <= raft.heartbeat_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                format!(
                    "must be greater than raft.heartbeat_ms ({}), or every pause between \
                     heartbeats starts an election (got {})",
                    raft.heartbeat_ms, raft.election_timeout_min_ms
                ),
            ));
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                format!(
                    "must be greater than raft.election_timeout_min_ms ({}) (got {})",
                    raft.election_timeout_min_ms, raft.election_timeout_max_ms
                ),
            ));
        }
        if self.join.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("join", "must be a federator API address".into()));
        }
        match (self.mode, &self.peer) {
            (Mode::Peer, None) => return Err(invalid(
                "peer",
                "mode = \"peer\" needs a [peer] section (cluster, gossip_listen, gossip_key_file)"
                    .into(),
            )),
            (Mode::Hub, Some(_)) => {
                return Err(invalid(
                    "peer",
                    "a [peer] section needs mode = \"peer\"".into(),
                ))
            }
            (Mode::Peer, Some(peer)) => {
                if !hansa_core::is_dns_label(&peer.cluster) {
                    return Err(invalid(
                        "peer.cluster",
                        format!("must be a DNS label (got {:?})", peer.cluster),
                    ));
                }
                if !self.peers.is_empty() || self.join.is_some() {
                    return Err(invalid(
                        "peers",
                        "a peer-mode federator runs its own store; `peers` and `join` are for hub mode \
                         (peers find each other with [peer] join or join_srv)"
                            .into(),
                    ));
                }
                if peer.suspicion_timeout_ms == 0
                    || peer.probe_period_ms < 10
                    || peer.anti_entropy_interval_ms == 0
                    || peer.member_sync_interval_ms == 0
                {
                    return Err(invalid(
                        "peer",
                        "suspicion_timeout_ms, anti_entropy_interval_ms and member_sync_interval_ms \
                         must be >= 1, probe_period_ms >= 10"
                            .into(),
                    ));
                }
                if let Some(bad) = peer.join.iter().find(|j| !j.contains(':')) {
                    return Err(invalid("peer.join", format!("{bad:?} is not host:port")));
                }
            }
            (Mode::Hub, None) => {}
        }
        if self.cluster_grace_seconds == 0 {
            return Err(invalid(
                "cluster_grace_seconds",
                "must be >= 1 (got 0)".into(),
            ));
        }
        Ok(())
    }

    pub fn api_url(&self, bound: SocketAddr) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| format!("https://{bound}"))
    }

    pub fn peer_url(&self, bound: SocketAddr) -> String {
        self.peer_advertise
            .clone()
            .unwrap_or_else(|| format!("https://{bound}"))
    }

    pub fn cluster_grace(&self) -> Duration {
        Duration::from_secs(self.cluster_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/federator.toml"
        ));
        let config = Config::load(path).expect("deploy/federator.toml");
        assert_eq!(config.name, "fed-1");
        let bound: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert_eq!(config.api_url(bound), "https://10.0.0.1:7070");
        let unset = Config {
            advertise: None,
            ..config.clone()
        };
        assert_eq!(unset.api_url(bound), "https://0.0.0.0:7070");
        let dns = config
            .dns
            .expect("deploy/federator.toml has a [dns] section");
        assert_eq!(dns.zone, "hansa.internal.");
        assert_eq!(dns.cluster.as_deref(), Some("eu-1"));
        assert!(config.http_listen.is_some());
    }

    #[test]
    fn peer_timings_have_defaults_and_zero_is_refused_by_name() {
        let text = |extra: &str| {
            format!(
                r#"
name = "fed-1"
mode = "peer"
listen = "127.0.0.1:7070"
peer_listen = "127.0.0.1:7071"
data_dir = "/tmp/x"
[peer]
cluster = "eu-1"
gossip_listen = "127.0.0.1:7946"
gossip_key_file = "gossip.key"
{extra}
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#
            )
        };
        let config = Config::parse(Path::new("f.toml"), &text("")).expect("peer config");
        let peer = config.peer.expect("[peer]");
        assert_eq!(
            (
                peer.suspicion_timeout_ms,
                peer.probe_period_ms,
                peer.anti_entropy_interval_ms,
                peer.member_sync_interval_ms
            ),
            (2000, 800, 1000, 10_000)
        );
        let err = Config::parse(Path::new("f.toml"), &text("member_sync_interval_ms = 0"))
            .expect_err("a zero interval");
        assert!(err.to_string().contains("member_sync_interval_ms"), "{err}");
    }

    #[test]
    fn a_peers_dns_server_is_in_the_peers_cluster_unless_told_otherwise() {
        let text = |dns: &str| {
            format!(
                "name = \"fed-1\"\nmode = \"peer\"\nlisten = \"127.0.0.1:7070\"\n\
                 peer_listen = \"127.0.0.1:7071\"\ndata_dir = \"/tmp/x\"\n\
                 [peer]\ncluster = \"eu-1\"\ngossip_listen = \"127.0.0.1:7946\"\n\
                 gossip_key_file = \"gossip.key\"\n[dns]\nlisten = \"127.0.0.1:5353\"\n{dns}\n\
                 [tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n"
            )
        };
        let cluster = |dns: &str| {
            Config::parse(Path::new("f.toml"), &text(dns))
                .expect("peer config")
                .dns()
                .expect("[dns]")
                .cluster
        };
        assert_eq!(cluster("").as_deref(), Some("eu-1"));
        assert_eq!(cluster("cluster = \"eu-2\"").as_deref(), Some("eu-2"));
    }

    #[test]
    fn raft_timing_has_defaults_and_inconsistent_timeouts_are_refused_by_name() {
        let text = |raft: &str| {
            format!(
                "name = \"fed-1\"\nlisten = \"127.0.0.1:7070\"\npeer_listen = \"127.0.0.1:7071\"\n\
                 data_dir = \"/tmp/x\"\n{raft}\n[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n"
            )
        };
        let config = Config::parse(Path::new("f.toml"), &text("")).expect("defaults");
        assert_eq!(
            config.raft,
            RaftTiming {
                heartbeat_ms: 100,
                election_timeout_min_ms: 200,
                election_timeout_max_ms: 350
            }
        );
        let wan = Config::parse(
            Path::new("f.toml"),
            &text("[raft]\nheartbeat_ms = 250\nelection_timeout_min_ms = 1500\nelection_timeout_max_ms = 3000"),
        )
        .expect("a WAN control plane");
        assert_eq!(wan.raft.election_timeout_max_ms, 3000);
        for (raft, key) in [
            ("[raft]\nheartbeat_ms = 5", "raft.heartbeat_ms: must be >= 10"),
            (
                "[raft]\nelection_timeout_min_ms = 100",
                "raft.election_timeout_min_ms: must be greater than raft.heartbeat_ms (100)",
            ),
            (
                "[raft]\nelection_timeout_max_ms = 200",
                "raft.election_timeout_max_ms: must be greater than raft.election_timeout_min_ms (200)",
            ),
        ] {
            let err = Config::parse(Path::new("f.toml"), &text(raft)).expect_err(raft);
            assert!(err.to_string().starts_with(&format!("f.toml: {key}")), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = r#"
name = "fed-1"
listen = "127.0.0.1:7070"
peer_listen = "127.0.0.1:7071"
data_dir = "/tmp/x"
colour = "blue"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;
        let err = Config::parse(Path::new("f.toml"), text).expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(err.to_string().starts_with("f.toml: "), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let text = r#"
name = "Fed_1"
listen = "127.0.0.1:7070"
peer_listen = "127.0.0.1:7071"
data_dir = "/tmp/x"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;
        let err = Config::parse(Path::new("f.toml"), text).expect_err("bad name");
        assert_eq!(
            err.to_string(),
            "f.toml: name: must be a DNS label (got \"Fed_1\")"
        );
    }
}
