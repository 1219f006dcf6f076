//! rsip 0.4 as a test oracle for our SIP parser.
//!
//! The parser in [`crate::sip::message`] and [`crate::sip::header`] is our
//! own because rsip cannot read what GB/T 28181 devices send (compact
//! names, folded lines, GBK headers, IPv6 hosts, framing by
//! Content-Length; `docs/crates.md` §1). On the messages rsip *does* read,
//! both must see the same thing: these tests generate legal requests and
//! responses inside that common subset, parse each with both, and compare
//! every field the node acts on.
//!
//! What the generators stay out of, and why (each is a measured rsip 0.4
//! limitation or a place where RFC 3261 lets parsers differ):
//! - compact header names (`v:`, `f:`, `i:`): rsip keeps them as unknown
//!   headers, so its `via_header()` finds nothing;
//! - folded header lines, LF-only line ends, non-UTF-8 header bytes: rsip
//!   rejects the whole message;
//! - IPv6 hosts: rsip's URI parser rejects `[2001:db8::1]`;
//! - '.' in a URI user part: rsip reads `sip:a.b@h` as the host `a.b@h`;
//! - blanks before the colon or after a value: rsip's header tokenizer
//!   accepts no blank before `:` and keeps trailing blanks in the value,
//!   where we trim them (RFC 3261 §7.3.1 makes them insignificant);
//! - lower-case or extension methods: rsip knows 14 methods and matches
//!   them case-insensitively, while methods are case-sensitive tokens
//!   (RFC 3261 §7.1) and we keep unknown ones as `Method::Other`;
//! - non-UTF-8 bodies: rsip keeps the body as bytes when parsing but we
//!   only compare, never serialise through it (it re-encodes lossily);
//! - Content-Length: rsip ignores it and takes everything after the blank
//!   line, so the generated length is always exact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use proptest::prelude::*;
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::prelude::HeadersExt;

use crate::sip::header::{contacts, NameAddr, SipUri};
use crate::sip::message::{Message, Method};

/// The methods rsip 0.4 knows, as RFC 3261 spells them.
const METHODS: [&str; 14] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// The user, host and port of a URI, as both parsers can report them.
#[derive(Debug, PartialEq, Eq)]
struct UriParts {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

fn ours_uri(u: &SipUri) -> UriParts {
    UriParts {
        user: u.user.clone(),
        host: u.host.clone(),
        port: u.port,
    }
}

fn rsip_uri(u: &rsip::Uri) -> UriParts {
    UriParts {
        user: u.user().map(str::to_owned),
        host: u.host().to_string(),
        port: u.port().map(|p| *p.value()),
    }
}

/// Everything compared between the two parsers, in one value so a failure
/// prints both sides whole.
#[derive(Debug, PartialEq, Eq)]
struct View {
    /// `Some(method)` for a request, `None` for a response.
    method: Option<String>,
    request_uri: Option<UriParts>,
    status: Option<u16>,
    call_id: String,
    cseq: (u32, String),
    via: (String, String, Option<u16>, Option<String>),
    from: (UriParts, Option<String>),
    to: (UriParts, Option<String>),
    contact: Option<(UriParts, Option<u32>)>,
    expires: Option<u32>,
    body: bytes::Bytes,
}

fn ours(raw: &[u8]) -> View {
    let msg = Message::parse(raw).unwrap_or_else(|e| panic!("we reject it: {e}"));
    let h = msg.headers();
    let (method, request_uri, status) = match &msg {
        Message::Request(r) => (
            Some(r.method.to_string()),
            Some(ours_uri(&SipUri::parse(&r.uri).unwrap())),
            None,
        ),
        Message::Response(r) => (None, None, Some(r.status)),
    };
    let via = msg.top_via().unwrap();
    let cseq = msg.cseq().unwrap();
    let name_addr = |name: &str| {
        let a = NameAddr::parse(h.get(name).unwrap()).unwrap();
        (ours_uri(&a.uri), a.tag().map(str::to_owned))
    };
    let contact = contacts(h).unwrap().into_iter().next().map(|c| {
        let expires = c.param("expires").flatten().map(|v| v.parse().unwrap());
        (ours_uri(&c.uri), expires)
    });
    View {
        method,
        request_uri,
        status,
        call_id: msg.call_id().unwrap().to_owned(),
        cseq: (cseq.seq, cseq.method.to_string()),
        via: (
            via.transport.clone(),
            via.host.clone(),
            via.port,
            via.branch().map(str::to_owned),
        ),
        from: name_addr("From"),
        to: name_addr("To"),
        contact,
        expires: h.get("Expires").map(|v| v.parse().unwrap()),
        body: msg.body().clone(),
    }
}

fn oracle(raw: &[u8]) -> View {
    let msg = rsip::SipMessage::try_from(raw).unwrap_or_else(|e| panic!("rsip rejects it: {e}"));
    let (method, request_uri, status) = match &msg {
        rsip::SipMessage::Request(r) => (Some(r.method.to_string()), Some(rsip_uri(&r.uri)), None),
        rsip::SipMessage::Response(r) => (None, None, Some(r.status_code.code())),
    };
    let via = msg.via_header().unwrap().typed().unwrap();
    let cseq = msg.cseq_header().unwrap().typed().unwrap();
    let from = msg.from_header().unwrap().typed().unwrap();
    let to = msg.to_header().unwrap().typed().unwrap();
    let contact = msg.contact_header().ok().map(|c| {
        let c = c.typed().unwrap();
        let expires = c.expires().map(|e| e.seconds().unwrap());
        (rsip_uri(&c.uri), expires)
    });
    View {
        method,
        request_uri,
        status,
        call_id: msg.call_id_header().unwrap().value().to_owned(),
        cseq: (cseq.seq, cseq.method.to_string()),
        via: (
            via.transport.to_string(),
            via.uri.host().to_string(),
            via.uri.port().map(|p| *p.value()),
            via.branch().map(|b| b.value().to_owned()),
        ),
        from: (
            rsip_uri(&from.uri),
            from.tag().map(|t| t.value().to_owned()),
        ),
        to: (rsip_uri(&to.uri), to.tag().map(|t| t.value().to_owned())),
        contact,
        expires: msg.expires_header().map(|e| e.seconds().unwrap()),
        body: bytes::Bytes::from(msg.body().clone()),
    }
}

/// Parse with both and require the same view.
fn agree(raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    let (a, b) = (ours(raw), oracle(raw));
    assert_eq!(a, b, "parsers disagree on\n{text}");
}

// --- generators -----------------------------------------------------------

/// A host both parsers read the same way: a dotted IPv4 address in
/// canonical form (rsip re-prints IP hosts, so `010.0.0.1` would differ),
/// a DNS name, or a numeric GB/T 28181 domain ID.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,8}){0,2}",
        "[0-9]{10}",
    ]
}

