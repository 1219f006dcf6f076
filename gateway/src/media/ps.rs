//! MPEG-2 Program Stream (ISO/IEC 13818-1 §2.5) as GB/T 28181 carries it:
//! a tolerant incremental demuxer, a per-frame muxer and an RTP payload cutter.
//!
//! Pure and sans-IO: bytes in, [`Frame`]s out (and back), and a typed
//! [`PsFault`] for what cannot be demuxed. The demuxer is
//! written for what cameras really send (see docs/gb28181.md §9 item 9):
//! missing or CRC-broken PSMs, bad `es_info_length`, PES_packet_length 0,
//! PES lengths that overflow 16 bits, zeros before start codes, garbage.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::{HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Codec, Frame};
use super::nal;
use super::pes::{find_start, put_ts, read_ts, TS_MASK};

/// Unconsumed input kept at most; beyond it the buffer is dropped (counted).
const MAX_BUFFER: usize = 4 * 1024 * 1024;
/// Largest access unit assembled; larger ones are dropped (counted) so a
/// stream that never shows a frame boundary cannot grow memory without bound.
const MAX_AU: usize = 4 * 1024 * 1024;
/// Input is fed to the parser in slices of this size so the buffer stays small
/// even when a caller pushes a huge chunk at once.
const PUSH_SLICE: usize = 64 * 1024;
/// Most PES payload bytes the muxer puts in one PES packet: PES_packet_length
/// is 16 bits and also counts the 3..13 header bytes after it.
const MAX_PES_PAYLOAD: usize = 65_000;
/// Pack headers, or input bytes, after which a stream that has shown no
/// audio or video PES is reported as [`PsFault::NoElementaryStream`] (or
/// [`PsFault::NotProgramStream`] without packs): about 2 s of video.
const NO_ES_PACKS: u32 = 50;
const NO_ES_BYTES: u64 = 256 * 1024;

/// Why (part of) a PS stream cannot be demuxed. [`PsDemuxer`] reports each
/// kind at most once ([`PsDemuxer::next_fault`]), so a receiver can count
/// and log causes per stream rather than per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PsFault {
    /// An audio or video PES header that is neither MPEG-2 syntax (the
    /// `10` marker, two flag bytes and header_data_length) nor MPEG-1
    /// syntax, or whose header_data_length is too short for the PTS/DTS its
    /// flags announce. The packet is skipped.
    #[error("missing PES flags (a PES header of stream {stream_id:#04x} is neither MPEG-2 nor MPEG-1 syntax)")]
    MissingPesFlags {
        /// The PES stream_id.
        stream_id: u8,
    },
    /// The PSM gives a stream a stream_type we cannot carry; its frames
    /// are dropped.
    #[error("unknown stream type {stream_type:#04x} for stream {stream_id:#04x} in the PSM (known: H.264 0x1b, H.265 0x24, G.711 0x90/0x91, AAC 0x0f)")]
    UnknownStreamType {
        /// The PES stream_id the PSM entry names.
        stream_id: u8,
        /// Its stream_type.
        stream_type: u8,
    },
    /// Pack headers, but no audio or video PES among them.
    #[error("no elementary stream ({packs} pack headers without an audio or video PES)")]
    NoElementaryStream {
        /// Pack headers seen when this was decided.
        packs: u32,
    },
    /// Neither a pack header nor an audio or video PES in the input so
    /// far: not MPEG-PS at all (raw H.264, MPEG-TS, or noise).
    #[error("not a program stream (no pack header or PES in the first {bytes} bytes)")]
    NotProgramStream {
        /// Bytes seen when this was decided.
        bytes: u64,
    },
}

impl PsFault {
    /// A short fixed name of the kind, for a metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            PsFault::MissingPesFlags { .. } => "missing_pes_flags",
            PsFault::UnknownStreamType { .. } => "unknown_stream_type",
            PsFault::NoElementaryStream { .. } => "no_elementary_stream",
            PsFault::NotProgramStream { .. } => "not_program_stream",
        }
    }

    /// Bit of the kind in [`PsDemuxer`]'s reported set.
    fn bit(&self) -> u8 {
        match self {
            PsFault::MissingPesFlags { .. } => 1,
            PsFault::UnknownStreamType { .. } => 2,
            PsFault::NoElementaryStream { .. } => 4,
            PsFault::NotProgramStream { .. } => 8,
        }
    }
}

/// Demuxer counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsStats {
    /// Bytes skipped while resynchronising on garbage, or payload without a
    /// PES start (orphan continuation data).
    pub bytes_skipped: u64,
    /// Bytes dropped because the buffer or an access unit hit its size cap.
    pub bytes_dropped: u64,
    /// Frames returned to the caller.
    pub frames_out: u64,
    /// Frames dropped: unknown stream_type in the PSM, or oversize.
    pub frames_dropped: u64,
    /// PSMs parsed.
    pub psm_seen: u64,
}

/// Per elementary stream assembly state.
#[derive(Debug)]
struct Stream {
    /// An access unit is being assembled.
    active: bool,
    pts: u64,
    dts: u64,
    data: Vec<u8>,
    /// Codec decided by sniffing (only used without a PSM entry); cached once
    /// parameter sets proved it, so later P-frames keep it.
    sniffed: Option<Codec>,
}

/// Incremental MPEG-PS demuxer: [`push`](Self::push) bytes in any chunking,
/// then take complete access units with [`next_frame`](Self::next_frame).
///
/// A video access unit is emitted when the next PES of the same stream with a
/// different PTS arrives (one frame of latency; RTP marker bits are not
/// trusted) or on [`flush`](Self::flush). Audio frames are emitted at the end
/// of their PES.
#[derive(Debug, Default)]
pub struct PsDemuxer {
    buf: Vec<u8>,
    pos: usize,
    /// stream_id → stream_type from the latest PSM.
    psm: Vec<(u8, u8)>,
    streams: HashMap<u8, Stream>,
    out: VecDeque<Frame>,
    /// Inside a PES with no usable length: its payload runs to the next
    /// PS-level start code.
    open_pes: Option<u8>,
    /// The last packet was a bounded video PES; if no start code follows it,
    /// its declared length was wrong (>64 KB overflow) and the payload goes on.
    overflow_candidate: Option<u8>,
    stats: PsStats,
    /// Faults found and not yet taken, and the kinds ever reported.
    faults: VecDeque<PsFault>,
    reported: u8,
    /// Input so far, pack headers so far, and whether any audio or video
    /// PES (readable or not) has been seen: for [`PsFault::NoElementaryStream`].
    bytes_in: u64,
    packs: u32,
    es_seen: bool,
}

