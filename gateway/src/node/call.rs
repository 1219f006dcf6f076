//! Media calls: INVITE/ACK/BYE/CANCEL/INFO dialogs, sans-IO.
//!
//! The node places calls downward (toward the device or child node that owns
//! a channel, as the catalog says) and takes calls from its parent. It only
//! does signalling: the media plane ([`crate::streams`]) asks for calls with
//! [`Node::place_call`] and answers the parent's with
//! [`Node::accept_call`] / [`Node::reject_call`], and learns what happened
//! from [`CallEvent`]s ([`Node::poll_call_event`]).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use topology::GbId;

use super::{Node, Token};
use crate::gate::{node_subject, Ask};
use crate::media::sdp::GbSdp;
use crate::sip::agent::{DialogIds, Target, USER_AGENT};
use crate::sip::header::{new_tag, reasons, NameAddr, Reason};
use crate::sip::message::{Method, Request, Response};
use crate::sip::transaction::AckMatch;
use crate::sip::{Peer, Transmit};
use policy::{Action, Subject};

/// Content type of SDP bodies (GB/T 28181 writes it in capitals).
pub const SDP: &str = "APPLICATION/SDP";
/// Content type of MANSRTSP bodies (playback control in INFO).
pub const MANSRTSP: &str = "Application/MANSRTSP";

/// The header in which a gbgate node says on whose behalf it INVITEs
/// (`dept:police`); other gbgate nodes audit it, third-party platforms
/// ignore it.
pub const ON_BEHALF_OF: &str = "X-Gbgate-On-Behalf-Of";

/// A call's handle, unique within one node process.
pub type CallId = u64;

/// What a call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    /// `s=Play`: live video.
    Live,
    /// `s=Playback` of a recorded time range (Unix seconds).
    Playback {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
    },
}

/// What the media plane learns about calls.
#[derive(Debug)]
pub enum CallEvent {
    /// A call we placed was answered (the ACK has been sent).
    Answered {
        /// The call.
        call: CallId,
        /// The callee's SDP.
        answer: GbSdp,
    },
    /// A call we placed was refused, timed out or had an unusable answer.
    Failed {
        /// The call.
        call: CallId,
        /// Why.
        reason: CallFailure,
    },
    /// The far end ended an established call (BYE from below or from the parent).
    Ended {
        /// The call.
        call: CallId,
        /// Why: the BYE's Reason text when the source below gave one.
        reason: String,
        /// The Reason header (RFC 3326) of a BYE from below that had a
        /// text, for the media plane to act on (a tier below could not read
        /// the source's PS); `None` for every other end.
        said: Option<Reason>,
    },
    /// The source below reported the end of a recording (MediaStatus 121).
    MediaEnded {
        /// The call.
        call: CallId,
    },
    /// The parent invites us to send a channel.
    Invited {
        /// The call; answer with [`Node::accept_call`] or [`Node::reject_call`].
        call: CallId,
        /// The channel asked for.
        channel: GbId,
        /// Live or playback.
        kind: CallKind,
        /// The parent's offer (where to send, SSRC, transport).
        offer: GbSdp,
        /// The department the parent says it asks for (audited, and
        /// passed on in our own INVITE below).
        on_behalf_of: Option<Subject>,
    },
    /// INFO (MANSRTSP) from the parent on an incoming call.
    Info {
        /// The call.
        call: CallId,
        /// The MANSRTSP body, verbatim.
        body: Bytes,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// We sent the INVITE.
    Outgoing,
    /// The parent sent it.
    Incoming,
}

/// One INVITE dialog.
#[derive(Debug)]
pub(super) struct Dialog {
    side: Side,
    call_id: String,
    /// Our From (outgoing) or To (incoming) header, with our tag.
    local: String,
    /// The other party's header, with its tag once known.
    remote: String,
    /// Request-URI of requests inside the dialog (the remote Contact).
    remote_target: String,
    peer: Peer,
    local_cseq: u32,
    /// The channel, and the registrant that owns it (outgoing calls) or
    /// the parent that placed it (incoming calls).
    channel: GbId,
    via: Option<GbId>,
    /// Live or playback: only playback calls end on a MediaStatus.
    playback: bool,
    /// Our SDP once answered (incoming calls), for a re-INVITE's answer.
    local_sdp: Option<Bytes>,
    /// The INVITE, kept until it has a final answer (its transaction key for
    /// CANCEL, or the request to answer for incoming calls).
    invite: Option<Request>,
    established: bool,
    /// Hung up before any provisional answer: the CANCEL waits for one
    /// (RFC 3261 §9.1), and a 2xx meanwhile is ACKed and hung up.
    cancel_wanted: bool,
    placed_at: Instant,
}

impl Dialog {
    fn ids(&self) -> DialogIds<'_> {
        DialogIds {
            target: &self.remote_target,
            local: &self.local,
            remote: &self.remote,
            call_id: &self.call_id,
            transport: self.peer.transport,
        }
    }
}

