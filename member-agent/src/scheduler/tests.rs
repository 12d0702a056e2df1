//! The scheduler with the process runtime and real processes: no mocks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hansa_core::{
    Assignment, EnvConvention, HealthCheck, PortSpec, Probe, ReplicaState, ReplicaStatus,
    Resources, TaskTemplate, WorkloadKey,
};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{start, SchedulerConfig, SchedulerHandle};
use crate::runtime::docker::LABEL_NODE;
use crate::runtime::process::{group_alive, process_alive, read_stat};
use crate::runtime::{
    DockerRuntime, MultiRuntime, ProcessRuntime, ReplicaRecord, Runtime, RuntimeHandle,
};
use bollard::query_parameters::InspectContainerOptions as Inspect;

const DEADLINE: Duration = Duration::from_secs(30);

struct Agent {
    handle: SchedulerHandle,
    runtime: Arc<ProcessRuntime>,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

fn config(dir: &Path) -> SchedulerConfig {
    let allocatable = Resources {
        cpu_millis: 64_000,
        memory_bytes: 64 << 30,
        disk_bytes: 1 << 40,
    };
    let grace = Duration::from_secs(5);
    SchedulerConfig::new("test-cluster", "127.0.0.1", dir, allocatable, grace)
}

async fn agent(config: SchedulerConfig) -> Agent {
    let runtime = Arc::new(ProcessRuntime::new(&config.data_dir));
    agent_on(config, runtime.clone(), runtime).await
}

/// A scheduler on `runtime`, of which `process` is the process runtime (for pids).
async fn agent_on(
    config: SchedulerConfig,
    process: Arc<ProcessRuntime>,
    runtime: Arc<dyn Runtime>,
) -> Agent {
    let mut tasks = JoinSet::new();
    let shutdown = CancellationToken::new();
    let handle = start(config, runtime, &mut tasks, shutdown.clone())
        .await
        .expect("scheduler starts");
    Agent {
        handle,
        runtime: process,
        tasks,
        shutdown,
    }
}

impl Agent {
    /// Ends the scheduler as an agent restart does: its replicas keep running.
    async fn detach(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[ReplicaStatus]) -> bool,
    ) -> Vec<ReplicaStatus> {
        let mut changes = self.handle.changes();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let statuses = self.handle.statuses();
            if done(&statuses) {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; statuses: {statuses:#?}"
            );
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    async fn wait_running(&self, workload: &str, n: usize) -> Vec<ReplicaStatus> {
        let statuses = self
            .wait_for(&format!("{n} running replicas of {workload}"), |s| {
                let of: Vec<_> = s.iter().filter(|r| r.workload.name == workload).collect();
                of.len() == n
                    && of
                        .iter()
                        .all(|r| r.state == ReplicaState::Running && r.healthy)
            })
            .await;
        statuses
            .into_iter()
            .filter(|r| r.workload.name == workload)
            .collect()
    }

    /// The (pid, start ticks) of a replica's process.
    async fn process(&self, id: &str) -> (u32, u64) {
        let info = self
            .runtime
            .inspect(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the runtime does not know {id}"));
        let RuntimeHandle::Process { pid, start_ticks } = info.record.handle else {
            panic!("a process handle");
        };
        (pid, start_ticks)
    }
}

/// Kills whatever a failing test leaves running, from the records in the data dir.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("replicas")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("replica.json")) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<ReplicaRecord>(&bytes) else {
                continue;
            };
            // Containers are the docker tests' Image's to remove.
            let RuntimeHandle::Process { pid, start_ticks } = record.handle else {
                continue;
            };
            if let (true, Ok(raw)) = (process_alive(pid, start_ticks), i32::try_from(pid)) {
                let _ = signal::killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
}

fn sh(script: &str) -> TaskTemplate {
    TaskTemplate {
        command: vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()],
        ..TaskTemplate::default()
    }
}

fn sleeper() -> TaskTemplate {
    sh("exec sleep 1000")
}

fn port(name: &str) -> PortSpec {
    PortSpec {
        name: name.to_string(),
        ..PortSpec::default()
    }
}

fn assignment(name: &str, revision: u64, replicas: u32, template: TaskTemplate) -> Assignment {
    Assignment {
        workload: WorkloadKey::new("default", name),
        revision,
        replicas,
        template,
        update: Default::default(),
    }
}

fn kill(pid: u32) {
    let raw = i32::try_from(pid).unwrap();
    signal::kill(Pid::from_raw(raw), Signal::SIGKILL).unwrap();
}

fn gone(process: (u32, u64)) -> bool {
    !process_alive(process.0, process.1) && !group_alive(process.0, process.1)
}

fn by_id<'a>(statuses: &'a [ReplicaStatus], id: &str) -> Option<&'a ReplicaStatus> {
    statuses.iter().find(|r| r.id == id)
}

