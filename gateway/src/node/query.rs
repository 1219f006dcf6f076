//! Device queries (DeviceInfo, DeviceStatus, RecordInfo, PresetQuery) and
//! device control that this node forwards down the cascade on someone's
//! behalf, sans-IO (the control lock is in `control.rs`).
//!
//! Two kinds of requester wait here: the HTTP API ([`Node::ask_device`],
//! answered through [`QueryAnswered`] events) and the parent's RecordInfo
//! queries (answered with SIP MESSAGEs, split like catalogs). The parent's
//! DeviceInfo/DeviceStatus queries keep their own table in `mod.rs`.
//!
//! A query goes to the registrant that owns the ID (a device here or the
//! child node it came through) with an SN of ours, so answers are matched
//! by (registrant, SN) at every hop.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use topology::GbId;

use super::{gb_date, Node, Token, MAX_FORWARDS};
use crate::gb::charset::Charset;
use crate::gb::manscdp::{
    ConfigAnswer, ConfigQuery, ControlCommand, ControlResult, DeviceControl, DeviceInfo,
    DeviceStatus, Manscdp, PresetList, RecordList, RecordQuery, SimpleQuery,
};
use crate::gb::record::{self, RecordAssembly};
use crate::sip::{Peer, Transport};
use policy::Subject;

/// Identifies one HTTP query until its answer comes back.
pub type Ticket = u64;

/// What the HTTP API asks about a device or channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceQuery {
    /// DeviceInfo: name, manufacturer, model, firmware.
    Info,
    /// DeviceStatus: online, working, recording.
    Status,
    /// RecordInfo: the recordings in a range of GB local times.
    Records {
        /// `StartTime`, `YYYY-MM-DDTHH:MM:SS`.
        start: String,
        /// `EndTime`, `YYYY-MM-DDTHH:MM:SS`.
        end: String,
        /// `Type`: `all`, `time`, `alarm` or `manual`.
        record_type: String,
    },
    /// PresetQuery: the presets of a PTZ camera.
    Presets,
    /// ConfigDownload of `config_type` (e.g. `BasicParam`).
    Config {
        /// `ConfigType`.
        config_type: String,
    },
    /// DeviceControl: a command, given for `by` (the lock's holder if it
    /// goes through; its priority is this node's `ptz_priority` for it).
    Control {
        /// The command.
        command: ControlCommand,
        /// On whose behalf.
        by: Subject,
    },
}

/// How a DeviceControl went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// The device took it (its 200 to a PTZ command, or `Result` OK).
    Done,
    /// Another holds the camera's control lock.
    Locked {
        /// The holder (`dept:police`, `node:<id>`).
        holder: String,
        /// How long its lock lasts, in seconds.
        seconds_left: u32,
    },
    /// The device answered `Result` ERROR.
    DeviceError,
    /// The command did not reach the device: the SIP status it met on the
    /// way (408 when nothing answered, 503 when this node was too busy).
    Undelivered(u16),
}

/// The device's answer to a [`DeviceQuery`].
#[derive(Debug, Clone, PartialEq)]
pub enum QueryAnswer {
    /// Answer to [`DeviceQuery::Info`].
    Info(DeviceInfo),
    /// Answer to [`DeviceQuery::Status`].
    Status(DeviceStatus),
    /// Answer to [`DeviceQuery::Records`], every part collected.
    Records {
        /// The records; `sum_num` as the device announced it.
        list: RecordList,
        /// False when parts stopped coming before `SumNum` records did.
        complete: bool,
    },
    /// Answer to [`DeviceQuery::Presets`].
    Presets(PresetList),
    /// Answer to [`DeviceQuery::Config`].
    Config(ConfigAnswer),
    /// Answer to [`DeviceQuery::Control`].
    Control {
        /// The ID controlled.
        device_id: String,
        /// How it went.
        outcome: ControlOutcome,
    },
}

/// Why a [`DeviceQuery`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The ID is neither this node nor online below it. Deliberately says
    /// no more (unknown and offline look alike to the asker).
    #[error("no such device")]
    NotFound,
    /// Too many queries are pending, or the query could not be sent.
    #[error("too many queries pending; try again later")]
    Busy,
    /// No answer within [`crate::settings::Settings::query_timeout`].
    #[error("the device did not answer in time")]
    TimedOut,
}

/// The outcome of one [`Node::ask_device`].
#[derive(Debug)]
pub struct QueryAnswered {
    /// The ticket [`Node::ask_device`] returned.
    pub ticket: Ticket,
    /// The answer, or why there is none.
    pub result: Result<QueryAnswer, QueryError>,
}

