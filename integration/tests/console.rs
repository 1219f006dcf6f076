//! The web console in a real headless browser (Debian's Chromium driven by
//! chromedriver through selenium from PyPI; `integration/browser/
//! console_test.py` does the clicking) against a 4-tier chain of `gbgate`
//! processes with a simulated NVR streaming at the village: the console
//! loads, the tree shows the channels a department may see and no others,
//! search finds a camera by name, a video element plays it (its clock
//! advances, and ffmpeg finds a non-uniform picture in the screenshot), a
//! PTZ button's DeviceControl reaches the device, and the audit page lists
//! the session just watched.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gbgate::api::auth::new_token;
use integration::demo::{TreeNode, TreeSpec};
use integration::harness::{test_clip as clip, Cluster, FleetSpec};

fn is_channel(id: &str) -> bool {
    id.len() == 20 && &id[10..13] == "131"
}

/// Luma range of a picture, read by ffmpeg's signalstats.
fn luma_range(png: &Path) -> (f64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-f", "lavfi"])
        .arg(format!("movie={},signalstats", png.display()))
        .args([
            "-show_entries",
            "frame_tags=lavfi.signalstats.YMIN,lavfi.signalstats.YMAX",
            "-of",
            "csv=p=0",
        ])
        .output()
        .expect("ffprobe (make deps installs ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .trim()
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    assert_eq!(
        v.len(),
        2,
        "ffprobe said {text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (v[0].min(v[1]), v[0].max(v[1]))
}

#[test]
fn the_console_in_a_real_browser_through_four_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 1,
        towns: 1,
        villages: 1,
        sip_base: 22200,
        http_base: 22250,
        keepalive_secs: 2,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs: 1,
        channels: 4,
        media: Some(clip("h264.h264")),
        alarm_every: Some(2.0),
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
            Some(p) => format!("p, node:{p}, *, *, allow\n"),
            // The city: police and ops see everything; traffic's one
            // camera is added below, once its ID is known.
            None => "p, dept:police, *, *, allow\np, dept:ops, *, *, allow\n".to_owned(),
        },
        &admin,
    )
    .unwrap();
    cluster
        .wait_for("the tree linked", Duration::from_secs(15), Cluster::linked)
        .unwrap();
    let village = cluster.tree.level("village")[0].clone();
    let city = cluster.tree.root().clone();
    cluster.start_fleet(&village.id).unwrap();
    cluster
        .wait_for("4 channels at the city", Duration::from_secs(15), |c| {
            c.catalog(&city.id)
                .unwrap_or_default()
                .iter()
                .filter(|e| is_channel(&e.device_id))
                .count()
                == 4
        })
        .unwrap();
    let entries = cluster.catalog(&city.id).unwrap();
    let channels: BTreeSet<String> = entries
        .iter()
        .map(|e| e.device_id.clone())
        .filter(|i| is_channel(i))
        .collect();
    let camera = channels.iter().next().unwrap().clone();
    let name = entries
        .iter()
        .find(|e| e.device_id == camera)
        .and_then(|e| e.name.clone())
        .unwrap();
    let traffic_camera = channels.iter().last().unwrap().clone();
    let city_policy = cluster.policy_file(&city.id);
    std::fs::write(
        &city_policy,
        format!(
            "p, dept:police, *, *, allow\np, dept:ops, *, *, allow\np, dept:traffic, {traffic_camera}, catalog, allow\n"
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the policy watcher's reload

    let config = d.join("browser.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "base": format!("http://{}", city.http),
            "police": police,
            "traffic": traffic,
            "admin": admin,
            "search": name,
            "camera": camera,
        })
        .to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/console_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&config)
        .arg(&d)
        .output()
        .expect("python3 with selenium (make deps installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser run failed:\n{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("browser saw: {seen:#}");

    // Signed in as police; the tree holds exactly the city's channels.
    assert!(
        seen["whoami"].as_str().unwrap().contains("dept:police"),
        "{seen}"
    );
    let tree: BTreeSet<String> = seen["tree_police"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tree, channels, "police's tree");
    // The alarms panel showed the NVR's alarms (on its first channel).
    let alarms = seen["alarms"].as_array().unwrap();
    assert!(
        !alarms.is_empty() && alarms.iter().all(|a| a == camera.as_str()),
        "{seen}"
    );
    // Search by name found the camera.
    assert!(
        seen["search_hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == camera.as_str()),
        "{seen}"
    );
    // The video's clock advanced while we watched.
    let t = seen["video_time"].as_array().unwrap();
    let (t0, t1) = (t[0].as_f64().unwrap(), t[1].as_f64().unwrap());
    assert!(t1 > t0 + 1.0, "the video did not advance: {t0} → {t1}");
    // And as MPEG-TS.
    let t = seen["ts_video_time"].as_array().unwrap();
    let (t0, t1) = (t[0].as_f64().unwrap(), t[1].as_f64().unwrap());
    assert!(
        t1 > t0 + 0.7,
        "the MPEG-TS video did not advance: {t0} → {t1}"
    );
    // The picture is not one flat colour (testsrc2 has bars and a clock).
    let (lo, hi) = luma_range(&d.join("video.png"));
    assert!(hi - lo > 100.0, "a flat screenshot: luma {lo}..{hi}");
    // The PTZ button's command reached the device for police.
    assert!(
        seen["ptz_status"].as_str().unwrap().contains("OK"),
        "{seen}"
    );
    let sim_log = std::fs::read_to_string(d.join(format!("sim-{}.log", village.id))).unwrap();
    assert!(
        sim_log.lines().any(|l| l.contains("gbsim: PTZ")
            && l.contains(camera.as_str())
            && l.contains("pan: 1")
            && l.contains("on_behalf_of=dept:police")),
        "{sim_log}"
    );
    // The timeline shows gbsim's recordings (one per hour of the day,
    // asked through four tiers); one played, and pause and speed went
    // down as MANSRTSP.
    assert_eq!(seen["recordings"], 24, "{seen}");
    let p = seen["playback_time"].as_array().unwrap();
    assert!(
        p[1].as_f64().unwrap() > p[0].as_f64().unwrap() + 0.5,
        "the recording did not play: {p:?}"
    );
    assert!(
        seen["playback_control"].as_str().unwrap().contains("2×"),
        "{seen}"
    );
    assert!(
        sim_log
            .lines()
            .any(|l| l.contains("INVITE: streaming") && l.contains("Playback")),
        "{sim_log}"
    );
    for (what, needle) in [("pause", "Pause"), ("speed", "scale: Some(2.0)")] {
        assert!(
            sim_log
                .lines()
                .any(|l| l.contains("gbsim: playback control") && l.contains(needle)),
            "the console's {what} did not reach the device: {sim_log}"
        );
    }
    // Traffic sees its one camera, and no admin pages.
    let traffic_tree: Vec<&str> = seen["tree_traffic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(traffic_tree, vec![traffic_camera.as_str()]);
    assert_eq!(seen["admin_links_for_traffic"], false);
    // The audit page lists police's session on the camera.
    assert!(
        seen["audit_rows"].as_array().unwrap().iter().any(|r| {
            let r = r.as_str().unwrap();
            r.contains("dept:police") && r.contains(camera.as_str()) && r.contains("live")
        }),
        "{seen}"
    );
    // The topology page lists the city's child (the county), online.
    let county = cluster.tree.level("county")[0].id.to_string();
    assert!(
        seen["topology_children"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |r| r.as_str().unwrap().contains(&county) && r.as_str().unwrap().contains("online")
            ),
        "{seen}"
    );
    eprintln!(
        "console: first contentful paint {} ms, first video frame {} ms after the click (through four tiers)",
        seen["first_contentful_paint_ms"], seen["first_frame_ms"]
    );
    if let Ok(keep) = std::env::var("GBGATE_SCREENSHOTS") {
        for f in ["console.png", "playback.png", "audit.png"] {
            std::fs::copy(d.join(f), Path::new(&keep).join(f)).unwrap();
        }
    }
}
