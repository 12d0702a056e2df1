//! DNS over TCP (RFC 7766): length-prefixed messages, answered in order, one task per
//! connection; a connection idle for `idle` is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::handler::{DnsHandler, Handled};

/// Accepts connections until `shutdown`; open connections end with it.
pub(super) async fn serve(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, src) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, a connection reset before accept: keep serving.
                    debug!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(stream, src, handler.clone(), idle));
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: Arc<DnsHandler>,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        if !matches!(timeout(idle, stream.read_exact(&mut len)).await, Ok(Ok(_))) {
            return;
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            timeout(idle, stream.read_exact(&mut message)).await,
            Ok(Ok(_))
        ) {
            debug!(%src, "DNS TCP message cut short");
            return;
        }
        let reply = match handler.handle(message, src, Protocol::Tcp) {
            Handled::Silent => continue,
            Handled::Reply(reply) => reply,
            Handled::Forward(pending) => handler.forward(*pending).await,
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            debug!(%src, len = reply.len(), "DNS response longer than TCP allows");
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(timeout(idle, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}