/// Calls of one node.
#[derive(Debug, Default)]
pub(super) struct Calls {
    dialogs: HashMap<CallId, Dialog>,
    by_call_id: HashMap<String, CallId>,
    next: CallId,
    events: VecDeque<CallEvent>,
    /// Calls hung up whose CANCEL waits for a provisional answer.
    cancels_wanted: Vec<CallId>,
}

impl Calls {
    fn insert(&mut self, d: Dialog) -> CallId {
        self.next += 1;
        let id = self.next;
        self.by_call_id.insert(d.call_id.clone(), id);
        self.dialogs.insert(id, d);
        id
    }

    fn remove(&mut self, id: CallId) -> Option<Dialog> {
        let d = self.dialogs.remove(&id)?;
        self.by_call_id.remove(&d.call_id);
        Some(d)
    }

    fn find(&self, call_id: &str) -> Option<CallId> {
        self.by_call_id.get(call_id).copied()
    }

    /// The calls whose dialog satisfies `f`.
    fn matching(&self, f: impl Fn(&Dialog) -> bool) -> Vec<CallId> {
        self.dialogs
            .iter()
            .filter(|(_, d)| f(d))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Why a placed call failed before it was answered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallFailure {
    /// The device or child node answered the INVITE with an error.
    #[error("{via} answered {status} {reason}")]
    Refused {
        /// Who answered (the registrant the call went to).
        via: String,
        /// The SIP status.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The 200 OK carried an SDP we cannot use.
    #[error("unusable SDP in the 200 OK: {0}")]
    BadAnswer(String),
    /// No final answer within the INVITE transaction's time.
    #[error("no answer to the INVITE (timed out)")]
    Timeout,
}

/// Why a call cannot be placed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// The channel is not in this node's catalog.
    #[error("channel {0} is not in this node's catalog")]
    UnknownChannel(String),
    /// The channel is known but its device or child node is offline.
    #[error("channel {0} is offline (its device or child node is not registered)")]
    Offline(String),
    /// Too many calls are open.
    #[error("too many open calls ({0}); close some streams or raise max_calls")]
    TooMany(usize),
    /// The transaction layer refused the INVITE.
    #[error("cannot send the INVITE: {0}")]
    Transaction(String),
}

pub(super) fn header_with_tag(h: &str, tag: &str) -> String {
    match NameAddr::parse(h) {
        Ok(mut na) if na.tag().is_none() => {
            na.set_tag(tag);
            na.to_string()
        }
        Ok(na) => na.to_string(),
        Err(_) => format!("{h};tag={tag}"),
    }
}

pub(super) fn contact_uri(h: Option<&str>) -> Option<String> {
    Some(NameAddr::parse(h?).ok()?.uri.to_string())
}

fn channel_of_uri(uri: &str) -> Option<GbId> {
    let user = crate::sip::header::SipUri::parse(uri).ok()?.user?;
    GbId::parse(&user).ok()
}

impl Node {
    /// The next call event for the media plane.
    pub fn poll_call_event(&mut self) -> Option<CallEvent> {
        self.calls.events.pop_front()
    }

    /// Open calls (placed and taken).
    pub fn open_calls(&self) -> usize {
        self.calls.dialogs.len()
    }

    /// The link a call for `channel` leaves by: the device or child node
    /// that owns it, when it is online.
    pub fn link_toward(&self, channel: GbId) -> Result<Peer, CallError> {
        self.route_toward(channel).map(|(_, peer)| peer)
    }

    /// The registrant a call for `channel` goes to, and its link.
    fn route_toward(&self, channel: GbId) -> Result<(GbId, Peer), CallError> {
        let source = self
            .catalog
            .source_of(channel.as_str())
            .or_else(|| self.registry.get(&channel).map(|_| channel))
            .ok_or_else(|| CallError::UnknownChannel(channel.to_string()))?;
        self.registry
            .get(&source)
            .filter(|r| r.online)
            .map(|r| (source, r.peer))
            .ok_or_else(|| CallError::Offline(channel.to_string()))
    }

    /// Place a call for `channel` toward the device or child node that owns
    /// it, with our `offer` (our receive address and SSRC).
    pub fn place_call(
        &mut self,
        channel: GbId,
        kind: CallKind,
        offer: &GbSdp,
        on_behalf_of: Option<&Subject>,
        now: Instant,
    ) -> Result<CallId, CallError> {
        if self.calls.dialogs.len() >= self.settings.max_calls {
            return Err(CallError::TooMany(self.settings.max_calls));
        }
        let (source, peer) = self.route_toward(channel)?;
        let host = peer.addr.to_string();
        let cseq = self.next_cseq();
        let target = Target {
            id: channel.as_str(),
            host: host.clone(),
            transport: peer.transport,
        };
        let mut req = self.agent.request(
            Method::Invite,
            &target,
            cseq,
            None,
            Some((SDP, Bytes::from(offer.to_string()))),
        );
        // Subject: media sender ID:SSRC, receiver ID:stream number (§9.2).
        req.headers.push(
            "Subject",
            format!(
                "{}:{},{}:0",
                channel,
                offer
                    .ssrc_text
                    .clone()
                    .unwrap_or_else(|| format!("{:010}", offer.ssrc.unwrap_or(0))),
                self.identity.id
            ),
        );
        if let Some(who) = on_behalf_of {
            req.headers.push(ON_BEHALF_OF, who.to_string());
        }
        let call_id = req.call_id().unwrap_or_default().to_owned();
        let local = req.headers.get("From").unwrap_or_default().to_owned();
        let remote = req.headers.get("To").unwrap_or_default().to_owned();
        let dialog = Dialog {
            side: Side::Outgoing,
            call_id,
            local,
            remote,
            remote_target: req.uri.clone(),
            peer,
            local_cseq: cseq,
            channel,
            via: Some(source),
            playback: kind != CallKind::Live,
            local_sdp: None,
            invite: Some(req.clone()),
            established: false,
            cancel_wanted: false,
            placed_at: now,
        };
        let id = self.calls.insert(dialog);
        metrics::counter!("gbgate_invites_sent_total", "kind" => kind_label(&kind)).increment(1);
        tracing::info!(call = id, %channel, via = %source, kind = ?kind, "INVITE down");
        if let Err(e) = self.tx.send_request(req, peer, Token::Call(id), now) {
            self.calls.remove(id);
            return Err(CallError::Transaction(e.to_string()));
        }
        Ok(id)
    }

    /// End a call: CANCEL if it is not answered yet, BYE otherwise. For an
    /// incoming call not yet answered, this answers 480 instead.
    pub fn hangup(&mut self, call: CallId, now: Instant) {
        self.hangup_with(call, None, now);
    }

    /// [`Self::hangup`], the BYE carrying `reason` as an RFC 3326 Reason
    /// header: a BYE alone only says the stream is over, and the tier above
    /// would tell its viewers that it fell silent rather than why.
    pub fn hangup_with(&mut self, call: CallId, reason: Option<&Reason>, now: Instant) {
        let Some(d) = self.calls.dialogs.get(&call) else {
            return;
        };
        let proceeding = self.invite_proceeding(d);
        match (d.side, d.established, d.invite.is_some()) {
            (Side::Outgoing, false, true) if !proceeding => {
                // Nothing heard yet: a CANCEL now could overtake a lost
                // INVITE's retransmission and cancel nothing.
                if let Some(d) = self.calls.dialogs.get_mut(&call) {
                    d.cancel_wanted = true;
                    self.calls.cancels_wanted.push(call);
                }
            }
            (Side::Outgoing, false, true) => self.send_cancel(call, now),
            (Side::Outgoing, false, false) => {} // CANCEL already sent.
            (Side::Incoming, false, true) => {
                let Some(invite) = d.invite.clone() else {
                    return;
                };
                let mut r = Response::to_request(&invite, 480, Some(&tag_of(&d.local)));
                r.reason = "Stream unavailable".into();
                self.respond(&invite, r, now);
                self.calls.remove(call);
            }
            _ => {
                let extra: Vec<(&str, String)> = reason
                    .map(|r| ("Reason", r.to_string()))
                    .into_iter()
                    .collect();
                self.send_in_dialog_with(call, Method::Bye, None, &extra, now);
                self.calls.remove(call);
            }
        }
    }

    /// Calls the parents placed: (call, parent, channel, playback).
    pub(super) fn incoming_calls(&self) -> Vec<(CallId, GbId, GbId, bool)> {
        self.calls
            .dialogs
            .iter()
            .filter(|(_, d)| d.side == Side::Incoming)
            .filter_map(|(id, d)| Some((*id, d.via?, d.channel, d.playback)))
            .collect()
    }

    /// End a call from the parent on our side: BYE (or 403 before the
    /// answer) with `reason`, and the media plane told to stop sending.
    pub(super) fn end_incoming(&mut self, call: CallId, status: u16, reason: String, now: Instant) {
        let answered = self.calls.dialogs.get(&call).is_some_and(|d| d.established);
        if answered {
            self.hangup_with(call, Some(&Reason::sip(status, &reason)), now);
        } else if let Some(invite) = self.calls.dialogs.get(&call).and_then(|d| d.invite.clone()) {
            let tag = self
                .calls
                .dialogs
                .get(&call)
                .map(|d| tag_of(&d.local))
                .unwrap_or_default();
            let mut r = Response::to_request(&invite, status, Some(&tag));
            r.headers.push(
                "Warning",
                format!("399 gbgate \"{}\"", reason.replace('"', "'")),
            );
            self.respond(&invite, r, now);
            self.calls.remove(call);
        }
        self.calls.events.push_back(CallEvent::Ended {
            call,
            reason,
            said: None,
        });
    }

    /// Send INFO (MANSRTSP playback control) on an established outgoing call.
    pub fn send_info(&mut self, call: CallId, body: Bytes, now: Instant) -> bool {
        let ok = self
            .calls
            .dialogs
            .get(&call)
            .is_some_and(|d| d.established && d.side == Side::Outgoing);
        if ok {
            self.send_in_dialog(call, Method::Info, Some((MANSRTSP, body)), now);
        }
        ok
    }

    /// Answer the parent's INVITE with 200 and our SDP. False when the
    /// call is gone (cancelled, timed out): the media plane must not send.
    pub fn accept_call(&mut self, call: CallId, answer: &GbSdp, now: Instant) -> bool {
        let Some(d) = self.calls.dialogs.get_mut(&call) else {
            return false;
        };
        let Some(invite) = d.invite.take() else {
            return false;
        };
        d.established = true;
        let body = Bytes::from(answer.to_string());
        d.local_sdp = Some(body.clone());
        let mut r = Response::to_request(&invite, 200, Some(&tag_of(&d.local)));
        r.headers
            .push("Contact", format!("<{}>", self.agent.contact_uri()));
        r.headers.push("Content-Type", SDP);
        r.body = body;
        self.respond(&invite, r, now);
        true
    }

    /// Refuse the parent's INVITE (e.g. 404 unknown channel, 480 the
    /// device did not answer, 488 unusable offer).
    pub fn reject_call(&mut self, call: CallId, status: u16, reason: &str, now: Instant) {
        let Some(d) = self.calls.remove(call) else {
            return;
        };
        if let Some(invite) = d.invite {
            let mut r = Response::to_request(&invite, status, Some(&tag_of(&d.local)));
            r.headers.push(
                "Warning",
                format!("399 gbgate \"{}\"", reason.replace('"', "'")),
            );
            self.respond(&invite, r, now);
        }
    }

    /// Tell the parent that a playback call's recording ended (MediaStatus 121).
    pub fn notify_media_ended(&mut self, call: CallId, now: Instant) {
        let Some(d) = self.calls.dialogs.get(&call) else {
            return;
        };
        if d.side != Side::Incoming {
            return;
        }
        let Some((pid, peer)) = d
            .via
            .and_then(|p| self.uplink_to(p))
            .map(|u| (u.parent(), u.peer()))
        else {
            return;
        };
        let channel = d.channel;
        let sn = self.next_sn();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n"
        );
        let target = Target {
            id: pid.as_str(),
            host: peer.addr.to_string(),
            transport: peer.transport,
        };
        let cseq = self.next_cseq();
        let req = self.agent.request(
            Method::Message,
            &target,
            cseq,
            None,
            Some((crate::sip::agent::MANSCDP, Bytes::from(body))),
        );
        let _ = self.tx.send_request(req, peer, Token::InDialog(call), now);
    }

    fn send_in_dialog(
        &mut self,
        call: CallId,
        method: Method,
        body: Option<(&str, Bytes)>,
        now: Instant,
    ) {
        self.send_in_dialog_with(call, method, body, &[], now);
    }

    /// [`Self::send_in_dialog`] with `extra` headers (a BYE's Reason).
    fn send_in_dialog_with(
        &mut self,
        call: CallId,
        method: Method,
        body: Option<(&str, Bytes)>,
        extra: &[(&str, String)],
        now: Instant,
    ) {
        let Some(d) = self.calls.dialogs.get_mut(&call) else {
            return;
        };
        d.local_cseq = d.local_cseq.wrapping_add(1);
        let mut r = self.agent.in_dialog(method.clone(), &d.ids(), d.local_cseq);
        for (name, value) in extra {
            r.headers.push(name, value.as_str());
        }
        if let Some((ct, b)) = body {
            r.headers.push("Content-Type", ct);
            r.body = b;
        }
        let peer = d.peer;
        if method == Method::Bye {
            metrics::counter!("gbgate_byes_sent_total").increment(1);
        }
        let _ = self.tx.send_request(r, peer, Token::InDialog(call), now);
    }

    // ------------------------------------------------------------ responses

    /// CANCEL our INVITE of `call`: same Request-URI, Call-ID, From, To,
    /// CSeq number and top Via as the INVITE (RFC 3261 §9.1). The INVITE's
    /// final answer (487, or a 200 we then BYE) still arrives.
    fn send_cancel(&mut self, call: CallId, now: Instant) {
        let Some(d) = self.calls.dialogs.get_mut(&call) else {
            return;
        };
        // No INVITE kept: marks "cancelled", so a late 200 gets a BYE.
        let Some(invite) = d.invite.take() else {
            return;
        };
        d.cancel_wanted = false;
        let peer = d.peer;
        let mut c = Request::new(Method::Cancel, invite.uri.clone());
        for name in ["Via", "From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                c.headers.push(name, v);
            }
        }
        let seq = invite.cseq().map_or(0, |q| q.seq);
        c.headers.push("CSeq", format!("{seq} CANCEL"));
        c.headers.push("Max-Forwards", "70");
        c.headers.push("User-Agent", USER_AGENT);
        let _ = self.tx.send_request(c, peer, Token::InDialog(call), now);
    }

