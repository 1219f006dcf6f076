//! FLV muxer for HTTP-FLV: [`Frame`]s in, FLV tags out, muxed once per frame
//! and shared by every viewer. Also a small strict FLV reader, [`parse_tags`],
//! for tests and fuzzing.
//!
//! Hand-written: the FLV crates on crates.io are demuxers (flavors) or parts of
//! RTMP stacks, and none builds an `hvcC` from an SPS or writes Enhanced-RTMP
//! HEVC. The format is small: a 9-byte header, then tags of 11-byte header +
//! body, each followed by its 4-byte PreviousTagSize.
//!
//! Video: Annex-B access units become 4-byte length-prefixed NAL units;
//! parameter sets (and AUDs) leave the frame and go to the decoder
//! configuration record (`avcC` / `hvcC`), sent as a sequence-header tag the
//! first time and whenever they change. H.265 is written as Enhanced RTMP
//! (FourCC `hvc1`, read by ffmpeg ≥ 6.1, mpegts.js, hls.js…) or, with
//! [`HevcMode::Legacy`], as CodecID 12 (Chinese CDNs, flv.js forks, ffmpeg
//! builds with the "flv hevc" patch; recent ffmpeg reads both). Audio: G.711 as SoundFormat 7/8,
//! AAC with its ADTS header turned into an `AudioSpecificConfig`.
//!
//! How a hub uses it — mux each frame once, share the [`Bytes`]:
//!
//! ```text
//! let out = muxer.mux(&frame);
//! if out.keyframe { gop.clear() }               // a viewer may start here
//! if !out.is_empty() { gop.push(out.frame_tags()) }
//! for v in &viewers { v.send(out.tags.clone()) } // config tags + frame tag
//! // A viewer joining later:
//! v.send(muxer.header());
//! if let Some(sh) = muxer.sequence_headers() { v.send(sh) }
//! for t in &gop { v.send(t.clone()) }
//! ```
//!
//! Timestamps are milliseconds from the first emitted tag: `dts / 90`,
//! following 33-bit PTS/DTS wraps, written modulo 2³² with the extended byte.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Codec, Frame};
use super::nal;

/// FLV tag type of audio tags.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of video tags.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data (onMetaData) tags.
pub const TAG_SCRIPT: u8 = 18;

const TAG_HEADER: usize = 11;
const MAX_BODY: usize = (1 << 24) - 1;
const TS_WRAP: u64 = 1 << 33;
/// FLV CodecID 12: HEVC as the pre-Enhanced-RTMP Chinese extension writes it.
const CODEC_HEVC_LEGACY: u8 = 12;
const CODEC_AVC: u8 = 7;
/// G.711 flags as ffmpeg writes them for 8 kHz mono: rate bits 0, 16-bit, mono.
const G711A_FLAGS: u8 = 0x72;
const G711U_FLAGS: u8 = 0x82;
/// AAC: SoundFormat 10, "44 kHz", 16-bit, stereo — fixed by the spec.
const AAC_FLAGS: u8 = 0xAF;
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// How H.265 is written (H.264 is always CodecID 7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HevcMode {
    /// Enhanced RTMP / FLV (FourCC `hvc1`): ffmpeg ≥ 6.1, mpegts.js, hls.js.
    #[default]
    Enhanced,
    /// CodecID 12 with AVC-style packets, as Chinese CDNs and flv.js forks use.
    Legacy,
}

/// Errors of [`parse_tags`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The input does not start with a valid FLV header.
    #[error("not an FLV header")]
    BadHeader,
    /// The input ends inside a header, tag or PreviousTagSize starting at this offset.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A PreviousTagSize does not match the tag before it.
    #[error("PreviousTagSize at byte {at} is {found}, expected {expected}")]
    BadPreviousTagSize {
        /// Offset of the PreviousTagSize field.
        at: usize,
        /// The size of the preceding tag (0 for PreviousTagSize0).
        expected: u32,
        /// The value read.
        found: u32,
    },
}

/// One tag read back by [`parse_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Tag type ([`TAG_AUDIO`], [`TAG_VIDEO`], [`TAG_SCRIPT`]; filter bit masked off).
    pub kind: u8,
    /// Timestamp in ms, extended byte included.
    pub timestamp_ms: u32,
    /// The tag body.
    pub body: Bytes,
}

/// The result of muxing one frame: bytes ready to send to every viewer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MuxOut {
    /// Complete tags (each followed by its PreviousTagSize): first the new
    /// sequence-header tag when the configuration changed, then the frame's
    /// tag(s). Empty when the frame was dropped.
    pub tags: Bytes,
    /// Length of the leading sequence-header tag in `tags` (0 if none).
    pub config_len: usize,
    /// The decoder configuration is new or changed (first SPS/PPS, new
    /// VPS/SPS/PPS, new AAC config); `tags` starts with it.
    pub config_changed: bool,
    /// A viewer may start here: a video keyframe, or any audio frame of an
    /// audio-only muxer.
    pub keyframe: bool,
}

impl MuxOut {
    /// True when nothing was produced (the frame was dropped).
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The frame tag(s) without the leading sequence header: what a GOP
    /// cache keeps, since late viewers get [`FlvMuxer::sequence_headers`].
    pub fn frame_tags(&self) -> Bytes {
        self.tags.slice(self.config_len.min(self.tags.len())..)
    }
}

/// Parameter sets of the current video configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ParamSets {
    vps: Vec<Bytes>,
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
}

/// Muxes frames of one stream into FLV tags. Sans-IO; one per source stream.
#[derive(Debug)]
pub struct FlvMuxer {
    video: Option<Codec>,
    audio: Option<Codec>,
    hevc_mode: HevcMode,
    params: Option<ParamSets>,
    video_cfg: Option<Bytes>,
    aac_cfg: Option<[u8; 2]>,
    audio_cfg: Option<Bytes>,
    seq_headers: Option<Bytes>,
    /// Last raw 90 kHz DTS and its unwrapped value.
    last_raw: Option<u64>,
    ext: i64,
    /// Unwrapped DTS of the first emitted tag.
    base: Option<i64>,
    dropped: u64,
}

