//! The UDP loop: reads every datagram the socket holds, answers names in the zone on the
//! spot (from the packet cache when it can), and sends each reply before reading on. No
//! task per query: on a loaded core, tail latency comes from scheduling, not answering.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cache::AnswerCache;
use super::handler::{DnsHandler, UdpHandled};

/// The largest query read; longer datagrams are cut and answered FORMERR.
const MAX_QUERY: usize = 4096;
/// Datagrams answered before other tasks (TCP, forwarded answers) get a turn.
const BATCH: usize = 64;

/// Serves `socket` until `shutdown`. Errors only when the socket is unusable.
pub(super) async fn serve(
    socket: UdpSocket,
    handler: Arc<DnsHandler>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; MAX_QUERY];
    let mut reply = Vec::with_capacity(usize::from(u16::MAX));
    let mut cache = AnswerCache::default();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            ready = socket.readable() => ready?,
        }
        let mut drained = false;
        for _ in 0..BATCH {
            let (len, src) = match socket.try_recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                // ICMP errors for earlier replies surface here (ECONNREFUSED): not ours.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            };
            match handler.handle_udp(&buffer[..len], src, &mut cache, &mut reply) {
                UdpHandled::Silent => {}
                UdpHandled::Reply => send(&socket, &reply, src).await,
                UdpHandled::Forward(pending) => {
                    let socket = socket.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let reply = handler.forward(*pending).await;
                        send(&socket, &reply, src).await;
                    });
                }
            }
        }
        if !drained {
            // A full batch: let the other tasks run before the next one.
            tokio::task::yield_now().await;
        }
    }
}

/// Sends without a wakeup when the socket has room, as it almost always has.
async fn send(socket: &UdpSocket, reply: &[u8], to: SocketAddr) {
    let sent = match socket.try_send_to(reply, to) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => socket.send_to(reply, to).await,
        other => other,
    };
    if let Err(e) = sent {
        debug!(error = %e, %to, "DNS response not sent");
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    let transient = matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    );
    if !transient {
        warn!(%error, "DNS UDP socket failed");
    }
    transient
}
