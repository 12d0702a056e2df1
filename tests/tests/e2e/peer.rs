//! Peer mode end to end, in real processes on their own loopback addresses: three federator
//! peers, each beside its own cluster and agent, gossiping with no master. A workload applied
//! on one peer runs on every cluster and is visible from every peer; a killed peer is declared
//! dead, its workloads get a new owner, and its cluster's share moves to the live clusters.
//! A federator with another gossip key never joins.

use std::time::Duration;

use hansa_tests::{wait_for, Federation, Peer, Process};

use crate::dns::{dig, free_udp_and_tcp_port_on};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn workload(name: &str, marker: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata: {{name: {name}}}
spec:
  replicas: 3
  template:
    command: ["sh", "-c", "echo $HANSA_CLUSTER says hello; exec sleep 3600"]
    env: {{E2E_PEER_RUN: "{marker}"}}
    ports: [{{name: http}}]
    resources: {{cpu: 50m, memory: 16Mi}}
  placement:
    replicaScheduling: {{type: Divided}}
    spreadConstraints: [{{spreadBy: cluster, maxSkew: 1}}]
"#
    )
}

struct Running {
    peer: Peer,
    federator: Process,
    agent: Process,
}

fn start_peer(fed: &Federation, peer: Peer) -> Running {
    let federator = fed.start_federator(&peer.name, &peer.config);
    let cert = fed.issue("cluster", &peer.cluster);
    let agent_config =
        fed.agent_config(&peer.cluster, "eu", &peer.ip, &peer.api, (&cert.0, &cert.1));
    let agent = fed.start_agent(&peer.cluster, &agent_config);
    Running {
        peer,
        federator,
        agent,
    }
}

/// `name`'s state as `at` sees it (`self`, `alive`, `suspect`, `down`).
fn peer_state(fed: &Federation, at: &Peer, name: &str) -> Option<String> {
    let peers = fed.hansa_json_at(&at.api, &["get", "peers"]).ok()?;
    peers
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["state"].as_str().map(String::from))
}

/// The object of `kind` whose `field` is `value`, as `at` lists it (`hansa get KIND`).
fn item_at(fed: &Federation, at: &Peer, kind: &str, field: &str, value: &str) -> Option<Value> {
    let items = fed.hansa_json_at(&at.api, &["get", kind]).ok()?;
    items
        .as_array()?
        .iter()
        .find(|i| i[field] == value)
        .cloned()
}

fn placement_at(fed: &Federation, at: &Peer, workload: &str) -> Option<Value> {
    Some(item_at(fed, at, "placements", "workload", workload)?["clusters"].clone())
}

/// Waits until `at` sees `n` clusters Ready.
fn wait_ready_at(fed: &Federation, at: &Peer, n: usize) {
    wait_for(&format!("{n} clusters Ready at {}", at.name), LIMIT, || {
        let clusters = fed.hansa_json_at(&at.api, &["get", "clusters"]).ok()?;
        let ready = clusters
            .as_array()?
            .iter()
            .filter(|c| c["health"] == "Ready")
            .count();
        (ready == n).then_some(())
    });
}

