//! The decision table shared by the index tests and the oracle tests.

use std::time::SystemTime;

use topology::GbId;

use crate::index::{Outcome, Policy};
use crate::rules::{Action, Expiry, Subject};

pub const DEPT: &str = "\
# departments and their grants
p, dept:traffic, 3402*, live, allow
p, dept:traffic, 34020000001320000009, *, deny
p, dept:traffic, 340201*, playback, allow
p, dept:police, *, *, allow
p, dept:police, 3403*, ptz, deny
p, dept:urban, group:river, live, allow
p, dept:urban, group:34020000002150000001, catalog, allow
p, dept:urban, 3404*, download, allow, 2026-06-01T00:00:00Z
p, dept:urban, 3404*, talk, allow, 2027-01-01T00:00:00Z
g, user:li, dept:traffic
g, dept:traffic, role:viewer
g, role:viewer, role:base
p, role:base, 3405*, catalog, allow
p, role:viewer, 35*, live, allow
p, role:base, 3599*, live, deny
";

pub const UPPER: &str = "\
# upper platforms

p, node:34000000002000000001, *, catalog, allow
p, node:34000000002000000001, group:river, live, allow
g2, 34020000001320000001, group:river
g2, 3406*, group:river
g2, 34020000002160000007, group:river
p, node:34000000002000000001, group:34020000002160000008, live, deny
p, user:zhao, 3402*, live, allow
p, user:zhao, 34021*, *, allow, 2026-01-01T00:00:00Z
";

pub const DEPT_FILE: &str = "policy/dept.csv";
pub const UPPER_FILE: &str = "policy/upper.csv";

pub fn policy() -> Policy {
    match Policy::parse(&[(DEPT_FILE, DEPT), (UPPER_FILE, UPPER)]) {
        Ok(p) => p,
        Err(e) => panic!("fixture policy is invalid:\n{e}"),
    }
}

pub fn id(s: &str) -> GbId {
    match GbId::parse(s) {
        Ok(id) => id,
        Err(e) => panic!("{s}: {e}"),
    }
}

pub fn subject(s: &str) -> Subject {
    match s.parse() {
        Ok(s) => s,
        Err(e) => panic!("{s}: {e}"),
    }
}

pub fn at(s: &str) -> SystemTime {
    match s.parse::<Expiry>() {
        Ok(e) => e.to_system_time(),
        Err(e) => panic!("{s}: {e}"),
    }
}

/// The time every case is decided at unless it says otherwise.
pub fn now() -> SystemTime {
    at("2026-09-01T00:00:00Z")
}

/// What a case expects besides the outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Allowed by this rule.
    Allow(&'static str, u32),
    /// Denied by this deny rule, which overrides this allow rule (if any).
    Deny(&'static str, u32, Option<(&'static str, u32)>),
    /// Denied: only this grant matched, and it has expired.
    Expired(&'static str, u32),
    /// Denied: nothing matched.
    NoGrant,
    /// Denied: no rule names the subject.
    Unknown,
}

