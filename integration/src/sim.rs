//! A fleet of simulated GB/T 28181 devices (IPCs and NVRs) behind one SIP
//! socket: each registers with digest auth, keeps alive, re-registers when
//! the server forgets it, and answers Catalog, DeviceInfo, DeviceStatus,
//! RecordInfo (one recording per hour of the range asked) and PresetQuery,
//! and takes DeviceControl: PTZ commands are checked and logged (`gbsim:
//! PTZ <channel> <command>`), presets set and deleted are kept per channel,
//! and record, guard, alarm and home-position commands are answered OK.
//!
//! The fleet is a sans-IO state machine like the node (same transaction
//! layer); [`run`] drives it over the node's own UDP/TCP transports.
//!
//! Media: the fleet answers INVITEs (live and playback) to its channels;
//! the socket work is the driver's, told through [`MediaEvent`]s and
//! answered with [`Fleet::answer_call`] (see [`crate::streamer`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gbgate::gb::catalog::split;
use gbgate::gb::charset::Charset;
use gbgate::gb::manscdp::{
    self, Alarm, CatalogItem, ConfigAnswer, ControlCommand, ControlResult, DeviceInfo,
    DeviceStatus, Keepalive, Manscdp, MobilePosition, Preset, PresetList, RecordItem, RecordList,
    RecordQuery,
};
use gbgate::gb::ptz::PtzAction;
use gbgate::gb::record;
use gbgate::media::sdp::GbSdp;
use gbgate::node::Inbound;
use gbgate::sip::agent::{Agent, Target, MANSCDP};
use gbgate::sip::auth::{answer, Challenge};
use gbgate::sip::header::{new_call_id, NameAddr};
use gbgate::sip::message::{Message, Method, Request, Response};
use gbgate::sip::transaction::{ClientEvent, Incoming, Timers, TransactionLayer};
use gbgate::sip::{Peer, Transmit, Transport};
use topology::GbId;

/// What kind of device to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An IP camera registering as itself (type 132) with one channel.
    Ipc,
    /// An NVR (type 118) with several camera channels.
    Nvr,
}

/// Fleet configuration.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The node to register to.
    pub server: Peer,
    /// The node's ID.
    pub server_id: GbId,
    /// First 10 digits of generated device IDs (civil code + industry).
    pub id_prefix: String,
    /// First serial number used for this fleet's IDs.
    pub serial_base: u32,
    /// Number of IPCs.
    pub ipcs: usize,
    /// Number of NVRs.
    pub nvrs: usize,
    /// Channels per NVR.
    pub channels_per_nvr: usize,
    /// Digest password for every device.
    pub password: String,
    /// Keepalive period.
    pub keepalive: Duration,
    /// Registration Expires asked for.
    pub expires: Duration,
    /// Address the fleet binds and advertises.
    pub local: SocketAddr,
    /// Catalog MESSAGE byte budget.
    pub catalog_budget: usize,
    /// Most REGISTER transactions in flight at once (registration storms).
    pub register_window: usize,
    /// Answer MESSAGEs (catalog parts, record lists) each device keeps in
    /// flight: like a real NVR, each paces its own answer, independently
    /// of the rest of the fleet.
    pub answer_window: usize,
    /// Each device raises an alarm on its first channel this often (a
    /// video-motion alarm, `Notify/Alarm`); `None`: never.
    pub alarm_every: Option<Duration>,
}

/// What [`FleetConfig::answer_window`] is unless told: a 1000-channel NVR
/// answering in hundreds of UDP datagrams keeps a few in flight.
pub const ANSWER_WINDOW: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle { at: Instant },
    Registering,
    Registered { at: Instant },
}

struct Device {
    id: GbId,
    kind: Kind,
    name: String,
    channels: Vec<CatalogItem>,
    state: State,
    call_id: String,
    cseq: u32,
    nc: u32,
    challenge: Option<Challenge>,
    auth_tries: u8,
    next_keepalive: Instant,
    next_alarm: Instant,
    keepalive_sn: u32,
    granted: Duration,
    /// Answer bodies waiting for a place in the device's window.
    answers: std::collections::VecDeque<Bytes>,
    answers_in_flight: usize,
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Register(usize),
    Keepalive(usize),
    Answer(usize),
    /// MediaStatus and other one-off notifications.
    Notify,
}

/// What the driver must do with media.
#[derive(Debug)]
pub enum MediaEvent {
    /// The node INVITEd a channel: bind, answer with
    /// [`Fleet::answer_call`], then stream.
    Start {
        /// The call's Call-ID.
        call: String,
        /// The channel asked for.
        channel: GbId,
        /// The node's offer.
        offer: Box<GbSdp>,
    },
    /// The node hung up (BYE or CANCEL).
    Stop {
        /// The call's Call-ID.
        call: String,
    },
    /// MANSRTSP playback control (INFO).
    Control {
        /// The call's Call-ID.
        call: String,
        /// The body.
        body: Bytes,
    },
}

/// One call the node placed to a simulated channel.
struct SimCall {
    device: usize,
    channel: GbId,
    invite: Request,
    tag: String,
    answered: bool,
}

/// Counters a test or benchmark reads.
#[derive(Debug, Default, Clone)]
pub struct FleetStats {
    /// Devices currently registered.
    pub registered: usize,
    /// 200 OKs to REGISTER so far.
    pub register_ok: u64,
    /// 401 challenges so far.
    pub challenges: u64,
    /// 403s and other refusals so far.
    pub refused: u64,
    /// Catalog queries answered.
    pub catalog_queries: u64,
    /// RecordInfo queries answered.
    pub record_queries: u64,
    /// DeviceControl commands taken.
    pub controls: u64,
    /// When every device was first registered at once.
    pub all_registered_at: Option<Instant>,
    /// INVITEs received.
    pub invites: u64,
    /// BYEs received.
    pub byes: u64,
    /// SUBSCRIBEs received (new and refreshes).
    pub subscribes: u64,
}

