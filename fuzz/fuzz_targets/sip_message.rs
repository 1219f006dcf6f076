//! Fuzz the SIP datagram parser and the typed header parsers.
//!
//! Properties: nothing panics; whatever parses serialises to bytes that
//! parse again with the same body, and serialisation is a fixed point after
//! one round; accepted typed header values re-serialise to equal values.
#![no_main]

use gbgate::sip::header::{self, CSeq, NameAddr, SipUri, Via};
use gbgate::sip::message::{salvage_for_error_response, Message, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = salvage_for_error_response(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };

    let headers = msg.headers();
    let _ = msg.call_id();
    let _ = msg.cseq();
    let _ = msg.top_via();
    let _ = header::expires(headers);
    if let Ok(vias) = header::vias(headers) {
        for via in vias {
            assert_eq!(Via::parse(&via.to_string()).as_ref(), Ok(&via));
            let _ = via.response_addr();
        }
    }
    let _ = header::contacts(headers);
    for name in ["From", "To", "Contact"] {
        if let Some(value) = headers.get(name) {
            if let Ok(addr) = NameAddr::parse(value) {
                assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr));
            }
        }
    }
    if let Some(cseq) = msg.cseq() {
        assert_eq!(CSeq::parse(&cseq.to_string()).as_ref(), Ok(&cseq));
    }
    if let Message::Request(req) = &msg {
        if let Ok(uri) = SipUri::parse(&req.uri) {
            assert_eq!(SipUri::parse(&uri.to_string()).as_ref(), Ok(&uri));
            let _ = uri.socket_addr();
        }
    }

    // Serialising adds Content-Length, which may push a maximum-size input
    // over the limit, so re-parse without one.
    let unlimited = ParseOptions {
        max_size: usize::MAX,
        ..ParseOptions::default()
    };
    let once = msg.to_bytes();
    let again = Message::parse_with(&once, &unlimited).expect("serialised message must parse");
    assert_eq!(again.body(), msg.body());
    assert_eq!(again.to_bytes(), once);
});
