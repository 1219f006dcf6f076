//! One gbgate node of the topology: its ID, level, parent and addresses.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::civil::CivilCode;
use crate::id::GbId;

/// A validated node from the topology file.
///
/// Equality compares what the node is, not where the file wrote it: line
/// numbers are ignored, so a topology written back and re-read is equal.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's ID (type code 200).
    pub id: GbId,
    /// Human-readable name.
    pub name: String,
    /// Tier in the federation.
    pub level: Level,
    /// The parent node, `None` for the root.
    pub parent: Option<GbId>,
    /// SIP listen address; UDP and TCP are both bound there and children dial it.
    pub sip: SocketAddr,
    /// Transport of the link to the parent (the `[defaults]` one unless set).
    pub transport: Transport,
    /// HTTP API and metrics listen address, if any.
    pub http: Option<SocketAddr>,
    /// QUIC listen address, where children linked over QUIC dial in; a
    /// UDP port of its own, beside `sip`.
    pub quic: Option<SocketAddr>,
    /// The node's certificate directory (`ca.crt`, `<id>.crt`, `<id>.key`,
    /// as `gbgate cert` writes them), resolved against the topology file's
    /// directory; needed by a node on either end of a QUIC link.
    pub certs: Option<PathBuf>,
    /// Credentials file, resolved against the topology file's directory.
    pub credentials: PathBuf,
    /// Third-party platforms above this node (`[[node.upper]]`), in file order.
    pub upper: Vec<crate::upper::UpperPlatform>,
    /// `certs` as written in the file, so writing back keeps it relative.
    pub(crate) certs_written: Option<PathBuf>,
    /// `credentials` as written in the file, so writing back keeps it relative.
    pub(crate) credentials_written: PathBuf,
    /// Line of the node's `[[node]]` header.
    pub(crate) line: usize,
    /// Line of the node's `credentials` key.
    pub(crate) credentials_line: usize,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.level == other.level
            && self.parent == other.parent
            && self.sip == other.sip
            && self.transport == other.transport
            && self.http == other.http
            && self.quic == other.quic
            && self.certs == other.certs
            && self.credentials == other.credentials
            && self.credentials_written == other.credentials_written
            && self.upper == other.upper
    }
}

impl Eq for Node {}

impl Node {
    /// The region the node serves (digits 1–8 of its ID, normalised).
    pub fn civil_code(&self) -> CivilCode {
        self.id.civil_code()
    }

    /// True for the node without a parent.
    pub fn is_root(&self) -> bool {
        self.parent.is_none()
    }

    /// Line of the node's `[[node]]` header in the topology file, for messages.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The `credentials` path exactly as the topology file wrote it.
    pub fn credentials_as_written(&self) -> &Path {
        &self.credentials_written
    }
}

/// Tier of a node. Ordered `Village < Town < County < City`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Village (lowest tier).
    Village,
    /// Town.
    Town,
    /// County or district.
    County,
    /// City (top tier).
    City,
}

/// A `level` value that names no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {given:?}; use one of city, county, town, village")]
pub struct ParseLevelError {
    /// The value given.
    pub given: String,
}

impl Level {
    /// All levels, top first.
    pub const ALL: [Level; 4] = [Level::City, Level::County, Level::Town, Level::Village];

    /// The level a parent of this level has; `None` for a city.
    pub fn parent_level(self) -> Option<Level> {
        match self {
            Level::Village => Some(Level::Town),
            Level::Town => Some(Level::County),
            Level::County => Some(Level::City),
            Level::City => None,
        }
    }

    /// The level children of this level have; `None` for a village.
    pub fn child_level(self) -> Option<Level> {
        match self {
            Level::City => Some(Level::County),
            Level::County => Some(Level::Town),
            Level::Town => Some(Level::Village),
            Level::Village => None,
        }
    }

    /// The name used in the topology file.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Village => "village",
            Level::Town => "town",
            Level::County => "county",
            Level::City => "city",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| ParseLevelError {
                given: s.to_owned(),
            })
    }
}

/// Transport of SIP (and by default media) on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP datagrams.
    Udp,
    /// SIP over TCP, framed by Content-Length.
    Tcp,
    /// SIP and media over QUIC between two gbgate nodes, mutually
    /// authenticated by certificates of the federation's CA.
    Quic,
}

/// A `transport` value that names no transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {given:?}; use udp, tcp or quic")]
pub struct ParseTransportError {
    /// The value given.
    pub given: String,
}

impl Transport {
    /// The name used in the topology file.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = ParseTransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "quic" => Ok(Transport::Quic),
            _ => Err(ParseTransportError {
                given: s.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_linked() {
        assert!(Level::City > Level::County);
        assert!(Level::County > Level::Town);
        assert!(Level::Town > Level::Village);
        assert_eq!(Level::Village.parent_level(), Some(Level::Town));
        assert_eq!(Level::City.parent_level(), None);
        assert_eq!(Level::City.child_level(), Some(Level::County));
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
            if let Some(up) = level.parent_level() {
                assert_eq!(up.child_level(), Some(level));
            }
        }
        assert_eq!(
            "Town".parse::<Level>().unwrap_err().to_string(),
            "unknown level \"Town\"; use one of city, county, town, village"
        );
    }

    #[test]
    fn transports_parse() {
        assert_eq!("udp".parse::<Transport>(), Ok(Transport::Udp));
        assert_eq!("tcp".parse::<Transport>(), Ok(Transport::Tcp));
        assert_eq!("quic".parse::<Transport>(), Ok(Transport::Quic));
        assert!("QUIC".parse::<Transport>().is_err());
        assert_eq!(Transport::Tcp.to_string(), "tcp");
    }
}
