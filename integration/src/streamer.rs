//! gbsim's media sender: plays a clip as a GB/T 28181 device would, as
//! MPEG-PS over RTP (payload type 96) to a UDP or TCP (RFC 4571) peer, paced
//! in real time, with pause, speed, seek and an end for playback sessions.
//!
//! Two sources:
//! * [`Clip`]: an H.264/H.265 Annex-B elementary stream (`.h264`, `.h265`)
//!   cut into access units and muxed per frame with the gateway's own
//!   [`PsMuxer`], as cameras do. Loops with continuous timestamps.
//! * [`PsFile`]: a PS file made by another muxer (`ffmpeg -f vob`,
//!   GStreamer `mpegpsmux`), sent as it is, cut at pack headers and frame
//!   starts and paced by the video DTS. Loops too: from the second pass on,
//!   the SCR, PTS and DTS fields are rewritten in place with the loop
//!   offset, so the receiver also sees monotone time (see [`PsFile`]).
//!
//! [`stream`] does the sending. Make clips with the commands in the
//! integration README/Makefile (`-bf 0`: [`Clip`] assumes no B-frames).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gbgate::media::frame::{Codec, Frame};
use gbgate::media::nal;
use gbgate::media::pes::{self, TS_MASK};
use gbgate::media::ps::{self, PsMuxer};
use gbgate::media::rtp::{frame_rfc4571, RtpPacket};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::Instant;

/// RTP clock rate of PS video, and the unit of every media time here.
pub const CLOCK_RATE: u64 = 90_000;
/// Frame rate assumed for a clip when none is given.
pub const DEFAULT_FPS: u32 = 25;
/// Largest RTP payload sent (GB/T 28181 senders use about 1400).
pub const MAX_RTP_PAYLOAD: usize = 1400;
/// RTP payload type of MPEG-PS in GB/T 28181.
pub const PAYLOAD_TYPE: u8 = 96;
/// Largest clip or PS file loaded, in bytes.
pub const MAX_FILE: u64 = 256 * 1024 * 1024;
/// How long [`MediaDest::TcpActive`] waits for its connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// When sending falls this far behind the clock (a slow TCP peer), the
/// clock is moved instead of sending the backlog in a burst.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Largest [`StreamControl::Seek`] position honoured (about 97 days);
/// later positions are taken as this.
pub const MAX_SEEK: Duration = Duration::from_secs(1 << 23);

/// A duration in 90 kHz ticks, saturating.
fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() * u128::from(CLOCK_RATE) / 1_000_000_000).unwrap_or(u64::MAX)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE {
        return Err(invalid(format!(
            "{}: {len} bytes, more than the {MAX_FILE}-byte limit",
            path.display()
        )));
    }
    std::fs::read(path)
}

// ---------------------------------------------------------------------------
// Elementary stream clips
// ---------------------------------------------------------------------------

fn nal_type(codec: Codec, n: &[u8]) -> Option<u8> {
    match codec {
        Codec::H265 => nal::h265_type(n),
        _ => nal::h264_type(n),
    }
}

/// A slice of a picture (VCL NAL unit).
fn is_vcl(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H265 => t <= 31,
        _ => (1..=5).contains(&t),
    }
}

/// A VCL NAL that starts a picture: `first_mb_in_slice == 0` (H.264, the
/// ue(v) is then the single bit 1) or `first_slice_segment_in_pic_flag`
/// (H.265), the first bit after the NAL header either way.
fn starts_picture(codec: Codec, n: &[u8]) -> bool {
    let at = if codec == Codec::H265 { 2 } else { 1 };
    n.get(at).is_some_and(|b| b & 0x80 != 0)
}

/// Non-VCL units that belong to the access unit of the next picture: AUD,
/// parameter sets, prefix SEI and reserved types (H.264 §7.4.1.2.3, H.265
/// §7.4.2.4.4). End of sequence/stream and suffix SEI stay with the current.
fn opens_access_unit(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H265 => matches!(t, 32..=35 | 39 | 41..=44 | 48..=55),
        _ => matches!(t, 6..=9 | 14..=18),
    }
}

fn is_parameter_set(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H265 => (32..=34).contains(&t),
        _ => matches!(t, 7 | 8),
    }
}

fn is_sps(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H265 => t == 33,
        _ => t == 7,
    }
}

/// An IDR (H.264) or IRAP (H.265) picture's slice.
fn is_irap(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H265 => (16..=21).contains(&t),
        _ => t == 5,
    }
}

fn is_aud(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H265 => t == 35,
        _ => t == 9,
    }
}

/// Splits Annex-B data into access units (lists of NAL units): a new one
/// begins at an AUD, parameter set or prefix SEI, or at a picture's first
/// slice, once the current one holds a slice.
fn access_units(codec: Codec, data: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut aus = Vec::new();
    let mut cur: Vec<&[u8]> = Vec::new();
    let mut cur_has_vcl = false;
    for n in nal::split_annex_b(data) {
        let Some(t) = nal_type(codec, n) else {
            continue;
        };
        let vcl = is_vcl(codec, t);
        let opens = opens_access_unit(codec, t) || (vcl && starts_picture(codec, n));
        if opens && cur_has_vcl {
            aus.push(std::mem::take(&mut cur));
            cur_has_vcl = false;
        }
        cur.push(n);
        cur_has_vcl |= vcl;
    }
    if cur_has_vcl {
        aus.push(cur);
    }
    aus
}

/// One access unit of a clip.
#[derive(Debug, Clone)]
struct ClipFrame {
    data: Bytes,
    keyframe: bool,
}

/// An H.264 or H.265 elementary stream held in memory as access units, to
/// be sent in a loop.
///
/// Frame `n` (counted over all loops) has `pts = dts = n × 90000 / fps`, so
/// timestamps keep growing across loops: loop `k` adds `k` × [`duration`].
/// The clip must have no B-frames (decode order is taken as presentation
/// order). On load, access units before the first keyframe are dropped, and
/// keyframes that lack parameter sets (encoders may write them once per
/// stream, e.g. x265 without `repeat-headers=1`) get the latest ones seen
/// inserted, so every keyframe
/// is a random access point as [`Frame::keyframe`] promises.
///
/// [`duration`]: Clip::duration
#[derive(Debug, Clone)]
pub struct Clip {
    codec: Codec,
    fps: u32,
    frames: Vec<ClipFrame>,
}

impl Clip {
    /// Loads an Annex-B file. The codec is `codec`, else guessed from the
    /// extension (`.h264`/`.264`/`.avc`, `.h265`/`.265`/`.hevc`), else
    /// from the parameter sets in the data; `fps` defaults to
    /// [`DEFAULT_FPS`].
    pub fn load(path: &Path, codec: Option<Codec>, fps: Option<u32>) -> io::Result<Clip> {
        let data = read_bounded(path)?;
        let codec = codec
            .or_else(|| codec_from_extension(path))
            .or_else(|| sniff_codec(&data))
            .ok_or_else(|| invalid(format!("{}: cannot tell H.264 from H.265", path.display())))?;
        Clip::from_annex_b(&data, codec, fps.unwrap_or(DEFAULT_FPS))
            .map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// A clip from Annex-B bytes. Fails for a codec other than H.264/H.265,
    /// an `fps` outside 1..=1000, or data without a keyframe.
    pub fn from_annex_b(data: &[u8], codec: Codec, fps: u32) -> io::Result<Clip> {
        if !codec.is_video() {
            return Err(invalid(format!("{codec:?} is not a video codec")));
        }
        if !(1..=1000).contains(&fps) {
            return Err(invalid(format!("frame rate {fps} is not in 1..=1000")));
        }
        let mut frames = Vec::new();
        let mut params: Vec<&[u8]> = Vec::new();
        for au in access_units(codec, data) {
            let types: Vec<u8> = au.iter().filter_map(|n| nal_type(codec, n)).collect();
            let has_ps = types.iter().any(|t| is_parameter_set(codec, *t));
            if has_ps {
                params = au
                    .iter()
                    .copied()
                    .filter(|n| nal_type(codec, n).is_some_and(|t| is_parameter_set(codec, t)))
                    .collect();
            }
            let mut buf = BytesMut::new();
            let mut put = |n: &[u8]| {
                buf.extend_from_slice(&[0, 0, 0, 1]);
                buf.extend_from_slice(n);
            };
            let mut injected = false;
            let key = types.iter().any(|t| is_irap(codec, *t));
            let needs_params = key && !types.iter().any(|t| is_sps(codec, *t));
            for n in &au {
                let t = nal_type(codec, n).unwrap_or(0);
                if needs_params && !injected && !is_aud(codec, t) {
                    params.iter().for_each(|p| put(p));
                    injected = true;
                }
                put(n);
            }
            let data = buf.freeze();
            let keyframe = nal::is_keyframe(codec, &data);
            if frames.is_empty() && !keyframe {
                continue;
            }
            frames.push(ClipFrame { data, keyframe });
        }
        if frames.is_empty() {
            return Err(invalid("no keyframe in the stream"));
        }
        Ok(Clip { codec, fps, frames })
    }

    /// A clip of made-up access units with real NAL headers (AUD, parameter
    /// sets, IDR/IRAP and P slices of `frame_bytes` bytes, a keyframe every
    /// `gop` frames) that PS demuxers and the gateway handle like video but
    /// that no decoder can decode. For load tests without clip files.
    pub fn synthetic(
        codec: Codec,
        frames: usize,
        gop: usize,
        frame_bytes: usize,
        fps: u32,
    ) -> io::Result<Clip> {
        Clip::from_annex_b(
            &synthetic_annex_b(codec, frames, gop, frame_bytes),
            codec,
            fps,
        )
    }

    /// The same clip with every SPS cut after its first bytes: frames
    /// flow and keyframes are marked, but no decoder can start, as from a
    /// camera whose encoder is broken.
    pub fn with_broken_sps(&self) -> Clip {
        let codec = self.codec;
        let frames = self
            .frames
            .iter()
            .map(|f| {
                let mut buf = BytesMut::with_capacity(f.data.len());
                for n in nal::annex_b_units(&f.data) {
                    let t = nal_type(codec, n).unwrap_or(0);
                    buf.extend_from_slice(&[0, 0, 0, 1]);
                    let keep = if is_sps(codec, t) { 3 } else { n.len() };
                    buf.extend_from_slice(n.get(..keep).unwrap_or(n));
                }
                ClipFrame {
                    data: buf.freeze(),
                    keyframe: f.keyframe,
                }
            })
            .collect();
        Clip {
            codec,
            fps: self.fps,
            frames,
        }
    }

    /// The video codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Frames per second.
    pub fn fps(&self) -> u32 {
        self.fps
    }

    /// Access units in one pass of the clip (at least 1).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Always false: a clip holds at least one keyframe.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Keyframes in one pass.
    pub fn keyframes(&self) -> usize {
        self.frames.iter().filter(|f| f.keyframe).count()
    }

    /// The 90 kHz time of frame `n`, counted over all loops.
    pub fn pts_of(&self, n: u64) -> u64 {
        let t = u128::from(n) * u128::from(CLOCK_RATE) / u128::from(self.fps.max(1));
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// One pass of the clip, in 90 kHz units.
    pub fn duration(&self) -> u64 {
        self.pts_of(self.frames.len() as u64)
    }

    /// Frame `n` counted over all loops: access unit `n % len`, with
    /// `pts = dts = ` [`pts_of`](Clip::pts_of)`(n)`.
    pub fn frame_at(&self, n: u64) -> Option<Frame> {
        let len = self.frames.len() as u64;
        let f = self
            .frames
            .get(usize::try_from(n.checked_rem(len)?).ok()?)?;
        let pts = self.pts_of(n);
        Some(Frame {
            codec: self.codec,
            pts,
            dts: pts,
            keyframe: f.keyframe,
            data: f.data.clone(),
        })
    }

    /// The number (over all loops) of the frame to play media time `media`
    /// (90 kHz) from: the keyframe at or before frame `media × fps / 90000`,
    /// so a seek past [`duration`](Clip::duration) lands in a later loop.
    pub fn seek_frame(&self, media: u64) -> u64 {
        let fps = u128::from(self.fps.max(1));
        let mut n =
            u64::try_from(u128::from(media) * fps / u128::from(CLOCK_RATE)).unwrap_or(u64::MAX);
        // Integer rounding in pts_of: frame n + 1 may still be due by then.
        if self.pts_of(n.saturating_add(1)) <= media {
            n = n.saturating_add(1);
        }
        let len = self.frames.len() as u64;
        let i = n.checked_rem(len).unwrap_or(0);
        let upto = usize::try_from(i).unwrap_or(0);
        let key = self
            .frames
            .get(..=upto)
            .and_then(|f| f.iter().rposition(|f| f.keyframe))
            .unwrap_or(0);
        n - (i - key as u64)
    }

    /// Frames from number `first` on, looping for ever with continuous
    /// timestamps (take as many as needed).
    pub fn frames_at(&self, first: u64) -> impl Iterator<Item = Frame> + '_ {
        (first..).map_while(move |n| self.frame_at(n))
    }
}

fn codec_from_extension(path: &Path) -> Option<Codec> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "h264" | "264" | "avc" | "jsv" => Some(Codec::H264),
        "h265" | "265" | "hevc" | "bit" => Some(Codec::H265),
        _ => None,
    }
}

