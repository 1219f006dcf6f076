//! Sharing policy for gbgate: which department, user, role or upper platform
//! may do what on which channels, and the audit of every decision
//! ([`audit`]).
//!
//! Rules are casbin CSV lines checked by our own parser ([`rules`]), compiled
//! into per-subject digit tries ([`Policy`]) for the hot path, and compared
//! with casbin itself, running the shipped `model.conf`, by [`oracle::Oracle`].
//!
//! ```text
//! p, dept:traffic, 3402*, live, allow
//! p, dept:traffic, 34020000001320000009, live, deny
//! p, node:34000000002000000001, group:river, catalog, allow, 2026-12-31T00:00:00Z
//! g, user:li, dept:traffic
//! g2, 34020000002150000001, group:river
//! ```

pub mod audit;
pub mod error;
pub mod index;
pub mod oracle;
pub mod rules;

#[cfg(test)]
mod fixture;

pub use error::{PolicyError, PolicyErrors};
pub use index::{Decision, Explanation, Match, Outcome, Policy, Reason, Request};
pub use rules::{
    Action, ActionPattern, Effect, Expiry, Grant, GroupMember, InvalidRule, ObjectPattern, Rule,
    RuleKind, RuleRef, Subject,
};

/// The casbin model the rules follow, shipped as `policy/model.conf`.
pub const MODEL: &str = include_str!("../model.conf");
