//! A village node, a device fleet and a scripted parent platform, all
//! sans-IO, joined by an in-memory network that loses and duplicates
//! datagrams (quinn's `Pair` habit): every timer and retransmission runs on
//! virtual time, so the test is exact and fast.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gbgate::gb::manscdp::{self, Manscdp, RecordQuery, SimpleQuery};
use gbgate::media::sdp::GbSdp;
use gbgate::node::{
    CallEvent, CallKind, DeviceQuery, Identity, Inbound, Node, QueryAnswer, QueryAnswered,
    QueryError,
};
use gbgate::settings::Settings;
use gbgate::sip::agent::{Agent, Target, MANSCDP};
use gbgate::sip::header::Reason;
use gbgate::sip::message::{Message, Method, Request, Response};
use gbgate::sip::{Peer, Transmit, Transport};
use integration::sim::MediaEvent;
use integration::sim::{Fleet, FleetConfig};
use topology::{Credentials, GbId};

const PARENT: &str = "35010200002000000001";
const VILLAGE: &str = "35010201002000000011";

fn udp(port: u16) -> Peer {
    Peer::plain(Transport::Udp, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Deterministic impairment: drop every `drop_every`-th datagram, duplicate every `dup_every`-th.
struct Net {
    sent: u64,
    drop_every: u64,
    dup_every: u64,
    dropped: u64,
}

impl Net {
    fn carry(&mut self, t: Transmit) -> Vec<Transmit> {
        self.sent += 1;
        if self.sent % self.drop_every == 0 {
            self.dropped += 1;
            return Vec::new();
        }
        if self.sent % self.dup_every == 0 {
            return vec![t.clone(), t];
        }
        vec![t]
    }
}

/// The parent platform, scripted: accepts REGISTER, 200s every MESSAGE and keeps its bodies.
struct Parent {
    agent: Agent,
    bodies: Vec<Manscdp>,
    seen: HashSet<String>,
    registered: bool,
    /// Call-IDs of the REGISTERs it accepted (a new one is a new binding).
    register_call_ids: Vec<String>,
    /// Leave catalog change MESSAGEs unanswered (a parent that cannot keep up).
    ignore_notifies: bool,
    /// Answer catalog change MESSAGEs with 501 (a platform that takes none).
    refuse_notifies: bool,
    /// Catalog change MESSAGEs it refused.
    refused: usize,
    /// Answer this many catalog change MESSAGEs 503 with Retry-After 2.
    busy_notifies: usize,
    /// Responses the node sent to the parent's requests (INVITE answers).
    responses: Vec<Response>,
    /// Query the catalog when a REGISTER arrives and keep the 200 back
    /// until released: the query overtakes the answer to the REGISTER.
    query_before_ok: bool,
    /// The 200 kept back.
    held_ok: Option<Vec<u8>>,
}

impl Parent {
    fn handle(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        match Message::parse(data).unwrap() {
            Message::Request(req) => {
                let mut r = Response::to_request(&req, 200, Some("p"));
                if req.method == Method::Register {
                    r.headers.push("Expires", "3600");
                    if self.query_before_ok {
                        let first = self.held_ok.is_none();
                        self.held_ok = Some(r.to_bytes().to_vec());
                        if !first {
                            return Vec::new();
                        }
                        let q = self.query(Manscdp::CatalogQuery(SimpleQuery::new(5, VILLAGE)), 5);
                        return vec![q.to_bytes().to_vec()];
                    }
                    self.registered = true;
                    let call_id = req.call_id().unwrap_or_default().to_owned();
                    if self.register_call_ids.last() != Some(&call_id) {
                        self.register_call_ids.push(call_id);
                    }
                } else if req.method == Method::Message {
                    if self.ignore_notifies
                        && matches!(
                            manscdp::parse(&req.body),
                            Ok((Manscdp::CatalogNotify(_), _))
                        )
                    {
                        return Vec::new();
                    }
                    if self.busy_notifies > 0
                        && matches!(
                            manscdp::parse(&req.body),
                            Ok((Manscdp::CatalogNotify(_), _))
                        )
                    {
                        self.busy_notifies -= 1;
                        let mut r = Response::to_request(&req, 503, Some("p"));
                        r.headers.push("Retry-After", "2");
                        return vec![r.to_bytes().to_vec()];
                    }
                    if self.refuse_notifies
                        && matches!(
                            manscdp::parse(&req.body),
                            Ok((Manscdp::CatalogNotify(_), _))
                        )
                    {
                        self.refused += 1;
                        let r = Response::to_request(&req, 501, Some("p"));
                        return vec![r.to_bytes().to_vec()];
                    }
                    // Count each transaction once, however often it is retransmitted.
                    let branch = req.top_via().unwrap().branch().unwrap().to_owned();
                    if self.seen.insert(branch) {
                        self.bodies.push(manscdp::parse(&req.body).unwrap().0);
                    }
                }
                vec![r.to_bytes().to_vec()]
            }
            Message::Response(r) => {
                self.responses.push(r);
                Vec::new()
            }
        }
    }

    fn query(&self, body: Manscdp, cseq: u32) -> Request {
        let target = Target {
            id: VILLAGE,
            host: "127.0.0.1:2".into(),
            transport: Transport::Udp,
        };
        self.agent.request(
            Method::Message,
            &target,
            cseq,
            None,
            Some((MANSCDP, body.to_body(Default::default()))),
        )
    }
}

struct World {
    now: Instant,
    node: Node,
    fleet: Fleet,
    parent: Parent,
    net: Net,
    queue: Vec<Transmit>,
    /// Requests the scripted parent starts: it does not retransmit, so they are never lost.
    direct: Vec<Transmit>,
    /// Answers to device queries asked with `Node::ask_device`.
    answers: Vec<QueryAnswered>,
}

impl World {
    fn new(drop_every: u64, dup_every: u64) -> World {
        World::with_settings(drop_every, dup_every, Settings::default())
    }

    fn with_settings(drop_every: u64, dup_every: u64, base: Settings) -> World {
        let now = Instant::now();
        let settings = Settings {
            keepalive_interval: Duration::from_secs(5),
            register_retry_min: Duration::from_secs(1),
            ..base
        };
        let creds = Credentials::parse(
            "uplink_password = \"up\"\ndefault_password = \"dev\"\n",
            "creds.toml",
        )
        .unwrap();
        let identity = Identity {
            id: GbId::parse(VILLAGE).unwrap(),
            name: "Village".into(),
            level: "village".into(),
            addr: udp(2).addr,
            parent: Some((GbId::parse(PARENT).unwrap(), udp(1))),
            upper: Vec::new(),
            children: HashMap::new(),
        };
        let node = Node::new(identity, settings, Arc::new(creds), now);
        let fleet = Fleet::new(
            FleetConfig {
                server: udp(2),
                server_id: GbId::parse(VILLAGE).unwrap(),
                id_prefix: "3501020100".into(),
                serial_base: 1,
                ipcs: 1,
                nvrs: 1,
                channels_per_nvr: 40,
                password: "dev".into(),
                keepalive: Duration::from_secs(5),
                expires: Duration::from_secs(3600),
                local: udp(3).addr,
                catalog_budget: 1300,
                register_window: 10,
                answer_window: integration::sim::ANSWER_WINDOW,
                alarm_every: None,
            },
            now,
        )
        .unwrap();
        let parent = Parent {
            agent: Agent {
                id: GbId::parse(PARENT).unwrap(),
                addr: udp(1).addr,
            },
            bodies: Vec::new(),
            seen: HashSet::new(),
            registered: false,
            register_call_ids: Vec::new(),
            ignore_notifies: false,
            refuse_notifies: false,
            refused: 0,
            busy_notifies: 0,
            responses: Vec::new(),
            query_before_ok: false,
            held_ok: None,
        };
        World {
            now,
            node,
            fleet,
            parent,
            net: Net {
                sent: 0,
                drop_every: drop_every.max(1),
                dup_every: dup_every.max(1),
                dropped: 0,
            },
            queue: Vec::new(),
            direct: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Advance virtual time by `dt`, delivering everything in flight.
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        self.node.handle_timeout(self.now);
        self.fleet.handle_timeout(self.now);
        for _ in 0..50 {
            let mut out = Vec::new();
            self.node.drain_transmits(&mut out);
            self.fleet.drain_transmits(&mut out);
            out.append(&mut self.queue);
            let direct = std::mem::take(&mut self.direct);
            if out.is_empty() && direct.is_empty() {
                break;
            }
            for t in direct {
                self.deliver(t);
            }
            for t in out {
                for t in self.net.carry(t) {
                    self.deliver(t);
                }
            }
        }
        while let Some(a) = self.node.poll_query_answer() {
            self.answers.push(a);
        }
    }

    /// Ask the node over its API-facing call and wait for the answer.
    fn ask(&mut self, id: &str, query: DeviceQuery) -> Result<QueryAnswer, QueryError> {
        let ticket = self
            .node
            .ask_device(GbId::parse(id).unwrap(), query, self.now);
        self.run_until(Duration::from_secs(60), |w| {
            w.answers.iter().any(|a| a.ticket == ticket)
        });
        let at = self
            .answers
            .iter()
            .position(|a| a.ticket == ticket)
            .unwrap();
        self.answers.remove(at).result
    }

    fn deliver(&mut self, t: Transmit) {
        let from = |port| Inbound::Message {
            peer: udp(port),
            message: Message::parse(&t.data).unwrap(),
        };
        match t.peer.addr.port() {
            1 => {
                for reply in self.parent.handle(&t.data) {
                    self.queue.push(Transmit {
                        peer: udp(2),
                        data: reply.into(),
                    });
                }
            }
            // From the parent (port 1) or the fleet (port 3): whichever is not the node.
            2 => {
                let src = if is_from_parent(&t.data) { 1 } else { 3 };
                self.node.handle_inbound(from(src), self.now);
            }
            3 => self.fleet.handle_inbound(from(2), self.now),
            p => panic!("datagram to unknown port {p}"),
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> Duration {
        let start = self.now;
        while self.now - start < limit {
            if done(self) {
                return self.now - start;
            }
            self.step(Duration::from_millis(10));
        }
        panic!(
            "condition not met within {limit:?} of virtual time: parent registered {}, {:?} bodies, node catalog {}, fleet {:?}",
            self.parent.registered,
            self.parent.bodies.iter().map(|b| b.cmd_type().to_owned() + if matches!(b, Manscdp::CatalogNotify(_)) { "N" } else { "" }).collect::<Vec<_>>(),
            notified_ids(&self.parent).len(),
            self.fleet.stats()
        );
    }
}

fn is_from_parent(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("from:"))
        .is_some_and(|l| l.contains(PARENT))
}

fn notified_ids(p: &Parent) -> HashSet<String> {
    p.bodies
        .iter()
        .filter_map(|b| match b {
            Manscdp::CatalogNotify(l) => Some(
                l.items
                    .iter()
                    .map(|i| i.device_id.clone())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn scenario(drop_every: u64, dup_every: u64) -> (World, u64) {
    let mut w = World::new(drop_every, dup_every);
    // The node registers up; the fleet registers to the node with digest; the
    // node queries the fleet's catalog and pushes 43 entries up as events.
    let expected: HashSet<String> = w.fleet.channel_ids().into_iter().collect();
    assert_eq!(expected.len(), 41);
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.registered && expected.is_subset(&notified_ids(&w.parent))
    });
    assert_eq!(w.node.catalog().len(), 43, "2 devices + 41 channels");

    // The parent asks for the whole catalog: parts ≤ 1400 bytes, SumNum 43, all items.
    let q = w
        .parent
        .query(Manscdp::CatalogQuery(SimpleQuery::new(777, VILLAGE)), 10);
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    w.run_until(Duration::from_secs(60), |w| {
        let ids: HashSet<String> = w
            .parent
            .bodies
            .iter()
            .filter_map(|b| match b {
                Manscdp::CatalogResponse(l) if l.sn == 777 => {
                    assert_eq!(l.sum_num, 43);
                    Some(
                        l.items
                            .iter()
                            .map(|i| i.device_id.clone())
                            .collect::<Vec<_>>(),
                    )
                }
                _ => None,
            })
            .flatten()
            .collect();
        ids.len() == 43
    });

    // DeviceInfo for an NVR channel: forwarded to the fleet, answered with the parent's SN.
    let channel = w.fleet.channel_ids().last().unwrap().clone();
    let q = w.parent.query(
        Manscdp::DeviceInfoQuery(SimpleQuery::new(4242, channel.clone())),
        11,
    );
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.bodies.iter().any(|b| {
            matches!(b, Manscdp::DeviceInfoResponse(i) if i.sn == 4242 && i.device_id == channel && i.result == "OK")
        })
    });
    // DeviceStatus takes the same path.
    let q = w.parent.query(
        Manscdp::DeviceStatusQuery(SimpleQuery::new(4244, channel.clone())),
        13,
    );
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.bodies.iter().any(|b| {
            matches!(b, Manscdp::DeviceStatusResponse(s) if s.sn == 4244 && s.device_id == channel && s.online.as_deref() == Some("ONLINE"))
        })
    });
    // A query for an ID nobody below owns is answered ERROR at once.
    let q = w.parent.query(
        Manscdp::DeviceStatusQuery(SimpleQuery::new(4245, "35010201001319999999")),
        14,
    );
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.bodies.iter().any(|b| {
            matches!(b, Manscdp::DeviceStatusResponse(s) if s.sn == 4245 && s.result == "ERROR")
        })
    });
    // DeviceInfo for the node itself is answered by the node.
    let q = w.parent.query(
        Manscdp::DeviceInfoQuery(SimpleQuery::new(4243, VILLAGE)),
        12,
    );
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.bodies.iter().any(|b| {
            matches!(b, Manscdp::DeviceInfoResponse(i) if i.sn == 4243 && i.channel == Some(41))
        })
    });
    let dropped = w.net.dropped;
    (w, dropped)
}