/// The simulated fleet.
pub struct Fleet {
    cfg: FleetConfig,
    agent_addr: SocketAddr,
    devices: Vec<Device>,
    by_id: HashMap<GbId, usize>,
    tx: TransactionLayer<Token>,
    registering: usize,
    transmits: Vec<Transmit>,
    stats: FleetStats,
    started: Instant,
    channel_owner: HashMap<GbId, usize>,
    calls: HashMap<String, SimCall>,
    media_events: std::collections::VecDeque<MediaEvent>,
    /// Presets set on each channel: number → name.
    presets: HashMap<String, std::collections::BTreeMap<u8, String>>,
    /// What a SUBSCRIBE is granted: at most this long (`None`: refused
    /// with 489, as a device without subscriptions answers).
    subscription_limit: Option<Duration>,
}

fn id_for(prefix: &str, type_code: &str, serial: u32) -> Option<GbId> {
    GbId::parse(&format!("{prefix}{type_code}0{serial:06}")).ok()
}

/// The ID prefix `gbsim` gives a fleet registering to `server` unless
/// told otherwise: the server's civil code and industry `00`.
pub fn default_prefix(server: GbId) -> String {
    format!("{}00", &server.as_str()[..8])
}

impl Fleet {
    /// Build the fleet's devices and channels. IDs: `prefix` + type (132 IPC,
    /// 118 NVR, 131 channel) + network 0 + serial.
    pub fn new(cfg: FleetConfig, now: Instant) -> Result<Fleet, String> {
        if cfg.id_prefix.len() != 10 || !cfg.id_prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("id prefix {:?} must be 10 digits", cfg.id_prefix));
        }
        let mut devices = Vec::new();
        let mut serial = cfg.serial_base;
        let civil: String = cfg.id_prefix.chars().take(8).collect();
        let specs = (0..cfg.ipcs)
            .map(|i| (Kind::Ipc, i))
            .chain((0..cfg.nvrs).map(|i| (Kind::Nvr, i)));
        for (kind, i) in specs {
            // A device's ID, then its channels' IDs: they sort in tree order.
            let (type_code, name, n) = match kind {
                Kind::Ipc => ("132", format!("模拟摄像机 IPC{i}"), 1),
                Kind::Nvr => ("118", format!("模拟录像机 NVR{i}"), cfg.channels_per_nvr),
            };
            let id = next_id(&mut serial, &cfg.id_prefix, type_code)?;
            let mut channels = Vec::with_capacity(n);
            for c in 1..=n {
                let cid = next_id(&mut serial, &cfg.id_prefix, "131")?;
                channels.push(channel_item(cid, id, c, &name, &civil));
            }
            devices.push(Device {
                id,
                kind,
                name,
                channels,
                state: State::Idle { at: now },
                call_id: String::new(),
                cseq: 0,
                nc: 0,
                challenge: None,
                auth_tries: 0,
                next_keepalive: now,
                next_alarm: now + cfg.alarm_every.unwrap_or(Duration::ZERO),
                keepalive_sn: 0,
                granted: cfg.expires,
                answers: std::collections::VecDeque::new(),
                answers_in_flight: 0,
            });
        }
        let by_id = devices.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
        let channel_owner = devices
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                d.channels
                    .iter()
                    .filter_map(move |c| GbId::parse(&c.device_id).ok().map(|id| (id, i)))
            })
            .collect();
        Ok(Fleet {
            agent_addr: cfg.local,
            tx: TransactionLayer::new(Timers::default(), 1_000_000),
            cfg,
            devices,
            by_id,
            registering: 0,
            transmits: Vec::new(),
            stats: FleetStats::default(),
            started: now,
            channel_owner,
            calls: HashMap::new(),
            media_events: std::collections::VecDeque::new(),
            presets: HashMap::new(),
            subscription_limit: Some(Duration::from_secs(3600)),
        })
    }

    /// Grant SUBSCRIBEs for at most `limit` (`None`: refuse them).
    pub fn set_subscription_limit(&mut self, limit: Option<Duration>) {
        self.subscription_limit = limit;
    }

    /// A SUBSCRIBE to device `i`: granted as asked up to the limit, and a
    /// MobilePosition subscription gets the device's position at once in
    /// a NOTIFY of the dialog, as a mobile camera sends it.
    fn take_subscribe(&mut self, i: usize, req: &Request, now: Instant) {
        self.stats.subscribes += 1;
        let Some(limit) = self.subscription_limit else {
            let _ = self
                .tx
                .send_response(req, Response::to_request(req, 489, Some("sim")), now);
            return;
        };
        let asked = req
            .headers
            .get("Expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(3600);
        let granted = asked.min(limit.as_secs());
        let mut ok = Response::to_request(req, 200, Some("simsub"));
        ok.headers.push("Expires", granted.to_string());
        let agent = self.agent(i);
        ok.headers
            .push("Contact", format!("<{}>", agent.contact_uri()));
        let local = ok.headers.get("To").unwrap_or_default().to_owned();
        let _ = self.tx.send_response(req, ok, now);
        let wants_position = manscdp::parse(&req.body)
            .is_ok_and(|(b, _)| b.cmd_type().eq_ignore_ascii_case("MobilePosition"));
        if granted == 0 || !wants_position {
            return;
        }
        let (sn, cseq) = self.devices[i].next_numbers();
        let id = self.devices[i].id;
        let body = Manscdp::MobilePosition(MobilePosition {
            sn,
            device_id: id.to_string(),
            time: Some(local_time()),
            longitude: Some(119.296),
            latitude: Some(26.074),
            speed: Some(0.0),
            direction: Some(0.0),
            altitude: Some(8.0),
        })
        .to_body(Charset::Gb2312);
        // The node is where the fleet registers: its Contact says the same.
        let target = format!("sip:{}@{}", self.cfg.server_id, self.cfg.server.addr);
        let ids = gbgate::sip::agent::DialogIds {
            target: &target,
            local: &local,
            remote: req.headers.get("From").unwrap_or_default(),
            call_id: req.call_id().unwrap_or_default(),
            transport: self.cfg.server.transport,
        };
        let mut notify = agent.in_dialog(Method::Notify, &ids, cseq);
        notify
            .headers
            .push("Event", req.headers.get("Event").unwrap_or("presence"));
        notify
            .headers
            .push("Subscription-State", format!("active;expires={granted}"));
        notify.headers.push("Content-Type", MANSCDP);
        notify.body = body;
        let _ = self.send(notify, Token::Notify, now);
    }

    /// Counters so far.
    pub fn stats(&self) -> &FleetStats {
        &self.stats
    }

    /// When the fleet started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when the fleet has no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Every channel the fleet exposes.
    /// Every channel item, as the devices list them in catalog answers.
    pub fn channels(&self) -> impl Iterator<Item = &CatalogItem> {
        self.devices.iter().flat_map(|d| d.channels.iter())
    }

    /// Every channel's ID.
    pub fn channel_ids(&self) -> Vec<String> {
        self.devices
            .iter()
            .flat_map(|d| d.channels.iter().map(|c| c.device_id.clone()))
            .collect()
    }

    fn agent(&self, i: usize) -> Agent {
        Agent {
            id: self.devices[i].id,
            addr: self.agent_addr,
        }
    }

    fn register_request(&mut self, i: usize, expires: u64) -> Request {
        let agent = self.agent(i);
        let target = target_of(&self.cfg);
        let d = &mut self.devices[i];
        d.cseq += 1;
        let mut r = agent.request(Method::Register, &target, d.cseq, Some(&d.call_id), None);
        // A display name helps people reading the catalog.
        let from = r.headers.get("From").unwrap_or_default().to_owned();
        r.headers
            .set("From", format!("\"{}\" {from}", d.kind_label()));
        r.headers.set("Expires", expires.to_string());
        if let Some(c) = &d.challenge {
            d.nc += 1;
            let cnonce = format!("{:08x}", rand::random::<u32>());
            let creds = answer(
                c,
                "REGISTER",
                &r.uri,
                d.id.as_str(),
                &self.cfg.password,
                d.nc,
                &cnonce,
            );
            r.headers.set("Authorization", creds.to_header_value());
        }
        r
    }

    fn send(&mut self, req: Request, token: Token, now: Instant) -> bool {
        match self.tx.send_request(req, self.cfg.server, token, now) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "gbsim could not send");
                false
            }
        }
    }

    /// Feed one inbound message.
    pub fn handle_inbound(&mut self, inbound: Inbound, now: Instant) {
        match inbound {
            Inbound::Message {
                message: Message::Response(r),
                ..
            } => {
                if self.tx.handle_response(r, now) {
                    self.process_events(now);
                }
            }
            Inbound::Message {
                peer,
                message: Message::Request(r),
            } => self.handle_request(r, peer, now),
            // Devices have no QUIC links.
            Inbound::LinkUp { .. } | Inbound::LinkRefused { .. } => {}
            Inbound::Unreachable { peer } => {
                self.tx.fail_peer(peer);
                self.process_events(now);
            }
            Inbound::Malformed { peer, error, .. } => {
                tracing::warn!(%peer, %error, "gbsim got a malformed message");
            }
        }
    }

    fn handle_request(&mut self, req: Request, peer: Peer, now: Instant) {
        if req.method == Method::Ack {
            self.tx.handle_ack(&req, now);
            return;
        }
        match self.tx.handle_request(&req, peer, now) {
            Ok(Incoming::New) => {}
            _ => return,
        }
        if matches!(
            req.method,
            Method::Invite | Method::Bye | Method::Cancel | Method::Info
        ) {
            return self.handle_call_request(req, now);
        }
        let to = NameAddr::parse(req.headers.get("To").unwrap_or_default())
            .ok()
            .and_then(|n| n.uri.user)
            .and_then(|u| GbId::parse(&u).ok());
        let Some(i) = to.and_then(|id| self.by_id.get(&id).copied()) else {
            let _ = self
                .tx
                .send_response(&req, Response::to_request(&req, 404, Some("sim")), now);
            return;
        };
        if req.method == Method::Subscribe {
            return self.take_subscribe(i, &req, now);
        }
        if req.method != Method::Message {
            let _ = self
                .tx
                .send_response(&req, Response::to_request(&req, 501, Some("sim")), now);
            return;
        }
        let Ok((body, charset)) = manscdp::parse(&req.body) else {
            let _ = self
                .tx
                .send_response(&req, Response::to_request(&req, 400, Some("sim")), now);
            return;
        };
        let _ = self
            .tx
            .send_response(&req, Response::to_request(&req, 200, Some("sim")), now);
        let d = &self.devices[i];
        let answers: Vec<Bytes> = match body {
            Manscdp::CatalogQuery(q) => {
                self.stats.catalog_queries += 1;
                let sum = d.channels.len() as u32;
                split(
                    false,
                    q.sn,
                    d.id.as_str(),
                    sum,
                    &d.channels,
                    self.cfg.catalog_budget,
                    charset,
                )
            }
            Manscdp::DeviceInfoQuery(q) => vec![Manscdp::DeviceInfoResponse(DeviceInfo {
                sn: q.sn,
                device_id: q.device_id,
                device_name: Some(d.name.clone()),
                manufacturer: Some("gbsim".into()),
                model: Some(match d.kind {
                    Kind::Ipc => "SIM-IPC".into(),
                    Kind::Nvr => "SIM-NVR".into(),
                }),
                firmware: Some("1.0".into()),
                channel: Some(d.channels.len() as u32),
                result: "OK".into(),
            })
            .to_body(charset)],
            Manscdp::DeviceStatusQuery(q) => vec![Manscdp::DeviceStatusResponse(DeviceStatus {
                sn: q.sn,
                device_id: q.device_id,
                result: "OK".into(),
                online: Some("ONLINE".into()),
                status: Some("OK".into()),
                encode: Some("ON".into()),
                record: Some("OFF".into()),
                device_time: Some("2026-01-01T00:00:00".into()),
            })
            .to_body(charset)],
            Manscdp::DeviceControl(c) => {
                self.stats.controls += 1;
                let on_behalf_of = req.headers.get(gbgate::node::ON_BEHALF_OF).unwrap_or("-");
                match c.command {
                    ControlCommand::Ptz(cmd) => {
                        let action = cmd.action();
                        // Test-visible: the log line proves the command arrived.
                        tracing::info!(
                            "gbsim: PTZ {} {cmd} {action:?} priority={:?} on_behalf_of={on_behalf_of}",
                            c.device_id,
                            c.priority
                        );
                        let presets = self.presets.entry(c.device_id.clone()).or_default();
                        match action {
                            PtzAction::SetPreset(n) => {
                                presets.insert(n, format!("Preset {n}"));
                            }
                            PtzAction::DeletePreset(n) => {
                                presets.remove(&n);
                            }
                            _ => {}
                        }
                        Vec::new()
                    }
                    command => {
                        tracing::info!(
                            "gbsim: control {} {command:?} on_behalf_of={on_behalf_of}",
                            c.device_id
                        );
                        if command.unanswered() {
                            Vec::new()
                        } else {
                            vec![Manscdp::DeviceControlResponse(ControlResult {
                                sn: c.sn,
                                device_id: c.device_id,
                                result: "OK".into(),
                                ..ControlResult::default()
                            })
                            .to_body(charset)]
                        }
                    }
                }
            }
            Manscdp::ConfigQuery(q) => vec![Manscdp::ConfigResponse(ConfigAnswer {
                sn: q.sn,
                device_id: q.device_id,
                result: "OK".into(),
                name: Some(d.name.clone()),
                expiration: u32::try_from(self.cfg.expires.as_secs()).ok(),
                heartbeat_interval: u32::try_from(self.cfg.keepalive.as_secs()).ok(),
                heartbeat_count: Some(3),
            })
            .to_body(charset)],
            Manscdp::PresetQuery(q) => {
                let items = self
                    .presets
                    .get(&q.device_id)
                    .map(|m| {
                        m.iter()
                            .map(|(n, name)| Preset {
                                id: n.to_string(),
                                name: Some(name.clone()),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![Manscdp::PresetQueryResponse(PresetList {
                    sn: q.sn,
                    device_id: q.device_id,
                    items,
                })
                .to_body(charset)]
            }
            Manscdp::RecordInfoQuery(q) => {
                self.stats.record_queries += 1;
                record::split(records_for(&q, &d.name), self.cfg.catalog_budget, charset)
                    .into_iter()
                    .map(|part| Manscdp::RecordInfoResponse(part).to_body(charset))
                    .collect()
            }
            _ => Vec::new(),
        };
        self.devices[i].answers.extend(answers);
        self.pump_answers(i, now);
    }

    fn respond(&mut self, req: &Request, status: u16, tag: &str, now: Instant) {
        let _ = self
            .tx
            .send_response(req, Response::to_request(req, status, Some(tag)), now);
    }

    fn handle_call_request(&mut self, req: Request, now: Instant) {
        let call_id = req.call_id().unwrap_or_default().to_owned();
        match req.method {
            Method::Invite => {
                if self.calls.contains_key(&call_id) {
                    // A re-INVITE: keep the session.
                    return self.respond(&req, 200, "sim", now);
                }
                let channel = gbgate::sip::header::SipUri::parse(&req.uri)
                    .ok()
                    .and_then(|u| u.user)
                    .and_then(|u| GbId::parse(&u).ok());
                let Some((channel, device)) =
                    channel.and_then(|c| self.channel_owner.get(&c).map(|d| (c, *d)))
                else {
                    return self.respond(&req, 404, "sim", now);
                };
                let offer = match std::str::from_utf8(&req.body)
                    .ok()
                    .and_then(|s| GbSdp::parse(s).ok())
                {
                    Some(o) => o,
                    None => return self.respond(&req, 400, "sim", now),
                };
                let _ = self
                    .tx
                    .send_response(&req, Response::to_request(&req, 100, None), now);
                self.stats.invites += 1;
                tracing::info!(call = %call_id, %channel, session = offer.session.as_str(), "INVITE: streaming");
                let tag = format!("sim{}", rand::random::<u32>());
                self.calls.insert(
                    call_id.clone(),
                    SimCall {
                        device,
                        channel,
                        invite: req,
                        tag,
                        answered: false,
                    },
                );
                self.media_events.push_back(MediaEvent::Start {
                    call: call_id,
                    channel,
                    offer: Box::new(offer),
                });
            }
            Method::Bye => {
                let tag = self.calls.get(&call_id).map(|c| c.tag.clone());
                match tag {
                    Some(tag) => {
                        self.respond(&req, 200, &tag, now);
                        self.calls.remove(&call_id);
                        self.stats.byes += 1;
                        tracing::info!(call = %call_id, "BYE: stream stopped");
                        self.media_events
                            .push_back(MediaEvent::Stop { call: call_id });
                    }
                    None => self.respond(&req, 481, "sim", now),
                }
            }
            Method::Cancel => {
                let pending = self
                    .calls
                    .get(&call_id)
                    .filter(|c| !c.answered)
                    .map(|c| (c.invite.clone(), c.tag.clone()));
                // RFC 3261 §9.2: a CANCEL for an INVITE never seen is
                // 481; one for an INVITE already answered is 200 and
                // changes nothing.
                let known = self.calls.contains_key(&call_id);
                self.respond(&req, if known { 200 } else { 481 }, "sim", now);
                if let Some((invite, tag)) = pending {
                    self.respond(&invite, 487, &tag, now);
                    self.calls.remove(&call_id);
                    self.media_events
                        .push_back(MediaEvent::Stop { call: call_id });
                }
            }
            _ => {
                // INFO: MANSRTSP playback control.
                if self.calls.contains_key(&call_id) {
                    self.respond(&req, 200, "sim", now);
                    self.media_events.push_back(MediaEvent::Control {
                        call: call_id,
                        body: req.body.clone(),
                    });
                } else {
                    self.respond(&req, 481, "sim", now);
                }
            }
        }
    }

    /// The next media event for the driver.
    pub fn poll_media_event(&mut self) -> Option<MediaEvent> {
        self.media_events.pop_front()
    }

    /// Answer a call with 200 and `answer` (the sender's SDP).
    pub fn answer_call(&mut self, call: &str, answer: &GbSdp, now: Instant) {
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        c.answered = true;
        let mut r = Response::to_request(&c.invite, 200, Some(&c.tag));
        r.headers.push(
            "Contact",
            format!("<sip:{}@{}>", c.channel, self.agent_addr),
        );
        r.headers.push("Content-Type", "APPLICATION/SDP");
        r.body = Bytes::from(answer.to_string());
        let invite = c.invite.clone();
        let _ = self.tx.send_response(&invite, r, now);
    }

    /// Refuse a call the driver cannot serve.
    pub fn reject_call(&mut self, call: &str, status: u16, now: Instant) {
        if let Some(c) = self.calls.remove(call) {
            self.respond(&c.invite, status, &c.tag, now);
        }
    }

    /// A playback reached the end of its range: tell the node with the
    /// MediaStatus notify (NotifyType 121), as devices do.
    pub fn media_ended(&mut self, call: &str, now: Instant) {
        let Some(c) = self.calls.get(call) else {
            return;
        };
        let (device, channel) = (c.device, c.channel);
        let agent = self.agent(device);
        let target = target_of(&self.cfg);
        let d = &mut self.devices[device];
        d.cseq += 1;
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>{}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n",
            d.cseq
        );
        let r = agent.request(
            Method::Message,
            &target,
            d.cseq,
            None,
            Some((MANSCDP, Bytes::from(body))),
        );
        self.send(r, Token::Notify, now);
    }

    /// Send device `i`'s queued answers, at most the answer window in
    /// flight: a 1000-channel NVR answers in hundreds of datagrams, and
    /// real devices pace them too.
    fn pump_answers(&mut self, i: usize, now: Instant) {
        let window = self.cfg.answer_window.max(1);
        while self.devices[i].answers_in_flight < window {
            let Some(body) = self.devices[i].answers.pop_front() else {
                break;
            };
            let agent = self.agent(i);
            let target = target_of(&self.cfg);
            let d = &mut self.devices[i];
            d.cseq += 1;
            let r = agent.request(
                Method::Message,
                &target,
                d.cseq,
                None,
                Some((MANSCDP, body)),
            );
            if self.send(r, Token::Answer(i), now) {
                self.devices[i].answers_in_flight += 1;
            }
        }
    }

    fn process_events(&mut self, now: Instant) {
        let mut evs = Vec::new();
        self.tx.drain_events(&mut evs);
        for ev in evs {
            match ev {
                ClientEvent::Response { token, response } => self.on_response(token, response, now),
                ClientEvent::Timeout { token, .. } => match token {
                    Token::Register(i) => {
                        self.registering = self.registering.saturating_sub(1);
                        self.devices[i].state = State::Idle {
                            at: now + Duration::from_secs(1),
                        };
                    }
                    Token::Keepalive(_) | Token::Notify => {}
                    Token::Answer(i) => self.answer_done(i, now),
                },
            }
        }
    }

    fn on_response(&mut self, token: Token, r: Response, now: Instant) {
        match token {
            Token::Register(i) => match r.status {
                200..=299 => {
                    self.registering = self.registering.saturating_sub(1);
                    self.stats.register_ok += 1;
                    let d = &mut self.devices[i];
                    if !matches!(d.state, State::Registered { .. }) {
                        self.stats.registered += 1;
                    }
                    d.state = State::Registered { at: now };
                    d.granted = gbgate::sip::header::expires(&r.headers)
                        .map(|s| Duration::from_secs(u64::from(s)))
                        .filter(|g| !g.is_zero())
                        .unwrap_or(self.cfg.expires);
                    d.auth_tries = 0;
                    d.next_keepalive = now + self.cfg.keepalive;
                    if self.stats.registered == self.devices.len()
                        && self.stats.all_registered_at.is_none()
                    {
                        self.stats.all_registered_at = Some(now);
                    }
                }
                401 => {
                    self.stats.challenges += 1;
                    let c = r
                        .headers
                        .get("WWW-Authenticate")
                        .and_then(|v| Challenge::parse(v).ok());
                    let d = &mut self.devices[i];
                    if c.is_some() && d.auth_tries < 2 {
                        d.challenge = c;
                        d.nc = 0;
                        d.auth_tries += 1;
                        let secs = self.cfg.expires.as_secs();
                        let req = self.register_request(i, secs);
                        if !self.send(req, Token::Register(i), now) {
                            self.registering = self.registering.saturating_sub(1);
                            self.retry_later(i, now);
                        }
                    } else {
                        self.registering = self.registering.saturating_sub(1);
                        self.stats.refused += 1;
                        self.retry_later(i, now);
                    }
                }
                _ => {
                    self.registering = self.registering.saturating_sub(1);
                    self.stats.refused += 1;
                    tracing::warn!(id = %self.devices[i].id, status = r.status, "registration refused");
                    self.retry_later(i, now);
                }
            },
            Token::Keepalive(i) => {
                if r.status == 404 || r.status == 403 {
                    // The server forgot us (restart): re-register now.
                    self.retry_at(i, now);
                }
            }
            Token::Answer(i) => self.answer_done(i, now),
            Token::Notify => {}
        }
    }

    fn answer_done(&mut self, i: usize, now: Instant) {
        let d = &mut self.devices[i];
        d.answers_in_flight = d.answers_in_flight.saturating_sub(1);
        self.pump_answers(i, now);
    }

    fn retry_later(&mut self, i: usize, now: Instant) {
        self.retry_at(i, now + Duration::from_secs(2));
    }

    fn retry_at(&mut self, i: usize, at: Instant) {
        let d = &mut self.devices[i];
        if matches!(d.state, State::Registered { .. }) {
            self.stats.registered = self.stats.registered.saturating_sub(1);
        }
        d.state = State::Idle { at };
        d.challenge = None;
    }

    /// Run timers: registrations (within the window), refreshes, keepalives.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.process_events(now);
        for i in 0..self.devices.len() {
            let state = self.devices[i].state;
            match state {
                State::Idle { at } if now >= at && self.registering < self.cfg.register_window => {
                    self.registering += 1;
                    let d = &mut self.devices[i];
                    d.call_id = new_call_id(&self.agent_addr.ip().to_string());
                    d.challenge = None;
                    d.auth_tries = 0;
                    d.state = State::Registering;
                    let secs = self.cfg.expires.as_secs();
                    let req = self.register_request(i, secs);
                    if !self.send(req, Token::Register(i), now) {
                        self.registering = self.registering.saturating_sub(1);
                        self.retry_later(i, now);
                    }
                }
                State::Registered { at } => {
                    if now >= at + self.devices[i].granted * 2 / 3 {
                        self.registering += 1;
                        self.devices[i].state = State::Registering;
                        self.stats.registered = self.stats.registered.saturating_sub(1);
                        let secs = self.cfg.expires.as_secs();
                        let req = self.register_request(i, secs);
                        if !self.send(req, Token::Register(i), now) {
                            self.registering = self.registering.saturating_sub(1);
                            self.retry_later(i, now);
                        }
                    } else if let Some(every) = self
                        .cfg
                        .alarm_every
                        .filter(|_| now >= self.devices[i].next_alarm)
                    {
                        let d = &mut self.devices[i];
                        d.next_alarm = now + every;
                        let (sn, cseq) = d.next_numbers();
                        let channel = d
                            .channels
                            .first()
                            .map_or_else(|| d.id.to_string(), |c| c.device_id.clone());
                        // Test-visible: which alarm left, to match at the top.
                        tracing::info!("gbsim: alarm {channel} sn={sn}");
                        let body = Manscdp::AlarmNotify(Alarm {
                            sn,
                            device_id: channel,
                            priority: Some(1),
                            method: Some(5),
                            time: Some(local_time()),
                            description: Some(format!("motion detected (gbsim alarm {sn})")),
                            alarm_type: Some(2),
                            ..Alarm::default()
                        })
                        .to_body(Charset::Gb2312);
                        let req = self.agent(i).request(
                            Method::Message,
                            &target_of(&self.cfg),
                            cseq,
                            None,
                            Some((MANSCDP, body)),
                        );
                        let _ = self.send(req, Token::Keepalive(i), now);
                    } else if now >= self.devices[i].next_keepalive {
                        let d = &mut self.devices[i];
                        d.next_keepalive = now + self.cfg.keepalive;
                        let (sn, cseq) = d.next_numbers();
                        let id = d.id;
                        let body = Manscdp::Keepalive(Keepalive {
                            sn,
                            device_id: id.to_string(),
                            status: "OK".into(),
                            // Cameras keep no audit.
                            audit_head: None,
                        })
                        .to_body(Charset::Gb2312);
                        let req = self.agent(i).request(
                            Method::Message,
                            &target_of(&self.cfg),
                            cseq,
                            None,
                            Some((MANSCDP, body)),
                        );
                        let _ = self.send(req, Token::Keepalive(i), now);
                    }
                }
                _ => {}
            }
        }
    }

    /// When `handle_timeout` must next run.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        // Devices are scanned on a short tick; precise per-device wake-ups
        // would cost more than they save for a test tool.
        let tick = now + Duration::from_millis(50);
        self.tx.poll_timeout().map_or(tick, |t| t.min(tick))
    }

    /// Move queued messages into `out`.
    pub fn drain_transmits(&mut self, out: &mut Vec<Transmit>) {
        self.tx.drain_transmits(out);
        out.append(&mut self.transmits);
    }
}

