//! Audit heads reported up the tree: each node's keepalives carry its audit
//! head, the parent records it, and a child whose history is cut afterwards
//! is caught by `gbgate audit verify --against-parent`, though its own
//! chain verifies. First sans-IO (two nodes in virtual time: one output per
//! change, none for an impostor), then with real processes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gbgate::api::auth::new_token;
use gbgate::gb::manscdp::{Keepalive, Manscdp};
use gbgate::node::{Identity, Inbound, Node, Output};
use gbgate::settings::Settings;
use gbgate::sip::agent::{Agent, Target, MANSCDP};
use gbgate::sip::message::{Message, Method, Response};
use gbgate::sip::{Peer, Transmit, Transport};
use integration::demo::TreeSpec;
use integration::harness::{Cluster, FleetSpec};
use policy::audit::{Hash, Head};
use topology::{Credentials, GbId};

const PARENT: &str = "35010200002000000001";
const CHILD: &str = "35010201002000000001";

fn udp(port: u16) -> Peer {
    Peer::plain(Transport::Udp, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn head(seq: u64, fill: u8) -> Head {
    Head {
        seq,
        hash: Hash([fill; 32]),
    }
}

/// A parent node (port 1) and its child node (port 2) on a clean in-memory
/// network, in virtual time.
struct Pair {
    now: Instant,
    parent: Node,
    child: Node,
    /// What the parent emitted so far.
    outputs: Vec<Output>,
    /// Final answers to requests injected from elsewhere (port 9).
    stray_answers: Vec<Response>,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let settings = Settings {
            keepalive_interval: Duration::from_secs(1),
            register_retry_min: Duration::from_secs(1),
            ..Settings::default()
        };
        let creds = Credentials::parse(
            "uplink_password = \"pw\"\ndefault_password = \"pw\"\n",
            "creds.toml",
        )
        .unwrap();
        let (pid, cid) = (GbId::parse(PARENT).unwrap(), GbId::parse(CHILD).unwrap());
        let parent = Node::new(
            Identity {
                id: pid,
                name: "County".into(),
                level: "county".into(),
                addr: udp(1).addr,
                parent: None,
                upper: Vec::new(),
                children: HashMap::from([(cid, "Town".into())]),
            },
            settings.clone(),
            Arc::new(creds.clone()),
            now,
        );
        let child = Node::new(
            Identity {
                id: cid,
                name: "Town".into(),
                level: "town".into(),
                addr: udp(2).addr,
                parent: Some((pid, udp(1))),
                upper: Vec::new(),
                children: HashMap::new(),
            },
            settings,
            Arc::new(creds),
            now,
        );
        Pair {
            now,
            parent,
            child,
            outputs: Vec::new(),
            stray_answers: Vec::new(),
        }
    }

    fn deliver(&mut self, t: Transmit) {
        let message = Message::parse(&t.data).unwrap();
        match t.peer.addr.port() {
            1 => self.parent.handle_inbound(
                Inbound::Message {
                    peer: udp(2),
                    message,
                },
                self.now,
            ),
            2 => self.child.handle_inbound(
                Inbound::Message {
                    peer: udp(1),
                    message,
                },
                self.now,
            ),
            9 => {
                if let Message::Response(r) = message {
                    self.stray_answers.push(r);
                }
            }
            p => panic!("datagram to unknown port {p}"),
        }
    }

    /// Advance virtual time by `dt`, delivering everything in flight.
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        self.parent.handle_timeout(self.now);
        self.child.handle_timeout(self.now);
        for _ in 0..50 {
            let mut out = Vec::new();
            self.parent.drain_transmits(&mut out);
            self.child.drain_transmits(&mut out);
            if out.is_empty() {
                break;
            }
            for t in out {
                self.deliver(t);
            }
        }
        while let Some(o) = self.parent.poll_output() {
            self.outputs.push(o);
        }
        // The child keeps no audit here: nothing to collect from it.
        while self.child.poll_output().is_some() {}
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(Duration::from_millis(50));
        }
    }

    /// The child heads the parent emitted since the last call.
    fn take_heads(&mut self) -> Vec<(GbId, Head)> {
        std::mem::take(&mut self.outputs)
            .into_iter()
            .filter_map(|o| match o {
                Output::ChildHead { child, head, .. } => Some((child, head)),
                Output::Audit(_) | Output::Status(_) => None,
            })
            .collect()
    }
}

