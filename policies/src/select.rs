//! The select and divide phases over the clusters that passed the filter: ordered fallback
//! affinity groups (and overflow between them), spread constraints with min/max groups, then
//! the replica division of the workload's scheduling mode.

use std::borrow::Cow;
use std::rc::Rc;

use hansa_core::{ReplicaScheduling, Workload};

use crate::constraints::{Attr, GroupRule};
use crate::divide::{self, Grouping, Share};
use crate::filter::{Filter, Needs};
use crate::index::{ClusterIndex, Key};
use crate::verdict::{Considered, Decision, FilterRef};

/// What one candidate set decided: replicas per considered index, clusters left out.
#[derive(Default)]
struct SetResult<'a> {
    counts: Vec<(usize, u32)>,
    dropped: Vec<(usize, FilterRef<'a>)>,
}

impl SetResult<'_> {
    fn placed(&self) -> u64 {
        self.counts.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

/// Runs selection and division; gives selected clusters their counts (or filters them when
/// a group or spread rule leaves them out).
pub(crate) fn run<'a>(needs: &'a Needs<'_>, decision: &mut Decision<'a>) {
    let workload = needs.workload;
    let considered = &decision.considered;
    let eligible: Vec<usize> = (0..considered.len())
        .filter(|&i| considered[i].selected)
        .collect();
    let groups = &workload.placement.cluster_affinities;
    let mut results = Vec::new();
    if groups.is_empty() {
        results.push(solve_set(needs, decision, &eligible, workload.replicas));
    } else {
        let n = considered.len();
        // Only the clusters a group's postings name can be in it: the others are not checked.
        let mut candidate = Vec::new();
        let members: Vec<Vec<usize>> = needs
            .groups
            .iter()
            .map(|selector| {
                let may_select = match selector.candidates(needs.index) {
                    Some(positions) => {
                        candidate.clear();
                        candidate.resize(needs.index.clusters().len(), false);
                        for &at in positions.iter() {
                            candidate[at] = true;
                        }
                        Some(&candidate)
                    }
                    None => None,
                };
                eligible
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let at = considered[i].at();
                        may_select.is_none_or(|c| c[at]) && selector.check(needs.index, at).is_ok()
                    })
                    .collect()
            })
            .collect();
        // member_of[g][i]: cluster i is in group g.
        let member_of: Vec<Vec<bool>> = members
            .iter()
            .map(|m| {
                let mut v = vec![false; n];
                for &i in m {
                    v[i] = true;
                }
                v
            })
            .collect();
        let duplicated = workload.placement.replica_scheduling == ReplicaScheduling::Duplicated;
        let mut used: Vec<usize> = Vec::new();
        if workload.placement.overflow && !duplicated {
            let mut remaining = workload.replicas;
            let mut taken = vec![false; n];
            for (g, m) in members.iter().enumerate() {
                if remaining == 0 {
                    break;
                }
                let fresh: Vec<usize> = m.iter().copied().filter(|&i| !taken[i]).collect();
                let r = solve_set(needs, decision, &fresh, remaining);
                remaining -= u32::try_from(r.placed()).unwrap_or(remaining);
                for &i in &fresh {
                    taken[i] = true;
                }
                used.push(g);
                results.push(r);
            }
        } else {
            // The first group that takes every replica, else the one that places the most:
            // groups after a complete one need not be solved.
            let complete = |r: &SetResult, m: &Vec<usize>| {
                !m.is_empty() && unplaced(workload, r, m.len()) == 0
            };
            let mut tried: Vec<SetResult> = Vec::with_capacity(members.len());
            let mut first_complete = None;
            for m in &members {
                let r = solve_set(needs, decision, m, workload.replicas);
                let done = complete(&r, m);
                tried.push(r);
                if done {
                    first_complete = Some(tried.len() - 1);
                    break;
                }
            }
            let chosen = first_complete
                .or_else(|| {
                    (0..tried.len())
                        .rev()
                        .max_by_key(|&g| tried[g].placed())
                        .filter(|&g| tried[g].placed() > 0)
                })
                .unwrap_or(0);
            used.push(chosen);
            results.extend(tried.into_iter().nth(chosen));
        }
        // Clusters outside the groups in use; one reason per group, shared by its clusters.
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let in_use: Vec<&str> = used.iter().map(|&g| names[g]).collect();
        let mut reasons: Vec<Option<Rc<Filter>>> = vec![None; groups.len() + 1];
        for &i in &eligible {
            if let Some(g) = used.iter().find(|&&g| member_of[g][i]).copied() {
                decision.set_group(i, &groups[g].name);
                continue;
            }
            let group = member_of.iter().position(|m| m[i]);
            let reason = reasons[group.map_or(groups.len(), |g| g)].get_or_insert_with(|| {
                let reason = match group {
                    Some(g) => format!(
                        "in clusterAffinities group {}, not used: {} takes the workload",
                        names[g],
                        in_use.join(" + ")
                    ),
                    None => format!("in no clusterAffinities group ({})", names.join(", ")),
                };
                Rc::new(Filter::AffinityGroup { reason })
            });
            drop(decision, i, FilterRef::Shared(Rc::clone(reason)));
        }
    }
    for r in results {
        for (i, filter) in r.dropped {
            drop(decision, i, filter);
        }
        for (i, n) in r.counts {
            let c = &mut decision.considered[i];
            if c.selected {
                c.replicas = n;
            }
        }
    }
}

