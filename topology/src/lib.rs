//! GB/T 28181 20-digit IDs and the gbgate topology file.
//!
//! Every process of a gbgate federation reads the same topology file: the
//! nodes (one per village, town, county or city gateway), who is whose
//! parent, where each listens, and which file holds its secrets. This crate
//! parses and validates that file, and provides the ID types the rest of
//! gbgate names things with.
//!
//! ```
//! use topology::{GbId, Topology};
//!
//! let text = r#"
//! [[node]]
//! id = "35010000002000000001"
//! name = "Fuzhou city"
//! level = "city"
//! sip = "127.0.0.1:15060"
//! credentials = "creds/city.toml"
//!
//! [[node]]
//! id = "35010200002000000002"
//! name = "Gulou county"
//! level = "county"
//! parent = "35010000002000000001"
//! sip = "127.0.0.1:15061"
//! credentials = "creds/county.toml"
//! "#;
//! let topology = Topology::parse(text, "deploy/topology.toml")?;
//! let county: GbId = "35010200002000000002".parse()?;
//! assert_eq!(topology.parent_of(&county).map(|n| n.name.as_str()), Some("Fuzhou city"));
//! assert_eq!(county.domain(), "3501020000");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`id`]: [`GbId`], the validated 20-digit ID, and its fields (domain,
//!   civil code, type code, serial).
//! - [`type_code`]: digits 11–13: [`TypeClass`] and named codes (IPC 132,
//!   platform 200, …).
//! - [`civil`]: [`CivilCode`], the administrative region in digits 1–8, and
//!   the "lies under" relation between regions.
//! - [`catalog_id`]: [`CatalogId`], a catalog tree node ID: a 20-digit ID or
//!   a 2/4/6/8-digit region.
//! - [`node`]: [`Node`], one gateway of the federation, with its [`Level`]
//!   and link [`Transport`].
//! - [`settings`]: [`Settings`], the file's `[defaults]` table, with every
//!   default written down.
//! - [`file`](mod@file): [`Topology`]: loading the file and walking the tree (parent,
//!   children, path to the root, next hop down).
//! - `validate` (private): the rules a file must follow, each problem reported with its line.
//! - [`problem`]: [`Problem`] (file, line, what to fix) and [`TopologyError`].
//! - [`spec`]: [`TopologySpec`], a plain writable form for generators.
//! - [`credentials`]: [`Credentials`], a node's secrets file.
//!
//! # The topology file
//!
//! ```toml
//! [defaults]                      # optional, as are all its keys
//! transport = "udp"               # udp | tcp | quic: link transport for nodes without their own
//! keepalive_interval_secs = 60
//! keepalive_timeout_count = 3
//! register_expires_secs = 3600
//! register_retry_secs = 60        # first re-register wait after a failure (unset: node default)
//! sip_t1_ms = 500                 # SIP timer T1 (unset: RFC 3261's 500 ms)
//! linger_secs = 30                # a stream without viewers stays open this long
//! media_timeout_secs = 10         # a stream whose source is silent this long ends
//! query_new_registrants = true    # ask each new device/child for its catalog (and DeviceInfo)
//! max_viewers_per_stream = 2000   # viewers of one stream at one node (default: 1,000 per CPU core)
//! media_transport = "udp"         # how sources below send media: udp, tcp-passive, tcp-active
//! ptz_lock_secs = 30              # a camera's PTZ lock lasts this long after its holder's last command
//! ptz_priority = { police = 1 }   # PTZ priority per department: 1 highest .. 5 lowest (default 5)
//! intact_probe_secs = 3600        # look at each camera's video this often (0: never)
//! subscribe_devices = ["alarm"]   # SUBSCRIBE at each device: catalog, alarm, mobile_position (default none)
//!
//! [[node]]
//! id = "35010000002000000001"     # 20 digits, type code 200 (platform)
//! name = "Fuzhou city"
//! level = "city"                  # city | county | town | village
//! sip = "127.0.0.1:15060"         # SIP listen address, UDP and TCP; children dial it
//! transport = "udp"               # optional: link to the parent (udp | tcp | quic); default from [defaults]
//! http = "127.0.0.1:18080"        # optional: HTTP API and metrics
//! quic = "127.0.0.1:15061"        # optional: QUIC listen address; needed when a child links over quic
//! certs = "certs"                 # optional: ca.crt, <id>.crt, <id>.key; needed on both ends of a quic link
//! credentials = "creds/city.toml" # relative to this file's directory
//! # parent = "..."                # absent only for the root
//! ```

#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is a failed test. The library itself is
// still linted without cfg(test) by `clippy --all-targets`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod catalog_id;
pub mod civil;
pub mod credentials;
pub mod file;
pub mod id;
pub mod node;
pub mod problem;
pub mod settings;
pub mod spec;
pub mod type_code;
pub mod upper;
mod validate;

pub use catalog_id::{is_region_id, CatalogId, CatalogIdError};
pub use civil::{CivilCode, CivilCodeError, RegionLevel};
pub use credentials::{Credentials, CredentialsError};
pub use file::Topology;
pub use id::{GbId, IdError};
pub use node::{Level, Node, ParseLevelError, ParseTransportError, Transport};
pub use problem::{Problem, TopologyError};
pub use settings::{DeviceEvent, MediaTransport, Settings};
pub use spec::{DefaultsSpec, NodeSpec, TopologySpec};
pub use type_code::TypeClass;
pub use upper::{TextCharset, UpperPlatform, UpperSpec};
