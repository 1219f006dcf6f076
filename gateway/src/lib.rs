//! gbgate: one program at every level of a GB/T 28181 video network
//! (village, town, county, city) that links the levels into one federation.
//!
//! # Layout
//!
//! Each module is one concept; protocol logic is sans-IO (plain types fed
//! bytes and `Instant`s), with tokio only at the edges.
//!
//! | module | what it holds |
//! |---|---|
//! | [`sip`] | SIP syntax (messages, headers), stream framing, digest auth, transactions, request factory |
//! | [`gb`] | GB/T 28181 bodies: MANSCDP XML, MANSRTSP playback control, charsets, catalog splitting and reassembly |
//! | [`registry`] | who is registered here, their digest authentication and keepalive liveness |
//! | [`catalog`] | the federated channel tree and the change events it produces |
//! | [`uplink`] | this node as a lower platform: register, refresh, keepalive toward the parent |
//! | [`node`] | the node state machine tying the above together, and its INVITE dialogs (calls) |
//! | [`media`] | media codecs, pure: frames, NAL units, RTP, PS, FLV, TS, the GB SDP profile |
//! | [`streams`] | the media plane: hubs (GOP cache, shared muxing, slow viewers), on-demand opening, RTP in and out |
//! | [`intact`] | the intact probe: when each camera's video is looked at, and what the node learns |
//! | [`settings`] | every timer and limit, with defaults |
//! | [`transport`] | UDP and TCP sockets under the SIP core |
//! | [`runtime`] | the async loop driving a node from sockets and timers |
//! | [`api`] | the HTTP API: catalog, topology, streams, live and playback video, metrics |
//! | [`config`] | turning a topology file and node ID into a runnable node |
#![forbid(unsafe_code)]

pub mod api;
pub mod availability;
pub mod catalog;
pub mod config;
pub mod gate;
pub mod gb;
pub mod intact;
pub mod media;
pub mod node;
pub mod registry;
pub mod runtime;
pub mod settings;
pub mod sip;
pub mod streams;
pub mod transport;
pub mod uplink;
