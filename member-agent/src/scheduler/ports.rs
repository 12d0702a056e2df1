//! Host ports of this agent's replicas: fixed ones as given, the others picked by the kernel
//! (bind port 0, read the port, release it), never the same to two replicas of this agent.

use std::collections::BTreeMap;
use std::io;
use std::net::{TcpListener, UdpSocket};

use hansa_core::{PortSpec, Protocol};

/// How often the kernel may hand out a port we already gave away before we give up.
const ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("host port {port} is held by replica {holder}")]
    Held { port: u16, holder: String },
    #[error("cannot allocate a {protocol} port on {address}: {source}")]
    Bind {
        address: String,
        protocol: Protocol,
        #[source]
        source: io::Error,
    },
    #[error("cannot find a free {protocol} port on {address} after {ATTEMPTS} attempts")]
    Exhausted { address: String, protocol: Protocol },
}

/// The host ports in use on this node, by the replica holding each.
#[derive(Debug)]
pub struct PortAllocator {
    address: String,
    in_use: BTreeMap<u16, String>,
}

impl PortAllocator {
    /// Allocates on `address` (the node address replicas bind to).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            in_use: BTreeMap::new(),
        }
    }

    /// Host ports for `replica`, in template port order. All or nothing.
    pub fn allocate(&mut self, replica: &str, ports: &[PortSpec]) -> Result<Vec<u16>, PortError> {
        for spec in ports {
            if let Some(port) = spec.host_port {
                if let Some(holder) = self.in_use.get(&port).filter(|h| *h != replica) {
                    return Err(PortError::Held {
                        port,
                        holder: holder.clone(),
                    });
                }
            }
        }
        let mut taken: Vec<u16> = Vec::with_capacity(ports.len());
        for spec in ports {
            let port = match spec.host_port {
                Some(port) => port,
                None => self.pick(spec.protocol, &taken)?,
            };
            taken.push(port);
        }
        self.reserve(replica, &taken);
        Ok(taken)
    }

    /// Marks ports as held (an adopted replica's, or a restarted one keeping its ports).
    pub fn reserve(&mut self, replica: &str, ports: &[u16]) {
        for &port in ports {
            self.in_use.insert(port, replica.to_string());
        }
    }

    /// Frees every port `replica` holds.
    pub fn release(&mut self, replica: &str) {
        self.in_use.retain(|_, holder| holder != replica);
    }

    pub fn holder(&self, port: u16) -> Option<&str> {
        self.in_use.get(&port).map(String::as_str)
    }

    fn pick(&self, protocol: Protocol, taken: &[u16]) -> Result<u16, PortError> {
        let bind_error = |source| PortError::Bind {
            address: self.address.clone(),
            protocol,
            source,
        };
        for _ in 0..ATTEMPTS {
            let address = (self.address.as_str(), 0);
            let port = match protocol {
                Protocol::Tcp => TcpListener::bind(address)
                    .and_then(|l| l.local_addr())
                    .map_err(bind_error)?
                    .port(),
                Protocol::Udp => UdpSocket::bind(address)
                    .and_then(|s| s.local_addr())
                    .map_err(bind_error)?
                    .port(),
            };
            if !self.in_use.contains_key(&port) && !taken.contains(&port) {
                return Ok(port);
            }
        }
        Err(PortError::Exhausted {
            address: self.address.clone(),
            protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(name: &str, protocol: Protocol) -> PortSpec {
        PortSpec {
            name: name.to_string(),
            protocol,
            ..PortSpec::default()
        }
    }

    fn fixed(port: u16) -> PortSpec {
        PortSpec {
            name: "fixed".to_string(),
            host_port: Some(port),
            ..PortSpec::default()
        }
    }

    #[test]
    fn dynamic_ports_are_distinct_and_bindable() {
        let mut ports = PortAllocator::new("127.0.0.1");
        let specs = [
            dynamic("http", Protocol::Tcp),
            dynamic("dns", Protocol::Udp),
        ];
        let mut seen = std::collections::HashSet::new();
        for n in 0..20 {
            let replica = format!("web-{n:06x}");
            for port in ports.allocate(&replica, &specs).unwrap() {
                assert!(port > 0);
                assert!(seen.insert(port), "port {port} handed out twice");
                assert_eq!(ports.holder(port), Some(replica.as_str()));
            }
        }
    }

    #[test]
    fn a_fixed_port_goes_to_one_replica_at_a_time() {
        let mut ports = PortAllocator::new("127.0.0.1");
        assert_eq!(ports.allocate("a", &[fixed(8080)]).unwrap(), [8080]);
        let err = ports.allocate("b", &[fixed(8080)]).unwrap_err();
        assert_eq!(err.to_string(), "host port 8080 is held by replica a");
        ports.release("a");
        assert_eq!(ports.allocate("b", &[fixed(8080)]).unwrap(), [8080]);
    }

    #[test]
    fn an_unusable_address_is_an_error() {
        let mut ports = PortAllocator::new("192.0.2.1");
        let err = ports
            .allocate("a", &[dynamic("http", Protocol::Tcp)])
            .unwrap_err();
        assert!(err.to_string().contains("192.0.2.1"), "{err}");
        assert_eq!(ports.holder(0), None);
    }
}