impl FlvMuxer {
    /// A muxer for these tracks. Frames of other codecs are dropped.
    /// Non-video `video` or non-audio `audio` codecs are ignored.
    pub fn new(video: Option<Codec>, audio: Option<Codec>, hevc_mode: HevcMode) -> Self {
        FlvMuxer {
            video: video.filter(|c| c.is_video()),
            audio: audio.filter(|c| !c.is_video()),
            hevc_mode,
            params: None,
            video_cfg: None,
            aac_cfg: None,
            audio_cfg: None,
            seq_headers: None,
            last_raw: None,
            ext: 0,
            base: None,
            dropped: 0,
        }
    }

    /// The 9-byte FLV header and PreviousTagSize0: what every viewer gets first.
    pub fn header(&self) -> Bytes {
        let flags = if self.audio.is_some() { 0x04 } else { 0 }
            | if self.video.is_some() { 0x01 } else { 0 };
        let mut b = BytesMut::with_capacity(13);
        b.put_slice(b"FLV");
        b.put_u8(1);
        b.put_u8(flags);
        b.put_u32(9);
        b.put_u32(0);
        b.freeze()
    }

    /// The current sequence-header tags (video config record, then AAC
    /// config), stamped with the time they were last changed: what a viewer
    /// gets after [`header`](Self::header), before frames from a keyframe on.
    /// `None` while a video track has seen no parameter sets yet, or when
    /// there is nothing to configure (G.711-only).
    pub fn sequence_headers(&self) -> Option<Bytes> {
        if self.video.is_some() && self.video_cfg.is_none() {
            return None;
        }
        self.seq_headers.clone()
    }

    /// Frames that produced no frame tag so far: other codecs, video before
    /// its parameter sets or holding only them, AAC that is not ADTS, empty
    /// or oversize frames.
    pub fn frames_dropped(&self) -> u64 {
        self.dropped
    }

    /// Muxes one frame; call once per frame and share the result with every
    /// viewer. Timestamps count from the first tag this muxer emitted. Frames
    /// of other codecs than the configured tracks, and video before its first
    /// parameter sets, give an empty [`MuxOut`].
    pub fn mux(&mut self, frame: &Frame) -> MuxOut {
        let out = if Some(frame.codec) == self.video {
            let ext = self.unwrap_dts(frame.dts);
            self.mux_video(frame, ext)
        } else if Some(frame.codec) == self.audio {
            let ext = self.unwrap_dts(frame.dts);
            self.mux_audio(frame, ext)
        } else {
            MuxOut::default()
        };
        if out.tags.len() == out.config_len {
            self.dropped += 1;
        }
        out
    }

    /// Follows 33-bit wraps: each DTS is taken as the nearest value to the
    /// previous one modulo 2³³.
    fn unwrap_dts(&mut self, raw: u64) -> i64 {
        let ext = match self.last_raw {
            None => 0,
            Some(last) => {
                let d = raw.wrapping_sub(last) % TS_WRAP;
                let d = if d >= TS_WRAP / 2 {
                    d as i64 - TS_WRAP as i64
                } else {
                    d as i64
                };
                self.ext.saturating_add(d)
            }
        };
        self.last_raw = Some(raw);
        self.ext = ext;
        ext
    }

    /// Milliseconds since the first emitted tag, modulo 2³².
    fn ms(&mut self, ext: i64) -> u32 {
        let base = *self.base.get_or_insert(ext);
        (ext.saturating_sub(base).max(0) / 90) as u64 as u32
    }

    fn mux_video(&mut self, frame: &Frame, ext: i64) -> MuxOut {
        let hevc = frame.codec == Codec::H265;
        let mut found = ParamSets::default();
        let mut nalus: Vec<&[u8]> = Vec::new();
        for n in nal::split_annex_b(&frame.data) {
            let list = if hevc {
                match nal::h265_type(n) {
                    Some(32) => Some(&mut found.vps),
                    Some(33) => Some(&mut found.sps),
                    Some(34) => Some(&mut found.pps),
                    Some(35) => continue,
                    _ => None,
                }
            } else {
                match nal::h264_type(n) {
                    Some(7) => Some(&mut found.sps),
                    Some(8) => Some(&mut found.pps),
                    Some(9) => continue,
                    _ => None,
                }
            };
            match list {
                Some(l) if n.len() <= 0xFFFF && l.len() < 31 => {
                    if !l.iter().any(|p| p.as_ref() == n) {
                        l.push(Bytes::copy_from_slice(n));
                    }
                }
                Some(_) => {}
                None => nalus.push(n),
            }
        }
        let mut out = BytesMut::new();
        let mut config_len = 0;
        if let Some(record) = self.update_params(found, hevc) {
            let ms = self.ms(ext);
            let head: &[u8] = match (hevc, self.hevc_mode) {
                (false, _) => &[0x10 | CODEC_AVC, 0, 0, 0, 0],
                (true, HevcMode::Legacy) => &[0x10 | CODEC_HEVC_LEGACY, 0, 0, 0, 0],
                (true, HevcMode::Enhanced) => &[0x90, b'h', b'v', b'c', b'1'],
            };
            put_tag(&mut out, TAG_VIDEO, ms, &[head, &record]);
            config_len = out.len();
            let tag = out.clone().freeze();
            self.video_cfg = Some(tag);
            self.rebuild_seq_headers();
        }
        let body_len = nalus.iter().map(|n| 4 + n.len()).sum::<usize>() + 8;
        if self.video_cfg.is_some() && !nalus.is_empty() && body_len <= MAX_BODY {
            let ms = self.ms(ext);
            let cts = cts_ms(frame.pts, frame.dts);
            let [_, c0, c1, c2] = cts.to_be_bytes();
            let ft: u8 = if frame.keyframe { 0x10 } else { 0x20 };
            let (head, head_len) = match (hevc, self.hevc_mode) {
                (false, _) => ([ft | CODEC_AVC, 1, c0, c1, c2, 0, 0, 0], 5),
                (true, HevcMode::Legacy) => ([ft | CODEC_HEVC_LEGACY, 1, c0, c1, c2, 0, 0, 0], 5),
                // PacketType 3 (CodedFramesX) omits a zero composition time.
                (true, HevcMode::Enhanced) if cts == 0 => {
                    ([0x83 | ft, b'h', b'v', b'c', b'1', 0, 0, 0], 5)
                }
                (true, HevcMode::Enhanced) => ([0x81 | ft, b'h', b'v', b'c', b'1', c0, c1, c2], 8),
            };
            let head = head.get(..head_len).unwrap_or_default();
            let len = body_len - 8 + head_len;
            tag_start(&mut out, TAG_VIDEO, ms, len);
            out.put_slice(head);
            for n in nalus {
                out.put_u32(n.len() as u32);
                out.put_slice(n);
            }
            tag_end(&mut out, len);
        }
        MuxOut {
            keyframe: frame.keyframe && out.len() > config_len,
            tags: out.freeze(),
            config_len,
            config_changed: config_len > 0,
        }
    }