/// Now as a GB local time, `YYYY-MM-DDTHH:MM:SS` (UTC: the simulator's
/// devices keep no zone).
fn local_time() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn target_of(cfg: &FleetConfig) -> Target<'_> {
    Target {
        id: cfg.server_id.as_str(),
        host: cfg.server.addr.to_string(),
        transport: cfg.server.transport,
    }
}

fn channel_item(id: GbId, parent: GbId, n: usize, name: &str, civil: &str) -> CatalogItem {
    CatalogItem {
        device_id: id.to_string(),
        name: Some(format!("{name} 通道{n}")),
        manufacturer: Some("gbsim".into()),
        model: Some("SIM-CAM".into()),
        owner: Some("0".into()),
        civil_code: Some(civil.to_owned()),
        address: Some(format!("东门 {n}号")),
        parental: Some(0),
        parent_id: Some(parent.to_string()),
        register_way: Some(1),
        secrecy: Some(0),
        status: Some("ON".into()),
        ..CatalogItem::default()
    }
}

/// Most records one answer lists: a month of hours.
const MAX_SIM_RECORDS: i64 = 31 * 24;

/// The simulated recordings in `q`'s range: the clip looped, filed hour by
/// hour, the first and last hours clamped to the range. Only `time`
/// recordings exist; a bad or empty range has none.
fn records_for(q: &RecordQuery, name: &str) -> RecordList {
    let mut list = RecordList {
        sn: q.sn,
        device_id: q.device_id.clone(),
        name: Some(name.to_owned()),
        sum_num: 0,
        items: Vec::new(),
    };
    let wanted = q
        .record_type
        .as_deref()
        .is_none_or(|t| t.eq_ignore_ascii_case("all") || t.eq_ignore_ascii_case("time"));
    let range = record::parse_local_time(&q.start_time).zip(record::parse_local_time(&q.end_time));
    let Some((start, end)) = range.filter(|(s, e)| s < e && wanted) else {
        return list;
    };
    let mut hour = start.div_euclid(3600);
    while hour * 3600 < end && (list.items.len() as i64) < MAX_SIM_RECORDS {
        let from = start.max(hour * 3600);
        let to = end.min((hour + 1) * 3600);
        list.items.push(RecordItem {
            device_id: q.device_id.clone(),
            name: Some(name.to_owned()),
            file_path: Some(format!("/gbsim/{}/{from}.ps", q.device_id)),
            address: None,
            start_time: record::format_local_time(from),
            end_time: record::format_local_time(to),
            secrecy: Some(0),
            record_type: Some("time".into()),
            recorder_id: Some(q.device_id.clone()),
            // 512 kbit/s.
            file_size: u64::try_from((to - from) * 64_000).ok(),
        });
        hour += 1;
    }
    list.sum_num = list.items.len() as u32;
    list
}