    /// Whether the INVITE `d` keeps has had a provisional answer and no
    /// final one: only then may it be CANCELled (RFC 3261 §9.1).
    fn invite_proceeding(&self, d: &Dialog) -> bool {
        d.invite
            .as_ref()
            .and_then(crate::sip::transaction::ClientKey::of_request)
            .is_some_and(|k| self.tx.is_proceeding(&k))
    }

    /// Send the CANCELs that waited for their INVITE's provisional answer
    /// (after each round of responses).
    pub(super) fn send_wanted_cancels(&mut self, now: Instant) {
        if self.calls.cancels_wanted.is_empty() {
            return;
        }
        let wanted = std::mem::take(&mut self.calls.cancels_wanted);
        for call in wanted {
            let Some(d) = self.calls.dialogs.get(&call).filter(|d| d.cancel_wanted) else {
                continue; // answered, failed or gone meanwhile
            };
            if self.invite_proceeding(d) {
                self.send_cancel(call, now);
            } else {
                self.calls.cancels_wanted.push(call);
            }
        }
    }

    pub(super) fn on_invite_response(&mut self, call: CallId, resp: Response, now: Instant) {
        let Some(d) = self.calls.dialogs.get_mut(&call) else {
            return;
        };
        if resp.status < 200 {
            return;
        }
        if !resp.is_success() {
            let reason = CallFailure::Refused {
                via: d.via.map_or_else(String::new, |v| v.to_string()),
                status: resp.status,
                reason: resp.reason.clone(),
            };
            tracing::warn!(call, channel = %d.channel, %reason, "INVITE refused");
            self.calls.remove(call);
            self.calls
                .events
                .push_back(CallEvent::Failed { call, reason });
            return;
        }
        // 2xx: the dialog is up; ACK it (a new transaction of our own).
        if let Some(to) = resp.headers.get("To") {
            d.remote = to.to_owned();
        }
        if let Some(target) = contact_uri(resp.headers.get("Contact")) {
            d.remote_target = target;
        }
        let cancelled = d.invite.is_none() || d.cancel_wanted;
        let invite_seq = d.local_cseq;
        d.established = true;
        let data = self
            .agent
            .in_dialog(Method::Ack, &d.ids(), invite_seq)
            .to_bytes();
        let peer = d.peer;
        d.invite = None;
        self.transmits.push(Transmit {
            peer,
            data: data.clone(),
        });
        if let Some(key) = crate::sip::transaction::ClientKey::of_response(&resp) {
            self.tx.set_ack(&key, data);
        }
        if cancelled {
            // Answered after we gave up on it: take it down again.
            self.send_in_dialog(call, Method::Bye, None, now);
            self.calls.remove(call);
            return;
        }
        let answer = std::str::from_utf8(&resp.body)
            .map_err(|e| e.to_string())
            .and_then(|s| GbSdp::parse(s).map_err(|e| e.to_string()));
        match answer {
            Ok(answer) => {
                tracing::info!(call, channel = %self.calls.dialogs.get(&call).map_or(String::new(), |d| d.channel.to_string()), "call answered");
                self.calls
                    .events
                    .push_back(CallEvent::Answered { call, answer });
            }
            Err(e) => {
                let reason = CallFailure::BadAnswer(e.to_string());
                tracing::warn!(call, %reason, "call dropped");
                self.send_in_dialog(call, Method::Bye, None, now);
                self.calls.remove(call);
                self.calls
                    .events
                    .push_back(CallEvent::Failed { call, reason });
            }
        }
    }