fn port() -> impl Strategy<Value = Option<u16>> {
    proptest::option::of(1u16..)
}

/// A URI user: a 20-digit GB/T 28181 ID or an ordinary user name. No
/// '.': rsip 0.4 then reads `sip:a.b@h` as the host `a.b@h` with no user
/// (measured), though '.' is unreserved in RFC 3261's user part.
fn user() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9]{20}", "[a-z][a-z0-9_-]{0,12}"]
}

/// A tag, branch suffix or Call-ID word: RFC 3261 token characters.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,15}"
}

prop_compose! {
    fn uri()(
        user in proptest::option::of(user()),
        host in host(),
        port in port(),
        transport in proptest::option::of(prop::sample::select(vec!["udp", "tcp"])),
    ) -> String {
        let mut s = String::from("sip:");
        if let Some(u) = user {
            s.push_str(&u);
            s.push('@');
        }
        s.push_str(&host);
        if let Some(p) = port {
            s.push_str(&format!(":{p}"));
        }
        if let Some(t) = transport {
            s.push_str(&format!(";transport={t}"));
        }
        s
    }
}

prop_compose! {
    /// A From/To/Contact value in name-addr form, optionally with a
    /// display name (quoted, possibly with CJK: the head is UTF-8 here).
    fn name_addr(tag: Option<String>)(
        display in proptest::option::of(prop_oneof!["[A-Za-z]{1,8}", "\"[A-Za-z 摄像机通道]{0,8}\""]),
        uri in uri(),
    ) -> String {
        let mut s = String::new();
        if let Some(d) = display {
            s.push_str(&d);
            s.push(' ');
        }
        s.push_str(&format!("<{uri}>"));
        if let Some(t) = &tag {
            s.push_str(&format!(";tag={t}"));
        }
        s
    }
}

prop_compose! {
    fn via()(
        transport in prop::sample::select(vec!["UDP", "TCP"]),
        host in host(),
        port in port(),
        branch in token(),
        rport in any::<bool>(),
        received in proptest::option::of(any::<[u8; 4]>()),
    ) -> String {
        let mut s = format!("SIP/2.0/{transport} {host}");
        if let Some(p) = port {
            s.push_str(&format!(":{p}"));
        }
        if rport {
            s.push_str(";rport");
        }
        s.push_str(&format!(";branch=z9hG4bK{branch}"));
        if let Some(o) = received {
            s.push_str(&format!(";received={}.{}.{}.{}", o[0], o[1], o[2], o[3]));
        }
        s
    }
}

