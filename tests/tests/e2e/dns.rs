//! Cross-cluster DNS with real clients: dig, glibc (`getent` in a network namespace), Debian's
//! unbound as a recursive resolver with a stub zone, garbage packets; and a real federation
//! whose replicas' health and clusters' liveness the answers follow.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hansa_federator::dns::{synthetic, DnsMetrics, ZoneSettings, ZoneView};
use hansa_tests::{bin, free_port, http_get, wait_for, Federation, Process};
use rand::{Rng, SeedableRng};

const LIMIT: Duration = Duration::from_secs(60);
const ZONE: &str = "hansa.internal.";

/// A DNS server over a generated zone, in this process, on its own port.
struct StaticServer {
    addr: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StaticServer {
    /// `workloads` workloads with `replicas` replicas in each of three clusters, zone `zone`.
    fn start(workloads: usize, replicas: usize, zone: &str) -> StaticServer {
        let (state, live) = synthetic::federation(workloads, replicas);
        let settings = ZoneSettings {
            zone: hickory_zone(zone),
            ttl: 5,
            negative_ttl: 2,
            ns_addresses: vec!["127.0.0.1".parse().expect("address")],
            own_cluster: None,
        };
        let view = ZoneView::build(&settings, &state, &live, 42);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = DnsMetrics::register(&mut registry);
        let server = runtime
            .block_on(hansa_federator::dns::serve_view(
                "127.0.0.1:0".parse().expect("address"),
                view,
                metrics,
                shutdown.clone(),
            ))
            .expect("the DNS server binds");
        let addr = server.addr;
        runtime.spawn(server.run());
        StaticServer {
            addr,
            shutdown,
            runtime: Some(runtime),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn hickory_zone(zone: &str) -> hansa_federator::dns::ZoneName {
    hansa_federator::dns::ZoneName::from_ascii(zone).expect("a zone name")
}

/// A tool the DNS tests need; scripts/test installs them.
pub(crate) fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is missing: scripts/test installs it (apt-get install dnsutils unbound iproute2)"
    );
}

/// `dig` output, parsed just enough.
#[derive(Debug)]
pub(crate) struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
    text: String,
}

impl Dig {
    pub(crate) fn values(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|r| r.get(3).map(String::as_str) == Some(rtype))
            .map(|r| r[4..].join(" "))
            .collect()
    }
}

pub(crate) fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new(tool("dig"))
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_dig(text)
}

fn parse_dig(text: String) -> Dig {
    let mut status = String::new();
    let mut flags = Vec::new();
    let (mut answers, mut authority, mut additional) = (Vec::new(), Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            match section {
                "answer" => answers.push(fields),
                "authority" => authority.push(fields),
                "additional" => additional.push(fields),
                _ => {}
            }
        }
    }
    Dig {
        status,
        flags,
        answers,
        authority,
        additional,
        text,
    }
}

