//! Fuzzes the MPEG-TS reader and muxer: `parse_packets` never panics on any
//! bytes, and whatever the muxer makes of pseudo frames cut from the input is
//! whole packets that `parse_packets` reads back without error, CC gaps or
//! lost frames, each with its PTS and payload.
//!
//! The muxed stream, with one byte flipped or cut short, must not make
//! `parse_packets` panic either: raw bytes seldom get that far.
//!
//! Input layout: one byte picks the tracks; if its bit 5 is set, a 16-bit
//! offset and a byte to XOR there (0: cut the stream there instead); then
//! frames of a header byte (bits 0-1 codec H.264/H.265/AAC/G.711A, bit 2
//! keyframe, bits 3-7 a DTS step), a CTS byte, a length byte and that many
//! payload bytes (Annex-B or audio; cut short by the end of input).
#![no_main]

use bytes::Bytes;
use gbgate::media::frame::{Codec, Frame};
use gbgate::media::ts::{is_join_point, parse_packets, TsMuxer, PACKET_SIZE};
use libfuzzer_sys::fuzz_target;

const CODECS: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Aac, Codec::G711A];
const TS_MASK: u64 = (1 << 33) - 1;

fuzz_target!(|data: &[u8]| {
    let _ = parse_packets(data);

    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let mut damage = None;
    if cfg & 0x20 != 0 {
        let [lo, hi, x, tail @ ..] = rest else {
            return;
        };
        damage = Some((usize::from(u16::from_le_bytes([*lo, *hi])), *x));
        rest = tail;
    }
    // G.711A as "video" checks that a non-video video codec is ignored.
    let video = [
        Some(Codec::H264),
        Some(Codec::H265),
        None,
        Some(Codec::G711A),
    ][usize::from(cfg & 3)];
    let audio =
        [Some(Codec::Aac), Some(Codec::G711A), None, Some(Codec::Aac)][usize::from(cfg >> 2 & 3)];
    let has_video = video.is_some_and(Codec::is_video);
    let mut muxer = TsMuxer::new(video, audio);
    let mut stream = Vec::new();
    let mut muxed: Vec<Frame> = Vec::new();
    // The first DTS near the 33-bit wrap when asked.
    let mut dts: u64 = if cfg & 0x10 == 0 { 0 } else { (1 << 33) - 9000 };
    while let [head, cts, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        dts = dts.wrapping_add(u64::from(head >> 3) * 900);
        let frame = Frame {
            codec: CODECS[usize::from(head & 3)],
            pts: dts.wrapping_add(u64::from(*cts) * 900),
            dts,
            keyframe: head & 4 != 0,
            data: Bytes::copy_from_slice(payload),
        };
        let out = muxer.mux(&frame);
        assert_eq!(out.len() % PACKET_SIZE, 0);
        if out.is_empty() {
            continue;
        }
        if let Err(e) = parse_packets(&out) {
            panic!("one mux() output does not parse: {e}");
        }
        let join = (frame.codec.is_video() && frame.keyframe) || !has_video;
        assert_eq!(is_join_point(&out), join);
        stream.extend_from_slice(&out);
        muxed.push(frame);
    }
    let sum = match parse_packets(&stream) {
        Ok(sum) => sum,
        Err(e) => panic!("muxed stream does not parse: {e}"),
    };
    assert_eq!(sum.packets * PACKET_SIZE, stream.len());
    assert_eq!(sum.cc_errors, 0);
    assert_eq!(sum.frames.len(), muxed.len());
    assert_eq!(muxer.stats().frames_muxed, muxed.len() as u64);
    for (got, want) in sum.frames.iter().zip(&muxed) {
        assert_eq!(got.pts, Some(want.pts & TS_MASK));
        assert!(got.data.ends_with(&want.data));
    }
    if let Some((at, x)) = damage.filter(|_| !stream.is_empty()) {
        let at = at % stream.len();
        if x == 0 {
            stream.truncate(at);
        } else if let Some(b) = stream.get_mut(at) {
            *b ^= x;
        }
        let _ = parse_packets(&stream);
    }
});
