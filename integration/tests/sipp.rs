//! sipp, a SIP tool we did not write, as a GB/T 28181 device against one
//! `gbgate` node: digest registration (wrong password → 403, right → 200),
//! the node's Catalog query answered, Keepalive; the node's view matches.
//! Then hostile input over UDP and TCP: the node answers 400 or drops, and
//! keeps serving. And sipp as a device that a viewer's request INVITEs:
//! INVITE, 100, 200 with SDP, ACK, then BYE from the node when no media
//! comes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gbgate::api::{CatalogEntry, CatalogPage, TopologyView};

const NODE: &str = "35010201002000000001";
const DOMAIN: &str = "3501020100";

struct Node {
    child: Child,
    sip: String,
    http: String,
    /// An admin token, when the node runs with a policy.
    token: Option<String>,
}

impl Node {
    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let r = ureq::get(&format!("http://{}{path}", self.http));
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, sip_port: u16, http_port: u16) -> Node {
    start_node_with(dir, sip_port, http_port, "")
}

/// A node whose `[defaults]` also hold `extra` (TOML lines).
fn start_node_with(dir: &Path, sip_port: u16, http_port: u16, extra: &str) -> Node {
    std::fs::write(
        dir.join("creds.toml"),
        "default_password = \"right-password\"\n",
    )
    .unwrap();
    let tables = format!(
        "{extra}\n\n[[node]]\nid = \"{NODE}\"\nname = \"Town under test\"\nlevel = \"town\"\nsip = \"127.0.0.1:{sip_port}\"\nhttp = \"127.0.0.1:{http_port}\"\ncredentials = \"creds.toml\"\n"
    );
    start_node_only(dir, sip_port, http_port, &tables)
}

/// A node from a topology of `[defaults]` lines and tables written by the
/// caller (`tables`), with credentials already in `dir/creds.toml`.
fn start_node_only(dir: &Path, sip_port: u16, http_port: u16, tables: &str) -> Node {
    start_node_sharing(dir, sip_port, http_port, tables, None)
}