#[test]
fn clean_network() {
    scenario(u64::MAX, u64::MAX);
}

#[test]
fn lossy_network_with_duplicates() {
    // Every 7th datagram lost, every 5th duplicated: retransmissions recover.
    let (w, dropped) = scenario(7, 5);
    assert!(
        dropped > 5,
        "the impairment must actually bite ({dropped} dropped)"
    );
    let (_, _, retrans) = w.node.transaction_stats();
    assert!(retrans > 0);
}

/// RecordInfo from the parent and the API's queries, after `scenario`.
fn device_queries(w: &mut World) {
    let channel = w.fleet.channel_ids().last().unwrap().clone();
    // RecordInfo for the channel: the fleet's split answer is collected,
    // then sent up whole with the parent's SN (split again to fit UDP).
    let q = w.parent.query(
        Manscdp::RecordInfoQuery(RecordQuery::new(
            4246,
            channel.clone(),
            "2024-05-01T00:00:00",
            "2024-05-01T12:00:00",
        )),
        15,
    );
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    let records = |w: &World| -> Vec<(String, String)> {
        w.parent
            .bodies
            .iter()
            .filter_map(|b| match b {
                Manscdp::RecordInfoResponse(l) if l.sn == 4246 => {
                    assert_eq!((l.sum_num, l.device_id.as_str()), (12, channel.as_str()));
                    Some(l.items.iter().map(|r| {
                        (
                            r.start_time.clone().unwrap_or_default(),
                            r.end_time.clone().unwrap_or_default(),
                        )
                    }))
                }
                _ => None,
            })
            .flatten()
            .collect()
    };
    w.run_until(Duration::from_secs(60), |w| records(w).len() >= 12);
    let mut got = records(w);
    got.sort();
    assert_eq!(got.len(), 12, "{got:?}");
    assert_eq!(got[0].0, "2024-05-01T00:00:00");
    assert_eq!(got[11].1, "2024-05-01T12:00:00");
    let parts = w
        .parent
        .bodies
        .iter()
        .filter(|b| matches!(b, Manscdp::RecordInfoResponse(l) if l.sn == 4246))
        .count();
    assert!(parts > 1, "12 records do not fit one datagram");

    // The HTTP API's queries take the same paths.
    match w.ask(&channel, DeviceQuery::Info) {
        Ok(QueryAnswer::Info(i)) => {
            assert_eq!(i.device_id, channel);
            assert_eq!(i.manufacturer.as_deref(), Some("gbsim"));
        }
        other => panic!("{other:?}"),
    }
    match w.ask(&channel, DeviceQuery::Status) {
        Ok(QueryAnswer::Status(s)) => assert_eq!(s.online.as_deref(), Some("ONLINE")),
        other => panic!("{other:?}"),
    }
    let range = DeviceQuery::Records {
        start: "2024-05-01T08:30:00".into(),
        end: "2024-05-01T10:00:00".into(),
        record_type: "all".into(),
    };
    match w.ask(&channel, range) {
        Ok(QueryAnswer::Records { list, complete }) => {
            assert!(complete);
            assert_eq!(list.sum_num, 2);
            assert_eq!(list.items.len(), 2);
            assert_eq!(
                list.items[0].start_time.as_deref(),
                Some("2024-05-01T08:30:00")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.ask("35010201001319999999", DeviceQuery::Info),
        Err(QueryError::NotFound)
    );
    match w.ask(VILLAGE, DeviceQuery::Info) {
        Ok(QueryAnswer::Info(i)) => assert_eq!(i.channel, Some(41)),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.node.pending_queries(), 0);
}

#[test]
fn device_queries_on_a_clean_network() {
    let (mut w, _) = scenario(u64::MAX, u64::MAX);
    device_queries(&mut w);
}

#[test]
fn device_queries_on_a_lossy_network() {
    let (mut w, _) = scenario(7, 5);
    device_queries(&mut w);
}

#[test]
fn an_unanswered_device_query_times_out() {
    let (mut w, _) = scenario(u64::MAX, u64::MAX);
    let channel = w.fleet.channel_ids()[3].clone();
    let ticket = w
        .node
        .ask_device(GbId::parse(&channel).unwrap(), DeviceQuery::Status, w.now);
    // Everything is lost from now on.
    w.net.drop_every = 1;
    let took = w.run_until(Duration::from_secs(40), |w| {
        w.answers.iter().any(|a| a.ticket == ticket)
    });
    assert_eq!(w.answers[0].result, Err(QueryError::TimedOut));
    let timeout = Settings::default().query_timeout;
    assert!(
        took > timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(w.node.pending_queries(), 0);
}

#[test]
fn silent_device_goes_off_and_the_parent_hears_it() {
    let (mut w, _) = scenario(u64::MAX, u64::MAX);
    // Stop delivering the fleet's traffic: 3 keepalive intervals later its
    // channels are OFF and OFF events reached the parent.
    let before = w.parent.bodies.len();
    let start = w.now;
    loop {
        w.now += Duration::from_millis(100);
        w.node.handle_timeout(w.now);
        for _ in 0..50 {
            let mut out = Vec::new();
            w.node.drain_transmits(&mut out);
            out.append(&mut w.queue);
            if out.is_empty() {
                break;
            }
            // The fleet is gone: whatever is sent to it is lost.
            for t in out.into_iter().filter(|t| t.peer.addr.port() != 3) {
                w.deliver(t);
            }
        }
        let off: usize = w.parent.bodies[before..]
            .iter()
            .filter_map(|b| match b {
                Manscdp::CatalogNotify(l) => Some(
                    l.items
                        .iter()
                        .filter(|i| i.event.as_deref() == Some("OFF"))
                        .count(),
                ),
                _ => None,
            })
            .sum();
        if off == 43 {
            break;
        }
        assert!(
            w.now - start < Duration::from_secs(20),
            "only {off} OFF events"
        );
    }
    let gone = w.now - start;
    // Last keepalive at most one interval before the silence began: OFF
    // between 2 and 3 intervals (plus a sweep and a flush) after it.
    assert!(
        gone >= Duration::from_secs(10) && gone <= Duration::from_secs(17),
        "{gone:?}"
    );
}

#[test]
fn a_parent_that_cannot_keep_up_gets_the_whole_catalog_instead() {
    let settings = Settings {
        max_event_backlog: 10,
        ..Settings::default()
    };
    let mut w = World::with_settings(u64::MAX, u64::MAX, settings);
    w.parent.ignore_notifies = true;
    // 43 ADD events cannot drain to a parent that never answers them: the
    // node re-registers with a new Call-ID, so the parent re-queries.
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.register_call_ids.len() >= 2
    });
    // Once, not in a loop: nothing new to tell afterwards.
    for _ in 0..3000 {
        w.step(Duration::from_millis(10));
    }
    assert_eq!(w.parent.register_call_ids.len(), 2);
    assert!(w.node.uplink().unwrap().is_registered());
}

#[test]
fn a_busy_parent_gets_what_it_could_not_take_after_its_retry_after() {
    let mut w = World::new(u64::MAX, u64::MAX);
    w.parent.busy_notifies = 3;
    let expected: HashSet<String> = w.fleet.channel_ids().into_iter().collect();
    let took = w.run_until(Duration::from_secs(60), |w| {
        w.parent.registered && expected.is_subset(&notified_ids(&w.parent))
    });
    assert_eq!(w.parent.busy_notifies, 0);
    assert!(took >= Duration::from_secs(2), "waited as told: {took:?}");
    assert_eq!(w.parent.refused, 0);
    assert!(
        !w.node.uplink().unwrap().refuses_pushes(),
        "busy is not refusing"
    );
}

#[test]
fn changes_after_answering_a_query_that_overtook_the_200_reach_the_parent() {
    let mut w = World::new(u64::MAX, u64::MAX);
    w.parent.query_before_ok = true;
    let expected: HashSet<String> = w.fleet.channel_ids().into_iter().collect();
    // The parent's query arrives before its 200: the node answers with
    // what it has (the fleet is still registering), then the fleet's
    // catalog arrives while the node still waits for its 200.
    w.run_until(Duration::from_secs(60), |w| w.node.catalog().len() == 43);
    assert!(!w.node.uplink().unwrap().is_registered());
    let ok = w.parent.held_ok.clone().unwrap();
    w.parent.query_before_ok = false;
    w.parent.registered = true;
    w.queue.push(Transmit {
        peer: udp(2),
        data: ok.into(),
    });
    // What the answer lacked is pushed as changes once it is registered.
    w.run_until(Duration::from_secs(60), |w| {
        let mut seen = notified_ids(&w.parent);
        for b in &w.parent.bodies {
            if let Manscdp::CatalogResponse(l) = b {
                seen.extend(l.items.iter().map(|i| i.device_id.clone()));
            }
        }
        w.node.uplink().unwrap().is_registered() && expected.is_subset(&seen)
    });
}

/// The parent queries the node's whole catalog (SN `sn`) and gets its IDs.
fn catalog_as_parent(w: &mut World, sn: u32) -> HashSet<String> {
    let q = w
        .parent
        .query(Manscdp::CatalogQuery(SimpleQuery::new(sn, VILLAGE)), sn);
    w.direct.push(Transmit {
        peer: udp(2),
        data: q.to_bytes(),
    });
    let answer = |w: &World| -> (u32, HashSet<String>) {
        let mut sum = 0;
        let mut ids = HashSet::new();
        for b in &w.parent.bodies {
            if let Manscdp::CatalogResponse(l) = b {
                if l.sn == sn {
                    sum = l.sum_num;
                    ids.extend(l.items.iter().map(|i| i.device_id.clone()));
                }
            }
        }
        (sum, ids)
    };
    w.run_until(Duration::from_secs(60), |w| {
        let (sum, ids) = answer(w);
        sum > 0 && ids.len() == sum as usize
    });
    answer(w).1
}

#[test]
fn a_parent_that_refuses_pushed_changes_is_made_to_query_again() {
    let mut w = World::new(u64::MAX, u64::MAX);
    w.parent.refuse_notifies = true;
    let mut expected: HashSet<String> = w.fleet.channel_ids().into_iter().collect();
    // The first refused change: the node stops pushing and re-registers
    // at once with a new Call-ID, so the parent queries again.
    w.run_until(Duration::from_secs(60), |w| {
        w.parent.register_call_ids.len() >= 2 && w.node.catalog().len() == 43
    });
    let resynced = w.now;
    assert!(w.parent.refused >= 1);
    assert!(w.node.uplink().unwrap().refuses_pushes());
    let refused = w.parent.refused;
    let ids = catalog_as_parent(&mut w, 900);
    assert!(
        expected.is_subset(&ids),
        "{} of {}",
        ids.len(),
        expected.len()
    );

    // A new channel 5 s later: within catalog_resync_min (30 s) of the
    // last re-registration, so it is owed, not done at once, and nothing
    // is pushed.
    w.run_until(Duration::from_secs(5), |w| {
        w.now - resynced >= Duration::from_secs(5)
    });
    let nvr = w
        .node
        .catalog()
        .ids_after(None)
        .find(|id| id.type_code() == 118)
        .unwrap()
        .to_string();
    let added = "35010201001310009999".to_owned();
    let notify = Manscdp::CatalogNotify(manscdp::CatalogList {
        sn: 31,
        device_id: nvr.clone(),
        sum_num: 1,
        items: vec![manscdp::CatalogItem {
            device_id: added.clone(),
            name: Some("new camera".into()),
            parent_id: Some(nvr.clone()),
            status: Some("ON".into()),
            event: Some("ADD".into()),
            ..Default::default()
        }],
    });
    let device = Agent {
        id: GbId::parse(&nvr).unwrap(),
        addr: udp(3).addr,
    };
    let target = Target {
        id: VILLAGE,
        host: "127.0.0.1:2".into(),
        transport: Transport::Udp,
    };
    let req = device.request(
        Method::Message,
        &target,
        1,
        None,
        Some((MANSCDP, notify.to_body(Default::default()))),
    );
    w.direct.push(Transmit {
        peer: udp(2),
        data: req.to_bytes(),
    });
    w.step(Duration::from_millis(500));
    assert!(
        w.node.catalog().get(&added).is_some(),
        "the node took the ADD"
    );
    assert_eq!(w.parent.register_call_ids.len(), 2, "not before it is due");
    let took = w.run_until(Duration::from_secs(60), |w| {
        w.parent.register_call_ids.len() >= 3
    });
    let at = w.now - resynced;
    assert!(
        at >= Duration::from_secs(30) && at < Duration::from_secs(32),
        "re-registered {at:?} after the last one ({took:?} after the ADD)"
    );
    expected.insert(added);
    let ids = catalog_as_parent(&mut w, 901);
    assert!(
        expected.is_subset(&ids),
        "the new channel reached the parent"
    );

    // Nothing changes for two minutes: no re-registration, no push.
    for _ in 0..12_000 {
        w.step(Duration::from_millis(10));
    }
    assert_eq!(w.parent.register_call_ids.len(), 3);
    assert_eq!(w.parent.refused, refused, "no push after the first refusal");
    assert!(w.node.uplink().unwrap().is_registered());
}

fn sdp(user: &str, port: u16, ssrc: &str, session: &str) -> GbSdp {
    GbSdp::parse(&format!(
        "v=0\r\no={user} 0 0 IN IP4 127.0.0.1\r\ns={session}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video {port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc}\r\n"
    ))
    .unwrap()
}

/// INVITE, ACK, BYE and CANCEL on a network that loses every 7th datagram
/// and duplicates every 5th: both INVITE directions, in virtual time.
#[test]
fn calls_survive_a_lossy_network() {
    let (mut w, _) = scenario(7, 5);
    let channel = GbId::parse(&w.fleet.channel_ids()[0]).unwrap();

    // Down: the node (as its media plane would) calls the camera.
    let offer = sdp(VILLAGE, 30000, "0102000001", "Play");
    let call = w
        .node
        .place_call(channel, CallKind::Live, &offer, None, w.now)
        .unwrap();
    let mut fleet_call = None;
    let mut answered = None;
    for _ in 0..3000 {
        while let Some(ev) = w.fleet.poll_media_event() {
            if let MediaEvent::Start { call, offer, .. } = ev {
                assert_eq!(offer.ssrc, Some(102000001));
                let answer = sdp(channel.as_str(), 40000, "0102000001", "Play");
                w.fleet.answer_call(&call, &answer, w.now);
                fleet_call = Some(call);
            }
        }
        while let Some(ev) = w.node.poll_call_event() {
            if let CallEvent::Answered { call: c, answer } = ev {
                assert_eq!(c, call);
                answered = Some(answer.media_port);
            }
        }
        if answered.is_some() {
            break;
        }
        w.step(Duration::from_millis(10));
    }
    assert_eq!(answered, Some(40000), "the node learns the camera's port");
    assert!(fleet_call.is_some());
    assert_eq!(w.node.open_calls(), 1);
    // Let 2xx retransmissions and ACKs settle; the call stays up, once.
    for _ in 0..500 {
        w.step(Duration::from_millis(10));
    }
    assert_eq!(
        w.fleet.stats().invites,
        1,
        "one INVITE however often it was resent"
    );
    // BYE down reaches the camera.
    w.node.hangup(call, w.now);
    let mut stopped = false;
    for _ in 0..3000 {
        while let Some(ev) = w.fleet.poll_media_event() {
            stopped |= matches!(ev, MediaEvent::Stop { .. });
        }
        if stopped {
            break;
        }
        w.step(Duration::from_millis(10));
    }
    assert!(stopped, "the camera got the BYE");
    assert_eq!(w.node.open_calls(), 0);

    // A call given up before the answer is CANCELled: the camera answers 487.
    let call2 = w
        .node
        .place_call(channel, CallKind::Live, &offer, None, w.now)
        .unwrap();
    w.node.hangup(call2, w.now);
    let mut failed = false;
    for _ in 0..3000 {
        while w.fleet.poll_media_event().is_some() {}
        while let Some(ev) = w.node.poll_call_event() {
            failed |= matches!(ev, CallEvent::Failed { call, .. } if call == call2);
        }
        if failed {
            break;
        }
        w.step(Duration::from_millis(10));
    }
    assert!(failed, "the cancelled call ends with the 487");
    assert_eq!(w.node.open_calls(), 0);

    // Up: the parent INVITEs the node for the channel; the node answers
    // 100 at once and 200 with the media plane's SDP.
    let mut invite = w.parent.agent.request(
        Method::Invite,
        &Target {
            id: channel.as_str(),
            host: "127.0.0.1:2".into(),
            transport: Transport::Udp,
        },
        20,
        None,
        Some((
            "APPLICATION/SDP",
            sdp(PARENT, 50000, "0102000002", "Play").to_string().into(),
        )),
    );
    invite
        .headers
        .push("Subject", format!("{channel}:0102000002,{PARENT}:0"));
    w.direct.push(Transmit {
        peer: udp(2),
        data: invite.to_bytes(),
    });
    let mut invited = None;
    for _ in 0..300 {
        while let Some(ev) = w.node.poll_call_event() {
            if let CallEvent::Invited {
                call,
                channel: ch,
                kind,
                offer,
                ..
            } = ev
            {
                assert_eq!(
                    (ch, kind, offer.media_port),
                    (channel, CallKind::Live, 50000)
                );
                invited = Some(call);
            }
        }
        if invited.is_some() {
            break;
        }
        w.step(Duration::from_millis(10));
    }
    let up = invited.expect("the node reports the parent's INVITE");
    w.node
        .accept_call(up, &sdp(VILLAGE, 30002, "0102000002", "Play"), w.now);
    // The 200 is retransmitted until ACKed (this parent never ACKs), so a
    // lost copy is made good.
    for _ in 0..300 {
        w.step(Duration::from_millis(10));
        if w.parent
            .responses
            .iter()
            .any(|r| r.status == 200 && r.cseq().is_some_and(|c| c.method == Method::Invite))
        {
            break;
        }
    }
    let ok = w
        .parent
        .responses
        .iter()
        .find(|r| r.status == 200 && r.cseq().is_some_and(|c| c.method == Method::Invite))
        .expect("200 to the INVITE")
        .clone();
    let answer = GbSdp::parse(std::str::from_utf8(&ok.body).unwrap()).unwrap();
    assert_eq!((answer.media_port, answer.ssrc), (30002, Some(102000002)));
    assert!(ok.headers.get("To").unwrap().contains("tag="));
    // The parent hangs up: the node reports it.
    let mut bye = Request::new(Method::Bye, format!("sip:{VILLAGE}@127.0.0.1:2"));
    for h in ["From", "Call-ID"] {
        bye.headers.push(h, invite.headers.get(h).unwrap());
    }
    bye.headers.push("To", ok.headers.get("To").unwrap());
    bye.headers
        .push("Via", "SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKbye1");
    bye.headers.push("CSeq", "21 BYE");
    w.direct.push(Transmit {
        peer: udp(2),
        data: bye.to_bytes(),
    });
    let mut ended = false;
    for _ in 0..300 {
        while let Some(ev) = w.node.poll_call_event() {
            ended |= matches!(ev, CallEvent::Ended { call, .. } if call == up);
        }
        if ended {
            break;
        }
        w.step(Duration::from_millis(10));
    }
    assert!(ended);
    assert_eq!(w.node.open_calls(), 0);
}

/// Place a call for `channel` and let the fleet answer it: the node's
/// call and its Call-ID.
fn answered_call(w: &mut World, channel: GbId, port: u16) -> (u64, String) {
    let offer = sdp(VILLAGE, port, "0102000001", "Play");
    let call = w
        .node
        .place_call(channel, CallKind::Live, &offer, None, w.now)
        .unwrap();
    let (mut call_id, mut answered) = (None, false);
    for _ in 0..300 {
        while let Some(ev) = w.fleet.poll_media_event() {
            if let MediaEvent::Start { call, .. } = ev {
                let answer = sdp(channel.as_str(), 40000, "0102000001", "Play");
                w.fleet.answer_call(&call, &answer, w.now);
                call_id = Some(call);
            }
        }
        while let Some(ev) = w.node.poll_call_event() {
            answered |= matches!(ev, CallEvent::Answered { call: c, .. } if c == call);
        }
        if answered {
            break;
        }
        w.step(Duration::from_millis(10));
    }
    assert!(answered, "the fleet answers");
    (call, call_id.unwrap())
}

/// RFC 3326 Reason on BYE, both ways: the text of one from below becomes
/// the call's end reason (and the header reaches the media plane), and a
/// hangup with a reason writes it into the BYE.
#[test]
fn a_bye_says_why_the_call_ended() {
    let (mut w, _) = scenario(u64::MAX, u64::MAX);
    let channel = GbId::parse(&w.fleet.channel_ids()[0]).unwrap();
    let text = "the source's PS could not be read: missing PES flags (x)";

    let (call, call_id) = answered_call(&mut w, channel, 30000);
    let mut bye = Request::new(Method::Bye, format!("sip:{VILLAGE}@127.0.0.1:2"));
    bye.headers
        .push("Via", "SIP/2.0/UDP 127.0.0.1:3;rport;branch=z9hG4bKcambye");
    bye.headers
        .push("From", format!("<sip:{channel}@3501020100>;tag=cam"));
    bye.headers
        .push("To", format!("<sip:{VILLAGE}@3501020100>;tag=node"));
    bye.headers.push("Call-ID", call_id.as_str());
    bye.headers.push("CSeq", "9 BYE");
    bye.headers.push("Max-Forwards", "70");
    bye.headers.push(
        "Reason",
        format!(
            "Q.850;cause=16, SIP;cause=502;text=\"{}\"",
            text.replace('"', "\\\"")
        ),
    );
    w.node.handle_inbound(
        Inbound::Message {
            peer: udp(3),
            message: Message::parse(&bye.to_bytes()).unwrap(),
        },
        w.now,
    );
    let mut ended = None;
    while let Some(ev) = w.node.poll_call_event() {
        if let CallEvent::Ended {
            call: c,
            reason,
            said,
        } = ev
        {
            assert_eq!(c, call);
            ended = Some((reason, said));
        }
    }
    let (reason, said) = ended.expect("the BYE ends the call");
    assert_eq!(reason, text);
    let said = said.expect("the Reason reaches the media plane");
    assert_eq!((said.protocol.as_str(), said.cause), ("SIP", Some(502)));
    assert_eq!(w.node.open_calls(), 0);

    // The node hangs up with a reason: its BYE carries it.
    let (call, _) = answered_call(&mut w, channel, 30002);
    let why = Reason::sip(502, "the source's \"PS\" could not be read: nothing");
    w.node.hangup_with(call, Some(&why), w.now);
    let mut out = Vec::new();
    w.node.drain_transmits(&mut out);
    let bye = out
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).into_owned())
        .find(|m| m.starts_with("BYE "))
        .expect("a BYE");
    assert!(
        bye.contains("\r\nReason: SIP;cause=502;text=\"the source's \\\"PS\\\" could not be read: nothing\"\r\n"),
        "{bye}"
    );
}

