//! The `process` runtime: each replica is a supervised child process (Mesos-style), leading its
//! own process group so that a stop signal reaches its whole tree, and so that an agent killed
//! with `-9` leaves it running for the next agent to adopt.
//!
//! A replica lives in `<data_dir>/replicas/<id>/`: its working directory, `stdout.log`,
//! `stderr.log` and `replica.json` (see [`crate::state`]). The record holds the pid and the
//! process start time (`/proc/<pid>/stat` field 22), which tells our process from a later one
//! that reused the pid.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hansa_core::{RuntimeKind, TaskTemplate};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use futures::StreamExt;

use super::{
    BoxFuture, LogStream, ReplicaInfo, ReplicaRecord, ReplicaSpec, RunState, Runtime, RuntimeError,
    RuntimeHandle,
};
use crate::state;

/// The demo program's name in templates; see [`resolve_command`].
pub const DEMO_PROGRAM: &str = "hansa-demo-http";

/// How often an adopted replica (no longer our child, so no exit notification) is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// How long a stop waits after SIGKILL before it reports the group as stuck.
const KILL_WAIT: Duration = Duration::from_secs(5);
const STOP_POLL: Duration = Duration::from_millis(20);
/// How often a followed replica's log files are checked for more output.
const LOG_POLL: Duration = Duration::from_millis(200);

pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    table: Mutex<Table>,
    changes: watch::Sender<u64>,
    /// Whether the records of a previous agent were read; the first call that needs the table
    /// does it, exactly once.
    scanned: tokio::sync::Mutex<bool>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// Tells an exit notification of an earlier run of a replica id from the current one.
    next_instance: u64,
}

struct Entry {
    record: ReplicaRecord,
    run: RunState,
    adopted: bool,
    instance: u64,
}

