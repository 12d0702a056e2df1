//! `federator`: a Hansa control-plane node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hansa_federator::config::Config;
use hansa_federator::telemetry::{init_logging, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "federator",
    version,
    about = "A Hansa federator (control-plane node)"
)]
struct Args {
    /// The configuration file (TOML; see deploy/federator.toml).
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = Config::load(&args.config).context("invalid configuration")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(hansa_federator::telemetry::shutdown_on_signals(
        shutdown.clone(),
    ));
    hansa_federator::run(config, shutdown)
        .await
        .context("federator failed")
}
