//! The demo tree end to end, every node its own `gbgate` process: the
//! city's catalog fills, a village that dies goes OFF at the city and comes
//! back ON, and a restarted city is whole again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::time::Duration;

use integration::demo::TreeSpec;
use integration::harness::{Cluster, FleetSpec};

fn is_channel(id: &str) -> bool {
    id.len() == 20 && &id[10..13] == "131"
}

/// Channels at the city by status.
fn channel_states(c: &Cluster) -> HashMap<String, (String, Option<String>)> {
    let city = c.tree.root().id;
    c.catalog(&city)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| is_channel(&e.device_id))
        .map(|e| (e.device_id, (e.status, e.parent_id)))
        .collect()
}

#[test]
fn four_tier_tree_federates_tracks_liveness_and_survives_a_city_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TreeSpec {
        sip_base: 10060,
        http_base: 13080,
        keepalive_secs: 1,
        register_retry_secs: 1,
        t1_ms: 100,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec::default();
    let cluster = Cluster::start(dir.path(), spec, fleet.clone()).unwrap();
    let total = 8 * fleet.channels();
    assert_eq!(total, 160);

    // 1. All 160 channels at the city, ON, within 10 s of start.
    let took = cluster
        .wait_for(
            "160 channels ON at the city",
            Duration::from_secs(10),
            |c| {
                let s = channel_states(c);
                s.len() == total && s.values().all(|(st, _)| st == "ON")
            },
        )
        .unwrap();
    eprintln!("160 channels at the city after {took:?}");

    // Parents are preserved: every channel's parent is a device (IPC/NVR)
    // whose own parent is a village node, whose parent is a town.
    let city = cluster.tree.root().id;
    let cat = cluster.catalog(&city).unwrap();
    let by_id: HashMap<&str, &gbgate::api::CatalogEntry> =
        cat.iter().map(|e| (e.device_id.as_str(), e)).collect();
    let villages: Vec<String> = cluster
        .tree
        .level("village")
        .iter()
        .map(|n| n.id.to_string())
        .collect();
    for e in cat.iter().filter(|e| is_channel(&e.device_id)) {
        let dev = e.parent_id.as_deref().expect("channel has a parent");
        let dev_entry = by_id
            .get(dev)
            .unwrap_or_else(|| panic!("parent {dev} of {} missing", e.device_id));
        let village = dev_entry.parent_id.as_deref().expect("device has a parent");
        assert!(
            villages.iter().any(|v| v == village),
            "device {dev} hangs under {village}, not a village"
        );
        let town = by_id[village].parent_id.as_deref().unwrap();
        let tree_town = cluster
            .tree
            .node(&village.parse().unwrap())
            .unwrap()
            .parent
            .unwrap();
        assert_eq!(town, tree_town.as_str());
    }

    // 2. Kill one village: its 20 channels go OFF at the city within 3
    //    keepalive intervals (plus one hop of propagation per tier).
    let victim = cluster.tree.level("village")[0].id;
    let mut cluster = cluster;
    cluster.kill_node(&victim);
    let victim_s = victim.to_string();
    let channels_of_victim = |c: &Cluster| -> Vec<(String, String)> {
        let cat = c.catalog(&city).unwrap_or_default();
        let by: HashMap<_, _> = cat
            .iter()
            .map(|e| (e.device_id.clone(), e.clone()))
            .collect();
        cat.iter()
            .filter(|e| is_channel(&e.device_id))
            .filter(|e| {
                e.parent_id
                    .as_ref()
                    .and_then(|p| by.get(p))
                    .and_then(|d| d.parent_id.as_deref())
                    == Some(victim_s.as_str())
            })
            .map(|e| (e.device_id.clone(), e.status.clone()))
            .collect()
    };
    assert_eq!(channels_of_victim(&cluster).len(), 20);
    let off_after = cluster
        .wait_for(
            "the dead village's channels OFF at the city",
            Duration::from_secs(6),
            |c| {
                let v = channels_of_victim(c);
                v.len() == 20 && v.iter().all(|(_, s)| s == "OFF")
            },
        )
        .unwrap();
    eprintln!("village channels OFF at the city {off_after:?} after the kill");
    // Asked for at the city, an OFF camera four hops down is not found,
    // as an unknown one is: nothing down there can answer.
    let (dead_camera, _) = channels_of_victim(&cluster).swap_remove(0);
    let http = &cluster.tree.node(&city).unwrap().http;
    for what in ["info", "status"] {
        assert_eq!(
            get_json(&format!(
                "http://{http}/api/v1/devices/{dead_camera}/{what}"
            )),
            Err(404),
            "{what} of an OFF camera"
        );
    }
    // Everyone else stays ON.
    let s = channel_states(&cluster);
    assert_eq!(s.values().filter(|(st, _)| st == "ON").count(), total - 20);

    // 3. Start it again: ON again.
    cluster.start_node(&victim).unwrap();
    let on_after = cluster
        .wait_for(
            "the village's channels ON again",
            Duration::from_secs(15),
            |c| {
                let v = channels_of_victim(c);
                v.len() == 20 && v.iter().all(|(_, s)| s == "ON")
            },
        )
        .unwrap();
    eprintln!("village channels ON again {on_after:?} after restart");

    // 4. Restart the city: every child re-registers and the catalog is whole.
    cluster.kill_node(&city);
    cluster.start_node(&city).unwrap();
    let whole_after = cluster
        .wait_for(
            "the restarted city's catalog whole again",
            Duration::from_secs(20),
            |c| {
                let s = channel_states(c);
                s.len() == total && s.values().all(|(st, _)| st == "ON")
            },
        )
        .unwrap();
    eprintln!("city catalog whole {whole_after:?} after its restart");
    let topo = cluster.topology(&city).unwrap();
    assert_eq!(topo.children.len(), 2);
    assert!(
        topo.children.iter().all(|c| c.state == "online"),
        "{:?}",
        topo.children
    );

    // Metrics are exposed and count what happened.
    let m = cluster.metrics(&city).unwrap();
    assert!(m.contains("gbgate_registered_child_nodes 2"), "{m}");
    assert!(m.contains("gbgate_sip_requests_received_total"), "{m}");
}

