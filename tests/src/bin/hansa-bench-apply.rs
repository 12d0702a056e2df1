//! `hansa-bench-apply`: throughput and latency of `apply` on a 3-federator loopback control
//! plane (fsync on), side by side with etcd 3.4 (Debian's `etcd-server`) as 3 members on
//! loopback, plus leader failover (kill -9 to the first accepted write) for both.
//!
//! ```sh
//! cargo build --release --bins && target/release/hansa-bench-apply
//! ```
//!
//! Environment: `HANSA_BENCH_SECONDS` (per run, default 10), `HANSA_BENCH_ROUNDS` (runs of
//! each load per system, default 1; the summary takes each system's median run),
//! `HANSA_BENCH_FAILOVERS` (leader kills, default 5), `HANSA_BENCH_LOG` (the federators'
//! `RUST_LOG`), `HANSA_BENCH_ETCD=0` (skip etcd).
//!
//! Both control planes run at once, and each load runs on Hansa and then straight away on
//! etcd, so the two compared runs are seconds apart on this shared machine.
//!
//! Both sides get the same load: N clients, each with its own connection to one of the three
//! members, each sending its next request as soon as the last one returned. Client k talks to
//! member (leader + k) mod 3, so where the load lands does not depend on which member won the
//! election: one client runs twice, once on the leader and once on a follower (which forwards
//! its writes), and 64 clients spread evenly, 22 of them on the leader. Hansa: the Federation Apply RPC with a ~256-byte workload manifest, over mutual
//! TLS. etcd: puts of a 16-byte key and a 256-byte value through the `etcd-client` crate
//! (etcd's native gRPC API; plaintext on loopback, as etcd's own benchmarks run).
//!
//! Each run also prints the CPU time the three members used per operation, which moves less
//! than throughput when the machine is shared.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::BoxFuture;
use hansa_federator::security::{TlsFiles, TlsMaterial};
use hansa_proto::v1::admin_client::AdminClient;
use hansa_proto::v1::federation_client::FederationClient;
use hansa_proto::v1::{ApplyRequest, ListFederatorsRequest, ManifestFile};
use tonic::transport::Channel;

/// Operation: (client index, sequence number) -> done or failed.
type Op = Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

const MEMBERS: usize = 3;

/// The loads, each run on both systems: (name, clients, whether the first client talks to the
/// leader; the others go round the members from there).
const LOADS: [(&str, usize, bool); 3] = [
    ("1 client (leader)", 1, true),
    ("1 client (follower)", 1, false),
    ("64 clients", 64, true),
];

