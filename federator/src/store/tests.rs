//! Store tests on real redb files in temporary directories. A one-node group needs no sockets:
//! it never dials a peer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Cursor};
use std::path::Path;
use std::time::Duration;

use hansa_core::{
    Cluster, ClusterHealth, Placement, PlacementSpec, TaskTemplate, Workload, WorkloadKey,
};
use hansa_proto::v1::raft_server::Raft as _;
use hansa_proto::v1::RaftPayload;
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder, StorageError,
};
use tempfile::TempDir;
use tokio::sync::mpsc;

use super::network::ClientWriteResult;
use super::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(1, dir, "https://127.0.0.1:1", true, ClientTlsConfig::new());
    // Faster elections keep the restart tests short; the defaults are tested for validity.
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout_min = Duration::from_millis(150);
    config.election_timeout_max = Duration::from_millis(300);
    config
}

pub(super) fn workload(name: &str, image: &str, replicas: u32) -> Workload {
    Workload {
        name: name.into(),
        namespace: "default".into(),
        labels: BTreeMap::new(),
        format: Default::default(),
        replicas,
        template: TaskTemplate {
            image: Some(image.into()),
            ..Default::default()
        },
        placement: PlacementSpec::default(),
        service: None,
        update: Default::default(),
        rollout: Default::default(),
    }
}

pub(super) fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        region: "eu".into(),
        zone: String::new(),
        provider: String::new(),
        labels: BTreeMap::new(),
        runtimes: vec![],
        addresses: vec![],
        allocatable: Default::default(),
        available: Default::default(),
        health: ClusterHealth::Ready,
        cordoned: false,
        taints: Vec::new(),
        nodes: Vec::new(),
    }
}

pub(super) fn placement(name: &str, generation: u64) -> Placement {
    Placement {
        workload: name.into(),
        namespace: "default".into(),
        generation,
        clusters: BTreeMap::from([("eu-1".to_string(), 2)]),
        explanation: Default::default(),
    }
}

fn put(workloads: Vec<Workload>) -> Command {
    Command::put_workloads(workloads, 1_000)
}

async fn leading(store: &Store) {
    let mut leadership = store.leadership();
    tokio::time::timeout(DEADLINE, leadership.wait_for(|leader| *leader))
        .await
        .expect("no leadership within the deadline")
        .expect("leadership watch closed");
}

