//! hansa-policies: the placement engine. Pure and deterministic: no I/O, no async, no clock.
//!
//! [`place`] decides how many replicas of a workload each member cluster runs, in three phases,
//! each a small function: filter (may the cluster run one replica at all?), weigh (how strongly
//! does it pull replicas?), divide (how many does it get?). Every decision is explained. The
//! README beside this crate describes the algorithm in prose.

mod constraints;
mod divide;
mod explain;
mod filter;
mod index;
mod priority;
mod quantity;
mod reason;
mod select;
mod verdict;
mod weigh;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod properties_batch;
#[cfg(test)]
mod scenarios;

use hansa_core::{Cluster, Placement, ReplicaScheduling, Resources, Workload};

pub use explain::describe_decision;
pub use filter::{filter_cluster, rules, selects, Filter, ResourceKind};
pub use index::ClusterIndex;
pub use priority::{place_all, Item};
pub use quantity::{format_bytes, format_cpu};

use divide::Share;
use filter::Needs;
use index::Names;
use verdict::{Considered, Decision, Kept, Verdict};

/// Everything a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    pub workload: &'a Workload,
    /// The workload generation being solved (copied into Placement.generation).
    pub generation: u64,
    /// Member clusters as the store knows them. `available` should count this workload's own
    /// running replicas as free, or a placement would push itself away as it rolls out.
    pub clusters: &'a [Cluster],
    /// Free capacity per cluster, in the order of `clusters`, used instead of each
    /// `Cluster::available` (how [`place_all`] shares capacity without copying clusters).
    pub available: Option<&'a [Resources]>,
    /// `clusters` indexed, for callers that place many workloads on the same clusters (see
    /// [`ClusterIndex`]); without one, or with one of other clusters, [`place`] indexes them.
    pub index: Option<&'a ClusterIndex<'a>>,
    /// The proposer's clock in milliseconds, for NoExecute `tolerationSeconds`.
    pub now_ms: u64,
    pub detail: Detail,
}

/// How much of the explanation to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// One decision per input cluster (for `hansa explain`, previews and tests).
    #[default]
    Full,
    /// Only the clusters that receive replicas, and the summary: what the store keeps, since
    /// a thousand filtered clusters per workload would cost more to store than to recompute.
    Summary,
}

impl<'a> Problem<'a> {
    /// Prefer this to a struct literal: fields added later get defaults here.
    pub fn new(workload: &'a Workload, generation: u64, clusters: &'a [Cluster]) -> Self {
        Self {
            workload,
            generation,
            clusters,
            available: None,
            index: None,
            now_ms: 0,
            detail: Detail::Full,
        }
    }

    /// A problem on indexed clusters: index them once, then place many workloads there.
    pub fn indexed(workload: &'a Workload, generation: u64, index: &'a ClusterIndex<'a>) -> Self {
        Self {
            index: Some(index),
            ..Self::new(workload, generation, index.clusters())
        }
    }
}

/// Places `problem.workload` on `problem.clusters`.
///
/// `previous` is the placement currently in force for this workload, if any (one for another
/// workload is ignored). It breaks ties, so that a small change moves few replicas, and tells
/// cordoned or NoSchedule-tainted clusters what they keep; solving again with the result as
/// `previous` returns the same placement.
pub fn place(problem: &Problem<'_>, previous: Option<&Placement>) -> Placement {
    match problem.index {
        Some(index) if std::ptr::eq(index.clusters(), problem.clusters) => {
            place_in(problem, previous, index)
        }
        _ => place_in(problem, previous, &ClusterIndex::new(problem.clusters)),
    }
}