/// Who waits for a forwarded query's answer.
#[derive(Debug)]
pub(super) enum Waiter {
    /// The HTTP API.
    Api(Ticket),
    /// A peer (the parent) that asked with its own SN.
    Peer { requester: GbId, sn: u32 },
}

/// A query or command forwarded below, waiting for its answer.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) waiter: Waiter,
    pub(super) at: Instant,
    pub(super) records: Option<RecordAssembly>,
    /// For a DeviceControl: the ID controlled, and whether the device's
    /// 200 ends it (no `Response` is to come).
    pub(super) control: Option<(String, bool)>,
}

/// Queries of one node awaiting answers from below.
#[derive(Debug, Default)]
pub(super) struct Queries {
    next_ticket: Ticket,
    /// (registrant asked, SN we used) → who waits.
    pub(super) pending: HashMap<(GbId, u32), Pending>,
    events: VecDeque<QueryAnswered>,
}

impl Node {
    /// Ask the device or channel `id` (this node, or anything online below)
    /// `query` on behalf of the HTTP API. The answer comes later as a
    /// [`QueryAnswered`] with the returned ticket ([`Self::poll_query_answer`]);
    /// answers known at once (this node's own ID, unknown IDs, a full table)
    /// are queued before this returns.
    pub fn ask_device(&mut self, id: GbId, query: DeviceQuery, now: Instant) -> Ticket {
        self.queries.next_ticket += 1;
        let ticket = self.queries.next_ticket;
        if let Some(result) = self.start_api_query(id, query, ticket, now) {
            self.queries
                .events
                .push_back(QueryAnswered { ticket, result });
        }
        ticket
    }

    /// The next answer to an [`Self::ask_device`] query.
    pub fn poll_query_answer(&mut self) -> Option<QueryAnswered> {
        self.queries.events.pop_front()
    }

    /// Queries forwarded below and still unanswered (API and parent
    /// RecordInfo).
    pub fn pending_queries(&self) -> usize {
        self.queries.pending.len()
    }

    fn start_api_query(
        &mut self,
        id: GbId,
        query: DeviceQuery,
        ticket: Ticket,
        now: Instant,
    ) -> Option<Result<QueryAnswer, QueryError>> {
        if id == self.identity.id {
            return Some(Ok(match query {
                DeviceQuery::Info => QueryAnswer::Info(self.own_device_info(0)),
                DeviceQuery::Status => QueryAnswer::Status(self.own_device_status(0)),
                // A gateway records nothing itself.
                DeviceQuery::Records { .. } => QueryAnswer::Records {
                    list: self.no_records(0, id.to_string()),
                    complete: true,
                },
                DeviceQuery::Presets => QueryAnswer::Presets(PresetList {
                    sn: 0,
                    device_id: id.to_string(),
                    items: Vec::new(),
                }),
                DeviceQuery::Config { .. } => QueryAnswer::Config(self.own_config(0)),
                // Nothing to steer here.
                DeviceQuery::Control { .. } => return Some(Err(QueryError::NotFound)),
            }));
        }
        let Some(owner) = self.query_owner(id.as_str()) else {
            return Some(Err(QueryError::NotFound));
        };
        // An entry that is OFF cannot answer for itself, however many hops
        // down it sits; its recordings may still be on an NVR that is up.
        let answers_itself = !matches!(query, DeviceQuery::Records { .. });
        if answers_itself
            && owner != id
            && self.catalog.get(id.as_str()).is_some_and(|e| !e.is_on())
        {
            return Some(Err(QueryError::NotFound));
        }
        if self.queries.pending.len() >= MAX_FORWARDS {
            tracing::warn!(
                limit = MAX_FORWARDS,
                "too many device queries pending; refusing"
            );
            return Some(Err(QueryError::Busy));
        }
        if let DeviceQuery::Control { command, by } = query {
            let control = DeviceControl {
                sn: 0,
                device_id: id.to_string(),
                command,
                priority: Some(self.ptz_priority(&by)),
            };
            self.route_control(owner, control, &by, Waiter::Api(ticket), now);
            return None;
        }
        let sn = self.next_sn();
        let device_id = id.to_string();
        let msg = match query {
            DeviceQuery::Info => Manscdp::DeviceInfoQuery(SimpleQuery::new(sn, device_id)),
            DeviceQuery::Status => Manscdp::DeviceStatusQuery(SimpleQuery::new(sn, device_id)),
            DeviceQuery::Records {
                start,
                end,
                record_type,
            } => {
                let mut q = RecordQuery::new(sn, device_id, start, end);
                q.record_type = Some(record_type);
                Manscdp::RecordInfoQuery(q)
            }
            DeviceQuery::Presets => Manscdp::PresetQuery(SimpleQuery::new(sn, device_id)),
            DeviceQuery::Config { config_type } => Manscdp::ConfigQuery(ConfigQuery {
                sn,
                device_id,
                config_type,
            }),
            DeviceQuery::Control { .. } => return None,
        };
        if !self.send_to_registrant(owner, &msg, Token::Query(owner), now) {
            return Some(Err(QueryError::Busy));
        }
        self.queries.pending.insert(
            (owner, sn),
            Pending {
                waiter: Waiter::Api(ticket),
                at: now,
                records: None,
                control: None,
            },
        );
        None
    }

