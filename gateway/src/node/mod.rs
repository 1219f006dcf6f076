//! One gbgate node as a sans-IO state machine: SIP messages and `now` in,
//! SIP messages and a wake-up time out. It ties the registrar, the catalog,
//! the uplink and the transaction layer together; [`crate::runtime`] drives
//! it from sockets and timers.

mod call;
mod control;
mod device_subscriptions;
mod events;
mod newcomers;
mod outbox;
mod query;
mod registration_log;
mod sharing;
mod subscriptions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use topology::{Credentials, GbId};

use crate::catalog::Catalog;
use crate::gb::catalog::CatalogAssembly;
use crate::gb::charset::Charset;
use crate::gb::manscdp::{self, CatalogItem, DeviceInfo, DeviceStatus, Manscdp, SimpleQuery};
use crate::registry::{
    AuthDecision, OfflineReason, RegisterOutcome, RegistrantKind, Registrar, Registry, Touch,
};
use crate::settings::Settings;
use crate::sip::agent::{Agent, Target, MANSCDP, USER_AGENT};
use crate::sip::auth::NonceMinter;
use crate::sip::header::{expires, NameAddr};
use crate::sip::message::{
    salvage_for_error_response, Message, Method, ParseError, Request, Response,
};
use crate::sip::transaction::{ClientEvent, Incoming, TransactionLayer};
use crate::sip::{Peer, Transmit, Transport};
use crate::uplink::{Uplink, UplinkConfig, UplinkEvent, UplinkRequest};
use policy::{Action, Subject};

use outbox::Outbox;

pub use call::{CallError, CallEvent, CallFailure, CallId, CallKind, MANSRTSP, ON_BEHALF_OF, SDP};
pub use control::{ControlLocks, Held};
pub use events::{DeviceEvent, DeviceEventKind};
pub use query::{ControlOutcome, DeviceQuery, QueryAnswer, QueryAnswered, QueryError, Ticket};
pub use sharing::Output;
pub use subscriptions::SubscriptionKind;

/// Times an unanswered catalog MESSAGE is sent again (each after its own
/// Timer F) before it is dropped; by then keepalives have found the link dead.
const OUTBOX_RETRIES: u8 = 3;
/// New registrants' questions wait while more messages than this are
/// queued for the node: registrations under way come first.
const NEWCOMER_QUIET_BACKLOG: usize = 64;
/// How long a queue toward a busy peer waits unless told (Retry-After).
const BUSY_PAUSE: Duration = Duration::from_secs(1);
/// The longest a busy peer's Retry-After holds its queue.
const MAX_BUSY_PAUSE: Duration = Duration::from_secs(60);

/// Forwarded DeviceInfo/DeviceStatus queries awaiting answers, at most.
const MAX_FORWARDS: usize = 10_000;

/// What the node learns from the network edge.
#[derive(Debug)]
pub enum Inbound {
    /// A parsed SIP message.
    Message {
        /// Where it came from.
        peer: Peer,
        /// The message.
        message: Message,
    },
    /// The transport could not reach a peer (TCP connect or write failed,
    /// a QUIC link went down).
    Unreachable {
        /// The peer.
        peer: Peer,
    },
    /// A link to a parent came up (a QUIC connection was established):
    /// uplinks over it register at once.
    LinkUp {
        /// The parent as the link names it.
        peer: Peer,
    },
    /// A peer tried to open a QUIC link and was refused (bad or foreign
    /// certificate, not a child of this node). Audited.
    LinkRefused {
        /// Where the attempt came from.
        from: std::net::SocketAddr,
        /// The ID its certificate named, when it named one.
        claimed: Option<GbId>,
        /// Why it was refused.
        reason: String,
    },
    /// Bytes that failed to parse as SIP.
    Malformed {
        /// Where they came from.
        peer: Peer,
        /// The raw message (for a best-effort 400).
        raw: Bytes,
        /// Why parsing failed.
        error: ParseError,
    },
}

/// What a client transaction of the node is for.
#[derive(Debug, Clone)]
pub enum Token {
    /// An uplink REGISTER or keepalive, toward the parent with this ID.
    Uplink(GbId, UplinkRequest),
    /// A queued MESSAGE toward a peer (catalog parts, forwarded answers),
    /// with its body and attempt number so a lost one is sent again, and
    /// whether it pushes catalog changes (a parent may refuse those).
    Outbox(GbId, Bytes, u8, bool),
    /// A query we sent to a registrant.
    Query(GbId),
    /// A DeviceControl we sent to a registrant, with our SN.
    Control(GbId, u32),
    /// A NOTIFY in a parent's subscription (by its Call-ID).
    Notify(String),
    /// A question to a new registrant, sent through the paced queue.
    Newcomer(GbId),
    /// Our SUBSCRIBE to a device (by its Call-ID), and whether it went
    /// through the newcomer queue.
    DeviceSubscribe(String, bool),
    /// The INVITE of a call we placed.
    Call(CallId),
    /// A request inside a call's dialog (BYE, INFO, CANCEL) or about it.
    InDialog(CallId),
}

/// The node's static identity: who it is, its parent and children.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This node's ID.
    pub id: GbId,
    /// Display name.
    pub name: String,
    /// city, county, town or village.
    pub level: String,
    /// Address we advertise (the SIP listen address).
    pub addr: std::net::SocketAddr,
    /// The parent, if any, with its address and link transport.
    pub parent: Option<(GbId, Peer)>,
    /// Third-party upper platforms this node also registers to.
    pub upper: Vec<topology::UpperPlatform>,
    /// Child nodes named in the topology: ID → name.
    pub children: HashMap<GbId, String>,
}

/// A query forwarded below, waiting for its answer.
#[derive(Debug)]
struct Forward {
    requester: GbId,
    requester_sn: u32,
    at: Instant,
}

/// A Catalog query we sent, and its answer so far.
#[derive(Debug)]
struct CatalogQuery {
    sn: u32,
    answer: Option<CatalogAssembly>,
}

/// The node.
pub struct Node {
    identity: Identity,
    agent: Agent,
    settings: Settings,
    credentials: Arc<Credentials>,
    tx: TransactionLayer<Token>,
    registrar: Registrar,
    /// Keys the REGISTER fingerprints (random per process, so nobody can
    /// make one request's fingerprint match another's).
    fingerprint_key: std::collections::hash_map::RandomState,
    registry: Registry,
    catalog: Catalog,
    /// The topology's parent first (if any), then each upper platform.
    uplinks: Vec<Uplink>,
    /// The catalog query outstanding per source (one at a time: a newer
    /// one supersedes) and the answer assembled so far.
    catalog_queries: HashMap<GbId, CatalogQuery>,
    /// Catalog and DeviceInfo questions for new registrants, paced.
    newcomers: newcomers::NewcomerQueries,
    pending_up: Vec<CatalogItem>,
    flush_at: Option<Instant>,
    outboxes: HashMap<GbId, Outbox>,
    /// The earliest end of a busy peer's pause: its queue goes on then.
    outbox_wake: Option<Instant>,
    forwards: HashMap<(GbId, u32), Forward>,
    sn: u32,
    cseq: u32,
    next_sweep: Instant,
    /// One line per new registrant while they are few, a summary in a storm.
    registration_log: registration_log::RegistrationLog,
    transmits: Vec<Transmit>,
    shutting_down: bool,
    /// Messages waiting behind the one being handled (the runtime's inbound
    /// queue), and whether that is more than the node keeps up with.
    backlog: usize,
    overloaded: bool,
    calls: call::Calls,
    queries: query::Queries,
    /// PTZ control locks of the cameras this node is nearest to.
    locks: ControlLocks,
    /// Recent alarms and positions from below.
    events: events::EventLog,
    /// Subscriptions parents hold here.
    subscriptions: subscriptions::Subscriptions,
    /// Our subscriptions to devices registered here.
    device_subscriptions: device_subscriptions::DeviceSubscriptions,
    /// The sharing policy every request that crosses the node passes.
    gate: crate::gate::Gate,
    /// Audit records and other outputs, in order.
    outputs: std::collections::VecDeque<Output>,
    /// A clock reading taken at construction: wall time is derived from
    /// `now`, so tests in virtual time see policy expiries happen.
    wall_base: (Instant, std::time::SystemTime),
    /// False while the audit store refuses records.
    audit_healthy: bool,
    /// Whether channel status changes leave as `Output::Status`.
    status_history: bool,
    /// When the next rule of the policy in force expires.
    policy_expiry: Option<Instant>,
    /// Wall time the catalog each parent sees was last worked out at.
    policy_seen_at: std::time::SystemTime,
    /// This node's latest committed audit head, as the runtime reported it.
    audit_head: Option<policy::audit::Head>,
    /// The last audit head each child node reported (children are named
    /// in the topology, so this stays small).
    child_heads: HashMap<GbId, policy::audit::Head>,
}