/// Leaves a cluster out. One that could only keep what it runs reports that rule instead:
/// with nothing running it would have been filtered there, and solving again must agree.
fn drop<'a>(decision: &mut Decision<'a>, i: usize, filter: FilterRef<'a>) {
    let filter = decision
        .keeps_only(&decision.considered[i])
        .cloned()
        .unwrap_or(filter);
    decision.filter(i, filter);
}

fn unplaced(workload: &Workload, r: &SetResult, members: usize) -> u64 {
    let desired = match workload.placement.replica_scheduling {
        ReplicaScheduling::Duplicated => {
            u64::from(workload.replicas) * u64::try_from(r.counts.len().max(members)).unwrap_or(0)
        }
        _ => u64::from(workload.replicas),
    };
    desired.saturating_sub(r.placed())
}

/// Spread rules, then division, over `members` (indices into `considered`, name order).
fn solve_set<'a>(
    needs: &Needs<'_>,
    decision: &Decision<'a>,
    members: &[usize],
    total: u32,
) -> SetResult<'a> {
    let considered = &decision.considered;
    let workload = needs.workload;
    let placement = &workload.placement;
    let mut rules: Vec<GroupRule> = placement
        .spread_constraints
        .iter()
        .map(|s| GroupRule {
            attr: Attr::of_spread(&s.spread_by),
            cap: None,
            balance: s.max_skew.is_some(),
            min_groups: s.min_groups,
            max_groups: s.max_groups,
            max_skew: s.max_skew,
            written: s.spread_by.to_string(),
        })
        .collect();
    rules.extend(needs.constraints.groups.iter().cloned());
    let mut result = SetResult::default();
    let mut members: Vec<usize> = members.to_vec();
    let mut values_by_rule = Vec::with_capacity(rules.len());
    for rule in &rules {
        let key = Key::of(&rule.attr, needs.index);
        let values = Values::of(key, needs.index, considered, &members);
        let (kept, dropped) = select_groups(rule, considered, &members, total, &values);
        result.dropped.extend(dropped);
        members = kept;
        values_by_rule.push(values);
    }
    let mut shares: Vec<Share> = members.iter().map(|&i| considered[i].share()).collect();
    let counts: Vec<u32> = match placement.replica_scheduling {
        ReplicaScheduling::Duplicated => {
            // Every cluster runs its own copies: PreferNoSchedule clusters only when no
            // other cluster can run them.
            if shares.iter().any(|s| !s.avoid) {
                let (kept, avoided): (Vec<usize>, Vec<usize>) =
                    members.iter().partition(|&&i| !considered[i].share().avoid);
                for i in avoided {
                    if let Some(taint) = decision.avoided(&considered[i]) {
                        result.dropped.push((i, FilterRef::Avoided(taint)));
                    }
                }
                members = kept;
            }
            members
                .iter()
                .map(|&i| workload.replicas.min(considered[i].share().fits))
                .collect()
        }
        _ => {
            let groupings: Vec<Grouping> = rules
                .iter()
                .zip(&values_by_rule)
                .filter(|(r, _)| r.cap.is_some() || r.balance)
                .map(|(r, values)| grouping(r, values, &members))
                .collect();
            // Clusters that only keep what they run are pinned to it (in name order while
            // the total allows); the others divide the rest.
            let mut remaining = total;
            let pinned: Vec<u32> = shares
                .iter()
                .map(|s| {
                    let n = if s.pinned && s.weight > 0 {
                        s.fits.min(remaining)
                    } else {
                        0
                    };
                    remaining -= n;
                    n
                })
                .collect();
            let total = remaining;
            for s in shares.iter_mut().filter(|s| s.pinned) {
                s.weight = 0;
            }
            let counts: Vec<u32> = if !groupings.is_empty() || placement.min_per_cluster > 0 {
                divide::greedy(total, &shares, placement.min_per_cluster, &groupings)
            } else {
                // PreferNoSchedule clusters take only what the others cannot.
                let mut counts = vec![0u32; members.len()];
                let mut remaining = total;
                let avoiding = shares.iter().any(|s| s.avoid);
                for tier in [false, true] {
                    // A tier of no cluster, or with nothing left to place, places nothing.
                    if tier && (!avoiding || remaining == 0) {
                        break;
                    }
                    let tiered: Cow<'_, [Share]> = if avoiding {
                        let only_tier = |s: &Share| {
                            if s.avoid == tier {
                                *s
                            } else {
                                Share { weight: 0, ..*s }
                            }
                        };
                        Cow::Owned(shares.iter().map(only_tier).collect())
                    } else {
                        Cow::Borrowed(&shares)
                    };
                    let got = match placement.replica_scheduling {
                        ReplicaScheduling::Aggregated => divide::aggregated(remaining, &tiered),
                        _ => divide::divided(remaining, &tiered),
                    };
                    for (c, n) in counts.iter_mut().zip(&got) {
                        *c += n;
                    }
                    remaining -= got.iter().sum::<u32>().min(remaining);
                }
                counts
            };
            counts.iter().zip(pinned).map(|(c, p)| c + p).collect()
        }
    };
    result.counts = members.into_iter().zip(counts).collect();
    result
}