fn next_id(serial: &mut u32, prefix: &str, t: &str) -> Result<GbId, String> {
    let id = id_for(prefix, t, *serial)
        .ok_or_else(|| format!("serial {serial} does not fit 6 digits"))?;
    *serial += 1;
    Ok(id)
}

impl Device {
    /// The SN and CSeq of the next notification it sends.
    fn next_numbers(&mut self) -> (u32, u32) {
        self.keepalive_sn += 1;
        self.cseq += 1;
        (self.keepalive_sn, self.cseq)
    }

    fn kind_label(&self) -> &'static str {
        match self.kind {
            Kind::Ipc => "IPC",
            Kind::Nvr => "NVR",
        }
    }
}

/// What the fleet streams when INVITEd.
#[derive(Clone)]
pub struct MediaSources {
    /// Live video (looped for ever).
    pub live: crate::streamer::Source,
    /// "Recordings" served for playback (looped to fill the range).
    pub playback: crate::streamer::Source,
    /// Live streams start where a camera's encoder, running since the
    /// fleet started, would be: mid-GOP, as real cameras do. Otherwise at
    /// the clip's first keyframe (the best case for time to first frame).
    pub free_running: bool,
    /// Channels whose live video no decoder can start (a broken
    /// encoder), and what they send instead of `live`.
    pub broken: Option<(std::collections::HashSet<GbId>, crate::streamer::Source)>,
}

