//! Whether a keyframe can start a decoder: its parameter sets parse, they
//! declare a picture size a camera could send, and its IDR/IRAP slice
//! refers to them. What the intact probe asks of a stream: a light check
//! (no pixel is decoded) that still tells a camera sending video from one
//! sending a picture-less or broken bitstream.

use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::SliceHeader;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::NalHeader;
use h264_reader::rbsp::{decode_nal, BitReader};
use h264_reader::Context;

use super::frame::{Codec, Frame};
use super::nal::{annex_b_units, h264_type, h265_type};

/// The picture a keyframe starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    /// The video codec.
    pub codec: Codec,
    /// Width in pixels (H.264: after cropping; H.265: coded luma samples).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why a keyframe cannot start a decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// The frame is audio, or video without an IDR/IRAP picture.
    #[error("no video keyframe")]
    NotKeyframe,
    /// A parameter set the picture needs is not in the keyframe.
    #[error("the keyframe has no {0}")]
    Missing(&'static str),
    /// A parameter set or the slice header does not parse.
    #[error("the keyframe's {nal} cannot be read: {detail}")]
    Unreadable {
        /// SPS, PPS or slice header.
        nal: &'static str,
        /// What the parser said (for people; never matched on).
        detail: String,
    },
    /// The SPS declares a size no camera sends.
    #[error("the keyframe declares a {0}x{1} picture")]
    BadSize(u32, u32),
}

/// Smallest and largest picture side accepted (QCIF to 8K).
const SIDES: std::ops::RangeInclusive<u32> = 16..=8192;

/// Checks that `frame`, a video keyframe with its parameter sets in line
/// (as hubs cache them), can start a decoder.
pub fn check_keyframe(frame: &Frame) -> Result<Picture, Undecodable> {
    if !frame.keyframe {
        return Err(Undecodable::NotKeyframe);
    }
    let (width, height) = match frame.codec {
        Codec::H264 => h264_size(&frame.data)?,
        Codec::H265 => h265_size(&frame.data)?,
        _ => return Err(Undecodable::NotKeyframe),
    };
    if !SIDES.contains(&width) || !SIDES.contains(&height) {
        return Err(Undecodable::BadSize(width, height));
    }
    Ok(Picture {
        codec: frame.codec,
        width,
        height,
    })
}

fn unreadable(nal: &'static str, e: impl std::fmt::Debug) -> Undecodable {
    Undecodable::Unreadable {
        nal,
        detail: format!("{e:?}"),
    }
}

fn h264_size(data: &[u8]) -> Result<(u32, u32), Undecodable> {
    let (mut sps, mut pps, mut idr) = (None, Vec::new(), None);
    for n in annex_b_units(data) {
        match h264_type(n) {
            Some(7) if sps.is_none() => sps = Some(n),
            Some(8) => pps.push(n),
            Some(5) if idr.is_none() => idr = Some(n),
            _ => {}
        }
    }
    let idr = idr.ok_or(Undecodable::NotKeyframe)?;
    let sps = sps.ok_or(Undecodable::Missing("SPS"))?;
    if pps.is_empty() {
        return Err(Undecodable::Missing("PPS"));
    }
    let mut ctx = Context::default();
    let rbsp = decode_nal(sps).map_err(|e| unreadable("SPS", e))?;
    let sps =
        SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).map_err(|e| unreadable("SPS", e))?;
    let size = sps.pixel_dimensions().map_err(|e| unreadable("SPS", e))?;
    ctx.put_seq_param_set(sps);
    for p in pps {
        let rbsp = decode_nal(p).map_err(|e| unreadable("PPS", e))?;
        let pps = PicParameterSet::from_bits(&ctx, BitReader::new(&rbsp[..]))
            .map_err(|e| unreadable("PPS", e))?;
        ctx.put_pic_param_set(pps);
    }
    let header = NalHeader::new(idr[0]).map_err(|e| unreadable("slice header", e))?;
    let rbsp = decode_nal(idr).map_err(|e| unreadable("slice header", e))?;
    SliceHeader::from_bits(&ctx, &mut BitReader::new(&rbsp[..]), header, None)
        .map_err(|e| unreadable("slice header", e))?;
    Ok(size)
}