/// GET a JSON document, or the status code of a refusal.
fn get_json(url: &str) -> Result<serde_json::Value, u16> {
    match ureq::get(url).call() {
        Ok(mut r) => Ok(r.body_mut().read_json().unwrap()),
        Err(ureq::Error::StatusCode(code)) => Err(code),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn device_queries_over_http_cross_four_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TreeSpec {
        counties: 1,
        towns: 1,
        villages: 1,
        sip_base: 11400,
        http_base: 14400,
        keepalive_secs: 1,
        register_retry_secs: 1,
        t1_ms: 100,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 1,
        nvrs: 1,
        channels: 2,
        ..FleetSpec::default()
    };
    let cluster = Cluster::start(dir.path(), spec, fleet).unwrap();
    let city = cluster.tree.root().id;
    cluster
        .wait_for("3 cameras at the city", Duration::from_secs(10), |c| {
            channel_states(c).len() == 3
        })
        .unwrap();
    // An NVR's channel: the query goes to the NVR, which answers for it.
    let camera = channel_states(&cluster)
        .into_iter()
        .filter(|(_, (_, parent))| parent.as_deref().is_some_and(|p| &p[10..13] == "118"))
        .map(|(id, _)| id)
        .min()
        .unwrap();
    let http = &cluster.tree.node(&city).unwrap().http;
    let url = |path: &str| format!("http://{http}/api/v1/devices/{camera}/{path}");

    let info = get_json(&url("info")).unwrap();
    assert_eq!(info["device_id"], camera.as_str());
    assert_eq!(info["manufacturer"], "gbsim");
    assert_eq!(info["model"], "SIM-NVR");
    assert_eq!(info["result"], "OK");

    let status = get_json(&url("status")).unwrap();
    assert_eq!(status["online"], "ONLINE");
    assert_eq!(status["result"], "OK");

    // 30 hours: answered in many parts by the device and again at every
    // tier, collected whole at the city.
    let records = get_json(&url(
        "records?start=2024-05-01T06:30:00&end=2024-05-02T12:30:00",
    ))
    .unwrap();
    assert_eq!(records["complete"], true, "{records}");
    assert_eq!(records["sum_num"], 31);
    let list = records["records"].as_array().unwrap();
    assert_eq!(list.len(), 31);
    let mut spans: Vec<(&str, &str)> = list
        .iter()
        .map(|r| {
            assert_eq!(r["device_id"], camera.as_str());
            assert_eq!(r["type"], "time");
            (
                r["start_time"].as_str().unwrap(),
                r["end_time"].as_str().unwrap(),
            )
        })
        .collect();
    spans.sort();
    assert_eq!(spans[0].0, "2024-05-01T06:30:00");
    assert_eq!(spans[30].1, "2024-05-02T12:30:00");
    assert!(spans.windows(2).all(|w| w[0].1 == w[1].0), "{spans:?}");

    // Unknown IDs give 404 without saying more; malformed requests 400.
    let base = format!("http://{http}/api/v1/devices");
    assert_eq!(
        get_json(&format!("{base}/35010200001319999999/info")),
        Err(404)
    );
    assert_eq!(get_json(&format!("{base}/12345/status")), Err(400));
    assert_eq!(
        get_json(&url("records?start=2024-05-01&end=2024-05-02T12:30:00")),
        Err(400)
    );
    // The city itself answers for itself.
    let own = get_json(&format!("{base}/{city}/info")).unwrap();
    assert_eq!(own["manufacturer"], "gbgate");
}
