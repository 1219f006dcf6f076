//! The one gate: every request that crosses the node (a parent's Catalog
//! query, INVITE and device queries; a department's HTTP call) becomes an
//! [`Ask`] (who, on behalf of whom, which channel, which action) and passes
//! [`Gate::decide`] before any work is done. The decision is synchronous
//! and in memory (a compiled [`Policy`]), so the node stays sans-IO; the
//! node turns each decision into an audit record on its output queue.
//!
//! Catalogs are filtered by video source (131 camera, 132 IPC); devices,
//! platforms and groups are the tree's structure and stay listed, and an
//! IPC above a shared channel is listed with it, so a shared camera always
//! has its path to the root. Video, control and queries are decided for
//! any ID.

pub mod access;
pub mod reload;

use std::sync::Arc;
use std::time::SystemTime;

use policy::{Action, Outcome, Policy, Request, Subject};
use topology::GbId;

/// One request at the gate.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Who asks, as authenticated: `node:<id>` for a parent (by its
    /// registration), `dept:`/`user:` for a token holder.
    pub who: Subject,
    /// On whose behalf, as the asker says (a city INVITEing for
    /// `dept:police`); audited, never decided on: each tier decides only
    /// what it shares with the one above.
    pub on_behalf_of: Option<Subject>,
    /// The channel (or device) the request is about.
    pub channel: GbId,
    /// What is asked.
    pub action: Action,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True when the request may proceed.
    pub allowed: bool,
    /// The deciding rule (`file:line` and text), when one decided.
    pub rule: Option<String>,
    /// Why, for a person: the audit, the 403 body, the log.
    pub reason: String,
}

/// The policy a node enforces, or none (a node without policy files
/// shares everything, as gbgate did before policies existed).
#[derive(Debug, Clone, Default)]
pub struct Gate {
    policy: Option<Arc<Policy>>,
}

impl Gate {
    /// A gate enforcing `policy`; `None` lets everything through.
    pub fn new(policy: Option<Arc<Policy>>) -> Self {
        Gate { policy }
    }

    /// The policy in force, if any.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// True when a policy is in force (decisions are audited then).
    pub fn enforcing(&self) -> bool {
        self.policy.is_some()
    }

    /// Decide `ask`, given the channel's catalog ancestors (device,
    /// business group, virtual organisation…, nearest first).
    pub fn decide(&self, ask: &Ask, ancestors: &[GbId], now: SystemTime) -> Verdict {
        let Some(policy) = &self.policy else {
            return Verdict {
                allowed: true,
                rule: None,
                reason: "no sharing policy configured: everything is shared".into(),
            };
        };
        if !in_catalog_policy(&ask.channel) && ask.action == Action::Catalog {
            return Verdict {
                allowed: true,
                rule: None,
                reason: "structure (not a video source) is always listed".into(),
            };
        }
        let d = policy.decide(
            &Request {
                subject: &ask.who,
                channel: &ask.channel,
                ancestors,
                action: ask.action,
            },
            now,
        );
        Verdict {
            allowed: d.outcome == Outcome::Allow,
            rule: d.rule.as_ref().map(ToString::to_string),
            reason: d.reason.to_string(),
        }
    }

    /// True when `who` may see `channel` in a catalog: the filter for
    /// answers and pushed changes (no audit per entry; the caller audits
    /// the answer as a whole).
    pub fn shows(
        &self,
        who: &Subject,
        channel: &GbId,
        ancestors: &[GbId],
        now: SystemTime,
    ) -> bool {
        let Some(policy) = &self.policy else {
            return true;
        };
        if !in_catalog_policy(channel) {
            return true;
        }
        policy
            .decide(
                &Request {
                    subject: who,
                    channel,
                    ancestors,
                    action: Action::Catalog,
                },
                now,
            )
            .outcome
            == Outcome::Allow
    }
}

/// True for the entries a catalog is filtered by: video sources (131
/// camera, 132 IPC). An IPC whose channel is shared is listed as that
/// channel's parent even where the policy does not name it.
pub fn in_catalog_policy(id: &GbId) -> bool {
    id.is_channel()
}

/// The subject a peer node or third-party platform is known by.
pub fn node_subject(id: GbId) -> Subject {
    Subject::Node(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(text: &str) -> Gate {
        Gate::new(Some(Arc::new(
            Policy::parse(&[("test.csv", text)]).unwrap(),
        )))
    }

    const CITY: &str = "35010000002000000001";

    fn ask(channel: &str, action: Action) -> Ask {
        Ask {
            who: node_subject(GbId::parse(CITY).unwrap()),
            on_behalf_of: None,
            channel: GbId::parse(channel).unwrap(),
            action,
        }
    }

    #[test]
    fn without_policy_everything_passes() {
        let g = Gate::default();
        let v = g.decide(
            &ask("35010201001310000001", Action::Live),
            &[],
            SystemTime::now(),
        );
        assert!(v.allowed);
        assert!(!g.enforcing());
    }

    #[test]
    fn a_parent_sees_and_watches_only_what_is_shared() {
        let g = policy(&format!(
            "p, node:{CITY}, 3501020100131000000*, catalog, allow\n\
             p, node:{CITY}, 3501020100131000000*, live, allow\n\
             p, node:{CITY}, 35010201001310000009, *, deny\n"
        ));
        let now = SystemTime::now();
        let shared = ask("35010201001310000001", Action::Live);
        let v = g.decide(&shared, &[], now);
        assert!(v.allowed, "{v:?}");
        assert!(v.rule.unwrap().contains("test.csv:2"));
        let denied = g.decide(&ask("35010201001310000009", Action::Live), &[], now);
        assert!(!denied.allowed);
        assert!(denied.rule.unwrap().contains("test.csv:3"));
        let unshared = g.decide(&ask("35010201001310000011", Action::Live), &[], now);
        assert!(!unshared.allowed);
        assert!(unshared.rule.is_none());
        assert!(!unshared.reason.is_empty());
        // Playback was never granted.
        assert!(
            !g.decide(&ask("35010201001310000001", Action::Playback), &[], now)
                .allowed
        );
        // Structure is listed whatever the rules say; watching it is not.
        let nvr = ask("35010201001180000001", Action::Catalog);
        assert!(g.decide(&nvr, &[], now).allowed);
        let city = GbId::parse(CITY).unwrap();
        assert!(g.shows(
            &node_subject(city),
            &GbId::parse("35010201001310000001").unwrap(),
            &[],
            now
        ));
        assert!(!g.shows(
            &node_subject(city),
            &GbId::parse("35010201001310000009").unwrap(),
            &[],
            now
        ));
    }
}