#[tokio::test]
async fn starts_each_replica_in_its_own_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 3, sleeper())]);
    let statuses = agent.wait_running("web", 3).await;

    let mut pids = Vec::new();
    for status in &statuses {
        let suffix = status
            .id
            .strip_prefix("web-")
            .expect("id starts with the workload");
        assert!(
            suffix.len() == 6
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{}",
            status.id
        );
        assert_eq!(status.revision, 1);
        assert_eq!(status.restarts, 0);
        let (pid, ticks) = agent.process(&status.id).await;
        assert!(process_alive(pid, ticks));
        let stat = read_stat(pid).unwrap();
        assert_eq!(
            stat.pgrp,
            i32::try_from(pid).unwrap(),
            "leads its own process group"
        );
        pids.push((pid, ticks));
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3);
    assert!(dir.path().join("assignments.json").exists());

    agent.handle.stop_all().await;
    assert!(pids.iter().all(|&p| gone(p)));
    assert!(agent.handle.statuses().is_empty());
    assert!(agent.runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_killed_replica_is_restarted_after_a_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 1, sleeper())]);
    let id = agent.wait_running("web", 1).await[0].id.clone();
    let first = agent.process(&id).await;

    kill(first.0);
    let statuses = agent
        .wait_for("the replica to fail", |s| {
            by_id(s, &id).is_some_and(|r| r.state == ReplicaState::Failed)
        })
        .await;
    let failed = by_id(&statuses, &id).unwrap();
    assert_eq!(
        failed.message,
        "killed by signal 9 (SIGKILL); restarting in 1s"
    );
    assert!(!failed.healthy);

    let statuses = agent
        .wait_for("the replica to run again", |s| {
            by_id(s, &id).is_some_and(|r| r.state == ReplicaState::Running && r.restarts == 1)
        })
        .await;
    assert_eq!(statuses.len(), 1, "restarted in place, not replaced");
    let second = agent.process(&id).await;
    assert_ne!(second.0, first.0);
    assert!(process_alive(second.0, second.1));
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn scaling_down_stops_the_surplus_and_their_process_groups() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    // A small tree per replica: the shell and two children.
    let tree = sh("sleep 1000 & sleep 1000 & wait");
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 3, tree.clone())]);
    let before = agent.wait_running("web", 3).await;
    let mut processes = BTreeMap::new();
    for status in &before {
        processes.insert(status.id.clone(), agent.process(&status.id).await);
    }

    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 1, tree)]);
    let after = agent
        .wait_for("one replica left", |s| {
            s.len() == 1 && s[0].state == ReplicaState::Running
        })
        .await;
    let kept = &after[0].id;
    assert!(
        processes.contains_key(kept),
        "a surviving replica is kept, not restarted"
    );
    for (id, process) in &processes {
        if id == kept {
            assert!(process_alive(process.0, process.1));
        } else {
            assert!(gone(*process), "{id}'s process group is gone");
            assert!(!dir.path().join("replicas").join(id).exists());
        }
    }
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn a_new_revision_replaces_the_old_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 2, sleeper())]);
    let old = agent.wait_running("web", 2).await;
    let mut old_processes = Vec::new();
    for status in &old {
        old_processes.push(agent.process(&status.id).await);
    }

    agent
        .handle
        .set_assignments(vec![assignment("web", 2, 2, sh("exec sleep 1001"))]);
    let new = agent
        .wait_for("two replicas of revision 2 and nothing else", |s| {
            s.len() == 2
                && s.iter()
                    .all(|r| r.revision == 2 && r.state == ReplicaState::Running)
        })
        .await;
    for status in &new {
        assert!(old.iter().all(|o| o.id != status.id));
    }
    assert!(old_processes.iter().all(|&p| gone(p)));
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn changing_another_workload_leaves_this_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    let web = assignment("web", 1, 2, sleeper());
    agent
        .handle
        .set_assignments(vec![web.clone(), assignment("api", 1, 1, sleeper())]);
    let web_before = agent.wait_running("web", 2).await;
    agent.wait_running("api", 1).await;
    let mut web_processes = Vec::new();
    for status in &web_before {
        web_processes.push(agent.process(&status.id).await);
    }

    agent
        .handle
        .set_assignments(vec![web, assignment("api", 2, 1, sh("exec sleep 1001"))]);
    agent
        .wait_for("api at revision 2", |s| {
            let api: Vec<_> = s.iter().filter(|r| r.workload.name == "api").collect();
            api.len() == 1 && api[0].revision == 2 && api[0].state == ReplicaState::Running
        })
        .await;
    let web_after: Vec<ReplicaStatus> = agent
        .handle
        .statuses()
        .into_iter()
        .filter(|r| r.workload.name == "web")
        .collect();
    assert_eq!(web_after, web_before);
    for (status, process) in web_after.iter().zip(&web_processes) {
        assert_eq!(agent.process(&status.id).await, *process);
        assert!(process_alive(process.0, process.1));
    }
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let first = agent(config(dir.path())).await;
    first
        .handle
        .set_assignments(vec![assignment("web", 1, 2, sleeper())]);
    let before = first.wait_running("web", 2).await;
    let mut processes = BTreeMap::new();
    for status in &before {
        processes.insert(status.id.clone(), first.process(&status.id).await);
    }
    first.detach().await;
    assert!(
        processes.values().all(|p| process_alive(p.0, p.1)),
        "a stopped agent leaves its replicas running"
    );

    // No federator: the second agent works from the persisted assignment set.
    let second = agent(config(dir.path())).await;
    let adopted = second.handle.statuses();
    assert_eq!(adopted.len(), 2, "{adopted:#?}");
    for status in &adopted {
        assert_eq!(status.state, ReplicaState::Running);
        assert_eq!(second.process(&status.id).await, processes[&status.id]);
        let info = second.runtime.inspect(&status.id).await.unwrap().unwrap();
        assert!(info.adopted);
    }
    assert_eq!(
        second.runtime.list().await.unwrap().len(),
        2,
        "nothing duplicated"
    );

    let victim = adopted[0].id.clone();
    kill(processes[&victim].0);
    let statuses = second
        .wait_for("the adopted replica to be restarted", |s| {
            by_id(s, &victim).is_some_and(|r| r.state == ReplicaState::Running && r.restarts == 1)
        })
        .await;
    assert_eq!(statuses.len(), 2);
    assert_ne!(second.process(&victim).await, processes[&victim]);
    let other = &adopted[1].id;
    assert_eq!(second.process(other).await, processes[other]);
    assert_eq!(second.runtime.list().await.unwrap().len(), 2);
    second.handle.stop_all().await;
    assert!(processes.values().all(|&p| gone(p)));
}