/// A 2xx to an INVITE the node no longer has (its transaction is gone) is
/// ACKed and BYEd at once, so the callee stops retransmitting and sending.
#[test]
fn a_stray_invite_2xx_is_acked_and_hung_up() {
    let (mut w, _) = scenario(u64::MAX, u64::MAX);
    let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:2;rport;branch=z9hG4bKgone\r\nFrom: <sip:35010201002000000011@3501020100>;tag=ours\r\nTo: <sip:35010201001310000001@3501020100>;tag=theirs\r\nCall-ID: forgotten@127.0.0.1\r\nCSeq: 7 INVITE\r\nContact: <sip:35010201001310000001@127.0.0.1:3>\r\nContent-Length: 0\r\n\r\n";
    w.node.handle_inbound(
        Inbound::Message {
            peer: udp(3),
            message: Message::parse(ok.as_bytes()).unwrap(),
        },
        w.now,
    );
    let mut out = Vec::new();
    w.node.drain_transmits(&mut out);
    let sent: Vec<String> = out
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).into_owned())
        .collect();
    let ack = sent.iter().find(|m| m.starts_with("ACK ")).expect("an ACK");
    let bye = sent.iter().find(|m| m.starts_with("BYE ")).expect("a BYE");
    for m in [ack, bye] {
        assert!(m.contains("Call-ID: forgotten@127.0.0.1"), "{m}");
        assert!(m.contains("tag=theirs") && m.contains("tag=ours"), "{m}");
        assert!(
            m.starts_with("ACK sip:35010201001310000001@127.0.0.1:3")
                || m.starts_with("BYE sip:35010201001310000001@127.0.0.1:3"),
            "{m}"
        );
    }
    assert!(ack.contains("CSeq: 7 ACK") && bye.contains("CSeq: 8 BYE"));
    assert!(out.iter().all(|t| t.peer == udp(3)));
}