fn h265_size(data: &[u8]) -> Result<(u32, u32), Undecodable> {
    let (mut vps, mut sps, mut pps, mut irap) = (false, None, false, false);
    for n in annex_b_units(data) {
        match h265_type(n) {
            Some(32) => vps = true,
            Some(33) if sps.is_none() => sps = Some(n),
            Some(34) => pps = true,
            Some(16..=21) => irap = true,
            _ => {}
        }
    }
    if !irap {
        return Err(Undecodable::NotKeyframe);
    }
    if !vps {
        return Err(Undecodable::Missing("VPS"));
    }
    let sps = sps.ok_or(Undecodable::Missing("SPS"))?;
    if !pps {
        return Err(Undecodable::Missing("PPS"));
    }
    super::flv::hevc_picture_size(sps)
        .ok_or_else(|| unreadable("SPS", "ends before the picture size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(codec: Codec, data: &[u8]) -> Frame {
        Frame {
            codec,
            pts: 0,
            dts: 0,
            keyframe: true,
            data: Bytes::copy_from_slice(data),
        }
    }

    const H264: &[u8] = include_bytes!("testdata/testsrc_64x48.h264");
    const H265: &[u8] = include_bytes!("testdata/testsrc_64x48.h265");

    /// `data` without the NAL units of type `t` (by `kind`).
    fn without(data: &[u8], kind: fn(&[u8]) -> Option<u8>, t: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for n in annex_b_units(data).filter(|n| kind(n) != Some(t)) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }

    /// `data` with the SPS cut to its first `keep` bytes.
    fn cut_sps(data: &[u8], kind: fn(&[u8]) -> Option<u8>, t: u8, keep: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for n in annex_b_units(data) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(if kind(n) == Some(t) { &n[..keep] } else { n });
        }
        out
    }

    #[test]
    fn x264_and_x265_keyframes_start_a_decoder() {
        let p = check_keyframe(&frame(Codec::H264, H264)).unwrap();
        assert_eq!((p.width, p.height), (64, 48));
        let p = check_keyframe(&frame(Codec::H265, H265)).unwrap();
        assert_eq!((p.width, p.height), (64, 48));
    }

    #[test]
    fn missing_or_broken_parameter_sets_are_named() {
        let f = |d: Vec<u8>| check_keyframe(&frame(Codec::H264, &d));
        assert_eq!(
            f(without(H264, h264_type, 7)),
            Err(Undecodable::Missing("SPS"))
        );
        assert_eq!(
            f(without(H264, h264_type, 8)),
            Err(Undecodable::Missing("PPS"))
        );
        assert_eq!(
            f(without(H264, h264_type, 5)),
            Err(Undecodable::NotKeyframe)
        );
        assert!(matches!(
            f(cut_sps(H264, h264_type, 7, 4)),
            Err(Undecodable::Unreadable { nal: "SPS", .. })
        ));
        let g = |d: Vec<u8>| check_keyframe(&frame(Codec::H265, &d));
        assert_eq!(
            g(without(H265, h265_type, 32)),
            Err(Undecodable::Missing("VPS"))
        );
        assert!(matches!(
            g(cut_sps(H265, h265_type, 33, 6)),
            Err(Undecodable::Unreadable { nal: "SPS", .. })
        ));
        let mut audio = frame(Codec::G711A, &[0xD5; 160]);
        assert_eq!(check_keyframe(&audio), Err(Undecodable::NotKeyframe));
        audio.keyframe = false;
        assert_eq!(check_keyframe(&audio), Err(Undecodable::NotKeyframe));
    }

    proptest::proptest! {
        #[test]
        fn garbage_is_refused_without_panicking(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            h265 in proptest::bool::ANY,
        ) {
            // Start codes before arbitrary bytes, so NAL types vary.
            let mut d = vec![0, 0, 0, 1];
            d.extend_from_slice(&data);
            let codec = if h265 { Codec::H265 } else { Codec::H264 };
            let _ = check_keyframe(&frame(codec, &d));
        }
    }
}
