//! Fuzz the stream framer.
//!
//! The first input byte picks a chunk size; the rest is pushed in chunks of
//! that size. Properties: nothing panics, and the sequence of messages and
//! errors is the same as when the whole input is pushed at once.
#![no_main]

use gbgate::sip::framing::{FrameError, StreamFramer};
use gbgate::sip::message::{Message, MAX_MESSAGE_SIZE};
use libfuzzer_sys::fuzz_target;

/// Everything the framer yields, up to and including the first fatal error.
fn outcomes<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    max: usize,
) -> Vec<Result<Message, FrameError>> {
    let mut framer = StreamFramer::new(max);
    let mut out = Vec::new();
    for piece in pieces {
        framer.push(piece);
        loop {
            match framer.next_message() {
                Ok(None) => break,
                Err(e) if e.is_fatal() => {
                    out.push(Err(e));
                    return out;
                }
                Ok(Some(msg)) => out.push(Ok(msg)),
                Err(e) => out.push(Err(e)),
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    // A small limit as well as the default, so the size checks are reached.
    for max in [1024, MAX_MESSAGE_SIZE] {
        let chunked = outcomes(rest.chunks(chunk), max);
        let whole = outcomes(std::iter::once(rest), max);
        assert_eq!(chunked, whole);
    }
});
