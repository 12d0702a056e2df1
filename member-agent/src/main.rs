//! `member-agent`: runs one member cluster's share of the federation.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hansa_agent::config::AgentConfig;
use hansa_federator::telemetry::{init_logging, shutdown_on_signals, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "member-agent", version, about = "A Hansa member agent")]
struct Args {
    /// The configuration file (TOML; see deploy/member-agent.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The demo HTTP server that `hansa-demo-http` workloads run.
    #[command(hide = true)]
    DemoHttp(hansa_agent::demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::DemoHttp(demo)) = args.command {
        return hansa_agent::demo::run_demo_http(demo).await;
    }
    init_logging(args.log_format);
    let path = args.config.context("--config is required")?;
    let config = AgentConfig::load(&path).context("invalid configuration")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signals(shutdown.clone()));
    hansa_agent::agent::run(config, shutdown)
        .await
        .context("member agent failed")
}
