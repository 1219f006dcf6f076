//! Test and demo tooling for gbgate.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`sim`] | `gbsim`: a fleet of simulated IPCs and NVRs |
//! | [`streamer`] | `gbsim`'s media sender: clips and PS files as paced RTP/PS |
//! | [`harness`] | start a topology as one `gbgate` process per node and wait for it |
//! | [`demo`] | the demo tree (city ← 2 counties ← 2 towns ← 2 villages) as a topology file |

pub mod demo;
pub mod harness;
pub mod sim;
pub mod streamer;