/// A body: UTF-8 text with line breaks, including Chinese as MANSCDP
/// carries (in UTF-8 here; a GB2312 body is outside rsip's subset).
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        3 => "[ -~\r\n\t设备目录通道在线]{0,300}",
    ]
}

/// Other headers (Max-Forwards is left out: a random value would be illegal): names in any letter case (both parsers compare names
/// case-insensitively) with values that have no leading or trailing blank.
fn extra_header() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "User-Agent",
            "user-agent",
            "Subject",
            "Organization",
            "X-GB-Ver",
            "Allow",
            "Content-Type",
            "Date",
        ]),
        "[!-~]([ -~]{0,30}[!-~])?",
    )
        .prop_map(|(n, v)| format!("{n}: {v}"))
}

/// The header lines a message starts with, in order: any number of Via
/// lines, the first of which may carry a second value after a comma (both
/// parsers take the first value of the first line as the top Via).
fn vias() -> BoxedStrategy<Vec<String>> {
    (
        via(),
        proptest::option::of(via()),
        proptest::collection::vec(via(), 0..3),
    )
        .prop_map(|(top, joined, more)| {
            let mut lines = vec![match joined {
                Some(v) => format!("Via: {top}, {v}"),
                None => format!("Via: {top}"),
            }];
            lines.extend(more.iter().map(|v| format!("Via: {v}")));
            lines
        })
        .boxed()
}

/// From, To, Call-ID and the CSeq number.
fn dialog() -> BoxedStrategy<(String, String, String, u32)> {
    (
        token().prop_flat_map(|t| name_addr(Some(t))),
        name_addr(None),
        proptest::option::of(token()),
        (token(), proptest::option::of(host())),
        any::<u32>(),
    )
        .prop_map(|(from, to, to_tag, (word, at), seq)| {
            let to = match to_tag {
                Some(t) => format!("{to};tag={t}"),
                None => to,
            };
            let call_id = match at {
                Some(h) => format!("{word}@{h}"),
                None => word,
            };
            (from, to, call_id, seq)
        })
        .boxed()
}

/// Optional Contact (with an optional `expires` parameter) and Expires.
fn registration() -> BoxedStrategy<(Option<String>, Option<u32>)> {
    (
        proptest::option::of((name_addr(None), proptest::option::of(any::<u32>()))),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(contact, expires)| {
            let contact = contact.map(|(c, e)| match e {
                Some(e) => format!("{c};expires={e}"),
                None => c,
            });
            (contact, expires)
        })
        .boxed()
}

