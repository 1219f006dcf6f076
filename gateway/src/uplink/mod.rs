//! This node as a lower-level platform toward a parent: REGISTER with
//! digest auth, refresh before expiry, keepalive, re-register with back-off
//! when the parent restarts or stops answering, unregister on shutdown. One
//! [`Uplink`] per parent: the topology's parent, and each third-party upper
//! platform configured for the node, each with its own settings.
//!
//! Sans-IO: [`Uplink::poll`] returns the requests to send now, the node
//! feeds back responses and timeouts, and [`Uplink::next_wake`] says when
//! to call `poll` again.

use std::time::{Duration, Instant};

use policy::audit::Head;
use topology::GbId;

use crate::gb::charset::Charset;
use crate::gb::manscdp::{Keepalive, Manscdp};
use crate::settings::Settings;
use crate::sip::agent::{Agent, Target, MANSCDP};
use crate::sip::auth::{answer, Challenge};
use crate::sip::header::{expires, new_call_id, new_tag};
use crate::sip::message::{Method, Request, Response};
use crate::sip::Peer;

/// Redirects followed in a row before giving up on them.
const MAX_REDIRECTS: u8 = 3;

/// Which uplink request a transaction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkRequest {
    /// A REGISTER (initial, authenticated, refresh or unregister), with its
    /// CSeq: answers to an older attempt are ignored.
    Register(u32),
    /// A keepalive MESSAGE.
    Keepalive,
}

/// The link state, as shown by the topology API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Waiting before the next attempt.
    Backoff,
    /// A REGISTER is in flight.
    Registering,
    /// Registered and alive.
    Registered,
    /// Unregistering or stopped.
    Stopped,
}

/// What the node must learn from the uplink.
#[derive(Debug, PartialEq, Eq)]
pub enum UplinkEvent {
    /// The parent accepted a new registration (it will query our catalog).
    Registered,
    /// The registration is gone (parent restarted, refused us, or went silent).
    Lost(LinkFault),
}

/// Why a registration to a parent failed or ended; shown in logs and in
/// the topology API, with the status code a parent refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkFault {
    /// A final response other than 2xx, 3xx or a usable challenge.
    #[error("the parent refused the registration with {status}")]
    Refused {
        /// The status code.
        status: u16,
    },
    /// A challenge we answered was challenged again, or we have no password.
    #[error("the parent rejected our credentials ({status})")]
    Credentials {
        /// 401 or 407.
        status: u16,
    },
    /// A 401/407 without a challenge we can read.
    #[error("the parent sent {status} without a usable challenge")]
    NoChallenge {
        /// 401 or 407.
        status: u16,
    },
    /// Redirected more than we follow in a row.
    #[error("too many redirects")]
    TooManyRedirects,
    /// A 3xx without a Contact we can dial.
    #[error("redirect ({status}) without a usable Contact")]
    BadRedirect {
        /// The 3xx status.
        status: u16,
    },
    /// No final response to REGISTER within Timer F (or it could not be sent).
    #[error("REGISTER timed out")]
    Timeout,
    /// Keepalives went unanswered for the liveness window.
    #[error("the parent stopped answering keepalives")]
    Silent,
    /// A keepalive was answered with a code meaning we are unknown there.
    #[error("the parent no longer knows this node (keepalive answered {status})")]
    Forgotten {
        /// 403, 404, 408 or 481.
        status: u16,
    },
    /// We gave the registration up so the parent re-queries our catalog.
    #[error("re-registering so the parent queries our catalog again")]
    Resync,
    /// The link under the registration was (re)established: a new QUIC
    /// connection, so whatever the parent knew of the last one is gone.
    #[error("the link to the parent was re-established")]
    LinkRestarted,
    /// The link under the registration went down (a QUIC connection closed
    /// or timed out): nothing reaches the parent until it is back.
    #[error("the link to the parent went down")]
    LinkDown,
}

