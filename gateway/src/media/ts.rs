//! MPEG-2 Transport Stream (ISO/IEC 13818-1 §2.4) muxer for HTTP viewers
//! (`/live/{channel}.ts`, played by ffplay, VLC, mpv), and a small strict
//! parser used by the tests and a fuzz target.
//!
//! Hand-written, like [`super::ps`]: a hub muxes each [`Frame`] once and
//! shares the resulting [`Bytes`] with every viewer, so the muxer must turn
//! one frame into whole 188-byte packets with the tables in front of each
//! keyframe, the PCR in the first packet of each video frame and the stuffing
//! in the last one. The `mpeg2ts` crate's writer only serialises `TsPacket`
//! values the caller has already cut, counted and stuffed (and writes to an
//! `io::Write`), so it would leave all of that to us anyway; the logic here is
//! about 300 lines.
//!
//! # Layout
//! Program 1, PMT on PID 0x1000, video on 0x100 (stream_id 0xE0, H.264 0x1B
//! or H.265 0x24), audio on 0x101 (stream_id 0xC0, AAC/ADTS 0x0F). The PCR
//! rides on the video PID (the audio PID without video), in the adaptation
//! field of the first packet of every frame, [`PCR_LAG`] behind its DTS.
//! One PES per frame, with its real PES_packet_length when that fits in 16
//! bits, so players hand a frame on as soon as it is complete (ffmpeg
//! otherwise waits for the next PES start: a frame of latency); larger video
//! frames are unbounded (length 0). Video PES start with an access unit
//! delimiter, inserted when the frame has none.
//!
//! # G.711
//! MPEG-TS has no standard stream_type for G.711 and ffmpeg's demuxer maps
//! none, so G.711 frames are dropped (counted in [`TsStats::g711_dropped`])
//! and the PMT declares audio only when it is AAC.
//!
//! # Join rule
//! Every viewer starts with the output of a `mux()` call that
//! [`is_join_point`]: a video keyframe (or, without video, any audio frame),
//! whose output starts with PAT and PMT, then the keyframe with its PCR and
//! random_access_indicator. Continuity counters run on across calls, so a
//! viewer that has seen every call since its join sees no gap; a late
//! joiner's first packet per PID has no predecessor, which players accept.
//! A viewer that falls behind must skip to the next join point: its player
//! then sees at most one continuity jump per PID, each on a packet that
//! starts a table or a PES, so no frame is lost to it.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Codec, Frame};
use super::nal;
use super::pes::{put_ts, read_ts, TS_MASK};
use super::ps::crc32_mpeg2;

/// Size of a TS packet.
pub const PACKET_SIZE: usize = 188;
/// PID of the program association table.
pub const PAT_PID: u16 = 0;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the (AAC) audio elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// How far (90 kHz) the PCR runs behind the DTS of the frame carrying it:
/// the decoder's buffering margin, and the slack for audio stamped slightly
/// earlier than the video it is interleaved with.
pub const PCR_LAG: u64 = 18_000;

const PROGRAM: u16 = 1;
const NULL_PID: u16 = 0x1FFF;
/// Longest gap between PCRs before an audio frame adds a PCR-only packet on
/// the video PID (the spec's 100 ms).
const PCR_INTERVAL: u64 = 9_000;
/// A PCR step forward beyond this (10 s) is flagged as a discontinuity.
const PCR_MAX_JUMP: u64 = 900_000;
const AUD_H264: &[u8] = &[0, 0, 0, 1, 0x09, 0xF0];
const AUD_H265: &[u8] = &[0, 0, 0, 1, 0x46, 0x01, 0x50];

/// Muxer counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TsStats {
    /// Frames turned into packets.
    pub frames_muxed: u64,
    /// G.711 frames dropped: TS has no mapping for them.
    pub g711_dropped: u64,
    /// Other frames dropped: their codec is not the one declared in the PMT.
    pub frames_dropped: u64,
    /// TS packets written.
    pub packets: u64,
}

/// Per-frame MPEG-TS muxer: [`mux`](Self::mux) turns one [`Frame`] into
/// whole packets (see the module doc for the layout and the join rule).
#[derive(Debug, Clone)]
pub struct TsMuxer {
    video: Option<Codec>,
    /// AAC only; G.711 is never declared.
    audio: Option<Codec>,
    pcr_pid: u16,
    /// Next continuity counter of PAT, PMT, video, audio.
    cc: [u8; 4],
    tables_sent: bool,
    last_pcr: Option<u64>,
    stats: TsStats,
}

/// Adaptation field content of the first packet of a PES.
#[derive(Debug, Clone, Copy, Default)]
struct Af {
    pcr: Option<u64>,
    random_access: bool,
    discontinuity: bool,
}

fn cc_slot(pid: u16) -> usize {
    match pid {
        PAT_PID => 0,
        PMT_PID => 1,
        VIDEO_PID => 2,
        _ => 3,
    }
}

fn put_header(out: &mut BytesMut, pid: u16, start: bool, af: bool, payload: bool, cc: u8) {
    out.put_u8(0x47);
    out.put_u8(u8::from(start) << 6 | (pid >> 8) as u8 & 0x1F);
    out.put_u8(pid as u8);
    out.put_u8(u8::from(af) << 5 | u8::from(payload) << 4 | cc & 0x0F);
}

/// True when the first NAL unit of an Annex-B access unit is an AUD.
fn starts_with_aud(codec: Codec, data: &[u8]) -> bool {
    let Some(at) = data.windows(3).position(|w| w == [0, 0, 1]) else {
        return false;
    };
    let first = data.get(at + 3..).unwrap_or_default();
    match codec {
        Codec::H264 => nal::h264_type(first) == Some(9),
        Codec::H265 => nal::h265_type(first) == Some(35),
        _ => false,
    }
}

/// True when `ts` (a [`TsMuxer::mux`] output) is a join point: PAT, PMT,
/// then a frame with random_access_indicator (the join rule in the module
/// doc). The tables that precede a first frame that is no keyframe do not
/// make it one.
pub fn is_join_point(ts: &[u8]) -> bool {
    let pat = matches!(ts.get(..3), Some([0x47, b1, 0]) if b1 & 0x5F == 0x40);
    let at = 2 * PACKET_SIZE + 3;
    let rai = matches!(ts.get(at..at + 3),
        Some([b3, len, flags]) if b3 & 0x20 != 0 && *len > 0 && flags & 0x40 != 0);
    pat && rai
}