    /// Merges the frame's parameter sets into the configuration; returns the
    /// new decoder configuration record when it changed and is complete.
    fn update_params(&mut self, found: ParamSets, hevc: bool) -> Option<Vec<u8>> {
        if found == ParamSets::default() {
            return None;
        }
        let mut cand = self.params.clone().unwrap_or_default();
        for (new, old) in [
            (found.vps, &mut cand.vps),
            (found.sps, &mut cand.sps),
            (found.pps, &mut cand.pps),
        ] {
            if !new.is_empty() {
                *old = new;
            }
        }
        if self.params.as_ref() == Some(&cand) && self.video_cfg.is_some() {
            return None;
        }
        let record = if hevc { hvcc(&cand) } else { avcc(&cand) };
        self.params = Some(cand);
        record
    }

    fn mux_audio(&mut self, frame: &Frame, ext: i64) -> MuxOut {
        let mut out = BytesMut::new();
        let mut config_len = 0;
        match frame.codec {
            Codec::G711A | Codec::G711U if (1..MAX_BODY).contains(&frame.data.len()) => {
                let flags = if frame.codec == Codec::G711A {
                    G711A_FLAGS
                } else {
                    G711U_FLAGS
                };
                let ms = self.ms(ext);
                put_tag(&mut out, TAG_AUDIO, ms, &[&[flags], &frame.data]);
            }
            Codec::Aac => {
                let mut rest: &[u8] = &frame.data;
                let mut samples: i64 = 0;
                while let Some(h) = parse_adts(rest) {
                    let t = ext.saturating_add(samples * 90_000 / i64::from(h.rate));
                    if out.is_empty() && self.aac_cfg != Some(h.asc) {
                        let ms = self.ms(t);
                        put_tag(&mut out, TAG_AUDIO, ms, &[&[AAC_FLAGS, 0], &h.asc]);
                        config_len = out.len();
                        self.aac_cfg = Some(h.asc);
                        self.audio_cfg = Some(out.clone().freeze());
                        self.rebuild_seq_headers();
                    }
                    if let Some(raw) = rest.get(h.header_len..h.frame_len) {
                        let ms = self.ms(t);
                        put_tag(&mut out, TAG_AUDIO, ms, &[&[AAC_FLAGS, 1], raw]);
                    }
                    samples += 1024;
                    rest = rest.get(h.frame_len..).unwrap_or_default();
                }
            }
            _ => {}
        }
        MuxOut {
            keyframe: self.video.is_none() && out.len() > config_len,
            tags: out.freeze(),
            config_len,
            config_changed: config_len > 0,
        }
    }

    fn rebuild_seq_headers(&mut self) {
        let mut b = BytesMut::new();
        for t in [&self.video_cfg, &self.audio_cfg].into_iter().flatten() {
            b.put_slice(t);
        }
        self.seq_headers = (!b.is_empty()).then(|| b.freeze());
    }
}

/// Composition time offset in ms, clamped to signed 24 bits.
fn cts_ms(pts: u64, dts: u64) -> i32 {
    let d = pts.wrapping_sub(dts) % TS_WRAP;
    let d = if d >= TS_WRAP / 2 {
        d as i64 - TS_WRAP as i64
    } else {
        d as i64
    };
    (d / 90).clamp(-(1 << 23), (1 << 23) - 1) as i32
}

/// Appends one tag: header, body parts, PreviousTagSize.
fn put_tag(out: &mut BytesMut, kind: u8, ms: u32, body: &[&[u8]]) {
    let len = body.iter().map(|p| p.len()).sum();
    tag_start(out, kind, ms, len);
    body.iter().for_each(|p| out.put_slice(p));
    tag_end(out, len);
}

/// Appends a tag header for a body of `len` (at most 2²⁴ - 1) bytes.
fn tag_start(out: &mut BytesMut, kind: u8, ms: u32, len: usize) {
    out.reserve(TAG_HEADER + len + 4);
    out.put_u8(kind);
    out.put_uint(len as u64, 3);
    out.put_uint(u64::from(ms & 0x00FF_FFFF), 3);
    out.put_u8((ms >> 24) as u8); // TimestampExtended
    out.put_uint(0, 3); // StreamID
}

/// Appends the PreviousTagSize after a body of `len` bytes.
fn tag_end(out: &mut BytesMut, len: usize) {
    out.put_u32((TAG_HEADER + len) as u32);
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1).
fn avcc(ps: &ParamSets) -> Option<Vec<u8>> {
    let sps = ps.sps.first()?;
    if ps.pps.is_empty() {
        return None;
    }
    let (profile, compat, level) = (*sps.get(1)?, *sps.get(2)?, *sps.get(3)?);
    let mut r = vec![1, profile, compat, level, 0xFF, 0xE0 | ps.sps.len() as u8];
    for s in &ps.sps {
        r.extend_from_slice(&(s.len() as u16).to_be_bytes());
        r.extend_from_slice(s);
    }
    r.push(ps.pps.len() as u8);
    for p in &ps.pps {
        r.extend_from_slice(&(p.len() as u16).to_be_bytes());
        r.extend_from_slice(p);
    }
    if matches!(profile, 100 | 110 | 122 | 144) {
        if let Some([chroma, bdl, bdc]) = avc_sps_ext(sps) {
            r.extend_from_slice(&[0xFC | (chroma & 3) as u8, 0xF8 | (bdl & 7) as u8]);
            r.extend_from_slice(&[0xF8 | (bdc & 7) as u8, 0]);
        }
    }
    Some(r)
}

