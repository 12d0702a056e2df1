//! `hansa`: the command-line client of a Hansa federation, and `hansa dev`.

mod certs;
mod client;
mod commands;
mod context;
mod dev;
mod dns;
mod federators;
mod logs;
mod output;
mod rollout;
mod snapshot;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hansa_federator::telemetry::{init_logging, LogFormat};

use crate::commands::Kind;
use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "hansa",
    version,
    about = "Hansa: one control layer for many container clusters"
)]
struct Cli {
    /// The CLI context to use (default: the current one in the CLI configuration).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Talk to this federator instead of the context's (with --ca, --cert and --key).
    #[arg(long, global = true, requires_all = ["ca", "cert", "key"])]
    federator: Vec<String>,
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update workloads from manifest files (native, Kubernetes, Marathon).
    Apply {
        /// A file, a directory, or - for standard input; may be repeated.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Validate and show the placement that would be made; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// List workloads, clusters or placements.
    Get {
        kind: Kind,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Answer from the federator's own applied state, without asking the leader whether
        /// it is current (works without a quorum).
        #[arg(long)]
        stale: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// A workload's placement, explanation, replicas and endpoints.
    Describe {
        /// Only `workload` for now.
        kind: DescribeKind,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Answer from the federator's own applied state (see `get --stale`).
        #[arg(long)]
        stale: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Why a workload runs where it runs: every cluster, filtered (the rule and the values
    /// involved) or chosen (weight, fit, replicas), and the policy that applied.
    Explain {
        /// Only `workload` for now.
        kind: DescribeKind,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Delete a workload (its replicas are stopped in every cluster) or a policy (the workloads
    /// it governed are placed again without it).
    Delete {
        kind: commands::DeleteKind,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Place nothing new on a cluster; what runs there stays.
    Cordon { cluster: String },
    /// Let a cordoned cluster take new replicas again.
    Uncordon { cluster: String },
    /// Add taints to a cluster (`key=value:Effect`, `key:Effect`) or remove them with a
    /// trailing `-` (`key-`, `key:Effect-`), as `kubectl taint` does.
    Taint {
        cluster: String,
        #[arg(required = true)]
        taints: Vec<String>,
    },
    /// A replica's output (stdout and stderr), from its cluster's agent.
    Logs(logs::LogsArgs),
    /// A workload's rollout across clusters: status, history, undo, pause, resume.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// Who the federator is and who you are to it.
    Info {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// The control plane's federators (Raft members): list, add, remove.
    Federators {
        #[command(subcommand)]
        command: FederatorsCommand,
    },
    /// Backups of the whole federation state.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// The federation CA and certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Start a whole federation on this machine: a federator and three member clusters.
    Dev {
        /// The API port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 7070)]
        port: u16,
        /// Keep state here instead of an ephemeral directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Apply these manifests once the clusters have joined.
        #[arg(long)]
        apply: Vec<PathBuf>,
        /// The DNS port on 127.0.0.1, UDP and TCP (0: any free port).
        #[arg(long, default_value_t = 8600)]
        dns_port: u16,
        /// Peer mode: a federator peer beside each cluster, gossiping, with no master.
        #[arg(long)]
        peer: bool,
    },
    /// Ask a Hansa DNS server (or any DNS server) a question.
    Dns {
        #[command(subcommand)]
        command: dns::DnsCommand,
    },
    /// The demo HTTP server that `hansa-demo-http` workloads run (used by the agents).
    #[command(hide = true)]
    DemoHttp(hansa_agent::demo::DemoArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DescribeKind {
    #[value(alias = "workloads", alias = "wl")]
    Workload,
}

#[derive(Subcommand)]
enum FederatorsCommand {
    /// Every member with its role, term, last applied log index and lag behind the leader.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Add a federator (started with `bootstrap = false`): as a learner until it has caught
    /// up, then as a voter.
    Add {
        /// Its node_id.
        id: u64,
        /// Its Raft peer URL, https://host:port.
        address: String,
        /// Keep it a learner (a non-voting replica).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a federator from the control plane.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save the whole federation state (read linearizably) to FILE; `federator --restore FILE`
    /// starts a new control plane from it.
    Save { file: PathBuf },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the federation CA in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "hansa.internal")]
        trust_domain: String,
    },
    /// Issue a certificate for a federator, cluster or user, signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// federator | cluster | user
        role: String,
        name: String,
        /// DNS names or IP addresses a federator is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev {
            port,
            data_dir,
            apply,
            dns_port,
            peer,
        } => {
            init_logging(cli.log_format);
            return dev::run(dev::DevOptions {
                port,
                data_dir,
                apply,
                dns_port,
                peer,
            })
            .await;
        }
        Command::DemoHttp(args) => return hansa_agent::demo::run_demo_http(args).await,
        Command::Dns { command } => return dns::run(command).await,
        Command::Certs { command } => {
            return match command {
                CertsCommand::Init { dir, trust_domain } => certs::init(&dir, &trust_domain),
                CertsCommand::Issue {
                    dir,
                    role,
                    name,
                    hosts,
                } => certs::issue(&dir, &role, &name, &hosts),
            };
        }
        _ => {}
    }
    let context = if cli.federator.is_empty() {
        let path = context::config_path()?;
        context::ConfigFile::load(&path)?.resolve(cli.context.as_deref(), &path)?
    } else {
        context::Context {
            federators: cli.federator.clone(),
            ca: cli
                .ca
                .clone()
                .context("--ca is required with --federator")?,
            cert: cli
                .cert
                .clone()
                .context("--cert is required with --federator")?,
            key: cli
                .key
                .clone()
                .context("--key is required with --federator")?,
        }
    };
    // Every command may be repeated; `Failover` decides when another federator should try.
    let mut failover = client::Failover::new(&context)?;
    loop {
        let channel = failover.connect().await?;
        match dispatch(channel, &cli.command).await {
            Err(e) if failover.retry(&e).await => continue,
            outcome => return outcome,
        }
    }
}

async fn dispatch(channel: tonic::transport::Channel, command: &Command) -> anyhow::Result<()> {
    let mut client = client::Client::new(channel.clone());
    match command {
        Command::Apply {
            files,
            dry_run,
            output,
        } => commands::apply(&mut client, files, *dry_run, *output).await,
        Command::Get {
            kind,
            name,
            namespace,
            stale,
            output,
        } => {
            let (name, namespace) = (name.clone(), namespace.clone());
            commands::get(&mut client, *kind, name, namespace, *stale, *output).await
        }
        Command::Describe {
            name,
            namespace,
            stale,
            output,
            ..
        } => {
            let (name, namespace) = (name.clone(), namespace.clone());
            commands::describe(&mut client, name, namespace, *stale, *output).await
        }
        Command::Explain {
            name,
            namespace,
            output,
            ..
        } => commands::explain(&mut client, name.clone(), namespace.clone(), *output).await,
        Command::Delete {
            kind,
            name,
            namespace,
        } => commands::delete(&mut client, *kind, name.clone(), namespace.clone()).await,
        Command::Cordon { cluster } => {
            commands::update_cluster(&mut client, cluster.clone(), Some(true), &[]).await
        }
        Command::Uncordon { cluster } => {
            commands::update_cluster(&mut client, cluster.clone(), Some(false), &[]).await
        }
        Command::Taint { cluster, taints } => {
            commands::update_cluster(&mut client, cluster.clone(), None, taints).await
        }
        Command::Info { output } => commands::info(&mut client, *output).await,
        Command::Logs(args) => logs::logs(channel, args).await,
        Command::Rollout { command } => rollout::run(&mut client, command).await,
        Command::Federators { command } => match command {
            FederatorsCommand::List { output } => federators::list(channel, *output).await,
            FederatorsCommand::Add {
                id,
                address,
                learner,
            } => federators::add(channel, *id, address, *learner).await,
            FederatorsCommand::Remove { id } => federators::remove(channel, *id).await,
        },
        Command::Snapshot { command } => match command {
            SnapshotCommand::Save { file } => snapshot::save(channel, file).await,
        },
        Command::Dev { .. }
        | Command::DemoHttp(_)
        | Command::Certs { .. }
        | Command::Dns { .. } => Ok(()),
    }
}