impl TsMuxer {
    /// A muxer for a video stream (H.264/H.265) and an audio stream. Audio is
    /// declared only when it is AAC; a non-video `video` codec is ignored.
    pub fn new(video: Option<Codec>, audio: Option<Codec>) -> Self {
        let video = video.filter(|c| c.is_video());
        let audio = audio.filter(|c| *c == Codec::Aac);
        let pcr_pid = match (video, audio) {
            (Some(_), _) => VIDEO_PID,
            (None, Some(_)) => AUDIO_PID,
            (None, None) => NULL_PID,
        };
        Self {
            video,
            audio,
            pcr_pid,
            cc: [0; 4],
            tables_sent: false,
            last_pcr: None,
            stats: TsStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TsStats {
        self.stats
    }

    /// Mux one frame into whole 188-byte packets: PAT and PMT first on the
    /// first call and on every join point, then the frame's PES. Returns
    /// nothing for a dropped frame (G.711, or a codec not in the PMT).
    pub fn mux(&mut self, frame: &Frame) -> Bytes {
        let video = frame.codec.is_video();
        let declared = if video { self.video } else { self.audio };
        if declared != Some(frame.codec) {
            match frame.codec {
                Codec::G711A | Codec::G711U => self.stats.g711_dropped += 1,
                _ => self.stats.frames_dropped += 1,
            }
            return Bytes::new();
        }
        let pid = if video { VIDEO_PID } else { AUDIO_PID };
        let join = (video && frame.keyframe) || self.video.is_none();

        let mut head = BytesMut::with_capacity(32);
        let has_dts = (frame.pts ^ frame.dts) & TS_MASK != 0;
        let ts_len = if has_dts { 10 } else { 5 };
        let aud = match frame.codec {
            Codec::H264 if !starts_with_aud(frame.codec, &frame.data) => AUD_H264,
            Codec::H265 if !starts_with_aud(frame.codec, &frame.data) => AUD_H265,
            _ => &[],
        };
        let pes_len = 3 + ts_len + aud.len() + frame.data.len();
        head.put_slice(&[0, 0, 1, if video { 0xE0 } else { 0xC0 }]);
        // The real length lets a demuxer hand the frame on at once (not at
        // the next PES start); 0 (unbounded) when it overflows.
        head.put_u16(if pes_len > 0xFFFF { 0 } else { pes_len as u16 });
        // Marker bits, data_alignment_indicator; PTS/DTS flags; header length.
        head.put_u8(0x84);
        head.put_u8(if has_dts { 0xC0 } else { 0x80 });
        head.put_u8(ts_len as u8);
        put_ts(&mut head, if has_dts { 3 } else { 2 }, frame.pts);
        if has_dts {
            put_ts(&mut head, 1, frame.dts);
        }
        head.put_slice(aud);

        let packets = (head.len() + frame.data.len()) / 184 + 4;
        let mut out = BytesMut::with_capacity(packets * PACKET_SIZE);
        if join || !self.tables_sent {
            self.put_pat(&mut out);
            self.put_pmt(&mut out);
            self.tables_sent = true;
        }
        let mut af = Af {
            random_access: join,
            ..Af::default()
        };
        if pid == self.pcr_pid {
            let (pcr, disc) = self.next_pcr(frame.dts);
            af.pcr = Some(pcr);
            af.discontinuity = disc;
        } else if self.pcr_pid == VIDEO_PID {
            self.pcr_filler(&mut out, frame.dts);
        }
        self.put_pes(&mut out, pid, &head, &frame.data, af);
        self.stats.frames_muxed += 1;
        out.freeze()
    }

    /// The PCR base for a frame: `dts - PCR_LAG`, held (never stepping back)
    /// when it falls slightly behind the last PCR, and flagged as a
    /// discontinuity when the clock jumps.
    fn next_pcr(&mut self, dts: u64) -> (u64, bool) {
        let base = dts.wrapping_sub(PCR_LAG) & TS_MASK;
        let (pcr, disc) = match self.last_pcr {
            None => (base, false),
            Some(last) => {
                let fwd = base.wrapping_sub(last) & TS_MASK;
                let back = last.wrapping_sub(base) & TS_MASK;
                if fwd <= PCR_MAX_JUMP {
                    (base, false)
                } else if back <= PCR_LAG {
                    // Still <= dts: last <= base + PCR_LAG.
                    (last, false)
                } else {
                    (base, true)
                }
            }
        };
        self.last_pcr = Some(pcr);
        (pcr, disc)
    }

    /// A PCR-only packet on the video PID when an audio frame shows the PCR
    /// is over 100 ms old (low frame rate video).
    fn pcr_filler(&mut self, out: &mut BytesMut, audio_dts: u64) {
        let Some(last) = self.last_pcr else {
            return;
        };
        let base = audio_dts.wrapping_sub(PCR_LAG) & TS_MASK;
        let fwd = base.wrapping_sub(last) & TS_MASK;
        if !(PCR_INTERVAL..=PCR_MAX_JUMP).contains(&fwd) {
            return;
        }
        self.last_pcr = Some(base);
        // No payload: the continuity counter repeats the last one.
        let cc = self
            .cc
            .get(cc_slot(VIDEO_PID))
            .map_or(0, |c| c.wrapping_sub(1) & 0x0F);
        put_header(out, VIDEO_PID, false, true, false, cc);
        out.put_u8(183);
        out.put_u8(0x10);
        put_pcr(out, base);
        out.put_bytes(0xFF, 183 - 7);
        self.stats.packets += 1;
    }

    fn next_cc(&mut self, pid: u16) -> u8 {
        let slot = self.cc.get_mut(cc_slot(pid));
        let Some(c) = slot else {
            return 0;
        };
        let cc = *c;
        *c = (cc + 1) & 0x0F;
        cc
    }

    /// Cut `head` + `body` (one PES) into packets on `pid`; `af` goes into
    /// the first, stuffing into the adaptation field of the last.
    fn put_pes(&mut self, out: &mut BytesMut, pid: u16, mut head: &[u8], mut body: &[u8], af: Af) {
        let mut first = true;
        while first || !head.is_empty() || !body.is_empty() {
            let a = if first { af } else { Af::default() };
            let flags = u8::from(a.discontinuity) << 7
                | u8::from(a.random_access) << 6
                | u8::from(a.pcr.is_some()) << 4;
            let af_min = match (flags, a.pcr) {
                (0, _) => 0,
                (_, Some(_)) => 8,
                (_, None) => 2,
            };
            let n = (head.len() + body.len()).min(184 - af_min);
            // Adaptation field bytes including its length byte.
            let af_len = 184 - n;
            put_header(out, pid, first, af_len > 0, true, self.next_cc(pid));
            if af_len > 0 {
                out.put_u8((af_len - 1) as u8);
                if af_len > 1 {
                    out.put_u8(flags);
                    if let Some(pcr) = a.pcr {
                        put_pcr(out, pcr);
                    }
                    out.put_bytes(0xFF, af_len - af_min.max(2));
                }
            }
            let from_head = n.min(head.len());
            let (h, rest) = head.split_at_checked(from_head).unwrap_or((head, &[]));
            out.put_slice(h);
            head = rest;
            let (b, rest) = body.split_at_checked(n - from_head).unwrap_or((body, &[]));
            out.put_slice(b);
            body = rest;
            self.stats.packets += 1;
            first = false;
        }
    }

    /// One PSI section (without CRC) in a packet of its own.
    fn put_section(&mut self, out: &mut BytesMut, pid: u16, section: &[u8]) {
        let start = out.len();
        put_header(out, pid, true, false, true, self.next_cc(pid));
        out.put_u8(0); // pointer_field
        out.put_slice(section);
        out.put_u32(crc32_mpeg2(section));
        out.put_bytes(0xFF, PACKET_SIZE - (out.len() - start));
        self.stats.packets += 1;
    }

    fn put_pat(&mut self, out: &mut BytesMut) {
        let mut s = vec![0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0];
        s.extend_from_slice(&PROGRAM.to_be_bytes());
        s.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
        self.put_section(out, PAT_PID, &s);
    }

    fn put_pmt(&mut self, out: &mut BytesMut) {
        let mut s = vec![0x02, 0xB0, 0];
        s.extend_from_slice(&PROGRAM.to_be_bytes());
        s.extend_from_slice(&[0xC1, 0, 0]);
        s.extend_from_slice(&(0xE000 | self.pcr_pid).to_be_bytes());
        s.extend_from_slice(&[0xF0, 0]); // program_info_length 0
        for (codec, pid) in [(self.video, VIDEO_PID), (self.audio, AUDIO_PID)] {
            if let Some(c) = codec {
                s.push(c.stream_type());
                s.extend_from_slice(&(0xE000 | pid).to_be_bytes());
                s.extend_from_slice(&[0xF0, 0]); // ES_info_length 0
            }
        }
        // section_length: the bytes after it, CRC included (< 256 here).
        let len = (s.len() - 3 + 4) as u8;
        if let Some(l) = s.get_mut(2) {
            *l = len;
        }
        self.put_section(out, PMT_PID, &s);
    }
}

/// Write a 6-byte PCR field: 33-bit base, reserved bits, extension 0.
fn put_pcr(out: &mut BytesMut, base: u64) {
    let base = base & TS_MASK;
    out.put_u32((base >> 1) as u32);
    out.put_u8((base as u8 & 1) << 7 | 0x7E);
    out.put_u8(0);
}

/// Errors of [`parse_packets`]: content that a correct muxer never writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    /// Non-empty input without a single synchronised packet.
    #[error("no TS sync byte found")]
    NoSync,
    /// A PAT or PMT section whose CRC-32/MPEG-2 does not match.
    #[error("bad CRC in PSI section on PID {0:#x}")]
    Crc(u16),
    /// A PAT or PMT section that is truncated, spans packets or has the
    /// wrong table_id.
    #[error("malformed PSI section on PID {0:#x}")]
    Section(u16),
    /// An adaptation field longer than the packet.
    #[error("malformed adaptation field on PID {0:#x}")]
    AdaptationField(u16),
    /// A PES packet without a start code, with a bad header, or whose length
    /// disagrees with the data carried.
    #[error("malformed PES packet on PID {0:#x}")]
    Pes(u16),
}

/// An elementary stream declared in the PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsStream {
    /// Its PID.
    pub pid: u16,
    /// Its stream_type.
    pub stream_type: u8,
}

