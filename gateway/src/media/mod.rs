//! Media codecs, pure and socket-free: frames and Annex-B NAL helpers, RTP
//! and its TCP framings, MPEG-PS demux/mux, and the GB/T 28181 SDP profile.
//! (FLV and TS muxers, hubs and INVITE handling arrive with the rest of the
//! media plane.)

pub mod frame;
pub mod nal;
pub mod ps;
pub mod rtp;
pub mod sdp;
