//! Placing many workloads against shared capacity, higher priority first.
//!
//! Capacity is shared: a replica placed for one workload is not free for the next. Replicas
//! that already run are protected: a workload sees the capacity nobody uses plus what its own
//! replicas use, so a higher-priority workload takes free room first but does not push running
//! lower-priority replicas out. With `preemption: true` it may: it also sees what running
//! replicas of strictly lower-priority workloads use, and what it takes from them is gone when
//! their turn comes (their explanation names the preemptor).

use std::borrow::Cow;
use std::collections::HashMap;

use hansa_core::{Cluster, Placement, Resources, Workload};

use crate::{place_in, ClusterIndex, Detail, Problem};

/// One workload of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub workload: &'a Workload,
    pub generation: u64,
    /// The placement in force, if any; its replicas' usage is counted as theirs.
    pub previous: Option<&'a Placement>,
}

/// Places every item against the clusters' shared capacity, higher `priority` first (then by
/// namespace/name). `Cluster::available` is what is free with every item's previous replicas
/// running. Returns one placement per item, in the items' order.
///
/// Each workload decides first as if lower-ranked workloads ran nothing (on the room that
/// higher-ranked ones leave it) and keeps that decision when it fits beside the replicas they
/// run; only a workload they stand in the way of decides again on what is really free. So a
/// workload's decision does not depend on lower-ranked ones unless it must, and placing the
/// batch again with its own answer as `previous` changes no placement: every workload sees
/// the same room as before and [`place`] is a fixed point of its own answer. When workloads
/// stood in the way, the batch is placed again from its own answer until that holds (a few
/// passes at most).
pub fn place_all(
    clusters: &[Cluster],
    items: &[Item<'_>],
    now_ms: u64,
    detail: Detail,
) -> Vec<Placement> {
    let clusters: Cow<'_, [Cluster]> = if clusters.windows(2).all(|w| w[0].name <= w[1].name) {
        Cow::Borrowed(clusters)
    } else {
        let mut sorted = clusters.to_vec();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        Cow::Owned(sorted)
    };
    let batch = Batch::new(&clusters, items, now_ms, detail);
    let previous: Vec<Option<&Placement>> = items.iter().map(|item| item.previous).collect();
    let (mut out, mut blocked) = batch.pass(&previous);
    for _ in 1..MAX_PASSES {
        if !blocked {
            break;
        }
        let previous: Vec<Option<&Placement>> = out.iter().map(Some).collect();
        let (again, still_blocked) = batch.pass(&previous);
        let same = again
            .iter()
            .zip(&out)
            .all(|(a, b)| a.clusters == b.clusters);
        out = again;
        blocked = still_blocked && !same;
    }
    out
}

/// Passes over a batch before giving up on a fixed point (each costs one decision per item).
const MAX_PASSES: usize = 4;

/// A batch and the capacity it shares.
struct Batch<'a> {
    clusters: &'a [Cluster],
    items: &'a [Item<'a>],
    now_ms: u64,
    detail: Detail,
    /// The clusters, indexed once for every decision of the batch.
    index: ClusterIndex<'a>,
    position: HashMap<&'a str, usize>,
    /// Per cluster, what is free with none of the items' replicas running (capped at what
    /// the cluster can allocate: room beyond it is not real).
    base: Vec<Resources>,
    /// Items, higher priority first.
    order: Vec<usize>,
}

impl<'a> Batch<'a> {
    fn new(clusters: &'a [Cluster], items: &'a [Item<'a>], now_ms: u64, detail: Detail) -> Self {
        let position: HashMap<&str, usize> = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut batch = Batch {
            clusters,
            items,
            now_ms,
            detail,
            index: ClusterIndex::new(clusters),
            position,
            base: Vec::new(),
            order: Vec::new(),
        };
        let previous: Vec<Option<&Placement>> = items.iter().map(|item| item.previous).collect();
        let mut held = vec![Resources::ZERO; clusters.len()];
        for r in batch.reservations(&previous).iter().flatten() {
            held[r.0] = held[r.0].saturating_add(&r.1);
        }
        batch.base = clusters
            .iter()
            .zip(&held)
            .map(|(c, held)| cap(c.available.saturating_add(held), &c.allocatable))
            .collect();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| {
            let (wa, wb) = (items[a].workload, items[b].workload);
            wb.placement
                .priority
                .cmp(&wa.placement.priority)
                .then_with(|| wa.key().cmp(&wb.key()))
                .then(a.cmp(&b))
        });
        batch.order = order;
        batch
    }