    /// A 2xx to an INVITE whose transaction is gone (it timed out, or the
    /// call was dropped meanwhile). The callee keeps retransmitting it, and
    /// may keep streaming, until it is ACKed; with no call of ours left, it
    /// is ACKed and BYEd at once (RFC 3261 §13.2.2.4).
    pub(super) fn on_stray_invite_2xx(&mut self, resp: &Response, peer: Peer, now: Instant) {
        let Some(call_id) = resp.call_id() else {
            return;
        };
        let known = self
            .calls
            .find(call_id)
            .and_then(|c| self.calls.dialogs.get(&c))
            .is_some_and(|d| d.established);
        let target = contact_uri(resp.headers.get("Contact"))
            .or_else(|| {
                NameAddr::parse(resp.headers.get("To")?)
                    .ok()
                    .map(|n| n.uri.to_string())
            })
            .unwrap_or_default();
        let seq = resp.cseq().map_or(0, |c| c.seq);
        let ids = DialogIds {
            target: &target,
            local: resp.headers.get("From").unwrap_or_default(),
            remote: resp.headers.get("To").unwrap_or_default(),
            call_id,
            transport: peer.transport,
        };
        let build = |method: Method, seq: u32| self.agent.in_dialog(method, &ids, seq);
        // A retransmission for a call we still have: its ACK was lost.
        self.transmits.push(Transmit {
            peer,
            data: build(Method::Ack, seq).to_bytes(),
        });
        if !known {
            tracing::warn!(call_id, %peer, "2xx for an INVITE we no longer have: ACK and BYE");
            metrics::counter!("gbgate_byes_sent_total").increment(1);
            // Call 0 is no call: its answer is only logged.
            let bye = build(Method::Bye, seq.wrapping_add(1));
            let _ = self.tx.send_request(bye, peer, Token::InDialog(0), now);
        }
    }

