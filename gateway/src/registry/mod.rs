//! Who is registered here: devices and child nodes, their digest
//! authentication, expiry and keepalive liveness. Sans-IO: callers pass
//! `now` (monotonic) and `unix_now` (for nonces, which must survive the
//! process's own clock being monotonic only).

mod auth;
pub mod replay;

pub use auth::{AuthDecision, Registrar};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use topology::GbId;

use crate::gb::charset::Charset;
use crate::sip::Peer;

/// What kind of peer registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrantKind {
    /// A camera, NVR or other front-end device.
    Device,
    /// A gbgate child node named in the topology.
    ChildNode,
    /// A third-party lower platform (type 200, not in our topology).
    Platform,
}

/// One registered device or child node.
#[derive(Debug, Clone)]
pub struct Registrant {
    /// Its 20-digit ID.
    pub id: GbId,
    /// Device, child node or foreign platform.
    pub kind: RegistrantKind,
    /// Where its REGISTER came from; requests to it go there.
    pub peer: Peer,
    /// Its Contact URI, kept for display; never used for routing (LAN addresses).
    pub contact: String,
    /// Call-ID of its registration: a new one means a new binding (a reboot,
    /// or a child node that gave its registration up), so it is re-queried.
    pub call_id: String,
    /// When the registration lapses unless refreshed.
    pub expires_at: Instant,
    /// Last REGISTER, keepalive or other request from it.
    pub last_seen: Instant,
    /// False once keepalives lapse; true again on the next sign of life.
    pub online: bool,
    /// Charset its bodies arrive in, used when we write to it.
    pub charset: Charset,
    /// When it first registered in this run.
    pub since: std::time::SystemTime,
    /// Its last keepalive, and the gap before it: a device whose heartbeat
    /// is slower than ours is judged by its own pace, not flapped OFF.
    pub last_keepalive: Option<Instant>,
    /// Observed keepalive period.
    pub keepalive_gap: Option<Duration>,
}

/// The outcome of a sign of life from a registrant.
#[derive(Debug, PartialEq, Eq)]
pub enum Touch {
    /// Not registered (or expired): answer 404 so it re-registers.
    Unknown,
    /// Registered, but this came from another address than its REGISTER
    /// (NAT rebinding, or forged): it changes nothing, and the answer
    /// (404, as for an unknown ID) makes a genuine device re-register from
    /// where it is now.
    WrongSource,
    /// Accepted; `revived` when it was offline until now.
    Alive {
        /// It was offline until this message.
        revived: bool,
    },
}

impl Registrant {
    /// How long it may stay silent: our own window, or three of its own
    /// observed keepalive periods if it beats slower than we expect.
    pub fn liveness(&self, ours: Duration) -> Duration {
        match self.keepalive_gap {
            Some(gap) => ours.max(gap * 3),
            None => ours,
        }
    }
}

/// Why a registrant went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// It missed `keepalive_timeout_count` keepalive periods.
    KeepaliveLost,
    /// Its registration expired without refresh.
    Expired,
    /// It unregistered (Expires: 0).
    Unregistered,
}

/// The registration table.
#[derive(Debug, Default)]
pub struct Registry {
    /// Boxed: the table then moves 28-byte entries when it grows, not
    /// 200-byte registrants (a storm of new devices paused the node for
    /// 88 ms when it grew past 57,000).
    entries: HashMap<GbId, Box<Registrant>>,
}

/// What a REGISTER did to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// First registration, or back after being offline: query its catalog.
    Fresh,
    /// A refresh of a live registration.
    Refreshed,
}

impl Registry {
    /// Number of registrants (online or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nobody is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Look one up.
    pub fn get(&self, id: &GbId) -> Option<&Registrant> {
        self.entries.get(id).map(|r| &**r)
    }

    /// All registrants.
    pub fn iter(&self) -> impl Iterator<Item = &Registrant> {
        self.entries.values().map(|r| &**r)
    }

    /// Online registrants of a kind.
    pub fn count_online(&self, kind: RegistrantKind) -> usize {
        self.entries
            .values()
            .filter(|r| r.online && r.kind == kind)
            .count()
    }

