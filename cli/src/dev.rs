//! `hansa dev`: a whole federation on one machine — one hub federator, three member clusters
//! with their own loopback addresses and regions, an ephemeral CA — as `nomad agent -dev` does.
//! With `--peer`, the same clusters in peer mode: a federator peer beside each cluster, on the
//! cluster's own address, gossiping with the others and no master.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hansa_agent::config::{AgentConfig, CapacityConfig};
use hansa_agent::Agent;
use hansa_federator::config::{Config, Mode};
use hansa_federator::security::{certs, Authority, Role, TlsFiles};
use hansa_federator::Federator;
use tokio_util::sync::CancellationToken;

use crate::context::{self, ConfigFile, Context};

pub const TRUST_DOMAIN: &str = "dev.hansa.internal";
const CONTEXT: &str = "dev";

struct DevCluster {
    name: &'static str,
    region: &'static str,
    zone: &'static str,
    address: Ipv4Addr,
    cpu: &'static str,
    memory: &'static str,
}

const CLUSTERS: [DevCluster; 3] = [
    DevCluster {
        name: "eu-1",
        region: "eu",
        zone: "eu-1a",
        address: Ipv4Addr::new(127, 0, 1, 1),
        cpu: "4",
        memory: "8Gi",
    },
    DevCluster {
        name: "us-1",
        region: "us",
        zone: "us-1a",
        address: Ipv4Addr::new(127, 0, 2, 1),
        cpu: "4",
        memory: "8Gi",
    },
    DevCluster {
        name: "ap-1",
        region: "ap",
        zone: "ap-1a",
        address: Ipv4Addr::new(127, 0, 3, 1),
        cpu: "2",
        memory: "4Gi",
    },
];

pub struct DevOptions {
    pub port: u16,
    pub data_dir: Option<PathBuf>,
    pub apply: Vec<PathBuf>,
    /// The DNS port on 127.0.0.1, UDP and TCP (0: any free port).
    pub dns_port: u16,
    /// Peer mode: a federator peer per cluster instead of one hub.
    pub peer: bool,
}

/// Issues a certificate from the dev CA: role, name, hosts.
type Issue<'a> = dyn Fn(Role, &str, &[String]) -> anyhow::Result<TlsFiles> + 'a;

/// The federators `hansa dev` runs: one hub, or one peer per cluster.
fn federator_configs(
    options: &DevOptions,
    data_dir: &Path,
    issue: &Issue<'_>,
) -> anyhow::Result<Vec<Config>> {
    let loopback = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let dns = Some(hansa_federator::dns::DnsConfig {
        listen: loopback(options.dns_port),
        ..Default::default()
    });
    if !options.peer {
        return Ok(vec![Config {
            name: "dev".into(),
            node_id: 1,
            mode: Mode::Hub,
            listen: loopback(options.port),
            peer_listen: loopback(0),
            advertise: None,
            raft: Default::default(),
            peer_advertise: None,
            data_dir: data_dir.join("federator"),
            bootstrap: true,
            tls: issue(
                Role::Federator,
                "dev",
                &["localhost".into(), "127.0.0.1".into()],
            )?,
            cluster_grace_seconds: 15,
            peers: Vec::new(),
            join: None,
            dns,
            http_listen: None,
            peer: None,
        }]);
    }
    let key_file = data_dir.join("gossip.key");
    std::fs::write(&key_file, hansa_gossip::GossipKey::generate().to_base64())
        .with_context(|| format!("write {}", key_file.display()))?;
    let first_gossip = SocketAddr::new(IpAddr::V4(CLUSTERS[0].address), GOSSIP_PORT);
    CLUSTERS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ip = IpAddr::V4(c.address);
            let name = format!("peer-{}", c.name);
            Ok(Config {
                name: name.clone(),
                node_id: 1,
                mode: Mode::Peer,
                listen: SocketAddr::new(ip, options.port),
                peer_listen: SocketAddr::new(ip, 0),
                advertise: None,
                raft: Default::default(),
                peer_advertise: None,
                data_dir: data_dir.join("peers").join(&name),
                bootstrap: true,
                tls: issue(
                    Role::Federator,
                    &name,
                    &["localhost".into(), ip.to_string()],
                )?,
                cluster_grace_seconds: 15,
                peers: Vec::new(),
                join: None,
                // One DNS server is enough on one machine; every peer could serve one.
                dns: if i == 0 { dns.clone() } else { None },
                http_listen: None,
                peer: Some(hansa_federator::config::PeerModeConfig {
                    cluster: c.name.into(),
                    gossip_listen: SocketAddr::new(ip, GOSSIP_PORT),
                    gossip_advertise: None,
                    gossip_key_file: key_file.clone(),
                    join: if i == 0 {
                        Vec::new()
                    } else {
                        vec![first_gossip.to_string()]
                    },
                    join_srv: None,
                    suspicion_timeout_ms: 2000,
                    probe_period_ms: 800,
                    anti_entropy_interval_ms: 1000,
                    member_sync_interval_ms: 10_000,
                }),
            })
        })
        .collect()
}

