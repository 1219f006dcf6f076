//! RTP (RFC 3550) packets and RTP-over-TCP framing (RFC 4571 and RTSP-style
//! `$` interleaving), sans-IO: no sockets, no async, no panics on any input.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Size of the fixed RTP header (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// Errors from RTP parsing and framing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RtpError {
    /// The packet ends before a part of it that its header announces.
    #[error("RTP packet truncated in the {what}: {len} bytes, need {need}")]
    Truncated {
        /// Which part is cut off ("fixed header", "CSRC list", ...).
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes the header requires.
        need: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0} at byte 0, expected 2")]
    BadVersion(u8),
    /// The padding count (last byte) is zero or larger than the payload.
    #[error(
        "RTP padding count {pad} at the last byte exceeds the {available} payload bytes (or is 0)"
    )]
    BadPadding {
        /// The padding count byte.
        pad: u8,
        /// Bytes between the header and the end of the packet.
        available: usize,
    },
    /// A packet too large for the 16-bit RFC 4571 length prefix.
    #[error("RTP packet of {0} bytes does not fit a 16-bit TCP length prefix")]
    TooLarge(usize),
    /// The TCP deframer dropped bytes that did not form a plausible frame and
    /// has re-locked on the stream. Informational: the deframer is usable,
    /// keep calling [`TcpDeframer::next_packet`].
    #[error("RTP/TCP stream resynchronised: skipped {skipped} garbage bytes ending at stream offset {offset}")]
    Resync {
        /// Garbage bytes discarded.
        skipped: usize,
        /// Stream offset (bytes pushed so far) where the new frame starts.
        offset: u64,
    },
}

/// One RTP packet. Parsing skips any header extension and strips padding;
/// building writes neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// The M bit; GB senders set it on a frame's last packet (not reliable).
    pub marker: bool,
    /// Payload type, 7 bits (96 = PS in GB/T 28181).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp (90 kHz for video).
    pub timestamp: u32,
    /// Synchronisation source; GB binds it to the SDP `y=` value.
    pub ssrc: u32,
    /// Contributing sources (at most 15 are written).
    pub csrc: Vec<u32>,
    /// The payload, a zero-copy slice of the parsed buffer.
    pub payload: Bytes,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *s.first()?,
        *s.get(1)?,
        *s.get(2)?,
        *s.get(3)?,
    ]))
}

impl RtpPacket {
    /// Parses one RTP packet; the payload shares `data`'s allocation.
    pub fn parse(data: Bytes) -> Result<RtpPacket, RtpError> {
        let b = &data[..];
        let len = b.len();
        let trunc = |what, need| RtpError::Truncated { what, len, need };
        let (b0, b1) = match (b.first(), b.get(1)) {
            (Some(&b0), Some(&b1)) if len >= RTP_HEADER_LEN => (b0, b1),
            _ => return Err(trunc("fixed header", RTP_HEADER_LEN)),
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let padding = b0 & 0x20 != 0;
        let extension = b0 & 0x10 != 0;
        let cc = usize::from(b0 & 0x0f);
        let sequence = be16(b, 2).ok_or(trunc("fixed header", RTP_HEADER_LEN))?;
        let timestamp = be32(b, 4).ok_or(trunc("fixed header", RTP_HEADER_LEN))?;
        let ssrc = be32(b, 8).ok_or(trunc("fixed header", RTP_HEADER_LEN))?;

        let mut off = RTP_HEADER_LEN + 4 * cc;
        if len < off {
            return Err(trunc("CSRC list", off));
        }
        let csrc = (0..cc)
            .filter_map(|i| be32(b, RTP_HEADER_LEN + 4 * i))
            .collect();

        if extension {
            // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words.
            let words = be16(b, off + 2).ok_or(trunc("extension header", off + 4))?;
            off += 4 + 4 * usize::from(words);
            if len < off {
                return Err(trunc("extension body", off));
            }
        }

        let mut end = len;
        if padding {
            let pad = b.last().copied().unwrap_or(0);
            let available = len - off;
            if pad == 0 || usize::from(pad) > available {
                return Err(RtpError::BadPadding { pad, available });
            }
            end -= usize::from(pad);
        }

        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence,
            timestamp,
            ssrc,
            csrc,
            payload: data.slice(off..end),
        })
    }

    /// Appends the wire form to `out`. The payload type is masked to 7 bits
    /// and only the first 15 CSRCs are written (the count field is 4 bits).
    pub fn write(&self, out: &mut BytesMut) {
        let cc = self.csrc.len().min(15);
        out.reserve(RTP_HEADER_LEN + 4 * cc + self.payload.len());
        // cc <= 15, so the cast cannot truncate.
        out.put_u8(0x80 | cc as u8);
        out.put_u8(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.put_u16(self.sequence);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
        for c in self.csrc.iter().take(cc) {
            out.put_u32(*c);
        }
        out.put_slice(&self.payload);
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out.freeze()
    }
}

