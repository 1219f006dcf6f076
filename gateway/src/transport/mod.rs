//! Links: the thin async edge under the sans-IO SIP core.
//!
//! Each kind of link is a [`Link`]: one UDP socket and a TCP pool on the
//! node's SIP address, and QUIC links ([`quic`]) when the topology gives the
//! node any. Everything that comes in (messages, malformed bytes, links up,
//! down or refused) becomes an [`Inbound`] on one channel; the core's
//! [`Transmit`]s go out through [`Transports::send`] on the link of the
//! peer's transport. TCP replies reuse the connection a request came in on
//! (RFC 3261 §18.2.2); requests to a TCP peer with no connection dial one.

pub mod groups;
pub mod quic;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::node::Inbound;
use crate::sip::{Transmit, Transport};

pub use quic::{QuicError, QuicLinks, QuicSetup};
pub use tcp::TcpPool;

/// Limits applied at the edge.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest SIP message, bytes.
    pub max_message: usize,
    /// Most simultaneous TCP connections.
    pub max_connections: usize,
}

/// Errors binding the node's sockets.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is taken or not ours.
    #[error("cannot bind {transport} on {addr}: {source}; is another process using the port?")]
    Bind {
        /// udp or tcp.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// QUIC links could not start (certificates, socket).
    #[error(transparent)]
    Quic(#[from] QuicError),
}

/// One kind of link under the SIP core (UDP, TCP, QUIC): what the node's
/// transmits leave by. What comes in, and links coming up and going down,
/// reach the node on the one `Inbound` channel every link writes to, each
/// message with the [`crate::sip::Peer`] (and identity) its link vouches for.
pub trait Link: Send + Sync {
    /// Put one whole SIP message on the link to `addr`. Never blocks: a
    /// full buffer or queue drops it (counted; UDP transactions retransmit).
    fn send(&self, addr: SocketAddr, data: bytes::Bytes);
}

/// The node's UDP socket as a [`Link`].
struct UdpLink(Arc<tokio::net::UdpSocket>);

impl Link for UdpLink {
    fn send(&self, addr: SocketAddr, data: bytes::Bytes) {
        udp::send_one(&self.0, addr, &data);
    }
}

impl Link for TcpPool {
    fn send(&self, addr: SocketAddr, data: bytes::Bytes) {
        TcpPool::send(self, addr, data);
    }
}

impl Link for QuicLinks {
    fn send(&self, addr: SocketAddr, data: bytes::Bytes) {
        QuicLinks::send(self, addr, data);
    }
}

/// The node's links: one UDP socket and a TCP pool on the SIP address, and
/// QUIC links when the topology gives the node any.
#[derive(Clone)]
pub struct Transports {
    /// By transport: the link each peer's transmits leave by.
    links: Vec<(Transport, Arc<dyn Link>)>,
    /// The UDP socket, for batches ([`Transports::send_all`]).
    udp: Arc<tokio::net::UdpSocket>,
    quic: Option<QuicLinks>,
    local: SocketAddr,
}

/// How many ports to try, with port 0, before giving up on one that is
/// free for both UDP and TCP.
const PAIR_ATTEMPTS: usize = 16;

impl Transports {
    /// Bind UDP and TCP on `addr` and start reading; inbound messages go to `inbound`.
    ///
    /// With port 0 both sockets get the same port, because peers learn one
    /// port for both from Via and Contact: UDP picks a free port and TCP
    /// takes the same one, and when another process holds that TCP port a
    /// new UDP port is tried.
    pub async fn bind(
        addr: SocketAddr,
        quic: Option<QuicSetup>,
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Result<Self, BindError> {
        let (udp, listener) = bind_pair(addr, || udp::bind(addr))?;
        let local = udp.local_addr().map_err(|source| BindError::Bind {
            transport: "udp",
            addr,
            source,
        })?;
        let udp = Arc::new(udp);
        tokio::spawn(udp::read_loop(
            udp.clone(),
            inbound.clone(),
            limits,
            shutdown.clone(),
        ));
        let quic = match quic {
            Some(setup) => Some(QuicLinks::start(
                setup,
                inbound.clone(),
                limits,
                shutdown.clone(),
            )?),
            None => None,
        };
        let tcp = TcpPool::new(inbound, limits, shutdown.clone());
        tokio::spawn(tcp.clone().accept_loop(listener));
        let mut links: Vec<(Transport, Arc<dyn Link>)> = vec![
            (Transport::Udp, Arc::new(UdpLink(udp.clone()))),
            (Transport::Tcp, Arc::new(tcp)),
        ];
        if let Some(q) = &quic {
            links.push((Transport::Quic, Arc::new(q.clone())));
        }
        Ok(Transports {
            links,
            udp,
            quic,
            local,
        })
    }

    /// The node's QUIC links, when it has any.
    pub fn quic(&self) -> Option<&QuicLinks> {
        self.quic.as_ref()
    }

    /// The address both sockets are bound to: `addr` as given to
    /// [`Transports::bind`], with the picked port if that was 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Put many messages on the wire: UDP ones [`udp::BATCH`] to a
    /// `sendmmsg`, the rest one by one on their links. Never blocks.
    pub fn send_all(&self, ts: impl IntoIterator<Item = Transmit>) {
        let mut datagrams = Vec::new();
        for t in ts {
            if t.peer.transport == Transport::Udp {
                datagrams.push(t);
            } else {
                self.send(t);
            }
        }
        for batch in datagrams.chunks(udp::BATCH) {
            udp::send_batch(&self.udp, batch);
        }
    }

    /// Put one message on the wire, on the link of its peer's transport.
    /// Never blocks (see [`Link::send`]).
    pub fn send(&self, t: Transmit) {
        match self
            .links
            .iter()
            .find(|(kind, _)| *kind == t.peer.transport)
        {
            Some((_, link)) => link.send(t.peer.addr, t.data),
            None => {
                metrics::counter!("gbgate_send_no_link_total").increment(1);
                tracing::warn!(peer = %t.peer, "no link of this transport on this node; message dropped");
            }
        }
    }
}

/// Bind a UDP socket from `next_udp` and a TCP listener on the same port.
/// With a fixed port in `addr` that is one try; with port 0 a taken TCP
/// port means another UDP socket, up to [`PAIR_ATTEMPTS`] times.
fn bind_pair(
    addr: SocketAddr,
    mut next_udp: impl FnMut() -> std::io::Result<tokio::net::UdpSocket>,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), BindError> {
    let attempts = if addr.port() == 0 { PAIR_ATTEMPTS } else { 1 };
    // Sockets whose TCP twin was taken stay bound until we are done, so
    // the OS cannot hand the same UDP port out again.
    let mut held = Vec::new();
    let mut last = None;
    for _ in 0..attempts {
        let udp = next_udp().map_err(|source| BindError::Bind {
            transport: "udp",
            addr,
            source,
        })?;
        let bound = udp.local_addr().map_err(|source| BindError::Bind {
            transport: "udp",
            addr,
            source,
        })?;
        match tcp_listen(bound) {
            Ok(listener) => return Ok((udp, listener)),
            Err(source) if addr.port() == 0 && source.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::debug!(addr = %bound, "TCP port taken; trying another UDP port");
                held.push(udp);
                last = Some(source);
            }
            Err(source) => {
                return Err(BindError::Bind {
                    transport: "tcp",
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(BindError::Bind {
        transport: "tcp",
        addr,
        source: last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()),
    })
}

/// A listening TCP socket on `addr`, set up as `TcpListener::bind` does
/// (SO_REUSEADDR, so a restart is not blocked by connections in TIME_WAIT).
fn tcp_listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn channel() -> mpsc::Sender<Inbound> {
        mpsc::channel(1).0
    }

    const LIMITS: Limits = Limits {
        max_message: 65_535,
        max_connections: 4,
    };

    #[tokio::test]
    async fn port_zero_gets_one_port_for_udp_and_tcp() {
        let stop = CancellationToken::new();
        let t = Transports::bind(
            "127.0.0.1:0".parse().unwrap(),
            None,
            channel(),
            LIMITS,
            stop.clone(),
        )
        .await
        .unwrap();
        let local = t.local_addr();
        assert_ne!(local.port(), 0);
        // Both are ours: neither can be bound again.
        assert!(std::net::UdpSocket::bind(local).is_err());
        assert!(std::net::TcpListener::bind(local).is_err());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_taken_tcp_port_moves_both_to_another_port() {
        // Another process listens on TCP port P; UDP port P is free, and is
        // what the first attempt gets (as an OS pick of port 0 could).
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = taken.local_addr().unwrap();
        let mut first = Some(p);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (udp, tcp) = bind_pair(any, || udp::bind(first.take().unwrap_or(any))).unwrap();
        let got = udp.local_addr().unwrap();
        assert_ne!(got.port(), p.port());
        assert_eq!(tcp.local_addr().unwrap(), got);
        // The first UDP socket was released once the pair was found.
        drop((udp, tcp));
        assert!(std::net::UdpSocket::bind(p).is_ok());
    }

    #[tokio::test]
    async fn a_fixed_port_is_not_moved() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = taken.local_addr().unwrap();
        let err = bind_pair(p, || udp::bind(p)).expect_err("TCP port is taken");
        let BindError::Bind {
            transport, source, ..
        } = err
        else {
            panic!("a TCP bind error, got {err}");
        };
        assert_eq!(transport, "tcp");
        assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
    }
}