impl ProcessRuntime {
    /// A runtime keeping its replicas under `<data_dir>/replicas/`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                data_dir: data_dir.into(),
                table: Mutex::new(Table::default()),
                changes: watch::channel(0).0,
                scanned: tokio::sync::Mutex::new(false),
            }),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn start(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaRecord, RuntimeError>> {
        Box::pin(async move {
            self.inner.ensure_scanned().await;
            self.inner.start(spec).await
        })
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.inner.ensure_scanned().await;
            self.inner.stop(id, grace).await
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.inner.ensure_scanned().await;
            if self.inner.lock().entries.contains_key(id) {
                self.inner.stop(id, Duration::ZERO).await?;
            }
            state::remove_replica_dir(&self.inner.data_dir, id)
                .await
                .map_err(|source| RuntimeError::Record {
                    id: id.to_string(),
                    source,
                })
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RuntimeError>> {
        Box::pin(async move {
            self.inner.ensure_scanned().await;
            let table = self.inner.lock();
            Ok(table.entries.values().map(Entry::info).collect())
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ReplicaInfo>, RuntimeError>> {
        Box::pin(async move {
            self.inner.ensure_scanned().await;
            Ok(self.inner.lock().entries.get(id).map(Entry::info))
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn logs<'a>(
        &'a self,
        id: &'a str,
        follow: bool,
        tail: Option<u32>,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>> {
        Box::pin(async move {
            self.inner.ensure_scanned().await;
            let dir = state::replica_dir(&self.inner.data_dir, id).map_err(|source| {
                RuntimeError::Record {
                    id: id.to_string(),
                    source,
                }
            })?;
            let files = [dir.join("stdout.log"), dir.join("stderr.log")];
            if !files.iter().any(|f| f.exists()) {
                return Err(RuntimeError::UnknownReplica(id.to_string()));
            }
            // What is there now: stdout's tail, then stderr's (the files do not record how
            // their lines interleaved).
            let mut head = Vec::new();
            let mut offsets = [0u64; 2];
            for (file, offset) in files.iter().zip(&mut offsets) {
                let text = tokio::fs::read(file).await.unwrap_or_default();
                *offset = text.len() as u64;
                head.extend(super::tail_lines(&text, tail));
            }
            let head = futures::stream::iter((!head.is_empty()).then_some(Ok(head)));
            if !follow {
                return Ok(Box::pin(head) as LogStream);
            }
            let inner = Arc::downgrade(&self.inner);
            let id = id.to_string();
            let more = futures::stream::unfold(
                (files, offsets, false),
                move |(files, mut offsets, done)| {
                    let inner = inner.clone();
                    let id = id.clone();
                    async move {
                        if done {
                            return None;
                        }
                        loop {
                            let mut chunk = Vec::new();
                            for (file, offset) in files.iter().zip(&mut offsets) {
                                chunk.extend(read_from(file, offset).await);
                            }
                            let running = inner.upgrade().is_some_and(|inner| {
                                inner
                                    .lock()
                                    .entries
                                    .get(&id)
                                    .is_some_and(|e| e.run == RunState::Running)
                            });
                            if !chunk.is_empty() || !running {
                                // Once it stopped, what it wrote last is the last chunk.
                                return Some((Ok(chunk), (files, offsets, !running)));
                            }
                            tokio::time::sleep(LOG_POLL).await;
                        }
                    }
                },
            )
            .filter(|chunk| std::future::ready(!matches!(chunk, Ok(c) if c.is_empty())));
            Ok(Box::pin(head.chain(more)) as LogStream)
        })
    }
}

/// What `path` holds past `offset`; advances `offset`.
async fn read_from(path: &Path, offset: &mut u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    if file.seek(std::io::SeekFrom::Start(*offset)).await.is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).await.is_ok() {
        *offset += buf.len() as u64;
    }
    buf
}

impl Entry {
    fn info(&self) -> ReplicaInfo {
        ReplicaInfo {
            record: self.record.clone(),
            run: self.run.clone(),
            adopted: self.adopted,
        }
    }

    fn process(&self) -> Option<(u32, u64)> {
        match self.record.handle {
            RuntimeHandle::Process { pid, start_ticks } => Some((pid, start_ticks)),
            RuntimeHandle::Docker { .. } => None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent even if a holder panicked: every update is one statement.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn mark_exited(&self, id: &str, instance: u64, reason: String) {
        let mut table = self.lock();
        if let Some(entry) = table.entries.get_mut(id) {
            if entry.instance == instance && entry.run == RunState::Running {
                tracing::info!(replica = id, %reason, "replica exited");
                entry.run = RunState::Exited { reason };
                drop(table);
                self.bump();
            }
        }
    }

    /// Adopts the replicas a previous agent left running; forgets (and cleans up after) the
    /// ones that died meanwhile.
    async fn ensure_scanned(self: &Arc<Self>) {
        let mut scanned = self.scanned.lock().await;
        if *scanned {
            return;
        }
        *scanned = true;
        for record in state::read_records(&self.data_dir).await {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a replica record");
                    continue;
                }
            };
            if self.lock().entries.contains_key(&record.id) {
                continue;
            }
            let RuntimeHandle::Process { pid, start_ticks } = record.handle else {
                continue;
            };
            if process_alive(pid, start_ticks) {
                tracing::info!(replica = %record.id, pid, "adopting a running replica");
                let mut table = self.lock();
                let instance = table.next_instance;
                table.next_instance += 1;
                let id = record.id.clone();
                table.entries.insert(
                    id.clone(),
                    Entry {
                        record,
                        run: RunState::Running,
                        adopted: true,
                        instance,
                    },
                );
                tokio::spawn(watch_adopted(
                    Arc::downgrade(self),
                    id,
                    instance,
                    pid,
                    start_ticks,
                ));
            } else {
                tracing::info!(replica = %record.id, pid, "replica ended while no agent ran; forgetting it");
                // Its leader is gone; whatever else of its group survived goes too.
                if let Err(e) = signal_group(pid, start_ticks, Signal::SIGKILL) {
                    tracing::warn!(replica = %record.id, error = %e, "cannot clean up a dead replica's group");
                }
                if let Err(e) = state::remove_record(&self.data_dir, &record.id).await {
                    tracing::warn!(replica = %record.id, error = %e, "cannot remove a dead replica's record");
                }
            }
        }
    }

    async fn start(self: &Arc<Self>, spec: ReplicaSpec) -> Result<ReplicaRecord, RuntimeError> {
        if let Some(image) = &spec.template.image {
            return Err(RuntimeError::ImageNotSupported {
                runtime: RuntimeKind::Process,
                image: image.clone(),
            });
        }
        let record_error = |source| RuntimeError::Record {
            id: spec.id.clone(),
            source,
        };
        let dir = state::replica_dir(&self.data_dir, &spec.id).map_err(record_error)?;
        if let Some(entry) = self.lock().entries.get(&spec.id) {
            if entry.run == RunState::Running {
                return Err(RuntimeError::AlreadyRunning(spec.id.clone()));
            }
        }
        let (program, args) = resolve_command(&spec.template)?;
        let io_error = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("cannot create", &dir))?;
        let stdout = open_log(&dir.join("stdout.log")).map_err(io_error("cannot open", &dir))?;
        let stderr = open_log(&dir.join("stderr.log")).map_err(io_error("cannot open", &dir))?;

        let mut command = Command::new(&program);
        command
            .args(&args)
            .env_clear()
            .envs(spec.environment())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group: signals reach the whole tree, and the agent's terminal or
            // death does not.
            .process_group(0);
        let mut child = command.spawn().map_err(|source| RuntimeError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        // Not yet reaped, so /proc/<pid> exists even if it already exited. Without its start
        // time the replica could be neither adopted nor stopped safely.
        let Some(start_ticks) = read_stat(pid).map(|s| s.start_ticks) else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let path = PathBuf::from(format!("/proc/{pid}/stat"));
            let source = std::io::Error::other("no such process");
            return Err(io_error("cannot read", &path)(source));
        };
        let record = ReplicaRecord {
            id: spec.id.clone(),
            workload: spec.workload.clone(),
            revision: spec.revision,
            template_hash: spec.template_hash.clone(),
            node: spec.node.clone(),
            host_ports: spec.host_ports.clone(),
            endpoints: spec.endpoints(),
            started_at_ms: now_ms(),
            handle: RuntimeHandle::Process { pid, start_ticks },
        };
        if let Err(e) = state::write_record(&self.data_dir, &record).await {
            // Unrecorded, a restarted agent would not find it and start a duplicate.
            let _ = signal_group(pid, start_ticks, Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(record_error(e));
        }
        tracing::info!(replica = %spec.id, pid, program = %program.display(), "replica started");
        let instance = {
            let mut table = self.lock();
            let instance = table.next_instance;
            table.next_instance += 1;
            table.entries.insert(
                spec.id.clone(),
                Entry {
                    record: record.clone(),
                    run: RunState::Running,
                    adopted: false,
                    instance,
                },
            );
            instance
        };
        self.bump();
        tokio::spawn(supervise_child(
            Arc::downgrade(self),
            spec.id,
            instance,
            child,
        ));
        Ok(record)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some((pid, start_ticks)) = self.lock().entries.get(id).and_then(Entry::process) else {
            return Ok(());
        };
        terminate_group(id, pid, start_ticks, grace).await?;
        state::remove_record(&self.data_dir, id)
            .await
            .map_err(|source| RuntimeError::Record {
                id: id.to_string(),
                source,
            })?;
        if self.lock().entries.remove(id).is_some() {
            tracing::info!(replica = id, pid, "replica stopped");
            self.bump();
        }
        Ok(())
    }
}

/// Waits for our own child (which reaps it) and records how it ended.
async fn supervise_child(inner: Weak<Inner>, id: String, instance: u64, mut child: Child) {
    let reason = match child.wait().await {
        Ok(status) => describe_exit(status),
        Err(e) => format!("lost track of the process: {e}"),
    };
    if let Some(inner) = inner.upgrade() {
        inner.mark_exited(&id, instance, reason);
    }
}

/// An adopted replica is not our child: no exit notification, so poll.
async fn watch_adopted(inner: Weak<Inner>, id: String, instance: u64, pid: u32, start_ticks: u64) {
    loop {
        tokio::time::sleep(ADOPTED_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        if !process_alive(pid, start_ticks) {
            let reason = "exited while adopted (exit status unknown)".to_string();
            inner.mark_exited(&id, instance, reason);
            return;
        }
        let current = inner.lock().entries.get(&id).map(|e| e.instance);
        if current != Some(instance) {
            return;
        }
    }
}

/// SIGTERM to the group, `grace` to go, then SIGKILL; returns once no process of the group
/// is left (zombies waiting for their reaper do not count).
async fn terminate_group(
    id: &str,
    pid: u32,
    start_ticks: u64,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let gone = || !process_alive(pid, start_ticks) && !group_alive(pid, start_ticks);
    if gone() {
        return Ok(());
    }
    signal_group(pid, start_ticks, Signal::SIGTERM)?;
    if wait_until(Instant::now() + grace, gone).await {
        return Ok(());
    }
    tracing::warn!(
        replica = id,
        pid,
        ?grace,
        "replica ignored SIGTERM; killing its group"
    );
    signal_group(pid, start_ticks, Signal::SIGKILL)?;
    if wait_until(Instant::now() + KILL_WAIT, gone).await {
        return Ok(());
    }
    Err(RuntimeError::StopTimeout {
        id: id.to_string(),
        pgid: pid,
        waited: KILL_WAIT,
    })
}

async fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// Signals the group our replica leads, unless its pid now belongs to another process (which
/// means our group is gone: Linux does not reuse a pid that is still a group id).
fn signal_group(pgid: u32, start_ticks: u64, signal: Signal) -> Result<(), RuntimeError> {
    if let Some(stat) = read_stat(pgid) {
        if stat.start_ticks != start_ticks {
            return Ok(());
        }
    }
    let Ok(raw) = i32::try_from(pgid) else {
        return Ok(());
    };
    if raw <= 1 {
        return Ok(());
    }
    match signal::killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(RuntimeError::Signal { pgid, source }),
    }
}

/// Whether our replica's leader runs: the pid exists, is not a zombie, and started when ours did.
pub fn process_alive(pid: u32, start_ticks: u64) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 || signal::kill(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
        return false;
    }
    read_stat(pid).is_some_and(|s| s.start_ticks == start_ticks && !s.is_dead())
}

/// Whether any live (non-zombie) process is still in our replica's group.
pub fn group_alive(pgid: u32, start_ticks: u64) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 || signal::killpg(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
        return false;
    }
    if read_stat(pgid).is_some_and(|s| s.start_ticks != start_ticks) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .any(|s| s.pgrp == raw && !s.is_dead())
}

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    /// Field 22, `starttime`: clock ticks after boot.
    pub start_ticks: u64,
}

impl ProcStat {
    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The program and arguments of a template: `command` followed by `args`. `hansa-demo-http`,
/// when no such program is on PATH, is the agent's own executable's `demo-http` subcommand
/// (both `member-agent` and `hansa` have one).
pub fn resolve_command(template: &TaskTemplate) -> Result<(PathBuf, Vec<String>), RuntimeError> {
    let (first, rest) = template
        .command
        .split_first()
        .ok_or(RuntimeError::NoCommand)?;
    let mut args: Vec<String> = rest.iter().chain(&template.args).cloned().collect();
    if first == DEMO_PROGRAM && find_on_path(DEMO_PROGRAM).is_none() {
        let exe = std::env::current_exe().map_err(|source| RuntimeError::Spawn {
            program: DEMO_PROGRAM.to_string(),
            source,
        })?;
        args.insert(0, "demo-http".to_string());
        return Ok((exe, args));
    }
    Ok((PathBuf::from(first), args))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// `exited with status 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(number) = status.signal() {
        match Signal::try_from(number) {
            Ok(signal) => format!("killed by signal {number} ({signal})"),
            Err(_) => format!("killed by signal {number}"),
        }
    } else {
        format!("ended: {status}")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hansa_core::WorkloadKey;

    use super::*;

    fn sh_spec(id: &str, script: &str) -> ReplicaSpec {
        let template = TaskTemplate {
            command: vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()],
            ..TaskTemplate::default()
        };
        ReplicaSpec {
            id: id.to_string(),
            workload: WorkloadKey::new("default", "t"),
            revision: 1,
            cluster: "c".to_string(),
            node: "local".to_string(),
            node_address: "127.0.0.1".to_string(),
            template_hash: super::super::template_hash(&template),
            template,
            host_ports: Vec::new(),
        }
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 200";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.start_ticks, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process_is_alive_with_its_start_time_only() {
        let pid = std::process::id();
        let ticks = read_stat(pid).unwrap().start_ticks;
        assert!(process_alive(pid, ticks));
        assert!(
            !process_alive(pid, ticks + 1),
            "a reused pid is not our process"
        );
    }

    #[test]
    fn demo_program_falls_back_to_the_agent_executable() {
        let template = TaskTemplate {
            command: vec![DEMO_PROGRAM.to_string(), "--greeting".to_string()],
            args: vec!["hi".to_string()],
            ..TaskTemplate::default()
        };
        let (program, args) = resolve_command(&template).unwrap();
        assert_eq!(program, std::env::current_exe().unwrap());
        assert_eq!(args, ["demo-http", "--greeting", "hi"]);
        assert!(matches!(
            resolve_command(&TaskTemplate::default()),
            Err(RuntimeError::NoCommand)
        ));
    }

    #[tokio::test]
    async fn logs_go_to_files_and_exits_are_described() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(dir.path());
        let mut changes = runtime.changes();
        runtime
            .start(sh_spec("t-000001", "echo out; echo err >&2; exit 3"))
            .await
            .unwrap();
        let info = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let info = runtime.inspect("t-000001").await.unwrap().unwrap();
                if info.run != RunState::Running {
                    return info;
                }
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the replica exits");
        assert_eq!(
            info.run,
            RunState::Exited {
                reason: "exited with status 3".to_string()
            }
        );
        let replica = dir.path().join("replicas/t-000001");
        assert_eq!(
            std::fs::read_to_string(replica.join("stdout.log")).unwrap(),
            "out\n"
        );
        assert_eq!(
            std::fs::read_to_string(replica.join("stderr.log")).unwrap(),
            "err\n"
        );
        runtime
            .stop("t-000001", Duration::from_secs(1))
            .await
            .unwrap();
        assert!(runtime.inspect("t-000001").await.unwrap().is_none());
        assert!(!replica.join("replica.json").exists());
        assert!(replica.join("stdout.log").exists(), "logs outlive a stop");
        runtime.remove("t-000001").await.unwrap();
        assert!(!replica.exists());
    }

    async fn collect(mut stream: LogStream) -> String {
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend(chunk.unwrap());
        }
        String::from_utf8(text).unwrap()
    }

    #[tokio::test]
    async fn logs_are_read_tailed_and_followed_until_the_replica_stops() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(dir.path());
        assert!(matches!(
            runtime.logs("t-000005", false, None).await,
            Err(RuntimeError::UnknownReplica(_))
        ));
        runtime
            .start(sh_spec(
                "t-000005",
                "echo one; echo two; echo oops >&2; while [ ! -e go ]; do sleep 0.05; done; echo three",
            ))
            .await
            .unwrap();
        let stderr = dir.path().join("replicas/t-000005/stderr.log");
        wait_for("the first output", || {
            std::fs::read_to_string(&stderr).is_ok_and(|t| t == "oops\n")
        })
        .await;
        let all = collect(runtime.logs("t-000005", false, None).await.unwrap()).await;
        assert_eq!(all, "one\ntwo\noops\n");
        let last = collect(runtime.logs("t-000005", false, Some(1)).await.unwrap()).await;
        assert_eq!(last, "two\noops\n", "the tail of each stream");

        let followed = runtime.logs("t-000005", true, Some(0)).await.unwrap();
        std::fs::write(dir.path().join("replicas/t-000005/go"), "").unwrap();
        let text = tokio::time::timeout(Duration::from_secs(10), collect(followed))
            .await
            .expect("following ends when the replica exits");
        assert_eq!(text, "three\n");
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_for_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(dir.path());
        // The shell ignores SIGTERM, and so does the background child it leaves behind.
        let record = runtime
            .start(sh_spec(
                "t-000002",
                "trap '' TERM; sleep 1000 & echo started > started; wait",
            ))
            .await
            .unwrap();
        let started = dir.path().join("replicas/t-000002/started");
        wait_for("the shell to start its child", || started.exists()).await;
        let RuntimeHandle::Process { pid, start_ticks } = record.handle else {
            panic!("a process handle");
        };
        assert!(group_alive(pid, start_ticks));
        runtime
            .stop("t-000002", Duration::from_millis(200))
            .await
            .unwrap();
        assert!(!group_alive(pid, start_ticks));
        assert!(!process_alive(pid, start_ticks));
    }

    #[tokio::test]
    async fn an_image_is_refused_and_a_missing_program_is_an_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(dir.path());
        let mut spec = sh_spec("t-000003", "true");
        spec.template.image = Some("nginx:1.27".to_string());
        let err = runtime.start(spec).await.unwrap_err().to_string();
        assert!(err.contains("docker runtime"), "{err}");

        let mut spec = sh_spec("t-000004", "true");
        spec.template.command = vec!["/nonexistent/program".to_string()];
        let err = runtime.start(spec).await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/program"), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(runtime.list().await.unwrap().is_empty());
    }
}
