//! Settings shared by all nodes: the `[defaults]` table, with its defaults.

use std::time::Duration;

use crate::node::Transport;

/// Default link transport.
pub const DEFAULT_TRANSPORT: Transport = Transport::Udp;
/// Default keepalive period in seconds (GB/T 28181: 60 s).
pub const DEFAULT_KEEPALIVE_INTERVAL_SECS: u64 = 60;
/// Default number of missed keepalives before a peer is offline (GB/T 28181: 3).
pub const DEFAULT_KEEPALIVE_TIMEOUT_COUNT: u32 = 3;
/// Default REGISTER expiry in seconds (GB/T 28181-2016 devices: 3600 s).
pub const DEFAULT_REGISTER_EXPIRES_SECS: u64 = 3600;

/// The `[defaults]` table after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Link transport for nodes that do not set their own (`transport`, default udp).
    pub transport: Transport,
    /// Keepalive MESSAGE period (`keepalive_interval_secs`, default 60).
    pub keepalive_interval: Duration,
    /// Missed keepalive periods before a peer is offline (`keepalive_timeout_count`, default 3).
    pub keepalive_timeout_count: u32,
    /// REGISTER expiry (`register_expires_secs`, default 3600).
    pub register_expires: Duration,
    /// First wait before re-registering after a failure (`register_retry_secs`);
    /// `None` leaves the node's own default (GB/T 28181-2022: no sooner than 60 s).
    pub register_retry: Option<Duration>,
    /// SIP transaction timer T1 (`sip_t1_ms`); `None` leaves RFC 3261's 500 ms.
    /// Tests and demos shorten it to make retransmission fast.
    pub sip_t1: Option<Duration>,
    /// How long a stream with no viewers stays open (`linger_secs`); `None`
    /// leaves the node's default (30 s).
    pub linger: Option<Duration>,
    /// Silence from a source after which its stream ends (`media_timeout_secs`);
    /// `None` leaves the node's default (10 s).
    pub media_timeout: Option<Duration>,
    /// How a node asks the devices and child nodes below it to send media
    /// (`media_transport`: udp, tcp-passive = we listen, tcp-active = we connect).
    pub media_transport: MediaTransport,
    /// Ask each newly registered device or child for its catalog (and a
    /// device for its DeviceInfo) (`query_new_registrants`, default true).
    /// Off where devices push their catalogs themselves, and in the
    /// REGISTER benchmark's like-for-like run.
    pub query_new_registrants: bool,
    /// Viewers one stream may have at one node (`max_viewers_per_stream`);
    /// `None` leaves the node's default, sized for its machine.
    pub max_viewers_per_stream: Option<usize>,
    /// How long a camera's PTZ control lock lasts after its holder's last
    /// command (`ptz_lock_secs`); `None` leaves the node's default (30 s).
    pub ptz_lock: Option<Duration>,
    /// How often the intact probe looks at each online camera registered
    /// to the node (`intact_probe_secs`; 0 turns it off); `None` leaves
    /// the node's default (an hour).
    pub intact_probe: Option<Duration>,
    /// What each node subscribes to at the devices registered to it
    /// (`subscribe_devices`, default none).
    pub subscribe_devices: Vec<DeviceEvent>,
    /// PTZ control priority per subject (`[defaults.ptz_priority]`, keyed
    /// by department name, stored as `dept:<name>`): 1 is the highest, 5
    /// the lowest and the default, as in GB/T 28181's `ControlPriority`.
    pub ptz_priority: std::collections::BTreeMap<String, u8>,
}

/// What a node may subscribe to at the devices registered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceEvent {
    /// Catalog changes.
    Catalog,
    /// Alarms.
    Alarm,
    /// Mobile positions.
    MobilePosition,
}

impl DeviceEvent {
    /// The spelling in the topology file.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceEvent::Catalog => "catalog",
            DeviceEvent::Alarm => "alarm",
            DeviceEvent::MobilePosition => "mobile_position",
        }
    }

    /// Parse the topology file's spelling.
    pub fn parse(s: &str) -> Option<DeviceEvent> {
        Some(match s {
            "catalog" => DeviceEvent::Catalog,
            "alarm" => DeviceEvent::Alarm,
            "mobile_position" => DeviceEvent::MobilePosition,
            _ => return None,
        })
    }
}

/// RTP transport a node asks its sources for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaTransport {
    /// RTP over UDP.
    #[default]
    Udp,
    /// RTP over TCP; the receiving node listens (`a=setup:passive`).
    TcpPassive,
    /// RTP over TCP; the receiving node connects (`a=setup:active`).
    TcpActive,
}

impl MediaTransport {
    /// The spelling in the topology file.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaTransport::Udp => "udp",
            MediaTransport::TcpPassive => "tcp-passive",
            MediaTransport::TcpActive => "tcp-active",
        }
    }

    /// Parse the topology file's spelling.
    pub fn parse(s: &str) -> Option<MediaTransport> {
        Some(match s {
            "udp" => MediaTransport::Udp,
            "tcp-passive" => MediaTransport::TcpPassive,
            "tcp-active" => MediaTransport::TcpActive,
            _ => return None,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            transport: DEFAULT_TRANSPORT,
            keepalive_interval: Duration::from_secs(DEFAULT_KEEPALIVE_INTERVAL_SECS),
            keepalive_timeout_count: DEFAULT_KEEPALIVE_TIMEOUT_COUNT,
            register_expires: Duration::from_secs(DEFAULT_REGISTER_EXPIRES_SECS),
            register_retry: None,
            sip_t1: None,
            linger: None,
            media_timeout: None,
            media_transport: MediaTransport::Udp,
            query_new_registrants: true,
            max_viewers_per_stream: None,
            ptz_lock: None,
            intact_probe: None,
            subscribe_devices: Vec::new(),
            ptz_priority: std::collections::BTreeMap::new(),
        }
    }
}

impl Settings {
    /// How long without a keepalive before a peer is offline: interval × count.
    pub fn keepalive_timeout(&self) -> Duration {
        self.keepalive_interval
            .checked_mul(self.keepalive_timeout_count)
            .unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_standard() {
        let s = Settings::default();
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!(s.keepalive_interval, Duration::from_secs(60));
        assert_eq!(s.keepalive_timeout_count, 3);
        assert_eq!(s.register_expires, Duration::from_secs(3600));
        assert_eq!(s.keepalive_timeout(), Duration::from_secs(180));
        assert_eq!((s.register_retry, s.sip_t1), (None, None));
    }
}
