//! The divide phase: turns weights and fits into replica counts. Integer arithmetic only.

/// An eligible cluster as the divide phase sees it. Slices of shares are in cluster-name
/// order, which is the last tie-break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Share {
    pub weight: u64,
    /// Replicas the cluster fits (`u32::MAX`: unbounded).
    pub fits: u32,
    /// Replicas the cluster had in the previous placement.
    pub previous: u32,
    /// An untolerated PreferNoSchedule taint: takes only what the others cannot.
    pub avoid: bool,
    /// Cordoned or tainted NoSchedule: keeps what it runs (its `fits`), takes nothing new.
    pub pinned: bool,
}

/// `total` replicas divided by weight, no cluster above its fit; what fits nowhere is left out.
///
/// Water-filling: a cluster whose proportional quota exceeds its fit gets exactly its fit and
/// leaves the pool; the rest is re-divided among the others by weight, until every remaining
/// quota fits. This is "cap, then hand the excess to clusters with room, by weight" repeated
/// to its fixed point, with a single rounding at the end (largest remainder), so rounding
/// errors never compound. Clusters of weight 0 receive nothing.
pub(crate) fn divided(total: u32, shares: &[Share]) -> Vec<u32> {
    let mut out = vec![0; shares.len()];
    let mut pool: Vec<usize> = (0..shares.len())
        .filter(|&i| shares[i].weight > 0 && shares[i].fits > 0)
        .collect();
    let mut remaining = u128::from(total);
    while remaining > 0 && !pool.is_empty() {
        let weight_sum: u128 = pool.iter().map(|&i| u128::from(shares[i].weight)).sum();
        // quota_i = remaining * w_i / weight_sum > fits_i, without dividing.
        let (full, open): (Vec<usize>, Vec<usize>) = pool.iter().partition(|&&i| {
            u128::from(shares[i].fits) * weight_sum < remaining * u128::from(shares[i].weight)
        });
        if full.is_empty() {
            apportion(remaining, &open, shares, &mut out);
            break;
        }
        for i in full {
            out[i] = shares[i].fits;
            remaining -= u128::from(shares[i].fits);
        }
        pool = open;
    }
    out
}

/// Largest-remainder division of `seats` among `members`, whose quotas all fit.
///
/// Equal remainders go first to the cluster that had more replicas above its floor in the
/// previous placement (it held a rounded-up seat: giving the seat back moves nothing), then to
/// the one that had more replicas, then by name. Re-solving with the result as previous gives
/// the seats to the same clusters again, which makes [`divided`] a fixed point of its own output.
fn apportion(seats: u128, members: &[usize], shares: &[Share], out: &mut [u32]) {
    struct Rank {
        remainder: u128,
        previous_above_floor: u32,
        previous: u32,
        index: usize,
    }
    let weight_sum: u128 = members.iter().map(|&i| u128::from(shares[i].weight)).sum();
    let mut leftover = seats;
    let mut ranks = Vec::with_capacity(members.len());
    for &i in members {
        let quota = seats * u128::from(shares[i].weight);
        let (floor, remainder) = div_rem(quota, weight_sum);
        leftover -= floor;
        // floor <= seats <= u32::MAX.
        out[i] = u32::try_from(floor).unwrap_or(u32::MAX);
        ranks.push(Rank {
            remainder,
            previous_above_floor: shares[i].previous.saturating_sub(out[i]),
            previous: shares[i].previous,
            index: i,
        });
    }
    // leftover < members.len(): each remainder is below weight_sum.
    let leftover = usize::try_from(leftover).unwrap_or(usize::MAX);
    if leftover == 0 {
        return;
    }
    // Only which ranks come first matters, not their order among themselves: a selection
    // instead of a sort (the order is total, so the same ranks are chosen).
    if leftover < ranks.len() {
        ranks.select_nth_unstable_by(leftover - 1, |a, b| {
            b.remainder
                .cmp(&a.remainder)
                .then(b.previous_above_floor.cmp(&a.previous_above_floor))
                .then(b.previous.cmp(&a.previous))
                .then(a.index.cmp(&b.index))
        });
    }
    for rank in ranks.iter().take(leftover) {
        out[rank.index] += 1;
    }
}