/// How one uplink is set up: who the parent is and how we treat it.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// The parent's ID.
    pub parent: GbId,
    /// A name for logs and the topology API.
    pub name: String,
    /// Where it is reached.
    pub peer: Peer,
    /// Our password toward it.
    pub password: Option<String>,
    /// True for a third-party upper platform (not in our topology).
    pub upper: bool,
    /// Registration expiry we ask for.
    pub expires: Duration,
    /// Keepalive period.
    pub keepalive_interval: Duration,
    /// Silence after which the registration is taken as lost.
    pub liveness: Duration,
    /// First and longest back-off after a failure.
    pub retry: (Duration, Duration),
    /// Shortest time between two re-registrations that make a parent
    /// which takes no pushed changes query our catalog again.
    pub resync_min: Duration,
    /// A charset fixed by configuration; `None` learns it from the parent.
    pub charset: Option<Charset>,
}

impl UplinkConfig {
    /// The topology's parent, with the node's settings.
    pub fn parent(
        parent: GbId,
        name: String,
        peer: Peer,
        password: Option<String>,
        settings: &Settings,
    ) -> Self {
        UplinkConfig {
            parent,
            name,
            peer,
            password,
            upper: false,
            expires: settings.register_expires,
            keepalive_interval: settings.keepalive_interval,
            liveness: settings.liveness_timeout(),
            retry: (settings.register_retry_min, settings.register_retry_max),
            resync_min: settings.catalog_resync_min,
            charset: None,
        }
    }

    /// A third-party upper platform with its own intervals and charset.
    pub fn upper(
        p: &topology::UpperPlatform,
        password: Option<String>,
        settings: &Settings,
    ) -> Self {
        let keepalive = Duration::from_secs(p.keepalive_interval_secs);
        UplinkConfig {
            parent: p.id,
            name: p.name.clone(),
            peer: Peer::plain(p.transport.into(), p.sip),
            password,
            upper: true,
            expires: Duration::from_secs(p.register_expires_secs),
            keepalive_interval: keepalive,
            liveness: keepalive * p.keepalive_timeout_count,
            retry: (settings.register_retry_min, settings.register_retry_max),
            resync_min: settings.catalog_resync_min,
            charset: Some(match p.charset {
                topology::TextCharset::Gb2312 => Charset::Gb2312,
                topology::TextCharset::Utf8 => Charset::Utf8,
            }),
        }
    }
}

#[derive(Debug)]
enum State {
    Backoff { until: Instant },
    Registering { authed: u8, refresh: bool },
    Registered,
    Unregistering,
    Stopped,
}

/// The uplink state machine.
pub struct Uplink {
    parent: GbId,
    name: String,
    upper: bool,
    charset_fixed: bool,
    last_fault: Option<LinkFault>,
    /// The parent refused a pushed catalog change: it takes none, so it
    /// must re-query instead (see [`Uplink::resync`]).
    refuses_pushes: bool,
    last_resync: Option<Instant>,
    /// Our catalog changed while a resync was not yet due: one is owed.
    resync_owed: bool,
    resync_min: Duration,
    peer: Peer,
    password: Option<String>,
    state: State,
    call_id: String,
    from_tag: String,
    cseq: u32,
    pending: Option<u32>,
    redirects: u8,
    home: std::net::SocketAddr,
    nc: u32,
    challenge: Option<Challenge>,
    expires: Duration,
    granted: Duration,
    registered_at: Instant,
    next_keepalive: Instant,
    last_ok: Instant,
    retry: Duration,
    keepalive_sn: u32,
    keepalive_interval: Duration,
    liveness: Duration,
    retry_min: Duration,
    retry_max: Duration,
    charset: Charset,
    since: Option<std::time::SystemTime>,
    /// This node's audit head, reported with each keepalive once known.
    audit_head: Option<Head>,
    /// The parent asked for our catalog during the current registration.
    /// Its query may overtake the 200 to our REGISTER, and what changes
    /// after our answer is owed to it from then on.
    queried: bool,
}