/// REGISTER from `device` with `password`: the node's final answer.
fn register_with(node: &mut Node, now: Instant, device: &str, password: &str) -> Response {
    final_answer(register_sending(node, now, device, password))
}

/// REGISTER from `device` with `password`: everything the node sends once
/// the challenge is answered (the answer, and what it then asks).
fn register_sending(node: &mut Node, now: Instant, device: &str, password: &str) -> Vec<Transmit> {
    let first = answer_to(
        node,
        now,
        udp(3),
        &register_request(device, udp(3), 1, Some("reg-1"), None),
    );
    let auth = digest_for(&first, device, password);
    send(
        node,
        now,
        udp(3),
        &register_request(device, udp(3), 2, Some("reg-1"), Some(&auth)),
    )
}

/// A REGISTER (Expires 3600) from `device` at `from` to the village, with
/// Call-ID `call` (a fresh one if `None`) and `auth` as its Authorization.
fn register_request(
    device: &str,
    from: Peer,
    cseq: u32,
    call: Option<&str>,
    auth: Option<&str>,
) -> Request {
    let dev = Agent {
        id: GbId::parse(device).unwrap(),
        addr: from.addr,
    };
    let target = Target {
        id: VILLAGE,
        host: "127.0.0.1:2".into(),
        transport: from.transport,
    };
    let mut req = dev.request(Method::Register, &target, cseq, call, None);
    req.headers.set("Expires", "3600");
    if let Some(a) = auth {
        req.headers.set("Authorization", a);
    }
    req
}

