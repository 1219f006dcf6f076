//! Fuzzes the MANSRTSP parser: no input panics, and whatever parses writes
//! back to a body that parses to the same request, with `to_body` a fixed
//! point after one round.
#![no_main]

use gbgate::gb::mansrtsp::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse(data) else {
        return;
    };
    let _ = (msg.command.method(), msg.command.seek_seconds());
    let body = msg.to_body();
    let again = match parse(body.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("our own body {body:?} does not parse: {e}"),
    };
    assert_eq!(again.to_body(), body);
    assert_eq!(parse(again.to_body().as_bytes()).as_ref(), Ok(&again));
    assert_eq!(again, msg);
});