#[tokio::test]
async fn stop_all_leaves_no_process_and_starts_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    agent.handle.set_assignments(vec![assignment(
        "web",
        1,
        2,
        sh("sleep 1000 & exec sleep 1000"),
    )]);
    let statuses = agent.wait_running("web", 2).await;
    let mut processes = Vec::new();
    for status in &statuses {
        processes.push(agent.process(&status.id).await);
    }
    agent.handle.stop_all().await;
    assert!(processes.iter().all(|&p| gone(p)));
    assert!(agent.runtime.list().await.unwrap().is_empty());

    // The loop notices the latch and drops its replicas instead of restarting them.
    agent
        .handle
        .set_assignments(vec![assignment("web", 2, 2, sleeper())]);
    let mut changes = agent.runtime.changes();
    let quiet = tokio::time::timeout(Duration::from_millis(1500), changes.changed()).await;
    assert!(quiet.is_err(), "nothing starts after stop_all");
    assert!(agent.runtime.list().await.unwrap().is_empty());
    assert!(agent.handle.statuses().is_empty());
}

#[tokio::test]
async fn replicas_get_their_environment_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    let mut template = sh("env > env.tmp && mv env.tmp env.txt; exec sleep 1000");
    template.ports = vec![
        port("http"),
        PortSpec {
            name: "admin-ui".to_string(),
            container_port: Some(9090),
            ..PortSpec::default()
        },
    ];
    template.env = BTreeMap::from([("GREETING".to_string(), "moin".to_string())]);
    template.env_convention = EnvConvention::Marathon {
        app_id: "/shop/web".to_string(),
    };
    agent
        .handle
        .set_assignments(vec![assignment("web", 4, 1, template)]);
    let status = agent.wait_running("web", 1).await.remove(0);
    assert_eq!(status.endpoints.len(), 2);
    assert!(status.endpoints.iter().all(|e| e.address == "127.0.0.1"));
    let (p0, p1) = (status.endpoints[0].port, status.endpoints[1].port);
    assert_ne!(p0, p1);

    let env_file = dir.path().join("replicas").join(&status.id).join("env.txt");
    let deadline = Instant::now() + DEADLINE;
    while !env_file.exists() {
        assert!(Instant::now() < deadline, "the replica never wrote its env");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&env_file).unwrap();
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let expected = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", p0.to_string()),
        ("PORT0", p0.to_string()),
        ("PORT1", p1.to_string()),
        ("PORT_HTTP", p0.to_string()),
        ("PORT_ADMIN_UI", p1.to_string()),
        ("PORTS", format!("{p0},{p1}")),
        ("PORT_9090", p1.to_string()),
        ("MARATHON_APP_ID", "/shop/web".to_string()),
        ("HANSA_REPLICA_ID", status.id.clone()),
        ("HANSA_WORKLOAD", "web".to_string()),
        ("HANSA_NAMESPACE", "default".to_string()),
        ("HANSA_CLUSTER", "test-cluster".to_string()),
        ("HANSA_REVISION", "4".to_string()),
        ("GREETING", "moin".to_string()),
    ];
    for (name, value) in &expected {
        assert_eq!(
            env.get(name).copied(),
            Some(value.as_str()),
            "{name} in {text}"
        );
    }
    // Inherited: only these; the shell adds the rest of the allowed list itself.
    let allowed = ["PATH", "HOME", "LANG", "TZ", "PWD", "OLDPWD", "SHLVL", "_"];
    for name in env.keys() {
        assert!(
            allowed.contains(name) || expected.iter().any(|(n, _)| n == name),
            "{name} leaked from the agent into the replica"
        );
    }
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn an_http_health_check_makes_a_replica_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    let mut template = sh("exec python3 -m http.server --bind 127.0.0.1 \"$PORT0\"");
    template.ports = vec![port("http")];
    let mut check = HealthCheck::with_probe(Probe::Http {
        port: "http".to_string(),
        path: "/".to_string(),
    });
    check.grace_seconds = 1;
    check.interval_seconds = 1;
    check.timeout_seconds = 2;
    check.failure_threshold = 20;
    template.health_check = Some(check);
    agent
        .handle
        .set_assignments(vec![assignment("files", 1, 1, template)]);

    let starting = agent
        .wait_for("the replica to start", |s| s.len() == 1)
        .await;
    assert_eq!(
        starting[0].state,
        ReplicaState::Starting,
        "not healthy before its first probe"
    );
    assert!(!starting[0].healthy);
    let running = agent.wait_running("files", 1).await;
    let endpoint = &running[0].endpoints[0];
    let status = crate::health::http_get_status(&endpoint.address, endpoint.port, "/").await;
    assert_eq!(status, Ok(200));
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn a_failing_tcp_check_makes_a_replica_unhealthy_and_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    // Nothing listens on the replica's port.
    let mut template = sleeper();
    template.ports = vec![port("http")];
    let mut check = HealthCheck::with_probe(Probe::Tcp {
        port: String::new(),
    });
    check.grace_seconds = 0;
    check.interval_seconds = 1;
    check.failure_threshold = 2;
    template.health_check = Some(check);
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 1, template)]);
    let id = agent.wait_for("the replica", |s| s.len() == 1).await[0]
        .id
        .clone();
    let first = agent.process(&id).await;

    let statuses = agent
        .wait_for("the replica to be unhealthy", |s| {
            by_id(s, &id).is_some_and(|r| r.state == ReplicaState::Unhealthy)
        })
        .await;
    let unhealthy = by_id(&statuses, &id).unwrap();
    assert!(!unhealthy.healthy);
    assert!(
        unhealthy
            .message
            .starts_with("health check failed 2 times in a row: tcp connect 127.0.0.1:"),
        "{}",
        unhealthy.message
    );
    assert!(
        unhealthy.message.ends_with("; restarting in 1s"),
        "{}",
        unhealthy.message
    );

    agent
        .wait_for("the replica to be restarted", |s| {
            by_id(s, &id).is_some_and(|r| r.restarts >= 1 && r.state == ReplicaState::Starting)
        })
        .await;
    assert!(gone(first), "the unhealthy process was stopped");
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn a_missing_program_fails_with_the_os_error_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    let template = TaskTemplate {
        command: vec!["/nonexistent/hansa-test-program".to_string()],
        ..TaskTemplate::default()
    };
    agent
        .handle
        .set_assignments(vec![assignment("ghost", 1, 1, template)]);
    let failed = agent
        .wait_for("the replica to fail", |s| {
            s.len() == 1 && s[0].state == ReplicaState::Failed
        })
        .await;
    assert_eq!(
        failed[0].message,
        "cannot start /nonexistent/hansa-test-program: No such file or directory (os error 2); restarting in 1s"
    );
    agent
        .wait_for("a retry with a longer backoff", |s| {
            s.len() == 1 && s[0].restarts == 1 && s[0].message.ends_with("restarting in 2s")
        })
        .await;
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn an_image_is_refused_by_the_process_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let agent = agent(config(dir.path())).await;
    let template = TaskTemplate {
        image: Some("nginx:1.27".to_string()),
        ..TaskTemplate::default()
    };
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 1, template)]);
    let failed = agent
        .wait_for("the replica to fail", |s| {
            s.len() == 1 && s[0].state == ReplicaState::Failed
        })
        .await;
    assert!(
        failed[0].message.contains("nginx:1.27"),
        "{}",
        failed[0].message
    );
    assert!(
        failed[0].message.contains("docker runtime"),
        "{}",
        failed[0].message
    );
    agent.handle.stop_all().await;
}