/// One reassembled PES packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsFrame {
    /// The PID it came on.
    pub pid: u16,
    /// The stream_type the PMT gave that PID.
    pub stream_type: u8,
    /// PTS (33 bits), if present.
    pub pts: Option<u64>,
    /// DTS (33 bits), if present.
    pub dts: Option<u64>,
    /// random_access_indicator of its first packet.
    pub random_access: bool,
    /// PCR of its first packet, in 27 MHz units.
    pub pcr: Option<u64>,
    /// The PES payload.
    pub data: Vec<u8>,
}

/// What [`parse_packets`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsSummary {
    /// Synchronised packets read.
    pub packets: usize,
    /// Bytes skipped: garbage between packets, a trailing partial packet,
    /// packets with transport_error_indicator, payload without a PES start.
    pub skipped_bytes: usize,
    /// Continuity counter gaps (the first packet of each PID is not judged).
    pub cc_errors: usize,
    /// PATs read.
    pub pat_count: usize,
    /// PMTs read.
    pub pmt_count: usize,
    /// PCR_PID of the last PMT.
    pub pcr_pid: Option<u16>,
    /// Streams of the last PMT.
    pub streams: Vec<TsStream>,
    /// PES packets in the order they started; a bounded PES cut off by the
    /// end of input is left out.
    pub frames: Vec<TsFrame>,
}

