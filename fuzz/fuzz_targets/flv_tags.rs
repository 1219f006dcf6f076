//! Fuzzes the FLV reader and muxer: `parse_tags` never panics on any bytes,
//! and whatever the muxer makes of pseudo frames cut from the input reads
//! back with `parse_tags`, as a whole stream and as a late joiner sees it.
//!
//! Input layout: one byte picks the tracks and the HEVC mode, then frames of
//! a header byte (bits 0-1 codec H.264/H.265/AAC/G.711A, bit 2 keyframe,
//! bits 3-7 a DTS step), a CTS byte, a length byte and that many payload
//! bytes (Annex-B or audio; cut short by the end of input).
#![no_main]

use bytes::Bytes;
use gbgate::media::flv::{parse_tags, FlvMuxer, HevcMode, TAG_AUDIO, TAG_VIDEO};
use gbgate::media::frame::{Codec, Frame};
use libfuzzer_sys::fuzz_target;

const CODECS: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Aac, Codec::G711A];

fuzz_target!(|data: &[u8]| {
    let _ = parse_tags(data);

    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    // G.711A as "video" checks that a non-video video codec is ignored.
    let video = [
        Some(Codec::H264),
        Some(Codec::H265),
        None,
        Some(Codec::G711A),
    ][usize::from(cfg & 3)];
    let audio = [
        Some(Codec::Aac),
        Some(Codec::G711A),
        Some(Codec::G711U),
        None,
    ][usize::from(cfg >> 2 & 3)];
    let mode = if cfg & 0x10 == 0 {
        HevcMode::Enhanced
    } else {
        HevcMode::Legacy
    };
    let mut muxer = FlvMuxer::new(video, audio, mode);
    let header = muxer.header();
    let mut stream = header.to_vec();
    // The first DTS near the 33-bit wrap when asked.
    let mut dts: u64 = if cfg & 0x20 == 0 { 0 } else { (1 << 33) - 9000 };
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
        assert!(out.config_len <= out.tags.len());
        assert_eq!(out.config_changed, out.config_len > 0);
        // What a viewer joining here gets.
        let seq = muxer.sequence_headers().unwrap_or_default();
        let late = [&header[..], &seq, &out.frame_tags()].concat();
        if let Err(e) = parse_tags(&late) {
            panic!("late joiner's stream does not parse: {e}");
        }
        stream.extend_from_slice(&out.tags);
    }
    match parse_tags(&stream) {
        Ok(tags) => assert!(tags
            .iter()
            .all(|t| t.kind == TAG_AUDIO || t.kind == TAG_VIDEO)),
        Err(e) => panic!("muxed stream does not parse: {e}"),
    }
});