    pub(super) fn on_invite_timeout(&mut self, call: CallId) {
        if self.calls.remove(call).is_some() {
            let reason = CallFailure::Timeout;
            self.calls
                .events
                .push_back(CallEvent::Failed { call, reason });
        }
    }

    // ------------------------------------------------------------- requests

    /// INVITE, ACK, BYE, CANCEL and INFO. Returns false when `req` is none of them.
    pub(super) fn handle_call_request(&mut self, req: &Request, peer: Peer, now: Instant) -> bool {
        match req.method {
            Method::Invite => self.on_invite(req, peer, now),
            Method::Bye => self.on_bye(req, now),
            Method::Cancel => self.on_cancel(req, now),
            Method::Info => self.on_info(req, now),
            _ => return false,
        }
        true
    }

    /// An ACK (it has no transaction of its own to create).
    pub(super) fn on_ack(&mut self, req: &Request, now: Instant) {
        if self.tx.handle_ack(req, now) == AckMatch::Stray {
            tracing::debug!(call_id = req.call_id().unwrap_or_default(), "stray ACK");
        }
    }

    fn on_invite(&mut self, req: &Request, peer: Peer, now: Instant) {
        // A re-INVITE (session refresh) keeps the session as it is: 491
        // while our answer to the first is pending (RFC 3261 §14.2), else
        // 200 with the same SDP and Contact.
        if let Some(call) = req.call_id().and_then(|c| self.calls.find(c)) {
            let Some(d) = self.calls.dialogs.get(&call) else {
                return;
            };
            let tag = tag_of(&d.local);
            let (established, sdp) = (d.established, d.local_sdp.clone());
            let mut r = Response::to_request(req, if established { 200 } else { 491 }, Some(&tag));
            if let (true, Some(sdp)) = (established, sdp) {
                r.headers
                    .push("Contact", format!("<{}>", self.agent.contact_uri()));
                r.headers.push("Content-Type", SDP);
                r.body = sdp;
            }
            return self.respond(req, r, now);
        }
        let caller = user_of_header(req.headers.get("From"))
            .and_then(|id| self.uplink_to(id))
            .filter(|u| match peer.proves(&u.parent()) {
                Some(proved) => proved,
                None => u.peer().identity.is_none() && peer.addr.ip() == u.peer().addr.ip(),
            })
            .map(|u| u.parent());
        let Some(caller) = caller else {
            tracing::warn!(%peer, "INVITE from someone other than the parent refused");
            return self.reply(req, 403, now);
        };
        if self.calls.dialogs.len() >= self.settings.max_calls {
            return self.reply(req, 486, now);
        }
        let offer = match std::str::from_utf8(&req.body)
            .map_err(|e| e.to_string())
            .and_then(|s| GbSdp::parse(s).map_err(|e| e.to_string()))
        {
            Ok(o) if o.offers_ps() => match unreachable_media(&o) {
                // Refused before any 100/200: a 200 followed by a send that
                // cannot happen would leave the parent waiting for nothing.
                Some(why) => {
                    let mut r = Response::to_request(req, 488, Some(&new_tag()));
                    r.reason = format!("Not Acceptable Here: {why}");
                    r.headers.push("Warning", format!("305 gbgate \"{why}\""));
                    return self.respond(req, r, now);
                }
                None => o,
            },
            Ok(_) => {
                let mut r = Response::to_request(req, 488, Some(&new_tag()));
                r.reason = "Not Acceptable Here: only PS/90000 is sent".into();
                return self.respond(req, r, now);
            }
            Err(e) => {
                let mut r = Response::to_request(req, 400, Some(&new_tag()));
                r.headers.push(
                    "Warning",
                    format!("399 gbgate \"bad SDP: {}\"", e.replace('"', "'")),
                );
                return self.respond(req, r, now);
            }
        };
        // The channel: the Request-URI user, or `u=<channel>:0` for playback.
        let channel = channel_of_uri(&req.uri).or_else(|| {
            offer
                .uri
                .as_deref()
                .and_then(|u| u.split(':').next())
                .and_then(|c| GbId::parse(c).ok())
        });
        let Some(channel) = channel else {
            let mut r = Response::to_request(req, 400, Some(&new_tag()));
            r.reason = "Request-URI must name a 20-digit channel ID".into();
            return self.respond(req, r, now);
        };
        let kind = match offer.session.as_str() {
            "Playback" | "Download" => CallKind::Playback {
                start: offer.time.0,
                end: offer.time.1,
            },
            _ => CallKind::Live,
        };
        // The gate, before any work: a channel not shared with this parent
        // is refused as one that does not exist would be.
        let on_behalf_of: Option<Subject> = req
            .headers
            .get(ON_BEHALF_OF)
            .and_then(|v| v.trim().parse().ok());
        let ask = Ask {
            who: node_subject(caller),
            on_behalf_of: on_behalf_of.clone(),
            channel,
            action: match offer.session.as_str() {
                "Playback" => Action::Playback,
                "Download" => Action::Download,
                _ => Action::Live,
            },
        };
        let verdict = self.authorize(&ask, now);
        if !verdict.allowed {
            let mut r = Response::to_request(req, 403, Some(&new_tag()));
            // The detail stays in our audit: the answer is the same for a
            // channel that is not shared and one that does not exist.
            r.reason = "Forbidden".into();
            r.headers
                .push("Warning", "399 gbgate \"not shared with this platform\"");
            return self.respond(req, r, now);
        }
        let tag = new_tag();
        let local = header_with_tag(req.headers.get("To").unwrap_or_default(), &tag);
        let mut trying = Response::to_request(req, 100, None);
        trying.reason = "Trying".into();
        self.respond(req, trying, now);
        let dialog = Dialog {
            side: Side::Incoming,
            call_id: req.call_id().unwrap_or_default().to_owned(),
            local,
            remote: req.headers.get("From").unwrap_or_default().to_owned(),
            remote_target: contact_uri(req.headers.get("Contact"))
                .unwrap_or_else(|| format!("sip:{}", peer.addr)),
            peer,
            local_cseq: 0,
            channel,
            via: Some(caller),
            playback: kind != CallKind::Live,
            local_sdp: None,
            invite: Some(req.clone()),
            established: false,
            cancel_wanted: false,
            placed_at: now,
        };
        let call = self.calls.insert(dialog);
        metrics::counter!("gbgate_invites_received_total", "kind" => kind_label(&kind))
            .increment(1);
        tracing::info!(call, %channel, ?kind, "INVITE from the parent");
        self.calls.events.push_back(CallEvent::Invited {
            call,
            channel,
            kind,
            offer,
            on_behalf_of,
        });
    }