/// Prefixes `packet` with its RFC 4571 16-bit big-endian length, for sending
/// over TCP. Fails for packets over 65535 bytes.
pub fn frame_rfc4571(packet: &[u8]) -> Result<Bytes, RtpError> {
    let len = u16::try_from(packet.len()).map_err(|_| RtpError::TooLarge(packet.len()))?;
    let mut out = BytesMut::with_capacity(2 + packet.len());
    out.put_u16(len);
    out.put_slice(packet);
    Ok(out.freeze())
}

/// Append `packet` to `out` framed as RFC 4571 (`len16` then the packet),
/// so a sender can gather a whole frame's packets into one write. On
/// error `out` is as it was.
pub fn put_rfc4571(out: &mut BytesMut, packet: &RtpPacket) -> Result<(), RtpError> {
    let at = out.len();
    out.put_u16(0);
    packet.write(out);
    let len = out.len() - at - 2;
    match u16::try_from(len) {
        Ok(n) => {
            if let Some(head) = out.get_mut(at..at + 2) {
                head.copy_from_slice(&n.to_be_bytes());
            }
            Ok(())
        }
        Err(_) => {
            out.truncate(at);
            Err(RtpError::TooLarge(len))
        }
    }
}

/// The TCP framing a sender uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFraming {
    /// RFC 4571: `len16` then the packet.
    Rfc4571,
    /// RTSP-style (RFC 2326 §10.12): `$`, channel, `len16`, then the packet.
    Interleaved,
}

impl TcpFraming {
    fn header_len(self) -> usize {
        match self {
            TcpFraming::Rfc4571 => 2,
            TcpFraming::Interleaved => 4,
        }
    }
}

/// What a look at a possible frame header found.
enum Hdr {
    /// Not enough bytes buffered to decide.
    NeedMore,
    /// Not a plausible frame header.
    Bad,
    /// Plausible: header length and packet length.
    Ok(usize, usize),
}

/// A frame header at `at` is plausible when its length is at least an RTP
/// header (12) and the first packet byte carries RTP version 2. The length
/// can never exceed 65535 since the field is 16-bit.
fn header_at(buf: &[u8], at: usize, f: TcpFraming) -> Hdr {
    let h = f.header_len();
    let Some(first) = buf.get(at + h).copied() else {
        return Hdr::NeedMore;
    };
    if f == TcpFraming::Interleaved && buf.get(at).copied() != Some(b'$') {
        return Hdr::Bad;
    }
    let len = usize::from(be16(buf, at + h - 2).unwrap_or(0));
    if len < RTP_HEADER_LEN || first >> 6 != 2 {
        return Hdr::Bad;
    }
    Hdr::Ok(h, len)
}

/// Result of judging a resync candidate.
enum Cand {
    Accept,
    Pending,
    Reject,
}