/// chroma_format_idc and bit depths of a High-profile H.264 SPS NAL.
fn avc_sps_ext(sps: &[u8]) -> Option<[u32; 3]> {
    let rbsp = unescape(sps.get(4..)?);
    let mut b = Bits::new(&rbsp);
    b.ue()?; // seq_parameter_set_id
    let chroma = b.ue()?;
    if chroma == 3 {
        b.skip(1)?; // separate_colour_plane_flag
    }
    Some([chroma, b.ue()?, b.ue()?])
}

/// What the hvcC needs from an H.265 SPS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HevcSpsInfo {
    /// general profile_space/tier/idc, compatibility (4), constraints (6), level.
    ptl: [u8; 12],
    max_sub_layers: u8,
    temporal_id_nesting: bool,
    chroma_format_idc: u32,
    bit_depth_luma_minus8: u32,
    bit_depth_chroma_minus8: u32,
    /// pic_width/height_in_luma_samples; 0 when the SPS ends before them.
    width: u32,
    height: u32,
}

/// Parses an H.265 SPS NAL (header included) as far as the bit depths
/// (H.265 §7.3.2.2). Fields it cannot reach keep their 4:2:0 8-bit defaults.
fn parse_hevc_sps(nal: &[u8]) -> HevcSpsInfo {
    let mut info = HevcSpsInfo {
        ptl: [0; 12],
        max_sub_layers: 1,
        temporal_id_nesting: true,
        chroma_format_idc: 1,
        bit_depth_luma_minus8: 0,
        bit_depth_chroma_minus8: 0,
        width: 0,
        height: 0,
    };
    let rbsp = unescape(nal.get(2..).unwrap_or_default());
    let _ = read_hevc_sps(&mut Bits::new(&rbsp), &mut info);
    info
}

/// The picture size an H.265 SPS NAL (header included) declares, if it
/// can be read that far and is not empty.
pub(crate) fn hevc_picture_size(sps: &[u8]) -> Option<(u32, u32)> {
    let i = parse_hevc_sps(sps);
    (i.width > 0 && i.height > 0).then_some((i.width, i.height))
}

fn read_hevc_sps(b: &mut Bits, info: &mut HevcSpsInfo) -> Option<()> {
    b.skip(4)?; // sps_video_parameter_set_id
    let msl = b.bits(3)? as usize; // sps_max_sub_layers_minus1
    info.max_sub_layers = msl as u8 + 1;
    info.temporal_id_nesting = b.bits(1)? == 1;
    for p in info.ptl.iter_mut() {
        *p = b.bits(8)? as u8;
    }
    let mut present = [(false, false); 7];
    for p in present.iter_mut().take(msl) {
        *p = (b.bits(1)? == 1, b.bits(1)? == 1);
    }
    if msl > 0 {
        b.skip(2 * (8 - msl))?; // reserved_zero_2bits
    }
    for (profile, level) in present.iter().take(msl) {
        b.skip(if *profile { 88 } else { 0 } + if *level { 8 } else { 0 })?;
    }
    b.ue()?; // sps_seq_parameter_set_id
    let chroma = b.ue()?;
    if chroma == 3 {
        b.skip(1)?; // separate_colour_plane_flag
    }
    info.chroma_format_idc = chroma;
    info.width = b.ue()?;
    info.height = b.ue()?;
    if b.bits(1)? == 1 {
        for _ in 0..4 {
            b.ue()?; // conf_win_{left,right,top,bottom}_offset
        }
    }
    info.bit_depth_luma_minus8 = b.ue()?;
    info.bit_depth_chroma_minus8 = b.ue()?;
    Some(())
}

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1).
fn hvcc(ps: &ParamSets) -> Option<Vec<u8>> {
    if ps.vps.is_empty() || ps.pps.is_empty() {
        return None;
    }
    let i = parse_hevc_sps(ps.sps.first()?);
    let mut r = vec![1];
    r.extend_from_slice(&i.ptl);
    r.extend_from_slice(&[0xF0, 0x00, 0xFC]); // min_spatial_segmentation 0, parallelismType 0
    r.push(0xFC | (i.chroma_format_idc & 3) as u8);
    r.push(0xF8 | (i.bit_depth_luma_minus8 & 7) as u8);
    r.push(0xF8 | (i.bit_depth_chroma_minus8 & 7) as u8);
    r.extend_from_slice(&[0, 0]); // avgFrameRate
                                  // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
    r.push((i.max_sub_layers & 7) << 3 | u8::from(i.temporal_id_nesting) << 2 | 3);
    r.push(3);
    for (t, list) in [(32u8, &ps.vps), (33, &ps.sps), (34, &ps.pps)] {
        r.push(0x80 | t); // array_completeness 1: parameter sets only here
        r.extend_from_slice(&(list.len() as u16).to_be_bytes());
        for n in list {
            r.extend_from_slice(&(n.len() as u16).to_be_bytes());
            r.extend_from_slice(n);
        }
    }
    Some(r)
}

/// Removes emulation-prevention bytes (00 00 03 → 00 00).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader over an RBSP.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            let byte = self.data.get(self.pos / 8)?;
            v = v << 1 | u32::from(byte >> (7 - self.pos % 8) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    /// Exp-Golomb ue(v).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }
}

/// One ADTS header.
struct Adts {
    asc: [u8; 2],
    rate: u32,
    header_len: usize,
    frame_len: usize,
}

/// Parses the ADTS header at the start of `d` (ISO/IEC 13818-7 §6.2).
fn parse_adts(d: &[u8]) -> Option<Adts> {
    let [b0, b1, b2, b3, b4, b5, ..] = *d else {
        return None;
    };
    if b0 != 0xFF || b1 & 0xF6 != 0xF0 {
        return None;
    }
    let header_len = if b1 & 1 == 1 { 7 } else { 9 };
    let object_type = (b2 >> 6) + 1;
    let sfi = (b2 >> 2) & 0x0F;
    let channels = (b2 & 1) << 2 | b3 >> 6;
    let frame_len = usize::from(b3 & 3) << 11 | usize::from(b4) << 3 | usize::from(b5 >> 5);
    let rate = *AAC_RATES.get(usize::from(sfi))?;
    if frame_len < header_len || frame_len > d.len() {
        return None;
    }
    Some(Adts {
        asc: [object_type << 3 | sfi >> 1, (sfi & 1) << 7 | channels << 3],
        rate,
        header_len,
        frame_len,
    })
}