/// H.265 when a VPS/SPS/PPS header (0x40/0x42/0x44, layer 0, temporal id
/// 1) is found, H.264 when an SPS is.
fn sniff_codec(data: &[u8]) -> Option<Codec> {
    let mut h264 = false;
    for n in nal::split_annex_b(data).into_iter().take(64) {
        if let [0x40 | 0x42 | 0x44, 0x01, ..] = n {
            return Some(Codec::H265);
        }
        h264 |= nal::h264_type(n) == Some(7);
    }
    h264.then_some(Codec::H264)
}

fn synthetic_annex_b(codec: Codec, frames: usize, gop: usize, frame_bytes: usize) -> Vec<u8> {
    let gop = gop.max(1);
    let mut out = Vec::new();
    let mut nal = |header: &[u8], body_len: usize, seed: usize| {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(header);
        // Bytes 1..=251: never 0, so no start code can appear inside.
        out.extend((0..body_len).map(|i| ((i * 7 + seed) % 251 + 1) as u8));
    };
    for i in 0..frames {
        let key = i % gop == 0;
        match codec {
            Codec::H265 => {
                nal(&[0x46, 0x01, 0x50], 0, i);
                if key {
                    nal(&[0x40, 0x01, 0x0C], 8, 1);
                    nal(&[0x42, 0x01, 0x01], 12, 2);
                    nal(&[0x44, 0x01, 0xC1], 4, 3);
                    // IDR_W_RADL, first_slice_segment_in_pic_flag set.
                    nal(&[0x26, 0x01, 0xAF], frame_bytes, i);
                } else {
                    // TRAIL_R, first slice.
                    nal(&[0x02, 0x01, 0xD0], frame_bytes, i);
                }
            }
            _ => {
                nal(&[0x09, 0xF0], 0, i);
                if key {
                    nal(&[0x67, 0x42, 0xC0, 0x1E], 8, 1);
                    nal(&[0x68, 0xCE, 0x3C, 0x80], 0, 2);
                    // IDR slice, first_mb_in_slice 0.
                    nal(&[0x65, 0x88], frame_bytes, i);
                } else {
                    nal(&[0x41, 0x9A], frame_bytes, i);
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Foreign PS files
// ---------------------------------------------------------------------------

/// Where a timestamp sits in a unit, for the loop rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsField {
    /// MPEG-2 pack header SCR (6 bytes from here, base and extension).
    Scr2(usize),
    /// 5-byte PTS/DTS field, or the MPEG-1 pack header SCR (same layout).
    Ts5(usize),
}

impl TsField {
    fn shifted(self, by: usize) -> TsField {
        match self {
            TsField::Scr2(o) => TsField::Scr2(o.saturating_sub(by)),
            TsField::Ts5(o) => TsField::Ts5(o.saturating_sub(by)),
        }
    }
}

/// One unit of a PS file: a pack header or a video PES with a timestamp,
/// and what follows up to the next of either.
#[derive(Debug, Clone)]
struct PsUnit {
    data: Bytes,
    /// Media time from the first video timestamp (DTS deltas), 90 kHz.
    at: u64,
    /// RTP timestamp: the video PTS in force (the SCR before any).
    ts: u64,
    /// The next unit starts a frame (or this is the last unit).
    frame_end: bool,
    /// Starts a frame (holds a video PES with a PTS).
    frame_start: bool,
    /// Starts a keyframe: a seek target.
    key: bool,
    /// Frames ended in the pass before this unit.
    frame_no: u64,
    fields: Vec<TsField>,
}

/// A foreign MPEG-PS file (`ffmpeg -f vob`, GStreamer `mpegpsmux`, a
/// camera's recording), sent as it is, in units.
///
/// A unit starts at each pack header (`00 00 01 BA`, MPEG-2 or MPEG-1 form)
/// and at each video PES that carries a PTS, so one unit holds at most one
/// frame start: `mpegpsmux` writes a pack header only every ~100 kB (a dozen
/// frames), `ffmpeg -f vob` one every 2048 bytes (a frame spans several).
/// A unit with a video PTS is due at its DTS (PTS without DTS) relative to
/// the first; the units after it up to the next such unit go right after
/// it. Pacing by the SCR alone would send mpegpsmux files in half-second
/// bursts. A jump of the DTS backwards or by over 10 s is a discontinuity:
/// no wait. The RTP timestamp is the video PTS in force, and the marker is
/// set at the end of the unit before the next frame start.
///
/// Bytes before the first pack header and program end codes
/// (`00 00 01 B9`) are dropped; bytes that do not parse as PS packets pass
/// through unchanged with the unit they are found in.
///
/// Seeking ([`StreamControl::Seek`]) goes to the last keyframe unit at or
/// before the position (the video codec is sniffed from the parameter
/// sets; if that fails, or no keyframe precedes the position in its pass,
/// the last frame start at or before it).
///
/// Looping: pass `k` adds `k` × [`period`](PsFile::period) to every SCR,
/// PTS and DTS, rewritten in place in the pack and PES headers (MPEG-2 and
/// MPEG-1 syntax), so the receiver sees monotone time. The period is the
/// file's PTS/DTS span plus the smallest video frame interval (more if the
/// SCR span is longer); the seam can show a gap of up to one frame. Timestamps inside
/// the elementary streams (SEI timing) are not touched.
#[derive(Debug, Clone)]
pub struct PsFile {
    units: Vec<PsUnit>,
    period: u64,
    /// Frames in one pass.
    frames: u64,
}

fn be16(d: &[u8], at: usize) -> Option<usize> {
    match (d.get(at), d.get(at + 1)) {
        (Some(a), Some(b)) => Some(usize::from(*a) << 8 | usize::from(*b)),
        _ => None,
    }
}

fn read_scr2(d: &[u8], at: usize) -> Option<u64> {
    match d.get(at..at + 5)? {
        [a, b, c, e, f] => Some(
            u64::from(a >> 3 & 0x07) << 30
                | u64::from(a & 0x03) << 28
                | u64::from(*b) << 20
                | u64::from(c >> 3 & 0x1F) << 15
                | u64::from(c & 0x03) << 13
                | u64::from(*e) << 5
                | u64::from(f >> 3 & 0x1F),
        ),
        _ => None,
    }
}

fn write_scr2(d: &mut [u8], at: usize, scr: u64) {
    let scr = scr & TS_MASK;
    if let Some([a, b, c, e, f, _]) = d.get_mut(at..at + 6) {
        // The two top extension bits in `f` and the byte after are kept.
        *a = 0x40 | ((scr >> 30) as u8 & 0x07) << 3 | 0x04 | ((scr >> 28) as u8 & 0x03);
        *b = (scr >> 20) as u8;
        *c = ((scr >> 15) as u8 & 0x1F) << 3 | 0x04 | ((scr >> 13) as u8 & 0x03);
        *e = (scr >> 5) as u8;
        *f = (scr as u8 & 0x1F) << 3 | 0x04 | (*f & 0x03);
    }
}

fn read_field(d: &[u8], f: TsField) -> Option<u64> {
    match f {
        TsField::Scr2(at) => read_scr2(d, at),
        TsField::Ts5(at) => d.get(at..).and_then(pes::read_ts),
    }
}

/// Offsets of the PTS and DTS fields of the PES at `q` (MPEG-2 or MPEG-1
/// header syntax) that end before `end`, and where its header ends.
fn pes_fields(d: &[u8], q: usize, end: usize) -> (Vec<usize>, Option<usize>) {
    let mut out = Vec::new();
    let Some(&b6) = d.get(q + 6) else {
        return (out, None);
    };
    let header_end;
    if b6 & 0xC0 == 0x80 {
        let (Some(&flags), Some(&hdl)) = (d.get(q + 7), d.get(q + 8)) else {
            return (out, None);
        };
        header_end = q + 9 + usize::from(hdl);
        let n = match flags >> 6 {
            2 if hdl >= 5 => 1,
            3 if hdl >= 10 => 2,
            _ => 0,
        };
        out.extend((0..n).map(|i| q + 9 + 5 * i));
    } else {
        let mut i = q + 6;
        while d.get(i) == Some(&0xFF) && i < q + 6 + 16 {
            i += 1;
        }
        if d.get(i).is_some_and(|b| b & 0xC0 == 0x40) {
            i += 2;
        }
        let Some(&b) = d.get(i) else {
            return (out, None);
        };
        let n = match b >> 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        };
        out.extend((0..n).map(|k| i + 5 * k));
        header_end = i + if b == 0x0F { 1 } else { 5 * n };
    }
    out.retain(|at| at + 5 <= end.min(header_end));
    (out, Some(header_end))
}

fn is_pes_with_ts(id: u8) -> bool {
    id == 0xBD || (0xC0..=0xEF).contains(&id)
}

fn is_video_id(id: u8) -> bool {
    (0xE0..=0xEF).contains(&id)
}

/// Start codes a resync after garbage stops at (as the demuxer's).
fn is_resync_id(id: u8) -> bool {
    matches!(id, 0xBA..=0xBC) || (0xC0..=0xEF).contains(&id)
}

/// One syntactic element of a PS stream.
#[derive(Debug, Default)]
struct Element {
    start: usize,
    end: usize,
    /// A pack header: starts a unit.
    pack: bool,
    /// A program end code: dropped, and ends the unit.
    end_code: bool,
    /// Video PTS and DTS (DTS = PTS when absent), for a video PES with one.
    video_ts: Option<(u64, u64)>,
    /// SCR of a pack header.
    scr: Option<u64>,
    /// Every PTS/DTS value (any stream).
    ts: Vec<u64>,
    fields: Vec<TsField>,
}

/// The element at `pos` (a start code, or garbage up to the next one).
fn element(d: &[u8], pos: usize) -> Element {
    let mut e = Element {
        start: pos,
        end: d.len(),
        ..Element::default()
    };
    let garbage = |mut e: Element, from: usize| {
        e.end = pes::find_start(d, from, is_resync_id).unwrap_or(d.len());
        e
    };
    let id = match d.get(pos..pos + 4) {
        Some([0, 0, 1, id]) if *id >= 0xB9 => *id,
        Some(_) => return garbage(e, pos + 1),
        None => return e,
    };
    match id {
        0xB9 => {
            e.end = pos + 4;
            e.end_code = true;
        }
        0xBA => match d.get(pos + 4) {
            Some(b) if b >> 6 == 1 => {
                e.pack = true;
                e.scr = read_scr2(d, pos + 4);
                e.fields.push(TsField::Scr2(pos + 4));
                e.end = match d.get(pos + 13) {
                    Some(st) => (pos + 14 + usize::from(st & 7)).min(d.len()),
                    None => d.len(),
                };
            }
            Some(b) if b >> 4 == 2 => {
                e.pack = true;
                e.scr = d.get(pos + 4..).and_then(pes::read_ts);
                e.fields.push(TsField::Ts5(pos + 4));
                e.end = (pos + 12).min(d.len());
            }
            _ => return garbage(e, pos + 4),
        },
        _ => {
            let Some(len) = be16(d, pos + 4) else {
                return e;
            };
            e.end = (pos + 6 + len).min(d.len());
            if is_pes_with_ts(id) {
                let bound = if len == 0 { d.len() } else { e.end };
                let (fields, header_end) = pes_fields(d, pos, bound);
                let values: Vec<u64> = fields
                    .iter()
                    .filter_map(|at| d.get(*at..).and_then(pes::read_ts))
                    .collect();
                if is_video_id(id) {
                    if let Some(&pts) = values.first() {
                        e.video_ts = Some((pts, values.get(1).copied().unwrap_or(pts)));
                    }
                }
                e.ts = values;
                e.fields = fields.into_iter().map(TsField::Ts5).collect();
                if len == 0 {
                    // Unbounded PES: its payload runs to the next PS start code.
                    let from = header_end.unwrap_or(pos + 6).min(d.len());
                    e.end = pes::find_start(d, from, |id| id >= 0xB9).unwrap_or(d.len());
                }
            }
        }
    }
    e
}

/// `d` (one unit) without the flag bytes of its MPEG-2 video PES headers,
/// and `fields` moved to match (those inside a damaged header dropped).
fn strip_pes_flags(d: &[u8], fields: &[TsField]) -> (Bytes, Vec<TsField>) {
    let mut out = BytesMut::with_capacity(d.len());
    let mut kept = Vec::with_capacity(fields.len());
    let mut pos = 0;
    while pos < d.len() {
        let e = element(d, pos);
        let end = e.end.max(pos + 1).min(d.len());
        let id = d.get(pos + 3).copied().unwrap_or(0);
        let mpeg2 = d.get(pos + 6).is_some_and(|b| b & 0xC0 == 0x80);
        let header = d.get(pos..pos + 6);
        // Where this element's bytes land in `out`, relative to `d`.
        let shift = out.len() as isize - pos as isize;
        let inside = |f: &TsField| {
            let (TsField::Scr2(at) | TsField::Ts5(at)) = *f;
            (pos..end).contains(&at)
        };
        match (
            header,
            is_video_id(id) && mpeg2 && !e.pack && end >= pos + 8,
        ) {
            (Some([a, b, c, i, l0, l1]), true) => {
                let len = usize::from(*l0) << 8 | usize::from(*l1);
                out.extend_from_slice(&[*a, *b, *c, *i]);
                // 0 (unbounded) stays 0.
                out.extend_from_slice(&(len.saturating_sub(2) as u16).to_be_bytes());
                out.extend_from_slice(d.get(pos + 8..end).unwrap_or_default());
            }
            _ => {
                out.extend_from_slice(d.get(pos..end).unwrap_or_default());
                kept.extend(fields.iter().filter(|f| inside(f)).map(|f| match *f {
                    TsField::Scr2(at) => TsField::Scr2(at.saturating_add_signed(shift)),
                    TsField::Ts5(at) => TsField::Ts5(at.saturating_add_signed(shift)),
                }));
            }
        }
        pos = end;
    }
    (out.freeze(), kept)
}

/// Smallest positive difference between sorted distinct values.
fn min_step(values: &mut Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.dedup();
    values
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some(b - a),
            _ => None,
        })
        .min()
}

/// Wrapped 33-bit difference `b - a`, `None` when negative.
fn forward(a: u64, b: u64) -> Option<u64> {
    let d = b.wrapping_sub(a) & TS_MASK;
    (d < 1 << 32).then_some(d)
}

/// `max - min` of 33-bit values that do not wrap; 0 when they seem to.
fn span(v: &[u64]) -> u64 {
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if hi - lo < 1 << 32 => hi - lo,
        _ => 0,
    }
}

