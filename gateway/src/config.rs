//! Turning a topology file and a node ID into the parts a running node
//! needs: identity, settings and credentials. Errors name the file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use topology::{Credentials, GbId, Topology};

use crate::node::Identity;
use crate::settings::Settings;
use crate::sip::Peer;

/// Why a node could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The topology file is unreadable or invalid.
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    /// The ID is not a node of the topology.
    #[error("node {id} is not in {path}; pick one of the [[node]] ids there")]
    UnknownNode {
        /// The ID asked for.
        id: GbId,
        /// The topology file.
        path: String,
    },
    /// The credentials file is unreadable or invalid.
    #[error(transparent)]
    Credentials(#[from] topology::CredentialsError),
}

/// Everything needed to start one node.
pub struct NodeConfig {
    /// Who the node is and whom it links to.
    pub identity: Identity,
    /// Timers and limits.
    pub settings: Settings,
    /// Passwords (never logged).
    pub credentials: Arc<Credentials>,
    /// QUIC links, when any of the node's links uses QUIC.
    pub quic: Option<crate::transport::QuicSetup>,
    /// HTTP API address, if any.
    pub http: Option<std::net::SocketAddr>,
}

/// Settings for a node from the topology's shared `[defaults]`.
pub fn settings_from(topology: &Topology) -> Settings {
    let s = topology.settings();
    let mut out = Settings {
        keepalive_interval: s.keepalive_interval,
        keepalive_timeout_count: s.keepalive_timeout_count,
        register_expires: s.register_expires,
        ..Settings::default()
    };
    if let Some(r) = s.register_retry {
        out.register_retry_min = r;
        out.register_retry_max = out.register_retry_max.max(r);
    }
    if let Some(t1) = s.sip_t1 {
        out.sip_timers.t1 = t1;
        out.query_timeout = out.sip_timers.transaction_timeout();
    }
    if let Some(l) = s.linger {
        out.linger = l;
    }
    if let Some(m) = s.media_timeout {
        out.media_timeout = m;
    }
    out.media_transport = s.media_transport;
    out.query_new_registrants = s.query_new_registrants;
    if let Some(n) = s.max_viewers_per_stream {
        out.max_viewers_per_stream = n;
    }
    if let Some(d) = s.ptz_lock {
        out.ptz_lock = d;
    }
    if let Some(d) = s.intact_probe {
        out.intact_probe = d;
    }
    out.subscribe_devices = s
        .subscribe_devices
        .iter()
        .map(|e| match e {
            topology::DeviceEvent::Catalog => crate::node::SubscriptionKind::Catalog,
            topology::DeviceEvent::Alarm => crate::node::SubscriptionKind::Alarm,
            topology::DeviceEvent::MobilePosition => crate::node::SubscriptionKind::Position,
        })
        .collect();
    out.ptz_priority = s.ptz_priority.clone();
    out
}

/// Load `path` and configure node `id`.
pub fn load(path: &Path, id: GbId) -> Result<NodeConfig, ConfigError> {
    let topology = Topology::load(path)?;
    let node = topology.node(&id).ok_or_else(|| ConfigError::UnknownNode {
        id,
        path: path.display().to_string(),
    })?;
    let credentials = Arc::new(Credentials::load(&node.credentials)?);
    let parent = topology.parent_of(&id).map(|p| {
        (
            p.id,
            match node.transport {
                // Dialled at the parent's QUIC address; the handshake proves
                // the parent's ID, so its messages carry it.
                topology::Transport::Quic => Peer {
                    transport: crate::sip::Transport::Quic,
                    addr: p.quic.unwrap_or(p.sip),
                    identity: Some(p.id),
                },
                t => Peer::plain(t.into(), p.sip),
            },
        )
    });
    let children: HashMap<GbId, String> = topology
        .children_of(&id)
        .map(|c| (c.id, c.name.clone()))
        .collect();
    Ok(NodeConfig {
        identity: Identity {
            id,
            name: node.name.clone(),
            level: node.level.as_str().to_owned(),
            addr: node.sip,
            parent,
            upper: node.upper.clone(),
            children,
        },
        settings: settings_from(&topology),
        credentials,
        quic: crate::transport::QuicSetup::from_topology(&topology, &id),
        http: node.http,
    })
}