/// The driver's side of the calls: sockets and streaming tasks.
struct MediaDriver {
    sources: Option<MediaSources>,
    /// When the fleet's "encoders" started (see [`MediaSources::free_running`]).
    started: std::time::Instant,
    ip: std::net::IpAddr,
    controls: HashMap<String, tokio::sync::watch::Sender<crate::streamer::StreamControl>>,
    /// Playback speed per call, kept across PAUSE.
    scales: HashMap<String, f64>,
    ended_tx: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
}

impl MediaDriver {
    async fn on_event(&mut self, fleet: &mut Fleet, ev: MediaEvent) {
        use crate::streamer::{stream, Limit, MediaDest, StreamControl, StreamEnd, StreamOptions};
        use gbgate::media::sdp::{Direction, MediaTransport, SessionKind, Setup};
        match ev {
            MediaEvent::Start {
                call,
                channel,
                offer,
            } => {
                let Some(sources) = &self.sources else {
                    fleet.reject_call(&call, 488, Instant::now());
                    return;
                };
                let playback =
                    matches!(offer.session, SessionKind::Playback | SessionKind::Download);
                let source = match &sources.broken {
                    _ if playback => sources.playback.clone(),
                    Some((ids, bad)) if ids.contains(&channel) => bad.clone(),
                    _ => sources.live.clone(),
                };
                let to =
                    SocketAddr::new(offer.conn_addr.parse().unwrap_or(self.ip), offer.media_port);
                let bound = match (offer.transport, offer.setup) {
                    (MediaTransport::Udp, _) => {
                        tokio::net::UdpSocket::bind((self.ip, 0)).await.map(|s| {
                            let port = s.local_addr().map_or(0, |a| a.port());
                            (MediaDest::UdpFrom { socket: s, to }, port, None)
                        })
                    }
                    (MediaTransport::Tcp, Some(Setup::Active)) => {
                        tokio::net::TcpListener::bind((self.ip, 0)).await.map(|l| {
                            let port = l.local_addr().map_or(0, |a| a.port());
                            (
                                MediaDest::TcpPassive { listener: l },
                                port,
                                Some(Setup::Passive),
                            )
                        })
                    }
                    (MediaTransport::Tcp, _) => {
                        Ok((MediaDest::TcpActive { to }, 9, Some(Setup::Active)))
                    }
                    // A camera is never on a QUIC link.
                    (MediaTransport::Quic, _) => Err(std::io::Error::other(
                        "QUIC media is for links between gbgate nodes",
                    )),
                };
                let (dest, port, setup) = match bound {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "gbsim cannot bind a media socket");
                        fleet.reject_call(&call, 500, Instant::now());
                        return;
                    }
                };
                let ssrc = offer.ssrc.unwrap_or(0);
                let answer = GbSdp {
                    origin_user: channel.to_string(),
                    origin_addr: self.ip.to_string(),
                    session: offer.session.clone(),
                    uri: offer.uri.clone(),
                    conn_addr: self.ip.to_string(),
                    time: offer.time,
                    media: offer.media,
                    media_port: port,
                    transport: offer.transport,
                    payloads: vec![(96, "PS/90000".into())],
                    direction: Direction::SendOnly,
                    setup,
                    connection_new: setup.is_some(),
                    ssrc: Some(ssrc),
                    ssrc_text: offer.ssrc_text.clone(),
                    f: Some(String::new()),
                    download_speed: None,
                    file_size: None,
                    stream_number: None,
                };
                fleet.answer_call(&call, &answer, Instant::now());
                let mut opts = StreamOptions::new(ssrc);
                if playback {
                    let secs = offer.time.1.saturating_sub(offer.time.0).max(1);
                    opts = opts.with_limit(Limit::Duration(Duration::from_secs(secs)));
                } else if sources.free_running {
                    if let crate::streamer::Source::Clip(c) = &source {
                        let frames = self.started.elapsed().as_secs_f64() * f64::from(c.fps());
                        opts.first_frame = frames as u64;
                    }
                }
                let (ctl, ctl_rx) = tokio::sync::watch::channel(StreamControl::default());
                self.controls.insert(call.clone(), ctl);
                let ended = self.ended_tx.clone();
                tokio::spawn(async move {
                    let r = stream(source, dest, opts, ctl_rx).await;
                    let eof = matches!(&r, Ok(rep) if rep.end == StreamEnd::EndOfFile);
                    if let Err(e) = &r {
                        tracing::warn!(%call, error = %e, "gbsim stream failed");
                    }
                    let _ = ended.send((call, eof));
                });
            }
            MediaEvent::Stop { call } => {
                self.scales.remove(&call);
                if let Some(c) = self.controls.remove(&call) {
                    let _ = c.send(StreamControl::Stopped);
                }
            }
            MediaEvent::Control { call, body } => {
                use gbgate::gb::mansrtsp::{parse, MansRtspCommand};
                let Some(c) = self.controls.get(&call) else {
                    return;
                };
                let command = parse(&body).map(|m| m.command);
                // Test-visible: the console's pause and speed arrived.
                tracing::info!(%call, "gbsim: playback control {command:?}");
                match command {
                    Ok(MansRtspCommand::Pause { .. }) => {
                        let _ = c.send(StreamControl::Paused);
                    }
                    Ok(cmd @ MansRtspCommand::Play { scale, .. }) => {
                        // The speed lasts across pauses until a new Scale.
                        let prev = self.scales.get(&call).copied().unwrap_or(1.0);
                        let scale = scale.unwrap_or(prev);
                        self.scales.insert(call.clone(), scale);
                        // `Range: npt=S-` seeks (and plays); no Range or
                        // `npt=now-` resumes.
                        let next = match cmd.seek_seconds() {
                            Some(s) => StreamControl::Seek {
                                position: Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO),
                                scale,
                            },
                            None => StreamControl::Playing { scale },
                        };
                        let _ = c.send(next);
                    }
                    Ok(MansRtspCommand::Teardown) => {
                        let _ = c.send(StreamControl::Stopped);
                    }
                    Err(e) => tracing::warn!(%call, error = %e, "gbsim got bad MANSRTSP"),
                }
            }
        }
    }
}

