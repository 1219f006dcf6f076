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

/// Datagrams per `sendmmsg`.
pub(super) const BATCH: usize = 64;

/// Send one message; a full buffer drops it (counted; UDP transactions
/// retransmit). Never blocks.
pub(super) fn send_one(sock: &UdpSocket, addr: SocketAddr, data: &[u8]) {
    if let Err(e) = sock.try_send_to(data, addr) {
        metrics::counter!("gbgate_udp_send_errors_total").increment(1);
        tracing::debug!(%addr, error = %e, "UDP send failed");
    }
}

/// Send up to [`BATCH`] messages with one `sendmmsg`: a node loop's worth
/// of answers and catalog MESSAGEs in one system call instead of one
/// `sendto` each. Through `nix` (this crate forbids `unsafe`; neither std
/// nor tokio offers `sendmmsg`). What the kernel does not take in the
/// call goes one by one, so an error on one datagram loses only that one.
/// Returns how many went in the one call.
pub(super) fn send_batch(sock: &UdpSocket, batch: &[crate::sip::Transmit]) -> usize {
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    if let [t] = batch {
        send_one(sock, t.peer.addr, &t.data);
        return 1;
    }
    let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|t| [IoSlice::new(&t.data)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|t| Some(SockaddrStorage::from(t.peer.addr)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let fd = sock.as_raw_fd();
    let none: [ControlMessage<'_>; 0] = [];
    let sent = sock
        .try_io(tokio::io::Interest::WRITABLE, || {
            sendmmsg(fd, &mut headers, &slices, &addrs, none, MsgFlags::empty())
                .map(Iterator::count)
                .map_err(std::io::Error::from)
        })
        .unwrap_or(0);
    for t in batch.iter().skip(sent) {
        send_one(sock, t.peer.addr, &t.data);
    }
    sent
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transmit;

    #[tokio::test]
    async fn a_batch_reaches_each_peer_in_order() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (a, b) = (bind(any).unwrap(), bind(any).unwrap());
        let tx = bind(any).unwrap();
        let to = [a.local_addr().unwrap(), b.local_addr().unwrap()];
        // More than one batch, to two peers, sizes up to a large MESSAGE.
        let batch: Vec<Transmit> = (0..150u32)
            .map(|i| Transmit {
                peer: Peer::plain(Transport::Udp, to[(i % 2) as usize]),
                data: Bytes::from(format!("{i:05}-{}", "x".repeat((i as usize * 97) % 1400))),
            })
            .collect();
        // A fresh socket is writable once the reactor has seen it so.
        tx.writable().await.unwrap();
        for chunk in batch.chunks(BATCH) {
            assert_eq!(
                send_batch(&tx, chunk),
                chunk.len(),
                "one sendmmsg per batch"
            );
        }
        let mut buf = vec![0u8; 2048];
        for (k, sock) in [&a, &b].into_iter().enumerate() {
            for want in batch.iter().skip(k).step_by(2) {
                let n =
                    tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                assert_eq!(&buf[..n], &want.data[..]);
            }
        }
    }
}
