//! Health probes (http, tcp, exec) against a replica's endpoints on the node address, and the
//! thresholds that turn probe results into verdicts.
//!
//! [`HealthTracker`] is the decision, free of I/O; [`run_prober`] is the thin loop that waits
//! the grace period, probes every interval and reports verdict changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hansa_core::{HealthCheck, Probe};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// What a probe reaches: the node address, the replica's ports, and for exec probes its
/// environment and working directory.
#[derive(Debug, Clone, Default)]
pub struct ProbeTarget {
    pub address: String,
    /// Template port names with their host ports, in template order.
    pub ports: Vec<(String, u16)>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Where exec probes run when the replica has an inside (a container); `None`: on the
    /// host, with `env` and `cwd`.
    pub inside: Option<Inside>,
}

/// A replica whose runtime runs exec probes inside it.
#[derive(Clone)]
pub struct Inside {
    pub runtime: std::sync::Arc<dyn crate::runtime::Runtime>,
    pub replica: String,
}

impl std::fmt::Debug for Inside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Inside({} replica {})",
            self.runtime.kind(),
            self.replica
        )
    }
}

impl ProbeTarget {
    /// Resolves a probe's `port`: a template port name, or its index as a decimal string;
    /// empty means the first port.
    pub fn port(&self, port: &str) -> Result<u16, String> {
        let found = if port.is_empty() {
            self.ports.first()
        } else {
            self.ports
                .iter()
                .find(|(name, _)| name == port)
                .or_else(|| port.parse::<usize>().ok().and_then(|i| self.ports.get(i)))
        };
        found.map(|&(_, p)| p).ok_or_else(|| {
            if self.ports.is_empty() {
                "the health check needs a port, and the template has none".to_string()
            } else {
                format!("the health check's port {port:?} is not a port of the template")
            }
        })
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Pass,
    Fail(String),
}

/// A change in a replica's health, as reported to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// `failureThreshold` probes in a row failed; the replica is to be restarted.
    Unhealthy {
        reason: String,
    },
}

/// Consecutive-result thresholds: `successThreshold` passes make a replica healthy,
/// `failureThreshold` failures make it unhealthy (liveness semantics, whether or not it was
/// ever healthy).
#[derive(Debug, Clone)]
pub struct HealthTracker {
    failure_threshold: u32,
    success_threshold: u32,
    failures: u32,
    successes: u32,
    healthy: bool,
}

impl HealthTracker {
    pub fn new(check: &HealthCheck) -> Self {
        Self {
            failure_threshold: check.failure_threshold.max(1),
            success_threshold: check.success_threshold.max(1),
            failures: 0,
            successes: 0,
            healthy: false,
        }
    }

    /// Records one probe result; returns a verdict when the health changes.
    pub fn observe(&mut self, outcome: ProbeOutcome) -> Option<Verdict> {
        match outcome {
            ProbeOutcome::Pass => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if !self.healthy && self.successes >= self.success_threshold {
                    self.healthy = true;
                    return Some(Verdict::Healthy);
                }
                None
            }
            ProbeOutcome::Fail(reason) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.failure_threshold {
                    self.healthy = false;
                    let reason = match self.failures {
                        1 => format!("health check failed: {reason}"),
                        n => format!("health check failed {n} times in a row: {reason}"),
                    };
                    return Some(Verdict::Unhealthy { reason });
                }
                None
            }
        }
    }
}

/// Probes after `grace`, every interval, reporting each verdict; returns after reporting
/// `Unhealthy` (the replica is going to be restarted) or when `report` is closed.
pub async fn run_prober(
    check: HealthCheck,
    target: ProbeTarget,
    grace: Duration,
    report: impl Fn(Verdict) -> bool,
) {
    let interval = Duration::from_secs(u64::from(check.interval_seconds.max(1)));
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    let mut tracker = HealthTracker::new(&check);
    tokio::time::sleep(grace).await;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = probe_once(&check.probe, &target, timeout).await;
        if let Some(verdict) = tracker.observe(outcome) {
            let unhealthy = matches!(verdict, Verdict::Unhealthy { .. });
            if !report(verdict) || unhealthy {
                return;
            }
        }
    }
}

/// Runs one probe with its timeout.
pub async fn probe_once(probe: &Probe, target: &ProbeTarget, timeout: Duration) -> ProbeOutcome {
    let result = match probe {
        Probe::Http { port, path } => match target.port(port) {
            Ok(port) => with_timeout(timeout, http_check(&target.address, port, path)).await,
            Err(e) => Err(e),
        },
        Probe::Tcp { port } => match target.port(port) {
            Ok(port) => with_timeout(timeout, tcp_check(&target.address, port)).await,
            Err(e) => Err(e),
        },
        Probe::Exec { command } => exec_check(command, target, timeout).await,
    };
    match result {
        Ok(()) => ProbeOutcome::Pass,
        Err(reason) => ProbeOutcome::Fail(reason),
    }
}

async fn with_timeout(
    timeout: Duration,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs_f32())))
}

async fn tcp_check(address: &str, port: u16) -> Result<(), String> {
    TcpStream::connect((address, port))
        .await
        .map(drop)
        .map_err(|e| format!("tcp connect {}: {e}", host_port(address, port)))
}

async fn http_check(address: &str, port: u16, path: &str) -> Result<(), String> {
    let status = http_get_status(address, port, path).await?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "GET http://{}{path}: status {status}",
            host_port(address, port)
        ))
    }
}

/// A minimal HTTP/1.1 GET: sends the request, reads the status line, returns its code.
pub async fn http_get_status(address: &str, port: u16, path: &str) -> Result<u16, String> {
    let authority = host_port(address, port);
    let url = format!("http://{authority}{path}");
    let mut stream = TcpStream::connect((address, port))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: hansa-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head).ok_or_else(|| format!("GET {url}: not an HTTP response"))
}

