//! `hansa-bench-dns`: Hansa's DNS against Knot DNS, same zone, same queries, same machine.
//!
//! The zone is generated, not run: `hansa_federator::dns::synthetic` makes a federation of
//! N workloads with R healthy replicas in each of three clusters, and the benchmark serves
//! the zone view built from it — the same view a federator builds from its store and agent
//! heartbeats, without processes behind the replicas. Knot serves that view written out as a
//! master file, so both have the same names and record counts.
//!
//! Each server is pinned to one core (`taskset`), dnsperf to another, in closed-loop mode (a
//! cap on queries in flight): a pass without per-query output measures throughput and loss, a
//! second pass with `-v` measures latency percentiles.
//!
//! ```sh
//! cargo build --release -p hansa-tests --bin hansa-bench-dns
//! target/release/hansa-bench-dns --workloads 1000 --seconds 10
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use hansa_federator::dns::{synthetic, DnsMetrics, ZoneSettings, ZoneView};
use rand::{Rng, SeedableRng};

const ZONE: &str = "hansa.internal.";

#[derive(Parser)]
#[command(about = "Benchmark Hansa's DNS against Knot DNS with dnsperf")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Workloads in the generated federation.
    #[arg(long, default_value_t = 1000)]
    workloads: usize,
    /// Healthy replicas of every workload in each of the three clusters.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Seconds per dnsperf pass.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Queries in flight (dnsperf -q), closed loop; one pass per value, comma-separated. By
    /// Little's law latency is about in-flight / QPS, so a deep queue measures the queue.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 100])]
    inflight: Vec<u32>,
    /// The core the server runs on.
    #[arg(long, default_value_t = 0)]
    server_cpu: u32,
    /// The core dnsperf runs on.
    #[arg(long, default_value_t = 1)]
    client_cpu: u32,
    /// Skip Knot (only Hansa).
    #[arg(long)]
    no_knot: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// Serve the generated zone on 127.0.0.1:PORT until killed (the benchmark's server side;
    /// tests use it in network namespaces).
    Serve {
        #[arg(long)]
        port: u16,
    },
}

fn settings() -> ZoneSettings {
    ZoneSettings {
        zone: hansa_federator::dns::DnsConfig::default().zone_name(),
        ttl: 5,
        negative_ttl: 2,
        ns_addresses: vec!["127.0.0.1"
            .parse()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))],
        own_cluster: None,
    }
}

fn view(args: &Args) -> ZoneView {
    let (state, live) = synthetic::federation(args.workloads, args.replicas);
    ZoneView::build(&settings(), &state, &live, 1)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Sub::Serve { port }) => serve(&args, port),
        None => bench(&args),
    }
}

/// As a federator serves: the DNS server runs on a thread of its own; this current-thread
/// runtime only waits on it. `taskset` keeps both on the server's core.
fn serve(args: &Args, port: u16) -> anyhow::Result<()> {
    let view = view(args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async {
        // Runs until killed: nothing cancels this token.
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = DnsMetrics::register(&mut registry);
        let server = hansa_federator::dns::serve_view(
            SocketAddr::from(([127, 0, 0, 1], port)),
            view,
            metrics,
            shutdown,
        )
        .await?;
        println!("ready {}", server.addr);
        server.run().await?;
        anyhow::Ok(())
    })
}

struct Run {
    qps: f64,
    sent: u64,
    lost: u64,
    latencies: Vec<f64>,
}

impl Run {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        self.lost as f64 * 100.0 / self.sent as f64
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let at = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[at.min(self.latencies.len() - 1)]
    }
}

fn bench(args: &Args) -> anyhow::Result<()> {
    for tool in ["dnsperf", "taskset"] {
        which(tool)
            .with_context(|| format!("{tool} is needed (apt-get install dnsperf util-linux)"))?;
    }
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let view = view(args);
    let zone_file = dir.path().join("hansa.internal.zone");
    std::fs::write(&zone_file, view.to_zone_file(None)).context("write the zone file")?;
    let records = std::fs::read_to_string(&zone_file)?.lines().count();
    let queries = dir.path().join("queries.txt");
    write_queries(&queries, args.workloads)?;
    println!(
        "zone: {} workloads x 3 clusters x {} replicas, {records} records; queries: 70% A, 20% SRV, 10% unknown names",
        args.workloads, args.replicas
    );
    println!(
        "server on core {}, dnsperf on core {}, closed loop with {:?} queries in flight, {} s per pass",
        args.server_cpu, args.client_cpu, args.inflight, args.seconds
    );

    let hansa_port = free_udp_port()?;
    let me = std::env::current_exe().context("this program's path")?;
    let mut hansa = Command::new("taskset");
    hansa
        .arg("-c")
        .arg(args.server_cpu.to_string())
        .arg(&me)
        .args(["--workloads", &args.workloads.to_string()])
        .args(["--replicas", &args.replicas.to_string()])
        .args(["serve", "--port", &hansa_port.to_string()])
        .stdout(Stdio::null());
    let hansa = Server::start("hansa", hansa, hansa_port)?;
    let sample = format!("w0.default.svc.{ZONE}");
    let hansa_answers = hansa.answer_count(&sample)?;
    let mut rows = Vec::new();
    for &inflight in &args.inflight {
        rows.push((
            "Hansa",
            inflight,
            measure(args, inflight, hansa_port, &queries)?,
        ));
    }
    drop(hansa);

    if !args.no_knot {
        which("knotd").context("knotd is needed (apt-get install knot)")?;
        let knot_port = free_udp_port()?;
        let knot_dir = dir.path().join("knot");
        std::fs::create_dir_all(&knot_dir)?;
        let conf = knot_dir.join("knot.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{knot_port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
                 database:\n  storage: \"{d}\"\n\
                 log:\n  - target: stderr\n    any: warning\n\
                 zone:\n  - domain: {ZONE}\n    file: \"{z}\"\n    journal-content: none\n    zonefile-sync: -1\n",
                d = knot_dir.display(),
                z = zone_file.display()
            ),
        )?;
        let mut knot = Command::new("taskset");
        knot.arg("-c")
            .arg(args.server_cpu.to_string())
            .args(["knotd", "-c"])
            .arg(&conf)
            .stdout(Stdio::null());
        let knot = Server::start("knot", knot, knot_port)?;
        let knot_answers = knot.answer_count(&sample)?;
        if knot_answers != hansa_answers {
            bail!("the servers disagree on {sample}: Hansa {hansa_answers} answers, Knot {knot_answers}");
        }
        for &inflight in &args.inflight {
            rows.push((
                "Knot",
                inflight,
                measure(args, inflight, knot_port, &queries)?,
            ));
        }
        drop(knot);
    }

    println!();
    println!(
        "{:<8} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "server", "in flight", "QPS", "loss %", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (name, inflight, run) in &rows {
        println!(
            "{:<8} {:>9} {:>10.0} {:>8.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            name,
            inflight,
            run.qps,
            run.loss(),
            run.percentile(0.50) * 1e3,
            run.percentile(0.99) * 1e3,
            run.percentile(0.999) * 1e3,
            run.latencies.last().copied().unwrap_or(f64::NAN) * 1e3
        );
    }
    let (hansa, knot) = rows.split_at(args.inflight.len());
    if !knot.is_empty() {
        println!();
        for ((_, inflight, hansa), (_, _, knot)) in hansa.iter().zip(knot) {
            println!(
                "Hansa / Knot QPS per core with {inflight} in flight: {:.2}",
                hansa.qps / knot.qps
            );
        }
    }
    Ok(())
}

