//! `hansa-bench-gossip`: how fast peer mode's gossip spreads an update and detects a dead
//! peer, side by side with HashiCorp serf on the same machine in the same run.
//!
//! At each size (10, 50, 100 by default) it starts that many gossip peers as separate
//! processes (this binary's `peer` subcommand: hansa-gossip's `Membership` and `RecordStore`
//! over UDP on loopback, with the federator's default timings), waits until every peer sees
//! all the others alive, then
//! - dissemination: one peer writes a small record and gossips it; the time until the last
//!   peer holds it (median of `--rounds`);
//! - failure detection: one peer is killed with SIGKILL; the time until the last live peer
//!   holds it as down.
//!
//! Then the same with serf agents (default LAN profile): a user event with coalescing off,
//! timed until the last agent's event handler ran, and a killed agent, timed until the last
//! live agent's `member-failed` handler ran.
//!
//! `--loss-seconds S` also runs the largest hansa pool for S seconds with 5% of its datagrams
//! dropped (iptables `statistic` on the pool's ports, root only) and counts false "down"s.
//! `--in-process N` runs one pool of N peers in this process, each with its real membership
//! task, on hansa-gossip's `MemoryNetwork` (`--latency-ms`, default 0.5) in simulated time
//! (a tokio runtime with a paused clock): a thousand peers as processes on two cores would
//! time the CPU, not the protocol. It reports formation, dissemination, detection and, with
//! `--loss-seconds`, false "down"s under 5% loss, as above.
//!
//! ```sh
//! apt-get install serf
//! cargo build --release -p hansa-tests --bin hansa-bench-gossip
//! target/release/hansa-bench-gossip --sizes 10,50,100 --in-process 1000 --loss-seconds 60
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use hansa_gossip::{
    GossipKey, Kind, MemberState, Membership, MembershipConfig, MembershipEvent, MemoryNetwork,
    RecordStore, StoreConfig,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Benchmark peer mode's gossip against serf")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Pool sizes, run as separate processes.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    sizes: Vec<usize>,
    /// Updates timed per size (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Peers killed one after another per size (the median detection time is reported).
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// Also time a pool of this many peers in this process, on a simulated network in
    /// simulated time.
    #[arg(long)]
    in_process: Option<usize>,
    /// One-way latency of the simulated network, in milliseconds.
    #[arg(long, default_value_t = 0.5)]
    latency_ms: f64,
    /// Run the largest pool this long under 5% packet loss, counting false "down"s.
    #[arg(long, default_value_t = 0)]
    loss_seconds: u64,
    /// Skip serf.
    #[arg(long)]
    no_serf: bool,
    /// First UDP port of the pools (each pool uses a contiguous range from here).
    #[arg(long, default_value_t = 41000)]
    base_port: u16,
}

#[derive(Subcommand)]
enum Sub {
    /// One gossip peer (started by the benchmark).
    Peer {
        #[arg(long)]
        name: String,
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        join: Option<SocketAddr>,
        #[arg(long)]
        key: String,
    },
}

/// Wall-clock microseconds: peers are processes on one machine, so one clock.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn config(
    name: &str,
    bind: SocketAddr,
    key: GossipKey,
    join: Option<SocketAddr>,
) -> MembershipConfig {
    // The federator's defaults (MembershipConfig::new), as a peer-mode federator runs them.
    let mut config = MembershipConfig::new(name, format!("c-{name}"), bind, key);
    config.join = join.into_iter().collect();
    config
}