fn be_u32(d: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = d.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Reads a whole FLV file: header, then tags whose PreviousTagSize must match.
/// Strict (any inconsistency is an error) and panic-free on any input.
pub fn parse_tags(data: &[u8]) -> Result<Vec<FlvTag>, FlvError> {
    if data.get(..4) != Some(b"FLV\x01") {
        return Err(FlvError::BadHeader);
    }
    let offset = be_u32(data, 5).ok_or(FlvError::Truncated(0))? as usize;
    if offset < 9 {
        return Err(FlvError::BadHeader);
    }
    let mut expected = 0u32;
    let mut pos = offset;
    let mut tags = Vec::new();
    loop {
        let found = be_u32(data, pos).ok_or(FlvError::Truncated(pos))?;
        if found != expected {
            return Err(FlvError::BadPreviousTagSize {
                at: pos,
                expected,
                found,
            });
        }
        let at = pos.saturating_add(4);
        if at >= data.len() {
            return Ok(tags);
        }
        let Some(&[kind, s0, s1, s2, t0, t1, t2, t3, ..]) =
            data.get(at..at.saturating_add(TAG_HEADER))
        else {
            return Err(FlvError::Truncated(at));
        };
        let size = u32::from_be_bytes([0, s0, s1, s2]);
        let body_at = at + TAG_HEADER;
        let body = data
            .get(body_at..body_at + size as usize)
            .ok_or(FlvError::Truncated(at))?;
        tags.push(FlvTag {
            kind: kind & 0x1F,
            timestamp_ms: u32::from_be_bytes([t3, t0, t1, t2]),
            body: Bytes::copy_from_slice(body),
        });
        expected = TAG_HEADER as u32 + size;
        pos = body_at + size as usize;
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let digit = |i| u8::from_str_radix(&s[i..i + 2], 16).unwrap();
        (0..s.len()).step_by(2).map(digit).collect()
    }

    // Parameter sets of 320x240 testsrc2 clips from x264 (High) and x265 (Main).
    const SPS264: &str = "6764000dacb20283f60220000003002000000641e28549";
    const PPS264: &str = "68ebc3cb22c0";
    const VPS265: &str = "40010c01ffff01600000030090000003000003003c928090";
    const SPS265: &str =
        "42010101600000030090000003000003003ca00a080f16592a4932bc05a02000000300200000030321";
    const PPS265: &str = "4401c172b46240";

    /// A frame; video `data` is given as NAL units and joined with start codes.
    fn frame(codec: Codec, dts: u64, cts: u64, keyframe: bool, data: &[Vec<u8>]) -> Frame {
        let data = if codec.is_video() {
            data.iter()
                .flat_map(|n| [&[0, 0, 0, 1], &n[..]].concat())
                .collect()
        } else {
            data.concat()
        };
        let pts = (dts + cts) % TS_WRAP;
        let data = Bytes::from(data);
        Frame {
            codec,
            pts,
            dts,
            keyframe,
            data,
        }
    }

    /// A decoded video tag body (AVC, legacy or Enhanced HEVC).
    #[derive(Debug, PartialEq)]
    struct Video {
        seq: bool,
        key: bool,
        cts: i32,
        payload: Vec<u8>,
    }

    fn video(b: &[u8]) -> Video {
        let i24 = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8;
        let key = (b[0] >> 4) & 7 == 1;
        let (seq, cts, at) = if b[0] & 0x80 != 0 {
            assert_eq!(&b[1..5], b"hvc1");
            match b[0] & 0x0F {
                0 => (true, 0, 5),
                1 => (false, i24(&b[5..8]), 8),
                3 => (false, 0, 5),
                t => panic!("packet type {t}"),
            }
        } else {
            assert!(matches!(b[0] & 0x0F, 7 | 12));
            (b[1] == 0, i24(&b[2..5]), 5)
        };
        let payload = b[at..].to_vec();
        Video {
            seq,
            key,
            cts,
            payload,
        }
    }

    fn length_prefixed(nals: &[Vec<u8>]) -> Vec<u8> {
        let prefixed = |n: &Vec<u8>| [&(n.len() as u32).to_be_bytes()[..], n].concat();
        nals.iter().flat_map(prefixed).collect()
    }

    fn parse_all(m: &FlvMuxer, outs: &[MuxOut]) -> Vec<FlvTag> {
        let tags = outs.iter().map(|o| o.tags.clone());
        parse_tags(
            &std::iter::once(m.header())
                .chain(tags)
                .collect::<Vec<_>>()
                .concat(),
        )
        .unwrap()
    }

    fn adts(protection_absent: bool, sfi: u8, channels: u8, raw: &[u8]) -> Vec<u8> {
        let len = if protection_absent { 7 } else { 9 } + raw.len();
        let mut v = vec![
            0xFF,
            0xF0 | u8::from(protection_absent),
            0x40 | sfi << 2 | channels >> 2,
        ];
        v.extend([(channels & 3) << 6 | (len >> 11) as u8, (len >> 3) as u8]);
        v.extend([((len & 7) as u8) << 5 | 0x1F, 0xFC]);
        if !protection_absent {
            v.extend([0x12, 0x34]); // CRC
        }
        [v, raw.to_vec()].concat()
    }

    #[test]
    fn header_flags() {
        let h = |v, a| FlvMuxer::new(v, a, HevcMode::default()).header();
        let both = h(Some(Codec::H264), Some(Codec::G711A));
        assert_eq!(&both[..], b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
        assert_eq!(h(Some(Codec::H265), None)[4], 0x01);
        assert_eq!(h(None, Some(Codec::Aac))[4], 0x04);
        assert_eq!(h(Some(Codec::G711A), Some(Codec::H264))[4], 0x00);
        assert!(parse_tags(&both).unwrap().is_empty());
    }

    #[test]
    fn avc_config_record_matches_ffmpeg() {
        let (sps, pps) = (vec![hex(SPS264).into()], vec![hex(PPS264).into()]);
        let ps = ParamSets {
            vps: vec![],
            sps,
            pps,
        };
        // ffmpeg 5.1 -c copy -f flv: the High profile extension is fd f8 f8 00.
        let want = hex(&format!("0164000dffe10017{SPS264}010006{PPS264}fdf8f800"));
        assert_eq!(avcc(&ps).unwrap(), want);
        let sps = vec![Bytes::from_static(&[0x67, 0x42, 0xC0, 0x1E])];
        let baseline = avcc(&ParamSets { sps, ..ps }).unwrap();
        assert_eq!(baseline[..6], [1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1]);
        assert_eq!(baseline.len(), 6 + 6 + 9);
    }

    #[test]
    fn hvcc_matches_ffmpeg() {
        let vps = vec![hex(VPS265).into()];
        let (sps, pps) = (vec![hex(SPS265).into()], vec![hex(PPS265).into()]);
        // ffmpeg 9 -c copy -f flv writes the same but with array_completeness 0.
        let want = hex(&format!(
            "0101600000009000000000003cf000fcfdf8f800000f03\
             a000010018{VPS265}a100010029{SPS265}a200010007{PPS265}"
        ));
        assert_eq!(hvcc(&ParamSets { vps, sps, pps }).unwrap(), want);
    }

    #[test]
    fn hevc_sps_with_sub_layers_and_emulation_prevention() {
        let mut bits = String::new();
        let mut u = |v: u64, n: u32| {
            (0..n)
                .rev()
                .for_each(|i| bits.push(char::from(b'0' + (v >> i & 1) as u8)))
        };
        u(0, 4); // sps_video_parameter_set_id
        u(2, 3); // sps_max_sub_layers_minus1
        u(0, 1); // sps_temporal_id_nesting_flag
        u(0x24, 8); // profile space 0, high tier, RExt
        u(0x0800_0000, 32);
        u(0, 48); // constraint flags: zeros that need emulation prevention
        u(153, 8); // level 5.1
        u(0b1101, 4); // sub-layer 0: profile + level, 1: level
        u(0, 12); // reserved_zero_2bits × 6
        u(u64::MAX, 64);
        u(0x55AA_55AA, 32); // sub-layer 0 profile (88 bits) and level
        u(0x66, 8); // sub-layer 1 level
        for v in [0u64, 2, 1920, 1080] {
            let n = 64 - (v + 1).leading_zeros();
            u(v + 1, 2 * n - 1); // ue(v): sps id, chroma 2, width, height
        }
        u(0b1_1_1_1_1, 5); // conformance window, four ue(0)
        u(0b011, 3); // bit_depth_luma_minus8 ue(2)
        u(0b011, 3); // bit_depth_chroma_minus8 ue(2)
        u(1, 1); // stop bit
        bits.extend(std::iter::repeat_n(
            '0',
            bits.len().next_multiple_of(8) - bits.len(),
        ));
        let rbsp: Vec<u8> = (0..bits.len())
            .step_by(8)
            .map(|i| u8::from_str_radix(&bits[i..i + 8], 2).unwrap())
            .collect();
        let mut nal = vec![0x42, 0x01];
        for &b in &rbsp {
            if nal.ends_with(&[0, 0]) && b <= 3 {
                nal.push(3);
            }
            nal.push(b);
        }
        assert_eq!(nal.len(), rbsp.len() + 2 + 4); // 4 emulation-prevention bytes
        let i = parse_hevc_sps(&nal);
        assert_eq!(i.ptl, [0x24, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 153]);
        assert_eq!((i.max_sub_layers, i.temporal_id_nesting), (3, false));
        let depths = (
            i.chroma_format_idc,
            i.bit_depth_luma_minus8,
            i.bit_depth_chroma_minus8,
        );
        assert_eq!(depths, (2, 2, 2));
        // Truncated: PTL kept, the rest defaults.
        let i = parse_hevc_sps(&nal[..20]);
        assert_eq!(
            (i.ptl[0], i.chroma_format_idc, i.bit_depth_luma_minus8),
            (0x24, 1, 0)
        );
    }

    #[test]
    fn h264_config_changes_and_payload() {
        let mut m = FlvMuxer::new(Some(Codec::H264), None, HevcMode::default());
        let (aud, sps, pps) = (vec![0x09, 0xF0], hex(SPS264), hex(PPS264));
        let (sei, idr) = (vec![0x06, 5, 1, 0x80], vec![0x65, 0x88, 0x84]);
        let p = [aud.clone(), vec![0x41, 0x9A, 0x02]];
        let key = [aud, sps.clone(), pps, sei.clone(), idr.clone()];
        let mut sps2 = sps;
        sps2[3] = 0x1F; // level 3.1
        assert!(m.mux(&frame(Codec::H264, 0, 0, false, &p)).is_empty());
        assert_eq!(m.sequence_headers(), None);
        let o1 = m.mux(&frame(Codec::H264, 3600, 0, true, &key));
        assert!(o1.config_changed && o1.keyframe);
        assert_eq!(
            m.sequence_headers().unwrap(),
            o1.tags.slice(..o1.config_len)
        );
        let o2 = m.mux(&frame(Codec::H264, 7200, 0, false, &p));
        assert!(!o2.config_changed && !o2.keyframe && o2.config_len == 0);
        let o3 = m.mux(&frame(Codec::H264, 10800, 0, true, &key));
        assert!(!o3.config_changed && o3.keyframe);
        let o4 = m.mux(&frame(Codec::H264, 14400, 0, true, &[sps2, idr.clone()]));
        assert!(o4.config_changed);
        assert_eq!(o4.frame_tags(), o4.tags.slice(o4.config_len..));
        let tags = parse_all(&m, &[o1, o2, o3, o4]);
        let v: Vec<Video> = tags.iter().map(|t| video(&t.body)).collect();
        let ts: Vec<u32> = tags.iter().map(|t| t.timestamp_ms).collect();
        assert_eq!(ts, [0, 0, 40, 80, 120, 120]);
        let flags: Vec<(bool, bool)> = v.iter().map(|v| (v.seq, v.key)).collect();
        let (s, k, p) = ((true, true), (false, true), (false, false));
        assert_eq!(flags, [s, k, p, k, s, k]);
        assert_eq!(
            (v[1].cts, v[1].payload.clone()),
            (0, length_prefixed(&[sei, idr]))
        );
        assert_eq!(v[4].payload[3], 0x1F);
        assert_eq!(tags[0].body[..5], [0x17, 0, 0, 0, 0]);
        assert_eq!(tags[1].body[..5], [0x17, 1, 0, 0, 0]);
    }

    #[test]
    fn hevc_modes() {
        let key = [
            vec![0x46, 0x01, 0x50],
            hex(VPS265),
            hex(SPS265),
            hex(PPS265),
            vec![0x26, 1, 0xAF],
        ];
        for mode in [HevcMode::Enhanced, HevcMode::Legacy] {
            let mut m = FlvMuxer::new(Some(Codec::H265), None, mode);
            let a = m.mux(&frame(Codec::H265, 900, 0, true, &key));
            let b = m.mux(&frame(
                Codec::H265,
                4500,
                7200,
                false,
                &[vec![0x02, 1, 0xD0]],
            ));
            let tags = parse_all(&m, &[a, b]);
            let firsts = (tags[1].body[0], tags[2].body[0]);
            if mode == HevcMode::Enhanced {
                assert_eq!(tags[0].body[..5], *b"\x90hvc1");
                assert_eq!(firsts, (0x93, 0xA1)); // CodedFramesX, CodedFrames
            } else {
                assert_eq!(tags[0].body[..5], [0x1C, 0, 0, 0, 0]);
                assert_eq!(firsts, (0x1C, 0x2C));
            }
            let v: Vec<Video> = tags.iter().map(|t| video(&t.body)).collect();
            assert_eq!(v[0].payload[23], 0xA0);
            assert_eq!(v[1].payload, length_prefixed(&[vec![0x26, 1, 0xAF]]));
            assert_eq!((v[2].key, v[2].cts, tags[2].timestamp_ms), (false, 80, 40));
        }
    }

    #[test]
    fn timestamps_wrap_33_bits_and_use_the_extended_byte() {
        let mut m = FlvMuxer::new(None, Some(Codec::G711U), HevcMode::default());
        let data = [vec![0xFF; 160]];
        let dts = [
            TS_WRAP - 900,
            0,
            900,
            90 * 20_000_000,
            90 * 19_999_000,
            90 * 20_000_000,
        ];
        let outs: Vec<MuxOut> = dts
            .iter()
            .map(|&d| m.mux(&frame(Codec::G711U, d, 0, true, &data)))
            .collect();
        assert!(outs.iter().all(|o| o.keyframe && !o.config_changed));
        let tags = parse_all(&m, &outs);
        let ts: Vec<u32> = tags.iter().map(|t| t.timestamp_ms).collect();
        assert_eq!(ts, [0, 10, 20, 20_000_010, 19_999_010, 20_000_010]);
        assert_eq!(outs[3].tags[7], (20_000_010u32 >> 24) as u8);
        assert_eq!(tags[0].body[0], 0x82);
        assert_eq!(cts_ms(0, 9000), -100);
        assert_eq!(cts_ms(TS_WRAP - 90, 90), -2);
        assert_eq!(cts_ms(TS_WRAP / 2 - 1, 0), (1 << 23) - 1);
    }

    #[test]
    fn aac_and_g711() {
        let mut m = FlvMuxer::new(Some(Codec::H264), Some(Codec::Aac), HevcMode::default());
        // 44.1 kHz stereo, with CRC then without, two frames in one PES; then 48 kHz mono.
        let two = [adts(false, 4, 2, &[1, 2, 3]), adts(true, 4, 2, &[4, 5])];
        let a = m.mux(&frame(Codec::Aac, 0, 0, true, &two));
        assert!(
            a.config_changed && !a.keyframe,
            "video track: audio is no start point"
        );
        assert_eq!(m.sequence_headers(), None);
        let b = m.mux(&frame(Codec::Aac, 1800, 0, true, &[adts(true, 3, 1, &[6])]));
        assert!(b.config_changed);
        assert!(m
            .mux(&frame(Codec::Aac, 0, 0, true, &[b"junk".to_vec()]))
            .is_empty());
        assert!(m
            .mux(&frame(Codec::G711A, 0, 0, true, &[b"x".to_vec()]))
            .is_empty());
        assert_eq!(m.frames_dropped(), 2);
        let tags = parse_all(&m, &[a, b]);
        let got: Vec<(u32, &[u8])> = tags.iter().map(|t| (t.timestamp_ms, &t.body[..])).collect();
        let want: [(u32, &[u8]); 5] = [
            (0, &[0xAF, 0, 0x12, 0x10]),
            (0, &[0xAF, 1, 1, 2, 3]),
            (23, &[0xAF, 1, 4, 5]),
            (20, &[0xAF, 0, 0x11, 0x88]),
            (20, &[0xAF, 1, 6]),
        ];
        assert_eq!(got, want);
        let mut g = FlvMuxer::new(None, Some(Codec::G711A), HevcMode::default());
        let o = g.mux(&frame(Codec::G711A, 0, 0, false, &[vec![0xD5; 320]]));
        assert!(o.keyframe && g.sequence_headers().is_none());
        assert_eq!(o.tags[11..13], [0x72, 0xD5]);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse_tags(b"FLX\x01"), Err(FlvError::BadHeader));
        assert_eq!(parse_tags(b"FLV\x01\x05\0\0"), Err(FlvError::Truncated(0)));
        assert_eq!(
            parse_tags(b"FLV\x01\x05\0\0\0\x08\0\0\0\0"),
            Err(FlvError::BadHeader)
        );
        assert_eq!(
            parse_tags(b"FLV\x01\x05\0\0\0\x09\0\0"),
            Err(FlvError::Truncated(9))
        );
        let mut m = FlvMuxer::new(None, Some(Codec::G711A), HevcMode::default());
        let o = m.mux(&frame(Codec::G711A, 0, 0, true, &[b"ab".to_vec()]));
        let mut f = [m.header(), o.tags].concat();
        assert_eq!(
            parse_tags(&f).unwrap()[0].body,
            Bytes::from_static(b"\x72ab")
        );
        assert_eq!(
            parse_tags(&f[..f.len() - 1]),
            Err(FlvError::Truncated(f.len() - 4))
        );
        assert_eq!(parse_tags(&f[..20]), Err(FlvError::Truncated(13)));
        *f.last_mut().unwrap() = 0;
        let at = f.len() - 4;
        let e = FlvError::BadPreviousTagSize {
            at,
            expected: 14,
            found: 0,
        };
        assert_eq!(parse_tags(&f), Err(e));
    }

    /// One generated step: keyframe, slice bodies, DTS step, CTS (90 kHz), audio payload.
    type Step = (bool, Vec<Vec<u8>>, u64, u64, Vec<u8>);

    fn steps() -> impl Strategy<Value = (u8, u8, u64, Vec<Step>)> {
        let bytes = |n| proptest::collection::vec(1u8..=255, 1..n);
        let slices = proptest::collection::vec(bytes(120), 1..4);
        let step = (any::<bool>(), slices, 0u64..9000, 0u64..20_000, bytes(200));
        (
            0u8..3,
            0u8..3,
            0..TS_WRAP,
            proptest::collection::vec(step, 1..30),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn round_trip((vkind, akind, dts0, steps) in steps()) {
            let modes = [(Codec::H264, HevcMode::Enhanced), (Codec::H265, HevcMode::Enhanced), (Codec::H265, HevcMode::Legacy)];
            let (vc, mode) = modes[usize::from(vkind)];
            let ac = [None, Some(Codec::G711A), Some(Codec::Aac)][usize::from(akind)];
            let hevc = vc == Codec::H265;
            let mut m = FlvMuxer::new(Some(vc), ac, mode);
            let (mut outs, mut want_v, mut want_ts, mut want_a) = (vec![], vec![], vec![], vec![]);
            let mut t = 0u64;
            for (i, (key, slices, step, cts, audio)) in steps.iter().enumerate() {
                let key = *key || i == 0;
                t += if i == 0 { 0 } else { *step };
                let dts = (dts0 + t) % TS_WRAP;
                let mut nals = match (hevc, key) {
                    (true, true) => vec![vec![0x46, 1, 0x50], hex(VPS265), hex(SPS265), hex(PPS265)],
                    (true, false) => vec![vec![0x46, 1, 0x50]],
                    (false, true) => vec![vec![0x09, 0xF0], hex(SPS264), hex(PPS264)],
                    (false, false) => vec![vec![0x09, 0xF0]],
                };
                let head: &[u8] = match (hevc, key) { (true, true) => &[0x26, 1], (true, false) => &[0x02, 1], (false, true) => &[0x65], (false, false) => &[0x41] };
                let slices: Vec<Vec<u8>> = slices.iter().map(|s| [head, s].concat()).collect();
                nals.extend(slices.iter().cloned());
                let o = m.mux(&frame(vc, dts, *cts, key, &nals));
                prop_assert_eq!((o.keyframe, o.config_changed), (key, i == 0));
                outs.push(o);
                want_v.push(Video { seq: false, key, cts: (*cts / 90) as i32, payload: length_prefixed(&slices) });
                want_ts.push((t / 90) as u32);
                let (body, data) = match ac {
                    Some(Codec::G711A) => ([&[0x72], &audio[..]].concat(), audio.clone()),
                    Some(_) => ([&[0xAF, 1], &audio[..]].concat(), adts(true, 4, 2, audio)),
                    None => continue,
                };
                outs.push(m.mux(&frame(ac.unwrap(), dts, 0, true, &[data])));
                want_a.push(((t / 90) as u32, body));
            }
            let tags = parse_all(&m, &outs);
            let seq = parse_tags(&[m.header(), m.sequence_headers().unwrap()].concat()).unwrap();
            prop_assert_eq!(seq.len(), if ac == Some(Codec::Aac) { 2 } else { 1 });
            let (vt, at): (Vec<&FlvTag>, Vec<&FlvTag>) = tags.iter().partition(|t| t.kind == TAG_VIDEO);
            prop_assert_eq!(vt[0], &seq[0]);
            prop_assert!(video(&vt[0].body).seq);
            let got_v: Vec<Video> = vt[1..].iter().map(|t| video(&t.body)).collect();
            prop_assert_eq!(got_v, want_v);
            let got_ts: Vec<u32> = vt[1..].iter().map(|t| t.timestamp_ms).collect();
            prop_assert_eq!(got_ts, want_ts);
            let got_a: Vec<(u32, Vec<u8>)> = at.iter().filter(|t| t.body[..2] != [0xAF, 0]).map(|t| (t.timestamp_ms, t.body.to_vec())).collect();
            prop_assert_eq!(got_a, want_a);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_tags(&data);
            let _ = parse_tags(&[b"FLV\x01\x05\0\0\0\x09\0\0\0\0", &data[..]].concat());
        }

        #[test]
        fn mux_never_panics(frames in proptest::collection::vec((0usize..5, any::<u64>(), any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20), legacy in any::<bool>()) {
            let codecs = [Codec::H264, Codec::H265, Codec::G711A, Codec::G711U, Codec::Aac];
            let mode = if legacy { HevcMode::Legacy } else { HevcMode::Enhanced };
            let mut ms = [FlvMuxer::new(Some(Codec::H264), Some(Codec::Aac), mode), FlvMuxer::new(Some(Codec::H265), Some(Codec::G711U), mode)];
            // Garbage behind real-looking parameter set headers reaches the SPS parsers.
            let prefix = [0, 0, 1, 0x67, 0x64, 0, 0, 1, 0x68, 0, 0, 1, 0x40, 1, 0, 0, 1, 0x42, 1, 0, 0, 1, 0x44, 1];
            for (c, pts, dts, keyframe, mut data) in frames {
                if data.len() > 8 && c < 2 { data.splice(..0, prefix); }
                for m in &mut ms {
                    let o = m.mux(&Frame { codec: codecs[c], pts, dts, keyframe, data: data.clone().into() });
                    let f = [m.header(), m.sequence_headers().unwrap_or_default(), o.tags].concat();
                    prop_assert!(parse_tags(&f).is_ok());
                }
            }
        }
    }
}
