//! Plain, writable description of a topology file, for generators and tests.
//!
//! A [`TopologySpec`] serialises to exactly the TOML that [`Topology::parse`]
//! reads. It is not validated on its own: turn it into a [`Topology`] with
//! [`TopologySpec::build`] (which writes and re-reads it, so one code path
//! validates both hand-written and generated files).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::file::Topology;
use crate::id::GbId;
use crate::node::{Level, Transport};
use crate::problem::TopologyError;

/// A whole topology file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopologySpec {
    /// The `[defaults]` table.
    #[serde(skip_serializing_if = "DefaultsSpec::is_empty")]
    pub defaults: DefaultsSpec,
    /// The `[[node]]` tables, in file order.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeSpec>,
}

/// The `[defaults]` table; `None` keeps the built-in default (see [`crate::Settings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DefaultsSpec {
    /// Link transport for nodes without their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Keepalive period in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_interval_secs: Option<u64>,
    /// Missed keepalives before offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout_count: Option<u32>,
    /// REGISTER expiry in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_expires_secs: Option<u64>,
    /// First re-register wait after a failure, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_retry_secs: Option<u64>,
    /// SIP timer T1 in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_t1_ms: Option<u64>,
    /// Seconds a stream without viewers stays open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linger_secs: Option<u64>,
    /// Seconds without media after which a stream ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_timeout_secs: Option<u64>,
    /// How nodes ask their sources to send media: udp, tcp-passive, tcp-active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_transport: Option<String>,
    /// Whether nodes query newly registered devices and children (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_new_registrants: Option<bool>,
    /// Viewers one stream may have at one node (default: sized for the
    /// machine, 1,000 per core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_viewers_per_stream: Option<u64>,
    /// Seconds a camera's PTZ lock lasts after its holder's last command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptz_lock_secs: Option<u64>,
    /// Seconds between the intact probe's looks at each camera (0: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intact_probe_secs: Option<u64>,
    /// What each node subscribes to at its devices.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribe_devices: Vec<String>,
    /// PTZ control priority per department (1 highest … 5 lowest).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ptz_priority: std::collections::BTreeMap<String, u8>,
}

impl DefaultsSpec {
    /// True if no key is set (the table is then left out).
    pub fn is_empty(&self) -> bool {
        self == &DefaultsSpec::default()
    }
}

/// One `[[node]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    /// The node's ID (type code 200).
    pub id: GbId,
    /// Human-readable name.
    pub name: String,
    /// Tier.
    pub level: Level,
    /// Parent node; `None` for the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<GbId>,
    /// SIP listen address.
    pub sip: SocketAddr,
    /// Link transport; `None` uses `[defaults]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// HTTP API listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// QUIC listen address (for children linked over QUIC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic: Option<SocketAddr>,
    /// Certificate directory, relative to the topology file's directory (or absolute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certs: Option<PathBuf>,
    /// Credentials file, relative to the topology file's directory (or absolute).
    pub credentials: PathBuf,
    /// `[[node.upper]]` tables: third-party platforms this node registers to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upper: Vec<crate::upper::UpperSpec>,
}

impl TopologySpec {
    /// The spec as topology-file TOML.
    pub fn to_toml_string(&self) -> Result<String, TopologyError> {
        Ok(toml::to_string(self)?)
    }

    /// Validates the spec as if it were the file at `file_path` (which sets
    /// where `credentials` paths resolve and what messages name).
    pub fn build(&self, file_path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let text = self.to_toml_string()?;
        Topology::parse(&text, file_path)
    }
}
