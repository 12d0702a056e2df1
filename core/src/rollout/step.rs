//! The rollout controller's decision, as a pure function of the stored rollout, the workload's
//! strategy, what the clusters report and the time.

use std::collections::BTreeMap;

use super::{
    order_groups, ClusterRollout, ClusterStage, OnFailure, Rollout, RolloutPhase, StageStatus,
};

/// What one placed cluster reports about the rollout's revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub region: String,
    /// The replicas the cluster must run (its assignment).
    pub desired: u32,
    /// Healthy replicas of the rollout's revision.
    pub healthy: u32,
    /// Why a replica of the rollout's revision is failing (unhealthy, exited, restarted).
    pub failing: Option<String>,
}

/// The rollout after one look at the clusters at `now_ms`, or `None` when nothing changes.
/// `placed` holds every cluster the workload is placed on now.
pub fn step(
    rollout: &Rollout,
    spec: &ClusterRollout,
    placed: &BTreeMap<String, Observed>,
    now_ms: u64,
) -> Option<Rollout> {
    if rollout.phase != RolloutPhase::Progressing {
        return None;
    }
    let mut r = rollout.clone();
    // Follow the placement: a cluster placed anew joins the rollout on the stable revision.
    r.clusters.retain(|name, _| placed.contains_key(name));
    for name in placed.keys() {
        r.clusters
            .entry(name.clone())
            .or_insert_with(|| ClusterStage::waiting(rollout.stable));
    }

    if let Some((cluster, why, health)) = check_updating(&mut r, spec, placed, now_ms) {
        let revert = (health && spec.auto_revert) || spec.on_failure == OnFailure::Rollback;
        if revert {
            for stage in r.clusters.values_mut() {
                if stage.revision != r.stable {
                    stage.revision = r.stable;
                    stage.status = StageStatus::RolledBack;
                    stage.healthy_since_ms = None;
                }
            }
            r.phase = RolloutPhase::RolledBack;
            r.reason = format!(
                "cluster {cluster}: {why}; every cluster returned to revision {}",
                r.stable
            );
        } else {
            r.phase = RolloutPhase::Failed;
            r.reason = format!("cluster {cluster}: {why}; the rollout is paused");
        }
        r.updated_ms = now_ms;
        return Some(r);
    }

    start_next(&mut r, spec, placed, now_ms);

    if r.clusters
        .values()
        .all(|s| s.status == StageStatus::Updated)
    {
        r.phase = RolloutPhase::Complete;
        r.stable = r.revision;
        r.reason.clear();
    }
    if r == *rollout {
        return None;
    }
    r.updated_ms = now_ms;
    Some(r)
}

/// Moves updating clusters along; returns the first failure: (cluster, why, whether it was a
/// health check rather than the deadline).
fn check_updating(
    r: &mut Rollout,
    spec: &ClusterRollout,
    placed: &BTreeMap<String, Observed>,
    now_ms: u64,
) -> Option<(String, String, bool)> {
    let min_healthy_ms = spec.min_healthy_seconds.saturating_mul(1000);
    let deadline_ms = spec.progress_deadline_seconds.saturating_mul(1000);
    for (name, stage) in r.clusters.iter_mut() {
        if stage.status != StageStatus::Updating {
            continue;
        }
        let seen = placed.get(name).cloned().unwrap_or_default();
        if let Some(why) = seen.failing {
            stage.status = StageStatus::Failed;
            stage.healthy_since_ms = None;
            return Some((
                name.clone(),
                format!("revision {} fails its health checks: {why}", r.revision),
                true,
            ));
        }
        if seen.healthy >= seen.desired {
            let since = *stage.healthy_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= min_healthy_ms {
                stage.status = StageStatus::Updated;
            }
            continue;
        }
        stage.healthy_since_ms = None;
        if now_ms.saturating_sub(stage.started_ms) >= deadline_ms {
            stage.status = StageStatus::Failed;
            return Some((
                name.clone(),
                format!(
                    "revision {} has {}/{} healthy replicas after the progress deadline of {} s",
                    r.revision, seen.healthy, seen.desired, spec.progress_deadline_seconds
                ),
                false,
            ));
        }
    }
    None
}

