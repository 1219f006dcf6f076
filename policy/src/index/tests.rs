use std::time::Duration;

use super::*;
use crate::fixture::{self, at, cases, id, subject, Expect, DEPT_FILE};

fn decide(policy: &Policy, c: &fixture::Case) -> Decision {
    let (s, ch, anc) = c.ids();
    let req = Request {
        subject: &s,
        channel: &ch,
        ancestors: &anc,
        action: c.action,
    };
    policy.decide(&req, c.now())
}

fn at_line(rule: &Option<RuleRef>) -> Option<(String, u32)> {
    rule.as_ref().map(|r| (r.file.to_string(), r.line))
}

#[test]
fn decision_table() {
    let policy = fixture::policy();
    let cases = cases();
    assert!(cases.len() >= 30);
    for c in &cases {
        let d = decide(&policy, c);
        assert_eq!(d.outcome, c.expect.outcome(), "{}: {}", c.name, d.reason);
        let line = |f: &str, l: u32| Some((f.to_owned(), l));
        match (c.expect, &d.reason) {
            (Expect::Allow(f, l), Reason::Allowed { rule }) => {
                assert_eq!(at_line(&Some(rule.clone())), line(f, l), "{}", c.name);
                assert_eq!(at_line(&d.rule), line(f, l), "{}", c.name);
            }
            (Expect::Deny(f, l, over), Reason::Denied { rule, overrides }) => {
                assert_eq!(at_line(&Some(rule.clone())), line(f, l), "{}", c.name);
                assert_eq!(at_line(&d.rule), line(f, l), "{}", c.name);
                assert_eq!(
                    at_line(overrides),
                    over.map(|(f, l)| (f.to_owned(), l)),
                    "{}",
                    c.name
                );
            }
            (Expect::Expired(f, l), Reason::Expired { rule, at }) => {
                assert_eq!(at_line(&Some(rule.clone())), line(f, l), "{}", c.name);
                assert!(!at.in_force_at(c.now()), "{}", c.name);
            }
            (Expect::NoGrant, Reason::NoGrant { .. })
            | (Expect::Unknown, Reason::UnknownSubject { .. }) => {
                assert_eq!(d.rule, None, "{}", c.name);
            }
            (want, got) => panic!("{}: expected {want:?}, got {got}", c.name),
        }
    }
}

#[test]
fn reasons_read_as_sentences() {
    let policy = fixture::policy();
    let shown: HashMap<&str, String> = cases()
        .iter()
        .map(|c| (c.name, decide(&policy, c).reason.to_string()))
        .collect();
    assert_eq!(
        shown["prefix allow"],
        "allowed by policy/dept.csv:2 `p, dept:traffic, 3402*, live, allow`"
    );
    assert_eq!(
        shown["deny beats allow"],
        "denied by policy/dept.csv:3 `p, dept:traffic, 34020000001320000009, *, deny`, deny wins \
         over policy/dept.csv:2 `p, dept:traffic, 3402*, live, allow`"
    );
    assert_eq!(
        shown["deny with action wildcard"],
        "denied by policy/dept.csv:3 `p, dept:traffic, 34020000001320000009, *, deny`, deny wins"
    );
    assert_eq!(
        shown["unrelated action"],
        "no rule grants dept:traffic playback on 34020000001320000001"
    );
    assert_eq!(
        shown["unknown user"],
        "unknown subject user:nobody: no rule names it"
    );
    assert_eq!(
        shown["grant expired"],
        "grant expired at 2026-06-01T00:00:00Z: policy/dept.csv:9 \
         `p, dept:urban, 3404*, download, allow, 2026-06-01T00:00:00Z`"
    );
}