/// Drive a fleet over real sockets until `shutdown` fires. `on_tick` sees
/// the stats after each batch of work (benchmarks stop themselves there).
/// With `media`, INVITEs are answered and streamed from those sources.
pub async fn run(
    mut cfg: FleetConfig,
    media: Option<MediaSources>,
    shutdown: tokio_util::sync::CancellationToken,
    mut on_tick: impl FnMut(&FleetStats, Instant) -> bool,
) -> anyhow::Result<FleetStats> {
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut driver = MediaDriver {
        sources: media,
        started: std::time::Instant::now(),
        ip: cfg.local.ip(),
        controls: HashMap::new(),
        scales: HashMap::new(),
        ended_tx,
    };
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(16 * 1024);
    let transports = gbgate::transport::Transports::bind(
        cfg.local,
        None,
        in_tx,
        gbgate::transport::Limits {
            max_message: 65_535,
            max_connections: 1024,
        },
        shutdown.child_token(),
    )
    .await?;
    // With port 0 the sockets picked one port for UDP and TCP; devices
    // advertise it in Via and Contact.
    cfg.local = transports.local_addr();
    tracing::info!(local = %cfg.local, "gbsim sockets bound");
    let mut fleet = Fleet::new(cfg, Instant::now()).map_err(anyhow::Error::msg)?;
    let transports = Arc::new(transports);
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        let wake = fleet.poll_timeout(now);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            m = in_rx.recv() => {
                let Some(m) = m else { break };
                fleet.handle_inbound(m, Instant::now());
                let mut n = 0;
                while let Ok(m) = in_rx.try_recv() {
                    fleet.handle_inbound(m, Instant::now());
                    n += 1;
                    if n > 512 { break; }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => fleet.handle_timeout(Instant::now()),
            e = ended_rx.recv() => {
                if let Some((call, eof)) = e {
                    driver.controls.remove(&call);
                    driver.scales.remove(&call);
                    if eof {
                        fleet.media_ended(&call, Instant::now());
                    }
                }
            }
        }
        while let Some(ev) = fleet.poll_media_event() {
            driver.on_event(&mut fleet, ev).await;
        }
        fleet.drain_transmits(&mut out);
        for t in out.drain(..) {
            transports.send(t);
        }
        if !on_tick(fleet.stats(), Instant::now()) {
            break;
        }
    }
    Ok(fleet.stats().clone())
}

