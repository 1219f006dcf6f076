//! This endpoint's SIP identity and the requests it originates.
//!
//! Every request a node or the simulator sends carries the same mandatory
//! headers (GB/T 28181 §2 of our reference: Via with branch and rport,
//! From with tag, To, Call-ID, CSeq, Max-Forwards, Contact where needed);
//! building them in one place keeps them consistent.

use std::net::SocketAddr;

use bytes::Bytes;
use topology::GbId;

use super::header::{new_branch, new_call_id, new_tag};
use super::message::{Method, Request};
use super::Transport;

/// Content type of GB/T 28181 XML bodies.
pub const MANSCDP: &str = "Application/MANSCDP+xml";

/// The product token sent in User-Agent and Server headers.
pub const USER_AGENT: &str = concat!("gbgate/", env!("CARGO_PKG_VERSION"));

/// Who we are on the wire.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Our 20-digit ID (From user).
    pub id: GbId,
    /// The address we advertise in Via and Contact.
    pub addr: SocketAddr,
}

/// The fields that differ between requests.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The ID of the addressee (Request-URI and To user).
    pub id: &'a str,
    /// `host:port` (or domain) for the Request-URI.
    pub host: String,
    /// Transport token for the Via.
    pub transport: Transport,
}

/// The fields of a dialog that every request inside it repeats.
#[derive(Debug, Clone, Copy)]
pub struct DialogIds<'a> {
    /// Request-URI: the remote target (the other side's Contact).
    pub target: &'a str,
    /// Our From header, with our tag.
    pub local: &'a str,
    /// Their To header, with their tag.
    pub remote: &'a str,
    /// The dialog's Call-ID.
    pub call_id: &'a str,
    /// Transport token for the Via.
    pub transport: Transport,
}

impl Agent {
    /// A request inside a dialog (ACK, BYE, INFO): fresh Via branch, the
    /// dialog's From, To and Call-ID, and CSeq `cseq method`.
    pub fn in_dialog(&self, method: Method, ids: &DialogIds<'_>, cseq: u32) -> Request {
        let mut r = Request::new(method.clone(), ids.target.to_owned());
        r.headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};rport;branch={}",
                ids.transport.via_token(),
                self.addr,
                new_branch()
            ),
        );
        r.headers.push("From", ids.local);
        r.headers.push("To", ids.remote);
        r.headers.push("Call-ID", ids.call_id);
        r.headers.push("CSeq", format!("{cseq} {method}"));
        r.headers.push("Max-Forwards", "70");
        r.headers.push("User-Agent", USER_AGENT);
        r
    }

    /// The `sip:id@host:port` URI of this endpoint.
    pub fn contact_uri(&self) -> String {
        format!("sip:{}@{}", self.id, self.addr)
    }

    /// A new out-of-dialog request with fresh branch, tag and Call-ID
    /// (`call_id` overrides the Call-ID, e.g. to keep one across REGISTER refreshes).
    pub fn request(
        &self,
        method: Method,
        target: &Target<'_>,
        cseq: u32,
        call_id: Option<&str>,
        body: Option<(&str, Bytes)>,
    ) -> Request {
        let uri = format!("sip:{}@{}", target.id, target.host);
        let mut r = Request::new(method.clone(), uri.clone());
        r.headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};rport;branch={}",
                target.transport.via_token(),
                self.addr,
                new_branch()
            ),
        );
        let (from_uri, to_uri) = if method == Method::Register {
            // REGISTER: From and To both name the registering party (RFC 3261 §10.2).
            let own = format!("sip:{}@{}", self.id, self.id.domain());
            (own.clone(), own)
        } else {
            (format!("sip:{}@{}", self.id, self.id.domain()), uri)
        };
        r.headers
            .push("From", format!("<{from_uri}>;tag={}", new_tag()));
        r.headers.push("To", format!("<{to_uri}>"));
        let call_id = call_id
            .map(str::to_owned)
            .unwrap_or_else(|| new_call_id(&self.addr.ip().to_string()));
        r.headers.push("Call-ID", call_id);
        r.headers.push("CSeq", format!("{cseq} {method}"));
        r.headers.push("Max-Forwards", "70");
        if matches!(
            method,
            Method::Register | Method::Invite | Method::Subscribe | Method::Notify
        ) {
            r.headers
                .push("Contact", format!("<{}>", self.contact_uri()));
        }
        r.headers.push("User-Agent", USER_AGENT);
        if let Some((content_type, body)) = body {
            r.headers.push("Content-Type", content_type);
            r.body = body;
        }
        r
    }
}
