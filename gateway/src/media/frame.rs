//! One demuxed media frame: the unit a hub caches and every muxer consumes.

use bytes::Bytes;

/// Elementary stream codecs carried in GB/T 28181 PS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC (PS stream_type 0x1B).
    H264,
    /// H.265 / HEVC (PS stream_type 0x24).
    H265,
    /// G.711 A-law (PS stream_type 0x90), 8 kHz mono.
    G711A,
    /// G.711 µ-law (PS stream_type 0x91), 8 kHz mono.
    G711U,
    /// AAC in ADTS (PS stream_type 0x0F).
    Aac,
}

impl Codec {
    /// True for video codecs.
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }

    /// The PS/TS stream_type of this codec.
    pub fn stream_type(self) -> u8 {
        match self {
            Codec::H264 => 0x1B,
            Codec::H265 => 0x24,
            Codec::G711A => 0x90,
            Codec::G711U => 0x91,
            Codec::Aac => 0x0F,
        }
    }

    /// The codec of a PS/TS stream_type, if we carry it.
    pub fn from_stream_type(t: u8) -> Option<Codec> {
        Some(match t {
            0x1B => Codec::H264,
            0x24 => Codec::H265,
            0x90 => Codec::G711A,
            0x91 => Codec::G711U,
            0x0F => Codec::Aac,
            _ => return None,
        })
    }
}

/// One access unit (video) or audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it holds.
    pub codec: Codec,
    /// Presentation time, 90 kHz.
    pub pts: u64,
    /// Decode time, 90 kHz (equal to `pts` without B-frames).
    pub dts: u64,
    /// A random access point: an IDR/IRAP access unit with its parameter sets.
    pub keyframe: bool,
    /// Video: Annex-B bytes (start codes, parameter sets in line). Audio: the
    /// raw frame (G.711 samples, or AAC with its ADTS header).
    pub data: Bytes,
}
