//! The PS demuxer takes any bytes in any chunking without panicking or
//! growing without bound.
#![no_main]
use gbgate::media::ps::PsDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = PsDemuxer::new();
    let mut out = Vec::new();
    let split = data.first().map_or(1, |b| usize::from(*b).max(1));
    for chunk in data.chunks(split) {
        d.push(chunk);
        d.drain(&mut out);
    }
    d.flush();
    d.drain(&mut out);
});
