//! Who computes a workload's placement in peer mode.
//!
//! A workload is owned by its origin (the peer it was applied on) while that peer is
//! alive. Otherwise every peer picks, from the peers it sees alive, the one with the
//! highest rendezvous weight for the workload's key (highest random weight hashing):
//! a pure function of (key, live set), so peers that agree on membership agree on the
//! owner without talking, and a peer leaving or joining only moves the keys it wins
//! or loses.

use sha2::{Digest as _, Sha256};

/// The rendezvous weight of `peer` for `key`: a SHA-256 prefix, stable on every
/// platform and build.
pub fn weight(key: &str, peer: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update((key.len() as u64).to_be_bytes());
    hash.update(key.as_bytes());
    hash.update(peer.as_bytes());
    let digest = hash.finalize();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

/// The peer with the highest weight for `key` (ties, vanishingly rare, go to the
/// greater name). `None` when `peers` is empty.
pub fn rendezvous<'a, P: AsRef<str> + ?Sized + 'a>(
    key: &str,
    peers: impl IntoIterator<Item = &'a P>,
) -> Option<&'a str> {
    peers
        .into_iter()
        .map(AsRef::as_ref)
        .max_by_key(|peer| (weight(key, peer), *peer))
}

/// The owner of `key`: `origin` if it is among `live_peers`, else the rendezvous
/// winner among them. `None` only when no peer is alive.
pub fn owner<'a, P: AsRef<str>>(
    key: &str,
    origin: &'a str,
    live_peers: &'a [P],
) -> Option<&'a str> {
    if live_peers.iter().any(|peer| peer.as_ref() == origin) {
        return Some(origin);
    }
    rendezvous(key, live_peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn peers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("peer-{i}")).collect()
    }

    #[test]
    fn the_origin_owns_while_alive() {
        let live = peers(5);
        assert_eq!(owner("default/web", "peer-3", &live), Some("peer-3"));
    }

    #[test]
    fn a_dead_origin_hands_over_to_the_rendezvous_winner() {
        let live = peers(5);
        let heir = owner("default/web", "gone", &live).expect("peers alive");
        assert_eq!(Some(heir), rendezvous("default/web", &live));
        let empty: [&str; 0] = [];
        assert_eq!(owner("default/web", "gone", &empty), None);
    }

    #[test]
    fn weights_are_pinned() {
        // Every peer on every build must compute the same weights.
        assert_eq!(weight("default/web", "eu-1"), weight("default/web", "eu-1"));
        assert_ne!(weight("default/web", "eu-1"), weight("default/web", "eu-2"));
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
    }

    #[test]
    fn keys_spread_over_peers() {
        let live = peers(5);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..2_000 {
            *counts
                .entry(rendezvous(&format!("ns/w{i}"), &live).unwrap())
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 5);
        assert!(
            counts.values().all(|&c| (300..=500).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn the_owner_is_alive_and_order_does_not_matter(
            key in "[a-z/]{1,20}",
            n in 1usize..12,
            rotate in 0usize..12,
            origin in 0usize..20,
        ) {
            let live = peers(n);
            let origin = format!("peer-{origin}");
            let mut shuffled = live.clone();
            shuffled.rotate_left(rotate % n);
            shuffled.reverse();
            let a = owner(&key, &origin, &live).unwrap();
            prop_assert!(live.iter().any(|p| p == a));
            prop_assert_eq!(Some(a), owner(&key, &origin, &shuffled));
        }

        #[test]
        fn losing_a_peer_only_moves_the_keys_it_owned(
            key in "[a-z/]{1,20}",
            n in 2usize..12,
            dead in 0usize..12,
        ) {
            let live = peers(n);
            let before = rendezvous(&key, &live).unwrap().to_owned();
            let dead = format!("peer-{}", dead % n);
            let survivors: Vec<&String> = live.iter().filter(|p| **p != dead).collect();
            let after = rendezvous(&key, survivors.iter().copied()).unwrap();
            if before != dead {
                prop_assert_eq!(before.as_str(), after);
            }
        }
    }
}
