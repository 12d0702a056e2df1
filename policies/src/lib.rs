//! hansa-policies: the placement engine. Pure and deterministic: no I/O, no async, no clock.
//!
//! [`place`] decides how many replicas of a workload each member cluster runs, in three phases,
//! each a small function: filter (may the cluster run one replica at all?), weigh (how strongly
//! does it pull replicas?), divide (how many does it get?). Every decision is explained. The
//! README beside this crate describes the algorithm in prose.

mod divide;
mod explain;
mod filter;
mod quantity;
mod weigh;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod scenarios;

use std::collections::BTreeSet;

use hansa_core::{Cluster, Placement, ReplicaScheduling, Workload};

pub use explain::describe_decision;
pub use filter::{filter_cluster, rules, selects, Filter, ResourceKind};
pub use quantity::{format_bytes, format_cpu};

use divide::Share;

/// Everything a decision depends on. Shaped for the full engine of a later issue (policy objects,
/// taints, spread constraints, priorities): add fields then, keep callers unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    pub workload: &'a Workload,
    /// The workload generation being solved (copied into Placement.generation).
    pub generation: u64,
    /// Member clusters as the store knows them. `available` should count this workload's own
    /// running replicas as free, or a placement would push itself away as it rolls out.
    pub clusters: &'a [Cluster],
}

impl<'a> Problem<'a> {
    /// Prefer this to a struct literal: fields added later get defaults here.
    pub fn new(workload: &'a Workload, generation: u64, clusters: &'a [Cluster]) -> Self {
        Self {
            workload,
            generation,
            clusters,
        }
    }
}

/// One cluster on its way through the phases.
pub(crate) struct Considered<'c> {
    pub cluster: &'c Cluster,
    pub verdict: Verdict,
}

pub(crate) enum Verdict {
    Filtered(Filter),
    Selected { share: Share, replicas: u32 },
}

/// Places `problem.workload` on `problem.clusters`.
///
/// `previous` is the placement currently in force for this workload, if any (one for another
/// workload is ignored). It only breaks ties, so that a small change moves few replicas; solving
/// again with the result as `previous` returns the same placement.
pub fn place(problem: &Problem<'_>, previous: Option<&Placement>) -> Placement {
    let workload = problem.workload;
    let previous =
        previous.filter(|p| p.workload == workload.name && p.namespace == workload.namespace);

    let filtered = filter_phase(workload, problem.clusters);
    let weighed: Vec<(&Cluster, Result<Share, Filter>)> = filtered
        .into_iter()
        .map(|(cluster, verdict)| {
            let share = verdict.map(|fits| Share {
                weight: weigh::weigh(workload, cluster, fits),
                fits,
                previous: previous
                    .and_then(|p| p.clusters.get(&cluster.name).copied())
                    .unwrap_or(0),
            });
            (cluster, share)
        })
        .collect();
    let shares: Vec<Share> = weighed
        .iter()
        .filter_map(|(_, share)| share.as_ref().ok().copied())
        .collect();
    let replicas = divide_phase(workload, &shares);
    debug_assert_eq!(postconditions(workload, &shares, &replicas), Ok(()));

    let mut replicas = replicas.into_iter();
    let considered: Vec<Considered<'_>> = weighed
        .into_iter()
        .map(|(cluster, share)| Considered {
            cluster,
            verdict: match share {
                Ok(share) => Verdict::Selected {
                    share,
                    replicas: replicas.next().unwrap_or(0),
                },
                Err(filter) => Verdict::Filtered(filter),
            },
        })
        .collect();

    Placement {
        workload: workload.name.clone(),
        namespace: workload.namespace.clone(),
        generation: problem.generation,
        clusters: considered
            .iter()
            .filter_map(|c| match c.verdict {
                Verdict::Selected { replicas, .. } if replicas > 0 => {
                    Some((c.cluster.name.clone(), replicas))
                }
                _ => None,
            })
            .collect(),
        explanation: explain::explain(workload, &considered),
    }
}

/// Every cluster in name order, with how many replicas it fits or why it cannot run one.
fn filter_phase<'c>(
    workload: &Workload,
    clusters: &'c [Cluster],
) -> Vec<(&'c Cluster, Result<u32, Filter>)> {
    let mut sorted: Vec<&Cluster> = clusters.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = BTreeSet::new();
    sorted
        .into_iter()
        .map(|cluster| {
            let verdict = if seen.insert(cluster.name.as_str()) {
                filter_cluster(workload, cluster)
            } else {
                Err(Filter::DuplicateName)
            };
            (cluster, verdict)
        })
        .collect()
}

fn divide_phase(workload: &Workload, shares: &[Share]) -> Vec<u32> {
    match workload.placement.replica_scheduling {
        ReplicaScheduling::Duplicated => divide::duplicated(workload.replicas, shares),
        ReplicaScheduling::Divided { .. } => divide::divided(workload.replicas, shares),
    }
}

/// What the divide phase promises, whatever the input.
fn postconditions(workload: &Workload, shares: &[Share], replicas: &[u32]) -> Result<(), String> {
    if shares.len() != replicas.len() {
        return Err(format!(
            "{} eligible clusters but {} counts",
            shares.len(),
            replicas.len()
        ));
    }
    if let Some((share, n)) = shares.iter().zip(replicas).find(|(s, n)| **n > s.fits) {
        return Err(format!(
            "{n} replicas on a cluster that fits {}",
            share.fits
        ));
    }
    let placed: u64 = replicas.iter().map(|&n| u64::from(n)).sum();
    match workload.placement.replica_scheduling {
        ReplicaScheduling::Divided { .. } if placed > u64::from(workload.replicas) => Err(format!(
            "{placed} replicas placed, {} desired",
            workload.replicas
        )),
        ReplicaScheduling::Duplicated if replicas.iter().any(|&n| n > workload.replicas) => Err(
            format!("a cluster got more than the {} desired", workload.replicas),
        ),
        _ => Ok(()),
    }
}