/// Splits a TCP byte stream into RTP packets.
///
/// The framing is detected on the first bytes: `$` followed (3 bytes later)
/// by an RTP version-2 byte means RTSP-interleaved, otherwise RFC 4571.
///
/// **Resynchronisation heuristic.** A frame header is *plausible* when its
/// length is in 12..=65535 and is followed by a version-2 byte (plus a `$`
/// for interleaved). That alone matches random bytes far too often (about
/// one position in four), so after garbage a candidate position is only
/// accepted when it is also
/// * the SSRC of the last good packet (bytes 8..12 of the RTP header, as
///   GB/T 28181 §6 recommends), or
/// * followed, exactly where its length says, by another plausible frame
///   carrying the same SSRC.
///
/// In sync, a packet whose SSRC differs from the last one is held to the
/// second test as well (a legitimate SSRC change is confirmed by the next
/// packet). Consequence: a packet in that state, or the first packet after
/// garbage with no SSRC learnt yet, is delivered only once the following
/// frame header has arrived. RTCP packets (byte 1 in 200..=204, which
/// RFC 3550 §5.1 keeps free in RTP) are dropped silently. Buffered memory is
/// bounded by roughly two maximum frames.
#[derive(Debug, Default)]
pub struct TcpDeframer {
    buf: BytesMut,
    framing: Option<TcpFraming>,
    /// False while scanning for a new frame start after garbage.
    lost: bool,
    /// SSRC of the last packet delivered.
    ssrc: Option<u32>,
    /// Garbage dropped since the last resync report.
    skipped: usize,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// The frame at `buf[0]` was accepted by the resync scan.
    trusted: bool,
}

impl TcpDeframer {
    /// A deframer that detects the framing itself.
    pub fn new() -> TcpDeframer {
        TcpDeframer::default()
    }

    /// A deframer for a known framing (no detection).
    pub fn with_framing(framing: TcpFraming) -> TcpDeframer {
        TcpDeframer {
            framing: Some(framing),
            ..TcpDeframer::default()
        }
    }

    /// The framing in use, once detected.
    pub fn framing(&self) -> Option<TcpFraming> {
        self.framing
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
        self.offset += n as u64;
    }

    /// SSRC of the packet framed at `at` (needs header + 12 bytes).
    fn ssrc_at(&self, at: usize, h: usize) -> Option<u32> {
        be32(&self.buf, at + h + 8)
    }

    /// Is the frame at `at` followed by a plausible frame with the same SSRC?
    fn confirmed(&self, at: usize, f: TcpFraming, h: usize, len: usize, ssrc: u32) -> Cand {
        let next = at + h + len;
        match header_at(&self.buf, next, f) {
            Hdr::NeedMore => Cand::Pending,
            Hdr::Bad => Cand::Reject,
            Hdr::Ok(h2, _) => match self.ssrc_at(next, h2) {
                None => Cand::Pending,
                Some(s) if s == ssrc => Cand::Accept,
                Some(_) => Cand::Reject,
            },
        }
    }

    fn candidate(&self, at: usize, f: TcpFraming) -> Cand {
        let (h, len) = match header_at(&self.buf, at, f) {
            Hdr::NeedMore => return Cand::Pending,
            Hdr::Bad => return Cand::Reject,
            Hdr::Ok(h, len) => (h, len),
        };
        let Some(ssrc) = self.ssrc_at(at, h) else {
            return Cand::Pending;
        };
        if self.ssrc == Some(ssrc) {
            return Cand::Accept;
        }
        self.confirmed(at, f, h, len, ssrc)
    }