/// A unit being gathered.
#[derive(Default)]
struct Gather {
    start: usize,
    end: usize,
    video_ts: Option<(u64, u64)>,
    scr: Option<u64>,
    fields: Vec<TsField>,
}

impl PsFile {
    /// Loads a PS file (`.ps`, `.vob`, `.mpg`).
    pub fn load(path: &Path) -> io::Result<PsFile> {
        let data = read_bounded(path)?;
        PsFile::from_bytes(Bytes::from(data))
            .map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Cuts PS bytes into units. Fails without a pack header or without a
    /// video PES that has a PTS (nothing to pace by: a GStreamer pipeline
    /// from a raw `.h264` file writes such files, see the module docs).
    pub fn from_bytes(data: Bytes) -> io::Result<PsFile> {
        let d = data.as_ref();
        let Some(mut pos) = pes::find_start(d, 0, |id| id == 0xBA) else {
            return Err(invalid("no MPEG-PS pack header (00 00 01 BA)"));
        };
        let mut gathered: Vec<Gather> = Vec::new();
        let mut cur: Option<Gather> = None;
        let (mut all_ts, mut scrs) = (Vec::new(), Vec::new());
        while pos < d.len() {
            let e = element(d, pos);
            // Always progress, whatever the element claims.
            pos = e.end.max(pos + 1);
            all_ts.extend_from_slice(&e.ts);
            scrs.extend(e.scr);
            if e.end_code {
                gathered.extend(cur.take());
                continue;
            }
            let cut = e.pack
                || (e.video_ts.is_some() && cur.as_ref().is_some_and(|g| g.video_ts.is_some()));
            if cut {
                gathered.extend(cur.take());
            }
            let g = cur.get_or_insert_with(|| Gather {
                start: e.start,
                ..Gather::default()
            });
            g.end = pos.min(d.len());
            g.video_ts = g.video_ts.or(e.video_ts);
            g.scr = g.scr.or(e.scr);
            g.fields.extend(e.fields.iter().map(|f| f.shifted(g.start)));
        }
        gathered.extend(cur);

        let mut units: Vec<PsUnit> = Vec::with_capacity(gathered.len());
        let (mut at, mut prev_dts, mut pts_in_force) = (0u64, None::<u64>, None::<u64>);
        let mut video_dts = Vec::new();
        // (starts a frame, belongs to a frame) per unit.
        let mut frame_info = Vec::with_capacity(gathered.len());
        let codec = sniff_codec(d.get(..d.len().min(1 << 20)).unwrap_or(d));
        for g in gathered {
            let unit_data = data.slice(g.start..g.end);
            let key =
                g.video_ts.is_some() && codec.is_some_and(|c| nal::is_keyframe(c, &unit_data));
            if let Some((pts, dts)) = g.video_ts {
                if let Some(p) = prev_dts {
                    at += forward(p, dts)
                        .filter(|s| *s <= 10 * CLOCK_RATE)
                        .unwrap_or(0);
                }
                prev_dts = Some(dts);
                pts_in_force = Some(pts);
                video_dts.push(dts);
            }
            frame_info.push((g.video_ts.is_some(), pts_in_force.is_some()));
            units.push(PsUnit {
                data: unit_data,
                at,
                ts: pts_in_force.or(g.scr).unwrap_or(0),
                frame_end: true,
                frame_start: g.video_ts.is_some(),
                key,
                frame_no: 0,
                fields: g.fields,
            });
        }
        if video_dts.is_empty() {
            return Err(invalid(
                "no video PES with a PTS: nothing to pace the stream by",
            ));
        }
        let next_starts = frame_info.iter().skip(1).map(|f| Some(f.0)).chain([None]);
        let mut frame_no = 0;
        for ((u, (_, in_frame)), next) in units.iter_mut().zip(&frame_info).zip(next_starts) {
            u.frame_end = *in_frame && next.is_none_or(|s| s);
            u.frame_no = frame_no;
            frame_no += u64::from(u.frame_end);
        }
        let step = min_step(&mut video_dts).unwrap_or(CLOCK_RATE / u64::from(DEFAULT_FPS));
        // Next pass's first timestamps one frame after this pass's last, and
        // its first SCR after this pass's last.
        let period = (span(&all_ts).max(at) + step).max(span(&scrs) + 1);
        Ok(PsFile {
            units,
            period,
            frames: frame_no,
        })
    }

    /// The same file with the two flag bytes after PES_packet_length
    /// removed from every MPEG-2 video PES header (and the length cut by
    /// two), as a broken device might send it: a test of how a receiver
    /// names a PS it cannot read. Pacing stays that of the intact file;
    /// the PTS/DTS of the damaged headers are no longer rewritten on loops.
    pub fn without_pes_flags(&self) -> PsFile {
        let units = self
            .units
            .iter()
            .map(|u| {
                let (data, fields) = strip_pes_flags(&u.data, &u.fields);
                PsUnit {
                    data,
                    fields,
                    ..u.clone()
                }
            })
            .collect();
        PsFile {
            units,
            ..self.clone()
        }
    }

    /// Units (pack or frame starts) in one pass.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Always false: a PS file holds at least one unit.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Frames (video PES with a PTS) in one pass.
    pub fn frames(&self) -> usize {
        self.units.iter().filter(|p| p.frame_end).count()
    }

    /// The loop period: what each pass adds to the timestamps, 90 kHz.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Unit `n` counted over all loops, timestamps shifted for its pass.
    fn unit_at(&self, n: u64) -> Option<Unit> {
        let len = self.units.len() as u64;
        let pass = n.checked_div(len)?;
        let p = self.units.get(usize::try_from(n % len).ok()?)?;
        let offset = pass.wrapping_mul(self.period);
        let data = if offset & TS_MASK == 0 {
            p.data.clone()
        } else {
            let mut b = BytesMut::from(p.data.as_ref());
            for f in &p.fields {
                if let Some(v) = read_field(&b, *f) {
                    match f {
                        TsField::Scr2(at) => write_scr2(&mut b, *at, v.wrapping_add(offset)),
                        TsField::Ts5(at) => pes::rewrite_ts(&mut b, *at, v.wrapping_add(offset)),
                    }
                }
            }
            b.freeze()
        };
        Some(Unit {
            data,
            media: offset.saturating_add(p.at),
            rtp_ts: (p.ts.wrapping_add(offset) & TS_MASK) as u32,
            frame_end: p.frame_end,
            frame_no: pass.saturating_mul(self.frames).saturating_add(p.frame_no),
        })
    }

    /// The number (over all loops) of the unit to play media time `media`
    /// from: the last keyframe unit at or before it in its pass, else the
    /// last frame start at or before it, else the pass's first unit.
    fn seek_unit(&self, media: u64) -> u64 {
        let len = self.units.len() as u64;
        let pass = media.checked_div(self.period).unwrap_or(0);
        let within = media.checked_rem(self.period).unwrap_or(0);
        let upto = self.units.partition_point(|u| u.at <= within);
        let before = self.units.get(..upto).unwrap_or_default();
        let i = before
            .iter()
            .rposition(|u| u.key)
            .or_else(|| before.iter().rposition(|u| u.frame_start))
            .unwrap_or(0);
        pass.saturating_mul(len).saturating_add(i as u64)
    }
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

/// What to send.
#[derive(Debug, Clone)]
pub enum Source {
    /// An elementary stream clip, muxed to PS per frame.
    Clip(Arc<Clip>),
    /// A foreign PS file, sent as it is.
    Ps(Arc<PsFile>),
}

impl Source {
    /// Loads a file: `.ps`, `.vob`, `.mpg`, `.mpeg` as a [`PsFile`], anything
    /// else as a [`Clip`] (see [`Clip::load`] for `codec` and `fps`).
    pub fn load(path: &Path, codec: Option<Codec>, fps: Option<u32>) -> io::Result<Source> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("ps" | "vob" | "mpg" | "mpeg") => Ok(Source::Ps(Arc::new(PsFile::load(path)?))),
            _ => Ok(Source::Clip(Arc::new(Clip::load(path, codec, fps)?))),
        }
    }

