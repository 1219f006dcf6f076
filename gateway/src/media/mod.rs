//! Media codecs, pure and socket-free: frames, Annex-B NAL helpers. (The
//! media plane is being built: RTP, PS, FLV and TS arrive here next.)

pub mod frame;
pub mod nal;
pub mod ps;