#[test]
fn explain_lists_every_matching_rule() {
    let policy = fixture::policy();
    let li = subject("user:li");
    let ch = id("35990000001320000001");
    let req = Request {
        subject: &li,
        channel: &ch,
        ancestors: &[],
        action: Action::Live,
    };
    let ex = policy.explain(&req, fixture::now());
    assert_eq!(ex.decision, policy.decide(&req, fixture::now()));
    let got: Vec<(u32, Effect, String, bool)> = ex
        .matches
        .iter()
        .map(|m| (m.rule.line, m.effect, m.via.to_string(), m.in_force))
        .collect();
    assert_eq!(
        got,
        [
            (15, Effect::Allow, "role:viewer".to_owned(), true),
            (16, Effect::Deny, "role:base".to_owned(), true),
        ]
    );

    // Expired rules are listed, flagged, next to the one that decides.
    let zhao = subject("user:zhao");
    let k = id("34021000001320000001");
    let req = Request {
        subject: &zhao,
        channel: &k,
        ancestors: &[],
        action: Action::Live,
    };
    let ex = policy.explain(&req, fixture::now());
    let got: Vec<(u32, bool)> = ex
        .matches
        .iter()
        .map(|m| (m.rule.line, m.in_force))
        .collect();
    assert_eq!(got, [(9, true), (10, false)]);
    assert_eq!(ex.decision.outcome, Outcome::Allow);

    // A rule reached both as the channel and as an ancestor is listed once.
    let node = subject("node:34000000002000000001");
    let a = id("34020000001320000001");
    let req = Request {
        subject: &node,
        channel: &a,
        ancestors: &[a],
        action: Action::Live,
    };
    let lines: Vec<u32> = policy
        .explain(&req, fixture::now())
        .matches
        .iter()
        .map(|m| m.rule.line)
        .collect();
    assert_eq!(lines, [4]);
}

#[test]
fn counts_subjects_generation() {
    let mut policy = fixture::policy();
    assert_eq!(policy.rule_count(), 15 + 8);
    let subjects: Vec<String> = policy.subjects().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        subjects,
        [
            "dept:police",
            "dept:traffic",
            "dept:urban",
            "user:li",
            "user:zhao",
            "role:base",
            "role:viewer",
            "node:34000000002000000001",
        ]
    );
    assert_eq!(policy.generation(), 0);
    policy.set_generation(7);
    assert_eq!(policy.generation(), 7);
}

#[test]
fn next_expiry_is_the_next_grant_to_lapse() {
    let policy = fixture::policy();
    let next = |t: &str| policy.next_expiry(at(t));
    assert_eq!(
        next("2025-06-01T00:00:00Z"),
        Some(at("2026-01-01T00:00:00Z"))
    );
    assert_eq!(
        next("2026-03-01T00:00:00Z"),
        Some(at("2026-06-01T00:00:00Z"))
    );
    // At the instant a rule expires it no longer applies, so the next one is due.
    assert_eq!(
        next("2026-06-01T00:00:00Z"),
        Some(at("2027-01-01T00:00:00Z"))
    );
    assert_eq!(
        policy.next_expiry(at("2026-05-31T23:59:59Z") + Duration::from_millis(999)),
        Some(at("2026-06-01T00:00:00Z"))
    );
    assert_eq!(next("2027-01-01T00:00:00Z"), None);
}