/// The values a rule's attribute takes among some clusters, numbered in order of appearance,
/// so that grouping compares numbers instead of strings.
struct Values<'a> {
    /// Per considered index: the number of the cluster's value (`None`: it has none, or it is
    /// not among the clusters looked at).
    of: Vec<Option<u32>>,
    /// The values, by number.
    names: Vec<&'a str>,
}

impl<'a> Values<'a> {
    fn of(
        key: Key,
        index: &ClusterIndex<'a>,
        considered: &[Considered],
        members: &[usize],
    ) -> Self {
        // By string number: a table as long as the index has strings costs less to clear
        // than hashing the value of every member.
        let mut numbers: Vec<Option<u32>> = vec![None; index.strings()];
        let mut names = Vec::new();
        let mut of = vec![None; considered.len()];
        for &i in members {
            if let Some(value) = index.value(considered[i].at(), key) {
                let next = u32::try_from(names.len()).unwrap_or(u32::MAX);
                let number = *numbers[value.position()].get_or_insert_with(|| {
                    names.push(index.text(value));
                    next
                });
                of[i] = Some(number);
            }
        }
        Values { of, names }
    }

    fn count(&self) -> usize {
        self.names.len()
    }

    fn name(&self, number: u32) -> &'a str {
        self.names[number as usize]
    }

    /// The values in order, for reasons that list them.
    fn sorted(&self, numbers: impl Iterator<Item = u32>) -> Vec<&'a str> {
        let mut names: Vec<&str> = numbers.map(|v| self.name(v)).collect();
        names.sort_unstable();
        names
    }
}

