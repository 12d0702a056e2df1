//! What to start and what to stop: the local scheduler's one decision, free of I/O.
//!
//! A new revision replaces the old one as a Kubernetes Deployment does, within the
//! assignment's [`UpdateStrategy`](hansa_core::UpdateStrategy): new replicas start while the
//! total stays within `replicas + maxSurge`, and old ones stop while the ready replicas stay at
//! least `replicas - maxUnavailable`. Old replicas that are not ready go first: they serve
//! nobody. The agent plans again whenever a replica changes state, so the update advances as
//! new replicas become ready.

use std::collections::BTreeMap;
use std::fmt;

use hansa_core::{Assignment, WorkloadKey};

/// A replica as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaView<'a> {
    pub id: &'a str,
    pub workload: &'a WorkloadKey,
    pub revision: u64,
    /// Creation order on this agent; higher is newer.
    pub seq: u64,
    /// Running and healthy.
    pub ready: bool,
    /// Already being stopped: neither counted nor retired again.
    pub retiring: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start { workload: WorkloadKey, count: u32 },
    Retire { id: String, reason: RetireReason },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireReason {
    NotAssigned,
    Replaced {
        revision: u64,
    },
    Surplus {
        desired: u32,
    },
    /// Its node's runtime did not answer for so long that the replica was replaced on
    /// another node; the node is back, so this one goes.
    Lost,
}

impl fmt::Display for RetireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetireReason::NotAssigned => {
                f.write_str("the workload is no longer assigned to this cluster")
            }
            RetireReason::Replaced { revision } => write!(f, "replaced by revision {revision}"),
            RetireReason::Surplus { desired } => write!(f, "surplus: {desired} replicas desired"),
            RetireReason::Lost => {
                f.write_str("replaced on another node while its node was unreachable")
            }
        }
    }
}