    /// Sends `msg` (a query carrying our own SN) to `owner`; `waiter`
    /// hears the answer. A full table or an unsendable query is dropped
    /// with a warning, as the parent's queries are.
    pub(super) fn forward_to_owner(
        &mut self,
        owner: GbId,
        msg: Manscdp,
        waiter: Waiter,
        now: Instant,
    ) {
        if self.queries.pending.len() >= MAX_FORWARDS {
            tracing::warn!(
                limit = MAX_FORWARDS,
                "too many forwarded queries pending; refusing"
            );
            return;
        }
        let sn = self.next_sn();
        let msg = match msg {
            Manscdp::PresetQuery(q) => Manscdp::PresetQuery(SimpleQuery { sn, ..q }),
            Manscdp::ConfigQuery(q) => Manscdp::ConfigQuery(ConfigQuery { sn, ..q }),
            Manscdp::RecordInfoQuery(q) => Manscdp::RecordInfoQuery(RecordQuery { sn, ..q }),
            other => {
                tracing::warn!(cmd = other.cmd_type(), "not a query that is forwarded");
                return;
            }
        };
        if self.send_to_registrant(owner, &msg, Token::Query(owner), now) {
            self.queries.pending.insert(
                (owner, sn),
                Pending {
                    waiter,
                    at: now,
                    records: None,
                    control: None,
                },
            );
        }
    }

    /// The online registrant a query for `device_id` goes to: the device
    /// itself if registered here, else the source its catalog entry came
    /// through.
    pub(super) fn query_owner(&self, device_id: &str) -> Option<GbId> {
        GbId::parse(device_id)
            .ok()
            .filter(|id| self.registry.get(id).is_some())
            .or_else(|| self.catalog.source_of(device_id))
            .filter(|o| self.registry.get(o).is_some_and(|r| r.online))
    }

    /// [`Self::query_owner`] of a parent's request, which this node answers
    /// itself when it names this node.
    pub(super) fn owner_below(&self, device_id: &str) -> Option<GbId> {
        (device_id != self.identity.id.as_str())
            .then(|| self.query_owner(device_id))
            .flatten()
    }

    /// This node's own DeviceInfo answer.
    pub(super) fn own_device_info(&self, sn: u32) -> DeviceInfo {
        DeviceInfo {
            sn,
            device_id: self.identity.id.to_string(),
            device_name: Some(self.identity.name.clone()),
            manufacturer: Some("gbgate".into()),
            model: Some("gbgate gateway".into()),
            firmware: Some(env!("CARGO_PKG_VERSION").into()),
            channel: Some(u32::try_from(self.catalog.channel_count()).unwrap_or(u32::MAX)),
            result: "OK".into(),
        }
    }

    /// This node's own ConfigDownload answer: its BasicParam toward its
    /// parent.
    pub(super) fn own_config(&self, sn: u32) -> ConfigAnswer {
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        ConfigAnswer {
            sn,
            device_id: self.identity.id.to_string(),
            result: "OK".into(),
            name: Some(self.identity.name.clone()),
            expiration: Some(secs(self.settings.register_expires)),
            heartbeat_interval: Some(secs(self.settings.keepalive_interval)),
            heartbeat_count: Some(self.settings.keepalive_timeout_count),
        }
    }

    /// This node's own DeviceStatus answer.
    pub(super) fn own_device_status(&self, sn: u32) -> DeviceStatus {
        DeviceStatus {
            sn,
            device_id: self.identity.id.to_string(),
            result: "OK".into(),
            online: Some("ONLINE".into()),
            status: Some("OK".into()),
            encode: None,
            record: None,
            device_time: Some(gb_date().chars().take(19).collect()),
        }
    }

