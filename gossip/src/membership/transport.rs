//! What the membership task sends datagrams over: a real UDP socket, or an in-process
//! network for simulations.
//!
//! [`MemoryNetwork`] carries sealed datagrams between members in one process with a fixed
//! one-way latency and random loss. Run it on a tokio runtime with a paused clock and the
//! pool runs in simulated time: a thousand members take the time the protocol needs, not
//! the time two CPU cores need to run them. Benchmarks and tests use it where real sockets
//! would measure the machine rather than the protocol.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::RngExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::lock;

type Datagram = (Vec<u8>, SocketAddr);

/// An in-process datagram network (see the module docs).
#[derive(Clone)]
pub struct MemoryNetwork {
    inner: Arc<Network>,
}

struct Network {
    latency: Duration,
    loss: Mutex<f64>,
    rng: Mutex<StdRng>,
    /// Bound addresses and their inboxes.
    hosts: Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Datagram>>>,
    next_port: Mutex<u32>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork")
            .field("latency", &self.inner.latency)
            .field("loss", &*lock(&self.inner.loss))
            .finish()
    }
}

impl MemoryNetwork {
    /// A network delivering every datagram after `latency`, losing none.
    pub fn new(latency: Duration) -> Self {
        Self {
            inner: Arc::new(Network {
                latency,
                loss: Mutex::new(0.0),
                rng: Mutex::new(rand::make_rng()),
                hosts: Mutex::new(HashMap::new()),
                next_port: Mutex::new(0),
            }),
        }
    }

    /// Loses each datagram from now on with this probability (clamped to 0..=1).
    pub fn set_loss(&self, loss: f64) {
        *lock(&self.inner.loss) = loss.clamp(0.0, 1.0);
    }

    /// Binds an endpoint; port 0 picks a free address in 127.0.0.0/8 (each member its
    /// own loopback address, as on a real host).
    pub(super) fn bind(&self, addr: SocketAddr) -> io::Result<Endpoint> {
        let mut hosts = lock(&self.inner.hosts);
        let addr = if addr.port() == 0 {
            let mut next = lock(&self.inner.next_port);
            loop {
                *next += 1;
                let [_, b, c, d] = next.to_be_bytes();
                let candidate =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, b, c, d.max(1))), 7946);
                if !hosts.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else if hosts.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound on this in-memory network"),
            ));
        } else {
            addr
        };
        let (inbox, rx) = mpsc::unbounded_channel();
        hosts.insert(addr, inbox);
        Ok(Endpoint {
            network: self.inner.clone(),
            addr,
            rx,
        })
    }
}

/// One bound address on a [`MemoryNetwork`]; unbinds when dropped, so datagrams sent to
/// a stopped member vanish as they would on a real network.
pub(super) struct Endpoint {
    network: Arc<Network>,
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Datagram>,
}

impl Endpoint {
    fn send_to(&self, data: &[u8], to: SocketAddr) {
        let network = &self.network;
        let lost = {
            let loss = *lock(&network.loss);
            loss > 0.0 && lock(&network.rng).random_bool(loss)
        };
        if lost {
            return;
        }
        let Some(inbox) = lock(&network.hosts).get(&to).cloned() else {
            return;
        };
        let datagram = (data.to_vec(), self.addr);
        let latency = network.latency;
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            // The receiver may have stopped meanwhile: the datagram is lost, as on UDP.
            let _ = inbox.send(datagram);
        });
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        lock(&self.network.hosts).remove(&self.addr);
    }
}

/// The membership task's socket.
pub(super) enum Socket {
    Udp(UdpSocket),
    Memory(Endpoint),
}

impl Socket {
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Udp(socket) => socket.local_addr(),
            Socket::Memory(endpoint) => Ok(endpoint.addr),
        }
    }

    /// Cancel-safe: a datagram is either returned or left queued.
    pub(super) async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Socket::Udp(socket) => socket.recv_from(buf).await,
            Socket::Memory(endpoint) => {
                let Some((data, from)) = endpoint.rx.recv().await else {
                    // Our own sender lives in the network's table while we are bound.
                    return std::future::pending().await;
                };
                // Like UDP into a short buffer: the rest is cut off.
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                Ok((len, from))
            }
        }
    }

    pub(super) async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Socket::Udp(socket) => socket.send_to(data, to).await,
            Socket::Memory(endpoint) => {
                endpoint.send_to(data, to);
                Ok(data.len())
            }
        }
    }
}
