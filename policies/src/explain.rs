//! The explanation: one decision per cluster and a one-line summary an operator can act on.

use std::collections::BTreeMap;

use hansa_core::{
    Cluster, ClusterDecision, DecisionOutcome, Explanation, ReplicaScheduling, Workload,
};

use crate::quantity::{format_bytes, format_cpu};
use crate::verdict::{Considered, Decision, FilterRef, Kept, Plain};
use crate::{Detail, ResourceKind};

/// Long lists of clusters are cut after this many names (`..., and 12 more`).
const LIST_LIMIT: usize = 8;

/// `chosen` are the considered clusters that receive replicas, in order; `clusters` those of
/// the index the decision's positions refer to. `None` when the explanation names filtered
/// clusters and `kept` says they are not among the considered.
pub(crate) fn explain(
    workload: &Workload,
    clusters: &[Cluster],
    decision: &Decision<'_>,
    chosen: &[(&Considered, u32)],
    detail: Detail,
    kept: Kept,
) -> Option<Explanation> {
    let considered = &decision.considered;
    let duplicated = matches!(
        workload.placement.replica_scheduling,
        ReplicaScheduling::Duplicated
    );
    let replicas = u64::from(workload.replicas);
    let selected = considered.iter().filter(|c| c.selected).count();
    let placed: u64 = chosen.iter().map(|(_, n)| u64::from(*n)).sum();
    let desired = match (duplicated, selected) {
        (_, 0) | (false, _) => replicas,
        (true, n) => replicas.saturating_mul(u64::try_from(n).unwrap_or(u64::MAX)),
    };
    let unplaced = desired.saturating_sub(placed);
    let names_filtered = selected == 0 || unplaced > 0 || detail == Detail::Full;
    if names_filtered && kept != Kept::Every {
        return None;
    }

    let summary = if selected == 0 {
        nothing_fits(clusters, decision)
    } else if unplaced == 0 {
        all_placed(clusters, placed, desired, chosen)
    } else {
        let eligible: Vec<_> = considered
            .iter()
            .filter(|c| c.selected)
            .map(|c| (clusters[c.at()].name.as_str(), c.share(), c.replicas))
            .collect();
        let mut causes = Vec::new();
        let full: Vec<String> = eligible
            .iter()
            .filter(|(_, share, n)| {
                if duplicated {
                    u64::from(share.fits) < replicas
                } else {
                    share.weight > 0 && *n == share.fits
                }
            })
            .map(|(name, share, _)| format!("{name} fits {}", share.fits))
            .collect();
        let any_full = !full.is_empty();
        if any_full {
            causes.push(format!("insufficient capacity ({})", list(full)));
        }
        let weightless: Vec<String> = eligible
            .iter()
            .filter(|(_, share, _)| !duplicated && share.weight == 0)
            .map(|(name, _, _)| name.to_string())
            .collect();
        if !weightless.is_empty() {
            causes.push(format!(
                "not in staticWeights (weight 0): {}",
                list(weightless)
            ));
        }
        let p = &workload.placement;
        let mut rules = Vec::new();
        if !p.constraints.is_empty() {
            rules.push("constraints");
        }
        if !p.spread_constraints.is_empty() {
            rules.push("spreadConstraints");
        }
        if p.max_per_cluster.is_some() {
            rules.push("maxPerCluster");
        }
        if p.min_per_cluster > 0 {
            rules.push("minPerCluster");
        }
        if !rules.is_empty() && !any_full {
            causes.push(format!("limited by {}", rules.join(", ")));
        }
        if eligible.len() < considered.len() {
            causes.push(format!("filtered: {}", filter_groups(clusters, decision)));
        }
        format!(
            "{placed}/{desired} replicas placed, {unplaced} unplaced: {}",
            causes.join("; ")
        )
    };

    Some(Explanation {
        summary,
        unplaced: u32::try_from(unplaced).unwrap_or(u32::MAX),
        policy: workload.placement.policy.clone(),
        clusters: match detail {
            Detail::Full => considered
                .iter()
                .map(|c| cluster_decision(clusters, decision, c))
                .collect(),
            Detail::Summary => chosen
                .iter()
                .map(|(c, _)| cluster_decision(clusters, decision, c))
                .collect(),
        },
    })
}

fn cluster_decision(
    clusters: &[Cluster],
    decision: &Decision<'_>,
    considered: &Considered,
) -> ClusterDecision {
    let outcome = match decision.reason(considered) {
        Some(filter) => {
            let filter = filter.to_filter();
            DecisionOutcome::Filtered {
                rule: filter.rule().to_string(),
                reason: filter.to_string(),
            }
        }
        None => DecisionOutcome::Selected {
            replicas: considered.replicas,
            score: considered.weight,
            fits: considered.fits,
            note: decision.note(considered).to_string(),
        },
    };
    ClusterDecision {
        cluster: clusters[considered.at()].name.clone(),
        outcome,
    }
}

/// `4/4 replicas on 2 clusters (eu-1=3, us-1=1)`, given the clusters that receive replicas.
fn all_placed(
    clusters: &[Cluster],
    placed: u64,
    desired: u64,
    chosen: &[(&Considered, u32)],
) -> String {
    if desired == 0 {
        return "0/0 replicas: scaled to zero".to_string();
    }
    let on: Vec<String> = chosen
        .iter()
        .map(|(c, n)| format!("{}={n}", clusters[c.at()].name))
        .collect();
    format!(
        "{placed}/{desired} replicas on {} ({})",
        plural(on.len(), "cluster"),
        list(on)
    )
}