/// Outcome of trying to parse one unit at the buffer head.
enum Step {
    /// Consumed this many bytes.
    Consumed(usize),
    /// Not enough bytes yet.
    NeedMore,
    /// Not a valid unit: skip one byte and resynchronise.
    Bad,
}

/// PES header fields.
enum PesHeader {
    Ok {
        pts: Option<u64>,
        dts: Option<u64>,
        /// Offset of the payload from the start code.
        payload_at: usize,
    },
    NeedMore,
    Bad,
}

fn is_video_id(id: u8) -> bool {
    (0xE0..=0xEF).contains(&id)
}

fn is_audio_id(id: u8) -> bool {
    (0xC0..=0xDF).contains(&id)
}

/// Start codes accepted while in sync: program end, pack, system header and
/// every stream id. NAL unit headers inside the payload are always < 0x80, so
/// they never look like these.
fn is_ps_id(id: u8) -> bool {
    id >= 0xB9
}

/// Start codes that end a resync scan: the ones a real stream starts with.
fn is_resync_id(id: u8) -> bool {
    matches!(id, 0xBA..=0xBC) || is_video_id(id) || is_audio_id(id)
}

fn u16_at(d: &[u8], i: usize) -> Option<usize> {
    match (d.get(i), d.get(i + 1)) {
        (Some(a), Some(b)) => Some(usize::from(*a) << 8 | usize::from(*b)),
        _ => None,
    }
}

/// Parse a PES header (MPEG-2 or MPEG-1 syntax); `d` starts at the start code.
fn parse_pes_header(d: &[u8]) -> PesHeader {
    let Some(&b6) = d.get(6) else {
        return PesHeader::NeedMore;
    };
    if b6 & 0xC0 == 0x80 {
        // MPEG-2: flags, header_data_length, optional fields.
        let (Some(&flags), Some(&hdl)) = (d.get(7), d.get(8)) else {
            return PesHeader::NeedMore;
        };
        let payload_at = 9 + usize::from(hdl);
        let Some(opt) = d.get(9..payload_at) else {
            return PesHeader::NeedMore;
        };
        let (pts, dts) = match flags >> 6 {
            2 => (read_ts(opt), None),
            3 => (read_ts(opt), opt.get(5..).and_then(read_ts)),
            _ => (None, None),
        };
        if flags >> 6 >= 2 && pts.is_none() {
            // header_data_length too short for the flagged fields.
            return PesHeader::Bad;
        }
        return PesHeader::Ok {
            pts,
            dts,
            payload_at,
        };
    }
    // MPEG-1: up to 16 stuffing bytes, optional STD buffer, then PTS/DTS.
    let mut i = 6;
    for _ in 0..16 {
        match d.get(i) {
            Some(0xFF) => i += 1,
            Some(_) => break,
            None => return PesHeader::NeedMore,
        }
    }
    match d.get(i) {
        Some(b) if b & 0xC0 == 0x40 => i += 2,
        Some(_) => {}
        None => return PesHeader::NeedMore,
    }
    let Some(&b) = d.get(i) else {
        return PesHeader::NeedMore;
    };
    let (len, has_dts) = match b >> 4 {
        2 => (5, false),
        3 => (10, true),
        _ if b == 0x0F => (1, false),
        _ => return PesHeader::Bad,
    };
    let Some(f) = d.get(i..i + len) else {
        return PesHeader::NeedMore;
    };
    let pts = if len >= 5 { read_ts(f) } else { None };
    let dts = if has_dts {
        f.get(5..).and_then(read_ts)
    } else {
        None
    };
    PesHeader::Ok {
        pts,
        dts,
        payload_at: i + len,
    }
}

/// Codec of a video AU without a PSM entry, and whether the answer is proven
/// by parameter sets (then it is cached for the stream).
fn sniff_video(data: &[u8]) -> (Codec, bool) {
    let mut h264_proof = false;
    for n in nal::split_annex_b(data) {
        // An H.265 VPS/SPS/PPS/AUD header is 0x40/0x42/0x44/0x46 followed by
        // layer 0 and a non-zero temporal id; in H.264 those first bytes
        // would be rare partition/reserved types.
        if let [b0, b1, ..] = n {
            let t = (b0 >> 1) & 0x3F;
            if b0 & 0x81 == 0 && (32..=35).contains(&t) && (1..=7).contains(b1) {
                return (Codec::H265, true);
            }
        }
        if matches!(nal::h264_type(n), Some(7 | 8)) {
            h264_proof = true;
        }
    }
    (Codec::H264, h264_proof)
}

