//! Fuzzes the MANSCDP parser: no input panics, and whatever parses writes
//! back to a body that parses to the same message (in UTF-8 always; in the
//! detected charset unless that GBK body also reads as UTF-8, the one
//! ambiguity charset sniffing cannot resolve).
#![no_main]

use gbgate::gb::charset::Charset;
use gbgate::gb::manscdp::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((msg, charset)) = parse(data) else {
        return;
    };
    let _ = (msg.sn(), msg.device_id(), msg.cmd_type(), msg.root());
    for cs in [charset, Charset::Utf8] {
        let body = msg.to_body(cs);
        let again = match parse(&body) {
            Ok((again, _)) => again,
            Err(e) => panic!("our own {cs:?} body does not parse: {e}"),
        };
        let ambiguous = cs == Charset::Gb2312
            && std::str::from_utf8(&body).is_ok_and(|s| s.chars().any(|c| c >= '\u{800}'));
        if !ambiguous {
            assert_eq!(again, msg, "round trip in {cs:?}");
        }
    }
});
