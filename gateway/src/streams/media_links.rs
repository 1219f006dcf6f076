//! The media side of the node's links: where a stream's RTP comes in and
//! where a parent's goes out. The stream manager asks for a receiver or a
//! sender by the link a call travels on and never binds a socket or
//! touches QUIC itself.

use std::net::IpAddr;

use super::rtp_io::{LinkMode, MediaSocket};
use crate::sip::Transport;
use crate::transport::QuicLinks;

/// Why no media endpoint could be made.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MediaLinkError {
    /// No socket could be bound.
    #[error("cannot bind a media socket: {0}")]
    NoSocket(String),
    /// QUIC media was offered but no QUIC link to the parent is up.
    #[error("QUIC media offered, but no QUIC link to the parent is up")]
    NoQuicLink,
}

impl MediaLinkError {
    /// The SIP status a parent's INVITE gets for it.
    pub fn sip_status(&self) -> u16 {
        match self {
            MediaLinkError::NoSocket(_) => 500,
            MediaLinkError::NoQuicLink => 488,
        }
    }
}

/// Media endpoints for the node's calls.
#[derive(Clone)]
pub struct MediaLinks {
    ip: IpAddr,
    receive_mode: LinkMode,
    quic: Option<QuicLinks>,
}

impl MediaLinks {
    /// Endpoints on `ip`, asking sources to send as `receive_mode`, with
    /// the node's QUIC links when it has any.
    pub fn new(ip: IpAddr, receive_mode: LinkMode, quic: Option<QuicLinks>) -> MediaLinks {
        MediaLinks {
            ip,
            receive_mode,
            quic,
        }
    }

    /// The node's QUIC links, when it runs any.
    pub fn quic(&self) -> Option<&QuicLinks> {
        self.quic.as_ref()
    }

    /// Where a call placed on a link of `transport` receives RTP with
    /// `ssrc`: on that QUIC link, or a socket in the node's receive mode.
    /// Returns the mode the offer states and the endpoint.
    pub async fn receiver(
        &self,
        transport: Option<Transport>,
        ssrc: u32,
    ) -> Result<(LinkMode, MediaSocket), MediaLinkError> {
        if let (Some(Transport::Quic), Some(q)) = (transport, &self.quic) {
            return Ok((LinkMode::Quic, MediaSocket::Quic(q.expect_media(ssrc))));
        }
        let socket = MediaSocket::bind(self.ip, self.receive_mode)
            .await
            .map_err(|e| MediaLinkError::NoSocket(e.to_string()))?;
        Ok((self.receive_mode, socket))
    }

    /// Where RTP to the parent leaves, in `mode` (what its offer asked).
    pub async fn sender(&self, mode: LinkMode) -> Result<MediaSocket, MediaLinkError> {
        if mode == LinkMode::Quic {
            return self
                .quic
                .as_ref()
                .and_then(QuicLinks::parent_connection)
                .map(MediaSocket::QuicSend)
                .ok_or(MediaLinkError::NoQuicLink);
        }
        MediaSocket::bind(self.ip, mode)
            .await
            .map_err(|e| MediaLinkError::NoSocket(e.to_string()))
    }
}