/// The Authorization answering the 401 `challenged` for `device`.
fn digest_for(challenged: &Response, device: &str, password: &str) -> String {
    let challenge =
        gbgate::sip::auth::Challenge::parse(challenged.headers.get("WWW-Authenticate").unwrap())
            .unwrap();
    let uri = format!("sip:{VILLAGE}@3501020100");
    gbgate::sip::auth::answer(&challenge, "REGISTER", &uri, device, password, 1, "c0ffee")
        .to_header_value()
}

/// The device [`village_with_device`] knows, with password "right".
const DEVICE: &str = "35010201001320000001";

/// The village node, with no parent, knowing [`DEVICE`].
fn village_with_device(now: Instant) -> Node {
    let creds = Credentials::parse(
        &format!("[devices]\n\"{DEVICE}\" = \"right\"\n"),
        "creds.toml",
    )
    .unwrap();
    village_without_parent(creds, now)
}

/// The village node, with no parent, taking registrations with `creds`.
fn village_without_parent(creds: Credentials, now: Instant) -> Node {
    let identity = Identity {
        id: GbId::parse(VILLAGE).unwrap(),
        name: "Village".into(),
        level: "village".into(),
        addr: udp(2).addr,
        parent: None,
        upper: Vec::new(),
        children: HashMap::new(),
    };
    Node::new(identity, Settings::default(), Arc::new(creds), now)
}