    /// Scans for a new frame start. `Some(framing)` when found at `buf[0]`.
    fn resync(&mut self) -> Option<TcpFraming> {
        let framings: &[TcpFraming] = match self.framing {
            Some(TcpFraming::Rfc4571) => &[TcpFraming::Rfc4571],
            Some(TcpFraming::Interleaved) => &[TcpFraming::Interleaved],
            None => &[TcpFraming::Interleaved, TcpFraming::Rfc4571],
        };
        let mut first_pending = None;
        for at in 0..self.buf.len() {
            for &f in framings {
                match self.candidate(at, f) {
                    Cand::Accept => {
                        self.drop_front(at);
                        self.skipped += at;
                        return Some(f);
                    }
                    Cand::Pending => {
                        first_pending.get_or_insert(at);
                    }
                    Cand::Reject => {}
                }
            }
        }
        // Nothing confirmed: keep from the earliest undecided position on.
        let keep_from = first_pending.unwrap_or(self.buf.len());
        self.drop_front(keep_from);
        self.skipped += keep_from;
        None
    }

    /// The next complete RTP packet (without its framing), `Ok(None)` when
    /// more bytes are needed, or `Err(RtpError::Resync)` once after garbage
    /// was skipped (the deframer stays usable: call again).
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, RtpError> {
        loop {
            if self.lost {
                let Some(f) = self.resync() else {
                    return Ok(None);
                };
                self.lost = false;
                // The frame at buf[0] passed the resync test: deliver it
                // without re-judging its SSRC.
                self.trusted = true;
                self.framing = Some(f);
                let skipped = std::mem::take(&mut self.skipped);
                if skipped > 0 {
                    return Err(RtpError::Resync {
                        skipped,
                        offset: self.offset,
                    });
                }
            }

            let f = match self.framing {
                Some(f) => f,
                None => match self.buf.first() {
                    None => return Ok(None),
                    Some(b'$') => TcpFraming::Interleaved,
                    Some(_) => TcpFraming::Rfc4571,
                },
            };
            let (h, len) = match header_at(&self.buf, 0, f) {
                Hdr::NeedMore => return Ok(None),
                Hdr::Ok(h, len) => (h, len),
                Hdr::Bad => {
                    // Drop the byte sync was lost at, so the scan progresses.
                    self.lost = true;
                    self.drop_front(1);
                    self.skipped += 1;
                    continue;
                }
            };
            if matches!(self.buf.get(h + 1), Some(200..=204)) {
                // RTCP (a PT range RFC 3550 §5.1 keeps out of RTP): drop it.
                if self.buf.len() < h + len {
                    return Ok(None);
                }
                self.framing = Some(f);
                self.drop_front(h + len);
                continue;
            }
            let Some(ssrc) = self.ssrc_at(0, h) else {
                return Ok(None);
            };
            let trusted = std::mem::take(&mut self.trusted);
            if !trusted && self.ssrc.is_some_and(|s| s != ssrc) {
                // Suspicious: let the scan decide between this frame (if the
                // next one confirms it) and a known-SSRC frame further on.
                self.lost = true;
                continue;
            }
            if self.buf.len() < h + len {
                self.trusted = trusted;
                return Ok(None);
            }
            self.framing = Some(f);
            self.offset += (h + len) as u64;
            let mut frame = self.buf.split_to(h + len);
            frame.advance(h);
            self.ssrc = Some(ssrc);
            return Ok(Some(frame.freeze()));
        }
    }
}

/// What [`ReorderBuffer::push`] made of a packet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reordered {
    /// Packets now in order, to process.
    pub ready: Vec<RtpPacket>,
    /// Packets given up as lost before the first of `ready` (0: none).
    pub lost: u64,
    /// The pushed packet was a duplicate, or came after its place was given up.
    pub late: bool,
}

/// Puts UDP RTP packets back in sequence order. A packet that arrives
/// early waits (at most `window` of them wait) for the ones before it; when
/// the window is full, the missing ones count as lost and the stream goes
/// on from the earliest waiting packet. Duplicates and packets older than
/// what was already released are dropped. Sans-IO: no clock, the window
/// is counted in packets.
#[derive(Debug)]
pub struct ReorderBuffer {
    window: usize,
    next: Option<u16>,
    waiting: std::collections::BTreeMap<u16, RtpPacket>,
}

