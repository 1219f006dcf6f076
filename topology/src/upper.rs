//! Upper platforms: third-party GB/T 28181 platforms above a node that are
//! not in the topology (a provincial platform, a department's own), each
//! written as a `[[node.upper]]` table under the node that registers to it.
//!
//! ```toml
//! [[node]]
//! id = "35010000002000000001"
//! # ...
//! [[node.upper]]
//! id = "35000000002000000001"      # the platform's 20-digit ID
//! name = "Provincial platform"
//! sip = "10.1.0.5:5060"
//! transport = "udp"                 # udp | tcp
//! charset = "GB2312"                # GB2312 (default) | UTF-8
//! keepalive_interval_secs = 60
//! keepalive_timeout_count = 3
//! register_expires_secs = 3600
//! ```
//!
//! The password is in the node's credentials file, `[upper]` table, keyed
//! by the platform's ID.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::id::GbId;
use crate::node::Transport;

/// The charset a platform reads and we write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TextCharset {
    /// GB2312 (written as GBK, its superset): what the standard says and
    /// what several platforms can decode only.
    #[default]
    #[serde(rename = "GB2312")]
    Gb2312,
    /// UTF-8.
    #[serde(rename = "UTF-8")]
    Utf8,
}

/// A `charset` value that names no charset we write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown charset {given:?}; use \"GB2312\" or \"UTF-8\"")]
pub struct ParseCharsetError {
    /// The value given.
    pub given: String,
}

impl FromStr for TextCharset {
    type Err = ParseCharsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "GB2312" | "GBK" | "GB18030" => Ok(TextCharset::Gb2312),
            "UTF-8" | "UTF8" => Ok(TextCharset::Utf8),
            _ => Err(ParseCharsetError {
                given: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for TextCharset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextCharset::Gb2312 => "GB2312",
            TextCharset::Utf8 => "UTF-8",
        })
    }
}

/// Keepalive period toward an upper platform unless set (GB default).
pub const DEFAULT_UPPER_KEEPALIVE_SECS: u64 = 60;
/// Missed keepalives before the platform is taken as lost, unless set.
pub const DEFAULT_UPPER_KEEPALIVE_COUNT: u32 = 3;
/// REGISTER expiry toward an upper platform unless set.
pub const DEFAULT_UPPER_EXPIRES_SECS: u64 = 3600;

/// A validated upper platform of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpperPlatform {
    /// The platform's 20-digit ID (the Request-URI user of our REGISTER).
    pub id: GbId,
    /// Human-readable name, for logs and the topology API.
    pub name: String,
    /// Where it listens for SIP.
    pub sip: SocketAddr,
    /// How we reach it.
    pub transport: Transport,
    /// What it reads.
    pub charset: TextCharset,
    /// Keepalive period in seconds.
    pub keepalive_interval_secs: u64,
    /// Missed keepalives before we re-register.
    pub keepalive_timeout_count: u32,
    /// Registration expiry we ask for, in seconds.
    pub register_expires_secs: u64,
}

/// One `[[node.upper]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpper {
    pub(crate) id: Option<Spanned<String>>,
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) sip: Option<Spanned<String>>,
    pub(crate) transport: Option<Spanned<String>>,
    pub(crate) charset: Option<Spanned<String>>,
    pub(crate) keepalive_interval_secs: Option<Spanned<u64>>,
    pub(crate) keepalive_timeout_count: Option<Spanned<u64>>,
    pub(crate) register_expires_secs: Option<Spanned<u64>>,
}

/// A `[[node.upper]]` table for [`crate::NodeSpec`]; `None` keeps the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpperSpec {
    /// The platform's ID.
    pub id: GbId,
    /// Name.
    pub name: String,
    /// SIP address.
    pub sip: SocketAddr,
    /// Transport; `None` is UDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Charset; `None` is GB2312.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charset: Option<TextCharset>,
    /// Keepalive period in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_interval_secs: Option<u64>,
    /// Missed keepalives before re-registering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout_count: Option<u32>,
    /// Registration expiry in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_expires_secs: Option<u64>,
}

impl From<&UpperPlatform> for UpperSpec {
    fn from(u: &UpperPlatform) -> Self {
        UpperSpec {
            id: u.id,
            name: u.name.clone(),
            sip: u.sip,
            transport: (u.transport != Transport::Udp).then_some(u.transport),
            charset: (u.charset != TextCharset::Gb2312).then_some(u.charset),
            keepalive_interval_secs: (u.keepalive_interval_secs != DEFAULT_UPPER_KEEPALIVE_SECS)
                .then_some(u.keepalive_interval_secs),
            keepalive_timeout_count: (u.keepalive_timeout_count != DEFAULT_UPPER_KEEPALIVE_COUNT)
                .then_some(u.keepalive_timeout_count),
            register_expires_secs: (u.register_expires_secs != DEFAULT_UPPER_EXPIRES_SECS)
                .then_some(u.register_expires_secs),
        }
    }
}