/// The `peer` subcommand: prints `up|down|suspect NAME US`, `record KEY US`, `put KEY US`;
/// reads `put KEY` lines.
fn peer(name: String, bind: SocketAddr, join: Option<SocketAddr>, key: &str) -> anyhow::Result<()> {
    let key: GossipKey = key.parse().context("--key")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let store = RecordStore::new(StoreConfig::new(&name));
        let membership = Membership::start(config(&name, bind, key, join), store.clone(), shutdown.clone())
            .await
            .context("start gossip")?;
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let say = move |line: String| {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        say(format!("ready {}", membership.local_addr()));
        let mut events = membership.subscribe();
        let mut changes = store.subscribe();
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(MembershipEvent::Up(m)) => say(format!("up {} {}", m.name, now_us())),
                    Ok(MembershipEvent::Suspect(m)) => say(format!("suspect {} {}", m.name, now_us())),
                    Ok(MembershipEvent::Down(m)) => say(format!("down {} {}", m.name, now_us())),
                    Err(_) => {}
                },
                change = changes.recv() => if let Ok(change) = change {
                    say(format!("record {} {}", change.record.key, now_us()));
                },
                line = lines.recv() => match line.as_deref().and_then(|l| l.strip_prefix("put ")) {
                    Some(key) => {
                        let at = now_us();
                        let record = store.put(Kind::Workload, key, r#"{"replicas":3}"#.as_bytes().to_vec())?;
                        membership.broadcast(&record).await?;
                        say(format!("put {key} {at}"));
                    }
                    None => break,
                },
            }
        }
        shutdown.cancel();
        Ok(())
    })
}

/// What one child peer reported.
#[derive(Default)]
struct Seen {
    /// Member name -> state and when it changed, in µs.
    members: BTreeMap<String, (String, u64)>,
    records: BTreeMap<String, u64>,
    downs: Vec<(String, u64)>,
    suspects: Vec<(String, u64)>,
}

