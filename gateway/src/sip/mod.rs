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

use topology::GbId;

/// How a SIP message travels between two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// One message per datagram; transactions retransmit.
    Udp,
    /// A byte stream framed by Content-Length; no retransmissions.
    Tcp,
    /// A bidirectional QUIC stream between two gbgate nodes, framed by
    /// Content-Length like TCP; the connection authenticated the peer's
    /// GB ID by its certificate.
    Quic,
}

impl Transport {
    /// True when the transport itself delivers reliably (no SIP retransmissions).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Quic)
    }

    /// The token used in Via headers.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Quic => "QUIC",
        }
    }
}

impl From<topology::Transport> for Transport {
    fn from(t: topology::Transport) -> Self {
        match t {
            topology::Transport::Udp => Transport::Udp,
            topology::Transport::Tcp => Transport::Tcp,
            topology::Transport::Quic => Transport::Quic,
        }
    }
}

/// The far end of a message: the link it travels on (transport and
/// socket address) and, when the link authenticated the far end, its GB ID.
/// Over TCP and QUIC the address names the connection, so replies reuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// UDP, TCP or QUIC.
    pub transport: Transport,
    /// The remote socket address (the packet's source, never the Contact).
    /// Over QUIC: the parent's QUIC address at a child, the address the
    /// child's connection came from at the parent; a migrating connection
    /// keeps it, so the peer stays the same.
    pub addr: SocketAddr,
    /// The GB ID the link proved (a QUIC peer's certificate); `None` for
    /// plain GB/T 28181 peers, whose messages are trusted by address and
    /// digest.
    pub identity: Option<GbId>,
}

impl Peer {
    /// A plain GB/T 28181 peer: no link identity.
    pub fn plain(transport: Transport, addr: SocketAddr) -> Peer {
        Peer {
            transport,
            addr,
            identity: None,
        }
    }

    /// True when a message from this peer may speak for `id`: the link's
    /// identity when it has one, else nothing is known and the caller's
    /// address checks decide (`None`).
    pub fn proves(&self, id: &GbId) -> Option<bool> {
        self.identity.map(|proved| proved == *id)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.transport.via_token().to_lowercase(),
            self.addr
        )?;
        if let Some(id) = self.identity {
            write!(f, " ({id})")?;
        }
        Ok(())
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
