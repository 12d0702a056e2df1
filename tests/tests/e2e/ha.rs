//! A highly available hub: three federators on Raft. Writes survive leader kills, a restarted
//! member catches up, members are removed and re-added, a lost quorum fails fast, a corrupt
//! log is refused.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hansa_tests::{bin, wait_for, Federation, Member, Process};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  template:\n    command: [\"sleep\", \"1000\"]\n"
    )
}

/// `hansa apply -f -` through the context (which fails over among all federators).
fn apply(fed: &Federation, name: &str) -> Output {
    let mut child = Command::new(bin("hansa"))
        .args(["apply", "-f", "-"])
        .env("HANSA_CONFIG", fed.path("cli.toml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hansa");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest(name).as_bytes())
        .expect("write the manifest");
    child.wait_with_output().expect("hansa apply")
}

fn start(fed: &Federation, member: &Member) -> Process {
    fed.start_federator(&member.name, &member.config)
}

/// `hansa federators list` as one federator answers it.
fn federators(fed: &Federation, api: &str) -> Option<Vec<Value>> {
    let out = fed.hansa_at(api, &["federators", "list", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .as_array()
        .cloned()
}

/// The leader's node id, as the first answering member of `asked` sees it.
fn leader(fed: &Federation, asked: &[&Member]) -> Option<u64> {
    asked.iter().find_map(|m| {
        federators(fed, &m.api)?
            .iter()
            .find(|f| f["role"] == "leader")
            .and_then(|f| f["id"].as_u64())
    })
}

/// Waits until every listed member answers with lag 0 and the same applied index.
fn wait_converged(fed: &Federation, via: &Member, expected: usize) {
    wait_for("every federator to catch up", LIMIT, || {
        let list = federators(fed, &via.api)?;
        let caught_up = list.len() == expected
            && list
                .iter()
                .all(|f| f["role"] != "unreachable" && f["lag"].as_u64() == Some(0));
        caught_up.then_some(())
    });
}

/// Workload names as one federator serves them (`--stale`: its own applied state).
fn workload_names(fed: &Federation, api: &str, stale: bool) -> Vec<String> {
    let mut args = vec!["get", "workloads", "-o", "json"];
    if stale {
        args.push("--stale");
    }
    let out = fed.hansa_at(api, &args);
    assert!(
        out.status.success(),
        "get workloads at {api}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Value = serde_json::from_slice(&out.stdout).expect("json");
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn started_control_plane(fed: &Federation) -> (Vec<Member>, Vec<Option<Process>>) {
    let members = fed.control_plane(3);
    fed.write_cli_context_for(&members);
    let processes: Vec<Option<Process>> = members.iter().map(|m| Some(start(fed, m))).collect();
    let all: Vec<&Member> = members.iter().collect();
    wait_for("a leader", LIMIT, || leader(fed, &all));
    (members, processes)
}

#[test]
fn ha_three_federators_keep_every_acknowledged_write_across_leader_kills() {
    let fed = Federation::new();
    let (members, mut processes) = started_control_plane(&fed);
    let all: Vec<&Member> = members.iter().collect();

    const WRITES: usize = 1000;
    // Kill the leader at these writes; the first victim comes back at once (so the second
    // kill keeps a quorum), the second only after 500 more writes, and must catch up.
    const KILLS: [usize; 2] = [200, 400];
    const LATE_RESTART: usize = 900;
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut late: Option<usize> = None;
    let started = Instant::now();
    for i in 0..WRITES {
        if KILLS.contains(&i) {
            let id = wait_for("a leader before the kill", LIMIT, || leader(&fed, &all));
            let index = members.iter().position(|m| m.id == id).expect("a member");
            processes[index].as_mut().expect("running").kill9();
            processes[index] = None;
            killed_at = Some(Instant::now());
            if i == KILLS[0] {
                processes[index] = Some(start(&fed, &members[index]));
            } else {
                late = Some(index);
            }
        }
        if i == LATE_RESTART {
            let index = late.take().expect("a stopped member");
            processes[index] = Some(start(&fed, &members[index]));
        }
        let name = format!("w-{i}");
        let deadline = Instant::now() + LIMIT;
        loop {
            let out = apply(&fed, &name);
            if out.status.success() {
                acknowledged.push(name.clone());
                if let Some(at) = killed_at.take() {
                    refused.push(at.elapsed());
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "apply {name} kept failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for (kill, took) in refused.iter().enumerate() {
        println!(
            "leader kill {}: writes refused for {:.0} ms (kill -9 to the next accepted write)",
            kill + 1,
            took.as_secs_f64() * 1000.0
        );
    }
    println!(
        "{WRITES} applies through the CLI in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(refused.len(), 2);

    wait_converged(&fed, &members[0], 3);
    let expected: BTreeSet<String> = acknowledged.iter().cloned().collect();
    let names = workload_names(&fed, &members[0].api, false);
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(names.len(), unique.len(), "a workload is listed twice");
    assert_eq!(
        unique, expected,
        "acknowledged writes differ from the stored ones"
    );
    // Every member, including the one restarted 500 writes later, serves the same state.
    for m in &members {
        let stale: BTreeSet<String> = workload_names(&fed, &m.api, true).into_iter().collect();
        assert_eq!(stale, expected, "{} has not caught up", m.name);
    }
}

#[test]
fn ha_a_removed_federator_rejoins_and_a_lost_quorum_fails_fast() {
    let fed = Federation::new();
    let (members, mut processes) = started_control_plane(&fed);
    for i in 0..20 {
        assert!(apply(&fed, &format!("before-{i}")).status.success());
    }

    // Remove fed-3, wipe it, and bring it back with `join`: learner first, then voter.
    let out = fed.hansa(&["federators", "remove", "3"]);
    if !out.status.success() {
        for p in processes.iter().flatten() {
            eprintln!("--- {}\n{}", p.name, p.log_text());
        }
        panic!("remove: {}", String::from_utf8_lossy(&out.stderr));
    }
    let list = wait_for("fed-3 to be gone", LIMIT, || {
        federators(&fed, &members[0].api).filter(|l| l.len() == 2)
    });
    assert!(list.iter().all(|f| f["id"] != 3), "{list:?}");
    processes[2].as_mut().expect("running").kill9();
    std::fs::remove_dir_all(fed.member_data(&members[2])).expect("wipe fed-3");
    fed.write_member_config(
        &members[2],
        &format!("bootstrap = false\njoin = \"{}\"\n", members[0].api),
    );
    processes[2] = Some(start(&fed, &members[2]));
    wait_for("fed-3 to rejoin as a voter", LIMIT, || {
        let list = federators(&fed, &members[0].api)?;
        list.iter()
            .any(|f| f["id"] == 3 && f["voter"] == true && f["role"] == "follower")
            .then_some(())
    });
    for i in 0..20 {
        assert!(apply(&fed, &format!("after-{i}")).status.success());
    }
    wait_converged(&fed, &members[0], 3);
    assert_eq!(workload_names(&fed, &members[2].api, true).len(), 40);

    // Two of three stopped: a write fails fast and says why; a stale read still answers.
    processes[1].as_mut().expect("running").kill9();
    processes[2].as_mut().expect("running").kill9();
    let asked = Instant::now();
    let out = {
        std::fs::write(fed.path("late.yaml"), manifest("late")).expect("manifest");
        fed.hansa_at(
            &members[0].api,
            &[
                "apply",
                "-f",
                fed.path("late.yaml").to_str().expect("utf-8"),
            ],
        )
    };
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a write without quorum succeeded");
    assert!(
        stderr.contains("no quorum: 1 of 3 federators reachable"),
        "{stderr}"
    );
    // Well under the 5 s the federator would otherwise wait for a commit.
    assert!(
        took < Duration::from_secs(2),
        "the write took {took:?} to fail"
    );
    println!(
        "without quorum, a write failed after {took:?}: {}",
        stderr.trim()
    );
    assert_eq!(workload_names(&fed, &members[0].api, true).len(), 40);
    let asked = Instant::now();
    let out = fed.hansa_at(&members[0].api, &["get", "workloads"]);
    assert!(
        !out.status.success(),
        "a linearizable read without quorum succeeded"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the read took {:?} to fail",
        asked.elapsed()
    );

    // A corrupt log is refused at start, naming the file, instead of serving wrong data.
    processes[0].as_mut().expect("running").kill9();
    let log = fed
        .member_data(&members[0])
        .join("raft-log")
        .join(format!("{:020}.wal", 1));
    let mut bytes = std::fs::read(&log).expect("read the log");
    // Everything after the first record's length field: no record passes its checksums.
    for b in bytes.iter_mut().skip(4) {
        *b ^= 0x5a;
    }
    std::fs::write(&log, bytes).expect("corrupt the log");
    let mut broken = start(&fed, &members[0]);
    let status = broken.wait_exit(LIMIT);
    assert!(!status.success());
    let text = broken.log_text();
    assert!(
        text.contains("corrupt") && text.contains("raft-log"),
        "expected a clear corruption error: {text}"
    );
}

fn scaled(marker: &str, replicas: u32) -> String {
    format!(
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata:\n  name: sleeper\nspec:\n  replicas: {replicas}\n  template:\n    command: [\"sh\", \"-c\", \"echo started $E2E_RUN; exec sleep 3600\"]\n    env: {{E2E_RUN: \"{marker}\"}}\n    resources: {{cpu: 10m, memory: 16Mi}}\n"
    )
}

fn cluster_health(fed: &Federation, api: &str) -> Option<String> {
    let out = fed.hansa_at(api, &["get", "clusters", "-o", "json"]);
    let clusters: Value = serde_json::from_slice(&out.stdout).ok()?;
    clusters
        .as_array()?
        .iter()
        .find(|c| c["name"] == "eu-1")
        .and_then(|c| c["health"].as_str().map(str::to_string))
}

#[test]
fn ha_an_agent_on_a_follower_keeps_its_assignments_across_a_leader_change() {
    let fed = Federation::new();
    let (members, mut processes) = started_control_plane(&fed);
    let all: Vec<&Member> = members.iter().collect();
    let leader_id = wait_for("a leader", LIMIT, || leader(&fed, &all));
    let follower = members
        .iter()
        .find(|m| m.id != leader_id)
        .expect("a follower");

    // The agent knows only the follower: its heartbeats reach the leader by relay.
    let eu = fed.issue("cluster", "eu-1");
    let config = fed.agent_config("eu-1", "eu", "127.0.10.1", &follower.api, (&eu.0, &eu.1));
    let _agent = fed.start_agent("eu-1", &config);
    wait_for("eu-1 Ready", LIMIT, || {
        (cluster_health(&fed, &follower.api)? == "Ready").then_some(())
    });
    // Every federator's view shows the agent connected, not only the one it streams to: the
    // leader hears of it by relay, the other follower from the leader's answer.
    for m in &members {
        wait_for("every federator to see eu-1 connected", LIMIT, || {
            let out = fed.hansa_at(&m.api, &["get", "clusters", "-o", "json", "--stale"]);
            let clusters: Value = serde_json::from_slice(&out.stdout).ok()?;
            clusters
                .as_array()?
                .iter()
                .any(|c| c["name"] == "eu-1" && c["connected"] == true)
                .then_some(())
        });
    }
    let marker = format!("ha-{}", std::process::id());
    let file = fed.path("sleeper.yaml");
    std::fs::write(&file, scaled(&marker, 2)).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    wait_for("2 replicas", LIMIT, || {
        (hansa_tests::processes_with_env("E2E_RUN", &marker).len() == 2).then_some(())
    });
    // `hansa logs` asked of any federator reaches the agent through the one it streams to.
    for m in &members {
        let logs = wait_for(
            &format!("the replica's output via {}", m.api),
            LIMIT,
            || {
                let out = fed.hansa_at(&m.api, &["logs", "sleeper"]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (out.status.success() && text.contains("started")).then_some(text)
            },
        );
        assert!(logs.contains(&format!("started {marker}")), "{logs}");
    }

    // Kill the leader; the agent's follower stays up.
    let index = members
        .iter()
        .position(|m| m.id == leader_id)
        .expect("leader");
    processes[index].as_mut().expect("running").kill9();
    processes[index] = None;
    let survivors: Vec<&Member> = members.iter().filter(|m| m.id != leader_id).collect();
    let new_leader = wait_for("a new leader", LIMIT, || leader(&fed, &survivors));
    assert_ne!(new_leader, leader_id);

    // Past the new leader's grace period the cluster is still Ready (the relay carries its
    // heartbeats), and a change made now reaches the agent.
    std::fs::write(&file, scaled(&marker, 3)).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    wait_for("3 replicas after the leader change", LIMIT, || {
        (hansa_tests::processes_with_env("E2E_RUN", &marker).len() == 3).then_some(())
    });
    let grace_over = Instant::now() + Duration::from_secs(7);
    while Instant::now() < grace_over {
        assert_eq!(
            cluster_health(&fed, &follower.api).as_deref(),
            Some("Ready"),
            "the new leader lost track of an agent streaming to a follower"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(hansa_tests::processes_with_env("E2E_RUN", &marker).len(), 3);
}

#[test]
fn ha_a_backup_restores_a_whole_control_plane() {
    let fed = Federation::new();
    let (members, mut processes) = started_control_plane(&fed);
    for i in 0..30 {
        assert!(apply(&fed, &format!("kept-{i}")).status.success());
    }
    let backup = fed.path("federation.backup");
    let out = fed.hansa_ok(&["snapshot", "save", backup.to_str().expect("utf-8")]);
    assert!(out.contains("saved the federation state"), "{out}");
    for p in processes.iter_mut().flatten() {
        p.kill9();
    }

    // A new control plane: fed-1 from the backup in a fresh data directory, the others join.
    for m in &members {
        // remove_dir_all fails with NotFound when an entry goes away while it walks the tree
        // (seen once, cause unknown): walk again until the directory is gone.
        let dir = fed.member_data(m);
        let mut tries = 0;
        while dir.exists() {
            tries += 1;
            match std::fs::remove_dir_all(&dir) {
                Err(e) if tries >= 5 => panic!("wipe {}: {e}", dir.display()),
                _ => {}
            }
        }
    }
    fed.write_member_config(&members[0], "");
    let mut command = Command::new(bin("federator"));
    command
        .arg("--config")
        .arg(&members[0].config)
        .arg("--restore")
        .arg(&backup)
        .env("RUST_LOG", "info");
    processes[0] = Some(Process::spawn(
        "fed-1",
        command,
        fed.path("fed-1-restore.log"),
    ));
    for m in &members[1..] {
        fed.write_member_config(m, &format!("join = \"{}\"\n", members[0].api));
    }
    processes[1] = Some(start(&fed, &members[1]));
    processes[2] = Some(start(&fed, &members[2]));
    wait_for("three voters after the restore", LIMIT, || {
        let list = federators(&fed, &members[0].api)?;
        (list.len() == 3 && list.iter().all(|f| f["voter"] == true && f["lag"] == 0)).then_some(())
    });
    let expected: BTreeSet<String> = (0..30).map(|i| format!("kept-{i}")).collect();
    for m in &members {
        let names: BTreeSet<String> = workload_names(&fed, &m.api, true).into_iter().collect();
        assert_eq!(names, expected, "{} after the restore", m.name);
    }
    assert!(apply(&fed, "after-restore").status.success());
}