#[test]
fn dns_every_record_kind_with_dig() {
    let server = StaticServer::start(3, 1, ZONE);
    let at = server.addr;

    let a = dig(at, &["w1.default.svc.hansa.internal", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert!(a.flags.contains(&"aa".to_string()), "{}", a.text);
    assert_eq!(
        a.values("A").len(),
        3,
        "one address per cluster: {}",
        a.text
    );
    assert_eq!(a.answers[0][1], "5", "the configured TTL: {}", a.text);

    let upper = dig(at, &["W1.DeFault.SVC.Hansa.Internal", "A"]);
    assert_eq!(
        upper.values("A").len(),
        3,
        "names are case-insensitive: {}",
        upper.text
    );

    let one = dig(at, &["us-1.w1.default.svc.hansa.internal", "A"]);
    assert_eq!(
        one.values("A"),
        [synthetic::replica_address(2, 1, 0).to_string()],
        "{}",
        one.text
    );

    let srv = dig(at, &["_http._tcp.w1.default.svc.hansa.internal", "SRV"]);
    assert_eq!(srv.values("SRV").len(), 3, "{}", srv.text);
    let target = srv.answers[0][7].clone();
    assert!(
        target.ends_with(".w1.default.svc.hansa.internal."),
        "{}",
        srv.text
    );
    assert!(
        !srv.additional.is_empty(),
        "SRV targets' addresses come along: {}",
        srv.text
    );
    let target_a = dig(at, &[&target, "A"]);
    assert_eq!(target_a.values("A").len(), 1, "{}", target_a.text);

    let txt = dig(at, &["dns-version.hansa.internal", "TXT"]);
    assert!(
        txt.values("TXT").join(" ").contains("hansa"),
        "{}",
        txt.text
    );
    let soa = dig(at, &["hansa.internal", "SOA"]);
    assert_eq!(soa.values("SOA").len(), 1, "{}", soa.text);
    let ns = dig(at, &["hansa.internal", "NS"]);
    assert_eq!(ns.values("NS"), ["ns.hansa.internal."], "{}", ns.text);

    // NODATA: the name exists, the type does not; the SOA rides along for negative caching.
    let nodata = dig(at, &["w1.default.svc.hansa.internal", "AAAA"]);
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.text);
    assert!(nodata.answers.is_empty(), "{}", nodata.text);
    assert_eq!(nodata.authority[0][3], "SOA", "{}", nodata.text);
    let ent = dig(at, &["default.svc.hansa.internal", "A"]);
    assert_eq!(
        ent.status, "NOERROR",
        "an empty non-terminal exists: {}",
        ent.text
    );
    // NXDOMAIN, with the SOA whose minimum (and TTL) is the negative TTL.
    let nx = dig(at, &["nope.default.svc.hansa.internal", "A"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    assert_eq!(nx.authority[0][3], "SOA", "{}", nx.text);
    assert_eq!(nx.authority[0][1], "2", "negative TTL: {}", nx.text);
    assert_eq!(
        nx.authority[0].last().map(String::as_str),
        Some("2"),
        "SOA minimum: {}",
        nx.text
    );

    // EDNS0 is answered with EDNS0.
    let edns = dig(at, &["+edns=0", "w1.default.svc.hansa.internal", "A"]);
    assert!(edns.text.contains("OPT PSEUDOSECTION"), "{}", edns.text);
    let badvers = dig(
        at,
        &[
            "+edns=1",
            "+noednsnegotiation",
            "w1.default.svc.hansa.internal",
            "A",
        ],
    );
    assert_eq!(badvers.status, "BADVERS", "{}", badvers.text);

    // This server forwards nothing: names outside the zone are refused.
    let refused = dig(at, &["example.org", "A"]);
    assert_eq!(refused.status, "REFUSED", "{}", refused.text);

    // Over TCP, the same answers.
    let tcp = dig(
        at,
        &["+tcp", "_http._tcp.w1.default.svc.hansa.internal", "SRV"],
    );
    assert_eq!(tcp.values("SRV").len(), 3, "{}", tcp.text);
}

#[test]
fn dns_truncates_over_udp_and_answers_in_full_over_tcp() {
    // One workload, 34 replicas in each of three clusters: 102 addresses and 102 SRV records.
    let server = StaticServer::start(1, 34, ZONE);
    let at = server.addr;
    let name = "_http._tcp.w0.default.svc.hansa.internal";
    let udp = dig(at, &["+ignore", "+bufsize=1232", name, "SRV"]);
    assert!(
        udp.flags.contains(&"tc".to_string()),
        "TC over UDP: {}",
        udp.text
    );
    assert!(udp.values("SRV").len() < 102, "{}", udp.text);
    let plain = dig(
        at,
        &["+ignore", "+noedns", "w0.default.svc.hansa.internal", "A"],
    );
    assert!(
        plain.flags.contains(&"tc".to_string()),
        "512 bytes without EDNS: {}",
        plain.text
    );
    // dig retries over TCP on TC by default.
    let full = dig(at, &[name, "SRV"]);
    assert!(!full.flags.contains(&"tc".to_string()), "{}", full.text);
    assert_eq!(full.values("SRV").len(), 102, "{}", full.text);
    let all_a = dig(at, &["w0.default.svc.hansa.internal", "A"]);
    assert_eq!(all_a.values("A").len(), 102, "{}", all_a.text);
}

/// A minimal query for `name` type A, id 0x4242, with EDNS0.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    q
}

/// Whether the server answers a query within `limit`. UDP may drop a datagram while the
/// server's receive buffer is still full of garbage, so the query is resent every 250 ms, as
/// a stub resolver would; a crashed or stalled server never answers.
fn answered_udp(at: SocketAddr, limit: Duration) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .expect("timeout");
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 2048];
    while Instant::now() < deadline {
        socket
            .send_to(&query("w0.default.svc.hansa.internal"), at)
            .expect("send");
        if matches!(socket.recv_from(&mut buffer), Ok((len, _)) if len > 12 && buffer[..2] == [0x42, 0x42])
        {
            return true;
        }
    }
    false
}

