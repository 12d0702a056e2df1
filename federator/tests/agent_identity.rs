//! An agent may only report for the cluster named in its certificate (DESIGN.md §8).

use std::path::Path;

use hansa_federator::config::{Config, Mode};
use hansa_federator::security::{certs, Authority, Role, TlsFiles, TlsMaterial};
use hansa_federator::Federator;
use hansa_proto::v1::{
    agent_message, agent_sync_client::AgentSyncClient, AgentMessage, ClusterInfo, Register,
};
use tokio_util::sync::CancellationToken;

fn issue(ca: &Authority, dir: &Path, role: Role, name: &str, hosts: &[String]) -> TlsFiles {
    let issued = ca.issue(role, name, hosts).expect("issue");
    let (cert, key) = certs::write_leaf(dir, role, name, &issued).expect("write");
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert,
        key,
    }
}

async fn register_as(tls: &TlsMaterial, api: &str, cluster: &str) -> Result<(), tonic::Status> {
    let channel = tls
        .endpoint(api)
        .expect("endpoint")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = AgentSyncClient::new(channel);
    let register = AgentMessage {
        kind: Some(agent_message::Kind::Register(Register {
            cluster: Some(ClusterInfo {
                name: cluster.into(),
                runtimes: vec!["process".into()],
                ..Default::default()
            }),
        })),
    };
    let mut stream = client
        .sync(tokio_stream::iter(vec![register]))
        .await?
        .into_inner();
    // The first assignment set proves the federator accepted the registration.
    stream.message().await?;
    Ok(())
}

#[tokio::test]
async fn a_cluster_certificate_reports_only_for_its_own_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let ca = Authority::generate("identity.test").expect("CA");
    ca.write(&pki).expect("write CA");
    let shutdown = CancellationToken::new();
    let federator = Federator::start(
        Config {
            name: "fed-1".into(),
            node_id: 1,
            mode: Mode::Hub,
            listen: "127.0.0.1:0".parse().expect("addr"),
            peer_listen: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            raft: Default::default(),
            peer_advertise: None,
            data_dir: dir.path().join("data"),
            bootstrap: true,
            tls: issue(&ca, &pki, Role::Federator, "fed-1", &["127.0.0.1".into()]),
            cluster_grace_seconds: 15,
            peers: Vec::new(),
            join: None,
            dns: None,
            http_listen: None,
            peer: None,
        },
        shutdown.clone(),
    )
    .await
    .expect("federator starts");
    let api = federator.api_addr.to_string();

    let eu = TlsMaterial::load(&issue(&ca, &pki, Role::Cluster, "eu-1", &[])).expect("eu-1 tls");
    register_as(&eu, &api, "eu-1")
        .await
        .expect("eu-1 may report for eu-1");
    let refused = register_as(&eu, &api, "us-1")
        .await
        .expect_err("eu-1 may not report for us-1");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("cannot report for cluster \"us-1\""),
        "{}",
        refused.message()
    );

    // A user certificate is not an agent.
    let user = TlsMaterial::load(&issue(&ca, &pki, Role::User, "alice", &[])).expect("user tls");
    let refused = register_as(&user, &api, "eu-1")
        .await
        .expect_err("a user is not an agent");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let registered = federator
        .store
        .read(|s| s.clusters.keys().cloned().collect::<Vec<_>>());
    assert_eq!(registered, vec!["eu-1".to_string()]);
    shutdown.cancel();
    federator.wait(shutdown).await.expect("clean shutdown");
}