    /// A clip's [`Clip::with_broken_sps`]; a PS file is sent as it is, so
    /// an error.
    pub fn with_broken_sps(&self) -> io::Result<Source> {
        match self {
            Source::Clip(c) => Ok(Source::Clip(Arc::new(c.with_broken_sps()))),
            Source::Ps(_) => Err(invalid(
                "only an Annex-B clip (.h264, .h265) can have its SPS broken",
            )),
        }
    }

    /// A PS file's [`PsFile::without_pes_flags`]. A clip is muxed as it is
    /// sent, by our own muxer, so there is nothing to damage: an error.
    pub fn without_pes_flags(&self) -> io::Result<Source> {
        match self {
            Source::Ps(p) => Ok(Source::Ps(Arc::new(p.without_pes_flags()))),
            Source::Clip(_) => Err(invalid(
                "PES flags can only be stripped from a PS file (.ps, .vob)",
            )),
        }
    }
}

/// Where to send.
#[derive(Debug)]
pub enum MediaDest {
    /// RTP over UDP to `to`, from an ephemeral port (on 127.0.0.1 when `to`
    /// is a loopback address, else on the unspecified address).
    Udp {
        /// The receiver (the `c=`/`m=` address of the SDP offer).
        to: SocketAddr,
    },
    /// RTP over UDP from a socket the caller bound (a fixed source port).
    UdpFrom {
        /// The socket to send from.
        socket: UdpSocket,
        /// The receiver.
        to: SocketAddr,
    },
    /// RTP over TCP, RFC 4571 framing, connecting to `to` (the sender is
    /// the active side, SDP `a=setup:active`).
    TcpActive {
        /// The receiver's listening address.
        to: SocketAddr,
    },
    /// RTP over TCP, RFC 4571 framing, on the first connection accepted on
    /// `listener` (the sender is passive, SDP `a=setup:passive`).
    TcpPassive {
        /// Where the receiver connects.
        listener: TcpListener,
    },
}

/// Playback state, set by the owner of the [`watch::Sender`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamControl {
    /// Send in real time × `scale` (2.0 twice as fast). A scale that is not
    /// finite and positive means 1; it is clamped to 1/256..=256.
    Playing {
        /// Playback speed.
        scale: f64,
    },
    /// Hold the clock: nothing is sent, and on `Playing` sending resumes
    /// where it stopped, timestamps continuing without a gap.
    Paused,
    /// End the stream ([`StreamEnd::Stopped`]).
    Stopped,
    /// Jump to `position` from the start of the media and play from there
    /// at `scale` (like `Playing`), from playing or paused: MANSRTSP
    /// `PLAY` with `Range: npt=<position>-`.
    ///
    /// Sending resumes at the unit for that media time: for a [`Clip`],
    /// the keyframe at or before frame `position × fps` (a position past
    /// the clip's end lands in a later loop, as if the recording were the
    /// clip looped); for a [`PsFile`], the keyframe unit at or before it
    /// (see there). Timestamps jump to that unit's media time (for a clip
    /// its PTS is the position, 33-bit wrapped), the clock restarts there
    /// without catching up, and a [`Limit`] stays a media position: after
    /// a seek to 4 s of an 8 s range the stream ends at media time 8 s.
    /// Positions are capped at [`MAX_SEEK`].
    ///
    /// Like every value, a seek is only seen if the stream reads it before
    /// the next value replaces it (the channel keeps the latest): leave a
    /// moment between a seek and a following control.
    Seek {
        /// Where to play from, from the start of the media.
        position: Duration,
        /// Playback speed from there, as for `Playing`.
        scale: f64,
    },
}

impl Default for StreamControl {
    fn default() -> Self {
        StreamControl::Playing { scale: 1.0 }
    }
}

/// When a playback ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// After this much media time (at scale 2 it passes in half the time):
    /// at this media position, counted from the start of the media, so
    /// seeks move it nearer or further.
    Duration(Duration),
    /// After this many frames (for a [`PsFile`], video PES with a PTS):
    /// before the frame with this number, counted from the start of the
    /// media (seeks move it as they do `Duration`).
    Frames(u64),
}

/// Stream parameters besides source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// The RTP SSRC (the SDP `y=` value).
    pub ssrc: u32,
    /// `None`: live, loop for ever. `Some`: a playback or download that ends
    /// with [`StreamEnd::EndOfFile`] (looping the source as needed).
    pub limit: Option<Limit>,
    /// RTP payload type ([`PAYLOAD_TYPE`]).
    pub payload_type: u8,
    /// Largest RTP payload ([`MAX_RTP_PAYLOAD`]).
    pub max_payload: usize,
    /// The frame (counted over all loops) a [`Clip`] starts at; 0 is the
    /// clip's first keyframe. A camera's encoder runs before anyone asks,
    /// so its live stream starts wherever its GOP happens to be.
    pub first_frame: u64,
}

impl StreamOptions {
    /// Live stream options: no limit, payload type 96, 1400-byte payloads.
    pub fn new(ssrc: u32) -> StreamOptions {
        StreamOptions {
            ssrc,
            limit: None,
            payload_type: PAYLOAD_TYPE,
            max_payload: MAX_RTP_PAYLOAD,
            first_frame: 0,
        }
    }

    /// The same with a playback limit.
    pub fn with_limit(self, limit: Limit) -> StreamOptions {
        StreamOptions {
            limit: Some(limit),
            ..self
        }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The [`Limit`] was reached, and its time has passed: a playback
    /// device now sends its MediaStatus 121 NOTIFY.
    EndOfFile,
    /// [`StreamControl::Stopped`] was set, or the control sender dropped.
    Stopped,
    /// The TCP peer closed or reset the connection.
    PeerClosed,
}

/// What [`stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamReport {
    /// Why it ended.
    pub end: StreamEnd,
    /// Frames sent (for a [`PsFile`], video PES with a PTS).
    pub frames: u64,
    /// RTP packets sent.
    pub packets: u64,
    /// RTP bytes sent (headers included, TCP framing not).
    pub bytes: u64,
}

/// One unit to send: a muxed clip frame or a [`PsFile`] unit.
#[derive(Debug)]
struct Unit {
    data: Bytes,
    /// When it is due, 90 kHz from the start of the stream.
    media: u64,
    rtp_ts: u32,
    frame_end: bool,
    /// Frames before this unit counted from the start of the media (for a
    /// [`PsFile`], frame ends): the position in frames for [`Limit::Frames`].
    frame_no: u64,
}

struct Units {
    source: Source,
    next: u64,
    muxer: PsMuxer,
}

impl Units {
    fn new(source: Source) -> Units {
        let video = match &source {
            Source::Clip(c) => Some(c.codec()),
            Source::Ps(_) => None,
        };
        Units {
            source,
            next: 0,
            muxer: PsMuxer::new(video, None),
        }
    }

    fn next(&mut self) -> Option<Unit> {
        let n = self.next;
        self.next = self.next.saturating_add(1);
        match &self.source {
            Source::Clip(c) => {
                let f = c.frame_at(n)?;
                Some(Unit {
                    data: self.muxer.mux(&f),
                    media: f.pts,
                    rtp_ts: (f.pts & TS_MASK) as u32,
                    frame_end: true,
                    frame_no: n,
                })
            }
            Source::Ps(p) => p.unit_at(n),
        }
    }

    /// Moves to the unit to play media time `media` from (see
    /// [`Clip::seek_frame`] and [`PsFile`]); returns that unit's media time.
    /// Start a [`Clip`] at frame `n`, keyframe or not; its media time.
    /// `None` for a [`PsFile`] (it starts at its first unit).
    fn start_at(&mut self, n: u64) -> Option<u64> {
        match &self.source {
            Source::Clip(c) => {
                self.next = n;
                Some(c.pts_of(n))
            }
            Source::Ps(_) => None,
        }
    }

    fn seek(&mut self, media: u64) -> u64 {
        self.next = match &self.source {
            Source::Clip(c) => c.seek_frame(media),
            Source::Ps(p) => p.seek_unit(media),
        };
        match &self.source {
            Source::Clip(c) => c.pts_of(self.next),
            Source::Ps(p) => p.unit_at(self.next).map_or(media, |u| u.media),
        }
    }
}

enum Sink {
    Udp { socket: UdpSocket, to: SocketAddr },
    Tcp(TcpStream),
}

fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

