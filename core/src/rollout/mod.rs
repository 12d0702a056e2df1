//! Staged rollouts across member clusters: what a workload asks for (`spec.update.clusters`),
//! the progress the federation stores, and the pure decisions that move it (see [`step`]).
//!
//! A new revision reaches clusters a few at a time, in an order; a cluster must hold the new
//! revision fully healthy for `minHealthySeconds` before the next one starts. Clusters not yet
//! reached keep running the revision they ran, so the store keeps a revision history.

mod step;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::TaskTemplate;
use crate::overrides::OverrideObject;

pub use step::{step, Observed};

/// How many revisions of a workload the store keeps unless the manifest says otherwise
/// (Kubernetes' `revisionHistoryLimit` default).
pub const DEFAULT_HISTORY: u32 = 10;

/// How a workload's new revisions move across clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Staged across clusters; without it every cluster gets a new revision at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<ClusterRollout>,
    /// Revisions kept for `hansa rollout undo` and for clusters a rollout has not reached.
    #[serde(default = "default_history")]
    pub revision_history_limit: u32,
}

fn default_history() -> u32 {
    DEFAULT_HISTORY
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            clusters: None,
            revision_history_limit: DEFAULT_HISTORY,
        }
    }
}

impl RolloutSpec {
    pub fn is_default(&self) -> bool {
        *self == RolloutSpec::default()
    }
}

/// `spec.update.clusters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRollout {
    /// Clusters updating at once.
    pub max_parallel: u32,
    pub order: ClusterOrder,
    /// How long a cluster must hold the new revision fully healthy before the next starts.
    pub min_healthy_seconds: u64,
    pub on_failure: OnFailure,
    /// A cluster that has not become healthy this long after it started fails the rollout.
    pub progress_deadline_seconds: u64,
    /// When the new revision fails its health checks, return every cluster to the last good
    /// revision, whatever `on_failure` says.
    pub auto_revert: bool,
}

impl Default for ClusterRollout {
    fn default() -> Self {
        ClusterRollout {
            max_parallel: 1,
            order: ClusterOrder::ByName,
            min_healthy_seconds: 10,
            on_failure: OnFailure::Pause,
            progress_deadline_seconds: 600,
            auto_revert: false,
        }
    }
}

/// The order clusters are updated in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterOrder {
    /// By cluster name (the default).
    ByName,
    /// One region at a time (regions by name), its clusters by name.
    ByRegion,
    /// These clusters first, in this order; clusters not listed follow, by name.
    Names(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Stop where the rollout is; updated clusters keep the new revision.
    Pause,
    /// Return every cluster to the last good revision.
    Rollback,
}

/// One stored revision of a workload: what clusters not yet reached by a rollout keep
/// running, and what `hansa rollout undo` returns to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: u64,
    pub template: TaskTemplate,
    /// The override policies that selected the workload then, in application order: an older
    /// revision renders as it did, whatever the policies say now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideObject>,
    pub created_ms: u64,
}

impl RevisionRecord {
    /// What changed from `before` to this revision, for `hansa rollout history`:
    /// `image nginx:1 -> nginx:2`, `env GREETING`, `healthCheck`, `overrides`.
    pub fn changes_since(&self, before: &RevisionRecord) -> Vec<String> {
        let (a, b) = (&before.template, &self.template);
        let mut out = Vec::new();
        if a.image != b.image {
            let show = |i: &Option<String>| i.clone().unwrap_or_else(|| "(none)".into());
            out.push(format!("image {} -> {}", show(&a.image), show(&b.image)));
        }
        for (name, changed) in [
            ("command", a.command != b.command),
            ("args", a.args != b.args),
        ] {
            if changed {
                out.push(name.to_string());
            }
        }
        let env: Vec<&String> = a
            .env
            .keys()
            .chain(b.env.keys())
            .filter(|k| a.env.get(*k) != b.env.get(*k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !env.is_empty() {
            let names: Vec<&str> = env.iter().map(|k| k.as_str()).collect();
            out.push(format!("env {}", names.join(",")));
        }
        for (name, changed) in [
            ("ports", a.ports != b.ports),
            ("resources", a.resources != b.resources),
            ("healthCheck", a.health_check != b.health_check),
            (
                "imagePullPolicy",
                a.image_pull_policy != b.image_pull_policy,
            ),
            ("labels", a.labels != b.labels),
            ("envConvention", a.env_convention != b.env_convention),
            ("overrides", before.overrides != self.overrides),
        ] {
            if changed {
                out.push(name.to_string());
            }
        }
        out
    }
}

/// Where a staged rollout stands; stored with the workload and changed by Raft commands only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The revision being rolled out.
    pub revision: u64,
    /// The last revision that completed a rollout: where a rollback returns.
    pub stable: u64,
    pub phase: RolloutPhase,
    /// Why the rollout is paused, failed or rolled back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the first cluster started (0: not yet).
    #[serde(default)]
    pub started_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
    pub clusters: BTreeMap<String, ClusterStage>,
    /// +1 on every change: the controller's proposals name the version they were computed
    /// from, and one computed from an older version is ignored.
    #[serde(default)]
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutPhase {
    Progressing,
    /// Paused by an operator (`hansa rollout pause`).
    Paused,
    /// Stopped on a failure (`onFailure: pause`); `resume` tries again, `undo` goes back.
    Failed,
    /// Every cluster returned to the stable revision after a failure.
    RolledBack,
    Complete,
}

impl RolloutPhase {
    /// Whether the controller has nothing more to do until an operator acts.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutPhase::Failed | RolloutPhase::RolledBack | RolloutPhase::Complete
        )
    }
}