/// PES being reassembled on one PID.
struct Pending {
    /// Index of the packet that started it, to keep start order.
    order: usize,
    random_access: bool,
    pcr: Option<u64>,
    raw: Vec<u8>,
}

/// Body (after the 8 header bytes, before the CRC) of a complete PSI section
/// of `table_id` at the start of `payload`.
fn section_body(pid: u16, payload: &[u8], table_id: u8) -> Result<&[u8], TsError> {
    let bad = TsError::Section(pid);
    let pointer = usize::from(*payload.first().ok_or(bad.clone())?);
    let sec = payload.get(1 + pointer..).ok_or(bad.clone())?;
    let (Some(&id), Some(&hi), Some(&lo)) = (sec.first(), sec.get(1), sec.get(2)) else {
        return Err(bad);
    };
    let len = usize::from(hi & 0x0F) << 8 | usize::from(lo);
    if id != table_id || len < 9 {
        return Err(bad);
    }
    let whole = sec.get(..3 + len).ok_or(bad.clone())?;
    if crc32_mpeg2(whole) != 0 {
        return Err(TsError::Crc(pid));
    }
    whole.get(8..whole.len() - 4).ok_or(bad)
}

/// Big-endian u16 at `at`.
fn be16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2)
        .and_then(|w| w.first_chunk::<2>())
        .map(|w| u16::from_be_bytes(*w))
}

/// PTS, DTS and payload of a PES packet.
type Pes<'a> = (Option<u64>, Option<u64>, &'a [u8]);

/// Parse a whole PES packet on `pid`.
fn parse_pes(pid: u16, raw: &[u8]) -> Result<Pes<'_>, TsError> {
    let bad = TsError::Pes(pid);
    let (Some([0, 0, 1, _]), Some(len), Some(&b6), Some(&flags), Some(&hdl)) = (
        raw.get(..4),
        be16(raw, 4).map(usize::from),
        raw.get(6),
        raw.get(7),
        raw.get(8),
    ) else {
        return Err(bad);
    };
    if b6 & 0xC0 != 0x80 {
        return Err(bad);
    }
    let end = if len == 0 { raw.len() } else { 6 + len };
    if end != raw.len() {
        return Err(bad);
    }
    let opt = raw.get(9..9 + usize::from(hdl)).ok_or(bad.clone())?;
    let (pts, dts) = match flags >> 6 {
        0 => (None, None),
        2 => (Some(read_ts(opt).ok_or(bad.clone())?), None),
        3 => (
            Some(read_ts(opt).ok_or(bad.clone())?),
            Some(opt.get(5..).and_then(read_ts).ok_or(bad.clone())?),
        ),
        _ => return Err(bad),
    };
    let payload = raw.get(9 + usize::from(hdl)..).ok_or(bad)?;
    Ok((pts, dts, payload))
}

