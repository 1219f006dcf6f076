//! Fuzzes the intact probe's keyframe check (H.264 SPS/PPS/slice header,
//! H.265 SPS): no input panics, and an accepted picture has a sane size.
#![no_main]

use bytes::Bytes;
use gbgate::media::frame::{Codec, Frame};
use gbgate::media::picture::check_keyframe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let frame = Frame {
        codec: if first & 1 == 0 { Codec::H264 } else { Codec::H265 },
        pts: 0,
        dts: 0,
        keyframe: true,
        data: Bytes::copy_from_slice(rest),
    };
    if let Ok(p) = check_keyframe(&frame) {
        assert!((16..=8192).contains(&p.width) && (16..=8192).contains(&p.height));
    }
});