/// A method as a metric label: unknown methods share one label so a peer
/// cannot create series without bound.
fn method_label(m: &Method) -> &'static str {
    m.standard_name().unwrap_or("OTHER")
}

/// True when a request claiming to come from the parent `pid` (linked as
/// `ppeer`) really came over its link: the parent may answer over its own
/// connection (TCP), but never from another host; over UDP it must be its
/// own socket; a parent linked by identity never speaks without it.
fn genuine_parent(pid: GbId, ppeer: Peer, peer: Peer) -> bool {
    match peer.proves(&pid) {
        Some(proved) => proved,
        None => {
            ppeer.identity.is_none()
                && peer.addr.ip() == ppeer.addr.ip()
                && (peer.transport.is_reliable() || peer.addr.port() == ppeer.addr.port())
        }
    }
}

fn user_of(header: Option<&str>) -> Option<String> {
    user_in(header?).map(str::to_owned)
}

/// The user part of a name-addr's URI, read in place.
fn user_in(header: &str) -> Option<&str> {
    crate::sip::header::NameAddrRef::parse(header)
        .ok()?
        .uri
        .user
}

/// The body types each method is read with; the first is the one we
/// announce in `Accept`. MANSCDP bodies also arrive labelled plain XML.
fn accepted_types(method: &Method) -> Option<&'static [&'static str]> {
    Some(match method {
        Method::Message | Method::Subscribe | Method::Notify => {
            &[MANSCDP, "application/xml", "text/xml"]
        }
        Method::Invite => &[SDP],
        Method::Info => &[MANSRTSP],
        _ => return None,
    })
}

/// For a request whose body we would read but cannot (its Content-Type is
/// not one we take for its method), the `Accept` value of the 415 answer
/// (RFC 3261 §21.4.13). Bodies of methods we never read are ignored.
fn unsupported_body(req: &Request) -> Option<String> {
    if req.body.is_empty() {
        return None;
    }
    let accepted = accepted_types(&req.method)?;
    let media_type = req
        .headers
        .get("Content-Type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if accepted.iter().any(|t| t.eq_ignore_ascii_case(media_type)) {
        None
    } else {
        accepted.first().map(|t| (*t).to_owned())
    }
}

/// Why a REGISTER names no registrant yet.
enum RegistrantId {
    /// To and From hold no ID and there is no Authorization: its digest
    /// username may, so challenge.
    AskDigest,
    /// Nothing in it is a 20-digit ID.
    None,
}

/// The ID a REGISTER registers: To's user when it is a 20-digit ID, else
/// From's, else the digest username. Device libraries put the realm or the
/// domain in To (`sip:3402000000@3402000000`), which RFC 3261 allows (To is
/// the address of record, not necessarily the device's own ID).
fn registrant_id(req: &Request) -> Result<GbId, RegistrantId> {
    let id_in = |name: &str| {
        req.headers
            .get(name)
            .and_then(user_in)
            .and_then(|u| GbId::parse(u).ok())
    };
    if let Some(id) = id_in("To").or_else(|| id_in("From")) {
        return Ok(id);
    }
    let Some(auth) = req.headers.get("Authorization") else {
        return Err(RegistrantId::AskDigest);
    };
    crate::sip::auth::DigestCredentials::parse(auth)
        .ok()
        .and_then(|c| GbId::parse(&c.username).ok())
        .ok_or(RegistrantId::None)
}

/// The answer to a DeviceInfo (`info`) or DeviceStatus query for an ID
/// that is unknown here, offline, or not shared with the asker: the same
/// in every case, so the answer does not tell them apart.
fn unknown_answer(q: SimpleQuery, info: bool) -> Manscdp {
    if info {
        Manscdp::DeviceInfoResponse(DeviceInfo {
            sn: q.sn,
            device_id: q.device_id,
            device_name: None,
            manufacturer: None,
            model: None,
            firmware: None,
            channel: None,
            result: "ERROR".into(),
        })
    } else {
        Manscdp::DeviceStatusResponse(DeviceStatus {
            sn: q.sn,
            device_id: q.device_id,
            result: "ERROR".into(),
            online: Some("OFFLINE".into()),
            status: None,
            encode: None,
            record: None,
            device_time: None,
        })
    }
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The local UTC offset, read once while the process is single-threaded
/// ([`set_local_offset`]); the `time` crate cannot read it safely later.
static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// Record the local UTC offset for `Date` headers and device times. Call
/// from `main` before starting threads; UTC is used otherwise.
pub fn set_local_offset(offset: time::UtcOffset) {
    let _ = LOCAL_OFFSET.set(offset);
}

/// GB/T 28181 `Date` header: local time, no zone, milliseconds (device clock sync).
fn gb_date() -> String {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC);
    let now = time::OffsetDateTime::now_utc().to_offset(offset);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
    );
    now.format(&fmt).unwrap_or_default()
}