fn seconds(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {command:?}"))?;
        Ok(Proc(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Default)]
struct Stats {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time the servers (all members) used while measuring.
    server_cpu: Duration,
    /// CPU time this process (the clients) used while measuring: Hansa's clients speak mutual
    /// TLS, etcd's plaintext, and both share the machine with the servers.
    client_cpu: Duration,
    /// Context switches of the servers' threads while measuring.
    server_switches: u64,
    /// The first failure seen, to say what the errors were.
    first_error: Option<String>,
}

impl Stats {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    /// Server CPU per operation: steadier than throughput on a shared machine.
    fn cpu_per_op(&self) -> Duration {
        u32::try_from(self.ops.max(1)).map_or(Duration::ZERO, |ops| self.server_cpu / ops)
    }

    fn client_cpu_per_op(&self) -> Duration {
        u32::try_from(self.ops.max(1)).map_or(Duration::ZERO, |ops| self.client_cpu / ops)
    }

    /// Server thread switches per operation: each costs tens of microseconds on a VM.
    fn switches_per_op(&self) -> f64 {
        self.server_switches as f64 / self.ops.max(1) as f64
    }
}

/// Voluntary plus involuntary context switches of every thread of the processes `pids`.
fn context_switches(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// User plus system CPU time of the processes `pids` so far (Linux `/proc`).
fn cpu_time(pids: &[u32]) -> Duration {
    // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks of 1/100 s.
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name (field 2) may hold spaces; the fields after it do not.
            let after = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split(' ').collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_millis(ticks * 10)
}

/// `clients` loops of `op` for `duration`, after a short warm-up, while the servers `pids` run.
async fn drive(op: Op, clients: usize, duration: Duration, pids: &[u32]) -> Stats {
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut first_error = None;
                let mut seq = 0u64;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let result = op(client, seq).await;
                    seq += 1;
                    if sent < measure_from {
                        continue;
                    }
                    match result {
                        Ok(()) => latencies.push(sent.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let (cpu_before, switches_before) = (cpu_time(pids), context_switches(pids));
    let client_before = cpu_time(&[std::process::id()]);
    tokio::time::sleep_until(end.into()).await;
    let mut stats = Stats {
        server_cpu: cpu_time(pids).saturating_sub(cpu_before),
        client_cpu: cpu_time(&[std::process::id()]).saturating_sub(client_before),
        server_switches: context_switches(pids).saturating_sub(switches_before),
        ..Stats::default()
    };
    for task in tasks {
        if let Ok((latencies, errors, first_error)) = task.await {
            stats.latencies.extend(latencies);
            stats.errors += errors;
            stats.first_error = stats.first_error.or(first_error);
        }
    }
    stats.elapsed = duration;
    stats.ops = stats.latencies.len();
    stats.latencies.sort_unstable();
    stats
}

/// Tries `attempt` (each try bounded by 300 ms) until it succeeds; how long that took.
async fn first_success(
    attempt: impl Fn(u64) -> BoxFuture<'static, Result<(), String>>,
) -> Duration {
    let start = Instant::now();
    let mut seq = 0;
    loop {
        seq += 1;
        let tried = tokio::time::timeout(Duration::from_millis(300), attempt(seq)).await;
        if matches!(tried, Ok(Ok(()))) {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(30) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The run with the median throughput (the lower middle one of an even count).
fn median_run(runs: &[Stats]) -> &Stats {
    let mut sorted: Vec<&Stats> = runs.iter().collect();
    sorted.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    sorted[(sorted.len() - 1) / 2]
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// Hansa

struct Hansa {
    dir: PathBuf,
    apis: Vec<String>,
    configs: Vec<PathBuf>,
    processes: Vec<Option<Proc>>,
    tls: TlsMaterial,
}

/// The leader, once the same node has led in the same term for half a second. A node restarted
/// after a kill may still call an election; killing a leader that is about to lose its
/// leadership anyway would time a failover that never happened.
async fn stable_leader<F, Fut>(deadline: Instant, leader: F) -> Option<usize>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<(usize, u64)>>,
{
    let mut seen: Option<((usize, u64), Instant)> = None;
    while Instant::now() < deadline {
        let now = leader().await;
        match (now, seen) {
            (Some(current), Some((before, since))) if current == before => {
                if since.elapsed() >= Duration::from_millis(500) {
                    return Some(current.0);
                }
            }
            (Some(current), _) => seen = Some((current, Instant::now())),
            (None, _) => seen = None,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn hansa_cli(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(exe_dir().join("hansa")).args(args).output()?;
    if !out.status.success() {
        bail!("hansa {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Hansa {
    fn start(dir: &Path) -> anyhow::Result<Hansa> {
        let pki = dir.join("pki");
        let pki_s = pki.to_str().context("utf-8 path")?;
        hansa_cli(&[
            "certs",
            "init",
            "--dir",
            pki_s,
            "--trust-domain",
            "bench.hansa.test",
        ])?;
        hansa_cli(&["certs", "issue", "--dir", pki_s, "user", "bench"])?;
        let apis: Vec<String> = (0..MEMBERS)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..MEMBERS)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peer_list: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{{ id = {}, url = \"https://{p}\" }}", i + 1))
            .collect();
        let mut configs = Vec::new();
        for i in 0..MEMBERS {
            let name = format!("fed-{}", i + 1);
            hansa_cli(&["certs", "issue", "--dir", pki_s, "federator", &name])?;
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "name = \"{name}\"\nnode_id = {}\nlisten = \"{}\"\npeer_listen = \"{}\"\ndata_dir = \"{}\"\npeers = [{}]\n[tls]\nca = \"{pki_s}/ca.crt\"\ncert = \"{pki_s}/federator-{name}.crt\"\nkey = \"{pki_s}/federator-{name}.key\"\n",
                    i + 1,
                    apis[i],
                    peers[i],
                    dir.join(format!("{name}-data")).display(),
                    peer_list.join(", ")
                ),
            )?;
            configs.push(config);
        }
        let tls = TlsMaterial::load(&TlsFiles {
            ca: pki.join("ca.crt"),
            cert: pki.join("user-bench.crt"),
            key: pki.join("user-bench.key"),
        })?;
        let mut hansa = Hansa {
            dir: dir.to_path_buf(),
            apis,
            configs,
            processes: Vec::new(),
            tls,
        };
        for i in 0..MEMBERS {
            let process = hansa.spawn(i)?;
            hansa.processes.push(Some(process));
        }
        Ok(hansa)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<Proc> {
        let mut command = Command::new(exe_dir().join("federator"));
        command
            .arg("--config")
            .arg(&self.configs[i])
            // HANSA_BENCH_LOG: the federators' RUST_LOG, for looking into a run.
            .env(
                "RUST_LOG",
                std::env::var("HANSA_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            );
        Proc::spawn(command, &self.dir.join(format!("fed-{}.log", i + 1)))
    }

    fn pids(&self) -> Vec<u32> {
        self.processes.iter().flatten().map(Proc::pid).collect()
    }

    async fn channel(&self, i: usize) -> anyhow::Result<Channel> {
        Ok(self.tls.endpoint(&self.apis[i])?.connect().await?)
    }

    /// The leader's index and term, asking the running members.
    async fn leader(&self) -> Option<(usize, u64)> {
        for i in 0..MEMBERS {
            if self.processes[i].is_none() {
                continue;
            }
            let Ok(channel) = self.channel(i).await else {
                continue;
            };
            let Ok(list) = AdminClient::new(channel)
                .list_federators(ListFederatorsRequest {})
                .await
            else {
                continue;
            };
            let list = list.into_inner();
            let all_caught_up = list.federators.len() == MEMBERS
                && list
                    .federators
                    .iter()
                    .all(|f| f.role != "unreachable" && f.lag == 0);
            if let Some(leader) = list.federators.iter().find(|f| f.role == "leader") {
                if all_caught_up {
                    return usize::try_from(leader.id)
                        .ok()
                        .map(|id| (id - 1, leader.term));
                }
            }
        }
        None
    }

    async fn wait_leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stable = stable_leader(deadline, || self.leader()).await;
        stable.context("no Hansa leader with all members caught up within 60 s")
    }

    /// `clients` connections, client k to member (first + k) mod 3.
    async fn op(&self, clients: usize, first: usize, prefix: &str) -> anyhow::Result<Op> {
        let mut conns = Vec::new();
        for k in 0..clients {
            conns.push(FederationClient::new(
                self.channel((first + k) % MEMBERS).await?,
            ));
        }
        let conns = Arc::new(conns);
        let prefix = prefix.to_string();
        Ok(Arc::new(move |client, seq| {
            let mut conn = conns[client].clone();
            let name = format!("{prefix}-{client:02}-{seq:08}");
            Box::pin(async move {
                conn.apply(ApplyRequest {
                    files: vec![ManifestFile {
                        name: "bench.yaml".into(),
                        content: manifest(&name),
                    }],
                    dry_run: false,
                })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
            })
        }))
    }
}

/// A small workload: about 256 bytes of manifest.
fn manifest(name: &str) -> String {
    format!(
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{team: bench, tier: web}}\nspec:\n  replicas: 2\n  template:\n    command: [\"sleep\", \"3600\"]\n    env: {{MODE: bench}}\n    resources: {{cpu: 10m, memory: 16Mi}}\n"
    )
}

// ------------------------------------------------------------------------------------------
// etcd

struct Etcd {
    dir: PathBuf,
    clients: Vec<String>,
    args: Vec<Vec<String>>,
    processes: Vec<Option<Proc>>,
}

impl Etcd {
    fn start(dir: &Path) -> anyhow::Result<Etcd> {
        let clients: Vec<String> = (0..MEMBERS)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..MEMBERS)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let cluster: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}={p}", i + 1))
            .collect();
        let args = (0..MEMBERS)
            .map(|i| {
                vec![
                    format!("--name=e{}", i + 1),
                    format!(
                        "--data-dir={}",
                        dir.join(format!("etcd-{}", i + 1)).display()
                    ),
                    format!("--listen-client-urls={}", clients[i]),
                    format!("--advertise-client-urls={}", clients[i]),
                    format!("--listen-peer-urls={}", peers[i]),
                    format!("--initial-advertise-peer-urls={}", peers[i]),
                    format!("--initial-cluster={}", cluster.join(",")),
                    "--initial-cluster-token=hansa-bench".into(),
                    "--initial-cluster-state=new".into(),
                    "--logger=zap".into(),
                    "--log-level=error".into(),
                ]
            })
            .collect();
        let mut etcd = Etcd {
            dir: dir.to_path_buf(),
            clients,
            args,
            processes: Vec::new(),
        };
        for i in 0..MEMBERS {
            let process = etcd.spawn(i)?;
            etcd.processes.push(Some(process));
        }
        Ok(etcd)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<Proc> {
        let mut command = Command::new("etcd");
        command.args(&self.args[i]);
        Proc::spawn(command, &self.dir.join(format!("etcd-{}.log", i + 1)))
    }

    fn pids(&self) -> Vec<u32> {
        self.processes.iter().flatten().map(Proc::pid).collect()
    }

    async fn client(&self, i: usize) -> anyhow::Result<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        Ok(etcd_client::Client::connect([self.clients[i].as_str()], Some(options)).await?)
    }

    /// The leader's index and term, when every running member agrees on one.
    async fn leader(&self) -> Option<(usize, u64)> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in 0..MEMBERS {
            if self.processes[i].is_none() {
                ids.push(None);
                continue;
            }
            let status = match self.client(i).await {
                Ok(mut c) => c.status().await.ok(),
                Err(_) => None,
            };
            let status = status?;
            ids.push(status.header().map(|h| h.member_id()));
            leader = Some((status.leader(), status.raft_term()));
        }
        let (leader, term) = leader?;
        if leader == 0 {
            return None;
        }
        ids.iter()
            .position(|id| *id == Some(leader))
            .map(|i| (i, term))
    }

    async fn wait_leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stable = stable_leader(deadline, || self.leader()).await;
        stable.context("no etcd leader within 60 s")
    }

    /// `clients` connections, client k to member (first + k) mod 3; keys start with `tag`.
    async fn op(&self, clients: usize, first: usize, tag: char) -> anyhow::Result<Op> {
        let mut conns = Vec::new();
        for k in 0..clients {
            conns.push(self.client((first + k) % MEMBERS).await?.kv_client());
        }
        let conns = Arc::new(conns);
        let value = Arc::new(vec![b'x'; 256]);
        Ok(Arc::new(move |client, seq| {
            let mut conn = conns[client].clone();
            let key = format!("{tag}{client:03}{seq:012}");
            let value = value.as_ref().clone();
            Box::pin(async move {
                conn.put(key, value, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }))
    }
}

fn report(system: &str, load: &str, stats: &Stats) {
    println!(
        "{system:<6} {load:<20}: {:>8.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   server CPU {:>5.0} us/op, {:>4.1} switches/op   client CPU {:>4.0} us/op   ({} ops, {} errors)",
        stats.per_second(),
        stats.percentile(0.50).as_secs_f64() * 1000.0,
        stats.percentile(0.99).as_secs_f64() * 1000.0,
        stats.cpu_per_op().as_secs_f64() * 1e6,
        stats.switches_per_op(),
        stats.client_cpu_per_op().as_secs_f64() * 1e6,
        stats.ops,
        stats.errors
    );
    if let Some(error) = &stats.first_error {
        println!("       first error: {error}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let duration = seconds("HANSA_BENCH_SECONDS", 10);
    let count = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let failovers = count("HANSA_BENCH_FAILOVERS", 5);
    let rounds = count("HANSA_BENCH_ROUNDS", 1).clamp(1, 8);
    let dir = tempfile::Builder::new().prefix("hansa-bench-").tempdir()?;
    println!(
        "apply benchmark: 3 members each, loopback, fsync on; {}s per run, {rounds} round(s); {failovers} leader kills each",
        duration.as_secs()
    );

    let with_etcd = !std::env::var("HANSA_BENCH_ETCD").is_ok_and(|v| v == "0");
    let mut hansa = Hansa::start(dir.path())?;
    let mut etcd = if with_etcd {
        Some(Etcd::start(dir.path())?)
    } else {
        None
    };
    let hansa_leader = hansa.wait_leader().await?;
    println!("hansa  leader: member {hansa_leader}");
    let etcd_leader = match &etcd {
        Some(etcd) => {
            let leader = etcd.wait_leader().await?;
            println!("etcd   leader: member {leader}");
            leader
        }
        None => 0,
    };
    // Each load runs on Hansa, then at once on etcd, round after round: a machine that slows
    // down for a while slows both alike. The idle cluster meanwhile only sends heartbeats.
    let mut runs: Vec<(Vec<Stats>, Vec<Stats>)> =
        LOADS.iter().map(|_| Default::default()).collect();
    let mut tag = b'a';
    for round in 0..rounds {
        for (l, (load, clients, on_leader)) in LOADS.iter().enumerate() {
            let first = |leader: usize| {
                if *on_leader {
                    leader
                } else {
                    (leader + 1) % MEMBERS
                }
            };
            let op = hansa
                .op(*clients, first(hansa_leader), &format!("r{round}-{l}"))
                .await?;
            let h = drive(op, *clients, duration, &hansa.pids()).await;
            report("hansa", load, &h);
            runs[l].0.push(h);
            if let Some(etcd) = &etcd {
                let op = etcd
                    .op(*clients, first(etcd_leader), char::from(tag))
                    .await?;
                tag += 1;
                let e = drive(op, *clients, duration, &etcd.pids()).await;
                report("etcd", load, &e);
                runs[l].1.push(e);
            }
        }
    }
    let mut hansa_failover = Vec::new();
    for round in 0..failovers {
        // A member restarted after the last kill that has not caught up ends the kills; the
        // loads' figures are still reported.
        let leader = match hansa.wait_leader().await {
            Ok(leader) => leader,
            Err(e) => {
                println!("hansa  leader kill {}: not done: {e:#}", round + 1);
                break;
            }
        };
        let survivors: Vec<Channel> = {
            let mut v = Vec::new();
            for i in (0..MEMBERS).filter(|i| *i != leader) {
                v.push(hansa.channel(i).await?);
            }
            v
        };
        let survivors = Arc::new(survivors);
        if let Some(p) = hansa.processes[leader].as_mut() {
            p.kill9();
        }
        hansa.processes[leader] = None;
        let took = first_success(|seq| {
            let mut conn =
                FederationClient::new(survivors[(seq as usize) % survivors.len()].clone());
            let name = format!("failover-{round}-{seq}");
            Box::pin(async move {
                conn.apply(ApplyRequest {
                    files: vec![ManifestFile {
                        name: "bench.yaml".into(),
                        content: manifest(&name),
                    }],
                    dry_run: false,
                })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
            })
        })
        .await;
        println!(
            "hansa  leader kill {}: first accepted write after {:.0} ms",
            round + 1,
            took.as_secs_f64() * 1000.0
        );
        hansa_failover.push(took);
        hansa.processes[leader] = Some(hansa.spawn(leader)?);
    }
    drop(hansa);
    let Some(mut etcd) = etcd.take() else {
        // HANSA_BENCH_ETCD=0: Hansa alone, for comparing two builds of the federator.
        return Ok(());
    };
    let mut etcd_failover = Vec::new();
    for round in 0..failovers {
        let leader = match etcd.wait_leader().await {
            Ok(leader) => leader,
            Err(e) => {
                println!("etcd   leader kill {}: not done: {e:#}", round + 1);
                break;
            }
        };
        let mut survivors = Vec::new();
        for i in (0..MEMBERS).filter(|i| *i != leader) {
            survivors.push(etcd.client(i).await?.kv_client());
        }
        let survivors = Arc::new(survivors);
        if let Some(p) = etcd.processes[leader].as_mut() {
            p.kill9();
        }
        etcd.processes[leader] = None;
        let took = first_success(|seq| {
            let mut conn = survivors[(seq as usize) % survivors.len()].clone();
            let key = format!("f{round:03}{seq:012}");
            Box::pin(async move {
                conn.put(key, vec![b'x'; 256], None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .await;
        println!(
            "etcd   leader kill {}: first accepted write after {:.0} ms",
            round + 1,
            took.as_secs_f64() * 1000.0
        );
        etcd_failover.push(took);
        etcd.processes[leader] = Some(etcd.spawn(leader)?);
    }
    drop(etcd);

    let ratio = |h: f64, e: f64| if e > 0.0 { h / e } else { f64::NAN };
    let (hansa_kills, etcd_kills) = (hansa_failover.len(), etcd_failover.len());
    let (hf, ef) = (median(hansa_failover), median(etcd_failover));
    println!();
    println!("summary (hansa / etcd):");
    for ((load, _, _), (h, e)) in LOADS.iter().zip(&runs) {
        let (hm, em) = (median_run(h), median_run(e));
        let per_round: Vec<String> = h
            .iter()
            .zip(e)
            .map(|(h, e)| format!("{:.2}", ratio(h.per_second(), e.per_second())))
            .collect();
        println!(
            "  {load:<20}: {:.0} / {:.0} ops/s = {:.2}x   p50 {:.2} / {:.2} ms   p99 {:.2} / {:.2} ms   server CPU {:.0} / {:.0} us/op   client CPU {:.0} / {:.0} us/op{}",
            hm.per_second(),
            em.per_second(),
            ratio(hm.per_second(), em.per_second()),
            hm.percentile(0.5).as_secs_f64() * 1000.0,
            em.percentile(0.5).as_secs_f64() * 1000.0,
            hm.percentile(0.99).as_secs_f64() * 1000.0,
            em.percentile(0.99).as_secs_f64() * 1000.0,
            hm.cpu_per_op().as_secs_f64() * 1e6,
            em.cpu_per_op().as_secs_f64() * 1e6,
            hm.client_cpu_per_op().as_secs_f64() * 1e6,
            em.client_cpu_per_op().as_secs_f64() * 1e6,
            if rounds > 1 {
                format!("   (each round: {})", per_round.join(" "))
            } else {
                String::new()
            }
        );
    }
    println!(
        "  leader failover (median, kill -9 to first accepted write): {:.0} / {:.0} ms   ({hansa_kills} / {etcd_kills} kills)",
        hf.as_secs_f64() * 1000.0,
        ef.as_secs_f64() * 1000.0
    );
    Ok(())
}