/// [`place`] on the index of `problem.clusters`.
pub(crate) fn place_in(
    problem: &Problem<'_>,
    previous: Option<&Placement>,
    index: &ClusterIndex<'_>,
) -> Placement {
    let workload = problem.workload;
    let previous =
        previous.filter(|p| p.workload == workload.name && p.namespace == workload.namespace);
    let needs = Needs::new(workload, index, problem.now_ms);
    let clusters = index.clusters();
    let order = index.order();
    // What the previous placement runs, per input cluster (the first of a name).
    let mut ran = vec![0u32; clusters.len()];
    for (name, &n) in previous.iter().flat_map(|p| &p.clusters) {
        let at = order.partition_point(|&i| clusters[i].name < *name);
        if let Some(&i) = order.get(at).filter(|&&i| clusters[i].name == *name) {
            ran[i] = n;
        }
    }
    // Most clusters are filtered, and a summary names them only when some replica is
    // unplaced: decide without keeping them, and put them back when the summary must.
    let mut kept = match problem.detail {
        Detail::Full => Kept::Every,
        Detail::Summary => Kept::Eligible,
    };
    let (mut decision, forget) = decide(&needs, problem.available, &ran, kept);
    let (explanation, chosen) = loop {
        let chosen = chosen(&decision.considered);
        if let Some(explanation) =
            explain::explain(workload, clusters, &decision, &chosen, problem.detail, kept)
        {
            break (explanation, chosen);
        }
        let running = |i: usize| if forget[i] { 0 } else { ran[i] };
        decision = with_filtered(&needs, problem.available, running, decision);
        kept = Kept::Every;
    };
    Placement {
        workload: workload.name.clone(),
        namespace: workload.namespace.clone(),
        generation: problem.generation,
        clusters: chosen
            .iter()
            .map(|(c, replicas)| (clusters[c.at()].name.clone(), *replicas))
            .collect(),
        explanation,
    }
}

/// The considered clusters that receive replicas, and how many.
fn chosen(considered: &[Considered]) -> Vec<(&Considered, u32)> {
    considered
        .iter()
        .filter(|c| c.selected && c.replicas > 0)
        .map(|c| (c, c.replicas))
        .collect()
}

/// The filter and weigh phases for the cluster at position `i`, which runs `running`.
fn consider<'a>(
    needs: &'a Needs<'a>,
    available: Option<&[Resources]>,
    i: usize,
    running: u32,
) -> Verdict<'a> {
    let available = available
        .and_then(|a| a.get(i))
        .unwrap_or(&needs.index.facts(i).available);
    match filter::check(needs, i, available, running) {
        Ok(e) => Verdict::Selected {
            share: Share {
                weight: weigh::weigh(needs, i, e.fits),
                fits: e.fits,
                previous: running,
                avoid: e.avoid.is_some(),
                pinned: e.keeps_only.is_some(),
            },
            note: e.note,
            keeps_only: e.keeps_only,
            avoided: e.avoid,
        },
        Err(filter) => Verdict::Filtered(filter),
    }
}

/// `eligible` (a decision's clusters, in name order, without the filtered ones) with every
/// other cluster back in its place, filtered for the reason the decision found, given what
/// it took each cluster to run: what a summary needs to name them.
fn with_filtered<'a>(
    needs: &'a Needs<'a>,
    available: Option<&[Resources]>,
    running: impl Fn(usize) -> u32,
    eligible: Decision<'a>,
) -> Decision<'a> {
    let index = needs.index;
    let clusters = index.clusters();
    let unique_sorted = index.names() == Names::Ordered;
    let mut records = eligible.considered.iter().peekable();
    let mut every = Decision::with_capacity(clusters.len());
    let mut last: Option<&str> = None;
    for &i in index.order() {
        let cluster = &clusters[i];
        let duplicate = !unique_sorted && last == Some(cluster.name.as_str());
        last = Some(cluster.name.as_str());
        if let Some(c) = records.next_if(|c| c.at() == i) {
            every.push_from(&eligible, c);
            continue;
        }
        let verdict = if duplicate {
            Verdict::Filtered(verdict::Plain::DuplicateName.into())
        } else {
            consider(needs, available, i, running(i))
        };
        debug_assert!(
            matches!(verdict, Verdict::Filtered(_)),
            "{} was eligible",
            cluster.name
        );
        every.push(i, verdict);
    }
    every
}

