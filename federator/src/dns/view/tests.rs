use std::collections::HashMap;

use hansa_core::{ServicePort, ServiceSpec};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};

use super::*;
use crate::dns::synthetic::{cluster, record, replica, workload};

fn settings() -> ZoneSettings {
    ZoneSettings {
        zone: Name::from_ascii("hansa.internal.").expect("zone"),
        ttl: 5,
        negative_ttl: 2,
        ns_addresses: vec!["127.0.0.1".parse().expect("address")],
        own_cluster: Some("us-1".into()),
    }
}

fn name(text: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(text).expect("name"))
}

/// eu-1 and eu-2 share region eu; us-1 is elsewhere. `web` runs healthy in all three and
/// has an unhealthy replica in eu-1; `down` has only unhealthy replicas.
fn federation() -> (FederationState, HashMap<String, LiveCluster>) {
    let mut state = FederationState::default();
    for (n, region, block) in [
        ("eu-1", "eu", "10.1.0.0/16"),
        ("eu-2", "eu", "10.2.0.0/16"),
        ("us-1", "us", "10.3.0.0/16"),
    ] {
        state
            .clusters
            .insert(n.to_string(), cluster(n, region, &[block]));
    }
    let web = workload("web", "default");
    let down = workload("down", "default");
    let (wk, dk) = (web.key(), down.key());
    state
        .workloads
        .insert(wk.clone(), std::sync::Arc::new(record(web)));
    state
        .workloads
        .insert(dk.clone(), std::sync::Arc::new(record(down)));
    let live = HashMap::from([
        (
            "eu-1".to_string(),
            LiveCluster {
                connected: true,
                replicas: vec![
                    replica("web-a", &wk, true, "10.1.0.1", 8001),
                    replica("web-b", &wk, false, "10.1.0.2", 8002),
                    replica("down-a", &dk, false, "10.1.0.3", 8003),
                ],
            },
        ),
        (
            "eu-2".to_string(),
            LiveCluster {
                connected: true,
                replicas: vec![replica("web-c", &wk, true, "10.2.0.1", 8004)],
            },
        ),
        (
            "us-1".to_string(),
            LiveCluster {
                connected: true,
                replicas: vec![replica("web-d", &wk, true, "10.3.0.1", 8005)],
            },
        ),
    ]);
    (state, live)
}

fn view() -> ZoneView {
    let (state, live) = federation();
    ZoneView::build(&settings(), &state, &live, 7)
}

fn addresses(answer: Answer<'_>) -> Vec<String> {
    match answer {
        Answer::Records { answers, .. } => answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

fn cluster_index(view: &ZoneView, cluster: &str) -> Option<u16> {
    (0..16).find(|i| view.cluster_name(*i) == Some(cluster))
}

#[test]
fn only_healthy_replicas_are_answered_nearest_first() {
    let view = view();
    let eu1 = cluster_index(&view, "eu-1");
    let us1 = cluster_index(&view, "us-1");
    let web = name("web.default.svc.hansa.internal.");
    assert_eq!(
        addresses(view.lookup(&web, RecordType::A, eu1)),
        ["10.1.0.1", "10.2.0.1", "10.3.0.1"]
    );
    assert_eq!(
        addresses(view.lookup(&web, RecordType::A, us1))[0],
        "10.3.0.1"
    );
    // Case does not matter.
    let upper = name("WEB.Default.SVC.hansa.INTERNAL.");
    assert_eq!(addresses(view.lookup(&upper, RecordType::A, eu1)).len(), 3);
}

#[test]
fn one_cluster_names_and_replica_names() {
    let view = view();
    assert_eq!(
        addresses(view.lookup(
            &name("eu-1.web.default.svc.hansa.internal."),
            RecordType::A,
            None
        )),
        ["10.1.0.1"]
    );
    assert_eq!(
        addresses(view.lookup(
            &name("web-c.eu-2.web.default.svc.hansa.internal."),
            RecordType::A,
            None
        )),
        ["10.2.0.1"]
    );
    // The unhealthy replica has no name.
    assert!(matches!(
        view.lookup(
            &name("web-b.eu-1.web.default.svc.hansa.internal."),
            RecordType::A,
            None
        ),
        Answer::NxDomain
    ));
}

#[test]
fn srv_priority_follows_locality_and_ports_are_the_replicas() {
    let view = view();
    let eu2 = cluster_index(&view, "eu-2");
    let srv = name("_http._tcp.web.default.svc.hansa.internal.");
    let Answer::Records {
        answers,
        additionals,
    } = view.lookup(&srv, RecordType::SRV, eu2)
    else {
        panic!("SRV records expected");
    };
    let got: Vec<(u16, u16, u16, String)> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                0,
                1,
                8004,
                "web-c.eu-2.web.default.svc.hansa.internal.".to_string()
            ),
            (
                1,
                1,
                8001,
                "web-a.eu-1.web.default.svc.hansa.internal.".to_string()
            ),
            (
                2,
                1,
                8005,
                "web-d.us-1.web.default.svc.hansa.internal.".to_string()
            ),
        ]
    );
    assert_eq!(additionals.len(), 3, "the targets' addresses");
}