/// A throughput pass (no per-query output), then a latency pass (`-v`).
fn measure(args: &Args, inflight: u32, port: u16, queries: &Path) -> anyhow::Result<Run> {
    let base = |verbose: bool| {
        let mut c = Command::new("taskset");
        c.arg("-c")
            .arg(args.client_cpu.to_string())
            .arg("dnsperf")
            .args(["-s", "127.0.0.1", "-p", &port.to_string()])
            .arg("-d")
            .arg(queries)
            .args(["-l", &args.seconds.to_string()])
            .args(["-q", &inflight.to_string()])
            .args(["-t", "2"]);
        if verbose {
            c.arg("-v");
        }
        c
    };
    let output = base(false).output().context("run dnsperf")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let field = |label: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let (Some(sent), Some(lost), Some(qps)) = (
        field("Queries sent"),
        field("Queries lost"),
        field("Queries per second"),
    ) else {
        bail!(
            "unexpected dnsperf output:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let mut latency = base(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("run dnsperf -v")?;
    let stdout = latency.stdout.take().context("dnsperf's output")?;
    let mut latencies = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        // "> NOERROR w1.default.svc.hansa.internal. A 0.000123"
        if let Some(rest) = line.strip_prefix("> ") {
            if let Some(seconds) = rest
                .split_whitespace()
                .last()
                .and_then(|v| v.parse::<f64>().ok())
            {
                latencies.push(seconds);
            }
        }
    }
    latency.wait()?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(Run {
        qps,
        sent: sent as u64,
        lost: lost as u64,
        latencies,
    })
}

fn write_queries(path: &Path, workloads: usize) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..100_000 {
        let w = rng.gen_range(0..workloads);
        let roll = rng.gen_range(0..100);
        let name = synthetic::workload_name(w);
        if roll < 70 {
            if roll % 2 == 0 {
                writeln!(out, "{name}.default.svc.{ZONE} A")?;
            } else {
                let (cluster, _, _) = synthetic::CLUSTERS[roll as usize % 3];
                writeln!(out, "{cluster}.{name}.default.svc.{ZONE} A")?;
            }
        } else if roll < 90 {
            writeln!(out, "_http._tcp.{name}.default.svc.{ZONE} SRV")?;
        } else {
            writeln!(out, "unknown-{w}.default.svc.{ZONE} A")?;
        }
    }
    out.flush()?;
    Ok(())
}

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Server {
    fn start(name: &'static str, mut command: Command, port: u16) -> anyhow::Result<Server> {
        let child = command.spawn().with_context(|| format!("start {name}"))?;
        let server = Server { name, child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if server.answer_count(ZONE).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{name} did not answer on 127.0.0.1:{port} within 30 s")
    }

    /// Answers to an A query for `name` (a sanity check that both servers serve one zone).
    fn answer_count(&self, name: &str) -> anyhow::Result<u16> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        for label in name.trim_end_matches('.').split('.') {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        let qtype: u16 = if name == ZONE { 6 } else { 1 };
        query.push(0);
        query.extend_from_slice(&qtype.to_be_bytes());
        query.extend_from_slice(&[0, 1]);
        // EDNS0 OPT, 4096-byte payload, so answers are not truncated.
        query.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        socket.send_to(&query, ("127.0.0.1", self.port))?;
        let mut buffer = [0u8; 4096];
        let (len, _) = socket.recv_from(&mut buffer)?;
        if len < 12 || buffer[0..2] != [0x12, 0x34] {
            bail!("{}: a malformed answer", self.name);
        }
        Ok(u16::from_be_bytes([buffer[6], buffer[7]]))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    // TCP too: Hansa binds both.
    std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("port {port} is free on UDP but not TCP"))?;
    Ok(port)
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not found on PATH"))
}
