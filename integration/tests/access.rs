//! Access requests against a real `gbgate` process (one city node with a
//! policy, tokens and a grants file): a department asks for a channel it
//! may not watch, an admin approves it with the `gbgate access` CLI and the
//! department's POST /api/v1/streams succeeds at once; a rejected request
//! grants nothing; non-admins cannot decide; bad requests get 400 bodies
//! that say what is wrong; the audit shows the request, the approval, the
//! grant and the gate's decisions; the store survives a restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use gbgate::api::auth::new_token;
use gbgate::gate::access::{stamp, AccessRequest};
use integration::demo::TreeSpec;
use integration::harness::{Cluster, FleetSpec};

const CH: &str = "35010201001310000001";
const CH2: &str = "35010201001310000002";

fn in_an_hour() -> String {
    stamp(SystemTime::now() + Duration::from_secs(3600))
}

fn ask(channel: &str, reason: &str) -> String {
    format!(
        r#"{{"channels":["{channel}"],"actions":["live"],"until":"{}","reason":"{reason}"}}"#,
        in_an_hour()
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    integration::harness::api_call(method, url, token, body).unwrap()
}

fn gbgate(args: &[&str]) -> (i32, String) {
    integration::harness::gbgate(args).unwrap()
}

#[test]
fn a_department_asks_an_admin_approves_and_the_grant_is_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 0,
        sip_base: 21300,
        http_base: 21400,
        ..TreeSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let (traffic, traffic_entry) = new_token("li", "traffic", false);
    let (police, police_entry) = new_token("wang", "police", false);
    std::fs::write(
        d.join("tokens.toml"),
        format!("{admin_entry}{traffic_entry}{police_entry}"),
    )
    .unwrap();
    std::fs::write(d.join("city.csv"), "p, dept:police, *, *, allow\n").unwrap();
    let grants = d.join("grants.csv");
    let store = d.join("grants.requests.json");
    let files = d.clone();
    let mut cluster = Cluster::start_nodes_with(
        &d,
        spec,
        FleetSpec::default(),
        move |_| {
            [
                "--policy",
                &files.join("city.csv").display().to_string(),
                "--tokens",
                &files.join("tokens.toml").display().to_string(),
                "--grants",
                &files.join("grants.csv").display().to_string(),
            ]
            .map(String::from)
            .to_vec()
        },
        Some(admin.clone()),
    )
    .unwrap();
    let city = cluster.tree.root().clone();
    let base = format!("http://{}", city.http);
    let http = city.http.to_string();
    let requests = format!("{base}/api/v1/access-requests");
    assert!(read(&grants).starts_with("# Grants written by gbgate"));
    let stream = |token: &str, ch: &str| {
        call(
            "POST",
            &format!("{base}/api/v1/streams"),
            Some(token),
            Some(&format!(r#"{{"channel":"{ch}","action":"live"}}"#)),
        )
    };

    // 1. Traffic may not watch the channel; the 403 says how to ask.
    let (s, body) = stream(&traffic, CH);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("/api/v1/access-requests"), "{body}");

    // 2. Bad requests are refused with what is wrong.
    let bad = |body: &str, want: &str| {
        let (s, got) = call("POST", &requests, Some(&traffic), Some(body));
        assert_eq!(s, 400, "{body} → {got}");
        assert!(got.contains(want), "{body} → {got}");
    };
    bad(&ask("3501020100131000000", "x"), "is not a 20-digit ID");
    bad(&ask(CH, " "), "give a reason");
    bad(
        r#"{"channels":["35010201001310000001"],"actions":["live"],"until":"2001-01-01T00:00:00Z","reason":"x"}"#,
        "not in the future",
    );
    bad(
        &format!(
            r#"{{"channels":["{CH}"],"actions":["fly"],"until":"{}","reason":"x"}}"#,
            in_an_hour()
        ),
        "action \"fly\"",
    );
    bad(
        &format!(
            r#"{{"group":"group:river","actions":["live"],"until":"{}","reason":"x"}}"#,
            in_an_hour()
        ),
        "not defined by any g2 line",
    );
    bad("{not json", "the body is not an access request");
    let (s, _) = call("POST", &requests, None, Some(&ask(CH, "x")));
    assert_eq!(s, 401);

    // 3. The department asks; it sees its own requests, another
    //    department does not, the admin sees all.
    let (s, body) = call(
        "POST",
        &requests,
        Some(&traffic),
        Some(&ask(CH, "flood watch")),
    );
    assert_eq!(s, 201, "{body}");
    let first: AccessRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(first.state.as_str(), "pending");
    let (s, body) = call("POST", &requests, Some(&traffic), Some(&ask(CH2, "parade")));
    assert_eq!(s, 201, "{body}");
    let second: AccessRequest = serde_json::from_str(&body).unwrap();
    let list = |token: &str, state: &str| -> Vec<u64> {
        let (s, body) = call(
            "GET",
            &format!("{requests}?state={state}"),
            Some(token),
            None,
        );
        assert_eq!(s, 200, "{body}");
        let v: Vec<AccessRequest> = serde_json::from_str(&body).unwrap();
        v.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(list(&traffic, "pending"), vec![first.id, second.id]);
    assert!(list(&police, "pending").is_empty());
    assert_eq!(list(&admin, "pending"), vec![first.id, second.id]);
    let (s, _) = call(
        "GET",
        &format!("{requests}/{}", first.id),
        Some(&police),
        None,
    );
    assert_eq!(s, 404, "another department's request is not shown");
    let (s, body) = call(
        "GET",
        &format!("{requests}?state=maybe"),
        Some(&admin),
        None,
    );
    assert_eq!(s, 400, "{body}");

    // 4. Only admins decide.
    let (s, body) = call(
        "POST",
        &format!("{requests}/{}/approve", first.id),
        Some(&traffic),
        Some(""),
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not an admin"), "{body}");
    let (code, out) = gbgate(&[
        "access", "approve", "1", "--http", &http, "--token", &police,
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("403"), "{out}");

    // 5. The admin approves with the CLI, ending earlier than asked; the
    //    grant is in force when the answer comes back.
    let (code, out) = gbgate(&["access", "list", "--http", &http, "--token", &admin]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("flood watch") && out.contains("parade"),
        "{out}"
    );
    let t0 = Instant::now();
    let (code, out) = gbgate(&[
        "access",
        "approve",
        &first.id.to_string(),
        "--until",
        "30m",
        "--http",
        &http,
        "--token",
        &admin,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("approved"), "{out}");
    let in_force = loop {
        let (s, body) = stream(&traffic, CH);
        if s == 200 {
            break t0.elapsed();
        }
        assert_eq!(s, 403, "{body}");
        assert!(t0.elapsed() < Duration::from_secs(3), "never granted");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("an approval was in force {in_force:?} after the CLI started");
    assert!(in_force < Duration::from_secs(1), "{in_force:?}");
    let text = read(&grants);
    assert!(
        text.contains(&format!(
            "# access request {} approved by ops at ",
            first.id
        )) && text.contains(": flood watch\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("p, dept:traffic, {CH}, live, allow, ")),
        "{text}"
    );
    let (s, body) = call(
        "GET",
        &format!("{requests}/{}", first.id),
        Some(&traffic),
        None,
    );
    assert_eq!(s, 200);
    let approved: AccessRequest = serde_json::from_str(&body).unwrap();
    let granted = approved.granted.clone().unwrap();
    assert!(granted.until < approved.until, "narrowed: {granted:?}");
    assert!(approved.written_at.is_some());
    let (s, body) = call(
        "POST",
        &format!("{requests}/{}/approve", first.id),
        Some(&admin),
        Some(""),
    );
    assert_eq!(s, 409, "{body}");

    // 6. The other request is rejected: nothing is granted.
    let (s, body) = call(
        "POST",
        &format!("{requests}/{}/reject", second.id),
        Some(&admin),
        Some("{}"),
    );
    assert_eq!(s, 400, "a rejection needs a reason: {body}");
    let (s, body) = call(
        "POST",
        &format!("{requests}/{}/reject", second.id),
        Some(&admin),
        Some(r#"{"reason":"the parade route is not yours"}"#),
    );
    assert_eq!(s, 200, "{body}");
    let rejected: AccessRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(rejected.state.as_str(), "rejected");
    let (s, body) = stream(&traffic, CH2);
    assert_eq!(s, 403, "{body}");
    assert!(!read(&grants).contains(CH2));
    let (s, _) = call(
        "POST",
        &format!("{requests}/999/approve"),
        Some(&admin),
        Some(""),
    );
    assert_eq!(s, 404);
    assert_eq!(list(&traffic, "pending"), Vec::<u64>::new());
    assert_eq!(list(&traffic, "rejected"), vec![second.id]);

    // 7. The audit: the request, the approval, the grant and the gate's
    //    decisions (deny before, allow after), in that order.
    let (s, body) = call(
        "GET",
        &format!("{base}/api/v1/audit?channel={CH}"),
        Some(&admin),
        None,
    );
    assert_eq!(s, 200, "{body}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let steps: Vec<String> = records
        .iter()
        .filter(|r| r["subject"] != "dept:police")
        .map(|r| format!("{} {} {}", r["kind"], r["subject"], r["outcome"]))
        .map(|s| s.replace('"', ""))
        .collect();
    let want = [
        "decision dept:traffic deny",
        "access_request dept:traffic pending",
        "access_request dept:ops approved",
        "access_request node:35010000002000000001 granted",
        "decision dept:traffic allow",
    ];
    let mut at = 0;
    for w in want {
        let found = steps[at..].iter().position(|s| s == w);
        assert!(found.is_some(), "{w} missing after {at} in {steps:#?}");
        at += found.unwrap_or(0) + 1;
    }
    let (s, body) = call(
        "GET",
        &format!("{base}/api/v1/audit?channel={CH2}"),
        Some(&admin),
        None,
    );
    assert_eq!(s, 200);
    assert!(
        body.contains("rejected") && body.contains("the parade route is not yours"),
        "{body}"
    );

    // 8. The store survives a restart, and so does the grant.
    cluster.stop_node(&city.id);
    assert!(read(&store).contains("the parade route is not yours"));
    cluster.start_node(&city.id).unwrap();
    cluster
        .wait_for("the city back", Duration::from_secs(10), |_| {
            ureq::get(&format!("{base}/healthz")).call().is_ok()
        })
        .unwrap();
    assert_eq!(list(&admin, "all"), vec![first.id, second.id]);
    assert_eq!(stream(&traffic, CH).0, 200);
    let (s, body) = call("POST", &requests, Some(&traffic), Some(&ask(CH2, "again")));
    assert_eq!(s, 201, "{body}");
    let third: AccessRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(third.id, second.id + 1, "numbers are not reused");
}