/// `a / b` and `a % b`, in 64 bits when both fit (the usual case: a 128-bit division is a
/// slow library call).
fn div_rem(a: u128, b: u128) -> (u128, u128) {
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => (u128::from(a / b), u128::from(a % b)),
        _ => (a / b, a % b),
    }
}

/// `total` replicas on as few clusters as can hold them (Karmada's Aggregated). When the
/// clusters that already run replicas can hold them all, only those are considered (nothing
/// moves); otherwise every cluster is. Among the considered, the roomiest come first, then
/// name order. The chosen ones divide the replicas in proportion to their room.
///
/// Preferring the previous clusters only when they suffice keeps this a fixed point: the
/// clusters an answer uses hold its replicas, so solving again considers the same clusters
/// in the same order and chooses the same prefix.
pub(crate) fn aggregated(total: u32, shares: &[Share]) -> Vec<u32> {
    let usable = |i: &usize| shares[*i].fits > 0 && shares[*i].weight > 0;
    let previous_room: u64 = (0..shares.len())
        .filter(usable)
        .filter(|&i| shares[i].previous > 0)
        .map(|i| u64::from(shares[i].fits))
        .sum();
    let keep_previous = previous_room >= u64::from(total) && total > 0;
    let mut order: Vec<usize> = (0..shares.len())
        .filter(usable)
        .filter(|&i| !keep_previous || shares[i].previous > 0)
        .collect();
    order.sort_by(|&a, &b| shares[b].fits.cmp(&shares[a].fits).then(a.cmp(&b)));
    let mut room = 0u64;
    let mut chosen = vec![false; shares.len()];
    for i in order {
        if room >= u64::from(total) {
            break;
        }
        room += u64::from(shares[i].fits);
        chosen[i] = true;
    }
    let weighted: Vec<Share> = (0..shares.len())
        .map(|i| Share {
            weight: if chosen[i] {
                u64::from(shares[i].fits.min(total.max(1)))
            } else {
                0
            },
            ..shares[i]
        })
        .collect();
    divided(total, &weighted)
}

/// A rule on how replicas spread over groups of clusters: `of[i]` is the group of share `i`.
#[derive(Debug, Clone)]
pub(crate) struct Grouping {
    pub of: Vec<usize>,
    pub groups: usize,
    /// At most this many replicas per group.
    pub cap: Option<u32>,
    /// Fill the emptiest group first.
    pub balance: bool,
}