fn gbgate(args: &[&str]) -> (i32, String) {
    integration::harness::gbgate(args).unwrap()
}

#[test]
fn a_childs_keepalives_carry_its_head_and_the_parent_emits_each_change_once() {
    let mut w = Pair::new();
    let child = GbId::parse(CHILD).unwrap();
    let start = w.now;
    while !w.child.uplink().is_some_and(|u| u.is_registered()) {
        assert!(w.now - start < Duration::from_secs(10), "never registered");
        w.step(Duration::from_millis(50));
    }
    // Keepalives without a head (as before any audit commit, or from a
    // node without audit) are no output.
    w.run(Duration::from_secs(3));
    assert_eq!(w.take_heads(), vec![]);
    assert_eq!(w.parent.child_head(&child), None);

    // A committed head: one output however many keepalives carry it.
    w.child.set_audit_head(head(5, 1));
    assert_eq!(w.child.audit_head(), Some(head(5, 1)));
    w.run(Duration::from_secs(4));
    assert_eq!(w.take_heads(), vec![(child, head(5, 1))]);
    assert_eq!(w.parent.child_head(&child), Some(head(5, 1)));

    // Forward: one more. Several changes between two keepalives: only the
    // one carried.
    w.child.set_audit_head(head(9, 2));
    w.run(Duration::from_secs(3));
    w.child.set_audit_head(head(10, 3));
    w.child.set_audit_head(head(12, 4));
    w.run(Duration::from_secs(3));
    assert_eq!(
        w.take_heads(),
        vec![(child, head(9, 2)), (child, head(12, 4))]
    );

    // Backwards (a cut tail), then the same seq with another hash (a
    // rewrite): red flags, recorded all the same, each once.
    w.child.set_audit_head(head(8, 5));
    w.run(Duration::from_secs(3));
    w.child.set_audit_head(head(8, 6));
    w.run(Duration::from_secs(3));
    assert_eq!(
        w.take_heads(),
        vec![(child, head(8, 5)), (child, head(8, 6))]
    );
    assert_eq!(w.parent.child_head(&child), Some(head(8, 6)));

    // A keepalive naming the child from another address is answered 404
    // and its head is not recorded.
    let impostor = Agent {
        id: child,
        addr: udp(9).addr,
    };
    let body = Manscdp::Keepalive(Keepalive {
        sn: 999,
        device_id: CHILD.into(),
        status: "OK".into(),
        audit_head: Some(head(100, 7)),
    })
    .to_body(Default::default());
    let target = Target {
        id: PARENT,
        host: "127.0.0.1:1".into(),
        transport: Transport::Udp,
    };
    let req = impostor.request(Method::Message, &target, 1, None, Some((MANSCDP, body)));
    w.parent.handle_inbound(
        Inbound::Message {
            peer: udp(9),
            message: Message::Request(req),
        },
        w.now,
    );
    w.step(Duration::from_millis(50));
    assert_eq!(
        w.stray_answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![404]
    );
    assert_eq!(w.take_heads(), vec![]);
    assert_eq!(w.parent.child_head(&child), Some(head(8, 6)));
}

/// The head of the audit store at `db`, and what it records `child`
/// reported (read beside the running writer, as `gbgate audit` does).
fn heads(db: &Path, child: &GbId) -> (Head, Option<Head>) {
    let mut s = policy::audit::open(db.to_str().unwrap()).unwrap();
    (
        s.head().unwrap(),
        s.child_head(child.as_str()).unwrap().map(|c| c.head),
    )
}