impl Sink {
    /// Sends one unit's packets. `Ok(false)`: the TCP peer is gone.
    async fn send(&mut self, packets: &[Bytes]) -> io::Result<bool> {
        match self {
            Sink::Udp { socket, to } => {
                for p in packets {
                    match socket.send_to(p, *to).await {
                        Ok(_) => {}
                        // Nobody listening (yet): a camera keeps sending.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
            Sink::Tcp(s) => {
                let mut buf = BytesMut::new();
                for p in packets {
                    let framed = frame_rfc4571(p)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    buf.extend_from_slice(&framed);
                }
                match s.write_all(&buf).await {
                    Ok(()) => Ok(true),
                    Err(e) if peer_gone(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Maps media time to wall time: `media` is due at `wall`, and later media
/// `scale` times faster than real time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: Instant,
    media: u64,
    scale: f64,
}

fn add(i: Instant, d: Duration) -> Instant {
    i.checked_add(d)
        .or_else(|| i.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(i)
}

impl Clock {
    fn due(&self, media: u64) -> Instant {
        let ticks = media.saturating_sub(self.media) as f64;
        let secs = ticks / CLOCK_RATE as f64 / self.scale;
        add(
            self.wall,
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
        )
    }

    fn media_at(&self, now: Instant) -> u64 {
        let secs = now.saturating_duration_since(self.wall).as_secs_f64();
        let ticks = secs * self.scale * CLOCK_RATE as f64;
        // Float to int casts saturate.
        self.media.saturating_add(ticks as u64)
    }
}

fn sane_scale(scale: f64) -> f64 {
    if scale.is_finite() && scale > 0.0 {
        scale.clamp(1.0 / 256.0, 256.0)
    } else {
        1.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Playing,
    Paused,
    Stopped,
}

/// The pacing state: a clock that runs while playing and holds while paused.
struct Pacer {
    control: watch::Receiver<StreamControl>,
    clock: Clock,
    state: State,
    /// Media position held while paused.
    held: u64,
    /// A seek not yet carried out, in 90 kHz ticks.
    seek: Option<u64>,
}

enum Gate {
    Go,
    Stop,
    /// Reposition to this media time, then call [`Pacer::seeked`].
    Seek(u64),
}

impl Pacer {
    fn new(mut control: watch::Receiver<StreamControl>) -> Pacer {
        let first = *control.borrow_and_update();
        let mut p = Pacer {
            control,
            clock: Clock {
                wall: Instant::now(),
                media: 0,
                scale: 1.0,
            },
            state: State::Paused,
            held: 0,
            seek: None,
        };
        p.apply(first, Instant::now(), 0);
        p
    }

    /// Takes a new control value; `next` is the media time of the next unit
    /// (the position never runs past it, so a resume sends it first).
    fn apply(&mut self, c: StreamControl, now: Instant, next: u64) {
        let pos = match self.state {
            State::Playing => self.clock.media_at(now).min(next).max(self.clock.media),
            _ => self.held,
        };
        match c {
            StreamControl::Playing { scale } => {
                self.clock = Clock {
                    wall: now,
                    media: pos,
                    scale: sane_scale(scale),
                };
                self.state = State::Playing;
            }
            StreamControl::Paused => {
                self.held = pos;
                self.state = State::Paused;
            }
            StreamControl::Stopped => self.state = State::Stopped,
            StreamControl::Seek { position, scale } => {
                self.seek = Some(ticks(position.min(MAX_SEEK)));
                self.clock = Clock {
                    wall: now,
                    media: pos,
                    scale: sane_scale(scale),
                };
                self.state = State::Playing;
            }
        }
    }

    /// The seek was carried out: the next unit is at `media`, due now (or
    /// held there, if paused meanwhile).
    fn seeked(&mut self, media: u64) {
        self.clock = Clock {
            wall: Instant::now(),
            media,
            scale: self.clock.scale,
        };
        self.held = media;
    }

    /// Waits until `media` is due, following control changes meanwhile.
    async fn wait(&mut self, media: u64) -> Gate {
        loop {
            match self.control.has_changed() {
                Err(_) => return Gate::Stop,
                Ok(true) => {
                    let c = *self.control.borrow_and_update();
                    self.apply(c, Instant::now(), media);
                }
                Ok(false) => {}
            }
            if self.state != State::Stopped {
                if let Some(to) = self.seek.take() {
                    return Gate::Seek(to);
                }
            }
            match self.state {
                State::Stopped => return Gate::Stop,
                State::Paused => {
                    if self.control.changed().await.is_err() {
                        return Gate::Stop;
                    }
                    let c = *self.control.borrow_and_update();
                    self.apply(c, Instant::now(), media);
                }
                State::Playing => {
                    let now = Instant::now();
                    let due = self.clock.due(media);
                    if due <= now {
                        if now.saturating_duration_since(due) > MAX_LAG {
                            self.clock = Clock {
                                wall: now,
                                media,
                                scale: self.clock.scale,
                            };
                        }
                        return Gate::Go;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => return Gate::Go,
                        r = self.control.changed() => {
                            if r.is_err() {
                                return Gate::Stop;
                            }
                            let c = *self.control.borrow_and_update();
                            self.apply(c, Instant::now(), media);
                        }
                    }
                }
            }
        }
    }

    /// Follows control changes until stopped (or the sender drops); the
    /// clock is not running meanwhile (it starts once connected).
    async fn stopped(&mut self) {
        while self.state != State::Stopped {
            if self.control.changed().await.is_err() {
                return;
            }
            let c = *self.control.borrow_and_update();
            self.apply(c, Instant::now(), 0);
        }
    }
}

async fn open(dest: MediaDest, pacer: &mut Pacer) -> io::Result<Option<Sink>> {
    Ok(Some(match dest {
        MediaDest::Udp { to } => {
            let local: SocketAddr = match to {
                SocketAddr::V4(a) if a.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(a) if a.ip().is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            Sink::Udp {
                socket: UdpSocket::bind(local).await?,
                to,
            }
        }
        MediaDest::UdpFrom { socket, to } => Sink::Udp { socket, to },
        MediaDest::TcpActive { to } => {
            let s = tokio::select! {
                r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)) => r
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {to}")))??,
                _ = pacer.stopped() => return Ok(None),
            };
            s.set_nodelay(true)?;
            Sink::Tcp(s)
        }
        MediaDest::TcpPassive { listener } => {
            let s = tokio::select! {
                r = listener.accept() => r?.0,
                _ = pacer.stopped() => return Ok(None),
            };
            s.set_nodelay(true)?;
            Sink::Tcp(s)
        }
    }))
}

/// Repositions `units` for a seek to media time `to` and restarts the
/// clock there (the unit already taken is dropped).
fn seek(units: &mut Units, pacer: &mut Pacer, to: u64, ssrc: u32) {
    let at = units.seek(to);
    pacer.seeked(at);
    tracing::debug!(ssrc, to, at, "stream seeked");
}

/// Sends `source` to `dest` as RTP/PS until the limit, a stop or a closed
/// TCP peer.
///
/// Each unit (a clip frame muxed with [`PsMuxer`], or a [`PsFile`] unit) is sent
/// when due: its media time, divided by the scale, after the start, the
/// clock holding while paused. It is cut into RTP payloads of at most
/// `max_payload` bytes with consecutive sequence numbers (from 0), the
/// unit's 90 kHz timestamp (the frame PTS, wrapped to 32 bits), the marker
/// on a frame's last packet and `opts.ssrc`. Falling more than a second
/// behind (a slow TCP peer) moves the clock rather than bursting.
///
/// With a [`Limit`], the stream waits until the limit's media time is due
/// and returns [`StreamEnd::EndOfFile`]; the limit is a media position
/// ([`Limit::Frames`]: the frame number, counted from the start of the
/// media), so a [`StreamControl::Seek`] moves the end nearer or further.
/// The control is read at the start
/// (start paused by setting `Paused` first); dropping its sender stops the
/// stream. For [`MediaDest::TcpPassive`] and [`MediaDest::TcpActive`] the
/// clock starts once connected. Socket errors are returned, except UDP
/// "connection refused" (ignored) and a TCP peer closing
/// ([`StreamEnd::PeerClosed`]).
pub async fn stream(
    source: Source,
    dest: MediaDest,
    opts: StreamOptions,
    control: watch::Receiver<StreamControl>,
) -> io::Result<StreamReport> {
    let mut pacer = Pacer::new(control);
    let mut report = StreamReport {
        end: StreamEnd::Stopped,
        frames: 0,
        packets: 0,
        bytes: 0,
    };
    let Some(mut sink) = open(dest, &mut pacer).await? else {
        return Ok(report);
    };
    // Start the clock once connected.
    pacer.clock.wall = Instant::now();
    let limit_ticks = match opts.limit {
        Some(Limit::Duration(d)) => Some(ticks(d)),
        _ => None,
    };
    let frame_limit = match opts.limit {
        Some(Limit::Frames(n)) => Some(n),
        _ => None,
    };
    let mut units = Units::new(source);
    if opts.first_frame > 0 {
        if let Some(at) = units.start_at(opts.first_frame) {
            pacer.seeked(at);
        }
    }
    let mut seq: u16 = 0;
    tracing::debug!(ssrc = opts.ssrc, limit = ?opts.limit, "stream started");
    loop {
        let Some(unit) = units.next() else {
            report.end = StreamEnd::EndOfFile;
            return Ok(report);
        };
        let end_at = match (limit_ticks, frame_limit) {
            (Some(t), _) if unit.media >= t => Some(t),
            (_, Some(n)) if unit.frame_no >= n => Some(unit.media),
            _ => None,
        };
        if let Some(t) = end_at {
            match pacer.wait(t).await {
                Gate::Go => report.end = StreamEnd::EndOfFile,
                Gate::Stop => report.end = StreamEnd::Stopped,
                Gate::Seek(to) => {
                    seek(&mut units, &mut pacer, to, opts.ssrc);
                    continue;
                }
            }
            tracing::debug!(ssrc = opts.ssrc, ?report, "stream ended");
            return Ok(report);
        }
        match pacer.wait(unit.media).await {
            Gate::Go => {}
            Gate::Stop => {
                report.end = StreamEnd::Stopped;
                tracing::debug!(ssrc = opts.ssrc, ?report, "stream stopped");
                return Ok(report);
            }
            Gate::Seek(to) => {
                seek(&mut units, &mut pacer, to, opts.ssrc);
                continue;
            }
        }
        let payloads = ps::packetize(&unit.data, opts.max_payload);
        let last = payloads.len().saturating_sub(1);
        let packets: Vec<Bytes> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let p = RtpPacket {
                    marker: unit.frame_end && i == last,
                    payload_type: opts.payload_type,
                    sequence: seq,
                    timestamp: unit.rtp_ts,
                    ssrc: opts.ssrc,
                    csrc: Vec::new(),
                    payload,
                };
                seq = seq.wrapping_add(1);
                p.to_bytes()
            })
            .collect();
        if !sink.send(&packets).await? {
            report.end = StreamEnd::PeerClosed;
            tracing::debug!(ssrc = opts.ssrc, ?report, "stream peer closed");
            return Ok(report);
        }
        report.packets += packets.len() as u64;
        report.bytes += packets.iter().map(|p| p.len() as u64).sum::<u64>();
        if unit.frame_end {
            report.frames += 1;
        }
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
    use gbgate::media::ps::PsDemuxer;
    use gbgate::media::rtp::TcpDeframer;
    use tokio::io::AsyncReadExt;
    use tokio::task::JoinHandle;

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn splits_h264_access_units() {
        // No AUDs; SEI and parameter sets precede the IDR; the second
        // picture has two slices (first_mb_in_slice != 0 for the second).
        let data = annex_b(&[
            &[0x41, 0x9A, 1], // leading P before any keyframe: dropped
            &[0x06, 0x05, 2], // SEI
            &[0x67, 0x42, 3], // SPS
            &[0x68, 0xCE, 4], // PPS
            &[0x65, 0x88, 5], // IDR, first slice
            &[0x65, 0x40, 6], // IDR, second slice
            &[0x41, 0x9A, 7], // P
            &[0x41, 0x20, 8], // P, second slice
            &[0x0C, 0xFF],    // filler stays
            &[0x09, 0xF0],    // AUD
            &[0x41, 0x9A, 9], // P
            &[0x0A],          // end of sequence stays with it
        ]);
        let clip = Clip::from_annex_b(&data, Codec::H264, 25).unwrap();
        assert_eq!(clip.len(), 3);
        assert_eq!(clip.keyframes(), 1);
        let f: Vec<Frame> = clip.frames_at(0).take(3).collect();
        assert_eq!(
            f[0].data,
            annex_b(&[
                &[0x06, 0x05, 2],
                &[0x67, 0x42, 3],
                &[0x68, 0xCE, 4],
                &[0x65, 0x88, 5],
                &[0x65, 0x40, 6]
            ])
        );
        assert!(f[0].keyframe && !f[1].keyframe && !f[2].keyframe);
        assert_eq!(
            f[1].data,
            annex_b(&[&[0x41, 0x9A, 7], &[0x41, 0x20, 8], &[0x0C, 0xFF]])
        );
        assert_eq!(
            f[2].data,
            annex_b(&[&[0x09, 0xF0], &[0x41, 0x9A, 9], &[0x0A]])
        );
        assert_eq!(
            f.iter().map(|f| (f.pts, f.dts)).collect::<Vec<_>>(),
            vec![(0, 0), (3600, 3600), (7200, 7200)]
        );
    }

    #[test]
    fn splits_h265_and_inserts_parameter_sets() {
        let vps: &[u8] = &[0x40, 0x01, 0x0C];
        let sps: &[u8] = &[0x42, 0x01, 0x01];
        let pps: &[u8] = &[0x44, 0x01, 0xC1];
        let data = annex_b(&[
            &[0x46, 0x01, 0x50], // AUD
            vps,
            sps,
            pps,
            &[0x4E, 0x01, 0x05], // prefix SEI
            &[0x26, 0x01, 0xAF], // IDR_W_RADL first slice segment
            &[0x26, 0x01, 0x2F], // second slice segment
            &[0x50, 0x01, 0x05], // suffix SEI: stays
            &[0x02, 0x01, 0xD0], // TRAIL_R
            &[0x46, 0x01, 0x50], // AUD
            &[0x26, 0x01, 0xAF], // IDR without parameter sets
        ]);
        let clip = Clip::from_annex_b(&data, Codec::H265, 30).unwrap();
        assert_eq!(clip.len(), 3);
        assert_eq!(clip.keyframes(), 2);
        assert_eq!(clip.duration(), 9000);
        let f = clip.frame_at(2).unwrap();
        assert_eq!(
            f.data,
            annex_b(&[&[0x46, 0x01, 0x50], vps, sps, pps, &[0x26, 0x01, 0xAF]])
        );
        assert_eq!(
            clip.frame_at(1).unwrap().data,
            annex_b(&[&[0x02, 0x01, 0xD0]])
        );
        assert_eq!(clip.frame_at(0).unwrap().data.len(), 8 * 4 + 3 * 8);
        // Loop 2, frame 1: pts continues.
        assert_eq!(clip.frame_at(4).unwrap().pts, 12_000);
    }

    #[test]
    fn guesses_codec_and_rejects_bad_input() {
        let h265 = synthetic_annex_b(Codec::H265, 2, 1, 10);
        let h264 = synthetic_annex_b(Codec::H264, 2, 1, 10);
        assert_eq!(sniff_codec(&h265), Some(Codec::H265));
        assert_eq!(sniff_codec(&h264), Some(Codec::H264));
        assert_eq!(sniff_codec(b"junk"), None);
        assert_eq!(
            codec_from_extension(Path::new("/x/a.HEVC")),
            Some(Codec::H265)
        );
        assert_eq!(codec_from_extension(Path::new("a.264")), Some(Codec::H264));
        assert_eq!(codec_from_extension(Path::new("a")), None);
        assert!(Clip::from_annex_b(&annex_b(&[&[0x41, 0x9A]]), Codec::H264, 25).is_err());
        assert!(Clip::from_annex_b(&h264, Codec::H264, 0).is_err());
        assert!(Clip::from_annex_b(&h264, Codec::G711A, 25).is_err());
        assert!(Clip::from_annex_b(b"", Codec::H264, 25).is_err());
        let dir = std::env::temp_dir().join(format!("streamer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("clip.bin");
        std::fs::write(&p, &h265).unwrap();
        let c = Clip::load(&p, None, None).unwrap();
        assert_eq!((c.codec(), c.fps(), c.len()), (Codec::H265, DEFAULT_FPS, 2));
        assert!(matches!(Source::load(&p, None, Some(10)), Ok(Source::Clip(c)) if c.fps() == 10));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn synthetic(frames: usize, gop: usize) -> Arc<Clip> {
        Arc::new(Clip::synthetic(Codec::H264, frames, gop, 3000, 25).unwrap())
    }

    /// A PS file as our muxer writes it, with junk before the first pack and
    /// a program end code after the last.
    fn ps_file_bytes(clip: &Clip, n: u64) -> Vec<u8> {
        let mut m = PsMuxer::new(Some(clip.codec()), None);
        let mut out = vec![0x55, 0, 0, 1, 0xE0];
        for f in clip.frames_at(0).take(n as usize) {
            out.extend_from_slice(&m.mux(&f));
        }
        out.extend_from_slice(&[0, 0, 1, 0xB9]);
        out
    }

    fn demux(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
        }
        d.flush();
        d.drain(&mut out);
        out
    }

    #[test]
    fn ps_file_packs_and_loop_rewrite() {
        let clip = synthetic(5, 5);
        // 250 kB frames span several PES packets in one pack.
        let big = Clip::synthetic(Codec::H264, 2, 1, 150_000, 25).unwrap();
        for (clip, n) in [(&*clip, 5u64), (&big, 2)] {
            let ps = PsFile::from_bytes(Bytes::from(ps_file_bytes(clip, n))).unwrap();
            assert_eq!(ps.len(), n as usize);
            assert_eq!(ps.frames(), n as usize);
            assert_eq!(ps.period(), clip.duration());
            let units: Vec<Unit> = (0..3 * n).map(|i| ps.unit_at(i).unwrap()).collect();
            let chunks: Vec<&[u8]> = units.iter().map(|u| &u.data[..]).collect();
            let frames = demux(&chunks);
            let want: Vec<Frame> = clip.frames_at(0).take(3 * n as usize).collect();
            assert_eq!(frames, want);
            for (u, f) in units.iter().zip(&want) {
                assert_eq!(u.media, f.pts);
                assert_eq!(u.rtp_ts, f.pts as u32);
                assert!(u.frame_end);
                // The rewritten SCR equals the DTS, as the muxer wrote it.
                assert_eq!(read_scr2(&u.data, 4), Some(f.dts));
            }
        }
    }

    #[test]
    fn ps_file_without_pes_flags_keeps_pacing_but_cannot_be_read() {
        let clip = synthetic(5, 5);
        let ps = PsFile::from_bytes(Bytes::from(ps_file_bytes(&clip, 5))).unwrap();
        let bad = ps.without_pes_flags();
        assert_eq!((bad.len(), bad.period()), (ps.len(), ps.period()));
        let units: Vec<Unit> = (0..10).map(|i| bad.unit_at(i).unwrap()).collect();
        let good: Vec<Unit> = (0..10).map(|i| ps.unit_at(i).unwrap()).collect();
        for (b, g) in units.iter().zip(&good) {
            assert_eq!(
                (b.media, b.rtp_ts, b.frame_end),
                (g.media, g.rtp_ts, g.frame_end)
            );
            // Two bytes fewer per video PES; the pack SCR is still rewritten.
            let pes = g.data.windows(4).filter(|w| w == &[0, 0, 1, 0xE0]).count();
            assert_eq!(b.data.len() + 2 * pes, g.data.len());
            assert_eq!(read_scr2(&b.data, 4), read_scr2(&g.data, 4));
        }
        let mut d = PsDemuxer::new();
        for u in &units {
            d.push(&u.data);
        }
        d.flush();
        assert_eq!(d.next_frame(), None);
        assert_eq!(
            d.next_fault(),
            Some(ps::PsFault::MissingPesFlags { stream_id: 0xE0 })
        );
        let clip_source = Source::Clip(clip);
        assert!(clip_source.without_pes_flags().is_err());
    }

    #[test]
    fn ps_file_mpeg1_packs_unbounded_pes_and_garbage() {
        // MPEG-1 pack headers (SCR 3600·k), an unbounded video PES in the
        // second pack, MPEG-1 PES headers, padding, then garbage in pack 3.
        let mut d = Vec::new();
        let ts5 = |prefix: u8, t: u64| {
            let mut b = BytesMut::new();
            b.extend_from_slice(&[prefix << 4 | 1, 1, 1, 1, 1]);
            let mut v = b.to_vec();
            pes::rewrite_ts(&mut v, 0, t);
            v
        };
        let au = |k: u8| annex_b(&[&[0x65, 0x88, k, k]]);
        for k in 0..3u8 {
            let t = 3600 * u64::from(k) + 900;
            d.extend_from_slice(&[0, 0, 1, 0xBA]);
            d.extend_from_slice(&ts5(2, t - 900));
            d.extend_from_slice(&[0x80, 0x01, 0x01]);
            let payload = au(k + 1);
            d.extend_from_slice(&[0, 0, 1, 0xE0]);
            let len = if k == 1 { 0 } else { 5 + payload.len() };
            d.extend_from_slice(&(len as u16).to_be_bytes());
            d.extend_from_slice(&ts5(2, t));
            d.extend_from_slice(&payload);
            d.extend_from_slice(&[0, 0, 1, 0xBE, 0, 2, 0xFF, 0xFF]);
            if k == 2 {
                d.extend_from_slice(&[9, 9, 9, 9, 0, 0, 1, 0xE0, 0, 0]);
            }
        }
        let ps = PsFile::from_bytes(Bytes::from(d.clone())).unwrap();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps.period(), 3 * 3600);
        let u: Vec<Unit> = (0..6).map(|i| ps.unit_at(i).unwrap()).collect();
        assert_eq!(
            u.iter().map(|u| (u.media, u.rtp_ts)).collect::<Vec<_>>(),
            (0..6u64)
                .map(|k| (3600 * k, (3600 * k + 900) as u32))
                .collect::<Vec<_>>()
        );
        let concat: Vec<u8> = u.iter().flat_map(|u| u.data.to_vec()).collect();
        assert_eq!(concat.len(), 2 * d.len());
        assert_eq!(u[4].data.get(4..).and_then(pes::read_ts), Some(3600 * 4));
        let frames = demux(&[&concat]);
        let pts: Vec<u64> = frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, (0..6).map(|k| 3600 * k + 900).collect::<Vec<_>>());
        assert!(PsFile::from_bytes(Bytes::from_static(b"\0\0\x01\xE0no packs")).is_err());
    }

    /// An MPEG-2 pack header with SCR `scr`.
    fn pack(scr: u64) -> Vec<u8> {
        let mut v = vec![0, 0, 1, 0xBA, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xC3, 0xF8];
        write_scr2(&mut v, 4, scr);
        v
    }

    /// An MPEG-2 video PES, with a PTS (and DTS) or none.
    fn pes(ts: Option<(u64, u64)>, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x80, 0, 0];
        match ts {
            Some((p, d)) if p != d => {
                h = vec![0x80, 0xC0, 10, 0x31, 1, 1, 1, 1, 0x11, 1, 1, 1, 1];
                pes::rewrite_ts(&mut h, 3, p);
                pes::rewrite_ts(&mut h, 8, d);
            }
            Some((p, _)) => {
                h = vec![0x80, 0x80, 5, 0x21, 1, 1, 1, 1];
                pes::rewrite_ts(&mut h, 3, p);
            }
            None => {}
        }
        let mut v = vec![0, 0, 1, 0xE0];
        v.extend_from_slice(&((h.len() + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&h);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn ps_file_mpegpsmux_and_vob_layouts() {
        let clip = synthetic(6, 3);
        let frames: Vec<Frame> = clip.frames_at(0).take(6).collect();
        // mpegpsmux: a pack header every 4 frames, one PES per frame, PTS
        // one frame ahead of DTS, SCR lagging.
        let mut gst = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if i % 4 == 0 {
                gst.extend(pack(f.dts.saturating_sub(1800)));
            }
            gst.extend(pes(Some((f.pts + 3600, f.dts + 3600)), &f.data));
        }
        // VOB: every frame split over two packs, the second PES without PTS.
        let mut vob = Vec::new();
        for f in &frames {
            let (a, b) = f.data.split_at(f.data.len() / 2);
            vob.extend(pack(f.dts));
            vob.extend(pes(Some((f.pts + 7200, f.pts + 7200)), a));
            vob.extend(pack(f.dts + 1));
            vob.extend(pes(None, b));
        }
        for (bytes, units, shift) in [(gst, 6, 3600), (vob, 12, 7200)] {
            let ps = PsFile::from_bytes(Bytes::from(bytes)).unwrap();
            assert_eq!((ps.len(), ps.frames()), (units, 6));
            assert_eq!(ps.period(), clip.duration());
            let n = 2 * units as u64;
            let u: Vec<Unit> = (0..n).map(|i| ps.unit_at(i).unwrap()).collect();
            let per = units / 6;
            for (i, u) in u.iter().enumerate() {
                let frame = (i / per) as u64;
                assert_eq!(u.media, frame * 3600, "unit {i}");
                assert_eq!(u.rtp_ts, (frame * 3600 + shift) as u32);
                assert_eq!(u.frame_end, i % per == per - 1);
            }
            let chunks: Vec<&[u8]> = u.iter().map(|u| u.data.as_ref()).collect();
            let got: Vec<(u64, bool, Bytes)> = demux(&chunks)
                .into_iter()
                .map(|f| (f.pts - shift, f.keyframe, f.data))
                .collect();
            let want: Vec<(u64, bool, Bytes)> = clip
                .frames_at(0)
                .take(12)
                .map(|f| (f.pts, f.keyframe, f.data))
                .collect();
            assert_eq!(got, want);
        }
        // Timestamps nowhere: refused.
        let mut untimed = pack(0);
        untimed.extend(pes(None, &frames[0].data));
        assert!(PsFile::from_bytes(Bytes::from(untimed)).is_err());
    }

    // --- streaming over sockets -------------------------------------------

    struct Received {
        packets: Vec<RtpPacket>,
        frames: Vec<Frame>,
    }

    fn analyse(raw: Vec<Bytes>) -> Received {
        let packets: Vec<RtpPacket> = raw
            .into_iter()
            .map(|b| RtpPacket::parse(b).unwrap())
            .collect();
        let mut d = PsDemuxer::new();
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.sequence, i as u16, "sequence");
            assert_eq!(p.payload_type, 96);
            assert_eq!(p.ssrc, 0x1234_5678);
            assert!(p.payload.len() <= MAX_RTP_PAYLOAD);
            d.push(&p.payload);
        }
        d.flush();
        let mut frames = Vec::new();
        d.drain(&mut frames);
        assert_eq!(d.stats().bytes_skipped, 0);
        Received { packets, frames }
    }

    /// Checks frames `0..n` of a looping clip: count, timestamps, keyframes,
    /// markers.
    fn check_clip(r: &Received, clip: &Clip, n: usize) {
        let want: Vec<Frame> = clip.frames_at(0).take(n).collect();
        assert_eq!(r.frames.len(), n);
        assert_eq!(r.frames, want);
        let markers: Vec<u32> = r
            .packets
            .iter()
            .filter(|p| p.marker)
            .map(|p| p.timestamp)
            .collect();
        assert_eq!(
            markers,
            want.iter().map(|f| f.pts as u32).collect::<Vec<_>>()
        );
    }

    async fn recv_udp(sock: UdpSocket, task: &JoinHandle<io::Result<StreamReport>>) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let (n, _) = r.unwrap();
                    out.push(Bytes::copy_from_slice(&buf[..n]));
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if task.is_finished() {
                        return out;
                    }
                }
            }
        }
    }

    async fn recv_tcp(mut s: TcpStream) -> Vec<Bytes> {
        let mut d = TcpDeframer::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16_384];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            d.push(&buf[..n]);
            while let Some(p) = d.next_packet().unwrap() {
                out.push(p);
            }
        }
    }

    fn playing(scale: f64) -> (watch::Sender<StreamControl>, watch::Receiver<StreamControl>) {
        watch::channel(StreamControl::Playing { scale })
    }

    #[tokio::test]
    async fn udp_loops_with_continuous_timestamps() {
        let clip = synthetic(10, 5);
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (_tx, ctl) = playing(20.0);
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(23));
        let started = std::time::Instant::now();
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::Udp { to },
            opts,
            ctl,
        ));
        let raw = recv_udp(rx, &task).await;
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.end, StreamEnd::EndOfFile);
        assert_eq!(report.frames, 23);
        assert_eq!(report.packets, raw.len() as u64);
        let r = analyse(raw);
        check_clip(&r, &clip, 23);
        let keys: Vec<usize> = (0..23).filter(|i| r.frames[*i].keyframe).collect();
        assert_eq!(keys, vec![0, 5, 10, 15, 20]);
        // 23 frames at 25 fps ×20 take 46 ms of media time.
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[tokio::test]
    async fn tcp_active_with_rfc4571() {
        let clip = synthetic(4, 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let (_tx, ctl) = playing(50.0);
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(10));
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::TcpActive { to },
            opts,
            ctl,
        ));
        let (s, _) = listener.accept().await.unwrap();
        let raw = recv_tcp(s).await;
        assert_eq!(task.await.unwrap().unwrap().end, StreamEnd::EndOfFile);
        check_clip(&analyse(raw), &clip, 10);
    }

    #[tokio::test]
    async fn tcp_passive_and_peer_close() {
        let clip = synthetic(4, 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let (_tx, ctl) = playing(50.0);
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(6));
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::TcpPassive { listener },
            opts,
            ctl,
        ));
        let raw = recv_tcp(TcpStream::connect(at).await.unwrap()).await;
        assert_eq!(task.await.unwrap().unwrap().end, StreamEnd::EndOfFile);
        check_clip(&analyse(raw), &clip, 6);

        // Live stream; the receiver hangs up after the first bytes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let (_tx, ctl) = playing(50.0);
        let task = tokio::spawn(stream(
            Source::Clip(clip),
            MediaDest::TcpPassive { listener },
            StreamOptions::new(1),
            ctl,
        ));
        let mut s = TcpStream::connect(at).await.unwrap();
        let mut b = [0u8; 100];
        s.read_exact(&mut b).await.unwrap();
        drop(s);
        let r = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.end, StreamEnd::PeerClosed);
    }

    #[tokio::test]
    async fn pause_holds_the_clock() {
        let clip = synthetic(10, 5);
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (tx, ctl) = playing(2.0);
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(30));
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::Udp { to },
            opts,
            ctl,
        ));
        // Let ~3 frames go (20 ms apart at ×2), pause 300 ms, resume.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(StreamControl::Paused).unwrap();
        let paused_at = std::time::Instant::now();
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 65_536];
        // Drain what was sent before the pause took effect.
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(50), rx.recv_from(&mut buf)).await
        {
            raw.push(Bytes::copy_from_slice(&buf[..n]));
        }
        assert!(!raw.is_empty());
        let frames_before = raw
            .iter()
            .filter(|b| RtpPacket::parse((*b).clone()).unwrap().marker)
            .count();
        assert!(frames_before < 30);
        // Nothing arrives while paused.
        assert!(
            tokio::time::timeout(Duration::from_millis(250), rx.recv_from(&mut buf))
                .await
                .is_err()
        );
        tx.send(StreamControl::Playing { scale: 2.0 }).unwrap();
        let resumed = std::time::Instant::now();
        raw.extend(recv_udp(rx, &task).await);
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.end, StreamEnd::EndOfFile);
        assert!(paused_at.elapsed() >= Duration::from_millis(300));
        // The rest is paced from the resume on (20 ms a frame), not sent in
        // a burst to catch up with the pause.
        let rest = (30 - frames_before) as u32;
        let paced = (Duration::from_millis(20) * rest).saturating_sub(Duration::from_millis(30));
        assert!(resumed.elapsed() >= paced, "{:?}", resumed.elapsed());
        let r = analyse(raw);
        // Timestamps continue where they stopped: no gap for the pause.
        check_clip(&r, &clip, 30);
    }

    #[tokio::test]
    async fn duration_limit_stop_and_dropped_control() {
        // 1 s of media at ×5: 25 frames, done after ~200 ms.
        let clip = synthetic(10, 5);
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (_tx, ctl) = playing(5.0);
        let opts =
            StreamOptions::new(0x1234_5678).with_limit(Limit::Duration(Duration::from_secs(1)));
        let started = std::time::Instant::now();
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::Udp { to },
            opts,
            ctl,
        ));
        let raw = recv_udp(rx, &task).await;
        let report = task.await.unwrap().unwrap();
        assert_eq!((report.end, report.frames), (StreamEnd::EndOfFile, 25));
        assert!(started.elapsed() >= Duration::from_millis(195));
        check_clip(&analyse(raw), &clip, 25);

        // Stopped ends a live stream; so does dropping the sender; a stream
        // that starts paused sends nothing.
        for drop_sender in [false, true] {
            let (tx, ctl) = watch::channel(StreamControl::Paused);
            let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to = rx.local_addr().unwrap();
            let task = tokio::spawn(stream(
                Source::Clip(clip.clone()),
                MediaDest::Udp { to },
                StreamOptions::new(1),
                ctl,
            ));
            tokio::time::sleep(Duration::from_millis(50)).await;
            if drop_sender {
                drop(tx);
            } else {
                tx.send(StreamControl::Stopped).unwrap();
            }
            let r = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!((r.end, r.packets), (StreamEnd::Stopped, 0));
        }

        // A passive stream stopped before anyone connects.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, ctl) = playing(1.0);
        let task = tokio::spawn(stream(
            Source::Clip(clip),
            MediaDest::TcpPassive { listener },
            StreamOptions::new(1),
            ctl,
        ));
        tx.send(StreamControl::Stopped).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.end, StreamEnd::Stopped);
    }

    #[tokio::test]
    async fn ps_file_over_udp_loops_monotone() {
        let clip = synthetic(6, 3);
        let ps = Arc::new(PsFile::from_bytes(Bytes::from(ps_file_bytes(&clip, 6))).unwrap());
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (_tx, ctl) = playing(20.0);
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(15));
        let task = tokio::spawn(stream(Source::Ps(ps), MediaDest::Udp { to }, opts, ctl));
        let raw = recv_udp(rx, &task).await;
        assert_eq!(task.await.unwrap().unwrap().end, StreamEnd::EndOfFile);
        check_clip(&analyse(raw), &clip, 15);
    }

    // --- seeking -------------------------------------------------------------

    #[test]
    fn seek_targets() {
        // 10 frames at 25 fps (0.4 s), keyframes at 0 and 5.
        let clip = synthetic(10, 5);
        let at = |secs: f64| clip.seek_frame(ticks(Duration::from_secs_f64(secs)));
        assert_eq!(at(0.0), 0);
        assert_eq!(at(0.12), 0); // frame 3: back to keyframe 0
        assert_eq!(at(0.2), 5); // frame 5 is a keyframe
        assert_eq!(at(0.36), 5); // frame 9
        assert_eq!(at(0.56), 10); // frame 14, second loop: keyframe 10
        assert_eq!(at(1.3), 30); // frame 32, fourth loop
        assert_eq!(clip.pts_of(30), ticks(Duration::from_millis(1200)));
        // Rounding: at 7 fps frame 1 is due at tick 12857.
        let c7 = Clip::synthetic(Codec::H264, 4, 1, 10, 7).unwrap();
        assert_eq!((c7.seek_frame(12_856), c7.seek_frame(12_857)), (0, 1));
        // Huge positions do not overflow (the stream caps them at MAX_SEEK).
        assert!(clip.seek_frame(u64::MAX) > 0);
        assert_eq!(ticks(MAX_SEEK), (1 << 23) * 90_000);

        // PS files: our muxer's output (keyframes 0 and 3 of 6) and VOB
        // style, each frame in two packs (12 units, keyframes at units 0, 6).
        let clip = synthetic(6, 3);
        let ps = PsFile::from_bytes(Bytes::from(ps_file_bytes(&clip, 6))).unwrap();
        let keys: Vec<bool> = ps.units.iter().map(|u| u.key).collect();
        assert_eq!(keys, [true, false, false, true, false, false]);
        assert_eq!(ps.seek_unit(0), 0);
        assert_eq!(ps.seek_unit(3600 * 2 + 100), 0);
        assert_eq!(ps.seek_unit(3600 * 4), 3);
        assert_eq!(ps.seek_unit(3600 * 8), 6); // second pass, frame 2
        assert_eq!(ps.unit_at(6).unwrap().media, 3600 * 6);
        let mut vob = Vec::new();
        for f in clip.frames_at(0).take(6) {
            let (a, b) = f.data.split_at(f.data.len() / 2);
            vob.extend(pack(f.dts));
            vob.extend(pes(Some((f.pts, f.pts)), a));
            vob.extend(pack(f.dts + 1));
            vob.extend(pes(None, b));
        }
        let vob = PsFile::from_bytes(Bytes::from(vob)).unwrap();
        assert_eq!(vob.seek_unit(3600 * 5 + 1800), 6);
        assert_eq!(vob.seek_unit(3600 * 2), 0);
        assert_eq!(vob.unit_at(6).unwrap().frame_no, 3);
        assert_eq!(vob.unit_at(13).unwrap().frame_no, 6);
        // Without a codec to tell keyframes by, frame starts are targets.
        let unknown = |n: usize| {
            let mut v = pack(3600 * n as u64);
            v.extend(pes(
                Some((3600 * n as u64, 3600 * n as u64)),
                &[0, 0, 1, 0x41, 1],
            ));
            v
        };
        let mut raw = unknown(0);
        raw.extend(unknown(1));
        let ps = PsFile::from_bytes(Bytes::from(raw)).unwrap();
        assert_eq!(ps.seek_unit(3600), 1);
    }

    /// Checks that `r` holds frames `0..before` of `clip`, then `from..to`.
    fn check_seeked(r: &Received, clip: &Clip, before: usize, from: u64, to: u64) {
        let mut want: Vec<Frame> = clip.frames_at(0).take(before).collect();
        want.extend((from..to).map(|n| clip.frame_at(n).unwrap()));
        assert_eq!(r.frames, want);
        let after = &r.frames[before];
        assert!(after.keyframe);
        assert_eq!(after.pts, clip.pts_of(from));
    }

    /// Frames received before a seek: those up to the first keyframe of the
    /// seek target (frame `from`), which the stream does not send before.
    fn frames_before(r: &Received, from: u64, clip: &Clip) -> usize {
        r.frames
            .iter()
            .position(|f| f.pts == clip.pts_of(from))
            .unwrap()
    }

    #[tokio::test]
    async fn seek_forward_then_end_of_range() {
        // 0.4 s clip, 2 s range at ×4 (10 ms a frame). After ~5 frames seek
        // to 1.3 s (frame 32 in the fourth loop): the stream goes on from
        // keyframe 30 (1.2 s) and ends at 2 s, 0.8 s of media (200 ms) later.
        let clip = synthetic(10, 5);
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (tx, ctl) = playing(4.0);
        let opts =
            StreamOptions::new(0x1234_5678).with_limit(Limit::Duration(Duration::from_secs(2)));
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::Udp { to },
            opts,
            ctl,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(StreamControl::Seek {
            position: Duration::from_millis(1300),
            scale: 4.0,
        })
        .unwrap();
        let seeked = std::time::Instant::now();
        let raw = recv_udp(rx, &task).await;
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.end, StreamEnd::EndOfFile);
        assert!(seeked.elapsed() >= Duration::from_millis(190));
        let r = analyse(raw);
        let before = frames_before(&r, 30, &clip);
        assert!((1..30).contains(&before), "{before}");
        check_seeked(&r, &clip, before, 30, 50);
        assert_eq!(report.frames, before as u64 + 20);
        // RTP timestamps jump with the PTS.
        let ts: Vec<u32> = r
            .packets
            .iter()
            .filter(|p| p.marker)
            .map(|p| p.timestamp)
            .collect();
        assert_eq!(ts[before], 108_000);
    }

    #[tokio::test]
    async fn start_at_a_position_ends_after_the_rest() {
        // 2 s clip, keyframes every second; an 8 s range played from 4 s at
        // ×20: 4 s of media (frames 100..200), 200 ms.
        let clip = Arc::new(Clip::synthetic(Codec::H264, 50, 25, 500, 25).unwrap());
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (_tx, ctl) = watch::channel(StreamControl::Seek {
            position: Duration::from_secs(4),
            scale: 20.0,
        });
        let opts =
            StreamOptions::new(0x1234_5678).with_limit(Limit::Duration(Duration::from_secs(8)));
        let started = std::time::Instant::now();
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::Udp { to },
            opts,
            ctl,
        ));
        let raw = recv_udp(rx, &task).await;
        let report = task.await.unwrap().unwrap();
        assert_eq!((report.end, report.frames), (StreamEnd::EndOfFile, 100));
        assert!(started.elapsed() >= Duration::from_millis(195));
        check_seeked(&analyse(raw), &clip, 0, 100, 200);
    }

    #[tokio::test]
    async fn pause_seek_play() {
        // ×2 (20 ms a frame), ends before frame 40. Pause after ~3 frames,
        // seek while paused to 0.9 s (frame 22, keyframe 20) at ×4, then
        // PLAY: frames 20..40 follow, 10 ms apart.
        let clip = synthetic(10, 5);
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (tx, ctl) = playing(2.0);
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(40));
        let task = tokio::spawn(stream(
            Source::Clip(clip.clone()),
            MediaDest::Udp { to },
            opts,
            ctl,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(StreamControl::Paused).unwrap();
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(50), rx.recv_from(&mut buf)).await
        {
            raw.push(Bytes::copy_from_slice(&buf[..n]));
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(150), rx.recv_from(&mut buf))
                .await
                .is_err()
        );
        tx.send(StreamControl::Seek {
            position: Duration::from_millis(900),
            scale: 4.0,
        })
        .unwrap();
        let seeked = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let scale = match *tx.borrow() {
            StreamControl::Seek { scale, .. } => scale,
            _ => unreachable!(),
        };
        tx.send(StreamControl::Playing { scale }).unwrap();
        raw.extend(recv_udp(rx, &task).await);
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.end, StreamEnd::EndOfFile);
        // 20 frames at 10 ms, none sent in a burst.
        assert!(seeked.elapsed() >= Duration::from_millis(190));
        let r = analyse(raw);
        let before = frames_before(&r, 20, &clip);
        assert!((1..20).contains(&before), "{before}");
        check_seeked(&r, &clip, before, 20, 40);
        assert_eq!(report.frames, before as u64 + 20);
    }

    #[tokio::test]
    async fn ps_file_seek_over_udp() {
        // 6-frame file, keyframes 0 and 3; start at 0.3 s (second pass,
        // frame 1.5): from the pass's unit 0 (frame 6) up to frame 15.
        let clip = synthetic(6, 3);
        let ps = Arc::new(PsFile::from_bytes(Bytes::from(ps_file_bytes(&clip, 6))).unwrap());
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (_tx, ctl) = watch::channel(StreamControl::Seek {
            position: Duration::from_millis(300),
            scale: 20.0,
        });
        let opts = StreamOptions::new(0x1234_5678).with_limit(Limit::Frames(15));
        let task = tokio::spawn(stream(Source::Ps(ps), MediaDest::Udp { to }, opts, ctl));
        let raw = recv_udp(rx, &task).await;
        let report = task.await.unwrap().unwrap();
        assert_eq!((report.end, report.frames), (StreamEnd::EndOfFile, 9));
        check_seeked(&analyse(raw), &clip, 0, 6, 15);
    }
}
