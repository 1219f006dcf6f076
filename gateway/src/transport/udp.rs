//! SIP over UDP: one datagram, one message.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::node::Inbound;
use crate::sip::message::{Message, ParseError};
use crate::sip::{Peer, Transport};

/// Large buffers: a catalog burst or a REGISTER storm arrives faster than
/// one core can parse for a moment.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: the kernel caps these at rmem_max / wmem_max.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

pub(super) async fn read_loop(
    socket: Arc<UdpSocket>,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    // One byte more than the limit tells an oversized datagram from a full one.
    let mut buf = vec![0u8; limits.max_message + 1];
    loop {
        let (n, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port-unreachable surfaces here on some systems; keep serving.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        let peer = Peer::plain(Transport::Udp, addr);
        let data = &buf[..n];
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keepalive pings (CRLF) carry nothing
        }
        let msg = if n > limits.max_message {
            Inbound::Malformed {
                peer,
                raw: Bytes::copy_from_slice(&data[..limits.max_message.min(n)]),
                error: ParseError::TooLarge {
                    size: n,
                    max: limits.max_message,
                },
            }
        } else {
            match Message::parse(data) {
                Ok(message) => Inbound::Message { peer, message },
                Err(e) => Inbound::Malformed {
                    peer,
                    raw: Bytes::copy_from_slice(data),
                    error: e,
                },
            }
        };
        if inbound.send(msg).await.is_err() {
            return;
        }
    }
}