fn errors_of(files: &[(&str, &str)]) -> Vec<String> {
    match Policy::parse(files) {
        Ok(_) => panic!("policy should be refused"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn membership_cycles_are_refused() {
    let text = "g, dept:a, role:b\ng, role:b, role:c\ng, role:c, dept:a\n";
    assert_eq!(
        errors_of(&[("roles.csv", text)]),
        ["roles.csv:3: membership cycle dept:a -> role:b -> role:c -> dept:a"]
    );
    assert_eq!(
        errors_of(&[(
            "roles.csv",
            "p, role:a, *, live, allow\ng, role:a, role:a\n"
        )]),
        ["roles.csv:2: membership cycle role:a -> role:a"]
    );
    // A diamond is not a cycle.
    let diamond = "g, user:u, dept:a\ng, user:u, dept:b\ng, dept:a, role:r\ng, dept:b, role:r\n\
                   p, role:r, 3402*, live, allow\n";
    let policy = Policy::parse(&[("d.csv", diamond)]).expect("a diamond is fine");
    let u = subject("user:u");
    let ch = id("34020000001320000001");
    let req = Request {
        subject: &u,
        channel: &ch,
        ancestors: &[],
        action: Action::Live,
    };
    assert_eq!(policy.decide(&req, fixture::now()).outcome, Outcome::Allow);
}

#[test]
fn cycle_across_files_names_the_closing_line() {
    let errors = errors_of(&[
        ("a.csv", "# a\ng, dept:x, role:y\n"),
        ("b.csv", "g, role:y, dept:x\n"),
    ]);
    assert_eq!(
        errors,
        ["b.csv:1: membership cycle dept:x -> role:y -> dept:x"]
    );
}

#[test]
fn errors_are_listed_in_file_and_line_order() {
    let errors = errors_of(&[
        (
            "a.csv",
            "p, dept:a, group:nope, live, allow\np, dept:a, *, lve, allow\n",
        ),
        (
            "b.csv",
            "g, dept:x, role:y\ng, role:y, dept:x\np, dept:a, *, live, allw\n",
        ),
    ]);
    let places: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(places, ["a.csv:1", "a.csv:2", "b.csv:2", "b.csv:3"]);
}

#[test]
fn undefined_group_is_refused() {
    let errors = errors_of(&[
        ("p.csv", "p, dept:a, group:rivr, live, allow\n"),
        ("g.csv", "g2, 3402*, group:river\n"),
    ]);
    assert_eq!(
        errors,
        ["p.csv:1: group:rivr has no members: no g2 line defines it"]
    );
}

#[test]
fn all_errors_of_all_files_are_listed() {
    let errors = errors_of(&[
        (
            "a.csv",
            "p, dept:a, *, live, allow\np, dept:a, *, lve, allow\n",
        ),
        (
            "b.csv",
            "p, dept:a, *\n\ng, user:b, node:34000000002000000001\n",
        ),
    ]);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("a.csv:2: unknown action `lve`"));
    assert!(errors[1].starts_with("b.csv:1: a `p` line needs"));
    assert!(errors[2].starts_with("b.csv:3: `node:34000000002000000001` cannot have members"));
}

#[test]
fn load_reads_files_and_names_unreadable_ones() {
    let dir = std::env::temp_dir().join(format!("policy-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dept = dir.join("dept.csv");
    let upper = dir.join("upper.csv");
    std::fs::write(&dept, fixture::DEPT).expect("write");
    std::fs::write(&upper, fixture::UPPER).expect("write");
    let policy = Policy::load(&[dept.clone(), upper.clone()]).expect("fixture loads");
    assert_eq!(policy.rule_count(), fixture::policy().rule_count());
    let li = subject("user:li");
    let ch = id("34020000001320000001");
    let req = Request {
        subject: &li,
        channel: &ch,
        ancestors: &[],
        action: Action::Live,
    };
    let d = policy.decide(&req, fixture::now());
    assert_eq!(
        d.rule.map(|r| r.file.to_string()),
        Some(dept.display().to_string())
    );

    let missing = dir.join("missing.csv");
    let errors = match Policy::load(&[upper.clone(), missing.clone()]) {
        Ok(_) => panic!("a missing file must fail"),
        Err(e) => e,
    };
    assert_eq!(errors.errors().len(), 1);
    assert!(matches!(&errors.errors()[0], PolicyError::Io { file, .. } if *file == missing));
    assert!(errors
        .to_string()
        .starts_with(&missing.display().to_string()));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn exact_channel_rule_does_not_cover_other_channels() {
    let policy = Policy::parse(&[(DEPT_FILE, "p, dept:a, 34020000001320000001, live, allow\n")])
        .expect("valid");
    let a = subject("dept:a");
    let check = |ch: &str, anc: &[GbId]| {
        let ch = id(ch);
        let req = Request {
            subject: &a,
            channel: &ch,
            ancestors: anc,
            action: Action::Live,
        };
        policy.decide(&req, fixture::now()).outcome
    };
    assert_eq!(check("34020000001320000001", &[]), Outcome::Allow);
    assert_eq!(check("34020000001320000002", &[]), Outcome::Deny);
    // An exact channel rule is about the channel, not channels under it.
    assert_eq!(
        check("34020000001320000002", &[id("34020000001320000001")]),
        Outcome::Deny
    );
}

#[test]
fn policy_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Policy>();
    check::<Decision>();
}