impl ReorderBuffer {
    /// A buffer letting at most `window` packets wait for a missing one
    /// (at least 1).
    pub fn new(window: usize) -> ReorderBuffer {
        ReorderBuffer {
            window: window.max(1),
            next: None,
            waiting: std::collections::BTreeMap::new(),
        }
    }

    /// Offset of `seq` past the next expected sequence number, if ahead.
    fn ahead(&self, seq: u16) -> Option<u16> {
        let next = self.next?;
        let d = seq.wrapping_sub(next);
        (d < 0x8000).then_some(d)
    }

    /// Feed one packet.
    pub fn push(&mut self, p: RtpPacket) -> Reordered {
        let mut out = Reordered::default();
        let Some(next) = self.next else {
            self.next = Some(p.sequence.wrapping_add(1));
            out.ready.push(p);
            return out;
        };
        match self.ahead(p.sequence) {
            None => {
                out.late = true;
                return out;
            }
            Some(0) => {
                self.next = Some(next.wrapping_add(1));
                out.ready.push(p);
            }
            Some(d) => {
                // Keyed by distance, so the map orders across the 16-bit wrap.
                if self.waiting.insert(d, p).is_some() {
                    out.late = true;
                }
                if self.waiting.len() <= self.window {
                    return out;
                }
                // Give up on the missing ones: go on from the earliest waiting.
                let Some((&first, _)) = self.waiting.iter().next() else {
                    return out;
                };
                out.lost = u64::from(first);
                self.next = Some(next.wrapping_add(first));
            }
        }
        self.release(&mut out.ready);
        out
    }