impl Uplink {
    /// An uplink as configured, registering at once.
    pub fn new(config: UplinkConfig, now: Instant) -> Self {
        let UplinkConfig {
            parent,
            name,
            peer,
            password,
            upper,
            expires,
            keepalive_interval,
            liveness,
            retry,
            resync_min,
            charset,
        } = config;
        Uplink {
            parent,
            name,
            upper,
            charset_fixed: charset.is_some(),
            last_fault: None,
            refuses_pushes: false,
            last_resync: None,
            resync_owed: false,
            resync_min,
            peer,
            password,
            state: State::Backoff { until: now },
            call_id: new_call_id(&peer.addr.ip().to_string()),
            from_tag: new_tag(),
            cseq: 0,
            pending: None,
            redirects: 0,
            home: peer.addr,
            nc: 0,
            challenge: None,
            expires,
            granted: expires,
            registered_at: now,
            next_keepalive: now,
            last_ok: now,
            retry: retry.0,
            keepalive_sn: 0,
            keepalive_interval,
            liveness,
            retry_min: retry.0,
            retry_max: retry.1,
            charset: charset.unwrap_or(Charset::Gb2312),
            since: None,
            audit_head: None,
            queried: false,
        }
    }

    /// Its name (topology name, or the upper platform's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a third-party upper platform.
    pub fn is_upper(&self) -> bool {
        self.upper
    }

    /// Why the last registration failed or ended, if it did.
    pub fn last_fault(&self) -> Option<LinkFault> {
        self.last_fault
    }

    /// True once the parent refused a pushed catalog change.
    pub fn refuses_pushes(&self) -> bool {
        self.refuses_pushes
    }

    /// The parent refused a pushed change: stop pushing to it. True the
    /// first time.
    pub fn set_refuses_pushes(&mut self) -> bool {
        if self.refuses_pushes {
            return false;
        }
        tracing::info!(parent = %self.parent, "the parent refuses pushed catalog changes; it will be made to re-query instead");
        self.refuses_pushes = true;
        true
    }

    /// This node's latest committed audit head: later keepalives to a
    /// gbgate parent carry it (`<AuditHead>`), so the parent can record it.
    /// Third-party upper platforms are not sent it: one that validates
    /// bodies against the GB/T 28181 schema could refuse the keepalive.
    pub fn set_audit_head(&mut self, head: Head) {
        if !self.upper {
            self.audit_head = Some(head);
        }
    }

    /// The audit head keepalives carry, if one is known.
    pub fn audit_head(&self) -> Option<Head> {
        self.audit_head
    }

    /// The parent's ID.
    pub fn parent(&self) -> GbId {
        self.parent
    }

    /// Where the parent is reached.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Current link state.
    pub fn state(&self) -> LinkState {
        match self.state {
            State::Backoff { .. } => LinkState::Backoff,
            State::Registering { refresh: true, .. } | State::Registered => LinkState::Registered,
            State::Registering { .. } => LinkState::Registering,
            State::Unregistering | State::Stopped => LinkState::Stopped,
        }
    }

    /// True while the parent holds a registration from us.
    pub fn is_registered(&self) -> bool {
        self.state() == LinkState::Registered
    }

    /// The parent queried our catalog during the current registration.
    pub fn note_catalog_query(&mut self) {
        self.queried = true;
    }

    /// True when catalog changes must be pushed to this parent: it holds
    /// our registration, or it already has our answer to its query while
    /// the 200 to our REGISTER is still on its way.
    pub fn takes_changes(&self) -> bool {
        self.is_registered() || (self.queried && self.state() == LinkState::Registering)
    }

    /// Since when the current registration holds.
    pub fn registered_since(&self) -> Option<std::time::SystemTime> {
        self.since
    }

    /// The charset the parent writes in (answers use it).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// Remember the parent's charset, unless configuration fixed it.
    pub fn set_charset(&mut self, c: Charset) {
        if !self.charset_fixed {
            self.charset = c;
        }
    }

