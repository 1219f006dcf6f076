//! PTZ and device control through a 4-tier chain of real `gbgate`
//! processes (city ← county ← town ← village, one simulated IPC and NVR at
//! the village): departments at two different tiers steer one camera; the
//! lock at the village (the gbgate node nearest the camera) makes the
//! second wait with a clear answer naming the holder, gives way to a
//! higher priority, and frees after its timeout; presets set through four
//! tiers are listed back through four tiers; commands arrive at `gbsim`
//! with the department they were given for; refusals are audited.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use gbgate::api::auth::new_token;
use integration::demo::{TreeNode, TreeSpec};
use integration::harness::{Cluster, FleetSpec};

fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    integration::harness::api_call(method, url, token, body).unwrap()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn is_camera(id: &str) -> bool {
    id.len() == 20 && matches!(&id[10..13], "131" | "132")
}

/// Lines of `gbsim`'s log that record PTZ commands to `camera`.
fn ptz_lines(log: &Path, camera: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("gbsim: PTZ") && l.contains(camera))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ptz_through_four_tiers_with_the_control_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 1,
        towns: 1,
        villages: 1,
        sip_base: 21900,
        http_base: 21950,
        keepalive_secs: 2,
        ptz_lock_secs: Some(3),
        ptz_priority: &[("police", 2)],
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 1,
        nvrs: 1,
        channels: 2,
        ..FleetSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let (traffic, traffic_entry) = new_token("li", "traffic", false);
    let (police, police_entry) = new_token("wang", "police", false);
    let (parks, parks_entry) = new_token("zhao", "parks", false);
    let (viewer, viewer_entry) = new_token("qian", "viewer", false);
    let mut cluster = Cluster::start_with_policies(
        &d,
        spec,
        fleet,
        &[&admin_entry, &traffic_entry, &police_entry, &parks_entry, &viewer_entry],
        |n: &TreeNode| {
            // The city: traffic and police steer, viewer only sees. The
            // county: parks steers there. Every tier shares all upward.
            let mut text = match n.parent {
                Some(p) => format!("p, node:{p}, *, *, allow\n"),
                None => String::new(),
            };
            match n.level {
                "city" => text.push_str(
                    "p, dept:traffic, *, *, allow\np, dept:police, *, *, allow\np, dept:viewer, *, catalog, allow\n",
                ),
                "county" => text.push_str("p, dept:parks, *, *, allow\n"),
                _ => {}
            }
            text
        },
        &admin,
    )
    .unwrap();
    cluster
        .wait_for("the tree linked", Duration::from_secs(15), Cluster::linked)
        .unwrap();
    let village = cluster.tree.level("village")[0].clone();
    let county = cluster.tree.level("county")[0].clone();
    let city = cluster.tree.root().clone();
    cluster.start_fleet(&village.id).unwrap();
    cluster
        .wait_for(
            "the NVR's channels at the city",
            Duration::from_secs(15),
            |c| {
                c.catalog(&city.id)
                    .unwrap_or_default()
                    .iter()
                    .filter(|e| e.device_id[10..13] == *"131")
                    .count()
                    >= 3
            },
        )
        .unwrap();
    let mut cameras: Vec<String> = cluster
        .catalog(&city.id)
        .unwrap()
        .into_iter()
        .map(|e| e.device_id)
        .filter(|i| is_camera(i))
        .collect();
    cameras.sort();
    // A channel (131) behind its device: the device gets the command.
    let camera = cameras
        .iter()
        .rfind(|c| c[10..13] == *"131")
        .unwrap()
        .clone();
    let sim_log = d.join(format!("sim-{}.log", village.id));
    let at = |node: &TreeNode, path: &str| {
        format!("http://{}/api/v1/channels/{camera}/{path}", node.http)
    };
    let ptz = |node: &TreeNode, token: &str, body: &str| {
        call("POST", &at(node, "ptz"), Some(token), Some(body))
    };

    // 1. Traffic steers from the city: the command crosses four tiers and
    //    reaches the device, for dept:traffic.
    let started = Instant::now();
    let (s, body) = ptz(&city, &traffic, r#"{"action":"right","speed":128}"#);
    eprintln!(
        "a PTZ command through four tiers answered in {:?}",
        started.elapsed()
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(json(&body)["result"], "OK");
    let lines = ptz_lines(&sim_log, &camera);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("A50F010180000036") && l.contains("on_behalf_of=dept:traffic")),
        "{lines:?}"
    );

    // 2. Parks, at the county, wants the same camera meanwhile: refused at
    //    the village with who holds it and for how long; nothing reaches
    //    the device.
    let before = ptz_lines(&sim_log, &camera).len();
    let (s, body) = ptz(&county, &parks, r#"{"action":"left"}"#);
    assert_eq!(s, 409, "{body}");
    let v = json(&body);
    assert_eq!(v["holder"], "dept:traffic");
    let left = v["seconds_left"].as_u64().unwrap();
    assert!((1..=3).contains(&left), "{body}");
    assert!(
        v["message"].as_str().unwrap().contains("dept:traffic"),
        "{body}"
    );
    assert_eq!(
        ptz_lines(&sim_log, &camera).len(),
        before,
        "the loser's command stays above"
    );

    // 3. Police has a higher priority: it takes the camera over, and now
    //    traffic is the one told to wait.
    let (s, body) = ptz(&city, &police, r#"{"action":"stop"}"#);
    assert_eq!(s, 200, "{body}");
    let (s, body) = ptz(&city, &traffic, r#"{"action":"up"}"#);
    assert_eq!(s, 409, "{body}");
    assert_eq!(json(&body)["holder"], "dept:police");

    // 4. Police stops steering: after the lock's 3 s, parks gets it.
    let (s, body) = ptz(&county, &parks, r#"{"action":"left"}"#);
    assert_eq!(s, 409, "{body}");
    std::thread::sleep(Duration::from_millis(3_300));
    let (s, body) = ptz(&county, &parks, r#"{"action":"preset_set","preset":7}"#);
    assert_eq!(s, 200, "{body}");

    // 5. The preset parks stored is listed at the city, asked through
    //    four tiers (police may see presets; viewer may not).
    let (s, body) = call("GET", &at(&city, "presets"), Some(&police), None);
    assert_eq!(s, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["device_id"], camera.as_str());
    assert!(
        v["presets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "7"),
        "{body}"
    );
    let (s, body) = call("GET", &at(&city, "presets"), Some(&viewer), None);
    assert_eq!(s, 403, "{body}");

    // The device's configuration, asked through four tiers.
    let (s, body) = call("GET", &at(&city, "config"), Some(&police), None);
    assert_eq!(s, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["result"], "OK", "{body}");
    assert_eq!(v["expiration"], 3600, "{body}");
    assert!(v["name"].as_str().is_some_and(|n| !n.is_empty()), "{body}");
    let (s, _) = call("GET", &at(&city, "config"), Some(&viewer), None);
    assert_eq!(s, 403);

    // 6. A command the device answers (record): its Response/DeviceControl
    //    comes back up through every tier.
    let (s, body) = call(
        "POST",
        &at(&county, "control"),
        Some(&parks),
        Some(r#"{"command":"record_start"}"#),
    );
    assert_eq!(s, 200, "{body}");
    let log = std::fs::read_to_string(&sim_log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("gbsim: control")
            && l.contains("Record(true)")
            && l.contains(camera.as_str())),
        "{log}"
    );

    // 7. Refusals: no ptz right (403), a bad action (400), an unknown
    //    camera (404, as an unshared one would be).
    let (s, body) = ptz(&city, &viewer, r#"{"action":"left"}"#);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("may not ptz"), "{body}");
    let (s, body) = ptz(&city, &police, r#"{"action":"spin"}"#);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("use stop"), "{body}");
    let unknown = format!("{}99999", &camera[..15]);
    let (s, _) = call(
        "POST",
        &format!("http://{}/api/v1/channels/{unknown}/ptz", city.http),
        Some(&police),
        Some(r#"{"action":"left"}"#),
    );
    assert_eq!(s, 404);

    // 8. The village audited the lock's refusal of the county's parks
    //    department, naming the holder.
    let (s, body) = call(
        "GET",
        &format!("http://{}/api/v1/audit?channel={camera}", village.http),
        Some(&admin),
        None,
    );
    assert_eq!(s, 200, "{body}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(
        records.iter().any(|r| r["outcome"] == "deny"
            && r["action"] == "ptz"
            && r["subject"] == "dept:parks"
            && r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("dept:traffic"))),
        "{body}"
    );
    assert!(
        records.iter().any(|r| r["outcome"] == "allow"
            && r["action"] == "ptz"
            && r["on_behalf_of"] == "dept:traffic"),
        "{body}"
    );
}