/// Starts waiting clusters in order while fewer than `maxParallel` are updating; a group
/// starts only when the groups before it are updated.
fn start_next(
    r: &mut Rollout,
    spec: &ClusterRollout,
    placed: &BTreeMap<String, Observed>,
    now_ms: u64,
) {
    let regions: Vec<(&str, &str)> = placed
        .iter()
        .map(|(name, seen)| (name.as_str(), seen.region.as_str()))
        .collect();
    let mut updating = r
        .clusters
        .values()
        .filter(|s| s.status == StageStatus::Updating)
        .count();
    let max = usize::try_from(spec.max_parallel.max(1)).unwrap_or(usize::MAX);
    for group in order_groups(&spec.order, &regions) {
        for name in &group {
            let Some(stage) = r.clusters.get_mut(name) else {
                continue;
            };
            if stage.status == StageStatus::Waiting && updating < max {
                stage.revision = r.revision;
                stage.status = StageStatus::Updating;
                stage.started_ms = now_ms;
                stage.healthy_since_ms = None;
                updating += 1;
                if r.started_ms == 0 {
                    r.started_ms = now_ms;
                }
            }
        }
        let done = group.iter().all(|n| {
            r.clusters
                .get(n)
                .is_none_or(|s| s.status == StageStatus::Updated)
        });
        if !done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::ClusterOrder;

    fn spec() -> ClusterRollout {
        ClusterRollout {
            min_healthy_seconds: 5,
            progress_deadline_seconds: 60,
            ..Default::default()
        }
    }

    fn seen(region: &str, desired: u32, healthy: u32) -> Observed {
        Observed {
            region: region.into(),
            desired,
            healthy,
            failing: None,
        }
    }

    fn two() -> Rollout {
        Rollout::start(
            2,
            1,
            BTreeMap::from([("eu-1".into(), 1), ("us-1".into(), 1)]),
        )
    }

    fn placed(eu: Observed, us: Observed) -> BTreeMap<String, Observed> {
        BTreeMap::from([("eu-1".into(), eu), ("us-1".into(), us)])
    }

    fn statuses(r: &Rollout) -> Vec<(u64, StageStatus)> {
        r.clusters
            .values()
            .map(|s| (s.revision, s.status))
            .collect()
    }

    #[test]
    fn clusters_update_one_at_a_time_and_wait_min_healthy_seconds() {
        let spec = spec();
        let r = step(
            &two(),
            &spec,
            &placed(seen("eu", 2, 0), seen("us", 2, 0)),
            1_000,
        )
        .unwrap();
        assert_eq!(
            statuses(&r),
            [(2, StageStatus::Updating), (1, StageStatus::Waiting)]
        );
        assert_eq!(
            (r.started_ms, r.clusters["eu-1"].started_ms),
            (1_000, 1_000)
        );
        // Healthy, but not yet for 5 s: the next cluster waits.
        let r = step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 0)),
            2_000,
        )
        .unwrap();
        assert_eq!(r.clusters["eu-1"].healthy_since_ms, Some(2_000));
        assert!(step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 0)),
            6_999
        )
        .is_none());
        // One replica drops out: the clock starts over.
        let r = step(
            &r,
            &spec,
            &placed(seen("eu", 2, 1), seen("us", 2, 0)),
            6_000,
        )
        .unwrap();
        assert_eq!(r.clusters["eu-1"].healthy_since_ms, None);
        let r = step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 0)),
            7_000,
        )
        .unwrap();
        let r = step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 0)),
            12_000,
        )
        .unwrap();
        assert_eq!(
            statuses(&r),
            [(2, StageStatus::Updated), (2, StageStatus::Updating)]
        );
        let r = step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 2)),
            13_000,
        )
        .unwrap();
        let r = step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 2)),
            18_000,
        )
        .unwrap();
        assert_eq!(r.phase, RolloutPhase::Complete);
        assert_eq!(r.stable, 2);
        assert!(step(
            &r,
            &spec,
            &placed(seen("eu", 2, 2), seen("us", 2, 2)),
            19_000
        )
        .is_none());
    }

    #[test]
    fn max_parallel_starts_several_clusters() {
        let spec = ClusterRollout {
            max_parallel: 2,
            ..spec()
        };
        let r = step(
            &two(),
            &spec,
            &placed(seen("eu", 1, 0), seen("us", 1, 0)),
            1,
        )
        .unwrap();
        assert_eq!(
            statuses(&r),
            [(2, StageStatus::Updating), (2, StageStatus::Updating)]
        );
    }

    #[test]
    fn by_region_waits_for_the_whole_region() {
        let spec = ClusterRollout {
            max_parallel: 5,
            order: ClusterOrder::ByRegion,
            ..spec()
        };
        let start = Rollout::start(
            2,
            1,
            BTreeMap::from([("a-1".into(), 1), ("a-2".into(), 1), ("b-1".into(), 1)]),
        );
        let placed = BTreeMap::from([
            ("a-1".to_string(), seen("a", 1, 0)),
            ("a-2".to_string(), seen("a", 1, 0)),
            ("b-1".to_string(), seen("b", 1, 0)),
        ]);
        let r = step(&start, &spec, &placed, 1).unwrap();
        assert_eq!(
            statuses(&r),
            [
                (2, StageStatus::Updating),
                (2, StageStatus::Updating),
                (1, StageStatus::Waiting)
            ]
        );
    }

    #[test]
    fn a_failing_health_check_pauses_and_keeps_the_next_cluster_on_the_old_revision() {
        let spec = spec();
        let r = step(
            &two(),
            &spec,
            &placed(seen("eu", 2, 0), seen("us", 2, 2)),
            1,
        )
        .unwrap();
        let mut broken = seen("eu", 2, 0);
        broken.failing = Some("replica web-1: http 404".into());
        let r = step(&r, &spec, &placed(broken.clone(), seen("us", 2, 2)), 2).unwrap();
        assert_eq!(r.phase, RolloutPhase::Failed);
        assert!(
            r.reason.contains("cluster eu-1") && r.reason.contains("404"),
            "{}",
            r.reason
        );
        assert_eq!(
            statuses(&r),
            [(2, StageStatus::Failed), (1, StageStatus::Waiting)]
        );
        // Failed is final until an operator acts.
        assert!(step(&r, &spec, &placed(broken, seen("us", 2, 2)), 3).is_none());
    }

    #[test]
    fn auto_revert_returns_every_cluster_to_the_stable_revision() {
        let spec = ClusterRollout {
            auto_revert: true,
            ..spec()
        };
        let r = step(
            &two(),
            &spec,
            &placed(seen("eu", 2, 0), seen("us", 2, 2)),
            1,
        )
        .unwrap();
        let mut broken = seen("eu", 2, 0);
        broken.failing = Some("exited".into());
        let r = step(&r, &spec, &placed(broken, seen("us", 2, 2)), 2).unwrap();
        assert_eq!(r.phase, RolloutPhase::RolledBack);
        assert_eq!(
            statuses(&r),
            [(1, StageStatus::RolledBack), (1, StageStatus::Waiting)]
        );
    }

    #[test]
    fn the_progress_deadline_fails_a_slow_cluster_and_rollback_reverts_it() {
        let paused = spec();
        let r = step(
            &two(),
            &paused,
            &placed(seen("eu", 2, 1), seen("us", 2, 0)),
            0,
        )
        .unwrap();
        let observed = placed(seen("eu", 2, 1), seen("us", 2, 0));
        assert!(step(&r, &paused, &observed, 59_999).is_none());
        let failed = step(&r, &paused, &observed, 60_000).unwrap();
        assert_eq!(failed.phase, RolloutPhase::Failed);
        assert!(failed.reason.contains("1/2 healthy"), "{}", failed.reason);

        // autoRevert is about health checks; a missed deadline reverts only with rollback.
        let revert_only = ClusterRollout {
            auto_revert: true,
            ..spec()
        };
        assert_eq!(
            step(&r, &revert_only, &observed, 60_000).unwrap().phase,
            RolloutPhase::Failed
        );
        let rollback = ClusterRollout {
            on_failure: OnFailure::Rollback,
            ..spec()
        };
        let back = step(&r, &rollback, &observed, 60_000).unwrap();
        assert_eq!(back.phase, RolloutPhase::RolledBack);
        assert_eq!(back.clusters["eu-1"].revision, 1);
    }

    #[test]
    fn stages_follow_the_placement() {
        let spec = spec();
        let observed = BTreeMap::from([
            ("eu-1".to_string(), seen("eu", 1, 0)),
            ("ap-1".to_string(), seen("ap", 1, 0)),
        ]);
        let r = step(&two(), &spec, &observed, 1).unwrap();
        assert!(!r.clusters.contains_key("us-1"));
        // ap-1 comes first by name; it joined on the stable revision.
        assert_eq!(r.clusters["ap-1"].status, StageStatus::Updating);
        assert_eq!(r.clusters["eu-1"], ClusterStage::waiting(1));
    }

    #[test]
    fn paused_rollouts_do_not_move() {
        let mut r = two();
        r.pause(1).unwrap();
        assert!(step(&r, &spec(), &placed(seen("eu", 1, 1), seen("us", 1, 1)), 2).is_none());
    }
}
