//! Every timer and limit of a node, with its default, in one place.
//!
//! Operators expect each knob named and documented (ZLMediaKit's config.ini
//! habit): the topology file's `[defaults]` table sets the shared ones, the
//! rest keep the defaults below.

use std::time::Duration;

use crate::sip::transaction::Timers;

/// Timers and limits of one node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keepalive MESSAGE period, both toward the parent and expected from below (GB default 60 s).
    pub keepalive_interval: Duration,
    /// Missed keepalive periods before a peer counts as offline (GB default 3).
    pub keepalive_timeout_count: u32,
    /// Expires we ask of the parent, and the longest we grant below (GB: 3600 s).
    pub register_expires: Duration,
    /// First wait before re-registering after a failure; doubles up to `register_retry_max`.
    pub register_retry_min: Duration,
    /// Longest wait between registration attempts.
    pub register_retry_max: Duration,
    /// How long a digest nonce stays valid.
    pub nonce_lifetime: Duration,
    /// Failed authentications from one source IP within `lockout_window` that lock it out.
    pub lockout_failures: u32,
    /// Window in which failures are counted.
    pub lockout_window: Duration,
    /// How long a locked-out source is refused.
    pub lockout_duration: Duration,
    /// Messages waiting for the node beyond which it is overloaded: a new
    /// REGISTER (one without credentials) is then answered 503 with a
    /// Retry-After at once, so the registrations already under way finish
    /// and the device comes back later, instead of every request waiting
    /// until its sender retransmits.
    pub overload_backlog: usize,
    /// Most devices and child nodes registered at once.
    pub max_registrations: usize,
    /// Most open SIP transactions at once.
    pub max_transactions: usize,
    /// Largest SIP message accepted, in bytes.
    pub max_message_size: usize,
    /// Most simultaneous TCP connections.
    pub max_tcp_connections: usize,
    /// A split catalog answer idle this long is kept as it is (lost parts).
    pub catalog_part_timeout: Duration,
    /// Byte budget of a whole catalog MESSAGE over UDP (fits one datagram).
    pub catalog_udp_budget: usize,
    /// Byte budget of a whole catalog MESSAGE over TCP.
    pub catalog_tcp_budget: usize,
    /// Catalog MESSAGEs in flight toward one peer before waiting for 200s
    /// (64: at 16 a tier forwarding 140,000 UDP MESSAGEs sat idle waiting
    /// for its parent's 200s; 128 was no faster; 64 × 1,400 bytes is far
    /// inside a receive buffer).
    pub catalog_window: usize,
    /// Catalog changes are gathered this long before being pushed upward.
    pub catalog_flush_delay: Duration,
    /// Catalog/DeviceInfo questions to new registrants in flight at once,
    /// for the whole node (see `node::newcomers`).
    pub newcomer_query_window: usize,
    /// Catalog entries one registrant may report: a device its channels,
    /// a platform (a child node, a third-party platform) its subtree.
    pub catalog_limits: crate::catalog::SourceLimits,
    /// Changes waiting for the parent beyond which the node stops sending
    /// them one by one and re-registers, so the parent re-queries everything.
    pub max_event_backlog: usize,
    /// A parent that refuses pushed catalog changes is made to re-query
    /// (by re-registering) when our catalog gains or loses entries, at
    /// most this often.
    pub catalog_resync_min: Duration,
    /// RFC 3261 transaction timers.
    pub sip_timers: Timers,
    /// Most open calls (INVITE dialogs, both directions) at once.
    pub max_calls: usize,
    /// How long an INVITE may wait for its answer (ours below, or the media
    /// plane's for the parent's) before it is given up.
    pub invite_timeout: Duration,
    /// After the last viewer leaves, a stream stays open this long (a
    /// returning viewer starts at once), then BYE goes down.
    pub linger: Duration,
    /// A stream with no media from below for this long ends its viewers.
    pub media_timeout: Duration,
    /// Most simultaneous streams (hubs) at this node.
    pub max_streams: usize,
    /// Most viewers of one stream.
    pub max_viewers_per_stream: usize,
    /// How sources below are asked to send media.
    pub media_transport: topology::MediaTransport,
    /// Query each newly registered device or child for its catalog (and a
    /// device for its DeviceInfo).
    pub query_new_registrants: bool,
    /// How long a device query asked over HTTP (info, status, records) waits
    /// for the device's answer before 504: the SIP transaction timeout
    /// (64 × T1, 32 s by default).
    pub query_timeout: Duration,
    /// How long a camera's PTZ control lock lasts after its holder's last
    /// command (30 s): long enough to steer a dome by hand, short enough
    /// that a forgotten lock frees itself.
    pub ptz_lock: Duration,
    /// PTZ control priority per subject (`dept:<name>`), 1 highest to 5
    /// lowest; subjects not listed have 5, as GB/T 28181 platforms send.
    pub ptz_priority: std::collections::BTreeMap<String, u8>,
    /// How often the intact probe looks at each online camera registered
    /// here (not those behind a child node: that node looks); zero: never.
    /// Each look opens the live stream only where none is open, checks
    /// that its keyframe can start a decoder, and closes it.
    pub intact_probe: Duration,
    /// Looks of the intact probe running at once.
    pub intact_probe_concurrency: usize,
    /// What this node subscribes to at each device (and third-party lower
    /// platform) registered here: none unless the topology says (many
    /// devices answer SUBSCRIBE badly; those that report positions only
    /// to a subscriber need it).
    pub subscribe_devices: Vec<crate::node::SubscriptionKind>,
}

