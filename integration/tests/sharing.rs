//! Sharing policy through a 4-tier chain of real `gbgate` processes
//! (city ← county ← town ← village, one simulated NVR streaming at the
//! village): the county shares a subset upward and the city's catalog holds
//! exactly that; departments at the city see and watch only what their
//! tokens allow; a policy edit revokes a live HTTP-FLV viewer at the city
//! within a second and the channel leaves the city's catalog; a broken
//! edit is refused while requests keep being answered; the audit survives
//! `kill -9` and a hand edit is found by `gbgate audit verify`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gbgate::api::auth::new_token;
use gbgate::api::{ChannelsPage, PlayUrls};
use integration::demo::TreeSpec;
use integration::harness::{test_clip as clip, Cluster, FleetSpec};

fn is_camera(id: &str) -> bool {
    id.len() == 20 && matches!(&id[10..13], "131" | "132")
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors do: the watcher sees one change.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    integration::harness::api_call(method, url, token, body).unwrap()
}

fn gbgate(args: &[&str]) -> (i32, String) {
    integration::harness::gbgate(args).unwrap()
}

#[test]
fn policy_through_four_tiers_departments_revocation_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 1,
        towns: 1,
        villages: 1,
        sip_base: 21100,
        http_base: 21200,
        keepalive_secs: 2,
        linger_secs: 0,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs: 1,
        channels: 8,
        media: Some(clip("h264.h264")),
        ..FleetSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let (police, police_entry) = new_token("wang", "police", false);
    let (traffic, traffic_entry) = new_token("li", "traffic", false);
    std::fs::write(
        d.join("tokens.toml"),
        format!("{admin_entry}{police_entry}{traffic_entry}"),
    )
    .unwrap();
    let policy = |n: &integration::demo::TreeNode| d.join(format!("{}.csv", n.level));
    // Lower tiers share everything with their parent; the county shares
    // nothing until its admin writes what; the city lets police see all.
    let tree_dir = d.clone();
    let cluster = Cluster::start_nodes_with(
        &d,
        spec,
        fleet,
        |n| {
            let file = tree_dir.join(format!("{}.csv", n.level));
            let text = match (n.level, n.parent) {
                ("city", _) => "p, dept:police, *, *, allow\n".to_owned(),
                ("county", _) => "# shares nothing yet\n".to_owned(),
                (_, Some(p)) => format!("p, node:{p}, *, *, allow\n"),
                _ => String::new(),
            };
            std::fs::write(&file, text).unwrap();
            vec![
                "--policy".into(),
                file.display().to_string(),
                "--tokens".into(),
                tree_dir.join("tokens.toml").display().to_string(),
            ]
        },
        Some(admin.clone()),
    )
    .unwrap();
    let mut cluster = cluster;
    cluster
        .wait_for("the tree linked", Duration::from_secs(15), Cluster::linked)
        .unwrap();
    let village = cluster.tree.level("village")[0].id;
    let county = cluster.tree.level("county")[0].clone();
    let city = cluster.tree.root().clone();
    cluster.start_fleet(&village).unwrap();
    let cameras_at = |c: &Cluster, id| -> HashSet<String> {
        c.catalog(id)
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.device_id)
            .filter(|i| is_camera(i))
            .collect()
    };
    cluster
        .wait_for("8 cameras at the county", Duration::from_secs(15), |c| {
            cameras_at(c, &county.id).len() == 8
        })
        .unwrap();
    let mut all: Vec<String> = cameras_at(&cluster, &county.id).into_iter().collect();
    all.sort();
    assert!(
        cameras_at(&cluster, &city.id).is_empty(),
        "the county shares nothing yet"
    );

    // 1. The county shares six cameras' catalog and four of them live.
    let listed: Vec<&String> = all[..6].iter().collect();
    let live: Vec<&String> = all[..4].iter().collect();
    let mut county_rules = String::from("# county: what the city may see\n");
    for c in &listed {
        county_rules.push_str(&format!("p, node:{}, {c}, catalog, allow\n", city.id));
    }
    for c in &live {
        county_rules.push_str(&format!("p, node:{}, {c}, live, allow\n", city.id));
    }
    write(&policy(&county), &county_rules);
    let took = cluster
        .wait_for(
            "the shared subset at the city",
            Duration::from_secs(10),
            |c| cameras_at(c, &city.id) == listed.iter().map(|s| (*s).clone()).collect(),
        )
        .unwrap();
    eprintln!("a county grant reached the city's catalog in {took:?}");

    // 2. Departments at the city. Traffic may list and watch one camera.
    let city_rules = format!(
        "p, dept:police, *, *, allow\np, dept:traffic, {0}, catalog, allow\np, dept:traffic, {0}, live, allow\n",
        live[1]
    );
    write(&policy(&city), &city_rules);
    let base = format!("http://{}", city.http);
    let channels = |token: &str| -> Vec<String> {
        let (s, body) = call("GET", &format!("{base}/api/v1/channels"), Some(token), None);
        assert_eq!(s, 200, "{body}");
        let page: ChannelsPage = serde_json::from_str(&body).unwrap();
        page.items.into_iter().map(|c| c.id).collect()
    };
    cluster
        .wait_for("traffic's view reloaded", Duration::from_secs(5), |_| {
            channels(&traffic) == vec![live[1].clone()]
        })
        .unwrap();
    assert_eq!(channels(&police).len(), 6);
    // No token, an unknown token: 401 saying what to do.
    let (s, body) = call("GET", &format!("{base}/api/v1/channels"), None, None);
    assert_eq!(s, 401);
    assert!(body.contains("Bearer"), "{body}");
    let (s, _) = call(
        "GET",
        &format!("{base}/api/v1/channels"),
        Some("gbg_nope"),
        None,
    );
    assert_eq!(s, 401);
    // Another camera: 403 with the reason; the whole catalog is for admins.
    let (s, body) = call(
        "POST",
        &format!("{base}/api/v1/streams"),
        Some(&traffic),
        Some(&format!(
            "{{\"channel\":\"{}\",\"action\":\"live\"}}",
            live[0]
        )),
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("dept:traffic may not live"), "{body}");
    let (s, _) = call(
        "GET",
        &format!("{base}/api/v1/catalog"),
        Some(&traffic),
        None,
    );
    assert_eq!(s, 403);
    // Its own camera: play URLs whose token /live requires; an altered
    // token gets 401.
    let (s, body) = call(
        "POST",
        &format!("{base}/api/v1/streams"),
        Some(&traffic),
        Some(&format!("{{\"channel\":\"{}\"}}", live[1])),
    );
    assert_eq!(s, 200, "{body}");
    let urls: PlayUrls = serde_json::from_str(&body).unwrap();
    let (s, _) = call("GET", &format!("{base}/live/{}.flv", live[1]), None, None);
    assert_eq!(s, 401, "no token, no video");
    let mut altered = urls.flv.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    let (s, body) = call("GET", &format!("{base}{altered}"), None, None);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature"), "{body}");

    // 3. The city INVITEs for a camera the county lists but does not share
    //    live: refused below with 403, and the county audits it.
    let (s, body) = call(
        "POST",
        &format!("{base}/api/v1/streams"),
        Some(&police),
        Some(&format!("{{\"channel\":\"{}\"}}", listed[5])),
    );
    assert_eq!(s, 200, "the city allows police: {body}");
    let urls5: PlayUrls = serde_json::from_str(&body).unwrap();
    let (s, body) = call("GET", &format!("{base}{}", urls5.flv), None, None);
    assert!(s >= 400, "the county refuses to send it: {s} {body}");

    // 4. A police viewer at the city; the county revokes the camera: the
    //    viewer ends within a second and the city's catalog loses it.
    let (s, body) = call(
        "POST",
        &format!("{base}/api/v1/streams"),
        Some(&police),
        Some(&format!("{{\"channel\":\"{}\"}}", live[0])),
    );
    assert_eq!(s, 200, "{body}");
    let urls0: PlayUrls = serde_json::from_str(&body).unwrap();
    let mut resp = ureq::get(&format!("{base}{}", urls0.flv)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 100_000 {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "video flows");
        got += n;
    }
    let revoked_rules: String = county_rules
        .lines()
        .filter(|l| !l.contains(live[0].as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    let t0 = Instant::now();
    write(&policy(&county), &revoked_rules);
    let ended_at = loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break t0.elapsed(),
            Ok(_) => assert!(t0.elapsed() < Duration::from_secs(5), "viewer still fed"),
        }
    };
    eprintln!("revoked viewer at the city ended {ended_at:?} after the county's edit");
    assert!(ended_at < Duration::from_secs(1), "{ended_at:?}");
    cluster
        .wait_for(
            "the revoked camera gone from the city",
            Duration::from_secs(3),
            |c| !cameras_at(c, &city.id).contains(live[0].as_str()),
        )
        .unwrap();

    // 5. Reloads while requests run: a broken file is refused, the old
    //    rules still answer, and no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (stop, failures, answered) = (stop.clone(), failures.clone(), answered.clone());
        let (url, token, want) = (
            format!("{base}/api/v1/channels"),
            traffic.clone(),
            live[1].clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (s, body) = call("GET", &url, Some(&token), None);
                let ok = s == 200 && body.contains(&want);
                answered.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for i in 0..6 {
        if i % 2 == 0 {
            write(&policy(&city), "p, dept:traffic, 3501*, teleport, allow\n");
        } else {
            write(&policy(&city), &format!("{city_rules}# edit {i}\n"));
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    write(&policy(&city), "p, dept:traffic, 12x*, live, allow\n");
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a request failed during reloads"
    );
    assert!(answered.load(Ordering::Relaxed) > 10);
    let (s, body) = call("GET", &format!("{base}/api/v1/policy"), Some(&admin), None);
    assert_eq!(s, 200);
    assert!(
        body.contains("city.csv:1"),
        "the refusal names file and line: {body}"
    );
    let (s, _) = call(
        "GET",
        &format!("{base}/api/v1/policy"),
        Some(&traffic),
        None,
    );
    assert_eq!(s, 403, "policy status is for admins");
    assert_eq!(channels(&traffic), vec![live[1].clone()], "old rules serve");

    // 6. The audit: the county recorded refusing the city, on behalf of
    //    police; the city's records survive kill -9 and verify clean; a
    //    hand edit is found.
    let (s, body) = call(
        "GET",
        &format!("http://{}/api/v1/audit?channel={}", county.http, listed[5]),
        Some(&admin),
        None,
    );
    assert_eq!(s, 200);
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(
        records.iter().any(|r| r["outcome"] == "deny"
            && r["subject"] == format!("node:{}", city.id)
            && r["on_behalf_of"] == "dept:police"),
        "{body}"
    );
    cluster.kill_node(&city.id);
    let db = d.join(format!("audit-{}.db", city.id));
    let db = db.to_str().unwrap();
    let (code, out) = gbgate(&["audit", "verify", "--audit", db]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("clean"), "{out}");
    let (code, out) = gbgate(&["audit", "query", "--audit", db, "--subject", "dept:traffic"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(live[0].as_str()) && l.ends_with("deny")),
        "the refused request was audited before its 403 went out: {out}"
    );
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE audit_log SET outcome = 'allow' WHERE seq = (SELECT MIN(seq) FROM audit_log WHERE outcome = 'deny')",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, out) = gbgate(&["audit", "verify", "--audit", db]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("TAMPERED"), "{out}");
}