    pub(super) fn no_records(&self, sn: u32, device_id: String) -> RecordList {
        RecordList {
            sn,
            device_id,
            name: None,
            sum_num: 0,
            items: Vec::new(),
        }
    }

    /// A RecordInfo query from `requester` (the parent): forwarded to the
    /// owner of the ID; the split answer is collected, then sent up with
    /// the requester's SN. This node itself, and IDs unknown or offline
    /// here, get an empty list (`SumNum` 0), as platforms answer.
    pub(super) fn forward_record_query(&mut self, requester: GbId, q: RecordQuery, now: Instant) {
        let owner = self.owner_below(&q.device_id);
        let Some(owner) = owner else {
            let empty = self.no_records(q.sn, q.device_id);
            return self.answer_requester(requester, &Manscdp::RecordInfoResponse(empty), now);
        };
        let waiter = Waiter::Peer {
            requester,
            sn: q.sn,
        };
        self.forward_to_owner(owner, Manscdp::RecordInfoQuery(q), waiter, now);
    }

    /// Takes an answer from `sender` to a query of this module; any other
    /// message is handed back for the usual handling.
    pub(super) fn take_query_answer(
        &mut self,
        sender: GbId,
        body: Manscdp,
        now: Instant,
    ) -> Option<Manscdp> {
        let key = (sender, body.sn());
        let answer = matches!(
            body,
            Manscdp::DeviceInfoResponse(_)
                | Manscdp::DeviceStatusResponse(_)
                | Manscdp::RecordInfoResponse(_)
                | Manscdp::PresetQueryResponse(_)
                | Manscdp::ConfigResponse(_)
                | Manscdp::DeviceControlResponse(_)
        );
        if !answer || !self.queries.pending.contains_key(&key) {
            return Some(body);
        }
        let (waiter, answer) = match body {
            Manscdp::RecordInfoResponse(part) => {
                let pending = self.queries.pending.get_mut(&key)?;
                let complete = match pending.records.as_mut() {
                    Some(asm) => asm.add(part, now),
                    None => {
                        let asm = RecordAssembly::new(part, now);
                        let complete = asm.is_complete();
                        pending.records = Some(asm);
                        complete
                    }
                };
                if !complete {
                    return None;
                }
                let p = self.queries.pending.remove(&key)?;
                let list = p.records?.into_list();
                let answer = QueryAnswer::Records {
                    list,
                    complete: true,
                };
                (p.waiter, answer)
            }
            Manscdp::DeviceInfoResponse(info) => (
                self.queries.pending.remove(&key)?.waiter,
                QueryAnswer::Info(info),
            ),
            Manscdp::DeviceStatusResponse(st) => (
                self.queries.pending.remove(&key)?.waiter,
                QueryAnswer::Status(st),
            ),
            Manscdp::PresetQueryResponse(list) => (
                self.queries.pending.remove(&key)?.waiter,
                QueryAnswer::Presets(list),
            ),
            Manscdp::ConfigResponse(c) => (
                self.queries.pending.remove(&key)?.waiter,
                QueryAnswer::Config(c),
            ),
            Manscdp::DeviceControlResponse(r) => {
                let p = self.queries.pending.remove(&key)?;
                let outcome = if r.result.eq_ignore_ascii_case("OK") {
                    ControlOutcome::Done
                } else if let Some(holder) = r.lock_holder {
                    ControlOutcome::Locked {
                        holder,
                        seconds_left: r.lock_seconds_left.unwrap_or(0),
                    }
                } else {
                    ControlOutcome::DeviceError
                };
                let device_id = p.control.map_or(r.device_id, |(id, _)| id);
                (p.waiter, QueryAnswer::Control { device_id, outcome })
            }
            _ => return None,
        };
        self.deliver(waiter, answer, now);
        None
    }