    fn on_bye(&mut self, req: &Request, now: Instant) {
        let Some(call) = req.call_id().and_then(|c| self.calls.find(c)) else {
            return self.reply(req, 481, now);
        };
        self.reply(req, 200, now);
        if let Some(d) = self.calls.remove(call) {
            metrics::counter!("gbgate_byes_received_total").increment(1);
            // Only the source below can say why its stream is gone; what the
            // parent says when it hangs up changes nothing here.
            let said = match d.side {
                Side::Outgoing => said_reason(req),
                Side::Incoming => None,
            };
            let reason = match (&said, d.side) {
                (Some(Reason { text: Some(t), .. }), _) => t.clone(),
                (_, Side::Outgoing) => format!(
                    "{} ended the stream (BYE)",
                    d.via.map_or_else(String::new, |v| v.to_string())
                ),
                (_, Side::Incoming) => "the parent ended the call (BYE)".to_owned(),
            };
            tracing::info!(call, channel = %d.channel, %reason, "call ended");
            self.calls
                .events
                .push_back(CallEvent::Ended { call, reason, said });
        }
    }

    fn on_cancel(&mut self, req: &Request, now: Instant) {
        let Some(call) = req.call_id().and_then(|c| self.calls.find(c)) else {
            return self.reply(req, 481, now);
        };
        let cancellable = self.tx.invite_cancellable(req);
        self.reply(req, 200, now);
        if !cancellable {
            return;
        }
        if let Some(d) = self.calls.remove(call) {
            if let Some(invite) = d.invite {
                let r = Response::to_request(&invite, 487, Some(&tag_of(&d.local)));
                self.respond(&invite, r, now);
            }
            self.calls.events.push_back(CallEvent::Ended {
                call,
                reason: "the parent cancelled the INVITE".into(),
                said: None,
            });
        }
    }