#[test]
fn a_cut_history_below_is_caught_against_the_head_its_parent_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 1,
        towns: 0,
        villages: 0,
        sip_base: 21500,
        http_base: 21600,
        keepalive_secs: 1,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs: 0,
        channels: 0,
        media: None,
        ..FleetSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let (police, police_entry) = new_token("wang", "police", false);
    std::fs::write(
        d.join("tokens.toml"),
        format!("{admin_entry}{police_entry}"),
    )
    .unwrap();
    let tree_dir = d.clone();
    let mut cluster = Cluster::start_nodes_with(
        &d,
        spec,
        fleet,
        |n| {
            let file = tree_dir.join(format!("{}.csv", n.level));
            let text = match n.parent {
                Some(p) => format!("p, node:{p}, *, *, allow\np, dept:police, *, *, allow\n"),
                None => "p, dept:police, *, *, allow\n".to_owned(),
            };
            std::fs::write(&file, text).unwrap();
            vec![
                "--policy".into(),
                file.display().to_string(),
                "--tokens".into(),
                tree_dir.join("tokens.toml").display().to_string(),
            ]
        },
        Some(admin),
    )
    .unwrap();
    cluster
        .wait_for("the tree linked", Duration::from_secs(15), Cluster::linked)
        .unwrap();
    let city = cluster.tree.root().clone();
    let county = cluster.tree.level("county")[0].clone();
    let (city_db, county_db) = (
        d.join(format!("audit-{}.db", city.id)),
        d.join(format!("audit-{}.db", county.id)),
    );

    // Decisions at the county (the child): its policy load, the city's
    // catalog query, and police listing channels there. Each answer
    // leaves once its record is committed.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    for _ in 0..6 {
        let resp = agent
            .get(&format!("http://{}/api/v1/channels", county.http))
            .header("Authorization", &format!("Bearer {police}"))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let (mut child_head, mut recorded) = (Head::default(), None);
    cluster
        .wait_for(
            "the city to record the county's latest head",
            Duration::from_secs(10),
            |_| {
                (child_head, recorded) = (
                    heads(&county_db, &county.id).0,
                    heads(&city_db, &county.id).1,
                );
                recorded == Some(child_head)
            },
        )
        .unwrap();
    assert!(child_head.seq >= 8, "{child_head}");
    eprintln!("the city recorded the county's head {child_head}");

    // The county stops; its history checks out against the city's record.
    cluster.kill_node(&county.id);
    let (city_path, county_path) = (city_db.to_str().unwrap(), county_db.to_str().unwrap());
    let against = [
        "audit",
        "verify",
        "--audit",
        county_path,
        "--against-parent",
        city_path,
        "--node",
        county.id.as_str(),
    ];
    let (code, out) = gbgate(&against);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("the parent recorded seq {}", child_head.seq)),
        "{out}"
    );
    assert!(out.contains("clean"), "{out}");

    // Someone cuts the county's last four records and rewinds its head row
    // to match: the chain alone verifies, the city's record does not.
    let keep = child_head.seq - 4;
    let conn = rusqlite::Connection::open(&county_db).unwrap();
    conn.execute_batch(&format!(
        "DELETE FROM audit_log WHERE seq > {keep};
         UPDATE audit_head SET seq = seq - 4,
             hash = (SELECT hash FROM audit_log WHERE seq = {keep}) WHERE id = 1;"
    ))
    .unwrap();
    drop(conn);
    let (code, out) = gbgate(&["audit", "verify", "--audit", county_path]);
    assert_eq!(code, 0, "the cut is consistent: {out}");
    assert!(out.starts_with("clean"), "{out}");
    let (code, out) = gbgate(&against);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("TAMPERED"), "{out}");
    assert!(
        out.contains(&format!("record {} is missing", child_head.seq)),
        "{out}"
    );

    // The county comes back on its cut log: its first keepalives report a
    // head behind the one recorded. The city flags it and records it too;
    // the highest head stays what verification checks against.
    cluster.start_node(&county.id).unwrap();
    cluster
        .wait_for(
            "the city to count the county's head going backwards",
            Duration::from_secs(15),
            |c| {
                c.metric(&city.id, "gbgate_audit_child_head_regressions_total", "")
                    .unwrap_or(0.0)
                    >= 1.0
            },
        )
        .unwrap();
    let log = std::fs::read_to_string(d.join(format!("{}.log", city.id))).unwrap();
    assert!(log.contains("AUDIT HEAD WENT BACKWARDS"), "{log}");
    let mut s = policy::audit::open(city_path).unwrap();
    assert_eq!(
        s.child_head(county.id.as_str()).unwrap().map(|c| c.head),
        Some(child_head),
        "the highest recorded head still stands"
    );
    drop(s);
    cluster.kill_node(&county.id);
    let (code, out) = gbgate(&against);
    assert_eq!(code, 2, "still caught after the restart: {out}");
}
