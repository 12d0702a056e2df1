use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;

use super::*;
use crate::anti_entropy::pull_in_process;
use crate::hlc::Timestamp;

const NOW: u64 = 1_700_000_000_000;

fn store(peer: &str) -> Arc<RecordStore> {
    store_at(peer, Arc::new(AtomicU64::new(NOW)))
}

fn store_at(peer: &str, wall: Arc<AtomicU64>) -> Arc<RecordStore> {
    let clock = Clock::with_wall_clock(
        NodeId::from_name(peer),
        Duration::from_secs(60),
        move || wall.load(Ordering::SeqCst),
    );
    RecordStore::with_clock(StoreConfig::new(peer), clock)
}

fn key(kind: Kind, key: &str) -> RecordKey {
    RecordKey::new(kind, key)
}

#[test]
fn writes_bump_the_generation_and_deletes_leave_a_tombstone() {
    let s = store("a");
    let first = s
        .put(Kind::Workload, "default/web", "{\"replicas\":1}")
        .unwrap();
    let second = s
        .put(Kind::Workload, "default/web", "{\"replicas\":2}")
        .unwrap();
    assert_eq!((first.generation, second.generation), (1, 2));
    assert!(second.hlc > first.hlc);

    let gone = s
        .delete(Kind::Workload, "default/web")
        .unwrap()
        .expect("was live");
    assert_eq!(gone.generation, 3);
    assert_eq!(gone.deleted_at, Some(gone.hlc.physical_ms));
    assert_eq!(s.get(&key(Kind::Workload, "default/web")), None);
    assert!(s.list(Kind::Workload).is_empty());
    assert_eq!(s.delete(Kind::Workload, "default/web").unwrap(), None);

    let back = s.put(Kind::Workload, "default/web", "{}").unwrap();
    assert_eq!(back.generation, 4, "re-creating must beat the tombstone");
}

#[test]
fn a_recreate_on_one_peer_beats_a_stale_delete_on_another() {
    let (a, b) = (store("a"), store("b"));
    let created = a.put(Kind::Workload, "w", "v1").unwrap();
    b.merge([created]);
    let deleted = b.delete(Kind::Workload, "w").unwrap().unwrap();
    a.merge([deleted]);
    let recreated = a.put(Kind::Workload, "w", "v2").unwrap();
    b.merge([recreated.clone()]);
    assert_eq!(b.get(&key(Kind::Workload, "w")), Some(recreated));
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn concurrent_writes_settle_on_the_same_winner_everywhere() {
    let (a, b) = (store("a"), store("b"));
    let from_a = a.put(Kind::Policy, "spread", "a's").unwrap();
    let from_b = b.put(Kind::Policy, "spread", "b's").unwrap();
    a.merge([from_b]);
    b.merge([from_a]);
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn merge_refuses_malformed_records_and_counts_them() {
    let s = store("a");
    let mut bad = Record::live(Kind::Workload, "w", 1, Timestamp::default(), "b", "{}");
    bad.deleted_at = Some(1);
    let report = s.merge([bad]);
    assert_eq!(report.rejected, 1);
    assert!(s.is_empty());
}

#[test]
fn subscribers_see_local_and_remote_changes_but_not_stale_ones() {
    let (a, b) = (store("a"), store("b"));
    let mut changes = b.subscribe();
    let mut revision = b.watch_revision();

    b.put(Kind::ClusterFact, "eu-1/capacity", "{}").unwrap();
    let change = changes.try_recv().unwrap();
    assert_eq!(change.source, ChangeSource::Local);
    assert!(revision.has_changed().unwrap());
    revision.mark_unchanged();

    let remote = a.put(Kind::Workload, "w", "x").unwrap();
    assert_eq!(
        b.merge([remote.clone()]).applied,
        vec![key(Kind::Workload, "w")]
    );
    let change = changes.try_recv().unwrap();
    assert_eq!(
        (change.source, change.record),
        (ChangeSource::Remote, remote.clone())
    );
    revision.mark_unchanged();

    let report = b.merge([remote]);
    assert_eq!((report.applied.len(), report.stale), (0, 1));
    assert!(changes.try_recv().is_err());
    assert!(!revision.has_changed().unwrap());
}

#[test]
fn tombstones_are_collected_only_after_ttl_and_horizon() {
    let wall = Arc::new(AtomicU64::new(NOW));
    let s = store_at("a", wall.clone());
    let empty_digest = s.digest();
    s.put(Kind::Workload, "w", "x").unwrap();
    let gone = s.delete(Kind::Workload, "w").unwrap().unwrap();
    let ttl = u64::try_from(default_tombstone_ttl().as_millis()).unwrap();
    let deleted_at = gone.deleted_at.unwrap();

    assert_eq!(
        s.collect_garbage(deleted_at + ttl, deleted_at + ttl),
        0,
        "at the TTL: kept"
    );
    assert_eq!(
        s.collect_garbage(deleted_at + ttl + 10, deleted_at),
        0,
        "horizon not past: kept"
    );
    assert_eq!(s.collect_garbage(deleted_at + ttl + 10, deleted_at + 5), 1);
    assert!(s.is_empty());
    assert_eq!(s.digest(), empty_digest);
}

#[test]
fn a_small_change_ships_one_bucket_not_the_whole_store() {
    let (a, b) = (store("a"), store("b"));
    let all: Vec<Record> = (0..500)
        .map(|i| a.put(Kind::Workload, &format!("ns/w{i}"), "{}").unwrap())
        .collect();
    b.merge(all);
    assert!(b.versions_differing(&a.digest()).is_empty());

    a.put(Kind::Workload, "ns/w7", "{\"replicas\":3}").unwrap();
    let versions = a.versions_differing(&b.digest());
    assert!(versions.len() < 30, "shipped {} versions", versions.len());
    assert_eq!(b.diff(&versions), vec![key(Kind::Workload, "ns/w7")]);
    let report = pull_in_process(&b, &a);
    assert_eq!(report.applied, vec![key(Kind::Workload, "ns/w7")]);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn anti_entropy_catches_up_a_peer_that_was_away() {
    let (a, b) = (store("a"), store("b"));
    for i in 0..50 {
        a.put(Kind::Workload, &format!("w{i}"), "{}").unwrap();
    }
    a.delete(Kind::Workload, "w3").unwrap();
    b.put(Kind::Policy, "only-on-b", "{}").unwrap();

    pull_in_process(&b, &a);
    pull_in_process(&a, &b);
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.digest(), b.digest());
    assert!(pull_in_process(&a, &b).applied.is_empty());
}

// ---- properties ----

fn arb_record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(vec![Kind::Workload, Kind::Placement]),
        prop::sample::select(vec!["a/x", "a/y", "b/z"]),
        1u64..4,
        (0u64..3, 0u32..2, 0u64..3),
        prop::sample::select(vec!["p1", "p2", "p3"]),
        prop::option::of(prop::sample::select(vec!["{}", "{\"r\":1}", "[]"])),
    )
        .prop_map(
            |(kind, key, generation, (ms, logical, node), origin, body)| {
                let hlc = Timestamp {
                    physical_ms: NOW - 10 + ms,
                    logical,
                    node: NodeId(node),
                };
                match body {
                    Some(body) => Record::live(kind, key, generation, hlc, origin, body),
                    None => Record::tombstone(kind, key, generation, hlc, origin),
                }
            },
        )
}

