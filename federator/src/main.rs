//! `federator`: a Hansa control-plane node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hansa_federator::config::Config;
use hansa_federator::security::TlsMaterial;
use hansa_federator::store::{Store, StoreConfig};
use hansa_federator::telemetry::{init_logging, LogFormat};
use hansa_federator::Federator;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Join the control plane of the federator whose API is at ADDR (overrides `join`,
    /// `bootstrap` and `peers` in the configuration).
    #[arg(long, value_name = "ADDR")]
    join: Option<String>,
    /// Start a new one-member control plane from a backup made by `hansa snapshot save`, in
    /// an empty data directory; add the other federators with `--join` afterwards.
    #[arg(long, value_name = "FILE", conflicts_with = "join")]
    restore: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    // With transparent huge pages on "always", mimalloc's freed pages are purged and faulted
    // back in as 2 MiB huge pages, each zeroed whole: under a stream of small applies that
    // cost about 5% more CPU and half again the p99 latency. Databases ask for THP off for
    // this reason; the flag covers only this process.
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "could not turn transparent huge pages off");
    }
    let mut config = Config::load(&args.config).context("invalid configuration")?;
    if let Some(join) = args.join {
        config.join = Some(join);
        config.peers.clear();
    }
    if let Some(backup) = &args.restore {
        if !config.peers.is_empty() || config.join.is_some() {
            anyhow::bail!(
                "--restore starts a one-member control plane: remove `peers` and `join` from {}",
                args.config.display()
            );
        }
        let bytes = std::fs::read(backup).with_context(|| format!("read {}", backup.display()))?;
        let index = Store::restore(&config.data_dir, &bytes)
            .await
            .with_context(|| format!("restore {}", backup.display()))?;
        info!(backup = %backup.display(), index, "restored the federation state");
        config.bootstrap = true;
        // Before serving anything: make the restored state a snapshot and drop the log it
        // covers, so federators that join later receive it.
        if config.peer_listen.port() == 0 && config.peer_advertise.is_none() {
            anyhow::bail!("--restore needs a fixed peer_listen port (or peer_advertise)");
        }
        let tls = TlsMaterial::load(&config.tls).context("load the federator's certificates")?;
        let mut store_config = StoreConfig::new(
            config.node_id,
            config.data_dir.clone(),
            config.peer_url(config.peer_listen),
            true,
            tls.client_config(),
        );
        // Keep no log behind the snapshot: joining members must start from it.
        store_config.max_in_snapshot_log_to_keep = 0;
        let store = Store::open(store_config)
            .await
            .context("open the restored store")?;
        let snapshot = store
            .compact()
            .await
            .context("snapshot the restored state")?;
        store.shutdown().await.context("close the restored store")?;
        info!(snapshot, "the restored state is a snapshot now");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(hansa_federator::telemetry::shutdown_on_signals(
        shutdown.clone(),
    ));
    let federator = Federator::start(config, shutdown.clone())
        .await
        .context("federator failed")?;
    federator.wait(shutdown).await.context("federator failed")
}
