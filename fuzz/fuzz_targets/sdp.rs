//! GB/T 28181 SDP: never panic; what parses round-trips.
#![no_main]
use gbgate::media::sdp::GbSdp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sdp) = GbSdp::parse(text) {
        let again = GbSdp::parse(&sdp.to_string()).expect("our own SDP parses");
        assert_eq!(again.ssrc, sdp.ssrc);
        assert_eq!(again.media_port, sdp.media_port);
    }
});