/// [`start_node_only`] with a policy file and an admin token (`policy`:
/// the policy text).
fn start_node_sharing(
    dir: &Path,
    sip_port: u16,
    http_port: u16,
    tables: &str,
    policy: Option<&str>,
) -> Node {
    let sip = format!("127.0.0.1:{sip_port}");
    let http = format!("127.0.0.1:{http_port}");
    std::fs::write(
        dir.join("topology.toml"),
        format!("[defaults]\nkeepalive_interval_secs = 60\n{tables}"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let mut args: Vec<String> = Vec::new();
    let mut token = None;
    if let Some(text) = policy {
        std::fs::write(dir.join("policy.csv"), text).unwrap();
        let (t, entry) = gbgate::api::auth::new_token("ops", "ops", true);
        std::fs::write(dir.join("tokens.toml"), entry).unwrap();
        token = Some(t);
        for (flag, file) in [("--policy", "policy.csv"), ("--tokens", "tokens.toml")] {
            args.push(flag.into());
            args.push(dir.join(file).display().to_string());
        }
    }
    let child = Command::new(integration::harness::bin_dir().join("gbgate"))
        .args(["run", "--topology"])
        .arg(dir.join("topology.toml"))
        .args(["--node", NODE])
        .args(&args)
        // China Standard Time, as deployed: Date headers must carry it.
        .env("TZ", "CST-8")
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()
        .expect("gbgate binary (cargo build --workspace --bins)");
    let node = Node {
        child,
        sip,
        http,
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(&format!("http://{}/healthz", node.http))
        .call()
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "node did not start: {}",
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

/// Scenario keywords ([device], [node], ...) from the positional fields.
fn keys(fields: &[&str]) -> Vec<String> {
    let names = ["device", "node", "domain", "password", "ch1", "ch2"];
    names
        .iter()
        .zip(fields)
        .flat_map(|(k, v)| ["-key".to_owned(), (*k).to_owned(), (*v).to_owned()])
        .collect()
}

/// A scenario's out-of-call half (requests the node starts with a new Call-ID).
fn ooc_args(scenario: &str) -> Vec<std::ffi::OsString> {
    let ooc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(format!("{scenario}_catalog_ooc.xml"));
    if ooc.exists() {
        vec!["-oocsf".into(), ooc.into_os_string()]
    } else {
        Vec::new()
    }
}

/// Run one sipp scenario once; true when the call succeeded.
fn sipp(dir: &Path, scenario: &str, fields: &[&str], node: &Node, transport: &str) -> bool {
    let scen = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(format!("{scenario}.xml"));
    let t = if transport == "tcp" { "t1" } else { "u1" };
    let out = Command::new("sipp")
        .arg(&node.sip)
        .arg("-sf")
        .arg(&scen)
        .args(ooc_args(scenario))
        .args(["-t", t, "-i", "127.0.0.1", "-m", "1", "-l", "1"])
        // sipp's [authentication] takes user and password from -au/-ap only.
        .args(["-au", fields[0], "-ap", fields[3]])
        .args(keys(fields))
        .args([
            "-timeout",
            "15s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("sipp installed (make deps installs sip-tester)");
    if !out.status.success() {
        eprintln!(
            "sipp {scenario} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            if f.file_name().to_string_lossy().ends_with("errors.log") {
                eprintln!("{}", std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
    }
    out.status.success()
}

fn catalog(node: &Node) -> CatalogPage {
    node.get("/api/v1/catalog")
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

fn topology(node: &Node) -> TopologyView {
    node.get("/api/v1/topology")
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

#[test]
fn sipp_device_registers_answers_catalog_and_keeps_alive() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 20060, 23080);

    // Wrong password: 401 then 403.
    let bad = "35010201001320000007";
    assert!(sipp(
        dir.path(),
        "register_forbidden",
        &[bad, NODE, DOMAIN, "wrong-password"],
        &node,
        "udp"
    ));
    assert_eq!(topology(&node).devices.registered, 0);

    // Right password, over UDP: 401, 200, the node's Catalog query answered, Keepalive 200.
    let dev = "35010201001320000001";
    let (ch1, ch2) = ("35010201001310000001", "35010201001310000002");
    assert!(sipp(
        dir.path(),
        "device",
        &[dev, NODE, DOMAIN, "right-password", ch1, ch2],
        &node,
        "udp"
    ));

    // The node's view matches what sipp said.
    let (cat, [d, a, b]) = wait_for_entries(&node, [dev, ch1, ch2]);
    assert_eq!(d.parent_id.as_deref(), Some(NODE));
    assert_eq!(a.parent_id.as_deref(), Some(dev));
    assert_eq!(a.name.as_deref(), Some("东门 1"));
    assert_eq!(a.status, "ON");
    assert_eq!(b.name.as_deref(), Some("西门 2"));
    assert_eq!(b.status, "OFF");
    assert_eq!(cat.items.len(), 3);
    assert_eq!(cat.next, None);
    let t = topology(&node);
    assert_eq!((t.devices.registered, t.devices.online), (1, 1));

    // A keepalive that claims to be the device but comes from another port
    // (forged, or the device behind a NAT that rebound) changes nothing and
    // gets 404, as for an unknown ID: only an authenticated REGISTER may
    // move a device, and GB devices re-register on 404.
    let spoof = UdpSocket::bind("127.0.0.1:0").unwrap();
    spoof
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let body = format!("<?xml version=\"1.0\"?><Notify><CmdType>Keepalive</CmdType><SN>9</SN><DeviceID>{dev}</DeviceID><Status>OK</Status></Notify>");
    let forged = message_with_body("spoof1", &body).replace("35010201001320000009", dev);
    let r = udp_exchange(&spoof, &node, forged.as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 404"), "{r}");
    let t = topology(&node);
    assert_eq!((t.devices.registered, t.devices.online), (1, 1));

    // The device comes back from another source port (sipp binds a new
    // one): its digest REGISTER moves the binding and its keepalive from
    // there is answered 200 (the scenario fails otherwise).
    assert!(sipp(
        dir.path(),
        "device",
        &[dev, NODE, DOMAIN, "right-password", ch1, ch2],
        &node,
        "udp"
    ));
    let t = topology(&node);
    assert_eq!((t.devices.registered, t.devices.online), (1, 1));

    // The same device over TCP works too.
    let dev2 = "35010201001320000002";
    let (ch3, ch4) = ("35010201001310000003", "35010201001310000004");
    assert!(sipp(
        dir.path(),
        "device",
        &[dev2, NODE, DOMAIN, "right-password", ch3, ch4],
        &node,
        "tcp"
    ));
    assert_eq!(topology(&node).devices.registered, 2);
}

fn udp_exchange(sock: &UdpSocket, node: &Node, data: &[u8]) -> Option<String> {
    sock.send_to(data, &node.sip).unwrap();
    let mut buf = vec![0u8; 70_000];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

fn options(branch: &str, transport: &str) -> String {
    format!(
        "OPTIONS sip:{NODE}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;rport;branch=z9hG4bK{branch}\r\nFrom: <sip:34020000001320000001@{DOMAIN}>;tag=1\r\nTo: <sip:{NODE}@{DOMAIN}>\r\nCall-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn message_with_body(branch: &str, body: &str) -> String {
    format!(
        "MESSAGE sip:{NODE}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{branch}\r\nFrom: <sip:35010201001320000009@{DOMAIN}>;tag=1\r\nTo: <sip:{NODE}@{DOMAIN}>\r\nCall-ID: {branch}@test\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn hostile_input_gets_400_or_is_dropped_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 20160, 23180);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    // Sanity: a well-formed OPTIONS is answered.
    let r = udp_exchange(&sock, &node, options("ok1", "UDP").as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");

    // Truncated message: body shorter than Content-Length → 400 (headers salvageable).
    let mut trunc = message_with_body("tr1", "<Notify><CmdType>Keepalive</CmdType></Notify>");
    trunc.truncate(trunc.len() - 10);
    let r = udp_exchange(&sock, &node, trunc.as_bytes());
    assert!(
        r.as_deref().is_none_or(|r| r.starts_with("SIP/2.0 400")),
        "{r:?}"
    );

    // Wrong Content-Length (too large) → 400.
    let wrong = options("cl1", "UDP").replace("Content-Length: 0", "Content-Length: 500");
    let r = udp_exchange(&sock, &node, wrong.as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 400"), "{r}");

    // Binary garbage → dropped (nothing to answer to).
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert_eq!(udp_exchange(&sock, &node, &garbage), None);

    // A 100 KB header over UDP: larger than any datagram we accept → dropped.
    let huge = options("big1", "UDP").replace(
        "Max-Forwards: 70",
        &format!("X-Big: {}\r\nMax-Forwards: 70", "a".repeat(100_000)),
    );
    let r = udp_exchange(&sock, &node, &huge.as_bytes()[..65_000.min(huge.len())]);
    assert!(
        r.as_deref().is_none_or(|r| r.starts_with("SIP/2.0 400")),
        "{r:?}"
    );

    // An XML bomb in a MESSAGE body → 400 (from a registered peer or not, the body is refused first).
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]><Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&lol3;</DeviceID></Notify>";
    let r = udp_exchange(&sock, &node, message_with_body("bomb1", bomb).as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 400"), "{r}");

    // Still serving over UDP.
    let r = udp_exchange(&sock, &node, options("ok2", "UDP").as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");

    // TCP: a malformed message with valid framing gets 400 and the connection survives.
    let mut tcp = TcpStream::connect(&node.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let bad_start = "NOT A SIP LINE\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbad\r\nCall-ID: bad@test\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nContent-Length: 0\r\n\r\n";
    let two = format!("{bad_start}{}", options("tcp1", "TCP"));
    tcp.write_all(two.as_bytes()).unwrap();
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    while !(got.contains("SIP/2.0 400") && got.contains("SIP/2.0 200")) && Instant::now() < deadline
    {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => break,
        }
    }
    assert!(got.contains("SIP/2.0 400"), "{got}");
    assert!(
        got.contains("SIP/2.0 200"),
        "connection must survive a bad message: {got}"
    );

    // TCP: a 100 KB header cannot be framed: that connection is closed, others are fine.
    let mut tcp2 = TcpStream::connect(&node.sip).unwrap();
    tcp2.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = tcp2.write_all(huge.as_bytes());
    let mut sink = Vec::new();
    let closed = tcp2.read_to_end(&mut sink).is_ok();
    assert!(closed, "oversized header should close the connection");

    let r = udp_exchange(&sock, &node, options("ok3", "UDP").as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    let m = ureq::get(&format!("http://{}/metrics", node.http))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(m.contains("gbgate_sip_parse_errors_total"), "{m}");
}

#[test]
fn sipp_device_is_invited_acked_and_hung_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with(
        dir.path(),
        20260,
        23280,
        "media_timeout_secs = 2\nlinger_secs = 0",
    );
    let dev = "35010201001320000005";
    let (ch1, ch2) = ("35010201001310000005", "35010201001310000006");
    let run = {
        let (d, sip, http) = (
            dir.path().to_path_buf(),
            node.sip.clone(),
            node.http.clone(),
        );
        std::thread::spawn(move || {
            // The scenario only needs the node's addresses.
            let n = Node {
                child: Command::new("true").spawn().unwrap(),
                sip,
                http,
                token: None,
            };
            sipp(
                &d,
                "device_invite",
                &[dev, NODE, DOMAIN, "right-password", ch1, ch2],
                &n,
                "udp",
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !catalog(&node).items.iter().any(|e| e.device_id == ch1) {
        assert!(
            Instant::now() < deadline,
            "sipp's channel never reached the catalog"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A viewer asks for the channel: the node INVITEs sipp, which answers
    // but sends no media, so the viewer is refused once the media timeout
    // passes and the node hangs up with BYE.
    let t = Instant::now();
    let r = ureq::get(&format!("http://{}/live/{ch1}.flv", node.http)).call();
    assert!(
        matches!(r, Err(ureq::Error::StatusCode(502))),
        "a stream without media is refused: {r:?}"
    );
    eprintln!("the viewer was refused {:?} after asking", t.elapsed());
    assert!(run.join().unwrap(), "sipp saw INVITE, ACK and BYE in order");
    let m = ureq::get(&format!("http://{}/metrics", node.http))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        m.contains("gbgate_invites_sent_total{kind=\"live\"} 1"),
        "{m}"
    );
    assert!(m.contains("gbgate_byes_sent_total 1"), "{m}");
}

/// One request of the interoperability table: RFC 3261 says refuse it
/// (400), or old cameras send it and it is legal (answered normally).
struct OddCase {
    what: &'static str,
    /// The request; `{t}` is the Via transport, `{b}` a fresh branch suffix.
    request: String,
    status: &'static str,
    /// Text the response must hold besides its status (a reason, a header).
    holds: &'static str,
}

fn odd_cases() -> Vec<OddCase> {
    let from = format!("<sip:34020000001320000001@{DOMAIN}>;tag=1");
    let to = format!("<sip:{NODE}@{DOMAIN}>");
    let req = |start: &str, extra: &str, from: &str, to: &str, body: &str| {
        let method = start.split(' ').next().unwrap_or_default();
        format!(
            "{start}\r\nVia: SIP/2.0/{{t}} 127.0.0.1:9;rport;branch=z9hG4bK{{b}}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {{b}}@odd\r\nCSeq: 7 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let uri = format!("sip:{NODE}@{DOMAIN}");
    let case = |what, request, status, holds| OddCase {
        what,
        request,
        status,
        holds,
    };
    vec![
        case(
            "REGISTER whose Request-URI has no scheme",
            req(
                &format!("REGISTER {NODE}@{DOMAIN} SIP/2.0"),
                "",
                &from,
                &to,
                "",
            ),
            "400",
            "Request-URI",
        ),
        case(
            "OPTIONS with an unknown URI scheme",
            req(
                &format!("OPTIONS xyz:{NODE}@{DOMAIN} SIP/2.0"),
                "",
                &from,
                &to,
                "",
            ),
            "400",
            "scheme",
        ),
        case(
            "MESSAGE whose Request-URI is in angle brackets",
            req(&format!("MESSAGE <{uri}> SIP/2.0"), "", &from, &to, ""),
            "400",
            "Request-URI",
        ),
        case(
            "OPTIONS whose Request-URI port overflows",
            req(
                &format!("OPTIONS sip:{NODE}@127.0.0.1:70000 SIP/2.0"),
                "",
                &from,
                &to,
                "",
            ),
            "400",
            "port",
        ),
        case(
            "REGISTER with an unterminated quote in From",
            req(
                &format!("REGISTER {uri} SIP/2.0"),
                "",
                &format!("\"Cam <sip:34020000001320000001@{DOMAIN}>;tag=1"),
                &to,
                "",
            ),
            "400",
            "From",
        ),
        case(
            "OPTIONS with an unterminated angle bracket in To",
            req(
                &format!("OPTIONS {uri} SIP/2.0"),
                "",
                &from,
                &format!("<sip:{NODE}@{DOMAIN}"),
                "",
            ),
            "400",
            "To",
        ),
        case(
            "MESSAGE whose From has a display name but no brackets",
            req(
                &format!("MESSAGE {uri} SIP/2.0"),
                "",
                &format!("Cam sip:34020000001320000001@{DOMAIN};tag=1"),
                &to,
                "",
            ),
            "400",
            "From",
        ),
        case(
            "OPTIONS with two Call-IDs",
            req(
                &format!("OPTIONS {uri} SIP/2.0"),
                "Call-ID: other@odd\r\n",
                &from,
                &to,
                "",
            ),
            "400",
            "Call-ID",
        ),
        case(
            "REGISTER with two CSeqs",
            req(
                &format!("REGISTER {uri} SIP/2.0"),
                "CSeq: 8 REGISTER\r\n",
                &from,
                &to,
                "",
            ),
            "400",
            "CSeq",
        ),
        case(
            "OPTIONS with a non-numeric Max-Forwards",
            req(&format!("OPTIONS {uri} SIP/2.0"), "", &from, &to, "")
                .replace("Max-Forwards: 70", "Max-Forwards: seventy"),
            "400",
            "Max-Forwards",
        ),
        case(
            "MESSAGE with a body and no Content-Type",
            req(
                &format!("MESSAGE {uri} SIP/2.0"),
                "",
                &from,
                &to,
                "<Notify/>",
            ),
            "400",
            "Content-Type",
        ),
        case(
            "OPTIONS whose Via has no branch (RFC 2543)",
            req(&format!("OPTIONS {uri} SIP/2.0"), "", &from, &to, "")
                .replace(";branch=z9hG4bK{b}", ""),
            "200",
            "",
        ),
        case(
            "OPTIONS with Content-Length 0000",
            req(&format!("OPTIONS {uri} SIP/2.0"), "", &from, &to, "")
                .replace("Content-Length: 0", "Content-Length: 0000"),
            "200",
            "",
        ),
        case(
            "REGISTER with no branch and Content-Length 00 (challenged)",
            req(
                &format!("REGISTER {uri} SIP/2.0"),
                "Expires: 3600\r\n",
                &from,
                &to,
                "",
            )
            .replace(";branch=z9hG4bK{b}", "")
            .replace("Content-Length: 0", "Content-Length: 00"),
            "401",
            "WWW-Authenticate",
        ),
        case(
            "MESSAGE with a body type we do not read",
            req(
                &format!("MESSAGE {uri} SIP/2.0"),
                "Content-Type: text/plain\r\n",
                &from,
                &to,
                "hello",
            ),
            "415",
            "Accept: Application/MANSCDP+xml",
        ),
    ]
}

/// Read one whole SIP message from a stream (head, then Content-Length bytes).
fn read_sip(tcp: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let msg: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn malformed_sip_gets_400_and_legal_odd_sip_is_served_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 20170, 23190);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    // One TCP connection carries every case: it must survive them all.
    let mut tcp = TcpStream::connect(&node.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut pending = Vec::new();
    let mut n = 0;
    for case in odd_cases() {
        for transport in ["UDP", "TCP"] {
            n += 1;
            let wire = case
                .request
                .replace("{t}", transport)
                .replace("{b}", &format!("odd{n}"));
            let answer = if transport == "UDP" {
                udp_exchange(&sock, &node, wire.as_bytes())
            } else {
                tcp.write_all(wire.as_bytes()).unwrap();
                read_sip(&mut tcp, &mut pending)
            };
            let answer =
                answer.unwrap_or_else(|| panic!("{} over {transport}: no answer", case.what));
            let status_line = answer.lines().next().unwrap_or_default();
            eprintln!("{} over {transport}: {status_line}", case.what);
            assert!(
                status_line.starts_with(&format!("SIP/2.0 {}", case.status)),
                "{} over {transport}: expected {}, got {answer}",
                case.what,
                case.status
            );
            assert!(
                answer.contains(case.holds),
                "{} over {transport}: answer lacks {:?}: {answer}",
                case.what,
                case.holds
            );
        }
    }
    // Alive, on both transports and on the same TCP connection.
    let r = udp_exchange(&sock, &node, options("alive", "UDP").as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    tcp.write_all(options("alive-tcp", "TCP").as_bytes())
        .unwrap();
    let r = read_sip(&mut tcp, &mut pending).expect("TCP connection still open");
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
}

#[test]
fn a_device_with_its_realm_in_to_registers_and_its_channels_sit_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 20080, 23100);
    let dev = "35010201001320000005";
    let (ch1, ch2) = ("35010201001310000051", "35010201001310000052");
    // REGISTER with `To: <sip:3501020100@3501020100>`: the ID comes from
    // From; the catalog answer has no ParentID on its channels.
    assert!(sipp(
        dir.path(),
        "device_realm_to",
        &[dev, NODE, DOMAIN, "right-password", ch1, ch2],
        &node,
        "udp"
    ));
    let (_, [d, a, b]) = wait_for_entries(&node, [dev, ch1, ch2]);
    assert_eq!(d.parent_id.as_deref(), Some(NODE));
    assert_eq!(a.parent_id.as_deref(), Some(dev), "{a:?}");
    assert_eq!(b.parent_id.as_deref(), Some(dev), "{b:?}");
    let t = topology(&node);
    assert_eq!((t.devices.registered, t.devices.online), (1, 1));
}

/// The node's catalog once it holds every one of `ids` (5 s at most),
/// with those entries.
fn wait_for_entries<const N: usize>(
    node: &Node,
    ids: [&str; N],
) -> (CatalogPage, [CatalogEntry; N]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cat = catalog(node);
        let found: Vec<CatalogEntry> = ids
            .iter()
            .filter_map(|id| cat.items.iter().find(|e| e.device_id == *id).cloned())
            .collect();
        if let Ok(found) = <[CatalogEntry; N]>::try_from(found) {
            return (cat, found);
        }
        assert!(Instant::now() < deadline, "catalog: {:?}", cat.items);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_node_tells_devices_local_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), 20070, 23090);
    let status: serde_json::Value = ureq::get(&format!(
        "http://{}/api/v1/devices/{NODE}/status",
        node.http
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    let shown = status["device_time"].as_str().unwrap().to_owned();
    // The same clock the Date header of a 200 to REGISTER reads: China
    // time, to the minute (either side of a minute boundary).
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let cst = |d: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::minutes(d))
            .to_offset(time::macros::offset!(+8))
            .format(&fmt)
            .unwrap()
    };
    let minutes = [cst(-1), cst(0), cst(1)];
    assert!(
        minutes.iter().any(|m| shown.starts_with(m.as_str())),
        "device_time {shown} is not China time ({minutes:?})"
    );
}

/// A sipp upper platform (UAS) on `port`, running until its scenario ends.
fn upper_platform(dir: &Path, port: u16, platform: &str, pw: &str, channel: &str) -> Peer {
    let sipp_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp");
    let keys = [
        ("platform", platform),
        ("realm", "3500000000"),
        ("node", NODE),
        ("pw", pw),
        ("channel", channel),
    ];
    Command::new("sipp")
        .arg("-sf")
        .arg(sipp_dir.join("upper_platform.xml"))
        .args(["-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mi", "127.0.0.1", "-mp", &(port + 1000).to_string()])
        .args(["-timeout", "40s", "-timeout_error", "-nostdin"])
        .args(["-trace_msg", "-trace_err", "-message_file"])
        .arg(dir.join(format!("upper-{port}-messages.log")))
        .args(keys.iter().flat_map(|(k, v)| ["-key", k, v]))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Peer)
        .expect("sipp installed (make deps installs sip-tester)")
}

#[test]
fn two_third_party_upper_platforms_register_the_node_query_it_and_invite() {
    let dir = tempfile::tempdir().unwrap();
    let (up1, up2) = ("35000000002000000001", "35000000002000000002");
    let (p1, p2) = (20091u16, 20092u16);
    std::fs::write(
        dir.path().join("creds.toml"),
        format!("default_password = \"right-password\"\n[upper]\n\"{up1}\" = \"first-secret\"\n\"{up2}\" = \"second-secret\"\n"),
    )
    .unwrap();
    // Both platforms listen before the node starts; GB2312 is the default
    // charset toward third parties.
    let device = "35010201001320000001";
    let channel = "35010201001310000002";
    let mut uppers = vec![
        upper_platform(dir.path(), p1, up1, "first-secret", channel),
        upper_platform(dir.path(), p2, up2, "second-secret", channel),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let extra = format!(
        "register_retry_secs = 1\n\n[[node]]\nid = \"{NODE}\"\nname = \"City under test\"\nlevel = \"town\"\nsip = \"127.0.0.1:20090\"\nhttp = \"127.0.0.1:23110\"\ncredentials = \"creds.toml\"\n\n[[node.upper]]\nid = \"{up1}\"\nname = \"Provincial platform\"\nsip = \"127.0.0.1:{p1}\"\n\n[[node.upper]]\nid = \"{up2}\"\nname = \"Traffic department platform\"\nsip = \"127.0.0.1:{p2}\"\n"
    );
    // The provincial platform sees everything; the traffic department's
    // platform only the first camera (a second IPC stays below).
    let policy = format!("p, node:{up1}, *, *, allow\np, node:{up2}, {channel}, *, allow\n");
    let node = start_node_sharing(dir.path(), 20090, 23110, &extra, Some(&policy));
    // A camera below that streams when INVITEd.
    let clip = integration::harness::bin_dir()
        .join("../clips/h264.h264")
        .canonicalize()
        .expect("make clips");
    let sim = Command::new(integration::harness::bin_dir().join("gbsim"))
        .args(["--server", &node.sip, "--server-id", NODE])
        .args(["--prefix", "3501020100", "--ipcs", "2", "--nvrs", "0"])
        .args(["--password", "right-password", "--media"])
        .arg(clip)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Peer)
        .unwrap();
    let mut ok = true;
    for u in &mut uppers {
        ok &= u.succeeded();
    }
    drop(sim);
    let t = topology(&node);
    assert_eq!(t.upper_platforms.len(), 2, "{t:?}");
    for u in &t.upper_platforms {
        assert_eq!(u.state, "registered", "{u:?}");
        assert_eq!(u.charset, "GB2312");
    }
    if !ok {
        for port in [p1, p2] {
            let log =
                std::fs::read_to_string(dir.path().join(format!("upper-{port}-messages.log")))
                    .unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("---- sipp upper platform on {port}, last messages:\n{tail}");
        }
        eprintln!(
            "---- node log:\n{}",
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        );
        let kept = dir.keep();
        panic!(
            "a sipp upper platform failed; its files are kept in {}",
            kept.display()
        );
    }
    assert!(ok, "a sipp upper platform failed; see its stderr above");
    // Each platform got the node's catalog, in GB2312: the camera's name
    // 模拟摄像机 is GBK bytes C4A3 C4E2 ..., never UTF-8.
    for port in [p1, p2] {
        let log = std::fs::read(dir.path().join(format!("upper-{port}-messages.log"))).unwrap();
        let text = String::from_utf8_lossy(&log);
        let answer = text
            .split("<Response>")
            .skip(1)
            .find(|r| r.contains("<CmdType>Catalog</CmdType>"))
            .unwrap_or_else(|| panic!("platform on {port} got no catalog answer: {text}"));
        assert!(
            answer.contains(channel) && answer.contains(device),
            "{answer}"
        );
        // The second IPC and its channel: shared with the provincial
        // platform only.
        let (other_device, other_channel) = ("35010201001320000003", "35010201001310000004");
        let shared = port == p1;
        assert_eq!(answer.contains(other_channel), shared, "{port}: {answer}");
        assert_eq!(answer.contains(other_device), shared, "{port}: {answer}");
        assert!(text.contains("encoding=\"GB2312\""));
        assert!(
            log.windows(4).any(|w| w == [0xC4, 0xA3, 0xC4, 0xE2]),
            "no GBK name"
        );
        assert!(!text.contains("模拟"), "UTF-8 sent to a GB2312 platform");
    }
}

/// A peer process that is killed when the test ends, however it ends (a
/// failed assertion must not leave sipp or gbsim running).
struct Peer(Child);

impl Peer {
    /// Wait for it to exit; print its stderr when it failed.
    fn succeeded(&mut self) -> bool {
        let status = self.0.wait().unwrap();
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = self.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            eprintln!("peer process failed: {err}");
        }
        status.success()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs sipp as an upper platform with `scenario` while a node
/// (`node_port`, HTTP `http_port`) registers to it on `port` and a gbsim
/// with `sim_args` registers below the node; fails with sipp's trace and
/// the node's log if sipp's checks failed. Sipp's message trace.
fn subscriber_run(
    scenario: &str,
    node_port: u16,
    http_port: u16,
    port: u16,
    sim_args: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let up = "35000000002000000003";
    std::fs::write(
        dir.path().join("creds.toml"),
        format!("default_password = \"right-password\"\n[upper]\n\"{up}\" = \"sub-secret\"\n"),
    )
    .unwrap();
    let sipp_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp");
    let keys = [
        ("platform", up),
        ("realm", "3500000000"),
        ("node", NODE),
        ("pw", "sub-secret"),
    ];
    let mut platform = Command::new("sipp")
        .arg("-sf")
        .arg(sipp_dir.join(scenario))
        .args(["-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
        // -aa: NOTIFYs after the scenario's last are answered 200 by sipp.
        .args(["-timeout", "40s", "-timeout_error", "-nostdin", "-aa"])
        .args(["-trace_msg", "-trace_err", "-message_file"])
        .arg(dir.path().join("subscriber-messages.log"))
        .args(keys.iter().flat_map(|(k, v)| ["-key", k, v]))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Peer)
        .expect("sipp installed (make deps installs sip-tester)");
    std::thread::sleep(Duration::from_millis(300));
    let tables = format!(
        "register_retry_secs = 1\n\n[[node]]\nid = \"{NODE}\"\nname = \"Town under test\"\nlevel = \"town\"\nsip = \"127.0.0.1:{node_port}\"\nhttp = \"127.0.0.1:{http_port}\"\ncredentials = \"creds.toml\"\n\n[[node.upper]]\nid = \"{up}\"\nname = \"Provincial platform\"\nsip = \"127.0.0.1:{port}\"\n"
    );
    let node = start_node_only(dir.path(), node_port, http_port, &tables);
    // Devices below register once the platform has subscribed.
    std::thread::sleep(Duration::from_millis(1500));
    let sim = Command::new(integration::harness::bin_dir().join("gbsim"))
        .args(["--server", &node.sip, "--server-id", NODE])
        .args(["--prefix", "3501020100", "--password", "right-password"])
        .args(sim_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Peer)
        .unwrap();
    let ok = platform.succeeded();
    drop(sim);
    // The trace holds GB2312 bytes (names in catalog changes): read lossily.
    let log = String::from_utf8_lossy(
        &std::fs::read(dir.path().join("subscriber-messages.log")).unwrap_or_default(),
    )
    .into_owned();
    if !ok {
        let node_log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
        let kept = dir.keep();
        panic!(
            "the subscribing sipp platform failed (its files, errors log included, are kept in {}); its messages:\n{log}\n---- node log:\n{node_log}",
            kept.display()
        );
    }
    log
}

#[test]
fn a_sipp_upper_platform_subscribes_to_alarms_and_gets_them_as_notify() {
    // A camera below raises an alarm every second.
    let log = subscriber_run(
        "upper_subscriber.xml",
        20190,
        23210,
        20191,
        &["--ipcs", "1", "--nvrs", "0", "--alarm-every", "1"],
    );
    // The alarm came as a NOTIFY in the subscription, in GB2312, with the
    // camera's priority; the last NOTIFY ended it.
    let notify = log
        .split("NOTIFY sip:")
        .skip(1)
        .find(|m| m.contains("<CmdType>Alarm</CmdType>"))
        .unwrap_or_else(|| panic!("no alarm NOTIFY: {log}"));
    assert!(notify.contains("Subscription-State: active"), "{notify}");
    assert!(notify.contains("encoding=\"GB2312\""), "{notify}");
    assert!(
        notify.contains("<AlarmPriority>1</AlarmPriority>"),
        "{notify}"
    );
    assert!(log.contains("Subscription-State: terminated"), "{log}");
}

#[test]
fn a_sipp_upper_platform_subscribed_to_the_catalog_gets_changes_as_notify() {
    let log = subscriber_run(
        "upper_catalog_subscriber.xml",
        20192,
        23212,
        20193,
        &["--ipcs", "1", "--nvrs", "0"],
    );
    let notify = log
        .split("NOTIFY sip:")
        .skip(1)
        .find(|m| m.contains("<Event>ADD</Event>"))
        .unwrap_or_else(|| panic!("no catalog NOTIFY: {log}"));
    assert!(notify.contains("Event: Catalog"), "{notify}");
    assert!(notify.contains("35010201001320000001"), "the IPC: {notify}");
    // No change came as a MESSAGE beside the subscription.
    assert!(
        !log.split("MESSAGE sip:")
            .skip(1)
            .any(|m| m.contains("<Event>ADD</Event>")),
        "a catalog change went as a MESSAGE: {log}"
    );
}

#[test]
fn the_node_subscribes_to_a_sipp_devices_positions_and_reads_its_notify() {
    let dir = tempfile::tempdir().unwrap();
    // Only the subscription goes to the device: no Catalog or DeviceInfo.
    let node = start_node_with(
        dir.path(),
        20194,
        23214,
        "query_new_registrants = false\nsubscribe_devices = [\"mobile_position\"]",
    );
    let dev = "35010201001320000031";
    assert!(sipp(
        dir.path(),
        "device_subscribed",
        &[dev, NODE, DOMAIN, "right-password"],
        &node,
        "udp"
    ));
    // The position came in the subscription's NOTIFY and is in the log.
    let events: Vec<serde_json::Value> = node
        .get("/api/v1/alarms")
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let pos = events
        .iter()
        .find(|e| e["kind"] == "position" && e["device_id"] == dev)
        .unwrap_or_else(|| panic!("no position from the device: {events:?}"));
    assert_eq!(pos["longitude"].as_f64(), Some(119.296), "{pos}");
    assert_eq!(pos["latitude"].as_f64(), Some(26.074), "{pos}");
    let metrics = node
        .get("/metrics")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("gbgate_device_subscriptions_total{result=\"accepted\"} 1"),
        "{metrics}"
    );
}