#[test]
fn a_refused_register_does_not_tell_an_unknown_id_from_a_wrong_password() {
    let now = Instant::now();
    let mut node = village_with_device(now);
    let known = register_with(&mut node, now, DEVICE, "wrong");
    let unknown = register_with(&mut node, now, "35010201001320000002", "anything");
    let ok = register_with(&mut node, now, DEVICE, "right");
    assert_eq!(ok.status, 200);
    let visible = |r: &Response| {
        (
            r.status,
            r.reason.clone(),
            r.headers.get("Warning").map(str::to_owned),
        )
    };
    assert_eq!(known.status, 403);
    assert_eq!(visible(&known), visible(&unknown));
    assert!(!format!("{:?}", visible(&known)).contains("password"));
}

#[test]
fn a_new_device_hears_its_200_before_the_queries_it_causes() {
    // Cameras that get a Catalog query before the 200 to their REGISTER
    // drop it, or think themselves unregistered.
    let now = Instant::now();
    let mut node = village_with_device(now);
    let sent: Vec<String> = register_sending(&mut node, now, DEVICE, "right")
        .iter()
        .map(|t| match Message::parse(&t.data).unwrap() {
            Message::Response(r) => r.status.to_string(),
            Message::Request(r) => r.method.to_string(),
        })
        .collect();
    assert_eq!(
        sent,
        ["200", "MESSAGE", "MESSAGE"],
        "Catalog and DeviceInfo after the 200"
    );
}

#[test]
fn a_busy_node_asks_new_devices_later() {
    // A storm of registrations comes first; the Catalog and DeviceInfo
    // questions wait until the node has read its backlog.
    let now = Instant::now();
    let mut node = village_with_device(now);
    node.set_backlog(1_000);
    let ok = register_with(&mut node, now, DEVICE, "right");
    assert_eq!(ok.status, 200);
    let mut out = Vec::new();
    node.handle_timeout(now);
    node.drain_transmits(&mut out);
    assert!(
        out.is_empty(),
        "nothing asked while busy: {} sent",
        out.len()
    );
    node.set_backlog(0);
    node.handle_timeout(now + Duration::from_millis(10));
    node.drain_transmits(&mut out);
    let asked: Vec<String> = out
        .iter()
        .filter_map(|t| match Message::parse(&t.data).unwrap() {
            Message::Request(r) => Some(manscdp::parse(&r.body).unwrap().0.cmd_type().to_owned()),
            Message::Response(_) => None,
        })
        .collect();
    assert_eq!(asked, ["Catalog", "DeviceInfo"]);
}

/// Send `req` from `peer`; the node's final answer.
fn answer_to(node: &mut Node, now: Instant, peer: Peer, req: &Request) -> Response {
    final_answer(send(node, now, peer, req))
}

/// Send `req` from `peer`; everything the node sends then.
fn send(node: &mut Node, now: Instant, peer: Peer, req: &Request) -> Vec<Transmit> {
    node.handle_inbound(
        Inbound::Message {
            peer,
            message: Message::Request(req.clone()),
        },
        now,
    );
    let mut out = Vec::new();
    node.drain_transmits(&mut out);
    out
}

/// The last final response among `sent`.
fn final_answer(sent: Vec<Transmit>) -> Response {
    sent.into_iter()
        .rev()
        .find_map(|t| match Message::parse(&t.data) {
            Ok(Message::Response(r)) if r.status >= 200 => Some(r),
            _ => None,
        })
        .expect("a final answer")
}