/// Writes a cluster, two workloads and a placement; returns what a reader should then see.
async fn populate(store: &Store) -> FederationState {
    store
        .propose(Command::UpsertCluster {
            cluster: cluster("eu-1"),
        })
        .await
        .unwrap();
    let response = store
        .propose(put(vec![
            workload("web", "nginx:1", 2),
            workload("api", "api:1", 1),
        ]))
        .await
        .unwrap();
    assert_eq!(
        response,
        CommandResponse::Workloads(vec![
            PutOutcome::Created {
                generation: 1,
                revision: 1
            };
            2
        ])
    );
    let placed = store
        .propose(Command::SetPlacement {
            placement: placement("web", 1),
        })
        .await
        .unwrap();
    assert_eq!(placed, CommandResponse::Done);
    store.read(Clone::clone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_store_survives_a_restart_and_keeps_taking_writes() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    leading(&store).await;
    let mut changes = store.subscribe();
    let before = *changes.borrow_and_update();
    let written = populate(&store).await;
    assert!(changes.has_changed().unwrap());
    assert!(*changes.borrow() > before);
    assert_eq!(written.workloads.len(), 2);
    assert_eq!(written.clusters.len(), 1);
    assert_eq!(written.placements.len(), 1);
    let applied = *store.subscribe().borrow();
    store
        .raft()
        .wait(Some(DEADLINE))
        .applied_index(Some(applied), "metrics catch up")
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = Store::open(config(dir.path())).await.unwrap();
    // Readable straight from disk, before any election.
    assert_eq!(store.read(Clone::clone), written);
    assert_eq!(*store.subscribe().borrow(), applied);
    leading(&store).await;
    let response = store
        .propose(put(vec![workload("web", "nginx:2", 2)]))
        .await
        .unwrap();
    assert_eq!(
        response,
        CommandResponse::Workloads(vec![PutOutcome::Configured {
            generation: 2,
            revision: 2
        }])
    );
    // The placement for generation 1 is now stale.
    let stale = store
        .propose(Command::SetPlacement {
            placement: placement("web", 1),
        })
        .await
        .unwrap();
    assert!(matches!(stale, CommandResponse::Ignored(_)), "{stale:?}");
    let deleted = store
        .propose(Command::DeleteWorkload {
            key: WorkloadKey::new("default", "web"),
        })
        .await
        .unwrap();
    assert_eq!(deleted, CommandResponse::Deleted(true));
    let after = store.read(Clone::clone);
    store.shutdown().await.unwrap();

    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.read(Clone::clone), after);
    assert!(after.placements.is_empty());
    assert_eq!(after.workloads.len(), 1);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_survives_a_restart_after_the_log_is_purged() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_in_snapshot_log_to_keep = 0;
    let store = Store::open(cfg.clone()).await.unwrap();
    leading(&store).await;
    let written = populate(&store).await;
    let last = store
        .raft()
        .wait(Some(DEADLINE))
        .applied_index(Some(*store.subscribe().borrow()), "metrics catch up")
        .await
        .unwrap()
        .last_applied;

    store.raft().trigger().snapshot().await.unwrap();
    store
        .raft()
        .wait(Some(DEADLINE))
        .metrics(
            |m| m.snapshot == last && m.purged == last,
            "snapshot built and log purged",
        )
        .await
        .unwrap();
    store.shutdown().await.unwrap();

    let store = Store::open(cfg).await.unwrap();
    assert_eq!(store.read(Clone::clone), written);
    let snapshot = store.raft().get_snapshot().await.unwrap().unwrap();
    assert_eq!(snapshot.meta.last_log_id, last);
    assert_eq!(store.metrics().purged, last);
    leading(&store).await;
    store
        .propose(Command::DeleteWorkload {
            key: WorkloadKey::new("default", "api"),
        })
        .await
        .unwrap();
    assert_eq!(store.read(|s| s.workloads.len()), 1);
    store.shutdown().await.unwrap();
}

/// openraft's own snapshot policy is off: the store builds snapshots itself when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_built_when_enough_log_accumulates() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.snapshot_logs_since_last = 5;
    let store = Store::open(cfg).await.unwrap();
    leading(&store).await;
    for i in 0..8 {
        store
            .propose(put(vec![workload(&format!("w{i}"), "app:1", 1)]))
            .await
            .unwrap();
    }
    store
        .raft()
        .wait(Some(DEADLINE))
        .metrics(|m| m.snapshot.is_some(), "a snapshot built")
        .await
        .unwrap();
    store.shutdown().await.unwrap();
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

async fn open_state_machine(path: &Path) -> StateMachineStore {
    let (open, _) = mpsc::channel(1);
    StateMachineStore::open(path.join(STATE_FILE), open)
        .await
        .unwrap()
}

