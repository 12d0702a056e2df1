//! A small network of namespaces for multi-host and partition tests: every host is a network
//! namespace with one address on a shared bridge, and the bridge lives in a switch namespace
//! of its own, so nothing depends on (or changes) the root namespace's firewall; the root
//! namespace reaches the hosts through one more veth, so the CLI runs unwrapped. Partitions
//! are iptables DROP rules inside the hosts. Everything is removed on drop.

use std::process::Command;

/// A bridge of `n` host namespaces, `10.213.X.10+i/24`, reachable from the root namespace
/// at `10.213.X.1`.
pub struct Lab {
    id: String,
    subnet: u8,
    hosts: Vec<String>,
    root_veth: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Builds the network; panics, naming the failing command, when it cannot (not root, no
    /// `ip`): a partition test must never pass without its network.
    pub fn new(n: usize) -> Lab {
        let pid = std::process::id();
        let id = format!("{}", pid % 100_000);
        // Spread concurrent test processes over subnets.
        let subnet = u8::try_from(pid % 200).unwrap_or(0) + 20;
        let mut lab = Lab {
            id: id.clone(),
            subnet,
            hosts: Vec::new(),
            root_veth: format!("hr{id}"),
        };
        if let Err(e) = lab.build(n) {
            panic!("cannot build the test network (needs root and iproute2): {e}");
        }
        lab
    }

    fn switch(&self) -> String {
        format!("hsw{}", self.id)
    }

    fn build(&mut self, n: usize) -> Result<(), String> {
        let sw = self.switch();
        run(&["ip", "netns", "add", &sw])?;
        run(&["ip", "netns", "exec", &sw, "ip", "link", "set", "lo", "up"])?;
        run(&[
            "ip", "netns", "exec", &sw, "ip", "link", "add", "br0", "type", "bridge",
        ])?;
        run(&["ip", "netns", "exec", &sw, "ip", "link", "set", "br0", "up"])?;
        for i in 0..n {
            let host = format!("hh{}-{i}", self.id);
            run(&["ip", "netns", "add", &host])?;
            self.hosts.push(host.clone());
            let (outer, inner) = (format!("hv{}s{i}", self.id), format!("hv{}h{i}", self.id));
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &outer, "netns", &sw])?;
            run(&["ip", "link", "set", &inner, "netns", &host])?;
            run(&[
                "ip", "netns", "exec", &sw, "ip", "link", "set", &outer, "master", "br0", "up",
            ])?;
            let address = format!("{}/24", self.ip(i));
            run(&[
                "ip", "netns", "exec", &host, "ip", "addr", "add", &address, "dev", &inner,
            ])?;
            run(&[
                "ip", "netns", "exec", &host, "ip", "link", "set", &inner, "up",
            ])?;
            run(&[
                "ip", "netns", "exec", &host, "ip", "link", "set", "lo", "up",
            ])?;
        }
        let switch_side = format!("hr{}s", self.id);
        run(&[
            "ip",
            "link",
            "add",
            &self.root_veth,
            "type",
            "veth",
            "peer",
            "name",
            &switch_side,
        ])?;
        run(&["ip", "link", "set", &switch_side, "netns", &sw])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &sw,
            "ip",
            "link",
            "set",
            &switch_side,
            "master",
            "br0",
            "up",
        ])?;
        let root_address = format!("10.213.{}.1/24", self.subnet);
        run(&["ip", "addr", "add", &root_address, "dev", &self.root_veth])?;
        run(&["ip", "link", "set", &self.root_veth, "up"])?;
        Ok(())
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, 10 + i)
    }

    /// Host `i`'s namespace name (for `ip netns exec`).
    pub fn namespace(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// `command` wrapped to run inside host `i`.
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.hosts[i]]).arg(program);
        command
    }

    /// Drops every packet between the hosts of `left` and those of `right`, both ways.
    pub fn partition(&self, left: &[usize], right: &[usize]) {
        for (sides, others) in [(left, right), (right, left)] {
            for &host in sides {
                for &other in others {
                    let ip = self.ip(other);
                    run(&[
                        "ip",
                        "netns",
                        "exec",
                        &self.hosts[host],
                        "iptables",
                        "-A",
                        "INPUT",
                        "-s",
                        &ip,
                        "-j",
                        "DROP",
                    ])
                    .unwrap_or_else(|e| panic!("partition: {e}"));
                }
            }
        }
    }

    /// The root namespace's address on the bridge (a server the hosts can reach).
    pub fn root_ip(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// Makes host `i` resolve names through `nameserver` (port 53): `ip netns exec` mounts
    /// `/etc/netns/NAME/resolv.conf` over the host's `/etc/resolv.conf`.
    pub fn set_nameserver(&self, i: usize, nameserver: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.hosts[i]);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<host>");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .expect("write the host's resolv.conf");
    }

    /// Removes every partition.
    pub fn heal(&self) {
        for host in &self.hosts {
            run(&["ip", "netns", "exec", host, "iptables", "-F", "INPUT"])
                .unwrap_or_else(|e| panic!("heal: {e}"));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it, and with them their peers.
        for host in &self.hosts {
            let _ = run(&["ip", "netns", "del", host]);
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(host));
        }
        let _ = run(&["ip", "netns", "del", &self.switch()]);
        let _ = run(&["ip", "link", "del", &self.root_veth]);
    }
}
