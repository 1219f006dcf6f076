//! Availability through a tree of real `gbgate` processes (city ← 2
//! counties ← a town each ← a village each, one simulated NVR per
//! village): a village is switched off for an interval the test measures
//! at the city, and the city's online rate per county, per department and
//! per node below comes out as expected, to the second, from the status
//! changes it recorded as they were pushed up (no camera polled); `gbgate
//! report availability` writes the same day's CSV and HTML.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gbgate::api::auth::new_token;
use integration::demo::{TreeNode, TreeSpec};
use integration::harness::{Cluster, FleetSpec};

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn is_channel(id: &str) -> bool {
    id.len() == 20 && &id[10..13] == "131"
}

/// The city's channels and whether each is ON.
fn states(c: &Cluster, city: &TreeNode) -> BTreeMap<String, bool> {
    c.catalog(&city.id)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| is_channel(&e.device_id))
        .map(|e| (e.device_id, e.status == "ON"))
        .collect()
}

#[test]
fn a_village_switched_off_gives_the_expected_online_rate_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 2,
        towns: 1,
        villages: 1,
        sip_base: 22400,
        http_base: 22450,
        keepalive_secs: 1,
        register_retry_secs: 1,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs: 1,
        channels: 2,
        ..FleetSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let (_, police_entry) = new_token("wang", "police", false);
    let (_, traffic_entry) = new_token("li", "traffic", false);
    let mut cluster = Cluster::start_with_policies(
        &d,
        spec,
        fleet,
        &[&admin_entry, &police_entry, &traffic_entry],
        |n: &TreeNode| match n.parent {
            Some(p) => format!("p, node:{p}, *, *, allow\n"),
            // Police sees both counties, traffic only the first.
            None => "p, dept:ops, *, *, allow\np, dept:police, *, *, allow\np, dept:traffic, 350102*, *, allow\n".to_owned(),
        },
        &admin,
    )
    .unwrap();
    cluster
        .wait_for("the tree linked", Duration::from_secs(20), Cluster::linked)
        .unwrap();
    let city = cluster.tree.root().clone();
    let villages: Vec<TreeNode> = cluster.tree.level("village").into_iter().cloned().collect();
    for v in &villages {
        cluster.start_fleet(&v.id).unwrap();
    }
    cluster
        .wait_for("4 channels ON at the city", Duration::from_secs(20), |c| {
            let s = states(c, &city);
            s.len() == 4 && s.values().all(|on| *on)
        })
        .unwrap();
    // The village whose channels are in county 350102.
    let off_village = villages
        .iter()
        .find(|v| v.id.as_str().starts_with("350102"))
        .unwrap()
        .clone();
    let in_off: Vec<String> = states(&cluster, &city)
        .into_keys()
        .filter(|c| c.starts_with("350102"))
        .collect();
    assert_eq!(in_off.len(), 2);

    std::thread::sleep(Duration::from_millis(1500));
    let from = now_ms() / 1000; // whole seconds: the API's unit
    std::thread::sleep(Duration::from_millis(1500));

    // Switch the village off; the city hears its channels go OFF once the
    // town misses its keepalives, and ON again after it is back.
    cluster.kill_node(&off_village.id);
    cluster
        .wait_for(
            "the village's channels OFF at the city",
            Duration::from_secs(20),
            |c| {
                let s = states(c, &city);
                in_off.iter().all(|ch| s.get(ch) == Some(&false))
            },
        )
        .unwrap();
    let off_at = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    cluster.start_node(&off_village.id).unwrap();
    cluster
        .wait_for(
            "the village's channels ON again",
            Duration::from_secs(30),
            |c| {
                let s = states(c, &city);
                in_off.iter().all(|ch| s.get(ch) == Some(&true))
            },
        )
        .unwrap();
    let on_at = now_ms();
    let off_s = (on_at - off_at) as f64 / 1000.0;
    std::thread::sleep(Duration::from_millis(1500));
    let to = now_ms() / 1000 + 1;
    let window = (to - from) as f64;
    eprintln!("village off for {off_s:.1} s (seen at the city) in a window of {window} s");

    let ask = |group_by: &str| -> BTreeMap<String, serde_json::Value> {
        let (s, body) = integration::harness::api_call(
            "GET",
            &format!(
                "http://{}/api/v1/availability?group_by={group_by}&from={from}&to={to}",
                city.http
            ),
            Some(&admin),
            None,
        )
        .unwrap();
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["group"].as_str().unwrap().to_owned(), g.clone()))
            .collect()
    };
    let offline = |g: &serde_json::Value| {
        g["known_seconds"].as_f64().unwrap() - g["online_seconds"].as_f64().unwrap()
    };

    // Per county: the switched-off one lost off_s per channel, to the
    // second; the other none.
    let county = ask("county");
    eprintln!("per county: {county:?}");
    assert_eq!(county.len(), 2, "{county:?}");
    let a = &county["350102"];
    let b = &county["350103"];
    assert_eq!(a["channels"], 2);
    assert!(
        (a["known_seconds"].as_f64().unwrap() - 2.0 * window).abs() < 0.01,
        "{a}"
    );
    assert!(
        (offline(a) - 2.0 * off_s).abs() <= 2.0,
        "county A offline {} s, expected {} s",
        offline(a),
        2.0 * off_s
    );
    let expected = 1.0 - off_s / window;
    assert!(
        (a["online_rate"].as_f64().unwrap() - expected).abs() <= 1.0 / window,
        "{a} vs {expected}"
    );
    assert_eq!(b["online_rate"].as_f64().unwrap(), 1.0, "{b}");

    // Per department: traffic sees only county A, police both.
    let dept = ask("department");
    eprintln!("per department: {dept:?}");
    let traffic = &dept["dept:traffic"];
    let police = &dept["dept:police"];
    assert_eq!(traffic["channels"], 2);
    assert_eq!(police["channels"], 4);
    assert!((offline(traffic) - 2.0 * off_s).abs() <= 2.0, "{traffic}");
    assert!((offline(police) - 2.0 * off_s).abs() <= 2.0, "{police}");
    let police_expected = 1.0 - off_s / (2.0 * window);
    assert!((police["online_rate"].as_f64().unwrap() - police_expected).abs() <= 1.0 / window);

    // Per node below the city: the two counties.
    let node = ask("node");
    let counties: Vec<String> = cluster
        .tree
        .level("county")
        .iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(node.keys().cloned().collect::<Vec<_>>(), counties);

    // Not an admin, or a wrong group: refused.
    let (s, _) = integration::harness::api_call(
        "GET",
        &format!("http://{}/api/v1/availability?group_by=town", city.http),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(s, 400);

    // The CLI report of today (UTC+8) from the city's store.
    let today = {
        let secs = i64::try_from(now_ms() / 1000).unwrap() + 8 * 3600;
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
    };
    let db = d.join(format!("audit-{}.db", city.id));
    let out = d.join("report");
    let (code, text) = integration::harness::gbgate(&[
        "report",
        "availability",
        "--audit",
        db.to_str().unwrap(),
        "--day",
        &today,
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{text}");
    let csv =
        std::fs::read_to_string(out.join(format!("availability-{today}-county.csv"))).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("350103,2,") && l.ends_with(",1.000000")),
        "{csv}"
    );
    assert!(csv.lines().any(|l| l.starts_with("350102,2,")), "{csv}");
    let html =
        std::fs::read_to_string(out.join(format!("availability-{today}-county.html"))).unwrap();
    assert!(html.contains("<svg") && html.contains("350102"), "{html}");
}

