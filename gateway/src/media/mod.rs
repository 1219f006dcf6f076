//! Media codecs, pure and socket-free: frames and Annex-B NAL helpers, the
//! check that a keyframe can start a decoder, RTP
//! and its TCP framings, MPEG-PS demux/mux, the GB/T 28181 SDP profile, and
//! the FLV and MPEG-TS muxers for HTTP viewers.

pub mod flv;
pub mod frame;
pub mod nal;
pub mod pes;
pub mod picture;
pub mod ps;
pub mod rtp;
pub mod sdp;
pub mod ts;
