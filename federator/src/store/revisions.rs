//! Revision history and staged rollouts in the state machine: what a new revision records,
//! and the rollout commands. Deterministic like the rest of `apply`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hansa_core::rollout::{RevisionRecord, Rollout, RolloutPhase};
use hansa_core::{OverrideObject, Placement, TaskTemplate, Workload, WorkloadKey};
use serde::{Deserialize, Serialize};

use super::state::{CommandResponse, FederationState, OverrideRecord, PutOutcome, WorkloadRecord};

/// What an operator asks of a workload's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum RolloutAction {
    Pause,
    /// Continues a paused rollout, or tries a failed or rolled-back one again.
    Resume,
    /// Makes a new revision with the template of `to_revision` (default: the one before the
    /// latest), as `kubectl rollout undo` does; it rolls out like any other.
    Undo {
        to_revision: Option<u64>,
    },
}

/// The override policies that select `workload`, in the order they are applied.
pub(super) fn selected_overrides(
    overrides: &BTreeMap<String, OverrideRecord>,
    workload: &Workload,
) -> Vec<OverrideObject> {
    let mut out: Vec<&OverrideObject> = overrides
        .values()
        .map(|r| &r.policy)
        .filter(|o| o.selects(workload))
        .collect();
    out.sort_by(|a, b| a.apply_order().cmp(&b.apply_order()));
    out.into_iter().cloned().collect()
}

/// The clusters a placement gives replicas to.
pub(super) fn placed_clusters(placement: Option<&Placement>) -> Vec<String> {
    placement
        .map(|p| {
            p.clusters
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(c, _)| c.clone())
                .collect()
        })
        .unwrap_or_default()
}

impl WorkloadRecord {
    /// The revision `cluster` must run: the latest, unless a staged rollout has not reached
    /// the cluster yet.
    pub fn revision_for(&self, cluster: &str) -> u64 {
        match &self.rollout {
            Some(rollout) => rollout.revision_for(cluster),
            None => self.revision,
        }
    }

    /// A stored revision (the latest is always there, except in records written before
    /// revisions were kept).
    pub fn revision_record(&self, revision: u64) -> Option<&RevisionRecord> {
        self.history.iter().find(|r| r.revision == revision)
    }

    /// The template of `revision`, and the override policies it renders with (`None`: the
    /// ones in force now). Unknown revisions give the current template.
    pub fn template_of(&self, revision: u64) -> (&TaskTemplate, Option<&[OverrideObject]>) {
        // The current revision's record holds the overrides in force too, unless the workload
        // was reverted to it: then they may have changed since, and it must render as it did.
        if let Some(old) = self.revision_record(revision) {
            return (&old.template, Some(&old.overrides));
        }
        (&self.workload.template, None)
    }

    /// The number the next revision takes: revisions are never reused, even after a revert
    /// brought the workload back to an older one.
    fn next_revision(&self) -> u64 {
        let newest = self.history.iter().map(|r| r.revision).max().unwrap_or(0);
        newest.max(self.revision) + 1
    }

    /// After a rollout rolled back: the workload itself returns to `stable` (its template,
    /// a new generation), as Nomad's `auto_revert` does, so applying the failed manifest again
    /// is a change that starts a new rollout. The failed revision stays in the history.
    fn revert_to(&mut self, stable: u64, now_ms: u64) {
        let Some(old) = self.revision_record(stable) else {
            return;
        };
        if self.revision == stable {
            return;
        }
        self.workload.template = old.template.clone();
        self.revision = stable;
        self.generation += 1;
        self.updated_ms = now_ms;
    }

    /// Moves to the next revision of the (already updated) workload: keeps it in the history
    /// and, when the workload asks for it, starts a staged rollout over the `placed` clusters,
    /// which keep running what they ran until the rollout reaches them.
    pub(super) fn new_revision(
        &mut self,
        overrides: Vec<OverrideObject>,
        placed: &[String],
        now_ms: u64,
    ) {
        let previous = self.revision;
        let running: BTreeMap<String, u64> = placed
            .iter()
            .map(|c| (c.clone(), self.revision_for(c)))
            .collect();
        let stable = self.rollout.as_ref().map_or(previous, |r| r.stable);
        let version = self.rollout.as_ref().map_or(0, |r| r.version + 1);
        self.revision = self.next_revision();
        self.history.push(RevisionRecord {
            revision: self.revision,
            template: self.workload.template.clone(),
            overrides,
            created_ms: now_ms,
        });
        self.rollout = self.workload.rollout.clusters.as_ref().map(|_| {
            let mut rollout = Rollout::start(self.revision, stable, running);
            rollout.version = version;
            rollout.updated_ms = now_ms;
            rollout
        });
        self.trim_history();
    }