/// Applying writes nothing: a reopened state machine starts from its last snapshot, and Raft
/// applies the log after it again.
#[tokio::test]
async fn a_reopened_state_machine_starts_from_its_snapshot() {
    let dir = TempDir::new().unwrap();
    let mut sm = open_state_machine(dir.path()).await;
    sm.apply(vec![
        entry(
            1,
            EntryPayload::Normal(put(vec![workload("web", "nginx:1", 2)]).into()),
        ),
        entry(
            2,
            EntryPayload::Normal(put(vec![workload("api", "api:1", 1)]).into()),
        ),
    ])
    .await
    .unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let at_snapshot = sm.shared().read().clone();
    sm.apply(vec![entry(
        3,
        EntryPayload::Normal(put(vec![workload("db", "db:1", 1)]).into()),
    )])
    .await
    .unwrap();
    assert_eq!(sm.shared().read().state.workloads.len(), 3);
    drop(sm);

    let mut reopened = open_state_machine(dir.path()).await;
    assert_eq!(*reopened.shared().read(), at_snapshot);
    let (last_applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(last_applied.map(|l| l.index), Some(2));
    let current = reopened.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
}

#[tokio::test]
async fn an_installed_snapshot_replaces_everything_and_persists() {
    let source_dir = TempDir::new().unwrap();
    let mut source = open_state_machine(source_dir.path()).await;
    let membership = Membership::new(vec![BTreeSet::from([1])], ());
    source
        .apply(vec![
            entry(1, EntryPayload::Membership(membership)),
            entry(
                2,
                EntryPayload::Normal(
                    Command::UpsertCluster {
                        cluster: cluster("eu-1"),
                    }
                    .into(),
                ),
            ),
            entry(
                3,
                EntryPayload::Normal(put(vec![workload("web", "nginx:1", 2)]).into()),
            ),
            entry(
                4,
                EntryPayload::Normal(
                    Command::SetPlacement {
                        placement: placement("web", 1),
                    }
                    .into(),
                ),
            ),
        ])
        .await
        .unwrap();
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id.unwrap().index, 4);
    let expected = source.shared().read().clone();

    // The target holds something else first: it must be gone after the install.
    let target_dir = TempDir::new().unwrap();
    let mut target = open_state_machine(target_dir.path()).await;
    target
        .apply(vec![entry(
            1,
            EntryPayload::Normal(put(vec![workload("old", "old:1", 1)]).into()),
        )])
        .await
        .unwrap();
    let data = snapshot.snapshot.into_inner();
    target
        .install_snapshot(&snapshot.meta, Box::new(Cursor::new(data.clone())))
        .await
        .unwrap();
    assert_eq!(*target.shared().read(), expected);
    assert_eq!(*target.shared().applied_index.borrow(), 4);
    drop(target);

    let mut reopened = open_state_machine(target_dir.path()).await;
    assert_eq!(*reopened.shared().read(), expected);
    let current = reopened.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(current.snapshot.into_inner(), data);
    assert_eq!(
        reopened.applied_state().await.unwrap(),
        (expected.last_applied, expected.last_membership.clone())
    );
}