/// The status the city's console tree shows for `channel` (ON, OFF,
/// VLOST), asked as `token`.
fn shown_status(city: &TreeNode, token: &str, channel: &str) -> Option<String> {
    let (s, body) = integration::harness::api_call(
        "GET",
        &format!("http://{}/api/v1/tree?q={channel}", city.http),
        Some(token),
        None,
    )
    .ok()?;
    if s != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["branches"]
        .as_array()?
        .iter()
        .find(|b| b["key"] == channel)
        .and_then(|b| b["status"].as_str().map(str::to_owned))
}

#[test]
fn a_camera_whose_video_does_not_decode_counts_online_but_not_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    // City ← county ← town ← village; every node would probe every 2 s,
    // but only the village has cameras of its own.
    let spec = TreeSpec {
        sip_base: 22600,
        http_base: 22650,
        keepalive_secs: 1,
        register_retry_secs: 1,
        intact_probe_secs: Some(2),
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs: 1,
        channels: 3,
        media: Some(integration::harness::test_clip("h264.h264")),
        ..FleetSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let mut cluster = Cluster::start_with_policies(
        &d,
        spec,
        fleet,
        &[&admin_entry],
        |n: &TreeNode| match n.parent {
            Some(p) => format!("p, node:{p}, *, *, allow\n"),
            None => "p, dept:ops, *, *, allow\n".to_owned(),
        },
        &admin,
    )
    .unwrap();
    cluster
        .wait_for("the tree linked", Duration::from_secs(20), Cluster::linked)
        .unwrap();
    let city = cluster.tree.root().clone();
    let village = cluster.tree.level("village")[0].clone();
    let mut cams: Vec<String> = cluster
        .expected_channels(&village.id)
        .unwrap()
        .into_iter()
        .map(|c| c.device_id)
        .filter(|id| is_channel(id))
        .collect();
    cams.sort();
    assert_eq!(cams.len(), 3);
    let (good, broken, watched) = (cams[0].clone(), cams[1].clone(), cams[2].clone());
    cluster.fleet.broken_video = vec![broken.clone()];
    cluster.start_fleet(&village.id).unwrap();
    cluster
        .wait_for("3 channels ON at the city", Duration::from_secs(20), |c| {
            let s = states(c, &city);
            s.len() == 3 && s.values().all(|on| *on)
        })
        .unwrap();
    let from = now_ms() / 1000;
    let started = now_ms();

    // The village's probe finds the broken camera's video undecodable and
    // marks it VLOST; the city hears it and shows it, still online.
    cluster
        .wait_for(
            "the broken camera VLOST at the city",
            Duration::from_secs(20),
            |_| shown_status(&city, &admin, &broken).as_deref() == Some("VLOST"),
        )
        .unwrap();
    let lost_at = now_ms();
    eprintln!(
        "the broken camera was VLOST at the city {} ms after it was ON",
        lost_at - started
    );
    assert_eq!(shown_status(&city, &admin, &good).as_deref(), Some("ON"));
    assert!(
        states(&cluster, &city).values().all(|on| *on),
        "a lost video is still online"
    );

    // A viewer watches one camera through all four tiers while the probe
    // keeps looking: it looks at the open stream and opens none of its own.
    let invites = |c: &Cluster| {
        std::fs::read_to_string(c.dir().join(format!("sim-{}.log", village.id)))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("INVITE: streaming") && l.contains(watched.as_str()))
            .count()
    };
    let (s, body) = integration::harness::api_call(
        "POST",
        &format!("http://{}/api/v1/streams", city.http),
        Some(&admin),
        Some(&format!(
            "{{\"channel\":\"{watched}\",\"action\":\"live\"}}"
        )),
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let play: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = format!("http://{}{}", city.http, play["flv"].as_str().unwrap());
    let viewer = std::thread::spawn(move || {
        integration::flv_watch::longest_gap(&url, Duration::from_secs(8))
    });
    std::thread::sleep(Duration::from_secs(2));
    let during = invites(&cluster);
    let probes_before = cluster
        .metric(
            &village.id,
            "gbgate_intact_probes_total",
            "result=\"intact\"",
        )
        .unwrap();
    let gap = viewer.join().unwrap();
    assert!(gap.is_some(), "the viewer got video");
    let probes_after = cluster
        .metric(
            &village.id,
            "gbgate_intact_probes_total",
            "result=\"intact\"",
        )
        .unwrap();
    assert_eq!(
        invites(&cluster),
        during,
        "the probe opened a second stream of a watched camera"
    );
    assert!(
        probes_after - probes_before >= 4.0,
        "the probe kept looking: {probes_before} → {probes_after} intact looks"
    );
    // Only the village looks (the city has no camera of its own).
    assert_eq!(
        cluster
            .metric(&city.id, "gbgate_intact_probes_total", "")
            .unwrap(),
        0.0
    );
    // Streams the probe opened end once looked at: no linger at the
    // village for cameras nobody watches.
    cluster
        .wait_for(
            "the village idle between looks",
            Duration::from_secs(10),
            |c| {
                c.streams(&village.id)
                    .map(|s| s.iter().all(|s| !s.stream.contains(&good)))
                    .unwrap_or(false)
            },
        )
        .unwrap();

    // The city's availability: all three online the whole window; the
    // broken one not intact from when the city heard VLOST.
    std::thread::sleep(Duration::from_millis(1000));
    let to = now_ms() / 1000 + 1;
    let (s, body) = integration::harness::api_call(
        "GET",
        &format!(
            "http://{}/api/v1/availability?group_by=county&from={from}&to={to}",
            city.http
        ),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let g = &v["groups"][0];
    eprintln!("the county over [{from}, {to}): {g}");
    let num = |k: &str| g[k].as_f64().unwrap();
    assert_eq!(g["channels"], 3);
    assert_eq!(num("online_rate"), 1.0, "{g}");
    let lost_s = (to * 1000 - lost_at) as f64 / 1000.0;
    let not_intact = num("online_seconds") - num("intact_seconds");
    assert!(
        (not_intact - lost_s).abs() <= 1.5,
        "not intact for {not_intact} s, expected {lost_s} s"
    );
    let expected = 1.0 - lost_s / num("known_seconds");
    assert!(
        (num("intact_rate") - expected).abs() <= 0.05,
        "{g} vs {expected}"
    );
}
