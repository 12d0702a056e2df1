//! `hansa dev`: a whole federation on one machine — one hub federator, three member clusters
//! with their own loopback addresses and regions, an ephemeral CA — as `nomad agent -dev` does.

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
}

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

    let federator_config = Config {
        name: "dev".into(),
        node_id: 1,
        mode: Mode::Hub,
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), options.port),
        peer_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
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
        dns: Some(hansa_federator::dns::DnsConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), options.dns_port),
            ..Default::default()
        }),
        http_listen: None,
        peer: None,
    };
    let federator = Federator::start(federator_config, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "start the federator on 127.0.0.1:{} (use --port to pick another)",
                options.port
            )
        })?;
    let api = federator.api_addr.to_string();
    let dns = federator
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
    for c in &CLUSTERS {
        let config = AgentConfig {
            cluster: c.name.into(),
            region: c.region.into(),
            zone: c.zone.into(),
            provider: "dev".into(),
            labels: [("environment".to_string(), "dev".to_string())].into(),
            taints: Vec::new(),
            federators: vec![api.clone()],
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
            tls: issue(Role::Cluster, c.name, &[])?,
        };
        let agent = Agent::start(config, shutdown.clone())
            .await
            .with_context(|| format!("start the agent of cluster {}", c.name))?;
        agents.push(agent);
    }

    let user = issue(Role::User, "admin", &[])?;
    let context_path = write_context(&api, &user)?;

    println!();
    println!("Hansa dev federation is up (hub mode, trust domain {TRUST_DOMAIN}).");
    println!(
        "  API:       https://{api}  (mutual TLS; ephemeral CA in {})",
        pki.display()
    );
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
    println!("  hansa dns query web.default.svc.hansa.internal --server {dns}");
    println!();
    println!("Ctrl-C stops the federation and every replica it started.");

    if !options.apply.is_empty() {
        let files = options.apply.clone();
        let context = Context {
            federators: vec![api.clone()],
            ca: user.ca.clone(),
            cert: user.cert.clone(),
            key: user.key.clone(),
        };
        wait_for_clusters(&federator, CLUSTERS.len(), Duration::from_secs(10)).await;
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
    federator.wait(shutdown).await?;
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
fn write_context(api: &str, user: &TlsFiles) -> anyhow::Result<PathBuf> {
    let path = context::config_path()?;
    let dir = context::config_dir()?.join(CONTEXT);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
        let to = dir.join(name);
        std::fs::copy(from, &to).with_context(|| format!("write {}", to.display()))?;
        Ok(to)
    };
    let context = Context {
        federators: vec![api.to_string()],
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
