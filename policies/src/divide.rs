//! The divide phase: turns weights and fits into replica counts. Integer arithmetic only.

/// An eligible cluster as the divide phase sees it. Slices of shares are in cluster-name
/// order, which is the last tie-break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    pub weight: u64,
    /// Replicas the cluster fits (`u32::MAX`: unbounded).
    pub fits: u32,
    /// Replicas the cluster had in the previous placement.
    pub previous: u32,
}

/// Every cluster runs `per_cluster` replicas, or as many as it fits.
pub(crate) fn duplicated(per_cluster: u32, shares: &[Share]) -> Vec<u32> {
    shares.iter().map(|s| per_cluster.min(s.fits)).collect()
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
        let floor = quota / weight_sum;
        leftover -= floor;
        // floor <= seats <= u32::MAX.
        out[i] = u32::try_from(floor).unwrap_or(u32::MAX);
        ranks.push(Rank {
            remainder: quota % weight_sum,
            previous_above_floor: shares[i].previous.saturating_sub(out[i]),
            previous: shares[i].previous,
            index: i,
        });
    }
    ranks.sort_by(|a, b| {
        b.remainder
            .cmp(&a.remainder)
            .then(b.previous_above_floor.cmp(&a.previous_above_floor))
            .then(b.previous.cmp(&a.previous))
            .then(a.index.cmp(&b.index))
    });
    // leftover < members.len(): each remainder is below weight_sum.
    let leftover = usize::try_from(leftover).unwrap_or(usize::MAX);
    for rank in ranks.iter().take(leftover) {
        out[rank.index] += 1;
    }
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
    fn duplicated_caps_at_fit() {
        assert_eq!(
            duplicated(2, &shares(&[1, 1], &[1, ROOMY], &[0, 0])),
            [1, 2]
        );
    }
}
