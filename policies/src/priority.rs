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

use crate::{place, Detail, Problem};

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
    let position: HashMap<&str, usize> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();

    // What each item's running replicas hold, per cluster position.
    let mut reserved: Vec<Vec<(usize, Resources)>> = items
        .iter()
        .map(|item| {
            let requests = item.workload.template.resources;
            item.previous
                .filter(|p| {
                    p.workload == item.workload.name && p.namespace == item.workload.namespace
                })
                .map(|p| {
                    p.clusters
                        .iter()
                        .filter_map(|(name, n)| {
                            Some((*position.get(name.as_str())?, requests.times(*n)))
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut free: Vec<Resources> = clusters.iter().map(|c| c.available).collect();
    // `available` already excludes the reservations; capacity beyond `allocatable` is not real.
    let mut held = vec![Resources::ZERO; clusters.len()];
    for r in reserved.iter().flatten() {
        held[r.0] = held[r.0].saturating_add(&r.1);
    }
    for (i, c) in clusters.iter().enumerate() {
        let base = cap(free[i].saturating_add(&held[i]), &c.allocatable);
        free[i] = base.saturating_sub(&held[i]);
    }

    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        let (wa, wb) = (items[a].workload, items[b].workload);
        wb.placement
            .priority
            .cmp(&wa.placement.priority)
            .then_with(|| wa.key().cmp(&wb.key()))
            .then(a.cmp(&b))
    });
    let mut preempted: Vec<Vec<String>> = vec![Vec::new(); items.len()];
    let mut out: Vec<Option<Placement>> = vec![None; items.len()];
    for (rank, &i) in order.iter().enumerate() {
        let item = &items[i];
        for (c, r) in std::mem::take(&mut reserved[i]) {
            free[c] = free[c].saturating_add(&r);
        }
        let priority = item.workload.placement.priority;
        let lower: Vec<usize> = if item.workload.placement.preemption {
            order[rank + 1..]
                .iter()
                .copied()
                .filter(|&j| items[j].workload.placement.priority < priority)
                .collect()
        } else {
            Vec::new()
        };
        let mut visible = free.clone();
        for &j in &lower {
            for (c, r) in &reserved[j] {
                visible[*c] = visible[*c].saturating_add(r);
            }
        }
        let problem = Problem {
            workload: item.workload,
            generation: item.generation,
            clusters: &clusters,
            available: Some(&visible),
            now_ms,
            detail,
        };
        let mut placement = place(&problem, item.previous);
        let requests = item.workload.template.resources;
        for (name, n) in &placement.clusters {
            let Some(&c) = position.get(name.as_str()) else {
                continue;
            };
            let mut need = requests.times(*n);
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
    out.into_iter().flatten().collect()
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
