//! hansa-tests: a harness that starts real Hansa processes (federators, member agents, the
//! CLI) on loopback addresses of their own, and cleans up after them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

pub mod netns;

/// A built workspace binary (`cargo build --bins` puts them beside the test's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, as .ci/run does)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or fails after `limit` with `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on `ip`, for processes that must keep their address across restarts.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A UDP port free on `ip` now (for gossip).
pub fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A child process killed (with its process group) when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        command
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Process {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.child.id() as i32, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("{} did not exit within {limit:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_for(&format!("{} to exit", self.name), limit, || {
            self.child.try_wait().ok().flatten()
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A plain HTTP/1.0 GET; returns status and body.
pub fn http_get(address: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let addr: SocketAddr = address
        .parse()
        .with_context(|| format!("address {address}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A federator started by [`Federation::start_hub`].
pub struct Hub {
    pub process: Process,
    /// `127.0.0.1:<port>` of its API.
    pub api: String,
    /// Its configuration file, to restart it with.
    pub config: PathBuf,
}

/// A test federation's files: PKI, CLI context, data dirs, logs.
pub struct Federation {
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
}

impl Federation {
    /// A new directory with a CA made by `hansa certs init`.
    pub fn new() -> Federation {
        let dir = tempfile::Builder::new()
            .prefix("hansa-e2e-")
            .tempdir()
            .expect("tempdir");
        let pki = dir.path().join("pki");
        let fed = Federation { dir, pki };
        fed.hansa_ok(&[
            "certs",
            "init",
            "--dir",
            path_str(&fed.pki),
            "--trust-domain",
            "e2e.hansa.test",
        ]);
        fed
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a certificate with `hansa certs issue`.
    pub fn issue(&self, role: &str, name: &str) -> (PathBuf, PathBuf) {
        self.hansa_ok(&["certs", "issue", "--dir", path_str(&self.pki), role, name]);
        (
            self.pki.join(format!("{role}-{name}.crt")),
            self.pki.join(format!("{role}-{name}.key")),
        )
    }

    /// Runs the CLI as user `admin` against `federator`.
    pub fn hansa(&self, args: &[&str]) -> Output {
        let config = self.path("cli.toml");
        Command::new(bin("hansa"))
            .args(args)
            .env("HANSA_CONFIG", &config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run hansa")
    }

    pub fn hansa_ok(&self, args: &[&str]) -> String {
        let out = self.hansa(args);
        assert!(
            out.status.success(),
            "hansa {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `hansa ... -o json`, parsed.
    pub fn hansa_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.hansa(&all);
        if !out.status.success() {
            bail!("hansa {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Writes the CLI context for user `admin` pointing at `api`.
    pub fn write_cli_context(&self, api: &str) {
        let (cert, key) = self.issue("user", "admin");
        let text = format!(
            "current-context = \"e2e\"\n[contexts.e2e]\nfederators = [\"{api}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.pki.join("ca.crt").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(self.path("cli.toml"), text).expect("cli context");
    }

    pub fn federator_config(&self, name: &str, api_port: u16) -> PathBuf {
        let (cert, key) = self.issue("federator", name);
        let text = format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{api_port}\"\npeer_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ncluster_grace_seconds = 5\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.path(&format!("{name}-data")).display(),
            self.pki.join("ca.crt").display(),
            cert.display(),
            key.display()
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).expect("federator config");
        path
    }

    /// Configs for a new control plane of `n` federators `fed-1`..`fed-n` (node ids 1..n) on
    /// fixed loopback ports, so a restarted member keeps its addresses.
    pub fn control_plane(&self, n: u64) -> Vec<Member> {
        let members: Vec<Member> = (1..=n)
            .map(|id| Member {
                id,
                name: format!("fed-{id}"),
                api: format!("127.0.0.1:{}", free_port("127.0.0.1")),
                peer: format!("127.0.0.1:{}", free_port("127.0.0.1")),
                config: self.path(&format!("fed-{id}.toml")),
            })
            .collect();
        let peers: Vec<String> = members
            .iter()
            .map(|m| format!("{{ id = {}, url = \"https://{}\" }}", m.id, m.peer))
            .collect();
        for m in &members {
            self.write_member_config(m, &format!("peers = [{}]\n", peers.join(", ")));
        }
        members
    }

    /// Writes `member`'s config with `extra` top-level keys (e.g. `peers`, `join`).
    pub fn write_member_config(&self, member: &Member, extra: &str) {
        let (cert, key) = self.issue("federator", &member.name);
        let text = format!(
            "name = \"{}\"\nnode_id = {}\nlisten = \"{}\"\npeer_listen = \"{}\"\ndata_dir = \"{}\"\ncluster_grace_seconds = 5\n{extra}[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            member.name,
            member.id,
            member.api,
            member.peer,
            self.member_data(member).display(),
            self.pki.join("ca.crt").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(&member.config, text).expect("federator config");
    }

    pub fn member_data(&self, member: &Member) -> PathBuf {
        self.path(&format!("{}-data", member.name))
    }

    /// Writes the CLI context for user `admin` listing every federator of `members`.
    pub fn write_cli_context_for(&self, members: &[Member]) {
        let apis: Vec<String> = members.iter().map(|m| format!("\"{}\"", m.api)).collect();
        let (cert, key) = self.issue("user", "admin");
        let text = format!(
            "current-context = \"e2e\"\n[contexts.e2e]\nfederators = [{}]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            apis.join(", "),
            self.pki.join("ca.crt").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(self.path("cli.toml"), text).expect("cli context");
    }

    /// Runs the CLI against one federator only (`--federator`), as user `admin`.
    pub fn hansa_at(&self, api: &str, args: &[&str]) -> Output {
        let (cert, key) = (
            self.pki.join("user-admin.crt"),
            self.pki.join("user-admin.key"),
        );
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            "--federator".into(),
            api.into(),
            "--ca".into(),
            path_str(&self.pki.join("ca.crt")).into(),
            "--cert".into(),
            path_str(&cert).into(),
            "--key".into(),
            path_str(&key).into(),
        ]);
        Command::new(bin("hansa"))
            .args(&all)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run hansa")
    }

    /// A one-federator hub: starts federator `name` on a free loopback port, writes the CLI
    /// context for user `admin`, and waits until the API answers.
    pub fn start_hub(&self, name: &str) -> Hub {
        let api_port = free_port("127.0.0.1");
        let api = format!("127.0.0.1:{api_port}");
        let config = self.federator_config(name, api_port);
        let process = self.start_federator(name, &config);
        self.write_cli_context(&api);
        wait_for("the federator API", Duration::from_secs(60), || {
            self.hansa(&["info"]).status.success().then_some(())
        });
        Hub {
            process,
            api,
            config,
        }
    }

    pub fn start_federator(&self, name: &str, config: &Path) -> Process {
        let mut command = Command::new(bin("federator"));
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,hansa_federator=debug");
        Process::spawn(
            name,
            command,
            self.path(&format!("{name}-{}.log", unique())),
        )
    }

    /// An agent config for `cluster` on `node` (a loopback address), using `cert_name`'s
    /// certificate (normally the cluster's own).
    pub fn agent_config(
        &self,
        cluster: &str,
        region: &str,
        node: &str,
        api: &str,
        cert: (&Path, &Path),
    ) -> PathBuf {
        let text = format!(
            "cluster = \"{cluster}\"\nregion = \"{region}\"\nfederators = [\"{api}\"]\nnode_address = \"{node}\"\ndata_dir = \"{}\"\nheartbeat_ms = 500\nstop_grace_seconds = 3\n[capacity]\ncpu = \"4\"\nmemory = \"4Gi\"\ndisk = \"10Gi\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.agent_data(cluster).display(),
            self.pki.join("ca.crt").display(),
            cert.0.display(),
            cert.1.display()
        );
        let path = self.path(&format!("agent-{cluster}.toml"));
        std::fs::write(&path, text).expect("agent config");
        path
    }

    pub fn agent_data(&self, cluster: &str) -> PathBuf {
        self.path(&format!("agent-{cluster}-data"))
    }

    pub fn start_agent(&self, cluster: &str, config: &Path) -> Process {
        let mut command = Command::new(bin("member-agent"));
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,hansa_agent=debug");
        Process::spawn(
            cluster,
            command,
            self.path(&format!("agent-{cluster}-{}.log", unique())),
        )
    }

    /// Process ids of the replicas an agent has recorded (alive or not).
    pub fn replica_pids(&self, cluster: &str) -> Vec<u32> {
        recorded_pids(&self.agent_data(cluster))
    }

    /// Waits until `n` clusters are registered and Ready.
    pub fn wait_clusters_ready(&self, n: usize, limit: Duration) {
        wait_for(&format!("{n} clusters Ready"), limit, || {
            let clusters = self.hansa_json(&["get", "clusters"]).ok()?;
            let ready = clusters
                .as_array()?
                .iter()
                .filter(|c| c["health"] == "Ready")
                .count();
            (ready == n).then_some(())
        });
    }

    /// Healthy endpoints of `workload` as `hansa describe` lists them:
    /// (cluster, replica, `address:port`). Empty while the workload is unknown.
    pub fn endpoints(&self, workload: &str) -> Vec<(String, String, String)> {
        let Ok(d) = self.hansa_json(&["describe", "workload", workload]) else {
            return Vec::new();
        };
        let field =
            |e: &serde_json::Value, key: &str| e[key].as_str().unwrap_or_default().to_string();
        d["endpoints"]
            .as_array()
            .map(|eps| {
                eps.iter()
                    .map(|e| {
                        let address = format!("{}:{}", field(e, "address"), e["port"]);
                        (field(e, "cluster"), field(e, "replica"), address)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills every replica any agent of this federation recorded (test cleanup).
    pub fn kill_all_replicas(&self) {
        // Agent data dirs sit at any depth (`agent-<cluster>-data`, `hansa dev`'s
        // `<data>/clusters/<cluster>`): every dir holding `replicas/` is one.
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if entry.file_name() == "replicas" {
                    for pid in recorded_pids(&dir) {
                        // Each replica leads its own process group.
                        signal(-(pid as i32), nix::sys::signal::Signal::SIGKILL);
                    }
                } else {
                    dirs.push(path);
                }
            }
        }
    }
}

/// One peer of a peer-mode federation (see `Federation::peer_config`): a federator in
/// `mode = "peer"` beside its own cluster, on its own loopback address.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub cluster: String,
    /// Its own address (`127.0.0.x`); API, peer port and gossip bind there.
    pub ip: String,
    /// API address, `ip:port`.
    pub api: String,
    /// Gossip (UDP) address, `ip:port`.
    pub gossip: String,
    /// `/metrics` address, `ip:port`, when served.
    pub metrics: Option<String>,
    pub config: PathBuf,
}

impl Federation {
    /// Writes `gossip.key` (the federation's gossip key) once, or another key file `name`.
    pub fn gossip_key(&self, name: &str, seed: u8) -> PathBuf {
        let path = self.path(name);
        if !path.exists() {
            let key: String = (0..32u8)
                .map(|i| format!("{:02x}", i.wrapping_mul(37).wrapping_add(seed)))
                .collect();
            std::fs::write(&path, key).expect("gossip key");
        }
        path
    }

    /// Config for peer `name` beside `cluster` on address `ip`, joining `join` (gossip
    /// addresses), sealing gossip with `key`.
    pub fn peer_config(
        &self,
        name: &str,
        cluster: &str,
        ip: &str,
        join: &[String],
        key: &Path,
    ) -> Peer {
        let ports = (free_port(ip), free_udp_port(ip));
        let mut peer = self.peer_config_on(name, cluster, ip, ports, join, key);
        let metrics = format!("{ip}:{}", free_port(ip));
        let text = std::fs::read_to_string(&peer.config).expect("peer config");
        let text = text.replacen("[peer]", &format!("http_listen = \"{metrics}\"\n[peer]"), 1);
        std::fs::write(&peer.config, text).expect("peer config");
        peer.metrics = Some(metrics);
        peer
    }

    /// [`Federation::peer_config`] with fixed (API, gossip) ports, for addresses of other
    /// network namespaces.
    pub fn peer_config_on(
        &self,
        name: &str,
        cluster: &str,
        ip: &str,
        (api_port, gossip_port): (u16, u16),
        join: &[String],
        key: &Path,
    ) -> Peer {
        self.hansa_ok(&[
            "certs",
            "issue",
            "--dir",
            path_str(&self.pki),
            "federator",
            name,
            "--host",
            ip,
            "--host",
            "localhost",
        ]);
        let cert = self.pki.join(format!("federator-{name}.crt"));
        let tls_key = self.pki.join(format!("federator-{name}.key"));
        let api = format!("{ip}:{api_port}");
        let gossip = format!("{ip}:{gossip_port}");
        let join: Vec<String> = join.iter().map(|j| format!("\"{j}\"")).collect();
        let text = format!(
            "name = \"{name}\"\nmode = \"peer\"\nlisten = \"{api}\"\npeer_listen = \"{ip}:0\"\ndata_dir = \"{}\"\ncluster_grace_seconds = 5\n[peer]\ncluster = \"{cluster}\"\ngossip_listen = \"{gossip}\"\ngossip_key_file = \"{}\"\njoin = [{}]\nsuspicion_timeout_ms = 1500\nprobe_period_ms = 500\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.path(&format!("{name}-data")).display(),
            key.display(),
            join.join(", "),
            self.pki.join("ca.crt").display(),
            cert.display(),
            tls_key.display()
        );
        let config = self.path(&format!("{name}.toml"));
        std::fs::write(&config, text).expect("peer config");
        Peer {
            name: name.into(),
            cluster: cluster.into(),
            ip: ip.into(),
            api,
            gossip,
            metrics: None,
            config,
        }
    }

    /// `hansa ARGS -o json` against one federator only.
    pub fn hansa_json_at(&self, api: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.hansa_at(api, &all);
        if !out.status.success() {
            bail!(
                "hansa {args:?} at {api}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// One federator of a multi-node control plane (see `Federation::control_plane`).
#[derive(Debug, Clone)]
pub struct Member {
    pub id: u64,
    pub name: String,
    /// API address, `127.0.0.1:port`.
    pub api: String,
    /// Raft peer address, `127.0.0.1:port`.
    pub peer: String,
    pub config: PathBuf,
}

impl Default for Federation {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.kill_all_replicas();
    }
}

/// Process ids recorded in an agent data dir's `replicas/*/replica.json` (each replica leads
/// its own process group, so the pid is also the group id).
pub fn recorded_pids(agent_data: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(agent_data.join("replicas")) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("replica.json")).ok())
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .filter_map(|v| v["handle"]["pid"].as_u64())
        .filter_map(|pid| u32::try_from(pid).ok())
        .collect();
    pids.sort_unstable();
    pids
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Processes whose command line contains `needle` (to count replicas independently of the
/// agent's own records).
pub fn processes_with_env(var: &str, value: &str) -> Vec<u32> {
    let needle = format!("{var}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect();
    pids.sort_unstable();
    pids
}