#[test]
fn dns_garbage_never_crashes_or_stalls_the_server() {
    let server = StaticServer::start(2, 1, ZONE);
    let at = server.addr;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");

    let mut packets: Vec<Vec<u8>> = Vec::new();
    for len in [0usize, 1, 2, 5, 11, 12, 13, 17, 100, 512, 1500, 4096] {
        packets.push((0..len).map(|_| rng.gen()).collect());
    }
    for _ in 0..500 {
        let len = rng.gen_range(0..600);
        packets.push((0..len).map(|_| rng.gen()).collect());
    }
    let valid = query("w0.default.svc.hansa.internal");
    for cut in 1..valid.len() {
        packets.push(valid[..cut].to_vec()); // truncated headers and questions
    }
    // 200 one-byte labels: more labels than a name may have (and longer than 255 octets).
    let mut many = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..200 {
        many.extend_from_slice(&[1, b'a']);
    }
    many.extend_from_slice(&[0, 0, 1, 0, 1]);
    packets.push(many);
    // A compression pointer to itself, and a question count of 65535.
    packets.push(vec![
        0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
    ]);
    packets.push(vec![
        0x42, 0x42, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
    ]);
    // A response (QR set) is never answered: no reflection.
    let mut response = valid.clone();
    response[2] |= 0x80;
    packets.push(response);

    for packet in &packets {
        let _ = socket.send_to(packet, at);
    }
    // Over TCP too: garbage, a length prefix promising more than is sent, then a hang-up.
    for packet in packets.iter().take(60) {
        if let Ok(mut stream) = TcpStream::connect(at) {
            let _ = stream.write_all(&(packet.len() as u16 + 7).to_be_bytes());
            let _ = stream.write_all(packet);
        }
    }
    // A TCP client that connects and says nothing does not block others.
    let _silent = TcpStream::connect(at).expect("tcp connect");

    assert!(
        answered_udp(at, Duration::from_secs(5)),
        "the server answers after the garbage"
    );
    let mut stream = TcpStream::connect(at).expect("tcp connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let q = query("w0.default.svc.hansa.internal");
    stream
        .write_all(&(q.len() as u16).to_be_bytes())
        .expect("write");
    stream.write_all(&q).expect("write");
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .expect("a TCP answer after the garbage");
    assert!(u16::from_be_bytes(len) > 12);
}

/// Debian's unbound, with its own config, on a port of its own: a stub zone for hansa.internal.
struct Unbound {
    process: Process,
    addr: SocketAddr,
}

impl Unbound {
    fn start(dir: &Path, hansa: SocketAddr) -> Unbound {
        let port = free_udp_and_tcp_port();
        let conf = dir.join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  domain-insecure: \"hansa.internal\"\n  num-threads: 1\n\
                 remote-control:\n  control-enable: no\n\
                 stub-zone:\n  name: \"hansa.internal\"\n  stub-addr: {}@{}\n",
                hansa.ip(),
                hansa.port(),
                d = dir.display()
            ),
        )
        .expect("unbound.conf");
        let mut command = Command::new(tool("unbound"));
        command.arg("-d").arg("-c").arg(&conf);
        let process = Process::spawn("unbound", command, dir.join("unbound.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        wait_for("unbound to answer", Duration::from_secs(20), || {
            let d = dig(addr, &["+tries=1", "+time=1", "hansa.internal", "SOA"]);
            (d.status == "NOERROR").then_some(())
        });
        Unbound { process, addr }
    }
}

fn free_udp_and_tcp_port() -> u16 {
    free_udp_and_tcp_port_on("127.0.0.1")
}

