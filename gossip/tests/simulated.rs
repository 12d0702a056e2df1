//! Large pools on the in-process `MemoryNetwork` in simulated time (a paused tokio clock):
//! the protocol's behaviour at sizes two CPU cores could not run in real time, with the
//! federator's default timings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hansa_gossip::{
    GossipKey, Kind, MemberState, Membership, MembershipConfig, MemoryNetwork, RecordKey,
    RecordStore, StoreConfig,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Peer {
    membership: Membership,
    store: Arc<RecordStore>,
}

fn start(network: &MemoryNetwork, name: &str, key: &GossipKey, join: &[SocketAddr]) -> Peer {
    let mut config = MembershipConfig::new(
        name,
        format!("cluster-{name}"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        key.clone(),
    );
    config.join = join.to_vec();
    let store = RecordStore::new(StoreConfig::new(name));
    let membership =
        Membership::start_in_memory(config, network, store.clone(), CancellationToken::new())
            .expect("membership starts");
    Peer { membership, store }
}

/// `n` peers joining the first, 10 ms apart.
async fn pool(network: &MemoryNetwork, n: usize, key: &GossipKey) -> Vec<Peer> {
    let first = start(network, "peer-0", key, &[]);
    let seed = [first.membership.local_addr()];
    let mut peers = vec![first];
    for i in 1..n {
        tokio::time::sleep(Duration::from_millis(10)).await;
        peers.push(start(network, &format!("peer-{i}"), key, &seed));
    }
    peers
}

/// Waits (in simulated time) until `condition` holds, and says how long that took.
async fn until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?} of simulated time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

fn full_view(peers: &[Peer]) -> bool {
    peers
        .iter()
        .all(|p| p.membership.count(MemberState::Alive) == peers.len() - 1)
}

/// SWIM spreads joins as news, and news about members that joined before us never comes
/// again: without the state sync on join, the last of 100 peers took tens of seconds to
/// hear of everyone through announce replies. With it, one round trip.
#[tokio::test(start_paused = true)]
async fn a_hundred_and_fifty_peers_form_a_full_view_within_seconds_of_the_last_join() {
    let network = MemoryNetwork::new(Duration::from_micros(500));
    let key = GossipKey::generate();
    let peers = pool(&network, 150, &key).await;
    let took = until(
        "every peer sees the other 149 alive",
        Duration::from_secs(5),
        || full_view(&peers),
    )
    .await;
    println!("150 peers formed a full view {took:?} after the last join");

    // A late joiner learns the whole pool from its join address at once, though the
    // pool's own news of the joins is long over.
    let late = start(&network, "late", &key, &[peers[7].membership.local_addr()]);
    until(
        "the late joiner knows all 150",
        Duration::from_secs(1),
        || late.membership.count(MemberState::Alive) == 150,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn in_a_pool_of_a_hundred_and_twenty_a_record_spreads_and_a_crash_is_detected() {
    let network = MemoryNetwork::new(Duration::from_micros(500));
    let key = GossipKey::generate();
    let mut peers = pool(&network, 120, &key).await;
    until("a full view", Duration::from_secs(10), || full_view(&peers)).await;

    let record = peers[42]
        .store
        .put(Kind::Workload, "default/web", b"{}".to_vec())
        .expect("local put");
    peers[42]
        .membership
        .broadcast(&record)
        .await
        .expect("broadcast");
    let key_of = RecordKey::new(Kind::Workload, "default/web");
    let spread = until(
        "every peer holds the record",
        Duration::from_secs(2),
        || peers.iter().all(|p| p.store.get(&key_of).is_some()),
    )
    .await;
    println!("a record reached 120 peers in {spread:?}");

    let victim = peers.pop().expect("non-empty");
    let name = victim.membership.identity().name;
    drop(victim);
    let detected = until(
        "every peer holds the crashed one as down",
        Duration::from_secs(10),
        || {
            peers.iter().all(|p| {
                p.membership
                    .members()
                    .iter()
                    .any(|m| m.name == name && m.state == MemberState::Down)
            })
        },
    )
    .await;
    println!("a crash was seen by all 119 in {detected:?}");
}

#[tokio::test(start_paused = true)]
async fn a_minute_of_five_percent_loss_declares_no_one_dead() {
    let network = MemoryNetwork::new(Duration::from_micros(500));
    let key = GossipKey::generate();
    let peers = pool(&network, 60, &key).await;
    until("a full view", Duration::from_secs(5), || full_view(&peers)).await;
    let mut events: Vec<_> = peers.iter().map(|p| p.membership.subscribe()).collect();
    network.set_loss(0.05);
    tokio::time::sleep(Duration::from_secs(60)).await;
    for (peer, events) in peers.iter().zip(&mut events) {
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event, hansa_gossip::MembershipEvent::Down(_)),
                "{} declared {} down under 5% loss",
                peer.membership.identity().name,
                event.member().name
            );
        }
    }
}