/// The `ControlPriority` of a subject not given one.
pub const DEFAULT_PTZ_PRIORITY: u8 = 5;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout_count: 3,
            register_expires: Duration::from_secs(3600),
            register_retry_min: Duration::from_secs(60),
            register_retry_max: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(300),
            lockout_failures: 5,
            lockout_window: Duration::from_secs(60),
            lockout_duration: Duration::from_secs(300),
            max_registrations: 100_000,
            max_transactions: 200_000,
            max_message_size: 65_535,
            max_tcp_connections: 20_000,
            catalog_part_timeout: Duration::from_secs(10),
            catalog_udp_budget: 1400,
            catalog_tcp_budget: 60_000,
            catalog_window: 64,
            catalog_flush_delay: Duration::from_millis(100),
            catalog_limits: crate::catalog::SourceLimits::default(),
            newcomer_query_window: 64,
            max_event_backlog: 500_000,
            overload_backlog: 2_000,
            catalog_resync_min: Duration::from_secs(30),
            sip_timers: Timers::default(),
            max_calls: 20_000,
            invite_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(30),
            media_timeout: Duration::from_secs(10),
            max_streams: 10_000,
            max_viewers_per_stream: viewers_for_this_machine(),
            media_transport: topology::MediaTransport::Udp,
            query_new_registrants: true,
            query_timeout: Timers::default().transaction_timeout(),
            ptz_lock: Duration::from_secs(30),
            intact_probe: Duration::from_secs(3600),
            intact_probe_concurrency: 4,
            subscribe_devices: Vec::new(),
            ptz_priority: std::collections::BTreeMap::new(),
        }
    }
}

/// Viewers of one stream a node takes by default: 1,000 per CPU core. The
/// CPU is not what runs out: the fan-out writer costs 0.024 CPU-seconds per
/// Gbit (BENCHMARKS.md), so one core writes more than a 10 GbE port
/// carries (2,500 viewers of a 4 Mbit/s camera). The bound keeps one
/// crowd from taking a machine's whole port from every other stream.
pub fn viewers_for_this_machine() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) * 1_000
}

impl Settings {
    /// How long a peer may stay silent before it is offline.
    pub fn liveness_timeout(&self) -> Duration {
        self.keepalive_interval * self.keepalive_timeout_count
    }

    /// Catalog byte budget for a transport.
    pub fn catalog_budget(&self, transport: crate::sip::Transport) -> usize {
        if transport.is_reliable() {
            self.catalog_tcp_budget
        } else {
            self.catalog_udp_budget
        }
    }
}