/// Every phase, for the clusters in name order: `ran` is what the previous placement runs,
/// per cluster position, and `available` the free capacity when not the clusters' own.
/// Also returns which clusters were decided on as running nothing (see below).
fn decide<'a>(
    needs: &'a Needs<'a>,
    available: Option<&[Resources]>,
    ran: &[u32],
    kept: Kept,
) -> (Decision<'a>, Vec<bool>) {
    let index = needs.index;
    let clusters = index.clusters();
    // With strictly increasing names no two share one.
    let unique_sorted = index.names() == Names::Ordered;
    // Without the filtered clusters to keep, only those the workload's affinity may pick are
    // looked at (when names are unique: a duplicate must follow the cluster it repeats).
    let candidates = match (&needs.affinity, kept, unique_sorted) {
        (Some(affinity), Kept::Eligible, true) => affinity.candidates(index),
        _ => None,
    };
    let order = candidates.as_deref().unwrap_or(index.order());
    // A cluster that could only keep its replicas (cordoned, NoSchedule) and ends with none
    // must not have shaped the decision (group counts, PreferNoSchedule fallbacks): solving
    // again, where it runs none, would differ. Such clusters are forgotten and the decision
    // is made again; each round forgets at least one, so this ends.
    let mut forget = vec![false; clusters.len()];
    let (mut decision, pinned) = loop {
        let mut decision = Decision::with_capacity(order.len());
        // Positions of the clusters that only keep what they run: few, usually none, so the
        // checks below look at them alone instead of at every cluster.
        let mut pinned: Vec<usize> = Vec::new();
        let mut last: Option<&str> = None;
        for &i in order {
            let cluster = &clusters[i];
            let verdict = if !unique_sorted && last == Some(cluster.name.as_str()) {
                Verdict::Filtered(verdict::Plain::DuplicateName.into())
            } else {
                let running = if forget[i] { 0 } else { ran[i] };
                consider(needs, available, i, running)
            };
            last = Some(cluster.name.as_str());
            match verdict {
                Verdict::Filtered(_) if kept == Kept::Eligible => continue,
                Verdict::Selected {
                    keeps_only: Some(_),
                    ..
                } => pinned.push(decision.considered.len()),
                _ => {}
            }
            decision.push(i, verdict);
        }
        select::run(needs, &mut decision);
        let mut again = false;
        for &at in &pinned {
            let c = &decision.considered[at];
            if !(c.selected && c.replicas > 0) {
                forget[c.at()] = true;
                again = true;
            }
        }
        if !again {
            break (decision, pinned);
        }
    };
    // A cluster that could only keep its replicas and ends with none reads as filtered, so
    // that solving again (where it runs none) gives the same explanation.
    // One that keeps fewer than it ran fits only those from now on, and weighs as such
    // (AvailableCapacity weighs by fit).
    for &at in &pinned {
        if !decision.considered[at].selected {
            continue;
        }
        match decision.take_keeps_only(at) {
            Some(filter) if decision.considered[at].replicas == 0 => decision.filter(at, filter),
            Some(_) => {
                let c = &mut decision.considered[at];
                c.fits = c.replicas;
                c.weight = weigh::weigh(needs, c.at(), c.replicas);
            }
            None => {}
        }
    }
    debug_assert_eq!(postconditions(needs.workload, &decision.considered), Ok(()));
    (decision, forget)
}

/// What the divide phase promises, whatever the input.
fn postconditions(workload: &Workload, considered: &[Considered]) -> Result<(), String> {
    let mut placed = 0u64;
    for c in considered.iter().filter(|c| c.selected) {
        let replicas = c.replicas;
        if replicas > c.fits {
            return Err(format!(
                "{replicas} replicas on the cluster at {}, which fits {}",
                c.at(),
                c.fits
            ));
        }
        if workload.placement.replica_scheduling == ReplicaScheduling::Duplicated
            && replicas > workload.replicas
        {
            return Err(format!(
                "the cluster at {} got more than the {} desired",
                c.at(),
                workload.replicas
            ));
        }
        placed += u64::from(replicas);
    }
    if workload.placement.replica_scheduling != ReplicaScheduling::Duplicated
        && placed > u64::from(workload.replicas)
    {
        return Err(format!(
            "{placed} replicas placed, {} desired",
            workload.replicas
        ));
    }
    Ok(())
}