impl fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Failed => "Failed",
            RolloutPhase::RolledBack => "RolledBack",
            RolloutPhase::Complete => "Complete",
        })
    }
}

/// One cluster's part of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStage {
    /// The revision this cluster is assigned now.
    pub revision: u64,
    pub status: StageStatus,
    /// When the cluster started on the rollout's revision (0: not yet).
    #[serde(default)]
    pub started_ms: u64,
    /// Since when every replica of the new revision has been healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageStatus {
    /// Not reached yet: runs the revision it ran.
    Waiting,
    /// Replacing its replicas with the new revision, or holding them healthy.
    Updating,
    /// Held the new revision healthy for `minHealthySeconds`.
    Updated,
    /// The new revision failed here (health checks or the progress deadline).
    Failed,
    /// Returned to the stable revision after a failure.
    RolledBack,
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StageStatus::Waiting => "Waiting",
            StageStatus::Updating => "Updating",
            StageStatus::Updated => "Updated",
            StageStatus::Failed => "Failed",
            StageStatus::RolledBack => "RolledBack",
        })
    }
}

impl Rollout {
    /// A rollout of `revision` over `clusters` (name -> the revision each runs now).
    pub fn start(revision: u64, stable: u64, clusters: BTreeMap<String, u64>) -> Rollout {
        Rollout {
            revision,
            stable,
            phase: RolloutPhase::Progressing,
            reason: String::new(),
            started_ms: 0,
            updated_ms: 0,
            clusters: clusters
                .into_iter()
                .map(|(name, running)| (name, ClusterStage::waiting(running)))
                .collect(),
            version: 0,
        }
    }

    /// The revision `cluster` runs: its stage's, or, for a cluster the rollout does not know
    /// yet, the stable one until the rollout completes.
    pub fn revision_for(&self, cluster: &str) -> u64 {
        match self.clusters.get(cluster) {
            Some(stage) => stage.revision,
            None if self.phase == RolloutPhase::Complete => self.revision,
            None => self.stable,
        }
    }

    /// The revisions some cluster may still be assigned: history must keep them.
    pub fn revisions_in_use(&self) -> impl Iterator<Item = u64> + '_ {
        [self.revision, self.stable]
            .into_iter()
            .chain(self.clusters.values().map(|s| s.revision))
    }

    /// `hansa rollout pause`.
    pub fn pause(&mut self, now_ms: u64) -> Result<(), String> {
        match self.phase {
            RolloutPhase::Progressing => {
                self.phase = RolloutPhase::Paused;
                self.reason = "paused by an operator".into();
                self.updated_ms = now_ms;
                Ok(())
            }
            RolloutPhase::Paused => Err(format!(
                "the rollout of revision {} is already paused",
                self.revision
            )),
            phase => Err(format!(
                "the rollout of revision {} is {phase}: there is nothing to pause",
                self.revision
            )),
        }
    }

    /// `hansa rollout resume`: continues a paused rollout, or tries a failed or rolled-back one
    /// again (failed clusters start over, with a new progress deadline).
    pub fn resume(&mut self, now_ms: u64) -> Result<(), String> {
        match self.phase {
            RolloutPhase::Paused | RolloutPhase::Failed | RolloutPhase::RolledBack => {
                for stage in self.clusters.values_mut() {
                    match stage.status {
                        StageStatus::Failed | StageStatus::RolledBack => {
                            *stage = ClusterStage::waiting(stage.revision);
                        }
                        StageStatus::Updating => {
                            stage.started_ms = now_ms;
                            stage.healthy_since_ms = None;
                        }
                        StageStatus::Waiting | StageStatus::Updated => {}
                    }
                }
                self.phase = RolloutPhase::Progressing;
                self.reason.clear();
                self.updated_ms = now_ms;
                Ok(())
            }
            RolloutPhase::Progressing => Err(format!(
                "the rollout of revision {} is not paused",
                self.revision
            )),
            RolloutPhase::Complete => Err(format!(
                "the rollout of revision {} is complete",
                self.revision
            )),
        }
    }
}

