//! Digest authentication of REGISTER, as a registrar.
//!
//! Nonces are stateless (an HMAC of issue time, serial and source IP under
//! a per-process key). State is kept for sources that failed (lock-out, a
//! bounded map) and, per nonce minted within its lifetime, how it was used
//! ([`super::replay::ReplayLedger`]: 8 bytes a nonce, no pause to prune).
//! Both are driven by `now` rather than caches so that tests control time
//! exactly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::replay::{NonceUse, ReplayLedger};
use crate::settings::Settings;
use crate::sip::auth::{Challenge, DigestCredentials, NonceError, NonceMinter};

/// Bound on the failure table.
const MAX_TRACKED: usize = 100_000;

/// Most nonces the replay ledger holds: 13,000 challenges a second over the
/// default 300 s lifetime, 32 MiB at most. Beyond it the oldest are
/// forgotten and their users challenged again.
const MAX_NONCES: usize = 4_000_000;

/// The registrar's verdict on one REGISTER.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// Credentials are valid.
    Accept,
    /// Answer 401 with this challenge (no or stale credentials).
    Challenge(Challenge),
    /// Answer 403: wrong password, unknown user, or locked-out source.
    Forbidden(&'static str),
}

#[derive(Debug)]
struct Failures {
    count: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// Decides REGISTER authentication for one realm.
pub struct Registrar {
    realm: String,
    minter: NonceMinter,
    nonce_lifetime: Duration,
    lockout_failures: u32,
    lockout_window: Duration,
    lockout_duration: Duration,
    failures: HashMap<(IpAddr, String), Failures>,
    nonces: ReplayLedger,
    /// A password no device has, checked for unknown IDs.
    decoy: String,
}

impl Registrar {
    /// A registrar for `realm` (the node's 10-digit SIP domain).
    pub fn new(realm: String, minter: NonceMinter, settings: &Settings) -> Self {
        Registrar {
            realm,
            minter,
            nonce_lifetime: settings.nonce_lifetime,
            lockout_failures: settings.lockout_failures,
            lockout_window: settings.lockout_window,
            lockout_duration: settings.lockout_duration,
            failures: HashMap::new(),
            nonces: ReplayLedger::new(settings.nonce_lifetime.as_secs(), MAX_NONCES),
            decoy: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// The digest realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn challenge(&mut self, source: IpAddr, unix_now: u64, stale: bool) -> Challenge {
        let (nonce, serial) = self.minter.mint_serial(unix_now, source);
        self.nonces.minted(serial, unix_now);
        Challenge {
            realm: self.realm.clone(),
            nonce,
            opaque: None,
            algorithm: Some("MD5".into()),
            // Offered, not required: devices that ignore qop answer in the
            // RFC 2069 form, which `verify` accepts.
            qop: Some("auth".into()),
            stale,
        }
    }

    /// True while `user` from `source` is locked out.
    pub fn is_locked(&self, source: IpAddr, user: &str, now: Instant) -> bool {
        self.failures
            .get(&(source, user.to_owned()))
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Judge a REGISTER from `source` claiming `user`, given its Authorization
    /// header (if any) and the password on file (None: unknown user).
    /// `fingerprint` identifies the request (a keyed hash of its Call-ID,
    /// CSeq and source address): REGISTER is answered statelessly, and the
    /// same request seen again is a retransmission, answered again, not a
    /// replay.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        source: IpAddr,
        user: &str,
        authorization: Option<&str>,
        password: Option<&str>,
        fingerprint: u64,
        now: Instant,
        unix_now: u64,
    ) -> AuthDecision {
        if self.is_locked(source, user, now) {
            return AuthDecision::Forbidden("source locked out after repeated failures");
        }
        let Some(header) = authorization else {
            return AuthDecision::Challenge(self.challenge(source, unix_now, false));
        };
        let Ok(creds) = DigestCredentials::parse(header) else {
            // Nothing proves this came from the source, so it counts for
            // nothing: a fresh challenge.
            return AuthDecision::Challenge(self.challenge(source, unix_now, false));
        };
        let serial = match self.minter.validate_serial(
            &creds.nonce,
            unix_now,
            source,
            self.nonce_lifetime.as_secs(),
        ) {
            Ok((_, serial)) => serial,
            Err(NonceError::Expired { .. }) | Err(NonceError::FromTheFuture) => {
                return AuthDecision::Challenge(self.challenge(source, unix_now, true));
            }
            // A nonce we did not issue to this source (or from before a restart):
            // challenge afresh rather than count it as a wrong password.
            Err(_) => return AuthDecision::Challenge(self.challenge(source, unix_now, false)),
        };
        if creds.realm != self.realm || creds.username != user {
            self.fail(source, user, now);
            return AuthDecision::Forbidden("username or realm does not match the registrant");
        }
        let Some(password) = password else {
            // The same digest work as for a known ID, so the time taken
            // does not tell an unknown ID from a wrong password.
            let _ = creds.verify("REGISTER", &self.decoy);
            self.fail(source, user, now);
            return AuthDecision::Forbidden("no credentials on file for this ID");
        };
        if !creds.verify("REGISTER", password) {
            self.fail(source, user, now);
            return AuthDecision::Forbidden("wrong password");
        }
        // Replay: with qop the nonce count must grow; without it (RFC 2069
        // devices) a nonce serves one successful REGISTER only.
        let nc = match creds.qop {
            Some(_) => match creds.nonce_count() {
                Some(nc) => nc,
                None => {
                    self.fail(source, user, now);
                    return AuthDecision::Forbidden("qop without a valid nc");
                }
            },
            None => 0,
        };
        match self
            .nonces
            .use_nonce(serial, nc, creds.qop.is_some(), fingerprint)
        {
            NonceUse::Fresh => {}
            NonceUse::Retransmission => {
                metrics::counter!("gbgate_register_retransmissions_total").increment(1);
            }
            // A replayed request, or a nonce no longer tracked: force a new
            // nonce rather than trust it.
            NonceUse::Replay | NonceUse::Unknown => {
                return AuthDecision::Challenge(self.challenge(source, unix_now, true));
            }
        }
        if !self.failures.is_empty() {
            self.failures.remove(&(source, user.to_owned()));
        }
        AuthDecision::Accept
    }

    /// A failure from a request whose nonce we issued to this source (so it
    /// is not a spoofed packet), counted per (source IP, user): one wrong
    /// camera behind a NAT does not lock out its neighbours.
    fn fail(&mut self, source: IpAddr, user: &str, now: Instant) {
        let key = (source, user.to_owned());
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&key) {
            self.prune(now);
            if self.failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let f = self.failures.entry(key).or_insert(Failures {
            count: 0,
            window_start: now,
            locked_until: None,
        });
        if now.duration_since(f.window_start) > self.lockout_window {
            f.count = 0;
            f.window_start = now;
        }
        f.count += 1;
        if f.count >= self.lockout_failures {
            f.locked_until = Some(now + self.lockout_duration);
            tracing::warn!(%source, failures = f.count, "source locked out after repeated authentication failures");
        }
    }

    /// Drop lock-out and nonce-count entries that can no longer matter.
    pub fn prune(&mut self, now: Instant) {
        let window = self.lockout_window;
        self.failures.retain(|_, f| match f.locked_until {
            Some(until) => now < until,
            None => now.duration_since(f.window_start) <= window,
        });
    }

    /// Forget nonces issued before the nonce lifetime ended (they fail
    /// validation anyway).
    pub fn expire_nonces(&mut self, unix_now: u64) {
        self.nonces.expire(unix_now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::answer;

    const USER: &str = "35010201001320000001";
    /// The fingerprint of "the request" in tests that send one.
    const FP: u64 = 0x5eed;

    fn registrar() -> Registrar {
        Registrar::new(
            "3501020100".into(),
            NonceMinter::new([7; 32]),
            &Settings::default(),
        )
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn challenge_of(d: AuthDecision) -> Challenge {
        match d {
            AuthDecision::Challenge(c) => c,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn challenge_then_accept_then_wrong_password() {
        let mut r = registrar();
        let now = Instant::now();
        let c = challenge_of(r.decide(ip(1), USER, None, Some("pw"), FP, now, 1000));
        assert_eq!(c.realm, "3501020100");
        let uri = "sip:35010201002000000001@3501020100";
        let good = answer(&c, "REGISTER", uri, USER, "pw", 1, "abc").to_header_value();
        assert_eq!(
            r.decide(ip(1), USER, Some(&good), Some("pw"), FP, now, 1001),
            AuthDecision::Accept
        );
        let bad = answer(&c, "REGISTER", uri, USER, "nope", 1, "abc").to_header_value();
        assert!(matches!(
            r.decide(ip(1), USER, Some(&bad), Some("pw"), FP, now, 1001),
            AuthDecision::Forbidden("wrong password")
        ));
    }

    #[test]
    fn expired_nonce_is_stale_and_other_source_rechallenged() {
        let mut r = registrar();
        let now = Instant::now();
        let c = challenge_of(r.decide(ip(1), USER, None, Some("pw"), FP, now, 1000));
        let a = answer(&c, "REGISTER", "sip:x@y", USER, "pw", 1, "abc").to_header_value();
        let stale = challenge_of(r.decide(ip(1), USER, Some(&a), Some("pw"), FP, now, 1000 + 301));
        assert!(stale.stale);
        let other = challenge_of(r.decide(ip(2), USER, Some(&a), Some("pw"), FP, now, 1001));
        assert!(!other.stale);
    }

    #[test]
    fn lockout_after_repeated_failures_and_release() {
        let mut r = registrar();
        let now = Instant::now();
        let c = challenge_of(r.decide(ip(3), USER, None, Some("pw"), FP, now, 1000));
        let bad = answer(&c, "REGISTER", "sip:x@y", USER, "bad", 1, "abc").to_header_value();
        for _ in 0..5 {
            assert!(matches!(
                r.decide(ip(3), USER, Some(&bad), Some("pw"), FP, now, 1000),
                AuthDecision::Forbidden(_)
            ));
        }
        let good = answer(&c, "REGISTER", "sip:x@y", USER, "pw", 1, "abc").to_header_value();
        assert!(matches!(
            r.decide(ip(3), USER, Some(&good), Some("pw"), FP, now, 1000),
            AuthDecision::Forbidden("source locked out after repeated failures")
        ));
        // Another source, or another device at the same source, is unaffected.
        assert!(matches!(
            r.decide(ip(4), USER, None, Some("pw"), FP, now, 1000),
            AuthDecision::Challenge(_)
        ));
        let other = "35010201001320000002";
        let c3 = challenge_of(r.decide(ip(3), other, None, Some("pw"), FP, now, 1000));
        let good3 = answer(&c3, "REGISTER", "sip:x@y", other, "pw", 1, "abc").to_header_value();
        assert_eq!(
            r.decide(ip(3), other, Some(&good3), Some("pw"), FP, now, 1000),
            AuthDecision::Accept
        );
        let later = now + Duration::from_secs(301);
        let c2 = challenge_of(r.decide(ip(3), USER, None, Some("pw"), FP, later, 1301));
        let good2 = answer(&c2, "REGISTER", "sip:x@y", USER, "pw", 1, "abc").to_header_value();
        assert_eq!(
            r.decide(ip(3), USER, Some(&good2), Some("pw"), FP, later, 1301),
            AuthDecision::Accept
        );
    }

    #[test]
    fn nonce_count_replay_is_refused() {
        let mut r = registrar();
        let now = Instant::now();
        let mut c = challenge_of(r.decide(ip(5), USER, None, Some("pw"), FP, now, 1000));
        c.qop = Some("auth".into());
        let first = answer(&c, "REGISTER", "sip:x@y", USER, "pw", 1, "abc").to_header_value();
        assert_eq!(
            r.decide(ip(5), USER, Some(&first), Some("pw"), FP, now, 1000),
            AuthDecision::Accept
        );
        // The very same request again (its 200 was lost): answered again.
        assert_eq!(
            r.decide(ip(5), USER, Some(&first), Some("pw"), FP, now, 1000),
            AuthDecision::Accept
        );
        // The same header in another request: replay.
        assert!(matches!(
            r.decide(ip(5), USER, Some(&first), Some("pw"), FP + 1, now, 1000),
            AuthDecision::Challenge(_)
        ));
        let second = answer(&c, "REGISTER", "sip:x@y", USER, "pw", 2, "abd").to_header_value();
        assert_eq!(
            r.decide(ip(5), USER, Some(&second), Some("pw"), FP, now, 1000),
            AuthDecision::Accept
        );
    }

    #[test]
    fn without_qop_a_nonce_serves_once() {
        let mut r = registrar();
        let now = Instant::now();
        let mut c = challenge_of(r.decide(ip(7), USER, None, Some("pw"), FP, now, 1000));
        assert_eq!(c.qop.as_deref(), Some("auth"), "qop is offered");
        c.qop = None; // an RFC 2069 device ignores it
        let a = answer(&c, "REGISTER", "sip:x@y", USER, "pw", 1, "abc").to_header_value();
        assert_eq!(
            r.decide(ip(7), USER, Some(&a), Some("pw"), FP, now, 1000),
            AuthDecision::Accept
        );
        let again = challenge_of(r.decide(ip(7), USER, Some(&a), Some("pw"), FP + 1, now, 1001));
        assert!(again.stale);
    }

    #[test]
    fn garbage_authorization_is_rechallenged_not_counted() {
        let mut r = registrar();
        let now = Instant::now();
        for _ in 0..10 {
            assert!(matches!(
                r.decide(
                    ip(8),
                    USER,
                    Some("Digest garbage"),
                    Some("pw"),
                    FP,
                    now,
                    1000
                ),
                AuthDecision::Challenge(_)
            ));
        }
        assert!(!r.is_locked(ip(8), USER, now));
    }

    #[test]
    fn unknown_user_is_forbidden() {
        let mut r = registrar();
        let now = Instant::now();
        let c = challenge_of(r.decide(ip(6), USER, None, None, FP, now, 1000));
        let a = answer(&c, "REGISTER", "sip:x@y", USER, "pw", 1, "abc").to_header_value();
        assert!(matches!(
            r.decide(ip(6), USER, Some(&a), None, FP, now, 1000),
            AuthDecision::Forbidden(_)
        ));
    }
}