    fn register_request(&mut self, agent: &Agent, expires_secs: u64) -> Request {
        self.cseq += 1;
        let target = Target {
            id: self.parent.as_str(),
            host: self.peer.addr.to_string(),
            transport: self.peer.transport,
        };
        let mut r = agent.request(
            Method::Register,
            &target,
            self.cseq,
            Some(&self.call_id),
            None,
        );
        // Keep one From tag for the whole registration (RFC 3261 §10.2).
        r.headers.set(
            "From",
            format!(
                "<sip:{}@{}>;tag={}",
                agent.id,
                agent.id.domain(),
                self.from_tag
            ),
        );
        r.headers.set("Expires", expires_secs.to_string());
        self.pending = Some(self.cseq);
        if let (Some(c), Some(pw)) = (&self.challenge, &self.password) {
            self.nc += 1;
            let cnonce = format!("{:08x}", rand::random::<u32>());
            let creds = answer(
                c,
                "REGISTER",
                &r.uri,
                agent.id.as_str(),
                pw,
                self.nc,
                &cnonce,
            );
            r.headers.set("Authorization", creds.to_header_value());
        }
        r
    }

    fn keepalive_request(&mut self, agent: &Agent) -> Request {
        self.cseq += 1;
        self.keepalive_sn = self.keepalive_sn.wrapping_add(1);
        let body = Manscdp::Keepalive(Keepalive {
            sn: self.keepalive_sn,
            device_id: agent.id.to_string(),
            status: "OK".into(),
            audit_head: self.audit_head,
        })
        .to_body(self.charset);
        let target = Target {
            id: self.parent.as_str(),
            host: self.peer.addr.to_string(),
            transport: self.peer.transport,
        };
        agent.request(
            Method::Message,
            &target,
            self.cseq,
            None,
            Some((MANSCDP, body)),
        )
    }

    fn fail(&mut self, now: Instant, why: LinkFault) -> Option<UplinkEvent> {
        self.last_fault = Some(why);
        let was = self.is_registered();
        // 2022 §9.1.2.3: after failures, return to the configured registrar.
        self.peer.addr = self.home;
        self.redirects = 0;
        self.state = State::Backoff {
            until: now + self.retry,
        };
        tracing::warn!(parent = %self.parent, name = %self.name, retry_in = ?self.retry, reason = %why, "registration to parent failed");
        self.retry = (self.retry * 2).min(self.retry_max);
        self.challenge = None;
        self.since = None;
        was.then_some(UplinkEvent::Lost(why))
    }

    fn lost_now(&mut self, now: Instant, why: LinkFault) -> Option<UplinkEvent> {
        self.last_fault = Some(why);
        // The parent forgot us (restart): re-register at once, not after back-off.
        let was = self.is_registered();
        tracing::info!(parent = %self.parent, name = %self.name, reason = %why, "parent lost our registration; re-registering");
        self.state = State::Backoff { until: now };
        self.challenge = None;
        self.since = None;
        was.then_some(UplinkEvent::Lost(why))
    }

    /// Requests due at `now`, and an event if the link just dropped.
    pub fn poll(
        &mut self,
        agent: &Agent,
        now: Instant,
    ) -> (Vec<(UplinkRequest, Request)>, Option<UplinkEvent>) {
        let mut out = Vec::new();
        let mut event = None;
        match self.state {
            State::Backoff { until } if now >= until => {
                // A fresh registration gets a fresh Call-ID so the parent sees a new binding.
                self.call_id = new_call_id(&agent.addr.ip().to_string());
                self.from_tag = new_tag();
                self.nc = 0;
                self.queried = false;
                self.state = State::Registering {
                    authed: 0,
                    refresh: false,
                };
                let secs = self.expires.as_secs();
                let r = self.register_request(agent, secs);
                out.push((UplinkRequest::Register(self.cseq), r));
            }
            State::Registered => {
                if now.duration_since(self.last_ok) > self.liveness {
                    event = self.lost_now(now, LinkFault::Silent);
                } else if self.resync_owed && self.resync_due(now) {
                    event = self.resync(now);
                } else if now >= self.registered_at + self.granted * 2 / 3 {
                    self.state = State::Registering {
                        authed: 0,
                        refresh: true,
                    };
                    let secs = self.expires.as_secs();
                    let r = self.register_request(agent, secs);
                    out.push((UplinkRequest::Register(self.cseq), r));
                } else if now >= self.next_keepalive {
                    self.next_keepalive = now + self.keepalive_interval;
                    out.push((UplinkRequest::Keepalive, self.keepalive_request(agent)));
                }
            }
            _ => {}
        }
        (out, event)
    }