/// Parse a TS byte stream: sync on 0x47, read PAT and PMT (CRC checked),
/// reassemble the PES of the PMT's streams. Never panics.
pub fn parse_packets(data: &[u8]) -> Result<TsSummary, TsError> {
    let mut sum = TsSummary::default();
    let mut pmt_pid: Option<u16> = None;
    let mut last_cc: HashMap<u16, u8> = HashMap::new();
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut frames: Vec<(usize, TsFrame)> = Vec::new();
    let mut finish = |sum: &TsSummary, pid: u16, p: Pending| -> Result<(), TsError> {
        let stream_type = sum
            .streams
            .iter()
            .find(|s| s.pid == pid)
            .map_or(0, |s| s.stream_type);
        let (pts, dts, payload) = parse_pes(pid, &p.raw)?;
        let frame = TsFrame {
            pid,
            stream_type,
            pts,
            dts,
            random_access: p.random_access,
            pcr: p.pcr,
            data: payload.to_vec(),
        };
        frames.push((p.order, frame));
        Ok(())
    };

    let mut i = 0;
    while let Some(pkt) = data.get(i..i + PACKET_SIZE) {
        let next_ok = data.get(i + PACKET_SIZE).is_none_or(|b| *b == 0x47);
        let (&[0x47, b1, b2, b3], true) = (pkt.first_chunk::<4>().unwrap_or(&[0; 4]), next_ok)
        else {
            sum.skipped_bytes += 1;
            i += 1;
            continue;
        };
        i += PACKET_SIZE;
        sum.packets += 1;
        let pid = u16::from(b1 & 0x1F) << 8 | u16::from(b2);
        if b1 & 0x80 != 0 || pid == NULL_PID {
            sum.skipped_bytes += PACKET_SIZE;
            continue;
        }
        let start = b1 & 0x40 != 0;
        let (has_af, has_payload, cc) = (b3 & 0x20 != 0, b3 & 0x10 != 0, b3 & 0x0F);
        let mut payload_at = 4;
        let (mut pcr, mut random_access) = (None, false);
        if has_af {
            let len = usize::from(*pkt.get(4).unwrap_or(&0));
            let af = pkt.get(5..5 + len).ok_or(TsError::AdaptationField(pid))?;
            if let Some(&flags) = af.first() {
                random_access = flags & 0x40 != 0;
                if flags & 0x10 != 0 {
                    let p = af.get(1..7).ok_or(TsError::AdaptationField(pid))?;
                    let base = p.iter().take(4).fold(0u64, |a, b| a << 8 | u64::from(*b)) << 1
                        | u64::from(p.get(4).unwrap_or(&0) >> 7);
                    let ext = u64::from(p.get(4).unwrap_or(&0) & 1) << 8
                        | u64::from(*p.get(5).unwrap_or(&0));
                    pcr = Some(base * 300 + ext);
                }
            }
            payload_at = 5 + len;
        }
        if !has_payload {
            continue;
        }
        if let Some(last) = last_cc.insert(pid, cc) {
            if cc != (last + 1) & 0x0F && cc != last {
                sum.cc_errors += 1;
            }
        }
        let payload = pkt.get(payload_at..).unwrap_or_default();
        if pid == PAT_PID {
            if start {
                let body = section_body(pid, payload, 0x00)?;
                sum.pat_count += 1;
                pmt_pid = body
                    .chunks_exact(4)
                    .find(|e| e.first_chunk::<2>() != Some(&[0, 0]))
                    .and_then(|e| be16(e, 2))
                    .map(|p| p & 0x1FFF);
            }
        } else if Some(pid) == pmt_pid {
            if start {
                let body = section_body(pid, payload, 0x02)?;
                sum.pmt_count += 1;
                let bad = TsError::Section(pid);
                let word = |at: usize| be16(body, at);
                sum.pcr_pid = Some(word(0).ok_or(bad.clone())? & 0x1FFF);
                let mut at = 4 + usize::from(word(2).ok_or(bad.clone())? & 0x0FFF);
                sum.streams.clear();
                while at < body.len() {
                    let (Some(&stream_type), Some(pid), Some(info)) =
                        (body.get(at), word(at + 1), word(at + 3))
                    else {
                        return Err(bad);
                    };
                    sum.streams.push(TsStream {
                        pid: pid & 0x1FFF,
                        stream_type,
                    });
                    at += 5 + usize::from(info & 0x0FFF);
                }
                if at != body.len() {
                    return Err(bad);
                }
                pending.retain(|pid, _| sum.streams.iter().any(|s| s.pid == *pid));
            }
        } else if sum.streams.iter().any(|s| s.pid == pid) {
            if start {
                if let Some(p) = pending.remove(&pid) {
                    finish(&sum, pid, p)?;
                }
                let order = sum.packets;
                pending.insert(
                    pid,
                    Pending {
                        order,
                        random_access,
                        pcr,
                        raw: Vec::new(),
                    },
                );
            }
            match pending.get_mut(&pid) {
                Some(p) => {
                    p.raw.extend_from_slice(payload);
                    let len = be16(&p.raw, 4).map_or(0, usize::from);
                    if len != 0 && p.raw.len() >= 6 + len {
                        if let Some(p) = pending.remove(&pid) {
                            finish(&sum, pid, p)?;
                        }
                    }
                }
                None => sum.skipped_bytes += payload.len(),
            }
        } else {
            sum.skipped_bytes += PACKET_SIZE;
        }
    }
    sum.skipped_bytes += data.len() - i.min(data.len());
    // End of input: unbounded PES are complete; bounded ones were cut off.
    let mut rest: Vec<(u16, Pending)> = pending.into_iter().collect();
    rest.sort_by_key(|(_, p)| p.order);
    for (pid, p) in rest {
        let unbounded = p.raw.get(4..6) == Some(&[0, 0][..]);
        if unbounded {
            finish(&sum, pid, p)?;
        } else {
            sum.skipped_bytes += p.raw.len();
        }
    }
    if sum.packets == 0 && !data.is_empty() {
        return Err(TsError::NoSync);
    }
    frames.sort_by_key(|(order, _)| *order);
    sum.frames = frames.into_iter().map(|(_, f)| f).collect();
    Ok(sum)
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

    fn frame(codec: Codec, pts: u64, dts: u64, keyframe: bool, data: Vec<u8>) -> Frame {
        Frame {
            codec,
            pts,
            dts,
            keyframe,
            data: Bytes::from(data),
        }
    }

    fn h264(pts: u64, key: bool) -> Frame {
        let mut d = vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xCE];
        d.extend_from_slice(&[0, 0, 1, if key { 0x65 } else { 0x41 }]);
        d.extend((0..700u32).map(|i| (i % 250 + 1) as u8));
        frame(Codec::H264, pts, pts, key, d)
    }

    fn adts(pts: u64, len: usize) -> Frame {
        let mut d = vec![0xFF, 0xF1, 0x50, 0x80, 0, 0x1F, 0xFC];
        d.resize(len.max(7), 0x5A);
        frame(Codec::Aac, pts, pts, true, d)
    }

    fn packets(ts: &[u8]) -> Vec<&[u8]> {
        assert_eq!(ts.len() % PACKET_SIZE, 0);
        ts.chunks(PACKET_SIZE).collect()
    }

    fn pid(p: &[u8]) -> u16 {
        u16::from(p[1] & 0x1F) << 8 | u16::from(p[2])
    }

    /// The PES payload the parser must return for a muxed frame.
    fn expected_payload(f: &Frame) -> Vec<u8> {
        let aud = match f.codec {
            Codec::H264 if !starts_with_aud(f.codec, &f.data) => AUD_H264,
            Codec::H265 if !starts_with_aud(f.codec, &f.data) => AUD_H265,
            _ => &[],
        };
        [aud, &f.data[..]].concat()
    }

    fn mux_all(m: &mut TsMuxer, frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| m.mux(f).to_vec()).collect()
    }

    #[test]
    fn pat_pmt_crc_and_layout() {
        let mut m = TsMuxer::new(Some(Codec::H265), Some(Codec::Aac));
        let ts = m.mux(&frame(
            Codec::H265,
            9000,
            9000,
            true,
            vec![0, 0, 1, 0x26, 1, 7],
        ));
        let p = packets(&ts);
        assert!(is_join_point(&ts));
        assert_eq!(
            (pid(p[0]), pid(p[1]), pid(p[2])),
            (PAT_PID, PMT_PID, VIDEO_PID)
        );
        for (pkt, table_id) in [(p[0], 0u8), (p[1], 2)] {
            assert_eq!(pkt[4], 0, "pointer_field");
            let sec = &pkt[5..];
            assert_eq!(sec[0], table_id);
            let len = usize::from(sec[1] & 0x0F) << 8 | usize::from(sec[2]);
            assert_eq!(crc32_mpeg2(&sec[..3 + len]), 0);
            assert!(sec[3 + len..].iter().all(|b| *b == 0xFF));
        }
        // PMT: PCR on video, H.265 on 0x100, AAC on 0x101.
        let pmt = &p[1][5..];
        assert_eq!(&pmt[8..12], &[0xE1, 0x00, 0xF0, 0x00]);
        assert_eq!(
            &pmt[12..22],
            &[0x24, 0xE1, 0, 0xF0, 0, 0x0F, 0xE1, 1, 0xF0, 0]
        );
        let s = parse_packets(&ts).unwrap();
        assert_eq!(s.pcr_pid, Some(VIDEO_PID));
        let want = [(VIDEO_PID, 0x24), (AUDIO_PID, 0x0F)];
        let got: Vec<(u16, u8)> = s.streams.iter().map(|s| (s.pid, s.stream_type)).collect();
        assert_eq!(got, want);
        // A corrupted PAT CRC is reported.
        let mut bad = ts.to_vec();
        bad[20] ^= 1;
        assert_eq!(parse_packets(&bad), Err(TsError::Crc(PAT_PID)));
    }

    #[test]
    fn g711_dropped_and_not_declared() {
        let mut m = TsMuxer::new(Some(Codec::H264), Some(Codec::G711A));
        let g711 = frame(Codec::G711A, 100, 100, true, vec![0xD5; 160]);
        assert!(m.mux(&g711).is_empty());
        // Tables come with the first frame, but a P-frame is no join point.
        let p = m.mux(&h264(1, false));
        assert!(pid(&p) == PAT_PID && !is_join_point(&p));
        let ts = m.mux(&h264(3600, true));
        assert!(m.mux(&g711).is_empty());
        assert!(!m.mux(&h264(3600, true)).is_empty());
        let wrong = frame(Codec::H265, 1, 1, true, vec![0, 0, 1, 0x26, 1]);
        assert!(m.mux(&wrong).is_empty());
        let st = m.stats();
        assert_eq!(
            (st.frames_muxed, st.g711_dropped, st.frames_dropped),
            (3, 2, 1)
        );
        let s = parse_packets(&ts).unwrap();
        assert_eq!(
            s.streams,
            vec![TsStream {
                pid: VIDEO_PID,
                stream_type: 0x1B
            }]
        );
    }

    #[test]
    fn cc_pcr_rai_and_tables_on_keyframes() {
        let mut m = TsMuxer::new(Some(Codec::H264), Some(Codec::Aac));
        let mut frames = Vec::new();
        for i in 0..60u64 {
            frames.push(h264(100_000 + 3600 * i, i % 25 == 0));
            frames.push(adts(100_000 + 3600 * i + 5, 300));
        }
        let outs: Vec<Bytes> = frames.iter().map(|f| m.mux(f)).collect();
        let mut cc: HashMap<u16, u8> = HashMap::new();
        for (f, out) in frames.iter().zip(&outs) {
            let p = packets(out);
            assert!(p.iter().all(|p| p[0] == 0x47));
            assert_eq!(is_join_point(out), f.codec.is_video() && f.keyframe);
            for pkt in &p {
                let c = pkt[3] & 0x0F;
                if let Some(last) = cc.insert(pid(pkt), c) {
                    assert_eq!(c, (last + 1) & 0x0F, "pid {:#x}", pid(pkt));
                }
            }
            if f.codec.is_video() {
                let first = p.iter().find(|p| pid(p) == VIDEO_PID).unwrap();
                assert_eq!(first[1] & 0x40, 0x40, "PUSI");
                assert_eq!(first[3] & 0x20, 0x20, "adaptation field");
                assert_eq!(first[5] & 0x10, 0x10, "PCR flag");
                assert_eq!(first[5] & 0x40 != 0, f.keyframe, "random_access_indicator");
            }
        }
        let all: Vec<u8> = outs.iter().flat_map(|b| b.to_vec()).collect();
        let s = parse_packets(&all).unwrap();
        assert_eq!((s.cc_errors, s.skipped_bytes), (0, 0));
        assert_eq!(s.pat_count, 3);
        assert_eq!(s.frames.len(), frames.len());
        for (got, f) in s.frames.iter().zip(&frames) {
            if f.codec.is_video() {
                let pcr = got.pcr.unwrap();
                assert_eq!(pcr % 300, 0);
                assert_eq!(pcr / 300, f.dts - PCR_LAG);
            } else {
                assert_eq!(got.pcr, None);
            }
        }
    }

    #[test]
    fn aud_inserted_once_and_stuffing_fills() {
        let mut m = TsMuxer::new(Some(Codec::H264), None);
        let mut ts = m.mux(&h264(1, true)).to_vec();
        let mut want = Vec::new();
        // Every split of PES bytes over packets, including 1-byte stuffing.
        for n in 0..400 {
            let mut d = vec![0, 0, 0, 1, 9, 0xF0, 0, 0, 1, 0x41];
            d.resize(10 + n, 0x33);
            let without = frame(Codec::H264, 5000, 4000, false, d[6..].to_vec());
            ts.extend_from_slice(&m.mux(&frame(Codec::H264, 5000, 4000, false, d.clone())));
            ts.extend_from_slice(&m.mux(&without));
            want.push(d.clone());
            want.push(d);
        }
        let s = parse_packets(&ts).unwrap();
        assert_eq!((s.cc_errors, s.pat_count), (0, 1));
        let got: Vec<Vec<u8>> = s.frames[1..].iter().map(|f| f.data.clone()).collect();
        assert_eq!(got, want);
        assert!(s.frames[1..]
            .iter()
            .all(|f| (f.pts, f.dts) == (Some(5000), Some(4000))));
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let mut m = TsMuxer::new(Some(Codec::H264), None);
        let base = (1u64 << 33) - 3600;
        let frames = [
            h264(base, true),
            h264(base + 3600, false),
            h264(base + 7200, false),
        ];
        let s = parse_packets(&mux_all(&mut m, &frames)).unwrap();
        let pts: Vec<u64> = s.frames.iter().map(|f| f.pts.unwrap()).collect();
        assert_eq!(pts, vec![(1 << 33) - 3600, 0, 3600]);
        let pcr: Vec<u64> = s.frames.iter().map(|f| f.pcr.unwrap() / 300).collect();
        assert_eq!(
            pcr,
            vec![
                base - PCR_LAG,
                (1 << 33) - PCR_LAG,
                (1 << 33) + 3600 - PCR_LAG
            ]
        );
        // A DTS under PCR_LAG wraps the PCR below zero.
        let mut m = TsMuxer::new(Some(Codec::H264), None);
        let s = parse_packets(&m.mux(&h264(10, true))).unwrap();
        assert_eq!(s.frames[0].pcr, Some(((1 << 33) + 10 - PCR_LAG) * 300));
    }

    #[test]
    fn pcr_never_steps_back_unflagged() {
        let mut m = TsMuxer::new(Some(Codec::H264), None);
        let first_video = |ts: &Bytes| -> Vec<u8> {
            let p = packets(ts)
                .into_iter()
                .find(|p| pid(p) == VIDEO_PID)
                .unwrap();
            p.to_vec()
        };
        m.mux(&h264(900_000, true));
        // A little back (B-frame-ish jitter): PCR held, no discontinuity.
        let p = first_video(&m.mux(&h264(900_000 - 9000, false)));
        assert_eq!((p[5] & 0x80, m.last_pcr), (0, Some(900_000 - PCR_LAG)));
        // The camera clock jumps back 9 s: flagged, PCR follows.
        let p = first_video(&m.mux(&h264(90_000, true)));
        assert_eq!((p[5] & 0x80, m.last_pcr), (0x80, Some(90_000 - PCR_LAG)));
    }

    #[test]
    fn pcr_filler_for_slow_video() {
        let mut m = TsMuxer::new(Some(Codec::H264), Some(Codec::Aac));
        let mut ts = m.mux(&h264(90_000, true)).to_vec();
        // 1 fps video: audio every 64 ms brings PCR-only packets.
        for i in 1..15u64 {
            ts.extend_from_slice(&m.mux(&adts(90_000 + 5760 * i, 200)));
        }
        ts.extend_from_slice(&m.mux(&h264(180_000, false)));
        let fillers: Vec<&[u8]> = packets(&ts)
            .into_iter()
            .filter(|p| pid(p) == VIDEO_PID && p[3] & 0x30 == 0x20)
            .collect();
        assert_eq!(fillers.len(), 7);
        let s = parse_packets(&ts).unwrap();
        assert_eq!(s.cc_errors, 0);
        assert_eq!(
            s.frames.last().unwrap().pcr,
            Some((180_000 - PCR_LAG) * 300)
        );
    }

    #[test]
    fn late_joiner_starts_on_pat() {
        let mut m = TsMuxer::new(Some(Codec::H264), Some(Codec::Aac));
        let mut outs = Vec::new();
        for i in 0..80u64 {
            outs.push((i % 25 == 0, m.mux(&h264(3600 * i, i % 25 == 0))));
            outs.push((false, m.mux(&adts(3600 * i + 100, 50))));
        }
        let join = outs.iter().position(|(k, _)| *k).unwrap();
        let join = outs.iter().skip(join + 1).position(|(k, _)| *k).unwrap() + join + 1;
        let cut: Vec<u8> = outs[join..].iter().flat_map(|(_, b)| b.to_vec()).collect();
        assert_eq!(pid(&cut), PAT_PID);
        let s = parse_packets(&cut).unwrap();
        assert_eq!((s.cc_errors, s.skipped_bytes), (0, 0));
        assert_eq!(s.frames.len(), outs.len() - join);
        assert!(s.frames[0].random_access && s.frames[0].pid == VIDEO_PID);
    }

    #[test]
    fn audio_only_every_frame_joins() {
        let mut m = TsMuxer::new(None, Some(Codec::Aac));
        let ts = mux_all(&mut m, &[adts(100, 300), adts(2020, 70_000)]);
        let s = parse_packets(&ts).unwrap();
        assert_eq!((s.pat_count, s.pcr_pid), (2, Some(AUDIO_PID)));
        assert_eq!(s.frames[1].data.len(), 70_000);
        assert!(s.frames.iter().all(|f| f.random_access && f.pcr.is_some()));
    }

    fn body(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), len)
    }

    /// Interleaved random video (H.264 or H.265, AUD or not, B-frame style
    /// pts > dts, small and large) and AAC frames.
    fn stream() -> impl Strategy<Value = (Codec, Vec<Frame>)> {
        let item = (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![8 => body(0..2000), 1 => body(60_000..120_000)],
            0u64..9000,
            proptest::option::of(body(7..1500)),
        );
        (
            any::<bool>(),
            0u64..(1 << 34),
            proptest::collection::vec(item, 1..10),
        )
            .prop_map(|(h265, mut dts, items)| {
                let codec = if h265 { Codec::H265 } else { Codec::H264 };
                let mut out = Vec::new();
                for (i, (aud, key, data, reorder, audio)) in items.into_iter().enumerate() {
                    let mut d = Vec::new();
                    if aud {
                        d.extend_from_slice(if h265 { AUD_H265 } else { AUD_H264 });
                    }
                    d.extend_from_slice(&[0, 0, 1, if h265 { 0x02 } else { 0x41 }, 1]);
                    d.extend(data);
                    out.push(frame(codec, dts + reorder, dts, key || i == 0, d));
                    if let Some(a) = audio {
                        out.push(frame(Codec::Aac, dts + 7, dts + 7, true, a));
                    }
                    dts += 3600;
                }
                (codec, out)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn mux_parse_round_trip((codec, frames) in stream()) {
            let mut m = TsMuxer::new(Some(codec), Some(Codec::Aac));
            let ts = mux_all(&mut m, &frames);
            let s = parse_packets(&ts).unwrap();
            prop_assert_eq!((s.cc_errors, s.skipped_bytes), (0, 0));
            prop_assert_eq!(s.packets, ts.len() / PACKET_SIZE);
            prop_assert_eq!(s.frames.len(), frames.len());
            for (got, f) in s.frames.iter().zip(&frames) {
                let pid = if f.codec.is_video() { VIDEO_PID } else { AUDIO_PID };
                prop_assert_eq!(got.pid, pid);
                prop_assert_eq!(got.stream_type, f.codec.stream_type());
                prop_assert_eq!(got.pts, Some(f.pts & TS_MASK));
                let dts = (f.pts != f.dts).then_some(f.dts & TS_MASK);
                prop_assert_eq!(got.dts, dts);
                prop_assert_eq!(&got.data, &expected_payload(f));
                if f.codec.is_video() {
                    let pcr = got.pcr.unwrap() / 300;
                    prop_assert!((f.dts.wrapping_sub(pcr) & TS_MASK) <= PCR_LAG);
                    prop_assert_eq!(got.random_access, f.keyframe);
                }
            }
        }

        #[test]
        fn parse_never_panics(data in body(0..4000)) {
            let _ = parse_packets(&data);
        }

        /// Synchronised packets on our PIDs with random headers and bodies.
        #[test]
        fn parse_packet_shaped_never_panics(
            pkts in proptest::collection::vec((0usize..5, any::<u8>(), any::<u8>(), body(184..185)), 0..30),
            skew in 0usize..3,
        ) {
            let mut data = vec![0x47; skew];
            for (p, b1, b3, rest) in pkts {
                let pid = [PAT_PID, PMT_PID, VIDEO_PID, AUDIO_PID, u16::from(b1)][p];
                data.extend_from_slice(&[0x47, b1 & 0xE0 | (pid >> 8) as u8, pid as u8, b3]);
                data.extend_from_slice(&rest);
            }
            let _ = parse_packets(&data);
        }

        #[test]
        fn parse_mutated_never_panics(
            (codec, frames) in stream(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
        ) {
            let mut ts = mux_all(&mut TsMuxer::new(Some(codec), Some(Codec::Aac)), &frames);
            for (i, b) in flips {
                let i = i.index(ts.len());
                ts[i] = b;
            }
            let _ = parse_packets(&ts);
            let _ = parse_packets(&ts[ts.len() / 3..]);
        }
    }

    /// Cross-check with an independent demuxer (mpeg2ts-reader).
    mod oracle {
        use mpeg2ts_reader::{demultiplex, packet_filter_switch, pes, psi};

        /// (pid, stream_type, pts, dts, payload)
        pub type Out = (u16, u8, Option<u64>, Option<u64>, Vec<u8>);

        pub struct Ctx {
            changeset: demultiplex::FilterChangeset<Switch>,
            pub frames: Vec<Out>,
            pub cc_errors: usize,
        }

        packet_filter_switch! {
            Switch<Ctx> {
                Pes: pes::PesPacketFilter<Ctx, Consumer>,
                Pat: demultiplex::PatPacketFilter<Ctx>,
                Pmt: demultiplex::PmtPacketFilter<Ctx>,
                Null: demultiplex::NullPacketFilter<Ctx>,
            }
        }

        impl demultiplex::DemuxContext for Ctx {
            type F = Switch;
            fn filter_changeset(&mut self) -> &mut demultiplex::FilterChangeset<Switch> {
                &mut self.changeset
            }
            fn construct(&mut self, req: demultiplex::FilterRequest<'_, '_>) -> Switch {
                use demultiplex::FilterRequest as R;
                match req {
                    R::ByPid(psi::pat::PAT_PID) => Switch::Pat(Default::default()),
                    R::Pmt {
                        pid,
                        program_number,
                    } => Switch::Pmt(demultiplex::PmtPacketFilter::new(pid, program_number)),
                    R::ByStream {
                        stream_type,
                        stream_info,
                        ..
                    } => Switch::Pes(pes::PesPacketFilter::new(Consumer {
                        pid: stream_info.elementary_pid().into(),
                        stream_type: stream_type.into(),
                        cur: None,
                    })),
                    _ => Switch::Null(Default::default()),
                }
            }
        }

        pub struct Consumer {
            pid: u16,
            stream_type: u8,
            cur: Option<Out>,
        }

        impl pes::ElementaryStreamConsumer<Ctx> for Consumer {
            fn start_stream(&mut self, _: &mut Ctx) {}
            fn begin_packet(&mut self, _: &mut Ctx, header: pes::PesHeader<'_>) {
                let pes::PesContents::Parsed(Some(p)) = header.contents() else {
                    panic!("unparsed PES header");
                };
                let (pts, dts) = match p.pts_dts() {
                    Ok(pes::PtsDts::PtsOnly(Ok(p))) => (Some(p.value()), None),
                    Ok(pes::PtsDts::Both {
                        pts: Ok(p),
                        dts: Ok(d),
                    }) => (Some(p.value()), Some(d.value())),
                    other => panic!("timestamps {other:?}"),
                };
                self.cur = Some((self.pid, self.stream_type, pts, dts, p.payload().to_vec()));
            }
            fn continue_packet(&mut self, _: &mut Ctx, data: &[u8]) {
                if let Some(c) = &mut self.cur {
                    c.4.extend_from_slice(data);
                }
            }
            fn end_packet(&mut self, ctx: &mut Ctx) {
                ctx.frames.extend(self.cur.take());
            }
            fn continuity_error(&mut self, ctx: &mut Ctx) {
                ctx.cc_errors += 1;
            }
        }

        pub fn demux(ts: &[u8]) -> Ctx {
            let mut ctx = Ctx {
                changeset: Default::default(),
                frames: Vec::new(),
                cc_errors: 0,
            };
            let mut d = demultiplex::Demultiplex::new(&mut ctx);
            d.push(&mut ctx, ts);
            ctx
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn mpeg2ts_reader_agrees((codec, mut frames) in stream()) {
            let n = frames.len();
            // The oracle ends a PES only at the next one on its PID.
            let last = frames.last().unwrap().dts + 3600;
            frames.push(frame(codec, last, last, false, vec![0, 0, 1, 2, 1]));
            frames.push(adts(last, 9));
            let ts = mux_all(&mut TsMuxer::new(Some(codec), Some(Codec::Aac)), &frames);
            let ctx = oracle::demux(&ts);
            prop_assert_eq!(ctx.cc_errors, 0);
            let mut got = ctx.frames;
            let mut want: Vec<oracle::Out> = frames[..n]
                .iter()
                .map(|f| {
                    let pid = if f.codec.is_video() { VIDEO_PID } else { AUDIO_PID };
                    let dts = (f.pts != f.dts).then_some(f.dts & TS_MASK);
                    (pid, f.codec.stream_type(), Some(f.pts & TS_MASK), dts, expected_payload(f))
                })
                .collect();
            // The oracle reports in completion order: compare per PID.
            got.sort_by_key(|f| f.0);
            want.sort_by_key(|f| f.0);
            prop_assert_eq!(got, want);
        }
    }
}