#[tokio::test]
async fn replicas_that_do_not_fit_wait_and_capacity_is_accounted() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let mut config = config(dir.path());
    config.nodes[0].allocatable.cpu_millis = 1000;
    let agent = agent(config).await;
    let mut template = sleeper();
    template.resources.cpu_millis = 400;
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 3, template)]);
    agent.wait_running("web", 2).await;
    assert_eq!(agent.handle.allocatable().cpu_millis, 1000);
    assert_eq!(agent.handle.available().cpu_millis, 200);
    assert_eq!(agent.runtime.list().await.unwrap().len(), 2);
    let unplaced = agent.handle.unplaced();
    assert_eq!(unplaced.len(), 1, "{unplaced:?}");
    assert_eq!(unplaced[0].workload.name, "web");
    assert_eq!(unplaced[0].replicas, 1);
    assert!(
        unplaced[0].reason.starts_with(
            "no node has room: needs cpu 400m memory 0; largest free: local (cpu 200m "
        ),
        "{}",
        unplaced[0].reason
    );
    agent.handle.stop_all().await;
    assert!(agent.handle.unplaced().is_empty());
    assert_eq!(agent.handle.available().cpu_millis, 1000);
}

fn two_nodes(dir: &Path) -> SchedulerConfig {
    let node = |name: &str, address: &str| super::NodeSpec {
        name: name.to_string(),
        address: address.to_string(),
        allocatable: Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            disk_bytes: 1 << 40,
        },
        runtimes: vec![hansa_core::RuntimeKind::Process],
    };
    SchedulerConfig::with_nodes(
        "test-cluster",
        vec![node("node-b", "127.0.0.52"), node("node-a", "127.0.0.51")],
        dir,
        Duration::from_secs(5),
    )
}

