use std::time::SystemTime;

use proptest::prelude::*;
use topology::GbId;

use super::*;
use crate::fixture::{self, cases};
use crate::index::Outcome;
use crate::rules::{Action, Subject};

#[test]
fn casbin_agrees_with_the_decision_table() {
    let policy = fixture::policy();
    let mut oracle = Oracle::new(&policy).expect("oracle builds");
    for c in &cases() {
        let (s, ch, anc) = c.ids();
        let req = Request {
            subject: &s,
            channel: &ch,
            ancestors: &anc,
            action: c.action,
        };
        let casbin = oracle.enforce(&req, c.now()).expect("casbin answers");
        assert_eq!(casbin, c.expect.outcome() == Outcome::Allow, "{}", c.name);
    }
}

#[test]
fn request_links_do_not_outlive_the_request() {
    let policy = fixture::policy();
    let mut oracle = Oracle::new(&policy).expect("oracle builds");
    let urban: Subject = "dept:urban".parse().expect("subject");
    let j = GbId::parse("34100000001320000001").expect("id");
    let bg = GbId::parse("34020000002150000001").expect("id");
    let with = Request {
        subject: &urban,
        channel: &j,
        ancestors: &[bg, bg],
        action: Action::Catalog,
    };
    let without = Request {
        ancestors: &[],
        ..with
    };
    let now = fixture::now();
    assert!(oracle.enforce(&with, now).expect("answers"));
    assert!(!oracle.enforce(&without, now).expect("answers"));
    assert!(oracle.enforce(&with, now).expect("answers"));
}

// Differential test: random small policies over colliding ID stems, random
// requests; the index allows exactly when casbin does.

const STEMS: [&str; 5] = [
    "34020000001320000001",
    "34020000001320000002",
    "34020100001320000001",
    "34030000001320000001",
    "35010000001320000001",
];
const ANCESTORS: [&str; 3] = [
    "34020000002150000001",
    "34020000002160000001",
    "34030000002160000002",
];
/// Ordered so that `g` lines only point right: no cycles.
const SUBJECTS: [&str; 7] = [
    "user:u",
    "user:v",
    "node:34000000002000000001",
    "dept:a",
    "dept:b",
    "role:r",
    "role:s",
];
const TIMES: [&str; 3] = [
    "2026-01-01T00:00:00Z",
    "2026-06-01T00:00:00Z",
    "2027-01-01T00:00:00Z",
];
const PREFIX_LENS: [usize; 6] = [1, 2, 4, 6, 10, 19];

fn id_text() -> impl Strategy<Value = String> {
    (0..STEMS.len(), 0..3usize).prop_map(|(s, tweak)| {
        // Mostly the stems themselves, sometimes a neighbour that shares 19 digits.
        let mut id = STEMS[s].to_owned();
        if tweak == 2 {
            id.pop();
            id.push('7');
        }
        id
    })
}

fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        id_text(),
        (0..STEMS.len(), 0..PREFIX_LENS.len())
            .prop_map(|(s, l)| format!("{}*", &STEMS[s][..PREFIX_LENS[l]])),
        (0..ANCESTORS.len()).prop_map(|a| ANCESTORS[a].to_owned()),
    ]
}

fn object() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        id_text(),
        (0..STEMS.len(), 0..PREFIX_LENS.len())
            .prop_map(|(s, l)| format!("{}*", &STEMS[s][..PREFIX_LENS[l]])),
        prop_oneof![Just("group:x".to_owned()), Just("group:y".to_owned())],
        (0..ANCESTORS.len()).prop_map(|a| format!("group:{}", ANCESTORS[a])),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    (0..Action::ALL.len()).prop_map(|i| Action::ALL[i])
}

fn p_line() -> impl Strategy<Value = String> {
    (
        0..SUBJECTS.len(),
        object(),
        prop_oneof![Just("*".to_owned()), action().prop_map(|a| a.to_string())],
        prop_oneof![3 => Just("allow"), 1 => Just("deny")],
        prop_oneof![2 => Just(None), 1 => (0..TIMES.len()).prop_map(Some)],
    )
        .prop_map(|(s, o, a, e, x)| match x {
            Some(t) => format!("p, {}, {o}, {a}, {e}, {}", SUBJECTS[s], TIMES[t]),
            None => format!("p, {}, {o}, {a}, {e}", SUBJECTS[s]),
        })
}

fn g_line() -> impl Strategy<Value = Option<String>> {
    (0..SUBJECTS.len(), 3..SUBJECTS.len())
        .prop_map(|(m, of)| (m < of).then(|| format!("g, {}, {}", SUBJECTS[m], SUBJECTS[of])))
}

fn g2_line(group: &'static str) -> impl Strategy<Value = String> {
    member().prop_map(move |m| format!("g2, {m}, group:{group}"))
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(p_line(), 1..14),
        prop::collection::vec(g_line(), 0..6),
        g2_line("x"),
        g2_line("y"),
        prop::collection::vec(prop_oneof![g2_line("x"), g2_line("y")], 0..4),
    )
        .prop_map(|(p, g, gx, gy, more)| {
            let mut lines = p;
            lines.extend(g.into_iter().flatten());
            lines.push(gx);
            lines.push(gy);
            lines.extend(more);
            lines.join("\n")
        })
}

#[derive(Debug, Clone)]
struct Req {
    subject: Subject,
    channel: GbId,
    ancestors: Vec<GbId>,
    action: Action,
    now: SystemTime,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop_oneof![
            8 => (0..SUBJECTS.len()).prop_map(|s| SUBJECTS[s]),
            1 => Just("user:w"),
        ],
        id_text(),
        prop::collection::vec(0..ANCESTORS.len(), 0..3),
        action(),
        (0..TIMES.len(), prop_oneof![Just(-1i64), Just(0), Just(1)]),
    )
        .prop_map(|(s, ch, anc, action, (t, delta))| {
            let base = fixture::at(TIMES[t]);
            let now = if delta < 0 {
                base - std::time::Duration::from_millis(500)
            } else {
                base + std::time::Duration::from_secs(delta.unsigned_abs())
            };
            Req {
                subject: s.parse().expect("subject"),
                channel: GbId::parse(&ch).expect("id"),
                ancestors: anc
                    .into_iter()
                    .map(|a| GbId::parse(ANCESTORS[a]).expect("id"))
                    .collect(),
                action,
                now,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_casbin(text in policy_text(), reqs in prop::collection::vec(request(), 32)) {
        let policy = Policy::parse(&[("random.csv", text.as_str())])
            .map_err(|e| TestCaseError::fail(format!("generated policy refused: {e}")))?;
        let mut oracle = Oracle::new(&policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &reqs {
            let req = Request {
                subject: &r.subject,
                channel: &r.channel,
                ancestors: &r.ancestors,
                action: r.action,
            };
            let ours = policy.decide(&req, r.now);
            let casbin = oracle.enforce(&req, r.now).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                ours.outcome == Outcome::Allow,
                casbin,
                "request {:?}: we say {}",
                r,
                ours.reason
            );
        }
    }
}