    /// Keeps the last `revisionHistoryLimit` revisions, and any older one a cluster may still
    /// be assigned.
    fn trim_history(&mut self) {
        let limit = usize::try_from(self.workload.rollout.revision_history_limit.max(1))
            .unwrap_or(usize::MAX);
        let in_use: BTreeSet<u64> = self
            .rollout
            .iter()
            .flat_map(|r| r.revisions_in_use())
            .collect();
        let keep_from = self.history.len().saturating_sub(limit);
        let mut index = 0;
        self.history.retain(|r| {
            index += 1;
            index > keep_from || in_use.contains(&r.revision)
        });
    }
}

impl FederationState {
    pub(super) fn set_rollout(&mut self, key: &WorkloadKey, proposed: &Rollout) -> CommandResponse {
        // Copies the record only while a snapshot being written shares it.
        let Some(record) = self.workloads.get_mut(key).map(Arc::make_mut) else {
            return CommandResponse::Ignored(format!("workload {key} no longer exists"));
        };
        let Some(current) = &record.rollout else {
            return CommandResponse::Ignored(format!("workload {key} has no rollout"));
        };
        if current.version != proposed.version || current.revision != proposed.revision {
            return CommandResponse::Ignored(format!(
                "the rollout of workload {key} changed meanwhile (version {}, revision {})",
                current.version, current.revision
            ));
        }
        let reverts =
            proposed.phase == RolloutPhase::RolledBack && current.phase != RolloutPhase::RolledBack;
        let mut rollout = proposed.clone();
        rollout.version += 1;
        if reverts {
            record.revert_to(rollout.stable, rollout.updated_ms);
        }
        record.rollout = Some(rollout);
        record.trim_history();
        CommandResponse::Done
    }