/// `HTTP/1.1 204 No Content` -> 204.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Runs the command with the replica's environment; exit status 0 passes. On timeout the
/// command's whole process group is killed.
async fn exec_check(
    command: &[String],
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "the exec health check has no command".to_string())?;
    if let Some(inside) = &target.inside {
        let run = inside.runtime.exec(&inside.replica, command);
        match tokio::time::timeout(timeout, run).await {
            Ok(Some(Ok(0))) => return Ok(()),
            Ok(Some(Ok(code))) => return Err(format!("{program}: exited with status {code}")),
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => {}
            Err(_) => {
                return Err(format!(
                    "{program}: no exit within {}s",
                    timeout.as_secs_f32()
                ))
            }
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&target.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &target.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "{program}: {}",
            crate::runtime::process::describe_exit(status)
        )),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(format!(
                "{program}: no exit within {}s",
                timeout.as_secs_f32()
            ))
        }
    }
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    fn target(port: u16) -> ProbeTarget {
        ProbeTarget {
            address: "127.0.0.1".to_string(),
            ports: vec![("http".to_string(), port)],
            env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
            cwd: None,
            inside: None,
        }
    }

    /// Answers every connection with `response`.
    async fn serve(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn thresholds_count_consecutive_results() {
        let mut check = HealthCheck::with_probe(Probe::Tcp {
            port: String::new(),
        });
        check.failure_threshold = 2;
        check.success_threshold = 2;
        let mut tracker = HealthTracker::new(&check);
        let fail = || ProbeOutcome::Fail("refused".to_string());
        assert_eq!(tracker.observe(ProbeOutcome::Pass), None);
        assert_eq!(tracker.observe(ProbeOutcome::Pass), Some(Verdict::Healthy));
        assert_eq!(tracker.observe(ProbeOutcome::Pass), None);
        assert_eq!(tracker.observe(fail()), None);
        assert_eq!(
            tracker.observe(ProbeOutcome::Pass),
            None,
            "a pass resets the failures"
        );
        assert_eq!(tracker.observe(fail()), None);
        assert_eq!(
            tracker.observe(fail()),
            Some(Verdict::Unhealthy {
                reason: "health check failed 2 times in a row: refused".to_string()
            })
        );
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 404\r\n"), Some(404));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn probe_ports_resolve_by_name_index_or_first() {
        let target = ProbeTarget {
            ports: vec![("http".to_string(), 8080), ("admin".to_string(), 9090)],
            ..ProbeTarget::default()
        };
        assert_eq!(target.port(""), Ok(8080));
        assert_eq!(target.port("admin"), Ok(9090));
        assert_eq!(target.port("1"), Ok(9090));
        assert!(target.port("metrics").unwrap_err().contains("metrics"));
    }

    #[tokio::test]
    async fn http_probe_passes_2xx_3xx_and_fails_otherwise() {
        let http = |path: &str| Probe::Http {
            port: "http".to_string(),
            path: path.to_string(),
        };
        let ok = serve("HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            probe_once(&http("/"), &target(ok), SECOND).await,
            ProbeOutcome::Pass
        );
        let broken = serve("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let ProbeOutcome::Fail(reason) = probe_once(&http("/ready"), &target(broken), SECOND).await
        else {
            panic!("a 503 must fail");
        };
        assert!(reason.contains("status 503"), "{reason}");
        assert!(reason.contains("/ready"), "{reason}");
    }

    #[tokio::test]
    async fn tcp_probe_needs_a_listener() {
        let tcp = Probe::Tcp {
            port: String::new(),
        };
        let listening = serve("").await;
        assert_eq!(
            probe_once(&tcp, &target(listening), SECOND).await,
            ProbeOutcome::Pass
        );
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        assert!(matches!(
            probe_once(&tcp, &target(closed), SECOND).await,
            ProbeOutcome::Fail(_)
        ));
    }

    #[tokio::test]
    async fn exec_probe_uses_exit_status_env_and_timeout() {
        let exec = |script: &str| Probe::Exec {
            command: vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()],
        };
        let mut target = target(1);
        target.env.insert("EXPECTED".to_string(), "yes".to_string());
        assert_eq!(
            probe_once(&exec("test \"$EXPECTED\" = yes"), &target, SECOND).await,
            ProbeOutcome::Pass
        );
        let ProbeOutcome::Fail(reason) = probe_once(&exec("exit 4"), &target, SECOND).await else {
            panic!("exit 4 must fail");
        };
        assert!(reason.contains("status 4"), "{reason}");
        let ProbeOutcome::Fail(reason) =
            probe_once(&exec("sleep 30"), &target, Duration::from_millis(200)).await
        else {
            panic!("a hung command must fail");
        };
        assert!(reason.contains("no exit"), "{reason}");
    }

    #[tokio::test]
    async fn prober_reports_healthy_then_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut check = HealthCheck::with_probe(Probe::Tcp {
            port: String::new(),
        });
        check.interval_seconds = 1;
        check.failure_threshold = 1;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let prober = tokio::spawn(run_prober(check, target(port), Duration::ZERO, move |v| {
            tx.send(v).is_ok()
        }));
        assert_eq!(rx.recv().await, Some(Verdict::Healthy));
        drop(listener);
        let Some(Verdict::Unhealthy { reason }) = rx.recv().await else {
            panic!("expected Unhealthy");
        };
        assert!(
            reason.starts_with("health check failed: tcp connect"),
            "{reason}"
        );
        prober.await.unwrap();
    }
}
