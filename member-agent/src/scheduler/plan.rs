//! What to start and what to stop: the local scheduler's one decision, free of I/O.
//!
//! For now an update is a plain replace: replicas of another revision are retired while
//! replicas of the new one start. Rolling updates will grow here, in [`plan`], and nowhere else.

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
    Replaced { revision: u64 },
    Surplus { desired: u32 },
}

impl fmt::Display for RetireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetireReason::NotAssigned => {
                f.write_str("the workload is no longer assigned to this cluster")
            }
            RetireReason::Replaced { revision } => write!(f, "replaced by revision {revision}"),
            RetireReason::Surplus { desired } => write!(f, "surplus: {desired} replicas desired"),
        }
    }
}

/// Keeps exactly `replicas` replicas of each assignment's revision.
///
/// Surplus replicas are chosen not-ready first, then newest first (as Kubernetes' ReplicaSet
/// does): a scale-down should not take out a replica that serves while one that does not, or
/// one that has not proven itself yet, remains. When a workload appears twice in `desired`,
/// the last entry wins.
pub fn plan(desired: &[Assignment], replicas: &[ReplicaView<'_>]) -> Vec<Action> {
    let desired: BTreeMap<&WorkloadKey, &Assignment> =
        desired.iter().map(|a| (&a.workload, a)).collect();
    let mut retire = Vec::new();
    let mut current: BTreeMap<&WorkloadKey, Vec<&ReplicaView<'_>>> = BTreeMap::new();
    for replica in replicas.iter().filter(|r| !r.retiring) {
        match desired.get(replica.workload) {
            None => retire.push((replica.id, RetireReason::NotAssigned)),
            Some(a) if a.revision != replica.revision => retire.push((
                replica.id,
                RetireReason::Replaced {
                    revision: a.revision,
                },
            )),
            Some(_) => current.entry(replica.workload).or_default().push(replica),
        }
    }
    let mut start = Vec::new();
    for (workload, assignment) in &desired {
        let mut running = current.remove(workload).unwrap_or_default();
        let have = u32::try_from(running.len()).unwrap_or(u32::MAX);
        if have < assignment.replicas {
            start.push(Action::Start {
                workload: (*workload).clone(),
                count: assignment.replicas - have,
            });
        } else if have > assignment.replicas {
            running.sort_by_key(|r| (r.ready, std::cmp::Reverse(r.seq)));
            let excess = (have - assignment.replicas) as usize;
            for replica in &running[..excess] {
                let reason = RetireReason::Surplus {
                    desired: assignment.replicas,
                };
                retire.push((replica.id, reason));
            }
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
    use hansa_core::TaskTemplate;

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

    #[test]
    fn a_new_revision_replaces_all_old_replicas_at_once() {
        let rows = [("web", 1, true, false), ("web", 1, true, false)];
        let replaced = RetireReason::Replaced { revision: 2 };
        assert_eq!(
            run(&[assignment("web", 2, 2)], &rows),
            [
                retire("web-000000", replaced.clone()),
                retire("web-000001", replaced),
                Action::Start {
                    workload: key("web"),
                    count: 2
                }
            ]
        );
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
            [
                retire("api-000001", RetireReason::Replaced { revision: 2 }),
                Action::Start {
                    workload: key("api"),
                    count: 1
                }
            ]
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