/// Replica id -> the address its endpoint points at.
fn addresses(statuses: &[ReplicaStatus]) -> BTreeMap<String, String> {
    statuses
        .iter()
        .map(|s| (s.id.clone(), s.endpoints[0].address.clone()))
        .collect()
}

#[tokio::test]
async fn replicas_fill_a_node_then_the_next_and_adoption_keeps_them_there() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let first = agent(two_nodes(dir.path())).await;
    let mut template = sleeper();
    template.resources.cpu_millis = 400;
    template.ports = vec![port("http")];
    first
        .handle
        .set_assignments(vec![assignment("web", 1, 3, template)]);
    let placed = addresses(&first.wait_running("web", 3).await);
    let on = |address: &str| placed.values().filter(|a| *a == address).count();
    assert_eq!((on("127.0.0.51"), on("127.0.0.52")), (2, 1), "{placed:?}");
    let free: Vec<(String, u64)> = first
        .handle
        .nodes()
        .into_iter()
        .map(|n| (n.name, n.available.cpu_millis))
        .collect();
    assert_eq!(
        free,
        [("node-b".to_string(), 600), ("node-a".to_string(), 200)]
    );
    for (id, address) in &placed {
        let record = first.runtime.inspect(id).await.unwrap().unwrap().record;
        let node = if address == "127.0.0.51" {
            "node-a"
        } else {
            "node-b"
        };
        assert_eq!(record.node, node, "{id} records its node");
    }
    first.detach().await;

    // Records written before nodes existed have no node: the endpoint address tells.
    for id in placed.keys() {
        let path = dir.path().join("replicas").join(id).join("replica.json");
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        record.as_object_mut().unwrap().remove("node");
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    }
    let second = agent(two_nodes(dir.path())).await;
    let adopted = second.wait_running("web", 3).await;
    assert_eq!(addresses(&adopted), placed, "nothing moved");
    let free: Vec<u64> = second
        .handle
        .nodes()
        .iter()
        .map(|n| n.available.cpu_millis)
        .collect();
    assert_eq!(free, [600, 200], "adopted replicas count on their nodes");
    assert_eq!(
        second.runtime.list().await.unwrap().len(),
        3,
        "no duplicate"
    );
    second.handle.stop_all().await;
}