impl PsDemuxer {
    /// A demuxer with empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> PsStats {
        self.stats
    }

    /// Feed bytes (any chunking: RTP payloads, TCP reads). Never panics.
    pub fn push(&mut self, data: &[u8]) {
        for slice in data.chunks(PUSH_SLICE) {
            if self.buf.len().saturating_sub(self.pos) + slice.len() > MAX_BUFFER {
                // Cannot happen with a sane stream (we never wait for more than
                // one 64 KiB packet), so drop rather than grow.
                self.stats.bytes_dropped += (self.buf.len() - self.pos) as u64;
                self.buf.clear();
                self.pos = 0;
                self.open_pes = None;
                self.overflow_candidate = None;
            }
            if self.pos > 0 && self.pos * 2 >= self.buf.len() {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.extend_from_slice(slice);
            self.bytes_in += slice.len() as u64;
            self.parse();
        }
        if !self.es_seen && (self.packs >= NO_ES_PACKS || self.bytes_in >= NO_ES_BYTES) {
            self.fault(if self.packs > 0 {
                PsFault::NoElementaryStream { packs: self.packs }
            } else {
                PsFault::NotProgramStream {
                    bytes: self.bytes_in,
                }
            });
        }
    }

    /// The next fault found (each kind once per demuxer), if any.
    pub fn next_fault(&mut self) -> Option<PsFault> {
        self.faults.pop_front()
    }

    fn fault(&mut self, f: PsFault) {
        if self.reported & f.bit() == 0 {
            self.reported |= f.bit();
            self.faults.push_back(f);
        }
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.out.pop_front()
    }

    /// Move every complete frame into `out`.
    pub fn drain(&mut self, out: &mut Vec<Frame>) {
        out.extend(self.out.drain(..));
    }

    /// The sender says a frame ended here (the RTP marker bit): emit the
    /// video access unit being assembled now instead of when the next
    /// frame's PES arrives, saving a frame of latency per hop. Done only
    /// when everything pushed has been parsed into whole PES packets, so a
    /// marker in the middle of a PES changes nothing.
    pub fn end_of_frame(&mut self) {
        if self.open_pes.is_some() || self.pos < self.buf.len() {
            return;
        }
        let ids: Vec<u8> = self
            .streams
            .iter()
            .filter(|(id, s)| s.active && is_video_id(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.emit(id);
        }
    }

    /// End of input: close an open PES and emit every pending access unit.
    /// Incomplete packets left in the buffer are counted as skipped.
    pub fn flush(&mut self) {
        let rest = self
            .buf
            .get(self.pos..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.buf.clear();
        self.pos = 0;
        if let Some(id) = self.open_pes.take() {
            self.append(id, &rest);
            self.end_pes(id);
        } else {
            self.stats.bytes_skipped += rest.len() as u64;
        }
        self.overflow_candidate = None;
        let ids: Vec<u8> = self
            .streams
            .iter()
            .filter(|(_, s)| s.active)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.emit(id);
        }
    }

    fn parse(&mut self) {
        loop {
            let avail = self.buf.get(self.pos..).unwrap_or_default();
            if let Some(id) = self.open_pes {
                match find_start(avail, 0, is_ps_id) {
                    Some(i) => {
                        let payload = avail.get(..i).unwrap_or_default().to_vec();
                        self.pos += i;
                        self.open_pes = None;
                        self.append(id, &payload);
                        if is_video_id(id) {
                            // Zeros before the start code are stuffing, not
                            // video: Annex-B data never ends in a zero byte.
                            let s = self.stream(id);
                            while s.data.last() == Some(&0) {
                                s.data.pop();
                            }
                        }
                        self.end_pes(id);
                    }
                    None => {
                        // Keep 3 bytes: a start code may straddle the next push.
                        let n = avail.len().saturating_sub(3);
                        let payload = avail.get(..n).unwrap_or_default().to_vec();
                        self.pos += n;
                        self.append(id, &payload);
                        return;
                    }
                }
                continue;
            }
            if avail.len() < 4 {
                return;
            }
            let id = match avail.get(..4) {
                Some([0, 0, 1, id]) if is_ps_id(*id) => *id,
                _ => {
                    if let Some(v) = self.overflow_candidate {
                        // Zero bytes before the next start code are padding
                        // some senders write, not a broken length.
                        let zeros = avail.iter().take_while(|b| **b == 0).count();
                        match (avail.get(zeros), avail.get(zeros + 1)) {
                            (None, _) | (Some(1), None) if zeros >= 2 => return,
                            (Some(1), Some(id)) if zeros >= 2 && is_ps_id(*id) => {
                                self.overflow_candidate = None;
                                self.stats.bytes_skipped += (zeros - 2) as u64;
                                self.pos += zeros - 2;
                                continue;
                            }
                            _ => {}
                        }
                        // A video PES whose length was cut to 16 bits: its
                        // payload runs on to the next start code.
                        self.overflow_candidate = None;
                        self.open_pes = Some(v);
                        continue;
                    }
                    match find_start(avail, 1, is_resync_id) {
                        Some(i) => {
                            self.stats.bytes_skipped += i as u64;
                            self.pos += i;
                        }
                        None => {
                            let n = avail.len().saturating_sub(3);
                            self.stats.bytes_skipped += n as u64;
                            self.pos += n;
                            return;
                        }
                    }
                    continue;
                }
            };
            self.overflow_candidate = None;
            let avail_len = avail.len();
            let step = match id {
                0xB9 => Step::Consumed(4),
                0xBA => {
                    self.packs = self.packs.saturating_add(1);
                    Self::pack_header_len(avail)
                }
                0xBC => self.parse_psm(),
                _ if is_video_id(id) || is_audio_id(id) => self.parse_pes(id),
                // System header, private streams, padding, others: skip by length.
                _ => match u16_at(avail, 4) {
                    Some(len) if avail.len() >= 6 + len => Step::Consumed(6 + len),
                    _ => Step::NeedMore,
                },
            };
            match step {
                // A header that claims more than is buffered: wait for the rest
                // (found by fuzzing: a 6-byte pack header start).
                Step::Consumed(n) if n > avail_len => return,
                Step::Consumed(n) => self.pos += n,
                Step::NeedMore => return,
                Step::Bad => {
                    self.stats.bytes_skipped += 1;
                    self.pos += 1;
                }
            }
        }
    }

    fn pack_header_len(d: &[u8]) -> Step {
        match d.get(4) {
            None => Step::NeedMore,
            Some(b) if b >> 6 == 1 => match d.get(13) {
                Some(s) => Step::Consumed(14 + usize::from(s & 7)),
                None => Step::NeedMore,
            },
            // MPEG-1 pack header: fixed 12 bytes.
            Some(b) if b >> 4 == 2 => Step::Consumed(12),
            Some(_) => Step::Bad,
        }
    }

    fn parse_psm(&mut self) -> Step {
        let d = self.buf.get(self.pos..).unwrap_or_default();
        let Some(len) = u16_at(d, 4) else {
            return Step::NeedMore;
        };
        let Some(pkt) = d.get(..6 + len) else {
            return Step::NeedMore;
        };
        // The CRC is deliberately not checked: real cameras get it wrong.
        // Entries are bounded by both es_map_length and the packet (minus CRC)
        // because es_info_length is also often wrong.
        let info_len = u16_at(pkt, 8).unwrap_or(0);
        let map_at = 10 + info_len;
        let map_len = u16_at(pkt, map_at).unwrap_or(0);
        let end = (map_at + 2 + map_len).min(pkt.len().saturating_sub(4));
        let mut map = Vec::new();
        let mut i = map_at + 2;
        while i + 4 <= end {
            if let (Some(&t), Some(&sid), Some(info)) =
                (pkt.get(i), pkt.get(i + 1), u16_at(pkt, i + 2))
            {
                map.push((sid, t));
                i += 4 + info;
            } else {
                break;
            }
        }
        if !map.is_empty() {
            self.psm = map;
        }
        self.stats.psm_seen += 1;
        Step::Consumed(6 + len)
    }

    fn parse_pes(&mut self, id: u8) -> Step {
        let d = self.buf.get(self.pos..).unwrap_or_default();
        let Some(len) = u16_at(d, 4) else {
            return Step::NeedMore;
        };
        self.es_seen = true;
        if len == 0 {
            // Unbounded PES (allowed for video): header now, payload streamed.
            return match parse_pes_header(d) {
                PesHeader::Ok {
                    pts,
                    dts,
                    payload_at,
                } => {
                    self.start_pes(id, pts, dts);
                    self.open_pes = Some(id);
                    Step::Consumed(payload_at)
                }
                PesHeader::NeedMore => Step::NeedMore,
                PesHeader::Bad => {
                    self.fault(PsFault::MissingPesFlags { stream_id: id });
                    Step::Bad
                }
            };
        }
        let Some(pkt) = d.get(..6 + len) else {
            return Step::NeedMore;
        };
        match parse_pes_header(pkt) {
            PesHeader::Ok {
                pts,
                dts,
                payload_at,
            } => {
                let payload = pkt.get(payload_at..).unwrap_or_default().to_vec();
                self.start_pes(id, pts, dts);
                self.append(id, &payload);
                self.end_pes(id);
                if is_video_id(id) {
                    self.overflow_candidate = Some(id);
                }
                Step::Consumed(6 + len)
            }
            // Header longer than the packet: skip the packet whole.
            PesHeader::NeedMore | PesHeader::Bad => {
                self.fault(PsFault::MissingPesFlags { stream_id: id });
                self.stats.bytes_skipped += (6 + len) as u64;
                Step::Consumed(6 + len)
            }
        }
    }

    fn stream(&mut self, id: u8) -> &mut Stream {
        self.streams.entry(id).or_insert_with(|| Stream {
            active: false,
            pts: 0,
            dts: 0,
            data: Vec::new(),
            sniffed: None,
        })
    }

    /// A PES header arrived: decide whether it starts a new access unit.
    fn start_pes(&mut self, id: u8, pts: Option<u64>, dts: Option<u64>) {
        let s = self.stream(id);
        let (active, cur) = (s.active, s.pts);
        match pts {
            Some(p) => {
                if active && (p != cur || is_audio_id(id)) {
                    self.emit(id);
                }
                let s = self.stream(id);
                if !s.active {
                    s.active = true;
                    s.pts = p;
                    s.dts = dts.unwrap_or(p);
                    s.data.clear();
                }
            }
            None => {
                if !active && is_audio_id(id) {
                    // Audio without PTS: reuse the last one rather than drop.
                    s.active = true;
                    s.dts = s.pts;
                    s.data.clear();
                }
            }
        }
    }

    fn append(&mut self, id: u8, payload: &[u8]) {
        let s = self.stream(id);
        if !s.active {
            // Continuation data of an AU whose start we never saw.
            self.stats.bytes_skipped += payload.len() as u64;
            return;
        }
        if s.data.len() + payload.len() > MAX_AU {
            let n = (s.data.len() + payload.len()) as u64;
            s.active = false;
            s.data = Vec::new();
            self.stats.bytes_dropped += n;
            self.stats.frames_dropped += 1;
            return;
        }
        s.data.extend_from_slice(payload);
    }

    /// A PES ended: audio frames are complete at their PES end.
    fn end_pes(&mut self, id: u8) {
        if is_audio_id(id) {
            self.emit(id);
        }
    }

    fn emit(&mut self, id: u8) {
        let psm_type = self.psm.iter().find(|(sid, _)| *sid == id).map(|e| e.1);
        let s = self.stream(id);
        if !s.active {
            return;
        }
        s.active = false;
        let data = std::mem::take(&mut s.data);
        let codec = match psm_type {
            Some(t) => Codec::from_stream_type(t),
            None if is_video_id(id) => Some(match s.sniffed {
                Some(c) => c,
                None => {
                    let (c, proven) = sniff_video(&data);
                    if proven {
                        s.sniffed = Some(c);
                    }
                    c
                }
            }),
            None => Some(match data.as_slice() {
                [0xFF, b, ..] if b & 0xF0 == 0xF0 => Codec::Aac,
                _ => Codec::G711A,
            }),
        };
        let (pts, dts) = (s.pts, s.dts);
        let Some(codec) = codec else {
            self.stats.frames_dropped += 1;
            if let Some(stream_type) = psm_type {
                self.fault(PsFault::UnknownStreamType {
                    stream_id: id,
                    stream_type,
                });
            }
            return;
        };
        let keyframe = if codec.is_video() {
            nal::is_keyframe(codec, &data)
        } else {
            true
        };
        self.stats.frames_out += 1;
        self.out.push_back(Frame {
            codec,
            pts,
            dts,
            keyframe,
            data: Bytes::from(data),
        });
    }
}

/// CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection, no xor-out),
/// as PSI sections and the PSM use.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// MPEG-PS muxer producing one PS "frame" (pack) per [`Frame`], as GB/T 28181
/// senders do: pack header, on keyframes a system header and PSM, then PES.
#[derive(Debug, Clone)]
pub struct PsMuxer {
    video: Option<Codec>,
    audio: Option<Codec>,
    /// The system header and PSM have been written at least once.
    headers_sent: bool,
}

impl PsMuxer {
    /// A muxer for a video stream (0xE0) and/or an audio stream (0xC0); the
    /// codecs go into the PSM.
    pub fn new(video: Option<Codec>, audio: Option<Codec>) -> Self {
        Self {
            video,
            audio,
            headers_sent: false,
        }
    }

    /// Mux one frame into a PS pack. Video AUs over ~65,000 bytes are split
    /// into several PES packets, PTS/DTS only in the first.
    pub fn mux(&mut self, frame: &Frame) -> Bytes {
        let mut out = BytesMut::with_capacity(frame.data.len() + 128);
        self.pack_header(&mut out, frame.dts);
        if !self.headers_sent || (frame.codec.is_video() && frame.keyframe) {
            self.system_header(&mut out);
            self.psm(&mut out);
            self.headers_sent = true;
        }
        let id = if frame.codec.is_video() { 0xE0 } else { 0xC0 };
        let mut first = true;
        let mut chunks = frame.data.chunks(MAX_PES_PAYLOAD);
        loop {
            let chunk = chunks.next();
            // An empty frame still gets one PES carrying its timestamps.
            if chunk.is_none() && !first {
                break;
            }
            let chunk = chunk.unwrap_or_default();
            let ts_len = match (first, frame.pts == frame.dts) {
                (false, _) => 0,
                (true, true) => 5,
                (true, false) => 10,
            };
            out.put_slice(&[0, 0, 1, id]);
            out.put_u16((3 + ts_len + chunk.len()) as u16);
            out.put_u8(0x80);
            match ts_len {
                5 => {
                    out.put_u8(0x80);
                    out.put_u8(5);
                    put_ts(&mut out, 0x2, frame.pts);
                }
                10 => {
                    out.put_u8(0xC0);
                    out.put_u8(10);
                    put_ts(&mut out, 0x3, frame.pts);
                    put_ts(&mut out, 0x1, frame.dts);
                }
                _ => {
                    out.put_u8(0);
                    out.put_u8(0);
                }
            }
            out.put_slice(chunk);
            first = false;
        }
        out.freeze()
    }

    fn pack_header(&self, out: &mut BytesMut, scr: u64) {
        let scr = scr & TS_MASK;
        // program_mux_rate in 50 bytes/s units: 8 Mbit/s, informative only.
        const MUX_RATE: u32 = 20_000;
        out.put_slice(&[0, 0, 1, 0xBA]);
        out.put_u8(0x40 | ((scr >> 30) as u8 & 0x07) << 3 | 0x04 | ((scr >> 28) as u8 & 0x03));
        out.put_u8((scr >> 20) as u8);
        out.put_u8(((scr >> 15) as u8 & 0x1F) << 3 | 0x04 | ((scr >> 13) as u8 & 0x03));
        out.put_u8((scr >> 5) as u8);
        // SCR extension 0.
        out.put_u8((scr as u8 & 0x1F) << 3 | 0x04);
        out.put_u8(0x01);
        out.put_u8((MUX_RATE >> 14) as u8);
        out.put_u8((MUX_RATE >> 6) as u8);
        out.put_u8((MUX_RATE as u8) << 2 | 0x03);
        // Reserved bits, no stuffing.
        out.put_u8(0xF8);
    }

    fn system_header(&self, out: &mut BytesMut) {
        const RATE_BOUND: u32 = 20_000;
        let n = usize::from(self.video.is_some()) + usize::from(self.audio.is_some());
        out.put_slice(&[0, 0, 1, 0xBB]);
        out.put_u16((6 + 3 * n) as u16);
        out.put_u8(0x80 | (RATE_BOUND >> 15) as u8);
        out.put_u8((RATE_BOUND >> 7) as u8);
        out.put_u8((RATE_BOUND as u8) << 1 | 1);
        // audio_bound, fixed_flag 0, CSPS_flag 0.
        out.put_u8((u8::from(self.audio.is_some())) << 2);
        // system_audio/video_lock_flag, marker, video_bound.
        out.put_u8(0xE0 | u8::from(self.video.is_some()));
        // packet_rate_restriction_flag 0, reserved.
        out.put_u8(0x7F);
        if self.video.is_some() {
            // P-STD buffer: scale 1 (1024 B units), 1 MiB.
            out.put_slice(&[0xE0, 0xE4, 0x00]);
        }
        if self.audio.is_some() {
            // P-STD buffer: scale 0 (128 B units), 4 KiB.
            out.put_slice(&[0xC0, 0xC0, 0x20]);
        }
    }

    fn psm(&self, out: &mut BytesMut) {
        let start = out.len();
        let entries: Vec<(u8, u8)> = [(self.video, 0xE0u8), (self.audio, 0xC0u8)]
            .iter()
            .filter_map(|(c, id)| c.map(|c| (c.stream_type(), *id)))
            .collect();
        out.put_slice(&[0, 0, 1, 0xBC]);
        out.put_u16((10 + 4 * entries.len()) as u16);
        // current_next_indicator 1, reserved, version 0 (the map never changes).
        out.put_u8(0xE0);
        out.put_u8(0xFF);
        out.put_u16(0);
        out.put_u16((4 * entries.len()) as u16);
        for (t, id) in entries {
            out.put_slice(&[t, id, 0, 0]);
        }
        let crc = crc32_mpeg2(out.get(start..).unwrap_or_default());
        out.put_u32(crc);
    }
}

/// Cut a PS frame into RTP payloads of at most `max_payload` bytes (1400 is
/// typical; 0 is treated as 1). The slices share the frame's buffer.
pub fn packetize(ps: &Bytes, max_payload: usize) -> Vec<Bytes> {
    let step = max_payload.max(1);
    let mut out = Vec::with_capacity(ps.len() / step + 1);
    let mut at = 0;
    while at < ps.len() {
        let end = (at + step).min(ps.len());
        out.push(ps.slice(at..end));
        at = end;
    }
    out
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

    fn demux_all(chunks: &[&[u8]]) -> (Vec<Frame>, PsStats) {
        let (out, st, _) = demux_faults(chunks);
        (out, st)
    }

    /// Frames, counters and every fault reported.
    fn demux_faults(chunks: &[&[u8]]) -> (Vec<Frame>, PsStats, Vec<PsFault>) {
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        let mut faults = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(f) = d.next_frame() {
                out.push(f);
            }
            faults.extend(std::iter::from_fn(|| d.next_fault()));
        }
        d.flush();
        d.drain(&mut out);
        faults.extend(std::iter::from_fn(|| d.next_fault()));
        (out, d.stats(), faults)
    }

    /// `ps` with the two flag bytes after PES_packet_length removed from
    /// every video PES header (test data holds no stray `00 00 01 E0`).
    fn strip_video_pes_flags(ps: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ps.len());
        let mut i = 0;
        while i < ps.len() {
            if ps[i..].starts_with(&[0, 0, 1, 0xE0]) && i + 8 <= ps.len() {
                let len = usize::from(ps[i + 4]) << 8 | usize::from(ps[i + 5]);
                out.extend_from_slice(&ps[i..i + 4]);
                out.extend_from_slice(&(len.saturating_sub(2) as u16).to_be_bytes());
                let end = if len == 0 { i + 8 } else { i + 6 + len };
                out.extend_from_slice(&ps[i + 8..end]);
                i = end;
            } else {
                out.push(ps[i]);
                i += 1;
            }
        }
        out
    }

    fn split_av(frames: &[Frame]) -> (Vec<Frame>, Vec<Frame>) {
        frames.iter().cloned().partition(|f| f.codec.is_video())
    }

    /// An Annex-B AU from NAL (header, body) pairs; bodies hold no zeros so
    /// no spurious start codes appear.
    fn annex_b(nals: &[(Vec<u8>, Vec<u8>)], four: bool) -> Vec<u8> {
        let mut v = Vec::new();
        for (h, b) in nals {
            if four {
                v.push(0);
            }
            v.extend_from_slice(&[0, 0, 1]);
            v.extend_from_slice(h);
            v.extend_from_slice(b);
        }
        v
    }

    fn video(codec: Codec, pts: u64, dts: u64, data: Vec<u8>) -> Frame {
        Frame {
            codec,
            pts,
            dts,
            keyframe: nal::is_keyframe(codec, &data),
            data: Bytes::from(data),
        }
    }

    fn audio(codec: Codec, pts: u64, data: Vec<u8>) -> Frame {
        Frame {
            codec,
            pts,
            dts: pts,
            keyframe: true,
            data: Bytes::from(data),
        }
    }

    fn body(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, len)
    }

    fn h264_au() -> impl Strategy<Value = (bool, Vec<u8>)> {
        let size = prop_oneof![9 => 0usize..2000, 1 => 60_000usize..140_000];
        (any::<bool>(), any::<bool>(), any::<bool>(), size)
            .prop_flat_map(|(key, aud, four, n)| {
                (
                    Just(key),
                    Just(aud),
                    Just(four),
                    body(n..n + 1),
                    body(1..20),
                )
            })
            .prop_map(|(key, aud, four, slice, ps)| {
                let mut nals = Vec::new();
                if aud {
                    nals.push((vec![0x09], vec![0xF0]));
                }
                if key {
                    nals.push((vec![0x67], ps.clone()));
                    nals.push((vec![0x68], ps));
                    nals.push((vec![0x65], slice));
                } else {
                    nals.push((vec![0x41], slice));
                }
                (key, annex_b(&nals, four))
            })
    }

    /// (video frames, audio frames, interleaved input order)
    fn stream() -> impl Strategy<Value = (Vec<Frame>, Vec<Frame>, Vec<Frame>)> {
        let frame = (
            h264_au(),
            1u64..6000,
            0u64..3000,
            proptest::option::of(body(1..400)),
        );
        (
            0u64..(1 << 32),
            any::<bool>(),
            proptest::collection::vec(frame, 1..12),
        )
            .prop_map(|(base, h265, items)| {
                let codec = if h265 { Codec::H265 } else { Codec::H264 };
                let mut pts = base + 5000;
                let (mut v, mut a, mut all) = (Vec::new(), Vec::new(), Vec::new());
                for ((_, data), step, back, aud) in items {
                    pts += step;
                    let f = video(codec, pts, pts - back, data);
                    v.push(f.clone());
                    all.push(f);
                    if let Some(samples) = aud {
                        let f = audio(Codec::G711A, pts + 1, samples);
                        a.push(f.clone());
                        all.push(f);
                    }
                }
                (v, a, all)
            })
    }

    fn mux_all(frames: &[Frame], video: Option<Codec>, audio: Option<Codec>) -> Vec<u8> {
        let mut m = PsMuxer::new(video, audio);
        frames.iter().flat_map(|f| m.mux(f).to_vec()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn mux_demux_round_trip((v, a, all) in stream()) {
            let codec = v[0].codec;
            let ps = mux_all(&all, Some(codec), Some(Codec::G711A));
            let (out, st, faults) = demux_faults(&[&ps]);
            let (ov, oa) = split_av(&out);
            prop_assert_eq!(ov, v);
            prop_assert_eq!(oa, a);
            prop_assert_eq!(faults, vec![]);
            prop_assert_eq!(st.bytes_skipped, 0);
            prop_assert_eq!(st.frames_out as usize, all.len());
        }

        #[test]
        fn arbitrary_chunking((v, a, all) in stream(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
            let ps = mux_all(&all, Some(v[0].codec), Some(Codec::G711A));
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(ps.len() + 1)).collect();
            at.push(0);
            at.push(ps.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &ps[w[0]..w[1]]).collect();
            let (out, _) = demux_all(&chunks);
            let (ov, oa) = split_av(&out);
            prop_assert_eq!(ov, v);
            prop_assert_eq!(oa, a);
        }

        #[test]
        fn packetize_reassembles((_, _, all) in stream(), max in 1usize..2000) {
            let ps = Bytes::from(mux_all(&all, Some(Codec::H264), Some(Codec::G711A)));
            let parts = packetize(&ps, max);
            prop_assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= max));
            prop_assert_eq!(parts.concat(), ps.to_vec());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
            let cut = cut.min(data.len());
            let _ = demux_all(&[&data[..cut], &data[cut..]]);
        }

        #[test]
        fn mutated_stream_never_panics((_, _, all) in stream(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20)) {
            let mut ps = mux_all(&all, Some(Codec::H264), Some(Codec::G711A));
            for (i, b) in flips {
                let i = i.index(ps.len());
                ps[i] = b;
            }
            let (_, _, faults) = demux_faults(&[&ps]);
            // Each kind at most once, however often it happens.
            let mut kinds: Vec<&str> = faults.iter().map(PsFault::cause).collect();
            kinds.dedup();
            prop_assert_eq!(kinds.len(), faults.len());
        }

        #[test]
        fn stripped_pes_flags_never_panic_and_are_named((_, _, all) in stream(), cut in any::<prop::sample::Index>()) {
            let video: Vec<Frame> = all.into_iter().filter(|f| f.codec.is_video()).collect();
            let ps = strip_video_pes_flags(&mux_all(&video, Some(Codec::H264), None));
            let cut = cut.index(ps.len() + 1);
            let (out, _, faults) = demux_faults(&[&ps[..cut], &ps[cut..]]);
            prop_assert!(out.is_empty());
            prop_assert_eq!(faults, vec![PsFault::MissingPesFlags { stream_id: 0xE0 }]);
        }
    }

    #[test]
    fn idr_200k_spans_pes() {
        let slice = vec![0x5Au8; 200_000];
        let data = annex_b(
            &[
                (vec![0x67], vec![1, 2, 3]),
                (vec![0x68], vec![4]),
                (vec![0x65], slice),
            ],
            true,
        );
        let f = video(Codec::H264, 90_000, 90_000, data);
        assert!(f.keyframe);
        let ps = PsMuxer::new(Some(Codec::H264), None).mux(&f);
        let pes = ps.windows(4).filter(|w| w == &[0, 0, 1, 0xE0]).count();
        assert_eq!(pes, 4);
        let parts = packetize(&ps, 1400);
        let chunks: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        let (out, st) = demux_all(&chunks);
        assert_eq!(out, vec![f]);
        assert_eq!(st.frames_out, 1);
    }

    #[test]
    fn end_of_frame_emits_at_once_but_not_mid_packet() {
        let data = vec![0, 0, 0, 1, 0x65, 0x88, 0x84, 0x21, 0xA0];
        let f = video(Codec::H264, 3600, 3600, data.repeat(400));
        let ps = PsMuxer::new(Some(Codec::H264), None).mux(&f);
        let parts = packetize(&ps, 1400);
        let mut d = PsDemuxer::new();
        let (last, rest) = parts.split_last().unwrap();
        for p in rest {
            d.push(p);
            // A marker on a packet inside the frame ends nothing.
            d.end_of_frame();
            assert!(d.next_frame().is_none());
        }
        d.push(last);
        assert!(
            d.next_frame().is_none(),
            "without the marker: waits for the next frame"
        );
        d.end_of_frame();
        assert_eq!(d.next_frame(), Some(f));
    }

    #[test]
    fn psm_crc_is_mpeg2() {
        // CRC-32/MPEG-2 check value.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        let ps = PsMuxer::new(Some(Codec::H265), Some(Codec::G711U)).mux(&video(
            Codec::H265,
            1,
            1,
            vec![0, 0, 1, 0x26, 1],
        ));
        let at = ps.windows(4).position(|w| w == [0, 0, 1, 0xBC]).unwrap();
        let len = usize::from(ps[at + 4]) << 8 | usize::from(ps[at + 5]);
        let psm = &ps[at..at + 6 + len];
        // CRC over the whole section including the CRC is zero.
        assert_eq!(crc32_mpeg2(psm), 0);
        assert_eq!(&psm[12..20], &[0x24, 0xE0, 0, 0, 0x91, 0xC0, 0, 0]);
    }

    #[test]
    fn bad_psm_crc_accepted() {
        // Data has no VPS, so H.265 can only come from the PSM.
        let f = video(Codec::H265, 3000, 3000, vec![0, 0, 1, 0x26, 1, 7, 7]);
        let mut ps = PsMuxer::new(Some(Codec::H265), None).mux(&f).to_vec();
        let at = ps.windows(4).position(|w| w == [0, 0, 1, 0xBC]).unwrap();
        let len = usize::from(ps[at + 4]) << 8 | usize::from(ps[at + 5]);
        ps[at + 6 + len - 1] ^= 0x55;
        let (out, st) = demux_all(&[&ps]);
        assert_eq!(out, vec![f]);
        assert!(out[0].keyframe);
        assert_eq!(st.psm_seen, 1);
    }

    /// A hand-built stream without system header or PSM, as `ffmpeg -f vob`
    /// or some cameras write; the second PES uses PES_packet_length 0.
    fn no_psm_stream(aus: &[(u64, &[u8])], audio_frames: &[(u64, &[u8])]) -> Vec<u8> {
        let m = PsMuxer::new(None, None);
        let mut out = BytesMut::new();
        for (i, (pts, data)) in aus.iter().enumerate() {
            m.pack_header(&mut out, *pts);
            out.put_slice(&[0, 0, 1, 0xE0]);
            let unbounded = i % 2 == 1;
            out.put_u16(if unbounded {
                0
            } else {
                (8 + data.len()) as u16
            });
            out.put_slice(&[0x80, 0x80, 5]);
            put_ts(&mut out, 2, *pts);
            out.put_slice(data);
            if let Some((apts, a)) = audio_frames.get(i) {
                out.put_slice(&[0, 0, 1, 0xC0]);
                out.put_u16((8 + a.len()) as u16);
                out.put_slice(&[0x80, 0x80, 5]);
                put_ts(&mut out, 2, *apts);
                out.put_slice(a);
            }
        }
        out.to_vec()
    }

    #[test]
    fn sniffs_h264_without_psm() {
        let idr = annex_b(
            &[
                (vec![0x67], vec![0x42, 1]),
                (vec![0x68], vec![0xCE]),
                (vec![0x65], vec![0x88; 50]),
            ],
            true,
        );
        let p = annex_b(&[(vec![0x41], vec![0x9A; 30])], false);
        let ps = no_psm_stream(&[(3600, &idr), (7200, &p), (10800, &p)], &[]);
        let (out, st) = demux_all(&[&ps]);
        assert_eq!(
            out,
            vec![
                video(Codec::H264, 3600, 3600, idr),
                video(Codec::H264, 7200, 7200, p.clone()),
                video(Codec::H264, 10800, 10800, p),
            ]
        );
        assert!(out[0].keyframe && !out[1].keyframe);
        assert_eq!(st.psm_seen, 0);
    }

    #[test]
    fn sniffs_h265_without_psm() {
        let idr = annex_b(
            &[
                (vec![0x46, 0x01], vec![0x50]),
                (vec![0x40, 0x01], vec![0x0C, 1]),
                (vec![0x42, 0x01], vec![1, 1]),
                (vec![0x44, 0x01], vec![0xC1]),
                (vec![0x26, 0x01], vec![0xAF; 40]),
            ],
            true,
        );
        // TRAIL_R (1): 0x02 0x01 — would read as H.264 type 2 if sniffed alone.
        let p = annex_b(&[(vec![0x02, 0x01], vec![0xD0; 20])], true);
        let g711 = vec![0xD5u8; 160];
        let adts = vec![0xFF, 0xF1, 0x50, 0x80, 1, 0x1F, 0xFC, 9, 9];
        let ps = no_psm_stream(
            &[(3600, &idr), (7200, &p), (10800, &p)],
            &[(3601, &g711), (7201, &adts)],
        );
        let (out, _) = demux_all(&[&ps]);
        let (v, a) = split_av(&out);
        assert_eq!(
            v,
            vec![
                video(Codec::H265, 3600, 3600, idr),
                video(Codec::H265, 7200, 7200, p.clone()),
                video(Codec::H265, 10800, 10800, p),
            ]
        );
        assert!(v[0].keyframe && !v[1].keyframe);
        assert_eq!(
            a,
            vec![
                audio(Codec::G711A, 3601, g711),
                audio(Codec::Aac, 7201, adts)
            ]
        );
    }

    #[test]
    fn garbage_before_pack_resyncs() {
        let f1 = video(
            Codec::H264,
            100,
            100,
            annex_b(&[(vec![0x65], vec![1; 99])], true),
        );
        let f2 = video(
            Codec::H264,
            200,
            200,
            annex_b(&[(vec![0x41], vec![2; 99])], true),
        );
        let mut ps: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8 | 0x80).collect();
        // Include an in-payload NAL start code in the garbage: not a resync point.
        ps[10..14].copy_from_slice(&[0, 0, 1, 0x41]);
        ps.extend(mux_all(&[f1.clone(), f2.clone()], Some(Codec::H264), None));
        let (out, st) = demux_all(&[&ps[..50], &ps[50..]]);
        assert_eq!(out, vec![f1, f2]);
        assert_eq!(st.bytes_skipped, 100);
    }

    #[test]
    fn overflowed_pes_length_recovered() {
        // A 70 KB AU in one PES whose 16-bit length wrapped (MiBee pull/430).
        let data = annex_b(&[(vec![0x65], vec![7; 70_000])], true);
        let m = PsMuxer::new(None, None);
        let mut out = BytesMut::new();
        m.pack_header(&mut out, 900);
        out.put_slice(&[0, 0, 1, 0xE0]);
        out.put_u16(((8 + data.len()) & 0xFFFF) as u16);
        out.put_slice(&[0x80, 0x80, 5]);
        put_ts(&mut out, 2, 900);
        out.put_slice(&data);
        // Zeros before the next start code are skipped, not glued on.
        out.put_slice(&[0, 0]);
        let next = annex_b(&[(vec![0x41], vec![3; 10])], true);
        out.put_slice(&PsMuxer::new(Some(Codec::H264), None).mux(&video(
            Codec::H264,
            1800,
            1800,
            next.clone(),
        )));
        let (frames, st) = demux_all(&[&out]);
        let summary: Vec<(u64, usize)> = frames.iter().map(|f| (f.pts, f.data.len())).collect();
        assert_eq!(
            summary,
            vec![(900, data.len()), (1800, next.len())],
            "{st:?}"
        );
        assert!(frames[0].data == data && frames[1].data == next);
    }

    #[test]
    fn mpeg1_pack_header_and_private_streams_skipped() {
        let data = annex_b(&[(vec![0x65], vec![5; 20])], true);
        let mut ps = vec![0, 0, 1, 0xBA, 0x21, 0, 1, 0, 1, 0x80, 0, 1];
        ps.extend_from_slice(&[0, 0, 1, 0xBD, 0, 3, 1, 2, 3]);
        ps.extend_from_slice(&[0, 0, 1, 0xBE, 0, 2, 0xFF, 0xFF]);
        ps.extend_from_slice(&[0, 0, 1, 0xE0]);
        ps.extend_from_slice(&((data.len() + 6) as u16).to_be_bytes());
        // MPEG-1 PES header: one stuffing byte, then PTS.
        let mut hdr = BytesMut::new();
        hdr.put_u8(0xFF);
        put_ts(&mut hdr, 2, 4500);
        ps.extend_from_slice(&hdr);
        ps.extend_from_slice(&data);
        let (out, st) = demux_all(&[&ps]);
        assert_eq!(out, vec![video(Codec::H264, 4500, 4500, data)]);
        assert_eq!(st.bytes_skipped, 0);
    }

    #[test]
    fn truncated_pack_header_waits_instead_of_panicking() {
        // Found by fuzzing: a pack header cut after 6 bytes.
        let mut d = PsDemuxer::new();
        d.push(&[0, 0, 1, 0xBA, 0x2D, 0]);
        d.push(&[0, 0, 1, 0xBA, 0x2D, 0]);
        d.flush();
        let mut out = Vec::new();
        d.drain(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn oversize_au_is_dropped_and_counted() {
        // An unbounded PES that never ends must not grow memory without bound.
        let mut d = PsDemuxer::new();
        let mut hdr = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        let mut ts = BytesMut::new();
        put_ts(&mut ts, 2, 10);
        hdr.extend_from_slice(&ts);
        hdr.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        d.push(&hdr);
        let chunk = vec![0x11u8; 1 << 20];
        for _ in 0..6 {
            d.push(&chunk);
        }
        let st = d.stats();
        assert_eq!(st.frames_dropped, 1);
        assert!(st.bytes_dropped >= MAX_AU as u64);
        assert!(d.buf.len() <= PUSH_SLICE * 2);
        assert!(d.streams.values().all(|s| s.data.capacity() <= MAX_AU));
        // A fresh pack afterwards still demuxes.
        let f = video(Codec::H264, 99, 99, vec![0, 0, 1, 0x65, 1]);
        d.push(&PsMuxer::new(Some(Codec::H264), None).mux(&f));
        d.flush();
        assert_eq!(d.next_frame(), Some(f));
    }

    fn h264_frames(n: u64) -> Vec<Frame> {
        let idr = annex_b(
            &[
                (vec![0x67], vec![0x42, 1]),
                (vec![0x68], vec![0xCE]),
                (vec![0x65], vec![0x88; 50]),
            ],
            true,
        );
        let p = annex_b(&[(vec![0x41], vec![0x9A; 30])], true);
        (0..n)
            .map(|i| {
                let data = if i % 10 == 0 { idr.clone() } else { p.clone() };
                video(Codec::H264, 3600 * (i + 1), 3600 * (i + 1), data)
            })
            .collect()
    }

    #[test]
    fn missing_pes_flags_are_reported_once_and_nothing_comes_out() {
        let ps = mux_all(&h264_frames(20), Some(Codec::H264), Some(Codec::G711A));
        let (out, st, faults) = demux_faults(&[&strip_video_pes_flags(&ps)]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(faults, vec![PsFault::MissingPesFlags { stream_id: 0xE0 }]);
        assert_eq!(faults[0].cause(), "missing_pes_flags");
        assert_eq!(st.psm_seen, 2, "the rest of the stream is read");
        // Unbounded PES (PES_packet_length 0) too.
        let idr = h264_frames(1).remove(0);
        let ps = no_psm_stream(&[(3600, &idr.data), (7200, &idr.data)], &[]);
        let (out, _, faults) = demux_faults(&[&strip_video_pes_flags(&ps)]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(faults, vec![PsFault::MissingPesFlags { stream_id: 0xE0 }]);
    }

    #[test]
    fn an_unknown_stream_type_in_the_psm_is_named() {
        let mut ps = mux_all(&h264_frames(3), Some(Codec::H264), None);
        // MPEG-4 Part 2 video (0x10) instead of H.264 in the PSM's first entry.
        let at = ps.windows(4).position(|w| w == [0, 0, 1, 0xBC]).unwrap();
        assert_eq!(ps[at + 12..at + 14], [0x1B, 0xE0]);
        ps[at + 12] = 0x10;
        let (out, st, faults) = demux_faults(&[&ps]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(st.frames_dropped, 3);
        assert_eq!(
            faults,
            vec![PsFault::UnknownStreamType {
                stream_id: 0xE0,
                stream_type: 0x10
            }]
        );
        assert!(faults[0].to_string().contains("0x10"), "{}", faults[0]);
    }

    #[test]
    fn packs_without_an_elementary_stream_are_named_after_enough_packs() {
        let m = PsMuxer::new(None, None);
        let mut d = PsDemuxer::new();
        for i in 0..NO_ES_PACKS {
            let mut pack = BytesMut::new();
            m.pack_header(&mut pack, u64::from(i) * 3600);
            // A private stream, which we do not read.
            pack.put_slice(&[0, 0, 1, 0xBD, 0, 3, 1, 2, 3]);
            assert_eq!(d.next_fault(), None, "pack {i}");
            d.push(&pack);
        }
        assert_eq!(
            d.next_fault(),
            Some(PsFault::NoElementaryStream { packs: NO_ES_PACKS })
        );
        d.push(&[0, 0, 1, 0xBA]);
        assert_eq!(d.next_fault(), None, "once");
    }

    #[test]
    fn input_that_is_not_ps_at_all_is_named() {
        // Raw H.264, as a misconfigured device sends it instead of PS.
        let au = annex_b(&[(vec![0x41], vec![0x9A; 1000])], true);
        let mut d = PsDemuxer::new();
        let mut sent = 0;
        while sent < NO_ES_BYTES {
            assert_eq!(d.next_fault(), None);
            d.push(&au);
            sent += au.len() as u64;
        }
        assert_eq!(
            d.next_fault(),
            Some(PsFault::NotProgramStream { bytes: sent })
        );
        assert_eq!(d.stats().frames_out, 0);
    }
}