/// Transport from a CLI word.
pub fn parse_transport(s: &str) -> Result<Transport, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        other => Err(format!("transport {other:?}: use udp or tcp")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    fn query(start: &str, end: &str) -> RecordQuery {
        RecordQuery::new(9, "35010200001310000002", start, end)
    }

    #[test]
    fn one_record_per_hour_clamped_to_the_range() {
        let l = records_for(&query("2024-05-01T08:30:00", "2024-05-01T11:15:00"), "cam");
        let spans: Vec<(String, String)> = l
            .items
            .iter()
            .map(|r| (r.start_time.clone().unwrap(), r.end_time.clone().unwrap()))
            .collect();
        assert_eq!(
            spans,
            [
                ("2024-05-01T08:30:00", "2024-05-01T09:00:00"),
                ("2024-05-01T09:00:00", "2024-05-01T10:00:00"),
                ("2024-05-01T10:00:00", "2024-05-01T11:00:00"),
                ("2024-05-01T11:00:00", "2024-05-01T11:15:00"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!((l.sn, l.sum_num), (9, 4));
        assert_eq!(l.items[0].file_size, Some(1800 * 64_000));
        // Empty or reversed ranges, other types, and a year is capped.
        assert!(
            records_for(&query("2024-05-01T08:30:00", "2024-05-01T08:30:00"), "c")
                .items
                .is_empty()
        );
        assert!(records_for(&query("bad", "2024-05-01T08:30:00"), "c")
            .items
            .is_empty());
        let mut alarm = query("2024-05-01T08:30:00", "2024-05-01T11:15:00");
        alarm.record_type = Some("alarm".into());
        assert_eq!(records_for(&alarm, "c").sum_num, 0);
        let year = records_for(&query("2024-01-01T00:00:00", "2025-01-01T00:00:00"), "c");
        assert_eq!(year.items.len() as i64, MAX_SIM_RECORDS);
    }
}