/// A node whose Docker Engine does not answer (nothing listens at its address) must not
/// blind the scheduler to the other runtimes: process replicas are still watched and
/// restarted, and a replica that needs the engine waits with the reason.
#[tokio::test]
async fn an_unreachable_engine_does_not_blind_the_scheduler_to_the_other_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    // A port nothing listens on: every call to the engine is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let docker = bollard::Docker::connect_with_http(
        &format!("http://127.0.0.1:{closed}"),
        5,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let engine: Arc<dyn Runtime> = Arc::new(DockerRuntime::new(docker, "test-cluster", dir.path()));
    let process = Arc::new(ProcessRuntime::new(dir.path()));
    let mut config = two_nodes(dir.path());
    config.nodes[0]
        .runtimes
        .push(hansa_core::RuntimeKind::Docker);
    let as_runtime: Arc<dyn Runtime> = process.clone();
    let runtime = MultiRuntime::with_nodes(BTreeMap::from([
        ("node-a".to_string(), vec![as_runtime.clone()]),
        ("node-b".to_string(), vec![as_runtime, engine]),
    ]));
    let agent = agent_on(config, process, Arc::new(runtime)).await;

    let mut web = sleeper();
    web.resources.cpu_millis = 400;
    web.ports = vec![port("http")];
    agent
        .handle
        .set_assignments(vec![assignment("web", 1, 3, web.clone())]);
    let placed = addresses(&agent.wait_running("web", 3).await);
    let on_b: Vec<&String> = placed
        .iter()
        .filter(|(_, address)| *address == "127.0.0.52")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(on_b.len(), 1, "{placed:?}");

    // The killed replica shares its node with the dead engine: still noticed and restarted.
    let id = on_b[0].clone();
    kill(agent.process(&id).await.0);
    agent
        .wait_for("the killed replica to run again", |s| {
            by_id(s, &id).is_some_and(|r| r.state == ReplicaState::Running && r.restarts == 1)
        })
        .await;

    let mut image = sleeper();
    image.image = Some("busybox:latest".into());
    agent.handle.set_assignments(vec![
        assignment("web", 1, 3, web),
        assignment("db", 1, 1, image),
    ]);
    agent
        .wait_for("the image replica to wait for the engine", |_| {
            agent.handle.unplaced().iter().any(|u| {
                u.reason
                    .starts_with("node node-b: the docker runtime is unreachable: ")
            })
        })
        .await;
    agent.handle.stop_all().await;
    assert!(
        agent.runtime.list().await.unwrap().is_empty(),
        "stop_all stops what the reachable runtimes run"
    );
}