    /// Record an accepted REGISTER with a non-zero expiry.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        id: GbId,
        kind: RegistrantKind,
        peer: Peer,
        contact: String,
        call_id: &str,
        expires: Duration,
        now: Instant,
    ) -> RegisterOutcome {
        match self.entries.get_mut(&id) {
            Some(r) => {
                let was_online = r.online;
                let moved = r.peer != peer || r.call_id != call_id;
                if r.call_id != call_id {
                    r.call_id = call_id.to_owned();
                }
                r.peer = peer;
                r.contact = contact;
                r.kind = kind;
                r.expires_at = now + expires;
                r.last_seen = now;
                r.online = true;
                // A new address or a new Call-ID: a rebooted device, or a
                // child that re-registered and expects to be re-queried.
                if was_online && !moved {
                    RegisterOutcome::Refreshed
                } else {
                    RegisterOutcome::Fresh
                }
            }
            None => {
                self.entries.insert(
                    id,
                    Box::new(Registrant {
                        id,
                        kind,
                        peer,
                        contact,
                        call_id: call_id.to_owned(),
                        expires_at: now + expires,
                        last_seen: now,
                        online: true,
                        charset: Charset::default(),
                        since: std::time::SystemTime::now(),
                        last_keepalive: None,
                        keepalive_gap: None,
                    }),
                );
                RegisterOutcome::Fresh
            }
        }
    }

    /// Remove a registrant (Expires: 0). Returns it if it was there.
    pub fn unregister(&mut self, id: &GbId) -> Option<Registrant> {
        self.entries.remove(id).map(|r| *r)
    }

    /// A sign of life (keepalive or any request) from `peer`. Only an
    /// authenticated REGISTER may move a registrant to another host or UDP
    /// port, so a forged `From` cannot redirect a device's traffic or keep a
    /// dead one alive. A new TCP connection from the registered host is the
    /// device reconnecting (TCP cannot be forged the way a UDP source can,
    /// and the host is the one its digest was checked from): the binding
    /// moves to it, as real platforms keep the newest connection.
    pub fn touch(&mut self, id: &GbId, peer: Peer, keepalive: bool, now: Instant) -> Touch {
        let Some(r) = self.entries.get_mut(id) else {
            return Touch::Unknown;
        };
        if now > r.expires_at {
            return Touch::Unknown;
        }
        if r.peer != peer {
            // Over a link with identity (QUIC) the certificate decides:
            // a new connection of the same node moves the binding.
            let reconnected = match peer.proves(id) {
                Some(proved) => proved,
                None => {
                    peer.transport.is_reliable()
                        && r.peer.transport == peer.transport
                        && r.peer.identity.is_none()
                        && r.peer.addr.ip() == peer.addr.ip()
                }
            };
            if !reconnected {
                return Touch::WrongSource;
            }
            r.peer = peer;
        }
        r.last_seen = now;
        if keepalive {
            if let Some(prev) = r.last_keepalive {
                r.keepalive_gap = Some(now.duration_since(prev));
            }
            r.last_keepalive = Some(now);
        }
        let revived = !r.online;
        r.online = true;
        Touch::Alive { revived }
    }

    /// Remember the charset a registrant writes in.
    pub fn set_charset(&mut self, id: &GbId, charset: Charset) {
        if let Some(r) = self.entries.get_mut(id) {
            r.charset = charset;
        }
    }

    /// Mark registrants offline whose keepalives lapsed or whose
    /// registration expired. Expired ones are removed.
    pub fn sweep(&mut self, now: Instant, liveness: Duration) -> Vec<(GbId, OfflineReason)> {
        let mut gone = Vec::new();
        for r in self.entries.values_mut() {
            if now > r.expires_at {
                gone.push((r.id, OfflineReason::Expired));
            } else if r.online && now.duration_since(r.last_seen) > r.liveness(liveness) {
                r.online = false;
                gone.push((r.id, OfflineReason::KeepaliveLost));
            }
        }
        for (id, reason) in &gone {
            if *reason == OfflineReason::Expired {
                self.entries.remove(id);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn peer(port: u16) -> Peer {
        Peer::plain(Transport::Udp, ([127, 0, 0, 1], port).into())
    }

    /// A QUIC link from `port` whose certificate proved `identity`.
    fn quic(port: u16, identity: GbId) -> Peer {
        Peer {
            transport: Transport::Quic,
            addr: ([127, 0, 0, 1], port).into(),
            identity: Some(identity),
        }
    }

    #[test]
    fn over_quic_the_certificate_decides_who_may_move_a_binding() {
        let mut r = Registry::default();
        let t = Instant::now();
        let node = GbId::parse("35010200002000000001").unwrap();
        let other = GbId::parse("35010300002000000001").unwrap();
        let k = RegistrantKind::ChildNode;
        r.register(
            node,
            k,
            quic(1, node),
            "c".into(),
            "a",
            Duration::from_secs(60),
            t,
        );
        // Another node's connection, even from the same host: refused.
        assert_eq!(r.touch(&node, quic(2, other), true, t), Touch::WrongSource);
        // A plain UDP message claiming the ID: refused.
        assert_eq!(r.touch(&node, peer(1), true, t), Touch::WrongSource);
        // The same node on a new connection (it redialled): the binding moves.
        assert!(matches!(
            r.touch(&node, quic(3, node), true, t),
            Touch::Alive { .. }
        ));
        assert_eq!(r.get(&node).unwrap().peer, quic(3, node));
    }

    fn id() -> GbId {
        GbId::parse("35010201001320000001").unwrap()
    }

    #[test]
    fn register_refresh_and_move() {
        let mut r = Registry::default();
        let t = Instant::now();
        let e = Duration::from_secs(60);
        let k = RegistrantKind::Device;
        assert_eq!(
            r.register(id(), k, peer(1), "c".into(), "a", e, t),
            RegisterOutcome::Fresh
        );
        assert_eq!(
            r.register(id(), k, peer(1), "c".into(), "a", e, t),
            RegisterOutcome::Refreshed
        );
        assert_eq!(
            r.register(id(), k, peer(2), "c".into(), "a", e, t),
            RegisterOutcome::Fresh
        );
        assert_eq!(
            r.register(id(), k, peer(2), "c".into(), "b", e, t),
            RegisterOutcome::Fresh,
            "a new Call-ID is a new binding"
        );
    }

    #[test]
    fn slow_heartbeat_widens_liveness() {
        let mut r = Registry::default();
        let t = Instant::now();
        r.register(
            id(),
            RegistrantKind::Device,
            peer(1),
            "c".into(),
            "a",
            Duration::from_secs(1000),
            t,
        );
        let live = Duration::from_secs(30);
        r.touch(&id(), peer(1), true, t);
        r.touch(&id(), peer(1), true, t + Duration::from_secs(20));
        // Gap 20 s → 60 s window, wider than our 30 s.
        assert!(r.sweep(t + Duration::from_secs(75), live).is_empty());
        assert_eq!(r.sweep(t + Duration::from_secs(81), live).len(), 1);
    }

    #[test]
    fn keepalive_lapse_then_revival_then_expiry() {
        let mut r = Registry::default();
        let t = Instant::now();
        r.register(
            id(),
            RegistrantKind::Device,
            peer(1),
            "c".into(),
            "a",
            Duration::from_secs(100),
            t,
        );
        let live = Duration::from_secs(3);
        assert!(r.sweep(t + Duration::from_secs(3), live).is_empty());
        assert_eq!(
            r.sweep(t + Duration::from_secs(4), live),
            vec![(id(), OfflineReason::KeepaliveLost)]
        );
        // Reported once only.
        assert!(r.sweep(t + Duration::from_secs(5), live).is_empty());
        assert_eq!(
            r.touch(&id(), peer(1), true, t + Duration::from_secs(6)),
            Touch::Alive { revived: true }
        );
        assert_eq!(
            r.touch(&id(), peer(1), true, t + Duration::from_secs(7)),
            Touch::Alive { revived: false }
        );
        assert_eq!(
            r.touch(&id(), peer(9), true, t + Duration::from_secs(7)),
            Touch::WrongSource
        );
        assert_eq!(
            r.sweep(t + Duration::from_secs(101), Duration::from_secs(1000)),
            vec![(id(), OfflineReason::Expired)]
        );
        assert!(r.is_empty());
        assert_eq!(
            r.touch(&id(), peer(1), true, t + Duration::from_secs(102)),
            Touch::Unknown
        );
    }
}