/// Members that lack the attribute form one more group (they only reach the divide phase
/// when no rule drops them).
fn grouping(rule: &GroupRule, values: &Values<'_>, members: &[usize]) -> Grouping {
    let without = values.count();
    Grouping {
        of: members
            .iter()
            .map(|&i| values.of[i].map_or(without, |v| v as usize))
            .collect(),
        groups: without + 1,
        cap: rule.cap,
        balance: rule.balance,
    }
}

/// Applies a rule's min/max groups: which members stay, and why the others are left out.
/// `values` numbers the members' values of the rule's attribute.
fn select_groups<'a>(
    rule: &GroupRule,
    considered: &[Considered],
    members: &[usize],
    total: u32,
    values: &Values<'_>,
) -> (Vec<usize>, Vec<(usize, FilterRef<'a>)>) {
    let mut dropped = Vec::new();
    let mut valued = Vec::with_capacity(members.len());
    let mut without: Option<Rc<Filter>> = None;
    for &i in members {
        if values.of[i].is_some() {
            valued.push(i);
            continue;
        }
        let reason = without.get_or_insert_with(|| {
            Rc::new(Filter::Spread {
                reason: format!(
                    "has no {}, which {} spreads by",
                    attr_name(&rule.attr),
                    rule.written
                ),
            })
        });
        dropped.push((i, FilterRef::Shared(Rc::clone(reason))));
    }
    let groups = values.count();
    let found = u32::try_from(groups).unwrap_or(u32::MAX);
    if found < rule.min_groups {
        let available = values.sorted(0..found);
        let reason = format!(
            "{} needs minGroups {}: only {found} {} available ({})",
            rule.written,
            rule.min_groups,
            attr_name(&rule.attr),
            available.join(", ")
        );
        let reason = Rc::new(Filter::Spread { reason });
        dropped.extend(
            valued
                .into_iter()
                .map(|i| (i, FilterRef::Shared(Rc::clone(&reason)))),
        );
        return (Vec::new(), dropped);
    }
    // Nothing to place: no group needs to be chosen.
    let Some(max) = rule.max_groups.filter(|&max| found > max && total > 0) else {
        return (valued, dropped);
    };
    // Keep the roomiest groups (room counted up to the replicas wanted, so that roomy groups
    // tie and the order stays put as capacity moves), then by value.
    let mut room = vec![0u64; groups];
    for &i in &valued {
        let share = considered[i].share();
        if share.weight > 0 {
            if let Some(v) = values.of[i] {
                room[v as usize] += u64::from(share.fits.min(total));
            }
        }
    }
    let mut ranked: Vec<u32> = (0..found).collect();
    ranked.sort_by(|&a, &b| {
        let room = |v: u32| room[v as usize].min(u64::from(total));
        room(b)
            .cmp(&room(a))
            .then(values.name(a).cmp(values.name(b)))
    });
    let mut keep = vec![false; groups];
    let chosen = usize::try_from(max).unwrap_or(usize::MAX);
    for &v in ranked.iter().take(chosen) {
        keep[v as usize] = true;
    }
    let kept_names = values
        .sorted(ranked.iter().take(chosen).copied())
        .join(", ");
    let mut reasons: Vec<Option<Rc<Filter>>> = vec![None; groups];
    let mut kept = Vec::with_capacity(valued.len());
    for i in valued {
        let Some(v) = values.of[i] else { continue };
        if keep[v as usize] {
            kept.push(i);
            continue;
        }
        let reason = reasons[v as usize].get_or_insert_with(|| {
            Rc::new(Filter::Spread {
                reason: format!(
                    "{} {} not among the {max} chosen by {} (maxGroups {max}: {kept_names})",
                    attr_name(&rule.attr),
                    values.name(v),
                    rule.written,
                ),
            })
        });
        dropped.push((i, FilterRef::Shared(Rc::clone(reason))));
    }
    (kept, dropped)
}

fn attr_name(attr: &Attr) -> String {
    match attr {
        Attr::Name => "cluster".to_string(),
        Attr::Region => "region".to_string(),
        Attr::Zone => "zone".to_string(),
        Attr::Provider => "provider".to_string(),
        Attr::Label(key) => format!("label {key}"),
    }
}