/// A TCP listener that forwards to the local Docker Engine's socket, standing in for a
/// node's remote engine; `cut` drops it and every connection through it, as a dead host or
/// network would, and `restore` listens on the same port again.
struct EngineLink {
    port: u16,
    forwarding: Option<tokio::task::JoinHandle<()>>,
}

impl EngineLink {
    async fn open() -> EngineLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        EngineLink {
            port,
            forwarding: Some(tokio::spawn(Self::forward(listener))),
        }
    }

    async fn forward(listener: tokio::net::TcpListener) {
        let mut connections = JoinSet::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut engine) =
                    tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut engine).await;
                }
            });
        }
    }

    fn cut(&mut self) {
        if let Some(forwarding) = self.forwarding.take() {
            // Aborting drops the listener and the JoinSet, which aborts every connection.
            forwarding.abort();
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.forwarding = Some(tokio::spawn(Self::forward(listener)));
    }
}

/// With a real engine: a container on a node whose engine becomes unreachable is neither
/// failed nor replaced; it is reported unhealthy with the reason while the engine is away,
/// and Running again, without a restart, once it answers.
#[tokio::test]
async fn a_container_on_an_engine_that_goes_away_is_unreachable_until_it_returns() {
    let Some(_) = crate::runtime::docker::tests::engine().await else {
        return;
    };
    let run = std::process::id();
    let cluster = format!("unreach-{run}");
    let tag = format!("hansa-test/busybox:unreach-{run}");
    let _image = crate::runtime::docker::tests::Image::build(&tag, &cluster);
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let mut link = EngineLink::open().await;
    let docker = bollard::Docker::connect_with_http(
        &format!("http://127.0.0.1:{}", link.port),
        3,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let engine: Arc<dyn Runtime> =
        Arc::new(DockerRuntime::new(docker, cluster.clone(), dir.path()));
    let process = Arc::new(ProcessRuntime::new(dir.path()));
    let mut config = two_nodes(dir.path());
    config.cluster.clone_from(&cluster);
    config.nodes[0].runtimes = vec![hansa_core::RuntimeKind::Docker];
    let runtime = MultiRuntime::with_nodes(BTreeMap::from([
        (
            "node-a".to_string(),
            vec![process.clone() as Arc<dyn Runtime>],
        ),
        ("node-b".to_string(), vec![engine]),
    ]));
    let agent = agent_on(config, process, Arc::new(runtime)).await;

    let container = TaskTemplate {
        image: Some(tag.clone()),
        command: vec!["sleep".to_string(), "600".to_string()],
        image_pull_policy: hansa_core::ImagePullPolicy::Never,
        ..TaskTemplate::default()
    };
    agent.handle.set_assignments(vec![
        assignment("box", 1, 1, container),
        assignment("web", 1, 1, sleeper()),
    ]);
    agent.wait_running("box", 1).await;
    agent.wait_running("web", 1).await;

    link.cut();
    let statuses = agent
        .wait_for("the container to be reported unreachable", |s| {
            s.iter().any(|r| {
                r.workload.name == "box"
                    && r.state == ReplicaState::Unhealthy
                    && r.message
                        .starts_with("node node-b: the docker runtime is unreachable")
            })
        })
        .await;
    let boxes: Vec<_> = statuses
        .iter()
        .filter(|r| r.workload.name == "box")
        .collect();
    assert_eq!(
        boxes.len(),
        1,
        "not replaced while unreachable: {statuses:#?}"
    );
    assert!(!boxes[0].healthy);
    assert_eq!(boxes[0].restarts, 0);

    link.restore().await;
    let back = agent.wait_running("box", 1).await;
    assert_eq!(back[0].restarts, 0, "the same container, never restarted");
    agent.wait_running("web", 1).await;
    agent.handle.stop_all().await;
}

/// With a real engine: containers whose node's engine stays unreachable longer than
/// `replace_unreachable_after` are replaced on the other node; when the engine answers again,
/// the originals are stopped and removed, not adopted, and the replacements keep running.
#[tokio::test]
async fn containers_on_an_engine_gone_too_long_are_replaced_on_another_node() {
    let Some(_) = crate::runtime::docker::tests::engine().await else {
        return;
    };
    let run = std::process::id();
    let cluster = format!("lost-{run}");
    let tag = format!("hansa-test/busybox:lost-{run}");
    let _image = crate::runtime::docker::tests::Image::build(&tag, &cluster);
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let mut link = EngineLink::open().await;
    // Both nodes' engines are this host's; node-a's is reached through the link.
    let local = bollard::Docker::connect_with_local_defaults().unwrap();
    let through_link = bollard::Docker::connect_with_http(
        &format!("http://127.0.0.1:{}", link.port),
        3,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let on = |docker: bollard::Docker, node: &str| -> Arc<dyn Runtime> {
        Arc::new(DockerRuntime::for_node(
            docker,
            cluster.clone(),
            node,
            dir.path(),
        ))
    };
    let runtime = MultiRuntime::with_nodes(BTreeMap::from([
        ("node-a".to_string(), vec![on(through_link, "node-a")]),
        ("node-b".to_string(), vec![on(local.clone(), "node-b")]),
    ]));
    let mut config = two_nodes(dir.path());
    config.cluster.clone_from(&cluster);
    for node in &mut config.nodes {
        node.runtimes = vec![hansa_core::RuntimeKind::Docker];
    }
    config.replace_unreachable_after = Some(Duration::from_secs(2));
    let process = Arc::new(ProcessRuntime::new(dir.path()));
    let agent = agent_on(config, process, Arc::new(runtime)).await;

    // Two replicas of 400m: bin-packing puts both on node-a (the first by name).
    let mut container = TaskTemplate {
        image: Some(tag.clone()),
        command: vec!["sleep".to_string(), "600".to_string()],
        image_pull_policy: hansa_core::ImagePullPolicy::Never,
        ..TaskTemplate::default()
    };
    container.resources.cpu_millis = 400;
    agent
        .handle
        .set_assignments(vec![assignment("box", 1, 2, container)]);
    let first = agent.wait_running("box", 2).await;
    let name = |id: &str| crate::runtime::docker::container_name(&cluster, id);
    let inspect = |id: &str| {
        let (local, name) = (local.clone(), name(id));
        async move { local.inspect_container(&name, None::<Inspect>).await.ok() }
    };
    let node_of = |id: &str| {
        let inspected = inspect(id);
        async move { inspected.await?.config?.labels?.get(LABEL_NODE).cloned() }
    };
    for r in &first {
        assert_eq!(
            node_of(&r.id).await.as_deref(),
            Some("node-a"),
            "{first:#?}"
        );
    }

    link.cut();
    let cut = std::time::Instant::now();
    let replaced = agent
        .wait_for("replacements running on node-b", |s| {
            s.len() == 2
                && s.iter().all(|r| r.state == ReplicaState::Running)
                && first.iter().all(|f| by_id(s, &f.id).is_none())
        })
        .await;
    assert!(
        cut.elapsed() >= Duration::from_secs(2),
        "replaced before the timeout: {replaced:#?}"
    );
    for r in &replaced {
        assert_eq!(node_of(&r.id).await.as_deref(), Some("node-b"));
    }
    // The originals still run on node-a: nothing could stop them.
    for r in &first {
        let running = inspect(&r.id).await.and_then(|c| c.state?.running);
        assert_eq!(running, Some(true), "{} while its engine is away", r.id);
    }

    link.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for r in &first {
        while inspect(&r.id).await.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} was not removed once its engine answered",
                r.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let after = agent.wait_running("box", 2).await;
    let ids = |v: &[ReplicaStatus]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&replaced), "the replacements kept running");
    agent.handle.stop_all().await;
}