    /// What each item's previous replicas hold, per cluster position.
    fn reservations(&self, previous: &[Option<&Placement>]) -> Vec<Vec<(usize, Resources)>> {
        self.items
            .iter()
            .zip(previous)
            .map(|(item, previous)| {
                let requests = item.workload.template.resources;
                previous
                    .filter(|p| {
                        p.workload == item.workload.name && p.namespace == item.workload.namespace
                    })
                    .map(|p| {
                        p.clusters
                            .iter()
                            .filter_map(|(name, n)| {
                                Some((*self.position.get(name.as_str())?, requests.times(*n)))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// One decision per item, in priority order, with `previous[i]` running for item `i`.
    /// Also says whether some item's first decision did not fit beside lower-ranked replicas.
    fn pass(&self, previous: &[Option<&Placement>]) -> (Vec<Placement>, bool) {
        let (clusters, items) = (self.clusters, self.items);
        let mut reserved = self.reservations(previous);
        // Really free: nobody's replicas there.
        let mut free = self.base.clone();
        for (c, r) in reserved.iter().flatten() {
            free[*c] = free[*c].saturating_sub(r);
        }
        // Not taken by a higher-ranked item's new placement: what a decision weighs.
        let mut untaken = self.base.clone();
        let mut blocked = false;
        let mut preempted: Vec<Vec<String>> = vec![Vec::new(); items.len()];
        let mut out: Vec<Option<Placement>> = vec![None; items.len()];
        for (rank, &i) in self.order.iter().enumerate() {
            let item = &items[i];
            for (c, r) in std::mem::take(&mut reserved[i]) {
                free[c] = free[c].saturating_add(&r);
            }
            let priority = item.workload.placement.priority;
            let lower: Vec<usize> = if item.workload.placement.preemption {
                self.order[rank + 1..]
                    .iter()
                    .copied()
                    .filter(|&j| items[j].workload.placement.priority < priority)
                    .collect()
            } else {
                Vec::new()
            };
            let mut preemptible = None;
            if lower.iter().any(|&j| !reserved[j].is_empty()) {
                let mut visible = free.clone();
                for &j in &lower {
                    for (c, r) in &reserved[j] {
                        visible[*c] = visible[*c].saturating_add(r);
                    }
                }
                preemptible = Some(visible);
            }
            let usable: &[Resources] = preemptible.as_deref().unwrap_or(&free);
            let requests = item.workload.template.resources;
            let decide = |available: &[Resources]| {
                let problem = Problem {
                    workload: item.workload,
                    generation: item.generation,
                    clusters,
                    available: Some(available),
                    index: Some(&self.index),
                    now_ms: self.now_ms,
                    detail: self.detail,
                };
                place_in(&problem, previous[i], &self.index)
            };
            let mut placement = decide(&untaken);
            if untaken.as_slice() != usable {
                let fits = placement.clusters.iter().all(|(name, n)| {
                    self.position.get(name.as_str()).is_some_and(|&c| {
                        let need = requests.times(*n);
                        need.min_each(&usable[c]) == need
                    })
                });
                if !fits {
                    blocked = true;
                    placement = decide(usable);
                }
            }
            for (name, n) in &placement.clusters {
                let Some(&c) = self.position.get(name.as_str()) else {
                    continue;
                };
                let mut need = requests.times(*n);
                untaken[c] = untaken[c].saturating_sub(&need);
                let from_free = need.min_each(&free[c]);
                free[c] = free[c].saturating_sub(&from_free);
                need = need.saturating_sub(&from_free);
                // Whatever free room did not cover comes from the lowest-priority reservations.
                for &j in lower.iter().rev() {
                    if need == Resources::ZERO {
                        break;
                    }
                    for (rc, r) in reserved[j].iter_mut().filter(|(rc, _)| *rc == c) {
                        let taken = need.min_each(r);
                        if taken != Resources::ZERO {
                            *r = r.saturating_sub(&taken);
                            need = need.saturating_sub(&taken);
                            let note = format!(
                                "{} on {} by {} (priority {priority})",
                                items[j].workload.name,
                                clusters[*rc].name,
                                item.workload.key()
                            );
                            preempted[j].push(note);
                        }
                    }
                }
            }
            if !preempted[i].is_empty() {
                placement.explanation.summary = format!(
                    "{}; preempted: {}",
                    placement.explanation.summary,
                    preempted[i].join(", ")
                );
            }
            out[i] = Some(placement);
        }
        (out.into_iter().flatten().collect(), blocked)
    }
}

/// `value` capped at `limit` in every dimension where `limit` is known (non-zero).
fn cap(value: Resources, limit: &Resources) -> Resources {
    let dim = |v: u64, l: u64| if l == 0 { v } else { v.min(l) };
    Resources {
        cpu_millis: dim(value.cpu_millis, limit.cpu_millis),
        memory_bytes: dim(value.memory_bytes, limit.memory_bytes),
        disk_bytes: dim(value.disk_bytes, limit.disk_bytes),
    }
}
