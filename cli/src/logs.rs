//! `hansa logs WORKLOAD`: a replica's output, relayed by the federator from its agent.

use std::io::Write;

use anyhow::Context as _;
use hansa_proto::v1::{replica_logs_client::ReplicaLogsClient, LogsRequest};
use tonic::transport::Channel;

use crate::client::status_error;

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The workload whose replica to read.
    pub workload: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Only replicas on this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// This replica (an id as `hansa describe workload` lists it); default: the first
    /// running replica.
    #[arg(long)]
    pub replica: Option<String>,
    /// Keep printing what the replica writes until it stops or Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of what was written so far.
    #[arg(long)]
    pub tail: Option<u32>,
}

pub async fn logs(channel: Channel, args: &LogsArgs) -> anyhow::Result<()> {
    let mut client = ReplicaLogsClient::new(channel);
    let request = LogsRequest {
        namespace: args.namespace.clone().unwrap_or_default(),
        workload: args.workload.clone(),
        cluster: args.cluster.clone().unwrap_or_default(),
        replica: args.replica.clone().unwrap_or_default(),
        follow: args.follow,
        tail: args.tail,
    };
    let mut stream = client
        .logs(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(message) = stream.message().await.map_err(status_error)? {
        if !message.replica.is_empty() {
            eprintln!("==> {} on cluster {} <==", message.replica, message.cluster);
        }
        stdout
            .write_all(&message.data)
            .and_then(|()| stdout.flush())
            .context("write to standard output")?;
    }
    Ok(())
}