    fn on_info(&mut self, req: &Request, now: Instant) {
        let Some(call) = req.call_id().and_then(|c| self.calls.find(c)) else {
            return self.reply(req, 481, now);
        };
        self.reply(req, 200, now);
        self.calls.events.push_back(CallEvent::Info {
            call,
            body: req.body.clone(),
        });
    }

    /// A MediaStatus notify from a registrant: the playback call it names
    /// (by Call-ID when the MESSAGE is in the dialog), or else the playback
    /// calls we placed through it for that channel, reached the end of the
    /// recording. Live calls of the channel are never touched.
    pub(super) fn on_media_status(&mut self, sender: GbId, channel: &str, call_id: Option<&str>) {
        if let Some(call) = call_id.and_then(|c| self.calls.find(c)) {
            if self.calls.dialogs.get(&call).is_some_and(|d| d.playback) {
                self.calls.events.push_back(CallEvent::MediaEnded { call });
                return;
            }
        }
        let ended = self.calls.matching(|d| {
            d.side == Side::Outgoing
                && d.playback
                && d.via == Some(sender)
                && d.channel.as_str() == channel
        });
        for call in ended {
            self.calls.events.push_back(CallEvent::MediaEnded { call });
        }
    }

    /// Calls placed toward a registrant that went offline end now. BYE
    /// still goes out (best effort) so a device that only missed keepalives
    /// stops sending to a port that may be given to another stream.
    pub(super) fn drop_calls_via(&mut self, source: GbId, now: Instant) {
        let gone = self
            .calls
            .matching(|d| d.side == Side::Outgoing && d.via == Some(source));
        self.end_calls(gone, &format!("{source} went offline"), now);
    }