/// Writes `manifest` as `NAME.yaml` and applies it at `at`.
fn apply_at(fed: &Federation, at: &Peer, name: &str, manifest: &str) {
    let dir = fed.path("manifests");
    std::fs::create_dir_all(&dir).expect("manifests dir");
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).expect("manifest");
    let out = fed.hansa_at(&at.api, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "apply {name} at {}: {}",
        at.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn total(clusters: &Value) -> u64 {
    clusters
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

#[test]
fn peers_place_across_clusters_and_take_over_a_dead_peer() {
    let fed = Federation::new();
    let key = fed.gossip_key("gossip.key", 1);
    let first = fed.peer_config("peer-1", "c1", "127.0.0.21", &[], &key);
    let join = vec![first.gossip.clone()];
    let peers = vec![
        first.clone(),
        fed.peer_config("peer-2", "c2", "127.0.0.22", &join, &key),
        fed.peer_config("peer-3", "c3", "127.0.0.23", &join, &key),
    ];
    fed.write_cli_context(&first.api);
    // peer-3 serves the zone; its DNS server is in its own cluster, c3.
    let dns: std::net::SocketAddr =
        format!("{}:{}", peers[2].ip, free_udp_and_tcp_port_on(&peers[2].ip))
            .parse()
            .expect("address");
    let text = std::fs::read_to_string(&peers[2].config).expect("peer config");
    std::fs::write(
        &peers[2].config,
        text.replacen("[tls]", &format!("[dns]\nlisten = \"{dns}\"\n[tls]"), 1),
    )
    .expect("peer config");
    let mut running: Vec<Running> = peers.iter().cloned().map(|p| start_peer(&fed, p)).collect();

    // Every peer sees the others alive, and every cluster Ready, through gossip alone.
    for at in &peers {
        for other in &peers {
            let want = if other.name == at.name {
                "self"
            } else {
                "alive"
            };
            wait_for(
                &format!("{} to see {} {want}", at.name, other.name),
                LIMIT,
                || (peer_state(&fed, at, &other.name).as_deref() == Some(want)).then_some(()),
            );
        }
        wait_ready_at(&fed, at, 3);
    }

    // Applied on peer-1 (which owns it) and on peer-2 (which owns that one).
    let marker = format!("peer-{}", std::process::id());
    for (name, at) in [("alpha", &peers[0]), ("beta", &peers[1])] {
        apply_at(&fed, at, name, &workload(name, &marker));
    }
    let spread = serde_json::json!({"c1": 1, "c2": 1, "c3": 1});
    for workload in ["alpha", "beta"] {
        for at in &peers {
            wait_for(
                &format!("{workload} placed on every cluster, seen from {}", at.name),
                LIMIT,
                || (placement_at(&fed, at, workload)? == spread).then_some(()),
            );
        }
    }
    // Each agent runs its share: one replica of each workload.
    for r in &running {
        wait_for(
            &format!("two replicas running on {}", r.peer.cluster),
            LIMIT,
            || (fed.replica_pids(&r.peer.cluster).len() == 2).then_some(()),
        );
    }
    // Any peer answers for the workload's health, with the other clusters' replicas in it.
    wait_for("alpha healthy 3/3 as peer-3 sees it", LIMIT, || {
        let alpha = item_at(&fed, &peers[2], "workloads", "name", "alpha")?;
        (alpha["healthy"] == 3).then_some(())
    });
    // peer-3's DNS answers for alpha, owned by peer-1, with the replicas of every cluster (their
    // ports' addresses); its own cluster's first.
    let addresses = wait_for("alpha's three replicas in peer-3's DNS", LIMIT, || {
        let a = dig(dns, &["alpha.default.svc.hansa.internal", "A"]).values("A");
        (a.len() == 3).then_some(a)
    });
    assert_eq!(addresses[0], peers[2].ip, "{addresses:?}");
    let mut sorted = addresses.clone();
    sorted.sort();
    assert_eq!(sorted, ["127.0.0.21", "127.0.0.22", "127.0.0.23"]);

    // `hansa logs` asked of peer-1 for a replica on c3 is forwarded to peer-3, whose agent it is.
    let logs = wait_for("c3's replica output via peer-1", LIMIT, || {
        let out = fed.hansa_at(&peers[0].api, &["logs", "alpha", "--cluster", "c3"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    });
    assert!(logs.contains("c3 says hello"), "{logs}");

    // peer-2 and its cluster die together (a lost data center).
    let mut dead = running.remove(1);
    dead.federator.kill9();
    dead.agent.kill9();
    let killed = std::time::Instant::now();
    for at in [&peers[0], &peers[2]] {
        wait_for(&format!("{} to see peer-2 down", at.name), LIMIT, || {
            (peer_state(&fed, at, "peer-2").as_deref() == Some("down")).then_some(())
        });
    }
    let detected = killed.elapsed();
    // Suspicion is 1.5 s and a probe round 0.5 s; the rest is slack for a loaded machine.
    assert!(
        detected < Duration::from_secs(8),
        "peer-2 declared dead only after {detected:?} (suspicion 1.5 s)"
    );
    // Its cluster shows as unreachable where its peer is known dead.
    wait_for("c2 Unreachable as peer-1 sees it", LIMIT, || {
        let c2 = item_at(&fed, &peers[0], "clusters", "name", "c2")?;
        (c2["health"] == "Unreachable").then_some(())
    });
    // Both workloads, peer-2's own included, are re-placed on the live clusters at full count.
    for workload in ["alpha", "beta"] {
        for at in [&peers[0], &peers[2]] {
            wait_for(
                &format!("{workload} off c2 at full count, seen from {}", at.name),
                LIMIT,
                || {
                    let clusters = placement_at(&fed, at, workload)?;
                    (clusters.get("c2").is_none() && total(&clusters) == 3).then_some(())
                },
            );
        }
    }
    wait_for("six replicas on the live clusters", LIMIT, || {
        let n: usize = running
            .iter()
            .map(|r| fed.replica_pids(&r.peer.cluster).len())
            .sum();
        (n == 6).then_some(())
    });
    // peer-3's DNS no longer answers with the dead cluster's replica.
    wait_for("alpha without c2 in peer-3's DNS", LIMIT, || {
        let a = dig(dns, &["alpha.default.svc.hansa.internal", "A"]).values("A");
        (!a.is_empty() && !a.contains(&peers[1].ip)).then_some(())
    });
}

#[test]
fn a_federator_without_the_gossip_key_never_joins() {
    let fed = Federation::new();
    let key = fed.gossip_key("gossip.key", 1);
    let other_key = fed.gossip_key("other.key", 99);
    let member = fed.peer_config("peer-a", "ca", "127.0.0.31", &[], &key);
    let stranger = fed.peer_config(
        "peer-x",
        "cx",
        "127.0.0.32",
        std::slice::from_ref(&member.gossip),
        &other_key,
    );
    fed.write_cli_context(&member.api);
    let _a = fed.start_federator(&member.name, &member.config);
    let _x = fed.start_federator(&stranger.name, &stranger.config);
    wait_for("both peers answer", LIMIT, || {
        (peer_state(&fed, &member, "peer-a").is_some()
            && peer_state(&fed, &stranger, "peer-x").is_some())
        .then_some(())
    });
    // The stranger announces itself every 5 s (rejoin interval) while it knows no one: wait
    // until its datagrams reach peer-a, which counts them as unauthenticated on /metrics.
    let metrics = member.metrics.clone().expect("peer-a serves /metrics");
    let refused = || -> Option<u64> {
        let (_, body) = hansa_tests::http_get(&metrics, "/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("hansa_gossip_datagrams_unauthenticated_total "))
            .and_then(|v| v.trim().parse().ok())
    };
    wait_for("peer-a to refuse the stranger's datagrams", LIMIT, || {
        refused().filter(|n| *n > 0)
    });
    // And neither ever counts the other as a member, through several more announces.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        assert_eq!(
            peer_state(&fed, &member, "peer-x"),
            None,
            "peer-x joined without the key"
        );
        assert_eq!(
            peer_state(&fed, &stranger, "peer-a"),
            None,
            "peer-x sees peer-a"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Four peers on four hosts (network namespaces on one bridge). Cut {A, B} from {C, D}: both
/// halves keep every workload at full count on the clusters they reach and accept applies.
/// Heal: the peers agree on every workload and placement within 10 s, and the surplus
/// replicas are retired.
#[test]
fn a_partition_keeps_both_halves_running_and_heals_to_one_placement() {
    let lab = hansa_tests::netns::Lab::new(4);
    let fed = Federation::new();
    let key = fed.gossip_key("gossip.key", 1);
    let names = ["a", "b", "c", "d"];
    let first_gossip = format!("{}:7946", lab.ip(0));
    let peers: Vec<Peer> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let join = if i == 0 {
                Vec::new()
            } else {
                vec![first_gossip.clone()]
            };
            fed.peer_config_on(
                &format!("peer-{n}"),
                &format!("c{n}"),
                &lab.ip(i),
                (7070, 7946),
                &join,
                &key,
            )
        })
        .collect();
    fed.write_cli_context(&peers[0].api);
    let mut processes: Vec<Process> = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let mut federator = lab.command(i, &hansa_tests::bin("federator"));
        federator
            .arg("--config")
            .arg(&peer.config)
            .env("RUST_LOG", "info,hansa_federator=debug");
        processes.push(Process::spawn(
            &peer.name,
            federator,
            fed.path(&format!("{}.log", peer.name)),
        ));
        let cert = fed.issue("cluster", &peer.cluster);
        let config = fed.agent_config(&peer.cluster, "eu", &peer.ip, &peer.api, (&cert.0, &cert.1));
        let mut agent = lab.command(i, &hansa_tests::bin("member-agent"));
        agent
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,hansa_agent=debug");
        processes.push(Process::spawn(
            &peer.cluster,
            agent,
            fed.path(&format!("agent-{}.log", peer.cluster)),
        ));
    }
    for at in &peers {
        wait_ready_at(&fed, at, 4);
    }
    let marker = format!("partition-{}", std::process::id());
    let apply = |name: &str, at: &Peer| {
        let manifest = workload(name, &marker).replace("replicas: 3", "replicas: 4");
        apply_at(&fed, at, name, &manifest);
    };
    apply("alpha", &peers[0]);
    let everywhere = serde_json::json!({"ca": 1, "cb": 1, "cc": 1, "cd": 1});
    for at in &peers {
        wait_for(
            &format!("alpha on every cluster at {}", at.name),
            LIMIT,
            || (placement_at(&fed, at, "alpha")? == everywhere).then_some(()),
        );
    }
    let running = |clusters: &[&str]| -> usize {
        clusters
            .iter()
            .flat_map(|c| fed.replica_pids(c))
            .filter(|pid| hansa_tests::alive(*pid))
            .count()
    };
    wait_for("alpha's 4 replicas running", LIMIT, || {
        (running(&["ca", "cb", "cc", "cd"]) == 4).then_some(())
    });

    lab.partition(&[0, 1], &[2, 3]);
    for (at, gone) in [(0, 2), (1, 3), (2, 0), (3, 1)] {
        wait_for(
            &format!("{} to see {} down", peers[at].name, peers[gone].name),
            LIMIT,
            || {
                (peer_state(&fed, &peers[at], &peers[gone].name).as_deref() == Some("down"))
                    .then_some(())
            },
        );
    }
    // Each half applies a workload of its own.
    apply("left", &peers[0]);
    apply("right", &peers[2]);
    let left_half = serde_json::json!({"ca": 2, "cb": 2});
    let right_half = serde_json::json!({"cc": 2, "cd": 2});
    for (at, half, own) in [
        (0, &left_half, "left"),
        (1, &left_half, "left"),
        (2, &right_half, "right"),
        (3, &right_half, "right"),
    ] {
        for workload in ["alpha", own] {
            wait_for(
                &format!("{workload} at full count in {}'s half", peers[at].name),
                LIMIT,
                || (placement_at(&fed, &peers[at], workload)? == *half).then_some(()),
            );
        }
    }
    wait_for(
        "both halves run alpha and their own workload at full count",
        LIMIT,
        || (running(&["ca", "cb"]) == 8 && running(&["cc", "cd"]) == 8).then_some(()),
    );

    lab.heal();
    let healed = std::time::Instant::now();
    let view = |at: &Peer| -> Option<(Value, Value)> {
        let workloads = fed.hansa_json_at(&at.api, &["get", "workloads"]).ok()?;
        let mut names: Vec<(String, u64)> = workloads
            .as_array()?
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap_or_default().to_string(),
                    w["generation"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        names.sort();
        let placements: Vec<Value> = ["alpha", "left", "right"]
            .iter()
            .map(|w| placement_at(&fed, at, w).unwrap_or(Value::Null))
            .collect();
        Some((serde_json::json!(names), Value::Array(placements)))
    };
    let agreed = wait_for(
        "every peer to agree on workloads and placements",
        LIMIT,
        || {
            let first = view(&peers[0])?;
            let all_placed = first.1.as_array()?.iter().all(|p| total(p) == 4);
            (all_placed
                && first.0.as_array()?.len() == 3
                && peers[1..].iter().all(|p| view(p).as_ref() == Some(&first)))
            .then_some(first)
        },
    );
    let converged = healed.elapsed();
    assert!(
        converged < Duration::from_secs(10),
        "peers agreed only {converged:?} after the heal: {agreed:?}"
    );
    // One placement per workload: 12 replicas in all, the surplus of the split retired.
    wait_for("exactly 12 replicas after the heal", LIMIT, || {
        (running(&["ca", "cb", "cc", "cd"]) == 12).then_some(())
    });
    drop(processes);
}

/// Answers `SRV name` with `target:port` and `A target` with `ip`, on `bind` (UDP), until the
/// returned flag is set.
fn srv_server(
    bind: &str,
    name: &str,
    target: &str,
    ip: std::net::Ipv4Addr,
    port: u16,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let socket = std::net::UdpSocket::bind(bind).expect("bind the test DNS server");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let srv_name = Name::from_ascii(name).expect("SRV name");
    let target = Name::from_ascii(target).expect("target name");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut response = Message::response(query.metadata.id, OpCode::Query);
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            for q in &query.queries {
                response.add_query(q.clone());
                let asked = q.name().to_lowercase();
                if q.query_type() == RecordType::SRV && asked == srv_name.to_lowercase() {
                    let srv = SRV::new(0, 0, port, target.clone());
                    response.add_answer(Record::from_rdata(asked.clone(), 5, RData::SRV(srv)));
                } else if q.query_type() == RecordType::A && asked == target.to_lowercase() {
                    response.add_answer(Record::from_rdata(asked.clone(), 5, RData::A(A(ip))));
                }
            }
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
    stop
}

/// A peer with no join list finds the pool through a DNS SRV record.
#[test]
fn a_peer_joins_by_dns_srv() {
    let lab = hansa_tests::netns::Lab::new(2);
    let fed = Federation::new();
    let key = fed.gossip_key("gossip.key", 1);
    let first = fed.peer_config_on("peer-a", "ca", &lab.ip(0), (7070, 7946), &[], &key);
    let second = fed.peer_config_on("peer-b", "cb", &lab.ip(1), (7070, 7946), &[], &key);
    let srv = "_hansa-gossip._udp.peers.test.";
    std::fs::write(
        &second.config,
        std::fs::read_to_string(&second.config)
            .expect("config")
            .replace("join = []", &format!("join = []\njoin_srv = \"{srv}\"")),
    )
    .expect("config");
    let stop = srv_server(
        &format!("{}:53", lab.root_ip()),
        srv,
        "peer-a.peers.test.",
        lab.ip(0).parse().expect("ipv4"),
        7946,
    );
    lab.set_nameserver(1, &lab.root_ip());
    fed.write_cli_context(&first.api);
    let mut processes = Vec::new();
    for (i, peer) in [&first, &second].into_iter().enumerate() {
        let mut federator = lab.command(i, &hansa_tests::bin("federator"));
        federator
            .arg("--config")
            .arg(&peer.config)
            .env("RUST_LOG", "info,hansa_federator=debug");
        processes.push(Process::spawn(
            &peer.name,
            federator,
            fed.path(&format!("{}.log", peer.name)),
        ));
    }
    for (at, other) in [(&first, "peer-b"), (&second, "peer-a")] {
        wait_for(&format!("{} to see {other} alive", at.name), LIMIT, || {
            (peer_state(&fed, at, other).as_deref() == Some("alive")).then_some(())
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(processes);
}