    pub(super) fn update_rollout(
        &mut self,
        key: &WorkloadKey,
        action: &RolloutAction,
        now_ms: u64,
    ) -> CommandResponse {
        let selected = self
            .workloads
            .get(key)
            .map(|r| selected_overrides(&self.overrides, &r.workload))
            .unwrap_or_default();
        let placed = placed_clusters(self.placement(key));
        let Some(record) = self.workloads.get_mut(key).map(Arc::make_mut) else {
            return CommandResponse::Ignored(format!("workload {key} not found"));
        };
        match action {
            RolloutAction::Pause | RolloutAction::Resume => {
                // Retrying a rollout that reverted the workload brings its revision back.
                let retried = record
                    .rollout
                    .as_ref()
                    .filter(|r| {
                        *action == RolloutAction::Resume && r.phase == RolloutPhase::RolledBack
                    })
                    .map(|r| r.revision)
                    .filter(|r| *r != record.revision)
                    .and_then(|r| record.revision_record(r))
                    .map(|old| (old.revision, old.template.clone()));
                let Some(rollout) = record.rollout.as_mut() else {
                    return CommandResponse::Ignored(format!(
                        "workload {key} has no staged rollout (spec.update.clusters)"
                    ));
                };
                let result = if *action == RolloutAction::Pause {
                    rollout.pause(now_ms)
                } else {
                    rollout.resume(now_ms)
                };
                match result {
                    Err(why) => CommandResponse::Ignored(format!("workload {key}: {why}")),
                    Ok(()) => {
                        rollout.version += 1;
                        if let Some((revision, template)) = retried {
                            record.workload.template = template;
                            record.revision = revision;
                            record.generation += 1;
                            record.updated_ms = now_ms;
                        }
                        CommandResponse::Done
                    }
                }
            }
            RolloutAction::Undo { to_revision } => {
                let target = match to_revision {
                    Some(n) => Some(*n),
                    None => record
                        .history
                        .iter()
                        .map(|r| r.revision)
                        .filter(|r| *r < record.revision)
                        .max(),
                };
                let Some(target) = target else {
                    return CommandResponse::Ignored(format!(
                        "workload {key} has no revision before {}",
                        record.revision
                    ));
                };
                if target == record.revision {
                    return CommandResponse::Ignored(format!(
                        "workload {key} is at revision {target} already"
                    ));
                }
                let Some(old) = record.revision_record(target) else {
                    let kept: Vec<String> = record
                        .history
                        .iter()
                        .map(|r| r.revision.to_string())
                        .collect();
                    return CommandResponse::Ignored(format!(
                        "workload {key} has no revision {target} (kept: {})",
                        kept.join(", ")
                    ));
                };
                record.workload.template = old.template.clone();
                record.generation += 1;
                record.updated_ms = now_ms;
                record.new_revision(selected, &placed, now_ms);
                CommandResponse::Workloads(vec![PutOutcome::Configured {
                    generation: record.generation,
                    revision: record.revision,
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hansa_core::manifest::{parse_manifests, ManifestFile};
    use hansa_core::rollout::{RolloutPhase, StageStatus};
    use hansa_core::Placement;

    use super::*;
    use crate::controllers::assignments;
    use crate::store::Command;

    fn manifest(version: &str, staged: bool, history: u32) -> String {
        let clusters = if staged {
            "    clusters: {minHealthySeconds: 1}\n"
        } else {
            ""
        };
        format!(
            "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  update:\n    revisionHistoryLimit: {history}\n{clusters}  template: {{command: [app], env: {{VERSION: \"{version}\"}}}}\n  placement: {{replicaScheduling: {{type: Duplicated}}}}\n"
        )
    }

    fn apply(state: &mut FederationState, content: &str, now_ms: u64) -> CommandResponse {
        let parsed = parse_manifests(&[ManifestFile {
            name: "web.yaml",
            content,
        }])
        .unwrap();
        state.apply(&Command::put_workloads(parsed.workloads, now_ms))
    }

    fn key() -> WorkloadKey {
        WorkloadKey::new("default", "web")
    }

    /// `web` applied at v1 and placed on eu-1 and us-1.
    fn placed(staged: bool) -> FederationState {
        let mut state = FederationState::default();
        for (name, region) in [("eu-1", "eu"), ("us-1", "us")] {
            state.apply(&Command::UpsertCluster {
                cluster: crate::dns::synthetic::cluster(name, region, &[]),
            });
        }
        apply(&mut state, &manifest("v1", staged, 10), 1);
        state.apply(&Command::SetPlacement {
            placement: Placement {
                workload: "web".into(),
                namespace: "default".into(),
                generation: 1,
                clusters: BTreeMap::from([("eu-1".into(), 1), ("us-1".into(), 1)]),
                explanation: Default::default(),
            },
        });
        state
    }

    fn version_in(state: &FederationState, cluster: &str) -> (u64, String) {
        let a = assignments::assignment(state, &key(), cluster).unwrap();
        (a.revision, a.template.env["VERSION"].clone())
    }

    #[test]
    fn clusters_a_staged_rollout_has_not_reached_keep_the_old_template() {
        let mut state = placed(true);
        apply(&mut state, &manifest("v2", true, 10), 2);
        let record = &state.workloads[&key()];
        assert_eq!(record.revision, 2);
        assert_eq!(record.history.len(), 2);
        let rollout = record.rollout.clone().unwrap();
        assert_eq!((rollout.revision, rollout.stable), (2, 1));
        assert_eq!(version_in(&state, "eu-1"), (1, "v1".into()));
        assert_eq!(version_in(&state, "us-1"), (1, "v1".into()));

        // The controller starts eu-1: only eu-1 gets revision 2.
        let mut next = rollout.clone();
        let stage = next.clusters.get_mut("eu-1").unwrap();
        stage.revision = 2;
        stage.status = StageStatus::Updating;
        assert_eq!(
            state.apply(&Command::SetRollout {
                key: key(),
                rollout: next.clone()
            }),
            CommandResponse::Done
        );
        assert_eq!(version_in(&state, "eu-1"), (2, "v2".into()));
        assert_eq!(version_in(&state, "us-1"), (1, "v1".into()));
        // A proposal computed from the old version is ignored.
        assert!(matches!(
            state.apply(&Command::SetRollout {
                key: key(),
                rollout: next
            }),
            CommandResponse::Ignored(_)
        ));
    }

    /// What the controller proposes when revision 2 fails its health checks in eu-1 under
    /// autoRevert: every cluster back on `stable`.
    fn rolled_back(state: &FederationState) -> Rollout {
        let mut r = state.workloads[&key()].rollout.clone().unwrap();
        for stage in r.clusters.values_mut() {
            stage.revision = r.stable;
            stage.status = StageStatus::RolledBack;
        }
        r.phase = RolloutPhase::RolledBack;
        r.reason = "cluster eu-1: revision 2 fails its health checks".into();
        r.updated_ms = 3;
        r
    }

    #[test]
    fn a_rollback_reverts_the_workload_so_the_failed_manifest_applies_again() {
        let mut state = placed(true);
        apply(&mut state, &manifest("v2", true, 10), 2);
        let rollout = rolled_back(&state);
        assert_eq!(
            state.apply(&Command::SetRollout {
                key: key(),
                rollout
            }),
            CommandResponse::Done
        );
        let record = &state.workloads[&key()];
        assert_eq!((record.revision, record.generation), (1, 3));
        assert_eq!(record.workload.template.env["VERSION"], "v1");
        let kept: Vec<u64> = record.history.iter().map(|r| r.revision).collect();
        assert_eq!(kept, [1, 2], "the failed revision stays in the history");
        assert_eq!(version_in(&state, "eu-1"), (1, "v1".into()));

        // Applying the failed manifest again is a change: revision 3, a new rollout from 1.
        let response = apply(&mut state, &manifest("v2", true, 10), 4);
        let CommandResponse::Workloads(outcomes) = response else {
            panic!("{response:?}")
        };
        assert_eq!(outcomes[0].revision(), 3, "{outcomes:?}");
        let rollout = state.workloads[&key()].rollout.clone().unwrap();
        assert_eq!(
            (rollout.revision, rollout.stable, rollout.phase),
            (3, 1, RolloutPhase::Progressing)
        );
        assert_eq!(version_in(&state, "us-1"), (1, "v1".into()));
        // And the manifest of revision 1 would have been unchanged.
        let mut reverted = placed(true);
        apply(&mut reverted, &manifest("v2", true, 10), 2);
        let rollout = rolled_back(&reverted);
        reverted.apply(&Command::SetRollout {
            key: key(),
            rollout,
        });
        assert!(matches!(
            apply(&mut reverted, &manifest("v1", true, 10), 4),
            CommandResponse::Workloads(o) if matches!(o[0], PutOutcome::Unchanged { revision: 1, .. })
        ));
    }

    #[test]
    fn resuming_a_rolled_back_rollout_brings_its_revision_back() {
        let mut state = placed(true);
        apply(&mut state, &manifest("v2", true, 10), 2);
        let rollout = rolled_back(&state);
        state.apply(&Command::SetRollout {
            key: key(),
            rollout,
        });
        let resume = Command::UpdateRollout {
            key: key(),
            action: RolloutAction::Resume,
            now_ms: 5,
        };
        assert_eq!(state.apply(&resume), CommandResponse::Done);
        let record = &state.workloads[&key()];
        assert_eq!((record.revision, record.generation), (2, 4));
        assert_eq!(record.workload.template.env["VERSION"], "v2");
        let rollout = record.rollout.clone().unwrap();
        assert_eq!(
            (rollout.revision, rollout.phase),
            (2, RolloutPhase::Progressing)
        );
    }

    #[test]
    fn without_staging_every_cluster_gets_the_latest_revision() {
        let mut state = placed(false);
        apply(&mut state, &manifest("v2", false, 10), 2);
        assert!(state.workloads[&key()].rollout.is_none());
        assert_eq!(version_in(&state, "us-1"), (2, "v2".into()));
    }

    #[test]
    fn history_keeps_the_limit_and_every_revision_in_use() {
        let mut state = placed(true);
        for (i, v) in ["v2", "v3", "v4"].iter().enumerate() {
            apply(&mut state, &manifest(v, true, 2), 2 + i as u64);
        }
        let record = &state.workloads[&key()];
        let kept: Vec<u64> = record.history.iter().map(|r| r.revision).collect();
        // Revision 1 is what both clusters still run (the stable one): it stays.
        assert_eq!(kept, [1, 3, 4]);
        assert_eq!(version_in(&state, "us-1"), (1, "v1".into()));

        // Once the rollout of 4 completes, 1 goes.
        let mut done = record.rollout.clone().unwrap();
        for stage in done.clusters.values_mut() {
            stage.revision = 4;
            stage.status = StageStatus::Updated;
        }
        done.phase = RolloutPhase::Complete;
        done.stable = 4;
        state.apply(&Command::SetRollout {
            key: key(),
            rollout: done,
        });
        let kept: Vec<u64> = state.workloads[&key()]
            .history
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(kept, [3, 4]);
    }

    #[test]
    fn undo_makes_a_new_revision_with_the_old_template() {
        let mut state = placed(false);
        apply(&mut state, &manifest("v2", false, 10), 2);
        let response = state.apply(&Command::UpdateRollout {
            key: key(),
            action: RolloutAction::Undo { to_revision: None },
            now_ms: 3,
        });
        assert_eq!(
            response,
            CommandResponse::Workloads(vec![PutOutcome::Configured {
                generation: 3,
                revision: 3
            }])
        );
        assert_eq!(version_in(&state, "eu-1"), (3, "v1".into()));
        let to = |n| Command::UpdateRollout {
            key: key(),
            action: RolloutAction::Undo {
                to_revision: Some(n),
            },
            now_ms: 4,
        };
        let CommandResponse::Ignored(why) = state.apply(&to(9)) else {
            panic!("undo to a missing revision")
        };
        assert!(why.contains("no revision 9 (kept: 1, 2, 3)"), "{why}");
        let CommandResponse::Ignored(why) = state.apply(&to(3)) else {
            panic!("undo to the current revision")
        };
        assert!(why.contains("at revision 3 already"), "{why}");
        state.apply(&to(2));
        assert_eq!(version_in(&state, "eu-1"), (4, "v2".into()));
    }

    #[test]
    fn pause_and_resume_need_a_staged_rollout() {
        let mut state = placed(false);
        let pause = Command::UpdateRollout {
            key: key(),
            action: RolloutAction::Pause,
            now_ms: 2,
        };
        let CommandResponse::Ignored(why) = state.apply(&pause) else {
            panic!("pause without staging")
        };
        assert!(why.contains("spec.update.clusters"), "{why}");

        let mut state = placed(true);
        apply(&mut state, &manifest("v2", true, 10), 2);
        assert_eq!(state.apply(&pause), CommandResponse::Done);
        let rollout = state.workloads[&key()].rollout.clone().unwrap();
        assert_eq!((rollout.phase, rollout.version), (RolloutPhase::Paused, 1));
        assert!(matches!(state.apply(&pause), CommandResponse::Ignored(_)));
    }

    /// Peer mode versions only the objects a command declares: everything a rollout command
    /// changes must live in its workload's record.
    #[test]
    fn rollout_commands_change_only_their_workload() {
        let mut state = placed(true);
        apply(&mut state, &manifest("v2", true, 10), 2);
        let action = |action| Command::UpdateRollout {
            key: key(),
            action,
            now_ms: 3,
        };
        let commands = [
            action(RolloutAction::Pause),
            action(RolloutAction::Resume),
            action(RolloutAction::Undo { to_revision: None }),
        ];
        // The controller's step, computed from the rollout the undo started.
        let step = |state: &FederationState| {
            let mut rollout = state.workloads[&key()].rollout.clone().unwrap();
            rollout.started_ms = 4;
            Command::SetRollout {
                key: key(),
                rollout,
            }
        };
        for i in 0..=commands.len() {
            let cmd = &commands.get(i).cloned().unwrap_or_else(|| step(&state));
            let before = state.clone();
            assert!(
                !matches!(state.apply(cmd), CommandResponse::Ignored(_)),
                "{cmd:?}"
            );
            let declared: Vec<String> = cmd
                .touched_objects(&before)
                .iter()
                .map(|o| o.storage_key())
                .collect();
            assert_eq!(declared, ["workload/default/web"]);
            let mut others = state.clone();
            let mut others_before = before.clone();
            others.workloads.clear();
            others_before.workloads.clear();
            assert_eq!(
                others, others_before,
                "{cmd:?} changed more than its workload"
            );
            assert_ne!(state.workloads, before.workloads, "{cmd:?} changed nothing");
        }
    }

    /// Rollout progress and revision history are replicated state: they survive a restart of
    /// the store (redb on disk), and assignments after it are the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollout_progress_and_history_survive_a_restart() {
        use crate::store::{Store, StoreConfig};
        let dir = tempfile::TempDir::new().unwrap();
        let config = || {
            let mut c = StoreConfig::new(
                1,
                dir.path(),
                "https://127.0.0.1:1",
                true,
                tonic::transport::ClientTlsConfig::new(),
            );
            c.heartbeat_interval = std::time::Duration::from_millis(50);
            c.election_timeout_min = std::time::Duration::from_millis(150);
            c.election_timeout_max = std::time::Duration::from_millis(300);
            c
        };
        let store = Store::open(config()).await.unwrap();
        let mut leadership = store.leadership();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            leadership.wait_for(|l| *l),
        )
        .await
        .unwrap()
        .unwrap();
        // The same commands as `placed(true)` and a v2, then the controller's first step and a
        // pause, each through Raft.
        let mut local = placed(true);
        apply(&mut local, &manifest("v2", true, 10), 2);
        let mut first = local.workloads[&key()].rollout.clone().unwrap();
        let stage = first.clusters.get_mut("eu-1").unwrap();
        stage.revision = 2;
        stage.status = StageStatus::Updating;
        let parsed = |v: &str| {
            parse_manifests(&[ManifestFile {
                name: "web.yaml",
                content: &manifest(v, true, 10),
            }])
            .unwrap()
            .workloads
        };
        let mut commands: Vec<Command> = local
            .clusters
            .values()
            .map(|c| Command::UpsertCluster { cluster: c.clone() })
            .collect();
        commands.extend([
            Command::put_workloads(parsed("v1"), 1),
            Command::SetPlacement {
                placement: (*local.placements[&key()]).clone(),
            },
            Command::put_workloads(parsed("v2"), 2),
            Command::SetRollout {
                key: key(),
                rollout: first,
            },
            Command::UpdateRollout {
                key: key(),
                action: RolloutAction::Pause,
                now_ms: 3,
            },
        ]);
        for cmd in commands {
            let response = store.propose(cmd.clone()).await.unwrap();
            assert!(
                !matches!(response, CommandResponse::Ignored(_)),
                "{cmd:?}: {response:?}"
            );
        }
        let written = store.read(Clone::clone);
        let rollout = written.workloads[&key()].rollout.clone().unwrap();
        assert_eq!(rollout.phase, RolloutPhase::Paused);
        store.shutdown().await.unwrap();
        drop(store);

        let store = Store::open(config()).await.unwrap();
        let reread = store.read(Clone::clone);
        assert_eq!(reread, written);
        assert_eq!(reread.workloads[&key()].history.len(), 2);
        assert_eq!(version_in(&reread, "eu-1"), (2, "v2".into()));
        assert_eq!(version_in(&reread, "us-1"), (1, "v1".into()));
        store.shutdown().await.unwrap();
    }

    #[test]
    fn rollout_commands_round_trip_through_json() {
        let mut state = placed(true);
        apply(&mut state, &manifest("v2", true, 10), 2);
        for cmd in [
            Command::SetRollout {
                key: key(),
                rollout: state.workloads[&key()].rollout.clone().unwrap(),
            },
            Command::UpdateRollout {
                key: key(),
                action: RolloutAction::Undo {
                    to_revision: Some(1),
                },
                now_ms: 5,
            },
        ] {
            let json = serde_json::to_vec(&cmd).unwrap();
            assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
        }
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            serde_json::from_str::<FederationState>(&json).unwrap(),
            state
        );
    }
}