#[test]
fn a_retransmitted_register_is_answered_again_and_a_replay_is_challenged() {
    // REGISTER is answered without a transaction: the node must still give
    // a retransmission (its 200 was lost) the same answer, and refuse the
    // same credentials in any other request.
    let now = Instant::now();
    let mut node = village_with_device(now);
    let device = DEVICE;
    let request =
        |cseq: u32, auth: Option<&str>| register_request(device, udp(3), cseq, Some("reg-r"), auth);
    let first = answer_to(&mut node, now, udp(3), &request(1, None));
    assert_eq!(first.status, 401);
    let auth = digest_for(&first, device, "right");
    let authed = request(2, Some(&auth));
    assert_eq!(answer_to(&mut node, now, udp(3), &authed).status, 200);
    // The same request again: the same answer, twice.
    for _ in 0..2 {
        assert_eq!(answer_to(&mut node, now, udp(3), &authed).status, 200);
    }
    // The same credentials in a new request, or from another port: replay.
    let replay = answer_to(&mut node, now, udp(3), &request(3, Some(&auth)));
    assert_eq!(replay.status, 401);
    assert!(replay
        .headers
        .get("WWW-Authenticate")
        .unwrap()
        .contains("stale=true"));
    let elsewhere = answer_to(&mut node, now, udp(9), &authed);
    assert_eq!(elsewhere.status, 401);
}

#[test]
fn an_overloaded_node_defers_new_registrations_and_finishes_those_under_way() {
    let now = Instant::now();
    let mut node = village_with_device(now);
    let device = DEVICE;
    let request = |cseq: u32, call: &str, auth: Option<&str>| {
        register_request(device, udp(3), cseq, Some(call), auth)
    };
    // A registration under way: challenged before the storm.
    let first = answer_to(&mut node, now, udp(3), &request(1, "a", None));
    assert_eq!(first.status, 401);
    let auth = digest_for(&first, device, "right");
    node.set_backlog(Settings::default().overload_backlog + 1);
    // New attempts: 503 with a Retry-After of 10-40 s, spread by request.
    let mut waits = HashSet::new();
    for i in 0..50 {
        let r = answer_to(
            &mut node,
            now,
            udp(3),
            &request(1, &format!("new-{i}"), None),
        );
        assert_eq!(r.status, 503);
        let wait: u64 = r.headers.get("Retry-After").unwrap().parse().unwrap();
        assert!((10..=40).contains(&wait), "{wait}");
        waits.insert(wait);
    }
    assert!(waits.len() > 10, "spread: {waits:?}");
    // The one whose second leg arrives is finished.
    assert_eq!(
        answer_to(&mut node, now, udp(3), &request(2, "a", Some(&auth))).status,
        200
    );
    // Backlog cleared: new attempts are challenged again.
    node.set_backlog(0);
    assert_eq!(
        answer_to(&mut node, now, udp(3), &request(1, "b", None)).status,
        401
    );
}

/// One REGISTER for `device` from `peer`, without credentials; the node's
/// final answer.
fn register_once(node: &mut Node, now: Instant, peer: Peer, device: &str) -> Response {
    answer_to(
        node,
        now,
        peer,
        &register_request(device, peer, 1, None, None),
    )
}

#[test]
fn over_a_quic_link_the_certificate_is_the_credential() {
    let now = Instant::now();
    // No passwords at all: a plain peer could not register.
    let creds = Credentials::parse("", "creds.toml").unwrap();
    let mut node = village_without_parent(creds, now);
    let child = GbId::parse("35010201012000000001").unwrap();
    let other = GbId::parse("35010201022000000001").unwrap();
    let quic = |port: u16, id: GbId| Peer {
        transport: Transport::Quic,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: Some(id),
    };
    // A plain peer gets the digest challenge.
    assert_eq!(
        register_once(&mut node, now, udp(5), child.as_str()).status,
        401
    );
    // The link that proved the child's ID registers it at once.
    assert_eq!(
        register_once(&mut node, now, quic(6, child), child.as_str()).status,
        200
    );
    assert_eq!(node.registry().get(&child).unwrap().peer, quic(6, child));
    // A link that proved another node's ID cannot register as the child,
    // and the answer is the same one a wrong password gets.
    let refused = register_once(&mut node, now, quic(7, other), child.as_str());
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (403, "Forbidden")
    );
    assert_eq!(node.registry().get(&child).unwrap().peer, quic(6, child));
}

/// The parent INVITEs the node for `channel` (live); the node's final
/// answer, or the call it reports to the media plane.
fn parent_invites(w: &mut World, channel: &str, cseq: u32) -> Result<u64, Response> {
    let mut invite = w.parent.agent.request(
        Method::Invite,
        &Target {
            id: channel,
            host: "127.0.0.1:2".into(),
            transport: Transport::Udp,
        },
        cseq,
        None,
        Some((
            "APPLICATION/SDP",
            sdp(PARENT, 50000, "0102000009", "Play").to_string().into(),
        )),
    );
    invite
        .headers
        .push(gbgate::node::ON_BEHALF_OF, "dept:police");
    let call_id = invite.call_id().unwrap().to_owned();
    w.direct.push(Transmit {
        peer: udp(2),
        data: invite.to_bytes(),
    });
    for _ in 0..300 {
        while let Some(ev) = w.node.poll_call_event() {
            if let CallEvent::Invited { call, .. } = ev {
                return Ok(call);
            }
        }
        if let Some(r) = w
            .parent
            .responses
            .iter()
            .find(|r| r.status >= 300 && r.call_id() == Some(call_id.as_str()))
        {
            return Err(r.clone());
        }
        w.step(Duration::from_millis(10));
    }
    panic!("no answer to the INVITE");
}

fn audit_records(w: &mut World) -> Vec<policy::audit::AuditEntry> {
    let mut out = Vec::new();
    while let Some(gbgate::node::Output::Audit(e)) = w.node.poll_output() {
        out.push(e);
    }
    out
}