#[test]
fn nxdomain_versus_nodata() {
    let view = view();
    let web = name("web.default.svc.hansa.internal.");
    assert!(matches!(
        view.lookup(&web, RecordType::AAAA, None),
        Answer::NoData
    ));
    assert!(matches!(
        view.lookup(&web, RecordType::TXT, None),
        Answer::NoData
    ));
    // Empty non-terminals exist.
    for ent in [
        "svc.hansa.internal.",
        "default.svc.hansa.internal.",
        "_tcp.web.default.svc.hansa.internal.",
    ] {
        assert!(
            matches!(view.lookup(&name(ent), RecordType::A, None), Answer::NoData),
            "{ent}"
        );
    }
    // No healthy replica anywhere: the name does not exist (MCS).
    assert!(matches!(
        view.lookup(
            &name("down.default.svc.hansa.internal."),
            RecordType::A,
            None
        ),
        Answer::NxDomain
    ));
    assert!(matches!(
        view.lookup(
            &name("nope.default.svc.hansa.internal."),
            RecordType::A,
            None
        ),
        Answer::NxDomain
    ));
    assert!(matches!(
        view.lookup(&name("example.org."), RecordType::A, None),
        Answer::NotInZone
    ));
    let RData::SOA(soa) = &view.negative_soa().data else {
        panic!("SOA");
    };
    assert_eq!(soa.minimum, 2);
    assert_eq!(view.negative_soa().ttl, 2);
}

#[test]
fn apex_records() {
    let view = view();
    let apex = name("hansa.internal.");
    for qtype in [RecordType::SOA, RecordType::NS] {
        let Answer::Records { answers, .. } = view.lookup(&apex, qtype, None) else {
            panic!("{qtype} at the apex");
        };
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].record_type(), qtype);
    }
    assert_eq!(
        addresses(view.lookup(&name("ns.hansa.internal."), RecordType::A, None)),
        ["127.0.0.1"]
    );
    let Answer::Records { answers, .. } =
        view.lookup(&name("dns-version.hansa.internal."), RecordType::TXT, None)
    else {
        panic!("TXT");
    };
    assert!(answers[0].data.to_string().contains("hansa"));
}

#[test]
fn a_disconnected_or_unreachable_cluster_is_not_answered() {
    let (mut state, mut live) = federation();
    live.get_mut("eu-1").expect("eu-1").connected = false;
    if let Some(us) = state.clusters.get_mut("us-1") {
        us.health = ClusterHealth::Unreachable;
    }
    let view = ZoneView::build(&settings(), &state, &live, 1);
    assert_eq!(
        addresses(view.lookup(
            &name("web.default.svc.hansa.internal."),
            RecordType::A,
            None
        )),
        ["10.2.0.1"]
    );
}

#[test]
fn locality_by_ecs_then_source_then_own_cluster() {
    let view = view();
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
    let (by_ecs, scope) = view.locate(Some(ip("10.2.3.4")), ip("10.1.0.9"));
    assert_eq!(by_ecs.and_then(|c| view.cluster_name(c)), Some("eu-2"));
    assert_eq!(scope, Some(16));
    let (by_source, _) = view.locate(None, ip("10.1.0.9"));
    assert_eq!(by_source.and_then(|c| view.cluster_name(c)), Some("eu-1"));
    let (own, _) = view.locate(None, ip("192.0.2.1"));
    assert_eq!(own.and_then(|c| view.cluster_name(c)), Some("us-1"));
}

#[test]
fn services_name_workloads_and_their_srv_ports() {
    let (mut state, live) = federation();
    let key = hansa_core::WorkloadKey::new("default", "web");
    if let Some(r) = state.workloads.get_mut(&key).map(std::sync::Arc::make_mut) {
        r.workload.service = Some(ServiceSpec {
            name: "frontend".into(),
            ports: vec![ServicePort {
                name: "web".into(),
                port: 80,
                target_port: "http".into(),
                protocol: hansa_core::Protocol::Tcp,
            }],
        });
    }
    let view = ZoneView::build(&settings(), &state, &live, 1);
    assert!(matches!(
        view.lookup(
            &name("web.default.svc.hansa.internal."),
            RecordType::A,
            None
        ),
        Answer::NxDomain
    ));
    assert_eq!(
        addresses(view.lookup(
            &name("frontend.default.svc.hansa.internal."),
            RecordType::A,
            None
        ))
        .len(),
        3
    );
    assert!(matches!(
        view.lookup(
            &name("_web._tcp.frontend.default.svc.hansa.internal."),
            RecordType::SRV,
            None
        ),
        Answer::Records { .. }
    ));
}

#[test]
fn a_rebuild_without_changes_answers_the_same() {
    let (state, mut live) = federation();
    let one = ZoneView::build(&settings(), &state, &live, 1);
    let two = ZoneView::build(&settings(), &state, &live, 2);
    assert!(one.same_answers(&two));
    live.get_mut("eu-2").expect("eu-2").replicas[0].healthy = false;
    let three = ZoneView::build(&settings(), &state, &live, 3);
    assert!(!one.same_answers(&three));
}

#[test]
fn the_zone_file_has_every_record() {
    let view = view();
    let text = view.to_zone_file(None);
    assert!(text.contains("web.default.svc.hansa.internal."), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" SRV ")).count(),
        3,
        "{text}"
    );
}