/// A port free for both TCP and UDP on `ip`.
pub(crate) fn free_udp_and_tcp_port_on(ip: &str) -> u16 {
    loop {
        let port = free_port(ip);
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn dns_through_unbound_with_a_stub_zone() {
    let server = StaticServer::start(3, 2, ZONE);
    let dir = tempfile::tempdir().expect("tempdir");
    let unbound = Unbound::start(dir.path(), server.addr);

    let a = dig(unbound.addr, &["w2.default.svc.hansa.internal", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert_eq!(a.values("A").len(), 6, "{}", a.text);
    assert!(
        a.flags.contains(&"ra".to_string()),
        "a recursive answer: {}",
        a.text
    );
    let srv = dig(
        unbound.addr,
        &["_http._tcp.w2.default.svc.hansa.internal", "SRV"],
    );
    assert_eq!(srv.values("SRV").len(), 6, "{}", srv.text);
    let nx = dig(unbound.addr, &["gone.default.svc.hansa.internal", "A"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    // unbound caches the negative answer for the SOA minimum (2 s), not longer.
    assert!(
        nx.authority
            .first()
            .and_then(|r| r.get(1))
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|ttl| ttl <= 2),
        "{}",
        nx.text
    );
    drop(unbound.process);
}

/// A network namespace this test creates and deletes, with its own resolv.conf.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Option<Netns> {
        let ok = Command::new(tool("ip"))
            .args(["netns", "add", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("ip"))
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip"))
            .args(["netns", "delete", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

#[test]
fn dns_glibc_getent_in_a_network_namespace() {
    // glibc asks port 53 of the resolv.conf server: a namespace of our own gives us a
    // loopback where Hansa's DNS may take port 53 without touching the host's.
    let name = format!("hansa-dns-{}", std::process::id());
    let Some(ns) = Netns::create(&name) else {
        panic!("cannot create network namespace {name}: the DNS tests run as root (scripts/test)");
    };
    let etc = PathBuf::from(format!("/etc/netns/{name}"));
    std::fs::create_dir_all(&etc).expect("/etc/netns/<name>");
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
    )
    .expect("resolv.conf");
    // The namespace's hosts file must not answer first.
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").expect("hosts");

    let mut command = Command::new(tool("ip"));
    command
        .args(["netns", "exec", &name])
        .arg(bin("hansa-bench-dns"))
        .args([
            "--workloads",
            "4",
            "--replicas",
            "1",
            "serve",
            "--port",
            "53",
        ]);
    let log = std::env::temp_dir().join(format!("{name}.log"));
    let server = Process::spawn("dns-in-netns", command, log);
    let hosts = wait_for(
        "getent hosts in the namespace",
        Duration::from_secs(20),
        || {
            let out = ns.exec(&["getent", "hosts", "w3.default.svc.hansa.internal"]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    let expected: Vec<String> = synthetic::CLUSTERS
        .iter()
        .map(|(_, _, octet)| synthetic::replica_address(*octet, 3, 0).to_string())
        .collect();
    assert!(
        expected.iter().any(|a| hosts.contains(a.as_str())),
        "{hosts} holds one of {expected:?}"
    );
    assert!(hosts.contains("w3.default.svc.hansa.internal"), "{hosts}");
    // getaddrinfo (AF_UNSPEC: A and AAAA); ahostsv4 would ask nothing here, since
    // AI_ADDRCONFIG sees no IPv4 address but loopback in the namespace.
    let all = ns.exec(&["getent", "ahosts", "w3.default.svc.hansa.internal"]);
    let text = String::from_utf8_lossy(&all.stdout);
    for address in &expected {
        assert!(text.contains(address.as_str()), "{text} holds {address}");
    }
    let missing = ns.exec(&["getent", "hosts", "nope.default.svc.hansa.internal"]);
    assert_eq!(missing.status.code(), Some(2), "getent: not found");
    drop(server);
}

// ---- A real federation: health, locality, liveness, forwarding, metrics --------------------

fn workload(down_dir: &Path) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata:
  name: web
spec:
  replicas: 1
  template:
    command: ["hansa-demo-http"]
    env: {{DOWN_DIR: "{}"}}
    ports: [{{name: http}}]
    resources: {{cpu: 50m, memory: 32Mi}}
    healthCheck:
      exec: {{command: ["/bin/sh", "-c", "test ! -e \"$DOWN_DIR/$HANSA_CLUSTER\""]}}
      intervalSeconds: 1
      gracePeriodSeconds: 1
      failureThreshold: 1
  placement:
    replicaScheduling: {{type: Duplicated}}
  service: {{name: web, ports: [{{name: http, port: 80, targetPort: http}}]}}
"#,
        down_dir.display()
    )
}

/// (cluster, region, node address)
const CLUSTERS: [(&str, &str, &str); 3] = [
    ("eu-1", "eu", "127.0.1.1"),
    ("eu-2", "eu", "127.0.3.1"),
    ("us-1", "us", "127.0.2.1"),
];

fn addresses_from(dns: SocketAddr, source: &str) -> Vec<String> {
    dig(dns, &["-b", source, "web.default.svc.hansa.internal", "A"]).values("A")
}

/// Healthy replicas per cluster as the federator's API reports them.
fn healthy_by_cluster(fed: &Federation) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(d) = fed.hansa_json(&["describe", "workload", "web"]) else {
        return out;
    };
    for cluster in d["clusters"].as_array().into_iter().flatten() {
        let name = cluster["cluster"].as_str().unwrap_or_default().to_string();
        let healthy = cluster["replicas"]
            .as_array()
            .map(|rs| rs.iter().filter(|r| r["healthy"] == true).count())
            .unwrap_or(0);
        out.insert(name, healthy);
    }
    out
}

#[test]
fn dns_follows_health_locality_and_liveness_of_a_real_federation() {
    let fed = Federation::new();
    let upstream = StaticServer::start(1, 1, "other.test.");
    let dns_port = free_udp_and_tcp_port();
    let http_port = free_port("127.0.0.1");
    let api_port = free_port("127.0.0.1");
    let config = fed.federator_config("fed-1", api_port);
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replacen(
        "[tls]",
        &format!("http_listen = \"127.0.0.1:{http_port}\"\n[tls]"),
        1,
    ) + &format!(
        "[dns]\nlisten = \"127.0.0.1:{dns_port}\"\nupstreams = [\"{}\"]\n",
        upstream.addr
    );
    std::fs::write(&config, text).expect("config");
    let _federator = fed.start_federator("fed-1", &config);
    let api = format!("127.0.0.1:{api_port}");
    fed.write_cli_context(&api);
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().expect("address");

    let mut agents = BTreeMap::new();
    for (cluster, region, node) in CLUSTERS {
        let cert = fed.issue("cluster", cluster);
        let path = fed.agent_config(cluster, region, node, &api, (&cert.0, &cert.1));
        let block = format!(
            "{}.0/24",
            node.rsplit_once('.').map(|p| p.0).unwrap_or(node)
        );
        let text = std::fs::read_to_string(&path)
            .expect("agent config")
            .replacen(
                "heartbeat_ms",
                &format!("addresses = [\"{block}\"]\nheartbeat_ms"),
                1,
            );
        std::fs::write(&path, text).expect("agent config");
        agents.insert(cluster, fed.start_agent(cluster, &path));
    }
    let down = fed.path("down");
    std::fs::create_dir_all(&down).expect("down dir");
    let manifest = fed.path("web.yaml");
    std::fs::write(&manifest, workload(&down)).expect("manifest");
    wait_for("the clusters to join", LIMIT, || {
        let clusters = fed.hansa_json(&["get", "clusters"]).ok()?;
        (clusters.as_array()?.len() == 3).then_some(())
    });
    fed.hansa_ok(&["apply", "-f", manifest.to_str().expect("path")]);

    // All three healthy replicas, the querier's own cluster first, then its region.
    let from_eu1 = wait_for("three healthy replicas in DNS", LIMIT, || {
        let a = addresses_from(dns, "127.0.1.1");
        (a.len() == 3).then_some(a)
    });
    assert_eq!(from_eu1, ["127.0.1.1", "127.0.3.1", "127.0.2.1"]);
    assert_eq!(addresses_from(dns, "127.0.2.1")[0], "127.0.2.1");
    assert_eq!(
        addresses_from(dns, "127.0.3.1")[..2],
        ["127.0.3.1", "127.0.1.1"]
    );
    // EDNS Client Subnet names the client's cluster when a resolver asks for it.
    let ecs = dig(
        dns,
        &[
            "+subnet=127.0.2.0/24",
            "web.default.svc.hansa.internal",
            "A",
        ],
    );
    assert_eq!(ecs.values("A")[0], "127.0.2.1", "{}", ecs.text);

    // SRV: priority by locality, and the ports are where the replicas really listen.
    let srv = dig(
        dns,
        &[
            "-b",
            "127.0.3.1",
            "_http._tcp.web.default.svc.hansa.internal",
            "SRV",
        ],
    );
    let records: Vec<(u16, u16, String)> = srv
        .answers
        .iter()
        .filter(|r| r.get(3).map(String::as_str) == Some("SRV"))
        .map(|r| {
            (
                r[4].parse().expect("priority"),
                r[6].parse().expect("port"),
                r[7].clone(),
            )
        })
        .collect();
    assert_eq!(records.len(), 3, "{}", srv.text);
    assert_eq!(
        records.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "{}",
        srv.text
    );
    for (_, port, target) in &records {
        let address = dig(dns, &[target, "A"]).values("A");
        assert_eq!(address.len(), 1, "{target}");
        let cluster = target.split('.').nth(1).expect("cluster label");
        let (status, body) =
            http_get(&format!("{}:{port}", address[0]), "/").expect("the SRV port answers");
        assert_eq!(status, 200);
        assert!(body.contains(cluster), "{target} answered {body}");
    }
    let per_cluster = dig(dns, &["eu-2.web.default.svc.hansa.internal", "A"]);
    assert_eq!(
        per_cluster.values("A"),
        ["127.0.3.1"],
        "{}",
        per_cluster.text
    );

    // eu-1's replica fails its health check: gone from DNS within 1 s of the federator
    // learning it; eu-1 clients fall through to their region.
    std::fs::write(down.join("eu-1"), "").expect("mark eu-1 down");
    wait_for("eu-1's replica to be reported unhealthy", LIMIT, || {
        (healthy_by_cluster(&fed).get("eu-1") == Some(&0)).then_some(())
    });
    wait_for(
        "DNS to drop eu-1 within 1 s",
        Duration::from_secs(1),
        || (addresses_from(dns, "127.0.1.1") == ["127.0.3.1", "127.0.2.1"]).then_some(()),
    );
    std::fs::remove_file(down.join("eu-1")).expect("mark eu-1 up");
    wait_for("eu-1 back in DNS", LIMIT, || {
        (addresses_from(dns, "127.0.1.1").first().map(String::as_str) == Some("127.0.1.1"))
            .then_some(())
    });

    // A cluster goes down (its agent dies): its replicas leave the answers within 1 s.
    let started = Instant::now();
    agents.get_mut("us-1").expect("us-1").kill9();
    wait_for(
        "DNS to drop us-1 within 1 s",
        Duration::from_secs(1),
        || (!addresses_from(dns, "127.0.2.1").contains(&"127.0.2.1".to_string())).then_some(()),
    );
    eprintln!("us-1 left DNS {:?} after its agent died", started.elapsed());

    // No healthy replica anywhere: NXDOMAIN (MCS) with the short negative TTL.
    std::fs::write(down.join("eu-1"), "").expect("down");
    std::fs::write(down.join("eu-2"), "").expect("down");
    let nx = wait_for("NXDOMAIN once nothing is healthy", LIMIT, || {
        let d = dig(dns, &["web.default.svc.hansa.internal", "A"]);
        (d.status == "NXDOMAIN").then_some(d)
    });
    assert_eq!(nx.authority[0][1], "2", "{}", nx.text);

    // Forwarding to the configured upstream, and out-of-zone answers are not authoritative.
    let forwarded = dig(dns, &["w0.default.svc.other.test", "A"]);
    assert_eq!(forwarded.status, "NOERROR", "{}", forwarded.text);
    assert_eq!(forwarded.values("A").len(), 3, "{}", forwarded.text);
    assert!(
        !forwarded.flags.contains(&"aa".to_string()),
        "{}",
        forwarded.text
    );
    let upstream_nx = dig(dns, &["nope.default.svc.other.test", "A"]);
    assert_eq!(upstream_nx.status, "NXDOMAIN", "{}", upstream_nx.text);

    // The CLI asks too.
    let cli = fed.hansa_ok(&[
        "dns",
        "query",
        "hansa.internal.",
        "SOA",
        "--server",
        &dns.to_string(),
    ]);
    assert!(
        cli.contains("status: NOERROR") && cli.contains("SOA"),
        "{cli}"
    );

    // Metrics: queries by type and response code, latency; valid exposition.
    let (status, metrics) =
        http_get(&format!("127.0.0.1:{http_port}"), "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("hansa_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("hansa_dns_queries_total{qtype=\"SRV\",rcode=\"NOERROR\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("hansa_dns_response_seconds_bucket"),
        "{metrics}"
    );
    let (status, _) = http_get(&format!("127.0.0.1:{http_port}"), "/healthz").expect("/healthz");
    assert_eq!(status, 200);
    if Path::new("/usr/bin/promtool").exists() {
        let mut check = Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(metrics.as_bytes())
            .expect("feed promtool");
        let out = check.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fed.hansa_ok(&["delete", "workload", "web"]);
    fed.kill_all_replicas();
}