struct PeerProcess {
    name: String,
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Mutex<Seen>>,
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_peer(
    name: &str,
    bind: SocketAddr,
    join: Option<SocketAddr>,
    key: &GossipKey,
) -> anyhow::Result<PeerProcess> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .args([
            "peer",
            "--name",
            name,
            "--bind",
            &bind.to_string(),
            "--key",
            &key.to_base64(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_LOG", "off");
    if let Some(join) = join {
        command.args(["--join", &join.to_string()]);
    }
    let mut child = command.spawn().context("spawn a peer")?;
    let stdin = child.stdin.take().context("peer stdin")?;
    let stdout = child.stdout.take().context("peer stdout")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let parts: Vec<&str> = line.split(' ').collect();
            let [what, subject, at] = parts[..] else {
                continue;
            };
            let Ok(at) = at.parse::<u64>() else { continue };
            let mut seen = lock(&sink);
            match what {
                "up" | "suspect" | "down" => {
                    seen.members
                        .insert(subject.to_string(), (what.to_string(), at));
                    if what == "down" {
                        seen.downs.push((subject.to_string(), at));
                    }
                    if what == "suspect" {
                        seen.suspects.push((subject.to_string(), at));
                    }
                }
                "record" | "put" => {
                    seen.records.entry(subject.to_string()).or_insert(at);
                }
                _ => {}
            }
        }
    });
    Ok(PeerProcess {
        name: name.to_string(),
        child,
        stdin,
        seen,
    })
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// A pool of child peers on 127.0.0.1, ports `base..base+n`.
struct Pool {
    peers: Vec<PeerProcess>,
}

impl Pool {
    fn start(n: usize, base: u16, key: &GossipKey) -> anyhow::Result<Pool> {
        let addr = |i: usize| -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], base + u16::try_from(i).unwrap_or(0)))
        };
        let mut peers = Vec::new();
        for i in 0..n {
            let join = (i > 0).then(|| addr(0));
            peers.push(spawn_peer(&format!("p{i}"), addr(i), join, key)?);
        }
        let pool = Pool { peers };
        let started = Instant::now();
        wait_until(
            "every peer to see all others alive",
            Duration::from_secs(120),
            || {
                pool.peers.iter().all(|p| {
                    lock(&p.seen)
                        .members
                        .values()
                        .filter(|(s, _)| s == "up")
                        .count()
                        == n - 1
                })
            },
        )?;
        println!(
            "  hansa: {n} peers formed a full view in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(pool)
    }

    /// Seconds until every peer holds record `key` written on peer 0.
    fn disseminate(&mut self, key: &str) -> anyhow::Result<f64> {
        writeln!(self.peers[0].stdin, "put {key}")?;
        wait_until(
            &format!("record {key} everywhere"),
            Duration::from_secs(60),
            || {
                self.peers
                    .iter()
                    .all(|p| lock(&p.seen).records.contains_key(key))
            },
        )?;
        let put = lock(&self.peers[0].seen).records[key];
        let last = self
            .peers
            .iter()
            .map(|p| lock(&p.seen).records[key])
            .max()
            .unwrap_or(put);
        Ok(last.saturating_sub(put) as f64 / 1e6)
    }

    /// Kills the last peer; seconds until every other peer holds it as down.
    fn detect_failure(&mut self) -> anyhow::Result<f64> {
        let mut victim = self.peers.pop().context("empty pool")?;
        let killed = now_us();
        victim.child.kill()?;
        let _ = victim.child.wait();
        let name = victim.name.clone();
        wait_until(
            &format!("{name} down everywhere"),
            Duration::from_secs(120),
            || {
                self.peers.iter().all(|p| {
                    lock(&p.seen)
                        .members
                        .get(&name)
                        .is_some_and(|(s, _)| s == "down")
                })
            },
        )?;
        let downs: Vec<u64> = self
            .peers
            .iter()
            .map(|p| lock(&p.seen).members[&name].1)
            .collect();
        let last = downs.iter().copied().max().unwrap_or(killed);
        if std::env::var_os("HANSA_BENCH_DETAIL").is_some() {
            let first_suspect = self
                .peers
                .iter()
                .filter_map(|p| {
                    let seen = lock(&p.seen);
                    seen.suspects
                        .iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, at)| *at)
                        .min()
                })
                .min()
                .unwrap_or(killed);
            let first_down = downs.iter().copied().min().unwrap_or(killed);
            let s = |us: u64| us.saturating_sub(killed) as f64 / 1e6;
            println!(
                "    {name}: first suspect {:.2} s, first down {:.2} s, last down {:.2} s",
                s(first_suspect),
                s(first_down),
                s(last)
            );
        }
        Ok(last.saturating_sub(killed) as f64 / 1e6)
    }

    fn false_downs(&self) -> usize {
        self.peers.iter().map(|p| lock(&p.seen).downs.len()).sum()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for p in &mut self.peers {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// A pool of serf agents with event handlers that log the arrival time of each event.
struct SerfPool {
    dir: tempfile::TempDir,
    agents: Vec<(String, Child, u16)>,
}

impl SerfPool {
    fn start(n: usize, base: u16) -> anyhow::Result<SerfPool> {
        let dir = tempfile::Builder::new()
            .prefix("hansa-bench-serf-")
            .tempdir()?;
        let handler = dir.path().join("handler.sh");
        std::fs::write(
            &handler,
            format!(
                "#!/bin/sh\nt=$(date +%s%6N)\nif [ \"$SERF_EVENT\" = member-failed ]; then while read name rest; do echo \"failed $name $t\" >> {0}/$SERF_SELF_NAME.log; done; else echo \"$SERF_EVENT $SERF_USER_EVENT $t\" >> {0}/$SERF_SELF_NAME.log; fi\n",
                dir.path().display()
            ),
        )?;
        Command::new("chmod").arg("+x").arg(&handler).status()?;
        let mut agents = Vec::new();
        for i in 0..n {
            let name = format!("s{i}");
            let port = base + u16::try_from(i).unwrap_or(0);
            let rpc = base + 1000 + u16::try_from(i).unwrap_or(0);
            let mut command = Command::new("serf");
            command
                .args([
                    "agent",
                    "-node",
                    &name,
                    "-bind",
                    &format!("127.0.0.1:{port}"),
                ])
                .args([
                    "-rpc-addr",
                    &format!("127.0.0.1:{rpc}"),
                    "-log-level",
                    "err",
                ])
                .args([
                    "-event-handler",
                    &format!("user:bench={}", handler.display()),
                ])
                .args([
                    "-event-handler",
                    &format!("member-failed={}", handler.display()),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if i > 0 {
                // Retried: an agent whose one join attempt fails stays alone for good.
                command
                    .args(["-retry-join", &format!("127.0.0.1:{base}")])
                    .args(["-retry-interval", "1s"]);
            }
            agents.push((
                name,
                command
                    .spawn()
                    .context("start serf (apt-get install serf)")?,
                rpc,
            ));
        }
        let pool = SerfPool { dir, agents };
        let started = Instant::now();
        let formed = wait_until(
            "serf agents to see each other",
            Duration::from_secs(120),
            || {
                pool.agents
                    .iter()
                    .all(|(_, _, rpc)| pool.alive_members(*rpc) == n)
            },
        );
        if let Err(e) = formed {
            let counts: Vec<usize> = pool
                .agents
                .iter()
                .map(|(_, _, rpc)| pool.alive_members(*rpc))
                .collect();
            bail!("{e}: alive members as each agent sees them: {counts:?}");
        }
        println!(
            "  serf:  {n} agents formed a full view in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(pool)
    }

    fn alive_members(&self, rpc: u16) -> usize {
        Command::new("serf")
            .args([
                "members",
                "-rpc-addr",
                &format!("127.0.0.1:{rpc}"),
                "-status",
                "alive",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The time of the first line of `name`'s log starting with `prefix`.
    fn logged(&self, name: &str, prefix: &str) -> Option<u64> {
        self.log(name)
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    fn disseminate(&self, round: usize) -> anyhow::Result<f64> {
        let payload = format!("round{round}");
        let sent = now_us();
        let status = Command::new("serf")
            .args([
                "event",
                "-coalesce=false",
                "-rpc-addr",
                &format!("127.0.0.1:{}", self.agents[0].2),
            ])
            .args(["bench", &payload])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("serf event failed");
        }
        let prefix = "user bench";
        let count = |name: &str| {
            self.log(name)
                .lines()
                .filter(|l| l.starts_with(prefix))
                .count()
        };
        wait_until("the serf event everywhere", Duration::from_secs(60), || {
            self.agents.iter().all(|(name, _, _)| count(name) > round)
        })?;
        let last = self
            .agents
            .iter()
            .filter_map(|(name, _, _)| {
                self.log(name)
                    .lines()
                    .filter(|l| l.starts_with(prefix))
                    .nth(round)
                    .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(sent);
        Ok(last.saturating_sub(sent) as f64 / 1e6)
    }

    fn detect_failure(&mut self) -> anyhow::Result<f64> {
        let (victim, mut child, _) = self.agents.pop().context("empty pool")?;
        let killed = now_us();
        child.kill()?;
        let _ = child.wait();
        let prefix = format!("failed {victim}");
        wait_until(
            &format!("{victim} failed everywhere"),
            Duration::from_secs(120),
            || {
                self.agents
                    .iter()
                    .all(|(name, _, _)| self.logged(name, &prefix).is_some())
            },
        )?;
        let last = self
            .agents
            .iter()
            .filter_map(|(name, _, _)| self.logged(name, &prefix))
            .max()
            .unwrap_or(killed);
        Ok(last.saturating_sub(killed) as f64 / 1e6)
    }
}

impl Drop for SerfPool {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An iptables rule dropping `percent`% of UDP to ports `lo..=hi` on loopback, removed on drop.
struct Loss {
    rule: Vec<String>,
}

impl Loss {
    fn add(lo: u16, hi: u16, percent: f64) -> anyhow::Result<Loss> {
        let rule: Vec<String> = [
            "INPUT",
            "-i",
            "lo",
            "-p",
            "udp",
            "--dport",
            &format!("{lo}:{hi}"),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{}", percent / 100.0),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let status = Command::new("iptables").arg("-I").args(&rule).status()?;
        if !status.success() {
            bail!("iptables -I {} failed (root needed)", rule.join(" "));
        }
        Ok(Loss { rule })
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.rule).status();
    }
}

fn run_size(args: &Args, n: usize, key: &GossipKey) -> anyhow::Result<()> {
    println!("{n} peers:");
    let mut pool = Pool::start(n, args.base_port, key)?;
    let mut times = Vec::new();
    for round in 0..args.rounds {
        times.push(pool.disseminate(&format!("bench/{n}/{round}"))?);
        std::thread::sleep(Duration::from_millis(300));
    }
    let hansa_spread = median(times);
    let mut detections = Vec::new();
    for _ in 0..args.kills {
        detections.push(pool.detect_failure()?);
    }
    let hansa_detect = median(detections);
    drop(pool);
    let (serf_spread, serf_detect) = if args.no_serf {
        (f64::NAN, f64::NAN)
    } else {
        let mut serf = SerfPool::start(n, args.base_port + 2000)?;
        let mut times = Vec::new();
        for round in 0..args.rounds {
            times.push(serf.disseminate(round)?);
            std::thread::sleep(Duration::from_millis(300));
        }
        let spread = median(times);
        let mut detections = Vec::new();
        for _ in 0..args.kills {
            detections.push(serf.detect_failure()?);
        }
        (spread, median(detections))
    };
    println!(
        "  dissemination to all (median of {}): hansa {hansa_spread:.3} s, serf {serf_spread:.3} s ({:.2}x serf's time)",
        args.rounds,
        hansa_spread / serf_spread
    );
    println!(
        "  killed peer seen dead by all (median of {}): hansa {hansa_detect:.2} s, serf {serf_detect:.2} s",
        args.kills
    );
    Ok(())
}

fn run_loss(args: &Args, n: usize, key: &GossipKey) -> anyhow::Result<()> {
    println!(
        "{n} peers, {} s with 5% of datagrams dropped:",
        args.loss_seconds
    );
    let pool = Pool::start(n, args.base_port + 4000, key)?;
    let lo = args.base_port + 4000;
    let hi = lo + u16::try_from(n).unwrap_or(0);
    let _loss = Loss::add(lo, hi, 5.0)?;
    std::thread::sleep(Duration::from_secs(args.loss_seconds));
    let falls = pool.false_downs();
    let who: BTreeSet<String> = pool
        .peers
        .iter()
        .flat_map(|p| {
            lock(&p.seen)
                .downs
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    println!("  false \"down\" declarations: {falls} (peers affected: {who:?})");
    Ok(())
}

/// A pool of `n` peers in this process on a simulated network, in simulated time: a tokio
/// runtime with a paused clock runs every peer's real membership task (foca, sealing, timers,
/// the federator's default timings) and jumps the clock whenever all of them wait, so the
/// figures are what the protocol takes, not what two CPU cores take to run a thousand peers.
fn run_in_process(args: &Args, n: usize, key: &GossipKey) -> anyhow::Result<()> {
    let latency = Duration::from_micros((args.latency_ms * 1000.0) as u64);
    println!(
        "{n} peers in one process, simulated network ({:.1} ms one-way), simulated time:",
        args.latency_ms
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let wall = Instant::now();
    runtime.block_on(async {
        let network = MemoryNetwork::new(latency);
        let shutdown = CancellationToken::new();
        let mut peers: Vec<(Arc<RecordStore>, Membership)> = Vec::new();
        let mut seed = None;
        for i in 0..n {
            let name = format!("q{i}");
            let store = RecordStore::new(StoreConfig::new(&name));
            let bind = SocketAddr::from(([127, 0, 0, 1], 0));
            let membership = Membership::start_in_memory(
                config(&name, bind, key.clone(), seed),
                &network,
                store.clone(),
                shutdown.clone(),
            )?;
            seed.get_or_insert(membership.local_addr());
            peers.push((store, membership));
            // Peers come up one after another, 10 ms apart (a thousand federators do not
            // start in the same instant); formation is timed from the last start.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = tokio::time::Instant::now();
        loop {
            let full = peers
                .iter()
                .filter(|(_, m)| m.count(MemberState::Alive) == n - 1)
                .count();
            if full == n {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("only {full} of {n} peers have a full view after 600 s");
            }
            if std::env::var_os("HANSA_BENCH_DETAIL").is_some() {
                let least = peers
                    .iter()
                    .map(|(_, m)| m.count(MemberState::Alive))
                    .min()
                    .unwrap_or(0);
                println!(
                    "    {:.0} s: {full} full, least alive {least} ({:.0} s wall)",
                    started.elapsed().as_secs_f64(),
                    wall.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!(
            "  formed a full view in {:.1} s (to the nearest second)",
            started.elapsed().as_secs_f64()
        );

        let mut spreads = Vec::new();
        for round in 0..args.rounds {
            let name = format!("bench/in-process-{round}");
            let key_of = hansa_gossip::RecordKey::new(Kind::Workload, &name);
            let writer = &peers[round % n];
            let sent = tokio::time::Instant::now();
            let record = writer.0.put(Kind::Workload, &name, b"{}".to_vec())?;
            writer.1.broadcast(&record).await?;
            while !peers.iter().all(|(s, _)| s.get(&key_of).is_some()) {
                if sent.elapsed() > Duration::from_secs(60) {
                    bail!("record {name} did not reach every peer in 60 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            spreads.push(sent.elapsed().as_secs_f64());
            // Let the round's retransmissions die down before the next.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }

        let mut detections = Vec::new();
        for _ in 0..args.kills {
            let (_, victim) = peers.pop().context("no peers left")?;
            let victim_name = victim.identity().name;
            let killed = tokio::time::Instant::now();
            drop(victim);
            while !peers.iter().all(|(_, m)| {
                m.members()
                    .iter()
                    .any(|x| x.name == victim_name && x.state == MemberState::Down)
            }) {
                if killed.elapsed() > Duration::from_secs(120) {
                    bail!("killed peer {victim_name} was not seen dead by all in 120 s");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            detections.push(killed.elapsed().as_secs_f64());
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        println!(
            "  dissemination to all: median {:.3} s (of {}); killed peer seen dead by all: median {:.2} s (of {})",
            median(spreads.clone()),
            spreads.len(),
            median(detections.clone()),
            detections.len(),
        );

        if args.loss_seconds > 0 {
            let mut events: Vec<_> = peers.iter().map(|(_, m)| m.subscribe()).collect();
            network.set_loss(0.05);
            tokio::time::sleep(Duration::from_secs(args.loss_seconds)).await;
            network.set_loss(0.0);
            let mut downs = 0;
            for events in &mut events {
                while let Ok(event) = events.try_recv() {
                    if matches!(event, MembershipEvent::Down(_)) {
                        downs += 1;
                    }
                }
            }
            println!(
                "  {} s at 5% loss: false \"down\" declarations: {downs}",
                args.loss_seconds
            );
        }
        shutdown.cancel();
        Ok(())
    })?;
    println!(
        "  ({:.0} s of wall-clock time to simulate)",
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Sub::Peer {
        name,
        bind,
        join,
        key,
    }) = &args.command
    {
        return peer(name.clone(), *bind, *join, key);
    }
    let key = GossipKey::generate();
    if !args.no_serf && Command::new("serf").arg("version").output().is_err() {
        bail!("serf is not installed (apt-get install serf), or pass --no-serf");
    }
    for &n in &args.sizes {
        run_size(&args, n, &key)?;
    }
    if args.loss_seconds > 0 {
        let n = args.sizes.iter().copied().max().unwrap_or(10);
        run_loss(&args, n, &key)?;
    }
    if let Some(n) = args.in_process {
        run_in_process(&args, n, &key)?;
    }
    Ok(())
}
