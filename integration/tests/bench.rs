//! Benchmarks (run by `make bench`, release build; ignored by `make test`).
//! Each prints one `bench:` line with its figures; BENCHMARKS.md keeps the
//! latest results and the command that produced them.
//!
//! Fixed ports stay below 32768: Linux hands out 32768–60999 as ephemeral
//! ports, and a listener there can find its port taken by some outgoing
//! connection (two runs failed to bind that way).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use integration::demo::TreeSpec;
use integration::harness::{bin_dir, test_clip as clip, Cluster, FleetSpec};

fn bench_spec(sip_base: u16, http_base: u16, counties: usize, transport: &'static str) -> TreeSpec {
    TreeSpec {
        counties,
        towns: 1,
        villages: 1,
        sip_base,
        http_base,
        keepalive_secs: 5,
        register_retry_secs: 1,
        t1_ms: 500,
        transport,
        ..TreeSpec::default()
    }
}

/// REGISTER with digest: 10,000 devices against one node, 200 in flight.
#[test]
#[ignore = "benchmark: make bench"]
fn register_rate_10k_devices() {
    register_rate(32060, 31080, None);
}

/// The same with a 10,000-rule policy in force (the gate's cost on
/// registration and the catalog queries that follow it).
#[test]
#[ignore = "benchmark: make bench"]
fn register_rate_10k_devices_with_policy() {
    register_rate(32070, 31090, Some(10_000));
}

fn register_rate(sip_base: u16, http_base: u16, rules: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let spec = bench_spec(sip_base, http_base, 0, "udp");
    let sharing = rules.map(|r| {
        let tree = integration::demo::write_tree(dir.path(), &spec).unwrap();
        write_bench_sharing(dir.path(), &tree, r)
    });
    let d = dir.path().to_path_buf();
    let with_policy = sharing.is_some();
    let cluster = Cluster::start_nodes_with(
        dir.path(),
        spec,
        FleetSpec::default(),
        |n| {
            if !with_policy {
                return Vec::new();
            }
            vec![
                "--policy".into(),
                d.join(format!("{}.csv", n.id)).display().to_string(),
                "--tokens".into(),
                d.join("tokens.toml").display().to_string(),
            ]
        },
        sharing.as_ref().map(|s| s.admin.clone()),
    )
    .unwrap();
    let city = cluster.tree.root().clone();
    let out = Command::new(bin_dir().join("gbsim"))
        .args([
            "--server",
            &city.sip.to_string(),
            "--server-id",
            city.id.as_str(),
        ])
        .args([
            "--ipcs",
            "10000",
            "--nvrs",
            "0",
            "--window",
            "200",
            "--bench-register",
        ])
        .args(["--keepalive", "60"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("register_bench"))
        .unwrap();
    println!("bench: {line} policy_rules={}", rules.unwrap_or(0));
    let topo = cluster.topology(&city.id).unwrap();
    assert_eq!(topo.devices.registered, 10_000);
    println!(
        "bench: register node_rss_kib={} after 10000 devices",
        cluster.rss_kib(&city.id).unwrap_or(0)
    );
}

/// Where a benchmark's logs go.
fn log_dir_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-logs")
        .join(name)
}