/// A whole message, request or response, as raw bytes. The parts are
/// boxed strategies: one flat tuple of all of them overflows a test
/// thread's stack in debug builds.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        (prop::sample::select(METHODS.to_vec()), uri())
            .prop_map(|(m, u)| (format!("{m} {u} SIP/2.0"), Some(m))),
        (100u16..=699, "[A-Za-z][A-Za-z ]{0,20}[A-Za-z]")
            .prop_map(|(code, reason)| (format!("SIP/2.0 {code} {reason}"), None)),
    ]
    .boxed();
    (
        start,
        // A response's CSeq names the request's method.
        prop::sample::select(METHODS.to_vec()),
        vias(),
        dialog(),
        registration(),
        proptest::collection::vec(extra_header(), 0..4).boxed(),
        any::<prop::sample::Index>(),
        body().boxed(),
        // Blanks after the colon are optional and insignificant.
        prop::sample::select(vec![": ", ":", ":  ", ":\t"]),
    )
        .prop_map(
            |((start, method), response_method, vias, dialog, reg, extra, at, body, colon)| {
                let (from, to, call_id, seq) = dialog;
                let method = method.unwrap_or(response_method);
                // Vias first and in order (the top one decides where a
                // response goes); the rest in a fixed order with the extras
                // shuffled in at one place.
                let mut rest = vec![
                    format!("From: {from}"),
                    format!("To: {to}"),
                    format!("Call-ID: {call_id}"),
                    format!("CSeq: {seq} {method}"),
                ];
                let (contact, expires) = reg;
                if let Some(c) = contact {
                    rest.push(format!("Contact: {c}"));
                }
                if let Some(e) = expires {
                    rest.push(format!("Expires: {e}"));
                }
                let at = at.index(rest.len() + 1);
                for (i, x) in extra.into_iter().enumerate() {
                    rest.insert(at + i, x);
                }
                let mut raw = start;
                for h in vias.iter().chain(&rest) {
                    raw.push_str("\r\n");
                    raw.push_str(&h.replacen(": ", colon, 1));
                }
                // RFC 3261 §20.15: a body needs a Content-Type (we refuse it otherwise).
                let typed = rest
                    .iter()
                    .any(|h| h.to_ascii_lowercase().starts_with("content-type"));
                if !body.is_empty() && !typed {
                    raw.push_str("\r\nContent-Type: Application/MANSCDP+xml");
                }
                raw.push_str(&format!("\r\nContent-Length: {}\r\n\r\n", body.len()));
                raw.push_str(&body);
                raw.into_bytes()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn our_parser_agrees_with_rsip(raw in message()) {
        agree(&raw);
    }
}

// --- fixed GB/T 28181 vectors ---------------------------------------------

#[test]
fn register_with_authorization() {
    let raw = "REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\r\n\
From: <sip:34020000001320000001@3402000000>;tag=2043466181\r\n\
To: <sip:34020000001320000001@3402000000>\r\n\
Call-ID: 1011047669\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:34020000001320000001@192.168.1.64:5060>\r\n\
Authorization: Digest username=\"34020000001320000001\", realm=\"3402000000\", nonce=\"44010b73623249f6916a6acf7c316b8e\", uri=\"sip:34020000002000000001@3402000000\", response=\"e4ca3fdc5869fa1c544ea7af60014444\", algorithm=MD5\r\n\
Max-Forwards: 70\r\n\
User-Agent: IP Camera\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";
    agree(raw.as_bytes());
    // The Authorization header itself: both read the same digest fields.
    let Message::Request(ours) = Message::parse(raw.as_bytes()).unwrap() else {
        panic!("not a request")
    };
    let ours =
        crate::sip::auth::DigestCredentials::parse(ours.headers.get("Authorization").unwrap())
            .unwrap();
    let theirs = rsip::SipMessage::try_from(raw).unwrap();
    let theirs = theirs.authorization_header().unwrap().typed().unwrap();
    assert_eq!(ours.username, theirs.username);
    assert_eq!(ours.realm, theirs.realm);
    assert_eq!(ours.nonce, theirs.nonce);
    assert_eq!(ours.response, theirs.response);
    assert_eq!(ours.uri, theirs.uri.to_string());
}

#[test]
fn message_with_manscdp_body() {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n<Info>\r\n<Name>前门摄像机</Name>\r\n</Info>\r\n</Notify>\r\n";
    let raw = format!(
        "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK946301234\r\n\
From: <sip:34020000001320000001@3402000000>;tag=1823405732\r\n\
To: <sip:34020000002000000001@3402000000>\r\n\
Call-ID: 482197373\r\n\
CSeq: 20 MESSAGE\r\n\
Content-Type: Application/MANSCDP+xml\r\n\
Max-Forwards: 70\r\n\
User-Agent: IP Camera\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    agree(raw.as_bytes());
}

#[test]
fn invite_with_sdp() {
    let body = "v=0\r\no=34020000001320000001 0 0 IN IP4 192.168.1.10\r\ns=Play\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=video 30000 RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\ny=0100000001\r\n";
    let raw = format!(
        "INVITE sip:34020000001320000001@192.168.1.64:5060 SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.168.1.10:5060;rport;branch=z9hG4bK2734873216\r\n\
From: \"gbgate\" <sip:34020000002000000001@3402000000>;tag=51263542\r\n\
To: <sip:34020000001320000001@3402000000>\r\n\
Call-ID: 8127362@192.168.1.10\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:34020000002000000001@192.168.1.10:5060>\r\n\
Subject: 34020000001320000001:0100000001,34020000002000000001:0\r\n\
Content-Type: APPLICATION/SDP\r\n\
Max-Forwards: 70\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    agree(raw.as_bytes());
}

#[test]
fn ok_to_register_with_contact_expires() {
    let raw = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5060;received=192.168.1.64;branch=z9hG4bK1371463273\r\n\
From: <sip:34020000001320000001@3402000000>;tag=2043466181\r\n\
To: <sip:34020000001320000001@3402000000>;tag=z1a2b3\r\n\
Call-ID: 1011047669\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:34020000001320000001@192.168.1.64:5060>;expires=3600\r\n\
Date: 2026-11-24T10:00:00.000\r\n\
Content-Length: 0\r\n\r\n";
    agree(raw.as_bytes());
}

#[test]
fn methods_print_alike() {
    // CSeq and request-line methods are compared as text; both sides must
    // print each generated method as written (PUBLISH is an extension
    // method on our side, kept by name).
    for m in METHODS {
        assert_eq!(Method::parse(m).to_string(), m);
        assert_eq!(m.parse::<rsip::Method>().unwrap().to_string(), m);
    }
}