/// Replica by replica, each to the best cluster that still has room: the emptiest group of
/// each balancing rule first, then the lowest count per weight (D'Hondt), then a cluster below
/// what it ran before, then name order. `min_per` replicas go first to each weighted cluster
/// (clusters that ran replicas first), when all of them fit. Deterministic; used when
/// constraints couple clusters, where largest-remainder division cannot see the coupling.
pub(crate) fn greedy(total: u32, shares: &[Share], min_per: u32, rules: &[Grouping]) -> Vec<u32> {
    let n = shares.len();
    let mut out = vec![0u32; n];
    let mut per_group: Vec<Vec<u32>> = rules.iter().map(|r| vec![0; r.groups]).collect();
    let mut remaining = total;
    let room_in_groups = |i: usize, k: u32, per_group: &[Vec<u32>]| {
        rules.iter().zip(per_group).all(|(rule, counts)| {
            rule.cap
                .is_none_or(|cap| counts[rule.of[i]].saturating_add(k) <= cap)
        })
    };
    if min_per > 0 {
        let mut order: Vec<usize> = (0..n).filter(|&i| shares[i].weight > 0).collect();
        order.sort_by(|&a, &b| {
            shares[a]
                .avoid
                .cmp(&shares[b].avoid)
                .then(shares[b].previous.cmp(&shares[a].previous))
                .then(shares[b].weight.cmp(&shares[a].weight))
                .then(a.cmp(&b))
        });
        for i in order {
            if remaining >= min_per
                && shares[i].fits >= min_per
                && room_in_groups(i, min_per, &per_group)
            {
                out[i] = min_per;
                remaining -= min_per;
                for (rule, counts) in rules.iter().zip(per_group.iter_mut()) {
                    counts[rule.of[i]] += min_per;
                }
            }
        }
    }
    while remaining > 0 {
        let mut best: Option<usize> = None;
        for i in 0..n {
            let s = &shares[i];
            if s.weight == 0 || out[i] >= s.fits || (min_per > 0 && out[i] == 0) {
                continue;
            }
            if !room_in_groups(i, 1, &per_group) {
                continue;
            }
            // Each criterion only when the ones before it tie.
            let better = best.is_none_or(|b| {
                let by_groups = || {
                    rules
                        .iter()
                        .zip(&per_group)
                        .filter(|(rule, _)| rule.balance)
                        .map(|(rule, counts)| counts[rule.of[i]].cmp(&counts[rule.of[b]]))
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                };
                let per_weight = || {
                    (u128::from(out[i]) + 1)
                        .saturating_mul(u128::from(shares[b].weight))
                        .cmp(&(u128::from(out[b]) + 1).saturating_mul(u128::from(s.weight)))
                };
                let below_previous = || (out[b] < shares[b].previous).cmp(&(out[i] < s.previous));
                s.avoid
                    .cmp(&shares[b].avoid)
                    .then_with(by_groups)
                    .then_with(per_weight)
                    .then_with(below_previous)
                    .is_lt()
            });
            if better {
                best = Some(i);
            }
        }
        let Some(i) = best else { break };
        out[i] += 1;
        remaining -= 1;
        for (rule, counts) in rules.iter().zip(per_group.iter_mut()) {
            counts[rule.of[i]] += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(weights: &[u64], fits: &[u32], previous: &[u32]) -> Vec<Share> {
        weights
            .iter()
            .zip(fits)
            .zip(previous)
            .map(|((&weight, &fits), &previous)| Share {
                weight,
                fits,
                previous,
                avoid: false,
                pinned: false,
            })
            .collect()
    }

    const ROOMY: u32 = u32::MAX;

    #[test]
    fn largest_remainder_by_weight() {
        let roomy = [ROOMY; 2];
        assert_eq!(divided(4, &shares(&[3, 1], &roomy, &[0, 0])), [3, 1]);
        assert_eq!(divided(5, &shares(&[3, 1], &roomy, &[0, 0])), [4, 1]);
        assert_eq!(divided(6, &shares(&[3, 1], &roomy, &[0, 0])), [5, 1]);
        assert_eq!(divided(7, &shares(&[3, 1], &roomy, &[0, 0])), [5, 2]);
    }

    #[test]
    fn equal_remainders_go_to_the_previous_holder_then_by_name() {
        let roomy = [ROOMY; 3];
        assert_eq!(
            divided(10, &shares(&[1, 1, 1], &roomy, &[0, 0, 0])),
            [4, 3, 3]
        );
        assert_eq!(
            divided(10, &shares(&[1, 1, 1], &roomy, &[3, 4, 3])),
            [3, 4, 3]
        );
        assert_eq!(
            divided(11, &shares(&[1, 1, 1], &roomy, &[3, 4, 3])),
            [4, 4, 3]
        );
        assert_eq!(
            divided(9, &shares(&[1, 1, 1], &roomy, &[3, 4, 3])),
            [3, 3, 3]
        );
        // Neither held a rounded-up seat: the one that had more, not the bigger quota.
        let roomy = [ROOMY; 2];
        assert_eq!(divided(6, &shares(&[3, 1], &roomy, &[0, 0])), [5, 1]);
        assert_eq!(divided(6, &shares(&[3, 1], &roomy, &[0, 1])), [4, 2]);
        assert_eq!(divided(6, &shares(&[3, 1], &roomy, &[4, 2])), [4, 2]);
    }

    #[test]
    fn zero_weight_receives_nothing() {
        assert_eq!(
            divided(6, &shares(&[2, 0, 1], &[ROOMY; 3], &[0, 5, 0])),
            [4, 0, 2]
        );
        assert_eq!(divided(6, &shares(&[0, 0], &[ROOMY; 2], &[0, 0])), [0, 0]);
    }

    #[test]
    fn capped_clusters_spill_to_the_others_by_weight() {
        assert_eq!(divided(8, &shares(&[3, 1], &[4, 10], &[0, 0])), [4, 4]);
        assert_eq!(
            divided(9, &shares(&[1, 1, 1], &[1, 10, 10], &[0, 0, 0])),
            [1, 4, 4]
        );
        // Spill is itself divided by weight: 2:1 over the two with room.
        assert_eq!(
            divided(10, &shares(&[1, 2, 1], &[1, 99, 99], &[0, 0, 0])),
            [1, 6, 3]
        );
    }

    #[test]
    fn what_fits_nowhere_is_left_out() {
        assert_eq!(divided(5, &shares(&[1, 1], &[2, 1], &[0, 0])), [2, 1]);
    }

    #[test]
    fn available_capacity_semantics_of_karmada() {
        // Weights are the fits: 6, 12, 18 of 12 -> 2, 4, 6.
        assert_eq!(
            divided(12, &shares(&[6, 12, 18], &[6, 12, 18], &[0, 0, 0])),
            [2, 4, 6]
        );
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let s = shares(&[u64::from(u32::MAX); 3], &[ROOMY; 3], &[u32::MAX, 0, 0]);
        let out = divided(u32::MAX, &s);
        assert_eq!(
            out.iter().map(|&n| u64::from(n)).sum::<u64>(),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn aggregated_uses_the_fewest_clusters() {
        // 10 replicas: the 8-room cluster alone is not enough, 8 + 6 is.
        let out = aggregated(10, &shares(&[1, 1, 1], &[6, 8, 3], &[0, 0, 0]));
        assert_eq!(out.iter().filter(|&&n| n > 0).count(), 2);
        assert_eq!(out[2], 0);
        assert_eq!(out.iter().sum::<u32>(), 10);
        // A cluster already running the workload is kept.
        assert_eq!(aggregated(3, &shares(&[1, 1], &[3, 9], &[3, 0])), [3, 0]);
    }

    #[test]
    fn greedy_balances_groups_and_respects_caps() {
        // Two zones: a, b in zone 0, c in zone 1; balance zones.
        let zones = Grouping {
            of: vec![0, 0, 1],
            groups: 2,
            cap: None,
            balance: true,
        };
        let s = shares(&[1, 1, 1], &[ROOMY; 3], &[0, 0, 0]);
        assert_eq!(greedy(6, &s, 0, std::slice::from_ref(&zones)), [2, 1, 3]);
        // UNIQUE per zone: one replica per zone, the rest is unplaced.
        let unique = Grouping {
            cap: Some(1),
            balance: false,
            ..zones
        };
        assert_eq!(greedy(6, &s, 0, &[unique]).iter().sum::<u32>(), 2);
    }

    #[test]
    fn greedy_gives_min_per_cluster_first() {
        let s = shares(&[1, 1, 1], &[ROOMY, ROOMY, 1], &[0, 0, 0]);
        // c fits only 1 < min 2: it gets nothing; a and b get 2 each, then the rest.
        assert_eq!(greedy(5, &s, 2, &[]), [3, 2, 0]);
    }
}