#[test]
fn the_parent_sees_and_watches_only_what_the_policy_shares_and_loses_it_when_revoked() {
    let mut w = World::new(u64::MAX, u64::MAX);
    let mut channels: Vec<String> = w.fleet.channel_ids();
    channels.sort();
    let (shared, unshared) = (channels[..5].to_vec(), channels[5..].to_vec());
    let rules: String = shared
        .iter()
        .map(|c| {
            format!("p, node:{PARENT}, {c}, catalog, allow\np, node:{PARENT}, {c}, live, allow\n")
        })
        .collect();
    let policy = policy::Policy::parse(&[("county.csv", rules.as_str())]).unwrap();
    w.node.set_policy(Some(Arc::new(policy)), w.now);

    // Pushed changes carry only the shared cameras.
    w.run_until(Duration::from_secs(60), |w| {
        w.node.catalog().len() == 43 && {
            let ids = notified_ids(&w.parent);
            shared.iter().all(|c| ids.contains(c))
        }
    });
    w.step(Duration::from_secs(1));
    let cams = |ids: &HashSet<String>| -> HashSet<String> {
        ids.iter()
            .filter(|i| GbId::parse(i).is_ok_and(|g| g.is_channel()))
            .cloned()
            .collect()
    };
    let pushed = cams(&notified_ids(&w.parent));
    // The fleet's IPC registers as itself (132) and lists its channel: it
    // is structure, its channel is governed.
    assert!(unshared.iter().all(|c| !pushed.contains(c)), "{pushed:?}");
    // The parent's catalog query: the same subset, and every shared
    // camera's path up to the node.
    let answered = catalog_as_parent(&mut w, 700);
    let answered_cams = cams(&answered);
    assert!(shared.iter().all(|c| answered_cams.contains(c)));
    assert!(unshared.iter().all(|c| !answered_cams.contains(c)));
    let catalog_audit = audit_records(&mut w);
    assert!(catalog_audit.iter().any(|e| e.object == "catalog"
        && e.subject == format!("node:{PARENT}")
        && e.reason.contains("of 43")));

    // An INVITE for an unshared camera: 403, audited with the department
    // the parent asked for.
    let refused = parent_invites(&mut w, &unshared[0], 30).unwrap_err();
    assert_eq!(refused.status, 403);
    assert!(!refused
        .headers
        .get("Warning")
        .unwrap_or_default()
        .contains(&unshared[0]));
    let audit = audit_records(&mut w);
    let denied = audit
        .iter()
        .find(|e| e.object == unshared[0] && e.action == "live")
        .expect("the refusal is audited");
    assert_eq!(denied.outcome, "deny");
    assert_eq!(denied.on_behalf_of.as_deref(), Some("dept:police"));
    // A shared one is let through to the media plane.
    let call = parent_invites(&mut w, &shared[0], 31).unwrap();
    w.node
        .accept_call(call, &sdp(VILLAGE, 30004, "0102000009", "Play"), w.now);
    w.step(Duration::from_millis(100));
    let allowed = audit_records(&mut w);
    let a = allowed
        .iter()
        .find(|e| e.object == shared[0] && e.action == "live")
        .unwrap();
    assert_eq!(a.outcome, "allow");
    assert!(a.rule.as_deref().unwrap().contains("county.csv:2"), "{a:?}");

    // Revocation: the next policy shares nothing. The open call ends (BYE
    // with the reason, the media plane told), and the parent hears DEL for
    // the five cameras.
    let before = w.parent.bodies.len();
    let empty = policy::Policy::parse(&[("county.csv", "# nothing shared\n")]).unwrap();
    w.node.set_policy(Some(Arc::new(empty)), w.now);
    let mut ended = false;
    while let Some(ev) = w.node.poll_call_event() {
        ended |= matches!(ev, CallEvent::Ended { call: c, ref reason, .. } if c == call && reason.contains("revoked"));
    }
    assert!(ended, "the revoked call ends");
    w.step(Duration::from_secs(1));
    let dels: HashSet<String> = w.parent.bodies[before..]
        .iter()
        .filter_map(|b| match b {
            Manscdp::CatalogNotify(l) => Some(
                l.items
                    .iter()
                    .filter(|i| i.event.as_deref() == Some("DEL"))
                    .map(|i| i.device_id.clone())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(dels, shared.iter().cloned().collect::<HashSet<_>>());
    let audit = audit_records(&mut w);
    assert!(audit
        .iter()
        .any(|e| e.object == shared[0] && e.outcome == "deny"));
    assert!(audit
        .iter()
        .any(|e| e.object == "policy" && e.action == "reload"));
    assert_eq!(w.node.open_calls(), 0);
}

#[test]
fn an_expiring_grant_ends_the_parents_call_and_its_catalog_entry_on_time() {
    let mut w = World::new(u64::MAX, u64::MAX);
    let mut channels: Vec<String> = w.fleet.channel_ids();
    channels.sort();
    let cam = channels[0].clone();
    // The grant runs out 30 s (of virtual time) from now.
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let until = policy::Expiry::from_unix(unix_now + 30).unwrap();
    let rules = format!(
        "p, node:{PARENT}, {cam}, catalog, allow, {until}\np, node:{PARENT}, {cam}, live, allow, {until}\n"
    );
    let policy = policy::Policy::parse(&[("grant.csv", rules.as_str())]).unwrap();
    let start = w.now;
    w.node.set_policy(Some(Arc::new(policy)), w.now);
    w.run_until(Duration::from_secs(20), |w| {
        notified_ids(&w.parent).contains(&cam)
    });
    let call = parent_invites(&mut w, &cam, 40).unwrap();
    w.node
        .accept_call(call, &sdp(VILLAGE, 30006, "0102000009", "Play"), w.now);
    let before = w.parent.bodies.len();
    // Until the expiry the call stays; within a second after it, it ends
    // and the parent hears DEL.
    let mut ended_at = None;
    while ended_at.is_none() {
        w.step(Duration::from_millis(100));
        while let Some(ev) = w.node.poll_call_event() {
            if matches!(ev, CallEvent::Ended { call: c, .. } if c == call) {
                ended_at = Some(w.now - start);
            }
        }
        assert!(
            w.now - start < Duration::from_secs(40),
            "the call outlived its grant"
        );
    }
    let ended_at = ended_at.unwrap();
    assert!(
        ended_at >= Duration::from_secs(28) && ended_at <= Duration::from_secs(32),
        "{ended_at:?}"
    );
    w.step(Duration::from_secs(1));
    let del = w.parent.bodies[before..].iter().any(|b| {
        matches!(b, Manscdp::CatalogNotify(l) if l.items.iter().any(|i| i.device_id == cam && i.event.as_deref() == Some("DEL")))
    });
    assert!(del, "the parent hears DEL when the grant expires");
}

#[test]
fn while_the_audit_store_fails_no_session_is_opened() {
    let mut w = World::new(u64::MAX, u64::MAX);
    let mut channels: Vec<String> = w.fleet.channel_ids();
    channels.sort();
    let cam = channels[0].clone();
    let rules = format!("p, node:{PARENT}, *, *, allow\n");
    let policy = policy::Policy::parse(&[("all.csv", rules.as_str())]).unwrap();
    w.node.set_policy(Some(Arc::new(policy)), w.now);
    w.run_until(Duration::from_secs(20), |w| {
        notified_ids(&w.parent).contains(&cam)
    });
    // The runtime reports a failed batch: new calls are refused, loudly.
    w.node.set_audit_healthy(false);
    let refused = parent_invites(&mut w, &cam, 50).unwrap_err();
    assert_eq!(refused.status, 403);
    let audit = audit_records(&mut w);
    assert!(audit
        .iter()
        .any(|e| e.object == cam && e.outcome == "deny" && e.reason.contains("audit store")));
    // The store works again: so do calls.
    w.node.set_audit_healthy(true);
    assert!(parent_invites(&mut w, &cam, 51).is_ok());
}

/// Positions in the node's event log, per device.
fn positions(w: &World) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in w.node.device_events(None, 0, 10_000, w.now) {
        if matches!(e.kind, gbgate::node::DeviceEventKind::Position(_)) {
            *out.entry(e.device_id).or_default() += 1;
        }
    }
    out
}

#[test]
fn the_node_keeps_its_subscriptions_to_devices_and_refreshes_them() {
    let mut w = World::with_settings(
        7,
        11,
        Settings {
            subscribe_devices: vec![gbgate::node::SubscriptionKind::Position],
            ..Settings::default()
        },
    );
    // Devices grant 60 s: the node refreshes at 40 s, in the dialog.
    w.fleet
        .set_subscription_limit(Some(Duration::from_secs(60)));
    w.run_until(Duration::from_secs(60), |w| positions(w).len() == 2);
    let first = w.fleet.stats().subscribes;
    assert!(first >= 2, "one SUBSCRIBE per device: {first}");
    // Two minutes later: each device refreshed about three times (lossy
    // network: retransmissions count once at the fleet), and each refresh
    // brought a position again.
    let start = w.now;
    while w.now - start < Duration::from_secs(125) {
        w.step(Duration::from_millis(100));
    }
    let refreshes = w.fleet.stats().subscribes - first;
    assert!((5..=8).contains(&refreshes), "{refreshes} refreshes");
    assert!(
        positions(&w).values().all(|n| *n >= 3),
        "{:?}",
        positions(&w)
    );

    // A device that stops taking subscriptions (489) is not asked again
    // until it registers anew.
    w.fleet.set_subscription_limit(None);
    while w.now - start < Duration::from_secs(250) {
        w.step(Duration::from_millis(100));
    }
    let refused = w.fleet.stats().subscribes;
    while w.now - start < Duration::from_secs(500) {
        w.step(Duration::from_millis(100));
    }
    assert_eq!(w.fleet.stats().subscribes, refused, "asked again after 489");
}
