//! SIP core: message syntax, stream framing, digest auth and transactions.
//!
//! Everything here is sans-IO: bytes and `Instant`s in, bytes and wake-up
//! times out. Sockets live in [`crate::transport`].

pub mod agent;
pub mod auth;
pub mod framing;
pub mod header;
pub mod message;
#[cfg(test)]
mod oracle;
pub mod transaction;

use std::fmt;
use std::net::SocketAddr;

/// How a SIP message travels between two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// One message per datagram; transactions retransmit.
    Udp,
    /// A byte stream framed by Content-Length; no retransmissions.
    Tcp,
}

impl Transport {
    /// True when the transport itself delivers reliably (no SIP retransmissions).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The token used in Via headers.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

impl From<topology::Transport> for Transport {
    fn from(t: topology::Transport) -> Self {
        match t {
            topology::Transport::Udp => Transport::Udp,
            topology::Transport::Tcp => Transport::Tcp,
        }
    }
}

/// The far end of a message: transport plus socket address. Over TCP the
/// address names the connection, so replies reuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// UDP or TCP.
    pub transport: Transport,
    /// The remote socket address (the packet's source, never the Contact).
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.transport.via_token().to_lowercase(),
            self.addr
        )
    }
}

/// Bytes to put on the wire, produced by a sans-IO state machine.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Where to send.
    pub peer: Peer,
    /// One whole serialised SIP message.
    pub data: bytes::Bytes,
}