    /// Move waiting packets that are now in order to `ready`.
    fn release(&mut self, ready: &mut Vec<RtpPacket>) {
        // Re-key by distance from the new `next`.
        let Some(next) = self.next else {
            return;
        };
        let old: Vec<RtpPacket> = std::mem::take(&mut self.waiting).into_values().collect();
        for p in old {
            let d = p.sequence.wrapping_sub(next);
            if d < 0x8000 {
                self.waiting.insert(d, p);
            }
        }
        let mut n = next;
        while let Some(p) = self.waiting.remove(&n.wrapping_sub(next)) {
            ready.push(p);
            n = n.wrapping_add(1);
        }
        let released = n.wrapping_sub(next);
        if released > 0 {
            let rest: Vec<RtpPacket> = std::mem::take(&mut self.waiting).into_values().collect();
            for p in rest {
                self.waiting.insert(p.sequence.wrapping_sub(n), p);
            }
        }
        self.next = Some(n);
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

    fn pkt(seq: u16, ssrc: u32, payload: &[u8]) -> RtpPacket {
        RtpPacket {
            marker: seq % 3 == 0,
            payload_type: 96,
            sequence: seq,
            timestamp: u32::from(seq) * 3600,
            ssrc,
            csrc: vec![],
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn arb_packet() -> impl Strategy<Value = RtpPacket> {
        (
            any::<bool>(),
            0u8..128,
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u32>(), 0..=15),
            prop::collection::vec(any::<u8>(), 0..1500),
        )
            .prop_map(
                |(marker, payload_type, sequence, timestamp, ssrc, csrc, p)| RtpPacket {
                    marker,
                    payload_type,
                    sequence,
                    timestamp,
                    ssrc,
                    csrc,
                    payload: Bytes::from(p),
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(p in arb_packet()) {
            let wire = p.to_bytes();
            prop_assert_eq!(RtpPacket::parse(wire).unwrap(), p);
        }

        #[test]
        fn parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = RtpPacket::parse(Bytes::from(data));
        }

        #[test]
        fn split_byte_by_byte(
            pkts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6),
            interleaved in any::<bool>(),
        ) {
            let packets: Vec<Bytes> = pkts.iter().enumerate()
                .map(|(i, p)| pkt(i as u16, 0x1234, p).to_bytes()).collect();
            let mut wire = Vec::new();
            for p in &packets {
                if interleaved {
                    wire.extend_from_slice(&[b'$', 0]);
                    wire.extend_from_slice(&(p.len() as u16).to_be_bytes());
                    wire.extend_from_slice(p);
                } else {
                    wire.extend_from_slice(&frame_rfc4571(p).unwrap());
                }
            }
            let mut d = TcpDeframer::new();
            let mut got = Vec::new();
            for b in &wire {
                d.push(std::slice::from_ref(b));
                while let Some(p) = d.next_packet().unwrap() {
                    got.push(p);
                }
            }
            prop_assert_eq!(got, packets);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn deframer_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut d = TcpDeframer::new();
            for c in &chunks {
                d.push(c);
                for _ in 0..50 {
                    if let Ok(None) = d.next_packet() {
                        break;
                    }
                }
            }
            prop_assert!(d.buffered() <= 2 * (4 + 65535) + 200);
        }
    }

    #[test]
    fn padding_extension_csrc() {
        let mut w = vec![0x80 | 0x20 | 0x10 | 2, 0x80 | 96];
        w.extend_from_slice(&7u16.to_be_bytes());
        w.extend_from_slice(&90000u32.to_be_bytes());
        w.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        w.extend_from_slice(&11u32.to_be_bytes());
        w.extend_from_slice(&22u32.to_be_bytes());
        // Extension: profile 0xBEDE, 2 words.
        w.extend_from_slice(&[0xBE, 0xDE, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        w.extend_from_slice(b"hello");
        w.extend_from_slice(&[0, 0, 3]);
        let p = RtpPacket::parse(Bytes::from(w)).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 96);
        assert_eq!(p.sequence, 7);
        assert_eq!(p.timestamp, 90000);
        assert_eq!(p.ssrc, 0x0102_0304);
        assert_eq!(p.csrc, vec![11, 22]);
        assert_eq!(&p.payload[..], b"hello");
    }

    #[test]
    fn truncated_and_bad() {
        let good = pkt(1, 5, b"abc").to_bytes();
        for n in 0..12 {
            assert!(matches!(
                RtpPacket::parse(good.slice(..n)),
                Err(RtpError::Truncated {
                    what: "fixed header",
                    ..
                })
            ));
        }
        let mut w = good.to_vec();
        w[0] = 0x83; // 3 CSRCs announced, payload only 3 bytes
        assert!(matches!(
            RtpPacket::parse(Bytes::from(w)),
            Err(RtpError::Truncated {
                what: "CSRC list",
                ..
            })
        ));
        let mut w = good.to_vec();
        w[0] = 0x90; // extension announced
        assert!(matches!(
            RtpPacket::parse(Bytes::from(w)),
            Err(RtpError::Truncated {
                what: "extension header",
                ..
            })
        ));
        let mut w = good.to_vec();
        w[0] = 0x90;
        w.extend_from_slice(&[0, 9]); // 9 words of extension missing
        assert!(matches!(
            RtpPacket::parse(Bytes::from(w)),
            Err(RtpError::Truncated {
                what: "extension body",
                ..
            })
        ));
        let mut w = good.to_vec();
        w[0] = 0xA0;
        *w.last_mut().unwrap() = 9;
        assert_eq!(
            RtpPacket::parse(Bytes::from(w)),
            Err(RtpError::BadPadding {
                pad: 9,
                available: 3
            })
        );
        let mut w = good.to_vec();
        w[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(Bytes::from(w)),
            Err(RtpError::BadVersion(1))
        );
    }

    #[test]
    fn payload_is_zero_copy() {
        let wire = pkt(1, 5, b"abcdef").to_bytes();
        let p = RtpPacket::parse(wire.clone()).unwrap();
        assert_eq!(p.payload.as_ptr(), wire[12..].as_ptr());
    }

    #[test]
    fn frame_too_large() {
        assert_eq!(
            frame_rfc4571(&vec![0; 65536]),
            Err(RtpError::TooLarge(65536))
        );
        assert_eq!(frame_rfc4571(&vec![0; 65535]).unwrap().len(), 65537);
    }

    #[test]
    fn packets_put_in_one_buffer_frame_as_one_by_one() {
        let packet = |len: usize| RtpPacket {
            marker: false,
            payload_type: 96,
            sequence: 7,
            timestamp: 9,
            ssrc: 11,
            csrc: Vec::new(),
            payload: Bytes::from(vec![5u8; len]),
        };
        let mut out = BytesMut::new();
        let mut one_by_one = Vec::new();
        for len in [1400, 3] {
            let p = packet(len);
            put_rfc4571(&mut out, &p).unwrap();
            let mut raw = BytesMut::new();
            p.write(&mut raw);
            one_by_one.extend_from_slice(&frame_rfc4571(&raw).unwrap());
        }
        assert_eq!(&out[..], &one_by_one[..]);
        let before = out.len();
        assert_eq!(
            put_rfc4571(&mut out, &packet(65_536)),
            Err(RtpError::TooLarge(65_536 + RTP_HEADER_LEN))
        );
        assert_eq!(out.len(), before, "a refused packet leaves nothing behind");
    }

    fn frames(n: u16, ssrc: u32, interleaved: bool) -> (Vec<Bytes>, Vec<u8>) {
        let mut wire = Vec::new();
        let mut packets = Vec::new();
        for i in 0..n {
            let p = pkt(i, ssrc, &vec![i as u8; 100 + usize::from(i) * 37]).to_bytes();
            if interleaved {
                wire.extend_from_slice(&[b'$', 0]);
                wire.extend_from_slice(&(p.len() as u16).to_be_bytes());
                wire.extend_from_slice(&p);
            } else {
                wire.extend_from_slice(&frame_rfc4571(&p).unwrap());
            }
            packets.push(p);
        }
        (packets, wire)
    }

    fn drain(d: &mut TcpDeframer) -> (Vec<Bytes>, usize) {
        let mut got = Vec::new();
        let mut skipped = 0;
        loop {
            match d.next_packet() {
                Ok(Some(p)) => got.push(p),
                Ok(None) => return (got, skipped),
                Err(RtpError::Resync { skipped: s, .. }) => skipped += s,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn several_packets_per_push_both_framings() {
        for interleaved in [false, true] {
            let (packets, wire) = frames(5, 42, interleaved);
            let mut d = TcpDeframer::new();
            d.push(&wire);
            let (got, skipped) = drain(&mut d);
            assert_eq!(got, packets);
            assert_eq!(skipped, 0);
            let want = if interleaved {
                TcpFraming::Interleaved
            } else {
                TcpFraming::Rfc4571
            };
            assert_eq!(d.framing(), Some(want));
        }
    }

    /// Deterministic garbage with many plausible-looking headers in it.
    fn garbage(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 {
                    0x80
                } else if i % 11 == 0 {
                    b'$'
                } else {
                    (x >> 16) as u8
                }
            })
            .collect()
    }

    #[test]
    fn resync_after_garbage_mid_stream() {
        for interleaved in [false, true] {
            for seed in 0..50 {
                let (packets, wire) = frames(6, 0x0102_0000 + seed, interleaved);
                let cut = {
                    let (_, w) = frames(3, 0x0102_0000 + seed, interleaved);
                    w.len()
                };
                let mut stream = wire[..cut].to_vec();
                stream.extend(garbage(100, seed));
                stream.extend_from_slice(&wire[cut..]);
                let mut d = TcpDeframer::new();
                d.push(&stream);
                let (got, skipped) = drain(&mut d);
                assert_eq!(got, packets, "seed {seed} interleaved {interleaved}");
                assert_eq!(skipped, 100);
            }
        }
    }

    #[test]
    fn resync_after_garbage_at_start() {
        for interleaved in [false, true] {
            for seed in 0..50 {
                let (packets, wire) = frames(6, 0x0300_0000 + seed, interleaved);
                let mut stream = garbage(100, seed);
                stream[0] = 0x01; // not a plausible first header
                stream[2] = 0x01;
                stream.extend_from_slice(&wire);
                let mut d = TcpDeframer::new();
                let mut got = Vec::new();
                let mut skipped = 0;
                for c in stream.chunks(61) {
                    d.push(c);
                    let (g, s) = drain(&mut d);
                    got.extend(g);
                    skipped += s;
                }
                assert_eq!(got, packets, "seed {seed} interleaved {interleaved}");
                assert_eq!(skipped, 100);
            }
        }
    }

    #[test]
    fn rtcp_interleaved_dropped() {
        let (packets, wire) = frames(2, 9, true);
        let mut rtcp = vec![b'$', 1, 0, 28, 0x80, 200, 0, 6];
        rtcp.extend_from_slice(&[7; 24]);
        let mut stream = rtcp.clone();
        stream.extend_from_slice(&wire);
        stream.extend_from_slice(&rtcp);
        let mut d = TcpDeframer::new();
        d.push(&stream);
        let (got, skipped) = drain(&mut d);
        assert_eq!(got, packets);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn ssrc_change_confirmed_by_next_packet() {
        let (mut packets, mut wire) = frames(2, 1, false);
        let (p2, w2) = frames(3, 2, false);
        packets.extend(p2);
        wire.extend(w2);
        let mut d = TcpDeframer::new();
        d.push(&wire);
        let (got, skipped) = drain(&mut d);
        assert_eq!(got, packets);
        assert_eq!(skipped, 0);
    }

    fn seq(n: u16) -> RtpPacket {
        RtpPacket {
            marker: false,
            payload_type: 96,
            sequence: n,
            timestamp: 0,
            ssrc: 1,
            csrc: Vec::new(),
            payload: Bytes::new(),
        }
    }

    fn order(b: &mut ReorderBuffer, input: &[u16]) -> (Vec<u16>, u64, usize) {
        let (mut got, mut lost, mut late) = (Vec::new(), 0, 0);
        for &n in input {
            let r = b.push(seq(n));
            got.extend(r.ready.iter().map(|p| p.sequence));
            lost += r.lost;
            late += usize::from(r.late);
        }
        (got, lost, late)
    }

    #[test]
    fn reorder_puts_swapped_packets_back_across_the_wrap() {
        let mut b = ReorderBuffer::new(8);
        let (got, lost, late) = order(&mut b, &[65534, 0, 65535, 1, 3, 2, 2, 4]);
        assert_eq!(got, vec![65534, 65535, 0, 1, 2, 3, 4]);
        assert_eq!((lost, late), (0, 1), "the second 2 is a duplicate");
    }

    #[test]
    fn reorder_gives_up_on_a_lost_packet_when_the_window_fills() {
        let mut b = ReorderBuffer::new(3);
        let (got, lost, late) = order(&mut b, &[10, 12, 13, 14, 15, 11, 16]);
        assert_eq!(got, vec![10, 12, 13, 14, 15, 16]);
        assert_eq!((lost, late), (1, 1), "11 came after its place was given up");
    }

    proptest::proptest! {
        #[test]
        fn reorder_releases_each_packet_once_in_order(
            start in proptest::prelude::any::<u16>(),
            swaps in proptest::collection::vec((0usize..64, 0usize..64), 0..20),
        ) {
            let mut input: Vec<u16> = (0..64u16).map(|i| start.wrapping_add(i)).collect();
            for (a, c) in swaps {
                // Local swaps only, within the window.
                let c = (a + c % 4).min(63);
                input.swap(a, c);
            }
            let mut b = ReorderBuffer::new(16);
            let (got, _, _) = order(&mut b, &input);
            for w in got.windows(2) {
                proptest::prop_assert!(w[1].wrapping_sub(w[0]) >= 1 && w[1].wrapping_sub(w[0]) < 0x8000);
            }
            let mut sorted = got.clone();
            sorted.dedup();
            proptest::prop_assert_eq!(sorted.len(), got.len());
        }
    }
}