async fn expect_corrupt(dir: &Path, file: &str) {
    let err = match Store::open(config(dir)).await {
        Ok(_) => panic!("{file}: a damaged file was opened"),
        Err(e) => e,
    };
    let path = dir.join(file);
    assert!(
        matches!(&err, StoreError::Corrupt { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_garbage_file_refuses_to_open_and_names_itself() {
    let segment = format!("{LOG_DIR}/{:020}.wal", 1);
    for file in [segment.as_str(), STATE_FILE] {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir_all(dir.path().join(LOG_DIR)).unwrap();
        std::fs::write(dir.path().join(file), vec![0x5a; 64 * 1024]).unwrap();
        expect_corrupt(dir.path(), file).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_snapshot_refuses_to_open() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    leading(&store).await;
    populate(&store).await;
    store.compact().await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let db = redb::Database::create(dir.path().join(STATE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("snapshot");
        let mut snapshot = txn.open_table(table).unwrap();
        snapshot.insert("data", b"{not json".as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    expect_corrupt(dir.path(), STATE_FILE).await;
}

#[tokio::test]
async fn a_data_directory_opens_once_and_for_one_node_only() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let again = Store::open(config(dir.path())).await;
    assert!(
        matches!(&again, Err(StoreError::InUse { path }) if path.ends_with(LOG_DIR)),
        "{:?}",
        again.err()
    );
    store.shutdown().await.unwrap();

    let mut other = config(dir.path());
    other.node_id = 2;
    let wrong = Store::open(other).await;
    assert!(
        matches!(
            &wrong,
            Err(StoreError::WrongNode {
                stored: 1,
                configured: 2,
                ..
            })
        ),
        "{:?}",
        wrong.err()
    );
}

#[tokio::test]
async fn without_a_leader_propose_fails_fast() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.bootstrap = false;
    cfg.propose_timeout = Duration::from_millis(300);
    let store = Store::open(cfg).await.unwrap();
    let started = std::time::Instant::now();
    let err = store
        .propose(Command::UpsertCluster {
            cluster: cluster("eu-1"),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoLeader), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!*store.leadership().borrow());
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn default_raft_settings_are_valid() {
    let cfg = StoreConfig::new(
        1,
        "/nonexistent",
        "https://x:1",
        false,
        ClientTlsConfig::new(),
    );
    assert!(cfg.raft_config().is_ok());
    let mut bad = cfg;
    bad.election_timeout_min = bad.election_timeout_max;
    assert!(matches!(bad.raft_config(), Err(StoreError::Config(_))));
}

fn payload<T: serde::Serialize>(value: &T) -> tonic::Request<RaftPayload> {
    tonic::Request::new(RaftPayload {
        json: serde_json::to_vec(value).unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_service_authorizes_first_and_takes_forwarded_writes() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    leading(&store).await;
    let deny: Authorize = Arc::new(|_| Err(tonic::Status::permission_denied("not a federator")));
    let denied = store.raft_grpc(deny, Default::default());
    let cmd = Command::UpsertCluster {
        cluster: cluster("eu-1"),
    };
    let status = denied.client_write(payload(&cmd)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(store.read(|s| s.clusters.is_empty()));

    let allow: Authorize = Arc::new(|_| Ok(()));
    let service = store.raft_grpc(allow, Default::default());
    let malformed = service
        .client_write(tonic::Request::new(RaftPayload {
            json: b"{}".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    let reply = service.client_write(payload(&cmd)).await.unwrap();
    let result: ClientWriteResult = serde_json::from_slice(&reply.get_ref().json).unwrap();
    assert_eq!(result.unwrap().data, CommandResponse::Done);
    assert!(store.read(|s| s.clusters.contains_key("eu-1")));
    store.shutdown().await.unwrap();
}

/// The change feed names each workload whose record or placement changed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_names_the_workloads_changed_since_it_was_last_read() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    leading(&store).await;
    let feed = store.changes();
    populate(&store).await;
    let names = |keys: std::collections::BTreeSet<WorkloadKey>| {
        keys.into_iter().map(|k| k.name).collect::<Vec<_>>()
    };
    assert_eq!(names(feed.take()), ["api", "web"]);
    assert!(feed.take().is_empty());
    store
        .propose(Command::SetPlacement {
            placement: placement("web", 1),
        })
        .await
        .unwrap();
    store
        .propose(Command::DeleteWorkload {
            key: WorkloadKey::new("default", "api"),
        })
        .await
        .unwrap();
    assert_eq!(names(feed.take()), ["api", "web"]);
    // A feed no one holds is forgotten; writes go on.
    drop(feed);
    store
        .propose(put(vec![workload("db", "db:1", 1)]))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
}

/// The pipe answers every request by its id, many in flight, refuses a frame that does not
/// decode, and tells a caller whose answer the stopped stream will never bring that it may
/// have been carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipe_answers_each_request_and_reports_a_broken_stream() {
    use hansa_proto::v1::raft_client::RaftClient;
    use hansa_proto::v1::RaftFrameKind;

    let dir = TempDir::new().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    leading(&store).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let service = store.raft_grpc(Arc::new(|_| Ok(())), stop.clone()).server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let pipe = Arc::new(pipe::Pipe::open(RaftClient::new(channel)).await.unwrap());

    let writes = (0..20).map(|i| {
        let pipe = pipe.clone();
        async move {
            let cmd = Command::UpsertCluster {
                cluster: cluster(&format!("c-{i}")),
            };
            let answer = pipe
                .call(
                    RaftFrameKind::ClientWrite,
                    serde_json::to_vec(&cmd).unwrap(),
                )
                .await
                .unwrap();
            let result: ClientWriteResult = serde_json::from_slice(&answer).unwrap();
            result.unwrap().data
        }
    });
    let answers = futures::future::join_all(writes).await;
    assert!(
        answers.iter().all(|a| *a == CommandResponse::Done),
        "{answers:?}"
    );
    assert_eq!(store.read(|s| s.clusters.len()), 20);

    let malformed = pipe
        .call(RaftFrameKind::AppendEntries, b"{}".to_vec())
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert!(malformed.message().contains("AppendEntries"), "{malformed}");

    // Once the server stops, a request sent is never answered: the caller hears so, and
    // the pipe is closed for good (the next call opens another).
    stop.cancel();
    let cmd = serde_json::to_vec(&Command::UpsertCluster {
        cluster: cluster("late"),
    })
    .unwrap();
    let lost = tokio::time::timeout(DEADLINE, async {
        loop {
            match pipe.call(RaftFrameKind::ClientWrite, cmd.clone()).await {
                Ok(_) => tokio::task::yield_now().await,
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("calls were still answered after the server stopped");
    assert!(
        matches!(lost.code(), tonic::Code::Unknown | tonic::Code::Unavailable),
        "{lost:?}"
    );
    assert!(!pipe.is_open());
    server.abort();
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_without_a_leader_answers_a_forwarded_write_with_forward_to_leader() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.bootstrap = false;
    let store = Store::open(cfg).await.unwrap();
    let service = store.raft_grpc(Arc::new(|_| Ok(())), Default::default());
    let reply = service
        .client_write(payload(&Command::SetClusterHealth {
            name: "eu-1".into(),
            health: ClusterHealth::Ready,
        }))
        .await
        .unwrap();
    let result: ClientWriteResult = serde_json::from_slice(&reply.get_ref().json).unwrap();
    assert!(
        matches!(
            result,
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_)
            ))
        ),
        "{result:?}"
    );
    store.shutdown().await.unwrap();
}

const CRASH_DIR: &str = "HANSA_STORE_CRASH_DIR";
const CRASH_READY: &str = "HANSA-STORE-CHILD-READY";

/// Run by `a_kill_9_loses_nothing_that_was_acknowledged` in a child process: writes, reports,
/// then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for the kill -9 test"]
async fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let store = Store::open(config(Path::new(&dir))).await.unwrap();
    leading(&store).await;
    let state = populate(&store).await;
    println!("{CRASH_READY} {}", serde_json::to_string(&state).unwrap());
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_nothing_that_was_acknowledged() {
    let dir = TempDir::new().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix(CRASH_READY).map(|s| s.trim().to_string()))
    });
    let line = tokio::time::timeout(DEADLINE, ready).await;
    child.kill().unwrap(); // SIGKILL: no shutdown, no clean close of the redb files.
    child.wait().unwrap();
    let line = line
        .expect("the child did not report within the deadline")
        .unwrap()
        .expect("the child exited without reporting");
    let acknowledged: FederationState = serde_json::from_str(&line).unwrap();

    let store = Store::open(config(dir.path())).await.unwrap();
    // Every acknowledged entry is in the fsynced log; what the state machine had not fsynced
    // yet is applied again once the entries are committed anew (here: once it leads again).
    leading(&store).await;
    let mut applied = store.subscribe();
    // The `Ref` that `wait_for` returns holds the watch's lock: keeping it would block the
    // state machine's next apply. Only the outcome is kept.
    let recovered = tokio::time::timeout(
        DEADLINE,
        applied.wait_for(|_| store.read(Clone::clone) == acknowledged),
    )
    .await
    .map(|r| r.map(|_| ()));
    assert!(
        matches!(recovered, Ok(Ok(_))),
        "acknowledged {acknowledged:?}, recovered {:?}",
        store.read(Clone::clone)
    );
    store
        .propose(Command::DeleteWorkload {
            key: WorkloadKey::new("default", "api"),
        })
        .await
        .unwrap();
    store.shutdown().await.unwrap();
}

/// openraft's own conformance suite for log stores and state machines.
struct SuiteBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SuiteBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new().unwrap();
        let (open, _) = mpsc::channel(1);
        let log = LogStore::open(dir.path().join(LOG_DIR), 0, open.clone())
            .await
            .unwrap();
        let sm = StateMachineStore::open(dir.path().join(STATE_FILE), open)
            .await
            .unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_stores_pass_the_openraft_suite() {
    Suite::test_all(SuiteBuilder).unwrap();
}

/// A free loopback port nobody listens on: dialling it is refused at once.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_voters_down_writes_and_reads_fail_fast_saying_so() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.initial_members = BTreeMap::from([
        (1, "https://127.0.0.1:1".to_string()),
        (2, format!("https://127.0.0.1:{}", closed_port())),
        (3, format!("https://127.0.0.1:{}", closed_port())),
    ]);
    let store = Store::open(cfg).await.unwrap();
    let started = std::time::Instant::now();
    let err = store
        .propose(Command::UpsertCluster {
            cluster: cluster("eu-1"),
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            StoreError::QuorumLost {
                reachable: 1,
                voters: 3
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("1 of 3 federators reachable"),
        "{err}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let err = store.read_index().await.unwrap_err();
    assert!(matches!(err, StoreError::QuorumLost { .. }), "{err:?}");
    store.shutdown().await.unwrap();
}