fn merged(records: &[Record]) -> Arc<RecordStore> {
    let s = store("observer");
    s.merge(records.iter().cloned());
    s
}

/// The expected outcome, computed independently: the maximum per key.
fn winners(records: &[Record]) -> Vec<Record> {
    let mut best: BTreeMap<RecordKey, Record> = BTreeMap::new();
    for record in records {
        let key = record.record_key();
        match best.get(&key) {
            Some(current) if current.precedence(record) != std::cmp::Ordering::Less => {}
            _ => {
                best.insert(key, record.clone());
            }
        }
    }
    best.into_values().collect()
}

proptest! {
    #[test]
    fn any_order_and_duplication_yields_the_same_store(
        records in prop::collection::vec(arb_record(), 0..24),
        shuffled in any::<prop::sample::Index>(),
        dup_count in 0usize..8,
    ) {
        let reference = merged(&records);
        prop_assert_eq!(reference.snapshot(), winners(&records));

        let mut reordered = records.clone();
        if !reordered.is_empty() {
            for i in 0..dup_count {
                let pick = reordered[(i * 7 + shuffled.index(reordered.len())) % reordered.len()].clone();
                reordered.push(pick);
            }
            let pivot = shuffled.index(reordered.len());
            reordered.rotate_left(pivot);
            reordered.reverse();
        }
        let other = merged(&reordered);
        prop_assert_eq!(reference.snapshot(), other.snapshot());
        prop_assert_eq!(reference.digest(), other.digest());
    }

    #[test]
    fn merge_is_idempotent(records in prop::collection::vec(arb_record(), 0..24)) {
        let s = merged(&records);
        let before = s.snapshot();
        let again = s.merge(records.iter().cloned());
        prop_assert!(again.applied.is_empty());
        prop_assert_eq!(before, s.snapshot());
    }

    #[test]
    fn merge_is_commutative(
        a in prop::collection::vec(arb_record(), 0..12),
        b in prop::collection::vec(arb_record(), 0..12),
    ) {
        let ab = merged(&a);
        ab.merge(b.iter().cloned());
        let ba = merged(&b);
        ba.merge(a.iter().cloned());
        prop_assert_eq!(ab.snapshot(), ba.snapshot());
    }

    #[test]
    fn merge_is_associative(
        a in prop::collection::vec(arb_record(), 0..10),
        b in prop::collection::vec(arb_record(), 0..10),
        c in prop::collection::vec(arb_record(), 0..10),
    ) {
        // (a ⊔ b) ⊔ c
        let left = merged(&merged(&a).snapshot().into_iter().chain(b.iter().cloned()).collect::<Vec<_>>());
        left.merge(c.iter().cloned());
        // a ⊔ (b ⊔ c)
        let bc = merged(&merged(&b).snapshot().into_iter().chain(c.iter().cloned()).collect::<Vec<_>>());
        let right = merged(&a);
        right.merge(bc.snapshot());
        prop_assert_eq!(left.snapshot(), right.snapshot());
    }

    #[test]
    fn anti_entropy_converges_any_two_stores(
        a in prop::collection::vec(arb_record(), 0..16),
        b in prop::collection::vec(arb_record(), 0..16),
    ) {
        let (left, right) = (merged(&a), merged(&b));
        pull_in_process(&left, &right);
        pull_in_process(&right, &left);
        prop_assert_eq!(left.snapshot(), right.snapshot());
        prop_assert_eq!(left.digest(), right.digest());
        let all: Vec<Record> = a.into_iter().chain(b).collect();
        prop_assert_eq!(left.snapshot(), winners(&all));
    }
}