    pub(super) fn deliver(&mut self, waiter: Waiter, answer: QueryAnswer, now: Instant) {
        match waiter {
            Waiter::Api(ticket) => self.queries.events.push_back(QueryAnswered {
                ticket,
                result: Ok(answer),
            }),
            Waiter::Peer { requester, sn } => match answer {
                QueryAnswer::Info(mut info) => {
                    info.sn = sn;
                    self.answer_requester(requester, &Manscdp::DeviceInfoResponse(info), now);
                }
                QueryAnswer::Status(mut st) => {
                    st.sn = sn;
                    self.answer_requester(requester, &Manscdp::DeviceStatusResponse(st), now);
                }
                QueryAnswer::Presets(mut list) => {
                    list.sn = sn;
                    self.answer_requester(requester, &Manscdp::PresetQueryResponse(list), now);
                }
                QueryAnswer::Config(mut c) => {
                    c.sn = sn;
                    self.answer_requester(requester, &Manscdp::ConfigResponse(c), now);
                }
                QueryAnswer::Control { device_id, outcome } => {
                    let mut r = ControlResult {
                        sn,
                        device_id,
                        result: "ERROR".into(),
                        ..ControlResult::default()
                    };
                    match outcome {
                        ControlOutcome::Done => r.result = "OK".into(),
                        ControlOutcome::Locked {
                            holder,
                            seconds_left,
                        } => {
                            r.lock_holder = Some(holder);
                            r.lock_seconds_left = Some(seconds_left);
                        }
                        ControlOutcome::DeviceError | ControlOutcome::Undelivered(_) => {}
                    }
                    self.answer_requester(requester, &Manscdp::DeviceControlResponse(r), now);
                }
                QueryAnswer::Records { mut list, complete } => {
                    list.sn = sn;
                    if !complete {
                        // Say what is really there, so the requester does not
                        // wait for parts that will never come.
                        list.sum_num = u32::try_from(list.items.len()).unwrap_or(u32::MAX);
                    }
                    let budget = self.answer_budget(requester);
                    // UTF-8 is never shorter than GB2312 for the same text,
                    // so parts measured in it fit in either.
                    for part in record::split(list, budget, Charset::Utf8) {
                        self.answer_requester(requester, &Manscdp::RecordInfoResponse(part), now);
                    }
                }
            },
        }
    }

    /// Body bytes an answer MESSAGE to `requester` may carry. The parent's
    /// address is not at hand here, so its head is sized as for a UDP peer
    /// at our own address, with a margin for a longer one.
    fn answer_budget(&self, requester: GbId) -> usize {
        let peer = self
            .registry
            .get(&requester)
            .map_or(Peer::plain(Transport::Udp, self.identity.addr), |r| r.peer);
        self.body_budget(requester, peer)
            .saturating_sub(64)
            .max(256)
    }

    /// Gives up on queries unanswered for [`crate::settings::Settings::query_timeout`],
    /// and ends record answers whose parts stopped coming for
    /// `catalog_part_timeout` with what came.
    pub(super) fn sweep_queries(&mut self, now: Instant) {
        self.locks.sweep(now);
        self.sweep_subscriptions(now);
        self.sweep_device_subscriptions(now);
        let ttl = self.settings.query_timeout;
        let idle = self.settings.catalog_part_timeout;
        let due: Vec<(GbId, u32)> = self
            .queries
            .pending
            .iter()
            .filter(|(_, p)| {
                now.duration_since(p.at) > ttl
                    || p.records
                        .as_ref()
                        .is_some_and(|a| now.duration_since(a.last_activity()) > idle)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(p) = self.queries.pending.remove(&key) else {
                continue;
            };
            match (p.records, p.waiter) {
                (Some(asm), waiter) => {
                    tracing::warn!(source = %key.0, got = asm.received(), "record answer incomplete; keeping what came");
                    let answer = QueryAnswer::Records {
                        list: asm.into_list(),
                        complete: false,
                    };
                    self.deliver(waiter, answer, now);
                }
                (None, Waiter::Api(ticket)) => {
                    tracing::debug!(source = %key.0, "device query unanswered");
                    self.queries.events.push_back(QueryAnswered {
                        ticket,
                        result: Err(QueryError::TimedOut),
                    });
                }
                (None, Waiter::Peer { .. }) => {
                    tracing::debug!(source = %key.0, "forwarded record query unanswered");
                }
            }
        }
    }

    /// Pending queries to a registrant that left will not be answered.
    pub(super) fn forget_queries_to(&mut self, id: GbId) {
        let gone: Vec<(GbId, u32)> = self
            .queries
            .pending
            .keys()
            .filter(|(src, _)| *src == id)
            .copied()
            .collect();
        for key in gone {
            if let Some(Pending {
                waiter: Waiter::Api(ticket),
                ..
            }) = self.queries.pending.remove(&key)
            {
                self.queries.events.push_back(QueryAnswered {
                    ticket,
                    result: Err(QueryError::NotFound),
                });
            }
        }
    }
}
