//! `hansa rollout status|history|undo|pause|resume WORKLOAD`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use hansa_core::rollout::{RolloutPhase, StageStatus};
use hansa_federator::api::rollout::{ClusterProgress, RolloutView};
use hansa_proto::v1::{GetRolloutRequest, UpdateRolloutRequest};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::client::{status_error, Client};
use crate::output::{age, print, Format, Table};

/// How often `rollout status` asks again.
const POLL: Duration = Duration::from_millis(500);

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Follow a workload's rollout cluster by cluster: exits 0 when it completes, 1 when it
    /// fails, is rolled back or is paused.
    Status {
        workload: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Print where the rollout stands once, without waiting.
        #[arg(long)]
        no_watch: bool,
        /// Give up (exit 1) after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// The revisions kept, and which clusters run each.
    History {
        workload: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Roll back: a new revision with the template of an earlier one (default: the one before
    /// the latest), rolled out like any other.
    Undo {
        workload: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(long)]
        to_revision: Option<u64>,
    },
    /// Start no further cluster; the ones updating finish.
    Pause {
        workload: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Continue a paused rollout, or try a failed or rolled-back one again.
    Resume {
        workload: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

pub async fn run(client: &mut Client, command: &RolloutCommand) -> anyhow::Result<()> {
    match command {
        RolloutCommand::Status {
            workload,
            namespace,
            no_watch,
            timeout,
        } => status(client, workload, namespace, *no_watch, *timeout).await,
        RolloutCommand::History {
            workload,
            namespace,
            output,
        } => {
            let view = fetch(client, workload, namespace).await?;
            print(*output, &view.history, || history_table(&view))
        }
        RolloutCommand::Undo {
            workload,
            namespace,
            to_revision,
        } => act(client, workload, namespace, "undo", *to_revision).await,
        RolloutCommand::Pause {
            workload,
            namespace,
        } => act(client, workload, namespace, "pause", None).await,
        RolloutCommand::Resume {
            workload,
            namespace,
        } => act(client, workload, namespace, "resume", None).await,
    }
}

async fn fetch(
    client: &mut Client,
    workload: &str,
    namespace: &Option<String>,
) -> anyhow::Result<RolloutView> {
    let response = client
        .get_rollout(GetRolloutRequest {
            namespace: namespace.clone().unwrap_or_default(),
            name: workload.to_string(),
            stale: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    serde_json::from_str(&response.rollout_json).context("decode the federator's answer")
}

async fn act(
    client: &mut Client,
    workload: &str,
    namespace: &Option<String>,
    action: &str,
    to_revision: Option<u64>,
) -> anyhow::Result<()> {
    let response = client
        .update_rollout(UpdateRolloutRequest {
            namespace: namespace.clone().unwrap_or_default(),
            name: workload.to_string(),
            action: action.to_string(),
            to_revision,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let view: RolloutView =
        serde_json::from_str(&response.rollout_json).context("decode the federator's answer")?;
    println!("workload/{workload} {}", view.message);
    Ok(())
}

fn history_table(view: &RolloutView) -> String {
    let mut table = Table::new(&["REVISION", "CREATED", "RUNS", "CHANGE", "CLUSTERS", "NOTE"]);
    for h in &view.history {
        let mut notes = Vec::new();
        if h.revision == view.current {
            notes.push("current".to_string());
        } else if h.revision == view.revision {
            // Only after a rollback reverted the workload to the stable revision.
            notes.push("rolled back".to_string());
        }
        if h.revision == view.stable {
            notes.push("stable".to_string());
        }
        table.row(vec![
            h.revision.to_string(),
            if h.created_ms == 0 {
                "-".into()
            } else {
                age(h.created_ms)
            },
            h.runs.clone(),
            if h.change.is_empty() {
                "-".into()
            } else {
                h.change.clone()
            },
            if h.clusters.is_empty() {
                "-".into()
            } else {
                h.clusters.join(",")
            },
            notes.join(","),
        ]);
    }
    table.render()
}

/// One line per cluster: `eu-1  revision 3  Updating  2/3 healthy`.
fn cluster_line(c: &ClusterProgress) -> String {
    format!(
        "revision {}  {:<10} {}/{} healthy",
        c.revision, c.status, c.healthy, c.desired
    )
}

/// How a watched rollout ended, or `None` while it goes on.
pub fn outcome(view: &RolloutView) -> Option<Result<String, String>> {
    let name = format!("workload/{}", view.name);
    match view.phase {
        RolloutPhase::Complete => Some(Ok(format!(
            "{name}: revision {} rolled out to every cluster",
            view.revision
        ))),
        RolloutPhase::Progressing => None,
        RolloutPhase::Paused => Some(Err(format!(
            "{name}: the rollout of revision {} is paused ({}); `hansa rollout resume {}` continues it",
            view.revision, view.reason, view.name
        ))),
        RolloutPhase::Failed => Some(Err(format!(
            "{name}: the rollout of revision {} failed: {}",
            view.revision, view.reason
        ))),
        RolloutPhase::RolledBack => Some(Err(format!(
            "{name}: the rollout of revision {} was rolled back: {}",
            view.revision, view.reason
        ))),
    }
}

async fn status(
    client: &mut Client,
    workload: &str,
    namespace: &Option<String>,
    no_watch: bool,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {msg}")
        .context("progress bar template")?
        .progress_chars("=> ");
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    // What was last printed per cluster, so each change is printed once (also without a
    // terminal, where the bars are not drawn).
    let mut printed: BTreeMap<String, (u64, StageStatus)> = BTreeMap::new();
    let mut announced = false;
    loop {
        let view = fetch(client, workload, namespace).await?;
        if !announced {
            let staged = if view.staged {
                "staged"
            } else {
                "all clusters at once"
            };
            multi.suspend(|| {
                println!(
                    "workload/{}: revision {} ({staged}), {} clusters",
                    view.name,
                    view.revision,
                    view.clusters.len()
                )
            });
            announced = true;
        }
        for c in &view.clusters {
            let bar = bars.entry(c.cluster.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(u64::from(c.desired)));
                bar.set_style(style.clone());
                bar.set_prefix(c.cluster.clone());
                bar
            });
            bar.set_length(u64::from(c.desired.max(1)));
            bar.set_position(u64::from(c.healthy.min(c.desired)));
            bar.set_message(cluster_line(c));
            if printed.get(&c.cluster) != Some(&(c.revision, c.status)) {
                printed.insert(c.cluster.clone(), (c.revision, c.status));
                multi.suspend(|| println!("{:>12}  {}", c.cluster, cluster_line(c)));
            }
        }
        let end = outcome(&view);
        if end.is_some() || no_watch {
            for bar in bars.values() {
                bar.finish();
            }
            match end {
                Some(Ok(done)) => println!("{done}"),
                Some(Err(failed)) => bail!("{failed}"),
                None => println!(
                    "workload/{}: rolling out revision {}",
                    view.name, view.revision
                ),
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "workload/{}: the rollout of revision {} has not finished after {} s",
                view.name,
                view.revision,
                timeout.unwrap_or_default()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(phase: RolloutPhase) -> RolloutView {
        RolloutView {
            namespace: "default".into(),
            name: "web".into(),
            revision: 2,
            current: 2,
            staged: true,
            phase,
            reason: "cluster eu-1: revision 2 fails its health checks".into(),
            stable: 1,
            clusters: vec![],
            history: vec![],
            message: String::new(),
        }
    }

    #[test]
    fn status_ends_well_only_when_complete() {
        assert!(outcome(&view(RolloutPhase::Progressing)).is_none());
        assert!(matches!(
            outcome(&view(RolloutPhase::Complete)),
            Some(Ok(_))
        ));
        for phase in [
            RolloutPhase::Paused,
            RolloutPhase::Failed,
            RolloutPhase::RolledBack,
        ] {
            let Some(Err(why)) = outcome(&view(phase)) else {
                panic!("{phase} should end the watch with an error");
            };
            assert!(why.contains("revision 2"), "{why}");
        }
    }
}