/// The gossip port of `hansa dev --peer`'s peers, each on its cluster's own address.
const GOSSIP_PORT: u16 = 7946;

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    // An explicit data dir is kept; the default one is ephemeral, like the CA.
    let (data_dir, _ephemeral) = match &options.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("hansa-dev-")
                .tempdir()
                .context("create a temporary data directory")?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let pki = data_dir.join("pki");
    let ca = Authority::generate(TRUST_DOMAIN)?;
    ca.write(&pki)?;
    let issue = |role: Role, name: &str, hosts: &[String]| -> anyhow::Result<TlsFiles> {
        let issued = ca.issue(role, name, hosts)?;
        let (cert, key) = certs::write_leaf(&pki, role, name, &issued)?;
        Ok(TlsFiles {
            ca: pki.join("ca.crt"),
            cert,
            key,
        })
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(hansa_federator::telemetry::shutdown_on_signals(
        shutdown.clone(),
    ));

    let mut federators = Vec::new();
    for config in federator_configs(&options, &data_dir, &issue)? {
        let listen = config.listen;
        let federator = Federator::start(config, shutdown.clone())
            .await
            .with_context(|| {
                format!("start the federator on {listen} (use --port to pick another)")
            })?;
        federators.push(federator);
    }
    let apis: Vec<String> = federators.iter().map(|f| f.api_addr.to_string()).collect();
    let dns = federators[0]
        .dns_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());

    // Docker when an engine answers, so image workloads run too; the process runtime always.
    let docker = hansa_agent::runtime::docker::DockerEndpoint::local();
    let runtimes = match docker.connect().await {
        Ok(_) => {
            println!(
                "Runtimes: process and docker (engine at {})",
                docker.address
            );
            vec![
                hansa_core::RuntimeKind::Process,
                hansa_core::RuntimeKind::Docker,
            ]
        }
        Err(e) => {
            println!("Runtimes: process only ({e}); image workloads stay Pending");
            vec![hansa_core::RuntimeKind::Process]
        }
    };
    let mut agents = Vec::new();
    for (i, c) in CLUSTERS.iter().enumerate() {
        // In peer mode each agent connects to the peer beside its cluster.
        let own = if options.peer { &apis[i] } else { &apis[0] };
        let config = AgentConfig {
            cluster: c.name.into(),
            region: c.region.into(),
            zone: c.zone.into(),
            provider: "dev".into(),
            labels: [("environment".to_string(), "dev".to_string())].into(),
            taints: Vec::new(),
            federators: vec![own.clone()],
            node_address: Some(IpAddr::V4(c.address)),
            addresses: vec![format!(
                "{}/24",
                Ipv4Addr::from(u32::from(c.address) & 0xffff_ff00)
            )],
            data_dir: data_dir.join("clusters").join(c.name),
            runtimes: runtimes.clone(),
            docker: None,
            nodes: Vec::new(),
            capacity: CapacityConfig {
                cpu: Some(c.cpu.into()),
                memory: Some(c.memory.into()),
                disk: Some("20Gi".into()),
            },
            heartbeat_ms: 1000,
            stop_grace_seconds: 5,
            replace_unreachable_seconds: 60,
            tls: issue(Role::Cluster, c.name, &[])?,
        };
        let agent = Agent::start(config, shutdown.clone())
            .await
            .with_context(|| format!("start the agent of cluster {}", c.name))?;
        agents.push(agent);
    }

    let user = issue(Role::User, "admin", &[])?;
    let context_path = write_context(&apis, &user)?;

    println!();
    println!(
        "Hansa dev federation is up ({} mode, trust domain {TRUST_DOMAIN}).",
        if options.peer { "peer" } else { "hub" }
    );
    for (api, federator) in apis.iter().zip(&federators) {
        let who = match &federator.peer {
            Some(peer) => format!(" (peer {} beside {})", peer.name(), peer.cluster()),
            None => String::new(),
        };
        println!(
            "  API:       https://{api}{who}  (mutual TLS; ephemeral CA in {})",
            pki.display()
        );
    }
    println!("  DNS:       {dns}  (zone hansa.internal., UDP and TCP)");
    for c in &CLUSTERS {
        println!(
            "  cluster:   {:<5} region {:<3} node {}",
            c.name, c.region, c.address
        );
    }
    println!(
        "  data:      {}{}",
        data_dir.display(),
        if options.data_dir.is_none() {
            " (removed on exit)"
        } else {
            ""
        }
    );
    println!(
        "  CLI:       context {CONTEXT:?} written to {}",
        context_path.display()
    );
    println!();
    println!("Try, in another terminal:");
    println!("  hansa apply -f policies/examples/web.yaml");
    println!("  hansa get workloads");
    println!("  hansa describe workload web");
    if options.peer {
        println!("  hansa get peers");
    }
    println!("  hansa dns query web.default.svc.hansa.internal --server {dns}");
    println!();
    println!("Ctrl-C stops the federation and every replica it started.");

    if !options.apply.is_empty() {
        let files = options.apply.clone();
        let context = Context {
            federators: apis.clone(),
            ca: user.ca.clone(),
            cert: user.cert.clone(),
            key: user.key.clone(),
        };
        wait_for_clusters(&federators[0], CLUSTERS.len(), Duration::from_secs(10)).await;
        let mut client = crate::client::connect(&context).await?;
        if let Err(e) =
            crate::commands::apply(&mut client, &files, false, crate::output::Format::Table).await
        {
            eprintln!("error: --apply: {e:#}");
        }
    }

    shutdown.cancelled().await;
    println!("stopping replicas...");
    for agent in &agents {
        agent.scheduler().stop_all().await;
    }
    for agent in agents {
        agent.wait().await;
    }
    for federator in federators {
        federator.wait(shutdown.clone()).await?;
    }
    println!("stopped.");
    Ok(())
}

/// Waits until `count` clusters have registered, so `--apply` places onto all of them.
async fn wait_for_clusters(federator: &Federator, count: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut changes = federator.store.subscribe();
    while federator.store.read(|s| s.clusters.len()) < count {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Writes the `dev` context (and makes it current), keeping the user's other contexts.
fn write_context(apis: &[String], user: &TlsFiles) -> anyhow::Result<PathBuf> {
    let path = context::config_path()?;
    let dir = context::config_dir()?.join(CONTEXT);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
        let to = dir.join(name);
        std::fs::copy(from, &to).with_context(|| format!("write {}", to.display()))?;
        Ok(to)
    };
    let context = Context {
        federators: apis.to_vec(),
        ca: copy(&user.ca, "ca.crt")?,
        cert: copy(&user.cert, "user.crt")?,
        key: copy(&user.key, "user.key")?,
    };
    let mut file = ConfigFile::load(&path)?;
    file.contexts.insert(CONTEXT.into(), context);
    file.current_context = CONTEXT.into();
    file.save(&path)?;
    Ok(path)
}