    /// The parent is gone (its registration lapsed, or it restarted): the
    /// calls it placed end, with BYE in case it is still there, so their
    /// streams below do not run for nobody.
    pub(super) fn drop_incoming_calls_from(&mut self, parent: GbId, why: &str, now: Instant) {
        let gone = self
            .calls
            .matching(|d| d.side == Side::Incoming && d.via == Some(parent));
        self.end_calls(gone, why, now);
    }

    /// Hang up `calls` (best effort) and tell the media plane why they ended.
    fn end_calls(&mut self, calls: Vec<CallId>, reason: &str, now: Instant) {
        for call in calls {
            self.hangup(call, now);
            self.calls.remove(call);
            self.calls.events.push_back(CallEvent::Ended {
                call,
                reason: reason.to_owned(),
                said: None,
            });
        }
    }

    /// Hang up every call (graceful stop).
    pub(super) fn hangup_all(&mut self, now: Instant) {
        let all: Vec<CallId> = self.calls.dialogs.keys().copied().collect();
        for call in all {
            self.hangup(call, now);
        }
    }

    /// Incoming calls the media plane never answered are refused after
    /// `timeout` (their transaction would end anyway).
    pub(super) fn sweep_calls(&mut self, now: Instant, timeout: std::time::Duration) {
        let stale = self.calls.matching(|d| {
            !d.established && d.invite.is_some() && now.duration_since(d.placed_at) > timeout
        });
        for call in stale {
            let side = self.calls.dialogs.get(&call).map(|d| d.side);
            match side {
                Some(Side::Incoming) => {
                    self.reject_call(call, 408, "no media within the timeout", now);
                    self.calls.events.push_back(CallEvent::Ended {
                        call,
                        reason: "not answered in time".into(),
                        said: None,
                    });
                }
                _ => self.hangup(call, now),
            }
        }
    }
}

/// Why we could not send media where an offer asks, if we could not: we
/// send to `c=`:`m=` over UDP, and connect there over TCP unless the
/// offerer connects to us (`a=setup:active`, where its port means nothing).
fn unreachable_media(offer: &GbSdp) -> Option<String> {
    use crate::media::sdp::{MediaTransport, Setup};
    let we_send_there = match offer.transport {
        MediaTransport::Udp => true,
        MediaTransport::Tcp => offer.setup != Some(Setup::Active),
        // Sent on the QUIC link itself.
        MediaTransport::Quic => false,
    };
    if !we_send_there {
        return None;
    }
    if offer.media_port == 0 {
        return Some("m= port 0: no media destination".to_owned());
    }
    match offer.conn_addr.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
            Some(format!("c= address {ip} cannot receive a unicast stream"))
        }
        Ok(std::net::IpAddr::V4(v4)) if v4.is_broadcast() => {
            Some(format!("c= address {v4} cannot receive a unicast stream"))
        }
        Ok(_) => None,
        Err(_) => Some(format!(
            "c= address {:?} is not an IP address",
            offer.conn_addr
        )),
    }
}

/// The first Reason of `req` with a text, the SIP protocol's first. A
/// malformed Reason is ignored: the BYE ends the call all the same.
fn said_reason(req: &Request) -> Option<Reason> {
    let all = match reasons(&req.headers) {
        Ok(all) => all,
        Err(e) => {
            tracing::debug!(error = %e, "BYE with an unreadable Reason");
            return None;
        }
    };
    let mut with_text = all.into_iter().filter(|r| r.text.is_some());
    let first = with_text.next()?;
    if first.protocol.eq_ignore_ascii_case("SIP") {
        return Some(first);
    }
    Some(
        with_text
            .find(|r| r.protocol.eq_ignore_ascii_case("SIP"))
            .unwrap_or(first),
    )
}

fn tag_of(header: &str) -> String {
    NameAddr::parse(header)
        .ok()
        .and_then(|na| na.tag().map(str::to_owned))
        .unwrap_or_default()
}

fn user_of_header(h: Option<&str>) -> Option<GbId> {
    GbId::parse(&NameAddr::parse(h?).ok()?.uri.user?).ok()
}

fn kind_label(k: &CallKind) -> &'static str {
    match k {
        CallKind::Live => "live",
        CallKind::Playback { .. } => "playback",
    }
}