/// `0/3 clusters fit: 1 not in clusterNames (ap-1); 2 no container runtime (eu-1, us-1)`.
fn nothing_fits(clusters: &[Cluster], decision: &Decision<'_>) -> String {
    let considered = &decision.considered;
    if considered.is_empty() {
        return "0/0 clusters fit: the federation has no member clusters".to_string();
    }
    format!(
        "0/{} clusters fit: {}",
        considered.len(),
        filter_groups(clusters, decision)
    )
}

/// A filtered cluster's name, and what it has free when capacity filtered it.
type Member<'a> = (&'a str, Option<(ResourceKind, u64)>);

/// Filtered clusters grouped by rule and reason, largest group first (then in pipeline
/// order): `2 untolerated taint dedicated=gpu:NoSchedule (eu-1, eu-2)`. Capacity groups name
/// what is free where: `2 insufficient memory: need 512Mi, free 256Mi on us-1, 128Mi on us-2`.
fn filter_groups(clusters: &[Cluster], decision: &Decision<'_>) -> String {
    // Clusters whose reasons certainly read alike first, without rendering anything...
    let mut alike: Vec<(&FilterRef<'_>, Vec<(usize, Member<'_>)>)> = Vec::new();
    for (i, c) in decision.considered.iter().enumerate() {
        if let Some(filter) = decision.reason(c) {
            let free = match filter {
                FilterRef::Plain(Plain::Insufficient { resource, free, .. }) => {
                    Some((*resource, *free))
                }
                _ => None,
            };
            let member = (i, (clusters[c.at()].name.as_str(), free));
            match alike.iter_mut().rev().find(|(f, _)| f.same_group(filter)) {
                Some((_, members)) => members.push(member),
                None => alike.push((filter, vec![member])),
            }
        }
    }
    // ...then one label per such set; sets with equal labels merge, in cluster order.
    let mut groups: BTreeMap<(u8, String), Vec<(usize, Member<'_>)>> = BTreeMap::new();
    for (filter, members) in alike {
        let filter = filter.to_filter();
        let group = groups
            .entry((filter.order(), filter.group_label()))
            .or_default();
        let merged = !group.is_empty();
        group.extend(members);
        if merged {
            group.sort_unstable_by_key(|m| m.0);
        }
    }
    let mut groups: Vec<_> = groups
        .into_iter()
        .map(|(key, members)| (key, members.into_iter().map(|m| m.1).collect::<Vec<_>>()))
        .collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let groups = groups.into_iter().map(|((_, label), members)| {
        let n = members.len();
        let shown = members.iter().take(LIST_LIMIT);
        if members.iter().all(|(_, free)| free.is_some()) {
            let frees = shown.map(|(name, free)| {
                let free = match free {
                    Some((ResourceKind::Cpu, free)) => format_cpu(*free),
                    Some((_, free)) => format_bytes(*free),
                    None => String::new(),
                };
                format!("{free} on {name}")
            });
            format!("{n} {label}, free {}", cut(n, frees))
        } else {
            format!(
                "{n} {label} ({})",
                cut(n, shown.map(|(name, _)| name.to_string()))
            )
        }
    });
    groups.collect::<Vec<_>>().join("; ")
}

/// The first [`LIST_LIMIT`] of `n` items, then how many more: `a, b, and 3 more`.
fn cut(n: usize, first: impl Iterator<Item = String>) -> String {
    let shown: Vec<String> = first.take(LIST_LIMIT).collect();
    if n <= LIST_LIMIT {
        return shown.join(", ");
    }
    format!("{}, and {} more", shown.join(", "), n - LIST_LIMIT)
}

fn list(items: Vec<String>) -> String {
    if items.len() <= LIST_LIMIT {
        return items.join(", ");
    }
    let more = items.len() - LIST_LIMIT;
    format!("{}, and {more} more", items[..LIST_LIMIT].join(", "))
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One line per cluster decision, for `hansa explain`:
/// `eu-1: 3 replicas (weight 3, fits 40)` or `ap-1: filtered by health: cluster is Unreachable`.
pub fn describe_decision(decision: &ClusterDecision) -> String {
    match &decision.outcome {
        DecisionOutcome::Filtered { rule, reason } => {
            format!("{}: filtered by {rule}: {reason}", decision.cluster)
        }
        DecisionOutcome::Selected {
            replicas,
            score,
            fits,
            note,
        } => {
            let fits = if *fits == u32::MAX {
                "unbounded".to_string()
            } else {
                fits.to_string()
            };
            let replicas = plural(*replicas as usize, "replica");
            let note = if note.is_empty() {
                String::new()
            } else {
                format!("; {note}")
            };
            format!(
                "{}: {replicas} (weight {score}, fits {fits}{note})",
                decision.cluster
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (1..=10).map(|i| format!("c{i}")).collect();
        assert_eq!(list(names), "c1, c2, c3, c4, c5, c6, c7, c8, and 2 more");
    }

    #[test]
    fn decisions_read_as_one_line() {
        let selected = ClusterDecision {
            cluster: "eu-1".into(),
            outcome: DecisionOutcome::Selected {
                replicas: 1,
                score: 3,
                fits: u32::MAX,
                note: String::new(),
            },
        };
        assert_eq!(
            describe_decision(&selected),
            "eu-1: 1 replica (weight 3, fits unbounded)"
        );
        let filtered = ClusterDecision {
            cluster: "ap-1".into(),
            outcome: DecisionOutcome::Filtered {
                rule: "health".into(),
                reason: "cluster is Unreachable".into(),
            },
        };
        assert_eq!(
            describe_decision(&filtered),
            "ap-1: filtered by health: cluster is Unreachable"
        );
    }
}