impl Expect {
    pub fn outcome(self) -> Outcome {
        match self {
            Expect::Allow(..) => Outcome::Allow,
            _ => Outcome::Deny,
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub subject: &'static str,
    pub channel: &'static str,
    pub ancestors: &'static [&'static str],
    pub action: Action,
    /// When to decide; `None` is [`now`].
    pub at: Option<&'static str>,
    pub expect: Expect,
}

const A: &str = "34020000001320000001"; // 3402, exact member of group:river
const B: &str = "34020000001320000009"; // 3402, denied to dept:traffic
const C: &str = "34020100001320000001"; // 340201
const D: &str = "34030000001320000001"; // 3403
const E: &str = "34040000001320000001"; // 3404
const F: &str = "34050000001320000001"; // 3405
const G: &str = "35010000001320000001"; // 35
const H: &str = "35990000001320000001"; // 3599
const I: &str = "34060000001320000001"; // 3406: group:river by prefix
const J: &str = "34100000001320000001"; // matches no prefix rule
const K: &str = "34021000001320000001"; // 34021
const BG: &str = "34020000002150000001"; // business group
const VO7: &str = "34020000002160000007"; // virtual organisation in group:river
const VO8: &str = "34020000002160000008"; // virtual organisation denied to the node
const NODE: &str = "node:34000000002000000001";

const DF: &str = DEPT_FILE;
const UF: &str = UPPER_FILE;

macro_rules! case {
    ($name:expr, $sub:expr, $ch:expr, [$($a:expr),*], $act:ident, $expect:expr) => {
        case!($name, $sub, $ch, [$($a),*], $act, None, $expect)
    };
    ($name:expr, $sub:expr, $ch:expr, [$($a:expr),*], $act:ident, $at:expr, $expect:expr) => {
        Case {
            name: $name,
            subject: $sub,
            channel: $ch,
            ancestors: &[$($a),*],
            action: Action::$act,
            at: $at,
            expect: $expect,
        }
    };
}

pub fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        case!("prefix allow", "dept:traffic", A, [], Live, Allow(DF, 2)),
        case!(
            "deny beats allow",
            "dept:traffic",
            B,
            [],
            Live,
            Deny(DF, 3, Some((DF, 2)))
        ),
        case!(
            "deny with action wildcard",
            "dept:traffic",
            B,
            [],
            Catalog,
            Deny(DF, 3, None)
        ),
        case!("unrelated action", "dept:traffic", A, [], Playback, NoGrant),
        case!(
            "longer prefix",
            "dept:traffic",
            C,
            [],
            Playback,
            Allow(DF, 4)
        ),
        case!(
            "shorter prefix still applies",
            "dept:traffic",
            C,
            [],
            Live,
            Allow(DF, 2)
        ),
        case!("outside every prefix", "dept:traffic", J, [], Live, NoGrant),
        case!(
            "everything, every action",
            "dept:police",
            J,
            [],
            Talk,
            Allow(DF, 5)
        ),
        case!(
            "area deny beats *",
            "dept:police",
            D,
            [],
            Ptz,
            Deny(DF, 6, Some((DF, 5)))
        ),
        case!(
            "area deny is per action",
            "dept:police",
            D,
            [],
            Live,
            Allow(DF, 5)
        ),
        case!(
            "named group, exact member",
            "dept:urban",
            A,
            [],
            Live,
            Allow(DF, 7)
        ),
        case!(
            "named group, prefix member",
            "dept:urban",
            I,
            [],
            Live,
            Allow(DF, 7)
        ),
        case!(
            "named group, catalog member",
            "dept:urban",
            J,
            [VO7],
            Live,
            Allow(DF, 7)
        ),
        case!(
            "named group, unrelated ancestor",
            "dept:urban",
            J,
            [BG],
            Live,
            NoGrant
        ),
        case!(
            "catalog group ancestor",
            "dept:urban",
            J,
            [BG],
            Catalog,
            Allow(DF, 8)
        ),
        case!(
            "catalog group, deeper ancestor",
            "dept:urban",
            J,
            [VO8, BG],
            Catalog,
            Allow(DF, 8)
        ),
        case!(
            "catalog group is not the channel",
            "dept:urban",
            BG,
            [],
            Catalog,
            NoGrant
        ),
        case!(
            "grant expired",
            "dept:urban",
            E,
            [],
            Download,
            Expired(DF, 9)
        ),
        case!(
            "grant expires at the second",
            "dept:urban",
            E,
            [],
            Download,
            Some("2026-06-01T00:00:00Z"),
            Expired(DF, 9)
        ),
        case!(
            "grant one second before expiry",
            "dept:urban",
            E,
            [],
            Download,
            Some("2026-05-31T23:59:59Z"),
            Allow(DF, 9)
        ),
        case!(
            "grant not yet expired",
            "dept:urban",
            E,
            [],
            Talk,
            Allow(DF, 10)
        ),
        case!("user inherits dept", "user:li", A, [], Live, Allow(DF, 2)),
        case!(
            "user inherits dept's deny",
            "user:li",
            B,
            [],
            Live,
            Deny(DF, 3, Some((DF, 2)))
        ),
        case!(
            "role two levels up",
            "dept:traffic",
            F,
            [],
            Catalog,
            Allow(DF, 14)
        ),
        case!(
            "role three levels up",
            "user:li",
            F,
            [],
            Catalog,
            Allow(DF, 14)
        ),
        case!(
            "role one level up",
            "dept:traffic",
            G,
            [],
            Live,
            Allow(DF, 15)
        ),
        case!(
            "inherited deny beats inherited allow",
            "user:li",
            H,
            [],
            Live,
            Deny(DF, 16, Some((DF, 15)))
        ),
        case!(
            "role does not inherit from members",
            "role:base",
            A,
            [],
            Live,
            NoGrant
        ),
        case!(
            "role as the subject",
            "role:base",
            F,
            [],
            Catalog,
            Allow(DF, 14)
        ),
        case!("unknown user", "user:nobody", A, [], Live, Unknown),
        case!(
            "unknown node",
            "node:99999999999999999999",
            A,
            [],
            Catalog,
            Unknown
        ),
        case!(
            "upper platform: catalog of everything",
            NODE,
            J,
            [],
            Catalog,
            Allow(UF, 3)
        ),
        case!(
            "upper platform: named group live",
            NODE,
            A,
            [],
            Live,
            Allow(UF, 4)
        ),
        case!(
            "upper platform: only a deny matches",
            NODE,
            J,
            [VO8],
            Live,
            Deny(UF, 8, None)
        ),
        case!(
            "catalog deny beats group allow",
            NODE,
            J,
            [VO7, VO8],
            Live,
            Deny(UF, 8, Some((UF, 4)))
        ),
        case!(
            "upper platform: nothing for live",
            NODE,
            J,
            [],
            Live,
            NoGrant
        ),
        case!(
            "expired grant ignored when another allows",
            "user:zhao",
            K,
            [],
            Live,
            Allow(UF, 9)
        ),
        case!(
            "expired action wildcard",
            "user:zhao",
            K,
            [],
            Ptz,
            Expired(UF, 10)
        ),
        case!(
            "expired grant's prefix does not match",
            "user:zhao",
            A,
            [],
            Ptz,
            NoGrant
        ),
        case!(
            "before the expired grant expired",
            "user:zhao",
            K,
            [],
            Ptz,
            Some("2025-12-31T23:59:59Z"),
            Allow(UF, 10)
        ),
    ]
}

impl Case {
    pub fn now(&self) -> SystemTime {
        self.at.map_or_else(now, at)
    }

    pub fn ids(&self) -> (Subject, GbId, Vec<GbId>) {
        (
            subject(self.subject),
            id(self.channel),
            self.ancestors.iter().map(|a| id(a)).collect(),
        )
    }
}
