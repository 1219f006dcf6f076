//! What one digest registration costs the node, without sockets: the
//! REGISTER storm's two legs (REGISTER → 401, REGISTER with Authorization
//! → 200) for `DEVICES` devices, framed from one TCP byte stream as sipp
//! sends them, parsed, decided and answered by a [`Node`].
//!
//! The registry is warmed by one round first, so the measured round is
//! what a sustained storm is made of: devices refreshing their binding.
//! Only [`serve`] is the node's work; the client's digest is done outside
//! it. It prints the time per leg, the longest pause while reading 64 KiB,
//! and how long the periodic sweep takes with every device registered.
//! The figure to compare between commits is the instruction count, which
//! does not move with the machine's load:
//!
//! ```sh
//! cargo build --release --example register_cost
//! valgrind --tool=callgrind --toggle-collect='register_cost::serve*' \
//!   target/release/examples/register_cost 20000
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use gbgate::node::{Identity, Inbound, Node};
use gbgate::settings::Settings;
use gbgate::sip::auth::Challenge;
use gbgate::sip::framing::StreamFramer;
use gbgate::sip::message::Message;
use gbgate::sip::{Peer, Transmit, Transport};
use topology::{Credentials, GbId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOMAIN: &str = "3402000000";
const NODE: &str = "34020000002000000001";
const PASSWORD: &str = "storm";

fn main() {
    let devices: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |s| s.parse().expect("device count"));
    let peer = Peer::plain(Transport::Tcp, SocketAddr::from(([127, 0, 0, 1], 5070)));
    let creds = Credentials::parse(
        &format!("default_password = \"{PASSWORD}\"\n"),
        "creds.toml",
    )
    .expect("credentials");
    let identity = Identity {
        id: GbId::parse(NODE).expect("node ID"),
        name: "Storm".into(),
        level: "city".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
        parent: None,
        upper: Vec::new(),
        children: HashMap::new(),
    };
    let settings = Settings {
        query_new_registrants: false,
        max_registrations: devices.max(100_000),
        ..Settings::default()
    };
    let start = Instant::now();
    let mut node = Node::new(identity, settings, Arc::new(creds), start);

    for round in ["warm", "measured"] {
        let first: Vec<Vec<u8>> = (0..devices).map(|i| register(round, i, 1, None)).collect();
        let t0 = Instant::now();
        let challenges = serve(&mut node, peer, &first, start);
        let first_leg = t0.elapsed();
        assert_eq!(challenges.len(), devices, "every REGISTER got one answer");
        let second: Vec<Vec<u8>> = challenges
            .iter()
            .enumerate()
            .map(|(i, answer)| {
                let challenge = challenge_in(answer);
                let uri = format!("sip:{NODE}@{DOMAIN}");
                let user = device(i);
                let digest = gbgate::sip::auth::answer(
                    &challenge, "REGISTER", &uri, &user, PASSWORD, 1, "c0ffee",
                );
                register(round, i, 2, Some(&digest.to_header_value()))
            })
            .collect();
        let t1 = Instant::now();
        let accepted = serve(&mut node, peer, &second, start);
        let second_leg = t1.elapsed();
        let ok = accepted.iter().filter(|a| status(a) == 200).count();
        assert_eq!(ok, devices, "every device registered");
        let per = |d: std::time::Duration| d.as_nanos() as f64 / devices as f64 / 1000.0;
        println!(
            "{round}: {devices} registrations, {:.2} µs per REGISTER→401, {:.2} µs per REGISTER→200",
            per(first_leg),
            per(second_leg)
        );
    }
    // The periodic sweep with every device registered: it runs on the
    // same thread, so its length is a pause every registration waits out.
    for i in 1..=3u64 {
        let t = Instant::now();
        node.handle_timeout(start + std::time::Duration::from_secs(6 * i));
        println!(
            "sweep with {devices} registrants: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// The node's side: one TCP byte stream in, every answer out.
#[inline(never)]
fn serve(node: &mut Node, peer: Peer, requests: &[Vec<u8>], now: Instant) -> Vec<Transmit> {
    let mut framer = StreamFramer::new(64 * 1024);
    let mut out = Vec::with_capacity(requests.len());
    // sipp's writes reach the node in reads of up to 64 KiB.
    let stream: Vec<u8> = requests.concat();
    let mut slowest = std::time::Duration::ZERO;
    for chunk in stream.chunks(64 * 1024) {
        let t = Instant::now();
        framer.push(chunk);
        while let Some(message) = framer.next_message().expect("framing") {
            node.handle_inbound(Inbound::Message { peer, message }, now);
        }
        node.drain_transmits(&mut out);
        slowest = slowest.max(t.elapsed());
    }
    // A long read is a pause every registration behind it waits out (a
    // table growing, say): the storm's p99 sees it, the mean does not.
    println!(
        "  slowest 64-KiB read: {:.2} ms",
        slowest.as_secs_f64() * 1e3
    );
    out
}

fn device(i: usize) -> String {
    format!("{DOMAIN}131{i:07}")
}

fn register(round: &str, i: usize, cseq: u32, authorization: Option<&str>) -> Vec<u8> {
    let id = device(i);
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:{NODE}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;rport;branch=z9hG4bK-{round}-{i}-{cseq}\r\n\
         From: <sip:{id}@{DOMAIN}>;tag={i}SIPpTag00{round}\r\n\
         To: <sip:{id}@{DOMAIN}>\r\n\
         Call-ID: {round}-{i}@127.0.0.1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{id}@127.0.0.1:5070;transport=tcp>\r\n\
         {auth}Max-Forwards: 70\r\n\
         User-Agent: sipp-storm\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn parsed(t: &Transmit) -> Message {
    Message::parse(&t.data).expect("the node's answer parses")
}

fn status(t: &Transmit) -> u16 {
    match parsed(t) {
        Message::Response(r) => r.status,
        Message::Request(_) => 0,
    }
}

fn challenge_in(t: &Transmit) -> Challenge {
    let Message::Response(r) = parsed(t) else {
        panic!("a request where the 401 was expected")
    };
    assert_eq!(r.status, 401, "the first leg is challenged");
    Challenge::parse(r.headers.get("WWW-Authenticate").expect("a challenge")).expect("challenge")
}
