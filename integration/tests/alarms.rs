//! Alarms through a 4-tier chain of real `gbgate` processes: a simulated
//! NVR at the village raises an alarm every second on its first channel;
//! each tier takes it and passes it up to a parent that may see the
//! channel, so the city's departments read it (only those that may see the
//! channel); when the county stops sharing the channel, its alarms stop
//! at the county.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use gbgate::api::auth::new_token;
use integration::demo::{TreeNode, TreeSpec};
use integration::harness::{api_call, Cluster, FleetSpec};

fn alarms(node: &TreeNode, token: &str, after: u64) -> Vec<serde_json::Value> {
    let (s, body) = api_call(
        "GET",
        &format!("http://{}/api/v1/alarms?after={after}", node.http),
        Some(token),
        None,
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn alarms_travel_up_to_whoever_may_see_the_camera() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 1,
        towns: 1,
        villages: 1,
        sip_base: 22500,
        http_base: 22550,
        keepalive_secs: 2,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs: 1,
        channels: 2,
        alarm_every: Some(1.0),
        ..FleetSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    let (police, police_entry) = new_token("wang", "police", false);
    let (traffic, traffic_entry) = new_token("li", "traffic", false);
    let mut cluster = Cluster::start_with_policies(
        &d,
        spec,
        fleet,
        &[&admin_entry, &police_entry, &traffic_entry],
        |n: &TreeNode| match n.parent {
            Some(p) => format!("p, dept:ops, *, *, allow\np, node:{p}, *, *, allow\n"),
            // Traffic may see nothing of this village's NVR.
            None => "p, dept:ops, *, *, allow\np, dept:police, *, *, allow\np, dept:traffic, 3599*, *, allow\n"
                .to_owned(),
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
    let expected = cluster.expected_channels(&village.id).unwrap();
    let alarmed = expected
        .iter()
        .map(|c| c.device_id.clone())
        .filter(|id| &id[10..13] == "131")
        .min()
        .unwrap();
    cluster.start_fleet(&village.id).unwrap();

    // The alarm reaches the city through four tiers, whole.
    cluster
        .wait_for("an alarm at the city", Duration::from_secs(20), |_| {
            !alarms(&city, &police, 0).is_empty()
        })
        .unwrap();
    let seen = alarms(&city, &police, 0);
    let a = &seen[0];
    assert_eq!(a["kind"], "alarm");
    assert_eq!(a["device_id"], alarmed.as_str());
    assert_eq!(a["priority"], 1);
    assert_eq!(a["method"], 5);
    assert_eq!(a["alarm_type"], 2);
    assert!(
        a["description"].as_str().unwrap().contains("gbsim alarm"),
        "{a}"
    );
    // A department that may not see the camera hears none of its alarms.
    assert!(alarms(&city, &traffic, 0).is_empty());

    // The county stops sharing the channel: its alarms stop there.
    let policy = cluster.policy_file(&county.id);
    let tmp = policy.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "p, dept:ops, *, *, allow\np, node:{}, 3599*, *, allow\n",
            city.id
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &policy).unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the watcher reloads; in-flight alarms land
    let last_city = alarms(&city, &police, 0)
        .last()
        .and_then(|a| a["seq"].as_u64())
        .unwrap();
    let last_county = alarms(&county, &admin, 0)
        .last()
        .and_then(|a| a["seq"].as_u64())
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alarms(&city, &police, last_city).is_empty(),
        "the city still hears alarms of a channel the county no longer shares"
    );
    let newer = alarms(&county, &admin, last_county);
    assert!(
        newer.len() >= 2 && newer.iter().all(|a| a["device_id"] == alarmed.as_str()),
        "the county keeps hearing them: {newer:?}"
    );
}