impl Node {
    /// A node with its identity, settings and credentials; it starts
    /// registering to its parent at once.
    pub fn new(
        identity: Identity,
        settings: Settings,
        credentials: Arc<Credentials>,
        now: Instant,
    ) -> Self {
        let agent = Agent {
            id: identity.id,
            addr: identity.addr,
        };
        let parent = identity.parent.map(|(pid, peer)| {
            UplinkConfig::parent(
                pid,
                "parent".to_owned(),
                peer,
                credentials.uplink_password().map(str::to_owned),
                &settings,
            )
        });
        let uppers = identity.upper.iter().map(|p| {
            UplinkConfig::upper(
                p,
                credentials.upper_password(&p.id).map(str::to_owned),
                &settings,
            )
        });
        let uplinks = parent
            .into_iter()
            .chain(uppers)
            .map(|c| Uplink::new(c, now))
            .collect();
        let registrar = Registrar::new(
            identity.id.domain().to_owned(),
            NonceMinter::random(),
            &settings,
        );
        Node {
            catalog: Catalog::with_limits(identity.id, settings.catalog_limits),
            agent,
            tx: TransactionLayer::new(settings.sip_timers, settings.max_transactions),
            registrar,
            fingerprint_key: std::collections::hash_map::RandomState::new(),
            registry: Registry::default(),
            uplinks,
            catalog_queries: HashMap::new(),
            newcomers: newcomers::NewcomerQueries::new(settings.newcomer_query_window),
            pending_up: Vec::new(),
            flush_at: None,
            outboxes: HashMap::new(),
            outbox_wake: None,
            forwards: HashMap::new(),
            sn: 0,
            cseq: 0,
            next_sweep: now,
            registration_log: registration_log::RegistrationLog::new(now),
            transmits: Vec::new(),
            shutting_down: false,
            backlog: 0,
            overloaded: false,
            calls: call::Calls::default(),
            queries: query::Queries::default(),
            locks: ControlLocks::default(),
            events: events::EventLog::default(),
            subscriptions: subscriptions::Subscriptions::default(),
            device_subscriptions: device_subscriptions::DeviceSubscriptions::default(),
            gate: crate::gate::Gate::default(),
            outputs: std::collections::VecDeque::new(),
            wall_base: (now, std::time::SystemTime::now()),
            audit_healthy: true,
            status_history: false,
            policy_expiry: None,
            policy_seen_at: std::time::SystemTime::UNIX_EPOCH,
            audit_head: None,
            child_heads: HashMap::new(),
            identity,
            settings,
            credentials,
        }
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The federated catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The registration table.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The link to the topology's parent, if this node has one.
    pub fn uplink(&self) -> Option<&Uplink> {
        self.uplinks.first().filter(|u| !u.is_upper())
    }

    /// Every link upward: the topology's parent and the upper platforms.
    pub fn uplinks(&self) -> &[Uplink] {
        &self.uplinks
    }

    fn uplink_to(&self, id: GbId) -> Option<&Uplink> {
        self.uplinks.iter().find(|u| u.parent() == id)
    }

    fn uplink_to_mut(&mut self, id: GbId) -> Option<&mut Uplink> {
        self.uplinks.iter_mut().find(|u| u.parent() == id)
    }

    /// Settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Open client and server transactions, and retransmissions so far.
    pub fn transaction_stats(&self) -> (usize, usize, u64) {
        let (c, s) = self.tx.open();
        (c, s, self.tx.retransmissions())
    }

    fn next_sn(&mut self) -> u32 {
        self.sn = self.sn.wrapping_add(1);
        self.sn
    }

    fn next_cseq(&mut self) -> u32 {
        self.cseq = self.cseq.wrapping_add(1);
        self.cseq
    }

    /// Move every message to send into `out`.
    pub fn drain_transmits(&mut self, out: &mut Vec<Transmit>) {
        // Stateless answers and ACKs first: they answer what just came in,
        // while the transaction layer's sends are requests it caused (the
        // Catalog query after a REGISTER's 200, the BYE after an ACK), and a
        // device must not see the query before its 200.
        out.append(&mut self.transmits);
        self.tx.drain_transmits(out);
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_sweep);
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.tx.poll_timeout());
        min(self.flush_at);
        min(self.outbox_wake);
        min(self.policy_expiry);
        if !self.shutting_down {
            for u in &self.uplinks {
                min(u.next_wake());
            }
        }
        t
    }

    // ---------------------------------------------------------------- input

    /// Feed one inbound message or malformed datagram.
    pub fn handle_inbound(&mut self, inbound: Inbound, now: Instant) {
        match inbound {
            Inbound::Unreachable { peer } => {
                tracing::warn!(%peer, "peer unreachable; failing its transactions");
                self.tx.fail_peer(peer);
                self.process_client_events(now);
                if peer.transport == Transport::Quic {
                    self.quic_link_down(peer, now);
                }
            }
            Inbound::LinkUp { peer } => {
                for parent in self.uplinks_over(peer) {
                    let ev = self.uplink_to_mut(parent).and_then(|u| u.link_up(now));
                    self.on_uplink_event(parent, ev, now);
                }
            }
            Inbound::LinkRefused {
                from,
                claimed,
                reason,
            } => self.link_refused(from, claimed, reason),
            Inbound::Malformed { peer, raw, error } => {
                metrics::counter!("gbgate_sip_parse_errors_total").increment(1);
                tracing::warn!(%peer, %error, bytes = raw.len(), "malformed SIP message");
                if let Some(headers) = salvage_for_error_response(&raw) {
                    let mut r = Response::new(400);
                    // The reason phrase names the fault too: many tools show
                    // only the status line.
                    let why = error.to_string().replace('"', "'");
                    r.reason = format!(
                        "Bad Request ({})",
                        why.chars().take(120).collect::<String>()
                    );
                    r.headers = headers;
                    r.headers.push("Warning", format!("399 gbgate \"{why}\""));
                    r.headers.push("User-Agent", USER_AGENT);
                    self.transmits.push(Transmit {
                        peer,
                        data: r.to_bytes(),
                    });
                }
            }
            Inbound::Message {
                peer,
                message: Message::Request(req),
            } => self.handle_request(req, peer, now),
            Inbound::Message {
                peer,
                message: Message::Response(resp),
            } => {
                metrics::counter!("gbgate_sip_responses_received_total",
                    "method" => resp.cseq().map_or("NONE", |c| method_label(&c.method)),
                    "code" => resp.status.to_string())
                .increment(1);
                let stray_2xx =
                    resp.is_success() && resp.cseq().is_some_and(|c| c.method == Method::Invite);
                let copy = stray_2xx.then(|| resp.clone());
                if self.tx.handle_response(resp, now) {
                    self.process_client_events(now);
                } else if let Some(resp) = copy {
                    self.on_stray_invite_2xx(&resp, peer, now);
                }
            }
        }
    }

    /// Count a response to `req` and sign it, however it is sent.
    fn finish_response(req: &Request, resp: &mut Response) {
        metrics::counter!("gbgate_sip_responses_sent_total",
            "method" => method_label(&req.method), "code" => resp.status.to_string())
        .increment(1);
        resp.headers.push("User-Agent", USER_AGENT);
    }

    fn respond(&mut self, req: &Request, mut resp: Response, now: Instant) {
        Self::finish_response(req, &mut resp);
        if let Err(e) = self.tx.send_response(req, resp, now) {
            tracing::debug!(error = %e, "response outside a transaction dropped");
        }
    }

    /// Answer a request that has no server transaction (REGISTER).
    fn respond_stateless(&mut self, req: &Request, peer: Peer, mut resp: Response) {
        Self::finish_response(req, &mut resp);
        self.transmits.push(Transmit {
            peer,
            data: resp.to_bytes(),
        });
    }

    fn reply_stateless(&mut self, req: &Request, peer: Peer, status: u16) {
        let resp = Response::to_request(req, status, Some(&crate::sip::header::new_tag()));
        self.respond_stateless(req, peer, resp);
    }

    fn reply(&mut self, req: &Request, status: u16, now: Instant) {
        let resp = Response::to_request(req, status, Some(&crate::sip::header::new_tag()));
        self.respond(req, resp, now);
    }

    fn handle_request(&mut self, mut req: Request, peer: Peer, now: Instant) {
        crate::sip::header::stamp_source(&mut req.headers, peer.addr);
        metrics::counter!("gbgate_sip_requests_received_total", "method" => method_label(&req.method))
            .increment(1);
        if req.method == Method::Ack {
            return self.on_ack(&req, now);
        }
        // REGISTER is answered statelessly (RFC 3261 §8.2.7), as
        // registrars under storm load do: no transaction per REGISTER to
        // keep for 64·T1. A retransmission is judged again, and the replay
        // ledger tells it from a replay (registry::replay).
        let stateless = req.method == Method::Register;
        let admitted = if stateless {
            Ok(Incoming::New)
        } else {
            self.tx.handle_request(&req, peer, now)
        };
        match admitted {
            Ok(Incoming::New) => {}
            Ok(Incoming::Retransmission) => return,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "request refused by the transaction layer");
                // Stateless answer: no transaction could be created.
                let status = if matches!(e, crate::sip::transaction::TransactionError::TooMany(_)) {
                    503
                } else {
                    400
                };
                let r = Response::to_request(&req, status, None);
                self.transmits.push(Transmit {
                    peer,
                    data: r.to_bytes(),
                });
                return;
            }
        }
        if let Some(accept) = unsupported_body(&req) {
            let mut r = Response::to_request(&req, 415, Some(&crate::sip::header::new_tag()));
            r.headers.push("Accept", accept);
            return if stateless {
                self.respond_stateless(&req, peer, r)
            } else {
                self.respond(&req, r, now)
            };
        }
        match req.method {
            Method::Register => self.handle_register(&req, peer, now),
            Method::Message => self.handle_message(&req, peer, now),
            Method::Options => self.reply(&req, 200, now),
            Method::Subscribe => self.handle_subscribe(&req, peer, now),
            Method::Notify => match self.registrant_sender(&req) {
                Some(device) => {
                    self.device_notify_state(device, &req, now);
                    // Read as the device's MESSAGE is (answered 200 there).
                    self.handle_message(&req, peer, now);
                }
                None if self.handle_call_request(&req, peer, now) => {}
                None => self.reply(&req, 501, now),
            },
            _ if self.handle_call_request(&req, peer, now) => {}
            _ => self.reply(&req, 501, now),
        }
    }

    // ----------------------------------------------------------- REGISTER

    /// The registrant of ours a request's From names (a NOTIFY in one of
    /// our subscriptions, or one an old device sends unasked).
    fn registrant_sender(&self, req: &Request) -> Option<GbId> {
        user_of(req.headers.get("From"))
            .and_then(|u| GbId::parse(&u).ok())
            .filter(|id| self.registry.get(id).is_some())
    }

    fn handle_register(&mut self, req: &Request, peer: Peer, now: Instant) {
        // Overloaded: turn new attempts away cheaply (no digest work, no
        // nonce) and finish the ones whose second leg is already here.
        if self.overloaded && req.headers.get("Authorization").is_none() && peer.identity.is_none()
        {
            return self.defer_register(req, peer);
        }
        let id = match registrant_id(req) {
            Ok(id) => id,
            Err(RegistrantId::AskDigest) => {
                // Only the digest username can name this registrant: ask
                // for it (the challenge does not depend on who asks).
                let decision =
                    self.registrar
                        .decide(peer.addr.ip(), "", None, None, 0, now, unix_time());
                if let AuthDecision::Challenge(c) = decision {
                    let mut r =
                        Response::to_request(req, 401, Some(&crate::sip::header::new_tag()));
                    r.headers.push("WWW-Authenticate", c.to_header_value());
                    return self.respond_stateless(req, peer, r);
                }
                return self.reply_stateless(req, peer, 403);
            }
            Err(RegistrantId::None) => {
                let mut r = Response::to_request(req, 400, None);
                r.reason = "No 20-digit GB/T 28181 ID in To, From or the digest username".into();
                return self.respond_stateless(req, peer, r);
            }
        };
        if self.registry.get(&id).is_none()
            && self.registry.len() >= self.settings.max_registrations
        {
            tracing::warn!(%id, limit = self.settings.max_registrations, "registration limit reached");
            return self.reply_stateless(req, peer, 503);
        }
        let decision = match peer.proves(&id) {
            // The QUIC link proved who this is by its certificate: no
            // digest round trip, and no password shared between our nodes.
            Some(true) => AuthDecision::Accept,
            Some(false) => AuthDecision::Forbidden("the link's certificate names another node"),
            None => {
                let password = self.credentials.password_for(&id);
                let fingerprint = self.request_fingerprint(req, peer);
                self.registrar.decide(
                    peer.addr.ip(),
                    id.as_str(),
                    req.headers.get("Authorization"),
                    password,
                    fingerprint,
                    now,
                    unix_time(),
                )
            }
        };
        match decision {
            AuthDecision::Challenge(c) => {
                let mut r = Response::to_request(req, 401, Some(&crate::sip::header::new_tag()));
                r.headers.push("WWW-Authenticate", c.to_header_value());
                self.respond_stateless(req, peer, r);
            }
            AuthDecision::Forbidden(reason) => {
                metrics::counter!("gbgate_register_rejected_total").increment(1);
                tracing::warn!(%id, %peer, reason, "REGISTER refused");
                // One answer for every failure: an unknown ID, a wrong
                // password and a lock-out look alike on the wire, so IDs
                // cannot be enumerated. The reason stays in our log.
                let mut r = Response::to_request(req, 403, Some(&crate::sip::header::new_tag()));
                r.reason = "Forbidden".into();
                r.headers
                    .push("Warning", "399 gbgate \"authentication failed\"");
                self.respond_stateless(req, peer, r);
            }
            AuthDecision::Accept => self.accept_register(req, id, peer, now),
        }
    }

    /// How many messages wait behind the ones being handled now; the
    /// runtime tells the node before each batch. Above
    /// [`Settings::overload_backlog`] new registrations are deferred.
    pub fn set_backlog(&mut self, queued: usize) {
        self.backlog = queued;
        let over = queued > self.settings.overload_backlog;
        if over != self.overloaded {
            self.overloaded = over;
            if over {
                tracing::warn!(queued, "overloaded: new registrations are answered 503 with Retry-After until the backlog clears");
            } else {
                tracing::info!(queued, "backlog cleared: taking new registrations again");
            }
        }
    }

    /// Answer a new REGISTER 503 with a Retry-After of 10–40 s, spread by
    /// the request's fingerprint so deferred devices do not all return in
    /// the same second.
    fn defer_register(&mut self, req: &Request, peer: Peer) {
        metrics::counter!("gbgate_register_deferred_total").increment(1);
        let spread = self.request_fingerprint(req, peer) % 31;
        let mut r = Response::to_request(req, 503, Some(&crate::sip::header::new_tag()));
        r.headers.push("Retry-After", (10 + spread).to_string());
        self.respond_stateless(req, peer, r);
    }

    /// What identifies one REGISTER request across its retransmissions:
    /// its Call-ID, CSeq number and source, under the process's key.
    fn request_fingerprint(&self, req: &Request, peer: Peer) -> u64 {
        use std::hash::BuildHasher as _;
        self.fingerprint_key.hash_one((
            req.call_id().unwrap_or_default(),
            req.cseq().map(|c| c.seq),
            peer.addr,
        ))
    }

    fn accept_register(&mut self, req: &Request, id: GbId, peer: Peer, now: Instant) {
        let requested = expires(&req.headers).unwrap_or(3600);
        let granted = u64::from(requested).min(self.settings.register_expires.as_secs());
        let mut r = Response::to_request(req, 200, Some(&crate::sip::header::new_tag()));
        if let Some(c) = req.headers.get("Contact") {
            // Echo the binding with the expiry we grant, so the device does
            // not keep believing a longer one it asked for.
            let contact = match NameAddr::parse(c) {
                Ok(mut na) => {
                    na.set_param("expires", Some(granted.to_string()));
                    na.to_string()
                }
                Err(_) => c.to_owned(),
            };
            r.headers.push("Contact", contact);
        }
        r.headers.push("Expires", granted.to_string());
        r.headers.push("Date", gb_date());
        self.respond_stateless(req, peer, r);
        if granted == 0 {
            if self.registry.unregister(&id).is_some() {
                tracing::info!(%id, "unregistered");
                let ev = self.catalog.set_source_online(id, false);
                self.drop_calls_via(id, now);
                self.emit(ev, now);
                self.forget_source(id);
            }
            return;
        }
        let kind = if self.identity.children.contains_key(&id) {
            RegistrantKind::ChildNode
        } else if id.is_platform() {
            RegistrantKind::Platform
        } else {
            RegistrantKind::Device
        };
        let contact = req.headers.get("Contact").unwrap_or_default().to_owned();
        // A QUIC registrant on a new connection: calls on the old one are dead.
        let moved_link = self
            .registry
            .get(&id)
            .is_some_and(|r| r.peer != peer && r.peer.transport == Transport::Quic);
        if moved_link {
            self.drop_calls_via(id, now);
        }
        let outcome = self.registry.register(
            id,
            kind,
            peer,
            contact,
            req.call_id().unwrap_or_default(),
            Duration::from_secs(granted),
            now,
        );
        if outcome == RegisterOutcome::Refreshed {
            self.registration_log.refreshed();
        }
        if outcome == RegisterOutcome::Fresh {
            if self.registration_log.fresh(now) {
                tracing::info!(%id, ?kind, %peer, expires = granted, "registered");
            } else {
                tracing::debug!(%id, ?kind, %peer, expires = granted, "registered");
            }
            let name = self.identity.children.get(&id).cloned().or_else(|| {
                NameAddr::parse(req.headers.get("From").unwrap_or_default())
                    .ok()?
                    .display
            });
            let item = CatalogItem {
                name,
                civil_code: Some(id.civil_code().to_string()),
                register_way: Some(1),
                parental: Some(1),
                ..CatalogItem::default()
            };
            let ev = self.catalog.upsert_registrant(id, item);
            self.emit(ev, now);
            if self.settings.query_new_registrants {
                self.newcomers.push(id, newcomers::Ask::Catalog);
                if kind == RegistrantKind::Device {
                    // Its name, maker and model for the catalog.
                    self.newcomers.push(id, newcomers::Ask::DeviceInfo);
                }
            }
            if kind != RegistrantKind::ChildNode {
                // A gbgate child pushes everything anyway.
                for k in self.settings.subscribe_devices.clone() {
                    self.newcomers.push(id, newcomers::Ask::Subscribe(k));
                }
            }
            self.ask_newcomers(now);
        }
    }

    /// The uplinks whose link is `peer`.
    fn uplinks_over(&self, peer: Peer) -> Vec<GbId> {
        self.uplinks
            .iter()
            .filter(|u| u.peer() == peer)
            .map(Uplink::parent)
            .collect()
    }

    /// A QUIC connection ended. Unlike a UDP device, a QUIC peer cannot be
    /// reached without its connection: a child on it is offline at once
    /// (its calls end, its channels go OFF until it redials and registers
    /// again), and an uplink over it is lost until the link is back.
    fn quic_link_down(&mut self, peer: Peer, now: Instant) {
        for parent in self.uplinks_over(peer) {
            let ev = self.uplink_to_mut(parent).and_then(|u| u.link_down(now));
            self.on_uplink_event(parent, ev, now);
        }
        let Some(id) = peer.identity else { return };
        if self.registry.get(&id).is_some_and(|r| r.peer == peer) {
            self.registry.unregister(&id);
            tracing::info!(%id, %peer, "QUIC link of a registrant closed; it is offline until it links again");
            let ev = self.catalog.set_source_online(id, false);
            self.drop_calls_via(id, now);
            self.emit(ev, now);
            self.forget_source(id);
        }
    }

    /// Drop per-source state of a registrant that left.
    fn forget_source(&mut self, id: GbId) {
        self.catalog_queries.remove(&id);
        self.forwards.retain(|(src, _), _| *src != id);
        self.forget_queries_to(id);
        self.outboxes.remove(&id);
    }

    /// Set the gauges that need a scan of the registry. Called by the
    /// periodic sweep and by each `/metrics` scrape (so a scrape is exact),
    /// never per message: 10,000 registrations would otherwise cost 10,000
    /// scans of up to 10,000 entries.
    pub fn update_gauges(&self) {
        metrics::gauge!("gbgate_device_subscriptions")
            .set(self.device_subscriptions.active() as f64);
        metrics::gauge!("gbgate_registered_devices")
            .set(self.registry.count_online(RegistrantKind::Device) as f64);
        metrics::gauge!("gbgate_registered_child_nodes").set(
            (self.registry.count_online(RegistrantKind::ChildNode)
                + self.registry.count_online(RegistrantKind::Platform)) as f64,
        );
        metrics::gauge!("gbgate_catalog_entries").set(self.catalog.len() as f64);
    }

    /// Send the new registrants' questions the window and the load allow.
    fn ask_newcomers(&mut self, now: Instant) {
        let quiet = self.backlog <= NEWCOMER_QUIET_BACKLOG;
        while let Some((id, ask)) = self.newcomers.next(quiet) {
            let sent = match ask {
                _ if self.registry.get(&id).is_none() => false,
                newcomers::Ask::Subscribe(kind) => self.subscribe_device(id, kind, true, now),
                _ => self
                    .query_registrant(id, ask.cmd(), Token::Newcomer(id), now)
                    .is_some(),
            };
            if !sent {
                self.newcomers.done();
            }
        }
    }

    /// Send a MANSCDP query (Catalog, DeviceInfo, DeviceStatus) to a registrant.
    fn query_registrant(&mut self, id: GbId, cmd: &str, token: Token, now: Instant) -> Option<u32> {
        let sn = self.next_sn();
        let q = SimpleQuery::new(sn, id.to_string());
        let msg = match cmd {
            "Catalog" => Manscdp::CatalogQuery(q),
            "DeviceInfo" => Manscdp::DeviceInfoQuery(q),
            _ => Manscdp::DeviceStatusQuery(q),
        };
        if cmd == "Catalog" {
            self.catalog_queries
                .insert(id, CatalogQuery { sn, answer: None });
        }
        self.send_to_registrant(id, &msg, token, now).then_some(sn)
    }

    fn send_to_registrant(&mut self, id: GbId, msg: &Manscdp, token: Token, now: Instant) -> bool {
        self.send_to_registrant_for(id, msg, token, None, now)
    }

    /// [`Self::send_to_registrant`], naming whom it is sent for (the
    /// `X-Gbgate-On-Behalf-Of` header a gbgate child audits and locks by).
    fn send_to_registrant_for(
        &mut self,
        id: GbId,
        msg: &Manscdp,
        token: Token,
        on_behalf_of: Option<&Subject>,
        now: Instant,
    ) -> bool {
        let Some(r) = self.registry.get(&id) else {
            return false;
        };
        let peer = r.peer;
        let host = peer.addr.to_string();
        let body = msg.to_body(r.charset);
        let cseq = self.next_cseq();
        let target = Target {
            id: id.as_str(),
            host,
            transport: peer.transport,
        };
        let mut req =
            self.agent
                .request(Method::Message, &target, cseq, None, Some((MANSCDP, body)));
        if let Some(who) = on_behalf_of {
            req.headers.push(ON_BEHALF_OF, who.to_string());
        }
        self.send(req, peer, token, now)
    }

    fn send(&mut self, req: Request, peer: Peer, token: Token, now: Instant) -> bool {
        metrics::counter!("gbgate_sip_requests_sent_total", "method" => method_label(&req.method))
            .increment(1);
        match self.tx.send_request(req, peer, token, now) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "could not send request");
                false
            }
        }
    }

    // ------------------------------------------------------------ MESSAGE

    fn handle_message(&mut self, req: &Request, peer: Peer, now: Instant) {
        let (body, charset) = match manscdp::parse(&req.body) {
            Ok(b) => b,
            Err(e) => {
                metrics::counter!("gbgate_manscdp_parse_errors_total").increment(1);
                tracing::warn!(%peer, error = %e, "bad MANSCDP body");
                let mut r = Response::to_request(req, 400, Some(&crate::sip::header::new_tag()));
                r.headers.push(
                    "Warning",
                    format!("399 gbgate \"{}\"", e.to_string().replace('"', "'")),
                );
                return self.respond(req, r, now);
            }
        };
        let sender = user_of(req.headers.get("From")).and_then(|u| GbId::parse(&u).ok());
        let parent = sender
            .and_then(|s| self.uplink_to(s))
            .map(|u| (u.parent(), u.peer()));
        if let Some((pid, ppeer)) = parent {
            {
                if !genuine_parent(pid, ppeer, peer) {
                    tracing::warn!(%peer, "MESSAGE claiming to be from the parent, from elsewhere");
                    return self.reply(req, 403, now);
                }
                self.reply(req, 200, now);
                if let Some(u) = self.uplink_to_mut(pid) {
                    u.set_charset(charset);
                }
                let on_behalf_of: Option<Subject> = req
                    .headers
                    .get(ON_BEHALF_OF)
                    .and_then(|v| v.trim().parse().ok());
                return self.handle_parent_message(pid, body, on_behalf_of, now);
            }
        }
        let Some(sender) = sender else {
            return self.reply(req, 400, now);
        };
        let keepalive = matches!(body, Manscdp::Keepalive(_));
        match self.registry.touch(&sender, peer, keepalive, now) {
            Touch::Unknown => {
                // Unknown: GB practice is 404, after which devices re-register.
                tracing::debug!(%sender, %peer, "MESSAGE from an unregistered peer");
                return self.reply(req, 404, now);
            }
            Touch::WrongSource => {
                // The same answer as for an unknown ID: it reveals nothing,
                // and a device that moved (NAT rebinding) re-registers.
                tracing::info!(%sender, %peer, "MESSAGE from another address than the registration; answering 404 so it re-registers from there");
                return self.reply(req, 404, now);
            }
            Touch::Alive { revived } => {
                self.reply(req, 200, now);
                self.registry.set_charset(&sender, charset);
                if revived {
                    tracing::info!(id = %sender, "back online");
                    let ev = self.catalog.set_source_online(sender, true);
                    self.emit(ev, now);
                    self.newcomers.push(sender, newcomers::Ask::Catalog);
                    self.ask_newcomers(now);
                }
            }
        }
        self.handle_registrant_message(sender, body, req.call_id(), now);
    }

    fn handle_registrant_message(
        &mut self,
        sender: GbId,
        body: Manscdp,
        call_id: Option<&str>,
        now: Instant,
    ) {
        let Some(body) = self.take_query_answer(sender, body, now) else {
            return;
        };
        match body {
            Manscdp::Keepalive(k) => {
                if let Some(head) = k.audit_head {
                    self.on_child_head(sender, head, now);
                }
            }
            Manscdp::CatalogResponse(list) => {
                let Some(q) = self
                    .catalog_queries
                    .get_mut(&sender)
                    .filter(|q| q.sn == list.sn)
                else {
                    // Only answers to our own queries may replace (and delete)
                    // what a source reported.
                    tracing::debug!(%sender, sn = list.sn, "catalog answer to no query of ours; ignored");
                    return;
                };
                let sum = list.sum_num;
                let complete = q
                    .answer
                    .get_or_insert_with(|| CatalogAssembly::new(sum, now))
                    .add(list, now);
                if complete {
                    if let Some(asm) = self.catalog_queries.remove(&sender).and_then(|q| q.answer) {
                        self.finish_catalog(sender, asm, true, now);
                    }
                }
            }
            Manscdp::CatalogNotify(list) => {
                let ev = self.catalog.apply_events(sender, list.items);
                self.emit(ev, now);
            }
            Manscdp::DeviceInfoResponse(mut info) => {
                if let Some(f) = self.forwards.remove(&(sender, info.sn)) {
                    info.sn = f.requester_sn;
                    self.answer_requester(f.requester, &Manscdp::DeviceInfoResponse(info), now);
                } else if info.device_id == sender.as_str() {
                    let ev = self.catalog.describe_registrant(
                        sender,
                        info.device_name,
                        info.manufacturer,
                        info.model,
                    );
                    self.emit(ev, now);
                }
            }
            Manscdp::DeviceStatusResponse(mut st) => {
                if let Some(f) = self.forwards.remove(&(sender, st.sn)) {
                    st.sn = f.requester_sn;
                    self.answer_requester(f.requester, &Manscdp::DeviceStatusResponse(st), now);
                }
            }
            Manscdp::Other {
                root: manscdp::Root::Notify,
                cmd_type,
                device_id,
                ..
            } if cmd_type == "MediaStatus" => self.on_media_status(sender, &device_id, call_id),
            Manscdp::AlarmNotify(alarm) => self.on_alarm(sender, alarm, now),
            Manscdp::MobilePosition(p) => self.on_position(sender, p, now),
            other => {
                tracing::debug!(%sender, cmd = other.cmd_type(), "MESSAGE from below not handled");
            }
        }
    }

    fn finish_catalog(&mut self, source: GbId, asm: CatalogAssembly, complete: bool, now: Instant) {
        let (got, sum) = (asm.received(), asm.sum_num());
        let items = asm.into_items();
        tracing::info!(%source, items = got, sum_num = sum, complete, "catalog received");
        let ev = self.catalog.replace_from(source, items, complete);
        self.emit(ev, now);
    }

    /// Where answers to the parent go, and in which charset.
    fn answer_requester(&mut self, requester: GbId, msg: &Manscdp, now: Instant) {
        if let Some(charset) = self.uplink_to(requester).map(Uplink::charset) {
            let body = msg.to_body(charset);
            self.enqueue_parent(requester, vec![body], now);
        } else {
            self.send_to_registrant(requester, msg, Token::Query(requester), now);
        }
    }

    fn handle_parent_message(
        &mut self,
        parent: GbId,
        body: Manscdp,
        on_behalf_of: Option<Subject>,
        now: Instant,
    ) {
        let Some(peer) = self.uplink_to(parent).map(Uplink::peer) else {
            return;
        };
        match body {
            Manscdp::CatalogQuery(q) => {
                if let Some(u) = self.uplink_to_mut(parent) {
                    u.note_catalog_query();
                }
                let total = self.catalog.len();
                let ids = self.shared_ids(parent, now);
                tracing::info!(%parent, sn = q.sn, items = ids.len(), total, "answering the parent's catalog query");
                self.audit_catalog_answer(parent, ids.len(), total, now);
                let charset = self
                    .uplink_to(parent)
                    .map_or(Charset::Gb2312, Uplink::charset);
                let budget = self.body_budget(parent, peer);
                let ob = self.outbox_for(parent, peer);
                // A repeated query supersedes the answer still queued.
                ob.drop_catalog_answers();
                ob.push_answer(q.sn, q.device_id, ids, budget, charset);
                self.pump(parent, now);
            }
            // What the parent may not see does not exist for it: answered
            // as an unknown ID is (ERROR, or an empty record list).
            Manscdp::DeviceInfoQuery(q)
                if !self.parent_may(parent, &q.device_id, Action::Catalog, now) =>
            {
                self.answer_requester(parent, &unknown_answer(q, true), now);
            }
            Manscdp::DeviceStatusQuery(q)
                if !self.parent_may(parent, &q.device_id, Action::Catalog, now) =>
            {
                self.answer_requester(parent, &unknown_answer(q, false), now);
            }
            Manscdp::RecordInfoQuery(q)
                if !self.parent_may(parent, &q.device_id, Action::Playback, now) =>
            {
                let empty = self.no_records(q.sn, q.device_id);
                self.answer_requester(parent, &Manscdp::RecordInfoResponse(empty), now);
            }
            Manscdp::DeviceInfoQuery(q) => {
                if q.device_id == self.identity.id.as_str() {
                    let info = Manscdp::DeviceInfoResponse(self.own_device_info(q.sn));
                    self.answer_requester(parent, &info, now);
                } else {
                    self.forward_query(parent, q, true, now);
                }
            }
            Manscdp::DeviceStatusQuery(q) => {
                if q.device_id == self.identity.id.as_str() {
                    let st = Manscdp::DeviceStatusResponse(self.own_device_status(q.sn));
                    self.answer_requester(parent, &st, now);
                } else {
                    self.forward_query(parent, q, false, now);
                }
            }
            Manscdp::RecordInfoQuery(q) => self.forward_record_query(parent, q, now),
            Manscdp::DeviceControl(c) => self.parent_control(parent, on_behalf_of, c, now),
            q @ (Manscdp::PresetQuery(_) | Manscdp::ConfigQuery(_)) => {
                self.parent_ptz_query(parent, q, now)
            }
            other => {
                tracing::debug!(
                    cmd = other.cmd_type(),
                    "MESSAGE from the parent not handled"
                );
            }
        }
    }

    /// Forward a DeviceInfo/DeviceStatus query for something below to the
    /// registrant that owns it; its answer comes back with the parent's SN.
    fn forward_query(&mut self, requester: GbId, q: SimpleQuery, info: bool, now: Instant) {
        let owner = GbId::parse(&q.device_id)
            .ok()
            .filter(|id| self.registry.get(id).is_some())
            .or_else(|| self.catalog.source_of(&q.device_id));
        let Some(owner) = owner.filter(|o| self.registry.get(o).is_some_and(|r| r.online)) else {
            return self.answer_requester(requester, &unknown_answer(q, info), now);
        };
        if self.forwards.len() >= MAX_FORWARDS {
            tracing::warn!(
                limit = MAX_FORWARDS,
                "too many forwarded queries pending; refusing"
            );
            return;
        }
        let sn = self.next_sn();
        let fwd = SimpleQuery::new(sn, q.device_id);
        let msg = if info {
            Manscdp::DeviceInfoQuery(fwd)
        } else {
            Manscdp::DeviceStatusQuery(fwd)
        };
        if self.send_to_registrant(owner, &msg, Token::Query(owner), now) {
            self.forwards.insert(
                (owner, sn),
                Forward {
                    requester,
                    requester_sn: q.sn,
                    at: now,
                },
            );
        }
    }

    // ------------------------------------------------------------ upward

    /// Catalog changes to push to the parents (batched).
    fn emit(&mut self, events: Vec<CatalogItem>, now: Instant) {
        for r in self.catalog.take_refused() {
            metrics::counter!("gbgate_catalog_entries_refused_total").increment(r.entries as u64);
            tracing::warn!(source = %r.source, refused = r.entries, limit = r.limit, "catalog entries beyond the source's limit refused");
        }
        if events.is_empty() {
            return;
        }
        self.record_status(&events, now);
        if !self.uplinks.iter().any(Uplink::takes_changes) {
            // A parent re-queries the whole catalog when we register.
            return;
        }
        self.pending_up.extend(events);
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.settings.catalog_flush_delay);
        }
    }

    /// The cameras the intact probe looks at here: the online ones
    /// registered to this node itself (those behind a child node are that
    /// node's to look at).
    pub fn probe_candidates(&self) -> Vec<GbId> {
        let children = &self.identity.children;
        self.catalog
            .online_channels_from(|source| !children.contains_key(&source))
    }

    /// What the intact probe found for `camera`: its video decodes
    /// (`intact`) or not. A change marks it VLOST (or ON again) in the
    /// catalog, recorded and pushed up like any status change.
    pub fn video_checked(&mut self, camera: GbId, intact: bool, now: Instant) {
        if let Some(ev) = self.catalog.set_video_intact(camera, intact) {
            tracing::info!(%camera, intact, "intact probe changed a camera's video state");
            self.emit(vec![ev], now);
        }
    }

    fn flush_up(&mut self, now: Instant) {
        self.flush_at = None;
        let items = std::mem::take(&mut self.pending_up);
        if items.is_empty() {
            return;
        }
        let targets: Vec<GbId> = self
            .uplinks
            .iter()
            .filter(|u| u.takes_changes())
            .map(Uplink::parent)
            .collect();
        for parent in targets {
            // Each parent hears only of what is shared with it.
            let shared = self.shared_with(parent, items.clone(), now);
            let grew = shared.iter().any(|i| {
                matches!(
                    i.event.as_deref(),
                    Some(crate::catalog::event::ADD | crate::catalog::event::DEL)
                )
            });
            if !shared.is_empty() {
                self.push_up(parent, shared, grew, now);
            }
        }
    }

    /// Push a batch of changes to one registered parent: as Notify/Catalog
    /// MESSAGEs, or, to a parent that refuses those, by making it re-query
    /// once entries came or went.
    fn push_up(&mut self, parent: GbId, items: Vec<CatalogItem>, grew: bool, now: Instant) {
        let Some((peer, charset, refuses)) = self
            .uplink_to(parent)
            .map(|u| (u.peer(), u.charset(), u.refuses_pushes()))
        else {
            return;
        };
        if refuses {
            if grew {
                let ev = self
                    .uplink_to_mut(parent)
                    .and_then(|u| u.catalog_changed(now));
                self.on_uplink_event(parent, ev, now);
            }
            return;
        }
        metrics::counter!("gbgate_catalog_events_up_total").increment(items.len() as u64);
        let sn = self.next_sn();
        let budget = self.body_budget(parent, peer);
        let id = self.identity.id.to_string();
        let limit = self.settings.max_event_backlog;
        let ob = self.outbox_for(parent, peer);
        ob.push_changes(sn, id, items, budget, charset);
        if ob.backlog() > limit {
            // The parent cannot keep up with our changes: rather than queue
            // without bound, hand it the whole catalog once.
            tracing::warn!(
                %parent,
                backlog = ob.backlog(),
                "upward change backlog too large; resynchronising with the parent"
            );
            ob.clear();
            let ev = self.uplink_to_mut(parent).and_then(|u| u.resync(now));
            self.on_uplink_event(parent, ev, now);
            return;
        }
        self.pump(parent, now);
    }

    fn enqueue_parent(&mut self, parent: GbId, bodies: Vec<Bytes>, now: Instant) {
        let Some(peer) = self.uplink_to(parent).map(Uplink::peer) else {
            return;
        };
        let ob = self.outbox_for(parent, peer);
        for b in bodies {
            ob.push_body(b);
        }
        self.pump(parent, now);
    }

    fn outbox_for(&mut self, id: GbId, peer: Peer) -> &mut Outbox {
        let window = self.settings.catalog_window;
        let ob = self
            .outboxes
            .entry(id)
            .or_insert_with(|| Outbox::new(peer, window));
        ob.set_peer(peer);
        ob
    }

    /// Bytes left for a MESSAGE body after the SIP head, within the transport's budget.
    fn body_budget(&self, to: GbId, peer: Peer) -> usize {
        let target = Target {
            id: to.as_str(),
            host: peer.addr.to_string(),
            transport: peer.transport,
        };
        let head = self
            .agent
            .request(
                Method::Message,
                &target,
                u32::MAX,
                None,
                Some((MANSCDP, Bytes::new())),
            )
            .to_bytes()
            .len();
        // Margin for longer Call-IDs and the Content-Length digits.
        self.settings
            .catalog_budget(peer.transport)
            .saturating_sub(head + 24)
            .max(256)
    }

    fn pump(&mut self, id: GbId, now: Instant) {
        let Some(ob) = self.outboxes.get_mut(&id) else {
            return;
        };
        let peer = ob.peer();
        let catalog = &self.catalog;
        let ready = ob.take_ready(now, |id| {
            // Gone since the answer was planned: listed as OFF, its DEL
            // follows among the changes.
            catalog
                .item(id)
                .unwrap_or_else(|| crate::gb::manscdp::CatalogItem {
                    device_id: id.to_string(),
                    status: Some("OFF".into()),
                    ..Default::default()
                })
        });
        for outbox::Ready {
            body,
            attempt,
            notify,
        } in ready
        {
            let body_copy = body.clone();
            // Catalog changes to a parent that subscribed to them go in its
            // subscription's dialog; everything else as a MESSAGE.
            let in_dialog = if notify {
                self.subscription_notify(id, SubscriptionKind::Catalog, body.clone(), now)
            } else {
                None
            };
            let (req, to) = match in_dialog {
                Some(r) => r,
                None => {
                    let cseq = self.next_cseq();
                    let target = Target {
                        id: id.as_str(),
                        host: peer.addr.to_string(),
                        transport: peer.transport,
                    };
                    let req = self.agent.request(
                        Method::Message,
                        &target,
                        cseq,
                        None,
                        Some((MANSCDP, body)),
                    );
                    (req, peer)
                }
            };
            if !self.send(req, to, Token::Outbox(id, body_copy, attempt, notify), now) {
                if let Some(ob) = self.outboxes.get_mut(&id) {
                    ob.done();
                }
            }
        }
    }

    // ------------------------------------------------------------ events

    fn process_client_events(&mut self, now: Instant) {
        let mut events = Vec::new();
        self.tx.drain_events(&mut events);
        for ev in events {
            match ev {
                ClientEvent::Response { token, response } => {
                    self.on_client_response(token, response, now)
                }
                ClientEvent::Timeout { token, method } => {
                    self.on_client_timeout(token, method, now)
                }
            }
        }
        self.send_wanted_cancels(now);
    }

    fn on_client_response(&mut self, token: Token, response: Response, now: Instant) {
        match token {
            Token::Uplink(parent, UplinkRequest::Register(_)) => {
                let Some(u) = self.uplinks.iter_mut().find(|u| u.parent() == parent) else {
                    return;
                };
                let (follow, ev) = u.on_register_response(&self.agent, &response, now);
                self.on_uplink_event(parent, ev, now);
                if let Some(req) = follow {
                    self.send_register(parent, req, now);
                }
            }
            Token::Uplink(parent, UplinkRequest::Keepalive) => {
                let ev = self
                    .uplink_to_mut(parent)
                    .and_then(|u| u.on_keepalive_response(response.status, now));
                self.on_uplink_event(parent, ev, now);
            }
            Token::Outbox(id, body, attempt, notify) => {
                if let Some(ob) = self.outboxes.get_mut(&id) {
                    ob.done();
                }
                if notify && response.status == 481 {
                    // A NOTIFY in a subscription the parent no longer has:
                    // the change goes again, as a MESSAGE.
                    tracing::info!(%id, "catalog subscription gone; changes go as MESSAGEs");
                    self.subscription_gone(id, SubscriptionKind::Catalog);
                    if let Some(ob) = self.outboxes.get_mut(&id) {
                        ob.retry(body, attempt, notify);
                    }
                    return self.pump(id, now);
                }
                if matches!(response.status, 408 | 480 | 503) {
                    // Busy, not refusing: what it could not take now is
                    // sent again, after it said to or a second, and
                    // nothing else goes to it meanwhile.
                    let wait = response
                        .headers
                        .get("Retry-After")
                        .and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok())
                        .map_or(BUSY_PAUSE, Duration::from_secs)
                        .clamp(BUSY_PAUSE, MAX_BUSY_PAUSE);
                    tracing::debug!(%id, status = response.status, ?wait, "peer busy; pausing its queue");
                    metrics::counter!("gbgate_outbox_busy_total").increment(1);
                    if let Some(ob) = self.outboxes.get_mut(&id) {
                        ob.retry(body, attempt, notify);
                        ob.pause(now + wait);
                    }
                    let at = now + wait;
                    self.outbox_wake = Some(self.outbox_wake.map_or(at, |t| t.min(at)));
                    return;
                }
                if response.status >= 300 {
                    tracing::debug!(%id, status = response.status, "queued MESSAGE refused");
                    // A parent that refuses pushed changes (and is not just
                    // busy) must learn them by querying again.
                    // What it refused is lost to it, and what is queued
                    // would be refused too: it queries the whole catalog
                    // again instead.
                    if notify {
                        let first = self
                            .uplink_to_mut(id)
                            .is_some_and(Uplink::set_refuses_pushes);
                        if first {
                            if let Some(ob) = self.outboxes.get_mut(&id) {
                                ob.clear();
                            }
                            let ev = self.uplink_to_mut(id).and_then(|u| u.catalog_changed(now));
                            self.on_uplink_event(id, ev, now);
                        }
                    }
                }
                self.pump(id, now);
            }
            Token::Query(id) => {
                if response.status >= 300 {
                    tracing::warn!(%id, status = response.status, "query refused");
                }
            }
            Token::Control(id, sn) => self.on_control_answer(id, sn, Some(response.status), now),
            Token::Notify(call_id) => self.on_notify_answer(&call_id, Some(response.status)),
            Token::DeviceSubscribe(call_id, paced) => {
                self.on_device_subscribe_answer(&call_id, Some(&response), paced, now);
            }
            Token::Newcomer(id) => {
                if response.status >= 300 {
                    tracing::warn!(%id, status = response.status, "query refused");
                }
                self.newcomers.done();
                self.ask_newcomers(now);
            }
            Token::Call(call) => self.on_invite_response(call, response, now),
            Token::InDialog(call) => {
                if response.status >= 300 {
                    tracing::debug!(call, status = response.status, "in-dialog request refused");
                }
            }
        }
    }

    fn on_client_timeout(&mut self, token: Token, method: Method, now: Instant) {
        match token {
            Token::Uplink(parent, UplinkRequest::Register(cseq)) => {
                let ev = self
                    .uplink_to_mut(parent)
                    .and_then(|u| u.on_register_timeout(cseq, now));
                self.on_uplink_event(parent, ev, now);
            }
            Token::Uplink(_, UplinkRequest::Keepalive) => {}
            Token::Outbox(id, body, attempt, notify) => {
                if let Some(ob) = self.outboxes.get_mut(&id) {
                    ob.done();
                    if attempt < OUTBOX_RETRIES {
                        tracing::warn!(%id, %method, attempt, "queued MESSAGE unanswered; sending it again");
                        ob.retry(body, attempt, notify);
                    } else {
                        tracing::error!(%id, %method, "queued MESSAGE unanswered after retries; dropped");
                    }
                }
                self.pump(id, now);
            }
            Token::Query(id) => tracing::warn!(%id, "query timed out"),
            Token::Control(id, sn) => self.on_control_answer(id, sn, None, now),
            Token::Notify(call_id) => self.on_notify_answer(&call_id, None),
            Token::DeviceSubscribe(call_id, paced) => {
                self.on_device_subscribe_answer(&call_id, None, paced, now);
            }
            Token::Newcomer(id) => {
                tracing::warn!(%id, "query timed out");
                self.newcomers.done();
                self.ask_newcomers(now);
            }
            Token::Call(call) => self.on_invite_timeout(call),
            Token::InDialog(call) => tracing::debug!(call, %method, "in-dialog request timed out"),
        }
    }

    /// Send a REGISTER to `parent`; if it cannot even be sent, the uplink
    /// learns at once (as a timeout) instead of waiting forever for an answer.
    fn send_register(&mut self, parent: GbId, req: Request, now: Instant) {
        let Some(peer) = self.uplink_to(parent).map(Uplink::peer) else {
            return;
        };
        let cseq = req.cseq().map_or(0, |c| c.seq);
        let token = Token::Uplink(parent, UplinkRequest::Register(cseq));
        if !self.send(req, peer, token, now) {
            let ev = self
                .uplink_to_mut(parent)
                .and_then(|u| u.on_register_timeout(cseq, now));
            self.on_uplink_event(parent, ev, now);
        }
    }

    fn on_uplink_event(&mut self, parent: GbId, ev: Option<UplinkEvent>, now: Instant) {
        let label = parent.to_string();
        match ev {
            Some(UplinkEvent::Registered) => {
                metrics::gauge!("gbgate_uplink_registered", "parent" => label).set(1.0);
            }
            Some(UplinkEvent::Lost(why)) => {
                metrics::gauge!("gbgate_uplink_registered", "parent" => label.clone()).set(0.0);
                metrics::counter!("gbgate_uplink_losses_total", "parent" => label).increment(1);
                tracing::warn!(%parent, reason = %why, "link to parent lost");
                self.drop_incoming_calls_from(parent, "the link to the parent was lost", now);
                // The parent re-queries everything after we re-register.
                // Keep its outbox (its in-flight count must still drain)
                // but drop what waits in it.
                if let Some(ob) = self.outboxes.get_mut(&parent) {
                    ob.clear();
                }
            }
            None => {}
        }
    }

    // ------------------------------------------------------------ timers

    /// Run everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.process_client_events(now);
        if self.policy_expiry.is_some_and(|t| now >= t) {
            self.policy_time_passed(now);
        }
        if self.flush_at.is_some_and(|t| now >= t) {
            self.flush_up(now);
        }
        if self.outbox_wake.is_some_and(|t| now >= t) {
            self.resume_outboxes(now);
        }
        if self.newcomers.waiting() > 0 {
            self.ask_newcomers(now);
        }
        if !self.shutting_down {
            for i in 0..self.uplinks.len() {
                let Some(u) = self.uplinks.get_mut(i) else {
                    break;
                };
                let (reqs, ev) = u.poll(&self.agent, now);
                let (parent, peer) = (u.parent(), u.peer());
                self.on_uplink_event(parent, ev, now);
                for (kind, req) in reqs {
                    match kind {
                        UplinkRequest::Register(_) => self.send_register(parent, req, now),
                        UplinkRequest::Keepalive => {
                            self.send(req, peer, Token::Uplink(parent, kind), now);
                        }
                    }
                }
            }
        }
        if now >= self.next_sweep {
            self.sweep(now);
        }
    }

    /// Pump the queues whose busy pause ended; remember the next end.
    fn resume_outboxes(&mut self, now: Instant) {
        self.outbox_wake = None;
        let mut due = Vec::new();
        for (id, ob) in &self.outboxes {
            match ob.paused_until() {
                Some(t) if t <= now => due.push(*id),
                Some(t) => self.outbox_wake = Some(self.outbox_wake.map_or(t, |w| w.min(t))),
                None => {}
            }
        }
        for id in due {
            self.pump(id, now);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let period = (self.settings.keepalive_interval / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        self.next_sweep = now + period;
        if let Some(s) = self.registration_log.summary(now) {
            tracing::info!(
                fresh = s.fresh,
                refreshed = s.refreshed,
                without_own_line = s.untold,
                secs = s.period.as_secs(),
                "registrations (more than {} new a second: only counted; RUST_LOG=gbgate::node=debug logs each)",
                registration_log::LINES_PER_SECOND
            );
        }
        let gone = self.registry.sweep(now, self.settings.liveness_timeout());
        for (id, reason) in gone {
            tracing::warn!(%id, ?reason, "registrant offline");
            let ev = self.catalog.set_source_online(id, false);
            self.drop_calls_via(id, now);
            self.emit(ev, now);
            if reason == OfflineReason::Expired {
                self.outboxes.remove(&id);
            }
        }
        let idle = self.settings.catalog_part_timeout;
        let stale: Vec<GbId> = self
            .catalog_queries
            .iter()
            .filter(|(_, q)| {
                q.answer
                    .as_ref()
                    .is_some_and(|a| now.duration_since(a.last_activity()) > idle)
            })
            .map(|(id, _)| *id)
            .collect();
        for source in stale {
            if let Some(asm) = self.catalog_queries.remove(&source).and_then(|q| q.answer) {
                tracing::warn!(%source, got = asm.received(), sum_num = asm.sum_num(), "catalog answer incomplete; keeping what came");
                self.finish_catalog(source, asm, false, now);
            }
        }
        let ttl = self.settings.sip_timers.transaction_timeout();
        self.forwards.retain(|_, f| now.duration_since(f.at) <= ttl);
        self.sweep_queries(now);
        self.registrar.prune(now);
        self.registrar.expire_nonces(unix_time());
        self.sweep_calls(now, self.settings.invite_timeout);
        let (c, s) = self.tx.open();
        metrics::gauge!("gbgate_sip_transactions_open").set((c + s) as f64);
        metrics::counter!("gbgate_sip_retransmissions_total").absolute(self.tx.retransmissions());
        metrics::counter!("gbgate_sip_transactions_evicted_total").absolute(self.tx.evicted());
        self.update_gauges();
    }

    // ----------------------------------------------------------- shutdown

    /// Begin a graceful stop: unregister from the parent.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.hangup_all(now);
        let mut unregisters = Vec::new();
        for u in &mut self.uplinks {
            if let Some(req) = u.unregister(&self.agent) {
                tracing::info!(parent = %u.parent(), "unregistering from parent");
                unregisters.push((u.parent(), req));
            }
        }
        for (parent, req) in unregisters {
            self.send_register(parent, req, now);
        }
    }

    /// True when a graceful stop has nothing left to wait for.
    pub fn is_shut_down(&self) -> bool {
        self.shutting_down && self.uplinks.iter().all(Uplink::is_stopped)
    }
}
