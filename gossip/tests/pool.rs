//! In-process gossip pools on loopback UDP: joining, record dissemination, crash and
//! leave detection, and the gossip key keeping strangers out.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hansa_gossip::anti_entropy::{self, AntiEntropyConfig, Connector};
use hansa_gossip::membership::Metrics;
use hansa_gossip::ownership::owner;
use hansa_gossip::{
    BroadcastOutcome, GossipKey, Kind, Member, MemberState, Membership, MembershipConfig,
    MembershipEvent, RecordKey, RecordStore, StoreConfig,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous: the machine running tests is shared and loaded.
const DEADLINE: Duration = Duration::from_secs(12);

struct Peer {
    membership: Membership,
    store: Arc<RecordStore>,
}

fn config(name: &str, key: &GossipKey, join: &[SocketAddr]) -> MembershipConfig {
    let mut config = MembershipConfig::new(
        name,
        format!("cluster-{name}"),
        "127.0.0.1:0".parse().expect("literal address"),
        key.clone(),
    );
    config.join = join.to_vec();
    // Fast but tolerant of a loaded machine: detection in ~2-3 s.
    config.probe_period = Duration::from_millis(400);
    config.probe_rtt = Duration::from_millis(150);
    config.suspicion_timeout = Duration::from_millis(1200);
    config.gossip_interval = Duration::from_millis(100);
    config.rejoin_interval = Duration::from_millis(300);
    config.expected_peers = 8;
    config
}

async fn start(
    name: &str,
    key: &GossipKey,
    join: &[SocketAddr],
    shutdown: &CancellationToken,
) -> Peer {
    let store = RecordStore::new(StoreConfig::new(name));
    let membership = Membership::start(config(name, key, join), store.clone(), shutdown.clone())
        .await
        .expect("membership starts");
    Peer { membership, store }
}

/// Starts `n` peers that all join the first one.
async fn pool(n: usize, key: &GossipKey, shutdown: &CancellationToken) -> Vec<Peer> {
    let first = start("peer-0", key, &[], shutdown).await;
    let seed = [first.membership.local_addr()];
    let mut peers = vec![first];
    for i in 1..n {
        peers.push(start(&format!("peer-{i}"), key, &seed, shutdown).await);
    }
    peers
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn alive_count(peer: &Peer) -> usize {
    peer.membership
        .members()
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .count()
}

fn state_of(peer: &Peer, name: &str) -> Option<MemberState> {
    peer.membership
        .members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.state)
}

async fn all_see_full_pool(peers: &[Peer]) {
    let expected = peers.len() - 1;
    eventually("every peer sees all others alive", || {
        peers.iter().all(|p| alive_count(p) == expected)
    })
    .await;
}

async fn with_timeout<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_forms_spreads_records_and_detects_a_crash() {
    let shutdown = CancellationToken::new();
    let key = GossipKey::generate();
    let mut peers = pool(7, &key, &shutdown).await;
    all_see_full_pool(&peers).await;

    // A record written on one peer reaches every store by gossip alone.
    let record = peers[2]
        .store
        .put(Kind::Workload, "default/web", r#"{"replicas":3}"#)
        .expect("valid record");
    let outcome = peers[2]
        .membership
        .broadcast(&record)
        .await
        .expect("running");
    assert_eq!(outcome, BroadcastOutcome::Queued);
    let key_of_web = RecordKey::new(Kind::Workload, "default/web");
    eventually("every store has the gossiped record", || {
        peers
            .iter()
            .all(|p| p.store.get(&key_of_web).as_ref() == Some(&record))
    })
    .await;

    // The crashed peer's workload must move to the same heir everywhere.
    let crashed_workload = peers[6]
        .store
        .put(Kind::Workload, "default/api", "{}")
        .expect("valid");
    peers[6]
        .membership
        .broadcast(&crashed_workload)
        .await
        .expect("running");
    let api = RecordKey::new(Kind::Workload, "default/api");
    eventually("every store has the crashed peer's workload", || {
        peers.iter().all(|p| p.store.get(&api).is_some())
    })
    .await;

    let mut events = peers[0].membership.subscribe();
    let crashed_at = Instant::now();
    drop(peers.pop()); // peer-6 crashes: no goodbye
    eventually("every survivor sees peer-6 down", || {
        peers
            .iter()
            .all(|p| state_of(p, "peer-6") == Some(MemberState::Down))
    })
    .await;
    let detection = crashed_at.elapsed();
    eprintln!("crash detected by all survivors after {detection:?}");
    assert!(
        detection < Duration::from_secs(8),
        "detection took {detection:?}"
    );

    let down_event = with_timeout("a Down event", async {
        loop {
            match events.recv().await.expect("events flow") {
                MembershipEvent::Down(member) if member.name == "peer-6" => return member,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(down_event.cluster, "cluster-peer-6");

    // Peers that agree on who is alive agree on the heir (checked until views settle:
    // a loaded machine can make a survivor briefly suspect another).
    let heirs = |peers: &[Peer]| -> Vec<String> {
        peers
            .iter()
            .map(|p| {
                let live = p.membership.live_peers();
                owner("default/api", "peer-6", &live)
                    .expect("peers alive")
                    .to_owned()
            })
            .collect()
    };
    eventually("every survivor names the same heir", || {
        heirs(&peers).windows(2).all(|w| w[0] == w[1])
    })
    .await;
    let heir = heirs(&peers).remove(0);
    assert_ne!(heir, "peer-6");

    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_key_is_ignored_and_counted() {
    let shutdown = CancellationToken::new();
    let key = GossipKey::generate();
    let peers = pool(3, &key, &shutdown).await;
    all_see_full_pool(&peers).await;

    let seed = [peers[0].membership.local_addr()];
    let stranger = start("stranger", &GossipKey::generate(), &seed, &shutdown).await;
    let seed_metrics = peers[0].membership.metrics();
    eventually("the seed drops the stranger's datagrams", || {
        Metrics::get(&seed_metrics.datagrams_unauthenticated) >= 2
    })
    .await;

    // Give the pool a few gossip rounds to (wrongly) learn of it, then check nobody did.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for peer in &peers {
        assert_eq!(state_of(peer, "stranger"), None);
        let live = peer
            .membership
            .members()
            .iter()
            .filter(|m| m.is_live())
            .count();
        assert_eq!(live, 2);
    }
    assert!(stranger.membership.members().is_empty());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_peer_is_seen_down_and_a_restarted_one_comes_back() {
    let shutdown = CancellationToken::new();
    let key = GossipKey::generate();
    let mut peers = pool(3, &key, &shutdown).await;
    all_see_full_pool(&peers).await;

    let leaving = peers.pop().expect("three peers");
    let old_addr = leaving.membership.local_addr();
    leaving.membership.leave().await;
    eventually("both see peer-2 down after it left", || {
        peers
            .iter()
            .all(|p| state_of(p, "peer-2") == Some(MemberState::Down))
    })
    .await;

    // Restart at the same address: its newer epoch wins over the identity the pool
    // remembers as down there.
    let seed = [peers[0].membership.local_addr()];
    let mut restart = config("peer-2", &key, &seed);
    restart.bind = old_addr;
    let store = RecordStore::new(StoreConfig::new("peer-2"));
    let restarted = Membership::start(restart, store, shutdown.clone())
        .await
        .expect("the old port is free again");
    let epoch = restarted.identity().epoch;
    eventually("peer-2 is alive again with its new epoch", || {
        peers.iter().all(|p| {
            p.membership
                .members()
                .iter()
                .any(|m| m.addr == old_addr && m.epoch == epoch && m.state == MemberState::Alive)
        })
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn large_records_are_left_to_anti_entropy() {
    let shutdown = CancellationToken::new();
    let peer = start("solo", &GossipKey::generate(), &[], &shutdown).await;
    let big = peer
        .store
        .put(Kind::Placement, "default/web", vec![b'x'; 4096])
        .expect("valid record");
    match peer.membership.broadcast(&big).await.expect("running") {
        BroadcastOutcome::TooLarge(len) => assert!(len > 4096),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    peer.membership.leave().await;
}

/// Stands in for the federator's gRPC client: reaches a peer's store by name.
struct InProcess(BTreeMap<String, Arc<RecordStore>>);

impl Connector for InProcess {
    type Peer = Arc<RecordStore>;
    type Error = String;

    async fn connect(&self, member: &Member) -> Result<Arc<RecordStore>, String> {
        self.0
            .get(&member.name)
            .cloned()
            .ok_or_else(|| format!("unknown peer {}", member.name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_was_away_catches_up_by_anti_entropy() {
    let shutdown = CancellationToken::new();
    let key = GossipKey::generate();
    let peers = pool(3, &key, &shutdown).await;
    all_see_full_pool(&peers).await;
    // Written while the newcomer was away, and never gossiped.
    for (i, peer) in peers.iter().enumerate() {
        peer.store
            .put(Kind::ClusterFact, &format!("cluster-{i}/capacity"), "{}")
            .expect("valid record");
    }
    peers[0]
        .store
        .put(Kind::Workload, "default/gone", "{}")
        .expect("valid");
    peers[0]
        .store
        .delete(Kind::Workload, "default/gone")
        .expect("valid");

    let seed = [peers[0].membership.local_addr()];
    let newcomer = start("newcomer", &key, &seed, &shutdown).await;
    let stores: BTreeMap<String, Arc<RecordStore>> = peers
        .iter()
        .map(|p| (p.store.peer().to_owned(), p.store.clone()))
        .collect();
    let membership = Arc::new(newcomer.membership);
    let view = membership.clone();
    let config = AntiEntropyConfig {
        interval: Duration::from_millis(100),
        gc_interval: Duration::from_secs(60),
    };
    tokio::spawn(anti_entropy::run(
        newcomer.store.clone(),
        move || view.members(),
        InProcess(stores),
        config,
        shutdown.clone(),
    ));

    let everything: Vec<_> = {
        let merged = RecordStore::new(StoreConfig::new("reference"));
        for peer in &peers {
            merged.merge(peer.store.snapshot());
        }
        merged.snapshot()
    };
    eventually("the newcomer holds every record and tombstone", || {
        newcomer.store.snapshot() == everything
    })
    .await;
    shutdown.cancel();
}