/// Channels reaching the city through four tiers (village → town → county → city).
/// Logs stay in target/bench-logs/NAME after a run, to read when a figure looks wrong.
fn log_dir(name: &str) -> std::path::PathBuf {
    let d = log_dir_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn propagate(nvrs: usize, channels: usize, sip_base: u16, http_base: u16, transport: &'static str) {
    propagate_with(nvrs, channels, sip_base, http_base, transport, None);
}

/// The sharing set-up of a policy benchmark: every tier shares everything
/// with its parent; the city holds `rules` rules for departments, of which
/// dept:traffic's grant four ID prefixes: serials 100000–139999 of the
/// village's fleet (its devices are numbered from 100000), 39,960 channels
/// and 40 NVRs.
struct BenchSharing {
    admin: String,
    traffic: String,
    rules: usize,
}

fn write_bench_sharing(
    dir: &std::path::Path,
    tree: &integration::demo::Tree,
    rules: usize,
) -> BenchSharing {
    let (admin, a) = gbgate::api::auth::new_token("ops", "ops", true);
    let (traffic, t) = gbgate::api::auth::new_token("li", "traffic", false);
    std::fs::write(dir.join("tokens.toml"), format!("{a}{t}")).unwrap();
    // Channel IDs start with the village's domain (the node's own when
    // the tree is one node).
    let domain = tree
        .level("village")
        .first()
        .map_or(tree.root().id.domain(), |v| v.id.domain())
        .to_owned();
    for n in &tree.nodes {
        let text = match n.parent {
            Some(p) => format!("p, node:{p}, *, *, allow\n"),
            None => {
                let mut text = String::new();
                for k in 0..4 {
                    text.push_str(&format!("p, dept:traffic, {domain}13101{k}*, *, allow\n"));
                }
                // Per-camera grants of other departments fill the file.
                for i in 0..rules.saturating_sub(4) {
                    text.push_str(&format!(
                        "p, dept:d{}, {domain}1310{:06}, live, allow\n",
                        i % 97,
                        (i * 37) % 420_000 + 1
                    ));
                }
                text
            }
        };
        std::fs::write(dir.join(format!("{}.csv", n.id)), text).unwrap();
    }
    BenchSharing {
        admin,
        traffic,
        rules,
    }
}

/// Propagation through four tiers; with `sharing`, every node runs with a
/// policy (the city with that many rules) and the gate filters every push.
/// Returns the time until the city held every channel, and the cluster.
fn propagate_with(
    nvrs: usize,
    channels: usize,
    sip_base: u16,
    http_base: u16,
    transport: &'static str,
    sharing: Option<usize>,
) -> (Duration, Cluster, Option<BenchSharing>) {
    let name = match sharing {
        Some(r) => format!("propagate-{nvrs}x{channels}-{transport}-policy{r}"),
        None => format!("propagate-{nvrs}x{channels}-{transport}"),
    };
    let dir = log_dir(&name);
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs,
        channels,
        media: None,
        ..FleetSpec::default()
    };
    let spec = bench_spec(sip_base, http_base, 1, transport);
    let bench_sharing = sharing.map(|rules| {
        let tree = integration::demo::write_tree(&dir, &spec).unwrap();
        write_bench_sharing(&dir, &tree, rules)
    });
    let args_dir = dir.clone();
    let with_policy = bench_sharing.is_some();
    let mut cluster = Cluster::start_nodes_with(
        &dir,
        spec,
        fleet,
        |n| {
            if !with_policy {
                return Vec::new();
            }
            vec![
                "--policy".into(),
                args_dir.join(format!("{}.csv", n.id)).display().to_string(),
                "--tokens".into(),
                args_dir.join("tokens.toml").display().to_string(),
            ]
        },
        bench_sharing.as_ref().map(|s| s.admin.clone()),
    )
    .unwrap();
    cluster
        .wait_for(
            "the chain to link",
            Duration::from_secs(30),
            Cluster::linked,
        )
        .unwrap();
    let city = cluster.tree.root().id;
    let village = cluster.tree.level("village")[0].id;
    let rss_before = cluster.rss_kib(&city).unwrap_or(0);
    let total = nvrs * channels;
    let start = Instant::now();
    cluster.start_fleet(&village).unwrap();
    let mut at_village = None;
    let took = cluster
        .wait_for("all channels at the city", Duration::from_secs(600), |c| {
            if at_village.is_none() {
                if let Ok(t) = c.topology(&village) {
                    if t.catalog.channels >= total {
                        at_village = Some(start.elapsed());
                    }
                }
            }
            c.topology(&city)
                .is_ok_and(|t| t.catalog.channels >= total && t.catalog.online >= total)
        })
        .unwrap();
    // Let allocator and maps settle before reading memory.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = cluster.rss_kib(&city).unwrap_or(0);
    let topo = cluster.topology(&city).unwrap();
    let per_channel =
        (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / topo.catalog.entries as f64;
    // Figures are kept until the run is known valid, then printed.
    let mut figures = vec![format!(
        "bench: propagate transport={transport} nvrs={nvrs} channels={total} policy_rules={} at_village_s={:.2} at_city_s={:.2} city_entries={} city_rss_before_kib={rss_before} city_rss_after_kib={rss_after} bytes_per_entry={per_channel:.0}",
        bench_sharing.as_ref().map_or(0, |s| s.rules),
        at_village.map_or(f64::NAN, |d| d.as_secs_f64()),
        took.as_secs_f64(),
        topo.catalog.entries,
    )];
    if transport == "udp" {
        // Answered MESSAGEs are remembered for Timer J (32 s) to absorb
        // retransmissions; what the catalog itself holds shows once they
        // are gone.
        let open = |c: &Cluster| {
            c.metric(&city, "gbgate_sip_transactions_open", "")
                .unwrap_or(0.0)
        };
        let waited = cluster.wait_for("Timer J to pass", Duration::from_secs(60), |c| {
            open(c) < 100.0
        });
        std::thread::sleep(Duration::from_millis(500));
        let settled = cluster.rss_kib(&city).unwrap_or(0);
        figures.push(format!(
            "bench:   city after Timer J (waited {:.0} s): rss_kib={settled} bytes_per_entry={:.0}",
            waited.map_or(f64::NAN, |d| d.as_secs_f64()),
            (settled.saturating_sub(rss_before) as f64 * 1024.0) / topo.catalog.entries as f64
        ));
    }
    // The check reads the whole catalog over HTTP: after memory is read,
    // so its buffers are not counted as the catalog's.
    check_channels_at(&cluster, &city, &village);
    for f in figures {
        println!("{f}");
    }
    let m = cluster.metrics(&city).unwrap();
    for l in m.lines().filter(|l| {
        l.starts_with("gbgate_sip_retransmissions_total") || l.starts_with("gbgate_catalog_entries")
    }) {
        println!("bench:   city {l}");
    }
    (took, cluster, bench_sharing)
}

/// Every channel the village's fleet lists is at `node`, ON, under its own
/// NVR, with the name its NVR gave it; and every NVR has all its channels
/// there. Checked entry by entry, not inferred from counts.
fn check_channels_at(cluster: &Cluster, node: &topology::GbId, village: &topology::GbId) {
    let expected = cluster.expected_channels(village).unwrap();
    let got: std::collections::HashMap<String, gbgate::api::CatalogEntry> = cluster
        .catalog(node)
        .unwrap()
        .into_iter()
        .map(|e| (e.device_id.clone(), e))
        .collect();
    let mut per_parent: std::collections::HashMap<String, (usize, usize)> =
        std::collections::HashMap::new();
    let mut wrong = Vec::new();
    for want in &expected {
        let parent = want.parent_id.clone().unwrap_or_default();
        let slot = per_parent.entry(parent.clone()).or_default();
        slot.0 += 1;
        match got.get(&want.device_id) {
            Some(e)
                if e.status == "ON"
                    && e.parent_id.as_deref() == Some(parent.as_str())
                    && e.name == want.name =>
            {
                slot.1 += 1;
            }
            other => wrong.push((want.device_id.clone(), other.cloned())),
        }
    }
    let incomplete = per_parent.values().filter(|(n, ok)| n != ok).count();
    println!(
        "bench:   check at {node}: {} channels of {} NVRs compared entry by entry; {} wrong or missing, {incomplete} NVRs incomplete",
        expected.len(),
        per_parent.len(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "first wrong: {:?}",
        &wrong[..wrong.len().min(3)]
    );
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The gate's cost and a department's view at city scale, in one run:
/// 420,000 channels through four TCP tiers without a policy, then with a
/// policy at every tier (10,000 rules at the city); then traffic's
/// filtered catalog (40,000 channels, 1,000 a page) and a reload of the
/// city's 10,000 rules.
#[test]
#[ignore = "benchmark: make bench"]
fn policy_gate_420k_channels_tcp() {
    let (plain, cluster, _) = propagate_with(420, 1000, 32560, 31580, "tcp", None);
    drop(cluster);
    let (gated, cluster, sharing) = propagate_with(420, 1000, 29660, 29760, "tcp", Some(10_000));
    let sharing = sharing.unwrap();
    println!(
        "bench: gate_cost propagate_420k_tcp plain_s={:.2} gated_s={:.2} ratio={:.3}",
        plain.as_secs_f64(),
        gated.as_secs_f64(),
        gated.as_secs_f64() / plain.as_secs_f64()
    );
    let city = cluster.tree.root().clone();
    let agent = ureq::Agent::new_with_defaults();
    let page = |after: Option<&str>| -> (Duration, gbgate::api::ChannelsPage) {
        let url = match after {
            Some(a) => format!("http://{}/api/v1/channels?limit=1000&after={a}", city.http),
            None => format!("http://{}/api/v1/channels?limit=1000", city.http),
        };
        let t = Instant::now();
        let p: gbgate::api::ChannelsPage = agent
            .get(&url)
            .header("Authorization", format!("Bearer {}", sharing.traffic))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        (t.elapsed(), p)
    };
    let start = Instant::now();
    let mut times = Vec::new();
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let (t, p) = page(after.as_deref());
        times.push(t);
        seen += p.items.len();
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let whole = start.elapsed();
    // gbsim numbers an NVR, then its 1,000 channels: serials 100000 +
    // 1001 j are NVRs, the rest of 100000..140000 channels.
    let expected = (100_000..140_000u32)
        .filter(|s| (s - 100_000) % 1001 != 0)
        .count();
    assert_eq!(seen, expected, "traffic sees exactly its four prefixes");
    println!(
        "bench: dept_catalog channels_at_city=420000 visible={seen} pages={} whole_s={:.3} page_p50_ms={:.1} page_p99_ms={:.1}",
        times.len(),
        whole.as_secs_f64(),
        percentile(times.clone(), 0.5).as_secs_f64() * 1e3,
        percentile(times, 0.99).as_secs_f64() * 1e3,
    );
    // Reload: rewrite the city's file (one rule more) and wait for the
    // new generation to be in force.
    let file = log_dir_path(&format!("propagate-420x1000-tcp-policy{}", sharing.rules))
        .join(format!("{}.csv", city.id));
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("p, dept:extra, 3501*, live, allow\n");
    let generation = |c: &Cluster| -> u64 {
        let v: serde_json::Value = c
            .get(&format!("http://{}/api/v1/policy", city.http))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        v["generation"].as_u64().unwrap()
    };
    let before = generation(&cluster);
    let t = Instant::now();
    std::fs::write(&file, text).unwrap();
    cluster
        .wait_for("the reload", Duration::from_secs(30), |c| {
            generation(c) > before
        })
        .unwrap();
    println!(
        "bench: reload rules={} in_force_after_ms={:.0} (includes the watcher's 200 ms settle and re-checking 420,000 entries for the parent)",
        sharing.rules + 1,
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_100k_channels_udp() {
    propagate(100, 1000, 32160, 31180, "udp");
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_100k_channels_tcp() {
    propagate(100, 1000, 32260, 31280, "tcp");
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_420k_channels_udp() {
    propagate(420, 1000, 32360, 31380, "udp");
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_420k_channels_tcp() {
    propagate(420, 1000, 32460, 31480, "tcp");
}

// ------------------------------------------------------------------ media

/// A 4-tier chain with `cameras` IPCs streaming `media` at the village.
fn media_chain(
    name: &str,
    base: u16,
    cameras: usize,
    media: &str,
    linger: u64,
) -> (Cluster, Vec<String>) {
    let (c, cams, _) = media_chain_with(name, base, cameras_playing(cameras, media), linger, false);
    (c, cams)
}

/// `cameras` IP cameras per village streaming the clip `media`, each from
/// the clip's first keyframe when INVITEd.
fn cameras_playing(cameras: usize, media: &str) -> FleetSpec {
    FleetSpec {
        ipcs: cameras,
        nvrs: 0,
        channels: 0,
        media: Some(clip(media)),
        ..FleetSpec::default()
    }
}

/// [`media_chain`]; with `gated`, every tier runs with a policy (each
/// shares everything with its parent, the city lets dept:police watch
/// everything) and the police token is returned for play URLs.
fn media_chain_with(
    name: &str,
    base: u16,
    fleet: FleetSpec,
    linger: u64,
    gated: bool,
) -> (Cluster, Vec<String>, Option<String>) {
    let cameras = fleet.ipcs;
    let dir = log_dir(name);
    let spec = TreeSpec {
        linger_secs: linger,
        media_timeout_secs: 5,
        ..bench_spec(base, base + 3000, 1, "udp")
    };
    let mut tokens = None;
    if gated {
        let tree = integration::demo::write_tree(&dir, &spec).unwrap();
        let (admin, a) = gbgate::api::auth::new_token("ops", "ops", true);
        let (police, p) = gbgate::api::auth::new_token("wang", "police", false);
        std::fs::write(dir.join("tokens.toml"), format!("{a}{p}")).unwrap();
        for n in &tree.nodes {
            let text = match n.parent {
                Some(parent) => format!("p, node:{parent}, *, *, allow\n"),
                None => "p, dept:police, *, *, allow\n".to_owned(),
            };
            std::fs::write(dir.join(format!("{}.csv", n.id)), text).unwrap();
        }
        tokens = Some((admin, police));
    }
    let args_dir = dir.clone();
    let mut c = Cluster::start_nodes_with(
        &dir,
        spec,
        fleet,
        |n| {
            if !gated {
                return Vec::new();
            }
            vec![
                "--policy".into(),
                args_dir.join(format!("{}.csv", n.id)).display().to_string(),
                "--tokens".into(),
                args_dir.join("tokens.toml").display().to_string(),
            ]
        },
        tokens.as_ref().map(|(a, _)| a.clone()),
    )
    .unwrap();
    let villages: Vec<_> = c.tree.level("village").iter().map(|v| v.id).collect();
    for v in villages {
        c.start_fleet(&v).unwrap();
    }
    let city = c.tree.root().id;
    let mut cams = Vec::new();
    c.wait_for("every camera at the city", Duration::from_secs(60), |c| {
        cams = c
            .catalog(&city)
            .map(|cat| {
                cat.into_iter()
                    .filter(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
                    .map(|e| e.device_id)
                    .collect()
            })
            .unwrap_or_default();
        cams.len() == cameras
    })
    .unwrap();
    (c, cams, tokens.map(|(_, police)| police))
}

/// Read an HTTP-FLV stream until the first video frame tag (not the
/// sequence header): the moment a player can show a picture.
fn time_to_first_frame(url: &str) -> (Duration, impl std::io::Read) {
    use std::io::Read;
    let t = Instant::now();
    let resp = ureq::get(url).call().unwrap();
    let mut r = resp.into_body().into_reader();
    let mut head = [0u8; 13];
    r.read_exact(&mut head).unwrap();
    loop {
        let mut th = [0u8; 11];
        r.read_exact(&mut th).unwrap();
        let size = u32::from_be_bytes([0, th[1], th[2], th[3]]) as usize;
        let mut body = vec![0u8; size + 4];
        r.read_exact(&mut body).unwrap();
        let video = th[0] & 0x1F == 9;
        // AVC: byte 1 is AVCPacketType, 1 = coded frames.
        if video && body.get(1) == Some(&1) {
            return (t.elapsed(), r);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time to first frame at the city through four tiers: cold (no hub at any
/// tier: INVITE travels down, media comes up) and warm (a hub at the city
/// already). The camera either starts at a keyframe when INVITEd (the best
/// case) or, as real cameras do, wherever its running encoder is in its
/// GOP, so a cold start waits for the next keyframe: with a GOP of 25 and
/// of 50 frames.
#[test]
#[ignore = "benchmark: make bench"]
fn media_time_to_first_frame() {
    let runs = [
        ("keyframe-aligned", "h264_4m_g25.h264", false, 27000),
        ("mid-GOP", "h264_4m_g25.h264", true, 27500),
        ("keyframe-aligned", "h264_4m_g50.h264", false, 27600),
        ("mid-GOP", "h264_4m_g50.h264", true, 27700),
    ];
    for (start, clip_name, free_running, base) in runs {
        let fleet = FleetSpec {
            free_running,
            ..cameras_playing(1, clip_name)
        };
        // linger 0: the last viewer leaving closes every tier, so each cold run is cold.
        let (c, cams, _) = media_chain_with("media-ttff", base, fleet, 0, false);
        ttff_runs(&c, &cams[0], start, clip_name);
    }
}

fn ttff_runs(c: &Cluster, cam: &str, start: &str, clip_name: &str) {
    let url = format!("http://{}/live/{cam}.flv", c.tree.root().http);
    let closed = || {
        c.wait_for("no stream at any tier", Duration::from_secs(20), |c| {
            c.tree
                .nodes
                .iter()
                .all(|n| c.streams(&n.id).map(|s| s.is_empty()).unwrap_or(false))
        })
        .unwrap()
    };
    let mut cold = Vec::new();
    for _ in 0..9 {
        closed();
        // Land anywhere in the camera's GOP (it runs on its own clock).
        std::thread::sleep(Duration::from_millis(rand::random_range(0..2000)));
        let (t, r) = time_to_first_frame(&url);
        cold.push(t);
        drop(r);
    }
    closed();
    let (_, holder) = time_to_first_frame(&url);
    let mut warm = Vec::new();
    for _ in 0..9 {
        let (t, r) = time_to_first_frame(&url);
        warm.push(t);
        drop(r);
    }
    drop(holder);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench: ttff tiers=4 clip={clip_name} camera_start={start} cold_median_ms={:.1} cold_min_ms={:.1} cold_max_ms={:.1} warm_median_ms={:.1} warm_min_ms={:.1} warm_max_ms={:.1}",
        ms(median(cold.clone())),
        ms(*cold.iter().min().unwrap()),
        ms(*cold.iter().max().unwrap()),
        ms(median(warm.clone())),
        ms(*warm.iter().min().unwrap()),
        ms(*warm.iter().max().unwrap()),
    );
}

/// Fan-out cost at the city: CPU seconds per Gbit/s delivered to HTTP-FLV
/// viewers, cameras at 4 Mbit/s.
#[test]
#[ignore = "benchmark: make bench"]
fn media_fanout_cpu_per_gbps() {
    fanout("media-fanout", 27100, false);
}

/// The gate's cost on fan-out, in one run: the fan-out benchmark without a
/// policy, then with a policy at every tier and viewers holding play
/// tokens (the gate decides once per viewer; frames never pass it).
#[test]
#[ignore = "benchmark: make bench"]
fn media_fanout_cpu_with_and_without_gate() {
    let plain = fanout("media-fanout-plain", 29300, false);
    let gated = fanout("media-fanout-gated", 29400, true);
    println!(
        "bench: gate_cost fanout cpu_seconds_per_gbit plain={plain:.2} gated={gated:.2} ratio={:.3}",
        gated / plain
    );
}

/// 4 cameras × 25 HTTP-FLV viewers at the city; the city's CPU seconds per
/// Gbit delivered over 20 s.
fn fanout(name: &str, base: u16, gated: bool) -> f64 {
    let cameras = 4;
    let per_camera = 25;
    let fleet = cameras_playing(cameras, "h264_4m_g25.h264");
    let (c, cams, police) = media_chain_with(name, base, fleet, 30, gated);
    let city = c.tree.root().id;
    let http = c.tree.root().http;
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for cam in &cams {
        let path = match &police {
            Some(t) => {
                let (s, body) = integration::harness::api_call(
                    "POST",
                    &format!("http://{http}/api/v1/streams"),
                    Some(t),
                    Some(&format!("{{\"channel\":\"{cam}\"}}")),
                )
                .unwrap();
                assert_eq!(s, 200, "{body}");
                let urls: gbgate::api::PlayUrls = serde_json::from_str(&body).unwrap();
                urls.flv
            }
            None => format!("/live/{cam}.flv"),
        };
        for _ in 0..per_camera {
            let url = format!("http://{http}{path}");
            let (b, s) = (bytes.clone(), stop.clone());
            readers.push(std::thread::spawn(move || {
                use std::io::Read;
                let mut r = ureq::get(&url).call().unwrap().into_body().into_reader();
                let mut buf = vec![0u8; 256 * 1024];
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            b.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    let viewers = cameras * per_camera;
    c.wait_for("every viewer joined", Duration::from_secs(30), |c| {
        c.metric(&city, "gbgate_viewers", "").unwrap_or(0.0) >= viewers as f64
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, b0, t0) = (
        c.cpu_seconds(&city).unwrap(),
        bytes.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(20));
    let (cpu1, b1, secs) = (
        c.cpu_seconds(&city).unwrap(),
        bytes.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let rss = c.rss_kib(&city).unwrap_or(0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let gbits = (b1 - b0) as f64 * 8.0 / 1e9;
    assert!(gbits > 0.0, "every viewer got video");
    let cpu = cpu1 - cpu0;
    let skips = c
        .metric(&city, "gbgate_viewer_skips_total", "")
        .unwrap_or(0.0);
    println!(
        "bench: fanout gated={gated} cameras={cameras} viewers={viewers} delivered_mbps={:.0} city_cpu_cores={:.2} cpu_seconds_per_gbit={:.2} cpu_seconds_per_second_per_gbps={:.2} city_rss_mib={:.0} viewer_skips={skips}",
        gbits * 1000.0 / secs,
        cpu / secs,
        cpu / gbits,
        (cpu / secs) / (gbits / secs),
        rss as f64 / 1024.0
    );
    drop(readers);
    cpu / gbits
}

/// Kernel memory held by every TCP socket on the machine, KiB
/// (/proc/net/sockstat `TCP: ... mem N`, in pages).
fn tcp_socket_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter()
                .position(|k| *k == "mem")
                .and_then(|i| f.get(i + 1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 4
}

/// One side of a fan-out step: a server process and its viewers.
struct FanoutServer<'a> {
    /// "gbgate" or "floor".
    name: &'static str,
    pid: u32,
    addr: std::net::SocketAddr,
    path: String,
    /// RSS before any viewer, KiB.
    rss_base: u64,
    /// Viewers the server dropped behind or refused so far (gbgate's
    /// counters; the floor never drops).
    losses: &'a dyn Fn() -> f64,
}

/// What one step measured, once it was found valid.
struct FanoutFigures {
    mbps: f64,
    cpu_cores: f64,
    cpu_per_gbit: f64,
    rss_kib_per_viewer: f64,
    kernel_kib_per_viewer: f64,
    p99_gap_ms: f64,
    max_gap_ms: f64,
}

/// `n` viewers of `server` for `window` after they all play: validity first
/// (every viewer played, got every frame of the window, none was dropped),
/// then the figures. Err says what made the run invalid.
fn fanout_step(
    server: &FanoutServer,
    n: usize,
    fps: f64,
    window: Duration,
) -> Result<FanoutFigures, String> {
    use integration::fanout::Watch;
    use integration::storm;
    let kernel0 = tcp_socket_kib();
    let losses0 = (server.losses)();
    let watch = Watch::start(server.addr, vec![server.path.clone(); n]);
    if let Err(playing) = watch.wait_playing(Duration::from_secs(60)) {
        watch.finish();
        return Err(format!("{playing} of {n} viewers played within 60 s"));
    }
    std::thread::sleep(Duration::from_secs(3));
    let cpu0 = storm::cpu_seconds(server.pid).unwrap();
    let t0 = Instant::now();
    watch.open_window();
    std::thread::sleep(window);
    let cpu1 = storm::cpu_seconds(server.pid).unwrap();
    let bytes = watch.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let (rss, kernel) = (storm::rss_kib(server.pid).unwrap(), tcp_socket_kib());
    let stats = watch.finish();
    let secs = t0.elapsed().as_secs_f64();
    integration::fanout::every_frame(&stats, secs, fps)?;
    let lost = (server.losses)() - losses0;
    if lost > 0.0 {
        return Err(format!("{lost} skips or refusals"));
    }
    let mut gaps: Vec<u32> = stats
        .iter()
        .flat_map(|s| s.gaps_us.iter().copied())
        .collect();
    gaps.sort_unstable();
    let at = |p: f64| f64::from(gaps[((gaps.len() - 1) as f64 * p) as usize]) / 1000.0;
    let gbits = bytes as f64 * 8.0 / 1e9;
    let cpu = cpu1 - cpu0;
    Ok(FanoutFigures {
        mbps: gbits * 1000.0 / secs,
        cpu_cores: cpu / secs,
        cpu_per_gbit: cpu / gbits,
        rss_kib_per_viewer: rss.saturating_sub(server.rss_base) as f64 / n as f64,
        kernel_kib_per_viewer: kernel.saturating_sub(kernel0) as f64 / n as f64,
        p99_gap_ms: at(0.99),
        max_gap_ms: at(1.0),
    })
}

/// Fan-out at the floor: one 4 Mbit/s camera with a camera's GOP, watched
/// at the city by 100, 1,000 and 5,000 HTTP-FLV viewers; then the same
/// viewers of the floor, a bare writer serving the bytes the city served
/// (recorded first), one write per frame per viewer. Both servers on core
/// 0, the viewers (one thread) and the other tiers on core 1.
#[test]
#[ignore = "benchmark: make bench"]
fn media_fanout_vs_floor() {
    // GBGATE_FANOUT_VIEWERS=1000 runs one step (to profile it).
    let steps: Vec<usize> = std::env::var("GBGATE_FANOUT_VIEWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000]);
    fanout_vs_floor("media-fanout-floor", 27300, "h264_4m_g25.h264", &steps);
}

fn fanout_vs_floor(name: &str, base: u16, clip_name: &str, steps: &[usize]) {
    use integration::storm;
    let dir = log_dir(name);
    let spec = TreeSpec {
        linger_secs: 600,
        media_timeout_secs: 5,
        max_viewers_per_stream: Some(20_000),
        ..bench_spec(base, base + 3000, 1, "udp")
    };
    let fleet = FleetSpec {
        ipcs: 1,
        nvrs: 0,
        channels: 0,
        media: Some(clip(clip_name)),
        ..FleetSpec::default()
    };
    let c = Cluster::start(&dir, spec, fleet).unwrap();
    let city = c.tree.root().id;
    let village = c.tree.level("village")[0].id;
    let mut cam = String::new();
    c.wait_for("the camera at the city", Duration::from_secs(60), |c| {
        cam = c
            .catalog(&city)
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
            .map(|e| e.device_id)
            .unwrap_or_default();
        !cam.is_empty()
    })
    .unwrap();
    let path = format!("/live/{cam}.flv");
    let city_http = c.tree.root().http;
    let rec = integration::fanout::Recording::capture(
        &format!("http://{city_http}{path}"),
        Duration::from_secs(12),
    )
    .unwrap();
    let fps = rec.fps();
    let flv = dir.join("floor.flv");
    std::fs::write(&flv, rec.to_flv()).unwrap();
    let floor_addr: std::net::SocketAddr = ([127, 0, 0, 1], base + 3100).into();
    let mut floor = Command::new(bin_dir().join("fanout-floor"))
        .args(["--listen", &floor_addr.to_string()])
        .arg("--flv")
        .arg(&flv)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let city_pid = c.pid(&city).unwrap();
    storm::pin(city_pid, 0).unwrap();
    storm::pin(floor.id(), 0).unwrap();
    for n in c.tree.nodes.iter().filter(|n| n.id != city) {
        storm::pin(c.pid(&n.id).unwrap(), 1).unwrap();
    }
    storm::pin(c.sim_pid(&village).unwrap(), 1).unwrap();
    storm::pin(std::process::id(), 1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let city_losses = || {
        c.metric(&city, "gbgate_viewer_skips_total", "")
            .unwrap_or(0.0)
            + c.metric(&city, "gbgate_viewers_refused_total", "")
                .unwrap_or(0.0)
    };
    let none = || 0.0;
    let gbgate = FanoutServer {
        name: "gbgate",
        pid: city_pid,
        addr: city_http,
        path: path.clone(),
        rss_base: c.rss_kib(&city).unwrap(),
        losses: &city_losses,
    };
    let bare = FanoutServer {
        name: "floor",
        pid: floor.id(),
        addr: floor_addr,
        path,
        rss_base: storm::rss_kib(floor.id()).unwrap(),
        losses: &none,
    };
    println!(
        "bench: fanout_floor clip={clip_name} mbps={:.2} fps={fps:.0} recorded_frames={}",
        rec.bits_per_second() / 1e6,
        rec.frames.len()
    );
    let window = Duration::from_secs(15);
    let mut invalid = Vec::new();
    for &n in steps {
        let mut cpu = [0.0; 2];
        for (i, server) in [&gbgate, &bare].into_iter().enumerate() {
            match fanout_step(server, n, fps, window) {
                Ok(f) => {
                    cpu[i] = f.cpu_per_gbit;
                    println!(
                        "bench: fanout_floor server={} viewers={n} delivered_mbps={:.0} cpu_cores={:.3} cpu_seconds_per_gbit={:.3} rss_kib_per_viewer={:.1} kernel_kib_per_viewer={:.1} p99_gap_ms={:.1} max_gap_ms={:.1}",
                        server.name, f.mbps, f.cpu_cores, f.cpu_per_gbit, f.rss_kib_per_viewer, f.kernel_kib_per_viewer, f.p99_gap_ms, f.max_gap_ms
                    );
                }
                Err(e) => {
                    println!(
                        "bench: fanout_floor server={} viewers={n} INVALID: {e}",
                        server.name
                    );
                    invalid.push(format!("{} at {n}: {e}", server.name));
                }
            }
            // Let the last step's sockets close before the next one counts.
            std::thread::sleep(Duration::from_secs(3));
        }
        if cpu[0] > 0.0 && cpu[1] > 0.0 {
            println!(
                "bench: fanout_floor viewers={n} cpu_ratio_gbgate_to_floor={:.2}",
                cpu[0] / cpu[1]
            );
        }
    }
    let _ = floor.kill();
    let _ = floor.wait();
    assert!(invalid.is_empty(), "invalid steps: {invalid:?}");
}

/// Relay cost per tier: 100 cameras of 4 Mbit/s (GOP 25) at the village,
/// each watched by one HTTP-FLV viewer at the city, so every tier carries
/// 400 Mbit/s of RTP/PS: each tier's CPU seconds per Gbit of video relayed,
/// over 20 s, once every viewer got every frame.
#[test]
#[ignore = "benchmark: make bench"]
fn media_relay_cpu_per_tier() {
    use integration::fanout::Watch;
    use integration::storm;
    let cameras = 100;
    let fleet = cameras_playing(cameras, "h264_4m_g25.h264");
    let (c, cams, _) = media_chain_with("media-relay", 27800, fleet, 30, false);
    let city_http = c.tree.root().http;
    let watch = Watch::start(
        city_http,
        cams.iter().map(|cam| format!("/live/{cam}.flv")).collect(),
    );
    if let Err(playing) = watch.wait_playing(Duration::from_secs(60)) {
        panic!("{playing} of {cameras} streams played within 60 s");
    }
    std::thread::sleep(Duration::from_secs(3));
    let tiers: Vec<(String, topology::GbId)> = ["village", "town", "county", "city"]
        .iter()
        .map(|l| ((*l).to_owned(), c.tree.level(l)[0].id))
        .collect();
    let cpu = |c: &Cluster| -> Vec<f64> {
        tiers
            .iter()
            .map(|(_, id)| c.cpu_seconds(id).unwrap())
            .collect()
    };
    let sim = c.sim_pid(&tiers[0].1).unwrap();
    let (cpu0, sim0, t0) = (cpu(&c), storm::cpu_seconds(sim).unwrap(), Instant::now());
    let skips0 = c
        .metric(&tiers[3].1, "gbgate_viewer_skips_total", "")
        .unwrap_or(0.0);
    watch.open_window();
    std::thread::sleep(Duration::from_secs(20));
    let (cpu1, sim1) = (cpu(&c), storm::cpu_seconds(sim).unwrap());
    let bytes = watch.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let stats = watch.finish();
    let secs = t0.elapsed().as_secs_f64();
    integration::fanout::every_frame(&stats, secs, 25.0).unwrap();
    let skips = c
        .metric(&tiers[3].1, "gbgate_viewer_skips_total", "")
        .unwrap_or(0.0)
        - skips0;
    assert_eq!(skips, 0.0, "every viewer got every frame: no skips");
    let gbits = bytes as f64 * 8.0 / 1e9;
    let mut line = format!(
        "bench: relay streams={cameras} video_mbps={:.0} camera_sim_cpu_cores={:.2}",
        gbits * 1000.0 / secs,
        (sim1 - sim0) / secs
    );
    for (i, (level, _)) in tiers.iter().enumerate() {
        let used = cpu1[i] - cpu0[i];
        line.push_str(&format!(
            " {level}_cpu_cores={:.3} {level}_cpu_seconds_per_gbit={:.3}",
            used / secs,
            used / gbits
        ));
    }
    println!("{line}");
}

/// Memory per hub: 100 cameras opened at the city with one viewer each;
/// RSS growth at the city (one hub per camera) and at the village (one hub
/// per camera plus the RTP it receives).
#[test]
#[ignore = "benchmark: make bench"]
fn media_memory_per_hub() {
    let cameras = 100;
    let (c, cams) = media_chain("media-hubs", 27200, cameras, "h264.h264", 30);
    let city = c.tree.root().id;
    let village = c.tree.level("village")[0].id;
    let http = c.tree.root().http;
    std::thread::sleep(Duration::from_secs(2));
    let (city0, village0) = (c.rss_kib(&city).unwrap(), c.rss_kib(&village).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for cam in &cams {
        let url = format!("http://{http}/live/{cam}.flv");
        let s = stop.clone();
        readers.push(std::thread::spawn(move || {
            use std::io::Read;
            let mut r = ureq::get(&url).call().unwrap().into_body().into_reader();
            let mut buf = vec![0u8; 64 * 1024];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(r.read(&mut buf), Ok(0) | Err(_)) {
                    break;
                }
            }
        }));
    }
    c.wait_for("100 hubs at the city", Duration::from_secs(60), |c| {
        c.metric(&city, "gbgate_streams_open", "").unwrap_or(0.0) >= cameras as f64
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(8)); // GOP caches and rings fill
    let (city1, village1) = (c.rss_kib(&city).unwrap(), c.rss_kib(&village).unwrap());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "bench: hubs n={cameras} clip_kbps=780 city_rss_kib {city0}->{city1} per_hub_kib={:.0} village_rss_kib {village0}->{village1} per_hub_kib={:.0}",
        (city1 as f64 - city0 as f64) / cameras as f64,
        (village1 as f64 - village0 as f64) / cameras as f64
    );
    drop(readers);
}

// ------------------------------------------------------------- QUIC links

fn link_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn camera_4m() -> integration::streamer::Clip {
    integration::streamer::Clip::load(&clip("h264_4m.h264"), None, None).unwrap()
}

/// One 4 Mbit/s camera across a lossy village link (userspace impairment
/// proxy: seeded loss, one-way delay, jitter a tenth of it, an 8 Mbit/s
/// bottleneck with a 200 ms queue, both ways), 30 s as RTP/UDP and 30 s on
/// a QUIC link, at 1 % / 30 ms and 5 % / 100 ms. Decoded by ffmpeg at the
/// top.
#[test]
#[ignore = "benchmark: make bench"]
fn lossy_link_rtp_udp_vs_quic() {
    use integration::link_bench::{run, village_link, LinkKind, VILLAGE_LINKS};
    let rt = link_runtime();
    let clip = camera_4m();
    let dir = log_dir("lossy_link");
    for (loss, delay_ms) in VILLAGE_LINKS {
        let mut runs = Vec::new();
        for kind in [LinkKind::RtpUdp, LinkKind::Quic] {
            let (up, down) = village_link(loss, delay_ms);
            let work = dir.join(format!("{kind:?}-{delay_ms}"));
            let r = rt
                .block_on(run(kind, &clip, up, down, Duration::from_secs(30), &work))
                .unwrap();
            // Valid only if the camera played and the proxy impaired.
            assert!(r.sent >= 700 && r.proxy_lost > 0, "invalid run: {r:?}");
            println!(
                "bench: lossy_link loss={:.0}% delay_ms={delay_ms} link={kind} sent={} decoded={} intact={:.1}% decode_errors={} longest_freeze_ms={} latency_p50_ms={} latency_p95_ms={} proxy_lost={} proxy_tail_drops={}",
                loss * 100.0,
                r.sent,
                r.decoded,
                r.intact_share() * 100.0,
                r.decode_errors,
                r.longest_freeze.as_millis(),
                r.latency_p50.as_millis(),
                r.latency_p95.as_millis(),
                r.proxy_lost,
                r.proxy_queue_drops
            );
            runs.push(r);
        }
        let (udp, quic) = (&runs[0], &runs[1]);
        println!(
            "bench: lossy_link loss={:.0}% delay_ms={delay_ms} quic_vs_rtp_udp intact_ratio={:.2} freeze_ratio={:.2} latency_p50_ratio={:.2}",
            loss * 100.0,
            quic.intact_share() / udp.intact_share().max(1e-9),
            quic.longest_freeze.as_secs_f64() / udp.longest_freeze.as_secs_f64().max(1e-9),
            quic.latency_p50.as_secs_f64() / udp.latency_p50.as_secs_f64().max(1e-9),
        );
    }
}

/// Many 4 Mbit/s cameras over one clean loopback link: delivered Mbit/s and
/// the process's CPU per Gbit/s, QUIC next to RTP/UDP and RTP/TCP.
#[test]
#[ignore = "benchmark: make bench"]
fn quic_link_throughput_cpu_vs_rtp() {
    use integration::link_bench::{throughput, LinkKind};
    let rt = link_runtime();
    let clip = camera_4m();
    let dir = log_dir("link_throughput");
    let sessions = 50;
    let mut base = None;
    for kind in [LinkKind::RtpUdp, LinkKind::RtpTcp, LinkKind::Quic] {
        let work = dir.join(format!("{kind:?}"));
        let t = rt
            .block_on(throughput(
                kind,
                &clip,
                sessions,
                Duration::from_secs(15),
                &work,
            ))
            .unwrap();
        // Valid only if (nearly) every frame of every session arrived.
        let share = t.frames_received as f64 / t.frames_sent.max(1) as f64;
        assert!(
            share > 0.98,
            "{kind}: only {:.1} % of frames arrived: {t:?}",
            share * 100.0
        );
        let per_gbit = t.cpu_seconds_per_gbit();
        let baseline = *base.get_or_insert(per_gbit);
        println!(
            "bench: link_throughput link={kind} sessions={sessions} delivered_mbps={:.0} frames_arrived={:.2}% cpu_cores={:.2} cpu_seconds_per_gbit={per_gbit:.2} ratio_to_rtp_udp={:.2}",
            t.mbps(),
            share * 100.0,
            t.cpu_seconds / t.seconds,
            per_gbit / baseline
        );
    }
}

/// Full QUIC handshakes (mutual TLS 1.3, ID checked against the topology)
/// a parent completes per second, 4 dialers in the same process.
#[test]
#[ignore = "benchmark: make bench"]
fn quic_handshakes_per_second() {
    let rt = link_runtime();
    let dir = log_dir("quic_handshakes");
    let (n, secs, cpu) = rt
        .block_on(integration::link_bench::handshakes(
            &dir,
            4,
            Duration::from_secs(10),
        ))
        .unwrap();
    assert!(n > 100, "only {n} handshakes");
    println!(
        "bench: quic_handshakes dialers=4 handshakes={n} per_second={:.0} cpu_ms_per_handshake_both_sides={:.2}",
        n as f64 / secs,
        cpu * 1000.0 / n as f64
    );
}

/// A parent restarts, every link over QUIC (city ← county ← town ←
/// village): how long from the county's restart until a viewer at the city
/// that retries every 100 ms gets live video again, five times.
#[test]
#[ignore = "benchmark: make bench"]
fn quic_parent_restart_to_video() {
    use integration::flv_watch::{first_video, restart_until_video};
    let spec = TreeSpec {
        quic_levels: integration::demo::ALL_LINKS,
        ..TreeSpec::media_chain(29500, 29600)
    };
    let fleet = FleetSpec::one_camera(clip("h264.h264"));
    let mut c = Cluster::start(&log_dir("quic_restart"), spec, fleet).unwrap();
    let city = c.tree.root().clone();
    let county = c.tree.level("county")[0].id;
    let camera = || {
        c.catalog(&city.id)
            .ok()?
            .into_iter()
            .find(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
            .map(|e| e.device_id)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let cam = loop {
        if let Some(cam) = camera() {
            break cam;
        }
        assert!(
            Instant::now() < deadline,
            "the camera never reached the city"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let url = format!("http://{}/live/{cam}.flv", city.http);
    let mut took = Vec::new();
    for round in 0..5 {
        // Valid only from a playing stream.
        assert!(
            first_video(&url, Duration::from_secs(10)).is_some(),
            "round {round}: no video before the restart"
        );
        let t = restart_until_video(&mut c, &county, &url)
            .unwrap_or_else(|| panic!("round {round}: no video after the restart"));
        took.push(t);
    }
    let max = *took.iter().max().unwrap();
    println!(
        "bench: quic_parent_restart rounds=5 video_again_median_ms={} max_ms={} all_ms={:?}",
        median(took.clone()).as_millis(),
        max.as_millis(),
        took.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}

/// The REGISTER storm, gbgate next to Kamailio in the same run: sipp
/// offers digest REGISTERs from distinct devices at rising rates, over UDP
/// and over TCP, to a registrar pinned to core 0 with sipp on core 1. Per
/// registrar and transport: the highest rate held clean (no failure, no
/// retransmission, p99 of each leg ≤ 10 ms), CPU per 1,000 registrations
/// a second, memory at the end. gbgate runs twice: without the per-device
/// Catalog/DeviceInfo queries (like for like with Kamailio, which sends
/// none) and with them (answered by sipp as devices do).
///
/// `GBGATE_STORM_ONLY` (e.g. `gbgate-udp,kamailio-udp`) picks runs,
/// `GBGATE_STORM_SECS` (default 120) sets each step's length and
/// `GBGATE_STORM_RATES` the steps (default 2,000, 4,000, 8,000, then every
/// 4,000 to 40,000, then 48,000: fine enough above 16,000 that a 1.5× ratio
/// shows); a registrar's run stops at its first unclean step.
#[test]
#[ignore = "benchmark: make bench"]
fn register_storm_vs_kamailio() {
    use integration::storm::StormTransport;
    let secs: u64 = std::env::var("GBGATE_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let rates: Vec<u32> = std::env::var("GBGATE_STORM_RATES")
        .unwrap_or_else(|_| {
            "2000,4000,8000,12000,16000,20000,24000,28000,32000,36000,40000,48000".into()
        })
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    // GBGATE_STORM_ONLY=gbgate-udp,kamailio-udp runs only those.
    let only: Option<Vec<String>> = std::env::var("GBGATE_STORM_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    let logs = log_dir("register_storm");
    let mut summary = Vec::new();
    for transport in [StormTransport::Udp, StormTransport::Tcp] {
        for who in ["kamailio", "gbgate", "gbgate+queries"] {
            let name = format!("{who}-{}", transport.name());
            if only.as_ref().is_some_and(|o| !o.contains(&name)) {
                continue;
            }
            let dir = logs.join(format!("{who}-{}", transport.name()));
            std::fs::create_dir_all(&dir).unwrap();
            let (registrar, spec) = Registrar::start(who, &dir, transport, secs);
            summary.push(run_storm(&spec, &rates, who, || registrar.pss_kib()));
        }
    }
    println!("bench: register storm, {secs} s per step, rates {rates:?}");
    for line in &summary {
        println!("bench: {line}");
    }
    let figure = |who: &str, t: &str, key: &str| -> Option<f64> {
        summary
            .iter()
            .find(|l| l.starts_with(&format!("storm {who} {t} ")))
            .and_then(|l| l.split(key).nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    for t in ["udp", "tcp"] {
        let k = figure("kamailio", t, "clean_rate=").unwrap_or(0.0);
        let g = figure("gbgate", t, "clean_rate=").unwrap_or(0.0);
        println!(
            "bench: storm ratio {t}: gbgate clean {g}/s vs kamailio {k}/s = {:.2}x",
            g / k.max(1.0)
        );
        // What one core could hold at each one's CPU per registration:
        // the ratio that remains when the generator is the limit.
        let key = "cpu_per_1000_at_clean=";
        if let (Some(kc), Some(gc)) = (figure("kamailio", t, key), figure("gbgate", t, key)) {
            println!(
                "bench: storm cpu {t}: gbgate {gc:.3} vs kamailio {kc:.3} CPU-s per 1,000 reg/s = {:.2}x registrations per core",
                kc / gc
            );
        }
    }
}

/// A registrar under the storm, pinned to core 0.
enum Registrar {
    Kamailio(integration::storm::Kamailio),
    Gbgate { _cluster: Box<Cluster>, pid: u32 },
}

impl Registrar {
    /// Start `who` ("kamailio", "gbgate", "gbgate+queries") and the storm
    /// spec aimed at it (rate filled in per step).
    fn start(
        who: &str,
        dir: &std::path::Path,
        transport: integration::storm::StormTransport,
        secs: u64,
    ) -> (Registrar, integration::storm::StormSpec) {
        use integration::storm::{self, Kamailio, StormSpec};
        // Fewer than the node's registration limit (100,000): a long storm
        // cycles through them, as devices re-registering after a cut do.
        let devices = 90_000;
        let base = |target, node: String, domain: String, pids, queries| StormSpec {
            target,
            first_device: format!("{domain}1310000000").parse().unwrap(),
            node,
            domain,
            transport,
            rate: 0,
            duration: Duration::from_secs(secs),
            devices,
            offset: 0,
            answer_queries: queries,
            server_pids: pids,
            sipp_cpu: 1,
            dir: dir.to_path_buf(),
        };
        if who == "kamailio" {
            let domain = "3402000000".to_string();
            let k = Kamailio::start(dir, 29860, &domain, 0, 4).unwrap();
            let spec = base(
                "127.0.0.1:29860".parse().unwrap(),
                format!("{domain}2000000001"),
                domain,
                k.pids.clone(),
                false,
            );
            return (Registrar::Kamailio(k), spec);
        }
        let queries = who == "gbgate+queries";
        let tree = TreeSpec {
            counties: 0,
            sip_base: 29870,
            http_base: 29970,
            keepalive_secs: 60,
            password: storm::STORM_PASSWORD.into(),
            query_new_registrants: queries,
            ..TreeSpec::default()
        };
        let cluster = Cluster::start_nodes(dir, tree, FleetSpec::default()).unwrap();
        let city = cluster.tree.root().clone();
        let pid = cluster.pid(&city.id).unwrap();
        storm::pin(pid, 0).unwrap();
        let spec = base(
            city.sip,
            city.id.to_string(),
            city.id.domain().to_string(),
            vec![pid],
            queries,
        );
        (
            Registrar::Gbgate {
                _cluster: Box::new(cluster),
                pid,
            },
            spec,
        )
    }

    fn pss_kib(&self) -> u64 {
        match self {
            Registrar::Kamailio(k) => k.pss_kib(),
            Registrar::Gbgate { pid, .. } => integration::storm::pss_kib(*pid).unwrap_or(0),
        }
    }
}

/// Rising rates against one registrar until a step is not clean; the
/// summary line names the highest clean rate.
fn run_storm(
    base: &integration::storm::StormSpec,
    rates: &[u32],
    who: &str,
    memory_kib: impl Fn() -> u64,
) -> String {
    let mut best = None;
    let mut cpu = f64::NAN;
    let mut offset = 0;
    let mut generator_bound = None;
    for &rate in rates {
        let spec = integration::storm::StormSpec {
            rate,
            dir: base.dir.join(format!("rate-{rate}")),
            offset,
            ..base.clone()
        };
        offset = (offset + rate as usize * spec.duration.as_secs() as usize) % base.devices;
        let r = integration::storm::run(&spec).unwrap();
        println!("bench: storm {who} {} {}", base.transport.name(), r.line());
        // The run is valid only if sipp offered what was asked.
        assert!(
            r.offered >= u64::from(rate) * spec.duration.as_secs() * 9 / 10,
            "sipp offered {} of {} registrations: the generator, not the registrar, was the limit",
            r.offered,
            u64::from(rate) * spec.duration.as_secs()
        );
        if !r.clean() {
            if r.generator_bound() {
                // The registrar's limit was not reached: say so rather
                // than rank it by the generator's.
                generator_bound = Some(rate);
            }
            break;
        }
        best = Some(rate);
        cpu = r.cpu_per_1000();
    }
    let bound = generator_bound.map_or(String::new(), |rate| {
        format!(
            " (at {rate}/s sipp's core was full: the generator, not the registrar, was the limit)"
        )
    });
    format!(
        "storm {who} {} clean_rate={} cpu_per_1000_at_clean={cpu:.3} pss_kib_end={}{bound}",
        base.transport.name(),
        best.unwrap_or(0),
        memory_kib()
    )
}
