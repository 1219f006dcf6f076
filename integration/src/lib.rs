//! Test and demo tooling for gbgate.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`sim`] | `gbsim`: a fleet of simulated IPCs and NVRs |
//! | [`streamer`] | `gbsim`'s media sender: clips and PS files as paced RTP/PS |
//! | [`fanout`] | the fan-out benchmark: a recording of served FLV, the bare-writer floor, viewers that count frames and gaps |
//! | [`flv_watch`] | watching HTTP-FLV as a player: live video or a stale cache, stalls, time to video after a restart |
//! | [`harness`] | start a topology as one `gbgate` process per node and wait for it |
//! | [`impair`] | a userspace UDP impairment proxy (loss, delay, jitter, reordering, bandwidth cap) |
//! | [`link_bench`] | experiments on one link between tiers: a camera over an impaired link (RTP/UDP vs QUIC), link throughput and CPU |
//! | [`storm`] | the REGISTER storm: sipp against a registrar pinned to one core (gbgate or Kamailio) |
//! | [`demo`] | the demo tree (city ← 2 counties ← 2 towns ← 2 villages) as a topology file |

pub mod demo;
pub mod fanout;
pub mod flv_watch;
pub mod harness;
pub mod impair;
pub mod link_bench;
pub mod sim;
pub mod storm;
pub mod streamer;