impl ClusterStage {
    pub fn waiting(running: u64) -> ClusterStage {
        ClusterStage {
            revision: running,
            status: StageStatus::Waiting,
            started_ms: 0,
            healthy_since_ms: None,
        }
    }
}

/// The clusters in the order a rollout reaches them, as groups: a group starts only when every
/// cluster of the groups before it is updated (`byRegion`: one group per region).
pub fn order_groups(order: &ClusterOrder, clusters: &[(&str, &str)]) -> Vec<Vec<String>> {
    let mut by_name: Vec<(&str, &str)> = clusters.to_vec();
    by_name.sort();
    match order {
        ClusterOrder::ByName => vec![by_name.iter().map(|(n, _)| n.to_string()).collect()],
        ClusterOrder::ByRegion => {
            let mut regions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (name, region) in by_name {
                regions.entry(region).or_default().push(name.to_string());
            }
            regions.into_values().collect()
        }
        ClusterOrder::Names(names) => {
            let mut out: Vec<String> = names
                .iter()
                .filter(|n| by_name.iter().any(|(c, _)| c == n))
                .cloned()
                .collect();
            out.extend(
                by_name
                    .iter()
                    .filter(|(c, _)| !names.iter().any(|n| n == c))
                    .map(|(c, _)| c.to_string()),
            );
            vec![out]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_names_what_changed() {
        let mut before = RevisionRecord {
            revision: 1,
            template: TaskTemplate {
                image: Some("nginx:1".into()),
                ..Default::default()
            },
            overrides: vec![],
            created_ms: 0,
        };
        before.template.env.insert("A".into(), "1".into());
        let mut after = before.clone();
        after.revision = 2;
        assert!(after.changes_since(&before).is_empty());
        after.template.image = Some("nginx:2".into());
        after.template.env.insert("A".into(), "2".into());
        after.template.env.insert("B".into(), "1".into());
        after.template.args = vec!["-v".into()];
        assert_eq!(
            after.changes_since(&before),
            ["image nginx:1 -> nginx:2", "args", "env A,B"]
        );
    }

    #[test]
    fn order_by_name_region_and_list() {
        let clusters = [
            ("us-1", "us"),
            ("eu-2", "eu"),
            ("eu-1", "eu"),
            ("ap-1", "ap"),
        ];
        assert_eq!(
            order_groups(&ClusterOrder::ByName, &clusters),
            vec![vec!["ap-1", "eu-1", "eu-2", "us-1"]]
        );
        assert_eq!(
            order_groups(&ClusterOrder::ByRegion, &clusters),
            vec![vec!["ap-1"], vec!["eu-1", "eu-2"], vec!["us-1"]]
        );
        let listed = ClusterOrder::Names(vec!["us-1".into(), "gone".into(), "eu-2".into()]);
        assert_eq!(
            order_groups(&listed, &clusters),
            vec![vec!["us-1", "eu-2", "ap-1", "eu-1"]]
        );
    }

    #[test]
    fn pause_and_resume_say_why_they_refuse() {
        let mut r = Rollout::start(2, 1, BTreeMap::from([("eu-1".into(), 1)]));
        assert!(r.resume(1).unwrap_err().contains("not paused"));
        r.pause(2).unwrap();
        assert_eq!(r.phase, RolloutPhase::Paused);
        assert!(r.pause(3).unwrap_err().contains("already paused"));
        r.resume(4).unwrap();
        assert_eq!(r.phase, RolloutPhase::Progressing);
        r.phase = RolloutPhase::Complete;
        assert!(r.pause(5).unwrap_err().contains("Complete"));
    }

    #[test]
    fn resuming_a_failed_rollout_starts_failed_clusters_over() {
        let mut r = Rollout::start(
            2,
            1,
            BTreeMap::from([("eu-1".into(), 1), ("us-1".into(), 1)]),
        );
        r.phase = RolloutPhase::RolledBack;
        r.clusters.get_mut("eu-1").unwrap().status = StageStatus::RolledBack;
        r.resume(9).unwrap();
        assert_eq!(r.clusters["eu-1"], ClusterStage::waiting(1));
        assert_eq!(r.phase, RolloutPhase::Progressing);
        assert!(r.reason.is_empty());
    }

    #[test]
    fn clusters_unknown_to_a_rollout_run_the_stable_revision_until_it_completes() {
        let mut r = Rollout::start(3, 2, BTreeMap::from([("eu-1".into(), 2)]));
        assert_eq!(r.revision_for("eu-1"), 2);
        assert_eq!(r.revision_for("new-1"), 2);
        r.clusters.get_mut("eu-1").unwrap().revision = 3;
        assert_eq!(r.revision_for("eu-1"), 3);
        r.phase = RolloutPhase::Complete;
        assert_eq!(r.revision_for("new-1"), 3);
    }
}
