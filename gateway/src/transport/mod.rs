//! Sockets: the thin async edge under the sans-IO SIP core.
//!
//! One UDP socket and one TCP listener per node, both on the node's SIP
//! address. Inbound bytes become [`Inbound`] values on one channel; the
//! core's [`Transmit`]s go out through [`Transports::send`]. TCP replies
//! reuse the connection a request came in on (RFC 3261 §18.2.2); requests
//! to a TCP peer with no connection dial one.

mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::node::Inbound;
use crate::sip::{Transmit, Transport};

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
}

/// The node's sockets.
#[derive(Clone)]
pub struct Transports {
    udp: Arc<tokio::net::UdpSocket>,
    tcp: TcpPool,
}

impl Transports {
    /// Bind UDP and TCP on `addr` and start reading; inbound messages go to `inbound`.
    pub async fn bind(
        addr: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Result<Self, BindError> {
        let udp = udp::bind(addr).map_err(|source| BindError::Bind {
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
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Bind {
                transport: "tcp",
                addr,
                source,
            })?;
        let tcp = TcpPool::new(inbound, limits, shutdown.clone());
        tokio::spawn(tcp.clone().accept_loop(listener));
        Ok(Transports { udp, tcp })
    }

    /// Put one message on the wire. Never blocks: a full UDP buffer drops
    /// the datagram (the transaction layer retransmits) and a full TCP
    /// queue drops the message with a log line.
    pub fn send(&self, t: Transmit) {
        match t.peer.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&t.data, t.peer.addr) {
                    metrics::counter!("gbgate_udp_send_errors_total").increment(1);
                    tracing::debug!(peer = %t.peer, error = %e, "UDP send failed");
                }
            }
            Transport::Tcp => self.tcp.send(t.peer.addr, t.data),
        }
    }
}
