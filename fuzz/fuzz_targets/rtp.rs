//! RTP packets and the TCP deframer must never panic; whatever parses must
//! re-serialise to something that parses the same.
#![no_main]
use bytes::Bytes;
use gbgate::media::rtp::{RtpPacket, TcpDeframer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(Bytes::copy_from_slice(data)) {
        let again = RtpPacket::parse(p.to_bytes()).expect("our own packet parses");
        assert_eq!(again.payload, p.payload);
        assert_eq!(again.ssrc, p.ssrc);
    }
    let mut d = TcpDeframer::new();
    for chunk in data.chunks(7) {
        d.push(chunk);
        for _ in 0..64 {
            match d.next_packet() {
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
    }
});