    /// When `poll` next has work.
    pub fn next_wake(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { until } => Some(until),
            State::Registered => {
                let regular = self
                    .next_keepalive
                    .min(self.registered_at + self.granted * 2 / 3)
                    .min(self.last_ok + self.liveness + Duration::from_millis(1));
                Some(self.owed_resync_at().map_or(regular, |t| t.min(regular)))
            }
            _ => None,
        }
    }

    /// A final response to a REGISTER. May return a follow-up REGISTER
    /// (answering a challenge) and an event.
    pub fn on_register_response(
        &mut self,
        agent: &Agent,
        response: &Response,
        now: Instant,
    ) -> (Option<Request>, Option<UplinkEvent>) {
        let current = response.cseq().map(|c| c.seq) == self.pending
            && response.call_id() == Some(self.call_id.as_str());
        if !current {
            // An answer to an attempt we have already given up on.
            return (None, None);
        }
        self.pending = None;
        let (authed, refresh) = match self.state {
            State::Registering { authed, refresh } => (authed, refresh),
            State::Unregistering => {
                if response.status == 401 {
                    if let Some(c) = response
                        .headers
                        .get("WWW-Authenticate")
                        .and_then(|v| Challenge::parse(v).ok())
                    {
                        if self
                            .challenge
                            .as_ref()
                            .is_none_or(|old| old.nonce != c.nonce)
                        {
                            self.challenge = Some(c);
                            self.nc = 0;
                            return (Some(self.register_request(agent, 0)), None);
                        }
                    }
                }
                self.state = State::Stopped;
                return (None, None);
            }
            _ => return (None, None),
        };
        match response.status {
            200..=299 => {
                self.granted = expires(&response.headers)
                    .map(|s| Duration::from_secs(u64::from(s)))
                    .filter(|d| !d.is_zero())
                    .unwrap_or(self.expires);
                self.state = State::Registered;
                self.registered_at = now;
                self.last_ok = now;
                self.next_keepalive = now + self.keepalive_interval;
                self.retry = self.retry_min;
                if refresh {
                    (None, None)
                } else {
                    self.since = Some(std::time::SystemTime::now());
                    self.last_fault = None;
                    tracing::info!(parent = %self.parent, expires = ?self.granted, "registered to parent");
                    (None, Some(UplinkEvent::Registered))
                }
            }
            401 | 407 if authed < 2 && self.password.is_some() => {
                let header = if response.status == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                match response.headers.get(header).map(Challenge::parse) {
                    Some(Ok(c)) => {
                        self.challenge = Some(c);
                        self.nc = 0;
                        self.state = State::Registering {
                            authed: authed + 1,
                            refresh,
                        };
                        let secs = self.expires.as_secs();
                        (Some(self.register_request(agent, secs)), None)
                    }
                    _ => (
                        None,
                        self.fail(
                            now,
                            LinkFault::NoChallenge {
                                status: response.status,
                            },
                        ),
                    ),
                }
            }
            301 | 302 => {
                // 2022 §9.1.2.3: a redirect server names the real registrar in Contact.
                let target = response
                    .headers
                    .get("Contact")
                    .and_then(|c| crate::sip::header::NameAddr::parse(c).ok())
                    .and_then(|na| na.uri.socket_addr());
                match target {
                    Some(addr) if self.redirects < MAX_REDIRECTS => {
                        tracing::info!(parent = %self.parent, %addr, "registration redirected");
                        self.redirects += 1;
                        self.peer.addr = addr;
                        self.state = State::Backoff { until: now };
                        (None, None)
                    }
                    Some(_) => {
                        // A redirect loop: go back to the configured registrar after a back-off.
                        self.redirects = 0;
                        self.peer.addr = self.home;
                        (None, self.fail(now, LinkFault::TooManyRedirects))
                    }
                    None => (
                        None,
                        self.fail(
                            now,
                            LinkFault::BadRedirect {
                                status: response.status,
                            },
                        ),
                    ),
                }
            }
            401 | 407 => (
                None,
                self.fail(
                    now,
                    LinkFault::Credentials {
                        status: response.status,
                    },
                ),
            ),
            status => (None, self.fail(now, LinkFault::Refused { status })),
        }
    }

    /// A REGISTER got no final response within Timer F, or could not be sent.
    pub fn on_register_timeout(&mut self, cseq: u32, now: Instant) -> Option<UplinkEvent> {
        if self.pending != Some(cseq) {
            return None;
        }
        self.pending = None;
        match self.state {
            State::Registering { .. } => self.fail(now, LinkFault::Timeout),
            State::Unregistering => {
                self.state = State::Stopped;
                None
            }
            _ => None,
        }
    }

    /// A final response to a keepalive.
    pub fn on_keepalive_response(&mut self, status: u16, now: Instant) -> Option<UplinkEvent> {
        match status {
            200..=299 => {
                self.last_ok = now;
                None
            }
            // The parent does not know us any more (it restarted): GB practice is to re-register at once.
            403 | 404 | 408 | 481 => self.lost_now(now, LinkFault::Forgotten { status }),
            _ => None,
        }
    }

    /// Give the registration up and register afresh (new Call-ID) at once:
    /// the parent then sees a new binding and re-queries our whole catalog.
    /// Used when we can no longer tell it every change one by one.
    pub fn resync(&mut self, now: Instant) -> Option<UplinkEvent> {
        self.last_resync = Some(now);
        self.resync_owed = false;
        self.lost_now(now, LinkFault::Resync)
    }

    /// The link to this parent came up (a new QUIC connection): register
    /// at once over it instead of waiting out a back-off or a refresh.
    pub fn link_up(&mut self, now: Instant) -> Option<UplinkEvent> {
        self.lost_now(now, LinkFault::LinkRestarted)
    }

    /// The link to this parent went down: the registration is gone with it
    /// (calls from the parent end); the next [`Uplink::link_up`] registers.
    pub fn link_down(&mut self, now: Instant) -> Option<UplinkEvent> {
        self.lost_now(now, LinkFault::LinkDown)
    }

    /// Our catalog gained or lost entries and this parent takes no pushed
    /// changes: re-register now so it queries again, or, when the last
    /// resync was less than `resync_min` ago, owe one and do it then (a
    /// change is never left untold).
    pub fn catalog_changed(&mut self, now: Instant) -> Option<UplinkEvent> {
        if self.resync_due(now) {
            tracing::info!(parent = %self.parent, "our catalog changed and the parent takes no pushes; re-registering so it queries again");
            self.resync(now)
        } else {
            self.resync_owed = true;
            None
        }
    }

    fn resync_due(&self, now: Instant) -> bool {
        self.last_resync
            .is_none_or(|t| now.duration_since(t) >= self.resync_min)
    }

    fn owed_resync_at(&self) -> Option<Instant> {
        // Owed only while one is not due, so a last resync exists.
        self.last_resync
            .filter(|_| self.resync_owed)
            .map(|t| t + self.resync_min)
    }

    /// CSeq of the REGISTER in flight, if any.
    pub fn pending(&self) -> Option<u32> {
        self.pending
    }

    /// Start unregistering (Expires: 0). Returns the request if we were registered.
    pub fn unregister(&mut self, agent: &Agent) -> Option<Request> {
        let was = self.is_registered();
        self.state = State::Unregistering;
        if was {
            Some(self.register_request(agent, 0))
        } else {
            self.state = State::Stopped;
            None
        }
    }

    /// True once unregistering has finished (or nothing was registered).
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, State::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::DigestCredentials;
    use crate::sip::Transport;

    fn setup() -> (Uplink, Agent, Instant) {
        let now = Instant::now();
        let settings = Settings {
            register_retry_min: Duration::from_secs(1),
            register_retry_max: Duration::from_secs(8),
            keepalive_interval: Duration::from_secs(10),
            ..Settings::default()
        };
        let parent = GbId::parse("35010200002000000001").unwrap();
        let peer = Peer::plain(Transport::Udp, "127.0.0.1:5060".parse().unwrap());
        let agent = Agent {
            id: GbId::parse("35010201002000000001").unwrap(),
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        (
            Uplink::new(
                UplinkConfig::parent(parent, "parent".into(), peer, Some("pw".into()), &settings),
                now,
            ),
            agent,
            now,
        )
    }

    fn challenge(req: &Request) -> Response {
        let mut r = Response::to_request(req, 401, Some("t"));
        r.headers.push(
            "WWW-Authenticate",
            "Digest realm=\"3501020000\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"",
        );
        r
    }

    /// The keepalive body `u` sends at `at` (registering it first at `t`).
    fn keepalive_body(u: &mut Uplink, agent: &Agent, t: Instant, at: Instant) -> Keepalive {
        if u.state() != LinkState::Registered {
            let (reqs, _) = u.poll(agent, t);
            let (again, _) = u.on_register_response(agent, &challenge(&reqs[0].1), t);
            let mut ok = Response::to_request(&again.unwrap(), 200, Some("t"));
            ok.headers.push("Expires", "3600");
            u.on_register_response(agent, &ok, t);
        }
        let (reqs, _) = u.poll(agent, at);
        assert_eq!(reqs[0].0, UplinkRequest::Keepalive);
        u.on_keepalive_response(200, at);
        match crate::gb::manscdp::parse(&reqs[0].1.body).unwrap().0 {
            Manscdp::Keepalive(k) => k,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keepalives_carry_the_audit_head_once_known() {
        let (mut u, agent, t) = setup();
        let k = keepalive_body(&mut u, &agent, t, t + Duration::from_secs(10));
        assert_eq!(k.audit_head, None, "no head known yet: none sent");
        let head = Head {
            seq: 7,
            hash: policy::audit::Hash([7; 32]),
        };
        u.set_audit_head(head);
        assert_eq!(u.audit_head(), Some(head));
        let k = keepalive_body(&mut u, &agent, t, t + Duration::from_secs(20));
        assert_eq!(k.audit_head, Some(head));
        assert_eq!(k.status, "OK");
    }

    #[test]
    fn register_with_digest_then_keepalive_then_refresh() {
        let (mut u, agent, t) = setup();
        let (reqs, _) = u.poll(&agent, t);
        assert_eq!(reqs.len(), 1);
        let first = &reqs[0].1;
        assert!(first.headers.get("Authorization").is_none());
        let (again, ev) = u.on_register_response(&agent, &challenge(first), t);
        assert_eq!(ev, None);
        let again = again.expect("an authenticated REGISTER");
        let creds = DigestCredentials::parse(again.headers.get("Authorization").unwrap()).unwrap();
        assert!(creds.verify("REGISTER", "pw"));
        assert_eq!(again.call_id(), first.call_id());
        let mut ok = Response::to_request(&again, 200, Some("t"));
        ok.headers.push("Expires", "30");
        let (_, ev) = u.on_register_response(&agent, &ok, t);
        assert_eq!(ev, Some(UplinkEvent::Registered));
        assert_eq!(u.state(), LinkState::Registered);
        // Keepalive after one interval.
        let (reqs, _) = u.poll(&agent, t + Duration::from_secs(10));
        assert_eq!(reqs[0].0, UplinkRequest::Keepalive);
        assert_eq!(
            u.on_keepalive_response(200, t + Duration::from_secs(10)),
            None
        );
        // Refresh at 2/3 of the granted 30 s, reusing the challenge (nc=2).
        let (reqs, _) = u.poll(&agent, t + Duration::from_secs(20));
        assert!(matches!(reqs[0].0, UplinkRequest::Register(_)));
        let creds =
            DigestCredentials::parse(reqs[0].1.headers.get("Authorization").unwrap()).unwrap();
        assert_eq!(creds.nonce_count(), Some(2));
        assert_eq!(
            u.state(),
            LinkState::Registered,
            "still registered while refreshing"
        );
    }

    #[test]
    fn forbidden_backs_off_doubling() {
        let (mut u, agent, t) = setup();
        let (reqs, _) = u.poll(&agent, t);
        u.on_register_response(&agent, &Response::to_request(&reqs[0].1, 403, None), t);
        assert_eq!(u.state(), LinkState::Backoff);
        assert_eq!(u.next_wake(), Some(t + Duration::from_secs(1)));
        let (reqs, _) = u.poll(&agent, t + Duration::from_secs(1));
        assert_eq!(reqs.len(), 1);
        let UplinkRequest::Register(cseq) = reqs[0].0 else {
            panic!("not a REGISTER")
        };
        u.on_register_timeout(cseq + 1, t + Duration::from_secs(2));
        assert_eq!(
            u.state(),
            LinkState::Registering,
            "a stale timeout changes nothing"
        );
        u.on_register_timeout(cseq, t + Duration::from_secs(2));
        assert_eq!(u.next_wake(), Some(t + Duration::from_secs(4)));
    }

    fn registered() -> (Uplink, Agent, Instant) {
        let (mut u, agent, t) = setup();
        let (reqs, _) = u.poll(&agent, t);
        let ok = Response::to_request(&reqs[0].1, 200, Some("x"));
        u.on_register_response(&agent, &ok, t);
        (u, agent, t)
    }

    #[test]
    fn keepalive_404_re_registers_at_once() {
        let (mut u, agent, t) = registered();
        assert_eq!(
            u.on_keepalive_response(404, t),
            Some(UplinkEvent::Lost(LinkFault::Forgotten { status: 404 }))
        );
        let (reqs, _) = u.poll(&agent, t);
        assert!(matches!(reqs[0].0, UplinkRequest::Register(_)));
    }

    #[test]
    fn answers_to_an_abandoned_attempt_are_ignored() {
        let (mut u, agent, t) = registered();
        u.on_keepalive_response(200, t + Duration::from_secs(2399));
        let (reqs, _) = u.poll(&agent, t + Duration::from_secs(2400));
        let refresh = reqs[0].1.clone();
        // The parent restarts mid-refresh: a keepalive 404 starts a fresh registration.
        u.on_keepalive_response(404, t + Duration::from_secs(2400));
        let (reqs, _) = u.poll(&agent, t + Duration::from_secs(2400));
        let fresh = reqs[0].1.clone();
        assert_ne!(fresh.call_id(), refresh.call_id());
        // The old refresh's 200 arrives late: ignored, still registering.
        let late = Response::to_request(&refresh, 200, Some("x"));
        assert_eq!(u.on_register_response(&agent, &late, t), (None, None));
        assert_eq!(u.state(), LinkState::Registering);
        let ok = Response::to_request(&fresh, 200, Some("x"));
        assert_eq!(
            u.on_register_response(&agent, &ok, t).1,
            Some(UplinkEvent::Registered)
        );
    }

    #[test]
    fn silent_parent_is_lost_after_three_intervals() {
        let (mut u, agent, t) = registered();
        let (_, ev) = u.poll(&agent, t + Duration::from_secs(30));
        assert_eq!(ev, None);
        let (_, ev) = u.poll(&agent, t + Duration::from_secs(31));
        assert!(matches!(ev, Some(UplinkEvent::Lost(_))));
    }

    #[test]
    fn unregister_sends_expires_zero() {
        let (mut u, agent, t) = registered();
        let r = u.unregister(&agent).unwrap();
        assert_eq!(r.headers.get("Expires"), Some("0"));
        let ok = Response::to_request(&r, 200, None);
        u.on_register_response(&agent, &ok, t);
        assert!(u.is_stopped());
    }
}