/// Keeps `replicas` replicas of each assignment's revision, replacing other revisions within
/// the assignment's update strategy.
///
/// Surplus replicas are chosen not-ready first, then newest first (as Kubernetes' ReplicaSet
/// does): a scale-down should not take out a replica that serves while one that does not, or
/// one that has not proven itself yet, remains. When a workload appears twice in `desired`,
/// the last entry wins.
pub fn plan(desired: &[Assignment], replicas: &[ReplicaView<'_>]) -> Vec<Action> {
    let desired: BTreeMap<&WorkloadKey, &Assignment> =
        desired.iter().map(|a| (&a.workload, a)).collect();
    let mut retire = Vec::new();
    // (current revision, other revisions) per assigned workload.
    type Split<'r, 'a> = (Vec<&'r ReplicaView<'a>>, Vec<&'r ReplicaView<'a>>);
    let mut current: BTreeMap<&WorkloadKey, Split<'_, '_>> = BTreeMap::new();
    for replica in replicas.iter().filter(|r| !r.retiring) {
        match desired.get(replica.workload) {
            None => retire.push((replica.id, RetireReason::NotAssigned)),
            Some(a) => {
                let entry = current.entry(replica.workload).or_default();
                if a.revision == replica.revision {
                    entry.0.push(replica);
                } else {
                    entry.1.push(replica);
                }
            }
        }
    }
    let mut start = Vec::new();
    for (workload, assignment) in &desired {
        let (mut new, mut old) = current.remove(workload).unwrap_or_default();
        let want = assignment.replicas;
        let count = |v: &[&ReplicaView<'_>]| u32::try_from(v.len()).unwrap_or(u32::MAX);
        let ready = |v: &[&ReplicaView<'_>]| {
            u32::try_from(v.iter().filter(|r| r.ready).count()).unwrap_or(u32::MAX)
        };
        // Not ready first, then newest first.
        let order = |v: &mut Vec<&ReplicaView<'_>>| {
            v.sort_by_key(|r| (r.ready, std::cmp::Reverse(r.seq)));
        };
        if count(&new) > want {
            order(&mut new);
            let excess = (count(&new) - want) as usize;
            for replica in new.drain(..excess) {
                retire.push((replica.id, RetireReason::Surplus { desired: want }));
            }
        }
        let replaced = RetireReason::Replaced {
            revision: assignment.revision,
        };
        let (surge, unavailable) = assignment.update.resolve(want);
        // Old replicas that are not ready serve nobody: they go at once.
        order(&mut old);
        let unready_old = old.iter().take_while(|r| !r.ready).count();
        for replica in old.drain(..unready_old) {
            retire.push((replica.id, replaced.clone()));
        }
        // Ready old replicas go while the ready ones stay at least `want - unavailable`.
        let floor = want.saturating_sub(unavailable);
        let removable = (ready(&new).min(want) + ready(&old)).saturating_sub(floor);
        let removable = (removable as usize).min(old.len());
        // Oldest first among the ready ones.
        old.sort_by_key(|r| r.seq);
        for replica in old.drain(..removable) {
            retire.push((replica.id, replaced.clone()));
        }
        // New replicas start while the total stays within `want + surge`.
        let total = count(&new) + count(&old);
        let missing = want.saturating_sub(count(&new));
        let room = (want + surge).saturating_sub(total);
        let n = missing.min(room);
        if n > 0 {
            start.push(Action::Start {
                workload: (*workload).clone(),
                count: n,
            });
        }
    }
    retire.sort_by(|a, b| a.0.cmp(b.0));
    retire
        .into_iter()
        .map(|(id, reason)| Action::Retire {
            id: id.to_string(),
            reason,
        })
        .chain(start)
        .collect()
}

#[cfg(test)]
mod tests {
    use hansa_core::{Amount, TaskTemplate, UpdateStrategy};

    use super::*;

    fn key(name: &str) -> WorkloadKey {
        WorkloadKey::new("default", name)
    }

    fn assignment(name: &str, revision: u64, replicas: u32) -> Assignment {
        Assignment {
            workload: key(name),
            revision,
            replicas,
            template: TaskTemplate::default(),
            update: UpdateStrategy::default(),
        }
    }

    struct Fixture {
        keys: Vec<WorkloadKey>,
        ids: Vec<String>,
    }

    /// (workload, revision, ready, retiring) per replica; seq is the position.
    fn fixture(rows: &[(&str, u64, bool, bool)]) -> (Fixture, Vec<(u64, bool, bool)>) {
        let keys = rows.iter().map(|r| key(r.0)).collect();
        let ids = rows
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{}-{i:06x}", r.0))
            .collect();
        let rest = rows.iter().map(|r| (r.1, r.2, r.3)).collect();
        (Fixture { keys, ids }, rest)
    }

    fn run(desired: &[Assignment], rows: &[(&str, u64, bool, bool)]) -> Vec<Action> {
        let (f, rest) = fixture(rows);
        let views: Vec<ReplicaView<'_>> = rest
            .iter()
            .enumerate()
            .map(|(i, &(revision, ready, retiring))| ReplicaView {
                id: &f.ids[i],
                workload: &f.keys[i],
                revision,
                seq: i as u64,
                ready,
                retiring,
            })
            .collect();
        plan(desired, &views)
    }

    fn retire(id: &str, reason: RetireReason) -> Action {
        Action::Retire {
            id: id.to_string(),
            reason,
        }
    }

    #[test]
    fn starts_what_is_missing() {
        assert_eq!(
            run(&[assignment("web", 1, 3)], &[("web", 1, true, false)]),
            [Action::Start {
                workload: key("web"),
                count: 2
            }]
        );
    }

    #[test]
    fn nothing_to_do_is_nothing() {
        let rows = [("web", 1, true, false), ("web", 1, false, false)];
        assert!(run(&[assignment("web", 1, 2)], &rows).is_empty());
    }

    #[test]
    fn scale_down_retires_unready_then_newest() {
        let rows = [
            ("web", 1, true, false),
            ("web", 1, false, false),
            ("web", 1, true, false),
            ("web", 1, true, false),
        ];
        let surplus = RetireReason::Surplus { desired: 2 };
        assert_eq!(
            run(&[assignment("web", 1, 2)], &rows),
            [
                retire("web-000001", surplus.clone()),
                retire("web-000003", surplus)
            ]
        );
    }

    fn with(update: UpdateStrategy, a: Assignment) -> Assignment {
        Assignment { update, ..a }
    }

    fn strategy(surge: Amount, unavailable: Amount) -> UpdateStrategy {
        UpdateStrategy {
            max_surge: surge,
            max_unavailable: unavailable,
        }
    }

    #[test]
    fn a_new_revision_rolls_within_surge_and_unavailable() {
        // 4 replicas, maxSurge 1, maxUnavailable 1: one old goes, two new start (4 - 1 + 2 = 5).
        let rows = [
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 1, true, false),
        ];
        let a = with(
            strategy(Amount::Count(1), Amount::Count(1)),
            assignment("web", 2, 4),
        );
        let replaced = RetireReason::Replaced { revision: 2 };
        assert_eq!(
            run(std::slice::from_ref(&a), &rows),
            [
                retire("web-000000", replaced.clone()),
                Action::Start {
                    workload: key("web"),
                    count: 2
                }
            ]
        );
        // The two new ones are not ready yet: nothing more may go, nothing more may start.
        let rows = [
            ("web", 1, true, true),
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 2, false, false),
            ("web", 2, false, false),
        ];
        assert!(run(std::slice::from_ref(&a), &rows).is_empty());
        // Both ready: two more old go, two more new start.
        let rows = [
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 2, true, false),
            ("web", 2, true, false),
        ];
        assert_eq!(
            run(std::slice::from_ref(&a), &rows),
            [
                retire("web-000000", replaced.clone()),
                retire("web-000001", replaced.clone()),
                Action::Start {
                    workload: key("web"),
                    count: 2
                }
            ]
        );
    }

    #[test]
    fn unready_old_replicas_go_first_and_recreate_stops_everything() {
        let rows = [
            ("web", 1, true, false),
            ("web", 1, false, false),
            ("web", 1, true, false),
        ];
        let a = with(
            strategy(Amount::Count(0), Amount::Count(1)),
            assignment("web", 2, 3),
        );
        let replaced = RetireReason::Replaced { revision: 2 };
        // The unready one goes (it was the one unavailable replica allowed); the two ready ones
        // stay (3 - 1 = 2 must stay ready) and 1 new starts in its place.
        assert_eq!(
            run(&[a], &rows),
            [
                retire("web-000001", replaced.clone()),
                Action::Start {
                    workload: key("web"),
                    count: 1
                }
            ]
        );
        // Kubernetes' Recreate: surge 0, unavailable 100%.
        let recreate = with(
            strategy(Amount::Count(0), Amount::Percent(100)),
            assignment("web", 2, 3),
        );
        let actions = run(&[recreate], &rows);
        assert_eq!(actions.len(), 4, "{actions:?}");
        assert_eq!(
            actions[3],
            Action::Start {
                workload: key("web"),
                count: 3
            }
        );
    }

    #[test]
    fn marathon_defaults_start_all_new_before_stopping_old() {
        let rows = [("web", 1, true, false), ("web", 1, true, false)];
        let a = with(UpdateStrategy::marathon(1.0, 1.0), assignment("web", 2, 2));
        assert_eq!(
            run(std::slice::from_ref(&a), &rows),
            [Action::Start {
                workload: key("web"),
                count: 2
            }]
        );
        let rows = [
            ("web", 1, true, false),
            ("web", 1, true, false),
            ("web", 2, true, false),
            ("web", 2, true, false),
        ];
        let replaced = RetireReason::Replaced { revision: 2 };
        assert_eq!(
            run(&[a], &rows),
            [
                retire("web-000000", replaced.clone()),
                retire("web-000001", replaced)
            ]
        );
    }

    /// Simulates a whole update, replicas becoming ready one step after they start: at no
    /// step are fewer than `want - unavailable` ready or more than `want + surge` alive, and
    /// the update finishes.
    #[test]
    fn a_simulated_rollout_keeps_its_bounds_and_finishes() {
        for (want, surge, unavailable) in [(4, 1, 1), (5, 0, 2), (3, 3, 0), (10, 3, 2), (1, 1, 0)] {
            let a = with(
                strategy(Amount::Count(surge), Amount::Count(unavailable)),
                assignment("web", 2, want),
            );
            // (revision, ready, seq)
            let mut alive: Vec<(u64, bool, u64)> =
                (0..u64::from(want)).map(|i| (1, true, i)).collect();
            let mut seq = u64::from(want);
            for step in 0.. {
                assert!(step < 100, "no progress: {alive:?}");
                let ids: Vec<String> = alive.iter().map(|r| format!("r{}", r.2)).collect();
                let k = key("web");
                let views: Vec<ReplicaView<'_>> = alive
                    .iter()
                    .zip(&ids)
                    .map(|(r, id)| ReplicaView {
                        id,
                        workload: &k,
                        revision: r.0,
                        seq: r.2,
                        ready: r.1,
                        retiring: false,
                    })
                    .collect();
                let actions = plan(std::slice::from_ref(&a), &views);
                let ready = alive.iter().filter(|r| r.1).count() as u32;
                assert!(ready + unavailable.max(u32::from(surge == 0 && unavailable == 0)) >= want);
                assert!(alive.len() as u32 <= want + surge);
                // Everything started earlier is ready now.
                for r in &mut alive {
                    r.1 = true;
                }
                if actions.is_empty() && alive.iter().all(|r| r.0 == 2) {
                    assert_eq!(alive.len() as u32, want);
                    break;
                }
                for action in actions {
                    match action {
                        Action::Retire { id, .. } => alive.retain(|r| format!("r{}", r.2) != id),
                        Action::Start { count, .. } => {
                            for _ in 0..count {
                                alive.push((2, false, seq));
                                seq += 1;
                            }
                        }
                    }
                }
                let ready_after = alive.iter().filter(|r| r.1).count() as u32;
                assert!(
                    ready_after + unavailable.max(u32::from(surge == 0 && unavailable == 0))
                        >= want,
                    "want {want} surge {surge} unavailable {unavailable}: {ready_after} ready"
                );
                assert!(alive.len() as u32 <= want + surge, "{alive:?}");
            }
        }
    }

    #[test]
    fn unassigned_workloads_are_retired_and_retiring_replicas_left_alone() {
        let rows = [
            ("old", 1, true, false),
            ("web", 1, true, true),
            ("web", 1, true, false),
        ];
        assert_eq!(
            run(&[assignment("web", 1, 1)], &rows),
            [retire("old-000000", RetireReason::NotAssigned)]
        );
    }

    #[test]
    fn other_workloads_are_untouched() {
        let rows = [("web", 1, true, false), ("api", 1, true, false)];
        assert_eq!(
            run(&[assignment("web", 1, 1), assignment("api", 2, 1)], &rows),
            // One replica, 25% surge (rounded up: 1), 25% unavailable (rounded down: 0): the
            // new api replica starts before the old one stops.
            [Action::Start {
                workload: key("api"),
                count: 1
            }]
        );
    }

    #[test]
    fn replanning_after_acting_is_a_no_op() {
        let desired = [assignment("web", 2, 2), assignment("api", 1, 1)];
        let rows = [
            ("web", 1, true, true),
            ("web", 2, false, false),
            ("web", 2, true, false),
            ("api", 1, true, false),
        ];
        assert!(run(&desired, &rows).is_empty());
    }
}
